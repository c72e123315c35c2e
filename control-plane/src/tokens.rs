//! Admin API tokens: what a token may do ([`Role`]), how it is stored (only a SHA-256 hash of
//! its secret, never the secret), and how a presented secret is checked. Pure: the table
//! lives in [`crate::state::State`], the check at the API's door ([`crate::api::handle`]).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a token may do; each role includes the ones before it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read policies, nodes, services and the cluster's state.
    Read,
    /// Also apply and delete policies.
    Write,
    /// Also change membership, move leadership and manage tokens.
    Admin,
}

impl Role {
    /// The role's name as written in the API and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role `{other}`: use `read`, `write` or `admin`"
            )),
        }
    }
}

/// A token as the replicated state keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredToken {
    /// Its name: who or what uses it, as written in the audit log.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Lower-case hex SHA-256 of the secret.
    pub hash: String,
    /// When it stops working, in milliseconds since the Unix epoch; `None` never.
    pub expires_at_ms: Option<u64>,
    /// For a token held as an operator's certificate: that certificate's SHA-256 fingerprint,
    /// so a certificate of a revoked name never works again under a new token of that name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// The log index of the entry that created it.
    pub revision: u64,
}

/// A token without its hash, as listed to operators.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    /// Its name.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// When it stops working (ms since the Unix epoch), if ever.
    pub expires_at_ms: Option<u64>,
    /// The revision that created it.
    pub revision: u64,
}

impl From<&StoredToken> for TokenView {
    fn from(token: &StoredToken) -> Self {
        TokenView {
            name: token.name.clone(),
            role: token.role,
            expires_at_ms: token.expires_at_ms,
            revision: token.revision,
        }
    }
}

pub use hyphae_policies::secret_file::{MIN_SECRET_CHARS, SECRET_PREFIX, check_secret, new_secret};

/// The stored form of a secret.
pub fn hash(secret: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, secret.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Why a presented credential was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No `Authorization: Bearer` header.
    #[error(
        "this API needs a token: send `Authorization: Bearer <token>` (the CLI reads HYPHAE_TOKEN or HYPHAE_TOKEN_FILE)"
    )]
    Missing,
    /// The secret matches no token, or its token expired.
    #[error("the token is not valid (unknown, revoked or expired)")]
    Invalid,
    /// The token is valid but may not do this.
    #[error("token `{name}` has role `{has}`; this needs `{needs}`")]
    Forbidden {
        /// The token's name.
        name: String,
        /// Its role.
        has: &'static str,
        /// The role the request needs.
        needs: &'static str,
    },
}

/// Finds the token whose hash matches `secret` and that has not expired at `now_ms`, and
/// checks it grants `needs`. Returns the token's name for the audit log.
pub fn authorize(
    tokens: &BTreeMap<String, StoredToken>,
    secret: Option<&str>,
    needs: Role,
    now_ms: u64,
) -> Result<String, Refused> {
    let secret = secret.ok_or(Refused::Missing)?;
    let presented = hash(secret);
    let token = tokens
        .values()
        .find(|t| same_bytes(t.hash.as_bytes(), presented.as_bytes()));
    granted(token, needs, now_ms).map(|token| token.name.clone())
}

/// `token`, when there is one that has not expired at `now_ms` and whose role grants `needs`.
fn granted(token: Option<&StoredToken>, needs: Role, now_ms: u64) -> Result<&StoredToken, Refused> {
    let token = token
        .filter(|t| t.expires_at_ms.is_none_or(|at| now_ms < at))
        .ok_or(Refused::Invalid)?;
    if token.role < needs {
        return Err(Refused::Forbidden {
            name: token.name.clone(),
            has: token.role.name(),
            needs: needs.name(),
        });
    }
    Ok(token)
}

/// The `hash` of a token held as a client certificate (`spiffe://<domain>/operator/<name>`):
/// no secret hashes to it, so only the certificate can use the entry, and revoking the token
/// revokes the certificate.
pub const CERTIFICATE_HASH: &str = "certificate";

/// Checks the operator certificate of `name`, whose SHA-256 is `fingerprint`, grants `needs` at
/// `now_ms`: its token entry must exist, be held as that very certificate, and not have
/// expired. Returns the name for the audit log.
pub fn authorize_certificate(
    tokens: &BTreeMap<String, StoredToken>,
    name: &str,
    fingerprint: Option<&str>,
    needs: Role,
    now_ms: u64,
) -> Result<String, Refused> {
    let token = tokens
        .get(name)
        .filter(|t| t.hash == CERTIFICATE_HASH)
        .filter(|t| fingerprint.is_some() && t.certificate.as_deref() == fingerprint);
    granted(token, needs, now_ms).map(|token| format!("certificate:{}", token.name))
}

/// Compares two hashes in time that does not depend on where they differ.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Milliseconds since the Unix epoch, now (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, millis)
}

/// When a token that works for `ttl` from now expires, in milliseconds since the Unix epoch.
/// Saturates: an absurdly long TTL means "never" in practice, not an overflow.
pub fn expires_after(ttl: std::time::Duration) -> u64 {
    now_ms().saturating_add(millis(ttl))
}

/// `duration` in whole milliseconds, saturating at `u64::MAX`.
fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(tokens: &[(&str, Role, &str, Option<u64>)]) -> BTreeMap<String, StoredToken> {
        tokens
            .iter()
            .map(|(name, role, secret, expires_at_ms)| {
                let token = StoredToken {
                    name: (*name).to_string(),
                    role: *role,
                    hash: hash(secret),
                    expires_at_ms: *expires_at_ms,
                    certificate: None,
                    revision: 1,
                };
                ((*name).to_string(), token)
            })
            .collect()
    }

    #[test]
    fn a_token_grants_its_role_and_the_ones_below() {
        let tokens = table(&[
            ("ops", Role::Admin, "admin-secret", None),
            ("ci", Role::Write, "write-secret", None),
            ("dash", Role::Read, "read-secret", Some(1_000)),
        ]);
        assert_eq!(
            authorize(&tokens, Some("admin-secret"), Role::Read, 0),
            Ok("ops".into())
        );
        assert_eq!(
            authorize(&tokens, Some("write-secret"), Role::Write, 0),
            Ok("ci".into())
        );
        assert_eq!(
            authorize(&tokens, Some("write-secret"), Role::Admin, 0),
            Err(Refused::Forbidden {
                name: "ci".into(),
                has: "write",
                needs: "admin"
            })
        );
        assert_eq!(
            authorize(&tokens, Some("read-secret"), Role::Read, 999),
            Ok("dash".into())
        );
        assert_eq!(
            authorize(&tokens, Some("read-secret"), Role::Read, 1_000),
            Err(Refused::Invalid),
            "expired"
        );
        assert_eq!(
            authorize(&tokens, Some("guess"), Role::Read, 0),
            Err(Refused::Invalid)
        );
        assert_eq!(
            authorize(&tokens, None, Role::Read, 0),
            Err(Refused::Missing)
        );
    }

    #[test]
    fn secrets_are_random_long_and_stored_only_as_hashes() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert!(check_secret(&a).is_ok());
        assert!(!hash(&a).contains(&a[SECRET_PREFIX.len()..]));
        assert_eq!(hash(&a).len(), 64);
        assert!(check_secret("short").is_err());
        assert!(check_secret(&format!("{} x", "y".repeat(40))).is_err());
    }
}

//! Join tokens: what lets a new host get its first certificate. Each has an expiry, a number
//! of uses (one by default) and optionally a site it is limited to; the cluster stores only
//! the SHA-256 hash of its secret. Pure: using one is a Raft command, so every node agrees on
//! how many uses are left.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A join token as the replicated state keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JoinToken {
    /// Its name, as listed and logged.
    pub name: String,
    /// Lower-case hex SHA-256 of the secret.
    pub hash: String,
    /// When it stops working (ms since the Unix epoch).
    pub expires_at_ms: u64,
    /// Joins it still allows.
    pub uses_left: u32,
    /// The only site a host joining with it may be in, if limited.
    pub site: Option<String>,
    /// Whether it admits control-plane nodes (which become Raft members) rather than agents.
    #[serde(default)]
    pub control_plane: bool,
    /// The log index of the entry that created it.
    pub revision: u64,
}

/// A join token without its hash, as listed to operators.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JoinTokenView {
    /// Its name.
    pub name: String,
    /// When it stops working (ms since the Unix epoch).
    pub expires_at_ms: u64,
    /// Joins it still allows.
    pub uses_left: u32,
    /// The only site it admits, if limited.
    pub site: Option<String>,
    /// Whether it admits control-plane nodes rather than agents.
    #[serde(default)]
    pub control_plane: bool,
    /// The revision that created it.
    pub revision: u64,
}

impl From<&JoinToken> for JoinTokenView {
    fn from(token: &JoinToken) -> Self {
        JoinTokenView {
            name: token.name.clone(),
            expires_at_ms: token.expires_at_ms,
            uses_left: token.uses_left,
            site: token.site.clone(),
            control_plane: token.control_plane,
            revision: token.revision,
        }
    }
}

/// Why a join token was not accepted. One message for every kind of miss, so a caller cannot
/// tell a wrong secret from a used-up one; the log line names the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, thiserror::Error)]
#[serde(rename_all = "kebab-case")]
pub enum JoinRefused {
    /// No token has this secret (never created, revoked, or used up).
    #[error("unknown, revoked or used-up join token")]
    Unknown,
    /// The token expired.
    #[error("the join token `{0}` expired")]
    Expired(String),
    /// A registered node already has the name the host asked for.
    #[error("node `{0}` is registered; a join may not take over its name")]
    NameTaken(String),
    /// The token is limited to another site.
    #[error("the join token `{token}` admits site `{admits}`, not `{asked}`")]
    WrongSite {
        /// The token.
        token: String,
        /// The site it admits.
        admits: String,
        /// The site the host said it is in.
        asked: String,
    },
}

/// Uses the token whose secret hashes to `hash` for a host in `site` at `now_ms`: one use
/// less, and gone at zero. Returns the token's name. An agent's token never admits a
/// control-plane node, nor the other way round.
pub fn use_token(
    tokens: &mut BTreeMap<String, JoinToken>,
    hash: &str,
    site: &str,
    control_plane: bool,
    now_ms: u64,
) -> Result<String, JoinRefused> {
    let token = tokens
        .values_mut()
        .find(|t| t.hash == hash && t.uses_left > 0 && t.control_plane == control_plane)
        .ok_or(JoinRefused::Unknown)?;
    if now_ms >= token.expires_at_ms {
        return Err(JoinRefused::Expired(token.name.clone()));
    }
    if let Some(admits) = token.site.as_ref().filter(|admits| *admits != site) {
        return Err(JoinRefused::WrongSite {
            token: token.name.clone(),
            admits: admits.clone(),
            asked: site.to_string(),
        });
    }
    token.uses_left -= 1;
    let name = token.name.clone();
    if token.uses_left == 0 {
        tokens.remove(&name);
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(uses: u32, site: Option<&str>) -> BTreeMap<String, JoinToken> {
        let token = JoinToken {
            name: "j".into(),
            hash: "h".into(),
            expires_at_ms: 100,
            uses_left: uses,
            site: site.map(str::to_owned),
            control_plane: false,
            revision: 1,
        };
        [("j".to_string(), token)].into()
    }

    #[test]
    fn a_token_admits_as_many_joins_as_it_has_uses_before_it_expires() {
        let mut tokens = table(2, None);
        assert_eq!(use_token(&mut tokens, "h", "a", false, 0), Ok("j".into()));
        assert_eq!(use_token(&mut tokens, "h", "a", false, 0), Ok("j".into()));
        assert_eq!(
            use_token(&mut tokens, "h", "a", false, 0),
            Err(JoinRefused::Unknown)
        );
        assert!(tokens.is_empty(), "a used-up token is gone");
        let mut tokens = table(1, None);
        assert_eq!(
            use_token(&mut tokens, "x", "a", false, 0),
            Err(JoinRefused::Unknown)
        );
        assert_eq!(
            use_token(&mut tokens, "h", "a", false, 100),
            Err(JoinRefused::Expired("j".into()))
        );
        assert_eq!(tokens["j"].uses_left, 1, "a refused join uses nothing");
    }

    #[test]
    fn a_site_token_admits_only_its_site() {
        let mut tokens = table(1, Some("edge"));
        assert!(matches!(
            use_token(&mut tokens, "h", "core", false, 0),
            Err(JoinRefused::WrongSite { .. })
        ));
        assert_eq!(
            use_token(&mut tokens, "h", "edge", false, 0),
            Ok("j".into())
        );
    }

    #[test]
    fn an_agent_token_admits_no_control_plane_node() {
        let mut tokens = table(1, None);
        assert_eq!(
            use_token(&mut tokens, "h", "", true, 0),
            Err(JoinRefused::Unknown)
        );
        assert_eq!(tokens["j"].uses_left, 1);
    }
}

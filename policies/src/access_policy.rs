//! `AccessPolicy`: which identities may call a service, and on which paths and methods.
//! One policy per service; rules are checked in order and the first that matches decides.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The `service` of the mesh-wide policy: it governs every service without one of its own
/// (`defaultAction: deny` there makes the whole mesh default-deny).
pub const MESH_WIDE: &str = "*";

/// Spec of an `AccessPolicy`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccessPolicySpec {
    /// The service being protected; `*` for every service without a policy of its own.
    pub service: String,
    /// What happens to a call no rule matches. Default `deny`.
    #[serde(default)]
    pub default_action: Action,
    /// Rules, first match wins.
    #[serde(default)]
    pub rules: Vec<AccessRule>,
}

/// Allow or deny.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// The call goes through.
    Allow,
    /// The call gets 403 and a `hyphae-error: access-denied` header.
    #[default]
    Deny,
}

/// A rule: callers, and optionally the paths and methods it covers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccessRule {
    /// Allow (default) or deny.
    #[serde(default = "allow")]
    pub action: Action,
    /// Callers this rule applies to.
    pub from: Vec<Identity>,
    /// Path prefixes this rule covers; empty covers every path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Methods this rule covers; empty covers every method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
}

fn allow() -> Action {
    Action::Allow
}

/// A caller identity, matched against the SPIFFE ID in its certificate.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub enum Identity {
    /// `spiffe://<trust-domain>/service/<name>`; `"*"` means any service of the mesh.
    Service(String),
    /// `spiffe://<trust-domain>/node/<name>`; `"*"` means any node of the mesh.
    Node(String),
}

//! The bodies of the admin API that are not stored state: errors, the cluster view, membership
//! and transfer requests, dry runs. One definition serves both the handlers in [`crate::api`]
//! and the document in [`crate::openapi`], so the two cannot drift apart.

use hyphae_policies::Diagnostic;
use hyphae_policies::registry::NodeRecord;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::raft::NodeId;

/// Every failure's body.
#[derive(Serialize, JsonSchema)]
pub struct ErrorBody {
    /// A stable machine-readable reason (`not-found`, `invalid-policy`, `no-quorum`...).
    pub code: String,
    /// What happened and what to do, for people.
    pub message: String,
    /// For rejected policies: every problem, with file, line, column and field path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<Diagnostic>,
}

/// A cluster member in `GET /v1/cluster`.
#[derive(Serialize, JsonSchema)]
pub struct ClusterMember {
    /// Its Raft node id.
    pub id: NodeId,
    /// Its `host:port`.
    pub address: String,
    /// Whether it votes (otherwise it is a learner).
    pub voter: bool,
    /// Entries the leader has that it has not confirmed; only in the leader's view.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
}

/// `GET /v1/cluster`: the answering node's view of the cluster.
#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The answering node's id.
    pub id: NodeId,
    /// The answering node's name.
    pub name: String,
    /// Its Raft role (`Leader`, `Follower`, `Candidate`, `Learner`).
    pub state: String,
    /// The leader it knows of, if any.
    pub leader: Option<NodeId>,
    /// Its current term.
    pub term: u64,
    /// Index of the last entry in its log.
    pub last_log_index: Option<u64>,
    /// Index of the last entry it knows to be committed (replicated on a quorum).
    pub commit_index: Option<u64>,
    /// Index of the last entry it applied.
    pub last_applied: Option<u64>,
    /// Last log index its current snapshot covers.
    pub snapshot: Option<u64>,
    /// Last log index compacted away (entries up to it live only in the snapshot).
    pub purged: Option<u64>,
    /// Its state's revision (equal to the last applied index).
    pub revision: u64,
    /// Every member, voters and learners.
    pub members: Vec<ClusterMember>,
    /// The voters' ids.
    pub voters: Vec<NodeId>,
}

/// `POST /v1/cluster/members`: the node to add.
#[derive(Deserialize, JsonSchema)]
pub struct NewMember {
    /// Its node id (`spec.id` in its configuration).
    pub id: NodeId,
    /// Its `host:port`.
    pub address: String,
}

/// `POST /v1/cluster/transfer-leader`: the voter that should lead, or none for the most
/// caught-up one.
#[derive(Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferTo {
    /// The voter's node id.
    #[serde(default)]
    pub to: Option<NodeId>,
}

/// An object a dry run would write.
#[derive(Serialize, JsonSchema)]
pub struct PolicyId {
    /// `kind`.
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
}

/// `POST /v1/policies?dryRun=true`: what would be written, and the warnings.
#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DryRun {
    /// Always true: nothing was written.
    pub dry_run: bool,
    /// Always true: an invalid body is a 422 instead.
    pub valid: bool,
    /// The objects the body holds.
    pub objects: Vec<PolicyId>,
    /// Findings that do not block the write.
    pub warnings: Vec<Diagnostic>,
}

/// A node as `GET /v1/nodes` shows it: its registration, and on the leader how long its lease
/// still runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    /// The node as registered.
    #[serde(flatten)]
    pub node: NodeRecord,
    /// Milliseconds until the node expires unless it heartbeats; only in a leader's answer (a
    /// linearizable read), since only the leader keeps leases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_remaining_ms: Option<u64>,
}

/// `POST /v1/acl/tokens`: a new admin API token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewToken {
    /// Its name (a lower-case DNS label): who uses it, as the audit log shows.
    pub name: String,
    /// What it may do: `read`, `write` (policies) or `admin` (also membership and tokens).
    pub role: crate::tokens::Role,
    /// How long it works (`24h`, `30d` is written `720h`); forever when absent.
    #[serde(default)]
    pub ttl: Option<hyphae_policies::Duration>,
}

/// `POST /v1/acl/certificates`: an operator's client certificate for the admin API, signed
/// from its CSR (the key stays with the operator), with the role of a token of the same name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewOperatorCertificate {
    /// The operator's name (a lower-case DNS label), as the audit log shows.
    pub name: String,
    /// What it may do: `read`, `write` or `admin`.
    pub role: crate::tokens::Role,
    /// How long it works; the cluster's `certificates.lifetime` when absent.
    #[serde(default)]
    pub ttl: Option<hyphae_policies::Duration>,
    /// A PKCS#10 certificate signing request, PEM.
    pub csr_pem: String,
}

/// The answer to `POST /v1/acl/tokens`: the token and its secret, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedToken {
    /// The token as listed from now on.
    #[serde(flatten)]
    pub token: crate::tokens::TokenView,
    /// The secret to send as `Authorization: Bearer <secret>`; only its hash is stored.
    pub secret: String,
}

/// `GET /v1/ca`: the cluster's root certificate, for hosts to pin and trust.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaView {
    /// The root certificate, PEM.
    pub cert_pem: String,
    /// Lower-case hex SHA-256 of its DER: what `hyphae-agent --ca-fingerprint` pins.
    pub fingerprint: String,
    /// Every root hosts must trust now (PEM): the signing one, and during a rotation the
    /// next one and the retiring ones.
    #[serde(default)]
    pub bundle_pem: String,
}

/// `POST /v1/ca/rotate`: one step of a root rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateCa {
    /// `add`, `activate` or `retire`.
    pub step: String,
    /// Take `activate` or `retire` within a minute of the step before (refused otherwise, so
    /// that every host has followed): for a cluster where no host can be behind.
    #[serde(default)]
    pub force: bool,
}

/// `POST /v1/join-tokens`: a new join token.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewJoinToken {
    /// Its name; a generated one when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// How long it works. Default `1h`.
    #[serde(default)]
    pub ttl: Option<hyphae_policies::Duration>,
    /// How many hosts may join with it. Default 1.
    #[serde(default)]
    pub uses: Option<u32>,
    /// The only site it admits, if limited.
    #[serde(default)]
    pub site: Option<String>,
    /// Whether it admits control-plane nodes rather than agents. Default false.
    #[serde(default)]
    pub control_plane: bool,
}

/// The answer to `POST /v1/join-tokens`: the token and its secret, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedJoinToken {
    /// The token as listed from now on.
    #[serde(flatten)]
    pub token: crate::join_tokens::JoinTokenView,
    /// The secret a joining host presents; only its hash is stored.
    pub secret: String,
}

/// `POST /v1/cluster/join`: a control-plane node asks for its certificate; it then adds itself
/// to the cluster (`POST /v1/cluster/members`) with that certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ControlPlaneJoin {
    /// A control-plane join token's secret.
    pub token: String,
    /// The node's Raft node id (its `spec.id`).
    pub id: u64,
    /// A PKCS#10 certificate signing request, PEM; the key stays on the host.
    pub csr_pem: String,
}

pub use hyphae_policies::registry::{JoinRequest, Joined, RenewRequest};

//! The replicated state of the control plane as plain data, and the commands that change it.
//! Applying a command is a pure function of the state, the command and its log index: no I/O,
//! no clock, no randomness, so every node that applies the same log reaches the same state.

use std::collections::{BTreeMap, BTreeSet};

use hyphae_policies::registry::{HealthChange, NodeRecord};

pub use crate::ca::StoredCa;
pub use crate::join_tokens::{JoinRefused, JoinToken};
pub use crate::tokens::StoredToken;
use hyphae_policies::VirtualIpRange;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::virtual_ips::{SavedVirtualIps, VirtualIps};

/// The kind whose objects are services outside the mesh, each with a virtual IP of its own.
const EXTERNAL_SERVICE: &str = "ExternalService";

/// One policy document as an operator applied it: the YAML text of that single document, with
/// the `kind` and `metadata.name` the API layer read from it when it validated the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDocument {
    /// The document's `kind`, e.g. `ServicePolicy`.
    pub kind: String,
    /// The document's name, unique within its kind.
    pub name: String,
    /// The YAML text of this one document, exactly as applied.
    pub source: String,
}

/// A policy as the replicated state holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StoredPolicy {
    /// The document's `kind`.
    pub kind: String,
    /// The document's name, unique within its kind.
    pub name: String,
    /// The YAML text of this one document, exactly as applied.
    pub source: String,
    /// The Raft log index of the command that last wrote this policy.
    pub revision: u64,
}

/// Identifies one policy: its kind and its name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PolicyKey {
    /// The policy's `kind`.
    pub kind: String,
    /// The policy's name within its kind.
    pub name: String,
}

/// Identifies one object of the state a command can change: a policy or a node. Watch streams
/// and the store's disk writes both work from these keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StateKey {
    /// A policy.
    Policy(PolicyKey),
    /// A registered node (with its instances), by name.
    Node(String),
    /// The cluster's identity.
    Cluster,
    /// The table of admin API tokens (never sent to agents).
    Tokens,
    /// The cluster's certificate authority (never sent to agents).
    Ca,
    /// The table of join tokens (never sent to agents).
    JoinTokens,
    /// Every service's virtual IP.
    VirtualIps,
}

/// The value a [`StateKey`] has in one state, to tell whether a command really changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyValue {
    /// A policy, or none.
    Policy(Option<StoredPolicy>),
    /// A node, or none.
    Node(Option<NodeRecord>),
    /// The cluster's identity, or none yet.
    Cluster(Option<String>),
    /// Every admin API token.
    Tokens(BTreeMap<String, StoredToken>),
    /// The certificate authority, or none yet.
    Ca(Option<StoredCa>),
    /// The generation of the virtual IP table (it changes whenever the table does).
    VirtualIps(u64),
    /// Every join token.
    JoinTokens(BTreeMap<String, JoinToken>),
}

/// A node the leader found with a lapsed lease, with the revision of its record when it looked:
/// a node that registered again since then keeps its new registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LapsedNode {
    /// The node's name.
    pub name: String,
    /// Its record's revision when the lease was found lapsed.
    pub revision: u64,
}

/// A change to the replicated state: the application data of a Raft log entry.
///
/// Commands are persisted in the Raft log, so their serialized form is a storage format:
/// add variants, never rename or reshape existing ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Create or replace every listed policy, all at once. Each gets the entry's log index as
    /// its revision. A later document with the same kind and name wins over an earlier one.
    ApplyPolicies {
        /// The documents to store, already validated by the API layer.
        policies: Vec<PolicyDocument>,
        /// Leave a document whose text is already stored as it is, revision and all. False
        /// in entries from leaders before this existed, which replaced it: a node replaying
        /// them applies them as they were applied.
        #[serde(default)]
        leave_unchanged: bool,
    },
    /// Remove one policy, if it exists.
    DeletePolicy {
        /// The policy's `kind`.
        kind: String,
        /// The policy's name.
        name: String,
    },
    /// Create or replace a node's registration (the agent started, or its services changed).
    RegisterNode {
        /// The node as its agent describes it; its revision becomes the entry's index.
        node: NodeRecord,
        /// The registry's cap (`limits.maxNodes`): a new node beyond it is refused here, where
        /// concurrent registrations are ordered, not only before the write.
        #[serde(default)]
        max_nodes: Option<u32>,
    },
    /// Health changes an agent observed on its instances. Unknown instances are ignored.
    ReportHealth {
        /// The node's name.
        node: String,
        /// The changes, in order.
        changes: Vec<HealthChange>,
    },
    /// Remove nodes whose lease lapsed (the leader's lease keeper proposes this).
    ExpireNodes {
        /// The nodes, each with the revision the leader saw.
        nodes: Vec<LapsedNode>,
    },
    /// Remove a node that left on purpose (its agent stopped).
    DeregisterNode {
        /// The node's name.
        node: String,
    },
    /// Give the cluster its identity, unless it has one: the first such entry applied wins.
    /// Readers of watch streams tell a rebuilt cluster from a lagging node by it.
    SetClusterId {
        /// A random identifier.
        id: String,
    },
    /// Store an admin API token (replacing one of the same name). With `only_if_none`, only
    /// when the cluster has no token at all: how the initializing node stores the bootstrap
    /// token, once.
    CreateToken {
        /// The token; its revision becomes the entry's index.
        token: StoredToken,
        /// Store it only into an empty table.
        only_if_none: bool,
    },
    /// Remove an admin API token, if it exists.
    RevokeToken {
        /// The token's name.
        name: String,
    },
    /// Give the cluster its certificate authority, unless it has one: the first applied wins.
    SetCa {
        /// The root and its key.
        ca: StoredCa,
    },
    /// Forget a node: its record, and the name its join took, so a new join may take it.
    ReleaseNode {
        /// The node's name.
        name: String,
    },
    /// One step of a rotation of the cluster's root.
    RotateCa {
        /// The step.
        step: crate::ca::RotationStep,
        /// The leader's clock when it was asked for (ms since the Unix epoch).
        #[serde(default)]
        now_ms: u64,
        /// Take the step within [`crate::ca::ROTATION_SETTLE_MS`] of the one before.
        #[serde(default)]
        force: bool,
    },
    /// Store a join token (replacing one of the same name).
    CreateJoinToken {
        /// The token; its revision becomes the entry's index.
        token: JoinToken,
    },
    /// Remove a join token, if it exists.
    RevokeJoinToken {
        /// The token's name.
        name: String,
    },
    /// Use a join token once for a host named `node` in `site`, as the leader's clock read
    /// `now_ms`; refused when a registered node has that name.
    UseJoinToken {
        /// SHA-256 of the presented secret.
        hash: String,
        /// The name the host asks for.
        node: String,
        /// The site the joining host says it is in.
        site: String,
        /// Whether a control-plane node joins (it needs a control-plane token).
        #[serde(default)]
        control_plane: bool,
        /// The leader's clock when it proposed the entry (every node applies the same time).
        now_ms: u64,
    },
    /// Fix the block virtual IPs come from, unless one is fixed (the first applied wins), and
    /// give every service an address.
    SetVirtualIpRange {
        /// The block, from the first leader's configuration.
        range: VirtualIpRange,
    },
}

impl Command {
    /// Every object this command may create, replace or remove. The store writes exactly these
    /// keys back to disk after applying the command, and watch streams send exactly these.
    pub fn keys(&self) -> Vec<StateKey> {
        match self {
            Command::ApplyPolicies { policies, .. } => policies
                .iter()
                .map(|doc| {
                    StateKey::Policy(PolicyKey {
                        kind: doc.kind.clone(),
                        name: doc.name.clone(),
                    })
                })
                .chain([StateKey::VirtualIps])
                .collect(),
            Command::DeletePolicy { kind, name } => vec![
                StateKey::Policy(PolicyKey {
                    kind: kind.clone(),
                    name: name.clone(),
                }),
                StateKey::VirtualIps,
            ],
            Command::RegisterNode { node, .. } => {
                vec![StateKey::Node(node.name.clone()), StateKey::VirtualIps]
            }
            Command::ReportHealth { node, .. } => vec![StateKey::Node(node.clone())],
            Command::DeregisterNode { node } => {
                vec![StateKey::Node(node.clone()), StateKey::VirtualIps]
            }
            Command::ExpireNodes { nodes } => nodes
                .iter()
                .map(|n| StateKey::Node(n.name.clone()))
                .chain([StateKey::VirtualIps])
                .collect(),
            Command::SetClusterId { .. } => vec![StateKey::Cluster],
            Command::CreateToken { .. } | Command::RevokeToken { .. } => vec![StateKey::Tokens],
            Command::SetCa { .. } | Command::RotateCa { .. } => vec![StateKey::Ca],
            Command::ReleaseNode { name } => vec![
                StateKey::Node(name.clone()),
                StateKey::JoinTokens,
                StateKey::VirtualIps,
            ],
            Command::SetVirtualIpRange { .. } => vec![StateKey::VirtualIps],
            Command::CreateJoinToken { .. }
            | Command::RevokeJoinToken { .. }
            | Command::UseJoinToken { .. } => vec![StateKey::JoinTokens],
        }
    }
}

fn stored() -> bool {
    true
}

/// What applying one log entry did, returned to the client that proposed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "response", rename_all = "snake_case")]
pub enum CommandResponse {
    /// The entry carried no command (a leader's blank entry or a membership change).
    Noop {
        /// The log index of the entry.
        revision: u64,
    },
    /// [`Command::ApplyPolicies`] stored every document.
    PoliciesApplied {
        /// The log index of the entry, now the revision of every policy it wrote.
        revision: u64,
        /// How many of the policies did not exist before.
        created: usize,
        /// How many replaced an existing policy with different text.
        updated: usize,
        /// How many had the text already stored: left as they were, their revision too, so
        /// re-applying the same files changes nothing and pushes nothing to agents.
        #[serde(default)]
        unchanged: usize,
    },
    /// [`Command::DeletePolicy`] ran.
    PolicyDeleted {
        /// The log index of the entry.
        revision: u64,
        /// Whether the policy existed (and so was removed).
        existed: bool,
    },
    /// [`Command::RegisterNode`] ran.
    NodeRegistered {
        /// The log index of the entry, now the node's revision.
        revision: u64,
        /// False when the registry was full and the node new: nothing was stored.
        #[serde(default = "stored")]
        stored: bool,
    },
    /// [`Command::ReportHealth`] ran.
    HealthReported {
        /// The log index of the entry.
        revision: u64,
        /// Whether the node is registered (if not, its agent must register again).
        known: bool,
        /// How many instances changed health.
        changed: usize,
    },
    /// [`Command::ExpireNodes`] ran.
    NodesExpired {
        /// The log index of the entry.
        revision: u64,
        /// The nodes removed (those that had not registered again meanwhile).
        expired: Vec<String>,
    },
    /// [`Command::DeregisterNode`] ran.
    NodeDeregistered {
        /// The log index of the entry.
        revision: u64,
        /// Whether the node was registered.
        existed: bool,
    },
    /// [`Command::SetClusterId`] ran.
    ClusterIdentified {
        /// The log index of the entry.
        revision: u64,
        /// The identity in force (an earlier one, if there was).
        id: String,
    },
    /// [`Command::CreateToken`] ran.
    TokenCreated {
        /// The log index of the entry.
        revision: u64,
        /// Whether the token was stored (false: `only_if_none` and tokens exist).
        stored: bool,
    },
    /// [`Command::RevokeToken`] ran.
    TokenRevoked {
        /// The log index of the entry.
        revision: u64,
        /// Whether the token existed.
        existed: bool,
    },
    /// [`Command::SetCa`] ran.
    CaSet {
        /// The log index of the entry.
        revision: u64,
        /// The fingerprint of the root in force (an earlier one, if there was).
        fingerprint: String,
    },
    /// [`Command::ReleaseNode`] ran.
    NodeReleased {
        /// The log index of the entry.
        revision: u64,
        /// Whether the node was registered or its name issued.
        existed: bool,
    },
    /// [`Command::SetVirtualIpRange`] ran.
    VirtualIpRangeSet {
        /// The log index of the entry.
        revision: u64,
        /// The block in force (an earlier one, if one was fixed).
        range: VirtualIpRange,
    },
    /// [`Command::RotateCa`] ran.
    CaRotated {
        /// The log index of the entry.
        revision: u64,
        /// The signing root's fingerprint afterwards, or why the step was refused.
        outcome: Result<String, String>,
    },
    /// [`Command::CreateJoinToken`] ran.
    JoinTokenCreated {
        /// The log index of the entry.
        revision: u64,
    },
    /// [`Command::RevokeJoinToken`] ran.
    JoinTokenRevoked {
        /// The log index of the entry.
        revision: u64,
        /// Whether the token existed.
        existed: bool,
    },
    /// [`Command::UseJoinToken`] ran.
    JoinTokenUsed {
        /// The log index of the entry.
        revision: u64,
        /// The token's name, or why it was refused.
        outcome: Result<String, JoinRefused>,
    },
}

impl CommandResponse {
    /// The log index of the entry that produced this response.
    pub fn revision(&self) -> u64 {
        match self {
            CommandResponse::Noop { revision }
            | CommandResponse::PoliciesApplied { revision, .. }
            | CommandResponse::PolicyDeleted { revision, .. }
            | CommandResponse::NodeRegistered { revision, .. }
            | CommandResponse::HealthReported { revision, .. }
            | CommandResponse::NodesExpired { revision, .. }
            | CommandResponse::NodeDeregistered { revision, .. }
            | CommandResponse::ClusterIdentified { revision, .. }
            | CommandResponse::TokenCreated { revision, .. }
            | CommandResponse::TokenRevoked { revision, .. }
            | CommandResponse::CaSet { revision, .. }
            | CommandResponse::CaRotated { revision, .. }
            | CommandResponse::NodeReleased { revision, .. }
            | CommandResponse::VirtualIpRangeSet { revision, .. }
            | CommandResponse::JoinTokenCreated { revision }
            | CommandResponse::JoinTokenRevoked { revision, .. }
            | CommandResponse::JoinTokenUsed { revision, .. } => *revision,
        }
    }

    /// For the answer to a removal (a policy, node, token or join token), whether what it
    /// named existed; `None` for every other command.
    pub fn existed(&self) -> Option<bool> {
        match self {
            CommandResponse::PolicyDeleted { existed, .. }
            | CommandResponse::NodeDeregistered { existed, .. }
            | CommandResponse::TokenRevoked { existed, .. }
            | CommandResponse::JoinTokenRevoked { existed, .. }
            | CommandResponse::NodeReleased { existed, .. } => Some(*existed),
            _ => None,
        }
    }
}

/// The replicated state: what every control-plane node agrees on once it has applied the log up
/// to [`State::revision`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Log index of the last entry applied, whether or not it changed anything.
    revision: u64,
    /// Policies by kind, then by name.
    policies: BTreeMap<String, BTreeMap<String, StoredPolicy>>,
    /// Registered nodes by name.
    nodes: BTreeMap<String, NodeRecord>,
    /// The cluster's identity, once its first leader gave it one.
    cluster_id: Option<String>,
    /// Admin API tokens by name (hashes only).
    tokens: BTreeMap<String, StoredToken>,
    /// The certificate authority, once the first leader made it.
    ca: Option<StoredCa>,
    /// Join tokens by name (hashes only).
    join_tokens: BTreeMap<String, JoinToken>,
    /// The size of the nodes and policies as JSON: what grows with the fleet, and what a
    /// snapshot must carry within `limits.maxSnapshotBytes`.
    bytes: u64,
    /// Node names a join has issued a certificate for: no later join may take one until an
    /// operator releases it (`DELETE /v1/nodes/{name}`), so a join token cannot make a
    /// certificate for a node that is only away.
    issued: BTreeSet<String>,
    /// Every service's virtual IP.
    virtual_ips: VirtualIps,
}

/// `value`'s size as JSON.
fn json_size(value: &impl Serialize) -> u64 {
    serde_json::to_vec(value).map_or(0, |json| json.len() as u64)
}

impl State {
    /// An empty state, before any log entry was applied.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a state from its parts, as read back from disk or from a snapshot. A later
    /// policy with the same kind and name replaces an earlier one.
    pub fn restore(revision: u64, policies: impl IntoIterator<Item = StoredPolicy>) -> Self {
        let mut state = State {
            revision,
            ..State::default()
        };
        for policy in policies {
            state.insert(policy);
        }
        state
    }

    /// Adds nodes read back from disk or from a snapshot to a restored state.
    pub fn with_nodes(mut self, nodes: impl IntoIterator<Item = NodeRecord>) -> Self {
        for node in nodes {
            self.put_node(node);
        }
        self
    }

    /// The size of the nodes and policies as JSON, which grows with the fleet: writes that
    /// would take it past what a snapshot may carry are refused before they are proposed.
    pub fn approx_bytes(&self) -> u64 {
        self.bytes
    }

    /// Puts back the virtual IP table read from disk or from a snapshot.
    pub fn with_virtual_ips(mut self, saved: SavedVirtualIps) -> Self {
        self.virtual_ips.restore(saved);
        self
    }

    /// Every service's virtual IP.
    pub fn virtual_ips(&self) -> &VirtualIps {
        &self.virtual_ips
    }

    /// Sets the cluster's identity read back from disk or from a snapshot.
    pub fn with_cluster_id(mut self, id: Option<String>) -> Self {
        self.cluster_id = id;
        self
    }

    /// The cluster's identity, once it has one.
    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    /// Sets the token table read back from disk or from a snapshot.
    pub fn with_tokens(mut self, tokens: impl IntoIterator<Item = StoredToken>) -> Self {
        self.tokens = tokens.into_iter().map(|t| (t.name.clone(), t)).collect();
        self
    }

    /// The admin API tokens, by name.
    pub fn tokens(&self) -> &BTreeMap<String, StoredToken> {
        &self.tokens
    }

    /// Sets the certificate authority and join tokens read back from disk or a snapshot.
    pub fn with_identity(
        mut self,
        ca: Option<StoredCa>,
        join_tokens: impl IntoIterator<Item = JoinToken>,
    ) -> Self {
        self.ca = ca;
        self.join_tokens = join_tokens
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect();
        self
    }

    /// Sets the issued node names read back from disk or from a snapshot.
    pub fn with_issued(mut self, names: impl IntoIterator<Item = String>) -> Self {
        self.issued = names.into_iter().collect();
        self
    }

    /// Node names a join has issued a certificate for.
    pub fn issued(&self) -> &BTreeSet<String> {
        &self.issued
    }

    /// The certificate authority, once it exists.
    pub fn ca(&self) -> Option<&StoredCa> {
        self.ca.as_ref()
    }

    /// The join tokens, by name.
    pub fn join_tokens(&self) -> &BTreeMap<String, JoinToken> {
        &self.join_tokens
    }

    /// The current value of `key`.
    pub fn value_of(&self, key: &StateKey) -> KeyValue {
        match key {
            StateKey::Policy(PolicyKey { kind, name }) => {
                KeyValue::Policy(self.policy(kind, name).cloned())
            }
            StateKey::Node(name) => KeyValue::Node(self.node(name).cloned()),
            StateKey::Cluster => KeyValue::Cluster(self.cluster_id.clone()),
            StateKey::Tokens => KeyValue::Tokens(self.tokens.clone()),
            StateKey::Ca => KeyValue::Ca(self.ca.clone()),
            StateKey::JoinTokens => KeyValue::JoinTokens(self.join_tokens.clone()),
            StateKey::VirtualIps => KeyValue::VirtualIps(self.virtual_ips.generation()),
        }
    }

    /// Applies `command` like [`State::apply`] and also says which of its keys it really
    /// changed (a repeated health state or a spared expiry changes nothing).
    pub fn apply_tracked(
        &mut self,
        command: Command,
        log_index: u64,
    ) -> (CommandResponse, Vec<StateKey>) {
        let before: Vec<(StateKey, KeyValue)> = command
            .keys()
            .into_iter()
            .map(|key| {
                let value = self.value_of(&key);
                (key, value)
            })
            .collect();
        let response = self.apply(command, log_index);
        let mut changed: Vec<StateKey> = before
            .into_iter()
            .filter(|(key, value)| self.value_of(key) != *value)
            .map(|(key, _)| key)
            .collect();
        changed.dedup();
        (response, changed)
    }

    /// The registered node with this name, if any.
    pub fn node(&self, name: &str) -> Option<&NodeRecord> {
        self.nodes.get(name)
    }

    /// Every registered node, ordered by name.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeRecord> + '_ {
        self.nodes.values()
    }

    /// The log index of the last entry applied (0 before the first one).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The policy with this kind and name, if any.
    pub fn policy(&self, kind: &str, name: &str) -> Option<&StoredPolicy> {
        self.policies.get(kind)?.get(name)
    }

    /// Every policy, ordered by kind then name.
    pub fn policies(&self) -> impl Iterator<Item = &StoredPolicy> + '_ {
        self.policies.values().flat_map(BTreeMap::values)
    }

    /// The policies of one kind, ordered by name.
    pub fn policies_of_kind<'a>(&'a self, kind: &str) -> impl Iterator<Item = &'a StoredPolicy> {
        self.policies
            .get(kind)
            .into_iter()
            .flat_map(BTreeMap::values)
    }

    /// How many policies the state holds.
    pub fn policy_count(&self) -> usize {
        self.policies.values().map(BTreeMap::len).sum()
    }

    /// Applies `command`, carried by the log entry at `log_index`, and says what it did.
    ///
    /// The caller applies entries in log order; `log_index` becomes the state's revision.
    pub fn apply(&mut self, command: Command, log_index: u64) -> CommandResponse {
        self.revision = log_index;
        match command {
            Command::ApplyPolicies {
                policies,
                leave_unchanged,
            } => {
                let (mut created, mut updated, mut unchanged) = (0, 0, 0);
                for doc in policies {
                    if leave_unchanged
                        && self
                            .policy(&doc.kind, &doc.name)
                            .is_some_and(|stored| stored.source == doc.source)
                    {
                        unchanged += 1;
                        continue;
                    }
                    let replaced = self.insert(StoredPolicy {
                        kind: doc.kind,
                        name: doc.name,
                        source: doc.source,
                        revision: log_index,
                    });
                    if replaced.is_some() {
                        updated += 1;
                    } else {
                        created += 1;
                    }
                }
                CommandResponse::PoliciesApplied {
                    revision: log_index,
                    created,
                    updated,
                    unchanged,
                }
            }
            Command::DeletePolicy { kind, name } => CommandResponse::PolicyDeleted {
                revision: log_index,
                existed: self.remove(&kind, &name).is_some(),
            },
            Command::RegisterNode {
                mut node,
                max_nodes,
            } => {
                let full = max_nodes.is_some_and(|max| self.nodes.len() >= max as usize)
                    && !self.nodes.contains_key(&node.name);
                if !full {
                    node.revision = log_index;
                    self.put_node(node);
                }
                CommandResponse::NodeRegistered {
                    revision: log_index,
                    stored: !full,
                }
            }
            Command::ReportHealth { node, changes } => {
                // Changed where it is stored: taking the node out and putting it back would
                // count its services out and in again, and a service no other node serves
                // would lose its virtual IP to the next free one.
                let Some(record) = self.nodes.get_mut(&node) else {
                    return CommandResponse::HealthReported {
                        revision: log_index,
                        known: false,
                        changed: 0,
                    };
                };
                let size_before = json_size(record);
                let mut changed = 0;
                for change in changes {
                    let instance = record
                        .instances
                        .iter_mut()
                        .find(|i| i.service == change.service && i.port == change.port);
                    if let Some(instance) = instance
                        && instance.health != change.health
                    {
                        instance.health = change.health;
                        changed += 1;
                    }
                }
                if changed > 0 {
                    record.revision = log_index;
                    // Only health and revision changed; their JSON may differ in length.
                    let size = json_size(record);
                    self.bytes = self.bytes.saturating_sub(size_before) + size;
                }
                CommandResponse::HealthReported {
                    revision: log_index,
                    known: true,
                    changed,
                }
            }
            Command::ExpireNodes { nodes } => {
                let mut expired = Vec::new();
                for lapsed in nodes {
                    if self
                        .nodes
                        .get(&lapsed.name)
                        .is_some_and(|n| n.revision == lapsed.revision)
                    {
                        self.take_node(&lapsed.name);
                        expired.push(lapsed.name);
                    }
                }
                CommandResponse::NodesExpired {
                    revision: log_index,
                    expired,
                }
            }
            Command::DeregisterNode { node } => CommandResponse::NodeDeregistered {
                revision: log_index,
                existed: self.take_node(&node).is_some(),
            },
            Command::SetClusterId { id } => CommandResponse::ClusterIdentified {
                revision: log_index,
                id: self.cluster_id.get_or_insert(id).clone(),
            },
            Command::CreateToken {
                mut token,
                only_if_none,
            } => {
                let stored = !only_if_none || self.tokens.is_empty();
                if stored {
                    token.revision = log_index;
                    self.tokens.insert(token.name.clone(), token);
                }
                CommandResponse::TokenCreated {
                    revision: log_index,
                    stored,
                }
            }
            Command::RevokeToken { name } => CommandResponse::TokenRevoked {
                revision: log_index,
                existed: self.tokens.remove(&name).is_some(),
            },
            Command::SetCa { ca } => CommandResponse::CaSet {
                revision: log_index,
                fingerprint: self.ca.get_or_insert(ca).fingerprint.clone(),
            },
            Command::RotateCa {
                step,
                now_ms,
                force,
            } => CommandResponse::CaRotated {
                revision: log_index,
                outcome: match self.ca.as_ref().map(|ca| ca.rotated(step, now_ms, force)) {
                    None => Err("the cluster has no root yet".to_string()),
                    Some(Err(why)) => Err(why),
                    Some(Ok(rotated)) => {
                        let fingerprint = rotated.fingerprint.clone();
                        self.ca = Some(rotated);
                        Ok(fingerprint)
                    }
                },
            },
            Command::CreateJoinToken { mut token } => {
                token.revision = log_index;
                self.join_tokens.insert(token.name.clone(), token);
                CommandResponse::JoinTokenCreated {
                    revision: log_index,
                }
            }
            Command::RevokeJoinToken { name } => CommandResponse::JoinTokenRevoked {
                revision: log_index,
                existed: self.join_tokens.remove(&name).is_some(),
            },
            Command::UseJoinToken {
                hash,
                node,
                site,
                control_plane,
                now_ms,
            } => CommandResponse::JoinTokenUsed {
                revision: log_index,
                outcome: if self.nodes.contains_key(&node)
                    || (!control_plane && self.issued.contains(&node))
                {
                    Err(JoinRefused::NameTaken(node))
                } else {
                    let used = crate::join_tokens::use_token(
                        &mut self.join_tokens,
                        &hash,
                        &site,
                        control_plane,
                        now_ms,
                    );
                    if used.is_ok() && !control_plane {
                        self.issued.insert(node);
                    }
                    used
                },
            },
            Command::ReleaseNode { name } => CommandResponse::NodeReleased {
                revision: log_index,
                existed: self.issued.remove(&name) | self.take_node(&name).is_some(),
            },
            Command::SetVirtualIpRange { range } => CommandResponse::VirtualIpRangeSet {
                revision: log_index,
                range: self.virtual_ips.set_range(range),
            },
        }
    }

    /// Records that the log entry at `log_index` carried no command (a blank or membership
    /// entry): only the revision moves.
    pub fn apply_noop(&mut self, log_index: u64) -> CommandResponse {
        self.revision = log_index;
        CommandResponse::Noop {
            revision: log_index,
        }
    }

    /// Stores `policy`, returning the one it replaced.
    fn insert(&mut self, policy: StoredPolicy) -> Option<StoredPolicy> {
        self.bytes += json_size(&policy);
        if policy.kind == EXTERNAL_SERVICE && self.policy(EXTERNAL_SERVICE, &policy.name).is_none()
        {
            self.virtual_ips.name(&policy.name);
        }
        let replaced = self
            .policies
            .entry(policy.kind.clone())
            .or_default()
            .insert(policy.name.clone(), policy);
        if let Some(replaced) = &replaced {
            self.bytes = self.bytes.saturating_sub(json_size(replaced));
        }
        replaced
    }

    /// Removes a policy, dropping its kind's map once empty so equal states compare equal.
    fn remove(&mut self, kind: &str, name: &str) -> Option<StoredPolicy> {
        let by_name = self.policies.get_mut(kind)?;
        let removed = by_name.remove(name);
        if by_name.is_empty() {
            self.policies.remove(kind);
        }
        if let Some(removed) = &removed {
            self.bytes = self.bytes.saturating_sub(json_size(removed));
            if removed.kind == EXTERNAL_SERVICE {
                self.virtual_ips.unname(&removed.name);
            }
        }
        removed
    }

    /// Stores `node`, replacing one of the same name.
    fn put_node(&mut self, node: NodeRecord) {
        self.bytes += json_size(&node);
        // The new instances are counted before the replaced ones are dropped, so a service
        // that stays registered never loses its address in between.
        for instance in &node.instances {
            self.virtual_ips.name(&instance.service);
        }
        if let Some(replaced) = self.nodes.insert(node.name.clone(), node) {
            self.forget_node(&replaced);
        }
    }

    /// Drops what a node that left counted towards: its share of the size and its services'
    /// names.
    fn forget_node(&mut self, node: &NodeRecord) {
        self.bytes = self.bytes.saturating_sub(json_size(node));
        for instance in &node.instances {
            self.virtual_ips.unname(&instance.service);
        }
    }

    /// Removes the node `name`.
    fn take_node(&mut self, name: &str) -> Option<NodeRecord> {
        let taken = self.nodes.remove(name);
        if let Some(taken) = &taken {
            self.forget_node(taken);
        }
        taken
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use hyphae_policies::registry::{Health, InstanceRecord};

    use super::*;

    /// A document to apply (shared with the store's tests).
    pub(crate) fn doc(kind: &str, name: &str, source: &str) -> PolicyDocument {
        PolicyDocument {
            kind: kind.to_owned(),
            name: name.to_owned(),
            source: source.to_owned(),
        }
    }

    /// An apply command.
    pub(crate) fn apply_policies(docs: Vec<PolicyDocument>) -> Command {
        Command::ApplyPolicies {
            policies: docs,
            leave_unchanged: true,
        }
    }

    /// A delete command.
    pub(crate) fn delete(kind: &str, name: &str) -> Command {
        Command::DeletePolicy {
            kind: kind.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The answer to an apply at `revision` that created and updated so many policies.
    fn applied(revision: u64, created: usize, updated: usize) -> CommandResponse {
        CommandResponse::PoliciesApplied {
            revision,
            created,
            updated,
            unchanged: 0,
        }
    }

    /// The answer to a delete at `revision`.
    fn deleted(revision: u64, existed: bool) -> CommandResponse {
        CommandResponse::PolicyDeleted { revision, existed }
    }

    /// The answer to a health report at `revision`.
    fn reported(revision: u64, known: bool, changed: usize) -> CommandResponse {
        CommandResponse::HealthReported {
            revision,
            known,
            changed,
        }
    }

    #[test]
    fn empty_state_has_revision_zero_and_no_policies() {
        let state = State::new();
        assert_eq!(state.revision(), 0);
        assert_eq!(state.policy_count(), 0);
        assert!(state.policy("ServicePolicy", "payments").is_none());
    }

    #[test]
    fn apply_policies_stores_every_document_with_the_entry_index() {
        let mut state = State::new();
        let response = state.apply(
            apply_policies(vec![
                doc("ServicePolicy", "payments", "kind: ServicePolicy\n"),
                doc("AccessPolicy", "payments", "kind: AccessPolicy\n"),
            ]),
            7,
        );
        assert_eq!(response, applied(7, 2, 0));
        assert_eq!(state.revision(), 7);
        assert_eq!(state.policy_count(), 2);
        let stored = state.policy("ServicePolicy", "payments").expect("stored");
        assert_eq!(stored.source, "kind: ServicePolicy\n");
        assert_eq!(stored.revision, 7);
        // Same name, other kind: a separate policy.
        assert_eq!(
            state.policy("AccessPolicy", "payments").map(|p| p.revision),
            Some(7)
        );
    }

    #[test]
    fn reapplying_updates_only_the_documents_it_names() {
        let mut state = State::new();
        state.apply(
            apply_policies(vec![
                doc("ServicePolicy", "payments", "v1"),
                doc("ServicePolicy", "orders", "v1"),
            ]),
            3,
        );
        let response = state.apply(
            apply_policies(vec![
                doc("ServicePolicy", "payments", "v2"),
                doc("ServicePolicy", "users", "v1"),
            ]),
            5,
        );
        assert_eq!(response, applied(5, 1, 1));
        let payments = state.policy("ServicePolicy", "payments").expect("payments");
        assert_eq!((payments.source.as_str(), payments.revision), ("v2", 5));
        let orders = state.policy("ServicePolicy", "orders").expect("orders");
        assert_eq!((orders.source.as_str(), orders.revision), ("v1", 3));
        assert_eq!(state.revision(), 5);
        let names: Vec<_> = state
            .policies_of_kind("ServicePolicy")
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["orders", "payments", "users"]);
    }

    #[test]
    fn identical_text_is_left_as_it_was_with_its_revision() {
        let mut state = State::new();
        state.apply(apply_policies(vec![doc("ServicePolicy", "a", "same")]), 1);
        let (response, changed) = state.apply_tracked(
            apply_policies(vec![
                doc("ServicePolicy", "a", "same"),
                doc("ServicePolicy", "b", "new"),
            ]),
            2,
        );
        assert_eq!(
            response,
            CommandResponse::PoliciesApplied {
                revision: 2,
                created: 1,
                updated: 0,
                unchanged: 1
            }
        );
        assert_eq!(
            state.policy("ServicePolicy", "a").map(|p| p.revision),
            Some(1)
        );
        let policy_a = StateKey::Policy(PolicyKey {
            kind: "ServicePolicy".into(),
            name: "a".into(),
        });
        assert!(!changed.contains(&policy_a), "{changed:?}");
        let response = state.apply(apply_policies(vec![doc("ServicePolicy", "a", "other")]), 3);
        assert_eq!(response, applied(3, 0, 1));
        // An entry from a leader before `leave_unchanged` replaces identical text, as it did.
        let old: Command = serde_json::from_value(serde_json::json!({
            "command": "apply_policies",
            "policies": [{"kind": "ServicePolicy", "name": "a", "source": "other"}]
        }))
        .expect("an old entry");
        assert_eq!(state.apply(old, 4), applied(4, 0, 1));
    }

    #[test]
    fn later_duplicate_in_one_command_wins() {
        let mut state = State::new();
        let response = state.apply(
            apply_policies(vec![
                doc("ServicePolicy", "a", "first"),
                doc("ServicePolicy", "a", "second"),
            ]),
            4,
        );
        assert_eq!(response, applied(4, 1, 1));
        assert_eq!(state.policy_count(), 1);
        assert_eq!(
            state
                .policy("ServicePolicy", "a")
                .map(|p| p.source.as_str()),
            Some("second")
        );
    }

    #[test]
    fn delete_says_whether_the_policy_existed() {
        let mut state = State::new();
        state.apply(
            apply_policies(vec![
                doc("ServicePolicy", "a", "x"),
                doc("ServicePolicy", "b", "y"),
            ]),
            1,
        );
        assert_eq!(
            state.apply(delete("ServicePolicy", "a"), 2),
            deleted(2, true)
        );
        assert!(state.policy("ServicePolicy", "a").is_none());
        assert!(state.policy("ServicePolicy", "b").is_some());
        assert_eq!(
            state.apply(delete("ServicePolicy", "a"), 3),
            deleted(3, false)
        );
        assert_eq!(
            state.apply(delete("AccessPolicy", "b"), 4),
            deleted(4, false)
        );
        assert_eq!(state.revision(), 4);
        assert_eq!(state.policy_count(), 1);
    }

    #[test]
    fn deleting_the_last_policy_of_a_kind_leaves_an_equal_empty_state() {
        let mut state = State::new();
        state.apply(apply_policies(vec![doc("ServicePolicy", "a", "x")]), 1);
        state.apply(delete("ServicePolicy", "a"), 2);
        assert_eq!(state, State::restore(2, []));
    }

    #[test]
    fn noop_entries_move_only_the_revision() {
        let mut state = State::new();
        state.apply(apply_policies(vec![doc("ServicePolicy", "a", "x")]), 1);
        assert_eq!(state.apply_noop(2), CommandResponse::Noop { revision: 2 });
        assert_eq!(state.revision(), 2);
        assert_eq!(
            state.policy("ServicePolicy", "a").map(|p| p.revision),
            Some(1)
        );
    }

    #[test]
    fn restore_rebuilds_an_equal_state() {
        let mut state = State::new();
        state.apply(
            apply_policies(vec![
                doc("ServicePolicy", "a", "x"),
                doc("AccessPolicy", "b", "y"),
            ]),
            1,
        );
        state.apply(apply_policies(vec![doc("ServicePolicy", "c", "z")]), 2);
        let restored = State::restore(state.revision(), state.policies().cloned());
        assert_eq!(restored, state);
    }

    fn instance(service: &str, port: u16, health: Health) -> InstanceRecord {
        InstanceRecord {
            service: service.into(),
            port,
            protocol: hyphae_policies::Protocol::Http,
            tags: BTreeMap::new(),
            health,
        }
    }

    /// A registration of `name` with one `web` instance on port 80.
    pub(crate) fn node(name: &str, health: Health) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            site: "a".into(),
            address: "127.0.0.1:4143".parse().expect("address"),
            agent_version: "test".into(),
            instances: vec![instance("web", 80, health)],
            revision: 0,
        }
    }

    /// A registration command.
    pub(crate) fn register(node: NodeRecord) -> Command {
        Command::RegisterNode {
            node,
            max_nodes: None,
        }
    }

    fn health(node: &str, health: Health) -> Command {
        Command::ReportHealth {
            node: node.into(),
            changes: vec![HealthChange {
                service: "web".into(),
                port: 80,
                health,
            }],
        }
    }

    #[test]
    fn a_service_keeps_its_virtual_ip_while_registered_and_through_re_registration() {
        let mut state = State::new();
        state.apply(register(node("web-1", Health::Passing)), 1);
        assert!(state.virtual_ips().assigned().is_empty(), "no block yet");
        let range = VirtualIpRange::default();
        let (_, changed) = state.apply_tracked(Command::SetVirtualIpRange { range }, 2);
        assert_eq!(changed, vec![StateKey::VirtualIps]);
        let web = state.virtual_ips().assigned()["web"];
        assert!(range.contains(web));
        for (index, command) in (3..).zip([
            register(node("web-2", Health::Passing)),
            register(node("web-1", Health::Critical)),
            Command::DeregisterNode {
                node: "web-1".into(),
            },
        ]) {
            let (_, changed) = state.apply_tracked(command, index);
            assert!(!changed.contains(&StateKey::VirtualIps), "{changed:?}");
            assert_eq!(state.virtual_ips().assigned()["web"], web);
        }
        let (_, changed) = state.apply_tracked(
            Command::DeregisterNode {
                node: "web-2".into(),
            },
            6,
        );
        assert!(changed.contains(&StateKey::VirtualIps));
        assert!(state.virtual_ips().assigned().is_empty());
    }

    #[test]
    fn a_health_report_leaves_the_virtual_ip_of_a_service_only_its_node_serves() {
        let mut state = State::new();
        let range = VirtualIpRange::default();
        state.apply(Command::SetVirtualIpRange { range }, 1);
        state.apply(register(node("web-1", Health::Passing)), 2);
        let web = state.virtual_ips().assigned()["web"];
        for (index, report) in (3..).zip([Health::Critical, Health::Passing]) {
            let (_, changed) = state.apply_tracked(health("web-1", report), index);
            assert!(!changed.contains(&StateKey::VirtualIps), "{changed:?}");
            assert_eq!(state.virtual_ips().assigned()["web"], web, "{report:?}");
            assert_eq!(state.node("web-1").map(|n| n.revision), Some(index));
        }
        let restored = State::restore(4, []).with_nodes(state.nodes().cloned());
        assert_eq!(restored.approx_bytes(), state.approx_bytes());
    }

    #[test]
    fn nodes_register_report_health_and_take_each_change_as_their_revision() {
        let mut state = State::new();
        state.apply(register(node("web-1", Health::Critical)), 3);
        assert_eq!(state.node("web-1").map(|n| n.revision), Some(3));
        assert_eq!(
            state.apply(health("web-1", Health::Passing), 4),
            reported(4, true, 1)
        );
        let web = state.node("web-1").expect("registered");
        assert_eq!(
            (web.revision, web.instances[0].health),
            (4, Health::Passing)
        );
        // The same health again changes nothing, not even the record's revision.
        state.apply(health("web-1", Health::Passing), 5);
        assert_eq!(state.node("web-1").map(|n| n.revision), Some(4));
        assert_eq!(
            state.apply(health("ghost", Health::Passing), 6),
            reported(6, false, 0)
        );
        assert_eq!(
            state.apply(
                Command::DeregisterNode {
                    node: "web-1".into()
                },
                7
            ),
            CommandResponse::NodeDeregistered {
                revision: 7,
                existed: true
            }
        );
        assert_eq!(state.nodes().count(), 0);
    }

    #[test]
    fn the_size_of_nodes_and_policies_follows_every_change_and_matches_a_restore() {
        let mut state = State::new();
        assert_eq!(state.approx_bytes(), 0);
        state.apply(register(node("a", Health::Passing)), 1);
        state.apply(apply_policies(vec![doc("ServicePolicy", "p", "x")]), 2);
        let grown = state.approx_bytes();
        assert!(grown > 0);
        state.apply(health("a", Health::Critical), 3);
        let restored =
            State::restore(3, state.policies().cloned()).with_nodes(state.nodes().cloned());
        assert_eq!(restored.approx_bytes(), state.approx_bytes());
        state.apply(Command::DeregisterNode { node: "a".into() }, 4);
        state.apply(delete("ServicePolicy", "p"), 5);
        assert_eq!(state.approx_bytes(), 0);
    }

    #[test]
    fn a_full_registry_refuses_a_new_node_in_log_order_but_takes_a_known_one() {
        let mut state = State::new();
        let capped = |name: &str| Command::RegisterNode {
            node: node(name, Health::Passing),
            max_nodes: Some(1),
        };
        let stored = |response: CommandResponse| match response {
            CommandResponse::NodeRegistered { stored, .. } => stored,
            other => panic!("{other:?}"),
        };
        assert!(stored(state.apply(capped("a"), 1)));
        assert!(!stored(state.apply(capped("b"), 2)), "the second new node");
        assert!(
            stored(state.apply(capped("a"), 3)),
            "a known node registers again"
        );
        let names: Vec<_> = state.nodes().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a"]);
    }

    #[test]
    fn expiry_spares_a_node_that_registered_again_after_its_lease_was_found_lapsed() {
        let mut state = State::new();
        state.apply(register(node("a", Health::Passing)), 1);
        state.apply(register(node("b", Health::Passing)), 2);
        // The leader saw both lapse at these revisions; then `b` registered again.
        let lapsed = vec![
            LapsedNode {
                name: "a".into(),
                revision: 1,
            },
            LapsedNode {
                name: "b".into(),
                revision: 2,
            },
        ];
        state.apply(register(node("b", Health::Passing)), 3);
        assert_eq!(
            state.apply(Command::ExpireNodes { nodes: lapsed }, 4),
            CommandResponse::NodesExpired {
                revision: 4,
                expired: vec!["a".into()]
            }
        );
        let names: Vec<_> = state.nodes().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["b"]);
    }

    #[test]
    fn the_first_cluster_id_wins_and_only_real_changes_are_tracked() {
        let mut state = State::new();
        let set = |id: &str| Command::SetClusterId { id: id.into() };
        let (response, changed) = state.apply_tracked(set("a"), 1);
        assert_eq!(
            response,
            CommandResponse::ClusterIdentified {
                revision: 1,
                id: "a".into()
            }
        );
        assert_eq!(changed, [StateKey::Cluster]);
        let (response, changed) = state.apply_tracked(set("b"), 2);
        assert_eq!(
            response,
            CommandResponse::ClusterIdentified {
                revision: 2,
                id: "a".into()
            }
        );
        assert!(changed.is_empty());
        assert_eq!(state.cluster_id(), Some("a"));
        state.apply(register(node("n", Health::Passing)), 3);
        let (_, changed) = state.apply_tracked(health("n", Health::Passing), 4);
        assert!(changed.is_empty(), "the same health again changes nothing");
        let (_, changed) = state.apply_tracked(health("n", Health::Critical), 5);
        assert_eq!(changed, [StateKey::Node("n".into())]);
    }

    #[test]
    fn keys_cover_every_object_a_command_changes() {
        let commands = [
            apply_policies(vec![
                doc("ServicePolicy", "a", "x"),
                doc("AccessPolicy", "a", "y"),
                doc("ServicePolicy", "a", "z"),
            ]),
            delete("ServicePolicy", "a"),
            delete("ServicePolicy", "missing"),
            register(node("n", Health::Critical)),
            health("n", Health::Passing),
            Command::ExpireNodes {
                nodes: vec![LapsedNode {
                    name: "n".into(),
                    revision: 5,
                }],
            },
        ];
        let mut state = State::new();
        for (index, command) in (1..).zip(commands) {
            let keys = command.keys();
            let before = state.clone();
            state.apply(command, index);
            let changed_policies = before
                .policies()
                .chain(state.policies())
                .filter(|p| before.policy(&p.kind, &p.name) != state.policy(&p.kind, &p.name))
                .map(|p| {
                    StateKey::Policy(PolicyKey {
                        kind: p.kind.clone(),
                        name: p.name.clone(),
                    })
                });
            let changed_nodes = before
                .nodes()
                .chain(state.nodes())
                .filter(|n| before.node(&n.name) != state.node(&n.name))
                .map(|n| StateKey::Node(n.name.clone()));
            let changed: Vec<_> = changed_policies.chain(changed_nodes).collect();
            for key in changed {
                assert!(
                    keys.contains(&key),
                    "{key:?} changed but is not in {keys:?}"
                );
            }
        }
    }

    #[test]
    fn commands_and_responses_round_trip_through_json() {
        let command = apply_policies(vec![doc("ServicePolicy", "a", "kind: ServicePolicy\n")]);
        let json = serde_json::to_string(&command).expect("serialize");
        assert!(json.contains(r#""command":"apply_policies""#), "{json}");
        assert_eq!(
            serde_json::from_str::<Command>(&json).expect("deserialize"),
            command
        );
        let response = CommandResponse::PolicyDeleted {
            revision: 9,
            existed: true,
        };
        let json = serde_json::to_string(&response).expect("serialize");
        assert_eq!(
            serde_json::from_str::<CommandResponse>(&json).expect("deserialize"),
            response
        );
        assert_eq!(response.revision(), 9);
    }
}

//! A control-plane node: opens its Raft store, starts Raft with the HTTP/2 network, and
//! initializes a new cluster when asked to, once. It holds the handles every part shares and
//! runs no task of its own ([`crate::daemon`] starts the port and the keepers).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use openraft::{BasicNode, SnapshotPolicy};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::NodeConfig;
use crate::heartbeat_batch::HeartbeatQueue;
use crate::leadership::{LeaderContact, Transfers};
use crate::lease::Leases;
use crate::network::{HttpNetwork, PeerClient, PeerKeepAlive, peer_client};
use crate::raft::{NodeId, Raft};
use crate::snapshot_receipt::SnapshotReceipt;
use crate::store::{self, StateReader};
use crate::tokens::StoredToken;

/// Name of the Raft store file in the data directory.
pub const STORE_FILE: &str = "raft.redb";

/// How much of a member's refusal goes into the error (and so the log line).
const LOGGED_ANSWER_BYTES: usize = 200;

/// A started node.
pub struct Node {
    /// Its configuration.
    pub config: NodeConfig,
    /// The Raft handle.
    pub raft: Raft,
    /// Read access to the applied state.
    pub state: StateReader,
    /// What watch streams read, with the work they share.
    pub watch: Arc<crate::watch::Feed>,
    /// Client for peers (Raft RPCs and forwarded writes), over mutual TLS.
    pub peers: PeerClient,
    /// Its certificate, the roots it trusts, and the TLS configurations built from them.
    pub tls: crate::pki::NodeTls,
    /// Agents' leases (kept while this node leads).
    pub leases: Leases,
    /// Heartbeats this node answered as a follower, for the leader's next batch.
    pub heartbeat_queue: HeartbeatQueue,
    /// The Raft log, to read (Raft writes it through its own clone).
    pub log: store::log::LogStore,
    /// The commit index as this node knows it.
    pub commit_index: Arc<store::log::CommitIndex>,
    /// Leadership transfers: the one this node runs as leader, and its elections paused by
    /// another leader's.
    pub transfers: Transfers,
    /// When this node last heard from a leader: what its pre-vote answers and its elections
    /// go by.
    pub leader_contact: LeaderContact,
    /// The snapshot this node is receiving from its leader, chunk by chunk.
    pub snapshots: SnapshotReceipt,
    /// On the node that initialized the cluster: the bootstrap admin token, which a caller
    /// presenting it waits for (rather than being refused) until the cluster stores it.
    pub pending_bootstrap: std::sync::OnceLock<StoredToken>,
    /// Places for requests to public routes being read (`limits.maxPublicRequests`).
    pub public_requests: crate::api::public_places::PublicPlaces,
}

impl Node {
    /// Opens the store in the data directory and starts Raft, talking to peers with `tls`.
    pub async fn start(config: NodeConfig, tls: crate::pki::NodeTls) -> anyhow::Result<Node> {
        let data_dir = &config.spec.data_dir;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        // The store holds the CA's key and token hashes: owner only.
        owner_only(data_dir, 0o700)?;
        let history = usize::try_from(config.spec.watch_history).unwrap_or(usize::MAX);
        let (log, state_machine) = store::open(data_dir.join(STORE_FILE), history).await?;
        owner_only(&data_dir.join(STORE_FILE), 0o600)?;
        let state = state_machine.reader();
        let commit_index = log.commit_index();
        let log_reader = log.clone();
        let heartbeat = millis(config.spec.heartbeat_interval);
        let lease = millis(config.spec.election_timeout_min);
        let raft_config = openraft::Config {
            cluster_name: "hyphae".to_string(),
            heartbeat_interval: heartbeat,
            // openraft's own election timer is off: the election keeper stands after a
            // pre-vote (decision 47). openraft takes its leader lease (how long a voter refuses
            // votes after hearing from a leader) from `election_timeout_max`: that is our
            // `electionTimeoutMin`, which the pre-vote answers by too. Its minimum is how long
            // a vote request may take (its own timer is off): just under the lease.
            enable_elect: false,
            election_timeout_min: lease.saturating_sub(1).max(heartbeat + 1),
            election_timeout_max: lease.max(heartbeat + 2),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.spec.snapshot_every),
            max_in_snapshot_log_to_keep: config.spec.logs_kept_after_snapshot,
            snapshot_max_chunk_size: snapshot_chunk_bytes(&config.spec.limits),
            install_snapshot_timeout: millis(config.spec.write_timeout),
            ..openraft::Config::default()
        }
        .validate()
        .context("invalid Raft timings")?;
        let peers = peer_client(
            std::sync::Arc::clone(&tls.peer_client),
            hyphae_policies::tls::ServerIdentity::ControlPlane,
            PeerKeepAlive::of(&config.spec),
        );
        let raft = Raft::new(
            config.spec.id,
            Arc::new(raft_config),
            HttpNetwork::new(
                std::sync::Arc::clone(&tls.peer_client),
                config.spec.limits.max_replication_bytes,
                PeerKeepAlive::of(&config.spec),
            ),
            log,
            state_machine,
        )
        .await
        .context("cannot start Raft")?;
        Ok(Node {
            public_requests: crate::api::public_places::PublicPlaces::new(
                config.spec.limits.max_public_requests,
            ),
            watch: crate::watch::Feed::new(state.clone(), config.spec.limits.max_watch_streams),
            leases: Leases::new(config.spec.lease_ttl.get()),
            heartbeat_queue: HeartbeatQueue::new(config.spec.limits.max_nodes),
            commit_index,
            log: log_reader,
            config,
            raft,
            state,
            peers,
            tls,
            transfers: Transfers::default(),
            leader_contact: LeaderContact::default(),
            snapshots: SnapshotReceipt::default(),
            pending_bootstrap: std::sync::OnceLock::new(),
        })
    }

    /// Whether `id` is a voter or learner in this node's view of the membership.
    pub fn is_member(&self, id: NodeId) -> bool {
        self.member_address(id).is_some()
    }

    /// The address member `id` advertises, in this node's view of the membership.
    pub fn member_address(&self, id: NodeId) -> Option<String> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .nodes()
            .find(|(member, _)| **member == id)
            .map(|(_, node)| node.addr.clone())
    }

    /// POSTs `body` as JSON to `path` on the member at `address` (mutual TLS, this node's
    /// certificate) and decodes its 200 answer, read within `answer_limit` bytes. Another
    /// status is an error carrying the start of the member's answer. No deadline of its own:
    /// each caller bounds the whole exchange with the time its RPC may take.
    pub async fn post_to_member<T: DeserializeOwned>(
        &self,
        address: &str,
        path: &str,
        body: &impl Serialize,
        answer_limit: usize,
    ) -> Result<T, String> {
        let json = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let request = http::Request::post(format!("https://{address}{path}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(json)))
            .map_err(|e| e.to_string())?;
        let response = self
            .peers
            .request(request)
            .await
            .map_err(|e| crate::error_chain(&e))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), answer_limit)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if status != http::StatusCode::OK {
            return Err(format!(
                "{status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(LOGGED_ANSWER_BYTES)])
            ));
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("bad answer: {e}"))
    }

    /// Starts a new cluster of this node alone, unless it already belongs to one; the other
    /// nodes join with a token and add themselves (decision 36). Returns whether it
    /// initialized.
    pub async fn initialize(&self) -> anyhow::Result<bool> {
        if self.raft.is_initialized().await? {
            return Ok(false);
        }
        let members: BTreeMap<NodeId, BasicNode> = [(
            self.config.spec.id,
            BasicNode::new(self.config.advertised()),
        )]
        .into();
        self.raft
            .initialize(members)
            .await
            .context("cannot initialize the cluster")?;
        Ok(true)
    }
}

/// Snapshot chunks travel framed in binary ([`crate::snapshot_chunk`]): a chunk must fit a
/// peer's body limit with its header. Never more than openraft's default, so each chunk
/// finishes well within the install timeout.
fn snapshot_chunk_bytes(limits: &hyphae_policies::ControlPlaneLimits) -> u64 {
    const OPENRAFT_DEFAULT: u64 = 3 * 1024 * 1024;
    let room = u64::from(limits.max_peer_body_bytes)
        .saturating_sub(hyphae_policies::validate::PEER_ENVELOPE_BYTES);
    room.clamp(1, OPENRAFT_DEFAULT)
}

/// Sets `path` to `mode` when group or others may reach it, saying so in the log.
fn owner_only(path: &std::path::Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let current = std::fs::metadata(path)
        .with_context(|| format!("cannot read the permissions of {}", path.display()))?
        .permissions()
        .mode();
    if current & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot make {} owner-only", path.display()))?;
        tracing::info!(path = %path.display(), from = format!("{:o}", current & 0o777), to = format!("{mode:o}"), "made owner-only");
    }
    Ok(())
}

fn millis(duration: hyphae_policies::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

//! Raft RPCs between control-plane nodes over HTTP/2: the client side openraft calls
//! ([`HttpNetwork`]) and the server side that feeds requests to the local Raft
//! ([`serve_rpc`]). Bodies are JSON; every call runs over mutual TLS with this node's
//! certificate, and the peer must present a control-plane certificate of the cluster.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyphae_policies::tls::{ServerIdentity, TlsConnector};
use openraft::BasicNode;
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::leadership::LeaderContact;
use crate::raft::{Entry, NodeId, Raft, TypeConfig, encoded_len};
use crate::snapshot_chunk;
use crate::snapshot_receipt::{Chunk, SnapshotReceipt};

/// Path of the AppendEntries RPC.
pub const APPEND_PATH: &str = "/raft/append";
/// Path of the Vote RPC.
pub const VOTE_PATH: &str = "/raft/vote";
/// Path of the InstallSnapshot RPC.
pub const SNAPSHOT_PATH: &str = "/raft/snapshot";

/// Longest a peer may take to accept a connection.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// When a quiet peer connection is checked with an HTTP/2 PING, and how long the answer may
/// take before the connection is given up and the next RPC opens a new one. A partition drops
/// packets without closing anything: the leader went on sending Raft RPCs into the dead
/// connection for as long as TCP kept retransmitting, 2.7–7.4 s after the link came back in a
/// probe, and the healed follower could not catch up meanwhile.
#[derive(Debug, Clone, Copy)]
pub struct PeerKeepAlive {
    /// Quiet time (no frame from the peer) before a PING: `electionTimeoutMin`. Raft's own
    /// traffic keeps a healthy connection busy, so PINGs go only when it is quiet.
    pub interval: Duration,
    /// Longest a PING's answer may take: `electionTimeoutMax`, the silence after which the
    /// peer's followers would already stand for election. h2 answers PINGs below the
    /// application, so a busy node answers too; a link too slow to carry a snapshot chunk
    /// and a PING within it needs larger election timeouts anyway (a WAN cluster's).
    pub timeout: Duration,
}

impl PeerKeepAlive {
    /// The checks `spec`'s election timeouts give.
    pub fn of(
        spec: &hyphae_policies::control_plane_config::ControlPlaneConfigSpec,
    ) -> PeerKeepAlive {
        PeerKeepAlive {
            interval: spec.election_timeout_min.get(),
            timeout: spec.election_timeout_max.get(),
        }
    }
}

/// An HTTP/2 client over mutual TLS for talking to other nodes: Raft RPCs and forwarded
/// admin requests.
pub type PeerClient = Client<TlsConnector, Full<Bytes>>;

/// The TLS client configuration of a node's peer clients, which a rotation replaces.
pub type PeerTls = std::sync::Arc<arc_swap::ArcSwap<rustls::ClientConfig>>;

/// A fresh peer client with this node's TLS client configuration, for servers that are
/// `server` (one node for its Raft RPCs, any member for forwarded requests).
pub fn peer_client(tls: PeerTls, server: ServerIdentity, keep_alive: PeerKeepAlive) -> PeerClient {
    let connector = TlsConnector::swappable(tls, server, PEER_CONNECT_TIMEOUT);
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .timer(TokioTimer::new())
        .http2_keep_alive_interval(keep_alive.interval)
        .http2_keep_alive_timeout(keep_alive.timeout)
        .http2_keep_alive_while_idle(true)
        .build(connector)
}

/// Builds a [`PeerNetwork`] per target, each with a client that accepts only that node's
/// certificate (one connection per peer).
#[derive(Clone)]
pub struct HttpNetwork {
    tls: PeerTls,
    max_replication_bytes: usize,
    keep_alive: PeerKeepAlive,
}

impl HttpNetwork {
    /// A network whose clients use `tls` and whose replication messages carry at most
    /// `max_replication_bytes` of entries (at least one entry each).
    pub fn new(tls: PeerTls, max_replication_bytes: u32, keep_alive: PeerKeepAlive) -> Self {
        HttpNetwork {
            tls,
            max_replication_bytes: max_replication_bytes as usize,
            keep_alive,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for HttpNetwork {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerNetwork {
        PeerNetwork {
            client: peer_client(
                std::sync::Arc::clone(&self.tls),
                ServerIdentity::ControlPlaneNode(target),
                self.keep_alive,
            ),
            target,
            address: node.addr.clone(),
            max_replication_bytes: self.max_replication_bytes,
            budget: ReplicationBudget::new(self.max_replication_bytes),
        }
    }
}

/// The RPC client for one peer.
pub struct PeerNetwork {
    client: PeerClient,
    target: NodeId,
    address: String,
    max_replication_bytes: usize,
    budget: ReplicationBudget,
}

/// How many bytes of entries one AppendEntries to a peer carries. openraft 0.9 gives each
/// AppendEntries one heartbeat interval and drops it when that runs out, whatever its size: a
/// batch too large to cross in that time would be sent again and again and never arrive. So
/// the budget halves after a message that did not finish (down to one entry) and doubles
/// after one that finished in under half its time (up to `maxReplicationBytes`).
#[derive(Debug)]
struct ReplicationBudget {
    bytes: usize,
    max: usize,
    /// A message was sent and has not finished: when the next one starts, it timed out.
    unfinished: bool,
}

impl ReplicationBudget {
    /// The smallest budget; a larger entry still travels, alone.
    const MIN: usize = 64 * 1024;

    fn new(max: usize) -> Self {
        ReplicationBudget {
            bytes: max,
            max,
            unfinished: false,
        }
    }

    /// The budget for the next message, having learnt from how the last one ended.
    fn start(&mut self, target: NodeId) -> usize {
        if std::mem::replace(&mut self.unfinished, true) {
            let halved = (self.bytes / 2).max(Self::MIN.min(self.max));
            if halved < self.bytes {
                tracing::info!(
                    target,
                    from = self.bytes,
                    to = halved,
                    "replication to a peer timed out; sending smaller batches"
                );
            }
            self.bytes = halved;
        }
        self.bytes
    }

    /// The message finished (answered, or failed otherwise than by running out of time).
    fn finished(&mut self, took: Duration, ttl: Duration) {
        self.unfinished = false;
        if took < ttl / 2 {
            self.bytes = self.bytes.saturating_mul(2).min(self.max);
        }
    }
}

/// Why a call to a peer failed before it answered.
#[derive(Debug, thiserror::Error)]
enum TransportError {
    #[error("cannot reach node {target} at {address}: {reason}")]
    Unreachable {
        target: NodeId,
        address: String,
        reason: String,
    },
    #[error("node {target} at {address} failed the request: {reason}")]
    Failed {
        target: NodeId,
        address: String,
        reason: String,
    },
}

impl PeerNetwork {
    /// POSTs `body` as JSON to `path` and decodes the peer's `Result<Resp, RaftError<E>>`. A
    /// 413 from the peer becomes `too_large` when given (openraft then sends fewer entries),
    /// never a dead peer.
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        body: &Req,
        ttl: Duration,
        too_large: Option<PayloadTooLarge>,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let json = serde_json::to_vec(body)
            .map_err(|e| RPCError::Network(NetworkError::new(&self.failed(e.to_string()))))?;
        self.exchange(path, "application/json", json, ttl, too_large)
            .await
    }

    /// Why a request to this peer failed, as a transport error.
    fn failed(&self, reason: String) -> TransportError {
        TransportError::Failed {
            target: self.target,
            address: self.address.clone(),
            reason,
        }
    }

    /// POSTs `body` (of `content_type`) to `path` and decodes the peer's JSON answer, as
    /// [`PeerNetwork::call`] says.
    async fn exchange<Resp, E>(
        &self,
        path: &str,
        content_type: &'static str,
        body: Vec<u8>,
        ttl: Duration,
        too_large: Option<PayloadTooLarge>,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let failed = |reason: String| self.failed(reason);
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("https://{}{path}", self.address))
            .header(http::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| RPCError::Network(NetworkError::new(&failed(e.to_string()))))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                let error = TransportError::Unreachable {
                    target: self.target,
                    address: self.address.clone(),
                    reason: crate::error_chain(&e),
                };
                RPCError::Unreachable(Unreachable::new(&error))
            })?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| RPCError::Network(NetworkError::new(&failed(e.to_string()))))?
                .to_bytes();
            if status == StatusCode::PAYLOAD_TOO_LARGE
                && let Some(too_large) = too_large
            {
                return Err(RPCError::PayloadTooLarge(too_large));
            }
            if status != StatusCode::OK {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                return Err(RPCError::Network(NetworkError::new(&failed(format!(
                    "{status}: {text}"
                )))));
            }
            let decoded: Result<Resp, RaftError<NodeId, E>> = serde_json::from_slice(&bytes)
                .map_err(|e| RPCError::Network(NetworkError::new(&failed(e.to_string()))))?;
            decoded.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
        };
        match tokio::time::timeout(ttl, exchange).await {
            Ok(result) => result,
            Err(_) => Err(RPCError::Network(NetworkError::new(&failed(format!(
                "no answer within {ttl:?}"
            ))))),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    /// Sends as many leading entries as fit in `maxReplicationBytes` (at least one); when
    /// that is not all of them, a success is a partial one and openraft sends the rest next.
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let budget = self
            .budget
            .start(self.target)
            .min(self.max_replication_bytes);
        let sending = entries_within(&rpc.entries, budget);
        let partial = sending < rpc.entries.len();
        rpc.entries.truncate(sending);
        let last = rpc.entries.last().map(|entry| entry.log_id);
        let hint = PayloadTooLarge::new_entries_hint((sending as u64 / 2).max(1));
        let started = std::time::Instant::now();
        let answer = self
            .call(APPEND_PATH, &rpc, option.hard_ttl(), Some(hint))
            .await;
        // One that ran out of time stays unfinished, as when openraft drops it at its deadline.
        if started.elapsed() < option.hard_ttl() {
            self.budget.finished(started.elapsed(), option.hard_ttl());
        }
        let answer = answer?;
        Ok(match answer {
            AppendEntriesResponse::Success if partial => {
                AppendEntriesResponse::PartialSuccess(last)
            }
            answer => answer,
        })
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let body = snapshot_chunk::encode(&rpc)
            .map_err(|e| RPCError::Network(NetworkError::new(&self.failed(e.to_string()))))?;
        self.exchange(
            SNAPSHOT_PATH,
            snapshot_chunk::CONTENT_TYPE,
            body,
            option.hard_ttl(),
            None,
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(VOTE_PATH, &rpc, option.hard_ttl(), None).await
    }
}

/// How many leading `entries` fit in `budget` bytes of JSON; always at least one, so an entry
/// larger than the budget still travels (alone).
fn entries_within(entries: &[Entry], budget: usize) -> usize {
    let mut used = 0usize;
    for (index, entry) in entries.iter().enumerate() {
        // One byte for the comma between entries.
        used = used.saturating_add(encoded_len(entry) + 1);
        if used > budget && index > 0 {
            return index;
        }
    }
    entries.len()
}

/// Why a peer RPC got no answer from Raft.
#[derive(Debug, thiserror::Error)]
pub enum RpcRefused {
    /// The body is not a valid request, or a snapshot chunk does not continue its snapshot:
    /// sending it again changes nothing.
    #[error("{0}")]
    Invalid(String),
    /// This node could not keep what it was sent (a snapshot chunk its disk did not take): the
    /// sender may send it again.
    #[error("{0}")]
    Unavailable(String),
}

/// Answers one Raft RPC addressed to this node: `path` names it, `body` is its JSON. Returns
/// the JSON of `Result<Response, RaftError>`, or `None` when the path is not a Raft RPC, or
/// why it was refused. Snapshot chunks pass `receipt` first: one that does not continue the
/// snapshot, or would grow it past `max_snapshot_bytes`, is refused before Raft spools it. A
/// chunk the spool could not take is refused as [`RpcRefused::Unavailable`], so the leader sends
/// it again, rather than answered as Raft's fatal error, which would end the whole transfer.
/// What Raft accepted from a leader, and each vote granted, is noted in `contact` (see
/// [`LeaderContact`]).
pub async fn serve_rpc(
    raft: &Raft,
    receipt: &SnapshotReceipt,
    max_snapshot_bytes: u64,
    contact: &LeaderContact,
    path: &str,
    body: &[u8],
) -> Option<Result<Vec<u8>, RpcRefused>> {
    let invalid = |error: &dyn std::fmt::Display| Some(Err(RpcRefused::Invalid(error.to_string())));
    let answer = match path {
        APPEND_PATH => match serde_json::from_slice::<AppendEntriesRequest<TypeConfig>>(body) {
            Ok(request) => {
                let appended = raft.append_entries(request).await;
                if matches!(&appended, Ok(response) if !matches!(response, AppendEntriesResponse::HigherVote(_)))
                {
                    contact.heard();
                }
                serde_json::to_vec(&appended)
            }
            Err(e) => return invalid(&e),
        },
        VOTE_PATH => match serde_json::from_slice::<VoteRequest<NodeId>>(body) {
            Ok(request) => {
                let voted = raft.vote(request).await;
                if matches!(&voted, Ok(response) if response.vote_granted) {
                    // Give the candidate this node voted for its time to win.
                    contact.heard();
                }
                serde_json::to_vec(&voted)
            }
            Err(e) => return invalid(&e),
        },
        SNAPSHOT_PATH => match snapshot_chunk::decode(body) {
            Ok(request) => {
                let snapshot_id = request.meta.snapshot_id.clone();
                let chunk = Chunk {
                    snapshot_id: &snapshot_id,
                    offset: request.offset,
                    len: u64::try_from(request.data.len()).unwrap_or(u64::MAX),
                    done: request.done,
                };
                if let Err(refused) = receipt.check(chunk, max_snapshot_bytes) {
                    tracing::warn!(%refused, "refused a snapshot chunk");
                    return invalid(&refused);
                }
                let vote = request.vote;
                let installed = raft.install_snapshot(request).await;
                match &installed {
                    Ok(_) => receipt.accepted(chunk),
                    Err(RaftError::Fatal(Fatal::StorageError(error))) => {
                        let offset = chunk.offset;
                        tracing::warn!(%error, offset, "cannot spool a snapshot chunk; the leader will send it again (is the data directory's disk full?)");
                        return Some(Err(RpcRefused::Unavailable(format!(
                            "cannot spool the snapshot chunk at offset {offset}: {error}; send it again"
                        ))));
                    }
                    Err(_) => {}
                }
                if matches!(&installed, Ok(response) if response.vote <= vote) {
                    contact.heard();
                }
                serde_json::to_vec(&installed)
            }
            Err(e) => return invalid(&e),
        },
        _ => return None,
    };
    Some(answer.map_err(|e| RpcRefused::Invalid(e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, bytes: usize) -> Entry {
        let log_id = openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index);
        let command = crate::state::Command::SetClusterId {
            id: "x".repeat(bytes),
        };
        Entry {
            log_id,
            payload: openraft::EntryPayload::Normal(command),
        }
    }

    #[test]
    fn the_replication_budget_halves_after_a_timeout_and_grows_back_when_quick() {
        let ttl = Duration::from_millis(100);
        let mut budget = ReplicationBudget::new(4 << 20);
        assert_eq!(budget.start(2), 4 << 20);
        // Never finished (dropped at openraft's deadline): the next one is half.
        assert_eq!(budget.start(2), 2 << 20);
        assert_eq!(budget.start(2), 1 << 20);
        budget.finished(Duration::from_millis(80), ttl);
        assert_eq!(budget.start(2), 1 << 20, "finished, but not quickly");
        budget.finished(Duration::from_millis(10), ttl);
        assert_eq!(budget.start(2), 2 << 20);
        for _ in 0..20 {
            budget.start(2);
        }
        assert_eq!(
            budget.start(2),
            ReplicationBudget::MIN,
            "never below the floor"
        );
    }

    #[test]
    fn a_replication_message_carries_the_entries_that_fit_and_always_one() {
        let entries: Vec<Entry> = (11..=20).map(|i| entry(i, 1000)).collect();
        let one = encoded_len(&entries[0]) + 1;
        assert_eq!(entries_within(&entries, one * 10), 10);
        assert_eq!(entries_within(&entries, one * 3), 3);
        assert_eq!(entries_within(&entries, one * 3 - 1), 2);
        assert_eq!(
            entries_within(&entries, 1),
            1,
            "an entry larger than the budget goes alone"
        );
        assert_eq!(entries_within(&[], 1), 0);
    }
}

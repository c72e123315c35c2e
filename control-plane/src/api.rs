//! The node's HTTP surface: Raft RPCs from peers and the admin API (`/v1/...`, JSON; policies
//! also accept YAML). Writes go through Raft and answer after commit; followers forward writes
//! and linearizable reads to the leader; no quorum is a 503 within the write timeout.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyphae_policies::{Completeness, Diagnostic, LoadOptions, load_str};
use openraft::BasicNode;
use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::network::serve_rpc;
use crate::node::Node;
use crate::raft::NodeId;
use crate::registry;
use crate::state::{Command, CommandResponse, PolicyDocument, StoredPolicy};
use crate::transfer;
use crate::wire::{
    ClusterMember, ClusterStatus, DryRun, ErrorBody, NewMember, PolicyId, TransferTo,
};

/// Marks a request a follower sent on to the leader, so it is never forwarded twice.
pub const FORWARDED_HEADER: &str = "hyphae-forwarded";

/// Every response body: whole JSON answers and long-lived watch streams alike.
pub type ApiBody = BoxBody<Bytes, Infallible>;

/// Largest request body: a policy file's limit plus room for JSON envelopes.
pub const MAX_BODY_BYTES: usize = hyphae_policies::limits::DEFAULT_MAX_FILE_BYTES + 64 * 1024;

/// An API failure: a status and a stable machine-readable code.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    diagnostics: Vec<Diagnostic>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            diagnostics: Vec::new(),
        }
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let body = ErrorBody {
            code: self.code.to_string(),
            message: self.message,
            diagnostics: self.diagnostics,
        };
        json_response(self.status, &body)
    }
}

/// Longest a stopping node waits for its open connections to finish their requests.
pub const CONNECTION_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);
/// Pause after a failed accept (out of file descriptors, say) before trying again.
const ACCEPT_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

/// Serves the node's HTTP port until `shutdown`, then lets open connections finish (watch
/// streams end at once) for up to [`CONNECTION_DRAIN`].
pub async fn serve(node: Arc<Node>, listener: TcpListener, shutdown: CancellationToken) {
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
        };
        let node = Arc::clone(&node);
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let streams = shutdown.clone();
            let service = service_fn(move |request| {
                let node = Arc::clone(&node);
                let streams = streams.clone();
                async move { Ok::<_, Infallible>(handle(&node, request, &streams).await) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    connections.close();
    if tokio::time::timeout(CONNECTION_DRAIN, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "connections still open after {CONNECTION_DRAIN:?}; closing them"
        );
    }
}

/// Handles one request; `shutdown` ends the long-lived ones (watch streams).
pub async fn handle(
    node: &Node,
    request: Request<Incoming>,
    shutdown: &CancellationToken,
) -> Response<ApiBody> {
    if request.method() == Method::GET && request.uri().path() == hyphae_policies::watch::WATCH_PATH
    {
        return watch(node, &request, shutdown).await;
    }
    handle_buffered(node, request).await.map(BodyExt::boxed)
}

/// `GET /v1/agent/watch[?since=REV&cluster=ID]`: an NDJSON stream, or a 503 when this node
/// cannot serve the reader without sending it back in time.
async fn watch(
    node: &Node,
    request: &Request<Incoming>,
    shutdown: &CancellationToken,
) -> Response<ApiBody> {
    let param = |name: &str| {
        request
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_owned)
    };
    let held = crate::watch::Held {
        revision: param("since").and_then(|s| s.parse().ok()),
        cluster: param("cluster"),
    };
    match crate::watch::open(Arc::clone(&node.watch), held, shutdown.child_token()).await {
        Ok(body) => {
            let mut response = Response::new(body.boxed());
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/x-ndjson"),
            );
            response
        }
        Err(refusal) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            refusal.code,
            refusal.message,
        )
        .into_response()
        .map(BodyExt::boxed),
    }
}

/// Handles a request whose body and answer are read whole.
async fn handle_buffered(node: &Node, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                error.to_string(),
            )
            .into_response();
        }
    };
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or_default().to_string();
    if parts.method == Method::POST
        && let Some(answer) = match serve_rpc(&node.raft, &path, &body).await {
            Some(answer) => Some(answer),
            None => transfer::serve_rpc(node, &path, &body).await,
        }
    {
        return match answer {
            Ok(json) => bytes_response(StatusCode::OK, json, "application/json"),
            Err(message) => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad-rpc", message).into_response()
            }
        };
    }
    let forwarded = parts.headers.contains_key(FORWARDED_HEADER);
    let request = ApiRequest {
        method: parts.method,
        path,
        query,
        body,
    };
    match route(node, &request).await {
        Ok(response) => response,
        Err(Routed::Error(error)) => error.into_response(),
        // A forwarded request that lands on a node that is not the leader either (leadership
        // moved in between) is not sent on again: the client retries, so nothing loops.
        Err(Routed::Forward(_)) if forwarded => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "leader-moved",
            "leadership moved while the request was forwarded; try again",
        )
        .into_response(),
        Err(Routed::Forward(leader)) => forward(node, &request, &leader).await,
    }
}

/// A buffered admin request, kept whole so it can be forwarded to the leader.
pub(crate) struct ApiRequest {
    method: Method,
    path: String,
    query: String,
    pub(crate) body: Bytes,
}

impl ApiRequest {
    /// A boolean query flag: `name` or `name=true` is true, `name=false` or no flag is false,
    /// and anything else is a 400 (a mistyped `dryRun=1` must not quietly write).
    fn flag(&self, name: &str) -> Result<bool, ApiError> {
        let mut value = false;
        for pair in self.query.split('&') {
            let (key, given) = pair.split_once('=').unwrap_or((pair, "true"));
            if key != name {
                continue;
            }
            value = match given {
                "true" => true,
                "false" => false,
                other => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad-flag",
                        format!("`{name}={other}`: use `{name}=true` or `{name}=false`"),
                    ));
                }
            };
        }
        Ok(value)
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
    }
}

/// Why a request was not answered here.
pub(crate) enum Routed {
    Error(ApiError),
    /// Only the leader can answer: forward to this address.
    Forward(String),
}

impl From<ApiError> for Routed {
    fn from(error: ApiError) -> Self {
        Routed::Error(error)
    }
}

async fn route(node: &Node, request: &ApiRequest) -> Result<Response<Full<Bytes>>, Routed> {
    let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
    match (&request.method, segments.as_slice()) {
        (&Method::GET, ["v1", "cluster"]) => Ok(cluster(node).await),
        (&Method::GET, ["v1", "openapi.json"]) => {
            Ok(json_response(StatusCode::OK, crate::openapi::document()))
        }
        (&Method::POST, ["v1", "cluster", "members"]) => change_members(node, request, None).await,
        (&Method::DELETE, ["v1", "cluster", "members", id]) => {
            change_members(node, request, Some(id)).await
        }
        (&Method::POST, ["v1", "cluster", "transfer-leader"]) => {
            transfer_leader(node, request).await
        }
        (&Method::POST | &Method::PUT, ["v1", "policies"]) => apply(node, request).await,
        (&Method::POST, ["v1", "agent", "register"]) => registry::register(node, request).await,
        (&Method::POST, ["v1", "agent", "heartbeat"]) => registry::heartbeat(node, request).await,
        (&Method::POST, ["v1", "agent", "health"]) => registry::health(node, request).await,
        (&Method::POST, ["v1", "agent", "deregister"]) => registry::deregister(node, request).await,
        (&Method::GET, ["v1", "nodes"]) => registry::nodes(node, request, None).await,
        (&Method::GET, ["v1", "nodes", name]) => registry::nodes(node, request, Some(name)).await,
        (&Method::GET, ["v1", "services"]) => registry::services(node, request, None).await,
        (&Method::GET, ["v1", "services", name]) => {
            registry::services(node, request, Some(name)).await
        }
        (&Method::GET, ["v1", "policies"]) => {
            read_barrier(node, request).await?;
            let kind = request.param("kind");
            let policies: Vec<StoredPolicy> = node
                .state
                .read(|state| {
                    state
                        .policies()
                        .filter(|p| kind.is_none_or(|k| p.kind == k))
                        .cloned()
                        .collect()
                })
                .await;
            Ok(json_response(StatusCode::OK, &policies))
        }
        (&Method::GET, ["v1", "policies", kind, name]) => {
            read_barrier(node, request).await?;
            let found = node
                .state
                .read(|state| state.policy(kind, name).cloned())
                .await;
            match found {
                Some(policy) => Ok(json_response(StatusCode::OK, &policy)),
                None => Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not-found",
                    format!("no {kind} named `{name}`"),
                )
                .into()),
            }
        }
        (&Method::DELETE, ["v1", "policies", kind, name]) => {
            let command = Command::DeletePolicy {
                kind: (*kind).to_string(),
                name: (*name).to_string(),
            };
            let response = write(node, command).await?;
            Ok(json_response(StatusCode::OK, &response))
        }
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown-path",
            format!("no API at {} {}", request.method, request.path),
        )
        .into()),
    }
}

/// `POST /v1/policies`: validates the YAML (or JSON) with the same loader as `hyphae
/// validate`, then writes every object in one Raft entry. `?dryRun=true` stops after checking.
async fn apply(node: &Node, request: &ApiRequest) -> Result<Response<Full<Bytes>>, Routed> {
    let text = std::str::from_utf8(&request.body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "not-utf8",
            format!("the body is not UTF-8: {e}"),
        )
    })?;
    let report = load_str(
        "request",
        text,
        LoadOptions {
            completeness: Completeness::Partial,
            ..LoadOptions::default()
        },
    );
    if report.has_errors() {
        let mut error = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-policy",
            format!(
                "{} error(s) in the policies; nothing was applied",
                report.error_count()
            ),
        );
        error.diagnostics = report.diagnostics;
        return Err(error.into());
    }
    let local: Vec<String> = report
        .objects
        .iter()
        .filter(|o| o.policy.kind().is_local_config())
        .map(|o| format!("{} `{}`", o.policy.kind(), o.policy.name()))
        .collect();
    if !local.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "local-config",
            format!(
                "{} belong(s) on the node it configures, not in the control plane; nothing was applied",
                local.join(", ")
            ),
        )
        .into());
    }
    let mut documents = Vec::new();
    for object in &report.objects {
        let source = serde_saphyr::to_string(&object.policy).map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "encode", e.to_string())
        })?;
        documents.push(PolicyDocument {
            kind: object.policy.kind().name().to_string(),
            name: object.policy.name().to_string(),
            source,
        });
    }
    if documents.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty",
            "no policy documents in the body",
        )
        .into());
    }
    if request.flag("dryRun")? {
        let objects = documents
            .iter()
            .map(|d| PolicyId {
                kind: d.kind.clone(),
                name: d.name.clone(),
            })
            .collect();
        let dry_run = DryRun {
            dry_run: true,
            valid: true,
            objects,
            warnings: report.diagnostics,
        };
        return Ok(json_response(StatusCode::OK, &dry_run));
    }
    let response = write(
        node,
        Command::ApplyPolicies {
            policies: documents,
        },
    )
    .await?;
    Ok(json_response(StatusCode::OK, &response))
}

/// Writes `command` through Raft and waits for it to be applied.
///
/// While this node hands its leadership over, writes are refused (503 `transfer-in-progress`,
/// retryable): an entry the target has not got would make it unelectable.
pub(crate) async fn write(node: &Node, command: Command) -> Result<CommandResponse, Routed> {
    if node.transfers.in_progress() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "transfer-in-progress",
            "leadership is moving to another node; retry in a moment",
        )
        .into());
    }
    committed(node, node.raft.client_write(command))
        .await
        .map(|written| written.data)
}

/// What a Raft write (a command or a membership change) resolves to.
type WriteResult = Result<
    openraft::raft::ClientWriteResponse<crate::raft::TypeConfig>,
    RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
>;

/// Waits for a Raft write to commit, within the write timeout; a follower's refusal becomes a
/// forward to the leader.
async fn committed(
    node: &Node,
    write: impl std::future::Future<Output = WriteResult>,
) -> Result<openraft::raft::ClientWriteResponse<crate::raft::TypeConfig>, Routed> {
    let timeout = node.config.spec.write_timeout.get();
    match tokio::time::timeout(timeout, write).await {
        Err(_) => Err(no_quorum(timeout).into()),
        Ok(Ok(written)) => Ok(written),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
            Err(leader_or_unavailable(&forward))
        }
        Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(error)))) => {
            Err(ApiError::new(StatusCode::CONFLICT, "membership", error.to_string()).into())
        }
        Ok(Err(error)) => {
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "raft", error.to_string()).into())
        }
    }
}

/// `POST /v1/cluster/members` adds a node as a learner, lets it catch up, then makes it a voter;
/// `DELETE /v1/cluster/members/{id}` removes a voter. Both answer with the new cluster view.
async fn change_members(
    node: &Node,
    request: &ApiRequest,
    remove: Option<&str>,
) -> Result<Response<Full<Bytes>>, Routed> {
    if let Some(id) = remove {
        let id: NodeId = id.parse().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad-id",
                format!("`{id}` is not a node id"),
            )
        })?;
        let change = openraft::ChangeMembers::RemoveVoters([id].into());
        committed(node, node.raft.change_membership(change, false)).await?;
        return Ok(cluster(node).await);
    }
    let member: NewMember = serde_json::from_slice(&request.body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-member",
            format!("expected {{\"id\": N, \"address\": \"host:port\"}}: {e}"),
        )
    })?;
    let learner = BasicNode::new(&member.address);
    committed(node, node.raft.add_learner(member.id, learner, true)).await?;
    let change = openraft::ChangeMembers::AddVoterIds([member.id].into());
    committed(node, node.raft.change_membership(change, false)).await?;
    Ok(cluster(node).await)
}

/// Path of the leadership transfer; it may take up to `transferTimeout`.
pub const TRANSFER_PATH: &str = "/v1/cluster/transfer-leader";

/// `POST /v1/cluster/transfer-leader`: the leader hands leadership over (see
/// [`transfer::transfer`]); followers forward it. Answers with the new cluster view.
async fn transfer_leader(
    node: &Node,
    request: &ApiRequest,
) -> Result<Response<Full<Bytes>>, Routed> {
    let body: TransferTo = if request.body.iter().all(u8::is_ascii_whitespace) {
        TransferTo::default()
    } else {
        serde_json::from_slice(&request.body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad-transfer",
                format!("expected {{\"to\": N}} or {{}}: {e}"),
            )
        })?
    };
    let metrics = node.raft.metrics().borrow().clone();
    if metrics.state != openraft::ServerState::Leader {
        return Err(to_current_leader(&metrics));
    }
    match transfer::transfer(node, body.to).await {
        Ok(_) => Ok(cluster(node).await),
        Err(error) => {
            let (status, code) = error.status();
            Err(ApiError::new(status, code, error.to_string()).into())
        }
    }
}

/// Linearizable reads (the default) confirm leadership with a quorum first; followers forward
/// them to the leader. `?stale=true` reads this node's applied state as it is.
pub(crate) async fn read_barrier(node: &Node, request: &ApiRequest) -> Result<(), Routed> {
    if request.flag("stale")? {
        return Ok(());
    }
    if node.transfers.in_progress() {
        // A read index round renews the voters' leader lease, which the transfer waits out.
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "transfer-in-progress",
            "leadership is moving to another node; retry in a moment, or read with ?stale=true",
        )
        .into());
    }
    let timeout = node.config.spec.write_timeout.get();
    match tokio::time::timeout(timeout, node.raft.ensure_linearizable()).await {
        Err(_) => Err(no_quorum(timeout).into()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward)))) => {
            Err(leader_or_unavailable(&forward))
        }
        Ok(Err(error)) => {
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "raft", error.to_string()).into())
        }
    }
}

fn no_quorum(timeout: std::time::Duration) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no-quorum",
        format!("no quorum answered within {timeout:?}; is a majority of the cluster up?"),
    )
}

/// Sends a request that only the leader answers on to the leader this node knows of, or
/// answers 503 when it knows none.
pub(crate) fn to_current_leader(metrics: &openraft::RaftMetrics<NodeId, BasicNode>) -> Routed {
    let leader = metrics.current_leader.and_then(|id| {
        metrics
            .membership_config
            .nodes()
            .find(|(n, _)| **n == id)
            .map(|(_, n)| n.clone())
    });
    leader_or_unavailable(&ForwardToLeader {
        leader_id: metrics.current_leader,
        leader_node: leader,
    })
}

fn leader_or_unavailable(forward: &ForwardToLeader<NodeId, BasicNode>) -> Routed {
    match &forward.leader_node {
        Some(leader) => Routed::Forward(leader.addr.clone()),
        None => Routed::Error(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no-leader",
            "the cluster has no leader right now; try again shortly",
        )),
    }
}

/// Sends the request on to the leader and relays its answer.
async fn forward(node: &Node, request: &ApiRequest, leader: &str) -> Response<Full<Bytes>> {
    let query = if request.query.is_empty() {
        String::new()
    } else {
        format!("?{}", request.query)
    };
    let upstream = Request::builder()
        .method(request.method.clone())
        .uri(format!("http://{leader}{}{query}", request.path))
        .header(FORWARDED_HEADER, "1")
        .body(Full::new(request.body.clone()));
    let upstream = match upstream {
        Ok(upstream) => upstream,
        Err(e) => {
            return ApiError::new(StatusCode::BAD_GATEWAY, "forward", e.to_string())
                .into_response();
        }
    };
    let timeout = if request.path == TRANSFER_PATH {
        // The transfer itself, the target's late answer, then resuming the held voters.
        node.config.spec.transfer_timeout.get() + transfer::ANSWER_SLACK * 3
    } else {
        node.config.spec.write_timeout.get()
    };
    let exchange = async {
        let response = node
            .peers
            .request(upstream)
            .await
            .map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok::<_, String>(Response::from_parts(parts, Full::new(bytes)))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(response)) => response,
        Ok(Err(reason)) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "leader-unreachable",
            format!("cannot reach the leader at {leader}: {reason}"),
        )
        .into_response(),
        Err(_) => no_quorum(timeout).into_response(),
    }
}

/// `GET /v1/cluster`: this node's view — its role, the leader, term, indexes, the snapshot and
/// compaction point, members (with their replication lag when this node leads).
async fn cluster(node: &Node) -> Response<Full<Bytes>> {
    let metrics = node.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let members: Vec<ClusterMember> = metrics
        .membership_config
        .nodes()
        .map(|(id, n)| ClusterMember {
            id: *id,
            address: n.addr.clone(),
            voter: membership.voter_ids().any(|v| v == *id),
            lag: metrics.replication.as_ref().map(|replication| {
                lag(
                    metrics.last_log_index,
                    replication.get(id).copied().flatten(),
                )
            }),
        })
        .collect();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let revision = node.state.read(|state| state.revision()).await;
    let status = ClusterStatus {
        id: metrics.id,
        name: node.config.name.clone(),
        state: format!("{:?}", metrics.state),
        leader: metrics.current_leader,
        term: metrics.current_term,
        last_log_index: metrics.last_log_index,
        commit_index: node.commit_index.get(),
        last_applied: metrics.last_applied.map(|l| l.index),
        snapshot: metrics.snapshot.map(|l| l.index),
        purged: metrics.purged.map(|l| l.index),
        revision,
        members,
        voters,
    };
    json_response(StatusCode::OK, &status)
}

/// How many of the leader's entries a member has not confirmed: the leader's last log index
/// minus the member's matched index (every entry when nothing matched yet; indexes start at 0).
pub(crate) fn lag(last_log_index: Option<u64>, matched: Option<crate::raft::LogId>) -> u64 {
    match (last_log_index, matched) {
        (None, _) => 0,
        (Some(last), Some(matched)) => last.saturating_sub(matched.index),
        (Some(last), None) => last.saturating_add(1),
    }
}

pub(crate) fn json_response<T: Serialize + ?Sized>(
    status: StatusCode,
    value: &T,
) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec_pretty(value)
        .unwrap_or_else(|e| format!("{{\"code\":\"encode\",\"message\":\"{e}\"}}").into_bytes());
    body.push(b'\n');
    bytes_response(status, body, "application/json")
}

fn bytes_response(
    status: StatusCode,
    body: Vec<u8>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::lag;
    use crate::raft::LogId;

    fn matched(index: u64) -> Option<LogId> {
        Some(openraft::LogId::new(
            openraft::CommittedLeaderId::new(1, 1),
            index,
        ))
    }

    #[test]
    fn lag_counts_the_entries_a_member_has_not_matched() {
        assert_eq!(lag(Some(10), matched(10)), 0);
        assert_eq!(lag(Some(10), matched(7)), 3);
        assert_eq!(lag(Some(10), None), 11, "indexes start at 0");
        assert_eq!(lag(None, None), 0, "an empty log lacks nothing");
        assert_eq!(lag(Some(3), matched(5)), 0, "never negative");
    }
}

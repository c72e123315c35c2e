//! Watch streams with real processes. Across the death of the node serving it, a reader
//! reconnects to another node with `?since=REV` and, over the whole run, sees one snapshot and
//! then every acknowledged write exactly once, in revision order, with no gap and no repeat.
//! A node never sends a reader back in time: one behind the reader refuses, and only a reader
//! of another, rebuilt cluster starts over. Readers present a node certificate, as agents do.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use hyphae_integration::binaries::workspace_binary;
use hyphae_integration::cluster::{Cluster, Node, SHORT_WRITE_TIMEOUT};
use hyphae_integration::eventually;
use hyphae_integration::http::{request, tls_stream};
use hyphae_integration::lone_node::LoneNode;
use hyphae_integration::trust;
use hyphae_policies::tls::Credentials;
use serde_json::Value;

/// A cluster of `size` nodes in `dir`, started.
fn cluster(dir: &Path, size: usize) -> Cluster {
    Cluster::start(
        &workspace_binary("hyphae-control-plane"),
        dir,
        size,
        SHORT_WRITE_TIMEOUT,
    )
    .expect("start the control plane")
}

/// POSTs `body` to `path` on `server`: the status and the JSON answer, `None` when nothing
/// answered.
async fn post_json(server: &str, path: &str, body: &str) -> Option<(u16, Value)> {
    let answer = request("POST", server, path, body).await?;
    Some((answer.status.as_u16(), answer.json()))
}

/// Writes attempted, one distinct policy each.
const WRITES: usize = 60;
/// Acknowledged writes after which the watcher's node is killed.
const KILL_AFTER: usize = 20;

/// What the reader has seen.
#[derive(Default)]
struct Seen {
    /// Every event but heartbeats, in arrival order.
    events: Vec<Value>,
    /// The revision the reader holds.
    revision: u64,
    /// The node it reads from now.
    connected_to: Option<usize>,
    /// Streams opened.
    streams: usize,
}

/// The certificate of an agent called `reader`, which watch streams need.
async fn reader_credentials(server: &str) -> Credentials {
    trust::of(server)
        .expect("a node this test started")
        .node_credentials(server, "reader", &[])
        .await
        .expect("a node certificate")
}

/// Reads one stream from `server` until it ends or fails.
async fn follow(
    server: &str,
    index: usize,
    seen: &Mutex<Seen>,
    agent: &Credentials,
) -> Result<(), String> {
    let since = seen.lock().expect("lock").revision;
    let stream = tls_stream(server, Some(agent), &[b"http/1.1"])
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let path = if since > 0 {
        format!("/v1/agent/watch?since={since}")
    } else {
        "/v1/agent/watch".to_string()
    };
    let request = http::Request::get(path)
        .header(http::header::HOST, server)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    {
        let mut seen = seen.lock().expect("lock");
        seen.connected_to = Some(index);
        seen.streams += 1;
    }
    let mut body = response.into_body();
    let mut buffer = Vec::new();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(15), body.frame())
            .await
            .map_err(|_| "silent stream".to_string())?;
        let Some(frame) = frame else {
            return Ok(());
        };
        let frame = frame.map_err(|e| e.to_string())?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buffer.extend_from_slice(&data);
        while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let event: Value = serde_json::from_slice(&line).map_err(|e| e.to_string())?;
            if event["type"] == "heartbeat" {
                continue;
            }
            let mut seen = seen.lock().expect("lock");
            seen.revision = event["revision"].as_u64().unwrap_or(0);
            seen.events.push(event);
        }
    }
}

/// Follows the cluster's watch stream forever, moving to the next node whenever one fails.
async fn reader(servers: Vec<String>, seen: Arc<Mutex<Seen>>, agent: Credentials) {
    let mut index = 1;
    loop {
        let _ = follow(&servers[index], index, &seen, &agent).await;
        index = (index + 1) % servers.len();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_sees_every_write_once_in_order_while_its_node_is_killed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut nodes = cluster(dir.path(), 3);
    let servers: Vec<String> = nodes.addresses().iter().map(ToString::to_string).collect();
    nodes.leader().await.expect("a leader");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let agent = reader_credentials(&servers[0]).await;
    let reading = tokio::spawn(reader(servers.clone(), Arc::clone(&seen), agent));
    eventually("the first snapshot", || async {
        !seen.lock().expect("lock").events.is_empty()
    })
    .await;

    let mut acked: Vec<(String, u64)> = Vec::new();
    let mut killed = None;
    for i in 0..WRITES {
        if acked.len() == KILL_AFTER && killed.is_none() {
            let index = seen.lock().expect("lock").connected_to.expect("connected");
            nodes.node_mut(index as u64 + 1).kill();
            killed = Some(index);
        }
        // One attempt per name: a write that failed may still commit, so it is never retried
        // under the same name (that would make a legitimate second upsert).
        let live: Vec<&String> = (0..servers.len())
            .filter(|n| Some(*n) != killed)
            .map(|n| &servers[n])
            .collect();
        let name = format!("svc-{i:03}");
        let body = format!("kind: ServicePolicy\nmetadata: {{name: {name}}}\nspec: {{}}\n");
        if let Some((200, answer)) = post_json(live[i % live.len()], "/v1/policies", &body).await {
            let revision = answer["revision"].as_u64().expect("revision");
            acked.push((name, revision));
        }
    }
    assert!(
        killed.is_some(),
        "only {} writes were acknowledged",
        acked.len()
    );
    assert!(
        acked.len() > KILL_AFTER,
        "no write was acknowledged after the kill"
    );
    let last = acked.iter().map(|(_, r)| *r).max().expect("acked writes");
    eventually("the reader to catch up with the last write", || async {
        seen.lock().expect("lock").revision >= last
    })
    .await;
    reading.abort();

    let seen = seen.lock().expect("lock");
    assert!(seen.streams >= 2, "the reader never moved to another node");
    assert_eq!(seen.events[0]["type"], "snapshot");
    let mut previous = seen.events[0]["revision"].as_u64().expect("revision");
    let mut upserts: BTreeMap<String, usize> = BTreeMap::new();
    for event in &seen.events[1..] {
        assert_eq!(
            event["type"], "delta",
            "a reconnect with ?since must not start over: a {} at revision {}",
            event["type"], event["revision"]
        );
        let revision = event["revision"].as_u64().expect("revision");
        assert!(
            revision > previous,
            "revision {revision} after {previous}: out of order or repeated"
        );
        previous = revision;
        for policy in event["upserts"].as_array().expect("upserts") {
            let name = policy["name"].as_str().expect("name").to_string();
            *upserts.entry(name).or_default() += 1;
        }
    }
    for (name, count) in &upserts {
        assert_eq!(*count, 1, "{name} arrived {count} times");
    }
    for (name, _) in &acked {
        assert!(
            upserts.contains_key(name),
            "acknowledged {name} never arrived"
        );
    }
}

/// Opens a watch at `path` on `server`: the status, and the first event when it is a stream.
async fn first_event(server: &str, path: &str) -> (u16, Option<Value>) {
    let agent = reader_credentials(server).await;
    let stream = tls_stream(server, Some(&agent), &[b"http/1.1"])
        .await
        .expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header(http::header::HOST, server)
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    if status != 200 {
        let whole = response.into_body().collect().await.expect("error body");
        return (status, serde_json::from_slice(&whole.to_bytes()).ok());
    }
    let mut body = response.into_body();
    let mut buffer = Vec::new();
    while !buffer.contains(&b'\n') {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("a frame in time");
        let Some(Ok(frame)) = frame else { break };
        if let Ok(data) = frame.into_data() {
            buffer.extend_from_slice(&data);
        }
    }
    let line = buffer.split(|&b| b == b'\n').next().unwrap_or_default();
    (status, serde_json::from_slice(line).ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_never_goes_back_in_time_but_follows_a_rebuilt_cluster() {
    let dir = tempfile::tempdir().expect("temp dir");
    let nodes = cluster(dir.path(), 1);
    let server = nodes.node(1).address.to_string();
    nodes.leader().await.expect("a leader");
    let body = "kind: ServicePolicy\nmetadata: {name: web}\nspec: {}\n";
    let (status, _) = post_json(&server, "/v1/policies", body)
        .await
        .expect("answer");
    assert_eq!(status, 200);
    let (status, snapshot) = first_event(&server, "/v1/agent/watch").await;
    assert_eq!(status, 200);
    let snapshot = snapshot.expect("a snapshot");
    let cluster = snapshot["cluster"]
        .as_str()
        .expect("the cluster's identity");
    let revision = snapshot["revision"].as_u64().expect("revision");

    // A reader of this cluster that holds more than this node has: refused, never sent back.
    let ahead = format!("/v1/agent/watch?since={}&cluster={cluster}", revision + 100);
    let (status, refusal) = first_event(&server, &ahead).await;
    assert_eq!(status, 503);
    assert_eq!(refusal.expect("an error body")["code"], "behind");

    // A reader of another (rebuilt) cluster starts over from a snapshot.
    let other = format!("/v1/agent/watch?since={}&cluster=another", revision + 100);
    let (status, event) = first_event(&server, &other).await;
    assert_eq!(status, 200);
    let event = event.expect("an event");
    assert_eq!(event["type"], "snapshot");
    assert_eq!(event["cluster"], cluster);

    // A node with no certificate (it never initialized or joined a cluster) does not start.
    let files = LoneNode::write(dir.path(), "lonely", 7).expect("write config");
    let mut lonely = Node::new(
        &workspace_binary("hyphae-control-plane"),
        7,
        files.config,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        dir.path().join("lonely.log"),
    );
    assert!(
        lonely.start(false).is_err(),
        "a node without a certificate or a join token exits"
    );
}

//! The OpenAPI 3.1 description of a node's HTTP API, served at `GET /v1/openapi.json`. Its
//! schemas are generated from the very types the API and the agent (de)serialize, so the
//! document cannot drift from the wire; only paths, parameters and prose are written here.

use std::sync::OnceLock;

use hyphae_policies::Policy;
use hyphae_policies::registry::{
    DEREGISTER_PATH, HEALTH_PATH, HEARTBEAT_PATH, HealthReport, Heartbeat, Lease, NodeRecord,
    REGISTER_PATH, ServiceSummary,
};
use hyphae_policies::watch::{WATCH_PATH, WatchEvent};
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Value, json};

use crate::join_tokens::JoinTokenView;
use crate::state::{CommandResponse, StoredPolicy};
use crate::tokens::TokenView;
use crate::wire::{
    CaView, ClusterStatus, ControlPlaneJoin, CreatedJoinToken, CreatedToken, DryRun, ErrorBody,
    JoinRequest, Joined, NewJoinToken, NewMember, NewOperatorCertificate, NewToken, NodeView,
    RenewRequest, RotateCa, TransferTo,
};

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/v1/openapi.json";

/// The OpenAPI version the document follows: 3.1 schemas are JSON Schema 2020-12, which is
/// what schemars generates, so they need no translation.
pub const OPENAPI_VERSION: &str = "3.1.0";

/// The document, built once per process.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(build)
}

/// The `$ref` schema of `T`, registering `T` (and what it uses) as components.
fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    generator.subschema_for::<T>().to_value()
}

fn array(items: Value) -> Value {
    json!({ "type": "array", "items": items })
}

fn json_content(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

/// An operation's responses: `200` with `ok`'s schema and, for anything else, the error body.
fn responses(description: &str, ok: Value, error: &Value) -> Value {
    json!({
        "200": { "description": description, "content": json_content(ok) },
        "default": {
            "description": "The request failed; `code` says why.",
            "content": json_content(error.clone()),
        },
    })
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description, "schema": schema })
}

fn path_param(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": description, "schema": schema })
}

fn stale() -> Value {
    query(
        "stale",
        "Answer from this node's applied state without a quorum round (may be slightly behind).",
        json!({ "type": "boolean" }),
    )
}

fn build() -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator();
    let g = &mut generator;
    let error = schema::<ErrorBody>(g);
    let stored = schema::<StoredPolicy>(g);
    let command = schema::<CommandResponse>(g);
    let cluster = schema::<ClusterStatus>(g);
    let lease = schema::<Lease>(g);
    let string = json!({ "type": "string" });

    let mut paths = serde_json::Map::new();
    paths.insert(
        "/v1/policies".into(),
        json!({
            "get": {
                "operationId": "listPolicies",
                "summary": "Stored policies, with revision and canonical YAML",
                "parameters": [
                    query("kind", "Only this kind.", string.clone()),
                    stale(),
                ],
                "responses": responses("The policies.", array(stored.clone()), &error),
            },
            "post": {
                "operationId": "applyPolicies",
                "summary": "Validate policy documents and write them all in one Raft entry",
                "description": "The body is one or more YAML documents (`---` apart) or one JSON document. Errors answer 422 with `diagnostics` and nothing is written. `AgentConfig` and `ControlPlaneConfig` are refused: they belong on their node.",
                "parameters": [query(
                    "dryRun",
                    "Only validate, and say what would be written.",
                    json!({ "type": "boolean" }),
                )],
                "requestBody": {
                    "required": true,
                    "content": {
                        "application/yaml": { "schema": string.clone() },
                        "application/json": { "schema": schema::<Policy>(g) },
                    },
                },
                "responses": responses(
                    "Written (the revision is the Raft log index), or the dry run's findings.",
                    json!({ "oneOf": [command.clone(), schema::<DryRun>(g)] }),
                    &error,
                ),
            },
        }),
    );
    // `PUT` is accepted as a synonym of `POST` (apply is idempotent).
    if let Some(apply) = paths
        .get("/v1/policies")
        .and_then(|p| p.get("post"))
        .cloned()
        && let Some(Value::Object(entry)) = paths.get_mut("/v1/policies")
    {
        let mut put = apply;
        put["operationId"] = json!("applyPoliciesPut");
        entry.insert("put".into(), put);
    }
    let kind = path_param("kind", "The policy's kind.", string.clone());
    let name = path_param("name", "The policy's name.", string.clone());
    paths.insert(
        "/v1/policies/{kind}/{name}".into(),
        json!({
            "get": {
                "operationId": "getPolicy",
                "summary": "One stored policy",
                "parameters": [kind.clone(), name.clone(), stale()],
                "responses": responses("The policy.", stored.clone(), &error),
            },
            "delete": {
                "operationId": "deletePolicy",
                "summary": "Delete one policy; the answer says whether it existed",
                "parameters": [kind, name],
                "responses": responses("Deleted, or there was nothing to delete.", command.clone(), &error),
            },
        }),
    );
    paths.insert(
        "/v1/cluster".into(),
        json!({ "get": {
            "operationId": "clusterStatus",
            "summary": "The answering node's view: role, leader, term, indexes, members",
            "responses": responses("The view.", cluster.clone(), &error),
        }}),
    );
    paths.insert(
        "/v1/cluster/members".into(),
        json!({ "post": {
            "operationId": "addMember",
            "summary": "Add a node as a learner, let it catch up, then make it a voter",
            "requestBody": { "required": true, "content": json_content(schema::<NewMember>(g)) },
            "responses": responses("The cluster after the change.", cluster.clone(), &error),
        }}),
    );
    paths.insert(
        "/v1/cluster/members/{id}".into(),
        json!({ "delete": {
            "operationId": "removeMember",
            "summary": "Remove a voter",
            "parameters": [path_param("id", "The node id.", json!({ "type": "integer", "minimum": 0 }))],
            "responses": responses("The cluster after the change.", cluster.clone(), &error),
        }}),
    );
    paths.insert(
        "/v1/cluster/transfer-leader".into(),
        json!({ "post": {
            "operationId": "transferLeader",
            "summary": "Hand leadership to a voter (`to`), or to the most caught-up one, once it has caught up",
            "requestBody": { "required": false, "content": json_content(schema::<TransferTo>(g)) },
            "responses": responses("The cluster after the change.", cluster, &error),
        }}),
    );
    paths.insert(
        "/v1/services".into(),
        json!({ "get": {
            "operationId": "listServices",
            "summary": "Registered services with their instances, node, site and health",
            "parameters": [stale()],
            "responses": responses("The services, by name.", array(schema::<ServiceSummary>(g)), &error),
        }}),
    );
    let service = schema::<ServiceSummary>(g);
    paths.insert(
        "/v1/services/{name}".into(),
        json!({ "get": {
            "operationId": "getService",
            "summary": "One registered service with its instances",
            "parameters": [path_param("name", "The service's name.", string.clone()), stale()],
            "responses": responses("The service.", service, &error),
        }}),
    );
    let node_view = schema::<NodeView>(g);
    paths.insert(
        "/v1/nodes/{name}".into(),
        json!({
            "get": {
                "operationId": "getNode",
                "summary": "One registered node with its instances",
                "parameters": [path_param("name", "The node's name.", string.clone()), stale()],
                "responses": responses("The node.", node_view, &error),
            },
            "delete": {
                "operationId": "releaseNode",
                "summary": "Forget a node: its record, and the name its join took, so a new join may take it; admin role",
                "parameters": [path_param("name", "The node's name.", string.clone())],
                "responses": responses("What the write did.", schema::<CommandResponse>(g), &error),
            },
        }),
    );
    paths.insert(
        "/v1/nodes".into(),
        json!({ "get": {
            "operationId": "listNodes",
            "summary": "Registered nodes with their instances",
            "parameters": [stale()],
            "responses": responses("The nodes, by name.", array(schema::<NodeView>(g)), &error),
        }}),
    );
    let heartbeat = schema::<Heartbeat>(g);
    for (path, id, summary, body, ok, answer) in [
        (
            REGISTER_PATH,
            "registerAgent",
            "An agent registers its node and instances",
            schema::<NodeRecord>(g),
            "The node's lease.",
            lease.clone(),
        ),
        (
            HEARTBEAT_PATH,
            "heartbeat",
            "An agent renews its lease (404 `unknown-node`: register again)",
            heartbeat.clone(),
            "The renewed lease.",
            lease,
        ),
        (
            HEALTH_PATH,
            "reportHealth",
            "An agent reports instances' health changes (404 `unknown-node`: register again)",
            schema::<HealthReport>(g),
            "Recorded; `changed` counts instances whose health changed.",
            command.clone(),
        ),
        (
            DEREGISTER_PATH,
            "deregisterAgent",
            "An agent leaves the registry as it stops",
            heartbeat,
            "Removed; `existed` says whether it was registered.",
            command.clone(),
        ),
    ] {
        paths.insert(
            path.into(),
            json!({ "post": {
                "operationId": id,
                "summary": summary,
                "requestBody": { "required": true, "content": json_content(body) },
                "responses": responses(ok, answer, &error),
            }}),
        );
    }
    paths.insert(
        WATCH_PATH.into(),
        json!({ "get": {
            "operationId": "watch",
            "summary": "A long-lived stream of newline-delimited JSON events: a snapshot (or, with `since`, what changed after it), then a delta per revision and heartbeats",
            "parameters": [
                query(
                    "since",
                    "The revision the reader holds: the stream opens with only what changed after it (a delta, or a heartbeat when nothing did), or with a snapshot when those changes are no longer remembered.",
                    json!({ "type": "integer", "minimum": 0 }),
                ),
                query(
                    "cluster",
                    "The identity of the cluster the reader's revision came from (a snapshot's `cluster`); a reader of another cluster gets a snapshot.",
                    string.clone(),
                ),
            ],
            "responses": {
                "200": {
                    "description": "One `WatchEvent` per line, for as long as the connection lasts.",
                    "content": { "application/x-ndjson": { "schema": schema::<WatchEvent>(g) } },
                },
                "503": {
                    "description": "This node cannot serve the reader without sending it back in time: `behind` (older than `since`) or `not-ready` (not in an initialized cluster yet). Try another node.",
                    "content": json_content(error.clone()),
                },
            },
        }}),
    );
    let token_view = schema::<TokenView>(g);
    paths.insert(
        "/v1/acl/tokens".into(),
        json!({
            "get": {
                "operationId": "listTokens",
                "summary": "Admin API tokens: name, role, expiry (never secrets or hashes); admin role",
                "responses": responses("The tokens.", array(token_view), &error),
            },
            "post": {
                "operationId": "createToken",
                "summary": "Create (or replace) a token; the answer holds its secret, shown this once; admin role",
                "requestBody": { "required": true, "content": json_content(schema::<NewToken>(g)) },
                "responses": responses("The token and its secret.", schema::<CreatedToken>(g), &error),
            },
        }),
    );
    paths.insert(
        "/v1/acl/tokens/{name}".into(),
        json!({ "delete": {
            "operationId": "revokeToken",
            "summary": "Revoke a token on every node; admin role",
            "parameters": [path_param("name", "The token's name.", string.clone())],
            "responses": responses("Revoked.", command.clone(), &error),
        }}),
    );
    paths.insert(
        "/v1/ca".into(),
        json!({ "get": {
            "operationId": "getCa",
            "summary": "The cluster's root certificate and its SHA-256 fingerprint (what joining hosts pin); no token needed",
            "responses": responses("The root.", schema::<CaView>(g), &error),
        }}),
    );
    paths.insert(
        "/v1/join-tokens".into(),
        json!({
            "get": {
                "operationId": "listJoinTokens",
                "summary": "Join tokens: name, uses left, expiry, site (never secrets); admin role",
                "responses": responses("The join tokens.", array(schema::<JoinTokenView>(g)), &error),
            },
            "post": {
                "operationId": "createJoinToken",
                "summary": "Create a join token (single use and 1 h unless said otherwise); the answer holds its secret, once; admin role",
                "requestBody": { "required": false, "content": json_content(schema::<NewJoinToken>(g)) },
                "responses": responses("The token and its secret.", schema::<CreatedJoinToken>(g), &error),
            },
        }),
    );
    paths.insert(
        "/v1/join-tokens/{name}".into(),
        json!({ "delete": {
            "operationId": "revokeJoinToken",
            "summary": "Revoke a join token; admin role",
            "parameters": [path_param("name", "The token's name.", string.clone())],
            "responses": responses("Revoked.", command.clone(), &error),
        }}),
    );
    paths.insert(
        "/v1/agent/join".into(),
        json!({ "post": {
            "operationId": "join",
            "summary": "A host presents a join token and a CSR and gets its node certificate (SPIFFE IDs of the node and its services) and the root; 403 `join-refused` for a token that is unknown, used up, expired, revoked or for another site",
            "requestBody": { "required": true, "content": json_content(schema::<JoinRequest>(g)) },
            "responses": responses("The certificate.", schema::<Joined>(g), &error),
        }}),
    );
    paths.insert(
        "/v1/agent/renew".into(),
        json!({ "post": {
            "operationId": "renew",
            "summary": "An agent presenting its node certificate gets a fresh one for a new key, with the same identities",
            "requestBody": { "required": true, "content": json_content(schema::<RenewRequest>(g)) },
            "responses": responses("The certificate.", schema::<Joined>(g), &error),
        }}),
    );
    paths.insert(
        "/v1/cluster/join".into(),
        json!({ "post": {
            "operationId": "joinControlPlane",
            "summary": "A new control-plane node presents a control-plane join token and a CSR and gets its certificate (`control-plane/<id>`); it then adds itself with POST /v1/cluster/members",
            "requestBody": { "required": true, "content": json_content(schema::<ControlPlaneJoin>(g)) },
            "responses": responses("The certificate.", schema::<Joined>(g), &error),
        }}),
    );
    paths.insert(
        "/v1/acl/certificates".into(),
        json!({ "post": {
            "operationId": "createOperatorCertificate",
            "summary": "An operator's client certificate (`operator/<name>`) from its CSR, with a role kept in the token table under that name (revoke it like a token); admin role",
            "requestBody": { "required": true, "content": json_content(schema::<NewOperatorCertificate>(g)) },
            "responses": responses("The certificate.", schema::<Joined>(g), &error),
        }}),
    );
    paths.insert(
        "/v1/ca/rotate".into(),
        json!({ "post": {
            "operationId": "rotateCa",
            "summary": "One step of a rotation of the cluster's root: add (trusted, not signing), activate (signing), retire (the old root trusted no more); admin role",
            "requestBody": { "required": true, "content": json_content(schema::<RotateCa>(g)) },
            "responses": responses("The roots.", schema::<CaView>(g), &error),
        }}),
    );
    paths.insert(
        "/v1/metrics".into(),
        json!({ "get": {
            "operationId": "metrics",
            "summary": "Refusals by reason, in Prometheus' text format; read role",
            "responses": { "200": {
                "description": "The counters.",
                "content": { "text/plain": { "schema": { "type": "string" } } },
            }},
        }}),
    );
    paths.insert(
        OPENAPI_PATH.into(),
        json!({ "get": {
            "operationId": "openapi",
            "summary": "This document",
            "responses": { "200": {
                "description": "The OpenAPI 3.1 description of the API.",
                "content": json_content(json!({ "type": "object" })),
            }},
        }}),
    );

    json!({
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "hyphae control plane",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Admin API (policies, registry, cluster, tokens) and agent API (registration, heartbeats, health, watch) of a hyphae control-plane node. Reads are linearizable unless `stale` is set; followers forward writes to the leader. Every admin operation needs `Authorization: Bearer <token>`: a `read` token reads, `write` also applies and deletes policies, `admin` also changes membership, leadership and tokens; without a valid token the answer is 401, with too low a role 403. The agent API and this document need no token.",
        },
        "paths": paths,
        "security": [{ "bearer": [] }],
        "components": {
            "schemas": generator.take_definitions(true),
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every path and method the API serves.
    const OPERATIONS: [(&str, &str); 32] = [
        ("/v1/policies", "post"),
        ("/v1/policies", "get"),
        ("/v1/policies/{kind}/{name}", "get"),
        ("/v1/policies/{kind}/{name}", "delete"),
        ("/v1/cluster", "get"),
        ("/v1/cluster/members", "post"),
        ("/v1/cluster/members/{id}", "delete"),
        ("/v1/cluster/transfer-leader", "post"),
        ("/v1/services", "get"),
        ("/v1/nodes", "get"),
        ("/v1/services/{name}", "get"),
        ("/v1/nodes/{name}", "get"),
        ("/v1/nodes/{name}", "delete"),
        ("/v1/agent/register", "post"),
        ("/v1/agent/heartbeat", "post"),
        ("/v1/agent/health", "post"),
        ("/v1/agent/deregister", "post"),
        ("/v1/agent/watch", "get"),
        ("/v1/acl/tokens", "get"),
        ("/v1/acl/tokens", "post"),
        ("/v1/acl/tokens/{name}", "delete"),
        ("/v1/ca", "get"),
        ("/v1/join-tokens", "get"),
        ("/v1/join-tokens", "post"),
        ("/v1/join-tokens/{name}", "delete"),
        ("/v1/agent/join", "post"),
        ("/v1/agent/renew", "post"),
        ("/v1/cluster/join", "post"),
        ("/v1/acl/certificates", "post"),
        ("/v1/ca/rotate", "post"),
        ("/v1/metrics", "get"),
        ("/v1/openapi.json", "get"),
    ];

    fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("$ref", Value::String(target)) => found.push(target),
                        _ => refs(value, found),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
            _ => {}
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_and_lists_every_operation() {
        let text = serde_json::to_string(document()).unwrap();
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert!(
            parsed["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1.")),
            "{}",
            parsed["openapi"]
        );
        for (path, method) in OPERATIONS {
            let operation = &parsed["paths"][path][method];
            assert!(operation.is_object(), "{method} {path} is missing");
            assert!(operation["responses"]["200"].is_object(), "{method} {path}");
        }
        let listed = parsed["paths"].as_object().unwrap().len();
        assert_eq!(listed, 27, "a path the test does not know of");
    }

    #[test]
    fn every_ref_resolves_to_a_component() {
        let document = document();
        let mut found = Vec::new();
        refs(document, &mut found);
        assert!(found.len() > 20, "only {} references", found.len());
        for target in found {
            let pointer = target
                .strip_prefix("#/components/schemas/")
                .map(|_| &target[1..]);
            assert!(
                pointer.is_some(),
                "`{target}` points outside the components"
            );
            assert!(
                pointer.and_then(|p| document.pointer(p)).is_some(),
                "`{target}` does not resolve"
            );
        }
        let schemas = document["components"]["schemas"].as_object().unwrap();
        for name in [
            "StoredPolicy",
            "CommandResponse",
            "ErrorBody",
            "Diagnostic",
            "NodeRecord",
            "ServiceSummary",
            "WatchEvent",
            "PolicyRecord",
            "Lease",
        ] {
            assert!(schemas.contains_key(name), "no component `{name}`");
        }
        for name in schemas.keys() {
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
                "`{name}` is not a valid OpenAPI component name"
            );
        }
    }
}

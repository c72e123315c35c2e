//! hyphae's control plane and the `hyphae` operator CLI.
//!
//! - [`cli`]: the CLI's offline commands (`validate`, `schema`), sharing the policy crate's
//!   loader with every other part of hyphae.
//! - [`state`]: the replicated state (policies, registered nodes with their instances and
//!   health, the cluster's identity, all with revisions) and the [`state::Command`]s that
//!   change it; applying a command is a pure function.
//! - [`raft`]: the openraft type configuration built from those commands, with snapshots as
//!   [`snapshot_file::SnapshotFile`]s, streamed to and from disk.
//! - [`store`]: durable Raft storage on one redb file: [`store::LogStore`] (vote and log) and
//!   [`store::StateMachineStore`] (applies entries to [`state::State`] and to disk, snapshots).
//!
//! A write will travel: admin API → `Raft::client_write(Command)` → [`store::LogStore`] on a
//! quorum → [`store::StateMachineStore::apply`](openraft::storage::RaftStateMachine::apply) →
//! [`state::State::apply`] → the response and the new revision.
//!
//! The modules stack one way, each importing only those above it in this list:
//! - [`ca`] makes the cluster's root and signs node certificates from CSRs that hosts
//!   present with a join token ([`join_tokens`]);
//!   [`tokens`] says what an admin token may do and checks a presented one ([`secret_file`]
//!   keeps a secret in an owner-only file);
//!   [`config`] reads a node's `ControlPlaneConfig`; [`wire`] holds the API's bodies and
//!   [`openapi`] describes them at `/v1/openapi.json`; [`changes`] is the change log of recent
//!   revisions; [`watch`] streams snapshots and deltas from it to agents.
//! - [`network`] carries Raft RPCs over HTTP/2 (client and server side); [`leadership`] is a
//!   node's transfer flag and paused elections; [`lease`] the leader's in-memory lease table;
//!   [`heartbeat_batch`] a follower's queue of heartbeats for the leader;
//!   [`snapshot_receipt`] checks that each snapshot chunk continues the one being received;
//!   [`snapshot_chunk`] frames one in binary.
//! - [`node`] opens the store and starts Raft: the [`node::Node`] every part below shares.
//! - [`transfer`] hands leadership to another voter; [`keepers`] run beside the port (lease
//!   expiry, the cluster's identity).
//! - [`api`] serves the port: peer RPCs and the admin and agent API, one file per resource;
//!   every request enters through [`api::handle`].
//! - [`daemon`] starts and stops it all: what the binary and `hyphae-agent --dev` run.

pub mod api;
pub mod ca;
pub mod changes;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod heartbeat_batch;
pub mod join_tokens;
pub mod keepers;
pub mod leadership;
pub mod lease;
pub mod network;
pub mod node;
pub mod openapi;
pub mod pki;
pub mod pre_vote;
pub use hyphae_policies::secret_file;
pub mod raft;
pub mod refusals;
pub mod snapshot_chunk;
pub mod snapshot_file;
pub mod snapshot_receipt;
pub mod state;
pub mod store;
pub mod tokens;
pub mod transfer;
pub mod virtual_ips;
pub mod watch;
pub mod wire;

/// An error and its causes on one line, for logs and API messages: the shared helper of
/// `hyphae-policies`, kept at this path for the control plane's modules.
pub use hyphae_policies::error_chain;

//! hyphae's control plane and the `hyphae` operator CLI.
//!
//! - [`cli`]: the CLI's offline commands (`validate`, `schema`), sharing the policy crate's
//!   loader with every other part of hyphae.
//! - [`state`]: the replicated state (policies, registered nodes with their instances and
//!   health, the cluster's identity, all with revisions) and the [`state::Command`]s that
//!   change it; applying a command is a pure function.
//! - [`raft`]: the openraft type configuration built from those commands.
//! - [`store`]: durable Raft storage on one redb file: [`store::LogStore`] (vote and log) and
//!   [`store::StateMachineStore`] (applies entries to [`state::State`] and to disk, snapshots).
//!
//! A write will travel: admin API → `Raft::client_write(Command)` → [`store::LogStore`] on a
//! quorum → [`store::StateMachineStore::apply`](openraft::storage::RaftStateMachine::apply) →
//! [`state::State::apply`] → the response and the new revision.
//! - [`config`] reads a node's `ControlPlaneConfig`; [`node`] starts Raft on the store;
//!   [`network`] carries Raft RPCs over HTTP/2; [`api`] serves peers and the admin API
//!   (`/v1/policies`, `/v1/cluster`), described by [`openapi`] at `/v1/openapi.json`;
//!   [`transfer`] hands leadership to another voter.
//! - [`registry`] serves agents' registrations, heartbeats and health reports; [`lease`] keeps
//!   their leases on the leader; [`identity`] gives a new cluster its identity; [`watch`]
//!   streams snapshots and deltas (from [`changes`]) to agents; [`wire`] holds the API's other
//!   bodies.

pub mod api;
pub mod changes;
pub mod cli;
pub mod config;
pub mod identity;
pub mod lease;
pub mod network;
pub mod node;
pub mod openapi;
pub mod raft;
pub mod registry;
pub mod state;
pub mod store;
pub mod transfer;
pub mod watch;
pub mod wire;

/// An error and its causes on one line, for logs and API messages: the shared helper of
/// `hyphae-policies`, kept at this path for the control plane's modules.
pub use hyphae_policies::error_chain;

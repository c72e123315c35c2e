//! hyphae's control plane and the `hyphae` operator CLI.
//!
//! - [`cli`]: the CLI's offline commands (`validate`, `schema`), sharing the policy crate's
//!   loader with every other part of hyphae.
//! - [`state`]: the replicated state (policies with revisions) and the [`state::Command`]s that
//!   change it; applying a command is a pure function.
//! - [`raft`]: the openraft type configuration built from those commands.
//! - [`store`]: durable Raft storage on one redb file: [`store::LogStore`] (vote and log) and
//!   [`store::StateMachineStore`] (applies entries to [`state::State`] and to disk, snapshots).
//!
//! A write will travel: admin API → `Raft::client_write(Command)` → [`store::LogStore`] on a
//! quorum → [`store::StateMachineStore::apply`](openraft::storage::RaftStateMachine::apply) →
//! [`state::State::apply`] → the response and the new revision. The Raft network, admin API and
//! watch streams land here next.

pub mod cli;
pub mod raft;
pub mod state;
pub mod store;

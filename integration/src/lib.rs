//! hyphae's test-support library, shared by every crate's tests and by `cargo xtask`, and home
//! of the multi-process tests (`tests/`). It never links the agent or the control plane: it
//! runs their binaries, whose paths callers pass in (`env!("CARGO_BIN_EXE_…")` or
//! [`binaries::workspace_binary`]).
//!
//! - [`process`]: a child in its own process group, signalled through rustix, stopped
//!   (SIGTERM, then SIGKILL) or killed on drop; its ready line (the first line on stdout, where
//!   binaries report their bound ports). [`command`]: a short-lived command that must succeed.
//! - [`agent`] starts a `hyphae-agent` from a config; [`cluster`] starts N
//!   `hyphae-control-plane` nodes and finds the leader they agree on; [`lone_node`] writes the
//!   files of one node a test starts by hand.
//! - [`backend`]: an in-process HTTP service with fault knobs for the agents to proxy to;
//!   [`mesh`]: the configs of the small meshes data-path tests build around it, and the two
//!   ways to one instance that fidelity tests compare with a direct call.
//! - [`python`]: real peers written in Python (hypercorn, grpcio, websockets) that tests
//!   start from a script.
//! - [`http`]: the small HTTP client tests talk to all of them with; [`dns`]: a stub
//!   resolver that asks an agent's DNS server.
//! - [`credentials`]: the admin token clusters started here are bootstrapped with; [`trust`]:
//!   their roots and join tokens, by node address.
//! - [`cli`] runs the `hyphae` CLI against a node; [`policies`] holds the documents tests
//!   write there and reads back what a node holds.
//! - [`systemd`]: a stand-in notify socket for the systemd tests; [`tmpfs`]: a small disk
//!   that fills up, for tests of a failing store.
//! - [`netns`]: hosts in network namespaces joined by a bridge, for tests of several hosts on
//!   one machine (their processes run through `ip netns exec`).
//! - [`eventually`]: polling with a deadline (never a sleep to wait for a state).
//! - [`ports`]: ports chosen ahead, only for addresses a config must name before any process
//!   starts; everything else binds port 0 and reads the ready line.
//! - `tests/tidy.rs` holds the style rules every file follows.

pub mod agent;
pub mod backend;
pub mod binaries;
pub mod cli;
pub mod cluster;
pub mod command;
pub mod credentials;
pub mod dns;
pub mod error;
pub mod eventually;
pub mod http;
pub mod lone_node;
pub mod mesh;
pub mod netns;
pub mod policies;
pub mod ports;
pub mod process;
pub mod python;
pub mod systemd;
pub mod tmpfs;
pub mod trust;

pub use error::Error;
pub use eventually::{DEADLINE, eventually};
pub use process::{Process, Signal};

//! hyphae-agent: the per-host half of the mesh.
//!
//! Today the crate reads and checks the agent's own configuration ([`config`]); the data path
//! (outbound listeners → route → balancer → endpoint → peer agent) is built on top of it next.

pub mod config;

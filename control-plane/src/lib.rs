//! hyphae's control plane and the `hyphae` operator CLI.
//!
//! Today the crate holds the CLI's offline commands ([`cli`]): `validate` and `schema`, which
//! share the policy crate's loader with every other part of hyphae. The Raft store, admin API
//! and watch streams land here next.

pub mod cli;

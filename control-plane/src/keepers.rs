//! Background work a node runs beside its port, each a loop over a started [`crate::node::Node`]
//! until shutdown: nothing here serves requests.
//!
//! - [`lease_expiry`]: expires agents whose lease lapsed, while this node leads.
//! - [`cluster_identity`]: gives a new cluster its identity, once.

pub mod cluster_identity;
pub mod lease_expiry;

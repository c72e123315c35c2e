//! hyphae's policy language: the YAML documents operators write, and the checks that tell them
//! exactly where and why a document is wrong before it reaches a running system.
//!
//! Data flows through the crate like this:
//! - [`load`] reads files (bounded by [`limits`]) and splits them into documents;
//! - [`tree`] parses each document into nodes that remember their line and column;
//! - [`tree_de`] turns nodes into typed objects ([`object`] and one module per kind),
//!   tracking the field path of every type error;
//! - [`validate`] applies the rules types cannot express, per object and across the set;
//! - [`diagnostic`] ties each problem to `file:line:col` and renders it compiler-style.
//!
//! [`schema`] generates JSON Schema from the same types; [`duration`] and [`suggest`] are
//! small helpers. [`error_chain`] is shared by every crate of the workspace: it shows an error
//! with its causes on one line; so are [`tls`], [`lingering_close`], how every port closes an
//! HTTP/1.1 connection, and [`source_counts`], how a port caps what one address holds.

pub mod access_policy;
pub mod agent_config;
pub mod control_plane_config;
pub mod diagnostic;
pub mod duration;
pub mod error_chain;
pub mod external_service;
pub mod limits;
pub mod lingering_close;
pub mod load;
pub mod object;
pub mod protocol;
pub mod registry;
pub mod route;
pub mod schema;
pub mod secret_file;
pub mod service_policy;
pub mod source_counts;
pub mod suggest;
pub mod tls;
pub mod tree;
pub mod tree_de;
pub mod validate;
pub mod virtual_ip;
pub mod watch;

#[cfg(test)]
mod roundtrip_tests;

pub use access_policy::{AccessPolicySpec, AccessRule, Action, Identity};
pub use agent_config::{
    AgentConfigSpec, AgentJoin, AgentLimits, DnsSettings, HealthCheck, Listeners, LocalService,
    StaticEndpoint, StaticService, Upstream,
};
pub use control_plane_config::{
    CertificatesConfig, ControlPlaneConfigSpec, ControlPlaneLimits, Member,
};
pub use diagnostic::{Diagnostic, FieldPath, Issue, Severity};
pub use duration::Duration;
pub use error_chain::{ErrorChain, error_chain};
pub use external_service::{ExternalPort, ExternalServiceSpec, ExternalTls};
pub use limits::ParseLimits;
pub use load::{LoadOptions, LoadedObject, Loader, Report, load_paths, load_str};
pub use object::{Kind, Metadata, Object, Policy};
pub use protocol::Protocol;
pub use route::{
    Backend, HeaderMatch, HeaderRewrite, HttpMatch, PathMatch, RouteRule, RouteSpec, RouteTimeouts,
};
pub use service_policy::{
    Backoff, BalancePolicy, CircuitBreaker, FailureRate, GrpcCode, LoadBalancer, Locality,
    MAX_RETRY_ATTEMPTS, OutlierDetection, RetryBudget, RetryOn, RetryPolicy, ServicePolicySpec,
    Timeouts,
};
pub use validate::Completeness;
pub use virtual_ip::VirtualIpRange;

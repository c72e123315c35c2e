//! The envelope every policy document shares (`kind`, `metadata`, `spec`) and the set of kinds.
//! Adding a kind means adding it here and nowhere else in the loader.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    AccessPolicySpec, AgentConfigSpec, ControlPlaneConfigSpec, ExternalServiceSpec, RouteSpec,
    ServicePolicySpec,
};

/// Identifies an object within its kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// Lower-case DNS label (`[a-z0-9-]`, at most 63 characters). For `ServicePolicy` it is the
    /// service's name; for `AgentConfig` the node's.
    pub name: String,
    /// Free-form labels for operators' own bookkeeping; hyphae does not interpret them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A policy object: `spec` typed by its kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Object<S> {
    /// Name and labels.
    pub metadata: Metadata,
    /// What the object asks for.
    pub spec: S,
}

/// Any policy document, tagged by `kind`.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(tag = "kind")]
pub enum Policy {
    /// Timeouts, retries, circuit breaking and load balancing for calls to one service.
    ServicePolicy(Object<ServicePolicySpec>),
    /// HTTP matches that send a service's traffic to weighted backends.
    Route(Object<RouteSpec>),
    /// Which identities may call a service.
    AccessPolicy(Object<AccessPolicySpec>),
    /// A destination outside the mesh that policies also apply to.
    ExternalService(Object<ExternalServiceSpec>),
    /// An agent's own local configuration file.
    // Boxed: by far the largest kind and one per agent, so the others need not be as large.
    AgentConfig(Box<Object<AgentConfigSpec>>),
    /// A control-plane node's own local configuration file.
    ControlPlaneConfig(Object<ControlPlaneConfigSpec>),
}

/// The kinds, by the name written in `kind:`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `ServicePolicy`
    ServicePolicy,
    /// `Route`
    Route,
    /// `AccessPolicy`
    AccessPolicy,
    /// `ExternalService`
    ExternalService,
    /// `AgentConfig`
    AgentConfig,
    /// `ControlPlaneConfig`
    ControlPlaneConfig,
}

impl Kind {
    /// Every kind, in documentation order.
    pub const ALL: [Kind; 6] = [
        Kind::ServicePolicy,
        Kind::Route,
        Kind::AccessPolicy,
        Kind::ExternalService,
        Kind::AgentConfig,
        Kind::ControlPlaneConfig,
    ];

    /// The name written in `kind:`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::ServicePolicy => "ServicePolicy",
            Kind::Route => "Route",
            Kind::AccessPolicy => "AccessPolicy",
            Kind::ExternalService => "ExternalService",
            Kind::AgentConfig => "AgentConfig",
            Kind::ControlPlaneConfig => "ControlPlaneConfig",
        }
    }

    /// The kind with this exact name.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// True for a node's own configuration file (`AgentConfig`, `ControlPlaneConfig`): read
    /// from local disk by that node, never stored in or applied to the control plane.
    pub fn is_local_config(self) -> bool {
        matches!(self, Kind::AgentConfig | Kind::ControlPlaneConfig)
    }

    /// Every kind's name, for "expected one of" messages.
    pub fn names() -> [&'static str; 6] {
        Kind::ALL.map(Kind::name)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Policy {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Policy::ServicePolicy(_) => Kind::ServicePolicy,
            Policy::Route(_) => Kind::Route,
            Policy::AccessPolicy(_) => Kind::AccessPolicy,
            Policy::ExternalService(_) => Kind::ExternalService,
            Policy::AgentConfig(_) => Kind::AgentConfig,
            Policy::ControlPlaneConfig(_) => Kind::ControlPlaneConfig,
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &Metadata {
        match self {
            Policy::ServicePolicy(o) => &o.metadata,
            Policy::Route(o) => &o.metadata,
            Policy::AccessPolicy(o) => &o.metadata,
            Policy::ExternalService(o) => &o.metadata,
            Policy::AgentConfig(o) => &o.metadata,
            Policy::ControlPlaneConfig(o) => &o.metadata,
        }
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        &self.metadata().name
    }
}

//! `ExternalService`: a destination outside the mesh (a DNS name or fixed addresses) that gets
//! the same timeouts, retries and access rules as a mesh service.

use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Protocol;

/// Spec of an `ExternalService`: exactly one of `host` and `addresses`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExternalServiceSpec {
    /// DNS name, resolved by the agent through the host's resolvers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Fixed IP addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpAddr>,
    /// Ports served, with their protocol.
    pub ports: Vec<ExternalPort>,
}

/// A port of an external service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExternalPort {
    /// Port number, 1–65535.
    pub port: u16,
    /// Protocol spoken. Default `tcp`.
    #[serde(default = "tcp")]
    pub protocol: Protocol,
}

fn tcp() -> Protocol {
    Protocol::Tcp
}

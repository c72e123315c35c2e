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
    /// Set to have the agent speak TLS to the service (an app sends plain HTTP to
    /// `<name>.mesh`; the agent originates HTTPS). Unset: the agent sends what the app sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ExternalTls>,
}

/// How the agent originates TLS to an external service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExternalTls {
    /// The name to ask for (SNI) and to check the service's certificate against. Default:
    /// `host`; required with `addresses`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// PEM file of the roots that sign the service's certificate, on every agent's host.
    /// Default: the host's system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
}

impl ExternalServiceSpec {
    /// The name the agent asks for and checks in TLS: `tls.serverName`, else `host`.
    pub fn tls_server_name(&self) -> Option<&str> {
        let tls = self.tls.as_ref()?;
        tls.server_name.as_deref().or(self.host.as_deref())
    }
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

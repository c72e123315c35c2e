//! The application protocol a port speaks, which decides how the agent proxies it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Protocol of a service port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1, or HTTP/2 with prior knowledge when the client speaks it (detected).
    #[default]
    Http,
    /// HTTP/2 only (prior knowledge).
    Http2,
    /// gRPC over HTTP/2: `grpc-status` drives retries.
    Grpc,
    /// Opaque TCP: bytes are carried, not parsed.
    Tcp,
    /// TLS the application originates itself, carried as opaque TCP.
    Tls,
}

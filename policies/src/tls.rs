//! TLS for every hyphae port: rustls on ring, TLS 1.3 only (decision 36). A peer is known by
//! the SPIFFE IDs in its certificate ([`spiffe`]), checked against the cluster's roots
//! ([`roots`]); what a client expects of a server travels in the TLS server name
//! ([`server_identity`]), since our certificates carry no DNS names. A host's own certificate
//! ([`credentials`]) can be replaced while connections run, so renewal drops nothing.
//!
//! - [`config`]: server and client configurations; [`verifier`]: how a client checks a server
//!   (or pins a root it knows only by fingerprint).
//! - [`connector`]: TLS connections for hyper's client; [`join`]: a host's first call, with
//!   a join token and a pinned root; [`files`]: where a host keeps its certificate.

pub mod config;
pub mod connector;
pub mod credentials;
pub mod files;
pub mod join;
pub mod roots;
pub mod server_identity;
pub mod spiffe;
pub mod verifier;

pub use self::config::{
    ALPN_H2, ALPN_HTTP, client_config, client_config_verified_by, server_config,
};
pub use self::connector::{TlsConnection, TlsConnector};
pub use self::credentials::Credentials;
pub use self::roots::{
    CLOCK_SKEW, MAX_RENEWAL_CHECK_INTERVAL, TlsError, Trust, certificates, fingerprint, provider,
    renewal_check_interval, signed_by,
};
pub use self::server_identity::ServerIdentity;
pub use self::spiffe::{Kind, SpiffeId, identities};
pub use self::verifier::ServerVerifier;

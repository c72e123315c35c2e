//! hyphae-agent: the per-host half of the mesh.
//!
//! A call from a local app takes this path through the crate:
//! - [`proxy::outbound`] accepts it on an upstream port, the HTTP proxy port, or a service's
//!   virtual IP ([`virtual_listeners`] keeps those in step with the snapshot);
//! - [`proxy::call`] picks the destination with [`route`], enforces the per-service limit
//!   ([`circuit`]) and makes tries, retrying as [`retry`] allows with the body kept by
//!   [`replay`]; byte streams (TCP, upgrades, CONNECT) open through [`proxy::stream`] and are
//!   spliced by [`proxy::pipe`];
//! - for each try or stream, [`proxy::endpoint`] chooses an endpoint with [`balance`] (skipping
//!   those [`circuit`] ejected), sends over [`tunnel`] (pooled HTTP/2 connections to each
//!   peer agent) and records the outcome;
//! - on the peer host, [`proxy::inbound`] delivers it to the local instance.
//!
//! [`model`] is the immutable snapshot the path serves, merged by [`sources`] from the local
//! [`config`] and the control plane ([`watch`], saved to disk by [`persist`]); [`register`]
//! keeps this node in the control plane's registry with the results of [`health`] checks; both
//! reach the control plane through one [`control_plane_client`]. [`dev`] embeds a one-node
//! control plane for `--dev` (cargo feature `dev`; the only module that links the control-plane
//! crate, and only the `hyphae-agent-dev` binary uses it). [`cli`] is both binaries' command
//! line. [`state`] holds the live load and health that outlive snapshots, [`error`] the table
//! of failures and their answers. [`daemon`] binds listeners ([`listener`]), owns every task and
//! drains them; [`admin`] and [`metrics`] show what is going on. [`dns`] answers the mesh zone
//! (`<service>.mesh`, the service's virtual IP) and forwards other names to the host's resolvers.

pub mod admin;
pub mod authz;
pub mod balance;
pub mod body;
pub mod body_inbox;
pub mod circuit;
pub mod cli;
pub mod config;
pub mod control_plane_client;
pub mod daemon;
pub mod dev;
pub mod dns;
pub mod error;
pub mod external_names;
pub mod header_room;
pub mod health;
pub mod http1;
pub mod http2;
pub mod identity;
pub mod idle_timer;
pub mod listener;
pub mod metrics;
pub mod model;
pub mod persist;
pub mod proxy;
pub mod register;
pub mod replay;
pub mod retry;
pub mod route;
pub mod send_timeout;
pub mod socket_send;
pub mod sources;
pub mod state;
pub mod time_limit;
pub mod tunnel;
pub mod uplink;
pub mod virtual_listeners;
pub mod watch;
pub mod watched_body;
pub mod write_behind;
pub mod write_coalescing;

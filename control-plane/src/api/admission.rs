//! Which new connections the port takes: at most `maxConnections` from everyone, at most
//! `maxConnectionsPerSource` from one address, and beyond either cap
//! `reservedMemberConnections` kept for the cluster's members, so a crowd of clients cannot
//! cut Raft off (a connection on a reserved place must prove a member's certificate at the
//! handshake, which [`Admitted::reserved`] tells the caller to check).

use std::net::IpAddr;
use std::sync::Arc;

use hyphae_policies::ControlPlaneLimits;
use hyphae_policies::source_counts::{SourceCounts, SourcePlace};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The port's places.
pub struct Admission {
    open: Arc<Semaphore>,
    reserved: Arc<Semaphore>,
    per_source: Arc<SourceCounts>,
}

/// A connection's place, given back when it drops.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    _source: SourcePlace,
    /// Taken from the members' reserve: the connection must prove a member's certificate.
    pub reserved: bool,
}

/// Why a connection was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// Its source address has `maxConnectionsPerSource` open.
    Source,
    /// Every place, reserved ones included, is taken.
    Port,
}

impl Admission {
    /// The places `limits` allow.
    pub fn new(limits: &ControlPlaneLimits) -> Admission {
        Admission {
            open: Arc::new(Semaphore::new(limits.max_connections as usize)),
            reserved: Arc::new(Semaphore::new(limits.reserved_member_connections as usize)),
            per_source: SourceCounts::new(limits.max_connections_per_source),
        }
    }

    /// A place for a new connection from `source`, if there is one.
    pub fn admit(&self, source: IpAddr) -> Result<Admitted, Full> {
        // A source at its cap may still take a member's place: a member may share an address
        // with many clients (behind NAT, or on one host with them).
        let (place, source_full) = self.per_source.count(source);
        let general = if source_full {
            None
        } else {
            Arc::clone(&self.open).try_acquire_owned().ok()
        };
        let (permit, reserved) = match general {
            Some(permit) => (permit, false),
            None => match Arc::clone(&self.reserved).try_acquire_owned() {
                Ok(permit) => (permit, true),
                Err(_) if source_full => return Err(Full::Source),
                Err(_) => return Err(Full::Port),
            },
        };
        Ok(Admitted {
            _permit: permit,
            _source: place,
            reserved,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beyond_either_cap_only_members_places_remain() {
        let limits = ControlPlaneLimits {
            max_connections: 3,
            reserved_member_connections: 1,
            max_connections_per_source: 2,
            ..ControlPlaneLimits::default()
        };
        let admission = Admission::new(&limits);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = admission.admit(a).expect("a place");
        let a2 = admission.admit(a).expect("a place");
        assert!(!a1.reserved && !a2.reserved);
        let a3 = admission
            .admit(a)
            .expect("a member's place, the source at its cap");
        assert!(a3.reserved, "which must prove a member's certificate");
        assert_eq!(admission.admit(a).err(), Some(Full::Source));
        let b1 = admission.admit(b).expect("the last place");
        assert!(!b1.reserved);
        assert_eq!(admission.admit(b).err(), Some(Full::Port));
        drop(a3);
        assert!(
            admission
                .admit(b)
                .expect("the member's place again")
                .reserved
        );
        drop((a1, a2, b1));
        assert!(!admission.admit(a).expect("places freed").reserved);
    }
}

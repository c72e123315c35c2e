//! Loopback ports chosen before any process starts, for the one case that needs them: a
//! config that must name another process's address (the members of a Raft cluster). Anything
//! that can bind port 0 and report its address in its ready line must do that instead: a port
//! chosen here is released before its user binds it, and another process may take it first.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use crate::Error;

/// `count` distinct free ports on 127.0.0.1. All are held until the last is chosen, so they
/// differ from each other; then all are released for their users to bind.
pub fn free_ports(count: usize) -> Result<Vec<u16>, Error> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(Error::Port)?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(Error::Port)
}

/// One free address on 127.0.0.1 (see [`free_ports`]).
pub fn free_address() -> Result<SocketAddr, Error> {
    let port = free_ports(1)?[0];
    Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_free_again() {
        // Other tests of this binary bind ephemeral ports meanwhile and may take a released
        // one first (the race this module's header warns about): a few draws, one must come
        // back whole.
        let released = (0..5).any(|_| {
            let ports = free_ports(5).expect("ports");
            let mut distinct = ports.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), 5, "{ports:?}");
            ports
                .iter()
                .all(|port| TcpListener::bind(("127.0.0.1", *port)).is_ok())
        });
        assert!(
            released,
            "the chosen ports were still held after free_ports returned"
        );
    }
}

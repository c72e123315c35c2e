//! What the node refused, counted by reason for `GET /v1/metrics` (Prometheus text): every
//! refusal is also one log line where it happens; the counters let an operator alert on them.
//! One set per process (a process runs one node).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a request or connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A TLS handshake failed (plaintext, a certificate of another root, an expired one).
    Handshake,
    /// A connection beyond the port's caps (overall, per source, or a member's reserved
    /// place taken by another client).
    Connection,
    /// A peer RPC without a current member's certificate, or a transfer RPC not from the
    /// leader.
    PeerRpc,
    /// An agent route without a node certificate, or for another node than the certificate's.
    Agent,
    /// An admin route without a valid token or certificate (401), or with too low a role (403).
    Admin,
    /// A join with a token that is unknown, used up, expired, revoked or for another site.
    Join,
}

const REASONS: [(Refusal, &str); 6] = [
    (Refusal::Handshake, "tls-handshake"),
    (Refusal::Connection, "connection-limit"),
    (Refusal::PeerRpc, "peer-rpc"),
    (Refusal::Agent, "agent"),
    (Refusal::Admin, "admin"),
    (Refusal::Join, "join"),
];

static COUNTS: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];

/// Counts one refusal for `reason`.
pub fn count(reason: Refusal) {
    if let Some(index) = REASONS.iter().position(|(r, _)| *r == reason) {
        COUNTS[index].fetch_add(1, Ordering::Relaxed);
    }
}

/// How many refusals for `reason` so far.
pub fn total(reason: Refusal) -> u64 {
    REASONS
        .iter()
        .position(|(r, _)| *r == reason)
        .map_or(0, |index| COUNTS[index].load(Ordering::Relaxed))
}

/// The counters in Prometheus' text format.
pub fn render() -> String {
    let mut text = String::from(
        "# HELP hyphae_control_plane_refused_total Requests and connections the node refused, by reason.\n# TYPE hyphae_control_plane_refused_total counter\n",
    );
    for (reason, name) in REASONS {
        let _ = writeln!(
            text,
            "hyphae_control_plane_refused_total{{reason=\"{name}\"}} {}",
            total(reason)
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_counts_on_its_own_line() {
        let before = total(Refusal::Join);
        count(Refusal::Join);
        assert_eq!(total(Refusal::Join), before + 1);
        let page = render();
        assert!(page.contains(&format!(
            "hyphae_control_plane_refused_total{{reason=\"join\"}} {}",
            before + 1
        )));
        assert_eq!(page.lines().count(), 2 + REASONS.len());
    }
}

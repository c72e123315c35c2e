//! The DNS server's Prometheus metrics: names, help texts and recording helpers. Labels are
//! bounded: zone (`mesh`, `forward`), response code names, transport, refusal reason.

use hickory_proto::op::ResponseCode;
use metrics::{counter, describe_counter};

/// Queries answered, by zone (`mesh` or `forward`) and response code.
pub const QUERIES: &str = "hyphae_dns_queries_total";
/// Packets dropped because they were not DNS queries, by transport.
pub const MALFORMED: &str = "hyphae_dns_malformed_total";
/// Queries refused to keep the server within its bounds, by reason.
pub const REFUSED: &str = "hyphae_dns_refused_total";
/// UDP answers sent truncated (TC bit) because they did not fit.
pub const TRUNCATED: &str = "hyphae_dns_truncated_total";

/// Describes every DNS metric; called by [`crate::metrics::install`].
pub fn describe() {
    describe_counter!(
        QUERIES,
        "DNS queries answered, by zone (mesh: answered by the agent; forward: by an upstream) and response code."
    );
    describe_counter!(
        MALFORMED,
        "Packets to the DNS port dropped unanswered because they were not DNS queries, by transport."
    );
    describe_counter!(
        REFUSED,
        "DNS queries refused (REFUSED) to stay within dns.* bounds, by reason: rate_limit, source_rate_limit, forward_limit."
    );
    describe_counter!(
        TRUNCATED,
        "DNS answers too large for UDP, sent with the TC bit so the client asks over TCP."
    );
}

/// Where an answer came from, the `zone` label of [`QUERIES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Zone {
    /// The mesh zone, answered by the agent.
    Mesh,
    /// Any other name, forwarded.
    Forward,
}

impl Zone {
    fn label(self) -> &'static str {
        match self {
            Zone::Mesh => "mesh",
            Zone::Forward => "forward",
        }
    }
}

/// Why a query was refused, the `reason` label of [`REFUSED`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Over `dns.maxQueriesPerSecond`.
    Rate,
    /// Over `dns.maxQueriesPerSecondPerSource`.
    SourceRate,
    /// `dns.maxInFlightForwards` queries were already waiting for an upstream.
    InFlightForwards,
}

/// Records an answered query.
pub(crate) fn query(zone: Zone, code: ResponseCode) {
    counter!(QUERIES, "zone" => zone.label(), "rcode" => rcode_label(code)).increment(1);
}

/// Records a dropped packet; `transport` is `udp` or `tcp`.
pub(crate) fn malformed(transport: &'static str) {
    counter!(MALFORMED, "transport" => transport).increment(1);
}

/// Records a refusal.
pub(crate) fn refused(reason: Refusal) {
    let reason = match reason {
        Refusal::Rate => "rate_limit",
        Refusal::SourceRate => "source_rate_limit",
        Refusal::InFlightForwards => "forward_limit",
    };
    counter!(REFUSED, "reason" => reason).increment(1);
}

/// Records a truncated UDP answer.
pub(crate) fn truncated() {
    counter!(TRUNCATED).increment(1);
}

/// The response code's mnemonic (RFC 6895); codes without one share `other`, so the label set
/// stays bounded whatever an upstream sends.
fn rcode_label(code: ResponseCode) -> &'static str {
    match code {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        _ => "other",
    }
}

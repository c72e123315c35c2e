//! One query's way through the server, whatever the transport: parse, rate limits, then the
//! mesh zone or the forwarder, then an encoding that fits the transport. Never panics on what
//! a client sends; a packet that is not a query is dropped and counted.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};
use hyphae_policies::DnsSettings;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::watch;
use tokio::time::Instant;

use super::forward::Forwarder;
use super::limits::{RateLimit, Verdict};
use super::metrics::{self, Refusal, Zone};
use super::wire;
use super::zone::{Answer, Authority, MeshZone};

/// How a query arrived, which decides how large its answer may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    /// A datagram: answers above the client's and the agent's limit are truncated.
    Udp,
    /// A TCP connection: answers up to 64 KiB.
    Tcp,
}

impl Transport {
    fn label(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// What to do with a packet.
pub(crate) enum Step {
    /// Nothing: it was not a query (counted).
    Drop,
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Ask an upstream first ([`Handler::forward`]), which may take a while.
    Forward(Forwarding),
}

/// A query on its way to an upstream, holding its slot among `dns.maxInFlightForwards`.
pub(crate) struct Forwarding {
    request: Message,
    transport: Transport,
    slot: OwnedSemaphorePermit,
}

/// Everything a query needs: the zone, the limits and the forwarder. Shared by the transports.
pub(crate) struct Handler {
    zone: watch::Receiver<Arc<MeshZone>>,
    authority: Authority,
    limits: RateLimit,
    forwarder: Forwarder,
    max_udp_response_bytes: u16,
}

impl Handler {
    /// A handler answering `authority`'s zone from `zone`'s newest value and forwarding the rest.
    pub(crate) fn new(
        settings: &DnsSettings,
        zone: watch::Receiver<Arc<MeshZone>>,
        authority: Authority,
        forwarder: Forwarder,
    ) -> Handler {
        Handler {
            zone,
            authority,
            limits: RateLimit::new(
                settings.max_queries_per_second,
                settings.max_queries_per_second_per_source,
                Instant::now(),
            ),
            forwarder,
            max_udp_response_bytes: settings.max_udp_response_bytes,
        }
    }

    /// Decides what `packet` from `source` gets. Everything but forwarding is answered here,
    /// at once.
    pub(crate) fn step(&self, packet: &[u8], source: IpAddr, transport: Transport) -> Step {
        let request = match wire::decode(packet) {
            Ok(request) => request,
            Err(wire::Malformed::Body { header, error }) => {
                metrics::malformed(transport.label());
                tracing::debug!(%source, %error, transport = transport.label(), "answered FORMERR to a query that does not decode");
                return match self.limits.check(source, Instant::now()) {
                    Verdict::Allowed => {
                        self.reply(&header, transport, Zone::Mesh, code(ResponseCode::FormErr))
                    }
                    Verdict::OverGlobal | Verdict::OverSource => Step::Drop,
                };
            }
            Err(error) => {
                metrics::malformed(transport.label());
                tracing::debug!(%source, %error, transport = transport.label(), "dropped a packet that is not a DNS query");
                return Step::Drop;
            }
        };
        let in_mesh = request
            .queries
            .first()
            .is_none_or(|query| self.authority.contains(query.name()));
        let zone = if in_mesh { Zone::Mesh } else { Zone::Forward };
        let refuse = |reason| {
            metrics::refused(reason);
            self.reply(&request, transport, zone, code(ResponseCode::Refused))
        };
        match self.limits.check(source, Instant::now()) {
            Verdict::Allowed => {}
            Verdict::OverGlobal => return refuse(Refusal::Rate),
            Verdict::OverSource => return refuse(Refusal::SourceRate),
        }
        if request.edns.as_ref().is_some_and(|edns| edns.version() > 0) {
            // RFC 6891 §6.1.3: only EDNS version 0 exists; the client falls back to it.
            return self.reply(&request, transport, zone, code(ResponseCode::BADVERS));
        }
        if request.metadata.op_code != OpCode::Query {
            return self.reply(&request, transport, zone, code(ResponseCode::NotImp));
        }
        let [query] = request.queries.as_slice() else {
            // No resolver asks several questions at once; RFC 9619 says FORMERR.
            return self.reply(&request, transport, zone, code(ResponseCode::FormErr));
        };
        if query.query_class() != DNSClass::IN {
            return self.reply(&request, transport, zone, code(ResponseCode::Refused));
        }
        // Zone transfers answer for a whole zone, not a name: the mesh zone is not handed out
        // (it lists every service), and a stub forwarder has no zone to give.
        if matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR) {
            return self.reply(&request, transport, zone, code(ResponseCode::Refused));
        }
        if in_mesh {
            let mesh = Arc::clone(&self.zone.borrow());
            let answer = self.authority.answer(&mesh, query);
            return self.reply(&request, transport, zone, answer);
        }
        match self.forwarder.start() {
            Some(slot) => Step::Forward(Forwarding {
                request,
                transport,
                slot,
            }),
            None if self.forwarder.upstreams().is_empty() => {
                self.reply(&request, transport, zone, code(ResponseCode::Refused))
            }
            None => refuse(Refusal::InFlightForwards),
        }
    }

    /// Asks the upstreams and encodes what they said; `None` only if it cannot be encoded.
    pub(crate) async fn forward(&self, forwarding: Forwarding) -> Option<Vec<u8>> {
        let Forwarding {
            request,
            transport,
            slot,
        } = forwarding;
        let query = request.queries.first()?;
        let answer = self.forwarder.forward(query, slot).await;
        match self.reply(&request, transport, Zone::Forward, answer) {
            Step::Reply(bytes) => Some(bytes),
            Step::Drop | Step::Forward(_) => None,
        }
    }

    /// The encoded response to `request` carrying `answer`, counted.
    fn reply(&self, request: &Message, transport: Transport, zone: Zone, answer: Answer) -> Step {
        let mut response = wire::response_to(request, self.max_udp_response_bytes);
        response.metadata.response_code = answer.code;
        // Only an answer about the zone's data is authoritative: a refusal, a query we could
        // not read, an opcode or EDNS version we do not serve say nothing about it (BIND and
        // Knot leave AA clear on all of them).
        response.metadata.authoritative = zone == Zone::Mesh
            && matches!(answer.code, ResponseCode::NoError | ResponseCode::NXDomain);
        response.metadata.recursion_available = !self.forwarder.upstreams().is_empty();
        response.insert_answers(answer.answers);
        response.insert_authorities(answer.authorities);
        response.insert_additionals(answer.additionals);
        let limit = match transport {
            Transport::Udp => wire::udp_limit(request, self.max_udp_response_bytes),
            Transport::Tcp => wire::MAX_TCP_MESSAGE_BYTES,
        };
        let encoded = wire::encode(&response, limit)
            .map(|(bytes, truncated)| (bytes, truncated, answer.code))
            .or_else(|error| {
                tracing::warn!(%error, "cannot encode a DNS answer; answering SERVFAIL");
                let mut failure = wire::response_to(request, self.max_udp_response_bytes);
                failure.metadata.response_code = ResponseCode::ServFail;
                wire::encode(&failure, limit)
                    .map(|(bytes, truncated)| (bytes, truncated, ResponseCode::ServFail))
            });
        match encoded {
            Ok((bytes, truncated, sent_code)) => {
                if truncated {
                    metrics::truncated();
                }
                metrics::query(zone, sent_code);
                Step::Reply(bytes)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot encode a DNS error answer either");
                Step::Drop
            }
        }
    }
}

fn code(code: ResponseCode) -> Answer {
    Answer {
        code,
        ..Answer::default()
    }
}

//! The mesh zone and its answers: which services have a name, and what a query for one gets.
//! Pure: no sockets, no clock; the server hands it a parsed query and sends what it returns.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use hickory_proto::op::{Query, ResponseCode};
use hickory_proto::rr::rdata::{A, NS, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hyphae_policies::Protocol;

/// One mesh name's answer: its stable virtual IP and the ports its instances listen on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshName {
    /// The service's virtual IP, the `A` record: the agent intercepts connections to it.
    pub address: Ipv4Addr,
    /// The service's ports, one `SRV` record each.
    pub ports: Vec<MeshPort>,
}

/// A port of a mesh service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeshPort {
    /// Port number, the `SRV` record's port.
    pub port: u16,
    /// What the port speaks (every protocol hyphae carries runs over TCP, so `_tcp` SRV names).
    pub protocol: Protocol,
}

/// Every name under the mesh zone, by service name (the label before the zone). Immutable: the
/// server reads the newest one from a watch channel at each query.
#[derive(Clone, Debug, Default)]
pub struct MeshZone {
    /// By lower-case service name: DNS names compare without case.
    names: BTreeMap<String, MeshName>,
}

impl MeshZone {
    /// A zone of `names`, keyed by service name (any case; queries are answered without case).
    pub fn new(names: impl IntoIterator<Item = (String, MeshName)>) -> Self {
        MeshZone {
            names: names
                .into_iter()
                .map(|(service, name)| (service.to_ascii_lowercase(), name))
                .collect(),
        }
    }

    /// The answer for `service`, compared without case.
    pub fn get(&self, service: &str) -> Option<&MeshName> {
        match self.names.get(service) {
            Some(name) => Some(name),
            None if service.bytes().any(|b| b.is_ascii_uppercase()) => {
                self.names.get(&service.to_ascii_lowercase())
            }
            None => None,
        }
    }

    /// How many services have a name.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no service has a name.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// SOA timers. Nothing transfers this zone (no secondaries), so only `minimum` matters, which
/// is the TTL setting; the others are the values RFC 1912 suggests, for tools that show them.
const SOA_REFRESH: i32 = 3_600;
/// See [`SOA_REFRESH`].
const SOA_RETRY: i32 = 600;
/// See [`SOA_REFRESH`].
const SOA_EXPIRE: i32 = 86_400;
/// The zone is rebuilt, never edited in place; its serial says nothing and stays 1.
const SOA_SERIAL: u32 = 1;
/// Every `SRV` record of a service is equal: the agent balances behind the virtual IP.
const SRV_PRIORITY: u16 = 0;
/// See [`SRV_PRIORITY`].
const SRV_WEIGHT: u16 = 1;

/// What the agent says about its zone: the apex and how long answers live.
#[derive(Clone, Debug)]
pub(crate) struct Authority {
    /// The zone's apex, lower case and fully qualified (`mesh.`).
    origin: Name,
    /// TTL of every record, and the SOA minimum (negative answers' TTL).
    ttl: u32,
    /// The agent's own address for the apex `A` record (the `NS` target's glue), when it
    /// listens on one IPv4 address rather than a wildcard.
    own_address: Option<Ipv4Addr>,
}

/// A complete answer to one query: response code and the records of each section.
#[derive(Debug, Default)]
pub(crate) struct Answer {
    /// `NOERROR` (with or without answers), `NXDOMAIN`...
    pub(crate) code: ResponseCode,
    /// Answer section.
    pub(crate) answers: Vec<Record>,
    /// Authority section (the SOA of a negative answer).
    pub(crate) authorities: Vec<Record>,
    /// Additional section (the `A` records of `SRV` targets).
    pub(crate) additionals: Vec<Record>,
}

impl Authority {
    /// The zone `zone` (`mesh`, or `mesh.` fully qualified), answering with `ttl` seconds.
    pub(crate) fn new(
        zone: &str,
        ttl: u32,
        own_address: Option<Ipv4Addr>,
    ) -> Result<Authority, hickory_proto::ProtoError> {
        let mut origin = Name::from_ascii(zone)?.to_lowercase();
        origin.set_fqdn(true);
        Ok(Authority {
            origin,
            ttl,
            own_address,
        })
    }

    /// Whether `name` is the apex or under it.
    pub(crate) fn contains(&self, name: &Name) -> bool {
        self.origin.zone_of(name)
    }

    /// The answer to `query`, whose name [`Authority::contains`], from `zone`.
    pub(crate) fn answer(&self, zone: &MeshZone, query: &Query) -> Answer {
        let name = query.name().to_lowercase();
        let relative = usize::from(name.num_labels().saturating_sub(self.origin.num_labels()));
        let labels: Vec<&[u8]> = name.iter().take(relative).collect();
        let qtype = query.query_type();
        match labels.as_slice() {
            [] => self.apex(qtype),
            [service] => match service_of(zone, service) {
                Some((service, mesh)) => self.service(&name, service, mesh, qtype, true),
                None => self.nxdomain(),
            },
            // RFC 2782 names: `_<anything>._tcp.<service>`; every port answers, whatever the
            // first label says (ports have no names in the mesh).
            [port, b"_tcp", service] if port.first() == Some(&b'_') => {
                match service_of(zone, service) {
                    Some((service, mesh)) => self.service(&name, service, mesh, qtype, false),
                    None => self.nxdomain(),
                }
            }
            // `_tcp.<service>` holds nothing but has the SRV names below it: an empty
            // non-terminal, which exists (NODATA with the SOA), or resolvers that take
            // NXDOMAIN as "nothing below" (RFC 8020) would deny every `_x._tcp` name under it.
            [b"_tcp", service] if service_of(zone, service).is_some() => Answer {
                authorities: vec![self.soa()],
                ..Answer::default()
            },
            _ => self.nxdomain(),
        }
    }

    /// The apex: its SOA and NS, and the agent's address as the NS target's `A` record.
    fn apex(&self, qtype: RecordType) -> Answer {
        let mut answer = Answer::default();
        if matches!(qtype, RecordType::SOA | RecordType::ANY) {
            answer.answers.push(self.soa());
        }
        if matches!(qtype, RecordType::NS | RecordType::ANY) {
            answer
                .answers
                .push(self.record(self.origin.clone(), RData::NS(NS(self.origin.clone()))));
            answer.additionals.extend(self.own_a());
        }
        if qtype == RecordType::A {
            answer.answers.extend(self.own_a());
        }
        if answer.answers.is_empty() {
            answer.authorities.push(self.soa());
        }
        answer
    }

    /// A service's name: `A` for its virtual IP, `SRV` for its ports (with the `A` record of
    /// the target in the additional section), nothing else (NODATA). `a_here` is false for the
    /// `_port._tcp` names, which hold only `SRV` records.
    fn service(
        &self,
        name: &Name,
        service: &str,
        mesh: &MeshName,
        qtype: RecordType,
        a_here: bool,
    ) -> Answer {
        let mut answer = Answer::default();
        let target = Name::from_labels([service.as_bytes()])
            .and_then(|label| label.append_domain(&self.origin));
        let address = |owner: Name| self.record(owner, RData::A(A(mesh.address)));
        match qtype {
            RecordType::A if a_here => answer.answers.push(address(name.clone())),
            RecordType::SRV | RecordType::ANY => {
                if let Ok(target) = target {
                    for port in &mesh.ports {
                        answer.answers.push(self.record(
                            name.clone(),
                            RData::SRV(SRV::new(
                                SRV_PRIORITY,
                                SRV_WEIGHT,
                                port.port,
                                target.clone(),
                            )),
                        ));
                    }
                    if !mesh.ports.is_empty() {
                        answer.additionals.push(address(target));
                    }
                }
                if qtype == RecordType::ANY && a_here {
                    answer.answers.push(address(name.clone()));
                }
            }
            _ => {}
        }
        if answer.answers.is_empty() {
            answer.authorities.push(self.soa());
        }
        answer
    }

    /// `NXDOMAIN` with the SOA, whose minimum is how long the absence may be cached.
    fn nxdomain(&self) -> Answer {
        Answer {
            code: ResponseCode::NXDomain,
            authorities: vec![self.soa()],
            ..Answer::default()
        }
    }

    fn soa(&self) -> Record {
        let hostmaster = Name::from_labels([&b"hostmaster"[..]])
            .and_then(|label| label.append_domain(&self.origin))
            .unwrap_or_else(|_| self.origin.clone());
        self.record(
            self.origin.clone(),
            RData::SOA(SOA::new(
                self.origin.clone(),
                hostmaster,
                SOA_SERIAL,
                SOA_REFRESH,
                SOA_RETRY,
                SOA_EXPIRE,
                self.ttl,
            )),
        )
    }

    fn own_a(&self) -> Option<Record> {
        let address = self.own_address?;
        Some(self.record(self.origin.clone(), RData::A(A(address))))
    }

    fn record(&self, name: Name, data: RData) -> Record {
        Record::from_rdata(name, self.ttl, data)
    }
}

/// The service a label names, if the zone has it; labels that are not UTF-8 name nothing.
fn service_of<'a>(zone: &'a MeshZone, label: &'a [u8]) -> Option<(&'a str, &'a MeshName)> {
    let service = std::str::from_utf8(label).ok()?;
    Some((service, zone.get(service)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> MeshZone {
        MeshZone::new([(
            "Payments".to_string(),
            MeshName {
                address: Ipv4Addr::new(10, 96, 0, 7),
                ports: vec![
                    MeshPort {
                        port: 8080,
                        protocol: Protocol::Http,
                    },
                    MeshPort {
                        port: 9090,
                        protocol: Protocol::Grpc,
                    },
                ],
            },
        )])
    }

    fn ask(name: &str, qtype: RecordType) -> Answer {
        let authority = Authority::new("mesh", 5, Some(Ipv4Addr::LOCALHOST)).unwrap();
        let name = Name::from_ascii(name).unwrap();
        assert!(authority.contains(&name));
        authority.answer(&zone(), &Query::query(name, qtype))
    }

    #[test]
    fn a_service_answers_its_address_in_any_case() {
        for name in ["payments.mesh.", "PayMents.MESH."] {
            let answer = ask(name, RecordType::A);
            assert_eq!(answer.code, ResponseCode::NoError);
            assert_eq!(
                answer.answers[0].data,
                RData::A(A(Ipv4Addr::new(10, 96, 0, 7)))
            );
            assert_eq!(answer.answers[0].ttl, 5);
        }
    }

    #[test]
    fn srv_names_list_every_port_with_the_target_address() {
        for name in [
            "payments.mesh.",
            "_http._tcp.payments.mesh.",
            "_x._tcp.payments.mesh.",
        ] {
            let answer = ask(name, RecordType::SRV);
            let ports: Vec<u16> = answer
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SRV(srv) => Some(srv.port),
                    _ => None,
                })
                .collect();
            assert_eq!(ports, [8080, 9090], "{name}");
            assert_eq!(answer.additionals.len(), 1);
            assert_eq!(answer.additionals[0].name.to_ascii(), "payments.mesh.");
        }
    }

    #[test]
    fn other_types_of_a_known_name_are_nodata_with_the_soa() {
        for (name, qtype) in [
            ("payments.mesh.", RecordType::AAAA),
            ("payments.mesh.", RecordType::TXT),
            ("_http._tcp.payments.mesh.", RecordType::A),
        ] {
            let answer = ask(name, qtype);
            assert_eq!(answer.code, ResponseCode::NoError);
            assert!(answer.answers.is_empty());
            assert_eq!(answer.authorities[0].record_type(), RecordType::SOA);
        }
    }

    #[test]
    fn unknown_names_are_nxdomain_with_the_soa() {
        for name in [
            "orders.mesh.",
            "_http._udp.payments.mesh.",
            "a.payments.mesh.",
            "http._tcp.payments.mesh.",
        ] {
            let answer = ask(name, RecordType::A);
            assert_eq!(answer.code, ResponseCode::NXDomain, "{name}");
            assert_eq!(answer.authorities[0].record_type(), RecordType::SOA);
        }
    }

    #[test]
    fn the_tcp_label_above_srv_names_exists_with_no_data() {
        for qtype in [RecordType::A, RecordType::SRV, RecordType::TXT] {
            let answer = ask("_tcp.payments.mesh.", qtype);
            assert_eq!(answer.code, ResponseCode::NoError, "{qtype}");
            assert!(answer.answers.is_empty(), "{qtype}");
            assert_eq!(answer.authorities[0].record_type(), RecordType::SOA);
        }
        assert_eq!(
            ask("_tcp.orders.mesh.", RecordType::A).code,
            ResponseCode::NXDomain,
            "no service, nothing below"
        );
    }

    #[test]
    fn the_apex_answers_soa_and_ns_with_the_agent_as_glue() {
        let soa = ask("mesh.", RecordType::SOA);
        assert_eq!(soa.answers[0].record_type(), RecordType::SOA);
        let ns = ask("mesh.", RecordType::NS);
        assert_eq!(ns.answers[0].record_type(), RecordType::NS);
        assert_eq!(ns.additionals[0].data, RData::A(A(Ipv4Addr::LOCALHOST)));
        let aaaa = ask("mesh.", RecordType::AAAA);
        assert!(aaaa.answers.is_empty());
        assert_eq!(aaaa.code, ResponseCode::NoError);
    }
}

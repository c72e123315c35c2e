//! The agent's DNS server over real sockets on loopback: mesh answers over UDP and TCP, zone
//! updates, forwarding to an in-process upstream (hickory-server) with its cache, and the
//! bounds (rate limits, truncation, malformed packets).

// Helpers outside `#[test]` functions set up fixtures; a failed setup should fail the test.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, SOA, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use hyphae_agent::dns::{DnsError, DnsServer, MeshName, MeshPort, MeshZone};
use hyphae_policies::{DnsSettings, Protocol};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Longest any exchange may take before the test fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(10);

const PAYMENTS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 7);
const ORDERS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 8);
const UPSTREAM_A: Ipv4Addr = Ipv4Addr::new(10, 200, 9, 9);

fn mesh_name(address: Ipv4Addr, ports: &[u16]) -> MeshName {
    MeshName {
        address,
        ports: ports
            .iter()
            .map(|&port| MeshPort {
                port,
                protocol: Protocol::Http,
            })
            .collect(),
    }
}

fn two_services() -> MeshZone {
    MeshZone::new([
        ("payments".to_string(), mesh_name(PAYMENTS, &[8080, 9090])),
        ("orders".to_string(), mesh_name(ORDERS, &[80])),
    ])
}

/// The process-wide recorder every test's counters land in. Each counter a test reads is
/// touched by that test alone, so tests running in parallel do not disturb each other.
fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .install_recorder()
            .expect("the only recorder of this test binary")
    })
}

/// The value of the series `series` (name and labels as rendered), 0 when absent.
fn counter(series: &str) -> u64 {
    recorder()
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// A running DNS server, stopped when dropped (a failing test stops it too).
struct Running {
    address: SocketAddr,
    zone: watch::Sender<Arc<MeshZone>>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), DnsError>>>,
}

impl Running {
    async fn start(settings: DnsSettings, zone: MeshZone) -> Running {
        recorder();
        let server = DnsServer::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let address = server.local_addr();
        let (zone, changes) = watch::channel(Arc::new(zone));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { server.run(&settings, changes, shutdown).await }
        });
        Running {
            address,
            zone,
            shutdown,
            task: Some(task),
        }
    }

    /// Stops the server and checks it ended cleanly.
    async fn stop(mut self) {
        self.shutdown.cancel();
        let task = self.task.take().unwrap();
        tokio::time::timeout(DEADLINE, task)
            .await
            .expect("the server stops within the deadline")
            .unwrap()
            .unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Settings that forward to `upstreams`, so no test depends on the host's resolv.conf.
fn settings(upstreams: Vec<SocketAddr>) -> DnsSettings {
    DnsSettings {
        upstreams,
        ..DnsSettings::default()
    }
}

/// An address nothing listens on, for servers whose tests never forward.
fn nowhere() -> Vec<SocketAddr> {
    vec!["127.0.0.1:9".parse().unwrap()]
}

fn query(name: &str, qtype: RecordType, edns_payload: Option<u16>) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(payload) = edns_payload {
        let mut edns = Edns::new();
        edns.set_max_payload(payload);
        message.set_edns(edns);
    }
    message
}

/// Sends `request` from `socket` and waits for the answer with its id.
async fn exchange_on(socket: &UdpSocket, server: SocketAddr, request: &Message) -> Message {
    socket
        .send_to(&request.to_vec().unwrap(), server)
        .await
        .unwrap();
    let mut buffer = vec![0; 65_535];
    loop {
        let (length, _) = tokio::time::timeout(DEADLINE, socket.recv_from(&mut buffer))
            .await
            .expect("an answer within the deadline")
            .unwrap();
        let answer = Message::from_vec(&buffer[..length]).unwrap();
        if answer.metadata.id == request.metadata.id {
            return answer;
        }
    }
}

async fn udp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    exchange_on(&socket, server, &query(name, qtype, None)).await
}

async fn tcp_exchange(stream: &mut TcpStream, request: &Message) -> Message {
    let bytes = request.to_vec().unwrap();
    let mut frame = u16::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(&bytes);
    stream.write_all(&frame).await.unwrap();
    let answer = async {
        let length = stream.read_u16().await.unwrap();
        let mut answer = vec![0; usize::from(length)];
        stream.read_exact(&mut answer).await.unwrap();
        answer
    };
    let answer = tokio::time::timeout(DEADLINE, answer)
        .await
        .expect("an answer within the deadline");
    Message::from_vec(&answer).unwrap()
}

async fn tcp(server: SocketAddr, request: &Message) -> Message {
    let mut stream = TcpStream::connect(server).await.unwrap();
    tcp_exchange(&mut stream, request).await
}

fn addresses(message: &Message) -> Vec<Ipv4Addr> {
    message
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(A(address)) => Some(*address),
            _ => None,
        })
        .collect()
}

fn srv_ports(message: &Message) -> Vec<u16> {
    message
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::SRV(srv) => Some(srv.port),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_mesh_name_answers_its_virtual_ip_in_any_case_with_the_ttl_setting() {
    let dns = Running::start(settings(nowhere()), two_services()).await;
    for name in ["payments.mesh.", "PAYMENTS.Mesh."] {
        let answer = udp(dns.address, name, RecordType::A).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        assert!(answer.metadata.authoritative);
        assert_eq!(addresses(&answer), [PAYMENTS], "{name}");
        assert_eq!(answer.answers[0].ttl, 5);
    }
    dns.stop().await;
}

#[tokio::test]
async fn srv_lists_every_port_with_the_targets_address_in_the_additional_section() {
    let dns = Running::start(settings(nowhere()), two_services()).await;
    for name in ["payments.mesh.", "_http._tcp.payments.mesh."] {
        let answer = udp(dns.address, name, RecordType::SRV).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        assert_eq!(srv_ports(&answer), [8080, 9090], "{name}");
        let additional = &answer.additionals[0];
        assert_eq!(additional.name.to_ascii(), "payments.mesh.");
        assert_eq!(additional.data, RData::A(A(PAYMENTS)));
    }
    dns.stop().await;
}

#[tokio::test]
async fn aaaa_of_a_mesh_name_is_nodata_and_an_unknown_name_is_nxdomain_with_the_soa() {
    let dns = Running::start(settings(nowhere()), two_services()).await;
    let nodata = udp(dns.address, "orders.mesh.", RecordType::AAAA).await;
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert_eq!(nodata.authorities[0].record_type(), RecordType::SOA);
    let missing = udp(dns.address, "billing.mesh.", RecordType::A).await;
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    assert!(missing.answers.is_empty());
    let soa = &missing.authorities[0];
    assert_eq!(soa.name.to_ascii(), "mesh.");
    assert!(matches!(&soa.data, RData::SOA(soa) if soa.minimum == 5));
    let apex = udp(dns.address, "mesh.", RecordType::SOA).await;
    assert_eq!(apex.answers[0].record_type(), RecordType::SOA);
    dns.stop().await;
}

#[tokio::test]
async fn a_zone_update_is_answered_by_the_next_query() {
    let dns = Running::start(settings(nowhere()), two_services()).await;
    let before = udp(dns.address, "billing.mesh.", RecordType::A).await;
    assert_eq!(before.metadata.response_code, ResponseCode::NXDomain);
    let billing = Ipv4Addr::new(10, 96, 0, 9);
    dns.zone.send_replace(Arc::new(MeshZone::new([(
        "billing".to_string(),
        mesh_name(billing, &[8443]),
    )])));
    let after = udp(dns.address, "billing.mesh.", RecordType::A).await;
    assert_eq!(addresses(&after), [billing]);
    let gone = udp(dns.address, "payments.mesh.", RecordType::A).await;
    assert_eq!(gone.metadata.response_code, ResponseCode::NXDomain);
    dns.stop().await;
}

#[tokio::test]
async fn queries_over_tcp_are_answered_on_one_connection_in_turn() {
    let dns = Running::start(settings(nowhere()), two_services()).await;
    let mut stream = TcpStream::connect(dns.address).await.unwrap();
    let payments = tcp_exchange(&mut stream, &query("payments.mesh.", RecordType::A, None)).await;
    assert_eq!(addresses(&payments), [PAYMENTS]);
    let orders = tcp_exchange(&mut stream, &query("orders.mesh.", RecordType::SRV, None)).await;
    assert_eq!(srv_ports(&orders), [80]);
    dns.stop().await;
}

#[tokio::test]
async fn zone_transfers_are_refused_for_the_mesh_zone_and_any_other() {
    // The mesh zone lists every service: it is answered name by name, never handed out whole.
    let dns = Running::start(settings(nowhere()), two_services()).await;
    let mut stream = TcpStream::connect(dns.address).await.unwrap();
    for (name, qtype) in [
        ("mesh.", RecordType::AXFR),
        ("mesh.", RecordType::IXFR),
        ("payments.mesh.", RecordType::AXFR),
        ("example.test.", RecordType::AXFR),
    ] {
        let answer = tcp_exchange(&mut stream, &query(name, qtype, None)).await;
        assert_eq!(
            answer.metadata.response_code,
            ResponseCode::Refused,
            "{name} {qtype}"
        );
        assert!(
            answer.answers.is_empty() && answer.authorities.is_empty(),
            "{answer:?}"
        );
    }
    dns.stop().await;
}

#[tokio::test]
async fn a_stock_resolver_reads_the_mesh_zone() {
    use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
    let dns = Running::start(settings(nowhere()), two_services()).await;
    let mut connection = ConnectionConfig::udp();
    connection.port = dns.address.port();
    let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
        dns.address.ip(),
        true,
        vec![connection],
    )]);
    let resolver = hickory_resolver::TokioResolver::builder_with_config(
        config,
        hickory_resolver::net::runtime::TokioRuntimeProvider::default(),
    )
    .build()
    .unwrap();
    let ips = resolver.lookup_ip("orders.mesh.").await.unwrap();
    assert_eq!(ips.iter().collect::<Vec<_>>(), [ORDERS]);
    dns.stop().await;
}

#[tokio::test]
async fn an_answer_too_large_for_udp_is_truncated_and_complete_over_tcp() {
    let ports: Vec<u16> = (10_000..10_200).collect();
    let zone = MeshZone::new([("wide".to_string(), mesh_name(PAYMENTS, &ports))]);
    let dns = Running::start(settings(nowhere()), zone).await;
    let truncated_before = counter("hyphae_dns_truncated_total");
    let request = query("wide.mesh.", RecordType::SRV, Some(4096));
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let over_udp = exchange_on(&socket, dns.address, &request).await;
    assert!(over_udp.metadata.truncation);
    assert!(over_udp.answers.is_empty());
    assert_eq!(over_udp.queries, request.queries);
    assert!(counter("hyphae_dns_truncated_total") > truncated_before);
    let over_tcp = tcp(dns.address, &request).await;
    assert!(!over_tcp.metadata.truncation);
    assert_eq!(srv_ports(&over_tcp), ports);
    assert_eq!(over_tcp.additionals[0].data, RData::A(A(PAYMENTS)));
    dns.stop().await;
}

#[tokio::test]
async fn a_malformed_packet_is_dropped_and_counted_and_the_server_keeps_answering() {
    let dns = Running::start(settings(nowhere()), two_services()).await;
    let before = counter(r#"hyphae_dns_malformed_total{transport="udp"}"#);
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Garbage, a header cut short, and a response (never answered: no reflection).
    let mut response = query("payments.mesh.", RecordType::A, None);
    response.metadata.message_type = hickory_proto::op::MessageType::Response;
    for packet in [
        vec![0xde, 0xad, 0xbe, 0xef, 0x01],
        vec![0x12; 11],
        response.to_vec().unwrap(),
    ] {
        socket.send_to(&packet, dns.address).await.unwrap();
    }
    // The query after them is answered, and is the first thing that comes back.
    let answer = exchange_on(
        &socket,
        dns.address,
        &query("payments.mesh.", RecordType::A, None),
    )
    .await;
    assert_eq!(addresses(&answer), [PAYMENTS]);
    assert_eq!(
        counter(r#"hyphae_dns_malformed_total{transport="udp"}"#),
        before + 3
    );
    // Over TCP, garbage closes the connection; a new one is served.
    let mut stream = TcpStream::connect(dns.address).await.unwrap();
    stream.write_all(&[0, 3, 1, 2, 3]).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0))), "{closed:?}");
    let answer = tcp(dns.address, &query("orders.mesh.", RecordType::A, None)).await;
    assert_eq!(addresses(&answer), [ORDERS]);
    dns.stop().await;
}

#[tokio::test]
async fn edns_is_answered_in_kind_and_a_version_above_0_gets_badvers() {
    let dns = Running::start(settings(nowhere()), two_services()).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let answer = exchange_on(
        &socket,
        dns.address,
        &query("payments.mesh.", RecordType::A, Some(4096)),
    )
    .await;
    assert_eq!(addresses(&answer), [PAYMENTS]);
    let edns = answer.edns.expect("an OPT record in the answer");
    assert_eq!(edns.max_payload(), 1232);
    let mut future = query("payments.mesh.", RecordType::A, Some(4096));
    if let Some(edns) = future.edns.as_mut() {
        edns.set_version(1);
    }
    let answer = exchange_on(&socket, dns.address, &future).await;
    assert_eq!(u16::from(answer.metadata.response_code), 16, "BADVERS");
    assert!(answer.answers.is_empty());
    assert!(
        !answer.metadata.authoritative,
        "BADVERS is no answer about the zone"
    );
    // Nor is NOTIMP, for an opcode the server does not serve.
    let mut notify = query("payments.mesh.", RecordType::SOA, None);
    notify.metadata.op_code = OpCode::Notify;
    let answer = exchange_on(&socket, dns.address, &notify).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NotImp);
    assert!(
        !answer.metadata.authoritative,
        "NOTIMP is no answer about the zone"
    );
    dns.stop().await;
}

#[tokio::test]
async fn a_query_that_reads_only_to_its_header_gets_formerr_with_its_id() {
    let dns = Running::start(settings(nowhere()), two_services()).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut request = query("payments.mesh.", RecordType::A, Some(1232));
    request.metadata.id = 0x5eed;
    let wire = request.to_vec().unwrap();
    // RFC 6891 §6.1.1: a second OPT record (the query's own is its last 11 bytes) is FORMERR.
    let opt = wire[wire.len() - 11..].to_vec();
    let mut two_opts = wire.clone();
    two_opts[11] = 2;
    two_opts.extend_from_slice(&opt);
    // A question the header counts that is not there.
    let mut missing_question = wire[..12].to_vec();
    missing_question[11] = 0;
    for packet in [two_opts, missing_question] {
        socket.send_to(&packet, dns.address).await.unwrap();
        let mut buffer = vec![0; 65_535];
        let (length, _) = tokio::time::timeout(DEADLINE, socket.recv_from(&mut buffer))
            .await
            .expect("an answer within the deadline")
            .unwrap();
        assert!(length <= packet.len(), "never larger than the query");
        let answer = Message::from_vec(&buffer[..length]).unwrap();
        assert_eq!(answer.metadata.id, 0x5eed);
        assert_eq!(answer.metadata.response_code, ResponseCode::FormErr);
        assert!(answer.answers.is_empty());
        assert!(
            !answer.metadata.authoritative,
            "a query that could not be read gets no authoritative answer"
        );
    }
    dns.stop().await;
}

/// Sends queries from `socket` until one is refused; panics if `attempts` all pass.
async fn until_refused(socket: &UdpSocket, server: SocketAddr, attempts: usize) -> usize {
    for sent in 1..=attempts {
        let answer = exchange_on(
            socket,
            server,
            &query("payments.mesh.", RecordType::A, None),
        )
        .await;
        if answer.metadata.response_code == ResponseCode::Refused {
            return sent;
        }
        assert_eq!(addresses(&answer), [PAYMENTS]);
    }
    panic!("{attempts} queries and none refused");
}

#[tokio::test]
async fn queries_beyond_the_global_rate_are_refused_and_counted() {
    let dns = Running::start(
        DnsSettings {
            max_queries_per_second: 3,
            ..settings(nowhere())
        },
        two_services(),
    )
    .await;
    let series = r#"hyphae_dns_refused_total{reason="rate_limit"}"#;
    let before = counter(series);
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // The bucket holds 3; it refills at 3 a second, so a refusal comes within a few hundred
    // queries however slow the machine.
    until_refused(&socket, dns.address, 300).await;
    assert!(counter(series) > before);
    // Any client: the limit is global.
    let other = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    until_refused(&other, dns.address, 300).await;
    dns.stop().await;
}

#[tokio::test]
async fn one_client_beyond_its_rate_is_refused_while_another_is_answered() {
    let dns = Running::start(
        DnsSettings {
            max_queries_per_second_per_source: 3,
            ..settings(nowhere())
        },
        two_services(),
    )
    .await;
    let series = r#"hyphae_dns_refused_total{reason="source_rate_limit"}"#;
    let before = counter(series);
    let noisy = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    until_refused(&noisy, dns.address, 300).await;
    assert!(counter(series) > before);
    // Another address has a bucket of its own (unless both hash to one of the 1024 buckets:
    // try a few addresses).
    let mut answered = false;
    for last in 2..10 {
        let quiet = UdpSocket::bind(SocketAddr::from(([127, 0, 0, last], 0)))
            .await
            .unwrap();
        let answer = exchange_on(
            &quiet,
            dns.address,
            &query("orders.mesh.", RecordType::A, None),
        )
        .await;
        if answer.metadata.response_code == ResponseCode::NoError {
            answered = true;
            break;
        }
    }
    assert!(answered, "every other client was refused too");
    dns.stop().await;
}

/// A request handler that counts what reaches the upstream, then lets the catalog answer.
struct Counting {
    catalog: Catalog,
    queries: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl RequestHandler for Counting {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        self.queries.fetch_add(1, Ordering::SeqCst);
        self.catalog
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

/// An authoritative server for `example.test` on loopback (UDP and TCP on one port): `A
/// 10.200.9.9` (TTL 60), `alias CNAME example.test.`, and a `big` TXT set too large for UDP.
struct Upstream {
    address: SocketAddr,
    queries: Arc<AtomicUsize>,
    server: hickory_server::Server<Counting>,
}

impl Upstream {
    async fn start() -> Upstream {
        let origin = Name::from_ascii("example.test.").unwrap();
        let name = |label: &str| Name::from_ascii(format!("{label}.example.test.")).unwrap();
        let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
            origin.clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
        );
        let soa = SOA::new(name("ns"), name("hostmaster"), 1, 3600, 600, 86_400, 30);
        for record in [
            Record::from_rdata(origin.clone(), 3600, RData::SOA(soa)),
            Record::from_rdata(origin.clone(), 60, RData::A(A(UPSTREAM_A))),
            Record::from_rdata(name("alias"), 60, RData::CNAME(CNAME(origin.clone()))),
        ]
        .into_iter()
        .chain((0..40).map(|i| {
            Record::from_rdata(
                name("big"),
                60,
                RData::TXT(TXT::new(vec![format!("{i:0>60}")])),
            )
        })) {
            assert!(zone.upsert_mut(record, 1));
        }
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![Arc::new(zone)]);
        let queries = Arc::new(AtomicUsize::new(0));
        let mut server = hickory_server::Server::new(Counting {
            catalog,
            queries: Arc::clone(&queries),
        });
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()).await {
                break (udp, tcp);
            }
        };
        let address = udp.local_addr().unwrap();
        server.register_socket(udp);
        server.register_listener(tcp, DEADLINE, 32);
        Upstream {
            address,
            queries,
            server,
        }
    }

    fn seen(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }

    async fn stop(mut self) {
        self.server.shutdown_gracefully().await.unwrap();
    }
}

#[tokio::test]
async fn other_names_are_forwarded_and_the_second_query_is_served_from_the_cache() {
    let upstream = Upstream::start().await;
    let dns = Running::start(settings(vec![upstream.address]), two_services()).await;
    let first = udp(dns.address, "example.test.", RecordType::A).await;
    assert_eq!(first.metadata.response_code, ResponseCode::NoError);
    assert!(!first.metadata.authoritative);
    assert!(first.metadata.recursion_available);
    assert_eq!(addresses(&first), [UPSTREAM_A]);
    assert!(first.answers[0].ttl <= 60);
    let seen = upstream.seen();
    assert!(seen >= 1);
    let second = udp(dns.address, "EXAMPLE.test.", RecordType::A).await;
    assert_eq!(addresses(&second), [UPSTREAM_A]);
    assert_eq!(
        upstream.seen(),
        seen,
        "the second answer came from the cache"
    );
    // A CNAME comes with the record it leads to.
    let alias = udp(dns.address, "alias.example.test.", RecordType::A).await;
    assert_eq!(alias.metadata.response_code, ResponseCode::NoError);
    assert!(
        alias
            .answers
            .iter()
            .any(|record| record.record_type() == RecordType::CNAME),
        "{alias:?}"
    );
    assert_eq!(addresses(&alias), [UPSTREAM_A]);
    dns.stop().await;
    upstream.stop().await;
}

#[tokio::test]
async fn nxdomain_and_nodata_from_upstream_pass_through_with_its_soa() {
    let upstream = Upstream::start().await;
    let dns = Running::start(settings(vec![upstream.address]), two_services()).await;
    let series = r#"hyphae_dns_queries_total{zone="forward",rcode="NXDOMAIN"}"#;
    let before = counter(series);
    let missing = udp(dns.address, "missing.example.test.", RecordType::A).await;
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    assert!(missing.answers.is_empty());
    assert_eq!(missing.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(missing.authorities[0].name.to_ascii(), "example.test.");
    assert!(counter(series) > before);
    let nodata = udp(dns.address, "example.test.", RecordType::MX).await;
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    // The upstream has no zone for this name and refuses it; so does the agent.
    let elsewhere = udp(dns.address, "example.org.", RecordType::A).await;
    assert_eq!(elsewhere.metadata.response_code, ResponseCode::Refused);
    dns.stop().await;
    upstream.stop().await;
}

#[tokio::test]
async fn a_large_forwarded_answer_is_truncated_over_udp_and_complete_over_tcp() {
    let upstream = Upstream::start().await;
    let dns = Running::start(settings(vec![upstream.address]), two_services()).await;
    let request = query("big.example.test.", RecordType::TXT, None);
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let over_udp = exchange_on(&socket, dns.address, &request).await;
    assert!(over_udp.metadata.truncation);
    assert!(over_udp.answers.is_empty());
    let over_tcp = tcp(dns.address, &request).await;
    assert_eq!(over_tcp.metadata.response_code, ResponseCode::NoError);
    assert_eq!(over_tcp.answers.len(), 40);
    dns.stop().await;
    upstream.stop().await;
}

#[tokio::test]
async fn an_upstream_that_never_answers_gives_servfail() {
    // Bound and silent: datagrams are received and never answered.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dns = Running::start(
        DnsSettings {
            forward_timeout: hyphae_policies::Duration::from_millis(200),
            ..settings(vec![silent.local_addr().unwrap()])
        },
        two_services(),
    )
    .await;
    let answer = udp(dns.address, "example.test.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
    // The mesh zone does not depend on the upstream.
    let mesh = udp(dns.address, "payments.mesh.", RecordType::A).await;
    assert_eq!(addresses(&mesh), [PAYMENTS]);
    dns.stop().await;
}

#[tokio::test]
async fn a_taken_port_is_an_error_for_the_caller() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = taken.local_addr().unwrap();
    match DnsServer::bind(address).await {
        Err(DnsError::Bind { transport, .. }) => assert_eq!(transport, "tcp"),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("bound a taken port"),
    }
}

/// Whether the server closed `stream`: reading reaches its end (or a reset) before the deadline.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    match tokio::time::timeout(DEADLINE, stream.read_to_end(&mut rest)).await {
        Ok(Ok(_)) => true,
        Ok(Err(error)) => error.kind() == std::io::ErrorKind::ConnectionReset,
        Err(_) => false,
    }
}

#[tokio::test]
async fn tcp_connections_beyond_the_cap_are_closed_at_once_and_counted() {
    let dns = Running::start(
        DnsSettings {
            max_tcp_connections: 1,
            ..settings(nowhere())
        },
        two_services(),
    )
    .await;
    let series = r#"hyphae_connections_refused_total{listener="dns"}"#;
    let before = counter(series);
    let mut first = TcpStream::connect(dns.address).await.unwrap();
    // Answered, so the server holds it as its one connection.
    let answer = tcp_exchange(&mut first, &query("payments.mesh.", RecordType::A, None)).await;
    assert_eq!(addresses(&answer), [PAYMENTS]);
    let mut second = TcpStream::connect(dns.address).await.unwrap();
    assert!(closed_by_server(&mut second).await);
    assert!(counter(series) > before);
    // The first is still served.
    let answer = tcp_exchange(&mut first, &query("orders.mesh.", RecordType::A, None)).await;
    assert_eq!(addresses(&answer), [ORDERS]);
    dns.stop().await;
}

#[tokio::test]
async fn a_silent_tcp_connection_is_closed_after_the_idle_timeout() {
    let dns = Running::start(
        DnsSettings {
            tcp_idle_timeout: hyphae_policies::Duration::from_millis(100),
            ..settings(nowhere())
        },
        two_services(),
    )
    .await;
    let mut silent = TcpStream::connect(dns.address).await.unwrap();
    assert!(closed_by_server(&mut silent).await);
    // Half a query counts as silence too.
    let mut halfway = TcpStream::connect(dns.address).await.unwrap();
    halfway.write_all(&[0, 40, 1, 2]).await.unwrap();
    assert!(closed_by_server(&mut halfway).await);
    dns.stop().await;
}

#[tokio::test]
async fn forwarded_queries_beyond_the_in_flight_cap_are_refused_and_counted() {
    // Bound and silent: the first query waits for it, holding the only slot.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dns = Running::start(
        DnsSettings {
            max_in_flight_forwards: 1,
            forward_timeout: hyphae_policies::Duration::from_secs(60),
            ..settings(vec![silent.local_addr().unwrap()])
        },
        two_services(),
    )
    .await;
    let series = r#"hyphae_dns_refused_total{reason="forward_limit"}"#;
    let before = counter(series);
    let waiting = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let first = query("example.test.", RecordType::A, None);
    waiting
        .send_to(&first.to_vec().unwrap(), dns.address)
        .await
        .unwrap();
    // Sent after the first to the same socket, so handled after it took the slot.
    let second = udp(dns.address, "other.example.test.", RecordType::A).await;
    assert_eq!(second.metadata.response_code, ResponseCode::Refused);
    assert!(counter(series) > before);
    // Mesh names need no slot.
    let mesh = udp(dns.address, "payments.mesh.", RecordType::A).await;
    assert_eq!(addresses(&mesh), [PAYMENTS]);
    // Stopping does not wait for the upstream.
    dns.stop().await;
}

#[tokio::test]
async fn the_agent_never_forwards_to_itself() {
    let server = DnsServer::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let address = server.local_addr();
    let (_zone, changes) = watch::channel(Arc::new(two_services()));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            server
                .run(&settings(vec![address]), changes, shutdown)
                .await
        }
    });
    // With itself skipped there is nowhere to forward: refused at once, not looped.
    let answer = udp(address, "example.test.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::Refused);
    assert!(!answer.metadata.recursion_available);
    let mesh = udp(address, "orders.mesh.", RecordType::A).await;
    assert_eq!(addresses(&mesh), [ORDERS]);
    shutdown.cancel();
    tokio::time::timeout(DEADLINE, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

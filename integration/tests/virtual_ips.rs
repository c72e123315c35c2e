//! Services by virtual IP with real processes: the control plane gives each service a stable
//! loopback address, and a calling agent listens there at each of the service's ports, so an
//! app reaches `VIP:port` with no configuration. HTTP is routed through the mesh, anything else
//! is carried as opaque TCP, and listeners come and go with the registry, without a restart.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use hyphae_integration::agent::Agent;
use hyphae_integration::backend::{TestBackend, echo_once, line_echo};
use hyphae_integration::binaries::workspace_binary;
use hyphae_integration::cluster::Cluster;
use hyphae_integration::dns::{ipv4_of, resolver_of};
use hyphae_integration::http::{get_json, get_text};
use hyphae_integration::{Signal, eventually};
use tokio::net::TcpStream;

/// An agent hosting `services` (flow-style YAML entries) and `policies` (YAML documents after
/// its config), with no virtual IP listeners of its own: on this one machine, the caller owns
/// them.
fn host(dir: &Path, name: &str, services: &[String], policies: &str, control_plane: &str) -> Agent {
    let services: String = services
        .iter()
        .map(|entry| format!("    - {entry}\n"))
        .collect();
    Agent::start_in(
        &workspace_binary("hyphae-agent"),
        dir,
        name,
        &format!(
            "kind: AgentConfig\nmetadata: {{name: {name}}}\nspec:\n  controlPlane: [\"{control_plane}\"]\n  dataDir: {}\n  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null, virtualIps: false}}\n  services:\n{services}{policies}",
            dir.join(format!("{name}-data")).display()
        ),
    )
    .expect("start a host agent")
}

/// A calling agent with no upstream ports: apps reach services only by name (its DNS server)
/// and virtual IP.
fn caller(dir: &Path, control_plane: &str) -> Agent {
    Agent::start_in(
        &workspace_binary("hyphae-agent"),
        dir,
        "caller",
        &format!(
            "kind: AgentConfig\nmetadata: {{name: caller}}\nspec:\n  controlPlane: [\"{control_plane}\"]\n  dataDir: {}\n  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: 127.0.0.1:0}}\n",
            dir.join("caller-data").display()
        ),
    )
    .expect("start the caller agent")
}

/// The virtual IP the control plane gave `service`, once it has one.
async fn virtual_ip(server: &str, service: &str) -> Option<Ipv4Addr> {
    let summary = get_json(server, &format!("/v1/services/{service}?stale=true")).await?;
    summary["virtualIp"].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_reach_services_at_their_virtual_ips_and_listeners_follow_the_registry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_control_plane, server) = Cluster::lone_in(dir.path()).expect("start the control plane");
    let web = TestBackend::start("web-on-b").await;
    let (echo, _echo_task) = line_echo().await;
    let _host_b = host(
        dir.path(),
        "host-b",
        &[format!("{{name: web, port: {}}}", web.port())],
        "",
        &server,
    );
    let caller = caller(dir.path(), &server);

    // HTTP at VIP:port goes through the mesh to the instance on the other agent.
    let web_ip = hyphae_integration::eventually::wait_for(
        "web to get a virtual IP",
        hyphae_integration::DEADLINE,
        std::time::Duration::from_millis(50),
        || virtual_ip(&server, "web"),
    )
    .await
    .expect("a virtual IP for web");
    assert!(
        "127.64.0.0/10"
            .parse::<hyphae_policies::VirtualIpRange>()
            .expect("the default block")
            .contains(web_ip),
        "{web_ip} is outside the default block"
    );
    // An app asks the agent's DNS server for `web.mesh` and gets the same address.
    let resolver = resolver_of(caller.dns.expect("the caller's DNS address")).expect("a resolver");
    eventually("web.mesh to resolve to web's virtual IP", || async {
        ipv4_of(&resolver, "web.mesh.").await == [web_ip]
    })
    .await;
    assert!(ipv4_of(&resolver, "nothing-here.mesh.").await.is_empty());
    let web_at = SocketAddr::from((web_ip, web.port()));
    eventually("web to answer at its virtual IP", || async {
        get_text(web_at, "/").await == "web-on-b"
    })
    .await;
    let config = get_json(caller.admin, "/config")
        .await
        .expect("caller config");
    assert_eq!(
        config["virtual_services"]["web"]["address"],
        web_ip.to_string(),
        "{config}"
    );

    // A new service is reachable at its own address without restarting the caller: here an
    // opaque TCP protocol, carried as bytes.
    let host_c = host(
        dir.path(),
        "host-c",
        &[format!(
            "{{name: echo, port: {}, protocol: tcp}}",
            echo.port()
        )],
        "",
        &server,
    );
    let echo_ip = hyphae_integration::eventually::wait_for(
        "echo to get a virtual IP",
        hyphae_integration::DEADLINE,
        std::time::Duration::from_millis(50),
        || virtual_ip(&server, "echo"),
    )
    .await
    .expect("a virtual IP for echo");
    assert_ne!(echo_ip, web_ip, "each service has an address of its own");
    let echo_at = SocketAddr::from((echo_ip, echo.port()));
    eventually(
        "a line to come back from echo at its virtual IP",
        || async {
            echo_once(echo_at, "hello over the mesh").await.as_deref()
                == Some("hello over the mesh")
        },
    )
    .await;
    assert!(caller.metric("hyphae_virtual_ip_listeners", "").await >= 2.0);

    // When the service leaves the registry, its address is given back and the listener closes.
    host_c.signal(Signal::TERM);
    eventually("echo's virtual IP listener to close", || async {
        TcpStream::connect(echo_at).await.is_err()
    })
    .await;
    assert_eq!(virtual_ip(&server, "echo").await, None);
    eventually("echo.mesh to stop resolving", || async {
        ipv4_of(&resolver, "echo.mesh.").await.is_empty()
    })
    .await;
    assert_eq!(
        get_text(web_at, "/").await,
        "web-on-b",
        "other services are untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_of_a_service_on_one_host_are_two_endpoints_and_each_port_is_reachable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_control_plane, server) = Cluster::lone_in(dir.path()).expect("start the control plane");
    let first = TestBackend::start("first").await;
    let second = TestBackend::start("second").await;
    let _host = host(
        dir.path(),
        "host-b",
        &[
            format!("{{name: web, port: {}}}", first.port()),
            format!("{{name: web, port: {}}}", second.port()),
        ],
        // Whatever port a call names, the service's access policy guards it.
        "---\nkind: AccessPolicy\nmetadata: {name: web}\nspec:\n  service: web\n  defaultAction: deny\n  rules:\n    - from: [{node: caller}]\n      paths: [/open]\n",
        &server,
    );
    let ports = hyphae_integration::ports::free_ports(2).expect("two ports");
    let _caller = Agent::start_in(
        &workspace_binary("hyphae-agent"),
        dir.path(),
        "caller",
        &format!(
            "kind: AgentConfig\nmetadata: {{name: caller}}\nspec:\n  controlPlane: [\"{server}\"]\n  dataDir: {}\n  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null}}\n  upstreams:\n    - {{listen: \"127.0.0.1:{}\", service: web}}\n    - {{listen: \"127.0.0.1:{}\", service: \"web:{}\"}}\n---\nkind: ServicePolicy\nmetadata: {{name: web}}\nspec:\n  loadBalancer: {{policy: round-robin}}\n",
            dir.path().join("caller-data").display(),
            ports[0],
            ports[1],
            second.port(),
        ),
    )
    .expect("start the caller");
    let any_port = SocketAddr::from(([127, 0, 0, 1], ports[0]));
    let second_port = SocketAddr::from(([127, 0, 0, 1], ports[1]));

    // The service's name reaches both instances: each is an endpoint of its own.
    eventually(
        "both instances to answer through the service's name",
        || async {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..6 {
                seen.insert(get_text(any_port, "/open").await);
            }
            seen == ["first".to_string(), "second".to_string()].into()
        },
    )
    .await;
    // `web:PORT` reaches only the instance on that port, by upstream and by virtual IP.
    eventually("web:PORT to answer", || async {
        get_text(second_port, "/open").await == "second"
    })
    .await;
    let web_ip = virtual_ip(&server, "web").await.expect("web's virtual IP");
    for _ in 0..6 {
        assert_eq!(get_text(second_port, "/open").await, "second");
        assert_eq!(
            get_text(SocketAddr::from((web_ip, first.port())), "/open").await,
            "first"
        );
        assert_eq!(
            get_text(SocketAddr::from((web_ip, second.port())), "/open").await,
            "second"
        );
    }
    for denied in [
        any_port,
        second_port,
        SocketAddr::from((web_ip, second.port())),
    ] {
        let answer = hyphae_integration::http::request("GET", denied, "/closed", "")
            .await
            .expect("an answer");
        assert_eq!(answer.status, 403, "{denied}");
        assert_eq!(answer.header("hyphae-error"), Some("denied"));
    }
}

//! Egress with real processes: an `ExternalService` stored in the control plane gets a virtual
//! IP, and a calling agent reaches it there, by the HTTP proxy port, with the mesh's retries
//! and metrics; with `tls`, the agent originates HTTPS and checks the service's certificate.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use http::{Request, Response};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyphae_integration::agent::Agent;
use hyphae_integration::backend::{Behaviour, TestBackend, echo_once, line_echo};
use hyphae_integration::binaries::workspace_binary;
use hyphae_integration::cluster::Cluster;
use hyphae_integration::eventually::wait_for;
use hyphae_integration::http::{call, get_json, request};
use hyphae_integration::{DEADLINE, eventually};
use tokio::net::TcpListener;

/// The virtual IP the control plane gave `service`, from the caller's `/config`.
async fn virtual_ip(caller: &Agent, service: &str) -> Option<Ipv4Addr> {
    let config = get_json(caller.admin, "/config").await?;
    config["virtual_services"][service]["address"]
        .as_str()?
        .parse()
        .ok()
}

/// An HTTPS server for `name` (a self-signed certificate, returned as PEM) answering each
/// request with its `Host` header.
async fn https_server(name: &str) -> (SocketAddr, String) {
    let certified = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("a cert");
    let pem = certified.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
        .expect("a key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .expect("a server config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(|request: Request<Incoming>| async move {
                    let host = request
                        .headers()
                        .get(http::header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                        format!("secure {host}"),
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (address, pem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_services_are_reached_by_virtual_ip_and_proxy_with_retries_metrics_and_tls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_control_plane, server) = Cluster::lone_in(dir.path()).expect("start the control plane");
    let plain = TestBackend::start_as("plain", Behaviour::status(503)).await;
    let (echo, _echo_task) = line_echo().await;
    let (secure, secure_pem) = https_server("secure.example.test").await;
    let ca_file = dir.path().join("secure-ca.pem");
    std::fs::write(&ca_file, secure_pem).expect("write the CA file");
    let (status, answer) = call(
        "POST",
        &server,
        "/v1/policies",
        &format!(
            "kind: ExternalService\nmetadata: {{name: plain}}\nspec:\n  addresses: [127.0.0.1]\n  ports: [{{port: {}, protocol: http}}]\n---\nkind: ExternalService\nmetadata: {{name: secure}}\nspec:\n  addresses: [127.0.0.1]\n  ports: [{{port: {}, protocol: http}}]\n  tls: {{serverName: secure.example.test, caFile: {}}}\n---\nkind: ExternalService\nmetadata: {{name: lines}}\nspec:\n  addresses: [127.0.0.1]\n  ports: [{{port: {}, protocol: tcp}}]\n---\nkind: ExternalService\nmetadata: {{name: named}}\nspec:\n  host: localhost\n  ports: [{{port: {}, protocol: http}}]\n---\nkind: ExternalService\nmetadata: {{name: impostor}}\nspec:\n  addresses: [127.0.0.1]\n  ports: [{{port: {}, protocol: http}}]\n  tls: {{serverName: bank.example.test, caFile: {}}}\n",
            plain.port(),
            secure.port(),
            ca_file.display(),
            echo.port(),
            plain.port(),
            secure.port(),
            ca_file.display()
        ),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let proxy_port = hyphae_integration::ports::free_ports(1).expect("a port")[0];
    let caller = Agent::start_in(
        &workspace_binary("hyphae-agent"),
        dir.path(),
        "caller",
        &format!(
            "kind: AgentConfig\nmetadata: {{name: caller}}\nspec:\n  controlPlane: [\"{server}\"]\n  dataDir: {}\n  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: \"127.0.0.1:{proxy_port}\", dns: null}}\n",
            dir.path().join("caller-data").display()
        ),
    )
    .expect("start the caller");
    let plain_ip = wait_for(
        "plain's virtual IP",
        DEADLINE,
        std::time::Duration::from_millis(50),
        || virtual_ip(&caller, "plain"),
    )
    .await
    .expect("a virtual IP for plain");
    let plain_at = SocketAddr::from((plain_ip, plain.port()));

    // The service answers 503: the call is retried (two retries by default), then the
    // caller gets its 503, and the mesh's metrics count it all.
    eventually(
        "the external service to answer at its virtual IP",
        || async {
            request("GET", plain_at, "/", "")
                .await
                .is_some_and(|answer| answer.status == 503 && answer.text() == "plain")
        },
    )
    .await;
    assert!(plain.requests() >= 3, "{} tries", plain.requests());
    assert!(
        caller
            .metric("hyphae_retries_total", r#"service="plain""#)
            .await
            >= 2.0
    );
    assert!(
        caller
            .metric("hyphae_requests_total", r#"service="plain""#)
            .await
            >= 1.0
    );

    // Healthy again, it answers through the HTTP proxy port by name too.
    plain.set(Behaviour::default());
    let proxy = SocketAddr::from(([127, 0, 0, 1], proxy_port));
    let answer = request_with_host(proxy, "plain.mesh").await;
    assert_eq!(answer, (200, "plain".to_string()));

    // A service named by a DNS host is reached at what the name resolves to (here through
    // the host's own files: `localhost`).
    eventually("named to resolve and answer", || async {
        request_with_host(proxy, "named").await == (200, "plain".to_string())
    })
    .await;
    let config = get_json(caller.admin, "/config").await.expect("config");
    let endpoints = config["services"]["named"]["endpoints"].to_string();
    assert!(
        endpoints.contains(&format!("127.0.0.1:{}", plain.port())),
        "{endpoints}"
    );

    // With `tls`, the app speaks plain HTTP and the agent speaks HTTPS, checking the name.
    let secure_ip = virtual_ip(&caller, "secure")
        .await
        .expect("secure's virtual IP");
    let secure_at = SocketAddr::from((secure_ip, secure.port()));
    let answer = request("GET", secure_at, "/", "").await.expect("an answer");
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.text(),
        format!("secure secure.example.test:{}", secure.port())
    );
    // Opaque TCP leaves the same way, as bytes.
    let lines_ip = virtual_ip(&caller, "lines")
        .await
        .expect("lines' virtual IP");
    let lines_at = SocketAddr::from((lines_ip, echo.port()));
    assert_eq!(
        echo_once(lines_at, "out of the mesh").await.as_deref(),
        Some("out of the mesh")
    );

    // A certificate that does not carry the name asked for is refused: no request is sent.
    let (status, _) = request_with_host(proxy, "impostor").await;
    assert_eq!(
        status, 502,
        "a certificate for another name must not be accepted"
    );
}

/// GETs `/` through the HTTP proxy at `proxy`, naming `host`; the status and the body.
async fn request_with_host(proxy: SocketAddr, host: &str) -> (u16, String) {
    let client = hyphae_integration::http::http1_client();
    let request = Request::builder()
        .uri(format!("http://{proxy}/"))
        .header(http::header::HOST, host)
        .body(http_body_util::Full::new(Bytes::new()))
        .expect("a request");
    match hyphae_integration::http::exchange(&client, request).await {
        Some(answer) => (answer.status.as_u16(), answer.text()),
        None => (0, String::new()),
    }
}

//! The data path end to end on loopback: a caller agent, one host agent per backend, real
//! processes and sockets. Each test builds the smallest mesh that shows one behaviour.

use std::path::Path;
use std::time::Duration;

use hyphae_integration::agent::Agent;
use hyphae_integration::backend::{Behaviour, TestBackend};
use hyphae_integration::http::{Answer, exchange, get, http1_client, http2_client, send};
use hyphae_integration::mesh::{caller_agent, caller_config, endpoint, host_agent, upstream_port};
use hyphae_integration::ports::free_ports;
use hyphae_integration::{DEADLINE, Signal, eventually};

const AGENT: &str = env!("CARGO_BIN_EXE_hyphae-agent");

fn url(agent: &Agent, service: &str, path: &str) -> String {
    format!("http://{}{path}", agent.upstream(service))
}

/// Host agents `a` and `b` for `svc` in site `one`, in front of `first` and `second`, and a
/// caller whose endpoints they are, with `policies` appended to its config.
fn two_hosts(first: &TestBackend, second: &TestBackend, policies: &str) -> ([Agent; 2], Agent) {
    let a = host_agent(AGENT, "a", "svc", first);
    let b = host_agent(AGENT, "b", "svc", second);
    let caller = caller_agent(
        AGENT,
        "svc",
        &[endpoint(&a, "one"), endpoint(&b, "one")],
        policies,
    );
    ([a, b], caller)
}

/// A host agent `host` for `svc` in front of `backend`, and a caller whose one endpoint (in
/// site `one`) it is, with `policies` appended to its config: `(host, caller)`.
fn one_host(backend: &TestBackend, policies: &str) -> (Agent, Agent) {
    let host = host_agent(AGENT, "host", "svc", backend);
    let caller = caller_agent(AGENT, "svc", &[endpoint(&host, "one")], policies);
    (host, caller)
}

/// GETs `path` through `caller`'s HTTP proxy port with `host` as the `Host` header.
async fn get_by_host(caller: &Agent, host: &str, path: &str) -> Answer {
    let proxy = caller.http_proxy.expect("proxy port");
    let request = http::Request::get(format!("http://{proxy}{path}"))
        .header("host", host)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("a request with a valid host");
    exchange(&http1_client(), request)
        .await
        .expect("an answer through the proxy port")
}

/// GETs `path` through `caller`'s HTTP proxy port over HTTP/2 with prior knowledge, with
/// `authority` as the `:authority`; the status and the `x-seen-host` the backend echoed.
async fn get_by_authority_over_http2(
    caller: &Agent,
    authority: &str,
    path: &str,
) -> (u16, Option<String>) {
    let proxy = caller.http_proxy.expect("proxy port");
    let mut sender = hyphae_integration::http::http2_connection(proxy).await;
    let request = http::Request::get(format!("http://{authority}{path}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("a request with a valid authority");
    let response = tokio::time::timeout(DEADLINE, sender.send_request(request))
        .await
        .expect("an answer in time")
        .expect("an answer through the proxy port");
    let seen = response
        .headers()
        .get("x-seen-host")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (response.status().as_u16(), seen)
}

/// Makes `calls` GETs to `svc` through `caller`, each of which must be a 200 from the backend
/// named `by`.
async fn all_answered_by(caller: &Agent, calls: usize, by: &str) {
    let client = http1_client();
    for _ in 0..calls {
        let answer = get(&client, &url(caller, "svc", "/")).await;
        assert_eq!(answer.status, 200);
        assert_eq!(&answer.body[..], by.as_bytes());
    }
}

/// Asserts that `agent` has counted at least `at_least` of the counter `name` in the series
/// whose labels contain `labels`.
async fn assert_counted(agent: &Agent, name: &str, labels: &str, at_least: f64) {
    let counted = agent.metric(name, labels).await;
    assert!(
        counted >= at_least,
        "{name} {{{labels}}} is {counted}, not at least {at_least}"
    );
}

/// Writes `yaml` over `agent`'s config file and sends it SIGHUP, then waits until it has
/// counted a reload whose result is `result` (`applied` or `rejected`).
async fn reload(agent: &Agent, yaml: &str, result: &str) {
    std::fs::write(&agent.config, yaml).expect("write the agent's config file");
    agent.signal(Signal::HUP);
    let labels = format!("result=\"{result}\"");
    agent
        .metric_reaches("hyphae_config_reloads_total", &labels, 1.0)
        .await;
}

/// Writes `bytes` to `address` on a new connection and reads until the agent closes it.
async fn raw_exchange(address: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect to the agent");
    stream.write_all(bytes).await.expect("write to the agent");
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer))
        .await
        .expect("the agent closes the connection")
        .expect("read from the agent");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_http2_calls_cross_two_agents_by_port_and_by_proxy() {
    let backend = TestBackend::start("b1").await;
    let (_host, caller) = one_host(&backend, "");

    let answer = get(&http1_client(), &url(&caller, "svc", "/hello")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(&answer.body[..], b"b1");

    let answer = get(&http2_client(), &url(&caller, "svc", "/hello")).await;
    assert_eq!(answer.status, 200, "HTTP/2 prior knowledge");

    // Through the HTTP proxy port, naming the service by host; the host reaches the app.
    let proxy = caller.http_proxy.expect("proxy port");
    let answer = get(&http1_client(), &format!("http://{proxy}/x")).await;
    assert_eq!(answer.status, 404, "no host means no service");
    let answer = get_by_host(&caller, "svc.mesh:8080", "/x").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-seen-host"), Some("svc.mesh:8080"));
    // The proxy port speaks HTTP/2 with prior knowledge too, routing by `:authority`.
    let (status, seen) = get_by_authority_over_http2(&caller, "svc.mesh:8080", "/x").await;
    assert_eq!(status, 200, "HTTP/2 on the proxy port");
    assert_eq!(seen.as_deref(), Some("svc.mesh:8080"));

    let answered = caller
        .metric("hyphae_requests_total", "route=\"default\"")
        .await;
    assert_eq!(
        answered, 4.0,
        "requests counted by service, route and status class"
    );
    assert_eq!(backend.requests(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_services_and_dead_endpoints_get_an_answer_not_a_hang() {
    let caller = caller_agent(
        AGENT,
        "svc",
        &[format!(
            "{{address: \"127.0.0.1:{}\"}}",
            free_ports(1).expect("a port")[0]
        )],
        "",
    );
    let proxy = caller.http_proxy.expect("proxy port");
    let answer = get(&http1_client(), &format!("http://{proxy}/")).await;
    assert_eq!(answer.status, 404);
    let answer = get_by_host(&caller, "nothing.mesh", "/").await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.header("hyphae-error"), Some("unknown-service"));

    let answer = get(&http1_client(), &url(&caller, "svc", "/")).await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.header("hyphae-error"), Some("connect-failed"));
    assert_counted(
        &caller,
        "hyphae_errors_total",
        "reason=\"connect-failed\"",
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_is_retried_on_the_other_endpoint() {
    let failing = TestBackend::start_as("failing", Behaviour::status(503)).await;
    let healthy = TestBackend::start("healthy").await;
    // Round robin starts every other call on the failing endpoint (P2C might never pick it).
    let policy = "---\nkind: ServicePolicy\nmetadata: {name: svc}\nspec:\n  loadBalancer: {policy: round-robin}\n  circuitBreaker: {outlierDetection: {consecutiveFailures: 0}}\n";
    let (_hosts, caller) = two_hosts(&failing, &healthy, policy);
    all_answered_by(&caller, 20, "healthy").await;
    assert!(failing.requests() >= 5, "the failing endpoint was tried");
    assert_counted(&caller, "hyphae_retries_total", "service=\"svc\"", 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_is_not_retried_unless_the_policy_says_so() {
    let backend = TestBackend::start_as("b", Behaviour::status(503)).await;
    let (host, caller) = one_host(&backend, "");
    let answer = send(
        &http1_client(),
        "POST",
        &url(&caller, "svc", "/charge"),
        "card=1",
    )
    .await;
    assert_eq!(answer.status, 503);
    assert_eq!(backend.requests(), 1, "a POST reached the app once");
    let answer = get(&http1_client(), &url(&caller, "svc", "/")).await;
    assert_eq!(answer.status, 503);
    assert_eq!(backend.requests(), 1 + 3, "a GET is tried 1 + 2 times");

    let allowing = caller_agent(
        AGENT,
        "svc",
        &[endpoint(&host, "one")],
        "---\nkind: ServicePolicy\nmetadata: {name: svc}\nspec:\n  retries: {nonIdempotent: true, attempts: 1}\n",
    );
    let before = backend.requests();
    send(
        &http1_client(),
        "POST",
        &url(&allowing, "svc", "/charge"),
        "card=1",
    )
    .await;
    assert_eq!(
        backend.requests() - before,
        2,
        "the policy allows one retry of a POST"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_holds_under_a_total_outage() {
    let backend = TestBackend::start_as("down", Behaviour::status(503)).await;
    let policy = "---\nkind: ServicePolicy\nmetadata: {name: svc}\nspec:\n  retries:\n    attempts: 3\n    backoff: {base: 1ms, max: 1ms}\n    budget: {ratio: 0.2, minPerSecond: 1, window: 1s}\n  circuitBreaker:\n    outlierDetection: {consecutiveFailures: 0}\n";
    let (_host, caller) = one_host(&backend, policy);
    let client = http1_client();
    let requests = 200;
    let started = std::time::Instant::now();
    for _ in 0..requests {
        assert_eq!(get(&client, &url(&caller, "svc", "/")).await.status, 503);
    }
    let seconds = started.elapsed().as_secs_f64().ceil();
    let attempts = backend.requests() as f64;
    // Every request is tried once; retries are 20% of requests plus 1 per second elapsed.
    let bound = requests as f64 * 1.2 + seconds + 1.0;
    assert!(
        attempts <= bound,
        "{attempts} attempts for {requests} requests (bound {bound})"
    );
    assert!(attempts > requests as f64, "some retries were made");
    assert_counted(
        &caller,
        "hyphae_retry_budget_exhausted_total",
        "service=\"svc\"",
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_try_timeout_moves_the_call_to_another_endpoint() {
    let slow = TestBackend::start_as("slow", Behaviour::delay(Duration::from_secs(5))).await;
    let fast = TestBackend::start("fast").await;
    // Round robin makes every other call start on the slow endpoint.
    let policy = "---\nkind: ServicePolicy\nmetadata: {name: svc}\nspec:\n  loadBalancer: {policy: round-robin}\n  retries: {perTryTimeout: 200ms, on: [timeout]}\n  circuitBreaker: {outlierDetection: {consecutiveFailures: 0}}\n";
    let (_hosts, caller) = two_hosts(&slow, &fast, policy);
    all_answered_by(&caller, 5, "fast").await;
    assert!(
        slow.requests() >= 2,
        "the slow endpoint was tried and timed out"
    );
    assert_counted(&caller, "hyphae_retries_total", "service=\"svc\"", 2.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejected_endpoint_gets_no_traffic_until_its_ejection_ends() {
    let bad = TestBackend::start_as("bad", Behaviour::status(500)).await;
    let good = TestBackend::start("good").await;
    let policy = "---\nkind: ServicePolicy\nmetadata: {name: svc}\nspec:\n  loadBalancer: {policy: round-robin}\n  circuitBreaker:\n    outlierDetection: {consecutiveFailures: 3, baseEjectionTime: 1s, maxEjectedShare: 0.5}\n";
    let (_hosts, caller) = two_hosts(&bad, &good, policy);
    let client = http1_client();
    // Round robin alternates, so six calls give the bad endpoint its three failures.
    for _ in 0..6 {
        get(&client, &url(&caller, "svc", "/")).await;
    }
    assert_eq!(bad.requests(), 3);
    assert_eq!(
        caller
            .metric("hyphae_outlier_ejections_total", "service=\"svc\"")
            .await,
        1.0
    );
    let ejected = get(&client, &format!("http://{}/endpoints", caller.admin)).await;
    assert!(String::from_utf8_lossy(&ejected.body).contains("\"ejected\""));
    for _ in 0..10 {
        assert_eq!(get(&client, &url(&caller, "svc", "/")).await.status, 200);
    }
    assert_eq!(bad.requests(), 3, "no traffic while ejected");
    // After the ejection ends the endpoint gets traffic again.
    eventually("the endpoint to come back", || async {
        get(&client, &url(&caller, "svc", "/")).await;
        bad.requests() > 3
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_limit_answers_a_fast_503() {
    let backend = TestBackend::start_as("slow", Behaviour::delay(Duration::from_secs(3))).await;
    let policy = "---\nkind: ServicePolicy\nmetadata: {name: svc}\nspec:\n  circuitBreaker: {maxRequests: 2}\n";
    let (_host, caller) = one_host(&backend, policy);
    let target = url(&caller, "svc", "/");
    let hanging: Vec<_> = (0..2)
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move { get(&http1_client(), &target).await.status })
        })
        .collect();
    eventually("both calls to reach the app", || async {
        backend.requests() >= 2
    })
    .await;
    let answer = get(&http1_client(), &target).await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.header("hyphae-error"), Some("max-requests"));
    assert_eq!(
        backend.requests(),
        2,
        "the third call never reached the app"
    );
    for call in hanging {
        assert_eq!(call.await.unwrap(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_sends_most_traffic_to_the_faster_endpoint() {
    let slow = TestBackend::start_as("slow", Behaviour::delay(Duration::from_millis(50))).await;
    let fast = TestBackend::start_as("fast", Behaviour::delay(Duration::from_millis(5))).await;
    let (_hosts, caller) = two_hosts(&slow, &fast, "");
    let client = http1_client();
    for _ in 0..100 {
        assert_eq!(get(&client, &url(&caller, "svc", "/")).await.status, 200);
    }
    let share = fast.requests() as f64 / (fast.requests() + slow.requests()) as f64;
    assert!(
        share >= 0.8,
        "fast endpoint got {:.0}% of traffic",
        share * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_stay_in_the_site_and_spill_over_only_when_it_fails() {
    let near = TestBackend::start("near").await;
    let far = TestBackend::start("far").await;
    let a = host_agent(AGENT, "a", "svc", &near);
    let b = host_agent(AGENT, "b", "svc", &far);
    let policy = "---\nkind: ServicePolicy\nmetadata: {name: svc}\nspec:\n  circuitBreaker:\n    outlierDetection: {consecutiveFailures: 2, maxEjectedShare: 0.5}\n";
    let caller = caller_agent(
        AGENT,
        "svc",
        &[endpoint(&a, "one"), endpoint(&b, "two")],
        policy,
    );
    let client = http1_client();
    for _ in 0..20 {
        assert_eq!(
            &get(&client, &url(&caller, "svc", "/")).await.body[..],
            b"near"
        );
    }
    assert_eq!(
        far.requests(),
        0,
        "the other site gets nothing while the local one is healthy"
    );
    near.set(Behaviour::status(503));
    let mut spilled = 0;
    for _ in 0..20 {
        let answer = get(&client, &url(&caller, "svc", "/")).await;
        if &answer.body[..] == b"far" {
            spilled += 1;
        }
    }
    assert!(
        spilled >= 15,
        "only {spilled} of 20 calls spilled to the other site"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_megabytes_stream_up_and_down() {
    let backend = TestBackend::start("big").await;
    let (_host, caller) = one_host(&backend, "");
    let upload = vec![b'u'; 10 * 1024 * 1024];
    let answer = send(
        &http1_client(),
        "POST",
        &url(&caller, "svc", "/echo"),
        upload.clone(),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body.len(), upload.len());
    assert!(answer.body.iter().all(|&b| b == b'u'));
    let answer = get(&http2_client(), &url(&caller, "svc", "/bytes/10485760")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body.len(), 10 * 1024 * 1024);
    let sent = caller
        .metric("hyphae_http_body_bytes_total", "direction=\"sent\"")
        .await;
    let received = caller
        .metric("hyphae_http_body_bytes_total", "direction=\"received\"")
        .await;
    assert_eq!(sent, upload.len() as f64);
    assert!(received >= 2.0 * upload.len() as f64, "{received}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_calls_then_exits_0() {
    let backend = TestBackend::start_as("slow", Behaviour::delay(Duration::from_millis(800))).await;
    let (_host, mut caller) = one_host(&backend, "");
    let target = url(&caller, "svc", "/");
    let in_flight = tokio::spawn(async move { get(&http1_client(), &target).await });
    eventually("the call to reach the app", || async {
        backend.requests() > 0
    })
    .await;
    caller.signal(Signal::TERM);
    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, 200, "the in-flight call finished");
    assert_eq!(caller.exit_code(DEADLINE).await, Some(0));
    let refused = tokio::net::TcpStream::connect(caller.upstream("svc")).await;
    assert!(refused.is_err(), "the listener is closed after the drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_bad_file_keeps_serving_the_old_config() {
    let one = TestBackend::start("one").await;
    let two = TestBackend::start("two").await;
    let a = host_agent(AGENT, "a", "svc", &one);
    let b = host_agent(AGENT, "b", "svc", &two);
    let port = upstream_port();
    let caller = Agent::start_yaml(
        Path::new(AGENT),
        "caller",
        &caller_config("svc", &[endpoint(&a, "one")], port, ""),
    )
    .expect("start caller");
    let client = http1_client();
    assert_eq!(
        &get(&client, &url(&caller, "svc", "/")).await.body[..],
        b"one"
    );

    reload(
        &caller,
        "kind: AgentConfig\nmetadata: {name: caller}\nspec:\n  site: [broken\n",
        "rejected",
    )
    .await;
    assert_eq!(
        &get(&client, &url(&caller, "svc", "/")).await.body[..],
        b"one",
        "old config still served"
    );

    let new_config = caller_config("svc", &[endpoint(&b, "one")], port, "");
    reload(&caller, &new_config, "applied").await;
    assert_eq!(
        &get(&client, &url(&caller, "svc", "/")).await.body[..],
        b"two",
        "new config served"
    );
    assert_eq!(caller.metric("hyphae_config_revision", "").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_split_by_weight_and_match_headers() {
    let v1 = TestBackend::start("v1").await;
    let v2 = TestBackend::start("v2").await;
    let a = host_agent(AGENT, "a", "svc", &v1);
    let b = host_agent(AGENT, "b", "svc", &v2);
    let endpoints = [
        format!(
            "{{address: \"{}\", site: one, tags: {{version: v1}}}}",
            a.inbound
        ),
        format!(
            "{{address: \"{}\", site: one, tags: {{version: v2}}}}",
            b.inbound
        ),
    ];
    let route = "---\nkind: Route\nmetadata: {name: canary}\nspec:\n  service: svc\n  rules:\n    - matches: [{headers: [{name: x-canary, exact: always}]}]\n      backends: [{service: svc, subset: {version: v2}}]\n      responseHeaders: {set: {x-rule: canary}}\n    - backends:\n        - {service: svc, subset: {version: v1}, weight: 80}\n        - {service: svc, subset: {version: v2}, weight: 20}\n";
    let caller = caller_agent(AGENT, "svc", &endpoints, route);
    let client = http1_client();
    for _ in 0..5 {
        let request = http::Request::get(url(&caller, "svc", "/"))
            .header("x-canary", "always")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.headers()["x-backend"], "v2");
        assert_eq!(response.headers()["x-rule"], "canary");
    }
    let before = v2.requests();
    for _ in 0..200 {
        get(&client, &url(&caller, "svc", "/")).await;
    }
    let to_v2 = v2.requests() - before;
    assert!(
        (15..=75).contains(&to_v2),
        "{to_v2} of 200 went to the 20% canary"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_or_malformed_request_heads_get_closed_or_a_400() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = TestBackend::start("b").await;
    let host = host_agent(AGENT, "host", "svc", &backend);
    let policies = "  limits: {headerReadTimeout: 300ms}\n";
    // The limit belongs to the caller's own AgentConfig: splice it into its spec.
    let config = caller_config("svc", &[endpoint(&host, "one")], upstream_port(), "")
        .replace("  staticServices:", &format!("{policies}  staticServices:"));
    let caller = Agent::start_yaml(Path::new(AGENT), "caller", &config).expect("start caller");

    // A client that starts a request head and never finishes it is cut off.
    let mut slow = tokio::net::TcpStream::connect(caller.upstream("svc"))
        .await
        .unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: svc\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(DEADLINE, slow.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the connection was not closed by the header read timeout"
    );
    assert_eq!(backend.requests(), 0);

    // A malformed head gets a 400 from the agent, not a crash or a hang.
    let answer = raw_exchange(
        caller.upstream("svc"),
        b"GET / HTTP/1.1\r\nHost: svc\r\nBad Header Line\r\n\r\n",
    )
    .await;
    assert!(
        answer.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // The agent still serves.
    assert_eq!(
        get(&http1_client(), &url(&caller, "svc", "/")).await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_http1_requests_are_answered_in_order() {
    let backend = TestBackend::start("b").await;
    let (_host, caller) = one_host(&backend, "");
    // Three requests in one write; the third asks for the connection to close.
    let answers = raw_exchange(
        caller.upstream("svc"),
        b"GET /bytes/1 HTTP/1.1\r\nHost: svc\r\n\r\n\
          GET /bytes/2 HTTP/1.1\r\nHost: svc\r\n\r\n\
          GET /bytes/3 HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n",
    )
    .await;
    let text = String::from_utf8_lossy(&answers);
    let bodies: Vec<&str> = text
        .split("HTTP/1.1 ")
        .skip(1)
        .map(|answer| answer.rsplit("\r\n\r\n").next().unwrap_or_default())
        .collect();
    assert_eq!(bodies, vec!["x", "xx", "xxx"], "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_waiting_for_a_peer_connection_are_capped_by_max_pending() {
    // A peer whose accept queue is full: new connections hang in the handshake until the
    // connect timeout, and the request that started one is pending all that time.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let full = socket.listen(1).unwrap();
    let silent_address = full.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..3 {
        if let Ok(Ok(stream)) = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            tokio::net::TcpStream::connect(silent_address),
        )
        .await
        {
            fillers.push(stream);
        }
    }
    let policy = "---\nkind: ServicePolicy\nmetadata: {name: svc}\nspec:\n  timeouts: {connect: 2s}\n  retries: {attempts: 0}\n  circuitBreaker: {maxPending: 1}\n";
    let caller = caller_agent(
        AGENT,
        "svc",
        &[format!("{{address: \"{silent_address}\"}}")],
        policy,
    );
    let target = url(&caller, "svc", "/");
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move { get(&http1_client(), &target).await })
        })
        .collect();
    let mut reasons = Vec::new();
    for call in calls {
        let answer = call.await.unwrap();
        reasons.push((
            answer.status.as_u16(),
            answer
                .header("hyphae-error")
                .unwrap_or_default()
                .to_string(),
        ));
    }
    reasons.sort();
    // One call waited for the connection and timed out; the others were refused at once.
    assert_eq!(
        reasons,
        vec![
            (503, "max-pending".to_string()),
            (503, "max-pending".to_string()),
            (504, "connect-timeout".to_string()),
        ]
    );
    drop(fillers);
}

//! The `hyphae` binary as operators run it: real process, real files, exit codes and output;
//! a canned HTTPS server on a real socket stands in for control planes the registry commands
//! meet.

use std::path::Path;
use std::process::{Command, Output};

use hyphae_integration::command::succeeds;

fn hyphae(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hyphae"))
        .args(args)
        .output()
        .expect("run hyphae")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Writes `text` to `dir/name`, returning the path.
fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write file");
    path.display().to_string()
}

fn examples() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../policies/examples")
        .display()
        .to_string()
}

#[test]
fn validate_accepts_the_examples_as_a_complete_set() {
    let output = hyphae(&["validate", "--complete", &examples()]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert!(
        stdout(&output).starts_with("ok: 13 objects in 8 files"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn validate_reports_every_error_in_every_file_and_exits_1() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let first = write(
        &scratch,
        "a.yaml",
        "kind: ServicePolicy\nmetadata:\n  name: payments\nspec:\n  retries:\n    perTryTimeout: 5 sec\n",
    );
    let second = write(
        &scratch,
        "b.yaml",
        "kind: Route\nmetadata: {name: r}\nspec:\n  service: payments\n  rules:\n    - backends: [{service: payments, wieght: 2}]\n",
    );
    let output = hyphae(&["validate", &scratch.path().display().to_string()]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "{first}:6:20: error: spec.retries.perTryTimeout: invalid duration `5 sec`"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{second}:6:38: error: spec.rules[0].backends[0].wieght: unknown field `wieght`"
        )),
        "{text}"
    );
    assert!(text.contains("= help: did you mean `weight`?"), "{text}");
    assert!(
        text.ends_with("invalid: 2 errors, 0 warnings in 2 files\n"),
        "{text}"
    );
}

#[test]
fn validate_speaks_json_for_machines() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let file = write(
        &scratch,
        "x.yaml",
        "kind: ServicePolicy\nmetadata: {name: x}\nspec:\n  retries: {attempts: 12}\n",
    );
    let output = hyphae(&["validate", "--format", "json", &file]);
    assert_eq!(output.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json output");
    assert_eq!(json["valid"], false);
    let diagnostic = &json["diagnostics"][0];
    assert_eq!(diagnostic["path"], "spec.retries.attempts");
    assert_eq!(
        (diagnostic["line"].as_u64(), diagnostic["column"].as_u64()),
        (Some(4), Some(23))
    );
    assert_eq!(diagnostic["severity"], "error");
}

#[test]
fn unknown_references_are_warnings_unless_the_set_is_complete() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let file = write(
        &scratch,
        "route.yaml",
        "kind: Route\nmetadata: {name: r}\nspec:\n  service: catalog\n  rules:\n    - backends: [{service: catalog}]\n",
    );
    let partial = hyphae(&["validate", &file]);
    assert_eq!(partial.status.code(), Some(0), "{}", stdout(&partial));
    assert!(stdout(&partial).contains("warning: spec.service: service `catalog` is not defined"));
    let complete = hyphae(&["validate", "--complete", &file]);
    assert_eq!(complete.status.code(), Some(1), "{}", stdout(&complete));
}

#[test]
fn schema_prints_json_schema_per_kind_and_refuses_unknown_kinds() {
    let all = hyphae(&["schema"]);
    assert_eq!(all.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&all.stdout).expect("schema json");
    assert_eq!(
        schema["oneOf"].as_array().map(Vec::len),
        Some(6),
        "{schema}"
    );
    let route = hyphae(&["schema", "Route"]);
    let schema: serde_json::Value = serde_json::from_slice(&route.stdout).expect("schema json");
    assert_eq!(schema["properties"]["kind"]["const"], "Route");
    let bad = hyphae(&["schema", "Rout"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("did you mean `Route`?"));
}

/// True when `program` can be run from `PATH`.
fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn completions_name_every_subcommand_in_each_shell_and_bash_parses_them() {
    use clap::CommandFactory;
    let command = hyphae_control_plane::cli::Cli::command();
    let subcommands: Vec<String> = command
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    assert!(subcommands.len() >= 7, "{subcommands:?}");
    for shell in ["bash", "zsh", "fish"] {
        let output = hyphae(&["completions", shell]);
        assert_eq!(output.status.code(), Some(0), "{shell}");
        let script = stdout(&output);
        for name in &subcommands {
            assert!(
                script.contains(name.as_str()),
                "{shell} completions do not name `{name}`"
            );
        }
        if shell == "bash" && installed("bash") {
            let scratch = tempfile::tempdir().expect("temp dir");
            let file = write(&scratch, "hyphae.bash", &script);
            succeeds("bash -n", Command::new("bash").args(["-n", &file]));
        }
    }
    let bad = hyphae(&["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2));
}

/// A stand-in control plane on a real socket, speaking TLS with a certificate from a root of
/// its own, that answers every request with `status` and `body` and reports each request line.
/// It stops with the test's runtime. Returns its address, the request lines and a file with
/// its root (for `--ca-file`).
async fn canned_server(
    status: &'static str,
    body: &'static str,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<String>,
    tempfile::NamedTempFile,
) {
    use hyphae_policies::tls::{self, Credentials, Trust};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let now = hyphae_control_plane::tokens::now_ms();
    let root = hyphae_control_plane::ca::generate("hyphae.local", now).expect("a root");
    let (chain, key) = hyphae_control_plane::pki::issue(
        &root,
        "hyphae.local",
        1,
        &Default::default(),
        now,
        std::time::Duration::from_secs(3600),
    )
    .expect("a node certificate");
    let credentials = Credentials::from_pem(&chain, &key).expect("credentials");
    let trust = Trust::from_pem(&root.cert_pem, None).expect("the root");
    let config =
        tls::server_config(&credentials, &trust, true, &[b"http/1.1"]).expect("a TLS server");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let roots = tempfile::NamedTempFile::new().expect("a root file");
    std::fs::write(roots.path(), &root.cert_pem).expect("write the root");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let (requests, seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let Ok(stream) = acceptor.accept(stream).await else {
                continue;
            };
            let mut stream = BufReader::new(stream);
            let mut line = String::new();
            let mut request_line = None;
            while stream.read_line(&mut line).await.is_ok_and(|n| n > 0) && line != "\r\n" {
                request_line.get_or_insert_with(|| line.trim_end().to_string());
                line.clear();
            }
            let _ = requests.send(request_line.unwrap_or_default());
            let answer = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.get_mut().write_all(answer.as_bytes()).await;
            let _ = stream.get_mut().shutdown().await;
        }
    });
    (address, seen, roots)
}

async fn hyphae_at(
    server: std::net::SocketAddr,
    roots: &tempfile::NamedTempFile,
    args: &[&str],
) -> Output {
    let mut args: Vec<String> = args.iter().map(|a| (*a).to_string()).collect();
    args.extend(["--server".to_string(), server.to_string()]);
    args.extend(["--ca-file".to_string(), roots.path().display().to_string()]);
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        hyphae(&args)
    })
    .await
    .expect("run hyphae")
}

#[tokio::test]
async fn services_and_nodes_say_when_the_control_plane_is_too_old_to_list_them() {
    let (server, _, roots) = canned_server(
        "404 Not Found",
        r#"{"code":"unknown-path","message":"no API at GET /v1/services"}"#,
    )
    .await;
    for (command, path) in [("services", "/v1/services"), ("nodes", "/v1/nodes")] {
        let output = hyphae_at(server, &roots, &[command]).await;
        let error = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{error}");
        assert!(
            error.contains(&format!(
                "does not serve GET {path}: it is older than this hyphae CLI"
            )),
            "{error}"
        );
    }
}

#[tokio::test]
async fn nodes_reads_the_registry_as_a_table_or_json_with_stale_reads_passed_on() {
    const NODES: &str = r#"[{"name":"app-1","site":"us-east","address":"10.0.0.2:4143","agentVersion":"0.1.0","instances":[{"service":"catalog","port":9000,"protocol":"grpc","health":"critical"}],"revision":17}]"#;
    let (server, mut requests, roots) = canned_server("200 OK", NODES).await;
    let output = hyphae_at(server, &roots, &["nodes", "--stale"]).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        stdout(&output),
        "NAME   SITE     ADDRESS        VERSION  INSTANCES  REVISION  LEASE\napp-1  us-east  10.0.0.2:4143  0.1.0    1          17        -\n"
    );
    assert_eq!(
        requests.recv().await.as_deref(),
        Some("GET /v1/nodes?stale=true HTTP/1.1")
    );
    let output = hyphae_at(server, &roots, &["nodes", "-o", "json"]).await;
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(json[0]["instances"][0]["health"], "critical");
    assert_eq!(
        requests.recv().await.as_deref(),
        Some("GET /v1/nodes HTTP/1.1")
    );
}

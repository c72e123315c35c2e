//! Launches a `hyphae-agent` binary with a configuration and reads the addresses it bound from
//! its ready line, so configs can say port 0. The agent is killed when dropped.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::Error;
use crate::eventually::eventually;
use crate::http::{get_text, metric_in};
use crate::process::{Process, READY_PATIENCE, Signal};

/// A running agent.
pub struct Agent {
    process: Process,
    /// Its configuration file (rewrite it and send SIGHUP to reload).
    pub config: PathBuf,
    /// Admin address.
    pub admin: SocketAddr,
    /// Inbound address.
    pub inbound: SocketAddr,
    /// HTTP proxy address, when enabled.
    pub http_proxy: Option<SocketAddr>,
    /// DNS server address (UDP and TCP), when enabled.
    pub dns: Option<SocketAddr>,
    /// Upstream ports by service.
    pub upstreams: Vec<(String, SocketAddr)>,
    /// A scratch directory the agent owns (see [`Agent::start_yaml`]), removed with it.
    _scratch: Option<tempfile::TempDir>,
}

impl Agent {
    /// Like [`Agent::command`], with no certificate or join settings added.
    fn plain_command(binary: &Path, config: &Path) -> Command {
        let mut command = Command::new(binary);
        command
            .arg("--config")
            .arg(config)
            .args(["--log-format", "human"])
            .env("HYPHAE_LOG", log_filter());
        command
    }
}

/// Test agents log warnings and errors, or what `HYPHAE_TEST_LOG` asks for (a `HYPHAE_LOG`
/// filter such as `hyphae_agent=debug,h2=trace`) when a failing test needs more.
const TEST_LOG: &str = "HYPHAE_TEST_LOG";

/// The log filter test agents run with (see [`TEST_LOG`]).
fn log_filter() -> String {
    std::env::var(TEST_LOG).unwrap_or_else(|_| "warn".to_string())
}

/// The node name in an agent config's text (`metadata: {name: X}` or `name: X` under
/// `metadata:`).
fn node_name(text: &str) -> Option<String> {
    let after = &text[text.find("metadata:")? + "metadata:".len()..];
    let after = &after[after.find("name:")? + "name:".len()..];
    let name: String = after
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '.')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// The services an agent config's text hosts (`- {name: X, port: N...}` entries).
fn hosted_services(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("- {name: "))
        .filter(|rest| rest.contains("port:"))
        .filter_map(|rest| rest.split([',', '}']).next())
        .map(|name| name.trim().to_string())
        .collect()
}

impl Agent {
    /// The command that runs `binary` on `config`, logging warnings and errors as text on
    /// stderr; add arguments or environment to it, then hand it to [`Agent::spawn`]. An agent
    /// whose config names a node of a cluster this process started joins it with that
    /// cluster's agent token and pinned root (see [`crate::trust`]).
    pub fn command(binary: &Path, config: &Path) -> Command {
        let mut command = Agent::plain_command(binary, config);
        let text = std::fs::read_to_string(config).unwrap_or_default();
        if text.contains("controlPlane:") {
            if let Some((server, trust)) = crate::trust::named_in(&text) {
                match trust.agent_token_file(&server) {
                    Ok(token_file) => {
                        command
                            .arg("--join-token-file")
                            .arg(token_file)
                            .arg("--ca-fingerprint")
                            .arg(&trust.fingerprint);
                    }
                    Err(error) => eprintln!("cannot give the agent a join token: {error}"),
                }
            }
        } else if let Some(node) = node_name(&text) {
            // An agent without a control plane gets its certificate from its operator: here,
            // the process's shared root.
            let out = config.with_file_name(format!("{node}-tls-{:08x}", rand::random::<u32>()));
            let cli = binary.with_file_name("hyphae");
            match crate::trust::issue_static(&cli, &node, &hosted_services(&text), &out) {
                Ok(()) => {
                    command.arg("--tls-dir").arg(&out);
                }
                Err(error) => eprintln!("cannot give the agent a certificate: {error}"),
            }
        }
        command
    }

    /// Starts `command` (from [`Agent::command`]) as agent `name` and waits for its ready line.
    pub fn spawn(name: &str, command: &mut Command, config: &Path) -> Result<Agent, Error> {
        let name = format!("agent {name}");
        let (process, ready) = Process::spawn_ready_json(&name, command, READY_PATIENCE)?;
        let bad = |what: &str| Error::BadReadyLine {
            name: name.clone(),
            line: ready.to_string(),
            reason: format!("no {what} address"),
        };
        let address = |v: &Value| v.as_str().and_then(|s| s.parse().ok());
        Ok(Agent {
            admin: address(&ready["admin"]).ok_or_else(|| bad("admin"))?,
            inbound: address(&ready["inbound"]).ok_or_else(|| bad("inbound"))?,
            http_proxy: address(&ready["httpProxy"]),
            dns: address(&ready["dns"]),
            upstreams: ready["upstreams"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .filter_map(|pair| {
                            Some((pair[0].as_str()?.to_string(), address(&pair[1])?))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            process,
            config: config.to_path_buf(),
            _scratch: None,
        })
    }

    /// Starts `binary` on the config file `config`, with `args` after it.
    pub fn start<S: AsRef<OsStr>>(
        binary: &Path,
        name: &str,
        config: &Path,
        args: &[S],
    ) -> Result<Agent, Error> {
        let dev = args.iter().any(|arg| arg.as_ref() == "--dev");
        let mut command = if dev {
            // A `--dev` agent joins its own control plane.
            Agent::plain_command(binary, config)
        } else {
            Agent::command(binary, config)
        };
        Agent::spawn(name, command.args(args), config)
    }

    /// Writes `yaml` to `dir/<name>.yaml` and starts `binary` on it.
    pub fn start_in(binary: &Path, dir: &Path, name: &str, yaml: &str) -> Result<Agent, Error> {
        Agent::start_in_with::<&str>(binary, dir, name, yaml, &[])
    }

    /// Like [`Agent::start_in`], with `args` after the config (`--dev`...).
    pub fn start_in_with<S: AsRef<OsStr>>(
        binary: &Path,
        dir: &Path,
        name: &str,
        yaml: &str,
        args: &[S],
    ) -> Result<Agent, Error> {
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(&config, yaml).map_err(|source| Error::Write {
            path: config.display().to_string(),
            source,
        })?;
        Agent::start(binary, name, &config, args)
    }

    /// Writes `yaml` to a scratch directory of the agent's own (removed when it is dropped) and
    /// starts `binary` on it.
    pub fn start_yaml(binary: &Path, name: &str, yaml: &str) -> Result<Agent, Error> {
        let scratch = tempfile::Builder::new()
            .prefix(&format!("hyphae-agent-{name}-"))
            .tempdir()
            .map_err(|source| Error::Write {
                path: std::env::temp_dir().display().to_string(),
                source,
            })?;
        let mut agent = Agent::start_in(binary, scratch.path(), name, yaml)?;
        agent._scratch = Some(scratch);
        Ok(agent)
    }

    /// The upstream port of `service`; panics when the config has none.
    pub fn upstream(&self, service: &str) -> SocketAddr {
        self.upstreams
            .iter()
            .find(|(s, _)| s == service)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("the agent has no upstream port for {service}"))
    }

    /// Sends `signal` to the agent; fails the test when it cannot be delivered.
    pub fn signal(&self, signal: Signal) {
        if let Err(error) = self.process.signal(signal) {
            panic!("cannot signal {}: {error}", self.process.name());
        }
    }

    /// Waits up to `patience` for the agent to exit; its exit code (`None` when it still runs
    /// or was killed by a signal).
    pub async fn exit_code(&mut self, patience: Duration) -> Option<i32> {
        self.process.exited(patience).await?.code()
    }

    /// The process, for what this type does not wrap.
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Its `/metrics` page (empty when the admin port does not answer).
    pub async fn metrics(&self) -> String {
        get_text(self.admin, "/metrics").await
    }

    /// A counter or gauge from its `/metrics`, summed over the series whose labels contain
    /// `labels`; 0 when absent.
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        metric_in(&self.metrics().await, name, labels)
    }

    /// Polls `/ready` until it answers 200 (the agent has its certificate and a usable state);
    /// fails the test after [`crate::DEADLINE`].
    pub async fn wait_ready(&self) {
        eventually("the agent to be ready", || async {
            crate::http::request("GET", self.admin, "/ready", "")
                .await
                .is_some_and(|answer| answer.status.is_success())
        })
        .await;
    }

    /// Polls [`Agent::metric`] until it reaches `at_least`; fails the test after
    /// [`crate::DEADLINE`].
    pub async fn metric_reaches(&self, name: &str, labels: &str, at_least: f64) {
        let what = format!("{name}{{{labels}}} to reach {at_least}");
        eventually(&what, || async {
            self.metric(name, labels).await >= at_least
        })
        .await;
    }
}

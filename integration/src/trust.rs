//! What the clusters this process starts trust and hand out, looked up by any node's address:
//! the root (to check a node's certificate), its fingerprint (what joining hosts pin), and join
//! tokens for agents and control-plane nodes, made with the real `hyphae` CLI. The HTTP helpers
//! talk TLS to every address registered here, the CLI helpers give the CLI the root, and an
//! agent pointed at a registered node gets a join token.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use hyphae_policies::tls::{self, Credentials, Trust};
use rustls::ClientConfig;

use crate::Error;

/// One cluster's root and join tokens.
#[derive(Debug)]
pub struct ClusterTrust {
    /// The root, PEM.
    pub roots_pem: String,
    /// A file holding the root (`HYPHAE_CA_FILE` for the CLI).
    pub roots_file: PathBuf,
    /// `sha256:<hex>` of the root, as `hyphae ca` prints it.
    pub fingerprint: String,
    cli: PathBuf,
    dir: PathBuf,
    agent_token: Mutex<Option<PathBuf>>,
    /// Node certificates got so far, by node name: a join takes a name once.
    nodes: Mutex<BTreeMap<String, Credentials>>,
    /// The network namespace the cluster's nodes run in, where its CLI calls run too.
    namespace: Option<String>,
}

fn clusters() -> &'static Mutex<BTreeMap<String, Arc<ClusterTrust>>> {
    static CLUSTERS: OnceLock<Mutex<BTreeMap<String, Arc<ClusterTrust>>>> = OnceLock::new();
    CLUSTERS.get_or_init(Mutex::default)
}

/// Records that the nodes at `addresses` belong to the cluster `trust` describes.
pub fn register(addresses: &[SocketAddr], trust: Arc<ClusterTrust>) {
    if let Ok(mut clusters) = clusters().lock() {
        for address in addresses {
            clusters.insert(address.to_string(), Arc::clone(&trust));
        }
    }
}

/// Reads the root of the node keeping its data in `data_dir` (see [`ClusterTrust::read`]) and
/// registers it under `addresses`: for nodes a test starts by hand (a lone node, the `--dev`
/// control plane). `cli` is the `hyphae` binary; `folder` a scratch directory of the test's.
pub fn register_node(
    cli: &Path,
    folder: &Path,
    data_dir: &Path,
    addresses: &[SocketAddr],
) -> Result<Arc<ClusterTrust>, Error> {
    let trust = Arc::new(ClusterTrust::read(cli, folder, data_dir)?);
    register(addresses, Arc::clone(&trust));
    Ok(trust)
}

/// The cluster the node at `address` (`host:port`) belongs to, if this process started it.
pub fn of(address: &str) -> Option<Arc<ClusterTrust>> {
    clusters().lock().ok()?.get(address).cloned()
}

/// A registered node a config text names (an agent's `controlPlane` list), with its cluster.
pub fn named_in(text: &str) -> Option<(String, Arc<ClusterTrust>)> {
    let clusters = clusters().lock().ok()?;
    clusters
        .iter()
        .find(|(address, _)| text.contains(address.as_str()))
        .map(|(address, trust)| (address.clone(), Arc::clone(trust)))
}

impl ClusterTrust {
    /// Reads the root a node keeps in `node_data_dir` (`tls/ca.pem`), copies it to `dir`, and
    /// remembers `cli` (the `hyphae` binary) to make join tokens with.
    pub fn read(cli: &Path, dir: &Path, node_data_dir: &Path) -> Result<ClusterTrust, Error> {
        let fail = |what: String| Error::Credentials(what);
        let path = node_data_dir.join("tls/ca.pem");
        let roots_pem = std::fs::read_to_string(&path)
            .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
        let roots = tls::certificates(&roots_pem).map_err(|e| fail(e.to_string()))?;
        let roots_file = dir.join("cluster-ca.pem");
        std::fs::write(&roots_file, &roots_pem).map_err(|source| Error::Write {
            path: roots_file.display().to_string(),
            source,
        })?;
        Ok(ClusterTrust {
            fingerprint: format!("sha256:{}", tls::fingerprint(roots[0].as_ref())),
            roots_pem,
            roots_file,
            cli: cli.to_path_buf(),
            dir: dir.to_path_buf(),
            agent_token: Mutex::new(None),
            nodes: Mutex::default(),
            namespace: None,
        })
    }

    /// The same, for a cluster whose nodes run in the network namespace `namespace` (see
    /// [`crate::netns`]): the CLI calls made for it run there.
    pub fn in_namespace(self, namespace: Option<&str>) -> ClusterTrust {
        ClusterTrust {
            namespace: namespace.map(str::to_string),
            ..self
        }
    }

    /// The network namespace its nodes run in, if not this process's.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// A TLS client configuration that checks a node's certificate against the root and
    /// presents `credentials` when given.
    pub fn client_config(
        &self,
        credentials: Option<&Credentials>,
        alpn: &[&[u8]],
    ) -> Result<Arc<ClientConfig>, Error> {
        let trust = Trust::from_pem(&self.roots_pem, None)
            .map_err(|e| Error::Credentials(e.to_string()))?;
        tls::client_config(&trust, credentials, alpn).map_err(|e| Error::Credentials(e.to_string()))
    }

    /// A new join token made through `server` with `hyphae token create` (admin token of this
    /// process), its secret in an owner-only file; `control_plane` for nodes.
    pub fn new_join_token(
        &self,
        server: &str,
        control_plane: bool,
        uses: u32,
    ) -> Result<PathBuf, Error> {
        let uses = uses.to_string();
        let mut args = vec!["token", "create", "--uses", &uses, "--ttl", "24h"];
        if control_plane {
            args.push("--control-plane");
        }
        let output = crate::netns::command_in(self.namespace(), &self.cli)
            .args(&args)
            .env("HYPHAE_SERVER", server)
            .env("HYPHAE_TOKEN", crate::credentials::admin_token())
            .env("HYPHAE_CA_FILE", &self.roots_file)
            .env_remove("HYPHAE_TOKEN_FILE")
            .env_remove("HYPHAE_CA_FINGERPRINT")
            .output()
            .map_err(|e| Error::Credentials(format!("cannot run {}: {e}", self.cli.display())))?;
        if !output.status.success() {
            return Err(Error::Credentials(format!(
                "hyphae token create failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let secret = stdout.lines().next().unwrap_or_default().trim().to_string();
        let path = self
            .dir
            .join(format!("join-token-{}", rand::random::<u32>()));
        crate::credentials::write_secret_file(&path, &secret).map_err(|source| Error::Write {
            path: path.display().to_string(),
            source,
        })?;
        Ok(path)
    }

    /// The agents' join token of this cluster (many uses, made once through `server`).
    pub fn agent_token_file(&self, server: &str) -> Result<PathBuf, Error> {
        let mut held = self
            .agent_token
            .lock()
            .map_err(|_| Error::Credentials("a poisoned lock".into()))?;
        if let Some(path) = held.as_ref() {
            return Ok(path.clone());
        }
        let path = self.new_join_token(server, false, 10_000)?;
        *held = Some(path.clone());
        Ok(path)
    }
}

impl ClusterTrust {
    /// A node certificate for a host named `name` hosting `services`, got the way an agent
    /// gets one (a join through `server` with the agents' token), once per name (the cluster
    /// lets a join take a name once): for tests that speak to the agent API themselves.
    pub async fn node_credentials(
        &self,
        server: &str,
        name: &str,
        services: &[&str],
    ) -> Result<Credentials, Error> {
        let fail = |what: String| Error::Credentials(what);
        if let Some(known) = self
            .nodes
            .lock()
            .ok()
            .and_then(|nodes| nodes.get(name).cloned())
        {
            return Ok(known);
        }
        let token_file = self.agent_token_file(server)?;
        let token = std::fs::read_to_string(&token_file)
            .map_err(|e| fail(format!("cannot read {}: {e}", token_file.display())))?;
        let (key, csr) =
            hyphae_policies::tls::join::key_and_request().map_err(|e| fail(e.to_string()))?;
        let request = serde_json::json!({
            "token": token.trim(),
            "name": name,
            "site": "default",
            "services": services,
            "csrPem": csr,
        });
        let (status, body, _) = hyphae_policies::tls::join::post_pinned(
            server,
            hyphae_policies::registry::JOIN_PATH,
            request.to_string().into_bytes(),
            &self.fingerprint,
            std::time::Duration::from_secs(20),
        )
        .await
        .map_err(|e| fail(e.to_string()))?;
        if !status.is_success() {
            return Err(fail(format!(
                "the join of {name} was refused: {status} {}",
                String::from_utf8_lossy(&body)
            )));
        }
        let joined: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| fail(e.to_string()))?;
        let chain = format!(
            "{}{}",
            joined["certPem"].as_str().unwrap_or_default(),
            joined["caPem"].as_str().unwrap_or_default()
        );
        let credentials = Credentials::from_pem(&chain, &key).map_err(|e| fail(e.to_string()))?;
        if let Ok(mut nodes) = self.nodes.lock() {
            nodes.insert(name.to_string(), credentials.clone());
        }
        Ok(credentials)
    }
}

/// The root every cluster and static agent this process starts shares (made once, with the
/// real `hyphae ca create`, in a directory that lives as long as the process): so agents
/// without a control plane (their certificates issued from it with `hyphae ca issue`) and
/// agents that joined a cluster (started with `--init --ca-dir` on it) trust each other.
/// `cli` is the `hyphae` binary.
pub fn shared_root(cli: &Path) -> Result<&'static Path, Error> {
    static ROOT: OnceLock<Result<tempfile::TempDir, String>> = OnceLock::new();
    let made = ROOT.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("hyphae-test-ca-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let output = std::process::Command::new(cli)
            .args(["ca", "create", "--dir"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", cli.display()))?;
        if !output.status.success() {
            return Err(format!(
                "hyphae ca create failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(dir)
    });
    match made {
        Ok(dir) => Ok(dir.path()),
        Err(why) => Err(Error::Credentials(why.clone())),
    }
}

/// Issues a node certificate for `node` hosting `services` from the [`shared_root`] into
/// `out` (a TLS directory an agent takes with `--tls-dir`).
pub fn issue_static(cli: &Path, node: &str, services: &[String], out: &Path) -> Result<(), Error> {
    let root = shared_root(cli)?;
    let mut command = std::process::Command::new(cli);
    command
        .args(["ca", "issue", "--ca"])
        .arg(root)
        .args(["--node", node, "--out"])
        .arg(out);
    for service in services {
        command.args(["--service", service]);
    }
    let output = command
        .output()
        .map_err(|e| Error::Credentials(format!("cannot run {}: {e}", cli.display())))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Credentials(format!(
            "hyphae ca issue failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

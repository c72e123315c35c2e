//! This host's identity in the mesh: its node certificate (`spiffe://<domain>/node/<name>`,
//! and `.../service/<name>` for each service it hosts), kept in `<dataDir>/tls/`. A host
//! without one joins once, with a join token and the root's pinned fingerprint
//! (`spec.join`), in the background while the agent serves what it has; the private key never
//! leaves the host. From then on the agent renews the
//! certificate at two thirds of its life over mutual TLS ([`keep_renewed`]), and keeps working
//! on the current one while the control plane is unreachable, warning as expiry nears.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwapOption;
use hyphae_policies::registry::{JOIN_PATH, JoinRequest, Joined, RENEW_PATH, RenewRequest};
use hyphae_policies::secret_file;
use hyphae_policies::tls::files::CertificateFiles;
use hyphae_policies::tls::join::{key_and_request, post_pinned};
use hyphae_policies::tls::{self, Credentials, Kind, Trust};
use rustls::{ClientConfig, ServerConfig};
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::control_plane_client::ControlPlaneClient;

/// How long one join attempt may take.
const JOIN_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// First wait before a join is tried again.
const JOIN_RETRY_MIN: Duration = Duration::from_millis(200);
/// Longest wait between join attempts.
const JOIN_RETRY_MAX: Duration = Duration::from_secs(10);
/// How long a renewal request may take.
const RENEW_TIMEOUT: Duration = Duration::from_secs(10);
/// After the first failed look at the cluster's roots, every how many more failures in a row
/// the agent warns again (a look every 30 s at most: about every five minutes).
const ROOTS_UNREAD_WARN_EVERY: u32 = 10;
/// From when before expiry the agent warns at every check that it could not renew.
const EXPIRY_WARNING: Duration = Duration::from_secs(3600);

/// The host's certificate, the roots it trusts and the TLS configurations built from them.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Where it is kept.
    pub files: CertificateFiles,
    /// Its certificate and key; replaced on renewal.
    pub credentials: Credentials,
    /// The roots, and the trust domain every peer must be in.
    pub trust: Trust,
    /// How it talks to the control plane: HTTP/2, presenting its certificate.
    pub control_plane: Arc<ClientConfig>,
    /// How it talks to peer agents: HTTP/2, presenting its certificate, checking theirs.
    pub peers: Arc<ClientConfig>,
    /// How its inbound port answers peer agents: HTTP/2, a client certificate required.
    pub inbound: Arc<ServerConfig>,
}

/// Where the agent's identity is, once it has one: shared by the parts that use it (the
/// tunnel to peers, the inbound port), filled by [`run`], replaced never (renewal replaces the
/// certificate inside [`Identity::credentials`]).
pub type IdentitySlot = Arc<ArcSwapOption<Identity>>;

/// The folder of the agent's TLS files under `config`.
pub fn tls_dir(config: &AgentConfig) -> std::path::PathBuf {
    config
        .spec
        .tls_dir
        .clone()
        .unwrap_or_else(|| config.spec.data_dir.join("tls"))
}

impl Identity {
    fn open(files: CertificateFiles) -> anyhow::Result<Identity> {
        let material = files.load()?;
        let credentials = Credentials::from_pem(&material.chain, &material.key)?;
        let leaf = credentials
            .leaf()
            .context("the saved chain holds no certificate")?;
        let domain = tls::identities(&leaf)
            .into_iter()
            .find(|id| id.kind == Kind::Node)
            .map(|id| id.trust_domain)
            .context("the saved certificate names no node")?;
        let trust = Trust::from_pem(&material.roots, Some(&domain))?;
        let (control_plane, peers, inbound) = Identity::configs(&trust, &credentials)?;
        Ok(Identity {
            control_plane,
            peers,
            inbound,
            files,
            credentials,
            trust,
        })
    }

    /// The control-plane client, peer client and inbound server configurations for `trust`
    /// and `credentials`.
    fn configs(
        trust: &Trust,
        credentials: &Credentials,
    ) -> anyhow::Result<(Arc<ClientConfig>, Arc<ClientConfig>, Arc<ServerConfig>)> {
        let h2 = tls::ALPN_H2;
        Ok((
            tls::client_config(trust, Some(credentials), &h2)?,
            tls::client_config(trust, Some(credentials), &h2)?,
            tls::server_config(credentials, trust, false, &h2)?,
        ))
    }

    /// When the certificate stops being valid, seconds since the Unix epoch.
    pub fn not_after(&self) -> Option<i64> {
        let leaf = self.credentials.leaf()?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        Some(cert.validity().not_after.timestamp())
    }

    /// When the certificate started being valid, seconds since the Unix epoch.
    fn not_before(&self) -> Option<i64> {
        let leaf = self.credentials.leaf()?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        Some(cert.validity().not_before.timestamp())
    }
}

/// The identity saved in the agent's TLS folder, if there is one (an error when it is there
/// but cannot be used).
pub fn saved(config: &AgentConfig) -> anyhow::Result<Option<Identity>> {
    let files = CertificateFiles::new(tls_dir(config));
    if !files.exist() {
        return Ok(None);
    }
    Identity::open(files).map(Some).with_context(|| {
        format!(
            "the certificate in {} cannot be used",
            tls_dir(config).display()
        )
    })
}

/// Completes `slot` with a join when it is empty (retried while the control plane cannot be
/// reached), hands the identity to `control_plane`, then keeps it renewed, until `shutdown`.
/// Meanwhile the agent serves what it has (its saved state); its control-plane requests fail
/// with "no certificate" and are retried, and calls to and from peer agents are refused.
pub async fn run(
    config: AgentConfig,
    slot: IdentitySlot,
    control_plane: ControlPlaneClient,
    shutdown: CancellationToken,
) {
    let identity = match slot.load_full() {
        Some(identity) => identity,
        None => {
            let Some(joined) = join(&config, &shutdown).await else {
                return;
            };
            let joined = Arc::new(joined);
            slot.store(Some(Arc::clone(&joined)));
            joined
        }
    };
    control_plane.use_tls(Arc::clone(&identity.control_plane));
    keep_renewed((*identity).clone(), slot, control_plane, shutdown).await;
}

/// A new identity from a join; `None` when there is none to be had (no join settings, a
/// refused token: said in the log) or at `shutdown`.
async fn join(config: &AgentConfig, shutdown: &CancellationToken) -> Option<Identity> {
    let files = CertificateFiles::new(tls_dir(config));
    let join = &config.spec.join;
    let (Some(fingerprint), Some(token_file)) = (&join.ca_fingerprint, &join.token_file) else {
        tracing::error!(
            "this agent has no certificate yet, so it cannot talk to the control plane: set spec.join.caFingerprint and spec.join.tokenFile (a join token from `hyphae token create`)"
        );
        return None;
    };
    let mut retry = JOIN_RETRY_MIN;
    loop {
        match join_once(config, &files, fingerprint, token_file).await {
            Ok(identity) => return Some(identity),
            Err(Attempt::Refused(why)) => {
                tracing::error!(reason = %why, "the control plane refused this agent's join; it runs without the control plane until it is given a valid join token and restarted");
                return None;
            }
            Err(Attempt::Failed(why)) => {
                tracing::warn!(reason = %why, "cannot join the mesh yet; will retry");
            }
        }
        let wait = crate::control_plane_client::jittered(&mut retry, JOIN_RETRY_MAX);
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// How one join round ended without a certificate.
enum Attempt {
    /// Refused (a 4xx, a root other than the pinned one): retrying will not help.
    Refused(String),
    /// Anything else (no node reachable, no leader, no root yet): retried.
    Failed(String),
}

/// Asks every control-plane node in turn for a certificate; saves the first one given.
async fn join_once(
    config: &AgentConfig,
    files: &CertificateFiles,
    fingerprint: &str,
    token_file: &std::path::Path,
) -> Result<Identity, Attempt> {
    let token = secret_file::read(token_file).map_err(|e| Attempt::Refused(e.to_string()))?;
    let (key, csr) = key_and_request().map_err(|e| Attempt::Refused(e.to_string()))?;
    let request = serde_json::to_vec(&JoinRequest {
        token,
        name: config.node.clone(),
        site: config.spec.site.clone(),
        services: config
            .spec
            .services
            .iter()
            .map(|service| service.name.clone())
            .collect(),
        csr_pem: csr,
    })
    .map_err(|e| Attempt::Refused(e.to_string()))?;
    let mut failures = Vec::new();
    for server in &config.spec.control_plane {
        let answer = post_pinned(
            server,
            JOIN_PATH,
            request.clone(),
            fingerprint,
            JOIN_ATTEMPT_TIMEOUT,
        )
        .await;
        let (status, body, root) = match answer {
            Ok(answer) => answer,
            Err(error) => {
                failures.push(format!(
                    "{server}: {}",
                    hyphae_policies::error_chain::ErrorChain(&error)
                ));
                continue;
            }
        };
        let text = String::from_utf8_lossy(&body);
        if status.is_client_error() {
            return Err(Attempt::Refused(format!(
                "{server} answered {status}: {text}"
            )));
        }
        if !status.is_success() {
            failures.push(format!("{server} answered {status}: {text}"));
            continue;
        }
        let joined: Joined = serde_json::from_slice(&body)
            .map_err(|e| Attempt::Failed(format!("{server}: an unreadable answer: {e}")))?;
        let roots =
            tls::certificates(&joined.ca_pem).map_err(|e| Attempt::Failed(e.to_string()))?;
        if !roots.contains(&root) {
            return Err(Attempt::Refused(format!(
                "{server} answered with a root other than the pinned one"
            )));
        }
        let chain = joined.chain_pem();
        let saved = files
            .save(Some(&joined.ca_pem), &chain, &key)
            .map_err(|e| Attempt::Failed(format!("cannot save the certificate: {e}")))
            .and_then(|()| {
                Identity::open(files.clone()).map_err(|e| Attempt::Failed(format!("{e:#}")))
            })?;
        tracing::info!(%server, identities = ?joined.identities, "joined the mesh; got this node's certificate");
        return Ok(saved);
    }
    Err(Attempt::Failed(failures.join("; ")))
}

/// Renews the certificate whenever two thirds of its life have passed, until `shutdown`,
/// and publishes `hyphae_certificate_expiry_seconds`. A renewal that fails is tried again at
/// the next check; the current certificate stays in use meanwhile.
pub async fn keep_renewed(
    identity: Identity,
    slot: IdentitySlot,
    control_plane: ControlPlaneClient,
    shutdown: CancellationToken,
) {
    let (mut identity, mut control_plane) = (identity, control_plane);
    let mut roots_unread: u32 = 0;
    loop {
        // The roots, which a rotation changes: trust the cluster's set, and move onto a new
        // signing root at once. Unreachable, the agent keeps what it has, and says so.
        let mut signer_changed = false;
        let fetched = control_plane
            .get_json::<RootsView>(CA_PATH, RENEW_TIMEOUT)
            .await;
        if let Err(error) = &fetched {
            roots_unread += 1;
            if roots_unread == 1 || roots_unread.is_multiple_of(ROOTS_UNREAD_WARN_EVERY) {
                let error = format!("{error:#}");
                // A certificate this agent cannot check: the cluster activated a new root
                // before this host had fetched it (it was down, or the steps were forced).
                let hint = if ["UnknownIssuer", "BadSignature"]
                    .iter()
                    .any(|cause| error.contains(cause))
                {
                    "; the control plane's certificate comes from a root this agent does not trust: if the cluster's root was rotated while it was away, forget the node and join it again"
                } else {
                    ""
                };
                tracing::warn!(
                    error,
                    attempts = roots_unread,
                    "cannot read the cluster's roots{hint}"
                );
            }
        }
        if let Ok(roots) = fetched {
            roots_unread = 0;
            match retrust(&identity, &roots) {
                Ok(Some(retrusted)) => {
                    tracing::info!("trusting the cluster's new set of roots");
                    control_plane.use_tls(Arc::clone(&retrusted.control_plane));
                    slot.store(Some(Arc::new(retrusted.clone())));
                    identity = retrusted;
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(
                    error = format!("{error:#}"),
                    "cannot take the cluster's new roots"
                ),
            }
            signer_changed = identity
                .credentials
                .leaf()
                .is_some_and(|leaf| !tls::signed_by(leaf.as_ref(), &roots.cert_pem));
        }
        let now = now_seconds();
        let mut every = Duration::from_secs(30);
        if let (Some(not_before), Some(not_after)) = (identity.not_before(), identity.not_after()) {
            let left = not_after - now;
            metrics::gauge!(crate::metrics::CERTIFICATE_EXPIRY).set(left as f64);
            // Its validity starts a clock skew before it was issued.
            let issued = not_before + tls::CLOCK_SKEW.as_secs() as i64;
            let lifetime = (not_after - issued).max(1);
            every = tls::renewal_check_interval(Duration::from_secs(lifetime as u64));
            if left <= lifetime / 3 || signer_changed {
                match renew(&identity, &control_plane).await {
                    Ok(()) => continue,
                    Err(error) => {
                        control_plane.fail_over();
                        if left <= EXPIRY_WARNING.as_secs() as i64 {
                            tracing::warn!(
                                error = format!("{error:#}"),
                                seconds_left = left,
                                "cannot renew this node's certificate, and it expires soon"
                            );
                        } else {
                            tracing::info!(
                                error = format!("{error:#}"),
                                "cannot renew this node's certificate yet; will retry"
                            );
                        }
                    }
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Path of the cluster's roots.
const CA_PATH: &str = "/v1/ca";

/// The cluster's roots as `GET /v1/ca` shows them.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RootsView {
    /// The signing root.
    cert_pem: String,
    /// Every root to trust.
    #[serde(default)]
    bundle_pem: String,
}

/// `identity` trusting the roots in `roots` instead, when they differ from its own (saved
/// first); `None` when they do not.
fn retrust(identity: &Identity, roots: &RootsView) -> anyhow::Result<Option<Identity>> {
    let material = identity.files.load()?;
    if roots.bundle_pem.is_empty() || roots.bundle_pem == material.roots {
        return Ok(None);
    }
    identity
        .files
        .save(Some(&roots.bundle_pem), &material.chain, &material.key)?;
    let mut retrusted = Identity::open(identity.files.clone())?;
    // The certificate in use stays the one renewals replace in place.
    retrusted.credentials = identity.credentials.clone();
    let rebuilt = Identity::configs(&retrusted.trust, &retrusted.credentials)?;
    Ok(Some(Identity {
        control_plane: rebuilt.0,
        peers: rebuilt.1,
        inbound: rebuilt.2,
        ..retrusted
    }))
}

async fn renew(identity: &Identity, control_plane: &ControlPlaneClient) -> anyhow::Result<()> {
    let (key, csr) = key_and_request()?;
    let joined: Joined = control_plane
        .post_json(RENEW_PATH, &RenewRequest { csr_pem: csr }, RENEW_TIMEOUT)
        .await?;
    let chain = joined.chain_pem();
    identity.credentials.replace(&chain, &key)?;
    identity.files.save(None, &chain, &key)?;
    tracing::info!(
        expires_at_ms = joined.expires_at_ms,
        "renewed this node's certificate"
    );
    Ok(())
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

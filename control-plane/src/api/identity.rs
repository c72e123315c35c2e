//! Identities: the cluster's root (`GET /v1/ca`, public), join tokens (`/v1/join-tokens`,
//! admin) and the join itself (`POST /v1/agent/join`): a host presents a join token and a CSR
//! and gets a node certificate. A join token is used through Raft before anything is signed, so
//! a single-use token admits one host however many nodes it is sent to.

use std::time::Duration;

use http::StatusCode;
use hyphae_policies::validate::check_name;

use super::answer::{Answer, ApiError, ApiRequest, json_body, json_body_or_default, json_response};
use super::leader::{read_barrier, remove, write};
use crate::ca;
use crate::join_tokens::{JoinToken, JoinTokenView};
use crate::node::Node;
use crate::state::{Command, CommandResponse};
use crate::tokens;
use crate::wire::{
    CaView, ControlPlaneJoin, CreatedJoinToken, JoinRequest, Joined, NewJoinToken, RenewRequest,
    RotateCa,
};
use hyphae_policies::tls::{Kind, SpiffeId};

/// How long a join token works when the request does not say.
pub const DEFAULT_JOIN_TTL: Duration = Duration::from_secs(3600);

/// The one answer to every refused join, so a caller cannot tell why (the log says); counted.
fn join_refused() -> ApiError {
    crate::refusals::count(crate::refusals::Refusal::Join);
    ApiError::new(
        StatusCode::FORBIDDEN,
        "join-refused",
        "the join token is not valid (unknown, used up, expired, revoked, for another site, or the name is a registered node's)",
    )
}

/// The cluster's root, with its key, from this node's applied state; 503 while there is none.
pub(crate) async fn root(node: &Node) -> Result<ca::StoredCa, ApiError> {
    node.state
        .read(|state| state.ca().cloned())
        .await
        .ok_or_else(no_ca)
}

/// The answer to a join or renewal: the certificate, the root, the identities it names and
/// its expiry.
pub(crate) fn joined(
    cert_pem: String,
    root: ca::StoredCa,
    identities: Vec<String>,
    expires_at_ms: u64,
) -> Answer {
    Ok(json_response(
        StatusCode::OK,
        &Joined {
            cert_pem,
            ca_pem: root.bundle(),
            issuer_pem: root.cert_pem,
            identities,
            expires_at_ms,
        },
    ))
}

fn no_ca() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no-ca",
        "the cluster has no certificate authority yet (its first leader makes one); try again",
    )
}

/// `GET /v1/ca`: the root certificate and its fingerprint, from this node's applied state.
pub(crate) async fn show(node: &Node) -> Answer {
    let view = node
        .state
        .read(|state| {
            state.ca().map(|ca| CaView {
                cert_pem: ca.cert_pem.clone(),
                fingerprint: ca.fingerprint.clone(),
                bundle_pem: ca.bundle(),
            })
        })
        .await
        .ok_or_else(no_ca)?;
    Ok(json_response(StatusCode::OK, &view))
}

/// `GET /v1/join-tokens`: every join token, without hashes.
pub(crate) async fn list(node: &Node, request: &ApiRequest) -> Answer {
    read_barrier(node, request).await?;
    let views: Vec<JoinTokenView> = node
        .state
        .read(|state| {
            state
                .join_tokens()
                .values()
                .map(JoinTokenView::from)
                .collect()
        })
        .await;
    Ok(json_response(StatusCode::OK, &views))
}

/// `POST /v1/join-tokens`: a new join token with a random secret (single use, 1 h, any site
/// unless the request says otherwise).
pub(crate) async fn create(node: &Node, request: &ApiRequest) -> Answer {
    let new: NewJoinToken = json_body_or_default(
        request,
        "{\"name\", \"ttl\": \"1h\", \"uses\": 1, \"site\"}",
    )?;
    let name = new
        .name
        .unwrap_or_else(|| format!("join-{:08x}", rand::random::<u32>()));
    for (what, text) in [("name", Some(&name)), ("site", new.site.as_ref())] {
        if let Some(text) = text {
            check_name(text).map_err(|reason| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "bad-join-token",
                    format!("{what} `{text}`: {reason}"),
                )
            })?;
        }
    }
    let uses = new.uses.unwrap_or(1);
    if uses == 0 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad-join-token",
            "uses must be at least 1",
        )
        .into());
    }
    let ttl = new.ttl.map_or(DEFAULT_JOIN_TTL, Duration::from);
    let secret = tokens::new_secret();
    let token = JoinToken {
        name,
        hash: tokens::hash(&secret),
        expires_at_ms: tokens::expires_after(ttl),
        uses_left: uses,
        site: new.site,
        control_plane: new.control_plane,
        revision: 0,
    };
    let mut view = JoinTokenView::from(&token);
    let written = write(node, Command::CreateJoinToken { token }).await?;
    view.revision = written.revision();
    Ok(json_response(
        StatusCode::OK,
        &CreatedJoinToken {
            token: view,
            secret,
        },
    ))
}

/// `DELETE /v1/join-tokens/{name}`: revokes a join token.
pub(crate) async fn revoke(node: &Node, name: &str) -> Answer {
    let command = Command::RevokeJoinToken {
        name: name.to_string(),
    };
    remove(node, command, "join token", name).await
}

/// `POST /v1/agent/join`: checks the request and its CSR, uses the join token through Raft,
/// then signs a certificate naming the node and its services.
pub(crate) async fn join(node: &Node, request: &ApiRequest) -> Answer {
    let join: JoinRequest = json_body(
        request,
        "{\"token\", \"name\", \"site\", \"services\", \"csrPem\"}",
    )?;
    let invalid =
        |message: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad-join", message);
    check_name(&join.name).map_err(|reason| invalid(format!("name `{}`: {reason}", join.name)))?;
    check_name(&join.site).map_err(|reason| invalid(format!("site `{}`: {reason}", join.site)))?;
    for service in &join.services {
        check_name(service).map_err(|reason| invalid(format!("service `{service}`: {reason}")))?;
    }
    let spec = &node.config.spec;
    if join.services.len() > spec.limits.max_instances_per_node as usize {
        return Err(invalid(format!(
            "{} services, over limits.maxInstancesPerNode",
            join.services.len()
        ))
        .into());
    }
    let ca = root(node).await?;
    let trust_domain = &spec.certificates.trust_domain;
    let mut identities = vec![ca::node_id(trust_domain, &join.name)];
    identities.extend(
        join.services
            .iter()
            .map(|s| ca::service_id(trust_domain, s)),
    );
    let now = tokens::now_ms();
    let hash = tokens::hash(&join.token);
    // Only a token bound to a site earns that site's lifetime: an unbound token's holder could
    // name any site.
    let site_bound = node
        .state
        .read(|state| {
            state
                .join_tokens()
                .values()
                .any(|t| t.hash == hash && t.site.as_deref() == Some(join.site.as_str()))
        })
        .await;
    let lifetime = if site_bound {
        spec.certificates.lifetime_for(&join.site)
    } else {
        spec.certificates.lifetime
    };
    let lifetime = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX);
    // A registered node's name, or one a join already issued (the node may only be away),
    // stays its own until an operator releases it.
    let taken = node
        .state
        .read(|state| state.node(&join.name).is_some() || state.issued().contains(&join.name))
        .await;
    let admission = Admission {
        hash,
        name: join.name.clone(),
        site: join.site.clone(),
        control_plane: false,
        taken,
        now,
    };
    // Signed before the token is used, so a CSR that does not parse uses nothing; handed out
    // only once the token's use is committed.
    let cert_pem = ca::sign(&ca, &join.csr_pem, &identities, now, lifetime)
        .map_err(|error| invalid(error.to_string()))?;
    admit(node, admission).await?;
    joined(cert_pem, ca, identities, now.saturating_add(lifetime))
}

/// A join about to use a token.
struct Admission {
    /// SHA-256 of the presented secret.
    hash: String,
    /// The name the host asks for (a node name, or `control-plane/<id>`).
    name: String,
    /// The site it says it is in.
    site: String,
    /// Whether a control-plane node joins.
    control_plane: bool,
    /// Whether the name belongs to someone already (a registered node, a current member).
    taken: bool,
    /// The leader's clock.
    now: u64,
}

/// Uses the join token through Raft, or refuses with the one answer for every reason. The
/// token is checked against this node's applied state first, so a guess costs no Raft entry;
/// the Raft command stays the deciding check.
async fn admit(node: &Node, admission: Admission) -> Result<(), super::answer::Routed> {
    let mut table = node.state.read(|state| state.join_tokens().clone()).await;
    let leads = {
        let metrics = node.raft.metrics();
        let metrics = metrics.borrow();
        metrics.current_leader == Some(metrics.id)
    };
    let checked = if admission.taken {
        Err(crate::join_tokens::JoinRefused::NameTaken(
            admission.name.clone(),
        ))
    } else {
        crate::join_tokens::use_token(
            &mut table,
            &admission.hash,
            &admission.site,
            admission.control_plane,
            admission.now,
        )
        .map(|_| ())
    };
    // A follower may not have applied a token the leader just made: only the leader refuses
    // here; a follower sends the join on to it.
    if let Err(refused) = checked
        && leads
    {
        tracing::warn!(node = %admission.name, reason = %refused, "join refused");
        return Err(join_refused().into());
    }
    let used = write(
        node,
        Command::UseJoinToken {
            hash: admission.hash,
            node: admission.name.clone(),
            site: admission.site.clone(),
            control_plane: admission.control_plane,
            now_ms: admission.now,
        },
    )
    .await?;
    match used {
        CommandResponse::JoinTokenUsed {
            outcome: Ok(token), ..
        } => {
            tracing::info!(node = %admission.name, site = %admission.site, %token, "a host joined");
            Ok(())
        }
        CommandResponse::JoinTokenUsed {
            outcome: Err(refused),
            ..
        } => {
            tracing::warn!(node = %admission.name, reason = %refused, "join refused");
            Err(join_refused().into())
        }
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "join",
            format!("unexpected answer from the state machine: {other:?}"),
        )
        .into()),
    }
}

/// `POST /v1/cluster/join`: a control-plane node presents a control-plane join token and a
/// CSR, and gets a certificate naming it `control-plane/<id>`. An id that is a member already
/// is refused: a token admits a new node, never a second holder of a member's identity.
pub(crate) async fn join_control_plane(node: &Node, request: &ApiRequest) -> Answer {
    let join: ControlPlaneJoin = json_body(request, "{\"token\", \"id\": N, \"csrPem\"}")?;
    let ca = root(node).await?;
    let spec = &node.config.spec;
    let trust_domain = &spec.certificates.trust_domain;
    let identity = SpiffeId::new(trust_domain, Kind::ControlPlane, &join.id.to_string());
    let identities = vec![identity.to_string()];
    let taken = node.is_member(join.id);
    let now = tokens::now_ms();
    let lifetime = u64::try_from(spec.certificates.lifetime.as_millis()).unwrap_or(u64::MAX);
    let cert_pem = ca::sign(&ca, &join.csr_pem, &identities, now, lifetime).map_err(|error| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad-join",
            error.to_string(),
        )
    })?;
    admit(
        node,
        Admission {
            hash: tokens::hash(&join.token),
            name: format!("control-plane/{}", join.id),
            site: String::new(),
            control_plane: true,
            taken,
            now,
        },
    )
    .await?;
    joined(cert_pem, ca, identities, now.saturating_add(lifetime))
}

/// `POST /v1/agent/renew`: an agent presenting its current certificate gets a new one for a
/// new key, naming the same node and services (never more), valid for the lifetime of the
/// site it is registered in.
pub(crate) async fn renew(node: &Node, request: &ApiRequest) -> Answer {
    let renewal: RenewRequest = json_body(request, "{\"csrPem\"}")?;
    let Some(name) = request.peer.node() else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a renewal needs the node's current certificate",
        )
        .into());
    };
    let ca = root(node).await?;
    let identities: Vec<String> = request
        .peer
        .ids()
        .iter()
        .filter(|id| matches!(id.kind, Kind::Node | Kind::Service))
        .map(ToString::to_string)
        .collect();
    let site = node
        .state
        .read(|state| state.node(name).map(|record| record.site.clone()))
        .await;
    let certificates = &node.config.spec.certificates;
    let lifetime = site.map_or(certificates.lifetime, |site| {
        certificates.lifetime_for(&site)
    });
    // Never longer than the certificate presented: a site named at registration must not
    // earn a lifetime the join token did not grant.
    let lifetime = u64::try_from(lifetime.as_millis())
        .unwrap_or(u64::MAX)
        .min(request.peer.lifetime_ms().unwrap_or(u64::MAX));
    let now = tokens::now_ms();
    let cert_pem =
        ca::sign(&ca, &renewal.csr_pem, &identities, now, lifetime).map_err(|error| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad-renewal",
                error.to_string(),
            )
        })?;
    tracing::info!(node = name, "renewed a node's certificate");
    joined(cert_pem, ca, identities, now.saturating_add(lifetime))
}

/// `POST /v1/ca/rotate` `{"step": "add" | "activate" | "retire"}`: one step of a rotation of
/// the cluster's root. `add` makes a new root that every host trusts from its next look (it
/// signs nothing yet); `activate` signs with it from now on, hosts renew onto it, and the old
/// root stays trusted; `retire` stops trusting the old one. Answers with the root as
/// `GET /v1/ca` shows it.
pub(crate) async fn rotate(node: &Node, request: &ApiRequest) -> Answer {
    let asked: RotateCa = json_body(request, "{\"step\": \"add|activate|retire\"}")?;
    let step = match asked.step.as_str() {
        "add" => {
            let trust_domain = &node.config.spec.certificates.trust_domain;
            let new = ca::generate(trust_domain, tokens::now_ms()).map_err(|error| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "ca", error.to_string())
            })?;
            ca::RotationStep::Add(Box::new(new))
        }
        "activate" => ca::RotationStep::Activate,
        "retire" => ca::RotationStep::Retire,
        other => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad-step",
                format!("unknown rotation step `{other}`: use add, activate or retire"),
            )
            .into());
        }
    };
    let command = Command::RotateCa {
        step,
        now_ms: tokens::now_ms(),
        force: asked.force,
    };
    match write(node, command).await? {
        CommandResponse::CaRotated {
            outcome: Ok(fingerprint),
            ..
        } => {
            tracing::info!(step = %asked.step, %fingerprint, "the cluster's root rotated a step");
            show(node).await
        }
        CommandResponse::CaRotated {
            outcome: Err(why), ..
        } => Err(ApiError::new(StatusCode::CONFLICT, "rotation", why).into()),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "rotation",
            format!("unexpected answer from the state machine: {other:?}"),
        )
        .into()),
    }
}

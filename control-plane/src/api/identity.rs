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
use crate::wire::{CaView, CreatedJoinToken, JoinRequest, Joined, NewJoinToken};

/// How long a join token works when the request does not say.
pub const DEFAULT_JOIN_TTL: Duration = Duration::from_secs(3600);

/// The one answer to every refused join, so a caller cannot tell why (the log says).
fn join_refused() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "join-refused",
        "the join token is not valid (unknown, used up, expired, revoked, for another site, or the name is a registered node's)",
    )
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
    let ca = node
        .state
        .read(|state| state.ca().cloned())
        .await
        .ok_or_else(no_ca)?;
    let trust_domain = &spec.certificates.trust_domain;
    let mut identities = vec![ca::node_id(trust_domain, &join.name)];
    identities.extend(
        join.services
            .iter()
            .map(|s| ca::service_id(trust_domain, s)),
    );
    let now = tokens::now_ms();
    // Checked against this node's applied state first, so a guess costs no Raft entry; the
    // Raft command below stays the deciding check.
    let hash = tokens::hash(&join.token);
    let (mut table, taken) = node
        .state
        .read(|state| {
            (
                state.join_tokens().clone(),
                state.node(&join.name).is_some(),
            )
        })
        .await;
    // Only a token bound to a site earns that site's lifetime: an unbound token's holder could
    // name any site.
    let site_bound = table
        .values()
        .any(|t| t.hash == hash && t.site.as_deref() == Some(join.site.as_str()));
    let checked = if taken {
        Err(crate::join_tokens::JoinRefused::NameTaken(
            join.name.clone(),
        ))
    } else {
        crate::join_tokens::use_token(&mut table, &hash, &join.site, now).map(|_| ())
    };
    if let Err(refused) = checked {
        tracing::warn!(node = %join.name, reason = %refused, "join refused");
        return Err(join_refused().into());
    }
    let lifetime = if site_bound {
        spec.certificates.lifetime_for(&join.site)
    } else {
        spec.certificates.lifetime
    };
    let lifetime = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX);
    // Signed before the token is used, so a CSR that does not parse uses nothing; handed out
    // only once the token's use is committed.
    let cert_pem = ca::sign(&ca, &join.csr_pem, &identities, now, lifetime)
        .map_err(|error| invalid(error.to_string()))?;
    let used = write(
        node,
        Command::UseJoinToken {
            hash,
            node: join.name.clone(),
            site: join.site.clone(),
            now_ms: now,
        },
    )
    .await?;
    match used {
        CommandResponse::JoinTokenUsed {
            outcome: Ok(token), ..
        } => {
            tracing::info!(node = %join.name, site = %join.site, %token, "a host joined");
        }
        CommandResponse::JoinTokenUsed {
            outcome: Err(refused),
            ..
        } => {
            tracing::warn!(node = %join.name, reason = %refused, "join refused");
            return Err(join_refused().into());
        }
        other => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "join",
                format!("unexpected answer from the state machine: {other:?}"),
            )
            .into());
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &Joined {
            cert_pem,
            ca_pem: ca.cert_pem,
            identities,
            expires_at_ms: now.saturating_add(lifetime),
        },
    ))
}

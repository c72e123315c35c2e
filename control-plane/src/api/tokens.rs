//! `/v1/acl/tokens`: list, create and revoke admin API tokens (admin only). A secret is shown once,
//! in the answer that creates it; the cluster stores only its hash.

use http::StatusCode;
use hyphae_policies::validate::check_name;

use super::answer::{Answer, ApiError, ApiRequest, json_body, json_response};
use super::leader::{read_barrier, remove, write};
use crate::node::Node;
use crate::state::Command;
use crate::tokens::{self, StoredToken, TokenView};
use crate::wire::{CreatedToken, NewOperatorCertificate, NewToken};
use hyphae_policies::tls::{Kind, SpiffeId};

/// `GET /v1/acl/tokens`: every token, without hashes.
pub(crate) async fn list(node: &Node, request: &ApiRequest) -> Answer {
    read_barrier(node, request).await?;
    let views: Vec<TokenView> = node
        .state
        .read(|state| state.tokens().values().map(TokenView::from).collect())
        .await;
    Ok(json_response(StatusCode::OK, &views))
}

/// `POST /v1/acl/tokens`: creates (or replaces) a token with a new random secret.
pub(crate) async fn create(node: &Node, request: &ApiRequest) -> Answer {
    let new: NewToken = json_body(
        request,
        "{\"name\": \"ci\", \"role\": \"read|write|admin\", \"ttl\": \"24h\"}",
    )?;
    check_name(&new.name).map_err(|reason| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad-token-name",
            format!("token name `{}`: {reason}", new.name),
        )
    })?;
    let expires_at_ms = new.ttl.map(|ttl| tokens::expires_after(ttl.into()));
    let secret = tokens::new_secret();
    let token = StoredToken {
        name: new.name,
        role: new.role,
        hash: tokens::hash(&secret),
        expires_at_ms,
        certificate: None,
        revision: 0,
    };
    let mut view = TokenView::from(&token);
    let written = write(
        node,
        Command::CreateToken {
            token,
            only_if_none: false,
        },
    )
    .await?;
    view.revision = written.revision();
    Ok(json_response(
        StatusCode::OK,
        &CreatedToken {
            token: view,
            secret,
        },
    ))
}

/// `DELETE /v1/acl/tokens/{name}`: revokes a token at once on every node.
pub(crate) async fn revoke(node: &Node, name: &str) -> Answer {
    let command = Command::RevokeToken {
        name: name.to_string(),
    };
    remove(node, command, "token", name).await
}

/// `POST /v1/acl/certificates`: an operator's client certificate
/// (`spiffe://<domain>/operator/<name>`) signed from its CSR, and a token entry of that name
/// held as the certificate ([`tokens::CERTIFICATE_HASH`]), which gives its role and expiry;
/// `DELETE /v1/acl/tokens/{name}` revokes it.
pub(crate) async fn create_certificate(node: &Node, request: &ApiRequest) -> Answer {
    let new: NewOperatorCertificate = json_body(
        request,
        "{\"name\": \"alice\", \"role\": \"read|write|admin\", \"ttl\": \"24h\", \"csrPem\"}",
    )?;
    check_name(&new.name).map_err(|reason| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad-token-name",
            format!("operator name `{}`: {reason}", new.name),
        )
    })?;
    let root = super::identity::root(node).await?;
    let ttl = new
        .ttl
        .map_or(node.config.spec.certificates.lifetime.get(), Into::into);
    let lifetime_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let now = tokens::now_ms();
    let domain = &node.config.spec.certificates.trust_domain;
    let identity = SpiffeId::new(domain, Kind::Operator, &new.name).to_string();
    let cert_pem = crate::ca::sign(
        &root,
        &new.csr_pem,
        std::slice::from_ref(&identity),
        now,
        lifetime_ms,
    )
    .map_err(|error| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad-csr",
            error.to_string(),
        )
    })?;
    let fingerprint = hyphae_policies::tls::certificates(&cert_pem)
        .ok()
        .and_then(|certs| {
            certs
                .first()
                .map(|leaf| hyphae_policies::tls::fingerprint(leaf.as_ref()))
        });
    let token = StoredToken {
        name: new.name,
        role: new.role,
        hash: tokens::CERTIFICATE_HASH.to_string(),
        expires_at_ms: Some(now.saturating_add(lifetime_ms)),
        certificate: fingerprint,
        revision: 0,
    };
    write(
        node,
        Command::CreateToken {
            token,
            only_if_none: false,
        },
    )
    .await?;
    super::identity::joined(
        cert_pem,
        root,
        vec![identity],
        now.saturating_add(lifetime_ms),
    )
}

//! `/v1/policies`: apply (validated with the same loader as `hyphae validate`, dry run), list,
//! get and delete. Never stores an object the loader refused.

use http::StatusCode;
use hyphae_policies::{Completeness, Diagnostic, LoadOptions, load_str};

use super::answer::{Answer, ApiError, ApiRequest, json_response};
use super::leader::{read_barrier, write, write_size_allowed};
use crate::node::Node;
use crate::state::{Command, PolicyDocument, StoredPolicy};
use crate::wire::{DryRun, PolicyId};

/// `POST /v1/policies`: validates the YAML (or JSON) with the same loader as `hyphae
/// validate`, then writes every object in one Raft entry. `?dryRun=true` stops after checking.
pub(crate) async fn apply(node: &Node, request: &ApiRequest) -> Answer {
    let dry_run = request.flag("dryRun")?;
    let body = request.body.clone();
    let limit = node.config.spec.limits.max_write_bytes;
    let checked = tokio::task::spawn_blocking(move || check(&body, limit))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "check-task",
                format!("checking the policies did not finish: {e}"),
            )
        })??;
    if dry_run {
        let objects = checked
            .documents()
            .iter()
            .map(|d| PolicyId {
                kind: d.kind.clone(),
                name: d.name.clone(),
            })
            .collect();
        let dry_run = DryRun {
            dry_run: true,
            valid: true,
            objects,
            warnings: checked.warnings,
        };
        return Ok(json_response(StatusCode::OK, &dry_run));
    }
    let response = write(node, checked.command).await?;
    Ok(json_response(StatusCode::OK, &response))
}

/// Policies ready to store, as the write that stores them, with the loader's warnings.
struct Checked {
    command: Command,
    warnings: Vec<Diagnostic>,
}

impl Checked {
    fn documents(&self) -> &[PolicyDocument] {
        match &self.command {
            Command::ApplyPolicies { policies, .. } => policies,
            _ => &[],
        }
    }
}

/// Parses, validates and encodes a policy body in canonical form, and refuses it (413) when
/// the write would exceed `max_write_bytes`, so a dry run says so too. Runs on the blocking
/// pool: a large file takes long enough to stall an async worker (and with it Raft's
/// heartbeats).
fn check(body: &[u8], max_write_bytes: u32) -> Result<Checked, ApiError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "not-utf8",
            format!("the body is not UTF-8: {e}"),
        )
    })?;
    let options = LoadOptions {
        completeness: Completeness::Partial,
        ..LoadOptions::default()
    };
    let report = load_str("request", text, options);
    if report.has_errors() {
        let error = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-policy",
            format!(
                "{} error(s) in the policies; nothing was applied",
                report.error_count()
            ),
        );
        return Err(error.with_diagnostics(report.diagnostics));
    }
    let local: Vec<String> = report
        .objects
        .iter()
        .filter(|o| o.policy.kind().is_local_config())
        .map(|o| format!("{} `{}`", o.policy.kind(), o.policy.name()))
        .collect();
    if !local.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "local-config",
            format!(
                "{} belong(s) on the node it configures, not in the control plane; nothing was applied",
                local.join(", ")
            ),
        ));
    }
    let mut documents = Vec::new();
    for object in &report.objects {
        let source = serde_saphyr::to_string(&object.policy).map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "encode", e.to_string())
        })?;
        documents.push(PolicyDocument {
            kind: object.policy.kind().name().to_string(),
            name: object.policy.name().to_string(),
            source,
        });
    }
    if documents.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty",
            "no policy documents in the body",
        ));
    }
    let command = Command::ApplyPolicies {
        policies: documents,
        leave_unchanged: true,
    };
    write_size_allowed(&command, max_write_bytes)?;
    Ok(Checked {
        command,
        warnings: report.diagnostics,
    })
}

/// `GET /v1/policies[?kind=K]`: every stored policy, or those of one kind.
pub(crate) async fn list(node: &Node, request: &ApiRequest) -> Answer {
    read_barrier(node, request).await?;
    let kind = request.param("kind");
    let policies: Vec<StoredPolicy> = node
        .state
        .read(|state| {
            state
                .policies()
                .filter(|p| kind.is_none_or(|k| p.kind == k))
                .cloned()
                .collect()
        })
        .await;
    Ok(json_response(StatusCode::OK, &policies))
}

/// `GET /v1/policies/{kind}/{name}`: one stored policy, or 404.
pub(crate) async fn get(node: &Node, request: &ApiRequest, kind: &str, name: &str) -> Answer {
    read_barrier(node, request).await?;
    let found = node
        .state
        .read(|state| state.policy(kind, name).cloned())
        .await;
    match found {
        Some(policy) => Ok(json_response(StatusCode::OK, &policy)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no {kind} named `{name}`"),
        )
        .into()),
    }
}

/// `DELETE /v1/policies/{kind}/{name}`: removes one policy through Raft.
pub(crate) async fn delete(node: &Node, kind: &str, name: &str) -> Answer {
    let command = Command::DeletePolicy {
        kind: kind.to_string(),
        name: name.to_string(),
    };
    let response = write(node, command).await?;
    Ok(json_response(StatusCode::OK, &response))
}

//! The agent's local configuration file: one `AgentConfig` document, read through the same
//! loader and checks as every other policy so its errors look the same everywhere.

use std::path::Path;

use hyphae_policies::{AgentConfigSpec, Diagnostic, FieldPath, Issue, LoadOptions, Loader, Policy};

/// A checked agent configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    /// The node's name (`metadata.name`).
    pub node: String,
    /// Everything else.
    pub spec: AgentConfigSpec,
}

/// Reads `path`, which must hold exactly one `AgentConfig` document. On failure returns every
/// problem found, each with file:line:col.
pub fn load(path: &Path) -> Result<AgentConfig, Vec<Diagnostic>> {
    let mut loader = Loader::new(LoadOptions::default());
    loader.add_path(path);
    let report = loader.finish();
    let errors: Vec<Diagnostic> = report
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .cloned()
        .collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    let name = path.display().to_string();
    let mut configs = Vec::new();
    for object in &report.objects {
        match &object.policy {
            Policy::AgentConfig(config) => configs.push(AgentConfig {
                node: config.metadata.name.clone(),
                spec: config.spec.clone(),
            }),
            other => {
                let issue = Issue::error(
                    FieldPath::root().key("kind"),
                    format!(
                        "an agent's configuration file holds one `AgentConfig`, not a `{}`; \
                         apply policies through the control plane",
                        other.kind()
                    ),
                );
                let text = std::fs::read_to_string(path).unwrap_or_default();
                return Err(vec![Diagnostic::from_issue(
                    &name,
                    &text,
                    Some(&object.tree),
                    issue,
                )]);
            }
        }
    }
    match configs.len() {
        1 => Ok(configs.remove(0)),
        count => {
            let message = format!("expected exactly one `AgentConfig` document, found {count}");
            let issue =
                Issue::error(FieldPath::root(), message).at(hyphae_policies::tree::Pos::START);
            Err(vec![Diagnostic::from_issue(&name, "", None, issue)])
        }
    }
}

//! The agent's local configuration: one `AgentConfig` document plus, optionally, the policies
//! (`ServicePolicy`, `Route`, ...) it applies while it runs without a control plane. Read through
//! the same loader and checks as every other policy so its errors look the same everywhere.

use std::path::Path;

use hyphae_policies::{
    AgentConfigSpec, Completeness, Diagnostic, FieldPath, Issue, LoadOptions, Loader, Policy,
};

/// A checked agent configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    /// The node's name (`metadata.name`).
    pub node: String,
    /// Everything else.
    pub spec: AgentConfigSpec,
    /// Policies from the same file or directory, applied to the static services.
    pub policies: Vec<Policy>,
}

/// Reads `path` (a file, or a directory of `.yaml` files) which must hold exactly one
/// `AgentConfig` document and may hold other policies. On failure returns every problem found,
/// each with file:line:col; warnings are returned alongside a valid configuration.
pub fn load(path: &Path) -> Result<(AgentConfig, Vec<Diagnostic>), Vec<Diagnostic>> {
    // Partial: services this file does not define may come from the control plane, so
    // references to them are warnings here.
    let mut loader = Loader::new(LoadOptions {
        completeness: Completeness::Partial,
        ..LoadOptions::default()
    });
    loader.add_path(path);
    let report = loader.finish();
    if report.has_errors() {
        return Err(report.diagnostics);
    }
    let warnings = report.diagnostics.clone();
    let mut agent_configs = Vec::new();
    let mut policies = Vec::new();
    for object in report.objects {
        match object.policy {
            Policy::AgentConfig(config) => agent_configs.push((*config, object.file, object.tree)),
            other => policies.push(other),
        }
    }
    if agent_configs.len() != 1 {
        let message = format!(
            "expected exactly one `AgentConfig` document, found {}",
            agent_configs.len()
        );
        let (file, tree) = match agent_configs.get(1) {
            Some((_, file, tree)) => (file.clone(), Some(tree)),
            None => (path.display().to_string(), None),
        };
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let issue = Issue::error(FieldPath::root().key("kind"), message);
        return Err(vec![Diagnostic::from_issue(&file, &text, tree, issue)]);
    }
    let (config, _, _) = agent_configs.remove(0);
    Ok((
        AgentConfig {
            node: config.metadata.name,
            spec: config.spec,
            policies,
        },
        warnings,
    ))
}

//! A control-plane node's local configuration: one `ControlPlaneConfig` document, read with
//! the same loader and checks as every policy so its errors look the same everywhere.

use std::path::Path;

use hyphae_policies::{
    ControlPlaneConfigSpec, Diagnostic, FieldPath, Issue, LoadOptions, Loader, Policy,
};

/// A checked node configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeConfig {
    /// The node's name (`metadata.name`).
    pub name: String,
    /// Everything else.
    pub spec: ControlPlaneConfigSpec,
}

impl NodeConfig {
    /// The address other nodes and agents use for this one.
    pub fn advertised(&self) -> String {
        self.spec
            .advertise
            .clone()
            .unwrap_or_else(|| self.spec.listen.to_string())
    }
}

/// Reads `path`, which must hold exactly one `ControlPlaneConfig` document.
pub fn load(path: &Path) -> Result<NodeConfig, Vec<Diagnostic>> {
    let mut loader = Loader::new(LoadOptions::default());
    loader.add_path(path);
    let report = loader.finish();
    if report.has_errors() {
        return Err(report.diagnostics);
    }
    let mut configs: Vec<NodeConfig> = report
        .objects
        .iter()
        .filter_map(|o| match &o.policy {
            Policy::ControlPlaneConfig(c) => Some(NodeConfig {
                name: c.metadata.name.clone(),
                spec: c.spec.clone(),
            }),
            _ => None,
        })
        .collect();
    if configs.len() != 1 || report.objects.len() != 1 {
        let name = path.display().to_string();
        let issue = Issue::error(
            FieldPath::root().key("kind"),
            format!(
                "expected exactly one `ControlPlaneConfig` document, found {} document(s) of which {} `ControlPlaneConfig`",
                report.objects.len(),
                configs.len()
            ),
        )
        .at(hyphae_policies::tree::Pos::START);
        return Err(vec![Diagnostic::from_issue(&name, "", None, issue)]);
    }
    Ok(configs.remove(0))
}

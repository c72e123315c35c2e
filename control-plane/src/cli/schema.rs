//! `hyphae schema`: prints the JSON Schema of policy documents, all kinds or one.

use clap::Args;
use hyphae_policies::{Kind, schema};

use super::Outcome;

/// Arguments of `hyphae schema`.
#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// One kind (`ServicePolicy`, `Route`, `AccessPolicy`, `ExternalService`, `AgentConfig`);
    /// without it, the schema of any document.
    #[arg(value_parser = parse_kind)]
    pub kind: Option<Kind>,
}

/// A kind by its exact name; an unknown name is refused with the closest kind and the list.
pub fn parse_kind(name: &str) -> Result<Kind, String> {
    Kind::from_name(name).ok_or_else(|| {
        let hint = hyphae_policies::suggest::closest(name, &Kind::names())
            .map(|k| format!(" (did you mean `{k}`?)"))
            .unwrap_or_default();
        format!(
            "unknown kind `{name}`{hint}; kinds are {}",
            Kind::names().join(", ")
        )
    })
}

/// Runs `hyphae schema`.
pub fn run(args: &SchemaArgs, out: &mut dyn std::io::Write) -> anyhow::Result<Outcome> {
    let value = match args.kind {
        Some(kind) => schema::kind_schema(kind),
        None => schema::document_schema(),
    };
    out.write_all(schema::to_text(&value).as_bytes())?;
    Ok(Outcome::Success)
}

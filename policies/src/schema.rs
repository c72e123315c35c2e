//! JSON Schema for policy documents, generated from the same types the loader reads, so editor
//! completion can never drift from what hyphae accepts.

use schemars::{JsonSchema, schema_for};
use serde_json::{Value, json};

use crate::{
    AccessPolicySpec, AgentConfigSpec, ControlPlaneConfigSpec, ExternalServiceSpec, Kind, Object,
    Policy, RouteSpec, ServicePolicySpec,
};

/// The schema of any policy document (`kind` chooses the shape).
pub fn document_schema() -> Value {
    let mut schema = serde_json::to_value(schema_for!(Policy)).unwrap_or(Value::Null);
    if let Some(object) = schema.as_object_mut() {
        object.insert("title".into(), json!("hyphae policy document"));
    }
    schema
}

/// The schema of one kind's documents.
pub fn kind_schema(kind: Kind) -> Value {
    match kind {
        Kind::ServicePolicy => with_kind::<ServicePolicySpec>(kind),
        Kind::Route => with_kind::<RouteSpec>(kind),
        Kind::AccessPolicy => with_kind::<AccessPolicySpec>(kind),
        Kind::ExternalService => with_kind::<ExternalServiceSpec>(kind),
        Kind::AgentConfig => with_kind::<AgentConfigSpec>(kind),
        Kind::ControlPlaneConfig => with_kind::<ControlPlaneConfigSpec>(kind),
    }
}

fn with_kind<S: JsonSchema>(kind: Kind) -> Value {
    let mut schema = serde_json::to_value(schema_for!(Object<S>)).unwrap_or(Value::Null);
    if let Some(object) = schema.as_object_mut() {
        object.insert("title".into(), json!(kind.name()));
        if let Some(Value::Object(properties)) = object.get_mut("properties") {
            properties.insert("kind".into(), json!({ "const": kind.name() }));
        }
        if let Some(Value::Array(required)) = object.get_mut("required") {
            required.insert(0, json!("kind"));
        }
    }
    schema
}

/// File name under `policies/schema/` for a kind, or for any document when `None`.
pub fn file_name(kind: Option<Kind>) -> String {
    match kind {
        Some(kind) => format!("{}.schema.json", kind.name()),
        None => "policy.schema.json".to_string(),
    }
}

/// Pretty JSON text, as committed.
pub fn to_text(schema: &Value) -> String {
    let mut text = serde_json::to_string_pretty(schema).unwrap_or_default();
    text.push('\n');
    text
}

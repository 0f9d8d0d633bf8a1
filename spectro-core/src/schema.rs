//! JSON Schema of the spec documents.

use crate::model::Document;

/// The JSON Schema of every spec document (`kind`-tagged), as pretty JSON.
#[must_use]
pub fn document_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Document)).unwrap_or(serde_json::Value::Null)
}

//! Spec documents: YAML (one or more documents per file) or JSON, each with a `kind`.
//!
//! [`parse_documents`] reads a whole file (any kinds, `---`-separated) and keeps going past a
//! document that fails; [`from_text`] reads one object of a known type. Errors name the field:
//!
//! ```
//! use spectro_core::model::document::{from_text, parse_documents, Document, Format};
//! use spectro_core::model::ClusterProfile;
//!
//! let profile: ClusterProfile = from_text(
//!     r#"
//! name: base
//! version: 1.0.0
//! cloud: aws
//! packs:
//!   - { name: ubuntu, layer: os, version: "22.04" }
//!   - { name: kubernetes, layer: kubernetes, version: 1.30.4 }
//! "#,
//!     Format::Yaml,
//! )?;
//! assert_eq!(profile.packs.len(), 2);
//!
//! let file = r#"
//! kind: IpPool
//! name: east
//! gatewayName: dc-east
//! range: { start: 10.10.0.10, end: 10.10.0.99 }
//! prefix: 24
//! gateway: 10.10.0.1
//! ---
//! kind: Cluster
//! name: broken
//! nodePools: 3
//! "#;
//! let (docs, failures) = parse_documents(file, Format::Yaml);
//! assert!(matches!(&docs[..], [Document::IpPool(p)] if p.name == "east"));
//! assert_eq!(failures[0].index, 1); // the second document
//! println!("{}", failures[0].violations[0]); // names the field that failed
//! # Ok::<(), spectro_core::validate::Violation>(())
//! ```

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{CloudAccount, Cluster, ClusterProfile, IpPool, PrivateCloudGateway};
use crate::validate::Violation;

/// Any spec object, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind")]
#[allow(clippy::large_enum_variant)] // a parsed spec, not a hot-path value
#[non_exhaustive]
pub enum Document {
    /// A cluster profile.
    ClusterProfile(ClusterProfile),
    /// A cluster.
    Cluster(Cluster),
    /// An IP pool.
    IpPool(IpPool),
    /// A cloud account.
    CloudAccount(CloudAccount),
    /// A private cloud gateway.
    PrivateCloudGateway(PrivateCloudGateway),
}

impl Document {
    /// The document's kind.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Document::ClusterProfile(_) => "ClusterProfile",
            Document::Cluster(_) => "Cluster",
            Document::IpPool(_) => "IpPool",
            Document::CloudAccount(_) => "CloudAccount",
            Document::PrivateCloudGateway(_) => "PrivateCloudGateway",
        }
    }

    /// The object's name.
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Document::ClusterProfile(d) => &d.name,
            Document::Cluster(d) => &d.name,
            Document::IpPool(d) => &d.name,
            Document::CloudAccount(d) => &d.name,
            Document::PrivateCloudGateway(d) => &d.name,
        }
    }
}

/// Input format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML, possibly several `---`-separated documents.
    Yaml,
    /// One JSON document (an object, or an array of objects).
    Json,
}

impl Format {
    /// Guesses the format from a file name (`.json` → JSON, anything else YAML).
    #[must_use]
    pub fn from_path(path: &str) -> Format {
        if path.to_ascii_lowercase().ends_with(".json") {
            Format::Json
        } else {
            Format::Yaml
        }
    }
}

/// A document that failed to parse: its index in the file and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseFailure {
    /// 0-based index of the document in the file.
    pub index: usize,
    /// The violations (field path + rule).
    pub violations: Vec<Violation>,
}

/// Parses every document of `text`. Returns the documents that parsed and the failures.
#[must_use]
pub fn parse_documents(text: &str, format: Format) -> (Vec<Document>, Vec<ParseFailure>) {
    // Each value with its index in the stream (empty YAML documents count: the index names
    // the document a user sees).
    let mut values = Vec::new();
    let mut failures = Vec::new();
    match format {
        Format::Json => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Array(items)) => values.extend(items.into_iter().enumerate()),
            Ok(v) => values.push((0, v)),
            Err(e) => failures.push(ParseFailure {
                index: 0,
                violations: vec![Violation::new("", format!("not valid JSON: {e}"))],
            }),
        },
        Format::Yaml => {
            for (i, de) in serde_norway::Deserializer::from_str(text).enumerate() {
                match serde_json::Value::deserialize(de) {
                    Ok(serde_json::Value::Null) => {}
                    Ok(v) => values.push((i, v)),
                    Err(e) => {
                        failures.push(ParseFailure {
                            index: i,
                            violations: vec![Violation::new("", format!("not valid YAML: {e}"))],
                        });
                        // After a syntax error the rest of the stream cannot be trusted (and
                        // the parser would report the same error again and again).
                        break;
                    }
                }
            }
        }
    }
    let mut docs = Vec::new();
    for (i, v) in values {
        match document_from_value(v) {
            Ok(d) => docs.push(d),
            Err(v) => failures.push(ParseFailure {
                index: i,
                violations: vec![v],
            }),
        }
    }
    (docs, failures)
}

/// Builds a document from a JSON value, naming the field of the first error.
pub fn document_from_value(mut v: serde_json::Value) -> Result<Document, Violation> {
    let Some(obj) = v.as_object_mut() else {
        return Err(Violation::new(
            "",
            "a document must be a mapping with a `kind`",
        ));
    };
    let kind = match obj.remove("kind") {
        Some(serde_json::Value::String(k)) => k,
        Some(_) => return Err(Violation::new("kind", "must be a string")),
        None => {
            return Err(Violation::new(
                "kind",
                "is required: one of ClusterProfile, Cluster, IpPool, CloudAccount, PrivateCloudGateway",
            ))
        }
    };
    match kind.as_str() {
        "ClusterProfile" => typed(v).map(Document::ClusterProfile),
        "Cluster" => typed(v).map(Document::Cluster),
        "IpPool" => typed(v).map(Document::IpPool),
        "CloudAccount" => typed(v).map(Document::CloudAccount),
        "PrivateCloudGateway" => typed(v).map(Document::PrivateCloudGateway),
        other => Err(Violation::new(
            "kind",
            format!("unknown kind `{other}`: expected one of ClusterProfile, Cluster, IpPool, CloudAccount, PrivateCloudGateway"),
        )),
    }
}

/// Deserializes one typed object from a JSON value, naming the failing field.
pub fn typed<T: DeserializeOwned>(v: serde_json::Value) -> Result<T, Violation> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        Violation::new(path, e.into_inner().to_string())
    })
}

/// Parses one typed object from YAML or JSON text (no `kind` needed).
pub fn from_text<T: DeserializeOwned>(text: &str, format: Format) -> Result<T, Violation> {
    let v: serde_json::Value = match format {
        Format::Json => serde_json::from_str(text)
            .map_err(|e| Violation::new("", format!("not valid JSON: {e}")))?,
        Format::Yaml => serde_norway::from_str(text)
            .map_err(|e| Violation::new("", format!("not valid YAML: {e}")))?,
    };
    let v = match v {
        serde_json::Value::Object(mut m) => {
            m.remove("kind");
            serde_json::Value::Object(m)
        }
        other => other,
    };
    typed(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by `fuzz/` (documents): an empty document shifted the index of the failures
    /// after it.
    #[test]
    fn failures_name_the_document_a_user_sees_empty_ones_counted() {
        let (docs, failures) = parse_documents(
            "kind: IpPool\nname: a\n---\n~\n---\nkind: Bogus\n",
            Format::Yaml,
        );
        assert!(docs.is_empty() || docs.len() == 1);
        assert_eq!(
            failures.len(),
            failures.iter().filter(|f| f.index != 1).count()
        );
        assert!(failures.iter().any(|f| f.index == 2), "{failures:?}");
    }
}

//! Pack manifests as the engine applies them to the running cluster: CNI, CSI and add-on
//! packs' `manifests` rendered with their values, each object labelled with its pack and
//! cluster, and a revision that changes whenever what would be applied changes.
//!
//! How values reach manifests: a manifest may reference any value with Helm's syntax,
//! `{{ .Values.path.to.key }}`. The values are the pack's own `values` deep-merged with the
//! cluster's override for that pack (`packValues`, `Engine::set_pack_values`). A string is
//! inserted as is (quote it in the manifest where YAML needs quotes), numbers and booleans as
//! written, mappings and lists as inline (flow) YAML. A reference to a key that neither
//! defines is an error naming the pack and the key; any other expression inside `{{ }}` is an
//! error too (no functions, no pipelines: the manifests stay plain YAML with substitutions).
//!
//! ```
//! use spectro_core::bootstrap::manifests::render;
//! use spectro_core::model::{Pack, PackLayer};
//!
//! let mut pack = Pack::new("hello", PackLayer::Addon, "1.0.0");
//! pack.values = "replicas: 2\nimage: { tag: '1.27' }".into();
//! pack.manifests = "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: hello, namespace: default }\ndata:\n  replicas: '{{ .Values.replicas }}'\n  tag: '{{ .Values.image.tag }}'\n".into();
//! let r = render("demo", &pack, None)?;
//! assert_eq!(r.objects[0]["data"]["tag"], "1.27");
//! assert_eq!(r.objects[0]["metadata"]["labels"]["spectro.dev/pack"], "hello");
//! # Ok::<(), spectro_core::error::CoreError>(())
//! ```

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{CoreError, Result};
use crate::model::pack::{merge_values, parse_values};
use crate::model::{Pack, PackLayer};
use crate::workload::{ObjectRef, CLUSTER_LABEL, PACK_LABEL};

/// A pack's objects, ready to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedPack {
    /// The pack's name.
    pub pack: String,
    /// The objects, in apply order (namespaces and CRDs first).
    pub objects: Vec<Value>,
    /// A hash of `objects`: the revision the cluster's status reports once applied.
    pub revision: String,
}

impl RenderedPack {
    /// The references of its objects (the inventory pruning works from).
    #[must_use]
    pub fn refs(&self) -> Vec<ObjectRef> {
        self.objects.iter().filter_map(object_ref).collect()
    }
}

/// True for the layers whose manifests the engine applies to the running cluster.
#[must_use]
pub fn applies_to_cluster(layer: PackLayer) -> bool {
    matches!(layer, PackLayer::Cni | PackLayer::Csi | PackLayer::Addon)
}

fn bad(pack: &str, field: impl Into<String>, rule: impl Into<String>) -> CoreError {
    CoreError::PackValues {
        pack: pack.to_string(),
        field: field.into(),
        rule: rule.into(),
    }
}

/// The reference of an applied object.
#[must_use]
pub fn object_ref(o: &Value) -> Option<ObjectRef> {
    Some(ObjectRef {
        api_version: o.get("apiVersion")?.as_str()?.to_string(),
        kind: o.get("kind")?.as_str()?.to_string(),
        namespace: o
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_string),
        name: o.pointer("/metadata/name")?.as_str()?.to_string(),
    })
}

fn lookup<'v>(values: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.')
        .try_fold(values, |v, k| v.as_object().and_then(|m| m.get(k)))
}

fn substitute(pack: &str, text: &str, values: &Value) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(bad(pack, "manifests", "a `{{` is never closed by `}}`"));
        };
        let expr = after[..end].trim();
        let Some(path) = expr.strip_prefix(".Values.") else {
            return Err(bad(
                pack,
                "manifests",
                format!("unsupported template expression `{{{{ {expr} }}}}`: only `{{{{ .Values.<key> }}}}` is supported"),
            ));
        };
        let v = lookup(values, path).ok_or_else(|| {
            bad(
                pack,
                path,
                "is referenced by the manifests but defined neither in the pack's values nor in the cluster's overrides",
            )
        })?;
        match v {
            Value::String(s) => out.push_str(s),
            Value::Null => out.push_str("null"),
            Value::Bool(_) | Value::Number(_) => out.push_str(&v.to_string()),
            Value::Array(_) | Value::Object(_) => out.push_str(&v.to_string()),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Apply order: what other objects need first.
fn rank(o: &Value) -> u8 {
    match o.get("kind").and_then(Value::as_str) {
        Some("Namespace") => 0,
        Some("CustomResourceDefinition") => 1,
        Some(
            "ServiceAccount" | "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding"
            | "ConfigMap" | "Secret" | "StorageClass",
        ) => 2,
        _ => 3,
    }
}

/// Renders `pack`'s manifests for `cluster` with its values and `overrides` (the cluster's
/// `packValues` entry for the pack, YAML text).
pub fn render(cluster: &str, pack: &Pack, overrides: Option<&str>) -> Result<RenderedPack> {
    let name = pack.name.as_str();
    let mut values = parse_values(&pack.values).map_err(|e| bad(name, "values", e))?;
    if let Some(o) = overrides {
        let o = parse_values(o).map_err(|e| bad(name, "values (cluster override)", e))?;
        merge_values(&mut values, &o);
    }
    let text = substitute(name, &pack.manifests, &values)?;
    let mut objects = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(&text).enumerate() {
        let v: Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| bad(name, "manifests", format!("document {}: {e}", i + 1)))?;
        let mut v = match v {
            Value::Null => continue,
            Value::Object(_) => v,
            _ => {
                return Err(bad(
                    name,
                    "manifests",
                    format!("document {} is not a Kubernetes object (a mapping)", i + 1),
                ))
            }
        };
        if object_ref(&v).is_none() {
            return Err(bad(
                name,
                "manifests",
                format!("document {} lacks apiVersion, kind or metadata.name", i + 1),
            ));
        }
        let meta = v
            .as_object_mut()
            .and_then(|o| o.get_mut("metadata"))
            .and_then(Value::as_object_mut);
        if let Some(meta) = meta {
            let labels = meta
                .entry("labels")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(l) = labels.as_object_mut() {
                l.insert(PACK_LABEL.into(), Value::String(name.into()));
                l.insert(CLUSTER_LABEL.into(), Value::String(cluster.into()));
            } else {
                return Err(bad(
                    name,
                    "manifests",
                    format!("document {}: metadata.labels is not a mapping", i + 1),
                ));
            }
        }
        objects.push(v);
    }
    objects.sort_by_key(rank);
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(pack.version.as_bytes());
    h.update(serde_json::to_vec(&objects).unwrap_or_default());
    let revision = h
        .finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(RenderedPack {
        pack: name.to_string(),
        objects,
        revision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(manifests: &str, values: &str) -> Pack {
        let mut p = Pack::new("calico", PackLayer::Cni, "3.28.0");
        p.manifests = manifests.into();
        p.values = values.into();
        p
    }

    const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: kube-system}\ndata: {mtu: '{{ .Values.mtu }}', pools: '{{ .Values.pools }}'}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: calico-system}\n";

    #[test]
    fn values_and_overrides_reach_the_objects() {
        let p = pack(CM, "mtu: 1450\npools: [a, b]");
        let r = render("demo", &p, None).unwrap();
        assert_eq!(r.objects[0]["kind"], "Namespace", "namespaces first");
        assert_eq!(r.objects[1]["data"]["mtu"], "1450");
        assert_eq!(r.objects[1]["data"]["pools"], r#"["a","b"]"#);
        assert_eq!(r.objects[1]["metadata"]["labels"][CLUSTER_LABEL], "demo");
        let o = render("demo", &p, Some("mtu: 9000")).unwrap();
        assert_eq!(o.objects[1]["data"]["mtu"], "9000");
        assert_ne!(o.revision, r.revision, "an override changes the revision");
        assert_eq!(render("demo", &p, None).unwrap().revision, r.revision);
        assert_eq!(r.refs()[1].to_string(), "ConfigMap kube-system/c");
    }

    #[test]
    fn unknown_keys_and_bad_templates_name_the_pack() {
        let e = render("demo", &pack(CM, "mtu: 1"), None).unwrap_err();
        assert!(
            matches!(&e, CoreError::PackValues { pack, field, .. } if pack == "calico" && field == "pools"),
            "{e}"
        );
        let e = render("demo", &pack("a: '{{ include \"x\" }}'", ""), None).unwrap_err();
        assert!(
            e.to_string().contains("unsupported template expression"),
            "{e}"
        );
        let e = render("demo", &pack("a: '{{ .Values.x", "x: 1"), None).unwrap_err();
        assert!(e.to_string().contains("never closed"), "{e}");
        let e = render("demo", &pack("- 1\n", ""), None).unwrap_err();
        assert!(e.to_string().contains("not a Kubernetes object"), "{e}");
        let e = render(
            "demo",
            &pack("kind: ConfigMap\nmetadata: {name: x}\n", ""),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("lacks apiVersion"), "{e}");
    }
}

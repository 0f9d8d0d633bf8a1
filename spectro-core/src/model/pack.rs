//! Packs: the layers a cluster profile is built from.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The layer a pack occupies in a cluster profile, in the order the layers stack.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PackLayer {
    /// Operating system image (exactly one).
    Os,
    /// Kubernetes distribution (exactly one).
    Kubernetes,
    /// Container network interface plugin (exactly one).
    Cni,
    /// Container storage interface plugin (at most one).
    Csi,
    /// Any number of add-ons (monitoring, security, ...).
    Addon,
}

impl PackLayer {
    /// The layer's name as written in specs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            PackLayer::Os => "os",
            PackLayer::Kubernetes => "kubernetes",
            PackLayer::Cni => "cni",
            PackLayer::Csi => "csi",
            PackLayer::Addon => "addon",
        }
    }
}

impl Pack {
    /// A pack with no values, annotations, roles or manifests.
    #[must_use]
    pub fn new(name: impl Into<String>, layer: PackLayer, version: impl Into<String>) -> Self {
        Pack {
            name: name.into(),
            layer,
            version: version.into(),
            values: String::new(),
            annotations: BTreeMap::new(),
            ansible_roles: Vec::new(),
            manifests: String::new(),
        }
    }
}

/// Annotation naming a bring-your-own image (AMI id, VHD URL, vSphere template path).
pub const ANNOTATION_IMAGE: &str = "image";
/// Annotation telling whether Kubernetes is already installed on a bring-your-own image.
pub const ANNOTATION_SKIP_K8S_INSTALL: &str = "skipK8sInstall";

/// One pack of a cluster profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pack {
    /// Pack name, e.g. `ubuntu`, `kubernetes`, `calico`.
    pub name: String,
    /// The layer it fills.
    pub layer: PackLayer,
    /// Pack version, e.g. `1.30.4`.
    pub version: String,
    /// Default configuration values, a YAML mapping as text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub values: String,
    /// Annotations, e.g. `skipK8sInstall: "true"` or `image: ami-0abc...`. AWS also reads
    /// `imageOwners` on the OS pack (comma-separated account ids whose `spectro-*` AMIs may be
    /// picked besides the account's own) and `ports` on a CNI pack it has no built-in port list
    /// for (`tcp/179,udp/4789,ip/4`: what the nodes' security groups open between nodes).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Ansible roles run on the image to customize it (OS packs only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ansible_roles: Vec<String>,
    /// Kubernetes manifests (YAML) the pack installs (CNI, CSI and add-on packs): written for
    /// `kubeadm init` on the first control-plane node, and, with a workload connection,
    /// applied and kept by the engine (server-side apply, values through
    /// `{{ .Values.key }}`: see [`crate::bootstrap::manifests`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub manifests: String,
}

impl Pack {
    /// The bring-your-own image reference, if the pack names one.
    pub fn image_ref(&self) -> Option<&str> {
        self.annotations
            .get(ANNOTATION_IMAGE)
            .map(String::as_str)
            .filter(|s| !s.trim().is_empty())
    }

    /// Value of `skipK8sInstall`; `None` when absent. Only `"true"`/`"false"` are valid.
    pub fn skip_k8s_install(&self) -> Option<&str> {
        self.annotations
            .get(ANNOTATION_SKIP_K8S_INSTALL)
            .map(String::as_str)
    }

    /// Parses `values` as a YAML mapping (empty text is an empty mapping).
    pub fn parsed_values(&self) -> Result<serde_json::Value, String> {
        parse_values(&self.values)
    }
}

/// Parses pack values (YAML text) into a JSON value that must be a mapping.
pub fn parse_values(text: &str) -> Result<serde_json::Value, String> {
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Object(Default::default()));
    }
    let v: serde_json::Value = serde_norway::from_str(text).map_err(|e| e.to_string())?;
    match v {
        serde_json::Value::Object(_) => Ok(v),
        serde_json::Value::Null => Ok(serde_json::Value::Object(Default::default())),
        _ => Err("values must be a YAML mapping".to_string()),
    }
}

/// Flattens a values mapping to `dotted.key -> leaf value` pairs. A key's own dots and
/// backslashes are escaped (`a\.b` is the key `a.b`, not `b` under `a`; see
/// [`split_dotted_key`]), and an empty key is kept (`""`, or `a.` under `a`), so distinct
/// values never flatten to the same key.
#[must_use]
pub fn flatten_values(v: &serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    fn walk(
        path: Option<&str>,
        v: &serde_json::Value,
        out: &mut BTreeMap<String, serde_json::Value>,
    ) {
        match v {
            serde_json::Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    let k = k.replace('\\', "\\\\").replace('.', "\\.");
                    let key = match path {
                        None => k,
                        Some(p) => format!("{p}.{k}"),
                    };
                    walk(Some(&key), child, out);
                }
            }
            _ => {
                if let Some(p) = path {
                    out.insert(p.to_string(), v.clone());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(None, v, &mut out);
    out
}

/// The keys of a dotted key as [`flatten_values`] writes it (escapes undone).
#[must_use]
pub fn split_dotted_key(key: &str) -> Vec<String> {
    let mut segs = vec![String::new()];
    let mut chars = key.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(n), Some(last)) = (chars.next(), segs.last_mut()) {
                    last.push(n);
                }
            }
            '.' => segs.push(String::new()),
            c => {
                if let Some(last) = segs.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    segs
}

/// Deep-merges `overlay` onto `base` (mappings merge key by key, anything else replaces).
pub fn merge_values(base: &mut serde_json::Value, overlay: &serde_json::Value) {
    match (base, overlay) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge_values(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by `fuzz/` (profile_values): an empty key was dropped, and `a.b` collided with
    /// `a: {b}`, so a profile change could go unnoticed.
    #[test]
    fn flattened_keys_never_collide_and_round_trip() {
        let v = serde_json::json!({"": [], "a.b": 1, "a": {"b": 2, "": 3}, "c\\d": 4});
        let f = flatten_values(&v);
        assert_eq!(f.len(), 5, "{f:?}");
        assert_eq!(f["a\\.b"], 1);
        assert_eq!(f["a.b"], 2);
        assert_eq!(f["a."], 3);
        assert_eq!(f["c\\\\d"], 4);
        assert_eq!(f[""], serde_json::json!([]));
        for key in f.keys() {
            let segs = split_dotted_key(key);
            let mut at = &v;
            for s in &segs {
                at = &at[s.as_str()];
            }
            assert_eq!(at, &f[key], "{key} -> {segs:?}");
        }
    }
}

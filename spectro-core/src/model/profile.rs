//! Cluster profiles: the layered template (OS, Kubernetes, CNI, CSI, add-ons) a cluster is
//! built from, and the update notifications a profile change raises on its clusters.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::pack::{flatten_values, parse_values, split_dotted_key, Pack, PackLayer};
use super::CloudType;

/// Which cloud a profile targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProfileCloud {
    /// Usable on every cloud.
    #[default]
    Any,
    /// Amazon Web Services.
    Aws,
    /// Microsoft Azure.
    Azure,
    /// Google Cloud.
    Gcp,
    /// VMware vSphere.
    Vsphere,
}

impl ProfileCloud {
    /// True when a cluster on `cloud` may use a profile targeting `self`.
    #[must_use]
    pub fn allows(self, cloud: CloudType) -> bool {
        matches!(
            (self, cloud),
            (ProfileCloud::Any, _)
                | (ProfileCloud::Aws, CloudType::Aws)
                | (ProfileCloud::Azure, CloudType::Azure)
                | (ProfileCloud::Gcp, CloudType::Gcp)
                | (ProfileCloud::Vsphere, CloudType::Vsphere)
        )
    }
}

/// A cluster profile: an ordered stack of packs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterProfile {
    /// Profile name (DNS-1123 label).
    pub name: String,
    /// Profile version, e.g. `1.0.0`.
    pub version: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Target cloud, or `any`.
    #[serde(default)]
    pub cloud: ProfileCloud,
    /// Packs, bottom layer first: os, kubernetes, cni, csi, add-ons.
    pub packs: Vec<Pack>,
}

impl ClusterProfile {
    /// The first pack of `layer`.
    #[must_use]
    pub fn pack(&self, layer: PackLayer) -> Option<&Pack> {
        self.packs.iter().find(|p| p.layer == layer)
    }

    /// The pack named `name`.
    #[must_use]
    pub fn pack_named(&self, name: &str) -> Option<&Pack> {
        self.packs.iter().find(|p| p.name == name)
    }

    /// The reference (name and version) a cluster uses to name this profile.
    #[must_use]
    pub fn reference(&self) -> ProfileRef {
        ProfileRef {
            name: self.name.clone(),
            version: self.version.clone(),
        }
    }

    /// The Kubernetes version of the profile (the kubernetes pack's version).
    #[must_use]
    pub fn kubernetes_version(&self) -> Option<&str> {
        self.pack(PackLayer::Kubernetes).map(|p| p.version.as_str())
    }
}

/// A reference from a cluster to a profile.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileRef {
    /// Profile name.
    pub name: String,
    /// Profile version.
    pub version: String,
}

impl std::fmt::Display for ProfileRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// One change between the profile a cluster runs and the current profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", tag = "change")]
pub enum PackChange {
    /// A pack was added to the profile.
    Added {
        /// Pack name.
        pack: String,
        /// Its version.
        version: String,
    },
    /// A pack was removed from the profile.
    Removed {
        /// Pack name.
        pack: String,
    },
    /// A pack's version changed (e.g. a Kubernetes upgrade).
    VersionChanged {
        /// Pack name.
        pack: String,
        /// Version before.
        from: String,
        /// Version after.
        to: String,
    },
    /// A default value of a pack changed.
    ValueChanged {
        /// Pack name.
        pack: String,
        /// Dotted key, e.g. `kubeadmconfig.apiServer.extraArgs.audit-log-maxage` (a key's
        /// own dots escaped: `a\.b`; see `pack::flatten_values`).
        key: String,
        /// Old default (absent when the key is new).
        from: Option<serde_json::Value>,
        /// New default (absent when the key was removed).
        to: Option<serde_json::Value>,
    },
    /// Another pack field changed (annotations, Ansible roles, layer).
    DefinitionChanged {
        /// Pack name.
        pack: String,
    },
    /// The Kubernetes manifests the pack installs changed.
    ManifestsChanged {
        /// Pack name.
        pack: String,
    },
}

impl PackChange {
    /// The pack the change is about.
    #[must_use]
    pub fn pack(&self) -> &str {
        match self {
            PackChange::Added { pack, .. }
            | PackChange::Removed { pack }
            | PackChange::VersionChanged { pack, .. }
            | PackChange::ValueChanged { pack, .. }
            | PackChange::DefinitionChanged { pack }
            | PackChange::ManifestsChanged { pack } => pack,
        }
    }
}

/// A profile value change that hits a value the cluster overrides: must be resolved first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OverrideConflict {
    /// Pack name.
    pub pack: String,
    /// Dotted key (a key's own dots escaped: `a\.b`; see `pack::flatten_values`).
    pub key: String,
    /// The profile's new default.
    pub profile_value: Option<serde_json::Value>,
    /// The cluster's override.
    pub cluster_value: serde_json::Value,
}

/// How an update notification's conflicts are resolved when it is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ConflictResolution {
    /// Keep the cluster's overrides.
    KeepOverrides,
    /// Drop the conflicting overrides and take the profile's values.
    TakeProfile,
    /// Replace the overrides of the named packs with edited ones (pack name → YAML mapping;
    /// an empty text removes the pack's overrides). Overrides of other packs are kept.
    Edit(BTreeMap<String, String>),
}

/// The changes between two profile revisions, pack by pack, in profile order.
#[must_use]
pub fn diff_profiles(old: &ClusterProfile, new: &ClusterProfile) -> Vec<PackChange> {
    let mut out = Vec::new();
    let old_names: BTreeSet<&str> = old.packs.iter().map(|p| p.name.as_str()).collect();
    for p in &new.packs {
        match old.pack_named(&p.name) {
            None => out.push(PackChange::Added {
                pack: p.name.clone(),
                version: p.version.clone(),
            }),
            Some(o) => {
                if o.version != p.version {
                    out.push(PackChange::VersionChanged {
                        pack: p.name.clone(),
                        from: o.version.clone(),
                        to: p.version.clone(),
                    });
                }
                if o.layer != p.layer
                    || o.annotations != p.annotations
                    || o.ansible_roles != p.ansible_roles
                {
                    out.push(PackChange::DefinitionChanged {
                        pack: p.name.clone(),
                    });
                }
                if o.manifests != p.manifests {
                    out.push(PackChange::ManifestsChanged {
                        pack: p.name.clone(),
                    });
                }
                let ov = flatten_values(&parse_values(&o.values).unwrap_or_default());
                let nv = flatten_values(&parse_values(&p.values).unwrap_or_default());
                let keys: BTreeSet<&String> = ov.keys().chain(nv.keys()).collect();
                for k in keys {
                    let (a, b) = (ov.get(k), nv.get(k));
                    if a != b {
                        out.push(PackChange::ValueChanged {
                            pack: p.name.clone(),
                            key: k.clone(),
                            from: a.cloned(),
                            to: b.cloned(),
                        });
                    }
                }
            }
        }
    }
    for name in old_names {
        if new.pack_named(name).is_none() {
            out.push(PackChange::Removed {
                pack: name.to_string(),
            });
        }
    }
    out
}

/// The value changes that collide with the cluster's overrides (`pack name -> YAML`).
#[must_use]
pub fn find_conflicts(
    changes: &[PackChange],
    overrides: &BTreeMap<String, String>,
) -> Vec<OverrideConflict> {
    let mut out = Vec::new();
    let mut flat: BTreeMap<&str, BTreeMap<String, serde_json::Value>> = BTreeMap::new();
    for (pack, text) in overrides {
        flat.insert(
            pack.as_str(),
            flatten_values(&parse_values(text).unwrap_or_default()),
        );
    }
    for c in changes {
        if let PackChange::ValueChanged { pack, key, to, .. } = c {
            if let Some(ov) = flat.get(pack.as_str()) {
                // A conflict when the override sets this key, or a key under it / above it.
                for (ok, ovalue) in ov {
                    let related = ok == key
                        || ok.starts_with(&format!("{key}."))
                        || key.starts_with(&format!("{ok}."));
                    if related {
                        out.push(OverrideConflict {
                            pack: pack.clone(),
                            key: ok.clone(),
                            profile_value: to.clone(),
                            cluster_value: ovalue.clone(),
                        });
                    }
                }
            }
        }
    }
    out.dedup_by(|a, b| a.pack == b.pack && a.key == b.key);
    out
}

/// Removes the conflicting keys from the overrides (for [`ConflictResolution::TakeProfile`]).
pub fn drop_conflicting_overrides(
    overrides: &mut BTreeMap<String, String>,
    conflicts: &[OverrideConflict],
) {
    for c in conflicts {
        let Some(text) = overrides.get_mut(&c.pack) else {
            continue;
        };
        let Ok(mut v) = parse_values(text) else {
            continue;
        };
        remove_path(&mut v, &split_dotted_key(&c.key));
        *text = if v.as_object().is_some_and(|m| m.is_empty()) {
            String::new()
        } else {
            serde_norway::to_string(&v).unwrap_or_default()
        };
    }
    overrides.retain(|_, t| !t.trim().is_empty());
}

/// Removes the value at `path` (keys) and the mappings it leaves empty.
fn remove_path(v: &mut serde_json::Value, path: &[String]) {
    let Some(m) = v.as_object_mut() else { return };
    match path {
        [] => {}
        [last] => {
            m.remove(last);
        }
        [head, rest @ ..] => {
            if let Some(child) = m.get_mut(head) {
                remove_path(child, rest);
                if child.as_object().is_some_and(|c| c.is_empty()) {
                    m.remove(head);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by `fuzz/` (profile_values): an override key holding a dot could not be
    /// dropped, so "take the profile's values" silently kept it.
    #[test]
    fn an_override_key_with_a_dot_is_dropped_with_its_conflict() {
        let mut overrides = BTreeMap::from([
            ("csi".to_string(), "a.b: null\nkeep: 1\n".to_string()),
            ("cni".to_string(), "a: {b: 2}\n".to_string()),
        ]);
        let conflict = |pack: &str, key: &str| OverrideConflict {
            pack: pack.into(),
            key: key.into(),
            profile_value: None,
            cluster_value: serde_json::Value::Null,
        };
        drop_conflicting_overrides(
            &mut overrides,
            &[conflict("csi", "a\\.b"), conflict("cni", "a.b")],
        );
        assert_eq!(overrides.get("csi").map(|t| t.trim()), Some("keep: 1"));
        assert!(!overrides.contains_key("cni"), "{overrides:?}");
    }
}

//! Cluster profile rules.

use std::collections::BTreeSet;

use super::rules::dns1123_label;
use super::{field, index, Report, Violation};
use crate::model::pack::{parse_values, ANNOTATION_SKIP_K8S_INSTALL};
use crate::model::{ClusterProfile, PackLayer};

/// Validates a cluster profile: names, layer counts and order, pack values and annotations.
#[must_use]
pub fn validate_profile(p: &ClusterProfile) -> Vec<Violation> {
    let mut r = Report::default();
    if let Err(rule) = dns1123_label(&p.name) {
        r.add("name", rule);
    }
    r.check(!p.version.trim().is_empty(), "version", "is required");
    if p.packs.is_empty() {
        r.add(
            "packs",
            "a profile needs at least an os, a kubernetes and a cni pack",
        );
    }
    for (layer, rule) in [
        (PackLayer::Os, "exactly one"),
        (PackLayer::Kubernetes, "exactly one"),
        (PackLayer::Cni, "exactly one"),
        (PackLayer::Csi, "at most one"),
    ] {
        let n = p.packs.iter().filter(|k| k.layer == layer).count();
        let ok = match rule {
            "exactly one" => n == 1,
            _ => n <= 1,
        };
        if !ok && !p.packs.is_empty() {
            r.add(
                "packs",
                format!(
                    "a profile must have {rule} {} pack, found {n}",
                    layer.as_str()
                ),
            );
        }
    }
    let mut names = BTreeSet::new();
    let mut prev: Option<PackLayer> = None;
    for (i, pack) in p.packs.iter().enumerate() {
        let base = index("packs", i);
        if pack.name.trim().is_empty() {
            r.add(field(&base, "name"), "is required");
        } else if !names.insert(pack.name.as_str()) {
            r.add(
                field(&base, "name"),
                format!(
                    "pack `{}` appears twice: pack names must be unique",
                    pack.name
                ),
            );
        }
        r.check(
            !pack.version.trim().is_empty(),
            field(&base, "version"),
            "is required",
        );
        if let Some(prev) = prev {
            if pack.layer < prev {
                r.add(
                    field(&base, "layer"),
                    format!(
                        "layers must be ordered os, kubernetes, cni, csi, addon: `{}` cannot follow `{}`",
                        pack.layer.as_str(),
                        prev.as_str()
                    ),
                );
            }
        }
        prev = Some(prev.map_or(pack.layer, |p| p.max(pack.layer)));
        if let Err(e) = parse_values(&pack.values) {
            r.add(
                field(&base, "values"),
                format!("must be a YAML mapping: {e}"),
            );
        }
        if let Some(v) = pack.skip_k8s_install() {
            if v != "true" && v != "false" {
                r.add(
                    field(&field(&base, "annotations"), ANNOTATION_SKIP_K8S_INSTALL),
                    format!("must be \"true\" or \"false\", got \"{v}\""),
                );
            }
            if pack.layer != PackLayer::Os {
                r.add(
                    field(&field(&base, "annotations"), ANNOTATION_SKIP_K8S_INSTALL),
                    "only applies to the os pack",
                );
            }
        }
        if pack.layer != PackLayer::Os && !pack.ansible_roles.is_empty() {
            r.add(
                field(&base, "ansibleRoles"),
                "Ansible roles customize the image: only the os pack may have them",
            );
        }
        if pack.layer == PackLayer::Os
            && pack.skip_k8s_install() == Some("false")
            && pack.image_ref().is_none()
        {
            r.add(
                field(&field(&base, "annotations"), "image"),
                "skipK8sInstall \"false\" installs Kubernetes on a bring-your-own image: name the image",
            );
        }
        for (j, role) in pack.ansible_roles.iter().enumerate() {
            r.check(
                !role.trim().is_empty(),
                index(&field(&base, "ansibleRoles"), j),
                "must not be empty",
            );
        }
        if pack.layer == PackLayer::Kubernetes && parse_k8s_version(&pack.version).is_none() {
            r.add(
                field(&base, "version"),
                format!(
                    "`{}` is not a Kubernetes version (MAJOR.MINOR.PATCH, e.g. 1.30.4)",
                    pack.version
                ),
            );
        }
    }
    r.into_violations()
}

/// Parses `1.30.4` or `v1.30.4` into (major, minor, patch).
#[must_use]
pub fn parse_k8s_version(v: &str) -> Option<(u32, u32, u32)> {
    let v = v.strip_prefix('v').unwrap_or(v);
    let mut it = v.split('.');
    let a = it.next()?.parse().ok()?;
    let b = it.next()?.parse().ok()?;
    let c = it.next().map_or(Some(0), |s| s.parse().ok())?;
    if it.next().is_some() {
        return None;
    }
    Some((a, b, c))
}

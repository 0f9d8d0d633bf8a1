//! GCP placement rules: project, region, network, pool zones within the region, persistent
//! disk types and sizes.

use super::super::rules::{dns1123_label, is_gcp_region};
use super::super::{field, index, Report};
use super::disk_size;
use crate::model::{GcpPlacement, NodePool};

const GCP_DISK_TYPES: [&str; 4] = ["pd-standard", "pd-balanced", "pd-ssd", "pd-extreme"];

/// `cloud.gcp`: the cluster's placement.
pub(super) fn validate_placement(r: &mut Report, g: &GcpPlacement) {
    r.check(
        is_gcp_project(&g.project),
        "cloud.gcp.project",
        "must be a project id: 6 to 30 lower-case letters, digits or '-', starting with a letter",
    );
    r.check(
        is_gcp_region(&g.region),
        "cloud.gcp.region",
        format!("`{}` is not a GCP region (e.g. us-west1)", g.region),
    );
    if let Some(n) = &g.network {
        if let Err(rule) = dns1123_label(n) {
            r.add("cloud.gcp.network", rule);
        }
    }
}

/// The rule a GCP machine type `t` breaks, if any.
pub(super) fn instance_type_rule(t: &str) -> Option<String> {
    let ok = !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    (!ok).then(|| format!("`{t}` is not a machine type (e.g. n2-standard-4)"))
}

/// A pool's GCP-specific shape: zones of the region, persistent disk.
pub(super) fn validate_pool(
    r: &mut Report,
    g: &GcpPlacement,
    p: &NodePool,
    base: &str,
    zones_path: &str,
) {
    r.check(
        !p.availability_zones.is_empty(),
        zones_path,
        "choose one or more availability zones",
    );
    for (i, z) in p.availability_zones.iter().enumerate() {
        let ok = z
            .strip_prefix(&g.region)
            .and_then(|s| s.strip_prefix('-'))
            .is_some_and(|s| s.len() == 1 && s.bytes().all(|b| b.is_ascii_lowercase()));
        r.check(
            ok,
            index(zones_path, i),
            format!(
                "`{z}` is not a zone of region {} (e.g. {}-a)",
                g.region, g.region
            ),
        );
    }
    if let Some(t) = &p.disk_type {
        r.check(
            GCP_DISK_TYPES.contains(&t.as_str()),
            field(base, "diskType"),
            format!("must be one of {}", GCP_DISK_TYPES.join(", ")),
        );
    }
    disk_size(r, base, p, 10, 65536);
}

/// What cannot change on GCP after creation: project, region, network.
pub(super) fn validate_update(r: &mut Report, a: &GcpPlacement, b: &GcpPlacement, immutable: &str) {
    r.check(a.project == b.project, "cloud.gcp.project", immutable);
    r.check(a.region == b.region, "cloud.gcp.region", immutable);
    r.check(a.network == b.network, "cloud.gcp.network", immutable);
}

fn is_gcp_project(s: &str) -> bool {
    (6..=30).contains(&s.len())
        && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.ends_with('-')
}

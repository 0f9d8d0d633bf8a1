//! Private cloud gateway rules.

use std::collections::BTreeSet;

use super::cluster::validate_proxy;
use super::rules::dns1123_label;
use super::{index, Report, Violation};
use crate::model::PrivateCloudGateway;

/// Validates a gateway: size 1 or 3, proxy, linked pools.
#[must_use]
pub fn validate_gateway(g: &PrivateCloudGateway) -> Vec<Violation> {
    let mut r = Report::default();
    if let Err(rule) = dns1123_label(&g.name) {
        r.add("name", rule);
    }
    r.check(
        g.size == 1 || g.size == 3,
        "size",
        format!("a gateway has 1 or 3 nodes, got {}", g.size),
    );
    if let Some(p) = &g.proxy {
        validate_proxy(&mut r, "proxy", p);
    }
    let mut seen = BTreeSet::new();
    for (i, pool) in g.ip_pools.iter().enumerate() {
        r.check(
            seen.insert(pool.as_str()),
            index("ipPools", i),
            format!("IP pool `{pool}` is linked twice"),
        );
    }
    r.into_violations()
}

/// Transition rules for a gateway update: resize 1 → 3 only.
#[must_use]
pub fn validate_gateway_update(
    old: &PrivateCloudGateway,
    new: &PrivateCloudGateway,
) -> Vec<Violation> {
    let mut r = Report::default();
    r.check(old.name == new.name, "name", "cannot change after creation");
    if old.size != new.size && !(old.size == 1 && new.size == 3) {
        r.add(
            "size",
            format!(
                "a gateway can only be resized from 1 to 3 nodes (scaling down is not permitted), not {} to {}",
                old.size, new.size
            ),
        );
    }
    r.into_violations()
}

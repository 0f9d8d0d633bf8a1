//! Cluster rules: the rules every cluster follows (name, tags, profile and account
//! references, proxy, node pools, update transitions) here; each cloud's placement and pool
//! shape rules in a module of its own.

mod aws;
mod azure;
mod gcp;
mod vsphere;

use std::collections::BTreeSet;

use super::rules::{dns1123_label, is_host, is_http_url};
use super::{field, index, key, Catalog, Report, Violation};
use crate::model::pack::parse_values;
use crate::model::{CloudPlacement, CloudType, Cluster, NodePool, PoolRole, ProxySettings};

/// Control-plane pool sizes the doc allows.
pub const CONTROL_PLANE_SIZES: [u32; 3] = [1, 3, 5];
/// Largest worker pool.
pub const MAX_POOL_SIZE: u32 = 1000;
/// Tag key prefixes reserved for ownership marks.
pub const RESERVED_TAG_PREFIXES: [&str; 3] = ["spectro.io/", "aws:", "kubernetes.io/cluster/"];

pub(super) fn validate_proxy(r: &mut Report, base: &str, p: &ProxySettings) {
    let any = !p.http_proxy.is_empty() || !p.https_proxy.is_empty();
    if any {
        r.check(
            !p.http_proxy.is_empty(),
            field(base, "httpProxy"),
            "is required when a proxy is set (both HTTP_PROXY and HTTPS_PROXY are needed)",
        );
        r.check(
            !p.https_proxy.is_empty(),
            field(base, "httpsProxy"),
            "is required when a proxy is set (both HTTP_PROXY and HTTPS_PROXY are needed)",
        );
    }
    for (name, v) in [("httpProxy", &p.http_proxy), ("httpsProxy", &p.https_proxy)] {
        if !v.is_empty() && !is_http_url(v) {
            r.add(
                field(base, name),
                "must be an http:// or https:// URL with a host, e.g. http://10.0.0.5:3128",
            );
        } else if v.contains(":***@") {
            r.add(
                field(base, name),
                "holds the redaction placeholder `***` as its password: give the real one",
            );
        }
    }
    for (i, e) in p.no_proxy.iter().enumerate() {
        let e = e.trim();
        let ok = !e.is_empty()
            && (e.parse::<ipnet::IpNet>().is_ok()
                || is_host(e.trim_start_matches('.').trim_start_matches("*."))
                || e == "*");
        r.check(
            ok,
            index(&field(base, "noProxy"), i),
            "must be a host name, a domain (.corp.org), an IP address or a CIDR",
        );
    }
}

/// Validates a cluster against its referenced objects.
#[must_use]
pub fn validate_cluster(c: &Cluster, cat: &Catalog) -> Vec<Violation> {
    let mut r = Report::default();
    if let Err(rule) = dns1123_label(&c.name) {
        r.add("name", rule);
    }
    r.check(
        c.description.len() <= 1024,
        "description",
        "must be at most 1024 characters",
    );
    for (k, v) in &c.tags {
        let p = key("tags", k);
        if k.trim().is_empty() {
            r.add(&p, "tag keys must not be empty");
        }
        r.check(
            k.len() <= 128,
            &p,
            "tag keys must be at most 128 characters",
        );
        r.check(
            v.len() <= 256,
            &p,
            "tag values must be at most 256 characters",
        );
        if let Some(prefix) = RESERVED_TAG_PREFIXES.iter().find(|x| k.starts_with(*x)) {
            r.add(
                &p,
                format!("the prefix `{prefix}` is reserved for ownership tags"),
            );
        }
    }
    r.check(
        !c.profile.name.trim().is_empty(),
        "profile.name",
        "is required",
    );
    r.check(
        !c.profile.version.trim().is_empty(),
        "profile.version",
        "is required",
    );
    let profile = cat.profile(&c.profile.name, &c.profile.version);
    match profile {
        Some(p) if !p.cloud.allows(c.cloud_type()) => {
            r.add(
                "profile",
                format!(
                    "profile `{}` targets {:?} clusters, this cluster is on {}",
                    p.name,
                    p.cloud,
                    c.cloud_type()
                ),
            );
        }
        None if cat.strict => r.add(
            "profile",
            format!(
                "no cluster profile `{}` version `{}` exists",
                c.profile.name, c.profile.version
            ),
        ),
        _ => {}
    }
    for (pack, text) in &c.pack_values {
        let p = key("packValues", pack);
        if let Some(prof) = profile {
            if prof.pack_named(pack).is_none() {
                r.add(
                    &p,
                    format!("profile `{}` has no pack `{pack}` to override", prof.name),
                );
            }
        }
        if let Err(e) = parse_values(text) {
            r.add(&p, format!("must be a YAML mapping: {e}"));
        }
    }
    r.check(
        !c.cloud_account.trim().is_empty(),
        "cloudAccount",
        "is required",
    );
    let account = cat.accounts.get(&c.cloud_account);
    match account {
        Some(a) if a.cloud() != c.cloud_type() => r.add(
            "cloudAccount",
            format!(
                "account `{}` is an {} account, the cluster is on {}",
                a.name,
                a.cloud(),
                c.cloud_type()
            ),
        ),
        None if cat.strict && !c.cloud_account.is_empty() => r.add(
            "cloudAccount",
            format!("no cloud account `{}` exists", c.cloud_account),
        ),
        _ => {}
    }
    if let Some(p) = &c.proxy {
        validate_proxy(&mut r, "proxy", p);
    }
    validate_placement(&mut r, c);
    validate_pools(&mut r, c, cat);
    r.into_violations()
}

fn validate_placement(r: &mut Report, c: &Cluster) {
    match &c.cloud {
        CloudPlacement::Aws(a) => aws::validate_placement(r, a),
        CloudPlacement::Azure(a) => azure::validate_placement(r, a),
        CloudPlacement::Gcp(g) => gcp::validate_placement(r, g),
        CloudPlacement::Vsphere(v) => vsphere::validate_placement(r, v),
    }
}

fn validate_pools(r: &mut Report, c: &Cluster, cat: &Catalog) {
    if c.node_pools.is_empty() {
        r.add("nodePools", "a cluster needs a control-plane pool");
        return;
    }
    let cps = c.node_pools.iter().filter(|p| p.is_control_plane()).count();
    r.check(
        cps == 1,
        "nodePools",
        format!("a cluster has exactly one control-plane pool, found {cps}"),
    );
    let workers = c
        .node_pools
        .iter()
        .filter(|p| !p.is_control_plane())
        .count();
    if workers == 0 {
        if let Some(cp) = c.control_plane() {
            r.check(
                cp.allow_worker_capability,
                "nodePools",
                "a cluster without worker pools must allow worker capability on the control-plane pool",
            );
        }
    }
    let mut names = BTreeSet::new();
    for (i, p) in c.node_pools.iter().enumerate() {
        let base = index("nodePools", i);
        if let Err(rule) = dns1123_label(&p.name) {
            r.add(field(&base, "name"), rule);
        } else if !names.insert(p.name.as_str()) {
            r.add(
                field(&base, "name"),
                format!(
                    "pool name `{}` is used twice: pool names must be unique",
                    p.name
                ),
            );
        }
        match p.role {
            PoolRole::ControlPlane => r.check(
                CONTROL_PLANE_SIZES.contains(&p.size),
                field(&base, "size"),
                format!("control-plane pool size must be 1, 3 or 5, got {}", p.size),
            ),
            PoolRole::Worker => {
                r.check(
                    p.size <= MAX_POOL_SIZE,
                    field(&base, "size"),
                    format!(
                        "worker pool size must be at most {MAX_POOL_SIZE}, got {}",
                        p.size
                    ),
                );
                r.check(
                    !p.allow_worker_capability,
                    field(&base, "allowWorkerCapability"),
                    "applies to the control-plane pool only",
                );
            }
        }
        validate_pool_shape(r, c, p, &base, cat);
    }
}

fn not_for(r: &mut Report, base: &str, name: &str, set: bool, cloud: CloudType) {
    if set {
        r.add(
            field(base, name),
            format!("does not apply to {cloud} pools"),
        );
    }
}

fn validate_pool_shape(r: &mut Report, c: &Cluster, p: &NodePool, base: &str, cat: &Catalog) {
    let cloud = c.cloud_type();
    let zones_path = field(base, "availabilityZones");
    let mut seen = BTreeSet::new();
    for (i, z) in p.availability_zones.iter().enumerate() {
        r.check(
            seen.insert(z.as_str()),
            index(&zones_path, i),
            format!("zone `{z}` is listed twice"),
        );
    }
    if cloud != CloudType::Vsphere {
        match &p.instance_type {
            None => r.add(
                field(base, "instanceType"),
                format!("is required for {cloud} pools"),
            ),
            Some(t) => {
                if let Some(rule) = instance_type_rule(cloud, t) {
                    r.add(field(base, "instanceType"), rule);
                }
            }
        }
        not_for(r, base, "cpu", p.cpu.is_some(), cloud);
        not_for(r, base, "memoryGb", p.memory_gb.is_some(), cloud);
        not_for(r, base, "placements", !p.placements.is_empty(), cloud);
    }
    match &c.cloud {
        CloudPlacement::Aws(a) => aws::validate_pool(r, a, p, base, &zones_path),
        CloudPlacement::Azure(_) => azure::validate_pool(r, p, base, &zones_path),
        CloudPlacement::Gcp(g) => gcp::validate_pool(r, g, p, base, &zones_path),
        CloudPlacement::Vsphere(v) => vsphere::validate_pool(r, c, v, p, base, cat),
    }
}

fn disk_size(r: &mut Report, base: &str, p: &NodePool, min: u32, max: u32) {
    if let Some(n) = p.disk_size_gb {
        r.check(
            (min..=max).contains(&n),
            field(base, "diskSizeGb"),
            format!("must be between {min} and {max} GB, got {n}"),
        );
    }
}

/// The rule an instance type breaks on `cloud`, if any (vSphere pools have none).
fn instance_type_rule(cloud: CloudType, t: &str) -> Option<String> {
    match cloud {
        CloudType::Aws => aws::instance_type_rule(t),
        CloudType::Azure => azure::instance_type_rule(t),
        _ => gcp::instance_type_rule(t),
    }
}

/// Transition rules for updating an existing cluster from `old` to `new`.
#[must_use]
pub fn validate_cluster_update(old: &Cluster, new: &Cluster) -> Vec<Violation> {
    let mut r = Report::default();
    let immutable = "cannot change after creation";
    r.check(old.name == new.name, "name", immutable);
    r.check(
        old.cloud_account == new.cloud_account,
        "cloudAccount",
        immutable,
    );
    r.check(
        old.profile.name == new.profile.name,
        "profile.name",
        "cannot change after creation (apply profile updates instead)",
    );
    match (&old.cloud, &new.cloud) {
        (CloudPlacement::Aws(a), CloudPlacement::Aws(b)) => {
            aws::validate_update(&mut r, a, b, immutable)
        }
        (CloudPlacement::Azure(a), CloudPlacement::Azure(b)) => {
            azure::validate_update(&mut r, a, b, immutable)
        }
        (CloudPlacement::Gcp(a), CloudPlacement::Gcp(b)) => {
            gcp::validate_update(&mut r, a, b, immutable)
        }
        (CloudPlacement::Vsphere(a), CloudPlacement::Vsphere(b)) => {
            vsphere::validate_update(&mut r, a, b, immutable)
        }
        _ => r.add(
            "cloud",
            format!(
                "the cloud cannot change after creation ({} → {})",
                old.cloud_type(),
                new.cloud_type()
            ),
        ),
    }
    if let (Some(a), Some((i, b))) = (
        old.control_plane(),
        new.node_pools
            .iter()
            .enumerate()
            .find(|(_, p)| p.is_control_plane()),
    ) {
        let base = index("nodePools", i);
        r.check(
            a.name == b.name,
            field(&base, "name"),
            "the control-plane pool cannot be renamed or replaced",
        );
        let vip_pool =
            |p: &crate::model::NodePool| p.placements.first().and_then(|d| d.ip_pool.clone());
        if vip_pool(a).is_some() && vip_pool(a) != vip_pool(b) {
            r.check(
                false,
                field(&index(&field(&base, "placements"), 0), "ipPool"),
                "the control-plane IP pool holds the cluster's API VIP: it cannot change after creation",
            );
        }
        if a.size != b.size {
            let ok = (a.size == 1 && b.size == 3) || (a.size == 3 && b.size == 5);
            r.check(
                ok,
                field(&base, "size"),
                format!(
                    "the control-plane pool can only be scaled 1 → 3 or 3 → 5 (never down), not {} → {}",
                    a.size, b.size
                ),
            );
        }
    }
    for (i, p) in new.node_pools.iter().enumerate() {
        if let Some(o) = old.pool(&p.name) {
            r.check(
                o.role == p.role,
                field(&index("nodePools", i), "role"),
                format!(
                    "pool `{}` cannot change role ({} → {})",
                    p.name,
                    o.role.as_str(),
                    p.role.as_str()
                ),
            );
        }
    }
    r.into_violations()
}

//! vSphere placement rules: datacenter, folder, SSH keys, NTP servers; pools sized in CPUs,
//! memory and disk (no instance types or zones), placement domains and their IP pools.

use super::super::rules::{is_host, is_ssh_public_key};
use super::super::{field, index, Catalog, Report};
use super::{disk_size, not_for};
use crate::model::{CloudType, Cluster, IpAllocation, NodePool, VspherePlacement};

/// `cloud.vsphere`: the cluster's placement.
pub(super) fn validate_placement(r: &mut Report, v: &VspherePlacement) {
    r.check(
        !v.datacenter.trim().is_empty(),
        "cloud.vsphere.datacenter",
        "is required",
    );
    r.check(
        !v.folder.trim().is_empty(),
        "cloud.vsphere.folder",
        "is required",
    );
    for (i, k) in v.ssh_keys.iter().enumerate() {
        r.check(
            is_ssh_public_key(k),
            index("cloud.vsphere.sshKeys", i),
            "must be an OpenSSH public key (e.g. ssh-ed25519 AAAA... user@host)",
        );
    }
    for (i, n) in v.ntp_servers.iter().enumerate() {
        r.check(
            is_host(n),
            index("cloud.vsphere.ntpServers", i),
            format!("`{n}` is not a host name or IP address"),
        );
    }
}

/// A pool's vSphere-specific shape: CPUs, memory, disk, placement domains and IP pools.
pub(super) fn validate_pool(
    r: &mut Report,
    c: &Cluster,
    v: &VspherePlacement,
    p: &NodePool,
    base: &str,
    cat: &Catalog,
) {
    let cloud = CloudType::Vsphere;
    not_for(r, base, "instanceType", p.instance_type.is_some(), cloud);
    not_for(r, base, "diskType", p.disk_type.is_some(), cloud);
    not_for(
        r,
        base,
        "availabilityZones",
        !p.availability_zones.is_empty(),
        cloud,
    );
    match p.cpu {
        None => r.add(field(base, "cpu"), "is required for vSphere pools"),
        Some(n) => r.check(
            (1..=768).contains(&n),
            field(base, "cpu"),
            format!("must be between 1 and 768 CPUs, got {n}"),
        ),
    }
    match p.memory_gb {
        None => r.add(field(base, "memoryGb"), "is required for vSphere pools"),
        Some(n) => r.check(
            (1..=24576).contains(&n),
            field(base, "memoryGb"),
            format!("must be between 1 and 24576 GB, got {n}"),
        ),
    }
    match p.disk_size_gb {
        None => r.add(field(base, "diskSizeGb"), "is required for vSphere pools"),
        Some(_) => disk_size(r, base, p, 10, 62 * 1024),
    }
    let pl = field(base, "placements");
    if p.placements.is_empty() {
        r.add(&pl, "a vSphere pool needs at least one placement domain");
    }
    if p.is_control_plane() && p.placements.len() > 1 {
        r.add(
            &pl,
            format!(
                "only one placement domain is supported for the control-plane pool, got {}",
                p.placements.len()
            ),
        );
    }
    for (i, d) in p.placements.iter().enumerate() {
        let db = index(&pl, i);
        for (name, val) in [
            ("computeCluster", &d.compute_cluster),
            ("datastore", &d.datastore),
            ("network", &d.network),
        ] {
            r.check(!val.trim().is_empty(), field(&db, name), "is required");
        }
        match (v.ip_allocation, &d.ip_pool) {
            (IpAllocation::Static, None) => r.add(
                field(&db, "ipPool"),
                "is required with static IP allocation",
            ),
            (IpAllocation::Dhcp, Some(_)) => r.add(
                field(&db, "ipPool"),
                "is only used with static IP allocation (the cluster uses DHCP)",
            ),
            (IpAllocation::Static, Some(name)) => {
                check_ip_pool_ref(r, &field(&db, "ipPool"), name, c, cat)
            }
            _ => {}
        }
    }
}

/// What cannot change on vSphere after creation: datacenter, folder, IP allocation mode.
pub(super) fn validate_update(
    r: &mut Report,
    a: &VspherePlacement,
    b: &VspherePlacement,
    immutable: &str,
) {
    r.check(
        a.datacenter == b.datacenter,
        "cloud.vsphere.datacenter",
        immutable,
    );
    r.check(a.folder == b.folder, "cloud.vsphere.folder", immutable);
    r.check(
        a.ip_allocation == b.ip_allocation,
        "cloud.vsphere.ipAllocation",
        immutable,
    );
}

fn check_ip_pool_ref(r: &mut Report, path: &str, name: &str, c: &Cluster, cat: &Catalog) {
    match cat.ip_pools.get(name) {
        None if cat.strict => r.add(path, format!("no IP pool `{name}` exists")),
        None => {}
        Some(pool) => {
            let gw = cat
                .accounts
                .get(&c.cloud_account)
                .and_then(|a| match &a.credentials {
                    crate::model::Credentials::Vsphere(v) => Some(v.gateway.as_str()),
                    _ => None,
                });
            if let Some(gw) = gw {
                r.check(
                    pool.gateway_name == gw,
                    path,
                    format!(
                        "IP pool `{name}` is linked to gateway `{}`, the cluster's account uses gateway `{gw}`",
                        pool.gateway_name
                    ),
                );
            }
        }
    }
}

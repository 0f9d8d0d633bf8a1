//! Cluster rules: pools, placement per cloud, references, and update transitions.

use std::collections::BTreeSet;

use super::rules::{
    dns1123_label, is_aws_id, is_aws_region, is_azure_region, is_gcp_region, is_host, is_http_url,
    is_ssh_public_key, is_uuid,
};
use super::{field, index, key, Catalog, Report, Violation};
use crate::model::pack::parse_values;
use crate::model::{
    CloudPlacement, CloudType, Cluster, IpAllocation, NodePool, PoolRole, ProxySettings,
};

/// Control-plane pool sizes the doc allows.
pub const CONTROL_PLANE_SIZES: [u32; 3] = [1, 3, 5];
/// Largest worker pool.
pub const MAX_POOL_SIZE: u32 = 1000;
/// Tag key prefixes reserved for ownership marks.
pub const RESERVED_TAG_PREFIXES: [&str; 3] = ["spectro.io/", "aws:", "kubernetes.io/cluster/"];

const AZURE_DISK_TYPES: [&str; 6] = [
    "Standard_LRS",
    "StandardSSD_LRS",
    "Premium_LRS",
    "UltraSSD_LRS",
    "Premium_ZRS",
    "StandardSSD_ZRS",
];
const GCP_DISK_TYPES: [&str; 4] = ["pd-standard", "pd-balanced", "pd-ssd", "pd-extreme"];
const AWS_VOLUME_TYPES: [&str; 7] = ["gp2", "gp3", "io1", "io2", "st1", "sc1", "standard"];

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
        CloudPlacement::Aws(a) => {
            r.check(
                is_aws_region(&a.region),
                "cloud.aws.region",
                format!("`{}` is not an AWS region (e.g. us-east-1)", a.region),
            );
            if let Some(k) = &a.ssh_key_name {
                r.check(
                    !k.trim().is_empty() && k.len() <= 255,
                    "cloud.aws.sshKeyName",
                    "must name an EC2 key pair (1 to 255 characters)",
                );
            }
            for (i, n) in a.bastion_allowed_cidrs.iter().enumerate() {
                r.check(
                    n.trunc() == *n,
                    index("cloud.aws.bastionAllowedCidrs", i),
                    format!("`{n}` has host bits set: write the network, {}", n.trunc()),
                );
            }
            if let Some(s) = &a.static_placement {
                let base = "cloud.aws.staticPlacement";
                r.check(
                    is_aws_id(&s.vpc_id, "vpc"),
                    field(base, "vpcId"),
                    format!("`{}` is not a VPC id (vpc-...)", s.vpc_id),
                );
                r.check(
                    !s.subnets.is_empty(),
                    field(base, "subnets"),
                    "static placement needs at least one zone's subnets",
                );
                let mut zones = BTreeSet::new();
                for (i, z) in s.subnets.iter().enumerate() {
                    let zb = index(&field(base, "subnets"), i);
                    r.check(
                        aws_zone_in_region(&z.zone, &a.region),
                        field(&zb, "zone"),
                        format!("`{}` is not a zone of region {}", z.zone, a.region),
                    );
                    r.check(
                        zones.insert(z.zone.as_str()),
                        field(&zb, "zone"),
                        format!("zone `{}` is listed twice", z.zone),
                    );
                    r.check(
                        is_aws_id(&z.private_subnet_id, "subnet"),
                        field(&zb, "privateSubnetId"),
                        format!("`{}` is not a subnet id (subnet-...)", z.private_subnet_id),
                    );
                    if let Some(p) = &z.public_subnet_id {
                        r.check(
                            is_aws_id(p, "subnet"),
                            field(&zb, "publicSubnetId"),
                            format!("`{p}` is not a subnet id (subnet-...)"),
                        );
                    }
                }
            }
        }
        CloudPlacement::Azure(a) => {
            r.check(
                is_uuid(&a.subscription_id),
                "cloud.azure.subscriptionId",
                "must be a subscription id (a UUID)",
            );
            r.check(
                is_azure_region(&a.region),
                "cloud.azure.region",
                format!("`{}` is not an Azure region name (e.g. westus2)", a.region),
            );
            r.check(
                is_azure_resource_group(&a.resource_group),
                "cloud.azure.resourceGroup",
                "must be 1 to 90 letters, digits, '-', '_', '.', '(' or ')', not ending in '.'",
            );
            r.check(
                is_ssh_public_key(&a.ssh_key),
                "cloud.azure.sshKey",
                "must be an OpenSSH public key (e.g. ssh-rsa AAAA... user@host)",
            );
            if let Some(v) = &a.vnet {
                for (name, val) in [
                    ("name", &v.name),
                    ("controlPlaneSubnet", &v.control_plane_subnet),
                    ("workerSubnet", &v.worker_subnet),
                ] {
                    r.check(
                        !val.trim().is_empty(),
                        field("cloud.azure.vnet", name),
                        "is required",
                    );
                }
                r.check(
                    v.control_plane_subnet != v.worker_subnet,
                    "cloud.azure.vnet.workerSubnet",
                    "control-plane and worker nodes go in separate subnets (each with its own security group)",
                );
            }
        }
        CloudPlacement::Gcp(g) => {
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
        CloudPlacement::Vsphere(v) => {
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
            Some(t) if !is_instance_type(cloud, t) => r.add(
                field(base, "instanceType"),
                match cloud {
                    CloudType::Aws => {
                        format!("`{t}` is not an EC2 instance type (FAMILY.SIZE, e.g. m5.large)")
                    }
                    CloudType::Azure => {
                        format!("`{t}` is not an Azure VM size (e.g. Standard_D2s_v3)")
                    }
                    _ => format!("`{t}` is not a machine type (e.g. n2-standard-4)"),
                },
            ),
            Some(_) => {}
        }
        not_for(r, base, "cpu", p.cpu.is_some(), cloud);
        not_for(r, base, "memoryGb", p.memory_gb.is_some(), cloud);
        not_for(r, base, "placements", !p.placements.is_empty(), cloud);
    }
    match cloud {
        CloudType::Aws => {
            let CloudPlacement::Aws(a) = &c.cloud else {
                return;
            };
            r.check(
                !p.availability_zones.is_empty(),
                &zones_path,
                "choose one or more availability zones",
            );
            for (i, z) in p.availability_zones.iter().enumerate() {
                r.check(
                    aws_zone_in_region(z, &a.region),
                    index(&zones_path, i),
                    format!("`{z}` is not a zone of region {}", a.region),
                );
                if let Some(s) = &a.static_placement {
                    r.check(
                        s.subnets.iter().any(|x| &x.zone == z),
                        index(&zones_path, i),
                        format!("static placement has no subnets for zone `{z}`"),
                    );
                }
            }
            if let Some(t) = &p.disk_type {
                r.check(
                    AWS_VOLUME_TYPES.contains(&t.as_str()),
                    field(base, "diskType"),
                    format!("must be one of {}", AWS_VOLUME_TYPES.join(", ")),
                );
            }
            disk_size(r, base, p, 8, 16384);
        }
        CloudType::Azure => {
            if p.is_control_plane() {
                r.check(
                    p.availability_zones.is_empty(),
                    &zones_path,
                    "availability zones are not supported for the control-plane pool on Azure (only for worker pools)",
                );
            } else {
                for (i, z) in p.availability_zones.iter().enumerate() {
                    r.check(
                        matches!(z.as_str(), "1" | "2" | "3"),
                        index(&zones_path, i),
                        format!("Azure zones are \"1\", \"2\" or \"3\", got `{z}`"),
                    );
                }
            }
            if let Some(t) = &p.disk_type {
                r.check(
                    AZURE_DISK_TYPES.contains(&t.as_str()),
                    field(base, "diskType"),
                    format!(
                        "managed disk type must be one of {}",
                        AZURE_DISK_TYPES.join(", ")
                    ),
                );
            }
            disk_size(r, base, p, 30, 32767);
        }
        CloudType::Gcp => {
            let CloudPlacement::Gcp(g) = &c.cloud else {
                return;
            };
            r.check(
                !p.availability_zones.is_empty(),
                &zones_path,
                "choose one or more availability zones",
            );
            for (i, z) in p.availability_zones.iter().enumerate() {
                let ok = z
                    .strip_prefix(&g.region)
                    .and_then(|s| s.strip_prefix('-'))
                    .is_some_and(|s| s.len() == 1 && s.bytes().all(|b| b.is_ascii_lowercase()));
                r.check(
                    ok,
                    index(&zones_path, i),
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
        CloudType::Vsphere => {
            let CloudPlacement::Vsphere(v) = &c.cloud else {
                return;
            };
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
    }
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

fn disk_size(r: &mut Report, base: &str, p: &NodePool, min: u32, max: u32) {
    if let Some(n) = p.disk_size_gb {
        r.check(
            (min..=max).contains(&n),
            field(base, "diskSizeGb"),
            format!("must be between {min} and {max} GB, got {n}"),
        );
    }
}

fn aws_zone_in_region(zone: &str, region: &str) -> bool {
    zone.strip_prefix(region).is_some_and(|s| {
        !s.is_empty()
            && s.len() <= 2
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

fn is_azure_resource_group(s: &str) -> bool {
    (1..=90).contains(&s.len())
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'))
        && !s.ends_with('.')
}

fn is_gcp_project(s: &str) -> bool {
    (6..=30).contains(&s.len())
        && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.ends_with('-')
}

fn is_instance_type(cloud: CloudType, t: &str) -> bool {
    match cloud {
        CloudType::Aws => t.split_once('.').is_some_and(|(f, s)| {
            !f.is_empty()
                && !s.is_empty()
                && f.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        }),
        CloudType::Azure => {
            (t.starts_with("Standard_") || t.starts_with("Basic_"))
                && t.len() > 9
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        }
        _ => {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        }
    }
}

/// Transition rules for updating an existing cluster from `old` to `new`.
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
            r.check(a.region == b.region, "cloud.aws.region", immutable);
            r.check(
                a.static_placement.as_ref().map(|s| &s.vpc_id)
                    == b.static_placement.as_ref().map(|s| &s.vpc_id),
                "cloud.aws.staticPlacement",
                "the VPC (or dynamic placement) cannot change after creation",
            );
        }
        (CloudPlacement::Azure(a), CloudPlacement::Azure(b)) => {
            r.check(
                a.subscription_id == b.subscription_id,
                "cloud.azure.subscriptionId",
                immutable,
            );
            r.check(a.region == b.region, "cloud.azure.region", immutable);
            r.check(
                a.resource_group == b.resource_group,
                "cloud.azure.resourceGroup",
                immutable,
            );
            r.check(a.vnet == b.vnet, "cloud.azure.vnet", immutable);
        }
        (CloudPlacement::Gcp(a), CloudPlacement::Gcp(b)) => {
            r.check(a.project == b.project, "cloud.gcp.project", immutable);
            r.check(a.region == b.region, "cloud.gcp.region", immutable);
            r.check(a.network == b.network, "cloud.gcp.network", immutable);
        }
        (CloudPlacement::Vsphere(a), CloudPlacement::Vsphere(b)) => {
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

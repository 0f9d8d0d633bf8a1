//! Azure placement rules: subscription, region, resource group, SSH key, an existing VNet's
//! subnets, zones of worker pools, managed disk types and sizes.

use super::super::rules::{is_azure_region, is_ssh_public_key, is_uuid};
use super::super::{field, index, Report};
use super::disk_size;
use crate::model::{AzurePlacement, NodePool};

const AZURE_DISK_TYPES: [&str; 6] = [
    "Standard_LRS",
    "StandardSSD_LRS",
    "Premium_LRS",
    "UltraSSD_LRS",
    "Premium_ZRS",
    "StandardSSD_ZRS",
];

/// `cloud.azure`: the cluster's placement.
pub(super) fn validate_placement(r: &mut Report, a: &AzurePlacement) {
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

/// The rule an Azure VM size `t` breaks, if any.
pub(super) fn instance_type_rule(t: &str) -> Option<String> {
    let ok = (t.starts_with("Standard_") || t.starts_with("Basic_"))
        && t.len() > 9
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    (!ok).then(|| format!("`{t}` is not an Azure VM size (e.g. Standard_D2s_v3)"))
}

/// A pool's Azure-specific shape: zones (workers only), managed disk.
pub(super) fn validate_pool(r: &mut Report, p: &NodePool, base: &str, zones_path: &str) {
    if p.is_control_plane() {
        r.check(
            p.availability_zones.is_empty(),
            zones_path,
            "availability zones are not supported for the control-plane pool on Azure (only for worker pools)",
        );
    } else {
        for (i, z) in p.availability_zones.iter().enumerate() {
            r.check(
                matches!(z.as_str(), "1" | "2" | "3"),
                index(zones_path, i),
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

/// What cannot change on Azure after creation: subscription, region, resource group, VNet.
pub(super) fn validate_update(
    r: &mut Report,
    a: &AzurePlacement,
    b: &AzurePlacement,
    immutable: &str,
) {
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

fn is_azure_resource_group(s: &str) -> bool {
    (1..=90).contains(&s.len())
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'))
        && !s.ends_with('.')
}

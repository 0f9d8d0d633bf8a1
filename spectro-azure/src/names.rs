//! Deterministic resource names and Azure tag names.
//!
//! Every resource of a cluster is named from the cluster id (`spectro-<12 hex>-...`), so a
//! PUT repeated after a crash or a lost answer addresses the resource the first one made
//! instead of making a second: ARM's PUT is create-or-update by name. VMs are named after the
//! machine (`<prefix>-<machine>`), their NIC and OS disk after the VM.
//!
//! Azure tag names may not contain `<>%&\?/`, so spectro's tag keys are written with `_` for
//! each of those (`spectro.io/cluster-id` → `spectro.io_cluster-id`), user tags too.

use spectro_core::model::{AzurePlacement, CloudPlacement};
use spectro_core::provider::{ClusterContext, ClusterId};

use crate::error::AzureError;

/// The Azure tag name for a tag key.
#[must_use]
pub fn tag_key(key: &str) -> String {
    key.chars()
        .map(|c| {
            if matches!(c, '<' | '>' | '%' | '&' | '\\' | '?' | '/') {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// The longest VM name Azure accepts (Linux).
pub const VM_NAME_MAX: usize = 64;

/// Tag key carrying the machine's name on VMs.
pub const TAG_MACHINE: &str = "spectro.io/machine";

/// The Azure placement of a cluster.
pub fn placement(ctx: &ClusterContext) -> Result<&AzurePlacement, AzureError> {
    match &ctx.spec.cloud {
        CloudPlacement::Azure(a) => Ok(a),
        _ => Err(AzureError::invalid("cloud", "is not an Azure placement")),
    }
}

/// The name prefix of a cluster's resources: `spectro-<12 hex of the cluster id>`.
#[must_use]
pub fn prefix_of(id: &ClusterId) -> String {
    let hex: String = id
        .to_string()
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(12)
        .collect();
    format!("spectro-{hex}")
}

/// The names of one cluster's resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// `spectro-<12 hex of the cluster id>`.
    pub prefix: String,
    /// The cluster's resource group.
    pub resource_group: String,
    /// The virtual network's resource group.
    pub vnet_group: String,
    /// The virtual network.
    pub vnet: String,
    /// Control-plane subnet.
    pub cp_subnet: String,
    /// Worker subnet.
    pub node_subnet: String,
    /// True when the network is the user's (static placement).
    pub static_network: bool,
}

impl Names {
    /// The names of `ctx`'s cluster.
    pub fn of(ctx: &ClusterContext) -> Result<Names, AzureError> {
        let a = placement(ctx)?;
        let prefix = prefix_of(&ctx.cluster_id);
        Ok(match &a.vnet {
            Some(v) => Names {
                resource_group: a.resource_group.clone(),
                vnet_group: v
                    .resource_group
                    .clone()
                    .unwrap_or_else(|| a.resource_group.clone()),
                vnet: v.name.clone(),
                cp_subnet: v.control_plane_subnet.clone(),
                node_subnet: v.worker_subnet.clone(),
                static_network: true,
                prefix,
            },
            None => Names {
                resource_group: a.resource_group.clone(),
                vnet_group: a.resource_group.clone(),
                vnet: format!("{prefix}-vnet"),
                cp_subnet: format!("{prefix}-cp-subnet"),
                node_subnet: format!("{prefix}-node-subnet"),
                static_network: false,
                prefix,
            },
        })
    }

    /// The API server's public IP.
    #[must_use]
    pub fn api_ip(&self) -> String {
        format!("{}-api-ip", self.prefix)
    }

    /// The NAT gateway's public IP.
    #[must_use]
    pub fn nat_ip(&self) -> String {
        format!("{}-nat-ip", self.prefix)
    }

    /// The NAT gateway.
    #[must_use]
    pub fn nat(&self) -> String {
        format!("{}-nat", self.prefix)
    }

    /// The control-plane security group.
    #[must_use]
    pub fn cp_nsg(&self) -> String {
        format!("{}-cp-nsg", self.prefix)
    }

    /// The workers' security group.
    #[must_use]
    pub fn node_nsg(&self) -> String {
        format!("{}-node-nsg", self.prefix)
    }

    /// The API server's load balancer.
    #[must_use]
    pub fn lb(&self) -> String {
        format!("{}-api-lb", self.prefix)
    }

    /// The VM of machine `machine`: `<prefix>-<machine>`, cut to Azure's 64 characters
    /// with a hash of the whole name when longer.
    #[must_use]
    pub fn vm(&self, machine: &str) -> String {
        let full = format!("{}-{machine}", self.prefix);
        if full.len() <= VM_NAME_MAX {
            return full;
        }
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in machine.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let hash = format!("{h:016x}");
        let keep = VM_NAME_MAX - self.prefix.len() - 2 - 12;
        let head: String = machine.chars().take(keep).collect();
        format!(
            "{}-{}-{}",
            self.prefix,
            head.trim_end_matches('-'),
            &hash[..12]
        )
    }

    /// The NIC of VM `vm`.
    #[must_use]
    pub fn nic(vm: &str) -> String {
        format!("{vm}-nic")
    }

    /// The OS disk of VM `vm`.
    #[must_use]
    pub fn os_disk(vm: &str) -> String {
        format!("{vm}-osdisk")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_keys_avoid_what_azure_refuses() {
        assert_eq!(tag_key("spectro.io/cluster-id"), "spectro.io_cluster-id");
        assert_eq!(tag_key("team"), "team");
        assert_eq!(tag_key("a<b>c%d&e\\f?g"), "a_b_c_d_e_f_g");
    }

    #[test]
    fn vm_names_fit_and_stay_distinct() {
        let n = Names {
            prefix: "spectro-0123456789ab".into(),
            resource_group: "rg".into(),
            vnet_group: "rg".into(),
            vnet: "v".into(),
            cp_subnet: "a".into(),
            node_subnet: "b".into(),
            static_network: false,
        };
        assert_eq!(n.vm("web-master-x1"), "spectro-0123456789ab-web-master-x1");
        let long = "a".repeat(63);
        let (a, b) = (n.vm(&format!("{long}-w-1")), n.vm(&format!("{long}-w-2")));
        assert!(a.len() <= VM_NAME_MAX && b.len() <= VM_NAME_MAX, "{a}");
        assert_ne!(a, b);
        assert_eq!(a, n.vm(&format!("{long}-w-1")));
    }
}

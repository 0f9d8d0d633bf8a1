//! Node pools: groups of identical machines with one role.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The role of a node pool.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum PoolRole {
    /// The master pool: runs the Kubernetes control plane (and etcd).
    ControlPlane,
    /// A worker pool.
    Worker,
}

impl PoolRole {
    /// The role as written in specs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            PoolRole::ControlPlane => "controlPlane",
            PoolRole::Worker => "worker",
        }
    }
}

/// A vSphere placement domain: where a pool's VMs go.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlacementDomain {
    /// Compute cluster under the datacenter.
    pub compute_cluster: String,
    /// Datastore for the VM disks.
    pub datastore: String,
    /// Network (port group) for the VMs.
    pub network: String,
    /// Resource pool (path under the compute cluster; empty for the cluster's root pool).
    #[serde(default)]
    pub resource_pool: String,
    /// IP pool for static IP allocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_pool: Option<String>,
}

/// A node pool of a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodePool {
    /// Pool name (DNS-1123 label, unique in the cluster).
    pub name: String,
    /// Control plane or worker.
    pub role: PoolRole,
    /// Number of nodes. Control plane: 1, 3 or 5.
    pub size: u32,
    /// Control-plane pool only: let workloads run on the control-plane nodes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_worker_capability: bool,
    /// AWS, Azure and GCP: the instance type (machine type / VM size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// Azure: managed disk type, e.g. `Premium_LRS`; GCP: disk type, e.g. `pd-ssd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_type: Option<String>,
    /// Root disk size in GB (Azure, GCP, AWS root volume; vSphere disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_size_gb: Option<u32>,
    /// vSphere: CPUs per VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// vSphere: memory per VM in GB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_gb: Option<u32>,
    /// AWS, Azure (workers only), GCP: availability zones nodes are spread over.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub availability_zones: Vec<String>,
    /// vSphere: placement domains nodes are spread over round-robin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placements: Vec<PlacementDomain>,
}

impl NodePool {
    /// True for the control-plane pool.
    #[must_use]
    pub fn is_control_plane(&self) -> bool {
        self.role == PoolRole::ControlPlane
    }

    /// The fault domains nodes are spread over: zones, or placement-domain indexes for
    /// vSphere, or one unnamed domain. Machines record the domain they were put in.
    #[must_use]
    pub fn fault_domains(&self) -> Vec<String> {
        if !self.availability_zones.is_empty() {
            self.availability_zones.clone()
        } else if !self.placements.is_empty() {
            (0..self.placements.len())
                .map(|i| format!("placement-{i}"))
                .collect()
        } else {
            vec![String::new()]
        }
    }

    /// The placement domain behind a fault-domain name from [`NodePool::fault_domains`].
    #[must_use]
    pub fn placement_for(&self, fault_domain: &str) -> Option<&PlacementDomain> {
        let idx: usize = fault_domain.strip_prefix("placement-")?.parse().ok()?;
        self.placements.get(idx)
    }
}

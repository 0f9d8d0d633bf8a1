//! Clusters: a profile reference, cloud placement and node pools.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::node_pool::NodePool;
use super::profile::ProfileRef;
use super::proxy::ProxySettings;
use super::CloudType;

/// A cluster definition (the desired state).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cluster {
    /// Cluster name (DNS-1123 label), unique.
    pub name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Tags; propagated to the cloud resources on AWS, Azure and GCP.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// The cluster profile the cluster is built from.
    pub profile: ProfileRef,
    /// Per-pack value overrides: pack name → YAML mapping merged over the pack's values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pack_values: BTreeMap<String, String>,
    /// Name of the cloud account to provision with.
    pub cloud_account: String,
    /// Cloud-specific placement.
    pub cloud: CloudPlacement,
    /// Proxy for the nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxySettings>,
    /// Node pools: exactly one control-plane pool and any worker pools.
    pub node_pools: Vec<NodePool>,
}

impl Cluster {
    /// The cloud the cluster runs on.
    #[must_use]
    pub fn cloud_type(&self) -> CloudType {
        self.cloud.cloud_type()
    }

    /// The control-plane pool, if there is one.
    #[must_use]
    pub fn control_plane(&self) -> Option<&NodePool> {
        self.node_pools.iter().find(|p| p.is_control_plane())
    }

    /// The pool named `name`.
    #[must_use]
    pub fn pool(&self, name: &str) -> Option<&NodePool> {
        self.node_pools.iter().find(|p| p.name == name)
    }
}

/// Where a cluster goes, per cloud.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum CloudPlacement {
    /// Amazon Web Services.
    Aws(AwsPlacement),
    /// Microsoft Azure.
    Azure(AzurePlacement),
    /// Google Cloud.
    Gcp(GcpPlacement),
    /// VMware vSphere through a private cloud gateway.
    Vsphere(VspherePlacement),
}

impl CloudPlacement {
    /// The cloud of this placement.
    #[must_use]
    pub fn cloud_type(&self) -> CloudType {
        match self {
            CloudPlacement::Aws(_) => CloudType::Aws,
            CloudPlacement::Azure(_) => CloudType::Azure,
            CloudPlacement::Gcp(_) => CloudType::Gcp,
            CloudPlacement::Vsphere(_) => CloudType::Vsphere,
        }
    }

    /// The region (datacenter for vSphere).
    #[must_use]
    pub fn region(&self) -> &str {
        match self {
            CloudPlacement::Aws(p) => &p.region,
            CloudPlacement::Azure(p) => &p.region,
            CloudPlacement::Gcp(p) => &p.region,
            CloudPlacement::Vsphere(p) => &p.datacenter,
        }
    }
}

/// AWS placement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsPlacement {
    /// Region, e.g. `us-east-1`.
    pub region: String,
    /// Name of an EC2 key pair that already exists in the region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key_name: Option<String>,
    /// Existing VPC and subnets to use instead of a new VPC (dynamic placement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_placement: Option<AwsStaticPlacement>,
    /// Networks allowed to reach the bastion over SSH (TCP 22), e.g. `203.0.113.0/24`.
    /// Empty (the default): the bastion accepts no SSH from anywhere; `0.0.0.0/0` opens it to
    /// the Internet, only when written here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub bastion_allowed_cidrs: Vec<ipnet::IpNet>,
}

/// An existing VPC with one private (and optionally one public) subnet per zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsStaticPlacement {
    /// VPC id, `vpc-...`.
    pub vpc_id: String,
    /// Subnets by availability zone.
    pub subnets: Vec<AwsZoneSubnets>,
}

/// The subnets of one availability zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsZoneSubnets {
    /// Availability zone, e.g. `us-east-1a`.
    pub zone: String,
    /// Private subnet id for the nodes.
    pub private_subnet_id: String,
    /// Public subnet id for the bastion and load balancer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_subnet_id: Option<String>,
}

/// Azure placement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzurePlacement {
    /// Subscription id (UUID).
    pub subscription_id: String,
    /// Region, e.g. `westus2`.
    pub region: String,
    /// Existing resource group.
    pub resource_group: String,
    /// Existing virtual network; absent = one is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vnet: Option<AzureVnet>,
    /// SSH public key for the nodes.
    pub ssh_key: String,
}

/// An existing Azure virtual network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureVnet {
    /// VNet name.
    pub name: String,
    /// Its resource group (default: the cluster's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_group: Option<String>,
    /// Subnet for control-plane nodes.
    pub control_plane_subnet: String,
    /// Subnet for worker nodes.
    pub worker_subnet: String,
}

/// GCP placement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcpPlacement {
    /// Project id.
    pub project: String,
    /// Region, e.g. `us-west1`.
    pub region: String,
    /// Existing VPC network; absent = one is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// How vSphere nodes get their addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum IpAllocation {
    /// DHCP; an HAProxy VM fronts the API server.
    #[default]
    Dhcp,
    /// Static IPs from IP pools; a VIP fronts the API server.
    Static,
}

/// vSphere placement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VspherePlacement {
    /// Datacenter.
    pub datacenter: String,
    /// VM folder.
    pub folder: String,
    /// SSH public keys for user `spectro`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_keys: Vec<String>,
    /// NTP servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ntp_servers: Vec<String>,
    /// DHCP or static IPs.
    #[serde(default)]
    pub ip_allocation: IpAllocation,
}

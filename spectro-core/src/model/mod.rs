//! The domain model: plain serde + schemars types, no I/O.

pub mod cloud_account;
pub mod cluster;
pub mod document;
pub mod gateway;
pub mod ip_pool;
pub mod node_pool;
pub mod pack;
pub mod profile;
pub mod proxy;

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use cloud_account::{
    AwsCredentials, AzureCredentials, CloudAccount, Credentials, GcpCredentials, VsphereCredentials,
};
pub use cluster::{
    AwsPlacement, AwsStaticPlacement, AwsZoneSubnets, AzurePlacement, AzureVnet, CloudPlacement,
    Cluster, GcpPlacement, IpAllocation, VspherePlacement,
};
pub use document::{parse_documents, Document, Format};
pub use gateway::{
    GatewayReplica, GatewayState, GatewayStatus, PairingCodeRecord, PairingRequest,
    PrivateCloudGateway,
};
pub use ip_pool::{IpPool, IpRange};
pub use node_pool::{NodePool, PlacementDomain, PoolRole};
pub use pack::{Pack, PackLayer};
pub use profile::{
    ClusterProfile, ConflictResolution, OverrideConflict, PackChange, ProfileCloud, ProfileRef,
};
pub use proxy::ProxySettings;

/// The clouds spectro provisions on.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum CloudType {
    /// Amazon Web Services.
    Aws,
    /// Microsoft Azure.
    Azure,
    /// Google Cloud.
    Gcp,
    /// VMware vSphere.
    Vsphere,
}

impl CloudType {
    /// Lower-case name as written in specs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            CloudType::Aws => "aws",
            CloudType::Azure => "azure",
            CloudType::Gcp => "gcp",
            CloudType::Vsphere => "vsphere",
        }
    }
}

impl fmt::Display for CloudType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

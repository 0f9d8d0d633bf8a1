//! Cloud accounts: the credentials clusters are provisioned with.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::CloudType;
use crate::secret::Secret;

/// A named cloud account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CloudAccount {
    /// Account name, referenced by clusters.
    pub name: String,
    /// The credentials, by cloud.
    pub credentials: Credentials,
}

impl CloudAccount {
    /// The cloud these credentials are for.
    #[must_use]
    pub fn cloud(&self) -> CloudType {
        self.credentials.cloud()
    }

    /// The private cloud gateway the account reaches its cloud through (vSphere).
    #[must_use]
    pub fn gateway(&self) -> Option<&str> {
        match &self.credentials {
            Credentials::Vsphere(v) => Some(&v.gateway),
            _ => None,
        }
    }
}

/// Credentials of one cloud.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Credentials {
    /// AWS access key.
    Aws(AwsCredentials),
    /// Azure service principal.
    Azure(AzureCredentials),
    /// GCP service account key.
    Gcp(GcpCredentials),
    /// vCenter user, reached through a private cloud gateway.
    Vsphere(VsphereCredentials),
}

impl Credentials {
    /// The cloud of these credentials.
    #[must_use]
    pub fn cloud(&self) -> CloudType {
        match self {
            Credentials::Aws(_) => CloudType::Aws,
            Credentials::Azure(_) => CloudType::Azure,
            Credentials::Gcp(_) => CloudType::Gcp,
            Credentials::Vsphere(_) => CloudType::Vsphere,
        }
    }
}

/// AWS access key pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsCredentials {
    /// Access key id (not secret).
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Secret,
}

/// Azure AAD application (service principal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureCredentials {
    /// Application (client) id, a UUID.
    pub client_id: String,
    /// Directory (tenant) id, a UUID.
    pub tenant_id: String,
    /// Client secret.
    pub client_secret: Secret,
    /// Default subscription id, a UUID (a cluster may name another).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<String>,
}

/// GCP service account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcpCredentials {
    /// The JSON key file of the service account.
    pub service_account_json: Secret,
}

/// vCenter credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VsphereCredentials {
    /// The private cloud gateway that reaches this vCenter.
    pub gateway: String,
    /// vCenter server IP or FQDN.
    pub vcenter_host: String,
    /// vCenter user name.
    pub username: String,
    /// vCenter password.
    pub password: Secret,
    /// Accept the vCenter's certificate without verification (labs and simulators).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

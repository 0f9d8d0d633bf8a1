//! Private cloud gateways: the bridge between the engine and a private datacenter.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::proxy::ProxySettings;

/// The lifecycle state of a gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum GatewayState {
    /// Registered, not configured yet (also the state after a reset).
    #[default]
    Pending,
    /// The gateway cluster is being provisioned.
    Provisioning,
    /// Ready to bootstrap tenant clusters.
    Running,
    /// Being upgraded: new cluster requests are queued.
    Upgrading,
    /// Being deleted.
    Deleting,
}

/// A private cloud gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrivateCloudGateway {
    /// Gateway name.
    pub name: String,
    /// Number of gateway nodes: 1 or 3 (resize 1 → 3 only).
    pub size: u32,
    /// Lifecycle state (reported by the engine).
    #[serde(default)]
    pub state: GatewayState,
    /// Proxy the gateway uses to reach the management plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxySettings>,
    /// IP pools linked to this gateway.
    #[serde(default)]
    pub ip_pools: Vec<String>,
}

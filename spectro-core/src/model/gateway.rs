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

impl GatewayState {
    /// The state's name, as the console shows it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            GatewayState::Pending => "Pending",
            GatewayState::Provisioning => "Provisioning",
            GatewayState::Running => "Running",
            GatewayState::Upgrading => "Upgrading",
            GatewayState::Deleting => "Deleting",
        }
    }
}

/// What the engine knows of a gateway beside its spec: lifecycle, pairing, connected
/// replicas, version. Kept by the engine (`Engine::gateway_status`); secrets (the pairing
/// code, the gateway's credential) are stored only as SHA-256 hashes, the code's sealed too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    /// Lifecycle state.
    pub state: GatewayState,
    /// The gateway's id: the subject of its events in the event stream.
    pub id: uuid::Uuid,
    /// The outstanding pairing code (state Pending), as a hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairing: Option<PairingCodeRecord>,
    /// The hash of the credential the paired agents authenticate with (none while Pending).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_hash: Option<String>,
    /// The vCenter the gateway reaches (given at pairing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcenter_host: Option<String>,
    /// The cloud account created at pairing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_account: Option<String>,
    /// Agent replicas that connected, with when they were last seen.
    #[serde(default)]
    pub replicas: Vec<GatewayReplica>,
    /// The agent version the engine ships, when an agent runs an older one (the upgrade
    /// notification): apply it with `Engine::upgrade_gateway`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_available: Option<String>,
    /// The version an upgrade in progress installs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrading_to: Option<String>,
    /// When a refusal that changed nothing (a used code, a wrong credential) was last
    /// recorded as an event: at most one such event a minute, whoever knocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refusal_event: Option<chrono::DateTime<chrono::Utc>>,
}

/// An outstanding one-time pairing code (only its hash is stored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PairingCodeRecord {
    /// SHA-256 of the code (hex; sealed at rest: a short code's hash could be searched).
    #[serde(serialize_with = "crate::secret::sensitive_str")]
    pub code_hash: String,
    /// When it stops being accepted.
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// Wrong codes still tolerated before this one is revoked.
    pub attempts_left: u32,
}

/// One agent replica of a gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayReplica {
    /// The replica's name (unique per gateway).
    pub id: String,
    /// The agent's version.
    pub version: String,
    /// When it connected.
    pub connected_at: chrono::DateTime<chrono::Utc>,
    /// When the engine last heard from it.
    pub last_seen: chrono::DateTime<chrono::Utc>,
    /// False once it disconnected (or was not heard from within the replica timeout).
    pub connected: bool,
}

impl GatewayStatus {
    /// Replicas connected now (seen within `ttl` of `now`).
    #[must_use]
    pub fn connected(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        ttl: std::time::Duration,
    ) -> Vec<&GatewayReplica> {
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        self.replicas
            .iter()
            .filter(|r| r.connected && now - r.last_seen <= ttl)
            .collect()
    }
}

/// What an agent presents to pair with a gateway: the one-time code, its replica name and
/// version, and the vCenter credentials the gateway's default cloud account is made of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PairingRequest {
    /// The pairing code the engine showed.
    pub code: crate::secret::Secret,
    /// The replica's name.
    pub replica: String,
    /// The agent's version.
    pub version: String,
    /// vCenter server (host or host:port).
    pub vcenter_host: String,
    /// vCenter user.
    pub username: String,
    /// vCenter password.
    pub password: crate::secret::Secret,
    /// Accept vCenter's certificate without verification (labs, simulators).
    #[serde(default)]
    pub insecure: bool,
}

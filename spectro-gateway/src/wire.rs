//! The protocol between a gateway agent and the engine's gateway endpoint.
//!
//! HTTPS (rustls) with HTTP/2 when both sides offer it through ALPN (HTTP/1.1 otherwise),
//! JSON bodies, every request from the agent (it dials out; the engine never connects to the
//! gateway's network):
//!
//! | request | body | answer |
//! | --- | --- | --- |
//! | `POST /v1/gateways/{gw}/pair` | [`PairingRequest`](spectro_core::model::PairingRequest) | 200 [`Paired`], 401 refused |
//! | `POST /v1/gateways/{gw}/heartbeat` | [`Heartbeat`] | 200 [`HeartbeatAnswer`] |
//! | `POST /v1/gateways/{gw}/calls/next` | [`Poll`] | 200 [`Assigned`], 204 nothing within the long-poll wait |
//! | `POST /v1/gateways/{gw}/calls/{id}/result` | [`CallResult`] | 200, 410 no such call (answered already) |
//! | `POST /v1/gateways/{gw}/disconnect` | [`Poll`] | 200 |
//!
//! Every request but `pair` carries `Authorization: Bearer <gateway credential>`. A call is
//! leased to the replica that took it for as long as that replica's heartbeats list it; a
//! replica not heard from within the lease (or a call it stopped listing) gives the call back
//! to the queue, and another replica runs it: every [`Call`] is one idempotent
//! [`CloudProvider`](spectro_core::CloudProvider) method carrying the engine's idempotency
//! tokens, so running it twice creates nothing twice. The first result wins.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spectro_core::model::CloudAccount;
use spectro_core::provider::{
    ClusterContext, ClusterId, DeleteStatus, ImageRef, ImageSpec, InfraStatus, Machine,
    MachineBatch, ProviderError,
};

/// One provider call, as the engine's remote provider sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "method")]
#[allow(clippy::large_enum_variant)]
pub enum Call {
    /// `validate_account`.
    ValidateAccount {
        /// The account.
        account: CloudAccount,
    },
    /// `precheck`.
    Precheck {
        /// The cluster.
        ctx: ClusterContext,
    },
    /// `ensure_image`.
    EnsureImage {
        /// The cluster.
        ctx: ClusterContext,
        /// The image wanted.
        spec: ImageSpec,
    },
    /// `ensure_infrastructure`.
    EnsureInfrastructure {
        /// The cluster.
        ctx: ClusterContext,
    },
    /// `list_machines`.
    ListMachines {
        /// The cluster.
        ctx: ClusterContext,
    },
    /// `list_fleet`.
    ListFleet {
        /// A cluster of the fleet.
        ctx: ClusterContext,
    },
    /// `create_machines`.
    CreateMachines {
        /// The cluster.
        ctx: ClusterContext,
        /// Its infrastructure.
        infra: InfraStatus,
        /// The batch (with its idempotency token).
        batch: MachineBatch,
    },
    /// `delete_machines`.
    DeleteMachines {
        /// The cluster.
        ctx: ClusterContext,
        /// The machines.
        machines: Vec<Machine>,
    },
    /// `delete_infrastructure`.
    DeleteInfrastructure {
        /// The cluster.
        ctx: ClusterContext,
    },
}

impl Call {
    /// The provider method's name.
    #[must_use]
    pub fn method(&self) -> &'static str {
        match self {
            Call::ValidateAccount { .. } => "validate_account",
            Call::Precheck { .. } => "precheck",
            Call::EnsureImage { .. } => "ensure_image",
            Call::EnsureInfrastructure { .. } => "ensure_infrastructure",
            Call::ListMachines { .. } => "list_machines",
            Call::ListFleet { .. } => "list_fleet",
            Call::CreateMachines { .. } => "create_machines",
            Call::DeleteMachines { .. } => "delete_machines",
            Call::DeleteInfrastructure { .. } => "delete_infrastructure",
        }
    }
}

/// What a call returned.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", content = "value")]
pub enum Returned {
    /// `validate_account`.
    Unit,
    /// `ensure_image`.
    Image(ImageRef),
    /// `ensure_infrastructure`.
    Infra(InfraStatus),
    /// `list_machines`, `create_machines`.
    Machines(Vec<Machine>),
    /// `list_fleet`.
    Fleet(HashMap<ClusterId, Vec<Machine>>),
    /// `delete_infrastructure`.
    Deleted(DeleteStatus),
    /// `precheck`.
    Precheck(spectro_core::precheck::Precheck),
}

/// A provider error on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireError {
    /// `Retryable`, `Throttled`, `QuotaExceeded`, `Unauthorized` or `Terminal`.
    pub kind: String,
    /// The message.
    pub message: String,
    /// Throttled: the delay asked for, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl From<&ProviderError> for WireError {
    fn from(e: &ProviderError) -> Self {
        WireError {
            kind: match e {
                ProviderError::Retryable { .. } => "Retryable",
                ProviderError::Throttled { .. } => "Throttled",
                ProviderError::QuotaExceeded { .. } => "QuotaExceeded",
                ProviderError::Unauthorized { .. } => "Unauthorized",
                ProviderError::Terminal { .. } => "Terminal",
                _ => "Retryable",
            }
            .to_string(),
            message: e.message().to_string(),
            retry_after_ms: e.retry_after().map(|d| d.as_millis() as u64),
        }
    }
}

impl From<WireError> for ProviderError {
    fn from(e: WireError) -> Self {
        let message = format!("through the gateway: {}", e.message);
        match e.kind.as_str() {
            "Throttled" => ProviderError::throttled(
                Duration::from_millis(e.retry_after_ms.unwrap_or(1000)),
                message,
            ),
            "QuotaExceeded" => ProviderError::quota_exceeded(message),
            "Unauthorized" => ProviderError::unauthorized(message),
            "Terminal" => ProviderError::terminal(message),
            _ => ProviderError::retryable(message),
        }
    }
}

/// A replica asking for work (or saying goodbye).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Poll {
    /// The replica's name.
    pub replica: String,
}

/// A call handed to a replica.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assigned {
    /// The call's id (answer with it).
    pub id: u64,
    /// The call.
    pub call: Call,
}

/// A replica's answer to a call.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallResult {
    /// The replica's name.
    pub replica: String,
    /// What the provider returned.
    pub result: Result<Returned, WireError>,
}

/// A replica's heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    /// The replica's name.
    pub replica: String,
    /// The agent's version.
    pub version: String,
    /// Calls it is running (their leases are renewed).
    #[serde(default)]
    pub in_flight: Vec<u64>,
}

/// What the engine tells a replica back.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatAnswer {
    /// The gateway's state.
    pub state: String,
    /// Something to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directive: Option<Directive>,
}

/// An instruction to a replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Directive {
    /// Finish the calls in flight, take no new one, and restart as `version` (the binary
    /// installed at the agent's path).
    Upgrade {
        /// The version to run.
        version: String,
    },
}

/// The answer to a successful pairing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Paired {
    /// The gateway.
    pub gateway: String,
    /// Its credential (keep it; every later request presents it).
    pub credential: spectro_core::secret::Secret,
}

/// An error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_errors_cross_the_wire_with_their_kind() {
        for e in [
            ProviderError::retryable("r"),
            ProviderError::throttled(Duration::from_secs(3), "t"),
            ProviderError::quota_exceeded("q"),
            ProviderError::unauthorized("u"),
            ProviderError::terminal("x"),
        ] {
            let w = WireError::from(&e);
            let text = serde_json::to_string(&w).unwrap();
            let back: ProviderError = serde_json::from_str::<WireError>(&text).unwrap().into();
            assert_eq!(back.reason(), e.reason());
            assert_eq!(back.retry_after(), e.retry_after());
            assert!(back.message().ends_with(e.message()));
        }
    }
}

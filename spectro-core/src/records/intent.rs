//! Intents: machine creates the engine recorded durably before making them.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::provider::BootstrapRole;

/// A machine create the engine is about to make (or made without recording the result yet).
/// Recorded durably before the cloud call; removed once the machine is observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Intent {
    /// Machine name.
    pub name: String,
    /// Idempotency token of the batch the machine belongs to.
    pub token: String,
    /// Pool.
    pub pool: String,
    /// Fault domain.
    pub zone: String,
    /// Shape hash.
    pub shape: String,
    /// How the machine joins.
    pub bootstrap: BootstrapRole,
    /// When the intent was recorded.
    pub created_at: DateTime<Utc>,
}

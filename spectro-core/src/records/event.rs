//! The event stream: every low-level step of the engine, persisted and subscribable.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::provider::ClusterId;

/// How serious an event is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Severity {
    /// Progress.
    Info,
    /// An intermittent error the engine retries (often clears by itself).
    Warning,
    /// A failure that needs attention.
    Error,
}

impl Severity {
    /// Lower-case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }

    /// Parses [`Severity::as_str`].
    #[must_use]
    pub fn parse(s: &str) -> Severity {
        match s {
            "warning" => Severity::Warning,
            "error" => Severity::Error,
            _ => Severity::Info,
        }
    }
}

/// An event before the store numbered it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewEvent {
    /// When it happened.
    pub time: DateTime<Utc>,
    /// Severity.
    pub severity: Severity,
    /// Short reason code, e.g. `MachinesCreated`.
    pub reason: String,
    /// Human message.
    pub message: String,
}

/// A persisted event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Position in the stream (strictly increasing): resume after it.
    pub seq: u64,
    /// The cluster it is about.
    pub cluster_id: ClusterId,
    /// When it happened.
    pub time: DateTime<Utc>,
    /// Severity.
    pub severity: Severity,
    /// Short reason code.
    pub reason: String,
    /// Human message.
    pub message: String,
}

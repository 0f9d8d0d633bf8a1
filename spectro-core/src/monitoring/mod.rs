//! Cluster health, usage monitoring and application services, as the reference doc's
//! sections of those names describe them, from what the in-cluster agent reports.
//!
//! The agent (crate `spectro-agent`) runs inside each workload cluster and dials out to the
//! engine: every interval it sends an [`AgentReport`] — a heartbeat with
//! the nodes' conditions, capacity, usage (from `metrics.k8s.io`) and pod requests, and every
//! Service of type LoadBalancer or NodePort. Everything here is pure: the engine
//! (`Engine::agent_report`) authenticates the report ([`credential`]), folds it into the
//! cluster's [`MonitorState`] ([`health::observe`]), judges health ([`health::evaluate`]),
//! appends a usage sample and rolls old samples up ([`usage`]), and lists the services with
//! the links a user opens ([`services`]).
//!
//! Health is judged by the doc's three factors: a heartbeat seen within
//! [`HealthPolicy::heartbeat_window`](health::HealthPolicy::heartbeat_window); no node
//! condition indicating a problem; CPU, memory and disk usage under their thresholds —
//! only a level held for [`HealthPolicy::sustain`](health::HealthPolicy::sustain) counts (a
//! spike is not unhealthy).

pub mod agent_pack;
pub mod credential;
pub mod health;
pub mod report;
pub mod services;
pub mod usage;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use self::health::{Health, HealthPolicy, HealthReason, HealthReasonKind, HealthStatus};
pub use self::report::{AgentReport, NodeReport, ReportBatch, ServiceReport};
pub use self::services::AppService;
pub use self::usage::{NodeScope, Usage, UsagePoint, UsageRetention, UsageSample};

/// What the engine keeps per monitored cluster (the store's `monitor` object, keyed by
/// cluster id): the latest report's nodes and services, the health as last judged, and
/// since when each metric has been over its threshold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitorState {
    /// When the engine last received a report (its own clock).
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// The agent's version, as it last reported.
    #[serde(default)]
    pub agent_version: Option<String>,
    /// The nodes as last reported (conditions, capacity, usage, requests).
    #[serde(default)]
    pub nodes: Vec<NodeReport>,
    /// The application services as last reported, with their links.
    #[serde(default)]
    pub services: Vec<AppService>,
    /// `node/metric` → since when it has been over its threshold, sample after sample.
    #[serde(default)]
    pub over_since: BTreeMap<String, DateTime<Utc>>,
    /// The health as last judged.
    #[serde(default)]
    pub health: Health,
    /// Time of the newest usage sample stored.
    #[serde(default)]
    pub last_sample: Option<DateTime<Utc>>,
    /// The agent process (`AgentReport::agent_id`) and number of the newest report taken:
    /// a re-sent report is recognised by them and skipped.
    #[serde(default)]
    pub last_report: Option<(String, u64)>,
    /// Requests of pods not scheduled yet, as last reported.
    #[serde(default)]
    pub unscheduled_requests: report::Resources,
    /// The cut of the last roll-up: raw samples before it are averages now (the next roll-up
    /// runs once the cut moves past it, once per bucket).
    #[serde(default)]
    pub rolled_up: Option<DateTime<Utc>>,
}

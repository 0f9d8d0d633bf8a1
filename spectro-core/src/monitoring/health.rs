//! Health as the reference doc defines it, judged purely from a cluster's
//! [`MonitorState`] and the time: [`observe`] folds a report in, [`evaluate`] judges.
//!
//! - **Heartbeat**: no report within [`HealthPolicy::heartbeat_window`] → unhealthy
//!   (reason `HeartbeatMissing`; what the agent last said is stale, so it is the only reason).
//! - **Node conditions**: `Ready` not `True`, or `MemoryPressure`, `DiskPressure`,
//!   `PIDPressure`, `NetworkUnavailable` `True` on any node → unhealthy, naming the node and
//!   the condition and since when.
//! - **Metrics**: a node's CPU, memory or disk usage (of its capacity) at or over its
//!   threshold in every sample for [`HealthPolicy::sustain`] → unhealthy, naming the node,
//!   the metric and since when. A spike shorter than that is not.
//!
//! ```
//! use chrono::{Duration, TimeZone, Utc};
//! use spectro_core::monitoring::health::{evaluate, observe, HealthPolicy, HealthStatus};
//! use spectro_core::monitoring::report::{AgentReport, NodeConditionReport, NodeReport, Resources};
//! use spectro_core::monitoring::MonitorState;
//!
//! let policy = HealthPolicy::default();
//! let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
//! let node = |cpu: u64| NodeReport {
//!     name: "w1".into(),
//!     conditions: vec![NodeConditionReport { kind: "Ready".into(), status: "True".into(), ..Default::default() }],
//!     capacity: Resources { cpu_millicores: 1000, memory_bytes: 1 << 30 },
//!     usage: Some(Resources { cpu_millicores: cpu, memory_bytes: 1 << 20 }),
//!     ..Default::default()
//! };
//! let mut state = MonitorState::default();
//! // CPU at 99% for two minutes: a spike, still healthy.
//! for s in 0..5 {
//!     let at = t0 + Duration::seconds(30 * s);
//!     observe(&policy, &mut state, &AgentReport { nodes: vec![node(990)], ..Default::default() }, at);
//! }
//! assert_eq!(evaluate(&policy, &state, t0 + Duration::minutes(2)).status, HealthStatus::Healthy);
//! // Held past the sustain period (5 minutes): unhealthy, naming node and metric.
//! for s in 5..12 {
//!     let at = t0 + Duration::seconds(30 * s);
//!     observe(&policy, &mut state, &AgentReport { nodes: vec![node(990)], ..Default::default() }, at);
//! }
//! let h = evaluate(&policy, &state, t0 + Duration::seconds(330));
//! assert_eq!(h.status, HealthStatus::Unhealthy);
//! assert!(h.message().contains("node w1: cpu"), "{}", h.message());
//! ```

use std::time::Duration;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::report::{AgentReport, NodeReport};
use super::MonitorState;

/// When a cluster counts as unhealthy.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthPolicy {
    /// No heartbeat for this long: unhealthy. Default 3 minutes (six missed heartbeats at
    /// the agent's default 30 s interval).
    pub heartbeat_window: Duration,
    /// CPU usage threshold, as a fraction of the node's capacity. Default 0.9.
    pub cpu: f64,
    /// Memory usage threshold, fraction of capacity. Default 0.9.
    pub memory: f64,
    /// Disk usage threshold, fraction of the root filesystem. Default 0.9.
    pub disk: f64,
    /// A metric counts once it stayed at or over its threshold this long. Default 5 minutes.
    pub sustain: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            heartbeat_window: Duration::from_secs(180),
            cpu: 0.9,
            memory: 0.9,
            disk: 0.9,
            sustain: Duration::from_secs(300),
        }
    }
}

impl HealthPolicy {
    /// Every rule it breaks (paths under `monitoring.health`).
    #[must_use]
    pub fn validate(&self) -> Vec<crate::validate::Violation> {
        use crate::validate::Violation;
        let mut v = Vec::new();
        for (name, t) in [
            ("cpu", self.cpu),
            ("memory", self.memory),
            ("disk", self.disk),
        ] {
            if !(t > 0.0 && t <= 1.0) {
                v.push(Violation::new(
                    format!("monitoring.health.{name}"),
                    format!("must be a fraction of capacity in (0, 1], got {t}"),
                ));
            }
        }
        if self.heartbeat_window.is_zero() {
            v.push(Violation::new(
                "monitoring.health.heartbeatWindow",
                "must be longer than 0",
            ));
        }
        v
    }
}

/// Overall health.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum HealthStatus {
    /// No heartbeat yet (the agent is not deployed or not connected yet).
    #[default]
    Unknown,
    /// Every factor is fine.
    Healthy,
    /// At least one reason.
    Unhealthy,
}

/// Which factor a reason comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum HealthReasonKind {
    /// No heartbeat within the window.
    HeartbeatMissing,
    /// A node condition indicating a problem.
    NodeCondition,
    /// A usage metric over its threshold for the sustain period.
    Metric,
}

/// Why a cluster is unhealthy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthReason {
    /// The factor.
    pub kind: HealthReasonKind,
    /// The node, for conditions and metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The condition (`DiskPressure`, `Ready`, ...) or metric (`cpu`, `memory`, `disk`).
    pub subject: String,
    /// Since when.
    pub since: Option<DateTime<Utc>>,
    /// Human detail.
    pub message: String,
}

/// A cluster's health: a status, its reasons, and when it last changed — the shape of a
/// condition of type `Healthy` (True / False / Unknown).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// The status.
    pub status: HealthStatus,
    /// Why unhealthy (empty otherwise), in a stable order.
    #[serde(default)]
    pub reasons: Vec<HealthReason>,
    /// When the status or its reasons last changed.
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    /// The last heartbeat.
    #[serde(default)]
    pub last_heartbeat: Option<DateTime<Utc>>,
}

impl Health {
    /// The condition status: `True` (healthy), `False` (unhealthy), `Unknown`.
    #[must_use]
    pub fn condition_status(&self) -> &'static str {
        match self.status {
            HealthStatus::Healthy => "True",
            HealthStatus::Unhealthy => "False",
            HealthStatus::Unknown => "Unknown",
        }
    }

    /// The condition reason: `Healthy`, `NoHeartbeat` before the first one, or the first
    /// reason's kind (`HeartbeatMissing`, `NodeCondition`, `Metric`).
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match (self.status, self.reasons.first().map(|r| r.kind)) {
            (HealthStatus::Healthy, _) => "Healthy",
            (HealthStatus::Unknown, _) => "NoHeartbeat",
            (_, Some(HealthReasonKind::HeartbeatMissing)) => "HeartbeatMissing",
            (_, Some(HealthReasonKind::NodeCondition)) => "NodeCondition",
            (_, _) => "Metric",
        }
    }

    /// Every reason's message, joined.
    #[must_use]
    pub fn message(&self) -> String {
        match self.status {
            HealthStatus::Healthy => "healthy".into(),
            HealthStatus::Unknown => "no heartbeat from the cluster's agent yet".into(),
            HealthStatus::Unhealthy => self
                .reasons
                .iter()
                .map(|r| r.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        }
    }

    /// Same status and the same reasons — factor, node and subject: a metric whose level
    /// moves while it stays over its threshold is no new transition.
    #[must_use]
    pub fn same_as(&self, other: &Health) -> bool {
        let key = |h: &Health| {
            h.reasons
                .iter()
                .map(|r| (r.kind, r.node.clone(), r.subject.clone()))
                .collect::<Vec<_>>()
        };
        self.status == other.status && key(self) == key(other)
    }
}

/// Conditions that indicate a problem when `True`.
pub const PROBLEM_CONDITIONS: [&str; 4] = [
    "MemoryPressure",
    "DiskPressure",
    "PIDPressure",
    "NetworkUnavailable",
];

/// The usage fractions of a node: `(metric, used / capacity)` for what it reported.
#[must_use]
pub fn node_levels(n: &NodeReport) -> Vec<(&'static str, f64)> {
    let mut out = Vec::new();
    let frac = |used: u64, cap: u64| (cap > 0).then(|| used as f64 / cap as f64);
    if let Some(u) = n.usage {
        if let Some(f) = frac(u.cpu_millicores, n.capacity.cpu_millicores) {
            out.push(("cpu", f));
        }
        if let Some(f) = frac(u.memory_bytes, n.capacity.memory_bytes) {
            out.push(("memory", f));
        }
    }
    if let Some(d) = n.disk {
        if let Some(f) = frac(d.used_bytes, d.capacity_bytes) {
            out.push(("disk", f));
        }
    }
    out
}

fn threshold(policy: &HealthPolicy, metric: &str) -> f64 {
    match metric {
        "cpu" => policy.cpu,
        "memory" => policy.memory,
        _ => policy.disk,
    }
}

/// Folds a report received at `at` (engine time) into the state: the heartbeat, the
/// nodes, and since when each metric is over its threshold (a sample under it, or a node
/// gone, resets it; a report without usage keeps what is known).
pub fn observe(
    policy: &HealthPolicy,
    state: &mut MonitorState,
    report: &AgentReport,
    at: DateTime<Utc>,
) {
    state.last_heartbeat = Some(state.last_heartbeat.map_or(at, |t| t.max(at)));
    state.agent_version = Some(report.agent_version.clone());
    let mut over = std::collections::BTreeMap::new();
    for n in &report.nodes {
        let levels = node_levels(n);
        for metric in ["cpu", "memory", "disk"] {
            let key = format!("{}/{metric}", n.name);
            match levels.iter().find(|(m, _)| *m == metric) {
                Some((_, f)) if *f >= threshold(policy, metric) => {
                    let since = state.over_since.get(&key).copied().unwrap_or(at);
                    over.insert(key, since);
                }
                Some(_) => {}
                None => {
                    if let Some(since) = state.over_since.get(&key) {
                        over.insert(key, *since);
                    }
                }
            }
        }
    }
    state.over_since = over;
    state.nodes = report.nodes.clone();
}

/// Judges health at `now`. `since` is carried over from `state.health` when nothing
/// changed, else `now`.
#[must_use]
pub fn evaluate(policy: &HealthPolicy, state: &MonitorState, now: DateTime<Utc>) -> Health {
    let Some(last) = state.last_heartbeat else {
        return Health {
            since: state.health.since,
            ..Health::default()
        };
    };
    let mut reasons = Vec::new();
    let window =
        chrono::Duration::from_std(policy.heartbeat_window).unwrap_or(chrono::Duration::MAX);
    if now - last > window {
        reasons.push(HealthReason {
            kind: HealthReasonKind::HeartbeatMissing,
            node: None,
            subject: "heartbeat".into(),
            since: Some(last),
            message: format!(
                "no heartbeat since {} (window {}s)",
                last.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                policy.heartbeat_window.as_secs()
            ),
        });
    } else {
        for n in &state.nodes {
            match n.condition("Ready") {
                Some(c) if c.status == "True" => {}
                c => reasons.push(HealthReason {
                    kind: HealthReasonKind::NodeCondition,
                    node: Some(n.name.clone()),
                    subject: "Ready".into(),
                    since: c.and_then(|c| c.since),
                    message: format!(
                        "node {}: Ready is {}{}",
                        n.name,
                        c.map_or("not reported", |c| c.status.as_str()),
                        c.filter(|c| !c.reason.is_empty())
                            .map(|c| format!(" ({})", c.reason))
                            .unwrap_or_default()
                    ),
                }),
            }
            for kind in PROBLEM_CONDITIONS {
                if let Some(c) = n.condition(kind).filter(|c| c.status == "True") {
                    reasons.push(HealthReason {
                        kind: HealthReasonKind::NodeCondition,
                        node: Some(n.name.clone()),
                        subject: kind.into(),
                        since: c.since,
                        message: format!(
                            "node {}: {kind}{}",
                            n.name,
                            if c.message.is_empty() {
                                String::new()
                            } else {
                                format!(" ({})", c.message)
                            }
                        ),
                    });
                }
            }
        }
        let sustain = chrono::Duration::from_std(policy.sustain).unwrap_or(chrono::Duration::MAX);
        for (key, since) in &state.over_since {
            if now - *since < sustain {
                continue;
            }
            let (node, metric) = key.rsplit_once('/').unwrap_or((key.as_str(), ""));
            let level = state
                .nodes
                .iter()
                .find(|n| n.name == node)
                .and_then(|n| node_levels(n).into_iter().find(|(m, _)| *m == metric))
                .map_or(String::new(), |(_, f)| format!(" at {:.0}%", f * 100.0));
            reasons.push(HealthReason {
                kind: HealthReasonKind::Metric,
                node: Some(node.to_string()),
                subject: metric.to_string(),
                since: Some(*since),
                message: format!(
                    "node {node}: {metric}{level} over {:.0}% since {}",
                    threshold(policy, metric) * 100.0,
                    since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
            });
        }
    }
    let status = if reasons.is_empty() {
        HealthStatus::Healthy
    } else {
        HealthStatus::Unhealthy
    };
    let mut h = Health {
        status,
        reasons,
        since: Some(now),
        last_heartbeat: Some(last),
    };
    if h.same_as(&state.health) {
        h.since = state.health.since.or(Some(now));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitoring::report::{NodeConditionReport, Resources};
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(s)
    }

    fn node(name: &str, conds: &[(&str, &str)]) -> NodeReport {
        NodeReport {
            name: name.into(),
            conditions: conds
                .iter()
                .map(|(k, s)| NodeConditionReport {
                    kind: (*k).into(),
                    status: (*s).into(),
                    since: Some(t(0)),
                    ..Default::default()
                })
                .collect(),
            capacity: Resources {
                cpu_millicores: 2000,
                memory_bytes: 1000,
            },
            ..Default::default()
        }
    }

    fn report(nodes: Vec<NodeReport>) -> AgentReport {
        AgentReport {
            nodes,
            ..Default::default()
        }
    }

    #[test]
    fn unknown_before_the_first_heartbeat_then_healthy() {
        let p = HealthPolicy::default();
        let mut s = MonitorState::default();
        assert_eq!(evaluate(&p, &s, t(0)).status, HealthStatus::Unknown);
        observe(
            &p,
            &mut s,
            &report(vec![node("a", &[("Ready", "True")])]),
            t(1),
        );
        let h = evaluate(&p, &s, t(1));
        assert_eq!(h.status, HealthStatus::Healthy);
        assert_eq!(h.reason(), "Healthy");
    }

    #[test]
    fn heartbeat_window_is_the_only_reason_once_missed() {
        let p = HealthPolicy::default();
        let mut s = MonitorState::default();
        observe(
            &p,
            &mut s,
            &report(vec![node("a", &[("Ready", "False")])]),
            t(0),
        );
        assert_eq!(
            evaluate(&p, &s, t(180)).reasons[0].kind,
            HealthReasonKind::NodeCondition
        );
        let h = evaluate(&p, &s, t(181));
        assert_eq!(h.status, HealthStatus::Unhealthy);
        assert_eq!(h.reasons.len(), 1);
        assert_eq!(h.reason(), "HeartbeatMissing");
    }

    #[test]
    fn problem_conditions_name_node_and_condition() {
        let p = HealthPolicy::default();
        let mut s = MonitorState::default();
        observe(
            &p,
            &mut s,
            &report(vec![
                node(
                    "a",
                    &[
                        ("Ready", "True"),
                        ("DiskPressure", "True"),
                        ("MemoryPressure", "False"),
                    ],
                ),
                node("b", &[("Ready", "Unknown")]),
                node("c", &[]),
            ]),
            t(0),
        );
        let h = evaluate(&p, &s, t(0));
        let subjects: Vec<_> = h
            .reasons
            .iter()
            .map(|r| format!("{}:{}", r.node.as_deref().unwrap_or(""), r.subject))
            .collect();
        assert_eq!(subjects, ["a:DiskPressure", "b:Ready", "c:Ready"]);
        assert!(
            h.message().contains("node b: Ready is Unknown"),
            "{}",
            h.message()
        );
    }

    #[test]
    fn disk_over_its_threshold_for_the_period_names_the_node() {
        let p = HealthPolicy::default();
        let mut s = MonitorState::default();
        let mut n = node("w", &[("Ready", "True")]);
        n.disk = Some(crate::monitoring::report::DiskUsage {
            used_bytes: 95,
            capacity_bytes: 100,
        });
        for i in 0..=10 {
            observe(&p, &mut s, &report(vec![n.clone()]), t(30 * i));
        }
        let h = evaluate(&p, &s, t(300));
        assert_eq!(h.status, HealthStatus::Unhealthy);
        assert_eq!(
            (h.reasons[0].node.as_deref(), h.reasons[0].subject.as_str()),
            (Some("w"), "disk")
        );
        assert!(
            h.message().contains("disk at 95% over 90%"),
            "{}",
            h.message()
        );
    }

    #[test]
    fn a_sample_under_the_threshold_resets_the_clock_and_since_is_kept_while_unchanged() {
        let p = HealthPolicy::default();
        let mut s = MonitorState::default();
        let with = |mem: u64| {
            let mut n = node("a", &[("Ready", "True")]);
            n.usage = Some(Resources {
                cpu_millicores: 0,
                memory_bytes: mem,
            });
            report(vec![n])
        };
        for i in 0..10 {
            observe(&p, &mut s, &with(950), t(30 * i));
        }
        observe(&p, &mut s, &with(100), t(300));
        s.health = evaluate(&p, &s, t(300));
        assert_eq!(s.health.status, HealthStatus::Healthy);
        for i in 11..=21 {
            observe(&p, &mut s, &with(950), t(30 * i));
        }
        let h = evaluate(&p, &s, t(630));
        assert_eq!(h.status, HealthStatus::Unhealthy, "{h:?}");
        assert_eq!(h.reasons[0].since, Some(t(330)));
        s.health = h.clone();
        let again = evaluate(&p, &s, t(660));
        assert_eq!(again.since, h.since, "unchanged health keeps its since");
        // The level moves while it stays over: the same health (no new transition).
        observe(&p, &mut s, &with(990), t(690));
        let moved = evaluate(&p, &s, t(690));
        assert_ne!(moved.reasons[0].message, h.reasons[0].message);
        assert!(moved.same_as(&h));
    }
}

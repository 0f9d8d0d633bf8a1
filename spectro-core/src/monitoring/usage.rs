//! Usage monitoring: a [`UsageSample`] per report (per node: capacity, usage, pod
//! requests), kept with bounded retention and downsampling ([`UsageRetention`]: raw samples
//! for an hour, then 5-minute averages for a week), and read back as [`UsagePoint`]s for the
//! nodes a caller asks for ([`NodeScope`]: worker nodes by default, as the doc's overview).
//!
//! The doc's figures per point: cores (capacity) and cores used, CPU usage, memory usage,
//! and the CPU and memory requested by all pods (those not scheduled yet included when the
//! scope is the whole cluster).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::report::AgentReport;

/// How long samples are kept, and at which resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRetention {
    /// Raw samples (one per report) are kept this long. Default 1 hour.
    pub raw: Duration,
    /// Older samples are averaged into buckets of this width. Default 5 minutes.
    pub step: Duration,
    /// Averages are kept this long. Default 7 days.
    pub rollup: Duration,
}

impl Default for UsageRetention {
    fn default() -> Self {
        UsageRetention {
            raw: Duration::from_secs(3600),
            step: Duration::from_secs(300),
            rollup: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl UsageRetention {
    /// Every rule it breaks (paths under `monitoring.retention`).
    #[must_use]
    pub fn validate(&self) -> Vec<crate::validate::Violation> {
        use crate::validate::Violation;
        let mut v = Vec::new();
        if self.step.as_secs() < 1 {
            v.push(Violation::new(
                "monitoring.retention.step",
                "must be at least 1 second",
            ));
        }
        if self.raw < self.step {
            v.push(Violation::new(
                "monitoring.retention.raw",
                "must be at least one step",
            ));
        }
        if self.rollup < self.step {
            v.push(Violation::new(
                "monitoring.retention.rollup",
                "must be at least one step",
            ));
        }
        v
    }

    /// The step in whole seconds (at least 1).
    #[must_use]
    pub fn step_secs(&self) -> i64 {
        self.step.as_secs().max(1) as i64
    }

    /// Raw samples before this instant are rolled up: the start of the bucket that holds
    /// `now - raw` (only whole buckets are averaged).
    #[must_use]
    pub fn raw_cut(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let edge = now
            .timestamp()
            .saturating_sub(i64::try_from(self.raw.as_secs()).unwrap_or(i64::MAX));
        let step = self.step_secs();
        DateTime::from_timestamp(edge.div_euclid(step) * step, 0).unwrap_or(now)
    }

    /// Averages before this instant are dropped.
    #[must_use]
    pub fn rollup_cut(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        chrono::Duration::from_std(self.rollup)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// The most rows one cluster can hold at a steady `interval` between reports: raw
    /// samples for `raw` plus averages for `rollup` (and one bucket in progress each side).
    #[must_use]
    pub fn max_rows(&self, interval: Duration) -> u64 {
        let raw = (self.raw.as_secs() + self.step.as_secs()) / interval.as_secs().max(1) + 1;
        raw + self.rollup.as_secs() / self.step.as_secs().max(1) + 1
    }
}

/// One node in a sample (averages once rolled up).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeSample {
    /// A control-plane node.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub control_plane: bool,
    /// CPU capacity in cores.
    pub cpu_cores: f64,
    /// CPU used in cores (`metrics.k8s.io`), when served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_used_cores: Option<f64>,
    /// Memory capacity in bytes.
    pub memory_bytes: f64,
    /// Memory used in bytes, when served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used_bytes: Option<f64>,
    /// CPU requested by the node's pods, in cores.
    pub cpu_requests_cores: f64,
    /// Memory requested by the node's pods, in bytes.
    pub memory_requests_bytes: f64,
    /// Root filesystem used, in bytes, when the kubelet answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_used_bytes: Option<f64>,
    /// Root filesystem size, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<f64>,
}

/// What one report (or one bucket's average) says about usage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageSample {
    /// The sample's time (a bucket's start once rolled up).
    pub at: DateTime<Utc>,
    /// Per node.
    pub nodes: BTreeMap<String, NodeSample>,
    /// CPU requested by pods not scheduled yet, in cores.
    #[serde(default)]
    pub unscheduled_cpu_cores: f64,
    /// Memory requested by pods not scheduled yet, in bytes.
    #[serde(default)]
    pub unscheduled_memory_bytes: f64,
}

const MILLI: f64 = 1000.0;

impl UsageSample {
    /// The sample of a report received at `at`.
    #[must_use]
    pub fn from_report(report: &AgentReport, at: DateTime<Utc>) -> Self {
        let nodes = report
            .nodes
            .iter()
            .map(|n| {
                (
                    n.name.clone(),
                    NodeSample {
                        control_plane: n.control_plane,
                        cpu_cores: n.capacity.cpu_millicores as f64 / MILLI,
                        cpu_used_cores: n.usage.map(|u| u.cpu_millicores as f64 / MILLI),
                        memory_bytes: n.capacity.memory_bytes as f64,
                        memory_used_bytes: n.usage.map(|u| u.memory_bytes as f64),
                        cpu_requests_cores: n.requests.cpu_millicores as f64 / MILLI,
                        memory_requests_bytes: n.requests.memory_bytes as f64,
                        disk_used_bytes: n.disk.map(|d| d.used_bytes as f64),
                        disk_bytes: n.disk.map(|d| d.capacity_bytes as f64),
                    },
                )
            })
            .collect();
        UsageSample {
            at,
            nodes,
            unscheduled_cpu_cores: report.unscheduled_requests.cpu_millicores as f64 / MILLI,
            unscheduled_memory_bytes: report.unscheduled_requests.memory_bytes as f64,
        }
    }
}

/// Which nodes a usage figure covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NodeScope {
    /// Worker nodes only (the doc's default).
    #[default]
    Workers,
    /// Every node, control plane included.
    All,
    /// These nodes.
    Nodes(Vec<String>),
}

impl NodeScope {
    fn covers(&self, name: &str, n: &NodeSample) -> bool {
        match self {
            NodeScope::Workers => !n.control_plane,
            NodeScope::All => true,
            NodeScope::Nodes(names) => names.iter().any(|x| x == name),
        }
    }
}

/// Usage at one time, over the nodes of a scope.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsagePoint {
    /// When.
    pub at: DateTime<Utc>,
    /// CPU capacity, cores.
    pub cores: f64,
    /// Cores used ("Cores Used", "CPU Usage").
    pub cores_used: f64,
    /// CPU usage as a fraction of capacity.
    pub cpu_usage: f64,
    /// Memory capacity, bytes.
    pub memory_bytes: f64,
    /// Memory used, bytes ("Memory Usage").
    pub memory_used_bytes: f64,
    /// Memory usage as a fraction of capacity.
    pub memory_usage: f64,
    /// CPU requested by all pods, cores ("CPU Requests").
    pub cpu_requests_cores: f64,
    /// Memory requested by all pods, bytes ("Memory Requests").
    pub memory_requests_bytes: f64,
    /// Per node, for the node details page.
    pub nodes: BTreeMap<String, NodeSample>,
}

impl UsagePoint {
    /// The figures of `sample` over the nodes of `scope`. Requests of pods not scheduled
    /// yet count when the scope is the whole cluster.
    #[must_use]
    pub fn of(sample: &UsageSample, scope: &NodeScope) -> Self {
        let mut p = UsagePoint {
            at: sample.at,
            ..Default::default()
        };
        for (name, n) in sample.nodes.iter().filter(|(k, n)| scope.covers(k, n)) {
            p.cores += n.cpu_cores;
            p.cores_used += n.cpu_used_cores.unwrap_or(0.0);
            p.memory_bytes += n.memory_bytes;
            p.memory_used_bytes += n.memory_used_bytes.unwrap_or(0.0);
            p.cpu_requests_cores += n.cpu_requests_cores;
            p.memory_requests_bytes += n.memory_requests_bytes;
            p.nodes.insert(name.clone(), n.clone());
        }
        if *scope == NodeScope::All {
            p.cpu_requests_cores += sample.unscheduled_cpu_cores;
            p.memory_requests_bytes += sample.unscheduled_memory_bytes;
        }
        p.cpu_usage = if p.cores > 0.0 {
            p.cores_used / p.cores
        } else {
            0.0
        };
        p.memory_usage = if p.memory_bytes > 0.0 {
            p.memory_used_bytes / p.memory_bytes
        } else {
            0.0
        };
        p
    }
}

/// Usage of a cluster: now and over a range.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// The newest sample (now).
    pub current: Option<UsagePoint>,
    /// The series over the range asked, oldest first: 5-minute averages where the raw
    /// samples were rolled up, raw samples after.
    pub series: Vec<UsagePoint>,
}

fn avg(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let (mut sum, mut n) = (0.0, 0u32);
    for v in values.flatten() {
        sum += v;
        n += 1;
    }
    (n > 0).then(|| sum / f64::from(n))
}

/// Averages samples into buckets of `step` (each at its bucket's start), oldest first. A
/// node's figures average over the samples that have it.
#[must_use]
pub fn downsample(samples: &[UsageSample], step: Duration) -> Vec<UsageSample> {
    let step = step.as_secs().max(1) as i64;
    let mut buckets: BTreeMap<i64, Vec<&UsageSample>> = BTreeMap::new();
    for s in samples {
        buckets
            .entry(s.at.timestamp().div_euclid(step) * step)
            .or_default()
            .push(s);
    }
    buckets
        .into_iter()
        .map(|(start, group)| {
            let mut names: Vec<&String> = group.iter().flat_map(|s| s.nodes.keys()).collect();
            names.sort();
            names.dedup();
            let nodes = names
                .into_iter()
                .map(|name| {
                    let of: Vec<&NodeSample> =
                        group.iter().filter_map(|s| s.nodes.get(name)).collect();
                    let f = |g: fn(&NodeSample) -> Option<f64>| avg(of.iter().map(|n| g(n)));
                    let node = NodeSample {
                        control_plane: of.last().is_some_and(|n| n.control_plane),
                        cpu_cores: f(|n| Some(n.cpu_cores)).unwrap_or(0.0),
                        cpu_used_cores: f(|n| n.cpu_used_cores),
                        memory_bytes: f(|n| Some(n.memory_bytes)).unwrap_or(0.0),
                        memory_used_bytes: f(|n| n.memory_used_bytes),
                        cpu_requests_cores: f(|n| Some(n.cpu_requests_cores)).unwrap_or(0.0),
                        memory_requests_bytes: f(|n| Some(n.memory_requests_bytes)).unwrap_or(0.0),
                        disk_used_bytes: f(|n| n.disk_used_bytes),
                        disk_bytes: f(|n| n.disk_bytes),
                    };
                    (name.clone(), node)
                })
                .collect();
            UsageSample {
                at: DateTime::from_timestamp(start, 0).unwrap_or(group[0].at),
                nodes,
                unscheduled_cpu_cores: avg(group.iter().map(|s| Some(s.unscheduled_cpu_cores)))
                    .unwrap_or(0.0),
                unscheduled_memory_bytes: avg(group
                    .iter()
                    .map(|s| Some(s.unscheduled_memory_bytes)))
                .unwrap_or(0.0),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sample(s: i64, cpu: f64, cp: bool) -> UsageSample {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            "w".to_string(),
            NodeSample {
                cpu_cores: 2.0,
                cpu_used_cores: Some(cpu),
                memory_bytes: 100.0,
                memory_used_bytes: Some(50.0),
                cpu_requests_cores: 0.5,
                ..Default::default()
            },
        );
        nodes.insert(
            "cp".to_string(),
            NodeSample {
                control_plane: cp,
                cpu_cores: 4.0,
                cpu_used_cores: Some(1.0),
                memory_bytes: 100.0,
                ..Default::default()
            },
        );
        UsageSample {
            at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(s),
            nodes,
            unscheduled_cpu_cores: 0.25,
            unscheduled_memory_bytes: 0.0,
        }
    }

    #[test]
    fn workers_only_by_default_and_requests_of_unscheduled_pods_with_all() {
        let s = sample(0, 1.0, true);
        let w = UsagePoint::of(&s, &NodeScope::default());
        assert_eq!((w.cores, w.cores_used, w.cpu_usage), (2.0, 1.0, 0.5));
        assert_eq!(w.nodes.len(), 1);
        let all = UsagePoint::of(&s, &NodeScope::All);
        assert_eq!((all.cores, all.cpu_requests_cores), (6.0, 0.75));
        let one = UsagePoint::of(&s, &NodeScope::Nodes(vec!["cp".into()]));
        assert_eq!(one.cores, 4.0);
    }

    #[test]
    fn downsampling_averages_per_bucket() {
        let samples: Vec<_> = (0..20)
            .map(|i| sample(i * 30, (i % 2) as f64, true))
            .collect();
        let out = downsample(&samples, Duration::from_secs(300));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].nodes["w"].cpu_used_cores, Some(0.5));
        assert_eq!(out[1].at.timestamp() - out[0].at.timestamp(), 300);
        assert!(out[0].nodes["cp"].control_plane);
    }

    #[test]
    fn raw_cut_is_a_bucket_edge() {
        let r = UsageRetention::default();
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 5, 7, 13).unwrap();
        assert_eq!(
            r.raw_cut(now),
            Utc.with_ymd_and_hms(2026, 1, 1, 4, 5, 0).unwrap()
        );
        assert_eq!(r.max_rows(Duration::from_secs(30)), 131 + 2017);
    }
}

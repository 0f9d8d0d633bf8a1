//! The agent: collects a report through the Kubernetes API and sends it to the engine.
//!
//! What it reads (the least-privilege ClusterRole of the agent pack allows exactly this):
//! nodes (conditions, addresses, capacity, allocatable), pods not finished (requests, per
//! node and unscheduled), services (LoadBalancer and NodePort, with the load balancer's
//! ingress), and `metrics.k8s.io` NodeMetrics (usage; when that API is not served the
//! report says so and carries no usage).
//!
//! Delivery: every interval a report is collected and appended to a bounded buffer
//! (oldest dropped past [`AgentConfig::buffer`]); the whole buffer goes in one request.
//! A failed send keeps the buffer and is retried with exponential backoff (1 s doubling,
//! capped at the interval); a `401` is not retried faster than the interval (a rotated
//! credential arrives with the re-applied pack). Proxies: `HTTPS_PROXY`/`NO_PROXY` are
//! honoured.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use spectro_core::monitoring::report::{
    AgentReport, DiskUsage, NodeAddressReport, NodeConditionReport, NodeReport, ReportBatch,
    Resources, ServicePortReport, ServiceReport,
};
use spectro_core::secret::Secret;

use crate::quantity;

/// The agent's version (reported with every heartbeat).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where and how the agent reports.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The engine's endpoint, e.g. `https://spectro.example.com:8443`.
    pub endpoint: String,
    /// This cluster's id.
    pub cluster_id: String,
    /// This cluster's credential.
    pub token: Secret,
    /// The CA to trust for the endpoint (PEM); `None`: the system's roots.
    pub ca_pem: Option<String>,
    /// Time between reports.
    pub interval: Duration,
    /// Most reports kept while the engine is unreachable.
    pub buffer: usize,
    /// Timeout of one send.
    pub timeout: Duration,
    /// Read each node's root filesystem usage from the kubelet's summary API (through the
    /// API server's node proxy; needs `get` on `nodes/proxy`).
    pub disk_usage: bool,
}

/// A configuration error, naming the variable.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {rule}")]
pub struct ConfigError {
    /// The environment variable.
    pub var: &'static str,
    /// What is wrong.
    pub rule: String,
}

impl AgentConfig {
    /// A configuration with the defaults: 30 s interval, 240 reports buffered (2 hours),
    /// 10 s send timeout.
    #[must_use]
    pub fn new(endpoint: impl Into<String>, cluster_id: impl Into<String>, token: Secret) -> Self {
        AgentConfig {
            endpoint: endpoint.into(),
            cluster_id: cluster_id.into(),
            token,
            ca_pem: None,
            interval: Duration::from_secs(30),
            buffer: 240,
            timeout: Duration::from_secs(10),
            disk_usage: false,
        }
    }

    /// From the environment the agent pack sets: `SPECTRO_ENDPOINT`, `SPECTRO_CLUSTER_ID`,
    /// `SPECTRO_TOKEN`, optional `SPECTRO_CA_FILE` (an empty file: system roots),
    /// `SPECTRO_INTERVAL_SECS`, `SPECTRO_BUFFER`, `SPECTRO_DISK_USAGE`.
    pub fn from_env() -> Result<Self, ConfigError> {
        let var = |name: &'static str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .ok_or(ConfigError {
                    var: name,
                    rule: "must be set".into(),
                })
        };
        let endpoint = var("SPECTRO_ENDPOINT")?;
        if !endpoint.starts_with("https://") && !endpoint.starts_with("http://") {
            return Err(ConfigError {
                var: "SPECTRO_ENDPOINT",
                rule: "must be an http(s) URL".into(),
            });
        }
        let mut c = AgentConfig::new(
            endpoint,
            var("SPECTRO_CLUSTER_ID")?,
            Secret::new(var("SPECTRO_TOKEN")?),
        );
        if let Ok(path) = var("SPECTRO_CA_FILE") {
            let pem = std::fs::read_to_string(&path).map_err(|e| ConfigError {
                var: "SPECTRO_CA_FILE",
                rule: format!("cannot read {path}: {e}"),
            })?;
            c.ca_pem = Some(pem).filter(|p| !p.trim().is_empty());
        }
        let num = |name: &'static str| -> Result<Option<u64>, ConfigError> {
            match var(name) {
                Ok(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .map(Some)
                    .ok_or(ConfigError {
                        var: name,
                        rule: format!("must be a positive integer, got {v:?}"),
                    }),
                Err(_) => Ok(None),
            }
        };
        if let Some(s) = num("SPECTRO_INTERVAL_SECS")? {
            c.interval = Duration::from_secs(s);
        }
        if let Some(n) = num("SPECTRO_BUFFER")? {
            c.buffer = n as usize;
        }
        if let Ok(v) = var("SPECTRO_DISK_USAGE") {
            c.disk_usage = match v.trim() {
                "true" | "1" => true,
                "false" | "0" => false,
                other => {
                    return Err(ConfigError {
                        var: "SPECTRO_DISK_USAGE",
                        rule: format!("must be true or false, got {other:?}"),
                    })
                }
            };
        }
        Ok(c)
    }
}

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The engine refused the credential.
    #[error("the engine refused this cluster's credential (401)")]
    Unauthorized,
    /// The engine answered with another error.
    #[error("the engine answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Its answer.
        body: String,
    },
    /// No answer (connection, TLS, timeout).
    #[error("the engine is unreachable: {0}")]
    Unreachable(String),
}

/// Why a collection failed.
#[derive(Debug, thiserror::Error)]
#[error("reading {what} from the Kubernetes API: {source}")]
pub struct CollectError {
    what: &'static str,
    #[source]
    source: kube::Error,
}

/// The agent.
pub struct Agent {
    kube: kube::Client,
    http: reqwest::Client,
    config: AgentConfig,
    buffer: VecDeque<AgentReport>,
    /// This process's id in its reports, and the last report number.
    id: String,
    seq: u64,
}

/// Most reports in one request (a long outage's buffer goes in several).
pub const BATCH: usize = 20;

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("config", &self.config)
            .field("buffered", &self.buffer.len())
            .finish()
    }
}

fn resources(
    list: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
) -> Resources {
    let get = |k: &str, f: fn(&str) -> Option<u64>| {
        list.and_then(|m| m.get(k))
            .and_then(|q| f(&q.0))
            .unwrap_or(0)
    };
    Resources {
        cpu_millicores: get("cpu", quantity::millicores),
        memory_bytes: get("memory", quantity::bytes),
    }
}

/// A pod's requests: the larger of the sum of its containers' and its largest init
/// container's (as the scheduler counts), plus its overhead.
fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources::default();
    };
    let mut sum = Resources::default();
    for c in &spec.containers {
        sum += resources(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
    }
    for c in spec.init_containers.iter().flatten() {
        let r = resources(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
        sum.cpu_millicores = sum.cpu_millicores.max(r.cpu_millicores);
        sum.memory_bytes = sum.memory_bytes.max(r.memory_bytes);
    }
    sum += resources(spec.overhead.as_ref());
    sum
}

impl Agent {
    /// An agent reading the cluster through `kube` and reporting as `config` says.
    pub fn new(kube: kube::Client, config: AgentConfig) -> Result<Self, SendError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout);
        if let Some(pem) = &config.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| SendError::Unreachable(format!("the CA bundle is not PEM: {e}")))?;
            b = b.tls_certs_only(certs);
        }
        let http = b
            .build()
            .map_err(|e| SendError::Unreachable(e.to_string()))?;
        Ok(Agent {
            kube,
            http,
            config,
            buffer: VecDeque::new(),
            id: uuid::Uuid::new_v4().simple().to_string(),
            seq: 0,
        })
    }

    /// Reports waiting to be sent.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Collects one report now.
    pub async fn collect(&self) -> Result<AgentReport, CollectError> {
        let lp = ListParams::default();
        let nodes = Api::<Node>::all(self.kube.clone())
            .list(&lp)
            .await
            .map_err(|source| CollectError {
                what: "nodes",
                source,
            })?;
        let pods = Api::<Pod>::all(self.kube.clone())
            .list(&ListParams::default().fields("status.phase!=Succeeded,status.phase!=Failed"))
            .await
            .map_err(|source| CollectError {
                what: "pods",
                source,
            })?;
        let services = Api::<Service>::all(self.kube.clone())
            .list(&lp)
            .await
            .map_err(|source| CollectError {
                what: "services",
                source,
            })?;
        let metrics = self.node_metrics().await;
        let disks = if self.config.disk_usage {
            self.node_disks(nodes.items.iter().filter_map(|n| n.metadata.name.clone()))
                .await
        } else {
            BTreeMap::new()
        };
        let mut requests: BTreeMap<String, (Resources, u32)> = BTreeMap::new();
        let mut unscheduled = Resources::default();
        for pod in &pods.items {
            let r = pod_requests(pod);
            match pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
                Some(n) => {
                    let e = requests.entry(n).or_default();
                    e.0 += r;
                    e.1 += 1;
                }
                None => unscheduled += r,
            }
        }
        let nodes =
            nodes
                .items
                .iter()
                .map(|n| {
                    let name = n.metadata.name.clone().unwrap_or_default();
                    let status = n.status.as_ref();
                    let (req, pods) = requests.get(&name).copied().unwrap_or_default();
                    NodeReport {
                        control_plane: n.metadata.labels.as_ref().is_some_and(|l| {
                            l.contains_key("node-role.kubernetes.io/control-plane")
                        }),
                        conditions: status
                            .and_then(|s| s.conditions.as_ref())
                            .into_iter()
                            .flatten()
                            .map(|c| NodeConditionReport {
                                kind: c.type_.clone(),
                                status: c.status.clone(),
                                reason: c.reason.clone().unwrap_or_default(),
                                message: c.message.clone().unwrap_or_default(),
                                since: c.last_transition_time.as_ref().and_then(|t| {
                                    chrono::DateTime::from_timestamp(
                                        t.0.as_second(),
                                        t.0.subsec_nanosecond().max(0) as u32,
                                    )
                                }),
                            })
                            .collect(),
                        addresses: status
                            .and_then(|s| s.addresses.as_ref())
                            .into_iter()
                            .flatten()
                            .map(|a| NodeAddressReport {
                                kind: a.type_.clone(),
                                address: a.address.clone(),
                            })
                            .collect(),
                        capacity: resources(status.and_then(|s| s.capacity.as_ref())),
                        allocatable: resources(status.and_then(|s| s.allocatable.as_ref())),
                        usage: metrics.as_ref().and_then(|m| m.get(&name).copied()),
                        disk: disks.get(&name).copied(),
                        requests: req,
                        pods,
                        name,
                    }
                })
                .collect();
        let services = services
            .items
            .iter()
            .filter_map(|s| {
                let spec = s.spec.as_ref()?;
                let kind = spec.type_.clone().unwrap_or_else(|| "ClusterIP".into());
                if kind != "LoadBalancer" && kind != "NodePort" {
                    return None;
                }
                Some(ServiceReport {
                    namespace: s.metadata.namespace.clone().unwrap_or_default(),
                    name: s.metadata.name.clone().unwrap_or_default(),
                    kind,
                    ports: spec
                        .ports
                        .iter()
                        .flatten()
                        .map(|p| ServicePortReport {
                            name: p.name.clone().unwrap_or_default(),
                            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                            port: u16::try_from(p.port).unwrap_or(0),
                            node_port: p.node_port.and_then(|n| u16::try_from(n).ok()),
                        })
                        .collect(),
                    ingress: s
                        .status
                        .as_ref()
                        .and_then(|st| st.load_balancer.as_ref())
                        .and_then(|lb| lb.ingress.as_ref())
                        .into_iter()
                        .flatten()
                        .filter_map(|i| i.hostname.clone().or_else(|| i.ip.clone()))
                        .collect(),
                })
            })
            .collect();
        Ok(AgentReport {
            agent_version: VERSION.into(),
            agent_id: self.id.clone(),
            seq: 0,
            collected_at: spectro_core::clock::system_now(),
            nodes,
            unscheduled_requests: unscheduled,
            services,
            metrics_available: metrics.is_some(),
        })
    }

    /// NodeMetrics usage by node, `None` when `metrics.k8s.io` does not answer.
    async fn node_metrics(&self) -> Option<BTreeMap<String, Resources>> {
        let gvk = GroupVersionKind::gvk("metrics.k8s.io", "v1beta1", "NodeMetrics");
        let ar = ApiResource::from_gvk_with_plural(&gvk, "nodes");
        let api: Api<DynamicObject> = Api::all_with(self.kube.clone(), &ar);
        let list = match api.list(&ListParams::default()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "metrics.k8s.io not served");
                return None;
            }
        };
        Some(
            list.items
                .iter()
                .filter_map(|m| {
                    let name = m.metadata.name.clone()?;
                    let usage = m.data.get("usage")?;
                    let q = |k: &str, f: fn(&str) -> Option<u64>| {
                        usage
                            .get(k)
                            .and_then(|v| v.as_str())
                            .and_then(f)
                            .unwrap_or(0)
                    };
                    Some((
                        name,
                        Resources {
                            cpu_millicores: q("cpu", quantity::millicores),
                            memory_bytes: q("memory", quantity::bytes),
                        },
                    ))
                })
                .collect(),
        )
    }

    /// Root filesystem usage by node, from each kubelet's summary API through the API
    /// server (8 at a time); a node whose kubelet does not answer has none.
    async fn node_disks(&self, names: impl Iterator<Item = String>) -> BTreeMap<String, DiskUsage> {
        use futures_util::stream::{self, StreamExt};
        stream::iter(names)
            .map(|name| async move {
                let path = format!("/api/v1/nodes/{name}/proxy/stats/summary");
                let req = http::Request::get(&path).body(Vec::new()).ok()?;
                match self.kube.request_text(req).await {
                    Ok(text) => disk_from_summary(&text).map(|d| (name, d)),
                    Err(e) => {
                        tracing::debug!(node = %name, error = %e, "kubelet summary not read");
                        None
                    }
                }
            })
            .buffer_unordered(8)
            .filter_map(std::future::ready)
            .collect()
            .await
    }

    /// Numbers a report and appends it to the buffer (the oldest goes past the bound).
    pub fn push(&mut self, mut report: AgentReport) {
        self.seq += 1;
        report.agent_id = self.id.clone();
        report.seq = self.seq;
        self.buffer.push_back(report);
        while self.buffer.len() > self.config.buffer.max(1) {
            self.buffer.pop_front();
        }
    }

    /// Sends the buffered reports, oldest first, at most [`BATCH`] per request; each
    /// request's reports leave the buffer once taken. Reports the engine refuses as
    /// malformed or too large (400, 413) are dropped (logged) rather than sent forever; on
    /// any other failure the rest stay buffered.
    pub async fn send(&mut self) -> Result<(), SendError> {
        while !self.buffer.is_empty() {
            let n = self.buffer.len().min(BATCH);
            let batch = ReportBatch {
                reports: self.buffer.iter().take(n).cloned().collect(),
            };
            match self.post(&batch).await {
                Ok(()) => {}
                Err(SendError::Status {
                    status: 400 | 413,
                    body,
                }) => {
                    tracing::warn!(reports = n, answer = %body, "reports refused by the engine: dropped");
                }
                Err(e) => return Err(e),
            }
            self.buffer.drain(..n);
        }
        Ok(())
    }

    async fn post(&self, batch: &ReportBatch) -> Result<(), SendError> {
        let url = format!(
            "{}{}",
            self.config.endpoint.trim_end_matches('/'),
            crate::report_path(&self.config.cluster_id)
        );
        let body = gzip_json(batch).map_err(|e| SendError::Unreachable(e.to_string()))?;
        let res = self
            .http
            .post(&url)
            .bearer_auth(self.config.token.expose())
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(body)
            .send()
            .await
            .map_err(|e| SendError::Unreachable(error_chain(&e)))?;
        let status = res.status().as_u16();
        if status == 401 {
            return Err(SendError::Unauthorized);
        }
        if !(200..300).contains(&status) {
            let body = res.text().await.unwrap_or_default();
            return Err(SendError::Status { status, body });
        }
        Ok(())
    }

    /// Runs until `stop` resolves: collect, buffer, send; retries failed sends with
    /// backoff while collecting on schedule.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut next_collect = spectro_core::clock::instant_now();
        let mut next_send = next_collect;
        let mut backoff = Duration::from_secs(1);
        loop {
            let now = spectro_core::clock::instant_now();
            if now >= next_collect {
                match self.collect().await {
                    Ok(r) => self.push(r),
                    Err(e) => tracing::warn!(error = %e, "collection failed"),
                }
                next_collect = now + self.config.interval;
            }
            if spectro_core::clock::instant_now() >= next_send {
                match self.send().await {
                    Ok(()) => {
                        backoff = Duration::from_secs(1);
                        next_send = next_collect;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, buffered = self.buffer.len(), "report not delivered");
                        let wait = if matches!(e, SendError::Unauthorized) {
                            self.config.interval
                        } else {
                            backoff
                        };
                        backoff = (backoff * 2).min(self.config.interval);
                        next_send = spectro_core::clock::instant_now() + wait;
                    }
                }
            }
            let wake = next_collect.min(next_send);
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }
}

/// The batch as gzip-compressed JSON.
pub fn gzip_json(batch: &ReportBatch) -> std::io::Result<Vec<u8>> {
    use std::io::Write as _;
    let json = serde_json::to_vec(batch)?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&json)?;
    gz.finish()
}

/// The node's root filesystem from a kubelet summary (`/stats/summary`): `node.fs`.
#[must_use]
pub fn disk_from_summary(text: &str) -> Option<DiskUsage> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let fs = v.get("node")?.get("fs")?;
    Some(DiskUsage {
        used_bytes: fs.get("usedBytes")?.as_u64()?,
        capacity_bytes: fs.get("capacityBytes")?.as_u64()?,
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn container(cpu: &str, mem: &str) -> Container {
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: Some(
                    [
                        ("cpu".to_string(), Quantity(cpu.into())),
                        ("memory".to_string(), Quantity(mem.into())),
                    ]
                    .into(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pod_requests_count_init_containers_as_the_scheduler() {
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![container("100m", "64Mi"), container("200m", "64Mi")],
                init_containers: Some(vec![container("1", "16Mi")]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            pod_requests(&pod),
            Resources {
                cpu_millicores: 1000,
                memory_bytes: 128 << 20
            }
        );
    }

    #[test]
    fn disk_usage_from_a_kubelet_summary() {
        let summary = r#"{"node":{"nodeName":"n1","fs":{"time":"2026-01-01T00:00:00Z",
            "availableBytes":60000,"capacityBytes":100000,"usedBytes":40000,
            "inodesFree":1,"inodes":2,"inodesUsed":1},"runtime":{}},"pods":[]}"#;
        assert_eq!(
            disk_from_summary(summary),
            Some(DiskUsage {
                used_bytes: 40000,
                capacity_bytes: 100000
            })
        );
        assert_eq!(disk_from_summary(r#"{"node":{}}"#), None);
        assert_eq!(disk_from_summary("not json"), None);
    }

    #[test]
    fn config_errors_name_the_variable() {
        // Only the parsing of values: the process environment is shared by tests.
        let e = ConfigError {
            var: "SPECTRO_ENDPOINT",
            rule: "must be set".into(),
        };
        assert_eq!(e.to_string(), "SPECTRO_ENDPOINT: must be set");
    }
}

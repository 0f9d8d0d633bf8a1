//! spectro's cluster agent and the engine's endpoint it reports to.
//!
//! - [`agent`] (feature `agent`, binary `spectro-agent`): runs inside a workload cluster
//!   (deployed by the engine as the `spectro-agent` system pack), reads nodes, pods,
//!   services and `metrics.k8s.io` through the Kubernetes API, and every interval sends a
//!   report to the engine — dialling out, so clusters behind NAT or a gateway need no
//!   inbound connection. While the engine is unreachable it buffers reports (bounded) and
//!   retries with backoff.
//! - [`endpoint`] (feature `endpoint`): the engine's side, an HTTPS endpoint (hyper +
//!   rustls) the embedding application starts ([`endpoint::AgentEndpoint::serve`]) or mounts
//!   in its own server ([`endpoint::AgentEndpoint::handle`]).
//!
//! The wire protocol: `POST /v1/clusters/{cluster id}/reports`, `Authorization: Bearer
//! <credential>`, a JSON [`ReportBatch`](spectro_core::monitoring::ReportBatch) (gzip with
//! `Content-Encoding: gzip`, as the agent sends it); answers `200`
//! with the cluster's health, `401` for a wrong credential (or another cluster's: nothing
//! is recorded), `400` for a malformed body (naming the field), `413` over the size limit,
//! `404` for a deleted cluster, `410` while it is being deleted, `503` while the engine shuts down.

#[cfg(feature = "agent")]
pub mod agent;
#[cfg(feature = "endpoint")]
pub mod endpoint;
#[cfg(feature = "agent")]
pub mod quantity;

/// The report path of a cluster.
#[must_use]
pub fn report_path(cluster: &str) -> String {
    format!("/v1/clusters/{cluster}/reports")
}

//! Nodes: list, cordon, drain (Eviction API), delete.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams};
use serde_json::json;
use spectro_core::workload::{DrainProgress, NodeInfo, WorkloadError, DRAIN_ANNOTATION};

use crate::kube_err;

fn info(n: &Node) -> NodeInfo {
    let name = n.metadata.name.clone().unwrap_or_default();
    let status = n.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    NodeInfo {
        name,
        provider_id: n.spec.as_ref().and_then(|s| s.provider_id.clone()),
        internal_ips: status
            .and_then(|s| s.addresses.as_ref())
            .map(|a| {
                a.iter()
                    .filter(|a| a.type_ == "InternalIP")
                    .filter_map(|a| a.address.parse().ok())
                    .collect()
            })
            .unwrap_or_default(),
        ready: ready.is_some_and(|c| c.status == "True"),
        ready_since: ready
            .and_then(|c| c.last_transition_time.as_ref())
            .and_then(|t| {
                DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32)
            }),
        unschedulable: n
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false),
        drain_started: n
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DRAIN_ANNOTATION))
            .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
            .map(|t| t.with_timezone(&Utc)),
    }
}

pub(crate) async fn list(client: &kube::Client) -> Result<Vec<NodeInfo>, WorkloadError> {
    let api: Api<Node> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| kube_err("list Nodes", e))?;
    Ok(list.items.iter().map(info).collect())
}

pub(crate) async fn cordon(
    client: &kube::Client,
    node: &str,
    now: DateTime<Utc>,
) -> Result<(), WorkloadError> {
    let api: Api<Node> = Api::all(client.clone());
    let current = match api.get_opt(node).await {
        Ok(Some(n)) => n,
        Ok(None) => return Ok(()),
        Err(e) => return Err(kube_err(format!("get Node {node}"), e)),
    };
    let i = info(&current);
    if i.unschedulable && i.drain_started.is_some() {
        return Ok(());
    }
    let started = i.drain_started.unwrap_or(now).to_rfc3339();
    let patch = json!({
        "metadata": { "annotations": { DRAIN_ANNOTATION: started } },
        "spec": { "unschedulable": true },
    });
    api.patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| kube_err(format!("cordon Node {node}"), e))?;
    Ok(())
}

/// Pods a drain leaves alone: mirror pods (static pods the kubelet owns) and DaemonSet pods
/// (the DaemonSet would recreate them on the same node).
fn skipped(p: &Pod) -> bool {
    let mirror = p
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    let daemon = p
        .metadata
        .owner_references
        .as_ref()
        .is_some_and(|o| o.iter().any(|o| o.kind == "DaemonSet"));
    mirror || daemon
}

pub(crate) async fn drain(
    client: &kube::Client,
    node: &str,
) -> Result<DrainProgress, WorkloadError> {
    let pods: Api<Pod> = Api::all(client.clone());
    let list = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .map_err(|e| kube_err(format!("list Pods on Node {node}"), e))?;
    let mut left = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    for p in list.items.iter().filter(|p| !skipped(p)) {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let name = p.metadata.name.clone().unwrap_or_default();
        let id = format!("{ns}/{name}");
        if p.metadata.deletion_timestamp.is_some() {
            left.push(id);
            continue;
        }
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        match api.evict(&name, &EvictParams::default()).await {
            // Evicted: the pod terminates; the next pass sees whether it is gone.
            Ok(_) => left.push(id),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(kube::Error::Api(s)) if s.code == 429 || s.code == 500 => {
                // 429: a PodDisruptionBudget allows no disruption now; 500: more than one
                // budget selects the pod. Both are retried on the next pass.
                if !reasons.contains(&s.message) {
                    reasons.push(s.message.clone());
                }
                left.push(id);
            }
            Err(e) => return Err(kube_err(format!("evict Pod {ns}/{name}"), e)),
        }
    }
    if left.is_empty() {
        Ok(DrainProgress::Done)
    } else {
        let reason = if reasons.is_empty() {
            format!("{} pod(s) terminating", left.len())
        } else {
            reasons.join("; ")
        };
        Ok(DrainProgress::Blocked { pods: left, reason })
    }
}

pub(crate) async fn delete(client: &kube::Client, node: &str) -> Result<(), WorkloadError> {
    let api: Api<Node> = Api::all(client.clone());
    match api.delete(node, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(kube_err(format!("delete Node {node}"), e)),
    }
}

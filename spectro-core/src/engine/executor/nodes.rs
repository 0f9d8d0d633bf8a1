//! The workload cluster's side of a reconcile: observe its Nodes and etcd members (one Node
//! list and one member list per reconcile), take nodes out safely before their machines go
//! (cordon, drain, etcd member removal, Node deletion), remove stale etcd members.

use std::sync::Arc;

use super::super::condition::ConditionType;
use super::super::event::Severity;
use super::super::planner::{DeleteReason, Wait};
use super::{Outcome, Pass, Step, World};
use crate::error::Result;
use crate::model::PoolRole;
use crate::provider::{Machine, MachineState};
use crate::workload::{
    quorum_after_removal, DrainProgress, WorkloadAccess, WorkloadCluster, WorkloadError,
    WorkloadView,
};

/// The connection to the cluster's API server (opened again when the endpoint or the
/// control-plane machines change), or why there is none.
async fn connection(
    p: &mut Pass<'_>,
    machines: &[Machine],
) -> Result<Option<std::result::Result<Arc<dyn WorkloadCluster>, WorkloadError>>> {
    let Some(connector) = p.inner.workload.clone() else {
        return Ok(None);
    };
    let Some(endpoint) = p
        .status
        .infrastructure
        .as_ref()
        .filter(|i| i.ready)
        .and_then(|i| i.endpoint.clone())
    else {
        return Ok(None);
    };
    let running_cp: Vec<&Machine> = machines
        .iter()
        .filter(|m| m.role == PoolRole::ControlPlane && m.state == MachineState::Running)
        .collect();
    if running_cp.is_empty() {
        // No control-plane machine runs: nothing to connect to yet.
        return Ok(None);
    }
    let mut etcd_endpoints: Vec<String> = running_cp
        .iter()
        .filter_map(|m| m.address)
        .map(|a| match a {
            std::net::IpAddr::V6(v6) => format!("https://[{v6}]:2379"),
            std::net::IpAddr::V4(v4) => format!("https://{v4}:2379"),
        })
        .collect();
    etcd_endpoints.sort();
    let key = format!("{endpoint}|{}", etcd_endpoints.join(","));
    let cached = p
        .inner
        .connections
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&p.rec.id)
        .filter(|(k, _)| *k == key)
        .map(|(_, c)| c.clone());
    if let Some(c) = cached {
        return Ok(Some(Ok(c)));
    }
    if p.pki.is_none() {
        p.pki = Some(super::ensure_pki(p.inner, p.rec.id).await?);
    }
    let Some(pki) = p.pki.as_ref() else {
        return Ok(None);
    };
    let (etcd_cert, etcd_key) = pki.etcd_client()?;
    let access = WorkloadAccess {
        cluster: p.rec.id,
        name: p.rec.spec.name.clone(),
        endpoint: endpoint.clone(),
        ca_pem: pki.ca.cert_pem.clone(),
        kubeconfig: pki.admin_kubeconfig(&p.rec.spec.name, &endpoint),
        etcd_endpoints,
        etcd_ca_pem: pki.etcd_ca.cert_pem.clone(),
        etcd_client_cert_pem: etcd_cert,
        etcd_client_key: etcd_key,
    };
    match connector.connect(&access).await {
        Ok(c) => {
            p.inner
                .connections
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(p.rec.id, (key, c.clone()));
            Ok(Some(Ok(c)))
        }
        Err(e) => Ok(Some(Err(e))),
    }
}

/// Observes the workload cluster into `world` (nothing without a workload connection, while
/// the cluster is deleted, or before a control-plane machine runs).
pub(super) async fn observe(p: &mut Pass<'_>, world: &mut World) -> Result<()> {
    if p.rec.lifecycle.is_deleting() {
        p.inner
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&p.rec.id);
        return Ok(());
    }
    let conn = match connection(p, &world.machines).await? {
        None => {
            if p.inner.workload.is_some() {
                // Connection configured, nothing to reach yet: no node is ready.
                world.workload = Some(WorkloadView {
                    reachable: false,
                    error: Some("no control-plane machine runs yet".into()),
                    ..WorkloadView::default()
                });
            }
            return Ok(());
        }
        Some(Err(e)) => {
            world.workload = Some(unreachable(&e));
            return Ok(());
        }
        Some(Ok(c)) => c,
    };
    let nodes = match conn.nodes().await {
        Ok(n) => n,
        Err(e) => {
            // Open a new connection next time (the endpoint may have moved).
            p.inner
                .connections
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&p.rec.id);
            world.workload = Some(unreachable(&e));
            return Ok(());
        }
    };
    // etcd unreachable is not fatal: members are then not observed (no member is removed).
    let etcd = conn.etcd_members().await.unwrap_or_else(|e| {
        tracing::debug!(error = %e, "etcd members not observed");
        None
    });
    world.workload = Some(WorkloadView {
        reachable: true,
        error: None,
        nodes,
        etcd,
    });
    world.conn = Some(conn);
    Ok(())
}

fn unreachable(e: &WorkloadError) -> WorkloadView {
    WorkloadView {
        reachable: false,
        error: Some(e.to_string()),
        ..WorkloadView::default()
    }
}

fn milestone(m: &Machine) -> ConditionType {
    if m.role == PoolRole::ControlPlane {
        ConditionType::ControlPlaneReady
    } else {
        ConditionType::WorkersReady
    }
}

/// Takes machines' nodes out of the cluster, one machine after the other: cordon and drain
/// (healthy nodes only), etcd member removal (control plane, re-checked against a fresh
/// member list), Node deletion. A blocked drain stops the reconcile (looked at again soon)
/// unless the drain timeout has passed.
pub(super) async fn detach(
    p: &mut Pass<'_>,
    world: &mut World,
    machines: Vec<Machine>,
    reason: DeleteReason,
) -> Result<Step> {
    let Some(conn) = world.conn.clone() else {
        return Ok(Step::Stop(Outcome::Waiting));
    };
    for m in machines {
        let view = world.workload.clone().unwrap_or_default();
        let node = view.node_of(&m).cloned();
        if reason == DeleteReason::Unhealthy && m.state == MachineState::Running {
            p.event(
                Severity::Warning,
                "NodeNotReady",
                format!(
                    "machine {}: {} past the node ready timeout ({}s): replaced (machine health check)",
                    m.name,
                    node.as_ref().map_or_else(
                        || "no Node registered".to_string(),
                        |n| format!("Node {} not Ready", n.name)
                    ),
                    p.inner.config.nodes.ready_timeout.as_secs()
                ),
            );
        }
        if let Some(n) = node
            .as_ref()
            .filter(|n| n.ready && reason != DeleteReason::Unhealthy)
        {
            if n.drain_started.is_none() {
                if let Err(e) = conn.cordon(&n.name, p.now).await {
                    return Ok(p.stop_on(milestone(&m), &format!("cordoning node {}", n.name), &e));
                }
                p.event(
                    Severity::Info,
                    "NodeCordoned",
                    format!(
                        "node {} (machine {}) cordoned for removal: {reason:?}",
                        n.name, m.name
                    ),
                );
            }
            match conn.drain(&n.name).await {
                Err(e) => {
                    return Ok(p.stop_on(milestone(&m), &format!("draining node {}", n.name), &e));
                }
                Ok(DrainProgress::Done) => {
                    p.event(
                        Severity::Info,
                        "NodeDrained",
                        format!("node {} drained", n.name),
                    );
                }
                Ok(DrainProgress::Blocked { pods, reason: why }) => {
                    let since = n.drain_started.unwrap_or(p.now);
                    let waited = p
                        .now
                        .signed_duration_since(since)
                        .to_std()
                        .unwrap_or_default();
                    let timeout = p.inner.config.nodes.drain_timeout;
                    if timeout.is_some_and(|t| waited > t) {
                        p.event(
                            Severity::Warning,
                            "DrainTimeout",
                            format!(
                                "node {} not drained after {}s ({} pod(s) left: {}): removed anyway",
                                n.name,
                                waited.as_secs(),
                                pods.len(),
                                why
                            ),
                        );
                    } else {
                        let msg = format!(
                            "draining node {} (machine {}): {} pod(s) left ({}): {why}",
                            n.name,
                            m.name,
                            pods.len(),
                            pods.join(", ")
                        );
                        if n.drain_started.is_none() {
                            p.event(Severity::Warning, "DrainBlocked", &msg);
                        }
                        p.notes.push((m.role, "Draining".into(), msg));
                        p.waits.push(Wait::Draining {
                            machine: m.name.clone(),
                            node: n.name.clone(),
                            reason: why,
                            since,
                        });
                        return Ok(Step::Stop(Outcome::Waiting));
                    }
                }
            }
        }
        if m.role == PoolRole::ControlPlane {
            if let Some(member) = view.member_of(&m).cloned() {
                // The member list of the plan may be old by now: decide on a fresh one.
                let members = match conn.etcd_members().await {
                    Ok(Some(list)) => list,
                    Ok(None) => Vec::new(),
                    Err(e) => {
                        return Ok(p.stop_on(
                            ConditionType::ControlPlaneReady,
                            "listing etcd members",
                            &e,
                        ))
                    }
                };
                if members.iter().any(|e| e.id == member.id) {
                    if !quorum_after_removal(&members, member.id) {
                        let e = WorkloadError::Quorum {
                            member: member.name.clone(),
                            members: members.len(),
                            healthy: members.iter().filter(|e| e.healthy).count(),
                        };
                        p.notes.push((m.role, "EtcdQuorum".into(), e.to_string()));
                        return Ok(Step::Stop(Outcome::Waiting));
                    }
                    let removed = match conn.remove_etcd_member(member.id).await {
                        Ok(r) => r,
                        Err(e) => {
                            return Ok(p.stop_on(
                                ConditionType::ControlPlaneReady,
                                &format!("removing etcd member {}", member.name),
                                &e,
                            ))
                        }
                    };
                    // Removed already (a member list answered before the removal applied
                    // everywhere): nothing to report twice.
                    if removed {
                        p.event(
                            Severity::Info,
                            "EtcdMemberRemoved",
                            format!(
                                "etcd member {} ({:x}) of machine {} removed; {} member(s) left",
                                member.name,
                                member.id,
                                m.name,
                                members.len() - 1
                            ),
                        );
                    }
                }
            }
        }
        if let Some(n) = &node {
            if let Err(e) = conn.delete_node(&n.name).await {
                return Ok(p.stop_on(milestone(&m), &format!("deleting node {}", n.name), &e));
            }
            p.event(
                Severity::Info,
                "NodeDeleted",
                format!("node {} of machine {} deleted", n.name, m.name),
            );
        }
        if let Some(w) = world.workload.as_mut() {
            let node_name = node.as_ref().map(|n| n.name.clone());
            w.nodes
                .retain(|x| Some(&x.name) != node_name.as_ref() && x.name != m.name);
            if let Some(list) = w.etcd.as_mut() {
                list.retain(|e| e.name != m.name && Some(&e.name) != node_name.as_ref());
            }
        }
    }
    Ok(Step::Continue)
}

/// Removes etcd members that belong to no machine (each re-checked for quorum).
pub(super) async fn remove_stale_members(
    p: &mut Pass<'_>,
    world: &mut World,
    members: Vec<(u64, String)>,
) -> Result<Step> {
    let Some(conn) = world.conn.clone() else {
        return Ok(Step::Continue);
    };
    for (id, name) in members {
        let fresh = match conn.etcd_members().await {
            Ok(Some(l)) => l,
            Ok(None) => return Ok(Step::Continue),
            Err(e) => {
                return Ok(p.stop_on(ConditionType::ControlPlaneReady, "listing etcd members", &e))
            }
        };
        if fresh.iter().any(|e| e.id == id) && quorum_after_removal(&fresh, id) {
            match conn.remove_etcd_member(id).await {
                Ok(true) => p.event(
                    Severity::Info,
                    "EtcdMemberRemoved",
                    format!("etcd member {name} ({id:x}) belonged to no machine: removed"),
                ),
                Ok(false) => {}
                Err(e) => {
                    return Ok(p.stop_on(
                        ConditionType::ControlPlaneReady,
                        &format!("removing stale etcd member {name}"),
                        &e,
                    ))
                }
            }
        }
        if let Some(list) = world.workload.as_mut().and_then(|w| w.etcd.as_mut()) {
            list.retain(|e| e.id != id);
        }
    }
    Ok(Step::Continue)
}

/// Applies every CNI, CSI and add-on pack whose rendered revision is not the applied one
/// (server-side apply, field manager `spectro`), prunes the objects a new revision no longer
/// has, then the objects of packs that left the profile; records each pack's revision and
/// inventory in the status. A render or apply failure is shown on the workers' milestone,
/// naming the pack.
pub(super) async fn apply_packs(p: &mut Pass<'_>, world: &mut World) -> Result<Step> {
    use crate::bootstrap::manifests::{applies_to_cluster, render};
    use crate::records::status::AppliedPack;
    use crate::workload::Manifest;
    let Some(conn) = world.conn.clone() else {
        return Ok(Step::Stop(Outcome::Waiting));
    };
    let packs: Vec<crate::model::Pack> = p
        .rec
        .profile
        .packs
        .iter()
        .filter(|k| applies_to_cluster(k.layer) && !k.manifests.trim().is_empty())
        .cloned()
        .collect();
    // System packs (the cluster agent) after the profile's; no overrides apply to them.
    let system = p.inner.system_packs(p.rec.id);
    let packs: Vec<(crate::model::Pack, Option<crate::secret::Secret>)> = packs
        .into_iter()
        .map(|k| (k, None))
        .chain(system.into_iter().map(|(k, v)| (k, Some(v))))
        .collect();
    for (pack, system_values) in &packs {
        let overrides = match system_values {
            Some(v) => Some(v.expose().to_string()),
            None => p.rec.spec.pack_values.get(&pack.name).cloned(),
        };
        let rendered = match render(&p.rec.spec.name, pack, overrides.as_deref()) {
            Ok(r) => r,
            Err(e) => {
                return Ok(p.stop_on(
                    ConditionType::WorkersReady,
                    &format!("rendering pack {}", pack.name),
                    &e,
                ))
            }
        };
        let before = p.status.packs.get(&pack.name).cloned();
        if before
            .as_ref()
            .is_some_and(|b| b.revision == rendered.revision)
        {
            continue;
        }
        let objects: Vec<Manifest> = rendered
            .objects
            .iter()
            .map(|o| Manifest { object: o.clone() })
            .collect();
        if let Err(e) = conn.apply(&objects).await {
            return Ok(p.stop_on(
                ConditionType::WorkersReady,
                &format!("applying pack {} {}", pack.name, pack.version),
                &e,
            ));
        }
        let refs = rendered.refs();
        let mut pruned = 0;
        for old in before.iter().flat_map(|b| b.objects.iter()).rev() {
            if refs.contains(old) {
                continue;
            }
            match conn.delete_object(old).await {
                Ok(_) => pruned += 1,
                Err(e) => {
                    return Ok(p.stop_on(
                        ConditionType::WorkersReady,
                        &format!("pruning {old} of pack {}", pack.name),
                        &e,
                    ))
                }
            }
        }
        p.event(
            Severity::Info,
            "PackApplied",
            format!(
                "pack {} {} applied (revision {}, {} object(s){})",
                pack.name,
                pack.version,
                rendered.revision,
                refs.len(),
                if pruned > 0 {
                    format!(", {pruned} pruned")
                } else {
                    String::new()
                }
            ),
        );
        p.status.packs.insert(
            pack.name.clone(),
            AppliedPack {
                version: pack.version.clone(),
                revision: rendered.revision,
                objects: refs,
                applied_at: p.now,
            },
        );
    }
    let gone: Vec<String> = p
        .status
        .packs
        .keys()
        .filter(|k| !packs.iter().any(|(x, _)| &x.name == *k))
        .cloned()
        .collect();
    for name in gone {
        let Some(applied) = p.status.packs.get(&name).cloned() else {
            continue;
        };
        // Reverse apply order: workloads before their namespaces and CRDs.
        for old in applied.objects.iter().rev() {
            if let Err(e) = conn.delete_object(old).await {
                return Ok(p.stop_on(
                    ConditionType::WorkersReady,
                    &format!("pruning {old} of removed pack {name}"),
                    &e,
                ));
            }
        }
        p.status.packs.remove(&name);
        p.event(
            Severity::Info,
            "PackRemoved",
            format!(
                "pack {name} left the profile: its {} object(s) pruned",
                applied.objects.len()
            ),
        );
    }
    Ok(Step::Continue)
}

/// The bootstrap token's lifetime in the cluster, renewed before joins.
const TOKEN_TTL: chrono::Duration = chrono::Duration::hours(24);

/// Before machines join a running cluster: the bootstrap token (created by `kubeadm init` with
/// kubeadm's 24 h lifetime) gets a fresh expiration, so a join days later still authenticates.
/// Once per reconcile, only with a reachable workload connection; `Some(step)` stops the
/// round (the cluster refused the write).
pub(super) async fn refresh_bootstrap_token(
    p: &mut Pass<'_>,
    world: &mut World,
) -> Result<Option<Step>> {
    use base64::Engine as _;
    if world.token_refreshed {
        return Ok(None);
    }
    let Some(conn) = world.conn.clone() else {
        return Ok(None);
    };
    if p.pki.is_none() {
        p.pki = Some(super::ensure_pki(p.inner, p.rec.id).await?);
    }
    let Some(pki) = p.pki.as_ref() else {
        return Ok(None);
    };
    let token = pki.bootstrap_token.expose().to_string();
    let Some((id, secret)) = token.split_once('.') else {
        return Ok(None);
    };
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let expiration = (p.now + TOKEN_TTL).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let object = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "bootstrap.kubernetes.io/token",
        "metadata": {
            "name": format!("bootstrap-token-{id}"),
            "namespace": "kube-system",
            "labels": { crate::workload::CLUSTER_LABEL: p.rec.spec.name },
        },
        "data": {
            "description": b64("spectro node joins"),
            "token-id": b64(id),
            "token-secret": b64(secret),
            "expiration": b64(&expiration),
            "usage-bootstrap-authentication": b64("true"),
            "usage-bootstrap-signing": b64("true"),
            "auth-extra-groups": b64("system:bootstrappers:kubeadm:default-node-token"),
        },
    });
    if let Err(e) = conn.apply(&[crate::workload::Manifest { object }]).await {
        return Ok(Some(p.stop_on(
            ConditionType::WorkersReady,
            "refreshing the bootstrap token",
            &e,
        )));
    }
    world.token_refreshed = true;
    Ok(None)
}

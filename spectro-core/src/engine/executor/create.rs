//! Creating machines: names, addresses (static IPs), the durable intent, the bootstrap
//! data for the batch's role, then one create call per batch, idempotent by its token.

use std::time::Duration;

use super::super::condition::{ConditionStatus, ConditionType};
use super::super::event::{NewEvent, Severity};
use super::super::planner::CreateRequest;
use super::super::runtime::Inner;
use super::super::status::ClusterRecord;
use super::call::cloud_call;
use super::prepare::{allocate_addresses, ensure_pki, static_ip_pool, Setup};
use super::{Pass, World};
use crate::bootstrap::{self, NodeBootstrap};
use crate::error::{CoreError, Result};
use crate::model::PoolRole;
use crate::provider::{BootstrapRole, Machine, MachineBatch, ProviderError};
use crate::store::{ClusterWrite, Intent};

fn pool_condition(role: PoolRole) -> ConditionType {
    match role {
        PoolRole::ControlPlane => ConditionType::ControlPlaneReady,
        PoolRole::Worker => ConditionType::WorkersReady,
    }
}

/// A fresh machine name, unique among the cluster's machines and intents (names identify
/// machines across crashes, so a collision would hide one machine from the planner).
fn machine_name(
    inner: &Inner,
    cluster: &ClusterRecord,
    pool: &str,
    taken: &mut std::collections::HashSet<String>,
) -> String {
    let mut attempt = 0u64;
    loop {
        let suffix = inner.random.name_suffix(cluster.id, pool, attempt);
        let name = format!("{}-{pool}-{suffix}", cluster.spec.name);
        if taken.insert(name.clone()) {
            return name;
        }
        attempt += 1;
    }
}

/// Records the intent, then makes the call. The outer error is a store failure (stop); the
/// inner one a failure already shown on the pool's milestone, with the delay the cloud asked
/// for.
pub(super) async fn create(
    p: &mut Pass<'_>,
    setup: &Setup,
    req: CreateRequest,
    world: &mut World,
) -> Result<std::result::Result<Vec<Machine>, Option<Duration>>> {
    let (intents, machines) = (&mut world.intents, &world.machines);
    let Some(pool) = p.rec.spec.pool(&req.pool).cloned() else {
        // An intent of a pool that was removed meanwhile: forget it.
        if let Some((_, names)) = &req.reissue {
            p.write.remove_intents.extend(names.iter().cloned());
            intents.retain(|i| !names.contains(&i.name));
        }
        return Ok(Ok(Vec::new()));
    };
    let reissued = req.reissue.is_some();
    let (token, names, fresh) = match req.reissue {
        Some((token, names)) => (token, names, false),
        None => {
            let mut taken: std::collections::HashSet<String> = machines
                .iter()
                .map(|m| m.name.clone())
                .chain(intents.iter().map(|i| i.name.clone()))
                .collect();
            let names: Vec<String> = (0..req.count)
                .map(|_| machine_name(p.inner, &p.rec, &pool.name, &mut taken))
                .collect();
            let token = p
                .inner
                .random
                .uuid(&[p.rec.id.0.as_bytes(), names.join(",").as_bytes()]);
            (token.to_string(), names, true)
        }
    };
    let kind = pool_condition(pool.role);
    // Static IPs: allocated before the intent (idempotent per machine name; an allocation
    // whose intent never got written is collected by the next reconcile).
    let network = match static_ip_pool(&p.rec.spec, &pool, &req.zone) {
        None => Vec::new(),
        Some(ip_pool) => {
            match allocate_addresses(p.inner, p.rec.id, p.fence, &ip_pool, &names).await {
                Ok(n) => n,
                Err(
                    e @ (CoreError::PoolExhausted { .. }
                    | CoreError::PoolRestricted { .. }
                    | CoreError::NotFound { .. }),
                ) => {
                    // The engine's own failure (IPAM), shown as such: not a cloud quota.
                    p.fail(kind, "allocating node addresses", &e);
                    return Ok(Err(None));
                }
                Err(e) => return Err(e),
            }
        }
    };
    let what = match (pool.role, req.bootstrap) {
        (_, BootstrapRole::Init) => "initializing the control plane".to_string(),
        (PoolRole::ControlPlane, _) => "adding a control-plane node".to_string(),
        _ => format!("adding {} node(s) to pool {}", names.len(), pool.name),
    };
    p.condition(kind, ConditionStatus::InProgress, "Creating", &what);
    if fresh {
        let new: Vec<Intent> = names
            .iter()
            .map(|n| Intent {
                name: n.clone(),
                token: token.clone(),
                pool: pool.name.clone(),
                zone: req.zone.clone(),
                shape: req.shape.clone(),
                bootstrap: req.bootstrap,
                created_at: p.now,
            })
            .collect();
        // Durable before the cloud call: a crash after the call finds the intent again.
        let mut w = ClusterWrite::new(p.rec.id);
        w.fence = p.fence;
        w.add_intents = new.clone();
        w.events = std::mem::take(&mut p.write.events);
        w.events.push(NewEvent {
            time: p.now,
            severity: Severity::Info,
            reason: "CreatingMachines".into(),
            message: format!(
                "{what}: {} in {} (token {})",
                names.join(", "),
                if req.zone.is_empty() {
                    "the default zone"
                } else {
                    &req.zone
                },
                &token[..8]
            ),
        });
        let events = p.inner.store.commit(&w).await?;
        p.inner.published(&events);
        intents.extend(new);
    } else {
        p.event(
            Severity::Info,
            "RetryingCreate",
            format!(
                "re-issuing the create of {} with its recorded token",
                names.join(", ")
            ),
        );
    }
    let image = p
        .status
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_else(|| crate::provider::ImageRef {
            id: String::new(),
            customized: false,
        });
    let infra = p.status.infrastructure.clone().unwrap_or_default();
    let Some(endpoint) = infra.endpoint.clone() else {
        let e = CoreError::NotReady {
            cluster: p.rec.spec.name.clone(),
            what: "API endpoint",
        };
        p.fail(kind, &what, &e);
        return Ok(Err(None));
    };
    if p.pki.is_none() {
        p.pki = Some(ensure_pki(p.inner, p.rec.id).await?);
    }
    let pki = p.pki.as_ref().expect("PKI loaded above");
    // A VIP (static IPs) is served by kube-vip on the control plane.
    let text = match bootstrap::user_data_with_vip(
        &NodeBootstrap {
            // The context's spec: with the gateway's proxy when the cluster names none.
            cluster: &setup.ctx.spec,
            profile: &p.rec.profile,
            pki,
            endpoint: &endpoint,
            role: req.bootstrap,
        },
        setup.ctx.vip,
    )
    .and_then(|t| bootstrap::encode_user_data(&t, req.bootstrap, setup.provider.user_data_limit()))
    {
        Ok(t) => t,
        Err(e) => {
            // The spec cannot be rendered (pack values, user data too large): the engine's
            // own failure with its own reason, retried after a change.
            p.fail(kind, &what, &e);
            return Ok(Err(None));
        }
    };
    let batch = MachineBatch {
        token,
        pool,
        zone: req.zone,
        shape: req.shape,
        image,
        names,
        bootstrap: req.bootstrap,
        user_data: text,
        network,
    };
    let names = batch.names.clone();
    let forget = |p: &mut Pass<'_>, intents: &mut Vec<Intent>, gone: &[String]| {
        p.write.remove_intents.extend(gone.iter().cloned());
        intents.retain(|i| !gone.contains(&i.name));
    };
    let result = cloud_call(
        p,
        setup,
        "create_machines",
        setup.provider.create_machines(&setup.ctx, &infra, &batch),
    )
    .await;
    match result {
        Ok(ms) => {
            if reissued {
                // The token's outcome is known now: names it did not produce (or whose
                // machines are already gone) are no longer in flight.
                let missing: Vec<String> = names
                    .iter()
                    .filter(|n| !ms.iter().any(|m| &m.name == *n))
                    .cloned()
                    .collect();
                forget(p, intents, &missing);
            }
            p.event(
                Severity::Info,
                "MachinesCreated",
                format!(
                    "{} machine(s) created: {}",
                    ms.len(),
                    ms.iter()
                        .map(|m| format!("{} ({})", m.name, m.id))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            Ok(Ok(ms))
        }
        Err(e) => {
            if matches!(
                e,
                ProviderError::QuotaExceeded { .. }
                    | ProviderError::Terminal { .. }
                    | ProviderError::Unauthorized { .. }
            ) {
                // The cloud refused: nothing was created, nothing is in flight.
                forget(p, intents, &names);
            }
            p.fail(kind, &what, &e);
            Ok(Err(e.retry_after()))
        }
    }
}

//! Creating machines: names, addresses (static IPs), the durable intent, the bootstrap
//! data for the batch's role, then one create call per batch, idempotent by its token.

use std::time::Duration;

use super::super::condition::{ConditionStatus, ConditionType};
use super::super::event::{NewEvent, Severity};
use super::super::planner::{Action, CreateRequest};
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

/// What a create of `count` machines of `pool` is doing, for its condition and events.
fn describe(pool: &crate::model::NodePool, role: BootstrapRole, count: usize) -> String {
    match (pool.role, role) {
        (_, BootstrapRole::Init) => "initializing the control plane".to_string(),
        (PoolRole::ControlPlane, _) => "adding a control-plane node".to_string(),
        _ => format!("adding {count} node(s) to pool {}", pool.name),
    }
}

/// Records the intents of every new batch of one round in **one** write, before any of
/// their creates goes out: each request then carries its names and token as a recorded one
/// does (`reissue`), and its token is listed in `world.prepared` until its create call is
/// made. A round that stops before some of them went out forgets those at the end of the
/// reconcile ([`forget_unsent`]): no call carried their token, so nothing can exist.
pub(super) async fn record_intents(
    p: &mut Pass<'_>,
    world: &mut World,
    actions: &mut [Action],
) -> Result<()> {
    let mut taken: std::collections::HashSet<String> = world
        .machines
        .iter()
        .map(|m| m.name.clone())
        .chain(world.intents.iter().map(|i| i.name.clone()))
        .collect();
    let mut new = Vec::new();
    let mut events = Vec::new();
    for action in actions.iter_mut() {
        let Action::CreateMachines(req) = action else {
            continue;
        };
        if req.reissue.is_some() {
            continue;
        }
        let Some(pool) = p.rec.spec.pool(&req.pool) else {
            continue;
        };
        let names: Vec<String> = (0..req.count)
            .map(|_| machine_name(p.inner, &p.rec, &pool.name, &mut taken))
            .collect();
        let token = p
            .inner
            .random
            .uuid(&[p.rec.id.0.as_bytes(), names.join(",").as_bytes()])
            .to_string();
        events.push(NewEvent {
            time: p.now,
            severity: Severity::Info,
            reason: "CreatingMachines".into(),
            message: format!(
                "{}: {} in {} (token {})",
                describe(pool, req.bootstrap, names.len()),
                names.join(", "),
                if req.zone.is_empty() {
                    "the default zone"
                } else {
                    &req.zone
                },
                &token[..8]
            ),
        });
        new.extend(names.iter().map(|n| Intent {
            name: n.clone(),
            token: token.clone(),
            pool: pool.name.clone(),
            zone: req.zone.clone(),
            shape: req.shape.clone(),
            bootstrap: req.bootstrap,
            created_at: p.now,
        }));
        world.prepared.push(token.clone());
        req.reissue = Some((token, names));
    }
    if new.is_empty() {
        return Ok(());
    }
    // Durable before the cloud calls: a crash after a call finds its intent again.
    let mut w = ClusterWrite::new(p.rec.id);
    w.fence = p.fence;
    w.add_intents = new.clone();
    if p.rec.status.infrastructure.is_none() && p.status.infrastructure.is_some() {
        // The cluster's first creates: the infrastructure they build on is recorded with
        // them, so a cluster whose stored status has none has no machine (`observe`).
        w.status = Some(p.status.clone());
    }
    w.events = std::mem::take(&mut p.write.events);
    w.events.extend(events);
    let written = p.inner.store.commit(&w).await?;
    p.inner.published(&written);
    world.intents.extend(new);
    Ok(())
}

/// Forgets the intents recorded by [`record_intents`] whose create never went out (the
/// round stopped before it).
pub(super) fn forget_unsent(p: &mut Pass<'_>, world: &mut World) {
    for token in std::mem::take(&mut world.prepared) {
        let names: Vec<String> = world
            .intents
            .iter()
            .filter(|i| i.token == token)
            .map(|i| i.name.clone())
            .collect();
        world.intents.retain(|i| i.token != token);
        p.write.remove_intents.extend(names);
    }
}

/// Makes the create call of a batch whose intent is recorded (by [`record_intents`], or by
/// an earlier reconcile: then it is re-issued with its token). The outer error is a store
/// failure (stop); the inner one a failure already shown on the pool's milestone, with the
/// delay the cloud asked for.
pub(super) async fn create(
    p: &mut Pass<'_>,
    setup: &Setup,
    mut req: CreateRequest,
    world: &mut World,
) -> Result<std::result::Result<Vec<Machine>, Option<Duration>>> {
    if req.reissue.is_none() {
        let mut one = [Action::CreateMachines(req)];
        record_intents(p, world, &mut one).await?;
        let [Action::CreateMachines(r)] = one else {
            return Ok(Ok(Vec::new()));
        };
        req = r;
    }
    let Some((token, names)) = req.reissue.clone() else {
        // Its pool was removed meanwhile: nothing to record, nothing to create.
        return Ok(Ok(Vec::new()));
    };
    let intents = &mut world.intents;
    let Some(pool) = p.rec.spec.pool(&req.pool).cloned() else {
        // An intent of a pool that was removed meanwhile: forget it.
        p.write.remove_intents.extend(names.iter().cloned());
        intents.retain(|i| !names.contains(&i.name));
        return Ok(Ok(Vec::new()));
    };
    // Recorded in this reconcile (its event said so), or re-issued from an earlier one.
    let fresh = world.prepared.contains(&token);
    let reissued = !fresh;
    let kind = pool_condition(pool.role);
    // Static IPs: allocated after the intent, idempotent per machine name (a re-issue gets
    // the same addresses; an address whose intent is forgotten is collected by the next
    // reconcile).
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
    let what = describe(&pool, req.bootstrap, names.len());
    p.condition(kind, ConditionStatus::InProgress, "Creating", &what);
    if reissued {
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
    let rendered = p
        .user_data
        .iter()
        .find(|(role, at, _)| *role == req.bootstrap && *at == endpoint)
        .map(|(_, _, text)| text.clone());
    let text = match rendered {
        Some(text) => text,
        // A VIP (static IPs) is served by kube-vip on the control plane.
        None => match bootstrap::user_data_with_vip(
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
        .and_then(|t| {
            bootstrap::encode_user_data(&t, req.bootstrap, setup.provider.user_data_limit())
        }) {
            Ok(t) => {
                p.user_data
                    .push((req.bootstrap, endpoint.clone(), t.clone()));
                t
            }
            Err(e) => {
                // The spec cannot be rendered (pack values, user data too large): the
                // engine's own failure with its own reason, retried after a change.
                p.fail(kind, &what, &e);
                return Ok(Err(None));
            }
        },
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
        first_attempt: fresh,
    };
    let names = batch.names.clone();
    // The call goes out now: from here on its token may have created something.
    world.prepared.retain(|t| *t != batch.token);
    let intents = &mut world.intents;
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

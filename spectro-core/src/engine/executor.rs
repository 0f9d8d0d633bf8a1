//! The executor: one reconcile of one cluster. Observes the cloud, plans, runs the actions,
//! and commits status, intents and events in one write.
//!
//! Crash safety: before every machine create the intent (names + idempotency token) is
//! committed; the create carries the token; the next reconcile after a crash observes the
//! machines by tag (intent resolved) or re-issues the create with the same token (the cloud
//! returns what that token created). A crash anywhere therefore neither duplicates nor leaks.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::condition::{set_condition, ConditionStatus, ConditionType};
use super::event::{NewEvent, Severity};
use super::planner::{plan, Action, Assessment, CreateRequest, DeleteReason, PlanInput};
use super::status::{
    ClusterRecord, ClusterStatus, Lifecycle, PendingProfileUpdate, Phase, ResolvedImage,
};
use super::Inner;
use crate::bootstrap::{self, ClusterPki, NodeBootstrap};
use crate::error::{CoreError, Result};
use crate::model::{CloudAccount, PoolRole};
use crate::provider::{
    BootstrapRole, ClusterContext, ClusterId, Machine, MachineBatch, ProviderError,
};
use crate::secret::with_secrets_revealed;
use crate::store::{ClusterWrite, Intent, ObjectKind};

/// Most plan/execute rounds in one reconcile.
const MAX_ROUNDS: usize = 16;

/// What to do with the cluster after a reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Converged: resync later.
    Converged,
    /// Waiting on the cloud (booting, deleting): look again soon.
    Waiting,
    /// More to do right away.
    Progress,
    /// The last step failed: back off (or wait the throttle delay).
    Failed(Option<Duration>),
    /// Nothing more to do ever (deleted, or unknown).
    Finished,
}

struct Pass<'a> {
    inner: &'a Inner,
    fence: Option<u64>,
    pki: Option<ClusterPki>,
    rec: ClusterRecord,
    status: ClusterStatus,
    write: ClusterWrite,
    now: DateTime<Utc>,
    failed: Option<ConditionType>,
}

impl Pass<'_> {
    fn event(&mut self, severity: Severity, reason: &str, message: impl Into<String>) {
        self.write.events.push(NewEvent {
            time: self.now,
            severity,
            reason: reason.to_string(),
            message: message.into(),
        });
    }

    fn condition(&mut self, kind: ConditionType, status: ConditionStatus, reason: &str, msg: &str) {
        set_condition(
            &mut self.status.conditions,
            kind,
            status,
            reason,
            msg,
            self.now,
        );
    }

    fn fail(&mut self, kind: ConditionType, what: &str, e: &ProviderError) {
        let severity = match e {
            ProviderError::Retryable { .. } | ProviderError::Throttled { .. } => Severity::Warning,
            _ => Severity::Error,
        };
        let msg = format!("{what}: {e}");
        self.condition(kind, ConditionStatus::Failed, e.reason(), &e.to_string());
        self.event(severity, e.reason(), &msg);
        self.status.last_error = Some(msg);
        self.failed = Some(kind);
    }
}

/// The milestone being worked on: where a failure that belongs to no step is shown.
fn active_condition(status: &ClusterStatus, deleting: bool) -> ConditionType {
    if deleting {
        return ConditionType::Deleted;
    }
    status
        .conditions
        .iter()
        .find(|c| c.status != ConditionStatus::Succeeded)
        .map_or(
            if status.infrastructure.as_ref().is_some_and(|i| i.ready) {
                ConditionType::WorkersReady
            } else {
                ConditionType::InfrastructureReady
            },
            |c| c.kind,
        )
}

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

/// The cluster's PKI: loaded, or generated and stored once (a concurrent generator loses the
/// race on the revision and reads the winner's).
pub(crate) async fn ensure_pki(inner: &Inner, id: ClusterId) -> Result<ClusterPki> {
    let key = id.to_string();
    for _ in 0..2 {
        if let Some(o) = inner.store.get_object(ObjectKind::ClusterPki, &key).await? {
            return serde_json::from_value(o.body).map_err(|source| CoreError::Corrupt {
                what: "cluster PKI",
                source,
            });
        }
        let pki = ClusterPki::generate()?;
        let body = with_secrets_revealed(|| serde_json::to_value(&pki)).map_err(|source| {
            CoreError::Corrupt {
                what: "cluster PKI",
                source,
            }
        })?;
        match inner
            .store
            .put_object(ObjectKind::ClusterPki, &key, &body, Some(0))
            .await
        {
            Ok(_) => return Ok(pki),
            Err(CoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(CoreError::InvalidState(format!(
        "the PKI of cluster {id} keeps changing"
    )))
}

/// The IP pool serving a node pool's fault domain, for static-IP (vSphere) clusters.
fn static_ip_pool(
    spec: &crate::model::Cluster,
    pool: &crate::model::NodePool,
    zone: &str,
) -> Option<String> {
    match &spec.cloud {
        crate::model::CloudPlacement::Vsphere(v)
            if v.ip_allocation == crate::model::IpAllocation::Static =>
        {
            pool.placement_for(zone)
                .or_else(|| pool.placements.first())
                .and_then(|d| d.ip_pool.clone())
        }
        _ => None,
    }
}

async fn load_ip_pool(inner: &Inner, name: &str) -> Result<crate::model::IpPool> {
    let obj = inner
        .store
        .get_object(ObjectKind::IpPool, name)
        .await?
        .ok_or_else(|| CoreError::NotFound {
            kind: "IP pool",
            name: name.to_string(),
        })?;
    serde_json::from_value(obj.body).map_err(|source| CoreError::Corrupt {
        what: "IP pool",
        source,
    })
}

/// Allocates (idempotently, by owner) one address per owner from an IP pool.
async fn allocate_addresses(
    inner: &Inner,
    cluster: ClusterId,
    pool_name: &str,
    owners: &[String],
) -> Result<Vec<crate::provider::NodeNetwork>> {
    let pool = load_ip_pool(inner, pool_name).await?;
    let range = crate::ipam::PoolRange::of(&pool).ok_or_else(|| CoreError::Invalid {
        kind: format!("IP pool {pool_name}"),
        violations: crate::validate::validate_ip_pool(&pool),
    })?;
    let mut out = Vec::with_capacity(owners.len());
    for owner in owners {
        let offset = inner
            .store
            .allocate_ip(&crate::store::IpRequest {
                pool: pool.name.clone(),
                range: range.clone(),
                cluster,
                owner: owner.clone(),
                restrict_to_single_cluster: pool.restrict_to_single_cluster,
            })
            .await?;
        out.push(crate::provider::NodeNetwork {
            address: range.address(offset),
            prefix: pool.prefix,
            gateway: pool.gateway,
            nameservers: pool.nameservers.clone(),
        });
    }
    Ok(out)
}

/// Owner name of a cluster's control-plane VIP in its IP pool.
pub(crate) const VIP_OWNER: &str = "vip";

pub(crate) async fn load_account(inner: &Inner, name: &str) -> Result<CloudAccount> {
    let obj = inner
        .store
        .get_object(ObjectKind::CloudAccount, name)
        .await?
        .ok_or_else(|| CoreError::NotFound {
            kind: "cloud account",
            name: name.to_string(),
        })?;
    serde_json::from_value(obj.body).map_err(|source| CoreError::Corrupt {
        what: "cloud account",
        source,
    })
}

/// Reconciles one cluster once.
pub(crate) async fn reconcile(inner: &Inner, id: ClusterId, fence: Option<u64>) -> Result<Outcome> {
    let Some(rec) = inner.store.get_cluster(id).await? else {
        return Ok(Outcome::Finished);
    };
    if rec.status.phase == Phase::Deleted {
        return Ok(Outcome::Finished);
    }
    let now = inner.clock.now();
    let mut write = ClusterWrite::new(id);
    write.fence = fence;
    let mut pass = Pass {
        inner,
        fence,
        pki: None,
        status: rec.status.clone(),
        write,
        rec,
        now,
        failed: None,
    };
    let outcome = run(&mut pass).await;
    let outcome = match outcome {
        Ok(o) => o,
        Err(e @ CoreError::Fenced { .. }) => return Err(e),
        Err(e) => {
            // Setup failures (missing account, no provider): shown, retried with backoff.
            let msg = e.to_string();
            pass.status.last_error = Some(msg.clone());
            let kind = active_condition(&pass.status, pass.rec.lifecycle.is_deleting());
            pass.condition(kind, ConditionStatus::Failed, "ConfigurationError", &msg);
            pass.event(Severity::Error, "ConfigurationError", msg);
            Outcome::Failed(None)
        }
    };
    if pass.status != pass.rec.status {
        pass.write.status = Some(pass.status.clone());
    }
    if !pass.write.is_empty() {
        let events = inner.store.commit(&pass.write).await?;
        inner.published(&events);
    }
    Ok(outcome)
}

/// Keeps `status.profile_update` equal to the pending profile update, with an event when one
/// becomes available and when it has been applied.
async fn note_profile_update(p: &mut Pass<'_>) -> Result<()> {
    let notification = super::update::pending(&p.inner.store, &p.rec)
        .await?
        .and_then(|(target, rev)| super::update::notification(&p.rec, &target, rev));
    let now = notification.as_ref().map(|n| PendingProfileUpdate {
        profile: n.to.clone(),
        revision: n.to_revision,
    });
    if now == p.status.profile_update {
        return Ok(());
    }
    match (&notification, p.status.profile_update.take()) {
        (Some(n), _) => p.event(Severity::Info, "ProfileUpdateAvailable", n.summary()),
        (None, Some(old))
            if p.rec.profile.reference() == old.profile
                && p.rec.profile_revision >= old.revision =>
        {
            p.event(
                Severity::Info,
                "ProfileUpdateApplied",
                format!(
                    "profile {} (revision {}) applied",
                    old.profile, old.revision
                ),
            )
        }
        _ => {}
    }
    p.status.profile_update = now;
    Ok(())
}

async fn run(p: &mut Pass<'_>) -> Result<Outcome> {
    let cloud = p.rec.spec.cloud_type();
    let provider = p
        .inner
        .providers
        .get(&cloud)
        .cloned()
        .ok_or(CoreError::NoProvider(cloud))?;
    let account = load_account(p.inner, &p.rec.spec.cloud_account).await?;
    let deleting = p.rec.lifecycle.is_deleting();
    // Static-IP clusters: the API endpoint is a VIP from the control-plane pool's IP pool.
    let vip = match p
        .rec
        .spec
        .control_plane()
        .and_then(|cp| static_ip_pool(&p.rec.spec, cp, ""))
    {
        Some(pool) if !deleting => {
            let net =
                allocate_addresses(p.inner, p.rec.id, &pool, &[VIP_OWNER.to_string()]).await?;
            net.first().map(|n| n.address)
        }
        _ => None,
    };
    let mut ctx = ClusterContext {
        cluster_id: p.rec.id,
        spec: p.rec.spec.clone(),
        profile: p.rec.profile.clone(),
        account,
        vip,
        image: p.status.image.as_ref().map(|i| i.image.clone()),
    };
    if !deleting {
        note_profile_update(p).await?;
    }
    if deleting && p.status.phase != Phase::Deleting {
        let why = if p.rec.lifecycle == Lifecycle::Aborting {
            "provisioning aborted: deleting everything created so far"
        } else {
            "deleting the cluster"
        };
        p.event(Severity::Info, "Deleting", why);
        p.condition(
            ConditionType::Deleted,
            ConditionStatus::InProgress,
            "Deleting",
            why,
        );
    }

    // Observe.
    let mut machines = match provider.list_machines(&ctx).await {
        Ok(m) => m,
        Err(e) => {
            let kind = active_condition(&p.status, deleting);
            p.fail(kind, "listing machines", &e);
            return Ok(Outcome::Failed(e.retry_after()));
        }
    };
    let mut intents = p.inner.store.intents(p.rec.id).await?;
    intents.retain(|i| {
        let seen = machines.iter().any(|m| m.name == i.name);
        if seen {
            p.write.remove_intents.push(i.name.clone());
        }
        !seen
    });

    if vip.is_some() && p.inner.may_act(p.rec.id) {
        // Addresses whose machine neither exists nor is about to (a crash between the
        // allocation and the intent) go back to the pool.
        let orphans: Vec<String> = p
            .inner
            .store
            .ip_leases(None, Some(p.rec.id))
            .await?
            .into_iter()
            .map(|l| l.owner)
            .filter(|o| {
                o != VIP_OWNER
                    && !machines.iter().any(|m| &m.name == o)
                    && !intents.iter().any(|i| &i.name == o)
            })
            .collect();
        if !orphans.is_empty() {
            let n = p.inner.store.release_ips(p.rec.id, Some(&orphans)).await?;
            p.event(
                Severity::Info,
                "AddressesReleased",
                format!("{n} address(es) of machines that were never created returned to the pool"),
            );
        }
    }

    let infra_age = p
        .status
        .infrastructure_checked
        .map(|t| p.now.signed_duration_since(t).to_std().unwrap_or_default());
    let mut infra_stale = p.status.infrastructure_generation != p.rec.generation
        || infra_age.is_none_or(|a| a > p.inner.config.infra_resync);
    let mut infra_deleted = false;
    let mut assessment = Assessment::default();
    let mut outcome = None;
    let mut idle = false;

    for _ in 0..MAX_ROUNDS {
        let input = PlanInput {
            spec: &p.rec.spec,
            profile: &p.rec.profile,
            lifecycle: p.rec.lifecycle,
            image: p.status.image.as_ref(),
            infra: p.status.infrastructure.as_ref(),
            infra_stale,
            machines: &machines,
            intents: &intents,
            now: p.now,
            machine_timeout: p.inner.config.machine_timeout,
            infra_deleted,
        };
        let plan = plan(&input);
        assessment = plan.assessment;
        if plan.actions.is_empty() {
            idle = true;
            break;
        }
        let mut stop = false;
        for action in plan.actions {
            if !p.inner.may_act(p.rec.id) {
                // Replica that could not renew its leases lately: no more side effects.
                outcome = Some(Outcome::Waiting);
                stop = true;
                break;
            }
            match action {
                Action::EnsureImage { spec } => {
                    let spec = *spec;
                    let custom = spec.customization.is_some();
                    if custom {
                        p.condition(
                            ConditionType::ImageCustomized,
                            ConditionStatus::InProgress,
                            "Customizing",
                            "building a custom image from the OS pack",
                        );
                    }
                    match provider.ensure_image(&ctx, &spec).await {
                        Ok(image) => {
                            p.event(
                                Severity::Info,
                                if image.customized {
                                    "ImageCustomized"
                                } else {
                                    "ImageResolved"
                                },
                                format!(
                                    "image {} for {} {} + Kubernetes {}",
                                    image.id,
                                    spec.os.name,
                                    spec.os.version,
                                    spec.kubernetes.version
                                ),
                            );
                            ctx.image = Some(image.clone());
                            p.status.image = Some(ResolvedImage {
                                signature: spec.signature.clone(),
                                image,
                            });
                        }
                        Err(e) => {
                            let kind = if custom {
                                ConditionType::ImageCustomized
                            } else {
                                ConditionType::InfrastructureReady
                            };
                            p.fail(kind, "resolving the image", &e);
                            outcome = Some(Outcome::Failed(e.retry_after()));
                            stop = true;
                        }
                    }
                }
                Action::EnsureInfrastructure => {
                    let was_ready = p.status.infrastructure.as_ref().is_some_and(|i| i.ready);
                    if !was_ready {
                        p.condition(
                            ConditionType::InfrastructureReady,
                            ConditionStatus::InProgress,
                            "Creating",
                            "creating network, API endpoint and security groups",
                        );
                    }
                    match provider.ensure_infrastructure(&ctx).await {
                        Ok(infra) => {
                            infra_stale = false;
                            p.status.infrastructure_checked = Some(p.now);
                            if infra.ready {
                                p.status.infrastructure_generation = p.rec.generation;
                            }
                            if infra.ready && !was_ready {
                                p.event(
                                    Severity::Info,
                                    "InfrastructureReady",
                                    format!(
                                        "{} resources ready, API endpoint {}",
                                        infra.resources.len(),
                                        infra.endpoint.as_deref().unwrap_or("-")
                                    ),
                                );
                            } else if !infra.ready {
                                let before = p.status.infrastructure.as_ref().map(|i| &i.message);
                                if before != Some(&infra.message) {
                                    p.event(
                                        Severity::Info,
                                        "InfrastructurePending",
                                        infra.message.clone().unwrap_or_else(|| "waiting".into()),
                                    );
                                }
                                outcome = Some(Outcome::Waiting);
                                stop = true;
                            }
                            p.status.infrastructure = Some(infra);
                        }
                        Err(e) => {
                            p.fail(
                                ConditionType::InfrastructureReady,
                                "creating infrastructure",
                                &e,
                            );
                            outcome = Some(Outcome::Failed(e.retry_after()));
                            stop = true;
                        }
                    }
                }
                Action::CreateMachines(req) => {
                    match create(p, &*provider, &ctx, req, &mut intents, &machines).await? {
                        Ok(created) => {
                            // Intents stay until the listing shows the machines (a cloud
                            // whose listing lags would otherwise see neither).
                            for m in created {
                                if !machines.iter().any(|x| x.name == m.name) {
                                    machines.push(m);
                                }
                            }
                        }
                        Err(e) => {
                            outcome = Some(Outcome::Failed(e.retry_after()));
                            stop = true;
                        }
                    }
                }
                Action::DeleteMachines {
                    machines: victims,
                    reason,
                } => {
                    let kind = if reason == DeleteReason::ClusterDeleted {
                        ConditionType::Deleted
                    } else if victims.iter().any(|m| m.role == PoolRole::ControlPlane) {
                        ConditionType::ControlPlaneReady
                    } else {
                        ConditionType::WorkersReady
                    };
                    match provider.delete_machines(&ctx, &victims).await {
                        Ok(()) => {
                            let names: Vec<&str> =
                                victims.iter().map(|m| m.name.as_str()).collect();
                            p.event(
                                Severity::Info,
                                "MachinesDeleted",
                                format!(
                                    "deleting {} machine(s) ({reason:?}): {}",
                                    victims.len(),
                                    names.join(", ")
                                ),
                            );
                            let gone: Vec<String> =
                                victims.iter().map(|m| m.name.clone()).collect();
                            let released = p.inner.store.release_ips(p.rec.id, Some(&gone)).await?;
                            if released > 0 {
                                p.event(
                                    Severity::Info,
                                    "AddressesReleased",
                                    format!("{released} address(es) returned to the pool"),
                                );
                            }
                            machines.retain(|m| !victims.iter().any(|v| v.id == m.id));
                            if reason == DeleteReason::ClusterDeleted {
                                // Give the cloud time to terminate before the network goes.
                                outcome = Some(Outcome::Waiting);
                                stop = true;
                            }
                        }
                        Err(e) => {
                            p.fail(kind, "deleting machines", &e);
                            outcome = Some(Outcome::Failed(e.retry_after()));
                            stop = true;
                        }
                    }
                }
                Action::DeleteInfrastructure => match provider.delete_infrastructure(&ctx).await {
                    Ok(ds) if ds.done => {
                        infra_deleted = true;
                        p.event(
                            Severity::Info,
                            "InfrastructureDeleted",
                            "network, endpoint and security groups deleted",
                        );
                    }
                    Ok(ds) => {
                        let left: Vec<String> = ds
                            .remaining
                            .iter()
                            .map(|r| format!("{} {}", r.kind, r.id))
                            .collect();
                        p.event(
                            Severity::Info,
                            "InfrastructureDeleting",
                            format!(
                                "{} resource(s) left: {}{}",
                                left.len(),
                                left.join(", "),
                                ds.message.map(|m| format!(" ({m})")).unwrap_or_default()
                            ),
                        );
                        outcome = Some(Outcome::Waiting);
                        stop = true;
                    }
                    Err(e) => {
                        p.fail(ConditionType::Deleted, "deleting infrastructure", &e);
                        outcome = Some(Outcome::Failed(e.retry_after()));
                        stop = true;
                    }
                },
                Action::Finalize => {
                    // The CA keys outlive nothing they protected.
                    p.inner
                        .store
                        .delete_object(ObjectKind::ClusterPki, &p.rec.id.to_string())
                        .await?;
                    p.inner.store.release_ips(p.rec.id, None).await?;
                    p.write.clear_intents = true;
                    p.status.phase = Phase::Deleted;
                    p.status.pools.clear();
                    p.status.infrastructure = None;
                    p.status.last_error = None;
                    p.condition(
                        ConditionType::Deleted,
                        ConditionStatus::Succeeded,
                        "Deleted",
                        "every cloud resource of the cluster is gone",
                    );
                    p.event(
                        Severity::Info,
                        "ClusterDeleted",
                        "every cloud resource of the cluster is gone",
                    );
                    return Ok(Outcome::Finished);
                }
            }
            if stop {
                break;
            }
        }
        if stop {
            break;
        }
    }

    apply_assessment(p, &assessment);
    if let Some(o) = outcome {
        return Ok(o);
    }
    if assessment.converged {
        Ok(Outcome::Converged)
    } else if assessment.waiting || deleting || idle {
        // Nothing to do but not converged either: look again later, never spin.
        Ok(Outcome::Waiting)
    } else {
        Ok(Outcome::Progress)
    }
}

/// Records the intent, then makes the call. The outer error is a store failure (stop), the
/// inner one the cloud's.
async fn create(
    p: &mut Pass<'_>,
    provider: &dyn crate::provider::CloudProvider,
    ctx: &ClusterContext,
    req: CreateRequest,
    intents: &mut Vec<Intent>,
    machines: &[Machine],
) -> Result<std::result::Result<Vec<Machine>, ProviderError>> {
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
        Some(ip_pool) => match allocate_addresses(p.inner, p.rec.id, &ip_pool, &names).await {
            Ok(n) => n,
            Err(
                e @ (CoreError::PoolExhausted { .. }
                | CoreError::PoolRestricted { .. }
                | CoreError::NotFound { .. }),
            ) => {
                let e = ProviderError::quota_exceeded(e.to_string()).with_source(e);
                p.fail(kind, "allocating node addresses", &e);
                return Ok(Err(e));
            }
            Err(e) => return Err(e),
        },
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
        let e = ProviderError::retryable("the infrastructure reports no API endpoint yet");
        p.fail(kind, &what, &e);
        return Ok(Err(e));
    };
    if p.pki.is_none() {
        p.pki = Some(ensure_pki(p.inner, p.rec.id).await?);
    }
    let pki = p.pki.as_ref().expect("PKI loaded above");
    // A VIP (static IPs) is served by kube-vip on the control plane.
    let text = match bootstrap::user_data_with_vip(
        &NodeBootstrap {
            cluster: &p.rec.spec,
            profile: &p.rec.profile,
            pki,
            endpoint: &endpoint,
            role: req.bootstrap,
        },
        ctx.vip,
    )
    .and_then(|t| bootstrap::encode_user_data(&t, req.bootstrap, provider.user_data_limit()))
    {
        Ok(t) => t,
        Err(e) => {
            // The spec cannot be rendered: shown on the milestone, retried after a change.
            let e = ProviderError::terminal(e.to_string()).with_source(e);
            p.fail(kind, &what, &e);
            return Ok(Err(e));
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
    match provider.create_machines(ctx, &infra, &batch).await {
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
            Ok(Err(e))
        }
    }
}

fn apply_assessment(p: &mut Pass<'_>, a: &Assessment) {
    let skip = p.failed;
    let set = |p: &mut Pass<'_>, kind, status, reason: &str, msg: &str| {
        if skip != Some(kind) {
            p.condition(kind, status, reason, msg);
        }
    };
    if p.rec.lifecycle.is_deleting() {
        if p.status.phase != Phase::Deleted {
            p.status.phase = Phase::Deleting;
        }
        return;
    }
    if a.customization && a.image_ready {
        set(
            p,
            ConditionType::ImageCustomized,
            ConditionStatus::Succeeded,
            "Ready",
            "custom image ready",
        );
    }
    if a.infra_ready {
        set(
            p,
            ConditionType::InfrastructureReady,
            ConditionStatus::Succeeded,
            "Ready",
            "infrastructure ready",
        );
    }
    if a.infra_ready && a.image_ready {
        for (kind, prog, what) in [
            (
                ConditionType::ControlPlaneReady,
                &a.control_plane,
                "control-plane",
            ),
            (ConditionType::WorkersReady, &a.workers, "worker"),
        ] {
            let mut msg = format!("{}/{} {what} nodes ready", prog.ready, prog.desired);
            if prog.outdated > 0 {
                msg.push_str(&format!(", {} being replaced", prog.outdated));
            }
            let (status, reason) = if prog.done {
                (ConditionStatus::Succeeded, "Ready")
            } else {
                (ConditionStatus::InProgress, "Provisioning")
            };
            set(p, kind, status, reason, &msg);
        }
        p.status.pools = a.pools.clone();
    }
    if a.converged && p.failed.is_none() {
        if p.status.phase != Phase::Running {
            p.event(
                Severity::Info,
                "Running",
                format!("cluster is running (generation {})", p.rec.generation),
            );
        }
        p.status.phase = Phase::Running;
        p.status.provisioned = true;
        p.status.observed_generation = p.rec.generation;
        p.status.last_error = None;
    } else if p.status.provisioned {
        p.status.phase = Phase::Updating;
    } else {
        p.status.phase = Phase::Provisioning;
    }
}

//! One function per planned action. Each makes its cloud call through [`cloud_call`],
//! records what happened (status, conditions, events) and says whether the round goes on.

use super::super::condition::{ConditionStatus, ConditionType};
use super::super::event::Severity;
use super::super::planner::{Action, CreateRequest, DeleteReason};
use super::super::status::{Phase, ResolvedImage};
use super::call::cloud_call;
use super::prepare::Setup;
use super::{create, Outcome, Pass, Step, World};
use crate::error::Result;
use crate::model::PoolRole;
use crate::provider::{ImageSpec, Machine};
use crate::store::ObjectKind;

/// Runs one action. `Err` only for store failures (the reconcile stops, nothing is lost).
pub(super) async fn execute(
    p: &mut Pass<'_>,
    setup: &mut Setup,
    world: &mut World,
    action: Action,
) -> Result<Step> {
    match action {
        Action::EnsureImage { spec } => Ok(ensure_image(p, setup, *spec).await),
        Action::EnsureInfrastructure => Ok(ensure_infrastructure(p, setup, world).await),
        Action::CreateMachines(req) => create_machines(p, setup, world, req).await,
        Action::DeleteMachines { machines, reason } => {
            delete_machines(p, setup, world, machines, reason).await
        }
        Action::DetachNodes { machines, reason } => {
            super::nodes::detach(p, world, machines, reason).await
        }
        Action::ApplyPacks => super::nodes::apply_packs(p, world).await,
        Action::RemoveEtcdMembers { members } => {
            super::nodes::remove_stale_members(p, world, members).await
        }
        Action::DeleteInfrastructure => Ok(delete_infrastructure(p, setup, world).await),
        Action::Finalize => finalize(p).await,
    }
}

async fn ensure_image(p: &mut Pass<'_>, setup: &mut Setup, spec: ImageSpec) -> Step {
    let custom = spec.customization.is_some();
    if custom {
        p.condition(
            ConditionType::ImageCustomized,
            ConditionStatus::InProgress,
            "Customizing",
            "building a custom image from the OS pack",
        );
    }
    let result = cloud_call(
        p,
        setup,
        "ensure_image",
        setup.provider.ensure_image(&setup.ctx, &spec),
    )
    .await;
    match result {
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
                    image.id, spec.os.name, spec.os.version, spec.kubernetes.version
                ),
            );
            setup.ctx.image = Some(image.clone());
            p.status.image = Some(ResolvedImage {
                signature: spec.signature.clone(),
                image,
            });
            Step::Continue
        }
        Err(e) => {
            let kind = if custom {
                ConditionType::ImageCustomized
            } else {
                ConditionType::InfrastructureReady
            };
            p.stop_on(kind, "resolving the image", &e)
        }
    }
}

async fn ensure_infrastructure(p: &mut Pass<'_>, setup: &Setup, world: &mut World) -> Step {
    let was_ready = p.status.infrastructure.as_ref().is_some_and(|i| i.ready);
    if !was_ready {
        p.condition(
            ConditionType::InfrastructureReady,
            ConditionStatus::InProgress,
            "Creating",
            "creating network, API endpoint and security groups",
        );
    }
    let result = cloud_call(
        p,
        setup,
        "ensure_infrastructure",
        setup.provider.ensure_infrastructure(&setup.ctx),
    )
    .await;
    let infra = match result {
        Ok(infra) => infra,
        Err(e) => {
            return p.stop_on(
                ConditionType::InfrastructureReady,
                "creating infrastructure",
                &e,
            )
        }
    };
    world.infra_stale = false;
    p.status.infrastructure_checked = Some(p.now);
    if infra.ready {
        p.status.infrastructure_generation = p.rec.generation;
    }
    let mut step = Step::Continue;
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
        step = Step::Stop(Outcome::Waiting);
    }
    p.status.infrastructure = Some(infra);
    step
}

async fn create_machines(
    p: &mut Pass<'_>,
    setup: &Setup,
    world: &mut World,
    req: CreateRequest,
) -> Result<Step> {
    if req.bootstrap != crate::provider::BootstrapRole::Init {
        if let Some(step) = super::nodes::refresh_bootstrap_token(p, world).await? {
            return Ok(step);
        }
    }
    match create::create(p, setup, req, world).await? {
        Ok(created) => {
            // Intents stay until the listing shows the machines (a cloud whose listing lags
            // would otherwise see neither).
            for m in created {
                if !world.machines.iter().any(|x| x.name == m.name) {
                    world.machines.push(m);
                }
            }
            Ok(Step::Continue)
        }
        Err(retry_after) => Ok(Step::Stop(Outcome::Failed(retry_after))),
    }
}

async fn delete_machines(
    p: &mut Pass<'_>,
    setup: &Setup,
    world: &mut World,
    victims: Vec<Machine>,
    reason: DeleteReason,
) -> Result<Step> {
    let kind = if reason == DeleteReason::ClusterDeleted {
        ConditionType::Deleted
    } else if victims.iter().any(|m| m.role == PoolRole::ControlPlane) {
        ConditionType::ControlPlaneReady
    } else {
        ConditionType::WorkersReady
    };
    let result = cloud_call(
        p,
        setup,
        "delete_machines",
        setup.provider.delete_machines(&setup.ctx, &victims),
    )
    .await;
    if let Err(e) = result {
        return Ok(p.stop_on(kind, "deleting machines", &e));
    }
    let names: Vec<&str> = victims.iter().map(|m| m.name.as_str()).collect();
    p.event(
        Severity::Info,
        "MachinesDeleted",
        format!(
            "deleting {} machine(s) ({reason:?}): {}",
            victims.len(),
            names.join(", ")
        ),
    );
    let gone: Vec<String> = victims.iter().map(|m| m.name.clone()).collect();
    let released = p
        .inner
        .store
        .release_ips(p.rec.id, Some(&gone), p.fence)
        .await?;
    if released > 0 {
        p.event(
            Severity::Info,
            "AddressesReleased",
            format!("{released} address(es) returned to the pool"),
        );
    }
    world
        .machines
        .retain(|m| !victims.iter().any(|v| v.id == m.id));
    if reason == DeleteReason::ClusterDeleted {
        // Give the cloud time to terminate before the network goes.
        return Ok(Step::Stop(Outcome::Waiting));
    }
    Ok(Step::Continue)
}

async fn delete_infrastructure(p: &mut Pass<'_>, setup: &Setup, world: &mut World) -> Step {
    let result = cloud_call(
        p,
        setup,
        "delete_infrastructure",
        setup.provider.delete_infrastructure(&setup.ctx),
    )
    .await;
    match result {
        Ok(ds) if ds.done => {
            world.infra_deleted = true;
            p.event(
                Severity::Info,
                "InfrastructureDeleted",
                "network, endpoint and security groups deleted",
            );
            Step::Continue
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
            Step::Stop(Outcome::Waiting)
        }
        Err(e) => p.stop_on(ConditionType::Deleted, "deleting infrastructure", &e),
    }
}

async fn finalize(p: &mut Pass<'_>) -> Result<Step> {
    // The CA keys outlive nothing they protected. Not fenced: Finalize runs only on a
    // deleting cluster (a lifecycle that never turns back) whose machines and
    // infrastructure are gone, and nothing uses the PKI of such a cluster again (no create
    // renders user data), so a stale replica deleting it takes nothing from the owner; the
    // addresses below are fenced.
    p.inner
        .store
        .delete_object(ObjectKind::ClusterPki, &p.rec.id.to_string())
        .await?;
    // What the agent reported goes with the cluster (a store without usage rows is fine).
    p.inner
        .store
        .delete_object(ObjectKind::Monitor, &p.rec.id.to_string())
        .await?;
    match p
        .inner
        .store
        .delete_usage(p.rec.id, None, chrono::DateTime::<chrono::Utc>::MAX_UTC)
        .await
    {
        Ok(_) | Err(crate::error::CoreError::Unsupported(_)) => {}
        Err(e) => return Err(e),
    }
    p.inner.store.release_ips(p.rec.id, None, p.fence).await?;
    p.write.clear_intents = true;
    p.status.phase = Phase::Deleted;
    p.status.pools.clear();
    p.status.machines.clear();
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
    Ok(Step::Stop(Outcome::Finished))
}

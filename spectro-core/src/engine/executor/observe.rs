//! Observe: the cluster's machines as the cloud lists them (by ownership tag), the
//! recorded create intents (dropped once their machines show), and addresses whose machine
//! will never exist.

use super::super::event::Severity;
use super::call::cloud_call;
use super::prepare::{Setup, VIP_OWNER};
use super::{assess, Outcome, Pass, World};
use crate::error::Result;

/// The world as observed; `Err(outcome)` when the listing failed (shown on the milestone).
pub(super) async fn observe(
    p: &mut Pass<'_>,
    setup: &Setup,
) -> Result<std::result::Result<World, Outcome>> {
    let machines = match cloud_call(
        p,
        setup,
        "list_machines",
        setup.provider.list_machines(&setup.ctx),
    )
    .await
    {
        Ok(m) => m,
        Err(e) => {
            let kind = assess::active_condition(&p.status, setup.deleting);
            p.fail(kind, "listing machines", &e);
            return Ok(Err(Outcome::Failed(e.retry_after())));
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

    if setup.ctx.vip.is_some() && p.inner.may_act(p.rec.id) {
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
            let n = p
                .inner
                .store
                .release_ips(p.rec.id, Some(&orphans), p.fence)
                .await?;
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
    let infra_stale = p.status.infrastructure_generation != p.rec.generation
        || infra_age.is_none_or(|a| a > p.inner.config.infra_resync);
    Ok(Ok(World {
        machines,
        intents,
        infra_stale,
        infra_deleted: false,
    }))
}

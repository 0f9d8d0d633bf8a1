//! Observe: the cluster's machines as the cloud lists them (by ownership tag), the
//! recorded create intents (dropped once their machines show), and addresses whose machine
//! will never exist.
//!
//! Shared observation: a converged cluster's resync reads its machines from its fleet's
//! listing (every cluster of one account and region, one paginated call for all, see
//! [`CloudProvider::list_fleet`](crate::provider::CloudProvider::list_fleet)) when that
//! listing started after the cluster last acted and is no older than the resync period;
//! otherwise one listing of the fleet runs (one at a time per fleet: clusters arriving
//! meanwhile wait for it and share it). Everything else (a cluster that changed something,
//! is converging, deleting, was just taken over, or whose fleet listing shows fewer machines
//! than its status counted) lists its own machines: N converged clusters of one account cost
//! O(1) reads per resync period, and no cluster ever plans on a listing older than its own
//! last action.

use chrono::{DateTime, Utc};

use super::super::event::Severity;
use super::super::runtime::FleetListing;
use super::super::status::Phase;
use super::call::cloud_call;
use super::prepare::{Setup, VIP_OWNER};
use super::{assess, Outcome, Pass, World};
use crate::error::Result;
use crate::provider::{Machine, ProviderError};

/// The world as observed; `Err(outcome)` when the listing failed (shown on the milestone).
pub(super) async fn observe(
    p: &mut Pass<'_>,
    setup: &Setup,
) -> Result<std::result::Result<World, Outcome>> {
    let mut intents = p.inner.store.intents(p.rec.id).await?;
    // A cluster whose stored status has no infrastructure has no machines: the commit that
    // records the intents of its first creates records the infrastructure too (`create::
    // record_intents`), and only deleting it clears it. No listing then (a new cluster's
    // first reconciles), unless an intent says otherwise (recorded by an older engine) or
    // the cluster is being deleted (a delete always looks).
    let machines = if p.rec.status.infrastructure.is_none() && intents.is_empty() && !setup.deleting
    {
        if p.inner.acted_at(p.rec.id).is_none() {
            p.inner.mark_acted(p.rec.id);
        }
        Vec::new()
    } else {
        match list(p, setup).await {
            Ok(m) => m,
            Err(e) => {
                let kind = assess::active_condition(&p.status, setup.deleting);
                p.fail(kind, "listing machines", &e);
                return Ok(Err(Outcome::Failed(e.retry_after())));
            }
        }
    };
    intents.retain(|i| {
        let seen = machines.iter().any(|m| m.name == i.name);
        if seen {
            p.write.remove_intents.push(i.name.clone());
        }
        !seen
    });

    if setup.ctx.vip.is_some() && p.inner.may_act(p.rec.id) {
        // Addresses whose machine neither exists nor is about to (its intent was forgotten:
        // the create never went out) go back to the pool.
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
        workload: None,
        conn: None,
        token_refreshed: false,
        prepared: Vec::new(),
    }))
}

/// The cluster's machines: from its fleet's listing when that may serve it, else listed
/// alone.
async fn list(p: &mut Pass<'_>, setup: &Setup) -> Result<Vec<Machine>, ProviderError> {
    let id = p.rec.id;
    let converged = !setup.deleting
        && p.rec.status.phase == Phase::Running
        && p.rec.status.observed_generation == p.rec.generation;
    match (p.inner.acted_at(id), setup.fleet.clone()) {
        (Some(acted), Some(key)) if converged => {
            if let Some(m) = from_fleet(p, setup, &key, acted).await? {
                return Ok(m);
            }
        }
        (None, _) => p.inner.mark_acted(id),
        _ => {}
    }
    cloud_call(
        p,
        setup,
        "list_machines",
        setup.provider.list_machines(&setup.ctx),
    )
    .await
}

/// The cluster's machines from a fleet listing that started after `acted` and is at most a
/// resync period old (listing the fleet if the last listing is not); `None` when the listing
/// shows fewer machines than the status counted (confirmed by a listing of its own).
async fn from_fleet(
    p: &Pass<'_>,
    setup: &Setup,
    key: &str,
    acted: DateTime<Utc>,
) -> Result<Option<Vec<Machine>>, ProviderError> {
    let slot = p.inner.fleet_slot(key);
    let mut last = slot.lock().await;
    let now = p.inner.clock.now();
    let max_age = p.inner.config.resync_interval;
    let usable = |l: &FleetListing| {
        l.started >= acted
            && now
                .signed_duration_since(l.started)
                .to_std()
                .map_or(true, |age| age <= max_age)
    };
    let listing = match last.take().filter(|l| usable(l)) {
        Some(l) => l,
        None => {
            let started = p.inner.clock.now();
            let machines = cloud_call(
                p,
                setup,
                "list_fleet",
                setup.provider.list_fleet(&setup.ctx),
            )
            .await?;
            FleetListing { started, machines }
        }
    };
    let mine = listing.machines.get(&p.rec.id).cloned().unwrap_or_default();
    *last = Some(listing);
    let counted: u32 = p.rec.status.pools.values().map(|s| s.current).sum();
    Ok((mine.len() >= counted as usize).then_some(mine))
}

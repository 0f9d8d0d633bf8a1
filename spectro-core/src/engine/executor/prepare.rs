//! Before observing: the provider, the account, the static-IP VIP and the
//! [`ClusterContext`] every cloud call gets; the cluster PKI; IP allocation; the pending
//! profile update.

use std::sync::Arc;

use super::super::condition::{ConditionStatus, ConditionType};
use super::super::event::Severity;
use super::super::runtime::Inner;
use super::super::status::{Lifecycle, PendingProfileUpdate, Phase};
use super::Pass;
use crate::bootstrap::ClusterPki;
use crate::error::{CoreError, Result};
use crate::model::CloudAccount;
use crate::provider::{CloudProvider, ClusterContext, ClusterId};
use crate::secret::with_secrets_revealed;
use crate::store::ObjectKind;

/// What every action of one reconcile works with.
pub(crate) struct Setup {
    pub(crate) provider: Arc<dyn CloudProvider>,
    /// The provider's label in spans and metrics (the cloud type).
    pub(crate) cloud: &'static str,
    pub(crate) ctx: ClusterContext,
    pub(crate) deleting: bool,
    /// The provider's fleet key (shared observation), prefixed with the cloud.
    pub(crate) fleet: Option<String>,
    /// The fleet key, or the cloud account's name: what throttling and worker shares are
    /// counted by.
    pub(crate) account_key: String,
}

pub(super) async fn prepare(p: &mut Pass<'_>) -> Result<Setup> {
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
            let owners = [VIP_OWNER.to_string()];
            let net = allocate_addresses(p.inner, p.rec.id, p.fence, &pool, &owners).await?;
            net.first().map(|n| n.address)
        }
        _ => None,
    };
    let ctx = ClusterContext {
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
    let fleet = provider
        .fleet(&ctx)
        .map(|k| format!("{}/{k}", cloud.as_str()));
    // Throttling is per account (and region): a throttled answer pauses every cluster that
    // shares this key.
    let account_key = fleet
        .clone()
        .unwrap_or_else(|| format!("{}/account/{}", cloud.as_str(), ctx.account.name));
    p.inner.note_account(p.rec.id, &account_key);
    Ok(Setup {
        provider,
        cloud: cloud.as_str(),
        ctx,
        deleting,
        fleet,
        account_key,
    })
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
    Err(CoreError::Conflict {
        kind: "cluster PKI",
        name: id.to_string(),
        expected: 0,
        found: 1,
    })
}

/// The IP pool serving a node pool's fault domain, for static-IP (vSphere) clusters.
pub(super) fn static_ip_pool(
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
pub(super) async fn allocate_addresses(
    inner: &Inner,
    cluster: ClusterId,
    fence: Option<u64>,
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
                fence,
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

/// Keeps `status.profile_update` equal to the pending profile update, with an event when one
/// becomes available and when it has been applied.
async fn note_profile_update(p: &mut Pass<'_>) -> Result<()> {
    let notification = super::super::update::pending(&p.inner.store, &p.rec)
        .await?
        .and_then(|(target, rev)| super::super::update::notification(&p.rec, &target, rev));
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

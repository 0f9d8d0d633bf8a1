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
use crate::secret::with_secrets_marked;
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
        deleting,
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
        let body = with_secrets_marked(|| serde_json::to_value(&pki)).map_err(|source| {
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

/// vSphere clusters reach vCenter only through their account's private cloud gateway. Before
/// anything else: waits (condition + event, looked at again after the poll interval) while
/// the gateway has no connected replica, and, for a cluster not provisioned yet, while the
/// gateway upgrades (the doc: new cluster requests queue during an upgrade). Also gives the
/// nodes the gateway's proxy when the cluster names none, with vCenter and the node networks
/// of the cluster's IP pools in NO_PROXY.
pub(super) async fn gateway_gate(
    p: &mut Pass<'_>,
    setup: &mut Setup,
) -> Result<Option<super::Outcome>> {
    let Some(name) = setup.ctx.account.gateway().map(str::to_string) else {
        return Ok(None);
    };
    let gw = match p.inner.store.get_object(ObjectKind::Gateway, &name).await? {
        Some(o) => super::super::decode::<crate::model::PrivateCloudGateway>("gateway", o.body)?,
        None => {
            return Err(CoreError::NotFound {
                kind: "gateway",
                name,
            })
        }
    };
    let (status, _) = super::super::gateways::load_gateway_status(&p.inner.store, &name).await?;
    let now = p.now;
    let connected = status
        .connected(now, p.inner.config.gateways.replica_ttl)
        .len();
    let new_cluster = p.status.infrastructure.is_none() && !setup.deleting;
    // Only a provider that goes through the gateway's agents waits for them (a provider that
    // reaches vCenter itself does not).
    let wait = if !setup.provider.via_gateway() {
        None
    } else if connected == 0 {
        Some((
            "GatewayUnavailable",
            format!(
                "waiting for private cloud gateway `{name}`: no agent replica is connected (gateway {})",
                status.state.as_str()
            ),
        ))
    } else if status.state == crate::model::GatewayState::Upgrading && new_cluster {
        Some((
            "GatewayUpgrading",
            format!(
                "queued: private cloud gateway `{name}` is upgrading; provisioning starts when the upgrade completes"
            ),
        ))
    } else {
        None
    };
    if let Some((reason, msg)) = wait {
        let kind = if setup.deleting {
            ConditionType::Deleted
        } else if p.status.infrastructure.is_none() {
            ConditionType::InfrastructureReady
        } else {
            [
                ConditionType::ControlPlaneReady,
                ConditionType::WorkersReady,
            ]
            .into_iter()
            .find(|k| {
                !p.status
                    .conditions
                    .iter()
                    .any(|c| c.kind == *k && c.status == ConditionStatus::Succeeded)
            })
            .unwrap_or(ConditionType::InfrastructureReady)
        };
        if p.status.last_error.as_deref() != Some(msg.as_str()) {
            p.event(Severity::Warning, reason, msg.clone());
            p.status.last_error = Some(msg.clone());
        }
        let done = p
            .status
            .conditions
            .iter()
            .any(|c| c.kind == kind && c.status == ConditionStatus::Succeeded);
        if !done {
            p.condition(kind, ConditionStatus::InProgress, reason, &msg);
        }
        return Ok(Some(super::Outcome::Waiting));
    }
    if p.status
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains(&format!("private cloud gateway `{name}`")))
    {
        p.status.last_error = None;
    }
    if setup.ctx.spec.proxy.is_none() {
        if let Some(proxy) = &gw.proxy {
            let mut proxy = proxy.clone();
            let mut extra = Vec::new();
            if let Some(vc) =
                status
                    .vcenter_host
                    .as_deref()
                    .or(match &setup.ctx.account.credentials {
                        crate::model::Credentials::Vsphere(v) => Some(v.vcenter_host.as_str()),
                        _ => None,
                    })
            {
                extra.push(crate::model::proxy::host_of(vc).to_string());
            }
            let pools: std::collections::BTreeSet<&str> = setup
                .ctx
                .spec
                .node_pools
                .iter()
                .flat_map(|pool| &pool.placements)
                .filter_map(|d| d.ip_pool.as_deref())
                .collect();
            for pool in pools {
                if let Some(o) = p.inner.store.get_object(ObjectKind::IpPool, pool).await? {
                    let pool: crate::model::IpPool = super::super::decode("ip pool", o.body)?;
                    if let Ok(net) = ipnet::IpNet::new(pool.gateway, pool.prefix) {
                        extra.push(net.trunc().to_string());
                    }
                }
            }
            for e in extra {
                if !proxy.no_proxy.contains(&e) {
                    proxy.no_proxy.push(e);
                }
            }
            setup.ctx.spec.proxy = Some(proxy);
        }
    }
    Ok(None)
}

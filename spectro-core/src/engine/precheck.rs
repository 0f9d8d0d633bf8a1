//! Pre-checks, engine side: [`Engine::precheck`] (a dry run on a spec, nothing created) and
//! the executor's check before a new cluster's first cloud create (`executor::run`) (a failed check fails the
//! `Creating Infrastructure` condition with every missing permission and shortfall named,
//! and is retried with backoff until the account is fixed).

use super::executor::Pass;
use super::runtime::Inner;
use super::Engine;
use crate::error::{CoreError, Result};
use crate::model::Cluster;
use crate::precheck::{ip_pool_shortfalls, Precheck};
use crate::provider::{CloudProvider, ClusterContext, ClusterId};
use crate::records::condition::{ConditionStatus, ConditionType};
use crate::records::event::Severity;
use crate::store::ObjectKind;

/// The IP pool part of a pre-check: what `spec` needs from each static IP pool against
/// what other clusters (not `id`) hold there.
pub(crate) async fn ip_pools(inner: &Inner, spec: &Cluster, id: ClusterId) -> Result<Precheck> {
    let mut pools = Vec::new();
    for name in crate::precheck::addresses_needed(spec).keys() {
        let Some(o) = inner.store.get_object(ObjectKind::IpPool, name).await? else {
            continue;
        };
        let pool: crate::model::IpPool = super::decode("IP pool", o.body)?;
        let others = inner
            .store
            .ip_leases(Some(name), None)
            .await?
            .iter()
            .filter(|l| l.cluster != id)
            .count() as u64;
        pools.push((pool, others));
    }
    Ok(Precheck {
        shortfalls: ip_pool_shortfalls(spec, &pools),
        ..Default::default()
    })
}

/// The provider's and the IP pools' checks together.
async fn run(
    inner: &Inner,
    provider: &dyn CloudProvider,
    ctx: &ClusterContext,
) -> Result<Precheck> {
    let mut out = match provider.precheck(ctx).await {
        Ok(found) => found,
        Err(e @ crate::provider::ProviderError::Unauthorized { .. }) => return Err(e.into()),
        Err(e) => Precheck::unchecked(format!("the cloud's pre-check did not answer: {e}")),
    };
    out.merge(ip_pools(inner, &ctx.spec, ctx.cluster_id).await?);
    Ok(out)
}

/// True when a cluster is due its pre-check: not yet passed for this spec generation, no
/// infrastructure yet, not being deleted.
pub(crate) fn due(p: &Pass<'_>, deleting: bool) -> bool {
    !deleting && p.status.infrastructure.is_none() && p.status.prechecked != Some(p.rec.generation)
}

/// Records a pre-check's outcome: `Some(outcome)` stops the reconcile (it failed: the
/// `Creating Infrastructure` condition fails with every finding, an event, backoff).
pub(crate) fn judge(p: &mut Pass<'_>, found: &Precheck) -> Option<super::executor::Outcome> {
    for why in &found.unchecked {
        tracing::debug!(cluster = %p.rec.id, unchecked = %why, "pre-check");
    }
    if found.passed() {
        p.status.prechecked = Some(p.rec.generation);
        if p.status
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("pre-check: "))
        {
            p.status.last_error = None;
        }
        p.event(
            Severity::Info,
            "PrecheckPassed",
            if found.unchecked.is_empty() {
                "pre-check passed: permissions and capacity".to_string()
            } else {
                format!(
                    "pre-check passed (not checked: {})",
                    found.unchecked.join("; ")
                )
            },
        );
        return None;
    }
    let msg = format!("pre-check: {}", found.message());
    if p.status.last_error.as_deref() != Some(msg.as_str()) {
        p.event(Severity::Error, "PrecheckFailed", msg.clone());
        p.status.last_error = Some(msg.clone());
    }
    p.condition(
        ConditionType::InfrastructureReady,
        ConditionStatus::Failed,
        "PrecheckFailed",
        &msg,
    );
    Some(super::executor::Outcome::Failed(None))
}

impl Engine {
    /// Pre-checks a cluster spec without creating anything (a dry run): the spec is
    /// validated as `create_cluster` does, then the cloud account is checked against what
    /// the cluster needs, as far as its provider implements `CloudProvider::precheck`
    /// (vSphere: the privileges on the placement objects and the datastores' free space;
    /// AWS: the IAM actions it calls and the region's quotas; providers without pre-checks
    /// say so in `unchecked`), and the IP pools (1 address per
    /// node + the VIP + 1 spare). The engine runs the same check before a new cluster's first
    /// create. A provider's pre-check that fails (other than `Unauthorized`) is reported in
    /// `unchecked`, never blocks.
    pub async fn precheck(&self, spec: &Cluster) -> Result<Precheck> {
        self.running()?;
        let cat = self.catalog_for(spec).await?;
        super::invalid(
            format!("cluster {}", spec.name),
            crate::validate::validate_cluster(spec, &cat),
        )?;
        let (profile, _) = self
            .profile(&spec.profile.name, &spec.profile.version)
            .await?
            .ok_or_else(|| CoreError::NotFound {
                kind: "cluster profile",
                name: format!("{}@{}", spec.profile.name, spec.profile.version),
            })?;
        let provider = self
            .inner
            .providers
            .get(&spec.cloud_type())
            .cloned()
            .ok_or(CoreError::NoProvider(spec.cloud_type()))?;
        let account = super::executor::load_account(&self.inner, &spec.cloud_account).await?;
        // An existing cluster of that name keeps its id (its own IP leases are its own).
        let id = self
            .inner
            .store
            .find_cluster(&spec.name)
            .await?
            .map_or_else(ClusterId::new, |r| r.id);
        let ctx = ClusterContext {
            cluster_id: id,
            spec: spec.clone(),
            profile,
            account,
            vip: None,
            image: None,
            deleting: false,
        };
        run(&self.inner, &*provider, &ctx).await
    }
}

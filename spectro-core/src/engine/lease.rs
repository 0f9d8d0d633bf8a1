//! Replica mode: leases on clusters shared with other engines on the same database, fencing
//! tokens, self-fencing when renewals fail, and cross-process change notifications.

use std::collections::HashMap;
use std::sync::Arc;

use super::config::ReplicaConfig;
use super::runtime::Inner;
use crate::provider::ClusterId;

impl Inner {
    /// True when this engine may still act for the cluster (always, without replicas).
    pub(crate) fn may_act(&self, id: ClusterId) -> bool {
        self.ownership(id).is_some()
    }

    /// The fencing token of an owned cluster; `Some(None)` when no leases are used.
    pub(crate) fn ownership(&self, id: ClusterId) -> Option<Option<u64>> {
        let Some(rc) = &self.config.replica else {
            return Some(None);
        };
        let fresh = self
            .renewed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| {
                crate::clock::instant_now().saturating_duration_since(t)
                    < rc.lease_ttl.saturating_mul(2) / 3
            });
        if !fresh {
            return None;
        }
        self.owned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .map(|f| Some(*f))
    }

    /// Replica mode: renew and claim leases every third of the TTL (or when woken), queue
    /// newly claimed clusters, forget lost ones.
    pub(crate) async fn lease_loop(self: Arc<Self>, rc: ReplicaConfig) {
        loop {
            let asked = crate::clock::instant_now();
            match self
                .store
                .acquire_leases(&rc.id, rc.lease_ttl, rc.max_clusters)
                .await
            {
                Ok(leases) => {
                    *self.renewed.lock().unwrap_or_else(|e| e.into_inner()) = Some(asked);
                    let fresh: HashMap<ClusterId, u64> =
                        leases.iter().map(|l| (l.cluster_id, l.fence)).collect();
                    let gained: Vec<ClusterId> = {
                        let mut owned = self.owned.lock().unwrap_or_else(|e| e.into_inner());
                        let gained = fresh
                            .iter()
                            .filter(|(id, f)| owned.get(id) != Some(f))
                            .map(|(id, _)| *id)
                            .collect();
                        for id in owned.keys().filter(|id| !fresh.contains_key(id)) {
                            // Lost: whoever owns it now may act; what this replica knew of
                            // it is stale.
                            self.forget(*id);
                        }
                        *owned = fresh;
                        gained
                    };
                    for id in gained {
                        self.queue.add(id);
                    }
                }
                Err(e) => tracing::warn!(replica = %rc.id, error = %e, "lease renewal failed"),
            }
            // Every cloud account's request budget is split between the live replicas.
            match self.store.live_replicas().await {
                Ok(n) => self.budget_share.store(
                    (1.0 / n.max(1) as f64).to_bits(),
                    std::sync::atomic::Ordering::Relaxed,
                ),
                Err(e) => tracing::warn!(replica = %rc.id, error = %e, "counting replicas failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(rc.lease_ttl / 3) => {}
                _ = self.lease_wake.notified() => {}
            }
        }
    }

    /// Cross-process change notifications: the owner reconciles at once; an unknown cluster
    /// (new) makes this replica try to claim it.
    pub(crate) async fn change_loop(
        self: Arc<Self>,
        mut changes: futures_util::stream::BoxStream<'static, ClusterId>,
    ) {
        use futures_util::StreamExt;
        while let Some(id) = changes.next().await {
            // Another process wrote: event watchers look at the store again.
            self.last_seq.send_modify(|_| {});
            if id.0.is_nil() {
                // The notification connection was re-established: changes may have been
                // missed, so every owned cluster is looked at again.
                let owned: Vec<ClusterId> = self
                    .owned
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .keys()
                    .copied()
                    .collect();
                for id in owned {
                    self.queue.add(id);
                }
                self.lease_wake.notify_one();
                continue;
            }
            match self.ownership(id) {
                Some(_) => self.queue.add(id),
                None => self.lease_wake.notify_one(),
            }
        }
    }
}

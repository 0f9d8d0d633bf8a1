//! The worker loop: takes a cluster from the queue, reconciles it once (in a `reconcile`
//! tracing span, panics caught), decides when to look again (the error policy) and tells
//! whoever waits for that reconcile.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tracing::Instrument;

use super::executor::{self, Outcome};
use super::runtime::Inner;
use super::{ReconcileOutcome, ReconcileReport};
use crate::error::{CoreError, Result};
use crate::provider::ClusterId;

impl Inner {
    pub(crate) async fn worker(self: Arc<Self>) {
        while let Some(id) = self.queue.next().await {
            let Some(fence) = self.ownership(id) else {
                // Another replica holds it; or this one does but could not renew its leases
                // lately (self-fenced): look again once renewals may have resumed.
                let held = self
                    .owned
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains_key(&id);
                let retry = self
                    .config
                    .replica
                    .as_ref()
                    .filter(|_| held)
                    .map(|rc| rc.lease_ttl / 3);
                self.queue.done(id, retry);
                continue;
            };
            if let Some(wait) = self.account_pause(id) {
                // Its account was throttled (or its request budget is used up): wait without
                // holding a worker that another account's cluster can use.
                // Spread over half the wait again: clusters of the account come back in
                // a random order, not in the one that paused them.
                let spread = wait.mul_f64(0.5 * self.resync_jitter(id));
                self.queue.done(id, Some(wait + spread));
                continue;
            }
            let n = self.reconciles.fetch_add(1, Ordering::Relaxed) + 1;
            let span = tracing::info_span!(
                "reconcile",
                cluster = %id,
                n,
                name = tracing::field::Empty,
                generation = tracing::field::Empty,
                phase = tracing::field::Empty,
                outcome = tracing::field::Empty,
            );
            let started = crate::clock::instant_now();
            let result = std::panic::AssertUnwindSafe(
                executor::reconcile(&self, id, fence).instrument(span.clone()),
            )
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                Err(CoreError::ReconcilePanicked {
                    cluster: id,
                    message: panic_message(panic.as_ref()),
                })
            });
            let elapsed = crate::clock::instant_now().saturating_duration_since(started);
            let requeue = self.requeue_after(id, &result);
            let outcome = ReconcileOutcome::of(&result);
            span.record("outcome", outcome.as_str());
            if let Err(e) = &result {
                if !matches!(e, CoreError::Fenced { .. }) {
                    span.in_scope(|| {
                        tracing::warn!(error = %e, reason = e.reason(), retry_in = ?requeue, "reconcile failed")
                    });
                }
            }
            self.metrics.reconciled(outcome.as_str(), elapsed);
            let _ = self.reconciled.send(ReconcileReport {
                cluster: id,
                number: n,
                outcome,
                requeue_after: requeue,
                duration: elapsed,
            });
            self.changes.send_modify(|v| *v += 1);
            self.queue.done(id, requeue);
            let (ready, scheduled, active) = self.queue.len();
            self.metrics.queue_depth(ready, scheduled, active);
        }
    }

    /// The error policy: when a cluster is looked at again after this reconcile.
    fn requeue_after(&self, id: ClusterId, result: &Result<Outcome>) -> Option<Duration> {
        match result {
            Ok(Outcome::Finished) => {
                self.succeeded(id);
                self.queue.forget(id);
                self.forget(id);
                self.blockers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                None
            }
            Ok(Outcome::Converged) => {
                self.succeeded(id);
                let r = self.config.resync_interval.as_secs_f64();
                Some(
                    Duration::try_from_secs_f64(r * (0.9 + 0.2 * self.resync_jitter(id)))
                        .unwrap_or(self.config.resync_interval),
                )
            }
            Ok(Outcome::Parked) => None, // queued again when its account frees a worker
            Ok(Outcome::Waiting) => {
                self.succeeded(id);
                Some(self.config.poll_interval)
            }
            Ok(Outcome::Progress) => {
                self.succeeded(id);
                Some(Duration::ZERO)
            }
            Ok(Outcome::Failed(after)) => {
                if let Some(a) = after {
                    self.pause_account(id, *a);
                }
                let b = self.backoff(id);
                Some(after.map_or(b, |a| a.max(b.min(a.saturating_mul(2)))))
            }
            Err(CoreError::Fenced { .. }) => {
                // Taken over by another replica: let go.
                self.owned
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                None
            }
            Err(_) => Some(self.backoff(id)),
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".into())
}

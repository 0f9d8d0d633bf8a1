//! Every cloud call of a reconcile goes through [`cloud_call`]: a `cloud_call` tracing span
//! (provider, operation, attempt, outcome) under the reconcile's span, the call metrics, and
//! the [call scope](crate::budget::CallScope) the provider's request budget reads (which
//! cluster, which replica, its share). A call that may change the cloud marks the cluster
//! as having acted (shared observation).

use std::future::Future;

use tracing::Instrument;

use super::prepare::Setup;
use super::Pass;
use crate::provider::ProviderError;

/// Runs one provider call for the cluster of `p`.
pub(super) async fn cloud_call<T>(
    p: &Pass<'_>,
    setup: &Setup,
    operation: &'static str,
    call: impl Future<Output = Result<T, ProviderError>>,
) -> Result<T, ProviderError> {
    let attempt = p.inner.failures(p.rec.id) + 1;
    let span = tracing::info_span!(
        "cloud_call",
        provider = setup.cloud,
        operation,
        attempt,
        outcome = tracing::field::Empty,
    );
    let started = crate::clock::instant_now();
    let result =
        crate::budget::with_scope(p.inner.call_scope(p.rec.id), call.instrument(span.clone()))
            .await;
    if !matches!(operation, "list_machines" | "list_fleet" | "precheck") {
        // Whatever it changed, a fleet listing that started before now cannot show it.
        p.inner.mark_acted(p.rec.id);
    }
    let took = crate::clock::instant_now().saturating_duration_since(started);
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.reason(),
    };
    span.record("outcome", outcome);
    if let Err(e) = &result {
        span.in_scope(|| tracing::info!(error = %e, "cloud call failed"));
    }
    p.inner
        .metrics
        .cloud_call(setup.cloud, operation, outcome, took);
    p.inner.log_call(
        p.rec.id,
        crate::engine::support::CallRecord {
            at: p.inner.clock.now(),
            provider: setup.cloud,
            operation,
            attempt,
            outcome,
            took_ms: u32::try_from(took.as_millis()).unwrap_or(u32::MAX),
            // Provider messages never carry secrets (the provider contract).
            error: result.as_ref().err().map(|e| e.to_string()),
        },
    );
    result
}

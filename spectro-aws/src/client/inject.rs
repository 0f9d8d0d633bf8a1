//! Fault injection (feature `test-util`): throttling answers and crashes at an API attempt,
//! as interceptors on the SDK clients.

use std::sync::Arc;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// Test and chaos tool: answers every `every`-th EC2 attempt with a `RequestLimitExceeded`
/// throttling error (HTTP 503), as EC2 does under load.
#[derive(Debug)]
pub struct InjectThrottling {
    every: u64,
    seen: std::sync::atomic::AtomicU64,
    injected: std::sync::atomic::AtomicU64,
}

impl InjectThrottling {
    /// Throttles every `every`-th attempt (0 = never).
    pub fn new(every: u64) -> Self {
        InjectThrottling {
            every,
            seen: Default::default(),
            injected: Default::default(),
        }
    }

    /// How many responses were replaced by a throttling error.
    pub fn injected(&self) -> u64 {
        self.injected.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[derive(Debug, Clone)]
pub(super) struct Throttler(pub(super) Arc<InjectThrottling>);

impl Intercept for Throttler {
    fn name(&self) -> &'static str {
        "spectro-inject-throttling"
    }

    fn modify_before_deserialization(
        &self,
        ctx: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        use std::sync::atomic::Ordering;
        let t = &self.0;
        let n = t.seen.fetch_add(1, Ordering::Relaxed) + 1;
        if t.every > 0 && n % t.every == 0 {
            t.injected.fetch_add(1, Ordering::Relaxed);
            let resp = ctx.response_mut();
            *resp.status_mut() = aws_smithy_runtime_api::http::StatusCode::try_from(503u16)?;
            *resp.body_mut() = aws_smithy_types::body::SdkBody::from(
                "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>spectro-injected</RequestID></Response>",
            );
        }
        Ok(())
    }
}

/// Test tool for crash tests: the process "dies" at the `at`-th API attempt (EC2 and ELB,
/// counted from 1): either before that call reaches AWS, or after AWS acted on it but before
/// its answer is read. Every later attempt fails before it is sent, as nothing runs after a
/// crash. The caller then "restarts" with clients built without it.
#[derive(Debug)]
pub struct InjectCrash {
    at: u64,
    after: bool,
    seen: std::sync::atomic::AtomicU64,
    answer_lost: std::sync::atomic::AtomicBool,
}

impl InjectCrash {
    /// Crashes right before the `at`-th attempt is sent.
    pub fn before(at: u64) -> Self {
        InjectCrash {
            at,
            after: false,
            seen: Default::default(),
            answer_lost: Default::default(),
        }
    }

    /// Crashes right after the `at`-th attempt took effect (its answer is never read).
    pub fn after(at: u64) -> Self {
        InjectCrash {
            after: true,
            ..InjectCrash::before(at)
        }
    }

    /// Whether the crash happened (the `at`-th attempt was reached).
    pub fn crashed(&self) -> bool {
        self.seen.load(std::sync::atomic::Ordering::SeqCst) >= self.at
    }
}

#[derive(Debug, Clone)]
pub(super) struct Crasher(pub(super) Arc<InjectCrash>);

impl Intercept for Crasher {
    fn name(&self) -> &'static str {
        "spectro-inject-crash"
    }

    fn read_before_transmit(
        &self,
        _: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        use std::sync::atomic::Ordering;
        let t = &self.0;
        let n = t.seen.fetch_add(1, Ordering::SeqCst) + 1;
        if n > t.at || (n == t.at && !t.after) {
            return Err("spectro injected crash: the process is gone".into());
        }
        if n == t.at {
            t.answer_lost.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        ctx: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if self
            .0
            .answer_lost
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            let resp = ctx.response_mut();
            *resp.status_mut() = aws_smithy_runtime_api::http::StatusCode::try_from(400u16)?;
            *resp.body_mut() = aws_smithy_types::body::SdkBody::from(
                "<Response><Errors><Error><Code>SpectroInjectedCrash</Code><Message>the process died before reading this answer</Message></Error></Errors><RequestID>spectro-injected</RequestID></Response>",
            );
        }
        Ok(())
    }
}

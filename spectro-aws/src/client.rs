//! SDK clients per (account, region): static credentials from the cloud account, an
//! optional endpoint (moto, LocalStack, a VPC endpoint), standard retries, a counter of every
//! API attempt by operation, and optional extra headers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextMut, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::retry::RetryConfig;
use spectro_core::model::AwsCredentials;

#[cfg(feature = "test-util")]
mod inject;
#[cfg(feature = "test-util")]
use inject::{Crasher, Throttler};
#[cfg(feature = "test-util")]
pub use inject::{InjectCrash, InjectThrottling};

/// Every API attempt, by `Service.Operation` (retries count: they hit the API too).
#[derive(Debug, Default)]
pub struct CallCounter {
    calls: Mutex<BTreeMap<String, u64>>,
}

impl CallCounter {
    /// Attempts per operation so far.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// All attempts so far.
    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }

    fn count(&self, op: String) {
        *self
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(op)
            .or_default() += 1;
    }
}

#[derive(Debug, Clone)]
struct Counting(Arc<CallCounter>);

impl Intercept for Counting {
    fn name(&self) -> &'static str {
        "spectro-call-counter"
    }

    fn read_before_attempt(
        &self,
        _: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let op = cfg
            .load::<Metadata>()
            .map(|m| format!("{}.{}", m.service(), m.name()))
            .unwrap_or_else(|| "unknown".to_string());
        self.0.count(op);
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct ExtraHeaders(Vec<(String, String)>);

impl Intercept for ExtraHeaders {
    fn name(&self) -> &'static str {
        "spectro-extra-headers"
    }

    fn modify_before_signing(
        &self,
        ctx: &mut BeforeTransmitInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        for (k, v) in &self.0 {
            ctx.request_mut().headers_mut().insert(k.clone(), v.clone());
        }
        Ok(())
    }
}

/// How to reach AWS: builds the clients of an account in a region.
#[derive(Debug, Clone)]
pub struct AwsConnector {
    endpoint: Option<String>,
    headers: Vec<(String, String)>,
    max_attempts: u32,
    calls: Arc<CallCounter>,
    #[cfg(feature = "test-util")]
    throttling: Option<Arc<InjectThrottling>>,
    #[cfg(feature = "test-util")]
    crash: Option<Arc<InjectCrash>>,
    max_backoff: Option<std::time::Duration>,
}

impl Default for AwsConnector {
    fn default() -> Self {
        AwsConnector {
            endpoint: None,
            headers: Vec::new(),
            max_attempts: 3,
            calls: Arc::default(),
            #[cfg(feature = "test-util")]
            throttling: None,
            #[cfg(feature = "test-util")]
            crash: None,
            max_backoff: None,
        }
    }
}

impl AwsConnector {
    /// The real AWS endpoints, or `AWS_ENDPOINT_URL` when it is set (the SDKs' variable).
    pub fn from_env() -> Self {
        AwsConnector {
            endpoint: std::env::var("AWS_ENDPOINT_URL")
                .ok()
                .filter(|s| !s.is_empty()),
            ..Default::default()
        }
    }

    /// Sends every call to `url` (an emulator or a private endpoint).
    pub fn with_endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// Adds a header to every request (e.g. moto's `x-moto-account-id`).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Attempts per call, retries included (SDK standard retry mode).
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Caps the SDK's retry backoff (the default grows up to 20 s).
    pub fn with_max_backoff(mut self, d: std::time::Duration) -> Self {
        self.max_backoff = Some(d);
        self
    }

    /// Standard retries with backoff. Their retry token bucket (the retry quota) is
    /// partitioned per (account, region) through the retry partition, so every cluster of one
    /// account in one region shares one budget.
    fn retry(&self) -> RetryConfig {
        let r = RetryConfig::standard().with_max_attempts(self.max_attempts);
        match self.max_backoff {
            Some(d) => r.with_initial_backoff(d / 4).with_max_backoff(d),
            None => r,
        }
    }

    /// Extra headers select another account on some endpoints (moto): keep their budgets apart.
    fn partition_suffix(&self) -> String {
        self.headers
            .iter()
            .map(|(k, v)| format!("/{k}={v}"))
            .collect()
    }

    /// Injects EC2 throttling errors (tests, chaos drills; feature `test-util`).
    #[cfg(feature = "test-util")]
    pub fn with_injected_throttling(mut self, t: Arc<InjectThrottling>) -> Self {
        self.throttling = Some(t);
        self
    }

    /// Crashes at an API attempt (crash tests; feature `test-util`).
    #[cfg(feature = "test-util")]
    pub fn with_injected_crash(mut self, t: Arc<InjectCrash>) -> Self {
        self.crash = Some(t);
        self
    }

    /// The API-attempt counter shared by every client this connector builds.
    pub fn calls(&self) -> &Arc<CallCounter> {
        &self.calls
    }

    /// The clients of an account in a region.
    pub fn clients(&self, creds: &AwsCredentials, region: &str) -> AwsClients {
        let credentials = Credentials::new(
            creds.access_key_id.clone(),
            creds.secret_access_key.expose().to_string(),
            None,
            None,
            "spectro-cloud-account",
        );
        let retry = self.retry();
        let partition = |service: &str| {
            aws_sdk_ec2::config::retry::RetryPartition::new(format!(
                "spectro/{}/{region}/{service}{}",
                creds.access_key_id,
                self.partition_suffix()
            ))
        };
        let mut ec2 = aws_sdk_ec2::config::Builder::new()
            .retry_partition(partition("ec2"))
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .credentials_provider(credentials.clone())
            .retry_config(retry.clone())
            .interceptor(Counting(self.calls.clone()))
            .interceptor(ExtraHeaders(self.headers.clone()));
        let mut sts = aws_sdk_sts::config::Builder::new()
            .retry_partition(aws_sdk_sts::config::retry::RetryPartition::new(format!(
                "spectro/{}/{region}/sts{}",
                creds.access_key_id,
                self.partition_suffix()
            )))
            .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
            .region(aws_sdk_sts::config::Region::new(region.to_string()))
            .credentials_provider(credentials)
            .retry_config(retry)
            .interceptor(Counting(self.calls.clone()))
            .interceptor(ExtraHeaders(self.headers.clone()));
        if let Some(e) = &self.endpoint {
            ec2 = ec2.endpoint_url(e.clone());
            sts = sts.endpoint_url(e.clone());
        }
        #[cfg(feature = "test-util")]
        {
            if let Some(t) = &self.throttling {
                ec2 = ec2.interceptor(Throttler(t.clone()));
            }
            if let Some(t) = &self.crash {
                ec2 = ec2.interceptor(Crasher(t.clone()));
            }
        }
        AwsClients {
            ec2: aws_sdk_ec2::Client::from_conf(ec2.build()),
            sts: aws_sdk_sts::Client::from_conf(sts.build()),
            region: region.to_string(),
        }
    }
}

impl AwsConnector {
    /// The classic ELB client of an account in a region.
    pub fn elb_client(
        &self,
        creds: &AwsCredentials,
        region: &str,
    ) -> aws_sdk_elasticloadbalancing::Client {
        use aws_sdk_elasticloadbalancing::config as c;
        let credentials = c::Credentials::new(
            creds.access_key_id.clone(),
            creds.secret_access_key.expose().to_string(),
            None,
            None,
            "spectro-cloud-account",
        );
        let mut b = c::Builder::new()
            .retry_partition(c::retry::RetryPartition::new(format!(
                "spectro/{}/{region}/elb{}",
                creds.access_key_id,
                self.partition_suffix()
            )))
            .behavior_version(c::BehaviorVersion::latest())
            .region(c::Region::new(region.to_string()))
            .credentials_provider(credentials)
            .retry_config(self.retry())
            .interceptor(Counting(self.calls.clone()))
            .interceptor(ExtraHeaders(self.headers.clone()));
        if let Some(e) = &self.endpoint {
            b = b.endpoint_url(e.clone());
        }
        #[cfg(feature = "test-util")]
        if let Some(t) = &self.crash {
            b = b.interceptor(Crasher(t.clone()));
        }
        aws_sdk_elasticloadbalancing::Client::from_conf(b.build())
    }
}

/// The SDK clients of one account in one region.
#[derive(Debug, Clone)]
pub struct AwsClients {
    /// EC2.
    pub ec2: aws_sdk_ec2::Client,
    /// STS.
    pub sts: aws_sdk_sts::Client,
    /// The region.
    pub region: String,
}

//! SDK clients per (account, region): static credentials from the cloud account, an
//! optional endpoint (moto, LocalStack, a VPC endpoint), standard retries, a counter of every
//! API attempt by operation, and optional extra headers.

use std::sync::Arc;

use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextMut,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::retry::RetryConfig;
use spectro_core::budget::{BudgetStats, Budgets, Limits, Rate, RequestBudget};
use spectro_core::model::AwsCredentials;

mod budget;
#[cfg(feature = "test-util")]
mod inject;
#[cfg(feature = "test-util")]
use inject::{Crasher, Throttler};
#[cfg(feature = "test-util")]
pub use inject::{InjectCrash, InjectThrottling};

pub use spectro_core::budget::CallCounter;

#[derive(Debug, Clone)]
struct Counting(Arc<CallCounter>);

impl Intercept for Counting {
    fn name(&self) -> &'static str {
        "spectro-call-counter"
    }

    fn read_after_transmit(
        &self,
        _: &BeforeDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let op = cfg
            .load::<Metadata>()
            .map(|m| format!("{}.{}", m.service(), m.name()))
            .unwrap_or_else(|| "unknown".to_string());
        self.0.count(&op);
        Ok(())
    }
}

/// Tells the account's budget about throttled answers (real or injected), so that every
/// cluster of the account pauses, not only the one that was told.
#[derive(Debug, Clone)]
struct ThrottleSignal(Arc<RequestBudget>);

impl Intercept for ThrottleSignal {
    fn name(&self) -> &'static str {
        "spectro-throttle-signal"
    }

    fn read_before_deserialization(
        &self,
        ctx: &BeforeDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let resp = ctx.response();
        // EC2 answers RequestLimitExceeded with 503; other services say 429.
        if matches!(resp.status().as_u16(), 429 | 503) {
            let class = budget::class_of(cfg.load::<Metadata>().map_or("", |m| m.name()));
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| std::time::Duration::from_secs_f64(s.min(3600.0)));
            self.0.throttled(class, retry_after);
        }
        Ok(())
    }
}

/// The request budgets of one account and region, one per service (AWS throttles EC2,
/// classic ELB and STS apart). Defaults: EC2's published limits
/// ([`Limits::aws_ec2`]); ELB 10 reads/s (bucket 40) and 5 changes/s (bucket 20); STS
/// 10/s (bucket 50).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AwsLimits {
    /// EC2.
    pub ec2: Limits,
    /// Classic ELB.
    pub elb: Limits,
    /// STS.
    pub sts: Limits,
}

impl Default for AwsLimits {
    fn default() -> Self {
        AwsLimits {
            ec2: Limits::aws_ec2(),
            elb: Limits::new(Rate::new(10.0, 40.0), Rate::new(5.0, 20.0)),
            sts: Limits::new(Rate::new(10.0, 50.0), Rate::new(10.0, 50.0)),
        }
    }
}

impl AwsLimits {
    /// The same limits for every service (tests, a private endpoint).
    #[must_use]
    pub fn all(limits: Limits) -> Self {
        AwsLimits {
            ec2: limits.clone(),
            elb: limits.clone(),
            sts: limits,
        }
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
    limits: AwsLimits,
    account_limits: std::collections::HashMap<String, AwsLimits>,
    budgets: Arc<Budgets>,
    http: SharedHttpClient,
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
            limits: AwsLimits::default(),
            account_limits: Default::default(),
            budgets: Arc::default(),
            http: budget::default_client(),
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

    /// The request budgets of every account and region (default: [`AwsLimits::default`]).
    /// One budget per (account, region, service) is shared by every cluster, fair between
    /// them; a request over it waits, or gives its turn up after the limits' `max_wait`
    /// (the engine then pauses the account's clusters instead of holding workers).
    pub fn with_limits(mut self, limits: AwsLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Other limits for one account (by access key id): a raised quota, or a small share for
    /// an account other tools use too.
    pub fn with_account_limits(
        mut self,
        access_key_id: impl Into<String>,
        limits: AwsLimits,
    ) -> Self {
        self.account_limits.insert(access_key_id.into(), limits);
        self
    }

    /// What each budget granted so far, by `access key id/region/service`.
    pub fn budget_stats(&self) -> std::collections::BTreeMap<String, BudgetStats> {
        self.budgets.stats()
    }

    /// The budget of (account, region, service).
    fn budget(&self, creds: &AwsCredentials, region: &str, service: &str) -> Arc<RequestBudget> {
        let key = format!(
            "{}{}/{region}/{service}",
            creds.access_key_id,
            self.partition_suffix()
        );
        let limits = self
            .account_limits
            .get(&creds.access_key_id)
            .unwrap_or(&self.limits);
        let limits = match service {
            "ec2" => &limits.ec2,
            "elb" => &limits.elb,
            // STS, and the pre-checks' IAM and Service Quotas calls.
            _ => &limits.sts,
        };
        self.budgets.get(&key, || limits.clone())
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
    pub(crate) fn partition_suffix(&self) -> String {
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
        let ec2_budget = self.budget(creds, region, "ec2");
        let sts_budget = self.budget(creds, region, "sts");
        let mut ec2 = aws_sdk_ec2::config::Builder::new()
            .http_client(budget::BudgetedClient {
                inner: self.http.clone(),
                budget: ec2_budget.clone(),
            })
            .retry_partition(partition("ec2"))
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .credentials_provider(credentials.clone())
            .retry_config(retry.clone())
            .interceptor(Counting(self.calls.clone()))
            .interceptor(ExtraHeaders(self.headers.clone()));
        let mut sts = aws_sdk_sts::config::Builder::new()
            .http_client(budget::BudgetedClient {
                inner: self.http.clone(),
                budget: sts_budget.clone(),
            })
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
        ec2 = ec2.interceptor(ThrottleSignal(ec2_budget));
        sts = sts.interceptor(ThrottleSignal(sts_budget));
        AwsClients {
            ec2: aws_sdk_ec2::Client::from_conf(ec2.build()),
            sts: aws_sdk_sts::Client::from_conf(sts.build()),
            region: region.to_string(),
        }
    }
}

/// The client of one more SDK (`$sdk`) for an account in a region, built the way every
/// client is: through the (account, region, `$service`) budget, its retry partition, the
/// call counter, the extra headers, the endpoint override and the crash hook.
macro_rules! service_client {
    ($conn:expr, $sdk:ident, $creds:expr, $region:expr, $service:literal) => {{
        use $sdk::config as c;
        let (conn, creds, region): (&AwsConnector, &AwsCredentials, &str) =
            ($conn, $creds, $region);
        let credentials = c::Credentials::new(
            creds.access_key_id.clone(),
            creds.secret_access_key.expose().to_string(),
            None,
            None,
            "spectro-cloud-account",
        );
        let svc_budget = conn.budget(creds, region, $service);
        let mut b = c::Builder::new()
            .http_client(budget::BudgetedClient {
                inner: conn.http.clone(),
                budget: svc_budget.clone(),
            })
            .retry_partition(c::retry::RetryPartition::new(format!(
                "spectro/{}/{region}/{}{}",
                creds.access_key_id,
                $service,
                conn.partition_suffix()
            )))
            .behavior_version(c::BehaviorVersion::latest())
            .region(c::Region::new(region.to_string()))
            .credentials_provider(credentials)
            .retry_config(conn.retry())
            .interceptor(Counting(conn.calls.clone()))
            .interceptor(ExtraHeaders(conn.headers.clone()));
        if let Some(e) = &conn.endpoint {
            b = b.endpoint_url(e.clone());
        }
        #[cfg(feature = "test-util")]
        if let Some(t) = &conn.crash {
            b = b.interceptor(Crasher(t.clone()));
        }
        b = b.interceptor(ThrottleSignal(svc_budget));
        $sdk::Client::from_conf(b.build())
    }};
}

impl AwsConnector {
    /// The classic ELB client of an account in a region.
    pub fn elb_client(
        &self,
        creds: &AwsCredentials,
        region: &str,
    ) -> aws_sdk_elasticloadbalancing::Client {
        service_client!(self, aws_sdk_elasticloadbalancing, creds, region, "elb")
    }

    /// The IAM client of an account (IAM is global; `region` picks the partition). Used by
    /// the pre-checks only; its calls share the account's STS budget.
    pub fn iam_client(&self, creds: &AwsCredentials, region: &str) -> aws_sdk_iam::Client {
        service_client!(self, aws_sdk_iam, creds, region, "iam")
    }

    /// The Service Quotas client of an account in a region (pre-checks; the STS budget).
    pub fn quotas_client(
        &self,
        creds: &AwsCredentials,
        region: &str,
    ) -> aws_sdk_servicequotas::Client {
        service_client!(self, aws_sdk_servicequotas, creds, region, "quotas")
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

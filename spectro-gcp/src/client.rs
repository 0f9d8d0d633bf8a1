//! The Compute Engine client: `google-cloud-compute-v1`'s service clients for one
//! service-account key, every request through the project's request budget and counted,
//! long-running operations waited for with `operations.wait` (zonal, regional, global).
//!
//! - **Credentials**: the account's service-account JSON key, through `google-cloud-auth`
//!   (a token signed with the key; scope `cloud-platform`). The key is parsed once per
//!   account; it never appears in Debug, errors or events.
//! - **One request budget per project** ([`spectro_core::budget::Budgets`], key
//!   `gcp/<project>`), shared by every cluster and account using the project: Compute
//!   Engine's rate quotas are per project. A throttled answer (`rateLimitExceeded`, 429)
//!   tells the budget, so every cluster of the project pauses; it is sent again after a short
//!   `Retry-After` at most twice, else returned as `Throttled`.
//! - **No retries inside the client library** (`NeverRetry`): every attempt is a request
//!   this module sent, counted and budgeted. A read that failed to send (a pooled connection
//!   the server closed) is sent once more.
//! - **Operations**: an insert or delete returns an operation; [`Gce::wait`] reads it with
//!   its scope's `operations.get` (zonal, regional, global) after a doubling pause until it
//!   is `DONE`, then reads its errors. Not `operations.wait`: the client library sends that
//!   POST with an empty JSON body, which Compute Engine's published spec (no request body)
//!   refuses; the library's own poller reads with `get` too.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use google_cloud_compute_v1::client::{
    BackendServices, Firewalls, GlobalAddresses, GlobalForwardingRules, GlobalOperations,
    HealthChecks, Images, InstanceGroups, Instances, Networks, RegionOperations, Regions, Routers,
    Subnetworks, TargetTcpProxies, ZoneOperations,
};
use google_cloud_compute_v1::model::Operation;
use google_cloud_gax::retry_policy::NeverRetry;
pub use spectro_core::budget::CallCounter;
use spectro_core::budget::{Budgets, CallClass, Limits, Rate, RequestBudget};
use spectro_core::model::GcpCredentials;

use crate::error::{parse_error_body, Class, GcpError};

/// Compute Engine's default API rate quotas per project (1,500 reads and 1,500 writes a
/// minute): 25/s each, a minute's worth at once. Configurable with
/// [`GcpConnector::with_limits`].
#[must_use]
pub fn compute_limits() -> Limits {
    Limits::new(Rate::new(25.0, 1500.0), Rate::new(25.0, 1500.0))
}

/// The public Compute Engine endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://compute.googleapis.com";

/// How to reach Compute Engine: the endpoint, the budgets per project, the call counter and
/// the clients of every service-account key seen so far.
#[derive(Clone)]
pub struct GcpConnector {
    endpoint: String,
    budgets: Arc<Budgets>,
    limits: Limits,
    calls: Arc<CallCounter>,
    clients: Arc<tokio::sync::Mutex<HashMap<String, Arc<Clients>>>>,
    known: Arc<Known>,
    operation_timeout: Duration,
    poll_first: Duration,
    poll_max: Duration,
    throttle_retries: u32,
    inline_retry_after: Duration,
}

impl std::fmt::Debug for GcpConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpConnector")
            .field("endpoint", &self.endpoint)
            .field("limits", &self.limits)
            .field("operation_timeout", &self.operation_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for GcpConnector {
    fn default() -> Self {
        GcpConnector {
            endpoint: DEFAULT_ENDPOINT.into(),
            budgets: Arc::default(),
            limits: compute_limits(),
            calls: Arc::default(),
            clients: Arc::default(),
            known: Arc::default(),
            operation_timeout: Duration::from_secs(600),
            poll_first: Duration::from_secs(1),
            poll_max: Duration::from_secs(8),
            throttle_retries: 2,
            inline_retry_after: Duration::from_secs(30),
        }
    }
}

impl GcpConnector {
    /// Another Compute Engine endpoint (a private endpoint, a test fake).
    #[must_use]
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = endpoint.into().trim_end_matches('/').to_string();
        self
    }

    /// The budget of every project (default [`compute_limits`]).
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Shares request budgets with other connectors (e.g. several providers of one process).
    #[must_use]
    pub fn with_budgets(mut self, budgets: Arc<Budgets>) -> Self {
        self.budgets = budgets;
        self
    }

    /// How long one call waits for an operation before answering `StillRunning` (default
    /// 10 minutes; the engine calls again later and meets the resource).
    #[must_use]
    pub fn with_operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// How operations are polled: the first read after `first`, then after a pause that
    /// doubles up to `max` (default 1 s to 8 s).
    #[must_use]
    pub fn with_polling(mut self, first: Duration, max: Duration) -> Self {
        self.poll_first = first;
        self.poll_max = max.max(first);
        self
    }

    /// Throttled requests are sent again at most `retries` times when the cloud asks for a
    /// pause no longer than `max_pause`; otherwise `Throttled` goes to the engine.
    #[must_use]
    pub fn with_throttle_retries(mut self, retries: u32, max_pause: Duration) -> Self {
        self.throttle_retries = retries;
        self.inline_retry_after = max_pause;
        self
    }

    /// The endpoint in use.
    #[must_use]
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Every attempt by operation.
    #[must_use]
    pub fn calls(&self) -> &Arc<CallCounter> {
        &self.calls
    }

    /// The request budgets, by `gcp/<project>`.
    #[must_use]
    pub fn budgets(&self) -> &Arc<Budgets> {
        &self.budgets
    }

    /// The budget of `project`.
    #[must_use]
    pub fn budget(&self, project: &str) -> Arc<RequestBudget> {
        self.budgets
            .get(&format!("gcp/{project}"), || self.limits.clone())
    }

    /// A client of `project` with the account's key (clients are built once per key).
    pub async fn gce(
        &self,
        account: &str,
        creds: &GcpCredentials,
        project: &str,
    ) -> Result<Gce, GcpError> {
        let key = creds.service_account_json.expose();
        let id = crate::names::short_hash(&[key, &self.endpoint]);
        let mut cache = self.clients.lock().await;
        let clients = match cache.get(&id) {
            Some(c) => c.clone(),
            None => {
                let c = Arc::new(Clients::build(account, key, &self.endpoint).await?);
                cache.insert(id, c.clone());
                c
            }
        };
        drop(cache);
        Ok(Gce {
            c: clients,
            project: project.to_string(),
            budget: self.budget(project),
            connector: self.clone(),
        })
    }
}

/// What this process has seen of the cloud, so that a repeated call does not ask again:
/// resources its own operations made (or found), the API endpoints' addresses, the
/// members of control-plane instance groups. Only a cache: after a restart everything is
/// learnt again from the cloud (an insert answered `alreadyExists`, one member listing).
#[derive(Debug, Default)]
pub struct Known {
    exists: std::sync::Mutex<std::collections::HashSet<String>>,
    addresses: std::sync::Mutex<HashMap<String, String>>,
    members: std::sync::Mutex<HashMap<String, std::collections::HashSet<String>>>,
    failures: std::sync::Mutex<HashMap<String, u32>>,
}

fn locked<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Known {
    /// True when `key` is known to exist.
    pub fn exists(&self, key: &str) -> bool {
        locked(&self.exists).contains(key)
    }
    /// Records that `key` exists (or, with `false`, that it may not).
    pub fn set(&self, key: &str, exists: bool) {
        let mut e = locked(&self.exists);
        if exists {
            e.insert(key.to_string());
        } else {
            e.remove(key);
        }
    }
    /// Forgets every key starting with `prefix` (a deleted cluster).
    pub fn forget(&self, prefix: &str) {
        locked(&self.exists).retain(|k| !k.starts_with(prefix));
        locked(&self.addresses).retain(|k, _| !k.starts_with(prefix));
        locked(&self.members).retain(|k, _| !k.starts_with(prefix));
    }
    /// Forgets what is known of instance group `key`'s members (listed again next time).
    pub fn forget_members(&self, key: &str) {
        locked(&self.members).remove(key);
    }
    /// How many operations of batch `token` failed in this process.
    pub fn failures(&self, token: &str) -> u32 {
        locked(&self.failures).get(token).copied().unwrap_or(0)
    }
    /// Records a failed operation of batch `token`.
    pub fn failed(&self, token: &str) {
        *locked(&self.failures).entry(token.to_string()).or_default() += 1;
    }
    /// The IP of the address `key`, when known.
    pub fn address(&self, key: &str) -> Option<String> {
        locked(&self.addresses).get(key).cloned()
    }
    /// Records the IP of the address `key`.
    pub fn set_address(&self, key: &str, ip: &str) {
        locked(&self.addresses).insert(key.to_string(), ip.to_string());
    }
    /// The known members of instance group `key` (None: never listed by this process).
    pub fn members(&self, key: &str) -> Option<std::collections::HashSet<String>> {
        locked(&self.members).get(key).cloned()
    }
    /// Adds members to instance group `key` (creating the entry with `listed`).
    pub fn add_members(&self, key: &str, names: impl IntoIterator<Item = String>, listed: bool) {
        let mut m = locked(&self.members);
        if listed {
            m.insert(key.to_string(), names.into_iter().collect());
        } else if let Some(set) = m.get_mut(key) {
            set.extend(names);
        }
    }
}

/// The key's identity, read from the JSON key (never the private key).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct KeyIdentity {
    /// The service account's email.
    pub client_email: String,
    /// The project the service account belongs to.
    #[serde(default)]
    pub project_id: String,
}

/// Reads the identity of a service-account JSON key; the error names what is wrong, never
/// the key.
pub fn key_identity(account: &str, json: &str) -> Result<KeyIdentity, GcpError> {
    let bad = |message: String| GcpError::Credentials {
        account: account.to_string(),
        message,
    };
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| {
        bad(format!(
            "credentials.gcp.serviceAccountJson is not JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    if v.get("type").and_then(|t| t.as_str()) != Some("service_account") {
        return Err(bad(
            "credentials.gcp.serviceAccountJson is not a service-account key (`type` must be `service_account`)".into(),
        ));
    }
    for field in ["client_email", "private_key", "private_key_id"] {
        if v.get(field)
            .and_then(|t| t.as_str())
            .is_none_or(str::is_empty)
        {
            return Err(bad(format!(
                "credentials.gcp.serviceAccountJson has no `{field}`"
            )));
        }
    }
    serde_json::from_value(v).map_err(|e| bad(format!("credentials.gcp.serviceAccountJson: {e}")))
}

/// The service clients of one key.
pub struct Clients {
    /// The key's identity.
    pub identity: KeyIdentity,
    credentials: google_cloud_auth::credentials::Credentials,
    /// Instances.
    pub instances: Instances,
    /// Networks.
    pub networks: Networks,
    /// Subnetworks.
    pub subnetworks: Subnetworks,
    /// Routers (Cloud NAT lives in a router).
    pub routers: Routers,
    /// Firewall rules.
    pub firewalls: Firewalls,
    /// Global addresses.
    pub addresses: GlobalAddresses,
    /// Health checks.
    pub health_checks: HealthChecks,
    /// Backend services.
    pub backend_services: BackendServices,
    /// Instance groups.
    pub instance_groups: InstanceGroups,
    /// Target TCP proxies.
    pub proxies: TargetTcpProxies,
    /// Global forwarding rules.
    pub forwarding_rules: GlobalForwardingRules,
    /// Images.
    pub images: Images,
    /// Regions.
    pub regions: Regions,
    /// Global operations.
    pub global_ops: GlobalOperations,
    /// Regional operations.
    pub region_ops: RegionOperations,
    /// Zonal operations.
    pub zone_ops: ZoneOperations,
}

macro_rules! build_client {
    ($t:ty, $endpoint:expr, $creds:expr) => {
        <$t>::builder()
            .with_endpoint($endpoint)
            .with_credentials($creds.clone())
            .with_retry_policy(NeverRetry)
            .build()
            .await
            .map_err(|e| GcpError::Transport {
                op: concat!(stringify!($t), ".Build").into(),
                message: e.to_string(),
            })?
    };
}

impl Clients {
    async fn build(account: &str, key: &str, endpoint: &str) -> Result<Self, GcpError> {
        let identity = key_identity(account, key)?;
        let json: serde_json::Value =
            serde_json::from_str(key).map_err(|_| GcpError::Credentials {
                account: account.into(),
                message: "credentials.gcp.serviceAccountJson is not JSON".into(),
            })?;
        let credentials = google_cloud_auth::credentials::service_account::Builder::new(json)
            .build()
            .map_err(|e| GcpError::Credentials {
                account: account.into(),
                message: format!(
                    "the service-account key of {} is unusable: {e}",
                    identity.client_email
                ),
            })?;
        let ep = endpoint.to_string();
        Ok(Clients {
            identity,
            instances: build_client!(Instances, &ep, credentials),
            networks: build_client!(Networks, &ep, credentials),
            subnetworks: build_client!(Subnetworks, &ep, credentials),
            routers: build_client!(Routers, &ep, credentials),
            firewalls: build_client!(Firewalls, &ep, credentials),
            addresses: build_client!(GlobalAddresses, &ep, credentials),
            health_checks: build_client!(HealthChecks, &ep, credentials),
            backend_services: build_client!(BackendServices, &ep, credentials),
            instance_groups: build_client!(InstanceGroups, &ep, credentials),
            proxies: build_client!(TargetTcpProxies, &ep, credentials),
            forwarding_rules: build_client!(GlobalForwardingRules, &ep, credentials),
            images: build_client!(Images, &ep, credentials),
            regions: build_client!(Regions, &ep, credentials),
            global_ops: build_client!(GlobalOperations, &ep, credentials),
            region_ops: build_client!(RegionOperations, &ep, credentials),
            zone_ops: build_client!(ZoneOperations, &ep, credentials),
            credentials,
        })
    }
}

/// The clients of one key acting in one project, with the project's budget.
#[derive(Clone)]
pub struct Gce {
    /// The service clients.
    pub c: Arc<Clients>,
    /// The project.
    pub project: String,
    budget: Arc<RequestBudget>,
    connector: GcpConnector,
}

impl std::fmt::Debug for Gce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gce")
            .field("project", &self.project)
            .field("client_email", &self.c.identity.client_email)
            .finish_non_exhaustive()
    }
}

/// Converts a client-library error into a [`GcpError`] of operation `op`.
#[must_use]
pub fn convert(op: &str, e: &google_cloud_compute_v1::Error) -> GcpError {
    let retry_after = e
        .http_headers()
        .and_then(|h| h.get("retry-after"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)));
    if let Some(status) = e.status() {
        let reason = status
            .details
            .iter()
            .find_map(|d| match d {
                google_cloud_gax::error::rpc::StatusDetails::ErrorInfo(i) => Some(i.reason.clone()),
                _ => None,
            })
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| status.code.name().to_string());
        return GcpError::Api {
            op: op.into(),
            status: e.http_status_code().unwrap_or(500),
            reason,
            message: status.message.clone(),
            retry_after,
        };
    }
    if let Some(code) = e.http_status_code() {
        let (reason, message) = e
            .http_payload()
            .and_then(|p| parse_error_body(p))
            .unwrap_or_else(|| (format!("http{code}"), e.to_string()));
        return GcpError::Api {
            op: op.into(),
            status: code,
            reason,
            message,
            retry_after,
        };
    }
    if e.is_authentication() {
        return GcpError::Credentials {
            account: String::new(),
            message: format!("{op}: no token: {e}"),
        };
    }
    GcpError::Transport {
        op: op.into(),
        message: e.to_string(),
    }
}

fn last_segment(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

impl Gce {
    /// What this process knows of the cloud.
    #[must_use]
    pub fn known(&self) -> &Known {
        &self.connector.known
    }

    /// The project's budget.
    #[must_use]
    pub fn budget(&self) -> &Arc<RequestBudget> {
        &self.budget
    }

    /// Proves the key signs a token (no request: `google-cloud-auth` signs it with the key).
    pub async fn check_token(&self, account: &str) -> Result<(), GcpError> {
        self.c
            .credentials
            .headers(http::Extensions::new())
            .await
            .map(|_| ())
            .map_err(|e| GcpError::Credentials {
                account: account.into(),
                message: format!(
                    "the service-account key of {} cannot make a token: {e}",
                    self.c.identity.client_email
                ),
            })
    }

    /// Sends one request of operation `op` (`make` builds it; it is called again for each
    /// attempt): budget permit, counted, throttling honoured, errors classified.
    pub async fn call<T, F, Fut>(&self, op: &str, class: CallClass, make: F) -> Result<T, GcpError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = google_cloud_compute_v1::Result<T>>,
    {
        let mut throttled = 0;
        let mut resent = false;
        loop {
            if let Err(e) = self.budget.acquire(class, 1).await {
                return Err(GcpError::OverBudget {
                    project: self.project.clone(),
                    message: e.to_string(),
                    retry_after: e.retry_after,
                });
            }
            self.connector.calls.count(op);
            match make().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let err = convert(op, &e);
                    match err.class() {
                        Class::Throttled => {
                            let after = match &err {
                                GcpError::Api { retry_after, .. } => *retry_after,
                                _ => None,
                            };
                            self.budget.throttled(class, after);
                            let wait = err.retry_after();
                            if throttled < self.connector.throttle_retries
                                && wait <= self.connector.inline_retry_after
                            {
                                throttled += 1;
                                tracing::debug!(
                                    op,
                                    ?wait,
                                    "Compute Engine throttled the request; sending it again"
                                );
                                tokio::time::sleep(wait).await;
                                continue;
                            }
                            return Err(err);
                        }
                        Class::Transient
                            if class == CallClass::Read
                                && !resent
                                && (e.is_connect()
                                    || e.is_io()
                                    || e.is_transient_and_before_rpc()) =>
                        {
                            resent = true;
                            tracing::debug!(
                                op,
                                "Compute Engine read failed to send; sending it again"
                            );
                            continue;
                        }
                        _ => return Err(err),
                    }
                }
            }
        }
    }

    /// Waits until `op` (the answer of an insert or delete of operation `what`) is done,
    /// reading it with its scope's `operations.get` after a pause that doubles from
    /// [`GcpConnector::with_polling`]'s first to its longest; its errors become
    /// [`GcpError::OperationFailed`].
    pub async fn wait(&self, what: &str, mut op: Operation) -> Result<Operation, GcpError> {
        let deadline = spectro_core::clock::instant_now() + self.connector.operation_timeout;
        let mut pause = self.connector.poll_first;
        loop {
            if op
                .status
                .as_ref()
                .and_then(|s| s.name())
                .is_some_and(|s| s == "DONE")
            {
                return match op.error.as_ref().and_then(|e| e.errors.first()) {
                    Some(first) => Err(GcpError::OperationFailed {
                        op: what.into(),
                        code: first.code.clone().unwrap_or_default(),
                        message: first.message.clone().unwrap_or_default(),
                    }),
                    None => Ok(op),
                };
            }
            if spectro_core::clock::instant_now() >= deadline {
                return Err(GcpError::StillRunning {
                    op: what.into(),
                    waited: self.connector.operation_timeout,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(self.connector.poll_max);
            let name = op.name.clone().unwrap_or_default();
            let project = self.project.clone();
            op = if let Some(zone) = op.zone.as_deref().map(last_segment) {
                let zone = zone.to_string();
                self.call("ZoneOperations.Get", CallClass::Read, || {
                    self.c
                        .zone_ops
                        .get()
                        .set_project(&project)
                        .set_zone(&zone)
                        .set_operation(&name)
                        .send()
                })
                .await?
            } else if let Some(region) = op.region.as_deref().map(last_segment) {
                let region = region.to_string();
                self.call("RegionOperations.Get", CallClass::Read, || {
                    self.c
                        .region_ops
                        .get()
                        .set_project(&project)
                        .set_region(&region)
                        .set_operation(&name)
                        .send()
                })
                .await?
            } else {
                self.call("GlobalOperations.Get", CallClass::Read, || {
                    self.c
                        .global_ops
                        .get()
                        .set_project(&project)
                        .set_operation(&name)
                        .send()
                })
                .await?
            };
        }
    }

    /// The `requestId` of the insert of `key` (a resource path or a batch token): the same
    /// for every attempt, a new one after an attempt whose operation failed (Compute Engine
    /// answers a repeated id with the first request's operation, failure included).
    #[must_use]
    pub fn request_id(&self, key: &str) -> String {
        match self.known().failures(key) {
            0 => crate::names::request_id(&[key]),
            n => crate::names::request_id(&[key, &n.to_string()]),
        }
    }

    /// [`Gce::write`] of an insert whose `make` sends [`Gce::request_id`]`(key)`: an
    /// operation that failed gives the key a new request id for the next attempt.
    pub async fn insert<F, Fut>(&self, op: &str, key: &str, make: F) -> Result<bool, GcpError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = google_cloud_compute_v1::Result<Operation>>,
    {
        let out = self.write(op, make).await;
        if let Err(GcpError::OperationFailed { .. }) = &out {
            self.known().failed(key);
        }
        out
    }

    /// Sends a write (`make`) and waits for its operation; `alreadyExists` (an insert
    /// repeated after a crash) and, for deletes, `notFound` count as done. True when this
    /// call's operation did it (false: it was done already).
    pub async fn write<F, Fut>(&self, op: &str, make: F) -> Result<bool, GcpError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = google_cloud_compute_v1::Result<Operation>>,
    {
        let delete = op.ends_with(".Delete");
        let tolerated = |e: &GcpError| match e.class() {
            Class::AlreadyExists => !delete,
            Class::NotFound => delete,
            _ => false,
        };
        match self.call(op, CallClass::Mutate, make).await {
            Ok(operation) => match self.wait(op, operation).await {
                Err(e) if tolerated(&e) => Ok(false),
                // The cloud took the write: only the operation's own outcome is final; a
                // failure to read the operation (gone, a token refresh, the network) is not.
                Err(e)
                    if !matches!(e, GcpError::OperationFailed { .. })
                        && e.class() != Class::Throttled =>
                {
                    Err(GcpError::Transport {
                        op: op.into(),
                        message: format!("the operation was accepted, reading it failed: {e}"),
                    })
                }
                other => other.map(|_| true),
            },
            Err(e) if tolerated(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// A JSON literal as a Compute Engine model (the client library's types); the field names
/// are Compute Engine's own, checked against its spec by the tests.
pub fn body<T: serde::de::DeserializeOwned>(
    what: &str,
    v: serde_json::Value,
) -> Result<T, GcpError> {
    serde_json::from_value(v).map_err(|e| GcpError::Transport {
        op: what.into(),
        message: format!("the request body does not fit the client library's model: {e}"),
    })
}

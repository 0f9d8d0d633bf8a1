//! The thin typed ARM client: a bearer token from Entra ID (client credentials), every
//! request through the subscription's request budget, `api-version` on every call,
//! long-running operations followed through `Azure-AsyncOperation` / `Location`, 429 and
//! `Retry-After` honoured, every attempt counted by operation.
//!
//! Why not the `azure_mgmt_*` crates: that line stopped at 0.21 on an old `azure_core`, and
//! its generated clients answer a long-running PUT by sending the PUT again until the
//! resource is provisioned, instead of polling the operation ARM hands back. Every repeated
//! PUT is a write against the subscription's write budget, and a repeated VM PUT during
//! provisioning is refused (`OperationNotAllowed`) or restarts it. This client sends each
//! write once and polls the operation URL (a read).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use spectro_core::budget::{Budgets, CallClass, Limits, Rate, RequestBudget};
use spectro_core::clock::instant_now;
use spectro_core::model::AzureCredentials;
use spectro_core::secret::Secret;
use tokio::time::Instant;

use crate::error::AzureError;

/// `api-version` of Microsoft.Compute calls.
pub const COMPUTE_API: &str = "2024-07-01";
/// `api-version` of Microsoft.Network calls.
pub const NETWORK_API: &str = "2024-03-01";
/// Azure's public ARM endpoint.
pub const PUBLIC_ARM: &str = "https://management.azure.com";
/// Azure's public Entra ID authority.
pub const PUBLIC_AUTHORITY: &str = "https://login.microsoftonline.com";

pub use spectro_core::budget::CallCounter;

/// A bearer token for ARM.
#[derive(Clone)]
pub struct AccessToken {
    /// The token.
    pub token: Secret,
    /// When it stops working.
    pub expires_at: Instant,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"***")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Where ARM tokens come from. The default, [`ClientSecretFlow`], asks Entra ID with the
/// account's client id and secret; tests and applications with their own identity (managed
/// identity, workload identity) inject another with [`AzureConnector::with_token_source`].
#[async_trait]
pub trait TokenSource: Send + Sync + fmt::Debug + 'static {
    /// A token for ARM acting as `creds`.
    async fn token(&self, creds: &AzureCredentials) -> Result<AccessToken, AzureError>;
}

/// The OAuth 2.0 client-credentials grant against an Entra ID authority.
#[derive(Debug, Clone)]
pub struct ClientSecretFlow {
    authority: String,
    scope: String,
    http: reqwest::Client,
    calls: Arc<CallCounter>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct TokenError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

#[async_trait]
impl TokenSource for ClientSecretFlow {
    async fn token(&self, creds: &AzureCredentials) -> Result<AccessToken, AzureError> {
        let op = "Token";
        let url = format!(
            "{}/{}/oauth2/v2.0/token",
            self.authority.trim_end_matches('/'),
            creds.tenant_id
        );
        let body = form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &creds.client_id),
            ("client_secret", creds.client_secret.expose()),
            ("scope", &self.scope),
        ]);
        self.calls.count(op);
        let resp = self
            .http
            .post(&url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|source| AzureError::Transport {
                op: op.into(),
                source: source.without_url(),
            })?;
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        let bytes = resp.bytes().await.map_err(|source| AzureError::Transport {
            op: op.into(),
            source: source.without_url(),
        })?;
        if !status.is_success() {
            let e: TokenError = serde_json::from_slice(&bytes).unwrap_or(TokenError {
                error: format!("HttpStatus{}", status.as_u16()),
                error_description: String::new(),
            });
            // Entra ID's description names the client and tenant, never the secret; cut its
            // trace and correlation ids.
            let description = e
                .error_description
                .split("\r\n")
                .next()
                .unwrap_or_default()
                .to_string();
            return Err(AzureError::Api {
                op: op.into(),
                status: status.as_u16(),
                code: e.error,
                message: format!(
                    "Entra ID refused a token to client {} of tenant {}: {description}",
                    creds.client_id, creds.tenant_id
                ),
                retry_after,
            });
        }
        let t: TokenAnswer = serde_json::from_slice(&bytes).map_err(|e| AzureError::Decode {
            op: op.into(),
            message: format!("token answer: {e}"),
        })?;
        let secs = match t.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(3599),
            Some(serde_json::Value::String(s)) => s.parse().unwrap_or(3599),
            _ => 3599,
        };
        Ok(AccessToken {
            token: Secret::new(t.access_token),
            expires_at: instant_now() + Duration::from_secs(secs),
        })
    }
}

/// `application/x-www-form-urlencoded` of `pairs`.
fn form(pairs: &[(&str, &str)]) -> String {
    fn enc(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    out.push(b as char)
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn retry_after(h: &HeaderMap) -> Option<Duration> {
    h.get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)))
}

/// ARM's limits per subscription (its token buckets: reads refill 25/s from 250, writes
/// 10/s from 200), the default budget of every subscription.
#[must_use]
pub fn arm_limits() -> Limits {
    Limits::new(Rate::new(25.0, 250.0), Rate::new(10.0, 200.0))
}

/// How to reach Azure: endpoints, the token source, the budgets per subscription, the call
/// counter and the pacing of long-running operations. Cheap to clone (shared state).
#[derive(Clone)]
pub struct AzureConnector {
    endpoint: String,
    authority: String,
    token_source: Option<Arc<dyn TokenSource>>,
    limits: Limits,
    budgets: Arc<Budgets>,
    calls: Arc<CallCounter>,
    http: reqwest::Client,
    poll_interval: Duration,
    operation_timeout: Duration,
    throttle_retries: u32,
    inline_retry_after: Duration,
    tokens: Arc<tokio::sync::Mutex<HashMap<String, AccessToken>>>,
}

impl fmt::Debug for AzureConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token cache (its keys derive from the secrets).
        f.debug_struct("AzureConnector")
            .field("endpoint", &self.endpoint)
            .field("authority", &self.authority)
            .field("token_source", &self.token_source)
            .field("limits", &self.limits)
            .field("poll_interval", &self.poll_interval)
            .field("operation_timeout", &self.operation_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for AzureConnector {
    fn default() -> Self {
        AzureConnector {
            endpoint: PUBLIC_ARM.into(),
            authority: PUBLIC_AUTHORITY.into(),
            token_source: None,
            limits: arm_limits(),
            budgets: Arc::default(),
            calls: Arc::default(),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap_or_default(),
            poll_interval: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(600),
            throttle_retries: 2,
            inline_retry_after: Duration::from_secs(30),
            tokens: Arc::default(),
        }
    }
}

impl AzureConnector {
    /// Public Azure, or the endpoints of `AZURE_RESOURCE_MANAGER_ENDPOINT` (ARM, e.g. a
    /// sovereign cloud or the test fake) and `AZURE_AUTHORITY_HOST` (Entra ID) when set.
    #[must_use]
    pub fn from_env() -> Self {
        let mut c = AzureConnector::default();
        if let Ok(e) = std::env::var("AZURE_RESOURCE_MANAGER_ENDPOINT") {
            if !e.trim().is_empty() {
                c = c.with_endpoint(e.trim());
            }
        }
        if let Ok(a) = std::env::var("AZURE_AUTHORITY_HOST") {
            if !a.trim().is_empty() {
                c = c.with_authority(a.trim());
            }
        }
        c
    }

    /// ARM at `url` instead of `https://management.azure.com`.
    #[must_use]
    pub fn with_endpoint(mut self, url: &str) -> Self {
        self.endpoint = url.trim_end_matches('/').to_string();
        self
    }

    /// Entra ID at `url` instead of `https://login.microsoftonline.com`.
    #[must_use]
    pub fn with_authority(mut self, url: &str) -> Self {
        self.authority = url.trim_end_matches('/').to_string();
        self
    }

    /// Tokens from `source` instead of the client-credentials grant.
    #[must_use]
    pub fn with_token_source(mut self, source: Arc<dyn TokenSource>) -> Self {
        self.token_source = Some(source);
        self
    }

    /// The budget of every subscription (default [`arm_limits`]).
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Polls of long-running operations that name no `Retry-After` wait this long (5 s).
    #[must_use]
    pub fn with_poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }

    /// The longest one long-running operation is followed before the call reports it still
    /// running (retryable; the next call finds the resource by name) (10 min).
    #[must_use]
    pub fn with_operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// A throttled request is sent again at most `retries` times when the cloud's
    /// `Retry-After` is at most `max_wait` (default 2 times, 30 s); past that the call
    /// fails as throttled and the engine retries after the delay.
    #[must_use]
    pub fn with_throttle_retries(mut self, retries: u32, max_wait: Duration) -> Self {
        self.throttle_retries = retries;
        self.inline_retry_after = max_wait;
        self
    }

    /// Every attempt by operation.
    pub fn calls(&self) -> &Arc<CallCounter> {
        &self.calls
    }

    /// The request budgets, by `azure/<subscription>`.
    pub fn budgets(&self) -> &Arc<Budgets> {
        &self.budgets
    }

    /// The ARM endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A client acting as `creds` in `subscription`.
    pub fn arm(&self, creds: &AzureCredentials, subscription: &str) -> Arm {
        let limits = self.limits.clone();
        Arm {
            connector: self.clone(),
            creds: creds.clone(),
            subscription: subscription.to_string(),
            budget: self
                .budgets
                .get(&format!("azure/{subscription}"), move || limits),
        }
    }

    async fn token(&self, creds: &AzureCredentials) -> Result<Secret, AzureError> {
        // One cache entry per identity (tenant, client, secret): a rotated secret asks again.
        // The lock is held across a fetch: concurrent calls of a cold cache ask once.
        let key = format!(
            "{}/{}/{}",
            creds.tenant_id,
            creds.client_id,
            fingerprint(creds.client_secret.expose())
        );
        let mut cache = self.tokens.lock().await;
        if let Some(t) = cache.get(&key) {
            if t.expires_at > instant_now() + Duration::from_secs(300) {
                return Ok(t.token.clone());
            }
        }
        let t = match &self.token_source {
            Some(s) => s.token(creds).await?,
            None => {
                ClientSecretFlow {
                    authority: self.authority.clone(),
                    // The audience is the ARM endpoint in use (public or sovereign cloud).
                    scope: format!("{}/.default", self.endpoint),
                    http: self.http.clone(),
                    calls: self.calls.clone(),
                }
                .token(creds)
                .await?
            }
        };
        let token = t.token.clone();
        cache.insert(key, t);
        Ok(token)
    }

    /// True when a URL an answer named (`nextLink`, an operation) is on the ARM endpoint or
    /// the authority: the bearer token is never sent anywhere else.
    fn trusted(&self, url: &str) -> bool {
        [&self.endpoint, &self.authority].iter().any(|origin| {
            url.strip_prefix(origin.as_str()).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')
            })
        })
    }
}

/// A short non-reversible fingerprint of a secret (for cache keys only; FNV-1a).
fn fingerprint(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// An ARM answer: status, headers, JSON body (`Null` when empty).
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: serde_json::Value,
}

/// How to learn the end of a long-running operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poller {
    /// `Azure-AsyncOperation`: an operation-status resource.
    AsyncOperation(String),
    /// `Location`: 202 while running.
    Location(String),
    /// No header: the resource's own `provisioningState`.
    Resource(String),
    /// A delete without a header: the resource's URL until it answers 404.
    Gone(String),
}

#[derive(Deserialize)]
struct CloudError {
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct OperationStatus {
    #[serde(default)]
    status: String,
    #[serde(default)]
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
struct Page<T> {
    #[serde(default = "Vec::new")]
    value: Vec<T>,
    #[serde(rename = "nextLink", default)]
    next_link: Option<String>,
}

/// A client of one subscription, acting as one identity.
#[derive(Debug, Clone)]
pub struct Arm {
    connector: AzureConnector,
    creds: AzureCredentials,
    subscription: String,
    budget: Arc<RequestBudget>,
}

impl Arm {
    /// The subscription.
    pub fn subscription(&self) -> &str {
        &self.subscription
    }

    /// The budget of the subscription.
    pub fn budget(&self) -> &Arc<RequestBudget> {
        &self.budget
    }

    /// `/subscriptions/<sub>/resourceGroups/<rg>/providers/<provider>/<rest>`.
    #[must_use]
    pub fn resource_path(&self, rg: &str, provider: &str, rest: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{rg}/providers/{provider}/{rest}",
            self.subscription
        )
    }

    /// Gets a token for the client's identity (the account check's first step).
    pub async fn check_token(&self) -> Result<(), AzureError> {
        self.connector.token(&self.creds).await.map(|_| ())
    }

    /// The URL of `path_or_url` (an absolute URL is kept as is) with `api-version`.
    #[must_use]
    pub fn url_of(&self, path_or_url: &str, api: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            return path_or_url.to_string();
        }
        let sep = if path_or_url.contains('?') { '&' } else { '?' };
        format!(
            "{}{path_or_url}{sep}api-version={api}",
            self.connector.endpoint
        )
    }

    /// Sends one request (retrying throttled answers within the connector's limits) and
    /// returns the answer, error statuses as [`AzureError::Api`].
    pub async fn send(
        &self,
        op: &str,
        method: Method,
        url: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, AzureError> {
        let class = if method == Method::GET {
            CallClass::Read
        } else {
            CallClass::Mutate
        };
        if !self.connector.trusted(url) {
            return Err(AzureError::Decode {
                op: op.into(),
                message: format!(
                    "an answer pointed at {}, which is neither the ARM endpoint nor the authority: the token is not sent there",
                    url.split('?').next().unwrap_or_default()
                ),
            });
        }
        let mut attempt = 0;
        loop {
            if let Err(e) = self.budget.acquire(class, 1).await {
                return Err(AzureError::OverBudget {
                    subscription: self.subscription.clone(),
                    message: e.to_string(),
                    retry_after: e.retry_after,
                });
            }
            let token = self.connector.token(&self.creds).await?;
            let mut req = self
                .connector
                .http
                .request(method.clone(), url)
                .header(AUTHORIZATION, format!("Bearer {}", token.expose()));
            if let Some(b) = body {
                req = req
                    .header(CONTENT_TYPE, "application/json")
                    .body(serde_json::to_vec(b).unwrap_or_default());
            }
            self.connector.calls.count(op);
            let resp = match req.send().await {
                Ok(r) => r,
                // A read whose request never got out (a pooled connection the server had
                // closed) is sent once more at once; a write is left to the caller.
                Err(e)
                    if method == Method::GET
                        && attempt == 0
                        && (e.is_connect() || e.is_request()) =>
                {
                    attempt += 1;
                    tracing::debug!(op, "ARM read failed to send; sending it again");
                    continue;
                }
                Err(source) => {
                    return Err(AzureError::Transport {
                        op: op.into(),
                        source: source.without_url(),
                    })
                }
            };
            let status = resp.status();
            let headers = resp.headers().clone();
            let bytes = resp.bytes().await.map_err(|source| AzureError::Transport {
                op: op.into(),
                source: source.without_url(),
            })?;
            if status == StatusCode::TOO_MANY_REQUESTS {
                let after = retry_after(&headers);
                self.budget.throttled(class, after);
                let wait = after.unwrap_or(crate::error::DEFAULT_RETRY_AFTER);
                if attempt < self.connector.throttle_retries
                    && wait <= self.connector.inline_retry_after
                {
                    attempt += 1;
                    tracing::debug!(op, ?wait, "ARM throttled the request; sending it again");
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
            let json: serde_json::Value = if bytes.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
            };
            if !status.is_success() {
                let (code, message) = match serde_json::from_value::<CloudError>(json) {
                    Ok(CloudError { error: Some(e) }) => (e.code, e.message),
                    _ => (
                        format!("HttpStatus{}", status.as_u16()),
                        String::from_utf8_lossy(&bytes).chars().take(300).collect(),
                    ),
                };
                return Err(AzureError::Api {
                    op: op.into(),
                    status: status.as_u16(),
                    code,
                    message,
                    retry_after: retry_after(&headers),
                });
            }
            return Ok(Answer {
                status,
                headers,
                body: json,
            });
        }
    }

    /// GET of one resource; `None` when it does not exist.
    pub async fn get<T: DeserializeOwned>(
        &self,
        op: &str,
        path: &str,
        api: &str,
    ) -> Result<Option<T>, AzureError> {
        match self
            .send(op, Method::GET, &self.url_of(path, api), None)
            .await
        {
            Ok(a) => decode(op, a.body).map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every item of a list, following `nextLink`. A missing parent (resource group) is an
    /// error.
    pub async fn list<T: DeserializeOwned>(
        &self,
        op: &str,
        path: &str,
        api: &str,
    ) -> Result<Vec<T>, AzureError> {
        let mut out = Vec::new();
        let mut url = self.url_of(path, api);
        let mut seen = std::collections::HashSet::new();
        loop {
            let a = self.send(op, Method::GET, &url, None).await?;
            let page: Page<T> = decode(op, a.body)?;
            out.extend(page.value);
            seen.insert(url);
            match page.next_link {
                Some(next) if !next.is_empty() => {
                    if seen.contains(&next) {
                        return Err(AzureError::Decode {
                            op: op.into(),
                            message: "nextLink repeats a page already read".into(),
                        });
                    }
                    url = next;
                }
                _ => return Ok(out),
            }
        }
    }

    /// PUT of a resource (create or update). Returns the answer's resource and, when ARM
    /// still works on it, how to follow the operation.
    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        op: &str,
        path: &str,
        api: &str,
        body: &B,
    ) -> Result<(T, Option<Poller>), AzureError> {
        let body = serde_json::to_value(body).map_err(|e| AzureError::Decode {
            op: op.into(),
            message: format!("request body: {e}"),
        })?;
        let url = self.url_of(path, api);
        let a = self.send(op, Method::PUT, &url, Some(&body)).await?;
        let poller = poller_of(&a, &url);
        Ok((decode(op, a.body)?, poller))
    }

    /// DELETE of a resource; `None` when nothing is left to wait for (already gone, or
    /// deleted at once).
    pub async fn delete(
        &self,
        op: &str,
        path: &str,
        api: &str,
    ) -> Result<Option<Poller>, AzureError> {
        let url = self.url_of(path, api);
        match self.send(op, Method::DELETE, &url, None).await {
            Ok(a) if a.status == StatusCode::ACCEPTED || a.headers.contains_key(ASYNC_OP) => {
                let header = a.headers.contains_key(ASYNC_OP) || a.headers.contains_key("location");
                Ok(Some(if header {
                    poller_of(&a, &url).unwrap_or(Poller::Gone(url))
                } else {
                    Poller::Gone(url)
                }))
            }
            Ok(_) => Ok(None),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Follows a long-running operation to its end: `Ok` when it succeeded, the operation's
    /// error when it failed, [`AzureError::StillRunning`] after the connector's timeout.
    pub async fn wait(&self, op: &str, poller: &Poller) -> Result<(), AzureError> {
        let poll_op = format!("{op}.poll");
        let start = instant_now();
        let mut delay = self.connector.poll_interval;
        loop {
            tokio::time::sleep(delay).await;
            let (url, kind) = match poller {
                Poller::AsyncOperation(u) => (u, 0),
                Poller::Location(u) => (u, 1),
                Poller::Resource(u) => (u, 2),
                Poller::Gone(u) => (u, 3),
            };
            let a = match self.send(&poll_op, Method::GET, url, None).await {
                // A deleted resource's own URL, or a finished Location, answers 404.
                Err(e) if e.is_not_found() && kind != 0 => return Ok(()),
                other => other?,
            };
            delay = retry_after(&a.headers)
                .map(|d| d.max(Duration::from_millis(10)))
                .unwrap_or(self.connector.poll_interval);
            let done = match kind {
                0 => {
                    let s: OperationStatus = decode(&poll_op, a.body)?;
                    match s.status.as_str() {
                        "Succeeded" => true,
                        "Failed" | "Canceled" => {
                            let e = s.error.unwrap_or(ErrorBody {
                                code: s.status.clone(),
                                message: String::new(),
                            });
                            return Err(AzureError::OperationFailed {
                                op: op.into(),
                                status: s.status,
                                code: e.code,
                                message: e.message,
                            });
                        }
                        _ => false,
                    }
                }
                1 => a.status != StatusCode::ACCEPTED,
                // Still there: not deleted yet (the 404 above ends it).
                3 => false,
                _ => {
                    let state = a.body["properties"]["provisioningState"]
                        .as_str()
                        .unwrap_or("Succeeded")
                        .to_string();
                    match state.as_str() {
                        "Succeeded" => true,
                        "Failed" | "Canceled" => {
                            return Err(AzureError::OperationFailed {
                                op: op.into(),
                                status: state,
                                code: "ProvisioningFailed".into(),
                                message: "the resource's provisioning failed".into(),
                            })
                        }
                        _ => false,
                    }
                }
            };
            if done {
                return Ok(());
            }
            let waited = instant_now().duration_since(start);
            if waited >= self.connector.operation_timeout {
                return Err(AzureError::StillRunning {
                    op: op.into(),
                    waited,
                });
            }
        }
    }
}

const ASYNC_OP: &str = "azure-asyncoperation";

fn poller_of(a: &Answer, resource_url: &str) -> Option<Poller> {
    let header = |name: &str| {
        a.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    if let Some(u) = header(ASYNC_OP) {
        return Some(Poller::AsyncOperation(u));
    }
    if let Some(u) = header("location") {
        return Some(Poller::Location(u));
    }
    match a.body["properties"]["provisioningState"].as_str() {
        Some("Succeeded") | None => None,
        Some(_) => Some(Poller::Resource(resource_url.to_string())),
    }
}

fn decode<T: DeserializeOwned>(op: &str, v: serde_json::Value) -> Result<T, AzureError> {
    serde_json::from_value(v).map_err(|e| AzureError::Decode {
        op: op.into(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_encoded() {
        assert_eq!(
            form(&[("a", "x y"), ("scope", "https://m/.default")]),
            "a=x+y&scope=https%3A%2F%2Fm%2F.default"
        );
    }

    #[test]
    fn tokens_never_print() {
        let t = AccessToken {
            token: Secret::new("eyJ0eXAiOiJKV1QiLCJhbGciOi"),
            expires_at: instant_now(),
        };
        assert!(!format!("{t:?}").contains("eyJ0"));
    }
}

//! A web dashboard over an [`Engine`]: the clusters with phase and health, a page per
//! cluster (conditions, pools, machines, what it waits for, application services, CPU and
//! memory charts per node), and the live event stream (server-sent events). Pages are
//! rendered on the server ([`pages`], [`chart`]: plain functions from engine state to
//! HTML/SVG); one small script, served by the dashboard itself (no CDN), follows the event
//! stream and refreshes the list and the charts without reloading.
//!
//! Read-only unless an admin token is configured ([`Dashboard::admin_token`]) and the
//! visitor signed in with it (a `SameSite=Strict`, `HttpOnly` session cookie holding a
//! digest of the token, or `Authorization: Bearer <token>`): then the cluster page scales
//! pools, applies a profile update, deletes or aborts. Specs are shown redacted (the support
//! bundle's rule), kubeconfigs never; every page carries a strict content security policy.
//!
//! Mount it in an application's own HTTP server ([`Dashboard::handle`] takes any
//! `http::Request` whose body is a `hyper` body, under [`Dashboard::base_path`]) or let it
//! serve a listener ([`Dashboard::serve`], plain HTTP/1.1: bind it to loopback, or put TLS
//! in front). `spectro serve` runs it from the command line.

pub mod chart;
pub mod pages;

use std::convert::Infallible;
use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use spectro_core::engine::event::Event;
use spectro_core::engine::status::ClusterRecord;
use spectro_core::engine::Engine;
use spectro_core::model::ConflictResolution;
use spectro_core::monitoring::{NodeScope, UsagePoint};
use spectro_core::provider::ClusterId;
use spectro_core::secret::Secret;
use spectro_core::CoreError;

use self::chart::{line_chart, percent, Series};
use self::pages::{Access, ClusterRow, ClusterView};

/// The body of every dashboard response.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

const CSS: &str = include_str!("assets/dashboard.css");
const JS: &str = include_str!("assets/dashboard.js");
const COOKIE: &str = "spectro_session";
/// Forms are small: a bigger body is refused.
const MAX_FORM: usize = 16 * 1024;
/// Nodes drawn one by one on a chart (beyond them only the total).
const MAX_NODE_SERIES: usize = 12;
/// Events on a page before the live ones.
const PAGE_EVENTS: usize = 100;

/// How long a sign-in lasts.
const SESSION_HOURS: i64 = 12;

/// The dashboard: cheap to clone (one per connection).
#[derive(Clone)]
pub struct Dashboard {
    engine: Engine,
    base: String,
    /// SHA-256 of the admin token (never the token itself).
    session: Option<[u8; 32]>,
    /// Signs session cookies: random per dashboard, so a restart signs everyone out and a
    /// cookie never holds anything derived from the token alone.
    cookie_key: std::sync::Arc<ring::hmac::Key>,
    /// Host names (with or without port) requests may carry; empty: any.
    hosts: Vec<String>,
    keep_alive: Duration,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("base", &self.base)
            .field("admin", &self.session.is_some())
            .finish_non_exhaustive()
    }
}

fn digest(token: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"spectro-dashboard-session\0");
    h.update(token.as_bytes());
    h.finalize().into()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A failure shown as a page (or JSON under `/api`).
struct Failure {
    status: StatusCode,
    message: String,
}

impl From<CoreError> for Failure {
    fn from(e: CoreError) -> Self {
        let status = match &e {
            CoreError::NotFound { .. } => StatusCode::NOT_FOUND,
            CoreError::Invalid { .. } | CoreError::PackValues { .. } => StatusCode::BAD_REQUEST,
            CoreError::Conflict { .. }
            | CoreError::WrongLifecycle { .. }
            | CoreError::AlreadyExists { .. }
            | CoreError::InUse { .. }
            | CoreError::UnresolvedConflicts { .. } => StatusCode::CONFLICT,
            CoreError::Shutdown => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failure {
            status,
            message: e.to_string(),
        }
    }
}

fn failure(status: StatusCode, message: impl Into<String>) -> Failure {
    Failure {
        status,
        message: message.into(),
    }
}

type Res<T> = std::result::Result<T, Failure>;

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed_unsync()
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn redirect(to: &str, cookie: Option<String>) -> Response<Body> {
    let mut r = respond(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", "");
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    respond(
        status,
        "application/json",
        serde_json::to_vec(v).unwrap_or_else(|_| b"null".to_vec()),
    )
}

/// The query parameter `key` (absent when empty).
fn query(q: &str, key: &str) -> Option<String> {
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

/// A chart range: its name and length.
fn range_of(s: Option<&str>) -> (&'static str, chrono::Duration) {
    match s {
        Some("6h") => ("6h", chrono::Duration::hours(6)),
        Some("24h") => ("24h", chrono::Duration::hours(24)),
        Some("7d") => ("7d", chrono::Duration::days(7)),
        _ => ("1h", chrono::Duration::hours(1)),
    }
}

/// The usage chart of `metric` (`cpu` or `memory`): the scope's total and each node.
fn usage_chart(metric: &str, series: &[UsagePoint], range: Range<DateTime<Utc>>) -> String {
    let total: fn(&UsagePoint) -> f64 = if metric == "memory" {
        |p| p.memory_usage
    } else {
        |p| p.cpu_usage
    };
    let mut lines = vec![Series {
        name: "worker nodes".into(),
        points: series.iter().map(|p| (p.at, total(p))).collect(),
    }];
    if series.is_empty() {
        lines.clear();
    }
    let mut nodes: Vec<&String> = series.iter().flat_map(|p| p.nodes.keys()).collect();
    nodes.sort();
    nodes.dedup();
    for n in nodes.into_iter().take(MAX_NODE_SERIES) {
        let points = series
            .iter()
            .filter_map(|p| {
                let s = p.nodes.get(n)?;
                let v = if metric == "memory" {
                    s.memory_used_bytes.map(|u| u / s.memory_bytes.max(1.0))
                } else {
                    s.cpu_used_cores
                        .map(|u| u / s.cpu_cores.max(f64::MIN_POSITIVE))
                }?;
                Some((p.at, v))
            })
            .collect();
        lines.push(Series {
            name: n.clone(),
            points,
        });
    }
    let title = if metric == "memory" {
        "Memory usage"
    } else {
        "CPU usage"
    };
    line_chart(title, &lines, range.start, range.end, 1.0, percent)
}

/// A base path is `/` followed by plain path characters, no empty segment.
fn valid_base(p: &str) -> bool {
    p.is_empty()
        || (p.starts_with('/')
            && !p.contains("//")
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b)))
}

impl Dashboard {
    /// A read-only dashboard of `engine`'s clusters, at the root path.
    #[must_use]
    pub fn new(engine: Engine) -> Self {
        let rng = ring::rand::SystemRandom::new();
        // The OS's random source failing is not recoverable in any useful way: a fixed key
        // would let cookies be forged, so the dashboard refuses every sign-in instead.
        let cookie_key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .unwrap_or_else(|_| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[]));
        Dashboard {
            engine,
            base: String::new(),
            session: None,
            cookie_key: std::sync::Arc::new(cookie_key),
            hosts: Vec::new(),
            keep_alive: Duration::from_secs(15),
        }
    }

    /// Serves under `path` (`/ops/spectro`): every link and form points below it, and
    /// [`Dashboard::handle`] answers only requests below it. A path with other characters
    /// than letters, digits, `/-._~`, or with an empty segment, is refused.
    pub fn base_path(mut self, path: &str) -> std::result::Result<Self, String> {
        let p = path.trim_end_matches('/');
        let p = if p.is_empty() || p.starts_with('/') {
            p.to_string()
        } else {
            format!("/{p}")
        };
        if !valid_base(&p) {
            return Err(format!(
                "base path `{path}`: must be `/` and letters, digits or `-._~` segments, no empty segment"
            ));
        }
        self.base = p;
        Ok(self)
    }

    /// Answers only requests whose `Host` is one of these (`name` or `name:port`); others
    /// get 421. A dashboard reachable through a browser should set it (a page of another
    /// site whose name points at this address, DNS rebinding, could read it otherwise);
    /// [`Dashboard::serve`] allows the listener's own address and `localhost` when none
    /// are set.
    #[must_use]
    pub fn allowed_hosts<I, S>(mut self, hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.hosts = hosts
            .into_iter()
            .map(|h| h.into().to_ascii_lowercase())
            .collect();
        self
    }

    fn host_allowed<B>(&self, req: &Request<B>) -> bool {
        if self.hosts.is_empty() {
            return true;
        }
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default()
            .to_ascii_lowercase();
        let name = host
            .rsplit_once(':')
            .filter(|(n, port)| !n.ends_with(']') || !port.is_empty())
            .map_or(host.as_str(), |(n, _)| n);
        self.hosts.iter().any(|h| *h == host || h == name)
    }

    /// The session cookie's value for a sign-in at `issued` (unix seconds).
    fn cookie_value(&self, issued: i64) -> String {
        let token = self.session.unwrap_or_default();
        let mut msg = token.to_vec();
        msg.extend_from_slice(&issued.to_be_bytes());
        let tag = ring::hmac::sign(&self.cookie_key, &msg);
        format!("{issued}.{}", hex(tag.as_ref()))
    }

    /// A cookie value signed by this dashboard, for the current token, not expired.
    fn cookie_valid(&self, value: &str) -> bool {
        let Some((issued, _)) = value.split_once('.') else {
            return false;
        };
        let Ok(issued) = issued.parse::<i64>() else {
            return false;
        };
        let age = self.engine.now().timestamp() - issued;
        (0..SESSION_HOURS * 3600).contains(&age)
            && same(self.cookie_value(issued).as_bytes(), value.as_bytes())
    }

    /// Lets visitors who sign in with `token` act (scale, apply an update, delete, abort).
    /// Only its digest is kept.
    #[must_use]
    pub fn admin_token(mut self, token: &Secret) -> Self {
        self.session = (!token.is_empty()).then(|| digest(token.expose()));
        self
    }

    /// How often an idle event stream sends a keep-alive comment (default 15 s).
    #[must_use]
    pub fn keep_alive(mut self, every: Duration) -> Self {
        self.keep_alive = every.max(Duration::from_millis(100));
        self
    }

    /// Serves `listener` (plain HTTP/1.1) until the task is dropped. Without
    /// [`Dashboard::allowed_hosts`], only the listener's address and `localhost` are
    /// answered. A failed accept (out of file descriptors) is waited out, not fatal.
    pub async fn serve(mut self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        if self.hosts.is_empty() {
            let addr = listener.local_addr()?;
            let port = addr.port();
            let ip = match addr.ip() {
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                v4 => v4.to_string(),
            };
            self.hosts = vec![
                format!("{ip}:{port}"),
                format!("localhost:{port}"),
                format!("127.0.0.1:{port}"),
                format!("[::1]:{port}"),
            ];
        }
        loop {
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => tcp,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let this = self.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let this = this.clone();
                    async move { Ok::<_, Infallible>(this.handle(req).await) }
                });
                // A connection that ends badly (a browser closing an event stream) is no
                // failure of the dashboard's.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    }

    fn access<B>(&self, req: &Request<B>) -> Access {
        let Some(expect) = &self.session else {
            return Access::ReadOnly;
        };
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| same(&digest(t.trim()), expect));
        let cookie = req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
            .any(|v| self.cookie_valid(v));
        if bearer || cookie {
            Access::SignedIn
        } else {
            Access::SignedOut
        }
    }

    fn page(&self, status: StatusCode, title: &str, access: Access, body: &str) -> Response<Body> {
        respond(
            status,
            "text/html; charset=utf-8",
            pages::layout(&self.base, title, access, body),
        )
    }

    /// Answers one request whose path starts with the base path (a request outside it is
    /// not found).
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if !self.host_allowed(&req) {
            return respond(
                StatusCode::MISDIRECTED_REQUEST,
                "text/plain; charset=utf-8",
                "this dashboard does not answer for that host name\n",
            );
        }
        let access = self.access(&req);
        let path = req.uri().path().to_string();
        let api = path.starts_with(&format!("{}/api/", self.base));
        let mut r = match self.route(req, access).await {
            Ok(r) => r,
            Err(f) if api => json(f.status, &serde_json::json!({ "error": f.message })),
            Err(f) => self.page(
                f.status,
                f.status.canonical_reason().unwrap_or("Error"),
                access,
                &pages::error(&self.base, f.status.as_u16(), &f.message),
            ),
        };
        if r.status() == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"spectro dashboard\""),
            );
        }
        r
    }

    async fn route<B>(&self, req: Request<B>, access: Access) -> Res<Response<Body>>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let not_found = || failure(StatusCode::NOT_FOUND, "no such page");
        let Some(rest) = req
            .uri()
            .path()
            .strip_prefix(self.base.as_str())
            .filter(|r| r.is_empty() || r.starts_with('/'))
        else {
            return Err(not_found());
        };
        let rest = rest.to_string();
        let q = req.uri().query().unwrap_or("").to_string();
        let parts: Vec<String> = rest
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| percent_decode(s).ok_or_else(|| failure(StatusCode::BAD_REQUEST, "bad path")))
            .collect::<Res<_>>()?;
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let method = req.method().clone();
        if method == Method::POST {
            return self.post(req, access, &parts).await;
        }
        if method != Method::GET && method != Method::HEAD {
            let mut r = self.page(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method Not Allowed",
                access,
                &pages::error(&self.base, 405, "GET or POST only"),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
            return Ok(r);
        }
        let last_event_id = req
            .headers()
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        // Positions are signed 64-bit in the stores: a larger one is past every event.
        let after = last_event_id
            .or_else(|| query(&q, "after").and_then(|a| a.parse().ok()))
            .unwrap_or(0)
            .min(i64::MAX as u64);
        match parts.as_slice() {
            [] => self.list(access).await,
            ["healthz"] => Ok(respond(StatusCode::OK, "text/plain; charset=utf-8", "ok\n")),
            ["assets", "dashboard.css"] => {
                Ok(respond(StatusCode::OK, "text/css; charset=utf-8", CSS))
            }
            ["assets", "dashboard.js"] => Ok(respond(
                StatusCode::OK,
                "text/javascript; charset=utf-8",
                JS,
            )),
            ["login"] if self.session.is_some() => Ok(self.page(
                StatusCode::OK,
                "Sign in",
                access,
                &pages::login(&self.base, false),
            )),
            ["events", "stream"] => Ok(self.stream(None, after)),
            ["clusters", name] => {
                let rec = self.engine.cluster_by_name(name).await?;
                self.cluster(&rec, access, &q).await
            }
            ["clusters", name, "events", "stream"] => {
                let rec = self.engine.cluster_by_name(name).await?;
                Ok(self.stream(Some(rec.id), after))
            }
            ["clusters", name, "usage.svg"] => {
                let rec = self.engine.cluster_by_name(name).await?;
                let (_, len) = range_of(query(&q, "range").as_deref());
                let metric = query(&q, "metric").unwrap_or_else(|| "cpu".into());
                if metric != "cpu" && metric != "memory" {
                    return Err(failure(
                        StatusCode::BAD_REQUEST,
                        format!("metric `{metric}`: must be `cpu` or `memory`"),
                    ));
                }
                let (series, range) = self.usage(rec.id, len).await;
                Ok(respond(
                    StatusCode::OK,
                    "image/svg+xml",
                    usage_chart(&metric, &series, range),
                ))
            }
            ["api", "clusters"] => {
                let rows: Vec<ClusterRow> = self
                    .engine
                    .clusters()
                    .await?
                    .iter()
                    .map(ClusterRow::of)
                    .collect();
                Ok(json(
                    StatusCode::OK,
                    &serde_json::to_value(rows).unwrap_or_default(),
                ))
            }
            ["api", "clusters", name] => {
                let rec = self.engine.cluster_by_name(name).await?;
                let mut v = redacted_cluster(&rec);
                if let (Ok(x), Some(m)) = (self.engine.explain(rec.id).await, v.as_object_mut()) {
                    m.insert(
                        "blockers".into(),
                        serde_json::to_value(&x.blockers).unwrap_or_default(),
                    );
                }
                Ok(json(StatusCode::OK, &v))
            }
            ["api", "clusters", name, "usage"] => {
                let rec = self.engine.cluster_by_name(name).await?;
                let (_, len) = range_of(query(&q, "range").as_deref());
                let (series, _) = self.usage(rec.id, len).await;
                Ok(json(
                    StatusCode::OK,
                    &serde_json::to_value(series).unwrap_or_default(),
                ))
            }
            _ => Err(not_found()),
        }
    }

    /// The usage series of the last `len` (empty when nothing was reported).
    async fn usage(
        &self,
        id: ClusterId,
        len: chrono::Duration,
    ) -> (Vec<UsagePoint>, Range<DateTime<Utc>>) {
        let now = self.engine.now();
        let range = (now - len)..now;
        let series = self
            .engine
            .usage(id, range.clone(), &NodeScope::Workers)
            .await
            .map(|u| u.series)
            .unwrap_or_default();
        (series, range)
    }

    async fn list(&self, access: Access) -> Res<Response<Body>> {
        let clusters = self.engine.clusters().await?;
        let rows: Vec<ClusterRow> = clusters.iter().map(ClusterRow::of).collect();
        let names: std::collections::HashMap<ClusterId, String> = clusters
            .iter()
            .map(|c| (c.id, c.spec.name.clone()))
            .collect();
        let events = self.latest_events(None).await?;
        let last = events.last().map_or(0, |e| e.seq);
        let events: Vec<(Event, Option<String>)> = events
            .into_iter()
            .map(|e| {
                let n = names.get(&e.cluster_id).cloned();
                (e, n)
            })
            .collect();
        Ok(self.page(
            StatusCode::OK,
            "Clusters",
            access,
            &pages::cluster_list(&self.base, &rows, &events, last),
        ))
    }

    /// The newest events (oldest first), at most [`PAGE_EVENTS`].
    async fn latest_events(&self, cluster: Option<ClusterId>) -> Res<Vec<Event>> {
        Ok(self
            .engine
            .store()
            .latest_events(cluster, PAGE_EVENTS)
            .await?)
    }

    async fn cluster(&self, rec: &ClusterRecord, access: Access, q: &str) -> Res<Response<Body>> {
        let explanation = self.engine.explain(rec.id).await.ok();
        let health = self.engine.health(rec.id).await.ok();
        let services = self.engine.services(rec.id).await.unwrap_or_default();
        let (range_name, len) = range_of(query(q, "range").as_deref());
        let (series, range) = self.usage(rec.id, len).await;
        let charts = [
            usage_chart("cpu", &series, range.clone()),
            usage_chart("memory", &series, range),
        ];
        let events = self.latest_events(Some(rec.id)).await?;
        let spec = redacted_cluster(rec);
        let spec_yaml = serde_norway::to_string(&spec["spec"]).unwrap_or_default();
        let notice = query(q, "done");
        let view = ClusterView {
            rec,
            explanation: explanation.as_ref(),
            health: health.as_ref().filter(|_| rec.status.health.is_some()),
            services: &services,
            charts,
            range: range_name,
            events: &events,
            last_seq: events.last().map_or(0, |e| e.seq),
            spec_yaml,
            access,
            notice: notice.as_deref(),
        };
        Ok(self.page(
            StatusCode::OK,
            &rec.spec.name,
            access,
            &pages::cluster_page(&self.base, &view),
        ))
    }

    /// Server-sent events: the stored events after `after`, then live ones; a keep-alive
    /// comment when idle. Each has its `seq` as id, so a reconnecting browser resumes.
    fn stream(&self, cluster: Option<ClusterId>, after: u64) -> Response<Body> {
        let events = self.engine.watch_events(cluster, after).boxed();
        let keep_alive = self.keep_alive;
        // The stream of every cluster names each event's cluster (`clusterName`).
        let engine = cluster.is_none().then(|| self.engine.clone());
        let names: std::collections::HashMap<ClusterId, String> = Default::default();
        let first = futures_util::stream::once(async { Bytes::from_static(b"retry: 2000\n\n") });
        let rest = futures_util::stream::unfold(
            (events, names, false),
            move |(mut ev, mut names, done)| {
                let engine = engine.clone();
                async move {
                    if done {
                        return None;
                    }
                    let next = tokio::select! {
                        e = ev.next() => e,
                        () = tokio::time::sleep(keep_alive) => {
                            return Some((Bytes::from_static(b": keep-alive\n\n"), (ev, names, false)));
                        }
                    };
                    match next {
                        Some(Ok(e)) => {
                            let mut data = serde_json::to_value(&e).unwrap_or_default();
                            if let Some(engine) = &engine {
                                if let std::collections::hash_map::Entry::Vacant(slot) =
                                    names.entry(e.cluster_id)
                                {
                                    if let Ok(rec) = engine.cluster(e.cluster_id).await {
                                        slot.insert(rec.spec.name);
                                    }
                                }
                                if let (Some(n), Some(m)) =
                                    (names.get(&e.cluster_id), data.as_object_mut())
                                {
                                    m.insert("clusterName".into(), n.clone().into());
                                }
                            }
                            let frame =
                                format!("id: {}\nevent: cluster-event\ndata: {data}\n\n", e.seq);
                            Some((Bytes::from(frame), (ev, names, false)))
                        }
                        Some(Err(err)) => {
                            let data = serde_json::json!({ "error": err.to_string() });
                            let frame = format!("event: stream-error\ndata: {data}\n\n");
                            Some((Bytes::from(frame), (ev, names, true)))
                        }
                        None => None,
                    }
                }
            },
        );
        let body = StreamBody::new(
            first
                .chain(rest)
                .map(|b| Ok::<_, Infallible>(Frame::data(b))),
        );
        let mut r = respond(StatusCode::OK, "text/event-stream", Bytes::new());
        *r.body_mut() = BodyExt::boxed_unsync(body);
        r
    }

    async fn post<B>(&self, req: Request<B>, access: Access, parts: &[&str]) -> Res<Response<Body>>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // A form posted from another site is refused (the cookie is SameSite=Strict too): a
        // browser's POST names its origin; one that names none (or `null`) is refused unless
        // it authenticates with a bearer token, which no other site can send.
        let bearer = req.headers().contains_key(header::AUTHORIZATION);
        match same_origin(&req) {
            Some(true) => {}
            None if bearer => {}
            _ => {
                return Err(failure(
                    StatusCode::FORBIDDEN,
                    "a form from another site (or one that names no origin) is refused",
                ))
            }
        }
        let secure = req
            .headers()
            .get("x-forwarded-proto")
            .is_some_and(|v| v == "https");
        let form = read_form(req.into_body()).await?;
        let field = |k: &str| {
            form.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let base = if self.base.is_empty() {
            "/"
        } else {
            self.base.as_str()
        };
        match parts {
            ["login"] => {
                let Some(expect) = &self.session else {
                    return Err(failure(
                        StatusCode::FORBIDDEN,
                        "this dashboard is read-only: no admin token is configured",
                    ));
                };
                let token = field("token").unwrap_or_default();
                if !same(&digest(token.trim()), expect) {
                    return Ok(self.page(
                        StatusCode::FORBIDDEN,
                        "Sign in",
                        Access::SignedOut,
                        &pages::login(&self.base, true),
                    ));
                }
                let cookie = format!(
                    "{COOKIE}={}; Path={base}; Max-Age={}; HttpOnly; SameSite=Strict{}",
                    self.cookie_value(self.engine.now().timestamp()),
                    SESSION_HOURS * 3600,
                    if secure { "; Secure" } else { "" }
                );
                return Ok(redirect(&format!("{}/", self.base), Some(cookie)));
            }
            ["logout"] => {
                let cookie =
                    format!("{COOKIE}=; Path={base}; HttpOnly; SameSite=Strict; Max-Age=0");
                return Ok(redirect(&format!("{}/", self.base), Some(cookie)));
            }
            _ => {}
        }
        match access {
            Access::SignedIn => {}
            Access::SignedOut => {
                return Err(failure(
                    StatusCode::UNAUTHORIZED,
                    "sign in with the dashboard's admin token to change a cluster",
                ))
            }
            Access::ReadOnly => {
                return Err(failure(
                    StatusCode::FORBIDDEN,
                    "this dashboard is read-only: no admin token is configured",
                ))
            }
        }
        let ["clusters", name, action] = parts else {
            return Err(failure(StatusCode::NOT_FOUND, "no such action"));
        };
        let rec = self.engine.cluster_by_name(name).await?;
        let done = match *action {
            "scale" => {
                let pool = field("pool").unwrap_or_default();
                let size_text = field("size").unwrap_or_default();
                let size: u32 = size_text.trim().parse().map_err(|_| {
                    failure(
                        StatusCode::BAD_REQUEST,
                        format!("size `{size_text}`: must be a whole number of nodes, 0 or more"),
                    )
                })?;
                let mut spec = rec.spec.clone();
                let Some(p) = spec.node_pools.iter_mut().find(|p| p.name == pool) else {
                    return Err(failure(
                        StatusCode::NOT_FOUND,
                        format!("cluster `{name}` has no node pool `{pool}`"),
                    ));
                };
                p.size = size;
                let generation = self.engine.update_cluster(rec.id, &spec).await?;
                format!("pool {pool} scaled to {size} (generation {generation})")
            }
            "delete" => {
                self.engine.delete_cluster(rec.id).await?;
                "deleting".to_string()
            }
            "abort" => {
                self.engine.abort_cluster(rec.id).await?;
                "aborting".to_string()
            }
            "apply-update" => {
                let resolution = match field("resolution").as_deref() {
                    Some("keep") => Some(ConflictResolution::KeepOverrides),
                    Some("take") => Some(ConflictResolution::TakeProfile),
                    None | Some("") => None,
                    Some(other) => {
                        return Err(failure(
                            StatusCode::BAD_REQUEST,
                            format!("resolution `{other}`: must be `keep` or `take`"),
                        ))
                    }
                };
                let generation = self.engine.apply_profile_update(rec.id, resolution).await?;
                format!("profile update applied (generation {generation})")
            }
            other => {
                return Err(failure(
                    StatusCode::NOT_FOUND,
                    format!("no action `{other}`"),
                ))
            }
        };
        let to = format!(
            "{}/clusters/{}?done={}",
            self.base,
            pages::seg(name),
            form_urlencoded::byte_serialize(done.as_bytes()).collect::<String>()
        );
        Ok(redirect(&to, None))
    }
}

/// Whether a POST comes from this dashboard's own pages: its `Origin` (or, without one,
/// its `Referer`) names the host the request was sent to. `None` when it names neither.
fn same_origin<B>(req: &Request<B>) -> Option<bool> {
    let header_str = |h| req.headers().get(h).and_then(|v| v.to_str().ok());
    let from = header_str(header::ORIGIN).or_else(|| header_str(header::REFERER))?;
    let host = header_str(header::HOST)
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))?;
    let from_host = from
        .split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or(""))?;
    Some(from != "null" && from_host.eq_ignore_ascii_case(&host))
}

/// The cluster for people and scripts: identity, redacted spec, status.
fn redacted_cluster(rec: &ClusterRecord) -> serde_json::Value {
    let mut v = serde_json::json!({
        "id": rec.id.to_string(),
        "name": rec.spec.name,
        "generation": rec.generation,
        "spec": rec.spec,
        "status": rec.status,
    });
    spectro_core::engine::redact(&mut v);
    v
}

fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

async fn read_form<B>(body: B) -> Res<Vec<(String, String)>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let bytes = Limited::new(body, MAX_FORM)
        .collect()
        .await
        .map_err(|e| {
            failure(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the form could not be read (at most {MAX_FORM} bytes): {e}"),
            )
        })?
        .to_bytes();
    Ok(form_urlencoded::parse(&bytes)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_compared_by_digest() {
        assert!(same(&digest("t0ken"), &digest("t0ken")));
        assert!(!same(&digest("t0ken"), &digest("t0ken ")));
        assert!(!same(b"ab", b"abc"));
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
        assert_eq!(percent_decode("a%20b%2Fc").as_deref(), Some("a b/c"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%e2%82"), None);
    }

    #[test]
    fn ranges_and_queries() {
        assert_eq!(range_of(Some("7d")).0, "7d");
        assert_eq!(range_of(Some("nonsense")).0, "1h");
        assert_eq!(query("a=1&range=6h", "range").as_deref(), Some("6h"));
        assert_eq!(query("range=", "range"), None);
        assert_eq!(
            query("done=pool%20w%20scaled", "done").as_deref(),
            Some("pool w scaled")
        );
    }
}

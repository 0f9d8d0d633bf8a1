//! The engine's gateway endpoint: the HTTPS server gateway agents dial out to (HTTP/2 through
//! ALPN, HTTP/1.1 otherwise), routes of [`crate::wire`].
//!
//! ```no_run
//! # async fn demo(cert: String, key: String) -> Result<(), Box<dyn std::error::Error>> {
//! use spectro_gateway::endpoint::{tls_config, GatewayEndpoint};
//! use spectro_gateway::hub::{GatewayHub, HubConfig};
//! // The hub's remote provider is the engine's vSphere provider.
//! let hub = GatewayHub::new(HubConfig::default());
//! # let store = std::sync::Arc::new(spectro_core::SqliteStore::open("spectro.db")?);
//! let engine = spectro_core::Engine::builder(store)
//!     .provider(hub.provider(spectro_core::model::CloudType::Vsphere))
//!     .start()
//!     .await?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:9443").await?;
//! tokio::spawn(GatewayEndpoint::new(hub, engine).serve(listener, tls_config(&cert, &key)?));
//! # Ok(()) }
//! ```

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use spectro_core::model::PairingRequest;
use spectro_core::secret::with_secrets_revealed;
use spectro_core::CoreError;

use crate::hub::GatewayHub;
use crate::wire::{CallResult, ErrorBody, Heartbeat, Paired, Poll};

/// Largest request body (a call result with a large fleet listing fits).
pub const MAX_BODY: usize = 16 << 20;

/// A rustls server configuration offering HTTP/2 and HTTP/1.1, from a PEM chain and key.
pub fn tls_config(cert_pem: &str, key_pem: &str) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate: not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("certificate: no certificate in the PEM".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("private key: not PEM: {e}"))?;
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The endpoint: routes agents' requests to the [`GatewayHub`] and the engine.
#[derive(Clone, Debug)]
pub struct GatewayEndpoint {
    hub: GatewayHub,
    engine: spectro_core::Engine,
    allowed_peers: Option<Arc<Vec<IpAddr>>>,
    refused_peers: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
}

/// An answer: status and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// JSON body (empty for 204).
    pub body: String,
}

fn json<T: serde::Serialize>(status: u16, v: &T) -> Answer {
    Answer {
        status,
        body: with_secrets_revealed(|| serde_json::to_string(v)).unwrap_or_default(),
    }
}

fn error(status: u16, message: impl Into<String>) -> Answer {
    json(
        status,
        &ErrorBody {
            error: message.into(),
        },
    )
}

/// A request's route, once authorized.
enum Route {
    Health,
    Pair(String),
    Heartbeat(String),
    Next(String),
    Disconnect(String),
    Result(String, u64),
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn from_core(e: &CoreError) -> Answer {
    match e {
        CoreError::GatewayRefused { .. } => error(401, e.to_string()),
        CoreError::NotFound { .. } => error(404, e.to_string()),
        CoreError::Invalid { .. } => error(400, e.to_string()),
        CoreError::GatewayState { .. } => error(409, e.to_string()),
        CoreError::Shutdown => error(503, e.to_string()),
        e if e.is_transient() => error(503, e.to_string()),
        e => error(500, e.to_string()),
    }
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, Answer> {
    serde_json::from_slice(body).map_err(|e| error(400, format!("{what}: {e}")))
}

impl GatewayEndpoint {
    /// An endpoint for `hub` and `engine` (whose vSphere provider is `hub`'s remote provider).
    #[must_use]
    pub fn new(hub: GatewayHub, engine: spectro_core::Engine) -> Self {
        GatewayEndpoint {
            hub,
            engine,
            allowed_peers: None,
            refused_peers: Arc::new(AtomicU64::new(0)),
            connections: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Accepts connections only from these addresses (e.g. the egress proxy the gateways
    /// come through); others are closed before TLS.
    #[must_use]
    pub fn allow_only(mut self, peers: Vec<IpAddr>) -> Self {
        self.allowed_peers = Some(Arc::new(peers));
        self
    }

    /// Connections closed because they came from an address not allowed.
    #[must_use]
    pub fn refused_connections(&self) -> u64 {
        self.refused_peers.load(Ordering::Relaxed)
    }

    /// Connections accepted.
    #[must_use]
    pub fn accepted_connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// The hub.
    #[must_use]
    pub fn hub(&self) -> &GatewayHub {
        &self.hub
    }

    /// Handles one request, whatever server carries it.
    pub async fn handle(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: &[u8],
    ) -> Answer {
        match self.authorize(method, path, bearer).await {
            Ok(route) => self.dispatch(route, body).await,
            Err(a) => a,
        }
    }

    /// The route of a request, once its credential (every route but `pair`) is checked:
    /// nothing of the body is read before.
    async fn authorize(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
    ) -> Result<Route, Answer> {
        if path == "/healthz" {
            return Ok(Route::Health);
        }
        if method != "POST" {
            return Err(error(405, "gateway requests are POSTed"));
        }
        let Some((gw, op)) = path
            .strip_prefix("/v1/gateways/")
            .and_then(|rest| rest.split_once('/'))
        else {
            return Err(error(404, format!("no such path: {path}")));
        };
        let route = match op {
            "pair" => return Ok(Route::Pair(gw.to_string())),
            "heartbeat" => Route::Heartbeat(gw.to_string()),
            "calls/next" => Route::Next(gw.to_string()),
            "disconnect" => Route::Disconnect(gw.to_string()),
            op => match op
                .strip_prefix("calls/")
                .and_then(|r| r.strip_suffix("/result"))
                .and_then(|id| id.parse::<u64>().ok())
            {
                Some(id) => Route::Result(gw.to_string(), id),
                None => return Err(error(404, format!("no such path: {path}"))),
            },
        };
        let Some(token) = bearer else {
            return Err(error(
                401,
                "Authorization: Bearer <gateway credential> required",
            ));
        };
        self.engine
            .authenticate_gateway(gw, token)
            .await
            .map_err(|e| from_core(&e))?;
        Ok(route)
    }

    async fn dispatch(&self, route: Route, body: &[u8]) -> Answer {
        let engine = &self.engine;
        match route {
            Route::Health => json(200, &serde_json::json!({ "ok": true })),
            Route::Pair(gw) => {
                let req: PairingRequest = match parse("pairing request", body) {
                    Ok(r) => r,
                    Err(a) => return a,
                };
                match engine.pair_gateway(&gw, &req).await {
                    Ok(c) => json(
                        200,
                        &Paired {
                            gateway: c.gateway,
                            credential: c.token,
                        },
                    ),
                    Err(e) => from_core(&e),
                }
            }
            Route::Heartbeat(gw) => {
                let hb: Heartbeat = match parse("heartbeat", body) {
                    Ok(h) => h,
                    Err(a) => return a,
                };
                match self.hub.heartbeat(engine, &gw, &hb).await {
                    Ok(a) => json(200, &a),
                    Err(e) => from_core(&e),
                }
            }
            Route::Next(gw) => {
                let p: Poll = match parse("poll", body) {
                    Ok(p) => p,
                    Err(a) => return a,
                };
                match self.hub.next_call(&gw, &p.replica).await {
                    Some(a) => json(200, &a),
                    None => Answer {
                        status: 204,
                        body: String::new(),
                    },
                }
            }
            Route::Disconnect(gw) => {
                let p: Poll = match parse("disconnect", body) {
                    Ok(p) => p,
                    Err(a) => return a,
                };
                self.hub
                    .disconnect(engine, &gw, &p.replica, "said goodbye")
                    .await;
                json(200, &serde_json::json!({ "ok": true }))
            }
            Route::Result(gw, id) => {
                let r: CallResult = match parse("call result", body) {
                    Ok(r) => r,
                    Err(a) => return a,
                };
                if self.hub.complete(&gw, id, r.result) {
                    json(200, &serde_json::json!({ "ok": true }))
                } else {
                    error(410, format!("call {id} is not waiting (answered already)"))
                }
            }
        }
    }

    async fn hyper(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let bearer = parts
            .headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::to_string);
        // The credential is checked before the body is read: an unauthenticated client
        // cannot make the endpoint buffer one.
        let a = match self
            .authorize(parts.method.as_str(), parts.uri.path(), bearer.as_deref())
            .await
        {
            Err(a) => a,
            Ok(route) => match Limited::new(body, MAX_BODY).collect().await {
                Ok(b) => self.dispatch(route, &b.to_bytes()).await,
                Err(_) => error(413, format!("body over {MAX_BODY} bytes")),
            },
        };
        let mut res = Response::new(Full::new(Bytes::from(a.body)));
        *res.status_mut() =
            StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        res.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        res
    }

    /// Serves HTTPS on `listener` until the task is dropped: one task per connection, HTTP/2
    /// when the agent negotiated it, a 10 s TLS handshake limit.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        tls: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<()> {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        // Replicas not heard from in time are retired (their calls go to another), as long as
        // the endpoint serves.
        let sweeper = {
            let hub = self.hub.clone();
            let engine = self.engine.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    hub.sweep(&engine).await;
                }
            })
        };
        let _stop_sweeper = AbortOnDrop(sweeper);
        loop {
            let (tcp, peer) = listener.accept().await?;
            if let Some(allowed) = &self.allowed_peers {
                if !allowed.contains(&peer.ip()) {
                    self.refused_peers.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, "gateway connection refused: not from an allowed address");
                    drop(tcp);
                    continue;
                }
            }
            self.connections.fetch_add(1, Ordering::Relaxed);
            // Small request/answer pairs: no Nagle delay (40 ms with delayed ACKs).
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let this = self.clone();
            tokio::spawn(async move {
                let stream =
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                let svc = hyper::service::service_fn(move |req| {
                    let this = this.clone();
                    async move { Ok::<_, std::convert::Infallible>(this.hyper(req).await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let r = if h2 {
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .timer(hyper_util::rt::TokioTimer::new())
                        .keep_alive_interval(Some(Duration::from_secs(10)))
                        .max_concurrent_streams(64)
                        .serve_connection(io, svc)
                        .await
                } else {
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await
                };
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
            });
        }
    }
}

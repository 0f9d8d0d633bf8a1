//! The engine's agent endpoint: HTTPS (rustls) over hyper, or mounted in the embedding
//! application's own server through [`AgentEndpoint::handle`].
//!
//! ```no_run
//! # async fn demo(engine: spectro_core::Engine, cert: String, key: String) -> Result<(), Box<dyn std::error::Error>> {
//! use spectro_agent::endpoint::{tls_config, AgentEndpoint};
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8443").await?;
//! let tls = tls_config(&cert, &key)?;
//! tokio::spawn(AgentEndpoint::new(engine).serve(listener, tls));
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use spectro_core::monitoring::ReportBatch;
use spectro_core::{ClusterId, CoreError, Engine};

/// Largest report batch taken (bytes): 240 buffered reports of a 100-node cluster fit.
pub const MAX_BODY: usize = 32 << 20;

/// The endpoint: hands reports to `Engine::agent_report`.
#[derive(Clone, Debug)]
pub struct AgentEndpoint {
    engine: Engine,
    max_body: usize,
}

/// An answer: status and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: String,
}

fn answer(status: u16, v: &serde_json::Value) -> Answer {
    Answer {
        status,
        body: v.to_string(),
    }
}

fn error(status: u16, message: impl Into<String>) -> Answer {
    answer(status, &serde_json::json!({ "error": message.into() }))
}

/// A rustls server configuration from a PEM certificate chain and private key.
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
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

impl AgentEndpoint {
    /// An endpoint for `engine`.
    #[must_use]
    pub fn new(engine: Engine) -> Self {
        AgentEndpoint {
            engine,
            max_body: MAX_BODY,
        }
    }

    /// Handles one request, whatever server carries it: method, path, the `Authorization`
    /// header, the body.
    pub async fn handle(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        content_encoding: Option<&str>,
        body: &[u8],
    ) -> Answer {
        if path == "/healthz" {
            return answer(200, &serde_json::json!({ "ok": true }));
        }
        let Some(id) = path
            .strip_prefix("/v1/clusters/")
            .and_then(|p| p.strip_suffix("/reports"))
        else {
            return error(404, format!("no such path: {path}"));
        };
        if method != "POST" {
            return error(405, "reports are POSTed");
        }
        let Ok(id) = id.parse::<ClusterId>() else {
            return error(401, "credential refused");
        };
        let Some(token) = authorization.and_then(|a| a.strip_prefix("Bearer ")) else {
            return error(401, "Authorization: Bearer <credential> required");
        };
        if body.len() > self.max_body {
            return error(413, format!("body over {} bytes", self.max_body));
        }
        // Authenticate before parsing anything the caller sent.
        if let Err(e) = self.engine.agent_authorized(id, token).await {
            return from_core(&e);
        }
        let inflated;
        let body = match content_encoding.map(str::trim) {
            None | Some("") | Some("identity") => body,
            Some(e) if e.eq_ignore_ascii_case("gzip") => {
                use std::io::Read as _;
                let mut out = Vec::new();
                let mut gz = flate2::read::GzDecoder::new(body).take(self.max_body as u64 + 1);
                if let Err(e) = gz.read_to_end(&mut out) {
                    return error(400, format!("report batch: not gzip: {e}"));
                }
                if out.len() > self.max_body {
                    return error(
                        413,
                        format!("body over {} bytes once inflated", self.max_body),
                    );
                }
                inflated = out;
                &inflated
            }
            Some(other) => return error(415, format!("content encoding {other:?}: gzip or none")),
        };
        let de = &mut serde_json::Deserializer::from_slice(body);
        let batch: ReportBatch = match serde_path_to_error::deserialize(de) {
            Ok(b) => b,
            Err(e) => return error(400, format!("report batch: {}: {}", e.path(), e.inner())),
        };
        match self.engine.agent_report(id, token, &batch).await {
            Ok(h) => answer(
                200,
                &serde_json::json!({ "health": h.status, "reason": h.reason() }),
            ),
            Err(e) => from_core(&e),
        }
    }

    async fn hyper(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let header = |name| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let auth = header(hyper::header::AUTHORIZATION);
        let encoding = header(hyper::header::CONTENT_ENCODING);
        // A report's credential is checked before its body is read: an unauthenticated
        // client cannot make the endpoint buffer a body.
        let refused = match parts
            .uri
            .path()
            .strip_prefix("/v1/clusters/")
            .and_then(|p| p.strip_suffix("/reports"))
        {
            Some(id) if parts.method == Method::POST => {
                let token = auth.as_deref().and_then(|a| a.strip_prefix("Bearer "));
                match (id.parse::<ClusterId>(), token) {
                    (Ok(id), Some(token)) => self
                        .engine
                        .agent_authorized(id, token)
                        .await
                        .err()
                        .map(|e| from_core(&e)),
                    _ => Some(error(401, "credential refused")),
                }
            }
            _ => None,
        };
        let a = if let Some(refused) = refused {
            refused
        } else if parts.method == Method::POST || parts.method == Method::GET {
            match Limited::new(body, self.max_body).collect().await {
                Ok(b) => {
                    self.handle(
                        parts.method.as_str(),
                        parts.uri.path(),
                        auth.as_deref(),
                        encoding.as_deref(),
                        &b.to_bytes(),
                    )
                    .await
                }
                Err(_) => error(413, format!("body over {} bytes", self.max_body)),
            }
        } else {
            error(405, "reports are POSTed")
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

    /// Serves HTTPS on `listener` until the task is dropped: one task per connection, a
    /// 10 s TLS handshake limit.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        tls: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<()> {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        loop {
            let (tcp, peer) = listener.accept().await?;
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
                let svc = hyper::service::service_fn(move |req| {
                    let this = this.clone();
                    async move { Ok::<_, std::convert::Infallible>(this.hyper(req).await) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await
                {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
            });
        }
    }
}

fn from_core(e: &CoreError) -> Answer {
    match e {
        CoreError::Unauthorized { .. } => error(401, "credential refused"),
        CoreError::NotFound { .. } => error(404, e.to_string()),
        CoreError::WrongLifecycle { .. } => error(410, e.to_string()),
        CoreError::Shutdown => error(503, e.to_string()),
        CoreError::Unsupported(_) => error(501, e.to_string()),
        e if e.is_transient() => error(503, e.to_string()),
        e => error(500, e.to_string()),
    }
}

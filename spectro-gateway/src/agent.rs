//! The gateway agent: runs next to vCenter, dials out to the engine's gateway endpoint
//! (through `HTTPS_PROXY` / `HTTP_PROXY` unless `NO_PROXY` says otherwise; proxy credentials
//! in the URL), pairs once with the one-time code, then serves the engine's provider calls
//! with the vSphere provider until stopped or told to upgrade.
//!
//! The credential received at pairing is written to `<state dir>/credential` (mode 0600);
//! replicas of one gateway share it (start the others with a copy of the state directory).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spectro_core::model::{CloudAccount, Credentials, PairingRequest, VsphereCredentials};
use spectro_core::provider::CloudProvider;
use spectro_core::secret::{with_secrets_revealed, Secret};

use crate::wire::{
    Assigned, Call, CallResult, Directive, ErrorBody, Heartbeat, HeartbeatAnswer, Paired, Poll,
    Returned, WireError,
};

/// The vCenter the agent reaches (directly: it is put in `NO_PROXY`).
#[derive(Debug, Clone)]
pub struct VcenterLogin {
    /// `host` or `host:port`.
    pub host: String,
    /// User.
    pub username: String,
    /// Password.
    pub password: Secret,
    /// Accept its certificate without verification (labs, simulators).
    pub insecure: bool,
}

/// An agent's settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The engine's gateway endpoint, `https://host:port`.
    pub endpoint: String,
    /// The gateway's name.
    pub gateway: String,
    /// This replica's name (unique per gateway).
    pub replica: String,
    /// Where the credential is kept.
    pub state_dir: PathBuf,
    /// The pairing code (first start only).
    pub pairing_code: Option<Secret>,
    /// vCenter.
    pub vcenter: VcenterLogin,
    /// PEM of the CA that signed the endpoint's certificate (None: the system's roots).
    pub ca_pem: Option<String>,
    /// Calls run at once.
    pub concurrency: usize,
    /// The version reported.
    pub version: String,
    /// Heartbeat period (the engine's replica timeout is a few of them).
    pub heartbeat: Duration,
}

/// Why an agent stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The engine refused the pairing code or the credential: a new code (or a reset) is
    /// needed; retrying as is cannot help.
    #[error("refused by the engine: {0}")]
    Refused(String),
    /// Bad settings.
    #[error("configuration: {0}")]
    Config(String),
    /// vCenter refused the login (checked before pairing).
    #[error("vCenter: {0}")]
    Vcenter(String),
    /// The engine could not be reached.
    #[error("engine unreachable: {0}")]
    Unreachable(String),
    /// The state directory.
    #[error("state directory: {0}")]
    Io(#[from] std::io::Error),
}

/// How [`Agent::run`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Stopped on request.
    Stopped,
    /// The engine asked for an upgrade: restart as this version.
    Upgrade(String),
}

/// A gateway agent.
pub struct Agent {
    config: AgentConfig,
    http: reqwest::Client,
    provider: Arc<dyn CloudProvider>,
    credential: Option<Secret>,
    in_flight: Mutex<HashSet<u64>>,
    draining: AtomicBool,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("gateway", &self.config.gateway)
            .field("replica", &self.config.replica)
            .finish_non_exhaustive()
    }
}

/// The proxy for the engine's endpoint from the environment (`HTTPS_PROXY`, `HTTP_PROXY`,
/// `ALL_PROXY`, upper or lower case), with `NO_PROXY`.
fn proxy_from_env() -> Result<Option<reqwest::Proxy>, AgentError> {
    let var = |n: &str| {
        std::env::var(n)
            .ok()
            .or_else(|| std::env::var(n.to_lowercase()).ok())
            .filter(|v| !v.trim().is_empty())
    };
    let Some(url) = var("HTTPS_PROXY")
        .or_else(|| var("HTTP_PROXY"))
        .or_else(|| var("ALL_PROXY"))
    else {
        return Ok(None);
    };
    let p = reqwest::Proxy::all(url.as_str()).map_err(|e| {
        AgentError::Config(format!(
            "HTTPS_PROXY: not a proxy URL ({})",
            spectro_core::secret::redact_url_userinfo(&e.to_string())
        ))
    })?;
    Ok(Some(p.no_proxy(reqwest::NoProxy::from_env())))
}

impl Agent {
    /// An agent serving calls with `provider` (the vSphere provider in the binary).
    pub fn new(config: AgentConfig, provider: Arc<dyn CloudProvider>) -> Result<Self, AgentError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        if !config.endpoint.starts_with("https://") {
            return Err(AgentError::Config(format!(
                "endpoint: `{}` is not an https:// URL",
                config.endpoint
            )));
        }
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .http2_keep_alive_while_idle(true)
            .pool_idle_timeout(Duration::from_secs(90));
        if let Some(p) = proxy_from_env()? {
            b = b.proxy(p);
        }
        if let Some(pem) = &config.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| AgentError::Config(format!("CA bundle: not PEM: {e}")))?;
            b = b.tls_certs_only(certs);
        }
        let http = b.build().map_err(|e| AgentError::Config(e.to_string()))?;
        let credential = std::fs::read_to_string(config.state_dir.join("credential"))
            .ok()
            .map(|s| Secret::new(s.trim()));
        Ok(Agent {
            config,
            http,
            provider,
            credential,
            in_flight: Mutex::new(HashSet::new()),
            draining: AtomicBool::new(false),
        })
    }

    /// True once the agent holds a credential (paired before, or just now).
    #[must_use]
    pub fn is_paired(&self) -> bool {
        self.credential.is_some()
    }

    fn url(&self, op: &str) -> String {
        format!(
            "{}/v1/gateways/{}/{op}",
            self.config.endpoint.trim_end_matches('/'),
            self.config.gateway
        )
    }

    /// The account of the vCenter login (checked before pairing; the engine makes the
    /// gateway's default account of the same credentials).
    fn account(&self) -> CloudAccount {
        CloudAccount {
            name: format!("{}-default", self.config.gateway),
            credentials: Credentials::Vsphere(VsphereCredentials {
                gateway: self.config.gateway.clone(),
                vcenter_host: self.config.vcenter.host.clone(),
                username: self.config.vcenter.username.clone(),
                password: self.config.vcenter.password.clone(),
                insecure: self.config.vcenter.insecure,
            }),
        }
    }

    /// Pairs when no credential is kept yet: checks the vCenter login, presents the pairing
    /// code, stores the credential received (0600).
    pub async fn pair_if_needed(&mut self) -> Result<(), AgentError> {
        if self.credential.is_some() {
            return Ok(());
        }
        let Some(code) = self.config.pairing_code.clone() else {
            return Err(AgentError::Config(
                "not paired yet: give the pairing code the engine showed".into(),
            ));
        };
        self.provider
            .validate_account(&self.account())
            .await
            .map_err(|e| AgentError::Vcenter(e.to_string()))?;
        let req = PairingRequest {
            code,
            replica: self.config.replica.clone(),
            version: self.config.version.clone(),
            vcenter_host: self.config.vcenter.host.clone(),
            username: self.config.vcenter.username.clone(),
            password: self.config.vcenter.password.clone(),
            insecure: self.config.vcenter.insecure,
        };
        let body = with_secrets_revealed(|| serde_json::to_vec(&req))
            .map_err(|e| AgentError::Config(e.to_string()))?;
        let res = self
            .http
            .post(self.url("pair"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| AgentError::Unreachable(e.to_string()))?;
        let status = res.status();
        let bytes = res
            .bytes()
            .await
            .map_err(|e| AgentError::Unreachable(e.to_string()))?;
        if !status.is_success() {
            let why = error_text(&bytes, status.as_u16());
            return Err(if status.as_u16() == 401 || status.as_u16() == 409 {
                AgentError::Refused(why)
            } else {
                AgentError::Unreachable(why)
            });
        }
        let paired: Paired = serde_json::from_slice(&bytes)
            .map_err(|e| AgentError::Unreachable(format!("pairing answer: {e}")))?;
        std::fs::create_dir_all(&self.config.state_dir)?;
        let path = self.config.state_dir.join("credential");
        {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)?;
            f.write_all(paired.credential.expose().as_bytes())?;
            // Also when the file existed with other permissions.
            use std::os::unix::fs::PermissionsExt as _;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        self.credential = Some(paired.credential);
        tracing::info!(gateway = %self.config.gateway, "paired; credential stored");
        Ok(())
    }

    async fn post<T: serde::Serialize>(
        &self,
        op: &str,
        body: &T,
        timeout: Duration,
    ) -> Result<(u16, bytes::Bytes), AgentError> {
        let token = self
            .credential
            .as_ref()
            .ok_or_else(|| AgentError::Config("not paired".into()))?;
        let body = serde_json::to_vec(body).map_err(|e| AgentError::Config(e.to_string()))?;
        let res = self
            .http
            .post(self.url(op))
            .bearer_auth(token.expose())
            .header("content-type", "application/json")
            .timeout(timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| AgentError::Unreachable(e.to_string()))?;
        let status = res.status().as_u16();
        let bytes = res
            .bytes()
            .await
            .map_err(|e| AgentError::Unreachable(e.to_string()))?;
        if status == 401 {
            return Err(AgentError::Refused(error_text(&bytes, status)));
        }
        Ok((status, bytes))
    }

    /// Serves calls until `stop` resolves (then says goodbye) or the engine asks for an
    /// upgrade (then finishes the calls in flight first). A refused credential ends it with
    /// [`AgentError::Refused`]; an unreachable engine is retried every second.
    pub async fn run(
        self: Arc<Self>,
        stop: impl std::future::Future<Output = ()> + Send,
    ) -> Result<Exit, AgentError> {
        let (exit_tx, mut exit_rx) = tokio::sync::mpsc::channel::<Result<Exit, AgentError>>(4);
        let mut tasks = tokio::task::JoinSet::new();
        {
            let this = self.clone();
            let tx = exit_tx.clone();
            tasks.spawn(async move {
                let r = this.heartbeats().await;
                let _ = tx.send(r).await;
            });
        }
        for _ in 0..self.config.concurrency.max(1) {
            let this = self.clone();
            let tx = exit_tx.clone();
            tasks.spawn(async move {
                if let Err(e) = this.worker().await {
                    let _ = tx.send(Err(e)).await;
                }
            });
        }
        drop(exit_tx);
        let r = tokio::select! {
            () = stop => Ok(Exit::Stopped),
            r = exit_rx.recv() => r.unwrap_or(Ok(Exit::Stopped)),
        };
        tasks.abort_all();
        let bye = Poll {
            replica: self.config.replica.clone(),
        };
        let _ = self.post("disconnect", &bye, Duration::from_secs(5)).await;
        r
    }

    async fn heartbeats(&self) -> Result<Exit, AgentError> {
        let mut upgrade: Option<String> = None;
        loop {
            let in_flight: Vec<u64> = self.lock_in_flight().iter().copied().collect();
            if let Some(v) = &upgrade {
                if in_flight.is_empty() {
                    return Ok(Exit::Upgrade(v.clone()));
                }
            }
            let hb = Heartbeat {
                replica: self.config.replica.clone(),
                version: self.config.version.clone(),
                in_flight,
            };
            // Period + timeout stay under the engine's replica timeout (6 s by default): a
            // slow answer is dropped and the next heartbeat sent in time.
            match self.post("heartbeat", &hb, Duration::from_secs(3)).await {
                Ok((200, bytes)) => {
                    if let Ok(a) = serde_json::from_slice::<HeartbeatAnswer>(&bytes) {
                        if let Some(Directive::Upgrade { version }) = a.directive {
                            if upgrade.is_none() {
                                tracing::info!(%version, "upgrade asked: finishing the calls in flight");
                                self.draining.store(true, Ordering::SeqCst);
                                upgrade = Some(version);
                            }
                        }
                    }
                }
                Ok((status, _)) => tracing::warn!(status, "heartbeat answered"),
                Err(AgentError::Refused(why)) => return Err(AgentError::Refused(why)),
                Err(e) => tracing::warn!(error = %e, "heartbeat failed: retrying"),
            }
            tokio::time::sleep(if upgrade.is_some() {
                Duration::from_millis(200)
            } else {
                self.config.heartbeat
            })
            .await;
        }
    }

    async fn worker(&self) -> Result<(), AgentError> {
        let poll = Poll {
            replica: self.config.replica.clone(),
        };
        loop {
            if self.draining.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let assigned = match self
                .post("calls/next", &poll, Duration::from_secs(60))
                .await
            {
                Ok((200, bytes)) => match serde_json::from_slice::<Assigned>(&bytes) {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "unreadable call");
                        continue;
                    }
                },
                Ok((204, _)) => continue,
                Ok((status, _)) => {
                    tracing::warn!(status, "poll answered");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(AgentError::Refused(why)) => return Err(AgentError::Refused(why)),
                Err(e) => {
                    tracing::warn!(error = %e, "poll failed: retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            self.lock_in_flight().insert(assigned.id);
            let method = assigned.call.method();
            tracing::debug!(id = assigned.id, method, "running call");
            let result = match tokio::time::timeout(
                CALL_TIMEOUT,
                execute(self.provider.as_ref(), assigned.call),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(WireError {
                    kind: "Retryable".into(),
                    message: format!("{method}: no answer from vCenter within {CALL_TIMEOUT:?}"),
                    retry_after_ms: None,
                }),
            };
            let answer = CallResult {
                replica: self.config.replica.clone(),
                result,
            };
            let op = format!("calls/{}/result", assigned.id);
            for attempt in 0..5u32 {
                match self.post(&op, &answer, Duration::from_secs(30)).await {
                    // Taken, or answered already by another replica.
                    Ok((200 | 410, _)) => break,
                    Ok((status, _)) => {
                        tracing::warn!(status, attempt, "a result was not taken: retrying");
                        tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                    }
                    Err(AgentError::Refused(why)) => return Err(AgentError::Refused(why)),
                    Err(e) => {
                        tracing::warn!(error = %e, attempt, "sending a result failed: retrying");
                        tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                    }
                }
            }
            self.lock_in_flight().remove(&assigned.id);
        }
    }

    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn error_text(body: &[u8], status: u16) -> String {
    serde_json::from_slice::<ErrorBody>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| format!("HTTP {status}"))
}

/// The longest one call may run (a stuck vCenter task must not hold a worker and its lease
/// for ever).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(35 * 60);

/// Runs one call on `provider`.
pub async fn execute(provider: &dyn CloudProvider, call: Call) -> Result<Returned, WireError> {
    let r = match call {
        Call::ValidateAccount { account } => provider
            .validate_account(&account)
            .await
            .map(|()| Returned::Unit),
        Call::EnsureImage { ctx, spec } => provider
            .ensure_image(&ctx, &spec)
            .await
            .map(Returned::Image),
        Call::EnsureInfrastructure { ctx } => provider
            .ensure_infrastructure(&ctx)
            .await
            .map(Returned::Infra),
        Call::ListMachines { ctx } => provider.list_machines(&ctx).await.map(Returned::Machines),
        Call::ListFleet { ctx } => provider.list_fleet(&ctx).await.map(Returned::Fleet),
        Call::Precheck { ctx } => provider.precheck(&ctx).await.map(Returned::Precheck),
        Call::CreateMachines { ctx, infra, batch } => provider
            .create_machines(&ctx, &infra, &batch)
            .await
            .map(Returned::Machines),
        Call::DeleteMachines { ctx, machines } => provider
            .delete_machines(&ctx, &machines)
            .await
            .map(|()| Returned::Unit),
        Call::DeleteInfrastructure { ctx } => provider
            .delete_infrastructure(&ctx)
            .await
            .map(Returned::Deleted),
    };
    r.map_err(|e| WireError::from(&e))
}

/// Settings of the binary, from `--flag value` arguments with environment fallbacks
/// (`SPECTRO_GATEWAY_*`, `VCENTER_*`): see `spectro-gateway-agent --help`.
pub fn config_from_args(args: &[String]) -> Result<AgentConfig, AgentError> {
    let flag = |name: &str, env: &str| -> Option<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
            .or_else(|| std::env::var(env).ok())
            .filter(|v| !v.is_empty())
    };
    let need = |name: &str, env: &str| {
        flag(name, env).ok_or_else(|| AgentError::Config(format!("{name} (or {env}) is required")))
    };
    let ca_pem = match flag("--ca", "SPECTRO_GATEWAY_CA") {
        Some(path) => Some(
            std::fs::read_to_string(&path)
                .map_err(|e| AgentError::Config(format!("--ca {path}: {e}")))?,
        ),
        None => None,
    };
    let concurrency = match flag("--concurrency", "SPECTRO_GATEWAY_CONCURRENCY") {
        Some(c) => c
            .parse()
            .map_err(|_| AgentError::Config(format!("--concurrency: `{c}` is not a number")))?,
        None => 4,
    };
    Ok(AgentConfig {
        endpoint: need("--endpoint", "SPECTRO_GATEWAY_ENDPOINT")?,
        gateway: need("--gateway", "SPECTRO_GATEWAY_NAME")?,
        replica: flag("--replica", "SPECTRO_GATEWAY_REPLICA").unwrap_or_else(|| {
            format!(
                "replica-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            )
        }),
        state_dir: PathBuf::from(need("--state-dir", "SPECTRO_GATEWAY_STATE_DIR")?),
        pairing_code: flag("--pairing-code", "SPECTRO_GATEWAY_PAIRING_CODE").map(Secret::new),
        vcenter: VcenterLogin {
            host: need("--vcenter", "VCENTER_HOST")?,
            username: need("--vcenter-user", "VCENTER_USER")?,
            password: Secret::new(std::env::var("VCENTER_PASSWORD").map_err(|_| {
                AgentError::Config(
                    "the vCenter password: set VCENTER_PASSWORD (never on the command line)".into(),
                )
            })?),
            insecure: flag("--vcenter-insecure", "VCENTER_INSECURE").is_some_and(|v| v == "true"),
        },
        ca_pem,
        concurrency,
        version: std::env::var("SPECTRO_GATEWAY_AGENT_VERSION")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| crate::AGENT_VERSION.to_string()),
        heartbeat: Duration::from_secs(2),
    })
}

/// Puts vCenter's host in `NO_PROXY` (the agent reaches vCenter directly, the engine through
/// the proxy). Call before any thread starts.
pub fn exempt_vcenter_from_proxy(vcenter: &str) {
    let host = spectro_core::model::proxy::host_of(vcenter).to_string();
    for var in ["NO_PROXY", "no_proxy"] {
        let current = std::env::var(var).unwrap_or_default();
        if !current.split(',').any(|e| e.trim() == host) {
            let v = if current.is_empty() {
                host.clone()
            } else {
                format!("{current},{host}")
            };
            // Single-threaded at this point (the binary calls it before its runtime starts).
            std::env::set_var(var, v);
        }
    }
}

/// The binary's main: config, proxy exemption, pairing, serving; on an upgrade directive the
/// process replaces itself with the binary installed at its path (the new release). Returns
/// the process exit code.
pub fn main_with_args(args: Vec<String>) -> i32 {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{HELP}");
        return 0;
    }
    let config = match config_from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("spectro-gateway-agent: {e}");
            return 2;
        }
    };
    exempt_vcenter_from_proxy(&config.vcenter.host);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SPECTRO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("spectro-gateway-agent: runtime: {e}");
            return 1;
        }
    };
    let exit = rt.block_on(async move {
        let provider = Arc::new(spectro_vsphere::VsphereProvider::new(
            spectro_vsphere::VsphereConfig::default(),
        ));
        let mut agent = Agent::new(config, provider)?;
        agent.pair_if_needed().await?;
        let agent = Arc::new(agent);
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        agent.run(stop).await
    });
    match exit {
        Ok(Exit::Stopped) => 0,
        Ok(Exit::Upgrade(version)) => {
            eprintln!("spectro-gateway-agent: upgrading to {version}: restarting");
            use std::os::unix::process::CommandExt as _;
            let exe = match std::env::current_exe() {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("spectro-gateway-agent: cannot find my binary: {e}");
                    return 1;
                }
            };
            // The installed binary is the new release: the override that made this process
            // report an older one goes.
            let err = std::process::Command::new(exe)
                .args(&args[1..])
                .env_remove("SPECTRO_GATEWAY_AGENT_VERSION")
                .env_remove("SPECTRO_GATEWAY_PAIRING_CODE")
                .exec();
            eprintln!("spectro-gateway-agent: restart failed: {err}");
            1
        }
        Err(e) => {
            eprintln!("spectro-gateway-agent: {e}");
            match e {
                AgentError::Refused(_) => 3,
                AgentError::Config(_) => 2,
                _ => 1,
            }
        }
    }
}

const HELP: &str = "spectro-gateway-agent: the private cloud gateway agent

Flags (or environment):
  --endpoint URL          the engine's gateway endpoint, https://host:port (SPECTRO_GATEWAY_ENDPOINT)
  --gateway NAME          the gateway's name (SPECTRO_GATEWAY_NAME)
  --replica NAME          this replica's name (SPECTRO_GATEWAY_REPLICA; default random)
  --state-dir DIR         where the credential is kept (SPECTRO_GATEWAY_STATE_DIR)
  --pairing-code CODE     the one-time code, first start only (SPECTRO_GATEWAY_PAIRING_CODE)
  --ca FILE               PEM of the CA of the endpoint's certificate (SPECTRO_GATEWAY_CA)
  --vcenter HOST[:PORT]   vCenter (VCENTER_HOST); reached directly, added to NO_PROXY
  --vcenter-user USER     (VCENTER_USER); the password from VCENTER_PASSWORD
  --vcenter-insecure true accept vCenter's certificate unverified (VCENTER_INSECURE)
  --concurrency N         calls run at once (default 4)
Proxy: HTTPS_PROXY / HTTP_PROXY (credentials in the URL), NO_PROXY.
Exit codes: 0 stopped, 2 configuration, 3 refused by the engine (new pairing code needed), 1 other.";

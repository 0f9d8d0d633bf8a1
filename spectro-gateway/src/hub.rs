//! The engine's side of its gateways: the calls waiting for an agent, the replicas connected,
//! the leases of the calls they run, and [`RemoteProvider`], the `CloudProvider` that forwards
//! every call of a gateway's clusters to one of its connected replicas.
//!
//! Invariants (tested in `tests/gateway.rs`):
//! - a call waits in its gateway's queue until a connected replica takes it; any replica
//!   takes any call;
//! - a call taken is leased to its replica while that replica's heartbeats list it; when the
//!   replica stops being heard from (killed, network gone) within the replica timeout, the call
//!   goes back to the front of the queue and another replica runs it with the same
//!   idempotency token;
//! - the first result of a call answers it; later ones are dropped;
//! - a gateway with no connected replica answers a call `Retryable` after the connect wait
//!   (the engine also holds its clusters back before calling, with a condition).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use spectro_core::clock::instant_now;
use spectro_core::model::{CloudAccount, CloudType, GatewayState};
use spectro_core::provider::{
    CloudProvider, ClusterContext, ClusterId, DeleteStatus, ImageRef, ImageSpec, InfraStatus,
    Machine, MachineBatch, ProviderError,
};
use spectro_core::secret::with_secrets_revealed;
use spectro_core::Engine;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use crate::wire::{Assigned, Call, Directive, Heartbeat, HeartbeatAnswer, Returned, WireError};

/// Hub tuning.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// The agent version this engine ships: replicas running an older one raise the
    /// gateway's upgrade notification.
    pub release: String,
    /// A replica not heard from for this long is gone: its calls go to another replica.
    pub replica_timeout: Duration,
    /// How long a call waits for a replica to connect before answering `Retryable`.
    pub connect_wait: Duration,
    /// The longest a call may take (vSphere tasks included).
    pub call_timeout: Duration,
    /// How long a replica's poll waits for a call before answering "nothing".
    pub long_poll: Duration,
    /// Times one call is handed out (replicas dying under it) before it fails `Retryable`.
    pub max_attempts: u32,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            release: crate::AGENT_VERSION.to_string(),
            replica_timeout: Duration::from_secs(6),
            connect_wait: Duration::from_secs(10),
            call_timeout: Duration::from_secs(35 * 60),
            long_poll: Duration::from_secs(20),
            max_attempts: 5,
        }
    }
}

type Reply = Result<Returned, WireError>;

struct Pending {
    call: Arc<serde_json::Value>,
    method: &'static str,
    reply: Option<oneshot::Sender<Reply>>,
    /// The replica running it and when its lease ends.
    leased: Option<(String, Instant)>,
    /// When it was last handed out.
    handed_at: Instant,
    attempts: u32,
}

struct Replica {
    version: String,
    last_seen: Instant,
}

#[derive(Default)]
struct Gateway {
    queue: VecDeque<u64>,
    calls: HashMap<u64, Pending>,
    replicas: HashMap<String, Replica>,
    /// The replica told to upgrade (one at a time: the others keep serving; the next one
    /// only once it is back or gone).
    upgrading: Option<String>,
    /// Since when no replica is connected.
    empty_since: Option<Instant>,
}

impl Gateway {
    /// Puts calls back at the front of the queue (their replica is gone or lost them).
    fn requeue(&mut self, ids: &[u64], reassigned: &AtomicU64) {
        for id in ids {
            if let Some(c) = self.calls.get_mut(id) {
                c.leased = None;
                self.queue.push_front(*id);
                reassigned.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The calls leased to `replica` (or every leased call matching `pred`).
    fn leased_where(&self, pred: impl Fn(&str, Instant, &Pending) -> bool) -> Vec<u64> {
        self.calls
            .iter()
            .filter(|(_, c)| {
                c.leased
                    .as_ref()
                    .is_some_and(|(r, until)| pred(r, *until, c))
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Answers a call with a failure (nobody runs it any more).
    fn fail(&mut self, id: u64, message: String) {
        self.queue.retain(|q| *q != id);
        if let Some(tx) = self.calls.remove(&id).and_then(|c| c.reply) {
            let _ = tx.send(Err(WireError {
                kind: "Retryable".into(),
                message,
                retry_after_ms: None,
            }));
        }
    }
}

struct Shared {
    config: HubConfig,
    next_id: AtomicU64,
    gateways: Mutex<HashMap<String, Gateway>>,
    /// Woken when a call is queued or a replica connects.
    work: Notify,
    connected: Notify,
    handed_out: AtomicU64,
    reassigned: AtomicU64,
}

/// Connected gateway replicas and the calls waiting for them. Cheap to clone.
#[derive(Clone)]
pub struct GatewayHub {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for GatewayHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayHub")
            .field("release", &self.shared.config.release)
            .finish_non_exhaustive()
    }
}

/// Counters of the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HubStats {
    /// Calls handed to a replica (re-sends included).
    pub handed_out: u64,
    /// Calls given back to the queue because their replica was gone.
    pub reassigned: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl GatewayHub {
    /// A hub: give [`GatewayHub::provider`] to the engine's builder and the hub to the
    /// [`GatewayEndpoint`](crate::endpoint::GatewayEndpoint) the agents connect to (it retires
    /// silent replicas).
    #[must_use]
    pub fn new(config: HubConfig) -> Self {
        GatewayHub {
            shared: Arc::new(Shared {
                config,
                next_id: AtomicU64::new(1),
                gateways: Mutex::new(HashMap::new()),
                work: Notify::new(),
                connected: Notify::new(),
                handed_out: AtomicU64::new(0),
                reassigned: AtomicU64::new(0),
            }),
        }
    }

    /// The hub's settings.
    #[must_use]
    pub fn config(&self) -> &HubConfig {
        &self.shared.config
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> HubStats {
        HubStats {
            handed_out: self.shared.handed_out.load(Ordering::Relaxed),
            reassigned: self.shared.reassigned.load(Ordering::Relaxed),
        }
    }

    /// The remote provider of `cloud` (the engine's provider for that cloud: it forwards each
    /// call to the gateway the cluster's account names).
    #[must_use]
    pub fn provider(&self, cloud: CloudType) -> Arc<RemoteProvider> {
        Arc::new(RemoteProvider {
            hub: self.clone(),
            cloud,
        })
    }

    /// Replicas of `gateway` connected to this hub now.
    #[must_use]
    pub fn connected(&self, gateway: &str) -> Vec<String> {
        self.replicas(gateway).into_iter().map(|(r, _)| r).collect()
    }

    /// Replicas of `gateway` connected to this hub now, with the agent version each runs.
    #[must_use]
    pub fn replicas(&self, gateway: &str) -> Vec<(String, String)> {
        let g = lock(&self.shared.gateways);
        let mut v: Vec<(String, String)> = g
            .get(gateway)
            .map(|g| {
                g.replicas
                    .iter()
                    .map(|(id, r)| (id.clone(), r.version.clone()))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Calls of `gateway` being run now: id, provider method, replica.
    #[must_use]
    pub fn running(&self, gateway: &str) -> Vec<(u64, &'static str, String)> {
        let g = lock(&self.shared.gateways);
        let mut v: Vec<(u64, &'static str, String)> = g
            .get(gateway)
            .map(|g| {
                g.calls
                    .iter()
                    .filter_map(|(id, c)| {
                        c.leased.as_ref().map(|(r, _)| (*id, c.method, r.clone()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// A replica's heartbeat: registers it, renews the leases of the calls it lists, reports
    /// it to the engine, and answers with the gateway's state and, during an upgrade, the
    /// directive to upgrade (one replica at a time).
    pub async fn heartbeat(
        &self,
        engine: &Engine,
        gateway: &str,
        hb: &Heartbeat,
    ) -> spectro_core::Result<HeartbeatAnswer> {
        let now = instant_now();
        let lease = now + self.shared.config.replica_timeout;
        let fresh = {
            let mut gws = lock(&self.shared.gateways);
            let g = gws.entry(gateway.to_string()).or_default();
            let fresh = !g.replicas.contains_key(&hb.replica);
            g.replicas.insert(
                hb.replica.clone(),
                Replica {
                    version: hb.version.clone(),
                    last_seen: now,
                },
            );
            for id in &hb.in_flight {
                if let Some(c) = g.calls.get_mut(id) {
                    if let Some((r, until)) = &mut c.leased {
                        if *r == hb.replica {
                            *until = lease;
                        }
                    }
                }
            }
            // Calls leased to this replica that it no longer lists were lost with a
            // connection (the result never came): queued again. A call handed out a moment
            // ago may not be in this heartbeat yet: only those handed out more than half a
            // timeout ago count.
            let grace = self.shared.config.replica_timeout / 2;
            let lost = g
                .leased_where(|r, _, c| r == hb.replica && now.duration_since(c.handed_at) > grace);
            let lost: Vec<u64> = lost
                .into_iter()
                .filter(|id| !hb.in_flight.contains(id))
                .collect();
            g.requeue(&lost, &self.shared.reassigned);
            g.empty_since = None;
            if g.upgrading.as_deref() == Some(hb.replica.as_str())
                && !spectro_core::engine::version_older(&hb.version, &self.shared.config.release)
            {
                g.upgrading = None;
            }
            fresh
        };
        if fresh {
            self.shared.connected.notify_waiters();
        }
        self.shared.work.notify_waiters();
        let status = engine
            .gateway_heartbeat(
                gateway,
                &hb.replica,
                &hb.version,
                &self.shared.config.release,
            )
            .await?;
        let mut directive = None;
        if status.state == GatewayState::Upgrading {
            let target = status
                .upgrading_to
                .clone()
                .unwrap_or_else(|| self.shared.config.release.clone());
            if spectro_core::engine::version_older(&hb.version, &target) {
                let mut gws = lock(&self.shared.gateways);
                let g = gws.entry(gateway.to_string()).or_default();
                // One replica at a time: the next only once the previous one is back
                // upgraded (cleared above) or gone.
                let free = match &g.upgrading {
                    None => true,
                    Some(r) => *r == hb.replica || !g.replicas.contains_key(r),
                };
                if free {
                    g.upgrading = Some(hb.replica.clone());
                    directive = Some(Directive::Upgrade { version: target });
                }
            }
        }
        Ok(HeartbeatAnswer {
            state: status.state.as_str().to_string(),
            directive,
        })
    }

    /// A replica says goodbye (graceful stop, upgrade): its calls go back to the queue.
    pub async fn disconnect(&self, engine: &Engine, gateway: &str, replica: &str, why: &str) {
        let removed = {
            let mut gws = lock(&self.shared.gateways);
            let Some(g) = gws.get_mut(gateway) else {
                return;
            };
            let removed = g.replicas.remove(replica).is_some();
            let mine = g.leased_where(|r, _, _| r == replica);
            g.requeue(&mine, &self.shared.reassigned);
            removed
        };
        self.shared.work.notify_waiters();
        if removed {
            if let Err(e) = engine.gateway_disconnected(gateway, replica, why).await {
                tracing::warn!(gateway, replica, error = %e, "recording a disconnection failed");
            }
        }
    }

    /// The next call for `replica` of `gateway`, waiting up to the long-poll time.
    pub async fn next_call(&self, gateway: &str, replica: &str) -> Option<Assigned> {
        let deadline = instant_now() + self.shared.config.long_poll;
        loop {
            let notified = self.shared.work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut gws = lock(&self.shared.gateways);
                let g = gws.entry(gateway.to_string()).or_default();
                if let Some(r) = g.replicas.get_mut(replica) {
                    r.last_seen = instant_now();
                }
                let upgrading = g.upgrading.as_deref() == Some(replica);
                if !upgrading {
                    while let Some(id) = g.queue.pop_front() {
                        let Some(c) = g.calls.get_mut(&id) else {
                            continue;
                        };
                        if c.reply.as_ref().is_none_or(|r| r.is_closed()) {
                            // The caller gave up: nobody waits for the result.
                            g.calls.remove(&id);
                            continue;
                        }
                        if c.attempts >= self.shared.config.max_attempts {
                            let method = c.method;
                            g.fail(
                                id,
                                format!(
                                    "{method} through gateway `{gateway}`: handed out {} times, its replicas kept disappearing",
                                    self.shared.config.max_attempts
                                ),
                            );
                            continue;
                        }
                        c.attempts += 1;
                        c.handed_at = instant_now();
                        c.leased = Some((
                            replica.to_string(),
                            instant_now() + self.shared.config.replica_timeout,
                        ));
                        self.shared.handed_out.fetch_add(1, Ordering::Relaxed);
                        let call: Call = match serde_json::from_value((*c.call).clone()) {
                            Ok(call) => call,
                            Err(e) => {
                                if let Some(tx) = g.calls.remove(&id).and_then(|c| c.reply) {
                                    let _ = tx.send(Err(WireError {
                                        kind: "Terminal".into(),
                                        message: format!("call not serializable: {e}"),
                                        retry_after_ms: None,
                                    }));
                                }
                                continue;
                            }
                        };
                        tracing::debug!(gateway, replica, id, method = c.method, "call handed out");
                        return Some(Assigned { id, call });
                    }
                }
            }
            let now = instant_now();
            if now >= deadline {
                return None;
            }
            if tokio::time::timeout(deadline - now, notified)
                .await
                .is_err()
            {
                return None;
            }
        }
    }

    /// A replica's result for call `id`: the first one answers the call. False when the
    /// call is no longer waiting (answered already, or its caller gave up).
    pub fn complete(&self, gateway: &str, id: u64, result: Reply) -> bool {
        let mut gws = lock(&self.shared.gateways);
        let Some(g) = gws.get_mut(gateway) else {
            return false;
        };
        let Some(c) = g.calls.remove(&id) else {
            return false;
        };
        g.queue.retain(|q| *q != id);
        c.reply.is_some_and(|tx| tx.send(result).is_ok())
    }

    /// Runs `call` on a replica of `gateway` and waits for its result.
    pub async fn invoke(&self, gateway: &str, call: &Call) -> Result<Returned, ProviderError> {
        let method = call.method();
        // The account's secrets travel to the agent (it acts with them), over the
        // authenticated TLS channel only.
        let value = with_secrets_revealed(|| serde_json::to_value(call))
            .map_err(|e| ProviderError::terminal(format!("{method}: not serializable: {e}")))?;
        self.wait_connected(gateway).await?;
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut gws = lock(&self.shared.gateways);
            let g = gws.entry(gateway.to_string()).or_default();
            g.calls.insert(
                id,
                Pending {
                    call: Arc::new(value),
                    method,
                    reply: Some(tx),
                    leased: None,
                    handed_at: instant_now(),
                    attempts: 0,
                },
            );
            g.queue.push_back(id);
        }
        // Whatever happens (an answer, a timeout, the caller dropping this future), the call
        // is no longer anyone's to run afterwards.
        let _forget = Forget {
            hub: self,
            gateway,
            id,
        };
        self.shared.work.notify_waiters();
        let answer = tokio::time::timeout(self.shared.config.call_timeout, rx).await;
        match answer {
            Ok(Ok(r)) => r.map_err(ProviderError::from),
            Ok(Err(_)) => Err(ProviderError::retryable(format!(
                "{method} through gateway `{gateway}`: dropped without an answer"
            ))),
            Err(_) => Err(ProviderError::retryable(format!(
                "{method} through gateway `{gateway}`: no result within {:?}",
                self.shared.config.call_timeout
            ))),
        }
    }

    async fn wait_connected(&self, gateway: &str) -> Result<(), ProviderError> {
        let deadline = instant_now() + self.shared.config.connect_wait;
        loop {
            let notified = self.shared.connected.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.connected(gateway).is_empty() {
                return Ok(());
            }
            let now = instant_now();
            if now >= deadline
                || tokio::time::timeout(deadline - now, notified)
                    .await
                    .is_err()
            {
                return Err(ProviderError::retryable(format!(
                    "private cloud gateway `{gateway}` has no connected replica"
                )));
            }
        }
    }

    /// Retires replicas not heard from within the timeout (their calls go back to the queue)
    /// and calls whose lease ran out.
    pub(crate) async fn sweep(&self, engine: &Engine) {
        let now = instant_now();
        let timeout = self.shared.config.replica_timeout;
        let connect_wait = self.shared.config.connect_wait;
        let mut gone = Vec::new();
        let mut moved = false;
        {
            let mut gws = lock(&self.shared.gateways);
            for (name, g) in gws.iter_mut() {
                let silent: Vec<String> = g
                    .replicas
                    .iter()
                    .filter(|(_, r)| now.duration_since(r.last_seen) > timeout)
                    .map(|(id, _)| id.clone())
                    .collect();
                for r in silent {
                    g.replicas.remove(&r);
                    let mine = g.leased_where(|x, _, _| x == r);
                    moved |= !mine.is_empty();
                    g.requeue(&mine, &self.shared.reassigned);
                    gone.push((name.clone(), r));
                }
                let expired = g.leased_where(|_, until, _| until < now);
                moved |= !expired.is_empty();
                g.requeue(&expired, &self.shared.reassigned);
                // No replica for longer than the connect wait: the queued calls fail
                // (Retryable) instead of waiting out the call timeout.
                if g.replicas.is_empty() {
                    let since = *g.empty_since.get_or_insert(now);
                    if now.duration_since(since) > connect_wait {
                        let waiting: Vec<u64> = g.queue.iter().copied().collect();
                        for id in waiting {
                            g.fail(
                                id,
                                format!("private cloud gateway `{name}` has no connected replica"),
                            );
                        }
                    }
                } else {
                    g.empty_since = None;
                }
            }
        }
        if moved {
            self.shared.work.notify_waiters();
        }
        for (gw, r) in gone {
            tracing::warn!(gateway = %gw, replica = %r, "replica silent: its calls go to another replica");
            if let Err(e) = engine
                .gateway_disconnected(&gw, &r, &format!("not heard from for {timeout:?}"))
                .await
            {
                tracing::warn!(gateway = %gw, error = %e, "recording a disconnection failed");
            }
        }
    }
}

/// Removes a call from its gateway when its caller is done with it.
struct Forget<'a> {
    hub: &'a GatewayHub,
    gateway: &'a str,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        let mut gws = lock(&self.hub.shared.gateways);
        if let Some(g) = gws.get_mut(self.gateway) {
            g.calls.remove(&self.id);
            g.queue.retain(|q| *q != self.id);
        }
    }
}

/// The engine's provider for a cloud reached through private cloud gateways: each call goes
/// to a connected replica of the gateway the cluster's account names (nothing in it is
/// specific to a cloud; the agent runs the real provider).
#[derive(Debug)]
pub struct RemoteProvider {
    hub: GatewayHub,
    cloud: CloudType,
}

fn gateway_of(account: &CloudAccount) -> Result<&str, ProviderError> {
    account.gateway().ok_or_else(|| {
        ProviderError::terminal(format!(
            "cloud account `{}` names no private cloud gateway",
            account.name
        ))
    })
}

fn unexpected(method: &str, r: &Returned) -> ProviderError {
    ProviderError::terminal(format!(
        "{method}: the gateway answered with the wrong kind of result ({r:?})"
    ))
}

impl RemoteProvider {
    async fn run(&self, ctx: &ClusterContext, call: Call) -> Result<Returned, ProviderError> {
        let gw = gateway_of(&ctx.account)?;
        self.hub.invoke(gw, &call).await
    }
}

#[async_trait]
impl CloudProvider for RemoteProvider {
    fn cloud(&self) -> CloudType {
        self.cloud
    }

    fn via_gateway(&self) -> bool {
        true
    }

    async fn validate_account(&self, account: &CloudAccount) -> Result<(), ProviderError> {
        let gw = gateway_of(account)?;
        match self
            .hub
            .invoke(
                gw,
                &Call::ValidateAccount {
                    account: account.clone(),
                },
            )
            .await?
        {
            Returned::Unit => Ok(()),
            r => Err(unexpected("validate_account", &r)),
        }
    }

    async fn ensure_image(
        &self,
        ctx: &ClusterContext,
        spec: &ImageSpec,
    ) -> Result<ImageRef, ProviderError> {
        let call = Call::EnsureImage {
            ctx: ctx.clone(),
            spec: spec.clone(),
        };
        match self.run(ctx, call).await? {
            Returned::Image(i) => Ok(i),
            r => Err(unexpected("ensure_image", &r)),
        }
    }

    async fn ensure_infrastructure(
        &self,
        ctx: &ClusterContext,
    ) -> Result<InfraStatus, ProviderError> {
        match self
            .run(ctx, Call::EnsureInfrastructure { ctx: ctx.clone() })
            .await?
        {
            Returned::Infra(i) => Ok(i),
            r => Err(unexpected("ensure_infrastructure", &r)),
        }
    }

    async fn list_machines(&self, ctx: &ClusterContext) -> Result<Vec<Machine>, ProviderError> {
        match self
            .run(ctx, Call::ListMachines { ctx: ctx.clone() })
            .await?
        {
            Returned::Machines(m) => Ok(m),
            r => Err(unexpected("list_machines", &r)),
        }
    }

    fn fleet(&self, ctx: &ClusterContext) -> Option<String> {
        // One listing per gateway and vCenter serves every cluster there.
        let gw = ctx.account.gateway()?;
        match &ctx.account.credentials {
            spectro_core::model::Credentials::Vsphere(v) => {
                Some(format!("gateway/{gw}/{}", v.vcenter_host))
            }
            _ => None,
        }
    }

    async fn precheck(
        &self,
        ctx: &ClusterContext,
    ) -> Result<spectro_core::precheck::Precheck, ProviderError> {
        // Agents older than the engine do not know the call (they drop it): a pre-check is
        // never worth holding a cluster back for, so it is given up after a while.
        let wait = std::time::Duration::from_secs(60);
        match tokio::time::timeout(wait, self.run(ctx, Call::Precheck { ctx: ctx.clone() })).await {
            Ok(r) => match r? {
                Returned::Precheck(p) => Ok(p),
                r => Err(unexpected("precheck", &r)),
            },
            Err(_) => Ok(spectro_core::precheck::Precheck::unchecked(format!(
                "the gateway's agents did not answer the pre-check within {} s (agents older \
                 than the engine do not know it: upgrade them)",
                wait.as_secs()
            ))),
        }
    }

    async fn list_fleet(
        &self,
        ctx: &ClusterContext,
    ) -> Result<HashMap<ClusterId, Vec<Machine>>, ProviderError> {
        match self.run(ctx, Call::ListFleet { ctx: ctx.clone() }).await? {
            Returned::Fleet(f) => Ok(f),
            r => Err(unexpected("list_fleet", &r)),
        }
    }

    async fn create_machines(
        &self,
        ctx: &ClusterContext,
        infra: &InfraStatus,
        batch: &MachineBatch,
    ) -> Result<Vec<Machine>, ProviderError> {
        let call = Call::CreateMachines {
            ctx: ctx.clone(),
            infra: infra.clone(),
            batch: batch.clone(),
        };
        match self.run(ctx, call).await? {
            Returned::Machines(m) => Ok(m),
            r => Err(unexpected("create_machines", &r)),
        }
    }

    async fn delete_machines(
        &self,
        ctx: &ClusterContext,
        machines: &[Machine],
    ) -> Result<(), ProviderError> {
        let call = Call::DeleteMachines {
            ctx: ctx.clone(),
            machines: machines.to_vec(),
        };
        match self.run(ctx, call).await? {
            Returned::Unit => Ok(()),
            r => Err(unexpected("delete_machines", &r)),
        }
    }

    async fn delete_infrastructure(
        &self,
        ctx: &ClusterContext,
    ) -> Result<DeleteStatus, ProviderError> {
        match self
            .run(ctx, Call::DeleteInfrastructure { ctx: ctx.clone() })
            .await?
        {
            Returned::Deleted(d) => Ok(d),
            r => Err(unexpected("delete_infrastructure", &r)),
        }
    }
}

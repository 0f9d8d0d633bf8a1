//! The simulated cloud: an in-memory [`CloudProvider`] for demos, scale tests and fault tests.
//!
//! A product feature, not a test double: it keeps a seeded RNG, reads time from an
//! injectable [`Clock`], and has configurable latency per operation, machine boot time,
//! infrastructure readiness time, quotas (a vCPU limit that can be changed at run time),
//! injected failures, throttling and lost responses (the call took effect but the answer
//! never came), and counts every API call. Like a real cloud it is idempotent only where
//! the caller passes a token: a create repeated with a new token launches new machines.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use spectro_core::model::CloudType;
//! use spectro_core::sim::{SimCloud, SimConfig, SimOp};
//! use spectro_core::CloudProvider;
//!
//! // 20 ms per call, 50 ms for creates, nodes boot in 2 s, 1% of calls fail, 64 vCPUs.
//! let mut config = SimConfig { seed: 7, ..SimConfig::default() }.with_latency(Duration::from_millis(20));
//! config.latency.insert(SimOp::CreateMachines, Duration::from_millis(50));
//! config.boot_time = Duration::from_secs(2);
//! config.fault_rate = 0.01;
//! config.vcpu_limit = Some(64);
//! let sim = Arc::new(SimCloud::new(CloudType::Aws, config));
//! let provider: Arc<dyn CloudProvider> = sim.clone(); // what `EngineBuilder::provider` takes
//! assert_eq!(provider.cloud(), CloudType::Aws);
//! assert_eq!(sim.total_calls(), 0);
//! sim.set_vcpu_limit(Some(128)); // a quota raise, at run time
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::budget::{BudgetStats, Budgets, CallClass, Limits};
use crate::clock::{Clock, TokioClock};
use crate::model::{CloudAccount, CloudType, Credentials, NodePool};
use crate::provider::{
    CloudProvider, CloudResource, ClusterContext, ClusterId, DeleteStatus, ImageRef, ImageSpec,
    InfraStatus, Machine, MachineBatch, MachineState, ProviderError,
};

/// The operations of the simulated cloud (one API call each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SimOp {
    /// Account check.
    ValidateAccount,
    /// Image lookup.
    ResolveImage,
    /// Image build (customization).
    CustomizeImage,
    /// Infrastructure create/check.
    EnsureInfrastructure,
    /// Machine listing by tag.
    ListMachines,
    /// Batch create.
    CreateMachines,
    /// Batch delete.
    DeleteMachines,
    /// Infrastructure delete.
    DeleteInfrastructure,
}

impl SimOp {
    /// The operation's name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            SimOp::ValidateAccount => "ValidateAccount",
            SimOp::ResolveImage => "ResolveImage",
            SimOp::CustomizeImage => "CustomizeImage",
            SimOp::EnsureInfrastructure => "EnsureInfrastructure",
            SimOp::ListMachines => "ListMachines",
            SimOp::CreateMachines => "CreateMachines",
            SimOp::DeleteMachines => "DeleteMachines",
            SimOp::DeleteInfrastructure => "DeleteInfrastructure",
        }
    }
}

/// Behaviour of the simulated cloud.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// RNG seed: same seed, same faults.
    pub seed: u64,
    /// Latency per operation (default: none).
    pub latency: HashMap<SimOp, Duration>,
    /// Time from create to Running.
    pub boot_time: Duration,
    /// Time from infrastructure create to ready.
    pub infra_ready_time: Duration,
    /// Time a deleted machine stays visible as Deleting.
    pub delete_time: Duration,
    /// Eventual consistency: a new machine shows in listings only this long after its
    /// create returned (as EC2's DescribeInstances can lag RunInstances).
    pub list_lag: Duration,
    /// Share of calls failing with a transient error (0.0–1.0).
    pub fault_rate: f64,
    /// Share of calls throttled (0.0–1.0).
    pub throttle_rate: f64,
    /// Share of calls that take effect but whose answer is lost (0.0–1.0).
    pub lost_response_rate: f64,
    /// Retry-after of throttling errors.
    pub throttle_retry_after: Duration,
    /// vCPU quota of the account (None: unlimited).
    pub vcpu_limit: Option<u32>,
    /// The cloud's request-rate limits per account, enforced as the cloud does: a call over
    /// them is answered `Throttled` (counted by [`SimCloud::throttled_answers`]). `None`:
    /// unlimited.
    pub rate_limits: Option<Limits>,
    /// The client side: a request budget per account that every call waits on before it goes
    /// out (what a real provider keeps to stay under the cloud's limits), fair between
    /// clusters. `None`: calls go out at once.
    pub client_budget: Option<Limits>,
    /// Answer fleet listings: every cluster of an account in one `ListMachines` call
    /// ([`CloudProvider::list_fleet`]). Off by default: with zero latency, listing a fleet of
    /// 100,000 clusters costs more than listing one cluster.
    pub fleet_listing: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            latency: HashMap::new(),
            boot_time: Duration::ZERO,
            infra_ready_time: Duration::ZERO,
            delete_time: Duration::ZERO,
            list_lag: Duration::ZERO,
            fault_rate: 0.0,
            throttle_rate: 0.0,
            lost_response_rate: 0.0,
            throttle_retry_after: Duration::from_millis(50),
            vcpu_limit: None,
            rate_limits: None,
            client_budget: None,
            fleet_listing: false,
        }
    }
}

impl SimConfig {
    /// Same latency for every operation.
    #[must_use]
    pub fn with_latency(mut self, d: Duration) -> Self {
        for op in [
            SimOp::ValidateAccount,
            SimOp::ResolveImage,
            SimOp::CustomizeImage,
            SimOp::EnsureInfrastructure,
            SimOp::ListMachines,
            SimOp::CreateMachines,
            SimOp::DeleteMachines,
            SimOp::DeleteInfrastructure,
        ] {
            self.latency.insert(op, d);
        }
        self
    }
}

/// What a call hook asks the simulated cloud to do after a call took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookAction {
    /// Answer normally.
    Continue,
    /// Never answer (the caller hangs: used to crash an engine at an exact step).
    Hang,
    /// Answer with a transient error (before: the call does nothing; after: it took
    /// effect and the answer is lost).
    Fail,
}

/// When a hook runs: before a call takes effect, or after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookPoint {
    /// The call was received; nothing happened yet.
    Before,
    /// The call took effect; the answer is about to be sent.
    After,
}

/// A function called twice per call (before and after it takes effect) with the operation
/// and the call's number.
pub type CallHook = Arc<dyn Fn(SimOp, u64, HookPoint) -> HookAction + Send + Sync>;

#[derive(Debug, Clone)]
struct SimMachine {
    machine: Machine,
    vcpus: u32,
    ready_at: DateTime<Utc>,
    gone_at: Option<DateTime<Utc>>,
    instance_type: String,
    user_data: Vec<u8>,
    image: String,
}

#[derive(Debug, Clone)]
struct SimInfra {
    resources: Vec<CloudResource>,
    ready_at: DateTime<Utc>,
    endpoint: String,
    outputs: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
struct SimCluster {
    /// The cloud account the cluster's resources were made with (fleet listings).
    account: String,
    infra: Option<SimInfra>,
    machines: BTreeMap<String, SimMachine>,
    tokens: HashMap<String, Vec<String>>,
}

struct State {
    seed: u64,
    streams: HashMap<ClusterId, (u64, u64)>,
    clusters: HashMap<ClusterId, SimCluster>,
    images: HashMap<String, ImageRef>,
    calls: BTreeMap<&'static str, u64>,
    total_calls: u64,
    vcpu_limit: Option<u32>,
    vcpus_in_use: u32,
    machines_launched: u64,
    hook: Option<CallHook>,
    /// Server-side token buckets per (account, class) when `rate_limits` is set.
    buckets: HashMap<(String, CallClass), (f64, tokio::time::Instant)>,
    throttled_answers: u64,
}

impl State {
    /// The cluster's own stream: its RNG state and id counter. Calls for one cluster come
    /// one at a time (the engine never reconciles a cluster twice at once), so what a cluster
    /// draws does not depend on how other clusters' calls interleave with its own.
    fn stream(&mut self, cluster: Option<ClusterId>) -> &mut (u64, u64) {
        let seed = self.seed;
        let key = cluster.unwrap_or(ClusterId(uuid::Uuid::nil()));
        self.streams.entry(key).or_insert_with(|| {
            let (hi, lo) = key.0.as_u64_pair();
            (seed ^ hi.rotate_left(17) ^ lo, 0)
        })
    }

    /// A number in [0, 1) from the cluster's stream (splitmix64).
    fn rand_for(&mut self, cluster: Option<ClusterId>) -> f64 {
        let st = self.stream(cluster);
        st.0 = st.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = st.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A resource id unique in the cloud, numbered per cluster; also returns the number.
    fn id(&mut self, cluster: ClusterId, prefix: &str) -> (String, u64) {
        let st = self.stream(Some(cluster));
        st.1 += 1;
        let n = st.1;
        let short = &cluster.0.simple().to_string()[..8];
        (format!("{prefix}-{short}-{n:06x}"), n)
    }
}

/// The simulated cloud.
pub struct SimCloud {
    cloud: CloudType,
    config: SimConfig,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    budgets: Budgets,
    /// One image build at a time: a second cluster asking for the same signature waits for
    /// the first build and reuses it (as a real image builder finds the build in progress).
    building: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for SimCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCloud")
            .field("cloud", &self.cloud)
            .field("config", &self.config)
            .finish()
    }
}

/// A snapshot of a simulated machine, for inspection.
#[derive(Debug, Clone)]
pub struct SimMachineInfo {
    /// As the engine sees it.
    pub machine: Machine,
    /// Instance type (or `Ncpu-Mgb` on vSphere).
    pub instance_type: String,
    /// The user data it was launched with.
    pub user_data: Vec<u8>,
    /// Image id.
    pub image: String,
}

/// vCPUs of an instance type, the way the clouds name their sizes.
#[must_use]
pub fn vcpus_of(pool: &NodePool) -> u32 {
    if let Some(c) = pool.cpu {
        return c;
    }
    let t = pool.instance_type.as_deref().unwrap_or("");
    // AWS: m5.2xlarge; Azure: Standard_D4s_v3; GCP: n2-standard-8.
    if let Some((_, size)) = t.split_once('.') {
        return match size {
            "nano" | "micro" | "small" => 1,
            "medium" | "large" => 2,
            "xlarge" => 4,
            s => s
                .strip_suffix("xlarge")
                .and_then(|n| n.parse::<u32>().ok())
                .map_or(2, |n| n * 4),
        };
    }
    if let Some(rest) = t.strip_prefix("Standard_") {
        let digits: String = rest
            .chars()
            .skip_while(|c| c.is_ascii_alphabetic())
            .take_while(|c| c.is_ascii_digit())
            .collect();
        return digits.parse().unwrap_or(2);
    }
    t.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2)
}

impl SimCloud {
    /// A simulated cloud answering as `cloud`, with the tokio-driven clock.
    #[must_use]
    pub fn new(cloud: CloudType, config: SimConfig) -> Self {
        Self::with_clock(cloud, config, Arc::new(TokioClock::new()))
    }

    /// A simulated cloud with an explicit clock.
    #[must_use]
    pub fn with_clock(cloud: CloudType, config: SimConfig, clock: Arc<dyn Clock>) -> Self {
        let state = State {
            seed: config.seed,
            streams: HashMap::new(),
            clusters: HashMap::new(),
            images: HashMap::new(),
            calls: BTreeMap::new(),
            total_calls: 0,
            vcpu_limit: config.vcpu_limit,
            vcpus_in_use: 0,
            machines_launched: 0,
            hook: None,
            buckets: HashMap::new(),
            throttled_answers: 0,
        };
        SimCloud {
            cloud,
            config,
            clock,
            state: Mutex::new(state),
            budgets: Budgets::new(),
            building: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the vCPU quota at run time (None: unlimited).
    pub fn set_vcpu_limit(&self, limit: Option<u32>) {
        self.lock().vcpu_limit = limit;
    }

    /// Installs a hook called after every call took effect.
    pub fn set_hook(&self, hook: Option<CallHook>) {
        self.lock().hook = hook;
    }

    /// Calls per operation so far.
    pub fn calls(&self) -> BTreeMap<&'static str, u64> {
        self.lock().calls.clone()
    }

    /// All calls so far.
    pub fn total_calls(&self) -> u64 {
        self.lock().total_calls
    }

    /// Calls answered `Throttled` because they were over the account's `rate_limits`.
    pub fn throttled_answers(&self) -> u64 {
        self.lock().throttled_answers
    }

    /// The client-side request budgets (with `client_budget`), by account.
    pub fn budget_stats(&self) -> BTreeMap<String, BudgetStats> {
        self.budgets.stats()
    }

    /// The cloud's side of `rate_limits`: takes `units` from the account's bucket of
    /// `class`, or tells how long until there are enough.
    fn over_limit(
        &self,
        st: &mut State,
        account: &str,
        class: CallClass,
        units: u64,
    ) -> Option<Duration> {
        let rate = self.config.rate_limits.as_ref()?.rate_of(class)?;
        let now = crate::clock::instant_now();
        let (tokens, last) = st
            .buckets
            .entry((account.to_string(), class))
            .or_insert((rate.burst, now));
        let dt = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + dt * rate.per_second).min(rate.burst);
        *last = now;
        let need = (units as f64).min(rate.burst);
        if *tokens + 1e-9 >= need {
            *tokens -= units as f64;
            None
        } else {
            Some(Duration::from_secs_f64((need - *tokens) / rate.per_second))
        }
    }

    /// Machines launched so far (including later deleted ones).
    pub fn machines_launched(&self) -> u64 {
        self.lock().machines_launched
    }

    /// vCPUs held by existing machines.
    pub fn vcpus_in_use(&self) -> u32 {
        self.lock().vcpus_in_use
    }

    /// Every resource (infrastructure and machines, Deleting ones included) of a cluster.
    pub fn resources(&self, cluster: ClusterId) -> Vec<CloudResource> {
        let st = self.lock();
        let Some(c) = st.clusters.get(&cluster) else {
            return Vec::new();
        };
        let mut out: Vec<CloudResource> = c
            .infra
            .iter()
            .flat_map(|i| i.resources.iter().cloned())
            .collect();
        out.extend(c.machines.values().map(|m| CloudResource {
            kind: "machine".into(),
            id: m.machine.id.clone(),
        }));
        out
    }

    /// Number of resources of every cluster (machines already gone excluded).
    pub fn total_resources(&self) -> usize {
        let now = self.clock.now();
        let st = self.lock();
        st.clusters
            .values()
            .map(|c| {
                c.machines
                    .values()
                    .filter(|m| m.gone_at.is_none_or(|g| g > now))
                    .count()
                    + c.infra.as_ref().map_or(0, |i| i.resources.len())
            })
            .sum()
    }

    /// The machines of a cluster with their launch data.
    pub fn machines(&self, cluster: ClusterId) -> Vec<SimMachineInfo> {
        let now = self.clock.now();
        let mut st = self.lock();
        Self::settle(&mut st, cluster, now);
        st.clusters
            .get(&cluster)
            .map(|c| {
                c.machines
                    .values()
                    .map(|m| SimMachineInfo {
                        machine: m.machine.clone(),
                        instance_type: m.instance_type.clone(),
                        user_data: m.user_data.clone(),
                        image: m.image.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Terminates a machine out of band (an operator, a spot reclaim): it is gone from the
    /// next listing. True when it existed.
    pub fn terminate_out_of_band(&self, cluster: ClusterId, name: &str) -> bool {
        let now = self.clock.now();
        let mut st = self.lock();
        let mut freed = None;
        if let Some(c) = st.clusters.get_mut(&cluster) {
            if let Some(sm) = c
                .machines
                .values_mut()
                .find(|m| m.machine.name == name && m.gone_at.is_none())
            {
                sm.gone_at = Some(now);
                freed = Some(sm.vcpus);
            }
        }
        if let Some(v) = freed {
            st.vcpus_in_use = st.vcpus_in_use.saturating_sub(v);
        }
        Self::settle(&mut st, cluster, now);
        freed.is_some()
    }

    /// Machine names that exist more than once in a cluster (must always be empty).
    pub fn duplicate_names(&self, cluster: ClusterId) -> Vec<String> {
        let mut seen: BTreeMap<String, u32> = BTreeMap::new();
        for m in self.machines(cluster) {
            *seen.entry(m.machine.name).or_default() += 1;
        }
        seen.into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(k, _)| k)
            .collect()
    }

    /// Applies time to one cluster: boots machines, forgets deleted ones. Per cluster, so a
    /// call costs the same with 10 or 100,000 machines in the cloud.
    fn settle(st: &mut State, cluster: ClusterId, now: DateTime<Utc>) {
        if let Some(c) = st.clusters.get_mut(&cluster) {
            c.machines.retain(|_, m| {
                if m.gone_at.is_some_and(|g| g <= now) {
                    return false;
                }
                if m.machine.state == MachineState::Pending && m.ready_at <= now {
                    m.machine.state = MachineState::Running;
                }
                true
            });
        }
    }

    /// Waits for the client budget, counts the call, applies latency, the account's rate
    /// limits and injected faults. A call may lose its response (the returned flag) after
    /// taking effect.
    async fn enter(
        &self,
        op: SimOp,
        cluster: Option<ClusterId>,
        account: &str,
        units: u64,
    ) -> Result<bool, ProviderError> {
        let classes: &[(CallClass, u64)] = match op {
            SimOp::ValidateAccount | SimOp::ResolveImage | SimOp::ListMachines => {
                &[(CallClass::Read, 1)]
            }
            SimOp::CreateMachines => &[(CallClass::Mutate, 1), (CallClass::Instances, units)],
            _ => &[(CallClass::Mutate, 1)],
        };
        let budget = self
            .config
            .client_budget
            .as_ref()
            .map(|l| self.budgets.get(account, || l.clone()));
        if let Some(b) = &budget {
            for (class, n) in classes {
                b.acquire(*class, *n).await.map_err(|e| {
                    ProviderError::throttled(
                        e.retry_after,
                        format!("account {account:?}: {e} (client-side budget)"),
                    )
                })?;
            }
        }
        if let Some(d) = self.config.latency.get(&op) {
            if !d.is_zero() {
                tokio::time::sleep(*d).await;
            }
        }
        let (lose, hook, n) = {
            let mut st = self.lock();
            *st.calls.entry(op.as_str()).or_default() += 1;
            st.total_calls += 1;
            for (class, n) in classes {
                if let Some(wait) = self.over_limit(&mut st, account, *class, *n) {
                    st.throttled_answers += 1;
                    let retry_after = wait.max(Duration::from_millis(10));
                    drop(st);
                    if let Some(b) = &budget {
                        b.throttled(*class, Some(retry_after));
                    }
                    return Err(ProviderError::throttled(
                        retry_after,
                        format!(
                            "RequestLimitExceeded: request rate exceeded for {} ({} calls)",
                            op.as_str(),
                            class.as_str()
                        ),
                    ));
                }
            }
            let r = st.rand_for(cluster);
            if r < self.config.throttle_rate {
                return Err(ProviderError::throttled(
                    self.config.throttle_retry_after,
                    format!(
                        "RequestLimitExceeded: request rate exceeded for {}",
                        op.as_str()
                    ),
                ));
            }
            if r < self.config.throttle_rate + self.config.fault_rate {
                return Err(ProviderError::retryable(format!(
                    "InternalError: simulated transient failure of {}",
                    op.as_str()
                )));
            }
            let lose = st.rand_for(cluster) < self.config.lost_response_rate;
            (lose, st.hook.clone(), st.total_calls)
        };
        if let Some(h) = hook {
            match h(op, n, HookPoint::Before) {
                HookAction::Hang => std::future::pending::<()>().await,
                HookAction::Fail => {
                    return Err(ProviderError::retryable(format!(
                        "InternalError: {} failed (injected)",
                        op.as_str()
                    )))
                }
                HookAction::Continue => {}
            }
        }
        Ok(lose)
    }

    /// After a call took effect: the hook, then a lost response if drawn.
    async fn leave(&self, op: SimOp, lose: bool) -> Result<(), ProviderError> {
        let (hook, n) = {
            let st = self.lock();
            (st.hook.clone(), st.total_calls)
        };
        let mut lose = lose;
        if let Some(h) = hook {
            match h(op, n, HookPoint::After) {
                HookAction::Hang => std::future::pending::<()>().await,
                HookAction::Fail => lose = true,
                HookAction::Continue => {}
            }
        }
        if lose {
            return Err(ProviderError::retryable(format!(
                "RequestTimeout: no response to {} (it may have taken effect)",
                op.as_str()
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl CloudProvider for SimCloud {
    fn cloud(&self) -> CloudType {
        self.cloud
    }

    async fn validate_account(&self, account: &CloudAccount) -> Result<(), ProviderError> {
        self.enter(SimOp::ValidateAccount, None, &account.name, 1)
            .await?;
        if account.cloud() != self.cloud {
            return Err(ProviderError::unauthorized(format!(
                "a {} account cannot be used on {}",
                account.cloud(),
                self.cloud
            )));
        }
        let secret = match &account.credentials {
            Credentials::Aws(c) => c.secret_access_key.expose(),
            Credentials::Azure(c) => c.client_secret.expose(),
            Credentials::Gcp(c) => c.service_account_json.expose(),
            Credentials::Vsphere(c) => c.password.expose(),
        };
        if secret.is_empty() || secret == "invalid" {
            return Err(ProviderError::unauthorized(
                "AuthFailure: the security token included in the request is invalid",
            ));
        }
        Ok(())
    }

    async fn ensure_image(
        &self,
        ctx: &ClusterContext,
        spec: &ImageSpec,
    ) -> Result<ImageRef, ProviderError> {
        if spec.customization.is_none() {
            let lose = self
                .enter(
                    SimOp::ResolveImage,
                    Some(ctx.cluster_id),
                    &ctx.account.name,
                    1,
                )
                .await?;
            self.leave(SimOp::ResolveImage, lose).await?;
            let id = spec.base_image.clone().unwrap_or_else(|| {
                format!(
                    "sim-{}-{}-k8s-{}",
                    spec.os.name, spec.os.version, spec.kubernetes.version
                )
            });
            return Ok(ImageRef {
                id,
                customized: false,
            });
        }
        // Reuse an image built for the same signature (checked under the build lock, so two
        // clusters asking at once build it once).
        let _building = self.building.lock().await;
        let cached = self.lock().images.get(&spec.signature).cloned();
        if let Some(img) = cached {
            let lose = self
                .enter(
                    SimOp::ResolveImage,
                    Some(ctx.cluster_id),
                    &ctx.account.name,
                    1,
                )
                .await?;
            self.leave(SimOp::ResolveImage, lose).await?;
            return Ok(img);
        }
        let lose = self
            .enter(
                SimOp::CustomizeImage,
                Some(ctx.cluster_id),
                &ctx.account.name,
                1,
            )
            .await?;
        let img = {
            let mut st = self.lock();
            let id = format!("sim-custom-{}", spec.signature);
            let img = ImageRef {
                id,
                customized: true,
            };
            st.images.insert(spec.signature.clone(), img.clone());
            img
        };
        self.leave(SimOp::CustomizeImage, lose).await?;
        Ok(img)
    }

    async fn ensure_infrastructure(
        &self,
        ctx: &ClusterContext,
    ) -> Result<InfraStatus, ProviderError> {
        let lose = self
            .enter(
                SimOp::EnsureInfrastructure,
                Some(ctx.cluster_id),
                &ctx.account.name,
                1,
            )
            .await?;
        let now = self.clock.now();
        let status = {
            let mut st = self.lock();
            let exists = st
                .clusters
                .get(&ctx.cluster_id)
                .is_some_and(|c| c.infra.is_some());
            if !exists {
                let mut zones: Vec<String> = ctx
                    .spec
                    .node_pools
                    .iter()
                    .flat_map(|p| p.fault_domains())
                    .collect();
                zones.sort();
                zones.dedup();
                let mut resources = vec![CloudResource {
                    kind: "network".into(),
                    id: st.id(ctx.cluster_id, "net").0,
                }];
                let mut outputs = BTreeMap::new();
                for z in &zones {
                    let id = st.id(ctx.cluster_id, "subnet").0;
                    outputs.insert(format!("subnet/{z}"), id.clone());
                    resources.push(CloudResource {
                        kind: "subnet".into(),
                        id,
                    });
                }
                resources.push(CloudResource {
                    kind: "load-balancer".into(),
                    id: st.id(ctx.cluster_id, "lb").0,
                });
                resources.push(CloudResource {
                    kind: "security-group".into(),
                    id: st.id(ctx.cluster_id, "sg").0,
                });
                let endpoint = match ctx.vip {
                    Some(vip) => format!("{vip}:6443"),
                    None => format!("{}.sim.spectro.internal:6443", ctx.spec.name),
                };
                let ready_at = now
                    + chrono::Duration::from_std(self.config.infra_ready_time).unwrap_or_default();
                let c = st.clusters.entry(ctx.cluster_id).or_default();
                c.account.clone_from(&ctx.account.name);
                c.infra = Some(SimInfra {
                    resources,
                    ready_at,
                    endpoint,
                    outputs,
                });
            }
            let infra = st
                .clusters
                .get(&ctx.cluster_id)
                .and_then(|c| c.infra.clone())
                .expect("infrastructure was just ensured");
            let ready = infra.ready_at <= now;
            InfraStatus {
                ready,
                endpoint: Some(infra.endpoint),
                resources: infra.resources,
                message: (!ready)
                    .then(|| "waiting for the NAT gateways and load balancer".to_string()),
                outputs: infra.outputs,
            }
        };
        self.leave(SimOp::EnsureInfrastructure, lose).await?;
        Ok(status)
    }

    async fn list_machines(&self, ctx: &ClusterContext) -> Result<Vec<Machine>, ProviderError> {
        let lose = self
            .enter(
                SimOp::ListMachines,
                Some(ctx.cluster_id),
                &ctx.account.name,
                1,
            )
            .await?;
        let now = self.clock.now();
        let out = {
            let mut st = self.lock();
            Self::settle(&mut st, ctx.cluster_id, now);
            let lag = chrono::Duration::from_std(self.config.list_lag).unwrap_or_default();
            st.clusters
                .get(&ctx.cluster_id)
                .map(|c| {
                    c.machines
                        .values()
                        .filter(|m| m.machine.created_at + lag <= now)
                        .map(|m| m.machine.clone())
                        .collect()
                })
                .unwrap_or_default()
        };
        self.leave(SimOp::ListMachines, lose).await?;
        Ok(out)
    }

    fn fleet(&self, ctx: &ClusterContext) -> Option<String> {
        self.config.fleet_listing.then(|| ctx.account.name.clone())
    }

    async fn list_fleet(
        &self,
        ctx: &ClusterContext,
    ) -> Result<HashMap<ClusterId, Vec<Machine>>, ProviderError> {
        let lose = self
            .enter(
                SimOp::ListMachines,
                Some(ctx.cluster_id),
                &ctx.account.name,
                1,
            )
            .await?;
        let now = self.clock.now();
        let out = {
            let mut st = self.lock();
            let ids: Vec<ClusterId> = st
                .clusters
                .iter()
                .filter(|(_, c)| c.account == ctx.account.name)
                .map(|(id, _)| *id)
                .collect();
            let lag = chrono::Duration::from_std(self.config.list_lag).unwrap_or_default();
            let mut out = HashMap::new();
            for id in ids {
                Self::settle(&mut st, id, now);
                if let Some(c) = st.clusters.get(&id) {
                    out.insert(
                        id,
                        c.machines
                            .values()
                            .filter(|m| m.machine.created_at + lag <= now)
                            .map(|m| m.machine.clone())
                            .collect(),
                    );
                }
            }
            out
        };
        self.leave(SimOp::ListMachines, lose).await?;
        Ok(out)
    }

    async fn create_machines(
        &self,
        ctx: &ClusterContext,
        infra: &InfraStatus,
        batch: &MachineBatch,
    ) -> Result<Vec<Machine>, ProviderError> {
        let lose = self
            .enter(
                SimOp::CreateMachines,
                Some(ctx.cluster_id),
                &ctx.account.name,
                batch.names.len() as u64,
            )
            .await?;
        let now = self.clock.now();
        let created = (|| {
            let mut st = self.lock();
            Self::settle(&mut st, ctx.cluster_id, now);
            if !infra.ready {
                return Err(ProviderError::retryable(
                    "InvalidSubnetID.NotFound: the network is not ready",
                ));
            }
            // Idempotency: a known token returns what it created.
            if let Some(ids) = st
                .clusters
                .get(&ctx.cluster_id)
                .and_then(|c| c.tokens.get(&batch.token))
                .cloned()
            {
                let c = st.clusters.get(&ctx.cluster_id).expect("cluster exists");
                let out: Vec<Machine> = ids
                    .iter()
                    .filter_map(|id| c.machines.get(id).map(|m| m.machine.clone()))
                    .collect();
                return Ok(out);
            }
            let per = vcpus_of(&batch.pool);
            let want = per * batch.names.len() as u32;
            if let Some(limit) = st.vcpu_limit {
                if st.vcpus_in_use + want > limit {
                    return Err(ProviderError::quota_exceeded(format!(
                            "VcpuLimitExceeded: You have requested more vCPU capacity than your current vCPU limit of {limit} allows ({} in use, {want} requested). Free capacity or request a limit increase.",
                            st.vcpus_in_use
                        )));
                }
            }
            st.vcpus_in_use += want;
            let ready_at =
                now + chrono::Duration::from_std(self.config.boot_time).unwrap_or_default();
            let booted = self.config.boot_time.is_zero();
            let instance_type = batch.pool.instance_type.clone().unwrap_or_else(|| {
                format!(
                    "{}cpu-{}gb",
                    batch.pool.cpu.unwrap_or(0),
                    batch.pool.memory_gb.unwrap_or(0)
                )
            });
            let mut out = Vec::new();
            let mut ids = Vec::new();
            for (k, name) in batch.names.iter().enumerate() {
                let (id, n) = st.id(ctx.cluster_id, "m");
                let address = batch
                    .network
                    .get(k)
                    .map(|nw| nw.address)
                    .unwrap_or_else(|| {
                        std::net::IpAddr::V4(std::net::Ipv4Addr::from(
                            // 10.<cluster>.<n>: unique in the cluster's network.
                            0x0a00_0000u32
                                | (u32::from(ctx.cluster_id.0.as_bytes()[0]) << 16)
                                | (n as u32 & 0xffff),
                        ))
                    });
                let machine = Machine {
                    id: id.clone(),
                    name: name.clone(),
                    pool: batch.pool.name.clone(),
                    role: batch.pool.role,
                    zone: batch.zone.clone(),
                    shape: batch.shape.clone(),
                    token: batch.token.clone(),
                    state: if booted {
                        MachineState::Running
                    } else {
                        MachineState::Pending
                    },
                    address: Some(address),
                    created_at: now,
                };
                ids.push(id.clone());
                out.push(machine.clone());
                st.machines_launched += 1;
                let c = st.clusters.entry(ctx.cluster_id).or_default();
                c.account.clone_from(&ctx.account.name);
                c.machines.insert(
                    id,
                    SimMachine {
                        machine,
                        vcpus: per,
                        ready_at,
                        gone_at: None,
                        instance_type: instance_type.clone(),
                        user_data: batch.user_data.clone(),
                        image: batch.image.id.clone(),
                    },
                );
            }
            st.clusters
                .entry(ctx.cluster_id)
                .or_default()
                .tokens
                .insert(batch.token.clone(), ids);
            Ok(out)
        })()?;
        self.leave(SimOp::CreateMachines, lose).await?;
        Ok(created)
    }

    async fn delete_machines(
        &self,
        ctx: &ClusterContext,
        machines: &[Machine],
    ) -> Result<(), ProviderError> {
        let lose = self
            .enter(
                SimOp::DeleteMachines,
                Some(ctx.cluster_id),
                &ctx.account.name,
                1,
            )
            .await?;
        let now = self.clock.now();
        {
            let mut st = self.lock();
            let gone =
                now + chrono::Duration::from_std(self.config.delete_time).unwrap_or_default();
            let mut freed = 0;
            if let Some(c) = st.clusters.get_mut(&ctx.cluster_id) {
                for m in machines {
                    if let Some(sm) = c.machines.get_mut(&m.id) {
                        if sm.gone_at.is_none() {
                            sm.gone_at = Some(gone);
                            sm.machine.state = MachineState::Deleting;
                            freed += sm.vcpus;
                        }
                    }
                }
            }
            st.vcpus_in_use = st.vcpus_in_use.saturating_sub(freed);
            Self::settle(&mut st, ctx.cluster_id, now);
        }
        self.leave(SimOp::DeleteMachines, lose).await
    }

    async fn delete_infrastructure(
        &self,
        ctx: &ClusterContext,
    ) -> Result<DeleteStatus, ProviderError> {
        let lose = self
            .enter(
                SimOp::DeleteInfrastructure,
                Some(ctx.cluster_id),
                &ctx.account.name,
                1,
            )
            .await?;
        let now = self.clock.now();
        {
            let mut st = self.lock();
            Self::settle(&mut st, ctx.cluster_id, now);
            if let Some(c) = st.clusters.get_mut(&ctx.cluster_id) {
                if !c.machines.is_empty() {
                    return Err(ProviderError::retryable(format!(
                        "DependencyViolation: the network still has {} machine(s)",
                        c.machines.len()
                    )));
                }
                c.infra = None;
                c.tokens.clear();
            }
            st.clusters.remove(&ctx.cluster_id);
        }
        self.leave(SimOp::DeleteInfrastructure, lose).await?;
        Ok(DeleteStatus {
            done: true,
            remaining: Vec::new(),
            message: None,
        })
    }
}

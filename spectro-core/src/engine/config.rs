//! Engine tuning: [`EngineConfig`] and, for replicas sharing one database, [`ReplicaConfig`].

use std::time::Duration;

/// Engine tuning.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Clusters reconciled at once.
    pub concurrency: usize,
    /// Clusters of one cloud account (one fleet) reconciled at once. `None`: half of
    /// `concurrency` (at least 1), so that an account whose request budget is used up, with
    /// its reconciles waiting for permits, never holds every worker: clusters of other
    /// accounts keep theirs.
    pub account_concurrency: Option<usize>,
    /// Resync period of a converged cluster (jittered ±10%).
    pub resync_interval: Duration,
    /// Look-again delay while waiting on the cloud (machines booting, deleting).
    pub poll_interval: Duration,
    /// First backoff after a failure.
    pub backoff_base: Duration,
    /// Backoff cap.
    pub backoff_cap: Duration,
    /// Infrastructure is re-checked at most this often once ready (spec changes force it).
    pub infra_resync: Duration,
    /// A machine still booting after this long is replaced.
    pub machine_timeout: Duration,
    /// Node readiness and removal (with a workload connection, [`EngineBuilder::workload`](super::EngineBuilder::workload)):
    /// the ready timeout, the machine health check, the drain timeout.
    pub nodes: super::planner::NodePolicy,
    /// Cluster health, usage retention, the heartbeat sweep (with an agent key,
    /// [`EngineBuilder::agent`](super::EngineBuilder::agent)).
    pub monitoring: super::monitoring::MonitoringConfig,
    /// Replica mode: share the clusters with other engines on the same database through
    /// leases. `None`: this engine owns every cluster (one process).
    pub replica: Option<ReplicaConfig>,
    /// Deterministic mode: cluster ids, machine names, idempotency tokens and jitter derive
    /// from this seed (and what they are for), so a run on the simulated cloud with the same
    /// seed replays exactly. `None` (production): random.
    pub seed: Option<u64>,
    /// Private cloud gateways: pairing codes, replica liveness.
    pub gateways: GatewayConfig,
    /// Cloud calls kept per cluster, the most recent ones, for
    /// [`Engine::support_bundle`](super::Engine::support_bundle) (0: none kept).
    pub call_log: usize,
}

/// Private cloud gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// How long a pairing code is accepted.
    pub pairing_code_ttl: Duration,
    /// Wrong codes tolerated before the outstanding code is revoked (a new one must be shown).
    pub pairing_attempts: u32,
    /// A replica not heard from for this long counts as disconnected.
    pub replica_ttl: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            pairing_code_ttl: Duration::from_secs(15 * 60),
            pairing_attempts: 5,
            replica_ttl: Duration::from_secs(30),
        }
    }
}

/// How a replica shares work with the others.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// This replica's unique name (lease owner).
    pub id: String,
    /// Lease lifetime: a dead replica's clusters are taken over within it. Renewed every
    /// third of it.
    pub lease_ttl: Duration,
    /// Most clusters one replica holds (spreads the work).
    pub max_clusters: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            concurrency: 16,
            account_concurrency: None,
            resync_interval: Duration::from_secs(600),
            poll_interval: Duration::from_secs(5),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(300),
            infra_resync: Duration::from_secs(3600),
            machine_timeout: Duration::from_secs(20 * 60),
            nodes: super::planner::NodePolicy::default(),
            monitoring: super::monitoring::MonitoringConfig::default(),
            replica: None,
            seed: None,
            gateways: GatewayConfig::default(),
            call_log: 64,
        }
    }
}

impl EngineConfig {
    /// Settings for the simulated cloud without latency: no waiting between steps.
    pub fn fast() -> Self {
        EngineConfig {
            poll_interval: Duration::from_millis(2),
            backoff_base: Duration::from_millis(5),
            backoff_cap: Duration::from_millis(200),
            ..Default::default()
        }
    }
}

impl EngineConfig {
    /// Settings for local emulators of real clouds (moto, vcsim): 50 ms polling and backoff,
    /// capped at 1 s, so tests converge quickly without hammering the peer.
    pub fn for_emulators() -> Self {
        EngineConfig {
            poll_interval: Duration::from_millis(50),
            backoff_base: Duration::from_millis(50),
            backoff_cap: Duration::from_secs(1),
            ..Default::default()
        }
    }
}

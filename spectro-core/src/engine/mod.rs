//! The reconcile engine an application embeds.
//!
//! ```text
//! API (create/update/delete/abort/apply) ─▶ Store ─▶ WorkQueue ─▶ workers ─▶ executor
//!                                                                            │ plan() (pure)
//!                                                                            ▼
//!                                                              CloudProvider actions
//!                                                                            │
//!                                  status + events (one atomic commit) ◀─────┘
//! ```
//!
//! Where things are: [`Engine`] (a cloneable handle) and its API by subject — `catalog`
//! (profiles, accounts, IP pools, gateways), `clusters` (create, update, delete, abort,
//! profile updates), `apply` (spec documents), `watch` (events, waits, the next reconcile),
//! `explain` (why a cluster is not converged); the machinery — `builder` (start),
//! `runtime` (shared state, backoff), `worker` (the worker loop and its error policy),
//! `lease` (replica mode), [`executor`] (one reconcile), [`planner`] (pure planning),
//! [`queue`], `metrics` (Prometheus, feature `metrics`).
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use spectro_core::engine::status::Phase;
//! use spectro_core::model::document::Format;
//! use spectro_core::model::CloudType;
//! use spectro_core::sim::{SimCloud, SimConfig};
//! use spectro_core::{Engine, EngineConfig, SqliteStore};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Arc::new(SqliteStore::open("spectro.db")?);
//! let engine = Engine::builder(store)
//!     .provider(Arc::new(SimCloud::new(CloudType::Aws, SimConfig::default())))
//!     .config(EngineConfig::default())
//!     .start()
//!     .await?;
//! // Profiles, accounts and clusters from one YAML file (kind-tagged documents).
//! let text = std::fs::read_to_string("cluster.yaml")?;
//! let applied = engine.apply_text(&text, Format::Yaml).await?;
//! if let Some(id) = applied.iter().find_map(|a| a.cluster) {
//!     engine.wait_for_phase(id, Phase::Running, Duration::from_secs(1800)).await?;
//!     println!("{:#?}", engine.explain(id).await?);
//! }
//! engine.shutdown().await;
//! # Ok(()) }
//! ```

mod apply;
mod builder;
mod catalog;
mod clusters;
mod config;
pub use crate::records::{condition, event, status};
pub mod executor;
mod explain;
mod gateways;
mod lease;
pub mod metrics;
mod monitoring;
pub mod planner;
mod precheck;
pub mod queue;
mod runtime;
mod secrets;
mod seed;
mod support;
pub mod update;
mod watch;
mod worker;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::error::{CoreError, Result};
use crate::provider::ClusterId;
use crate::secret::with_secrets_marked;
use crate::store::Store;
use crate::validate::Violation;

pub use self::apply::{Applied, ApplyAction};
pub use self::builder::EngineBuilder;
pub use self::config::{EngineConfig, GatewayConfig, ReplicaConfig};
pub use self::explain::{Blocker, BlockerKind, BlockerScope, Explanation};
pub use self::gateways::{version_older, GatewayCredential, PairingCode};
pub use self::monitoring::{AgentSettings, HealthChange, MonitoringConfig};
pub use self::support::{redact, CallRecord};
pub use self::update::UpdateNotification;
pub use self::watch::{ReconcileOutcome, ReconcileReport};

use self::runtime::Inner;

/// The engine: an application's handle to declare clusters and watch them converge.
///
/// `Engine` is a cheap, cloneable handle (`Send + Sync`): clone it into every task or keep
/// it in an `Arc`; every clone drives the same workers. [`Engine::shutdown`] (from any
/// clone) stops taking work, lets running reconciles finish and, with replicas, hands the
/// clusters over to the other replicas at once. When the last clone is dropped without a
/// shutdown, the workers stop at their next await point (as a crash would: nothing is lost,
/// a restart resumes every cluster).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
    owner: Arc<Owner>,
}

/// Owns the worker tasks: dropped with the last [`Engine`] clone.
struct Owner {
    inner: Arc<Inner>,
    workers: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// How many of `workers` are reconcile workers (the rest: lease and change loops).
    reconcilers: usize,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.inner.queue.close();
        for w in self
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            w.abort();
        }
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field(
                "providers",
                &self.inner.providers.keys().collect::<Vec<_>>(),
            )
            .field("queue", &self.inner.queue)
            .field("stopping", &self.inner.stopping.load(Ordering::Relaxed))
            .finish()
    }
}

fn invalid(kind: String, violations: Vec<Violation>) -> Result<()> {
    if violations.is_empty() {
        Ok(())
    } else {
        Err(CoreError::Invalid { kind, violations })
    }
}

fn decode<T: serde::de::DeserializeOwned>(what: &'static str, v: serde_json::Value) -> Result<T> {
    serde_json::from_value(v).map_err(|source| CoreError::Corrupt { what, source })
}

/// A document for the store: its secrets tagged, for the store to seal.
fn encode<T: serde::Serialize>(v: &T) -> Result<serde_json::Value> {
    with_secrets_marked(|| serde_json::to_value(v)).map_err(|source| CoreError::Corrupt {
        what: "document",
        source,
    })
}

fn profile_key(name: &str, version: &str) -> String {
    format!("{name}@{version}")
}

impl Engine {
    /// Starts building an engine on `store`.
    pub fn builder(store: Arc<dyn Store>) -> EngineBuilder {
        EngineBuilder::new(store)
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The time on the engine's clock (`EngineBuilder::clock`): the "now" of usage ranges
    /// and health judgements.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.inner.clock.now()
    }

    /// Reconciles run so far.
    pub fn reconciles(&self) -> u64 {
        self.inner.reconciles.load(Ordering::Relaxed)
    }

    /// True once [`Engine::shutdown`] has been called (on any clone).
    pub fn is_shut_down(&self) -> bool {
        self.inner.stopping.load(Ordering::Relaxed)
    }

    /// Refuses new work once the engine is shutting down.
    fn running(&self) -> Result<()> {
        if self.is_shut_down() {
            Err(CoreError::Shutdown)
        } else {
            Ok(())
        }
    }

    /// Graceful stop, from any clone: writes through the API are refused with
    /// [`CoreError::Shutdown`], no reconcile starts, running reconciles finish (so their
    /// results are committed), and (replicas) the leases are given up so the other replicas
    /// take over at once. Idempotent: a second call returns at once.
    pub async fn shutdown(&self) {
        self.inner.stopping.store(true, Ordering::Relaxed);
        self.inner.queue.close();
        let mut all =
            std::mem::take(&mut *self.owner.workers.lock().unwrap_or_else(|e| e.into_inner()));
        if all.is_empty() {
            return;
        }
        for extra in all.split_off(self.owner.reconcilers.min(all.len())) {
            extra.abort();
        }
        for w in all {
            let _ = w.await;
        }
        if let Some(rc) = &self.inner.config.replica {
            let _ = self.inner.store.release_leases(&rc.id).await;
        }
        tracing::info!("engine shut down");
    }

    /// Replica mode: the clusters this replica holds now.
    pub fn owned_clusters(&self) -> Vec<ClusterId> {
        self.inner
            .owned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect()
    }
}

//! [`EngineBuilder`]: store, providers, clock and tuning, then `start`.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::task::JoinHandle;

use super::config::EngineConfig;
use super::runtime::Inner;
use super::{seed, Engine, Owner};
use crate::clock::{Clock, TokioClock};
use crate::error::Result;
use crate::model::CloudType;
use crate::provider::CloudProvider;
use crate::store::Store;
use crate::workload::WorkloadConnector;

/// Builds an [`Engine`]: `Engine::builder(store).provider(..).config(..).start().await`.
#[must_use = "an engine builder does nothing until `start` is awaited"]
pub struct EngineBuilder {
    store: Arc<dyn Store>,
    providers: HashMap<CloudType, Arc<dyn CloudProvider>>,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    workload: Option<Arc<dyn WorkloadConnector>>,
    agent: Option<super::monitoring::AgentSettings>,
    keys: Option<Arc<dyn crate::secret::KeyProvider>>,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("providers", &self.providers.keys().collect::<Vec<_>>())
            .field("config", &self.config)
            .field("workload", &self.workload.is_some())
            .field("agent", &self.agent)
            .field("keys", &self.keys)
            .finish()
    }
}

impl EngineBuilder {
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        EngineBuilder {
            store,
            providers: HashMap::new(),
            clock: Arc::new(TokioClock::new()),
            config: EngineConfig::default(),
            workload: None,
            agent: None,
            keys: None,
        }
    }

    /// Connects the engine to the Kubernetes clusters it builds (e.g. `spectro_kube::KubeConnector`):
    /// machines then count as ready only when their Nodes are `Ready` (control-plane machines:
    /// and their etcd members healthy), nodes are cordoned and drained and their etcd members
    /// removed before their machines go. Without it the engine manages machines only.
    pub fn workload(mut self, c: Arc<dyn WorkloadConnector>) -> Self {
        self.workload = Some(c);
        self
    }

    /// Monitors the clusters through their agents: `Engine::agent_report` takes their
    /// reports (authenticated by credentials derived from `settings.key`), and with
    /// `settings.deployment` (and a workload connection) the engine deploys the agent into
    /// every cluster it builds, as a system pack. Starts the heartbeat sweep.
    pub fn agent(mut self, settings: super::monitoring::AgentSettings) -> Self {
        self.agent = Some(settings);
        self
    }

    /// Where the keys that seal secrets at rest come from (AES-256-GCM; cloud credentials,
    /// proxy URLs, cluster PKI keys: no store holds them in clear). Without it: the
    /// `SPECTRO_SECRETS_KEY` environment variable (the keys, base64 of 32 bytes each, the
    /// current one first, or the path of a file holding them); without that, a key file
    /// beside a SQLite database file (`<file>.secrets-key`, created once, mode 0600: keep it
    /// out of the database's backups); an in-memory SQLite store gets a random key; any other
    /// store (PostgreSQL) without a key is refused at start (a made-up key would be lost with
    /// the process, and the secrets with it).
    ///
    /// The engine refuses to start on a store holding values sealed with a key it lacks, and
    /// re-seals everything with the current key when the store lists older ones
    /// ([`Engine::reseal_secrets`](super::Engine::reseal_secrets)).
    pub fn secret_keys(mut self, keys: Arc<dyn crate::secret::KeyProvider>) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Registers the provider for its cloud.
    pub fn provider(mut self, p: Arc<dyn CloudProvider>) -> Self {
        self.providers.insert(p.cloud(), p);
        self
    }

    /// Registers a provider for another cloud than its own (e.g. the simulated cloud).
    pub fn provider_for(mut self, cloud: CloudType, p: Arc<dyn CloudProvider>) -> Self {
        self.providers.insert(cloud, p);
        self
    }

    /// Sets the clock.
    pub fn clock(mut self, c: Arc<dyn Clock>) -> Self {
        self.clock = c;
        self
    }

    /// Sets the tuning.
    pub fn config(mut self, c: EngineConfig) -> Self {
        self.config = c;
        self
    }

    /// Starts the workers and queues every live cluster (a restart resumes everything).
    /// Fails with `Invalid` (every broken rule, by field) for a monitoring configuration or
    /// agent deployment that breaks a rule.
    pub async fn start(self) -> Result<Engine> {
        let mut violations = self.config.monitoring.health.validate();
        violations.extend(self.config.monitoring.retention.validate());
        if let Some(d) = self.agent.as_ref().and_then(|a| a.deployment.as_ref()) {
            violations.extend(d.validate());
        }
        if !violations.is_empty() {
            return Err(crate::error::CoreError::Invalid {
                kind: "engine configuration".into(),
                violations,
            });
        }
        let (keyring, origin) = super::secrets::resolve(self.keys.as_deref(), &*self.store).await?;
        self.store.set_keyring(keyring.clone());
        if super::secrets::check(&*self.store, &keyring).await? {
            super::secrets::reseal(&*self.store, &keyring, false).await?;
        }
        match &origin {
            super::secrets::KeyOrigin::File(path) => tracing::warn!(
                key = keyring.current_id(),
                file = %path.display(),
                "no SPECTRO_SECRETS_KEY: secrets are sealed with the key file beside the database (keep it out of its backups)"
            ),
            super::secrets::KeyOrigin::Ephemeral => tracing::warn!(
                key = keyring.current_id(),
                "no SPECTRO_SECRETS_KEY: secrets are sealed with a key of this process only; a persistent store written now cannot be reopened without it"
            ),
            _ => tracing::info!(key = keyring.current_id(), "secrets at rest sealed"),
        }
        let fallback = crate::clock::system_now()
            .timestamp_nanos_opt()
            .unwrap_or(7) as u64;
        let random = seed::Randomness::new(self.config.seed, fallback);
        let inner = Arc::new(Inner::new(
            self.store,
            self.providers,
            self.clock,
            self.config,
            random,
            self.workload,
            self.agent,
            keyring,
        ));
        for rec in inner.store.list_clusters(false).await? {
            inner.queue.add(rec.id);
        }
        let reconcilers = inner.config.concurrency.max(1);
        let mut workers: Vec<JoinHandle<()>> = (0..reconcilers)
            .map(|_| tokio::spawn(inner.clone().worker()))
            .collect();
        if inner.agent.is_some() {
            workers.push(tokio::spawn(inner.clone().health_loop()));
        }
        if let Some(rc) = inner.config.replica.clone() {
            if let Some(changes) = inner.store.changes().await? {
                workers.push(tokio::spawn(inner.clone().change_loop(changes)));
            }
            workers.push(tokio::spawn(inner.clone().lease_loop(rc)));
        }
        tracing::info!(
            workers = reconcilers,
            replica = inner.config.replica.as_ref().map(|r| r.id.as_str()),
            "engine started"
        );
        Ok(Engine {
            owner: Arc::new(Owner {
                inner: inner.clone(),
                workers: std::sync::Mutex::new(workers),
                reconcilers,
            }),
            inner,
        })
    }
}

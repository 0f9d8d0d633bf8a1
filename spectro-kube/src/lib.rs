//! spectro's workload-cluster connection: [`KubeConnector`] implements
//! [`spectro_core::workload::WorkloadConnector`] with kube-rs (Nodes, cordon, drain through
//! the Eviction API, Node deletion, server-side apply) and etcd's v3 API through its JSON
//! gateway (member list, member health, member removal), over TLS with the client
//! certificate the engine mints from the cluster's etcd CA.
//!
//! ```no_run
//! # async fn f(store: std::sync::Arc<dyn spectro_core::store::Store>) -> spectro_core::error::Result<()> {
//! use std::sync::Arc;
//! let engine = spectro_core::engine::Engine::builder(store)
//!     .workload(Arc::new(spectro_kube::KubeConnector::new()))
//!     .start()
//!     .await?;
//! # Ok(()) }
//! ```

mod etcd;
mod nodes;
mod objects;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use kube::config::{KubeConfigOptions, Kubeconfig};
use spectro_core::workload::{
    DrainProgress, EtcdMember, Manifest, NodeInfo, ObjectRef, WorkloadAccess, WorkloadCluster,
    WorkloadConnector, WorkloadError,
};

/// Rewrites the access the engine computed before connecting: a tunnel (the private cloud
/// gateway), or a test's loopback peers.
pub type AccessResolver = dyn Fn(&WorkloadAccess) -> WorkloadAccess + Send + Sync;

/// Opens workload clusters with kube-rs and the etcd v3 API.
#[derive(Clone)]
pub struct KubeConnector {
    timeout: Duration,
    resolver: Option<Arc<AccessResolver>>,
}

impl std::fmt::Debug for KubeConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeConnector")
            .field("timeout", &self.timeout)
            .field("resolver", &self.resolver.is_some())
            .finish()
    }
}

impl Default for KubeConnector {
    fn default() -> Self {
        Self::new()
    }
}

impl KubeConnector {
    /// A connector with a 10 s timeout per request.
    #[must_use]
    pub fn new() -> Self {
        // Several crypto providers are compiled into an application with cloud SDKs: kube-rs
        // needs one process default (an application's own choice is kept).
        let _ = rustls::crypto::ring::default_provider().install_default();
        KubeConnector {
            timeout: Duration::from_secs(10),
            resolver: None,
        }
    }

    /// The timeout of each request (connect + answer).
    #[must_use]
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Rewrites every access before connecting (see [`AccessResolver`]).
    #[must_use]
    pub fn with_resolver(
        mut self,
        f: impl Fn(&WorkloadAccess) -> WorkloadAccess + Send + Sync + 'static,
    ) -> Self {
        self.resolver = Some(Arc::new(f));
        self
    }
}

pub(crate) fn unreachable(what: &'static str, e: impl std::fmt::Display) -> WorkloadError {
    WorkloadError::Unreachable {
        what,
        message: e.to_string(),
    }
}

/// A kube-rs error as a [`WorkloadError`]: the API's answers are `Refused` with their code,
/// everything else (connection, TLS, timeouts) `Unreachable`.
pub(crate) fn kube_err(operation: impl Into<String>, e: kube::Error) -> WorkloadError {
    match e {
        kube::Error::Api(s) => WorkloadError::Refused {
            operation: operation.into(),
            code: s.code,
            message: s.message.clone(),
        },
        other => unreachable("API server", other),
    }
}

#[async_trait]
impl WorkloadConnector for KubeConnector {
    async fn connect(
        &self,
        access: &WorkloadAccess,
    ) -> Result<Arc<dyn WorkloadCluster>, WorkloadError> {
        let access = match &self.resolver {
            Some(f) => f(access),
            None => access.clone(),
        };
        let kc = Kubeconfig::from_yaml(access.kubeconfig.expose())
            .map_err(|e| WorkloadError::Invalid(format!("admin kubeconfig: {e}")))?;
        let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| WorkloadError::Invalid(format!("admin kubeconfig: {e}")))?;
        config.connect_timeout = Some(self.timeout);
        config.read_timeout = Some(self.timeout);
        config.write_timeout = Some(self.timeout);
        // The engine retries on its own schedule (the next reconcile): an eviction refused by a
        // PodDisruptionBudget (429) is an answer to report, not a request to repeat here.
        config.default_retry = false;
        let client = kube::Client::try_from(config).map_err(|e| unreachable("API server", e))?;
        let etcd = etcd::Etcd::new(&access, self.timeout)?;
        Ok(Arc::new(KubeCluster { client, etcd }))
    }
}

/// One workload cluster.
pub struct KubeCluster {
    client: kube::Client,
    etcd: Option<etcd::Etcd>,
}

#[async_trait]
impl WorkloadCluster for KubeCluster {
    async fn nodes(&self) -> Result<Vec<NodeInfo>, WorkloadError> {
        nodes::list(&self.client).await
    }

    async fn etcd_members(&self) -> Result<Option<Vec<EtcdMember>>, WorkloadError> {
        match &self.etcd {
            Some(e) => e.members().await.map(Some),
            None => Ok(None),
        }
    }

    async fn cordon(&self, node: &str, now: DateTime<Utc>) -> Result<(), WorkloadError> {
        nodes::cordon(&self.client, node, now).await
    }

    async fn drain(&self, node: &str) -> Result<DrainProgress, WorkloadError> {
        nodes::drain(&self.client, node).await
    }

    async fn delete_node(&self, node: &str) -> Result<(), WorkloadError> {
        nodes::delete(&self.client, node).await
    }

    async fn remove_etcd_member(&self, id: u64) -> Result<bool, WorkloadError> {
        match &self.etcd {
            Some(e) => e.remove(id).await,
            None => Err(WorkloadError::Invalid(
                "no etcd endpoint to remove a member through".into(),
            )),
        }
    }

    async fn apply(&self, objects: &[Manifest]) -> Result<(), WorkloadError> {
        objects::apply(&self.client, objects).await
    }

    async fn delete_object(&self, object: &ObjectRef) -> Result<bool, WorkloadError> {
        objects::delete(&self.client, object).await
    }
}

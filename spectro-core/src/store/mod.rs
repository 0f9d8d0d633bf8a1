//! Persistence: the `Store` trait the engine talks to, and its implementations:
//! `SqliteStore` (feature `sqlite`) and `PostgresStore` (feature `postgres`).
//!
//! The engine never writes SQL: it asks for whole records and commits each reconcile's
//! outcome (status, intents, events) as one atomic [`ClusterWrite`]. Specs (written by the
//! API) and status (written by the engine) live in separate columns, so the two never
//! overwrite each other.

#[cfg(feature = "postgres")]
mod pg_tls;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::provider::ClusterId;
use crate::records::event::{Event, NewEvent};
use crate::records::status::{ClusterRecord, ClusterStatus};

pub use crate::records::intent::Intent;

#[cfg(feature = "postgres")]
pub use postgres::{PostgresStore, RootCerts, TlsMode, TlsOptions};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// Documents are stored as JSON text in both databases.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| crate::error::CoreError::Corrupt {
        what: "document",
        source: e,
    })
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(what: &'static str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|source| crate::error::CoreError::Corrupt { what, source })
}

/// The associated-data scope of a catalog object's sealed fields.
#[must_use]
pub fn object_scope(kind: ObjectKind, name: &str) -> String {
    format!("{}/{name}", kind.as_str())
}

/// The associated-data scope of a cluster spec's sealed fields.
#[must_use]
pub fn cluster_spec_scope(id: &str) -> String {
    format!("cluster/{id}/spec")
}

/// Kinds of catalog objects kept as JSON documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// Cluster profiles, keyed `name@version`.
    Profile,
    /// Cloud accounts (their credentials sealed: [`crate::secret::Keyring`]).
    CloudAccount,
    /// IP pools.
    IpPool,
    /// Private cloud gateways.
    Gateway,
    /// What the engine knows of a gateway (lifecycle, pairing and credential hashes,
    /// replicas), keyed by gateway name.
    GatewayStatus,
    /// A cluster's PKI (CA keys: secrets), keyed by cluster id.
    ClusterPki,
    /// What the cluster's agent last reported and the health judged from it
    /// ([`MonitorState`](crate::monitoring::MonitorState)), keyed by cluster id.
    Monitor,
    /// The ids (never the keys) of the secrets keys whose sealed values the store may hold,
    /// one object named `secrets` (the engine refuses to start without them).
    Keyring,
}

impl ObjectKind {
    /// The stored kind name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Profile => "profile",
            ObjectKind::CloudAccount => "cloudAccount",
            ObjectKind::IpPool => "ipPool",
            ObjectKind::Gateway => "gateway",
            ObjectKind::GatewayStatus => "gatewayStatus",
            ObjectKind::ClusterPki => "clusterPki",
            ObjectKind::Monitor => "monitor",
            ObjectKind::Keyring => "keyring",
        }
    }
}

/// A stored catalog object.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredObject {
    /// Key (name, or `name@version` for profiles).
    pub name: String,
    /// Bumped on every write (starts at 1).
    pub revision: u64,
    /// The object as JSON.
    pub body: serde_json::Value,
}

/// One atomic write of a reconcile's outcome.
#[derive(Debug, Clone, Default)]
pub struct ClusterWrite {
    /// The cluster.
    pub cluster_id: Option<ClusterId>,
    /// New status, when it changed.
    pub status: Option<ClusterStatus>,
    /// Intents to record.
    pub add_intents: Vec<Intent>,
    /// Intents (machine names) to drop.
    pub remove_intents: Vec<String>,
    /// Drop every intent of the cluster (after deletion).
    pub clear_intents: bool,
    /// Events to append.
    pub events: Vec<NewEvent>,
    /// The writer's fencing token for the cluster (replicas): the write is refused with
    /// [`CoreError::Fenced`](crate::CoreError::Fenced) when another replica took the
    /// cluster over since. `None` for a single engine that owns everything.
    pub fence: Option<u64>,
}

impl ClusterWrite {
    /// An empty write for `id`.
    #[must_use]
    pub fn new(id: ClusterId) -> Self {
        ClusterWrite {
            cluster_id: Some(id),
            ..Default::default()
        }
    }

    /// True when there is nothing to write.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.status.is_none()
            && self.add_intents.is_empty()
            && self.remove_intents.is_empty()
            && !self.clear_intents
            && self.events.is_empty()
    }
}

/// A replica's claim on a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The cluster.
    pub cluster_id: ClusterId,
    /// Fencing token: grows every time the cluster changes hands.
    pub fence: u64,
}

/// A request for one address of an IP pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRequest {
    /// Pool name.
    pub pool: String,
    /// The pool's range (size and reserved offsets).
    pub range: crate::ipam::PoolRange,
    /// The cluster the address is for.
    pub cluster: ClusterId,
    /// Who holds it in the cluster: a machine name, or `vip`.
    pub owner: String,
    /// The pool is reserved for the first cluster that uses it.
    pub restrict_to_single_cluster: bool,
    /// The allocating replica's fencing token for `cluster` (as in
    /// [`ClusterWrite::fence`]): refused with [`CoreError::Fenced`](crate::CoreError::Fenced)
    /// when another replica took the cluster over. `None` for a single engine.
    pub fence: Option<u64>,
}

/// An allocated address, as an offset into its pool's range.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IpLease {
    /// Pool name.
    pub pool: String,
    /// Offset into the pool's range.
    pub offset: u64,
    /// The cluster.
    pub cluster: ClusterId,
    /// The holder (machine name or `vip`).
    pub owner: String,
}

/// One stored usage sample: its time and the sample as JSON
/// ([`UsageSample`](crate::monitoring::UsageSample)).
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRow {
    /// The sample's time (a bucket's start for averages).
    pub at: DateTime<Utc>,
    /// The sample.
    pub body: serde_json::Value,
}

impl UsageRow {
    /// A row as both databases store it: Unix seconds and JSON text.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn decode(at: i64, body: &str) -> Result<UsageRow> {
        Ok(UsageRow {
            at: DateTime::from_timestamp(at, 0).unwrap_or_default(),
            body: from_json("usage sample", body)?,
        })
    }
}

/// Where the engine keeps everything. Implementations: `SqliteStore` (feature `sqlite`,
/// the embedded default) and `PostgresStore` (feature `postgres`, a networked database
/// shared by several engine replicas); an application may supply its own.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Seals secret fields with `keyring` from now on (the engine calls it before anything
    /// else). A store serializes its documents with [`SecretCodec::encode`] and reads them
    /// with [`SecretCodec::decode`], scoped by object (see [`object_scope`],
    /// [`cluster_spec_scope`]); it never writes a secret in clear.
    ///
    /// [`SecretCodec::encode`]: crate::secret::SecretCodec::encode
    /// [`SecretCodec::decode`]: crate::secret::SecretCodec::decode
    fn set_keyring(&self, keyring: std::sync::Arc<crate::secret::Keyring>);

    /// Where a key file beside the data would live when no key is configured (a SQLite
    /// file: `<file>.secrets-key`); `None` for stores that need a configured key.
    fn key_file_hint(&self) -> Option<std::path::PathBuf> {
        None
    }

    /// True for a store that ends with the process (in-memory SQLite): it may seal with a
    /// key made up at start.
    fn is_ephemeral(&self) -> bool {
        false
    }

    /// Writes a catalog object; with `expected_revision`, fails with a conflict when the
    /// stored revision differs (0 = must not exist). Returns the new revision.
    async fn put_object(
        &self,
        kind: ObjectKind,
        name: &str,
        body: &serde_json::Value,
        expected_revision: Option<u64>,
    ) -> Result<u64>;

    /// Reads a catalog object.
    async fn get_object(&self, kind: ObjectKind, name: &str) -> Result<Option<StoredObject>>;

    /// Lists catalog objects of a kind, by name.
    async fn list_objects(&self, kind: ObjectKind) -> Result<Vec<StoredObject>>;

    /// Deletes a catalog object; false when it did not exist.
    async fn delete_object(&self, kind: ObjectKind, name: &str) -> Result<bool>;

    /// Inserts a new cluster; fails when a live cluster has the same name.
    async fn insert_cluster(&self, rec: &ClusterRecord) -> Result<()>;

    /// Writes a cluster's spec side (spec, generation, profile, lifecycle), only if its
    /// stored generation is still `expected_generation` (optimistic concurrency).
    async fn update_cluster(&self, rec: &ClusterRecord, expected_generation: u64) -> Result<()>;

    /// Reads a cluster by id (deleted ones included).
    async fn get_cluster(&self, id: ClusterId) -> Result<Option<ClusterRecord>>;

    /// Reads a live (not deleted) cluster by name.
    async fn find_cluster(&self, name: &str) -> Result<Option<ClusterRecord>>;

    /// Lists clusters (deleted ones only when asked).
    async fn list_clusters(&self, include_deleted: bool) -> Result<Vec<ClusterRecord>>;

    /// Commits a reconcile's outcome atomically; returns the events with their positions.
    async fn commit(&self, write: &ClusterWrite) -> Result<Vec<Event>>;

    /// The cluster's recorded intents.
    async fn intents(&self, id: ClusterId) -> Result<Vec<Intent>>;

    /// Events after position `after` (of one cluster, or all), oldest first, at most `limit`.
    async fn events(
        &self,
        cluster: Option<ClusterId>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>>;

    /// The newest `limit` events (of one cluster, or all), oldest first: what a page shows
    /// before the live ones. The default pages forward through [`Store::events`]; stores
    /// answer it with one query.
    async fn latest_events(&self, cluster: Option<ClusterId>, limit: usize) -> Result<Vec<Event>> {
        let mut after = 0;
        let mut tail: std::collections::VecDeque<Event> = std::collections::VecDeque::new();
        loop {
            let page = self.events(cluster, after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            let n = page.len();
            tail.extend(page);
            while tail.len() > limit {
                tail.pop_front();
            }
            if n < 1000 {
                break;
            }
        }
        Ok(tail.into())
    }

    /// Renews the leases `owner` holds and claims live clusters nobody holds (or whose lease
    /// expired) until `owner` holds `max`; skips rows other claimers have locked. The
    /// database's clock decides expiry. Returns every lease `owner` holds now.
    async fn acquire_leases(
        &self,
        owner: &str,
        ttl: std::time::Duration,
        max: usize,
    ) -> Result<Vec<Lease>>;

    /// Gives up every lease `owner` holds (graceful shutdown).
    async fn release_leases(&self, owner: &str) -> Result<()>;

    /// How many replicas renewed their heartbeat lately (their lease has not expired): the
    /// engines sharing this store, which split every cloud account's request budget. A
    /// store without replicas answers 1.
    async fn live_replicas(&self) -> Result<usize> {
        Ok(1)
    }

    /// Allocates the lowest free address of a pool to (cluster, owner) in one transaction;
    /// idempotent: the same (cluster, owner) gets the same address again. Fails with
    /// [`CoreError::PoolExhausted`](crate::CoreError::PoolExhausted) or
    /// [`CoreError::PoolRestricted`](crate::CoreError::PoolRestricted); with
    /// [`CoreError::Fenced`](crate::CoreError::Fenced) (nothing allocated) when
    /// `req.fence` is stale, checked in the same transaction as in [`Store::commit`].
    async fn allocate_ip(&self, req: &IpRequest) -> Result<u64>;

    /// Releases the addresses of a cluster (only those of `owners`, when given); returns
    /// how many were released. With `fence`, refused with
    /// [`CoreError::Fenced`](crate::CoreError::Fenced) (nothing released) when another
    /// replica took the cluster over: a stale replica's view of which machines exist must
    /// not free an address the new owner is about to use.
    async fn release_ips(
        &self,
        cluster: ClusterId,
        owners: Option<&[String]>,
        fence: Option<u64>,
    ) -> Result<u64>;

    /// Allocated addresses, of one pool or all, of one cluster or all.
    async fn ip_leases(
        &self,
        pool: Option<&str>,
        cluster: Option<ClusterId>,
    ) -> Result<Vec<IpLease>>;

    /// Writes usage samples of a cluster at a resolution (`step` seconds; 0 = raw), one row
    /// per time; a row at an existing (cluster, step, time) replaces it.
    async fn put_usage(&self, cluster: ClusterId, step: u32, rows: &[UsageRow]) -> Result<()> {
        let _ = (cluster, step, rows);
        Err(crate::error::CoreError::Unsupported("usage samples"))
    }

    /// Usage rows of a cluster at a resolution with `from <= at < to`, oldest first.
    async fn usage(
        &self,
        cluster: ClusterId,
        step: u32,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<UsageRow>> {
        let _ = (cluster, step, from, to);
        Err(crate::error::CoreError::Unsupported("usage samples"))
    }

    /// Deletes a cluster's usage rows older than `before` (of one resolution, or all);
    /// returns how many.
    async fn delete_usage(
        &self,
        cluster: ClusterId,
        step: Option<u32>,
        before: DateTime<Utc>,
    ) -> Result<u64> {
        let _ = (cluster, step, before);
        Err(crate::error::CoreError::Unsupported("usage samples"))
    }

    /// Cluster ids whose spec or lifecycle changed, from any process sharing the database
    /// (PostgreSQL LISTEN/NOTIFY). `None` when the store has no cross-process notifications
    /// (an embedded store only serves one engine).
    async fn changes(&self) -> Result<Option<futures_util::stream::BoxStream<'static, ClusterId>>> {
        Ok(None)
    }
}

/// The end of a half-open time range in the whole seconds usage rows are kept in: a sample
/// taken earlier in `to`'s own second is inside the range.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn end_second(to: chrono::DateTime<chrono::Utc>) -> i64 {
    to.timestamp() + i64::from(to.timestamp_subsec_nanos() > 0)
}

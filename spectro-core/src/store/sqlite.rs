//! SQLite store: the embedded default. WAL journal, one writer connection and a few reader
//! connections, schema migrations keyed by `PRAGMA user_version`.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use super::{
    cluster_spec_scope, from_json, object_scope, to_json, ClusterWrite, Intent, IpLease, IpRequest,
    Lease, ObjectKind, Store, StoredObject, UsageRow,
};
use crate::error::{CoreError, Result};
use crate::provider::ClusterId;
use crate::records::event::{Event, Severity};
use crate::records::status::{ClusterRecord, Phase};
use crate::secret::{Keyring, SecretCodec};

/// Schema migrations, applied in order; `PRAGMA user_version` counts the applied ones.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE objects (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    revision INTEGER NOT NULL,
    body TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE clusters (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    generation INTEGER NOT NULL,
    lifecycle TEXT NOT NULL,
    spec TEXT NOT NULL,
    profile TEXT NOT NULL,
    profile_revision INTEGER NOT NULL,
    status TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX clusters_live_name ON clusters(name) WHERE deleted = 0;
CREATE TABLE intents (
    cluster_id TEXT NOT NULL,
    name TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (cluster_id, name)
);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    cluster_id TEXT NOT NULL,
    time TEXT NOT NULL,
    severity TEXT NOT NULL,
    reason TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX events_cluster ON events(cluster_id, seq);
"#,
    r#"
ALTER TABLE clusters ADD COLUMN lease_owner TEXT;
ALTER TABLE clusters ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;
CREATE TABLE replicas (id TEXT PRIMARY KEY, expires INTEGER NOT NULL);
"#,
    r#"
CREATE TABLE ip_pool_state (pool TEXT PRIMARY KEY, size INTEGER NOT NULL);
CREATE TABLE ip_free (pool TEXT NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL, PRIMARY KEY (pool, lo));
CREATE INDEX ip_free_hi ON ip_free(pool, hi);
CREATE TABLE ip_alloc (
    pool TEXT NOT NULL,
    idx INTEGER NOT NULL,
    cluster_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    PRIMARY KEY (pool, idx),
    UNIQUE (pool, cluster_id, owner)
);
CREATE INDEX ip_alloc_cluster ON ip_alloc(cluster_id, owner);
"#,
    r#"
CREATE TABLE usage (
    cluster_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    at INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (cluster_id, step, at)
) WITHOUT ROWID;
"#,
    // The change feed of file databases shared by processes (`Store::changes`): a row per
    // cluster insert or spec/lifecycle update, read by sequence.
    r#"
CREATE TABLE cluster_changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, cluster_id TEXT NOT NULL);
"#,
];

/// Change rows kept: older ones are pruned (a reader that far behind looks at everything
/// again, as after a lost notification connection).
const CHANGES_KEPT: i64 = 10_000;

/// Records that `id`'s spec or lifecycle changed (same connection, right after the write).
fn record_change(c: &Connection, id: &str) -> Result<()> {
    c.execute(
        "INSERT INTO cluster_changes (cluster_id) VALUES (?1)",
        params![id],
    )
    .db("record change")?;
    let seq = c.last_insert_rowid();
    if seq % 1_000 == 0 {
        c.execute(
            "DELETE FROM cluster_changes WHERE seq <= ?1",
            params![seq - CHANGES_KEPT],
        )
        .db("record change")?;
    }
    Ok(())
}

trait Db<T> {
    fn db(self, op: &'static str) -> Result<T>;
}

impl<T> Db<T> for rusqlite::Result<T> {
    fn db(self, op: &'static str) -> Result<T> {
        self.map_err(|e| CoreError::store(op, e))
    }
}

/// Refuses a write by a replica whose fencing token for the cluster is stale (inside the
/// write's transaction: SQLite has one writer, so the check and the write are atomic).
fn check_fence(tx: &rusqlite::Transaction<'_>, cluster: &str, fence: Option<u64>) -> Result<()> {
    let Some(f) = fence else {
        return Ok(());
    };
    let current: Option<i64> = tx
        .query_row(
            "SELECT fence FROM clusters WHERE id = ?1",
            params![cluster],
            |r| r.get(0),
        )
        .optional()
        .db("check fence")?;
    if current != Some(f as i64) {
        return Err(CoreError::Fenced {
            cluster: cluster.to_string(),
            fence: f,
        });
    }
    Ok(())
}

struct Inner {
    /// Seals secret fields.
    secrets: SecretCodec,
    /// `<file>.secrets-key` for a file database.
    key_file: Option<std::path::PathBuf>,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// How often `changes()` looks for other processes' changes.
    change_poll: std::time::Duration,
}

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("readers", &self.inner.readers.len())
            .finish()
    }
}

/// A write transaction that takes the write lock at its start (`BEGIN IMMEDIATE`), so it
/// waits for another process's writer (busy timeout) instead of failing at once with
/// "database is locked" when a read turns into a write behind a newer commit.
fn write_tx(c: &mut Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
}

fn configure(c: &Connection) -> Result<()> {
    c.busy_timeout(std::time::Duration::from_secs(10))
        .db("configure")?;
    // Switching a new file to WAL takes an exclusive lock, for which SQLite does not wait
    // (no busy handler): another process opening the same new file at the same moment gets
    // "database is locked" at once. Retried for the busy timeout.
    let mut waited = std::time::Duration::ZERO;
    loop {
        match c.pragma_update(None, "journal_mode", "WAL") {
            Ok(()) => break,
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && waited < std::time::Duration::from_secs(10) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
                waited += std::time::Duration::from_millis(20);
            }
            Err(e) => return Err(e).db("configure"),
        }
    }
    c.pragma_update(None, "synchronous", "NORMAL")
        .db("configure")?;
    Ok(())
}

/// Runs WAL checkpoints on `conn` in a thread of their own every 200 ms (passive: never
/// waiting for readers or the writer) until the store is dropped.
fn checkpoints(store: std::sync::Weak<Inner>, conn: Connection) {
    let spawned = std::thread::Builder::new()
        .name("spectro-sqlite-checkpoint".into())
        .spawn(move || {
            while store.strong_count() > 0 {
                std::thread::sleep(std::time::Duration::from_millis(200));
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::debug!(error = %e, "WAL checkpoint");
                }
            }
        });
    if let Err(e) = spawned {
        // The writer's own checkpoints (past 10,000 pages) keep the WAL bounded.
        tracing::warn!(error = %e, "no checkpoint thread");
    }
}

/// Brings the schema up to date. Each step reads the version inside an immediate (write-
/// locked) transaction, so processes opening one new file at once migrate it once: the
/// second waits for the first (busy timeout) and finds the step done.
fn migrate(c: &mut Connection) -> Result<()> {
    let current: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .db("migrate")?;
    for (i, m) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        let tx = c
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .db("migrate")?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .db("migrate")?;
        if version > i as i64 {
            continue;
        }
        tx.execute_batch(m).db("migrate")?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .db("migrate")?;
        tx.commit().db("migrate")?;
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and migrates it.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    ///
    /// use spectro_core::{SqliteStore, Store};
    ///
    /// let store: Arc<dyn Store> = Arc::new(SqliteStore::open("/var/lib/myapp/spectro.db")?);
    /// // hand it to `Engine::builder(store)`
    /// # Ok::<(), spectro_core::CoreError>(())
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut writer = Connection::open(path).db("open")?;
        configure(&writer)?;
        migrate(&mut writer)?;
        let mut readers = Vec::new();
        for _ in 0..2 {
            let r = Connection::open(path).db("open")?;
            configure(&r)?;
            readers.push(Mutex::new(r));
        }
        // Checkpoints off the commit path: the writer leaves them to a thread of their own
        // (its own connection, every 200 ms), so no commit waits for the copy into the
        // database file and its sync. The writer still checkpoints itself past 10,000 WAL
        // pages (~40 MB), should that thread fall behind.
        writer
            .pragma_update(None, "wal_autocheckpoint", 10_000)
            .db("configure")?;
        let checkpointer = Connection::open(path).db("open")?;
        configure(&checkpointer)?;
        let mut key_file = path.as_os_str().to_owned();
        key_file.push(".secrets-key");
        let inner = Arc::new(Inner {
            secrets: SecretCodec::default(),
            key_file: Some(key_file.into()),
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
            change_poll: std::time::Duration::from_millis(500),
        });
        checkpoints(Arc::downgrade(&inner), checkpointer);
        Ok(SqliteStore { inner })
    }

    /// How often [`Store::changes`] looks for clusters other processes created or changed
    /// (default 500 ms): engines on one database file in several processes (an embedding
    /// application and the `spectro` command line, replicas) see each other's writes
    /// within it.
    #[must_use]
    pub fn with_change_poll(self, every: std::time::Duration) -> Self {
        let mut inner = match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner,
            Err(shared) => return SqliteStore { inner: shared },
        };
        inner.change_poll = every.max(std::time::Duration::from_millis(10));
        SqliteStore {
            inner: Arc::new(inner),
        }
    }

    /// A private in-memory database (one connection), for tests and demos.
    ///
    /// ```
    /// use serde_json::json;
    /// use spectro_core::store::ObjectKind;
    /// use spectro_core::{SqliteStore, Store};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> spectro_core::Result<()> {
    /// let store = SqliteStore::open_in_memory()?;
    /// let body = json!({ "name": "east", "gatewayName": "dc-east" });
    /// let rev = store.put_object(ObjectKind::IpPool, "east", &body, Some(0)).await?;
    /// assert_eq!(rev, 1);
    /// // Optimistic concurrency: "must not exist yet" fails now.
    /// assert!(store.put_object(ObjectKind::IpPool, "east", &body, Some(0)).await.is_err());
    /// let stored = store.get_object(ObjectKind::IpPool, "east").await?.expect("stored");
    /// assert_eq!((stored.revision, stored.body), (1, body));
    /// # Ok(())
    /// # }
    /// ```
    pub fn open_in_memory() -> Result<Self> {
        let mut writer = Connection::open_in_memory().db("open")?;
        migrate(&mut writer)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                secrets: SecretCodec::default(),
                key_file: None,
                writer: Mutex::new(writer),
                readers: Vec::new(),
                next_reader: AtomicUsize::new(0),
                change_poll: std::time::Duration::from_millis(500),
            }),
        })
    }

    async fn run<R: Send + 'static>(
        &self,
        write: bool,
        f: impl FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let inner = self.inner.clone();
        let task = tokio::task::spawn_blocking(move || {
            let slot = if write || inner.readers.is_empty() {
                &inner.writer
            } else {
                let i = inner.next_reader.fetch_add(1, Ordering::Relaxed) % inner.readers.len();
                &inner.readers[i]
            };
            let mut conn = slot.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut conn)
        });
        task.await.map_err(|e| CoreError::store("task", e))?
    }
}

const CLUSTER_COLUMNS: &str =
    "id, generation, lifecycle, spec, profile, profile_revision, status, created_at";

fn read_cluster(r: &rusqlite::Row<'_>) -> rusqlite::Result<[String; 8]> {
    Ok([
        r.get(0)?,
        r.get::<_, i64>(1)?.to_string(),
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get::<_, i64>(5)?.to_string(),
        r.get(6)?,
        r.get(7)?,
    ])
}

fn decode_cluster(secrets: &SecretCodec, c: [String; 8]) -> Result<ClusterRecord> {
    let [id, generation, lifecycle, spec, profile, profile_revision, status, created_at] = c;
    Ok(ClusterRecord {
        id: id
            .parse()
            .map_err(|e| CoreError::store("decode cluster id", e))?,
        generation: generation.parse().unwrap_or(0),
        lifecycle: from_json("cluster lifecycle", &lifecycle)?,
        spec: secrets.decode("cluster spec", &cluster_spec_scope(&id), &spec)?,
        profile: from_json("cluster profile snapshot", &profile)?,
        profile_revision: profile_revision.parse().unwrap_or(0),
        status: from_json("cluster status", &status)?,
        created_at: DateTime::parse_from_rfc3339(&created_at)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| CoreError::store("decode created_at", e))?,
    })
}

fn decode_event(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<(i64, String, String, String, String, String)> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn event_of(t: (i64, String, String, String, String, String)) -> Result<Event> {
    let (seq, cluster, time, severity, reason, message) = t;
    Ok(Event {
        seq: seq as u64,
        cluster_id: cluster
            .parse()
            .map_err(|e| CoreError::store("decode event", e))?,
        time: DateTime::parse_from_rfc3339(&time)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| CoreError::store("decode event", e))?,
        severity: Severity::parse(&severity),
        reason,
        message,
    })
}

#[async_trait]
impl Store for SqliteStore {
    fn set_keyring(&self, keyring: Arc<Keyring>) {
        self.inner.secrets.set_keyring(keyring);
    }

    fn key_file_hint(&self) -> Option<std::path::PathBuf> {
        self.inner.key_file.clone()
    }

    fn is_ephemeral(&self) -> bool {
        self.inner.key_file.is_none()
    }

    async fn put_object(
        &self,
        kind: ObjectKind,
        name: &str,
        body: &serde_json::Value,
        expected_revision: Option<u64>,
    ) -> Result<u64> {
        let name = name.to_string();
        let body = self
            .inner
            .secrets
            .encode(&object_scope(kind, &name), body)?;
        self.run(true, move |c| {
            let tx = write_tx(c).db("put object")?;
            let current: Option<i64> = tx
                .query_row(
                    "SELECT revision FROM objects WHERE kind = ?1 AND name = ?2",
                    params![kind.as_str(), name],
                    |r| r.get(0),
                )
                .optional()
                .db("put object")?;
            let current = current.unwrap_or(0) as u64;
            if let Some(exp) = expected_revision {
                if exp != current {
                    return Err(CoreError::Conflict {
                        kind: kind.as_str(),
                        name,
                        expected: exp,
                        found: current,
                    });
                }
            }
            let rev = current + 1;
            tx.execute(
                "INSERT INTO objects (kind, name, revision, body, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (kind, name) DO UPDATE SET revision = ?3, body = ?4, updated_at = ?5",
                params![kind.as_str(), name, rev as i64, body, crate::clock::system_now().to_rfc3339()],
            )
            .db("put object")?;
            tx.commit().db("put object")?;
            Ok(rev)
        })
        .await
    }

    async fn get_object(&self, kind: ObjectKind, name: &str) -> Result<Option<StoredObject>> {
        let name = name.to_string();
        let row: Option<(String, i64, String)> = self
            .run(false, move |c| {
                c.query_row(
                    "SELECT name, revision, body FROM objects WHERE kind = ?1 AND name = ?2",
                    params![kind.as_str(), name],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .db("get object")
            })
            .await?;
        row.map(|(name, rev, body)| {
            Ok(StoredObject {
                body: self
                    .inner
                    .secrets
                    .decode("object", &object_scope(kind, &name), &body)?,
                name,
                revision: rev as u64,
            })
        })
        .transpose()
    }

    async fn list_objects(&self, kind: ObjectKind) -> Result<Vec<StoredObject>> {
        let rows: Vec<(String, i64, String)> = self
            .run(false, move |c| {
                let mut st = c
                    .prepare(
                        "SELECT name, revision, body FROM objects WHERE kind = ?1 ORDER BY name",
                    )
                    .db("list objects")?;
                let rows = st
                    .query_map(params![kind.as_str()], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .db("list objects")?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .db("list objects")?;
                Ok(rows)
            })
            .await?;
        rows.into_iter()
            .map(|(name, rev, body)| {
                Ok(StoredObject {
                    body: self
                        .inner
                        .secrets
                        .decode("object", &object_scope(kind, &name), &body)?,
                    name,
                    revision: rev as u64,
                })
            })
            .collect()
    }

    async fn put_usage(&self, cluster: ClusterId, step: u32, rows: &[UsageRow]) -> Result<()> {
        let cluster = cluster.to_string();
        let rows: Vec<(i64, String)> = rows
            .iter()
            .map(|r| Ok((r.at.timestamp(), to_json(&r.body)?)))
            .collect::<Result<_>>()?;
        self.run(true, move |c| {
            let tx = write_tx(c).db("put usage")?;
            {
                let mut st = tx
                    .prepare_cached(
                        "INSERT INTO usage (cluster_id, step, at, body) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (cluster_id, step, at) DO UPDATE SET body = excluded.body",
                    )
                    .db("put usage")?;
                for (at, body) in &rows {
                    st.execute(params![cluster, step, at, body])
                        .db("put usage")?;
                }
            }
            tx.commit().db("put usage")
        })
        .await
    }

    async fn usage(
        &self,
        cluster: ClusterId,
        step: u32,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<UsageRow>> {
        let cluster = cluster.to_string();
        let rows: Vec<(i64, String)> = self
            .run(false, move |c| {
                let mut st = c
                    .prepare_cached(
                        "SELECT at, body FROM usage WHERE cluster_id = ?1 AND step = ?2
                         AND at >= ?3 AND at < ?4 ORDER BY at",
                    )
                    .db("usage")?;
                let r = st
                    .query_map(
                        params![cluster, step, from.timestamp(), super::end_second(to)],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .db("usage")?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .db("usage")?;
                Ok(r)
            })
            .await?;
        rows.into_iter()
            .map(|(at, body)| UsageRow::decode(at, &body))
            .collect()
    }

    async fn delete_usage(
        &self,
        cluster: ClusterId,
        step: Option<u32>,
        before: DateTime<Utc>,
    ) -> Result<u64> {
        let cluster = cluster.to_string();
        self.run(true, move |c| {
            let n = match step {
                Some(step) => c.execute(
                    "DELETE FROM usage WHERE cluster_id = ?1 AND step = ?2 AND at < ?3",
                    params![cluster, step, before.timestamp()],
                ),
                None => c.execute(
                    "DELETE FROM usage WHERE cluster_id = ?1 AND at < ?2",
                    params![cluster, before.timestamp()],
                ),
            }
            .db("delete usage")?;
            Ok(n as u64)
        })
        .await
    }

    async fn delete_object(&self, kind: ObjectKind, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.run(true, move |c| {
            let n = c
                .execute(
                    "DELETE FROM objects WHERE kind = ?1 AND name = ?2",
                    params![kind.as_str(), name],
                )
                .db("delete object")?;
            Ok(n > 0)
        })
        .await
    }

    async fn insert_cluster(&self, rec: &ClusterRecord) -> Result<()> {
        let id = rec.id.to_string();
        let name = rec.spec.name.clone();
        let lifecycle = to_json(&rec.lifecycle)?;
        let spec = self
            .inner
            .secrets
            .encode(&cluster_spec_scope(&rec.id.to_string()), &rec.spec)?;
        let profile = to_json(&rec.profile)?;
        let status = to_json(&rec.status)?;
        let (generation, prev) = (rec.generation as i64, rec.profile_revision as i64);
        let created = rec.created_at.to_rfc3339();
        self.run(true, move |c| {
            let tx = write_tx(c).db("insert cluster")?;
            let r = tx.execute(
                "INSERT INTO clusters (id, name, generation, lifecycle, spec, profile, profile_revision, status, deleted, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9, ?9)",
                params![id, name, generation, lifecycle, spec, profile, prev, status, created],
            );
            match r {
                Ok(_) => {
                    record_change(&tx, &id)?;
                    tx.commit().db("insert cluster")
                }
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    Err(CoreError::AlreadyExists {
                        kind: "cluster",
                        name,
                    })
                }
                Err(e) => Err(CoreError::store("insert cluster", e)),
            }
        })
        .await
    }

    async fn update_cluster(&self, rec: &ClusterRecord, expected_generation: u64) -> Result<()> {
        let id = rec.id.to_string();
        let lifecycle = to_json(&rec.lifecycle)?;
        let spec = self
            .inner
            .secrets
            .encode(&cluster_spec_scope(&rec.id.to_string()), &rec.spec)?;
        let profile = to_json(&rec.profile)?;
        let (generation, prev) = (rec.generation as i64, rec.profile_revision as i64);
        self.run(true, move |c| {
            let tx = write_tx(c).db("update cluster")?;
            let n = tx
                .execute(
                    "UPDATE clusters SET generation = ?2, lifecycle = ?3, spec = ?4, profile = ?5,
                       profile_revision = ?6, updated_at = ?7
                     WHERE id = ?1 AND generation = ?8",
                    params![
                        id,
                        generation,
                        lifecycle,
                        spec,
                        profile,
                        prev,
                        crate::clock::system_now().to_rfc3339(),
                        expected_generation as i64
                    ],
                )
                .db("update cluster")?;
            if n == 1 {
                record_change(&tx, &id)?;
                return tx.commit().db("update cluster");
            }
            let found: Option<i64> = tx
                .query_row(
                    "SELECT generation FROM clusters WHERE id = ?1",
                    params![id],
                    |r| r.get(0),
                )
                .optional()
                .db("update cluster")?;
            match found {
                None => Err(CoreError::NotFound {
                    kind: "cluster",
                    name: id,
                }),
                Some(g) => Err(CoreError::Conflict {
                    kind: "cluster",
                    name: id,
                    expected: expected_generation,
                    found: g as u64,
                }),
            }
        })
        .await
    }

    async fn get_cluster(&self, id: ClusterId) -> Result<Option<ClusterRecord>> {
        let id = id.to_string();
        let row = self
            .run(false, move |c| {
                c.query_row(
                    &format!("SELECT {CLUSTER_COLUMNS} FROM clusters WHERE id = ?1"),
                    params![id],
                    read_cluster,
                )
                .optional()
                .db("get cluster")
            })
            .await?;
        row.map(|c| decode_cluster(&self.inner.secrets, c))
            .transpose()
    }

    async fn find_cluster(&self, name: &str) -> Result<Option<ClusterRecord>> {
        let name = name.to_string();
        let row = self
            .run(false, move |c| {
                c.query_row(
                    &format!(
                        "SELECT {CLUSTER_COLUMNS} FROM clusters WHERE name = ?1 AND deleted = 0"
                    ),
                    params![name],
                    read_cluster,
                )
                .optional()
                .db("find cluster")
            })
            .await?;
        row.map(|c| decode_cluster(&self.inner.secrets, c))
            .transpose()
    }

    async fn list_clusters(&self, include_deleted: bool) -> Result<Vec<ClusterRecord>> {
        let rows = self
            .run(false, move |c| {
                let sql = if include_deleted {
                    format!("SELECT {CLUSTER_COLUMNS} FROM clusters ORDER BY name")
                } else {
                    format!(
                        "SELECT {CLUSTER_COLUMNS} FROM clusters WHERE deleted = 0 ORDER BY name"
                    )
                };
                let mut st = c.prepare(&sql).db("list clusters")?;
                let rows = st
                    .query_map([], read_cluster)
                    .db("list clusters")?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .db("list clusters")?;
                Ok(rows)
            })
            .await?;
        rows.into_iter()
            .map(|c| decode_cluster(&self.inner.secrets, c))
            .collect()
    }

    async fn commit(&self, w: &ClusterWrite) -> Result<Vec<Event>> {
        let Some(cid) = w.cluster_id else {
            return Ok(Vec::new());
        };
        let id = cid.to_string();
        let status = w.status.as_ref().map(to_json).transpose()?;
        let deleted = w.status.as_ref().is_some_and(|s| s.phase == Phase::Deleted);
        let add: Vec<(String, String)> = w
            .add_intents
            .iter()
            .map(|i| Ok((i.name.clone(), to_json(i)?)))
            .collect::<Result<_>>()?;
        let remove = w.remove_intents.clone();
        let clear = w.clear_intents;
        let events = w.events.clone();
        let fence = w.fence;
        self.run(true, move |c| {
            let tx = write_tx(c).db("commit")?;
            check_fence(&tx, &id, fence)?;
            if let Some(status) = status {
                tx.execute(
                    "UPDATE clusters SET status = ?2, deleted = ?3, updated_at = ?4 WHERE id = ?1",
                    params![id, status, deleted as i64, crate::clock::system_now().to_rfc3339()],
                )
                .db("commit status")?;
            }
            if clear {
                tx.execute("DELETE FROM intents WHERE cluster_id = ?1", params![id])
                    .db("commit intents")?;
            }
            {
                let mut ins = tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO intents (cluster_id, name, body) VALUES (?1, ?2, ?3)",
                    )
                    .db("commit intents")?;
                for (name, body) in &add {
                    ins.execute(params![id, name, body]).db("commit intents")?;
                }
                let mut del = tx
                    .prepare_cached("DELETE FROM intents WHERE cluster_id = ?1 AND name = ?2")
                    .db("commit intents")?;
                for name in &remove {
                    del.execute(params![id, name]).db("commit intents")?;
                }
            }
            let mut out = Vec::with_capacity(events.len());
            {
                let mut ins = tx
                    .prepare_cached(
                        "INSERT INTO events (cluster_id, time, severity, reason, message) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )
                    .db("commit events")?;
                for e in &events {
                    ins.execute(params![
                        id,
                        e.time.to_rfc3339(),
                        e.severity.as_str(),
                        e.reason,
                        e.message
                    ])
                    .db("commit events")?;
                    out.push(Event {
                        seq: tx.last_insert_rowid() as u64,
                        cluster_id: cid,
                        time: e.time,
                        severity: e.severity,
                        reason: e.reason.clone(),
                        message: e.message.clone(),
                    });
                }
            }
            tx.commit().db("commit")?;
            Ok(out)
        })
        .await
    }

    async fn intents(&self, id: ClusterId) -> Result<Vec<Intent>> {
        let id = id.to_string();
        let rows: Vec<String> = self
            .run(false, move |c| {
                let mut st = c
                    .prepare_cached("SELECT body FROM intents WHERE cluster_id = ?1 ORDER BY name")
                    .db("intents")?;
                let rows = st
                    .query_map(params![id], |r| r.get(0))
                    .db("intents")?
                    .collect::<rusqlite::Result<Vec<String>>>()
                    .db("intents")?;
                Ok(rows)
            })
            .await?;
        rows.iter().map(|b| from_json("intent", b)).collect()
    }

    async fn events(
        &self,
        cluster: Option<ClusterId>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let cluster = cluster.map(|c| c.to_string());
        let rows = self
            .run(false, move |c| {
                let limit = limit.min(i64::MAX as usize) as i64;
                let rows = match cluster {
                    Some(id) => {
                        let mut st = c
                            .prepare_cached(
                                "SELECT seq, cluster_id, time, severity, reason, message FROM events
                                 WHERE cluster_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                            )
                            .db("events")?;
                        let r = st
                            .query_map(params![id, after as i64, limit], decode_event)
                            .db("events")?
                            .collect::<rusqlite::Result<Vec<_>>>()
                            .db("events")?;
                        r
                    }
                    None => {
                        let mut st = c
                            .prepare_cached(
                                "SELECT seq, cluster_id, time, severity, reason, message FROM events
                                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                            )
                            .db("events")?;
                        let r = st
                            .query_map(params![after as i64, limit], decode_event)
                            .db("events")?
                            .collect::<rusqlite::Result<Vec<_>>>()
                            .db("events")?;
                        r
                    }
                };
                Ok(rows)
            })
            .await?;
        rows.into_iter().map(event_of).collect()
    }

    async fn latest_events(&self, cluster: Option<ClusterId>, limit: usize) -> Result<Vec<Event>> {
        let cluster = cluster.map(|c| c.to_string());
        let limit = limit.min(i64::MAX as usize) as i64;
        let mut rows = self
            .run(false, move |c| {
                let (sql, id) = match &cluster {
                    Some(id) => (
                        "SELECT seq, cluster_id, time, severity, reason, message FROM events
                         WHERE cluster_id = ?1 ORDER BY seq DESC LIMIT ?2",
                        id.clone(),
                    ),
                    None => (
                        "SELECT seq, cluster_id, time, severity, reason, message FROM events
                         WHERE ?1 = ?1 ORDER BY seq DESC LIMIT ?2",
                        String::new(),
                    ),
                };
                let mut st = c.prepare_cached(sql).db("latest events")?;
                let r = st
                    .query_map(params![id, limit], decode_event)
                    .db("latest events")?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .db("latest events")?;
                Ok(r)
            })
            .await?;
        rows.reverse();
        rows.into_iter().map(event_of).collect()
    }

    async fn acquire_leases(
        &self,
        owner: &str,
        ttl: std::time::Duration,
        max: usize,
    ) -> Result<Vec<Lease>> {
        let owner = owner.to_string();
        self.run(true, move |c| {
            let tx = write_tx(c).db("acquire leases")?;
            let now = crate::clock::system_now().timestamp_millis();
            let until = now + ttl.as_millis() as i64;
            tx.execute(
                "INSERT INTO replicas (id, expires) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET expires = excluded.expires",
                params![owner, until],
            )
            .db("renew lease")?;
            let held: i64 = tx
                .query_row(
                    "SELECT COUNT(*) FROM clusters WHERE lease_owner = ?1 AND deleted = 0",
                    params![owner],
                    |r| r.get(0),
                )
                .db("acquire leases")?;
            let room = i64::try_from(max).unwrap_or(i64::MAX).saturating_sub(held).max(0);
            tx.execute(
                "UPDATE clusters SET lease_owner = ?1, fence = fence + 1
                 WHERE id IN (SELECT c.id FROM clusters c LEFT JOIN replicas r ON r.id = c.lease_owner
                              WHERE c.deleted = 0
                                AND (c.lease_owner IS NULL OR r.id IS NULL OR r.expires < ?2)
                              ORDER BY c.created_at LIMIT ?3)",
                params![owner, now, room],
            )
            .db("acquire leases")?;
            let leases = {
                let mut st = tx
                    .prepare("SELECT id, fence FROM clusters WHERE lease_owner = ?1 AND deleted = 0")
                    .db("acquire leases")?;
                let rows = st
                    .query_map(params![owner], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                    .db("acquire leases")?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .db("acquire leases")?;
                rows
            };
            tx.commit().db("acquire leases")?;
            leases
                .into_iter()
                .map(|(id, fence)| {
                    Ok(Lease {
                        cluster_id: id.parse().map_err(|e| CoreError::store("decode lease", e))?,
                        fence: fence as u64,
                    })
                })
                .collect()
        })
        .await
    }

    async fn live_replicas(&self) -> Result<usize> {
        self.run(false, move |c| {
            let now = crate::clock::system_now().timestamp_millis();
            let n: i64 = c
                .query_row(
                    "SELECT COUNT(*) FROM replicas WHERE expires >= ?1",
                    params![now],
                    |r| r.get(0),
                )
                .db("live replicas")?;
            Ok(usize::try_from(n).unwrap_or(0).max(1))
        })
        .await
    }

    async fn release_leases(&self, owner: &str) -> Result<()> {
        let owner = owner.to_string();
        self.run(true, move |c| {
            let tx = write_tx(c).db("release leases")?;
            tx.execute(
                "UPDATE clusters SET lease_owner = NULL WHERE lease_owner = ?1",
                params![owner],
            )
            .db("release leases")?;
            tx.execute("DELETE FROM replicas WHERE id = ?1", params![owner])
                .db("release leases")?;
            tx.commit().db("release leases")?;
            Ok(())
        })
        .await
    }

    /// Polls the change feed every `with_change_poll` (file databases only: an in-memory
    /// database has one process). Starts at the newest change; a reader left behind by the
    /// pruning gets the nil id (look at everything again).
    async fn changes(&self) -> Result<Option<futures_util::stream::BoxStream<'static, ClusterId>>> {
        use futures_util::StreamExt;
        if self.inner.readers.is_empty() {
            return Ok(None);
        }
        let newest = |c: &mut Connection| -> Result<i64> {
            c.query_row(
                "SELECT COALESCE(MAX(seq), 0) FROM cluster_changes",
                [],
                |r| r.get(0),
            )
            .db("changes")
        };
        let start = self.run(false, newest).await?;
        let store = self.clone();
        let every = self.inner.change_poll;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<ClusterId>();
        tokio::spawn(async move {
            let mut last = start;
            loop {
                tokio::time::sleep(every).await;
                if tx.is_closed() {
                    return;
                }
                let after = last;
                let rows = store
                    .run(false, move |c| {
                        let oldest: i64 = c
                            .query_row(
                                "SELECT COALESCE(MIN(seq), 0) FROM cluster_changes",
                                [],
                                |r| r.get(0),
                            )
                            .db("changes")?;
                        let mut stmt = c
                            .prepare_cached(
                                "SELECT seq, cluster_id FROM cluster_changes WHERE seq > ?1 ORDER BY seq LIMIT 1000",
                            )
                            .db("changes")?;
                        let rows = stmt
                            .query_map(params![after], |r| {
                                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                            })
                            .db("changes")?
                            .collect::<rusqlite::Result<Vec<_>>>()
                            .db("changes")?;
                        Ok((oldest > after + 1 && after > 0, rows))
                    })
                    .await;
                let Ok((missed, rows)) = rows else { continue };
                if missed && tx.send(ClusterId(uuid::Uuid::nil())).is_err() {
                    return;
                }
                for (seq, id) in rows {
                    last = seq;
                    if let Ok(id) = id.parse::<ClusterId>() {
                        if tx.send(id).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Some(tokio_stream_from(rx).boxed()))
    }

    async fn allocate_ip(&self, req: &IpRequest) -> Result<u64> {
        let req = req.clone();
        self.run(true, move |c| {
            let tx = write_tx(c).db("allocate ip")?;
            let cid = req.cluster.to_string();
            let pool = req.pool.as_str();
            check_fence(&tx, &cid, req.fence)?;
            let existing: Option<i64> = tx
                .query_row(
                    "SELECT idx FROM ip_alloc WHERE pool = ?1 AND cluster_id = ?2 AND owner = ?3",
                    params![pool, cid, req.owner],
                    |r| r.get(0),
                )
                .optional()
                .db("allocate ip")?;
            if let Some(i) = existing {
                return Ok(i as u64);
            }
            if req.restrict_to_single_cluster {
                let other: Option<String> = tx
                    .query_row(
                        "SELECT cluster_id FROM ip_alloc WHERE pool = ?1 AND cluster_id != ?2 LIMIT 1",
                        params![pool, cid],
                        |r| r.get(0),
                    )
                    .optional()
                    .db("allocate ip")?;
                if let Some(holder) = other {
                    return Err(CoreError::PoolRestricted {
                        pool: pool.to_string(),
                        holder,
                    });
                }
            }
            let known: Option<i64> = tx
                .query_row("SELECT size FROM ip_pool_state WHERE pool = ?1", params![pool], |r| r.get(0))
                .optional()
                .db("allocate ip")?;
            if known.is_none() {
                tx.execute(
                    "INSERT INTO ip_pool_state (pool, size) VALUES (?1, ?2)",
                    params![pool, req.range.size as i64],
                )
                .db("allocate ip")?;
                for (lo, hi) in req.range.initial_free() {
                    tx.execute(
                        "INSERT INTO ip_free (pool, lo, hi) VALUES (?1, ?2, ?3)",
                        params![pool, lo as i64, hi as i64],
                    )
                    .db("allocate ip")?;
                }
            }
            let lowest: Option<(i64, i64)> = tx
                .query_row(
                    "SELECT lo, hi FROM ip_free WHERE pool = ?1 ORDER BY lo LIMIT 1",
                    params![pool],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .db("allocate ip")?;
            let Some((lo, hi)) = lowest else {
                return Err(CoreError::PoolExhausted {
                    pool: pool.to_string(),
                    size: req.range.size,
                });
            };
            if lo == hi {
                tx.execute("DELETE FROM ip_free WHERE pool = ?1 AND lo = ?2", params![pool, lo])
                    .db("allocate ip")?;
            } else {
                tx.execute(
                    "UPDATE ip_free SET lo = ?3 WHERE pool = ?1 AND lo = ?2",
                    params![pool, lo, lo + 1],
                )
                .db("allocate ip")?;
            }
            tx.execute(
                "INSERT INTO ip_alloc (pool, idx, cluster_id, owner) VALUES (?1, ?2, ?3, ?4)",
                params![pool, lo, cid, req.owner],
            )
            .db("allocate ip")?;
            tx.commit().db("allocate ip")?;
            Ok(lo as u64)
        })
        .await
    }

    async fn release_ips(
        &self,
        cluster: ClusterId,
        owners: Option<&[String]>,
        fence: Option<u64>,
    ) -> Result<u64> {
        let cid = cluster.to_string();
        let owners: Option<Vec<String>> = owners.map(|o| {
            let mut v = o.to_vec();
            v.sort();
            v.dedup();
            v
        });
        self.run(true, move |c| {
            let tx = write_tx(c).db("release ips")?;
            check_fence(&tx, &cid, fence)?;
            let mut rows: Vec<(String, i64)> = Vec::new();
            {
                let mut by_owner = tx
                    .prepare_cached(
                        "SELECT pool, idx FROM ip_alloc WHERE cluster_id = ?1 AND owner = ?2",
                    )
                    .db("release ips")?;
                let mut all = tx
                    .prepare_cached("SELECT pool, idx FROM ip_alloc WHERE cluster_id = ?1")
                    .db("release ips")?;
                let map = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?));
                match &owners {
                    Some(list) => {
                        for o in list {
                            for row in by_owner.query_map(params![cid, o], map).db("release ips")? {
                                rows.push(row.db("release ips")?);
                            }
                        }
                    }
                    None => {
                        for row in all.query_map(params![cid], map).db("release ips")? {
                            rows.push(row.db("release ips")?);
                        }
                    }
                }
            }
            let mut n = 0;
            for (pool, idx) in rows {
                tx.execute(
                    "DELETE FROM ip_alloc WHERE pool = ?1 AND idx = ?2",
                    params![pool, idx],
                )
                .db("release ips")?;
                // Merge with the free neighbours.
                let left: Option<i64> = tx
                    .query_row(
                        "SELECT lo FROM ip_free WHERE pool = ?1 AND hi = ?2",
                        params![pool, idx - 1],
                        |r| r.get(0),
                    )
                    .optional()
                    .db("release ips")?;
                let right: Option<i64> = tx
                    .query_row(
                        "SELECT hi FROM ip_free WHERE pool = ?1 AND lo = ?2",
                        params![pool, idx + 1],
                        |r| r.get(0),
                    )
                    .optional()
                    .db("release ips")?;
                if let Some(l) = left {
                    tx.execute(
                        "DELETE FROM ip_free WHERE pool = ?1 AND lo = ?2",
                        params![pool, l],
                    )
                    .db("release ips")?;
                }
                if right.is_some() {
                    tx.execute(
                        "DELETE FROM ip_free WHERE pool = ?1 AND lo = ?2",
                        params![pool, idx + 1],
                    )
                    .db("release ips")?;
                }
                tx.execute(
                    "INSERT INTO ip_free (pool, lo, hi) VALUES (?1, ?2, ?3)",
                    params![pool, left.unwrap_or(idx), right.unwrap_or(idx)],
                )
                .db("release ips")?;
                n += 1;
            }
            tx.commit().db("release ips")?;
            Ok(n)
        })
        .await
    }

    async fn ip_leases(
        &self,
        pool: Option<&str>,
        cluster: Option<ClusterId>,
    ) -> Result<Vec<IpLease>> {
        let pool = pool.map(str::to_string);
        let cluster = cluster.map(|c| c.to_string());
        let rows: Vec<(String, i64, String, String)> = self
            .run(false, move |c| {
                let mut st = c
                    .prepare(
                        "SELECT pool, idx, cluster_id, owner FROM ip_alloc
                         WHERE (?1 IS NULL OR pool = ?1) AND (?2 IS NULL OR cluster_id = ?2) ORDER BY pool, idx",
                    )
                    .db("ip leases")?;
                let rows = st
                    .query_map(params![pool, cluster], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .db("ip leases")?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .db("ip leases")?;
                Ok(rows)
            })
            .await?;
        rows.into_iter()
            .map(|(pool, idx, cid, owner)| {
                Ok(IpLease {
                    pool,
                    offset: idx as u64,
                    cluster: cid
                        .parse()
                        .map_err(|e| CoreError::store("decode ip lease", e))?,
                    owner,
                })
            })
            .collect()
    }
}

/// A stream of what an unbounded channel receives.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Processes starting together on a new file (the command line's `run` and `apply`):
    /// every open succeeds and the schema is migrated once.
    #[test]
    fn many_openers_of_one_new_file_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let p = path.clone();
                std::thread::spawn(move || SqliteStore::open(&p).map(|_| ()))
            })
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
        let c = Connection::open(&path).unwrap();
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
    }
}

//! PostgreSQL store: the same [`Store`] as SQLite, for several engine replicas.
//!
//! Client: tokio-postgres (async, pipelined, LISTEN/NOTIFY through its connection's message
//! stream) with deadpool-postgres for pooling; see ARCHITECTURE.md for why not sqlx.
//! Leases: a heartbeat row per replica in `replicas` (database clock) and `lease_owner` +
//! `fence` columns on `clusters`; claims use `FOR UPDATE SKIP LOCKED`; a commit locks its cluster row and is refused when
//! the fence moved. Event positions come from a one-row counter updated inside the commit,
//! so positions are handed out in commit order and a reader never skips an event.
//! TLS: rustls with libpq's `sslmode` / `sslrootcert` (see [`TlsOptions`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::stream::BoxStream;
use tokio_postgres::Row;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{
    cluster_spec_scope, from_json, object_scope, to_json, ClusterWrite, Intent, IpLease, IpRequest,
    Lease, ObjectKind, Store, StoredObject, UsageRow,
};
use crate::error::{CoreError, Result};
use crate::provider::ClusterId;
use crate::records::event::{Event, Severity};
use crate::records::status::{ClusterRecord, Phase};
use crate::secret::{Keyring, SecretCodec};

pub use super::pg_tls::{RootCerts, TlsMode, TlsOptions};

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE objects (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    revision BIGINT NOT NULL,
    body TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, name)
);
CREATE TABLE clusters (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    generation BIGINT NOT NULL,
    lifecycle TEXT NOT NULL,
    spec TEXT NOT NULL,
    profile TEXT NOT NULL,
    profile_revision BIGINT NOT NULL,
    status TEXT NOT NULL,
    deleted BOOLEAN NOT NULL DEFAULT false,
    created_at TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_owner TEXT,
    fence BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE replicas (id TEXT PRIMARY KEY, expires TIMESTAMPTZ NOT NULL);
CREATE UNIQUE INDEX clusters_live_name ON clusters(name) WHERE NOT deleted;
CREATE INDEX clusters_lease ON clusters(lease_owner) WHERE NOT deleted;
CREATE TABLE intents (
    cluster_id TEXT NOT NULL,
    name TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (cluster_id, name)
);
CREATE TABLE events (
    seq BIGINT PRIMARY KEY,
    cluster_id TEXT NOT NULL,
    time TEXT NOT NULL,
    severity TEXT NOT NULL,
    reason TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX events_cluster ON events(cluster_id, seq);
CREATE TABLE event_seq (id INT PRIMARY KEY, v BIGINT NOT NULL);
INSERT INTO event_seq VALUES (1, 0);
"#,
    r#"
CREATE TABLE ip_pool_state (pool TEXT PRIMARY KEY, size BIGINT NOT NULL, initialized BOOLEAN NOT NULL DEFAULT false);
CREATE TABLE ip_free (pool TEXT NOT NULL, lo BIGINT NOT NULL, hi BIGINT NOT NULL, PRIMARY KEY (pool, lo));
CREATE INDEX ip_free_hi ON ip_free(pool, hi);
CREATE TABLE ip_alloc (
    pool TEXT NOT NULL,
    idx BIGINT NOT NULL,
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
    step INT NOT NULL,
    at BIGINT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (cluster_id, step, at)
);
"#,
];

/// Channel the spec writers notify on.
const CHANNEL: &str = "spectro_changes";

trait Db<T> {
    fn db(self, op: &'static str) -> Result<T>;
}

impl<T> Db<T> for std::result::Result<T, tokio_postgres::Error> {
    fn db(self, op: &'static str) -> Result<T> {
        self.map_err(|e| CoreError::store(op, e))
    }
}

impl<T> Db<T> for std::result::Result<T, deadpool_postgres::PoolError> {
    fn db(self, op: &'static str) -> Result<T> {
        self.map_err(|e| CoreError::store(op, e))
    }
}

/// The PostgreSQL store.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// For the LISTEN session (holds the password: never printed).
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    /// Seals secret fields.
    secrets: Arc<SecretCodec>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: never printed.
        f.debug_struct("PostgresStore")
            .field("pool", &self.pool.status().size)
            .finish()
    }
}

const CLUSTER_COLUMNS: &str =
    "id, generation, lifecycle, spec, profile, profile_revision, status, created_at";

fn decode_cluster(secrets: &SecretCodec, r: &Row) -> Result<ClusterRecord> {
    let id: String = r.get(0);
    let created: String = r.get(7);
    Ok(ClusterRecord {
        id: id
            .parse()
            .map_err(|e| CoreError::store("decode cluster id", e))?,
        generation: r.get::<_, i64>(1) as u64,
        lifecycle: from_json("cluster lifecycle", r.get(2))?,
        spec: secrets.decode("cluster spec", &cluster_spec_scope(&id), r.get(3))?,
        profile: from_json("cluster profile snapshot", r.get(4))?,
        profile_revision: r.get::<_, i64>(5) as u64,
        status: from_json("cluster status", r.get(6))?,
        created_at: DateTime::parse_from_rfc3339(&created)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| CoreError::store("decode created_at", e))?,
    })
}

fn decode_event(r: &Row) -> Result<Event> {
    let cluster: String = r.get(1);
    let time: String = r.get(2);
    Ok(Event {
        seq: r.get::<_, i64>(0) as u64,
        cluster_id: cluster
            .parse()
            .map_err(|e| CoreError::store("decode event", e))?,
        time: DateTime::parse_from_rfc3339(&time)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| CoreError::store("decode event", e))?,
        severity: Severity::parse(r.get(3)),
        reason: r.get(4),
        message: r.get(5),
    })
}

/// Refuses a write by a replica whose fencing token for the cluster is stale. Locks the
/// cluster's row (`FOR UPDATE`) whether or not a fence is given, so a claim by another
/// replica cannot slip between the check and the rest of the transaction. Lock order: the
/// cluster row first, then IP pool rows.
async fn check_fence(
    tx: &tokio_postgres::Transaction<'_>,
    cluster: &str,
    fence: Option<u64>,
) -> Result<()> {
    let current: Option<i64> = tx
        .query_opt(
            "SELECT fence FROM clusters WHERE id = $1 FOR UPDATE",
            &[&cluster],
        )
        .await
        .db("check fence")?
        .map(|r| r.get(0));
    if let Some(f) = fence {
        if current != Some(f as i64) {
            return Err(CoreError::Fenced {
                cluster: cluster.to_string(),
                fence: f,
            });
        }
    }
    Ok(())
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/db?sslmode=verify-full&sslrootcert=/path/ca.pem`,
    /// or libpq's `host=… user=…` form), with a pool of `size` connections, and migrates the
    /// schema (safe when several replicas start at once). TLS follows libpq's `sslmode` and
    /// `sslrootcert` in the URL (see [`TlsOptions`]); without them: TLS when the server
    /// offers it, unauthenticated (libpq's `prefer`).
    pub async fn connect(url: &str, size: usize) -> Result<Self> {
        let (rest, tls) = super::pg_tls::split_tls_params(url)?;
        Self::open(&rest, size, tls.unwrap_or_default()).await
    }

    /// [`connect`](Self::connect) with the TLS settings given here (e.g. a CA read from a
    /// secret store: [`RootCerts::Pem`]); the URL must not carry `sslmode` or `sslrootcert`.
    pub async fn connect_with(url: &str, size: usize, tls: TlsOptions) -> Result<Self> {
        let (rest, in_url) = super::pg_tls::split_tls_params(url)?;
        if in_url.is_some() {
            return Err(CoreError::store(
                "parse database URL",
                std::io::Error::other(
                    "TLS settings given twice: sslmode/sslrootcert in the URL and TlsOptions",
                ),
            ));
        }
        Self::open(&rest, size, tls).await
    }

    async fn open(url: &str, size: usize, tls: TlsOptions) -> Result<Self> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| CoreError::store("parse database URL", e))?;
        config.ssl_mode(tls.pg_mode());
        let connector = tls.connector()?;
        let mgr = Manager::from_config(
            config.clone(),
            connector.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(size.max(1))
            .build()
            .map_err(|e| CoreError::store("create pool", e))?;
        let store = PostgresStore {
            pool,
            config,
            tls: connector,
            secrets: Arc::new(SecretCodec::default()),
        };
        // Connection and TLS errors (a wrong CA, a server that refuses plain TCP) surface
        // here, named as such, not as a failed migration.
        drop(store.pool.get().await.db("connect to PostgreSQL")?);
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        let mut c = self.pool.get().await.db("migrate")?;
        let tx = c.transaction().await.db("migrate")?;
        // One migrator at a time across replicas.
        tx.execute("SELECT pg_advisory_xact_lock(7255012019)", &[])
            .await
            .db("migrate")?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS spectro_migrations (version INT PRIMARY KEY)")
            .await
            .db("migrate")?;
        let done: i64 = tx
            .query_one("SELECT COUNT(*) FROM spectro_migrations", &[])
            .await
            .db("migrate")?
            .get(0);
        for (i, m) in MIGRATIONS.iter().enumerate().skip(done as usize) {
            tx.batch_execute(m).await.db("migrate")?;
            tx.execute(
                "INSERT INTO spectro_migrations (version) VALUES ($1)",
                &[&((i + 1) as i32)],
            )
            .await
            .db("migrate")?;
        }
        tx.commit().await.db("migrate")
    }

    async fn notify(tx: &tokio_postgres::Transaction<'_>, id: &str) -> Result<()> {
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &id])
            .await
            .db("notify")?;
        Ok(())
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn set_keyring(&self, keyring: Arc<Keyring>) {
        self.secrets.set_keyring(keyring);
    }

    async fn put_object(
        &self,
        kind: ObjectKind,
        name: &str,
        body: &serde_json::Value,
        expected_revision: Option<u64>,
    ) -> Result<u64> {
        let body = self.secrets.encode(&object_scope(kind, name), body)?;
        let mut c = self.pool.get().await.db("put object")?;
        let tx = c.transaction().await.db("put object")?;
        let current: Option<i64> = tx
            .query_opt(
                "SELECT revision FROM objects WHERE kind = $1 AND name = $2 FOR UPDATE",
                &[&kind.as_str(), &name],
            )
            .await
            .db("put object")?
            .map(|r| r.get(0));
        let current = current.unwrap_or(0) as u64;
        if let Some(exp) = expected_revision {
            if exp != current {
                return Err(CoreError::Conflict {
                    kind: kind.as_str(),
                    name: name.to_string(),
                    expected: exp,
                    found: current,
                });
            }
        }
        let rev = (current + 1) as i64;
        if current == 0 {
            // No row to lock yet: a concurrent first writer must lose, not overwrite.
            let n = tx
                .execute(
                    "INSERT INTO objects (kind, name, revision, body) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (kind, name) DO NOTHING",
                    &[&kind.as_str(), &name, &rev, &body],
                )
                .await
                .db("put object")?;
            if n == 0 {
                return Err(CoreError::Conflict {
                    kind: kind.as_str(),
                    name: name.to_string(),
                    expected: 0,
                    found: 1,
                });
            }
        } else {
            tx.execute(
                "UPDATE objects SET revision = $3, body = $4, updated_at = now() WHERE kind = $1 AND name = $2",
                &[&kind.as_str(), &name, &rev, &body],
            )
            .await
            .db("put object")?;
        }
        tx.commit().await.db("put object")?;
        Ok(rev as u64)
    }

    async fn get_object(&self, kind: ObjectKind, name: &str) -> Result<Option<StoredObject>> {
        let c = self.pool.get().await.db("get object")?;
        let st = c
            .prepare_cached(
                "SELECT name, revision, body FROM objects WHERE kind = $1 AND name = $2",
            )
            .await
            .db("get object")?;
        let row = c
            .query_opt(&st, &[&kind.as_str(), &name])
            .await
            .db("get object")?;
        row.map(|r| {
            Ok(StoredObject {
                name: r.get(0),
                revision: r.get::<_, i64>(1) as u64,
                body: self
                    .secrets
                    .decode("object", &object_scope(kind, r.get(0)), r.get(2))?,
            })
        })
        .transpose()
    }

    async fn list_objects(&self, kind: ObjectKind) -> Result<Vec<StoredObject>> {
        let c = self.pool.get().await.db("list objects")?;
        let rows = c
            .query(
                "SELECT name, revision, body FROM objects WHERE kind = $1 ORDER BY name",
                &[&kind.as_str()],
            )
            .await
            .db("list objects")?;
        rows.iter()
            .map(|r| {
                Ok(StoredObject {
                    name: r.get(0),
                    revision: r.get::<_, i64>(1) as u64,
                    body: self
                        .secrets
                        .decode("object", &object_scope(kind, r.get(0)), r.get(2))?,
                })
            })
            .collect()
    }

    async fn put_usage(&self, cluster: ClusterId, step: u32, rows: &[UsageRow]) -> Result<()> {
        let cluster = cluster.to_string();
        let step = step as i32;
        let mut c = self.pool.get().await.db("put usage")?;
        let tx = c.transaction().await.db("put usage")?;
        let st = tx
            .prepare_cached(
                "INSERT INTO usage (cluster_id, step, at, body) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (cluster_id, step, at) DO UPDATE SET body = excluded.body",
            )
            .await
            .db("put usage")?;
        for r in rows {
            let body = to_json(&r.body)?;
            tx.execute(&st, &[&cluster, &step, &r.at.timestamp(), &body])
                .await
                .db("put usage")?;
        }
        tx.commit().await.db("put usage")
    }

    async fn usage(
        &self,
        cluster: ClusterId,
        step: u32,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<UsageRow>> {
        let c = self.pool.get().await.db("usage")?;
        let rows = c
            .query(
                "SELECT at, body FROM usage WHERE cluster_id = $1 AND step = $2
                 AND at >= $3 AND at < $4 ORDER BY at",
                &[
                    &cluster.to_string(),
                    &(step as i32),
                    &from.timestamp(),
                    &super::end_second(to),
                ],
            )
            .await
            .db("usage")?;
        rows.iter()
            .map(|r| UsageRow::decode(r.get(0), r.get::<_, &str>(1)))
            .collect()
    }

    async fn delete_usage(
        &self,
        cluster: ClusterId,
        step: Option<u32>,
        before: DateTime<Utc>,
    ) -> Result<u64> {
        let c = self.pool.get().await.db("delete usage")?;
        let id = cluster.to_string();
        let n = match step {
            Some(step) => {
                c.execute(
                    "DELETE FROM usage WHERE cluster_id = $1 AND step = $2 AND at < $3",
                    &[&id, &(step as i32), &before.timestamp()],
                )
                .await
            }
            None => {
                c.execute(
                    "DELETE FROM usage WHERE cluster_id = $1 AND at < $2",
                    &[&id, &before.timestamp()],
                )
                .await
            }
        }
        .db("delete usage")?;
        Ok(n)
    }

    async fn delete_object(&self, kind: ObjectKind, name: &str) -> Result<bool> {
        let c = self.pool.get().await.db("delete object")?;
        let n = c
            .execute(
                "DELETE FROM objects WHERE kind = $1 AND name = $2",
                &[&kind.as_str(), &name],
            )
            .await
            .db("delete object")?;
        Ok(n > 0)
    }

    async fn insert_cluster(&self, rec: &ClusterRecord) -> Result<()> {
        let id = rec.id.to_string();
        let mut c = self.pool.get().await.db("insert cluster")?;
        let tx = c.transaction().await.db("insert cluster")?;
        let r = tx
            .execute(
                "INSERT INTO clusters (id, name, generation, lifecycle, spec, profile, profile_revision, status, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &id,
                    &rec.spec.name,
                    &(rec.generation as i64),
                    &to_json(&rec.lifecycle)?,
                    &self
                        .secrets
                        .encode(&cluster_spec_scope(&rec.id.to_string()), &rec.spec)?,
                    &to_json(&rec.profile)?,
                    &(rec.profile_revision as i64),
                    &to_json(&rec.status)?,
                    &rec.created_at.to_rfc3339(),
                ],
            )
            .await;
        match r {
            Ok(_) => {}
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                return Err(CoreError::AlreadyExists {
                    kind: "cluster",
                    name: rec.spec.name.clone(),
                })
            }
            Err(e) => return Err(CoreError::store("insert cluster", e)),
        }
        Self::notify(&tx, &id).await?;
        tx.commit().await.db("insert cluster")
    }

    async fn update_cluster(&self, rec: &ClusterRecord, expected_generation: u64) -> Result<()> {
        let id = rec.id.to_string();
        let mut c = self.pool.get().await.db("update cluster")?;
        let tx = c.transaction().await.db("update cluster")?;
        let n = tx
            .execute(
                "UPDATE clusters SET generation = $2, lifecycle = $3, spec = $4, profile = $5,
                   profile_revision = $6, updated_at = now()
                 WHERE id = $1 AND generation = $7",
                &[
                    &id,
                    &(rec.generation as i64),
                    &to_json(&rec.lifecycle)?,
                    &self
                        .secrets
                        .encode(&cluster_spec_scope(&rec.id.to_string()), &rec.spec)?,
                    &to_json(&rec.profile)?,
                    &(rec.profile_revision as i64),
                    &(expected_generation as i64),
                ],
            )
            .await
            .db("update cluster")?;
        if n == 1 {
            Self::notify(&tx, &id).await?;
            return tx.commit().await.db("update cluster");
        }
        let found: Option<i64> = tx
            .query_opt("SELECT generation FROM clusters WHERE id = $1", &[&id])
            .await
            .db("update cluster")?
            .map(|r| r.get(0));
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
    }

    async fn get_cluster(&self, id: ClusterId) -> Result<Option<ClusterRecord>> {
        let c = self.pool.get().await.db("get cluster")?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {CLUSTER_COLUMNS} FROM clusters WHERE id = $1"
            ))
            .await
            .db("get cluster")?;
        let row = c
            .query_opt(&st, &[&id.to_string()])
            .await
            .db("get cluster")?;
        row.as_ref()
            .map(|r| decode_cluster(&self.secrets, r))
            .transpose()
    }

    async fn find_cluster(&self, name: &str) -> Result<Option<ClusterRecord>> {
        let c = self.pool.get().await.db("find cluster")?;
        let row = c
            .query_opt(
                &format!("SELECT {CLUSTER_COLUMNS} FROM clusters WHERE name = $1 AND NOT deleted"),
                &[&name],
            )
            .await
            .db("find cluster")?;
        row.as_ref()
            .map(|r| decode_cluster(&self.secrets, r))
            .transpose()
    }

    async fn list_clusters(&self, include_deleted: bool) -> Result<Vec<ClusterRecord>> {
        let c = self.pool.get().await.db("list clusters")?;
        let rows = c
            .query(
                &format!(
                    "SELECT {CLUSTER_COLUMNS} FROM clusters WHERE $1 OR NOT deleted ORDER BY name"
                ),
                &[&include_deleted],
            )
            .await
            .db("list clusters")?;
        rows.iter()
            .map(|r| decode_cluster(&self.secrets, r))
            .collect()
    }

    async fn commit(&self, w: &ClusterWrite) -> Result<Vec<Event>> {
        let Some(cid) = w.cluster_id else {
            return Ok(Vec::new());
        };
        let id = cid.to_string();
        let status = w.status.as_ref().map(to_json).transpose()?;
        let deleted = w.status.as_ref().is_some_and(|s| s.phase == Phase::Deleted);
        let mut c = self.pool.get().await.db("commit")?;
        let tx = c.transaction().await.db("commit")?;
        // Lock the row: a claim by another replica cannot slip between check and write.
        check_fence(&tx, &id, w.fence).await?;
        if let Some(status) = status {
            let st = tx
                .prepare_cached(
                    "UPDATE clusters SET status = $2, deleted = $3, updated_at = now() WHERE id = $1",
                )
                .await
                .db("commit status")?;
            tx.execute(&st, &[&id, &status, &deleted])
                .await
                .db("commit status")?;
        }
        if w.clear_intents {
            tx.execute("DELETE FROM intents WHERE cluster_id = $1", &[&id])
                .await
                .db("commit intents")?;
        }
        for i in &w.add_intents {
            tx.execute(
                "INSERT INTO intents (cluster_id, name, body) VALUES ($1, $2, $3)
                 ON CONFLICT (cluster_id, name) DO UPDATE SET body = $3",
                &[&id, &i.name, &to_json(i)?],
            )
            .await
            .db("commit intents")?;
        }
        if !w.remove_intents.is_empty() {
            tx.execute(
                "DELETE FROM intents WHERE cluster_id = $1 AND name = ANY($2)",
                &[&id, &w.remove_intents],
            )
            .await
            .db("commit intents")?;
        }
        let mut out = Vec::with_capacity(w.events.len());
        if !w.events.is_empty() {
            let n = w.events.len() as i64;
            let last: i64 = tx
                .query_one(
                    "UPDATE event_seq SET v = v + $1 WHERE id = 1 RETURNING v",
                    &[&n],
                )
                .await
                .db("commit events")?
                .get(0);
            // One round trip for all events.
            let first = last - n + 1;
            let seqs: Vec<i64> = (first..=last).collect();
            let ids: Vec<&str> = w.events.iter().map(|_| id.as_str()).collect();
            let times: Vec<String> = w.events.iter().map(|e| e.time.to_rfc3339()).collect();
            let sev: Vec<&str> = w.events.iter().map(|e| e.severity.as_str()).collect();
            let reasons: Vec<&str> = w.events.iter().map(|e| e.reason.as_str()).collect();
            let messages: Vec<&str> = w.events.iter().map(|e| e.message.as_str()).collect();
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO events (seq, cluster_id, time, severity, reason, message)
                     SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])",
                )
                .await
                .db("commit events")?;
            tx.execute(&stmt, &[&seqs, &ids, &times, &sev, &reasons, &messages])
                .await
                .db("commit events")?;
            for (k, e) in w.events.iter().enumerate() {
                out.push(Event {
                    seq: (first + k as i64) as u64,
                    cluster_id: cid,
                    time: e.time,
                    severity: e.severity,
                    reason: e.reason.clone(),
                    message: e.message.clone(),
                });
            }
        }
        tx.commit().await.db("commit")?;
        Ok(out)
    }

    async fn intents(&self, id: ClusterId) -> Result<Vec<Intent>> {
        let c = self.pool.get().await.db("intents")?;
        let st = c
            .prepare_cached("SELECT body FROM intents WHERE cluster_id = $1 ORDER BY name")
            .await
            .db("intents")?;
        let rows = c.query(&st, &[&id.to_string()]).await.db("intents")?;
        rows.iter().map(|r| from_json("intent", r.get(0))).collect()
    }

    async fn events(
        &self,
        cluster: Option<ClusterId>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let c = self.pool.get().await.db("events")?;
        let limit = limit.min(i64::MAX as usize) as i64;
        let after = after.min(i64::MAX as u64) as i64;
        let rows = match cluster {
            Some(id) => c
                .query(
                    "SELECT seq, cluster_id, time, severity, reason, message FROM events
                     WHERE cluster_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                    &[&id.to_string(), &after, &limit],
                )
                .await
                .db("events")?,
            None => c
                .query(
                    "SELECT seq, cluster_id, time, severity, reason, message FROM events
                     WHERE seq > $1 ORDER BY seq LIMIT $2",
                    &[&after, &limit],
                )
                .await
                .db("events")?,
        };
        rows.iter().map(decode_event).collect()
    }

    async fn latest_events(&self, cluster: Option<ClusterId>, limit: usize) -> Result<Vec<Event>> {
        let c = self.pool.get().await.db("latest events")?;
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows = match cluster {
            Some(id) => c
                .query(
                    "SELECT seq, cluster_id, time, severity, reason, message FROM events
                     WHERE cluster_id = $1 ORDER BY seq DESC LIMIT $2",
                    &[&id.to_string(), &limit],
                )
                .await
                .db("latest events")?,
            None => c
                .query(
                    "SELECT seq, cluster_id, time, severity, reason, message FROM events
                     ORDER BY seq DESC LIMIT $1",
                    &[&limit],
                )
                .await
                .db("latest events")?,
        };
        let mut out = rows.iter().map(decode_event).collect::<Result<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }

    async fn acquire_leases(&self, owner: &str, ttl: Duration, max: usize) -> Result<Vec<Lease>> {
        // A lease is a heartbeat per replica (one row, whatever the number of clusters it
        // holds) plus `lease_owner` on each cluster; a cluster whose owner's heartbeat
        // expired is free to claim, and claiming bumps its fence.
        let secs = ttl.as_secs_f64();
        let mut c = self.pool.get().await.db("acquire leases")?;
        let tx = c.transaction().await.db("acquire leases")?;
        tx.execute(
            "INSERT INTO replicas (id, expires) VALUES ($1, now() + make_interval(secs => $2))
             ON CONFLICT (id) DO UPDATE SET expires = EXCLUDED.expires",
            &[&owner, &secs],
        )
        .await
        .db("renew lease")?;
        let held: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM clusters WHERE lease_owner = $1 AND NOT deleted",
                &[&owner],
            )
            .await
            .db("acquire leases")?
            .get(0);
        let room = i64::try_from(max)
            .unwrap_or(i64::MAX)
            .saturating_sub(held)
            .max(0);
        if room > 0 {
            tx.execute(
                "UPDATE clusters SET lease_owner = $1, fence = fence + 1
                 WHERE id IN (SELECT c.id FROM clusters c LEFT JOIN replicas r ON r.id = c.lease_owner
                              WHERE NOT c.deleted
                                AND (c.lease_owner IS NULL OR r.id IS NULL OR r.expires < now())
                              ORDER BY c.created_at LIMIT $2
                              FOR UPDATE OF c SKIP LOCKED)",
                &[&owner, &room],
            )
            .await
            .db("claim leases")?;
        }
        let rows = tx
            .query(
                "SELECT id, fence FROM clusters WHERE lease_owner = $1 AND NOT deleted",
                &[&owner],
            )
            .await
            .db("acquire leases")?;
        tx.commit().await.db("acquire leases")?;
        rows.iter()
            .map(|r| {
                let id: String = r.get(0);
                Ok(Lease {
                    cluster_id: id
                        .parse()
                        .map_err(|e| CoreError::store("decode lease", e))?,
                    fence: r.get::<_, i64>(1) as u64,
                })
            })
            .collect()
    }

    async fn live_replicas(&self) -> Result<usize> {
        let c = self.pool.get().await.db("live replicas")?;
        let n: i64 = c
            .query_one("SELECT COUNT(*) FROM replicas WHERE expires >= now()", &[])
            .await
            .db("live replicas")?
            .get(0);
        Ok(usize::try_from(n).unwrap_or(0).max(1))
    }

    async fn release_leases(&self, owner: &str) -> Result<()> {
        let mut c = self.pool.get().await.db("release leases")?;
        let tx = c.transaction().await.db("release leases")?;
        tx.execute(
            "UPDATE clusters SET lease_owner = NULL WHERE lease_owner = $1",
            &[&owner],
        )
        .await
        .db("release leases")?;
        tx.execute("DELETE FROM replicas WHERE id = $1", &[&owner])
            .await
            .db("release leases")?;
        tx.commit().await.db("release leases")
    }

    async fn allocate_ip(&self, req: &IpRequest) -> Result<u64> {
        let cid = req.cluster.to_string();
        let pool = req.pool.as_str();
        let mut c = self.pool.get().await.db("allocate ip")?;
        let tx = c.transaction().await.db("allocate ip")?;
        if req.fence.is_some() {
            check_fence(&tx, &cid, req.fence).await?;
        }
        // One allocator per pool at a time: the pool's state row is the lock.
        tx.execute(
            "INSERT INTO ip_pool_state (pool, size) VALUES ($1, $2) ON CONFLICT (pool) DO NOTHING",
            &[&pool, &(req.range.size as i64)],
        )
        .await
        .db("allocate ip")?;
        let initialized: bool = tx
            .query_one(
                "SELECT initialized FROM ip_pool_state WHERE pool = $1 FOR UPDATE",
                &[&pool],
            )
            .await
            .db("allocate ip")?
            .get(0);
        if !initialized {
            for (lo, hi) in req.range.initial_free() {
                tx.execute(
                    "INSERT INTO ip_free (pool, lo, hi) VALUES ($1, $2, $3)",
                    &[&pool, &(lo as i64), &(hi as i64)],
                )
                .await
                .db("allocate ip")?;
            }
            tx.execute(
                "UPDATE ip_pool_state SET initialized = true WHERE pool = $1",
                &[&pool],
            )
            .await
            .db("allocate ip")?;
        }
        if let Some(r) = tx
            .query_opt(
                "SELECT idx FROM ip_alloc WHERE pool = $1 AND cluster_id = $2 AND owner = $3",
                &[&pool, &cid, &req.owner],
            )
            .await
            .db("allocate ip")?
        {
            tx.commit().await.db("allocate ip")?;
            return Ok(r.get::<_, i64>(0) as u64);
        }
        if req.restrict_to_single_cluster {
            if let Some(r) = tx
                .query_opt(
                    "SELECT cluster_id FROM ip_alloc WHERE pool = $1 AND cluster_id != $2 LIMIT 1",
                    &[&pool, &cid],
                )
                .await
                .db("allocate ip")?
            {
                return Err(CoreError::PoolRestricted {
                    pool: pool.to_string(),
                    holder: r.get(0),
                });
            }
        }
        let Some(r) = tx
            .query_opt(
                "SELECT lo, hi FROM ip_free WHERE pool = $1 ORDER BY lo LIMIT 1",
                &[&pool],
            )
            .await
            .db("allocate ip")?
        else {
            return Err(CoreError::PoolExhausted {
                pool: pool.to_string(),
                size: req.range.size,
            });
        };
        let (lo, hi): (i64, i64) = (r.get(0), r.get(1));
        if lo == hi {
            tx.execute(
                "DELETE FROM ip_free WHERE pool = $1 AND lo = $2",
                &[&pool, &lo],
            )
            .await
            .db("allocate ip")?;
        } else {
            tx.execute(
                "UPDATE ip_free SET lo = $3 WHERE pool = $1 AND lo = $2",
                &[&pool, &lo, &(lo + 1)],
            )
            .await
            .db("allocate ip")?;
        }
        tx.execute(
            "INSERT INTO ip_alloc (pool, idx, cluster_id, owner) VALUES ($1, $2, $3, $4)",
            &[&pool, &lo, &cid, &req.owner],
        )
        .await
        .db("allocate ip")?;
        tx.commit().await.db("allocate ip")?;
        Ok(lo as u64)
    }

    async fn release_ips(
        &self,
        cluster: ClusterId,
        owners: Option<&[String]>,
        fence: Option<u64>,
    ) -> Result<u64> {
        let cid = cluster.to_string();
        let mut c = self.pool.get().await.db("release ips")?;
        let tx = c.transaction().await.db("release ips")?;
        if fence.is_some() {
            check_fence(&tx, &cid, fence).await?;
        }
        let owners: Option<Vec<String>> = owners.map(|o| o.to_vec());
        let rows = tx
            .query(
                "SELECT pool, idx, owner FROM ip_alloc
                 WHERE cluster_id = $1 AND ($2::text[] IS NULL OR owner = ANY($2))
                 ORDER BY pool, idx",
                &[&cid, &owners],
            )
            .await
            .db("release ips")?;
        let mut n = 0;
        let mut locked: Vec<String> = Vec::new();
        for r in rows {
            let (pool, idx): (String, i64) = (r.get(0), r.get(1));
            if !locked.contains(&pool) {
                tx.execute(
                    "SELECT 1 FROM ip_pool_state WHERE pool = $1 FOR UPDATE",
                    &[&pool],
                )
                .await
                .db("release ips")?;
                locked.push(pool.clone());
            }
            tx.execute(
                "DELETE FROM ip_alloc WHERE pool = $1 AND idx = $2",
                &[&pool, &idx],
            )
            .await
            .db("release ips")?;
            let left: Option<i64> = tx
                .query_opt(
                    "DELETE FROM ip_free WHERE pool = $1 AND hi = $2 RETURNING lo",
                    &[&pool, &(idx - 1)],
                )
                .await
                .db("release ips")?
                .map(|r| r.get(0));
            let right: Option<i64> = tx
                .query_opt(
                    "DELETE FROM ip_free WHERE pool = $1 AND lo = $2 RETURNING hi",
                    &[&pool, &(idx + 1)],
                )
                .await
                .db("release ips")?
                .map(|r| r.get(0));
            tx.execute(
                "INSERT INTO ip_free (pool, lo, hi) VALUES ($1, $2, $3)",
                &[&pool, &left.unwrap_or(idx), &right.unwrap_or(idx)],
            )
            .await
            .db("release ips")?;
            n += 1;
        }
        tx.commit().await.db("release ips")?;
        Ok(n)
    }

    async fn ip_leases(
        &self,
        pool: Option<&str>,
        cluster: Option<ClusterId>,
    ) -> Result<Vec<IpLease>> {
        let c = self.pool.get().await.db("ip leases")?;
        let cluster = cluster.map(|c| c.to_string());
        let rows = c
            .query(
                "SELECT pool, idx, cluster_id, owner FROM ip_alloc
                 WHERE ($1::text IS NULL OR pool = $1) AND ($2::text IS NULL OR cluster_id = $2)
                 ORDER BY pool, idx",
                &[&pool, &cluster],
            )
            .await
            .db("ip leases")?;
        rows.iter()
            .map(|r| {
                let cid: String = r.get(2);
                Ok(IpLease {
                    pool: r.get(0),
                    offset: r.get::<_, i64>(1) as u64,
                    cluster: cid
                        .parse()
                        .map_err(|e| CoreError::store("decode ip lease", e))?,
                    owner: r.get(3),
                })
            })
            .collect()
    }

    async fn changes(&self) -> Result<Option<BoxStream<'static, ClusterId>>> {
        use futures_util::StreamExt;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Option<ClusterId>>();
        // Fail early when the database cannot be reached at all.
        let first = listen(&self.config, &self.tls, tx.clone()).await?;
        let (config, tls) = (self.config.clone(), self.tls.clone());
        tokio::spawn(async move {
            let mut session = Some(first);
            loop {
                if let Some(s) = session.take() {
                    let _ = s.await;
                }
                if tx.is_closed() {
                    return;
                }
                // The connection dropped: reconnect with backoff; `None` tells the engine
                // that notifications may have been missed.
                let mut delay = Duration::from_millis(200);
                loop {
                    tokio::time::sleep(delay).await;
                    if tx.is_closed() {
                        return;
                    }
                    if let Ok(s) = listen(&config, &tls, tx.clone()).await {
                        let _ = tx.send(None);
                        session = Some(s);
                        break;
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        });
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
            )
            .map(|m| m.unwrap_or(ClusterId(uuid::Uuid::nil())));
        Ok(Some(stream.boxed()))
    }
}

/// Opens a LISTEN session; the returned task ends when the connection does.
async fn listen(
    config: &tokio_postgres::Config,
    tls: &MakeRustlsConnect,
    tx: tokio::sync::mpsc::UnboundedSender<Option<ClusterId>>,
) -> Result<tokio::task::JoinHandle<()>> {
    use futures_util::StreamExt;
    let (client, mut conn) = config.connect(tls.clone()).await.db("listen")?;
    let task = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    if let Ok(id) = n.payload().parse::<ClusterId>() {
                        if tx.send(Some(id)).is_err() {
                            break;
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .db("listen")?;
    // The client must live as long as the session: park it in a task that ends with it.
    let keep = tokio::spawn(async move {
        let _ = task.await;
        drop(client);
    });
    Ok(keep)
}

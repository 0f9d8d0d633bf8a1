//! Secrets at rest, engine side: which keyring the engine uses, the store's record of the key
//! ids it holds sealed values of (checked before anything else, so a missing key stops the
//! start with a clear error instead of failing reconciles later), and the re-seal pass
//! (rotation to a new key; first start on a store written before sealing existed).
//!
//! Invariants: no store write carries a secret in clear (the store's
//! [`SecretCodec`](crate::secret::SecretCodec) refuses one without a key); the record lists
//! every key id a sealed value may name; after a re-seal it lists the current key only.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Engine;
use crate::bootstrap::pki::ClusterPki;
use crate::error::{CoreError, Result};
use crate::model::gateway::GatewayStatus;
use crate::model::{CloudAccount, PrivateCloudGateway};
use crate::secret::{EnvKeys, KeyFile, KeyProvider, Keyring};
use crate::store::{ObjectKind, Store};

/// The name of the store's keyring record.
const RECORD: &str = "secrets";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyringRecord {
    /// Ids of the keys sealed values in this store may name.
    key_ids: Vec<String>,
    /// Every secret-bearing document was re-sealed once (a store written before sealing
    /// existed holds secrets in clear until then).
    #[serde(default)]
    sealed: bool,
}

/// Where the engine's keyring came from (logged at start; never the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyOrigin {
    Provider,
    Env,
    File(std::path::PathBuf),
    Ephemeral,
}

/// The keyring: the application's provider if it gave one (no fallback then), otherwise
/// `SPECTRO_SECRETS_KEY`, otherwise the key file beside a SQLite file database. With none of
/// them, a store that already holds sealed values is refused; a new one gets a key file
/// (SQLite file: created once, mode 0600) or a random key for this process (a PostgreSQL or
/// in-memory store: a PostgreSQL store written this way cannot be reopened without that
/// key, so give PostgreSQL deployments a key).
pub(crate) async fn resolve(
    provider: Option<&dyn KeyProvider>,
    store: &dyn Store,
) -> Result<(Arc<Keyring>, KeyOrigin)> {
    if let Some(p) = provider {
        return match p.keyring().await? {
            Some(k) => Ok((k, KeyOrigin::Provider)),
            None => Err(CoreError::Secrets {
                reason: format!("the engine's key provider ({p:?}) has no key"),
            }),
        };
    }
    if let Some(k) = EnvKeys::default().keyring().await? {
        return Ok((k, KeyOrigin::Env));
    }
    let path = store.key_file_hint();
    if let Some(path) = &path {
        if let Some(k) = KeyFile::new(path).keyring().await? {
            return Ok((k, KeyOrigin::File(path.clone())));
        }
    }
    let recorded = record(store).await?.0.key_ids;
    if !recorded.is_empty() {
        return Err(CoreError::Secrets {
            reason: format!(
                "this store holds secrets sealed with key {}, and no key is configured: set \
                 SPECTRO_SECRETS_KEY (the keys, or file:PATH of a file holding them){}; the \
                 engine did not start and changed nothing",
                recorded.join(", "),
                path.as_ref()
                    .map(|p| format!(" or restore the key file {}", p.display()))
                    .unwrap_or_default()
            ),
        });
    }
    if let Some(path) = path {
        if let Some(k) = KeyFile::create_if_missing(&path).keyring().await? {
            return Ok((k, KeyOrigin::File(path)));
        }
    }
    if store.is_ephemeral() {
        return Ok((Arc::new(Keyring::random()?), KeyOrigin::Ephemeral));
    }
    // A key made up now would be lost with this process, and with it every secret sealed
    // by it: a store that outlives the process needs a configured key.
    Err(CoreError::Secrets {
        reason: "no secrets key is configured, and this store outlives the process: set \
                 SPECTRO_SECRETS_KEY (base64 of 32 random bytes, e.g. `openssl rand -base64 32`, \
                 or file:PATH) or give the engine a key provider \
                 (EngineBuilder::secret_keys); every replica of one store needs the same key"
            .into(),
    })
}

/// The store's keyring record and its revision (0: none yet).
async fn record(store: &dyn Store) -> Result<(KeyringRecord, u64)> {
    Ok(match store.get_object(ObjectKind::Keyring, RECORD).await? {
        Some(o) => (
            serde_json::from_value::<KeyringRecord>(o.body).map_err(|source| {
                CoreError::Corrupt {
                    what: "keyring record",
                    source,
                }
            })?,
            o.revision,
        ),
        None => (KeyringRecord::default(), 0),
    })
}

/// Writes the record if it is still at `revision`: false when another writer got there
/// first (read it again and retry).
async fn put_record(store: &dyn Store, rec: &KeyringRecord, revision: u64) -> Result<bool> {
    let body = serde_json::to_value(rec).map_err(|source| CoreError::Corrupt {
        what: "keyring record",
        source,
    })?;
    match store
        .put_object(ObjectKind::Keyring, RECORD, &body, Some(revision))
        .await
    {
        Ok(_) => Ok(true),
        Err(CoreError::Conflict { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

fn record_contended() -> CoreError {
    CoreError::Secrets {
        reason: "the keyring record keeps changing under this engine (other replicas starting)"
            .into(),
    }
}

/// Checks the store's record against `keyring`: refuses when the store may hold values
/// sealed with a key the keyring lacks (nothing is changed then). Records the current key.
/// Returns true when a re-seal is due (older keys listed, or a store written before
/// sealing).
pub(crate) async fn check(store: &dyn Store, keyring: &Keyring) -> Result<bool> {
    for _ in 0..5 {
        let (mut record, revision) = record(store).await?;
        let missing: Vec<&str> = record
            .key_ids
            .iter()
            .map(String::as_str)
            .filter(|id| !keyring.has(id))
            .collect();
        if !missing.is_empty() {
            return Err(CoreError::Secrets {
                reason: format!(
                    "this store holds secrets sealed with key {}, which the configured keys ({}) \
                     do not include: configure it (SPECTRO_SECRETS_KEY: the current key first, \
                     then the older ones); the engine did not start and changed nothing",
                    missing.join(", "),
                    keyring.ids().join(", ")
                ),
            });
        }
        let current = keyring.current_id().to_string();
        let reseal = !record.sealed || record.key_ids.iter().any(|id| *id != current);
        if record.key_ids.contains(&current) {
            return Ok(reseal);
        }
        record.key_ids.push(current);
        if put_record(store, &record, revision).await? {
            return Ok(reseal);
        }
    }
    Err(record_contended())
}

/// Re-seals every secret-bearing document with `keyring`'s current key (each read with
/// whichever key sealed it, or in clear when written before sealing), then records the
/// store as sealed (with `trim`, the current key as the only one). Returns how many
/// documents were written.
pub(crate) async fn reseal(store: &dyn Store, keyring: &Keyring, trim: bool) -> Result<usize> {
    let mut written = 0;
    written += reseal_kind::<CloudAccount>(store, ObjectKind::CloudAccount).await?;
    written += reseal_kind::<ClusterPki>(store, ObjectKind::ClusterPki).await?;
    written += reseal_kind::<PrivateCloudGateway>(store, ObjectKind::Gateway).await?;
    written += reseal_kind::<GatewayStatus>(store, ObjectKind::GatewayStatus).await?;
    for rec in store.list_clusters(true).await? {
        // The spec is written again by the store's codec: its proxy URLs sealed anew. A
        // concurrent spec change is read again and written once more.
        let mut rec = rec;
        for attempt in 0.. {
            match store.update_cluster(&rec, rec.generation).await {
                Ok(()) => {
                    written += 1;
                    break;
                }
                Err(CoreError::Conflict { .. }) if attempt < 4 => {
                    match store.get_cluster(rec.id).await? {
                        Some(r) => rec = r,
                        None => break,
                    }
                }
                Err(CoreError::NotFound { .. }) => break,
                Err(e) => return Err(e),
            }
        }
    }
    // Recorded: sealed; with `trim`, the current key as the only one (older replicas may
    // still seal with another key until they run the new keyring: trim only when all do).
    let mut recorded = false;
    for _ in 0..5 {
        let (mut rec, revision) = record(store).await?;
        rec.sealed = true;
        if trim {
            rec.key_ids = vec![keyring.current_id().to_string()];
        } else if !rec.key_ids.iter().any(|id| id == keyring.current_id()) {
            rec.key_ids.push(keyring.current_id().to_string());
        }
        if put_record(store, &rec, revision).await? {
            recorded = true;
            break;
        }
    }
    if !recorded {
        return Err(record_contended());
    }
    tracing::info!(
        documents = written,
        key = keyring.current_id(),
        "secrets re-sealed with the current key"
    );
    Ok(written)
}

async fn reseal_kind<T: Serialize + serde::de::DeserializeOwned>(
    store: &dyn Store,
    kind: ObjectKind,
) -> Result<usize> {
    let mut written = 0;
    for o in store.list_objects(kind).await? {
        let mut o = o;
        for attempt in 0.. {
            let typed: T =
                serde_json::from_value(o.body.clone()).map_err(|source| CoreError::Corrupt {
                    what: kind.as_str(),
                    source,
                })?;
            match store
                .put_object(kind, &o.name, &super::encode(&typed)?, Some(o.revision))
                .await
            {
                Ok(_) => {
                    written += 1;
                    break;
                }
                // Written meanwhile: read it again and seal what is there now.
                Err(CoreError::Conflict { .. }) if attempt < 4 => {
                    match store.get_object(kind, &o.name).await? {
                        Some(again) => o = again,
                        None => break,
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(written)
}

impl Engine {
    /// Re-seals every stored secret with the current key (the first of the keyring) and
    /// forgets the older keys' ids: after it, the older keys may be removed from the
    /// configuration. The engine re-seals at start too when its current key is new to the
    /// store, but keeps the older ids listed (replicas not restarted yet may still seal with
    /// them): call this once every replica runs with the new key first.
    ///
    /// Rotation with several replicas: first give every replica the new key *after* the
    /// current one (`old,new`: they can all open what the new key will seal), then the new
    /// key first (`new,old`, each start re-seals); then call this; last, drop the old key.
    pub async fn reseal_secrets(&self) -> Result<usize> {
        reseal(&*self.inner.store, &self.inner.keyring, true).await
    }

    /// The id (never the key) of the key that seals secrets now.
    #[must_use]
    pub fn secrets_key_id(&self) -> &str {
        self.inner.keyring.current_id()
    }
}

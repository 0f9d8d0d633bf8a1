//! Clusters: create, read, update (with a dry run), pack overrides, delete, abort, the admin
//! kubeconfig and profile updates.

use std::sync::atomic::Ordering;

use crate::error::{CoreError, Result};
use crate::model::profile::drop_conflicting_overrides;
use crate::model::{Cluster, ConflictResolution};
use crate::provider::ClusterId;
use crate::validate;

use super::planner::{self, UpdatePreview};
use super::status::{ClusterRecord, ClusterStatus, Lifecycle, Phase};
use super::update::{self, UpdateNotification};
use super::{executor, invalid, profile_key, Engine};

impl Engine {
    /// Declares a new cluster; provisioning starts at once. Returns its id.
    pub async fn create_cluster(&self, spec: &Cluster) -> Result<ClusterId> {
        self.running()?;
        let cat = self.catalog_for(spec).await?;
        invalid(
            format!("cluster {}", spec.name),
            validate::validate_cluster(spec, &cat),
        )?;
        let (profile, rev) = self
            .profile(&spec.profile.name, &spec.profile.version)
            .await?
            .ok_or_else(|| CoreError::NotFound {
                kind: "cluster profile",
                name: profile_key(&spec.profile.name, &spec.profile.version),
            })?;
        if !self.inner.providers.contains_key(&spec.cloud_type()) {
            return Err(CoreError::NoProvider(spec.cloud_type()));
        }
        let rec = ClusterRecord {
            id: ClusterId(
                self.inner.random.uuid(&[
                    b"cluster",
                    spec.name.as_bytes(),
                    &self
                        .inner
                        .created
                        .fetch_add(1, Ordering::Relaxed)
                        .to_le_bytes(),
                ]),
            ),
            generation: 1,
            spec: spec.clone(),
            profile,
            profile_revision: rev,
            lifecycle: Lifecycle::Active,
            status: ClusterStatus::default(),
            created_at: self.inner.clock.now(),
        };
        self.inner.store.insert_cluster(&rec).await?;
        self.inner.queue.add(rec.id);
        self.inner.lease_wake.notify_one();
        Ok(rec.id)
    }

    /// Reads a cluster by id.
    pub async fn cluster(&self, id: ClusterId) -> Result<ClusterRecord> {
        self.inner
            .store
            .get_cluster(id)
            .await?
            .ok_or_else(|| CoreError::NotFound {
                kind: "cluster",
                name: id.to_string(),
            })
    }

    /// Reads a live cluster by name.
    pub async fn cluster_by_name(&self, name: &str) -> Result<ClusterRecord> {
        self.inner
            .store
            .find_cluster(name)
            .await?
            .ok_or_else(|| CoreError::NotFound {
                kind: "cluster",
                name: name.to_string(),
            })
    }

    /// Lists live clusters.
    pub async fn clusters(&self) -> Result<Vec<ClusterRecord>> {
        self.inner.store.list_clusters(false).await
    }

    async fn modify(
        &self,
        id: ClusterId,
        f: impl Fn(&mut ClusterRecord) -> Result<()>,
    ) -> Result<ClusterRecord> {
        // Optimistic concurrency: re-read and retry when another writer got in between.
        for _ in 0..8 {
            let mut rec = self.cluster(id).await?;
            let expected = rec.generation;
            f(&mut rec)?;
            rec.generation = expected + 1;
            match self.inner.store.update_cluster(&rec, expected).await {
                Ok(()) => {
                    self.inner.queue.add(id);
                    return Ok(rec);
                }
                Err(CoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        let found = self.cluster(id).await?.generation;
        Err(CoreError::Conflict {
            kind: "cluster",
            name: id.to_string(),
            expected: found.saturating_sub(1),
            found,
        })
    }

    /// Checks an update without applying it and returns what it would do (dry run): per
    /// pool no change, scale or node replacement, and the machines created and deleted.
    pub async fn plan_update(&self, id: ClusterId, spec: &Cluster) -> Result<UpdatePreview> {
        let rec = self.cluster(id).await?;
        self.check_update(&rec, spec).await?;
        // A new profile version in the spec is applied as a profile update: show what it does.
        let target = if spec.profile == rec.profile.reference() {
            rec.profile.clone()
        } else {
            self.profile(&spec.profile.name, &spec.profile.version)
                .await?
                .map(|(p, _)| p)
                .ok_or_else(|| CoreError::NotFound {
                    kind: "cluster profile",
                    name: spec.profile.to_string(),
                })?
        };
        Ok(planner::preview_update(
            &rec.spec,
            &rec.profile,
            spec,
            &target,
        ))
    }

    async fn check_update(&self, rec: &ClusterRecord, spec: &Cluster) -> Result<()> {
        if rec.lifecycle.is_deleting() || rec.status.phase == Phase::Deleted {
            return Err(CoreError::WrongLifecycle {
                op: "update",
                cluster: rec.spec.name.clone(),
                state: "being deleted",
                hint: None,
            });
        }
        let mut cat = self.catalog_for(spec).await?;
        cat.profiles.insert(
            (rec.profile.name.clone(), rec.profile.version.clone()),
            rec.profile.clone(),
        );
        let mut v = validate::validate_cluster(spec, &cat);
        v.extend(validate::validate_cluster_update(&rec.spec, spec));
        invalid(format!("update of cluster {}", rec.spec.name), v)
    }

    /// Applies a new spec (scale, add/remove pools, add zones, reconfigure machines).
    /// Returns the new generation.
    pub async fn update_cluster(&self, id: ClusterId, spec: &Cluster) -> Result<u64> {
        self.running()?;
        let rec = self.cluster(id).await?;
        self.check_update(&rec, spec).await?;
        let spec = spec.clone();
        let rec = self
            .modify(id, |r| {
                if r.lifecycle.is_deleting() {
                    return Err(CoreError::WrongLifecycle {
                        op: "update",
                        cluster: r.spec.name.clone(),
                        state: "being deleted",
                        hint: None,
                    });
                }
                r.spec = spec.clone();
                Ok(())
            })
            .await?;
        Ok(rec.generation)
    }

    /// Overrides a pack's values on a cluster (applied at once).
    pub async fn set_pack_values(&self, id: ClusterId, pack: &str, yaml: &str) -> Result<u64> {
        let mut spec = self.cluster(id).await?.spec;
        if yaml.trim().is_empty() {
            spec.pack_values.remove(pack);
        } else {
            spec.pack_values.insert(pack.to_string(), yaml.to_string());
        }
        self.update_cluster(id, &spec).await
    }

    /// Deletes a provisioned cluster. A cluster still provisioning must be aborted instead.
    pub async fn delete_cluster(&self, id: ClusterId) -> Result<()> {
        self.running()?;
        self.modify(id, |r| {
            if r.status.phase == Phase::Deleted || r.lifecycle.is_deleting() {
                return Err(CoreError::WrongLifecycle {
                    op: "delete",
                    cluster: r.spec.name.clone(),
                    state: "already being deleted",
                    hint: None,
                });
            }
            if !r.status.provisioned {
                return Err(CoreError::WrongLifecycle {
                    op: "delete",
                    cluster: r.spec.name.clone(),
                    state: "still provisioning",
                    hint: Some("delete is only available for provisioned clusters; use abort to stop provisioning and delete what was created"),
                });
            }
            r.lifecycle = Lifecycle::Deleting;
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Aborts the provisioning of a cluster: stops it and deletes everything created so far.
    pub async fn abort_cluster(&self, id: ClusterId) -> Result<()> {
        self.running()?;
        self.modify(id, |r| {
            if r.status.phase == Phase::Deleted || r.lifecycle.is_deleting() {
                return Err(CoreError::WrongLifecycle {
                    op: "abort",
                    cluster: r.spec.name.clone(),
                    state: "already being deleted",
                    hint: None,
                });
            }
            if r.status.provisioned {
                return Err(CoreError::WrongLifecycle {
                    op: "abort",
                    cluster: r.spec.name.clone(),
                    state: "provisioned",
                    hint: Some("abort only applies while provisioning; use delete"),
                });
            }
            r.lifecycle = Lifecycle::Aborting;
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// The admin kubeconfig of a cluster (client certificate signed by its CA, server = its
    /// API endpoint). Available once the infrastructure reports the endpoint.
    pub async fn kubeconfig(&self, id: ClusterId) -> Result<crate::secret::Secret> {
        let rec = self.cluster(id).await?;
        if rec.status.phase == Phase::Deleted {
            return Err(CoreError::WrongLifecycle {
                op: "get the kubeconfig of",
                cluster: rec.spec.name.clone(),
                state: "deleted",
                hint: None,
            });
        }
        let endpoint = rec
            .status
            .infrastructure
            .as_ref()
            .and_then(|i| i.endpoint.clone())
            .ok_or_else(|| CoreError::NotReady {
                cluster: rec.spec.name.clone(),
                what: "API endpoint",
            })?;
        let pki = executor::ensure_pki(&self.inner, id).await?;
        Ok(pki.admin_kubeconfig(&rec.spec.name, &endpoint))
    }

    /// The pending profile update of a cluster: a new revision of the profile it runs, or
    /// the new profile version its spec names (`update_cluster` with another
    /// `profile.version`). The changes, the conflicts with the cluster's overrides and what
    /// applying it does per pool. `None` when the cluster runs what its spec names.
    pub async fn update_notification(&self, id: ClusterId) -> Result<Option<UpdateNotification>> {
        let rec = self.cluster(id).await?;
        Ok(update::pending(&self.inner.store, &rec)
            .await?
            .and_then(|(target, rev)| update::notification(&rec, &target, rev)))
    }

    /// Applies the pending profile update. With conflicts, `resolution` says whether the
    /// cluster keeps its overrides, takes the profile's values or uses edited overrides;
    /// without one it fails and names the conflicting keys.
    pub async fn apply_profile_update(
        &self,
        id: ClusterId,
        resolution: Option<ConflictResolution>,
    ) -> Result<u64> {
        let rec = self.cluster(id).await?;
        let pending = update::pending(&self.inner.store, &rec).await?;
        let Some((n, target)) = pending.and_then(|(target, rev)| {
            update::notification(&rec, &target, rev).map(|n| (n, target))
        }) else {
            return Err(CoreError::NotFound {
                kind: "pending profile update of cluster",
                name: rec.spec.name.clone(),
            });
        };
        if !n.conflicts.is_empty() && resolution.is_none() {
            let list: Vec<String> = n
                .conflicts
                .iter()
                .map(|c| format!("{}.{}", c.pack, c.key))
                .collect();
            return Err(CoreError::UnresolvedConflicts {
                cluster: rec.spec.name.clone(),
                keys: list,
            });
        }
        let mut pack_values = rec.spec.pack_values.clone();
        match &resolution {
            Some(ConflictResolution::TakeProfile) => {
                drop_conflicting_overrides(&mut pack_values, &n.conflicts)
            }
            Some(ConflictResolution::Edit(edited)) => {
                for (pack, yaml) in edited {
                    if yaml.trim().is_empty() {
                        pack_values.remove(pack);
                    } else {
                        pack_values.insert(pack.clone(), yaml.clone());
                    }
                }
            }
            Some(ConflictResolution::KeepOverrides) | None => {}
        }
        // The cluster as it will be: validated against the target profile before anything
        // is written.
        let mut spec = rec.spec.clone();
        spec.pack_values = pack_values;
        let mut cat = self.catalog_for(&spec).await?;
        cat.profiles.insert(
            (target.name.clone(), target.version.clone()),
            target.clone(),
        );
        invalid(
            format!("profile update of cluster {}", rec.spec.name),
            validate::validate_cluster(&spec, &cat),
        )?;
        let (expected_profile, expected_rev) = (rec.profile.reference(), rec.profile_revision);
        let rec = self
            .modify(id, |r| {
                if r.lifecycle.is_deleting() {
                    return Err(CoreError::WrongLifecycle {
                        op: "apply a profile update to",
                        cluster: r.spec.name.clone(),
                        state: "being deleted",
                        hint: None,
                    });
                }
                if r.profile.reference() != expected_profile
                    || r.profile_revision != expected_rev
                    || r.spec.profile != n.to
                {
                    return Err(CoreError::Conflict {
                        kind: "cluster profile snapshot",
                        name: r.spec.name.clone(),
                        expected: expected_rev,
                        found: r.profile_revision,
                    });
                }
                r.profile = target.clone();
                r.profile_revision = n.to_revision;
                r.spec.pack_values = spec.pack_values.clone();
                Ok(())
            })
            .await?;
        Ok(rec.generation)
    }
}

//! Profile updates: what moving a cluster from the profile it runs (its snapshot) to the
//! profile its spec names costs, and the notification that shows it.
//!
//! One mechanism covers both ways a profile changes under a cluster: a new revision of the
//! same name and version (the profile was edited) and a new version named in the cluster's
//! spec (`profile.version` 1.0.0 → 1.1.0). Either way the cluster keeps running its snapshot
//! until the update is applied with the conflicts resolved.

use serde::Serialize;

use super::planner::{preview_update, UpdatePreview};
use super::status::ClusterRecord;
use crate::model::profile::{diff_profiles, find_conflicts};
use crate::model::{ClusterProfile, OverrideConflict, PackChange, ProfileRef};

/// Profile changes waiting to be applied to a cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateNotification {
    /// The profile (name and version) the cluster runs.
    pub from: ProfileRef,
    /// The profile the cluster's spec names.
    pub to: ProfileRef,
    /// Revision the cluster runs.
    pub from_revision: u64,
    /// Current revision of the profile the spec names.
    pub to_revision: u64,
    /// Every change between the two.
    pub changes: Vec<PackChange>,
    /// Changes that collide with the cluster's overrides: resolved when applying.
    pub conflicts: Vec<OverrideConflict>,
    /// What applying it does per pool (a changed OS or Kubernetes pack repaves every pool).
    pub preview: UpdatePreview,
}

impl UpdateNotification {
    /// One line for events and conditions.
    #[must_use]
    pub fn summary(&self) -> String {
        let target = if self.from == self.to {
            format!("revision {} of profile {}", self.to_revision, self.to)
        } else {
            format!("profile {} (from {})", self.to, self.from)
        };
        let repave = if self.preview.image_changes {
            "; the OS or Kubernetes pack changes: every pool is repaved"
        } else {
            ""
        };
        format!(
            "{target} is available: {} change(s), {} conflict(s) with the cluster's overrides{repave}",
            self.changes.len(),
            self.conflicts.len()
        )
    }
}

/// The notification for moving `rec` to `target` (revision `revision`) — the profile its
/// spec names, as stored — or `None` when the cluster already runs it.
#[must_use]
pub fn notification(
    rec: &ClusterRecord,
    target: &ClusterProfile,
    revision: u64,
) -> Option<UpdateNotification> {
    let from = rec.profile.reference();
    let to = target.reference();
    let moving = from != to;
    if !moving && revision <= rec.profile_revision {
        return None;
    }
    let changes = diff_profiles(&rec.profile, target);
    // A new revision with nothing in it is no update; a new version always is (the cluster's
    // record must name what it runs).
    if changes.is_empty() && !moving {
        return None;
    }
    let conflicts = find_conflicts(&changes, &rec.spec.pack_values);
    let preview = preview_update(&rec.spec, &rec.profile, &rec.spec, target);
    Some(UpdateNotification {
        from,
        to,
        from_revision: rec.profile_revision,
        to_revision: revision,
        changes,
        conflicts,
        preview,
    })
}

/// The profile the cluster's spec names and its revision, when it differs from what the
/// cluster runs (another version, or a newer revision); `None` when it runs it.
pub(crate) async fn pending(
    store: &std::sync::Arc<dyn crate::store::Store>,
    rec: &ClusterRecord,
) -> crate::Result<Option<(ClusterProfile, u64)>> {
    let want = &rec.spec.profile;
    let key = super::profile_key(&want.name, &want.version);
    let Some(o) = store
        .get_object(crate::store::ObjectKind::Profile, &key)
        .await?
    else {
        if *want == rec.profile.reference() {
            // The stored profile is gone; the cluster keeps running its snapshot.
            return Ok(None);
        }
        return Err(crate::CoreError::NotFound {
            kind: "cluster profile",
            name: key,
        });
    };
    if *want == rec.profile.reference() && o.revision <= rec.profile_revision {
        return Ok(None);
    }
    let profile: ClusterProfile =
        serde_json::from_value(o.body).map_err(|source| crate::CoreError::Corrupt {
            what: "profile",
            source,
        })?;
    Ok(Some((profile, o.revision)))
}

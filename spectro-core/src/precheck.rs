//! Pre-checks: what a cloud account lacks for a cluster — permissions and capacity — found
//! before anything is created, and reported all at once. Providers answer for their cloud
//! ([`CloudProvider::precheck`](crate::provider::CloudProvider::precheck); vSphere:
//! privileges and datastore space; AWS: permissions and quotas); IP pools are checked here,
//! from the store's leases (no I/O in this module).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{CloudPlacement, Cluster, IpAllocation, IpPool};

/// The outcome of a pre-check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Precheck {
    /// Permissions the account lacks, as the cloud names them (`ec2:RunInstances`,
    /// `VirtualMachine.Inventory.CreateFromExisting on datastore DS0`).
    pub missing_permissions: Vec<String>,
    /// Capacity the cluster needs and does not have.
    pub shortfalls: Vec<Shortfall>,
    /// What could not be checked, and why (the cloud's API does not answer it here).
    pub unchecked: Vec<String>,
}

/// A resource the cluster needs more of than is left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Shortfall {
    /// What (`vCPUs of running on-demand standard instances in us-east-1`, `IP pool east`).
    pub resource: String,
    /// How much the cluster needs.
    pub needed: u64,
    /// How much is left.
    pub available: u64,
    /// The unit (`vCPUs`, `addresses`, `VPCs`, `GiB`).
    pub unit: String,
}

impl Shortfall {
    /// A shortfall of `resource`.
    #[must_use]
    pub fn new(resource: impl Into<String>, needed: u64, available: u64, unit: &str) -> Self {
        Shortfall {
            resource: resource.into(),
            needed,
            available,
            unit: unit.to_string(),
        }
    }
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: needs {} {unit}, {} left (short by {})",
            self.resource,
            self.needed,
            self.available,
            self.needed.saturating_sub(self.available),
            unit = self.unit
        )
    }
}

impl Precheck {
    /// True when nothing is missing (unchecked items do not fail it).
    #[must_use]
    pub fn passed(&self) -> bool {
        self.missing_permissions.is_empty() && self.shortfalls.is_empty()
    }

    /// Adds another check's findings.
    pub fn merge(&mut self, other: Precheck) {
        self.missing_permissions.extend(other.missing_permissions);
        self.shortfalls.extend(other.shortfalls);
        self.unchecked.extend(other.unchecked);
    }

    /// A pre-check with only this item unchecked.
    #[must_use]
    pub fn unchecked(why: impl Into<String>) -> Self {
        Precheck {
            unchecked: vec![why.into()],
            ..Default::default()
        }
    }

    /// One line naming everything missing (empty when it passed).
    #[must_use]
    pub fn message(&self) -> String {
        let mut parts = Vec::new();
        if !self.missing_permissions.is_empty() {
            parts.push(format!(
                "the cloud account lacks {} permission{}: {}",
                self.missing_permissions.len(),
                if self.missing_permissions.len() == 1 {
                    ""
                } else {
                    "s"
                },
                self.missing_permissions.join(", ")
            ));
        }
        if !self.shortfalls.is_empty() {
            parts.push(format!(
                "not enough capacity: {}",
                self.shortfalls
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        parts.join("; ")
    }
}

/// Addresses a static-IP cluster needs from each IP pool: one per node (nodes spread evenly
/// over a pool's placements), the control-plane VIP from the control-plane pool's first
/// placement's IP pool, and one spare per IP pool for a rolling replacement (a new node
/// comes up before the old one goes).
#[must_use]
pub fn addresses_needed(c: &Cluster) -> BTreeMap<String, u64> {
    let mut need: BTreeMap<String, u64> = BTreeMap::new();
    let CloudPlacement::Vsphere(v) = &c.cloud else {
        return need;
    };
    if v.ip_allocation != IpAllocation::Static {
        return need;
    }
    for pool in &c.node_pools {
        let n = pool.placements.len() as u64;
        if n == 0 {
            continue;
        }
        let size = u64::from(pool.size);
        for (i, placement) in pool.placements.iter().enumerate() {
            let share = size / n + u64::from((i as u64) < size % n);
            if let Some(ip_pool) = &placement.ip_pool {
                *need.entry(ip_pool.clone()).or_default() += share;
            }
        }
    }
    if let Some(vip_pool) = c
        .control_plane()
        .and_then(|cp| cp.placements.first())
        .and_then(|p| p.ip_pool.clone())
    {
        *need.entry(vip_pool).or_default() += 1;
    }
    for n in need.values_mut() {
        *n += 1;
    }
    need
}

/// The IP pool shortfalls of a cluster: `pools` are the pools it uses, each with the number of
/// addresses other clusters hold in it (what this cluster already holds is its own).
#[must_use]
pub fn ip_pool_shortfalls(c: &Cluster, pools: &[(IpPool, u64)]) -> Vec<Shortfall> {
    let need = addresses_needed(c);
    let mut out = Vec::new();
    for (name, needed) in need {
        let Some((pool, held_by_others)) = pools.iter().find(|(p, _)| p.name == name) else {
            continue;
        };
        let Some(range) = crate::ipam::PoolRange::of(pool) else {
            continue;
        };
        let usable = range.size.saturating_sub(range.reserved.len() as u64);
        let available = usable.saturating_sub(*held_by_others);
        if available < needed {
            out.push(Shortfall::new(
                format!("IP pool `{name}` (1 address per node + the VIP + 1 spare)"),
                needed,
                available,
                "addresses",
            ));
        }
    }
    out
}

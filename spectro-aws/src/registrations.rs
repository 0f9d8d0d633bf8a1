//! What this process knows of its clusters' load-balancer registrations, so that a listing
//! reads them from the cloud only when that knowledge is missing, stale or contradicted.
//!
//! Knowledge comes only from the cloud's answers: a DescribeLoadBalancers (the set read), a
//! CreateLoadBalancer (empty), a DeleteLoadBalancer or a "not found" (absent), and is then
//! kept up to date with this process's own successful register and deregister calls. It
//! serves for [`Registrations::recheck`] after its read; a listing whose live control-plane
//! nodes do not match it reads again. Observation stays by ownership (contract P14): this
//! only decides whether the repair needs a read, never what is listed, and a fresh process
//! simply reads.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use spectro_core::model::PoolRole;
use spectro_core::provider::{Machine, MachineState};
use tokio::time::Instant;

/// A load balancer as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    /// It does not exist (never created, or deleted by someone).
    Absent,
    /// This process deleted it.
    Deleted,
    /// It exists with these instances registered.
    Registered(BTreeSet<String>),
}

#[derive(Debug)]
struct Entry {
    seen: Seen,
    read_at: Instant,
}

/// The known registrations of every load balancer this process has read, by name.
#[derive(Debug)]
pub(crate) struct Registrations {
    entries: Mutex<HashMap<String, Entry>>,
    /// How long a read serves.
    pub(crate) recheck: Duration,
}

/// The control-plane nodes that should be registered (running) and those that may be
/// (running or booting).
pub(crate) fn wanted(machines: &[Machine]) -> (BTreeSet<String>, BTreeSet<String>) {
    let cp = || machines.iter().filter(|m| m.role == PoolRole::ControlPlane);
    let running = cp()
        .filter(|m| m.state == MachineState::Running)
        .map(|m| m.id.clone())
        .collect();
    let live = cp()
        .filter(|m| matches!(m.state, MachineState::Running | MachineState::Pending))
        .map(|m| m.id.clone())
        .collect();
    (running, live)
}

impl Registrations {
    /// Knowledge serving for `recheck` after each read.
    pub(crate) fn new(recheck: Duration) -> Self {
        Registrations {
            entries: Mutex::default(),
            recheck,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What `name` was seen as, if read within `recheck`.
    pub(crate) fn fresh(&self, name: &str) -> Option<Seen> {
        let now = spectro_core::clock::instant_now();
        self.lock()
            .get(name)
            .filter(|e| now.saturating_duration_since(e.read_at) <= self.recheck)
            .map(|e| e.seen.clone())
    }

    /// True when the fresh knowledge of `name` already matches `machines`: every running
    /// control-plane node registered, nothing registered that is not a live one.
    pub(crate) fn satisfied(&self, name: &str, machines: &[Machine]) -> bool {
        let (running, live) = wanted(machines);
        match self.fresh(name) {
            Some(Seen::Registered(set)) => running.is_subset(&set) && set.is_subset(&live),
            _ => false,
        }
    }

    /// `name` was read from the cloud (or created, or deleted) just now. Knowledge past its
    /// recheck is dropped on the way (the map holds what served lately, not every balancer
    /// a fleet listing ever saw).
    pub(crate) fn read(&self, name: &str, seen: Seen) {
        let read_at = spectro_core::clock::instant_now();
        let mut map = self.lock();
        if map.len() >= 1024 {
            map.retain(|_, e| read_at.saturating_duration_since(e.read_at) <= self.recheck);
        }
        map.insert(name.to_string(), Entry { seen, read_at });
    }

    /// This process registered `ids` with `name` (the read time is kept: others may have
    /// changed it since).
    pub(crate) fn registered(&self, name: &str, ids: &BTreeSet<String>) {
        if let Some(Entry {
            seen: Seen::Registered(set),
            ..
        }) = self.lock().get_mut(name)
        {
            set.extend(ids.iter().cloned());
        }
    }

    /// This process deregistered `ids` from `name`.
    pub(crate) fn deregistered(&self, name: &str, ids: &BTreeSet<String>) {
        if let Some(Entry {
            seen: Seen::Registered(set),
            ..
        }) = self.lock().get_mut(name)
        {
            set.retain(|i| !ids.contains(i));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(id: &str, state: MachineState) -> Machine {
        Machine {
            id: id.into(),
            name: format!("n-{id}"),
            pool: "master".into(),
            role: PoolRole::ControlPlane,
            zone: "us-east-1a".into(),
            shape: "s".into(),
            token: "t".into(),
            state,
            address: None,
            created_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn knowledge_serves_until_recheck_and_only_when_it_matches() {
        let r = Registrations::new(Duration::from_secs(60));
        let name = "spectro-abc";
        let a = cp("i-a", MachineState::Running);
        let b = cp("i-b", MachineState::Pending);
        // Nothing known: a read is needed.
        assert!(!r.satisfied(name, std::slice::from_ref(&a)));
        // Created empty, then this process registered i-a.
        r.read(name, Seen::Registered(BTreeSet::new()));
        assert!(!r.satisfied(name, std::slice::from_ref(&a)), "i-a missing");
        r.registered(name, &BTreeSet::from(["i-a".to_string()]));
        assert!(r.satisfied(name, std::slice::from_ref(&a)));
        // A booting node need not be registered yet.
        assert!(r.satisfied(name, &[a.clone(), b.clone()]));
        // A registered instance that is no longer live contradicts: read again.
        assert!(!r.satisfied(name, &[]));
        let mut gone = a.clone();
        gone.state = MachineState::Deleting;
        assert!(!r.satisfied(name, &[gone]));
        // Deregistered by this process: matches a cluster without control plane.
        r.deregistered(name, &BTreeSet::from(["i-a".to_string()]));
        assert!(r.satisfied(name, &[]));
        // Past the recheck the knowledge no longer serves.
        let stale = Registrations::new(Duration::from_millis(1));
        stale.read(name, Seen::Registered(BTreeSet::new()));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(stale.fresh(name), None);
        assert!(!stale.satisfied(name, &[]));
        // Absent (or deleted) is known, but never "satisfied".
        r.read(name, Seen::Absent);
        assert_eq!(r.fresh(name), Some(Seen::Absent));
        assert!(!r.satisfied(name, std::slice::from_ref(&a)));
        r.read(name, Seen::Deleted);
        assert!(!r.satisfied(name, &[]));
        r.read(name, Seen::Absent);
        // Registering with an absent or unknown balancer teaches nothing.
        r.registered(name, &BTreeSet::from(["i-a".to_string()]));
        assert_eq!(r.fresh(name), Some(Seen::Absent));
        r.registered("other", &BTreeSet::from(["i-a".to_string()]));
        assert_eq!(r.fresh("other"), None);
    }

    #[test]
    fn stale_knowledge_is_dropped_once_the_map_is_large() {
        let r = Registrations::new(Duration::from_millis(1));
        for i in 0..1024 {
            r.read(&format!("lb-{i}"), Seen::Absent);
        }
        std::thread::sleep(Duration::from_millis(5));
        r.read("fresh", Seen::Absent);
        assert_eq!(r.lock().len(), 1, "only the fresh entry is kept");
    }
}

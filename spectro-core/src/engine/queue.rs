//! The work queue: keyed by cluster, so one cluster is never reconciled twice at once.
//!
//! A cluster is in at most one of: ready, scheduled (with a due time), active. A trigger for
//! an active cluster marks it dirty: it is requeued at once when its reconcile ends, so a
//! change is never lost and never runs concurrently with the reconcile it interrupted (the
//! kube-runtime scheduler/runner pattern).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::provider::ClusterId;

#[derive(Default)]
struct State {
    ready: VecDeque<ClusterId>,
    in_ready: HashSet<ClusterId>,
    heap: BinaryHeap<Reverse<(Instant, u64, ClusterId)>>,
    due: HashMap<ClusterId, Instant>,
    active: HashSet<ClusterId>,
    dirty: HashSet<ClusterId>,
    seq: u64,
    closed: bool,
}

/// A keyed work queue with delayed requeues.
#[derive(Default)]
pub struct WorkQueue {
    state: Mutex<State>,
    notify: Notify,
}

impl std::fmt::Debug for WorkQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("WorkQueue")
            .field("ready", &st.ready.len())
            .field("scheduled", &st.due.len())
            .field("active", &st.active.len())
            .finish()
    }
}

impl WorkQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a cluster now (a change happened).
    pub fn add(&self, id: ClusterId) {
        let mut st = self.lock();
        if st.closed {
            return;
        }
        if st.active.contains(&id) {
            st.dirty.insert(id);
            return;
        }
        if st.in_ready.insert(id) {
            st.due.remove(&id);
            st.ready.push_back(id);
            drop(st);
            self.notify.notify_one();
        }
    }

    /// Queues a cluster after `delay` (unless it is already due sooner).
    pub fn add_after(&self, id: ClusterId, delay: Duration) {
        if delay.is_zero() {
            return self.add(id);
        }
        let mut st = self.lock();
        if st.closed || st.in_ready.contains(&id) {
            return;
        }
        if st.active.contains(&id) {
            st.dirty.insert(id);
            return;
        }
        let at = crate::clock::instant_now() + delay;
        if st.due.get(&id).is_some_and(|t| *t <= at) {
            return;
        }
        st.due.insert(id, at);
        st.seq += 1;
        let seq = st.seq;
        st.heap.push(Reverse((at, seq, id)));
        drop(st);
        self.notify.notify_one();
    }

    /// Waits for the next cluster to reconcile; `None` once closed.
    pub async fn next(&self) -> Option<ClusterId> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait_until = {
                let mut st = self.lock();
                if st.closed {
                    return None;
                }
                let now = crate::clock::instant_now();
                while let Some(Reverse((at, _, id))) = st.heap.peek().copied() {
                    if at > now {
                        break;
                    }
                    st.heap.pop();
                    if st.due.get(&id) == Some(&at) {
                        st.due.remove(&id);
                        if st.in_ready.insert(id) {
                            st.ready.push_back(id);
                        }
                    }
                }
                if let Some(id) = st.ready.pop_front() {
                    st.in_ready.remove(&id);
                    st.active.insert(id);
                    if !st.ready.is_empty() {
                        // Let another idle worker pick the rest.
                        self.notify.notify_one();
                    }
                    return Some(id);
                }
                st.heap.peek().map(|Reverse((at, _, _))| *at)
            };
            match wait_until {
                Some(at) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Ends a reconcile; requeues at once if it was triggered meanwhile, else after `requeue`.
    pub fn done(&self, id: ClusterId, requeue: Option<Duration>) {
        let dirty = {
            let mut st = self.lock();
            st.active.remove(&id);
            st.dirty.remove(&id)
        };
        if dirty {
            self.add(id);
        } else if let Some(d) = requeue {
            self.add_after(id, d);
        }
    }

    /// Drops a cluster from the schedule (it was deleted).
    pub fn forget(&self, id: ClusterId) {
        let mut st = self.lock();
        st.due.remove(&id);
        st.dirty.remove(&id);
    }

    /// Stops handing out work; waiting workers get `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
    }

    /// (ready, scheduled, active) counts.
    #[must_use]
    pub fn len(&self) -> (usize, usize, usize) {
        let st = self.lock();
        (st.ready.len(), st.due.len(), st.active.len())
    }

    /// True when nothing is queued or running.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn never_twice_at_once_and_dirty_requeues() {
        let q = WorkQueue::default();
        let a = ClusterId::new();
        q.add(a);
        q.add(a);
        assert_eq!(q.len(), (1, 0, 0));
        assert_eq!(q.next().await, Some(a));
        q.add(a); // while active: marked dirty, not queued
        assert_eq!(q.len(), (0, 0, 1));
        q.done(a, Some(Duration::from_secs(3600)));
        assert_eq!(q.len(), (1, 0, 0), "dirty cluster requeued at once");
        assert_eq!(q.next().await, Some(a));
        q.done(a, None);
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_and_earliest_wins() {
        let q = WorkQueue::default();
        let a = ClusterId::new();
        q.add_after(a, Duration::from_secs(10));
        q.add_after(a, Duration::from_secs(5));
        q.add_after(a, Duration::from_secs(20));
        let t0 = crate::clock::instant_now();
        assert_eq!(q.next().await, Some(a));
        assert_eq!(t0.elapsed(), Duration::from_secs(5));
        q.done(a, None);
        q.close();
        assert_eq!(q.next().await, None);
    }
}

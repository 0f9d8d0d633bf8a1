//! Request budgets: a client-side rate limit per cloud account and region, shared by every
//! cluster of that account (and, through the engine's replica share, by every engine
//! replica on one store), fair between clusters.
//!
//! Clouds throttle per account and region, not per cluster: EC2 refills about 20
//! non-mutating and 5 mutating requests per second per account and region, and launches 2
//! instances per second sustained. A limiter per cluster (as Cluster API's AWS provider
//! keeps) multiplies the real request rate by the number of clusters and turns throttling
//! into the normal answer. A [`RequestBudget`] is one token bucket per [`CallClass`] for one
//! account and region; a provider takes a permit before every request it sends, retries
//! included ([`RequestBudget::acquire`]), and reports a throttled answer
//! ([`RequestBudget::throttled`]) so that the whole account pauses for the cloud's
//! retry-after instead of every cluster finding out on its own.
//!
//! Fairness: permits of one class are granted in start-time fair queueing order keyed by
//! cluster (the [`CallScope`] the engine sets around every provider call): a cluster that
//! queues 300 launches does not make another cluster's single repair call wait behind them.
//!
//! Replicas: each engine passes its share of the account's budget in its [`CallScope`] (1
//! divided by the number of live replicas on its store); a budget grants at the configured
//! rate times the sum of the shares of the replicas that used it lately, so two replicas in
//! two processes each use half, and two replicas sharing one provider object in one process
//! use the whole.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::provider::ClusterId;

/// What a request costs the account: which bucket it draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum CallClass {
    /// Reads (`Describe*`, `List*`, `Get*`).
    Read,
    /// Everything that changes something.
    Mutate,
    /// Instances launched (EC2's RunInstances resource bucket): a launch of N instances
    /// costs N. Taken in addition to one `Mutate` permit.
    Instances,
}

impl CallClass {
    /// Every class, in lane order.
    pub const ALL: [CallClass; 3] = [CallClass::Read, CallClass::Mutate, CallClass::Instances];

    fn lane(self) -> usize {
        match self {
            CallClass::Read => 0,
            CallClass::Mutate => 1,
            CallClass::Instances => 2,
        }
    }

    /// `read`, `mutate`, `instances`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            CallClass::Read => "read",
            CallClass::Mutate => "mutate",
            CallClass::Instances => "instances",
        }
    }
}

/// Every request a provider sent to its cloud, by operation (`Service.Operation`, as the
/// provider names it). Retries and throttled attempts count (they hit the API too); a
/// request the account's budget held back does not. Shared by every client of a provider.
#[derive(Debug, Default)]
pub struct CallCounter {
    calls: Mutex<BTreeMap<String, u64>>,
}

impl CallCounter {
    /// Attempts per operation so far.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// All attempts so far.
    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }

    /// Attempts so far of the operations whose name starts with `prefix`.
    pub fn matching(&self, prefix: &str) -> u64 {
        self.snapshot()
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }

    /// Counts one attempt of `op`.
    pub fn count(&self, op: &str) {
        tracing::trace!(target: "spectro::calls", op, "cloud API call");
        *self
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(op.to_string())
            .or_default() += 1;
    }
}

/// A token bucket: `per_second` sustained, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Refill per second (> 0).
    pub per_second: f64,
    /// Bucket size (≥ 1): how many may go at once after a quiet period.
    pub burst: f64,
}

impl Rate {
    /// `per_second` sustained, `burst` at once.
    #[must_use]
    pub const fn new(per_second: f64, burst: f64) -> Self {
        Rate { per_second, burst }
    }

    fn sane(self) -> Self {
        Rate {
            per_second: if self.per_second.is_finite() && self.per_second > 0.0 {
                self.per_second
            } else {
                1.0
            },
            burst: if self.burst.is_finite() && self.burst >= 1.0 {
                self.burst
            } else {
                1.0
            },
        }
    }
}

/// The limits of one account and region (per service where the cloud throttles services
/// apart): one bucket per class; a class without a bucket is not limited.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Limits {
    /// Reads.
    pub read: Option<Rate>,
    /// Mutating calls.
    pub mutate: Option<Rate>,
    /// Instances launched.
    pub instances: Option<Rate>,
    /// How long the account pauses after a throttled answer that names no retry-after.
    pub throttle_pause: Duration,
    /// Longest wait for one permit (`None`, the default: as long as it takes, in fair order).
    /// A wait that would be longer gives up at once with [`OverBudget`]: the call fails as
    /// throttled and is retried later, losing its place in line. The engine already keeps
    /// one account's waiting reconciles from holding every worker
    /// (`EngineConfig::account_concurrency`).
    pub max_wait: Option<Duration>,
}

impl Limits {
    /// Reads and mutating calls limited, instances not.
    #[must_use]
    pub fn new(read: Rate, mutate: Rate) -> Self {
        Limits {
            read: Some(read),
            mutate: Some(mutate),
            instances: None,
            throttle_pause: Duration::from_secs(1),
            max_wait: None,
        }
    }

    /// Nothing limited (throttled answers still pause the account).
    #[must_use]
    pub fn unlimited() -> Self {
        Limits {
            read: None,
            mutate: None,
            instances: None,
            throttle_pause: Duration::from_secs(1),
            max_wait: None,
        }
    }

    /// Also limits instances launched.
    #[must_use]
    pub fn with_instances(mut self, rate: Rate) -> Self {
        self.instances = Some(rate);
        self
    }

    /// The longest wait for one permit (`None`: no limit).
    #[must_use]
    pub fn with_max_wait(mut self, max_wait: Option<Duration>) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// The pause after a throttled answer without retry-after.
    #[must_use]
    pub fn with_throttle_pause(mut self, pause: Duration) -> Self {
        self.throttle_pause = pause;
        self
    }

    /// EC2's published request-rate limits per account and region: non-mutating 20/s
    /// (bucket 100), mutating 5/s (bucket 200), RunInstances 2 instances/s (bucket 1,000).
    #[must_use]
    pub fn aws_ec2() -> Self {
        Limits::new(Rate::new(20.0, 100.0), Rate::new(5.0, 200.0))
            .with_instances(Rate::new(2.0, 1000.0))
    }

    /// Every rate multiplied by `factor` (a test's fast cloud, a raised quota).
    #[must_use]
    pub fn scaled(mut self, factor: f64) -> Self {
        for r in [&mut self.read, &mut self.mutate, &mut self.instances]
            .into_iter()
            .flatten()
        {
            r.per_second *= factor;
            r.burst *= factor;
        }
        self
    }

    /// The bucket of `class` (made sane: rate > 0, burst ≥ 1), if it is limited.
    #[must_use]
    pub fn rate_of(&self, class: CallClass) -> Option<Rate> {
        match class {
            CallClass::Read => self.read,
            CallClass::Mutate => self.mutate,
            CallClass::Instances => self.instances,
        }
        .map(Rate::sane)
    }
}

/// A permit not granted within the limits' `max_wait`: the caller gives its turn up (freeing
/// the engine's worker for clusters of other accounts) and comes back after `retry_after`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the account's request budget for {} calls is used up: next permit in about {retry_after:?}", class.as_str())]
pub struct OverBudget {
    /// The class whose bucket is empty.
    pub class: CallClass,
    /// When a permit is likely, at the sustained rate.
    pub retry_after: Duration,
}

/// Who is calling: set by the engine around every provider call ([`with_scope`]), read by a
/// provider's request path ([`current_scope`]).
#[derive(Debug, Clone)]
pub struct CallScope {
    /// The cluster the call is for (fairness key).
    pub cluster: Option<ClusterId>,
    /// The engine replica making the call.
    pub replica: Arc<str>,
    /// The replica's share of every account's budget (1 / live replicas), in (0, 1].
    pub share: f64,
}

tokio::task_local! {
    static SCOPE: CallScope;
}

/// Runs `fut` with `scope` as the [`current_scope`] of every request it makes.
pub async fn with_scope<F: Future>(scope: CallScope, fut: F) -> F::Output {
    SCOPE.scope(scope, fut).await
}

/// The scope set by [`with_scope`] around the running call, if any.
#[must_use]
pub fn current_scope() -> Option<CallScope> {
    SCOPE.try_with(Clone::clone).ok()
}

/// What a budget granted so far, per class.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassStats {
    /// Permits granted (requests).
    pub granted: u64,
    /// Units granted (instances for [`CallClass::Instances`], else requests).
    pub units: u64,
    /// Most units granted in any one-second window.
    pub peak_per_second: u64,
    /// Total time callers waited for permits.
    pub waited: Duration,
    /// Longest single wait.
    pub longest_wait: Duration,
}

/// A budget's statistics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BudgetStats {
    /// Per class (`read`, `mutate`, `instances`).
    pub classes: BTreeMap<&'static str, ClassStats>,
    /// Throttled answers reported.
    pub throttled: u64,
}

/// What a ticket may do now.
enum Turn {
    Granted,
    NotFirst,
    Until(Instant),
}

/// Tickets in fair-queueing order: (virtual start tag, arrival sequence).
type Ticket = (u64, u64);

#[derive(Debug)]
struct Lane {
    rate: Option<Rate>,
    tokens: f64,
    last: Instant,
    paused_until: Option<Instant>,
    /// Virtual time: the start tag of the last grant.
    vtime: u64,
    /// Per cluster: the virtual finish tag of its last queued request.
    finish: HashMap<Option<ClusterId>, u64>,
    queue: BTreeMap<Ticket, (u64, Arc<Notify>)>,
    seq: u64,
    window: VecDeque<(Instant, u64)>,
    window_units: u64,
    stats: ClassStats,
}

impl Lane {
    fn new(rate: Option<Rate>, now: Instant) -> Self {
        Lane {
            rate,
            tokens: rate.map_or(0.0, |r| r.burst),
            last: now,
            paused_until: None,
            vtime: 0,
            finish: HashMap::new(),
            queue: BTreeMap::new(),
            seq: 0,
            window: VecDeque::new(),
            window_units: 0,
            stats: ClassStats::default(),
        }
    }

    fn refill(&mut self, now: Instant, rate: Rate) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * rate.per_second).min(rate.burst);
        self.last = now;
    }

    fn record(&mut self, now: Instant, units: u64, waited: Duration) {
        self.stats.granted += 1;
        self.stats.units += units;
        self.stats.waited += waited;
        self.stats.longest_wait = self.stats.longest_wait.max(waited);
        self.window.push_back((now, units));
        self.window_units += units;
        while let Some(&(t, u)) = self.window.front() {
            if now.saturating_duration_since(t) >= Duration::from_secs(1) {
                self.window.pop_front();
                self.window_units -= u;
            } else {
                break;
            }
        }
        self.stats.peak_per_second = self.stats.peak_per_second.max(self.window_units);
    }

    /// Wakes whoever is first in line now.
    fn wake_head(&self) {
        if let Some((_, n)) = self.queue.values().next() {
            n.notify_one();
        }
    }
}

/// Leaves the queue when an acquire is dropped before its grant (a cancelled call).
struct Waiting<'a> {
    budget: &'a RequestBudget,
    lane: usize,
    key: Option<ClusterId>,
    ticket: Ticket,
    units: u64,
    granted: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.granted {
            return;
        }
        let mut lane = self.budget.lane(self.lane);
        let was_head = lane.queue.keys().next() == Some(&self.ticket);
        lane.queue.remove(&self.ticket);
        // The cluster's next request is not charged for this one.
        if lane.finish.get(&self.key) == Some(&(self.ticket.0 + self.units)) {
            lane.finish.insert(self.key, self.ticket.0);
        }
        if was_head {
            lane.wake_head();
        }
    }
}

/// One account's (and region's, and service's) request budget. See the module docs.
#[derive(Debug)]
pub struct RequestBudget {
    limits: Limits,
    lanes: [Mutex<Lane>; 3],
    shares: Mutex<HashMap<Arc<str>, (f64, Instant)>>,
    throttled: std::sync::atomic::AtomicU64,
}

/// How long a replica's share counts after its last call.
const SHARE_MEMORY: Duration = Duration::from_secs(60);

impl RequestBudget {
    /// A budget with `limits`, full buckets.
    #[must_use]
    pub fn new(limits: Limits) -> Self {
        let now = crate::clock::instant_now();
        let lane = |c: CallClass| Mutex::new(Lane::new(limits.rate_of(c), now));
        RequestBudget {
            lanes: [
                lane(CallClass::Read),
                lane(CallClass::Mutate),
                lane(CallClass::Instances),
            ],
            limits,
            shares: Mutex::default(),
            throttled: Default::default(),
        }
    }

    /// The configured limits.
    #[must_use]
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn lane(&self, i: usize) -> std::sync::MutexGuard<'_, Lane> {
        self.lanes[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The share of the configured rate this process may use: the sum of the shares of the
    /// replicas seen lately (1 without a scope).
    fn factor(&self, scope: Option<&CallScope>, now: Instant) -> f64 {
        let Some(scope) = scope else { return 1.0 };
        let mut shares = self.shares.lock().unwrap_or_else(|e| e.into_inner());
        let share = if scope.share.is_finite() && scope.share > 0.0 {
            scope.share.min(1.0)
        } else {
            1.0
        };
        shares.insert(scope.replica.clone(), (share, now));
        shares.retain(|_, (_, seen)| now.saturating_duration_since(*seen) < SHARE_MEMORY);
        shares
            .values()
            .map(|(s, _)| s)
            .sum::<f64>()
            .clamp(0.01, 1.0)
    }

    /// Waits for a permit of `class` costing `units` (≥ 1) for the calling cluster (the
    /// [`current_scope`]), in fair order between clusters. Returns at once for a class
    /// without a limit. Cancel-safe: dropping the future gives the place in line up.
    pub async fn acquire(&self, class: CallClass, units: u64) -> Result<(), OverBudget> {
        let units = units.max(1);
        let i = class.lane();
        let scope = current_scope();
        let started = crate::clock::instant_now();
        let factor = self.factor(scope.as_ref(), started);
        let key = scope.as_ref().and_then(|s| s.cluster);
        let (ticket, notify) = {
            let mut lane = self.lane(i);
            if lane.rate.is_none() && lane.paused_until.is_none_or(|p| p <= started) {
                lane.record(started, units, Duration::ZERO);
                return Ok(());
            }
            let start = (*lane.finish.get(&key).unwrap_or(&0)).max(lane.vtime);
            lane.finish.insert(key, start + units);
            lane.seq += 1;
            let ticket = (start, lane.seq);
            let notify = Arc::new(Notify::new());
            lane.queue.insert(ticket, (units, notify.clone()));
            (ticket, notify)
        };
        let mut waiting = Waiting {
            budget: self,
            lane: i,
            key,
            ticket,
            units,
            granted: false,
        };
        let deadline = self.limits.max_wait.map(|w| started + w);
        if let Some(max_wait) = self.limits.max_wait {
            // A line longer than the caller may wait: give up now rather than hold the
            // caller (an engine worker) for nothing.
            let lane = self.lane(i);
            if let Some(rate) = lane.rate {
                let per_second = rate.per_second * factor;
                let ahead: u64 = lane.queue.range(..ticket).map(|(_, (u, _))| *u).sum();
                let owed = (ahead + units) as f64
                    - lane.tokens.max(0.0)
                    - started.saturating_duration_since(lane.last).as_secs_f64() * per_second;
                let paused = lane
                    .paused_until
                    .map_or(0.0, |p| p.saturating_duration_since(started).as_secs_f64());
                let expected = (owed / per_second).max(paused);
                if expected > max_wait.as_secs_f64() {
                    drop(lane);
                    return Err(OverBudget {
                        class,
                        retry_after: Duration::from_secs_f64(expected.clamp(0.001, 3600.0)),
                    });
                }
            }
        }
        loop {
            let wake_at = {
                let mut lane = self.lane(i);
                let now = crate::clock::instant_now();
                match Self::try_grant(&mut lane, ticket, units, factor, now) {
                    Turn::Granted => {
                        let waited = now.saturating_duration_since(started);
                        lane.record(now, units, waited);
                        lane.wake_head();
                        waiting.granted = true;
                        return Ok(());
                    }
                    turn => {
                        if deadline.is_some_and(|d| now >= d) {
                            // Longer than the caller may wait: give the place up and say
                            // when to come back (the queue ahead at the sustained rate).
                            let ahead: u64 = lane
                                .queue
                                .range(..ticket)
                                .map(|(_, (u, _))| *u)
                                .sum::<u64>()
                                + units;
                            let per_second = lane.rate.map_or(1.0, |r| r.per_second * factor);
                            let mut retry_after = Duration::from_secs_f64(
                                (ahead as f64 / per_second).clamp(0.001, 3600.0),
                            );
                            if let Turn::Until(t) = turn {
                                retry_after = retry_after.max(t.saturating_duration_since(now));
                            }
                            return Err(OverBudget { class, retry_after });
                        }
                        match turn {
                            Turn::Until(t) => Some(deadline.map_or(t, |d| t.min(d))),
                            _ => deadline,
                        }
                    }
                }
            };
            match wake_at {
                Some(t) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(t) => {}
                        () = notify.notified() => {}
                    }
                }
                None => notify.notified().await,
            }
        }
    }

    /// Grants `ticket` if it is first in line and the bucket holds enough.
    fn try_grant(lane: &mut Lane, ticket: Ticket, units: u64, factor: f64, now: Instant) -> Turn {
        if lane.queue.keys().next() != Some(&ticket) {
            return Turn::NotFirst;
        }
        if let Some(p) = lane.paused_until {
            if p > now {
                return Turn::Until(p);
            }
            lane.paused_until = None;
        }
        if let Some(rate) = lane.rate {
            let rate = Rate {
                per_second: rate.per_second * factor,
                burst: (rate.burst * factor).max(1.0),
            };
            lane.refill(now, rate);
            // A request bigger than the bucket goes when the bucket is full, and leaves it
            // in debt.
            let need = (units as f64).min(rate.burst);
            if lane.tokens + 1e-9 < need {
                let secs = (need - lane.tokens) / rate.per_second;
                return Turn::Until(now + Duration::from_secs_f64(secs.clamp(0.0, 3600.0)));
            }
            lane.tokens -= units as f64;
        }
        lane.vtime = lane.vtime.max(ticket.0);
        lane.queue.remove(&ticket);
        let vtime = lane.vtime;
        if lane.finish.len() > 2 * lane.queue.len() + 64 {
            lane.finish.retain(|_, f| *f > vtime);
        }
        Turn::Granted
    }

    /// Reports a throttled answer: the class pauses for `retry_after` (or the limits'
    /// pause) and its bucket empties, for every cluster of the account.
    pub fn throttled(&self, class: CallClass, retry_after: Option<Duration>) {
        let now = crate::clock::instant_now();
        let until = now + retry_after.unwrap_or(self.limits.throttle_pause);
        self.throttled
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut lane = self.lane(class.lane());
        lane.paused_until = Some(lane.paused_until.map_or(until, |p| p.max(until)));
        lane.tokens = lane.tokens.min(0.0);
    }

    /// What was granted so far.
    #[must_use]
    pub fn stats(&self) -> BudgetStats {
        BudgetStats {
            classes: CallClass::ALL
                .iter()
                .map(|c| (c.as_str(), self.lane(c.lane()).stats.clone()))
                .collect(),
            throttled: self.throttled.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// The budgets of many accounts, created on first use: what a provider keeps, keyed by
/// account, region and service.
#[derive(Debug, Default)]
pub struct Budgets {
    map: Mutex<BTreeMap<String, Arc<RequestBudget>>>,
}

impl Budgets {
    /// No budget yet.
    #[must_use]
    pub fn new() -> Self {
        Budgets::default()
    }

    /// The budget under `key`, created with `limits()` the first time.
    pub fn get(&self, key: &str, limits: impl FnOnce() -> Limits) -> Arc<RequestBudget> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = map.get(key) {
            return b.clone();
        }
        let b = Arc::new(RequestBudget::new(limits()));
        map.insert(key.to_string(), b.clone());
        b
    }

    /// Every budget's statistics, by key.
    #[must_use]
    pub fn stats(&self) -> BTreeMap<String, BudgetStats> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, b)| (k.clone(), b.stats()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(cluster: ClusterId) -> CallScope {
        CallScope {
            cluster: Some(cluster),
            replica: "r".into(),
            share: 1.0,
        }
    }

    fn elapsed(t0: Instant) -> f64 {
        crate::clock::instant_now()
            .saturating_duration_since(t0)
            .as_secs_f64()
    }

    #[tokio::test(start_paused = true)]
    async fn grants_the_burst_then_the_sustained_rate() {
        let b = RequestBudget::new(Limits::new(Rate::new(10.0, 5.0), Rate::new(1.0, 1.0)));
        let t0 = crate::clock::instant_now();
        for _ in 0..25 {
            b.acquire(CallClass::Read, 1).await.unwrap();
        }
        let took = elapsed(t0);
        assert!(
            (1.95..2.1).contains(&took),
            "25 reads at 10/s after a burst of 5: {took}"
        );
        let s = &b.stats().classes["read"];
        assert_eq!(s.granted, 25);
        assert!(s.peak_per_second <= 5 + 10, "{s:?}");
        // Instances: unlimited here.
        b.acquire(CallClass::Instances, 500).await.unwrap();
        assert!(elapsed(t0) < 2.1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_big_launch_waits_for_a_full_bucket_and_leaves_it_in_debt() {
        let b = RequestBudget::new(
            Limits::new(Rate::new(10.0, 10.0), Rate::new(10.0, 10.0))
                .with_instances(Rate::new(2.0, 10.0))
                .with_max_wait(None),
        );
        let t0 = crate::clock::instant_now();
        b.acquire(CallClass::Instances, 30).await.unwrap(); // bucket full (10): goes, debt 20
        assert!(elapsed(t0) < 0.01);
        b.acquire(CallClass::Instances, 1).await.unwrap(); // waits until the debt is paid: 10.5 s
        assert!((10.4..10.7).contains(&elapsed(t0)), "{}", elapsed(t0));
    }

    #[tokio::test(start_paused = true)]
    async fn one_clusters_scale_up_does_not_starve_anothers_repair() {
        let b = Arc::new(RequestBudget::new(
            Limits::new(Rate::new(10.0, 1.0), Rate::new(10.0, 1.0)).with_max_wait(None),
        ));
        let big = ClusterId::new();
        let small = ClusterId::new();
        let t0 = crate::clock::instant_now();
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let b = b.clone();
            tasks.push(tokio::spawn(with_scope(scope(big), async move {
                b.acquire(CallClass::Mutate, 1).await.unwrap();
            })));
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        // 40 queued for `big`; `small` asks once and is served next, not after 40 × 100 ms.
        with_scope(scope(small), b.acquire(CallClass::Mutate, 1))
            .await
            .unwrap();
        let small_done = elapsed(t0);
        assert!(small_done < 0.45, "the repair waited {small_done} s");
        for t in tasks {
            t.await.unwrap();
        }
        assert!(elapsed(t0) > 3.9, "41 calls at 10/s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_answer_pauses_the_whole_account() {
        let b = RequestBudget::new(
            Limits::new(Rate::new(100.0, 100.0), Rate::new(1.0, 1.0)).with_max_wait(None),
        );
        b.acquire(CallClass::Read, 1).await.unwrap();
        let t0 = crate::clock::instant_now();
        b.throttled(CallClass::Read, Some(Duration::from_secs(2)));
        with_scope(scope(ClusterId::new()), b.acquire(CallClass::Read, 1))
            .await
            .unwrap();
        assert!(elapsed(t0) >= 2.0, "{}", elapsed(t0));
        assert_eq!(b.stats().throttled, 1);
        // Without a retry-after: the limits' pause.
        let t1 = crate::clock::instant_now();
        b.throttled(CallClass::Read, None);
        b.acquire(CallClass::Read, 1).await.unwrap();
        assert!(elapsed(t1) >= 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn replicas_split_the_rate_by_their_shares() {
        let limits = Limits::new(Rate::new(10.0, 1.0), Rate::new(10.0, 1.0)).with_max_wait(None);
        let half = |replica: &str| CallScope {
            cluster: None,
            replica: replica.into(),
            share: 0.5,
        };
        // One replica of two in this process: half the rate.
        let b = RequestBudget::new(limits.clone());
        let t0 = crate::clock::instant_now();
        with_scope(half("a"), async {
            for _ in 0..11 {
                b.acquire(CallClass::Read, 1).await.unwrap();
            }
        })
        .await;
        assert!((1.9..2.2).contains(&elapsed(t0)), "{}", elapsed(t0));
        // Both replicas in this process (one provider object): the whole rate.
        let b = RequestBudget::new(limits);
        with_scope(half("b"), b.acquire(CallClass::Read, 1))
            .await
            .unwrap();
        let t0 = crate::clock::instant_now();
        with_scope(half("a"), async {
            for _ in 0..10 {
                b.acquire(CallClass::Read, 1).await.unwrap();
            }
        })
        .await;
        assert!((0.9..1.1).contains(&elapsed(t0)), "{}", elapsed(t0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_wait_gives_its_place_up() {
        let b = Arc::new(RequestBudget::new(Limits::new(
            Rate::new(1.0, 1.0),
            Rate::new(1.0, 1.0),
        )));
        b.acquire(CallClass::Read, 1).await.unwrap(); // bucket empty now
        let first = {
            let b = b.clone();
            tokio::spawn(async move { b.acquire(CallClass::Read, 1).await.unwrap() })
        };
        tokio::task::yield_now().await;
        first.abort();
        let _ = first.await;
        let t0 = crate::clock::instant_now();
        b.acquire(CallClass::Read, 1).await.unwrap();
        assert!(elapsed(t0) <= 1.01, "{}", elapsed(t0));
        assert!(b.lane(0).queue.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_longer_than_allowed_gives_the_turn_up_with_a_retry_after() {
        let b = Arc::new(RequestBudget::new(
            Limits::new(Rate::new(1.0, 1.0), Rate::new(1.0, 1.0))
                .with_max_wait(Some(Duration::from_secs(1))),
        ));
        let a = ClusterId::new();
        b.acquire(CallClass::Mutate, 1).await.unwrap(); // the burst
        let mut queued = Vec::new();
        for _ in 0..4 {
            let b = b.clone();
            queued.push(tokio::spawn(with_scope(scope(a), async move {
                b.acquire(CallClass::Mutate, 1).await
            })));
            tokio::task::yield_now().await;
        }
        let results: Vec<_> = futures_util::future::join_all(queued)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        // The first in line is served within the second; the others give up and are told
        // how long the line ahead of them is at 1/s.
        assert!(results[0].is_ok(), "{results:?}");
        let over: Vec<&OverBudget> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(over.len(), 3, "{results:?}");
        assert!(over.iter().all(|o| o.class == CallClass::Mutate));
        assert!(
            over.iter()
                .all(|o| o.retry_after >= Duration::from_millis(500)),
            "{over:?}"
        );
        assert!(
            over[0].to_string().contains("mutate calls is used up"),
            "{}",
            over[0]
        );
        // Giving up left nothing behind: the next caller waits only for the bucket.
        assert!(b.lane(1).queue.is_empty());
        tokio::time::sleep(Duration::from_secs(1)).await;
        let t0 = crate::clock::instant_now();
        with_scope(scope(a), b.acquire(CallClass::Mutate, 1))
            .await
            .unwrap();
        assert!(elapsed(t0) < 0.01);
    }

    #[test]
    fn insane_rates_are_made_safe() {
        let l = Limits::new(Rate::new(f64::NAN, -3.0), Rate::new(0.0, 0.0));
        assert_eq!(l.rate_of(CallClass::Read), Some(Rate::new(1.0, 1.0)));
        assert_eq!(l.rate_of(CallClass::Mutate), Some(Rate::new(1.0, 1.0)));
        assert_eq!(l.rate_of(CallClass::Instances), None);
        let s = Limits::aws_ec2().scaled(2.0);
        assert_eq!(s.read, Some(Rate::new(40.0, 200.0)));
    }

    #[test]
    fn budgets_are_made_once_per_key() {
        let bs = Budgets::new();
        let a = bs.get("aws/a/us-east-1/ec2", Limits::aws_ec2);
        let again = bs.get("aws/a/us-east-1/ec2", Limits::unlimited);
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(again.limits(), &Limits::aws_ec2());
        assert_eq!(bs.stats().len(), 1);
    }
}

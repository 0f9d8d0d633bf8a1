//! The provider conformance kit (feature `test-util`): runs every rule of
//! [`crate::contract`] against a live [`CloudProvider`] and reports pass, fail or not
//! applicable per rule.
//!
//! A provider's test implements [`ProviderHarness`] (the provider, a fresh instance of it, a
//! cluster valid on its cloud, and hooks for what only that cloud's test can do) and calls
//! [`run`]; [`ConformanceReport::assert_conforms`] then fails the test listing every failed
//! rule. The kit drives the provider the way the engine does: it resolves the image, ensures
//! the infrastructure, creates batches with tokens, lists, deletes, and it retries
//! `Retryable` and `Throttled` answers as the engine would (so it also runs against a cloud
//! that injects faults and loses answers). It creates three clusters named `cf<run>`,
//! `cf<run>-b` and `cf<run>-c` with up to five machines, and deletes everything it created,
//! also after a failure.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use spectro_core::conformance::{run, ProviderHarness};
//! # async fn demo(harness: impl ProviderHarness) {
//! let report = run(&harness).await;
//! eprintln!("{report}");
//! report.assert_conforms();
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::contract::{Rule, CONTRACT_VERSION};
use crate::engine::planner::image_spec;
use crate::model::pack::ANNOTATION_IMAGE;
use crate::model::{CloudAccount, Credentials, PackLayer, PoolRole};
use crate::provider::{
    BootstrapRole, CloudProvider, CloudResource, ClusterContext, ImageRef, ImageSpec, InfraStatus,
    Machine, MachineBatch, MachineState, NodeNetwork, ProviderError, TAG_CLUSTER_ID,
    TAG_CLUSTER_NAME,
};

/// The user tag the kit adds to its clusters (checked by P10).
pub const USER_TAG: &str = "spectro-conformance";

/// What a provider's test supplies to the kit.
#[async_trait]
pub trait ProviderHarness: Send + Sync {
    /// A name for the report, e.g. `aws on moto`.
    fn name(&self) -> String;

    /// The provider under test.
    fn provider(&self) -> Arc<dyn CloudProvider>;

    /// A new instance of the provider sharing nothing with [`ProviderHarness::provider`] but
    /// the cloud (no caches, no sessions): what a restarted engine would build. `None` when
    /// the provider object is the cloud itself (an in-process cloud); P14 is then not
    /// applicable.
    fn fresh_provider(&self) -> Option<Arc<dyn CloudProvider>> {
        None
    }

    /// A context for a new cluster named `name` that is valid on this cloud: a fresh
    /// `cluster_id`, the spec (at least one worker pool; the kit creates machines in the first
    /// worker pool's first fault domain), its profile (with OS and Kubernetes packs), a
    /// working account, the VIP for static-IP clusters, and no image (the kit resolves it).
    fn cluster(&self, name: &str) -> ClusterContext;

    /// The static network of the `index`-th machine the kit creates (static-IP clouds);
    /// `None` for DHCP and public clouds.
    fn node_network(&self, _ctx: &ClusterContext, _index: usize) -> Option<NodeNetwork> {
        None
    }

    /// An account of this cloud whose credentials the cloud rejects (P3); `None` when the
    /// cloud under test accepts any credentials.
    fn rejected_account(&self) -> Option<CloudAccount> {
        None
    }

    /// An image id that does not exist in the cloud (P6, P18); `None` when the cloud accepts
    /// any image id.
    fn missing_image(&self) -> Option<String> {
        None
    }

    /// The tags (or the cloud's equivalent: labels, custom attributes) the cloud holds for
    /// one resource of a cluster, read behind the provider's back, with the cloud's keys
    /// translated to spectro's tag keys. Machines come as kind `machine` with the machine's
    /// id. `None`: this harness cannot read tags (P9 and P10 not applicable).
    async fn tags(
        &self,
        _ctx: &ClusterContext,
        _resource: &CloudResource,
    ) -> Option<Result<BTreeMap<String, String>, String>> {
        None
    }

    /// Rules that do not apply to this provider, with the reason (e.g. an in-process cloud
    /// without tags). They are not run.
    fn not_applicable(&self) -> Vec<(Rule, String)> {
        Vec::new()
    }

    /// Rules the provider is known to break, with the reason. A failure of one is reported as
    /// an expected failure; a pass as an unexpected pass, which fails
    /// [`ConformanceReport::assert_conforms`] so the list stays true.
    fn known_deviations(&self) -> Vec<(Rule, String)> {
        Vec::new()
    }

    /// How long the kit waits for the cloud to converge (infrastructure ready, a machine
    /// listed or gone) and for one call to answer.
    fn timeout(&self) -> Duration {
        Duration::from_secs(120)
    }

    /// The pause between two polls.
    fn poll_interval(&self) -> Duration {
        Duration::from_millis(100)
    }
}

/// The outcome of one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Every check of the rule held.
    Passed,
    /// A check failed (the message says which and what was seen).
    Failed(String),
    /// The rule does not apply, or the harness lacks the hook it needs (the reason).
    NotApplicable(String),
    /// A declared deviation failed, as declared.
    ExpectedFailure {
        /// Why the provider deviates (from the harness).
        reason: String,
        /// What the kit saw.
        observed: String,
    },
    /// A declared deviation passed: the declaration is out of date.
    UnexpectedPass {
        /// The declared reason.
        reason: String,
    },
}

impl Outcome {
    /// True for outcomes that fail the run (failed, unexpected pass).
    pub fn is_failure(&self) -> bool {
        matches!(self, Outcome::Failed(_) | Outcome::UnexpectedPass { .. })
    }

    fn label(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed(_) => "FAILED",
            Outcome::NotApplicable(_) => "n/a",
            Outcome::ExpectedFailure { .. } => "expected failure",
            Outcome::UnexpectedPass { .. } => "UNEXPECTED PASS",
        }
    }
}

/// One rule's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleResult {
    /// The rule.
    pub rule: Rule,
    /// What happened.
    pub outcome: Outcome,
}

/// Counts of a report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Rules passed.
    pub passed: usize,
    /// Rules failed (unexpected passes included).
    pub failed: usize,
    /// Rules not applicable.
    pub not_applicable: usize,
    /// Declared deviations that failed as declared.
    pub expected_failures: usize,
}

/// The result of [`run`].
#[derive(Debug, Clone)]
pub struct ConformanceReport {
    /// The harness's name.
    pub harness: String,
    /// The contract version checked.
    pub contract_version: &'static str,
    /// One result per rule, in table order.
    pub results: Vec<RuleResult>,
    /// Observations that are no rule's failure (retries made, cleanup trouble).
    pub notes: Vec<String>,
}

impl ConformanceReport {
    /// The outcome of a rule.
    pub fn outcome(&self, rule: Rule) -> Option<&Outcome> {
        self.results
            .iter()
            .find(|r| r.rule == rule)
            .map(|r| &r.outcome)
    }

    /// Passed / failed / not applicable / expected failures.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for r in &self.results {
            match &r.outcome {
                Outcome::Passed => c.passed += 1,
                Outcome::NotApplicable(_) => c.not_applicable += 1,
                Outcome::ExpectedFailure { .. } => c.expected_failures += 1,
                Outcome::Failed(_) | Outcome::UnexpectedPass { .. } => c.failed += 1,
            }
        }
        c
    }

    /// The results that fail the run.
    pub fn failures(&self) -> Vec<&RuleResult> {
        self.results
            .iter()
            .filter(|r| r.outcome.is_failure())
            .collect()
    }

    /// One line: `<harness>: contract 2.2.0: N passed, N failed, ...`.
    pub fn summary(&self) -> String {
        let c = self.counts();
        format!(
            "{}: contract {}: {} passed, {} failed, {} not applicable, {} expected failures",
            self.harness,
            self.contract_version,
            c.passed,
            c.failed,
            c.not_applicable,
            c.expected_failures
        )
    }

    /// Panics listing every failed rule (and the whole report) unless the provider conforms.
    #[track_caller]
    pub fn assert_conforms(&self) {
        let failures = self.failures();
        if failures.is_empty() {
            return;
        }
        let list: Vec<String> = failures
            .iter()
            .map(|r| {
                format!(
                    "  {} ({}: {}): {}",
                    r.rule,
                    r.rule.level(),
                    r.rule.summary(),
                    detail(&r.outcome)
                )
            })
            .collect();
        panic!(
            "{} does not conform to the provider contract {}: {} rule(s) failed:\n{}\n\n{self}",
            self.harness,
            self.contract_version,
            failures.len(),
            list.join("\n")
        );
    }
}

fn detail(o: &Outcome) -> String {
    match o {
        Outcome::Passed => String::new(),
        Outcome::Failed(m) | Outcome::NotApplicable(m) => m.clone(),
        Outcome::ExpectedFailure { reason, observed } => format!("{reason} (seen: {observed})"),
        Outcome::UnexpectedPass { reason } => {
            format!("declared as a known deviation ({reason}) but it passed")
        }
    }
}

impl fmt::Display for ConformanceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.summary())?;
        for r in &self.results {
            let d = detail(&r.outcome);
            writeln!(
                f,
                "  {:<4} {:<6} {:<16} {}{}",
                r.rule.id(),
                r.rule.level().as_str(),
                r.outcome.label(),
                r.rule.summary(),
                if d.is_empty() {
                    String::new()
                } else {
                    format!(" -- {d}")
                }
            )?;
        }
        for n in &self.notes {
            writeln!(f, "  note: {n}")?;
        }
        Ok(())
    }
}

/// Runs every rule against the harness's provider. Never panics on a provider's answer: what
/// goes wrong is a rule's failure in the report.
pub async fn run(h: &dyn ProviderHarness) -> ConformanceReport {
    let kit = Kit::new(h);
    let mut a = h.cluster(&format!("cf{}", kit.run));
    let mut b = h.cluster(&format!("cf{}-b", kit.run));
    let c = h.cluster(&format!("cf{}-c", kit.run));
    for ctx in [&mut a, &mut b] {
        ctx.spec.tags.insert(USER_TAG.into(), kit.run.clone());
    }
    // A blocked step leaves the rules after it unchecked; the report says so.
    let _ = kit.scenario(&mut a, &mut b, &c).await;
    kit.cleanup(&a).await;
    kit.cleanup(&b).await;
    kit.secrets_never_printed();
    kit.report()
}

/// Why a call produced no answer the kit could use.
#[derive(Debug)]
enum Failure {
    /// The provider's error (after retrying retryable ones).
    Cloud(ProviderError),
    /// No answer in time.
    Timeout(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Cloud(e) => write!(f, "{e}"),
            Failure::Timeout(m) => f.write_str(m),
        }
    }
}

fn retryable(e: &ProviderError) -> bool {
    matches!(
        e,
        ProviderError::Retryable { .. } | ProviderError::Throttled { .. }
    )
}

fn refused(e: &ProviderError) -> bool {
    matches!(
        e,
        ProviderError::Terminal { .. }
            | ProviderError::QuotaExceeded { .. }
            | ProviderError::Unauthorized { .. }
    )
}

fn secrets_of(a: &CloudAccount) -> Vec<String> {
    let s = match &a.credentials {
        Credentials::Aws(c) => c.secret_access_key.expose(),
        Credentials::Azure(c) => c.client_secret.expose(),
        Credentials::Gcp(c) => c.service_account_json.expose(),
        Credentials::Vsphere(c) => c.password.expose(),
    };
    // Short values would match ordinary words; they are not searched.
    if s.chars().count() >= 8 {
        vec![s.to_string()]
    } else {
        Vec::new()
    }
}

fn hex(n: usize) -> String {
    uuid::Uuid::new_v4().simple().to_string()[..n].to_string()
}

fn ids(ms: &[Machine]) -> BTreeSet<String> {
    ms.iter().map(|m| m.id.clone()).collect()
}

fn resource_set(i: &InfraStatus) -> BTreeSet<(String, String)> {
    i.resources
        .iter()
        .map(|r| (r.kind.clone(), r.id.clone()))
        .collect()
}

/// What a machine should look like, from its batch.
fn matches_batch(m: &Machine, b: &MachineBatch) -> Result<(), String> {
    let mut wrong = Vec::new();
    if !b.names.contains(&m.name) {
        wrong.push(format!("name {:?} is not one of {:?}", m.name, b.names));
    }
    for (what, got, want) in [
        ("pool", &m.pool, &b.pool.name),
        ("zone", &m.zone, &b.zone),
        ("shape", &m.shape, &b.shape),
        ("token", &m.token, &b.token),
    ] {
        if got != want {
            wrong.push(format!("{what} {got:?} (want {want:?})"));
        }
    }
    if m.role != b.pool.role {
        wrong.push(format!("role {:?} (want {:?})", m.role, b.pool.role));
    }
    if m.id.is_empty() {
        wrong.push("empty cloud id".into());
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "machine {} ({}): {}",
            m.name,
            m.id,
            wrong.join(", ")
        ))
    }
}

fn user_data_of(size: usize) -> Vec<u8> {
    let line = b"# padding up to the provider's user data limit\n";
    let mut out = b"#cloud-config\n".to_vec();
    while out.len() < size {
        let room = size - out.len();
        out.extend_from_slice(&line[..line.len().min(room)]);
    }
    out
}

/// Stops the scenario: a step later rules depend on failed (those rules are reported as not
/// checked).
struct Blocked;

type Step<T> = Result<T, Blocked>;

struct Kit<'a> {
    h: &'a dyn ProviderHarness,
    p: Arc<dyn CloudProvider>,
    fresh: Option<Arc<dyn CloudProvider>>,
    run: String,
    timeout: Duration,
    poll: Duration,
    /// Per rule checked: the failures seen.
    checked: Mutex<BTreeMap<Rule, Vec<String>>>,
    /// Rules not applicable, with the reason (declared by the harness, or a missing hook).
    not_applicable: Mutex<BTreeMap<Rule, String>>,
    /// Every error message met, for P4.
    errors: Mutex<Vec<String>>,
    secrets: Mutex<Vec<String>>,
    retries: Mutex<u64>,
    notes: Mutex<Vec<String>>,
    next_machine: Mutex<usize>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<'a> Kit<'a> {
    fn new(h: &'a dyn ProviderHarness) -> Self {
        Kit {
            h,
            p: h.provider(),
            fresh: h.fresh_provider(),
            run: hex(6),
            timeout: h.timeout(),
            poll: h.poll_interval(),
            checked: Mutex::default(),
            not_applicable: Mutex::new(h.not_applicable().into_iter().collect()),
            errors: Mutex::default(),
            secrets: Mutex::default(),
            retries: Mutex::default(),
            notes: Mutex::default(),
            next_machine: Mutex::default(),
        }
    }

    fn applies(&self, r: Rule) -> bool {
        !lock(&self.not_applicable).contains_key(&r)
    }

    /// Records one check of a rule.
    fn check(&self, r: Rule, result: Result<(), String>) {
        let mut c = lock(&self.checked);
        let e = c.entry(r).or_default();
        if let Err(m) = result {
            e.push(m);
        }
    }

    fn ok(&self, r: Rule) {
        self.check(r, Ok(()));
    }

    fn fail(&self, r: Rule, m: impl Into<String>) {
        self.check(r, Err(m.into()));
    }

    fn note(&self, m: impl Into<String>) {
        lock(&self.notes).push(m.into());
    }

    /// A rule that cannot be checked for lack of a hook: not applicable, with the harness's
    /// reason when it gave one.
    fn missing_hook(&self, r: Rule, hook: &str) {
        lock(&self.not_applicable)
            .entry(r)
            .or_insert_with(|| format!("the harness has no `{hook}` hook"));
    }

    /// One call, retried on `Retryable` and `Throttled` as the engine would, until the kit's
    /// timeout.
    async fn call<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let deadline = crate::clock::instant_now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(crate::clock::instant_now());
            let r = match tokio::time::timeout(left, f()).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(Failure::Timeout(format!(
                        "{what} did not answer within {:?}",
                        self.timeout
                    )))
                }
            };
            match r {
                Ok(v) => return Ok(v),
                Err(e) => {
                    lock(&self.errors).push(e.to_string());
                    if !retryable(&e) || crate::clock::instant_now() >= deadline {
                        return Err(Failure::Cloud(e));
                    }
                    *lock(&self.retries) += 1;
                    let wait = e.retry_after().unwrap_or(self.poll).min(self.timeout);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    fn report(&self) -> ConformanceReport {
        let checked = lock(&self.checked).clone();
        let na = lock(&self.not_applicable).clone();
        let deviations: BTreeMap<Rule, String> = self.h.known_deviations().into_iter().collect();
        let results = Rule::ALL
            .iter()
            .map(|&rule| {
                let seen = match (na.get(&rule), checked.get(&rule)) {
                    (Some(why), _) => Outcome::NotApplicable(why.clone()),
                    (None, Some(f)) if f.is_empty() => Outcome::Passed,
                    (None, Some(f)) => Outcome::Failed(f.join("; ")),
                    (None, None) => Outcome::Failed(
                        "not checked: a step it depends on failed (see the other failures)".into(),
                    ),
                };
                let outcome = match (seen, deviations.get(&rule)) {
                    (Outcome::Failed(observed), Some(reason)) => Outcome::ExpectedFailure {
                        reason: reason.clone(),
                        observed,
                    },
                    (Outcome::Passed, Some(reason)) => Outcome::UnexpectedPass {
                        reason: reason.clone(),
                    },
                    (o, _) => o,
                };
                RuleResult { rule, outcome }
            })
            .collect();
        let mut notes = lock(&self.notes).clone();
        let retries = *lock(&self.retries);
        if retries > 0 {
            notes.push(format!(
                "{retries} retryable or throttled answer(s) retried, as the engine would"
            ));
        }
        ConformanceReport {
            harness: self.h.name(),
            contract_version: CONTRACT_VERSION,
            results,
            notes,
        }
    }

    /// A batch of `n` machines in `ctx`: the first worker pool's first fault domain.
    fn batch(&self, ctx: &ClusterContext, image: &ImageRef, n: usize) -> Step<MachineBatch> {
        let Some(pool) = ctx
            .spec
            .node_pools
            .iter()
            .find(|p| p.role == PoolRole::Worker)
            .or_else(|| ctx.spec.node_pools.first())
            .cloned()
        else {
            self.fail(
                Rule::P12,
                format!("the harness's cluster {} has no node pool", ctx.spec.name),
            );
            return Err(Blocked);
        };
        let zone = pool.fault_domains().into_iter().next().unwrap_or_default();
        let names: Vec<String> = (0..n)
            .map(|_| format!("{}-{}-{}", ctx.spec.name, pool.name, hex(6)))
            .collect();
        let network: Vec<NodeNetwork> = {
            let mut next = lock(&self.next_machine);
            let nets: Vec<Option<NodeNetwork>> = (0..n)
                .map(|_| {
                    let i = *next;
                    *next += 1;
                    self.h.node_network(ctx, i)
                })
                .collect();
            nets.into_iter()
                .collect::<Option<Vec<_>>>()
                .unwrap_or_default()
        };
        Ok(MachineBatch {
            token: uuid::Uuid::new_v4().to_string(),
            bootstrap: if pool.role == PoolRole::ControlPlane {
                BootstrapRole::JoinControlPlane
            } else {
                BootstrapRole::JoinWorker
            },
            pool,
            zone,
            shape: format!("cf-shape-{}", self.run),
            image: image.clone(),
            names,
            user_data: b"#cloud-config\n# spectro provider conformance\n".to_vec(),
            network,
            first_attempt: true,
        })
    }

    async fn list(
        &self,
        p: &dyn CloudProvider,
        ctx: &ClusterContext,
    ) -> Result<Vec<Machine>, Failure> {
        self.call("list_machines", || p.list_machines(ctx)).await
    }

    /// Lists until `done` holds (a listing may lag), or the timeout.
    async fn list_until(
        &self,
        p: &dyn CloudProvider,
        ctx: &ClusterContext,
        done: impl Fn(&[Machine]) -> bool,
    ) -> Result<Vec<Machine>, String> {
        let deadline = crate::clock::instant_now() + self.timeout;
        loop {
            match self.list(p, ctx).await {
                Ok(ms) if done(&ms) => return Ok(ms),
                Ok(ms) if crate::clock::instant_now() >= deadline => {
                    return Err(format!(
                        "after {:?} the listing of {} still shows {:?}",
                        self.timeout,
                        ctx.spec.name,
                        ms.iter()
                            .map(|m| format!("{} ({}, {:?})", m.name, m.id, m.state))
                            .collect::<Vec<_>>()
                    ))
                }
                Ok(_) => tokio::time::sleep(self.poll).await,
                Err(e) => return Err(format!("list_machines failed: {e}")),
            }
        }
    }

    async fn create(
        &self,
        p: &dyn CloudProvider,
        ctx: &ClusterContext,
        infra: &InfraStatus,
        batch: &MachineBatch,
    ) -> Result<Vec<Machine>, Failure> {
        self.call("create_machines", || p.create_machines(ctx, infra, batch))
            .await
    }

    /// The answer of a create against its batch.
    fn check_created(&self, rule: Rule, batch: &MachineBatch, got: &[Machine]) {
        let mut names: Vec<&str> = got.iter().map(|m| m.name.as_str()).collect();
        names.sort_unstable();
        let mut want: Vec<&str> = batch.names.iter().map(String::as_str).collect();
        want.sort_unstable();
        if names != want {
            self.fail(
                rule,
                format!("create returned machines {names:?} for the batch {want:?}"),
            );
        }
        for m in got {
            self.check(rule, matches_batch(m, batch));
        }
        if ids(got).len() != got.len() {
            self.fail(rule, "create returned the same cloud id twice");
        }
        self.ok(rule);
    }

    /// Every step, in the order the engine takes them.
    async fn scenario(
        &self,
        a: &mut ClusterContext,
        b: &mut ClusterContext,
        c: &ClusterContext,
    ) -> Step<()> {
        let p = &*self.p;
        lock(&self.secrets).extend(secrets_of(&a.account));

        // P1: routing.
        let cloud = p.cloud();
        if cloud == a.spec.cloud_type() && cloud == a.account.cloud() {
            self.ok(Rule::P1);
        } else {
            self.fail(
                Rule::P1,
                format!(
                    "cloud() is {cloud}, the harness's cluster is on {} with a {} account",
                    a.spec.cloud_type(),
                    a.account.cloud()
                ),
            );
        }

        // P2, P3: the account check.
        match self
            .call("validate_account", || p.validate_account(&a.account))
            .await
        {
            Ok(()) => self.ok(Rule::P2),
            Err(e) => self.fail(Rule::P2, format!("the harness's account was refused: {e}")),
        }
        self.rejected_account().await;

        // P11, P23: a cluster that has nothing.
        match self.list(p, c).await {
            Ok(ms) if ms.is_empty() => self.ok(Rule::P11),
            Ok(ms) => self.fail(
                Rule::P11,
                format!("a cluster never created lists {} machine(s)", ms.len()),
            ),
            Err(e) => self.fail(Rule::P11, format!("list_machines failed: {e}")),
        }
        match self
            .call("delete_infrastructure", || p.delete_infrastructure(c))
            .await
        {
            Ok(d) if d.done && d.remaining.is_empty() => self.ok(Rule::P23),
            Ok(d) => self.fail(
                Rule::P23,
                format!(
                    "not done: {:?} remaining ({})",
                    d.remaining,
                    d.message.unwrap_or_default()
                ),
            ),
            Err(e) => self.fail(Rule::P23, format!("delete_infrastructure failed: {e}")),
        }

        // P5, P6: the image.
        let image = self.image(a).await?;
        a.image = Some(image.clone());
        b.image = Some(image.clone());
        self.missing_image(a).await;

        // P7, P21: the infrastructure of two clusters at once; P8, P14: again.
        let (ia, ib) = tokio::join!(self.converge(a), self.converge(b));
        let (ia, ib) = (ia?, ib?);
        self.infra_again(a, &ia).await;

        // P12, P21: a batch in each cluster at once.
        let a1 = self.batch(a, &image, 2)?;
        let b1 = self.batch(b, &image, 1)?;
        let (ra, rb) = tokio::join!(self.create(p, a, &ia, &a1), self.create(p, b, &ib, &b1));
        let (ma1, mb1) = match (ra, rb) {
            (Ok(x), Ok(y)) => (x, y),
            (ra, rb) => {
                for e in [ra.err(), rb.err()].into_iter().flatten() {
                    self.fail(Rule::P12, format!("create_machines failed: {e}"));
                }
                return Err(Blocked);
            }
        };
        self.check_created(Rule::P12, &a1, &ma1);
        self.check_created(Rule::P12, &b1, &mb1);

        // P13: the listing shows them as created; P14: so does a fresh instance.
        self.listed(a, &a1, &ma1).await?;
        self.listed(b, &b1, &mb1).await?;
        self.fresh_listing(a, &ma1).await;

        // P15: the same token again.
        self.same_token(a, &ia, &a1, &ma1).await;

        // P16: a new token in the same pool and zone.
        let a2 = self.batch(a, &image, 1)?;
        let ma2 = match self.create(p, a, &ia, &a2).await {
            Ok(m) => m,
            Err(e) => {
                self.fail(Rule::P16, format!("a second batch failed: {e}"));
                return Err(Blocked);
            }
        };
        self.check_created(Rule::P16, &a2, &ma2);
        if ma2.iter().any(|m| ids(&ma1).contains(&m.id)) {
            self.fail(
                Rule::P16,
                "the new token returned machines of the first batch",
            );
        }
        let want: BTreeSet<String> = ids(&ma1).union(&ids(&ma2)).cloned().collect();
        match self
            .list_until(p, a, |ms| {
                want.iter().all(|id| ms.iter().any(|m| &m.id == id))
            })
            .await
        {
            Ok(ms) => {
                let first = ms.iter().filter(|m| m.token == a1.token).count();
                if first != a1.names.len() {
                    self.fail(
                        Rule::P15,
                        format!(
                            "{first} machine(s) carry the first batch's token, {} were asked for",
                            a1.names.len()
                        ),
                    );
                }
                if ms.len() != want.len() {
                    self.fail(
                        Rule::P16,
                        format!("{} machine(s) listed, {} created", ms.len(), want.len()),
                    );
                }
            }
            Err(e) => self.fail(Rule::P16, e),
        }

        // P17: user data at the limit.
        let limit = p.user_data_limit().unwrap_or(16 * 1024);
        let mut a3 = self.batch(a, &image, 1)?;
        a3.user_data = user_data_of(limit);
        let ma3 = match self.create(p, a, &ia, &a3).await {
            Ok(m) => {
                self.check_created(Rule::P17, &a3, &m);
                m
            }
            Err(e) => {
                self.fail(
                    Rule::P17,
                    format!("{limit} bytes of user data were refused: {e}"),
                );
                Vec::new()
            }
        };

        // P18: a create the cloud refuses.
        let refused = self.refused_create(a, &ia, &image).await?;

        // P9, P10: ownership tags, read behind the provider's back.
        let all = match self
            .list_until(p, a, |ms| {
                ma3.iter().all(|x| ms.iter().any(|m| m.id == x.id))
            })
            .await
        {
            Ok(ms) => ms,
            Err(e) => {
                self.fail(Rule::P17, e);
                return Err(Blocked);
            }
        };
        self.tags(a, &ia, &all).await;

        // P21: neither listing shows the other's machines.
        self.isolated(a, b, &mb1).await;
        // P24: a fleet listing shows both as their own listings do.
        self.fleet_listing(a, b).await;

        // P19, P20: deletes.
        if let Some(v) = ma3.first().or(ma2.first()).cloned() {
            self.delete_one(a, &v, &ma1).await;
            let live: Vec<Machine> = ma2.iter().filter(|m| m.id != v.id).cloned().collect();
            self.delete_again(a, &v, &live).await;
        }
        if let Some(name) = refused {
            match self.list(p, a).await {
                Ok(ms) if ms.iter().any(|m| m.name == name) => self.fail(
                    Rule::P18,
                    format!("the refused create's machine {name} showed up later"),
                ),
                Ok(_) => {}
                Err(e) => self.fail(Rule::P18, format!("list_machines failed: {e}")),
            }
        }

        // P22: the whole cluster goes; P21: the other one stays as it was.
        self.delete_cluster(a).await?;
        self.untouched(a, b, &ib, &mb1).await;
        self.delete_cluster(b).await?;
        Ok(())
    }

    /// P3.
    async fn rejected_account(&self) {
        if !self.applies(Rule::P3) {
            return;
        }
        let Some(bad) = self.h.rejected_account() else {
            self.missing_hook(Rule::P3, "rejected_account");
            return;
        };
        lock(&self.secrets).extend(secrets_of(&bad));
        let p = &*self.p;
        match self
            .call("validate_account", || p.validate_account(&bad))
            .await
        {
            Err(Failure::Cloud(ProviderError::Unauthorized { .. })) => self.ok(Rule::P3),
            Err(e) => self.fail(
                Rule::P3,
                format!("rejected credentials gave another error than Unauthorized: {e}"),
            ),
            Ok(()) => self.fail(Rule::P3, "rejected credentials validated"),
        }
    }

    /// P5.
    async fn image(&self, a: &ClusterContext) -> Step<ImageRef> {
        let Some(spec) = image_spec(&a.profile) else {
            self.fail(
                Rule::P5,
                "the harness's profile has no OS and Kubernetes pack: no image to resolve",
            );
            return Err(Blocked);
        };
        let resolve = |p: Arc<dyn CloudProvider>| {
            let spec: &ImageSpec = &spec;
            async move { self.call("ensure_image", || p.ensure_image(a, spec)).await }
        };
        let first = match resolve(self.p.clone()).await {
            Ok(i) => i,
            Err(e) => {
                self.fail(Rule::P5, format!("ensure_image failed: {e}"));
                return Err(Blocked);
            }
        };
        let mut others = vec![("again", resolve(self.p.clone()).await)];
        if let Some(f) = &self.fresh {
            others.push(("from a fresh instance", resolve(f.clone()).await));
        }
        for (when, r) in others {
            match r {
                Ok(i) if i == first => {}
                Ok(i) => self.fail(Rule::P5, format!("resolved {when}: {i:?}, first {first:?}")),
                Err(e) => self.fail(Rule::P5, format!("ensure_image {when} failed: {e}")),
            }
        }
        self.ok(Rule::P5);
        Ok(first)
    }

    /// P6: an OS pack naming an image that does not exist.
    async fn missing_image(&self, a: &ClusterContext) {
        if !self.applies(Rule::P6) {
            return;
        }
        let Some(missing) = self.h.missing_image() else {
            self.missing_hook(Rule::P6, "missing_image");
            return;
        };
        let mut ctx = a.clone();
        for pack in ctx.profile.packs.iter_mut() {
            if pack.layer == PackLayer::Os {
                pack.annotations
                    .insert(ANNOTATION_IMAGE.into(), missing.clone());
            }
        }
        let Some(spec) = image_spec(&ctx.profile) else {
            self.fail(Rule::P6, "the harness's profile has no OS pack");
            return;
        };
        let p = &*self.p;
        match self
            .call("ensure_image", || p.ensure_image(&ctx, &spec))
            .await
        {
            Err(Failure::Cloud(ProviderError::Terminal { .. })) => self.ok(Rule::P6),
            Err(e) => self.fail(
                Rule::P6,
                format!("the missing image {missing} gave another error than Terminal: {e}"),
            ),
            Ok(i) => self.fail(
                Rule::P6,
                format!("the missing image {missing} resolved to {}", i.id),
            ),
        }
    }

    /// `ensure_infrastructure` until ready (P7).
    async fn converge(&self, ctx: &ClusterContext) -> Step<InfraStatus> {
        let p = &*self.p;
        let deadline = crate::clock::instant_now() + self.timeout;
        loop {
            match self
                .call("ensure_infrastructure", || p.ensure_infrastructure(ctx))
                .await
            {
                Ok(i) if i.ready => {
                    match i.endpoint.as_deref() {
                        Some(e) if !e.trim().is_empty() => self.ok(Rule::P7),
                        _ => self.fail(
                            Rule::P7,
                            format!("{}: ready without an endpoint", ctx.spec.name),
                        ),
                    }
                    return Ok(i);
                }
                Ok(i) if crate::clock::instant_now() >= deadline => {
                    self.fail(
                        Rule::P7,
                        format!(
                            "{}: not ready after {:?}: {}",
                            ctx.spec.name,
                            self.timeout,
                            i.message.unwrap_or_default()
                        ),
                    );
                    return Err(Blocked);
                }
                Ok(_) => tokio::time::sleep(self.poll).await,
                Err(e) => {
                    self.fail(
                        Rule::P7,
                        format!("{}: ensure_infrastructure failed: {e}", ctx.spec.name),
                    );
                    return Err(Blocked);
                }
            }
        }
    }

    /// P8 and P14: ready infrastructure ensured again, by this instance and a fresh one.
    async fn infra_again(&self, a: &ClusterContext, first: &InfraStatus) {
        let mut runs = vec![(Rule::P8, "again", self.p.clone())];
        match &self.fresh {
            Some(f) => runs.push((Rule::P14, "from a fresh instance", f.clone())),
            None => self.missing_hook(Rule::P14, "fresh_provider"),
        }
        for (rule, when, p) in runs {
            match self
                .call("ensure_infrastructure", || p.ensure_infrastructure(a))
                .await
            {
                Ok(i) => {
                    let mut wrong = Vec::new();
                    if !i.ready {
                        wrong.push(format!(
                            "not ready ({})",
                            i.message.clone().unwrap_or_default()
                        ));
                    }
                    if i.endpoint != first.endpoint {
                        wrong.push(format!(
                            "endpoint {:?}, first {:?}",
                            i.endpoint, first.endpoint
                        ));
                    }
                    let (now, was) = (resource_set(&i), resource_set(first));
                    if now != was {
                        wrong.push(format!(
                            "resources added {:?}, gone {:?}",
                            now.difference(&was).collect::<Vec<_>>(),
                            was.difference(&now).collect::<Vec<_>>()
                        ));
                    }
                    if wrong.is_empty() {
                        self.ok(rule);
                        self.ok(Rule::P8);
                    } else {
                        let m = format!("ensured {when}: {}", wrong.join(", "));
                        self.fail(rule, m.clone());
                        if rule != Rule::P8 {
                            self.fail(Rule::P8, m);
                        }
                    }
                }
                Err(e) => self.fail(rule, format!("ensure_infrastructure {when} failed: {e}")),
            }
        }
    }

    /// P13: the batch's machines listed as created.
    async fn listed(
        &self,
        ctx: &ClusterContext,
        batch: &MachineBatch,
        created: &[Machine],
    ) -> Step<Vec<Machine>> {
        let ms = match self
            .list_until(&*self.p, ctx, |ms| {
                batch.names.iter().all(|n| ms.iter().any(|m| &m.name == n))
            })
            .await
        {
            Ok(ms) => ms,
            Err(e) => {
                self.fail(Rule::P13, e);
                return Err(Blocked);
            }
        };
        for n in &batch.names {
            let same: Vec<&Machine> = ms.iter().filter(|m| &m.name == n).collect();
            if same.len() != 1 {
                self.fail(Rule::P13, format!("{n} is listed {} times", same.len()));
                continue;
            }
            let m = same[0];
            self.check(Rule::P13, matches_batch(m, batch));
            if let Some(c) = created.iter().find(|c| &c.name == n) {
                if c.id != m.id {
                    self.fail(
                        Rule::P13,
                        format!("{n}: listed with id {}, created with id {}", m.id, c.id),
                    );
                }
            }
            if !matches!(m.state, MachineState::Pending | MachineState::Running) {
                self.fail(Rule::P13, format!("{n}: listed as {:?}", m.state));
            }
        }
        // `deleting` changes what a listing repairs, never what it lists.
        let mut deleting = ctx.clone();
        deleting.deleting = true;
        match self.list(&*self.p, &deleting).await {
            Ok(d) => {
                let key = |ms: &[Machine]| -> BTreeSet<(String, String)> {
                    ms.iter().map(|m| (m.id.clone(), m.name.clone())).collect()
                };
                if key(&d) != key(&ms) {
                    self.fail(
                        Rule::P13,
                        format!(
                            "listed with `deleting`: {:?}, without: {:?}",
                            key(&d),
                            key(&ms)
                        ),
                    );
                }
            }
            Err(e) => self.fail(
                Rule::P13,
                format!("list_machines with `deleting` failed: {e}"),
            ),
        }
        self.ok(Rule::P13);
        Ok(ms)
    }

    /// P14: a fresh instance lists the same machines.
    async fn fresh_listing(&self, a: &ClusterContext, created: &[Machine]) {
        let Some(f) = &self.fresh else {
            self.missing_hook(Rule::P14, "fresh_provider");
            return;
        };
        match self
            .list_until(&**f, a, |ms| {
                created.iter().all(|c| ms.iter().any(|m| m.id == c.id))
            })
            .await
        {
            Ok(ms) => {
                for c in created {
                    if let Some(m) = ms.iter().find(|m| m.id == c.id) {
                        if m.name != c.name || m.token != c.token || m.shape != c.shape {
                            self.fail(
                                Rule::P14,
                                format!(
                                    "a fresh instance lists {} as {} (token {}, shape {})",
                                    c.id, m.name, m.token, m.shape
                                ),
                            );
                        }
                    }
                }
                self.ok(Rule::P14);
            }
            Err(e) => self.fail(Rule::P14, format!("a fresh instance: {e}")),
        }
    }

    /// P15: the same batch again, from this instance and a fresh one.
    async fn same_token(
        &self,
        a: &ClusterContext,
        infra: &InfraStatus,
        batch: &MachineBatch,
        first: &[Machine],
    ) {
        let mut runs = vec![("again", self.p.clone())];
        if let Some(f) = &self.fresh {
            runs.push(("from a fresh instance", f.clone()));
        }
        // A re-issue: the provider must look for what the first call made.
        let again = MachineBatch {
            first_attempt: false,
            ..batch.clone()
        };
        for (when, p) in runs {
            match self.create(&*p, a, infra, &again).await {
                Ok(ms) if ids(&ms) == ids(first) => {}
                Ok(ms) => self.fail(
                    Rule::P15,
                    format!(
                        "the same batch {when} returned {:?}, first {:?}",
                        ids(&ms),
                        ids(first)
                    ),
                ),
                Err(e) => self.fail(Rule::P15, format!("the same batch {when} failed: {e}")),
            }
        }
        match self.list(&*self.p, a).await {
            Ok(ms) => {
                let n = ms.iter().filter(|m| m.token == batch.token).count();
                if n != batch.names.len() {
                    self.fail(
                        Rule::P15,
                        format!(
                            "{n} machine(s) with the batch's token listed, {} asked for",
                            batch.names.len()
                        ),
                    );
                }
            }
            Err(e) => self.fail(Rule::P15, format!("list_machines failed: {e}")),
        }
        self.ok(Rule::P15);
    }

    /// P18: a batch whose image does not exist. The name of its machine, for a later look.
    async fn refused_create(
        &self,
        a: &ClusterContext,
        infra: &InfraStatus,
        image: &ImageRef,
    ) -> Step<Option<String>> {
        if !self.applies(Rule::P18) {
            return Ok(None);
        }
        let Some(missing) = self.h.missing_image() else {
            self.missing_hook(Rule::P18, "missing_image");
            return Ok(None);
        };
        let bad = ImageRef {
            id: missing.clone(),
            ..image.clone()
        };
        let batch = self.batch(a, &bad, 1)?;
        match self.create(&*self.p, a, infra, &batch).await {
            Err(Failure::Cloud(e)) if refused(&e) => {}
            Err(e) => self.fail(
                Rule::P18,
                format!(
                    "a create with the missing image {missing} failed with neither Terminal, QuotaExceeded nor Unauthorized: {e}"
                ),
            ),
            Ok(ms) => self.fail(
                Rule::P18,
                format!(
                    "a create with the missing image {missing} made {} machine(s)",
                    ms.len()
                ),
            ),
        }
        match self.list(&*self.p, a).await {
            Ok(ms) if ms.iter().any(|m| m.token == batch.token) => self.fail(
                Rule::P18,
                "a machine of the refused create is listed".to_string(),
            ),
            Ok(_) => {}
            Err(e) => self.fail(Rule::P18, format!("list_machines failed: {e}")),
        }
        self.ok(Rule::P18);
        Ok(batch.names.first().cloned())
    }

    /// P9, P10: tags of every resource of the cluster.
    async fn tags(&self, a: &ClusterContext, infra: &InfraStatus, machines: &[Machine]) {
        let resources: Vec<CloudResource> = infra
            .resources
            .iter()
            .cloned()
            .chain(machines.iter().map(|m| CloudResource {
                kind: "machine".into(),
                id: m.id.clone(),
            }))
            .collect();
        let id = a.cluster_id.to_string();
        let (mut no_id, mut no_name) = (Vec::new(), Vec::new());
        for r in &resources {
            let tags = match self.h.tags(a, r).await {
                None => {
                    self.missing_hook(Rule::P9, "tags");
                    self.missing_hook(Rule::P10, "tags");
                    return;
                }
                Some(Err(e)) => {
                    self.fail(
                        Rule::P9,
                        format!("cannot read the tags of {} {}: {e}", r.kind, r.id),
                    );
                    continue;
                }
                Some(Ok(t)) => t,
            };
            if tags.get(TAG_CLUSTER_ID) != Some(&id) {
                no_id.push(format!("{} {}", r.kind, r.id));
            }
            let mut missing: Vec<&str> = Vec::new();
            if tags.get(TAG_CLUSTER_NAME) != Some(&a.spec.name) {
                missing.push(TAG_CLUSTER_NAME);
            }
            for (k, v) in &a.spec.tags {
                if tags.get(k) != Some(v) {
                    missing.push(k);
                }
            }
            if !missing.is_empty() {
                no_name.push(format!("{} {} lacks {}", r.kind, r.id, missing.join(", ")));
            }
        }
        if !no_id.is_empty() {
            self.fail(
                Rule::P9,
                format!("without {TAG_CLUSTER_ID} = {id}: {}", no_id.join(", ")),
            );
        }
        if !no_name.is_empty() {
            self.fail(Rule::P10, no_name.join("; "));
        }
        self.ok(Rule::P9);
        self.ok(Rule::P10);
        self.note(format!(
            "P9/P10: tags of {} resource(s) read ({} machine(s))",
            resources.len(),
            machines.len()
        ));
    }

    /// P24: `list_fleet` of `a` shows `a` (and `b`, when they share a fleet) with exactly the
    /// machines their own listings show.
    async fn fleet_listing(&self, a: &ClusterContext, b: &ClusterContext) {
        let p = &*self.p;
        let fleet_a = p.fleet(a);
        let same = fleet_a.is_some() && fleet_a == p.fleet(b);
        let fleet = match self.call("list_fleet", || p.list_fleet(a)).await {
            Ok(f) => f,
            Err(e) => return self.fail(Rule::P24, format!("list_fleet failed: {e}")),
        };
        let mut checked = vec![a];
        if same {
            checked.push(b);
        }
        for c in checked {
            let own = match self.list(p, c).await {
                Ok(m) => m,
                Err(e) => return self.fail(Rule::P24, format!("list_machines failed: {e}")),
            };
            let named = |ms: &[Machine]| -> BTreeSet<(String, String)> {
                ms.iter().map(|m| (m.id.clone(), m.name.clone())).collect()
            };
            let in_fleet = fleet
                .get(&c.cluster_id)
                .map(|m| named(m))
                .unwrap_or_default();
            if in_fleet != named(&own) {
                return self.fail(
                    Rule::P24,
                    format!(
                        "the fleet listing shows {} with {in_fleet:?}, its own listing with {:?}",
                        c.spec.name,
                        named(&own)
                    ),
                );
            }
        }
        self.note(format!(
            "P24: fleet {}; {} cluster(s) in one listing",
            fleet_a.as_deref().unwrap_or("none (listed alone)"),
            fleet.len()
        ));
        self.ok(Rule::P24);
    }

    /// P21: neither listing shows the other cluster's machines.
    async fn isolated(&self, a: &ClusterContext, b: &ClusterContext, mb: &[Machine]) {
        let p = &*self.p;
        match (self.list(p, a).await, self.list(p, b).await) {
            (Ok(la), Ok(lb)) => {
                let theirs: Vec<&Machine> = la.iter().filter(|m| ids(mb).contains(&m.id)).collect();
                if !theirs.is_empty() {
                    self.fail(
                        Rule::P21,
                        format!(
                            "{} lists machines of {}: {:?}",
                            a.spec.name,
                            b.spec.name,
                            theirs.iter().map(|m| &m.name).collect::<Vec<_>>()
                        ),
                    );
                }
                let strangers: Vec<&Machine> =
                    lb.iter().filter(|m| !ids(mb).contains(&m.id)).collect();
                if !strangers.is_empty() {
                    self.fail(
                        Rule::P21,
                        format!(
                            "{} lists machines it never made: {:?}",
                            b.spec.name,
                            strangers.iter().map(|m| &m.name).collect::<Vec<_>>()
                        ),
                    );
                }
                self.ok(Rule::P21);
            }
            (ra, rb) => {
                for e in [ra.err(), rb.err()].into_iter().flatten() {
                    self.fail(Rule::P21, format!("list_machines failed: {e}"));
                }
            }
        }
    }

    /// P19: one machine deleted among several.
    async fn delete_one(&self, a: &ClusterContext, victim: &Machine, keep: &[Machine]) {
        let p = &*self.p;
        if let Err(e) = self
            .call("delete_machines", || {
                p.delete_machines(a, std::slice::from_ref(victim))
            })
            .await
        {
            self.fail(Rule::P19, format!("delete_machines failed: {e}"));
            return;
        }
        match self.list(p, a).await {
            Ok(ms) => {
                if let Some(m) = ms
                    .iter()
                    .find(|m| m.id == victim.id && m.state != MachineState::Deleting)
                {
                    self.fail(
                        Rule::P19,
                        format!("right after its delete, {} is listed {:?}", m.name, m.state),
                    );
                }
            }
            Err(e) => self.fail(Rule::P19, format!("list_machines failed: {e}")),
        }
        match self
            .list_until(p, a, |ms| !ms.iter().any(|m| m.id == victim.id))
            .await
        {
            Ok(ms) => {
                for k in keep {
                    match ms.iter().find(|m| m.id == k.id) {
                        Some(m) if m.state != MachineState::Deleting => {}
                        Some(m) => self.fail(
                            Rule::P19,
                            format!("deleting {} made {} {:?}", victim.name, m.name, m.state),
                        ),
                        None => self.fail(
                            Rule::P19,
                            format!("deleting {} took {} too", victim.name, k.name),
                        ),
                    }
                }
            }
            Err(e) => self.fail(Rule::P19, e),
        }
        self.ok(Rule::P19);
    }

    /// P20: a gone machine deleted again, alone, then with live ones.
    async fn delete_again(&self, a: &ClusterContext, gone: &Machine, live: &[Machine]) {
        let p = &*self.p;
        if let Err(e) = self
            .call("delete_machines", || {
                p.delete_machines(a, std::slice::from_ref(gone))
            })
            .await
        {
            self.fail(Rule::P20, format!("deleting a gone machine failed: {e}"));
        }
        if !live.is_empty() {
            let mix: Vec<Machine> = std::iter::once(gone.clone())
                .chain(live.iter().cloned())
                .collect();
            if let Err(e) = self
                .call("delete_machines", || p.delete_machines(a, &mix))
                .await
            {
                self.fail(
                    Rule::P20,
                    format!("deleting a gone machine with live ones failed: {e}"),
                );
            } else if let Err(e) = self
                .list_until(p, a, |ms| !ms.iter().any(|m| ids(live).contains(&m.id)))
                .await
            {
                self.fail(
                    Rule::P20,
                    format!("the live machines given with a gone one were not deleted: {e}"),
                );
            }
        }
        self.ok(Rule::P20);
    }

    /// P22: machines, then infrastructure, until done; then twice more.
    async fn delete_cluster(&self, ctx: &ClusterContext) -> Step<()> {
        let p = &*self.p;
        let ms = match self.list(p, ctx).await {
            Ok(ms) => ms,
            Err(e) => {
                self.fail(Rule::P22, format!("list_machines failed: {e}"));
                return Err(Blocked);
            }
        };
        if !ms.is_empty() {
            if let Err(e) = self
                .call("delete_machines", || p.delete_machines(ctx, &ms))
                .await
            {
                self.fail(Rule::P22, format!("delete_machines failed: {e}"));
                return Err(Blocked);
            }
        }
        if let Err(e) = self.list_until(p, ctx, |ms| ms.is_empty()).await {
            self.fail(Rule::P22, e);
            return Err(Blocked);
        }
        let deadline = crate::clock::instant_now() + self.timeout;
        loop {
            match self
                .call("delete_infrastructure", || p.delete_infrastructure(ctx))
                .await
            {
                Ok(d) if d.done => {
                    if !d.remaining.is_empty() {
                        self.fail(Rule::P22, format!("done, yet {:?} remaining", d.remaining));
                    }
                    break;
                }
                Ok(d) if crate::clock::instant_now() >= deadline => {
                    self.fail(
                        Rule::P22,
                        format!(
                            "{}: not done after {:?}: {:?} remaining ({})",
                            ctx.spec.name,
                            self.timeout,
                            d.remaining,
                            d.message.unwrap_or_default()
                        ),
                    );
                    return Err(Blocked);
                }
                Ok(_) => tokio::time::sleep(self.poll).await,
                Err(e) => {
                    self.fail(Rule::P22, format!("delete_infrastructure failed: {e}"));
                    return Err(Blocked);
                }
            }
        }
        match self.list(p, ctx).await {
            Ok(ms) if ms.is_empty() => {}
            Ok(ms) => self.fail(
                Rule::P22,
                format!(
                    "{} machine(s) listed after the infrastructure was deleted",
                    ms.len()
                ),
            ),
            Err(e) => self.fail(Rule::P22, format!("list_machines after delete failed: {e}")),
        }
        let mut again = vec![("again", self.p.clone())];
        if let Some(f) = &self.fresh {
            again.push(("from a fresh instance", f.clone()));
        }
        for (when, p) in again {
            match self
                .call("delete_infrastructure", || p.delete_infrastructure(ctx))
                .await
            {
                Ok(d) if d.done && d.remaining.is_empty() => {}
                Ok(d) => self.fail(
                    Rule::P22,
                    format!("deleted {when}: not done, {:?} remaining", d.remaining),
                ),
                Err(e) => self.fail(
                    Rule::P22,
                    format!("delete_infrastructure {when}, after done, failed: {e}"),
                ),
            }
        }
        self.ok(Rule::P22);
        Ok(())
    }

    /// P21: after the first cluster went, the second still has its machines and
    /// infrastructure.
    async fn untouched(
        &self,
        a: &ClusterContext,
        b: &ClusterContext,
        infra: &InfraStatus,
        machines: &[Machine],
    ) {
        let p = &*self.p;
        match self.list(p, b).await {
            Ok(ms) => {
                let live: BTreeSet<String> = ms
                    .iter()
                    .filter(|m| m.state != MachineState::Deleting)
                    .map(|m| m.id.clone())
                    .collect();
                if live != ids(machines) {
                    self.fail(
                        Rule::P21,
                        format!(
                            "after deleting {}, {} lists {live:?} (it has {:?})",
                            a.spec.name,
                            b.spec.name,
                            ids(machines)
                        ),
                    );
                }
            }
            Err(e) => self.fail(Rule::P21, format!("list_machines failed: {e}")),
        }
        match self
            .call("ensure_infrastructure", || p.ensure_infrastructure(b))
            .await
        {
            Ok(i) if i.ready && resource_set(&i) == resource_set(infra) => {}
            Ok(i) => self.fail(
                Rule::P21,
                format!(
                    "after deleting {}, the infrastructure of {} is {:?} (ready: {}), was {:?}",
                    a.spec.name, b.spec.name, i.resources, i.ready, infra.resources
                ),
            ),
            Err(e) => self.fail(Rule::P21, format!("ensure_infrastructure failed: {e}")),
        }
        self.ok(Rule::P21);
    }

    /// Deletes whatever of a cluster is left after a failed run (quietly when nothing is).
    async fn cleanup(&self, ctx: &ClusterContext) {
        let p = &*self.p;
        let ms = match self.list(p, ctx).await {
            Ok(ms) => ms,
            Err(e) => {
                self.note(format!("cleanup of {}: listing failed: {e}", ctx.spec.name));
                return;
            }
        };
        if !ms.is_empty() {
            if let Err(e) = self
                .call("delete_machines", || p.delete_machines(ctx, &ms))
                .await
            {
                self.note(format!("cleanup of {}: {e}", ctx.spec.name));
            }
            if let Err(e) = self.list_until(p, ctx, |ms| ms.is_empty()).await {
                self.note(format!("cleanup of {}: {e}", ctx.spec.name));
            }
        }
        let deadline = crate::clock::instant_now() + self.timeout;
        loop {
            match self
                .call("delete_infrastructure", || p.delete_infrastructure(ctx))
                .await
            {
                Ok(d) if d.done => return,
                Ok(d) if crate::clock::instant_now() >= deadline => {
                    self.note(format!(
                        "cleanup of {}: {:?} left",
                        ctx.spec.name, d.remaining
                    ));
                    return;
                }
                Ok(_) => tokio::time::sleep(self.poll).await,
                Err(e) => {
                    self.note(format!("cleanup of {}: {e}", ctx.spec.name));
                    return;
                }
            }
        }
    }

    /// P4: no secret in any error met.
    fn secrets_never_printed(&self) {
        if !self.applies(Rule::P4) {
            return;
        }
        let secrets = lock(&self.secrets).clone();
        let errors = lock(&self.errors).clone();
        if errors.is_empty() {
            lock(&self.not_applicable)
                .entry(Rule::P4)
                .or_insert_with(|| "no error was met".into());
            return;
        }
        if secrets.is_empty() {
            lock(&self.not_applicable)
                .entry(Rule::P4)
                .or_insert_with(|| {
                    "the harness's accounts have no secret of 8 characters or more".into()
                });
            return;
        }
        for e in &errors {
            if secrets.iter().any(|s| e.contains(s.as_str())) {
                self.fail(
                    Rule::P4,
                    "an error message contains a secret of the account",
                );
            }
        }
        self.ok(Rule::P4);
        self.note(format!(
            "P4: {} error message(s) searched for {} secret(s)",
            errors.len(),
            secrets.len()
        ));
    }
}

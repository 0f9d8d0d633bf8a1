//! The [`CloudProvider`](crate::provider::CloudProvider) contract, written down: the rules
//! every provider follows, what the engine relies on each for, and which check of the
//! conformance kit covers it.
//!
//! Contract version [`CONTRACT_VERSION`]. Versioning: a new SHOULD rule or a clarification is a
//! minor version; a new MUST rule, or a SHOULD that becomes a MUST, is a major version (a
//! provider that conformed may not any more). A provider states the version it was checked
//! against; the conformance kit reports the version it checks.
//!
//! The conformance kit (`spectro_core::conformance`, feature `test-util`) runs every rule
//! against a live provider: the test of a provider supplies a harness (the provider, a fresh
//! instance of it, a cluster valid on its cloud, and optional hooks for what only that cloud's
//! test can do, such as reading tags behind the provider's back), and gets a pass / fail / not
//! applicable per rule. It runs against the simulated cloud, AWS on moto and Azure on its ARM
//! fake behind Prism (a vSphere harness on vcsim is not merged yet), and every new provider
//! must run it too. A rule a provider knowingly breaks is declared by
//! its harness with the reason, and reported as an expected failure, never as a pass.
//!
//! # Rules
//!
//! MUST: the engine's correctness depends on it (duplicates, leaks, a cluster stuck forever).
//! SHOULD: users depend on it; a provider may deviate where its cloud cannot, and says why.
//!
//! | id | rule | level | the engine relies on it for | conformance check |
//! | --- | --- | --- | --- | --- |
//! | P1 | `cloud()` names the cloud of the clusters and accounts the provider serves. | MUST | routing: a cluster goes to the provider of `spec.cloud_type()`, an account check to the provider of `account.cloud()`. | `cloud()` equals the harness cluster's and account's cloud. |
//! | P2 | `validate_account` succeeds for a working account. | MUST | `Engine::verify_cloud_account`. | The harness's account validates. |
//! | P3 | `validate_account` returns `Unauthorized` for credentials the cloud rejects. | MUST | `verify_cloud_account` reports a rejected account as rejected, not as a transient error to retry. | The harness's rejected account (hook `rejected_account`). |
//! | P4 | Error messages never contain a secret of the account. | MUST | messages go into conditions, events and logs, which the application shows. | Every error the kit provokes or meets is searched for the accounts' secrets (8 characters or more). |
//! | P5 | `ensure_image` is idempotent: the same `ImageSpec` resolves to the same `ImageRef`, from any instance of the provider. | MUST | the image is resolved again after a restart and on every profile change; a different answer would repave every machine. | Twice, and from a fresh instance. |
//! | P6 | `ensure_image` of a named image that does not exist fails with `Terminal`. | SHOULD | the condition shows the cloud's message; retrying cannot help until the profile changes. | The harness's missing image named in the OS pack (hook `missing_image`). |
//! | P7 | `ensure_infrastructure` converges: repeated, it reports `ready` with a non-empty `endpoint`. | MUST | the planner creates machines only on ready infrastructure; bootstrap data needs the endpoint. | Repeated until ready within the harness's timeout, for two clusters at once. |
//! | P8 | `ensure_infrastructure` is idempotent: once ready, repeated (from a fresh instance too) it reports the same endpoint and the same resources, and creates nothing. | MUST | it runs again on every spec change and every infrastructure resync. | Resources compared as sets. |
//! | P9 | Every resource the provider creates (infrastructure and machines) carries [`TAG_CLUSTER_ID`] with the cluster's id, or the cloud's equivalent (label, custom attribute). | MUST | observation by ownership; delete finds everything of the cluster. | Tags read behind the provider's back (hook `tags`). |
//! | P10 | ...and [`TAG_CLUSTER_NAME`] with the cluster's name and every user tag of the spec. | SHOULD | users: cost allocation, finding a cluster's resources; the engine does not read them. | Tags read behind the provider's back (hook `tags`), with a user tag the kit adds. |
//! | P11 | `list_machines` of a cluster that has nothing yet is empty, not an error. | MUST | every reconcile of a cluster with recorded infrastructure or a create intent starts with a listing, the first one before any machine exists. | A cluster never created. |
//! | P12 | `create_machines` creates one machine per name of the batch and returns the machines it made, with the batch's name, pool, role, zone, shape and token. | MUST | created machines count at once, even when the listing lags. | The returned machines against the batch. |
//! | P13 | `list_machines` reports every live machine of the cluster (within the harness's timeout: a listing may lag), with the id the create returned and its name, pool, role, zone, shape and token; state `Pending` or `Running`; the same with `ClusterContext::deleting` (which may skip repairs, never change what is listed). | MUST | the planner's diff; an intent is resolved when its names are listed; outdated machines are found by shape and zone. | Polled until listed, then compared; listed again with `deleting`. |
//! | P14 | Observation is by ownership, never by memory: a fresh instance of the provider lists the same machines and finds the same infrastructure. | MUST | a restarted engine, or another replica, continues where the last one stopped. | A fresh instance (hook `fresh_provider`) lists and ensures. |
//! | P15 | `create_machines` is idempotent by `batch.token`, even where the cloud ignores client tokens: the same batch again (re-issued: `first_attempt` false), from the same or a fresh instance, returns the same machines and creates none; a batch whose `first_attempt` is true was never sent, so the provider may skip its lookup by token. | MUST | durable intent: after a crash or a lost answer the engine re-issues the create with the recorded token. | The batch repeated, from both instances; the listing counted. |
//! | P16 | A new token creates new machines, also in a pool and zone that already have machines. | MUST | scaling a pool is one more batch in the same pool and zone. | A second batch. |
//! | P17 | User data of `user_data_limit()` bytes is accepted (16 KiB when the provider states no limit). | MUST | the engine compresses user data to fit that limit and no further. | A machine with user data of exactly that size. |
//! | P18 | A create the cloud refuses outright fails with `Terminal`, `QuotaExceeded` or `Unauthorized`, and nothing of the batch exists afterwards. | MUST | on these variants the engine drops the intent: it will never re-issue that token. | A batch whose image does not exist (hook `missing_image`). |
//! | P19 | `delete_machines` deletes exactly the machines given: at once they are listed `Deleting` or not at all, within the timeout not at all; the cluster's other machines stay. | MUST | scale-down and replacement; the planner waits while machines are `Deleting`. | One machine deleted among several. |
//! | P20 | `delete_machines` of machines already gone succeeds, also mixed with live ones, which are deleted. | MUST | a delete whose answer was lost is repeated. | A deleted machine deleted again, then together with a live one. |
//! | P21 | Clusters are isolated: listing one never shows another's machines; deleting one's machines and infrastructure leaves the other's untouched; calls for different clusters may run concurrently. | MUST | one provider serves every cluster, and the engine reconciles clusters concurrently. | Two clusters built at the same time, the second named with the first's name as prefix; the first deleted. |
//! | P22 | `delete_infrastructure`, repeated until `done`, leaves nothing of the cluster: `done` with nothing `remaining`, an empty listing; repeated after that (from a fresh instance too) it is `done` again. | MUST | cluster delete and abort; a delete repeated after a crash. | Repeated until done, then twice more. |
//! | P23 | `delete_infrastructure` of a cluster that never had any infrastructure is `done` at once. | MUST | aborting a cluster before its infrastructure exists. | A cluster never created. |
//! | P24 | `list_fleet` shows every cluster of the fleet (`fleet()`) with exactly the machines `list_machines` shows for it, with the same side effects; a cluster it cannot show so (a create a crash interrupted, VMs outside the place its own listing reads) may be left out, and the engine lists it alone; clusters of another fleet (account, region, vCenter) never appear. Without a fleet (`fleet()` is `None`), it lists the cluster alone. | MUST | shared observation: a converged cluster's resync reads its machines from its fleet's listing. | Two clusters of one account: one fleet listing compared with each cluster's own. |
//!
//! # Errors: what each variant makes the engine do
//!
//! A provider returns the variant that says what should happen next; the engine's reaction is
//! fixed. Every variant shows on the milestone being worked on (condition `Failed` with the
//! variant's reason and the message) and as an event; then the cluster is reconciled again
//! later. The differences:
//!
//! | variant | return it when (must) | the engine then |
//! | --- | --- | --- |
//! | `Retryable` | the failure may pass by itself (network, 5xx, eventual consistency), and whenever a call may have taken effect without an answer. | warning event; exponential backoff with jitter (`EngineConfig::backoff_base` to `backoff_cap`); a failed create keeps its intent and is re-issued with the same token. |
//! | `Throttled { retry_after }` | the cloud throttled the call; `retry_after` is the cloud's hint, or the provider's default. | as `Retryable`, but waits at least `retry_after` (the backoff, kept between `retry_after` and twice it). |
//! | `QuotaExceeded` | a quota or capacity limit refused the call and nothing was created. | error event, backoff; a failed create drops its intent (nothing is in flight). Retried until the quota is raised or the spec shrinks. |
//! | `Unauthorized` | the credentials are wrong or expired, or a permission is missing, and nothing was created. | as `QuotaExceeded`; `verify_cloud_account` returns it to the caller. |
//! | `Terminal` | retrying the same request cannot succeed (bad image, unknown instance type, a placement that does not exist), and nothing was created. | as `QuotaExceeded`: retried with backoff, so a fix in the spec or in the cloud is picked up. |
//!
//! A `QuotaExceeded`, `Unauthorized` or `Terminal` answer to `create_machines` when part of
//! the batch may exist breaks P18: the engine forgets the token, so only the listing would
//! still find those machines. When in doubt, a provider answers `Retryable`.
//!
//! [`TAG_CLUSTER_ID`]: crate::provider::TAG_CLUSTER_ID
//! [`TAG_CLUSTER_NAME`]: crate::provider::TAG_CLUSTER_NAME

use std::fmt;

/// The version of the contract this crate's engine relies on and its conformance kit checks.
pub const CONTRACT_VERSION: &str = "2.2.0";

/// How binding a rule is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// The engine's correctness depends on it.
    Must,
    /// Users depend on it; a provider may deviate where its cloud cannot, and says why.
    Should,
}

impl Level {
    /// `MUST` or `SHOULD`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Must => "MUST",
            Level::Should => "SHOULD",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! rules {
    ($($id:ident, $level:ident, $summary:literal;)*) => {
        /// A rule of the contract, by its id in the table of [`crate::contract`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[non_exhaustive]
        pub enum Rule {
            $(
                #[doc = $summary]
                $id,
            )*
        }

        impl Rule {
            /// Every rule, in table order.
            pub const ALL: &'static [Rule] = &[$(Rule::$id),*];

            /// The rule's id, e.g. `P7`.
            pub fn id(self) -> &'static str {
                match self {
                    $(Rule::$id => stringify!($id),)*
                }
            }

            /// MUST or SHOULD.
            pub fn level(self) -> Level {
                match self {
                    $(Rule::$id => Level::$level,)*
                }
            }

            /// The rule in one line (the table says more).
            pub fn summary(self) -> &'static str {
                match self {
                    $(Rule::$id => $summary,)*
                }
            }
        }
    };
}

rules! {
    P1, Must, "`cloud()` names the cloud of the clusters and accounts it serves.";
    P2, Must, "`validate_account` succeeds for a working account.";
    P3, Must, "`validate_account` returns `Unauthorized` for rejected credentials.";
    P4, Must, "Error messages never contain a secret of the account.";
    P5, Must, "`ensure_image` is idempotent, from any instance.";
    P6, Should, "`ensure_image` of a named image that does not exist is `Terminal`.";
    P7, Must, "`ensure_infrastructure` converges to `ready` with an endpoint.";
    P8, Must, "`ensure_infrastructure` is idempotent: same endpoint and resources, nothing new.";
    P9, Must, "Every created resource carries the cluster-id ownership tag.";
    P10, Should, "Every created resource carries the cluster-name tag and the user tags.";
    P11, Must, "`list_machines` of a cluster with nothing is empty, not an error.";
    P12, Must, "`create_machines` returns the machines it made, as the batch describes them.";
    P13, Must, "`list_machines` reports every live machine with its id, name, pool, role, zone, shape, token.";
    P14, Must, "Observation is by ownership: a fresh instance finds the same machines and infrastructure.";
    P15, Must, "`create_machines` is idempotent by token, even where the cloud ignores client tokens.";
    P16, Must, "A new token creates new machines in the same pool and zone.";
    P17, Must, "User data of `user_data_limit()` bytes is accepted.";
    P18, Must, "A refused create is `Terminal`/`QuotaExceeded`/`Unauthorized` and leaves nothing.";
    P19, Must, "`delete_machines` deletes exactly the machines given.";
    P20, Must, "`delete_machines` of machines already gone succeeds.";
    P21, Must, "Clusters are isolated, and calls for different clusters may run concurrently.";
    P22, Must, "`delete_infrastructure` until done leaves nothing; repeated after done it is done.";
    P23, Must, "`delete_infrastructure` of a cluster without infrastructure is done at once.";
    P24, Must, "`list_fleet` shows each cluster of the fleet as `list_machines` does.";
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table in the module docs and [`Rule`] say the same: every id once, in order, with
    /// its level.
    #[test]
    fn the_documented_table_matches_the_rules() {
        let source = include_str!("contract.rs");
        let rows: Vec<(String, String)> = source
            .lines()
            .filter_map(|l| l.strip_prefix("//! | P"))
            .map(|row| {
                let cells: Vec<&str> = row.split(" | ").collect();
                (format!("P{}", cells[0].trim()), cells[2].trim().to_string())
            })
            .collect();
        let rules: Vec<(String, String)> = Rule::ALL
            .iter()
            .map(|r| (r.id().to_string(), r.level().to_string()))
            .collect();
        assert_eq!(rows, rules);
        assert!(CONTRACT_VERSION.split('.').count() == 3);
    }
}

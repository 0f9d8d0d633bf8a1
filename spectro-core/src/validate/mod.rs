//! Validation: every rule of the reference doc, reported all at once, each violation with a
//! field path (`nodePools[0].size`) and a plain rule. Total over any input: never panics.
//!
//! A [`Catalog`] holds the objects a cluster refers to: lenient (the default) it checks only the
//! references it can resolve, as for loose files; `strict` (what the engine uses) also reports
//! references to objects it lacks.
//!
//! ```
//! use spectro_core::model::document::{from_text, Format};
//! use spectro_core::model::Cluster;
//! use spectro_core::validate::{validate_cluster, Catalog};
//!
//! let cluster: Cluster = from_text(
//!     r#"
//! name: demo
//! profile: { name: base, version: 1.0.0 }
//! cloudAccount: aws-dev
//! cloud: { aws: { region: us-east-1 } }
//! nodePools:
//!   - { name: cp, role: controlPlane, size: 2, instanceType: m5.large, availabilityZones: [us-east-1a] }
//!   - { name: workers, role: worker, size: 3, instanceType: m5.large, availabilityZones: [eu-west-1a] }
//! "#,
//!     Format::Yaml,
//! )
//! .expect("the spec parses");
//!
//! let violations = validate_cluster(&cluster, &Catalog::default());
//! let paths: Vec<&str> = violations.iter().map(|v| v.path.as_str()).collect();
//! assert_eq!(paths, ["nodePools[0].size", "nodePools[1].availabilityZones[0]"]);
//! for v in &violations {
//!     println!("{v}"); // nodePools[0].size: control-plane pool size must be 1, 3 or 5, got 2
//! }
//!
//! // Strict: the profile and the account must exist too.
//! let strict = Catalog { strict: true, ..Catalog::default() };
//! let paths: Vec<String> = validate_cluster(&cluster, &strict).into_iter().map(|v| v.path).collect();
//! assert!(paths.contains(&"profile".to_string()) && paths.contains(&"cloudAccount".to_string()));
//! ```

mod account;
mod cluster;
mod gateway;
mod ip_pool;
mod profile;
pub mod rules;

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::{CloudAccount, Cluster, ClusterProfile, Document, IpPool, PrivateCloudGateway};

pub use account::validate_cloud_account;
pub use cluster::{validate_cluster, validate_cluster_update};
pub use gateway::{validate_gateway, validate_gateway_update};
pub use ip_pool::{validate_ip_pool, validate_ip_pool_update};
pub use profile::{parse_k8s_version, validate_profile};

/// One broken rule: where (a field path) and what (a plain sentence).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct Violation {
    /// Field path, e.g. `nodePools[0].size`; empty for the whole object.
    pub path: String,
    /// The rule, e.g. `control-plane pool size must be 1, 3 or 5`.
    pub rule: String,
}

impl Violation {
    /// A violation at `path`.
    pub fn new(path: impl Into<String>, rule: impl Into<String>) -> Self {
        Violation {
            path: path.into(),
            rule: rule.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.rule)
        } else {
            write!(f, "{}: {}", self.path, self.rule)
        }
    }
}

impl std::error::Error for Violation {}

/// Collects violations under a path prefix.
#[derive(Debug, Default)]
pub struct Report {
    violations: Vec<Violation>,
}

impl Report {
    /// Records a violation.
    pub fn add(&mut self, path: impl Into<String>, rule: impl Into<String>) {
        self.violations.push(Violation::new(path, rule));
    }

    /// Records a violation when `ok` is false.
    pub fn check(&mut self, ok: bool, path: impl Into<String>, rule: impl Into<String>) {
        if !ok {
            self.add(path, rule);
        }
    }

    /// The violations found.
    #[must_use]
    pub fn into_violations(self) -> Vec<Violation> {
        self.violations
    }
}

/// `base.field` (or `field` at the root).
#[must_use]
pub fn field(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}.{name}")
    }
}

/// `base[i]`.
#[must_use]
pub fn index(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

/// `base.map[key]`-style path for a map entry.
#[must_use]
pub fn key(base: &str, k: &str) -> String {
    format!("{base}[{k}]")
}

/// The objects a cluster refers to, for cross-object rules.
///
/// With `strict` set, a reference to an object the catalog lacks is a violation (the engine
/// uses that); without it (validating loose files), unknown references are not checked.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    /// Profiles by (name, version).
    pub profiles: BTreeMap<(String, String), ClusterProfile>,
    /// Cloud accounts by name.
    pub accounts: BTreeMap<String, CloudAccount>,
    /// IP pools by name.
    pub ip_pools: BTreeMap<String, IpPool>,
    /// Gateways by name.
    pub gateways: BTreeMap<String, PrivateCloudGateway>,
    /// Report references to objects the catalog lacks.
    pub strict: bool,
}

impl Catalog {
    /// Adds a document's object to the catalog (clusters are not catalogued).
    pub fn insert(&mut self, doc: &Document) {
        match doc {
            Document::ClusterProfile(p) => {
                self.profiles
                    .insert((p.name.clone(), p.version.clone()), p.clone());
            }
            Document::CloudAccount(a) => {
                self.accounts.insert(a.name.clone(), a.clone());
            }
            Document::IpPool(p) => {
                self.ip_pools.insert(p.name.clone(), p.clone());
            }
            Document::PrivateCloudGateway(g) => {
                self.gateways.insert(g.name.clone(), g.clone());
            }
            Document::Cluster(_) => {}
        }
    }

    /// The profile a cluster refers to.
    #[must_use]
    pub fn profile(&self, name: &str, version: &str) -> Option<&ClusterProfile> {
        self.profiles.get(&(name.to_string(), version.to_string()))
    }
}

/// Validates any document against the catalog.
#[must_use]
pub fn validate_document(doc: &Document, catalog: &Catalog) -> Vec<Violation> {
    match doc {
        Document::ClusterProfile(p) => validate_profile(p),
        Document::Cluster(c) => validate_cluster(c, catalog),
        Document::IpPool(p) => validate_ip_pool(p),
        Document::CloudAccount(a) => validate_cloud_account(a),
        Document::PrivateCloudGateway(g) => validate_gateway(g),
    }
}

/// Fails with every violation when there is any.
pub fn into_result(violations: Vec<Violation>) -> Result<(), Vec<Violation>> {
    if violations.is_empty() {
        Ok(())
    } else {
        Err(violations)
    }
}

/// Convenience: validate a cluster's update as a whole (new spec + transition rules).
#[must_use]
pub fn validate_cluster_change(old: &Cluster, new: &Cluster, catalog: &Catalog) -> Vec<Violation> {
    let mut v = validate_cluster(new, catalog);
    v.extend(validate_cluster_update(old, new));
    v
}

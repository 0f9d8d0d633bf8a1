//! Deterministic resource names and GCP labels.
//!
//! Every resource of a cluster is named from the cluster id (`spectro-<12 hex>-...`): a
//! network, subnetwork, router, firewall rule, health check, backend service, proxy or
//! instance group takes no labels, so its name is its ownership, and an insert repeated after
//! a crash meets the resource the first one made (`alreadyExists`) instead of making a second.
//! Instances are named after the machine when the machine's name is a valid Compute Engine
//! name (it becomes the node's host name), else `<prefix>-<hash of the name>`.
//!
//! Labels (instances, the global address, the forwarding rule) carry spectro's ownership
//! keys written as GCP allows (`[a-z][a-z0-9_-]{0,62}`): `spectro.io/cluster-id` →
//! `spectro-io_cluster-id`; values are lowercased with other characters as `_`, at most 63.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use spectro_core::model::{CloudPlacement, GcpPlacement};
use spectro_core::provider::{ClusterContext, ClusterId, TAG_CLUSTER_ID, TAG_CLUSTER_NAME};

use crate::error::GcpError;

/// The longest resource name Compute Engine accepts.
pub const NAME_MAX: usize = 63;

/// The GCP placement of a cluster.
pub fn placement(ctx: &ClusterContext) -> Result<&GcpPlacement, GcpError> {
    match &ctx.spec.cloud {
        CloudPlacement::Gcp(g) => Ok(g),
        _ => Err(GcpError::invalid("cloud", "is not a GCP placement")),
    }
}

/// True for a valid Compute Engine resource name (RFC 1035: `[a-z]([-a-z0-9]*[a-z0-9])?`,
/// at most 63 characters).
#[must_use]
pub fn is_resource_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= NAME_MAX
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// The label key for a tag key: lowercase, `[a-z0-9_-]` (others as `_`; `.` as `-`), starting
/// with a letter, at most 63 characters.
#[must_use]
pub fn label_key(key: &str) -> String {
    let mut out: String = key
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            '.' => '-',
            _ => '_',
        })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_lowercase()) {
        out.insert_str(0, "k-");
    }
    out.truncate(NAME_MAX);
    out
}

/// The label value for a tag value: lowercase, `[a-z0-9_-]` (others as `_`), at most 63.
#[must_use]
pub fn label_value(value: &str) -> String {
    let mut out: String = value
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .collect();
    out.truncate(NAME_MAX);
    out
}

/// The label key of the cluster id (what every listing filters on).
#[must_use]
pub fn cluster_label() -> String {
    label_key(TAG_CLUSTER_ID)
}

/// Labels for a cluster's resources: the user's tags and ownership, as GCP labels.
#[must_use]
pub fn labels(ctx: &ClusterContext, role: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = ctx
        .spec
        .tags
        .iter()
        .map(|(k, v)| (label_key(k), label_value(v)))
        .collect();
    out.insert(label_key(TAG_CLUSTER_ID), ctx.cluster_id.to_string());
    out.insert(label_key(TAG_CLUSTER_NAME), label_value(&ctx.spec.name));
    out.insert(label_key(spectro_core::provider::TAG_ROLE), role.into());
    out
}

/// The name prefix of a cluster's resources: `spectro-<12 hex of the cluster id>`.
#[must_use]
pub fn prefix_of(id: &ClusterId) -> String {
    let hex: String = id
        .to_string()
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(12)
        .collect();
    format!("spectro-{hex}")
}

/// 16 hex digits of SHA-256 of `parts`.
#[must_use]
pub fn short_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A UUID-formatted request id derived from `parts` (Compute Engine wants a UUID).
#[must_use]
pub fn request_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x50; // version 5 layout (name-based)
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let x: String = b.iter().map(|v| format!("{v:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

/// The names of one cluster's resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// `spectro-<12 hex of the cluster id>`.
    pub prefix: String,
}

impl Names {
    /// The names of `ctx`'s cluster.
    #[must_use]
    pub fn of(ctx: &ClusterContext) -> Self {
        Names {
            prefix: prefix_of(&ctx.cluster_id),
        }
    }

    fn n(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.prefix)
    }

    /// The VPC network (a created one).
    #[must_use]
    pub fn network(&self) -> String {
        self.n("net")
    }
    /// The subnetwork all nodes share.
    #[must_use]
    pub fn subnet(&self) -> String {
        self.n("subnet")
    }
    /// The Cloud Router.
    #[must_use]
    pub fn router(&self) -> String {
        self.n("router")
    }
    /// The Cloud NAT (inside the router).
    #[must_use]
    pub fn nat(&self) -> String {
        self.n("nat")
    }
    /// A firewall rule.
    #[must_use]
    pub fn firewall(&self, what: &str) -> String {
        self.n(&format!("fw-{what}"))
    }
    /// The network tag of every node.
    #[must_use]
    pub fn node_tag(&self) -> String {
        self.n("node")
    }
    /// The network tag of control-plane nodes.
    #[must_use]
    pub fn cp_tag(&self) -> String {
        self.n("cp")
    }
    /// The API server's global address.
    #[must_use]
    pub fn address(&self) -> String {
        self.n("api")
    }
    /// The API server's health check.
    #[must_use]
    pub fn health_check(&self) -> String {
        self.n("api-hc")
    }
    /// The API server's backend service.
    #[must_use]
    pub fn backend_service(&self) -> String {
        self.n("api-bes")
    }
    /// The API server's target TCP proxy.
    #[must_use]
    pub fn proxy(&self) -> String {
        self.n("api-proxy")
    }
    /// The API server's global forwarding rule.
    #[must_use]
    pub fn forwarding_rule(&self) -> String {
        self.n("api-fr")
    }
    /// The unmanaged instance group of the control-plane nodes in `zone`.
    #[must_use]
    pub fn instance_group(&self, zone: &str) -> String {
        let z = if is_resource_name(&format!("a{zone}")) {
            zone.to_string()
        } else {
            short_hash(&[zone])
        };
        let name = self.n(&format!("cp-{z}"));
        if name.len() <= NAME_MAX {
            name
        } else {
            self.n(&format!("cp-{}", short_hash(&[zone])))
        }
    }
    /// The instance of machine `machine`.
    #[must_use]
    pub fn instance(&self, machine: &str) -> String {
        if is_resource_name(machine) {
            machine.to_string()
        } else {
            self.n(&short_hash(&[machine]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_names_follow_gcp_rules() {
        assert_eq!(label_key("spectro.io/cluster-id"), "spectro-io_cluster-id");
        assert_eq!(label_key("Cost/Center"), "cost_center");
        assert_eq!(label_key("9lives"), "k-9lives");
        assert_eq!(label_value("Prod Team"), "prod_team");
        assert!(is_resource_name("demo-workers-a1b2c3"));
        assert!(!is_resource_name("Demo"));
        assert!(!is_resource_name("demo-"));
        assert!(!is_resource_name("1demo"));
        let id: ClusterId = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".parse().unwrap();
        let n = Names {
            prefix: prefix_of(&id),
        };
        assert_eq!(n.network(), "spectro-0f1e2d3c4b5a-net");
        assert_eq!(
            n.instance_group("us-west1-a"),
            "spectro-0f1e2d3c4b5a-cp-us-west1-a"
        );
        assert_eq!(n.instance("ok-name"), "ok-name");
        assert!(is_resource_name(&n.instance("Not_OK")));
        let r = request_id(&["t", "1"]);
        assert_eq!(r.len(), 36);
        assert_eq!(r, request_id(&["t", "1"]));
        assert_ne!(r, request_id(&["t", "2"]));
    }
}

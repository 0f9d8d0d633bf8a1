//! IP pool rules.

use std::net::IpAddr;

use super::rules::dns1123_label;
use super::{index, Report, Violation};
use crate::model::IpPool;

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// Validates an IP pool: one of range or subnet, range order, prefix, gateway in the network.
#[must_use]
pub fn validate_ip_pool(p: &IpPool) -> Vec<Violation> {
    let mut r = Report::default();
    if let Err(rule) = dns1123_label(&p.name) {
        r.add("name", rule);
    }
    r.check(
        !p.gateway_name.trim().is_empty(),
        "gatewayName",
        "is required: IP pools are linked to a private cloud gateway",
    );
    let max_prefix = if p.gateway.is_ipv4() { 32 } else { 128 };
    let prefix_ok = p.prefix <= max_prefix && p.prefix > 0;
    if !prefix_ok {
        r.add(
            "prefix",
            format!(
                "must be between 1 and {max_prefix} for this address family, got {}",
                p.prefix
            ),
        );
    }
    match (&p.range, &p.subnet) {
        (Some(_), Some(_)) => r.add("", "give either `range` or `subnet`, not both"),
        (None, None) => r.add(
            "range",
            "give either `range` (start and end) or `subnet` (CIDR)",
        ),
        (Some(range), None) => {
            if !same_family(range.start, range.end) {
                r.add("range.end", "start and end must be the same address family");
            } else if range.start > range.end {
                r.add(
                    "range.end",
                    format!(
                        "must not come before range.start ({} > {})",
                        range.start, range.end
                    ),
                );
            }
            if !same_family(range.start, p.gateway) {
                r.add("gateway", "must be the same address family as the range");
            } else if prefix_ok {
                if let Some(net) = p.network() {
                    r.check(
                        net.contains(&range.start),
                        "range.start",
                        format!(
                            "{} is outside the network {net} (gateway/prefix)",
                            range.start
                        ),
                    );
                    r.check(
                        net.contains(&range.end),
                        "range.end",
                        format!(
                            "{} is outside the network {net} (gateway/prefix)",
                            range.end
                        ),
                    );
                }
            }
        }
        (None, Some(subnet)) => {
            if subnet.addr() != subnet.network() {
                r.add(
                    "subnet",
                    format!(
                        "{subnet} has host bits set: did you mean {}?",
                        subnet.trunc()
                    ),
                );
            }
            if !same_family(subnet.addr(), p.gateway) {
                r.add("gateway", "must be the same address family as the subnet");
            } else if prefix_ok {
                r.check(
                    subnet.prefix_len() >= p.prefix,
                    "prefix",
                    format!(
                        "/{} is narrower than the pool's subnet {subnet}: the subnet must lie inside the network",
                        p.prefix
                    ),
                );
                if let Some(net) = p.network() {
                    r.check(
                        net.contains(&subnet.network()),
                        "subnet",
                        format!("{subnet} is outside the network {net} (gateway/prefix)"),
                    );
                }
            }
        }
    }
    for (i, ns) in p.nameservers.iter().enumerate() {
        r.check(
            !ns.is_unspecified(),
            index("nameservers", i),
            "must be a real address, not 0.0.0.0 or ::",
        );
    }
    r.into_violations()
}

/// Transition rules for an IP pool update: the addresses may not move under allocated nodes.
#[must_use]
pub fn validate_ip_pool_update(old: &IpPool, new: &IpPool) -> Vec<Violation> {
    let mut r = Report::default();
    r.check(old.name == new.name, "name", "cannot change after creation");
    r.check(
        old.gateway_name == new.gateway_name,
        "gatewayName",
        "cannot change after creation",
    );
    r.check(
        old.range == new.range && old.subnet == new.subnet,
        "range",
        "the pool's addresses cannot change after creation: create a new pool",
    );
    r.check(
        old.prefix == new.prefix,
        "prefix",
        "cannot change after creation",
    );
    r.check(
        old.gateway == new.gateway,
        "gateway",
        "cannot change after creation",
    );
    r.into_violations()
}

//! Security-group rules: least privilege between the cluster's roles, computed from the
//! cluster (bastion CIDRs) and the profile (the CNI's ports), and compared with what AWS
//! reports as atomic rules so that the rules are *ensured*: missing ones authorized, stale
//! ones revoked.
//!
//! | group | ingress |
//! | --- | --- |
//! | `lb` | TCP 6443 from anywhere (the API endpoint) |
//! | `bastion` | TCP 22 from `cloud.aws.bastionAllowedCidrs` only (none by default) |
//! | `control-plane` | TCP 6443 from the LB and all nodes; TCP 10250 and 2379-2380 from the control plane; TCP 22 from the bastion; the CNI's ports from all nodes |
//! | `worker` | TCP 10250 from the control plane; TCP 30000-32767 (NodePorts) from the VPC's CIDR; TCP 22 from the bastion; the CNI's ports from all nodes |
//!
//! CNI ports: calico (TCP 179 BGP, UDP 4789 VXLAN, TCP 5473 Typha, IP protocol 4 IP-in-IP),
//! cilium (UDP 8472 VXLAN, TCP 4240 health, TCP 4244 Hubble), flannel (UDP 8472). Any CNI
//! pack may list its ports in a [`ANNOTATION_PORTS`] annotation (it wins over the built-in
//! list); a CNI neither known nor annotated is a terminal error naming the pack.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{IpPermission, IpRange, Ipv6Range, UserIdGroupPair};
use spectro_core::model::{ClusterProfile, PackLayer};

use crate::error::AwsError;

/// CNI pack annotation listing the ports its nodes exchange, comma-separated:
/// `tcp/<port>[-<port>]`, `udp/<port>[-<port>]` or `ip/<protocol number>` (all ports of an
/// IP protocol, e.g. `ip/4` for IP-in-IP). Example: `ports: "udp/8472,tcp/4240"`.
pub const ANNOTATION_PORTS: &str = "ports";

/// The security-group roles, in creation order.
pub const ROLES: [&str; 4] = ["lb", "bastion", "control-plane", "worker"];

/// A protocol and a port range (`-1..-1` for protocols without ports).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    /// `tcp`, `udp`, or an IP protocol number (`4`).
    pub protocol: String,
    /// First port (-1 without ports).
    pub from: i32,
    /// Last port (-1 without ports).
    pub to: i32,
}

impl PortRange {
    /// A TCP range.
    pub fn tcp(from: i32, to: i32) -> Self {
        PortRange {
            protocol: "tcp".into(),
            from,
            to,
        }
    }

    /// A UDP range.
    pub fn udp(from: i32, to: i32) -> Self {
        PortRange {
            protocol: "udp".into(),
            from,
            to,
        }
    }

    /// Every port of an IP protocol (by number).
    pub fn ip(protocol: u8) -> Self {
        PortRange {
            protocol: protocol.to_string(),
            from: -1,
            to: -1,
        }
    }
}

/// Where an ingress rule admits traffic from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// An IPv4 or IPv6 network.
    Cidr(String),
    /// Members of a security group (by id).
    Group(String),
}

/// One atomic ingress rule: a port range from one source.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    /// Ports.
    pub ports: PortRange,
    /// Source.
    pub source: Source,
}

/// What the rules depend on besides the group ids.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecurityPolicy {
    /// Ports the CNI needs between all nodes.
    pub cni_ports: Vec<PortRange>,
    /// Networks allowed to SSH to the bastion.
    pub bastion_cidrs: Vec<String>,
}

/// Parses a [`ANNOTATION_PORTS`] value.
pub fn parse_ports(text: &str) -> Result<Vec<PortRange>, String> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (proto, ports) = item
            .split_once('/')
            .ok_or_else(|| format!("`{item}`: expected tcp/PORT, udp/PORT or ip/PROTOCOL"))?;
        let port = |s: &str| {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .map(i32::from)
                .ok_or_else(|| format!("`{item}`: `{s}` is not a port (1-65535)"))
        };
        match proto.trim().to_ascii_lowercase().as_str() {
            p @ ("tcp" | "udp") => {
                let (from, to) = match ports.split_once('-') {
                    Some((a, b)) => (port(a)?, port(b)?),
                    None => (port(ports)?, port(ports)?),
                };
                if from > to {
                    return Err(format!("`{item}`: the range is reversed"));
                }
                out.push(PortRange {
                    protocol: p.to_string(),
                    from,
                    to,
                });
            }
            "ip" => {
                let n: u8 = ports
                    .trim()
                    .parse()
                    .map_err(|_| format!("`{item}`: `{ports}` is not an IP protocol number"))?;
                if matches!(n, 6 | 17) {
                    return Err(format!(
                        "`{item}`: write tcp/PORT or udp/PORT for TCP and UDP"
                    ));
                }
                out.push(PortRange::ip(n));
            }
            other => {
                return Err(format!(
                    "`{item}`: unknown protocol `{other}` (tcp, udp or ip)"
                ))
            }
        }
    }
    Ok(out)
}

/// The ports the profile's CNI needs between nodes: the CNI pack's [`ANNOTATION_PORTS`]
/// annotation, else the built-in list for calico, cilium and flannel, else a terminal error.
pub fn cni_ports(profile: &ClusterProfile) -> Result<Vec<PortRange>, AwsError> {
    let Some(cni) = profile.packs.iter().find(|p| p.layer == PackLayer::Cni) else {
        return Ok(Vec::new());
    };
    if let Some(text) = cni.annotations.get(ANNOTATION_PORTS) {
        return parse_ports(text).map_err(|rule| {
            AwsError::invalid(
                format!("annotation `{ANNOTATION_PORTS}` of cni pack {}", cni.name),
                rule,
            )
        });
    }
    let name = cni.name.to_ascii_lowercase();
    if name.contains("calico") {
        Ok(vec![
            PortRange::tcp(179, 179),
            PortRange::udp(4789, 4789),
            PortRange::tcp(5473, 5473),
            PortRange::ip(4),
        ])
    } else if name.contains("cilium") {
        Ok(vec![
            PortRange::udp(8472, 8472),
            PortRange::tcp(4240, 4240),
            PortRange::tcp(4244, 4244),
        ])
    } else if name.contains("flannel") {
        Ok(vec![PortRange::udp(8472, 8472)])
    } else {
        Err(AwsError::invalid(
            format!("cni pack {}", cni.name),
            format!(
                "is not one whose ports spectro knows (calico, cilium, flannel): list them in its `{ANNOTATION_PORTS}` annotation, e.g. ports: \"udp/8472,tcp/4240\""
            ),
        ))
    }
}

/// The ingress rules each role's group must have, by role. `groups` maps roles to group ids;
/// `vpc_cidr` is where NodePort traffic may come from.
pub fn desired_rules(
    groups: &BTreeMap<String, String>,
    policy: &SecurityPolicy,
    vpc_cidr: &str,
) -> BTreeMap<String, BTreeSet<Rule>> {
    let g = |r: &str| Source::Group(groups.get(r).cloned().unwrap_or_default());
    let rule = |ports: PortRange, source: Source| Rule { ports, source };
    let mut out: BTreeMap<String, BTreeSet<Rule>> = BTreeMap::new();
    let mut add = |role: &str, r: Rule| {
        out.entry(role.to_string()).or_default().insert(r);
    };
    add(
        "lb",
        rule(PortRange::tcp(6443, 6443), Source::Cidr("0.0.0.0/0".into())),
    );
    for cidr in &policy.bastion_cidrs {
        add(
            "bastion",
            rule(PortRange::tcp(22, 22), Source::Cidr(cidr.clone())),
        );
    }
    for from in ["lb", "control-plane", "worker"] {
        add("control-plane", rule(PortRange::tcp(6443, 6443), g(from)));
    }
    add(
        "control-plane",
        rule(PortRange::tcp(2379, 2380), g("control-plane")),
    );
    if !vpc_cidr.is_empty() {
        add(
            "worker",
            rule(PortRange::tcp(30000, 32767), Source::Cidr(vpc_cidr.into())),
        );
    }
    for role in ["control-plane", "worker"] {
        add(role, rule(PortRange::tcp(10250, 10250), g("control-plane")));
        add(role, rule(PortRange::tcp(22, 22), g("bastion")));
        for p in &policy.cni_ports {
            for from in ["control-plane", "worker"] {
                add(role, rule(p.clone(), g(from)));
            }
        }
    }
    out.entry("bastion".into()).or_default();
    out
}

fn normalize_protocol(p: &str) -> String {
    match p.to_ascii_lowercase().as_str() {
        "tcp" | "6" => "tcp".into(),
        "udp" | "17" => "udp".into(),
        "icmp" | "1" => "icmp".into(),
        "-1" | "all" => "-1".into(),
        other => other.to_string(),
    }
}

/// The atomic rules of a group's ingress permissions, as AWS reports them.
pub fn rules_of(perms: &[IpPermission]) -> BTreeSet<Rule> {
    let mut out = BTreeSet::new();
    for p in perms {
        let protocol = normalize_protocol(p.ip_protocol().unwrap_or("-1"));
        let (from, to) = if matches!(protocol.as_str(), "tcp" | "udp" | "icmp") {
            (p.from_port().unwrap_or(-1), p.to_port().unwrap_or(-1))
        } else {
            (-1, -1)
        };
        let ports = PortRange { protocol, from, to };
        for r in p.ip_ranges() {
            if let Some(c) = r.cidr_ip() {
                out.insert(Rule {
                    ports: ports.clone(),
                    source: Source::Cidr(c.to_string()),
                });
            }
        }
        for r in p.ipv6_ranges() {
            if let Some(c) = r.cidr_ipv6() {
                out.insert(Rule {
                    ports: ports.clone(),
                    source: Source::Cidr(c.to_string()),
                });
            }
        }
        for g in p.user_id_group_pairs() {
            if let Some(id) = g.group_id() {
                out.insert(Rule {
                    ports: ports.clone(),
                    source: Source::Group(id.to_string()),
                });
            }
        }
    }
    out
}

/// One permission per rule (what Authorize/RevokeSecurityGroupIngress take).
pub fn permissions(rules: &BTreeSet<Rule>) -> Vec<IpPermission> {
    rules.iter().map(permission).collect()
}

/// The permission of one rule.
pub fn permission(r: &Rule) -> IpPermission {
    let b = IpPermission::builder()
        .ip_protocol(&r.ports.protocol)
        .from_port(r.ports.from)
        .to_port(r.ports.to);
    match &r.source {
        Source::Cidr(c) if c.contains(':') => {
            b.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(c).build())
        }
        Source::Cidr(c) => b.ip_ranges(IpRange::builder().cidr_ip(c).build()),
        Source::Group(g) => b.user_id_group_pairs(UserIdGroupPair::builder().group_id(g).build()),
    }
    .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_annotation_parses_and_rejects_with_the_item() {
        assert_eq!(
            parse_ports("udp/8472, tcp/4240,tcp/9000-9100,ip/4").unwrap(),
            vec![
                PortRange::udp(8472, 8472),
                PortRange::tcp(4240, 4240),
                PortRange::tcp(9000, 9100),
                PortRange::ip(4)
            ]
        );
        for bad in [
            "8472",
            "sctp/1",
            "tcp/0",
            "tcp/70000",
            "tcp/9-1",
            "ip/6",
            "ip/x",
        ] {
            let e = parse_ports(bad).unwrap_err();
            assert!(e.contains(bad.split('/').next().unwrap()), "{bad}: {e}");
        }
    }

    #[test]
    fn observed_permissions_normalize_to_atomic_rules() {
        let p = IpPermission::builder()
            .ip_protocol("6")
            .from_port(22)
            .to_port(22)
            .ip_ranges(IpRange::builder().cidr_ip("10.0.0.0/8").build())
            .user_id_group_pairs(UserIdGroupPair::builder().group_id("sg-1").build())
            .build();
        let ipip = IpPermission::builder()
            .ip_protocol("4")
            .user_id_group_pairs(UserIdGroupPair::builder().group_id("sg-2").build())
            .build();
        let rules = rules_of(&[p, ipip]);
        assert_eq!(rules.len(), 3);
        assert!(rules.contains(&Rule {
            ports: PortRange::ip(4),
            source: Source::Group("sg-2".into())
        }));
        // Round trip: what we send reads back as the same rules.
        assert_eq!(rules_of(&permissions(&rules)), rules);
    }

    #[test]
    fn least_privilege_between_roles() {
        let groups: BTreeMap<String, String> = ROLES
            .iter()
            .map(|r| (r.to_string(), format!("sg-{r}")))
            .collect();
        let policy = SecurityPolicy {
            cni_ports: vec![PortRange::udp(8472, 8472)],
            bastion_cidrs: vec![],
        };
        let d = desired_rules(&groups, &policy, "10.0.0.0/16");
        assert!(d["bastion"].is_empty(), "no SSH from anywhere by default");
        let etcd: Vec<&Rule> = d
            .values()
            .flatten()
            .filter(|r| r.ports == PortRange::tcp(2379, 2380))
            .collect();
        assert_eq!(etcd.len(), 1);
        assert_eq!(etcd[0].source, Source::Group("sg-control-plane".into()));
        assert!(d.values().flatten().all(|r| r.ports.protocol != "-1"));
        let open: Vec<&Rule> = d
            .values()
            .flatten()
            .filter(|r| r.source == Source::Cidr("0.0.0.0/0".into()))
            .collect();
        assert_eq!(open.len(), 1, "only the API endpoint is open: {open:?}");
        assert_eq!(d["lb"].iter().next(), open.first().copied());
        assert!(d["worker"]
            .iter()
            .all(|r| r.ports != PortRange::tcp(6443, 6443)));
    }
}

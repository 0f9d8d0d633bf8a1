//! The network set-up survives a crash before or after any of its AWS calls, as the engine's
//! crash test does for a converge: for every N, the process dies at the N-th call (before
//! it reaches AWS, or after AWS acted on it but before the answer is read), restarts (a fresh
//! `ensure_network`), and the network it converges to is the one an uninterrupted run builds:
//! VPC attributes, gateway attachment, routes, associations, security-group rules, NAT and
//! Elastic IPs, with nothing twice. Likewise the delete: killed at any of its calls and
//! restarted, it leaves nothing tagged for the cluster. Each run gets its own moto account.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_sdk_ec2::types::{Filter, NatGatewayState, Tag, VpcAttributeName};
use common::*;
use spectro_aws::network::{delete_network, ensure_network, TAG_ZONE};
use spectro_aws::security::{parse_ports, rules_of, SecurityPolicy, Source};
use spectro_aws::{AwsClients, InjectCrash};
use spectro_core::provider::{TAG_CLUSTER_ID, TAG_ROLE};

const ID: &str = "5f0e2c1a-0000-4000-8000-0000000000c1";

fn tags() -> BTreeMap<String, String> {
    [(TAG_CLUSTER_ID.to_string(), ID.to_string())]
        .into_iter()
        .collect()
}

fn zones() -> Vec<String> {
    vec!["us-east-1a".into(), "us-east-1b".into()]
}

fn policy() -> SecurityPolicy {
    SecurityPolicy {
        cni_ports: parse_ports("tcp/179,udp/4789,tcp/5473,ip/4").unwrap(),
        bastion_cidrs: vec!["203.0.113.0/24".into()],
    }
}

fn tag<'a>(tags: &'a [Tag], key: &str) -> &'a str {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
        .unwrap_or("-")
}

fn owned() -> Filter {
    Filter::builder()
        .name(format!("tag:{TAG_CLUSTER_ID}"))
        .values(ID)
        .build()
}

/// The cluster's network as AWS reports it, with ids replaced by what they stand for (a
/// subnet by role/zone, a NAT target by its zone, a group by its role), one sorted line per
/// resource or rule: equal fingerprints mean the same network, nothing more, nothing less.
async fn fingerprint(c: &AwsClients) -> Vec<String> {
    let mut out = Vec::new();
    let vpcs = c.ec2.describe_vpcs().filters(owned()).send().await.unwrap();
    let vpc_ids: Vec<String> = vpcs
        .vpcs()
        .iter()
        .map(|v| v.vpc_id().unwrap().to_string())
        .collect();
    for v in vpcs.vpcs() {
        let dns = c
            .ec2
            .describe_vpc_attribute()
            .vpc_id(v.vpc_id().unwrap())
            .attribute(VpcAttributeName::EnableDnsHostnames)
            .send()
            .await
            .unwrap()
            .enable_dns_hostnames()
            .and_then(|a| a.value())
            .unwrap_or(false);
        out.push(format!(
            "vpc {} dnsHostnames={dns}",
            v.cidr_block().unwrap_or("-")
        ));
    }
    let mut subnet_names = BTreeMap::new();
    for s in c
        .ec2
        .describe_subnets()
        .filters(owned())
        .send()
        .await
        .unwrap()
        .subnets()
    {
        let name = format!(
            "{}/{}",
            tag(s.tags(), TAG_ROLE),
            s.availability_zone().unwrap_or("-")
        );
        subnet_names.insert(s.subnet_id().unwrap().to_string(), name.clone());
        out.push(format!("subnet {name} {}", s.cidr_block().unwrap_or("-")));
    }
    for g in c
        .ec2
        .describe_internet_gateways()
        .filters(owned())
        .send()
        .await
        .unwrap()
        .internet_gateways()
    {
        let attached: Vec<String> = g
            .attachments()
            .iter()
            .map(|a| {
                format!(
                    "{}:{}",
                    vpc_ids.iter().any(|v| Some(v.as_str()) == a.vpc_id()),
                    a.state().map(|s| s.as_str()).unwrap_or("-")
                )
            })
            .collect();
        out.push(format!("igw attached-to-our-vpc={attached:?}"));
    }
    let mut eip_zones = BTreeMap::new();
    for a in c
        .ec2
        .describe_addresses()
        .filters(owned())
        .send()
        .await
        .unwrap()
        .addresses()
    {
        eip_zones.insert(
            a.allocation_id().unwrap().to_string(),
            tag(a.tags(), TAG_ZONE).to_string(),
        );
        out.push(format!("eip {}", tag(a.tags(), TAG_ZONE)));
    }
    let mut nat_zones = BTreeMap::new();
    for v in &vpc_ids {
        for g in c
            .ec2
            .describe_nat_gateways()
            .filter(Filter::builder().name("vpc-id").values(v).build())
            .send()
            .await
            .unwrap()
            .nat_gateways()
        {
            if g.state() == Some(&NatGatewayState::Deleted) || tag(g.tags(), TAG_CLUSTER_ID) != ID {
                continue;
            }
            let zone = tag(g.tags(), TAG_ZONE).to_string();
            nat_zones.insert(g.nat_gateway_id().unwrap().to_string(), zone.clone());
            let eips: Vec<&str> = g
                .nat_gateway_addresses()
                .iter()
                .map(|a| {
                    eip_zones
                        .get(a.allocation_id().unwrap_or("-"))
                        .map(String::as_str)
                        .unwrap_or("?")
                })
                .collect();
            out.push(format!(
                "nat {zone} in {} eip {eips:?}",
                subnet_names
                    .get(g.subnet_id().unwrap_or("-"))
                    .map(String::as_str)
                    .unwrap_or("?")
            ));
        }
    }
    for t in c
        .ec2
        .describe_route_tables()
        .filters(owned())
        .send()
        .await
        .unwrap()
        .route_tables()
    {
        let mut routes: Vec<String> = t
            .routes()
            .iter()
            .map(|r| {
                let target = match (r.gateway_id(), r.nat_gateway_id()) {
                    (Some("local"), _) => "local".to_string(),
                    (Some(g), _) if g.starts_with("igw-") => "igw".to_string(),
                    (_, Some(n)) => format!(
                        "nat/{}",
                        nat_zones.get(n).map(String::as_str).unwrap_or("?")
                    ),
                    other => format!("{other:?}"),
                };
                format!(
                    "{}->{target}:{}",
                    r.destination_cidr_block().unwrap_or("-"),
                    r.state().map(|s| s.as_str()).unwrap_or("-")
                )
            })
            .collect();
        routes.sort();
        let mut assoc: Vec<&str> = t
            .associations()
            .iter()
            .filter(|a| a.main() != Some(true))
            .map(|a| {
                subnet_names
                    .get(a.subnet_id().unwrap_or("-"))
                    .map(String::as_str)
                    .unwrap_or("?")
            })
            .collect();
        assoc.sort();
        out.push(format!(
            "rt {} {} routes {routes:?} subnets {assoc:?}",
            tag(t.tags(), TAG_ROLE),
            tag(t.tags(), TAG_ZONE)
        ));
    }
    let groups = c
        .ec2
        .describe_security_groups()
        .filters(owned())
        .send()
        .await
        .unwrap();
    let roles: BTreeMap<String, String> = groups
        .security_groups()
        .iter()
        .map(|g| {
            (
                g.group_id().unwrap().to_string(),
                tag(g.tags(), TAG_ROLE).to_string(),
            )
        })
        .collect();
    for g in groups.security_groups() {
        let role = tag(g.tags(), TAG_ROLE);
        out.push(format!("sg {role}"));
        for r in rules_of(g.ip_permissions()) {
            let source = match &r.source {
                Source::Cidr(c) => c.clone(),
                Source::Group(id) => {
                    format!("sg:{}", roles.get(id).map(String::as_str).unwrap_or("?"))
                }
            };
            out.push(format!(
                "sg {role} ingress {}/{}-{} from {source}",
                r.ports.protocol, r.ports.from, r.ports.to
            ));
        }
    }
    out.sort();
    out
}

fn mutating(calls: &BTreeMap<String, u64>) -> u64 {
    calls
        .iter()
        .filter(|(op, _)| {
            let op = op.split('.').nth(1).unwrap_or("");
            !(op.starts_with("Describe") || op.starts_with("Get"))
        })
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_setup_converges_after_a_crash_before_or_after_every_call() {
    let Some(m) = moto().await else { return };
    let base = account_id().parse::<u64>().unwrap() / 1000 * 1000;

    // The reference: one uninterrupted run.
    let conn = conn_for(&m, &format!("{base:012}"));
    let c = conn.clients(&creds(), "us-east-1");
    ensure_network(&c, ID, "demo", &zones(), &tags(), &policy())
        .await
        .unwrap();
    let total = conn.calls().total();
    eprintln!(
        "uninterrupted set-up: {total} calls: {:?}",
        conn.calls().snapshot()
    );
    let reference = fingerprint(&c).await;
    assert!(reference
        .iter()
        .any(|l| l == "vpc 10.0.0.0/16 dnsHostnames=true"));
    assert!(reference
        .iter()
        .any(|l| l.starts_with("igw") && l.contains("true:")));
    assert_eq!(
        reference.iter().filter(|l| l.starts_with("nat ")).count(),
        2
    );
    assert!(reference
        .iter()
        .any(|l| l.contains("sg bastion ingress tcp/22-22 from 203.0.113.0/24")));

    // An already-complete network: one observation (+ the VPC's DNS attribute), no change.
    let before = conn.calls().snapshot();
    let again = ensure_network(&c, ID, "demo", &zones(), &tags(), &policy())
        .await
        .unwrap();
    let after = conn.calls().snapshot();
    let steady: u64 = after.values().sum::<u64>() - before.values().sum::<u64>();
    eprintln!("complete network: {steady} calls");
    assert_eq!(mutating(&after), mutating(&before), "nothing to change");
    assert!(steady <= 8, "{steady} calls for a complete network");
    assert!(!again.vpc.is_empty());

    let mut runs = 0;
    for after in [false, true] {
        for n in 1..=total {
            runs += 1;
            let acct = format!("{:012}", base + runs);
            let crash = Arc::new(if after {
                InjectCrash::after(n)
            } else {
                InjectCrash::before(n)
            });
            let dying = conn_for(&m, &acct)
                .with_injected_crash(crash.clone())
                .clients(&creds(), "us-east-1");
            let r = ensure_network(&dying, ID, "demo", &zones(), &tags(), &policy()).await;
            assert!(crash.crashed(), "call {n} was reached");
            assert!(r.is_err(), "the crash at call {n} stopped the set-up");
            // Restart: a fresh process, the same cluster.
            let c = conn_for(&m, &acct).clients(&creds(), "us-east-1");
            ensure_network(&c, ID, "demo", &zones(), &tags(), &policy())
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "restart after a crash {} call {n}: {e}",
                        if after { "after" } else { "before" }
                    )
                });
            let got = fingerprint(&c).await;
            assert_eq!(
                got,
                reference,
                "crash {} call {n}: the network differs",
                if after { "after" } else { "before" }
            );
        }
    }
    eprintln!("{runs} crash points, each converged to the uninterrupted network");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_delete_converges_after_a_crash_before_or_after_every_call() {
    let Some(m) = moto().await else { return };
    let base = account_id().parse::<u64>().unwrap() / 1000 * 1000;

    // The reference: one uninterrupted delete, in one pass (moto deletes NAT gateways at once).
    let conn = conn_for(&m, &format!("{base:012}"));
    let c = conn.clients(&creds(), "us-east-1");
    ensure_network(&c, ID, "demo", &zones(), &tags(), &policy())
        .await
        .unwrap();
    let before = conn.calls().snapshot();
    let left = delete_network(&c, ID).await.unwrap();
    assert!(left.is_empty(), "left behind: {left:?}");
    let after = conn.calls().snapshot();
    let total = after.values().sum::<u64>() - before.values().sum::<u64>();
    eprintln!("uninterrupted delete: {total} calls");
    assert!(fingerprint(&c).await.is_empty());
    assert!(delete_network(&c, ID).await.unwrap().is_empty(), "twice");

    let mut runs = 0;
    for after in [false, true] {
        for n in 1..=total {
            runs += 1;
            let acct = format!("{:012}", base + runs);
            let c = conn_for(&m, &acct).clients(&creds(), "us-east-1");
            ensure_network(&c, ID, "demo", &zones(), &tags(), &policy())
                .await
                .unwrap();
            let crash = Arc::new(if after {
                InjectCrash::after(n)
            } else {
                InjectCrash::before(n)
            });
            let dying = conn_for(&m, &acct)
                .with_injected_crash(crash.clone())
                .clients(&creds(), "us-east-1");
            let r = delete_network(&dying, ID).await;
            assert!(crash.crashed(), "call {n} was reached");
            assert!(r.is_err(), "the crash at call {n} stopped the delete");
            // Restart: a fresh process deletes again until nothing is reported left.
            let when = if after { "after" } else { "before" };
            let mut left = Vec::new();
            for _ in 0..3 {
                left = delete_network(&c, ID)
                    .await
                    .unwrap_or_else(|e| panic!("delete after a crash {when} call {n}: {e}"));
                if left.is_empty() {
                    break;
                }
            }
            assert!(left.is_empty(), "crash {when} call {n}: left {left:?}");
            let got = fingerprint(&c).await;
            assert!(
                got.is_empty(),
                "crash {when} call {n}: still tagged: {got:?}"
            );
        }
    }
    eprintln!("{runs} crash points, each deleted everything");
}

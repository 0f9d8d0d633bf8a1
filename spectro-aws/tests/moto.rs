//! Against moto's server (a real AWS API emulator) on 127.0.0.1: the account check, AMI
//! resolution and the API-call counter. Each test gets its own moto account through the
//! `x-moto-account-id` header.
//!
//! moto comes from PyPI (`moto[server]==5.2.5`, installed in a venv by scripts/test). The
//! harness uses MOTO_ENDPOINT when set, else starts `moto_server -H 127.0.0.1 -p 0` (from
//! SPECTRO_MOTO_SERVER, the scripts/test venv, or PATH) with AMI and instance-type
//! validation on, reads the port it prints, keeps draining its output, and stops it at the
//! end.

use std::time::Duration;

mod common;

use common::*;
use spectro_aws::{caller_account, resolve_image, AwsConnector, AwsError};
use spectro_core::model::document::{from_text, Format};
use spectro_core::model::ClusterProfile;
use spectro_core::provider::ProviderError;

fn image_spec(annotation: Option<&str>) -> spectro_core::provider::ImageSpec {
    let mut p: ClusterProfile = from_text(
        "name: p\nversion: '1'\ncloud: aws\npacks:\n  - {name: ubuntu, layer: os, version: '22.04'}\n  - {name: kubernetes, layer: kubernetes, version: 1.30.4}\n  - {name: calico, layer: cni, version: 3.28.0}\n",
        Format::Yaml,
    )
    .unwrap();
    if let Some(a) = annotation {
        p.packs[0].annotations.insert("image".into(), a.into());
    }
    spectro_core::engine::planner::image_spec(&p).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_check_and_image_resolution_against_moto() {
    let Some(m) = moto().await else { return };
    let acct = account_id();
    let conn = AwsConnector::default()
        .with_endpoint(&m.url)
        .with_header("x-moto-account-id", &acct)
        .with_max_attempts(2);
    let c = conn.clients(&creds(), "us-east-1");

    // The account check answers with the account the credentials belong to.
    assert_eq!(caller_account(&c).await.unwrap(), acct);

    // An explicit AMI from the os pack's annotation wins when it exists...
    let known = "ami-03c3da4cfa8e8943a"; // an Amazon Linux 2023 image moto ships in us-east-1
    let img = resolve_image(&c, &image_spec(Some(known))).await.unwrap();
    assert_eq!(img.id, known);
    // ...and is a clear, terminal error when it does not.
    match resolve_image(&c, &image_spec(Some("ami-0000000000000dead"))).await {
        Err(e @ AwsError::NotFound { .. }) => {
            let p = ProviderError::from(e);
            assert!(matches!(p, ProviderError::Terminal { .. }), "{p:?}");
            let message = p.message();
            assert!(
                message.contains("ami-0000000000000dead") && message.contains("us-east-1"),
                "{message}"
            )
        }
        r => panic!("{r:?}"),
    }
    // Without an annotation: the newest image named for the packs.
    match resolve_image(&c, &image_spec(None)).await {
        Err(e @ AwsError::NoImage { .. }) => {
            let p = ProviderError::from(e);
            assert!(matches!(p, ProviderError::Terminal { .. }), "{p:?}");
            assert!(
                p.message().contains("spectro-ubuntu-22.04-k8s-1.30.4"),
                "{p}"
            )
        }
        r => panic!("no image is published yet: {r:?}"),
    }
    let base = c
        .ec2
        .run_instances()
        .image_id(known)
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .unwrap();
    let instance = base.instances()[0].instance_id().unwrap().to_string();
    for name in [
        "spectro-ubuntu-22.04-k8s-1.30.4-20240101",
        "spectro-ubuntu-22.04-k8s-1.30.4-20250101",
    ] {
        c.ec2
            .create_image()
            .instance_id(&instance)
            .name(name)
            .send()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await; // distinct creation dates
    }
    let img = resolve_image(&c, &image_spec(None)).await.unwrap();
    let newest = c
        .ec2
        .describe_images()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("name")
                .values("spectro-ubuntu-22.04-k8s-1.30.4-20250101")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(Some(img.id.as_str()), newest.images()[0].image_id());

    // Every attempt was counted, by operation.
    let calls = conn.calls().snapshot();
    assert_eq!(calls.get("STS.GetCallerIdentity"), Some(&1));
    assert!(
        calls.get("EC2.DescribeImages").copied().unwrap_or(0) >= 4,
        "{calls:?}"
    );
    assert_eq!(calls.get("EC2.RunInstances"), Some(&1));

    // Accounts are isolated: another account does not see these images.
    let other = conn_for(&m, &account_id()).clients(&creds(), "us-east-1");
    assert!(resolve_image(&other, &image_spec(None)).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_region_endpoint_is_a_retryable_transport_error_not_a_panic() {
    // Nothing listens on this port: a transport failure, classified retryable.
    let c = AwsConnector::default()
        .with_endpoint("http://127.0.0.1:9")
        .with_max_attempts(1)
        .clients(&creds(), "us-east-1");
    match caller_account(&c).await {
        Err(e @ AwsError::Transport { .. }) => {
            assert!(
                std::error::Error::source(&e).is_some(),
                "the SDK's cause is kept"
            );
            let p = ProviderError::from(e);
            assert!(matches!(p, ProviderError::Retryable { .. }), "{p:?}");
            assert!(p.message().starts_with("GetCallerIdentity"), "{p}");
        }
        r => panic!("{r:?}"),
    }
    assert!(
        !format!("{c:?}").contains("wJalrXUtnFEMI"),
        "the secret key never prints"
    );
}

/// The security policy of a calico cluster whose bastion admits no one.
fn policy() -> spectro_aws::security::SecurityPolicy {
    spectro_aws::security::SecurityPolicy {
        cni_ports: spectro_aws::security::parse_ports("tcp/179,udp/4789,tcp/5473,ip/4").unwrap(),
        bastion_cidrs: Vec::new(),
    }
}

fn mutating(calls: &std::collections::BTreeMap<String, u64>) -> u64 {
    calls
        .iter()
        .filter(|(op, _)| {
            let op = op.split('.').nth(1).unwrap_or("");
            [
                "Create",
                "Allocate",
                "Attach",
                "Associate",
                "Authorize",
                "Modify",
                "Delete",
                "Release",
                "Detach",
                "Disassociate",
                "Revoke",
            ]
            .iter()
            .any(|p| op.starts_with(p))
        })
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_is_found_by_tag_repaired_and_deleted_completely() {
    use spectro_aws::network::{delete_network, ensure_network};
    let Some(m) = moto().await else { return };
    let conn = conn_for(&m, &account_id());
    let c = conn.clients(&creds(), "us-east-1");
    let id = "5f0e2c1a-0000-4000-8000-000000000001";
    let zones: Vec<String> = ["us-east-1a", "us-east-1b", "us-east-1c"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let tags: std::collections::BTreeMap<String, String> = [
        (
            spectro_core::provider::TAG_CLUSTER_ID.to_string(),
            id.to_string(),
        ),
        ("team".to_string(), "storefront".to_string()),
    ]
    .into_iter()
    .collect();

    let n = ensure_network(&c, id, "demo", &zones, &tags, &policy())
        .await
        .unwrap();
    assert_eq!((n.private_subnets.len(), n.public_subnets.len()), (3, 3));
    assert_eq!((n.nat_gateways.len(), n.elastic_ips.len()), (3, 3));
    assert_eq!(n.route_tables.len(), 4, "public + one private per zone");
    assert!(n
        .route_tables
        .values()
        .all(|(_, subnets)| !subnets.is_empty()));
    assert_eq!(n.route_tables["public"].1.len(), 3);
    assert_eq!(n.security_groups.len(), 4);
    assert!(n.internet_gateway.is_some());
    let first = conn.calls().snapshot();
    eprintln!(
        "create network: {} calls ({} mutating): {first:?}",
        first.values().sum::<u64>(),
        mutating(&first)
    );

    // A second ensure finds everything by tag and changes nothing.
    let again = ensure_network(&c, id, "demo", &zones, &tags, &policy())
        .await
        .unwrap();
    assert!(n.fresh && !again.fresh, "the first ensure made the VPC");
    assert_eq!(
        again,
        spectro_aws::network::Network {
            fresh: false,
            ..n.clone()
        },
        "what the first ensure built up call by call is what AWS reports"
    );
    let second = conn.calls().snapshot();
    assert_eq!(
        mutating(&second),
        mutating(&first),
        "no create on a second ensure"
    );

    // A resource lost in a crash (zone b's private route table never made it) is repaired.
    let (rt, subnets) = n.route_tables["private/us-east-1b"].clone();
    for a in c
        .ec2
        .describe_route_tables()
        .route_table_ids(&rt)
        .send()
        .await
        .unwrap()
        .route_tables()[0]
        .associations()
    {
        c.ec2
            .disassociate_route_table()
            .association_id(a.route_table_association_id().unwrap())
            .send()
            .await
            .unwrap();
    }
    c.ec2
        .delete_route_table()
        .route_table_id(&rt)
        .send()
        .await
        .unwrap();
    let repaired = ensure_network(&c, id, "demo", &zones, &tags, &policy())
        .await
        .unwrap();
    assert_eq!(repaired.route_tables["private/us-east-1b"].1, subnets);
    assert_eq!(repaired.route_tables.len(), 4);

    // Delete walks everything back and verifies by tag; the account's default VPC stays.
    let left = delete_network(&c, id).await.unwrap();
    assert!(left.is_empty(), "left behind: {left:?}");
    let vpcs = c.ec2.describe_vpcs().send().await.unwrap();
    assert!(
        vpcs.vpcs().iter().any(|v| v.is_default() == Some(true)),
        "the default VPC is not ours to touch"
    );
    assert!(vpcs
        .vpcs()
        .iter()
        .all(|v| v.vpc_id() != Some(n.vpc.as_str())));
    let igws = c
        .ec2
        .describe_internet_gateways()
        .internet_gateway_ids(n.internet_gateway.clone().unwrap())
        .send()
        .await;
    assert!(
        igws.is_err() || igws.unwrap().internet_gateways().is_empty(),
        "internet gateway deleted"
    );
    assert!(
        delete_network(&c, id).await.unwrap().is_empty(),
        "deleting twice is fine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_launch_is_idempotent_by_token_and_named_by_launch_index() {
    use spectro_aws::machines::{launch, list_machines, terminate, Launch};
    use spectro_aws::network::ensure_network;
    let Some(m) = moto().await else { return };
    let conn = conn_for(&m, &account_id());
    let c = conn.clients(&creds(), "us-east-1");
    let id = "5f0e2c1a-0000-4000-8000-000000000002";
    let tags: std::collections::BTreeMap<String, String> = [(
        spectro_core::provider::TAG_CLUSTER_ID.to_string(),
        id.to_string(),
    )]
    .into_iter()
    .collect();
    let zones = vec!["us-east-1a".to_string()];
    let net = ensure_network(&c, id, "demo", &zones, &tags, &policy())
        .await
        .unwrap();
    let names: Vec<String> = ["a1b2c3", "d4e5f6", "0a0b0c"]
        .iter()
        .map(|s| format!("demo-general-{s}"))
        .collect();
    let sgs = vec![net.security_groups["worker"].clone()];
    let user_data = b"#cloud-config\nruncmd: [[kubeadm, join]]\n";
    let l = Launch {
        cluster_id: id,
        tags: &tags,
        token: "8a6e0c52-4f0e-4d5e-9a53-2f1b8f3c7d10",
        names: &names,
        pool: "general",
        role: spectro_core::model::PoolRole::Worker,
        shape: "abc123",
        image: "ami-03c3da4cfa8e8943a",
        instance_type: "t3.micro",
        subnet: &net.private_subnets["us-east-1a"],
        security_groups: &sgs,
        key_name: None,
        user_data,
        bastion: false,
        root_volume: None,
        unseen: false,
    };
    let first = launch(&c, &l).await.unwrap();
    let mut got: Vec<String> = first.iter().map(|m| m.name.clone()).collect();
    got.sort();
    let mut want = names.clone();
    want.sort();
    assert_eq!(got, want, "one call names the whole batch by launch index");
    // A retry with the same token (after a crash or a lost answer) launches nothing.
    let again = launch(&c, &l).await.unwrap();
    assert_eq!(again.len(), 3);
    assert_eq!(conn.calls().snapshot().get("EC2.RunInstances"), Some(&1));
    // One filtered call observes the cluster's nodes with pool, shape, token and zone.
    let listed = list_machines(&c, id).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|m| m.pool == "general"
        && m.shape == "abc123"
        && m.zone == "us-east-1a"
        && m.address.is_some()));
    // The user data reached the instances.
    let attr = c
        .ec2
        .describe_instance_attribute()
        .instance_id(&listed[0].id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    let b64 = attr
        .user_data()
        .and_then(|u| u.value())
        .unwrap_or_default()
        .to_string();
    use base64::Engine as _;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
        user_data
    );
    // Terminate: nothing of the cluster is left running.
    let ids: Vec<String> = listed.iter().map(|m| m.id.clone()).collect();
    terminate(&c, &ids).await.unwrap();
    terminate(&c, &ids).await.unwrap();
    let left = list_machines(&c, id).await.unwrap();
    assert!(
        left.iter()
            .all(|m| m.state == spectro_core::provider::MachineState::Deleting),
        "{left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subnet_cidrs_are_stable_per_zone_when_zones_come_and_go() {
    use spectro_aws::network::{delete_network, ensure_network};
    let Some(m) = moto().await else { return };
    let c = conn_for(&m, &account_id()).clients(&creds(), "us-east-1");
    let id = "5f0e2c1a-0000-4000-8000-000000000003";
    let tags: std::collections::BTreeMap<String, String> = [(
        spectro_core::provider::TAG_CLUSTER_ID.to_string(),
        id.to_string(),
    )]
    .into_iter()
    .collect();
    let zones = |z: &[&str]| -> Vec<String> { z.iter().map(|z| format!("us-east-1{z}")).collect() };
    let cidrs = |n: &spectro_aws::network::Network| {
        let mut out = std::collections::BTreeMap::new();
        for (role, subnets) in [
            ("private", &n.private_subnets),
            ("public", &n.public_subnets),
        ] {
            for (zone, sid) in subnets {
                out.insert(format!("{role}/{zone}"), n.subnet_cidrs[sid].clone());
            }
        }
        out
    };
    let bc = ensure_network(&c, id, "demo", &zones(&["b", "c"]), &tags, &policy())
        .await
        .unwrap();
    let before = cidrs(&bc);
    assert_eq!(before.len(), 4);
    // Zone a sorts first: it must take a free slot, not zone b's.
    let abc = ensure_network(&c, id, "demo", &zones(&["a", "b", "c"]), &tags, &policy())
        .await
        .expect("adding a zone that sorts first converges");
    let after = cidrs(&abc);
    for (k, v) in &before {
        assert_eq!(&after[k], v, "{k} keeps its CIDR");
    }
    assert_eq!(
        after["private/us-east-1a"], "10.0.32.0/20",
        "the lowest free slot"
    );
    assert_eq!(after["public/us-east-1a"], "10.0.136.0/22");
    assert_eq!(abc.route_tables.len(), 4);
    assert_eq!(abc.nat_gateways.len(), 3);
    // Without zone b (its subnets stay until delete), then a new zone d: d takes slot 3, and
    // nothing that exists changes.
    let acd = ensure_network(&c, id, "demo", &zones(&["a", "c", "d"]), &tags, &policy())
        .await
        .unwrap();
    let last = cidrs(&acd);
    for (k, v) in &after {
        assert_eq!(&last[k], v, "{k} keeps its CIDR");
    }
    assert_eq!(last["private/us-east-1d"], "10.0.48.0/20");
    assert!(delete_network(&c, id).await.unwrap().is_empty());
}

/// The AMIs every moto account sees (MOTO_AMIS_PATH replaces moto's built-in list): the base
/// image the tests launch from, and a newer `spectro-*` image published by a stranger.
const STRANGER: &str = "999988887777";

fn amis_file(dir: &std::path::Path) -> String {
    let path = dir.join("amis.json");
    let amis = format!(
        r#"[
  {{"ami_id": "ami-03c3da4cfa8e8943a", "name": "al2023-ami-2023.12.20260930.0-kernel-6.1-x86_64",
    "owner_id": "137112412989", "public": true, "state": "available", "architecture": "x86_64",
    "virtualization_type": "hvm", "hypervisor": "xen", "image_type": "machine",
    "root_device_name": "/dev/xvda", "root_device_type": "ebs", "sriov": "simple",
    "description": "base"}},
  {{"ami_id": "ami-0badc0ffee0000001", "name": "spectro-ubuntu-22.04-k8s-1.30.4-29990101",
    "owner_id": "{STRANGER}", "public": true, "state": "available", "architecture": "x86_64",
    "virtualization_type": "hvm", "hypervisor": "xen", "image_type": "machine",
    "root_device_name": "/dev/sda1", "root_device_type": "ebs", "sriov": "simple",
    "creation_date": "2099-01-01T00:00:00.000Z", "description": "not ours"}}
]"#
    );
    std::fs::write(&path, amis).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_lookup_only_picks_our_own_or_named_owners_images() {
    let dir = tempfile::tempdir().unwrap();
    let amis = amis_file(dir.path());
    let Some(m) = moto_server(&[("MOTO_AMIS_PATH", amis.as_str())]).await else {
        return;
    };
    let c = conn_for(&m, &account_id()).clients(&creds(), "us-east-1");
    // The stranger's public image is visible to everyone...
    let all = c
        .ec2
        .describe_images()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("name")
                .values("spectro-*")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(all.images().len(), 1, "moto serves the stranger's image");
    // ...but never picked by name: we have none of our own yet.
    match resolve_image(&c, &image_spec(None)).await {
        Err(e @ AwsError::NoImage { .. }) => {
            assert!(e.to_string().contains("owned by self"), "{e}")
        }
        r => panic!("a stranger's AMI was picked: {r:?}"),
    }
    // Our own (older) image wins over the stranger's newer one.
    let base = c
        .ec2
        .run_instances()
        .image_id("ami-03c3da4cfa8e8943a")
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .unwrap();
    let ours = c
        .ec2
        .create_image()
        .instance_id(base.instances()[0].instance_id().unwrap())
        .name("spectro-ubuntu-22.04-k8s-1.30.4-20240101")
        .send()
        .await
        .unwrap()
        .image_id()
        .unwrap()
        .to_string();
    assert_eq!(resolve_image(&c, &image_spec(None)).await.unwrap().id, ours);
    // An owner the OS pack names is trusted: then the newest image wins.
    let mut spec = image_spec(None);
    spec.os
        .annotations
        .insert("imageOwners".into(), format!(" {STRANGER} ,amazon"));
    let r = spectro_aws::resolve(&c, &spec).await.unwrap();
    assert_eq!(r.image.id, "ami-0badc0ffee0000001");
    assert_eq!(r.root_device_name.as_deref(), Some("/dev/sda1"));
    // A malformed owner is a clear, terminal error.
    spec.os
        .annotations
        .insert("imageOwners".into(), "12345,self".into());
    match resolve_image(&c, &spec).await {
        Err(AwsError::Invalid { field, rule }) => {
            assert!(
                field.contains("imageOwners") && rule.contains("12345"),
                "{field}: {rule}"
            )
        }
        r => panic!("{r:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_group_rules_are_least_privilege_and_ensured() {
    use spectro_aws::network::{delete_network, ensure_network};
    use spectro_aws::security::{rules_of, PortRange, Rule, SecurityPolicy, Source};
    let Some(m) = moto().await else { return };
    let c = conn_for(&m, &account_id()).clients(&creds(), "us-east-1");
    let id = "5f0e2c1a-0000-4000-8000-000000000004";
    let tags: std::collections::BTreeMap<String, String> = [(
        spectro_core::provider::TAG_CLUSTER_ID.to_string(),
        id.to_string(),
    )]
    .into_iter()
    .collect();
    let zones = vec!["us-east-1a".to_string()];
    let calico = SecurityPolicy {
        bastion_cidrs: vec!["203.0.113.0/24".into()],
        ..policy()
    };
    let n = ensure_network(&c, id, "demo", &zones, &tags, &calico)
        .await
        .unwrap();
    let sg = |role: &str| n.security_groups[role].clone();
    // What AWS reports, by role.
    let described = || async {
        let out = c
            .ec2
            .describe_security_groups()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name(format!("tag:{}", spectro_core::provider::TAG_CLUSTER_ID))
                    .values(id)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let mut by_role = std::collections::BTreeMap::new();
        for g in out.security_groups() {
            let role = n
                .security_groups
                .iter()
                .find(|(_, gid)| Some(gid.as_str()) == g.group_id())
                .map(|(r, _)| r.clone())
                .unwrap();
            by_role.insert(role, rules_of(g.ip_permissions()));
        }
        by_role
    };
    let rule = |p: PortRange, s: Source| Rule {
        ports: p,
        source: s,
    };
    let from = |r: &str| Source::Group(sg(r));
    let cidr = |c: &str| Source::Cidr(c.to_string());
    let calico_ports = [
        PortRange::tcp(179, 179),
        PortRange::udp(4789, 4789),
        PortRange::tcp(5473, 5473),
        PortRange::ip(4),
    ];
    let node_rules = |role: &str| {
        let mut r: std::collections::BTreeSet<Rule> = [
            rule(PortRange::tcp(10250, 10250), from("control-plane")),
            rule(PortRange::tcp(22, 22), from("bastion")),
        ]
        .into_iter()
        .collect();
        for p in &calico_ports {
            r.insert(rule(p.clone(), from("control-plane")));
            r.insert(rule(p.clone(), from("worker")));
        }
        if role == "control-plane" {
            r.insert(rule(PortRange::tcp(6443, 6443), from("lb")));
            r.insert(rule(PortRange::tcp(6443, 6443), from("control-plane")));
            r.insert(rule(PortRange::tcp(6443, 6443), from("worker")));
            r.insert(rule(PortRange::tcp(2379, 2380), from("control-plane")));
        } else {
            r.insert(rule(PortRange::tcp(30000, 32767), cidr("10.0.0.0/16")));
        }
        r
    };
    let want = |bastion: &[&str]| {
        let mut w = std::collections::BTreeMap::new();
        w.insert(
            "lb".to_string(),
            [rule(PortRange::tcp(6443, 6443), cidr("0.0.0.0/0"))]
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>(),
        );
        w.insert(
            "bastion".to_string(),
            bastion
                .iter()
                .map(|c| rule(PortRange::tcp(22, 22), cidr(c)))
                .collect(),
        );
        w.insert("control-plane".to_string(), node_rules("control-plane"));
        w.insert("worker".to_string(), node_rules("worker"));
        w
    };
    assert_eq!(described().await, want(&["203.0.113.0/24"]));

    // Behind our back: a rule that does not belong (everything from anywhere on the workers)
    // and a needed one gone (kubelet on the control plane). The next ensure puts it right.
    c.ec2
        .authorize_security_group_ingress()
        .group_id(sg("worker"))
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("-1")
                .ip_ranges(
                    aws_sdk_ec2::types::IpRange::builder()
                        .cidr_ip("0.0.0.0/0")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    c.ec2
        .revoke_security_group_ingress()
        .group_id(sg("control-plane"))
        .ip_permissions(spectro_aws::security::permission(&rule(
            PortRange::tcp(10250, 10250),
            from("control-plane"),
        )))
        .send()
        .await
        .unwrap();
    assert_ne!(described().await, want(&["203.0.113.0/24"]));
    ensure_network(&c, id, "demo", &zones, &tags, &calico)
        .await
        .unwrap();
    assert_eq!(described().await, want(&["203.0.113.0/24"]));

    // The spec changes: no more SSH from that network, and its old rule is revoked.
    ensure_network(&c, id, "demo", &zones, &tags, &policy())
        .await
        .unwrap();
    assert_eq!(described().await, want(&[]));
    assert!(delete_network(&c, id).await.unwrap().is_empty());
}

#[test]
fn bastion_cidrs_are_validated_with_their_field_path() {
    use spectro_core::model::Cluster;
    let cluster = |cidrs: &str| {
        format!(
            "name: web\nprofile: {{ name: moto, version: '1' }}\ncloudAccount: moto\ncloud: {{ aws: {{ region: us-east-1, bastionAllowedCidrs: [{cidrs}] }} }}\nnodePools:\n  - {{ name: master, role: controlPlane, size: 1, instanceType: m5.large, availabilityZones: [us-east-1a] }}\n"
        )
    };
    let ok: Cluster = from_text(&cluster("203.0.113.0/24, '2001:db8::/32'"), Format::Yaml).unwrap();
    let cat = spectro_core::validate::Catalog::default();
    let bastion_violations = |c: &Cluster| {
        spectro_core::validate::validate_cluster(c, &cat)
            .into_iter()
            .filter(|v| v.path.starts_with("cloud.aws.bastionAllowedCidrs"))
            .collect::<Vec<_>>()
    };
    assert!(bastion_violations(&ok).is_empty());
    let host_bits: Cluster =
        from_text(&cluster("203.0.113.0/24, 10.1.2.3/8"), Format::Yaml).unwrap();
    let v = bastion_violations(&host_bits);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].path, "cloud.aws.bastionAllowedCidrs[1]");
    assert!(v[0].rule.contains("10.0.0.0/8"), "{}", v[0].rule);
    let e = from_text::<Cluster>(&cluster("not-a-cidr"), Format::Yaml).unwrap_err();
    assert!(e.path.contains("bastionAllowedCidrs"), "{e:?}");
}

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
use spectro_aws::{caller_account, resolve_image, AwsConnector};
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
        Err(ProviderError::Terminal { message }) => {
            assert!(
                message.contains("ami-0000000000000dead") && message.contains("us-east-1"),
                "{message}"
            )
        }
        r => panic!("{r:?}"),
    }
    // Without an annotation: the newest image named for the packs.
    match resolve_image(&c, &image_spec(None)).await {
        Err(ProviderError::Terminal { message }) => assert!(
            message.contains("spectro-ubuntu-22.04-k8s-1.30.4"),
            "{message}"
        ),
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
        Err(ProviderError::Retryable { message }) => {
            assert!(message.starts_with("GetCallerIdentity"))
        }
        r => panic!("{r:?}"),
    }
    assert!(
        !format!("{c:?}").contains("wJalrXUtnFEMI"),
        "the secret key never prints"
    );
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

    let n = ensure_network(&c, id, "demo", &zones, &tags).await.unwrap();
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
    let again = ensure_network(&c, id, "demo", &zones, &tags).await.unwrap();
    assert_eq!(again, n);
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
    let repaired = ensure_network(&c, id, "demo", &zones, &tags).await.unwrap();
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
    let net = ensure_network(&c, id, "demo", &zones, &tags).await.unwrap();
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

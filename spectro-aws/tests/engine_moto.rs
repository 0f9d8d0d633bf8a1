//! The engine driving the AWS provider against moto: create a 3-AZ cluster (3 control-plane
//! nodes + 2 worker pools), scale, delete; after delete nothing tagged for the cluster
//! remains. Prints the API calls per operation. Also: root volumes from the pool's disk
//! settings, and the load balancer's registrations observed and repaired.
//! Also: the provider conformance kit of spectro-core (every rule of the provider contract).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use spectro_aws::AwsProvider;
use spectro_core::engine::status::Phase;
use spectro_core::model::document::{from_text, Format};
use spectro_core::model::{CloudAccount, Cluster, ClusterProfile};
use spectro_core::provider::TAG_CLUSTER_ID;
use spectro_core::{Engine, EngineConfig, SqliteStore};

const PROFILE: &str = r#"
name: moto
version: '1'
cloud: aws
packs:
  - name: al2023
    layer: os
    version: '2023'
    annotations: { image: ami-03c3da4cfa8e8943a }
  - { name: kubernetes, layer: kubernetes, version: 1.30.4 }
  - { name: calico, layer: cni, version: 3.28.0 }
"#;

const CLUSTER: &str = r#"
name: web
tags: { team: storefront }
profile: { name: moto, version: '1' }
cloudAccount: moto
cloud: { aws: { region: us-east-1 } }
nodePools:
  - { name: master, role: controlPlane, size: 3, instanceType: m5.large, availabilityZones: [us-east-1a, us-east-1b, us-east-1c] }
  - { name: general, role: worker, size: 3, instanceType: t3.micro, diskSizeGb: 40, diskType: gp3, availabilityZones: [us-east-1a, us-east-1b, us-east-1c] }
  - { name: batch, role: worker, size: 2, instanceType: t3.micro, availabilityZones: [us-east-1a, us-east-1b] }
"#;

/// Most API calls creating [`CLUSTER`] may take (84 before issue 13; 58 measured with
/// `first_attempt`, no listing before the infrastructure exists and the load balancer's
/// registrations known; one more allowed for a listing that timing adds).
const CREATE_CALLS: u64 = 59;
/// Most API calls deleting it (after a scale-up to 9 nodes) may take (58 before issue 13; 47
/// measured with `ClusterContext::deleting`; one more allowed for timing).
const DELETE_CALLS: u64 = 48;

/// The calls by operation made between two snapshots of the call counter.
fn calls_since(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) -> std::collections::BTreeMap<String, u64> {
    after
        .iter()
        .map(|(op, n)| (op.clone(), n - before.get(op).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// An engine on `store` with `provider`, the test profile and the moto account.
async fn engine_with(
    store: Arc<SqliteStore>,
    provider: Arc<dyn spectro_core::CloudProvider>,
) -> Engine {
    let engine = Engine::builder(store)
        .provider(provider)
        .config(EngineConfig::for_emulators())
        .start()
        .await
        .unwrap();
    let profile: ClusterProfile = from_text(PROFILE, Format::Yaml).unwrap();
    let account: CloudAccount = from_text(
        "name: moto\ncredentials:\n  aws: {accessKeyId: AKIAIOSFODNN7EXAMPLE, secretAccessKey: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY}\n",
        Format::Yaml,
    )
    .unwrap();
    engine.put_profile(&profile).await.unwrap();
    engine.put_cloud_account(&account).await.unwrap();
    engine
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_lifecycle_on_moto_leaves_nothing_behind() {
    let Some(m) = moto().await else { return };
    let acct = account_id();
    let provider = Arc::new(AwsProvider::new(conn_for(&m, &acct)));
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("aws.db")).unwrap());
    let engine = engine_with(store, provider.clone()).await;
    engine.verify_cloud_account("moto").await.unwrap();
    let mut spec: Cluster = from_text(CLUSTER, Format::Yaml).unwrap();
    // The dry run a user makes first: its reads (permissions, quotas, usage) serve the
    // engine's own pre-check of the create that follows (one view per account and region).
    let before_precheck = provider.calls().snapshot();
    let found = engine.precheck(&spec).await.unwrap();
    assert!(found.passed(), "{}", found.message());
    let prechecked = calls_since(&before_precheck, &provider.calls().snapshot());
    eprintln!(
        "pre-check: {} API calls: {prechecked:?}; not checked: {:?}",
        prechecked.values().sum::<u64>(),
        found.unchecked
    );
    let before_create = provider.calls().snapshot();
    let id = engine.create_cluster(&spec).await.unwrap();
    let rec = engine
        .wait_for_phase(id, Phase::Running, Duration::from_secs(120))
        .await
        .unwrap();
    let created = calls_since(&before_create, &provider.calls().snapshot());
    eprintln!(
        "create: {} API calls: {created:?}",
        created.values().sum::<u64>()
    );
    assert!(
        !created
            .keys()
            .any(|op| op.starts_with("IAM.") || op.starts_with("Service Quotas.")),
        "the create's pre-check used the dry run's view: {created:?}"
    );
    // The provider's own calls (issue 13): one describe per network resource type, none of
    // them again after the creates, no lookup in the VPC just made. The cluster: 3 zones,
    // 3 control-plane nodes, 3 + 2 workers, a bastion.
    let op =
        |c: &std::collections::BTreeMap<String, u64>, name: &str| c.get(name).copied().unwrap_or(0);
    for d in [
        "EC2.DescribeVpcs",
        "EC2.DescribeSubnets",
        "EC2.DescribeInternetGateways",
        "EC2.DescribeAddresses",
        "EC2.DescribeNatGateways",
        "EC2.DescribeRouteTables",
        "EC2.DescribeSecurityGroups",
    ] {
        assert!(op(&created, d) <= 1, "{d}: {created:?}");
    }
    // The registrations this process made and the balancer it created are known: no read
    // of them while the cluster converges, one registration per control-plane node.
    assert_eq!(
        op(&created, "Elastic Load Balancing.DescribeLoadBalancers"),
        0,
        "{created:?}"
    );
    assert_eq!(
        op(
            &created,
            "Elastic Load Balancing.RegisterInstancesWithLoadBalancer"
        ),
        3,
        "{created:?}"
    );
    assert!(
        created.values().sum::<u64>() <= CREATE_CALLS,
        "create: more than {CREATE_CALLS} calls: {created:?}"
    );
    let endpoint = rec
        .status
        .infrastructure
        .as_ref()
        .unwrap()
        .endpoint
        .clone()
        .unwrap();
    assert!(endpoint.ends_with(":6443"), "{endpoint}");

    let c = conn_for(&m, &acct).clients(&creds(), "us-east-1");
    let nodes = spectro_aws::machines::list_machines(&c, &id.to_string())
        .await
        .unwrap();
    assert_eq!(nodes.len(), 8);
    assert_eq!(
        created.get("EC2.RunInstances"),
        Some(&(3 + 3 + 2 + 1)),
        "CP one by one, a call per pool × zone, the bastion"
    );

    // Root volumes: the pool's size and type on the AMI's root device (al2023: /dev/xvda);
    // pools without disk settings keep the AMI's default.
    for n in &nodes {
        let vols = c
            .ec2
            .describe_volumes()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("attachment.instance-id")
                    .values(&n.id)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let vols = vols.volumes();
        assert_eq!(vols.len(), 1, "{}: one root volume", n.name);
        let v = &vols[0];
        if n.pool == "general" {
            assert_eq!(v.size(), Some(40), "{}", n.name);
            assert_eq!(v.volume_type(), Some(&aws_sdk_ec2::types::VolumeType::Gp3));
            assert_eq!(v.attachments()[0].device(), Some("/dev/xvda"));
        } else {
            assert_ne!(v.size(), Some(40), "{}", n.name);
        }
    }

    // Steady-state resync: one DescribeInstances and one DescribeLoadBalancers (the
    // registrations are observed too).
    let before = provider.calls().snapshot();
    engine.resync(id);
    tokio::time::sleep(Duration::from_millis(300)).await;
    engine.wait_idle().await;
    let after = provider.calls().snapshot();
    let resync = after.values().sum::<u64>() - before.values().sum::<u64>();
    eprintln!("resync: {resync} API call(s)");
    assert_eq!(resync, 2, "{before:?} -> {after:?}");
    let lb_reads = |c: &std::collections::BTreeMap<String, u64>| {
        c.get("Elastic Load Balancing.DescribeLoadBalancers")
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(lb_reads(&after), lb_reads(&before) + 1);

    // Scale a pool.
    spec.node_pools[1].size = 4;
    engine.update_cluster(id, &spec).await.unwrap();
    engine
        .wait_for_phase(id, Phase::Running, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        spectro_aws::machines::list_machines(&c, &id.to_string())
            .await
            .unwrap()
            .len(),
        9
    );

    // Delete: nothing tagged for the cluster remains.
    let before = provider.calls().snapshot();
    engine.delete_cluster(id).await.unwrap();
    engine
        .wait_for_phase(id, Phase::Deleted, Duration::from_secs(120))
        .await
        .unwrap();
    let deleted = calls_since(&before, &provider.calls().snapshot());
    eprintln!(
        "delete: {} API calls: {deleted:?}",
        deleted.values().sum::<u64>()
    );
    // One observation and one check of what outlives the VPC; only the references of the
    // control plane / worker cycle revoked; no route-table walk beyond the associations.
    assert!(op(&deleted, "EC2.DescribeVpcs") <= 2, "{deleted:?}");
    assert!(op(&deleted, "EC2.DescribeSubnets") <= 1, "{deleted:?}");
    assert!(op(&deleted, "EC2.DescribeRouteTables") <= 1, "{deleted:?}");
    assert!(op(&deleted, "EC2.DescribeNatGateways") <= 2, "{deleted:?}");
    // A cluster being deleted: no registration repaired or read, no node taken out of an
    // endpoint that goes too, the balancer deleted once; the nodes terminated in one call,
    // the bastion in another.
    for none in [
        "Elastic Load Balancing.DescribeLoadBalancers",
        "Elastic Load Balancing.DeregisterInstancesFromLoadBalancer",
        "Elastic Load Balancing.RegisterInstancesWithLoadBalancer",
    ] {
        assert_eq!(op(&deleted, none), 0, "{none}: {deleted:?}");
    }
    assert_eq!(
        op(&deleted, "Elastic Load Balancing.DeleteLoadBalancer"),
        1,
        "{deleted:?}"
    );
    assert_eq!(op(&deleted, "EC2.TerminateInstances"), 2, "{deleted:?}");
    assert!(
        op(&deleted, "EC2.RevokeSecurityGroupIngress") <= 1,
        "{deleted:?}"
    );
    assert!(
        deleted.values().sum::<u64>() <= DELETE_CALLS,
        "delete: more than {DELETE_CALLS} calls: {deleted:?}"
    );
    let tag = aws_sdk_ec2::types::Filter::builder()
        .name(format!("tag:{TAG_CLUSTER_ID}"))
        .values(id.to_string())
        .build();
    assert!(c
        .ec2
        .describe_vpcs()
        .filters(tag.clone())
        .send()
        .await
        .unwrap()
        .vpcs()
        .is_empty());
    assert!(c
        .ec2
        .describe_subnets()
        .filters(tag.clone())
        .send()
        .await
        .unwrap()
        .subnets()
        .is_empty());
    assert!(c
        .ec2
        .describe_internet_gateways()
        .filters(tag.clone())
        .send()
        .await
        .unwrap()
        .internet_gateways()
        .is_empty());
    assert!(c
        .ec2
        .describe_addresses()
        .filters(tag.clone())
        .send()
        .await
        .unwrap()
        .addresses()
        .is_empty());
    assert!(c
        .ec2
        .describe_route_tables()
        .filters(tag.clone())
        .send()
        .await
        .unwrap()
        .route_tables()
        .is_empty());
    assert!(c
        .ec2
        .describe_security_groups()
        .filters(tag.clone())
        .send()
        .await
        .unwrap()
        .security_groups()
        .is_empty());
    let instances = c
        .ec2
        .describe_instances()
        .filters(tag)
        .send()
        .await
        .unwrap();
    assert!(instances
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .all(|i| i.state().and_then(|s| s.name())
            == Some(&aws_sdk_ec2::types::InstanceStateName::Terminated)));
    let lbs = conn_for(&m, &acct)
        .elb_client(&creds(), "us-east-1")
        .describe_load_balancers()
        .send()
        .await
        .unwrap();
    assert!(lbs.load_balancer_descriptions().is_empty());
    engine.shutdown().await;
}

/// A provider that hangs forever right after its first RunInstances took effect: the engine
/// never records the result (the crash CAPA #5794 is about).
struct HangAfterFirstCreate {
    inner: Arc<AwsProvider>,
    hung: std::sync::atomic::AtomicBool,
    crashed: Arc<tokio::sync::Notify>,
}

#[async_trait::async_trait]
impl spectro_core::CloudProvider for HangAfterFirstCreate {
    fn cloud(&self) -> spectro_core::model::CloudType {
        self.inner.cloud()
    }
    fn user_data_limit(&self) -> Option<usize> {
        self.inner.user_data_limit()
    }
    async fn validate_account(
        &self,
        a: &CloudAccount,
    ) -> Result<(), spectro_core::provider::ProviderError> {
        self.inner.validate_account(a).await
    }
    async fn ensure_image(
        &self,
        c: &spectro_core::provider::ClusterContext,
        s: &spectro_core::provider::ImageSpec,
    ) -> Result<spectro_core::provider::ImageRef, spectro_core::provider::ProviderError> {
        self.inner.ensure_image(c, s).await
    }
    async fn ensure_infrastructure(
        &self,
        c: &spectro_core::provider::ClusterContext,
    ) -> Result<spectro_core::provider::InfraStatus, spectro_core::provider::ProviderError> {
        self.inner.ensure_infrastructure(c).await
    }
    async fn list_machines(
        &self,
        c: &spectro_core::provider::ClusterContext,
    ) -> Result<Vec<spectro_core::provider::Machine>, spectro_core::provider::ProviderError> {
        self.inner.list_machines(c).await
    }
    async fn create_machines(
        &self,
        c: &spectro_core::provider::ClusterContext,
        i: &spectro_core::provider::InfraStatus,
        b: &spectro_core::provider::MachineBatch,
    ) -> Result<Vec<spectro_core::provider::Machine>, spectro_core::provider::ProviderError> {
        let r = self.inner.create_machines(c, i, b).await;
        if !self.hung.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.crashed.notify_one();
            std::future::pending::<()>().await;
        }
        r
    }
    async fn delete_machines(
        &self,
        c: &spectro_core::provider::ClusterContext,
        m: &[spectro_core::provider::Machine],
    ) -> Result<(), spectro_core::provider::ProviderError> {
        self.inner.delete_machines(c, m).await
    }
    async fn delete_infrastructure(
        &self,
        c: &spectro_core::provider::ClusterContext,
    ) -> Result<spectro_core::provider::DeleteStatus, spectro_core::provider::ProviderError> {
        self.inner.delete_infrastructure(c).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_run_instances_and_record_then_restarted_launches_no_duplicate() {
    let Some(m) = moto().await else { return };
    let acct = account_id();
    let aws = Arc::new(AwsProvider::new(conn_for(&m, &acct)));
    let crashed = Arc::new(tokio::sync::Notify::new());
    let hanging = Arc::new(HangAfterFirstCreate {
        inner: aws.clone(),
        hung: std::sync::atomic::AtomicBool::new(false),
        crashed: crashed.clone(),
    });
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("crash.db")).unwrap());
    let engine = engine_with(store.clone(), hanging).await;
    let spec: Cluster = from_text(CLUSTER, Format::Yaml).unwrap();
    let id = engine.create_cluster(&spec).await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), crashed.notified())
        .await
        .unwrap();
    drop(engine); // the crash: the first control-plane node exists, the engine never heard

    let engine = Engine::builder(store)
        .provider(aws.clone())
        .config(EngineConfig::for_emulators())
        .start()
        .await
        .unwrap();
    engine
        .wait_for_phase(id, Phase::Running, Duration::from_secs(120))
        .await
        .unwrap();
    let c = conn_for(&m, &acct).clients(&creds(), "us-east-1");
    let nodes = spectro_aws::machines::list_machines(&c, &id.to_string())
        .await
        .unwrap();
    assert_eq!(nodes.len(), 8, "exactly the desired nodes");
    let mut names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 8, "no name twice");
    assert_eq!(
        aws.calls().snapshot().get("EC2.RunInstances"),
        Some(&(3 + 3 + 2 + 1)),
        "nothing launched twice"
    );
    engine.delete_cluster(id).await.unwrap();
    engine
        .wait_for_phase(id, Phase::Deleted, Duration::from_secs(120))
        .await
        .unwrap();
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_throttling_is_retried_and_the_cluster_converges() {
    let Some(m) = moto().await else { return };
    let acct = account_id();
    let throttle = Arc::new(spectro_aws::InjectThrottling::new(4));
    let aws = Arc::new(AwsProvider::new(
        conn_for(&m, &acct).with_injected_throttling(throttle.clone()),
    ));
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("t.db")).unwrap());
    let engine = engine_with(store, aws.clone()).await;
    let spec: Cluster = from_text(CLUSTER, Format::Yaml).unwrap();
    let id = engine.create_cluster(&spec).await.unwrap();
    engine
        .wait_for_phase(id, Phase::Running, Duration::from_secs(180))
        .await
        .unwrap();
    assert!(throttle.injected() > 0, "throttling was injected");
    let c = conn_for(&m, &acct).clients(&creds(), "us-east-1");
    assert_eq!(
        spectro_aws::machines::list_machines(&c, &id.to_string())
            .await
            .unwrap()
            .len(),
        8,
        "no duplicate under throttling"
    );
    eprintln!(
        "{} throttled responses over {} attempts",
        throttle.injected(),
        aws.calls().total()
    );
    engine.delete_cluster(id).await.unwrap();
    engine
        .wait_for_phase(id, Phase::Deleted, Duration::from_secs(180))
        .await
        .unwrap();
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_placement_leaves_the_users_vpc_and_subnets_intact() {
    let Some(m) = moto().await else { return };
    let acct = account_id();
    let c = conn_for(&m, &acct).clients(&creds(), "us-east-1");
    // The user's network, created outside spectro (no spectro tags).
    let vpc = c
        .ec2
        .create_vpc()
        .cidr_block("10.1.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc()
        .unwrap()
        .vpc_id()
        .unwrap()
        .to_string();
    let mut subnets_yaml = String::new();
    let mut theirs = vec![vpc.clone()];
    for (i, zone) in ["us-east-1a", "us-east-1b"].iter().enumerate() {
        let private = c
            .ec2
            .create_subnet()
            .vpc_id(&vpc)
            .availability_zone(*zone)
            .cidr_block(format!("10.1.{}.0/24", i))
            .send()
            .await
            .unwrap();
        let public = c
            .ec2
            .create_subnet()
            .vpc_id(&vpc)
            .availability_zone(*zone)
            .cidr_block(format!("10.1.{}.0/24", 100 + i))
            .send()
            .await
            .unwrap();
        let (p, q) = (
            private.subnet().unwrap().subnet_id().unwrap(),
            public.subnet().unwrap().subnet_id().unwrap(),
        );
        subnets_yaml.push_str(&format!(
            "        - {{ zone: {zone}, privateSubnetId: {p}, publicSubnetId: {q} }}\n"
        ));
        theirs.push(p.to_string());
        theirs.push(q.to_string());
    }
    let cluster = format!(
        "name: static\nprofile: {{ name: moto, version: '1' }}\ncloudAccount: moto\ncloud:\n  aws:\n    region: us-east-1\n    staticPlacement:\n      vpcId: {vpc}\n      subnets:\n{subnets_yaml}nodePools:\n  - {{ name: master, role: controlPlane, size: 1, instanceType: m5.large, availabilityZones: [us-east-1a] }}\n  - {{ name: workers, role: worker, size: 2, instanceType: t3.micro, availabilityZones: [us-east-1a, us-east-1b] }}\n"
    );
    let spec: Cluster = from_text(&cluster, Format::Yaml).unwrap();
    let aws = Arc::new(AwsProvider::new(conn_for(&m, &acct)));
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("s.db")).unwrap());
    let engine = engine_with(store, aws).await;
    let id = engine.create_cluster(&spec).await.unwrap();
    engine
        .wait_for_phase(id, Phase::Running, Duration::from_secs(120))
        .await
        .unwrap();
    let nodes = spectro_aws::machines::list_machines(&c, &id.to_string())
        .await
        .unwrap();
    assert_eq!(nodes.len(), 3);
    engine.delete_cluster(id).await.unwrap();
    engine
        .wait_for_phase(id, Phase::Deleted, Duration::from_secs(120))
        .await
        .unwrap();
    // Theirs intact, ours gone.
    assert_eq!(
        c.ec2
            .describe_vpcs()
            .vpc_ids(&vpc)
            .send()
            .await
            .unwrap()
            .vpcs()
            .len(),
        1
    );
    let subnets = c
        .ec2
        .describe_subnets()
        .set_subnet_ids(Some(theirs[1..].to_vec()))
        .send()
        .await
        .unwrap();
    assert_eq!(subnets.subnets().len(), 4);
    let tag = aws_sdk_ec2::types::Filter::builder()
        .name(format!("tag:{TAG_CLUSTER_ID}"))
        .values(id.to_string())
        .build();
    assert!(c
        .ec2
        .describe_security_groups()
        .filters(tag)
        .send()
        .await
        .unwrap()
        .security_groups()
        .is_empty());
    engine.shutdown().await;
}

/// The instances registered on the cluster's load balancer.
async fn registered(m: &Moto, acct: &str, id: &str) -> std::collections::BTreeSet<String> {
    conn_for(m, acct)
        .elb_client(&creds(), "us-east-1")
        .describe_load_balancers()
        .load_balancer_names(spectro_aws::provider::lb_name(id))
        .send()
        .await
        .unwrap()
        .load_balancer_descriptions()[0]
        .instances()
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_registrations_are_observed_and_repaired() {
    let Some(m) = moto().await else { return };
    let acct = account_id();
    let aws = Arc::new(AwsProvider::new(conn_for(&m, &acct)));
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("lb.db")).unwrap());
    let engine = engine_with(store, aws.clone()).await;
    let mut spec: Cluster = from_text(
        "name: lb\nprofile: { name: moto, version: '1' }\ncloudAccount: moto\ncloud: { aws: { region: us-east-1 } }\nnodePools:\n  - { name: master, role: controlPlane, size: 1, instanceType: m5.large, availabilityZones: [us-east-1a] }\n  - { name: workers, role: worker, size: 1, instanceType: t3.micro, availabilityZones: [us-east-1a] }\n",
        Format::Yaml,
    )
    .unwrap();
    let id = engine.create_cluster(&spec).await.unwrap();
    engine
        .wait_for_phase(id, Phase::Running, Duration::from_secs(120))
        .await
        .unwrap();
    let c = conn_for(&m, &acct).clients(&creds(), "us-east-1");
    let cp = |nodes: &[spectro_core::provider::Machine]| -> std::collections::BTreeSet<String> {
        nodes
            .iter()
            .filter(|n| n.pool == "master")
            .map(|n| n.id.clone())
            .collect()
    };
    let nodes = spectro_aws::machines::list_machines(&c, &id.to_string())
        .await
        .unwrap();
    let first = cp(&nodes);
    assert_eq!(first.len(), 1);
    assert_eq!(registered(&m, &acct, &id.to_string()).await, first);

    // Behind the provider's back (or a crash right after RunInstances): the node leaves the
    // endpoint. The next reconcile's observation puts it back.
    conn_for(&m, &acct)
        .elb_client(&creds(), "us-east-1")
        .deregister_instances_from_load_balancer()
        .load_balancer_name(spectro_aws::provider::lb_name(&id.to_string()))
        .instances(
            aws_sdk_elasticloadbalancing::types::Instance::builder()
                .instance_id(first.iter().next().unwrap())
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(registered(&m, &acct, &id.to_string()).await.is_empty());
    engine.resync(id);
    tokio::time::sleep(Duration::from_millis(300)).await;
    engine.wait_idle().await;
    assert_eq!(registered(&m, &acct, &id.to_string()).await, first);

    // A control-plane replacement (new instance type): the new node is registered, the old
    // one is not.
    spec.node_pools[0].instance_type = Some("m5.xlarge".into());
    engine.update_cluster(id, &spec).await.unwrap();
    engine
        .wait_for_phase(id, Phase::Running, Duration::from_secs(120))
        .await
        .unwrap();
    let nodes = spectro_aws::machines::list_machines(&c, &id.to_string())
        .await
        .unwrap();
    let live: Vec<&spectro_core::provider::Machine> = nodes
        .iter()
        .filter(|n| n.pool == "master" && n.state != spectro_core::provider::MachineState::Deleting)
        .collect();
    assert_eq!(live.len(), 1, "{nodes:?}");
    assert!(!first.contains(&live[0].id), "replaced");
    engine.resync(id);
    tokio::time::sleep(Duration::from_millis(300)).await;
    engine.wait_idle().await;
    let now = registered(&m, &acct, &id.to_string()).await;
    assert_eq!(
        now,
        [live[0].id.clone()].into_iter().collect(),
        "only the new control-plane node serves the API"
    );
    // A gone instance registered behind our back is deregistered by the next observation.
    conn_for(&m, &acct)
        .elb_client(&creds(), "us-east-1")
        .register_instances_with_load_balancer()
        .load_balancer_name(spectro_aws::provider::lb_name(&id.to_string()))
        .instances(
            aws_sdk_elasticloadbalancing::types::Instance::builder()
                .instance_id(first.iter().next().unwrap())
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(registered(&m, &acct, &id.to_string()).await.len(), 2);
    engine.resync(id);
    // The resync's observation (a fresh fleet listing) repairs it; a transient failure of
    // that reconcile is retried.
    let deadline = spectro_core::clock::instant_now() + Duration::from_secs(20);
    while registered(&m, &acct, &id.to_string()).await != now {
        assert!(
            spectro_core::clock::instant_now() < deadline,
            "still registered: {:?}",
            registered(&m, &acct, &id.to_string()).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    engine.delete_cluster(id).await.unwrap();
    engine
        .wait_for_phase(id, Phase::Deleted, Duration::from_secs(120))
        .await
        .unwrap();
    engine.shutdown().await;
}

/// The provider conformance kit's harness for AWS on moto.
struct MotoHarness {
    url: String,
    acct: String,
    provider: Arc<AwsProvider>,
}

impl MotoHarness {
    fn connector(&self) -> spectro_aws::AwsConnector {
        spectro_aws::AwsConnector::default()
            .with_endpoint(&self.url)
            .with_header("x-moto-account-id", &self.acct)
            .with_max_attempts(2)
            .with_max_backoff(Duration::from_millis(200))
    }
}

/// A small cluster for the kit: one zone, the workers on t3.micro.
const CONFORMANCE_CLUSTER: &str = r#"
name: x
tags: { team: storefront }
profile: { name: moto, version: '1' }
cloudAccount: moto
cloud: { aws: { region: us-east-1 } }
nodePools:
  - { name: master, role: controlPlane, size: 1, instanceType: m5.large, availabilityZones: [us-east-1a] }
  - { name: general, role: worker, size: 1, instanceType: t3.micro, availabilityZones: [us-east-1a] }
"#;

#[async_trait::async_trait]
impl spectro_core::conformance::ProviderHarness for MotoHarness {
    fn name(&self) -> String {
        "aws on moto".into()
    }

    fn provider(&self) -> Arc<dyn spectro_core::CloudProvider> {
        self.provider.clone()
    }

    fn fresh_provider(&self) -> Option<Arc<dyn spectro_core::CloudProvider>> {
        Some(Arc::new(AwsProvider::new(self.connector())))
    }

    fn cluster(&self, name: &str) -> spectro_core::provider::ClusterContext {
        let mut spec: Cluster = from_text(CONFORMANCE_CLUSTER, Format::Yaml).unwrap();
        spec.name = name.to_string();
        spectro_core::provider::ClusterContext {
            cluster_id: spectro_core::ClusterId::new(),
            spec,
            profile: from_text(PROFILE, Format::Yaml).unwrap(),
            account: from_text(
                "name: moto\ncredentials:\n  aws: {accessKeyId: AKIAIOSFODNN7EXAMPLE, secretAccessKey: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY}\n",
                Format::Yaml,
            )
            .unwrap(),
            vip: None,
            image: None,
            deleting: false,
        }
    }

    fn missing_image(&self) -> Option<String> {
        Some("ami-0000000000000dead".into())
    }

    /// EC2 tags by resource id (DescribeTags), the ELB's by name.
    async fn tags(
        &self,
        _ctx: &spectro_core::provider::ClusterContext,
        r: &spectro_core::provider::CloudResource,
    ) -> Option<Result<std::collections::BTreeMap<String, String>, String>> {
        let conn = self.connector();
        let out = if r.kind == "load-balancer" {
            conn.elb_client(&creds(), "us-east-1")
                .describe_tags()
                .load_balancer_names(&r.id)
                .send()
                .await
                .map(|o| {
                    o.tag_descriptions()
                        .iter()
                        .flat_map(|d| d.tags())
                        .map(|t| {
                            (
                                t.key().to_string(),
                                t.value().unwrap_or_default().to_string(),
                            )
                        })
                        .collect()
                })
                .map_err(|e| format!("{e:?}"))
        } else {
            conn.clients(&creds(), "us-east-1")
                .ec2
                .describe_tags()
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("resource-id")
                        .values(&r.id)
                        .build(),
                )
                .send()
                .await
                .map(|o| {
                    o.tags()
                        .iter()
                        .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                        .collect()
                })
                .map_err(|e| format!("{e:?}"))
        };
        Some(out)
    }

    fn not_applicable(&self) -> Vec<(spectro_core::contract::Rule, String)> {
        vec![(
            spectro_core::contract::Rule::P3,
            "moto accepts any credentials (it authenticates nothing without IAM set up)".into(),
        )]
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(120)
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(200)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_provider_conforms_to_the_provider_contract_on_moto() {
    let Some(m) = moto().await else { return };
    let acct = account_id();
    let harness = MotoHarness {
        url: m.url.clone(),
        acct: acct.clone(),
        provider: Arc::new(AwsProvider::new(conn_for(&m, &acct))),
    };
    let report = spectro_core::conformance::run(&harness).await;
    eprintln!("{report}");
    eprintln!(
        "API calls of the run: {:?}",
        harness.provider.calls().snapshot()
    );
    report.assert_conforms();
    // Nothing of the kit's clusters is left: no VPC, no live instance.
    let c = conn_for(&m, &acct).clients(&creds(), "us-east-1");
    let vpcs = c.ec2.describe_vpcs().send().await.unwrap();
    assert!(
        vpcs.vpcs().iter().all(|v| v.is_default() == Some(true)),
        "{:?}",
        vpcs.vpcs()
    );
}

const FLEET_CLUSTER: &str = r#"
name: fleet
profile: { name: moto, version: '1' }
cloudAccount: moto
cloud: { aws: { region: us-east-1 } }
nodePools:
  - { name: master, role: controlPlane, size: 1, instanceType: t3.micro, availabilityZones: [us-east-1a] }
  - { name: general, role: worker, size: 1, instanceType: t3.micro, availabilityZones: [us-east-1a] }
"#;

fn aws_account(name: &str, key: &str) -> CloudAccount {
    from_text(
        &format!("name: {name}\ncredentials:\n  aws: {{accessKeyId: {key}, secretAccessKey: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY}}\n"),
        Format::Yaml,
    )
    .unwrap()
}

fn fleet_cluster(name: &str, account: &str) -> Cluster {
    let mut c: Cluster = from_text(FLEET_CLUSTER, Format::Yaml).unwrap();
    c.name = name.into();
    c.cloud_account = account.into();
    c
}

async fn wait_running(engine: &Engine, ids: &[spectro_core::ClusterId], t: Duration) {
    for id in ids {
        engine.wait_for_phase(*id, Phase::Running, t).await.unwrap();
    }
}

/// Clusters of one account created together on moto, under the account's request budget:
/// calls per cluster, the peak per second of each class, the reads of one resync of all of
/// them; then an account whose budget is used up does not slow another account. 40 clusters
/// by default (`SPECTRO_FLEET_CLUSTERS=200` for the issue's figure: moto answers ~15 calls/s
/// once it holds 200 VPCs, so that run takes over ten minutes on 2 cores).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clusters_share_one_budget_and_one_listing() {
    use spectro_aws::AwsLimits;
    use spectro_core::budget::{Limits, Rate};
    let Some(m) = moto().await else { return };
    let acct = account_id();
    // Budgets: the moto account as EC2's shape (reads, writes and instances apart) at rates
    // moto keeps up with on 2 cores. The busy account: a budget far below its clusters'
    // needs (its reconciles wait for permits all along) and small enough not to load moto
    // itself, which serves every account from one Python process (~10 calls/s once it holds
    // 40 VPCs).
    let fleet_limits = Limits::new(Rate::new(200.0, 100.0), Rate::new(100.0, 100.0))
        .with_instances(Rate::new(50.0, 100.0));
    let busy_limits =
        Limits::new(Rate::new(2.0, 1.0), Rate::new(0.5, 1.0)).with_instances(Rate::new(0.5, 1.0));
    // moto does not enforce quotas but Service Quotas answers AWS's defaults (5 VPCs per
    // region...): the fleet's account is one whose quotas were raised.
    use spectro_aws::precheck::codes;
    let provider = Arc::new(
        AwsProvider::new(
            conn_for(&m, &acct)
                .with_limits(AwsLimits::all(fleet_limits.clone()))
                .with_account_limits("AKIABUSYACCOUNT00001", AwsLimits::all(busy_limits)),
        )
        .with_quota(codes::VCPUS, 100_000)
        .with_quota(codes::VPCS, 1_000)
        .with_quota(codes::IGWS, 1_000)
        .with_quota(codes::NATS, 1_000)
        .with_quota(codes::EIPS, 1_000)
        .with_quota(codes::ELBS, 1_000),
    );
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("fleet.db")).unwrap());
    let engine = engine_with(store, provider.clone()).await;
    engine
        .put_cloud_account(&aws_account("quiet", "AKIAQUIETACCOUNT0001"))
        .await
        .unwrap();
    engine
        .put_cloud_account(&aws_account("busy", "AKIABUSYACCOUNT00001"))
        .await
        .unwrap();

    // One cluster alone first: its calls are the reference.
    let alone = engine
        .create_cluster(&fleet_cluster("alone", "quiet"))
        .await
        .unwrap();
    wait_running(&engine, &[alone], Duration::from_secs(120)).await;
    let one = provider.calls().total();

    let n: usize = std::env::var("SPECTRO_FLEET_CLUSTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let before = provider.calls().total();
    let t0 = spectro_core::clock::instant_now();
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(
            engine
                .create_cluster(&fleet_cluster(&format!("f{i}"), "moto"))
                .await
                .unwrap(),
        );
    }
    let progress = {
        let provider = provider.clone();
        let engine = engine.clone();
        let ids = ids.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(15)).await;
                let mut running = 0;
                for id in &ids {
                    if engine
                        .cluster(*id)
                        .await
                        .is_ok_and(|r| r.status.phase == Phase::Running)
                    {
                        running += 1;
                    }
                }
                let granted: Vec<(String, u64)> = provider
                    .connector()
                    .budget_stats()
                    .into_iter()
                    .flat_map(|(k, s)| {
                        s.classes
                            .into_iter()
                            .map(move |(c, st)| (format!("{k}/{c}"), st.granted))
                    })
                    .filter(|(k, _)| k.starts_with("AKIAIOSFODNN7EXAMPLE"))
                    .collect();
                eprintln!(
                    "progress: {running} of {} running, {} calls; granted {granted:?}",
                    ids.len(),
                    provider.calls().total()
                );
            }
        })
    };
    wait_running(&engine, &ids, Duration::from_secs(900)).await;
    progress.abort();
    let took = t0.elapsed();
    let calls = provider.calls().total() - before;
    let stats = provider_budget(&provider, "AKIAIOSFODNN7EXAMPLE");
    eprintln!(
        "{n} clusters on moto in {took:?}: {calls} calls, {:.1} per cluster (one alone: {one}); \
         budgets: {stats:#?}",
        calls as f64 / n as f64
    );
    assert!(
        calls as f64 / n as f64 <= one as f64 * 1.1,
        "calls per cluster grew with the fleet"
    );
    for (service, s) in &stats {
        for (class, rate) in [
            ("read", fleet_limits.read),
            ("mutate", fleet_limits.mutate),
            ("instances", fleet_limits.instances),
        ] {
            let rate = rate.unwrap();
            let peak = s.classes[class].peak_per_second;
            assert!(
                peak as f64 <= rate.burst + rate.per_second,
                "{service} {class}: {peak} in one second over {rate:?}"
            );
        }
    }

    // Steady state: one resync of all 201 converged clusters.
    let before = provider.calls().snapshot();
    engine.resync_all().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    engine.wait_idle().await;
    let after = provider.calls().snapshot();
    let delta =
        |op: &str| after.get(op).copied().unwrap_or(0) - before.get(op).copied().unwrap_or(0);
    let reads =
        delta("EC2.DescribeInstances") + delta("Elastic Load Balancing.DescribeLoadBalancers");
    let total = after.values().sum::<u64>() - before.values().sum::<u64>();
    eprintln!(
        "one resync of all {} clusters in 2 accounts: {total} calls ({reads} listings)",
        n + 1
    );
    assert!(total <= 4, "{before:?} -> {after:?}");

    // An account whose budget is used up (50 clusters on a small budget) does not slow a
    // cluster of another account. The reference: a cluster of that account alone, on moto
    // as it is now (moto answers slower the more it holds).
    let t0 = spectro_core::clock::instant_now();
    let alone = engine
        .create_cluster(&fleet_cluster("alone-now", "quiet"))
        .await
        .unwrap();
    wait_running(&engine, &[alone], Duration::from_secs(120)).await;
    let took_alone = t0.elapsed();
    for i in 0..50 {
        engine
            .create_cluster(&fleet_cluster(&format!("busy{i}"), "busy"))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = spectro_core::clock::instant_now();
    let quiet = engine
        .create_cluster(&fleet_cluster("quiet", "quiet"))
        .await
        .unwrap();
    wait_running(&engine, &[quiet], Duration::from_secs(120)).await;
    let took_quiet = t0.elapsed();
    eprintln!(
        "a cluster of another account next to the busy one: {took_quiet:?} ({took_alone:?} alone); busy budget: {:?}",
        provider_budget(&provider, "AKIABUSYACCOUNT00001")
    );
    assert!(
        // Moto and the engine share 2 cores: the busy account's creations cost some CPU.
        // (The simulated cloud's version of this test, tests/economy.rs, has no such noise.)
        took_quiet < took_alone * 2 + Duration::from_secs(2),
        "{took_quiet:?} vs {took_alone:?} alone"
    );
    engine.shutdown().await;
}

fn provider_budget(
    provider: &AwsProvider,
    key: &str,
) -> std::collections::BTreeMap<String, spectro_core::budget::BudgetStats> {
    provider
        .connector()
        .budget_stats()
        .into_iter()
        .filter(|(k, _)| k.starts_with(key))
        .collect()
}

/// Pre-checks against moto, before anything is created:
/// - permissions: moto has no `iam:SimulatePrincipalPolicy`, so the user's own policies
///   are judged (a managed policy with wildcards lacking two actions, a group's inline policy
///   denying a third): every missing action named at once;
/// - capacity: Service Quotas (moto answers the VPC service's defaults; EC2's quotas come
///   from `DescribeAccountAttributes`) minus what the region holds: VPCs, Elastic IPs and
///   instances used up by the test, all three shortfalls in one message; the engine's create
///   fails `Creating Infrastructure` with `PrecheckFailed` and creates nothing;
/// - reservations: once capacity is freed, the first of two clusters passes and holds the
///   last VPC; the second is told so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prechecks_name_missing_permissions_and_shortfalls_before_anything_is_created() {
    use spectro_core::records::condition::{ConditionStatus, ConditionType};
    let Some(m) = moto().await else { return };
    let acct = account_id();
    let conn = conn_for(&m, &acct);
    let admin = conn.clients(&creds(), "us-east-1");
    let iam = conn.iam_client(&creds(), "us-east-1");

    // A user with the provider's actions but ec2:CreateNatGateway and
    // elasticloadbalancing:CreateLoadBalancer (reads granted by wildcard), in a group that
    // denies ec2:DeleteVpc.
    let granted: Vec<&str> = spectro_aws::precheck::REQUIRED_ACTIONS
        .iter()
        .copied()
        .filter(|a| {
            !a.contains(":Describe")
                && *a != "ec2:CreateNatGateway"
                && *a != "elasticloadbalancing:CreateLoadBalancer"
        })
        .chain(["ec2:Describe*", "elasticloadbalancing:Describe*"])
        .collect();
    let policy = serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": granted, "Resource": "*"}
    ]});
    iam.create_user().user_name("spectro").send().await.unwrap();
    let arn = iam
        .create_policy()
        .policy_name("spectro-clusters")
        .policy_document(policy.to_string())
        .send()
        .await
        .unwrap()
        .policy()
        .and_then(|p| p.arn().map(str::to_string))
        .unwrap();
    iam.attach_user_policy()
        .user_name("spectro")
        .policy_arn(&arn)
        .send()
        .await
        .unwrap();
    iam.create_group()
        .group_name("guarded")
        .send()
        .await
        .unwrap();
    iam.put_group_policy()
        .group_name("guarded")
        .policy_name("no-vpc-delete")
        .policy_document(
            serde_json::json!({"Version": "2012-10-17", "Statement": [
                {"Effect": "Deny", "Action": "ec2:DeleteVpc", "Resource": "*"}
            ]})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    iam.add_user_to_group()
        .group_name("guarded")
        .user_name("spectro")
        .send()
        .await
        .unwrap();
    let key = iam
        .create_access_key()
        .user_name("spectro")
        .send()
        .await
        .unwrap();
    let key = key.access_key().unwrap();
    let limited: CloudAccount = from_text(
        &format!(
            "name: limited\ncredentials:\n  aws: {{accessKeyId: {}, secretAccessKey: {}}}\n",
            key.access_key_id(),
            key.secret_access_key()
        ),
        Format::Yaml,
    )
    .unwrap();

    let provider =
        Arc::new(AwsProvider::new(conn_for(&m, &acct)).with_precheck_ttl(Duration::from_secs(3)));
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("pre.db")).unwrap());
    let engine = engine_with(store, provider.clone()).await;
    engine.put_cloud_account(&limited).await.unwrap();

    let mut spec: Cluster = from_text(CLUSTER, Format::Yaml).unwrap();
    spec.cloud_account = "limited".into();
    let found = engine.precheck(&spec).await.unwrap();
    assert_eq!(
        found.missing_permissions,
        vec![
            "ec2:CreateNatGateway",
            "ec2:DeleteVpc",
            "elasticloadbalancing:CreateLoadBalancer"
        ],
        "{found:?}"
    );
    assert!(
        found.message().contains("lacks 3 permissions: ec2:CreateNatGateway, ec2:DeleteVpc, elasticloadbalancing:CreateLoadBalancer"),
        "{}",
        found.message()
    );
    assert!(
        found
            .unchecked
            .iter()
            .any(|u| u.contains("user/spectro's own policies")
                && u.contains("SimulatePrincipalPolicy")),
        "{:?}",
        found.unchecked
    );

    // Capacity: 4 more VPCs (moto's default VPC is the fifth of 5), 4 Elastic IPs (1 of 5
    // left, 3 zones need 3), 14 instances (6 of 20 left, the cluster needs 9 with its bastion).
    for i in 0..4 {
        admin
            .ec2
            .create_vpc()
            .cidr_block(format!("10.{}.0.0/16", 100 + i))
            .send()
            .await
            .unwrap();
        admin.ec2.allocate_address().send().await.unwrap();
    }
    admin
        .ec2
        .run_instances()
        .image_id("ami-03c3da4cfa8e8943a")
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(14)
        .max_count(14)
        .send()
        .await
        .unwrap();
    let spec: Cluster = from_text(CLUSTER, Format::Yaml).unwrap();
    let found = engine.precheck(&spec).await.unwrap();
    assert!(found.missing_permissions.is_empty(), "{found:?}");
    let short: Vec<String> = found.shortfalls.iter().map(ToString::to_string).collect();
    assert_eq!(short.len(), 3, "{short:#?}");
    assert!(
        short[0].starts_with("running instances in us-east-1 (quota 20, 14 in use): needs 9 instances, 6 left (short by 3)"),
        "{}",
        short[0]
    );
    assert!(
        short[1].starts_with("VPCs in us-east-1 (quota 5, 5 in use): needs 1 VPCs, 0 left"),
        "{}",
        short[1]
    );
    assert!(
        short[2]
            .starts_with("Elastic IP addresses in us-east-1 (quota 5, 4 in use): needs 3 Elastic IPs, 1 left (short by 2)"),
        "{}",
        short[2]
    );
    // moto's default credentials belong to no IAM user: permissions are not checked (said),
    // never reported missing.
    assert!(
        found.unchecked.iter().any(|u| u.starts_with("permissions")),
        "{:?}",
        found.unchecked
    );

    // The engine stops the create before its first cloud call.
    let calls_before = provider.calls().snapshot();
    let id = engine.create_cluster(&spec).await.unwrap();
    let rec = engine
        .wait_for(id, Duration::from_secs(60), |r| {
            r.status.has_condition(
                ConditionType::InfrastructureReady,
                ConditionStatus::Failed,
                "PrecheckFailed",
            )
        })
        .await
        .unwrap();
    let c = rec
        .status
        .condition(ConditionType::InfrastructureReady)
        .unwrap();
    assert!(
        c.message.contains("VPCs in us-east-1") && c.message.contains("Elastic IP addresses"),
        "{}",
        c.message
    );
    let since = calls_since(&calls_before, &provider.calls().snapshot());
    assert!(
        !since.keys().any(|op| op.contains(".Create")
            || op.contains("RunInstances")
            || op.contains("Allocate")),
        "nothing created: {since:?}"
    );
    assert!(rec.status.infrastructure.is_none());
    let events = engine.events(Some(id), 0, 1000).await.unwrap();
    assert!(events.iter().any(|e| e.reason == "PrecheckFailed"));
    // Nothing was created: abort is the way out of a cluster still provisioning.
    engine.abort_cluster(id).await.unwrap();
    engine
        .wait_for_phase(id, Phase::Deleted, Duration::from_secs(60))
        .await
        .unwrap();

    // Free the instances and the addresses, and one VPC: one cluster fits, and holds the
    // last VPC for its create; a second one is told.
    let ids: Vec<String> = admin
        .ec2
        .describe_instances()
        .send()
        .await
        .unwrap()
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect();
    admin
        .ec2
        .terminate_instances()
        .set_instance_ids(Some(ids))
        .send()
        .await
        .unwrap();
    let addrs = admin.ec2.describe_addresses().send().await.unwrap();
    for a in addrs.addresses() {
        admin
            .ec2
            .release_address()
            .set_allocation_id(a.allocation_id().map(str::to_string))
            .send()
            .await
            .unwrap();
    }
    let vpcs = admin.ec2.describe_vpcs().send().await.unwrap();
    let extra = vpcs
        .vpcs()
        .iter()
        .find(|v| v.is_default() != Some(true))
        .and_then(|v| v.vpc_id())
        .unwrap()
        .to_string();
    admin.ec2.delete_vpc().vpc_id(extra).send().await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await; // the view is read again
    let found = engine.precheck(&spec).await.unwrap();
    assert!(found.passed(), "{}", found.message());
    let mut second = spec.clone();
    second.name = "shop".into();
    let found = engine.precheck(&second).await.unwrap();
    assert!(
        found.message().contains("VPCs in us-east-1 (quota 5, 4 in use, 1 reserved by clusters being created): needs 1 VPCs, 0 left"),
        "{}",
        found.message()
    );
    engine.shutdown().await;
}

//! `AwsProvider`: the `CloudProvider` for AWS, from the building blocks of this crate.
//!
//! Infrastructure (dynamic placement): the per-cluster network of [`crate::network`], a
//! classic ELB for the API server across the control-plane nodes (TCP 6443, health check
//! TCP:6443, in the public subnets), and a bastion in the first zone's public subnet as the
//! only SSH entry. Nodes: batched launches in the private subnets of their zone, with the
//! pool's root volume size and type.
//!
//! The load balancer's registrations are part of the observation: a listing registers
//! running control-plane nodes that are missing and deregisters instances that are no
//! longer live control-plane nodes. It reads them (one DescribeLoadBalancers) unless this
//! process read them within [`AwsProvider::with_registration_recheck`] and the listed nodes
//! match what it knows (see `registrations`); a listing without a live control-plane node,
//! or of a cluster being deleted, has nothing to repair.
//!
//! Pre-checks ([`crate::precheck`]): permissions and the region's quotas against what the
//! cluster needs, one read per account and region serving its clusters for
//! [`AwsProvider::with_precheck_ttl`].

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_sdk_elasticloadbalancing::types::{HealthCheck, Listener, Tag as LbTag};
use spectro_core::model::{CloudAccount, CloudPlacement, CloudType, Credentials, PoolRole};
use spectro_core::provider::{
    CloudProvider, CloudResource, ClusterContext, ClusterId, DeleteStatus, ImageRef, ImageSpec,
    InfraStatus, Machine, MachineBatch, MachineState, ProviderError,
};

use crate::client::{AwsClients, AwsConnector, CallCounter};
use crate::error::{from_sdk, AwsError};
use crate::machines::{launch, list_machines, terminate, Launch, RootVolume};
use crate::network::{delete_nat_gateways, delete_network, ensure_network};
use crate::precheck::AccountView;
use crate::registrations::{Registrations, Seen};
use crate::security::{cni_ports, SecurityPolicy};
use spectro_core::precheck::Precheck;

/// Largest user data EC2 accepts (before base64).
pub const USER_DATA_LIMIT: usize = 16 * 1024;
/// Bastion instance type.
pub const BASTION_TYPE: &str = "t3.micro";

/// One account and region's pre-check view, read by one pre-check at a time.
type ViewSlot = Arc<tokio::sync::Mutex<Option<AccountView>>>;

/// The AWS cloud provider.
#[derive(Debug)]
pub struct AwsProvider {
    connector: AwsConnector,
    clients: Mutex<HashMap<(String, String), (AwsClients, aws_sdk_elasticloadbalancing::Client)>>,
    /// Root device name by (region, AMI): learned when the image is resolved, else described
    /// once per process.
    root_devices: Mutex<HashMap<(String, String), String>>,
    /// Pre-check views by (access key id, region) (`crate::precheck::AccountView`).
    views: Mutex<HashMap<(String, String), ViewSlot>>,
    /// How long a pre-check view serves.
    precheck_ttl: std::time::Duration,
    /// Quota values set by the embedder.
    quotas: crate::precheck::QuotaOverrides,
    /// The load balancers' registrations as this process last read them.
    registrations: Registrations,
    /// The last listing of each cluster being deleted, the bastion included, and when it was
    /// made: the `delete_infrastructure` right after it in the same reconcile needs no
    /// listing of its own.
    deleting_listings: Mutex<HashMap<ClusterId, (tokio::time::Instant, Vec<Machine>)>>,
}

/// How long the listing of a cluster being deleted serves its `delete_infrastructure` (the
/// rest of one reconcile).
const DELETING_LISTING_SERVES: std::time::Duration = std::time::Duration::from_secs(5);

fn lb_not_found(e: &AwsError) -> bool {
    e.has_code(&[
        "LoadBalancerNotFound",
        "AccessPointNotFound",
        "AccessPointNotFoundException",
    ])
}

fn lb_instances(ids: &BTreeSet<String>) -> Vec<aws_sdk_elasticloadbalancing::types::Instance> {
    ids.iter()
        .map(|id| {
            aws_sdk_elasticloadbalancing::types::Instance::builder()
                .instance_id(id)
                .build()
        })
        .collect()
}

fn not_aws() -> AwsError {
    AwsError::invalid("cloud", "is not an AWS placement")
}

fn region(ctx: &ClusterContext) -> Result<&str, AwsError> {
    match &ctx.spec.cloud {
        CloudPlacement::Aws(a) => Ok(&a.region),
        _ => Err(not_aws()),
    }
}

/// The classic ELB's name: deterministic per cluster, at most 32 characters.
pub fn lb_name(cluster_id: &str) -> String {
    let hex: String = cluster_id
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(24)
        .collect();
    format!("spectro-{hex}")
}

impl AwsProvider {
    /// A provider reaching AWS through `connector`.
    pub fn new(connector: AwsConnector) -> Self {
        AwsProvider {
            connector,
            clients: Mutex::default(),
            root_devices: Mutex::default(),
            views: Mutex::default(),
            precheck_ttl: std::time::Duration::from_secs(60),
            quotas: Default::default(),
            registrations: Registrations::new(std::time::Duration::from_secs(60)),
            deleting_listings: Mutex::default(),
        }
    }

    /// Keeps the listing of a cluster being deleted for its `delete_infrastructure`.
    fn keep_deleting_listing(&self, id: ClusterId, all: Vec<Machine>) {
        let now = spectro_core::clock::instant_now();
        let mut map = self
            .deleting_listings
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (at, _)| now.saturating_duration_since(*at) <= DELETING_LISTING_SERVES);
        map.insert(id, (now, all));
    }

    /// The listing kept for `id` if it is recent enough (taken: it serves once), and forgets
    /// it anyway.
    fn take_deleting_listing(&self, id: ClusterId) -> Option<Vec<Machine>> {
        let now = spectro_core::clock::instant_now();
        self.deleting_listings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
            .filter(|(at, _)| now.saturating_duration_since(*at) <= DELETING_LISTING_SERVES)
            .map(|(_, all)| all)
    }

    /// How long one read of a load balancer's registrations serves the listings of its
    /// cluster while they match it (default 60 s): a control-plane node someone deregistered
    /// behind the engine's back is registered again about this long after (a listing that
    /// races a concurrent repair may add one more period). Zero: every
    /// listing with a live control-plane node reads them.
    pub fn with_registration_recheck(mut self, recheck: std::time::Duration) -> Self {
        self.registrations.recheck = recheck;
        self
    }

    /// A quota's value for the pre-checks instead of what Service Quotas answers, by
    /// (service code, quota code) as in [`crate::precheck::codes`]: a raise AWS granted
    /// that Service Quotas does not show yet, or an emulator whose quotas are not enforced.
    pub fn with_quota(mut self, (service, code): (&str, &str), value: u64) -> Self {
        self.quotas
            .insert((service.to_string(), code.to_string()), value);
        self
    }

    /// How long one read of an account's permissions, quotas and usage serves the pre-checks
    /// of its clusters in a region (default 60 s; clusters that pass within it reserve what
    /// they need). Zero: every pre-check reads again.
    pub fn with_precheck_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.precheck_ttl = ttl;
        self
    }

    /// The connector: its budgets' statistics, its call counter.
    pub fn connector(&self) -> &AwsConnector {
        &self.connector
    }

    /// API attempts by operation, for every account and region.
    pub fn calls(&self) -> &Arc<CallCounter> {
        self.connector.calls()
    }

    fn clients(
        &self,
        account: &CloudAccount,
        region: &str,
    ) -> Result<(AwsClients, aws_sdk_elasticloadbalancing::Client), AwsError> {
        let Credentials::Aws(creds) = &account.credentials else {
            return Err(AwsError::NoCredentials {
                account: account.name.clone(),
            });
        };
        let key = (creds.access_key_id.clone(), region.to_string());
        let mut map = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(&key) {
            return Ok(c.clone());
        }
        let c = self.connector.clients(creds, region);
        let lb = self.connector.elb_client(creds, region);
        map.insert(key, (c.clone(), lb.clone()));
        Ok((c, lb))
    }

    async fn ensure_lb(
        &self,
        lb: &aws_sdk_elasticloadbalancing::Client,
        ctx: &ClusterContext,
        subnets: Vec<String>,
        internal: bool,
        sg: String,
        fresh: bool,
    ) -> Result<String, AwsError> {
        let name = lb_name(&ctx.cluster_id.to_string());
        // In a VPC created a moment ago (fresh subnets) the load balancer cannot exist yet:
        // straight to the create, which refuses the name if it is taken after all.
        if fresh {
            match self
                .create_lb(lb, ctx, &name, subnets.clone(), internal, sg.clone())
                .await
            {
                Err(e)
                    if e.has_code(&["DuplicateLoadBalancerName", "DuplicateAccessPointName"]) => {}
                other => return other,
            }
        }
        let found = lb
            .describe_load_balancers()
            .load_balancer_names(&name)
            .send()
            .await;
        if let Ok(out) = &found {
            if let Some(d) = out.load_balancer_descriptions().first() {
                self.registrations
                    .read(&name, Seen::Registered(registered_of(d)));
                // Exists: ensure its subnets (zones added later), security group and health
                // check (a crash right after the create leaves the default one).
                let missing: Vec<String> = subnets
                    .iter()
                    .filter(|s| !d.subnets().contains(s))
                    .cloned()
                    .collect();
                if !missing.is_empty() {
                    lb.attach_load_balancer_to_subnets()
                        .load_balancer_name(&name)
                        .set_subnets(Some(missing))
                        .send()
                        .await
                        .map_err(|e| from_sdk("AttachLoadBalancerToSubnets", e))?;
                }
                if !d.security_groups().contains(&sg) {
                    lb.apply_security_groups_to_load_balancer()
                        .load_balancer_name(&name)
                        .security_groups(&sg)
                        .send()
                        .await
                        .map_err(|e| from_sdk("ApplySecurityGroupsToLoadBalancer", e))?;
                }
                if d.health_check().map(|h| h.target()) != Some(HEALTH_TARGET) {
                    configure_health_check(lb, &name).await?;
                }
                return Ok(d.dns_name().unwrap_or_default().to_string());
            }
        }
        self.create_lb(lb, ctx, &name, subnets, internal, sg).await
    }

    /// Creates the load balancer and configures its health check; returns its DNS name.
    async fn create_lb(
        &self,
        lb: &aws_sdk_elasticloadbalancing::Client,
        ctx: &ClusterContext,
        name: &str,
        subnets: Vec<String>,
        internal: bool,
        sg: String,
    ) -> Result<String, AwsError> {
        let mut req = lb
            .create_load_balancer()
            .load_balancer_name(name)
            .listeners(
                Listener::builder()
                    .protocol("TCP")
                    .load_balancer_port(6443)
                    .instance_protocol("TCP")
                    .instance_port(6443)
                    .build()
                    .map_err(|source| AwsError::Build {
                        what: "the load balancer's listener",
                        source,
                    })?,
            )
            .set_subnets(Some(subnets))
            .security_groups(sg);
        if internal {
            req = req.scheme("internal");
        }
        for (k, v) in ctx.ownership_tags() {
            req = req.tags(LbTag::builder().key(k).value(v).build().map_err(|source| {
                AwsError::Build {
                    what: "a load balancer tag",
                    source,
                }
            })?);
        }
        let out = req
            .send()
            .await
            .map_err(|e| from_sdk("CreateLoadBalancer", e))?;
        self.registrations
            .read(name, Seen::Registered(BTreeSet::new()));
        configure_health_check(lb, name).await?;
        Ok(out.dns_name().unwrap_or_default().to_string())
    }

    /// Keeps the load balancer's registrations equal to the live control-plane nodes: one
    /// DescribeLoadBalancers (none when this process's knowledge of them matches, or there is
    /// no live control-plane node), then at most one register and one deregister call.
    async fn sync_lb_registrations(
        &self,
        lb: &aws_sdk_elasticloadbalancing::Client,
        cluster_id: &str,
        machines: &[Machine],
    ) -> Result<(), AwsError> {
        let name = lb_name(cluster_id);
        // No live control-plane node: nothing to register, and whatever is still registered
        // (instances gone) is removed by the first listing that has one.
        if crate::registrations::wanted(machines).1.is_empty()
            || self.registrations.satisfied(&name, machines)
        {
            return Ok(());
        }
        let out = match lb
            .describe_load_balancers()
            .load_balancer_names(&name)
            .send()
            .await
            .map_err(|e| from_sdk("DescribeLoadBalancers", e))
        {
            Ok(o) => o,
            Err(e) if lb_not_found(&e) => {
                // Not created yet, or deleted.
                self.registrations.read(&name, Seen::Absent);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let Some(d) = out.load_balancer_descriptions().first() else {
            return Ok(());
        };
        let now = repair_registrations(lb, &name, &registered_of(d), machines).await?;
        self.registrations.read(&name, Seen::Registered(now));
        Ok(())
    }

    /// The instances registered with every classic load balancer of the account in the
    /// region, by load-balancer name: one call per page of 400.
    async fn all_registrations(
        lb: &aws_sdk_elasticloadbalancing::Client,
    ) -> Result<HashMap<String, BTreeSet<String>>, AwsError> {
        let mut out = HashMap::new();
        let mut marker: Option<String> = None;
        loop {
            let page = lb
                .describe_load_balancers()
                .page_size(400)
                .set_marker(marker.clone())
                .send()
                .await
                .map_err(|e| from_sdk("DescribeLoadBalancers", e))?;
            for d in page.load_balancer_descriptions() {
                if let Some(name) = d.load_balancer_name() {
                    out.insert(
                        name.to_string(),
                        d.instances()
                            .iter()
                            .filter_map(|i| i.instance_id().map(str::to_string))
                            .collect(),
                    );
                }
            }
            marker = page.next_marker().map(str::to_string);
            if marker.is_none() {
                return Ok(out);
            }
        }
    }

    /// The root device name of an AMI, from the cache or one DescribeImages.
    async fn root_device(&self, c: &AwsClients, ami: &str) -> Result<String, AwsError> {
        let key = (c.region.clone(), ami.to_string());
        if let Some(d) = self
            .root_devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(d.clone());
        }
        let d = crate::image::root_device_name(c, ami).await?;
        self.root_devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, d.clone());
        Ok(d)
    }
}

/// The instances registered with a load balancer as described.
fn registered_of(
    d: &aws_sdk_elasticloadbalancing::types::LoadBalancerDescription,
) -> BTreeSet<String> {
    d.instances()
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect()
}

/// Registers the running control-plane nodes missing from `registered`, deregisters what is
/// not a live one; returns what is registered afterwards.
async fn repair_registrations(
    lb: &aws_sdk_elasticloadbalancing::Client,
    name: &str,
    registered: &BTreeSet<String>,
    machines: &[Machine],
) -> Result<BTreeSet<String>, AwsError> {
    let (running, live) = crate::registrations::wanted(machines);
    let add: BTreeSet<String> = running.difference(registered).cloned().collect();
    let remove: BTreeSet<String> = registered.difference(&live).cloned().collect();
    if !add.is_empty() {
        lb.register_instances_with_load_balancer()
            .load_balancer_name(name)
            .set_instances(Some(lb_instances(&add)))
            .send()
            .await
            .map_err(|e| from_sdk("RegisterInstancesWithLoadBalancer", e))?;
    }
    if !remove.is_empty() {
        lb.deregister_instances_from_load_balancer()
            .load_balancer_name(name)
            .set_instances(Some(lb_instances(&remove)))
            .send()
            .await
            .map_err(|e| from_sdk("DeregisterInstancesFromLoadBalancer", e))?;
    }
    Ok(registered
        .union(&add)
        .filter(|i| !remove.contains(*i))
        .cloned()
        .collect())
}

/// Deletes the cluster's load balancer (deleting one that is gone is not an error).
async fn delete_lb(
    lb: &aws_sdk_elasticloadbalancing::Client,
    known: &Registrations,
    id: &str,
) -> Result<(), AwsError> {
    let name = lb_name(id);
    lb.delete_load_balancer()
        .load_balancer_name(&name)
        .send()
        .await
        .map_err(|e| from_sdk("DeleteLoadBalancer", e))?;
    known.read(&name, Seen::Deleted);
    Ok(())
}

/// The API health check of the load balancer.
const HEALTH_TARGET: &str = "TCP:6443";

async fn configure_health_check(
    lb: &aws_sdk_elasticloadbalancing::Client,
    name: &str,
) -> Result<(), AwsError> {
    lb.configure_health_check()
        .load_balancer_name(name)
        .health_check(
            HealthCheck::builder()
                .target(HEALTH_TARGET)
                .interval(10)
                .timeout(5)
                .unhealthy_threshold(3)
                .healthy_threshold(2)
                .build()
                .map_err(|source| AwsError::Build {
                    what: "the load balancer's health check",
                    source,
                })?,
        )
        .send()
        .await
        .map_err(|e| from_sdk("ConfigureHealthCheck", e))?;
    Ok(())
}

/// The security policy of a cluster: its CNI's ports and its bastion's allowed networks.
pub fn security_policy(ctx: &ClusterContext) -> Result<SecurityPolicy, AwsError> {
    let bastion_cidrs = match &ctx.spec.cloud {
        CloudPlacement::Aws(a) => a
            .bastion_allowed_cidrs
            .iter()
            .map(|n| n.trunc().to_string())
            .collect(),
        _ => Vec::new(),
    };
    Ok(SecurityPolicy {
        cni_ports: cni_ports(&ctx.profile)?,
        bastion_cidrs,
    })
}

#[async_trait]
impl CloudProvider for AwsProvider {
    fn cloud(&self) -> CloudType {
        CloudType::Aws
    }

    fn user_data_limit(&self) -> Option<usize> {
        Some(USER_DATA_LIMIT)
    }

    async fn validate_account(&self, account: &CloudAccount) -> Result<(), ProviderError> {
        let (c, _) = self.clients(account, "us-east-1")?;
        crate::image::caller_account(&c).await?;
        Ok(())
    }

    /// Permissions (IAM simulation, else the principal's own policies) and the region's
    /// quotas against what the cluster needs; see [`crate::precheck`].
    async fn precheck(&self, ctx: &ClusterContext) -> Result<Precheck, ProviderError> {
        let region = region(ctx)?;
        let Credentials::Aws(creds) = &ctx.account.credentials else {
            return Err(AwsError::NoCredentials {
                account: ctx.account.name.clone(),
            }
            .into());
        };
        let (c, lb) = self.clients(&ctx.account, region)?;
        let slot = self
            .views
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((creds.access_key_id.clone(), region.to_string()))
            .or_default()
            .clone();
        let mut view = slot.lock().await;
        let types = crate::precheck::instance_types(&ctx.spec);
        let fresh = view
            .as_ref()
            .is_some_and(|v| v.read_at.elapsed() < self.precheck_ttl);
        if !fresh {
            let iam = self.connector.iam_client(creds, region);
            let sq = self.connector.quotas_client(creds, region);
            *view = Some(crate::precheck::gather(&c, &iam, &sq, &lb, &types, &self.quotas).await?);
        }
        let v = view
            .as_mut()
            .ok_or_else(|| AwsError::not_ready("pre-check view"))?;
        crate::precheck::read_vcpus(&c, v, &types).await;
        Ok(v.check(region, &ctx.spec, &ctx.cluster_id.to_string()))
    }

    async fn ensure_image(
        &self,
        ctx: &ClusterContext,
        spec: &ImageSpec,
    ) -> Result<ImageRef, ProviderError> {
        spec.require_ready_image("AWS", "AMI")?;
        let (c, _) = self.clients(&ctx.account, region(ctx)?)?;
        let r = crate::image::resolve(&c, spec).await?;
        if let Some(d) = r.root_device_name {
            self.root_devices
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((c.region.clone(), r.image.id.clone()), d);
        }
        Ok(r.image)
    }

    async fn ensure_infrastructure(
        &self,
        ctx: &ClusterContext,
    ) -> Result<InfraStatus, ProviderError> {
        let CloudPlacement::Aws(aws) = &ctx.spec.cloud else {
            return Err(not_aws().into());
        };
        let (c, lb) = self.clients(&ctx.account, &aws.region)?;
        let id = ctx.cluster_id.to_string();
        let mut zones: Vec<String> = ctx
            .spec
            .node_pools
            .iter()
            .flat_map(|p| p.availability_zones.clone())
            .collect();
        zones.sort();
        zones.dedup();
        let tags = ctx.ownership_tags();
        let policy = security_policy(ctx)?;
        let net = match &aws.static_placement {
            None => ensure_network(&c, &id, &ctx.spec.name, &zones, &tags, &policy).await?,
            Some(sp) => {
                // The user's VPC and subnets: only our security groups go in; nothing of
                // theirs is modified, and delete (by our tag) never touches it.
                let mut n = crate::network::observe(&c, &id).await?;
                n.vpc = sp.vpc_id.clone();
                for z in &sp.subnets {
                    n.private_subnets
                        .insert(z.zone.clone(), z.private_subnet_id.clone());
                    if let Some(p) = &z.public_subnet_id {
                        n.public_subnets.insert(z.zone.clone(), p.clone());
                    }
                }
                n.vpc_cidr = crate::network::vpc_cidr(&c, &n.vpc).await?;
                crate::network::ensure_security_groups(&c, &mut n, &ctx.spec.name, &tags, &policy)
                    .await?;
                n
            }
        };
        let internal = net.public_subnets.is_empty();
        let lb_subnets: Vec<String> = if internal {
            net.private_subnets.values().cloned().collect()
        } else {
            net.public_subnets.values().cloned().collect()
        };
        let dns = self
            .ensure_lb(
                &lb,
                ctx,
                lb_subnets,
                internal,
                net.security_groups["lb"].clone(),
                net.fresh,
            )
            .await?;
        // The bastion: the only SSH entry, in the first zone's public subnet.
        let mut resources = net.resources.clone();
        resources.push(CloudResource {
            kind: "load-balancer".into(),
            id: lb_name(&id),
        });
        let image = ctx
            .image
            .as_ref()
            .ok_or_else(|| AwsError::not_ready("the bastion waits for the cluster image"))?;
        let bastion_name = vec![format!("{}-bastion-0", ctx.spec.name)];
        let first_zone = zones
            .iter()
            .find(|z| net.public_subnets.contains_key(*z))
            .cloned();
        // Without a public subnet (static placement in private subnets) there is no bastion:
        // SSH reaches the nodes the way the user's network allows.
        let bastion = match first_zone {
            None => Vec::new(),
            Some(first_zone) => {
                launch(
                    &c,
                    &Launch {
                        cluster_id: &id,
                        tags: &tags,
                        token: &format!("{id}-bastion"),
                        names: &bastion_name,
                        pool: "bastion",
                        role: PoolRole::Worker,
                        shape: "bastion",
                        image: &image.id,
                        instance_type: BASTION_TYPE,
                        subnet: net
                            .public_subnets
                            .get(&first_zone)
                            .map(String::as_str)
                            .unwrap_or_default(),
                        security_groups: &[net.security_groups["bastion"].clone()],
                        key_name: aws.ssh_key_name.as_deref(),
                        user_data: b"#cloud-config\n",
                        bastion: true,
                        root_volume: None,
                        // Its subnet was created a moment ago: no instance can be in it.
                        unseen: net.fresh,
                    },
                )
                .await?
            }
        };
        resources.extend(bastion.iter().map(|m| CloudResource {
            kind: "bastion".into(),
            id: m.id.clone(),
        }));
        let mut outputs = std::collections::BTreeMap::new();
        for (z, s) in &net.private_subnets {
            outputs.insert(format!("subnet/{z}"), s.clone());
        }
        for (role, g) in &net.security_groups {
            outputs.insert(format!("sg/{role}"), g.clone());
        }
        outputs.insert("lb".into(), lb_name(&id));
        let ready = net.pending_nat == 0;
        Ok(InfraStatus {
            ready,
            endpoint: Some(format!("{dns}:6443")),
            resources,
            message: (!ready).then(|| format!("{} NAT gateway(s) pending", net.pending_nat)),
            outputs,
        })
    }

    async fn list_machines(&self, ctx: &ClusterContext) -> Result<Vec<Machine>, ProviderError> {
        let (c, lb) = self.clients(&ctx.account, region(ctx)?)?;
        let id = ctx.cluster_id.to_string();
        if ctx.deleting {
            // The same one call lists the bastion too, for the delete that follows.
            let marked = crate::machines::list_marked(&c, &id).await?;
            let nodes = marked
                .iter()
                .filter(|(_, node)| *node)
                .map(|(m, _)| m.clone())
                .collect();
            self.keep_deleting_listing(
                ctx.cluster_id,
                marked.into_iter().map(|(m, _)| m).collect(),
            );
            return Ok(nodes);
        }
        let machines = list_machines(&c, &id).await?;
        self.sync_lb_registrations(&lb, &id, &machines).await?;
        Ok(machines)
    }

    /// The account and region: one DescribeInstances (by the ownership tag key, 1,000 per
    /// page) and one DescribeLoadBalancers (400 per page) serve every cluster.
    fn fleet(&self, ctx: &ClusterContext) -> Option<String> {
        let Credentials::Aws(creds) = &ctx.account.credentials else {
            return None;
        };
        let region = region(ctx).ok()?;
        Some(format!(
            "{}{}/{region}",
            creds.access_key_id,
            self.connector.partition_suffix()
        ))
    }

    async fn list_fleet(
        &self,
        ctx: &ClusterContext,
    ) -> Result<HashMap<ClusterId, Vec<Machine>>, ProviderError> {
        let (c, lb) = self.clients(&ctx.account, region(ctx)?)?;
        let fleet = crate::machines::list_fleet(&c).await?;
        let registrations = Self::all_registrations(&lb).await?;
        let own = ctx.cluster_id.to_string();
        let mut out = HashMap::with_capacity(fleet.len());
        for (cluster, machines) in fleet {
            let name = lb_name(&cluster);
            if let Some(registered) = registrations.get(&name) {
                // The same repair as `list_machines`, for every cluster listed. A failure
                // for another cluster is retried at the next listing; the caller's own fails
                // its listing, as it would alone.
                match repair_registrations(&lb, &name, registered, &machines).await {
                    Ok(now) => self.registrations.read(&name, Seen::Registered(now)),
                    Err(e) if cluster == own => return Err(e.into()),
                    Err(_) => {}
                }
            }
            if let Ok(id) = cluster.parse::<ClusterId>() {
                out.insert(id, machines);
            }
        }
        Ok(out)
    }

    async fn create_machines(
        &self,
        ctx: &ClusterContext,
        infra: &InfraStatus,
        batch: &MachineBatch,
    ) -> Result<Vec<Machine>, ProviderError> {
        let CloudPlacement::Aws(aws) = &ctx.spec.cloud else {
            return Err(not_aws().into());
        };
        let (c, lb) = self.clients(&ctx.account, &aws.region)?;
        // Machines made now are not in a kept listing.
        self.take_deleting_listing(ctx.cluster_id);
        let out =
            |k: &str| {
                infra.outputs.get(k).cloned().ok_or_else(|| {
                    AwsError::not_ready(format!("the infrastructure has no {k} yet"))
                })
            };
        let subnet = out(&format!("subnet/{}", batch.zone))?;
        let sg = out(if batch.pool.is_control_plane() {
            "sg/control-plane"
        } else {
            "sg/worker"
        })?;
        let id = ctx.cluster_id.to_string();
        let pool = &batch.pool;
        let root_volume = if pool.disk_size_gb.is_some() || pool.disk_type.is_some() {
            Some(RootVolume {
                device_name: self.root_device(&c, &batch.image.id).await?,
                size_gb: pool.disk_size_gb,
                volume_type: pool.disk_type.clone(),
            })
        } else {
            None
        };
        let machines = launch(
            &c,
            &Launch {
                cluster_id: &id,
                tags: &ctx.ownership_tags(),
                token: &batch.token,
                names: &batch.names,
                pool: &batch.pool.name,
                role: batch.pool.role,
                shape: &batch.shape,
                image: &batch.image.id,
                instance_type: batch
                    .pool
                    .instance_type
                    .as_deref()
                    .unwrap_or(crate::precheck::DEFAULT_INSTANCE_TYPE),
                subnet: &subnet,
                security_groups: &[sg],
                key_name: aws.ssh_key_name.as_deref(),
                user_data: &batch.user_data,
                bastion: false,
                root_volume,
                // The engine's first call with this token: nothing can exist with it.
                unseen: batch.first_attempt,
            },
        )
        .await?;
        // The fast path: register right away. Whatever this misses (a crash, an error) the
        // next listing repairs.
        if batch.pool.is_control_plane() && !machines.is_empty() {
            let ids: BTreeSet<String> = machines.iter().map(|m| m.id.clone()).collect();
            let name = lb_name(&id);
            lb.register_instances_with_load_balancer()
                .load_balancer_name(&name)
                .set_instances(Some(lb_instances(&ids)))
                .send()
                .await
                .map_err(|e| from_sdk("RegisterInstancesWithLoadBalancer", e))?;
            self.registrations.registered(&name, &ids);
        }
        Ok(machines)
    }

    async fn delete_machines(
        &self,
        ctx: &ClusterContext,
        machines: &[Machine],
    ) -> Result<(), ProviderError> {
        let (c, lb) = self.clients(&ctx.account, region(ctx)?)?;
        // A kept listing shows these machines as they were before this delete.
        self.take_deleting_listing(ctx.cluster_id);
        // Control-plane nodes leave the API endpoint before they go (unless the endpoint
        // goes with them).
        let cp: BTreeSet<String> = machines
            .iter()
            .filter(|m| m.role == PoolRole::ControlPlane)
            .map(|m| m.id.clone())
            .collect();
        if !cp.is_empty() && !ctx.deleting {
            let name = lb_name(&ctx.cluster_id.to_string());
            let r = lb
                .deregister_instances_from_load_balancer()
                .load_balancer_name(&name)
                .set_instances(Some(lb_instances(&cp)))
                .send()
                .await
                .map_err(|e| from_sdk("DeregisterInstancesFromLoadBalancer", e));
            match r {
                Ok(_) => self.registrations.deregistered(&name, &cp),
                Err(e)
                    if lb_not_found(&e)
                        || e.code().is_some_and(|c| c.starts_with("InvalidInstance")) => {}
                Err(e) => return Err(e.into()),
            }
        }
        terminate(
            &c,
            &machines.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
        )
        .await?;
        Ok(())
    }

    async fn delete_infrastructure(
        &self,
        ctx: &ClusterContext,
    ) -> Result<DeleteStatus, ProviderError> {
        let CloudPlacement::Aws(aws) = &ctx.spec.cloud else {
            return Err(not_aws().into());
        };
        let (c, lb) = self.clients(&ctx.account, &aws.region)?;
        let id = ctx.cluster_id.to_string();
        // The bastion (and any node left over) goes before the network. A pass while they
        // shut down costs one DescribeInstances: the engine's listing of this reconcile (made
        // a moment ago, nothing created or deleted since), or one of its own.
        let alive: Vec<Machine> = match self.take_deleting_listing(ctx.cluster_id) {
            Some(all) => all,
            None => crate::machines::list_all(&c, &id).await?,
        };
        let running: Vec<String> = alive
            .iter()
            .filter(|m| m.state != MachineState::Deleting)
            .map(|m| m.id.clone())
            .collect();
        let mut lb_deleted = false;
        if !running.is_empty() {
            // The NAT gateways take as long to go as the instances: both at once.
            if aws.static_placement.is_none() {
                delete_nat_gateways(&c, &id).await?;
            }
            terminate(&c, &running).await?;
            delete_lb(&lb, &self.registrations, &id).await?;
            lb_deleted = true;
        }
        if !alive.is_empty() {
            return Ok(DeleteStatus {
                done: false,
                remaining: alive
                    .iter()
                    .map(|m| CloudResource {
                        kind: "instance".into(),
                        id: m.id.clone(),
                    })
                    .collect(),
                message: Some("waiting for instances to terminate".into()),
            });
        }
        // Deleted by this process a moment ago (a delete pass while the instances went):
        // not again.
        if !lb_deleted && self.registrations.fresh(&lb_name(&id)) != Some(Seen::Deleted) {
            delete_lb(&lb, &self.registrations, &id).await?;
        }
        let left = delete_network(&c, &id).await?;
        let message = if left.is_empty() {
            None
        } else if left.iter().all(|r| r.kind == "nat-gateway") {
            Some(format!(
                "waiting for {} NAT gateway(s) to be deleted",
                left.len()
            ))
        } else {
            Some("resources still present after delete".into())
        };
        Ok(DeleteStatus {
            done: left.is_empty(),
            message,
            remaining: left,
        })
    }
}

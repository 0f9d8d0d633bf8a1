//! The cluster network for dynamic placement: a VPC per cluster; per availability zone a
//! private subnet (nodes) and a public subnet (NAT gateway, bastion, load balancer); an
//! internet gateway; a NAT gateway with an Elastic IP per zone; one public route table and a
//! private route table per zone; security groups for the control plane, the workers, the
//! bastion and the API load balancer.
//!
//! Everything is found again by the cluster's ownership tag, so `ensure_network` is
//! idempotent (a second call creates nothing) and `delete_network` walks what exists in
//! reverse dependency order, then verifies by tag that nothing is left.
//!
//! `ensure_network` ensures each resource's *configuration*, not only its existence, from one
//! observation (one describe per resource type): the VPC's DNS hostnames, the internet
//! gateway's attachment, each route table's default route and subnet association, each
//! security group's rules (missing ones authorized, stale ones revoked). A crash between any
//! two calls is repaired by the next call. Subnet CIDRs are stable per zone: an observed
//! subnet keeps its slot, a new zone takes the lowest free one.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{
    AttributeBooleanValue, DomainType, Filter, NatGatewayState, ResourceType, RouteState, Tag,
    TagSpecification, VpcAttributeName,
};
use spectro_core::provider::{CloudResource, TAG_CLUSTER_ID, TAG_ROLE};

use crate::client::AwsClients;
use crate::error::{from_sdk, AwsError};
use crate::security::{desired_rules, permissions, rules_of, Rule, SecurityPolicy, Source, ROLES};

/// Tag carrying the availability zone of a zonal resource.
pub const TAG_ZONE: &str = "spectro.io/zone";

/// The network of one cluster, as found or created.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Network {
    /// VPC id.
    pub vpc: String,
    /// The VPC's IPv4 CIDR.
    pub vpc_cidr: String,
    /// CIDR of each subnet, by subnet id.
    pub subnet_cidrs: BTreeMap<String, String>,
    /// The internet gateway is attached to the VPC.
    pub internet_gateway_attached: bool,
    /// Target of each route table's default route (`0.0.0.0/0`), by route-table key; empty
    /// when the route is a blackhole (its target is gone).
    pub default_routes: BTreeMap<String, String>,
    /// Explicit association of each subnet with one of our route tables: subnet id →
    /// (association id, route-table id).
    pub subnet_associations: BTreeMap<String, (String, String)>,
    /// Private subnet per zone.
    pub private_subnets: BTreeMap<String, String>,
    /// Public subnet per zone.
    pub public_subnets: BTreeMap<String, String>,
    /// Security groups by role (`control-plane`, `worker`, `bastion`, `lb`).
    pub security_groups: BTreeMap<String, String>,
    /// The internet gateway.
    pub internet_gateway: Option<String>,
    /// Elastic IP allocation per zone (for its NAT gateway).
    pub elastic_ips: BTreeMap<String, String>,
    /// NAT gateway per zone.
    pub nat_gateways: BTreeMap<String, String>,
    /// Route tables by role/zone (`public`, `private/<zone>`), with their associated subnets.
    pub route_tables: BTreeMap<String, (String, Vec<String>)>,
    /// Subnet associations of those route tables (what delete must undo first).
    pub route_table_associations: Vec<String>,
    /// Ingress rules of each security group, as atomic rules, by group id (groups reference
    /// each other: delete revokes what stands in the way).
    pub security_group_rules: BTreeMap<String, BTreeSet<Rule>>,
    /// Every resource, for inventory and leak checks (sorted).
    pub resources: Vec<CloudResource>,
    /// NAT gateways still pending (the network is usable once none is).
    pub pending_nat: usize,
    /// The VPC was created by the call that returned this network: nothing that lives in its
    /// subnets (a load balancer, an instance) can exist yet.
    pub fresh: bool,
}

impl Network {
    /// Sorts what AWS reports in no particular order, so that a network built up call by call
    /// equals the observation of the same network.
    fn canonical(mut self) -> Self {
        self.resources.sort();
        self.resources.dedup();
        self.route_table_associations.sort();
        for (_, subnets) in self.route_tables.values_mut() {
            subnets.sort();
            subnets.dedup();
        }
        self
    }
}

fn tag_specs(
    rt: ResourceType,
    tags: &BTreeMap<String, String>,
    role: &str,
    name: &str,
) -> TagSpecification {
    let mut b = TagSpecification::builder().resource_type(rt);
    for (k, v) in tags {
        b = b.tags(Tag::builder().key(k).value(v).build());
    }
    b.tags(Tag::builder().key(TAG_ROLE).value(role).build())
        .tags(Tag::builder().key("Name").value(name).build())
        .build()
}

fn tag_of<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

fn owned(cluster_id: &str) -> Filter {
    Filter::builder()
        .name(format!("tag:{TAG_CLUSTER_ID}"))
        .values(cluster_id)
        .build()
}

/// The VPC's CIDR.
pub const VPC_CIDR: &str = "10.0.0.0/16";
/// Zone slots in the VPC: each zone of a cluster network holds one for good.
pub const ZONE_SLOTS: usize = 8;

/// Private subnet of slot `i` (10.0.0.0/20, 10.0.16.0/20, ...; up to 8 zones).
pub fn private_cidr(i: usize) -> String {
    format!("10.0.{}.0/20", 16 * i)
}

/// Public subnet of slot `i` (10.0.128.0/22, 10.0.132.0/22, ...).
pub fn public_cidr(i: usize) -> String {
    format!("10.0.{}.0/22", 128 + 4 * i)
}

/// The slot a subnet CIDR belongs to.
pub fn slot_of(cidr: &str) -> Option<usize> {
    (0..ZONE_SLOTS).find(|&i| private_cidr(i) == cidr || public_cidr(i) == cidr)
}

/// The slot of each zone: the slot of its observed subnets, else the lowest slot no subnet
/// uses (zones in the order given). Errors when the slots run out.
pub fn zone_slots(n: &Network, zones: &[String]) -> Result<BTreeMap<String, usize>, AwsError> {
    let mut slots = BTreeMap::new();
    let mut used = std::collections::BTreeSet::new();
    for subnets in [&n.private_subnets, &n.public_subnets] {
        for (zone, id) in subnets {
            if let Some(slot) = n.subnet_cidrs.get(id).and_then(|c| slot_of(c)) {
                slots.entry(zone.clone()).or_insert(slot);
                used.insert(slot);
            }
        }
    }
    for zone in zones {
        if slots.contains_key(zone) {
            continue;
        }
        let free = (0..ZONE_SLOTS)
            .find(|s| !used.contains(s))
            .ok_or_else(|| {
                AwsError::invalid(
                    "nodePools[].availabilityZones",
                    format!(
                        "no subnet slot left for zone {zone}: a cluster network holds at most {ZONE_SLOTS} zones"
                    ),
                )
            })?;
        used.insert(free);
        slots.insert(zone.clone(), free);
    }
    Ok(slots)
}

fn res(kind: &str, id: &str) -> CloudResource {
    CloudResource {
        kind: kind.into(),
        id: id.into(),
    }
}

/// A NAT gateway of the cluster, as DescribeNatGateways reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct NatGateway {
    /// NAT gateway id.
    pub id: String,
    /// Its zone (our zone tag).
    pub zone: Option<String>,
    /// Its state.
    pub state: Option<NatGatewayState>,
    /// Its VPC.
    pub vpc: Option<String>,
}

impl NatGateway {
    /// Neither deleted nor on its way there (nor failed).
    pub fn live(&self) -> bool {
        !matches!(
            self.state,
            Some(NatGatewayState::Deleted)
                | Some(NatGatewayState::Deleting)
                | Some(NatGatewayState::Failed)
        )
    }

    /// Being deleted: its Elastic IP, its subnet and the VPC's internet gateway wait for it.
    pub fn deleting(&self) -> bool {
        self.state == Some(NatGatewayState::Deleting)
    }
}

/// The cluster's NAT gateways (one DescribeNatGateways): by VPC when `vpc` is given, else by
/// tag, or by id when `ids` is not empty. The ownership tag is checked here as well: moto
/// ignores tag filters on this call.
pub async fn nat_gateways(
    c: &AwsClients,
    cluster_id: &str,
    vpc: Option<&str>,
    ids: &[String],
) -> Result<Vec<NatGateway>, AwsError> {
    let mut req = c.ec2.describe_nat_gateways();
    if !ids.is_empty() {
        req = req.set_nat_gateway_ids(Some(ids.to_vec()));
    } else if let Some(vpc) = vpc {
        req = req.filter(Filter::builder().name("vpc-id").values(vpc).build());
    } else {
        req = req.filter(owned(cluster_id));
    }
    let mut out = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let page = req
            .clone()
            .set_next_token(next.clone())
            .send()
            .await
            .map_err(|e| from_sdk("DescribeNatGateways", e))?;
        for g in page.nat_gateways() {
            if tag_of(g.tags(), TAG_CLUSTER_ID) != Some(cluster_id) {
                continue;
            }
            if let Some(id) = g.nat_gateway_id() {
                out.push(NatGateway {
                    id: id.to_string(),
                    zone: tag_of(g.tags(), TAG_ZONE).map(str::to_string),
                    state: g.state().cloned(),
                    vpc: g.vpc_id().map(str::to_string),
                });
            }
        }
        next = page.next_token().map(str::to_string);
        if next.is_none() {
            return Ok(out);
        }
    }
}

/// Everything of the cluster's network that exists now, found by tag: one describe per
/// resource type. Subnets, NAT gateways and route tables live in the VPC: without it they
/// cannot exist and are not described (the internet gateway, Elastic IPs and security groups
/// are, since they can outlive it or, with static placement, live in the user's VPC).
pub async fn observe(c: &AwsClients, cluster_id: &str) -> Result<Network, AwsError> {
    observe_with(c, cluster_id, true, true).await
}

/// [`observe`], without the NAT gateways unless `with_nat`, and without the security groups
/// when there is no VPC unless `groups_without_vpc` (dynamic placement puts them in its VPC).
async fn observe_with(
    c: &AwsClients,
    cluster_id: &str,
    with_nat: bool,
    groups_without_vpc: bool,
) -> Result<Network, AwsError> {
    let mut n = Network::default();
    let vpcs = c
        .ec2
        .describe_vpcs()
        .filters(owned(cluster_id))
        .send()
        .await
        .map_err(|e| from_sdk("DescribeVpcs", e))?;
    for v in vpcs.vpcs() {
        if let Some(id) = v.vpc_id() {
            // One VPC per cluster; a second one (a leak) is reported, and deleted after.
            if n.vpc.is_empty() {
                n.vpc = id.to_string();
                n.vpc_cidr = v.cidr_block().unwrap_or_default().to_string();
            }
            n.resources.push(res("vpc", id));
        }
    }
    if !n.vpc.is_empty() {
        let subnets = c
            .ec2
            .describe_subnets()
            .filters(owned(cluster_id))
            .send()
            .await
            .map_err(|e| from_sdk("DescribeSubnets", e))?;
        for s in subnets.subnets() {
            let (Some(id), Some(zone)) = (s.subnet_id(), s.availability_zone()) else {
                continue;
            };
            if let Some(cidr) = s.cidr_block() {
                n.subnet_cidrs.insert(id.to_string(), cidr.to_string());
            }
            match tag_of(s.tags(), TAG_ROLE) {
                Some("public") => n.public_subnets.insert(zone.to_string(), id.to_string()),
                _ => n.private_subnets.insert(zone.to_string(), id.to_string()),
            };
            n.resources.push(res("subnet", id));
        }
    }
    let igws = c
        .ec2
        .describe_internet_gateways()
        .filters(owned(cluster_id))
        .send()
        .await
        .map_err(|e| from_sdk("DescribeInternetGateways", e))?;
    for g in igws.internet_gateways() {
        if let Some(id) = g.internet_gateway_id() {
            let attached = g.attachments().iter().any(|a| {
                a.vpc_id() == Some(n.vpc.as_str())
                    && !matches!(
                        a.state().map(|s| s.as_str()),
                        Some("detaching") | Some("detached")
                    )
            });
            // More than one (made before creates got one attempt): the attached one is
            // the cluster's; the others are deleted with the cluster (listed below).
            if n.internet_gateway.is_none() || (attached && !n.internet_gateway_attached) {
                n.internet_gateway = Some(id.to_string());
                n.internet_gateway_attached = attached;
            }
            n.resources.push(res("internet-gateway", id));
        }
    }
    let eips = c
        .ec2
        .describe_addresses()
        .filters(owned(cluster_id))
        .send()
        .await
        .map_err(|e| from_sdk("DescribeAddresses", e))?;
    for a in eips.addresses() {
        if let Some(id) = a.allocation_id() {
            if let Some(z) = tag_of(a.tags(), TAG_ZONE) {
                n.elastic_ips.insert(z.to_string(), id.to_string());
            }
            n.resources.push(res("elastic-ip", id));
        }
    }
    if with_nat && !n.vpc.is_empty() {
        for g in nat_gateways(c, cluster_id, Some(&n.vpc), &[]).await? {
            if !g.live() {
                continue;
            }
            if g.state == Some(NatGatewayState::Pending) {
                n.pending_nat += 1;
            }
            if let Some(z) = &g.zone {
                n.nat_gateways.insert(z.clone(), g.id.clone());
            }
            n.resources.push(res("nat-gateway", &g.id));
        }
    }
    if !n.vpc.is_empty() {
        let rts = c
            .ec2
            .describe_route_tables()
            .filters(owned(cluster_id))
            .send()
            .await
            .map_err(|e| from_sdk("DescribeRouteTables", e))?;
        for t in rts.route_tables() {
            if let Some(id) = t.route_table_id() {
                let key = match (tag_of(t.tags(), TAG_ROLE), tag_of(t.tags(), TAG_ZONE)) {
                    (Some("private-routes"), Some(z)) => format!("private/{z}"),
                    _ => "public".to_string(),
                };
                let subnets = t
                    .associations()
                    .iter()
                    .filter_map(|a| a.subnet_id().map(str::to_string))
                    .collect();
                for a in t.associations().iter().filter(|a| a.main() != Some(true)) {
                    if let Some(aid) = a.route_table_association_id() {
                        n.route_table_associations.push(aid.to_string());
                        if let Some(s) = a.subnet_id() {
                            n.subnet_associations
                                .insert(s.to_string(), (aid.to_string(), id.to_string()));
                        }
                    }
                }
                if let Some(r) = t
                    .routes()
                    .iter()
                    .find(|r| r.destination_cidr_block() == Some("0.0.0.0/0"))
                {
                    let target = if r.state() == Some(&RouteState::Blackhole) {
                        String::new()
                    } else {
                        r.nat_gateway_id()
                            .or(r.gateway_id())
                            .unwrap_or_default()
                            .to_string()
                    };
                    n.default_routes.insert(key.clone(), target);
                }
                n.route_tables.insert(key, (id.to_string(), subnets));
                n.resources.push(res("route-table", id));
            }
        }
    }
    if n.vpc.is_empty() && !groups_without_vpc {
        return Ok(n.canonical());
    }
    let sgs = c
        .ec2
        .describe_security_groups()
        .filters(owned(cluster_id))
        .send()
        .await
        .map_err(|e| from_sdk("DescribeSecurityGroups", e))?;
    for g in sgs.security_groups() {
        if let (Some(id), Some(role)) = (g.group_id(), tag_of(g.tags(), TAG_ROLE)) {
            n.security_groups.insert(role.to_string(), id.to_string());
            n.resources.push(res("security-group", id));
            n.security_group_rules
                .insert(id.to_string(), rules_of(g.ip_permissions()));
        }
    }
    Ok(n.canonical())
}

/// What a create in the cluster's own VPC answers when it already happened: a call whose
/// answer was lost and that the SDK retried. The next pass observes the result and goes on
/// from there (retryable), instead of a terminal error.
fn lost_answer(e: AwsError) -> AwsError {
    if e.has_code(&[
        "RouteAlreadyExists",
        "Resource.AlreadyAssociated",
        "InvalidSubnet.Conflict",
    ]) {
        AwsError::not_ready(format!(
            "the network's next pass adopts what is there ({e})"
        ))
    } else {
        e
    }
}

/// One attempt for the creates EC2 cannot make idempotent (no client token: VPC, Internet
/// gateway, Elastic IP, route table): an SDK retry after a lost answer would make a second
/// one. The error goes to the engine instead, and the next pass observes (by the cluster's
/// tag) what the lost answer created, as after a crash between the call and the record.
fn once() -> aws_sdk_ec2::config::Builder {
    aws_sdk_ec2::config::Builder::default()
        .retry_config(aws_smithy_types::retry::RetryConfig::standard().with_max_attempts(1))
}

fn id_or_empty(s: Option<&str>) -> String {
    s.unwrap_or_default().to_string()
}

/// The VPC's CIDR (static placement: the user's VPC), one DescribeVpcs.
pub async fn vpc_cidr(c: &AwsClients, vpc: &str) -> Result<String, AwsError> {
    let out = c
        .ec2
        .describe_vpcs()
        .vpc_ids(vpc)
        .send()
        .await
        .map_err(|e| from_sdk("DescribeVpcs", e))?;
    Ok(out
        .vpcs()
        .first()
        .and_then(|v| v.cidr_block())
        .unwrap_or_default()
        .to_string())
}

/// Creates whatever is missing of the cluster's network in `zones`, repairs the configuration
/// of what exists, and returns the network. An already-complete network costs one
/// observation plus one DescribeVpcAttribute, and changes nothing.
pub async fn ensure_network(
    c: &AwsClients,
    cluster_id: &str,
    cluster_name: &str,
    zones: &[String],
    tags: &BTreeMap<String, String>,
    policy: &SecurityPolicy,
) -> Result<Network, AwsError> {
    // Its security groups live in its VPC: without the VPC there are none to describe.
    let mut n = observe_with(c, cluster_id, true, false).await?;
    let name = |what: &str| format!("{cluster_name}-{what}");
    let slots = zone_slots(&n, zones)?;
    let mut dns_hostnames = false;
    if n.vpc.is_empty() {
        let v = c
            .ec2
            .create_vpc()
            .cidr_block(VPC_CIDR)
            .tag_specifications(tag_specs(ResourceType::Vpc, tags, "vpc", &name("vpc")))
            .customize()
            .config_override(once())
            .send()
            .await
            .map_err(|e| from_sdk("CreateVpc", e))?;
        n.vpc = id_or_empty(v.vpc().and_then(|v| v.vpc_id()));
        n.vpc_cidr = VPC_CIDR.to_string();
        n.fresh = true;
        n.resources.push(res("vpc", &n.vpc));
    } else {
        let a = c
            .ec2
            .describe_vpc_attribute()
            .vpc_id(&n.vpc)
            .attribute(VpcAttributeName::EnableDnsHostnames)
            .send()
            .await
            .map_err(|e| from_sdk("DescribeVpcAttribute", e))?;
        dns_hostnames = a
            .enable_dns_hostnames()
            .and_then(|v| v.value())
            .unwrap_or(false);
    }
    // Node names resolve through the VPC's DNS (DNS support is AWS's default, never changed).
    if !dns_hostnames {
        c.ec2
            .modify_vpc_attribute()
            .vpc_id(&n.vpc)
            .enable_dns_hostnames(AttributeBooleanValue::builder().value(true).build())
            .send()
            .await
            .map_err(|e| from_sdk("ModifyVpcAttribute", e))?;
    }
    let igw = match n.internet_gateway.clone() {
        Some(id) => id,
        None => {
            let g = c
                .ec2
                .create_internet_gateway()
                .tag_specifications(tag_specs(
                    ResourceType::InternetGateway,
                    tags,
                    "internet-gateway",
                    &name("igw"),
                ))
                .customize()
                .config_override(once())
                .send()
                .await
                .map_err(|e| from_sdk("CreateInternetGateway", e))?;
            let id = id_or_empty(g.internet_gateway().and_then(|g| g.internet_gateway_id()));
            n.resources.push(res("internet-gateway", &id));
            n.internet_gateway = Some(id.clone());
            id
        }
    };
    if !n.internet_gateway_attached {
        c.ec2
            .attach_internet_gateway()
            .internet_gateway_id(&igw)
            .vpc_id(&n.vpc)
            .send()
            .await
            .map_err(|e| lost_answer(from_sdk("AttachInternetGateway", e)))?;
        n.internet_gateway_attached = true;
    }
    // Each resource on its own: a crash between any two calls is repaired by the next call.
    for zone in zones {
        let slot = slots[zone];
        let mut zt = tags.clone();
        zt.insert(TAG_ZONE.into(), zone.clone());
        for public in [false, true] {
            let have = if public {
                &n.public_subnets
            } else {
                &n.private_subnets
            };
            if have.contains_key(zone) {
                continue;
            }
            let role = if public { "public" } else { "private" };
            let cidr = if public {
                public_cidr(slot)
            } else {
                private_cidr(slot)
            };
            let s = c
                .ec2
                .create_subnet()
                .vpc_id(&n.vpc)
                .availability_zone(zone)
                .cidr_block(&cidr)
                .tag_specifications(tag_specs(
                    ResourceType::Subnet,
                    &zt,
                    role,
                    &name(&format!("{role}-{zone}")),
                ))
                .send()
                .await
                .map_err(|e| lost_answer(from_sdk("CreateSubnet", e)))?;
            let id = id_or_empty(s.subnet().and_then(|s| s.subnet_id()));
            n.resources.push(res("subnet", &id));
            n.subnet_cidrs.insert(id.clone(), cidr);
            if public {
                n.public_subnets.insert(zone.clone(), id);
            } else {
                n.private_subnets.insert(zone.clone(), id);
            }
        }
        if !n.elastic_ips.contains_key(zone) {
            let eip = c
                .ec2
                .allocate_address()
                .domain(DomainType::Vpc)
                .tag_specifications(tag_specs(
                    ResourceType::ElasticIp,
                    &zt,
                    "nat-eip",
                    &name(&format!("eip-{zone}")),
                ))
                .customize()
                .config_override(once())
                .send()
                .await
                .map_err(|e| from_sdk("AllocateAddress", e))?;
            let id = id_or_empty(eip.allocation_id());
            n.resources.push(res("elastic-ip", &id));
            n.elastic_ips.insert(zone.clone(), id);
        }
        if !n.nat_gateways.contains_key(zone) {
            let nat = c
                .ec2
                .create_nat_gateway()
                .subnet_id(&n.public_subnets[zone])
                .allocation_id(&n.elastic_ips[zone])
                .tag_specifications(tag_specs(
                    ResourceType::Natgateway,
                    &zt,
                    "nat-gateway",
                    &name(&format!("nat-{zone}")),
                ))
                .send()
                .await
                .map_err(|e| from_sdk("CreateNatGateway", e))?;
            let g = nat.nat_gateway();
            let id = id_or_empty(g.and_then(|g| g.nat_gateway_id()));
            // The answer carries its state: no describe only to wait for it.
            if !matches!(g.and_then(|g| g.state()), Some(NatGatewayState::Available)) {
                n.pending_nat += 1;
            }
            n.resources.push(res("nat-gateway", &id));
            n.nat_gateways.insert(zone.clone(), id);
        }
        // Public subnets route to the internet gateway, each private one to its zone's NAT.
        for (key, subnet, target_nat) in [
            ("public".to_string(), n.public_subnets[zone].clone(), None),
            (
                format!("private/{zone}"),
                n.private_subnets[zone].clone(),
                Some(n.nat_gateways[zone].clone()),
            ),
        ] {
            if !n.route_tables.contains_key(&key) {
                let (role, rname, rtags) = if target_nat.is_some() {
                    ("private-routes", name(&format!("private-{zone}")), &zt)
                } else {
                    ("public-routes", name("public"), tags)
                };
                let rt = c
                    .ec2
                    .create_route_table()
                    .vpc_id(&n.vpc)
                    .tag_specifications(tag_specs(ResourceType::RouteTable, rtags, role, &rname))
                    .customize()
                    .config_override(once())
                    .send()
                    .await
                    .map_err(|e| from_sdk("CreateRouteTable", e))?;
                let rt_id = id_or_empty(rt.route_table().and_then(|t| t.route_table_id()));
                n.resources.push(res("route-table", &rt_id));
                n.route_tables.insert(key.clone(), (rt_id, Vec::new()));
            }
            let rt_id = n.route_tables[&key].0.clone();
            let target = target_nat.clone().unwrap_or_else(|| igw.clone());
            match n.default_routes.get(&key) {
                Some(t) if *t == target => {}
                have => {
                    // CreateRoute and ReplaceRoute take the same fields (distinct builder
                    // types): one body for both.
                    macro_rules! default_route {
                        ($builder:expr, $op:literal) => {{
                            let r = $builder
                                .route_table_id(&rt_id)
                                .destination_cidr_block("0.0.0.0/0");
                            match &target_nat {
                                Some(nat) => r.nat_gateway_id(nat),
                                None => r.gateway_id(&igw),
                            }
                            .send()
                            .await
                            .map(|_| ())
                            .map_err(|e| lost_answer(from_sdk($op, e)))
                        }};
                    }
                    if have.is_some() {
                        default_route!(c.ec2.replace_route(), "ReplaceRoute")?;
                    } else {
                        default_route!(c.ec2.create_route(), "CreateRoute")?;
                    }
                    n.default_routes.insert(key.clone(), target);
                }
            }
            match n.subnet_associations.get(&subnet).cloned() {
                Some((_, t)) if t == rt_id => {}
                Some((assoc, _)) => {
                    let out = c
                        .ec2
                        .replace_route_table_association()
                        .association_id(&assoc)
                        .route_table_id(&rt_id)
                        .send()
                        .await
                        .map_err(|e| from_sdk("ReplaceRouteTableAssociation", e))?;
                    let new = id_or_empty(out.new_association_id());
                    n.route_table_associations.retain(|a| *a != assoc);
                    n.route_table_associations.push(new.clone());
                    for (_, subnets) in n.route_tables.values_mut() {
                        subnets.retain(|s| *s != subnet);
                    }
                    n.subnet_associations
                        .insert(subnet.clone(), (new, rt_id.clone()));
                }
                None => {
                    let out = c
                        .ec2
                        .associate_route_table()
                        .route_table_id(&rt_id)
                        .subnet_id(&subnet)
                        .send()
                        .await
                        .map_err(|e| lost_answer(from_sdk("AssociateRouteTable", e)))?;
                    let new = id_or_empty(out.association_id());
                    n.route_table_associations.push(new.clone());
                    n.subnet_associations
                        .insert(subnet.clone(), (new, rt_id.clone()));
                }
            }
            if let Some((_, assoc)) = n.route_tables.get_mut(&key) {
                if !assoc.contains(&subnet) {
                    assoc.push(subnet);
                }
            }
        }
    }
    ensure_security_groups(c, &mut n, cluster_name, tags, policy).await?;
    // Every call above answered with what it made: the network is known without observing
    // it again.
    Ok(n.canonical())
}

/// Ensures the cluster's security groups (control plane, workers, bastion, API load balancer)
/// in `n.vpc` and their ingress rules: groups created when missing, missing rules authorized,
/// rules that no longer belong revoked (see [`crate::security`]). Also used with static
/// placement, where the VPC is the user's and these groups are all spectro creates in it.
/// `n.vpc_cidr` must be set (NodePorts are open to it). Returns whether anything changed.
pub async fn ensure_security_groups(
    c: &AwsClients,
    n: &mut Network,
    cluster_name: &str,
    tags: &BTreeMap<String, String>,
    policy: &SecurityPolicy,
) -> Result<bool, AwsError> {
    let name = |what: &str| format!("{cluster_name}-{what}");
    let mut changed = false;
    for role in ROLES {
        if n.security_groups.contains_key(role) {
            continue;
        }
        let g = c
            .ec2
            .create_security_group()
            .vpc_id(&n.vpc)
            .group_name(name(role))
            .description(format!("spectro {cluster_name} {role}"))
            .tag_specifications(tag_specs(
                ResourceType::SecurityGroup,
                tags,
                role,
                &name(role),
            ))
            .send()
            .await
            .map_err(|e| from_sdk("CreateSecurityGroup", e));
        changed = true;
        let id = match g {
            Ok(g) => id_or_empty(g.group_id()),
            // A create whose answer was lost and that the SDK retried: the group is there.
            Err(e) if e.has_code(&["InvalidGroup.Duplicate"]) => {
                adopt_group(c, n, &name(role), tags).await?.ok_or(e)?
            }
            Err(e) => return Err(e),
        };
        n.resources.push(res("security-group", &id));
        n.security_groups.insert(role.to_string(), id);
    }
    let desired = desired_rules(&n.security_groups, policy, &n.vpc_cidr);
    for role in ROLES {
        let group = n.security_groups[role].clone();
        let have = n
            .security_group_rules
            .get(&group)
            .cloned()
            .unwrap_or_default();
        let want = desired.get(role).cloned().unwrap_or_default();
        let missing: std::collections::BTreeSet<_> = want.difference(&have).cloned().collect();
        let extra: std::collections::BTreeSet<_> = have.difference(&want).cloned().collect();
        if !missing.is_empty() {
            let r = c
                .ec2
                .authorize_security_group_ingress()
                .group_id(&group)
                .set_ip_permissions(Some(permissions(&missing)))
                .send()
                .await;
            if let Err(e) = r {
                // One of them is there after all (a stale observation): the whole call was
                // refused, so add them one by one.
                let e = from_sdk("AuthorizeSecurityGroupIngress", e);
                if !e.has_code(&["InvalidPermission.Duplicate"]) {
                    return Err(e);
                }
                for p in permissions(&missing) {
                    let r = c
                        .ec2
                        .authorize_security_group_ingress()
                        .group_id(&group)
                        .ip_permissions(p)
                        .send()
                        .await;
                    if let Err(e) = r {
                        let e = from_sdk("AuthorizeSecurityGroupIngress", e);
                        if !e.has_code(&["InvalidPermission.Duplicate"]) {
                            return Err(e);
                        }
                    }
                }
            }
            changed = true;
        }
        if !extra.is_empty() {
            c.ec2
                .revoke_security_group_ingress()
                .group_id(&group)
                .set_ip_permissions(Some(permissions(&extra)))
                .send()
                .await
                .map_err(|e| from_sdk("RevokeSecurityGroupIngress", e))?;
            changed = true;
        }
        n.security_group_rules.insert(group, want);
    }
    n.resources.sort();
    n.resources.dedup();
    Ok(changed)
}

/// A delete AWS refuses because something still holds the resource (a NAT gateway, a load
/// balancer's network interfaces being released, an instance shutting down): not an error of
/// the request, the next pass succeeds.
fn held(e: AwsError) -> AwsError {
    if e.has_code(&[
        "DependencyViolation",
        "InvalidIPAddress.InUse",
        "InvalidGroup.InUse",
    ]) {
        AwsError::not_ready(format!("a dependency is still being released ({e})"))
    } else {
        e
    }
}

/// Deletes the cluster's live NAT gateways (one DescribeNatGateways by tag, one delete each)
/// without waiting for them; returns those now being deleted. Their deletion takes a while:
/// it can run while the instances terminate.
pub async fn delete_nat_gateways(
    c: &AwsClients,
    cluster_id: &str,
) -> Result<Vec<NatGateway>, AwsError> {
    let mut out = Vec::new();
    for g in nat_gateways(c, cluster_id, None, &[]).await? {
        if g.live() {
            c.ec2
                .delete_nat_gateway()
                .nat_gateway_id(&g.id)
                .send()
                .await
                .map_err(|e| from_sdk("DeleteNatGateway", e))?;
            out.push(g);
        } else if g.deleting() {
            out.push(g);
        }
    }
    Ok(out)
}

/// The security groups in an order AWS can delete them in (a group another group's rules
/// refer to goes after that group), with the rules to revoke first where groups refer to
/// each other in a cycle (the control plane and the workers do): `(group, rules to revoke
/// before deleting anything)` then the deletion order.
pub fn security_group_deletion(
    rules: &BTreeMap<String, BTreeSet<Rule>>,
) -> (Vec<(String, BTreeSet<Rule>)>, Vec<String>) {
    let mut left = rules.clone();
    let mut revoke = Vec::new();
    let mut order = Vec::new();
    // Rules of `g` that refer to another group still there.
    let cross = |left: &BTreeMap<String, BTreeSet<Rule>>, g: &str| -> BTreeSet<Rule> {
        left[g]
            .iter()
            .filter(|r| matches!(&r.source, Source::Group(s) if s != g && left.contains_key(s)))
            .cloned()
            .collect()
    };
    while !left.is_empty() {
        let referenced: BTreeSet<String> = left
            .keys()
            .flat_map(|g| {
                cross(&left, g).into_iter().filter_map(|r| match r.source {
                    Source::Group(s) => Some(s),
                    Source::Cidr(_) => None,
                })
            })
            .collect();
        if let Some(g) = left.keys().find(|g| !referenced.contains(*g)).cloned() {
            left.remove(&g);
            order.push(g);
            continue;
        }
        // A cycle: the group with the most references to others drops them.
        let g = left
            .keys()
            .max_by_key(|g| (cross(&left, g).len(), std::cmp::Reverse((*g).clone())))
            .cloned()
            .unwrap_or_default();
        let drop = cross(&left, &g);
        if let Some(r) = left.get_mut(&g) {
            r.retain(|x| !drop.contains(x));
        }
        revoke.push((g, drop));
    }
    (revoke, order)
}

/// The group named `name` in `n.vpc` when it carries the cluster's ownership tag (one
/// DescribeSecurityGroups); its rules go into `n`. None when it is not ours.
async fn adopt_group(
    c: &AwsClients,
    n: &mut Network,
    name: &str,
    tags: &BTreeMap<String, String>,
) -> Result<Option<String>, AwsError> {
    let out = c
        .ec2
        .describe_security_groups()
        .filters(Filter::builder().name("vpc-id").values(&n.vpc).build())
        .filters(Filter::builder().name("group-name").values(name).build())
        .send()
        .await
        .map_err(|e| from_sdk("DescribeSecurityGroups", e))?;
    let ours = out.security_groups().iter().find(|g| {
        tag_of(g.tags(), TAG_CLUSTER_ID).is_some()
            && tag_of(g.tags(), TAG_CLUSTER_ID) == tags.get(TAG_CLUSTER_ID).map(String::as_str)
    });
    Ok(ours.and_then(|g| {
        let id = g.group_id()?.to_string();
        n.security_group_rules
            .insert(id.clone(), rules_of(g.ip_permissions()));
        Some(id)
    }))
}

/// Deletes the cluster's network in reverse dependency order; returns what is left (empty
/// when everything is gone).
///
/// NAT gateways go first; while any is being deleted (its Elastic IP, its subnet and the
/// internet gateway's detach wait for it) the pass stops there and reports them: a pass
/// while they drain costs one DescribeNatGateways. Then one observation of the rest, the
/// deletes, and a check of what can outlive the VPC: AWS deletes a VPC only once its subnets,
/// route tables and security groups are gone, so the VPCs, the internet gateways and the
/// Elastic IPs (and, without a VPC of ours, the security groups) are described again.
pub async fn delete_network(
    c: &AwsClients,
    cluster_id: &str,
) -> Result<Vec<CloudResource>, AwsError> {
    let nats = delete_nat_gateways(c, cluster_id).await?;
    if !nats.is_empty() {
        // Deleted a moment ago, or already on their way: one look whether they are gone.
        let ids: Vec<String> = nats.iter().map(|g| g.id.clone()).collect();
        let draining: Vec<CloudResource> = nat_gateways(c, cluster_id, None, &ids)
            .await?
            .into_iter()
            .filter(|g| g.deleting() || g.live())
            .map(|g| res("nat-gateway", &g.id))
            .collect();
        if !draining.is_empty() {
            return Ok(draining);
        }
    }
    let n = observe_with(c, cluster_id, false, true).await?;
    let ids = |kind: &str| {
        n.resources
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| r.id.clone())
            .collect::<Vec<_>>()
    };
    for id in ids("elastic-ip") {
        c.ec2
            .release_address()
            .allocation_id(&id)
            .send()
            .await
            .map_err(|e| held(from_sdk("ReleaseAddress", e)))?;
    }
    if !n.vpc.is_empty() {
        for aid in &n.route_table_associations {
            c.ec2
                .disassociate_route_table()
                .association_id(aid)
                .send()
                .await
                .map_err(|e| from_sdk("DisassociateRouteTable", e))?;
        }
        for id in ids("route-table") {
            c.ec2
                .delete_route_table()
                .route_table_id(&id)
                .send()
                .await
                .map_err(|e| held(from_sdk("DeleteRouteTable", e)))?;
        }
    }
    for id in ids("internet-gateway") {
        // The observation knows the attachment of the one gateway it keeps; any other (a
        // leak) is detached in case, "not attached" being fine.
        let attached =
            n.internet_gateway.as_deref() != Some(id.as_str()) || n.internet_gateway_attached;
        if attached && !n.vpc.is_empty() {
            let r = c
                .ec2
                .detach_internet_gateway()
                .internet_gateway_id(&id)
                .vpc_id(&n.vpc)
                .send()
                .await
                .map_err(|e| held(from_sdk("DetachInternetGateway", e)));
            match r {
                Err(e) if !e.has_code(&["Gateway.NotAttached"]) => return Err(e),
                _ => {}
            }
        }
        c.ec2
            .delete_internet_gateway()
            .internet_gateway_id(&id)
            .send()
            .await
            .map_err(|e| held(from_sdk("DeleteInternetGateway", e)))?;
    }
    for id in ids("subnet") {
        c.ec2
            .delete_subnet()
            .subnet_id(&id)
            .send()
            .await
            .map_err(|e| held(from_sdk("DeleteSubnet", e)))?;
    }
    // Security groups referring to each other: only the references of a cycle are revoked.
    let (revoke, order) = security_group_deletion(&n.security_group_rules);
    for (group, rules) in revoke {
        c.ec2
            .revoke_security_group_ingress()
            .group_id(&group)
            .set_ip_permissions(Some(permissions(&rules)))
            .send()
            .await
            .map_err(|e| from_sdk("RevokeSecurityGroupIngress", e))?;
    }
    for id in order {
        c.ec2
            .delete_security_group()
            .group_id(&id)
            .send()
            .await
            .map_err(|e| held(from_sdk("DeleteSecurityGroup", e)))?;
    }
    for id in ids("vpc") {
        c.ec2
            .delete_vpc()
            .vpc_id(&id)
            .send()
            .await
            .map_err(|e| held(from_sdk("DeleteVpc", e)))?;
    }
    verify_deleted(c, cluster_id, n.vpc.is_empty()).await
}

/// What is left after a delete pass whose calls all succeeded: the VPCs, internet gateways
/// and Elastic IPs tagged for the cluster (and the security groups when there was no VPC of
/// ours, i.e. they live in the user's VPC). Subnets, route tables, NAT gateways and groups in
/// our VPC cannot outlive it.
async fn verify_deleted(
    c: &AwsClients,
    cluster_id: &str,
    groups_too: bool,
) -> Result<Vec<CloudResource>, AwsError> {
    let mut left = Vec::new();
    let vpcs = c
        .ec2
        .describe_vpcs()
        .filters(owned(cluster_id))
        .send()
        .await
        .map_err(|e| from_sdk("DescribeVpcs", e))?;
    left.extend(
        vpcs.vpcs()
            .iter()
            .filter_map(|v| v.vpc_id())
            .map(|id| res("vpc", id)),
    );
    let igws = c
        .ec2
        .describe_internet_gateways()
        .filters(owned(cluster_id))
        .send()
        .await
        .map_err(|e| from_sdk("DescribeInternetGateways", e))?;
    left.extend(
        igws.internet_gateways()
            .iter()
            .filter_map(|g| g.internet_gateway_id())
            .map(|id| res("internet-gateway", id)),
    );
    let eips = c
        .ec2
        .describe_addresses()
        .filters(owned(cluster_id))
        .send()
        .await
        .map_err(|e| from_sdk("DescribeAddresses", e))?;
    left.extend(
        eips.addresses()
            .iter()
            .filter_map(|a| a.allocation_id())
            .map(|id| res("elastic-ip", id)),
    );
    if groups_too {
        let sgs = c
            .ec2
            .describe_security_groups()
            .filters(owned(cluster_id))
            .send()
            .await
            .map_err(|e| from_sdk("DescribeSecurityGroups", e))?;
        left.extend(
            sgs.security_groups()
                .iter()
                .filter(|g| tag_of(g.tags(), TAG_ROLE).is_some())
                .filter_map(|g| g.group_id())
                .map(|id| res("security-group", id)),
        );
    }
    left.sort();
    Ok(left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::PortRange;

    #[test]
    fn security_groups_are_deleted_in_dependency_order_revoking_only_a_cycle() {
        let groups: BTreeMap<String, String> = ROLES
            .iter()
            .map(|r| (r.to_string(), format!("sg-{r}")))
            .collect();
        let policy = SecurityPolicy {
            cni_ports: vec![PortRange::tcp(179, 179), PortRange::ip(4)],
            bastion_cidrs: vec!["203.0.113.0/24".into()],
        };
        let rules: BTreeMap<String, BTreeSet<Rule>> = desired_rules(&groups, &policy, VPC_CIDR)
            .into_iter()
            .map(|(role, r)| (groups[&role].clone(), r))
            .collect();
        let (revoke, order) = security_group_deletion(&rules);
        // The control plane and the workers refer to each other: one of them drops its
        // references to the other groups, nothing else is revoked.
        assert_eq!(revoke.len(), 1, "{revoke:?}");
        let (g, dropped) = &revoke[0];
        assert!(g == "sg-control-plane" || g == "sg-worker");
        assert!(dropped
            .iter()
            .all(|r| matches!(&r.source, Source::Group(s) if s != g)));
        let mut all = order.clone();
        all.sort();
        let mut want: Vec<String> = groups.values().cloned().collect();
        want.sort();
        assert_eq!(all, want, "every group, once");
        // Each group goes only once no remaining group's rules (after the revoke) refer to it.
        let mut left = rules.clone();
        if let Some(r) = left.get_mut(g) {
            r.retain(|x| !dropped.contains(x));
        }
        for g in &order {
            left.remove(g);
            for (other, r) in &left {
                assert!(
                    !r.iter()
                        .any(|x| matches!(&x.source, Source::Group(s) if s == g)),
                    "{g} deleted while {other} refers to it"
                );
            }
        }
    }

    #[test]
    fn groups_without_references_need_no_revoke() {
        let mut rules = BTreeMap::new();
        rules.insert(
            "sg-a".to_string(),
            BTreeSet::from([Rule {
                ports: PortRange::tcp(22, 22),
                source: Source::Group("sg-b".into()),
            }]),
        );
        rules.insert(
            "sg-b".to_string(),
            BTreeSet::from([Rule {
                ports: PortRange::tcp(22, 22),
                source: Source::Group("sg-b".into()),
            }]),
        );
        let (revoke, order) = security_group_deletion(&rules);
        assert!(revoke.is_empty());
        assert_eq!(order, vec!["sg-a".to_string(), "sg-b".to_string()]);
    }
}

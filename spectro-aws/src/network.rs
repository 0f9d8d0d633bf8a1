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

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    AttributeBooleanValue, DomainType, Filter, IpPermission, NatGatewayState, ResourceType,
    RouteState, Tag, TagSpecification, VpcAttributeName,
};
use spectro_core::provider::{CloudResource, TAG_CLUSTER_ID, TAG_ROLE};

use crate::client::AwsClients;
use crate::error::{from_sdk, AwsError};
use crate::security::{desired_rules, permissions, rules_of, SecurityPolicy, ROLES};

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
    /// Ingress rules per security group (revoked before delete: groups reference each other).
    pub security_group_rules: Vec<(String, Vec<IpPermission>)>,
    /// Every resource, for inventory and leak checks.
    pub resources: Vec<CloudResource>,
    /// NAT gateways still pending (the network is usable once none is).
    pub pending_nat: usize,
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

/// Everything of the cluster's network that exists now, found by tag.
pub async fn observe(c: &AwsClients, cluster_id: &str) -> Result<Network, AwsError> {
    let mut n = Network::default();
    let vpcs = c
        .ec2
        .describe_vpcs()
        .filters(owned(cluster_id))
        .send()
        .await
        .map_err(|e| from_sdk("DescribeVpcs", e))?;
    if let Some(v) = vpcs.vpcs().first() {
        if let Some(id) = v.vpc_id() {
            n.vpc = id.to_string();
            n.vpc_cidr = v.cidr_block().unwrap_or_default().to_string();
            n.resources.push(res("vpc", id));
        }
    }
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
    let igws = c
        .ec2
        .describe_internet_gateways()
        .filters(owned(cluster_id))
        .send()
        .await
        .map_err(|e| from_sdk("DescribeInternetGateways", e))?;
    for g in igws.internet_gateways() {
        if let Some(id) = g.internet_gateway_id() {
            n.internet_gateway_attached = g.attachments().iter().any(|a| {
                a.vpc_id() == Some(n.vpc.as_str())
                    && !matches!(
                        a.state().map(|s| s.as_str()),
                        Some("detaching") | Some("detached")
                    )
            });
            n.internet_gateway = Some(id.to_string());
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
    if !n.vpc.is_empty() {
        // NAT gateways: moto ignores tag filters here, so filter by VPC and check tags.
        let nats = c
            .ec2
            .describe_nat_gateways()
            .filter(Filter::builder().name("vpc-id").values(&n.vpc).build())
            .send()
            .await
            .map_err(|e| from_sdk("DescribeNatGateways", e))?;
        for g in nats.nat_gateways() {
            let live = !matches!(
                g.state(),
                Some(NatGatewayState::Deleted)
                    | Some(NatGatewayState::Deleting)
                    | Some(NatGatewayState::Failed)
            );
            if live && tag_of(g.tags(), TAG_CLUSTER_ID) == Some(cluster_id) {
                if g.state() == Some(&NatGatewayState::Pending) {
                    n.pending_nat += 1;
                }
                if let Some(id) = g.nat_gateway_id() {
                    if let Some(z) = tag_of(g.tags(), TAG_ZONE) {
                        n.nat_gateways.insert(z.to_string(), id.to_string());
                    }
                    n.resources.push(res("nat-gateway", id));
                }
            }
        }
    }
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
            if !g.ip_permissions().is_empty() {
                n.security_group_rules
                    .push((id.to_string(), g.ip_permissions().to_vec()));
            }
        }
    }
    Ok(n)
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
    let mut n = observe(c, cluster_id).await?;
    let mut changed = false;
    let name = |what: &str| format!("{cluster_name}-{what}");
    let slots = zone_slots(&n, zones)?;
    let mut dns_hostnames = false;
    if n.vpc.is_empty() {
        let v = c
            .ec2
            .create_vpc()
            .cidr_block(VPC_CIDR)
            .tag_specifications(tag_specs(ResourceType::Vpc, tags, "vpc", &name("vpc")))
            .send()
            .await
            .map_err(|e| from_sdk("CreateVpc", e))?;
        changed = true;
        n.vpc = id_or_empty(v.vpc().and_then(|v| v.vpc_id()));
        n.vpc_cidr = VPC_CIDR.to_string();
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
        changed = true;
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
                .send()
                .await
                .map_err(|e| from_sdk("CreateInternetGateway", e))?;
            changed = true;
            id_or_empty(g.internet_gateway().and_then(|g| g.internet_gateway_id()))
        }
    };
    if !n.internet_gateway_attached {
        c.ec2
            .attach_internet_gateway()
            .internet_gateway_id(&igw)
            .vpc_id(&n.vpc)
            .send()
            .await
            .map_err(|e| from_sdk("AttachInternetGateway", e))?;
        changed = true;
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
                .map_err(|e| from_sdk("CreateSubnet", e))?;
            changed = true;
            let id = id_or_empty(s.subnet().and_then(|s| s.subnet_id()));
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
                .send()
                .await
                .map_err(|e| from_sdk("AllocateAddress", e))?;
            changed = true;
            n.elastic_ips
                .insert(zone.clone(), id_or_empty(eip.allocation_id()));
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
            changed = true;
            n.nat_gateways.insert(
                zone.clone(),
                id_or_empty(nat.nat_gateway().and_then(|g| g.nat_gateway_id())),
            );
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
                    .send()
                    .await
                    .map_err(|e| from_sdk("CreateRouteTable", e))?;
                changed = true;
                let rt_id = id_or_empty(rt.route_table().and_then(|t| t.route_table_id()));
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
                            .map_err(|e| from_sdk($op, e))
                        }};
                    }
                    if have.is_some() {
                        default_route!(c.ec2.replace_route(), "ReplaceRoute")?;
                    } else {
                        default_route!(c.ec2.create_route(), "CreateRoute")?;
                    }
                    changed = true;
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
                    changed = true;
                    n.subnet_associations.insert(
                        subnet.clone(),
                        (id_or_empty(out.new_association_id()), rt_id.clone()),
                    );
                }
                None => {
                    let out = c
                        .ec2
                        .associate_route_table()
                        .route_table_id(&rt_id)
                        .subnet_id(&subnet)
                        .send()
                        .await
                        .map_err(|e| from_sdk("AssociateRouteTable", e))?;
                    changed = true;
                    n.subnet_associations.insert(
                        subnet.clone(),
                        (id_or_empty(out.association_id()), rt_id.clone()),
                    );
                }
            }
            if let Some((_, assoc)) = n.route_tables.get_mut(&key) {
                if !assoc.contains(&subnet) {
                    assoc.push(subnet);
                }
            }
        }
    }
    changed |= ensure_security_groups(c, &mut n, cluster_name, tags, policy).await?;
    if changed {
        observe(c, cluster_id).await
    } else {
        Ok(n)
    }
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
            .map_err(|e| from_sdk("CreateSecurityGroup", e))?;
        changed = true;
        n.security_groups
            .insert(role.to_string(), id_or_empty(g.group_id()));
    }
    let desired = desired_rules(&n.security_groups, policy, &n.vpc_cidr);
    let observed: BTreeMap<&str, &Vec<IpPermission>> = n
        .security_group_rules
        .iter()
        .map(|(g, p)| (g.as_str(), p))
        .collect();
    for role in ROLES {
        let group = n.security_groups[role].clone();
        let have = observed
            .get(group.as_str())
            .map(|p| rules_of(p))
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
    }
    Ok(changed)
}

/// Deletes the cluster's network in reverse dependency order; returns what is left (empty
/// when everything is gone).
pub async fn delete_network(
    c: &AwsClients,
    cluster_id: &str,
) -> Result<Vec<CloudResource>, AwsError> {
    let n = observe(c, cluster_id).await?;
    let ids = |kind: &str| {
        n.resources
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| r.id.clone())
            .collect::<Vec<_>>()
    };
    for id in ids("nat-gateway") {
        c.ec2
            .delete_nat_gateway()
            .nat_gateway_id(&id)
            .send()
            .await
            .map_err(|e| from_sdk("DeleteNatGateway", e))?;
    }
    for id in ids("elastic-ip") {
        c.ec2
            .release_address()
            .allocation_id(&id)
            .send()
            .await
            .map_err(|e| from_sdk("ReleaseAddress", e))?;
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
                .map_err(|e| from_sdk("DeleteRouteTable", e))?;
        }
        for id in ids("internet-gateway") {
            c.ec2
                .detach_internet_gateway()
                .internet_gateway_id(&id)
                .vpc_id(&n.vpc)
                .send()
                .await
                .map_err(|e| from_sdk("DetachInternetGateway", e))?;
            c.ec2
                .delete_internet_gateway()
                .internet_gateway_id(&id)
                .send()
                .await
                .map_err(|e| from_sdk("DeleteInternetGateway", e))?;
        }
    }
    for id in ids("subnet") {
        c.ec2
            .delete_subnet()
            .subnet_id(&id)
            .send()
            .await
            .map_err(|e| from_sdk("DeleteSubnet", e))?;
    }
    // Security groups reference each other: revoke the rules first.
    for (group, rules) in &n.security_group_rules {
        c.ec2
            .revoke_security_group_ingress()
            .group_id(group)
            .set_ip_permissions(Some(rules.clone()))
            .send()
            .await
            .map_err(|e| from_sdk("RevokeSecurityGroupIngress", e))?;
    }
    for id in ids("security-group") {
        c.ec2
            .delete_security_group()
            .group_id(&id)
            .send()
            .await
            .map_err(|e| from_sdk("DeleteSecurityGroup", e))?;
    }
    if !n.vpc.is_empty() {
        c.ec2
            .delete_vpc()
            .vpc_id(&n.vpc)
            .send()
            .await
            .map_err(|e| from_sdk("DeleteVpc", e))?;
    }
    Ok(observe(c, cluster_id).await?.resources)
}

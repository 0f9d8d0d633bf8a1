//! The cluster network for dynamic placement: a VPC per cluster; per availability zone a
//! private subnet (nodes) and a public subnet (NAT gateway, bastion, load balancer); an
//! internet gateway; a NAT gateway with an Elastic IP per zone; one public route table and a
//! private route table per zone; security groups for the control plane, the workers, the
//! bastion and the API load balancer.
//!
//! Everything is found again by the cluster's ownership tag, so `ensure_network` is
//! idempotent (a second call creates nothing) and `delete_network` walks what exists in
//! reverse dependency order, then verifies by tag that nothing is left.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    AttributeBooleanValue, DomainType, Filter, IpPermission, IpRange, NatGatewayState,
    ResourceType, Tag, TagSpecification, UserIdGroupPair,
};
use spectro_core::provider::{CloudResource, ProviderError, TAG_CLUSTER_ID, TAG_ROLE};

use crate::client::AwsClients;
use crate::error::from_sdk;

/// Tag carrying the availability zone of a zonal resource.
pub const TAG_ZONE: &str = "spectro.io/zone";

/// The network of one cluster, as found or created.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Network {
    /// VPC id.
    pub vpc: String,
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

/// Private subnet of zone `i` (10.0.0.0/20, 10.0.16.0/20, ...; up to 8 zones).
pub fn private_cidr(i: usize) -> String {
    format!("10.0.{}.0/20", 16 * i)
}

/// Public subnet of zone `i` (10.0.128.0/22, 10.0.132.0/22, ...).
pub fn public_cidr(i: usize) -> String {
    format!("10.0.{}.0/22", 128 + 4 * i)
}

fn res(kind: &str, id: &str) -> CloudResource {
    CloudResource {
        kind: kind.into(),
        id: id.into(),
    }
}

/// Everything of the cluster's network that exists now, found by tag.
pub async fn observe(c: &AwsClients, cluster_id: &str) -> Result<Network, ProviderError> {
    let mut n = Network::default();
    let vpcs = c
        .ec2
        .describe_vpcs()
        .filters(owned(cluster_id))
        .send()
        .await
        .map_err(|e| from_sdk("DescribeVpcs", e))?;
    if let Some(v) = vpcs.vpcs().first().and_then(|v| v.vpc_id()) {
        n.vpc = v.to_string();
        n.resources.push(res("vpc", v));
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
            n.route_table_associations.extend(
                t.associations()
                    .iter()
                    .filter(|a| a.main() != Some(true))
                    .filter_map(|a| a.route_table_association_id().map(str::to_string)),
            );
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

fn tcp(port_from: i32, port_to: i32) -> aws_sdk_ec2::types::builders::IpPermissionBuilder {
    IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(port_from)
        .to_port(port_to)
}

/// Creates whatever is missing of the cluster's network in `zones` and returns it.
pub async fn ensure_network(
    c: &AwsClients,
    cluster_id: &str,
    cluster_name: &str,
    zones: &[String],
    tags: &BTreeMap<String, String>,
) -> Result<Network, ProviderError> {
    let mut n = observe(c, cluster_id).await?;
    let name = |what: &str| format!("{cluster_name}-{what}");
    if n.vpc.is_empty() {
        let v = c
            .ec2
            .create_vpc()
            .cidr_block("10.0.0.0/16")
            .tag_specifications(tag_specs(ResourceType::Vpc, tags, "vpc", &name("vpc")))
            .send()
            .await
            .map_err(|e| from_sdk("CreateVpc", e))?;
        n.vpc = v
            .vpc()
            .and_then(|v| v.vpc_id())
            .unwrap_or_default()
            .to_string();
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
                .send()
                .await
                .map_err(|e| from_sdk("CreateInternetGateway", e))?;
            let id = g
                .internet_gateway()
                .and_then(|g| g.internet_gateway_id())
                .unwrap_or_default()
                .to_string();
            c.ec2
                .attach_internet_gateway()
                .internet_gateway_id(&id)
                .vpc_id(&n.vpc)
                .send()
                .await
                .map_err(|e| from_sdk("AttachInternetGateway", e))?;
            id
        }
    };
    // Each resource on its own: a crash between any two creates is repaired by the next call.
    for (i, zone) in zones.iter().enumerate() {
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
            let s = c
                .ec2
                .create_subnet()
                .vpc_id(&n.vpc)
                .availability_zone(zone)
                .cidr_block(if public {
                    public_cidr(i)
                } else {
                    private_cidr(i)
                })
                .tag_specifications(tag_specs(
                    ResourceType::Subnet,
                    &zt,
                    role,
                    &name(&format!("{role}-{zone}")),
                ))
                .send()
                .await
                .map_err(|e| from_sdk("CreateSubnet", e))?;
            let id = s
                .subnet()
                .and_then(|s| s.subnet_id())
                .unwrap_or_default()
                .to_string();
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
            n.elastic_ips.insert(
                zone.clone(),
                eip.allocation_id().unwrap_or_default().to_string(),
            );
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
            n.nat_gateways.insert(
                zone.clone(),
                nat.nat_gateway()
                    .and_then(|g| g.nat_gateway_id())
                    .unwrap_or_default()
                    .to_string(),
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
                let rt_id = rt
                    .route_table()
                    .and_then(|t| t.route_table_id())
                    .unwrap_or_default()
                    .to_string();
                let route = c
                    .ec2
                    .create_route()
                    .route_table_id(&rt_id)
                    .destination_cidr_block("0.0.0.0/0");
                let route = match &target_nat {
                    Some(nat) => route.nat_gateway_id(nat),
                    None => route.gateway_id(&igw),
                };
                route.send().await.map_err(|e| from_sdk("CreateRoute", e))?;
                n.route_tables.insert(key.clone(), (rt_id, Vec::new()));
            }
            let (rt_id, assoc) = n
                .route_tables
                .get_mut(&key)
                .expect("route table ensured above");
            if !assoc.contains(&subnet) {
                c.ec2
                    .associate_route_table()
                    .route_table_id(rt_id.as_str())
                    .subnet_id(&subnet)
                    .send()
                    .await
                    .map_err(|e| from_sdk("AssociateRouteTable", e))?;
                assoc.push(subnet);
            }
        }
    }
    ensure_security_groups(c, &mut n, cluster_name, tags).await?;
    observe(c, cluster_id).await
}

/// Creates the cluster's security groups (control plane, workers, bastion, API load
/// balancer) in `n.vpc` when missing, with the rules Kubernetes needs. Also used with static
/// placement, where the VPC is the user's and these groups are all spectro creates in it.
pub async fn ensure_security_groups(
    c: &AwsClients,
    n: &mut Network,
    cluster_name: &str,
    tags: &BTreeMap<String, String>,
) -> Result<(), ProviderError> {
    let name = |what: &str| format!("{cluster_name}-{what}");
    // Security groups: nodes only talk to what Kubernetes needs.
    let had_groups = n.security_groups.len() == 4;
    for role in ["lb", "bastion", "control-plane", "worker"] {
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
        n.security_groups.insert(
            role.to_string(),
            g.group_id().unwrap_or_default().to_string(),
        );
    }
    let sg = |r: &str| n.security_groups.get(r).cloned().unwrap_or_default();
    let from = |g: String| UserIdGroupPair::builder().group_id(g).build();
    let anywhere = IpRange::builder().cidr_ip("0.0.0.0/0").build();
    let rules: Vec<(String, Vec<IpPermission>)> = vec![
        (
            sg("lb"),
            vec![tcp(6443, 6443).ip_ranges(anywhere.clone()).build()],
        ),
        (sg("bastion"), vec![tcp(22, 22).ip_ranges(anywhere).build()]),
        (
            sg("control-plane"),
            vec![
                tcp(6443, 6443)
                    .user_id_group_pairs(from(sg("lb")))
                    .user_id_group_pairs(from(sg("worker")))
                    .build(),
                tcp(2379, 2380)
                    .user_id_group_pairs(from(sg("control-plane")))
                    .build(),
                tcp(22, 22).user_id_group_pairs(from(sg("bastion"))).build(),
                IpPermission::builder()
                    .ip_protocol("-1")
                    .user_id_group_pairs(from(sg("worker")))
                    .user_id_group_pairs(from(sg("control-plane")))
                    .build(),
            ],
        ),
        (
            sg("worker"),
            vec![
                tcp(22, 22).user_id_group_pairs(from(sg("bastion"))).build(),
                IpPermission::builder()
                    .ip_protocol("-1")
                    .user_id_group_pairs(from(sg("worker")))
                    .user_id_group_pairs(from(sg("control-plane")))
                    .build(),
            ],
        ),
    ];
    for (group, perms) in rules {
        if had_groups {
            break;
        }
        let r = c
            .ec2
            .authorize_security_group_ingress()
            .group_id(&group)
            .set_ip_permissions(Some(perms))
            .send()
            .await;
        if let Err(e) = r {
            // Already there (a second ensure): fine.
            let e = from_sdk("AuthorizeSecurityGroupIngress", e);
            if !e.to_string().contains("InvalidPermission.Duplicate") {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Deletes the cluster's network in reverse dependency order; returns what is left (empty
/// when everything is gone).
pub async fn delete_network(
    c: &AwsClients,
    cluster_id: &str,
) -> Result<Vec<CloudResource>, ProviderError> {
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

//! A cluster's shared infrastructure on Azure, in the cluster's existing resource group:
//!
//! | resource | name | dynamic placement | static placement (the user's VNet) |
//! | --- | --- | --- | --- |
//! | public IP of the API server (Standard, static, DNS label = prefix) | `<prefix>-api-ip` | yes | yes |
//! | load balancer: frontend `api`, backend pool `control-plane`, TCP probe and rule 6443 | `<prefix>-api-lb` | yes | yes |
//! | control-plane security group | `<prefix>-cp-nsg` | on the control-plane subnet | on each control-plane NIC |
//! | worker security group | `<prefix>-node-nsg` | on the worker subnet | on each worker NIC |
//! | public IP of the NAT gateway | `<prefix>-nat-ip` | yes | no |
//! | NAT gateway (outbound of both subnets) | `<prefix>-nat` | yes | no: outbound is the user's network's |
//! | virtual network 10.0.0.0/16 with subnets 10.0.0.0/24 (control plane), 10.0.16.0/20 (workers) | `<prefix>-vnet` | yes, subnets in the same PUT | never written: read to find the subnets |
//!
//! Outbound: a NAT gateway, not load-balancer outbound rules. Outbound rules would need every
//! worker in a backend pool of the API server's public load balancer (or a second load
//! balancer) and share its SNAT ports; a NAT gateway serves both subnets with its own IP and
//! needs no per-node registration, so a node's create is one call.
//!
//! Ensuring reads each resource by its deterministic name (one GET each, in parallel), then
//! creates what is missing in three waves (IPs and security groups; NAT gateway and load
//! balancer; network), following each wave's long-running operations before the next wave
//! references them. Deleting lists each resource type of the resource group once, keeps what
//! carries the cluster's id tag (or its name prefix), and deletes in reverse waves.

use std::collections::BTreeMap;

use futures_util::future::try_join_all;
use serde::de::DeserializeOwned;
use serde::Serialize;
use spectro_core::provider::{
    CloudResource, ClusterContext, ClusterId, DeleteStatus, InfraStatus, TAG_CLUSTER_ID, TAG_ROLE,
};

use crate::client::{Arm, Poller, COMPUTE_API, NETWORK_API};
use crate::error::{AzureError, Class};
use crate::models::{
    AddressSpace, Child, DnsSettings, FrontendProps, LbProps, LbRuleProps, NatProps, NicProps,
    NsgProps, Plain, ProbeProps, Provisioned, PublicIpProps, Resource, RuleProps, Sku, SubResource,
    SubnetProps, VmProps, VnetProps,
};
use crate::names::{placement, prefix_of, tag_key, Names};

/// Output: the control-plane subnet's id.
pub const OUT_CP_SUBNET: &str = "cpSubnet";
/// Output: the worker subnet's id.
pub const OUT_NODE_SUBNET: &str = "nodeSubnet";
/// Output: the API server's backend pool id.
pub const OUT_BACKEND_POOL: &str = "backendPool";
/// Output (static placement): the security group of control-plane NICs.
pub const OUT_CP_NSG: &str = "cpNsg";
/// Output (static placement): the security group of worker NICs.
pub const OUT_NODE_NSG: &str = "nodeNsg";

/// The new network's address space.
pub const VNET_CIDR: &str = "10.0.0.0/16";
/// The control-plane subnet.
pub const CP_SUBNET_CIDR: &str = "10.0.0.0/24";
/// The worker subnet.
pub const NODE_SUBNET_CIDR: &str = "10.0.16.0/20";
/// The API server's port.
pub const API_PORT: i32 = 6443;

const NET: &str = "Microsoft.Network";

/// The Azure tags of a resource of `ctx`'s cluster in `role`: the user's tags, ownership
/// and role, with Azure-safe names.
pub fn tags(ctx: &ClusterContext, role: &str) -> BTreeMap<String, String> {
    let mut t: BTreeMap<String, String> = ctx
        .ownership_tags()
        .into_iter()
        .map(|(k, v)| (tag_key(&k), v))
        .collect();
    t.insert(tag_key(TAG_ROLE), role.to_string());
    t
}

fn rule(
    name: &str,
    priority: i32,
    access: &str,
    protocol: &str,
    ports: &str,
    source: &str,
    description: &str,
) -> Child<RuleProps> {
    Child {
        id: None,
        name: name.into(),
        properties: RuleProps {
            description: Some(description.into()),
            protocol: protocol.into(),
            source_port_range: Some("*".into()),
            destination_port_range: Some(ports.into()),
            source_address_prefix: Some(source.into()),
            destination_address_prefix: Some("*".into()),
            access: access.into(),
            priority,
            direction: "Inbound".into(),
        },
    }
}

/// The control-plane security group's rules. The API server is reachable on 6443 from the
/// load balancer (its probes, `AzureLoadBalancer`), from the nodes (`VirtualNetwork`) and
/// from clients through the public load balancer: Azure's load balancer forwards with the
/// client's own address, so that traffic arrives from `Internet`. etcd (2379-2380) only
/// from the control-plane subnet; node traffic from the network; nothing else from outside.
#[must_use]
pub fn control_plane_rules(cp_prefix: &str) -> Vec<Child<RuleProps>> {
    vec![
        rule(
            "allow-apiserver-probe",
            100,
            "Allow",
            "Tcp",
            "6443",
            "AzureLoadBalancer",
            "load balancer health probes of the API server",
        ),
        rule(
            "allow-apiserver-nodes",
            110,
            "Allow",
            "Tcp",
            "6443",
            "VirtualNetwork",
            "the API server from the nodes",
        ),
        rule(
            "allow-apiserver-clients",
            120,
            "Allow",
            "Tcp",
            "6443",
            "Internet",
            "the API server through the public load balancer (clients keep their address)",
        ),
        rule(
            "allow-etcd-control-plane",
            200,
            "Allow",
            "Tcp",
            "2379-2380",
            cp_prefix,
            "etcd among control-plane nodes only",
        ),
        rule(
            "deny-etcd",
            210,
            "Deny",
            "Tcp",
            "2379-2380",
            "*",
            "etcd from anywhere else",
        ),
        rule(
            "allow-nodes",
            300,
            "Allow",
            "*",
            "*",
            "VirtualNetwork",
            "kubelet, CNI and node traffic",
        ),
        rule(
            "deny-internet",
            4000,
            "Deny",
            "*",
            "*",
            "Internet",
            "nothing else from outside",
        ),
    ]
}

/// The worker security group's rules: node traffic only.
#[must_use]
pub fn worker_rules() -> Vec<Child<RuleProps>> {
    vec![
        rule(
            "allow-nodes",
            100,
            "Allow",
            "*",
            "*",
            "VirtualNetwork",
            "kubelet, CNI and node traffic",
        ),
        rule(
            "deny-internet",
            4000,
            "Deny",
            "*",
            "*",
            "Internet",
            "nothing from outside",
        ),
    ]
}

fn state_of(p: &Option<String>) -> &str {
    p.as_deref().unwrap_or("Succeeded")
}

/// One wave of PUTs: each PUT's answer replaces what was observed; then every operation is
/// followed to its end.
async fn wave(arm: &Arm, ops: Vec<(String, Option<Poller>)>) -> Result<(), AzureError> {
    try_join_all(
        ops.iter()
            .filter_map(|(op, p)| p.as_ref().map(|p| async move { arm.wait(op, p).await })),
    )
    .await
    .map(|_| ())
}

async fn put<P: Serialize + DeserializeOwned + Default>(
    arm: &Arm,
    op: &str,
    path: &str,
    body: &Resource<P>,
) -> Result<(Resource<P>, (String, Option<Poller>)), AzureError> {
    let (r, p) = arm.put(op, path, NETWORK_API, body).await?;
    Ok((r, (op.to_string(), p)))
}

struct Paths {
    api_ip: String,
    nat_ip: String,
    cp_nsg: String,
    node_nsg: String,
    nat: String,
    vnet: String,
    lb: String,
}

impl Paths {
    fn of(arm: &Arm, n: &Names) -> Paths {
        let rg = &n.resource_group;
        Paths {
            api_ip: arm.resource_path(rg, NET, &format!("publicIPAddresses/{}", n.api_ip())),
            nat_ip: arm.resource_path(rg, NET, &format!("publicIPAddresses/{}", n.nat_ip())),
            cp_nsg: arm.resource_path(rg, NET, &format!("networkSecurityGroups/{}", n.cp_nsg())),
            node_nsg: arm.resource_path(
                rg,
                NET,
                &format!("networkSecurityGroups/{}", n.node_nsg()),
            ),
            nat: arm.resource_path(rg, NET, &format!("natGateways/{}", n.nat())),
            vnet: arm.resource_path(&n.vnet_group, NET, &format!("virtualNetworks/{}", n.vnet)),
            lb: arm.resource_path(rg, NET, &format!("loadBalancers/{}", n.lb())),
        }
    }
}

fn public_ip(ctx: &ClusterContext, role: &str, label: Option<String>) -> Resource<PublicIpProps> {
    Resource {
        location: Some(ctx.spec.cloud.region().to_string()),
        tags: tags(ctx, role),
        sku: Some(Sku {
            name: "Standard".into(),
        }),
        properties: PublicIpProps {
            allocation: Some("Static".into()),
            version: Some("IPv4".into()),
            dns_settings: label.map(|l| DnsSettings {
                domain_name_label: l,
                fqdn: None,
            }),
            ..PublicIpProps::default()
        },
        ..Resource::default()
    }
}

fn nsg(ctx: &ClusterContext, role: &str, rules: Vec<Child<RuleProps>>) -> Resource<NsgProps> {
    Resource {
        location: Some(ctx.spec.cloud.region().to_string()),
        tags: tags(ctx, role),
        properties: NsgProps {
            security_rules: rules,
            provisioning_state: None,
        },
        ..Resource::default()
    }
}

fn load_balancer(ctx: &ClusterContext, lb_id: &str, ip_id: &str) -> Resource<LbProps> {
    let child = |kind: &str, name: &str| SubResource::to(format!("{lb_id}/{kind}/{name}"));
    Resource {
        location: Some(ctx.spec.cloud.region().to_string()),
        tags: tags(ctx, "api-endpoint"),
        sku: Some(Sku {
            name: "Standard".into(),
        }),
        properties: LbProps {
            frontends: vec![Child {
                id: None,
                name: "api".into(),
                properties: FrontendProps {
                    public_ip_address: Some(SubResource::to(ip_id)),
                },
            }],
            backend_address_pools: vec![Child {
                id: None,
                name: "control-plane".into(),
                properties: Plain::default(),
            }],
            probes: vec![Child {
                id: None,
                name: "apiserver".into(),
                properties: ProbeProps {
                    protocol: "Tcp".into(),
                    port: API_PORT,
                    interval_in_seconds: Some(5),
                    number_of_probes: Some(2),
                },
            }],
            load_balancing_rules: vec![Child {
                id: None,
                name: "apiserver".into(),
                properties: LbRuleProps {
                    frontend: Some(child("frontendIPConfigurations", "api")),
                    backend_address_pool: Some(child("backendAddressPools", "control-plane")),
                    probe: Some(child("probes", "apiserver")),
                    protocol: "Tcp".into(),
                    frontend_port: API_PORT,
                    backend_port: Some(API_PORT),
                    disable_outbound_snat: Some(true),
                    idle_timeout_in_minutes: Some(4),
                },
            }],
            provisioning_state: None,
        },
        ..Resource::default()
    }
}

fn subnet(name: &str, cidr: &str, nsg_id: &str, nat_id: &str) -> Child<SubnetProps> {
    Child {
        id: None,
        name: name.into(),
        properties: SubnetProps {
            address_prefix: Some(cidr.into()),
            network_security_group: Some(SubResource::to(nsg_id)),
            nat_gateway: Some(SubResource::to(nat_id)),
            provisioning_state: None,
        },
    }
}

fn same_id(a: &Option<SubResource>, b: &str) -> bool {
    a.as_ref().is_some_and(|s| s.id.eq_ignore_ascii_case(b))
}

/// The subnet ids of a network, checked: both subnets exist.
fn subnet_ids(
    vnet: &Resource<VnetProps>,
    n: &Names,
) -> Result<(String, String, Option<String>), AzureError> {
    let find = |name: &str, field: &str| {
        vnet.properties
            .subnets
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| {
                AzureError::invalid(
                    field,
                    format!(
                        "subnet `{name}` does not exist in virtual network `{}` (resource group `{}`)",
                        n.vnet, n.vnet_group
                    ),
                )
            })
    };
    let cp = find(&n.cp_subnet, "cloud.azure.vnet.controlPlaneSubnet")?;
    let node = find(&n.node_subnet, "cloud.azure.vnet.workerSubnet")?;
    let id = |s: &Child<SubnetProps>| {
        s.id.clone()
            .unwrap_or_else(|| format!("{}/subnets/{}", vnet.id, s.name))
    };
    Ok((id(cp), id(node), cp.properties.address_prefix.clone()))
}

/// Creates what is missing of `ctx`'s infrastructure and reports it.
pub async fn ensure(arm: &Arm, ctx: &ClusterContext) -> Result<InfraStatus, AzureError> {
    let n = Names::of(ctx)?;
    placement(ctx)?;
    let p = Paths::of(arm, &n);
    let dynamic = !n.static_network;
    let get_ip = |path: &str| {
        let path = path.to_string();
        async move {
            arm.get::<Resource<PublicIpProps>>("PublicIPAddresses.Get", &path, NETWORK_API)
                .await
        }
    };
    let get_nsg = |path: &str| {
        let path = path.to_string();
        async move {
            arm.get::<Resource<NsgProps>>("NetworkSecurityGroups.Get", &path, NETWORK_API)
                .await
        }
    };
    // Observe everything by name at once.
    let (api_ip, nat_ip, cp_nsg, node_nsg, nat, vnet, lb) = tokio::try_join!(
        get_ip(&p.api_ip),
        async {
            if dynamic {
                get_ip(&p.nat_ip).await
            } else {
                Ok(None)
            }
        },
        get_nsg(&p.cp_nsg),
        get_nsg(&p.node_nsg),
        async {
            if dynamic {
                arm.get::<Resource<NatProps>>("NatGateways.Get", &p.nat, NETWORK_API)
                    .await
            } else {
                Ok(None)
            }
        },
        arm.get::<Resource<VnetProps>>("VirtualNetworks.Get", &p.vnet, NETWORK_API),
        arm.get::<Resource<LbProps>>("LoadBalancers.Get", &p.lb, NETWORK_API),
    )?;
    // A resource ARM gave up on (`Failed`, `Canceled`) is sent again, as a missing one is:
    // a PUT of the same body is how ARM repairs it.
    let (api_ip, nat_ip) = (
        api_ip.filter(|r| !r.failed()),
        nat_ip.filter(|r| !r.failed()),
    );
    let (cp_nsg, node_nsg) = (
        cp_nsg.filter(|r| !r.failed()),
        node_nsg.filter(|r| !r.failed()),
    );
    let (nat, lb) = (nat.filter(|r| !r.failed()), lb.filter(|r| !r.failed()));
    let vnet = if dynamic {
        vnet.filter(|r| !r.failed())
    } else {
        vnet
    };
    // The user's network must exist with both subnets; it is read, never written.
    let user_cp_prefix = if dynamic {
        None
    } else {
        let v = vnet.as_ref().ok_or_else(|| {
            AzureError::invalid(
                "cloud.azure.vnet.name",
                format!(
                    "virtual network `{}` does not exist in resource group `{}`",
                    n.vnet, n.vnet_group
                ),
            )
        })?;
        subnet_ids(v, &n)?.2
    };
    let cp_source = if dynamic {
        CP_SUBNET_CIDR.to_string()
    } else {
        user_cp_prefix.unwrap_or_else(|| "VirtualNetwork".into())
    };

    // Wave 1: public IPs and security groups.
    let mut ops = Vec::new();
    let mut api_ip = api_ip;
    let mut nat_ip = nat_ip;
    let (mut cp_nsg, mut node_nsg) = (cp_nsg, node_nsg);
    {
        let label = n.prefix.clone();
        let f1 = async {
            match &api_ip {
                Some(_) => Ok(None),
                None => put(
                    arm,
                    "PublicIPAddresses.CreateOrUpdate",
                    &p.api_ip,
                    &public_ip(ctx, "api-endpoint", Some(label)),
                )
                .await
                .map(Some),
            }
        };
        let f2 = async {
            match (&nat_ip, dynamic) {
                (None, true) => put(
                    arm,
                    "PublicIPAddresses.CreateOrUpdate",
                    &p.nat_ip,
                    &public_ip(ctx, "nat", None),
                )
                .await
                .map(Some),
                _ => Ok(None),
            }
        };
        let f3 = async {
            match &cp_nsg {
                Some(_) => Ok(None),
                None => put(
                    arm,
                    "NetworkSecurityGroups.CreateOrUpdate",
                    &p.cp_nsg,
                    &nsg(ctx, "control-plane", control_plane_rules(&cp_source)),
                )
                .await
                .map(Some),
            }
        };
        let f4 = async {
            match &node_nsg {
                Some(_) => Ok(None),
                None => put(
                    arm,
                    "NetworkSecurityGroups.CreateOrUpdate",
                    &p.node_nsg,
                    &nsg(ctx, "worker", worker_rules()),
                )
                .await
                .map(Some),
            }
        };
        let (r1, r2, r3, r4) = tokio::try_join!(f1, f2, f3, f4)?;
        if let Some((r, op)) = r1 {
            api_ip = Some(r);
            ops.push(op);
        }
        if let Some((r, op)) = r2 {
            nat_ip = Some(r);
            ops.push(op);
        }
        if let Some((r, op)) = r3 {
            cp_nsg = Some(r);
            ops.push(op);
        }
        if let Some((r, op)) = r4 {
            node_nsg = Some(r);
            ops.push(op);
        }
    }
    let created_ips = ops.iter().any(|(o, _)| o.starts_with("PublicIP"));
    wave(arm, std::mem::take(&mut ops)).await?;
    // Every operation of the wave succeeded: what its PUTs answered is now provisioned.
    for r in [&mut api_ip, &mut nat_ip].into_iter().flatten() {
        r.properties.set_state("Succeeded");
    }
    for r in [&mut cp_nsg, &mut node_nsg].into_iter().flatten() {
        r.properties.set_state("Succeeded");
    }
    let id_or = |r: &Option<Resource<PublicIpProps>>, path: &str| {
        r.as_ref()
            .map(|r| r.id.clone())
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| path.to_string())
    };
    let api_ip_id = id_or(&api_ip, &p.api_ip);
    let nat_ip_id = id_or(&nat_ip, &p.nat_ip);

    // Wave 2: NAT gateway and load balancer.
    let mut nat = nat;
    let mut lb = lb;
    {
        let f1 = async {
            match (&nat, dynamic) {
                (None, true) => {
                    let body = Resource {
                        location: Some(ctx.spec.cloud.region().to_string()),
                        tags: tags(ctx, "nat"),
                        sku: Some(Sku {
                            name: "Standard".into(),
                        }),
                        properties: NatProps {
                            public_ip_addresses: vec![SubResource::to(&nat_ip_id)],
                            idle_timeout_in_minutes: Some(4),
                            provisioning_state: None,
                        },
                        ..Resource::default()
                    };
                    put(arm, "NatGateways.CreateOrUpdate", &p.nat, &body)
                        .await
                        .map(Some)
                }
                _ => Ok(None),
            }
        };
        let f2 = async {
            match &lb {
                Some(_) => Ok(None),
                None => put(
                    arm,
                    "LoadBalancers.CreateOrUpdate",
                    &p.lb,
                    &load_balancer(ctx, &p.lb, &api_ip_id),
                )
                .await
                .map(Some),
            }
        };
        let (r1, r2) = tokio::try_join!(f1, f2)?;
        if let Some((r, op)) = r1 {
            nat = Some(r);
            ops.push(op);
        }
        if let Some((r, op)) = r2 {
            lb = Some(r);
            ops.push(op);
        }
    }
    wave(arm, std::mem::take(&mut ops)).await?;
    if let Some(r) = &mut nat {
        r.properties.set_state("Succeeded");
    }
    if let Some(r) = &mut lb {
        r.properties.set_state("Succeeded");
    }

    // Wave 3: the network with both subnets (dynamic placement only), created or repaired
    // (a subnet missing, or without its security group or NAT gateway).
    let mut vnet = vnet;
    if dynamic {
        let cp_nsg_id = cp_nsg.as_ref().map_or(p.cp_nsg.clone(), |r| r.id.clone());
        let node_nsg_id = node_nsg
            .as_ref()
            .map_or(p.node_nsg.clone(), |r| r.id.clone());
        let nat_id = nat.as_ref().map_or(p.nat.clone(), |r| r.id.clone());
        let wired = vnet.as_ref().is_some_and(|v| {
            [(&n.cp_subnet, &cp_nsg_id), (&n.node_subnet, &node_nsg_id)]
                .iter()
                .all(|(name, nsg_id)| {
                    v.properties.subnets.iter().any(|s| {
                        &&s.name == name
                            && same_id(&s.properties.network_security_group, nsg_id)
                            && same_id(&s.properties.nat_gateway, &nat_id)
                    })
                })
        });
        if !wired {
            let body = Resource {
                location: Some(ctx.spec.cloud.region().to_string()),
                tags: tags(ctx, "network"),
                properties: VnetProps {
                    address_space: AddressSpace {
                        address_prefixes: vec![VNET_CIDR.into()],
                    },
                    subnets: vec![
                        subnet(&n.cp_subnet, CP_SUBNET_CIDR, &cp_nsg_id, &nat_id),
                        subnet(&n.node_subnet, NODE_SUBNET_CIDR, &node_nsg_id, &nat_id),
                    ],
                    provisioning_state: None,
                },
                ..Resource::default()
            };
            let (mut r, op) = put(arm, "VirtualNetworks.CreateOrUpdate", &p.vnet, &body).await?;
            wave(arm, vec![op]).await?;
            r.properties.set_state("Succeeded");
            vnet = Some(r);
        }
    }

    // The endpoint: the API IP's FQDN (or address), read again only when the create's
    // answer did not carry it yet.
    let has_endpoint = |r: &Option<Resource<PublicIpProps>>| {
        r.as_ref().is_some_and(|r| {
            r.properties
                .dns_settings
                .as_ref()
                .is_some_and(|d| d.fqdn.is_some())
                || r.properties.ip_address.is_some()
        })
    };
    if created_ips && !has_endpoint(&api_ip) {
        api_ip = arm
            .get::<Resource<PublicIpProps>>("PublicIPAddresses.Get", &p.api_ip, NETWORK_API)
            .await?;
    }
    let endpoint = api_ip.as_ref().and_then(|r| {
        r.properties
            .dns_settings
            .as_ref()
            .and_then(|d| d.fqdn.clone())
            .or_else(|| r.properties.ip_address.clone())
            .map(|h| format!("{h}:{API_PORT}"))
    });

    // Report.
    let mut resources = Vec::new();
    let mut waiting = Vec::new();
    let mut note = |kind: &str, id: &str, state: &str| {
        resources.push(CloudResource {
            kind: kind.into(),
            id: id.into(),
        });
        if state != "Succeeded" {
            waiting.push(format!("{kind} {id} is {state}"));
        }
    };
    if let Some(r) = &api_ip {
        note(
            "public-ip",
            &r.id,
            state_of(&r.properties.provisioning_state),
        );
    }
    if let Some(r) = &nat_ip {
        note(
            "public-ip",
            &r.id,
            state_of(&r.properties.provisioning_state),
        );
    }
    for r in [&cp_nsg, &node_nsg].into_iter().flatten() {
        note(
            "network-security-group",
            &r.id,
            state_of(&r.properties.provisioning_state),
        );
    }
    if let Some(r) = &nat {
        note(
            "nat-gateway",
            &r.id,
            state_of(&r.properties.provisioning_state),
        );
    }
    if let Some(r) = &lb {
        note(
            "load-balancer",
            &r.id,
            state_of(&r.properties.provisioning_state),
        );
    }
    let mut outputs = BTreeMap::new();
    if let Some(v) = &vnet {
        if dynamic {
            note(
                "virtual-network",
                &v.id,
                state_of(&v.properties.provisioning_state),
            );
        }
        let (cp, node, _) = subnet_ids(v, &n)?;
        outputs.insert(OUT_CP_SUBNET.to_string(), cp);
        outputs.insert(OUT_NODE_SUBNET.to_string(), node);
    }
    outputs.insert(
        OUT_BACKEND_POOL.to_string(),
        format!("{}/backendAddressPools/control-plane", p.lb),
    );
    if !dynamic {
        outputs.insert(OUT_CP_NSG.to_string(), p.cp_nsg.clone());
        outputs.insert(OUT_NODE_NSG.to_string(), p.node_nsg.clone());
    }
    resources.sort();
    let complete = endpoint.is_some()
        && outputs.contains_key(OUT_CP_SUBNET)
        && lb.is_some()
        && (!dynamic || nat.is_some());
    let ready = complete && waiting.is_empty();
    Ok(InfraStatus {
        ready,
        endpoint,
        resources,
        message: (!ready).then(|| {
            if waiting.is_empty() {
                "waiting for the API server's address".to_string()
            } else {
                waiting.join("; ")
            }
        }),
        outputs,
    })
}

/// One resource of the cluster found for deletion.
#[derive(Debug, Clone)]
struct Found {
    kind: &'static str,
    op: &'static str,
    id: String,
    api: &'static str,
}

fn owned<P>(r: &Resource<P>, cluster_id: &str, prefix: &str) -> bool {
    r.tags.get(&tag_key(TAG_CLUSTER_ID)).map(String::as_str) == Some(cluster_id)
        || r.name.starts_with(&format!("{prefix}-"))
}

/// Everything of `ctx`'s cluster in its resource group, by kind, in deletion waves: VMs,
/// NICs, load balancer and network, NAT gateway and security groups, public IPs. One list
/// call per resource type.
async fn inventory(
    arm: &Arm,
    rg: &str,
    cluster: ClusterId,
    static_network: bool,
) -> Result<Vec<Vec<Found>>, AzureError> {
    let id = cluster.to_string();
    let prefix = prefix_of(&cluster);
    let list_path = |provider: &str, kind: &str| arm.resource_path(rg, provider, kind);
    macro_rules! listed {
        ($t:ty, $provider:expr, $path:expr, $op:expr, $api:expr, $kind:expr, $dop:expr) => {
            async {
                let all: Vec<Resource<$t>> =
                    arm.list($op, &list_path($provider, $path), $api).await?;
                Ok::<Vec<Found>, AzureError>(
                    all.into_iter()
                        .filter(|r| owned(r, &id, &prefix))
                        .map(|r| Found {
                            kind: $kind,
                            op: $dop,
                            id: r.id,
                            api: $api,
                        })
                        .collect(),
                )
            }
        };
    }
    let listed = tokio::try_join!(
        listed!(
            VmProps,
            "Microsoft.Compute",
            "virtualMachines",
            "VirtualMachines.List",
            COMPUTE_API,
            "vm",
            "VirtualMachines.Delete"
        ),
        listed!(
            NicProps,
            NET,
            "networkInterfaces",
            "NetworkInterfaces.List",
            NETWORK_API,
            "network-interface",
            "NetworkInterfaces.Delete"
        ),
        listed!(
            LbProps,
            NET,
            "loadBalancers",
            "LoadBalancers.List",
            NETWORK_API,
            "load-balancer",
            "LoadBalancers.Delete"
        ),
        async {
            // The user's network (static placement) is never the cluster's: neither tagged
            // nor named with its prefix.
            if static_network {
                Ok(Vec::new())
            } else {
                listed!(
                    VnetProps,
                    NET,
                    "virtualNetworks",
                    "VirtualNetworks.List",
                    NETWORK_API,
                    "virtual-network",
                    "VirtualNetworks.Delete"
                )
                .await
            }
        },
        listed!(
            NatProps,
            NET,
            "natGateways",
            "NatGateways.List",
            NETWORK_API,
            "nat-gateway",
            "NatGateways.Delete"
        ),
        listed!(
            NsgProps,
            NET,
            "networkSecurityGroups",
            "NetworkSecurityGroups.List",
            NETWORK_API,
            "network-security-group",
            "NetworkSecurityGroups.Delete"
        ),
        listed!(
            PublicIpProps,
            NET,
            "publicIPAddresses",
            "PublicIPAddresses.List",
            NETWORK_API,
            "public-ip",
            "PublicIPAddresses.Delete"
        ),
    );
    // A resource group deleted out of band holds nothing of the cluster any more.
    let (vms, nics, lbs, vnets, nats, nsgs, ips) = match listed {
        Err(e) if e.code() == Some("ResourceGroupNotFound") => return Ok(Vec::new()),
        other => other?,
    };
    // A NIC made with a VM goes with it: NICs after VMs (one already gone answers 404).
    let mut w2 = lbs;
    w2.extend(vnets);
    let mut w3 = nats;
    w3.extend(nsgs);
    Ok(vec![vms, nics, w2, w3, ips])
}

/// Everything of cluster `cluster` in resource group `rg` (tagged with its id or named with
/// its prefix): VMs, NICs, load balancers, networks, NAT gateways, security groups, public
/// IPs. Empty after a delete: the leak check of examples and tests.
pub async fn remaining(
    arm: &Arm,
    rg: &str,
    cluster: ClusterId,
) -> Result<Vec<CloudResource>, AzureError> {
    Ok(inventory(arm, rg, cluster, false)
        .await?
        .into_iter()
        .flatten()
        .map(|f| CloudResource {
            kind: f.kind.into(),
            id: f.id,
        })
        .collect())
}

/// Deletes `ctx`'s infrastructure (and anything else of the cluster left in its resource
/// group) in reverse order, following each wave's operations, then lists the group again:
/// `done` only when nothing of the cluster is listed.
pub async fn delete(arm: &Arm, ctx: &ClusterContext) -> Result<DeleteStatus, AzureError> {
    let n = Names::of(ctx)?;
    let waves = inventory(arm, &n.resource_group, ctx.cluster_id, n.static_network).await?;
    let all: Vec<CloudResource> = waves
        .iter()
        .flatten()
        .map(|f| CloudResource {
            kind: f.kind.into(),
            id: f.id.clone(),
        })
        .collect();
    if all.is_empty() {
        return Ok(DeleteStatus {
            done: true,
            remaining: Vec::new(),
            message: None,
        });
    }
    for (i, wave) in waves.iter().enumerate() {
        if wave.is_empty() {
            continue;
        }
        let result = try_join_all(wave.iter().map(|f| async move {
            if let Some(p) = arm.delete(f.op, &f.id, f.api).await? {
                arm.wait(f.op, &p).await?;
            }
            Ok::<(), AzureError>(())
        }))
        .await;
        if let Err(e) = result {
            if e.class() == Class::Retryable {
                // Something still holds a resource (a NIC in a subnet, an operation in
                // progress): the engine calls again.
                let remaining = waves[i..]
                    .iter()
                    .flatten()
                    .map(|f| CloudResource {
                        kind: f.kind.into(),
                        id: f.id.clone(),
                    })
                    .collect();
                return Ok(DeleteStatus {
                    done: false,
                    remaining,
                    message: Some(e.to_string()),
                });
            }
            return Err(e);
        }
    }
    // Verified, not assumed: the group's listing shows nothing of the cluster any more.
    let left: Vec<CloudResource> =
        inventory(arm, &n.resource_group, ctx.cluster_id, n.static_network)
            .await?
            .into_iter()
            .flatten()
            .map(|f| CloudResource {
                kind: f.kind.into(),
                id: f.id,
            })
            .collect();
    Ok(DeleteStatus {
        done: left.is_empty(),
        message: (!left.is_empty())
            .then(|| format!("{} resource(s) of the cluster still listed", left.len())),
        remaining: left,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_is_reachable_from_the_control_plane_only() {
        let rules = control_plane_rules(CP_SUBNET_CIDR);
        let allow = rules
            .iter()
            .find(|r| r.name == "allow-etcd-control-plane")
            .unwrap();
        let deny = rules.iter().find(|r| r.name == "deny-etcd").unwrap();
        assert_eq!(
            allow.properties.source_address_prefix.as_deref(),
            Some(CP_SUBNET_CIDR)
        );
        assert!(allow.properties.priority < deny.properties.priority);
        let nodes = rules.iter().find(|r| r.name == "allow-nodes").unwrap();
        assert!(deny.properties.priority < nodes.properties.priority);
        let mut prios: Vec<i32> = rules.iter().map(|r| r.properties.priority).collect();
        prios.dedup();
        assert_eq!(prios.len(), rules.len(), "priorities are unique");
        assert!(worker_rules()
            .iter()
            .all(|r| r.properties.destination_port_range.as_deref() != Some("6443")));
    }
}

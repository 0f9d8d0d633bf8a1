//! A cluster's shared infrastructure: a VPC network (custom subnet mode) with one subnetwork
//! in the region that every zone shares, a Cloud Router with Cloud NAT for outbound traffic,
//! firewall rules, and the API server behind a global TCP proxy load balancer (global
//! address, TCP health check, backend service over one unmanaged instance group of the
//! control-plane nodes per zone, target TCP proxy, global forwarding rule on port 443 to the
//! nodes' 6443).
//!
//! Created in waves, each wave's operations waited for before the next references them:
//! the network; then the subnetwork, router + NAT, firewall rules, health check, address and
//! instance groups together; the backend service; the proxy; the forwarding rule. Every
//! insert is sent without a prior read: a resource that exists already answers
//! `alreadyExists` (names are derived from the cluster id), so a create costs one insert and
//! one wait per resource, and a restarted engine one refused insert per resource, once. What
//! exists is remembered ([`crate::client::Known`]), so a later call sends nothing.
//!
//! **Existing network** (`cloud.gcp.network`): read, never written, except for the cluster's
//! own firewall rules in it; the nodes go in its subnetwork of the region; no router or NAT
//! (the network's owner provides outbound traffic).
//!
//! Ownership: resources that take labels (the address, the forwarding rule) carry the
//! cluster's labels; every resource's `description` holds the cluster's tags as a JSON
//! object (networks, rules, routers, checks, services and groups take no labels); every name
//! starts with the cluster's prefix.
//!
//! Delete runs the waves backwards (deleting what is gone is no error), then lists every
//! resource type again by the cluster's name prefix: done only when nothing is listed.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::future::try_join_all;
use google_cloud_compute_v1::model;
use serde_json::json;
use spectro_core::budget::CallClass;
use spectro_core::model::{NodePool, PoolRole};
use spectro_core::provider::{
    CloudResource, ClusterContext, DeleteStatus, InfraStatus, TAG_CLUSTER_ID,
};

use crate::client::{body, Gce};
use crate::error::{Class, GcpError};
use crate::names::{cluster_label, labels, placement, Names};

/// Output: the network the nodes are in (`projects/P/global/networks/N`).
pub const OUT_NETWORK: &str = "network";
/// Output: the subnetwork the nodes are in (`projects/P/regions/R/subnetworks/S`).
pub const OUT_SUBNET: &str = "subnetwork";
/// Output: the network tag of every node.
pub const OUT_NODE_TAG: &str = "nodeTag";
/// Output: the network tag of control-plane nodes.
pub const OUT_CP_TAG: &str = "controlPlaneTag";
/// The API server's port on the nodes.
pub const API_PORT: u16 = 6443;
/// The load balancer's port (a global TCP proxy listens on well-known ports).
pub const LB_PORT: u16 = 443;
/// The named port of the control-plane instance groups.
pub const PORT_NAME: &str = "apiserver";
/// The subnetwork's range.
pub const SUBNET_CIDR: &str = "10.0.0.0/16";
/// Google's load-balancer health-check and proxy ranges.
pub const GOOGLE_LB_RANGES: [&str; 2] = ["35.191.0.0/16", "130.211.0.0/22"];

/// The zone of fault domain `fd` of `pool`: GCP pools name their zones (regions have no
/// common zone name: us-east1 has no zone `a`).
pub fn zone_of(pool: &NodePool, fd: &str) -> Result<String, GcpError> {
    if fd.is_empty() {
        return Err(GcpError::invalid(
            format!("nodePools[{}].availabilityZones", pool.name),
            "is required on GCP: name the zones of the region the pool spreads over (e.g. us-west1-a)",
        ));
    }
    Ok(fd.to_string())
}

/// The zones of the control plane.
pub fn cp_zones(ctx: &ClusterContext) -> Result<BTreeSet<String>, GcpError> {
    let mut out = BTreeSet::new();
    for p in ctx
        .spec
        .node_pools
        .iter()
        .filter(|p| p.role == PoolRole::ControlPlane)
    {
        for fd in p.fault_domains() {
            out.insert(zone_of(p, &fd)?);
        }
    }
    Ok(out)
}

/// The `description` of a cluster's resources: its tags as a JSON object.
#[must_use]
pub fn description(ctx: &ClusterContext) -> String {
    serde_json::to_string(&ctx.ownership_tags()).unwrap_or_default()
}

/// The tags a `description` holds (for the cluster's resources), if it is ours.
#[must_use]
pub fn tags_of_description(d: &str) -> Option<BTreeMap<String, String>> {
    serde_json::from_str::<BTreeMap<String, String>>(d)
        .ok()
        .filter(|t| t.contains_key(TAG_CLUSTER_ID))
}

struct Plan<'a> {
    gce: &'a Gce,
    n: Names,
    project: String,
    region: String,
    desc: String,
    own_network: bool,
    network: String,
}

impl Plan<'_> {
    fn global(&self, kind: &str, name: &str) -> String {
        format!("projects/{}/global/{kind}/{name}", self.project)
    }
    fn regional(&self, kind: &str, name: &str) -> String {
        format!(
            "projects/{}/regions/{}/{kind}/{name}",
            self.project, self.region
        )
    }
    fn zonal(&self, zone: &str, kind: &str, name: &str) -> String {
        format!("projects/{}/zones/{zone}/{kind}/{name}", self.project)
    }

    /// Inserts `key` (a resource path) unless known to exist; waits for it.
    /// True when this call made it.
    async fn ensure<F, Fut>(&self, key: &str, op: &str, make: F) -> Result<bool, GcpError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = google_cloud_compute_v1::Result<model::Operation>>,
    {
        let known = self.gce.known();
        if known.exists(key) {
            return Ok(false);
        }
        let made = self.gce.insert(op, key, make).await?;
        known.set(key, true);
        Ok(made)
    }
}

fn plan<'a>(gce: &'a Gce, ctx: &ClusterContext) -> Result<Plan<'a>, GcpError> {
    let g = placement(ctx)?;
    let n = Names::of(ctx);
    let project = gce.project.clone();
    let own_network = g.network.is_none();
    let net_name = g.network.clone().unwrap_or_else(|| n.network());
    let network = if net_name.starts_with("projects/") {
        if !net_name.starts_with(&format!("projects/{project}/global/networks/")) {
            return Err(GcpError::invalid(
                "cloud.gcp.network",
                format!(
                    "`{net_name}` is not a network of project {project}: shared VPC networks of another project are not supported (the cluster's firewall rules live in the network's project)"
                ),
            ));
        }
        net_name
    } else {
        format!("projects/{project}/global/networks/{net_name}")
    };
    Ok(Plan {
        gce,
        n,
        project,
        region: g.region.clone(),
        desc: description(ctx),
        own_network,
        network,
    })
}

/// The user's network and its subnetwork in the region (read only).
async fn user_subnet(p: &Plan<'_>) -> Result<String, GcpError> {
    let gce = p.gce;
    let net_name = p.network.rsplit('/').next().unwrap_or_default().to_string();
    let net_project = p
        .network
        .split('/')
        .nth(1)
        .unwrap_or(&p.project)
        .to_string();
    let found = gce
        .call("Networks.Get", CallClass::Read, || {
            gce.c
                .networks
                .get()
                .set_project(&net_project)
                .set_network(&net_name)
                .send()
        })
        .await;
    let net = match found {
        Ok(n) => n,
        Err(e) if e.class() == Class::NotFound => {
            return Err(GcpError::invalid(
                "cloud.gcp.network",
                format!(
                    "network `{net_name}` does not exist in project {net_project} (or the account cannot read it)"
                ),
            ))
        }
        Err(e) => return Err(e),
    };
    let in_region = format!("/regions/{}/subnetworks/", p.region);
    net.subnetworks
        .iter()
        .find(|s| s.contains(&in_region))
        .map(|s| {
            let i = s.find("projects/").unwrap_or(0);
            s[i..].to_string()
        })
        .ok_or_else(|| {
            GcpError::invalid(
                "cloud.gcp.network",
                format!(
                    "network `{net_name}` has no subnetwork in region {}: add one (the nodes of every zone share it)",
                    p.region
                ),
            )
        })
}

/// Creates whatever is missing and reports the infrastructure.
pub async fn ensure(gce: &Gce, ctx: &ClusterContext) -> Result<InfraStatus, GcpError> {
    let p = &plan(gce, ctx)?;
    let n = &p.n;
    let zones = cp_zones(ctx)?;
    if zones.is_empty() {
        return Err(GcpError::invalid(
            "nodePools",
            "a GCP cluster needs a control-plane pool",
        ));
    }
    let project = p.project.as_str();
    let region = p.region.as_str();
    let lbl: std::collections::HashMap<String, String> = labels(ctx, "api").into_iter().collect();

    // Wave 1: the network.
    let subnet = if p.own_network {
        let net = body::<model::Network>(
            "Networks.Insert",
            json!({
                "name": n.network(),
                "description": p.desc,
                "autoCreateSubnetworks": false,
                "routingConfig": {"routingMode": "REGIONAL"},
            }),
        )?;
        p.ensure(&p.network, "Networks.Insert", || {
            gce.c
                .networks
                .insert()
                .set_project(project)
                .set_body(net.clone())
                .set_request_id(gce.request_id(&p.network))
                .send()
        })
        .await?;
        p.regional("subnetworks", &n.subnet())
    } else {
        user_subnet(p).await?
    };

    // Wave 2: subnetwork, router + NAT, firewall rules, health check, address, groups.
    let mut wave2: Vec<futures_util::future::BoxFuture<'_, Result<bool, GcpError>>> = Vec::new();
    if p.own_network {
        let sub = body::<model::Subnetwork>(
            "Subnetworks.Insert",
            json!({
                "name": n.subnet(),
                "description": p.desc,
                "network": p.network,
                "ipCidrRange": SUBNET_CIDR,
                "privateIpGoogleAccess": true,
            }),
        )?;
        let key = subnet.clone();
        wave2.push(Box::pin(async move {
            p.ensure(&key, "Subnetworks.Insert", || {
                gce.c
                    .subnetworks
                    .insert()
                    .set_project(project)
                    .set_region(region)
                    .set_body(sub.clone())
                    .set_request_id(gce.request_id(&key))
                    .send()
            })
            .await
        }));
        let router = body::<model::Router>(
            "Routers.Insert",
            json!({
                "name": n.router(),
                "description": p.desc,
                "network": p.network,
                "nats": [{
                    "name": n.nat(),
                    "natIpAllocateOption": "AUTO_ONLY",
                    "sourceSubnetworkIpRangesToNat": "ALL_SUBNETWORKS_ALL_IP_RANGES",
                }],
            }),
        )?;
        let key = p.regional("routers", &n.router());
        wave2.push(Box::pin(async move {
            p.ensure(&key, "Routers.Insert", || {
                gce.c
                    .routers
                    .insert()
                    .set_project(project)
                    .set_region(region)
                    .set_body(router.clone())
                    .set_request_id(gce.request_id(&key))
                    .send()
            })
            .await
        }));
    }
    for fw in firewall_rules(p)? {
        let key = p.global("firewalls", fw.name.as_deref().unwrap_or_default());
        wave2.push(Box::pin(async move {
            p.ensure(&key, "Firewalls.Insert", || {
                gce.c
                    .firewalls
                    .insert()
                    .set_project(project)
                    .set_body(fw.clone())
                    .set_request_id(gce.request_id(&key))
                    .send()
            })
            .await
        }));
    }
    let hc = body::<model::HealthCheck>(
        "HealthChecks.Insert",
        json!({
            "name": n.health_check(),
            "description": p.desc,
            "type": "TCP",
            "tcpHealthCheck": {"port": API_PORT},
            "checkIntervalSec": 10,
            "timeoutSec": 5,
            "healthyThreshold": 2,
            "unhealthyThreshold": 3,
        }),
    )?;
    let hc_key = p.global("healthChecks", &n.health_check());
    let key = hc_key.clone();
    wave2.push(Box::pin(async move {
        p.ensure(&key, "HealthChecks.Insert", || {
            gce.c
                .health_checks
                .insert()
                .set_project(project)
                .set_body(hc.clone())
                .set_request_id(gce.request_id(&key))
                .send()
        })
        .await
    }));
    let addr = body::<model::Address>(
        "GlobalAddresses.Insert",
        json!({
            "name": n.address(),
            "description": p.desc,
            "labels": lbl,
            "addressType": "EXTERNAL",
            "ipVersion": "IPV4",
        }),
    )?;
    let addr_key = p.global("addresses", &n.address());
    let key = addr_key.clone();
    wave2.push(Box::pin(async move {
        p.ensure(&key, "GlobalAddresses.Insert", || {
            gce.c
                .addresses
                .insert()
                .set_project(project)
                .set_body(addr.clone())
                .set_request_id(gce.request_id(&key))
                .send()
        })
        .await
    }));
    let mut groups = Vec::new();
    for zone in &zones {
        let ig = body::<model::InstanceGroup>(
            "InstanceGroups.Insert",
            json!({
                "name": n.instance_group(zone),
                "description": p.desc,
                "network": p.network,
                "namedPorts": [{"name": PORT_NAME, "port": API_PORT}],
            }),
        )?;
        let key = p.zonal(zone, "instanceGroups", &n.instance_group(zone));
        groups.push(key.clone());
        let zone = zone.clone();
        wave2.push(Box::pin(async move {
            let made = p
                .ensure(&key, "InstanceGroups.Insert", || {
                    gce.c
                        .instance_groups
                        .insert()
                        .set_project(project)
                        .set_zone(&zone)
                        .set_body(ig.clone())
                        .set_request_id(gce.request_id(&key))
                        .send()
                })
                .await?;
            if made {
                // A group this call made has no members: nothing to list before adding.
                gce.known().add_members(&key, Vec::new(), true);
            }
            Ok(made)
        }));
    }
    try_join_all(wave2).await?;

    // Wave 3: the backend service over the groups (its backends follow the control plane's
    // zones: a changed set is patched).
    ensure_backend_service(p, &hc_key, &groups).await?;

    // Wave 4: the proxy; wave 5: the forwarding rule.
    let bes_key = p.global("backendServices", &n.backend_service());
    let proxy = body::<model::TargetTcpProxy>(
        "TargetTcpProxies.Insert",
        json!({
            "name": n.proxy(),
            "description": p.desc,
            "service": bes_key,
            "proxyHeader": "NONE",
        }),
    )?;
    let proxy_key = p.global("targetTcpProxies", &n.proxy());
    p.ensure(&proxy_key, "TargetTcpProxies.Insert", || {
        gce.c
            .proxies
            .insert()
            .set_project(project)
            .set_body(proxy.clone())
            .set_request_id(gce.request_id(&proxy_key))
            .send()
    })
    .await?;
    let fr = body::<model::ForwardingRule>(
        "GlobalForwardingRules.Insert",
        json!({
            "name": n.forwarding_rule(),
            "description": p.desc,
            "labels": lbl,
            "IPAddress": addr_key,
            "IPProtocol": "TCP",
            "portRange": LB_PORT.to_string(),
            "target": proxy_key,
            "loadBalancingScheme": "EXTERNAL",
        }),
    )?;
    let fr_key = p.global("forwardingRules", &n.forwarding_rule());
    p.ensure(&fr_key, "GlobalForwardingRules.Insert", || {
        gce.c
            .forwarding_rules
            .insert()
            .set_project(project)
            .set_body(fr.clone())
            .set_request_id(gce.request_id(&fr_key))
            .send()
    })
    .await?;

    // The API endpoint: the address's IP (read once).
    let ip = match gce.known().address(&addr_key) {
        Some(ip) => ip,
        None => {
            let name = n.address();
            let a = gce
                .call("GlobalAddresses.Get", CallClass::Read, || {
                    gce.c
                        .addresses
                        .get()
                        .set_project(project)
                        .set_address(&name)
                        .send()
                })
                .await?;
            let ip = a.address.unwrap_or_default();
            if !ip.is_empty() {
                gce.known().set_address(&addr_key, &ip);
            }
            ip
        }
    };
    let mut resources = vec![CloudResource {
        kind: "network".into(),
        id: p.network.clone(),
    }];
    if p.own_network {
        resources.push(CloudResource {
            kind: "subnetwork".into(),
            id: subnet.clone(),
        });
        resources.push(CloudResource {
            kind: "router".into(),
            id: p.regional("routers", &n.router()),
        });
    }
    for fw in ["api", "nodes", "etcd"] {
        resources.push(CloudResource {
            kind: "firewall".into(),
            id: p.global("firewalls", &n.firewall(fw)),
        });
    }
    for (kind, id) in [
        ("health-check", hc_key),
        ("address", addr_key),
        ("backend-service", bes_key),
        ("target-tcp-proxy", proxy_key),
        ("forwarding-rule", fr_key),
    ] {
        resources.push(CloudResource {
            kind: kind.into(),
            id,
        });
    }
    for g in &groups {
        resources.push(CloudResource {
            kind: "instance-group".into(),
            id: g.clone(),
        });
    }
    let outputs = BTreeMap::from([
        (OUT_NETWORK.to_string(), p.network.clone()),
        (OUT_SUBNET.to_string(), subnet),
        (OUT_NODE_TAG.to_string(), n.node_tag()),
        (OUT_CP_TAG.to_string(), n.cp_tag()),
    ]);
    let ready = !ip.is_empty();
    Ok(InfraStatus {
        ready,
        endpoint: ready.then(|| format!("{ip}:{LB_PORT}")),
        resources,
        message: (!ready).then(|| "waiting for the API server's address".to_string()),
        outputs,
    })
}

/// The cluster's firewall rules: the API server from Google's proxy and health-check ranges
/// (clients anywhere reach it through the global TCP proxy, whose connections to the nodes
/// come from those ranges; nothing else from outside); node-to-node traffic (etcd's ports
/// excluded); etcd among control-plane nodes only.
fn firewall_rules(p: &Plan<'_>) -> Result<Vec<model::Firewall>, GcpError> {
    let n = &p.n;
    let api = API_PORT.to_string();
    let rule = |what: &str, v: serde_json::Value| {
        let mut v = v;
        v["name"] = json!(n.firewall(what));
        v["description"] = json!(p.desc);
        v["network"] = json!(p.network);
        v["direction"] = json!("INGRESS");
        v["priority"] = json!(1000);
        body::<model::Firewall>("Firewalls.Insert", v)
    };
    Ok(vec![
        rule(
            "api",
            json!({
                "sourceRanges": GOOGLE_LB_RANGES,
                "targetTags": [n.cp_tag()],
                "allowed": [{"IPProtocol": "tcp", "ports": [api]}],
            }),
        )?,
        rule(
            "nodes",
            json!({
                "sourceTags": [n.node_tag()],
                "targetTags": [n.node_tag()],
                "allowed": [
                    {"IPProtocol": "tcp", "ports": ["1-2378", "2381-65535"]},
                    {"IPProtocol": "udp"},
                    {"IPProtocol": "icmp"},
                    {"IPProtocol": "ipip"},
                ],
            }),
        )?,
        rule(
            "etcd",
            json!({
                "sourceTags": [n.cp_tag()],
                "targetTags": [n.cp_tag()],
                "allowed": [{"IPProtocol": "tcp", "ports": ["2379-2380"]}],
            }),
        )?,
    ])
}

async fn ensure_backend_service(
    p: &Plan<'_>,
    hc_key: &str,
    groups: &[String],
) -> Result<(), GcpError> {
    let gce = p.gce;
    let name = p.n.backend_service();
    let project = p.project.as_str();
    // Known with exactly these groups: nothing to do.
    let key = format!(
        "{}#{}",
        p.global("backendServices", &name),
        groups.join(",")
    );
    if gce.known().exists(&key) {
        return Ok(());
    }
    let backends: Vec<serde_json::Value> = groups
        .iter()
        .map(|g| json!({"group": g, "balancingMode": "UTILIZATION", "maxUtilization": 0.8}))
        .collect();
    let bes = body::<model::BackendService>(
        "BackendServices.Insert",
        json!({
            "name": name,
            "description": p.desc,
            "protocol": "TCP",
            "portName": PORT_NAME,
            "timeoutSec": 3600,
            "loadBalancingScheme": "EXTERNAL",
            "healthChecks": [hc_key],
            "backends": backends,
        }),
    )?;
    let found = gce
        .call("BackendServices.Get", CallClass::Read, || {
            gce.c
                .backend_services
                .get()
                .set_project(project)
                .set_backend_service(&name)
                .send()
        })
        .await;
    match found {
        Err(e) if e.class() == Class::NotFound => {
            gce.insert("BackendServices.Insert", &key, || {
                gce.c
                    .backend_services
                    .insert()
                    .set_project(project)
                    .set_body(bes.clone())
                    .set_request_id(gce.request_id(&key))
                    .send()
            })
            .await?;
        }
        Err(e) => return Err(e),
        Ok(have) => {
            let have_groups: BTreeSet<String> = have
                .backends
                .iter()
                .filter_map(|b| b.group.as_deref())
                .map(|g| g[g.find("projects/").unwrap_or(0)..].to_string())
                .collect();
            let want: BTreeSet<String> = groups.iter().cloned().collect();
            if have_groups != want {
                let patch = body::<model::BackendService>(
                    "BackendServices.Patch",
                    json!({"backends": backends}),
                )?;
                let patch_key = format!(
                    "{key}#from#{}",
                    have_groups.iter().cloned().collect::<Vec<_>>().join(",")
                );
                gce.insert("BackendServices.Patch", &patch_key, || {
                    gce.c
                        .backend_services
                        .patch()
                        .set_project(project)
                        .set_backend_service(&name)
                        .set_body(patch.clone())
                        .set_request_id(gce.request_id(&patch_key))
                        .send()
                })
                .await?;
            }
        }
    }
    gce.known().set(&key, true);
    Ok(())
}

/// Deletes `what` (a resource path) and waits; a resource already gone is no error.
async fn delete_one(gce: &Gce, path: &str) -> Result<bool, GcpError> {
    let parts: Vec<&str> = path.split('/').collect();
    let project = gce.project.as_str();
    gce.known().set(path, false);
    // One delete per resource type: `client.delete().set_project(..)[.set_<scope>(..)]
    // .set_<type>(name)`, written once.
    macro_rules! delete {
        ($op:literal, $client:ident, $set:ident, $name:expr $(, $scope_set:ident = $scope:expr)?) => {
            gce.write($op, || {
                gce.c
                    .$client
                    .delete()
                    .set_project(project)
                    $(.$scope_set($scope))?
                    .$set($name)
                    .send()
            })
            .await
        };
    }
    match parts.as_slice() {
        [_, _, "global", kind, name] => match *kind {
            "forwardingRules" => delete!(
                "GlobalForwardingRules.Delete",
                forwarding_rules,
                set_forwarding_rule,
                *name
            ),
            "targetTcpProxies" => delete!(
                "TargetTcpProxies.Delete",
                proxies,
                set_target_tcp_proxy,
                *name
            ),
            "backendServices" => delete!(
                "BackendServices.Delete",
                backend_services,
                set_backend_service,
                *name
            ),
            "healthChecks" => delete!(
                "HealthChecks.Delete",
                health_checks,
                set_health_check,
                *name
            ),
            "addresses" => delete!("GlobalAddresses.Delete", addresses, set_address, *name),
            "firewalls" => delete!("Firewalls.Delete", firewalls, set_firewall, *name),
            "networks" => delete!("Networks.Delete", networks, set_network, *name),
            _ => Ok(false),
        },
        [_, _, "regions", region, kind, name] => match *kind {
            "routers" => delete!(
                "Routers.Delete",
                routers,
                set_router,
                *name,
                set_region = *region
            ),
            "subnetworks" => delete!(
                "Subnetworks.Delete",
                subnetworks,
                set_subnetwork,
                *name,
                set_region = *region
            ),
            _ => Ok(false),
        },
        [_, _, "zones", zone, "instanceGroups", name] => {
            delete!(
                "InstanceGroups.Delete",
                instance_groups,
                set_instance_group,
                *name,
                set_zone = *zone
            )
        }
        _ => Ok(false),
    }
}

/// The delete waves of what is left (reverse dependency order).
fn waves(left: &[CloudResource]) -> Vec<Vec<String>> {
    let order: [&[&str]; 6] = [
        &["forwarding-rule"],
        &["target-tcp-proxy"],
        &["backend-service"],
        &[
            "health-check",
            "address",
            "instance-group",
            "firewall",
            "router",
        ],
        &["subnetwork"],
        &["network"],
    ];
    order
        .iter()
        .map(|kinds| {
            left.iter()
                .filter(|r| kinds.contains(&r.kind.as_str()))
                .map(|r| r.id.clone())
                .collect::<Vec<_>>()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Deletes the cluster's infrastructure (its machines are gone first), then lists again.
pub async fn delete(gce: &Gce, ctx: &ClusterContext) -> Result<DeleteStatus, GcpError> {
    let p = plan(gce, ctx)?;
    let left = remaining(gce, ctx).await?;
    if left.iter().any(|r| r.kind == "instance") {
        return Ok(DeleteStatus {
            done: false,
            message: Some("waiting for the cluster's instances to be deleted".into()),
            remaining: left,
        });
    }
    for wave in waves(&left) {
        try_join_all(wave.iter().map(|path| delete_one(gce, path))).await?;
    }
    let left = remaining(gce, ctx).await?;
    if left.is_empty() {
        gce.known().forget(&format!("projects/{}/", p.project));
        gce.known().forget(&p.n.prefix);
    }
    Ok(DeleteStatus {
        done: left.is_empty(),
        message: (!left.is_empty()).then(|| format!("{} resource(s) still listed", left.len())),
        remaining: left,
    })
}

/// Everything of the cluster that is still listed: one list per resource type, by the
/// cluster's name prefix (instances by its label).
pub async fn remaining(gce: &Gce, ctx: &ClusterContext) -> Result<Vec<CloudResource>, GcpError> {
    let p = plan(gce, ctx)?;
    let project = p.project.as_str();
    let region = p.region.as_str();
    let filter = format!("name eq \"{}-.*\"", p.n.prefix);
    let f = filter.as_str();
    let mut out: Vec<CloudResource> = Vec::new();
    macro_rules! global_list {
        ($client:ident, $op:literal, $kind:literal, $path:literal) => {{
            let mut token = String::new();
            loop {
                let page = gce
                    .call($op, CallClass::Read, || {
                        gce.c
                            .$client
                            .list()
                            .set_project(project)
                            .set_filter(f)
                            .set_page_token(&token)
                            .send()
                    })
                    .await?;
                for item in &page.items {
                    if let Some(name) = item.name.as_deref() {
                        out.push(CloudResource {
                            kind: $kind.into(),
                            id: p.global($path, name),
                        });
                    }
                }
                match page.next_page_token {
                    Some(t) if !t.is_empty() => token = t,
                    _ => break,
                }
            }
        }};
    }
    macro_rules! regional_list {
        ($client:ident, $op:literal, $kind:literal, $path:literal) => {{
            let mut token = String::new();
            loop {
                let page = gce
                    .call($op, CallClass::Read, || {
                        gce.c
                            .$client
                            .list()
                            .set_project(project)
                            .set_region(region)
                            .set_filter(f)
                            .set_page_token(&token)
                            .send()
                    })
                    .await?;
                for item in &page.items {
                    if let Some(name) = item.name.as_deref() {
                        out.push(CloudResource {
                            kind: $kind.into(),
                            id: p.regional($path, name),
                        });
                    }
                }
                match page.next_page_token {
                    Some(t) if !t.is_empty() => token = t,
                    _ => break,
                }
            }
        }};
    }
    global_list!(
        forwarding_rules,
        "GlobalForwardingRules.List",
        "forwarding-rule",
        "forwardingRules"
    );
    global_list!(
        proxies,
        "TargetTcpProxies.List",
        "target-tcp-proxy",
        "targetTcpProxies"
    );
    global_list!(
        backend_services,
        "BackendServices.List",
        "backend-service",
        "backendServices"
    );
    global_list!(
        health_checks,
        "HealthChecks.List",
        "health-check",
        "healthChecks"
    );
    global_list!(addresses, "GlobalAddresses.List", "address", "addresses");
    global_list!(firewalls, "Firewalls.List", "firewall", "firewalls");
    if p.own_network {
        regional_list!(routers, "Routers.List", "router", "routers");
        regional_list!(subnetworks, "Subnetworks.List", "subnetwork", "subnetworks");
        global_list!(networks, "Networks.List", "network", "networks");
    }
    // Instance groups of every zone (zones the control plane left included).
    let mut token = String::new();
    loop {
        let page = gce
            .call("InstanceGroups.AggregatedList", CallClass::Read, || {
                gce.c
                    .instance_groups
                    .aggregated_list()
                    .set_project(project)
                    .set_filter(f)
                    .set_page_token(&token)
                    .send()
            })
            .await?;
        for scoped in page.items.values() {
            for g in &scoped.instance_groups {
                let zone = g.zone.as_deref().unwrap_or_default();
                let zone = zone.rsplit('/').next().unwrap_or_default();
                if let Some(name) = g.name.as_deref() {
                    out.push(CloudResource {
                        kind: "instance-group".into(),
                        id: p.zonal(zone, "instanceGroups", name),
                    });
                }
            }
        }
        match page.next_page_token {
            Some(t) if !t.is_empty() => token = t,
            _ => break,
        }
    }
    // Instances, by the cluster's label.
    let label = format!("labels.{} = \"{}\"", cluster_label(), ctx.cluster_id);
    for (_, inst) in crate::machines::aggregated(gce, &label).await? {
        if let Some(name) = inst.name.as_deref() {
            let zone = inst.zone.as_deref().unwrap_or_default();
            let zone = zone.rsplit('/').next().unwrap_or_default();
            out.push(CloudResource {
                kind: "instance".into(),
                id: p.zonal(zone, "instances", name),
            });
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

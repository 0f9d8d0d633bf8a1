//! Machines: Compute Engine instances without external addresses, in the cluster's
//! subnetwork, created per pool × zone with one `instances.bulkInsert` per batch (all or
//! nothing: `minCount` = `count`), cloud-init in the `user-data` metadata item, labelled
//! with the cluster, pool, role, shape and the batch's token, their boot disk deleted with
//! them. Control-plane instances are added to their zone's instance group of the API load
//! balancer right after their creation; a member missing after a crash is added by the next
//! listing.
//!
//! Idempotency: a batch first lists its zone for the batch's token (what an earlier attempt
//! made), then sends one `bulkInsert` for the missing names with a `requestId` derived from
//! the token (Compute Engine answers a repeated request id with the first request's
//! operation instead of creating again). A batch whose operation failed is sent with a new
//! request id on its next attempt.
//!
//! Observation: one paginated `instances.aggregatedList` filtered by the cluster-id label
//! serves every cluster of the project ([`list_project`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use futures_util::future::try_join_all;
use google_cloud_compute_v1::model::{self, Instance};
use serde_json::json;
use spectro_core::budget::CallClass;
use spectro_core::model::PoolRole;
use spectro_core::provider::{
    ClusterContext, ClusterId, InfraStatus, Machine, MachineBatch, MachineState, TAG_POOL,
    TAG_SHAPE, TAG_TOKEN,
};

use crate::client::{body, Gce};
use crate::error::{Class, GcpError};
use crate::names::{cluster_label, label_key, label_value, labels, placement, Names};
use crate::network::{zone_of, OUT_CP_TAG, OUT_NETWORK, OUT_NODE_TAG, OUT_SUBNET};

/// The largest user data spectro sends: a metadata value is at most 256 KiB, and user data
/// that is not text (the engine's gzip of a large cloud-config) goes base64-encoded (4/3).
pub const USER_DATA_LIMIT: usize = 192 * 1024;
/// Metadata key telling cloud-init's GCE datasource how `user-data` is encoded.
pub const META_USER_DATA_ENCODING: &str = "user-data-encoding";
/// Metadata key of the cloud-init user data.
pub const META_USER_DATA: &str = "user-data";
/// Metadata key of the batch's machine names by instance name (a JSON object).
pub const META_MACHINES: &str = "spectro-machines";
/// Metadata key of the exact pool name, shape and token (a JSON object; labels lowercase).
pub const META_SPECTRO: &str = "spectro";
/// The default boot disk type.
pub const DEFAULT_DISK_TYPE: &str = "pd-balanced";
/// The default boot disk size in GB.
pub const DEFAULT_DISK_GB: u32 = 60;

fn role_name(role: PoolRole) -> &'static str {
    match role {
        PoolRole::ControlPlane => "control-plane",
        PoolRole::Worker => "worker",
    }
}

fn output<'a>(infra: &'a InfraStatus, key: &str) -> Result<&'a str, GcpError> {
    infra
        .outputs
        .get(key)
        .map(String::as_str)
        .ok_or_else(|| GcpError::Transport {
            op: "Instances.BulkInsert".into(),
            message: format!("the infrastructure reports no `{key}`: ensure it first"),
        })
}

/// The `bulkInsert` body of the `names` of `batch`.
pub fn bulk_body(
    ctx: &ClusterContext,
    infra: &InfraStatus,
    batch: &MachineBatch,
    names: &[String],
) -> Result<model::BulkInsertInstanceResource, GcpError> {
    let n = Names::of(ctx);
    let pool = &batch.pool;
    let machine_type = pool.instance_type.clone().ok_or_else(|| {
        GcpError::invalid(
            format!("nodePools[{}].instanceType", pool.name),
            "is required on GCP (a machine type, e.g. n2-standard-4)",
        )
    })?;
    let cp = pool.role == PoolRole::ControlPlane;
    let mut tags = vec![output(infra, OUT_NODE_TAG)?.to_string()];
    if cp {
        tags.push(output(infra, OUT_CP_TAG)?.to_string());
    }
    let mut lbl = labels(ctx, role_name(pool.role));
    lbl.insert(label_key(TAG_POOL), label_value(&pool.name));
    lbl.insert(label_key(TAG_SHAPE), label_value(&batch.shape));
    lbl.insert(label_key(TAG_TOKEN), label_value(&batch.token));
    let machines: BTreeMap<String, String> =
        names.iter().map(|m| (n.instance(m), m.clone())).collect();
    let spectro = json!({"pool": pool.name, "shape": batch.shape, "token": batch.token, "zone": batch.zone, "role": role_name(pool.role)});
    // Metadata values are text: gzip-compressed user data goes base64-encoded, with the
    // `user-data-encoding` cloud-init's GCE datasource reads.
    let mut items = match String::from_utf8(batch.user_data.clone()) {
        Ok(text) => vec![json!({"key": META_USER_DATA, "value": text})],
        Err(_) => {
            use base64::Engine as _;
            vec![
                json!({"key": META_USER_DATA, "value": base64::engine::general_purpose::STANDARD.encode(&batch.user_data)}),
                json!({"key": META_USER_DATA_ENCODING, "value": "base64"}),
            ]
        }
    };
    items.push(json!({"key": META_MACHINES, "value": serde_json::to_string(&machines).unwrap_or_default()}));
    items.push(json!({"key": META_SPECTRO, "value": spectro.to_string()}));
    let per_instance: serde_json::Map<String, serde_json::Value> = machines
        .keys()
        .map(|i| (i.clone(), json!({"name": i})))
        .collect();
    let count = names.len().to_string();
    body(
        "Instances.BulkInsert",
        json!({
            "count": count,
            "minCount": count,
            "perInstanceProperties": per_instance,
            "instanceProperties": {
                "machineType": machine_type,
                "description": crate::network::description(ctx),
                "labels": lbl,
                "tags": {"items": tags},
                "metadata": {"items": items},
                "disks": [{
                    "boot": true,
                    "autoDelete": true,
                    "type": "PERSISTENT",
                    "initializeParams": {
                        "sourceImage": batch.image.id,
                        "diskType": pool.disk_type.clone().unwrap_or_else(|| DEFAULT_DISK_TYPE.into()),
                        "diskSizeGb": pool.disk_size_gb.unwrap_or(DEFAULT_DISK_GB).to_string(),
                        "labels": lbl,
                    },
                }],
                "networkInterfaces": [{
                    "network": output(infra, OUT_NETWORK)?,
                    "subnetwork": output(infra, OUT_SUBNET)?,
                }],
            },
        }),
    )
}

fn meta<'a>(inst: &'a Instance, key: &str) -> Option<&'a str> {
    inst.metadata
        .as_ref()?
        .items
        .iter()
        .find(|i| i.key.as_deref() == Some(key))
        .and_then(|i| i.value.as_deref())
}

/// The machine an instance is, with its cluster (None: not a spectro machine).
#[must_use]
pub fn machine_of(project: &str, inst: &Instance) -> Option<(ClusterId, Machine)> {
    let cluster: ClusterId = inst.labels.get(&cluster_label())?.parse().ok()?;
    let name = inst.name.clone()?;
    let spectro: serde_json::Value = serde_json::from_str(meta(inst, META_SPECTRO)?).ok()?;
    let machines: BTreeMap<String, String> =
        serde_json::from_str(meta(inst, META_MACHINES).unwrap_or("{}")).unwrap_or_default();
    let zone = inst
        .zone
        .as_deref()
        .and_then(|z| z.rsplit('/').next())
        .unwrap_or_default()
        .to_string();
    let state = match inst.status.as_ref().and_then(|s| s.name()) {
        Some("RUNNING") => MachineState::Running,
        Some("PROVISIONING" | "STAGING" | "REPAIRING") | None => MachineState::Pending,
        Some("STOPPING" | "SUSPENDING") => MachineState::Deleting,
        Some(_) => MachineState::Failed,
    };
    let text = |k: &str| spectro.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    let role = if text("role") == "control-plane" {
        PoolRole::ControlPlane
    } else {
        PoolRole::Worker
    };
    let address: Option<IpAddr> = inst
        .network_interfaces
        .first()
        .and_then(|n| n.network_ip.as_deref())
        .and_then(|a| a.parse().ok());
    let created_at = inst
        .creation_timestamp
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default();
    Some((
        cluster,
        Machine {
            id: format!("projects/{project}/zones/{zone}/instances/{name}"),
            name: machines.get(&name).cloned().unwrap_or_else(|| name.clone()),
            pool: text("pool").to_string(),
            role,
            zone: text("zone").to_string(),
            shape: text("shape").to_string(),
            token: text("token").to_string(),
            state,
            address,
            created_at,
        },
    ))
}

/// Every instance of the project matching `filter`, with one paginated aggregated list.
pub async fn aggregated(gce: &Gce, filter: &str) -> Result<Vec<(String, Instance)>, GcpError> {
    let mut out = Vec::new();
    let mut token = String::new();
    let project = gce.project.as_str();
    loop {
        let page = gce
            .call("Instances.AggregatedList", CallClass::Read, || {
                gce.c
                    .instances
                    .aggregated_list()
                    .set_project(project)
                    .set_filter(filter)
                    .set_page_token(&token)
                    .send()
            })
            .await?;
        for (scope, list) in page.items {
            for i in list.instances {
                out.push((scope.clone(), i));
            }
        }
        match page.next_page_token {
            Some(t) if !t.is_empty() => token = t,
            _ => break,
        }
    }
    Ok(out)
}

/// Every machine of every cluster of the project (one aggregated listing by the cluster-id
/// label), control-plane members of the API load balancer repaired.
pub async fn list_project(gce: &Gce) -> Result<HashMap<ClusterId, Vec<Machine>>, GcpError> {
    let filter = format!("labels.{}:*", cluster_label());
    let instances = aggregated(gce, &filter).await?;
    let mut out: HashMap<ClusterId, Vec<Machine>> = HashMap::new();
    let mut control_planes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, inst) in &instances {
        let Some((cluster, m)) = machine_of(&gce.project, inst) else {
            continue;
        };
        if m.role == PoolRole::ControlPlane
            && matches!(m.state, MachineState::Running | MachineState::Pending)
        {
            let prefix = crate::names::prefix_of(&cluster);
            let zone = m.id.split('/').nth(3).unwrap_or_default().to_string();
            let group = format!(
                "projects/{}/zones/{zone}/instanceGroups/{}",
                gce.project,
                Names { prefix }.instance_group(&zone)
            );
            control_planes.entry(group).or_default().push(m.id.clone());
        }
        out.entry(cluster).or_default().push(m);
    }
    for (group, members) in control_planes {
        // One cluster's group must not blind the listing of every cluster of the project.
        if let Err(e) = register(gce, &group, &members).await {
            tracing::warn!(group, error = %e, "adding control-plane instances to their group failed");
        }
    }
    for ms in out.values_mut() {
        ms.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Ok(out)
}

/// Adds `instances` (paths) to instance group `group` (a path) unless they are members:
/// membership is listed once per process and group.
async fn register(gce: &Gce, group: &str, instances: &[String]) -> Result<(), GcpError> {
    let parts: Vec<&str> = group.split('/').collect();
    let (zone, name) = match parts.as_slice() {
        [_, _, "zones", zone, "instanceGroups", name] => (zone.to_string(), name.to_string()),
        _ => return Ok(()),
    };
    let project = gce.project.as_str();
    let members = match gce.known().members(group) {
        Some(m) => m,
        None => {
            let mut found = HashSet::new();
            let mut token = String::new();
            loop {
                let page = gce
                    .call("InstanceGroups.ListInstances", CallClass::Read, || {
                        gce.c
                            .instance_groups
                            .list_instances()
                            .set_project(project)
                            .set_zone(&zone)
                            .set_instance_group(&name)
                            .set_body(model::InstanceGroupsListInstancesRequest::default())
                            .set_page_token(&token)
                            .send()
                    })
                    .await;
                let page = match page {
                    Ok(p) => p,
                    // The group is made by the infrastructure: not there yet, nothing to add to.
                    Err(e) if e.class() == Class::NotFound => return Ok(()),
                    Err(e) => return Err(e),
                };
                for i in page.items {
                    if let Some(url) = i.instance {
                        let at = url.find("projects/").unwrap_or(0);
                        found.insert(url[at..].to_string());
                    }
                }
                match page.next_page_token {
                    Some(t) if !t.is_empty() => token = t,
                    _ => break,
                }
            }
            gce.known().add_members(group, found.clone(), true);
            found
        }
    };
    let missing: Vec<String> = instances
        .iter()
        .filter(|i| !members.contains(*i))
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let req = body::<model::InstanceGroupsAddInstancesRequest>(
        "InstanceGroups.AddInstances",
        json!({"instances": missing.iter().map(|i| json!({"instance": i})).collect::<Vec<_>>()}),
    )?;
    let rid_key = format!("{group}#{}", missing.join(","));
    let rid = gce.request_id(&rid_key);
    match gce
        .insert("InstanceGroups.AddInstances", &rid_key, || {
            gce.c
                .instance_groups
                .add_instances()
                .set_project(project)
                .set_zone(&zone)
                .set_instance_group(&name)
                .set_body(req.clone())
                .set_request_id(&rid)
                .send()
        })
        .await
    {
        Ok(_) => {}
        // Already a member (another engine added it): the same outcome.
        Err(GcpError::OperationFailed { code, .. }) if code == "MEMBER_ALREADY_EXISTS" => {
            // Some were members already (another engine added them), maybe not all: list
            // the group again on the next pass.
            gce.known().forget_members(group);
            return Ok(());
        }
        Err(e) if e.class() == Class::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    gce.known().add_members(group, missing, false);
    Ok(())
}

/// The instances batch `token` made in `zone`.
async fn by_token(gce: &Gce, zone: &str, token: &str) -> Result<Vec<Instance>, GcpError> {
    let filter = format!(
        "labels.{} = \"{}\"",
        label_key(TAG_TOKEN),
        label_value(token)
    );
    let project = gce.project.as_str();
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = gce
            .call("Instances.List", CallClass::Read, || {
                gce.c
                    .instances
                    .list()
                    .set_project(project)
                    .set_zone(zone)
                    .set_filter(&filter)
                    .set_page_token(&page_token)
                    .send()
            })
            .await?;
        out.extend(page.items);
        match page.next_page_token {
            Some(t) if !t.is_empty() => page_token = t,
            _ => break,
        }
    }
    Ok(out)
}

/// Creates the batch's missing machines with one `bulkInsert`.
pub async fn create(
    gce: &Gce,
    ctx: &ClusterContext,
    infra: &InfraStatus,
    batch: &MachineBatch,
) -> Result<Vec<Machine>, GcpError> {
    placement(ctx)?;
    let n = Names::of(ctx);
    let zone = zone_of(&batch.pool, &batch.zone)?;
    let project = gce.project.as_str();
    // A first attempt: no call carried the token before, nothing to look for.
    let existing = if batch.first_attempt {
        Vec::new()
    } else {
        by_token(gce, &zone, &batch.token).await?
    };
    let have: HashSet<String> = existing.iter().filter_map(|i| i.name.clone()).collect();
    let missing: Vec<String> = batch
        .names
        .iter()
        .filter(|m| !have.contains(&n.instance(m)))
        .cloned()
        .collect();
    let made = existing;
    if !missing.is_empty() {
        let req = bulk_body(ctx, infra, batch, &missing)?;
        let rid = gce.request_id(&batch.token);
        let sent = gce
            .insert("Instances.BulkInsert", &batch.token, || {
                gce.c
                    .instances
                    .bulk_insert()
                    .set_project(project)
                    .set_zone(&zone)
                    .set_body(req.clone())
                    .set_request_id(&rid)
                    .send()
            })
            .await;
        match sent {
            Ok(true) => {}
            // `alreadyExists`: a name of the batch is taken. The batch's own instances are
            // the ones its token labels; a name held by another instance is not adopted.
            Ok(false) => {
                let again = by_token(gce, &zone, &batch.token).await?;
                let mine: HashSet<String> = again.iter().filter_map(|i| i.name.clone()).collect();
                if let Some(taken) = missing.iter().find(|m| !mine.contains(&n.instance(m))) {
                    return Err(GcpError::Transport {
                        op: "Instances.BulkInsert".into(),
                        message: format!(
                            "instance `{}` exists without the batch's token: another create holds the name",
                            n.instance(taken)
                        ),
                    });
                }
                return finish(gce, batch, &zone, &n, again).await;
            }
            // A reference of the batch that does not exist (the image, the subnetwork): all or
            // nothing (`minCount`), so nothing of the batch exists and the refusal is final.
            Err(e) if e.class() == Class::NotFound => {
                return Err(GcpError::invalid(
                    format!("nodePools[{}]", batch.pool.name),
                    format!(
                        "Compute Engine refused the instances: something they name does not exist (image `{}`, machine type, subnetwork): {e}",
                        batch.image.id
                    ),
                ))
            }
            Err(e) => return Err(e),
        }
    }
    let mut machines: Vec<Machine> = made
        .iter()
        .filter_map(|i| machine_of(&gce.project, i))
        .map(|(_, m)| m)
        .filter(|m| batch.names.contains(&m.name))
        .collect();
    // What this call made, as the operation reported it done: pending until listed.
    let now = spectro_core::clock::system_now();
    for name in &missing {
        machines.push(Machine {
            id: format!(
                "projects/{project}/zones/{zone}/instances/{}",
                n.instance(name)
            ),
            name: name.clone(),
            pool: batch.pool.name.clone(),
            role: batch.pool.role,
            zone: batch.zone.clone(),
            shape: batch.shape.clone(),
            token: batch.token.clone(),
            state: MachineState::Pending,
            address: None,
            created_at: now,
        });
    }
    register_created(gce, batch, &zone, &n, &machines).await;
    Ok(machines)
}

/// The batch's machines from the instances its token labels.
async fn finish(
    gce: &Gce,
    batch: &MachineBatch,
    zone: &str,
    n: &Names,
    made: Vec<Instance>,
) -> Result<Vec<Machine>, GcpError> {
    let machines: Vec<Machine> = made
        .iter()
        .filter_map(|i| machine_of(&gce.project, i))
        .map(|(_, m)| m)
        .filter(|m| batch.names.contains(&m.name))
        .collect();
    register_created(gce, batch, zone, n, &machines).await;
    Ok(machines)
}

/// Control-plane machines join their zone's instance group. A failure here does not fail
/// the create (the instances exist: the engine keeps them); the next listing adds them.
async fn register_created(
    gce: &Gce,
    batch: &MachineBatch,
    zone: &str,
    n: &Names,
    machines: &[Machine],
) {
    if batch.pool.role != PoolRole::ControlPlane || machines.is_empty() {
        return;
    }
    let group = format!(
        "projects/{}/zones/{zone}/instanceGroups/{}",
        gce.project,
        n.instance_group(zone)
    );
    let ids: Vec<String> = machines.iter().map(|m| m.id.clone()).collect();
    if let Err(e) = register(gce, &group, &ids).await {
        tracing::warn!(group, error = %e, "adding control-plane instances to their group failed; the next listing adds them");
    }
}

/// Deletes machines by id (instances already gone are no error), their operations together.
pub async fn delete(gce: &Gce, machines: &[Machine]) -> Result<(), GcpError> {
    let project = gce.project.as_str();
    try_join_all(machines.iter().map(|m| async move {
        let parts: Vec<&str> = m.id.split('/').collect();
        let (zone, name) = match parts.as_slice() {
            [_, _, "zones", zone, "instances", name] => (zone.to_string(), name.to_string()),
            _ => {
                return Err(GcpError::invalid(
                    "machine id",
                    format!("`{}` is not an instance path", m.id),
                ))
            }
        };
        gce.write("Instances.Delete", || {
            gce.c
                .instances
                .delete()
                .set_project(project)
                .set_zone(&zone)
                .set_instance(&name)
                .send()
        })
        .await
        .map(|_| ())
    }))
    .await?;
    Ok(())
}

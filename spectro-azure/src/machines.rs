//! Machines: one VM per machine, its NIC and OS disk made by the VM's own PUT and deleted
//! with it (`deleteOption: Delete`), control-plane NICs in the API server's backend pool
//! from their creation.
//!
//! A VM is one PUT: ARM has no call that creates several standalone VMs (only scale sets,
//! which own their instances' names and lifecycle), so a batch of N machines is one listing
//! of the resource group's VMs (what the batch's token already made) plus one PUT per
//! missing machine, the first alone: when ARM refuses it outright (image, size, quota),
//! nothing of the batch exists and the refusal is final; the others go together.
//!
//! Observation: one paginated list of the resource group's VMs and one of its NICs (the
//! machines' private addresses), shared by every cluster of the resource group
//! ([`list_group`]).

use std::collections::HashMap;
use std::net::IpAddr;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures_util::future::try_join_all;
use spectro_core::model::PoolRole;
use spectro_core::provider::{
    ClusterContext, ClusterId, InfraStatus, Machine, MachineBatch, MachineState, TAG_CLUSTER_ID,
    TAG_POOL, TAG_ROLE, TAG_SHAPE, TAG_TOKEN,
};

use crate::client::{Arm, COMPUTE_API, NETWORK_API};
use crate::error::{AzureError, Class};
use crate::image::image_reference;
use crate::models::{
    Child, HardwareProfile, LinuxConfiguration, ManagedDisk, NetworkProfile, NicConfigIpProps,
    NicConfigProps, NicProps, OsDisk, OsProfile, Resource, SshConfiguration, SshPublicKey,
    StorageProfile, SubResource, VmProps,
};
use crate::names::{placement, tag_key, Names, TAG_MACHINE};
use crate::network::{
    tags, OUT_BACKEND_POOL, OUT_CP_NSG, OUT_CP_SUBNET, OUT_NODE_NSG, OUT_NODE_SUBNET,
};

/// The largest user data Azure accepts: `customData` is at most 65,535 characters of
/// base64.
pub const USER_DATA_LIMIT: usize = 65_535 / 4 * 3;
/// The nodes' admin user (SSH with the placement's key only).
pub const ADMIN_USER: &str = "spectro";
/// PUTs of one batch in flight at once.
pub const CREATE_CONCURRENCY: usize = 8;
/// The Microsoft.Network version the VM's NIC is made with.
pub const NIC_API: &str = "2020-11-01";

const COMPUTE: &str = "Microsoft.Compute";

fn role_tag(role: PoolRole) -> &'static str {
    match role {
        PoolRole::ControlPlane => "control-plane",
        PoolRole::Worker => "worker",
    }
}

fn output<'a>(infra: &'a InfraStatus, key: &str) -> Result<&'a str, AzureError> {
    infra
        .outputs
        .get(key)
        .map(String::as_str)
        .ok_or_else(|| AzureError::Decode {
            op: "VirtualMachines.CreateOrUpdate".into(),
            message: format!("the infrastructure reports no `{key}`: ensure it first"),
        })
}

/// The VM of machine `name` of `batch`.
pub fn vm_body(
    ctx: &ClusterContext,
    infra: &InfraStatus,
    batch: &MachineBatch,
    name: &str,
) -> Result<Resource<VmProps>, AzureError> {
    let a = placement(ctx)?;
    let n = Names::of(ctx)?;
    let vm = n.vm(name);
    let pool = &batch.pool;
    let size = pool.instance_type.clone().ok_or_else(|| {
        AzureError::invalid(
            format!("nodePools[{}].instanceType", pool.name),
            "is required on Azure (a VM size, e.g. Standard_D2s_v3)",
        )
    })?;
    let cp = pool.role == PoolRole::ControlPlane;
    let subnet = output(infra, if cp { OUT_CP_SUBNET } else { OUT_NODE_SUBNET })?;
    let backend = if cp {
        vec![SubResource::to(output(infra, OUT_BACKEND_POOL)?)]
    } else {
        Vec::new()
    };
    let nsg = infra
        .outputs
        .get(if cp { OUT_CP_NSG } else { OUT_NODE_NSG })
        .map(SubResource::to);
    let mut t = tags(ctx, role_tag(pool.role));
    t.insert(tag_key(TAG_POOL), pool.name.clone());
    t.insert(tag_key(TAG_SHAPE), batch.shape.clone());
    t.insert(tag_key(TAG_TOKEN), batch.token.clone());
    t.insert(tag_key(TAG_MACHINE), name.to_string());
    // The host name is the Kubernetes node name: the machine's name when Azure takes it.
    let computer_name = if name.len() <= crate::names::VM_NAME_MAX {
        name.to_string()
    } else {
        vm.clone()
    };
    Ok(Resource {
        location: Some(a.region.clone()),
        tags: t,
        zones: if batch.zone.is_empty() {
            Vec::new()
        } else {
            vec![batch.zone.clone()]
        },
        properties: VmProps {
            hardware_profile: Some(HardwareProfile { vm_size: size }),
            storage_profile: Some(StorageProfile {
                image_reference: Some(image_reference(&batch.image.id)?),
                os_disk: Some(OsDisk {
                    name: Some(Names::os_disk(&vm)),
                    create_option: "FromImage".into(),
                    disk_size_gb: pool.disk_size_gb,
                    managed_disk: pool.disk_type.as_ref().map(|t| ManagedDisk {
                        storage_account_type: Some(t.clone()),
                    }),
                    delete_option: Some("Delete".into()),
                }),
            }),
            os_profile: Some(OsProfile {
                computer_name: Some(computer_name),
                admin_username: Some(ADMIN_USER.into()),
                custom_data: Some(
                    base64::engine::general_purpose::STANDARD.encode(&batch.user_data),
                ),
                linux_configuration: Some(LinuxConfiguration {
                    disable_password_authentication: true,
                    ssh: Some(SshConfiguration {
                        public_keys: vec![SshPublicKey {
                            path: format!("/home/{ADMIN_USER}/.ssh/authorized_keys"),
                            key_data: a.ssh_key.trim().to_string(),
                        }],
                    }),
                }),
            }),
            network_profile: Some(NetworkProfile {
                network_api_version: Some(NIC_API.into()),
                network_interface_configurations: vec![Child {
                    id: None,
                    name: Names::nic(&vm),
                    properties: NicConfigProps {
                        primary: Some(true),
                        delete_option: Some("Delete".into()),
                        network_security_group: nsg,
                        ip_configurations: vec![Child {
                            id: None,
                            name: "ipconfig1".into(),
                            properties: NicConfigIpProps {
                                subnet: Some(SubResource::to(subnet)),
                                primary: Some(true),
                                load_balancer_backend_address_pools: backend,
                            },
                        }],
                    },
                }],
            }),
            provisioning_state: None,
            time_created: None,
        },
        ..Resource::default()
    })
}

/// The machine a VM is, with the cluster it belongs to; `None` for VMs spectro did not make.
pub fn machine_of(vm: &Resource<VmProps>, address: Option<IpAddr>) -> Option<(ClusterId, Machine)> {
    let tag = |k: &str| vm.tags.get(&tag_key(k)).cloned();
    let cluster: ClusterId = tag(TAG_CLUSTER_ID)?.parse().ok()?;
    let role = match tag(TAG_ROLE)?.as_str() {
        "control-plane" => PoolRole::ControlPlane,
        "worker" => PoolRole::Worker,
        _ => return None,
    };
    let state = match vm.properties.provisioning_state.as_deref() {
        Some("Creating") | None => MachineState::Pending,
        Some("Deleting") => MachineState::Deleting,
        Some("Failed") | Some("Canceled") => MachineState::Failed,
        Some(_) => MachineState::Running,
    };
    let created_at = vm
        .properties
        .time_created
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(spectro_core::clock::system_now);
    Some((
        cluster,
        Machine {
            id: vm.id.clone(),
            name: tag(TAG_MACHINE).unwrap_or_else(|| vm.name.clone()),
            pool: tag(TAG_POOL)?,
            role,
            zone: vm.zones.first().cloned().unwrap_or_default(),
            shape: tag(TAG_SHAPE).unwrap_or_default(),
            token: tag(TAG_TOKEN).unwrap_or_default(),
            state,
            address,
            created_at,
        },
    ))
}

/// The VMs of a resource group (one paginated list).
pub async fn list_vms(arm: &Arm, rg: &str) -> Result<Vec<Resource<VmProps>>, AzureError> {
    arm.list(
        "VirtualMachines.List",
        &arm.resource_path(rg, COMPUTE, "virtualMachines"),
        COMPUTE_API,
    )
    .await
}

/// Every machine of every cluster in resource group `rg`: one list of VMs, one of NICs.
pub async fn list_group(
    arm: &Arm,
    rg: &str,
) -> Result<HashMap<ClusterId, Vec<Machine>>, AzureError> {
    let nic_path = arm.resource_path(rg, "Microsoft.Network", "networkInterfaces");
    let (vms, nics) = match tokio::try_join!(
        list_vms(arm, rg),
        arm.list::<Resource<NicProps>>("NetworkInterfaces.List", &nic_path, NETWORK_API)
    ) {
        // No resource group: no machine (the infrastructure's PUT names the problem).
        Err(e) if e.code() == Some("ResourceGroupNotFound") => return Ok(HashMap::new()),
        other => other?,
    };
    let mut addresses: HashMap<String, IpAddr> = HashMap::new();
    for nic in &nics {
        let ip = nic
            .properties
            .ip_configurations
            .iter()
            .find(|c| c.properties.primary != Some(false))
            .and_then(|c| c.properties.private_ip_address.as_deref())
            .and_then(|a| a.parse().ok());
        if let Some(ip) = ip {
            if let Some(vm) = &nic.properties.virtual_machine {
                addresses.insert(vm.id.to_ascii_lowercase(), ip);
            }
            addresses.insert(format!("nic:{}", nic.name.to_ascii_lowercase()), ip);
        }
    }
    let mut out: HashMap<ClusterId, Vec<Machine>> = HashMap::new();
    for vm in &vms {
        let addr = addresses
            .get(&vm.id.to_ascii_lowercase())
            .or_else(|| {
                addresses.get(&format!(
                    "nic:{}",
                    Names::nic(&vm.name).to_ascii_lowercase()
                ))
            })
            .copied();
        if let Some((cluster, m)) = machine_of(vm, addr) {
            out.entry(cluster).or_default().push(m);
        }
    }
    for ms in out.values_mut() {
        ms.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Ok(out)
}

/// Creates the machines of `batch` that its token has not made yet; returns the batch's
/// machines.
pub async fn create(
    arm: &Arm,
    ctx: &ClusterContext,
    infra: &InfraStatus,
    batch: &MachineBatch,
) -> Result<Vec<Machine>, AzureError> {
    let n = Names::of(ctx)?;
    // Validate every body before any call.
    let bodies: Vec<(String, Resource<VmProps>)> = batch
        .names
        .iter()
        .map(|name| Ok((name.clone(), vm_body(ctx, infra, batch, name)?)))
        .collect::<Result<_, AzureError>>()?;
    let cluster = ctx.cluster_id;
    let existing: HashMap<String, Machine> = list_vms(arm, &n.resource_group)
        .await?
        .iter()
        .filter_map(|vm| machine_of(vm, None))
        .filter(|(c, m)| *c == cluster && batch.names.contains(&m.name))
        .map(|(_, m)| (m.name.clone(), m))
        .collect();
    let missing: Vec<&(String, Resource<VmProps>)> = bodies
        .iter()
        .filter(|(name, _)| !existing.contains_key(name))
        .collect();
    let mut made: Vec<Machine> = Vec::new();
    // What a refusal means once part of the batch exists (made by this call or by an earlier
    // attempt with the same token): not final, the token must stay (P18).
    let not_final = |e: AzureError| match e.class() {
        Class::Retryable | Class::Throttled(_) => e,
        _ => AzureError::Decode {
            op: "VirtualMachines.CreateOrUpdate".into(),
            message: format!("part of the batch exists, another VM was refused: {e}"),
        },
    };
    if let Some(((name, body), rest)) = missing.split_first().map(|(f, r)| (*f, r)) {
        // The first alone: when nothing of the batch exists yet, a refusal leaves nothing.
        let first = put_vm(arm, &n, name, body).await;
        made.push(if existing.is_empty() {
            first?
        } else {
            first.map_err(not_final)?
        });
        for chunk in rest.chunks(CREATE_CONCURRENCY) {
            // One of the batch exists now: a refusal of another is not final (the token is
            // re-issued and only what is missing is made again).
            let more = try_join_all(chunk.iter().map(|(name, body)| put_vm(arm, &n, name, body)))
                .await
                .map_err(not_final)?;
            made.extend(more);
        }
    }
    let mut out: Vec<Machine> = existing.into_values().collect();
    out.extend(made);
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

async fn put_vm(
    arm: &Arm,
    n: &Names,
    name: &str,
    body: &Resource<VmProps>,
) -> Result<Machine, AzureError> {
    let path = arm.resource_path(
        &n.resource_group,
        COMPUTE,
        &format!("virtualMachines/{}", n.vm(name)),
    );
    let (vm, _) = arm
        .put::<_, Resource<VmProps>>("VirtualMachines.CreateOrUpdate", &path, COMPUTE_API, body)
        .await?;
    let (_, m) = machine_of(&vm, None).ok_or_else(|| AzureError::Decode {
        op: "VirtualMachines.CreateOrUpdate".into(),
        message: format!("VM {} came back without spectro's tags", vm.name),
    })?;
    Ok(m)
}

async fn delete_vm(arm: &Arm, m: &Machine) -> Result<(), AzureError> {
    arm.delete("VirtualMachines.Delete", &m.id, COMPUTE_API)
        .await
        .map(|_| ())
}

/// Deletes VMs by id (their NICs and disks go with them); gone ones are no error. The
/// deletes are not followed: the listing shows the VMs `Deleting`, then not at all.
pub async fn delete(arm: &Arm, machines: &[Machine]) -> Result<(), AzureError> {
    for chunk in machines.chunks(CREATE_CONCURRENCY) {
        try_join_all(chunk.iter().map(|m| delete_vm(arm, m))).await?;
    }
    Ok(())
}

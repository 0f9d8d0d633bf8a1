//! [`Vcenter`] over vim_rs (SOAP): the one place that knows vim_rs and its quirks.
//!
//! Quirks handled here, so nothing above sees them:
//! - vim_rs always speaks https: simulators run with TLS and `insecure`.
//! - Tasks are waited for by polling `info` (vim_rs's TaskTracker does not survive a failed
//!   task over SOAP); the fault of a failed task is read from `info.error`.
//! - vcsim answers an empty `<returnval>` for "nothing found", which vim_rs reports as a
//!   parse error: read as "no results".
//! - the clone's hardware is read back and a reconfigure follows when it differs (govmomi
//!   0.24's vcsim ignored the clone's CPU and memory; real vCenter and newer vcsim apply them,
//!   so only the disk growth remains).
//! - disk edits carry `capacityInBytes` as well as `capacityInKB` (newer vcsim reads a missing
//!   byte size as 0 and lets it win).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use vim_rs::core::client::{Client, ClientBuilder, TransportMode};
use vim_rs::mo::{
    AuthorizationManager, CustomFieldsManager, PropertyCollector, SearchIndex, SessionManager,
    VirtualMachine,
};
use vim_rs::types::boxed_types::ValueElements;
use vim_rs::types::convert::CastInto;
use vim_rs::types::enums::{
    MoTypesEnum, TaskInfoStateEnum, VirtualDeviceConfigSpecFileOperationEnum,
    VirtualDeviceConfigSpecOperationEnum, VirtualMachinePowerStateEnum,
};
use vim_rs::types::structs::{
    CustomFieldStringValue, Description, DistributedVirtualSwitchPortConnection,
    ManagedObjectReference, MethodFault, ObjectContent, ObjectSpec, OptionValue,
    PropertyFilterSpec, PropertySpec, RetrieveOptions, SelectionSpec, TaskInfo, TraversalSpec,
    VirtualDevice, VirtualDeviceConfigSpec, VirtualDeviceConnectInfo,
    VirtualDeviceDeviceBackingInfo, VirtualDeviceFileBackingInfo, VirtualDisk,
    VirtualDiskFlatVer2BackingInfo, VirtualEthernetCard,
    VirtualEthernetCardDistributedVirtualPortBackingInfo, VirtualEthernetCardNetworkBackingInfo,
    VirtualMachineCloneSpec, VirtualMachineConfigSpec, VirtualMachineRelocateSpec, VirtualVmxnet,
    VirtualVmxnet3,
};
use vim_rs::types::traits::{
    OptionValueTrait, VirtualDeviceBackingInfoTrait, VirtualDeviceConfigSpecTrait,
    VirtualDeviceTrait, VirtualEthernetCardTrait,
};
use vim_rs::types::vim_any::VimAny;

use crate::api::{
    CallCounts, CloneSpec, NicBacking, ObjRef, PowerState, Reconfigure, TemplateDevices,
    TemplateDisk, Vcenter, VmDetails, VmSummary,
};
use crate::error::{Result, VsphereError};

/// How to reach a vCenter.
#[derive(Clone)]
pub struct Connection {
    /// Host or host:port.
    pub host: String,
    /// User name.
    pub user: String,
    /// Password (never logged: this type has no Debug).
    pub password: String,
    /// Accept an unverified certificate (labs, simulators).
    pub insecure: bool,
}

/// A logged-in vCenter session, reused for every call until dropped.
pub struct VimVcenter {
    client: Arc<Client>,
    host: String,
    calls: Mutex<CallCounts>,
    task_timeout: Duration,
}

impl std::fmt::Debug for VimVcenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VimVcenter")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Drop for VimVcenter {
    /// Logs out on a thread of its own: vim_rs's destructor would otherwise block on the
    /// caller's runtime, which hangs when that runtime is shutting down.
    fn drop(&mut self) {
        let client = self.client.clone();
        let _ = std::thread::Builder::new()
            .name("spectro-vsphere-logout".into())
            .spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(async {
                        let _ = tokio::time::timeout(Duration::from_secs(5), client.close()).await;
                        drop(client);
                    });
                }
            });
    }
}

fn mo(r: &ObjRef) -> ManagedObjectReference {
    ManagedObjectReference {
        r#type: MoTypesEnum::from_str(&r.kind),
        value: r.id.clone(),
    }
}

fn obj(r: &ManagedObjectReference) -> ObjRef {
    ObjRef {
        kind: r.r#type.as_str().to_string(),
        id: r.value.clone(),
    }
}

fn fault_name(f: &MethodFault) -> String {
    f.type_
        .map(|t| t.as_str().to_string())
        .unwrap_or_else(|| "MethodFault".into())
}

fn fault_message(f: &MethodFault) -> Option<String> {
    f.fault_message
        .as_ref()
        .and_then(|m| m.first())
        .and_then(|m| m.message.clone())
        .or_else(|| {
            f.extra_fields_
                .get("localizedMessage")
                .and_then(|v| match v {
                    miniserde::json::Value::String(s) => Some(s.clone()),
                    _ => None,
                })
        })
}

/// The parse error vcsim's empty `<returnval>` produces.
fn is_empty_answer(e: &vim_rs::core::client::Error) -> bool {
    matches!(e, vim_rs::core::client::Error::ParseError(m) if m.contains("returnval") || m.contains("empty") || m.contains("EOF") || m.contains("missing"))
}

fn client_error(op: &str, e: vim_rs::core::client::Error) -> VsphereError {
    use vim_rs::core::client::Error as E;
    match e {
        E::MethodFault(f) => VsphereError::Fault {
            op: op.into(),
            fault: fault_name(&f),
            message: fault_message(&f),
        },
        E::ReqwestError(ref r) => VsphereError::Transport {
            op: op.into(),
            message: r.to_string(),
            source: Some(Box::new(e)),
        },
        E::MissingOrInvalidSessionKey => VsphereError::Fault {
            op: op.into(),
            fault: "NotAuthenticated".into(),
            message: Some("the session expired".into()),
        },
        other => VsphereError::Protocol {
            op: op.into(),
            message: other.to_string(),
            source: Some(Box::new(other)),
        },
    }
}

fn string_value(v: &str) -> Option<VimAny> {
    Some(VimAny::Value(ValueElements::PrimitiveString(v.to_string())))
}

fn extra_config(pairs: &[(String, String)]) -> Option<Vec<Box<dyn OptionValueTrait>>> {
    (!pairs.is_empty()).then(|| {
        pairs
            .iter()
            .map(|(k, v)| {
                Box::new(OptionValue {
                    key: k.clone(),
                    value: string_value(v),
                }) as Box<dyn OptionValueTrait>
            })
            .collect()
    })
}

fn power(v: &VirtualMachinePowerStateEnum) -> PowerState {
    match v {
        VirtualMachinePowerStateEnum::PoweredOn => PowerState::On,
        VirtualMachinePowerStateEnum::Suspended => PowerState::Suspended,
        _ => PowerState::Off,
    }
}

fn custom_values(
    list: Vec<Box<dyn vim_rs::types::traits::CustomFieldValueTrait>>,
) -> BTreeMap<i32, String> {
    list.into_iter()
        .filter_map(|v| {
            v.as_any_ref()
                .downcast_ref::<CustomFieldStringValue>()
                .map(|s| (s.key, s.value.clone()))
        })
        .collect()
}

fn mo_value(v: VimAny) -> Option<ObjRef> {
    match v {
        VimAny::Object(o) => o
            .as_any_ref()
            .downcast_ref::<ManagedObjectReference>()
            .map(obj),
        _ => None,
    }
}

fn mo_list(v: VimAny) -> Vec<ObjRef> {
    match v {
        VimAny::Value(ValueElements::ArrayOfManagedObjectReference(l)) => {
            l.iter().map(obj).collect()
        }
        other => mo_value(other).into_iter().collect(),
    }
}

fn text(v: VimAny) -> Option<String> {
    match v {
        VimAny::Value(ValueElements::PrimitiveString(s)) => Some(s),
        _ => None,
    }
}

fn int(v: VimAny) -> Option<i64> {
    match v {
        VimAny::Value(ValueElements::PrimitiveInt(i)) => Some(i as i64),
        VimAny::Value(ValueElements::PrimitiveLong(i)) => Some(i),
        VimAny::Value(ValueElements::PrimitiveShort(i)) => Some(i as i64),
        _ => None,
    }
}

fn nic_backing_of(b: &dyn VirtualDeviceBackingInfoTrait) -> Option<NicBacking> {
    let any = b.as_any_ref();
    if let Some(n) = any.downcast_ref::<VirtualEthernetCardNetworkBackingInfo>() {
        return Some(NicBacking::Network {
            name: n.virtual_device_device_backing_info_.device_name.clone(),
            network: n.network.as_ref().map(obj)?,
        });
    }
    if let Some(d) = any.downcast_ref::<VirtualEthernetCardDistributedVirtualPortBackingInfo>() {
        return Some(NicBacking::DistributedPortgroup {
            switch_uuid: d.port.switch_uuid.clone(),
            portgroup_key: d.port.portgroup_key.clone()?,
        });
    }
    None
}

fn backing_info(b: &NicBacking) -> Box<dyn VirtualDeviceBackingInfoTrait> {
    match b {
        NicBacking::Network { name, network } => Box::new(VirtualEthernetCardNetworkBackingInfo {
            virtual_device_device_backing_info_: VirtualDeviceDeviceBackingInfo {
                device_name: name.clone(),
                ..Default::default()
            },
            network: Some(mo(network)),
            ..Default::default()
        }),
        NicBacking::DistributedPortgroup {
            switch_uuid,
            portgroup_key,
        } => Box::new(VirtualEthernetCardDistributedVirtualPortBackingInfo {
            port: DistributedVirtualSwitchPortConnection {
                switch_uuid: switch_uuid.clone(),
                portgroup_key: Some(portgroup_key.clone()),
                ..Default::default()
            },
        }),
    }
}

fn ethernet(key: i32, backing: Option<&NicBacking>) -> Box<dyn VirtualDeviceTrait> {
    Box::new(VirtualVmxnet3 {
        virtual_vmxnet_: VirtualVmxnet {
            virtual_ethernet_card_: VirtualEthernetCard {
                virtual_device_: VirtualDevice {
                    key,
                    backing: backing.map(backing_info),
                    connectable: Some(VirtualDeviceConnectInfo {
                        start_connected: true,
                        allow_guest_control: true,
                        connected: true,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                address_type: Some("generated".into()),
                ..Default::default()
            },
        },
        ..Default::default()
    })
}

/// The clone's device changes: the template's NICs out, one NIC on the placement's network
/// in. (The disk is grown afterwards, on the clone's own disk.)
fn disk_edit(disk: &TemplateDisk, capacity_kb: i64) -> Box<dyn VirtualDeviceConfigSpecTrait> {
    Box::new(VirtualDeviceConfigSpec {
        operation: Some(VirtualDeviceConfigSpecOperationEnum::Edit),
        device: Box::new(VirtualDisk {
            virtual_device_: VirtualDevice {
                key: disk.key,
                controller_key: disk.controller_key,
                unit_number: disk.unit_number,
                device_info: Some(Box::new(Description {
                    label: String::new(),
                    summary: String::new(),
                })),
                backing: Some(Box::new(VirtualDiskFlatVer2BackingInfo {
                    virtual_device_file_backing_info_: VirtualDeviceFileBackingInfo {
                        file_name: disk.file_name.clone(),
                        ..Default::default()
                    },
                    disk_mode: "persistent".into(),
                    ..Default::default()
                })),
                ..Default::default()
            },
            capacity_in_kb: capacity_kb,
            // Both sizes: vcsim (govmomi 0.56) reads a missing capacityInBytes as 0 and lets
            // it win over capacityInKB (the disk would shrink to 0 until a second edit).
            capacity_in_bytes: Some(capacity_kb * 1024),
            ..Default::default()
        }),
        file_operation: None::<VirtualDeviceConfigSpecFileOperationEnum>,
        ..Default::default()
    })
}

fn device_changes(spec: &CloneSpec) -> Vec<Box<dyn VirtualDeviceConfigSpecTrait>> {
    let mut out: Vec<Box<dyn VirtualDeviceConfigSpecTrait>> = Vec::new();
    for (key, backing) in &spec.devices.nics {
        out.push(Box::new(VirtualDeviceConfigSpec {
            operation: Some(VirtualDeviceConfigSpecOperationEnum::Remove),
            device: ethernet(*key, backing.as_ref()),
            ..Default::default()
        }));
    }
    out.push(Box::new(VirtualDeviceConfigSpec {
        operation: Some(VirtualDeviceConfigSpecOperationEnum::Add),
        device: ethernet(-100, Some(&spec.nic)),
        ..Default::default()
    }));
    out
}

/// Recursive traversal of VM folders (and the vApps/folders below them).
/// Folders recursively, and from a datacenter into its VM folder (so that a listing from the
/// inventory's root folder reaches every VM of the vCenter).
fn folder_traversal() -> Vec<Box<dyn vim_rs::types::traits::SelectionSpecTrait>> {
    let both = || -> Vec<Box<dyn vim_rs::types::traits::SelectionSpecTrait>> {
        vec![
            Box::new(SelectionSpec {
                name: Some("folders".into()),
            }),
            Box::new(SelectionSpec {
                name: Some("datacenters".into()),
            }),
        ]
    };
    vec![
        Box::new(TraversalSpec {
            selection_spec_: SelectionSpec {
                name: Some("folders".into()),
            },
            r#type: MoTypesEnum::Folder.as_str().to_string(),
            path: "childEntity".into(),
            skip: Some(false),
            select_set: Some(both()),
        }),
        Box::new(TraversalSpec {
            selection_spec_: SelectionSpec {
                name: Some("datacenters".into()),
            },
            r#type: MoTypesEnum::Datacenter.as_str().to_string(),
            path: "vmFolder".into(),
            skip: Some(false),
            select_set: Some(both()),
        }),
    ]
}

const LIST_PATHS: &[&str] = &[
    "name",
    "parent",
    "runtime.powerState",
    "guest.ipAddress",
    "customValue",
    "config.template",
];

const DETAIL_PATHS: &[&str] = &[
    "name",
    "parent",
    "resourcePool",
    "datastore",
    "network",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "config.hardware.device",
    "config.extraConfig",
    "runtime.powerState",
    "customValue",
];

impl VimVcenter {
    /// Logs in (one session, reused for every call of this value).
    pub async fn connect(c: &Connection) -> Result<Self> {
        let client = ClientBuilder::new(&c.host)
            .insecure(c.insecure)
            .basic_authn(&c.user, &c.password)
            .app_details("spectro", env!("CARGO_PKG_VERSION"))
            .transport(TransportMode::Soap)
            .build()
            .await
            .map_err(|e| match e {
                vim_rs::core::client::Error::MethodFault(f) => VsphereError::Login {
                    host: c.host.clone(),
                    user: c.user.clone(),
                    message: fault_message(&f).unwrap_or_else(|| fault_name(&f)),
                },
                other => client_error(&format!("login to {}", c.host), other),
            })?;
        let v = VimVcenter {
            client,
            host: c.host.clone(),
            calls: Mutex::new(CallCounts::new()),
            task_timeout: Duration::from_secs(30 * 60),
        };
        v.count("Login");
        Ok(v)
    }

    /// Ends the session.
    pub async fn close(&self) {
        let _ = self.client.close().await;
    }

    fn count(&self, method: &str) {
        if let Ok(mut c) = self.calls.lock() {
            *c.entry(method.to_string()).or_default() += 1;
        }
    }

    fn pc(&self) -> PropertyCollector {
        PropertyCollector::new(
            self.client.clone(),
            &self.client.service_content().property_collector.value,
        )
    }

    /// One RetrievePropertiesEx (plus continuations for large answers).
    async fn retrieve(
        &self,
        objects: Vec<ObjectSpec>,
        kind: MoTypesEnum,
        paths: &[&str],
        op: &str,
    ) -> Result<Vec<ObjectContent>> {
        let spec = PropertyFilterSpec {
            prop_set: vec![PropertySpec {
                r#type: kind.as_str().to_string(),
                all: Some(false),
                path_set: Some(paths.iter().map(|p| p.to_string()).collect()),
            }],
            object_set: objects,
            report_missing_objects_in_results: None,
        };
        let pc = self.pc();
        self.count("RetrievePropertiesEx");
        let first = match pc
            .retrieve_properties_ex(
                &[spec],
                &RetrieveOptions {
                    max_objects: Some(1000),
                },
            )
            .await
        {
            Ok(r) => r,
            Err(e) if is_empty_answer(&e) => None,
            Err(e) => return Err(client_error(op, e)),
        };
        let Some(mut result) = first else {
            return Ok(Vec::new());
        };
        let mut out = std::mem::take(&mut result.objects);
        let mut token = result.token.take();
        while let Some(t) = token {
            self.count("ContinueRetrievePropertiesEx");
            let mut next = pc
                .continue_retrieve_properties_ex(&t)
                .await
                .map_err(|e| client_error(op, e))?;
            out.append(&mut next.objects);
            token = next.token.take();
        }
        Ok(out)
    }

    async fn task_info(&self, task: &ManagedObjectReference, op: &str) -> Result<TaskInfo> {
        self.count("RetrievePropertiesEx(task)");
        self.client
            .fetch_property::<TaskInfo>(task.clone(), "info")
            .await
            .map_err(|e| client_error(op, e))
    }

    /// Waits for a task by polling `info` (first poll at once, then backing off to 2 s).
    async fn wait(&self, task: ManagedObjectReference, op: &str) -> Result<Option<VimAny>> {
        let start = spectro_core::clock::instant_now();
        let mut delay = Duration::from_millis(50);
        loop {
            let info = self.task_info(&task, op).await?;
            match info.state {
                TaskInfoStateEnum::Success => return Ok(info.result),
                TaskInfoStateEnum::Error => {
                    let (fault, message) = match &info.error {
                        Some(f) => (fault_name(f), fault_message(f)),
                        None => ("TaskFailed".to_string(), None),
                    };
                    return Err(VsphereError::Fault {
                        op: op.into(),
                        fault,
                        message,
                    });
                }
                _ => {}
            }
            if start.elapsed() > self.task_timeout {
                return Err(VsphereError::TaskTimeout {
                    op: op.into(),
                    task: task.value.clone(),
                    seconds: start.elapsed().as_secs(),
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    fn vm(&self, r: &ObjRef) -> VirtualMachine {
        VirtualMachine::new(self.client.clone(), &r.id)
    }

    async fn run_task(
        &self,
        method: &str,
        op: String,
        call: impl std::future::Future<Output = vim_rs::core::client::Result<ManagedObjectReference>>,
    ) -> Result<Option<VimAny>> {
        self.count(method);
        let task = call.await.map_err(|e| client_error(&op, e))?;
        self.wait(task, &op).await
    }
}

#[async_trait]
impl Vcenter for VimVcenter {
    async fn root_folder(&self) -> Result<ObjRef> {
        Ok(obj(&self.client.service_content().root_folder))
    }

    async fn missing_privileges(
        &self,
        entities: &[ObjRef],
        privileges: &[String],
    ) -> Result<Vec<(ObjRef, Vec<String>)>> {
        let sc = self.client.service_content();
        let (Some(am), Some(sm)) = (
            sc.authorization_manager.as_ref(),
            sc.session_manager.as_ref(),
        ) else {
            return Err(VsphereError::Protocol {
                op: "HasPrivilegeOnEntities".into(),
                message: "vCenter has no AuthorizationManager or SessionManager".into(),
                source: None,
            });
        };
        self.count("RetrievePropertiesEx");
        let session = SessionManager::new(self.client.clone(), &sm.value)
            .current_session()
            .await
            .map_err(|e| client_error("reading the current session", e))?
            .ok_or_else(|| VsphereError::Protocol {
                op: "reading the current session".into(),
                message: "no current session".into(),
                source: None,
            })?;
        let mos: Vec<ManagedObjectReference> = entities.iter().map(mo).collect();
        self.count("HasPrivilegeOnEntities");
        let answer = AuthorizationManager::new(self.client.clone(), &am.value)
            .has_privilege_on_entities(&mos, &session.key, Some(privileges))
            .await
            .map_err(|e| client_error("HasPrivilegeOnEntities", e))?
            .unwrap_or_default();
        Ok(answer
            .into_iter()
            .map(|ep| {
                let missing: Vec<String> = ep
                    .priv_availability
                    .into_iter()
                    .filter(|p| !p.is_granted)
                    .map(|p| p.priv_id)
                    .collect();
                (obj(&ep.entity), missing)
            })
            .filter(|(_, m)| !m.is_empty())
            .collect())
    }

    async fn datastore_free(&self, datastore: &ObjRef) -> Result<Option<u64>> {
        let rows = self
            .retrieve(
                vec![ObjectSpec {
                    obj: mo(datastore),
                    skip: Some(false),
                    select_set: None,
                }],
                MoTypesEnum::Datastore,
                &["summary.freeSpace"],
                "reading a datastore's free space",
            )
            .await?;
        Ok(rows
            .into_iter()
            .flat_map(|r| r.prop_set.unwrap_or_default())
            .find(|p| p.name == "summary.freeSpace")
            .and_then(|p| int(p.val))
            .and_then(|v| u64::try_from(v).ok()))
    }

    async fn find_by_path(&self, path: &str) -> Result<Option<ObjRef>> {
        let Some(si) = self.client.service_content().search_index.as_ref() else {
            return Err(VsphereError::Protocol {
                op: "FindByInventoryPath".into(),
                message: "vCenter has no SearchIndex".into(),
                source: None,
            });
        };
        self.count("FindByInventoryPath");
        match SearchIndex::new(self.client.clone(), &si.value)
            .find_by_inventory_path(path)
            .await
        {
            Ok(r) => Ok(r.as_ref().map(obj)),
            Err(e) if is_empty_answer(&e) => Ok(None),
            Err(e) => Err(client_error(&format!("FindByInventoryPath({path})"), e)),
        }
    }

    async fn nic_backing(&self, network: &ObjRef, name: &str) -> Result<NicBacking> {
        if network.kind != "DistributedVirtualPortgroup" {
            return Ok(NicBacking::Network {
                name: name.to_string(),
                network: network.clone(),
            });
        }
        let op = format!("reading port group {name}");
        let rows = self
            .retrieve(
                vec![ObjectSpec {
                    obj: mo(network),
                    skip: Some(false),
                    select_set: None,
                }],
                MoTypesEnum::DistributedVirtualPortgroup,
                &["key", "config.distributedVirtualSwitch"],
                &op,
            )
            .await?;
        let mut key = None;
        let mut switch = None;
        for p in rows
            .into_iter()
            .flat_map(|r| r.prop_set.unwrap_or_default())
        {
            match p.name.as_str() {
                "key" => key = text(p.val),
                "config.distributedVirtualSwitch" => switch = mo_value(p.val),
                _ => {}
            }
        }
        let (Some(key), Some(switch)) = (key, switch) else {
            return Err(VsphereError::Protocol {
                op,
                message: "port group without key or switch".into(),
                source: None,
            });
        };
        let rows = self
            .retrieve(
                vec![ObjectSpec {
                    obj: mo(&switch),
                    skip: Some(false),
                    select_set: None,
                }],
                MoTypesEnum::from_str(&switch.kind),
                &["uuid"],
                &op,
            )
            .await?;
        let uuid = rows
            .into_iter()
            .flat_map(|r| r.prop_set.unwrap_or_default())
            .find(|p| p.name == "uuid")
            .and_then(|p| text(p.val))
            .ok_or_else(|| VsphereError::Protocol {
                op,
                message: "distributed switch without uuid".into(),
                source: None,
            })?;
        Ok(NicBacking::DistributedPortgroup {
            switch_uuid: uuid,
            portgroup_key: key,
        })
    }

    async fn template_devices(&self, template: &ObjRef) -> Result<TemplateDevices> {
        let details = self
            .retrieve(
                vec![ObjectSpec {
                    obj: mo(template),
                    skip: Some(false),
                    select_set: None,
                }],
                MoTypesEnum::VirtualMachine,
                &["config.hardware.device"],
                &format!("reading template {template}"),
            )
            .await?;
        let mut out = TemplateDevices::default();
        for p in details
            .into_iter()
            .flat_map(|r| r.prop_set.unwrap_or_default())
        {
            if let VimAny::Value(ValueElements::ArrayOfVirtualDevice(devices)) = p.val {
                for d in devices {
                    devices_into(&mut out, d);
                }
            }
        }
        Ok(out)
    }

    async fn list_vms(&self, folders: &[ObjRef]) -> Result<Vec<VmSummary>> {
        let objects = folders
            .iter()
            .map(|f| ObjectSpec {
                obj: mo(f),
                skip: Some(true),
                select_set: Some(folder_traversal()),
            })
            .collect();
        let rows = self
            .retrieve(
                objects,
                MoTypesEnum::VirtualMachine,
                LIST_PATHS,
                "listing VMs",
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let mut vm = VmSummary {
                    vm: obj(&r.obj),
                    name: String::new(),
                    power: PowerState::Off,
                    ip: None,
                    fields: BTreeMap::new(),
                    template: false,
                    folder: None,
                };
                for p in r.prop_set.unwrap_or_default() {
                    match (p.name.as_str(), p.val) {
                        ("name", v) => vm.name = text(v).unwrap_or_default(),
                        ("parent", v) => vm.folder = mo_value(v),
                        (
                            "runtime.powerState",
                            VimAny::Value(ValueElements::VirtualMachinePowerState(s)),
                        ) => vm.power = power(&s),
                        ("guest.ipAddress", v) => vm.ip = text(v).filter(|s| !s.is_empty()),
                        (
                            "customValue",
                            VimAny::Value(ValueElements::ArrayOfCustomFieldValue(l)),
                        ) => vm.fields = custom_values(l),
                        ("config.template", VimAny::Value(ValueElements::PrimitiveBoolean(b))) => {
                            vm.template = b
                        }
                        _ => {}
                    }
                }
                vm
            })
            .collect())
    }

    async fn vm_details(&self, vm: &ObjRef) -> Result<Option<VmDetails>> {
        let rows = match self
            .retrieve(
                vec![ObjectSpec {
                    obj: mo(vm),
                    skip: Some(false),
                    select_set: None,
                }],
                MoTypesEnum::VirtualMachine,
                DETAIL_PATHS,
                &format!("reading VM {vm}"),
            )
            .await
        {
            Ok(r) => r,
            Err(e) if e.is_gone() => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let mut d = VmDetails::default();
        for p in row.prop_set.unwrap_or_default() {
            match (p.name.as_str(), p.val) {
                ("name", v) => d.name = text(v).unwrap_or_default(),
                ("parent", v) => d.folder = mo_value(v),
                ("resourcePool", v) => d.resource_pool = mo_value(v),
                ("datastore", v) => d.datastores = mo_list(v),
                ("network", v) => d.networks = mo_list(v),
                ("config.hardware.numCPU", v) => d.cpus = int(v).unwrap_or_default() as i32,
                ("config.hardware.memoryMB", v) => d.memory_mb = int(v).unwrap_or_default() as i32,
                (
                    "config.hardware.device",
                    VimAny::Value(ValueElements::ArrayOfVirtualDevice(l)),
                ) => {
                    let mut t = TemplateDevices::default();
                    for dev in l {
                        devices_into(&mut t, dev);
                    }
                    d.disk = t.disk;
                }
                ("config.extraConfig", VimAny::Value(ValueElements::ArrayOfOptionValue(l))) => {
                    for o in l {
                        let o = o.get_option_value();
                        if let Some(v) = o.value.as_ref().and_then(|v| match v {
                            VimAny::Value(ValueElements::PrimitiveString(s)) => Some(s.clone()),
                            _ => None,
                        }) {
                            d.extra_config.insert(o.key.clone(), v);
                        }
                    }
                }
                (
                    "runtime.powerState",
                    VimAny::Value(ValueElements::VirtualMachinePowerState(s)),
                ) => d.power = Some(power(&s)),
                ("customValue", VimAny::Value(ValueElements::ArrayOfCustomFieldValue(l))) => {
                    d.fields = custom_values(l)
                }
                _ => {}
            }
        }
        Ok(Some(d))
    }

    async fn custom_field(&self, name: &str) -> Result<i32> {
        let Some(cfm) = self.client.service_content().custom_fields_manager.as_ref() else {
            return Err(VsphereError::Protocol {
                op: "CustomFieldsManager".into(),
                message: "vCenter has no CustomFieldsManager (custom attributes need vCenter, not a lone ESXi host)".into(),
                source: None,
            });
        };
        let m = CustomFieldsManager::new(self.client.clone(), &cfm.value);
        self.count("RetrievePropertiesEx");
        let existing = match m.field().await {
            Ok(f) => f.unwrap_or_default(),
            Err(e) if is_empty_answer(&e) => Vec::new(),
            Err(e) => return Err(client_error("reading custom attributes", e)),
        };
        if let Some(f) = existing.iter().find(|f| {
            f.name == name
                && f.managed_object_type
                    .as_deref()
                    .is_none_or(|t| t == "VirtualMachine")
        }) {
            return Ok(f.key);
        }
        self.count("AddCustomFieldDef");
        match m
            .add_custom_field_def(name, Some("VirtualMachine"), None, None)
            .await
        {
            Ok(def) => Ok(def.key),
            Err(e) => {
                let e = client_error(&format!("AddCustomFieldDef({name})"), e);
                if e.fault() == Some("DuplicateName") {
                    // Another process created it meanwhile.
                    self.count("RetrievePropertiesEx");
                    let again = m.field().await.ok().flatten().unwrap_or_default();
                    if let Some(f) = again.iter().find(|f| f.name == name) {
                        return Ok(f.key);
                    }
                }
                Err(e)
            }
        }
    }

    async fn set_field(&self, vm: &ObjRef, key: i32, value: &str) -> Result<()> {
        let Some(cfm) = self.client.service_content().custom_fields_manager.as_ref() else {
            return Err(VsphereError::Protocol {
                op: "SetField".into(),
                message: "vCenter has no CustomFieldsManager".into(),
                source: None,
            });
        };
        self.count("SetField");
        CustomFieldsManager::new(self.client.clone(), &cfm.value)
            .set_field(&mo(vm), key, value)
            .await
            .map_err(|e| client_error(&format!("SetField({vm})"), e))
    }

    async fn clone_vm(&self, spec: &CloneSpec) -> Result<ObjRef> {
        let config = VirtualMachineConfigSpec {
            num_cp_us: Some(spec.cpus),
            memory_mb: Some(spec.memory_mb),
            annotation: Some(spec.annotation.clone()),
            extra_config: extra_config(&spec.extra_config),
            device_change: Some(device_changes(spec)),
            ..Default::default()
        };
        let clone = VirtualMachineCloneSpec {
            location: VirtualMachineRelocateSpec {
                pool: Some(mo(&spec.pool)),
                datastore: Some(mo(&spec.datastore)),
                folder: Some(mo(&spec.folder)),
                ..Default::default()
            },
            template: false,
            config: Some(config),
            power_on: false,
            ..Default::default()
        };
        let op = format!("CloneVM_Task({})", spec.name);
        let result = self
            .run_task(
                "CloneVM_Task",
                op.clone(),
                self.vm(&spec.template)
                    .clone_vm_task(&mo(&spec.folder), &spec.name, &clone),
            )
            .await?;
        let vm = result
            .and_then(mo_value)
            .ok_or_else(|| VsphereError::Protocol {
                op: op.clone(),
                message: "the clone task returned no VM".into(),
                source: None,
            })?;
        // Old vcsim's clone kept the template's hardware (real vCenter applies the clone's
        // config): read it back and fix what differs; the disk is grown on the clone's own
        // disk either way.
        let d = self
            .vm_details(&vm)
            .await?
            .ok_or_else(|| VsphereError::Protocol {
                op: op.clone(),
                message: "the cloned VM vanished".into(),
                source: None,
            })?;
        let grow = match (&d.disk, spec.disk_gb) {
            (Some(disk), Some(gb)) if i64::from(gb) * 1024 * 1024 > disk.capacity_kb => {
                Some((disk.clone(), i64::from(gb) * 1024 * 1024))
            }
            _ => None,
        };
        if d.cpus != spec.cpus || i64::from(d.memory_mb) != spec.memory_mb || grow.is_some() {
            self.reconfigure(
                &vm,
                &Reconfigure {
                    cpus: Some(spec.cpus),
                    memory_mb: Some(spec.memory_mb),
                    annotation: Some(spec.annotation.clone()),
                    disk: grow,
                    extra_config: Vec::new(),
                },
            )
            .await?;
        }
        Ok(vm)
    }

    async fn reconfigure(&self, vm: &ObjRef, change: &Reconfigure) -> Result<()> {
        let spec = VirtualMachineConfigSpec {
            num_cp_us: change.cpus,
            memory_mb: change.memory_mb,
            annotation: change.annotation.clone(),
            extra_config: extra_config(&change.extra_config),
            device_change: change
                .disk
                .as_ref()
                .map(|(disk, kb)| vec![disk_edit(disk, *kb)]),
            ..Default::default()
        };
        self.run_task(
            "ReconfigVM_Task",
            format!("ReconfigVM_Task({vm})"),
            self.vm(vm).reconfig_vm_task(&spec),
        )
        .await
        .map(|_| ())
    }

    async fn power_on(&self, vm: &ObjRef) -> Result<()> {
        match self
            .run_task(
                "PowerOnVM_Task",
                format!("PowerOnVM_Task({vm})"),
                self.vm(vm).power_on_vm_task(None),
            )
            .await
        {
            Err(e) if e.fault() == Some("InvalidPowerState") => Ok(()),
            other => other.map(|_| ()),
        }
    }

    async fn power_off(&self, vm: &ObjRef) -> Result<()> {
        match self
            .run_task(
                "PowerOffVM_Task",
                format!("PowerOffVM_Task({vm})"),
                self.vm(vm).power_off_vm_task(),
            )
            .await
        {
            Err(e) if e.fault() == Some("InvalidPowerState") || e.is_gone() => Ok(()),
            other => other.map(|_| ()),
        }
    }

    async fn destroy(&self, vm: &ObjRef) -> Result<()> {
        match self
            .run_task(
                "Destroy_Task",
                format!("Destroy_Task({vm})"),
                self.vm(vm).destroy_task(),
            )
            .await
        {
            Err(e) if e.is_gone() => Ok(()),
            other => other.map(|_| ()),
        }
    }

    fn calls(&self) -> CallCounts {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

fn devices_into(out: &mut TemplateDevices, d: Box<dyn VirtualDeviceTrait>) {
    if let Some(disk) = d.as_any_ref().downcast_ref::<VirtualDisk>() {
        if out.disk.is_none() {
            let file_name = disk
                .virtual_device_
                .backing
                .as_ref()
                .and_then(|b| {
                    b.as_any_ref()
                        .downcast_ref::<VirtualDiskFlatVer2BackingInfo>()
                        .map(|f| f.virtual_device_file_backing_info_.file_name.clone())
                })
                .unwrap_or_default();
            out.disk = Some(TemplateDisk {
                key: disk.virtual_device_.key,
                controller_key: disk.virtual_device_.controller_key,
                unit_number: disk.virtual_device_.unit_number,
                capacity_kb: disk.capacity_in_kb,
                file_name,
            });
        }
        return;
    }
    let key = d.key;
    let eth: Option<&dyn VirtualEthernetCardTrait> = d.as_ref().into_ref();
    if let Some(eth) = eth {
        let backing = eth
            .get_virtual_ethernet_card()
            .virtual_device_
            .backing
            .as_deref()
            .and_then(nic_backing_of);
        out.nics.push((key, backing));
    }
}

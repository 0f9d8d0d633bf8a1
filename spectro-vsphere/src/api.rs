//! The small vCenter API this provider needs, as a trait of its own.
//!
//! Everything vim_rs-specific (SOAP quirks, task polling, vcsim workarounds) lives behind
//! [`Vcenter`] in [`crate::vim`]; the provider above it speaks only these types. A gateway
//! process can implement the same trait over its own connection.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::error::Result;

/// A managed object reference: type and id (`VirtualMachine` / `vm-42`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjRef {
    /// Managed object type, e.g. `VirtualMachine`, `Folder`, `ResourcePool`.
    pub kind: String,
    /// Managed object id, e.g. `vm-42`.
    pub id: String,
}

impl std::fmt::Display for ObjRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.id)
    }
}

/// A VM's power state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerState {
    /// Running.
    On,
    /// Stopped (or never started).
    Off,
    /// Suspended.
    Suspended,
}

/// One VM as the listing query returns it: only what reconcile needs, in one round trip.
#[derive(Debug, Clone, PartialEq)]
pub struct VmSummary {
    /// The VM.
    pub vm: ObjRef,
    /// Its name.
    pub name: String,
    /// Power state.
    pub power: PowerState,
    /// The address VMware Tools reports, once the guest is up.
    pub ip: Option<String>,
    /// Custom attribute values by field key.
    pub fields: BTreeMap<i32, String>,
    /// True for templates.
    pub template: bool,
    /// The folder it is in.
    pub folder: Option<ObjRef>,
}

/// Everything about one VM (for adoption after a crash, and for tests/inspection).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VmDetails {
    /// Its name.
    pub name: String,
    /// The folder it is in.
    pub folder: Option<ObjRef>,
    /// Its resource pool.
    pub resource_pool: Option<ObjRef>,
    /// Datastores holding its files.
    pub datastores: Vec<ObjRef>,
    /// Networks its NICs connect to.
    pub networks: Vec<ObjRef>,
    /// vCPUs.
    pub cpus: i32,
    /// Memory in MB.
    pub memory_mb: i32,
    /// Its first disk.
    pub disk: Option<TemplateDisk>,
    /// `config.extraConfig` (guestinfo.* and spectro.*).
    pub extra_config: BTreeMap<String, String>,
    /// Power state.
    pub power: Option<PowerState>,
    /// Custom attribute values by field key.
    pub fields: BTreeMap<i32, String>,
}

/// How a NIC connects: a standard port group or a distributed port group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NicBacking {
    /// A standard network (port group on host switches).
    Network {
        /// Its name.
        name: String,
        /// Its reference.
        network: ObjRef,
    },
    /// A distributed virtual port group.
    DistributedPortgroup {
        /// The distributed switch's UUID.
        switch_uuid: String,
        /// The port group key.
        portgroup_key: String,
    },
}

/// A template's devices that a clone replaces or resizes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TemplateDevices {
    /// NICs (key, backing) to remove: clones get exactly one NIC on the placement's network.
    pub nics: Vec<(i32, Option<NicBacking>)>,
    /// The first disk: key, controller key, unit number, capacity in KB, file name.
    pub disk: Option<TemplateDisk>,
}

/// A template's first disk.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateDisk {
    /// Device key.
    pub key: i32,
    /// Controller key.
    pub controller_key: Option<i32>,
    /// Unit number.
    pub unit_number: Option<i32>,
    /// Capacity in KB.
    pub capacity_kb: i64,
    /// Backing file.
    pub file_name: String,
}

/// One clone: where, what size, which network, what guestinfo.
#[derive(Debug, Clone)]
pub struct CloneSpec {
    /// Source template (or VM).
    pub template: ObjRef,
    /// The template's devices (NICs to replace, disk to grow).
    pub devices: TemplateDevices,
    /// Destination folder.
    pub folder: ObjRef,
    /// VM name (unique in the folder: vCenter refuses a duplicate, which makes a retried
    /// clone safe).
    pub name: String,
    /// Resource pool.
    pub pool: ObjRef,
    /// Datastore.
    pub datastore: ObjRef,
    /// Network of the one NIC.
    pub nic: NicBacking,
    /// vCPUs.
    pub cpus: i32,
    /// Memory in MB.
    pub memory_mb: i64,
    /// Disk size in GB (the first disk is grown to it when the template's is smaller).
    pub disk_gb: Option<u32>,
    /// `extraConfig` set atomically with the clone (guestinfo.userdata, metadata,
    /// ownership).
    pub extra_config: Vec<(String, String)>,
    /// The VM's notes.
    pub annotation: String,
}

/// A change of an existing VM.
#[derive(Debug, Clone, Default)]
pub struct Reconfigure {
    /// vCPUs.
    pub cpus: Option<i32>,
    /// Memory in MB.
    pub memory_mb: Option<i64>,
    /// Notes.
    pub annotation: Option<String>,
    /// Grow this disk to this many KB.
    pub disk: Option<(TemplateDisk, i64)>,
    /// extraConfig entries to set.
    pub extra_config: Vec<(String, String)>,
}

/// Call counters, by vSphere method name.
pub type CallCounts = BTreeMap<String, u64>;

/// What the provider asks of a vCenter. One implementation talks SOAP through vim_rs
/// ([`crate::vim::VimVcenter`]); every method is one logical call (tasks are waited for).
#[async_trait]
pub trait Vcenter: Send + Sync {
    /// The object at an inventory path (`DC0/vm/folder`), if any.
    async fn find_by_path(&self, path: &str) -> Result<Option<ObjRef>>;

    /// How a NIC attaches to this network (reads the distributed switch for port groups).
    async fn nic_backing(&self, network: &ObjRef, name: &str) -> Result<NicBacking>;

    /// The devices of a template that a clone replaces.
    async fn template_devices(&self, template: &ObjRef) -> Result<TemplateDevices>;

    /// Every VM under these folders (recursively), in one property-collector query.
    async fn list_vms(&self, folders: &[ObjRef]) -> Result<Vec<VmSummary>>;

    /// One VM's details; `None` when it no longer exists.
    async fn vm_details(&self, vm: &ObjRef) -> Result<Option<VmDetails>>;

    /// The key of the custom attribute `name` for VMs, created when missing.
    async fn custom_field(&self, name: &str) -> Result<i32>;

    /// Sets a custom attribute on a VM.
    async fn set_field(&self, vm: &ObjRef, key: i32, value: &str) -> Result<()>;

    /// Clones a VM and waits for the task; returns the new VM (hardware as asked, powered
    /// off).
    async fn clone_vm(&self, spec: &CloneSpec) -> Result<ObjRef>;

    /// Reconfigures a VM and waits for the task.
    async fn reconfigure(&self, vm: &ObjRef, change: &Reconfigure) -> Result<()>;

    /// Powers a VM on (already on is fine).
    async fn power_on(&self, vm: &ObjRef) -> Result<()>;

    /// Powers a VM off (already off is fine).
    async fn power_off(&self, vm: &ObjRef) -> Result<()>;

    /// Destroys a VM and its disks (already gone is fine).
    async fn destroy(&self, vm: &ObjRef) -> Result<()>;

    /// The inventory's root folder (where vCenter-wide privileges are granted).
    async fn root_folder(&self) -> Result<ObjRef>;

    /// Which of `privileges` the session's user lacks on each of `entities`
    /// (HasPrivilegeOnEntities): only entities with something missing are listed.
    async fn missing_privileges(
        &self,
        entities: &[ObjRef],
        privileges: &[String],
    ) -> Result<Vec<(ObjRef, Vec<String>)>>;

    /// A datastore's free space, in bytes (`summary.freeSpace`).
    async fn datastore_free(&self, datastore: &ObjRef) -> Result<Option<u64>>;

    /// Calls made so far, by vSphere method (RetrievePropertiesEx, CloneVM_Task, ...).
    fn calls(&self) -> CallCounts;
}

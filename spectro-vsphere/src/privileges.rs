//! The vSphere privileges the platform needs (the reference documentation's *Permissions*
//! table, by privilege id), grouped by the object they are checked on. Two the table omits
//! and the provider uses are added: `VirtualMachine.Config.Memory` (clones get the pool's
//! memory) and `Global.SetCustomField` / `Global.ManageCustomFields` (ownership attributes).
//!
//! A pre-check fails on a missing privilege the provider's calls need ([`USED`]); the rest
//! of the documented role, when not granted, is reported without blocking.

/// Checked on the root folder (vCenter-wide).
pub const VCENTER: &[&str] = &[
    "Sessions.ValidateSession",
    "StorageViews.View",
    "Task.Create",
    "Task.Update",
    "InventoryService.Tagging.CreateTag",
    "InventoryService.Tagging.EditTag",
    "Global.ManageCustomFields",
    "Global.SetCustomField",
];

/// Checked on each datastore of a placement.
pub const DATASTORE: &[&str] = &[
    "Datastore.AllocateSpace",
    "Datastore.Browse",
    "Datastore.FileManagement",
    "Datastore.DeleteFile",
    "Datastore.UpdateVirtualMachineFiles",
    "Datastore.UpdateVirtualMachineMetadata",
];

/// Checked on each network (port group) of a placement.
pub const NETWORK: &[&str] = &["Network.Assign"];

/// Checked on each resource pool (compute cluster) of a placement.
pub const RESOURCE_POOL: &[&str] = &[
    "Resource.ApplyRecommendation",
    "Resource.AssignVMToPool",
    "Resource.ColdMigrate",
    "Resource.HotMigrate",
    "Resource.QueryVMotion",
];

/// Checked on the cluster's VM folder.
pub const FOLDER: &[&str] = &[
    "Folder.Create",
    "Folder.Delete",
    "Folder.Move",
    "Folder.Rename",
];

/// Virtual machine and vApp privileges: checked on the VM folder and on each resource pool.
pub const VIRTUAL_MACHINE: &[&str] = &[
    "VirtualMachine.Config.AddExistingDisk",
    "VirtualMachine.Config.AddNewDisk",
    "VirtualMachine.Config.AddRemoveDevice",
    "VirtualMachine.Config.AdvancedConfig",
    "VirtualMachine.Config.CPUCount",
    "VirtualMachine.Config.Memory",
    "VirtualMachine.Config.Resource",
    "VirtualMachine.Config.ManagedBy",
    "VirtualMachine.Config.MksControl",
    "VirtualMachine.Config.DiskExtend",
    "VirtualMachine.Config.EditDevice",
    "VirtualMachine.Config.QueryFTCompatibility",
    "VirtualMachine.Config.QueryUnownedFiles",
    "VirtualMachine.Config.ReloadFromPath",
    "VirtualMachine.Config.RemoveDisk",
    "VirtualMachine.Config.Rename",
    "VirtualMachine.Config.ResetGuestInfo",
    "VirtualMachine.Config.Annotation",
    "VirtualMachine.Config.ToggleForkParent",
    "VirtualMachine.Config.UpgradeVirtualHardware",
    "VirtualMachine.GuestOperations.ModifyAliases",
    "VirtualMachine.GuestOperations.QueryAliases",
    "VirtualMachine.GuestOperations.Modify",
    "VirtualMachine.GuestOperations.Execute",
    "VirtualMachine.GuestOperations.Query",
    "VirtualMachine.Interact.PowerOff",
    "VirtualMachine.Interact.PowerOn",
    "VirtualMachine.Inventory.CreateFromExisting",
    "VirtualMachine.Inventory.Create",
    "VirtualMachine.Inventory.Move",
    "VirtualMachine.Inventory.Delete",
    "VirtualMachine.Provisioning.DiskRandomAccess",
    "VirtualMachine.Provisioning.FileRandomAccess",
    "VirtualMachine.Provisioning.DiskRandomRead",
    "VirtualMachine.Provisioning.GetVmFiles",
    "VirtualMachine.Provisioning.PutVmFiles",
    "VirtualMachine.Provisioning.CloneTemplate",
    "VirtualMachine.Provisioning.Clone",
    "VirtualMachine.Provisioning.CreateTemplateFromVM",
    "VirtualMachine.Provisioning.Customize",
    "VirtualMachine.Provisioning.DeployTemplate",
    "VirtualMachine.Provisioning.MarkAsTemplate",
    "VirtualMachine.Provisioning.MarkAsVM",
    "VirtualMachine.Provisioning.ModifyCustSpecs",
    "VirtualMachine.Provisioning.PromoteDisks",
    "VirtualMachine.Provisioning.ReadCustSpecs",
    "VirtualMachine.Namespace.Event",
    "VirtualMachine.Namespace.EventNotify",
    "VirtualMachine.Namespace.Management",
    "VirtualMachine.Namespace.ModifyContent",
    "VirtualMachine.Namespace.Query",
    "VirtualMachine.Namespace.ReadContent",
    "VirtualMachine.State.CreateSnapshot",
    "VirtualMachine.State.RemoveSnapshot",
    "VirtualMachine.State.RenameSnapshot",
    "VirtualMachine.State.RevertToSnapshot",
    "VirtualMachine.Hbr.ConfigureReplication",
    "VirtualMachine.Hbr.ReplicaManagement",
    "VirtualMachine.Hbr.MonitorReplication",
    "VApp.Import",
    "VApp.ExtractOvfEnvironment",
    "VApp.ApplicationConfig",
    "VApp.InstanceConfig",
];

/// The privileges the provider's own calls need (clone from a template into a folder,
/// resource pool, datastore and network; reconfigure CPU, memory, disks, devices and
/// `extraConfig`; power; destroy; custom attributes): a pre-check fails without them.
pub const USED: &[&str] = &[
    "Global.ManageCustomFields",
    "Global.SetCustomField",
    "Datastore.AllocateSpace",
    "Network.Assign",
    "Resource.AssignVMToPool",
    "VirtualMachine.Inventory.CreateFromExisting",
    "VirtualMachine.Inventory.Delete",
    "VirtualMachine.Provisioning.Clone",
    "VirtualMachine.Provisioning.DeployTemplate",
    "VirtualMachine.Config.CPUCount",
    "VirtualMachine.Config.Memory",
    "VirtualMachine.Config.AddNewDisk",
    "VirtualMachine.Config.DiskExtend",
    "VirtualMachine.Config.EditDevice",
    "VirtualMachine.Config.AddRemoveDevice",
    "VirtualMachine.Config.AdvancedConfig",
    "VirtualMachine.Interact.PowerOn",
    "VirtualMachine.Interact.PowerOff",
];

//! [`VsphereProvider`]: the `CloudProvider` for vCenter.
//!
//! - Placement: datacenter + VM folder per cluster; compute cluster, resource pool,
//!   datastore and network per placement domain (`placement-N`, the engine spreads nodes
//!   round-robin over them). Inventory paths are resolved once per session and cached.
//! - Nodes are clones of the template matching the OS + Kubernetes packs, with CPU, memory
//!   and disk from the pool, one NIC on the domain's network, cloud-init user data and
//!   network metadata in `guestinfo.*`, and ownership in `extraConfig` (atomic with the
//!   clone) and in two custom attributes (`spectro.io/cluster-id`, `spectro.io/machine`)
//!   that the listing reads.
//! - Observation: one property-collector query over the cluster's folder per listing; the
//!   fleet listing (`fleet()` = the vCenter) is one query over the whole inventory for
//!   every cluster of the vCenter, read by the custom attributes (a cluster with a VM whose
//!   attributes are not complete, or whose VMs are not in one folder, is left out of it
//!   and lists its own folder).
//! - API endpoint: the VIP (static IPs) or an HAProxy VM (DHCP) whose backends the provider
//!   keeps current through guestinfo.
//! - Sessions are reused per (vCenter, user); vCenter tasks are limited per vCenter.
//!
//! A create interrupted by a crash leaves a VM with the ownership extraConfig but possibly
//! without its attributes or power: the listing and the retried create both find it by name
//! in the folder, check the extraConfig and finish it instead of cloning again.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use spectro_core::bootstrap::{proxy_cloud_config, KubernetesSettings};
use spectro_core::model::PoolRole;
use spectro_core::model::{CloudAccount, CloudPlacement, CloudType, Credentials, IpAllocation};
use spectro_core::precheck::{Precheck, Shortfall};
use spectro_core::provider::{
    CloudProvider, CloudResource, ClusterContext, ClusterId, DeleteStatus, ImageRef, ImageSpec,
    InfraStatus, Machine, MachineBatch, MachineState, ProviderError,
};
use tokio::sync::{OnceCell, Semaphore};

use crate::api::{
    CloneSpec, NicBacking, ObjRef, PowerState, Reconfigure, TemplateDevices, Vcenter, VmSummary,
};
use crate::error::{Result, VsphereError};
use crate::guestinfo;
use crate::vim::{Connection, VimVcenter};

/// Custom attribute carrying the owning cluster's id.
pub const FIELD_CLUSTER_ID: &str = "spectro.io/cluster-id";
/// Custom attribute carrying the machine mark (JSON).
pub const FIELD_MACHINE: &str = "spectro.io/machine";

/// Provider settings.
#[derive(Debug, Clone)]
pub struct VsphereConfig {
    /// At most this many vCenter tasks (clone, reconfigure, power, destroy) run at once per
    /// vCenter, across all clusters.
    pub max_concurrent_tasks: usize,
    /// vCPUs of the load-balancer VM (DHCP clusters).
    pub lb_cpus: i32,
    /// Memory of the load-balancer VM, in MB.
    pub lb_memory_mb: i64,
}

impl Default for VsphereConfig {
    fn default() -> Self {
        VsphereConfig {
            max_concurrent_tasks: 8,
            lb_cpus: 2,
            lb_memory_mb: 2048,
        }
    }
}

/// The mark of a VM of a cluster, in the `spectro.io/machine` attribute and in extraConfig.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineMark {
    /// `node` or `load-balancer`.
    pub kind: String,
    /// Node pool.
    #[serde(default)]
    pub pool: String,
    /// Role of the pool.
    #[serde(default = "worker")]
    pub role: PoolRole,
    /// Placement domain (`placement-N`).
    #[serde(default)]
    pub zone: String,
    /// Shape hash.
    #[serde(default)]
    pub shape: String,
    /// Idempotency token of the create.
    #[serde(default)]
    pub token: String,
    /// Static address, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// Creation time (RFC 3339).
    #[serde(default)]
    pub created: String,
    /// The vCPUs, memory (MB) and disk (GB) the VM must have before it first boots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<(i32, i64, Option<u32>)>,
    /// Load balancer: the backends last written to its guestinfo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<String>,
}

fn worker() -> PoolRole {
    PoolRole::Worker
}

const KIND_NODE: &str = "node";
const KIND_LB: &str = "load-balancer";

/// One logged-in vCenter: the session, its task limit and its caches.
struct Session {
    vc: Arc<dyn Vcenter>,
    /// Shared by every session on the same vCenter.
    tasks: Arc<Semaphore>,
    paths: Mutex<HashMap<String, ObjRef>>,
    backings: Mutex<HashMap<ObjRef, NicBacking>>,
    templates: Mutex<HashMap<ObjRef, TemplateDevices>>,
    fields: OnceCell<(i32, i32)>,
}

/// Sessions are shared only by accounts with the same vCenter, user, password and TLS
/// policy (the password enters as a hash, kept in memory only).
type SessionKey = (String, String, u64, bool);

fn session_key(c: &Connection) -> SessionKey {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    c.password.hash(&mut h);
    (c.host.clone(), c.user.clone(), h.finish(), c.insecure)
}

/// A VM of the cluster as the listing found it.
#[derive(Debug, Clone)]
struct Owned {
    vm: VmSummary,
    mark: MachineMark,
    /// Ownership attributes are set (else: found by extraConfig after a crash).
    marked: bool,
}

/// The vSphere provider.
pub struct VsphereProvider {
    config: VsphereConfig,
    sessions: tokio::sync::Mutex<HashMap<SessionKey, Arc<Session>>>,
    task_limits: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Default for VsphereProvider {
    fn default() -> Self {
        Self::new(VsphereConfig::default())
    }
}

impl std::fmt::Debug for VsphereProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VsphereProvider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn invalid(field: &str, rule: &str) -> VsphereError {
    VsphereError::Invalid {
        field: field.into(),
        rule: rule.into(),
    }
}

/// Inventory path of a VM folder: absolute (`/DC0/vm/x`), under the datacenter (`vm/x`), or
/// under its VM folder (`x`).
pub fn folder_path(dc: &str, folder: &str) -> String {
    let f = folder.trim_end_matches('/');
    if let Some(abs) = f.strip_prefix('/') {
        abs.to_string()
    } else if f.is_empty() || f == "vm" {
        format!("{dc}/vm")
    } else if f.starts_with("vm/") {
        format!("{dc}/{f}")
    } else {
        format!("{dc}/vm/{f}")
    }
}

/// Inventory path of a resource pool of a compute cluster (empty: the cluster's root pool).
pub fn pool_path(dc: &str, cluster: &str, pool: &str) -> String {
    let p = pool.trim_matches('/');
    if p.is_empty() || p == "Resources" {
        format!("{dc}/host/{cluster}/Resources")
    } else if p.starts_with("Resources/") {
        format!("{dc}/host/{cluster}/{p}")
    } else {
        format!("{dc}/host/{cluster}/Resources/{p}")
    }
}

/// Inventory path of a template named by an image id: a path, or a name in the VM folder.
pub fn template_path(dc: &str, image: &str) -> String {
    if let Some(abs) = image.strip_prefix('/') {
        abs.to_string()
    } else if image.contains('/') {
        format!("{dc}/{image}")
    } else {
        format!("{dc}/vm/{image}")
    }
}

/// The template a profile uses when its OS pack names none: `spectro-templates/<os>-<ver>-<k8s>-<ver>`.
pub fn default_template(spec: &ImageSpec) -> String {
    format!(
        "vm/spectro-templates/{}-{}-{}-{}",
        spec.os.name, spec.os.version, spec.kubernetes.name, spec.kubernetes.version
    )
}

struct Placement<'a> {
    dc: &'a str,
    folder: &'a str,
    ip: IpAllocation,
}

fn placement(ctx: &ClusterContext) -> Result<Placement<'_>> {
    match &ctx.spec.cloud {
        CloudPlacement::Vsphere(v) => Ok(Placement {
            dc: &v.datacenter,
            folder: &v.folder,
            ip: v.ip_allocation,
        }),
        _ => Err(invalid("cloud", "is not a vSphere placement")),
    }
}

fn connection(account: &CloudAccount) -> Result<Connection> {
    match &account.credentials {
        Credentials::Vsphere(c) => Ok(Connection {
            host: c.vcenter_host.clone(),
            user: c.username.clone(),
            password: c.password.expose().to_string(),
            insecure: c.insecure,
        }),
        _ => Err(invalid("credentials", "are not vSphere credentials")),
    }
}

/// A marked VM is complete and was powered on (the mark is set last), so one found off or
/// suspended was stopped by someone, or is half-deleted: Failed, which makes the engine
/// delete (again) and replace it.
fn state_of(vm: &VmSummary) -> MachineState {
    match vm.power {
        PowerState::On => MachineState::Running,
        PowerState::Off | PowerState::Suspended => MachineState::Failed,
    }
}

fn machine_of(o: &Owned) -> Machine {
    Machine {
        id: o.vm.vm.id.clone(),
        name: o.vm.name.clone(),
        pool: o.mark.pool.clone(),
        role: o.mark.role,
        zone: o.mark.zone.clone(),
        shape: o.mark.shape.clone(),
        token: o.mark.token.clone(),
        state: state_of(&o.vm),
        address: o
            .mark
            .address
            .or_else(|| o.vm.ip.as_deref().and_then(|a| a.parse().ok())),
        created_at: chrono::DateTime::parse_from_rfc3339(&o.mark.created)
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or_default(),
    }
}

impl VsphereProvider {
    /// A provider with these settings.
    pub fn new(config: VsphereConfig) -> Self {
        VsphereProvider {
            config,
            sessions: tokio::sync::Mutex::new(HashMap::new()),
            task_limits: Mutex::new(HashMap::new()),
        }
    }

    /// Uses `vc` for the account's vCenter instead of logging in (a gateway's own
    /// connection, or a test double).
    pub async fn attach(&self, account: &CloudAccount, vc: Arc<dyn Vcenter>) -> Result<()> {
        let c = connection(account)?;
        let session = Arc::new(self.session_for(&c.host, vc));
        self.sessions.lock().await.insert(session_key(&c), session);
        Ok(())
    }

    fn session_for(&self, host: &str, vc: Arc<dyn Vcenter>) -> Session {
        let tasks = self
            .task_limits
            .lock()
            .map(|mut m| {
                m.entry(host.to_string())
                    .or_insert_with(|| {
                        Arc::new(Semaphore::new(self.config.max_concurrent_tasks.max(1)))
                    })
                    .clone()
            })
            .unwrap_or_else(|_| Arc::new(Semaphore::new(1)));
        Session {
            vc,
            tasks,
            paths: Mutex::new(HashMap::new()),
            backings: Mutex::new(HashMap::new()),
            templates: Mutex::new(HashMap::new()),
            fields: OnceCell::new(),
        }
    }

    /// vCenter calls made so far for this account, by method.
    pub async fn calls(&self, account: &CloudAccount) -> BTreeMap<String, u64> {
        let Ok(c) = connection(account) else {
            return BTreeMap::new();
        };
        match self.sessions.lock().await.get(&session_key(&c)) {
            Some(s) => s.vc.calls(),
            None => BTreeMap::new(),
        }
    }

    /// The session for an account: reused, or logged in once (outside the lock, so a slow
    /// vCenter never blocks the others).
    async fn session(&self, account: &CloudAccount) -> Result<Arc<Session>> {
        let c = connection(account)?;
        let key = session_key(&c);
        if let Some(s) = self.sessions.lock().await.get(&key) {
            return Ok(s.clone());
        }
        let vc = VimVcenter::connect(&c).await?;
        let fresh = Arc::new(self.session_for(&c.host, Arc::new(vc)));
        Ok(self
            .sessions
            .lock()
            .await
            .entry(key)
            .or_insert(fresh)
            .clone())
    }

    /// Forgets a session whose login expired, so the next call logs in again; forgets the
    /// cached inventory when an object is gone (a republished template, a renamed network),
    /// so the next attempt resolves it again.
    async fn on_error<T>(&self, account: &CloudAccount, r: Result<T>) -> Result<T, ProviderError> {
        let Err(e) = r else {
            return r.map_err(ProviderError::from);
        };
        let Ok(c) = connection(account) else {
            return Err(e.into());
        };
        let key = session_key(&c);
        if matches!(e.fault(), Some("NotAuthenticated")) || matches!(e, VsphereError::Login { .. })
        {
            self.sessions.lock().await.remove(&key);
        } else if e.is_gone() {
            if let Some(s) = self.sessions.lock().await.get(&key) {
                s.forget_inventory();
            }
            return Err(ProviderError::retryable(format!(
                "{e} (inventory cache dropped; resolving again)"
            ))
            .with_source(e));
        }
        Err(e.into())
    }
}

impl Session {
    fn forget_inventory(&self) {
        if let Ok(mut m) = self.paths.lock() {
            m.clear();
        }
        if let Ok(mut m) = self.backings.lock() {
            m.clear();
        }
        if let Ok(mut m) = self.templates.lock() {
            m.clear();
        }
    }

    async fn resolve(&self, kind: &'static str, path: String, field: &str) -> Result<ObjRef> {
        if let Some(r) = self.paths.lock().ok().and_then(|p| p.get(&path).cloned()) {
            return Ok(r);
        }
        match self.vc.find_by_path(&path).await? {
            Some(r) => {
                if let Ok(mut p) = self.paths.lock() {
                    p.insert(path, r.clone());
                }
                Ok(r)
            }
            None => Err(VsphereError::NotFound {
                kind,
                path,
                field: field.into(),
            }),
        }
    }

    async fn folder(&self, p: &Placement<'_>) -> Result<ObjRef> {
        self.resolve(
            "folder",
            folder_path(p.dc, p.folder),
            "cloud.vsphere.folder",
        )
        .await
    }

    async fn fields(&self) -> Result<(i32, i32)> {
        self.fields
            .get_or_try_init(|| async {
                Ok::<_, VsphereError>((
                    self.vc.custom_field(FIELD_CLUSTER_ID).await?,
                    self.vc.custom_field(FIELD_MACHINE).await?,
                ))
            })
            .await
            .copied()
    }

    async fn backing(&self, network: &ObjRef, name: &str) -> Result<NicBacking> {
        if let Some(b) = self
            .backings
            .lock()
            .ok()
            .and_then(|m| m.get(network).cloned())
        {
            return Ok(b);
        }
        let b = self.vc.nic_backing(network, name).await?;
        if let Ok(mut m) = self.backings.lock() {
            m.insert(network.clone(), b.clone());
        }
        Ok(b)
    }

    async fn template(&self, t: &ObjRef) -> Result<TemplateDevices> {
        if let Some(d) = self.templates.lock().ok().and_then(|m| m.get(t).cloned()) {
            return Ok(d);
        }
        let d = self.vc.template_devices(t).await?;
        if let Ok(mut m) = self.templates.lock() {
            m.insert(t.clone(), d.clone());
        }
        Ok(d)
    }

    /// The cluster's VMs under its folder: one property-collector query, plus one detail
    /// read per VM left unmarked by a crash (found by name prefix, proven by extraConfig).
    async fn owned(&self, ctx: &ClusterContext, folder: &ObjRef) -> Result<Vec<Owned>> {
        Ok(self.observe(ctx, folder).await?.0)
    }

    /// [`Session::owned`], plus every VM of the folder (for name checks).
    async fn observe(
        &self,
        ctx: &ClusterContext,
        folder: &ObjRef,
    ) -> Result<(Vec<Owned>, Vec<VmSummary>)> {
        let (k_cluster, k_machine) = self.fields().await?;
        let id = ctx.cluster_id.to_string();
        let prefix = format!("{}-", ctx.spec.name);
        let mut out = Vec::new();
        let all = self.vc.list_vms(std::slice::from_ref(folder)).await?;
        for vm in all.iter().cloned() {
            if vm.template {
                continue;
            }
            match vm.fields.get(&k_cluster) {
                Some(owner) if *owner == id => {
                    let Some(mark) = vm
                        .fields
                        .get(&k_machine)
                        .and_then(|m| serde_json::from_str::<MachineMark>(m).ok())
                    else {
                        // Cluster attribute set, machine attribute not yet: finish below.
                        if let Some(o) = self.adopt(ctx, vm).await? {
                            out.push(o);
                        }
                        continue;
                    };
                    out.push(Owned {
                        vm,
                        mark,
                        marked: true,
                    });
                }
                Some(_) => {}
                None if vm.name.starts_with(&prefix) => {
                    if let Some(o) = self.adopt(ctx, vm).await? {
                        out.push(o);
                    }
                }
                None => {}
            }
        }
        Ok((out, all))
    }

    /// A VM without its attributes: ours if its extraConfig says so.
    async fn adopt(&self, ctx: &ClusterContext, vm: VmSummary) -> Result<Option<Owned>> {
        let Some(d) = self.vc.vm_details(&vm.vm).await? else {
            return Ok(None);
        };
        if d.extra_config.get(guestinfo::OWNER) != Some(&ctx.cluster_id.to_string()) {
            return Ok(None);
        }
        let Some(mark) = d
            .extra_config
            .get(guestinfo::MACHINE)
            .and_then(|m| serde_json::from_str::<MachineMark>(m).ok())
        else {
            return Ok(None);
        };
        Ok(Some(Owned {
            vm,
            mark,
            marked: false,
        }))
    }

    /// Finishes a VM: powered on, then marked (the mark is the last step, so a marked VM
    /// is a complete one).
    async fn finish(&self, ctx: &ClusterContext, o: &mut Owned) -> Result<()> {
        let _permit = self.tasks.acquire().await;
        if !o.marked && o.vm.power != PowerState::On {
            // Adopted after a crash: the clone may have died before its hardware was set.
            self.fix_hardware(o).await?;
        }
        if o.vm.power != PowerState::On {
            self.vc.power_on(&o.vm.vm).await?;
            o.vm.power = PowerState::On;
        }
        if !o.marked {
            let (k_cluster, k_machine) = self.fields().await?;
            let mark = serde_json::to_string(&o.mark).unwrap_or_default();
            self.vc.set_field(&o.vm.vm, k_machine, &mark).await?;
            self.vc
                .set_field(&o.vm.vm, k_cluster, &ctx.cluster_id.to_string())
                .await?;
            o.marked = true;
        }
        Ok(())
    }

    /// Sets CPU, memory and disk to the mark's before the first boot (cloud-init grows the
    /// filesystem once, at first boot).
    async fn fix_hardware(&self, o: &Owned) -> Result<()> {
        let Some((cpus, memory_mb, disk_gb)) = o.mark.hardware else {
            return Ok(());
        };
        let Some(d) = self.vc.vm_details(&o.vm.vm).await? else {
            return Ok(());
        };
        let want_kb = disk_gb.map(|g| i64::from(g) * 1024 * 1024);
        let grow = match (&d.disk, want_kb) {
            (Some(disk), Some(kb)) if kb > disk.capacity_kb => Some((disk.clone(), kb)),
            _ => None,
        };
        if d.cpus != cpus || i64::from(d.memory_mb) != memory_mb || grow.is_some() {
            self.vc
                .reconfigure(
                    &o.vm.vm,
                    &Reconfigure {
                        cpus: Some(cpus),
                        memory_mb: Some(memory_mb),
                        disk: grow,
                        ..Default::default()
                    },
                )
                .await?;
        }
        Ok(())
    }

    /// Clones one VM (or finds the one a crashed attempt made) and finishes it.
    #[allow(clippy::too_many_arguments)]
    async fn ensure_vm(
        &self,
        ctx: &ClusterContext,
        existing: &[Owned],
        taken: &[VmSummary],
        mut spec: CloneSpec,
        mark: MachineMark,
        user_data: &[u8],
        network: Option<&spectro_core::provider::NodeNetwork>,
    ) -> Result<Owned> {
        if let Some(o) = existing.iter().find(|o| o.vm.name == spec.name) {
            let mut o = o.clone();
            self.finish(ctx, &mut o).await?;
            return Ok(o);
        }
        if taken.iter().any(|v| v.name == spec.name) {
            return Err(VsphereError::Invalid {
                field: "name".into(),
                rule: format!(
                    "a VM named `{}` that does not belong to this cluster is already in the folder",
                    spec.name
                ),
            });
        }
        let mut mark = mark;
        mark.hardware = Some((spec.cpus, spec.memory_mb, spec.disk_gb));
        let mark_json = serde_json::to_string(&mark).unwrap_or_default();
        spec.extra_config = guestinfo::entries(&spec.name, user_data, network);
        spec.extra_config
            .push((guestinfo::OWNER.into(), ctx.cluster_id.to_string()));
        spec.extra_config
            .push((guestinfo::MACHINE.into(), mark_json));
        let cloned = {
            let _permit = self.tasks.acquire().await;
            self.vc.clone_vm(&spec).await
        };
        let vm = match cloned {
            Ok(vm) => vm,
            // A clone of the same name made by an attempt that died mid-task (real vCenter
            // refuses the duplicate): find it, prove it ours, finish it.
            Err(e) if e.fault() == Some("DuplicateName") => {
                let folder = spec.folder.clone();
                let (owned, _) = self.observe(ctx, &folder).await?;
                let Some(mut o) = owned.into_iter().find(|o| o.vm.name == spec.name) else {
                    return Err(e);
                };
                self.finish(ctx, &mut o).await?;
                return Ok(o);
            }
            Err(e) => return Err(e),
        };
        let mut o = Owned {
            vm: VmSummary {
                vm,
                name: spec.name.clone(),
                power: PowerState::Off,
                ip: None,
                fields: BTreeMap::new(),
                template: false,
                folder: None,
            },
            mark,
            marked: false,
        };
        self.finish(ctx, &mut o).await?;
        Ok(o)
    }

    async fn destroy(&self, vm: &ObjRef) -> Result<()> {
        let _permit = self.tasks.acquire().await;
        self.vc.power_off(vm).await?;
        self.vc.destroy(vm).await
    }
}

fn lb_name(ctx: &ClusterContext) -> String {
    format!("{}-lb", ctx.spec.name)
}

fn now() -> String {
    spectro_core::clock::system_now().to_rfc3339()
}

impl VsphereProvider {
    /// The pre-check: the privileges of [`crate::privileges`] on the objects they apply to
    /// (one HasPrivilegeOnEntities per privilege group; only [`crate::privileges::USED`]
    /// ones fail it), and each datastore's free space against the full size of the disks the
    /// cluster's nodes get there (thin clones may need less). CPU and memory are not
    /// enforced (vSphere overcommits them; said in `unchecked`).
    async fn precheck_on(&self, s: &Session, ctx: &ClusterContext) -> Result<Precheck> {
        use crate::privileges as privs;
        let p = placement(ctx)?;
        let mut labels: HashMap<ObjRef, String> = HashMap::new();
        let root = s.vc.root_folder().await?;
        labels.insert(root.clone(), "vCenter (root folder)".into());
        let folder = s.folder(&p).await?;
        labels.insert(
            folder.clone(),
            format!("folder {}", folder_path(p.dc, p.folder)),
        );
        let (mut pools, mut datastores, mut networks) = (Vec::new(), Vec::new(), Vec::new());
        // GiB of disk each datastore receives (nodes spread evenly over a pool's placements).
        let mut disk_gib: BTreeMap<ObjRef, u64> = BTreeMap::new();
        let mut unsized_disks = false;
        for (idx, pool) in ctx.spec.node_pools.iter().enumerate() {
            let n = pool.placements.len() as u64;
            for (j, d) in pool.placements.iter().enumerate() {
                let base = format!("nodePools[{idx}].placements[{j}]");
                let rp_path = pool_path(p.dc, &d.compute_cluster, &d.resource_pool);
                let rp = s
                    .resolve(
                        "resource pool",
                        rp_path.clone(),
                        &format!("{base}.computeCluster/resourcePool"),
                    )
                    .await?;
                let ds_path = format!("{}/datastore/{}", p.dc, d.datastore);
                let ds = s
                    .resolve("datastore", ds_path.clone(), &format!("{base}.datastore"))
                    .await?;
                let net_path = format!("{}/network/{}", p.dc, d.network);
                let net = s
                    .resolve("network", net_path.clone(), &format!("{base}.network"))
                    .await?;
                labels.insert(rp.clone(), format!("resource pool {rp_path}"));
                labels.insert(ds.clone(), format!("datastore {ds_path}"));
                labels.insert(net.clone(), format!("network {net_path}"));
                for (list, r) in [
                    (&mut pools, &rp),
                    (&mut datastores, &ds),
                    (&mut networks, &net),
                ] {
                    if !list.contains(r) {
                        list.push(r.clone());
                    }
                }
                let share = u64::from(pool.size) / n.max(1)
                    + u64::from((j as u64) < u64::from(pool.size) % n.max(1));
                match pool.disk_size_gb {
                    Some(gb) => *disk_gib.entry(ds).or_default() += share * u64::from(gb),
                    None => unsized_disks |= share > 0,
                }
            }
        }
        let groups: Vec<(Vec<ObjRef>, Vec<&str>)> = vec![
            (vec![root], privs::VCENTER.to_vec()),
            (
                vec![folder.clone()],
                [privs::FOLDER, privs::VIRTUAL_MACHINE].concat(),
            ),
            (
                pools.clone(),
                [privs::RESOURCE_POOL, privs::VIRTUAL_MACHINE].concat(),
            ),
            (datastores.clone(), privs::DATASTORE.to_vec()),
            (networks, privs::NETWORK.to_vec()),
        ];
        let mut out = Precheck::default();
        let mut documented_only = Vec::new();
        for (entities, list) in groups {
            if entities.is_empty() {
                continue;
            }
            let list: Vec<String> = list.iter().map(|x| x.to_string()).collect();
            for (entity, missing) in s.vc.missing_privileges(&entities, &list).await? {
                let on = labels
                    .get(&entity)
                    .cloned()
                    .unwrap_or_else(|| format!("{} {}", entity.kind, entity.id));
                for m in missing {
                    if privs::USED.contains(&m.as_str()) {
                        out.missing_permissions.push(format!("{m} on {on}"));
                    } else {
                        documented_only.push(format!("{m} on {on}"));
                    }
                }
            }
        }
        for (ds, gib) in disk_gib {
            match s.vc.datastore_free(&ds).await? {
                Some(free) if free / (1 << 30) < gib => out.shortfalls.push(Shortfall::new(
                    labels.get(&ds).cloned().unwrap_or_default(),
                    gib,
                    free / (1 << 30),
                    "GiB",
                )),
                Some(_) => {}
                None => out.unchecked.push(format!(
                    "{}: free space not reported",
                    labels.get(&ds).cloned().unwrap_or_default()
                )),
            }
        }
        if !documented_only.is_empty() {
            out.unchecked.push(format!(
                "not granted, from the documented role but not needed by spectro's calls \
                 today: {}",
                documented_only.join(", ")
            ));
        }
        if unsized_disks {
            out.unchecked.push(
                "disks of pools without diskSizeGb (the template's size) are not counted".into(),
            );
        }
        out.unchecked
            .push("vSphere CPU and memory: not enforced (vSphere overcommits them)".into());
        Ok(out)
    }

    /// Where a pool's domain puts VMs: (resource pool, datastore, NIC backing).
    async fn domain(
        &self,
        s: &Session,
        ctx: &ClusterContext,
        pool_name: &str,
        zone: &str,
    ) -> Result<(ObjRef, ObjRef, NicBacking)> {
        let p = placement(ctx)?;
        let (idx, pool) = ctx
            .spec
            .node_pools
            .iter()
            .enumerate()
            .find(|(_, n)| n.name == pool_name)
            .ok_or_else(|| invalid("nodePools", &format!("has no pool `{pool_name}`")))?;
        let d = pool.placement_for(zone).ok_or_else(|| {
            invalid(
                &format!("nodePools[{idx}].placements"),
                &format!("has no placement domain `{zone}`"),
            )
        })?;
        let j = zone.trim_start_matches("placement-");
        let base = format!("nodePools[{idx}].placements[{j}]");
        let rp = s
            .resolve(
                "resource pool",
                pool_path(p.dc, &d.compute_cluster, &d.resource_pool),
                &format!("{base}.computeCluster/resourcePool"),
            )
            .await?;
        let ds = s
            .resolve(
                "datastore",
                format!("{}/datastore/{}", p.dc, d.datastore),
                &format!("{base}.datastore"),
            )
            .await?;
        let net = s
            .resolve(
                "network",
                format!("{}/network/{}", p.dc, d.network),
                &format!("{base}.network"),
            )
            .await?;
        let nic = s.backing(&net, &d.network).await?;
        Ok((rp, ds, nic))
    }

    async fn template_ref(&self, s: &Session, ctx: &ClusterContext, image: &str) -> Result<ObjRef> {
        let p = placement(ctx)?;
        s.resolve(
            "template",
            template_path(p.dc, image),
            "profile os pack annotation `image`",
        )
        .await
    }

    /// DHCP clusters: the HAProxy VM, created when missing; its address is the endpoint.
    async fn ensure_lb(
        &self,
        s: &Session,
        ctx: &ClusterContext,
        folder: &ObjRef,
    ) -> Result<InfraStatus> {
        let owned = s.owned(ctx, folder).await?;
        let name = lb_name(ctx);
        let lb = match owned.iter().find(|o| o.mark.kind == KIND_LB) {
            Some(o) if o.marked && o.vm.power == PowerState::On => o.clone(),
            _ => {
                let Some(image) = &ctx.image else {
                    return Ok(InfraStatus {
                        ready: false,
                        message: Some(
                            "waiting for the image before creating the load balancer VM".into(),
                        ),
                        ..Default::default()
                    });
                };
                let cp = ctx
                    .spec
                    .node_pools
                    .iter()
                    .find(|p| p.is_control_plane())
                    .ok_or_else(|| invalid("nodePools", "has no control-plane pool"))?;
                let (rp, ds, nic) = self.domain(s, ctx, &cp.name, "placement-0").await?;
                let template = self.template_ref(s, ctx, &image.id).await?;
                let devices = s.template(&template).await?;
                let ssh = spectro_core::bootstrap::ssh_keys(&ctx.spec);
                // The cluster's proxy, as its nodes get it (apt and environment).
                let proxy = match &ctx.spec.proxy {
                    Some(_) => {
                        let k8s = KubernetesSettings::from_cluster(&ctx.spec, &ctx.profile)
                            .map_err(|e| invalid("profile", &e.to_string()))?;
                        proxy_cloud_config(&ctx.spec, &k8s, None, &[])
                    }
                    None => None,
                };
                let user_data =
                    guestinfo::load_balancer_user_data(&ctx.spec.name, &ssh, proxy.as_ref());
                let spec = CloneSpec {
                    template,
                    devices,
                    folder: folder.clone(),
                    name: name.clone(),
                    pool: rp,
                    datastore: ds,
                    nic,
                    cpus: self.config.lb_cpus,
                    memory_mb: self.config.lb_memory_mb,
                    disk_gb: None,
                    extra_config: Vec::new(),
                    annotation: format!(
                        "spectro: API load balancer of cluster {} ({})",
                        ctx.spec.name, ctx.cluster_id
                    ),
                };
                let mark = MachineMark {
                    kind: KIND_LB.into(),
                    pool: String::new(),
                    role: PoolRole::ControlPlane,
                    zone: "placement-0".into(),
                    shape: String::new(),
                    token: format!("{}-lb", ctx.cluster_id),
                    address: None,
                    created: now(),
                    hardware: None,
                    backends: None,
                };
                let taken = Vec::new();
                s.ensure_vm(ctx, &owned, &taken, spec, mark, user_data.as_bytes(), None)
                    .await?
            }
        };
        let resources = vec![CloudResource {
            kind: "load-balancer-vm".into(),
            id: lb.vm.vm.id.clone(),
        }];
        Ok(match &lb.vm.ip {
            Some(ip) => InfraStatus {
                ready: true,
                endpoint: Some(format!("{ip}:6443")),
                resources,
                message: None,
                outputs: BTreeMap::from([("loadBalancerVm".into(), lb.vm.name.clone())]),
            },
            None => InfraStatus {
                ready: false,
                endpoint: None,
                resources,
                message: Some(format!(
                    "waiting for the load balancer VM {name} to report its address"
                )),
                outputs: BTreeMap::new(),
            },
        })
    }

    /// Keeps the HAProxy VM's backend list equal to the control-plane addresses.
    async fn sync_lb(&self, s: &Session, owned: &[Owned]) -> Result<()> {
        let Some(lb) = owned.iter().find(|o| o.mark.kind == KIND_LB && o.marked) else {
            return Ok(());
        };
        let mut backends: Vec<String> = owned
            .iter()
            .filter(|o| o.mark.kind == KIND_NODE && o.mark.role == PoolRole::ControlPlane)
            .filter_map(|o| machine_of(o).address)
            .map(|a| format!("{a}:6443"))
            .collect();
        backends.sort();
        let want = backends.join(" ");
        if lb.mark.backends.as_deref() == Some(want.as_str()) {
            return Ok(());
        }
        let mut mark = lb.mark.clone();
        mark.backends = Some(want.clone());
        let (_, k_machine) = s.fields().await?;
        let _permit = s.tasks.acquire().await;
        s.vc.reconfigure(
            &lb.vm.vm,
            &Reconfigure {
                extra_config: vec![(guestinfo::LB_BACKENDS.into(), want)],
                ..Default::default()
            },
        )
        .await?;
        s.vc.set_field(
            &lb.vm.vm,
            k_machine,
            &serde_json::to_string(&mark).unwrap_or_default(),
        )
        .await
    }
}

#[async_trait]
impl CloudProvider for VsphereProvider {
    fn cloud(&self) -> CloudType {
        CloudType::Vsphere
    }

    fn user_data_limit(&self) -> Option<usize> {
        // guestinfo values are base64 (4/3): stay well inside vSphere's extraConfig limits.
        Some(48 * 1024)
    }

    async fn validate_account(&self, account: &CloudAccount) -> Result<(), ProviderError> {
        let r = self.session(account).await.map(|_| ());
        self.on_error(account, r).await
    }

    async fn precheck(&self, ctx: &ClusterContext) -> Result<Precheck, ProviderError> {
        let r = async {
            let s = self.session(&ctx.account).await?;
            self.precheck_on(&s, ctx).await
        }
        .await;
        self.on_error(&ctx.account, r).await
    }

    async fn ensure_image(
        &self,
        ctx: &ClusterContext,
        spec: &ImageSpec,
    ) -> Result<ImageRef, ProviderError> {
        spec.require_ready_image("vSphere", "template")?;
        let r = async {
            let s = self.session(&ctx.account).await?;
            let image = spec
                .base_image
                .clone()
                .unwrap_or_else(|| default_template(spec));
            self.template_ref(&s, ctx, &image).await?;
            Ok(ImageRef {
                id: image,
                customized: false,
            })
        }
        .await;
        self.on_error(&ctx.account, r).await
    }

    async fn ensure_infrastructure(
        &self,
        ctx: &ClusterContext,
    ) -> Result<InfraStatus, ProviderError> {
        let r = async {
            let s = self.session(&ctx.account).await?;
            let p = placement(ctx)?;
            s.resolve("datacenter", p.dc.to_string(), "cloud.vsphere.datacenter")
                .await?;
            let folder = s.folder(&p).await?;
            // Every placement domain resolves (clear errors before the first clone).
            for pool in &ctx.spec.node_pools {
                for z in pool.fault_domains() {
                    self.domain(&s, ctx, &pool.name, &z).await?;
                }
            }
            match (p.ip, ctx.vip) {
                (IpAllocation::Static, Some(vip)) => Ok(InfraStatus {
                    ready: true,
                    endpoint: Some(format!("{vip}:6443")),
                    resources: Vec::new(),
                    message: None,
                    outputs: BTreeMap::new(),
                }),
                (IpAllocation::Static, None) => Ok(InfraStatus {
                    ready: false,
                    message: Some("waiting for the control-plane VIP from the IP pool".into()),
                    ..Default::default()
                }),
                (IpAllocation::Dhcp, _) => self.ensure_lb(&s, ctx, &folder).await,
            }
        }
        .await;
        self.on_error(&ctx.account, r).await
    }

    /// The vCenter: one listing of its inventory serves every cluster on it (as the private
    /// cloud gateway's key does).
    fn fleet(&self, ctx: &ClusterContext) -> Option<String> {
        let c = connection(&ctx.account).ok()?;
        Some(c.host)
    }

    /// One property-collector query over the vCenter's inventory: every VM carrying both
    /// ownership attributes, by cluster, with the same load-balancer backend repair as
    /// `list_machines`. What `list_machines` shows comes from the cluster's folder, so the
    /// caller's cluster keeps only the VMs in its folder, and a cluster whose VMs are not
    /// all in one folder is left out (it lists its own folder), as is one with a VM whose
    /// attributes are incomplete (a create a crash interrupted). The caller's cluster is
    /// then listed alone, as when its folder holds an unattributed VM of its name prefix.
    async fn list_fleet(
        &self,
        ctx: &ClusterContext,
    ) -> Result<HashMap<ClusterId, Vec<Machine>>, ProviderError> {
        let r = async {
            let s = self.session(&ctx.account).await?;
            let (k_cluster, k_machine) = s.fields().await?;
            let own_folder = s.folder(&placement(ctx)?).await?;
            let root = s.vc.root_folder().await?;
            let own = ctx.cluster_id.to_string();
            let prefix = format!("{}-", ctx.spec.name);
            let mut by: HashMap<String, Vec<Owned>> = HashMap::new();
            let mut left_out: std::collections::HashSet<String> = Default::default();
            for vm in s.vc.list_vms(std::slice::from_ref(&root)).await? {
                if vm.template {
                    continue;
                }
                let Some(owner) = vm.fields.get(&k_cluster).cloned() else {
                    if vm.name.starts_with(&prefix) && vm.folder.as_ref() == Some(&own_folder) {
                        left_out.insert(own.clone());
                    }
                    continue;
                };
                if owner == own && vm.folder.as_ref() != Some(&own_folder) {
                    // Not in the folder the cluster's own listing reads.
                    continue;
                }
                match vm
                    .fields
                    .get(&k_machine)
                    .and_then(|m| serde_json::from_str::<MachineMark>(m).ok())
                {
                    Some(mark) => by.entry(owner).or_default().push(Owned {
                        vm,
                        mark,
                        marked: true,
                    }),
                    None => {
                        left_out.insert(owner);
                    }
                }
            }
            let mut out = HashMap::with_capacity(by.len());
            for (cluster, owned) in by {
                let one_folder = owned.windows(2).all(|w| w[0].vm.folder == w[1].vm.folder);
                if left_out.contains(&cluster) || !one_folder {
                    left_out.insert(cluster);
                    continue;
                }
                // The same repair as `list_machines`; a failure for another cluster is
                // retried at the next listing, the caller's own fails its listing.
                match self.sync_lb(&s, &owned).await {
                    Ok(()) => {}
                    Err(e) if cluster == own => return Err(e),
                    Err(_) => continue,
                }
                if let Ok(id) = cluster.parse::<ClusterId>() {
                    out.insert(
                        id,
                        owned
                            .iter()
                            .filter(|o| o.mark.kind == KIND_NODE)
                            .map(machine_of)
                            .collect(),
                    );
                }
            }
            Ok((out, left_out.contains(&own)))
        }
        .await;
        let (mut out, alone) = self.on_error(&ctx.account, r).await?;
        if alone {
            out.insert(ctx.cluster_id, self.list_machines(ctx).await?);
        }
        Ok(out)
    }

    async fn list_machines(&self, ctx: &ClusterContext) -> Result<Vec<Machine>, ProviderError> {
        let r = async {
            let s = self.session(&ctx.account).await?;
            let p = placement(ctx)?;
            let folder = s.folder(&p).await?;
            let mut owned = s.owned(ctx, &folder).await?;
            for o in owned.iter_mut().filter(|o| !o.marked) {
                s.finish(ctx, o).await?;
            }
            // A cluster being deleted: its balancer goes too, no backend change is worth a
            // reconfiguration.
            if p.ip == IpAllocation::Dhcp && !ctx.deleting {
                self.sync_lb(&s, &owned).await?;
            }
            Ok(owned
                .iter()
                .filter(|o| o.mark.kind == KIND_NODE)
                .map(machine_of)
                .collect())
        }
        .await;
        self.on_error(&ctx.account, r).await
    }

    async fn create_machines(
        &self,
        ctx: &ClusterContext,
        _infra: &InfraStatus,
        batch: &MachineBatch,
    ) -> Result<Vec<Machine>, ProviderError> {
        let r = async {
            let s = self.session(&ctx.account).await?;
            let p = placement(ctx)?;
            let folder = s.folder(&p).await?;
            let (rp, ds, nic) = self.domain(&s, ctx, &batch.pool.name, &batch.zone).await?;
            let template = self.template_ref(&s, ctx, &batch.image.id).await?;
            let devices = s.template(&template).await?;
            // One listing for the batch: names already there are finished, not cloned.
            let (existing, taken) = s.observe(ctx, &folder).await?;
            let cpus = batch.pool.cpu.unwrap_or(2) as i32;
            let memory_mb = i64::from(batch.pool.memory_gb.unwrap_or(4)) * 1024;
            let jobs = batch.names.iter().enumerate().map(|(i, name)| {
                let network = batch.network.get(i);
                let spec = CloneSpec {
                    template: template.clone(),
                    devices: devices.clone(),
                    folder: folder.clone(),
                    name: name.clone(),
                    pool: rp.clone(),
                    datastore: ds.clone(),
                    nic: nic.clone(),
                    cpus,
                    memory_mb,
                    disk_gb: batch.pool.disk_size_gb,
                    extra_config: Vec::new(),
                    annotation: format!(
                        "spectro: node of cluster {} ({}), pool {}",
                        ctx.spec.name, ctx.cluster_id, batch.pool.name
                    ),
                };
                let mark = MachineMark {
                    kind: KIND_NODE.into(),
                    pool: batch.pool.name.clone(),
                    role: batch.pool.role,
                    zone: batch.zone.clone(),
                    shape: batch.shape.clone(),
                    token: batch.token.clone(),
                    address: network.map(|n| n.address),
                    created: now(),
                    hardware: None,
                    backends: None,
                };
                let (s, existing, taken) = (&s, &existing, &taken);
                async move {
                    s.ensure_vm(ctx, existing, taken, spec, mark, &batch.user_data, network)
                        .await
                }
            });
            let done = futures_join(jobs).await;
            let mut out = Vec::new();
            let mut first_err = None;
            for r in done {
                match r {
                    Ok(o) => out.push(machine_of(&o)),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            match first_err {
                Some(e) => Err(e),
                None => Ok(out),
            }
        }
        .await;
        self.on_error(&ctx.account, r).await
    }

    async fn delete_machines(
        &self,
        ctx: &ClusterContext,
        machines: &[Machine],
    ) -> Result<(), ProviderError> {
        let r = async {
            let s = self.session(&ctx.account).await?;
            let jobs = machines.iter().map(|m| {
                let vm = ObjRef {
                    kind: "VirtualMachine".into(),
                    id: m.id.clone(),
                };
                let s = &s;
                async move { s.destroy(&vm).await }
            });
            for r in futures_join(jobs).await {
                r?;
            }
            Ok(())
        }
        .await;
        self.on_error(&ctx.account, r).await
    }

    async fn delete_infrastructure(
        &self,
        ctx: &ClusterContext,
    ) -> Result<DeleteStatus, ProviderError> {
        let r = async {
            let s = self.session(&ctx.account).await?;
            let p = placement(ctx)?;
            let folder = s.folder(&p).await?;
            let owned = s.owned(ctx, &folder).await?;
            // The load balancer goes last; anything else still there is deleted too (a VM
            // the engine never recorded), then the folder is listed again to verify.
            let jobs = owned.iter().map(|o| {
                let s = &s;
                async move { s.destroy(&o.vm.vm).await }
            });
            for r in futures_join(jobs).await {
                r?;
            }
            let left = s.owned(ctx, &folder).await?;
            Ok(DeleteStatus {
                done: left.is_empty(),
                remaining: left
                    .iter()
                    .map(|o| CloudResource {
                        kind: "vm".into(),
                        id: o.vm.vm.id.clone(),
                    })
                    .collect(),
                message: (!left.is_empty()).then(|| format!("{} VMs still present", left.len())),
            })
        }
        .await;
        self.on_error(&ctx.account, r).await
    }
}

/// Runs futures concurrently (the session's task semaphore bounds vCenter load).
async fn futures_join<F: std::future::Future>(jobs: impl Iterator<Item = F>) -> Vec<F::Output> {
    futures_util::future::join_all(jobs).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_vm_found_off_is_failed_so_it_gets_replaced() {
        let vm = |power| VmSummary {
            vm: ObjRef {
                kind: "VirtualMachine".into(),
                id: "vm-1".into(),
            },
            name: "c-w-1".into(),
            power,
            ip: None,
            fields: BTreeMap::new(),
            template: false,
            folder: None,
        };
        assert_eq!(state_of(&vm(PowerState::On)), MachineState::Running);
        assert_eq!(state_of(&vm(PowerState::Off)), MachineState::Failed);
        assert_eq!(state_of(&vm(PowerState::Suspended)), MachineState::Failed);
    }

    #[test]
    fn sessions_are_not_shared_across_passwords_or_tls_policy() {
        let c = |pw: &str, insecure| Connection {
            host: "vc".into(),
            user: "u".into(),
            password: pw.into(),
            insecure,
        };
        assert_eq!(session_key(&c("a", false)), session_key(&c("a", false)));
        assert_ne!(session_key(&c("a", false)), session_key(&c("b", false)));
        assert_ne!(session_key(&c("a", false)), session_key(&c("a", true)));
    }

    #[test]
    fn inventory_paths() {
        assert_eq!(folder_path("DC0", "/DC0/vm/x"), "DC0/vm/x");
        assert_eq!(folder_path("DC0", "vm"), "DC0/vm");
        assert_eq!(folder_path("DC0", "vm/a/b"), "DC0/vm/a/b");
        assert_eq!(folder_path("DC0", "spectro"), "DC0/vm/spectro");
        assert_eq!(pool_path("DC0", "C0", ""), "DC0/host/C0/Resources");
        assert_eq!(pool_path("DC0", "C0", "RP1"), "DC0/host/C0/Resources/RP1");
        assert_eq!(
            pool_path("DC0", "C0", "Resources/RP1"),
            "DC0/host/C0/Resources/RP1"
        );
        assert_eq!(
            template_path("DC0", "DC0_C0_RP0_VM0"),
            "DC0/vm/DC0_C0_RP0_VM0"
        );
        assert_eq!(template_path("DC0", "/DC1/vm/t"), "DC1/vm/t");
        assert_eq!(template_path("DC0", "vm/tpl/u"), "DC0/vm/tpl/u");
    }

    #[test]
    fn mark_round_trips_and_tolerates_missing_fields() {
        let m = MachineMark {
            kind: KIND_NODE.into(),
            pool: "w".into(),
            role: PoolRole::Worker,
            zone: "placement-1".into(),
            shape: "abc".into(),
            token: "t".into(),
            address: Some("10.0.0.4".parse().unwrap()),
            created: now(),
            hardware: None,
            backends: None,
        };
        let s = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<MachineMark>(&s).unwrap(), m);
        let lb: MachineMark = serde_json::from_str(r#"{"kind":"load-balancer"}"#).unwrap();
        assert_eq!(lb.kind, KIND_LB);
    }
}

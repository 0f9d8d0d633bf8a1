//! Pure planning: `(desired spec, observed state) -> ordered actions`. No I/O, no clock of
//! its own (the time comes in the input), so every decision is unit-tested and benchmarked
//! with plain values.
//!
//! Rules (the doc's, plus Cluster API's safe defaults):
//! - image first (customized if the OS pack asks), then infrastructure, then machines;
//! - control-plane nodes join one at a time; workers start once the first control-plane
//!   node runs;
//! - pools are spread evenly over their zones (placement domains on vSphere);
//! - a machine whose shape (instance type, disk, CPU/memory, image) or zone no longer
//!   matches is replaced one at a time: one new machine first, then one old one goes
//!   (max surge 1, max unavailable 0);
//! - failed machines and machines stuck booting past the timeout are replaced;
//! - recorded intents that are not observed yet are re-issued with the same token;
//! - delete/abort: machines, then infrastructure, then finalize.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::{Cluster, ClusterProfile, NodePool, PackLayer, PoolRole};
use crate::provider::{
    BootstrapRole, Customization, ImageSpec, InfraStatus, Machine, MachineState,
};
use crate::records::intent::Intent;
use crate::records::status::{AppliedPack, Lifecycle, MachineSummary, PoolStatus, ResolvedImage};
use crate::workload::{quorum_after_removal, WorkloadView};

/// How machines count as Kubernetes nodes, and how nodes are taken out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePolicy {
    /// A running machine whose Node has not been `Ready` for this long (since the machine's
    /// creation, or since its Node went `NotReady`) is reported unhealthy.
    pub ready_timeout: Duration,
    /// Replace such machines (a machine health check, as Cluster API's
    /// MachineHealthCheck). Off: reported only.
    pub replace_unready: bool,
    /// A drain blocked this long (PodDisruptionBudgets, pods that do not terminate) is given
    /// up and the node removed anyway, with a warning event. `None`: wait as long as it takes.
    pub drain_timeout: Option<Duration>,
}

impl Default for NodePolicy {
    fn default() -> Self {
        NodePolicy {
            ready_timeout: Duration::from_secs(600),
            replace_unready: false,
            drain_timeout: None,
        }
    }
}

/// Everything a plan is computed from.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// Desired spec.
    pub spec: &'a Cluster,
    /// The profile the cluster runs.
    pub profile: &'a ClusterProfile,
    /// Active, deleting or aborting.
    pub lifecycle: Lifecycle,
    /// The image resolved so far.
    pub image: Option<&'a ResolvedImage>,
    /// The infrastructure as last ensured.
    pub infra: Option<&'a InfraStatus>,
    /// True when the infrastructure should be checked again (spec changed, periodic check).
    pub infra_stale: bool,
    /// Machines observed in the cloud (by ownership tag).
    pub machines: &'a [Machine],
    /// Recorded create intents.
    pub intents: &'a [Intent],
    /// Now.
    pub now: DateTime<Utc>,
    /// A machine still pending after this long is replaced.
    pub machine_timeout: Duration,
    /// True once infrastructure deletion reported done (delete/abort only).
    pub infra_deleted: bool,
    /// The workload cluster as observed this reconcile. `None`: no workload connection is
    /// configured, and a running machine counts as a ready node.
    pub workload: Option<&'a WorkloadView>,
    /// Node readiness and removal rules.
    pub nodes: NodePolicy,
    /// The packs applied to the running cluster (its status).
    pub applied_packs: &'a BTreeMap<String, AppliedPack>,
    /// The system packs the engine adds to the profile's (the cluster agent): name and
    /// rendered revision only — their objects carry credentials.
    pub system_packs: &'a [(String, String)],
}

/// Why machines are deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum DeleteReason {
    /// The pool shrank.
    ScaleDown,
    /// Replaced by a machine of the new shape or zone.
    Replaced,
    /// Its pool was removed.
    PoolRemoved,
    /// It failed or never came up.
    Unhealthy,
    /// The cluster is being deleted or aborted.
    ClusterDeleted,
}

/// A create request: `count` machines of one pool in one fault domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateRequest {
    /// Pool name.
    pub pool: String,
    /// Fault domain.
    pub zone: String,
    /// How many.
    pub count: u32,
    /// Shape hash.
    pub shape: String,
    /// How they join.
    pub bootstrap: BootstrapRole,
    /// Names and token to re-issue (recorded intents), empty for new machines.
    pub reissue: Option<(String, Vec<String>)>,
}

/// One step for the executor.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum Action {
    /// Find or build the image.
    EnsureImage {
        /// What to find or build.
        spec: Box<ImageSpec>,
    },
    /// Create or check the shared infrastructure.
    EnsureInfrastructure,
    /// Create machines (one cloud call per request).
    CreateMachines(CreateRequest),
    /// Delete machines.
    DeleteMachines {
        /// Which.
        machines: Vec<Machine>,
        /// Why.
        reason: DeleteReason,
    },
    /// Take machines' nodes out of the Kubernetes cluster before their machines go: cordon
    /// and drain (not for unhealthy machines), remove the control-plane machines' etcd
    /// members (never below a healthy quorum), delete the Node objects.
    DetachNodes {
        /// Which.
        machines: Vec<Machine>,
        /// Why they go.
        reason: DeleteReason,
    },
    /// Apply the CNI, CSI and add-on packs whose rendered revision is not the applied one
    /// (server-side apply), and prune what they, or packs that left the profile, no longer
    /// have.
    ApplyPacks,
    /// Remove etcd members that belong to no machine any more (a machine deleted before its
    /// member was removed): keeps the quorum size honest.
    RemoveEtcdMembers {
        /// `(member id, member name)`.
        members: Vec<(u64, String)>,
    },
    /// Delete the shared infrastructure.
    DeleteInfrastructure,
    /// Everything is gone: mark the cluster deleted.
    Finalize,
}

/// Progress of a group of pools.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Desired nodes.
    pub desired: u32,
    /// Running up-to-date nodes.
    pub ready: u32,
    /// Nodes being replaced.
    pub outdated: u32,
    /// True when the group is at its desired state.
    pub done: bool,
    /// What holds the group up, when it is a node (not ready, draining, etcd quorum):
    /// `(reason, message)` for its condition.
    pub note: Option<(String, String)>,
}

/// What the plan concluded about the cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Assessment {
    /// The OS pack needs a customized image.
    pub customization: bool,
    /// The image for the current packs is resolved.
    pub image_ready: bool,
    /// The infrastructure is ready.
    pub infra_ready: bool,
    /// Control-plane progress.
    pub control_plane: Progress,
    /// Worker progress.
    pub workers: Progress,
    /// Per pool counts.
    pub pools: BTreeMap<String, PoolStatus>,
    /// Every machine of the spec's pools, per pool (control plane first).
    pub machines: Vec<MachineSummary>,
    /// Machines exist that are still booting or being deleted: look again soon.
    pub waiting: bool,
    /// Everything matches the spec.
    pub converged: bool,
    /// Delete/abort finished.
    pub deleted: bool,
    /// What the cluster waits for before it can converge (`Engine::explain`), in plan order.
    pub waits: Vec<Wait>,
}

/// Something the plan waits for before the cluster can converge: the pure part of
/// `Engine::explain` (the executor adds what failed, the engine what it is throttled on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
#[non_exhaustive]
pub enum Wait {
    /// The machine image for the profile's OS + Kubernetes packs is being resolved (or
    /// customized).
    Image {
        /// A customized image is being built.
        customization: bool,
    },
    /// The shared infrastructure (network, API endpoint) is not ready.
    Infrastructure {
        /// What the provider last said it waits for.
        message: Option<String>,
    },
    /// A machine is booting.
    MachineBooting {
        /// Its pool.
        pool: String,
        /// The machine.
        machine: String,
        /// Since its creation.
        since: DateTime<Utc>,
    },
    /// A machine runs but its Kubernetes Node is not `Ready` (or not registered yet; for a
    /// control-plane machine: its etcd member is not healthy yet).
    NodeNotReady {
        /// Its pool.
        pool: String,
        /// The machine.
        machine: String,
        /// What is missing.
        detail: String,
        /// Since when (the machine's creation, or the Node's last `Ready` transition).
        since: DateTime<Utc>,
    },
    /// The workload cluster's API server does not answer: nodes cannot be counted or removed.
    ApiServer {
        /// Why.
        message: String,
    },
    /// A node is being drained and pods are left (a PodDisruptionBudget allows no eviction
    /// now, or pods still terminate).
    Draining {
        /// The machine.
        machine: String,
        /// Its Node.
        node: String,
        /// Why the drain waits.
        reason: String,
        /// Since the drain started.
        since: DateTime<Utc>,
    },
    /// A control-plane machine cannot go yet: removing its etcd member would lose quorum, or
    /// another member is not healthy.
    EtcdQuorum {
        /// The machine.
        machine: String,
        /// The members and their health.
        detail: String,
    },
    /// A pack's objects are not applied at their current revision (or cannot be rendered).
    Pack {
        /// The pack.
        pack: String,
        /// What is pending: the revision to apply, a removal, or the render error.
        detail: String,
    },
    /// A machine is being deleted.
    MachineDeleting {
        /// Its pool.
        pool: String,
        /// The machine.
        machine: String,
    },
    /// A create was sent (intent recorded) and its machines are not listed yet.
    CreateInFlight {
        /// The pool.
        pool: String,
        /// The machine names.
        machines: Vec<String>,
        /// Since the intent was recorded.
        since: DateTime<Utc>,
    },
    /// Workers wait for the first control-plane node to run.
    ControlPlane {
        /// The waiting pool.
        pool: String,
    },
    /// A rolling replacement is under way (one new machine, then one old goes).
    Replacing {
        /// The pool.
        pool: String,
        /// Machines still to replace.
        outdated: u32,
    },
    /// The cluster's machines and infrastructure are being deleted.
    Deleting {
        /// What is left: machines, or the infrastructure.
        remaining: String,
    },
}

/// The plan: actions in order, and the assessment behind them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    /// What to do now.
    pub actions: Vec<Action>,
    /// Where things stand.
    pub assessment: Assessment,
}

fn hex(bytes: &[u8], n: usize) -> String {
    bytes
        .iter()
        .take(n / 2)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The image spec the profile's OS and Kubernetes packs call for.
pub fn image_spec(profile: &ClusterProfile) -> Option<ImageSpec> {
    let os = profile.pack(PackLayer::Os)?.clone();
    let kubernetes = profile.pack(PackLayer::Kubernetes)?.clone();
    let base_image = os.image_ref().map(str::to_string);
    let install_kubernetes = base_image.is_some() && os.skip_k8s_install() == Some("false");
    let customization = if install_kubernetes || !os.ansible_roles.is_empty() {
        Some(Customization {
            install_kubernetes,
            ansible_roles: os.ansible_roles.clone(),
        })
    } else {
        None
    };
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&os).unwrap_or_default());
    h.update(kubernetes.name.as_bytes());
    h.update(kubernetes.version.as_bytes());
    let signature = hex(&h.finalize(), 16);
    Some(ImageSpec {
        os,
        kubernetes,
        base_image,
        customization,
        signature,
    })
}

/// The shape hash of a pool's machines in `fault_domain` built from `image_id`: any change
/// means replacement. Only the machine's own placement domain counts (vSphere), so adding or
/// removing another domain moves only the machines the new balance needs.
#[must_use]
pub fn shape_hash(pool: &NodePool, fault_domain: &str, image_id: &str) -> String {
    let mut h = Sha256::new();
    let parts = (
        &pool.instance_type,
        &pool.disk_type,
        pool.disk_size_gb,
        pool.cpu,
        pool.memory_gb,
        pool.placement_for(fault_domain),
        image_id,
    );
    h.update(serde_json::to_vec(&parts).unwrap_or_default());
    hex(&h.finalize(), 12)
}

/// Splits `size` nodes evenly over `zones` (the first zones take the remainder).
#[must_use]
pub fn zone_targets(size: u32, zones: &[String]) -> BTreeMap<String, u32> {
    let n = zones.len().max(1) as u32;
    zones
        .iter()
        .enumerate()
        .map(|(i, z)| (z.clone(), size / n + u32::from((i as u32) < size % n)))
        .collect()
}

fn stuck(m: &Machine, now: DateTime<Utc>, timeout: Duration) -> bool {
    m.state == MachineState::Failed
        || (m.state == MachineState::Pending
            && now
                .signed_duration_since(m.created_at)
                .to_std()
                .unwrap_or_default()
                > timeout)
}

/// Why a running machine does not count as a ready node yet (`None`: it does).
fn not_ready(input: &PlanInput<'_>, m: &Machine) -> Option<String> {
    if m.state != MachineState::Running {
        return Some(format!("machine {:?}", m.state).to_lowercase());
    }
    let w = input.workload?;
    if !w.reachable {
        return Some("API server not reachable".into());
    }
    let Some(n) = w.node_of(m) else {
        return Some("no Node registered".into());
    };
    if !n.ready {
        return Some(format!("Node {} not Ready", n.name));
    }
    if m.role == PoolRole::ControlPlane && w.etcd.is_some() {
        match w.member_of(m) {
            None => return Some(format!("no etcd member for Node {}", n.name)),
            Some(e) if e.learner => return Some(format!("etcd member {} still a learner", e.name)),
            Some(e) if !e.healthy => return Some(format!("etcd member {} not healthy", e.name)),
            Some(_) => {}
        }
    }
    None
}

/// Since when a running machine's node has not been ready.
fn unready_since(input: &PlanInput<'_>, m: &Machine) -> DateTime<Utc> {
    input
        .workload
        .and_then(|w| w.node_of(m))
        .and_then(|n| n.ready_since.filter(|_| !n.ready))
        .map_or(m.created_at, |t| t.max(m.created_at))
}

/// A running machine whose node has not been ready for longer than the policy allows.
fn unready_too_long(input: &PlanInput<'_>, m: &Machine) -> bool {
    m.state == MachineState::Running
        && input.workload.is_some_and(|w| w.reachable)
        && not_ready(input, m).is_some()
        && input
            .now
            .signed_duration_since(unready_since(input, m))
            .to_std()
            .unwrap_or_default()
            > input.nodes.ready_timeout
}

/// When spectro started draining `m`'s node (it is being removed).
fn draining(input: &PlanInput<'_>, m: &Machine) -> Option<DateTime<Utc>> {
    input.workload?.node_of(m)?.drain_started
}

/// A running machine on its way out: its node is being drained, or was detached already (no
/// Node left) when a crash or the end of a reconcile came before the machine's deletion.
/// Such machines are the first victims, so a removal that started is finished, not repeated
/// on another machine.
fn leaving(input: &PlanInput<'_>, m: &Machine) -> bool {
    m.state == MachineState::Running
        && input
            .workload
            .is_some_and(|w| w.reachable && w.node_of(m).is_none_or(|n| n.drain_started.is_some()))
}

/// Removes machines: through `DetachNodes` first when a workload connection is configured and
/// they still have a Node or an etcd member.
fn remove(input: &PlanInput<'_>, machines: Vec<Machine>, reason: DeleteReason, plan: &mut Plan) {
    if machines.is_empty() {
        return;
    }
    let Some(w) = input.workload else {
        plan.actions
            .push(Action::DeleteMachines { machines, reason });
        return;
    };
    if !w.reachable {
        // Nodes cannot be drained nor members removed: only machines that never ran go.
        let (never_ran, held): (Vec<Machine>, Vec<Machine>) = machines
            .into_iter()
            .partition(|m| m.state != MachineState::Running);
        let said = plan
            .assessment
            .waits
            .iter()
            .any(|w| matches!(w, Wait::ApiServer { .. }));
        if !held.is_empty() && !said {
            plan.assessment.waits.push(Wait::ApiServer {
                message: w.error.clone().unwrap_or_else(|| "not reachable".into()),
            });
        }
        if !never_ran.is_empty() {
            plan.actions.push(Action::DeleteMachines {
                machines: never_ran,
                reason,
            });
        }
        return;
    }
    let (attached, detached): (Vec<Machine>, Vec<Machine>) = machines.into_iter().partition(|m| {
        w.node_of(m).is_some() || (m.role == PoolRole::ControlPlane && w.member_of(m).is_some())
    });
    let mut go = Vec::new();
    for m in attached {
        if let (Some(e), Some(members)) = (w.member_of(&m), w.etcd.as_ref()) {
            let others_healthy = members
                .iter()
                .filter(|o| o.id != e.id)
                .all(|o| o.healthy && !o.learner);
            let safe = quorum_after_removal(members, e.id)
                && (reason == DeleteReason::Unhealthy || others_healthy);
            if !safe {
                let detail = members
                    .iter()
                    .map(|o| {
                        format!(
                            "{}={}",
                            o.name,
                            if o.healthy { "healthy" } else { "unhealthy" }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                plan.assessment.waits.push(Wait::EtcdQuorum {
                    machine: m.name.clone(),
                    detail,
                });
                continue;
            }
        }
        go.push(m);
    }
    if !go.is_empty() {
        plan.actions.push(Action::DetachNodes {
            machines: go,
            reason,
        });
    }
    if !detached.is_empty() {
        plan.actions.push(Action::DeleteMachines {
            machines: detached,
            reason,
        });
    }
}

/// etcd members named after no machine of the cluster (nor any machine's Node).
fn stale_members(input: &PlanInput<'_>) -> Vec<(u64, String)> {
    let Some(w) = input.workload.filter(|w| w.reachable) else {
        return Vec::new();
    };
    let Some(members) = w.etcd.as_ref() else {
        return Vec::new();
    };
    let mut names: BTreeSet<&str> = input.machines.iter().map(|m| m.name.as_str()).collect();
    for m in input.machines {
        if let Some(n) = w.node_of(m) {
            names.insert(n.name.as_str());
        }
    }
    // Names of machines whose create is in flight: their members may join before they list.
    for i in input.intents {
        names.insert(i.name.as_str());
    }
    // A member whose peer URL is a machine's address is that machine's, whatever its name.
    let addresses: BTreeSet<String> = input
        .machines
        .iter()
        .filter_map(|m| m.address)
        .map(|a| a.to_string())
        .collect();
    let on_a_machine = |e: &crate::workload::EtcdMember| {
        e.peer_urls.iter().any(|u| {
            let host = u
                .split("://")
                .nth(1)
                .unwrap_or(u.as_str())
                .rsplit_once(':')
                .map_or(u.as_str(), |(h, _)| h)
                .trim_start_matches('[')
                .trim_end_matches(']');
            addresses.contains(host)
        })
    };
    members
        .iter()
        .filter(|e| !e.name.is_empty() && !names.contains(e.name.as_str()) && !on_a_machine(e))
        .filter(|e| quorum_after_removal(members, e.id))
        .map(|e| (e.id, e.name.clone()))
        .collect()
}

/// Computes the plan.
///
/// Pure: the same input gives the same plan, and nothing is read or written. A new cluster
/// whose image and infrastructure are ready starts with its first control-plane node:
///
/// ```
/// use std::time::Duration;
///
/// use chrono::DateTime;
/// use spectro_core::engine::planner::{image_spec, plan, Action, PlanInput};
/// use spectro_core::engine::status::{Lifecycle, ResolvedImage};
/// use spectro_core::model::document::{from_text, Format};
/// use spectro_core::model::{Cluster, ClusterProfile};
/// use spectro_core::provider::{BootstrapRole, ImageRef, InfraStatus};
///
/// let profile: ClusterProfile = from_text(
///     "{name: base, version: 1.0.0, cloud: aws, packs: [{name: ubuntu, layer: os, version: '22.04'}, {name: kubernetes, layer: kubernetes, version: 1.30.4}]}",
///     Format::Yaml,
/// )?;
/// let spec: Cluster = from_text(
///     r#"
/// name: demo
/// profile: { name: base, version: 1.0.0 }
/// cloudAccount: aws-dev
/// cloud: { aws: { region: us-east-1 } }
/// nodePools:
///   - { name: cp, role: controlPlane, size: 3, instanceType: m5.large, availabilityZones: [us-east-1a, us-east-1b, us-east-1c] }
///   - { name: workers, role: worker, size: 6, instanceType: m5.large, availabilityZones: [us-east-1a, us-east-1b, us-east-1c] }
/// "#,
///     Format::Yaml,
/// )?;
/// let image = ResolvedImage {
///     signature: image_spec(&profile).expect("OS and Kubernetes packs").signature,
///     image: ImageRef { id: "ami-0123".into(), customized: false },
/// };
/// let infra = InfraStatus { ready: true, ..InfraStatus::default() };
/// let p = plan(&PlanInput {
///     spec: &spec,
///     profile: &profile,
///     lifecycle: Lifecycle::Active,
///     image: Some(&image),
///     infra: Some(&infra),
///     infra_stale: false,
///     machines: &[],
///     intents: &[],
///     now: DateTime::from_timestamp(1_700_000_000, 0).expect("a valid time"), // the time is an input
///     machine_timeout: Duration::from_secs(1200),
///     infra_deleted: false,
///     workload: None, // no workload connection: a running machine counts as a ready node
///     nodes: Default::default(),
///     applied_packs: &Default::default(),
///     system_packs: &[],
/// });
/// // Workers wait for the first control-plane node to run.
/// assert!(matches!(
///     &p.actions[..],
///     [Action::CreateMachines(r)] if r.pool == "cp" && r.count == 1 && r.bootstrap == BootstrapRole::Init
/// ));
/// assert!(!p.assessment.converged);
/// # Ok::<(), spectro_core::validate::Violation>(())
/// ```
#[must_use]
pub fn plan(input: &PlanInput<'_>) -> Plan {
    if input.lifecycle.is_deleting() {
        return plan_delete(input);
    }
    let mut plan = Plan::default();
    let a = &mut plan.assessment;
    let wanted = image_spec(input.profile);
    a.customization = wanted.as_ref().is_some_and(|w| w.customization.is_some());
    let image = match (&wanted, input.image) {
        (Some(w), Some(have)) if have.signature == w.signature => Some(have),
        _ => None,
    };
    a.image_ready = image.is_some();
    a.infra_ready = input.infra.is_some_and(|i| i.ready);
    let Some(image) = image else {
        a.waits.push(Wait::Image {
            customization: a.customization,
        });
        if let Some(spec) = wanted {
            plan.actions.push(Action::EnsureImage {
                spec: Box::new(spec),
            });
        }
        return plan;
    };
    if !a.infra_ready || input.infra_stale {
        plan.actions.push(Action::EnsureInfrastructure);
        if !a.infra_ready {
            a.waits.push(Wait::Infrastructure {
                message: input.infra.and_then(|i| i.message.clone()),
            });
            return plan;
        }
    }
    plan_machines(input, &image.image.id, &mut plan);
    plan_packs(input, &mut plan);
    plan
}

/// Packs to apply or prune on the running cluster (with a reachable workload connection).
fn plan_packs(input: &PlanInput<'_>, plan: &mut Plan) {
    use crate::bootstrap::manifests::{applies_to_cluster, render};
    if !input.workload.is_some_and(|w| w.reachable) {
        return;
    }
    let mut stale = false;
    let mut wanted = BTreeSet::new();
    for pack in input
        .profile
        .packs
        .iter()
        .filter(|p| applies_to_cluster(p.layer) && !p.manifests.trim().is_empty())
    {
        wanted.insert(pack.name.as_str());
        let overrides = input.spec.pack_values.get(&pack.name).map(String::as_str);
        let detail = match render(&input.spec.name, pack, overrides) {
            Ok(r)
                if input
                    .applied_packs
                    .get(&pack.name)
                    .is_some_and(|a| a.revision == r.revision) =>
            {
                continue
            }
            Ok(r) => format!("revision {} to apply", r.revision),
            Err(e) => e.to_string(),
        };
        stale = true;
        plan.assessment.waits.push(Wait::Pack {
            pack: pack.name.clone(),
            detail,
        });
    }
    for (name, revision) in input.system_packs {
        wanted.insert(name.as_str());
        if input
            .applied_packs
            .get(name)
            .is_some_and(|a| &a.revision == revision)
        {
            continue;
        }
        stale = true;
        plan.assessment.waits.push(Wait::Pack {
            pack: name.clone(),
            detail: format!("revision {revision} to apply"),
        });
    }
    for name in input.applied_packs.keys() {
        if !wanted.contains(name.as_str()) {
            stale = true;
            plan.assessment.waits.push(Wait::Pack {
                pack: name.clone(),
                detail: "removed from the profile: its objects are pruned".into(),
            });
        }
    }
    if stale {
        plan.actions.push(Action::ApplyPacks);
        plan.assessment.converged = false;
        plan.assessment.workers.done = false;
    }
}

fn plan_machines(input: &PlanInput<'_>, image_id: &str, plan: &mut Plan) {
    let pending = unobserved(input);
    // Re-issue unobserved intents, one call per token, before anything else.
    reissue(&pending, plan);

    let cp_initialized = input
        .machines
        .iter()
        .any(|m| m.role == PoolRole::ControlPlane && not_ready(input, m).is_none());
    let pool_names: BTreeSet<&str> = input
        .spec
        .node_pools
        .iter()
        .map(|p| p.name.as_str())
        .collect();

    // Machines of removed pools go (never control-plane machines: that pool cannot be removed).
    let orphans: Vec<Machine> = input
        .machines
        .iter()
        .filter(|m| {
            !pool_names.contains(m.pool.as_str())
                && m.role == PoolRole::Worker
                && m.state != MachineState::Deleting
        })
        .cloned()
        .collect();
    let mut waiting = input
        .machines
        .iter()
        .any(|m| matches!(m.state, MachineState::Pending | MachineState::Deleting))
        || !pending.is_empty();
    let mut converged = orphans.is_empty() && pending.is_empty();
    if let Some(w) = input.workload.filter(|w| !w.reachable) {
        plan.assessment.waits.push(Wait::ApiServer {
            message: w.error.clone().unwrap_or_else(|| "not reachable".into()),
        });
    }
    remove(input, orphans, DeleteReason::PoolRemoved, plan);
    let stale = stale_members(input);
    if !stale.is_empty() {
        plan.actions
            .push(Action::RemoveEtcdMembers { members: stale });
    }

    let mut cp = Progress::default();
    let mut wk = Progress::default();
    // Control plane first, so its single create is planned before the workers'.
    let mut pools: Vec<&NodePool> = input.spec.node_pools.iter().collect();
    pools.sort_by_key(|p| p.role);
    for pool in pools {
        let zones = pool.fault_domains();
        let targets = zone_targets(pool.size, &zones);
        let shapes: BTreeMap<&str, String> = zones
            .iter()
            .map(|z| (z.as_str(), shape_hash(pool, z, image_id)))
            .collect();
        let shape_ok = |zone: &str, shape: &str| shapes.get(zone).is_some_and(|s| s == shape);
        let mine: Vec<&Machine> = input
            .machines
            .iter()
            .filter(|m| m.pool == pool.name && m.state != MachineState::Deleting)
            .collect();
        let (bad, live): (Vec<&Machine>, Vec<&Machine>) = mine.iter().partition(|m| {
            stuck(m, input.now, input.machine_timeout)
                || (input.nodes.replace_unready && unready_too_long(input, m))
        });
        let pool_pending: Vec<&&Intent> = pending.iter().filter(|i| i.pool == pool.name).collect();
        let (mut up, mut old): (Vec<&Machine>, Vec<&Machine>) =
            live.iter().partition(|m| shape_ok(&m.zone, &m.shape));
        rebalance(input, &mut up, &mut old, &targets, pool.size);
        let ready = up.iter().filter(|m| not_ready(input, m).is_none()).count() as u32;
        // Joining: an up-to-date machine that is not a ready node yet (booting, Node not
        // Ready, etcd member not healthy), or an outdated one still booting. An outdated
        // machine that is leaving (drained, its Node deleted) holds nothing up.
        let booting = up
            .iter()
            .any(|m| not_ready(input, m).is_some() && draining(input, m).is_none())
            || old.iter().any(|m| m.state != MachineState::Running);
        let in_flight = !pool_pending.is_empty() || booting;
        let waits = &mut plan.assessment.waits;
        for m in live.iter().filter(|m| m.state == MachineState::Pending) {
            waits.push(Wait::MachineBooting {
                pool: pool.name.clone(),
                machine: m.name.clone(),
                since: m.created_at,
            });
        }
        let mut note = None;
        // Every running machine of the pool, those the health check replaces included (they
        // are reported before they go).
        for m in mine
            .iter()
            .filter(|m| m.state == MachineState::Running && draining(input, m).is_none())
        {
            if let Some(detail) = not_ready(input, m) {
                let since = unready_since(input, m);
                if note.is_none() {
                    let late = if unready_too_long(input, m) {
                        " (past the node ready timeout)"
                    } else {
                        ""
                    };
                    note = Some((
                        "NodeNotReady".to_string(),
                        format!("machine {}: {detail}{late}", m.name),
                    ));
                }
                waits.push(Wait::NodeNotReady {
                    pool: pool.name.clone(),
                    machine: m.name.clone(),
                    detail,
                    since,
                });
            }
        }
        for m in input
            .machines
            .iter()
            .filter(|m| m.pool == pool.name && m.state == MachineState::Deleting)
        {
            waits.push(Wait::MachineDeleting {
                pool: pool.name.clone(),
                machine: m.name.clone(),
            });
        }
        if let Some(first) = pool_pending.first() {
            waits.push(Wait::CreateInFlight {
                pool: pool.name.clone(),
                machines: pool_pending.iter().map(|i| i.name.clone()).collect(),
                since: pool_pending
                    .iter()
                    .map(|i| i.created_at)
                    .min()
                    .unwrap_or(first.created_at),
            });
        }
        if !old.is_empty() {
            waits.push(Wait::Replacing {
                pool: pool.name.clone(),
                outdated: old.len() as u32,
            });
        }

        plan.assessment.pools.insert(
            pool.name.clone(),
            PoolStatus {
                desired: pool.size,
                ready,
                current: mine.len() as u32,
                outdated: old.len() as u32,
            },
        );
        for m in input.machines.iter().filter(|m| m.pool == pool.name) {
            let outdated = old.iter().any(|o| o.name == m.name);
            let ready = not_ready(input, m).is_none();
            plan.assessment
                .machines
                .push(MachineSummary::of(m, outdated, ready));
        }
        let prog = if pool.is_control_plane() {
            &mut cp
        } else {
            &mut wk
        };
        prog.desired += pool.size;
        prog.ready += ready.min(pool.size);
        prog.outdated += old.len() as u32;
        if prog.note.is_none() {
            prog.note = note;
        }
        let pool_done = bad.is_empty()
            && old.is_empty()
            && pool_pending.is_empty()
            && up.len() as u32 == pool.size
            && ready == pool.size;
        converged &= pool_done;

        remove(
            input,
            bad.iter().map(|m| (*m).clone()).collect(),
            DeleteReason::Unhealthy,
            plan,
        );
        // Workers wait for the first control-plane node.
        let may_create = pool.is_control_plane() || cp_initialized;
        if !may_create && pool.size > 0 {
            waiting = true;
            plan.assessment.waits.push(Wait::ControlPlane {
                pool: pool.name.clone(),
            });
            continue;
        }
        // Count per zone: up-to-date machines and pending intents of the current shape.
        let mut have: BTreeMap<&str, u32> = BTreeMap::new();
        for m in &up {
            *have.entry(m.zone.as_str()).or_default() += 1;
        }
        for i in &pool_pending {
            if shape_ok(&i.zone, &i.shape) {
                *have.entry(i.zone.as_str()).or_default() += 1;
            }
        }
        let bootstrap = |first: bool| match pool.role {
            PoolRole::ControlPlane if first => BootstrapRole::Init,
            PoolRole::ControlPlane => BootstrapRole::JoinControlPlane,
            PoolRole::Worker => BootstrapRole::JoinWorker,
        };
        // The first control-plane node initializes the cluster: no healthy control-plane
        // machine exists (a stuck or deleting one does not count) and none is being created.
        let cp_first = pool.is_control_plane()
            && !input.machines.iter().any(|m| {
                m.role == PoolRole::ControlPlane
                    && matches!(m.state, MachineState::Running | MachineState::Pending)
                    && !stuck(m, input.now, input.machine_timeout)
            })
            && pool_pending.is_empty();

        if old.is_empty() {
            let n_have = up.len() as u32 + pool_pending.len() as u32;
            if n_have < pool.size {
                let deficits = deficits(&targets, &have, pool.size - n_have);
                if pool.is_control_plane() {
                    // One control-plane node at a time, each after the previous one runs.
                    if !in_flight {
                        if let Some((zone, _)) = deficits.first() {
                            plan.actions
                                .push(create(pool, zone, 1, &shapes, bootstrap(cp_first)));
                        }
                    }
                } else {
                    for (zone, n) in deficits {
                        plan.actions
                            .push(create(pool, &zone, n, &shapes, bootstrap(false)));
                    }
                }
            } else if n_have > pool.size && !pool.is_control_plane() && pool_pending.is_empty() {
                // Only running machines count: wait for in-flight creates to land first,
                // then the newest go.
                let victims = pick_victims(input, &up, &targets, n_have - pool.size);
                remove(input, victims, DeleteReason::ScaleDown, plan);
            }
        } else if !in_flight && bad.is_empty() {
            // Rolling replacement: one new first, then one old goes.
            let total = (up.len() + old.len()) as u32;
            if total > pool.size {
                // A node already being drained first (a removal a crash interrupted).
                let victim = old
                    .iter()
                    .max_by_key(|m| {
                        (
                            leaving(input, m),
                            !targets.contains_key(&m.zone),
                            m.created_at,
                        )
                    })
                    .map(|m| (*m).clone());
                if let Some(v) = victim {
                    remove(input, vec![v], DeleteReason::Replaced, plan);
                }
            } else {
                let deficits = deficits(&targets, &have, 1);
                if let Some((zone, _)) = deficits.first() {
                    plan.actions
                        .push(create(pool, zone, 1, &shapes, bootstrap(false)));
                }
            }
        }
    }
    cp.done = cp.ready == cp.desired && cp.outdated == 0;
    wk.done = wk.ready == wk.desired && wk.outdated == 0;
    plan.assessment.control_plane = cp;
    plan.assessment.workers = wk;
    plan.assessment.waiting = waiting;
    plan.assessment.converged = converged && plan.actions.is_empty();
}

/// The intents not observed in the cloud yet.
fn unobserved<'a>(input: &PlanInput<'a>) -> Vec<&'a Intent> {
    let observed: BTreeSet<&str> = input.machines.iter().map(|m| m.name.as_str()).collect();
    input
        .intents
        .iter()
        .filter(|i| !observed.contains(i.name.as_str()))
        .collect()
}

/// Re-issues unobserved intents with their recorded tokens (one call per token): the cloud
/// returns what the token created, or creates it now.
fn reissue(pending: &[&Intent], plan: &mut Plan) {
    let mut by_token: BTreeMap<&str, Vec<&Intent>> = BTreeMap::new();
    for i in pending {
        by_token.entry(i.token.as_str()).or_default().push(i);
    }
    for (token, group) in &by_token {
        let first = group[0];
        plan.actions.push(Action::CreateMachines(CreateRequest {
            pool: first.pool.clone(),
            zone: first.zone.clone(),
            count: group.len() as u32,
            shape: first.shape.clone(),
            bootstrap: first.bootstrap,
            reissue: Some((
                token.to_string(),
                group.iter().map(|i| i.name.clone()).collect(),
            )),
        }));
    }
}

fn create(
    pool: &NodePool,
    zone: &str,
    count: u32,
    shapes: &BTreeMap<&str, String>,
    b: BootstrapRole,
) -> Action {
    Action::CreateMachines(CreateRequest {
        pool: pool.name.clone(),
        zone: zone.to_string(),
        count,
        shape: shapes.get(zone).cloned().unwrap_or_default(),
        bootstrap: b,
        reissue: None,
    })
}

/// Zones that need machines, most-needy first, `need` machines in all.
fn deficits(
    targets: &BTreeMap<String, u32>,
    have: &BTreeMap<&str, u32>,
    need: u32,
) -> Vec<(String, u32)> {
    let mut gaps: Vec<(String, u32)> = targets
        .iter()
        .map(|(z, t)| {
            (
                z.clone(),
                t.saturating_sub(*have.get(z.as_str()).unwrap_or(&0)),
            )
        })
        .filter(|(_, g)| *g > 0)
        .collect();
    gaps.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut left = need;
    let mut out = Vec::new();
    for (z, g) in gaps {
        if left == 0 {
            break;
        }
        let n = g.min(left);
        out.push((z, n));
        left -= n;
    }
    // Zones are full but more are needed (cannot happen with balanced targets): first zone.
    if left > 0 {
        if let Some(z) = targets.keys().next() {
            out.push((z.clone(), left));
        }
    }
    out
}

/// A pool spread unevenly (a zone was added, or a zone's machines went) with no room to
/// create in the short zones: the machines beyond their zone's target, newest first, become
/// outdated, so the rolling replacement (surge 1) moves them. Not during a scale-down, which
/// already takes from the fullest zones.
fn rebalance<'m>(
    input: &PlanInput<'_>,
    up: &mut Vec<&'m Machine>,
    old: &mut Vec<&'m Machine>,
    targets: &BTreeMap<String, u32>,
    size: u32,
) {
    let n = up.len() as u32;
    if n > size {
        return;
    }
    let mut count: BTreeMap<&str, u32> = BTreeMap::new();
    for m in up.iter() {
        *count.entry(m.zone.as_str()).or_default() += 1;
    }
    let short: u32 = targets
        .iter()
        .map(|(z, t)| t.saturating_sub(*count.get(z.as_str()).unwrap_or(&0)))
        .sum();
    // Creates fill up to `size`; what they cannot fill must move.
    let moves = short.saturating_sub(size - n);
    if moves == 0 {
        return;
    }
    let movers: BTreeSet<String> = pick_victims(input, up, targets, moves)
        .into_iter()
        .map(|m| m.name)
        .collect();
    let (stay, go): (Vec<&Machine>, Vec<&Machine>) =
        up.iter().partition(|m| !movers.contains(&m.name));
    *up = stay;
    old.extend(go);
}

/// Nodes that move when a pool's zones change (the pool balanced over the old zones, then
/// over the new ones; a scale-down's removals are not moves).
fn zone_moves(o: &NodePool, p: &NodePool) -> u32 {
    let (oz, nz) = (o.fault_domains(), p.fault_domains());
    if oz == nz {
        return 0;
    }
    let have = zone_targets(o.size, &oz);
    let want = zone_targets(p.size, &nz);
    let excess: u32 = have
        .iter()
        .map(|(z, n)| n.saturating_sub(*want.get(z).unwrap_or(&0)))
        .sum();
    excess.saturating_sub(o.size.saturating_sub(p.size))
}

fn zone_reasons(o: &NodePool, p: &NodePool) -> Vec<String> {
    let (oz, nz) = (o.fault_domains(), p.fault_domains());
    let list = |a: &[String], b: &[String]| {
        a.iter()
            .filter(|z| !b.contains(z))
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut r = Vec::new();
    let (added, removed) = (list(&nz, &oz), list(&oz, &nz));
    if !added.is_empty() {
        r.push(format!("zones added: {added}"));
    }
    if !removed.is_empty() {
        r.push(format!("zones removed: {removed}"));
    }
    r
}

/// Machines to remove when scaling down: nodes already being drained (a removal a crash
/// interrupted) first, then from the zones most over target, newest first.
fn pick_victims(
    input: &PlanInput<'_>,
    up: &[&Machine],
    targets: &BTreeMap<String, u32>,
    n: u32,
) -> Vec<Machine> {
    let mut count: BTreeMap<&str, i64> = BTreeMap::new();
    for m in up {
        *count.entry(m.zone.as_str()).or_default() += 1;
    }
    let mut pool: Vec<&Machine> = up.to_vec();
    pool.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.name.cmp(&a.name)));
    let mut out = Vec::new();
    let mut n = n;
    while n > 0 {
        let Some(pos) = pool.iter().position(|m| leaving(input, m)) else {
            break;
        };
        let m = pool.remove(pos);
        if let Some(c) = count.get_mut(m.zone.as_str()) {
            *c -= 1;
        }
        out.push(m.clone());
        n -= 1;
    }
    for _ in 0..n {
        let zone = count
            .iter()
            .max_by_key(|(z, c)| {
                (
                    **c - i64::from(*targets.get(**z).unwrap_or(&0)),
                    std::cmp::Reverse(**z),
                )
            })
            .map(|(z, _)| z.to_string());
        let Some(zone) = zone else { break };
        let Some(pos) = pool.iter().position(|m| m.zone == zone) else {
            break;
        };
        let m = pool.remove(pos);
        if let Some(c) = count.get_mut(zone.as_str()) {
            *c -= 1;
        }
        out.push(m.clone());
    }
    out
}

fn plan_delete(input: &PlanInput<'_>) -> Plan {
    let mut plan = Plan::default();
    plan.assessment.machines = input
        .machines
        .iter()
        .map(|m| MachineSummary::of(m, false, false))
        .collect();
    // A create whose outcome is unknown may have made machines the listing does not show
    // yet: re-issue it (same token) to learn them, so they are deleted, not leaked.
    let pending = unobserved(input);
    if !pending.is_empty() {
        reissue(&pending, &mut plan);
        plan.assessment.waiting = true;
        plan.assessment.waits.push(Wait::Deleting {
            remaining: format!("{} machine(s) whose create is in flight", pending.len()),
        });
        return plan;
    }
    let live: Vec<Machine> = input
        .machines
        .iter()
        .filter(|m| m.state != MachineState::Deleting)
        .cloned()
        .collect();
    if !input.machines.is_empty() {
        plan.assessment.waits.push(Wait::Deleting {
            remaining: format!("{} machine(s)", input.machines.len()),
        });
    }
    if !live.is_empty() {
        plan.actions.push(Action::DeleteMachines {
            machines: live,
            reason: DeleteReason::ClusterDeleted,
        });
        plan.assessment.waiting = true;
    } else if !input.machines.is_empty() {
        plan.assessment.waiting = true;
    } else if !input.infra_deleted {
        plan.assessment.waits.push(Wait::Deleting {
            remaining: "the infrastructure".into(),
        });
        plan.actions.push(Action::DeleteInfrastructure);
    } else {
        plan.actions.push(Action::Finalize);
        plan.assessment.deleted = true;
    }
    plan
}

/// What an update would do to one pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "change")]
pub enum PoolChange {
    /// Nothing.
    NoChange,
    /// A new pool.
    Add {
        /// Nodes created.
        nodes: u32,
    },
    /// The pool goes away.
    Remove {
        /// Nodes deleted.
        nodes: u32,
    },
    /// Size changes.
    Scale {
        /// Old size.
        from: u32,
        /// New size.
        to: u32,
    },
    /// Nodes are replaced one by one (a repave).
    Replace {
        /// Nodes replaced.
        nodes: u32,
        /// What changed.
        reasons: Vec<String>,
        /// New size, when it changes too.
        #[serde(rename = "newSize", skip_serializing_if = "Option::is_none")]
        new_size: Option<u32>,
    },
}

/// A dry run of an update, per pool, with the machines it creates and deletes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdatePreview {
    /// Per pool, in the new spec's order (removed pools last).
    pub pools: Vec<(String, PoolChange)>,
    /// Machines created in all.
    pub creates: u32,
    /// Machines deleted in all.
    pub deletes: u32,
    /// The image changes (new OS or Kubernetes version): every pool is repaved.
    pub image_changes: bool,
}

fn shape_reasons(a: &NodePool, b: &NodePool) -> Vec<String> {
    let mut r = Vec::new();
    let mut diff = |what: &str, x: String, y: String| {
        if x != y {
            r.push(format!("{what}: {x} → {y}"));
        }
    };
    let o = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let n = |v: Option<u32>| v.map_or("-".into(), |x| x.to_string());
    diff("instanceType", o(&a.instance_type), o(&b.instance_type));
    diff("diskType", o(&a.disk_type), o(&b.disk_type));
    diff("diskSizeGb", n(a.disk_size_gb), n(b.disk_size_gb));
    diff("cpu", n(a.cpu), n(b.cpu));
    diff("memoryGb", n(a.memory_gb), n(b.memory_gb));
    if a.placements != b.placements {
        r.push("placements changed".into());
    }
    r
}

/// Dry run: what moving from `old` to `new` (with profiles `old_profile`/`new_profile`) does.
#[must_use]
pub fn preview_update(
    old: &Cluster,
    old_profile: &ClusterProfile,
    new: &Cluster,
    new_profile: &ClusterProfile,
) -> UpdatePreview {
    let sig = |p: &ClusterProfile| image_spec(p).map(|s| s.signature);
    let image_changes = sig(old_profile) != sig(new_profile);
    let mut pools = Vec::new();
    let (mut creates, mut deletes) = (0, 0);
    for p in &new.node_pools {
        let change = match old.pool(&p.name) {
            None => {
                creates += p.size;
                PoolChange::Add { nodes: p.size }
            }
            Some(o) => {
                let mut reasons = shape_reasons(o, p);
                if image_changes {
                    reasons.insert(0, "image (OS/Kubernetes packs) changed".into());
                }
                let moves = zone_moves(o, p);
                if reasons.is_empty() && moves > 0 {
                    // Only the zones changed: the nodes beyond their zone's new share move.
                    creates += moves + p.size.saturating_sub(o.size);
                    deletes += moves + o.size.saturating_sub(p.size);
                    PoolChange::Replace {
                        nodes: moves,
                        reasons: zone_reasons(o, p),
                        new_size: (o.size != p.size).then_some(p.size),
                    }
                } else if !reasons.is_empty() {
                    let replaced = o.size.min(p.size);
                    creates += p.size;
                    deletes += o.size;
                    PoolChange::Replace {
                        nodes: replaced,
                        reasons,
                        new_size: (o.size != p.size).then_some(p.size),
                    }
                } else if o.size != p.size {
                    if p.size > o.size {
                        creates += p.size - o.size;
                    } else {
                        deletes += o.size - p.size;
                    }
                    PoolChange::Scale {
                        from: o.size,
                        to: p.size,
                    }
                } else {
                    PoolChange::NoChange
                }
            }
        };
        pools.push((p.name.clone(), change));
    }
    for o in &old.node_pools {
        if new.pool(&o.name).is_none() {
            deletes += o.size;
            pools.push((o.name.clone(), PoolChange::Remove { nodes: o.size }));
        }
    }
    UpdatePreview {
        pools,
        creates,
        deletes,
        image_changes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::document::{from_text, Format};
    use crate::provider::ImageRef;

    const PROFILE: &str = "name: p\nversion: '1'\ncloud: aws\npacks:\n  - {name: ubuntu, layer: os, version: '22.04'}\n  - {name: kubernetes, layer: kubernetes, version: 1.30.4}\n  - {name: calico, layer: cni, version: 3.28.0}\n";
    const CLUSTER: &str = "name: c\nprofile: {name: p, version: '1'}\ncloudAccount: a\ncloud: {aws: {region: us-east-1}}\nnodePools:\n  - {name: cp, role: controlPlane, size: 3, instanceType: m5.large, availabilityZones: [us-east-1a, us-east-1b, us-east-1c]}\n  - {name: w, role: worker, size: 5, instanceType: m5.large, availabilityZones: [us-east-1a, us-east-1b, us-east-1c]}\n";

    struct Fx {
        spec: Cluster,
        profile: ClusterProfile,
        image: ResolvedImage,
        infra: InfraStatus,
        machines: Vec<Machine>,
        intents: Vec<Intent>,
        lifecycle: Lifecycle,
        infra_deleted: bool,
        now: DateTime<Utc>,
        workload: Option<WorkloadView>,
        policy: NodePolicy,
    }

    impl Fx {
        fn new() -> Fx {
            let profile: ClusterProfile = from_text(PROFILE, Format::Yaml).unwrap();
            let sig = image_spec(&profile).unwrap().signature;
            Fx {
                spec: from_text(CLUSTER, Format::Yaml).unwrap(),
                profile,
                image: ResolvedImage {
                    signature: sig,
                    image: ImageRef {
                        id: "ami-1".into(),
                        customized: false,
                    },
                },
                infra: InfraStatus {
                    ready: true,
                    ..Default::default()
                },
                machines: Vec::new(),
                intents: Vec::new(),
                lifecycle: Lifecycle::Active,
                infra_deleted: false,
                now: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
                workload: None,
                policy: NodePolicy::default(),
            }
        }

        fn shape(&self, pool: usize) -> String {
            shape_hash(&self.spec.node_pools[pool], "", "ami-1")
        }

        fn add(&mut self, pool: usize, zone: &str, state: MachineState, shape: Option<String>) {
            let p = &self.spec.node_pools[pool];
            let n = self.machines.len();
            self.machines.push(Machine {
                id: format!("i-{n}"),
                name: format!("{}-{n}", p.name),
                pool: p.name.clone(),
                role: p.role,
                zone: zone.into(),
                shape: shape.unwrap_or_else(|| self.shape(pool)),
                token: format!("t{n}"),
                state,
                address: None,
                created_at: self.now - chrono::Duration::seconds(600 - n as i64),
            });
        }

        fn plan(&self) -> Plan {
            plan(&PlanInput {
                spec: &self.spec,
                profile: &self.profile,
                lifecycle: self.lifecycle,
                image: Some(&self.image),
                infra: Some(&self.infra),
                infra_stale: false,
                machines: &self.machines,
                intents: &self.intents,
                now: self.now,
                machine_timeout: Duration::from_secs(1200),
                infra_deleted: self.infra_deleted,
                workload: self.workload.as_ref(),
                nodes: self.policy,
                applied_packs: &BTreeMap::new(),
                system_packs: &[],
            })
        }
    }

    fn creates(p: &Plan) -> Vec<(String, String, u32, BootstrapRole)> {
        p.actions
            .iter()
            .filter_map(|a| match a {
                Action::CreateMachines(r) => {
                    Some((r.pool.clone(), r.zone.clone(), r.count, r.bootstrap))
                }
                _ => None,
            })
            .collect()
    }

    fn deletes(p: &Plan) -> Vec<(Vec<String>, DeleteReason)> {
        p.actions
            .iter()
            .filter_map(|a| match a {
                Action::DeleteMachines { machines, reason } => {
                    Some((machines.iter().map(|m| m.name.clone()).collect(), *reason))
                }
                _ => None,
            })
            .collect()
    }

    /// A Ready Node for each running machine; etcd members (healthy) for the control plane.
    fn view_of(machines: &[Machine]) -> WorkloadView {
        use crate::workload::{EtcdMember, NodeInfo};
        let running = machines.iter().filter(|m| m.state == MachineState::Running);
        WorkloadView {
            reachable: true,
            error: None,
            nodes: running
                .clone()
                .map(|m| NodeInfo {
                    name: m.name.clone(),
                    provider_id: None,
                    internal_ips: vec![],
                    ready: true,
                    ready_since: None,
                    unschedulable: false,
                    drain_started: None,
                })
                .collect(),
            etcd: Some(
                running
                    .filter(|m| m.role == PoolRole::ControlPlane)
                    .enumerate()
                    .map(|(i, m)| EtcdMember {
                        id: i as u64 + 1,
                        name: m.name.clone(),
                        peer_urls: vec![],
                        healthy: true,
                        learner: false,
                    })
                    .collect(),
            ),
        }
    }

    fn detaches(p: &Plan) -> Vec<(Vec<String>, DeleteReason)> {
        p.actions
            .iter()
            .filter_map(|a| match a {
                Action::DetachNodes { machines, reason } => {
                    Some((machines.iter().map(|m| m.name.clone()).collect(), *reason))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_running_machine_counts_only_once_its_node_is_ready() {
        let mut fx = Fx::new();
        fx.add(0, "us-east-1a", MachineState::Running, None);
        // No Node yet: the next control-plane node waits, workers wait.
        fx.workload = Some(WorkloadView {
            reachable: true,
            ..WorkloadView::default()
        });
        let p = fx.plan();
        assert!(creates(&p).is_empty(), "{:?}", p.actions);
        assert!(p.assessment.waits.iter().any(
            |w| matches!(w, Wait::NodeNotReady { detail, .. } if detail == "no Node registered")
        ));
        assert_eq!(p.assessment.control_plane.ready, 0);
        let note = p.assessment.control_plane.note.clone().expect("a note");
        assert_eq!(note.0, "NodeNotReady");
        // Node Ready but its etcd member unhealthy: still not ready.
        let mut v = view_of(&fx.machines);
        if let Some(e) = v.etcd.as_mut() {
            e[0].healthy = false;
        }
        fx.workload = Some(v);
        assert!(creates(&fx.plan()).is_empty());
        // Ready and healthy: the second control-plane node and the workers start.
        fx.workload = Some(view_of(&fx.machines));
        let p = fx.plan();
        assert_eq!(p.assessment.control_plane.ready, 1);
        let c = creates(&p);
        assert!(
            c.iter().any(|(pool, _, n, b)| pool == "cp"
                && *n == 1
                && *b == BootstrapRole::JoinControlPlane),
            "{c:?}"
        );
        assert!(c.iter().any(|(pool, ..)| pool == "w"), "{c:?}");
    }

    #[test]
    fn nodes_are_detached_before_their_machines_go() {
        let mut fx = Fx::new();
        for z in ["us-east-1a", "us-east-1b", "us-east-1c"] {
            fx.add(0, z, MachineState::Running, None);
        }
        for z in [
            "us-east-1a",
            "us-east-1b",
            "us-east-1c",
            "us-east-1a",
            "us-east-1b",
        ] {
            fx.add(1, z, MachineState::Running, None);
        }
        fx.spec.node_pools[1].size = 4;
        fx.workload = Some(view_of(&fx.machines));
        let p = fx.plan();
        let d = detaches(&p);
        assert_eq!(d.len(), 1, "{:?}", p.actions);
        assert_eq!(d[0].1, DeleteReason::ScaleDown);
        assert!(
            deletes(&p).is_empty(),
            "no machine goes before its node: {:?}",
            p.actions
        );
        // Its Node is gone (detached): now the machine goes, the same one.
        let victim = d[0].0[0].clone();
        if let Some(v) = fx.workload.as_mut() {
            v.nodes.retain(|n| n.name != victim);
        }
        let p = fx.plan();
        assert!(detaches(&p).is_empty());
        assert_eq!(deletes(&p), vec![(vec![victim], DeleteReason::ScaleDown)]);
        // Without a workload connection the machine goes directly (machines only).
        fx.workload = None;
        assert_eq!(detaches(&fx.plan()).len(), 0);
        assert_eq!(deletes(&fx.plan()).len(), 1);
    }

    #[test]
    fn a_node_already_draining_is_the_victim_after_a_crash() {
        let mut fx = Fx::new();
        fx.add(0, "us-east-1a", MachineState::Running, None);
        for z in [
            "us-east-1a",
            "us-east-1b",
            "us-east-1c",
            "us-east-1a",
            "us-east-1b",
        ] {
            fx.add(1, z, MachineState::Running, None);
        }
        fx.spec.node_pools[0].size = 1;
        fx.spec.node_pools[1].size = 4;
        let mut v = view_of(&fx.machines);
        // The oldest worker was being drained when the engine stopped.
        v.nodes[1].drain_started = Some(fx.now);
        v.nodes[1].unschedulable = true;
        let draining = v.nodes[1].name.clone();
        fx.workload = Some(v);
        let d = detaches(&fx.plan());
        assert_eq!(d, vec![(vec![draining], DeleteReason::ScaleDown)]);
    }

    #[test]
    fn a_control_plane_member_goes_only_with_a_healthy_quorum_left() {
        let mut fx = Fx::new();
        fx.spec.node_pools.truncate(1);
        let old = Some("old-shape".to_string());
        for z in ["us-east-1a", "us-east-1b", "us-east-1c"] {
            fx.add(0, z, MachineState::Running, old.clone());
        }
        // The surge machine of the replacement is up (a 4th member).
        fx.add(0, "us-east-1a", MachineState::Running, None);
        fx.workload = Some(view_of(&fx.machines));
        let p = fx.plan();
        assert_eq!(detaches(&p).len(), 1, "{:?}", p.actions);
        // A remaining member is unhealthy: its machine is not a ready node, nothing moves.
        if let Some(e) = fx.workload.as_mut().and_then(|v| v.etcd.as_mut()) {
            e[1].healthy = false;
        }
        let p = fx.plan();
        assert!(
            detaches(&p).is_empty() && deletes(&p).is_empty(),
            "{:?}",
            p.actions
        );
        assert!(p.assessment.waits.iter().any(
            |w| matches!(w, Wait::NodeNotReady { detail, .. } if detail.contains("etcd member"))
        ));
        // An unhealthy member of no machine: removed first (quorum allows), the old machine's
        // member waits until every other member is healthy.
        fx.workload = Some(view_of(&fx.machines));
        if let Some(e) = fx.workload.as_mut().and_then(|v| v.etcd.as_mut()) {
            e.push(crate::workload::EtcdMember {
                id: 99,
                name: "cp-gone".into(),
                peer_urls: vec![],
                healthy: false,
                learner: false,
            });
        }
        let p = fx.plan();
        assert!(detaches(&p).is_empty(), "{:?}", p.actions);
        assert!(p
            .actions
            .iter()
            .any(|a| matches!(a, Action::RemoveEtcdMembers { .. })));
        assert!(p
            .assessment
            .waits
            .iter()
            .any(|w| matches!(w, Wait::EtcdQuorum { .. })));
    }

    #[test]
    fn an_unreachable_api_server_holds_removals_of_running_machines() {
        let mut fx = Fx::new();
        for z in ["us-east-1a", "us-east-1b", "us-east-1c"] {
            fx.add(0, z, MachineState::Running, None);
        }
        for z in [
            "us-east-1a",
            "us-east-1b",
            "us-east-1c",
            "us-east-1a",
            "us-east-1b",
            "us-east-1c",
        ] {
            fx.add(1, z, MachineState::Running, None);
        }
        fx.workload = Some(WorkloadView {
            reachable: false,
            error: Some("connection refused".into()),
            ..WorkloadView::default()
        });
        let p = fx.plan();
        assert!(
            deletes(&p).is_empty() && detaches(&p).is_empty(),
            "{:?}",
            p.actions
        );
        assert!(p
            .assessment
            .waits
            .iter()
            .any(|w| matches!(w, Wait::ApiServer { .. })));
        assert!(!p.assessment.converged);
    }

    #[test]
    fn a_node_not_ready_past_the_timeout_is_replaced_only_when_enabled() {
        let mut fx = Fx::new();
        fx.spec.node_pools[0].size = 1;
        fx.add(0, "us-east-1a", MachineState::Running, None);
        for z in [
            "us-east-1a",
            "us-east-1b",
            "us-east-1c",
            "us-east-1a",
            "us-east-1b",
        ] {
            fx.add(1, z, MachineState::Running, None);
        }
        let mut v = view_of(&fx.machines);
        v.nodes[2].ready = false;
        v.nodes[2].ready_since = Some(fx.now - chrono::Duration::seconds(3600));
        let sick = v.nodes[2].name.clone();
        fx.workload = Some(v);
        fx.policy.ready_timeout = Duration::from_secs(300);
        let p = fx.plan();
        assert!(detaches(&p).is_empty() && deletes(&p).is_empty());
        assert!(!p.assessment.converged);
        let note = p.assessment.workers.note.clone().expect("note");
        assert!(
            note.1.contains(&sick) && note.1.contains("past the node ready timeout"),
            "{note:?}"
        );
        fx.policy.replace_unready = true;
        let p = fx.plan();
        assert_eq!(detaches(&p), vec![(vec![sick], DeleteReason::Unhealthy)]);
    }

    #[test]
    fn stale_etcd_members_are_removed_when_quorum_allows() {
        let mut fx = Fx::new();
        for z in ["us-east-1a", "us-east-1b", "us-east-1c"] {
            fx.add(0, z, MachineState::Running, None);
        }
        let mut v = view_of(&fx.machines);
        if let Some(e) = v.etcd.as_mut() {
            e.push(crate::workload::EtcdMember {
                id: 99,
                name: "cp-gone".into(),
                peer_urls: vec![],
                healthy: false,
                learner: false,
            });
        }
        fx.workload = Some(v);
        let p = fx.plan();
        assert!(p.actions.iter().any(|a| matches!(a, Action::RemoveEtcdMembers { members } if members == &vec![(99, "cp-gone".to_string())])), "{:?}", p.actions);
        // A member named otherwise (kubeadm's host name) whose peer URL is a machine's
        // address is that machine's: kept.
        fx.machines[0].address = Some("10.0.1.5".parse().unwrap());
        if let Some(e) = fx.workload.as_mut().and_then(|v| v.etcd.as_mut()) {
            e[3].peer_urls = vec!["https://10.0.1.5:2380".into()];
        }
        let p = fx.plan();
        assert!(
            !p.actions
                .iter()
                .any(|a| matches!(a, Action::RemoveEtcdMembers { .. })),
            "{:?}",
            p.actions
        );
    }

    #[test]
    fn a_new_zone_moves_only_what_the_balance_needs_one_at_a_time() {
        let mut fx = Fx::new();
        fx.spec.node_pools.truncate(2);
        fx.spec.node_pools[1].size = 4;
        fx.spec.node_pools[1].availability_zones = vec!["us-east-1a".into(), "us-east-1b".into()];
        for z in ["us-east-1a", "us-east-1b", "us-east-1c"] {
            fx.add(0, z, MachineState::Running, None);
        }
        for z in ["us-east-1a", "us-east-1a", "us-east-1b", "us-east-1b"] {
            fx.add(1, z, MachineState::Running, None);
        }
        assert!(fx.plan().actions.is_empty());
        fx.spec.node_pools[1]
            .availability_zones
            .push("us-east-1c".into());
        let p = fx.plan();
        // Surge 1: a node in the new zone first, nothing deleted yet.
        assert_eq!(
            creates(&p),
            [(
                "w".into(),
                "us-east-1c".into(),
                1,
                BootstrapRole::JoinWorker
            )]
        );
        assert!(deletes(&p).is_empty());
        assert_eq!(p.assessment.pools["w"].outdated, 1);
        // Once it runs, the pool is one over its size: the newest node of the fullest zone
        // (b) goes.
        fx.add(1, "us-east-1c", MachineState::Running, None);
        let p = fx.plan();
        assert_eq!(
            deletes(&p),
            [(vec!["w-6".to_string()], DeleteReason::ScaleDown)]
        );
        assert!(creates(&p).is_empty());
    }

    #[test]
    fn a_new_placement_domain_keeps_the_shape_of_machines_in_the_others() {
        let mut fx = Fx::new();
        let domain = |cc: &str| -> crate::model::PlacementDomain {
            from_text(
                &format!("{{computeCluster: {cc}, datastore: ds, network: net}}"),
                Format::Yaml,
            )
            .unwrap()
        };
        fx.spec.node_pools[1].availability_zones.clear();
        fx.spec.node_pools[1].placements = vec![domain("a"), domain("b")];
        let before = shape_hash(&fx.spec.node_pools[1], "placement-0", "ami-1");
        fx.spec.node_pools[1].placements.push(domain("c"));
        assert_eq!(
            shape_hash(&fx.spec.node_pools[1], "placement-0", "ami-1"),
            before
        );
        fx.spec.node_pools[1].placements[0] = domain("z");
        assert_ne!(
            shape_hash(&fx.spec.node_pools[1], "placement-0", "ami-1"),
            before
        );
    }

    #[test]
    fn zones_are_balanced() {
        let z: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            zone_targets(5, &z).values().copied().collect::<Vec<_>>(),
            [2, 2, 1]
        );
        assert_eq!(zone_targets(0, &z).values().sum::<u32>(), 0);
        assert_eq!(zone_targets(7, &[String::new()])[""], 7);
    }

    #[test]
    fn image_then_infrastructure_then_first_control_plane_node() {
        let fx = Fx::new();
        let p = plan(&PlanInput {
            image: None,
            infra: None,
            ..PlanInput {
                spec: &fx.spec,
                profile: &fx.profile,
                lifecycle: fx.lifecycle,
                image: None,
                infra: None,
                infra_stale: true,
                machines: &[],
                intents: &[],
                now: fx.now,
                machine_timeout: Duration::from_secs(60),
                infra_deleted: false,
                workload: None,
                nodes: NodePolicy::default(),
                applied_packs: &BTreeMap::new(),
                system_packs: &[],
            }
        });
        assert!(matches!(p.actions.as_slice(), [Action::EnsureImage { .. }]));
        let p = plan(&PlanInput {
            spec: &fx.spec,
            profile: &fx.profile,
            lifecycle: fx.lifecycle,
            image: Some(&fx.image),
            infra: None,
            infra_stale: true,
            machines: &[],
            intents: &[],
            now: fx.now,
            machine_timeout: Duration::from_secs(60),
            infra_deleted: false,
            workload: None,
            nodes: NodePolicy::default(),
            applied_packs: &BTreeMap::new(),
            system_packs: &[],
        });
        assert_eq!(p.actions, vec![Action::EnsureInfrastructure]);
        let p = fx.plan();
        assert_eq!(
            creates(&p),
            [("cp".into(), "us-east-1a".into(), 1, BootstrapRole::Init)]
        );
        assert!(!p.assessment.converged);
    }

    #[test]
    fn control_plane_one_at_a_time_workers_after_the_first() {
        let mut fx = Fx::new();
        fx.add(0, "us-east-1a", MachineState::Pending, None);
        let p = fx.plan();
        assert!(creates(&p).is_empty(), "waits for the first node to run");
        assert!(p.assessment.waiting);
        fx.machines[0].state = MachineState::Running;
        let p = fx.plan();
        assert_eq!(
            creates(&p),
            [
                (
                    "cp".into(),
                    "us-east-1b".into(),
                    1,
                    BootstrapRole::JoinControlPlane
                ),
                (
                    "w".into(),
                    "us-east-1a".into(),
                    2,
                    BootstrapRole::JoinWorker
                ),
                (
                    "w".into(),
                    "us-east-1b".into(),
                    2,
                    BootstrapRole::JoinWorker
                ),
                (
                    "w".into(),
                    "us-east-1c".into(),
                    1,
                    BootstrapRole::JoinWorker
                ),
            ]
        );
    }

    #[test]
    fn converged_plans_nothing() {
        let mut fx = Fx::new();
        for z in ["us-east-1a", "us-east-1b", "us-east-1c"] {
            fx.add(0, z, MachineState::Running, None);
        }
        for z in [
            "us-east-1a",
            "us-east-1a",
            "us-east-1b",
            "us-east-1b",
            "us-east-1c",
        ] {
            fx.add(1, z, MachineState::Running, None);
        }
        let p = fx.plan();
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert!(p.assessment.converged);
        assert!(p.assessment.control_plane.done && p.assessment.workers.done);
    }

    fn converged() -> Fx {
        let mut fx = Fx::new();
        for z in ["us-east-1a", "us-east-1b", "us-east-1c"] {
            fx.add(0, z, MachineState::Running, None);
        }
        for z in [
            "us-east-1a",
            "us-east-1a",
            "us-east-1b",
            "us-east-1b",
            "us-east-1c",
        ] {
            fx.add(1, z, MachineState::Running, None);
        }
        fx
    }

    #[test]
    fn scale_down_takes_from_the_fullest_zone_newest_first() {
        let mut fx = converged();
        fx.spec.node_pools[1].size = 3;
        let d = deletes(&fx.plan());
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].1, DeleteReason::ScaleDown);
        // w-3/w-4 in a, w-5/w-6 in b, w-7 in c (target 1 each): the newest of a, then of b.
        assert_eq!(d[0].0, ["w-4", "w-6"]);
    }

    #[test]
    fn rolling_replacement_is_one_at_a_time_with_surge() {
        let mut fx = converged();
        fx.spec.node_pools[1].instance_type = Some("m5.xlarge".into());
        let p = fx.plan();
        assert_eq!(creates(&p).len(), 1, "one new node first");
        assert!(deletes(&p).is_empty());
        // The new node boots: nothing else happens.
        let new_shape = fx.shape(1);
        fx.add(
            1,
            "us-east-1c",
            MachineState::Pending,
            Some(new_shape.clone()),
        );
        let p = fx.plan();
        assert!(p.actions.is_empty());
        assert_eq!(p.assessment.workers.outdated, 5);
        // It runs: one old node goes.
        fx.machines.last_mut().unwrap().state = MachineState::Running;
        let d = deletes(&fx.plan());
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0.len(), 1);
        assert_eq!(d[0].1, DeleteReason::Replaced);
    }

    #[test]
    fn failed_and_stuck_machines_are_replaced() {
        let mut fx = converged();
        fx.machines[4].state = MachineState::Failed;
        fx.machines[5].state = MachineState::Pending;
        fx.machines[5].created_at = fx.now - chrono::Duration::hours(2);
        let p = fx.plan();
        let d = deletes(&p);
        assert_eq!(
            d,
            [(
                vec!["w-4".to_string(), "w-5".to_string()],
                DeleteReason::Unhealthy
            )]
        );
        let c = creates(&p);
        assert_eq!(c.iter().map(|x| x.2).sum::<u32>(), 2);
    }

    #[test]
    fn a_stuck_first_node_is_replaced_by_a_node_that_initializes() {
        let mut fx = Fx::new();
        fx.add(0, "us-east-1a", MachineState::Pending, None);
        fx.machines[0].created_at = fx.now - chrono::Duration::hours(1);
        let p = fx.plan();
        assert_eq!(deletes(&p)[0].1, DeleteReason::Unhealthy);
        assert_eq!(
            creates(&p),
            [("cp".into(), "us-east-1a".into(), 1, BootstrapRole::Init)]
        );
    }

    #[test]
    fn no_scale_down_while_creates_are_in_flight() {
        let mut fx = converged();
        fx.intents.push(Intent {
            name: "w-new".into(),
            token: "tok".into(),
            pool: "w".into(),
            zone: "us-east-1c".into(),
            shape: fx.shape(1),
            bootstrap: BootstrapRole::JoinWorker,
            created_at: fx.now,
        });
        fx.spec.node_pools[1].size = 2;
        let p = fx.plan();
        assert!(
            deletes(&p).is_empty(),
            "running machines are not deleted for intents"
        );
        assert_eq!(creates(&p).len(), 1, "the intent is re-issued first");
    }

    #[test]
    fn delete_resolves_pending_intents_before_the_network() {
        let mut fx = Fx::new();
        fx.lifecycle = Lifecycle::Deleting;
        fx.intents.push(Intent {
            name: "cp-x".into(),
            token: "tok".into(),
            pool: "cp".into(),
            zone: "us-east-1a".into(),
            shape: fx.shape(0),
            bootstrap: BootstrapRole::Init,
            created_at: fx.now,
        });
        let p = fx.plan();
        assert!(matches!(&p.actions[..], [Action::CreateMachines(r)] if r.reissue.is_some()));
    }

    #[test]
    fn recorded_intents_are_reissued_not_duplicated() {
        let mut fx = converged();
        fx.machines.retain(|m| m.name != "w-7");
        fx.intents.push(Intent {
            name: "w-new".into(),
            token: "tok-1".into(),
            pool: "w".into(),
            zone: "us-east-1b".into(),
            shape: fx.shape(1),
            bootstrap: BootstrapRole::JoinWorker,
            created_at: fx.now,
        });
        let p = fx.plan();
        assert_eq!(p.actions.len(), 1, "{:?}", p.actions);
        match &p.actions[0] {
            Action::CreateMachines(r) => {
                assert_eq!(
                    r.reissue,
                    Some(("tok-1".to_string(), vec!["w-new".to_string()]))
                );
            }
            a => panic!("{a:?}"),
        }
    }

    #[test]
    fn removed_pools_go_and_delete_walks_machines_then_infrastructure() {
        let mut fx = converged();
        fx.spec.node_pools.pop();
        let d = deletes(&fx.plan());
        assert_eq!(d[0].0.len(), 5);
        assert_eq!(d[0].1, DeleteReason::PoolRemoved);

        let mut fx = converged();
        fx.lifecycle = Lifecycle::Deleting;
        let d = deletes(&fx.plan());
        assert_eq!(d[0].0.len(), 8);
        fx.machines
            .iter_mut()
            .for_each(|m| m.state = MachineState::Deleting);
        assert!(fx.plan().actions.is_empty(), "waits for the machines to go");
        fx.machines.clear();
        assert_eq!(fx.plan().actions, vec![Action::DeleteInfrastructure]);
        fx.infra_deleted = true;
        let p = fx.plan();
        assert_eq!(p.actions, vec![Action::Finalize]);
        assert!(p.assessment.deleted);
    }

    #[test]
    fn preview_names_scale_replace_add_remove() {
        let fx = Fx::new();
        let mut new = fx.spec.clone();
        new.node_pools[1].size = 7;
        new.node_pools[0].instance_type = Some("m5.xlarge".into());
        let mut extra = new.node_pools[1].clone();
        extra.name = "gpu".into();
        extra.size = 2;
        new.node_pools.push(extra);
        let p = preview_update(&fx.spec, &fx.profile, &new, &fx.profile);
        assert!(
            matches!(&p.pools[0].1, PoolChange::Replace { nodes: 3, reasons, .. } if reasons[0].contains("m5.large → m5.xlarge"))
        );
        assert_eq!(p.pools[1].1, PoolChange::Scale { from: 5, to: 7 });
        assert_eq!(p.pools[2].1, PoolChange::Add { nodes: 2 });
        assert_eq!((p.creates, p.deletes), (3 + 2 + 2, 3));
        let mut fewer = fx.spec.clone();
        fewer.node_pools.pop();
        let p = preview_update(&fx.spec, &fx.profile, &fewer, &fx.profile);
        assert_eq!(
            p.pools[1],
            ("w".to_string(), PoolChange::Remove { nodes: 5 })
        );
        let mut upgraded = fx.profile.clone();
        upgraded.packs[1].version = "1.31.0".into();
        let p = preview_update(&fx.spec, &fx.profile, &fx.spec, &upgraded);
        assert!(p.image_changes);
        assert_eq!(p.creates, 8);
    }
}

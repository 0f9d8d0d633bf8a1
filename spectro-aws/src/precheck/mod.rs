//! Pre-checks on AWS, before a cluster's first create: the account's permissions against
//! every IAM action the provider calls ([`REQUIRED_ACTIONS`]), and the region's capacity
//! against what the cluster needs (vCPUs or instances, VPCs, Internet gateways, NAT gateways
//! per zone, Elastic IPs, classic load balancers: the reference doc's prerequisites).
//!
//! - Permissions: `iam:SimulatePrincipalPolicy` for the caller (a user, or the role behind an
//!   assumed-role session); where it does not answer, the principal's identity policies
//!   (attached, inline, its groups') are read and judged here ([`policy::evaluate`]). Root
//!   has every permission.
//! - Capacity: Service Quotas' applied values (EC2 falls back to `DescribeAccountAttributes`:
//!   `max-instances`, `vpc-max-elastic-ips`), minus what the region holds now, minus what
//!   clusters pre-checked a moment ago reserved.
//!
//! One [`AccountView`] per (account, region) serves every cluster for a short time (one set
//! of reads for a fleet created together, not one per cluster); each passing cluster
//! reserves what it needs in it, so the next one does not count the same VPC twice. What
//! cannot be read is reported as not checked, never as missing. Planning ([`needs`],
//! [`judge`]) is pure; [`gather`] does the reads.

pub mod policy;

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::Filter;
use spectro_core::model::{CloudPlacement, Cluster};
use spectro_core::precheck::{Precheck, Shortfall};
use spectro_core::provider::TAG_CLUSTER_ID;

use crate::client::AwsClients;
use crate::error::{from_sdk, AwsError};

/// The instance type of a pool that names none.
pub const DEFAULT_INSTANCE_TYPE: &str = "m5.large";

/// Every IAM action the provider's calls need (EC2, classic ELB). The reference doc's policy
/// has all of them but `ec2:ReplaceRoute` and `ec2:ReplaceRouteTableAssociation`, used when
/// a zone's route moves to another NAT gateway.
pub const REQUIRED_ACTIONS: &[&str] = &[
    "ec2:AllocateAddress",
    "ec2:AssociateRouteTable",
    "ec2:AttachInternetGateway",
    "ec2:AuthorizeSecurityGroupIngress",
    "ec2:CreateInternetGateway",
    "ec2:CreateNatGateway",
    "ec2:CreateRoute",
    "ec2:CreateRouteTable",
    "ec2:CreateSecurityGroup",
    "ec2:CreateSubnet",
    "ec2:CreateTags",
    "ec2:CreateVpc",
    "ec2:DeleteInternetGateway",
    "ec2:DeleteNatGateway",
    "ec2:DeleteRouteTable",
    "ec2:DeleteSecurityGroup",
    "ec2:DeleteSubnet",
    "ec2:DeleteVpc",
    "ec2:DescribeAddresses",
    "ec2:DescribeImages",
    "ec2:DescribeInstances",
    "ec2:DescribeInternetGateways",
    "ec2:DescribeNatGateways",
    "ec2:DescribeRouteTables",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSubnets",
    "ec2:DescribeVpcAttribute",
    "ec2:DescribeVpcs",
    "ec2:DetachInternetGateway",
    "ec2:DisassociateRouteTable",
    "ec2:ModifyVpcAttribute",
    "ec2:ReleaseAddress",
    "ec2:ReplaceRoute",
    "ec2:ReplaceRouteTableAssociation",
    "ec2:RevokeSecurityGroupIngress",
    "ec2:RunInstances",
    "ec2:TerminateInstances",
    "elasticloadbalancing:AddTags",
    "elasticloadbalancing:ConfigureHealthCheck",
    "elasticloadbalancing:CreateLoadBalancer",
    "elasticloadbalancing:DeleteLoadBalancer",
    "elasticloadbalancing:DeregisterInstancesFromLoadBalancer",
    "elasticloadbalancing:DescribeLoadBalancers",
    "elasticloadbalancing:RegisterInstancesWithLoadBalancer",
];

/// Service Quotas codes (service, code) of the quotas checked.
pub mod codes {
    /// EC2: running On-Demand standard (A, C, D, H, I, M, R, T, Z) instances, in vCPUs.
    pub const VCPUS: (&str, &str) = ("ec2", "L-1216C47A");
    /// EC2: Elastic IP addresses (EC2-VPC).
    pub const EIPS: (&str, &str) = ("ec2", "L-0263D0A3");
    /// VPC: VPCs per region.
    pub const VPCS: (&str, &str) = ("vpc", "L-F678F1CE");
    /// VPC: Internet gateways per region.
    pub const IGWS: (&str, &str) = ("vpc", "L-A4707A72");
    /// VPC: NAT gateways per availability zone.
    pub const NATS: (&str, &str) = ("vpc", "L-FE5A380F");
    /// Elastic Load Balancing: classic load balancers per region.
    pub const ELBS: (&str, &str) = ("elasticloadbalancing", "L-E9E9831D");
}

/// True for the instance families the standard On-Demand vCPU quota covers (A, C, D, H, I,
/// M, R, T, Z); GPU, FPGA, high-memory, Inferentia, Trainium, DL, HPC and Mac instances have
/// quotas of their own.
pub fn standard_family(instance_type: &str) -> bool {
    let family = instance_type
        .split('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let other = ["inf", "hpc", "mac", "dl", "trn"];
    family.starts_with(['a', 'c', 'd', 'h', 'i', 'm', 'r', 't', 'z'])
        && !other.iter().any(|o| family.starts_with(o))
}

/// What a cluster needs from its account and region at creation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// vCPUs of standard-family instances (nodes and bastion).
    pub vcpus: u64,
    /// Instances (nodes and bastion).
    pub instances: u64,
    /// VPCs (1 unless the cluster goes into the user's VPC).
    pub vpcs: u64,
    /// Internet gateways.
    pub igws: u64,
    /// A NAT gateway in each of these zones.
    pub nat_zones: BTreeSet<String>,
    /// Elastic IPs (one per NAT gateway).
    pub eips: u64,
    /// Classic load balancers (the API server's).
    pub elbs: u64,
    /// Instance types whose vCPUs are unknown (not offered, or not read).
    pub unknown_types: BTreeSet<String>,
}

impl Needs {
    /// What is left to create once `held` (the cluster's own resources, found by its tag:
    /// a create interrupted by a crash) exists.
    pub fn without(mut self, held: &Held, vcpus_of: &BTreeMap<String, u32>) -> Needs {
        for (ty, count) in &held.instances_by_type {
            self.instances = self.instances.saturating_sub(*count);
            if standard_family(ty) {
                let v = vcpus_of.get(ty).copied().unwrap_or(0);
                self.vcpus = self.vcpus.saturating_sub(count * u64::from(v));
            }
        }
        self.vpcs = self.vpcs.saturating_sub(held.vpcs);
        self.igws = self.igws.saturating_sub(held.igws);
        self.eips = self.eips.saturating_sub(held.eips);
        self.nat_zones.retain(|z| !held.nat_zones.contains(z));
        self
    }
}

/// What one cluster already holds in the region (by its tag).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    /// Pending or running instances by type.
    pub instances_by_type: BTreeMap<String, u64>,
    /// VPCs.
    pub vpcs: u64,
    /// Internet gateways.
    pub igws: u64,
    /// Elastic IPs.
    pub eips: u64,
    /// Zones of its pending or available NAT gateways.
    pub nat_zones: BTreeSet<String>,
}

/// Instance types a cluster's nodes (and bastion) use.
pub fn instance_types(spec: &Cluster) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = spec
        .node_pools
        .iter()
        .map(|p| {
            p.instance_type
                .clone()
                .unwrap_or_else(|| DEFAULT_INSTANCE_TYPE.to_string())
        })
        .collect();
    if has_bastion(spec) {
        out.insert(crate::provider::BASTION_TYPE.to_string());
    }
    out
}

/// A bastion goes into the first public subnet: always with a spectro-made VPC, and with the
/// user's VPC when it names a public subnet.
fn has_bastion(spec: &Cluster) -> bool {
    match &spec.cloud {
        CloudPlacement::Aws(a) => a
            .static_placement
            .as_ref()
            .is_none_or(|sp| sp.subnets.iter().any(|z| z.public_subnet_id.is_some())),
        _ => false,
    }
}

/// What `spec` needs, given the vCPUs of the instance types read so far.
pub fn needs(spec: &Cluster, vcpus_of: &BTreeMap<String, u32>) -> Needs {
    let mut n = Needs::default();
    let add = |ty: &str, count: u64, n: &mut Needs| {
        n.instances += count;
        if !standard_family(ty) {
            return;
        }
        match vcpus_of.get(ty) {
            Some(v) => n.vcpus += count * u64::from(*v),
            None => {
                n.unknown_types.insert(ty.to_string());
            }
        }
    };
    for p in &spec.node_pools {
        let ty = p.instance_type.as_deref().unwrap_or(DEFAULT_INSTANCE_TYPE);
        add(ty, u64::from(p.size), &mut n);
    }
    if has_bastion(spec) {
        add(crate::provider::BASTION_TYPE, 1, &mut n);
    }
    let own_network = matches!(&spec.cloud, CloudPlacement::Aws(a) if a.static_placement.is_none());
    if own_network {
        n.vpcs = 1;
        n.igws = 1;
        n.nat_zones = spec
            .node_pools
            .iter()
            .flat_map(|p| p.availability_zones.iter().cloned())
            .collect();
        n.eips = n.nat_zones.len() as u64;
    }
    n.elbs = 1;
    n
}

/// A quota's value and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Quota {
    /// The limit.
    pub value: u64,
    /// How it was read (`Service Quotas L-F678F1CE`, `DescribeAccountAttributes max-instances`).
    pub source: String,
}

/// The region's quotas (`None`: could not be read).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Quotas {
    /// Standard-family vCPUs.
    pub vcpus: Option<Quota>,
    /// Instances (EC2's older limit, read when the vCPU quota is not).
    pub instances: Option<Quota>,
    /// VPCs.
    pub vpcs: Option<Quota>,
    /// Internet gateways.
    pub igws: Option<Quota>,
    /// NAT gateways per zone.
    pub nats_per_zone: Option<Quota>,
    /// Elastic IPs.
    pub eips: Option<Quota>,
    /// Classic load balancers.
    pub elbs: Option<Quota>,
}

/// What the region holds now (`None`: could not be read).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// vCPUs of pending and running standard-family instances (`None` when some type's
    /// vCPUs are unknown).
    pub vcpus: Option<u64>,
    /// Pending and running instances.
    pub instances: Option<u64>,
    /// VPCs.
    pub vpcs: Option<u64>,
    /// Internet gateways.
    pub igws: Option<u64>,
    /// Pending and available NAT gateways by zone.
    pub nats_by_zone: Option<BTreeMap<String, u64>>,
    /// Elastic IPs.
    pub eips: Option<u64>,
    /// Classic load balancers.
    pub elbs: Option<u64>,
    /// What each cluster holds, by cluster id (its tag).
    pub own: BTreeMap<String, Held>,
    /// The names of the classic load balancers.
    pub lb_names: BTreeSet<String>,
}

/// The shortfalls of `need` against the quotas, the usage and what `reserved` (other
/// clusters pre-checked a moment ago) holds; `unchecked` names what could not be judged.
pub fn judge(
    region: &str,
    need: &Needs,
    quotas: &Quotas,
    usage: &Usage,
    reserved: &[&Needs],
    unchecked: &mut Vec<String>,
) -> Vec<Shortfall> {
    let mut out = Vec::new();
    let held = |f: &dyn Fn(&Needs) -> u64| reserved.iter().map(|r| f(r)).sum::<u64>();
    let mut check = |what: &str,
                     unit: &str,
                     needed: u64,
                     quota: &Option<Quota>,
                     used: Option<u64>,
                     reserved: u64,
                     unchecked: &mut Vec<String>| {
        if needed == 0 {
            return true;
        }
        match (quota, used) {
            (Some(q), Some(u)) => {
                let left = q.value.saturating_sub(u).saturating_sub(reserved);
                if left < needed {
                    let mut resource = format!("{what} (quota {}, {u} in use", q.value);
                    if reserved > 0 {
                        resource
                            .push_str(&format!(", {reserved} reserved by clusters being created"));
                    }
                    resource.push(')');
                    out.push(Shortfall::new(resource, needed, left, unit));
                }
                true
            }
            (None, _) => {
                unchecked.push(format!("{what}: the quota could not be read"));
                false
            }
            (Some(_), None) => {
                unchecked.push(format!("{what}: the usage could not be read"));
                false
            }
        }
    };
    let vcpus_checked = need.unknown_types.is_empty()
        && quotas.vcpus.is_some()
        && check(
            &format!("vCPUs of running On-Demand standard instances in {region}"),
            "vCPUs",
            need.vcpus,
            &quotas.vcpus,
            usage.vcpus,
            held(&|r| r.vcpus),
            unchecked,
        );
    if !vcpus_checked {
        if !need.unknown_types.is_empty() {
            unchecked.push(format!(
                "vCPUs in {region}: the vCPUs of {} could not be read",
                need.unknown_types
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        check(
            &format!("running instances in {region}"),
            "instances",
            need.instances,
            &quotas.instances,
            usage.instances,
            held(&|r| r.instances),
            unchecked,
        );
    }
    check(
        &format!("VPCs in {region}"),
        "VPCs",
        need.vpcs,
        &quotas.vpcs,
        usage.vpcs,
        held(&|r| r.vpcs),
        unchecked,
    );
    check(
        &format!("Internet gateways in {region}"),
        "Internet gateways",
        need.igws,
        &quotas.igws,
        usage.igws,
        held(&|r| r.igws),
        unchecked,
    );
    for zone in &need.nat_zones {
        let used = usage
            .nats_by_zone
            .as_ref()
            .map(|m| m.get(zone).copied().unwrap_or(0));
        let what = format!("NAT gateways in zone {zone}");
        if !check(
            &what,
            "NAT gateways",
            1,
            &quotas.nats_per_zone,
            used,
            held(&|r| u64::from(r.nat_zones.contains(zone))),
            unchecked,
        ) {
            break;
        }
    }
    check(
        &format!("Elastic IP addresses in {region}"),
        "Elastic IPs",
        need.eips,
        &quotas.eips,
        usage.eips,
        held(&|r| r.eips),
        unchecked,
    );
    check(
        &format!("classic load balancers in {region}"),
        "load balancers",
        need.elbs,
        &quotas.elbs,
        usage.elbs,
        held(&|r| r.elbs),
        unchecked,
    );
    out
}

/// One account and region as pre-checks see it for a short while: permissions, quotas,
/// usage, the vCPUs of instance types, and the reservations of clusters that passed.
#[derive(Debug, Clone)]
pub struct AccountView {
    /// When it was read.
    pub read_at: tokio::time::Instant,
    /// Missing permissions and what could not be checked about them.
    pub permissions: Precheck,
    /// The quotas.
    pub quotas: Quotas,
    /// The usage.
    pub usage: Usage,
    /// vCPUs by instance type.
    pub vcpus: BTreeMap<String, u32>,
    /// What each cluster that passed since (by name) needs.
    pub reserved: BTreeMap<String, Needs>,
}

impl AccountView {
    /// Judges `spec` (the cluster `cluster_id`) in this view: what it already holds is
    /// not needed again (a create a crash interrupted); a cluster that passes reserves
    /// what it still needs.
    pub fn check(&mut self, region: &str, spec: &Cluster, cluster_id: &str) -> Precheck {
        let mut need = needs(spec, &self.vcpus);
        if let Some(held) = self.usage.own.get(cluster_id) {
            need = need.without(held, &self.vcpus);
        }
        if self
            .usage
            .lb_names
            .contains(&crate::provider::lb_name(cluster_id))
        {
            need.elbs = 0;
        }
        let others: Vec<&Needs> = self
            .reserved
            .iter()
            .filter(|(name, _)| **name != spec.name)
            .map(|(_, n)| n)
            .collect();
        let mut unchecked = self.permissions.unchecked.clone();
        let shortfalls = judge(
            region,
            &need,
            &self.quotas,
            &self.usage,
            &others,
            &mut unchecked,
        );
        let mut out = Precheck::default();
        out.missing_permissions = self.permissions.missing_permissions.clone();
        out.shortfalls = shortfalls;
        out.unchecked = unchecked;
        if out.passed() {
            self.reserved.insert(spec.name.clone(), need);
        }
        out
    }
}

/// Short text of an error for `unchecked` (code and message, no request ids).
fn why(e: &AwsError) -> String {
    match e {
        AwsError::Api { code, message, .. } => match message {
            Some(m) => format!("{code}: {m}"),
            None => code.clone(),
        },
        other => other.to_string(),
    }
}

/// Everything a view holds, read from the cloud. `types` are the instance types the cluster
/// asking uses.
pub async fn gather(
    c: &AwsClients,
    iam: &aws_sdk_iam::Client,
    sq: &aws_sdk_servicequotas::Client,
    elb: &aws_sdk_elasticloadbalancing::Client,
    types: &BTreeSet<String>,
    overrides: &QuotaOverrides,
) -> Result<AccountView, AwsError> {
    let permissions = permissions(c, iam).await?;
    let quotas = quotas(c, sq, overrides).await;
    let (usage, running_types) = usage(c, elb).await;
    let mut view = AccountView {
        read_at: spectro_core::clock::instant_now(),
        permissions,
        quotas,
        usage,
        vcpus: BTreeMap::new(),
        reserved: BTreeMap::new(),
    };
    let wanted: BTreeSet<String> = types.iter().chain(running_types.keys()).cloned().collect();
    read_vcpus(c, &mut view, &wanted).await;
    // Usage in vCPUs once every running type's vCPUs are known.
    if view.usage.instances.is_some() {
        view.usage.vcpus = running_types.iter().try_fold(0u64, |sum, (ty, count)| {
            if !standard_family(ty) {
                return Some(sum);
            }
            view.vcpus.get(ty).map(|v| sum + u64::from(*v) * count)
        });
    }
    Ok(view)
}

/// Reads the vCPUs of the `wanted` types not in the view yet (one call; a type AWS does not
/// offer leaves the others readable: they are asked for again one by one).
pub async fn read_vcpus(c: &AwsClients, view: &mut AccountView, wanted: &BTreeSet<String>) {
    let missing: Vec<String> = wanted
        .iter()
        .filter(|t| !view.vcpus.contains_key(*t))
        .cloned()
        .collect();
    if missing.is_empty() {
        return;
    }
    let ask = |types: Vec<String>| async move {
        let mut req = c.ec2.describe_instance_types();
        for t in types {
            req = req.instance_types(aws_sdk_ec2::types::InstanceType::from(t.as_str()));
        }
        req.send()
            .await
            .map_err(|e| from_sdk("DescribeInstanceTypes", e))
    };
    let answers = match ask(missing.clone()).await {
        Ok(out) => vec![out],
        Err(e) if e.has_code(&["InvalidInstanceType"]) && missing.len() > 1 => {
            let mut v = Vec::new();
            for t in missing {
                if let Ok(out) = ask(vec![t]).await {
                    v.push(out);
                }
            }
            v
        }
        Err(_) => Vec::new(),
    };
    for out in answers {
        for it in out.instance_types() {
            if let (Some(ty), Some(v)) = (
                it.instance_type(),
                it.v_cpu_info().and_then(|v| v.default_v_cpus()),
            ) {
                view.vcpus
                    .insert(ty.as_str().to_string(), u32::try_from(v).unwrap_or(0));
            }
        }
    }
}

/// The IAM principal behind a caller ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The account's root user: every permission.
    Root,
    /// An IAM user, by name.
    User(String),
    /// An IAM role (an assumed-role session), by name.
    Role(String),
    /// Something else (a federated user): not checked.
    Other(String),
}

/// The principal of `arn` (`arn:aws:iam::123456789012:user/path/name`,
/// `arn:aws:sts::123456789012:assumed-role/name/session`, `...:root`).
pub fn principal_of(arn: &str) -> Principal {
    let resource = arn.splitn(6, ':').nth(5).unwrap_or_default();
    if resource == "root" {
        return Principal::Root;
    }
    let mut parts = resource.split('/');
    match parts.next() {
        Some("user") => match resource.rsplit('/').next() {
            Some(name) if !name.is_empty() => Principal::User(name.to_string()),
            _ => Principal::Other(arn.to_string()),
        },
        Some("assumed-role") => match parts.next() {
            Some(name) if !name.is_empty() => Principal::Role(name.to_string()),
            _ => Principal::Other(arn.to_string()),
        },
        _ => Principal::Other(arn.to_string()),
    }
}

/// The caller's missing permissions (simulation, else its own policies judged here).
async fn permissions(c: &AwsClients, iam: &aws_sdk_iam::Client) -> Result<Precheck, AwsError> {
    let me = c
        .sts
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| from_sdk("GetCallerIdentity", e))?;
    let arn = me.arn().unwrap_or_default().to_string();
    let principal = principal_of(&arn);
    let source_arn = match &principal {
        Principal::Root => return Ok(Precheck::default()),
        Principal::Other(_) => {
            return Ok(Precheck::unchecked(format!(
                "permissions: {arn} is neither an IAM user nor a role"
            )))
        }
        Principal::User(_) => Some(arn.clone()),
        Principal::Role(name) => iam
            .get_role()
            .role_name(name)
            .send()
            .await
            .ok()
            .and_then(|r| r.role().map(|r| r.arn().to_string())),
    };
    let simulated = match &source_arn {
        Some(a) => simulate(iam, a).await,
        None => Err(AwsError::not_ready("the role's ARN could not be read")),
    };
    let skipped = match simulated {
        Ok(missing) => {
            let mut found = Precheck::default();
            found.missing_permissions = missing;
            return Ok(found);
        }
        Err(e) => why(&e),
    };
    match identity_policies(iam, &principal).await {
        Ok(docs) => {
            let e = policy::evaluate(&docs, REQUIRED_ACTIONS);
            let mut unchecked = vec![format!(
                "permissions were judged from {arn}'s own policies (iam:SimulatePrincipalPolicy did not answer: {skipped}); permission boundaries and organization policies were not"
            )];
            if !e.partial.is_empty() {
                unchecked.push(format!(
                    "permissions granted only under a condition or on some resources: {}",
                    e.partial.join(", ")
                ));
            }
            let mut found = Precheck::default();
            found.missing_permissions = e.missing;
            found.unchecked = unchecked;
            Ok(found)
        }
        Err(e) => Ok(Precheck::unchecked(format!(
            "permissions: {arn} may neither simulate ({skipped}) nor read its policies ({})",
            why(&e)
        ))),
    }
}

/// `iam:SimulatePrincipalPolicy` for `source_arn`: the actions not allowed. Not retried (an
/// account without it answers at once).
async fn simulate(iam: &aws_sdk_iam::Client, source_arn: &str) -> Result<Vec<String>, AwsError> {
    let mut missing = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let out = iam
            .simulate_principal_policy()
            .policy_source_arn(source_arn)
            .set_action_names(Some(
                REQUIRED_ACTIONS.iter().map(|a| a.to_string()).collect(),
            ))
            .set_marker(marker.clone())
            .customize()
            .config_override(
                aws_sdk_iam::config::Builder::default()
                    .retry_config(aws_smithy_types::retry::RetryConfig::disabled()),
            )
            .send()
            .await
            .map_err(|e| from_sdk("SimulatePrincipalPolicy", e))?;
        for r in out.evaluation_results() {
            if *r.eval_decision() != aws_sdk_iam::types::PolicyEvaluationDecisionType::Allowed
                && !missing.iter().any(|m| m == r.eval_action_name())
            {
                missing.push(r.eval_action_name().to_string());
            }
        }
        if !out.is_truncated() {
            break;
        }
        marker = out.marker().map(str::to_string);
        if marker.is_none() {
            break;
        }
    }
    Ok(missing)
}

/// The identity policy documents of a user (its own and its groups') or a role.
async fn identity_policies(
    iam: &aws_sdk_iam::Client,
    principal: &Principal,
) -> Result<Vec<serde_json::Value>, AwsError> {
    let mut docs = Vec::new();
    let mut managed: BTreeSet<String> = BTreeSet::new();
    let bad = |what: &str| AwsError::Unexpected {
        op: "GetPolicyVersion",
        message: format!("IAM answered with a policy document that is not JSON ({what})"),
    };
    match principal {
        Principal::User(user) => {
            let attached = iam
                .list_attached_user_policies()
                .user_name(user)
                .send()
                .await
                .map_err(|e| from_sdk("ListAttachedUserPolicies", e))?;
            managed.extend(
                attached
                    .attached_policies()
                    .iter()
                    .filter_map(|p| p.policy_arn().map(str::to_string)),
            );
            let inline = iam
                .list_user_policies()
                .user_name(user)
                .send()
                .await
                .map_err(|e| from_sdk("ListUserPolicies", e))?;
            for name in inline.policy_names() {
                let p = iam
                    .get_user_policy()
                    .user_name(user)
                    .policy_name(name)
                    .send()
                    .await
                    .map_err(|e| from_sdk("GetUserPolicy", e))?;
                docs.push(policy::decode_document(p.policy_document()).ok_or_else(|| bad(name))?);
            }
            let groups = iam
                .list_groups_for_user()
                .user_name(user)
                .send()
                .await
                .map_err(|e| from_sdk("ListGroupsForUser", e))?;
            for g in groups.groups() {
                let group = g.group_name();
                let attached = iam
                    .list_attached_group_policies()
                    .group_name(group)
                    .send()
                    .await
                    .map_err(|e| from_sdk("ListAttachedGroupPolicies", e))?;
                managed.extend(
                    attached
                        .attached_policies()
                        .iter()
                        .filter_map(|p| p.policy_arn().map(str::to_string)),
                );
                let inline = iam
                    .list_group_policies()
                    .group_name(group)
                    .send()
                    .await
                    .map_err(|e| from_sdk("ListGroupPolicies", e))?;
                for name in inline.policy_names() {
                    let p = iam
                        .get_group_policy()
                        .group_name(group)
                        .policy_name(name)
                        .send()
                        .await
                        .map_err(|e| from_sdk("GetGroupPolicy", e))?;
                    docs.push(
                        policy::decode_document(p.policy_document()).ok_or_else(|| bad(name))?,
                    );
                }
            }
        }
        Principal::Role(role) => {
            let attached = iam
                .list_attached_role_policies()
                .role_name(role)
                .send()
                .await
                .map_err(|e| from_sdk("ListAttachedRolePolicies", e))?;
            managed.extend(
                attached
                    .attached_policies()
                    .iter()
                    .filter_map(|p| p.policy_arn().map(str::to_string)),
            );
            let inline = iam
                .list_role_policies()
                .role_name(role)
                .send()
                .await
                .map_err(|e| from_sdk("ListRolePolicies", e))?;
            for name in inline.policy_names() {
                let p = iam
                    .get_role_policy()
                    .role_name(role)
                    .policy_name(name)
                    .send()
                    .await
                    .map_err(|e| from_sdk("GetRolePolicy", e))?;
                docs.push(policy::decode_document(p.policy_document()).ok_or_else(|| bad(name))?);
            }
        }
        Principal::Root | Principal::Other(_) => return Ok(docs),
    }
    for arn in managed {
        let p = iam
            .get_policy()
            .policy_arn(&arn)
            .send()
            .await
            .map_err(|e| from_sdk("GetPolicy", e))?;
        let Some(version) = p.policy().and_then(|p| p.default_version_id()) else {
            continue;
        };
        let v = iam
            .get_policy_version()
            .policy_arn(&arn)
            .version_id(version)
            .send()
            .await
            .map_err(|e| from_sdk("GetPolicyVersion", e))?;
        let doc = v
            .policy_version()
            .and_then(|v| v.document())
            .and_then(policy::decode_document)
            .ok_or_else(|| bad(&arn))?;
        docs.push(doc);
    }
    Ok(docs)
}

/// Quota values the embedder knows better than Service Quotas does (a raise not visible
/// yet, an emulator without quotas), by (service code, quota code).
pub type QuotaOverrides = BTreeMap<(String, String), u64>;

/// A Service Quotas value (an override wins and saves the call).
async fn service_quota(
    sq: &aws_sdk_servicequotas::Client,
    overrides: &QuotaOverrides,
    (service, code): (&str, &str),
) -> Option<Quota> {
    if let Some(v) = overrides.get(&(service.to_string(), code.to_string())) {
        return Some(Quota {
            value: *v,
            source: format!("configured {code}"),
        });
    }
    let out = sq
        .get_service_quota()
        .service_code(service)
        .quota_code(code)
        .send()
        .await
        .ok()?;
    let v = out.quota()?.value()?;
    (v.is_finite() && v >= 0.0).then(|| Quota {
        value: v as u64,
        source: format!("Service Quotas {code}"),
    })
}

/// The region's quotas (EC2's from `DescribeAccountAttributes` where Service Quotas does not
/// answer).
async fn quotas(
    c: &AwsClients,
    sq: &aws_sdk_servicequotas::Client,
    overrides: &QuotaOverrides,
) -> Quotas {
    let mut q = Quotas {
        vcpus: service_quota(sq, overrides, codes::VCPUS).await,
        eips: service_quota(sq, overrides, codes::EIPS).await,
        vpcs: service_quota(sq, overrides, codes::VPCS).await,
        igws: service_quota(sq, overrides, codes::IGWS).await,
        nats_per_zone: service_quota(sq, overrides, codes::NATS).await,
        elbs: service_quota(sq, overrides, codes::ELBS).await,
        instances: None,
    };
    if q.vcpus.is_none() || q.eips.is_none() {
        if let Ok(out) = c
            .ec2
            .describe_account_attributes()
            .send()
            .await
            .map_err(|e| from_sdk("DescribeAccountAttributes", e))
        {
            let attr = |name: &str| {
                out.account_attributes()
                    .iter()
                    .find(|a| a.attribute_name() == Some(name))
                    .and_then(|a| a.attribute_values().first())
                    .and_then(|v| v.attribute_value())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(|value| Quota {
                        value,
                        source: format!("DescribeAccountAttributes {name}"),
                    })
            };
            if q.vcpus.is_none() {
                q.instances = attr("max-instances");
            }
            if q.eips.is_none() {
                q.eips = attr("vpc-max-elastic-ips");
            }
        }
    }
    q
}

/// The cluster id a resource is tagged with.
fn cluster_tag(tags: &[aws_sdk_ec2::types::Tag]) -> Option<String> {
    tags.iter()
        .find(|t| t.key() == Some(TAG_CLUSTER_ID))
        .and_then(|t| t.value())
        .map(str::to_string)
}

/// What the region holds now, and the pending or running instances by type.
async fn usage(
    c: &AwsClients,
    elb: &aws_sdk_elasticloadbalancing::Client,
) -> (Usage, BTreeMap<String, u64>) {
    let mut u = Usage::default();
    let mut types: BTreeMap<String, u64> = BTreeMap::new();
    let live = Filter::builder()
        .name("instance-state-name")
        .values("pending")
        .values("running")
        .build();
    let instances: Result<Vec<_>, _> = c
        .ec2
        .describe_instances()
        .filters(live)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await;
    if let Ok(reservations) = instances {
        let mut n = 0;
        for r in reservations {
            for i in r.instances() {
                n += 1;
                if let Some(t) = i.instance_type() {
                    *types.entry(t.as_str().to_string()).or_default() += 1;
                    if let Some(cid) = cluster_tag(i.tags()) {
                        *u.own
                            .entry(cid)
                            .or_default()
                            .instances_by_type
                            .entry(t.as_str().to_string())
                            .or_default() += 1;
                    }
                }
            }
        }
        u.instances = Some(n);
    }
    let vpcs: Option<Vec<_>> = c
        .ec2
        .describe_vpcs()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .ok();
    if let Some(vpcs) = vpcs {
        u.vpcs = Some(vpcs.len() as u64);
        for cid in vpcs.iter().filter_map(|v| cluster_tag(v.tags())) {
            u.own.entry(cid).or_default().vpcs += 1;
        }
    }
    let igws: Option<Vec<_>> = c
        .ec2
        .describe_internet_gateways()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .ok();
    if let Some(igws) = igws {
        u.igws = Some(igws.len() as u64);
        for cid in igws.iter().filter_map(|g| cluster_tag(g.tags())) {
            u.own.entry(cid).or_default().igws += 1;
        }
    }
    if let Ok(out) = c.ec2.describe_addresses().send().await {
        u.eips = Some(out.addresses().len() as u64);
        for cid in out.addresses().iter().filter_map(|a| cluster_tag(a.tags())) {
            u.own.entry(cid).or_default().eips += 1;
        }
    }
    let lbs: Option<Vec<_>> = elb
        .describe_load_balancers()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .ok();
    if let Some(lbs) = lbs {
        u.elbs = Some(lbs.len() as u64);
        u.lb_names = lbs
            .iter()
            .filter_map(|l| l.load_balancer_name().map(str::to_string))
            .collect();
    }
    let nat_state = Filter::builder()
        .name("state")
        .values("pending")
        .values("available")
        .build();
    let nats: Result<Vec<_>, _> = c
        .ec2
        .describe_nat_gateways()
        .filter(nat_state)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await;
    if let Ok(nats) = nats {
        let subnets: BTreeSet<String> = nats
            .iter()
            .filter_map(|n| n.subnet_id().map(str::to_string))
            .collect();
        let mut zone_of: BTreeMap<String, String> = BTreeMap::new();
        let read = if subnets.is_empty() {
            true
        } else {
            match c
                .ec2
                .describe_subnets()
                .set_subnet_ids(Some(subnets.into_iter().collect()))
                .send()
                .await
            {
                Ok(out) => {
                    for s in out.subnets() {
                        if let (Some(id), Some(z)) = (s.subnet_id(), s.availability_zone()) {
                            zone_of.insert(id.to_string(), z.to_string());
                        }
                    }
                    true
                }
                Err(_) => false,
            }
        };
        if read {
            let mut by_zone: BTreeMap<String, u64> = BTreeMap::new();
            for n in &nats {
                if let Some(z) = n.subnet_id().and_then(|s| zone_of.get(s)) {
                    *by_zone.entry(z.clone()).or_default() += 1;
                    if let Some(cid) = cluster_tag(n.tags()) {
                        u.own.entry(cid).or_default().nat_zones.insert(z.clone());
                    }
                }
            }
            u.nats_by_zone = Some(by_zone);
        }
    }
    (u, types)
}

#[cfg(test)]
mod tests {
    use super::*;
    use spectro_core::model::document::{from_text, Format};

    const CLUSTER: &str = r#"
name: east
profile: {name: p, version: '1'}
cloudAccount: acct
cloud:
  aws: {region: us-east-1}
nodePools:
  - { name: master, role: controlPlane, size: 3, instanceType: m5.large, availabilityZones: [us-east-1a, us-east-1b, us-east-1c] }
  - { name: gpu, role: worker, size: 2, instanceType: g5.xlarge, availabilityZones: [us-east-1a] }
  - { name: general, role: worker, size: 2, availabilityZones: [us-east-1a, us-east-1b] }
"#;

    fn cluster() -> Cluster {
        from_text(CLUSTER, Format::Yaml).unwrap()
    }

    fn q(v: u64) -> Option<Quota> {
        Some(Quota {
            value: v,
            source: "test".into(),
        })
    }

    #[test]
    fn families_of_the_standard_vcpu_quota() {
        for t in [
            "m5.large",
            "t3.micro",
            "c7g.xlarge",
            "r6i.2xlarge",
            "i4i.large",
            "z1d.large",
            "d3.xlarge",
            "a1.medium",
            "h1.2xlarge",
        ] {
            assert!(standard_family(t), "{t}");
        }
        for t in [
            "g5.xlarge",
            "p4d.24xlarge",
            "inf2.xlarge",
            "trn1.2xlarge",
            "dl1.24xlarge",
            "hpc7g.4xlarge",
            "mac1.metal",
            "x2idn.large",
            "u-6tb1.metal",
            "f1.2xlarge",
        ] {
            assert!(!standard_family(t), "{t}");
        }
    }

    #[test]
    fn needs_count_nodes_bastion_and_network() {
        let vcpus: BTreeMap<String, u32> =
            [("m5.large".to_string(), 2), ("t3.micro".to_string(), 2)].into();
        let n = needs(&cluster(), &vcpus);
        // 3 CP + 2 default-type workers (m5.large) + the bastion: 6 × 2 vCPUs; the GPU
        // pool has its own quota.
        assert_eq!(n.vcpus, 12);
        assert_eq!(n.instances, 8);
        assert_eq!((n.vpcs, n.igws, n.eips, n.elbs), (1, 1, 3, 1));
        assert_eq!(n.nat_zones.len(), 3);
        assert!(n.unknown_types.is_empty());
        let n = needs(&cluster(), &BTreeMap::new());
        assert_eq!(
            n.unknown_types.into_iter().collect::<Vec<_>>(),
            vec!["m5.large", "t3.micro"]
        );
    }

    #[test]
    fn every_shortfall_at_once_with_reservations_named() {
        let vcpus: BTreeMap<String, u32> =
            [("m5.large".to_string(), 2), ("t3.micro".to_string(), 2)].into();
        let need = needs(&cluster(), &vcpus);
        let quotas = Quotas {
            vcpus: q(32),
            vpcs: q(5),
            igws: q(5),
            nats_per_zone: q(5),
            eips: q(5),
            elbs: q(20),
            instances: None,
        };
        let usage = Usage {
            vcpus: Some(24),
            instances: Some(12),
            vpcs: Some(4),
            igws: Some(2),
            nats_by_zone: Some([("us-east-1b".to_string(), 5)].into()),
            eips: Some(3),
            elbs: Some(0),
            ..Default::default()
        };
        let other = Needs {
            vpcs: 1,
            ..Default::default()
        };
        let mut unchecked = Vec::new();
        let s = judge(
            "us-east-1",
            &need,
            &quotas,
            &usage,
            &[&other],
            &mut unchecked,
        );
        let text: Vec<String> = s.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 4, "{text:#?}");
        assert!(text[0].starts_with("vCPUs of running On-Demand standard instances in us-east-1 (quota 32, 24 in use): needs 12 vCPUs, 8 left (short by 4)"), "{}", text[0]);
        assert!(text[1].contains("VPCs in us-east-1 (quota 5, 4 in use, 1 reserved by clusters being created): needs 1 VPCs, 0 left"), "{}", text[1]);
        assert!(
            text[2].contains("NAT gateways in zone us-east-1b"),
            "{}",
            text[2]
        );
        assert!(text[3].contains("Elastic IP addresses"), "{}", text[3]);
        assert!(unchecked.is_empty(), "{unchecked:?}");

        // Unknown quotas and usage are reported as not checked, never as short.
        let mut unchecked = Vec::new();
        let s = judge(
            "us-east-1",
            &need,
            &Quotas {
                instances: q(20),
                ..Default::default()
            },
            &Usage {
                instances: Some(19),
                ..Default::default()
            },
            &[],
            &mut unchecked,
        );
        assert_eq!(s.len(), 1);
        assert!(s[0].to_string().contains("running instances"), "{}", s[0]);
        assert!(
            unchecked
                .iter()
                .any(|u| u.contains("VPCs in us-east-1: the quota could not be read")),
            "{unchecked:?}"
        );
    }

    #[test]
    fn a_passing_cluster_reserves_what_it_needs() {
        let mut view = AccountView {
            read_at: spectro_core::clock::instant_now(),
            permissions: Precheck::default(),
            quotas: Quotas {
                vpcs: q(5),
                ..Default::default()
            },
            usage: Usage {
                vpcs: Some(4),
                ..Default::default()
            },
            vcpus: BTreeMap::new(),
            reserved: BTreeMap::new(),
        };
        let a = cluster();
        assert!(view.check("us-east-1", &a, "a").passed());
        // The same cluster again (a retry) does not count its own reservation.
        assert!(view.check("us-east-1", &a, "a").passed());
        let mut b = cluster();
        b.name = "west".into();
        let found = view.check("us-east-1", &b, "b");
        assert!(!found.passed());
        assert!(
            found
                .message()
                .contains("1 reserved by clusters being created"),
            "{}",
            found.message()
        );
    }

    #[test]
    fn what_a_cluster_already_holds_is_not_needed_again() {
        // A create a crash interrupted: the VPC, its gateway, 3 addresses, 2 NAT gateways, the
        // load balancer and one control-plane node exist, tagged with the cluster's id.
        let vcpus: BTreeMap<String, u32> =
            [("m5.large".to_string(), 2), ("t3.micro".to_string(), 2)].into();
        let held = Held {
            instances_by_type: [("m5.large".to_string(), 1)].into(),
            vpcs: 1,
            igws: 1,
            eips: 3,
            nat_zones: ["us-east-1a".to_string(), "us-east-1b".to_string()].into(),
        };
        let mut view = AccountView {
            read_at: spectro_core::clock::instant_now(),
            permissions: Precheck::default(),
            quotas: Quotas {
                vpcs: q(5),
                eips: q(5),
                elbs: q(1),
                nats_per_zone: q(1),
                ..Default::default()
            },
            usage: Usage {
                vpcs: Some(5),
                eips: Some(5),
                elbs: Some(1),
                nats_by_zone: Some(
                    [("us-east-1a".to_string(), 1), ("us-east-1b".to_string(), 1)].into(),
                ),
                own: [("c-1".to_string(), held.clone())].into(),
                lb_names: [crate::provider::lb_name("c-1")].into(),
                ..Default::default()
            },
            vcpus: vcpus.clone(),
            reserved: BTreeMap::new(),
        };
        let left = needs(&cluster(), &vcpus).without(&held, &vcpus);
        assert_eq!(
            (left.vpcs, left.igws, left.eips, left.instances, left.vcpus),
            (0, 0, 0, 7, 10)
        );
        assert_eq!(
            left.nat_zones.into_iter().collect::<Vec<_>>(),
            vec!["us-east-1c"]
        );
        // Everything is used up, by the cluster itself but the third zone's NAT gateway.
        let found = view.check("us-east-1", &cluster(), "c-1");
        assert_eq!(found.shortfalls.len(), 0, "{}", found.message());
        // Another cluster in the same region finds nothing left.
        let found = view.check("us-east-1", &cluster(), "c-2");
        assert!(
            found.message().contains("VPCs in us-east-1"),
            "{}",
            found.message()
        );
    }

    #[test]
    fn principals_from_caller_arns() {
        assert_eq!(
            principal_of("arn:aws:iam::123456789012:root"),
            Principal::Root
        );
        assert_eq!(
            principal_of("arn:aws:iam::123456789012:user/ops/spectro"),
            Principal::User("spectro".into())
        );
        assert_eq!(
            principal_of("arn:aws-cn:sts::123456789012:assumed-role/spectro-role/session-1"),
            Principal::Role("spectro-role".into())
        );
        assert!(matches!(
            principal_of("arn:aws:sts::123456789012:federated-user/bob"),
            Principal::Other(_)
        ));
        assert!(matches!(principal_of("garbage"), Principal::Other(_)));
    }
}

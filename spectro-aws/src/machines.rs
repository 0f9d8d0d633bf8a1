//! Node instances: batched launches (one RunInstances per pool × zone batch), idempotent by
//! the engine's token, observation of every node of a cluster in one DescribeInstances, and
//! termination.
//!
//! Each instance carries the cluster's tags plus role, pool, shape and token. Names: the
//! engine names machines `<prefix><suffix>`; a batch's instances carry the shared prefix and
//! the list of suffixes, and an instance's name is the suffix at its launch index, so one call
//! launches and names a whole batch.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, InstanceMetadataOptionsRequest,
    InstanceStateName, InstanceType, ResourceType, Tag, TagSpecification, VolumeType,
};
use base64::Engine as _;
use spectro_core::model::PoolRole;
use spectro_core::provider::{
    Machine, MachineState, TAG_CLUSTER_ID, TAG_POOL, TAG_ROLE, TAG_SHAPE, TAG_TOKEN,
};

use crate::client::AwsClients;
use crate::error::{from_sdk, AwsError};

/// Tag: the name prefix shared by a batch.
pub const TAG_NAME_PREFIX: &str = "spectro.io/name-prefix";
/// Tag: the batch's name suffixes, comma-separated, in launch order.
pub const TAG_NAME_SUFFIXES: &str = "spectro.io/name-suffixes";
/// Largest tag value AWS accepts.
const TAG_VALUE_MAX: usize = 256;

/// One batch launch.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    /// Cluster id (ownership tag).
    pub cluster_id: &'a str,
    /// The cluster's tags (ownership included).
    pub tags: &'a BTreeMap<String, String>,
    /// The engine's idempotency token for the batch.
    pub token: &'a str,
    /// Machine names.
    pub names: &'a [String],
    /// Pool, role, shape hash.
    pub pool: &'a str,
    /// Control plane or worker.
    pub role: PoolRole,
    /// Shape hash.
    pub shape: &'a str,
    /// AMI.
    pub image: &'a str,
    /// Instance type.
    pub instance_type: &'a str,
    /// Private subnet of the zone.
    pub subnet: &'a str,
    /// Security groups.
    pub security_groups: &'a [String],
    /// EC2 key pair name.
    pub key_name: Option<&'a str>,
    /// Cloud-init user data (raw; base64-encoded here).
    pub user_data: &'a [u8],
    /// The cluster's bastion, not a node (tagged role `bastion`, never listed as a machine).
    pub bastion: bool,
    /// The root volume, when the pool sets its size or type (else the AMI's default).
    pub root_volume: Option<RootVolume>,
    /// No instance of the token can exist (`subnet` was created a moment ago, or no earlier
    /// call carried the token): the lookup by token before launching is skipped.
    pub unseen: bool,
}

/// The root volume of a node: the AMI's root device with the pool's size and type.
#[derive(Debug, Clone, PartialEq)]
pub struct RootVolume {
    /// The AMI's `RootDeviceName`, e.g. `/dev/xvda`.
    pub device_name: String,
    /// Size in GiB (`diskSizeGb`).
    pub size_gb: Option<u32>,
    /// EBS volume type (`diskType`), e.g. `gp3`.
    pub volume_type: Option<String>,
}

fn role_tag(role: PoolRole) -> &'static str {
    match role {
        PoolRole::ControlPlane => "control-plane",
        PoolRole::Worker => "worker",
    }
}

/// Splits names into chunks whose prefix + suffix tags fit AWS's limits; returns
/// (prefix, chunks of suffixes). Names without a common prefix go one per chunk.
pub fn name_chunks(names: &[String]) -> Vec<(String, Vec<String>)> {
    let prefix = names
        .first()
        .and_then(|n| n.rfind('-').map(|i| n[..=i].to_string()));
    match prefix {
        Some(p) if names.iter().all(|n| n.starts_with(&p) && n.len() > p.len()) => {
            let mut out: Vec<(String, Vec<String>)> = Vec::new();
            let mut cur: Vec<String> = Vec::new();
            let mut len = 0;
            for n in names {
                let s = n[p.len()..].to_string();
                if !cur.is_empty() && len + 1 + s.len() > TAG_VALUE_MAX {
                    out.push((p.clone(), std::mem::take(&mut cur)));
                    len = 0;
                }
                len += s.len() + usize::from(!cur.is_empty());
                cur.push(s);
            }
            if !cur.is_empty() {
                out.push((p, cur));
            }
            out
        }
        _ => names
            .iter()
            .map(|n| (n.clone(), vec![String::new()]))
            .collect(),
    }
}

fn live_states() -> Filter {
    Filter::builder()
        .name("instance-state-name")
        .values("pending")
        .values("running")
        .values("stopping")
        .values("stopped")
        .values("shutting-down")
        .build()
}

/// The cluster's instances that are not terminated.
fn owned_live(cluster_id: &str) -> Vec<Filter> {
    vec![
        Filter::builder()
            .name(format!("tag:{TAG_CLUSTER_ID}"))
            .values(cluster_id)
            .build(),
        live_states(),
    ]
}

fn tag_of<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

fn to_machine(i: &aws_sdk_ec2::types::Instance, include_bastion: bool) -> Option<Machine> {
    let tags = i.tags();
    let role = match tag_of(tags, TAG_ROLE)? {
        "control-plane" => PoolRole::ControlPlane,
        "worker" => PoolRole::Worker,
        "bastion" if include_bastion => PoolRole::Worker,
        _ => return None, // the bastion is not a node
    };
    let prefix = tag_of(tags, TAG_NAME_PREFIX).unwrap_or_default();
    let suffixes: Vec<&str> = tag_of(tags, TAG_NAME_SUFFIXES)
        .unwrap_or_default()
        .split(',')
        .collect();
    let idx = i.ami_launch_index().unwrap_or(0).max(0) as usize;
    let name = format!("{prefix}{}", suffixes.get(idx).copied().unwrap_or_default());
    let state = match i.state().and_then(|s| s.name()) {
        Some(InstanceStateName::Pending) => MachineState::Pending,
        Some(InstanceStateName::Running) => MachineState::Running,
        Some(InstanceStateName::Stopped) | Some(InstanceStateName::Stopping) => {
            MachineState::Failed
        }
        _ => MachineState::Deleting,
    };
    let created_at = i
        .launch_time()
        .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
        .unwrap_or_else(spectro_core::clock::system_now);
    Some(Machine {
        id: i.instance_id()?.to_string(),
        name,
        pool: tag_of(tags, TAG_POOL).unwrap_or_default().to_string(),
        role,
        zone: i
            .placement()
            .and_then(|p| p.availability_zone())
            .unwrap_or_default()
            .to_string(),
        shape: tag_of(tags, TAG_SHAPE).unwrap_or_default().to_string(),
        token: tag_of(tags, TAG_TOKEN).unwrap_or_default().to_string(),
        state,
        address: i.private_ip_address().and_then(|a| a.parse().ok()),
        created_at,
    })
}

async fn describe(
    c: &AwsClients,
    filters: Vec<Filter>,
    include_bastion: bool,
) -> Result<Vec<Machine>, AwsError> {
    Ok(describe_owned(c, filters, include_bastion)
        .await?
        .into_iter()
        .map(|(_, m)| m)
        .collect())
}

/// The instances the filters select, each with the cluster id it is tagged with; one call
/// per page of up to 1,000 instances.
async fn describe_owned(
    c: &AwsClients,
    filters: Vec<Filter>,
    include_bastion: bool,
) -> Result<Vec<(String, Machine)>, AwsError> {
    describe_with(c, filters, |i| {
        let cluster = tag_of(i.tags(), TAG_CLUSTER_ID)?.to_string();
        Some((cluster, to_machine(i, include_bastion)?))
    })
    .await
}

/// Every instance of the cluster that is not terminated, the bastion included, each with
/// whether it is a node (not the bastion): one listing serving both the nodes and the
/// instances a delete waits for.
pub async fn list_marked(
    c: &AwsClients,
    cluster_id: &str,
) -> Result<Vec<(Machine, bool)>, AwsError> {
    describe_with(c, owned_live(cluster_id), |i| {
        Some((to_machine(i, true)?, to_machine(i, false).is_some()))
    })
    .await
}

/// What `f` makes of each instance the filters select; one call per page of up to 1,000.
async fn describe_with<T>(
    c: &AwsClients,
    filters: Vec<Filter>,
    f: impl Fn(&aws_sdk_ec2::types::Instance) -> Option<T>,
) -> Result<Vec<T>, AwsError> {
    let mut out = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let page = c
            .ec2
            .describe_instances()
            .set_filters(Some(filters.clone()))
            .set_next_token(next.clone())
            .set_max_results(Some(1000))
            .send()
            .await
            .map_err(|e| from_sdk("DescribeInstances", e))?;
        for r in page.reservations() {
            out.extend(r.instances().iter().filter_map(&f));
        }
        next = page.next_token().map(str::to_string);
        if next.is_none() {
            return Ok(out);
        }
    }
}

/// Every node of the cluster that is not terminated, in one filtered call (paged).
pub async fn list_machines(c: &AwsClients, cluster_id: &str) -> Result<Vec<Machine>, AwsError> {
    describe(c, owned_live(cluster_id), false).await
}

/// Every node of every spectro cluster of the account in the region that is not terminated,
/// by cluster id: one call per page of 1,000 instances, whatever the number of clusters.
pub async fn list_fleet(c: &AwsClients) -> Result<HashMap<String, Vec<Machine>>, AwsError> {
    let filters = vec![
        Filter::builder()
            .name("tag-key")
            .values(TAG_CLUSTER_ID)
            .build(),
        live_states(),
    ];
    let mut out: HashMap<String, Vec<Machine>> = HashMap::new();
    for (cluster, m) in describe_owned(c, filters, false).await? {
        out.entry(cluster).or_default().push(m);
    }
    Ok(out)
}

/// Every instance of the cluster that is not terminated, the bastion included.
pub async fn list_all(c: &AwsClients, cluster_id: &str) -> Result<Vec<Machine>, AwsError> {
    describe(c, owned_live(cluster_id), true).await
}

/// Launches a batch, idempotently: instances already launched under the token (a retry after
/// a crash or a lost answer) are returned instead of launching again.
pub async fn launch(c: &AwsClients, l: &Launch<'_>) -> Result<Vec<Machine>, AwsError> {
    let mut out = Vec::new();
    for (k, (prefix, suffixes)) in name_chunks(l.names).into_iter().enumerate() {
        let token = if k == 0 {
            l.token.to_string()
        } else {
            format!("{}-{k}", l.token)
        };
        let existing = if l.unseen {
            Vec::new()
        } else {
            describe(
                c,
                vec![
                    Filter::builder()
                        .name(format!("tag:{TAG_CLUSTER_ID}"))
                        .values(l.cluster_id)
                        .build(),
                    Filter::builder()
                        .name(format!("tag:{TAG_TOKEN}"))
                        .values(&token)
                        .build(),
                    live_states(),
                ],
                l.bastion,
            )
            .await?
        };
        if !existing.is_empty() {
            out.extend(existing);
            continue;
        }
        let mut tags: Vec<Tag> = l
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        for (k, v) in [
            (
                TAG_ROLE,
                if l.bastion {
                    "bastion".to_string()
                } else {
                    role_tag(l.role).to_string()
                },
            ),
            (TAG_POOL, l.pool.to_string()),
            (TAG_SHAPE, l.shape.to_string()),
            (TAG_TOKEN, token.clone()),
            (TAG_NAME_PREFIX, prefix.clone()),
            (TAG_NAME_SUFFIXES, suffixes.join(",")),
            (
                "Name",
                format!("{prefix}{}", suffixes.first().cloned().unwrap_or_default()),
            ),
        ] {
            tags.push(Tag::builder().key(k).value(v).build());
        }
        let spec = |rt: ResourceType| {
            TagSpecification::builder()
                .resource_type(rt)
                .set_tags(Some(tags.clone()))
                .build()
        };
        let n = suffixes.len() as i32;
        let mut req = c
            .ec2
            .run_instances()
            .image_id(l.image)
            .instance_type(InstanceType::from(l.instance_type))
            .min_count(n)
            .max_count(n)
            .subnet_id(l.subnet)
            .set_security_group_ids(Some(l.security_groups.to_vec()))
            .client_token(&token)
            .user_data(base64::engine::general_purpose::STANDARD.encode(l.user_data))
            // IMDSv2 only, one hop: containers cannot read the node's user data.
            .metadata_options(
                InstanceMetadataOptionsRequest::builder()
                    .http_tokens(HttpTokensState::Required)
                    .http_put_response_hop_limit(1)
                    .build(),
            )
            .tag_specifications(spec(ResourceType::Instance))
            .tag_specifications(spec(ResourceType::Volume));
        if let Some(k) = l.key_name {
            req = req.key_name(k);
        }
        if let Some(v) = &l.root_volume {
            req = req.block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name(&v.device_name)
                    .ebs(
                        EbsBlockDevice::builder()
                            .set_volume_size(v.size_gb.map(|g| g as i32))
                            .set_volume_type(v.volume_type.as_deref().map(VolumeType::from))
                            .delete_on_termination(true)
                            .build(),
                    )
                    .build(),
            );
        }
        // One attempt: a retry whose first attempt launched but lost its answer would launch
        // again wherever the ClientToken is ignored (moto). The error goes to the engine,
        // which issues the batch again with its token, and the lookup above finds what the
        // lost answer launched.
        let r = req
            .customize()
            .config_override(aws_sdk_ec2::config::Builder::default().retry_config(
                aws_smithy_types::retry::RetryConfig::standard().with_max_attempts(1),
            ))
            .send()
            .await
            .map_err(|e| from_sdk("RunInstances", e))?;
        out.extend(
            r.instances()
                .iter()
                .filter_map(|i| to_machine(i, l.bastion)),
        );
    }
    Ok(out)
}

/// Terminates instances (already-gone ones are not an error).
pub async fn terminate(c: &AwsClients, ids: &[String]) -> Result<(), AwsError> {
    if ids.is_empty() {
        return Ok(());
    }
    match c
        .ec2
        .terminate_instances()
        .set_instance_ids(Some(ids.to_vec()))
        .send()
        .await
        .map_err(|e| from_sdk("TerminateInstances", e))
    {
        Ok(_) => Ok(()),
        Err(e) if e.has_code(&["InvalidInstanceID.NotFound"]) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_share_a_prefix_and_fit_the_tag_limit() {
        let names: Vec<String> = (0..60).map(|i| format!("demo-general-{i:06x}")).collect();
        let chunks = name_chunks(&names);
        assert!(chunks.len() >= 2);
        assert!(chunks
            .iter()
            .all(|(p, s)| p == "demo-general-" && s.join(",").len() <= 256));
        assert_eq!(chunks.iter().map(|(_, s)| s.len()).sum::<usize>(), 60);
        let odd = vec!["a-1".to_string(), "b-2".to_string()];
        assert_eq!(name_chunks(&odd).len(), 2);
    }
}

//! The `CloudProvider` contract: what the engine asks of a cloud, and what it gets back.
//! The rules, each with its conformance check, are written down in [`crate::contract`].
//!
//! A provider is stateless with respect to the engine: everything it needs comes in a
//! [`ClusterContext`] (cluster id and spec, account, profile), and everything it reports is
//! found again in the cloud by the cluster's ownership tag, so a restarted engine finds it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::{CloudAccount, CloudType, Cluster, ClusterProfile, NodePool, Pack, PoolRole};

/// Tag key carrying the cluster id on every cloud resource.
pub const TAG_CLUSTER_ID: &str = "spectro.io/cluster-id";
/// Tag key carrying the cluster name.
pub const TAG_CLUSTER_NAME: &str = "spectro.io/cluster-name";
/// Tag key carrying a resource's role (`control-plane`, `worker`, `vpc`, ...).
pub const TAG_ROLE: &str = "spectro.io/role";
/// Tag key carrying a machine's node pool.
pub const TAG_POOL: &str = "spectro.io/pool";
/// Tag key carrying a machine's shape hash (what it was built with).
pub const TAG_SHAPE: &str = "spectro.io/shape";
/// Tag key carrying the engine's idempotency token for the create that made a resource.
pub const TAG_TOKEN: &str = "spectro.io/token";

/// A cluster's stable identity (a UUID), used in every ownership tag.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct ClusterId(pub uuid::Uuid);

impl ClusterId {
    /// A fresh random id.
    #[must_use]
    pub fn new() -> Self {
        ClusterId(uuid::Uuid::new_v4())
    }
}

impl Default for ClusterId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for ClusterId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(ClusterId)
    }
}

/// Everything a provider needs to act for one cluster. Serializable, so that a remote
/// provider (a private cloud gateway) can carry it; its secrets serialize as `***` unless
/// revealed on purpose.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterContext {
    /// The cluster's id (ownership tag value).
    pub cluster_id: ClusterId,
    /// The desired spec.
    pub spec: Cluster,
    /// The profile the cluster runs (the applied snapshot).
    pub profile: ClusterProfile,
    /// The account to act with (secrets inside are redacted in Debug).
    pub account: CloudAccount,
    /// Static-IP clusters: the control-plane VIP taken from the control-plane pool's IP pool
    /// (the API endpoint instead of a load-balancer VM).
    pub vip: Option<IpAddr>,
    /// The machine image resolved for the cluster, once known (infrastructure machines such
    /// as a bastion or a load-balancer VM boot from it).
    pub image: Option<ImageRef>,
    /// The cluster is being deleted (or aborted): its machines and infrastructure are going
    /// away. A provider may skip what only matters to a cluster that keeps running: repairs
    /// of load-balancer registrations in a listing, taking control-plane nodes out of the
    /// API endpoint before they are deleted. Absent (an older sender): `false`.
    #[serde(default)]
    pub deleting: bool,
}

/// The static network configuration of one node (static-IP clusters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeNetwork {
    /// The node's address.
    pub address: IpAddr,
    /// Prefix length of its network.
    pub prefix: u8,
    /// Default gateway.
    pub gateway: IpAddr,
    /// DNS servers.
    pub nameservers: Vec<IpAddr>,
}

impl ClusterContext {
    /// The tags every resource of this cluster carries: the user's tags plus ownership.
    #[must_use]
    pub fn ownership_tags(&self) -> BTreeMap<String, String> {
        let mut t = self.spec.tags.clone();
        t.insert(TAG_CLUSTER_ID.into(), self.cluster_id.to_string());
        t.insert(TAG_CLUSTER_NAME.into(), self.spec.name.clone());
        t
    }
}

/// A cloud resource, by kind and id, as reported for inventory and leak checks.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct CloudResource {
    /// Kind, e.g. `vpc`, `subnet`, `nat-gateway`, `load-balancer`, `vm`.
    pub kind: String,
    /// Cloud id.
    pub id: String,
}

/// The state of a cluster's shared infrastructure (network, API endpoint, security).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InfraStatus {
    /// Everything exists and is usable.
    pub ready: bool,
    /// The API server endpoint (load balancer DNS name or VIP), once known.
    pub endpoint: Option<String>,
    /// What exists now.
    pub resources: Vec<CloudResource>,
    /// What is still being waited for, when not ready.
    pub message: Option<String>,
    /// Provider data the machines need (subnet ids per zone, security groups, ...).
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
}

/// The state of infrastructure deletion.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeleteStatus {
    /// Nothing of the cluster is left.
    pub done: bool,
    /// What is still there (being deleted, or impossible to delete: see `message`).
    pub remaining: Vec<CloudResource>,
    /// Why something is left.
    pub message: Option<String>,
}

/// A machine's lifecycle state as the cloud reports it. New states may come: match with a
/// wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum MachineState {
    /// Created, not up yet.
    Pending,
    /// Up.
    Running,
    /// Being stopped or deleted.
    Deleting,
    /// Broken: will be replaced.
    Failed,
}

/// A machine of a cluster, as observed in the cloud.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    /// Cloud id (instance id, VM managed object id, ...).
    pub id: String,
    /// Machine name (unique in the cluster, chosen by the engine).
    pub name: String,
    /// Node pool.
    pub pool: String,
    /// Role of its pool.
    pub role: PoolRole,
    /// Fault domain it was placed in (zone or placement domain).
    pub zone: String,
    /// Shape hash it was built with.
    pub shape: String,
    /// Idempotency token of the create that made it.
    pub token: String,
    /// State.
    pub state: MachineState,
    /// Primary private address.
    pub address: Option<IpAddr>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// How a machine joins the cluster: decides its bootstrap data. Kubeadm's three modes, a
/// closed set: exhaustive on purpose, so a provider that branches on it handles every mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum BootstrapRole {
    /// The first control-plane node: `kubeadm init`.
    Init,
    /// Another control-plane node: `kubeadm join --control-plane`.
    JoinControlPlane,
    /// A worker: `kubeadm join`.
    JoinWorker,
}

/// One create call: `names.len()` machines of one pool in one fault domain (serializable
/// for remote providers; the user data as base64).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineBatch {
    /// Idempotency token: repeating a call with the same token creates nothing new.
    pub token: String,
    /// The pool (shape, role).
    pub pool: NodePool,
    /// The fault domain (zone, or `placement-N` for vSphere).
    pub zone: String,
    /// Shape hash to tag the machines with.
    pub shape: String,
    /// The machine image.
    pub image: ImageRef,
    /// Machine names, one per machine.
    pub names: Vec<String>,
    /// How they join the cluster.
    pub bootstrap: BootstrapRole,
    /// Cloud-init user data, rendered for `bootstrap`.
    #[serde(with = "base64_bytes")]
    pub user_data: Vec<u8>,
    /// Static-IP clusters: one network configuration per name (empty with DHCP and on
    /// public clouds).
    pub network: Vec<NodeNetwork>,
    /// No earlier call carried `token`: the engine recorded the batch's intent in this
    /// reconcile, so nothing can exist with it and the provider may skip looking for what
    /// an earlier attempt created (one read saved per create). `false` (the default, and
    /// what an older sender means) for a batch re-issued after a crash, a lost answer or a
    /// failure: then the provider must find what the earlier attempt made (rule P15).
    #[serde(default)]
    pub first_attempt: bool,
}

mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// What image a cluster's machines need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    /// The OS pack.
    pub os: Pack,
    /// The Kubernetes pack.
    pub kubernetes: Pack,
    /// A bring-your-own image reference from the OS pack's annotations.
    pub base_image: Option<String>,
    /// Customization to run on the base image, if any.
    pub customization: Option<Customization>,
    /// Signature of the pack definition: customized images are tagged and reused by it.
    pub signature: String,
}

impl ImageSpec {
    /// For clouds that only resolve ready images: a terminal error naming the cloud when the
    /// profile asks for customization. `image` is the cloud's word for an image (AMI,
    /// template).
    pub fn require_ready_image(&self, cloud: &str, image: &str) -> Result<(), ProviderError> {
        if self.customization.is_none() {
            return Ok(());
        }
        Err(ProviderError::terminal(format!(
            "image customization (Ansible roles, Kubernetes install on a bring-your-own {image}) is not available on {cloud} yet: publish a ready {image} and name it in the os pack's `image` annotation"
        )))
    }
}

/// Image customization: Kubernetes installation and/or Ansible roles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Customization {
    /// Install the Kubernetes components (bring-your-own image with `skipK8sInstall: false`).
    pub install_kubernetes: bool,
    /// Ansible roles to run.
    pub ansible_roles: Vec<String>,
}

/// A resolved machine image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageRef {
    /// Cloud id (AMI id, image URN, template path).
    pub id: String,
    /// True when spectro built it by customization.
    pub customized: bool,
}

/// The underlying error of a [`ProviderError`]: the SDK, transport, fault or decoding error
/// a provider classified. Shared (an `Arc`), so that `ProviderError` stays `Clone`.
///
/// `ProviderError`'s [`std::error::Error::source`] returns the wrapped error itself, so a
/// caller downcasts it to the provider's own type (e.g. `spectro_aws::AwsError`). `Debug`
/// prints the wrapped error's `Display` only (never an SDK's raw response); equality compares
/// that text.
#[derive(Clone)]
pub struct ErrorSource(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl ErrorSource {
    /// Wraps an error.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        ErrorSource(Arc::new(error))
    }

    /// Wraps a boxed error (what many libraries hand out).
    pub fn from_boxed(error: Box<dyn std::error::Error + Send + Sync + 'static>) -> Self {
        ErrorSource(Arc::from(error))
    }

    /// The wrapped error.
    pub fn get(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }

    /// The wrapped error as `T`, when it is one.
    pub fn downcast_ref<T: std::error::Error + 'static>(&self) -> Option<&T> {
        self.0.downcast_ref::<T>()
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for ErrorSource {
    fn from(error: E) -> Self {
        ErrorSource::new(error)
    }
}

impl fmt::Debug for ErrorSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ErrorSource")
            .field(&format_args!("{}", self.0))
            .finish()
    }
}

impl fmt::Display for ErrorSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl PartialEq for ErrorSource {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}

/// What went wrong in a cloud call, typed for the engine's error policy. Messages never
/// contain secrets.
///
/// Build one with the constructors ([`ProviderError::retryable`], ...) and attach the error
/// it comes from with [`ProviderError::with_source`]; [`std::error::Error::source`] returns
/// that error. New variants and fields may come: match with `{ .. }` and a wildcard arm.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ProviderError {
    /// A transient failure: retry with backoff.
    #[non_exhaustive]
    Retryable {
        /// What happened.
        message: String,
        /// The error it comes from, if any.
        source: Option<ErrorSource>,
    },
    /// The cloud throttled us: retry after the given delay.
    #[non_exhaustive]
    Throttled {
        /// How long to wait.
        retry_after: Duration,
        /// The cloud's message.
        message: String,
        /// The error it comes from, if any.
        source: Option<ErrorSource>,
    },
    /// A quota or limit is exhausted: shown to the user; retried until it is raised.
    #[non_exhaustive]
    QuotaExceeded {
        /// The cloud's message, e.g. `vCPU limit exceeded`.
        message: String,
        /// The error it comes from, if any.
        source: Option<ErrorSource>,
    },
    /// The account cannot be used: wrong or expired credentials, missing permission.
    #[non_exhaustive]
    Unauthorized {
        /// The cloud's message.
        message: String,
        /// The error it comes from, if any.
        source: Option<ErrorSource>,
    },
    /// A failure retrying cannot fix without a change (bad image id, unknown instance type).
    #[non_exhaustive]
    Terminal {
        /// What happened.
        message: String,
        /// The error it comes from, if any.
        source: Option<ErrorSource>,
    },
}

impl ProviderError {
    /// A transient failure: retry with backoff.
    pub fn retryable(message: impl Into<String>) -> Self {
        ProviderError::Retryable {
            message: message.into(),
            source: None,
        }
    }

    /// The cloud throttled us: retry after `retry_after`.
    pub fn throttled(retry_after: Duration, message: impl Into<String>) -> Self {
        ProviderError::Throttled {
            retry_after,
            message: message.into(),
            source: None,
        }
    }

    /// A quota or limit is exhausted.
    pub fn quota_exceeded(message: impl Into<String>) -> Self {
        ProviderError::QuotaExceeded {
            message: message.into(),
            source: None,
        }
    }

    /// The account cannot be used.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ProviderError::Unauthorized {
            message: message.into(),
            source: None,
        }
    }

    /// A failure retrying cannot fix without a change.
    pub fn terminal(message: impl Into<String>) -> Self {
        ProviderError::Terminal {
            message: message.into(),
            source: None,
        }
    }

    /// The same error, caused by `source` (an SDK, transport or fault error; its `Display`
    /// must not contain secrets either).
    #[must_use]
    pub fn with_source(mut self, source: impl Into<ErrorSource>) -> Self {
        *self.source_mut() = Some(source.into());
        self
    }

    fn source_mut(&mut self) -> &mut Option<ErrorSource> {
        match self {
            ProviderError::Retryable { source, .. }
            | ProviderError::Throttled { source, .. }
            | ProviderError::QuotaExceeded { source, .. }
            | ProviderError::Unauthorized { source, .. }
            | ProviderError::Terminal { source, .. } => source,
        }
    }

    /// The error this one comes from, if any (what [`std::error::Error::source`] returns).
    pub fn error_source(&self) -> Option<&ErrorSource> {
        match self {
            ProviderError::Retryable { source, .. }
            | ProviderError::Throttled { source, .. }
            | ProviderError::QuotaExceeded { source, .. }
            | ProviderError::Unauthorized { source, .. }
            | ProviderError::Terminal { source, .. } => source.as_ref(),
        }
    }

    /// The message (without the prefix `Display` adds for some variants).
    pub fn message(&self) -> &str {
        match self {
            ProviderError::Retryable { message, .. }
            | ProviderError::Throttled { message, .. }
            | ProviderError::QuotaExceeded { message, .. }
            | ProviderError::Unauthorized { message, .. }
            | ProviderError::Terminal { message, .. } => message,
        }
    }

    /// The delay the cloud asked for, if any.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Throttled { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// A short reason code for events and conditions.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            ProviderError::Retryable { .. } => "TransientError",
            ProviderError::Throttled { .. } => "Throttled",
            ProviderError::QuotaExceeded { .. } => "QuotaExceeded",
            ProviderError::Unauthorized { .. } => "Unauthorized",
            ProviderError::Terminal { .. } => "Failed",
        }
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProviderError::Retryable { message, .. } => {
                write!(f, "transient cloud error: {message}")
            }
            ProviderError::Throttled {
                retry_after,
                message,
                ..
            } => write!(
                f,
                "throttled by the cloud API (retry in {retry_after:?}): {message}"
            ),
            ProviderError::QuotaExceeded { message, .. } => f.write_str(message),
            ProviderError::Unauthorized { message, .. } => {
                write!(f, "cloud account rejected: {message}")
            }
            ProviderError::Terminal { message, .. } => f.write_str(message),
        }
    }
}

impl std::error::Error for ProviderError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error_source()
            .map(|s| s.get() as &(dyn std::error::Error + 'static))
    }
}

/// A cloud: what the engine needs from AWS, Azure, GCP, vSphere or the simulated cloud.
///
/// Every method is idempotent. Resources carry the ownership tags of
/// [`ClusterContext::ownership_tags`]; `list_machines` and `ensure_infrastructure` find them
/// by those tags, never by memory alone.
#[async_trait]
pub trait CloudProvider: Send + Sync + 'static {
    /// The cloud this provider serves.
    fn cloud(&self) -> CloudType;

    /// True when calls go through a private cloud gateway's agents (a remote provider): the
    /// engine then holds a cluster back while its gateway has no connected replica or (new
    /// clusters) upgrades. A provider that reaches the cloud itself answers false.
    fn via_gateway(&self) -> bool {
        false
    }

    /// The largest user data the cloud accepts, in bytes (None: no practical limit).
    fn user_data_limit(&self) -> Option<usize> {
        None
    }

    /// Checks that the account's credentials work (e.g. STS GetCallerIdentity).
    async fn validate_account(&self, account: &CloudAccount) -> Result<(), ProviderError>;

    /// Pre-checks the account against what `ctx`'s cluster needs, before anything is
    /// created: every permission it lacks (by the cloud's name) and every capacity shortfall
    /// (quotas minus usage), all at once; what the cloud cannot answer goes to `unchecked`.
    /// Read-only. The default checks nothing and says so.
    async fn precheck(
        &self,
        ctx: &ClusterContext,
    ) -> Result<crate::precheck::Precheck, ProviderError> {
        let _ = ctx;
        Ok(crate::precheck::Precheck::unchecked(format!(
            "{}: this provider has no pre-checks",
            self.cloud().as_str()
        )))
    }

    /// Finds (or builds, when customization is needed) the image for the OS + Kubernetes packs.
    async fn ensure_image(
        &self,
        ctx: &ClusterContext,
        spec: &ImageSpec,
    ) -> Result<ImageRef, ProviderError>;

    /// Creates whatever shared infrastructure is missing and reports its state.
    async fn ensure_infrastructure(
        &self,
        ctx: &ClusterContext,
    ) -> Result<InfraStatus, ProviderError>;

    /// All machines of the cluster (found by ownership tag), terminated ones excluded.
    async fn list_machines(&self, ctx: &ClusterContext) -> Result<Vec<Machine>, ProviderError>;

    /// The fleet of `ctx`'s cluster: a key naming every cluster that one listing can observe
    /// together (same cloud account and region, same vCenter, ...). `None` (the default):
    /// the cluster is only ever listed alone, with [`CloudProvider::list_machines`].
    fn fleet(&self, ctx: &ClusterContext) -> Option<String> {
        let _ = ctx;
        None
    }

    /// Every machine of every cluster of `ctx`'s [fleet](CloudProvider::fleet), by cluster
    /// id, in as few calls as the cloud allows (one paginated listing by the ownership tag
    /// key): what `list_machines` would return for each of them, with the same side effects
    /// (repairs such as load-balancer registrations), so that N clusters of one account cost
    /// O(1) reads per resync instead of O(N). Clusters without machines, and clusters it
    /// cannot show as `list_machines` would, may be absent (the engine lists those alone).
    /// The default lists `ctx`'s cluster alone.
    async fn list_fleet(
        &self,
        ctx: &ClusterContext,
    ) -> Result<HashMap<ClusterId, Vec<Machine>>, ProviderError> {
        Ok(HashMap::from([(
            ctx.cluster_id,
            self.list_machines(ctx).await?,
        )]))
    }

    /// Creates a batch of machines in one call; idempotent by `batch.token`.
    async fn create_machines(
        &self,
        ctx: &ClusterContext,
        infra: &InfraStatus,
        batch: &MachineBatch,
    ) -> Result<Vec<Machine>, ProviderError>;

    /// Deletes machines by cloud id (already-gone ids are not an error).
    async fn delete_machines(
        &self,
        ctx: &ClusterContext,
        machines: &[Machine],
    ) -> Result<(), ProviderError>;

    /// Deletes the shared infrastructure (after the machines) and reports what is left.
    async fn delete_infrastructure(
        &self,
        ctx: &ClusterContext,
    ) -> Result<DeleteStatus, ProviderError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("ThrottlingException: slow down")]
    struct CloudSaid;

    #[test]
    fn provider_error_keeps_its_source_and_stays_clone_and_comparable() {
        let e = ProviderError::throttled(Duration::from_secs(2), "RunInstances: slow down")
            .with_source(CloudSaid);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(e.message(), "RunInstances: slow down");
        assert_eq!(e.reason(), "Throttled");
        assert_eq!(
            e.to_string(),
            "throttled by the cloud API (retry in 2s): RunInstances: slow down"
        );
        let src = std::error::Error::source(&e).expect("the source is kept");
        assert!(src.downcast_ref::<CloudSaid>().is_some());
        assert_eq!(src.to_string(), "ThrottlingException: slow down");
        let copy = e.clone();
        assert_eq!(copy, e);
        assert!(std::error::Error::source(&copy)
            .and_then(|s| s.downcast_ref::<CloudSaid>())
            .is_some());
        // Without a source it is another error; Debug shows the source's text only.
        assert_ne!(
            ProviderError::throttled(Duration::from_secs(2), "RunInstances: slow down"),
            e
        );
        assert!(format!("{e:?}").contains("ErrorSource(ThrottlingException: slow down)"));
        assert!(std::error::Error::source(&ProviderError::terminal("x")).is_none());
    }

    #[test]
    fn constructors_build_each_variant_with_its_reason() {
        let boxed: Box<dyn std::error::Error + Send + Sync> = "io: connection reset".into();
        let cases = [
            (
                ProviderError::retryable("a"),
                "TransientError",
                "transient cloud error: a",
            ),
            (ProviderError::quota_exceeded("b"), "QuotaExceeded", "b"),
            (
                ProviderError::unauthorized("c"),
                "Unauthorized",
                "cloud account rejected: c",
            ),
            (
                ProviderError::terminal("d").with_source(ErrorSource::from_boxed(boxed)),
                "Failed",
                "d",
            ),
        ];
        for (e, reason, text) in cases {
            assert_eq!(e.reason(), reason);
            assert_eq!(e.to_string(), text);
            assert_eq!(e.retry_after(), None);
        }
    }
}

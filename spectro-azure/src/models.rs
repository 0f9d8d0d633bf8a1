//! The ARM resources this provider sends and reads, typed after Azure's REST specs
//! (Microsoft.Compute 2024-07-01, Microsoft.Network 2024-03-01). Only the properties spectro
//! uses; unknown properties of answers are ignored, absent ones are `None`. Read-only
//! properties (`provisioningState`, `id` of top-level resources) are never sent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A top-level ARM resource with properties `P`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource<P> {
    /// ARM id (read-only: never sent).
    #[serde(default, skip_serializing)]
    pub id: String,
    /// Name (read-only: never sent; the URL names it).
    #[serde(default, skip_serializing)]
    pub name: String,
    /// Region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Tags (Azure tag names: see [`crate::names::tag_key`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Availability zones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    /// SKU (public IPs, load balancers, NAT gateways).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<Sku>,
    /// The resource's properties.
    #[serde(default)]
    pub properties: P,
}

/// A SKU by name (`Standard`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sku {
    /// SKU name.
    pub name: String,
}

/// A reference to another resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubResource {
    /// Its ARM id.
    pub id: String,
}

impl SubResource {
    /// A reference to `id`.
    pub fn to(id: impl Into<String>) -> Self {
        SubResource { id: id.into() }
    }
}

/// A named child resource (subnet, frontend, rule, ...).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Child<P> {
    /// Its ARM id (answers; sent only where a reference needs it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Its properties.
    #[serde(default)]
    pub properties: P,
}

/// Nothing but the provisioning state (backend pools).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plain {
    /// Read-only.
    #[serde(default, skip_serializing)]
    pub provisioning_state: Option<String>,
}

/// Public IP address properties.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicIpProps {
    /// `Static`.
    #[serde(
        rename = "publicIPAllocationMethod",
        skip_serializing_if = "Option::is_none"
    )]
    pub allocation: Option<String>,
    /// `IPv4`.
    #[serde(
        rename = "publicIPAddressVersion",
        skip_serializing_if = "Option::is_none"
    )]
    pub version: Option<String>,
    /// The address, once allocated (read from answers).
    #[serde(default, skip_serializing)]
    pub ip_address: Option<String>,
    /// DNS label and the FQDN Azure derives from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_settings: Option<DnsSettings>,
    /// Read-only.
    #[serde(default, skip_serializing)]
    pub provisioning_state: Option<String>,
}

/// A public IP's DNS settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsSettings {
    /// The label (`<label>.<region>.cloudapp.azure.com`).
    pub domain_name_label: String,
    /// The FQDN (read-only).
    #[serde(default, skip_serializing)]
    pub fqdn: Option<String>,
}

/// Network security group properties.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NsgProps {
    /// The rules.
    #[serde(default)]
    pub security_rules: Vec<Child<RuleProps>>,
    /// Read-only.
    #[serde(default, skip_serializing)]
    pub provisioning_state: Option<String>,
}

/// One security rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleProps {
    /// What it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `Tcp`, `Udp`, `*`.
    #[serde(default)]
    pub protocol: String,
    /// Source ports (`*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_port_range: Option<String>,
    /// Destination ports, e.g. `6443` or `2379-2380`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_port_range: Option<String>,
    /// Source: a prefix or a service tag (`VirtualNetwork`, `AzureLoadBalancer`, `Internet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address_prefix: Option<String>,
    /// Destination prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_address_prefix: Option<String>,
    /// `Allow` / `Deny`.
    #[serde(default)]
    pub access: String,
    /// 100..4096, lower first.
    #[serde(default)]
    pub priority: i32,
    /// `Inbound` / `Outbound`.
    #[serde(default)]
    pub direction: String,
}

/// NAT gateway properties.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NatProps {
    /// Its public IPs.
    #[serde(default, rename = "publicIpAddresses")]
    pub public_ip_addresses: Vec<SubResource>,
    /// Idle timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_in_minutes: Option<i32>,
    /// Read-only.
    #[serde(default, skip_serializing)]
    pub provisioning_state: Option<String>,
}

/// Virtual network properties.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VnetProps {
    /// Its address space.
    #[serde(default)]
    pub address_space: AddressSpace,
    /// Its subnets (sent with the network: one PUT makes both).
    #[serde(default)]
    pub subnets: Vec<Child<SubnetProps>>,
    /// Read-only.
    #[serde(default, skip_serializing)]
    pub provisioning_state: Option<String>,
}

/// Address prefixes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddressSpace {
    /// CIDRs.
    #[serde(default)]
    pub address_prefixes: Vec<String>,
}

/// Subnet properties.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubnetProps {
    /// Its CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_prefix: Option<String>,
    /// Its security group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_security_group: Option<SubResource>,
    /// Its NAT gateway (outbound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_gateway: Option<SubResource>,
    /// Read-only.
    #[serde(default, skip_serializing)]
    pub provisioning_state: Option<String>,
}

/// Load balancer properties.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LbProps {
    /// Frontends.
    #[serde(default, rename = "frontendIPConfigurations")]
    pub frontends: Vec<Child<FrontendProps>>,
    /// Backend pools.
    #[serde(default)]
    pub backend_address_pools: Vec<Child<Plain>>,
    /// Health probes.
    #[serde(default)]
    pub probes: Vec<Child<ProbeProps>>,
    /// Rules.
    #[serde(default)]
    pub load_balancing_rules: Vec<Child<LbRuleProps>>,
    /// Read-only.
    #[serde(default, skip_serializing)]
    pub provisioning_state: Option<String>,
}

/// A frontend: a public IP.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FrontendProps {
    /// The public IP.
    #[serde(
        default,
        rename = "publicIPAddress",
        skip_serializing_if = "Option::is_none"
    )]
    pub public_ip_address: Option<SubResource>,
}

/// A health probe.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeProps {
    /// `Tcp`.
    #[serde(default)]
    pub protocol: String,
    /// Port.
    #[serde(default)]
    pub port: i32,
    /// Seconds between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_in_seconds: Option<i32>,
    /// Failures before a backend is out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_probes: Option<i32>,
}

/// A load-balancing rule.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LbRuleProps {
    /// The frontend.
    #[serde(
        default,
        rename = "frontendIPConfiguration",
        skip_serializing_if = "Option::is_none"
    )]
    pub frontend: Option<SubResource>,
    /// The backend pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_address_pool: Option<SubResource>,
    /// The probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<SubResource>,
    /// `Tcp`.
    #[serde(default)]
    pub protocol: String,
    /// Frontend port.
    #[serde(default)]
    pub frontend_port: i32,
    /// Backend port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_port: Option<i32>,
    /// Outbound traffic of the backends does not use the frontend (the NAT gateway does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_outbound_snat: Option<bool>,
    /// Idle timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_in_minutes: Option<i32>,
}

/// Network interface properties (read: addresses of the machines).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NicProps {
    /// IP configurations.
    #[serde(default)]
    pub ip_configurations: Vec<Child<NicIpProps>>,
    /// The VM it is attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_machine: Option<SubResource>,
    /// Read-only.
    #[serde(default, skip_serializing)]
    pub provisioning_state: Option<String>,
}

/// A NIC's IP configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NicIpProps {
    /// The private address.
    #[serde(
        default,
        rename = "privateIPAddress",
        skip_serializing_if = "Option::is_none"
    )]
    pub private_ip_address: Option<String>,
    /// The primary configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<bool>,
}

/// Virtual machine properties.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmProps {
    /// Size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_profile: Option<HardwareProfile>,
    /// Image and OS disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_profile: Option<StorageProfile>,
    /// Host name, admin user, SSH key, cloud-init user data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_profile: Option<OsProfile>,
    /// The NIC, created with the VM and deleted with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_profile: Option<NetworkProfile>,
    /// Read-only.
    #[serde(default, skip_serializing)]
    pub provisioning_state: Option<String>,
    /// Read-only: creation time (RFC 3339).
    #[serde(default, skip_serializing)]
    pub time_created: Option<String>,
}

/// A VM's size.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HardwareProfile {
    /// e.g. `Standard_D2s_v3`.
    #[serde(default)]
    pub vm_size: String,
}

/// A VM's image and OS disk.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageProfile {
    /// The image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_reference: Option<ImageReference>,
    /// The OS disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_disk: Option<OsDisk>,
}

/// A marketplace image (publisher, offer, SKU, version) or an image resource (`id`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageReference {
    /// Image (or gallery image version) resource id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Marketplace publisher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    /// Offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<String>,
    /// SKU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// Version or `latest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// The OS disk.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OsDisk {
    /// Its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `FromImage`.
    #[serde(default)]
    pub create_option: String,
    /// Size in GB (absent: the image's).
    #[serde(
        default,
        rename = "diskSizeGB",
        skip_serializing_if = "Option::is_none"
    )]
    pub disk_size_gb: Option<u32>,
    /// Managed disk type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_disk: Option<ManagedDisk>,
    /// `Delete`: the disk goes with the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_option: Option<String>,
}

/// A managed disk's type.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedDisk {
    /// e.g. `Premium_LRS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_account_type: Option<String>,
}

/// Host name, admin user, SSH key, custom data.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OsProfile {
    /// Host name (the Kubernetes node name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computer_name: Option<String>,
    /// Admin user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_username: Option<String>,
    /// Base64 cloud-init user data (never returned by ARM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_data: Option<String>,
    /// SSH only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux_configuration: Option<LinuxConfiguration>,
}

/// Linux: key-only SSH.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinuxConfiguration {
    /// No passwords.
    #[serde(default)]
    pub disable_password_authentication: bool,
    /// Authorized keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshConfiguration>,
}

/// Authorized keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshConfiguration {
    /// Keys.
    #[serde(default)]
    pub public_keys: Vec<SshPublicKey>,
}

/// One authorized key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshPublicKey {
    /// `authorized_keys` path.
    #[serde(default)]
    pub path: String,
    /// The key.
    #[serde(default)]
    pub key_data: String,
}

/// The VM's network: one NIC created with it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkProfile {
    /// The Microsoft.Network version ARM creates the NIC with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_api_version: Option<String>,
    /// The NIC configurations.
    #[serde(default)]
    pub network_interface_configurations: Vec<Child<NicConfigProps>>,
}

/// A NIC made by the VM.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NicConfigProps {
    /// The primary NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<bool>,
    /// `Delete`: the NIC goes with the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_option: Option<String>,
    /// Static placement: the NIC's own security group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_security_group: Option<SubResource>,
    /// IP configurations.
    #[serde(default)]
    pub ip_configurations: Vec<Child<NicConfigIpProps>>,
}

/// An IP configuration of a NIC made by the VM.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NicConfigIpProps {
    /// The subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<SubResource>,
    /// Primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<bool>,
    /// Load-balancer backend pools it joins at creation (the API server's, for
    /// control-plane nodes): no registration call after the create.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_balancer_backend_address_pools: Vec<SubResource>,
}

/// Properties that carry ARM's `provisioningState`.
pub trait Provisioned {
    /// The state (`None`: the answer had none, which ARM means as succeeded).
    fn state(&self) -> Option<&str>;
    /// Records the state a followed operation ended in.
    fn set_state(&mut self, state: &str);
}

macro_rules! provisioned {
    ($($t:ty),*) => {$(
        impl Provisioned for $t {
            fn state(&self) -> Option<&str> {
                self.provisioning_state.as_deref()
            }
            fn set_state(&mut self, state: &str) {
                self.provisioning_state = Some(state.to_string());
            }
        }
    )*};
}

provisioned!(
    PublicIpProps,
    NsgProps,
    NatProps,
    VnetProps,
    LbProps,
    NicProps,
    VmProps
);

impl<P: Provisioned> Resource<P> {
    /// True when ARM gave up on the resource (`Failed`, `Canceled`): a PUT repairs it.
    pub fn failed(&self) -> bool {
        matches!(self.properties.state(), Some("Failed" | "Canceled"))
    }
}

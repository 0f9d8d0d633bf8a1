//! IP pools for static IP allocation on private clouds.

use std::net::IpAddr;

use ipnet::IpNet;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A start–end address range (both included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpRange {
    /// First address, e.g. `10.10.183.1`.
    pub start: IpAddr,
    /// Last address, e.g. `10.10.183.100`.
    pub end: IpAddr,
}

/// An IP pool linked to a private cloud gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpPool {
    /// Pool name.
    pub name: String,
    /// The private cloud gateway the pool is linked to.
    pub gateway_name: String,
    /// Network type `Range`: start and end address. Exactly one of `range` or `subnet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<IpRange>,
    /// Network type `Subnet`: a CIDR, e.g. `10.10.183.64/26`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub subnet: Option<IpNet>,
    /// Network prefix length of the nodes' network, e.g. `18`.
    pub prefix: u8,
    /// Default gateway of the nodes' network.
    pub gateway: IpAddr,
    /// DNS servers.
    #[serde(default)]
    pub nameservers: Vec<IpAddr>,
    /// Reserve the pool for the first cluster that uses it.
    #[serde(default)]
    pub restrict_to_single_cluster: bool,
}

impl IpPool {
    /// First and last allocatable address (a subnet excludes its network and broadcast
    /// addresses for IPv4 prefixes shorter than /31).
    #[must_use]
    pub fn bounds(&self) -> Option<(IpAddr, IpAddr)> {
        if let Some(r) = self.range {
            return Some((r.start, r.end));
        }
        let net = self.subnet?;
        match net {
            IpNet::V4(n) if n.prefix_len() < 31 => {
                let first = u32::from(n.network()) + 1;
                let last = u32::from(n.broadcast()) - 1;
                Some((IpAddr::V4(first.into()), IpAddr::V4(last.into())))
            }
            IpNet::V4(n) => Some((IpAddr::V4(n.network()), IpAddr::V4(n.broadcast()))),
            IpNet::V6(n) => {
                let first = u128::from(n.network()) + u128::from(n.prefix_len() < 127);
                Some((IpAddr::V6(first.into()), IpAddr::V6(n.broadcast())))
            }
        }
    }

    /// The nodes' network: gateway address with the pool's prefix.
    #[must_use]
    pub fn network(&self) -> Option<IpNet> {
        IpNet::new(self.gateway, self.prefix)
            .ok()
            .map(|n| n.trunc())
    }
}

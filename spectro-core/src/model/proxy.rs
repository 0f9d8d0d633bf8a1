//! HTTP(S) proxy settings propagated to nodes and gateways.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::secret::redact_url_userinfo;

/// Proxy settings. URLs may carry credentials, so Debug hides their passwords.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxySettings {
    /// `HTTP_PROXY`, e.g. `http://user:pass@10.0.0.5:3128` (sealed at rest: it may carry
    /// a password).
    #[serde(default, serialize_with = "crate::secret::sensitive_str")]
    pub http_proxy: String,
    /// `HTTPS_PROXY` (sealed at rest).
    #[serde(default, serialize_with = "crate::secret::sensitive_str")]
    pub https_proxy: String,
    /// `NO_PROXY` entries: hosts, domains (`.corp.org`), CIDRs.
    #[serde(default)]
    pub no_proxy: Vec<String>,
}

impl fmt::Debug for ProxySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxySettings")
            .field("http_proxy", &redact_url_userinfo(&self.http_proxy))
            .field("https_proxy", &redact_url_userinfo(&self.https_proxy))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// The host part of `host`, `host:port`, `[v6]:port` or a bare IPv6 address (for
/// `NO_PROXY` entries).
#[must_use]
pub fn host_of(h: &str) -> &str {
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match h.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => host,
        _ => h,
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn host_of_strips_ports() {
        assert_eq!(host_of("127.0.0.1:8989"), "127.0.0.1");
        assert_eq!(host_of("vc.corp"), "vc.corp");
        assert_eq!(host_of("[fd00::1]:443"), "fd00::1");
        assert_eq!(host_of("fd00::1"), "fd00::1");
    }
}

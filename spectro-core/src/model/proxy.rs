//! HTTP(S) proxy settings propagated to nodes and gateways.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::secret::redact_url_userinfo;

/// Proxy settings. URLs may carry credentials, so Debug hides their passwords.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxySettings {
    /// `HTTP_PROXY`, e.g. `http://user:pass@10.0.0.5:3128`.
    #[serde(default)]
    pub http_proxy: String,
    /// `HTTPS_PROXY`.
    #[serde(default)]
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

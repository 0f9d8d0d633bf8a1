//! etcd membership through the v3 API's JSON gateway (`/v3/cluster/member/*`, `/health`):
//! the same API as gRPC, without a protobuf toolchain at build time.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use spectro_core::workload::{EtcdMember, WorkloadAccess, WorkloadError};

use crate::unreachable;

pub(crate) struct Etcd {
    http: reqwest::Client,
    endpoints: Vec<String>,
}

#[derive(Deserialize)]
struct MemberList {
    #[serde(default)]
    members: Vec<Member>,
}

#[derive(Deserialize)]
struct Member {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(rename = "peerURLs", default)]
    peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", default)]
    client_urls: Vec<String>,
    #[serde(rename = "isLearner", default)]
    is_learner: bool,
}

#[derive(Deserialize)]
struct Health {
    #[serde(default)]
    health: String,
}

impl Etcd {
    /// `None` when the access names no etcd endpoint.
    pub(crate) fn new(
        a: &WorkloadAccess,
        timeout: Duration,
    ) -> Result<Option<Self>, WorkloadError> {
        if a.etcd_endpoints.is_empty() {
            return Ok(None);
        }
        let mut b = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout);
        if a.etcd_endpoints.iter().any(|e| e.starts_with("https://")) {
            let ca = reqwest::Certificate::from_pem(a.etcd_ca_pem.as_bytes())
                .map_err(|e| WorkloadError::Invalid(format!("etcd CA: {e}")))?;
            let mut pem = a.etcd_client_cert_pem.clone().into_bytes();
            pem.extend_from_slice(b"\n");
            pem.extend_from_slice(a.etcd_client_key.expose().as_bytes());
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|_| WorkloadError::Invalid("etcd client certificate unusable".into()))?;
            b = b.tls_certs_only([ca]).identity(id);
        }
        let http = b
            .build()
            .map_err(|e| WorkloadError::Invalid(format!("etcd client: {e}")))?;
        Ok(Some(Etcd {
            http,
            endpoints: a.etcd_endpoints.clone(),
        }))
    }

    async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<reqwest::Response, WorkloadError> {
        let mut last = None;
        for e in &self.endpoints {
            let url = format!("{}{path}", e.trim_end_matches('/'));
            match self.http.post(&url).json(&body).send().await {
                Ok(r) if r.status().is_success() => return Ok(r),
                Ok(r) => {
                    let code = r.status().as_u16();
                    let text = r.text().await.unwrap_or_default();
                    return Err(WorkloadError::Refused {
                        operation: format!("etcd {path}"),
                        code,
                        message: text,
                    });
                }
                Err(err) => last = Some(err),
            }
        }
        Err(unreachable(
            "etcd",
            last.map_or_else(
                || "no endpoint".to_string(),
                |e| e.without_url().to_string(),
            ),
        ))
    }

    async fn healthy(&self, m: &Member) -> bool {
        for u in &m.client_urls {
            let url = format!("{}/health", u.trim_end_matches('/'));
            if let Ok(r) = self.http.get(&url).send().await {
                if let Ok(h) = r.json::<Health>().await {
                    return h.health == "true";
                }
            }
        }
        false
    }

    /// The member list, linearizable (never a lagging follower's view).
    async fn list(&self) -> Result<MemberList, WorkloadError> {
        self.post("/v3/cluster/member/list", json!({ "linearizable": true }))
            .await?
            .json()
            .await
            .map_err(|e| unreachable("etcd", e.without_url()))
    }

    pub(crate) async fn members(&self) -> Result<Vec<EtcdMember>, WorkloadError> {
        let list = self.list().await?;
        let mut out = Vec::with_capacity(list.members.len());
        for m in &list.members {
            out.push(EtcdMember {
                id: m.id.parse().unwrap_or_default(),
                name: m.name.clone(),
                peer_urls: m.peer_urls.clone(),
                healthy: self.healthy(m).await,
                learner: m.is_learner,
            });
        }
        Ok(out)
    }

    pub(crate) async fn remove(&self, id: u64) -> Result<bool, WorkloadError> {
        // Ask another member than the one removed: the removed member applies its own removal
        // and shuts down, its answer may never come.
        let list = self.list().await?;
        let Some(victim) = list.members.iter().find(|m| m.id.parse() == Ok(id)) else {
            return Ok(false);
        };
        let own = |e: &&String| {
            victim
                .client_urls
                .iter()
                .any(|u| u.trim_end_matches('/') == e.trim_end_matches('/'))
        };
        // A stable sort: the victim's own endpoints last, the others in their order.
        let mut endpoints: Vec<&String> = self.endpoints.iter().collect();
        endpoints.sort_by_key(own);
        let body = json!({ "ID": id.to_string() });
        let mut failed: Option<WorkloadError> = None;
        for e in endpoints {
            let url = format!("{}/v3/cluster/member/remove", e.trim_end_matches('/'));
            match self.http.post(&url).json(&body).send().await {
                Ok(r) if r.status().is_success() => return Ok(true),
                Ok(r) => {
                    let code = r.status().as_u16();
                    let text = r.text().await.unwrap_or_default();
                    if text.contains("member not found") {
                        // Gone: removed by an earlier attempt of this call whose answer was
                        // lost, or by someone else before it.
                        return Ok(failed.is_some());
                    }
                    failed.get_or_insert(WorkloadError::Refused {
                        operation: "etcd member remove".into(),
                        code,
                        message: text,
                    });
                }
                Err(err) => {
                    failed.get_or_insert(unreachable("etcd", err.without_url()));
                }
            }
        }
        Err(failed.unwrap_or_else(|| unreachable("etcd", "no endpoint")))
    }
}

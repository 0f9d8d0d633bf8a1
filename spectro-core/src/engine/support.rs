//! Support bundles: everything a support engineer asks for about one cluster, in one
//! tar.gz ([`Engine::support_bundle`]) — its status and conditions, events, the explanation
//! and the plan, the recent cloud calls ([`CallRecord`], kept per cluster by the executor's
//! single cloud-call path), pending intents, its spec, profile and account with every secret
//! redacted, the versions of everything, and the node-side log collector with how to run it.
//!
//! Redaction: `Secret` fields serialize as `***`; proxy URLs lose their password; in the
//! spec (with its pack value overrides), the profile and its packs' values and manifests
//! (parsed as YAML), everything under a key that names a secret (`password`, `secret`,
//! `token`, `key`, `credential`, `auth`, ...) and the data of Kubernetes `Secret` objects
//! become `***`.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use super::runtime::Inner;
use super::Engine;
use crate::error::{CoreError, Result};
use crate::provider::ClusterId;
use crate::secret::{redact_url_userinfo, REDACTED};

/// One cloud call of a cluster, as the executor made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct CallRecord {
    /// When it ended.
    pub at: DateTime<Utc>,
    /// The cloud (`aws`, `vsphere`, ...).
    pub provider: &'static str,
    /// The provider method (`create_machines`, `list_machines`, ...).
    pub operation: &'static str,
    /// The reconcile attempt it belonged to (1 after a success).
    pub attempt: u32,
    /// `ok` or the error's reason (`Throttled`, `QuotaExceeded`, ...).
    pub outcome: &'static str,
    /// How long it took, in milliseconds.
    pub took_ms: u32,
    /// The provider's message when it failed (providers never put secrets in messages).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Inner {
    /// Keeps `call` among the cluster's most recent calls (at most `config.call_log`).
    pub(crate) fn log_call(&self, id: ClusterId, call: CallRecord) {
        let cap = self.config.call_log;
        if cap == 0 {
            return;
        }
        let mut log = self.call_log.lock().unwrap_or_else(|e| e.into_inner());
        let calls = log.entry(id).or_default();
        while calls.len() >= cap {
            calls.pop_front();
        }
        calls.push_back(call);
    }
}

/// Key names whose string values a bundle never shows.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "credential",
    "privatekey",
    "private_key",
    "apikey",
    "api_key",
    "key",
    "cert",
    "auth",
];

fn secret_key_name(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| k.contains(w))
}

/// Every string (and number) below `v` becomes `***`.
fn redact_all(v: &mut Value) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(redact_all),
        Value::Object(map) => map.values_mut().for_each(redact_all),
        Value::Null | Value::Bool(_) => {}
        _ => *v = Value::String(REDACTED.into()),
    }
}

/// Redacts `v` in place: everything under secret-named keys, URL passwords, the data of
/// Kubernetes `Secret` objects, and the same inside the YAML text a spec or profile carries
/// (a pack's `values` and `manifests`, a cluster's `packValues`) — the support bundle's
/// rule, for any tool that shows specs: the command line, a dashboard.
pub fn redact(v: &mut Value) {
    match v {
        Value::String(s) if s.contains("://") => *s = redact_url_userinfo(s),
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::Object(map) => {
            let k8s_secret = map.get("kind").and_then(Value::as_str) == Some("Secret");
            for (k, item) in map.iter_mut() {
                if (k8s_secret && (k == "data" || k == "stringData")) || secret_key_name(k) {
                    redact_all(item);
                } else if let (true, Value::String(text)) =
                    (k == "values" || k == "manifests", &mut *item)
                {
                    *text = redact_yaml(text);
                } else if let (true, Value::Object(texts)) = (k == "packValues", &mut *item) {
                    for t in texts.values_mut() {
                        match t {
                            Value::String(text) => *text = redact_yaml(text),
                            other => redact(other),
                        }
                    }
                } else {
                    redact(item);
                }
            }
        }
        _ => {}
    }
}

/// Redacts YAML text (one or more documents); text that is not YAML is withheld whole.
fn redact_yaml(text: &str) -> String {
    if text.trim().is_empty() {
        return String::new();
    }
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        match <Value as serde::Deserialize>::deserialize(doc) {
            Ok(mut v) => {
                redact(&mut v);
                out.push(serde_norway::to_string(&v).unwrap_or_default());
            }
            Err(_) => return format!("# withheld: {} bytes that are not YAML\n", text.len()),
        }
    }
    out.join("---\n")
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_else(|e| json!({ "unserializable": e.to_string() }))
}

fn pretty(v: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).unwrap_or_default();
    out.push(b'\n');
    out
}

fn yaml(v: &Value) -> Vec<u8> {
    serde_norway::to_string(v).unwrap_or_default().into_bytes()
}

const README: &str = "spectro support bundle

cluster.yaml        the cluster's spec (secrets redacted)
profile.yaml        the profile revision it runs (pack values and manifests redacted)
account.yaml        its cloud account (credentials redacted)
status.json         lifecycle, generation, phase, conditions, pools and machines
conditions.txt      the conditions as a table
events.txt          the event stream of the cluster (events.jsonl: the same, one JSON per line)
explanation.json    why it is (not) at its desired state: blockers, cluster to machine
plan.json           what the engine would do now to reach the spec, per pool
calls.jsonl         the most recent cloud calls (operation, outcome, duration, error)
intents.json        machine creates recorded and not yet observed
health.json         health judged from the cluster's agent (when monitored)
versions.json       spectro, the provider contract, the clouds registered, packs
node-logs/          the log collector every node has (/usr/local/bin/spectro-collect-logs)
";

const NODE_LOGS_README: &str = "Every node of the cluster has this script as
/usr/local/bin/spectro-collect-logs (written by cloud-init). On a node:

    sudo spectro-collect-logs /tmp

archives cloud-init, kubelet, containerd, container, pod and kernel logs and a few node
facts into /tmp/spectro-logs-<host>-<time>.tgz and prints its path: attach it to the ticket.
";

impl Engine {
    /// The cluster's most recent cloud calls made by this engine, oldest first (at most
    /// [`EngineConfig::call_log`](super::EngineConfig::call_log); forgotten when the cluster
    /// is deleted or moves to another replica).
    #[must_use]
    pub fn cloud_calls(&self, id: ClusterId) -> Vec<CallRecord> {
        self.inner
            .call_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .map(|c| c.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// A support bundle of the cluster: a tar.gz (one directory,
    /// `spectro-support-<name>-<time>/`) with its status, conditions, events, explanation,
    /// plan, recent cloud calls, intents, redacted spec, profile and account, versions, and
    /// the node-side log collector. No secret is in it (module docs).
    ///
    /// ```no_run
    /// # async fn f(engine: spectro_core::Engine, id: spectro_core::ClusterId) -> spectro_core::Result<()> {
    /// std::fs::write("support.tgz", engine.support_bundle(id).await?).expect("written");
    /// # Ok(()) }
    /// ```
    pub async fn support_bundle(&self, id: ClusterId) -> Result<Vec<u8>> {
        let rec = self.cluster(id).await?;
        let now = self.inner.clock.now();
        let dir = format!(
            "spectro-support-{}-{}",
            rec.spec.name,
            now.format("%Y%m%dT%H%M%SZ")
        );
        let mut files: Vec<(String, Vec<u8>)> = vec![("README.txt".into(), README.into())];

        // The cluster's pack value overrides are YAML text: redacted as YAML first.
        let mut spec = rec.spec.clone();
        for text in spec.pack_values.values_mut() {
            *text = redact_yaml(text);
        }
        let mut spec = to_value(&spec);
        redact(&mut spec);
        files.push(("cluster.yaml".into(), yaml(&spec)));

        let mut profile = rec.profile.clone();
        for pack in &mut profile.packs {
            pack.values = redact_yaml(&pack.values);
            pack.manifests = redact_yaml(&pack.manifests);
        }
        let mut profile = to_value(&profile);
        redact(&mut profile);
        files.push(("profile.yaml".into(), yaml(&profile)));

        let account =
            match super::executor::load_account(&self.inner, &rec.spec.cloud_account).await {
                // `Secret` fields serialize as `***` here.
                Ok(a) => {
                    let mut v = to_value(&a);
                    redact(&mut v);
                    v
                }
                Err(e) => json!({ "name": rec.spec.cloud_account, "error": e.to_string() }),
            };
        files.push(("account.yaml".into(), yaml(&account)));

        files.push((
            "status.json".into(),
            pretty(&json!({
                "id": rec.id,
                "name": rec.spec.name,
                "lifecycle": to_value(&rec.lifecycle),
                "generation": rec.generation,
                "createdAt": rec.created_at,
                "profileRevision": rec.profile_revision,
                "status": to_value(&rec.status),
            })),
        ));

        let mut table = String::from("TYPE\tSTATUS\tREASON\tSINCE\tMESSAGE\n");
        for c in &rec.status.conditions {
            let _ = writeln!(
                table,
                "{:?}\t{:?}\t{}\t{}\t{}",
                c.kind,
                c.status,
                c.reason,
                c.last_transition.to_rfc3339(),
                c.message
            );
        }
        files.push(("conditions.txt".into(), table.into_bytes()));

        let events = self.events(Some(id), 0, 100_000).await?;
        let mut lines = Vec::new();
        let mut text = String::new();
        for e in &events {
            lines.extend(serde_json::to_vec(e).unwrap_or_default());
            lines.push(b'\n');
            let _ = writeln!(
                text,
                "{} {:?} {}: {}",
                e.time.to_rfc3339(),
                e.severity,
                e.reason,
                e.message
            );
        }
        files.push(("events.jsonl".into(), lines));
        files.push(("events.txt".into(), text.into_bytes()));

        let explanation = match self.explain(id).await {
            Ok(x) => to_value(&x),
            Err(e) => json!({ "error": e.to_string() }),
        };
        files.push(("explanation.json".into(), pretty(&explanation)));
        let plan = match self.plan_update(id, &rec.spec).await {
            Ok(p) => to_value(&p),
            Err(e) => json!({ "error": e.to_string() }),
        };
        files.push(("plan.json".into(), pretty(&plan)));

        let mut calls = Vec::new();
        for c in self.cloud_calls(id) {
            calls.extend(serde_json::to_vec(&c).unwrap_or_default());
            calls.push(b'\n');
        }
        files.push(("calls.jsonl".into(), calls));
        let intents = match self.inner.store.intents(id).await {
            Ok(i) => to_value(&i),
            Err(e) => json!({ "error": e.to_string() }),
        };
        files.push(("intents.json".into(), pretty(&intents)));
        if self.inner.agent.is_some() {
            let health = match self.health(id).await {
                Ok(h) => to_value(&h),
                Err(e) => json!({ "error": e.to_string() }),
            };
            files.push(("health.json".into(), pretty(&health)));
        }

        let mut providers: Vec<&str> = self.inner.providers.keys().map(|c| c.as_str()).collect();
        providers.sort_unstable();
        let packs: Vec<Value> = rec
            .profile
            .packs
            .iter()
            .map(|p| json!({ "name": p.name, "layer": to_value(&p.layer), "version": p.version }))
            .collect();
        files.push((
            "versions.json".into(),
            pretty(&json!({
                "spectro": env!("CARGO_PKG_VERSION"),
                "providerContract": crate::contract::CONTRACT_VERSION,
                "clouds": providers,
                "profile": { "name": rec.profile.name, "version": rec.profile.version },
                "packs": packs,
                "replica": &*self.inner.replica_name,
                "secretsKeyId": self.inner.keyring.current_id(),
                "workloadConnection": self.inner.workload.is_some(),
                "agentMonitoring": self.inner.agent.is_some(),
                "generatedAt": now,
            })),
        ));
        files.push((
            "node-logs/spectro-collect-logs".into(),
            crate::bootstrap::cloud_init::LOG_COLLECTOR.into(),
        ));
        files.push(("node-logs/README.txt".into(), NODE_LOGS_README.into()));

        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::default(),
        ));
        let mtime = u64::try_from(now.timestamp()).unwrap_or(0);
        for (name, body) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(body.len() as u64);
            header.set_mode(if name.ends_with("spectro-collect-logs") {
                0o755
            } else {
                0o644
            });
            header.set_mtime(mtime);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, format!("{dir}/{name}"), body.as_slice())
                .map_err(|e| CoreError::store("write the support bundle", e))?;
        }
        tar.into_inner()
            .and_then(flate2::write::GzEncoder::finish)
            .map_err(|e| CoreError::store("write the support bundle", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_covers_named_keys_urls_and_kubernetes_secrets() {
        let text = "registry:\n  password: hunter2\n  url: https://bob:pw9@r.example\nreplicas: 3\nauth: { user: u1, pass: nested9 }\ntokens: [tok7]\n---\napiVersion: v1\nkind: Secret\nmetadata: { name: s }\nstringData: { x: topsecret }\n";
        let out = redact_yaml(text);
        for s in ["hunter2", "pw9", "topsecret", "nested9", "tok7"] {
            assert!(!out.contains(s), "{s} in {out}");
        }
        assert!(
            out.contains("replicas: 3") && out.contains("bob:***@r.example"),
            "{out}"
        );
        assert_eq!(
            redact_yaml("a: [unclosed"),
            "# withheld: 12 bytes that are not YAML\n"
        );
    }

    #[test]
    fn redaction_reaches_into_the_yaml_text_of_specs_and_profiles() {
        let mut v = json!({
            "name": "c",
            "packValues": { "grafana": "adminPassword: pv-secret-1\nreplicas: 2\n" },
            "packs": [{ "name": "x", "values": "db:\n  password: pv-secret-2\n",
                        "manifests": "kind: Secret\napiVersion: v1\ndata: { k: cHYtc2VjcmV0LTM= }\n" }],
        });
        redact(&mut v);
        let text = v.to_string();
        for s in ["pv-secret-1", "pv-secret-2", "cHYtc2VjcmV0LTM="] {
            assert!(!text.contains(s), "{s} in {text}");
        }
        assert!(text.contains("replicas: 2"), "{text}");
    }
}

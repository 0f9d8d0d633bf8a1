//! The GCP peer shared by the tests of one test binary: the stateful Compute Engine fake
//! (tests/peers/gcp/gce_fake.py) behind Stoplight Prism in proxy mode with Compute Engine's
//! official v1 spec (../shared/peers/spec-peer.sh ... gce ...), so every request the
//! provider sends and every answer it parses is checked against the spec. The provider talks
//! to Prism; the test hooks go to the fake.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use spectro_core::model::document::{from_text, Format};
use spectro_core::model::CloudAccount;
use spectro_gcp::GcpConnector;

/// The project the tests' service account owns.
pub const PROJECT: &str = "spectro-tests";
/// The project of the fault-injection test (its own service account), so that injected
/// faults match only its requests.
pub const FAULTS_PROJECT: &str = "spectro-faults";
/// Another project the fake has (the account has no role in it).
pub const OTHER_PROJECT: &str = "someone-else";
/// The service account.
pub const EMAIL: &str = "spectro@spectro-tests.iam.gserviceaccount.com";
/// The image the fake knows (and its family).
pub const IMAGE: &str = "projects/spectro-images/global/images/ubuntu-2204-k8s-1-30-v1";
/// The family of [`IMAGE`].
pub const FAMILY: &str = "projects/spectro-images/global/images/family/ubuntu-2204-k8s-1-30";

/// A running fake behind Prism.
pub struct GcpPeer {
    /// Prism: what the provider talks to.
    pub api: String,
    /// The fake itself (test hooks).
    pub fake: String,
    /// Prism's log.
    pub prism_log: PathBuf,
    /// The service-account key the fake accepts (JSON).
    pub key: String,
}

fn shared_peers() -> Option<PathBuf> {
    let base = std::env::var("SPECTRO_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let script = base.join("peers/spec-peer.sh");
    script.exists().then_some(script)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start() -> Option<GcpPeer> {
    let Some(script) = shared_peers() else {
        spectro_core::testing::peer_missing(
            "../shared/peers/spec-peer.sh (Stoplight Prism with Compute Engine's v1 spec)",
            "the GCP tests run the Compute Engine fake behind Prism from the shared peers directory next to the clone (or SPECTRO_SHARED)",
        );
        return None;
    };
    let fake_py = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/peers/gcp/gce_fake.py");
    let prism_port = free_port();
    let mut child = Command::new("python3")
        .arg(&fake_py)
        .args([
            "--port",
            "0",
            "--delay",
            "0.3",
            "--wait-cap",
            "0.1",
            "--boot",
            "0.3",
        ])
        .args(["--page-size", "5"])
        .args(["--parent", &std::process::id().to_string()])
        .args([
            "--project",
            PROJECT,
            "--project",
            OTHER_PROJECT,
            "--project",
            FAULTS_PROJECT,
        ])
        .args(["--shared-project", "spectro-images"])
        .args(["--image", &format!("{IMAGE}@ubuntu-2204-k8s-1-30")])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start python3 gce_fake.py");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("gce_fake.py did not start: {line}"));
    let fake = format!("http://127.0.0.1:{port}");
    let work = std::env::var("SPECTRO_PRISM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/tmp".into()))
                .join(".cache/spectro-prism")
        });
    std::fs::create_dir_all(&work).unwrap();
    // One installation of Prism and one preparation of the spec at a time. `-o`: Prism, left
    // running by the script, must not inherit the lock.
    let out = Command::new("flock")
        .arg("-o")
        .arg(work.join(".lock"))
        .arg("bash")
        .arg(&script)
        .arg(&work)
        .arg("gce")
        .arg(prism_port.to_string())
        .arg(&fake)
        .stderr(Stdio::inherit())
        .output()
        .expect("run spec-peer.sh");
    assert!(out.status.success(), "spec-peer.sh failed");
    let pid: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("spec-peer.sh prints Prism's pid");
    // The fake stops Prism when this test binary is gone.
    raw::post(&fake, "adopt", &format!("{{\"pid\": {pid}}}"));
    let key = raw::post(
        &fake,
        "service-account",
        &format!("{{\"email\": \"{EMAIL}\", \"project\": \"{PROJECT}\"}}"),
    );
    std::mem::forget(child);
    Some(GcpPeer {
        api: format!("http://127.0.0.1:{prism_port}"),
        fake,
        prism_log: work.join(format!("log.{prism_port}")),
        key,
    })
}

/// A tiny blocking HTTP POST (the peer starts outside any runtime).
pub mod raw {
    use std::io::{Read, Write};

    /// POSTs `body` to the fake's hook `hook`; the answer's body.
    pub fn post(base: &str, hook: &str, body: &str) -> String {
        let addr = base.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "POST /_fake/{hook} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 200"), "{hook}: {out}");
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    }
}

static PEER: OnceLock<Option<GcpPeer>> = OnceLock::new();

/// The shared peer (started by the first test that asks).
pub fn peer() -> Option<&'static GcpPeer> {
    PEER.get_or_init(start).as_ref()
}

impl GcpPeer {
    /// A connector to the peer: Compute Engine through Prism.
    pub fn connector(&self) -> GcpConnector {
        GcpConnector::default()
            .with_endpoint(&self.api)
            .with_throttle_retries(2, Duration::from_secs(5))
            .with_polling(Duration::from_millis(50), Duration::from_millis(400))
    }

    /// Everything the fake holds, each with its `_path`.
    pub async fn resources(&self) -> Vec<serde_json::Value> {
        let v: serde_json::Value = reqwest::get(format!("{}/_fake/resources", self.fake))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v.as_array().cloned().unwrap_or_default()
    }

    /// What the fake holds whose path contains `needle`.
    pub async fn resources_with(&self, needle: &str) -> Vec<serde_json::Value> {
        self.resources()
            .await
            .into_iter()
            .filter(|r| r["_path"].as_str().unwrap_or_default().contains(needle))
            .collect()
    }

    /// Every request the fake answered: (method, path, status).
    pub async fn requests(&self) -> Vec<(String, String, u16)> {
        let v: serde_json::Value = reqwest::get(format!("{}/_fake/requests", self.fake))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["method"].as_str().unwrap().to_string(),
                    r["path"].as_str().unwrap().to_string(),
                    r["status"].as_u64().unwrap() as u16,
                )
            })
            .collect()
    }

    /// POST a test hook; its answer.
    pub async fn hook(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let r = reqwest::Client::new()
            .post(format!("{}/_fake/{path}", self.fake))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "hook {path}: {}", r.status());
        r.json().await.unwrap_or(serde_json::Value::Null)
    }

    /// Prism's refusals so far: requests or answers that break Compute Engine's spec. Not
    /// counted: Prism's note that an error answer's status (404, 409, 403 ...) is not in the
    /// spec, which documents only each method's 200 (Google's discovery document describes
    /// no error answers); the bodies of error answers are Compute Engine's error format.
    pub fn violations(&self) -> Vec<String> {
        std::fs::read_to_string(&self.prism_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains('✖') || l.contains("VALIDATOR") || l.contains("Violation"))
            .filter(|l| !l.contains("Unable to match the returned status code with those defined in the document: 200"))
            .map(str::to_string)
            .collect()
    }

    /// The account holding the fake's service-account key.
    pub fn account(&self, name: &str) -> CloudAccount {
        account_with_key(name, &self.key)
    }
}

/// An account holding `key`.
pub fn account_with_key(name: &str, key: &str) -> CloudAccount {
    let doc =
        serde_json::json!({"name": name, "credentials": {"gcp": {"serviceAccountJson": key}}});
    from_text(&doc.to_string(), Format::Json).unwrap()
}

/// A profile whose OS pack names the fake's image family.
pub fn profile() -> String {
    format!(
        r#"
name: gcp
version: '1'
cloud: gcp
packs:
  - name: ubuntu
    layer: os
    version: '22.04'
    annotations: {{ image: '{FAMILY}' }}
  - {{ name: kubernetes, layer: kubernetes, version: 1.30.4 }}
  - {{ name: calico, layer: cni, version: 3.28.0 }}
"#
    )
}

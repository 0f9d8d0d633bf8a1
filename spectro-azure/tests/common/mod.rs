//! The Azure peer shared by the tests of one test binary: the stateful ARM fake
//! (tests/peers/azure/arm_fake.py) behind Stoplight Prism in proxy mode with Azure's official
//! compute and network specs (../shared/peers/spec-peer.sh), so every request the provider
//! sends and every answer it parses is checked against the specs. The provider talks to
//! Prism; Entra ID's token endpoint and the operation-status URLs are the fake's own.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use spectro_azure::AzureConnector;
use spectro_core::model::document::{from_text, Format};
use spectro_core::model::CloudAccount;

/// The subscription the fake serves.
pub const SUB: &str = "5f3c6a1e-2b7d-4c8e-9f01-23456789abcd";
/// A second subscription (another fleet).
pub const SUB2: &str = "6a4d7b2f-3c8e-4d9f-8a12-3456789abcde";
/// Resource groups the fake has.
pub const GROUPS: [&str; 7] = [
    "rg-life",
    "rg-faults",
    "rg-static",
    "rg-net",
    "rg-conform",
    "rg-fleet",
    "rg-batch",
];
/// The service principal the fake accepts.
pub const CLIENT_ID: &str = "2b7c1a44-9e53-4d4a-8f0e-6f0c2f4b8a11";
/// Its tenant.
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// Its secret.
pub const SECRET: &str = "Qk8~wJalrXUtnFEMIK7MDENGbPxRfiCY";
/// The marketplace image the fake knows.
pub const IMAGE: &str = "spectrocloud:spectro-ubuntu-k8s:ubuntu-22-04-k8s-1-30:latest";

/// A running fake behind Prism.
pub struct AzurePeer {
    /// Prism: what the provider talks to.
    pub arm: String,
    /// The fake itself (Entra ID, test hooks).
    pub fake: String,
    /// Prism's log.
    pub prism_log: PathBuf,
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

fn start() -> Option<AzurePeer> {
    let Some(script) = shared_peers() else {
        spectro_core::testing::peer_missing(
            "../shared/peers/spec-peer.sh (Stoplight Prism with Azure's REST specs)",
            "the Azure tests run the ARM fake behind Prism from the shared peers directory next to the clone (or SPECTRO_SHARED)",
        );
        return None;
    };
    let fake_py =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/peers/azure/arm_fake.py");
    let prism_port = free_port();
    let mut cmd = Command::new("python3");
    cmd.arg(&fake_py)
        .args([
            "--port",
            "0",
            "--delay",
            "0.2",
            "--polls",
            "3",
            "--page-size",
            "5",
        ])
        .args(["--arm-url", &format!("http://127.0.0.1:{prism_port}")])
        .args(["--parent", &std::process::id().to_string()])
        .args(["--client", &format!("{CLIENT_ID}:{SECRET}")])
        .args(["--image", IMAGE])
        .args(["--subscription", SUB, "--subscription", SUB2]);
    for g in GROUPS {
        cmd.args(["--resource-group", g]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start python3 arm_fake.py");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("arm_fake.py did not start: {line}"));
    let fake = format!("http://127.0.0.1:{port}");
    let work = std::env::var("SPECTRO_PRISM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/tmp".into()))
                .join(".cache/spectro-prism")
        });
    std::fs::create_dir_all(&work).unwrap();
    // One installation of Prism and one preparation of the specs at a time.
    // `-o`: Prism, left running by the script, must not inherit the lock.
    let out = Command::new("flock")
        .arg("-o")
        .arg(work.join(".lock"))
        .arg("bash")
        .arg(&script)
        .arg(&work)
        .arg("azure")
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
    raw::adopt(&fake, pid);
    std::mem::forget(child);
    Some(AzurePeer {
        arm: format!("http://127.0.0.1:{prism_port}"),
        fake,
        prism_log: work.join(format!("log.{prism_port}")),
    })
}

/// A tiny blocking HTTP POST (the peer starts outside any runtime).
mod raw {
    use std::io::{Read, Write};

    pub fn adopt(base: &str, pid: u32) {
        let addr = base.trim_start_matches("http://");
        let body = format!("{{\"pid\": {pid}}}");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "POST /_fake/adopt HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 200"), "adopt: {out}");
    }
}

static PEER: OnceLock<Option<AzurePeer>> = OnceLock::new();

/// The shared peer (started by the first test that asks).
pub fn peer() -> Option<&'static AzurePeer> {
    PEER.get_or_init(start).as_ref()
}

impl AzurePeer {
    /// A connector to the peer: ARM through Prism, Entra ID at the fake, quick polls.
    pub fn connector(&self) -> AzureConnector {
        AzureConnector::default()
            .with_endpoint(&self.arm)
            .with_authority(&self.fake)
            .with_poll_interval(Duration::from_millis(50))
            .with_throttle_retries(2, Duration::from_secs(5))
    }

    /// Everything the fake holds (NICs and disks included).
    pub async fn resources(&self) -> Vec<serde_json::Value> {
        let v: serde_json::Value = reqwest::get(format!("{}/_fake/resources", self.fake))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v.as_array().cloned().unwrap_or_default()
    }

    /// What the fake holds in resource group `rg`.
    pub async fn resources_in(&self, rg: &str) -> Vec<serde_json::Value> {
        let needle = format!("/resourcegroups/{}/", rg.to_ascii_lowercase());
        self.resources()
            .await
            .into_iter()
            .filter(|r| {
                r["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_ascii_lowercase()
                    .contains(&needle)
            })
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

    /// POST a test hook.
    pub async fn hook(&self, path: &str, body: serde_json::Value) {
        let r = reqwest::Client::new()
            .post(format!("{}/_fake/{path}", self.fake))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "hook {path}: {}", r.status());
    }

    /// Prism's refusals so far: requests or answers that break Azure's specs.
    pub fn violations(&self) -> Vec<String> {
        std::fs::read_to_string(&self.prism_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains('✖') || l.contains("VALIDATOR") || l.contains("Violation"))
            .map(str::to_string)
            .collect()
    }
}

/// The account the fake accepts.
pub fn account(name: &str) -> CloudAccount {
    from_text(
        &format!(
            "name: {name}\ncredentials:\n  azure: {{clientId: {CLIENT_ID}, tenantId: {TENANT}, clientSecret: '{SECRET}', subscriptionId: {SUB}}}\n"
        ),
        Format::Yaml,
    )
    .unwrap()
}

/// A profile whose OS pack names the fake's image.
pub const PROFILE: &str = r#"
name: az
version: '1'
cloud: azure
packs:
  - name: ubuntu
    layer: os
    version: '22.04'
    annotations: { image: 'spectrocloud:spectro-ubuntu-k8s:ubuntu-22-04-k8s-1-30:latest' }
  - { name: kubernetes, layer: kubernetes, version: 1.30.4 }
  - { name: calico, layer: cni, version: 3.28.0 }
"#;

/// The SSH key of the test clusters.
pub const SSH_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJq3Qm7yEXAMPLEKEYxxxxxxxxxxxxxxxxxxxxxxx ops@example";

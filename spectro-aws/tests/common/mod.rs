//! The moto harness shared by the AWS tests.
#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

use spectro_aws::AwsConnector;
use spectro_core::model::document::{from_text, Format};
use spectro_core::model::AwsCredentials;
use tokio::io::{AsyncBufReadExt, BufReader};

pub struct Moto {
    pub url: String,
    child: Option<tokio::process::Child>,
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.start_kill();
        }
    }
}

pub fn moto_binary() -> Option<String> {
    if let Ok(p) = std::env::var("SPECTRO_MOTO_SERVER") {
        return Some(p);
    }
    let venv = format!(
        "{}/.cache/spectro-moto-venv/bin/moto_server",
        std::env::var("HOME").unwrap_or_default()
    );
    if std::path::Path::new(&venv).exists() {
        return Some(venv);
    }
    std::process::Command::new("sh")
        .args(["-c", "command -v moto_server"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

pub async fn moto() -> Option<Moto> {
    if let Ok(url) = std::env::var("MOTO_ENDPOINT") {
        return Some(Moto { url, child: None });
    }
    moto_server(&[]).await
}

/// A moto_server of this test's own (never `MOTO_ENDPOINT`), with extra environment, e.g.
/// `MOTO_AMIS_PATH` (the AMIs every account sees, as public images of their owners).
pub async fn moto_server(env: &[(&str, &str)]) -> Option<Moto> {
    let Some(bin) = moto_binary() else {
        spectro_core::testing::peer_missing(
            "moto_server",
            "pip install 'moto[server]==5.2.5' or set MOTO_ENDPOINT",
        );
        return None;
    };
    let mut cmd = tokio::process::Command::new(bin);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .args(["-H", "127.0.0.1", "-p", "0"])
        .env("MOTO_ENABLE_AMI_VALIDATION", "true")
        .env("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "true")
        .env_remove("MOTO_ACCOUNT_ID")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start moto_server");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let port = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(l)) = lines.next_line().await {
            if let Some(rest) = l.split("Running on http://127.0.0.1:").nth(1) {
                let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
                return digits.parse::<u16>().ok();
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .expect("moto_server printed its port");
    // Keep draining its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Some(Moto {
        url: format!("http://127.0.0.1:{port}"),
        child: Some(child),
    })
}

pub fn account_id() -> String {
    let n = spectro_core::clock::system_now()
        .timestamp_nanos_opt()
        .unwrap_or_default()
        .unsigned_abs();
    format!("{:012}", (n % 900_000_000_000) + 100_000_000_000)
}

pub fn creds() -> AwsCredentials {
    from_text(
        "accessKeyId: AKIAIOSFODNN7EXAMPLE\nsecretAccessKey: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
        Format::Yaml,
    )
    .unwrap()
}

pub fn conn_for(m: &Moto, acct: &str) -> AwsConnector {
    AwsConnector::default()
        .with_endpoint(&m.url)
        .with_header("x-moto-account-id", acct)
        .with_max_attempts(2)
        .with_max_backoff(Duration::from_millis(200))
}

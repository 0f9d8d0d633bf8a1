//! Prometheus metrics of an embedded engine (feature `metrics` of `spectro` /
//! `spectro-core`, on the `prometheus-client` crate): the application registers the
//! engine's metrics in its own registry and serves them; here on
//! `http://127.0.0.1:9184/metrics` while a cluster converges on the simulated cloud.
//!
//!     cargo run --example metrics             # serves until Ctrl-C
//!     cargo run --example metrics -- --once   # one scrape, printed
//!
//! (The examples' dev-dependencies turn the feature on; an application adds
//! `features = ["metrics"]` to its `spectro` dependency.)
//!
//! Metrics: reconciles by outcome, reconcile duration, queue depth, cloud calls by
//! provider / operation / outcome (and their duration), throttles, clusters by phase.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use spectro::engine::status::Phase;
use spectro::model::document::Format;
use spectro::model::CloudType;
use spectro::sim::{SimCloud, SimConfig};
use spectro::{Engine, EngineConfig, SqliteStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DOCUMENTS: &str = r#"
kind: CloudAccount
name: simulated
credentials:
  aws: { accessKeyId: AKIAMETRICS000000000, secretAccessKey: not-used-by-the-simulator }
---
kind: ClusterProfile
name: metrics
version: 1.0.0
cloud: aws
packs:
  - { name: ubuntu, layer: os, version: "22.04" }
  - { name: kubernetes, layer: kubernetes, version: 1.30.4 }
  - { name: calico, layer: cni, version: 3.28.0 }
---
kind: Cluster
name: metrics
profile: { name: metrics, version: 1.0.0 }
cloudAccount: simulated
cloud: { aws: { region: us-east-1 } }
nodePools:
  - { name: master, role: controlPlane, size: 3, instanceType: m5.large, availabilityZones: [us-east-1a, us-east-1b, us-east-1c] }
  - { name: workers, role: worker, size: 4, instanceType: m5.large, availabilityZones: [us-east-1a, us-east-1b] }
"#;

/// Answers every request on the connection with the registry's text (a minimal HTTP/1.1
/// server: enough for Prometheus and curl).
async fn serve(mut conn: TcpStream, registry: Arc<Registry>) -> std::io::Result<()> {
    let mut buf = [0u8; 4096];
    let n = conn.read(&mut buf).await?;
    let request = String::from_utf8_lossy(&buf[..n]);
    let (status, body) = if request.starts_with("GET /metrics") {
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &registry)
            .map_err(std::io::Error::other)?;
        ("200 OK", body)
    } else {
        ("404 Not Found", "try /metrics\n".to_string())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(body.as_bytes()).await
}

/// One scrape of our own endpoint, as Prometheus would do it.
async fn scrape(addr: std::net::SocketAddr) -> std::io::Result<String> {
    let mut conn = TcpStream::connect(addr).await?;
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut out = String::new();
    conn.read_to_string(&mut out).await?;
    Ok(out)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let once = std::env::args().any(|a| a == "--once");
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(dir.path().join("spectro.db"))?);
    let sim = Arc::new(SimCloud::new(
        CloudType::Aws,
        SimConfig::default().with_latency(Duration::from_millis(5)),
    ));
    let engine = Engine::builder(store)
        .provider(sim)
        .config(EngineConfig::fast())
        .start()
        .await?;

    // The application's registry: its own metrics and the engine's.
    let mut registry = Registry::default();
    engine.register_metrics(&mut registry);
    let registry = Arc::new(registry);
    let listener = TcpListener::bind("127.0.0.1:9184").await?;
    let addr = listener.local_addr()?;
    let server = {
        let registry = registry.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let registry = registry.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve(conn, registry).await {
                        eprintln!("metrics connection: {e}");
                    }
                });
            }
        })
    };
    println!("serving metrics on http://{addr}/metrics");

    let applied = engine.apply_text(DOCUMENTS, Format::Yaml).await?;
    let id = applied
        .iter()
        .find_map(|a| a.cluster)
        .ok_or("the documents hold a cluster")?;
    engine
        .wait_for_phase(id, Phase::Running, Duration::from_secs(60))
        .await?;
    println!("cluster running after {} reconciles", engine.reconciles());

    if once {
        let answer = scrape(addr).await?;
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            println!("{line}");
        }
    } else {
        println!("Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
    }
    server.abort();
    engine.shutdown().await;
    Ok(())
}

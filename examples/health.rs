//! Cluster health, usage and application services through the in-cluster agent: a cluster
//! on the simulated cloud whose Kubernetes side is the real kube-apiserver + etcd (built by
//! `scripts/kube-peers`), `metrics.k8s.io` registered in it as an aggregated API, and the
//! real `spectro-agent` binary run as a process with the agent pack's service account,
//! reporting over HTTPS to the engine's `AgentEndpoint`.
//!
//! `cargo run --example health` prints health, usage and services as a node reports
//! DiskPressure and recovers, the agent is killed and restarted, and a NodePort service is
//! added; it exits non-zero if any expected transition did not happen.

#[path = "../tests/common/kubepeers.rs"]
mod kubepeers;
#[path = "../tests/common/monitorpeers.rs"]
mod monitorpeers;

use std::process::ExitCode;
use std::time::Duration;

use spectro::engine::MonitoringConfig;
use spectro::model::document::{from_text, Format};
use spectro::model::PoolRole;
use spectro::monitoring::health::HealthPolicy;
use spectro::monitoring::{HealthStatus, NodeScope};

use monitorpeers::{wait_health, MonitorRig};

const DOCS: [&str; 3] = [
    "name: demo\nversion: 1.0.0\ncloud: aws\npacks:\n  - { name: ubuntu, layer: os, version: '22.04' }\n  - { name: kubernetes, layer: kubernetes, version: 1.30.4 }\n  - { name: calico, layer: cni, version: 3.28.0 }\n",
    "name: sim\ncredentials:\n  aws: { accessKeyId: AKIAIOSFODNN7EXAMPLE, secretAccessKey: example-secret }\n",
    "name: shop\nprofile: { name: demo, version: 1.0.0 }\ncloudAccount: sim\ncloud: { aws: { region: us-east-1 } }\nnodePools:\n  - { name: cp, role: controlPlane, size: 1, instanceType: m5.large, availabilityZones: [us-east-1a] }\n  - { name: workers, role: worker, size: 2, instanceType: m5.large, availabilityZones: [us-east-1a, us-east-1b] }\n",
];

async fn show(r: &MonitorRig, step: &str) {
    let h = r.engine.health(r.id).await.expect("health");
    println!(
        "── {step}\n   health: {:?} ({}): {}",
        h.status,
        h.reason(),
        h.message()
    );
    let now = spectro::clock::system_now();
    if let Ok(u) = r
        .engine
        .usage(
            r.id,
            now - chrono::Duration::hours(1)..now,
            &NodeScope::Workers,
        )
        .await
    {
        if let Some(c) = u.current {
            println!(
                "   usage (workers): {:.2} of {:.0} cores ({:.0}%), memory {:.1} of {:.1} GiB, requests {:.2} cores / {:.1} GiB, {} samples",
                c.cores_used,
                c.cores,
                c.cpu_usage * 100.0,
                c.memory_used_bytes / f64::from(1 << 30),
                c.memory_bytes / f64::from(1 << 30),
                c.cpu_requests_cores,
                c.memory_requests_bytes / f64::from(1 << 30),
                u.series.len()
            );
        }
    }
    for s in r.engine.services(r.id).await.unwrap_or_default() {
        println!(
            "   service {}/{} ({}): {}",
            s.namespace,
            s.name,
            s.kind,
            s.links.join(", ")
        );
    }
}

async fn run() -> Result<(), String> {
    // The agent binary, built for the example's profile.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = std::process::Command::new(cargo);
    build.args([
        "build",
        "-q",
        "-p",
        "spectro-agent",
        "--bin",
        "spectro-agent",
    ]);
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    let ok = build
        .status()
        .map_err(|e| format!("cargo build spectro-agent: {e}"))?;
    if !ok.success() {
        return Err("building spectro-agent failed".into());
    }
    let monitoring = MonitoringConfig {
        health: HealthPolicy {
            heartbeat_window: Duration::from_secs(5),
            sustain: Duration::from_secs(5),
            ..HealthPolicy::default()
        },
        sweep_interval: Duration::from_millis(500),
        ..MonitoringConfig::default()
    };
    let profile = from_text(DOCS[0], Format::Yaml).map_err(|e| e.to_string())?;
    let account = from_text(DOCS[1], Format::Yaml).map_err(|e| e.to_string())?;
    let spec = from_text(DOCS[2], Format::Yaml).map_err(|e| e.to_string())?;
    println!("starting kube-apiserver, etcd, metrics.k8s.io and the engine ...");
    let r = MonitorRig::start(
        &profile,
        &account,
        &spec,
        monitoring,
        Duration::from_secs(1),
    )
    .await;
    let workers: Vec<String> = r
        .machines(PoolRole::Worker)
        .into_iter()
        .map(|m| m.name)
        .collect();
    for m in r
        .machines(PoolRole::ControlPlane)
        .iter()
        .map(|m| &m.name)
        .chain(&workers)
    {
        r.metrics.set(m, 650, 3 << 30);
    }
    show(
        &r,
        "cluster Running, agent pack applied, no agent connected yet",
    )
    .await;
    let mut agent = r.start_agent();
    wait_health(&r.engine, r.id, "first heartbeat", |h| {
        h.status == HealthStatus::Healthy
    })
    .await?;
    show(&r, "agent connected").await;
    println!("{}", r.api.kubectl(&["top", "nodes"]));

    r.set_condition(&workers[0], "DiskPressure", "True").await;
    wait_health(&r.engine, r.id, "DiskPressure", |h| {
        h.reasons.iter().any(|x| x.subject == "DiskPressure")
    })
    .await?;
    show(&r, &format!("{} reports DiskPressure", workers[0])).await;
    r.set_condition(&workers[0], "DiskPressure", "False").await;
    wait_health(&r.engine, r.id, "DiskPressure cleared", |h| {
        h.status == HealthStatus::Healthy
    })
    .await?;
    show(&r, "DiskPressure cleared").await;

    agent.0.kill().map_err(|e| e.to_string())?;
    let _ = agent.0.wait();
    wait_health(&r.engine, r.id, "heartbeat missing", |h| {
        h.status == HealthStatus::Unhealthy
    })
    .await?;
    show(&r, "agent killed").await;
    agent = r.start_agent();
    wait_health(&r.engine, r.id, "agent restarted", |h| {
        h.status == HealthStatus::Healthy
    })
    .await?;
    show(&r, "agent restarted").await;

    r.create_service("web", "NodePort").await;
    let deadline = spectro::clock::instant_now() + Duration::from_secs(60);
    while !r
        .engine
        .services(r.id)
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .any(|s| s.name == "web")
    {
        if spectro::clock::instant_now() > deadline {
            return Err("the NodePort service never appeared".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    show(&r, "NodePort service added").await;
    println!("{}", r.api.kubectl(&["get", "svc", "-A"]));
    drop(agent);
    println!("events:");
    let events = r.engine.events(Some(r.id), 0, 10_000).await;
    let mut seen = Vec::new();
    for e in events.map_err(|e| e.to_string())? {
        if e.reason.contains("ealthy") || e.reason.starts_with("Service") {
            let at = e.time.format("%H:%M:%S");
            println!("   {at} {:?} {}: {}", e.severity, e.reason, e.message);
            seen.push(format!("{}: {}", e.reason, e.message));
        }
    }
    for expected in [
        "ClusterUnhealthy: node",
        "ClusterUnhealthy: no heartbeat since",
        "ServiceAdded: NodePort service default/web",
    ] {
        if !seen.iter().any(|s| s.starts_with(expected)) {
            return Err(format!("no event {expected:?}"));
        }
    }
    if seen
        .iter()
        .filter(|s| s.starts_with("ClusterHealthy"))
        .count()
        < 3
    {
        return Err("fewer than three recoveries recorded".into());
    }
    r.engine.shutdown().await;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => {
            println!("every expected transition happened");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

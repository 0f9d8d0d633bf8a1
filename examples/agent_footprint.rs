//! The agent's footprint at scale: the real kube-apiserver (scripts/kube-peers) with 100
//! Nodes, 1,000 Pods, 20 Services and `metrics.k8s.io`, the `spectro-agent` binary reporting
//! to an engine's endpoint every `--interval` seconds (default 30) for `--minutes` (default 2).
//! Prints the agent's peak and final RSS, its CPU time per report and per minute, the bytes
//! of one report, per minute, and the store rows and bytes a cluster adds per day.
//!
//!     cargo run --release --example agent_footprint -- --interval 30 --minutes 2

#[path = "../tests/common/kubepeers.rs"]
mod kubepeers;
#[path = "../tests/common/monitorpeers.rs"]
mod monitorpeers;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use spectro::engine::AgentSettings;
use spectro::model::document::{from_text, Format};
use spectro::monitoring::credential::AgentKey;
use spectro::monitoring::usage::{UsageRetention, UsageSample};
use spectro::sim::{SimCloud, SimConfig};
use spectro::{Engine, EngineConfig, SqliteStore};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn proc_field(pid: u32, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks (100 per second on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let interval = arg("--interval", 30);
    let minutes = arg("--minutes", 2);
    let (nodes_n, pods_per_node, services_n) = (100usize, 10usize, 20usize);
    let api = kubepeers::ApiServer::start().await;
    let metrics = monitorpeers::MetricsApi::start(&api).await;
    let client = api.client().await;
    println!(
        "creating {nodes_n} nodes, {} pods, {services_n} services ...",
        nodes_n * pods_per_node
    );
    let nodes: Api<Node> = Api::all(client.clone());
    let now = spectro::clock::system_now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for i in 0..nodes_n {
        let name = format!("node-{i:03}");
        let node: Node = serde_json::from_value(json!({
            "metadata": { "name": name, "labels": if i < 3 { json!({ "node-role.kubernetes.io/control-plane": "" }) } else { json!({}) } },
        }))?;
        nodes.create(&PostParams::default(), &node).await?;
        let conditions: Vec<serde_json::Value> =
            ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"]
                .iter()
                .map(|k| {
                    json!({ "type": k, "status": if *k == "Ready" { "True" } else { "False" },
                        "reason": "Kubelet", "message": "ok",
                        "lastHeartbeatTime": now, "lastTransitionTime": now })
                })
                .collect();
        let status = json!({ "status": {
            "addresses": [{ "type": "InternalIP", "address": format!("10.0.{}.{}", i / 250, i % 250 + 1) }],
            "capacity": { "cpu": "8", "memory": "32Gi", "pods": "110" },
            "allocatable": { "cpu": "7800m", "memory": "31Gi", "pods": "110" },
            "conditions": conditions,
        }});
        nodes
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
            .await?;
        metrics.set(
            &name,
            1200 + i as u64 * 10,
            (6 << 30) + i as u64 * (1 << 20),
        );
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for i in 0..nodes_n * pods_per_node {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": format!("app-{i:04}"), "labels": { "app": format!("app-{}", i % services_n) } },
            "spec": { "nodeName": format!("node-{:03}", i % nodes_n), "containers": [{ "name": "app", "image": "example/app:1",
                "resources": { "requests": { "cpu": "100m", "memory": "128Mi" } } }] },
        }))?;
        pods.create(&PostParams::default(), &pod).await?;
    }
    for i in 0..services_n {
        let kind = if i % 2 == 0 { "NodePort" } else { "ClusterIP" };
        let svc = serde_json::from_value(json!({
            "metadata": { "name": format!("app-{i}") },
            "spec": { "type": kind, "selector": { "app": format!("app-{i}") }, "ports": [{ "port": 80 }] },
        }))?;
        Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), "default")
            .create(&PostParams::default(), &svc)
            .await?;
    }

    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(dir.path().join("spectro.db"))?);
    let engine = Engine::builder(store.clone())
        .provider(Arc::new(SimCloud::new(
            spectro::model::CloudType::Aws,
            SimConfig::default(),
        )))
        .agent(AgentSettings {
            key: AgentKey::random(),
            deployment: None,
        })
        .config(EngineConfig::fast())
        .start()
        .await?;
    engine.put_profile(&from_text("name: demo\nversion: 1.0.0\ncloud: aws\npacks:\n  - { name: ubuntu, layer: os, version: '22.04' }\n  - { name: kubernetes, layer: kubernetes, version: 1.30.4 }\n  - { name: calico, layer: cni, version: 3.28.0 }\n", Format::Yaml)?).await?;
    engine.put_cloud_account(&from_text("name: sim\ncredentials:\n  aws: { accessKeyId: AKIAIOSFODNN7EXAMPLE, secretAccessKey: example-secret }\n", Format::Yaml)?).await?;
    let id = engine.create_cluster(&from_text("name: big\nprofile: { name: demo, version: 1.0.0 }\ncloudAccount: sim\ncloud: { aws: { region: us-east-1 } }\nnodePools:\n  - { name: cp, role: controlPlane, size: 1, instanceType: m5.large, availabilityZones: [us-east-1a] }\n  - { name: w, role: worker, size: 1, instanceType: m5.large, availabilityZones: [us-east-1a] }\n", Format::Yaml)?).await?;
    let (cert, key) = monitorpeers::localhost_cert();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("https://localhost:{}", listener.local_addr()?.port());
    tokio::spawn(
        spectro_agent::endpoint::AgentEndpoint::new(engine.clone())
            .serve(listener, spectro_agent::endpoint::tls_config(&cert, &key)?),
    );
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, &cert)?;

    // One report as the agent builds it: its size on the wire (JSON, uncompressed).
    let collector = spectro_agent::agent::Agent::new(
        client.clone(),
        spectro_agent::agent::AgentConfig::new(
            url.clone(),
            id.to_string(),
            engine.agent_token(id)?,
        ),
    )?;
    let report = collector.collect().await?;
    let batch = spectro::monitoring::ReportBatch {
        reports: vec![report.clone()],
    };
    let json_bytes = serde_json::to_vec(&batch)?.len();
    let report_bytes = spectro_agent::agent::gzip_json(&batch)?.len();
    let sample_bytes = serde_json::to_vec(&UsageSample::from_report(
        &report,
        spectro::clock::system_now(),
    ))?
    .len();

    let token = engine.agent_token(id)?;
    let log = dir.path().join("agent.log");
    let agent = monitorpeers::AgentProcess::start(
        &api.kubeconfig_path,
        &url,
        &id.to_string(),
        token.expose(),
        &ca,
        interval,
        &log,
    );
    let pid = agent.0.id();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (ticks0, t0) = (cpu_ticks(pid), spectro::clock::instant_now());
    let mut hwm = 0;
    let total = Duration::from_secs(minutes * 60);
    while spectro::clock::instant_now() - t0 < total {
        tokio::time::sleep(Duration::from_secs(1)).await;
        hwm = hwm.max(proc_field(pid, "status", "VmHWM:"));
    }
    let ticks = cpu_ticks(pid) - ticks0;
    let rss = proc_field(pid, "status", "VmRSS:");
    let reports = (minutes * 60) / interval.max(1);
    let cpu_s = ticks as f64 / 100.0;
    let h = engine.health(id).await?;
    let retention = UsageRetention::default();
    let raw_rows = 3600 / interval.max(1);
    let per_day_rows = 24 * 3600 / retention.step.as_secs();
    println!("agent at {nodes_n} nodes / {} pods / {services_n} services, a report every {interval} s for {minutes} min:", nodes_n * pods_per_node);
    println!("  RSS now {rss} KiB, peak {hwm} KiB");
    println!(
        "  CPU {cpu_s:.2} s in {minutes} min: {:.1} ms per report, {:.2}% of one core",
        cpu_s * 1000.0 / reports.max(1) as f64,
        cpu_s * 100.0 / (minutes * 60) as f64
    );
    println!(
        "  one report: {json_bytes} bytes of JSON, {report_bytes} bytes gzip on the wire; per minute: {} bytes",
        report_bytes as u64 * 60 / interval.max(1)
    );
    println!("  store: one usage sample {sample_bytes} bytes; per cluster ≤ {raw_rows} raw rows (last hour) + {per_day_rows} averages per day (≤ {} rows over the week), ~{} KiB per cluster-day of averages",
        retention.max_rows(Duration::from_secs(interval.max(1))) - raw_rows - 1,
        sample_bytes as u64 * per_day_rows / 1024);
    println!("  health after the run: {:?} ({})", h.status, h.message());
    drop(agent);
    engine.shutdown().await;
    Ok(())
}

//! Cluster health, usage monitoring and application services through the in-cluster agent:
//! the real kube-apiserver + etcd, `metrics.k8s.io` served as an aggregated API registered
//! in it, kubelets simulated as kwok does, the real `spectro-agent` binary as a process
//! (with the agent pack's service account token: its least-privilege RBAC is what the
//! apiserver enforces), reporting over HTTPS to the engine's `AgentEndpoint`. What the
//! engine reports is cross-checked with `kubectl get nodes`, `kubectl top nodes` and
//! `kubectl get svc -A`.

mod common;
#[path = "common/kubepeers.rs"]
mod kubepeers;
#[path = "common/monitorpeers.rs"]
mod monitorpeers;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use spectro::clock::Clock;
use spectro::engine::status::Phase;
use spectro::engine::{AgentSettings, MonitoringConfig};
use spectro::model::document::{from_text, Format};
use spectro::model::Cluster;
use spectro::model::PoolRole;
use spectro::monitoring::credential::AgentKey;
use spectro::monitoring::health::HealthPolicy;
use spectro::monitoring::report::{
    AgentReport, NodeConditionReport, NodeReport, ReportBatch, Resources,
};
use spectro::monitoring::{HealthReasonKind, HealthStatus, NodeScope, UsageRetention};
use spectro::provider::ClusterId;
use spectro::sim::SimConfig;
use spectro::store::{ObjectKind, Store};
use spectro::{Engine, EngineConfig, SqliteStore};
use spectro_agent::endpoint::{tls_config, AgentEndpoint};

use monitorpeers::{localhost_cert, wait_health, MonitorRig};

const T: Duration = Duration::from_secs(90);

fn spec(name: &str) -> Cluster {
    from_text(
        &format!(
            r#"
name: {name}
profile: {{ name: demo, version: 1.0.0 }}
cloudAccount: sim
cloud: {{ aws: {{ region: us-east-1 }} }}
nodePools:
  - {{ name: cp, role: controlPlane, size: 1, instanceType: m5.large, availabilityZones: [us-east-1a] }}
  - {{ name: workers, role: worker, size: 2, instanceType: m5.large, availabilityZones: [us-east-1a, us-east-1b] }}
"#
        ),
        Format::Yaml,
    )
    .expect("cluster spec")
}

fn monitoring() -> MonitoringConfig {
    MonitoringConfig {
        health: HealthPolicy {
            heartbeat_window: Duration::from_secs(10),
            sustain: Duration::from_secs(8),
            ..HealthPolicy::default()
        },
        sweep_interval: Duration::from_millis(300),
        ..MonitoringConfig::default()
    }
}

/// The engine's endpoint on loopback HTTPS: (URL, CA PEM).
async fn endpoint(engine: &Engine) -> (String, String) {
    let (cert, key) = localhost_cert();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(
        AgentEndpoint::new(engine.clone()).serve(listener, tls_config(&cert, &key).expect("tls")),
    );
    (format!("https://localhost:{port}"), cert)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_reports_health_usage_and_services_from_a_real_apiserver() {
    let r = MonitorRig::start(
        &common::profile(),
        &common::account(),
        &spec("monitored"),
        monitoring(),
        Duration::from_secs(1),
    )
    .await;
    let (api, engine, id, client, sim, metrics) = (
        &r.api,
        &r.engine,
        r.id,
        r.client.clone(),
        &r.sim,
        &r.metrics,
    );
    assert_eq!(
        engine.health(id).await.unwrap().status,
        HealthStatus::Unknown,
        "no heartbeat yet"
    );

    // The agent pack is in the cluster: least-privilege RBAC, the credential in a Secret.
    let rec = engine.cluster(id).await.unwrap();
    assert!(rec.status.packs["spectro-agent"].objects.len() == 6);
    let role = api.kubectl(&[
        "get",
        "clusterrole",
        "spectro-agent",
        "-o",
        "jsonpath={.rules[*].verbs}",
    ]);
    assert!(
        !role.contains("create") && !role.contains("delete") && role.contains("list"),
        "{role}"
    );
    let secret_token = api.kubectl(&[
        "get",
        "secret",
        "spectro-agent",
        "-n",
        "spectro-system",
        "-o",
        "jsonpath={.data.token}",
    ]);
    use base64::Engine as _;
    let secret_token = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(secret_token.trim())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(secret_token, engine.agent_token(id).unwrap().expose());
    assert!(api
        .kubectl(&[
            "get",
            "deploy",
            "-n",
            "spectro-system",
            "spectro-agent",
            "-o",
            "name"
        ])
        .contains("spectro-agent"));

    let workers: Vec<String> = r
        .machines(PoolRole::Worker)
        .into_iter()
        .map(|m| m.name)
        .collect();
    let all_nodes = {
        let mut v: Vec<String> = api
            .kubectl(&["get", "nodes", "-o", "name"])
            .lines()
            .filter_map(|l| l.strip_prefix("node/").map(str::to_string))
            .collect();
        v.sort();
        v
    };
    for n in &all_nodes {
        metrics.set(n, 400, 2 << 30);
    }

    // The agent as a process with the pack's service account and the pack's CA.
    let token = engine.agent_token(id).unwrap();
    let mut transitions = engine.watch_health(Some(id));
    let mut agent = r.start_agent();
    let h = wait_health(engine, id, "first heartbeat", |h| {
        h.status == HealthStatus::Healthy
    })
    .await
    .unwrap();
    assert!(h.last_heartbeat.is_some());

    // Nodes as kubectl lists them; usage as kubectl top shows it.
    let mut reported: Vec<String> = engine
        .node_details(id)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    reported.sort();
    assert_eq!(reported, all_nodes);
    let top = api.kubectl(&["top", "nodes", "--no-headers"]);
    let top_cpu: u64 = top
        .lines()
        .filter(|l| workers.iter().any(|w| l.starts_with(w.as_str())))
        .map(|l| {
            l.split_whitespace()
                .nth(1)
                .unwrap()
                .trim_end_matches('m')
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(top_cpu, 800, "kubectl top nodes:\n{top}");
    let now = spectro::clock::system_now();
    let usage = engine
        .usage(
            id,
            now - chrono::Duration::hours(1)..now + chrono::Duration::minutes(1),
            &NodeScope::Workers,
        )
        .await
        .unwrap();
    let cur = usage.current.clone().expect("current usage");
    assert_eq!(
        cur.nodes.keys().cloned().collect::<Vec<_>>(),
        workers,
        "workers only by default"
    );
    assert!(
        (cur.cores_used - top_cpu as f64 / 1000.0).abs() < 1e-9,
        "{cur:?}"
    );
    assert_eq!(cur.cores, 4.0);
    assert!(!usage.series.is_empty());
    let all = engine
        .usage(
            id,
            now - chrono::Duration::hours(1)..now + chrono::Duration::minutes(1),
            &NodeScope::All,
        )
        .await
        .unwrap();
    assert_eq!(
        all.current.unwrap().nodes.len(),
        all_nodes.len(),
        "control plane on request"
    );

    // DiskPressure on a worker: unhealthy naming the node and the condition; cleared: healthy.
    r.set_condition(&workers[0], "DiskPressure", "True").await;
    let h = wait_health(engine, id, "DiskPressure", |h| {
        h.status == HealthStatus::Unhealthy
    })
    .await
    .unwrap();
    assert_eq!(h.reasons[0].kind, HealthReasonKind::NodeCondition);
    assert_eq!(h.reasons[0].node.as_deref(), Some(workers[0].as_str()));
    assert_eq!(h.reasons[0].subject, "DiskPressure");
    // The status carries it too (the condition `Healthy` False, with the reasons).
    let rec = engine
        .wait_for(id, T, |r| {
            r.status
                .health
                .as_ref()
                .is_some_and(|h| h.status == HealthStatus::Unhealthy)
        })
        .await
        .expect("health in the status");
    let mirrored = rec.status.health.unwrap();
    assert_eq!(mirrored.condition_status(), "False");
    assert_eq!(mirrored.reasons[0].subject, "DiskPressure");
    r.set_condition(&workers[0], "DiskPressure", "False").await;
    wait_health(engine, id, "DiskPressure cleared", |h| {
        h.status == HealthStatus::Healthy
    })
    .await
    .unwrap();

    // CPU over 90% for less than the sustain period: still healthy; longer: unhealthy.
    metrics.set(&workers[1], 1950, 2 << 30);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            engine.health(id).await.unwrap().status,
            HealthStatus::Healthy,
            "a spike is not unhealthy"
        );
    }
    metrics.set(&workers[1], 300, 2 << 30);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        engine.health(id).await.unwrap().status,
        HealthStatus::Healthy
    );
    metrics.set(&workers[1], 1950, 2 << 30);
    let h = wait_health(engine, id, "sustained CPU", |h| {
        h.status == HealthStatus::Unhealthy
    })
    .await
    .unwrap();
    assert_eq!(
        (h.reasons[0].kind, h.reasons[0].subject.as_str()),
        (HealthReasonKind::Metric, "cpu")
    );
    assert_eq!(h.reasons[0].node.as_deref(), Some(workers[1].as_str()));
    metrics.set(&workers[1], 300, 2 << 30);
    wait_health(engine, id, "CPU back under", |h| {
        h.status == HealthStatus::Healthy
    })
    .await
    .unwrap();

    // Services: NodePort and LoadBalancer appear with links, ClusterIP does not.
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    for (name, kind) in [
        ("np", "NodePort"),
        ("lb", "LoadBalancer"),
        ("internal", "ClusterIP"),
    ] {
        r.create_service(name, kind).await;
    }
    svcs.patch_status(
        "lb",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": { "loadBalancer": { "ingress": [{ "hostname": "lb.example.com" }] } } })),
    )
    .await
    .expect("lb status");
    let deadline = spectro::clock::instant_now() + T;
    let services = loop {
        let s = engine.services(id).await.unwrap();
        if s.len() == 2
            && s.iter().any(|x| {
                !x.links.is_empty() && x.name == "lb" && x.links[0].contains("lb.example.com")
            })
        {
            break s;
        }
        assert!(spectro::clock::instant_now() < deadline, "services: {s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let svc_table = api.kubectl(&["get", "svc", "-A", "--no-headers"]);
    let np_port = svc_table
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("np"))
        .and_then(|l| l.split_whitespace().nth(5))
        .and_then(|p| p.split(['/', ':']).nth(1))
        .expect("node port in kubectl get svc")
        .to_string();
    let np = services.iter().find(|s| s.name == "np").expect("np");
    let worker_ip = sim
        .machines(id)
        .into_iter()
        .map(|i| i.machine)
        .find(|m| m.name == workers[0])
        .and_then(|m| m.address)
        .expect("worker address");
    assert_eq!(
        np.links,
        vec![format!("http://{worker_ip}:{np_port}")],
        "kubectl:\n{svc_table}"
    );
    assert_eq!(
        services.iter().find(|s| s.name == "lb").unwrap().links,
        vec!["http://lb.example.com:80".to_string()]
    );
    svcs.delete("np", &DeleteParams::default())
        .await
        .expect("delete np");
    let deadline = spectro::clock::instant_now() + T;
    while engine
        .services(id)
        .await
        .unwrap()
        .iter()
        .any(|s| s.name == "np")
    {
        assert!(
            spectro::clock::instant_now() < deadline,
            "deleted service still listed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Heartbeats stop (agent killed): unhealthy after the window; restarted: healthy.
    agent.0.kill().unwrap();
    agent.0.wait().unwrap();
    let h = wait_health(engine, id, "heartbeat missing", |h| {
        h.status == HealthStatus::Unhealthy
    })
    .await
    .unwrap();
    assert_eq!(h.reasons[0].kind, HealthReasonKind::HeartbeatMissing);
    agent = r.start_agent();
    wait_health(engine, id, "agent back", |h| {
        h.status == HealthStatus::Healthy
    })
    .await
    .unwrap();
    drop(agent);
    // A report of the killed process still in flight lands before anything is counted.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // While the engine is unreachable the agent buffers (bounded) and sends everything at
    // once when it is back.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut config = spectro_agent::agent::AgentConfig::new(
        format!("https://localhost:{port}"),
        id.to_string(),
        engine.agent_token(id).unwrap(),
    );
    config.ca_pem = Some(std::fs::read_to_string(&r.ca_file).unwrap());
    config.buffer = 3;
    let mut offline = spectro_agent::agent::Agent::new(client.clone(), config).unwrap();
    let samples_before = all_samples(engine, id).await;
    for _ in 0..4 {
        let report = offline.collect().await.expect("collect");
        offline.push(report);
        let e = offline.send().await.unwrap_err();
        assert!(
            matches!(e, spectro_agent::agent::SendError::Unreachable(_)),
            "{e}"
        );
        // Samples are kept per second.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    assert_eq!(offline.buffered(), 3, "the buffer is bounded");
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(AgentEndpoint::new(engine.clone()).serve(listener, r.tls.clone()));
    offline
        .send()
        .await
        .expect("delivered once the engine is back");
    assert_eq!(offline.buffered(), 0);
    let samples_after = all_samples(engine, id).await;
    assert_eq!(
        samples_after,
        samples_before + 3,
        "every buffered report became a sample"
    );

    // Transitions as they happened, through watch_health.
    use futures_util::StreamExt;
    let mut seen = Vec::new();
    while let Ok(Some(c)) =
        tokio::time::timeout(Duration::from_millis(500), transitions.next()).await
    {
        assert_eq!(c.cluster, id);
        seen.push(c.health.status);
    }
    assert!(
        seen.len() >= 7 && seen[0] == HealthStatus::Healthy && seen[1] == HealthStatus::Unhealthy,
        "watched transitions: {seen:?}"
    );
    // Every transition is in the event stream, recorded by the sweep or the report.
    let events = engine.events(Some(id), 0, 10_000).await.unwrap();
    let reasons: Vec<&str> = events.iter().map(|e| e.reason.as_str()).collect();
    let count = |r: &str| reasons.iter().filter(|x| **x == r).count();
    assert!(
        count("ClusterUnhealthy") >= 3 && count("ClusterHealthy") >= 4,
        "{reasons:?}"
    );
    assert_eq!(
        (count("ServiceAdded"), count("ServiceRemoved")),
        (2, 1),
        "{reasons:?}"
    );
    let missing = events
        .iter()
        .find(|e| e.message.contains("no heartbeat since"))
        .expect("heartbeat event");
    assert_eq!(missing.reason, "ClusterUnhealthy");
    let log = std::fs::read_to_string(&r.agent_log).unwrap_or_default();
    assert!(
        !log.contains(token.expose()),
        "the agent never logs its credential"
    );
    engine.shutdown().await;
}

/// Every usage sample the engine keeps for a cluster, all nodes.
async fn all_samples(engine: &Engine, id: ClusterId) -> usize {
    let all = DateTime::<Utc>::MIN_UTC..DateTime::<Utc>::MAX_UTC;
    engine
        .usage(id, all, &NodeScope::All)
        .await
        .unwrap()
        .series
        .len()
}

fn report(at: DateTime<Utc>, nodes: usize) -> AgentReport {
    AgentReport {
        agent_version: "test".into(),
        agent_id: "test-agent".into(),
        seq: at.timestamp() as u64,
        collected_at: at,
        nodes: (0..nodes)
            .map(|i| NodeReport {
                name: format!("node-{i}"),
                control_plane: i == 0,
                conditions: vec![NodeConditionReport {
                    kind: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }],
                capacity: Resources {
                    cpu_millicores: 4000,
                    memory_bytes: 16 << 30,
                },
                allocatable: Resources {
                    cpu_millicores: 3800,
                    memory_bytes: 15 << 30,
                },
                usage: Some(Resources {
                    cpu_millicores: 1000 + (at.timestamp() % 1000) as u64,
                    memory_bytes: 4 << 30,
                }),
                requests: Resources {
                    cpu_millicores: 500,
                    memory_bytes: 1 << 30,
                },
                pods: 10,
                ..Default::default()
            })
            .collect(),
        metrics_available: true,
        ..Default::default()
    }
}

/// A week (and a day) of reports every 5 minutes through the engine's API with a manual
/// clock: raw rows never exceed the raw hour, averages never exceed the week, and the bytes
/// stop growing once the retention is full.
async fn week_of_usage(store: Arc<dyn Store>) {
    let t0 = Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0).unwrap();
    let clock = Arc::new(spectro::clock::ManualClock::new(t0));
    let engine = Engine::builder(store.clone())
        .provider(common::sim(SimConfig::default()))
        .clock(clock.clone())
        .agent(AgentSettings {
            key: AgentKey::random(),
            deployment: None,
        })
        .config(EngineConfig {
            monitoring: MonitoringConfig {
                sweep_interval: Duration::from_secs(3600),
                ..MonitoringConfig::default()
            },
            ..EngineConfig::fast()
        })
        .secret_keys(Arc::new(spectro::secret::StaticKeys(Arc::new(
            spectro::secret::Keyring::random().unwrap(),
        ))))
        .start()
        .await
        .unwrap();
    engine.put_profile(&common::profile()).await.unwrap();
    engine.put_cloud_account(&common::account()).await.unwrap();
    let id = engine
        .create_cluster(&common::cluster("week"))
        .await
        .unwrap();
    let token = engine.agent_token(id).unwrap();
    let step = Duration::from_secs(300);
    let retention = UsageRetention::default();
    let bound = retention.max_rows(step);
    let (mut rows_day7, mut bytes_day7) = (0, 0);
    let count = |store: Arc<dyn Store>| async move {
        let mut n = 0;
        let mut bytes = 0;
        for s in [0, 300] {
            for r in store
                .usage(id, s, DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC)
                .await
                .unwrap()
            {
                n += 1;
                bytes += r.body.to_string().len();
            }
        }
        (n as u64, bytes)
    };
    for i in 0..(8 * 24 * 12) {
        let at = clock.now();
        engine
            .agent_report(
                id,
                token.expose(),
                &ReportBatch {
                    reports: vec![report(at, 4)],
                },
            )
            .await
            .unwrap();
        if i == 7 * 24 * 12 {
            (rows_day7, bytes_day7) = count(store.clone()).await;
        }
        clock.advance(step);
    }
    let (rows, bytes) = count(store.clone()).await;
    assert!(rows <= bound, "{rows} rows over the bound {bound}");
    assert!(
        rows <= rows_day7 + 1 && bytes <= bytes_day7 + bytes_day7 / 50,
        "grew after the week: {rows_day7} → {rows} rows, {bytes_day7} → {bytes} bytes"
    );
    let raw = store
        .usage(id, 0, DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC)
        .await
        .unwrap();
    assert!(
        raw.len() <= 13 + 1,
        "raw samples beyond the hour: {}",
        raw.len()
    );
    let now = clock.now();
    let week = engine
        .usage(
            id,
            now - chrono::Duration::days(7)..now,
            &NodeScope::Workers,
        )
        .await
        .unwrap();
    assert!(
        week.series.len() >= 2000,
        "a week of 5-minute points: {}",
        week.series.len()
    );
    assert!(
        week.series.windows(2).all(|w| w[0].at < w[1].at),
        "ordered, no duplicates"
    );
    assert_eq!(week.series[0].nodes.len(), 3, "workers only");
    eprintln!("a week of usage: {rows} rows, {bytes} bytes (bound {bound} rows)");
    // Deleting the cluster takes its usage and monitor state along.
    engine.delete_cluster(id).await.unwrap();
    engine
        .wait_for_phase(id, Phase::Deleted, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(count(store.clone()).await.0, 0);
    assert!(store
        .get_object(ObjectKind::Monitor, &id.to_string())
        .await
        .unwrap()
        .is_none());
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_week_of_usage_stays_within_the_retention_bound_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    week_of_usage(Arc::new(
        SqliteStore::open(dir.path().join("s.db")).unwrap(),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_week_of_usage_stays_within_the_retention_bound_on_postgres() {
    let Some(pg) = common::pg::PgServer::start().await else {
        return;
    };
    week_of_usage(Arc::new(
        spectro::PostgresStore::connect(&pg.url, 4).await.unwrap(),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_other_clusters_credential_is_refused_and_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("s.db")).unwrap());
    let engine = Engine::builder(store.clone())
        .provider(common::sim(SimConfig::default()))
        .agent(AgentSettings {
            key: AgentKey::random(),
            deployment: None,
        })
        .config(EngineConfig::fast())
        .start()
        .await
        .unwrap();
    engine.put_profile(&common::profile()).await.unwrap();
    engine.put_cloud_account(&common::account()).await.unwrap();
    let a = engine.create_cluster(&common::cluster("a")).await.unwrap();
    let b = engine.create_cluster(&common::cluster("b")).await.unwrap();
    let (url, ca) = endpoint(&engine).await;
    let http = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(ca.as_bytes()).unwrap())
        .build()
        .unwrap();
    let batch = ReportBatch {
        reports: vec![report(spectro::clock::system_now(), 2)],
    };
    let post = |cluster: ClusterId, token: String, body: String| {
        let http = http.clone();
        let url = format!("{url}/v1/clusters/{cluster}/reports");
        async move {
            http.post(url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let body = serde_json::to_string(&batch).unwrap();
    let monitoring_events = |engine: Engine| async move {
        engine
            .events(Some(a), 0, 10_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| {
                e.reason.starts_with("Cluster") && e.reason.ends_with("ealthy")
                    || e.reason.starts_with("Service")
            })
            .count()
    };
    let other = post(
        a,
        engine.agent_token(b).unwrap().expose().to_string(),
        body.clone(),
    )
    .await;
    assert_eq!(other.status(), 401, "another cluster's credential");
    let wrong = post(a, "not-a-credential".into(), body.clone()).await;
    assert_eq!(wrong.status(), 401);
    let text = wrong.text().await.unwrap();
    assert!(text.contains("credential refused"), "{text}");
    assert!(
        store
            .get_object(ObjectKind::Monitor, &a.to_string())
            .await
            .unwrap()
            .is_none(),
        "nothing recorded"
    );
    assert_eq!(monitoring_events(engine.clone()).await, 0);
    assert_eq!(
        engine.health(a).await.unwrap().status,
        HealthStatus::Unknown
    );
    // A malformed body from the right agent: 400 naming the field, nothing recorded.
    let bad = post(
        a,
        engine.agent_token(a).unwrap().expose().to_string(),
        r#"{"reports":[{"agentVersion":1}]}"#.into(),
    )
    .await;
    assert_eq!(bad.status(), 400);
    let text = bad.text().await.unwrap();
    assert!(text.contains("reports[0].agentVersion"), "{text}");
    assert!(store
        .get_object(ObjectKind::Monitor, &a.to_string())
        .await
        .unwrap()
        .is_none());
    // An encoding the endpoint does not take: 415, nothing recorded.
    let br = http
        .post(format!("{url}/v1/clusters/{a}/reports"))
        .bearer_auth(engine.agent_token(a).unwrap().expose())
        .header("content-encoding", "br")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(br.status(), 415);
    assert!(store
        .get_object(ObjectKind::Monitor, &a.to_string())
        .await
        .unwrap()
        .is_none());
    // The right one is taken; sending it again (a lost answer) records nothing twice.
    let ok = post(
        a,
        engine.agent_token(a).unwrap().expose().to_string(),
        body.clone(),
    )
    .await;
    assert_eq!(ok.status(), 200, "{}", ok.text().await.unwrap());
    let again = post(a, engine.agent_token(a).unwrap().expose().to_string(), body).await;
    assert_eq!(again.status(), 200);
    let now = spectro::clock::system_now();
    let rows = store
        .usage(
            a,
            0,
            now - chrono::Duration::hours(1),
            now + chrono::Duration::hours(1),
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "a re-sent report is recognised");
    // The agent's clock went back an hour (rescheduled pod, NTP): its next report still
    // counts — reports are recognised by process and number, not by the agent's clock.
    let mut late = report(spectro::clock::system_now() - chrono::Duration::hours(1), 2);
    late.seq = batch.reports[0].seq + 1;
    let late_body = serde_json::to_string(&ReportBatch {
        reports: vec![late],
    })
    .unwrap();
    let took = post(
        a,
        engine.agent_token(a).unwrap().expose().to_string(),
        late_body,
    )
    .await;
    assert_eq!(took.status(), 200);
    let state = store
        .get_object(ObjectKind::Monitor, &a.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        state.body["lastReport"][1],
        batch.reports[0].seq + 1,
        "{}",
        state.body
    );
    assert_eq!(
        engine.health(a).await.unwrap().status,
        HealthStatus::Healthy
    );
    // The agent's credential never shows in events or errors.
    let token_a = engine.agent_token(a).unwrap();
    for e in engine.events(None, 0, 10_000).await.unwrap() {
        assert!(!e.message.contains(token_a.expose()));
    }
    let err = engine
        .agent_report(a, "nope", &ReportBatch::default())
        .await
        .unwrap_err();
    assert!(
        !err.to_string().contains(token_a.expose())
            && err.to_string().contains("credential refused")
    );
    engine.shutdown().await;
}

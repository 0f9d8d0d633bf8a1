//! The private cloud gateway's per-call overhead: `list_machines` on a simulated vSphere cloud
//! called directly, and through the remote provider (the engine's hub → HTTPS with HTTP/2 on
//! loopback → an agent in this process → the same simulated cloud, and the result back).
//! The difference is what the gateway adds to every cloud call (the tests print the same
//! figure against vcsim through tinyproxy).

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use spectro::model::document::{from_text, Format};
use spectro::model::{CloudType, PairingRequest, PrivateCloudGateway};
use spectro::provider::{CloudProvider, ClusterContext, ClusterId};
use spectro::secret::Secret;
use spectro::sim::{SimCloud, SimConfig};
use spectro::{Engine, EngineConfig, SqliteStore};
use spectro_gateway::agent::{Agent, AgentConfig, VcenterLogin};
use spectro_gateway::endpoint::{tls_config, GatewayEndpoint};
use spectro_gateway::hub::{GatewayHub, HubConfig};

const PROFILE: &str = "name: vs\nversion: '1'\ncloud: vsphere\npacks:\n  - {name: ubuntu, layer: os, version: '22.04', annotations: {image: t}}\n  - {name: kubernetes, layer: kubernetes, version: 1.30.4}\n  - {name: calico, layer: cni, version: 3.28.0}\n";
const CLUSTER: &str = "name: c\nprofile: {name: vs, version: '1'}\ncloudAccount: gw-default\ncloud: {vsphere: {datacenter: DC0, folder: vm}}\nnodePools:\n  - {name: cp, role: controlPlane, size: 1, cpu: 2, memoryGb: 4, diskSizeGb: 20, placements: [{computeCluster: C0, datastore: ds, network: net}]}\n";

struct Setup {
    ctx: ClusterContext,
    remote: Arc<dyn CloudProvider>,
    direct: Arc<SimCloud>,
    _dir: tempfile::TempDir,
    _engine: Engine,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("b.db")).unwrap());
    let hub = GatewayHub::new(HubConfig::default());
    let remote = hub.provider(CloudType::Vsphere);
    let engine = Engine::builder(store)
        .provider(remote.clone())
        .config(EngineConfig::for_emulators())
        .start()
        .await
        .unwrap();
    engine
        .put_gateway(&PrivateCloudGateway {
            name: "gw".into(),
            size: 1,
            state: Default::default(),
            proxy: None,
            ip_pools: vec![],
        })
        .await
        .unwrap();
    let code = engine.gateway_pairing_code("gw").await.unwrap();
    let cred = engine
        .pair_gateway(
            "gw",
            &PairingRequest {
                code: code.code,
                replica: "bench".into(),
                version: spectro_gateway::AGENT_VERSION.into(),
                vcenter_host: "vc.bench:443".into(),
                username: "u".into(),
                password: Secret::new("p"),
                insecure: true,
            },
        )
        .await
        .unwrap();
    let state = dir.path().join("agent");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("credential"), cred.token.expose()).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let tls = tls_config(&ck.cert.pem(), &ck.signing_key.serialize_pem()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(GatewayEndpoint::new(hub.clone(), engine.clone()).serve(listener, tls));
    let direct = Arc::new(SimCloud::new(CloudType::Vsphere, SimConfig::default()));
    let agent = Agent::new(
        AgentConfig {
            endpoint: url,
            gateway: "gw".into(),
            replica: "bench".into(),
            state_dir: state,
            pairing_code: None,
            vcenter: VcenterLogin {
                host: "vc.bench:443".into(),
                username: "u".into(),
                password: Secret::new("p"),
                insecure: true,
            },
            ca_pem: Some(ck.cert.pem()),
            concurrency: 4,
            version: spectro_gateway::AGENT_VERSION.into(),
            heartbeat: Duration::from_secs(2),
        },
        direct.clone(),
    )
    .unwrap();
    tokio::spawn(Arc::new(agent).run(std::future::pending()));
    while hub.connected("gw").is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let account = engine
        .store()
        .get_object(spectro::store::ObjectKind::CloudAccount, "gw-default")
        .await
        .unwrap()
        .unwrap();
    let ctx = ClusterContext {
        cluster_id: ClusterId::new(),
        spec: from_text(CLUSTER, Format::Yaml).unwrap(),
        profile: from_text(PROFILE, Format::Yaml).unwrap(),
        account: serde_json::from_value(account.body).unwrap(),
        vip: None,
        image: None,
        deleting: false,
    };
    Setup {
        ctx,
        remote,
        direct,
        _dir: dir,
        _engine: engine,
    }
}

fn gateway(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(setup());
    let mut g = c.benchmark_group("gateway");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("list_machines direct", |b| {
        b.iter(|| rt.block_on(s.direct.list_machines(&s.ctx)).unwrap())
    });
    g.bench_function("list_machines through the gateway", |b| {
        b.iter(|| rt.block_on(s.remote.list_machines(&s.ctx)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, gateway);
criterion_main!(benches);

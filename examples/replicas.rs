//! Three engine replicas in one process on one PostgreSQL database:
//!
//!     cargo run --example replicas -- postgres://user:pass@127.0.0.1:5432/spectro
//!
//! (or set DATABASE_URL). Provisions 30 clusters on the simulated cloud, shows which replica
//! owns which cluster, kills one replica mid-way (no graceful release: its leases expire),
//! shows the takeover, and exits 0 only once every cluster runs with no duplicate resource.
//! The clusters are deleted at the end.

use std::sync::Arc;
use std::time::Duration;

use spectro::engine::status::Phase;
use spectro::engine::ReplicaConfig;
use spectro::model::document::{from_text, Format};
use spectro::model::{CloudAccount, CloudType, Cluster, ClusterProfile};
use spectro::secret::{KeyProvider, Keyring, StaticKeys};
use spectro::sim::{SimCloud, SimConfig};
use spectro::{ClusterId, Engine, EngineConfig, PostgresStore};

const PROFILE: &str = "name: replicas-demo\nversion: '1'\ncloud: aws\npacks:\n  - {name: ubuntu, layer: os, version: '22.04'}\n  - {name: kubernetes, layer: kubernetes, version: 1.30.4}\n  - {name: calico, layer: cni, version: 3.28.0}\n";
const ACCOUNT: &str = "name: replicas-demo\ncredentials:\n  aws: {accessKeyId: AKIAREPLICASDEMO0000, secretAccessKey: simulated}\n";
const CLUSTER: &str = "name: x\nprofile: {name: replicas-demo, version: '1'}\ncloudAccount: replicas-demo\ncloud: {aws: {region: us-east-1}}\nnodePools:\n  - {name: cp, role: controlPlane, size: 3, instanceType: m5.large, availabilityZones: [us-east-1a, us-east-1b, us-east-1c]}\n  - {name: workers, role: worker, size: 5, instanceType: m5.xlarge, availabilityZones: [us-east-1a, us-east-1b, us-east-1c]}\n";

type Error = Box<dyn std::error::Error + Send + Sync>;

fn table(engines: &[Option<Engine>], names: &[(ClusterId, String)]) -> String {
    let mut out = String::new();
    for (i, e) in engines.iter().enumerate() {
        let line = match e {
            None => format!("  r{i}: dead\n"),
            Some(e) => {
                let owned = e.owned_clusters();
                let mut mine: Vec<&str> = names
                    .iter()
                    .filter(|(id, _)| owned.contains(id))
                    .map(|(_, n)| n.rsplit('-').next().unwrap_or(n))
                    .collect();
                mine.sort_by_key(|s| s.parse::<u32>().unwrap_or(0));
                format!("  r{i}: {:>2} clusters [{}]\n", mine.len(), mine.join(" "))
            }
        };
        out.push_str(&line);
    }
    out
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .ok_or("usage: replicas POSTGRES_URL (or set DATABASE_URL)")?;
    let sim = Arc::new(SimCloud::new(
        CloudType::Aws,
        SimConfig {
            boot_time: Duration::from_millis(1200),
            ..SimConfig::default().with_latency(Duration::from_millis(15))
        },
    ));
    let ttl = Duration::from_secs(2);
    // Replicas of one store share its secrets key (a real deployment reads it from
    // SPECTRO_SECRETS_KEY or a KMS: `Engine::builder(..).secret_keys(..)`).
    let keys: Arc<dyn KeyProvider> = Arc::new(StaticKeys(Arc::new(Keyring::random()?)));
    let mut engines = Vec::new();
    for i in 0..3 {
        let store = Arc::new(PostgresStore::connect(&url, 4).await?);
        let engine = Engine::builder(store)
            .provider(sim.clone())
            .secret_keys(keys.clone())
            .config(EngineConfig {
                concurrency: 4,
                poll_interval: Duration::from_millis(100),
                replica: Some(ReplicaConfig {
                    id: format!("demo-r{i}-{}", std::process::id()),
                    lease_ttl: ttl,
                    max_clusters: 15,
                }),
                ..Default::default()
            })
            .start()
            .await?;
        engines.push(Some(engine));
    }
    let api = |i: usize| engines[i % 3].as_ref().expect("alive");
    let profile: ClusterProfile = from_text(PROFILE, Format::Yaml)?;
    let account: CloudAccount = from_text(ACCOUNT, Format::Yaml)?;
    api(0).put_profile(&profile).await?;
    api(0).put_cloud_account(&account).await?;
    let mut names = Vec::new();
    for i in 0..30 {
        let mut c: Cluster = from_text(CLUSTER, Format::Yaml)?;
        c.name = format!("demo-{}-{i}", std::process::id());
        let id = api(i).create_cluster(&c).await?;
        names.push((id, c.name));
    }
    println!("30 clusters declared through 3 replicas (lease TTL {ttl:?}, at most 15 each)");
    let started = spectro::clock::instant_now();
    let mut killed = false;
    loop {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let live = engines.iter().flatten().next().expect("a live replica");
        let mut running = 0;
        for (id, _) in &names {
            let r = live.cluster(*id).await?;
            if r.status.phase == Phase::Running {
                running += 1;
            }
        }
        println!(
            "[{:>5.1?}] {running}/30 running\n{}",
            started.elapsed(),
            table(&engines, &names)
        );
        if !killed && running < 30 && started.elapsed() > Duration::from_millis(1000) {
            let victim = engines[1].take().expect("alive");
            println!(
                "==> killing r1 (holds {} clusters); its leases expire within {ttl:?}",
                victim.owned_clusters().len()
            );
            drop(victim);
            killed = true;
        }
        if running == 30 {
            break;
        }
        if started.elapsed() > Duration::from_secs(90) {
            return Err("clusters did not converge within 90 s".into());
        }
    }
    let mut dupes = 0;
    for (id, _) in &names {
        dupes += sim.duplicate_names(*id).len();
        if sim.machines(*id).len() != 8 {
            return Err(format!(
                "cluster {id} has {} machines, not 8",
                sim.machines(*id).len()
            )
            .into());
        }
    }
    let launched = sim.machines_launched();
    println!("all 30 running after {:.1?}; machines launched {launched} (30 × 8 = 240); duplicates {dupes}", started.elapsed());
    if dupes != 0 || launched != 240 {
        return Err("duplicate resources".into());
    }
    // Clean up through the live replicas.
    let live: Vec<&Engine> = engines.iter().flatten().collect();
    for (i, (id, _)) in names.iter().enumerate() {
        live[i % live.len()].delete_cluster(*id).await?;
    }
    for (id, _) in &names {
        live[0]
            .wait_for_phase(*id, Phase::Deleted, Duration::from_secs(60))
            .await?;
    }
    println!(
        "deleted; resources left in the simulated cloud: {}",
        sim.total_resources()
    );
    for e in engines.into_iter().flatten() {
        e.shutdown().await;
    }
    Ok(())
}

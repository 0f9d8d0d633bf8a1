//! Secrets at rest: a unique secret planted in every secret-bearing field (and the secrets the
//! engine makes: pairing codes, gateway and agent credentials, cluster PKI keys, the admin
//! kubeconfig), a full lifecycle on the SQLite file store and on PostgreSQL, then the raw
//! database file and its WAL, a `pg_dump`, every event, error, `Debug` output and TRACE-level
//! log line searched for their bytes: none may be found. Also: the engine refuses to start
//! without the key that sealed a store's values (changing nothing), rotates to a new key
//! (re-seal, then the old key can go), and seals a store written in clear before sealing.

mod common;

use std::sync::{Arc, Mutex, OnceLock};

use common::pg::PgServer;
use common::{cluster, profile, T};
use spectro::engine::status::Phase;
use spectro::engine::AgentSettings;
use spectro::model::document::{from_text, Format};
use spectro::model::gateway::PairingRequest;
use spectro::model::{CloudAccount, PrivateCloudGateway, ProxySettings};
use spectro::monitoring::credential::AgentKey;
use spectro::secret::{KeyProvider, Keyring, Secret, StaticKeys};
use spectro::sim::SimConfig;
use spectro::store::{ObjectKind, Store};
use spectro::{CoreError, Engine, EngineConfig, SqliteStore};

/// Every log line of this test binary, at TRACE level (engine tasks run on any thread, so
/// the subscriber is global).
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .try_init();
        buf
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn keys(ring: &Arc<Keyring>) -> Arc<dyn KeyProvider> {
    Arc::new(StaticKeys(ring.clone()))
}

/// Unique planted secrets, one per field.
struct Planted {
    aws: String,
    azure: String,
    gcp: String,
    vsphere: String,
    pairing_password: String,
    cluster_proxy: String,
    gateway_proxy: String,
}

impl Planted {
    fn new() -> Self {
        let p = |what: &str| format!("PLANTED{what}{}", uuid::Uuid::new_v4().simple());
        Planted {
            aws: p("aws"),
            azure: p("azure"),
            gcp: p("gcp"),
            vsphere: p("vsphere"),
            pairing_password: p("pairing"),
            cluster_proxy: p("cproxy"),
            gateway_proxy: p("gproxy"),
        }
    }

    fn all(&self) -> Vec<(String, String)> {
        [
            ("AWS secret access key", &self.aws),
            ("Azure client secret", &self.azure),
            ("GCP service account key", &self.gcp),
            ("vSphere password", &self.vsphere),
            ("vCenter password given at pairing", &self.pairing_password),
            ("cluster proxy password", &self.cluster_proxy),
            ("gateway proxy password", &self.gateway_proxy),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.clone()))
        .collect()
    }
}

fn account(text: &str) -> CloudAccount {
    from_text(text, Format::Yaml).unwrap()
}

/// A full lifecycle touching every secret-bearing field. Returns the secrets the engine
/// made (to search for too) and everything it showed (events, errors, `Debug` output).
async fn lifecycle(
    store: Arc<dyn Store>,
    ring: &Arc<Keyring>,
    p: &Planted,
) -> (Vec<(String, String)>, String) {
    let sim = common::sim(SimConfig::default());
    let engine = Engine::builder(store)
        .provider(sim)
        .config(EngineConfig::fast())
        .secret_keys(keys(ring))
        .agent(AgentSettings {
            key: AgentKey::random(),
            deployment: None,
        })
        .start()
        .await
        .unwrap();
    let mut made: Vec<(String, String)> = Vec::new();
    let mut shown = String::new();
    engine.put_profile(&profile()).await.unwrap();
    engine
        .put_cloud_account(&account(&format!(
            "name: sim\ncredentials:\n  aws:\n    accessKeyId: AKIAIOSFODNN7EXAMPLE\n    secretAccessKey: {}\n",
            p.aws
        )))
        .await
        .unwrap();
    engine
        .put_cloud_account(&account(&format!(
            "name: az\ncredentials:\n  azure:\n    clientId: 0f0e0d0c-0b0a-4908-8706-050403020100\n    tenantId: 1f0e0d0c-0b0a-4908-8706-050403020100\n    clientSecret: {}\n",
            p.azure
        )))
        .await
        .unwrap();
    let gcp_key = serde_json::json!({
        "type": "service_account",
        "project_id": "demo",
        "client_email": "spectro@demo.iam.gserviceaccount.com",
        "private_key": format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", p.gcp),
    });
    let mut gcp = account("name: gcp\ncredentials:\n  gcp:\n    serviceAccountJson: x\n");
    if let spectro::model::Credentials::Gcp(c) = &mut gcp.credentials {
        c.service_account_json = Secret::new(gcp_key.to_string());
    }
    engine.put_cloud_account(&gcp).await.unwrap();
    // A gateway whose proxy carries a password, an account through it, and a pairing.
    let gateway = PrivateCloudGateway {
        name: "gw".into(),
        size: 1,
        state: Default::default(),
        proxy: Some(ProxySettings {
            http_proxy: format!("http://proxyuser:{}@10.1.1.1:3128", p.gateway_proxy),
            https_proxy: format!("http://proxyuser:{}@10.1.1.1:3128", p.gateway_proxy),
            no_proxy: vec![".corp".into()],
        }),
        ip_pools: vec![],
    };
    engine.put_gateway(&gateway).await.unwrap();
    engine
        .put_cloud_account(&account(&format!(
            "name: vc\ncredentials:\n  vsphere:\n    gateway: gw\n    vcenterHost: vcenter.corp\n    username: admin\n    password: {}\n",
            p.vsphere
        )))
        .await
        .unwrap();
    let code = engine.gateway_pairing_code("gw").await.unwrap();
    made.push(("pairing code".into(), code.code.expose().to_string()));
    let request = |code: &str| PairingRequest {
        code: Secret::new(code),
        replica: "gw-0".into(),
        version: "0.1.0".into(),
        vcenter_host: "vcenter.corp".into(),
        username: "admin".into(),
        password: Secret::new(p.pairing_password.clone()),
        insecure: true,
    };
    let wrong = engine
        .pair_gateway("gw", &request("WRONGCOD"))
        .await
        .unwrap_err();
    shown.push_str(&format!("{wrong} {wrong:?}\n"));
    let credential = engine
        .pair_gateway("gw", &request(code.code.expose()))
        .await
        .unwrap();
    made.push((
        "gateway credential".into(),
        credential.token.expose().to_string(),
    ));
    shown.push_str(&format!("{credential:?}\n"));
    let refused = engine
        .authenticate_gateway("gw", &format!("{}x", credential.token.expose()))
        .await
        .unwrap_err();
    shown.push_str(&format!("{refused} {refused:?}\n"));
    let used = engine
        .pair_gateway("gw", &request(code.code.expose()))
        .await
        .unwrap_err();
    shown.push_str(&format!("{used} {used:?}\n"));

    // A cluster behind a proxy with a password: created, scaled, deleted.
    let mut c = cluster("vault");
    c.proxy = Some(ProxySettings {
        http_proxy: format!("http://nodeproxy:{}@10.2.2.2:3128", p.cluster_proxy),
        https_proxy: format!("http://nodeproxy:{}@10.2.2.2:3128", p.cluster_proxy),
        no_proxy: vec!["10.0.0.0/8".into()],
    });
    let id = engine.create_cluster(&c).await.unwrap();
    let rec = engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    let kubeconfig = engine.kubeconfig(id).await.unwrap();
    let kc: serde_json::Value = serde_norway::from_str(kubeconfig.expose()).unwrap();
    let client_key = kc["users"][0]["user"]["client-key-data"]
        .as_str()
        .expect("the kubeconfig carries a client key")
        .to_string();
    made.push((
        "admin kubeconfig client key".into(),
        client_key[..48].to_string(),
    ));
    made.push((
        "admin kubeconfig client key".into(),
        client_key[client_key.len() - 48..].to_string(),
    ));
    made.push((
        "agent credential".into(),
        engine.agent_token(id).unwrap().expose().to_string(),
    ));
    shown.push_str(&format!(
        "{rec:?}\n{}\n",
        serde_json::to_string(&rec).unwrap()
    ));
    shown.push_str(&format!(
        "{:?}\n",
        engine.gateway_status("gw").await.unwrap()
    ));
    // Errors with the secret-bearing documents in hand.
    let mut bad = c.clone();
    bad.node_pools[0].size = 4;
    let err = engine.update_cluster(id, &bad).await.unwrap_err();
    shown.push_str(&format!("{err} {err:?}\n"));
    let bad_account = account(&format!(
        "name: Bad_Name\ncredentials:\n  aws:\n    accessKeyId: short\n    secretAccessKey: {}\n",
        p.aws
    ));
    let err = engine.put_cloud_account(&bad_account).await.unwrap_err();
    shown.push_str(&format!("{err} {err:?} {bad_account:?}\n"));
    let mut bigger = c.clone();
    bigger.node_pools[1].size += 1;
    engine.update_cluster(id, &bigger).await.unwrap();
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    // The support bundle: unpacked, it is searched like the rest.
    let bundle = unpack(&engine.support_bundle(id).await.unwrap());
    let names: Vec<&str> = bundle.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "README.txt",
        "cluster.yaml",
        "profile.yaml",
        "account.yaml",
        "status.json",
        "conditions.txt",
        "events.txt",
        "events.jsonl",
        "explanation.json",
        "plan.json",
        "calls.jsonl",
        "intents.json",
        "health.json",
        "versions.json",
        "node-logs/spectro-collect-logs",
    ] {
        assert!(
            names.iter().any(|n| n.ends_with(&format!("/{want}"))),
            "{want} not in {names:?}"
        );
    }
    let file = |name: &str| {
        bundle
            .iter()
            .find(|(n, _)| n.ends_with(&format!("/{name}")))
            .map(|(_, b)| String::from_utf8_lossy(b).to_string())
            .unwrap()
    };
    assert!(
        file("calls.jsonl").contains("\"operation\":\"create_machines\""),
        "{}",
        file("calls.jsonl")
    );
    assert!(file("events.txt").contains("Running") || file("events.txt").contains("Created"));
    assert!(
        file("cluster.yaml").contains("nodeproxy:***@10.2.2.2:3128"),
        "{}",
        file("cluster.yaml")
    );
    assert!(file("versions.json").contains("providerContract"));
    assert!(file("conditions.txt").starts_with("TYPE\tSTATUS"));
    for (name, body) in &bundle {
        shown.push_str(&format!("== {name}\n{}\n", String::from_utf8_lossy(body)));
    }
    engine.delete_cluster(id).await.unwrap();
    let rec = engine.wait_for_phase(id, Phase::Deleted, T).await.unwrap();
    shown.push_str(&format!("{rec:?}\n"));
    for e in engine.events(None, 0, 100_000).await.unwrap() {
        shown.push_str(&format!("{e:?}\n"));
    }
    shown.push_str(&format!("{engine:?}\n"));
    engine.shutdown().await;
    (made, shown)
}

/// The files of a tar.gz.
fn unpack(tgz: &[u8]) -> Vec<(String, Vec<u8>)> {
    use std::io::Read as _;
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(tgz)
        .read_to_end(&mut tar)
        .expect("a gzip stream");
    let mut files = Vec::new();
    let mut at = 0;
    // ustar: 512-byte header (name at 0..100, octal size at 124..136), data padded to 512.
    while at + 512 <= tar.len() && tar[at] != 0 {
        let h = &tar[at..at + 512];
        let name = String::from_utf8_lossy(&h[..100])
            .trim_end_matches('\0')
            .to_string();
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&h[124..136]).trim_matches(|c: char| c == '\0' || c == ' '),
            8,
        )
        .expect("an octal size");
        files.push((name, tar[at + 512..at + 512 + size].to_vec()));
        at += 512 + size.div_ceil(512) * 512;
    }
    files
}

/// Names of the secrets found in `haystack`.
fn found_in(haystack: &[u8], secrets: &[(String, String)]) -> Vec<String> {
    secrets
        .iter()
        .filter(|(_, s)| haystack.windows(s.len()).any(|w| w == s.as_bytes()))
        .map(|(what, _)| what.clone())
        .collect()
}

fn assert_nothing_in(place: &str, haystack: &[u8], secrets: &[(String, String)]) {
    let found = found_in(haystack, secrets);
    assert!(
        found.is_empty(),
        "{place} holds in clear: {}",
        found.join(", ")
    );
    // PEM-armoured private keys (the cluster PKI's CA and service-account keys) too.
    let pem = b"PRIVATE KEY-----";
    assert!(
        !haystack.windows(pem.len()).any(|w| w == pem),
        "{place} holds a PEM private key in clear"
    );
}

fn read_all(paths: &[std::path::PathBuf]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for p in paths {
        if let Ok(b) = std::fs::read(p) {
            bytes.extend_from_slice(&b);
        }
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_secrets_are_nowhere_in_clear_sqlite_file_and_wal() {
    let logs = logs();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spectro.db");
    let files = [db.clone(), dir.path().join("spectro.db-wal")];
    let ring = Arc::new(Keyring::random().unwrap());
    let planted = Planted::new();
    let store = Arc::new(SqliteStore::open(&db).unwrap());
    let (made, shown) = lifecycle(store.clone(), &ring, &planted).await;
    let mut secrets = planted.all();
    secrets.extend(made);
    // The WAL as the lifecycle left it, then the database after the last connection closed.
    let while_open = read_all(&files);
    drop(store);
    let closed = read_all(&files);
    assert!(closed.len() > 10_000, "the database was written");
    assert_nothing_in("the SQLite file and WAL while open", &while_open, &secrets);
    assert_nothing_in("the SQLite file after close", &closed, &secrets);
    assert_nothing_in(
        "events, errors and Debug output",
        shown.as_bytes(),
        &secrets,
    );
    assert_nothing_in("the TRACE log", &logs.lock().unwrap(), &secrets);
    // And the values are there, sealed: every sealed value names the current key.
    let raw = String::from_utf8_lossy(&closed).to_string();
    assert!(raw.contains(&format!("$sealed:v1:{}:", ring.current_id())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_secrets_are_nowhere_in_clear_postgres_dump() {
    let logs = logs();
    let Some(pg) = PgServer::start().await else {
        return;
    };
    let ring = Arc::new(Keyring::random().unwrap());
    let planted = Planted::new();
    let store = Arc::new(spectro::PostgresStore::connect(&pg.url, 4).await.unwrap());
    // Without a key (none in the environment, no key file for PostgreSQL): refused, since a
    // key made up now would be lost with the process.
    let err = Engine::builder(store.clone() as Arc<dyn Store>)
        .provider(common::sim(SimConfig::default()))
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("outlives the process"), "{err}");
    let (made, shown) = lifecycle(store, &ring, &planted).await;
    let mut secrets = planted.all();
    secrets.extend(made);
    let dump = pg.dump();
    assert!(dump.len() > 10_000, "pg_dump wrote the database");
    assert!(String::from_utf8_lossy(&dump).contains("$sealed:v1:"));
    assert_nothing_in("pg_dump", &dump, &secrets);
    assert_nothing_in(
        "events, errors and Debug output",
        shown.as_bytes(),
        &secrets,
    );
    assert_nothing_in("the TRACE log", &logs.lock().unwrap(), &secrets);
}

async fn engine_with(store: Arc<dyn Store>, keys: Arc<dyn KeyProvider>) -> spectro::Result<Engine> {
    Engine::builder(store)
        .provider(common::sim(SimConfig::default()))
        .config(EngineConfig::fast())
        .secret_keys(keys)
        .start()
        .await
}

fn sealed_ids(db: &std::path::Path) -> Vec<String> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c
        .prepare("SELECT body FROM objects UNION ALL SELECT spec FROM clusters")
        .unwrap();
    let rows: Vec<String> = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut ids: Vec<String> = rows
        .iter()
        .flat_map(|b| {
            b.match_indices("$sealed:v1:")
                .filter_map(|(i, m)| {
                    b[i + m.len()..]
                        .split_once(':')
                        .map(|(id, _)| id.to_string())
                })
                .collect::<Vec<_>>()
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

fn aws_account(secret: &str) -> CloudAccount {
    account(&format!(
        "name: sim\ncredentials:\n  aws:\n    accessKeyId: AKIAIOSFODNN7EXAMPLE\n    secretAccessKey: {secret}\n"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_key_the_engine_refuses_the_store_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let a = Arc::new(Keyring::random().unwrap());
    let engine = engine_with(Arc::new(SqliteStore::open(&db).unwrap()), keys(&a))
        .await
        .unwrap();
    engine.put_profile(&profile()).await.unwrap();
    engine
        .put_cloud_account(&aws_account("kept-secret-1"))
        .await
        .unwrap();
    let id = engine.create_cluster(&cluster("c1")).await.unwrap();
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    engine.shutdown().await;
    let before = sealed_ids(&db);
    assert_eq!(before, vec![a.current_id().to_string()]);

    // Another key: refused, with the missing key's id (never a key) and what to do.
    let b = Arc::new(Keyring::random().unwrap());
    let err = engine_with(Arc::new(SqliteStore::open(&db).unwrap()), keys(&b))
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::Secrets { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(a.current_id()) && text.contains("SPECTRO_SECRETS_KEY"),
        "{text}"
    );
    assert_eq!(sealed_ids(&db), before, "nothing was re-sealed");
    // No key at all (no SPECTRO_SECRETS_KEY in the tests' environment, no key file beside
    // the database: the keys were given explicitly): refused, and no key file is made up.
    let err = Engine::builder(
        Arc::new(SqliteStore::open(dir.path().join("s.db")).unwrap()) as Arc<dyn Store>,
    )
    .provider(common::sim(SimConfig::default()))
    .start()
    .await
    .unwrap_err();
    assert!(err.to_string().contains(a.current_id()), "{err}");
    assert!(err.to_string().contains("no key is configured"), "{err}");
    assert!(!dir.path().join("s.db.secrets-key").exists());
    // The right key: everything is there and readable.
    let engine = engine_with(Arc::new(SqliteStore::open(&db).unwrap()), keys(&a))
        .await
        .unwrap();
    engine.verify_cloud_account("sim").await.unwrap();
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_key_reseals_everything_and_the_old_key_can_go() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let old = [3u8; 32];
    let new = [4u8; 32];
    let ring = |k: &[[u8; 32]]| Arc::new(Keyring::from_keys(k).unwrap());
    let engine = engine_with(
        Arc::new(SqliteStore::open(&db).unwrap()),
        keys(&ring(&[old])),
    )
    .await
    .unwrap();
    engine.put_profile(&profile()).await.unwrap();
    engine
        .put_cloud_account(&aws_account("rotated-secret-1"))
        .await
        .unwrap();
    let mut c = cluster("c1");
    c.proxy = Some(ProxySettings {
        http_proxy: "http://u:rotated-proxy-pw@10.0.0.1:3128".into(),
        https_proxy: "http://u:rotated-proxy-pw@10.0.0.1:3128".into(),
        no_proxy: vec![],
    });
    let id = engine.create_cluster(&c).await.unwrap();
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    engine.shutdown().await;
    assert_eq!(sealed_ids(&db), vec![spectro::secret::key_id(&old)]);

    // New key first, old key second: re-sealed at start; the old id stays listed (replicas
    // not restarted yet may still seal with it) until reseal_secrets says every replica
    // runs the new key.
    let engine = engine_with(
        Arc::new(SqliteStore::open(&db).unwrap()),
        keys(&ring(&[new, old])),
    )
    .await
    .unwrap();
    assert_eq!(engine.secrets_key_id(), spectro::secret::key_id(&new));
    assert_eq!(sealed_ids(&db), vec![spectro::secret::key_id(&new)]);
    engine.shutdown().await;
    let err = engine_with(
        Arc::new(SqliteStore::open(&db).unwrap()),
        keys(&ring(&[new])),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains(&spectro::secret::key_id(&old)),
        "{err}"
    );
    let engine = engine_with(
        Arc::new(SqliteStore::open(&db).unwrap()),
        keys(&ring(&[new, old])),
    )
    .await
    .unwrap();
    assert!(engine.reseal_secrets().await.unwrap() >= 2);
    engine.shutdown().await;
    assert_eq!(sealed_ids(&db), vec![spectro::secret::key_id(&new)]);

    // The old key removed: still readable, the cluster still converged, the proxy intact.
    let engine = engine_with(
        Arc::new(SqliteStore::open(&db).unwrap()),
        keys(&ring(&[new])),
    )
    .await
    .unwrap();
    engine.verify_cloud_account("sim").await.unwrap();
    let rec = engine.cluster(id).await.unwrap();
    assert_eq!(
        rec.spec.proxy.unwrap().http_proxy,
        "http://u:rotated-proxy-pw@10.0.0.1:3128"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_written_in_clear_is_sealed_at_the_first_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    {
        // A store as an engine before sealing wrote it: the secret in clear.
        let store = SqliteStore::open(&db).unwrap();
        let body = spectro::secret::with_secrets_revealed(|| {
            serde_json::to_value(aws_account("old-clear-secret")).unwrap()
        });
        store
            .put_object(ObjectKind::CloudAccount, "sim", &body, None)
            .await
            .unwrap();
    }
    let raw = |db: &std::path::Path| {
        let c = rusqlite::Connection::open(db).unwrap();
        c.query_row(
            "SELECT body FROM objects WHERE kind = 'cloudAccount' AND name = 'sim'",
            [],
            |r| r.get::<_, String>(0),
        )
        .unwrap()
    };
    assert!(raw(&db).contains("old-clear-secret"));
    let ring = Arc::new(Keyring::random().unwrap());
    let engine = engine_with(Arc::new(SqliteStore::open(&db).unwrap()), keys(&ring))
        .await
        .unwrap();
    engine.verify_cloud_account("sim").await.unwrap();
    engine.shutdown().await;
    let now = raw(&db);
    assert!(!now.contains("old-clear-secret"), "{now}");
    assert!(
        now.contains(&format!("$sealed:v1:{}:", ring.current_id())),
        "{now}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_value_copied_to_another_row_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let ring = Arc::new(Keyring::random().unwrap());
    let engine = engine_with(Arc::new(SqliteStore::open(&db).unwrap()), keys(&ring))
        .await
        .unwrap();
    engine
        .put_cloud_account(&aws_account("first-secret"))
        .await
        .unwrap();
    let mut other = aws_account("second-secret");
    other.name = "other".into();
    engine.put_cloud_account(&other).await.unwrap();
    engine.shutdown().await;
    // Someone with write access to the database copies one account's sealed key into the
    // other's row.
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        let body: String = c
            .query_row(
                "SELECT body FROM objects WHERE kind = 'cloudAccount' AND name = 'sim'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let body = body.replace("\"name\":\"sim\"", "\"name\":\"other\"");
        c.execute(
            "UPDATE objects SET body = ?1 WHERE kind = 'cloudAccount' AND name = 'other'",
            [body],
        )
        .unwrap();
    }
    let engine = engine_with(Arc::new(SqliteStore::open(&db).unwrap()), keys(&ring))
        .await
        .unwrap();
    engine.verify_cloud_account("sim").await.unwrap();
    let err = engine.verify_cloud_account("other").await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("cloudAccount/other#/credentials/aws/secretAccessKey")
            && text.contains("copied from another object or field"),
        "{text}"
    );
    engine.shutdown().await;
}

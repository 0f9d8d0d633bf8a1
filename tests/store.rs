//! One store conformance suite, run unchanged against SQLite and PostgreSQL.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::pg::PgServer;
use common::*;
use spectro::engine::event::{NewEvent, Severity};
use spectro::engine::status::{ClusterRecord, ClusterStatus, Lifecycle, Phase};
use spectro::ipam::PoolRange;
use spectro::provider::BootstrapRole;
use spectro::store::{ClusterWrite, Intent, IpRequest, ObjectKind, Store};
use spectro::{ClusterId, CoreError, PostgresStore, SqliteStore};

fn record(name: &str) -> ClusterRecord {
    ClusterRecord {
        id: ClusterId::new(),
        generation: 1,
        spec: cluster(name),
        profile: profile(),
        profile_revision: 1,
        lifecycle: Lifecycle::Active,
        status: ClusterStatus::default(),
        created_at: spectro::clock::system_now(),
    }
}

fn ev(reason: &str) -> NewEvent {
    NewEvent {
        time: spectro::clock::system_now(),
        severity: Severity::Info,
        reason: reason.into(),
        message: format!("{reason} happened"),
    }
}

fn intent(name: &str) -> Intent {
    Intent {
        name: name.into(),
        token: "tok".into(),
        pool: "general".into(),
        zone: "us-east-1a".into(),
        shape: "abc".into(),
        bootstrap: BootstrapRole::JoinWorker,
        created_at: spectro::clock::system_now(),
    }
}

async fn conformance(s: Arc<dyn Store>) {
    // Catalog objects: revisions and optimistic concurrency.
    let body = serde_json::json!({"name": "a", "x": 1});
    assert_eq!(
        s.put_object(ObjectKind::IpPool, "a", &body, None)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.put_object(ObjectKind::IpPool, "a", &body, Some(1))
            .await
            .unwrap(),
        2
    );
    assert!(matches!(
        s.put_object(ObjectKind::IpPool, "a", &body, Some(1)).await,
        Err(CoreError::Conflict {
            expected: 1,
            found: 2,
            ..
        })
    ));
    assert!(matches!(
        s.put_object(ObjectKind::IpPool, "b", &body, Some(3)).await,
        Err(CoreError::Conflict { found: 0, .. })
    ));
    let o = s
        .get_object(ObjectKind::IpPool, "a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (o.name.as_str(), o.revision, o.body["x"].as_i64()),
        ("a", 2, Some(1))
    );
    assert!(
        s.get_object(ObjectKind::Gateway, "a")
            .await
            .unwrap()
            .is_none(),
        "kinds are separate"
    );
    s.put_object(ObjectKind::IpPool, "c", &body, None)
        .await
        .unwrap();
    let names: Vec<String> = s
        .list_objects(ObjectKind::IpPool)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(names, ["a", "c"]);
    assert!(s.delete_object(ObjectKind::IpPool, "c").await.unwrap());
    assert!(!s.delete_object(ObjectKind::IpPool, "c").await.unwrap());

    // Clusters: unique live names, generations.
    let mut r = record("one");
    s.insert_cluster(&r).await.unwrap();
    assert!(matches!(
        s.insert_cluster(&record("one")).await,
        Err(CoreError::AlreadyExists { .. })
    ));
    assert_eq!(s.get_cluster(r.id).await.unwrap().unwrap(), r);
    assert_eq!(s.find_cluster("one").await.unwrap().unwrap().id, r.id);
    r.generation = 2;
    r.spec.node_pools[1].size = 9;
    s.update_cluster(&r, 1).await.unwrap();
    assert!(matches!(
        s.update_cluster(&r, 1).await,
        Err(CoreError::Conflict {
            expected: 1,
            found: 2,
            ..
        })
    ));
    assert_eq!(
        s.get_cluster(r.id).await.unwrap().unwrap().spec.node_pools[1].size,
        9
    );

    // Commits: status, intents and events together; the spec side untouched.
    let mut w = ClusterWrite::new(r.id);
    w.status = Some(ClusterStatus {
        phase: Phase::Provisioning,
        ..Default::default()
    });
    w.add_intents = vec![intent("m1"), intent("m2"), intent("m3")];
    w.events = vec![ev("A"), ev("B")];
    let evs = s.commit(&w).await.unwrap();
    assert_eq!(evs.len(), 2);
    assert!(evs[0].seq < evs[1].seq);
    let got = s.get_cluster(r.id).await.unwrap().unwrap();
    assert_eq!(got.status.phase, Phase::Provisioning);
    assert_eq!(got.generation, 2);
    let mut w = ClusterWrite::new(r.id);
    w.remove_intents = vec!["m2".into()];
    w.events = vec![ev("C")];
    s.commit(&w).await.unwrap();
    let names: Vec<String> = s
        .intents(r.id)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["m1", "m3"]);

    // Events: per cluster and global, resumable, in order.
    let other = record("two");
    s.insert_cluster(&other).await.unwrap();
    let mut w = ClusterWrite::new(other.id);
    w.events = vec![ev("X")];
    s.commit(&w).await.unwrap();
    let mine = s.events(Some(r.id), 0, 100).await.unwrap();
    assert_eq!(
        mine.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(),
        ["A", "B", "C"]
    );
    let all = s.events(None, 0, 100).await.unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    let rest = s.events(None, all[1].seq, 2).await.unwrap();
    assert_eq!(
        rest.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [all[2].seq, all[3].seq]
    );
    // The newest ones, oldest first (a page before its live events).
    let newest = s.latest_events(Some(r.id), 2).await.unwrap();
    assert_eq!(
        newest.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(),
        ["B", "C"]
    );
    let newest = s.latest_events(None, 3).await.unwrap();
    assert_eq!(
        newest.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [all[1].seq, all[2].seq, all[3].seq]
    );

    // Deletion frees the name; deleted clusters are listed only on request.
    let mut w = ClusterWrite::new(other.id);
    w.status = Some(ClusterStatus {
        phase: Phase::Deleted,
        ..Default::default()
    });
    w.clear_intents = true;
    s.commit(&w).await.unwrap();
    assert!(s.find_cluster("two").await.unwrap().is_none());
    s.insert_cluster(&record("two")).await.unwrap();
    assert_eq!(s.list_clusters(false).await.unwrap().len(), 2);
    assert_eq!(s.list_clusters(true).await.unwrap().len(), 3);

    // Leases: claimed once, renewed, taken over after expiry with a higher fence; a write
    // with the stale fence is refused and changes nothing.
    let ttl = Duration::from_millis(400);
    let a = s.acquire_leases("replica-a", ttl, 10).await.unwrap();
    assert_eq!(a.len(), 2, "both live clusters");
    let b = s.acquire_leases("replica-b", ttl, 10).await.unwrap();
    assert!(b.is_empty(), "held by a");
    let a2 = s.acquire_leases("replica-a", ttl, 10).await.unwrap();
    assert_eq!(
        s.live_replicas().await.unwrap(),
        2,
        "a and b renewed lately"
    );
    let fence = |l: &[spectro::store::Lease], id: ClusterId| {
        l.iter().find(|x| x.cluster_id == id).map(|x| x.fence)
    };
    assert_eq!(fence(&a2, r.id), fence(&a, r.id), "renewal keeps the fence");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        s.live_replicas().await.unwrap(),
        1,
        "none live: counted as one (the caller)"
    );
    let b = s.acquire_leases("replica-b", ttl, 1).await.unwrap();
    assert_eq!(b.len(), 1, "max respected");
    assert_eq!(s.live_replicas().await.unwrap(), 1, "only b");
    // No limit (`usize::MAX`, the command line's `run`) is no limit, not a negative room.
    let b = s
        .acquire_leases("replica-b", ttl, usize::MAX)
        .await
        .unwrap();
    assert_eq!(b.len(), 2, "expired leases taken over");
    assert!(fence(&b, r.id).unwrap() > fence(&a, r.id).unwrap());
    let mut stale = ClusterWrite::new(r.id);
    stale.fence = fence(&a, r.id);
    stale.status = Some(ClusterStatus {
        phase: Phase::Running,
        ..Default::default()
    });
    stale.events = vec![ev("Stale")];
    assert!(matches!(
        s.commit(&stale).await,
        Err(CoreError::Fenced { .. })
    ));
    assert_eq!(
        s.get_cluster(r.id).await.unwrap().unwrap().status.phase,
        Phase::Provisioning
    );
    assert!(s
        .events(Some(r.id), 0, 100)
        .await
        .unwrap()
        .iter()
        .all(|e| e.reason != "Stale"));
    let mut fresh = ClusterWrite::new(r.id);
    fresh.fence = fence(&b, r.id);
    fresh.events = vec![ev("Fresh")];
    s.commit(&fresh).await.unwrap();
    // Address writes are fenced the same way: a stale replica neither takes nor frees one.
    let mut req = ip("fenced", 8, r.id, "m1", false);
    req.fence = fence(&b, r.id);
    let held = s.allocate_ip(&req).await.unwrap();
    req.owner = "m2".into();
    req.fence = fence(&a, r.id);
    assert!(matches!(
        s.allocate_ip(&req).await,
        Err(CoreError::Fenced { .. })
    ));
    let stale_release = s
        .release_ips(r.id, Some(&["m1".to_string()]), fence(&a, r.id))
        .await;
    assert!(matches!(stale_release, Err(CoreError::Fenced { .. })));
    let leases = s.ip_leases(Some("fenced"), Some(r.id)).await.unwrap();
    assert_eq!(
        leases
            .iter()
            .map(|l| (l.owner.as_str(), l.offset))
            .collect::<Vec<_>>(),
        [("m1", held)],
        "the stale replica changed nothing"
    );
    assert_eq!(
        s.release_ips(r.id, None, fence(&b, r.id)).await.unwrap(),
        1,
        "the owner releases"
    );
    s.release_leases("replica-b").await.unwrap();
    assert_eq!(
        s.acquire_leases("replica-a", ttl, 10).await.unwrap().len(),
        2,
        "released leases are free at once"
    );
}

fn ip(pool: &str, size: u64, cluster: ClusterId, owner: &str, restrict: bool) -> IpRequest {
    IpRequest {
        pool: pool.into(),
        range: PoolRange {
            first: 0x0a00_0000,
            size,
            v6: false,
            reserved: vec![0],
        },
        cluster,
        owner: owner.into(),
        restrict_to_single_cluster: restrict,
        fence: None,
    }
}

async fn ipam_conformance(s: Arc<dyn Store>) {
    let (a, b) = (ClusterId::new(), ClusterId::new());
    // Lowest first, the reserved gateway offset skipped, idempotent per owner.
    assert_eq!(s.allocate_ip(&ip("p", 6, a, "m1", false)).await.unwrap(), 1);
    assert_eq!(s.allocate_ip(&ip("p", 6, a, "m2", false)).await.unwrap(), 2);
    assert_eq!(
        s.allocate_ip(&ip("p", 6, a, "m1", false)).await.unwrap(),
        1,
        "same owner, same address"
    );
    assert_eq!(
        s.allocate_ip(&ip("p", 6, b, "m1", false)).await.unwrap(),
        3,
        "shared pool"
    );
    // A released address is reused, ranges merge back.
    assert_eq!(
        s.release_ips(a, Some(&["m1".to_string()]), None)
            .await
            .unwrap(),
        1
    );
    assert_eq!(s.allocate_ip(&ip("p", 6, b, "m2", false)).await.unwrap(), 1);
    for o in ["m3", "m4"] {
        s.allocate_ip(&ip("p", 6, b, o, false)).await.unwrap();
    }
    match s.allocate_ip(&ip("p", 6, b, "m5", false)).await {
        Err(CoreError::PoolExhausted { pool, size: 6 }) => assert_eq!(pool, "p"),
        r => panic!("{r:?}"),
    }
    assert_eq!(s.release_ips(b, None, None).await.unwrap(), 4);
    assert_eq!(s.ip_leases(Some("p"), None).await.unwrap().len(), 1);
    assert_eq!(s.release_ips(a, None, None).await.unwrap(), 1);
    assert!(s.ip_leases(None, None).await.unwrap().is_empty());
    assert_eq!(
        s.allocate_ip(&ip("p", 6, a, "again", false)).await.unwrap(),
        1,
        "everything merged back"
    );
    s.release_ips(a, None, None).await.unwrap();

    // Restricted pools belong to the first cluster that uses them.
    s.allocate_ip(&ip("r", 10, a, "vip", true)).await.unwrap();
    match s.allocate_ip(&ip("r", 10, b, "vip", true)).await {
        Err(CoreError::PoolRestricted { holder, .. }) => assert_eq!(holder, a.to_string()),
        r => panic!("{r:?}"),
    }

    // Concurrent allocations never share an address.
    let pool_size = 64;
    let tasks: Vec<_> = (0..48)
        .map(|i| {
            let s = s.clone();
            let c = if i % 2 == 0 { a } else { b };
            tokio::spawn(async move {
                s.allocate_ip(&ip("c", pool_size, c, &format!("n{i}"), false))
                    .await
            })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap().unwrap());
    }
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 48, "48 distinct addresses");
    assert_eq!(got, (1..=48).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_ipam_conforms() {
    let dir = tempfile::tempdir().unwrap();
    ipam_conformance(Arc::new(
        SqliteStore::open(dir.path().join("i.db")).unwrap(),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_ipam_conforms() {
    let Some(pg) = PgServer::start().await else {
        return;
    };
    ipam_conformance(Arc::new(PostgresStore::connect(&pg.url, 8).await.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance(Arc::new(
        SqliteStore::open(dir.path().join("c.db")).unwrap(),
    ))
    .await;
    conformance(Arc::new(SqliteStore::open_in_memory().unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_conforms() {
    let Some(pg) = PgServer::start().await else {
        return;
    };
    let store = PostgresStore::connect(&pg.url, 4).await.unwrap();
    // A second connect migrates nothing twice.
    PostgresStore::connect(&pg.url, 1).await.unwrap();
    assert!(
        !format!("{store:?}").contains("postgres@"),
        "the URL never prints"
    );
    conformance(Arc::new(store)).await;
}

/// A CA and a certificate it signs for `names` (DNS names; `127.0.0.1` as an IP address).
fn ca_and_server(names: &[&str]) -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, SanType,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "spectro test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(Vec::<String>::new()).unwrap();
    server.distinguished_name.push(DnType::CommonName, "db");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    for n in names {
        server.subject_alt_names.push(match n.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName((*n).try_into().unwrap()),
        });
    }
    let cert = server.signed_by(&key, &issuer).unwrap();
    (ca_pem, cert.pem(), key.serialize_pem())
}

/// PostgreSQL over TLS (rustls): a server that refuses plain TCP (pg_hba `hostssl` only),
/// the libpq `sslmode`s, a custom CA from a file or from memory, a wrong CA, a host name the
/// certificate does not name, channel binding, and the whole conformance suite over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls() {
    use futures_util::StreamExt;
    use spectro::store::{RootCerts, TlsOptions};

    let (ca_pem, cert_pem, key_pem) = ca_and_server(&["localhost", "127.0.0.1"]);
    let (wrong_ca_pem, _, _) = ca_and_server(&["localhost"]);
    let Some(pg) = PgServer::start_tls(&common::pg::PgTls {
        cert_pem,
        key_pem,
        password: "tls-test-pw".into(),
    })
    .await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let wrong = dir.path().join("wrong-ca.pem");
    std::fs::write(&ca, &ca_pem).unwrap();
    std::fs::write(&wrong, &wrong_ca_pem).unwrap();
    let with = |params: &str| format!("{}?{params}", pg.url);
    let err = |r: spectro::Result<PostgresStore>| match r {
        Ok(_) => panic!("connected"),
        Err(e) => e.to_string(),
    };

    // The server enforces TLS: plain TCP is refused by pg_hba.conf.
    // (The server's reason, "no pg_hba.conf entry ... no encryption", is in the error's
    // source chain, which the pool's Display does not always carry.)
    let e = err(PostgresStore::connect(&with("sslmode=disable"), 1).await);
    assert!(e.contains("connect to PostgreSQL"), "{e}");

    // sslmode=require + the CA (libpq: verify-ca), used for everything a store does.
    let url = with(&format!("sslmode=require&sslrootcert={}", ca.display()));
    let store = PostgresStore::connect(&url, 4).await.unwrap();
    assert!(
        !format!("{store:?}").contains("tls-test-pw"),
        "the password never prints"
    );
    // The whole store suite over TLS (on the empty database it expects).
    conformance(Arc::new(store)).await;
    // LISTEN/NOTIFY runs over its own TLS connection.
    let store = PostgresStore::connect(&url, 2).await.unwrap();
    let mut changes = store.changes().await.unwrap().expect("notifications");
    let rec = record("over-tls");
    store.insert_cluster(&rec).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), changes.next())
        .await
        .expect("a notification within 10 s");
    assert_eq!(seen, Some(rec.id));

    // verify-full: the chain and the name (the certificate names 127.0.0.1).
    PostgresStore::connect(
        &with(&format!("sslmode=verify-full&sslrootcert={}", ca.display())),
        1,
    )
    .await
    .unwrap();
    // The same CA given in memory.
    PostgresStore::connect_with(
        &pg.url,
        1,
        TlsOptions::verify_full(RootCerts::Pem(ca_pem.clone())),
    )
    .await
    .unwrap();
    let e = err(PostgresStore::connect_with(&url, 1, TlsOptions::default()).await);
    assert!(e.contains("given twice"), "{e}");

    // A wrong CA fails, saying why.
    for mode in ["require", "verify-ca", "verify-full"] {
        let e = err(PostgresStore::connect(
            &with(&format!("sslmode={mode}&sslrootcert={}", wrong.display())),
            1,
        )
        .await);
        assert!(e.contains("TLS handshake"), "{mode}: {e}");
    }
    // A host name the certificate does not name: verify-full refuses. libpq's key=value form, TLS server name from `host`, address from
    // `hostaddr`.
    let port = pg
        .url
        .rsplit_once(':')
        .unwrap()
        .1
        .split('/')
        .next()
        .unwrap();
    let kv = |mode: &str| {
        format!(
            "host=db.invalid hostaddr=127.0.0.1 port={port} user=postgres password=tls-test-pw dbname=postgres sslmode={mode} sslrootcert='{}'",
            ca.display()
        )
    };
    let e = err(PostgresStore::connect(&kv("verify-full"), 1).await);
    assert!(e.contains("TLS handshake"), "{e}");
    // (libpq's verify-ca would accept this host name; ours refuses it: known defect,
    // issue 12's closing note.)
    // (libpq's `require` without a CA encrypts without checking the server; ours fails the
    // handshake: known defect, issue 12's closing note.)
    // A missing CA file is named.
    let e = err(PostgresStore::connect(
        &with("sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"),
        1,
    )
    .await);
    assert!(e.contains("/nonexistent/ca.pem"), "{e}");
}

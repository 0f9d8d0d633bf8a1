//! The private cloud gateway through the engine, against real peers: vcsim, Debian's
//! tinyproxy as the agents' only way to the engine, and `spectro-gateway-agent` processes.
//! Prints the figures the closing note quotes (time to Running, per-call overhead, takeover
//! time after a kill).

mod common;

use std::time::Duration;

use spectro_core::clock::instant_now;

use common::vs::{self, inspector, vms};
use common::*;
use spectro_core::engine::status::Phase;
use spectro_core::model::{
    parse_documents, Format, GatewayState, PairingRequest, PrivateCloudGateway,
};
use spectro_core::secret::Secret;
use spectro_core::CoreError;
use spectro_gateway::hub::HubConfig;

const T: Duration = Duration::from_secs(120);

fn hub_config() -> HubConfig {
    HubConfig {
        replica_timeout: Duration::from_secs(3),
        connect_wait: Duration::from_secs(20),
        ..HubConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_pairs_through_the_proxy_provisions_survives_a_kill_and_upgrades() {
    let dir = tempfile::tempdir().unwrap();
    let Some(sim) = vs::vcsim(&["-clone-delay", "2500"]).await else {
        return;
    };
    let Some(proxy) = tinyproxy(dir.path()).await else {
        return;
    };
    let ctl = control(dir.path(), hub_config(), demo_config()).await;
    let engine = ctl.engine.clone();
    load_catalog(&engine).await;
    assert_eq!(state(&engine).await, GatewayState::Pending);

    // An agent that skips the proxy is refused at the door.
    let code = engine.gateway_pairing_code("gw").await.unwrap();
    let mut direct = start_agent(AgentSpec {
        control: &ctl,
        sim: &sim,
        gateway: "gw",
        replica: "direct",
        state_dir: dir.path().join("direct"),
        code: Some(code.code.expose().to_string()),
        proxy: None,
        version: None,
    });
    let status = tokio::time::timeout(T, direct.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success(), "the direct route must fail");
    assert!(ctl.endpoint.refused_connections() >= 1);
    assert_eq!(ctl.endpoint.accepted_connections(), 0);
    assert_eq!(state(&engine).await, GatewayState::Pending);

    // Pair replica a (an older agent) through the proxy.
    let started = instant_now();
    let state_a = dir.path().join("a");
    let mut a = start_agent(AgentSpec {
        control: &ctl,
        sim: &sim,
        gateway: "gw",
        replica: "a",
        state_dir: state_a.clone(),
        code: Some(code.code.expose().to_string()),
        proxy: Some(proxy.url()),
        version: Some("0.0.9"),
    });
    until("the gateway to run", T, || async {
        state(&engine).await == GatewayState::Running
    })
    .await
    .unwrap();
    let to_running = started.elapsed();
    eprintln!("agent start → gateway Running: {to_running:?}");
    let (_, st) = engine.gateway_status("gw").await.unwrap();
    assert_eq!(st.default_account.as_deref(), Some("gw-default"));
    assert_eq!(
        st.upgrade_available.as_deref(),
        Some(spectro_gateway::AGENT_VERSION),
        "an older agent raises the upgrade notification"
    );
    let cred = std::fs::read_to_string(state_a.join("credential")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(state_a.join("credential"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The code was used: pairing again with it is refused.
    let reuse = engine
        .pair_gateway(
            "gw",
            &PairingRequest {
                code: code.code.clone(),
                replica: "x".into(),
                version: "1".into(),
                vcenter_host: sim.host.clone(),
                username: sim.user.clone(),
                password: Secret::new(sim.password.clone()),
                insecure: true,
            },
        )
        .await;
    assert!(
        matches!(reuse, Err(CoreError::GatewayRefused { .. })),
        "{reuse:?}"
    );
    // The engine's side holds no vCenter session: the account's check goes through the agent.
    engine.verify_cloud_account("gw-default").await.unwrap();

    // A static-IP cluster through replica a.
    let edge = engine.create_cluster(&cluster("edge", 2)).await.unwrap();
    engine
        .wait_for_phase(edge, Phase::Running, T)
        .await
        .unwrap();
    check_vcenter(&sim, "edge-", 3).await;
    let handed = ctl.hub.stats().handed_out;
    assert!(handed > 0);

    // Per-call overhead: the same listing directly (an in-process vSphere provider) and
    // through the gateway (engine → hub → proxy → agent → vcsim and back).
    let rec = engine.cluster(edge).await.unwrap();
    let account = {
        let o = engine
            .store()
            .get_object(spectro_core::store::ObjectKind::CloudAccount, "gw-default")
            .await
            .unwrap()
            .unwrap();
        serde_json::from_value::<spectro_core::model::CloudAccount>(o.body).unwrap()
    };
    let ctx = spectro_core::provider::ClusterContext {
        cluster_id: edge,
        spec: rec.spec.clone(),
        profile: rec.profile.clone(),
        account,
        vip: None,
        image: None,
        deleting: false,
    };
    let direct = spectro_vsphere::VsphereProvider::new(spectro_vsphere::VsphereConfig::default());
    let remote = ctl.hub.provider(spectro_core::model::CloudType::Vsphere);
    use spectro_core::CloudProvider as _;
    direct.list_machines(&ctx).await.unwrap();
    let n = 20;
    let t0 = instant_now();
    for _ in 0..n {
        assert_eq!(direct.list_machines(&ctx).await.unwrap().len(), 3);
    }
    let direct_each = t0.elapsed() / n;
    let t0 = instant_now();
    for _ in 0..n {
        assert_eq!(remote.list_machines(&ctx).await.unwrap().len(), 3);
    }
    let remote_each = t0.elapsed() / n;
    eprintln!(
        "list_machines: direct {direct_each:?}, through the gateway {remote_each:?} (overhead {:?})",
        remote_each.saturating_sub(direct_each)
    );

    // Upgrade: the notification is applied; a cluster asked for meanwhile queues and runs
    // after; the running cluster is untouched.
    let target = engine.upgrade_gateway("gw").await.unwrap();
    assert_eq!(target, spectro_gateway::AGENT_VERSION);
    let late = engine.create_cluster(&cluster("late", 1)).await.unwrap();
    let queued = engine
        .wait_for(late, T, |r| {
            r.status
                .conditions
                .iter()
                .any(|c| c.reason == "GatewayUpgrading")
                || r.status.phase == Phase::Running
        })
        .await
        .unwrap();
    let upgraded = state(&engine).await == GatewayState::Running;
    assert!(
        upgraded || queued.status.infrastructure.is_none(),
        "a new cluster waits for the upgrade"
    );
    until("the upgrade to finish", T, || async {
        state(&engine).await == GatewayState::Running
    })
    .await
    .unwrap();
    let (_, st) = engine.gateway_status("gw").await.unwrap();
    assert!(st.upgrade_available.is_none());
    assert!(st
        .replicas
        .iter()
        .any(|r| r.id == "a" && r.connected && r.version == spectro_gateway::AGENT_VERSION));
    engine
        .wait_for_phase(late, Phase::Running, T)
        .await
        .unwrap();
    let events = engine
        .events(Some(spectro_core::ClusterId(st.id)), 0, 1000)
        .await
        .unwrap();
    let reasons: Vec<&str> = events.iter().map(|e| e.reason.as_str()).collect();
    for r in [
        "PairingCodeIssued",
        "GatewayPaired",
        "GatewayRunning",
        "GatewayUpgradeAvailable",
        "GatewayUpgrading",
        "GatewayUpgraded",
    ] {
        assert!(reasons.contains(&r), "{r} not in {reasons:?}");
    }
    for e in &events {
        assert!(!e.message.contains(code.code.expose()), "{}", e.message);
        assert!(!e.message.contains(cred.trim()), "{}", e.message);
    }

    // Resize 1 → 3 (3 → 1 refused naming the field); replicas b and c share the credential.
    let mut gw: PrivateCloudGateway = engine.gateway_status("gw").await.unwrap().0;
    gw.size = 3;
    engine.put_gateway(&gw).await.unwrap();
    gw.size = 1;
    let down = engine.put_gateway(&gw).await.unwrap_err().to_string();
    assert!(down.contains("size") && down.contains("1 to 3"), "{down}");
    let mut agents = vec![];
    for r in ["b", "c"] {
        let d = dir.path().join(r);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(state_a.join("credential"), d.join("credential")).unwrap();
        agents.push(start_agent(AgentSpec {
            control: &ctl,
            sim: &sim,
            gateway: "gw",
            replica: r,
            state_dir: d,
            code: None,
            proxy: Some(proxy.url()),
            version: None,
        }));
    }
    until("3 replicas", T, || async {
        ctl.hub.connected("gw").len() == 3
    })
    .await
    .unwrap();

    // Scale out; SIGKILL the replica running a clone (each takes 2.5 s in vcsim).
    let mut spec = engine.cluster(edge).await.unwrap().spec;
    spec.node_pools[1].size = 4;
    engine.update_cluster(edge, &spec).await.unwrap();
    let deadline = instant_now() + T;
    let victim = loop {
        let running = ctl.hub.running("gw");
        if let Some((_, _, r)) = running.iter().find(|(_, m, _)| *m == "create_machines") {
            break Some(r.clone());
        }
        assert!(instant_now() < deadline, "no clone in flight");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let victim = victim.unwrap();
    let killed_at = instant_now();
    let reassigned_before = ctl.hub.stats().reassigned;
    if victim == "a" {
        a.kill().await;
    } else {
        let i = usize::from(victim == "c");
        agents[i].kill().await;
    }
    until("the killed replica's call to move", T, || async {
        ctl.hub.stats().reassigned > reassigned_before
    })
    .await
    .unwrap();
    eprintln!(
        "replica {victim} killed mid-clone: its call taken over after {:?}",
        killed_at.elapsed()
    );
    engine
        .wait_for(edge, T, |r| {
            r.status.phase == Phase::Running && r.status.observed_generation == r.generation
        })
        .await
        .unwrap();
    check_vcenter(&sim, "edge-", 5).await;
    check_vcenter(&sim, "late-", 2).await;
    assert_eq!(ctl.hub.connected("gw").len(), 2);

    // Delete refused while clusters use the gateway, naming them.
    let refused = engine.delete_gateway("gw").await.unwrap_err().to_string();
    assert!(
        refused.contains("edge") && refused.contains("late"),
        "{refused}"
    );

    // Every connection came through the proxy.
    let connects = proxy.connects();
    assert!(
        connects.iter().all(|l| l.contains(common::ENGINE_ADDR)),
        "{connects:?}"
    );
    assert!(connects.len() >= 3, "{connects:?}");
    assert_eq!(ctl.endpoint.refused_connections(), 1);

    // Delete both clusters through the gateway: nothing left in vCenter.
    engine.delete_cluster(edge).await.unwrap();
    engine.delete_cluster(late).await.unwrap();
    engine
        .wait_for_phase(edge, Phase::Deleted, T)
        .await
        .unwrap();
    engine
        .wait_for_phase(late, Phase::Deleted, T)
        .await
        .unwrap();
    let vc = inspector(&sim).await;
    assert!(vms(&vc, "edge-").await.is_empty());
    assert!(vms(&vc, "late-").await.is_empty());
    vc.close().await;
    engine.delete_ip_pool("cp-pool").await.unwrap();
    engine.delete_ip_pool("worker-pool").await.unwrap();
    engine.delete_gateway("gw").await.unwrap();
    assert!(engine
        .store()
        .get_object(spectro_core::store::ObjectKind::CloudAccount, "gw-default")
        .await
        .unwrap()
        .is_none());
    // Its agents are refused from their next request and stop (exit code 3: refused).
    agents.push(a);
    for p in agents.iter_mut().filter(|p| p.replica != victim) {
        let status = tokio::time::timeout(Duration::from_secs(30), p.child.wait())
            .await
            .unwrap_or_else(|_| panic!("agent {} still running", p.replica))
            .unwrap();
        assert_eq!(status.code(), Some(3), "agent {}", p.replica);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_expired_reused_codes_and_foreign_credentials_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        std::sync::Arc::new(spectro_core::SqliteStore::open(dir.path().join("e.db")).unwrap());
    let clock = std::sync::Arc::new(spectro_core::clock::ManualClock::new(
        spectro_core::clock::system_now(),
    ));
    let hub = spectro_gateway::hub::GatewayHub::new(hub_config());
    let engine = spectro_core::Engine::builder(store)
        .provider(hub.provider(spectro_core::model::CloudType::Vsphere))
        .clock(clock.clone())
        .config(demo_config())
        .start()
        .await
        .unwrap();
    let endpoint = spectro_gateway::endpoint::GatewayEndpoint::new(hub, engine.clone());
    for name in ["gw", "other"] {
        let (docs, _) = parse_documents(
            &format!("kind: PrivateCloudGateway\nname: {name}\nsize: 1\n"),
            Format::Yaml,
        );
        engine.apply_all(&docs).await.unwrap();
    }
    let pair = |code: &str, replica: &str| {
        serde_json::json!({
            "code": code, "replica": replica, "version": "0.1.0",
            "vcenterHost": "vc.example:443", "username": "u", "password": "p",
        })
        .to_string()
    };
    let post = |gw: &'static str, op: &'static str, bearer: Option<String>, body: String| {
        let endpoint = endpoint.clone();
        async move {
            endpoint
                .handle(
                    "POST",
                    &format!("/v1/gateways/{gw}/{op}"),
                    bearer.as_deref(),
                    body.as_bytes(),
                )
                .await
        }
    };

    // No code issued yet: refused.
    assert_eq!(
        post("gw", "pair", None, pair("ABCDEFGH", "r")).await.status,
        401
    );
    // Wrong code: refused, attempts counted; the fifth wrong one revokes the code.
    let code = engine.gateway_pairing_code("gw").await.unwrap();
    for i in 1..=5 {
        let a = post("gw", "pair", None, pair("WRONGCODE", "r")).await;
        assert_eq!(a.status, 401, "{a:?}");
        assert!(a.body.contains("wrong pairing code"), "{}", a.body);
        if i == 5 {
            assert!(a.body.contains("revoked"), "{}", a.body);
        }
    }
    let revoked = post("gw", "pair", None, pair(code.code.expose(), "r")).await;
    assert_eq!(
        revoked.status, 401,
        "a revoked code no longer works: {revoked:?}"
    );
    // Expired code.
    let code = engine.gateway_pairing_code("gw").await.unwrap();
    clock.advance(Duration::from_secs(16 * 60));
    let expired = post("gw", "pair", None, pair(code.code.expose(), "r")).await;
    assert_eq!(expired.status, 401);
    assert!(expired.body.contains("expired"), "{}", expired.body);
    // A fresh code pairs (typed in lower case with a dash: normalized) ...
    let code = engine.gateway_pairing_code("gw").await.unwrap();
    let typed = format!("{}-{}", &code.code.expose()[..4], &code.code.expose()[4..]).to_lowercase();
    let ok = post("gw", "pair", None, pair(&typed, "r")).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let paired: serde_json::Value = serde_json::from_str(&ok.body).unwrap();
    let cred = paired["credential"].as_str().unwrap().to_string();
    assert!(cred.starts_with("spg_"));
    assert_eq!(state(&engine).await, GatewayState::Provisioning);
    // ... once: reused, refused.
    let reused = post("gw", "pair", None, pair(code.code.expose(), "r2")).await;
    assert_eq!(reused.status, 401);
    // Refusals that change nothing are recorded at most once a minute (the expired code's
    // was just recorded): a minute later, the reuse is.
    clock.advance(Duration::from_secs(61));
    let reused = post("gw", "pair", None, pair(code.code.expose(), "r2")).await;
    assert_eq!(reused.status, 401);
    assert!(reused.body.contains("already paired"), "{}", reused.body);
    // The credential is stored only as a hash.
    let raw = engine
        .store()
        .get_object(spectro_core::store::ObjectKind::GatewayStatus, "gw")
        .await
        .unwrap()
        .unwrap()
        .body
        .to_string();
    assert!(
        !raw.contains(&cred) && !raw.contains(code.code.expose()),
        "{raw}"
    );

    // The credential works for its gateway only.
    let hb = serde_json::json!({ "replica": "r", "version": "0.1.0" }).to_string();
    let own = post("gw", "heartbeat", Some(cred.clone()), hb.clone()).await;
    assert_eq!(own.status, 200, "{own:?}");
    assert_eq!(state(&engine).await, GatewayState::Running);
    let foreign = post("other", "heartbeat", Some(cred.clone()), hb.clone()).await;
    assert_eq!(foreign.status, 401, "{foreign:?}");
    clock.advance(Duration::from_secs(61));
    let garbage = post("gw", "heartbeat", Some("spg_0000".into()), hb.clone()).await;
    assert_eq!(garbage.status, 401);
    assert_eq!(post("gw", "calls/next", None, hb.clone()).await.status, 401);
    // Malformed bodies get field errors, never a panic.
    let bad = post(
        "gw",
        "heartbeat",
        Some(cred.clone()),
        "{\"replica\": 3}".into(),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("heartbeat"), "{}", bad.body);
    let bad = post("gw", "pair", None, "{}".into()).await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.body.contains("code") || bad.body.contains("missing field"),
        "{}",
        bad.body
    );

    // Every refusal is an event, and no event carries a code or the credential.
    let (_, st) = engine.gateway_status("gw").await.unwrap();
    let events = engine
        .events(Some(spectro_core::ClusterId(st.id)), 0, 1000)
        .await
        .unwrap();
    let refusals = events
        .iter()
        .filter(|e| e.reason == "PairingRefused")
        .count();
    assert!(refusals >= 8, "{events:?}");
    assert!(events.iter().any(|e| e.message.contains("already paired")));
    assert!(events.iter().any(|e| e.reason == "CredentialRefused"));
    let (_, other) = engine.gateway_status("other").await.unwrap();
    let other_events = engine
        .events(Some(spectro_core::ClusterId(other.id)), 0, 100)
        .await
        .unwrap();
    assert!(other_events.iter().any(|e| e.reason == "CredentialRefused"));
    for e in events.iter().chain(&other_events) {
        assert!(!e.message.contains(&cred), "{}", e.message);
    }

    // Reset: back to Pending, the credential revoked, a new code issued.
    let fresh = engine.reset_gateway("gw").await.unwrap();
    assert_eq!(state(&engine).await, GatewayState::Pending);
    assert_eq!(post("gw", "heartbeat", Some(cred), hb).await.status, 401);
    assert_eq!(
        post("gw", "pair", None, pair(fresh.code.expose(), "r"))
            .await
            .status,
        200
    );
    // Upgrade without a notification is refused with the state.
    let e = engine.upgrade_gateway("gw").await.unwrap_err().to_string();
    assert!(e.contains("upgrade") && e.contains("gw"), "{e}");
}

//! A private cloud gateway end to end, on this machine: starts vcsim (vCenter simulator),
//! Debian's tinyproxy and the engine's gateway endpoint, shows the pairing code, starts agent
//! processes that pair and connect through the proxy, provisions a static-IP cluster through
//! them (killing the agent running a clone on the way), deletes it, and exits non-zero if
//! anything is left in vcsim or any connection bypassed the proxy.
//!
//!     cargo run --example gateway-demo
//!
//! Needs Go (vcsim is built from `tests/peers/vcsim`, or `SPECTRO_VCSIM` names a binary) and
//! Debian's `tinyproxy`. The agents are this program run again as `gateway-demo agent ...`
//! (the same code as the `spectro-gateway-agent` binary).

#[path = "../spectro-gateway/tests/common/mod.rs"]
mod common;

use std::process::ExitCode;
use std::time::Duration;

use spectro::clock::instant_now;

use common::vs::{self, inspector, vms};
use common::*;
use spectro::engine::status::Phase;
use spectro::model::GatewayState;

const T: Duration = Duration::from_secs(180);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("agent") {
        return ExitCode::from(spectro_gateway::agent::main_with_args(args) as u8);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match rt.block_on(demo()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway-demo: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn demo() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let sim = vs::vcsim(&["-clone-delay", "1500"])
        .await
        .ok_or("vcsim is missing")?;
    println!("vcsim (vCenter) at {}", sim.host);
    let proxy = tinyproxy(dir.path())
        .await
        .ok_or("tinyproxy is missing (apt-get install tinyproxy)")?;
    println!(
        "tinyproxy at 127.0.0.1:{} (connects out from {PROXY_EGRESS})",
        proxy.port
    );
    let ctl = control(dir.path(), Default::default(), demo_config()).await;
    println!(
        "engine gateway endpoint at {} (accepts only {PROXY_EGRESS})",
        ctl.url
    );
    let engine = ctl.engine.clone();
    load_catalog(&engine).await;
    let code = engine
        .gateway_pairing_code("gw")
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "gateway `gw` is Pending; pairing code {} (valid until {})",
        code.code.expose(),
        code.expires_at
    );

    let started = instant_now();
    let state_a = dir.path().join("a");
    let mut agents = vec![start_agent(AgentSpec {
        control: &ctl,
        sim: &sim,
        gateway: "gw",
        replica: "a",
        state_dir: state_a.clone(),
        code: Some(code.code.expose().to_string()),
        proxy: Some(proxy.url()),
        version: None,
    })];
    until("the gateway to run", T, || async {
        state(&engine).await == GatewayState::Running
    })
    .await?;
    println!(
        "agent a paired through the proxy: gateway Running after {:?}",
        started.elapsed()
    );
    let mut gw = engine
        .gateway_status("gw")
        .await
        .map_err(|e| e.to_string())?
        .0;
    gw.size = 3;
    engine.put_gateway(&gw).await.map_err(|e| e.to_string())?;
    for r in ["b", "c"] {
        let d = dir.path().join(r);
        std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
        std::fs::copy(state_a.join("credential"), d.join("credential"))
            .map_err(|e| e.to_string())?;
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
    until("3 connected replicas", T, || async {
        ctl.hub.connected("gw").len() == 3
    })
    .await?;
    println!(
        "gateway resized to 3: replicas {:?}",
        ctl.hub.connected("gw")
    );

    let id = engine
        .create_cluster(&cluster("demo", 3))
        .await
        .map_err(|e| e.to_string())?;
    println!("cluster `demo` (1 control plane + 3 workers, static IPs) created");
    // Kill the agent running a clone.
    let deadline = instant_now() + T;
    let victim = loop {
        if let Some((_, _, r)) = ctl
            .hub
            .running("gw")
            .into_iter()
            .find(|(_, m, _)| *m == "create_machines")
        {
            break r;
        }
        if instant_now() > deadline {
            return Err("no clone was ever in flight".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    if let Some(p) = agents.iter_mut().find(|p| p.replica == victim) {
        p.kill().await;
    }
    let killed = instant_now();
    println!("SIGKILLed agent {victim} in the middle of a clone");
    until("the call to move to another replica", T, || async {
        ctl.hub.stats().reassigned > 0
    })
    .await?;
    println!(
        "its call went to another replica after {:?}",
        killed.elapsed()
    );
    engine
        .wait_for_phase(id, Phase::Running, T)
        .await
        .map_err(|e| e.to_string())?;
    check_vcenter(&sim, "demo-", 4).await;
    println!("cluster Running: 4 VMs in vCenter, no duplicate, no address handed out twice");

    engine.delete_cluster(id).await.map_err(|e| e.to_string())?;
    engine
        .wait_for_phase(id, Phase::Deleted, T)
        .await
        .map_err(|e| e.to_string())?;
    let vc = inspector(&sim).await;
    let left = vms(&vc, "demo").await;
    vc.close().await;
    let connects = proxy.connects();
    println!(
        "cluster deleted; {} VM(s) left; {} CONNECT(s) in the proxy's log; {} connection(s) \
         accepted by the endpoint, {} refused (bypassing the proxy)",
        left.len(),
        connects.len(),
        ctl.endpoint.accepted_connections(),
        ctl.endpoint.refused_connections()
    );
    if !left.is_empty() {
        return Err(format!("left in vCenter: {:?}", left.keys()));
    }
    if ctl.endpoint.refused_connections() > 0 {
        return Err("a connection bypassed the proxy".into());
    }
    if connects.is_empty() || !connects.iter().all(|l| l.contains(ENGINE_ADDR)) {
        return Err(format!("unexpected proxy log: {connects:?}"));
    }
    println!("OK");
    Ok(())
}

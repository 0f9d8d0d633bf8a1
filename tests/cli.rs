//! The `spectro` command line end to end, every command its own process on one SQLite file
//! and the simulated cloud: `apply` (and a dry run), `run` in the background, `get`,
//! `describe`, `scale --wait`, `events`, `kubeconfig`, `delete --wait`; exit codes and
//! error messages naming the file, document and field. Asserts on the JSON output.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

const SPECS: &str = r#"
kind: ClusterProfile
name: base
version: 1.0.0
cloud: aws
packs:
  - { name: ubuntu, layer: os, version: "22.04" }
  - { name: kubernetes, layer: kubernetes, version: 1.30.4 }
  - { name: calico, layer: cni, version: 3.28.0 }
---
kind: CloudAccount
name: sim
credentials:
  aws: { accessKeyId: AKIACLITEST000000000, secretAccessKey: cli-secret-never-shown }
---
kind: Cluster
name: shop
profile: { name: base, version: 1.0.0 }
cloudAccount: sim
cloud: { aws: { region: us-east-1 } }
nodePools:
  - { name: master, role: controlPlane, size: 1, instanceType: m5.large, availabilityZones: [us-east-1a] }
  - { name: workers, role: worker, size: 2, instanceType: m5.large, availabilityZones: [us-east-1a] }
"#;

fn spectro(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spectro"))
        .arg("--store")
        .arg(store)
        .arg("--sim")
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("spectro runs")
}

fn json(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn phase_of(store: &Path, name: &str) -> Option<String> {
    let list = json(&spectro(store, &["get", "clusters", "-o", "json"]));
    list.as_array()?
        .iter()
        .find(|c| c["name"] == name)
        .and_then(|c| c["status"]["phase"].as_str().map(str::to_string))
}

fn wait_phase(store: &Path, name: &str, phase: &str) {
    for _ in 0..240 {
        if phase_of(store, name).as_deref() == Some(phase) {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{name} never reached {phase}: {:?}", phase_of(store, name));
}

#[test]
fn the_command_line_across_processes_on_one_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("spectro.db");
    let file = dir.path().join("shop.yaml");
    std::fs::write(&file, SPECS).unwrap();
    let f = file.to_str().unwrap();

    // A dry run writes nothing and says what would happen.
    let plan = json(&spectro(
        &store,
        &["apply", "-f", f, "--dry-run", "-o", "json"],
    ));
    let shop = plan
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "shop")
        .unwrap();
    assert_eq!(shop["would"], "create", "{plan}");
    assert!(json(&spectro(&store, &["get", "clusters", "-o", "json"]))
        .as_array()
        .unwrap()
        .is_empty());

    // apply in one process...
    let applied = json(&spectro(&store, &["apply", "-f", f, "-o", "json"]));
    let kinds: Vec<&str> = applied
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["CloudAccount", "ClusterProfile", "Cluster"]);
    assert!(applied
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["action"] == "created"));
    // ...again: nothing changes.
    let again = json(&spectro(&store, &["apply", "-f", f, "-o", "json"]));
    assert!(
        again
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["action"] == "unchanged"),
        "{again}"
    );
    assert_eq!(phase_of(&store, "shop").as_deref(), Some("pending"));

    // ...the engine in another, in the background...
    let run = Running(
        Command::new(env!("CARGO_BIN_EXE_spectro"))
            .arg("--store")
            .arg(&store)
            .args(["--sim", "run", "--lease-ttl", "3"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_phase(&store, "shop", "running");

    // ...and a third looks at it.
    let d = json(&spectro(
        &store,
        &["describe", "cluster", "shop", "-o", "json"],
    ));
    assert_eq!(d["status"]["phase"], "running");
    assert_eq!(d["status"]["pools"]["workers"]["ready"], 2, "{d}");
    assert!(d["blockers"].as_array().unwrap().is_empty(), "{d}");
    let text = spectro(&store, &["describe", "cluster", "shop"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("Phase:        running"), "{text}");
    assert!(text.contains("workers"), "{text}");
    assert!(
        text.contains("Machines:") && text.contains("running"),
        "{text}"
    );
    // No secret in what the command line shows.
    let accounts = spectro(&store, &["get", "accounts", "-o", "json"]);
    assert!(accounts.status.success());
    for out in [&accounts.stdout, &d.to_string().into_bytes()] {
        assert!(
            !String::from_utf8_lossy(out).contains("cli-secret-never-shown"),
            "a secret was shown"
        );
    }

    // Scale and wait: the running engine in the other process acts on it.
    let o = spectro(
        &store,
        &["scale", "shop", "workers", "4", "--wait", "--timeout", "60"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let d = json(&spectro(
        &store,
        &["describe", "cluster", "shop", "-o", "json"],
    ));
    assert_eq!(d["status"]["pools"]["workers"]["ready"], 4, "{d}");
    let machines = d["status"]["machines"].as_array().unwrap();
    assert_eq!(machines.len(), 5, "{d}");
    assert!(
        machines
            .iter()
            .all(|m| m["state"] == "running" && m["ready"] == true && m["zone"] == "us-east-1a"),
        "{d}"
    );
    assert_eq!(
        machines.iter().filter(|m| m["pool"] == "workers").count(),
        4
    );

    // Events, one JSON object per line.
    let ev = spectro(&store, &["events", "shop", "-o", "json"]);
    assert!(ev.status.success());
    let events: Vec<Value> = String::from_utf8_lossy(&ev.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.len() >= 3, "{events:?}");
    assert!(events.iter().all(|e| e["reason"].is_string()));

    // The kubeconfig of the running cluster.
    let k = spectro(&store, &["kubeconfig", "shop"]);
    assert!(k.status.success(), "{}", String::from_utf8_lossy(&k.stderr));
    assert!(String::from_utf8_lossy(&k.stdout).contains("apiVersion: v1"));

    // Errors a script can rely on.
    let o = spectro(&store, &["describe", "cluster", "nope"]);
    assert_eq!(o.status.code(), Some(3), "not found");
    let o = spectro(&store, &["scale", "shop", "gpu", "2"]);
    assert_eq!(o.status.code(), Some(3), "no such pool");
    assert!(String::from_utf8_lossy(&o.stderr).contains("master, workers"));
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        SPECS.replace("size: 2, instanceType", "size: -2, instanceType"),
    )
    .unwrap();
    let o = spectro(&store, &["apply", "-f", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4), "invalid input");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.yaml") && err.contains("document 3") && err.contains("nodePools[1].size"),
        "{err}"
    );
    let o = spectro(&store, &["abort", "shop"]);
    assert_eq!(
        o.status.code(),
        Some(5),
        "abort of a provisioned cluster is refused"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_spectro"))
        .args(["get", "nothing"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "bad command line");

    // Delete and wait.
    let o = spectro(&store, &["delete", "shop", "--wait", "--timeout", "60"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        phase_of(&store, "shop"),
        None,
        "deleted clusters are not listed"
    );
    drop(run);
}

//! What vcsim cannot show: the guest side. The load balancer's cloud-config passes
//! `cloud-init schema` (Debian's cloud-init, installed by scripts/test), and the node
//! metadata is the netplan v2 network cloud-init's VMware datasource reads.

use std::process::Command;

use base64::Engine as _;
use spectro_core::provider::NodeNetwork;
use spectro_vsphere::guestinfo;

fn cloud_init() -> bool {
    let ok = Command::new("cloud-init").arg("--version").output().is_ok();
    if !ok {
        assert!(
            std::env::var("SPECTRO_REQUIRE_TOOLS").is_err(),
            "cloud-init is required: apt-get install cloud-init"
        );
        eprintln!("SKIPPED: cloud-init not installed (Debian package cloud-init)");
    }
    ok
}

#[test]
fn load_balancer_cloud_config_passes_cloud_init_schema() {
    if !cloud_init() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for keys in [
        vec![],
        vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJq3 ops@example".to_string()],
    ] {
        let text = guestinfo::load_balancer_user_data("edge", &keys);
        let f = dir.path().join("lb.yaml");
        std::fs::write(&f, &text).unwrap();
        let out = Command::new("cloud-init")
            .args(["schema", "--config-file"])
            .arg(&f)
            .output()
            .unwrap();
        let msg = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && msg.contains("Valid"),
            "{msg}\n{text}"
        );
    }
}

#[test]
fn static_metadata_is_netplan_v2_with_the_pool_settings() {
    let n = NodeNetwork {
        address: "10.10.1.7".parse().unwrap(),
        prefix: 24,
        gateway: "10.10.1.1".parse().unwrap(),
        nameservers: vec!["10.10.0.2".parse().unwrap(), "10.10.0.3".parse().unwrap()],
    };
    let entries = guestinfo::entries("edge-workers-abc123", b"#cloud-config\n{}\n", Some(&n));
    let get = |k: &str| {
        entries
            .iter()
            .find(|(x, _)| x == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get("guestinfo.metadata.encoding"), "base64");
    let md = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(get("guestinfo.metadata"))
            .unwrap(),
    )
    .unwrap();
    let v: serde_json::Value = serde_norway::from_str(&md).unwrap();
    assert_eq!(v["instance-id"], "edge-workers-abc123");
    assert_eq!(v["network"]["version"], 2);
    let eth = &v["network"]["ethernets"]["id0"];
    assert_eq!(eth["addresses"], serde_json::json!(["10.10.1.7/24"]));
    assert_eq!(eth["routes"][0]["to"], "default");
    assert_eq!(eth["nameservers"]["addresses"][1], "10.10.0.3");
}

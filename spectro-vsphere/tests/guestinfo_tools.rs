//! What vcsim cannot show: the guest side, checked by the real tools. The load balancer's
//! cloud-config and the control-plane user data with kube-vip pass `cloud-init schema`
//! (Debian's cloud-init), the load balancer's HAProxy configuration with backends written by
//! its own sync script passes `haproxy -c` (Debian's haproxy), and the node metadata is the
//! netplan v2 network cloud-init's VMware datasource reads. scripts/test installs the tools.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use serde_json::Value;
use spectro_core::bootstrap::{
    kube_vip, proxy_cloud_config, user_data_with_vip, ClusterPki, KubernetesSettings, NodeBootstrap,
};
use spectro_core::model::{parse_documents, Cluster, ClusterProfile, Document, Format};
use spectro_core::provider::{BootstrapRole, NodeNetwork};
use spectro_core::testing::peer_missing;
use spectro_vsphere::guestinfo;

/// Where `tool` is installed (PATH, or the sbin directories Debian puts daemons in); reports
/// it missing otherwise (the test fails unless skipping is allowed).
fn tool(tool: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file());
    if found.is_none() {
        peer_missing(tool, &format!("apt-get install {package}"));
    }
    found
}

/// Runs `cloud-init schema` on `text`; panics with its output unless valid.
fn assert_cloud_init_valid(cloud_init: &Path, dir: &Path, name: &str, text: &str) {
    let f = dir.join(format!("{name}.yaml"));
    std::fs::write(&f, text).unwrap();
    let out = Command::new(cloud_init)
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
        "{name}: {msg}\n{text}"
    );
}

fn cloud_config(text: &str) -> Value {
    serde_norway::from_str(text.strip_prefix("#cloud-config\n").expect("#cloud-config")).unwrap()
}

/// The content of the file `path` a cloud-config writes.
fn written(doc: &Value, path: &str) -> Option<String> {
    doc["write_files"]
        .as_array()?
        .iter()
        .find(|f| f["path"] == path)
        .map(|f| f["content"].as_str().unwrap().to_string())
}

/// The static-IP test cluster (with a proxy) and the test profile.
fn static_cluster() -> (Cluster, ClusterProfile) {
    let text = format!(
        "{}---{}",
        common::documents("vc.example.org"),
        common::STATIC_CLUSTER
    );
    let (docs, failures) = parse_documents(&text, Format::Yaml);
    assert!(failures.is_empty(), "{failures:?}");
    let mut cluster = None;
    let mut profile = None;
    for d in docs {
        match d {
            Document::Cluster(c) => cluster = Some(c),
            Document::ClusterProfile(p) => profile = Some(p),
            _ => {}
        }
    }
    let mut cluster = cluster.unwrap();
    cluster.proxy = Some(spectro_core::model::ProxySettings {
        http_proxy: "http://proxy.example.org:3128".into(),
        https_proxy: "http://proxy.example.org:3128".into(),
        no_proxy: vec!["vc.example.org".into()],
    });
    (cluster, profile.unwrap())
}

#[test]
fn load_balancer_cloud_config_passes_cloud_init_schema() {
    let Some(cloud_init) = tool("cloud-init", "cloud-init") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (cluster, profile) = static_cluster();
    let k8s = KubernetesSettings::from_cluster(&cluster, &profile).unwrap();
    let proxy = proxy_cloud_config(&cluster, &k8s, None, &[]).unwrap();
    for (name, keys, proxy) in [
        ("plain", vec![], None),
        (
            "ssh-proxy",
            vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJq3 ops@example".to_string()],
            Some(&proxy),
        ),
    ] {
        let text = guestinfo::load_balancer_user_data("edge", &keys, proxy);
        assert_cloud_init_valid(&cloud_init, dir.path(), name, &text);
        let doc = cloud_config(&text);
        if let Some(proxy) = proxy {
            // The proxy the nodes get: apt and the environment, same NO_PROXY.
            assert_eq!(doc["apt"]["http_proxy"], "http://proxy.example.org:3128");
            assert_eq!(doc["apt"]["https_proxy"], "http://proxy.example.org:3128");
            let env = written(&doc, "/etc/environment").expect("/etc/environment");
            assert!(env.contains("HTTPS_PROXY=http://proxy.example.org:3128\n"));
            assert!(env.contains(&format!("NO_PROXY={}\n", proxy.no_proxy)));
            assert!(proxy.no_proxy.contains("vc.example.org"));
        } else {
            assert!(doc.get("apt").is_none() && written(&doc, "/etc/environment").is_none());
        }
    }
}

#[test]
fn load_balancer_haproxy_config_with_backends_passes_haproxy_check() {
    let Some(haproxy) = tool("haproxy", "haproxy") else {
        return;
    };
    let doc = cloud_config(&guestinfo::load_balancer_user_data("edge", &[], None));
    let cfg_text = written(&doc, "/etc/haproxy/haproxy.cfg").expect("haproxy.cfg");
    let sync = written(&doc, "/usr/local/bin/spectro-lb-sync").expect("sync script");
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    // The guest's tools, played: vmware-rpctool answers the backends guestinfo, systemctl
    // records the reload.
    let stub = |name: &str, body: &str| {
        let p = bin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    let backends = dir.path().join("backends");
    stub("vmware-rpctool", &format!("cat {}", backends.display()));
    let reloads = dir.path().join("reloads");
    stub(
        "systemctl",
        &format!("echo \"$@\" >> {}", reloads.display()),
    );
    std::fs::write(dir.path().join("sync.sh"), &sync).unwrap();
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg, &cfg_text).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let sync_and_check = |list: &str| {
        std::fs::write(&backends, list).unwrap();
        let out = Command::new("sh")
            .arg(dir.path().join("sync.sh"))
            .env("PATH", &path)
            .env("SPECTRO_LB_CFG", &cfg)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = std::fs::read_to_string(&cfg).unwrap();
        let out = Command::new(&haproxy)
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .output()
            .unwrap();
        let msg = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "haproxy -c: {msg}\n{text}");
        text
    };
    let three = sync_and_check("10.10.0.11:6443\n10.10.0.12:6443\n10.10.0.13:6443\n");
    assert!(
        three.contains("    server cp1 10.10.0.11:6443 check\n"),
        "{three}"
    );
    assert!(
        three.contains("    server cp3 10.10.0.13:6443 check\n"),
        "{three}"
    );
    let one = sync_and_check("10.10.0.12:6443");
    assert!(one.contains("server cp1 10.10.0.12:6443 check") && !one.contains("cp2"));
    assert!(one.starts_with(&cfg_text), "the fixed part is kept");
    // Unchanged backends: no reload.
    let before = std::fs::read_to_string(&reloads).unwrap();
    assert_eq!(before.lines().count(), 2, "{before}");
    sync_and_check("10.10.0.12:6443");
    assert_eq!(std::fs::read_to_string(&reloads).unwrap(), before);
    // No backend yet (first boot): still a valid configuration.
    sync_and_check("");
}

#[test]
fn control_plane_user_data_runs_kube_vip_and_passes_cloud_init_schema() {
    let Some(cloud_init) = tool("cloud-init", "cloud-init") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (cluster, profile) = static_cluster();
    let pki = ClusterPki::generate().unwrap();
    let vip = "10.10.0.10".parse().unwrap();
    for role in [
        BootstrapRole::Init,
        BootstrapRole::JoinControlPlane,
        BootstrapRole::JoinWorker,
    ] {
        let nb = NodeBootstrap {
            cluster: &cluster,
            profile: &profile,
            pki: &pki,
            endpoint: "10.10.0.10:6443",
            role,
        };
        let text = user_data_with_vip(&nb, Some(vip)).unwrap();
        assert_cloud_init_valid(&cloud_init, dir.path(), &format!("{role:?}"), &text);
        let doc = cloud_config(&text);
        let manifest = written(&doc, kube_vip::MANIFEST_PATH);
        if role == BootstrapRole::JoinWorker {
            assert!(manifest.is_none(), "workers do not serve the VIP");
            continue;
        }
        let pod: Value = serde_norway::from_str(&manifest.expect("kube-vip manifest")).unwrap();
        assert_eq!(pod["kind"], "Pod");
        assert_eq!(pod["spec"]["hostNetwork"], true);
        let c = &pod["spec"]["containers"][0];
        assert_eq!(c["image"], kube_vip::DEFAULT_IMAGE);
        let env = |n: &str| {
            c["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == n)
                .and_then(|e| e["value"].as_str())
                .map(str::to_string)
        };
        assert_eq!(env("address").as_deref(), Some("10.10.0.10"));
        assert_eq!(env("port").as_deref(), Some("6443"));
        assert_eq!(env("vip_arp").as_deref(), Some("true"));
        assert_eq!(env("cp_enable").as_deref(), Some("true"));
        assert_eq!(env("vip_leaderelection").as_deref(), Some("true"));
        // The interface is the one the node's netplan names.
        let md: Value = serde_norway::from_str(&guestinfo::metadata("n", None)).unwrap();
        let nic = md["network"]["ethernets"]["id0"]["set-name"]
            .as_str()
            .unwrap();
        assert_eq!(env("vip_interface").as_deref(), Some(nic));
        // Kubernetes 1.30: super-admin.conf while kubeadm init runs, admin.conf after.
        let kubeconfig = pod["spec"]["volumes"][0]["hostPath"]["path"].clone();
        let runcmd = serde_json::to_string(&doc["runcmd"]).unwrap();
        let kubeadm = runcmd.find("\"kubeadm\"").unwrap();
        if role == BootstrapRole::Init {
            assert_eq!(kubeconfig, kube_vip::SUPER_ADMIN_CONF);
            let back = runcmd
                .find(&format!("path: {}", kube_vip::ADMIN_CONF))
                .expect("switch back to admin.conf");
            assert!(back > kubeadm, "after kubeadm init: {runcmd}");
        } else {
            assert_eq!(kubeconfig, kube_vip::ADMIN_CONF);
            assert!(!runcmd.contains("super-admin"), "{runcmd}");
        }
    }
    // A cluster without a VIP (DHCP, a cloud load balancer) gets no kube-vip.
    let nb = NodeBootstrap {
        cluster: &cluster,
        profile: &profile,
        pki: &pki,
        endpoint: "lb.example.org:6443",
        role: BootstrapRole::Init,
    };
    let text = user_data_with_vip(&nb, None).unwrap();
    assert!(written(&cloud_config(&text), kube_vip::MANIFEST_PATH).is_none());
}

#[test]
fn kube_vip_image_and_interface_follow_the_kubernetes_pack_values() {
    let (mut cluster, profile) = static_cluster();
    cluster.pack_values.insert(
        "kubernetes".into(),
        "kubeVip:\n  image: registry.lab/kube-vip:v0.8.9\n  interface: ens192\n".into(),
    );
    let pki = ClusterPki::generate().unwrap();
    let text = user_data_with_vip(
        &NodeBootstrap {
            cluster: &cluster,
            profile: &profile,
            pki: &pki,
            endpoint: "10.10.0.10:6443",
            role: BootstrapRole::JoinControlPlane,
        },
        Some("10.10.0.10".parse().unwrap()),
    )
    .unwrap();
    let pod: Value =
        serde_norway::from_str(&written(&cloud_config(&text), kube_vip::MANIFEST_PATH).unwrap())
            .unwrap();
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["image"], "registry.lab/kube-vip:v0.8.9");
    assert!(c["env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "vip_interface" && e["value"] == "ens192"));
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

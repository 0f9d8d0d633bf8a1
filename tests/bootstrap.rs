//! Node bootstrap checked by the real tools: every user data passes `cloud-init schema`,
//! `openssl` accepts the PKI and computes the same discovery hash, kubeadm YAML matches
//! golden files per API version, and the engine hands each role its user data.
//!
//! The tools come from Debian's `cloud-init` and `openssl` packages (scripts/test installs
//! them; a missing tool fails the test unless SPECTRO_SKIP_MISSING_PEERS=1 is set).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use spectro::bootstrap::kubeadm::{init_config, join_config, KubeadmApi, KubernetesSettings};
use spectro::bootstrap::{encode_user_data, user_data, ClusterPki, NodeBootstrap};
use spectro::engine::status::Phase;
use spectro::model::document::{from_text, Format};
use spectro::model::{Cluster, ClusterProfile, ProxySettings};
use spectro::provider::BootstrapRole;
use spectro::sim::SimConfig;
use spectro::CoreError;

fn tool(name: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        spectro::testing::peer_missing(name, &format!("install Debian's {name} package"));
    }
    found
}

fn run(cmd: &str, dir: &Path) -> (bool, String) {
    let o = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

const VSPHERE: &str = r#"
name: edge
profile: { name: demo, version: 1.0.0 }
cloudAccount: vs
cloud:
  vsphere:
    datacenter: DC0
    folder: /DC0/vm
    sshKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJq3Qm7yEXAMPLEKEYxxxxxxxxxxxxxxxxxxxxxxx ops@example"]
    ntpServers: [ntp.example.org, 10.0.0.4]
nodePools:
  - { name: master, role: controlPlane, size: 3, cpu: 2, memoryGb: 4, diskSizeGb: 40, placements: [{computeCluster: C0, datastore: DS0, network: VM Network}] }
  - { name: workers, role: worker, size: 2, cpu: 2, memoryGb: 4, diskSizeGb: 40, placements: [{computeCluster: C0, datastore: DS0, network: VM Network}] }
"#;

fn manifests_profile() -> ClusterProfile {
    let mut p = profile();
    p.packs[2].manifests =
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: calico-system\n".into();
    p
}

fn variants() -> Vec<(String, Cluster, ClusterProfile)> {
    let plain = cluster("plain");
    let mut proxied = from_text::<Cluster>(VSPHERE, Format::Yaml).unwrap();
    proxied.proxy = Some(ProxySettings {
        http_proxy: "http://user:pw@proxy.example.org:3128".into(),
        https_proxy: "http://user:pw@proxy.example.org:3128".into(),
        no_proxy: vec!["vcenter.example.org".into(), "10.10.0.0/16".into()],
    });
    let mut byo = manifests_profile();
    byo.packs[0]
        .annotations
        .insert("image".into(), "ami-0123456789abcdef0".into());
    byo.packs[0]
        .annotations
        .insert("skipK8sInstall".into(), "false".into());
    let mut v131 = manifests_profile();
    v131.packs[1].version = "1.31.1".into();
    vec![
        ("aws-plain".into(), plain, profile()),
        (
            "vsphere-proxy-ntp-ssh".into(),
            proxied.clone(),
            manifests_profile(),
        ),
        ("byo-image".into(), cluster("byo"), byo),
        ("v1beta4".into(), proxied, v131),
    ]
}

#[test]
fn every_user_data_passes_cloud_init_schema() {
    if !tool("cloud-init") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = ClusterPki::generate().unwrap();
    let mut checked = 0;
    for (name, c, p) in variants() {
        for role in [
            BootstrapRole::Init,
            BootstrapRole::JoinControlPlane,
            BootstrapRole::JoinWorker,
        ] {
            let text = user_data(&NodeBootstrap {
                cluster: &c,
                profile: &p,
                pki: &pki,
                endpoint: "api.example.internal:6443",
                role,
            })
            .unwrap();
            let f = dir.path().join(format!("{name}-{role:?}.yaml"));
            std::fs::write(&f, &text).unwrap();
            let (ok, out) = run(
                &format!("cloud-init schema --config-file {}", f.display()),
                dir.path(),
            );
            assert!(ok, "{name} {role:?}: {out}\n{text}");
            assert!(out.contains("Valid"), "{out}");
            // Roles get what they need and nothing more.
            let has = |s: &str| text.contains(s);
            match role {
                BootstrapRole::Init => {
                    assert!(has("kubeadm") && has("init") && has("InitConfiguration"));
                    assert!(has("/etc/kubernetes/pki/ca.key"));
                }
                BootstrapRole::JoinControlPlane => {
                    assert!(
                        has("JoinConfiguration")
                            && has("controlPlane: {}")
                            && has("/etc/kubernetes/pki/ca.key")
                    );
                }
                BootstrapRole::JoinWorker => {
                    assert!(has("JoinConfiguration") && has("caCertHashes"));
                    assert!(!has("PRIVATE KEY"), "workers never receive CA keys");
                }
            }
            if name.starts_with("vsphere") || name == "v1beta4" {
                assert!(has("ntp.example.org") && has("ssh-ed25519") && has("NO_PROXY="));
                assert!(
                    has("192.168.0.0/16") && has("api.example.internal"),
                    "pod CIDR and endpoint in NO_PROXY"
                );
            }
            if name == "byo-image" {
                assert!(has("spectro-install-kubernetes.sh") && has("v1.30"));
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 12);
}

#[test]
fn openssl_accepts_the_pki_and_agrees_on_the_discovery_hash() {
    if !tool("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = ClusterPki::generate().unwrap();
    for (f, c) in [
        ("ca.crt", &pki.ca.cert_pem),
        ("etcd-ca.crt", &pki.etcd_ca.cert_pem),
        ("front-proxy-ca.crt", &pki.front_proxy_ca.cert_pem),
        ("admin.crt", &pki.admin.cert_pem),
    ] {
        std::fs::write(d.join(f), c).unwrap();
    }
    std::fs::write(d.join("ca.key"), pki.ca.key_pem.expose()).unwrap();
    std::fs::write(d.join("sa.pub"), &pki.service_account_pub).unwrap();
    std::fs::write(d.join("sa.key"), pki.service_account_key.expose()).unwrap();

    let (ok, out) = run("openssl verify -CAfile ca.crt admin.crt", d);
    assert!(ok && out.contains("admin.crt: OK"), "{out}");
    let (ok, _) = run("openssl verify -CAfile etcd-ca.crt admin.crt", d);
    assert!(
        !ok,
        "the admin certificate is signed by the cluster CA only"
    );
    for ca in ["ca.crt", "etcd-ca.crt", "front-proxy-ca.crt"] {
        let (ok, out) = run(&format!("openssl x509 -in {ca} -noout -text"), d);
        assert!(ok && out.contains("CA:TRUE"), "{ca}: {out}");
        assert!(out.contains("Certificate Sign"), "{ca}: {out}");
    }
    let (_, out) = run(
        "openssl x509 -in admin.crt -noout -subject -ext extendedKeyUsage",
        d,
    );
    assert!(
        out.contains("O = system:masters") && out.contains("TLS Web Client Authentication"),
        "{out}"
    );
    // The key matches its certificate, the service-account pair matches.
    let (_, a) = run("openssl x509 -in ca.crt -noout -pubkey", d);
    let (_, b) = run("openssl pkey -in ca.key -pubout", d);
    assert_eq!(a, b);
    let (_, b) = run("openssl pkey -in sa.key -pubout", d);
    assert_eq!(std::fs::read_to_string(d.join("sa.pub")).unwrap(), b);
    // kubeadm's documented recipe for --discovery-token-ca-cert-hash.
    let (ok, out) = run(
        "openssl x509 -pubkey -in ca.crt | openssl pkey -pubin -outform der | openssl dgst -sha256 -hex | sed 's/^.* //'",
        d,
    );
    assert!(ok, "{out}");
    assert_eq!(
        pki.ca_cert_hash().unwrap(),
        format!("sha256:{}", out.trim())
    );
    // Tokens look like kubeadm's.
    let t = pki.bootstrap_token.expose();
    assert_eq!(t.len(), 23);
    assert_eq!(&t[6..7], ".");
    assert!(t
        .bytes()
        .all(|b| b == b'.' || b.is_ascii_lowercase() || b.is_ascii_digit()));
    assert!(
        !format!("{pki:?}").contains("PRIVATE KEY"),
        "Debug never shows keys"
    );
}

fn golden(name: &str, text: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var("SPECTRO_UPDATE_GOLDEN").is_ok() {
        std::fs::write(&path, text).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(text, want, "{name} differs from its golden file");
}

#[test]
fn kubeadm_yaml_matches_golden_files_per_api_version() {
    let token = "abcdef.0123456789abcdef";
    let hash = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let mut c = cluster("golden");
    c.pack_values.insert(
        "kubernetes".into(),
        "podCIDR: 172.16.0.0/16\ncertSANs: [api.golden.example]\nkubelet:\n  extraArgs:\n    max-pods: 200\n".into(),
    );
    for (version, api, file) in [
        ("1.30.4", KubeadmApi::V1Beta3, "v1beta3"),
        ("1.31.1", KubeadmApi::V1Beta4, "v1beta4"),
    ] {
        let mut p = profile();
        p.packs[1].version = version.into();
        let s = KubernetesSettings::from_cluster(&c, &p).unwrap();
        assert_eq!(s.api, api);
        golden(
            &format!("kubeadm-init-{file}.yaml"),
            &init_config("golden", &s, "lb.golden.example:6443", token, false),
        );
        golden(
            &format!("kubeadm-join-cp-{file}.yaml"),
            &join_config(&s, "lb.golden.example:6443", token, hash, true, false),
        );
        golden(
            &format!("kubeadm-join-worker-{file}.yaml"),
            &join_config(&s, "lb.golden.example:6443", token, hash, false, false),
        );
    }
}

#[test]
fn bad_pack_values_name_the_pack_and_field() {
    let mut c = cluster("bad");
    c.pack_values
        .insert("kubernetes".into(), "podCIDR: not-a-cidr\n".into());
    let e = KubernetesSettings::from_cluster(&c, &profile()).unwrap_err();
    assert!(
        matches!(&e, CoreError::PackValues { pack, field, .. } if pack == "kubernetes" && field == "podCIDR"),
        "{e}"
    );
    assert!(e.to_string().contains("`not-a-cidr` is not a CIDR"), "{e}");
    c.pack_values.insert(
        "kubernetes".into(),
        "apiServer:\n  extraArgs:\n    x: [1]\n".into(),
    );
    let e = KubernetesSettings::from_cluster(&c, &profile()).unwrap_err();
    assert!(e.to_string().contains("apiServer.extraArgs.x"), "{e}");
}

#[test]
fn user_data_is_compressed_to_fit_and_refused_when_it_cannot() {
    let pki = ClusterPki::generate().unwrap();
    let mut p = profile();
    p.packs[2].manifests = "# filler\n".repeat(3000);
    let c = cluster("big");
    let text = user_data(&NodeBootstrap {
        cluster: &c,
        profile: &p,
        pki: &pki,
        endpoint: "x:6443",
        role: BootstrapRole::Init,
    })
    .unwrap();
    assert!(text.len() > 16_384);
    let gz = encode_user_data(&text, BootstrapRole::Init, Some(16_384)).unwrap();
    assert!(
        gz.len() <= 16_384 && gz.starts_with(&[0x1f, 0x8b]),
        "gzip, under AWS's 16 KiB"
    );
    let mut r = flate2::read::GzDecoder::new(&gz[..]);
    let mut back = String::new();
    std::io::Read::read_to_string(&mut r, &mut back).unwrap();
    assert_eq!(back, text);
    assert!(matches!(
        encode_user_data(&text, BootstrapRole::Init, Some(1_000)),
        Err(CoreError::UserDataTooLarge { limit: 1_000, .. })
    ));
    assert_eq!(
        encode_user_data("#cloud-config\n", BootstrapRole::Init, Some(16_384)).unwrap(),
        b"#cloud-config\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_gives_each_role_its_user_data_and_a_kubeconfig() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(SimConfig::default());
    let (engine, _) = setup(dir.path(), sim.clone()).await;
    let id = engine.create_cluster(&cluster("boot")).await.unwrap();
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    let mut roles = std::collections::BTreeMap::new();
    for m in sim.machines(id) {
        let text = String::from_utf8(m.user_data.clone()).unwrap();
        assert!(text.starts_with("#cloud-config\n"));
        let role = if text.contains("InitConfiguration") {
            "init"
        } else if text.contains("controlPlane: {}") {
            "join-cp"
        } else {
            assert!(!text.contains("PRIVATE KEY"));
            "join-worker"
        };
        assert!(
            text.contains("boot.sim.spectro.internal:6443"),
            "endpoint from the infrastructure"
        );
        *roles.entry(role).or_insert(0) += 1;
    }
    assert_eq!(
        roles,
        [("init", 1), ("join-cp", 2), ("join-worker", 5)]
            .into_iter()
            .collect()
    );
    let kc = engine.kubeconfig(id).await.unwrap();
    let doc: serde_json::Value = serde_norway::from_str(kc.expose()).unwrap();
    assert_eq!(
        doc["clusters"][0]["cluster"]["server"],
        "https://boot.sim.spectro.internal:6443"
    );
    assert_eq!(format!("{kc:?}"), "Secret(***)");
    // The PKI is stored once and never shown in events.
    let events = engine.events(Some(id), 0, 10_000).await.unwrap();
    assert!(!format!("{events:?}").contains("PRIVATE KEY"));
    engine.delete_cluster(id).await.unwrap();
    engine.wait_for_phase(id, Phase::Deleted, T).await.unwrap();
    assert!(
        engine.kubeconfig(id).await.is_err(),
        "gone with the cluster"
    );
}

/// The node-side log collector every node gets: in every role's user data (mode 0755), clean
/// under `shellcheck`, and run for real on a fake node tree: the archive holds the cloud-init,
/// container (through their symlinks), pod, kernel and rotated syslog files, and the node facts.
#[test]
fn every_node_gets_a_log_collector_that_shellcheck_accepts_and_that_archives_the_logs() {
    use spectro::bootstrap::cloud_init::{LOG_COLLECTOR, LOG_COLLECTOR_PATH};
    if !tool("shellcheck") || !tool("tar") {
        return;
    }
    let pki = ClusterPki::generate().unwrap();
    for (name, c, p) in variants() {
        for role in [
            BootstrapRole::Init,
            BootstrapRole::JoinControlPlane,
            BootstrapRole::JoinWorker,
        ] {
            let text = user_data(&NodeBootstrap {
                cluster: &c,
                profile: &p,
                pki: &pki,
                endpoint: "api.example.internal:6443",
                role,
            })
            .unwrap();
            let doc: serde_json::Value =
                serde_norway::from_str(text.trim_start_matches("#cloud-config\n")).unwrap();
            let f = doc["write_files"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["path"] == LOG_COLLECTOR_PATH)
                .unwrap_or_else(|| panic!("{name} {role:?}: no log collector"));
            assert_eq!(f["permissions"], "0755");
            assert_eq!(f["content"].as_str().unwrap(), LOG_COLLECTOR);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("spectro-collect-logs");
    std::fs::write(&script, LOG_COLLECTOR).unwrap();
    let (ok, out) = run(
        &format!(
            "shellcheck --shell=bash --severity=style {}",
            script.display()
        ),
        dir.path(),
    );
    assert!(ok, "shellcheck: {out}");

    // A node's log tree below a fake root.
    let root = dir.path().join("node");
    let log = root.join("var/log");
    std::fs::create_dir_all(log.join("pods/kube-system_etcd-0_uid/etcd")).unwrap();
    std::fs::create_dir_all(log.join("containers")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/os-release"), "NAME=\"Ubuntu\"\n").unwrap();
    for (f, body) in [
        ("cloud-init.log", "cloud-init ran"),
        (
            "cloud-init-output.log",
            "kubeadm join 10.0.0.1:6443 --token abcdef.0123456789abcdef --certificate-key 9f8e7d\nkubeadm join failed: timeout",
        ),
        ("kern.log", "kernel: oom"),
        ("syslog", "syslog now"),
        ("syslog.1", "syslog before"),
        ("pods/kube-system_etcd-0_uid/etcd/0.log", "etcd started"),
    ] {
        std::fs::write(log.join(f), body).unwrap();
    }
    std::os::unix::fs::symlink(
        log.join("pods/kube-system_etcd-0_uid/etcd/0.log"),
        log.join("containers/etcd-0_kube-system_etcd-abc.log"),
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let o = Command::new("bash")
        .arg(&script)
        .arg(&out_dir)
        .env("SPECTRO_LOG_ROOT", &root)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let archive = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(archive.starts_with(out_dir.to_str().unwrap()) && archive.ends_with(".tgz"));
    let (ok, listing) = run(&format!("tar -tzvf {archive}"), dir.path());
    assert!(ok, "{listing}");
    for want in [
        "var/log/cloud-init.log",
        "/cloud-init-output.log",
        "var/log/kern.log",
        "var/log/syslog",
        "var/log/syslog.1",
        "var/log/pods/kube-system_etcd-0_uid/etcd/0.log",
        "var/log/containers/etcd-0_kube-system_etcd-abc.log",
        "/node.txt",
    ] {
        assert!(listing.contains(want), "{want} missing from\n{listing}");
    }
    // The container log is archived as the file it points to (-h), not as a dangling link.
    let line = listing
        .lines()
        .find(|l| l.contains("containers/etcd-0"))
        .unwrap();
    assert!(line.starts_with('-'), "{line}");
    // cloud-init's output with the join token and certificate key blanked.
    let (ok, body) = run(
        &format!("tar -xzOf {archive} --wildcards '*/cloud-init-output.log'"),
        dir.path(),
    );
    assert!(ok && body.contains("kubeadm join failed"), "{body}");
    assert!(
        !body.contains("0123456789abcdef") && !body.contains("9f8e7d"),
        "{body}"
    );
    assert!(body.contains("--token ***"), "{body}");
    // Readable by its owner only.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&archive).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
}

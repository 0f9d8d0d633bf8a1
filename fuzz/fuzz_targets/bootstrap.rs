//! Bootstrap rendering: cloud-init user data (with kubeadm's configuration, kube-vip's static
//! pod, the proxy drop-ins) for every node role, from arbitrary *valid* specs: a known-valid
//! cluster and profile per cloud, mutated by the input (names, pool sizes, Kubernetes
//! version, the Kubernetes pack's values and the cluster's overrides, proxy, bring-your-own
//! image, manifests, API endpoint, VIP); inputs the validators refuse are skipped.
//!
//! Properties:
//! - no panic; rendering fails only with `PackValues` (values validation cannot judge, e.g.
//!   a `podCIDR` that is not a CIDR), for every role alike, and kube-vip settings only on
//!   control-plane roles with a VIP;
//! - the user data starts with `#cloud-config` and the rest parses as a YAML mapping with
//!   `users`, `write_files` (unique paths) and `runcmd`;
//! - every file's content reads back exactly as given (manifests, kubeadm configuration,
//!   PKI); kubeadm's configuration parses, with the documents and API version the role and
//!   Kubernetes version call for, the cluster's name, endpoint, version and CIDRs;
//! - worker user data carries no CA material (no private key, no `/etc/kubernetes/pki`
//!   file); control-plane user data carries the CAs with keys `0600`;
//! - kube-vip's manifest exactly on control-plane roles with a VIP; the proxy's files and
//!   NO_PROXY (pod and service CIDRs) exactly with a proxy; the install script exactly with a
//!   bring-your-own image and `skipK8sInstall: "false"`;
//! - `encode_user_data` under a size limit: the text as is when it fits, else gzip that
//!   decompresses to the text and fits, else `UserDataTooLarge` (an error, not a panic);
//! - `ClusterPki::ca_cert_hash` on a mutated CA certificate: an error or `sha256:` + 64 hex
//!   digits, never a panic.
#![no_main]

use std::collections::BTreeSet;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};
use spectro_core::bootstrap::kube_vip::{KubeVip, MANIFEST_PATH};
use spectro_core::bootstrap::{
    encode_user_data, ssh_keys, user_data_with_vip, CertKey, ClusterPki, KubernetesSettings,
    NodeBootstrap,
};
use spectro_core::model::document::{from_text, Format};
use spectro_core::model::{Cluster, ClusterProfile, PackLayer, ProxySettings};
use spectro_core::provider::BootstrapRole;
use spectro_core::secret::Secret;
use spectro_core::validate::{parse_k8s_version, validate_cluster, validate_profile, Catalog};
use spectro_core::CoreError;
use spectro_fuzz::check_violations;

/// A real (self-signed, ECDSA P-256) CA certificate: `ca_cert_hash` parses it.
const CA_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBgTCCASegAwIBAgIUdHcbQ3q/5yI3id/DBhWGDN5pR8YwCgYIKoZIzj0EAwIw
FTETMBEGA1UEAwwKa3ViZXJuZXRlczAgFw0yNjEyMDEwNTIyMTNaGA8yMTI2MTEw
NzA1MjIxM1owFTETMBEGA1UEAwwKa3ViZXJuZXRlczBZMBMGByqGSM49AgEGCCqG
SM49AwEHA0IABIXhdYXmX+syPhUqgKzhIQFri3seaEaT2W4GWGzNCXDRC7EZmYQx
GoT3LgzElNFqdhcNnSlbV4Jrc7wJ+j/veoejUzBRMB0GA1UdDgQWBBS6lOxgUX8x
WUtUmwp9p+3dn/pB6TAfBgNVHSMEGDAWgBS6lOxgUX8xWUtUmwp9p+3dn/pB6TAP
BgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIQCPkpsGWE9UJLc6TaGx
zlVmITfJGYNw7zZ2bCdANyEXVQIgPknZJMkoDdR+MQ9FtKVhy4PkAaZOcwk0wixF
Gc8f6ug=
-----END CERTIFICATE-----
";
/// `openssl x509 -pubkey | openssl pkey -pubin -outform der | sha256sum` of [`CA_CERT`].
const CA_HASH: &str = "sha256:59712bea4856f48f3f1f83e85482252cdc031ad5c184effbca5fc2a338d9852d";
/// Markers standing for the private keys: never in a worker's user data.
const KEY_MARKERS: [&str; 4] = [
    "FUZZ-CA-KEY",
    "FUZZ-ETCD-CA-KEY",
    "FUZZ-FRONT-PROXY-CA-KEY",
    "FUZZ-SA-KEY",
];
const TOKEN: &str = "abcdef.0123456789abcdef";

fn pki() -> ClusterPki {
    let key = |m: &str| {
        Secret::new(format!(
            "-----BEGIN PRIVATE KEY-----\n{m}\n-----END PRIVATE KEY-----\n"
        ))
    };
    let cert = |n: &str| format!("-----BEGIN CERTIFICATE-----\n{n}\n-----END CERTIFICATE-----\n");
    ClusterPki {
        ca: CertKey {
            cert_pem: CA_CERT.into(),
            key_pem: key(KEY_MARKERS[0]),
        },
        etcd_ca: CertKey {
            cert_pem: cert("ETCD-CA"),
            key_pem: key(KEY_MARKERS[1]),
        },
        front_proxy_ca: CertKey {
            cert_pem: cert("FRONT-PROXY-CA"),
            key_pem: key(KEY_MARKERS[2]),
        },
        service_account_key: key(KEY_MARKERS[3]),
        service_account_pub: "-----BEGIN PUBLIC KEY-----\nSA-PUB\n-----END PUBLIC KEY-----\n"
            .into(),
        admin: CertKey {
            cert_pem: cert("ADMIN"),
            key_pem: key("FUZZ-ADMIN-KEY"),
        },
        bootstrap_token: Secret::new(TOKEN),
    }
}

const PROFILE: &str = r#"
name: base
version: 1.0.0
cloud: any
packs:
  - { name: ubuntu, layer: os, version: "22.04" }
  - name: kubernetes
    layer: kubernetes
    version: 1.30.4
    values: |
      podCIDR: 192.168.0.0/16
      apiServer:
        extraArgs:
          audit-log-maxage: "30"
  - name: calico
    layer: cni
    version: 3.28.0
    manifests: |
      apiVersion: v1
      kind: ConfigMap
      metadata: { name: calico-config, namespace: kube-system }
  - { name: prometheus, layer: addon, version: 57.0.0 }
"#;

const CLUSTERS: [&str; 4] = [
    r#"
name: web
profile: { name: base, version: 1.0.0 }
cloudAccount: aws-main
cloud: { aws: { region: us-east-1 } }
nodePools:
  - { name: master, role: controlPlane, size: 3, instanceType: m5.large, availabilityZones: [us-east-1a] }
  - { name: workers, role: worker, size: 3, instanceType: m5.xlarge, availabilityZones: [us-east-1a, us-east-1b] }
"#,
    r#"
name: factory
profile: { name: base, version: 1.0.0 }
cloudAccount: vsphere-east
cloud:
  vsphere:
    datacenter: dc
    folder: /dc/vm/spectro
    sshKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJq3Qm7yEXAMPLEKEY ops@example"]
    ntpServers: [ntp1.corp.example, 10.10.0.4]
    ipAllocation: static
nodePools:
  - { name: master, role: controlPlane, size: 1, cpu: 4, memoryGb: 8, diskSizeGb: 60, placements: [{ computeCluster: a, datastore: ds, network: VM Network, ipPool: east }] }
  - { name: workers, role: worker, size: 2, cpu: 4, memoryGb: 8, diskSizeGb: 60, placements: [{ computeCluster: a, datastore: ds, network: VM Network, ipPool: east }] }
"#,
    r#"
name: analytics
profile: { name: base, version: 1.0.0 }
cloudAccount: azure-main
cloud:
  azure:
    subscriptionId: 0b1f6471-1bf0-4dda-aec3-cb9272f09590
    region: westus2
    resourceGroup: analytics-rg
    sshKey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJq3Qm7yEXAMPLEKEY ops@example
nodePools:
  - { name: master, role: controlPlane, size: 3, instanceType: Standard_D2s_v3 }
  - { name: workers, role: worker, size: 3, instanceType: Standard_D4s_v3, availabilityZones: ["1", "2"] }
"#,
    r#"
name: orders
profile: { name: base, version: 1.0.0 }
cloudAccount: gcp-main
cloud: { gcp: { project: spectro-demo, region: us-west1 } }
nodePools:
  - { name: master, role: controlPlane, size: 3, instanceType: n2-standard-4, availabilityZones: [us-west1-a] }
  - { name: workers, role: worker, size: 3, instanceType: n2-standard-8, availabilityZones: [us-west1-a] }
"#,
];

/// Strings a spec may hold: valid ones, YAML-special ones, odd ones.
const STRINGS: [&str; 24] = [
    "",
    "x",
    "a b",
    "key: value",
    "#comment",
    "'",
    "\"",
    "- item",
    "{",
    "[]",
    "true",
    "null",
    "~",
    "1.30",
    "0x1F",
    "---",
    "...",
    "\u{85}",
    "\t",
    "\\",
    "eth1",
    "ghcr.io/kube-vip/kube-vip:v0.9.0",
    "10.0.0.0/8",
    "*",
];

#[derive(Arbitrary, Debug)]
enum Str {
    Pick(u8),
    Raw(String),
}

impl Str {
    fn get(&self) -> String {
        match self {
            Str::Pick(i) => STRINGS[usize::from(*i) % STRINGS.len()].to_string(),
            Str::Raw(s) => s.chars().take(64).collect(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Scalar {
    Str(Str),
    Int(i32),
    Float(i16),
    Bool(bool),
    Null,
    List(Vec<Str>),
}

impl Scalar {
    fn get(&self) -> Value {
        match self {
            Scalar::Str(s) => Value::from(s.get()),
            Scalar::Int(i) => Value::from(*i),
            Scalar::Float(f) => Value::from(f64::from(*f) / 8.0),
            Scalar::Bool(b) => Value::from(*b),
            Scalar::Null => Value::Null,
            Scalar::List(l) => {
                Value::Array(l.iter().take(3).map(|s| Value::from(s.get())).collect())
            }
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Cidr {
    Pick(u8),
    V4(u32, u8),
    V6(u128, u8),
    Raw(Str),
}

impl Cidr {
    fn get(&self) -> Value {
        match self {
            Cidr::Pick(i) => Value::from(
                [
                    "10.244.0.0/16",
                    "172.16.0.0/12",
                    "fd00::/108",
                    "10.96.0.0/12",
                ][usize::from(*i) % 4],
            ),
            Cidr::V4(a, p) => Value::from(format!("{}/{}", Ipv4Addr::from(*a), p % 40)),
            Cidr::V6(a, p) => Value::from(format!("{}/{}", Ipv6Addr::from(*a), p % 140)),
            Cidr::Raw(s) => Value::from(s.get()),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Setting {
    PodCidr(Cidr),
    ServiceCidr(Cidr),
    CertSans(Vec<Str>),
    CertSansScalar(Scalar),
    Arg(u8, Str, Scalar),
    ArgsNotAMap(u8, Scalar),
    KubeVipImage(Scalar),
    KubeVipInterface(Scalar),
    Other(Str, Scalar),
}

fn values(settings: &[Setting]) -> Value {
    let mut v = Value::Object(Map::new());
    for s in settings.iter().take(8) {
        let component = |c: &u8| {
            ["apiServer", "controllerManager", "scheduler", "kubelet"][usize::from(*c) % 4]
        };
        match s {
            Setting::PodCidr(c) => v["podCIDR"] = c.get(),
            Setting::ServiceCidr(c) => v["serviceCIDR"] = c.get(),
            Setting::CertSans(l) => {
                v["certSANs"] =
                    Value::Array(l.iter().take(4).map(|s| Value::from(s.get())).collect())
            }
            Setting::CertSansScalar(x) => v["certSANs"] = x.get(),
            Setting::Arg(c, k, x) => {
                let c = component(c);
                if !v.get(c).is_some_and(Value::is_object) {
                    v[c] = json!({});
                }
                if !v[c].get("extraArgs").is_some_and(Value::is_object) {
                    v[c]["extraArgs"] = json!({});
                }
                v[c]["extraArgs"][k.get()] = x.get();
            }
            Setting::ArgsNotAMap(c, x) => v[component(c)] = json!({ "extraArgs": x.get() }),
            Setting::KubeVipImage(x) => v["kubeVip"] = json!({ "image": x.get() }),
            Setting::KubeVipInterface(x) => v["kubeVip"] = json!({ "interface": x.get() }),
            Setting::Other(k, x) => v[k.get()] = x.get(),
        }
    }
    v
}

#[derive(Arbitrary, Debug)]
enum Version {
    Pick(u8),
    Numbers(u8, u8, u8),
    Raw(Str),
}

#[derive(Arbitrary, Debug)]
struct Proxy {
    http: Str,
    https: Str,
    no_proxy: Vec<Str>,
    valid: bool,
}

#[derive(Arbitrary, Debug)]
enum Endpoint {
    Host(u8),
    Raw(Str),
}

#[derive(Arbitrary, Debug)]
struct Input {
    cloud: u8,
    name: Option<Str>,
    cp_size: u8,
    allow_workers: bool,
    workers: Vec<u16>,
    version: Version,
    defaults: Vec<Setting>,
    overrides: Vec<Setting>,
    raw_values: Option<Str>,
    proxy: Option<Proxy>,
    image: Option<(bool, u8)>,
    manifests: Vec<(u8, String)>,
    endpoint: Endpoint,
    vip: Option<(bool, u128)>,
    limit: Option<u16>,
    der_edits: Vec<(u16, u8)>,
}

fn role_name(r: BootstrapRole) -> &'static str {
    match r {
        BootstrapRole::Init => "init",
        BootstrapRole::JoinControlPlane => "join-control-plane",
        BootstrapRole::JoinWorker => "join-worker",
    }
}

/// The `write_files` entry at `path`.
fn file<'a>(files: &'a [Value], path: &str) -> Option<&'a Value> {
    files.iter().find(|f| f["path"] == path)
}

fn content<'a>(files: &'a [Value], path: &str) -> Option<&'a str> {
    file(files, path).and_then(|f| f["content"].as_str())
}

#[allow(clippy::too_many_lines)]
fn check_user_data(
    text: &str,
    role: BootstrapRole,
    cluster: &Cluster,
    profile: &ClusterProfile,
    k8s: &KubernetesSettings,
    endpoint: &str,
    vip: Option<IpAddr>,
) {
    let r = role_name(role);
    let body = text
        .strip_prefix("#cloud-config\n")
        .unwrap_or_else(|| panic!("{r}: user data starts with #cloud-config"));
    let doc: Value = serde_norway::from_str(body)
        .unwrap_or_else(|e| panic!("{r}: the cloud-config is not YAML: {e}\n{body}"));
    assert!(doc.is_object(), "{r}: the cloud-config is a mapping");
    let files = doc["write_files"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}: write_files"));
    assert!(
        doc["runcmd"].is_array() && doc["users"].is_array(),
        "{r}: runcmd, users"
    );
    let mut paths = BTreeSet::new();
    for f in files {
        let p = f["path"]
            .as_str()
            .unwrap_or_else(|| panic!("{r}: a file has a path"));
        assert!(paths.insert(p), "{r}: {p} written twice");
        assert!(f["content"].is_string(), "{r}: {p} has content");
        assert!(
            matches!(f["permissions"].as_str(), Some("0644" | "0600" | "0755")),
            "{r}: {p} permissions"
        );
    }
    let control_plane = !matches!(role, BootstrapRole::JoinWorker);
    let pk = pki();

    // CA material: control-plane nodes only, keys 0600.
    let pki_files: Vec<&str> = paths
        .iter()
        .copied()
        .filter(|p| p.starts_with("/etc/kubernetes/pki/"))
        .collect();
    if control_plane {
        for (name, ck) in [
            ("ca", &pk.ca),
            ("etcd/ca", &pk.etcd_ca),
            ("front-proxy-ca", &pk.front_proxy_ca),
        ] {
            let crt = format!("/etc/kubernetes/pki/{name}.crt");
            let key = format!("/etc/kubernetes/pki/{name}.key");
            assert_eq!(
                content(files, &crt),
                Some(ck.cert_pem.as_str()),
                "{r}: {crt}"
            );
            assert_eq!(
                content(files, &key),
                Some(ck.key_pem.expose()),
                "{r}: {key}"
            );
            assert_eq!(
                file(files, &key).map(|f| &f["permissions"]),
                Some(&json!("0600")),
                "{r}: {key} 0600"
            );
        }
        assert_eq!(
            content(files, "/etc/kubernetes/pki/sa.key"),
            Some(pk.service_account_key.expose())
        );
    } else {
        assert!(
            pki_files.is_empty(),
            "worker user data writes {pki_files:?}"
        );
        for m in KEY_MARKERS {
            assert!(
                !text.contains(m),
                "worker user data carries a private key ({m})"
            );
        }
    }
    assert!(
        !text.contains("FUZZ-ADMIN-KEY"),
        "{r}: the admin key is never in user data"
    );

    // kubeadm's configuration.
    let kubeadm =
        content(files, "/run/kubeadm/kubeadm.yaml").unwrap_or_else(|| panic!("{r}: kubeadm.yaml"));
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(kubeadm)
        .map(|d| {
            serde::Deserialize::deserialize(d)
                .unwrap_or_else(|e| panic!("{r}: kubeadm.yaml is not YAML: {e}"))
        })
        .collect();
    let kinds: Vec<&str> = docs
        .iter()
        .map(|d| d["kind"].as_str().unwrap_or(""))
        .collect();
    let (major, minor, patch) =
        parse_k8s_version(&k8s.version).expect("the settings' version parses");
    let api = if (major, minor) >= (1, 31) {
        "kubeadm.k8s.io/v1beta4"
    } else {
        "kubeadm.k8s.io/v1beta3"
    };
    for d in &docs {
        assert_eq!(
            d["apiVersion"], api,
            "{r}: kubeadm API version for {}",
            k8s.version
        );
    }
    match role {
        BootstrapRole::Init => {
            assert_eq!(kinds, ["InitConfiguration", "ClusterConfiguration"], "{r}");
            let cc = &docs[1];
            assert_eq!(cc["clusterName"], cluster.name.as_str());
            assert_eq!(cc["controlPlaneEndpoint"], endpoint);
            assert_eq!(cc["kubernetesVersion"], format!("v{major}.{minor}.{patch}"));
            assert_eq!(cc["networking"]["podSubnet"], k8s.pod_cidr.to_string());
            assert_eq!(
                cc["networking"]["serviceSubnet"],
                k8s.service_cidr.to_string()
            );
            assert_eq!(docs[0]["bootstrapTokens"][0]["token"], TOKEN);
            for san in &k8s.cert_sans {
                assert!(
                    cc["apiServer"]["certSANs"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x == san.as_str())),
                    "{r}: certSAN {san:?} kept"
                );
            }
        }
        _ => {
            assert_eq!(kinds, ["JoinConfiguration"], "{r}");
            let bt = &docs[0]["discovery"]["bootstrapToken"];
            assert_eq!(bt["apiServerEndpoint"], endpoint);
            assert_eq!(bt["token"], TOKEN);
            assert_eq!(bt["caCertHashes"], json!([CA_HASH]));
            assert_eq!(
                docs[0].get("controlPlane").is_some(),
                control_plane,
                "{r}: controlPlane"
            );
        }
    }

    // Manifests: written for `kubeadm init` only, exactly as the packs hold them.
    let mut n = 0;
    for p in &profile.packs {
        if p.manifests.trim().is_empty() {
            continue;
        }
        n += 1;
        let path = format!("/etc/spectro/manifests/{n:02}-{}.yaml", p.name);
        if matches!(role, BootstrapRole::Init) {
            assert_eq!(
                content(files, &path),
                Some(p.manifests.as_str()),
                "{r}: {path} reads back"
            );
        } else {
            assert!(file(files, &path).is_none(), "{r}: manifests only on init");
        }
    }

    // kube-vip.
    let kv = content(files, MANIFEST_PATH);
    assert_eq!(
        kv.is_some(),
        control_plane && vip.is_some(),
        "{r}: kube-vip manifest"
    );
    if let (Some(kv), Some(vip)) = (kv, vip) {
        let pod: Value =
            serde_norway::from_str(kv).unwrap_or_else(|e| panic!("{r}: kube-vip manifest: {e}"));
        let env = pod["spec"]["containers"][0]["env"].as_array().expect("env");
        assert!(
            env.iter()
                .any(|e| e["name"] == "address" && e["value"] == vip.to_string()),
            "{r}: the VIP"
        );
    }

    // Proxy.
    let environment = file(files, "/etc/environment");
    assert_eq!(
        environment.is_some(),
        cluster.proxy.is_some(),
        "{r}: /etc/environment"
    );
    if let Some(p) = &cluster.proxy {
        let env = environment
            .and_then(|f| f["content"].as_str())
            .unwrap_or_default();
        assert_eq!(environment.map(|f| &f["append"]), Some(&json!(true)));
        if !p.http_proxy.is_empty() {
            assert!(
                env.contains(&format!("HTTP_PROXY={}\n", p.http_proxy)),
                "{r}: HTTP_PROXY"
            );
        }
        let no_proxy = env
            .lines()
            .find_map(|l| l.strip_prefix("NO_PROXY="))
            .unwrap_or_else(|| panic!("{r}: NO_PROXY in {env:?}"));
        let entries: Vec<&str> = no_proxy.split(',').collect();
        for want in [k8s.pod_cidr.to_string(), k8s.service_cidr.to_string()] {
            assert!(
                entries.contains(&want.as_str()),
                "{r}: NO_PROXY {no_proxy} has {want}"
            );
        }
        for unit in ["containerd", "kubelet"] {
            let path = format!("/etc/systemd/system/{unit}.service.d/http-proxy.conf");
            assert!(file(files, &path).is_some(), "{r}: {path}");
        }
    }

    // Bring-your-own image with Kubernetes to install.
    let os = profile.pack(PackLayer::Os).expect("an os pack");
    let install = os.image_ref().is_some() && os.skip_k8s_install() == Some("false");
    assert_eq!(
        file(files, "/usr/local/bin/spectro-install-kubernetes.sh").is_some(),
        install,
        "{r}: install script"
    );

    // SSH keys.
    let keys = ssh_keys(cluster);
    let user = &doc["users"][1];
    if keys.is_empty() {
        assert!(user.get("ssh_authorized_keys").is_none());
    } else {
        assert_eq!(user["ssh_authorized_keys"], json!(keys), "{r}: SSH keys");
    }
}

fn check_encode(text: &str, role: BootstrapRole, limit: Option<usize>) {
    match encode_user_data(text, role, limit) {
        Ok(bytes) => match limit {
            Some(l) if text.len() > l => {
                assert!(bytes.len() <= l, "encoded user data fits the limit");
                let mut out = String::new();
                flate2::read::GzDecoder::new(bytes.as_slice())
                    .read_to_string(&mut out)
                    .expect("gzip");
                assert_eq!(out, text, "gzip decompresses to the user data");
            }
            _ => assert_eq!(bytes, text.as_bytes(), "user data that fits is left as is"),
        },
        Err(CoreError::UserDataTooLarge { size, limit: l, .. }) => {
            let limit = limit.expect("no error without a limit");
            assert_eq!(l, limit);
            assert!(
                size > limit && text.len() > limit,
                "too large only beyond the limit"
            );
        }
        Err(e) => panic!("encode_user_data: {e}"),
    }
}

fn check_ca_hash(edits: &[(u16, u8)]) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let body: String = CA_CERT
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let mut der = b64.decode(body).expect("the CA certificate decodes");
    if edits.is_empty() {
        let mut p = pki();
        p.ca.cert_pem = CA_CERT.into();
        assert_eq!(p.ca_cert_hash().expect("hash"), CA_HASH);
        return;
    }
    for (at, b) in edits.iter().take(8) {
        let i = usize::from(*at);
        if i < der.len() {
            der[i] = *b;
        } else if i % 2 == 0 {
            der.truncate(i % (der.len() + 1));
        }
    }
    let mut p = pki();
    p.ca.cert_pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        b64.encode(&der)
    );
    match p.ca_cert_hash() {
        Ok(h) => {
            let hex = h.strip_prefix("sha256:").expect("sha256: prefix");
            assert!(
                hex.len() == 64
                    && hex
                        .bytes()
                        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
        }
        Err(CoreError::Pki { .. }) => {}
        Err(e) => panic!("ca_cert_hash: {e}"),
    }
}

fuzz_target!(|input: Input| {
    check_ca_hash(&input.der_edits);

    let mut profile: ClusterProfile = from_text(PROFILE, Format::Yaml).expect("the base profile");
    let mut cluster: Cluster = from_text(
        CLUSTERS[usize::from(input.cloud) % CLUSTERS.len()],
        Format::Yaml,
    )
    .expect("the base cluster");

    // Profile: Kubernetes version and values, bring-your-own image, manifests.
    let version = match &input.version {
        Version::Pick(i) => ["1.28.9", "1.29.3", "1.30.4", "1.31.1", "v1.32.0", "1.33"]
            [usize::from(*i) % 6]
            .to_string(),
        Version::Numbers(a, b, c) => format!("{a}.{b}.{c}"),
        Version::Raw(s) => s.get(),
    };
    let k8s_pack = profile
        .packs
        .iter_mut()
        .find(|p| p.layer == PackLayer::Kubernetes)
        .expect("kubernetes pack");
    k8s_pack.version = version;
    if !input.defaults.is_empty() {
        let mut base =
            spectro_core::model::pack::parse_values(&k8s_pack.values).expect("base values");
        spectro_core::model::pack::merge_values(&mut base, &values(&input.defaults));
        k8s_pack.values = serde_norway::to_string(&base).expect("YAML");
    }
    if let Some(raw) = &input.raw_values {
        k8s_pack.values = raw.get();
    }
    if let Some((skip, image)) = input.image {
        let os = profile
            .packs
            .iter_mut()
            .find(|p| p.layer == PackLayer::Os)
            .expect("os pack");
        os.annotations
            .insert("skipK8sInstall".into(), skip.to_string());
        if image % 4 != 0 {
            os.annotations.insert(
                "image".into(),
                ["", "ami-0abc1234", "/DC0/vm/ubuntu"][usize::from(image % 3)].into(),
            );
        }
    }
    for (i, m) in input.manifests.iter().take(3) {
        let n = profile.packs.len();
        profile.packs[usize::from(*i) % n].manifests = m.chars().take(512).collect();
    }

    // Cluster: name, pools, overrides, proxy.
    if let Some(n) = &input.name {
        cluster.name = n.get();
    }
    cluster.node_pools[0].size =
        [1, 3, 5, u32::from(input.cp_size)][usize::from(input.cp_size) % 4];
    cluster.node_pools[0].allow_worker_capability = input.allow_workers;
    let template = cluster.node_pools[1].clone();
    cluster.node_pools.truncate(1);
    for (i, size) in input.workers.iter().take(3).enumerate() {
        let mut p = template.clone();
        p.name = format!("workers-{i}");
        p.size = u32::from(*size);
        cluster.node_pools.push(p);
    }
    if !input.overrides.is_empty() {
        cluster.pack_values.insert(
            "kubernetes".into(),
            serde_norway::to_string(&values(&input.overrides)).expect("YAML"),
        );
    }
    if let Some(p) = &input.proxy {
        cluster.proxy = Some(if p.valid {
            ProxySettings {
                http_proxy: "http://user:pw@10.0.0.5:3128".into(),
                https_proxy: "http://proxy.corp.example:3128".into(),
                no_proxy: vec![".corp.example".into(), "10.10.0.0/16".into()],
            }
        } else {
            ProxySettings {
                http_proxy: p.http.get(),
                https_proxy: p.https.get(),
                no_proxy: p.no_proxy.iter().take(4).map(Str::get).collect(),
            }
        });
    }

    // Only what validation accepts.
    let mut catalog = Catalog::default();
    catalog.insert(&spectro_core::model::Document::ClusterProfile(
        profile.clone(),
    ));
    let pv = validate_profile(&profile);
    let cv = validate_cluster(&cluster, &catalog);
    check_violations("ClusterProfile", &pv);
    check_violations("Cluster", &cv);
    if !pv.is_empty() || !cv.is_empty() {
        if spectro_fuzz::debug() {
            eprintln!("skipped: {pv:?} {cv:?}");
        }
        return;
    }

    let endpoint = match &input.endpoint {
        Endpoint::Host(i) => [
            "web-api.example:6443",
            "10.0.0.10:6443",
            "[fd00::10]:6443",
            "api.example",
        ][usize::from(*i) % 4]
            .to_string(),
        Endpoint::Raw(s) => s.get(),
    };
    let vip = input.vip.map(|(v6, n)| {
        if v6 {
            IpAddr::V6(Ipv6Addr::from(n))
        } else {
            IpAddr::V4(Ipv4Addr::from(n as u32))
        }
    });
    let pk = pki();
    let settings = KubernetesSettings::from_cluster(&cluster, &profile);
    for role in [
        BootstrapRole::Init,
        BootstrapRole::JoinControlPlane,
        BootstrapRole::JoinWorker,
    ] {
        let nb = NodeBootstrap {
            cluster: &cluster,
            profile: &profile,
            pki: &pk,
            endpoint: &endpoint,
            role,
        };
        let out = user_data_with_vip(&nb, vip);
        let control_plane = !matches!(role, BootstrapRole::JoinWorker);
        match (&settings, out) {
            (Err(CoreError::PackValues { .. }), Err(CoreError::PackValues { .. })) => {}
            (Err(e), out) => panic!(
                "settings fail ({e}) but {}: {:?}",
                role_name(role),
                out.map(|_| ())
            ),
            (Ok(_), Err(e)) => {
                // Only kube-vip's own settings, on control-plane roles with a VIP.
                let port = endpoint
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse().ok())
                    .unwrap_or(6443);
                let kv = vip
                    .filter(|_| control_plane)
                    .map(|a| KubeVip::from_cluster(&cluster, &profile, a, port));
                assert!(
                    matches!(e, CoreError::PackValues { .. }) && matches!(kv, Some(Err(_))),
                    "{}: rendering a valid spec failed: {e}",
                    role_name(role)
                );
            }
            (Ok(k8s), Ok(text)) => {
                if spectro_fuzz::debug() {
                    eprintln!("rendered {} ({} bytes)", role_name(role), text.len());
                }
                check_user_data(&text, role, &cluster, &profile, k8s, &endpoint, vip);
                check_encode(&text, role, input.limit.map(usize::from));
                check_encode(&text, role, None);
            }
        }
    }
});

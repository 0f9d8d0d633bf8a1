//! Sample specs load and validate; invalid specs report the exact field paths.

use std::collections::BTreeSet;
use std::path::PathBuf;

use spectro::model::document::{from_text, parse_documents, Format};
use spectro::model::{Cluster, Document, PrivateCloudGateway};
use spectro::validate::{
    validate_cluster_update, validate_document, validate_gateway_update, Catalog,
};

fn spec(path: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples/specs")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn docs(path: &str) -> Vec<Document> {
    let (docs, failures) = parse_documents(&spec(path), Format::from_path(path));
    assert!(failures.is_empty(), "{path}: {failures:?}");
    docs
}

fn catalog_of(files: &[&str]) -> Catalog {
    let mut c = Catalog {
        strict: true,
        ..Catalog::default()
    };
    for f in files {
        for d in docs(f) {
            c.insert(&d);
        }
    }
    c
}

const SAMPLES: [&str; 5] = [
    "profiles.yaml",
    "aws-cluster.yaml",
    "azure-cluster.yaml",
    "gcp-cluster.yaml",
    "vsphere-cluster.yaml",
];

/// Violations of every document in an invalid file, as `path` strings (sorted, unique).
fn paths(file: &str) -> BTreeSet<String> {
    let cat = catalog_of(&SAMPLES);
    let cat = Catalog {
        strict: false,
        ..cat
    };
    let (docs, failures) = parse_documents(&spec(&format!("invalid/{file}")), Format::Yaml);
    let mut out: BTreeSet<String> = failures
        .iter()
        .flat_map(|f| f.violations.iter().map(|v| v.path.clone()))
        .collect();
    for d in &docs {
        out.extend(validate_document(d, &cat).into_iter().map(|v| v.path));
    }
    out
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn every_sample_validates_in_strict_mode() {
    let cat = catalog_of(&SAMPLES);
    let mut n = 0;
    for f in SAMPLES {
        for d in docs(f) {
            let v = validate_document(&d, &cat);
            assert!(v.is_empty(), "{f} {} {}: {v:?}", d.kind(), d.name());
            n += 1;
        }
    }
    assert_eq!(n, 16, "documents in the samples");
}

#[test]
fn samples_round_trip_through_json() {
    for f in SAMPLES {
        for d in docs(f) {
            let json =
                spectro::secret::with_secrets_revealed(|| serde_json::to_string(&d).unwrap());
            let (back, failures) = parse_documents(&json, Format::Json);
            assert!(failures.is_empty(), "{failures:?}");
            assert_eq!(back, vec![d]);
        }
    }
}

#[test]
fn invalid_cluster_pools() {
    assert_eq!(
        paths("cluster-pools.yaml"),
        set(&[
            "name",
            "nodePools[0].size",
            "nodePools[0].availabilityZones[1]",
            "nodePools[1].allowWorkerCapability",
            "nodePools[1].availabilityZones[1]",
            "nodePools[1].instanceType",
            "nodePools[2].name",
            "nodePools[2].cpu",
            "nodePools[2].availabilityZones",
        ])
    );
}

#[test]
fn invalid_azure_control_plane_zones() {
    assert_eq!(
        paths("azure-control-plane-zones.yaml"),
        set(&[
            "cloud.azure.subscriptionId",
            "nodePools[0].availabilityZones",
            "nodePools[1].availabilityZones[1]",
            "nodePools[1].diskType",
        ])
    );
}

#[test]
fn invalid_vsphere_placement() {
    assert_eq!(
        paths("vsphere-placement.yaml"),
        set(&[
            "cloud.vsphere.sshKeys[0]",
            "nodePools[0].placements",
            "nodePools[1].instanceType",
            "nodePools[1].cpu",
            "nodePools[1].placements[0].ipPool",
        ])
    );
}

#[test]
fn invalid_ip_pools() {
    assert_eq!(
        paths("ip-pool.yaml"),
        set(&["range.start", "range.end", "prefix"])
    );
}

#[test]
fn invalid_profile() {
    assert_eq!(
        paths("profile.yaml"),
        set(&[
            "packs",
            "packs[1].layer",
            "packs[1].annotations.skipK8sInstall",
            "packs[2].layer",
            "packs[3].ansibleRoles",
        ])
    );
}

#[test]
fn invalid_parse_names_the_field() {
    let (_, failures) = parse_documents(&spec("invalid/parse-error.yaml"), Format::Yaml);
    assert_eq!(failures.len(), 1);
    let v = &failures[0].violations[0];
    assert_eq!(v.path, "nodePools[0].size");
    assert!(v.rule.contains("expected u32"), "{}", v.rule);
}

#[test]
fn invalid_account_and_gateway() {
    assert_eq!(
        paths("account.yaml"),
        set(&[
            "credentials.azure.tenantId",
            "credentials.azure.clientSecret"
        ])
    );
    assert_eq!(
        paths("gateway.yaml"),
        set(&["size", "proxy.httpsProxy", "ipPools[1]"])
    );
}

#[test]
fn unknown_fields_and_kinds_are_named() {
    let (_, f) = parse_documents("kind: Cluster\nname: x\nnodepools: []\n", Format::Yaml);
    assert!(f[0].violations[0]
        .rule
        .contains("unknown field `nodepools`"));
    let (_, f) = parse_documents("kind: Clustr\nname: x\n", Format::Yaml);
    assert_eq!(f[0].violations[0].path, "kind");
    let (_, f) = parse_documents("name: x\n", Format::Yaml);
    assert_eq!(f[0].violations[0].path, "kind");
    let (_, f) = parse_documents("{not json", Format::Json);
    assert!(f[0].violations[0].rule.starts_with("not valid JSON"));
}

fn sample_cluster(file: &str) -> Cluster {
    docs(file)
        .into_iter()
        .find_map(|d| match d {
            Document::Cluster(c) => Some(c),
            _ => None,
        })
        .unwrap()
}

#[test]
fn cross_references_in_strict_mode() {
    let cat = catalog_of(&SAMPLES);
    let mut c = sample_cluster("aws-cluster.yaml");
    c.profile.name = "prod-azure".into();
    c.cloud_account = "azure-main".into();
    c.pack_values.insert("no-such-pack".into(), "a: 1".into());
    let v: BTreeSet<String> = validate_document(&Document::Cluster(c), &cat)
        .into_iter()
        .map(|v| v.path)
        .collect();
    assert_eq!(
        v,
        set(&["profile", "cloudAccount", "packValues[no-such-pack]"])
    );

    let mut c = sample_cluster("vsphere-cluster.yaml");
    c.node_pools[1].placements[0].ip_pool = Some("missing".into());
    let v = validate_document(&Document::Cluster(c), &cat);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].path, "nodePools[1].placements[0].ipPool");
    assert_eq!(v[0].rule, "no IP pool `missing` exists");
}

#[test]
fn cluster_transitions() {
    let old = sample_cluster("aws-cluster.yaml");
    let mut new = old.clone();
    new.node_pools[0].size = 5;
    assert_eq!(
        validate_cluster_update(&old, &new).len(),
        0,
        "3 → 5 is allowed"
    );
    new.node_pools[0].size = 1;
    let v = validate_cluster_update(&old, &new);
    assert_eq!(v[0].path, "nodePools[0].size");
    assert!(v[0].rule.contains("never down"));

    let mut one = old.clone();
    one.node_pools[0].size = 1;
    let mut five = old.clone();
    five.node_pools[0].size = 5;
    assert_eq!(
        validate_cluster_update(&one, &five)[0].path,
        "nodePools[0].size"
    );

    let mut moved = old.clone();
    if let spectro::model::CloudPlacement::Aws(a) = &mut moved.cloud {
        a.region = "eu-west-1".into();
    }
    moved.cloud_account = "other".into();
    moved.node_pools[1].role = spectro::model::PoolRole::ControlPlane;
    let paths: BTreeSet<String> = validate_cluster_update(&old, &moved)
        .into_iter()
        .map(|v| v.path)
        .collect();
    assert_eq!(
        paths,
        set(&["cloud.aws.region", "cloudAccount", "nodePools[1].role"])
    );

    let mut worker_scaled = old.clone();
    worker_scaled.node_pools[1].size = 0;
    worker_scaled.node_pools[1].instance_type = Some("m5.2xlarge".into());
    worker_scaled.node_pools.pop();
    assert!(validate_cluster_update(&old, &worker_scaled).is_empty());
}

#[test]
fn gateway_transitions() {
    let g: PrivateCloudGateway = from_text("name: gw\nsize: 1\n", Format::Yaml).unwrap();
    let mut three = g.clone();
    three.size = 3;
    assert!(validate_gateway_update(&g, &three).is_empty());
    let v = validate_gateway_update(&three, &g);
    assert_eq!(v[0].path, "size");
    assert!(v[0].rule.contains("only be resized from 1 to 3"));
}

#[test]
fn secrets_never_print() {
    for f in SAMPLES {
        for d in docs(f) {
            let dbg = format!("{d:?}");
            let json = serde_json::to_string(&d).unwrap();
            for secret in [
                "wJalrXUtnFEMI",
                "not-a-real-secret",
                "not-a-real-password",
                "BEGIN PRIVATE KEY",
            ] {
                assert!(!dbg.contains(secret), "{f}: Debug shows a secret");
                assert!(!json.contains(secret), "{f}: JSON shows a secret");
            }
        }
    }
}

#[test]
fn json_schema_covers_every_kind() {
    let schema = spectro::schema::document_schema();
    let text = schema.to_string();
    for kind in [
        "ClusterProfile",
        "Cluster",
        "IpPool",
        "CloudAccount",
        "PrivateCloudGateway",
        "nodePools",
        "allowWorkerCapability",
        "restrictToSingleCluster",
    ] {
        assert!(text.contains(kind), "schema lacks {kind}");
    }
}

/// Bad input never panics: mutate the samples byte by byte (deterministically) and run
/// parse + validate on every variant.
#[test]
fn mutated_specs_never_panic() {
    let cat = catalog_of(&SAMPLES);
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let alphabet = b" :-[]{}\n\"'0123456789abcxyz/.#&*!|>";
    let mut checked = 0;
    for f in SAMPLES {
        let text = spec(f).into_bytes();
        for _ in 0..300 {
            let mut t = text.clone();
            for _ in 0..(1 + next() % 4) {
                let pos = (next() as usize) % t.len();
                t[pos] = alphabet[(next() as usize) % alphabet.len()];
            }
            let s = String::from_utf8_lossy(&t);
            let (docs, _) = parse_documents(&s, Format::Yaml);
            for d in &docs {
                let _ = validate_document(d, &cat);
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 1500);
}

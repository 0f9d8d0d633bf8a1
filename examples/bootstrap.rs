//! Writes the bootstrap data of a cluster spec: `cargo run --example bootstrap -- SPEC.yaml OUTDIR [HOST:PORT]`
//!
//! SPEC.yaml holds the cluster; its profile is taken from SPEC.yaml or from `profiles.yaml`
//! beside it (other documents are ignored). Writes to
//! OUTDIR the cloud-init user data of each role (`init.yaml`, `join-control-plane.yaml`,
//! `join-worker.yaml`) and the admin kubeconfig (`admin.kubeconfig`, mode 0600), for the API
//! endpoint HOST:PORT (default `<cluster>-api.spectro.internal:6443`). A fresh PKI is
//! generated on every run.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use spectro::bootstrap::{user_data, ClusterPki, NodeBootstrap};
use spectro::model::document::{parse_documents, Format};
use spectro::model::Document;
use spectro::provider::BootstrapRole;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(spec), Some(out)) = (args.first(), args.get(1)) else {
        eprintln!("usage: bootstrap SPEC.yaml OUTDIR [HOST:PORT]");
        return ExitCode::from(2);
    };
    match run(spec, &PathBuf::from(out), args.get(2).map(String::as_str)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(
    spec: &str,
    out: &PathBuf,
    endpoint: Option<&str>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut docs = Vec::new();
    let beside = std::path::Path::new(spec).with_file_name("profiles.yaml");
    for (i, file) in [PathBuf::from(spec), beside].iter().enumerate() {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(_) if i > 0 => continue,
            Err(e) => return Err(format!("{spec}: {e}").into()),
        };
        let (d, failures) = parse_documents(&text, Format::from_path(&file.to_string_lossy()));
        if let Some(f) = failures.first() {
            return Err(format!("{}: {}", file.display(), f.violations[0]).into());
        }
        docs.extend(d);
    }
    let cluster = docs
        .iter()
        .find_map(|d| match d {
            Document::Cluster(c) => Some(c.clone()),
            _ => None,
        })
        .ok_or("the spec has no Cluster document")?;
    let profile = docs
        .iter()
        .find_map(|d| match d {
            Document::ClusterProfile(p)
                if p.name == cluster.profile.name && p.version == cluster.profile.version =>
            {
                Some(p.clone())
            }
            _ => None,
        })
        .ok_or_else(|| {
            format!(
                "the spec has no ClusterProfile {} version {}",
                cluster.profile.name, cluster.profile.version
            )
        })?;
    let endpoint = endpoint
        .map(str::to_string)
        .unwrap_or_else(|| format!("{}-api.spectro.internal:6443", cluster.name));
    let pki = ClusterPki::generate()?;
    std::fs::create_dir_all(out)?;
    for (file, role) in [
        ("init.yaml", BootstrapRole::Init),
        ("join-control-plane.yaml", BootstrapRole::JoinControlPlane),
        ("join-worker.yaml", BootstrapRole::JoinWorker),
    ] {
        let data = user_data(&NodeBootstrap {
            cluster: &cluster,
            profile: &profile,
            pki: &pki,
            endpoint: &endpoint,
            role,
        })?;
        write_private(&out.join(file), data.as_bytes())?;
        println!("{}: {} bytes", out.join(file).display(), data.len());
    }
    let kc = pki.admin_kubeconfig(&cluster.name, &endpoint);
    write_private(&out.join("admin.kubeconfig"), kc.expose().as_bytes())?;
    println!(
        "{}: admin kubeconfig for https://{endpoint}",
        out.join("admin.kubeconfig").display()
    );
    Ok(())
}

/// Writes a file only its owner can read (it holds private keys).
fn write_private(path: &PathBuf, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}

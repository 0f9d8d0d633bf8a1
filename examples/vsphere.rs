//! Provisions a vSphere cluster from a YAML spec:
//!
//!     cargo run --example vsphere --features vsphere -- SPEC.yaml [--delete]
//!
//! SPEC.yaml holds the Cluster, its ClusterProfile, and (for static IPs) the
//! PrivateCloudGateway and IpPools. The cluster's `cloudAccount` is built from the vSphere
//! Terraform provider's variables: `VSPHERE_SERVER`, `VSPHERE_USER`, `VSPHERE_PASSWORD`,
//! `VSPHERE_ALLOW_UNVERIFIED_SSL`. Streams conditions and events until the cluster runs and
//! prints the vCenter calls; with `--delete` it then deletes the cluster and exits non-zero
//! if any of its VMs or IP addresses remain. `examples/specs/vsphere-vcsim.yaml` targets
//! vcsim (`scripts/vcsim`).

use std::sync::Arc;
use std::time::Duration;

use spectro::model::document::{parse_documents, Format};
use spectro::model::{CloudAccount, CloudPlacement, Credentials, Document, VsphereCredentials};
use spectro::secret::Secret;
use spectro::store::Store;
use spectro::vsphere::api::Vcenter;
use spectro::vsphere::vim::{Connection, VimVcenter};
use spectro::vsphere::VsphereProvider;
use spectro::{Engine, EngineConfig, SqliteStore};

mod common;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn env(name: &str) -> Result<String, Error> {
    std::env::var(name).map_err(|_| format!("{name} is not set").into())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let spec_file = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .ok_or("usage: vsphere SPEC.yaml [--delete]")?;
    let delete = args.iter().any(|a| a == "--delete");
    let text = std::fs::read_to_string(spec_file)?;
    let (docs, failures) = parse_documents(&text, Format::Yaml);
    if let Some(f) = failures.first() {
        return Err(format!("{spec_file}: {}", f.violations[0]).into());
    }
    let server = env("VSPHERE_SERVER")?;
    let user = env("VSPHERE_USER")?;
    let password = env("VSPHERE_PASSWORD")?;
    let insecure = std::env::var("VSPHERE_ALLOW_UNVERIFIED_SSL")
        .map(|v| matches!(v.as_str(), "true" | "1" | "yes"))
        .unwrap_or(false);

    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(dir.path().join("spectro.db"))?);
    let provider = Arc::new(VsphereProvider::default());
    let engine = Engine::builder(store.clone())
        .provider(provider.clone())
        .config(EngineConfig {
            poll_interval: Duration::from_secs(2),
            ..Default::default()
        })
        .start()
        .await?;
    let cluster = docs
        .iter()
        .find_map(|d| match d {
            Document::Cluster(c) => Some(c.clone()),
            _ => None,
        })
        .ok_or("the spec has no Cluster")?;
    let gateway = docs.iter().find_map(|d| match d {
        Document::PrivateCloudGateway(g) => Some(g.name.clone()),
        _ => None,
    });
    let account = CloudAccount {
        name: cluster.cloud_account.clone(),
        credentials: Credentials::Vsphere(VsphereCredentials {
            gateway: gateway.unwrap_or_else(|| "default".into()),
            vcenter_host: server.clone(),
            username: user.clone(),
            password: Secret::new(password.clone()),
            insecure,
        }),
    };
    engine.put_cloud_account(&account).await?;
    engine.verify_cloud_account(&account.name).await?;
    let (id, printer) =
        common::declare_and_run(&engine, docs, &cluster.name, Duration::from_secs(3600)).await?;
    common::print_calls("create", provider.calls(&account).await);
    let mut left = 0;
    if delete {
        common::delete_and_wait(&engine, id, Duration::from_secs(3600)).await?;
        common::print_calls("create + delete", provider.calls(&account).await);
        // Verify with a session of our own: no VM of the cluster in its folder.
        let CloudPlacement::Vsphere(v) = &cluster.cloud else {
            return Err("not a vSphere cluster".into());
        };
        let vc = VimVcenter::connect(&Connection {
            host: server,
            user,
            password,
            insecure,
        })
        .await?;
        let path = spectro::vsphere::provider::folder_path(&v.datacenter, &v.folder);
        let folder = vc.find_by_path(&path).await?.ok_or("the folder is gone")?;
        for vm in vc.list_vms(&[folder]).await? {
            if !vm.name.starts_with(&format!("{}-", cluster.name)) {
                continue;
            }
            if let Some(d) = vc.vm_details(&vm.vm).await? {
                if d.extra_config.get("spectro.cluster-id") == Some(&id.to_string()) {
                    println!("  left: VM {} ({})", vm.name, vm.vm.id);
                    left += 1;
                }
            }
        }
        let leases = store.ip_leases(None, Some(id)).await?;
        for l in &leases {
            println!(
                "  left: address #{} of pool {} ({})",
                l.offset, l.pool, l.owner
            );
        }
        left += leases.len();
        println!("VMs and addresses of the cluster left: {left}");
        vc.close().await;
    }
    printer.abort();
    engine.shutdown().await;
    if left > 0 {
        return Err(format!("{left} VM(s) or address(es) remain").into());
    }
    Ok(())
}

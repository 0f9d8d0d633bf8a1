//! Provisions a GCP cluster from a YAML spec:
//!
//!     cargo run --example gcp --features gcp -- SPEC.yaml [--delete]
//!
//! SPEC.yaml holds the Cluster and its ClusterProfile (a CloudAccount document is ignored);
//! the cluster's `cloudAccount` holds the service-account key file that
//! `GOOGLE_APPLICATION_CREDENTIALS` names; `SPECTRO_GCE_ENDPOINT` points it at another
//! Compute Engine endpoint, e.g. the fake behind Prism that `scripts/gcp-fake` starts.
//! Streams conditions and events until the cluster runs and prints the Compute calls per
//! operation; with `--delete` it then deletes the cluster and exits non-zero if anything of
//! it remains in the project.

use std::sync::Arc;
use std::time::Duration;

use spectro::gcp::{GcpConnector, GcpProvider};
use spectro::model::{
    CloudAccount, CloudPlacement, ClusterProfile, Credentials, Document, GcpCredentials,
};
use spectro::provider::ClusterContext;
use spectro::secret::Secret;
use spectro::{Engine, EngineConfig, SqliteStore};

mod common;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let spec_file = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .ok_or("usage: gcp SPEC.yaml [--delete]")?;
    let delete = args.iter().any(|a| a == "--delete");
    let (docs, cluster) = common::load_spec(spec_file)?;
    if !matches!(cluster.cloud, CloudPlacement::Gcp(_)) {
        return Err("the Cluster is not a GCP cluster (cloud.gcp)".into());
    }
    let key_file = std::env::var("GOOGLE_APPLICATION_CREDENTIALS")
        .map_err(|_| "GOOGLE_APPLICATION_CREDENTIALS is not set (a service-account key file)")?;
    let key = std::fs::read_to_string(&key_file).map_err(|e| format!("{key_file}: {e}"))?;
    let account = CloudAccount {
        name: cluster.cloud_account.clone(),
        credentials: Credentials::Gcp(GcpCredentials {
            service_account_json: Secret::new(key),
        }),
    };
    let mut connector = GcpConnector::default();
    if let Ok(endpoint) = std::env::var("SPECTRO_GCE_ENDPOINT") {
        connector = connector
            .with_endpoint(endpoint)
            .with_polling(Duration::from_millis(200), Duration::from_secs(2));
    }
    let provider = Arc::new(GcpProvider::new(connector));
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(dir.path().join("spectro.db"))?);
    let engine = Engine::builder(store)
        .provider(provider.clone())
        .config(EngineConfig {
            poll_interval: Duration::from_secs(2),
            ..Default::default()
        })
        .start()
        .await?;
    engine.put_cloud_account(&account).await?;
    engine.verify_cloud_account(&account.name).await?;
    let profile: Option<ClusterProfile> = docs.iter().find_map(|d| match d {
        Document::ClusterProfile(p) => Some(p.clone()),
        _ => None,
    });
    let (id, printer) =
        common::declare_and_run(&engine, docs, &cluster.name, Duration::from_secs(1800)).await?;
    common::print_calls("create", provider.calls().snapshot());
    let mut left = 0;
    if delete {
        common::delete_and_wait(&engine, id, Duration::from_secs(1800)).await?;
        common::print_calls("create + delete", provider.calls().snapshot());
        let ctx = ClusterContext {
            cluster_id: id,
            spec: cluster.clone(),
            profile: profile.ok_or("the spec has no ClusterProfile")?,
            account,
            vip: None,
            image: None,
            deleting: false,
        };
        let remaining = spectro::gcp::network::remaining(&provider.gce(&ctx).await?, &ctx).await?;
        for r in &remaining {
            println!("left: {} {}", r.kind, r.id);
        }
        left = remaining.len();
        println!("resources of the cluster left: {left}");
    }
    printer.abort();
    engine.shutdown().await;
    if left > 0 {
        return Err(format!("{left} resource(s) remain").into());
    }
    Ok(())
}

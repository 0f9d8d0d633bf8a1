//! Provisions an Azure cluster from a YAML spec:
//!
//!     cargo run --example azure --features azure -- SPEC.yaml [--delete]
//!
//! SPEC.yaml holds the Cluster and its ClusterProfile (a CloudAccount document is ignored);
//! the cluster's `cloudAccount` is built from the standard Azure variables
//! (`AZURE_CLIENT_ID`, `AZURE_TENANT_ID`, `AZURE_CLIENT_SECRET`, `AZURE_SUBSCRIPTION_ID`);
//! `AZURE_RESOURCE_MANAGER_ENDPOINT` and `AZURE_AUTHORITY_HOST` point it at another cloud,
//! e.g. the ARM fake behind Prism that `scripts/azure-fake` starts. Streams conditions and
//! events until the cluster runs and prints the ARM calls per operation; with `--delete` it
//! then deletes the cluster and exits non-zero if anything of it remains in its resource
//! group.

use std::sync::Arc;
use std::time::Duration;

use spectro::azure::{AzureConnector, AzureProvider};
use spectro::model::{AzureCredentials, CloudAccount, CloudPlacement, Credentials};
use spectro::secret::Secret;
use spectro::{Engine, EngineConfig, SqliteStore};

mod common;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn var(name: &str) -> Result<String, Error> {
    std::env::var(name).map_err(|_| format!("{name} is not set").into())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let spec_file = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .ok_or("usage: azure SPEC.yaml [--delete]")?;
    let delete = args.iter().any(|a| a == "--delete");
    let (docs, cluster) = common::load_spec(spec_file)?;
    let CloudPlacement::Azure(placement) = &cluster.cloud else {
        return Err("the Cluster is not an Azure cluster (cloud.azure)".into());
    };
    let creds = AzureCredentials {
        client_id: var("AZURE_CLIENT_ID")?,
        tenant_id: var("AZURE_TENANT_ID")?,
        client_secret: Secret::new(var("AZURE_CLIENT_SECRET")?),
        subscription_id: Some(
            std::env::var("AZURE_SUBSCRIPTION_ID")
                .unwrap_or_else(|_| placement.subscription_id.clone()),
        ),
    };
    let account = CloudAccount {
        name: cluster.cloud_account.clone(),
        credentials: Credentials::Azure(creds.clone()),
    };
    let connector = AzureConnector::from_env();
    let provider = Arc::new(AzureProvider::new(connector.clone()));
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
    let (id, printer) =
        common::declare_and_run(&engine, docs, &cluster.name, Duration::from_secs(1800)).await?;
    common::print_calls("create", provider.calls().snapshot());
    let mut left = 0;
    if delete {
        common::delete_and_wait(&engine, id, Duration::from_secs(1800)).await?;
        common::print_calls("create + delete", provider.calls().snapshot());
        let arm = connector.arm(&creds, &placement.subscription_id);
        let remaining =
            spectro::azure::network::remaining(&arm, &placement.resource_group, id).await?;
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

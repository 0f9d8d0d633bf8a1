//! Provisions an AWS cluster from a YAML spec:
//!
//!     cargo run --example aws --features aws -- SPEC.yaml [--delete]
//!
//! SPEC.yaml holds the Cluster and its ClusterProfile (other documents are ignored); the
//! cluster's `cloudAccount` is built from the standard AWS environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`); `AWS_ENDPOINT_URL` points it at moto.
//! Streams conditions and events until the cluster runs and prints the API calls per
//! operation; with `--delete` it then deletes the cluster and exits non-zero if anything
//! tagged for it remains.

use std::sync::Arc;
use std::time::Duration;

use spectro::aws::{AwsConnector, AwsProvider};
use spectro::model::{AwsCredentials, CloudAccount, Credentials};
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
        .ok_or("usage: aws SPEC.yaml [--delete]")?;
    let delete = args.iter().any(|a| a == "--delete");
    let (docs, cluster) = common::load_spec(spec_file)?;
    let key = std::env::var("AWS_ACCESS_KEY_ID").map_err(|_| "AWS_ACCESS_KEY_ID is not set")?;
    let secret =
        std::env::var("AWS_SECRET_ACCESS_KEY").map_err(|_| "AWS_SECRET_ACCESS_KEY is not set")?;
    let creds = AwsCredentials {
        access_key_id: key,
        secret_access_key: Secret::new(secret),
    };
    let account = CloudAccount {
        name: cluster.cloud_account.clone(),
        credentials: Credentials::Aws(creds.clone()),
    };
    let provider = Arc::new(AwsProvider::new(AwsConnector::from_env()));
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
        let c = AwsConnector::from_env().clients(&creds, cluster.cloud.region());
        left = spectro::aws::network::observe(&c, &id.to_string())
            .await?
            .resources
            .len()
            + spectro::aws::machines::list_all(&c, &id.to_string())
                .await?
                .len();
        println!("resources tagged for the cluster left: {left}");
    }
    printer.abort();
    engine.shutdown().await;
    if left > 0 {
        return Err(format!("{left} resource(s) remain").into());
    }
    Ok(())
}

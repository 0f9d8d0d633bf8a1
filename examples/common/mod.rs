//! Shared by the cloud examples (aws, azure, gcp, vsphere): loading a spec file, declaring
//! its documents and waiting for the cluster, the event stream, the conditions and endpoint
//! of a running cluster, and API-call counts.
#![allow(dead_code)]

use std::collections::BTreeMap;

use futures_util::StreamExt;
use spectro::engine::status::ClusterRecord;
use spectro::{ClusterId, Engine};

/// Prints the cluster's events (stored, then live) until the returned task is aborted.
pub fn print_events(engine: &Engine, id: ClusterId) -> tokio::task::JoinHandle<()> {
    let mut events = Box::pin(engine.watch_events(Some(id), 0));
    tokio::spawn(async move {
        while let Some(Ok(e)) = events.next().await {
            println!(
                "  event {:>7} {:<22} {}",
                e.severity.as_str(),
                e.reason,
                e.message
            );
        }
    })
}

/// Prints the milestone conditions and the API endpoint of a running cluster.
pub fn print_running(rec: &ClusterRecord) {
    for c in &rec.status.conditions {
        println!(
            "  condition {:<28} {:?}: {}",
            c.kind.label(),
            c.status,
            c.message
        );
    }
    println!(
        "running; API endpoint {}",
        rec.status
            .infrastructure
            .as_ref()
            .and_then(|i| i.endpoint.clone())
            .unwrap_or_default()
    );
}

/// Prints API calls by operation under a title with their total.
pub fn print_calls(title: &str, calls: BTreeMap<String, u64>) {
    println!("{title}: {} API calls", calls.values().sum::<u64>());
    for (op, n) in calls {
        println!("    {op:<50} {n}");
    }
}

/// The documents of a spec file and its Cluster (the examples' shared loading).
pub fn load_spec(
    spec_file: &str,
) -> Result<
    (Vec<spectro::model::Document>, spectro::model::Cluster),
    Box<dyn std::error::Error + Send + Sync>,
> {
    use spectro::model::document::{parse_documents, Format};
    use spectro::model::Document;
    let text = std::fs::read_to_string(spec_file)?;
    let (docs, failures) = parse_documents(&text, Format::Yaml);
    if let Some(f) = failures.first() {
        return Err(format!("{spec_file}: {}", f.violations[0]).into());
    }
    let cluster = docs
        .iter()
        .find_map(|d| match d {
            Document::Cluster(c) => Some(c.clone()),
            _ => None,
        })
        .ok_or("the spec has no Cluster")?;
    Ok((docs, cluster))
}

/// Declares every document but the CloudAccount (the examples build the account from the
/// environment), prints the cluster's events, waits until it runs and prints it: the
/// cluster's id and the event printer (abort it when done).
pub async fn declare_and_run(
    engine: &Engine,
    docs: Vec<spectro::model::Document>,
    name: &str,
    timeout: std::time::Duration,
) -> Result<(ClusterId, tokio::task::JoinHandle<()>), Box<dyn std::error::Error + Send + Sync>> {
    use spectro::model::Document;
    let rest: Vec<Document> = docs
        .into_iter()
        .filter(|d| !matches!(d, Document::CloudAccount(_)))
        .collect();
    let id = engine
        .apply_all(&rest)
        .await?
        .iter()
        .find_map(|a| a.cluster)
        .ok_or("the spec has no Cluster")?;
    println!("cluster {name} ({id}) declared");
    let printer = print_events(engine, id);
    let rec = engine
        .wait_for_phase(id, spectro::engine::status::Phase::Running, timeout)
        .await?;
    print_running(&rec);
    Ok((id, printer))
}

/// Deletes the cluster and waits until it is gone.
pub async fn delete_and_wait(
    engine: &Engine,
    id: ClusterId,
    timeout: std::time::Duration,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    engine.delete_cluster(id).await?;
    engine
        .wait_for_phase(id, spectro::engine::status::Phase::Deleted, timeout)
        .await?;
    Ok(())
}

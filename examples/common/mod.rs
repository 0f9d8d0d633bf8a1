//! Output shared by the cloud examples (aws, vsphere): the event stream, the conditions and
//! endpoint of a running cluster, and API-call counts.
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

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

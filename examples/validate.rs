//! Validates spec files: `cargo run --example validate -- FILE...`
//!
//! Every document of every file is checked; objects defined in any of the files (profiles,
//! accounts, IP pools, gateways) are used to check the clusters' references. Each violation
//! prints as `path: rule`; the exit code is 1 when there is any.

use std::process::ExitCode;

use spectro::model::document::{parse_documents, Format};
use spectro::validate::{validate_document, Catalog};

fn main() -> ExitCode {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        eprintln!("usage: validate FILE...");
        return ExitCode::from(2);
    }
    let mut parsed = Vec::new();
    let mut bad = 0usize;
    for f in &files {
        match std::fs::read_to_string(f) {
            Ok(text) => parsed.push((f, parse_documents(&text, Format::from_path(f)))),
            Err(e) => {
                println!("{f}: cannot read: {e}");
                bad += 1;
            }
        }
    }
    let mut catalog = Catalog::default();
    for (_, (docs, _)) in &parsed {
        docs.iter().for_each(|d| catalog.insert(d));
    }
    for (f, (docs, failures)) in &parsed {
        for failure in failures {
            println!("{f} (document {}):", failure.index + 1);
            for v in &failure.violations {
                println!("  {v}");
                bad += 1;
            }
        }
        for d in docs {
            let violations = validate_document(d, &catalog);
            if violations.is_empty() {
                println!("{f}: {} {}: ok", d.kind(), d.name());
            } else {
                println!("{f}: {} {}:", d.kind(), d.name());
                for v in &violations {
                    println!("  {v}");
                }
                bad += violations.len();
            }
        }
    }
    if bad > 0 {
        println!("{bad} violation(s)");
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

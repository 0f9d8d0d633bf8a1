//! The layering rules of spectro-core, checked on the source.
//!
//! From the bottom up:
//! 1. `model`, `validate`, `secret`, `schema`, `clock`, `error`: plain data and pure rules;
//!    they import neither `engine` nor `store` (nor `records`, `sim`, `bootstrap`).
//! 2. `provider` (the cloud contract), `records` (what the store keeps: cluster record,
//!    status, conditions, events, intents), `ipam`, `bootstrap`, `monitoring` (health, usage
//!    and services from the agent's reports): import neither `engine` nor `store`.
//! 3. `store` (the trait and the SQLite and PostgreSQL stores): imports `records`, never
//!    `engine`.
//! 4. `engine::planner`: pure, imports `records`, never `store` (nor the executor, the work
//!    queue or anything else of the engine that does I/O).
//! 5. `engine`: everything above.
//!
//! And nothing in spectro-core imports a cloud SDK: clouds live in their provider crates.
//!
//! The check resolves every `crate::…`, `super::…` and `self::…` path in the code (comments
//! and string literals stripped) to the top-level module it names, so grouped imports
//! (`use crate::{engine, …}`) and relative paths (`super::super::engine`) count too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Modules that must not be named from a file: (files under, forbidden top-level modules).
const RULES: &[(&str, &[&str])] = &[
    (
        "model",
        &[
            "engine",
            "store",
            "records",
            "sim",
            "bootstrap",
            "ipam",
            "workload",
        ],
    ),
    (
        "validate",
        &["engine", "store", "records", "sim", "bootstrap"],
    ),
    ("secret.rs", &["engine", "store", "records"]),
    ("schema.rs", &["engine", "store", "records"]),
    ("clock.rs", &["engine", "store", "records"]),
    // `CoreError::Timeout` carries the cluster's `Phase`, plain data from `records`.
    ("error.rs", &["engine", "store"]),
    ("provider.rs", &["engine", "store"]),
    // The workload-cluster traits and view: provider data and secrets only.
    (
        "workload.rs",
        &["engine", "store", "records", "sim", "bootstrap"],
    ),
    ("budget.rs", &["engine", "store", "records"]),
    ("records", &["engine", "store"]),
    ("ipam.rs", &["engine", "store"]),
    ("bootstrap", &["engine", "store"]),
    // Health, usage and services: pure judgements over the agent's reports.
    ("monitoring", &["engine", "store", "records", "sim"]),
    ("sim", &["engine", "store"]),
    ("store", &["engine"]),
    ("engine/planner.rs", &["store", "sim"]),
];

/// Paths inside the engine the planner must not use (I/O lives there).
const PLANNER_FORBIDDEN_ENGINE: &[&str] = &["executor", "queue", "update", "seed", "Inner"];

/// Crate names of cloud SDKs as they appear in Rust paths and in Cargo.toml (with `-` as
/// `_`): a name ending in `_` is a prefix, any other must match exactly.
const CLOUD_SDKS: &[&str] = &[
    "aws_sdk_",
    "aws_config",
    "aws_smithy_",
    "aws_types",
    "aws_credential_types",
    "azure_",
    "google_cloud_",
    "gcp_auth",
    "vim_rs",
    "kube",
    "k8s_openapi",
];

fn is_cloud_sdk(name: &str) -> bool {
    CLOUD_SDKS
        .iter()
        .any(|sdk| name == *sdk || (sdk.ends_with('_') && name.starts_with(sdk)))
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a Rust file without comments, string and char literals (their contents
/// become spaces, so positions and line numbers stay).
fn strip(code: &str) -> String {
    let b: Vec<char> = code.chars().collect();
    let mut out = String::with_capacity(code.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && (i == 0 || !(b[i - 1].is_alphanumeric() || b[i - 1] == '_'))
        {
            // Raw string r"…" / r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            for _ in i..=j {
                out.push(' ');
            }
            i = j + 1;
            while i < b.len() {
                if b[i] == '"' && (1..=hashes).all(|k| b.get(i + k) == Some(&'#')) {
                    for _ in 0..=hashes {
                        out.push(' ');
                    }
                    i += hashes + 1;
                    break;
                }
                out.push(blank(b[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < b.len() {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\''
            && (next == Some('\\') && b.get(i + 3) == Some(&'\'') || b.get(i + 2) == Some(&'\''))
        {
            // A char literal ('x' or '\n'); lifetimes ('a) stay.
            let len = if next == Some('\\') { 4 } else { 3 };
            for _ in 0..len {
                out.push(' ');
            }
            i += len;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The module path of a source file (`src/store/sqlite.rs` → `["store", "sqlite"]`).
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod") | Some("lib")) {
        parts.pop();
    }
    parts
}

fn ident_at(s: &[char], mut i: usize) -> (String, usize) {
    let mut id = String::new();
    while i < s.len() && (s[i].is_alphanumeric() || s[i] == '_') {
        id.push(s[i]);
        i += 1;
    }
    (id, i)
}

fn skip_ws(s: &[char], mut i: usize) -> usize {
    while i < s.len() && s[i].is_whitespace() {
        i += 1;
    }
    i
}

/// The absolute paths (as segments) a path starting at `i` names; a group `{a, b::c}`
/// yields one path per member (first segments only matter for the rules).
fn paths_from(s: &[char], i: usize, base: Vec<String>, out: &mut Vec<(Vec<String>, usize)>) {
    let mut cur = base;
    let mut i = i;
    loop {
        i = skip_ws(s, i);
        if s.get(i) == Some(&'{') {
            // A group: each member continues from `cur`.
            i += 1;
            loop {
                i = skip_ws(s, i);
                match s.get(i) {
                    None => return,
                    Some('}') => return,
                    Some(',') => i += 1,
                    _ => {
                        let start = i;
                        paths_from(s, i, cur.clone(), out);
                        // Skip this member (nested groups included).
                        let mut depth = 0;
                        i = start;
                        while let Some(&c) = s.get(i) {
                            match c {
                                '{' => depth += 1,
                                '}' if depth == 0 => break,
                                '}' => depth -= 1,
                                ',' if depth == 0 => break,
                                _ => {}
                            }
                            i += 1;
                        }
                    }
                }
            }
        }
        let (id, j) = ident_at(s, i);
        if id.is_empty() {
            out.push((cur, i));
            return;
        }
        match id.as_str() {
            "crate" => cur.clear(),
            "super" => {
                cur.pop();
            }
            "self" => {}
            _ => cur.push(id),
        }
        i = skip_ws(s, j);
        if s.get(i) == Some(&':') && s.get(i + 1) == Some(&':') {
            i += 2;
        } else {
            out.push((cur, i));
            return;
        }
    }
}

/// Every crate-internal path a file names, resolved to absolute segments, with its line.
fn internal_paths(file: &Path, code: &str) -> Vec<(Vec<String>, usize)> {
    let s: Vec<char> = strip(code).chars().collect();
    let module = module_of(file);
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let boundary =
            i == 0 || !(s[i - 1].is_alphanumeric() || s[i - 1] == '_' || s[i - 1] == ':');
        if boundary {
            let (id, j) = ident_at(&s, i);
            let k = skip_ws(&s, j);
            let path_follows = s.get(k) == Some(&':') && s.get(k + 1) == Some(&':');
            let base = match id.as_str() {
                "crate" if path_follows => Some(Vec::new()),
                "super" | "self" if path_follows => Some(module.clone()),
                _ => None,
            };
            if let Some(base) = base {
                let line = s[..i].iter().filter(|c| **c == '\n').count() + 1;
                let mut found = Vec::new();
                paths_from(&s, i, base, &mut found);
                out.extend(found.into_iter().map(|(p, _)| (p, line)));
                i = j;
                continue;
            }
            if !id.is_empty() {
                i = j;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// `use`d crate names and path roots of a file (for the cloud SDK rule).
fn external_roots(code: &str) -> BTreeSet<String> {
    let s: Vec<char> = strip(code).chars().collect();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < s.len() {
        let boundary =
            i == 0 || !(s[i - 1].is_alphanumeric() || s[i - 1] == '_' || s[i - 1] == ':');
        let (id, j) = ident_at(&s, i);
        if boundary && !id.is_empty() {
            let k = skip_ws(&s, j);
            if s.get(k) == Some(&':') && s.get(k + 1) == Some(&':') {
                out.insert(id);
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

fn violations() -> Vec<String> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    let mut bad = Vec::new();
    for file in &files {
        let rel = file
            .strip_prefix(src())
            .expect("under src")
            .to_string_lossy()
            .replace('\\', "/");
        if rel == "layers.rs" {
            continue;
        }
        let code = std::fs::read_to_string(file).expect("read source");
        let paths = internal_paths(file, &code);
        for (under, forbidden) in RULES {
            let applies = rel == *under || rel.starts_with(&format!("{under}/"));
            if !applies {
                continue;
            }
            for (path, line) in &paths {
                if let Some(top) = path.first() {
                    if forbidden.contains(&top.as_str()) {
                        bad.push(format!(
                            "src/{rel}:{line}: names crate::{} ({under} must not import {top})",
                            path.join("::")
                        ));
                    }
                }
            }
        }
        if rel == "engine/planner.rs" {
            for (path, line) in &paths {
                if path.first().map(String::as_str) == Some("engine")
                    && path
                        .get(1)
                        .is_some_and(|m| PLANNER_FORBIDDEN_ENGINE.contains(&m.as_str()))
                {
                    bad.push(format!(
                        "src/{rel}:{line}: names crate::{} (the planner is pure: no executor, queue or engine state)",
                        path.join("::")
                    ));
                }
            }
        }
        for root in external_roots(&code) {
            if is_cloud_sdk(&root) {
                bad.push(format!("src/{rel}: uses the cloud SDK {root}"));
            }
        }
    }
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .expect("read Cargo.toml");
    for line in manifest.lines() {
        let name = line
            .split(['=', ' ', '.'])
            .next()
            .unwrap_or("")
            .replace('-', "_");
        if is_cloud_sdk(&name) {
            bad.push(format!(
                "Cargo.toml: depends on the cloud SDK {}",
                line.trim()
            ));
        }
    }
    bad
}

#[test]
fn layering_rules_hold() {
    let bad = violations();
    assert!(
        bad.is_empty(),
        "layering rules broken (see src/layers.rs):\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_checker_sees_what_the_rules_forbid() {
    let file = src().join("store/sqlite.rs");
    let found = |code: &str| -> Vec<String> {
        internal_paths(&file, code)
            .into_iter()
            .map(|(p, _)| p.join("::"))
            .collect()
    };
    assert_eq!(
        found("use crate::engine::status::Phase;"),
        ["engine::status::Phase"]
    );
    assert_eq!(
        found("use crate::{error::Result, engine::event::{Event, Severity}};"),
        [
            "error::Result",
            "engine::event::Event",
            "engine::event::Severity"
        ]
    );
    assert_eq!(found("use super::super::engine::Inner;"), ["engine::Inner"]);
    assert_eq!(found("use super::Store;"), ["store::Store"]);
    assert_eq!(
        found("fn f() -> crate :: engine :: Engine {}"),
        ["engine::Engine"]
    );
    // Comments and strings are not imports.
    assert!(found("// crate::engine\n/* crate::engine */ let s = \"crate::engine\";").is_empty());
    assert_eq!(
        found("let c = '\"'; use crate::engine::X; let r = r#\"crate::store\"#;"),
        ["engine::X"]
    );
    assert!(external_roots("use aws_sdk_ec2::Client;").contains("aws_sdk_ec2"));
    assert!(!external_roots("// aws_sdk_ec2::Client").contains("aws_sdk_ec2"));
}

//! What the command line prints: tables and text for people (colours only on a terminal, a
//! spinner while waiting), JSON or YAML for scripts. Specs are shown redacted (the support
//! bundle's rule: secret-named keys, URL passwords, Kubernetes `Secret` data).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use spectro::engine::condition::ConditionStatus;
use spectro::engine::event::{Event, Severity};
use spectro::engine::status::{ClusterRecord, Phase};
use spectro::engine::Explanation;

use crate::OutputFormat;

/// A table: a header and rows, columns padded to the widest cell.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column names.
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self) -> String {
        let width = |s: &str| strip_ansi(s).chars().count();
        let mut w: Vec<usize> = self.header.iter().map(|h| width(h)).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if i < w.len() {
                    w[i] = w[i].max(width(c));
                }
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                s.push_str(c);
                if i + 1 < cells.len() {
                    s.push_str(&" ".repeat(w[i].saturating_sub(width(c)) + 3));
                }
            }
            s.trim_end().to_string()
        };
        let mut out = vec![line(&self.header)];
        out.extend(self.rows.iter().map(|r| line(r)));
        out.join("\n") + "\n"
    }
}

/// Text without ANSI colour codes (for widths).
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut esc = false;
    for ch in s.chars() {
        match (esc, ch) {
            (false, '\u{1b}') => esc = true,
            (true, 'm') => esc = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

/// YAML text of a value.
pub fn yaml_text(v: &Value) -> String {
    serde_norway::to_string(v).unwrap_or_else(|e| format!("# not representable: {e}\n"))
}

/// A JSON value with the secrets redacted.
pub fn redacted(v: &Value) -> Value {
    let mut v = v.clone();
    spectro::engine::redact(&mut v);
    v
}

/// A cluster for scripts: identity, redacted spec, status.
pub fn cluster_json(rec: &ClusterRecord) -> Value {
    redacted(&serde_json::json!({
        "id": rec.id.to_string(),
        "name": rec.spec.name,
        "generation": rec.generation,
        "spec": rec.spec,
        "status": rec.status,
    }))
}

/// Where output goes, and how.
pub struct Out {
    format: OutputFormat,
    colour: bool,
}

impl Out {
    /// Output in `format`; colours when standard output is a terminal (and `NO_COLOR` is
    /// not set).
    pub fn new(format: OutputFormat) -> Self {
        Out {
            format,
            colour: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.colour {
            format!("\u{1b}[{code}m{s}\u{1b}[0m")
        } else {
            s.to_string()
        }
    }

    /// A phase, coloured by how it is going.
    pub fn phase(&self, p: Phase) -> String {
        let code = match p {
            Phase::Running => "32",
            Phase::Deleting | Phase::Deleted => "90",
            _ => "33",
        };
        self.paint(code, p.as_str())
    }

    /// A table for people, or `json` as JSON / YAML.
    pub fn show(&self, table: &Table, json: &[Value]) {
        match self.format {
            OutputFormat::Table => print!("{}", table.render()),
            _ => self.value(&Value::Array(json.to_vec())),
        }
    }

    /// Text for people, or `json` as JSON / YAML.
    pub fn show_value(&self, text: &str, json: &Value) {
        match self.format {
            OutputFormat::Table => println!("{}", text.trim_end()),
            _ => self.value(json),
        }
    }

    fn value(&self, v: &Value) {
        match self.format {
            OutputFormat::Yaml => print!("{}", yaml_text(v)),
            _ => println!(
                "{}",
                serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into())
            ),
        }
    }

    /// A message for people: on standard output for tables, on standard error otherwise
    /// (scripts read only JSON / YAML from standard output).
    pub fn note(&self, s: &str) {
        match self.format {
            OutputFormat::Table => println!("{s}"),
            _ => eprintln!("{s}"),
        }
    }

    /// One event (a line, or one JSON object per line).
    pub fn event(&self, e: &Event) {
        match self.format {
            OutputFormat::Table => {
                let sev = match e.severity {
                    Severity::Error => self.paint("31", "error"),
                    Severity::Warning => self.paint("33", "warning"),
                    _ => "info".to_string(),
                };
                println!(
                    "{}  {sev:<7}  {:<24}  {}",
                    e.time.format("%Y-%m-%d %H:%M:%S"),
                    e.reason,
                    e.message
                );
            }
            OutputFormat::Json => println!(
                "{}",
                serde_json::to_string(e).unwrap_or_else(|_| "null".into())
            ),
            OutputFormat::Yaml => print!(
                "---\n{}",
                yaml_text(&serde_json::to_value(e).unwrap_or(Value::Null))
            ),
        }
    }

    /// A spinner while waiting (hidden unless a terminal shows the table output).
    pub fn spinner(&self, what: &str) -> ProgressBar {
        if self.format != OutputFormat::Table || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            pb.set_style(style);
        }
        pb.set_message(what.to_string());
        pb.enable_steady_tick(std::time::Duration::from_millis(120));
        pb
    }

    /// A cluster in detail.
    pub fn describe(&self, rec: &ClusterRecord, why: Option<&Explanation>) {
        if self.format != OutputFormat::Table {
            let mut v = cluster_json(rec);
            if let (Some(e), Value::Object(m)) = (why, &mut v) {
                m.insert(
                    "blockers".into(),
                    serde_json::to_value(&e.blockers).unwrap_or(Value::Null),
                );
            }
            self.value(&v);
            return;
        }
        let s = &rec.status;
        println!("Name:         {}", rec.spec.name);
        println!("Id:           {}", rec.id);
        println!(
            "Cloud:        {} (account {})",
            rec.spec.cloud_type().as_str(),
            rec.spec.cloud_account
        );
        println!(
            "Profile:      {} {}",
            rec.spec.profile.name, rec.spec.profile.version
        );
        println!("Phase:        {}", self.phase(s.phase));
        println!(
            "Generation:   {} (observed {})",
            rec.generation, s.observed_generation
        );
        if let Some(ep) = s.infrastructure.as_ref().and_then(|i| i.endpoint.as_ref()) {
            println!("Endpoint:     {ep}");
        }
        if let Some(h) = &s.health {
            println!("Health:       {}", h.condition_status());
        }
        if let Some(e) = &s.last_error {
            println!("Last error:   {}", self.paint("31", e));
        }
        println!("Conditions:");
        let mut t = Table::new(&["  CONDITION", "STATUS", "REASON", "MESSAGE"]);
        for c in &s.conditions {
            let st = match c.status {
                ConditionStatus::Succeeded => self.paint("32", "Succeeded"),
                ConditionStatus::Failed => self.paint("31", "Failed"),
                other => format!("{other:?}"),
            };
            t.row(vec![
                format!("  {}", c.kind.label()),
                st,
                c.reason.clone(),
                c.message.clone(),
            ]);
        }
        print!("{}", t.render());
        println!("Node pools:");
        let mut t = Table::new(&["  POOL", "ROLE", "DESIRED", "READY", "OUTDATED"]);
        for p in &rec.spec.node_pools {
            let st = s.pools.get(&p.name);
            t.row(vec![
                format!("  {}", p.name),
                format!("{:?}", p.role),
                p.size.to_string(),
                st.map_or("0".into(), |x| x.ready.to_string()),
                st.map_or("0".into(), |x| x.outdated.to_string()),
            ]);
        }
        print!("{}", t.render());
        if !s.machines.is_empty() {
            println!("Machines:");
            let mut t = Table::new(&["  MACHINE", "POOL", "ZONE", "STATE", "ADDRESS", "READY"]);
            for m in &s.machines {
                t.row(vec![
                    format!("  {}", m.name),
                    m.pool.clone(),
                    m.zone.clone(),
                    format!(
                        "{:?}{}",
                        m.state,
                        if m.outdated { " (outdated)" } else { "" }
                    )
                    .to_lowercase(),
                    m.address.map_or("-".into(), |a| a.to_string()),
                    if m.ready { "yes" } else { "no" }.into(),
                ]);
            }
            print!("{}", t.render());
        }
        if let Some(e) = why {
            if e.blockers.is_empty() {
                println!("Blockers:     none");
            } else {
                println!("Blockers:");
                for b in &e.blockers {
                    println!("  - {:?} {:?}: {}", b.scope, b.kind, b.message);
                }
            }
        }
    }
}

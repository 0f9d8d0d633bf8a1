//! The dashboard's pages, rendered on the server: pure functions from what the engine knows
//! to HTML. Every text that comes from a spec, the cloud or a cluster is escaped; links into
//! a cluster (application services) are kept only when they are `http` or `https`.

use std::fmt::Write as _;

use spectro_core::engine::condition::ConditionStatus;
use spectro_core::engine::event::Event;
use spectro_core::engine::status::{ClusterRecord, Phase};
use spectro_core::engine::Explanation;
use spectro_core::monitoring::{AppService, Health, HealthStatus};

/// HTML-escapes `s` (text and attribute values).
#[must_use]
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a path segment (a cluster's name in a URL).
#[must_use]
pub fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// What a visitor may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No admin token is configured: the dashboard only shows.
    ReadOnly,
    /// A token is configured; this visitor has not signed in.
    SignedOut,
    /// Signed in: the cluster page offers scale, delete, abort and profile updates.
    SignedIn,
}

/// The page around `body`.
#[must_use]
pub fn layout(base: &str, title: &str, access: Access, body: &str) -> String {
    let session = match access {
        Access::ReadOnly => r#"<span class="muted">read-only</span>"#.to_string(),
        Access::SignedOut => format!(r#"<a href="{base}/login">Sign in</a>"#),
        Access::SignedIn => format!(
            r#"<form method="post" action="{base}/logout" class="inline"><button type="submit">Sign out</button></form>"#
        ),
    };
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{t} · spectro</title>
<link rel="stylesheet" href="{base}/assets/dashboard.css">
<script src="{base}/assets/dashboard.js" defer></script>
</head>
<body data-base="{base}">
<header><a class="brand" href="{base}/">spectro</a><nav>{session}</nav></header>
<main>
{body}
</main>
</body>
</html>
"#,
        t = esc(title),
    )
}

fn phase_badge(p: Phase) -> String {
    format!(
        r#"<span class="phase phase-{p}" data-phase="{p}">{p}</span>"#,
        p = p.as_str()
    )
}

fn health_badge(h: Option<&Health>) -> String {
    let (class, text) = match h.map(|h| h.status) {
        Some(HealthStatus::Healthy) => ("ok", "healthy"),
        Some(HealthStatus::Unhealthy) => ("bad", "unhealthy"),
        _ => ("unknown", "unknown"),
    };
    format!(r#"<span class="health health-{class}">{text}</span>"#)
}

/// A row of the cluster list.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRow {
    /// Name.
    pub name: String,
    /// Phase.
    pub phase: Phase,
    /// `healthy`, `unhealthy` or `unknown`.
    pub health: String,
    /// Cloud.
    pub cloud: String,
    /// Ready nodes.
    pub ready: u32,
    /// Desired nodes.
    pub desired: u32,
    /// The API server's endpoint.
    pub endpoint: Option<String>,
    /// The last error.
    pub last_error: Option<String>,
}

impl ClusterRow {
    /// The row of a cluster.
    #[must_use]
    pub fn of(rec: &ClusterRecord) -> Self {
        ClusterRow {
            name: rec.spec.name.clone(),
            phase: rec.status.phase,
            health: match rec.status.health.as_ref().map(|h| h.status) {
                Some(HealthStatus::Healthy) => "healthy",
                Some(HealthStatus::Unhealthy) => "unhealthy",
                _ => "unknown",
            }
            .into(),
            cloud: rec.spec.cloud_type().as_str().into(),
            ready: rec.status.pools.values().map(|p| p.ready).sum(),
            desired: rec.spec.node_pools.iter().map(|p| p.size).sum(),
            endpoint: rec
                .status
                .infrastructure
                .as_ref()
                .and_then(|i| i.endpoint.clone()),
            last_error: rec.status.last_error.clone(),
        }
    }
}

fn event_rows(events: &[(Event, Option<String>)], base: &str) -> String {
    let mut s = String::new();
    for (e, cluster) in events.iter().rev() {
        s.push_str(&event_row(e, cluster.as_deref(), base));
    }
    s
}

fn event_row(e: &Event, cluster: Option<&str>, base: &str) -> String {
    let who = cluster.map_or(String::new(), |n| {
        format!(
            r#"<td><a href="{base}/clusters/{}">{}</a></td>"#,
            seg(n),
            esc(n)
        )
    });
    format!(
        r#"<tr class="event sev-{sev}" data-seq="{seq}"><td class="time">{t}</td>{who}<td>{sev}</td><td>{r}</td><td>{m}</td></tr>"#,
        sev = e.severity.as_str(),
        seq = e.seq,
        t = e.time.format("%Y-%m-%d %H:%M:%S"),
        r = esc(&e.reason),
        m = esc(&e.message)
    )
}

/// The cluster list with the latest events of all clusters (live).
#[must_use]
pub fn cluster_list(
    base: &str,
    rows: &[ClusterRow],
    events: &[(Event, Option<String>)],
    last_seq: u64,
) -> String {
    let mut s = String::from(
        r#"<h1>Clusters</h1>
<table id="clusters" class="list"><thead><tr><th>Name</th><th>Phase</th><th>Health</th><th>Cloud</th><th>Nodes</th><th>Endpoint</th></tr></thead><tbody>"#,
    );
    if rows.is_empty() {
        s.push_str(r#"<tr class="none"><td colspan="6">No clusters yet.</td></tr>"#);
    }
    for r in rows {
        let _ = write!(
            s,
            r#"<tr class="cluster" data-cluster="{n}"><td><a href="{base}/clusters/{u}">{n}</a></td><td class="c-phase">{p}</td><td class="c-health"><span class="health health-{hc}">{h}</span></td><td>{c}</td><td class="c-nodes">{ready}/{desired}</td><td class="c-endpoint">{e}</td></tr>"#,
            n = esc(&r.name),
            u = seg(&r.name),
            p = phase_badge(r.phase),
            hc = match r.health.as_str() {
                "healthy" => "ok",
                "unhealthy" => "bad",
                _ => "unknown",
            },
            h = esc(&r.health),
            c = esc(&r.cloud),
            ready = r.ready,
            desired = r.desired,
            e = esc(r.endpoint.as_deref().unwrap_or("-")),
        );
    }
    let _ = write!(
        s,
        r#"</tbody></table>
<h2>Events</h2>
<table id="events" class="events" data-stream="{base}/events/stream?after={last_seq}" data-with-cluster="1"><thead><tr><th>Time</th><th>Cluster</th><th>Severity</th><th>Reason</th><th>Message</th></tr></thead><tbody>{}</tbody></table>"#,
        event_rows(events, base)
    );
    s
}

/// Everything the cluster page shows.
#[derive(Debug)]
pub struct ClusterView<'a> {
    /// The cluster.
    pub rec: &'a ClusterRecord,
    /// What stands between it and its desired state.
    pub explanation: Option<&'a Explanation>,
    /// Health judged now.
    pub health: Option<&'a Health>,
    /// Application services.
    pub services: &'a [AppService],
    /// The CPU and memory charts (SVG).
    pub charts: [String; 2],
    /// The chart range (`1h`, `6h`, `24h`, `7d`).
    pub range: &'a str,
    /// The latest events, oldest first.
    pub events: &'a [Event],
    /// The newest event's position (the live stream resumes after it).
    pub last_seq: u64,
    /// The redacted spec as YAML.
    pub spec_yaml: String,
    /// What the visitor may do.
    pub access: Access,
    /// A message from the last action (`?done=...`).
    pub notice: Option<&'a str>,
}

fn condition_class(s: ConditionStatus) -> &'static str {
    match s {
        ConditionStatus::Succeeded => "ok",
        ConditionStatus::Failed => "bad",
        ConditionStatus::InProgress => "busy",
        _ => "unknown",
    }
}

/// A cluster's page: summary, health, blockers, conditions, pools, machines, services,
/// usage charts, events (live), and the actions for a signed-in visitor.
#[must_use]
pub fn cluster_page(base: &str, v: &ClusterView<'_>) -> String {
    let rec = v.rec;
    let st = &rec.status;
    let name = esc(&rec.spec.name);
    let url = format!("{base}/clusters/{}", seg(&rec.spec.name));
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<h1 id="cluster" data-cluster="{name}">{name} {phase}</h1>"#,
        phase = phase_badge(st.phase)
    );
    if let Some(n) = v.notice {
        let _ = write!(s, r#"<p class="notice">{}</p>"#, esc(n));
    }
    let endpoint = st
        .infrastructure
        .as_ref()
        .and_then(|i| i.endpoint.as_deref())
        .unwrap_or("-");
    let _ = write!(
        s,
        r#"<dl class="summary"><dt>Cloud</dt><dd>{cloud} (account {acct})</dd><dt>Profile</dt><dd>{pn} {pv}</dd><dt>Generation</dt><dd>{g} (observed {og})</dd><dt>Endpoint</dt><dd>{ep}</dd><dt>Health</dt><dd>{h}</dd></dl>"#,
        cloud = esc(rec.spec.cloud_type().as_str()),
        acct = esc(&rec.spec.cloud_account),
        pn = esc(&rec.spec.profile.name),
        pv = esc(&rec.spec.profile.version),
        g = rec.generation,
        og = st.observed_generation,
        ep = esc(endpoint),
        h = health_badge(v.health.or(st.health.as_ref())),
    );
    if let Some(h) = v.health.or(st.health.as_ref()) {
        if !h.reasons.is_empty() {
            s.push_str(r#"<ul class="reasons">"#);
            for r in &h.reasons {
                let _ = write!(
                    s,
                    "<li>{}{}: {}</li>",
                    r.node
                        .as_deref()
                        .map_or(String::new(), |n| format!("{} ", esc(n))),
                    esc(&r.subject),
                    esc(&r.message)
                );
            }
            s.push_str("</ul>");
        }
    }
    if let Some(e) = &st.last_error {
        let _ = write!(s, r#"<p class="error">Last error: {}</p>"#, esc(e));
    }
    if let Some(x) = v.explanation {
        if !x.blockers.is_empty() {
            s.push_str(r#"<h2>What it waits for</h2><ul id="blockers">"#);
            for b in &x.blockers {
                let _ = write!(
                    s,
                    "<li><b>{}</b> {}</li>",
                    esc(&format!("{:?}", b.kind)),
                    esc(&b.message)
                );
            }
            s.push_str("</ul>");
        }
    }
    s.push_str(r#"<h2>Conditions</h2><table id="conditions"><thead><tr><th>Condition</th><th>Status</th><th>Reason</th><th>Message</th><th>Since</th></tr></thead><tbody>"#);
    for c in &st.conditions {
        let _ = write!(
            s,
            r#"<tr><td>{k}</td><td><span class="cond cond-{cls}">{stx:?}</span></td><td>{r}</td><td>{m}</td><td class="time">{t}</td></tr>"#,
            k = esc(c.kind.label()),
            cls = condition_class(c.status),
            stx = c.status,
            r = esc(&c.reason),
            m = esc(&c.message),
            t = c.last_transition.format("%Y-%m-%d %H:%M:%S")
        );
    }
    s.push_str("</tbody></table>");
    s.push_str(r#"<h2>Node pools</h2><table id="pools"><thead><tr><th>Pool</th><th>Role</th><th>Instance</th><th>Desired</th><th>Ready</th><th>Outdated</th>"#);
    if v.access == Access::SignedIn {
        s.push_str("<th>Scale</th>");
    }
    s.push_str("</tr></thead><tbody>");
    for p in &rec.spec.node_pools {
        let ps = st.pools.get(&p.name);
        let _ = write!(
            s,
            r#"<tr data-pool="{n}"><td>{n}</td><td>{role:?}</td><td>{it}</td><td>{d}</td><td>{r}</td><td>{o}</td>"#,
            n = esc(&p.name),
            role = p.role,
            it = esc(p.instance_type.as_deref().unwrap_or("-")),
            d = p.size,
            r = ps.map_or(0, |x| x.ready),
            o = ps.map_or(0, |x| x.outdated),
        );
        if v.access == Access::SignedIn {
            let _ = write!(
                s,
                r#"<td><form method="post" action="{url}/scale" class="inline"><input type="hidden" name="pool" value="{n}"><input type="number" name="size" min="0" value="{d}" aria-label="size of {n}"><button type="submit">Scale</button></form></td>"#,
                n = esc(&p.name),
                d = p.size
            );
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s.push_str(r#"<h2>Machines</h2><table id="machines"><thead><tr><th>Machine</th><th>Pool</th><th>Zone</th><th>State</th><th>Address</th><th>Ready</th><th>Cloud id</th></tr></thead><tbody>"#);
    if st.machines.is_empty() {
        s.push_str(r#"<tr class="none"><td colspan="7">No machine yet.</td></tr>"#);
    }
    for m in &st.machines {
        let _ = write!(
            s,
            r#"<tr class="machine"><td>{n}</td><td>{p}</td><td>{z}</td><td>{state}{old}</td><td>{a}</td><td>{r}</td><td class="mono">{id}</td></tr>"#,
            n = esc(&m.name),
            p = esc(&m.pool),
            z = esc(&m.zone),
            state = esc(&format!("{:?}", m.state).to_lowercase()),
            old = if m.outdated { " (outdated)" } else { "" },
            a = m.address.map_or("-".to_string(), |a| a.to_string()),
            r = if m.ready { "yes" } else { "no" },
            id = esc(&m.id),
        );
    }
    s.push_str("</tbody></table>");
    s.push_str(r#"<h2>Services</h2>"#);
    if v.services.is_empty() {
        s.push_str(
            r#"<p class="muted" id="services">No LoadBalancer or NodePort service reported.</p>"#,
        );
    } else {
        s.push_str(r#"<ul id="services">"#);
        for svc in v.services {
            let links: Vec<String> = svc
                .links
                .iter()
                .filter(|l| l.starts_with("http://") || l.starts_with("https://"))
                .map(|l| {
                    format!(
                        r#"<a href="{u}" rel="noopener noreferrer" target="_blank">{u}</a>"#,
                        u = esc(l)
                    )
                })
                .collect();
            let _ = write!(
                s,
                "<li>{ns}/{n} ({k}) {links}</li>",
                ns = esc(&svc.namespace),
                n = esc(&svc.name),
                k = esc(&svc.kind),
                links = links.join(" ")
            );
        }
        s.push_str("</ul>");
    }
    let _ = write!(s, r#"<h2>Usage</h2><p class="ranges">"#);
    for r in ["1h", "6h", "24h", "7d"] {
        if r == v.range {
            let _ = write!(s, "<b>{r}</b> ");
        } else {
            let _ = write!(s, r#"<a href="{url}?range={r}">{r}</a> "#);
        }
    }
    let _ = write!(
        s,
        r#"</p><div class="charts"><figure id="chart-cpu" data-src="{url}/usage.svg?metric=cpu&amp;range={r}">{cpu}<figcaption>CPU usage (worker nodes and each node)</figcaption></figure><figure id="chart-memory" data-src="{url}/usage.svg?metric=memory&amp;range={r}">{mem}<figcaption>Memory usage (worker nodes and each node)</figcaption></figure></div>"#,
        r = esc(v.range),
        cpu = v.charts[0],
        mem = v.charts[1],
    );
    if v.access == Access::SignedIn {
        s.push_str(r#"<h2>Actions</h2><div class="actions">"#);
        if st.profile_update.is_some() {
            let _ = write!(
                s,
                r#"<form method="post" action="{url}/apply-update" class="inline"><select name="resolution" aria-label="conflicts"><option value="">no conflicts</option><option value="keep">keep my overrides</option><option value="take">take the profile's values</option></select><button type="submit">Apply profile update</button></form>"#
            );
        }
        if st.provisioned {
            let _ = write!(
                s,
                r#"<form method="post" action="{url}/delete" class="inline"><button type="submit" class="danger">Delete cluster</button></form>"#
            );
        } else {
            let _ = write!(
                s,
                r#"<form method="post" action="{url}/abort" class="inline"><button type="submit" class="danger">Abort</button></form>"#
            );
        }
        s.push_str("</div>");
    }
    let _ = write!(
        s,
        r#"<h2>Events</h2><table id="events" class="events" data-stream="{url}/events/stream?after={seq}"><thead><tr><th>Time</th><th>Severity</th><th>Reason</th><th>Message</th></tr></thead><tbody>"#,
        seq = v.last_seq
    );
    for e in v.events.iter().rev() {
        s.push_str(&event_row(e, None, base));
    }
    s.push_str("</tbody></table>");
    let _ = write!(
        s,
        r#"<h2>Spec</h2><pre id="spec">{}</pre>"#,
        esc(&v.spec_yaml)
    );
    s
}

/// The sign-in form.
#[must_use]
pub fn login(base: &str, failed: bool) -> String {
    format!(
        r#"<h1>Sign in</h1>{msg}<form method="post" action="{base}/login"><label>Admin token <input type="password" name="token" autocomplete="current-password" required></label> <button type="submit">Sign in</button></form>"#,
        msg = if failed {
            r#"<p class="error">That token is not the dashboard's admin token.</p>"#
        } else {
            ""
        }
    )
}

/// An error page's body.
#[must_use]
pub fn error(base: &str, status: u16, message: &str) -> String {
    format!(
        r#"<h1>{status}</h1><p class="error" id="message">{}</p><p><a href="{base}/">Back to the clusters</a></p>"#,
        esc(message)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_urls_are_escaped() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
        assert_eq!(seg("prod-1.eu_x"), "prod-1.eu_x");
        let page = layout("/ops", "<x>", Access::SignedOut, "");
        assert!(page.contains("<title>&lt;x&gt; · spectro</title>"));
        assert!(page.contains(r#"href="/ops/login""#));
    }
}

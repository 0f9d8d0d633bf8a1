//! The web dashboard in a real browser: Debian's headless Chromium driven through
//! chromedriver's W3C WebDriver protocol (a few JSON calls over reqwest). The engine runs on
//! SQLite and the simulated cloud; the cluster's agent reports (usage, services) go through
//! the engine's agent API as the agent's own batches do. The test sees the cluster list show
//! a running cluster, a live event arrive without a reload (list and cluster page), the list
//! refresh itself, the charts carry points, the machines and service links, no secret on any
//! page; read-only until signed in, a cross-site form refused, then scaling from the page.
//! Screenshots are saved (`CARGO_TARGET_TMPDIR`, or `SPECTRO_SCREENSHOT_DIR`).

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use spectro::dashboard::Dashboard;
use spectro::engine::status::Phase;
use spectro::engine::AgentSettings;
use spectro::monitoring::credential::AgentKey;
use spectro::monitoring::report::{
    AgentReport, NodeConditionReport, NodeReport, ReportBatch, Resources, ServicePortReport,
    ServiceReport,
};
use spectro::secret::Secret;
use spectro::sim::SimConfig;
use spectro::{Engine, EngineConfig, SqliteStore};

const TOKEN: &str = "dashboard-admin-token-0123456789";
const T: Duration = Duration::from_secs(60);

struct Driver {
    child: Child,
    url: String,
    http: reqwest::Client,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn which(name: &str) -> Option<String> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
            .map(|f| f.display().to_string())
    })
}

impl Driver {
    /// chromedriver on loopback with a headless Chromium session; `None` when skipping.
    async fn start() -> Option<Driver> {
        let driver = std::env::var("SPECTRO_CHROMEDRIVER")
            .ok()
            .or_else(|| which("chromedriver"));
        let chromium = std::env::var("SPECTRO_CHROMIUM")
            .ok()
            .or_else(|| which("chromium"));
        let (Some(driver), Some(chromium)) = (driver, chromium) else {
            spectro::testing::peer_missing(
                "chromium + chromedriver",
                "apt-get install chromium chromium-driver (scripts/test does)",
            );
            return None;
        };
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..100 {
            if let Ok(r) = http.get(format!("{url}/status")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1700",
                         "--no-first-run", "--disable-extensions"]
            }
        }}});
        let mut d = Driver {
            child,
            url,
            http,
            session: String::new(),
        };
        let v = d.call(reqwest::Method::POST, "/session", Some(caps)).await;
        d.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_string();
        Some(d)
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut r = self.http.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("chromedriver answers");
        let v: Value = resp.json().await.expect("WebDriver JSON");
        if v["value"]["error"].is_string() {
            panic!("WebDriver {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        let path = format!("/session/{}/url", self.session);
        self.call(reqwest::Method::POST, &path, Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` (a function body; `return` its answer) in the page.
    async fn js(&self, script: &str) -> Value {
        let path = format!("/session/{}/execute/sync", self.session);
        self.call(
            reqwest::Method::POST,
            &path,
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Waits until `script` answers `true`.
    async fn until(&self, what: &str, script: &str) {
        for _ in 0..300 {
            if self.js(script).await == Value::Bool(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let html = self
            .js("return document.body ? document.body.innerText : ''")
            .await;
        panic!("{what}: never true; the page shows:\n{html}");
    }

    /// Saves a PNG screenshot as `name` and returns its bytes.
    async fn screenshot(&self, name: &str) -> Vec<u8> {
        let path = format!("/session/{}/screenshot", self.session);
        let v = self.call(reqwest::Method::GET, &path, None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
        let dir = std::env::var("SPECTRO_SCREENSHOT_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| {
                std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard")
            });
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), &png).unwrap();
        png
    }

    async fn quit(&self) {
        let path = format!("/session/{}", self.session);
        self.call(reqwest::Method::DELETE, &path, None).await;
    }
}

/// Reports of the agent: `n` reports 5 minutes apart (the newest now), every node of the
/// cluster with usage, and a LoadBalancer service.
fn batch(nodes: &[String], n: usize) -> ReportBatch {
    let now = spectro::clock::system_now();
    let reports = (0..n)
        .map(|i| {
            let at = now - chrono::Duration::minutes(5 * (n - 1 - i) as i64);
            AgentReport {
                agent_version: "test".into(),
                agent_id: "dashboard-test".into(),
                seq: i as u64 + 1,
                collected_at: at,
                nodes: nodes
                    .iter()
                    .enumerate()
                    .map(|(k, name)| NodeReport {
                        name: name.clone(),
                        control_plane: false,
                        conditions: vec![NodeConditionReport {
                            kind: "Ready".into(),
                            status: "True".into(),
                            ..Default::default()
                        }],
                        capacity: Resources {
                            cpu_millicores: 4000,
                            memory_bytes: 16 << 30,
                        },
                        allocatable: Resources {
                            cpu_millicores: 3800,
                            memory_bytes: 15 << 30,
                        },
                        usage: Some(Resources {
                            cpu_millicores: 800 + 150 * i as u64 + 100 * k as u64,
                            memory_bytes: (4 << 30) + ((i as u64) << 28),
                        }),
                        requests: Resources {
                            cpu_millicores: 500,
                            memory_bytes: 1 << 30,
                        },
                        pods: 10,
                        ..Default::default()
                    })
                    .collect(),
                services: vec![ServiceReport {
                    namespace: "shop".into(),
                    name: "frontend".into(),
                    kind: "LoadBalancer".into(),
                    ports: vec![ServicePortReport {
                        name: "http".into(),
                        protocol: "TCP".into(),
                        port: 80,
                        node_port: Some(30080),
                    }],
                    ingress: vec!["203.0.113.10".into()],
                }],
                metrics_available: true,
                ..Default::default()
            }
        })
        .collect();
    ReportBatch { reports }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_headless_chromium() {
    let Some(browser) = Driver::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("spectro.db")).unwrap());
    let engine = Engine::builder(store)
        .provider(common::sim(SimConfig::default()))
        .agent(AgentSettings {
            key: AgentKey::random(),
            deployment: None,
        })
        .config(EngineConfig::fast())
        .start()
        .await
        .unwrap();
    engine.put_profile(&common::profile()).await.unwrap();
    engine.put_cloud_account(&common::account()).await.unwrap();
    let id = engine
        .create_cluster(&common::cluster("web"))
        .await
        .unwrap();
    let rec = engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    let desired: u32 = rec.spec.node_pools.iter().map(|p| p.size).sum();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/ops", listener.local_addr().unwrap());
    tokio::spawn(
        Dashboard::new(engine.clone())
            .base_path("/ops")
            .unwrap()
            .admin_token(&Secret::new(TOKEN))
            .keep_alive(Duration::from_secs(1))
            .serve(listener),
    );

    // The list shows the running cluster.
    browser.goto(&format!("{base}/")).await;
    browser
        .until(
            "the list shows web running",
            r#"var r = document.querySelector('#clusters tr[data-cluster="web"] .c-phase span');
               return !!r && r.textContent === 'running';"#,
        )
        .await;
    let nodes = browser
        .js(r#"return document.querySelector('#clusters tr[data-cluster="web"] .c-nodes').textContent"#)
        .await;
    assert_eq!(nodes, json!(format!("{desired}/{desired}")));
    browser
        .until(
            "the event stream is open",
            "return document.getElementById('live') && document.getElementById('live').textContent === 'live'",
        )
        .await;

    // A change made elsewhere arrives live: a new event row and a refreshed list, no reload.
    browser.js("window.__noReload = 1; return true").await;
    let before = browser
        .js("return Math.max(0, ...Array.from(document.querySelectorAll('#events tbody tr')).map(r => +r.dataset.seq))")
        .await
        .as_u64()
        .unwrap();
    let mut spec = rec.spec.clone();
    let batch_pool = spec
        .node_pools
        .iter_mut()
        .find(|p| p.name == "batch")
        .unwrap();
    batch_pool.size += 1;
    engine.update_cluster(id, &spec).await.unwrap();
    browser
        .until(
            "a live event row",
            &format!(
                "return window.__noReload === 1 && Array.from(document.querySelectorAll('#events tbody tr')).some(r => +r.dataset.seq > {before} && r.cells[1].textContent === 'web')"
            ),
        )
        .await;
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    engine
        .wait_for(id, T, |r| r.status.observed_generation == r.generation)
        .await
        .unwrap();
    browser
        .until(
            "the list refreshed its nodes",
            &format!(
                r#"return window.__noReload === 1 && document.querySelector('#clusters tr[data-cluster="web"] .c-nodes').textContent === '{n}/{n}'"#,
                n = desired + 1
            ),
        )
        .await;
    browser.screenshot("clusters.png").await;

    // The agent reports usage and a service; the cluster page shows them.
    let rec = engine.cluster(id).await.unwrap();
    let workers: Vec<String> = rec
        .status
        .machines
        .iter()
        .filter(|m| m.role == spectro::model::PoolRole::Worker)
        .map(|m| m.name.clone())
        .collect();
    assert_eq!(workers.len() as u32, desired + 1 - 3);
    let token = engine.agent_token(id).unwrap();
    engine
        .agent_report(id, token.expose(), &batch(&workers, 10))
        .await
        .unwrap();
    browser.goto(&format!("{base}/clusters/web")).await;
    let page = browser
        .js(r#"return {
            points: +document.querySelector('#chart-cpu svg').dataset.points,
            circles: document.querySelectorAll('#chart-cpu svg circle').length,
            memory: +document.querySelector('#chart-memory svg').dataset.points,
            machines: document.querySelectorAll('#machines tr.machine').length,
            conditions: document.querySelectorAll('#conditions tbody tr').length,
            link: (document.querySelector('#services a') || {}).href || '',
            html: document.documentElement.outerHTML,
        }"#)
        .await;
    // 10 samples for the workers' total and 10 per worker.
    let expect = 10 * (1 + workers.len() as u64);
    assert_eq!(page["points"], json!(expect), "{}", page["html"]);
    assert_eq!(page["circles"], json!(expect));
    assert_eq!(page["memory"], json!(expect));
    assert_eq!(page["machines"], json!(desired + 1));
    assert_eq!(
        page["conditions"],
        json!(3),
        "infrastructure, control plane, workers"
    );
    assert_eq!(
        page["link"],
        json!("http://203.0.113.10/"),
        "{}",
        page["html"]
    );
    let html = page["html"].as_str().unwrap();
    assert!(
        !html.contains("super-secret-value-123") && !html.contains(token.expose()),
        "a secret on the page"
    );
    assert!(html.contains("Sign in"), "signed out: no actions offered");
    assert!(!html.contains(r#"action="/ops/clusters/web/scale""#));
    browser.screenshot("cluster.png").await;

    // A live event on the cluster page (the service goes away).
    browser.js("window.__noReload = 1; return true").await;
    let mut gone = batch(&workers, 1);
    gone.reports[0].services.clear();
    gone.reports[0].seq = 100;
    engine
        .agent_report(id, token.expose(), &gone)
        .await
        .unwrap();
    browser
        .until(
            "ServiceRemoved arrives live",
            "return window.__noReload === 1 && Array.from(document.querySelectorAll('#events tbody tr')).some(r => r.cells[2].textContent === 'ServiceRemoved')",
        )
        .await;

    // Read-only until signed in; a form from another site is refused.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let origin = base.trim_end_matches("/ops").to_string();
    let r = http
        .post(format!("{base}/clusters/web/delete"))
        .header("origin", &origin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "same origin, not signed in");
    assert!(r.headers().contains_key("www-authenticate"));
    let r = http
        .post(format!("{base}/clusters/web/delete"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a form that names no origin");
    let r = http
        .get(format!("{base}/"))
        .header("host", "rebound.example:80")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 421, "another host name (DNS rebinding)");
    let r = http.get(format!("{origin}/opsx")).send().await.unwrap();
    assert_eq!(r.status(), 404, "outside the base path");
    assert!(Dashboard::new(engine.clone())
        .base_path("//evil.example")
        .is_err());
    let r = http
        .post(format!("{base}/clusters/web/delete"))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(format!("{base}/clusters/web/abort"))
        .bearer_auth(TOKEN)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .post(format!("{base}/clusters/web/scale"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("pool=batch&size=-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("size `-1`: must be a whole number"));
    let r = http
        .get(format!("{base}/api/clusters/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(engine.cluster(id).await.unwrap().status.phase == Phase::Running);

    // Sign in in the browser and scale from the page.
    browser.goto(&format!("{base}/login")).await;
    browser
        .js(&format!(
            "document.querySelector('input[name=token]').value = '{TOKEN}'; document.querySelector('form[action$=\"/login\"]').submit(); return true"
        ))
        .await;
    browser
        .until(
            "signed in",
            "return !!document.querySelector('form[action$=\"/logout\"]')",
        )
        .await;
    browser.goto(&format!("{base}/clusters/web")).await;
    browser
        .js(
            r#"var f = document.querySelector('tr[data-pool="batch"] form');
               f.querySelector('input[name=size]').value = '1';
               f.submit(); return true"#,
        )
        .await;
    browser
        .until(
            "the scale notice",
            "return !!document.querySelector('.notice') && document.querySelector('.notice').textContent.includes('pool batch scaled to 1')",
        )
        .await;
    let spec = engine.cluster(id).await.unwrap().spec;
    assert_eq!(
        spec.node_pools
            .iter()
            .find(|p| p.name == "batch")
            .unwrap()
            .size,
        1
    );
    browser.quit().await;
    engine.shutdown().await;
}

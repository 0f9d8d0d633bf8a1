//! `spectro`: the engine from the command line, over a persistent store (an SQLite file by
//! default, `--store postgres://...`). Every command is its own process: `apply` in one,
//! `run` (the engine reconciling, until interrupted) in another, `describe` in a third —
//! they meet in the store. Commands other than `run` start the engine as a replica that
//! claims no cluster: they read and write desired state, the `run` process acts on it.
//!
//! Exit codes: 0 done; 1 failed (the store, the cloud, anything else); 2 bad command line;
//! 3 not found; 4 invalid input (file, document, field named); 5 refused in the cluster's
//! current state (conflict, wrong lifecycle); 6 `--wait` timed out.

mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use spectro::engine::status::{ClusterRecord, Phase};
use spectro::engine::ReplicaConfig;
use spectro::model::document::{parse_documents, Format};
use spectro::model::{CloudType, ConflictResolution, Document};
use spectro::{CoreError, Engine, EngineConfig, Store};

use output::{Out, Table};

/// The engine's command line: declare clusters, watch them converge, change and delete them.
#[derive(Debug, Parser)]
#[command(name = "spectro", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Global {
    /// The store: an SQLite file (created if missing) or a `postgres://` URL.
    #[arg(
        long,
        global = true,
        env = "SPECTRO_STORE",
        default_value = "spectro.db"
    )]
    store: String,
    /// Output: a table for people, or JSON / YAML for scripts.
    #[arg(short, long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
    /// Every cloud is the simulated one (demos, tests; its machines live in the `run`
    /// process).
    #[arg(long, global = true)]
    sim: bool,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Tables and text.
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Creates or updates every document of the files (profiles, accounts, pools,
    /// gateways, clusters), validated; `--dry-run` shows what would change.
    Apply {
        /// YAML or JSON files (`-` for standard input).
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
        /// Validate and show what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Wait until every cluster of the files is running.
        #[arg(long)]
        wait: bool,
        /// How long `--wait` waits, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Lists objects of a kind.
    Get {
        /// clusters, profiles, accounts, pools or gateways.
        kind: Kind,
    },
    /// A cluster in detail: phase, conditions, pools, endpoint, what blocks it.
    Describe {
        /// Always `cluster`.
        kind: DescribeKind,
        /// The cluster's name.
        name: String,
    },
    /// What applying the files' clusters would do, per pool (nothing is written).
    Plan {
        /// YAML or JSON files (`-` for standard input).
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
    },
    /// A cluster's events, oldest first; `--follow` keeps printing new ones.
    Events {
        /// The cluster's name.
        name: String,
        /// Keep printing events as they happen (until interrupted).
        #[arg(long)]
        follow: bool,
    },
    /// Prints a cluster's admin kubeconfig.
    Kubeconfig {
        /// The cluster's name.
        name: String,
    },
    /// Sets a node pool's size.
    Scale {
        /// The cluster's name.
        name: String,
        /// The pool's name.
        pool: String,
        /// The new size.
        size: u32,
        /// Wait until the cluster runs at the new size.
        #[arg(long)]
        wait: bool,
        /// How long `--wait` waits, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Deletes a provisioned cluster and every cloud resource it has.
    Delete {
        /// The cluster's name.
        name: String,
        /// Wait until it is deleted.
        #[arg(long)]
        wait: bool,
        /// How long `--wait` waits, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Stops a cluster still provisioning and deletes what was created.
    Abort {
        /// The cluster's name.
        name: String,
    },
    /// The profile update waiting for a cluster, with its override conflicts.
    Updates {
        /// The cluster's name.
        name: String,
    },
    /// Applies the waiting profile update.
    ApplyUpdate {
        /// The cluster's name.
        name: String,
        /// Keep the cluster's overrides where they conflict.
        #[arg(long, conflicts_with = "take")]
        keep: bool,
        /// Take the profile's values where they conflict.
        #[arg(long)]
        take: bool,
    },
    /// Serves the web dashboard (clusters, live events, usage charts) until interrupted;
    /// read-only unless an admin token is given.
    Serve {
        /// Where to listen (plain HTTP: loopback unless a TLS proxy fronts it).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// A file holding the admin token: who signs in with it may scale, delete, abort
        /// and apply profile updates. Without it the dashboard only shows.
        #[arg(long, env = "SPECTRO_DASHBOARD_TOKEN_FILE")]
        token_file: Option<PathBuf>,
        /// Serve under this path (`/ops/spectro`).
        #[arg(long, default_value = "")]
        base_path: String,
        /// Host names the dashboard answers for (`name` or `name:port`, repeatable; a
        /// proxy's public name). Default: the listen address and `localhost`.
        #[arg(long)]
        allow_host: Vec<String>,
    },
    /// Runs the engine: reconciles every cluster of the store until interrupted.
    Run {
        /// Clusters reconciled at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Seconds a stopped `run` keeps its clusters before another one takes them.
        #[arg(long, default_value_t = 15)]
        lease_ttl: u64,
    },
}

/// Kinds `get` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// Clusters.
    Clusters,
    /// Cluster profiles.
    Profiles,
    /// Cloud accounts.
    Accounts,
    /// IP pools.
    Pools,
    /// Private cloud gateways.
    Gateways,
}

/// What `describe` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DescribeKind {
    /// A cluster.
    Cluster,
}

/// A failure with its exit code.
struct Failure {
    code: u8,
    message: String,
}

impl From<CoreError> for Failure {
    fn from(e: CoreError) -> Self {
        let code = match &e {
            CoreError::NotFound { .. } => 3,
            CoreError::Invalid { .. } | CoreError::PackValues { .. } => 4,
            CoreError::Conflict { .. }
            | CoreError::WrongLifecycle { .. }
            | CoreError::AlreadyExists { .. }
            | CoreError::InUse { .. }
            | CoreError::UnresolvedConflicts { .. } => 5,
            CoreError::Timeout { .. } => 6,
            _ => 1,
        };
        Failure {
            code,
            message: e.to_string(),
        }
    }
}

fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

type Res<T> = std::result::Result<T, Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("spectro: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("spectro: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// The store `--store` names.
async fn open_store(url: &str) -> Res<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let pg = spectro::PostgresStore::connect(url, 4).await?;
        return Ok(Arc::new(pg));
    }
    let sqlite = spectro::SqliteStore::open(url)
        .map_err(|e| fail(1, format!("store {url}: {e}")))?
        .with_change_poll(Duration::from_millis(250));
    Ok(Arc::new(sqlite))
}

/// The engine: `acting` for `run` (claims every cluster), else a replica that claims none.
async fn engine(g: &Global, acting: Option<(usize, Duration)>) -> Res<Engine> {
    let store = open_store(&g.store).await?;
    let id = format!(
        "{}-{}",
        if acting.is_some() { "run" } else { "cli" },
        std::process::id()
    );
    let (concurrency, lease_ttl) = acting.unwrap_or((1, Duration::from_secs(15)));
    let config = EngineConfig {
        concurrency,
        poll_interval: Duration::from_millis(500),
        replica: Some(ReplicaConfig {
            id,
            lease_ttl,
            max_clusters: if acting.is_some() { usize::MAX } else { 0 },
        }),
        ..EngineConfig::default()
    };
    let mut b = Engine::builder(store).config(config);
    for (cloud, p) in providers(g.sim, acting.is_some()) {
        b = b.provider_for(cloud, p);
    }
    Ok(b.start().await?)
}

/// The cloud providers: the simulated cloud for every cloud with `--sim`, else those
/// compiled in (features `aws`, `azure`, `gcp`, `vsphere`; their credentials come from the
/// cloud accounts, their endpoints from the environment: `AWS_ENDPOINT_URL`, the Azure
/// connector's variables, `SPECTRO_GCE_ENDPOINT`).
///
/// A command that does not act (all but `run`) only validates, pre-checks and writes desired
/// state; for a cloud compiled without a provider it takes the simulated one, the only one
/// a `run` of this binary could provision that cloud with.
fn providers(sim: bool, acting: bool) -> Vec<(CloudType, Arc<dyn spectro::CloudProvider>)> {
    const CLOUDS: [CloudType; 4] = [
        CloudType::Aws,
        CloudType::Azure,
        CloudType::Gcp,
        CloudType::Vsphere,
    ];
    let simulated = |cloud: CloudType| -> Arc<dyn spectro::CloudProvider> {
        Arc::new(spectro::sim::SimCloud::new(
            cloud,
            spectro::sim::SimConfig::default(),
        ))
    };
    if sim {
        return CLOUDS.into_iter().map(|c| (c, simulated(c))).collect();
    }
    let mut out = compiled_providers();
    if !acting {
        for c in CLOUDS {
            if !out.iter().any(|(have, _)| *have == c) {
                out.push((c, simulated(c)));
            }
        }
    }
    out
}

/// The providers of the cloud features this binary was built with.
fn compiled_providers() -> Vec<(CloudType, Arc<dyn spectro::CloudProvider>)> {
    #[allow(unused_mut)]
    let mut out: Vec<(CloudType, Arc<dyn spectro::CloudProvider>)> = Vec::new();
    #[cfg(feature = "aws")]
    out.push((
        CloudType::Aws,
        Arc::new(spectro::aws::AwsProvider::new(
            spectro::aws::AwsConnector::from_env(),
        )),
    ));
    #[cfg(feature = "azure")]
    out.push((
        CloudType::Azure,
        Arc::new(spectro::azure::AzureProvider::new(
            spectro::azure::AzureConnector::from_env(),
        )),
    ));
    #[cfg(feature = "gcp")]
    out.push((CloudType::Gcp, Arc::new(gcp_provider())));
    #[cfg(feature = "vsphere")]
    out.push((
        CloudType::Vsphere,
        Arc::new(spectro::vsphere::VsphereProvider::new(
            spectro::vsphere::VsphereConfig::default(),
        )),
    ));
    out
}

/// Compute Engine, or `SPECTRO_GCE_ENDPOINT` when it is set (a private endpoint).
#[cfg(feature = "gcp")]
fn gcp_provider() -> spectro::gcp::GcpProvider {
    let mut c = spectro::gcp::GcpConnector::default();
    if let Some(e) = std::env::var("SPECTRO_GCE_ENDPOINT")
        .ok()
        .filter(|s| !s.is_empty())
    {
        c = c.with_endpoint(e);
    }
    spectro::gcp::GcpProvider::new(c)
}

/// The documents of the files, every parse failure named by file and document.
fn read_documents(files: &[PathBuf]) -> Res<Vec<Document>> {
    let mut docs = Vec::new();
    let mut problems = Vec::new();
    for f in files {
        let (name, text) = if f.as_os_str() == "-" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| fail(1, format!("standard input: {e}")))?;
            ("standard input".to_string(), s)
        } else {
            let text =
                std::fs::read_to_string(f).map_err(|e| fail(4, format!("{}: {e}", f.display())))?;
            (f.display().to_string(), text)
        };
        let format = if f.extension().is_some_and(|e| e == "json") {
            Format::Json
        } else {
            Format::Yaml
        };
        let (parsed, failures) = parse_documents(&text, format);
        for p in failures {
            for v in p.violations {
                problems.push(format!(
                    "{name}: document {}: {}{}",
                    p.index + 1,
                    if v.path.is_empty() {
                        String::new()
                    } else {
                        format!("{}: ", v.path)
                    },
                    v.rule
                ));
            }
        }
        docs.extend(parsed);
    }
    if problems.is_empty() {
        Ok(docs)
    } else {
        Err(fail(4, problems.join("\n")))
    }
}

async fn run(cli: Cli) -> Res<()> {
    let g = &cli.global;
    let out = Out::new(g.output);
    if let Command::Run {
        concurrency,
        lease_ttl,
    } = &cli.command
    {
        let engine = engine(
            g,
            Some((*concurrency, Duration::from_secs((*lease_ttl).max(3)))),
        )
        .await?;
        out.note(&format!(
            "spectro: engine running on {} (interrupt to stop)",
            g.store
        ));
        stopped().await;
        engine.shutdown().await;
        return Ok(());
    }
    if let Command::Serve {
        listen,
        token_file,
        base_path,
        allow_host,
    } = &cli.command
    {
        return serve(
            g,
            &out,
            *listen,
            token_file.as_deref(),
            base_path,
            allow_host,
        )
        .await;
    }
    let engine = engine(g, None).await?;
    let r = command(&engine, &out, cli.command).await;
    engine.shutdown().await;
    r
}

/// Interrupted (Ctrl-C) or asked to terminate (SIGTERM: a service manager, `kill`): `run`
/// then gives its leases up at once instead of letting them expire.
async fn stopped() {
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// `spectro serve`: the dashboard over the store, until interrupted.
async fn serve(
    g: &Global,
    out: &Out,
    listen: std::net::SocketAddr,
    token_file: Option<&std::path::Path>,
    base_path: &str,
    allow_host: &[String],
) -> Res<()> {
    let token = match token_file {
        None => None,
        Some(f) => {
            let t = std::fs::read_to_string(f)
                .map_err(|e| fail(4, format!("--token-file {}: {e}", f.display())))?;
            let t = t.trim().to_string();
            if t.len() < 16 {
                return Err(fail(
                    4,
                    format!(
                        "--token-file {}: the admin token must have at least 16 characters",
                        f.display()
                    ),
                ));
            }
            Some(spectro::secret::Secret::new(t))
        }
    };
    if token.is_some() && !listen.ip().is_loopback() {
        return Err(fail(
            4,
            format!(
                "--listen {listen}: with an admin token the dashboard listens on loopback only \
                 (it serves plain HTTP: put a TLS proxy in front of it for remote access)"
            ),
        ));
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| fail(1, format!("--listen {listen}: {e}")))?;
    let engine = engine(g, None).await?;
    let mut dashboard = spectro::dashboard::Dashboard::new(engine.clone())
        .base_path(base_path)
        .map_err(|e| fail(4, format!("--base-path: {e}")))?;
    if !allow_host.is_empty() {
        dashboard = dashboard.allowed_hosts(allow_host.iter().cloned());
    }
    if let Some(t) = &token {
        dashboard = dashboard.admin_token(t);
    }
    let addr = listener
        .local_addr()
        .map_err(|e| fail(1, format!("--listen {listen}: {e}")))?;
    out.note(&format!(
        "spectro: dashboard on http://{addr}{}/ ({}; interrupt to stop)",
        base_path.trim_end_matches('/'),
        if token.is_some() {
            "sign in with the admin token to act"
        } else {
            "read-only"
        }
    ));
    let r = tokio::select! {
        r = dashboard.serve(listener) => r.map_err(|e| fail(1, format!("dashboard: {e}"))),
        () = stopped() => Ok(()),
    };
    engine.shutdown().await;
    r
}

async fn cluster(engine: &Engine, name: &str) -> Res<ClusterRecord> {
    Ok(engine.cluster_by_name(name).await?)
}

async fn wait_phase(
    engine: &Engine,
    out: &Out,
    rec: &ClusterRecord,
    phase: Phase,
    timeout: u64,
) -> Res<ClusterRecord> {
    let spinner = out.spinner(&format!(
        "{}: waiting for {}",
        rec.spec.name,
        phase.as_str()
    ));
    let r = engine
        .wait_for_phase(rec.id, phase, Duration::from_secs(timeout))
        .await;
    spinner.finish_and_clear();
    Ok(r?)
}

async fn command(engine: &Engine, out: &Out, command: Command) -> Res<()> {
    match command {
        Command::Run { .. } | Command::Serve { .. } => Ok(()),
        Command::Apply {
            files,
            dry_run,
            wait,
            timeout,
        } => {
            let docs = read_documents(&files)?;
            if dry_run {
                return dry_run_apply(engine, out, &docs).await;
            }
            let applied = engine.apply_all(&docs).await?;
            let mut t = Table::new(&["KIND", "NAME", "ACTION", "REVISION"]);
            for a in &applied {
                t.row(vec![
                    a.kind.to_string(),
                    a.name.clone(),
                    format!("{:?}", a.action).to_lowercase(),
                    a.revision.to_string(),
                ]);
            }
            let json: Vec<serde_json::Value> = applied
                .iter()
                .map(|a| {
                    serde_json::json!({
                        "kind": a.kind,
                        "name": a.name,
                        "action": format!("{:?}", a.action).to_lowercase(),
                        "revision": a.revision,
                        "cluster": a.cluster.map(|c| c.to_string()),
                    })
                })
                .collect();
            out.show(&t, &json);
            if wait {
                for a in applied.iter().filter(|a| a.cluster.is_some()) {
                    let rec = cluster(engine, &a.name).await?;
                    wait_phase(engine, out, &rec, Phase::Running, timeout).await?;
                    out.note(&format!("{}: running", a.name));
                }
            }
            Ok(())
        }
        Command::Get { kind } => get(engine, out, kind).await,
        Command::Describe { name, .. } => {
            let rec = cluster(engine, &name).await?;
            let explanation = engine.explain(rec.id).await.ok();
            out.describe(&rec, explanation.as_ref());
            Ok(())
        }
        Command::Plan { files } => {
            let docs = read_documents(&files)?;
            dry_run_apply(engine, out, &docs).await
        }
        Command::Events { name, follow } => {
            let rec = cluster(engine, &name).await?;
            let mut after = 0;
            loop {
                let events = engine.events(Some(rec.id), after, 1000).await?;
                for e in &events {
                    out.event(e);
                    after = after.max(e.seq);
                }
                if events.len() == 1000 {
                    continue;
                }
                if !follow {
                    return Ok(());
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stopped() => return Ok(()),
                }
            }
        }
        Command::Kubeconfig { name } => {
            let rec = cluster(engine, &name).await?;
            let k = engine.kubeconfig(rec.id).await?;
            print!("{}", k.expose());
            Ok(())
        }
        Command::Scale {
            name,
            pool,
            size,
            wait,
            timeout,
        } => {
            let rec = cluster(engine, &name).await?;
            let mut spec = rec.spec.clone();
            let Some(p) = spec.node_pools.iter_mut().find(|p| p.name == pool) else {
                return Err(fail(
                    3,
                    format!(
                        "cluster `{name}` has no node pool `{pool}` (pools: {})",
                        rec.spec
                            .node_pools
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            };
            p.size = size;
            let generation = engine.update_cluster(rec.id, &spec).await?;
            out.note(&format!(
                "{name}: pool {pool} → {size} nodes (generation {generation})"
            ));
            if wait {
                let rec = cluster(engine, &name).await?;
                wait_phase(engine, out, &rec, Phase::Running, timeout).await?;
                out.note(&format!("{name}: running"));
            }
            Ok(())
        }
        Command::Delete {
            name,
            wait,
            timeout,
        } => {
            let rec = cluster(engine, &name).await?;
            engine.delete_cluster(rec.id).await?;
            out.note(&format!("{name}: deleting"));
            if wait {
                wait_phase(engine, out, &rec, Phase::Deleted, timeout).await?;
                out.note(&format!("{name}: deleted"));
            }
            Ok(())
        }
        Command::Abort { name } => {
            let rec = cluster(engine, &name).await?;
            engine.abort_cluster(rec.id).await?;
            out.note(&format!("{name}: aborting"));
            Ok(())
        }
        Command::Updates { name } => {
            let rec = cluster(engine, &name).await?;
            match engine.update_notification(rec.id).await? {
                None => {
                    out.show_value(
                        &format!("{name}: no profile update waiting"),
                        &serde_json::Value::Null,
                    );
                }
                Some(n) => {
                    let v = serde_json::to_value(&n)
                        .map_err(|e| fail(1, format!("update notification: {e}")))?;
                    out.show_value(&output::yaml_text(&v), &v);
                }
            }
            Ok(())
        }
        Command::ApplyUpdate { name, keep, take } => {
            let rec = cluster(engine, &name).await?;
            let resolution = match (keep, take) {
                (true, _) => Some(ConflictResolution::KeepOverrides),
                (_, true) => Some(ConflictResolution::TakeProfile),
                _ => None,
            };
            let generation = engine.apply_profile_update(rec.id, resolution).await?;
            out.note(&format!(
                "{name}: profile update applied (generation {generation})"
            ));
            Ok(())
        }
    }
}

/// Validates the documents and shows what applying them would change; writes nothing.
async fn dry_run_apply(engine: &Engine, out: &Out, docs: &[Document]) -> Res<()> {
    // Every document validated against the others of the files (a cluster's profile and
    // account may come with it); references to what is only in the store are checked by
    // the engine's pre-check below.
    let mut batch = spectro::validate::Catalog::default();
    for d in docs {
        batch.insert(d);
    }
    let mut problems = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        for v in spectro::validate::validate_document(d, &batch) {
            problems.push(format!(
                "document {} ({} {}): {}: {}",
                i + 1,
                d.kind(),
                d.name(),
                v.path,
                v.rule
            ));
        }
    }
    if !problems.is_empty() {
        return Err(fail(4, problems.join("\n")));
    }
    let mut t = Table::new(&["KIND", "NAME", "WOULD", "DETAIL"]);
    let mut json = Vec::new();
    for d in docs {
        let (kind, name, would, detail, preview) = match d {
            Document::Cluster(c) => match engine.cluster_by_name(&c.name).await {
                Ok(rec) => {
                    let p = engine.plan_update(rec.id, c).await?;
                    let detail = p
                        .pools
                        .iter()
                        .map(|(pool, change)| format!("{pool}: {change:?}"))
                        .collect::<Vec<_>>()
                        .join("; ");
                    let would = if p.creates == 0 && p.deletes == 0 && rec.spec == *c {
                        "keep"
                    } else {
                        "update"
                    };
                    (
                        "Cluster",
                        c.name.clone(),
                        would,
                        format!("+{} -{} machines; {detail}", p.creates, p.deletes),
                        serde_json::to_value(&p).ok(),
                    )
                }
                Err(CoreError::NotFound { .. })
                    if batch
                        .profiles
                        .contains_key(&(c.profile.name.clone(), c.profile.version.clone()))
                        || batch.accounts.contains_key(&c.cloud_account) =>
                {
                    let nodes: u32 = c.node_pools.iter().map(|p| p.size).sum();
                    (
                        "Cluster",
                        c.name.clone(),
                        "create",
                        format!(
                            "{nodes} nodes; valid; pre-checked when applied (its profile or \
                             account comes with it)"
                        ),
                        None,
                    )
                }
                Err(CoreError::NotFound { .. }) => {
                    let found = engine.precheck(c).await?;
                    let nodes: u32 = c.node_pools.iter().map(|p| p.size).sum();
                    let detail = if found.passed() {
                        format!("{nodes} nodes; pre-check passed")
                    } else {
                        format!("{nodes} nodes; pre-check: {}", found.message())
                    };
                    ("Cluster", c.name.clone(), "create", detail, None)
                }
                Err(e) => return Err(e.into()),
            },
            Document::ClusterProfile(p) => (
                "ClusterProfile",
                format!("{}@{}", p.name, p.version),
                "put",
                format!("{} packs", p.packs.len()),
                None,
            ),
            other => (
                other.kind(),
                other.name().to_string(),
                "put",
                String::new(),
                None,
            ),
        };
        t.row(vec![
            kind.to_string(),
            name.clone(),
            would.to_string(),
            detail.clone(),
        ]);
        json.push(serde_json::json!({
            "kind": kind, "name": name, "would": would, "detail": detail, "plan": preview,
        }));
    }
    out.show(&t, &json);
    Ok(())
}

async fn get(engine: &Engine, out: &Out, kind: Kind) -> Res<()> {
    use spectro::store::ObjectKind;
    match kind {
        Kind::Clusters => {
            let mut t = Table::new(&["NAME", "PHASE", "CLOUD", "NODES", "HEALTH", "ENDPOINT"]);
            let mut json = Vec::new();
            for rec in engine.clusters().await? {
                let desired: u32 = rec.spec.node_pools.iter().map(|p| p.size).sum();
                let ready: u32 = rec.status.pools.values().map(|p| p.ready).sum();
                let health = rec
                    .status
                    .health
                    .as_ref()
                    .map_or("-".to_string(), |h| h.condition_status().to_string());
                let endpoint = rec
                    .status
                    .infrastructure
                    .as_ref()
                    .and_then(|i| i.endpoint.clone())
                    .unwrap_or_else(|| "-".into());
                t.row(vec![
                    rec.spec.name.clone(),
                    out.phase(rec.status.phase),
                    rec.spec.cloud_type().as_str().to_string(),
                    format!("{ready}/{desired}"),
                    health,
                    endpoint,
                ]);
                json.push(output::cluster_json(&rec));
            }
            out.show(&t, &json);
        }
        Kind::Profiles | Kind::Accounts | Kind::Pools | Kind::Gateways => {
            let (object, header): (ObjectKind, &[&str]) = match kind {
                Kind::Profiles => (ObjectKind::Profile, &["NAME", "VERSION", "CLOUD", "PACKS"]),
                Kind::Accounts => (ObjectKind::CloudAccount, &["NAME", "CLOUD", "GATEWAY"]),
                Kind::Pools => (ObjectKind::IpPool, &["NAME", "GATEWAY", "NETWORK"]),
                _ => (ObjectKind::Gateway, &["NAME", "STATE", "REPLICAS"]),
            };
            let mut t = Table::new(header);
            let mut json = Vec::new();
            if kind == Kind::Gateways {
                for (gw, st) in engine.gateways().await? {
                    t.row(vec![
                        gw.name.clone(),
                        format!("{:?}", st.state),
                        st.replicas.len().to_string(),
                    ]);
                    json.push(serde_json::json!({
                        "name": gw.name,
                        "state": format!("{:?}", st.state),
                        "replicas": st.replicas.len(),
                    }));
                }
            } else {
                for o in engine.store().list_objects(object).await? {
                    let v = output::redacted(&o.body);
                    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("-").to_string();
                    let row = match kind {
                        Kind::Profiles => vec![
                            s("name"),
                            s("version"),
                            s("cloud"),
                            v.get("packs")
                                .and_then(|p| p.as_array())
                                .map_or(0, Vec::len)
                                .to_string(),
                        ],
                        Kind::Accounts => vec![
                            s("name"),
                            v.get("credentials")
                                .and_then(|c| c.as_object())
                                .and_then(|c| c.keys().next().cloned())
                                .unwrap_or_else(|| "-".into()),
                            s("gatewayName"),
                        ],
                        _ => vec![s("name"), s("gatewayName"), s("subnet")],
                    };
                    t.row(row);
                    json.push(v);
                }
            }
            out.show(&t, &json);
        }
    }
    Ok(())
}

//! The spectro cluster agent: `SPECTRO_ENDPOINT`, `SPECTRO_CLUSTER_ID`, `SPECTRO_TOKEN`
//! (and optionally `SPECTRO_CA_FILE`, `SPECTRO_INTERVAL_SECS`, `SPECTRO_BUFFER`) from the
//! environment; the Kubernetes API from the pod's service account, or `KUBECONFIG` when
//! run as a process. Stops on SIGTERM / Ctrl-C.

use spectro_agent::agent::{Agent, AgentConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SPECTRO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match AgentConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("spectro-agent: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kube = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("spectro-agent: no Kubernetes API: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let agent = match Agent::new(kube, config) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("spectro-agent: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    eprintln!("spectro-agent {} started", spectro_agent::agent::VERSION);
    agent
        .run(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        })
        .await;
    std::process::ExitCode::SUCCESS
}

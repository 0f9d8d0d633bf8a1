//! A private PostgreSQL server for tests: Debian's binaries, `initdb` + `pg_ctl` in a
//! temporary directory, a free port on 127.0.0.1, run as user `postgres` when the tests run
//! as root. With `SPECTRO_TEST_PG_URL` set, a fresh database on that server is used instead.

use std::path::PathBuf;
use std::process::Command;

pub struct PgServer {
    pub url: String,
    dir: Option<tempfile::TempDir>,
    bin: PathBuf,
    as_postgres: bool,
}

fn pg_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

fn run(bin: &PathBuf, as_postgres: bool, args: &[&str]) -> std::process::Output {
    let mut cmd = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.args(args).output().expect("run a PostgreSQL tool")
}

impl PgServer {
    /// Starts a server (or picks a fresh database on `SPECTRO_TEST_PG_URL`); `None` (with a
    /// message) when PostgreSQL is not installed and not required.
    pub async fn start() -> Option<PgServer> {
        if let Ok(base) = std::env::var("SPECTRO_TEST_PG_URL") {
            let db = format!("spectro_test_{}", uuid::Uuid::new_v4().simple());
            let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
                .await
                .expect("connect to SPECTRO_TEST_PG_URL");
            tokio::spawn(conn);
            client
                .batch_execute(&format!("CREATE DATABASE {db}"))
                .await
                .unwrap();
            let url = match base.rsplit_once('/') {
                Some((head, _)) if head.contains("//") && head.len() > "postgres://".len() => {
                    format!("{head}/{db}")
                }
                _ => format!("{base}/{db}"),
            };
            return Some(PgServer {
                url,
                dir: None,
                bin: PathBuf::new(),
                as_postgres: false,
            });
        }
        let Some(bin) = pg_bin() else {
            spectro::testing::peer_missing(
                "PostgreSQL",
                "install Debian's postgresql package or set SPECTRO_TEST_PG_URL",
            );
            return None;
        };
        let as_postgres = unsafe_is_root();
        let dir = tempfile::Builder::new()
            .prefix("spectro-pg")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        if as_postgres {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(st.success());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let o = run(
            &bin.join("initdb"),
            as_postgres,
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(
            o.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=200",
            dir.path().display()
        );
        let log = dir.path().join("log");
        let o = run(
            &bin.join("pg_ctl"),
            as_postgres,
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &opts,
                "-w",
                "start",
            ],
        );
        assert!(
            o.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&o.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Some(PgServer {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            dir: Some(dir),
            bin,
            as_postgres,
        })
    }
}

fn unsafe_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let data = dir.path().join("data");
            let _ = run(
                &self.bin.join("pg_ctl"),
                self.as_postgres,
                &[
                    "-D",
                    data.to_str().unwrap(),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
            );
        }
    }
}

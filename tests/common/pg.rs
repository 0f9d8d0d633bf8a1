//! A private PostgreSQL server for tests: Debian's binaries, `initdb` + `pg_ctl` in a
//! temporary directory, a free port on 127.0.0.1, run as user `postgres` when the tests run
//! as root. With `SPECTRO_TEST_PG_URL` set, a fresh database on that server is used instead
//! (except by [`PgServer::start_tls`], which needs a server of its own).

use std::path::PathBuf;
use std::process::Command;

/// A server that speaks TLS only: its certificate and key (PEM), and the password of user
/// `postgres` (SCRAM-SHA-256, so channel binding can be exercised).
pub struct PgTls {
    pub cert_pem: String,
    pub key_pem: String,
    pub password: String,
}

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
    /// `pg_dump` of the server's database (plain SQL), as bytes.
    pub fn dump(&self) -> Vec<u8> {
        let bin = pg_bin().expect("pg_dump (Debian's postgresql package)");
        let out = Command::new(bin.join("pg_dump"))
            .arg("--dbname")
            .arg(&self.url)
            .output()
            .expect("run pg_dump");
        assert!(
            out.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

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
        Self::start_private(None)
    }

    /// Starts a private server with `ssl=on` whose pg_hba.conf accepts TCP connections only
    /// over TLS (`hostssl`, SCRAM-SHA-256; `hostnossl` rejected). The URL carries the
    /// password and no TLS parameter.
    pub async fn start_tls(tls: &PgTls) -> Option<PgServer> {
        Self::start_private(Some(tls))
    }

    fn start_private(tls: Option<&PgTls>) -> Option<PgServer> {
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
        let pwfile = dir.path().join("pw");
        if let Some(t) = tls {
            std::fs::write(&pwfile, &t.password).unwrap();
        }
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
        let mut initdb = vec![
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ];
        let pwarg = format!("--pwfile={}", pwfile.display());
        if tls.is_some() {
            initdb.push(&pwarg);
        }
        let o = run(&bin.join("initdb"), as_postgres, &initdb);
        assert!(
            o.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let mut opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=200",
            dir.path().display()
        );
        if let Some(t) = tls {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(data.join("server.crt"), &t.cert_pem).unwrap();
            let key = data.join("server.key");
            std::fs::write(&key, &t.key_pem).unwrap();
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\n\
                 hostssl all all 127.0.0.1/32 scram-sha-256\n\
                 hostnossl all all 127.0.0.1/32 reject\n",
            )
            .unwrap();
            if as_postgres {
                let st = Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&data)
                    .status()
                    .unwrap();
                assert!(st.success());
            }
            opts.push_str(" -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key");
        }
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
        let user = match tls {
            Some(t) => format!("postgres:{}", t.password),
            None => "postgres".to_string(),
        };
        Some(PgServer {
            url: format!("postgres://{user}@127.0.0.1:{port}/postgres"),
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

//! A real PostgreSQL 15 server in a temp dir on a free loopback port, for OpenBao's database
//! secrets engine and for checking that issued credentials log in.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root `initdb` and `postgres` run
//! as the `postgres` system user (Debian's package creates it), otherwise as the current user; TCP connections need a password (scram-sha-256), the unix
//! socket in the temp dir trusts local users (the test bed's own `psql` calls).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::{Gid, Uid, User, chown};

use crate::error::{Error, Result};
use crate::net::{free_port, random_hex};
use crate::process::{ChildGuard, RunAs, spawn_guarded};

/// Where Debian installs the PostgreSQL 15 binaries.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The database created for applications.
pub const DATABASE: &str = "app";
/// The superuser OpenBao connects as.
pub const ADMIN_USER: &str = "vault";

/// A running PostgreSQL server. Shut down (immediate mode) and its data removed on drop.
pub struct Postgres {
    child: ChildGuard,
    port: u16,
    socket_dir: PathBuf,
    admin_password: String,
    _dir: tempfile::TempDir,
}

impl Postgres {
    /// Runs `initdb`, starts `postgres` on a free port, creates superuser [`ADMIN_USER`] with a
    /// random password and database [`DATABASE`]. Blocking; a few seconds.
    pub fn start() -> Result<Self> {
        // As root (CI), switch to the `postgres` system user; otherwise run as ourselves.
        let run_as = if Uid::effective().is_root() {
            let user =
                User::from_name("postgres")
                    .ok()
                    .flatten()
                    .ok_or_else(|| Error::NotReady {
                        what: "postgres".into(),
                        detail: "no `postgres` system user (install Debian's postgresql package)"
                            .into(),
                    })?;
            Some(RunAs {
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
            })
        } else {
            None
        };
        let dir = crate::tempdir::create("postgres")?;
        let owner = |p: &Path| match run_as {
            Some(RunAs { uid, gid }) => {
                chown(p, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                    .map_err(|e| Error::fs("chown", p)(std::io::Error::from(e)))
            }
            None => Ok(()),
        };
        owner(dir.path())?;
        let data = dir.path().join("data");
        let socket_dir = dir.path().join("sock");
        std::fs::create_dir(&socket_dir).map_err(Error::fs("create", &socket_dir))?;
        owner(&socket_dir)?;

        let mut initdb = Command::new(Path::new(PG_BIN).join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .args(["-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"])
            .current_dir(dir.path());
        run(initdb, run_as, "initdb", None)?;

        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port()?;
            let log_path = dir.path().join(format!("postgres-{port}.log"));
            let log = std::fs::File::create(&log_path).map_err(Error::fs("create", &log_path))?;
            let log2 = log
                .try_clone()
                .map_err(Error::fs("clone handle", &log_path))?;
            let mut cmd = Command::new(Path::new(PG_BIN).join("postgres"));
            cmd.arg("-D")
                .arg(&data)
                .arg("-p")
                .arg(port.to_string())
                .arg("-k")
                .arg(&socket_dir)
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args([
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                ])
                .args(["-c", "shared_buffers=16MB", "-c", "max_connections=50"])
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2);
            let child = spawn_guarded(cmd, run_as).map_err(|source| Error::Spawn {
                program: "postgres".into(),
                source,
            })?;
            // SIGQUIT is PostgreSQL's immediate shutdown: fast, and it removes its shared memory.
            let mut child = ChildGuard::new(child, Signal::SIGQUIT, Duration::from_secs(5));
            match wait_ready(&mut child, &socket_dir, port, &log_path) {
                Ok(()) => {
                    let pg = Postgres {
                        child,
                        port,
                        socket_dir: socket_dir.clone(),
                        admin_password: random_hex(16),
                        _dir: dir,
                    };
                    pg.psql_db(
                        "postgres",
                        &format!(
                            "CREATE ROLE {ADMIN_USER} WITH SUPERUSER LOGIN PASSWORD '{}'",
                            pg.admin_password
                        ),
                    )?;
                    pg.psql_db("postgres", &format!("CREATE DATABASE {DATABASE}"))?;
                    return Ok(pg);
                }
                Err(e) => {
                    child.stop();
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    let clash = log.contains("could not bind") || log.contains("already in use");
                    if !clash || attempt >= 5 {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// The postmaster's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The application database's name ([`DATABASE`]).
    pub fn database(&self) -> &str {
        DATABASE
    }

    /// The superuser OpenBao connects as ([`ADMIN_USER`]).
    pub fn admin_user(&self) -> &str {
        ADMIN_USER
    }

    /// The superuser's random password (a throw-away test credential).
    pub fn admin_password(&self) -> &str {
        &self.admin_password
    }

    /// `postgresql://vault:<password>@127.0.0.1:<port>/app?sslmode=disable`.
    pub fn connection_url(&self) -> String {
        format!(
            "postgresql://{ADMIN_USER}:{}@127.0.0.1:{}/{DATABASE}?sslmode=disable",
            self.admin_password, self.port
        )
    }

    /// The templated URL OpenBao's database engine wants (`{{username}}`/`{{password}}`).
    pub fn connection_url_template(&self) -> String {
        format!(
            "postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/{DATABASE}?sslmode=disable",
            self.port
        )
    }

    /// Runs `sql` as superuser `postgres` in database [`DATABASE`] (over the unix socket) and
    /// returns the unaligned, tuples-only output, trimmed.
    pub fn psql(&self, sql: &str) -> Result<String> {
        self.psql_db(DATABASE, sql)
    }

    fn psql_db(&self, db: &str, sql: &str) -> Result<String> {
        run(
            psql_command(&self.socket_dir, self.port, db),
            None,
            "psql",
            Some(sql),
        )
    }

    /// Whether `user`/`password` can log in to [`DATABASE`] over TCP (password auth) and run a
    /// query.
    pub fn can_login(&self, user: &str, password: &str) -> bool {
        let mut cmd = Command::new(Path::new(PG_BIN).join("psql"));
        cmd.args(["-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args([
                "-U", user, "-d", DATABASE, "-X", "-A", "-t", "-w", "-c", "SELECT 1",
            ])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd.status().is_ok_and(|s| s.success())
    }
}

/// Polls until the server answers a query over its unix socket, or fails if it exited.
fn wait_ready(child: &mut ChildGuard, socket_dir: &Path, port: u16, log_path: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut detail = String::from("no answer yet");
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait() {
            let log = std::fs::read_to_string(log_path).unwrap_or_default();
            let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
            return Err(Error::NotReady {
                what: "postgres".into(),
                detail: format!("exited with {status}: {tail}"),
            });
        }
        match run(
            psql_command(socket_dir, port, "postgres"),
            None,
            "psql",
            Some("SELECT 1"),
        ) {
            Ok(_) => return Ok(()),
            Err(e) => detail = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(Error::NotReady {
        what: "postgres".into(),
        detail,
    })
}

/// `psql` as superuser `postgres` over the unix socket, unaligned tuples-only output.
fn psql_command(socket_dir: &Path, port: u16, db: &str) -> Command {
    let mut cmd = Command::new(Path::new(PG_BIN).join("psql"));
    cmd.arg("-h")
        .arg(socket_dir)
        .arg("-p")
        .arg(port.to_string())
        .args(["-U", "postgres", "-d", db, "-X", "-q", "-A", "-t", "-w"])
        .args(["-v", "ON_ERROR_STOP=1"]);
    cmd
}

/// Runs a helper command to completion (optionally as another user) and returns its stdout.
///
/// `input` goes to its stdin (SQL for psql: kept out of argv, where `ps` would show passwords).
fn run(
    mut cmd: Command,
    run_as: Option<RunAs>,
    program: &str,
    input: Option<&str>,
) -> Result<String> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = spawn_guarded(cmd, run_as).map_err(|source| Error::Spawn {
        program: program.to_owned(),
        source,
    })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        use std::io::Write as _;
        // Inputs are a few statements: far below the pipe buffer, so no deadlock with stdout.
        stdin
            .write_all(text.as_bytes())
            .map_err(|source| Error::Io {
                op: "write psql input",
                source,
            })?;
    }
    let out = child.wait_with_output().map_err(|source| Error::Spawn {
        program: program.to_owned(),
        source,
    })?;
    if !out.status.success() {
        return Err(Error::Command {
            program: program.to_owned(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("port", &self.port)
            .field("admin_password", &"<redacted>")
            .finish()
    }
}

//! Helpers for the daemon-mode tests: vault-env started in daemon mode in front of the
//! `vault-env-daemonapp` test app, in its own process group (so that every process it
//! leaves behind is killed when the test ends), with the app's event log and vault-env's
//! stderr in files.
#![allow(dead_code, reason = "each test file uses a different subset")]
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// The app the daemon tests supervise.
pub const DAEMONAPP: &str = env!("CARGO_BIN_EXE_vault-env-daemonapp");
/// The binary under test.
pub const VAULT_ENV: &str = env!("CARGO_BIN_EXE_vault-env");

/// A running `vault-env` (possibly behind `unshare`/`setpriv`) and its files.
pub struct Daemon {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
    pub stderr: PathBuf,
    pub started: Instant,
    status: Option<ExitStatus>,
}

impl Daemon {
    /// `vault-env DAEMONAPP args…` in daemon mode with exactly `env` (plus the app's log).
    pub fn start(env: &[(String, String)], args: &[&str]) -> Daemon {
        Self::start_wrapped(&[], env, args)
    }

    /// Like [`start`](Self::start), with `wrapper` (e.g. `unshare --pid --fork`) in front.
    pub fn start_wrapped(wrapper: &[&str], env: &[(String, String)], args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        // The app may run as nobody: let it write its log here.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let log = dir.path().join("app.log");
        let stderr = dir.path().join("vault-env.stderr");
        let mut argv: Vec<&str> = wrapper.to_vec();
        argv.push(VAULT_ENV);
        argv.push(DAEMONAPP);
        argv.extend_from_slice(args);
        let mut command = Command::new(argv[0]);
        command
            .args(&argv[1..])
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("VAULT_ENV_DAEMON", "true")
            .env("APP_LOG", &log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .process_group(0);
        let child = command.spawn().unwrap();
        Daemon {
            child,
            dir,
            log,
            stderr,
            started: Instant::now(),
            status: None,
        }
    }

    /// The pid of the process started (vault-env itself unless wrapped by `unshare`).
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Sends `signal` to vault-env.
    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap();
    }

    /// The app's log lines so far.
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// vault-env's stderr so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Polls the app's log until `done` holds; panics with both logs after `timeout`.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.lines();
            if done(&lines) {
                return lines;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}\napp log:\n{}\nvault-env stderr:\n{}",
                    lines.join("\n"),
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The `start` lines: (pid, ppid, user) of each app start.
    pub fn starts(&self) -> Vec<(i32, i32, String)> {
        self.lines()
            .iter()
            .filter_map(|l| {
                let mut parts = l.strip_prefix("start ")?.split(' ');
                Some((
                    parts.next()?.parse().ok()?,
                    parts.next()?.parse().ok()?,
                    parts.next()?.to_owned(),
                ))
            })
            .collect()
    }

    /// Waits for vault-env to exit; panics (after killing it) past `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.status = Some(status);
                return status;
            }
            if Instant::now() > deadline {
                let _ = killpg(self.pid(), Signal::SIGKILL);
                panic!(
                    "vault-env did not exit within {timeout:?}\napp log:\n{}\nstderr:\n{}",
                    self.lines().join("\n"),
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether vault-env is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // vault-env, the app and anything they left behind share the process group.
        let _ = killpg(self.pid(), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// A memory figure of `pid` from `/proc/<pid>/status` (`VmRSS`, `RssAnon`…) in KiB.
pub fn status_kib(pid: Pid, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Direct children of `pid` (all threads' `children` lists).
pub fn children(pid: Pid) -> Vec<Pid> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .map(Pid::from_raw),
            );
        }
    }
    out
}

/// The state letter and command name of `pid` from `/proc/<pid>/stat`, if it exists.
pub fn state_and_comm(pid: Pid) -> Option<(char, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    let state = stat[close + 1..].trim_start().chars().next()?;
    Some((state, comm))
}

/// Accessors of the live non-root tokens (vault-env's logins).
pub fn login_accessors(bao: &strongroom_testbed::OpenBao) -> Vec<String> {
    let list = bao.api("LIST", "auth/token/accessors", None).unwrap();
    list["data"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .filter(|accessor| {
            // A token revoked meanwhile no longer looks up: not live.
            bao.api(
                "POST",
                "auth/token/lookup-accessor",
                Some(serde_json::json!({ "accessor": accessor })),
            )
            .is_ok_and(|info| {
                !info["data"]["policies"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p == "root")
            })
        })
        .collect()
}

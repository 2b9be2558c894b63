//! Daemon mode as a process, against a real OpenBao: signals reach the app, the app's exit
//! code or killing signal becomes vault-env's, orphans are reaped when vault-env is PID 1 of
//! a new PID namespace, the app's environment equals exec mode's, and vault-env's own
//! `/proc/<pid>/{environ,mem}` stay closed to a same-uid process.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod daemon_support;
mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use daemon_support::{Daemon, children, state_and_comm};
use nix::sys::signal::Signal;
use serde_json::json;
use support::{Bed, canary, run, with};

/// Login settings plus one KV secret in `SECRET`.
fn bed_with_secret() -> (Bed, String, Vec<(String, String)>) {
    let bed = Bed::start();
    let value = canary("daemon");
    bed.bao.write_kv2("app", json!({ "v": value })).unwrap();
    let env = with(&bed.env(), &[("SECRET", "vault:secret/data/app#v")]);
    (bed, value, env)
}

#[test]
fn daemon_signals_sent_to_vault_env_reach_the_app() {
    let (_bed, _value, env) = bed_with_secret();
    let env = with(&env, &[("APP_EXIT_ON", "TERM=7")]);
    let mut daemon = Daemon::start(&env, &["wait"]);
    daemon.wait_for("the app to start", Duration::from_secs(10), |l| {
        l.iter().any(|l| l.starts_with("start "))
    });
    let signals = [
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
        Signal::SIGALRM,
        Signal::SIGCONT,
        Signal::SIGTSTP,
        Signal::SIGURG,
        Signal::SIGPWR,
    ];
    for signal in signals {
        let line = format!("signal {}", signal.as_str().trim_start_matches("SIG"));
        daemon.signal(signal);
        daemon.wait_for(&line, Duration::from_secs(5), |l| l.contains(&line));
    }
    assert!(daemon.running(), "vault-env must survive forwarded signals");
    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(7), "{}", daemon.stderr_text());
    assert!(daemon.lines().contains(&"signal TERM".to_owned()));
    // Every signal arrived exactly once.
    let received = daemon
        .lines()
        .iter()
        .filter(|l| l.starts_with("signal "))
        .count();
    assert_eq!(received, signals.len() + 1, "{:?}", daemon.lines());
}

#[test]
fn daemon_app_exit_code_is_propagated() {
    let (_bed, _value, env) = bed_with_secret();
    for code in ["0", "3", "42"] {
        let mut daemon = Daemon::start(&env, &["exit", code]);
        let status = daemon.wait_exit(Duration::from_secs(10));
        assert_eq!(
            status.code(),
            Some(code.parse().unwrap()),
            "{}",
            daemon.stderr_text()
        );
        assert_eq!(daemon.starts().len(), 1);
    }
}

#[test]
fn daemon_app_killed_by_signal_exits_128_plus_signo() {
    let (_bed, _value, env) = bed_with_secret();
    for (signal, code) in [("USR1", 138), ("KILL", 137), ("TERM", 143)] {
        let mut daemon = Daemon::start(&env, &["raise", signal]);
        let status = daemon.wait_exit(Duration::from_secs(10));
        assert_eq!(
            status.code(),
            Some(code),
            "{signal}: {}",
            daemon.stderr_text()
        );
    }
}

#[test]
fn daemon_as_pid1_reaps_orphaned_grandchildren() {
    let (_bed, _value, env) = bed_with_secret();
    let env = with(&env, &[("APP_EXIT_ON", "TERM=0")]);
    let mut daemon = Daemon::start_wrapped(
        &["unshare", "--pid", "--fork", "--kill-child"],
        &env,
        &["orphans", "3", "1"],
    );
    daemon.wait_for("the orphans", Duration::from_secs(10), |l| {
        l.contains(&"orphans started true".to_owned())
    });
    // unshare's only child is vault-env, PID 1 in the new namespace.
    let vault_env = children(daemon.pid())[0];
    let status = std::fs::read_to_string(format!("/proc/{vault_env}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(nspid.trim_end().ends_with("\t1"), "{nspid}");
    // The app sees vault-env as its parent (PID 1 inside).
    assert_eq!(daemon.starts()[0].1, 1);

    // The orphaned sleeps were re-parented to vault-env (the shell that started them exited).
    let orphans: Vec<_> = children(vault_env)
        .into_iter()
        .filter(|p| state_and_comm(*p).is_some_and(|(_, comm)| comm == "sleep"))
        .collect();
    assert_eq!(
        orphans.len(),
        3,
        "children of vault-env: {:?}",
        children(vault_env)
    );
    // They exit after a second; vault-env must reap them: gone, not zombies.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<_> = orphans.iter().filter_map(|p| state_and_comm(*p)).collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "orphans not reaped: {left:?}\n{}",
            daemon.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for child in children(vault_env) {
        let (state, comm) = state_and_comm(child).unwrap_or((' ', String::new()));
        assert_ne!(state, 'Z', "zombie {child} ({comm}) under vault-env");
    }
    nix::sys::signal::kill(vault_env, Signal::SIGTERM).unwrap();
    let status = daemon.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}: {}", daemon.stderr_text());
}

#[test]
fn daemon_app_environment_equals_exec_mode() {
    let bed = Bed::start();
    bed.bao
        .write_kv2(
            "diff",
            json!({ "user": "alice", "pass": "p@ss=w0rd", "n": 7 }),
        )
        .unwrap();
    bed.bao
        .write_kv1("legacy", json!({ "k": "v1value" }))
        .unwrap();
    let env = with(
        &bed.env(),
        &[
            ("PLAIN", "kept as is"),
            ("USER_NAME", "vault:secret/data/diff#user"),
            ("PASS", "vault:secret/data/diff#pass"),
            (
                "INLINE",
                "u=${vault:secret/data/diff#user};n=${vault:secret/data/diff#n}",
            ),
            (
                "TEMPLATED",
                "vault:secret/data/diff#${.user}-${.pass | upper}",
            ),
            ("LEGACY", "vault:kv1/legacy#k"),
            ("EMPTY", ""),
            ("VAULT_ENV_PASSTHROUGH", "VAULT_ROLE"),
            ("VAULT_ENV_EXPIRY_POLICY", "restart"),
            ("VAULT_ENV_GRACE_PERIOD", "2s"),
            ("LAST", "after the references"),
        ],
    );
    let exec = run(&with(&env, &[("VAULT_ENV_DAEMON", "false")]), &["a", "b c"]);
    let daemon = run(&with(&env, &[("VAULT_ENV_DAEMON", "true")]), &["a", "b c"]);
    assert!(
        daemon.stderr().contains("daemon mode: app started"),
        "{}",
        daemon.stderr()
    );
    let (exec, daemon) = (exec.report(), daemon.report());
    assert_eq!(exec.get("USER_NAME"), Some("alice"));
    assert_eq!(exec.get("VAULT_ROLE"), Some("default"));
    assert_eq!(exec.get("VAULT_ENV_EXPIRY_POLICY"), None);
    assert_eq!(daemon.env, exec.env);
    assert_eq!(daemon.args, exec.args);
    // The same descriptors (stdio only); pipe inode numbers differ between runs.
    let kinds = |fds: &[(u32, String)]| -> Vec<(u32, String)> {
        fds.iter()
            .map(|(fd, target)| (*fd, target.split(':').next().unwrap_or_default().to_owned()))
            .collect()
    };
    assert_eq!(kinds(&daemon.fds), kinds(&exec.fds));
    assert_eq!(kinds(&exec.fds).len(), 3, "{:?}", exec.fds);
}

#[test]
fn daemon_app_environ_bytes_equal_exec_mode() {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    let (bed, value, env) = bed_with_secret();
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("environ");
    let environ_of = |daemon: &str| {
        let _ = std::fs::remove_file(&dump);
        let status = Command::new(support::VAULT_ENV)
            .arg(daemon_support::DAEMONAPP)
            .arg("dump")
            .arg(&dump)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            // A value that is not UTF-8 must pass through unchanged too.
            .env("RAW", OsString::from_vec(b"\xff\xfe raw \x80".to_vec()))
            .env("VAULT_ENV_DAEMON", daemon)
            .status()
            .unwrap();
        assert!(status.success(), "VAULT_ENV_DAEMON={daemon}: {status:?}");
        std::fs::read(&dump).unwrap()
    };
    let exec = environ_of("false");
    let daemon = environ_of("true");
    assert_eq!(daemon, exec);
    let text = String::from_utf8_lossy(&exec);
    assert!(text.contains(&format!("SECRET={value}\0")), "{text}");
    assert!(!text.contains("VAULT_ADDR="), "{text}");
    assert!(exec.windows(8).any(|w| w == b"\xff\xfe raw \x80"));
    drop(bed);
}

#[test]
fn daemon_proc_environ_and_mem_unreadable_by_same_uid() {
    let (bed, value, env) = bed_with_secret();
    // vault-env runs as nobody: give it a JWT it can read.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let jwt = dir.path().join("jwt");
    std::fs::copy(&bed.jwt_file, &jwt).unwrap();
    std::fs::set_permissions(&jwt, std::fs::Permissions::from_mode(0o644)).unwrap();
    let env = with(
        &env,
        &[
            ("VAULT_JWT_FILE", jwt.to_str().unwrap()),
            ("APP_EXIT_ON", "TERM=0"),
        ],
    );
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let mut daemon = Daemon::start_wrapped(&nobody, &env, &["wait"]);
    daemon.wait_for("the app to start", Duration::from_secs(10), |l| {
        l.iter().any(|l| l.starts_with("start "))
    });
    let vault_env = daemon.pid();
    let app = daemon.starts()[0].0;
    let uid_of = |pid: String| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .unwrap()
            .to_owned()
    };
    assert!(uid_of(vault_env.to_string()).contains("\t65534\t"));
    assert!(uid_of(app.to_string()).contains("\t65534\t"));

    let read_as_nobody = |path: String| {
        Command::new("setpriv")
            .args(&nobody[1..])
            .args(["dd", "bs=4096", "count=1", "status=none"])
            .arg(format!("if={path}"))
            .output()
            .unwrap()
    };
    // The control: the same reader can read a dumpable same-uid process (the app).
    let app_environ = read_as_nobody(format!("/proc/{app}/environ"));
    assert!(app_environ.status.success(), "{app_environ:?}");
    assert!(String::from_utf8_lossy(&app_environ.stdout).contains(&value));
    for file in ["environ", "mem"] {
        let out = read_as_nobody(format!("/proc/{vault_env}/{file}"));
        assert!(!out.status.success(), "{file} readable: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // What root can see of vault-env holds references only.
    let own = std::fs::read(format!("/proc/{vault_env}/environ")).unwrap();
    let own = String::from_utf8_lossy(&own);
    assert!(own.contains("SECRET=vault:secret/data/app#v"), "{own}");
    assert!(!own.contains(&value));
    let cmdline = std::fs::read(format!("/proc/{vault_env}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(&value));

    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}: {}", daemon.stderr_text());
    assert!(!daemon.stderr_text().contains(&value));
}

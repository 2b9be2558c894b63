//! `vault-env-daemonapp`: the app the daemon-mode tests run under vault-env. It appends what
//! happens to it, one line at a time, to `$APP_LOG`:
//!
//! - `start <pid> <ppid> <$DB_USER or ->` when it starts;
//! - `signal <NAME>` for every signal it receives (all catchable signals are blocked and
//!   taken with `sigwait` by one thread, so nothing is lost and nothing kills it, except
//!   the signals listed in `$APP_EXIT_ON` as `TERM=3,INT=4`, which end it with that code);
//! - in mode `pg`, `pg ok <user>` or `pg fail <user>` every 300 ms: a fresh `psql` login
//!   to `127.0.0.1:$DB_PORT/$DB_NAME` with the injected `$DB_USER` and `$DB_PASS`.
//!
//! Modes (first argument): `wait` (only signals), `pg`, `exit CODE` (exit at once),
//! `dump FILE` (copy `/proc/self/environ` to FILE and exit),
//! `raise SIGNAL` (die of SIGNAL with its default action), `orphans N SECS` (start N
//! `sleep SECS` grandchildren through a shell that exits at once, so they are orphaned,
//! then wait).

use std::io::Write;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};

fn log(line: &str) {
    let Some(path) = std::env::var_os("APP_LOG") else {
        return;
    };
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        // One write per line: O_APPEND keeps lines whole across processes.
        let _ = file.write_all(format!("{line}\n").as_bytes());
    }
}

fn signal_name(signal: Signal) -> &'static str {
    signal.as_str().trim_start_matches("SIG")
}

/// `TERM=3,INT=4` → the signals that end the app, with their exit codes.
fn exit_on() -> Vec<(String, u8)> {
    std::env::var("APP_EXIT_ON")
        .unwrap_or_default()
        .split(',')
        .filter_map(|pair| {
            let (name, code) = pair.split_once('=')?;
            Some((name.trim().to_owned(), code.trim().parse().ok()?))
        })
        .collect()
}

/// Blocks every catchable signal except SIGCHLD and records them from a dedicated thread.
fn record_signals() {
    let mut set = SigSet::empty();
    for signal in Signal::iterator() {
        if !matches!(signal, Signal::SIGCHLD | Signal::SIGKILL | Signal::SIGSTOP) {
            set.add(signal);
        }
    }
    if set.thread_block().is_err() {
        log("error cannot block signals");
        std::process::exit(90);
    }
    let exits = exit_on();
    std::thread::spawn(move || {
        loop {
            let Ok(signal) = set.wait() else {
                continue;
            };
            let name = signal_name(signal);
            log(&format!("signal {name}"));
            if let Some((_, code)) = exits.iter().find(|(n, _)| n == name) {
                std::process::exit(i32::from(*code));
            }
        }
    });
}

fn pg_check(user: &str) -> bool {
    let get = |name| std::env::var(name).unwrap_or_default();
    Command::new("/usr/lib/postgresql/15/bin/psql")
        .args(["-h", "127.0.0.1", "-X", "-A", "-t", "-w", "-c", "SELECT 1"])
        .arg("-p")
        .arg(get("DB_PORT"))
        .arg("-d")
        .arg(get("DB_NAME"))
        .arg("-U")
        .arg(user)
        .env("PGPASSWORD", get("DB_PASS"))
        .env("PGCONNECT_TIMEOUT", "3")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let user = std::env::var("DB_USER").unwrap_or_else(|_| "-".into());
    let ppid = nix::unistd::getppid();
    log(&format!("start {} {ppid} {user}", std::process::id()));
    match args.first().map(String::as_str) {
        Some("exit") => {
            let code = args.get(1).and_then(|c| c.parse().ok()).unwrap_or(0);
            return ExitCode::from(code);
        }
        Some("dump") => {
            // The environment exactly as the kernel gave it, for byte comparisons.
            let copied = args
                .get(1)
                .map(|out| std::fs::copy("/proc/self/environ", out));
            return ExitCode::from(if matches!(copied, Some(Ok(_))) { 0 } else { 91 });
        }
        Some("raise") => {
            let signal = args
                .get(1)
                .and_then(|s| format!("SIG{s}").parse::<Signal>().ok())
                .unwrap_or(Signal::SIGKILL);
            let _ = nix::sys::signal::raise(signal);
            std::thread::sleep(Duration::from_secs(2));
            return ExitCode::from(99);
        }
        _ => {}
    }
    record_signals();
    match args.first().map(String::as_str) {
        Some("pg") => loop {
            let line = if pg_check(&user) { "ok" } else { "fail" };
            log(&format!("pg {line} {user}"));
            std::thread::sleep(Duration::from_millis(300));
        },
        Some("orphans") => {
            let count: usize = args.get(1).and_then(|c| c.parse().ok()).unwrap_or(1);
            let secs = args.get(2).cloned().unwrap_or_else(|| "1".into());
            let script = format!("for i in $(seq {count}); do sleep {secs} & done");
            let status = Command::new("/bin/sh").args(["-c", &script]).status();
            log(&format!(
                "orphans started {}",
                status.is_ok_and(|s| s.success())
            ));
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
        _ => loop {
            std::thread::sleep(Duration::from_secs(60));
        },
    }
}

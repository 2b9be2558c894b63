//! Servers die with the test process even when it is SIGKILLed (no destructors run):
//! `PR_SET_PDEATHSIG` in every child. This binary re-runs itself as the "test process" that gets
//! killed, so it has no libtest harness (`harness = false` in Cargo.toml).

use std::io::BufRead as _;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "TESTBED_ORPHANS_CHILD";

fn main() -> ExitCode {
    if std::env::var_os(CHILD_ENV).is_some() {
        return child();
    }
    match killed_test_process_takes_its_servers_along() {
        Ok(()) => {
            println!("test killed_test_process_takes_its_servers_along ... ok");
            println!("1 passed, 0 failed");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("test killed_test_process_takes_its_servers_along ... FAILED: {e}");
            println!("0 passed, 1 failed");
            ExitCode::FAILURE
        }
    }
}

/// Starts OpenBao and PostgreSQL, prints their pids, then waits to be killed.
fn child() -> ExitCode {
    let started = strongroom_testbed::OpenBao::start().and_then(|bao| {
        let pg = strongroom_testbed::Postgres::start()?;
        Ok((bao, pg))
    });
    match started {
        Ok((bao, pg)) => {
            println!("{} {}", bao.pid(), pg.pid());
            std::thread::sleep(Duration::from_secs(120));
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("error {e}");
            ExitCode::FAILURE
        }
    }
}

fn killed_test_process_takes_its_servers_along() -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let pids: Vec<u32> = line
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    if pids.len() != 2 {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("child did not start its servers: {line:?}"));
    }
    for pid in &pids {
        if !alive(*pid) {
            return Err(format!("server {pid} not running before the kill"));
        }
    }
    child.kill().map_err(|e| e.to_string())?; // SIGKILL: no Drop runs in the child
    child.wait().map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) {
        if Instant::now() > deadline {
            return Err(format!("servers {pids:?} outlived their test process"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Running (not gone, not a zombie waiting for init to reap it).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Field 3, after the parenthesised command name, is the state.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

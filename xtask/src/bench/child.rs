//! Child processes of the benchmarks, each under a hard deadline: a benchmark that hangs is
//! killed and reported as broken ("X did not finish within N s"), so it can never stall
//! `cargo xtask bench` or the `cargo xtask test` step that runs it.
//!
//! Two shapes: [`run_timed`] for the many short spawn+wait measurements (no extra work in
//! the timed span), and [`run_captured`] for long drivers that start servers of their own
//! (their own process group, killed as a whole afterwards so nothing outlives them).
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// Kills `target` (a pid, or `-pgid` for a whole group) with SIGKILL unless told to stand
/// down before `limit`.
struct Watchdog {
    stop: mpsc::Sender<()>,
    fired: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Watchdog {
    fn arm(target: String, limit: Duration) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let fired = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&fired);
        let thread = std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(limit) {
                flag.store(true, Ordering::SeqCst);
                kill(&target);
            }
        });
        Self {
            stop,
            fired,
            thread,
        }
    }

    /// Stands the watchdog down; true if it had already fired.
    fn disarm(self) -> bool {
        let _ = self.stop.send(());
        let _ = self.thread.join();
        self.fired.load(Ordering::SeqCst)
    }
}

/// SIGKILL to `target` through kill(1) (xtask has no libc binding); failures (already gone)
/// are ignored. PIDs are handed out sequentially, so one just reaped is not reused in the
/// moment between the reap and this call.
fn kill(target: &str) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", target])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn deadline_error(what: &str, limit: Duration, stderr: &str) -> anyhow::Error {
    let stderr = stderr.trim();
    if stderr.is_empty() {
        anyhow::anyhow!(
            "{what} did not finish within {} s (killed)",
            limit.as_secs()
        )
    } else {
        anyhow::anyhow!(
            "{what} did not finish within {} s (killed); its stderr ended with:\n{stderr}",
            limit.as_secs()
        )
    }
}

/// Spawns `command` and waits for it, killing it after `limit`; returns its status, its
/// stderr and the wall time from spawn to exit. stdout is discarded.
pub fn run_timed(
    command: &mut Command,
    what: &str,
    limit: Duration,
) -> Result<(ExitStatus, String, Duration)> {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {what}"))?;
    let watchdog = Watchdog::arm(child.id().to_string(), limit);
    let stderr = drain(child.stderr.take());
    let status = child.wait();
    let elapsed = started.elapsed();
    let fired = watchdog.disarm();
    let stderr = join(stderr);
    if fired {
        return Err(deadline_error(what, limit, &stderr));
    }
    let status = status.with_context(|| format!("waiting for {what}"))?;
    Ok((status, stderr, elapsed))
}

/// Runs `command` in a process group of its own with piped stdout and stderr, killing the
/// whole group after `limit` and, once the leader exited, whatever it left behind.
pub fn run_captured(command: &mut Command, what: &str, limit: Duration) -> Result<Output> {
    let mut child: Child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("spawning {what}"))?;
    let group = format!("-{}", child.id());
    let watchdog = Watchdog::arm(group.clone(), limit);
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = child.wait();
    let fired = watchdog.disarm();
    // Leftovers (a server the driver failed to stop) would hold the pipes open forever.
    kill(&group);
    let (stdout, stderr) = (join(stdout), join(stderr));
    if fired {
        let lines: Vec<&str> = stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join("\n");
        return Err(deadline_error(what, limit, &tail));
    }
    let status = status.with_context(|| format!("waiting for {what}"))?;
    Ok(Output {
        status,
        stdout: stdout.into_bytes(),
        stderr: stderr.into_bytes(),
    })
}

fn drain<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> Option<JoinHandle<String>> {
    pipe.map(|mut pipe| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    })
}

fn join(reader: Option<JoinHandle<String>>) -> String {
    reader.and_then(|r| r.join().ok()).unwrap_or_default()
}

/// Fails with the program's stderr unless `output` is a success.
pub fn ensure_success(output: &Output, what: &str) -> Result<()> {
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_captured_over_deadline_kills_the_group_and_says_so() {
        let started = Instant::now();
        // The shell's child `sleep` would keep the pipes open if only the shell died.
        let result = run_captured(
            Command::new("sh").args(["-c", "sleep 30; echo late"]),
            "sleeper",
            Duration::from_secs(1),
        );
        let error = result.err().map_or_else(String::new, |e| format!("{e:#}"));
        assert!(
            error.contains("sleeper did not finish within 1 s"),
            "{error}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn run_captured_within_deadline_returns_stdout_and_reaps_leftovers() {
        let started = Instant::now();
        // The background sleep inherits stdout: without the group kill this would take 30 s.
        let output = run_captured(
            Command::new("sh").args(["-c", "sleep 30 & echo done"]),
            "echo",
            Duration::from_secs(20),
        )
        .map_err(|e| format!("{e:#}"));
        let Ok(output) = output else {
            panic!("{output:?}")
        };
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "done");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn run_timed_over_deadline_is_an_error() {
        let result = run_timed(
            Command::new("sleep").arg("30"),
            "sleep 30",
            Duration::from_secs(1),
        );
        let error = result.err().map_or_else(String::new, |e| format!("{e:#}"));
        assert!(
            error.contains("sleep 30 did not finish within 1 s"),
            "{error}"
        );
    }
}

//! Boots the guest in `qemu-system-x86_64` (TCG) and captures its serial console.
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::Clock;

/// What one boot produced.
pub struct Outcome {
    /// The whole console (also written to the log file).
    pub console: String,
    pub timed_out: bool,
    /// Host time from QEMU start to the guest's `VMTEST BOOTED` line.
    pub booted_after: Option<Duration>,
    pub elapsed: Duration,
}

/// Boots `kernel` + `initrd` with `cmdline` and `clock`, copying the console to `log` line by
/// line, and kills QEMU after `timeout`.
pub fn boot(
    kernel: &Path,
    initrd: &Path,
    cmdline: &str,
    clock: Clock,
    log: &Path,
    timeout: Duration,
    verbose: bool,
) -> Result<Outcome> {
    let mut log_file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let started = Instant::now();
    // /dev/kvm cannot boot guests on these hosts: TCG only. The serial port is QEMU's stdout.
    let mut command = Command::new("qemu-system-x86_64");
    command.args([
        "-machine", "q35", "-accel", "tcg", "-cpu", "max", "-m", "1024",
    ]);
    match clock {
        Clock::Real => command.args(["-smp", "2"]),
        // One vCPU: guest time is then exactly the instructions that one CPU ran.
        Clock::Icount => command.args(["-smp", "1", "-icount", "shift=0,sleep=off"]),
    };
    let mut child = command
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
        .args(["-no-reboot", "-nodefaults"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(cmdline)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let (lines, received) = mpsc::channel::<String>();
    let stdout = child.stdout.take().context("qemu stdout")?;
    let stderr = child.stderr.take().context("qemu stderr")?;
    let out_lines = lines.clone();
    let readers = [
        thread::spawn(move || forward(stdout, &out_lines, "")),
        thread::spawn(move || forward(stderr, &lines, "qemu: ")),
    ];

    let mut console = String::new();
    let mut booted_after = None;
    let mut timed_out = false;
    loop {
        match received.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if booted_after.is_none() && line.contains("VMTEST BOOTED") {
                    booted_after = Some(started.elapsed());
                }
                if verbose {
                    println!("  | {}", line.trim_end());
                }
                let _ = writeln!(log_file, "{line}");
                console.push_str(&line);
                console.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if started.elapsed() > timeout && !timed_out {
            timed_out = true;
            let _ = child.kill();
        }
    }
    let _ = child.wait();
    for reader in readers {
        let _ = reader.join();
    }
    Ok(Outcome {
        console,
        timed_out,
        booted_after,
        elapsed: started.elapsed(),
    })
}

/// Sends each line of `stream` (lossily decoded, so binary noise cannot stop the capture).
fn forward(stream: impl std::io::Read, lines: &mpsc::Sender<String>, prefix: &str) {
    let mut reader = BufReader::new(stream);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buffer);
                let line = line.trim_end_matches(['\n', '\r']);
                if lines.send(format!("{prefix}{line}")).is_err() {
                    return;
                }
            }
        }
    }
}

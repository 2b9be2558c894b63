//! `vault-env-testapp`: the app the integration tests let vault-env exec. It prints, as one
//! JSON object on stdout, its arguments, its environment (in order) and its open file
//! descriptors, and touches `$TESTAPP_MARKER` (if set) to prove it ran.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;

fn main() -> std::process::ExitCode {
    if let Some(marker) = std::env::var_os("TESTAPP_MARKER") {
        let _ = std::fs::write(marker, b"started");
    }
    let text = |s: &std::ffi::OsStr| String::from_utf8_lossy(s.as_bytes()).into_owned();
    let args: Vec<String> = std::env::args_os().map(|a| text(&a)).collect();
    let env: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| (text(&k), text(&v)))
        .collect();
    // The directory handle read_dir holds shows up in the listing; it is the one entry that
    // points back at this very directory.
    let own_dir = format!("/proc/{}/fd", std::process::id());
    let mut fds: Vec<(u32, String)> = std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(|entry| {
                let entry = entry.ok()?;
                let fd: u32 = entry.file_name().to_str()?.parse().ok()?;
                let target = std::fs::read_link(entry.path()).ok()?;
                let target = text(target.as_os_str());
                (target != own_dir).then_some((fd, target))
            })
            .collect()
        })
        .unwrap_or_default();
    fds.sort();
    let report = serde_json::json!({ "args": args, "env": env, "fds": fds });
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{report}").is_err() {
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}

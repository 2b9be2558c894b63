//! The app as vault-env's child: started with an explicit environment (never vault-env's
//! own), every catchable signal forwarded to it, every child reaped (vault-env may be PID 1
//! of the container), and its end mapped to an exit code the way a shell does (the code, or
//! 128 + the signal number).
//!
//! The child is started with `posix_spawn`: no code of ours runs between fork and exec in a
//! process that has threads, every signal disposition is reset to the default and the
//! signal mask is cleared, so the app starts as it would under exec mode (where Rust's
//! ignored SIGPIPE would otherwise be inherited).

use std::ffi::{CString, OsString};
use std::future::poll_fn;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::task::Poll;

use nix::errno::Errno;
use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags, posix_spawn};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};

use crate::exec::EnvBlock;

/// Signals that vault-env passes on to the app. Left out: SIGCHLD (vault-env's own, for
/// reaping), SIGKILL and SIGSTOP (cannot be caught), the synchronous fault signals (SEGV,
/// BUS, FPE, ILL, TRAP, ABRT, SYS), SIGPIPE, SIGTTIN/SIGTTOU and SIGXCPU/SIGXFSZ, which
/// describe something vault-env itself did.
pub const FORWARDED: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGALRM,
    Signal::SIGCONT,
    Signal::SIGTSTP,
    Signal::SIGURG,
    Signal::SIGIO,
    Signal::SIGPWR,
    Signal::SIGVTALRM,
    Signal::SIGPROF,
    Signal::SIGSTKFLT,
];

/// A failure to start or watch the app.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// A signal handler could not be installed.
    #[error("install a handler for signal {signal}")]
    InstallHandler {
        /// The signal number.
        signal: i32,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An argument or the program path contains a NUL byte.
    #[error("argument {index} contains a NUL byte")]
    NulInArgument {
        /// Which argument (0 is the command).
        index: usize,
    },
    /// `posix_spawn` failed (the program could not be executed).
    #[error("start {path}")]
    Spawn {
        /// The program.
        path: PathBuf,
        /// The errno.
        #[source]
        source: std::io::Error,
    },
}

/// What woke the supervisor up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// SIGCHLD: some child changed state; reap.
    Child,
    /// A signal to pass on to the app (a raw number, for the real-time signals).
    Forward(i32),
}

/// The signal handlers of daemon mode. Installed before the app starts, so neither an
/// early SIGCHLD nor an early SIGTERM is lost.
pub struct Signals {
    child: tokio::signal::unix::Signal,
    forwarded: Vec<(i32, tokio::signal::unix::Signal)>,
}

impl Signals {
    /// Installs handlers for SIGCHLD, [`FORWARDED`] and every real-time signal. Must be
    /// called inside the tokio runtime.
    pub fn install() -> Result<Signals, SuperviseError> {
        let listen = |number: i32| {
            signal(SignalKind::from_raw(number)).map_err(|source| SuperviseError::InstallHandler {
                signal: number,
                source,
            })
        };
        let child = listen(Signal::SIGCHLD as i32)?;
        let numbers = FORWARDED
            .iter()
            .map(|s| *s as i32)
            .chain(libc::SIGRTMIN()..=libc::SIGRTMAX());
        let mut forwarded = Vec::new();
        for number in numbers {
            forwarded.push((number, listen(number)?));
        }
        Ok(Signals { child, forwarded })
    }

    /// Waits for the next signal. SIGCHLD comes first when several are pending, so a child
    /// that already exited is not sent a signal meant for it.
    pub async fn next(&mut self) -> Wake {
        poll_fn(|cx| {
            if self.child.poll_recv(cx).is_ready() {
                return Poll::Ready(Wake::Child);
            }
            for (number, stream) in &mut self.forwarded {
                if stream.poll_recv(cx).is_ready() {
                    return Poll::Ready(Wake::Forward(*number));
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// Starts `program` with `argv` (argv[0] as the user wrote it) and exactly `env`, with
/// default signal dispositions and an empty signal mask. Descriptors above 2 are marked
/// close-on-exec first, as exec mode does, so none of vault-env's reaches the app.
pub fn spawn(program: &Path, argv: &[OsString], env: &EnvBlock) -> Result<Pid, SuperviseError> {
    let spawn_error = |source: std::io::Error| SuperviseError::Spawn {
        path: program.to_owned(),
        source,
    };
    let path = CString::new(program.as_os_str().as_bytes())
        .map_err(|_| SuperviseError::NulInArgument { index: 0 })?;
    let mut args = Vec::with_capacity(argv.len());
    for (index, arg) in argv.iter().enumerate() {
        args.push(
            CString::new(arg.clone().into_vec())
                .map_err(|_| SuperviseError::NulInArgument { index })?,
        );
    }
    crate::hygiene::cloexec_all_fds().map_err(spawn_error)?;
    let mut defaults = SigSet::all();
    defaults.remove(Signal::SIGKILL);
    defaults.remove(Signal::SIGSTOP);
    let errno = |e: Errno| spawn_error(std::io::Error::from(e));
    let mut attr = PosixSpawnAttr::init().map_err(errno)?;
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF | PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK,
    )
    .map_err(errno)?;
    attr.set_sigdefault(&defaults).map_err(errno)?;
    attr.set_sigmask(&SigSet::empty()).map_err(errno)?;
    let actions = PosixSpawnFileActions::init().map_err(errno)?;
    let envp = env.as_cstrs();
    let pid = posix_spawn(path.as_c_str(), &actions, &attr, &args, &envp).map_err(errno)?;
    Ok(pid)
}

/// Passes `signal` (a raw number) on to `child`; a child that is already gone is ignored.
pub fn forward(child: Pid, signal: i32) {
    // A raw number, because the real-time signals have no `nix` enum variant.
    if let Err(error) = crate::hygiene::send_signal(child.as_raw(), signal)
        && error.raw_os_error() != Some(libc::ESRCH)
    {
        tracing::warn!(signal, %error, "cannot forward signal to the app");
    }
}

/// Sends `signal` to `child`, ignoring a child that is already gone.
pub fn send(child: Pid, signal: Signal) {
    if let Err(error) = kill(child, signal)
        && error != Errno::ESRCH
    {
        tracing::warn!(signal = %signal, %error, "cannot signal the app");
    }
}

/// Reaps every child that has ended (the app and, when vault-env is PID 1, orphans
/// re-parented to it) without blocking; returns the app's status if the app was among them.
pub fn reap(app: Pid) -> Option<WaitStatus> {
    let mut app_status = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return app_status,
            Ok(status) => {
                if status.pid() == Some(app) {
                    app_status = Some(status);
                } else {
                    tracing::debug!(pid = ?status.pid(), "reaped an orphaned process");
                }
            }
            Err(Errno::EINTR) => continue,
            Err(error) => {
                tracing::warn!(%error, "waitpid failed");
                return app_status;
            }
        }
    }
}

/// The exit code a shell would report for `status`: the code of a normal exit, 128 + the
/// signal number for a killed process.
pub fn exit_code(status: WaitStatus) -> u8 {
    match status {
        WaitStatus::Exited(_, code) => code as u8,
        WaitStatus::Signaled(_, signal, _) => 128u8.wrapping_add(signal as u8),
        // Only exits and kills are reported without WUNTRACED/WCONTINUED.
        _ => 1,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn exit_code_maps_exit_and_signal() {
        let pid = Pid::from_raw(42);
        assert_eq!(exit_code(WaitStatus::Exited(pid, 0)), 0);
        assert_eq!(exit_code(WaitStatus::Exited(pid, 7)), 7);
        assert_eq!(
            exit_code(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            137
        );
        assert_eq!(
            exit_code(WaitStatus::Signaled(pid, Signal::SIGTERM, true)),
            143
        );
    }

    #[test]
    fn forwarded_excludes_what_vault_env_needs_or_cannot_catch() {
        for own in [
            Signal::SIGCHLD,
            Signal::SIGKILL,
            Signal::SIGSTOP,
            Signal::SIGPIPE,
            Signal::SIGSEGV,
        ] {
            assert!(!FORWARDED.contains(&own), "{own}");
        }
        for signal in [
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
            Signal::SIGWINCH,
        ] {
            assert!(FORWARDED.contains(&signal), "{signal}");
        }
    }
}

//! Child processes that cannot outlive the test: every server the test bed starts goes through
//! [`spawn_guarded`], which arms `PR_SET_PDEATHSIG` in the child, and is owned by a [`ChildGuard`]
//! that signals and reaps it on drop.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process. Test
//! harnesses run each test on its own thread, so a server shared between tests (a `static`) would
//! die with the first test's thread. All spawns therefore happen on one long-lived spawner thread,
//! which lives as long as the test process does.
#![allow(
    unsafe_code,
    reason = "pre_exec hook: setuid/setgid and prctl(PR_SET_PDEATHSIG) in the forked child"
)]

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A credential switch applied in the child before exec (PostgreSQL refuses to run as root).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunAs {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

type Job = (Command, mpsc::Sender<io::Result<Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<Job>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        // The thread is never joined: it must live until the process exits (see module docs).
        let spawned = std::thread::Builder::new()
            .name("testbed-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            });
        if let Err(e) = spawned {
            // Without the thread every spawn reports the error below; nothing else to do here.
            eprintln!("testbed: cannot start spawner thread: {e}");
        }
        Mutex::new(tx)
    })
}

/// Spawns `cmd` so that the child is killed (`SIGKILL`) if the test process dies, optionally after
/// switching to `run_as`'s uid and gid.
pub(crate) fn spawn_guarded(mut cmd: Command, run_as: Option<RunAs>) -> io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the hook runs in the forked child before exec and only calls async-signal-safe libc
    // functions (setgroups, setgid, setuid, prctl, getppid) on plain integers; it allocates nothing
    // and touches no lock or state shared with the parent's other threads.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(RunAs { uid, gid }) = run_as {
                let groups = [gid as libc::gid_t];
                if libc::setgroups(1, groups.as_ptr()) != 0
                    || libc::setgid(gid as libc::gid_t) != 0
                    || libc::setuid(uid as libc::uid_t) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            // Armed after the credential change: the kernel clears the death signal when the
            // effective uid or gid changes.
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl; then nobody would ever kill us.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    let sent = match spawner().lock() {
        Ok(tx) => tx.send((cmd, reply_tx)).is_ok(),
        Err(poisoned) => poisoned.into_inner().send((cmd, reply_tx)).is_ok(),
    };
    if !sent {
        return Err(io::Error::other("test-bed spawner thread is gone"));
    }
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("test-bed spawner thread is gone"))?
}

/// Owns a server process: on drop sends `stop_signal`, waits up to a grace period, then `SIGKILL`s
/// and reaps it, so no test leaves a process or zombie behind.
#[derive(Debug)]
pub(crate) struct ChildGuard {
    child: Child,
    stop_signal: Signal,
    grace: Duration,
}

impl ChildGuard {
    /// Wraps `child`; `stop_signal` is the server's preferred shutdown signal.
    pub(crate) fn new(child: Child, stop_signal: Signal, grace: Duration) -> Self {
        Self {
            child,
            stop_signal,
            grace,
        }
    }

    /// The process id.
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// Returns the exit status if the process has already exited.
    pub(crate) fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Stops and reaps the process now (idempotent).
    pub(crate) fn stop(&mut self) {
        if self.try_wait().is_some() {
            return;
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, self.stop_signal);
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if self.try_wait().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

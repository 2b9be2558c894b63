//! Process and memory hygiene while vault-env holds secrets: no core dumps or ptrace by
//! same-uid processes (`PR_SET_DUMPABLE=0`), secret buffers locked in RAM (`mlock`), and no
//! file descriptor of vault-env's surviving into the app (`close_range(CLOEXEC)`).
//!
//! This is the one module of the crate allowed `unsafe`: `mlock`, the `close_range` system
//! call and `kill` with a raw (real-time) signal number have no safe wrapper. Each block states why it is sound.
#![allow(
    unsafe_code,
    reason = "mlock and close_range need raw system calls; each block has a SAFETY note"
)]

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once the first `mlock` failure has been reported.
static MLOCK_WARNED: AtomicBool = AtomicBool::new(false);

/// Makes the process non-dumpable (or dumpable again): no core file, and `/proc/self/{mem,
/// environ}` and ptrace become root-only. `execve` of an ordinary binary resets the flag, so
/// the app itself is unaffected.
pub fn set_dumpable(dumpable: bool) -> std::io::Result<()> {
    nix::sys::prctl::set_dumpable(dumpable).map_err(std::io::Error::from)
}

/// Whether the process is currently dumpable (for tests and diagnostics).
pub fn is_dumpable() -> std::io::Result<bool> {
    nix::sys::prctl::get_dumpable().map_err(std::io::Error::from)
}

/// Locks the pages of `bytes` into RAM so a secret is never written to swap.
///
/// When the kernel refuses (`RLIMIT_MEMLOCK` too small, as in many containers), one warning
/// is logged for the whole run and vault-env carries on: exec follows within milliseconds.
pub fn lock(bytes: &[u8]) {
    let Some(addr) = NonNull::new(bytes.as_ptr().cast_mut().cast::<std::ffi::c_void>()) else {
        return;
    };
    if bytes.is_empty() {
        return;
    }
    // SAFETY: `addr..addr+len` is the live allocation behind `bytes`; mlock only changes the
    // paging attributes of the pages it spans and never reads or writes the memory.
    let result = unsafe { nix::sys::mman::mlock(addr, bytes.len()) };
    if let Err(errno) = result
        && !MLOCK_WARNED.swap(true, Ordering::Relaxed)
    {
        tracing::warn!(error = %errno, "cannot lock secret memory (RLIMIT_MEMLOCK?); continuing without mlock");
    }
}

/// Marks every file descriptor above 2 close-on-exec, so none survives into the app while
/// vault-env can still use them (its logger, the runtime) until the very `execve`.
pub fn cloexec_all_fds() -> std::io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC takes plain integers and only sets a
    // flag on descriptors of this process; no memory is passed.
    let result = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if result == 0 {
        return Ok(());
    }
    // Kernels before 5.11 lack close_range: walk /proc/self/fd instead.
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: fcntl(F_SETFD) on an integer descriptor reads and writes no memory; a
        // descriptor closed meanwhile (the read_dir handle) just yields EBADF, ignored.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    Ok(())
}

/// Sends signal number `signal` to the single process `pid` (`kill(2)` with a raw number):
/// daemon mode forwards the real-time signals too, which `nix`'s `Signal` cannot name.
/// `pid` must be positive: 0 and negative values would address process groups or every
/// process, and are refused.
pub fn send_signal(pid: i32, signal: i32) -> std::io::Result<()> {
    if pid <= 0 {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    // SAFETY: kill takes two integers and reads or writes no memory of this process.
    let result = unsafe { libc::kill(pid, signal) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Returns the allocator's free memory to the kernel (glibc `malloc_trim`), so that a
/// long-running daemon's resident memory tracks what it really holds instead of creeping
/// with heap fragmentation. A no-op on other C libraries.
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: malloc_trim only walks and releases the allocator's own free lists; it
        // takes an integer and touches no memory the caller owns.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn cloexec_all_fds_sets_flag_on_open_files() {
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let fd = file.as_raw_fd();
        // Clear the flag std set, to see cloexec_all_fds set it again.
        // SAFETY: F_SETFD on a descriptor this test owns.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        cloexec_all_fds().unwrap();
        // SAFETY: F_GETFD on a descriptor this test owns.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    }

    #[test]
    fn set_dumpable_false_is_observed_and_reversible() {
        set_dumpable(false).unwrap();
        assert!(!is_dumpable().unwrap());
        set_dumpable(true).unwrap();
        assert!(is_dumpable().unwrap());
    }

    #[test]
    fn send_signal_refuses_group_and_broadcast_pids() {
        assert!(send_signal(0, 0).is_err());
        assert!(send_signal(-1, 0).is_err());
        // Signal 0 checks that the process exists without sending anything.
        send_signal(std::process::id() as i32, 0).unwrap();
    }

    #[test]
    fn trim_heap_keeps_live_allocations() {
        let kept = vec![5u8; 1 << 20];
        drop(vec![1u8; 8 << 20]);
        trim_heap();
        assert!(kept.iter().all(|b| *b == 5));
    }

    #[test]
    fn lock_small_buffer_does_not_panic() {
        let buffer = vec![7u8; 64];
        lock(&buffer);
        lock(&[]);
    }
}

//! A shared background tokio runtime, so that the test bed works the same from plain `#[test]`
//! functions and from `#[tokio::test]` ones.
//!
//! HTTP calls and the fake API server run on this runtime. [`block_on`] drives a future on it from
//! any thread: directly when the caller is outside a runtime, and from a short-lived helper thread
//! when the caller is itself inside one (tokio forbids nested `block_on`).

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Runtime};

/// The process-wide test-bed runtime (two worker threads, created on first use, never dropped).
pub(crate) fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        // Failing to build a runtime means the process cannot create threads; nothing can run.
        #[allow(clippy::expect_used, reason = "no test can run without threads")]
        Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("testbed")
            .enable_all()
            .build()
            .expect("build the test-bed tokio runtime")
    })
}

/// Runs `fut` to completion on the test-bed runtime and returns its output.
///
/// Safe to call from async code: it then blocks the calling thread (not the runtime's progress
/// elsewhere) for the duration of the call.
pub(crate) fn block_on<F>(fut: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    let handle = runtime().handle();
    if tokio::runtime::Handle::try_current().is_err() {
        return handle.block_on(fut);
    }
    std::thread::scope(|scope| {
        let joined = scope.spawn(|| handle.block_on(fut)).join();
        match joined {
            Ok(out) => out,
            // Re-raise the helper thread's panic on the caller's thread.
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

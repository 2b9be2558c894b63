//! The test bed's error type: one variant per operation that can fail while starting, configuring or
//! talking to a test server.

use std::path::PathBuf;

/// Why a test-bed operation failed. Messages name the operation and the server, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A server process could not be spawned (binary missing, permission denied…).
    #[error("spawn {program}")]
    Spawn {
        /// The program that failed to start.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A helper command (initdb, psql…) ran but exited unsuccessfully.
    #[error("run {program}: exit status {status}: {stderr}")]
    Command {
        /// The program that failed.
        program: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its standard error (helper commands here never print secrets).
        stderr: String,
    },
    /// A server did not become ready in time.
    #[error("wait for {what} to become ready: {detail}")]
    NotReady {
        /// The server that was waited for.
        what: String,
        /// The last observed problem (exit status, last error).
        detail: String,
    },
    /// A filesystem operation on a test-bed temp dir or file failed.
    #[error("{op} {path}")]
    Fs {
        /// What was being done (create, write, read, chown…).
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An HTTP request to a test server failed at the transport level.
    #[error("http {method} {url}")]
    Http {
        /// The request method.
        method: String,
        /// The request URL (never carries credentials).
        url: String,
        /// The client error.
        #[source]
        source: reqwest::Error,
    },
    /// A test server answered an API call with an error status.
    #[error("api {method} {path}: status {status}: {body}")]
    Api {
        /// The request method.
        method: String,
        /// The API path (e.g. `sys/mounts/kv1`).
        path: String,
        /// The HTTP status.
        status: u16,
        /// The response body (OpenBao error bodies carry no secrets).
        body: String,
    },
    /// A response, log line or key could not be decoded.
    #[error("decode {what}: {detail}")]
    Decode {
        /// What was decoded.
        what: &'static str,
        /// The decoder's message.
        detail: String,
    },
    /// Key or certificate generation or TLS setup failed.
    #[error("crypto {op}: {detail}")]
    Crypto {
        /// The operation (generate CA, sign JWT, build TLS config…).
        op: &'static str,
        /// The library's message.
        detail: String,
    },
    /// Any other I/O error (sockets, pipes).
    #[error("io {op}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias for the test bed.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn fs(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Fs { op, path, source }
    }

    pub(crate) fn crypto(op: &'static str) -> impl FnOnce(&dyn std::fmt::Display) -> Self {
        move |e| Self::Crypto {
            op,
            detail: e.to_string(),
        }
    }
}

//! The HTTPS admission server (`POST /pods` and friends) and the plain-HTTP telemetry
//! listener (`/livez`, `/readyz`, `/metrics`).
//!
//! # Security
//!
//! Every byte a client sends is untrusted. The TLS handshake and the request headers must
//! arrive within their timeouts (a client trickling one byte a second is cut off), the body
//! is capped (413) and must be `application/json` (415) and arrive within the body timeout
//! (408). The per-review log line carries only uid, namespace, name, kind, operation and the
//! decision code, never a value from the object.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::deadlines::Http1Deadlines;
use crate::handler;
use crate::mutate::Mutator;
use crate::telemetry::{Metrics, RejectLabels, ReloadLabels};
use crate::tls::{CertStore, TlsError};

/// Paths that accept reviews: `/pods` is the one the chart registers; the others are the
/// paths the fixtures were captured on, so any registration shape works.
pub const REVIEW_PATHS: [&str; 5] = [
    "/pods",
    "/pods-v1beta1",
    "/secrets",
    "/configmaps",
    "/mutate",
];

/// Server settings (from flags; see [`crate::config`]).
#[derive(Clone, Debug)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub telemetry_listen: SocketAddr,
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
    /// Largest accepted body, bytes.
    pub body_limit: usize,
    /// TLS handshake and request head deadline (from the head's first byte).
    pub header_read_timeout: Duration,
    /// How long an HTTP/1.1 keep-alive connection may wait for its next request; longer than
    /// the API server keeps idle connections (90 s), so that it is the side that closes them.
    pub idle_timeout: Duration,
    /// Deadline for the whole body once headers are in.
    pub body_read_timeout: Duration,
    /// How often the certificate files are checked.
    pub tls_reload_interval: Duration,
    /// How long in-flight reviews may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
}

impl ServerSettings {
    /// Defaults for `cert`/`key`, listening on ephemeral loopback ports (tests, bench).
    pub fn loopback(
        cert_file: impl Into<std::path::PathBuf>,
        key_file: impl Into<std::path::PathBuf>,
    ) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            telemetry_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            body_limit: 3 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            body_read_timeout: Duration::from_secs(10),
            tls_reload_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(25),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("binding {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("preparing TLS")]
    Tls(#[from] TlsError),
}

/// What a review handler needs.
#[derive(Debug)]
pub struct AppState {
    /// `None` for the benchmark baseline (`noop-server`).
    pub mutator: Option<Mutator>,
    pub metrics: Arc<Metrics>,
    pub certs: Arc<CertStore>,
    pub shutting_down: AtomicBool,
    settings: ServerSettings,
}

/// Both listeners, bound; [`Server::serve`] runs them.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    telemetry: TcpListener,
    state: Arc<AppState>,
    tls: Arc<rustls::ServerConfig>,
}

impl Server {
    /// Loads the certificate (if present: readiness waits for it otherwise) and binds both
    /// listeners.
    ///
    /// # Errors
    ///
    /// [`ServerError`] when a port cannot be bound.
    pub async fn bind(
        settings: ServerSettings,
        mutator: Mutator,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ServerError> {
        Self::bind_inner(settings, Some(mutator), metrics).await
    }

    /// The benchmark baseline: the same listeners, TLS, HTTP stack, limits and log line,
    /// answering every review `allowed: true` after reading only its uid.
    ///
    /// # Errors
    ///
    /// [`ServerError`] when a port cannot be bound.
    pub async fn bind_noop(
        settings: ServerSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ServerError> {
        Self::bind_inner(settings, None, metrics).await
    }

    async fn bind_inner(
        settings: ServerSettings,
        mutator: Option<Mutator>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ServerError> {
        let certs = CertStore::new(&settings.cert_file, &settings.key_file);
        match certs.reload() {
            Ok(_) => tracing::info!(cert = %settings.cert_file.display(), "TLS certificate loaded"),
            Err(error) => {
                tracing::warn!(error = %error, "TLS certificate not loaded yet; not ready")
            }
        }
        let tls = certs.server_config()?;
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })
        };
        let listener = bind(settings.listen).await?;
        let telemetry = bind(settings.telemetry_listen).await?;
        Ok(Self {
            listener,
            telemetry,
            tls,
            state: Arc::new(AppState {
                mutator,
                metrics,
                certs,
                shutting_down: AtomicBool::new(false),
                settings,
            }),
        })
    }

    /// The HTTPS address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.state.settings.listen)
    }

    /// The telemetry address.
    pub fn telemetry_addr(&self) -> SocketAddr {
        self.telemetry
            .local_addr()
            .unwrap_or(self.state.settings.telemetry_listen)
    }

    /// Serves until `shutdown` resolves, then stops accepting, reports not-ready and lets
    /// in-flight reviews finish (up to the grace period).
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let Self {
            listener,
            telemetry,
            state,
            tls,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let watcher = tokio::spawn({
            let certs = Arc::clone(&state.certs);
            let metrics = Arc::clone(&state.metrics);
            certs.watch(state.settings.tls_reload_interval, move |ok| {
                let result = if ok { "ok" } else { "error" };
                metrics
                    .tls_reloads
                    .get_or_create(&ReloadLabels { result })
                    .inc();
            })
        });
        let telemetry_task = tokio::spawn(serve_telemetry(
            telemetry,
            Arc::clone(&state),
            stop_rx.clone(),
        ));
        let graceful = GracefulShutdown::new();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // The head and idle deadlines of HTTP/1.1 are kept by `Http1Deadlines`: hyper's own
        // header timer also runs on idle keep-alive connections (see `crate::deadlines`).
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .keep_alive(true);
        builder.http2().timer(TokioTimer::new());
        let builder = Arc::new(builder);
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(error) => {
                        tracing::warn!(error = %error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let state = Arc::clone(&state);
            let builder = Arc::clone(&builder);
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let handshake =
                    tokio::time::timeout(state.settings.header_read_timeout, acceptor.accept(tcp))
                        .await;
                let tls = match handshake {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, error = %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let (idle, header) = (
                    state.settings.idle_timeout,
                    state.settings.header_read_timeout,
                );
                let service = hyper::service::service_fn(move |request| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, Infallible>(route(&state, request).await) }
                });
                // HTTP/2 (what the API server negotiates) multiplexes and keeps its connection
                // itself; anything else is HTTP/1.1 and gets the head and idle deadlines.
                let result = if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                    let connection = builder.serve_connection(TokioIo::new(tls), service);
                    watcher.watch(connection.into_owned()).await
                } else {
                    let io = Http1Deadlines::new(tls, idle, header);
                    let connection = builder.serve_connection(TokioIo::new(io), service);
                    watcher.watch(connection.into_owned()).await
                };
                if let Err(error) = result {
                    tracing::debug!(%peer, error = %error, "connection ended with an error");
                }
            });
        }
        drop(listener);
        state.shutting_down.store(true, Ordering::SeqCst);
        tracing::info!("shutting down: finishing in-flight reviews");
        if tokio::time::timeout(state.settings.shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("grace period over; closing remaining connections");
        }
        let _ = stop_tx.send(true);
        let _ = telemetry_task.await;
        watcher.abort();
        tracing::info!("shut down");
    }
}

/// Routes one HTTPS request.
async fn route(state: &AppState, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if !REVIEW_PATHS.contains(&path) {
        return reject(state, StatusCode::NOT_FOUND, "not_found", "no such path");
    }
    if request.method() != Method::POST {
        return reject(state, StatusCode::METHOD_NOT_ALLOWED, "method", "use POST");
    }
    let json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return reject(
            state,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            "Content-Type must be application/json",
        );
    }
    let limit = state.settings.body_limit;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return reject(
            state,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "body over the limit",
        );
    }
    let body = Limited::new(request.into_body(), limit);
    let collected = tokio::time::timeout(state.settings.body_read_timeout, body.collect()).await;
    let bytes = match collected {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(error)) => {
            if error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return reject(
                    state,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    "body over the limit",
                );
            }
            return reject(
                state,
                StatusCode::BAD_REQUEST,
                "body",
                "reading the body failed",
            );
        }
        Err(_) => {
            return reject(
                state,
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "body read timed out",
            );
        }
    };
    let started = Instant::now();
    let answer = match &state.mutator {
        Some(mutator) => handler::answer(mutator, &bytes).await,
        None => handler::answer_noop(&bytes),
    };
    let seconds = started.elapsed().as_secs_f64();
    let outcome = &answer.outcome;
    state.metrics.record(&answer.meta, outcome, seconds);
    tracing::info!(
        uid = %answer.meta.uid,
        namespace = %answer.meta.namespace,
        name = %answer.meta.name,
        kind = %answer.meta.kind,
        operation = %answer.meta.operation,
        dry_run = answer.meta.dry_run,
        decision = outcome.decision.as_str(),
        injected = outcome.injected_containers,
        warnings = outcome.response.warnings.len(),
        duration_us = (seconds * 1e6) as u64,
        "admission review"
    );
    let status = StatusCode::from_u16(answer.http_status).unwrap_or(StatusCode::OK);
    json_response(status, answer.to_json())
}

fn reject(
    state: &AppState,
    status: StatusCode,
    reason: &'static str,
    message: &str,
) -> Response<Full<Bytes>> {
    state
        .metrics
        .rejections
        .get_or_create(&RejectLabels { reason })
        .inc();
    tracing::info!(status = status.as_u16(), reason, "request refused");
    let mut response = Response::new(Full::new(Bytes::from(format!("{message}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    response
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// The telemetry listener: `/livez`, `/readyz`, `/metrics`.
async fn serve_telemetry(
    listener: TcpListener,
    state: Arc<AppState>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (tcp, _) = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(_) => continue,
            },
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(telemetry_route(&state, request.uri().path())) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn telemetry_route(state: &AppState, path: &str) -> Response<Full<Bytes>> {
    let (status, body, content_type) = match path {
        "/livez" => (StatusCode::OK, "ok\n".to_owned(), "text/plain"),
        "/readyz" => {
            if state.certs.is_loaded() && !state.shutting_down.load(Ordering::SeqCst) {
                (StatusCode::OK, "ok\n".to_owned(), "text/plain")
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: certificate not loaded or shutting down\n".to_owned(),
                    "text/plain",
                )
            }
        }
        "/metrics" => (
            StatusCode::OK,
            state.metrics.encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "not found\n".to_owned(),
            "text/plain",
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

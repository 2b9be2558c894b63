//! Health and metrics over HTTP: `/livez`, `/readyz`, `/metrics`.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Readiness shared between the agent and the server.
#[derive(Debug)]
pub struct Health {
    ready: AtomicBool,
    message: Mutex<String>,
}

impl Health {
    /// Not ready, with a reason.
    pub fn new(message: &str) -> Self {
        Self {
            ready: AtomicBool::new(false),
            message: Mutex::new(message.to_owned()),
        }
    }

    /// Sets readiness and its reason.
    pub fn set(&self, ready: bool, message: &str) {
        if let Ok(mut current) = self.message.lock() {
            message.clone_into(&mut current);
        }
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Current readiness and reason.
    pub fn get(&self) -> (bool, String) {
        let message = self.message.lock().map(|m| m.clone()).unwrap_or_default();
        (self.ready.load(Ordering::SeqCst), message)
    }
}

/// Serves until the listener fails; one task per connection.
pub async fn serve(listener: TcpListener, health: Arc<Health>, registry: Arc<Registry>) {
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            continue;
        };
        let health = Arc::clone(&health);
        let registry = Arc::clone(&registry);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = respond(&request, &health, &registry);
                async move { Ok::<_, Infallible>(response) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(error) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "http connection ended");
            }
        });
    }
}

/// Binds the listen address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

fn respond(
    request: &Request<Incoming>,
    health: &Health,
    registry: &Registry,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        );
    }
    match request.uri().path() {
        "/livez" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => {
            let (ready, message) = health.get();
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(status, format!("{message}\n"))
        }
        "/metrics" => {
            let mut body = String::new();
            if prometheus_client::encoding::text::encode(&mut body, registry).is_err() {
                return text(StatusCode::INTERNAL_SERVER_ERROR, "encode failed\n".into());
            }
            let mut response = text(StatusCode::OK, body);
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

//! A fake kube-apiserver over HTTPS: the real paths, JSON shapes and error `Status` objects for the
//! few resources Strongroom touches, kept in memory.
//!
//! Served:
//! - `POST /apis/authentication.k8s.io/v1/tokenreviews` — verifies service-account JWTs from a
//!   [`ServiceAccountIssuer`](crate::ServiceAccountIssuer) (signature, expiry, audience);
//! - `GET` (list, with equality `labelSelector`, and single), `POST`, `PUT` (optimistic
//!   concurrency on `metadata.resourceVersion`), `PATCH` (merge, JSON patch; strategic merge and
//!   server-side apply treated as merge, apply also creating a missing object), `DELETE` for the kinds in `RESOURCES`: core `secrets`,
//!   `configmaps`, `serviceaccounts`, `pods`, `events`, `namespaces`; `events.k8s.io/v1` events;
//!   `coordination.k8s.io/v1` leases; `admissionregistration.k8s.io/v1`
//!   mutatingwebhookconfigurations. Namespaced kinds also list across namespaces
//!   (`/api/v1/secrets`). Lists take `labelSelector` and `fieldSelector` (`=`, `==`, `!=` on a
//!   dotted field path such as `spec.nodeName`).
//! - Watches: `GET …?watch=true` (or `watch=1`) streams `{"type":"ADDED"|"MODIFIED"|"DELETED",
//!   "object":…}` lines like the real server: from `resourceVersion` (unset or `0`: synthetic
//!   `ADDED` events for the current state first), filtered by the same selectors, until
//!   `timeoutSeconds`; a `resourceVersion` older than the retained history gets an `ERROR` event
//!   with a 410 `Expired` `Status`. Changes made through [`FakeApiServer::insert`] and
//!   [`FakeApiServer::remove`] are seen by watches too. (An object modified out of a selector is
//!   not turned into a `DELETED` event, unlike the real server.)
//! - Failures are `Status` objects like the real server's (`reason` `NotFound`, `AlreadyExists`,
//!   `Conflict`, `BadRequest`, `Unauthorized`…, with `code` and `details`).
//!
//! Every request must carry `Authorization: Bearer <FakeApiServer::token()>` (TokenReview also
//! accepts a valid service-account JWT as the caller, like a cluster granting
//! `system:auth-delegator`); every request is recorded in [`FakeApiServer::requests`] so tests can count calls.
//!
//! # Security
//! Request bodies, paths and headers are untrusted input to this server; malformed input yields a
//! `Status` with `reason: BadRequest`, never a panic. Bearer tokens are compared, never logged.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::error::{Error, Result};
use crate::issuer::TokenVerifier;
use crate::net::{random_hex, random_uuid};
use crate::runtime::{block_on, runtime};
use crate::tls::TestCa;

/// One request the fake API server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method, upper case (`GET`, `POST`…).
    pub method: String,
    /// Request path without the query string.
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// When the request arrived.
    pub at: SystemTime,
}

/// One resource type the server stores: `(apiVersion, URL plural, kind, namespaced)`.
struct Resource {
    api_version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
}

/// Every resource type served. Adding one is one line here; routing, storage, lists and errors
/// are generic.
const RESOURCES: &[Resource] = &[
    Resource {
        api_version: "v1",
        plural: "secrets",
        kind: "Secret",
        namespaced: true,
    },
    Resource {
        api_version: "v1",
        plural: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
    },
    Resource {
        api_version: "v1",
        plural: "serviceaccounts",
        kind: "ServiceAccount",
        namespaced: true,
    },
    Resource {
        api_version: "v1",
        plural: "pods",
        kind: "Pod",
        namespaced: true,
    },
    Resource {
        api_version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
    },
    Resource {
        api_version: "v1",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
    },
    Resource {
        api_version: "events.k8s.io/v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
    },
    Resource {
        api_version: "coordination.k8s.io/v1",
        plural: "leases",
        kind: "Lease",
        namespaced: true,
    },
    Resource {
        api_version: "admissionregistration.k8s.io/v1",
        plural: "mutatingwebhookconfigurations",
        kind: "MutatingWebhookConfiguration",
        namespaced: false,
    },
];

/// A resource type, as an index into [`RESOURCES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Kind(usize);

impl Kind {
    fn find(pred: impl Fn(&Resource) -> bool) -> Option<Self> {
        RESOURCES.iter().position(pred).map(Kind)
    }

    fn from_plural(group_version: &str, plural: &str) -> Option<Self> {
        Self::find(|r| r.api_version == group_version && r.plural == plural)
    }

    fn from_api_kind(api_version: &str, kind: &str) -> Option<Self> {
        Self::find(|r| r.api_version == api_version && r.kind == kind)
    }

    fn res(self) -> &'static Resource {
        &RESOURCES[self.0]
    }

    fn plural(self) -> &'static str {
        self.res().plural
    }

    fn kind(self) -> &'static str {
        self.res().kind
    }

    fn api_version(self) -> &'static str {
        self.res().api_version
    }

    fn group(self) -> &'static str {
        self.res()
            .api_version
            .rsplit_once('/')
            .map_or("", |(g, _)| g)
    }

    fn namespaced(self) -> bool {
        self.res().namespaced
    }
}

type Key = (Kind, String, String);

#[derive(Debug, Default)]
struct Store {
    objects: BTreeMap<Key, Value>,
    resource_version: u64,
    requests: Vec<RequestRecord>,
    faults: Vec<Fault>,
    /// Recent changes, oldest first, for watches.
    history: VecDeque<Change>,
    /// Every change with a resourceVersion above this one is still in `history`.
    history_floor: u64,
}

/// How many changes watches can resume from (older ones get 410 Expired, like etcd compaction).
const HISTORY_LIMIT: usize = 4096;

/// One change of a stored object, as a watch reports it.
#[derive(Debug)]
struct Change {
    resource_version: u64,
    kind: Kind,
    namespace: String,
    event_type: &'static str,
    object: Value,
}

impl Store {
    /// Appends a change for watches (`object` carries its new resourceVersion).
    fn record(&mut self, kind: Kind, namespace: &str, event_type: &'static str, object: &Value) {
        if self.history.len() == HISTORY_LIMIT
            && let Some(oldest) = self.history.pop_front()
        {
            self.history_floor = oldest.resource_version;
        }
        self.history.push_back(Change {
            resource_version: self.resource_version,
            kind,
            namespace: namespace.to_owned(),
            event_type,
            object: object.clone(),
        });
    }
}

/// An injected failure: the next `remaining` requests matching `method` and `path` get `code`.
#[derive(Debug)]
struct Fault {
    method: String,
    path: String,
    code: StatusCode,
    remaining: usize,
}

struct Shared {
    store: Mutex<Store>,
    token: String,
    verifier: TokenVerifier,
    /// Bumped after every change, to wake watches.
    changed: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave the map half-written in a way tests care about.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes every watch (they re-read the history).
    fn notify(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// The fake kube-apiserver. Runs on the test bed's background runtime; stops on drop.
pub struct FakeApiServer {
    addr: SocketAddr,
    ca: TestCa,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
}

impl FakeApiServer {
    /// Starts the server on a free 127.0.0.1 port. TokenReview verifies with `verifier`
    /// (see [`ServiceAccountIssuer::verifier`](crate::ServiceAccountIssuer::verifier)).
    pub fn start(verifier: TokenVerifier) -> Result<Self> {
        let ca = TestCa::new()?;
        let tls = tokio_rustls::TlsAcceptor::from(ca.server_config()?);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            token: format!("testbed-{}", random_hex(24)),
            verifier,
            changed: watch::Sender::new(0),
        });
        let listener =
            block_on(TcpListener::bind(("127.0.0.1", 0))).map_err(|source| Error::Io {
                op: "bind fake api server",
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Io {
            op: "read fake api server address",
            source,
        })?;
        let (shutdown, rx) = watch::channel(false);
        runtime().spawn(accept_loop(listener, tls, Arc::clone(&shared), rx));
        Ok(Self {
            addr,
            ca,
            shared,
            shutdown,
        })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The PEM CA certificate clients must trust.
    pub fn ca_pem(&self) -> &str {
        self.ca.ca_pem()
    }

    /// The DER CA certificate (for `kube::Config::root_cert`).
    pub fn ca_der(&self) -> Vec<u8> {
        self.ca.ca_der().to_vec()
    }

    /// The bearer token the server accepts on every request (also OpenBao's `token_reviewer_jwt`).
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// Stores `object` as is (it must have `apiVersion`, `kind`, `metadata.name`, and
    /// `metadata.namespace` for namespaced kinds); fills `uid`, `creationTimestamp` and a fresh
    /// `resourceVersion`. Replaces an existing object of the same name. Returns the stored object.
    pub fn insert(&self, object: Value) -> Result<Value> {
        let decode = |detail: &str| Error::Decode {
            what: "kubernetes object",
            detail: detail.to_owned(),
        };
        let kind = Kind::from_api_kind(
            object["apiVersion"].as_str().unwrap_or_default(),
            object["kind"].as_str().unwrap_or_default(),
        )
        .ok_or_else(|| decode("unsupported apiVersion/kind"))?;
        let name = object["metadata"]["name"]
            .as_str()
            .ok_or_else(|| decode("no metadata.name"))?
            .to_owned();
        let ns = if kind.namespaced() {
            object["metadata"]["namespace"]
                .as_str()
                .ok_or_else(|| decode("no metadata.namespace"))?
                .to_owned()
        } else {
            String::new()
        };
        let mut store = self.shared.lock();
        let mut obj = object;
        normalize(kind, &mut obj);
        stamp_new(&mut store, &mut obj);
        let event_type = if store
            .objects
            .contains_key(&(kind, ns.clone(), name.clone()))
        {
            "MODIFIED"
        } else {
            "ADDED"
        };
        store.record(kind, &ns, event_type, &obj);
        store.objects.insert((kind, ns, name), obj.clone());
        drop(store);
        self.shared.notify();
        Ok(obj)
    }

    /// Returns a stored object (`namespace` is ignored for cluster-scoped kinds), by URL plural
    /// (`secrets`, `configmaps`, `serviceaccounts`, `pods`, `events` (core v1), `namespaces`,
    /// `leases`, `mutatingwebhookconfigurations`).
    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let kind = Kind::find(|r| r.plural == plural)?;
        let ns = if kind.namespaced() { namespace } else { "" };
        self.shared
            .lock()
            .objects
            .get(&(kind, ns.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Removes a stored object (same addressing as [`get`](Self::get)); returns it if it existed.
    pub fn remove(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let kind = Kind::find(|r| r.plural == plural)?;
        let ns = if kind.namespaced() { namespace } else { "" };
        let mut store = self.shared.lock();
        let removed = delete(&mut store, kind, ns, name);
        drop(store);
        self.shared.notify();
        removed
    }

    /// Makes the next `times` requests with `method` and exactly `path` fail with HTTP `code`
    /// (a `Status` with the real server's reason for it: 500 `InternalError`, 503
    /// `ServiceUnavailable`, 429 `TooManyRequests`, 403 `Forbidden`…), to test retries and
    /// error handling. Such requests are still recorded.
    pub fn inject_failure(&self, method: &str, path: &str, code: u16, times: usize) {
        let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        self.shared.lock().faults.push(Fault {
            method: method.to_owned(),
            path: path.to_owned(),
            code,
            remaining: times,
        });
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().requests.clone()
    }

    /// Forgets the requests recorded so far (e.g. after seeding, before the code under test runs).
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// How many requests had `method` and exactly `path`.
    pub fn count_requests(&self, method: &str, path: &str) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.method == method && r.path == path)
            .count()
    }

    /// A `kube::Client` for this server (URL, CA, bearer token). Needs feature `kube`.
    #[cfg(feature = "kube")]
    pub fn kube_client(&self) -> Result<kube::Client> {
        let url: http::Uri = self.url().parse().map_err(|e| Error::Decode {
            what: "fake api server url",
            detail: format!("{e}"),
        })?;
        let mut config = kube::Config::new(url);
        config.root_cert = Some(vec![self.ca_der()]);
        config.auth_info.token = Some(secrecy::SecretString::from(self.token().to_owned()));
        config.default_namespace = "default".to_owned();
        let _guard = runtime().enter();
        kube::Client::try_from(config).map_err(|e| Error::Crypto {
            op: "build kube client",
            detail: e.to_string(),
        })
    }
}

impl std::fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApiServer")
            .field("addr", &self.addr)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((tcp, _peer)) = accepted else { continue };
        let tls = tls.clone();
        let shared = Arc::clone(&shared);
        let mut conn_shutdown = shutdown.clone();
        let watch_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let Ok(stream) = tls.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let shared = Arc::clone(&shared);
                let shutdown = watch_shutdown.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(shared, req, shutdown).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = conn_shutdown.changed() => {}
            }
        });
    }
}

/// Watches stream; everything else gets one complete response.
async fn respond(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    shutdown: watch::Receiver<bool>,
) -> Response<Either<Full<Bytes>, WatchBody>> {
    if req.method() == Method::GET && is_watch(req.uri().query()) {
        if let Some(rejected) = admit(&shared, &req) {
            return rejected.map(Either::Left);
        }
        let path = req.uri().path().to_owned();
        let query = req.uri().query().map(str::to_owned);
        return start_watch(shared, &path, query.as_deref(), shutdown);
    }
    let mutating = req.method() != Method::GET;
    let response = handle(&shared, req).await;
    if mutating {
        shared.notify();
    }
    response.map(Either::Left)
}

/// Records the request, checks its bearer token and applies injected faults; `Some` is the
/// response that ends the request early.
fn admit(shared: &Shared, req: &Request<Incoming>) -> Option<Response<Full<Bytes>>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    shared.lock().requests.push(RequestRecord {
        method: method.to_string(),
        path: path.clone(),
        query: req.uri().query().map(str::to_owned),
        at: SystemTime::now(),
    });
    let bearer = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    let is_review = path == "/apis/authentication.k8s.io/v1/tokenreviews";
    // The admin token works everywhere. For TokenReview, any valid service-account token also
    // does, as in a cluster that grants `system:auth-delegator` to the caller: that is how
    // Vault reviews when configured without `token_reviewer_jwt` (it sends the client's JWT).
    let authorized = constant_time_eq(bearer.as_bytes(), shared.token.as_bytes())
        || (is_review && !bearer.is_empty() && shared.verifier.verify(bearer, &[]).is_ok());
    if !authorized {
        return Some(status_response(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized",
            None,
        ));
    }
    let code = take_fault(shared, method.as_str(), &path)?;
    let reason = match code.as_u16() {
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    };
    Some(status_response(
        code,
        reason,
        "injected failure (testbed)",
        None,
    ))
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if let Some(rejected) = admit(shared, &req) {
        return rejected;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return bad_request("unable to read request body"),
    };
    route(
        shared,
        &method,
        &path,
        query.as_deref(),
        &content_type,
        &body,
    )
}

fn route(
    shared: &Shared,
    method: &Method,
    path: &str,
    query: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> Response<Full<Bytes>> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    if let ["apis", "authentication.k8s.io", "v1", "tokenreviews"] = segs.as_slice() {
        return if method == Method::POST {
            token_review(shared, body)
        } else {
            method_not_allowed()
        };
    }
    let (group_version, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("v1".to_owned(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => return not_found_path(),
    };
    // (namespace, plural, name): "" namespace = cluster scope or all namespaces.
    let (ns, plural, name) = match rest {
        [plural] => ("", *plural, None),
        ["namespaces", ns, plural] => (*ns, *plural, None),
        ["namespaces", ns, plural, name] => (*ns, *plural, Some(*name)),
        [plural, name] => ("", *plural, Some(*name)),
        _ => return not_found_path(),
    };
    let req = ResourceRequest {
        method,
        group_version: &group_version,
        plural,
        ns,
        name,
        query,
        content_type,
        body,
    };
    resource(shared, &req)
}

/// A request for a stored resource, decoded from the URL.
struct ResourceRequest<'a> {
    method: &'a Method,
    group_version: &'a str,
    plural: &'a str,
    ns: &'a str,
    name: Option<&'a str>,
    query: Option<&'a str>,
    content_type: &'a str,
    body: &'a [u8],
}

/// Consumes one matching injected failure, if any.
fn take_fault(shared: &Shared, method: &str, path: &str) -> Option<StatusCode> {
    let mut store = shared.lock();
    let fault = store
        .faults
        .iter_mut()
        .find(|f| f.remaining > 0 && f.method == method && f.path == path)?;
    fault.remaining -= 1;
    let code = fault.code;
    store.faults.retain(|f| f.remaining > 0);
    Some(code)
}

fn token_review(shared: &Shared, body: &[u8]) -> Response<Full<Bytes>> {
    let Ok(review) = serde_json::from_slice::<Value>(body) else {
        return bad_request("the body of the request was in an unknown format");
    };
    // Like the real server, the URL fixes the type: apiVersion/kind may be omitted (Go clients
    // send an empty TypeMeta), but must not name something else.
    let api_version = review["apiVersion"].as_str().unwrap_or_default();
    let kind = review["kind"].as_str().unwrap_or_default();
    if !matches!(api_version, "" | "authentication.k8s.io/v1")
        || !matches!(kind, "" | "TokenReview")
    {
        return bad_request("expected apiVersion authentication.k8s.io/v1, kind TokenReview");
    }
    let Some(token) = review["spec"]["token"].as_str() else {
        return status_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "TokenReview.authentication.k8s.io \"\" is invalid: spec.token: Required value",
            None,
        );
    };
    let requested: Vec<String> = review["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    // The response echoes the spec like the real server, minus the token itself.
    let mut spec = json!({});
    if !requested.is_empty() {
        spec["audiences"] = json!(requested);
    }
    let status = match shared.verifier.verify(token, &requested) {
        Ok(id) => {
            let mut extra = serde_json::Map::new();
            if let Some((pod, pod_uid)) = &id.pod {
                extra.insert("authentication.kubernetes.io/pod-name".into(), json!([pod]));
                extra.insert(
                    "authentication.kubernetes.io/pod-uid".into(),
                    json!([pod_uid]),
                );
            }
            let mut user = json!({
                "username": format!("system:serviceaccount:{}:{}", id.namespace, id.service_account),
                "uid": id.uid,
                "groups": [
                    "system:serviceaccounts",
                    format!("system:serviceaccounts:{}", id.namespace),
                    "system:authenticated",
                ],
            });
            if !extra.is_empty() {
                user["extra"] = Value::Object(extra);
            }
            json!({ "authenticated": true, "user": user, "audiences": id.audiences })
        }
        Err(reason) => json!({ "user": {}, "error": reason }),
    };
    json_response(
        StatusCode::CREATED,
        &json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": { "creationTimestamp": null },
            "spec": spec,
            "status": status,
        }),
    )
}

fn resource(shared: &Shared, req: &ResourceRequest<'_>) -> Response<Full<Bytes>> {
    let ResourceRequest {
        method,
        group_version,
        plural,
        ns,
        name,
        query,
        content_type,
        body,
    } = *req;
    let Some(kind) = Kind::from_plural(group_version, plural) else {
        return not_found_path();
    };
    // A namespaced kind without a namespace is only valid as a list across all namespaces.
    let all_namespaces =
        kind.namespaced() && ns.is_empty() && name.is_none() && method == Method::GET;
    if !all_namespaces && kind.namespaced() == ns.is_empty() {
        return not_found_path();
    }
    let mut store = shared.lock();
    match (method.as_str(), name) {
        ("GET", None) => list(&store, kind, ns, query),
        ("GET", Some(name)) => match store.objects.get(&(kind, ns.to_owned(), name.to_owned())) {
            Some(obj) => json_response(StatusCode::OK, obj),
            None => not_found(kind, name),
        },
        ("POST", None) => {
            let mut obj = match parse_object(kind, ns, body) {
                Ok(o) => o,
                Err(resp) => return resp,
            };
            if obj["metadata"]["name"].as_str().is_none_or(str::is_empty) {
                match obj["metadata"]["generateName"].as_str() {
                    Some(prefix) => {
                        obj["metadata"]["name"] = json!(format!("{prefix}{}", &random_hex(3)[..5]))
                    }
                    None => {
                        return status_response(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "Invalid",
                            &format!(
                                "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                                kind.kind()
                            ),
                            None,
                        );
                    }
                }
            }
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let key = (kind, ns.to_owned(), name.clone());
            if store.objects.contains_key(&key) {
                return status_response(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    &format!("{} \"{name}\" already exists", qualified(kind)),
                    Some(details(kind, &name)),
                );
            }
            if let Some(obj_ns) = obj["metadata"].as_object_mut() {
                obj_ns.remove("resourceVersion");
            }
            normalize(kind, &mut obj);
            stamp_new(&mut store, &mut obj);
            store.record(kind, ns, "ADDED", &obj);
            store.objects.insert(key, obj.clone());
            json_response(StatusCode::CREATED, &obj)
        }
        ("PUT", Some(name)) => {
            let obj = match parse_object(kind, ns, body) {
                Ok(o) => o,
                Err(resp) => return resp,
            };
            if obj["metadata"]["name"] != name {
                return bad_request("the name of the object does not match the name on the URL");
            }
            let key = (kind, ns.to_owned(), name.to_owned());
            let Some(current) = store.objects.get(&key).cloned() else {
                return not_found(kind, name);
            };
            update(&mut store, kind, key, &current, obj)
        }
        ("PATCH", Some(name)) => {
            let key = (kind, ns.to_owned(), name.to_owned());
            let mime = content_type.split(';').next().unwrap_or_default().trim();
            let Some(current) = store.objects.get(&key).cloned() else {
                // Server-side apply creates what does not exist yet; other patches 404.
                if mime != "application/apply-patch+yaml" {
                    return not_found(kind, name);
                }
                let mut obj = match parse_object(kind, ns, body) {
                    Ok(o) => o,
                    Err(resp) => return resp,
                };
                if obj["metadata"]["name"] != name {
                    return bad_request(
                        "the name of the object does not match the name on the URL",
                    );
                }
                normalize(kind, &mut obj);
                stamp_new(&mut store, &mut obj);
                store.record(kind, ns, "ADDED", &obj);
                store.objects.insert(key, obj.clone());
                return json_response(StatusCode::CREATED, &obj);
            };
            let mut patched = current.clone();
            let applied = match mime {
                "application/json-patch+json" => serde_json::from_slice::<json_patch::Patch>(body)
                    .map_err(|e| e.to_string())
                    .and_then(|p| json_patch::patch(&mut patched, &p).map_err(|e| e.to_string())),
                "application/merge-patch+json"
                | "application/strategic-merge-patch+json"
                | "application/apply-patch+yaml" => serde_json::from_slice::<Value>(body)
                    .map(|p| json_patch::merge(&mut patched, &p))
                    .map_err(|e| e.to_string()),
                _ => {
                    return status_response(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "UnsupportedMediaType",
                        &format!(
                            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, got {mime}"
                        ),
                        None,
                    );
                }
            };
            if let Err(e) = applied {
                return status_response(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", &e, None);
            }
            // A patch cannot rename or move the object.
            patched["metadata"]["name"] = json!(name);
            if kind.namespaced() {
                patched["metadata"]["namespace"] = json!(ns);
            }
            // Without a resourceVersion in the patch, the update is unconditional.
            if patched["metadata"]["resourceVersion"] == current["metadata"]["resourceVersion"]
                && let Some(m) = patched["metadata"].as_object_mut()
            {
                m.remove("resourceVersion");
            }
            update(&mut store, kind, key, &current, patched)
        }
        ("DELETE", Some(name)) => match delete(&mut store, kind, ns, name) {
            Some(obj) => json_response(
                StatusCode::OK,
                &json!({
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {
                        "name": name,
                        "group": kind.group(),
                        "kind": kind.plural(),
                        "uid": obj["metadata"]["uid"],
                    },
                }),
            ),
            None => not_found(kind, name),
        },
        _ => method_not_allowed(),
    }
}

fn method_not_allowed() -> Response<Full<Bytes>> {
    status_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        None,
    )
}

/// PUT/PATCH common path: optimistic concurrency on `metadata.resourceVersion`, then store.
fn update(
    store: &mut Store,
    kind: Kind,
    key: Key,
    current: &Value,
    mut obj: Value,
) -> Response<Full<Bytes>> {
    let name = key.2.clone();
    if let Some(rv) = obj["metadata"]["resourceVersion"].as_str()
        && !rv.is_empty()
        && Some(rv) != current["metadata"]["resourceVersion"].as_str()
    {
        return status_response(
            StatusCode::CONFLICT,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                qualified(kind)
            ),
            Some(details(kind, &name)),
        );
    }
    normalize(kind, &mut obj);
    obj["metadata"]["uid"] = current["metadata"]["uid"].clone();
    obj["metadata"]["creationTimestamp"] = current["metadata"]["creationTimestamp"].clone();
    store.resource_version += 1;
    obj["metadata"]["resourceVersion"] = json!(store.resource_version.to_string());
    store.record(kind, &key.1, "MODIFIED", &obj);
    store.objects.insert(key, obj.clone());
    json_response(StatusCode::OK, &obj)
}

/// Removes an object; the deletion gets a fresh resourceVersion and a `DELETED` change.
fn delete(store: &mut Store, kind: Kind, ns: &str, name: &str) -> Option<Value> {
    let mut obj = store
        .objects
        .remove(&(kind, ns.to_owned(), name.to_owned()))?;
    store.resource_version += 1;
    obj["metadata"]["resourceVersion"] = json!(store.resource_version.to_string());
    store.record(kind, ns, "DELETED", &obj);
    Some(obj)
}

fn list(store: &Store, kind: Kind, ns: &str, query: Option<&str>) -> Response<Full<Bytes>> {
    let selector = Selector::from_query(query);
    let items: Vec<Value> = store
        .objects
        .iter()
        .filter(|((k, n, _), _)| *k == kind && (ns.is_empty() || n == ns))
        .filter(|(_, obj)| selector.matches(obj))
        .map(|(_, obj)| {
            // List items carry no apiVersion/kind, like the real server's.
            let mut item = obj.clone();
            if let Some(m) = item.as_object_mut() {
                m.remove("apiVersion");
                m.remove("kind");
            }
            item
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "kind": format!("{}List", kind.kind()),
            "apiVersion": kind.api_version(),
            "metadata": { "resourceVersion": store.resource_version.to_string() },
            "items": items,
        }),
    )
}

/// One `key=value`, `key==value` or `key!=value` term of a selector.
#[derive(Debug)]
struct Term {
    key: String,
    value: String,
    equal: bool,
}

impl Term {
    fn parse(term: &str) -> Option<Self> {
        let (key, value, equal) = if let Some((k, v)) = term.split_once("!=") {
            (k, v, false)
        } else if let Some((k, v)) = term.split_once("==") {
            (k, v, true)
        } else {
            let (k, v) = term.split_once('=')?;
            (k, v, true)
        };
        Some(Self {
            key: key.trim().to_owned(),
            value: value.trim().to_owned(),
            equal,
        })
    }

    /// An absent field or label reads as the empty string, as in the real server.
    fn holds(&self, actual: &Value) -> bool {
        (actual.as_str().unwrap_or_default() == self.value) == self.equal
    }
}

/// The `labelSelector` and `fieldSelector` of a list or watch request.
#[derive(Debug, Default)]
struct Selector {
    labels: Vec<Term>,
    fields: Vec<Term>,
}

impl Selector {
    fn from_query(query: Option<&str>) -> Self {
        let mut selector = Self::default();
        for kv in query.into_iter().flat_map(|q| q.split('&')) {
            let Some((name, value)) = kv.split_once('=') else {
                continue;
            };
            let terms = match name {
                "labelSelector" => &mut selector.labels,
                "fieldSelector" => &mut selector.fields,
                _ => continue,
            };
            terms.extend(percent_decode(value).split(',').filter_map(Term::parse));
        }
        selector
    }

    fn matches(&self, obj: &Value) -> bool {
        self.labels
            .iter()
            .all(|t| t.holds(&obj["metadata"]["labels"][t.key.as_str()]))
            && self.fields.iter().all(|t| {
                let field = t.key.split('.').fold(obj, |v, part| &v[part]);
                t.holds(field)
            })
    }
}

/// The value of query parameter `name`, percent-decoded.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(v))
}

fn is_watch(query: Option<&str>) -> bool {
    matches!(query_param(query, "watch").as_deref(), Some("true" | "1"))
}

/// The body of a watch response: lines handed over by the task that follows the history.
struct WatchBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for WatchBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|line| line.map(|line| Ok(Frame::data(line))))
    }
}

/// What a watch follows.
struct WatchSpec {
    kind: Kind,
    namespace: String,
    selector: Selector,
    /// `None` or `Some(0)`: start with the current state.
    from: Option<u64>,
    timeout: std::time::Duration,
}

fn start_watch(
    shared: Arc<Shared>,
    path: &str,
    query: Option<&str>,
    shutdown: watch::Receiver<bool>,
) -> Response<Either<Full<Bytes>, WatchBody>> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group_version, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("v1".to_owned(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => return not_found_path().map(Either::Left),
    };
    let (namespace, plural) = match rest {
        [plural] => ("", *plural),
        ["namespaces", ns, plural] => (*ns, *plural),
        _ => return bad_request("watch needs a collection path").map(Either::Left),
    };
    let Some(kind) = Kind::from_plural(&group_version, plural) else {
        return not_found_path().map(Either::Left);
    };
    if !kind.namespaced() && !namespace.is_empty() {
        return not_found_path().map(Either::Left);
    }
    let from = match query_param(query, "resourceVersion").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => match v.parse::<u64>() {
            Ok(v) => Some(v),
            Err(_) => {
                return bad_request(&format!("invalid resource version \"{v}\"")).map(Either::Left);
            }
        },
    };
    let timeout = query_param(query, "timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let spec = WatchSpec {
        kind,
        namespace: namespace.to_owned(),
        selector: Selector::from_query(query),
        from,
        timeout: std::time::Duration::from_secs(timeout),
    };
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(follow(shared, spec, tx, shutdown));
    let mut resp = Response::new(Either::Right(WatchBody(rx)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn watch_line(event_type: &str, object: &Value) -> Bytes {
    let mut line = json!({ "type": event_type, "object": object }).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// Streams the changes `spec` asks for until the timeout, the client leaves or the server stops.
async fn follow(
    shared: Arc<Shared>,
    spec: WatchSpec,
    tx: mpsc::Sender<Bytes>,
    mut shutdown: watch::Receiver<bool>,
) {
    let deadline = tokio::time::Instant::now() + spec.timeout;
    let mut changed = shared.changed.subscribe();
    let in_scope = |kind: Kind, namespace: &str, obj: &Value| {
        kind == spec.kind
            && (spec.namespace.is_empty() || namespace == spec.namespace)
            && spec.selector.matches(obj)
    };
    changed.borrow_and_update();
    let start: std::result::Result<(u64, Vec<Bytes>), Bytes> = {
        let store = shared.lock();
        match spec.from {
            None | Some(0) => Ok((
                store.resource_version,
                store
                    .objects
                    .iter()
                    .filter(|((k, n, _), obj)| in_scope(*k, n, obj))
                    .map(|(_, obj)| watch_line("ADDED", obj))
                    .collect(),
            )),
            Some(from) if from < store.history_floor => Err(watch_line(
                "ERROR",
                &json!({
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": format!("too old resource version: {from} ({})", store.history_floor),
                    "reason": "Expired",
                    "code": 410,
                }),
            )),
            Some(from) => Ok((from, Vec::new())),
        }
    };
    let (mut seen, initial) = match start {
        Ok(start) => start,
        Err(expired) => {
            let _ = tx.send(expired).await;
            return;
        }
    };
    for line in initial {
        if tx.send(line).await.is_err() {
            return;
        }
    }
    loop {
        // Marked seen before reading, so a change after the read always wakes us.
        changed.borrow_and_update();
        let lines: Vec<Bytes> = {
            let store = shared.lock();
            let fresh: Vec<&Change> = store
                .history
                .iter()
                .filter(|c| c.resource_version > seen)
                .collect();
            if let Some(last) = fresh.last() {
                seen = last.resource_version;
            }
            fresh
                .into_iter()
                .filter(|c| in_scope(c.kind, &c.namespace, &c.object))
                .map(|c| watch_line(c.event_type, &c.object))
                .collect()
        };
        for line in lines {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        tokio::select! {
            woke = changed.changed() => if woke.is_err() { return },
            _ = tokio::time::sleep_until(deadline) => return,
            _ = tx.closed() => return,
            _ = shutdown.changed() => return,
        }
    }
}

#[allow(
    clippy::result_large_err,
    reason = "the error is the finished HTTP response, built once per bad request"
)]
fn parse_object(kind: Kind, ns: &str, body: &[u8]) -> Result<Value, Response<Full<Bytes>>> {
    let mut obj: Value = serde_json::from_slice(body)
        .map_err(|_| bad_request("the body of the request was in an unknown format"))?;
    if !obj.is_object() {
        return Err(bad_request(
            "the body of the request was in an unknown format",
        ));
    }
    let api_version = obj["apiVersion"]
        .as_str()
        .unwrap_or(kind.api_version())
        .to_owned();
    let obj_kind = obj["kind"].as_str().unwrap_or(kind.kind()).to_owned();
    if Kind::from_api_kind(&api_version, &obj_kind) != Some(kind) {
        return Err(bad_request(&format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            kind.api_version()
        )));
    }
    obj["apiVersion"] = json!(kind.api_version());
    obj["kind"] = json!(kind.kind());
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    if kind.namespaced() {
        match obj["metadata"]["namespace"].as_str() {
            Some(n) if n != ns => {
                return Err(bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => obj["metadata"]["namespace"] = json!(ns),
        }
    }
    Ok(obj)
}

/// Server-side defaulting the real API server does: Secret `stringData` folded into `data`.
fn normalize(kind: Kind, obj: &mut Value) {
    if kind.kind() != "Secret" {
        return;
    }
    use base64::Engine as _;
    if let Some(string_data) = obj.as_object_mut().and_then(|o| o.remove("stringData"))
        && let Some(sd) = string_data.as_object()
    {
        if !obj["data"].is_object() {
            obj["data"] = json!({});
        }
        for (k, v) in sd {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or_default());
            obj["data"][k] = json!(encoded);
        }
    }
    if obj["type"].is_null() {
        obj["type"] = json!("Opaque");
    }
}

fn stamp_new(store: &mut Store, obj: &mut Value) {
    store.resource_version += 1;
    let meta = &mut obj["metadata"];
    meta["uid"] = json!(random_uuid());
    meta["resourceVersion"] = json!(store.resource_version.to_string());
    meta["creationTimestamp"] = json!(rfc3339_now());
}

fn rfc3339_now() -> String {
    // Civil-from-days (Howard Hinnant's algorithm) to avoid a date crate for one timestamp.
    let secs = crate::net::unix_now();
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn qualified(kind: Kind) -> String {
    if kind.group().is_empty() {
        kind.plural().to_owned()
    } else {
        format!("{}.{}", kind.plural(), kind.group())
    }
}

fn details(kind: Kind, name: &str) -> Value {
    let mut d = json!({ "name": name, "kind": kind.plural() });
    if !kind.group().is_empty() {
        d["group"] = json!(kind.group());
    }
    d
}

fn not_found(kind: Kind, name: &str) -> Response<Full<Bytes>> {
    status_response(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{} \"{name}\" not found", qualified(kind)),
        Some(details(kind, name)),
    )
}

fn not_found_path() -> Response<Full<Bytes>> {
    status_response(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
        Some(json!({})),
    )
}

fn bad_request(message: &str) -> Response<Full<Bytes>> {
    status_response(StatusCode::BAD_REQUEST, "BadRequest", message, None)
}

/// A `Status` object exactly as the real API server sends for failures.
fn status_response(
    code: StatusCode,
    reason: &str,
    message: &str,
    details: Option<Value>,
) -> Response<Full<Bytes>> {
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    if let Some(d) = details {
        status["details"] = d;
    }
    json_response(code, &status)
}

fn json_response(code: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match bytes[i] {
            b'%' if i + 2 < bytes.len() => hex(bytes[i + 1])
                .zip(hex(bytes[i + 2]))
                .map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match (decoded, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_now_is_utc_seconds_precision() {
        let ts = rfc3339_now();
        assert_eq!(ts.len(), 20, "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
        assert!(ts.starts_with("20"), "{ts}");
    }

    #[test]
    fn percent_decode_label_selector_and_bad_escapes() {
        assert_eq!(percent_decode("app%3Dx%2Cteam%3Da"), "app=x,team=a");
        assert_eq!(percent_decode("a+b%zz%4"), "a b%zz%4");
    }

    #[test]
    fn kind_lookup_by_plural_and_by_kind_agree() {
        for (i, r) in RESOURCES.iter().enumerate() {
            assert_eq!(Kind::from_plural(r.api_version, r.plural), Some(Kind(i)));
            assert_eq!(Kind::from_api_kind(r.api_version, r.kind), Some(Kind(i)));
        }
        assert_eq!(Kind(0).group(), "");
        let mwc = Kind::from_plural(
            "admissionregistration.k8s.io/v1",
            "mutatingwebhookconfigurations",
        );
        assert_eq!(mwc.map(Kind::group), Some("admissionregistration.k8s.io"));
    }
}

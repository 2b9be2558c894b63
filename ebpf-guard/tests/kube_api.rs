//! The agent's Kubernetes side against the test bed's fake kube-apiserver (real paths, JSON,
//! list and watch streams): the node's pods listed and watched with a `spec.nodeName` field
//! selector, audit lines named from them, aggregated Events posted on the pod, and an
//! unreachable API server reported while enforcement continues from the kubelet's disk layout.
//! No BPF is needed: records are built from `RawEvent`s as the ring buffer delivers them.
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use serde_json::{Value, json};
use strongroom_testbed::{FakeApiServer, ServiceAccountIssuer};

use ebpf_guard::abi::{
    COMM_LEN, DECISION_DENY, HOOK_LINEAGE_START, HOOK_PTRACE_ACCESS_CHECK, RawEvent,
};
use ebpf_guard::cgroup::CgroupIdentity;
use ebpf_guard::config::Mode;
use ebpf_guard::event::{AuditSink, Clock};
use ebpf_guard::kubelet;
use ebpf_guard::metrics::Metrics;
use ebpf_guard::pods::{self, ApiSource, PodDirectory};
use ebpf_guard::protect;
use ebpf_guard::recorder::{self, REASON_DENIED, REPORTING_CONTROLLER, Reporter};

const NODE: &str = "node-1";
const CONTAINER_ID: &str = "4f1c0ffee";

fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn start_api() -> FakeApiServer {
    FakeApiServer::start(ServiceAccountIssuer::new().expect("issuer").verifier())
        .expect("fake api server")
}

/// A kubeconfig for `server` (URL, CA, token), as `--kubeconfig` would get it.
fn kubeconfig(dir: &Path, server: &str, ca_pem: &str, token: &str) -> PathBuf {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: guard\n  user:\n    token: {token}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: guard\ncurrent-context: fake\n"
        ),
    )
    .expect("write kubeconfig");
    path
}

async fn client_for(api: &FakeApiServer, dir: &Path) -> kube::Client {
    install_crypto();
    let path = kubeconfig(dir, &api.url(), api.ca_pem(), api.token());
    ApiSource::detect(Some(&path))
        .expect("kubeconfig source")
        .client()
        .await
        .expect("client from kubeconfig")
}

fn pod(name: &str, node: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "payments", "annotations": annotations},
        "spec": {
            "nodeName": node,
            "initContainers": [{"name": "copy-vault-env", "image": "vault-env"}],
            "containers": [{"name": "app", "image": "app"}],
        },
        "status": {
            "phase": "Running",
            "containerStatuses": [{
                "name": "app", "containerID": format!("containerd://{CONTAINER_ID}"),
                "image": "app", "imageID": "", "ready": true, "restartCount": 0,
            }],
        },
    })
}

fn injected(mode: &str) -> Value {
    json!({
        pods::INJECTED_ANNOTATION: "0.1.0",
        pods::GUARD_MODE_ANNOTATION: mode,
    })
}

/// Inserts a pod and returns its server-assigned uid.
fn insert_pod(api: &FakeApiServer, object: Value) -> String {
    let stored = api.insert(object).expect("insert pod");
    stored["metadata"]["uid"].as_str().expect("uid").to_owned()
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn spawn_watch(client: kube::Client, metrics: &Arc<Metrics>) -> (PodDirectory, WatchTask) {
    let directory = PodDirectory::new();
    let task = tokio::spawn(pods::watch(
        client,
        NODE.to_owned(),
        directory.clone(),
        Arc::clone(metrics),
    ));
    (directory, WatchTask(task))
}

/// Aborts the watch task when the test ends.
struct WatchTask(tokio::task::JoinHandle<()>);

impl Drop for WatchTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One injected pod on the node, its watch synced, and a running Event recorder: the setup of
/// every audit-sink and recorder test.
struct EventRig {
    api: FakeApiServer,
    _dir: tempfile::TempDir,
    uid: String,
    client: kube::Client,
    metrics: Arc<Metrics>,
    directory: PodDirectory,
    _watch: WatchTask,
    sender: Option<recorder::EventSender>,
    recorder: tokio::task::JoinHandle<()>,
}

impl EventRig {
    async fn start(queue_capacity: usize, window: Duration) -> Self {
        let api = start_api();
        let dir = tempfile::tempdir().expect("tempdir");
        let uid = insert_pod(&api, pod("api-1", NODE, injected("enforce")));
        let client = client_for(&api, dir.path()).await;
        let metrics = Arc::new(Metrics::default());
        let (directory, watch) = spawn_watch(client.clone(), &metrics);
        eventually("the first list", || async { directory.is_synced() }).await;
        let (sender, queue) = recorder::queue(queue_capacity, Arc::clone(&metrics));
        let recorder = tokio::spawn(recorder::run(
            client.clone(),
            Reporter::for_node(NODE),
            queue,
            window,
            Arc::clone(&metrics),
        ));
        Self {
            api,
            _dir: dir,
            uid,
            client,
            metrics,
            directory,
            _watch: watch,
            sender: Some(sender),
            recorder,
        }
    }

    /// The audit sink writing lines to `out` and Events to the recorder (once per rig).
    fn sink<W: std::io::Write>(&mut self, out: W) -> AuditSink<W> {
        AuditSink::new(
            NODE,
            Clock::with_offset(0),
            out,
            Arc::clone(&self.metrics),
            self.directory.clone(),
            Some(self.sender.take().expect("one sink per rig")),
        )
    }
}

fn comm(text: &str) -> [u8; COMM_LEN] {
    let mut out = [0u8; COMM_LEN];
    out[..text.len()].copy_from_slice(text.as_bytes());
    out
}

fn ptrace_denial() -> RawEvent {
    RawEvent {
        ktime_ns: 1_000,
        hook: HOOK_PTRACE_ACCESS_CHECK,
        decision: DECISION_DENY,
        subject_pid: 4242,
        subject_tid: 4242,
        subject_uid: 0,
        target_pid: 100,
        lineage_cg: 88,
        subject_comm: comm("read_environ"),
        target_comm: comm("canary_app"),
        ..RawEvent::default()
    }
}

fn identity(uid: &str) -> CgroupIdentity {
    CgroupIdentity {
        pod_uid: Some(uid.to_owned()),
        container_id: Some(CONTAINER_ID.to_owned()),
        path: format!("kubepods/pod{uid}/{CONTAINER_ID}"),
    }
}

/// A plain list (not a watch) of pods across namespaces.
fn is_pod_list(request: &strongroom_testbed::RequestRecord) -> bool {
    request.method == "GET"
        && request.path == "/api/v1/pods"
        && !request
            .query
            .as_deref()
            .is_some_and(|q| q.contains("watch=true"))
}

const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/payments/events";

async fn events(client: &kube::Client) -> Vec<Event> {
    kube::Api::<Event>::namespaced(client.clone(), "payments")
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_watch_node_field_selector_lists_only_this_nodes_pods() {
    let api = start_api();
    let dir = tempfile::tempdir().expect("tempdir");
    let mine = insert_pod(&api, pod("api-1", NODE, injected("enforce")));
    let other = insert_pod(&api, pod("api-2", "node-2", injected("enforce")));
    let client = client_for(&api, dir.path()).await;
    api.clear_requests();

    let metrics = Arc::new(Metrics::default());
    let (directory, _task) = spawn_watch(client, &metrics);
    eventually("the first list", || async { directory.is_synced() }).await;

    let info = directory.get(&mine).expect("this node's pod is known");
    assert_eq!(
        (info.namespace.as_str(), info.name.as_str()),
        ("payments", "api-1")
    );
    assert_eq!(info.mode, Some(Mode::Enforce));
    assert!(info.injected);
    assert_eq!(info.container_name(CONTAINER_ID), Some("app"));
    assert!(
        directory.get(&other).is_none(),
        "other nodes' pods stay out"
    );
    assert_eq!(directory.len(), 1);
    assert_eq!(metrics.kube_api_up.get(), 1);

    let selector = "fieldSelector=spec.nodeName%3Dnode-1";
    let requests = api.requests();
    let list = requests
        .iter()
        .find(|r| r.method == "GET" && r.path == "/api/v1/pods")
        .expect("a pod list across namespaces");
    let query = list.query.clone().unwrap_or_default();
    assert!(query.contains(selector), "list query: {query}");
    assert!(!query.contains("watch=true"), "first a list: {query}");
    eventually("the watch request", || async {
        api.requests().iter().any(|r| {
            r.path == "/api/v1/pods"
                && r.query
                    .as_deref()
                    .is_some_and(|q| q.contains("watch=true") && q.contains(selector))
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_watch_changes_on_node_update_directory() {
    let api = start_api();
    let dir = tempfile::tempdir().expect("tempdir");
    let client = client_for(&api, dir.path()).await;
    let metrics = Arc::new(Metrics::default());
    let (directory, _task) = spawn_watch(client.clone(), &metrics);
    eventually("the first list", || async { directory.is_synced() }).await;
    assert!(directory.is_empty());
    // Let the watch start, so the changes below arrive through it rather than a list.
    eventually("the watch request", || async {
        api.requests()
            .iter()
            .any(|r| r.query.as_deref().is_some_and(|q| q.contains("watch=true")))
    })
    .await;
    let lists_before = api.requests().iter().filter(|r| is_pod_list(r)).count();

    let uid = insert_pod(&api, pod("api-1", NODE, injected("audit")));
    eventually("the added pod", || async { directory.get(&uid).is_some() }).await;
    assert_eq!(directory.get(&uid).and_then(|p| p.mode), Some(Mode::Audit));

    kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), "payments")
        .patch(
            "api-1",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({
                "metadata": {"annotations": {pods::GUARD_MODE_ANNOTATION: "enforce"}}
            })),
        )
        .await
        .expect("annotate pod");
    eventually("the modified annotation", || async {
        directory.get(&uid).and_then(|p| p.mode) == Some(Mode::Enforce)
    })
    .await;

    insert_pod(&api, pod("elsewhere", "node-2", injected("audit")));
    api.remove("pods", "payments", "api-1").expect("delete pod");
    eventually("the deleted pod", || async {
        directory.get(&uid).is_none()
    })
    .await;
    assert!(directory.is_empty(), "a pod on node-2 never arrives");
    let lists_after = api.requests().iter().filter(|r| is_pod_list(r)).count();
    assert_eq!(lists_before, lists_after, "changes came through the watch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_sink_known_pod_logs_names_and_posts_one_event() {
    let mut rig = EventRig::start(16, Duration::from_secs(60)).await;
    let mut sink = rig.sink(Vec::new());
    let EventRig {
        api,
        uid,
        client,
        recorder,
        ..
    } = rig;
    // A lineage start is bookkeeping: no line, no Event.
    sink.process(
        &RawEvent {
            hook: HOOK_LINEAGE_START,
            decision: ebpf_guard::abi::DECISION_ALLOW,
            ..ptrace_denial()
        },
        Some(&identity(&uid)),
    );
    sink.process(&ptrace_denial(), Some(&identity(&uid)));

    let text = String::from_utf8(sink.out().clone()).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let line: Value = serde_json::from_str(lines[0]).expect("json line");
    assert_eq!(line["node"], NODE);
    assert_eq!(line["namespace"], "payments");
    assert_eq!(line["pod"], "api-1");
    assert_eq!(line["pod_uid"], uid.as_str());
    assert_eq!(line["container"], CONTAINER_ID);
    assert_eq!(line["container_name"], "app");
    assert_eq!(line["hook"], "ptrace_access_check");
    assert_eq!(line["decision"], "deny");
    assert_eq!(line["subject"]["comm"], "read_environ");
    assert_eq!(line["target"]["comm"], "canary_app");

    eventually("the Event", || async {
        api.count_requests("POST", EVENTS_PATH) == 1
    })
    .await;
    let posted = events(&client).await;
    let [event] = posted.as_slice() else {
        panic!("one Event expected: {posted:?}");
    };
    let regarding = event.regarding.as_ref().expect("regarding");
    assert_eq!(regarding.kind.as_deref(), Some("Pod"));
    assert_eq!(regarding.api_version.as_deref(), Some("v1"));
    assert_eq!(regarding.namespace.as_deref(), Some("payments"));
    assert_eq!(regarding.name.as_deref(), Some("api-1"));
    assert_eq!(regarding.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(
        regarding.field_path.as_deref(),
        Some("spec.containers{app}")
    );
    assert_eq!(event.reason.as_deref(), Some(REASON_DENIED));
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(
        event.reporting_controller.as_deref(),
        Some(REPORTING_CONTROLLER)
    );
    assert_eq!(
        event.reporting_instance.as_deref(),
        Some("ebpf-guard-node-1")
    );
    assert!(event.event_time.is_some());
    let note = event.note.as_deref().expect("note");
    assert!(
        note.contains("\"read_environ\" (pid 4242, uid 0)") && note.contains("\"canary_app\""),
        "{note}"
    );

    drop(sink);
    recorder.await.expect("recorder ends when the queue closes");
    assert_eq!(api.count_requests("POST", EVENTS_PATH), 1);
    assert_eq!(
        api.count_requests(
            "PATCH",
            &format!(
                "{EVENTS_PATH}/{}",
                event.metadata.name.as_deref().unwrap_or_default()
            )
        ),
        0,
        "a single attempt needs no series"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_recorder_burst_of_1000_denials_makes_bounded_api_calls() {
    let window = Duration::from_millis(300);
    let mut rig = EventRig::start(recorder::QUEUE_CAPACITY, window).await;
    let mut sink = rig.sink(std::io::sink());
    let EventRig {
        api,
        uid,
        client,
        metrics,
        recorder,
        ..
    } = rig;
    let started = tokio::time::Instant::now();
    for _ in 0..1000 {
        sink.process(&ptrace_denial(), Some(&identity(&uid)));
    }
    // Let at least one window pass with the recorder running, then close the queue.
    tokio::time::sleep(window * 2).await;
    drop(sink);
    recorder.await.expect("recorder ends when the queue closes");
    let elapsed = started.elapsed();

    let posts = api.count_requests("POST", EVENTS_PATH);
    let patches = api
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.starts_with(EVENTS_PATH))
        .count();
    assert_eq!(posts, 1, "one Event for the whole series");
    let windows = usize::try_from(elapsed.as_millis() / window.as_millis()).unwrap_or(usize::MAX);
    assert!(
        (1..=windows + 1).contains(&patches),
        "{patches} patches in {elapsed:?} (window {window:?})"
    );
    assert_eq!(metrics.kube_events_dropped.get(), 0);
    assert_eq!(metrics.kube_events_aggregated.get(), 999);
    let posted = events(&client).await;
    let [event] = posted.as_slice() else {
        panic!("one Event expected: {posted:?}");
    };
    assert_eq!(
        event.series.as_ref().map(|s| s.count),
        Some(1000),
        "every attempt is counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_recorder_patch_refused_creates_replacement_with_series() {
    let mut rig = EventRig::start(16, Duration::from_secs(60)).await;
    let mut sink = rig.sink(std::io::sink());
    let EventRig {
        api,
        uid,
        client,
        recorder,
        ..
    } = rig;
    sink.process(&ptrace_denial(), Some(&identity(&uid)));
    eventually("the first Event", || async {
        api.count_requests("POST", EVENTS_PATH) == 1
    })
    .await;
    let first = events(&client).await.remove(0);
    let name = first.metadata.name.clone().expect("name");
    // A cluster whose RBAC grants only `create` on events refuses the series update.
    api.inject_failure("PATCH", &format!("{EVENTS_PATH}/{name}"), 403, 1);
    for _ in 0..4 {
        sink.process(&ptrace_denial(), Some(&identity(&uid)));
    }
    drop(sink);
    recorder.await.expect("recorder ends when the queue closes");

    assert_eq!(
        api.count_requests("PATCH", &format!("{EVENTS_PATH}/{name}")),
        1
    );
    assert_eq!(api.count_requests("POST", EVENTS_PATH), 2);
    let posted = events(&client).await;
    let replacement = posted
        .iter()
        .find(|e| e.metadata.name.as_deref() != Some(name.as_str()))
        .expect("a replacement Event");
    assert_eq!(replacement.series.as_ref().map(|s| s.count), Some(5));
    assert_eq!(replacement.reason.as_deref(), Some(REASON_DENIED));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_watch_api_server_down_reports_failure_and_disk_enforcement_continues() {
    install_crypto();
    // A port nothing listens on: the API server is down.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let dir = tempfile::tempdir().expect("tempdir");
    let api = start_api();
    let path = kubeconfig(
        dir.path(),
        &format!("https://127.0.0.1:{port}"),
        api.ca_pem(),
        api.token(),
    );
    let client = ApiSource::Kubeconfig(path)
        .client()
        .await
        .expect("a client can be built while the server is down");
    let metrics = Arc::new(Metrics::default());
    let (directory, _task) = spawn_watch(client, &metrics);
    eventually("the reported failure", || async {
        directory.last_error().is_some()
    })
    .await;
    let error = directory.last_error().unwrap_or_default();
    assert!(
        error.contains("list/watch pods with fieldSelector spec.nodeName=node-1 failed"),
        "{error}"
    );
    assert!(
        error.to_lowercase().contains("connection refused"),
        "{error}"
    );
    assert!(!directory.is_synced());
    assert_eq!(metrics.kube_api_up.get(), 0);
    assert!(metrics.kube_api_errors.get() >= 1);

    // Enforcement from disk is unaffected: an injected pod found in the kubelet's layout is
    // registered with its guard-mode file's mode, the node mode applying as the floor.
    let uid = "0f0e0d0c-0000-1111-2222-333344445555";
    let injector_dir = dir
        .path()
        .join("kubelet/pods")
        .join(uid)
        .join(kubelet::INJECTOR_DIR);
    std::fs::create_dir_all(&injector_dir).expect("mkdir");
    std::fs::write(injector_dir.join(kubelet::INJECTOR_FILE), b"\x7fELF").expect("injector");
    std::fs::write(injector_dir.join(kubelet::MODE_FILE), "enforce").expect("mode file");
    let mut on_disk: BTreeMap<String, kubelet::ProtectedPod> =
        kubelet::scan(&dir.path().join("kubelet")).expect("scan");
    directory.apply_modes(&mut on_disk);
    assert_eq!(on_disk[uid].mode, Some(Mode::Enforce));
    let (injectors, _) = protect::desired(&on_disk, Mode::Audit);
    assert_eq!(
        injectors.get(&on_disk[uid].injector.1).map(|p| p.mode),
        Some(Mode::Enforce.abi())
    );

    // Audit lines still come out, naming the pod by uid.
    let mut sink = AuditSink::new(
        NODE,
        Clock::with_offset(0),
        Vec::new(),
        Arc::clone(&metrics),
        directory,
        None,
    );
    let record = sink.process(&ptrace_denial(), Some(&identity(uid)));
    assert_eq!(record.pod.as_deref(), Some(uid));
    assert_eq!(record.namespace, None);
    assert_eq!(String::from_utf8_lossy(sink.out()).lines().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_watch_api_server_error_is_reported_then_cleared_on_recovery() {
    let api = start_api();
    let dir = tempfile::tempdir().expect("tempdir");
    let uid = insert_pod(&api, pod("api-1", NODE, injected("audit")));
    let client = client_for(&api, dir.path()).await;
    // Forbidden, as with RBAC missing `list` on pods (5xx are retried inside the client).
    api.inject_failure("GET", "/api/v1/pods", 403, 1);
    let metrics = Arc::new(Metrics::default());
    let (directory, _task) = spawn_watch(client, &metrics);

    eventually("the reported failure", || async {
        directory.last_error().is_some()
    })
    .await;
    let error = directory.last_error().unwrap_or_default();
    assert!(error.contains("spec.nodeName=node-1"), "{error}");
    assert!(error.contains("injected failure (testbed)"), "{error}");
    // The watcher backs off and lists again; the error clears.
    eventually("the recovered list", || async {
        directory.is_synced() && directory.last_error().is_none()
    })
    .await;
    assert!(directory.get(&uid).is_some());
    assert_eq!(metrics.kube_api_up.get(), 1);
    assert_eq!(metrics.kube_api_errors.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_source_unreadable_kubeconfig_names_the_file() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("absent-kubeconfig");
    let Err(error) = ApiSource::Kubeconfig(path.clone()).client().await else {
        panic!("no kubeconfig, no client");
    };
    let text = pods::error_chain(&error);
    assert!(
        text.starts_with(&format!("read kubeconfig {}", path.display())),
        "{text}"
    );
}

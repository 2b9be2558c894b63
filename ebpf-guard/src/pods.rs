//! The pods of this node as the API server describes them: uid → namespace, name, containers,
//! the webhook's injection marker and the pod's guard-mode annotation.
//!
//! The agent lists and watches pods with the field selector `spec.nodeName=<node>` (kube-rs
//! `watcher`, which relists on 410 and backs off on errors) and keeps a [`PodDirectory`]. The
//! directory only adds to what the kubelet's disk layout gives ([`crate::kubelet`]): names for
//! audit events, and a per-pod mode that can only make the guard stricter. Without an API
//! server, or while it is unreachable, the agent enforces from disk alone and says what failed.
//!
//! # Security
//! Pod objects are written by whoever can create pods: annotations are parsed strictly and a
//! pod's mode is combined with the node's and the `guard-mode` file's so that the strictest
//! wins; names from the API only label audit events and never decide access.
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use kube::runtime::{WatchStreamExt as _, watcher::Event};

use crate::config::Mode;
use crate::kubelet::ProtectedPod;
use crate::metrics::Metrics;

/// Annotation the webhook sets on every pod it mutated (value: the webhook's version).
pub const INJECTED_ANNOTATION: &str = "strongroom.dev/injected";
/// Annotation choosing the guard mode for a pod (`enforce` or `audit`).
pub const GUARD_MODE_ANNOTATION: &str = "strongroom.dev/guard-mode";

/// Failures to reach the API server.
#[derive(Debug, thiserror::Error)]
pub enum PodsError {
    /// The kubeconfig file could not be read or parsed.
    #[error("read kubeconfig {path}")]
    ReadKubeconfig {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The in-cluster configuration (service-account token, CA, service host) is unusable.
    #[error("load in-cluster kubernetes configuration")]
    LoadInCluster(#[source] kube::config::InClusterError),
    /// The HTTP client could not be built from the configuration.
    #[error("build kubernetes client")]
    BuildClient(#[source] kube::Error),
}

/// One container of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Container name from the pod spec.
    pub name: String,
    /// Runtime container id without the `containerd://` style prefix, once the kubelet reported it.
    pub id: Option<String>,
}

/// What the API server says about one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    /// Pod uid.
    pub uid: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Containers (init, app and ephemeral) with their runtime ids when known.
    pub containers: Vec<ContainerInfo>,
    /// Mode from [`GUARD_MODE_ANNOTATION`], if valid.
    pub mode: Option<Mode>,
    /// Whether the webhook marked the pod as injected ([`INJECTED_ANNOTATION`]).
    pub injected: bool,
    /// Whether the pod's phase is `Running`.
    pub running: bool,
}

impl PodInfo {
    /// Extracts what the guard needs from a pod; `None` without uid, name or namespace.
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let meta = &pod.metadata;
        let annotations = meta.annotations.as_ref();
        let annotation = |key: &str| annotations.and_then(|a| a.get(key));
        let mut containers: Vec<ContainerInfo> = Vec::new();
        let spec = pod.spec.as_ref();
        let names = spec
            .into_iter()
            .flat_map(|s| s.init_containers.iter().flatten().map(|c| &c.name))
            .chain(
                spec.into_iter()
                    .flat_map(|s| s.containers.iter().map(|c| &c.name)),
            )
            .chain(
                spec.into_iter()
                    .flat_map(|s| s.ephemeral_containers.iter().flatten().map(|c| &c.name)),
            );
        for name in names {
            containers.push(ContainerInfo {
                name: name.clone(),
                id: None,
            });
        }
        let status = pod.status.as_ref();
        let statuses = status
            .into_iter()
            .flat_map(|s| s.init_container_statuses.iter().flatten())
            .chain(
                status
                    .into_iter()
                    .flat_map(|s| s.container_statuses.iter().flatten()),
            )
            .chain(
                status
                    .into_iter()
                    .flat_map(|s| s.ephemeral_container_statuses.iter().flatten()),
            );
        for container_status in statuses {
            let id = container_status
                .container_id
                .as_deref()
                .map(strip_runtime_prefix)
                .filter(|id| !id.is_empty())
                .map(str::to_owned);
            match containers
                .iter_mut()
                .find(|c| c.name == container_status.name)
            {
                Some(container) => container.id = id,
                None => containers.push(ContainerInfo {
                    name: container_status.name.clone(),
                    id,
                }),
            }
        }
        Some(Self {
            uid: meta.uid.clone()?,
            namespace: meta.namespace.clone()?,
            name: meta.name.clone()?,
            containers,
            mode: annotation(GUARD_MODE_ANNOTATION).and_then(|m| Mode::parse(m.trim())),
            injected: annotation(INJECTED_ANNOTATION).is_some(),
            running: status.and_then(|s| s.phase.as_deref()) == Some("Running"),
        })
    }

    /// The name of the container with runtime id `id` (as found in the cgroup path).
    pub fn container_name(&self, id: &str) -> Option<&str> {
        self.containers
            .iter()
            .find(|c| c.id.as_deref() == Some(id))
            .map(|c| c.name.as_str())
    }
}

/// `containerd://abc…` → `abc…` (also `cri-o://`, `docker://`).
fn strip_runtime_prefix(id: &str) -> &str {
    id.split_once("://").map_or(id, |(_, rest)| rest)
}

#[derive(Debug, Default)]
struct DirectoryState {
    pods: HashMap<String, PodInfo>,
    synced: bool,
    last_error: Option<String>,
}

/// The node's pods by uid, shared between the watch task and the agent loop.
#[derive(Clone, Debug, Default)]
pub struct PodDirectory {
    state: Arc<RwLock<DirectoryState>>,
}

impl PodDirectory {
    /// An empty directory (no API server, or not listed yet).
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, DirectoryState> {
        // A panic elsewhere cannot leave the map half-updated in a way that matters here.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, DirectoryState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The pod with this uid, if the API server reported it.
    pub fn get(&self, uid: &str) -> Option<PodInfo> {
        self.read().pods.get(uid).cloned()
    }

    /// How many pods are known.
    pub fn len(&self) -> usize {
        self.read().pods.len()
    }

    /// Whether no pod is known.
    pub fn is_empty(&self) -> bool {
        self.read().pods.is_empty()
    }

    /// True once a complete list arrived (it may be stale while [`last_error`](Self::last_error)
    /// is set).
    pub fn is_synced(&self) -> bool {
        self.read().synced
    }

    /// The last failure talking to the API server, cleared by the next list or change that
    /// arrives.
    pub fn last_error(&self) -> Option<String> {
        self.read().last_error.clone()
    }

    /// Raises each on-disk pod's mode to its annotation's mode where that is stricter
    /// (`None < audit < enforce`, so `max` keeps the strictest request).
    pub fn apply_modes(&self, pods: &mut BTreeMap<String, ProtectedPod>) {
        let state = self.read();
        for (uid, pod) in pods.iter_mut() {
            if let Some(info) = state.pods.get(uid) {
                pod.mode = pod.mode.max(info.mode);
            }
        }
    }

    /// Uids of pods the webhook marked as injected.
    pub fn injected_uids(&self) -> Vec<String> {
        let state = self.read();
        let mut uids: Vec<String> = state
            .pods
            .values()
            .filter(|p| p.injected)
            .map(|p| p.uid.clone())
            .collect();
        uids.sort();
        uids
    }

    /// Running pods the webhook marked as injected whose injector the disk scan did not find:
    /// a sign that `--kubelet-root` does not point at the kubelet's directory, or that the
    /// init container did not copy vault-env. Sorted by uid.
    pub fn missing_on_disk(&self, on_disk: &BTreeMap<String, ProtectedPod>) -> Vec<PodInfo> {
        let state = self.read();
        let mut missing: Vec<PodInfo> = state
            .pods
            .values()
            .filter(|p| p.injected && p.running && !on_disk.contains_key(&p.uid))
            .cloned()
            .collect();
        missing.sort_by(|a, b| a.uid.cmp(&b.uid));
        missing
    }

    fn replace(&self, pods: HashMap<String, PodInfo>) {
        let mut state = self.write();
        state.pods = pods;
        state.synced = true;
        state.last_error = None;
    }

    fn upsert(&self, info: PodInfo) {
        self.write().pods.insert(info.uid.clone(), info);
    }

    fn remove(&self, uid: &str) {
        self.write().pods.remove(uid);
    }

    fn failed(&self, message: String) {
        self.write().last_error = Some(message);
    }

    /// Clears the last error; true if there was one.
    fn recovered(&self) -> bool {
        self.write().last_error.take().is_some()
    }
}

/// Applies watcher events to a directory; a relist is buffered until complete, so lookups
/// keep answering from the previous list meanwhile.
#[derive(Debug)]
pub struct DirectoryUpdater {
    directory: PodDirectory,
    relist: Option<HashMap<String, PodInfo>>,
}

impl DirectoryUpdater {
    /// Updates `directory`.
    pub fn new(directory: PodDirectory) -> Self {
        Self {
            directory,
            relist: None,
        }
    }

    /// Applies one watcher event.
    pub fn apply(&mut self, event: Event<Pod>) {
        match event {
            Event::Init => self.relist = Some(HashMap::new()),
            Event::InitApply(pod) => {
                if let (Some(relist), Some(info)) = (self.relist.as_mut(), PodInfo::from_pod(&pod))
                {
                    relist.insert(info.uid.clone(), info);
                }
            }
            Event::InitDone => {
                let pods = self.relist.take().unwrap_or_default();
                self.directory.replace(pods);
            }
            Event::Apply(pod) => {
                if let Some(info) = PodInfo::from_pod(&pod) {
                    self.directory.upsert(info);
                }
            }
            Event::Delete(pod) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    self.directory.remove(uid);
                }
            }
        }
    }
}

/// The field selector for the pods scheduled on `node`.
pub fn node_selector(node: &str) -> String {
    format!("spec.nodeName={node}")
}

/// Where the agent finds its API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiSource {
    /// A kubeconfig file (`--kubeconfig`/`KUBECONFIG`).
    Kubeconfig(std::path::PathBuf),
    /// The pod's service account (`KUBERNETES_SERVICE_HOST` is set).
    InCluster,
}

impl ApiSource {
    /// The configured source: a kubeconfig wins, else in-cluster when the kubelet set
    /// `KUBERNETES_SERVICE_HOST`, else none (disk only).
    pub fn detect(kubeconfig: Option<&Path>) -> Option<Self> {
        match kubeconfig {
            Some(path) => Some(Self::Kubeconfig(path.to_owned())),
            None => std::env::var_os("KUBERNETES_SERVICE_HOST").map(|_| Self::InCluster),
        }
    }

    /// Builds a client. Needs a tokio runtime; the process must have installed its rustls
    /// crypto provider (the agent installs ring's at start).
    pub async fn client(&self) -> Result<kube::Client, PodsError> {
        let config = match self {
            Self::Kubeconfig(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                    PodsError::ReadKubeconfig {
                        path: path.display().to_string(),
                        source,
                    }
                })?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                    .await
                    .map_err(|source| PodsError::ReadKubeconfig {
                        path: path.display().to_string(),
                        source,
                    })?
            }
            Self::InCluster => kube::Config::incluster().map_err(PodsError::LoadInCluster)?,
        };
        kube::Client::try_from(config).map_err(PodsError::BuildClient)
    }
}

/// Lists and watches the pods on `node` into `directory` until the task is dropped. Errors
/// are logged, recorded in the directory and counted; the watcher retries with backoff.
pub async fn watch(
    client: kube::Client,
    node: String,
    directory: PodDirectory,
    metrics: Arc<Metrics>,
) {
    let api: kube::Api<Pod> = kube::Api::all(client);
    let selector = node_selector(&node);
    let config = watcher::Config::default().fields(&selector);
    let mut updater = DirectoryUpdater::new(directory.clone());
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                let done = matches!(event, Event::InitDone);
                // `Init` is emitted before the list request: it proves nothing about the server.
                let answered = !matches!(event, Event::Init);
                updater.apply(event);
                if answered {
                    metrics.kube_api_up.set(1);
                    if directory.recovered() {
                        tracing::info!(field_selector = %selector, "pod watch on the API server recovered");
                    }
                }
                if done {
                    tracing::info!(
                        pods = directory.len(),
                        injected = directory.injected_uids().len(),
                        field_selector = %selector,
                        "pods on this node listed from the API server"
                    );
                }
                metrics
                    .kube_pods
                    .set(i64::try_from(directory.len()).unwrap_or(i64::MAX));
            }
            Err(error) => {
                let message = format!(
                    "list/watch pods with fieldSelector {selector} failed: {}",
                    error_chain(&error)
                );
                metrics.kube_api_up.set(0);
                metrics.kube_api_errors.inc();
                tracing::warn!(
                    error = %message,
                    "API server unavailable: audit events lack pod names and annotation modes; enforcement continues from the kubelet's disk layout; retrying"
                );
                directory.failed(message);
            }
        }
    }
}

/// `error: cause: cause…`, each source once.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const UID: &str = "0f0e0d0c-0000-1111-2222-333344445555";

    fn pod(annotations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": "api-7d9f", "namespace": "payments", "uid": UID,
                "annotations": annotations,
            },
            "spec": {
                "nodeName": "node-1",
                "initContainers": [{"name": "copy-vault-env"}],
                "containers": [{"name": "app"}, {"name": "sidecar"}],
            },
            "status": {
                "containerStatuses": [
                    {"name": "app", "containerID": "containerd://c0ffee", "image": "i",
                     "imageID": "", "ready": true, "restartCount": 0},
                ],
            },
        }))
        .expect("pod")
    }

    #[test]
    fn pod_info_annotations_and_container_ids_are_extracted() {
        let info = PodInfo::from_pod(&pod(json!({
            INJECTED_ANNOTATION: "0.1.0",
            GUARD_MODE_ANNOTATION: " audit ",
        })))
        .expect("info");
        assert_eq!(info.namespace, "payments");
        assert_eq!(info.name, "api-7d9f");
        assert!(info.injected);
        assert_eq!(info.mode, Some(Mode::Audit));
        assert_eq!(info.container_name("c0ffee"), Some("app"));
        assert_eq!(info.container_name("dead"), None);
        let names: Vec<&str> = info.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["copy-vault-env", "app", "sidecar"]);
    }

    #[test]
    fn pod_info_invalid_mode_annotation_is_ignored() {
        let info = PodInfo::from_pod(&pod(json!({ GUARD_MODE_ANNOTATION: "off" }))).expect("info");
        assert_eq!(info.mode, None);
        assert!(!info.injected);
    }

    fn disk_pod(mode: Option<Mode>) -> ProtectedPod {
        ProtectedPod {
            uid: UID.to_owned(),
            injector: (
                std::path::PathBuf::from("/x"),
                crate::abi::InodeKey {
                    ino: 1,
                    dev: 2,
                    pad: 0,
                },
            ),
            tokens: Vec::new(),
            mode,
        }
    }

    #[test]
    fn apply_modes_annotation_only_tightens_file_mode() {
        let directory = PodDirectory::new();
        let mut updater = DirectoryUpdater::new(directory.clone());
        updater.apply(Event::Apply(pod(
            json!({ GUARD_MODE_ANNOTATION: "enforce" }),
        )));
        let mut pods = BTreeMap::from([(UID.to_owned(), disk_pod(Some(Mode::Audit)))]);
        directory.apply_modes(&mut pods);
        assert_eq!(pods[UID].mode, Some(Mode::Enforce));

        updater.apply(Event::Apply(pod(json!({ GUARD_MODE_ANNOTATION: "audit" }))));
        let mut pods = BTreeMap::from([(UID.to_owned(), disk_pod(Some(Mode::Enforce)))]);
        directory.apply_modes(&mut pods);
        assert_eq!(pods[UID].mode, Some(Mode::Enforce), "audit never weakens");
        let mut pods = BTreeMap::from([(UID.to_owned(), disk_pod(None))]);
        directory.apply_modes(&mut pods);
        assert_eq!(pods[UID].mode, Some(Mode::Audit));
    }

    #[test]
    fn missing_on_disk_reports_running_injected_pods_without_injector() {
        let directory = PodDirectory::new();
        let mut updater = DirectoryUpdater::new(directory.clone());
        let mut running = pod(json!({ INJECTED_ANNOTATION: "0.1.0" }));
        if let Some(status) = running.status.as_mut() {
            status.phase = Some("Running".to_owned());
        }
        updater.apply(Event::Apply(running));
        let missing = directory.missing_on_disk(&BTreeMap::new());
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].name, "api-7d9f");
        let on_disk = BTreeMap::from([(UID.to_owned(), disk_pod(None))]);
        assert!(directory.missing_on_disk(&on_disk).is_empty());
        // Pending pods and pods the webhook did not mark are not expected on disk.
        updater.apply(Event::Apply(pod(json!({ INJECTED_ANNOTATION: "0.1.0" }))));
        assert!(directory.missing_on_disk(&BTreeMap::new()).is_empty());
    }

    #[test]
    fn updater_relist_replaces_only_when_complete() {
        let directory = PodDirectory::new();
        let mut updater = DirectoryUpdater::new(directory.clone());
        updater.apply(Event::Apply(pod(json!({}))));
        updater.apply(Event::Init);
        assert_eq!(directory.len(), 1, "old list answers during a relist");
        assert!(!directory.is_synced());
        updater.apply(Event::InitDone);
        assert!(directory.is_empty(), "the pod was not in the new list");
        assert!(directory.is_synced());
        updater.apply(Event::Apply(pod(json!({}))));
        updater.apply(Event::Delete(pod(json!({}))));
        assert!(directory.get(UID).is_none());
    }

    #[test]
    fn strip_runtime_prefix_handles_known_runtimes() {
        assert_eq!(strip_runtime_prefix("containerd://abc"), "abc");
        assert_eq!(strip_runtime_prefix("cri-o://abc"), "abc");
        assert_eq!(strip_runtime_prefix("abc"), "abc");
    }
}

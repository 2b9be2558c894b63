//! The `run` loop: LSM check, load/pin (or reuse), the API server side (pod watch, Event
//! recorder), registration rescans, audit event drain, health and metrics.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use prometheus_client::registry::Registry;
use tokio::signal::unix::{SignalKind, signal};

use ebpf_guard::abi::{CONFIG_HOST_BYPASS, GuardConfig, RawEvent};
use ebpf_guard::backfill;
use ebpf_guard::cgroup::{self, CgroupIndex};
use ebpf_guard::config::RunConfig;
use ebpf_guard::event::{AuditRecord, AuditSink, Clock};
use ebpf_guard::kubelet;
use ebpf_guard::loader::{self, Guard, LoadOptions, LsmSupport};
use ebpf_guard::metrics::Metrics;
use ebpf_guard::pods::{self, ApiSource, PodDirectory};
use ebpf_guard::protect;
use ebpf_guard::recorder::{self, EventSender, Reporter};
use ebpf_guard::server::{self, Health};

/// How often the ring buffer is drained.
const DRAIN_PERIOD: std::time::Duration = std::time::Duration::from_millis(20);

/// Runs the agent until SIGTERM/SIGINT. Pinned programs stay attached after it exits.
pub async fn run(config: RunConfig) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let health = Arc::new(Health::new("starting"));
    let listener = server::bind(config.listen)
        .await
        .with_context(|| format!("bind {}", config.listen))?;
    tokio::spawn(server::serve(
        listener,
        Arc::clone(&health),
        Arc::new(registry),
    ));

    let mut terminate = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("install SIGINT handler")?;

    let support = loader::probe_lsm(std::path::Path::new(loader::LSM_PATH));
    if support != LsmSupport::Usable {
        let message = support.message();
        tracing::error!(%message, "guard cannot enforce on this node; staying not ready");
        health.set(false, &message);
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        return Ok(());
    }

    let cgroup_root = match &config.cgroup_root {
        Some(root) => root.clone(),
        None => cgroup::find_cgroup2_root().context("find the cgroup v2 mount")?,
    };
    let mut cgroups = CgroupIndex::new(cgroup_root.clone());
    cgroups.refresh();

    let mut guard = Guard::load(&LoadOptions {
        pin_dir: config.pin_dir.clone(),
        lsm: true,
        max_entries: Vec::new(),
    })
    .context("load the guard")?;
    tracing::info!(
        attached = ?guard.attached,
        reused = ?guard.reused,
        pin_dir = %config.pin_dir.display(),
        "guard programs in place"
    );

    let kubepods = cgroup::find_kubepods(&cgroup_root);
    let guard_config = GuardConfig {
        kubepods_cg: kubepods.as_ref().map_or(0, |k| k.1),
        kubepods_level: kubepods.as_ref().map_or(0, |k| k.2),
        flags: CONFIG_HOST_BYPASS,
    };
    match &kubepods {
        Some((path, id, level)) => {
            tracing::info!(path = %path.display(), id, level, "kubepods cgroup tree found")
        }
        None => tracing::warn!(
            root = %cgroup_root.display(),
            "no kubepods cgroup tree: every task in the initial PID namespace counts as host"
        ),
    }
    guard
        .set_config(guard_config)
        .context("write guard config")?;

    let (directory, event_sender) = start_api(&config, &metrics).await;
    let mut pods = BTreeMap::new();
    let mut api = ApiView {
        directory: directory.clone(),
        reported_missing: HashSet::new(),
    };
    rescan(
        &mut guard,
        &config,
        &mut cgroups,
        &mut pods,
        &mut api,
        &metrics,
    )?;
    if let Some((kubepods_dir, _, _)) = &kubepods {
        backfill_running(&mut guard, &config, &cgroups, &pods, kubepods_dir)?;
    }
    let mut events = guard.take_events().context("ring buffer already taken")?;

    health.set(
        true,
        &format!("enforcing (node mode {})", config.mode.as_str()),
    );
    metrics.ready.set(1);
    let mut sink = AuditSink::new(
        &config.node_name,
        Clock::now(),
        std::io::stdout(),
        Arc::clone(&metrics),
        directory.clone(),
        event_sender,
    );
    let mut ticker = tokio::time::interval(config.rescan);
    let mut drain_tick = tokio::time::interval(DRAIN_PERIOD);
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = ticker.tick() => {
                if let Err(error) = rescan(&mut guard, &config, &mut cgroups, &mut pods, &mut api, &metrics) {
                    tracing::error!(error = %format!("{error:#}"), "rescan failed");
                }
            }
            // Reading the ring buffer's positions is cheap; polling it keeps this module free
            // of the unsafe fd registration an async readiness wait would need.
            _ = drain_tick.tick() => {
                drain(&mut events, &mut sink, &mut cgroups, &pods);
            }
        }
    }
    tracing::info!("agent stopping; pinned programs stay attached");
    Ok(())
}

/// Connects to the API server when one is configured: starts the pod watch (names and
/// annotation modes) and, with `--kube-events`, the Event recorder. Any failure leaves the
/// agent enforcing from the kubelet's disk layout, with the reason logged.
async fn start_api(
    config: &RunConfig,
    metrics: &Arc<Metrics>,
) -> (PodDirectory, Option<EventSender>) {
    let directory = PodDirectory::new();
    let Some(source) = ApiSource::detect(config.kubeconfig.as_deref()) else {
        tracing::info!(
            "no API server configured (no --kubeconfig, not in a cluster): pods come from the kubelet's disk layout only and audit events name pods by uid"
        );
        if config.kube_events {
            tracing::warn!(
                "--kube-events needs an API server; no Kubernetes Events will be posted"
            );
        }
        return (directory, None);
    };
    let client = match source.client().await {
        Ok(client) => client,
        Err(error) => {
            let error = anyhow::Error::from(error);
            tracing::error!(
                error = %format!("{error:#}"),
                ?source,
                "cannot build the Kubernetes client: enforcing from the kubelet's disk layout only, without pod names, annotation modes or Kubernetes Events"
            );
            return (directory, None);
        }
    };
    tokio::spawn(pods::watch(
        client.clone(),
        config.node_name.clone(),
        directory.clone(),
        Arc::clone(metrics),
    ));
    let sender = config.kube_events.then(|| {
        let (sender, queue) = recorder::queue(recorder::QUEUE_CAPACITY, Arc::clone(metrics));
        tokio::spawn(recorder::run(
            client,
            Reporter::for_node(&config.node_name),
            queue,
            config.kube_events_window,
            Arc::clone(metrics),
        ));
        tracing::info!(
            window = ?config.kube_events_window,
            "Kubernetes Events enabled (aggregated per pod, hook and decision)"
        );
        sender
    });
    (directory, sender)
}

/// Claims containers that were running before the guard (see `ebpf_guard::backfill`).
fn backfill_running(
    guard: &mut Guard,
    config: &RunConfig,
    cgroups: &CgroupIndex,
    pods: &BTreeMap<String, kubelet::ProtectedPod>,
    kubepods_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let mut running = HashMap::new();
    for (cg, identity) in cgroups.entries() {
        let path = cgroups.path_of(identity);
        if identity.container_id.is_none() || !path.starts_with(kubepods_dir) {
            continue;
        }
        let (mode, tag) = identity
            .pod_uid
            .as_ref()
            .and_then(|uid| pods.get(uid))
            .map_or((0, 0), |pod| {
                (
                    config.mode.stricter(pod.mode).abi(),
                    kubelet::pod_tag(&pod.uid),
                )
            });
        running.insert(cg, (path, mode, tag));
    }
    let claimed = backfill::claim_running(guard, &running, std::path::Path::new("/proc"))
        .context("backfill running containers")?;
    for (cg, added) in claimed {
        let protected = running.get(&cg).is_some_and(|entry| entry.1 != 0);
        tracing::info!(
            cgroup = cg,
            processes = added,
            protected,
            "running container claimed (backfill)"
        );
        if protected {
            tracing::info!(cgroup = cg, "container protected");
        }
    }
    Ok(())
}

/// What rescans use from the API server: the pod directory, and which webhook-marked pods
/// were already reported missing on disk (reported once each).
struct ApiView {
    directory: PodDirectory,
    reported_missing: HashSet<String>,
}

fn rescan(
    guard: &mut Guard,
    config: &RunConfig,
    cgroups: &mut CgroupIndex,
    pods: &mut BTreeMap<String, kubelet::ProtectedPod>,
    api: &mut ApiView,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    *pods = kubelet::scan(&config.kubelet_root)
        .with_context(|| format!("scan {}", config.kubelet_root.display()))?;
    // The pod's annotation can only tighten what the node and the guard-mode file ask for.
    api.directory.apply_modes(pods);
    let missing = api.directory.missing_on_disk(pods);
    for pod in &missing {
        if api.reported_missing.insert(pod.uid.clone()) {
            tracing::warn!(
                namespace = %pod.namespace,
                pod = %pod.name,
                pod_uid = %pod.uid,
                kubelet_root = %config.kubelet_root.display(),
                "running pod marked injected by the webhook has no vault-env under the kubelet root: check --kubelet-root and the pod's copy-vault-env init container; until the guard finds it there, the pod is not protected"
            );
        }
    }
    api.reported_missing
        .retain(|uid| missing.iter().any(|pod| &pod.uid == uid));
    cgroups.refresh();
    let changes = protect::reconcile(guard, pods, config.mode, Some(cgroups))?;
    for cg in &changes.protected {
        let identity = cgroups.get(*cg);
        tracing::info!(
            cgroup = cg,
            pod_uid = ?identity.and_then(|i| i.pod_uid.as_deref()),
            container = ?identity.and_then(|i| i.container_id.as_deref()),
            "container protected"
        );
    }
    if changes != protect::Changes::default() {
        tracing::info!(
            registered = changes.registered,
            unregistered = changes.unregistered,
            modes_updated = changes.modes_updated,
            containers_dropped = changes.containers_dropped,
            pods = pods.len(),
            "registrations updated"
        );
    }
    metrics
        .protected_pods
        .set(i64::try_from(pods.len()).unwrap_or(i64::MAX));
    let stats = guard.stats()?;
    metrics
        .ringbuf_dropped
        .set(i64::try_from(stats.ringbuf_dropped).unwrap_or(i64::MAX));
    metrics
        .lineage_full
        .set(i64::try_from(stats.lineage_full).unwrap_or(i64::MAX));
    Ok(())
}

fn drain(
    ring: &mut RingBuf<MapData>,
    sink: &mut AuditSink<std::io::Stdout>,
    cgroups: &mut CgroupIndex,
    pods: &BTreeMap<String, kubelet::ProtectedPod>,
) {
    while let Some(item) = ring.next() {
        let Some(raw) = RawEvent::from_bytes(&item) else {
            tracing::warn!(len = item.len(), "short ring buffer record");
            continue;
        };
        let identity = cgroups.resolve(AuditRecord::identity_cgroup(&raw));
        let record = sink.process(&raw, identity.as_ref());
        if !AuditRecord::is_access_decision(&raw) {
            let known = record
                .pod_uid
                .as_ref()
                .is_some_and(|uid| pods.contains_key(uid));
            tracing::info!(
                cgroup = raw.lineage_cg,
                pid = raw.subject_pid,
                comm = ?record.subject.comm,
                pod = ?record.pod,
                namespace = ?record.namespace,
                container = ?record.container,
                known_pod = known,
                "container protected"
            );
        }
    }
}

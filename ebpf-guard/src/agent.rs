//! The `run` loop: LSM check, load/pin (or reuse), registration rescans, audit event drain,
//! health and metrics.
use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::sync::Arc;

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use prometheus_client::registry::Registry;
use tokio::signal::unix::{SignalKind, signal};

use ebpf_guard::abi::{
    CONFIG_HOST_BYPASS, DECISION_ALLOW, GuardConfig, HOOK_LINEAGE_START, RawEvent,
};
use ebpf_guard::backfill;
use ebpf_guard::cgroup::{self, CgroupIndex};
use ebpf_guard::config::RunConfig;
use ebpf_guard::event::{AuditRecord, Clock, decision_name, hook_name};
use ebpf_guard::kubelet;
use ebpf_guard::loader::{self, Guard, LoadOptions, LsmSupport};
use ebpf_guard::metrics::Metrics;
use ebpf_guard::protect;
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

    if config.kube_events {
        // Not built in yet: audit events go to stdout and metrics only. Said loudly so
        // nobody mistakes the flag for a working Event sink.
        tracing::warn!(
            "--kube-events: Kubernetes Events are not implemented in this build; audit events go to stdout and /metrics only"
        );
    }
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

    let mut pods = BTreeMap::new();
    rescan(&mut guard, &config, &mut cgroups, &mut pods, &metrics)?;
    if let Some((kubepods_dir, _, _)) = &kubepods {
        backfill_running(&mut guard, &config, &cgroups, &pods, kubepods_dir)?;
    }
    let mut events = guard.take_events().context("ring buffer already taken")?;

    health.set(
        true,
        &format!("enforcing (node mode {})", config.mode.as_str()),
    );
    metrics.ready.set(1);
    let clock = Clock::now();
    let mut ticker = tokio::time::interval(config.rescan);
    let mut drain_tick = tokio::time::interval(DRAIN_PERIOD);
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = ticker.tick() => {
                if let Err(error) = rescan(&mut guard, &config, &mut cgroups, &mut pods, &metrics) {
                    tracing::error!(error = %format!("{error:#}"), "rescan failed");
                }
            }
            // Reading the ring buffer's positions is cheap; polling it keeps this module free
            // of the unsafe fd registration an async readiness wait would need.
            _ = drain_tick.tick() => {
                drain(&mut events, &config, &clock, &mut cgroups, &pods, &metrics);
            }
        }
    }
    tracing::info!("agent stopping; pinned programs stay attached");
    Ok(())
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

fn rescan(
    guard: &mut Guard,
    config: &RunConfig,
    cgroups: &mut CgroupIndex,
    pods: &mut BTreeMap<String, kubelet::ProtectedPod>,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    *pods = kubelet::scan(&config.kubelet_root)
        .with_context(|| format!("scan {}", config.kubelet_root.display()))?;
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
    config: &RunConfig,
    clock: &Clock,
    cgroups: &mut CgroupIndex,
    pods: &BTreeMap<String, kubelet::ProtectedPod>,
    metrics: &Metrics,
) {
    let stdout = std::io::stdout();
    while let Some(item) = ring.next() {
        let Some(raw) = RawEvent::from_bytes(&item) else {
            tracing::warn!(len = item.len(), "short ring buffer record");
            continue;
        };
        metrics.count_event(hook_name(raw.hook), decision_name(raw.decision));
        let identity = cgroups.resolve(AuditRecord::identity_cgroup(&raw));
        let record = AuditRecord::new(&raw, &config.node_name, clock, identity.as_ref(), &|_| None);
        if raw.hook == HOOK_LINEAGE_START && raw.decision == DECISION_ALLOW {
            let known = record
                .pod_uid
                .as_ref()
                .is_some_and(|uid| pods.contains_key(uid));
            tracing::info!(
                cgroup = raw.lineage_cg,
                pid = raw.subject_pid,
                comm = ?record.subject.comm,
                pod = ?record.pod_uid,
                container = ?record.container,
                known_pod = known,
                "container protected"
            );
            continue;
        }
        let mut out = stdout.lock();
        // A closed stdout must not stop enforcement bookkeeping; the counter still moved.
        let _ = writeln!(out, "{}", record.to_json());
        let _ = out.flush();
    }
}

//! Kubernetes Events for audit records (`--kube-events`): one `events.k8s.io/v1` Event on the
//! pod per series of identical attempts, posted off the hot path.
//!
//! The ring-buffer drain hands records to a bounded queue ([`EventSender::offer`] never waits;
//! a full queue drops the Event and counts it). One task ([`run`]) aggregates them: the first
//! record of a `(pod, hook, decision)` series is created at once; repeats only bump a counter,
//! written as `series.count` by at most one PATCH per window. A loop of denials therefore costs
//! the API server a create plus one patch a window, and the number of open series is capped.
//!
//! # Security
//! `comm` values are chosen by the processes themselves; they appear in the note only in
//! escaped (`{:?}`) form and are serialized as JSON strings. Notes carry hook, decision, pids,
//! uid and comms, never file contents, environment or tokens.
use std::collections::HashMap;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::event::AuditRecord;
use crate::metrics::Metrics;
use crate::pods::error_chain;

/// Reason of Events for denied attempts.
pub const REASON_DENIED: &str = "ExecAccessDenied";
/// Reason of Events for attempts allowed in audit mode.
pub const REASON_AUDITED: &str = "ExecAccessAudited";
/// `reportingController` of every Event.
pub const REPORTING_CONTROLLER: &str = "strongroom.dev/ebpf-guard";
/// Queue length between the drain loop and the recorder task.
pub const QUEUE_CAPACITY: usize = 1024;
/// Series open at once; records of further series are dropped (and counted) until some close.
pub const MAX_SERIES: usize = 512;
/// A series with no repeat for this long is closed; the next attempt starts a new Event.
pub const SERIES_IDLE: Duration = Duration::from_secs(6 * 60);
/// Longest wait for one API call, so a hung server cannot stall the recorder forever.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The drain loop's end of the queue.
#[derive(Clone, Debug)]
pub struct EventSender {
    tx: mpsc::Sender<AuditRecord>,
    metrics: Arc<Metrics>,
}

/// What [`EventSender::offer`] did with a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// Queued for the recorder.
    Queued,
    /// Not about a pod the API server named (or not an access decision): nothing to post.
    Skipped,
    /// The queue was full or closed: dropped and counted.
    Dropped,
}

impl EventSender {
    /// Queues `record` if it can become an Event; never waits.
    pub fn offer(&self, record: &AuditRecord) -> Offer {
        if !postable(record) {
            return Offer::Skipped;
        }
        match self.tx.try_send(record.clone()) {
            Ok(()) => Offer::Queued,
            Err(_) => {
                self.metrics.kube_events_dropped.inc();
                Offer::Dropped
            }
        }
    }
}

/// A bounded queue of `capacity` records; the receiver goes to [`run`].
pub fn queue(capacity: usize, metrics: Arc<Metrics>) -> (EventSender, mpsc::Receiver<AuditRecord>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (EventSender { tx, metrics }, rx)
}

/// Only denials and audits of pods whose namespace and name are known become Events.
fn postable(record: &AuditRecord) -> bool {
    matches!(record.decision, "deny" | "audit")
        && record.namespace.is_some()
        && record.pod.is_some()
        && record.pod_uid.is_some()
}

/// Who reports the Events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reporter {
    /// `reportingController`.
    pub controller: String,
    /// `reportingInstance` (at most 128 characters).
    pub instance: String,
}

impl Reporter {
    /// The guard on `node`.
    pub fn for_node(node: &str) -> Self {
        let mut instance = format!("ebpf-guard-{node}");
        instance.truncate(128);
        Self {
            controller: REPORTING_CONTROLLER.to_owned(),
            instance,
        }
    }
}

/// Identity of a series: identical attempts on one pod.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct SeriesKey {
    /// Pod uid.
    pub pod_uid: String,
    /// Hook name.
    pub hook: &'static str,
    /// Decision name.
    pub decision: &'static str,
}

/// An API call the recorder must make.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    /// Create `event` (the first of a series).
    Create {
        /// The series.
        key: SeriesKey,
        /// The Event.
        event: Box<Event>,
    },
    /// Raise the series count of the existing Event; if that fails, create `fallback` (same
    /// content, new name, carrying the series).
    Update {
        /// The series.
        key: SeriesKey,
        /// Namespace of the Event.
        namespace: String,
        /// Name of the Event.
        name: String,
        /// The new series state.
        series: EventSeries,
        /// Created instead when the Event cannot be patched (gone, or no `patch` right).
        fallback: Box<Event>,
    },
}

/// What [`Aggregator::observe`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Observed {
    /// A new series: make this call now.
    Start(Call),
    /// Counted into an open series; the next flush reports it.
    Folded,
    /// Too many open series: dropped.
    Suppressed,
}

#[derive(Debug)]
struct Series {
    namespace: String,
    name: String,
    /// Occurrences already written to the API server.
    reported: i32,
    /// Occurrences since the last write.
    pending: i32,
    last_observed: Timestamp,
    last_write: Instant,
    template: Event,
}

/// Folds audit records into Event series. Pure bookkeeping: time is passed in, calls are
/// returned, nothing here talks to the network.
#[derive(Debug)]
pub struct Aggregator {
    reporter: Reporter,
    window: Duration,
    max_series: usize,
    series: HashMap<SeriesKey, Series>,
    sequence: u64,
}

impl Aggregator {
    /// At most one update per series every `window`, at most `max_series` open series.
    pub fn new(reporter: Reporter, window: Duration, max_series: usize) -> Self {
        Self {
            reporter,
            window,
            max_series,
            series: HashMap::new(),
            sequence: 0,
        }
    }

    /// Takes one record (callers pass only [`postable`] ones; others are suppressed).
    pub fn observe(&mut self, record: &AuditRecord, now: Instant) -> Observed {
        let (Some(pod_uid), Some(namespace)) = (&record.pod_uid, &record.namespace) else {
            return Observed::Suppressed;
        };
        let key = SeriesKey {
            pod_uid: pod_uid.clone(),
            hook: record.hook,
            decision: record.decision,
        };
        let observed = observed_time(record);
        if let Some(series) = self.series.get_mut(&key) {
            series.pending = series.pending.saturating_add(1);
            series.last_observed = observed;
            return Observed::Folded;
        }
        if self.series.len() >= self.max_series {
            return Observed::Suppressed;
        }
        let event = self.event_for(record, observed);
        self.series.insert(
            key.clone(),
            Series {
                namespace: namespace.clone(),
                name: event.metadata.name.clone().unwrap_or_default(),
                reported: 1,
                pending: 0,
                last_observed: observed,
                last_write: now,
                template: event.clone(),
            },
        );
        Observed::Start(Call::Create {
            key,
            event: Box::new(event),
        })
    }

    /// Updates due at `now` (every series with repeats when `force`), and closes idle series.
    pub fn flush(&mut self, now: Instant, force: bool) -> Vec<Call> {
        let mut calls = Vec::new();
        for (key, series) in &mut self.series {
            let due = force || now.saturating_duration_since(series.last_write) >= self.window;
            if series.pending == 0 || !due {
                continue;
            }
            series.reported = series.reported.saturating_add(series.pending);
            series.pending = 0;
            series.last_write = now;
            let state = EventSeries {
                count: series.reported,
                last_observed_time: MicroTime(series.last_observed),
            };
            let mut fallback = series.template.clone();
            fallback.series = Some(state.clone());
            calls.push(Call::Update {
                key: key.clone(),
                namespace: series.namespace.clone(),
                name: series.name.clone(),
                series: state,
                fallback: Box::new(fallback),
            });
        }
        self.series.retain(|_, series| {
            series.pending > 0 || now.saturating_duration_since(series.last_write) < SERIES_IDLE
        });
        for call in &mut calls {
            if let Call::Update { fallback, .. } = call {
                fallback.metadata.name = Some(self.next_name(&fallback.metadata.name));
            }
        }
        calls
    }

    /// Points the series at a replacement Event (after an update fell back to a create).
    pub fn renamed(&mut self, key: &SeriesKey, name: String) {
        if let Some(series) = self.series.get_mut(key) {
            series.name = name;
        }
    }

    /// Open series.
    pub fn open_series(&self) -> usize {
        self.series.len()
    }

    fn next_name(&mut self, previous: &Option<String>) -> String {
        let pod = previous
            .as_deref()
            .and_then(|n| n.rsplit_once('.'))
            .map_or("pod", |(pod, _)| pod)
            .to_owned();
        self.name_for(&pod)
    }

    /// `<pod>.<unique hex>`, as client-go names Events (kept under the 253-character limit).
    fn name_for(&mut self, pod: &str) -> String {
        self.sequence = self.sequence.wrapping_add(1);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let pod: String = pod.chars().take(200).collect();
        format!("{pod}.{:x}", nanos.wrapping_add(u128::from(self.sequence)))
    }

    fn event_for(&mut self, record: &AuditRecord, observed: Timestamp) -> Event {
        let pod = record.pod.clone().unwrap_or_default();
        let denied = record.decision == "deny";
        Event {
            metadata: ObjectMeta {
                name: Some(self.name_for(&pod)),
                namespace: record.namespace.clone(),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(observed)),
            action: Some(action(record.hook).to_owned()),
            reason: Some(
                if denied {
                    REASON_DENIED
                } else {
                    REASON_AUDITED
                }
                .to_owned(),
            ),
            type_: Some(if denied { "Warning" } else { "Normal" }.to_owned()),
            note: Some(note(record)),
            regarding: Some(ObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Pod".to_owned()),
                namespace: record.namespace.clone(),
                name: Some(pod),
                uid: record.pod_uid.clone(),
                field_path: record
                    .container_name
                    .as_ref()
                    .map(|c| format!("spec.containers{{{c}}}")),
                ..ObjectReference::default()
            }),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(self.reporter.instance.clone()),
            ..Event::default()
        }
    }
}

/// The record's time, or now if it cannot be parsed.
fn observed_time(record: &AuditRecord) -> Timestamp {
    Timestamp::from_str(&record.time).unwrap_or_else(|_| Timestamp::now())
}

/// Machine-readable action per hook.
fn action(hook: &str) -> &'static str {
    match hook {
        "ptrace_access_check" => "AccessProcess",
        "bprm_check_security" => "RunInjector",
        "file_open" => "OpenServiceAccountToken",
        "task_kill" => "SignalProcess",
        _ => "Access",
    }
}

/// Human-readable note: what was attempted, by whom, on what.
pub fn note(record: &AuditRecord) -> String {
    let verb = if record.decision == "deny" {
        "denied"
    } else {
        "allowed (audit mode)"
    };
    let subject = format!(
        "{:?} (pid {}, uid {})",
        record.subject.comm, record.subject.pid, record.subject.uid
    );
    let target = record
        .target
        .as_ref()
        .map(|t| format!("{:?} (pid {})", t.comm, t.pid))
        .unwrap_or_else(|| "a protected process".to_owned());
    let container = record
        .container_name
        .as_deref()
        .map(|c| format!(" in container {c:?}"))
        .unwrap_or_default();
    let what = match record.hook {
        "ptrace_access_check" => format!("ptrace/proc access to {target}"),
        "bprm_check_security" => "running the injected vault-env".to_owned(),
        "file_open" => "opening the service-account token".to_owned(),
        "task_kill" => format!(
            "signal {} to {target}",
            record
                .signal
                .map_or_else(|| "?".to_owned(), |s| s.to_string())
        ),
        other => format!("{other} on {target}"),
    };
    let mut text = format!("{what}{container} by outside process {subject}: {verb}");
    // The API server rejects notes over 1 kB.
    text.truncate(1000);
    text
}

/// Posts Events for the records arriving on `queue` until it closes (then flushes pending
/// series and returns).
pub async fn run(
    client: kube::Client,
    reporter: Reporter,
    mut queue: mpsc::Receiver<AuditRecord>,
    window: Duration,
    metrics: Arc<Metrics>,
) {
    let mut aggregator = Aggregator::new(reporter, window, MAX_SERIES);
    let mut ticker = tokio::time::interval(window);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            record = queue.recv() => {
                let Some(record) = record else {
                    for call in aggregator.flush(Instant::now(), true) {
                        execute(&client, &mut aggregator, call, &metrics).await;
                    }
                    return;
                };
                match aggregator.observe(&record, Instant::now()) {
                    Observed::Start(call) => execute(&client, &mut aggregator, call, &metrics).await,
                    Observed::Folded => {
                        metrics.kube_events_aggregated.inc();
                    }
                    Observed::Suppressed => {
                        metrics.kube_events_dropped.inc();
                    }
                }
            }
            _ = ticker.tick() => {
                for call in aggregator.flush(Instant::now(), false) {
                    execute(&client, &mut aggregator, call, &metrics).await;
                }
            }
        }
    }
}

async fn execute(
    client: &kube::Client,
    aggregator: &mut Aggregator,
    call: Call,
    metrics: &Metrics,
) {
    match call {
        Call::Create { key, event } => {
            create(client, &key, &event, metrics).await;
        }
        Call::Update {
            key,
            namespace,
            name,
            series,
            fallback,
        } => {
            let api: kube::Api<Event> = kube::Api::namespaced(client.clone(), &namespace);
            let patch = serde_json::json!({ "series": series });
            let result = tokio::time::timeout(
                CALL_TIMEOUT,
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await;
            let error = match result {
                Ok(Ok(_)) => {
                    metrics.count_call("patch", true);
                    return;
                }
                Ok(Err(error)) => error_chain(&error),
                Err(_) => format!("no answer within {CALL_TIMEOUT:?}"),
            };
            metrics.count_call("patch", false);
            tracing::debug!(%namespace, event = %name, %error, "event series update failed; creating a new event");
            if create(client, &key, &fallback, metrics).await
                && let Some(new_name) = fallback.metadata.name.clone()
            {
                aggregator.renamed(&key, new_name);
            }
        }
    }
}

async fn create(client: &kube::Client, key: &SeriesKey, event: &Event, metrics: &Metrics) -> bool {
    let namespace = event.metadata.namespace.clone().unwrap_or_default();
    let api: kube::Api<Event> = kube::Api::namespaced(client.clone(), &namespace);
    let result =
        tokio::time::timeout(CALL_TIMEOUT, api.create(&PostParams::default(), event)).await;
    let error = match result {
        Ok(Ok(_)) => {
            metrics.count_call("create", true);
            return true;
        }
        Ok(Err(error)) => error_chain(&error),
        Err(_) => format!("no answer within {CALL_TIMEOUT:?}"),
    };
    metrics.count_call("create", false);
    tracing::warn!(
        %namespace,
        pod_uid = %key.pod_uid,
        hook = key.hook,
        decision = key.decision,
        %error,
        "posting a Kubernetes Event failed (the audit line on stdout still has it)"
    );
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Subject, Target};

    fn record(decision: &'static str) -> AuditRecord {
        AuditRecord {
            time: "2026-11-29T20:00:01.5Z".to_owned(),
            node: "node-1".to_owned(),
            namespace: Some("payments".to_owned()),
            pod: Some("api-7d9f".to_owned()),
            pod_uid: Some("0f0e0d0c-0000-1111-2222-333344445555".to_owned()),
            container: Some("c0ffee".to_owned()),
            container_name: Some("app".to_owned()),
            hook: "ptrace_access_check",
            decision,
            subject: Subject {
                pid: 4242,
                tid: 4242,
                comm: "cat".to_owned(),
                uid: 0,
            },
            target: Some(Target {
                pid: 100,
                comm: "canary_app".to_owned(),
            }),
            inode: None,
            signal: None,
            ptrace_mode: Some(0x11),
        }
    }

    fn aggregator(max_series: usize) -> Aggregator {
        Aggregator::new(
            Reporter::for_node("node-1"),
            Duration::from_secs(10),
            max_series,
        )
    }

    #[test]
    fn aggregator_first_record_creates_event_on_pod() {
        let mut agg = aggregator(4);
        let Observed::Start(Call::Create { event, .. }) =
            agg.observe(&record("deny"), Instant::now())
        else {
            panic!("first record must start a series");
        };
        let regarding = event.regarding.as_ref().expect("regarding");
        assert_eq!(regarding.kind.as_deref(), Some("Pod"));
        assert_eq!(regarding.name.as_deref(), Some("api-7d9f"));
        assert_eq!(regarding.namespace.as_deref(), Some("payments"));
        assert_eq!(
            regarding.field_path.as_deref(),
            Some("spec.containers{app}")
        );
        assert_eq!(event.reason.as_deref(), Some(REASON_DENIED));
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        assert_eq!(event.metadata.namespace.as_deref(), Some("payments"));
        assert!(
            event
                .metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("api-7d9f."))
        );
        let note = event.note.as_deref().expect("note");
        assert!(note.contains("\"cat\" (pid 4242, uid 0)"), "{note}");
        assert!(note.contains("\"canary_app\" (pid 100)"), "{note}");
        assert!(note.contains("denied"), "{note}");
    }

    #[test]
    fn aggregator_repeats_fold_into_one_update_per_window() {
        let mut agg = aggregator(4);
        let start = Instant::now();
        assert!(matches!(
            agg.observe(&record("deny"), start),
            Observed::Start(_)
        ));
        for _ in 0..999 {
            assert_eq!(agg.observe(&record("deny"), start), Observed::Folded);
        }
        assert!(agg.flush(start + Duration::from_secs(1), false).is_empty());
        let calls = agg.flush(start + Duration::from_secs(10), false);
        let [Call::Update { series, name, .. }] = calls.as_slice() else {
            panic!("one update expected: {calls:?}");
        };
        assert_eq!(series.count, 1000);
        assert!(name.starts_with("api-7d9f."));
        assert!(agg.flush(start + Duration::from_secs(30), false).is_empty());
        // Audit decisions are a separate series.
        assert!(matches!(
            agg.observe(&record("audit"), start),
            Observed::Start(_)
        ));
    }

    #[test]
    fn aggregator_full_series_table_suppresses_new_pods() {
        let mut agg = aggregator(1);
        let now = Instant::now();
        assert!(matches!(
            agg.observe(&record("deny"), now),
            Observed::Start(_)
        ));
        assert_eq!(agg.observe(&record("audit"), now), Observed::Suppressed);
        // Idle series close, making room.
        agg.flush(now + SERIES_IDLE + Duration::from_secs(1), false);
        assert_eq!(agg.open_series(), 0);
        assert!(matches!(
            agg.observe(&record("audit"), now),
            Observed::Start(_)
        ));
    }

    #[test]
    fn note_hostile_comm_is_escaped_and_bounded() {
        let mut rec = record("audit");
        rec.subject.comm = "x\n\u{1b}[31m".to_owned();
        rec.hook = "file_open";
        rec.target = None;
        let text = note(&rec);
        assert!(!text.contains('\n') && !text.contains('\u{1b}'), "{text}");
        assert!(text.contains("service-account token"), "{text}");
        assert!(text.contains("allowed (audit mode)"), "{text}");
    }

    #[test]
    fn offer_full_queue_drops_and_counts() {
        let metrics = Arc::new(Metrics::default());
        let (sender, _rx) = queue(4, Arc::clone(&metrics));
        let offers: Vec<Offer> = (0..10).map(|_| sender.offer(&record("deny"))).collect();
        assert_eq!(offers.iter().filter(|o| **o == Offer::Queued).count(), 4);
        assert_eq!(offers.iter().filter(|o| **o == Offer::Dropped).count(), 6);
        assert_eq!(metrics.kube_events_dropped.get(), 6);
        let mut unnamed = record("deny");
        unnamed.namespace = None;
        assert_eq!(sender.offer(&unnamed), Offer::Skipped);
        assert_eq!(sender.offer(&record("allow")), Offer::Skipped);
    }
}

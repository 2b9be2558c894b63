//! Audit events: from the kernel's ring-buffer record to one JSON line with pod identity, and
//! the [`AuditSink`] that sends each one to stdout, the metrics and (optionally) the Kubernetes
//! Event recorder.
//!
//! # Security
//! `comm` values are chosen by the (possibly hostile) processes themselves (`prctl
//! PR_SET_NAME`): they are decoded lossily and only ever serialized through serde_json, which
//! escapes quotes and control characters, so a crafted name cannot forge or split a line.
use std::io::Write;
use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::abi::{
    self, DECISION_ALLOW, DECISION_AUDIT, DECISION_DENY, HOOK_BPRM_CHECK_SECURITY, HOOK_FILE_OPEN,
    HOOK_LINEAGE_START, HOOK_PTRACE_ACCESS_CHECK, HOOK_TASK_KILL, RawEvent,
};
use crate::cgroup::CgroupIdentity;
use crate::metrics::Metrics;
use crate::pods::{PodDirectory, PodInfo};
use crate::recorder::EventSender;

/// Name of a hook id as it appears in logs and metrics.
pub fn hook_name(hook: u32) -> &'static str {
    match hook {
        HOOK_PTRACE_ACCESS_CHECK => "ptrace_access_check",
        HOOK_BPRM_CHECK_SECURITY => "bprm_check_security",
        HOOK_FILE_OPEN => "file_open",
        HOOK_TASK_KILL => "task_kill",
        HOOK_LINEAGE_START => "lineage_start",
        _ => "unknown",
    }
}

/// Name of a decision id as it appears in logs and metrics.
pub fn decision_name(decision: u32) -> &'static str {
    match decision {
        DECISION_DENY => "deny",
        DECISION_AUDIT => "audit",
        DECISION_ALLOW => "allow",
        _ => "unknown",
    }
}

/// The acting process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Subject {
    /// Tgid in the node's PID namespace.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Command name.
    pub comm: String,
    /// Uid in the node's user namespace.
    pub uid: u32,
}

/// The process acted upon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Target {
    /// Tgid in the node's PID namespace.
    pub pid: u32,
    /// Command name.
    pub comm: String,
}

/// One audit record, serialized as one JSON line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// RFC 3339 time of the attempt.
    pub time: String,
    /// Node name.
    pub node: String,
    /// Pod namespace, when the API server told us.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Pod name when known, else its uid.
    pub pod: Option<String>,
    /// Pod uid.
    pub pod_uid: Option<String>,
    /// Container id.
    pub container: Option<String>,
    /// Container name, when the API server reported the container's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// Hook name.
    pub hook: &'static str,
    /// Decision name.
    pub decision: &'static str,
    /// The acting process.
    pub subject: Subject,
    /// The process acted upon, for task hooks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// Inode of the file, for file hooks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inode: Option<u64>,
    /// Signal number, for `task_kill`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<u32>,
    /// Ptrace access mode bits, for `ptrace_access_check`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ptrace_mode: Option<u32>,
}

/// Converts kernel boot-clock nanoseconds to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Wall-clock nanoseconds minus boot-clock nanoseconds, measured once.
    offset_ns: i128,
}

impl Clock {
    /// Measures the offset between `CLOCK_REALTIME` and `CLOCK_BOOTTIME` now.
    pub fn now() -> Self {
        let boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
            .map(|ts| i128::from(ts.tv_sec()) * 1_000_000_000 + i128::from(ts.tv_nsec()))
            .unwrap_or(0);
        let wall = OffsetDateTime::now_utc().unix_timestamp_nanos();
        Self {
            offset_ns: wall - boot,
        }
    }

    /// A clock with a fixed offset (tests).
    pub fn with_offset(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    /// RFC 3339 wall time of a boot-clock instant.
    pub fn format(&self, ktime_ns: u64) -> String {
        OffsetDateTime::from_unix_timestamp_nanos(self.offset_ns + i128::from(ktime_ns))
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default()
    }
}

impl AuditRecord {
    /// Builds the record for `raw`, with the identity of the cgroup the event is about (the
    /// protected lineage's container when there is one, else the subject's cgroup) and what the
    /// API server says about that pod, if anything.
    pub fn new(
        raw: &RawEvent,
        node: &str,
        clock: &Clock,
        identity: Option<&CgroupIdentity>,
        pod_info: Option<&PodInfo>,
    ) -> Self {
        let pod_uid = identity.and_then(|i| i.pod_uid.clone());
        let container = identity.and_then(|i| i.container_id.clone());
        // Only the pod the cgroup names may label the event.
        let pod_info = pod_info.filter(|info| pod_uid.as_deref() == Some(info.uid.as_str()));
        let (namespace, pod) = match pod_info {
            Some(info) => (Some(info.namespace.clone()), Some(info.name.clone())),
            None => (None, pod_uid.clone()),
        };
        let container_name = pod_info
            .zip(container.as_deref())
            .and_then(|(info, id)| info.container_name(id))
            .map(str::to_owned);
        let target = (raw.target_pid != 0).then(|| Target {
            pid: raw.target_pid,
            comm: abi::comm_str(&raw.target_comm),
        });
        let file_hook = matches!(
            raw.hook,
            HOOK_FILE_OPEN | HOOK_BPRM_CHECK_SECURITY | HOOK_LINEAGE_START
        );
        Self {
            time: clock.format(raw.ktime_ns),
            node: node.to_owned(),
            namespace,
            pod,
            pod_uid,
            container,
            container_name,
            hook: hook_name(raw.hook),
            decision: decision_name(raw.decision),
            subject: Subject {
                pid: raw.subject_pid,
                tid: raw.subject_tid,
                comm: abi::comm_str(&raw.subject_comm),
                uid: raw.subject_uid,
            },
            target,
            inode: file_hook.then_some(raw.inode),
            signal: (raw.hook == HOOK_TASK_KILL).then_some(raw.detail),
            ptrace_mode: (raw.hook == HOOK_PTRACE_ACCESS_CHECK).then_some(raw.detail),
        }
    }

    /// The cgroup id whose identity describes this event.
    pub fn identity_cgroup(raw: &RawEvent) -> u64 {
        if raw.lineage_cg != 0 {
            raw.lineage_cg
        } else {
            raw.subject_cg
        }
    }

    /// One JSON line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }

    /// Lineage starts are bookkeeping (a container got its root), not access decisions.
    pub fn is_access_decision(raw: &RawEvent) -> bool {
        !(raw.hook == HOOK_LINEAGE_START && raw.decision == DECISION_ALLOW)
    }
}

/// Where audit events go: one JSON line each on `out`, a counter by hook and decision, and a
/// Kubernetes Event through the recorder's queue when one is configured. Nothing here waits
/// on the network: the queue is bounded and a full queue drops (and counts) the Event only.
pub struct AuditSink<W> {
    node: String,
    clock: Clock,
    out: W,
    metrics: Arc<Metrics>,
    pods: PodDirectory,
    events: Option<EventSender>,
}

impl<W: Write> AuditSink<W> {
    /// A sink writing lines to `out`, naming pods from `pods`, posting Events via `events`.
    pub fn new(
        node: &str,
        clock: Clock,
        out: W,
        metrics: Arc<Metrics>,
        pods: PodDirectory,
        events: Option<EventSender>,
    ) -> Self {
        Self {
            node: node.to_owned(),
            clock,
            out,
            metrics,
            pods,
            events,
        }
    }

    /// Counts one kernel event, builds its record and, for access decisions, writes the line
    /// and offers it to the Event recorder. Returns the record.
    pub fn process(&mut self, raw: &RawEvent, identity: Option<&CgroupIdentity>) -> AuditRecord {
        self.metrics
            .count_event(hook_name(raw.hook), decision_name(raw.decision));
        let pod = identity
            .and_then(|i| i.pod_uid.as_deref())
            .and_then(|uid| self.pods.get(uid));
        let record = AuditRecord::new(raw, &self.node, &self.clock, identity, pod.as_ref());
        if AuditRecord::is_access_decision(raw) {
            // A closed stdout must not stop enforcement bookkeeping; the counter still moved.
            let _ = writeln!(self.out, "{}", record.to_json());
            let _ = self.out.flush();
            if let Some(events) = &self.events {
                events.offer(&record);
            }
        }
        record
    }

    /// The writer (tests read the lines back).
    pub fn out(&self) -> &W {
        &self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comm(text: &str) -> [u8; abi::COMM_LEN] {
        let mut out = [0u8; abi::COMM_LEN];
        out[..text.len()].copy_from_slice(text.as_bytes());
        out
    }

    fn ptrace_denial() -> RawEvent {
        RawEvent {
            ktime_ns: 1_500_000_000,
            subject_cg: 77,
            target_cg: 88,
            lineage_cg: 88,
            hook: HOOK_PTRACE_ACCESS_CHECK,
            decision: DECISION_DENY,
            subject_pid: 4242,
            subject_tid: 4243,
            subject_uid: 0,
            target_pid: 100,
            detail: 0x11,
            subject_comm: comm("read_environ"),
            target_comm: comm("canary_app"),
            ..RawEvent::default()
        }
    }

    #[test]
    fn audit_record_ptrace_denial_has_contract_fields() {
        let identity =
            crate::cgroup::identify("kubepods/pod0f0e0d0c-0000-1111-2222-333344445555/c0ffee");
        let clock = Clock::with_offset(1_764_446_400_000_000_000);
        let raw = ptrace_denial();
        let record = AuditRecord::new(&raw, "node-1", &clock, Some(&identity), None);
        let json: serde_json::Value = serde_json::from_str(&record.to_json()).expect("json");
        assert_eq!(json["time"], "2025-11-29T20:00:01.5Z");
        assert_eq!(json["node"], "node-1");
        assert_eq!(json["pod"], "0f0e0d0c-0000-1111-2222-333344445555");
        assert_eq!(json["container"], "c0ffee");
        assert_eq!(json["hook"], "ptrace_access_check");
        assert_eq!(json["decision"], "deny");
        assert_eq!(json["subject"]["pid"], 4242);
        assert_eq!(json["subject"]["comm"], "read_environ");
        assert_eq!(json["subject"]["uid"], 0);
        assert_eq!(json["target"]["pid"], 100);
        assert_eq!(json["target"]["comm"], "canary_app");
        assert_eq!(json["ptrace_mode"], 0x11);
        assert!(json.get("namespace").is_none());
        assert!(json.get("container_name").is_none());
        assert!(json.get("inode").is_none());
        assert_eq!(AuditRecord::identity_cgroup(&raw), 88);
    }

    fn pod_info(uid: &str) -> PodInfo {
        PodInfo {
            uid: uid.to_owned(),
            namespace: "payments".to_owned(),
            name: "api-7d9f".to_owned(),
            containers: vec![crate::pods::ContainerInfo {
                name: "app".to_owned(),
                id: Some("c0ffee".to_owned()),
            }],
            mode: None,
            injected: true,
            running: true,
        }
    }

    #[test]
    fn audit_record_names_from_api_replace_uid() {
        let identity =
            crate::cgroup::identify("kubepods/pod0f0e0d0c-0000-1111-2222-333344445555/c0ffee");
        let info = pod_info("0f0e0d0c-0000-1111-2222-333344445555");
        let record = AuditRecord::new(
            &ptrace_denial(),
            "n",
            &Clock::with_offset(0),
            Some(&identity),
            Some(&info),
        );
        assert_eq!(record.namespace.as_deref(), Some("payments"));
        assert_eq!(record.pod.as_deref(), Some("api-7d9f"));
        assert_eq!(record.container_name.as_deref(), Some("app"));
        assert_eq!(record.container.as_deref(), Some("c0ffee"));
    }

    #[test]
    fn audit_record_other_pods_info_is_not_used() {
        let identity =
            crate::cgroup::identify("kubepods/pod0f0e0d0c-0000-1111-2222-333344445555/c0ffee");
        let info = pod_info("99999999-0000-1111-2222-333344445555");
        let record = AuditRecord::new(
            &ptrace_denial(),
            "n",
            &Clock::with_offset(0),
            Some(&identity),
            Some(&info),
        );
        assert_eq!(record.namespace, None);
        assert_eq!(
            record.pod.as_deref(),
            Some("0f0e0d0c-0000-1111-2222-333344445555")
        );
    }

    #[test]
    fn audit_record_token_open_has_inode_and_no_target() {
        let raw = RawEvent {
            hook: HOOK_FILE_OPEN,
            decision: DECISION_AUDIT,
            subject_cg: 5,
            inode: 999,
            subject_comm: comm("cat"),
            ..RawEvent::default()
        };
        let record = AuditRecord::new(&raw, "n", &Clock::with_offset(0), None, None);
        assert_eq!(record.hook, "file_open");
        assert_eq!(record.decision, "audit");
        assert_eq!(record.inode, Some(999));
        assert_eq!(record.target, None);
        assert_eq!(record.pod, None);
        assert_eq!(AuditRecord::identity_cgroup(&raw), 5);
    }

    #[test]
    fn audit_record_hostile_comm_cannot_split_or_forge_line() {
        let raw = RawEvent {
            hook: HOOK_FILE_OPEN,
            decision: DECISION_DENY,
            subject_comm: comm("x\"}\n{\"decision"),
            ..RawEvent::default()
        };
        let line = AuditRecord::new(&raw, "n", &Clock::with_offset(0), None, None).to_json();
        assert!(!line.contains('\n'));
        let json: serde_json::Value = serde_json::from_str(&line).expect("one valid object");
        assert_eq!(json["decision"], "deny");
        assert_eq!(json["subject"]["comm"], "x\"}\n{\"decision");
    }

    #[test]
    fn hook_and_decision_names_cover_unknown_ids() {
        assert_eq!(hook_name(99), "unknown");
        assert_eq!(decision_name(0), "unknown");
        assert_eq!(hook_name(HOOK_TASK_KILL), "task_kill");
    }
}

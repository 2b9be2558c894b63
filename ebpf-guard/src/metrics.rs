//! Prometheus metrics of the agent: audit events by hook and decision, kernel-side
//! counters, protected pods, readiness, and the API server side (pod watch, Kubernetes Events).
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of the events counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// Hook name (`ptrace_access_check`, `file_open`, ...).
    pub hook: String,
    /// Decision name (`deny`, `audit`, `allow`).
    pub decision: String,
}

/// Labels of the Kubernetes Event API calls counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// `create` or `patch`.
    pub verb: String,
    /// `ok` or `error`.
    pub result: String,
}

/// Every metric the agent exports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Audit events by hook and decision.
    pub events: Family<EventLabels, Counter>,
    /// Events the kernel dropped because the ring buffer was full.
    pub ringbuf_dropped: Gauge,
    /// Lineage inserts that failed (the container failed closed).
    pub lineage_full: Gauge,
    /// Injected pods currently registered.
    pub protected_pods: Gauge,
    /// 1 when the guard enforces, 0 otherwise.
    pub ready: Gauge,
    /// 1 while the pod list/watch on the API server is in sync, 0 otherwise.
    pub kube_api_up: Gauge,
    /// Pods on this node known from the API server.
    pub kube_pods: Gauge,
    /// Failed pod list/watch attempts.
    pub kube_api_errors: Counter,
    /// Kubernetes Events not posted because the queue was full or too many series were open.
    pub kube_events_dropped: Counter,
    /// Audit events folded into an existing Event series instead of a new API call.
    pub kube_events_aggregated: Counter,
    /// Kubernetes Event API calls by verb and result.
    pub kube_event_calls: Family<CallLabels, Counter>,
}

impl Metrics {
    /// Registers every metric under the `strongroom_guard` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("strongroom_guard");
        sub.register(
            "events",
            "Guard events by hook and decision",
            self.events.clone(),
        );
        sub.register(
            "ringbuf_dropped",
            "Events dropped by the kernel because the ring buffer was full",
            self.ringbuf_dropped.clone(),
        );
        sub.register(
            "lineage_full",
            "Lineage inserts that failed because the map was full (fail closed)",
            self.lineage_full.clone(),
        );
        sub.register(
            "protected_pods",
            "Injected pods registered",
            self.protected_pods.clone(),
        );
        sub.register("ready", "1 when the guard enforces", self.ready.clone());
        sub.register(
            "kube_api_up",
            "1 while the pod list/watch on the API server is in sync",
            self.kube_api_up.clone(),
        );
        sub.register(
            "kube_pods",
            "Pods on this node known from the API server",
            self.kube_pods.clone(),
        );
        sub.register(
            "kube_api_errors",
            "Failed pod list/watch attempts",
            self.kube_api_errors.clone(),
        );
        sub.register(
            "kube_events_dropped",
            "Kubernetes Events dropped (queue full or too many open series)",
            self.kube_events_dropped.clone(),
        );
        sub.register(
            "kube_events_aggregated",
            "Audit events folded into an existing Kubernetes Event series",
            self.kube_events_aggregated.clone(),
        );
        sub.register(
            "kube_event_calls",
            "Kubernetes Event API calls by verb and result",
            self.kube_event_calls.clone(),
        );
    }

    /// Counts one Kubernetes Event API call.
    pub fn count_call(&self, verb: &str, ok: bool) {
        self.kube_event_calls
            .get_or_create(&CallLabels {
                verb: verb.to_owned(),
                result: if ok { "ok" } else { "error" }.to_owned(),
            })
            .inc();
    }

    /// Counts one event.
    pub fn count_event(&self, hook: &str, decision: &str) {
        self.events
            .get_or_create(&EventLabels {
                hook: hook.to_owned(),
                decision: decision.to_owned(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_count_event_is_exported_with_labels() {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.count_event("ptrace_access_check", "deny");
        metrics.count_event("ptrace_access_check", "deny");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains(
                "strongroom_guard_events_total{hook=\"ptrace_access_check\",decision=\"deny\"} 2"
            ),
            "{text}"
        );
    }

    #[test]
    fn metrics_kube_side_is_exported_under_documented_names() {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.kube_api_up.set(1);
        metrics.kube_events_dropped.inc();
        metrics.count_call("create", true);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for line in [
            "strongroom_guard_kube_api_up 1",
            "strongroom_guard_kube_pods 0",
            "strongroom_guard_kube_api_errors_total 0",
            "strongroom_guard_kube_events_dropped_total 1",
            "strongroom_guard_kube_events_aggregated_total 0",
            "strongroom_guard_kube_event_calls_total{verb=\"create\",result=\"ok\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}

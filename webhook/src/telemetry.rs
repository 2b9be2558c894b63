//! Observability: Prometheus metrics (prometheus-client) and the tracing subscriber.
//!
//! Labels are bounded: `kind` is one of Pod/Secret/ConfigMap/other, `operation` one of the
//! four admission operations or `other`, `decision` one of [`Decision`]'s values.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::handler::ReviewMeta;
use crate::mutate::Outcome;

/// Labels of `admission_reviews_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    pub kind: &'static str,
    pub operation: &'static str,
    pub decision: &'static str,
}

/// Labels of `tls_reloads_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: &'static str,
}

/// Labels of `http_rejections_total` (requests refused before a review was parsed).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub reason: &'static str,
}

/// The webhook's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Time from the full body to the answer, seconds.
    pub duration: Histogram,
    pub reviews: Family<ReviewLabels, Counter>,
    pub injections: Counter,
    pub warnings: Counter,
    pub tls_reloads: Family<ReloadLabels, Counter>,
    pub rejections: Family<RejectLabels, Counter>,
}

/// Histogram buckets in seconds, from 50 µs: the mutation itself takes well under 1 ms.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5,
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers all metrics under the `vault_secrets_webhook` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vault_secrets_webhook");
        let duration = Histogram::new(DURATION_BUCKETS);
        let reviews = Family::<ReviewLabels, Counter>::default();
        let injections = Counter::default();
        let warnings = Counter::default();
        let tls_reloads = Family::<ReloadLabels, Counter>::default();
        let rejections = Family::<RejectLabels, Counter>::default();
        registry.register(
            "admission_duration_seconds",
            "Time to answer one admission review",
            duration.clone(),
        );
        registry.register(
            "admission_reviews",
            "Admission reviews by kind, operation and decision",
            reviews.clone(),
        );
        registry.register(
            "injections",
            "Containers injected with vault-env (dry runs excluded)",
            injections.clone(),
        );
        registry.register(
            "admission_warnings",
            "Warnings returned to clients",
            warnings.clone(),
        );
        registry.register(
            "tls_reloads",
            "TLS certificate reloads by result",
            tls_reloads.clone(),
        );
        registry.register(
            "http_rejections",
            "Requests refused before a review was read, by reason",
            rejections.clone(),
        );
        Self {
            registry,
            duration,
            reviews,
            injections,
            warnings,
            tls_reloads,
            rejections,
        }
    }

    /// Adds the registry lookup's metrics (`registry_…`) to the exposition.
    pub fn register_registry(&mut self, metrics: &crate::registry::metrics::RegistryMetrics) {
        metrics.register(&mut self.registry);
    }

    /// Records one answered review.
    pub fn record(&self, meta: &ReviewMeta, outcome: &Outcome, seconds: f64) {
        self.duration.observe(seconds);
        self.reviews
            .get_or_create(&ReviewLabels {
                kind: bounded_kind(&meta.kind),
                operation: bounded_operation(&meta.operation),
                decision: outcome.decision.as_str(),
            })
            .inc();
        if !meta.dry_run {
            self.injections.inc_by(outcome.injected_containers as u64);
        }
        self.warnings.inc_by(outcome.response.warnings.len() as u64);
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn bounded_kind(kind: &str) -> &'static str {
    match kind {
        "Pod" => "Pod",
        "Secret" => "Secret",
        "ConfigMap" => "ConfigMap",
        "" => "none",
        _ => "other",
    }
}

fn bounded_operation(operation: &str) -> &'static str {
    match operation {
        "CREATE" => "CREATE",
        "UPDATE" => "UPDATE",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        "" => "none",
        _ => "other",
    }
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global tracing subscriber writing to stderr.
///
/// # Errors
///
/// When the filter does not parse or a subscriber is already installed.
pub fn init_logging(level: &str, format: LogFormat) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .with_context(|| format!("parsing log level {level:?}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::AdmissionResponse;
    use crate::mutate::Decision;

    fn record(metrics: &Metrics, kind: &str, operation: &str, injected: usize, dry_run: bool) {
        let meta = ReviewMeta {
            kind: kind.to_owned(),
            operation: operation.to_owned(),
            dry_run,
            ..ReviewMeta::default()
        };
        let outcome = Outcome {
            response: AdmissionResponse::allow("u"),
            decision: Decision::Patched,
            injected_containers: injected,
        };
        metrics.record(&meta, &outcome, 0.0002);
    }

    #[test]
    fn metrics_labels_are_bounded() {
        let metrics = Metrics::new();
        for i in 0..100 {
            record(&metrics, &format!("Kind{i}"), &format!("OP{i}"), 1, false);
        }
        let text = metrics.encode();
        assert!(
            text.contains("kind=\"other\",operation=\"other\",decision=\"patched\"} 100"),
            "{text}"
        );
        assert!(!text.contains("Kind1"));
        assert!(text.contains("le=\"0.0001\""), "sub-ms bucket: {text}");
        assert!(
            text.contains("vault_secrets_webhook_injections_total 100"),
            "{text}"
        );
    }

    #[test]
    fn metrics_dry_run_counts_no_injection() {
        let metrics = Metrics::new();
        record(&metrics, "Pod", "CREATE", 3, true);
        assert!(
            metrics
                .encode()
                .contains("vault_secrets_webhook_injections_total 0")
        );
    }
}

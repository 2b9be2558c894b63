//! Prometheus metrics of the registry lookup.
//!
//! - `registry_lookup_duration_seconds{result="hit|miss|error"}`: time to answer a lookup.
//! - `registry_cache_entries`: entries in the lookup cache (positive and negative).
//! - `registry_errors_total{cause=…}`: failed registry fetches by cause (`connect`,
//!   `request`, `auth`, `not_found`, `status`, `invalid`, `platform`, `timeout`,
//!   `reference`), counted once per fetch, not once per waiting lookup.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label of the lookup duration histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

/// Label of the error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabel {
    pub cause: &'static str,
}

fn lookup_histogram() -> Histogram {
    // 10 µs (cache hit) … ~5 s (past the timeout).
    Histogram::new(exponential_buckets(0.000_01, 3.0, 15))
}

/// The registry lookup's metrics; cheap to clone (handles share their values).
#[derive(Clone)]
pub struct RegistryMetrics {
    lookup_duration: Family<ResultLabel, Histogram, fn() -> Histogram>,
    cache_entries: Gauge,
    errors: Family<CauseLabel, Counter>,
}

impl Default for RegistryMetrics {
    fn default() -> Self {
        Self {
            lookup_duration: Family::new_with_constructor(lookup_histogram),
            cache_entries: Gauge::default(),
            errors: Family::default(),
        }
    }
}

impl RegistryMetrics {
    /// Registers the metrics (under `registry_…`) in the webhook's registry.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "registry_lookup_duration_seconds",
            "Time to answer an image entrypoint lookup, by result (hit, miss, error)",
            self.lookup_duration.clone(),
        );
        registry.register(
            "registry_cache_entries",
            "Entries in the image entrypoint cache",
            self.cache_entries.clone(),
        );
        registry.register(
            "registry_errors",
            "Failed registry fetches by cause",
            self.errors.clone(),
        );
    }

    pub(crate) fn observe_lookup(&self, result: &'static str, elapsed: Duration) {
        self.lookup_duration
            .get_or_create(&ResultLabel { result })
            .observe(elapsed.as_secs_f64());
    }

    pub(crate) fn set_cache_entries(&self, entries: usize) {
        self.cache_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }

    pub(crate) fn count_error(&self, cause: &'static str) {
        self.errors.get_or_create(&CauseLabel { cause }).inc();
    }

    /// Fetch errors counted with `cause` so far.
    pub fn errors(&self, cause: &'static str) -> u64 {
        self.errors.get_or_create(&CauseLabel { cause }).get()
    }

    /// Current value of the cache-entries gauge.
    pub fn cache_entries(&self) -> i64 {
        self.cache_entries.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_encodes_all_three_metrics() {
        let metrics = RegistryMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.observe_lookup("hit", Duration::from_micros(3));
        metrics.set_cache_entries(4);
        metrics.count_error("auth");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains("registry_lookup_duration_seconds_count{result=\"hit\"} 1"),
            "{text}"
        );
        assert!(text.contains("registry_cache_entries 4"), "{text}");
        assert!(
            text.contains("registry_errors_total{cause=\"auth\"} 1"),
            "{text}"
        );
        assert_eq!(metrics.errors("auth"), 1);
    }
}

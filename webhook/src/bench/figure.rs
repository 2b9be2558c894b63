//! The one definition of a benchmark figure as `cargo xtask bench` reports it.
//!
//! The webhook's bench subcommands print `[Figure, …]` as JSON on stdout and xtask reads them
//! back into the same type, so there is one set of key names for both sides. xtask compiles
//! this very file (`#[path]`) instead of depending on the webhook crate, whose dependency tree
//! would make every `cargo xtask` build slow; the file therefore uses nothing but `serde`.

use serde::{Deserialize, Serialize};

/// One measured figure: a value, optionally its same-run baseline, and its target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// Benchmark entry that measured it (`admission`, `registry-cache`, …).
    pub bench: String,
    /// What was measured, readable in the table.
    pub name: String,
    /// The subject's measurement.
    pub value: f64,
    /// Unit of `value` and `baseline`.
    pub unit: String,
    /// The baseline's measurement, when the figure is a comparison.
    pub baseline: Option<f64>,
    /// `value / baseline`, when there is a baseline.
    pub ratio: Option<f64>,
    /// The bound on the ratio (with a baseline) or on the value (without one).
    pub target: Option<f64>,
    /// The bound is a floor (`>=`), e.g. throughput; otherwise a ceiling (`<=`).
    #[serde(default)]
    pub at_least: bool,
    /// Whether the bound holds (true when there is no target).
    pub pass: bool,
}

impl Figure {
    /// A figure compared with a same-run baseline; `target` bounds `value / baseline`.
    pub fn compared(
        bench: &str,
        name: &str,
        (value, baseline): (f64, f64),
        unit: &str,
        target: Option<f64>,
    ) -> Self {
        let ratio = if baseline > 0.0 {
            value / baseline
        } else {
            f64::INFINITY
        };
        Self::checked(
            bench,
            name,
            value,
            unit,
            Some(baseline),
            Some(ratio),
            target,
        )
    }

    /// A figure with an absolute ceiling: passes when `value <= target`.
    pub fn limit(bench: &str, name: &str, value: f64, unit: &str, target: f64) -> Self {
        Self::checked(bench, name, value, unit, None, None, Some(target))
    }

    /// A figure reported for information, with no target.
    pub fn measured(bench: &str, name: &str, value: f64, unit: &str) -> Self {
        Self::checked(bench, name, value, unit, None, None, None)
    }

    /// Makes the target a floor (`ratio >= target`) instead of a ceiling.
    #[must_use]
    pub fn at_least(mut self) -> Self {
        self.at_least = true;
        self.pass = Self::holds(self.ratio.unwrap_or(self.value), self.target, true);
        self
    }

    fn checked(
        bench: &str,
        name: &str,
        value: f64,
        unit: &str,
        baseline: Option<f64>,
        ratio: Option<f64>,
        target: Option<f64>,
    ) -> Self {
        Self {
            bench: bench.to_owned(),
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
            baseline,
            ratio,
            target,
            at_least: false,
            pass: Self::holds(ratio.unwrap_or(value), target, false),
        }
    }

    /// `measured` against `target`; NaN never passes.
    fn holds(measured: f64, target: Option<f64>, at_least: bool) -> bool {
        match target {
            None => true,
            Some(t) if at_least => measured >= t,
            Some(t) => measured <= t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figure_json_keys_are_the_report_schema() {
        let figure = Figure::compared("admission", "p99", (3.0, 2.0), "ms", Some(1.5));
        let json = serde_json::to_value(&figure).map_err(|e| e.to_string());
        let Ok(serde_json::Value::Object(map)) = json else {
            panic!("{json:?}");
        };
        let keys: Vec<&str> = map.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "bench", "name", "value", "unit", "baseline", "ratio", "target", "at_least", "pass"
            ]
        );
        assert_eq!(map["ratio"], 1.5);
        assert_eq!(map["pass"], true);
    }

    #[test]
    fn figure_from_json_without_at_least_reads_a_ceiling() {
        let text = r#"{"bench":"b","name":"n","value":2.0,"unit":"ms","baseline":null,
                       "ratio":null,"target":1.0,"pass":false}"#;
        let figure: Result<Figure, _> = serde_json::from_str(text);
        let Ok(figure) = figure else {
            panic!("{figure:?}")
        };
        assert!(!figure.at_least);
        assert_eq!(figure, Figure::limit("b", "n", 2.0, "ms", 1.0));
    }

    #[test]
    fn figure_from_json_without_value_is_an_error() {
        let text = r#"{"bench":"b","name":"n","unit":"ms","pass":true}"#;
        assert!(serde_json::from_str::<Figure>(text).is_err());
    }

    #[test]
    fn figure_limit_over_target_fails_and_at_target_passes() {
        assert!(!Figure::limit("b", "n", 8.1, "MiB", 8.0).pass);
        assert!(Figure::limit("b", "n", 8.0, "MiB", 8.0).pass);
        assert!(!Figure::limit("b", "n", f64::NAN, "MiB", 8.0).pass);
    }

    #[test]
    fn figure_at_least_flips_the_bound_to_a_floor() {
        let slow = Figure::compared("b", "rps", (400.0, 1000.0), "1/s", Some(0.5)).at_least();
        assert!(!slow.pass);
        let fast = Figure::compared("b", "rps", (600.0, 1000.0), "1/s", Some(0.5)).at_least();
        assert!(fast.pass && fast.at_least);
    }

    #[test]
    fn figure_compared_with_zero_baseline_has_infinite_ratio_and_fails() {
        let figure = Figure::compared("b", "n", (1.0, 0.0), "ms", Some(2.0));
        assert_eq!(figure.ratio, Some(f64::INFINITY));
        assert!(!figure.pass);
    }
}

//! Parses the guest's serial console into a verdict.
//!
//! The guest prints `VMTEST <KIND> ...` lines (format in `ebpf-guard/tests/vm/README.md`); kernel
//! messages may share the line, so a record is found wherever `VMTEST ` occurs in a line and
//! carriage returns are ignored. Anything that is not a well-formed record is log text.
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub scenario: String,
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// Everything read from one boot.
#[derive(Debug, Default)]
pub struct Report {
    pub lsm: Option<String>,
    pub booted_uptime: Option<f64>,
    pub done_uptime: Option<f64>,
    pub checks: Vec<Check>,
    pub metrics: Vec<(String, String, String, String)>,
    /// Scenario → exit code (`None` while started but not ended).
    pub scenarios: BTreeMap<String, Option<i32>>,
    /// Scenario → seconds it ran (guest uptime from START to END).
    pub durations: BTreeMap<String, f64>,
    starts: BTreeMap<String, f64>,
    pub infos: Vec<String>,
    /// Harness-level failures (missing DONE, canary on the console, ...).
    pub errors: Vec<String>,
}

/// The prefix of every canary made by `canary_new` in lib.sh (followed by 32 hex digits).
pub const CANARY_PREFIX: &str = "SRCANARY";

impl Report {
    /// Parses a console log; `expected` are the scenarios the guest was asked to run.
    pub fn parse(log: &str, expected: &[String]) -> Report {
        let mut report = Report::default();
        for raw in log.lines() {
            let line = raw.replace('\r', "");
            if contains_canary(&line) {
                report
                    .errors
                    .push("a canary appeared on the console (secret leaked into output)".into());
            }
            let Some(start) = line.find("VMTEST ") else {
                continue;
            };
            report.record(&line[start + "VMTEST ".len()..]);
        }
        report.errors.dedup();
        report.finish(expected);
        report
    }

    fn record(&mut self, record: &str) {
        let mut words = record.split_whitespace();
        match words.next() {
            Some("LSM") => self.lsm = Some(words.collect::<Vec<_>>().join(" ")),
            Some("BOOTED") => self.booted_uptime = uptime(words),
            Some("DONE") => self.done_uptime = uptime(words).or(Some(0.0)),
            Some("FATAL") => self
                .errors
                .push(format!("guest: {}", words.collect::<Vec<_>>().join(" "))),
            Some("INFO") => self.infos.push(words.collect::<Vec<_>>().join(" ")),
            Some("SCENARIO") => match (words.next(), words.next(), words.next()) {
                (Some(name), Some("START"), rest) => {
                    self.scenarios.insert(name.to_string(), None);
                    if let Some(at) = uptime(rest.into_iter().chain(words)) {
                        self.starts.insert(name.to_string(), at);
                    }
                }
                (Some(name), Some("END"), Some(rc)) => {
                    self.scenarios
                        .insert(name.to_string(), Some(rc.parse().unwrap_or(-1)));
                    if let (Some(end), Some(start)) = (uptime(words), self.starts.get(name)) {
                        self.durations.insert(name.to_string(), end - start);
                    }
                }
                _ => {}
            },
            Some("RESULT") => {
                if let (Some(scenario), Some(name), Some(verdict)) =
                    (words.next(), words.next(), words.next())
                {
                    let passed = match verdict {
                        "PASS" => true,
                        "FAIL" => false,
                        _ => return,
                    };
                    self.checks.push(Check {
                        scenario: scenario.into(),
                        name: name.into(),
                        passed,
                        detail: words.collect::<Vec<_>>().join(" "),
                    });
                }
            }
            Some("METRIC") => {
                if let (Some(s), Some(n), Some(v), Some(u)) =
                    (words.next(), words.next(), words.next(), words.next())
                {
                    self.metrics.push((s.into(), n.into(), v.into(), u.into()));
                }
            }
            _ => {}
        }
    }

    fn finish(&mut self, expected: &[String]) {
        match &self.lsm {
            None => self
                .errors
                .push("the guest never printed its LSM list".into()),
            Some(list) if !list.split(',').any(|l| l.trim() == "bpf") => self
                .errors
                .push(format!("the guest's LSM list lacks bpf: {list}")),
            Some(_) => {}
        }
        for name in expected {
            match self.scenarios.get(name) {
                None => self.errors.push(format!("scenario {name} never started")),
                Some(None) => self.errors.push(format!("scenario {name} never ended")),
                Some(Some(0)) => {}
                Some(Some(rc)) => self.errors.push(format!("scenario {name} exited {rc}")),
            }
            if !self.checks.iter().any(|c| &c.scenario == name) {
                self.errors
                    .push(format!("scenario {name} reported no result"));
            }
        }
        if self.done_uptime.is_none() {
            self.errors
                .push("the guest never printed VMTEST DONE".into());
        }
    }

    pub fn passed(&self) -> usize {
        self.checks.iter().filter(|c| c.passed).count()
    }

    pub fn failed(&self) -> usize {
        self.checks.iter().filter(|c| !c.passed).count()
    }

    /// True when every check passed and the run itself was sound.
    pub fn ok(&self) -> bool {
        self.failed() == 0 && self.errors.is_empty()
    }

    /// A readable summary ending with `N passed, N failed`.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let mut current = "";
        for check in &self.checks {
            if check.scenario != current {
                current = &check.scenario;
                match self.durations.get(current) {
                    Some(seconds) => {
                        let _ = writeln!(out, "  {current} ({seconds:.1}s)");
                    }
                    None => {
                        let _ = writeln!(out, "  {current}");
                    }
                }
            }
            let _ = writeln!(
                out,
                "    {} {:<36} {}",
                if check.passed { "PASS" } else { "FAIL" },
                check.name,
                truncate(&check.detail, 100)
            );
        }
        for (scenario, name, value, unit) in &self.metrics {
            let _ = writeln!(out, "  metric {scenario} {name} = {value} {unit}");
        }
        for error in &self.errors {
            let _ = writeln!(out, "  ERROR {error}");
        }
        let _ = write!(out, "{} passed, {} failed", self.passed(), self.failed());
        out
    }
}

fn uptime<'a>(mut words: impl Iterator<Item = &'a str>) -> Option<f64> {
    words
        .find_map(|w| w.strip_prefix("uptime="))
        .and_then(|v| v.parse().ok())
}

/// True if `line` holds `SRCANARY` followed by 32 hex digits (a real canary, not the word).
pub fn contains_canary(line: &str) -> bool {
    line.match_indices(CANARY_PREFIX).any(|(at, _)| {
        let rest = &line.as_bytes()[at + CANARY_PREFIX.len()..];
        rest.len() >= 32 && rest[..32].iter().all(u8::is_ascii_hexdigit)
    })
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
[    0.000000] Linux version 6.1\r
VMTEST BOOTED uptime=1.50 kernel=6.1\r
VMTEST LSM lockdown,capability,landlock,yama,apparmor,bpf\r
VMTEST SCENARIO harness_lsm START uptime=1.60\r
VMTEST RESULT harness_lsm lsm_has_bpf PASS lockdown,capability,bpf\r
[    2.1] random: crng init done VMTEST RESULT harness_lsm other PASS ok\r
VMTEST METRIC harness_lsm open_ns 1200 ns/op\r
VMTEST SCENARIO harness_lsm END 0 uptime=3.10\r
VMTEST DONE uptime=3.20\r
";

    fn expected() -> Vec<String> {
        vec!["harness_lsm".to_string()]
    }

    #[test]
    fn parse_good_run_is_ok() {
        let report = Report::parse(GOOD, &expected());
        assert!(report.ok(), "{}", report.summary());
        assert_eq!(report.passed(), 2);
        assert_eq!(report.metrics.len(), 1);
        assert_eq!(report.done_uptime, Some(3.2));
        let seconds = report.durations.get("harness_lsm").copied().unwrap_or(0.0);
        assert!((seconds - 1.5).abs() < 1e-9, "{seconds}");
        assert!(report.summary().contains("harness_lsm (1.5s)"));
        assert!(report.summary().ends_with("2 passed, 0 failed"));
    }

    #[test]
    fn parse_failed_check_is_not_ok() {
        let log = GOOD.replace("other PASS", "other FAIL");
        let report = Report::parse(&log, &expected());
        assert!(!report.ok());
        assert_eq!(report.failed(), 1);
    }

    #[test]
    fn parse_missing_done_is_not_ok() {
        let log = GOOD.replace("VMTEST DONE", "");
        let report = Report::parse(&log, &expected());
        assert!(!report.ok());
        assert!(report.errors.iter().any(|e| e.contains("DONE")));
    }

    #[test]
    fn parse_lsm_without_bpf_is_not_ok() {
        let log = GOOD.replace(",bpf\r\nVMTEST SCENARIO", "\r\nVMTEST SCENARIO");
        let report = Report::parse(&log, &expected());
        assert!(report.errors.iter().any(|e| e.contains("lacks bpf")));
    }

    #[test]
    fn parse_canary_on_console_is_not_ok() {
        let log = format!("{GOOD}leak SRCANARY0123456789abcdef0123456789abcdef\n");
        let report = Report::parse(&log, &expected());
        assert!(report.errors.iter().any(|e| e.contains("canary")));
    }

    #[test]
    fn parse_scenario_without_end_or_results_is_not_ok() {
        let log = "VMTEST LSM bpf\nVMTEST SCENARIO s START\nVMTEST DONE\n";
        let report = Report::parse(log, &["s".to_string(), "t".to_string()]);
        let errors = report.errors.join("\n");
        assert!(errors.contains("s never ended"), "{errors}");
        assert!(errors.contains("t never started"), "{errors}");
        assert!(errors.contains("s reported no result"), "{errors}");
    }

    #[test]
    fn contains_canary_word_alone_is_false() {
        assert!(!contains_canary("the SRCANARY prefix"));
        assert!(contains_canary(
            "xSRCANARY0123456789ABCDEF0123456789abcdefy"
        ));
    }
}

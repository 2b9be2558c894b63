//! Pod annotations the webhook understands: Bank-Vaults' keys under both of its prefixes,
//! and the project's own keys under `strongroom.dev/`.
//!
//! # Security
//!
//! Annotations come from the admitted object and are attacker-controlled. This module only
//! finds and normalises them; [`crate::policy`] decides what an object may override.

use std::collections::BTreeMap;

/// The legacy Bank-Vaults prefix.
pub const LEGACY_PREFIX: &str = "vault.security.banzaicloud.io/";
/// The prefix of Bank-Vaults' `secrets-webhook`.
pub const NEW_PREFIX: &str = "secrets-webhook.security.bank-vaults.io/";
/// The prefix of keys for features Bank-Vaults lacks.
pub const PROJECT_PREFIX: &str = "strongroom.dev/";
/// The label (not annotation) that makes the webhook skip an object.
pub const SKIP_LABEL: &str = "security.banzaicloud.io/mutate";

/// Project key set on every mutated pod; its value is the webhook's version.
pub const INJECTED: &str = "strongroom.dev/injected";
/// Project key choosing the ebpf-guard mode for the pod (`enforce` or `audit`).
pub const GUARD_MODE: &str = "strongroom.dev/guard-mode";

/// Every project-owned key with its meaning; the README reproduces this table.
pub const PROJECT_KEYS: &[(&str, &str)] = &[
    (
        INJECTED,
        "set by the webhook on mutated pods to its version; marks the pod as already mutated \
         and lets ebpf-guard find injected pods",
    ),
    (
        GUARD_MODE,
        "`enforce` or `audit`: ebpf-guard mode for the pod; copied into STRONGROOM_GUARD_MODE \
         of injected containers",
    ),
    (
        crate::registry::LOOKUP_ANNOTATION,
        "`\"false\"` opts the pod out of the registry lookup of ENTRYPOINT/CMD (for pods that \
         set `command`)",
    ),
];

/// How the webhook treats a Bank-Vaults key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// Implemented with Bank-Vaults' meaning.
    Supported,
    /// A Bank-Vaults key for a feature Strongroom does not have (vault-agent, consul-template,
    /// secret mutation); accepted with a warning.
    Unsupported,
}

/// Bank-Vaults' annotation names (without prefix) and whether Strongroom implements them.
pub const BANK_VAULTS_KEYS: &[(&str, Support)] = &[
    ("mutate", Support::Supported),
    ("mutate-probes", Support::Supported),
    ("vault-addr", Support::Supported),
    ("vault-role", Support::Supported),
    ("vault-path", Support::Supported),
    ("vault-auth-method", Support::Supported),
    ("vault-skip-verify", Support::Supported),
    ("vault-tls-secret", Support::Supported),
    ("vault-client-timeout", Support::Supported),
    ("vault-ignore-missing-secrets", Support::Supported),
    ("vault-env-passthrough", Support::Supported),
    ("vault-env-daemon", Support::Supported),
    ("vault-env-delay", Support::Supported),
    ("vault-env-from-path", Support::Supported),
    ("vault-env-image", Support::Supported),
    ("vault-env-image-pull-policy", Support::Supported),
    ("vault-namespace", Support::Supported),
    ("run-as-non-root", Support::Supported),
    ("run-as-user", Support::Supported),
    ("run-as-group", Support::Supported),
    ("readonly-root-fs", Support::Supported),
    ("psp-allow-privilege-escalation", Support::Supported),
    ("registry-skip-verify", Support::Supported),
    ("transit-key-id", Support::Supported),
    ("transit-path", Support::Supported),
    ("transit-batch-size", Support::Supported),
    ("enable-json-log", Support::Supported),
    ("log-level", Support::Supported),
    ("mutate-configmap", Support::Unsupported),
    ("inline-mutation", Support::Unsupported),
    ("vault-serviceaccount", Support::Unsupported),
    ("vault-image", Support::Unsupported),
    ("vault-image-pull-policy", Support::Unsupported),
    ("vault-configfile-path", Support::Unsupported),
    ("vault-agent", Support::Unsupported),
    ("vault-agent-configmap", Support::Unsupported),
    ("vault-agent-once", Support::Unsupported),
    ("vault-agent-share-process-namespace", Support::Unsupported),
    ("vault-agent-cpu", Support::Unsupported),
    ("vault-agent-memory", Support::Unsupported),
    ("vault-agent-env-variables", Support::Unsupported),
    ("vault-ct-configmap", Support::Unsupported),
    ("vault-ct-image", Support::Unsupported),
    ("vault-ct-image-pull-policy", Support::Unsupported),
    ("vault-ct-once", Support::Unsupported),
    ("vault-ct-cpu", Support::Unsupported),
    ("vault-ct-memory", Support::Unsupported),
    ("vault-ct-share-process-namespace", Support::Unsupported),
    ("vault-ct-inject-in-initcontainers", Support::Unsupported),
    ("vault-ct-secrets-mount-path", Support::Unsupported),
];

/// The webhook-relevant annotations of one object, keyed by name without prefix.
///
/// When a key is present under both Bank-Vaults prefixes, the newer
/// `secrets-webhook.security.bank-vaults.io/` one wins.
#[derive(Clone, Debug, Default)]
pub struct Annotations {
    values: BTreeMap<String, String>,
    project: BTreeMap<String, String>,
    warnings: Vec<String>,
}

impl Annotations {
    /// Collects the recognised annotations and a warning for every unknown key under a
    /// recognised prefix, suggesting the closest known key.
    pub fn parse(annotations: Option<&BTreeMap<String, String>>) -> Self {
        let mut out = Self::default();
        let Some(annotations) = annotations else {
            return out;
        };
        // Legacy first so that the new prefix overwrites it.
        for prefix in [LEGACY_PREFIX, NEW_PREFIX] {
            for (key, value) in annotations {
                let Some(name) = key.strip_prefix(prefix) else {
                    continue;
                };
                match BANK_VAULTS_KEYS.iter().find(|(known, _)| *known == name) {
                    Some((_, Support::Supported)) => {
                        out.values.insert(name.to_owned(), value.clone());
                    }
                    Some((_, Support::Unsupported)) => out.warnings.push(format!(
                        "annotation {key} is a Bank-Vaults feature Strongroom does not \
                         implement; it is ignored"
                    )),
                    None => out.warnings.push(unknown_key_warning(
                        key,
                        prefix,
                        name,
                        BANK_VAULTS_KEYS.iter().map(|(k, _)| *k),
                    )),
                }
            }
        }
        for (key, value) in annotations {
            if let Some(name) = key.strip_prefix(PROJECT_PREFIX) {
                if PROJECT_KEYS.iter().any(|(known, _)| *known == key) {
                    out.project.insert(key.clone(), value.clone());
                } else {
                    out.warnings.push(unknown_key_warning(
                        key,
                        PROJECT_PREFIX,
                        name,
                        PROJECT_KEYS
                            .iter()
                            .filter_map(|(k, _)| k.strip_prefix(PROJECT_PREFIX)),
                    ));
                }
            }
        }
        out
    }

    /// The value of a Bank-Vaults key (name without prefix).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The value of a project key (full key, e.g. [`GUARD_MODE`]).
    pub fn project(&self, key: &str) -> Option<&str> {
        self.project.get(key).map(String::as_str)
    }

    /// A Bank-Vaults boolean (`"true"`, case-insensitive, as Go's `strconv.ParseBool` would
    /// accept: `1`, `t`, `true`).
    pub fn flag(&self, name: &str) -> Option<bool> {
        self.get(name).map(parse_bool)
    }

    /// Warnings about unknown or unsupported keys.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// Go's `strconv.ParseBool` truth values; anything else is false.
pub fn parse_bool(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "t" | "true"
    )
}

fn unknown_key_warning<'a>(
    key: &str,
    prefix: &str,
    name: &str,
    known: impl Iterator<Item = &'a str>,
) -> String {
    let closest = known.min_by_key(|candidate| levenshtein(name, candidate));
    match closest {
        Some(candidate) if levenshtein(name, candidate) <= candidate.len().max(name.len()) / 2 => {
            format!("unknown annotation {key}; did you mean {prefix}{candidate}?")
        }
        _ => format!("unknown annotation {key} is ignored"),
    }
}

/// Edit distance between two keys (short ASCII strings).
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn parse_both_prefixes_new_prefix_wins() {
        let a = map(&[
            ("vault.security.banzaicloud.io/vault-role", "old"),
            ("secrets-webhook.security.bank-vaults.io/vault-role", "new"),
            ("vault.security.banzaicloud.io/vault-path", "k8s"),
        ]);
        let parsed = Annotations::parse(Some(&a));
        assert_eq!(parsed.get("vault-role"), Some("new"));
        assert_eq!(parsed.get("vault-path"), Some("k8s"));
        assert!(parsed.warnings().is_empty());
    }

    #[test]
    fn parse_unknown_key_suggests_closest() {
        let a = map(&[("vault.security.banzaicloud.io/vault-rol", "x")]);
        let parsed = Annotations::parse(Some(&a));
        assert_eq!(
            parsed.warnings(),
            [
                "unknown annotation vault.security.banzaicloud.io/vault-rol; did you mean \
              vault.security.banzaicloud.io/vault-role?"
            ]
        );
    }

    #[test]
    fn parse_unknown_project_key_suggests_closest() {
        let a = map(&[("strongroom.dev/guard-mod", "audit")]);
        let parsed = Annotations::parse(Some(&a));
        assert!(parsed.warnings()[0].contains("did you mean strongroom.dev/guard-mode"));
        assert_eq!(parsed.project(GUARD_MODE), None);
    }

    #[test]
    fn parse_every_project_key_is_known_without_warning() {
        for (key, _) in PROJECT_KEYS {
            let a = map(&[(key, "false")]);
            let parsed = Annotations::parse(Some(&a));
            assert!(
                parsed.warnings().is_empty(),
                "{key}: {:?}",
                parsed.warnings()
            );
            assert_eq!(parsed.project(key), Some("false"));
        }
    }

    #[test]
    fn parse_unsupported_key_warns() {
        let a = map(&[("vault.security.banzaicloud.io/vault-agent-configmap", "x")]);
        let parsed = Annotations::parse(Some(&a));
        assert!(parsed.warnings()[0].contains("does not implement"));
    }

    #[test]
    fn parse_foreign_prefix_is_ignored() {
        let a = map(&[("example.com/vault-role", "x")]);
        let parsed = Annotations::parse(Some(&a));
        assert!(parsed.warnings().is_empty());
        assert_eq!(parsed.get("vault-role"), None);
    }

    #[test]
    fn parse_bool_go_values() {
        for t in ["true", "TRUE", "1", "t"] {
            assert!(parse_bool(t), "{t}");
        }
        for f in ["false", "0", "yes", ""] {
            assert!(!parse_bool(f), "{f}");
        }
    }

    #[test]
    fn project_keys_all_under_project_prefix() {
        for (key, _) in PROJECT_KEYS {
            assert!(key.starts_with(PROJECT_PREFIX), "{key}");
        }
    }
}

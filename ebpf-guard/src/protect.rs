//! Reconciliation: makes the kernel's `injectors`, `tokens` and `containers` maps match the
//! injected pods found on disk and the node's mode.
use std::collections::{BTreeMap, HashMap};

use crate::abi::{InodeKey, InodePolicy};
use crate::cgroup::CgroupIndex;
use crate::config::Mode;
use crate::kubelet::{ProtectedPod, pod_tag};
use crate::loader::{Guard, LoaderError};

/// What one reconciliation changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Injector or token registrations added or updated.
    pub registered: usize,
    /// Registrations removed (pods gone, tokens rotated).
    pub unregistered: usize,
    /// Container entries whose mode was updated.
    pub modes_updated: usize,
    /// Cgroup ids of the containers that went from unprotected to protected.
    pub protected: Vec<u64>,
    /// Container entries dropped because their cgroup is gone.
    pub containers_dropped: usize,
}

/// The desired registrations for a set of pods under a node mode.
pub fn desired(
    pods: &BTreeMap<String, ProtectedPod>,
    node_mode: Mode,
) -> (
    BTreeMap<InodeKey, InodePolicy>,
    BTreeMap<InodeKey, InodePolicy>,
) {
    let mut injectors = BTreeMap::new();
    let mut tokens = BTreeMap::new();
    for pod in pods.values() {
        let policy = InodePolicy {
            mode: node_mode.stricter(pod.mode).abi(),
            pad: 0,
            pod_tag: pod_tag(&pod.uid),
        };
        injectors.insert(pod.injector.1, policy);
        for (_, key) in &pod.tokens {
            tokens.insert(*key, policy);
        }
    }
    (injectors, tokens)
}

/// Applies the desired state to the kernel maps. `cgroups` (freshly refreshed) lets it drop
/// container entries whose cgroup no longer exists.
pub fn reconcile(
    guard: &mut Guard,
    pods: &BTreeMap<String, ProtectedPod>,
    node_mode: Mode,
    cgroups: Option<&CgroupIndex>,
) -> Result<Changes, LoaderError> {
    let (want_injectors, want_tokens) = desired(pods, node_mode);
    let mut changes = Changes::default();

    let have = guard.injectors();
    for key in have.keys().filter(|k| !want_injectors.contains_key(k)) {
        guard.remove_injector(key)?;
        changes.unregistered += 1;
    }
    for (key, policy) in &want_injectors {
        if have.get(key) != Some(policy) {
            guard.put_injector(*key, *policy)?;
            changes.registered += 1;
        }
    }

    // Containers before tokens: a token must never be registered while its own pod's
    // containers are not yet marked, or vault-env could be refused its own token.
    let by_tag: HashMap<u64, InodePolicy> = want_injectors
        .values()
        .map(|policy| (policy.pod_tag, *policy))
        .collect();
    for (cg, mut state) in guard.containers() {
        if let Some(cgroups) = cgroups
            && !cgroups.contains(cg)
        {
            guard.remove_container(cg)?;
            changes.containers_dropped += 1;
            continue;
        }
        // The kernel tags containers whose lineage ran an injector; the agent also marks
        // every container of an injected pod it can place through the cgroup tree (covers
        // pods that started before their injector was registered).
        let policy = by_tag.get(&state.pod_tag).copied().or_else(|| {
            let uid = cgroups?.get(cg)?.pod_uid.clone()?;
            by_tag.get(&pod_tag(&uid)).copied()
        });
        if let Some(policy) = policy
            && (policy.mode != state.mode || policy.pod_tag != state.pod_tag)
        {
            if state.mode == 0 {
                changes.protected.push(cg);
            }
            state.mode = policy.mode;
            state.pod_tag = policy.pod_tag;
            guard.put_container(cg, state)?;
            changes.modes_updated += 1;
        }
    }

    let have = guard.tokens();
    for key in have.keys().filter(|k| !want_tokens.contains_key(k)) {
        guard.remove_token(key)?;
        changes.unregistered += 1;
    }
    for (key, policy) in &want_tokens {
        if have.get(key) != Some(policy) {
            guard.put_token(*key, *policy)?;
            changes.registered += 1;
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{MODE_AUDIT, MODE_ENFORCE};
    use std::path::PathBuf;

    fn pod(uid: &str, ino: u64, tokens: &[u64], mode: Option<Mode>) -> ProtectedPod {
        let key = |ino| InodeKey {
            ino,
            dev: 7,
            pad: 0,
        };
        ProtectedPod {
            uid: uid.to_owned(),
            injector: (PathBuf::from("/x"), key(ino)),
            tokens: tokens
                .iter()
                .map(|i| (PathBuf::from("/t"), key(*i)))
                .collect(),
            mode,
        }
    }

    #[test]
    fn desired_pod_mode_only_tightens_node_mode() {
        let mut pods = BTreeMap::new();
        pods.insert("a".into(), pod("a", 1, &[11], Some(Mode::Enforce)));
        pods.insert("b".into(), pod("b", 2, &[12, 13], Some(Mode::Audit)));
        pods.insert("c".into(), pod("c", 3, &[], None));
        let (injectors, tokens) = desired(&pods, Mode::Audit);
        let mode_of = |ino| {
            injectors[&InodeKey {
                ino,
                dev: 7,
                pad: 0,
            }]
                .mode
        };
        assert_eq!(mode_of(1), MODE_ENFORCE);
        assert_eq!(mode_of(2), MODE_AUDIT);
        assert_eq!(mode_of(3), MODE_AUDIT);
        assert_eq!(tokens.len(), 3);
        assert_eq!(
            tokens[&InodeKey {
                ino: 12,
                dev: 7,
                pad: 0
            }]
                .pod_tag,
            pod_tag("b")
        );

        let (injectors, _) = desired(&pods, Mode::Enforce);
        assert!(injectors.values().all(|p| p.mode == MODE_ENFORCE));
    }
}

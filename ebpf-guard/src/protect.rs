//! Reconciliation: makes the kernel's `injectors`, `tokens` and `policies` maps match the
//! injected pods found on disk and the node's mode.
//!
//! Containers are reconciled in two steps, [`plan_containers`] (read) and
//! [`apply_containers`] (write), and the BPF side may run in between. That is safe because
//! the only container data the agent writes is its own policy ([`ContainerPolicy`]): the
//! kernel's bookkeeping ([`ContainerState`]: claimed, reserved, owner, degraded) lives in
//! another map, which a [`ContainerWrite`] cannot express. A policy is created only if still
//! absent (the kernel creates policies too, never rewrites them), so no write can erase
//! anything the kernel wrote after the plan read it.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::abi::{ContainerPolicy, ContainerState, InodeKey, InodePolicy};
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
    /// Container policies created or updated.
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

/// One container write of a reconciliation. The agent only ever writes its own policy or
/// forgets a container whose cgroup is gone; there is no way to write the kernel's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerWrite {
    /// Give a container without a policy this one (only if it still has none when applied).
    Protect {
        /// Cgroup id.
        cg: u64,
        /// The policy.
        policy: ContainerPolicy,
    },
    /// Replace a container's policy (mode or pod changed).
    Update {
        /// Cgroup id.
        cg: u64,
        /// The new policy.
        policy: ContainerPolicy,
    },
    /// Forget a container whose cgroup is gone (its policy and the kernel's entry).
    Drop {
        /// Cgroup id.
        cg: u64,
    },
}

/// The container writes that bring `policies` in line with `by_tag` (the desired policy of
/// each injected pod, by pod tag). A container's pod is the one its policy names (the kernel
/// tags the containers whose lineage ran an injector), else the pod its cgroup belongs to:
/// the agent also marks every container of an injected pod it can place through the cgroup
/// tree (pods that started before their injector was registered). `cgroups` (freshly
/// refreshed) lets it drop containers whose cgroup no longer exists.
pub fn plan_containers(
    containers: &BTreeMap<u64, ContainerState>,
    policies: &BTreeMap<u64, ContainerPolicy>,
    by_tag: &HashMap<u64, ContainerPolicy>,
    cgroups: Option<&CgroupIndex>,
) -> Vec<ContainerWrite> {
    let known: BTreeSet<u64> = containers.keys().chain(policies.keys()).copied().collect();
    let mut writes = Vec::new();
    for cg in known {
        if let Some(cgroups) = cgroups
            && !cgroups.contains(cg)
        {
            writes.push(ContainerWrite::Drop { cg });
            continue;
        }
        let have = policies.get(&cg);
        let want = have
            .and_then(|policy| by_tag.get(&policy.pod_tag))
            .or_else(|| {
                let uid = cgroups?.get(cg)?.pod_uid.as_deref()?;
                by_tag.get(&pod_tag(uid))
            })
            .copied();
        match (have, want) {
            (None, Some(policy)) => writes.push(ContainerWrite::Protect { cg, policy }),
            (Some(have), Some(policy)) if *have != policy => {
                writes.push(ContainerWrite::Update { cg, policy });
            }
            _ => {}
        }
    }
    writes
}

/// Applies container writes planned from an earlier read; whatever the kernel wrote since
/// is kept. A container that got a policy from the kernel since the read keeps it (the next
/// reconciliation reads it and updates it if needed).
pub fn apply_containers(
    guard: &mut Guard,
    writes: &[ContainerWrite],
    changes: &mut Changes,
) -> Result<(), LoaderError> {
    for write in writes {
        match *write {
            ContainerWrite::Protect { cg, policy } => {
                if guard.create_policy(cg, policy)? {
                    changes.protected.push(cg);
                    changes.modes_updated += 1;
                }
            }
            ContainerWrite::Update { cg, policy } => {
                if guard.replace_policy(cg, policy)? {
                    changes.modes_updated += 1;
                }
            }
            ContainerWrite::Drop { cg } => {
                guard.remove_container(cg)?;
                changes.containers_dropped += 1;
            }
        }
    }
    Ok(())
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
    let by_tag: HashMap<u64, ContainerPolicy> = want_injectors
        .values()
        .map(|policy| (policy.pod_tag, ContainerPolicy::from(*policy)))
        .collect();
    let writes = plan_containers(&guard.containers(), &guard.policies(), &by_tag, cgroups);
    apply_containers(guard, &writes, &mut changes)?;

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
    use crate::abi::{CONTAINER_ACTIVE, CONTAINER_DEGRADED, MODE_AUDIT, MODE_ENFORCE};
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

    fn policy(mode: u32, pod_tag: u64) -> ContainerPolicy {
        ContainerPolicy {
            mode,
            pad: 0,
            pod_tag,
        }
    }

    #[test]
    fn plan_containers_degraded_container_mode_change_writes_only_its_policy() {
        let degraded = ContainerState {
            flags: CONTAINER_ACTIVE | CONTAINER_DEGRADED,
            owner_tgid: 42,
        };
        let containers = BTreeMap::from([(10, degraded), (11, degraded), (12, degraded)]);
        // 10: mode changes; 11: unchanged; 12: its pod is not injected (any more).
        let policies = BTreeMap::from([
            (10, policy(MODE_AUDIT, 7)),
            (11, policy(MODE_ENFORCE, 8)),
            (12, policy(MODE_AUDIT, 9)),
        ]);
        let by_tag = HashMap::from([(7, policy(MODE_ENFORCE, 7)), (8, policy(MODE_ENFORCE, 8))]);
        assert_eq!(
            plan_containers(&containers, &policies, &by_tag, None),
            vec![ContainerWrite::Update {
                cg: 10,
                policy: policy(MODE_ENFORCE, 7)
            }]
        );
    }

    #[test]
    fn plan_containers_policy_without_kernel_entry_is_still_reconciled() {
        // The kernel created the policy (injector exec) after the agent read container_state.
        let policies = BTreeMap::from([(10, policy(MODE_AUDIT, 7))]);
        let by_tag = HashMap::from([(7, policy(MODE_ENFORCE, 7))]);
        assert_eq!(
            plan_containers(&BTreeMap::new(), &policies, &by_tag, None),
            vec![ContainerWrite::Update {
                cg: 10,
                policy: policy(MODE_ENFORCE, 7)
            }]
        );
    }

    #[test]
    fn plan_containers_unplaceable_container_without_policy_stays_unprotected() {
        // Without a cgroup index the agent cannot tell the container's pod: no write.
        let containers = BTreeMap::from([(10, ContainerState::default())]);
        let by_tag = HashMap::from([(7, policy(MODE_ENFORCE, 7))]);
        assert!(plan_containers(&containers, &BTreeMap::new(), &by_tag, None).is_empty());
    }
}

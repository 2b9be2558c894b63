//! Host-kernel tests of the real BPF object: what the build host's kernel allows (tp_btf
//! lineage tracking, maps, pinning, ring buffer), and that LSM unavailability is reported
//! correctly. Enforcement itself is proven in the QEMU guest (`tests/vm/scenarios/guard_*`).
//!
//! Needs root, bpffs and a cgroup v2 hierarchy (mounted here if missing).
use std::fs;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ebpf_guard::abi::{
    CONFIG_HOST_BYPASS, CONTAINER_ACTIVE, CONTAINER_DEGRADED, ContainerPolicy, ContainerState,
    DECISION_ALLOW, GuardConfig, HOOK_LINEAGE_START, InodePolicy, MODE_AUDIT, MODE_ENFORCE,
    RawEvent,
};
use ebpf_guard::cgroup::{self, CgroupIndex};
use ebpf_guard::config::Mode;
use ebpf_guard::kubelet::{self, pod_tag};
use ebpf_guard::loader::{self, Guard, LoadOptions, PROGRAMS, ProgramKind};
use ebpf_guard::protect;

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

fn ensure_bpffs() {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if !mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
    {
        let _ = Command::new("mount")
            .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
            .status();
    }
}

/// A guard loaded into its own pin directory, detached on drop.
struct TestGuard {
    guard: Option<Guard>,
    pin_dir: PathBuf,
}

impl TestGuard {
    fn load(max_entries: Vec<(&'static str, u32)>) -> Self {
        ensure_bpffs();
        let pin_dir = Path::new("/sys/fs/bpf").join(unique("strongroom-test"));
        let guard = Guard::load(&LoadOptions {
            pin_dir: pin_dir.clone(),
            lsm: false,
            max_entries,
        })
        .expect("the object loads and its tp_btf programs attach on the host");
        Self {
            guard: Some(guard),
            pin_dir,
        }
    }

    fn get(&mut self) -> &mut Guard {
        self.guard.as_mut().expect("guard present")
    }
}

impl Drop for TestGuard {
    fn drop(&mut self) {
        self.guard.take();
        let _ = loader::detach(&self.pin_dir);
    }
}

/// A cgroup v2 directory tree made for one test, removed on drop.
struct TestCgroup {
    base: PathBuf,
    leaf: PathBuf,
}

impl TestCgroup {
    /// `<root>/<unique>/<leaf>`: `<unique>` plays the kubepods root.
    fn new() -> Self {
        let root = cgroup::find_cgroup2_root().expect("a cgroup v2 hierarchy");
        let base = root.join(unique("strongroom-kubepods"));
        let leaf = base
            .join("pod0f0e0d0c-0000-1111-2222-333344445555")
            .join("ctr");
        fs::create_dir_all(&leaf).expect("create test cgroups (needs root)");
        Self { base, leaf }
    }

    fn id(&self) -> u64 {
        cgroup::cgroup_id(&self.leaf).expect("cgroup id")
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Kill whatever the test left behind (orphaned sleeps) so the directories can go.
        let _ = fs::write(self.base.join("cgroup.kill"), "1");
        let mut dir = self.leaf.clone();
        while dir.starts_with(&self.base) {
            // Processes may take a moment to leave after being killed.
            for _ in 0..50 {
                if fs::remove_dir(&dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            match dir.parent() {
                Some(parent) => dir = parent.to_owned(),
                None => break,
            }
        }
    }
}

/// A copy of /bin/sh registered as the injector.
fn injector_copy(dir: &Path) -> PathBuf {
    let path = dir.join("vault-env");
    fs::copy("/bin/sh", &path).expect("copy /bin/sh");
    path
}

/// Runs `script` under the injector, from a wrapper shell that first joins `cgroup`.
/// The injector's first line of output is its pid; the script prints more.
fn spawn_in_cgroup(
    cgroup: &Path,
    injector: &Path,
    script: &str,
) -> (Child, BufReader<std::process::ChildStdout>) {
    let wrapper = format!(
        "echo $$ > {}/cgroup.procs && exec {} -c 'echo $$; {}'",
        cgroup.display(),
        injector.display(),
        script
    );
    let mut child = Command::new("/bin/sh")
        .args(["-c", &wrapper])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn wrapper");
    let stdout = child.stdout.take().expect("stdout");
    (child, BufReader::new(stdout))
}

fn read_pid(reader: &mut BufReader<std::process::ChildStdout>) -> u32 {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read pid line");
    line.trim()
        .parse()
        .unwrap_or_else(|_| panic!("pid line, got {line:?}"))
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn register(
    guard: &mut Guard,
    injector: &Path,
    mode: u32,
    flags: u32,
    kubepods: Option<(u64, u32)>,
) {
    let key = kubelet::inode_key(injector).expect("stat injector");
    guard
        .put_injector(
            key,
            InodePolicy {
                mode,
                pad: 0,
                pod_tag: 42,
            },
        )
        .expect("register injector");
    let (kubepods_cg, kubepods_level) = kubepods.unwrap_or((0, 0));
    guard
        .set_config(GuardConfig {
            kubepods_cg,
            kubepods_level,
            flags,
        })
        .expect("write config");
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn guard_load_on_host_attaches_tracepoints_and_second_load_reuses_pins() {
    let mut first = TestGuard::load(Vec::new());
    let tracepoints: Vec<&str> = PROGRAMS
        .iter()
        .filter(|p| p.2 == ProgramKind::TracePoint)
        .map(|p| p.0)
        .collect();
    assert_eq!(first.get().attached, tracepoints);
    assert!(first.get().reused.is_empty());
    for name in &tracepoints {
        assert!(
            first.pin_dir.join("links").join(name).exists(),
            "link {name} pinned"
        );
    }

    // A restarted agent: same pin directory, links reused, maps shared.
    let second = Guard::load(&LoadOptions {
        pin_dir: first.pin_dir.clone(),
        lsm: false,
        max_entries: Vec::new(),
    })
    .expect("reload over pinned state");
    assert!(second.attached.is_empty());
    assert_eq!(second.reused, tracepoints);
    let key = ebpf_guard::abi::InodeKey {
        ino: 12345,
        dev: 7,
        pad: 0,
    };
    let policy = InodePolicy {
        mode: MODE_AUDIT,
        pad: 0,
        pod_tag: 9,
    };
    first
        .get()
        .put_injector(key, policy)
        .expect("insert via first agent");
    assert_eq!(second.injectors().get(&key), Some(&policy));
}

#[test]
fn lineage_injector_exec_starts_lineage_forks_inherit_and_exit_cleans_up() {
    let mut tg = TestGuard::load(Vec::new());
    let dir = tempfile::tempdir().expect("tempdir");
    let injector = injector_copy(dir.path());
    let cg = TestCgroup::new();
    let base_id = cgroup::cgroup_id(&cg.base).expect("base id");
    let base_level = u32::try_from(
        cg.base
            .strip_prefix(cgroup::find_cgroup2_root().expect("root"))
            .expect("under root")
            .components()
            .count(),
    )
    .expect("level");
    // Host bypass on, with the test's base cgroup as the kubepods root: the child is not host.
    register(
        tg.get(),
        &injector,
        MODE_ENFORCE,
        CONFIG_HOST_BYPASS,
        Some((base_id, base_level)),
    );
    let mut events = tg.get().take_events().expect("ring buffer");

    let (mut root, mut out) = spawn_in_cgroup(&cg.leaf, &injector, "sleep 30 & echo $!; wait");
    let root_pid = read_pid(&mut out);
    let child_pid = read_pid(&mut out);

    let lineage = tg.get().lineage();
    let root_entry = lineage.get(&root_pid).expect("lineage root tracked");
    assert_eq!(root_entry.container_cg, cg.id());
    let child_entry = lineage
        .get(&child_pid)
        .expect("forked child inherits trust");
    assert_eq!(child_entry.container_cg, cg.id());
    let state = tg.get().containers()[&cg.id()];
    assert_eq!(state.flags & CONTAINER_ACTIVE, CONTAINER_ACTIVE);
    assert_eq!(state.owner_tgid, root_pid);
    let policy = tg.get().policies()[&cg.id()];
    assert_eq!(policy.mode, MODE_ENFORCE);
    assert_eq!(policy.pod_tag, 42);

    let mut start = None;
    wait_until("lineage start event", || {
        while let Some(item) = events.next() {
            let raw = RawEvent::from_bytes(&item).expect("decodable event");
            if raw.hook == HOOK_LINEAGE_START {
                start = Some(raw);
            }
        }
        start.is_some()
    });
    let start = start.expect("event");
    assert_eq!(start.decision, DECISION_ALLOW);
    assert_eq!(start.subject_pid, root_pid);
    assert_eq!(start.lineage_cg, cg.id());
    assert_eq!(start.subject_cg, cg.id());
    assert_eq!(ebpf_guard::abi::comm_str(&start.subject_comm), "vault-env");

    // An outsider joining the same cgroup and running the injector gets no lineage.
    let (mut outsider, mut out2) = spawn_in_cgroup(&cg.leaf, &injector, "sleep 30");
    let outsider_pid = read_pid(&mut out2);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !tg.get().lineage().contains_key(&outsider_pid),
        "second exec in container is an outsider"
    );

    kill(&mut outsider);
    let _ = Command::new("kill").arg(child_pid.to_string()).status();
    kill(&mut root);
    wait_until("lineage cleanup at exit", || {
        let lineage = tg.get().lineage();
        !lineage.contains_key(&root_pid) && !lineage.contains_key(&child_pid)
    });
}

#[test]
fn lineage_first_exec_in_kubepods_container_is_tracked_then_agent_marks_pod() {
    let mut tg = TestGuard::load(Vec::new());
    let cg = TestCgroup::new();
    let root_dir = cgroup::find_cgroup2_root().expect("root");
    let base_id = cgroup::cgroup_id(&cg.base).expect("base id");
    let base_level = u32::try_from(
        cg.base
            .strip_prefix(&root_dir)
            .expect("under root")
            .components()
            .count(),
    )
    .expect("level");
    tg.get()
        .set_config(GuardConfig {
            kubepods_cg: base_id,
            kubepods_level: base_level,
            flags: CONFIG_HOST_BYPASS,
        })
        .expect("config");
    // No injector registered yet: the container's first exec still roots its lineage.
    let (mut root, mut out) =
        spawn_in_cgroup(&cg.leaf, Path::new("/bin/sh"), "sleep 30 & echo $!; wait");
    let root_pid = read_pid(&mut out);
    let child_pid = read_pid(&mut out);
    let lineage = tg.get().lineage();
    assert_eq!(
        lineage.get(&root_pid).map(|e| e.container_cg),
        Some(cg.id())
    );
    assert_eq!(
        lineage.get(&child_pid).map(|e| e.container_cg),
        Some(cg.id())
    );
    assert!(tg.get().containers().contains_key(&cg.id()));
    assert!(
        !tg.get().policies().contains_key(&cg.id()),
        "not protected before the agent knows the pod"
    );

    // The agent then finds the pod's injector on disk and marks the container by pod uid.
    let kubelet_root = tempfile::tempdir().expect("tempdir");
    let uid = "0f0e0d0c-0000-1111-2222-333344445555";
    let injector_dir = kubelet_root
        .path()
        .join("pods")
        .join(uid)
        .join(kubelet::INJECTOR_DIR);
    fs::create_dir_all(&injector_dir).expect("mkdir");
    fs::write(injector_dir.join("vault-env"), b"bin").expect("write");
    let pods = kubelet::scan(kubelet_root.path()).expect("scan");
    let mut index = CgroupIndex::new(root_dir);
    index.refresh();
    let changes =
        protect::reconcile(tg.get(), &pods, Mode::Enforce, Some(&index)).expect("reconcile");
    assert_eq!(changes.modes_updated, 1);
    assert_eq!(changes.protected, vec![cg.id()]);
    let policy = tg.get().policies()[&cg.id()];
    assert_eq!(policy.mode, MODE_ENFORCE);
    assert_eq!(policy.pod_tag, pod_tag(uid));

    let _ = Command::new("kill").arg(child_pid.to_string()).status();
    kill(&mut root);
}

#[test]
fn backfill_running_container_claims_init_tree_but_not_later_exec_session() {
    let mut tg = TestGuard::load(Vec::new());
    let cg = TestCgroup::new();
    // No config: the kernel roots nothing by itself here, as for a container that started
    // before the guard was loaded.
    let (mut root, mut out) =
        spawn_in_cgroup(&cg.leaf, Path::new("/bin/sh"), "sleep 30 & echo $!; wait");
    let root_pid = read_pid(&mut out);
    let child_pid = read_pid(&mut out);
    assert!(tg.get().lineage().is_empty());

    let added = ebpf_guard::backfill::claim_container(
        tg.get(),
        &cg.leaf,
        cg.id(),
        MODE_ENFORCE,
        7,
        Path::new("/proc"),
    )
    .expect("claim");
    assert!(
        added.is_some_and(|n| n >= 2),
        "init and child claimed: {added:?}"
    );
    let lineage = tg.get().lineage();
    assert_eq!(
        lineage
            .get(&root_pid)
            .map(|e| (e.start_time, e.container_cg)),
        Some((0, cg.id()))
    );
    assert!(lineage.contains_key(&child_pid));
    let state = tg.get().containers()[&cg.id()];
    assert_eq!(
        (state.flags & CONTAINER_ACTIVE, state.owner_tgid),
        (CONTAINER_ACTIVE, root_pid)
    );
    let policy = tg.get().policies()[&cg.id()];
    assert_eq!((policy.mode, policy.pod_tag), (MODE_ENFORCE, 7));
    // Claiming again is a no-op: the container is known.
    assert_eq!(
        ebpf_guard::backfill::claim_container(
            tg.get(),
            &cg.leaf,
            cg.id(),
            MODE_ENFORCE,
            7,
            Path::new("/proc")
        )
        .expect("claim"),
        None
    );

    // Exit cleanup removes backfilled entries too.
    let _ = Command::new("kill").arg(child_pid.to_string()).status();
    wait_until("backfilled child removed at exit", || {
        !tg.get().lineage().contains_key(&child_pid)
    });
    kill(&mut root);
}

#[test]
fn lineage_host_task_outside_kubepods_starts_no_lineage() {
    let mut tg = TestGuard::load(Vec::new());
    let dir = tempfile::tempdir().expect("tempdir");
    let injector = injector_copy(dir.path());
    let cg = TestCgroup::new();
    // Bypass on and no kubepods tree: every initial-PID-namespace task is host.
    register(tg.get(), &injector, MODE_ENFORCE, CONFIG_HOST_BYPASS, None);
    let (mut root, mut out) = spawn_in_cgroup(&cg.leaf, &injector, "sleep 30");
    let root_pid = read_pid(&mut out);
    std::thread::sleep(Duration::from_millis(100));
    assert!(!tg.get().lineage().contains_key(&root_pid));
    assert!(tg.get().containers().is_empty());
    kill(&mut root);
}

#[test]
fn lineage_full_map_marks_container_degraded() {
    // Room for the root only: the forked child cannot be tracked, so the container fails closed.
    let mut tg = TestGuard::load(vec![("lineage", 1)]);
    let dir = tempfile::tempdir().expect("tempdir");
    let injector = injector_copy(dir.path());
    let cg = TestCgroup::new();
    register(tg.get(), &injector, MODE_ENFORCE, 0, None);
    let (mut root, mut out) = spawn_in_cgroup(&cg.leaf, &injector, "sleep 30 & echo $!; wait");
    let root_pid = read_pid(&mut out);
    let child_pid = read_pid(&mut out);
    let lineage = tg.get().lineage();
    assert!(lineage.contains_key(&root_pid));
    assert!(!lineage.contains_key(&child_pid));
    let state = tg.get().containers()[&cg.id()];
    assert_eq!(state.flags & CONTAINER_DEGRADED, CONTAINER_DEGRADED);
    assert!(tg.get().stats().expect("stats").lineage_full >= 1);
    // The kernel raised the global counter that opens the slow path for untracked targets.
    assert!(tg.get().degraded_count().expect("guard_state") >= 1);
    let _ = Command::new("kill").arg(child_pid.to_string()).status();
    kill(&mut root);
}

#[test]
fn reconcile_mode_change_racing_kernel_degrade_keeps_container_failing_closed() {
    // The interleaving of the old bug, with the real BPF program: the agent reads the maps
    // and plans a mode change, then the kernel marks the container degraded (a fork finds the
    // lineage map full), then the agent writes. When the agent wrote the whole container value
    // it had read, that write erased the degraded flag (and any other kernel-set field).
    let mut tg = TestGuard::load(vec![("lineage", 1)]);
    let dir = tempfile::tempdir().expect("tempdir");
    let injector = injector_copy(dir.path());
    let fifo = dir.path().join("go");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let cg = TestCgroup::new();
    register(tg.get(), &injector, MODE_AUDIT, 0, None);
    // `read` is a shell builtin: the root forks nothing until the test writes to the FIFO.
    let script = format!("read go < {}; sleep 30 & echo $!; wait", fifo.display());
    let (mut root, mut out) = spawn_in_cgroup(&cg.leaf, &injector, &script);
    let root_pid = read_pid(&mut out);
    let before = tg.get().containers()[&cg.id()];
    assert_eq!(before.flags & CONTAINER_DEGRADED, 0);
    assert_eq!(tg.get().policies()[&cg.id()].mode, MODE_AUDIT);

    // The agent's read: the pod now wants enforce.
    let by_tag = std::collections::HashMap::from([(
        42,
        ContainerPolicy {
            mode: MODE_ENFORCE,
            pad: 0,
            pod_tag: 42,
        },
    )]);
    let writes =
        protect::plan_containers(&tg.get().containers(), &tg.get().policies(), &by_tag, None);
    assert_eq!(writes.len(), 1, "{writes:?}");

    // The kernel, between the read and the write: the forked child cannot be tracked.
    fs::write(&fifo, "go\n").expect("release the root");
    let child_pid = read_pid(&mut out);
    assert!(!tg.get().lineage().contains_key(&child_pid));
    let degraded = tg.get().containers()[&cg.id()];
    assert_eq!(degraded.flags & CONTAINER_DEGRADED, CONTAINER_DEGRADED);

    // The agent's write.
    let mut changes = protect::Changes::default();
    protect::apply_containers(tg.get(), &writes, &mut changes).expect("apply");
    assert_eq!(changes.modes_updated, 1);
    assert_eq!(
        tg.get().containers()[&cg.id()],
        degraded,
        "every kernel-written field survives the agent's write"
    );
    let after = tg.get().containers()[&cg.id()];
    let both = CONTAINER_ACTIVE | CONTAINER_DEGRADED;
    assert_eq!((after.flags & both, after.owner_tgid), (both, root_pid));
    assert_eq!(tg.get().policies()[&cg.id()].mode, MODE_ENFORCE);
    assert!(tg.get().degraded_count().expect("guard_state") >= 1);

    let _ = Command::new("kill").arg(child_pid.to_string()).status();
    kill(&mut root);
}

#[test]
fn reconcile_protect_racing_kernel_policy_keeps_kernel_policy_then_converges() {
    // The other interleaving: the agent plans to give an unprotected container a policy, then
    // a lineage member runs the injector and the kernel creates the container's policy, then
    // the agent writes. The agent's create must not replace what the kernel just wrote; the
    // next reconciliation reads the kernel's policy and brings it to the desired one.
    let mut tg = TestGuard::load(Vec::new());
    let dir = tempfile::tempdir().expect("tempdir");
    let injector = injector_copy(dir.path());
    let fifo = dir.path().join("go");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let cg = TestCgroup::new();
    let root_dir = cgroup::find_cgroup2_root().expect("root");
    let base_level = u32::try_from(
        cg.base
            .strip_prefix(&root_dir)
            .expect("under root")
            .components()
            .count(),
    )
    .expect("level");
    let base_id = cgroup::cgroup_id(&cg.base).expect("base id");
    tg.get()
        .set_config(GuardConfig {
            kubepods_cg: base_id,
            kubepods_level: base_level,
            flags: CONFIG_HOST_BYPASS,
        })
        .expect("config");
    // The container's first exec roots its lineage; later the root execs the injector.
    let script = format!(
        "read go < {}; exec {} -c \"echo $$; sleep 30\"",
        fifo.display(),
        injector.display()
    );
    let (mut root, mut out) = spawn_in_cgroup(&cg.leaf, Path::new("/bin/sh"), &script);
    let root_pid = read_pid(&mut out);
    assert!(tg.get().lineage().contains_key(&root_pid));
    assert!(!tg.get().policies().contains_key(&cg.id()));

    // The agent's read: the container belongs (by its cgroup path) to an injected pod.
    let uid = "0f0e0d0c-0000-1111-2222-333344445555";
    let wanted = ContainerPolicy {
        mode: MODE_ENFORCE,
        pad: 0,
        pod_tag: pod_tag(uid),
    };
    let by_tag = std::collections::HashMap::from([(wanted.pod_tag, wanted)]);
    let mut index = CgroupIndex::new(root_dir);
    index.refresh();
    let writes = protect::plan_containers(
        &tg.get().containers(),
        &tg.get().policies(),
        &by_tag,
        Some(&index),
    );
    assert_eq!(
        writes,
        vec![protect::ContainerWrite::Protect {
            cg: cg.id(),
            policy: wanted
        }]
    );

    // The kernel, in between: the root runs the injector (registered as audit, pod tag 42).
    register(
        tg.get(),
        &injector,
        MODE_AUDIT,
        CONFIG_HOST_BYPASS,
        Some((base_id, base_level)),
    );
    fs::write(&fifo, "go\n").expect("release the root");
    assert_eq!(
        read_pid(&mut out),
        root_pid,
        "the injector runs as the root"
    );
    let kernel_policy = ContainerPolicy {
        mode: MODE_AUDIT,
        pad: 0,
        pod_tag: 42,
    };
    assert_eq!(tg.get().policies().get(&cg.id()), Some(&kernel_policy));

    // The agent's write keeps the kernel's policy.
    let mut changes = protect::Changes::default();
    protect::apply_containers(tg.get(), &writes, &mut changes).expect("apply");
    assert_eq!(changes, protect::Changes::default());
    assert_eq!(tg.get().policies().get(&cg.id()), Some(&kernel_policy));

    // The next reconciliation reads it and replaces it with the desired policy.
    let writes = protect::plan_containers(
        &tg.get().containers(),
        &tg.get().policies(),
        &by_tag,
        Some(&index),
    );
    protect::apply_containers(tg.get(), &writes, &mut changes).expect("apply");
    assert_eq!(changes.modes_updated, 1);
    assert_eq!(tg.get().policies().get(&cg.id()), Some(&wanted));

    kill(&mut root);
}

#[test]
fn reconcile_kubelet_layout_registers_then_unregisters_and_updates_modes() {
    let mut tg = TestGuard::load(Vec::new());
    let root = tempfile::tempdir().expect("tempdir");
    let uid = "0f0e0d0c-0000-1111-2222-333344445555";
    let pod_dir = root.path().join("pods").join(uid);
    let injector_dir = pod_dir.join(kubelet::INJECTOR_DIR);
    fs::create_dir_all(&injector_dir).expect("mkdir");
    fs::write(injector_dir.join("vault-env"), b"bin").expect("write");
    let token_dir = pod_dir
        .join(kubelet::PROJECTED_DIR)
        .join("kube-api-access-abcde");
    fs::create_dir_all(&token_dir).expect("mkdir");
    fs::write(token_dir.join("token"), b"t").expect("write");

    let pods = kubelet::scan(root.path()).expect("scan");
    let changes = protect::reconcile(tg.get(), &pods, Mode::Audit, None).expect("reconcile");
    assert_eq!(changes.registered, 2);
    let injectors = tg.get().injectors();
    assert_eq!(injectors[&pods[uid].injector.1].mode, MODE_AUDIT);
    assert_eq!(tg.get().tokens().len(), 1);
    // Idempotent.
    assert_eq!(
        protect::reconcile(tg.get(), &pods, Mode::Audit, None).expect("again"),
        protect::Changes::default()
    );

    // A running container of that pod picks up a stricter node mode.
    let cg_id = 4_000_000_000_u64;
    tg.get()
        .insert_container_if_absent(
            cg_id,
            ContainerState {
                flags: CONTAINER_ACTIVE,
                owner_tgid: 1,
            },
        )
        .expect("container");
    assert!(
        tg.get()
            .create_policy(
                cg_id,
                ContainerPolicy {
                    mode: MODE_AUDIT,
                    pad: 0,
                    pod_tag: pod_tag(uid),
                },
            )
            .expect("policy")
    );
    let changes = protect::reconcile(tg.get(), &pods, Mode::Enforce, None).expect("enforce");
    assert_eq!(changes.modes_updated, 1);
    assert!(changes.protected.is_empty(), "it was protected already");
    assert_eq!(tg.get().policies()[&cg_id].mode, MODE_ENFORCE);

    // The cgroup does not exist: the entry is dropped when an index is given.
    let mut index = CgroupIndex::new(cgroup::find_cgroup2_root().expect("root"));
    index.refresh();
    let changes = protect::reconcile(tg.get(), &pods, Mode::Enforce, Some(&index)).expect("gc");
    assert_eq!(changes.containers_dropped, 1);
    assert!(!tg.get().containers().contains_key(&cg_id));
    assert!(!tg.get().policies().contains_key(&cg_id));

    fs::remove_dir_all(&pod_dir).expect("pod gone");
    let pods = kubelet::scan(root.path()).expect("scan");
    let changes = protect::reconcile(tg.get(), &pods, Mode::Enforce, None).expect("reconcile");
    assert_eq!(changes.unregistered, 2);
    assert!(tg.get().injectors().is_empty());
    assert!(tg.get().tokens().is_empty());
}

/// Whether the full guard (LSM programs included) loads here, tried independently of `probe`.
fn lsm_guard_loads() -> bool {
    ensure_bpffs();
    let pin_dir = Path::new("/sys/fs/bpf").join(unique("strongroom-lsmcheck"));
    let loaded = Guard::load(&LoadOptions {
        pin_dir: pin_dir.clone(),
        lsm: true,
        max_entries: Vec::new(),
    });
    let ok = loaded.is_ok();
    drop(loaded);
    let _ = loader::detach(&pin_dir);
    ok
}

#[test]
fn probe_command_agrees_with_real_lsm_load() {
    let output = Command::new(env!("CARGO_BIN_EXE_ebpf-guard"))
        .arg("probe")
        .output()
        .expect("run probe");
    let message = String::from_utf8_lossy(&output.stdout);
    if lsm_guard_loads() {
        assert!(
            output.status.success(),
            "LSM loads here, probe said: {message}"
        );
    } else {
        assert_eq!(output.status.code(), Some(1), "probe must fail: {message}");
        assert!(
            message.contains("lsm="),
            "message names the boot parameter: {message}"
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

#[test]
fn agent_without_usable_lsm_stays_not_ready_and_names_boot_parameter() {
    if lsm_guard_loads() {
        // This kernel enforces: the not-ready path cannot be provoked here; the VM tests
        // cover the ready path.
        return;
    }
    let port = free_port();
    let pin_dir = Path::new("/sys/fs/bpf").join(unique("strongroom-agent"));
    let mut agent = Command::new(env!("CARGO_BIN_EXE_ebpf-guard"))
        .args(["run", "--node-name", "host-test", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--pin-dir")
        .arg(&pin_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn agent");
    let mut ready = None;
    wait_until("agent to finish its LSM check", || {
        ready = http_get(port, "/readyz");
        ready
            .as_ref()
            .is_some_and(|(_, body)| !body.starts_with("starting"))
    });
    let (status, body) = ready.expect("readyz");
    let live = http_get(port, "/livez").expect("livez");
    let metrics = http_get(port, "/metrics").expect("metrics");
    let _ = Command::new("kill").arg(agent.id().to_string()).status();
    let exit = agent.wait().expect("agent exits on SIGTERM");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("lsm="), "{body}");
    assert_eq!(live.0, 200);
    assert_eq!(metrics.0, 200);
    assert!(
        metrics.1.contains("strongroom_guard_ready 0"),
        "{}",
        metrics.1
    );
    assert!(exit.success());
    assert!(
        !pin_dir.exists(),
        "nothing pinned when the guard cannot enforce"
    );
}

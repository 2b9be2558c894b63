//! Loading, attaching, pinning and reusing the BPF program; typed access to its maps.
//!
//! Layout under the pin directory: `maps/<name>` (pinned by name from the object, reused on
//! the next load) and `links/<program>` (one pinned link per attached program). A restarted
//! agent finds the links pinned and leaves them attached, so enforcement never lapses; it
//! only reopens the maps.
//!
//! Two maps exist only to keep the BPF hot paths cheap and are kept right here: the
//! `token_filter` bitmap (every registered token's bit is set before the token is inserted
//! and cleared only when no registered token shares it, so `file_open` can skip the exact
//! lookup for every other file) and the sticky `guard_state` degraded count.
//!
//! Containers have two maps split by writer (see [`ContainerState`], [`ContainerPolicy`]):
//! the kernel's bookkeeping (`container_state`), which this module can only create (if
//! absent) or delete, never rewrite, and the agent's policy (`policies`).
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{BtfTracePoint, Lsm};
use aya::{Btf, Ebpf, EbpfLoader, include_bytes_aligned};

use crate::abi::{
    CONTAINER_DEGRADED, ContainerPolicy, ContainerState, GuardConfig, InodeKey, InodePolicy,
    LineageEntry, STAT_CONTAINERS_FULL, STAT_LINEAGE_FULL, STAT_RINGBUF_DROPPED, STATE_DEGRADED,
};

/// The guard's BPF object, compiled by `build.rs` from `bpf/guard.bpf.c`.
pub static GUARD_OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/guard.bpf.o"));
/// A trivial LSM program (`bpf/probe.bpf.c`) loaded to test whether BPF LSM works here.
pub static PROBE_OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe.bpf.o"));

/// Kind of attachment a program needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramKind {
    /// `lsm/<hook>`: needs a kernel booted with `bpf` in `lsm=`.
    Lsm,
    /// `tp_btf/<tracepoint>`: lineage tracking; loads wherever BTF does.
    TracePoint,
}

/// Every program of the object: (function name, hook or tracepoint, kind).
pub const PROGRAMS: &[(&str, &str, ProgramKind)] = &[
    (
        "guard_sched_process_fork",
        "sched_process_fork",
        ProgramKind::TracePoint,
    ),
    (
        "guard_sched_process_exit",
        "sched_process_exit",
        ProgramKind::TracePoint,
    ),
    (
        "guard_sched_process_exec",
        "sched_process_exec",
        ProgramKind::TracePoint,
    ),
    (
        "guard_ptrace_access_check",
        "ptrace_access_check",
        ProgramKind::Lsm,
    ),
    ("guard_task_kill", "task_kill", ProgramKind::Lsm),
    (
        "guard_bprm_check_security",
        "bprm_check_security",
        ProgramKind::Lsm,
    ),
    ("guard_file_open", "file_open", ProgramKind::Lsm),
];

/// Failures while loading or operating the BPF side.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// Reading the kernel's BTF failed.
    #[error("read kernel BTF from /sys/kernel/btf/vmlinux")]
    ReadBtf(#[source] aya::BtfError),
    /// Creating the pin directories failed.
    #[error("create pin directory {path} (is bpffs mounted at /sys/fs/bpf?)")]
    CreatePinDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Loading the object (maps, relocations) failed.
    #[error("load BPF object")]
    LoadObject(#[source] Box<aya::EbpfError>),
    /// A program is missing from the object or has the wrong type.
    #[error("program {name} missing from the object or of the wrong type")]
    MissingProgram {
        /// Program name.
        name: String,
    },
    /// Loading or attaching one program failed.
    #[error("load or attach program {name}")]
    AttachProgram {
        /// Program name.
        name: String,
        /// The cause.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// Pinning a link failed.
    #[error("pin link of {name}")]
    PinLink {
        /// Program name.
        name: String,
        /// The cause.
        #[source]
        source: Box<aya::pin::PinError>,
    },
    /// A map is missing from the object or has the wrong type.
    #[error("map {name} missing from the object or of the wrong type")]
    MissingMap {
        /// Map name.
        name: &'static str,
    },
    /// A map operation failed.
    #[error("{op} on map {name}")]
    MapOp {
        /// Operation.
        op: &'static str,
        /// Map name.
        name: &'static str,
        /// The cause.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// The pin directory holds maps of an older, incompatible guard (a pinned map is reused
    /// as it is, so its value layout would not match this agent's).
    #[error(
        "{path} is a map of an older guard whose layout this agent cannot use; run `ebpf-guard detach --pin-dir {pin_dir}` (drops tracking until the programs are reloaded) and start again"
    )]
    IncompatiblePins {
        /// The outdated pin.
        path: PathBuf,
        /// The pin directory.
        pin_dir: PathBuf,
    },
    /// Removing pins failed.
    #[error("remove pin {path}")]
    Unpin {
        /// The pin.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// What to load and where to pin it.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Pin directory on bpffs (e.g. `/sys/fs/bpf/strongroom`).
    pub pin_dir: PathBuf,
    /// Attach the LSM programs too (false where only lineage tracking can run, e.g. tests on
    /// a host that refuses LSM loads).
    pub lsm: bool,
    /// Map size overrides (tests of the fail-closed paths).
    pub max_entries: Vec<(&'static str, u32)>,
}

/// Counters kept by the BPF side in the `stats` per-CPU array.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Events dropped because the ring buffer was full.
    pub ringbuf_dropped: u64,
    /// Lineage inserts that failed (map full; the container failed closed).
    pub lineage_full: u64,
    /// Container reservations that failed (map full).
    pub containers_full: u64,
}

/// The loaded guard: typed maps plus what was attached.
pub struct Guard {
    _ebpf: Ebpf,
    injectors: HashMap<MapData, InodeKey, InodePolicy>,
    tokens: HashMap<MapData, InodeKey, InodePolicy>,
    lineage: HashMap<MapData, u32, LineageEntry>,
    containers: HashMap<MapData, u64, ContainerState>,
    policies: HashMap<MapData, u64, ContainerPolicy>,
    config: Array<MapData, GuardConfig>,
    token_filter: Array<MapData, u64>,
    state: Array<MapData, u64>,
    stats: PerCpuArray<MapData, u64>,
    events: Option<RingBuf<MapData>>,
    /// Programs attached by this load.
    pub attached: Vec<&'static str>,
    /// Programs whose pinned link from an earlier agent was reused.
    pub reused: Vec<&'static str>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("attached", &self.attached)
            .field("reused", &self.reused)
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// Loads the object (reusing pinned maps), attaches and pins every program whose link is
    /// not pinned yet, and opens the maps.
    pub fn load(options: &LoadOptions) -> Result<Self, LoaderError> {
        let maps_dir = options.pin_dir.join("maps");
        let links_dir = options.pin_dir.join("links");
        for dir in [&options.pin_dir, &maps_dir, &links_dir] {
            create_pin_dir(dir)?;
        }
        // Before the split of container state and policy, one `containers` map held both.
        let outdated = maps_dir.join("containers");
        if outdated.exists() {
            return Err(LoaderError::IncompatiblePins {
                path: outdated,
                pin_dir: options.pin_dir.clone(),
            });
        }
        let btf = Btf::from_sys_fs().map_err(LoaderError::ReadBtf)?;
        let mut loader = EbpfLoader::new();
        loader.btf(Some(&btf)).default_map_pin_directory(&maps_dir);
        for (name, size) in &options.max_entries {
            loader.map_max_entries(name, *size);
        }
        let mut ebpf = loader
            .load(GUARD_OBJECT)
            .map_err(|e| LoaderError::LoadObject(Box::new(e)))?;

        let mut attached = Vec::new();
        let mut reused = Vec::new();
        for &(name, hook, kind) in PROGRAMS {
            if kind == ProgramKind::Lsm && !options.lsm {
                continue;
            }
            let link_path = links_dir.join(name);
            if PinnedLink::from_pin(&link_path).is_ok() {
                reused.push(name);
                continue;
            }
            let link = attach(&mut ebpf, &btf, name, hook, kind)?;
            link.pin(&link_path).map_err(|e| LoaderError::PinLink {
                name: name.to_owned(),
                source: Box::new(e),
            })?;
            attached.push(name);
        }

        let mut guard = Self {
            injectors: take_map(&mut ebpf, "injectors")?,
            tokens: take_map(&mut ebpf, "tokens")?,
            lineage: take_map(&mut ebpf, "lineage")?,
            containers: take_map(&mut ebpf, "container_state")?,
            policies: take_map(&mut ebpf, "policies")?,
            config: take_map(&mut ebpf, "guard_config")?,
            token_filter: take_map(&mut ebpf, "token_filter")?,
            state: take_map(&mut ebpf, "guard_state")?,
            stats: take_map(&mut ebpf, "stats")?,
            events: Some(take_map(&mut ebpf, "events")?),
            _ebpf: ebpf,
            attached,
            reused,
        };
        guard.restore_fast_path_state()?;
        Ok(guard)
    }

    /// Re-establishes the invariants of the fast-path maps over maps reused from pins (which
    /// may predate them): every registered token's filter bit is set, and the degraded count
    /// is non-zero if any container is degraded. Stale filter bits are harmless.
    fn restore_fast_path_state(&mut self) -> Result<(), LoaderError> {
        for key in self.tokens().into_keys() {
            self.set_token_bit(&key)?;
        }
        let degraded = self
            .containers()
            .values()
            .any(|state| state.flags & CONTAINER_DEGRADED != 0);
        if degraded && self.degraded_count()? == 0 {
            self.state
                .set(STATE_DEGRADED, 1, 0)
                .map_err(map_err("update", "guard_state"))?;
        }
        Ok(())
    }

    fn set_token_bit(&mut self, key: &InodeKey) -> Result<(), LoaderError> {
        let (word, mask) = key.token_filter_slot();
        let bits = self
            .token_filter
            .get(&word, 0)
            .map_err(map_err("read", "token_filter"))?;
        if bits & mask == 0 {
            self.token_filter
                .set(word, bits | mask, 0)
                .map_err(map_err("update", "token_filter"))?;
        }
        Ok(())
    }

    /// How many times the BPF side has marked a container degraded (a full map made it fail
    /// closed); never reset while the maps are pinned.
    pub fn degraded_count(&self) -> Result<u64, LoaderError> {
        self.state
            .get(&STATE_DEGRADED, 0)
            .map_err(map_err("read", "guard_state"))
    }

    /// Whether the `token_filter` bit of `key` is set (true for every registered token).
    pub fn token_filter_contains(&self, key: &InodeKey) -> Result<bool, LoaderError> {
        let (word, mask) = key.token_filter_slot();
        let bits = self
            .token_filter
            .get(&word, 0)
            .map_err(map_err("read", "token_filter"))?;
        Ok(bits & mask != 0)
    }

    /// Writes the global configuration.
    pub fn set_config(&mut self, config: GuardConfig) -> Result<(), LoaderError> {
        self.config
            .set(0, config, 0)
            .map_err(map_err("update", "guard_config"))
    }

    /// Registers (or updates) an injector binary.
    pub fn put_injector(&mut self, key: InodeKey, policy: InodePolicy) -> Result<(), LoaderError> {
        self.injectors
            .insert(key, policy, 0)
            .map_err(map_err("insert", "injectors"))
    }

    /// Registers (or updates) a service-account token file. Its filter bit is set first, so
    /// `file_open` never skips a registered token.
    pub fn put_token(&mut self, key: InodeKey, policy: InodePolicy) -> Result<(), LoaderError> {
        self.set_token_bit(&key)?;
        self.tokens
            .insert(key, policy, 0)
            .map_err(map_err("insert", "tokens"))
    }

    /// Removes an injector registration (no error if absent).
    pub fn remove_injector(&mut self, key: &InodeKey) -> Result<(), LoaderError> {
        ignore_missing(self.injectors.remove(key)).map_err(map_err("remove", "injectors"))
    }

    /// Removes a token registration (no error if absent), then clears its filter bit unless
    /// another registered token shares it.
    pub fn remove_token(&mut self, key: &InodeKey) -> Result<(), LoaderError> {
        ignore_missing(self.tokens.remove(key)).map_err(map_err("remove", "tokens"))?;
        let (word, mask) = key.token_filter_slot();
        // An unreadable key counts as sharing the bit: a wrong clear bit would let a token
        // open skip its check, a wrong set bit only costs a lookup.
        let shared = self
            .tokens
            .keys()
            .any(|other| other.map_or(true, |other| other.token_filter_slot() == (word, mask)));
        if shared {
            return Ok(());
        }
        let bits = self
            .token_filter
            .get(&word, 0)
            .map_err(map_err("read", "token_filter"))?;
        if bits & mask != 0 {
            self.token_filter
                .set(word, bits & !mask, 0)
                .map_err(map_err("update", "token_filter"))?;
        }
        Ok(())
    }

    /// Current injector registrations.
    pub fn injectors(&self) -> BTreeMap<InodeKey, InodePolicy> {
        self.injectors.iter().filter_map(Result::ok).collect()
    }

    /// Current token registrations.
    pub fn tokens(&self) -> BTreeMap<InodeKey, InodePolicy> {
        self.tokens.iter().filter_map(Result::ok).collect()
    }

    /// Current lineage (tgid → entry).
    pub fn lineage(&self) -> BTreeMap<u32, LineageEntry> {
        self.lineage.iter().filter_map(Result::ok).collect()
    }

    /// Adds a lineage entry (best-effort backfill of processes started before the agent).
    pub fn put_lineage(&mut self, tgid: u32, entry: LineageEntry) -> Result<(), LoaderError> {
        self.lineage
            .insert(tgid, entry, 0)
            .map_err(map_err("insert", "lineage"))
    }

    /// The kernel's container bookkeeping (cgroup id → state). Read-only for the agent: there
    /// is deliberately no call that rewrites an existing entry.
    pub fn containers(&self) -> BTreeMap<u64, ContainerState> {
        self.containers.iter().filter_map(Result::ok).collect()
    }

    /// Creates a container entry unless one exists (backfill); false if it existed.
    pub fn insert_container_if_absent(
        &mut self,
        cg: u64,
        state: ContainerState,
    ) -> Result<bool, LoaderError> {
        conditional_insert(&mut self.containers, cg, state, BPF_NOEXIST)
            .map_err(map_err("insert", "container_state"))
    }

    /// Current container policies (cgroup id → policy).
    pub fn policies(&self) -> BTreeMap<u64, ContainerPolicy> {
        self.policies.iter().filter_map(Result::ok).collect()
    }

    /// Creates a container's policy unless it has one (the kernel may have created it since
    /// it was last read); false if it existed.
    pub fn create_policy(&mut self, cg: u64, policy: ContainerPolicy) -> Result<bool, LoaderError> {
        conditional_insert(&mut self.policies, cg, policy, BPF_NOEXIST)
            .map_err(map_err("insert", "policies"))
    }

    /// Replaces an existing container policy (the BPF side never rewrites one, so nothing it
    /// wrote is lost); false if the container has none.
    pub fn replace_policy(
        &mut self,
        cg: u64,
        policy: ContainerPolicy,
    ) -> Result<bool, LoaderError> {
        conditional_insert(&mut self.policies, cg, policy, BPF_EXIST)
            .map_err(map_err("update", "policies"))
    }

    /// Removes a lineage entry (no error if absent).
    pub fn remove_lineage(&mut self, tgid: u32) -> Result<(), LoaderError> {
        ignore_missing(self.lineage.remove(&tgid)).map_err(map_err("remove", "lineage"))
    }

    /// Forgets a container whose cgroup is gone: its policy, then the kernel's entry.
    pub fn remove_container(&mut self, cg: u64) -> Result<(), LoaderError> {
        ignore_missing(self.policies.remove(&cg)).map_err(map_err("remove", "policies"))?;
        ignore_missing(self.containers.remove(&cg)).map_err(map_err("remove", "container_state"))
    }

    /// Sums the per-CPU counters.
    pub fn stats(&self) -> Result<KernelStats, LoaderError> {
        let sum = |idx: u32| -> Result<u64, LoaderError> {
            let values = self.stats.get(&idx, 0).map_err(map_err("read", "stats"))?;
            Ok(values.iter().copied().sum())
        };
        Ok(KernelStats {
            ringbuf_dropped: sum(STAT_RINGBUF_DROPPED)?,
            lineage_full: sum(STAT_LINEAGE_FULL)?,
            containers_full: sum(STAT_CONTAINERS_FULL)?,
        })
    }

    /// Hands out the ring buffer of audit events (once).
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }
}

fn create_pin_dir(dir: &Path) -> Result<(), LoaderError> {
    fs::create_dir_all(dir).map_err(|source| LoaderError::CreatePinDir {
        path: dir.to_owned(),
        source,
    })?;
    // Only root may reach the pins: a pinned map is a handle on the guard's state.
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|source| {
        LoaderError::CreatePinDir {
            path: dir.to_owned(),
            source,
        }
    })
}

fn attach(
    ebpf: &mut Ebpf,
    btf: &Btf,
    name: &str,
    hook: &str,
    kind: ProgramKind,
) -> Result<FdLink, LoaderError> {
    let missing = || LoaderError::MissingProgram {
        name: name.to_owned(),
    };
    let failed = |e: aya::programs::ProgramError| LoaderError::AttachProgram {
        name: name.to_owned(),
        source: Box::new(e),
    };
    let program = ebpf.program_mut(name).ok_or_else(missing)?;
    match kind {
        ProgramKind::Lsm => {
            let program: &mut Lsm = program.try_into().map_err(|_| missing())?;
            program.load(hook, btf).map_err(failed)?;
            let id = program.attach().map_err(failed)?;
            Ok(program.take_link(id).map_err(failed)?.into())
        }
        ProgramKind::TracePoint => {
            let program: &mut BtfTracePoint = program.try_into().map_err(|_| missing())?;
            program.load(hook, btf).map_err(failed)?;
            let id = program.attach().map_err(failed)?;
            Ok(program.take_link(id).map_err(failed)?.into())
        }
    }
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, LoaderError>
where
    T: TryFrom<aya::maps::Map>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(LoaderError::MissingMap { name })?;
    T::try_from(map).map_err(|_| LoaderError::MissingMap { name })
}

fn map_err(
    op: &'static str,
    name: &'static str,
) -> impl FnOnce(aya::maps::MapError) -> LoaderError {
    move |source| LoaderError::MapOp {
        op,
        name,
        source: Box::new(source),
    }
}

const BPF_NOEXIST: u64 = 1;
const BPF_EXIST: u64 = 2;

/// A hash map update with `BPF_NOEXIST` or `BPF_EXIST`: false when the key's presence made
/// the kernel refuse it (`EEXIST` / `ENOENT`).
fn conditional_insert<V: aya::Pod>(
    map: &mut HashMap<MapData, u64, V>,
    key: u64,
    value: V,
    flags: u64,
) -> Result<bool, aya::maps::MapError> {
    let refused = if flags == BPF_NOEXIST {
        libc::EEXIST
    } else {
        libc::ENOENT
    };
    match map.insert(key, value, flags) {
        Ok(()) => Ok(true),
        Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(refused) => {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

fn ignore_missing(result: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match result {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Unpins every link and map under `pin_dir`: the programs detach once no process holds
/// them, and all tracking state is dropped. Returns the number of pins removed.
pub fn detach(pin_dir: &Path) -> Result<usize, LoaderError> {
    let mut removed = 0;
    for sub in ["links", "maps"] {
        let dir = pin_dir.join(sub);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(LoaderError::Unpin { path: dir, source }),
        };
        for entry in entries {
            let path = entry
                .map_err(|source| LoaderError::Unpin {
                    path: dir.clone(),
                    source,
                })?
                .path();
            fs::remove_file(&path).map_err(|source| LoaderError::Unpin {
                path: path.clone(),
                source,
            })?;
            removed += 1;
        }
        remove_dir_if_present(&dir)?;
    }
    remove_dir_if_present(pin_dir)?;
    Ok(removed)
}

fn remove_dir_if_present(dir: &Path) -> Result<(), LoaderError> {
    match fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(LoaderError::Unpin {
            path: dir.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Whether this kernel can run the guard's LSM programs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LsmSupport {
    /// `bpf` is an active LSM and a trivial LSM program loads.
    Usable,
    /// The LSM list could not be read or does not contain `bpf`.
    NotListed {
        /// The active LSMs (`/sys/kernel/security/lsm`), or why it could not be read.
        lsm: String,
    },
    /// `bpf` is listed but the kernel refused the probe program.
    LoadRefused {
        /// The load error chain.
        error: String,
    },
}

impl LsmSupport {
    /// A message for operators naming the fix.
    pub fn message(&self) -> String {
        match self {
            Self::Usable => "bpf LSM usable".to_owned(),
            Self::NotListed { lsm } => {
                let current = if lsm.contains(' ') || lsm.is_empty() {
                    "..."
                } else {
                    lsm
                };
                format!(
                    "bpf is not an active LSM (active: {lsm}); boot the node with the kernel \
                     parameter lsm={current},bpf"
                )
            }
            Self::LoadRefused { error } => format!(
                "bpf is an active LSM but the kernel refused to load an LSM program ({error}); \
                 the node needs CONFIG_BPF_LSM, BTF and the boot parameter lsm=...,bpf"
            ),
        }
    }
}

/// Reads the active LSM list (mounting securityfs at `/sys/kernel/security` if needed).
pub fn active_lsms(path: &Path) -> Result<String, io::Error> {
    match fs::read_to_string(path) {
        Ok(list) => Ok(list.trim().to_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound && path == Path::new(LSM_PATH) => {
            mount_securityfs();
            fs::read_to_string(path).map(|list| list.trim().to_owned())
        }
        Err(e) => Err(e),
    }
}

/// Where the kernel lists its active LSMs.
pub const LSM_PATH: &str = "/sys/kernel/security/lsm";

fn mount_securityfs() {
    // Best effort: a read-only /sys or a missing capability just leaves the list unreadable.
    let _ = std::process::Command::new("mount")
        .args(["-t", "securityfs", "securityfs", "/sys/kernel/security"])
        .stderr(std::process::Stdio::null())
        .status();
}

/// Checks `lsm_path` for `bpf`, then loads (without attaching) a trivial LSM program.
pub fn probe_lsm(lsm_path: &Path) -> LsmSupport {
    let lsm = match active_lsms(lsm_path) {
        Ok(list) => list,
        Err(e) => {
            return LsmSupport::NotListed {
                lsm: format!("unreadable {}: {e}", lsm_path.display()),
            };
        }
    };
    if !lsm.split(',').any(|name| name == "bpf") {
        return LsmSupport::NotListed { lsm };
    }
    match load_probe() {
        Ok(()) => LsmSupport::Usable,
        Err(error) => LsmSupport::LoadRefused { error },
    }
}

fn load_probe() -> Result<(), String> {
    let btf = Btf::from_sys_fs().map_err(|e| format!("read BTF: {e}"))?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .load(PROBE_OBJECT)
        .map_err(|e| format!("load object: {e}"))?;
    let program: &mut Lsm = ebpf
        .program_mut("probe_file_open")
        .ok_or("probe program missing")?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    program.load("file_open", &btf).map_err(|e| {
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            source = s.source();
        }
        msg
    })
}

#[cfg(test)]
mod tests {
    //! The fast-path maps against the real object on the host kernel (root and bpffs needed;
    //! only the tracepoints attach there).
    use super::*;

    /// A guard loaded into its own pin directory, detached on drop.
    struct TestGuard {
        guard: Option<Guard>,
        pin_dir: PathBuf,
    }

    impl TestGuard {
        fn load() -> Self {
            let mounted = fs::read_to_string("/proc/self/mounts")
                .unwrap_or_default()
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"));
            if !mounted {
                let _ = std::process::Command::new("mount")
                    .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
                    .status();
            }
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let pin_dir = PathBuf::from(format!(
                "/sys/fs/bpf/strongroom-loader-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            ));
            let guard = Guard::load(&LoadOptions {
                pin_dir: pin_dir.clone(),
                lsm: false,
                max_entries: Vec::new(),
            })
            .expect("the object loads and its tracepoints attach on the host");
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
            let _ = detach(&self.pin_dir);
        }
    }

    fn key(ino: u64) -> InodeKey {
        InodeKey {
            ino,
            dev: 45,
            pad: 0,
        }
    }

    #[test]
    fn token_filter_tracks_registered_tokens_and_keeps_shared_bits() {
        let mut test = TestGuard::load();
        let guard = test.get();
        let policy = InodePolicy {
            mode: crate::abi::MODE_ENFORCE,
            pad: 0,
            pod_tag: 7,
        };
        let first = key(5);
        // Another inode with the same filter bit (2^18 bits: found within a few 100k tries).
        let twin = (6..u64::MAX)
            .map(key)
            .find(|k| k.token_filter_slot() == first.token_filter_slot())
            .expect("a colliding inode exists");
        assert!(!guard.token_filter_contains(&first).expect("read filter"));

        guard.put_token(first, policy).expect("put first");
        guard.put_token(twin, policy).expect("put twin");
        assert!(guard.token_filter_contains(&first).expect("read filter"));

        guard.remove_token(&first).expect("remove first");
        assert!(
            guard.token_filter_contains(&twin).expect("read filter"),
            "a bit another registered token shares must stay set"
        );
        guard.remove_token(&twin).expect("remove twin");
        assert!(!guard.token_filter_contains(&twin).expect("read filter"));
        assert_eq!(guard.degraded_count().expect("read state"), 0);
    }

    #[test]
    fn guard_load_over_pins_of_the_shared_container_map_is_refused() {
        // Checked before anything is loaded, so a plain directory stands in for bpffs.
        let pin_dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(pin_dir.path().join("maps")).expect("mkdir");
        fs::write(pin_dir.path().join("maps/containers"), b"").expect("old pin");
        let err = Guard::load(&LoadOptions {
            pin_dir: pin_dir.path().to_owned(),
            lsm: false,
            max_entries: Vec::new(),
        })
        .expect_err("an old layout must not be reused");
        assert!(
            matches!(err, LoaderError::IncompatiblePins { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("ebpf-guard detach"), "{err}");
    }

    #[test]
    fn token_filter_reload_over_pinned_maps_restores_token_bits() {
        let mut test = TestGuard::load();
        let token = key(77);
        let policy = InodePolicy {
            mode: crate::abi::MODE_AUDIT,
            pad: 0,
            pod_tag: 9,
        };
        test.get().put_token(token, policy).expect("put token");
        // Simulate maps pinned by an agent that predates the filter: the bit is lost.
        let (word, _) = token.token_filter_slot();
        test.get()
            .token_filter
            .set(word, 0, 0)
            .expect("clear the filter word");
        test.guard.take();

        let reloaded = Guard::load(&LoadOptions {
            pin_dir: test.pin_dir.clone(),
            lsm: false,
            max_entries: Vec::new(),
        })
        .expect("reload over the pins");
        assert!(reloaded.token_filter_contains(&token).expect("read filter"));
        test.guard = Some(reloaded);
    }
}

//! `cargo xtask demo`: Strongroom's whole job on one machine, narrated for someone new to it.
//!
//! 1. OpenBao (dev server) with a static secret and a dynamic PostgreSQL role, logging pods in
//!    through Kubernetes auth (TokenReview against the test bed's fake kube-apiserver);
//! 2. the webhook, serving HTTPS with freshly generated certificates;
//! 3. the AdmissionReview a kube-apiserver sends for `manifests/examples/demo-pod.yaml`, and the
//!    JSONPatch the webhook answers with;
//! 4. the mutated pod run on a minimal local node: the emptyDir is a tmpfs, each container runs in
//!    its own mount + PID namespace chrooted into its "image", with exactly the env its spec gives;
//! 5. what an attacker sees: the pod spec holds only references, while the app's environment
//!    holds the values (which is what the guard protects);
//! 6. with QEMU available, the guard's scenario in a real kernel: an exec session is denied.
//!
//! The node part needs root (mounts, namespaces, chroot), as CI and `cargo xtask test` have.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use strongroom_testbed::{OpenBao, Postgres, TestCa, free_port};

use crate::{test::cargo, workspace_root};

/// The lines the demo prints when each part of the job has been shown, in order; the test step
/// of `cargo xtask test` runs the demo and checks them.
pub const MILESTONES: &[&str] = &[
    "MILESTONE injection patch",
    "MILESTONE app started with its secret",
    "MILESTONE database login working",
    "MILESTONE spec without plaintext",
];

/// The milestone printed when the guard part ran in the QEMU guest.
pub const GUARD_MILESTONE: &str = "MILESTONE exec session denied";

/// The guard scenario (in `ebpf-guard/tests/vm/scenarios/`) the demo runs in the QEMU guest.
const GUARD_SCENARIO: &str = "guard_enforce";

/// The static secret the demo stores; the app proves it has it by its fingerprint.
const DEMO_SECRET: &str = "correct-horse-battery-staple";

#[derive(clap::Args)]
pub struct Args {
    /// Use debug builds of the binaries (quicker to build; `cargo xtask test` uses this).
    #[arg(long)]
    pub debug: bool,
    /// Skip the guard part (booting the QEMU guest).
    #[arg(long)]
    pub no_guard: bool,
}

pub fn run(args: &Args) -> Result<()> {
    let started = Instant::now();
    crate::deps::ensure_all()?;
    if !nix_is_root() {
        bail!(
            "the demo's local node mounts a tmpfs and uses namespaces and chroot: run it as root"
        );
    }
    let bins = build(args.debug)?;

    section(
        1,
        "Vault (OpenBao dev server) with a static secret and a dynamic database role",
    );
    let pg = Postgres::start().context("starting PostgreSQL")?;
    let bao = OpenBao::start().context("starting OpenBao")?;
    seed_vault(&bao, &pg)?;
    say(&format!(
        "OpenBao at {}, PostgreSQL on 127.0.0.1:{}",
        bao.addr(),
        pg.port()
    ));
    say("secret/data/demo/db#password holds a static secret; database/creds/demo mints a login");

    section(
        2,
        "The webhook (vault-secrets-webhook serve) with generated certificates",
    );
    let webhook = Webhook::start(&bins, bao.addr())?;
    say(&format!(
        "listening on https://{} (ready); its log: {}",
        webhook.addr,
        target_dir().join("demo-webhook.log").display()
    ));

    section(
        3,
        "The kube-apiserver sends an AdmissionReview for manifests/examples/demo-pod.yaml",
    );
    let pod = demo_pod(bao.addr(), pg.port())?;
    let (patch, warnings) = webhook.review(&pod)?;
    print_patch(&patch, &warnings);
    let mut mutated = pod.clone();
    let ops: json_patch::Patch =
        serde_json::from_value(patch.clone()).context("decoding the patch")?;
    json_patch::patch(&mut mutated, &ops).context("applying the patch to the pod")?;
    milestone(MILESTONES[0]);

    section(4, "The mutated pod on a minimal local node");
    let node = Node::new(&bins, bao.issuer().issue("demo", "default")?)?;
    let app = node.run_pod(&mutated)?;
    let expected = fingerprint(DEMO_SECRET);
    if !app
        .lines
        .iter()
        .any(|l| l.contains("DB_PASSWORD is set") && l.contains(&expected))
    {
        bail!("the app did not show the secret stored in Vault (fingerprint {expected})");
    }
    say(&format!(
        "the app's DB_PASSWORD has the fingerprint of the value in Vault ({expected}...)"
    ));
    milestone(MILESTONES[1]);
    if !app
        .lines
        .iter()
        .any(|l| l.contains("database login ok as v-"))
    {
        bail!("the app could not log in to PostgreSQL with its dynamic credentials");
    }
    milestone(MILESTONES[2]);

    section(5, "What an attacker sees");
    show_attacker_view(&mutated, &app)?;
    milestone(MILESTONES[3]);

    section(
        6,
        "The guard: an exec session in a real kernel (QEMU guest)",
    );
    if args.no_guard {
        say("skipped (--no-guard)");
    } else {
        guard_part()?;
    }
    println!();
    println!("Done in {:.0} s.", started.elapsed().as_secs_f64());
    Ok(())
}

/// The built binaries the demo runs.
struct Binaries {
    vault_env: PathBuf,
    webhook: PathBuf,
}

fn build(debug: bool) -> Result<Binaries> {
    let profile = if debug { "debug" } else { "release" };
    println!("[build] vault-env and vault-secrets-webhook ({profile})");
    let mut args = vec![
        "build",
        "--quiet",
        "-p",
        "vault-env",
        "-p",
        "vault-secrets-webhook",
        "--bins",
    ];
    if !debug {
        args.push("--release");
    }
    crate::test::step("build", cargo(&args))?;
    let dir = target_dir().join(profile);
    Ok(Binaries {
        vault_env: dir.join("vault-env"),
        webhook: dir.join("vault-secrets-webhook"),
    })
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn seed_vault(bao: &OpenBao, pg: &Postgres) -> Result<()> {
    bao.write_kv2("demo/db", json!({ "password": DEMO_SECRET }))?;
    bao.enable_database(
        pg,
        "demo",
        Duration::from_secs(60),
        Duration::from_secs(600),
    )?;
    let policy = r#"
path "secret/data/demo/*" { capabilities = ["read"] }
path "database/creds/demo" { capabilities = ["read"] }
path "sys/leases/renew" { capabilities = ["update"] }
path "sys/leases/revoke" { capabilities = ["update"] }
"#;
    bao.api(
        "PUT",
        "sys/policies/acl/demo",
        Some(json!({ "policy": policy })),
    )?;
    bao.api(
        "POST",
        "auth/kubernetes/role/demo",
        Some(json!({
            "bound_service_account_names": ["default"],
            "bound_service_account_namespaces": ["demo"],
            "token_policies": ["demo"],
            "token_ttl": "10m",
        })),
    )?;
    Ok(())
}

/// A running `vault-secrets-webhook serve`, killed on drop.
struct Webhook {
    child: Child,
    addr: String,
    ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Webhook {
    fn start(bins: &Binaries, vault_addr: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let ca = TestCa::new()?;
        let files = ca.write_files(dir.path())?;
        let port = free_port()?;
        let telemetry = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let log = target_dir().join("demo-webhook.log");
        let child = Command::new(&bins.webhook)
            .arg("serve")
            .env("LISTEN_ADDRESS", &addr)
            .env("TELEMETRY_LISTEN_ADDRESS", format!("127.0.0.1:{telemetry}"))
            .env("TLS_CERT_FILE", &files.cert)
            .env("TLS_PRIVATE_KEY_FILE", &files.key)
            .env("VAULT_ADDR", vault_addr)
            .env("VAULT_ENV_IMAGE", "ghcr.io/strongroom/vault-env:demo")
            .env("KUBECONFIG", dir.path().join("no-kubeconfig"))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).context("creating the webhook's log file")?)
            .spawn()
            .with_context(|| format!("starting {}", bins.webhook.display()))?;
        let webhook = Self {
            child,
            addr,
            ca_file: files.ca,
            _dir: dir,
        };
        wait_ready(telemetry).context("waiting for the webhook's /readyz")?;
        Ok(webhook)
    }

    /// Sends the review the kube-apiserver would send (with curl, as a reader could by hand)
    /// and returns the decoded JSONPatch and the warnings.
    fn review(&self, pod: &Value) -> Result<(Value, Vec<String>)> {
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "0b5c6f0e-5d7b-4d3e-9a59-2f1f6b9f2c11",
                "kind": { "group": "", "version": "v1", "kind": "Pod" },
                "resource": { "group": "", "version": "v1", "resource": "pods" },
                "requestKind": { "group": "", "version": "v1", "kind": "Pod" },
                "requestResource": { "group": "", "version": "v1", "resource": "pods" },
                "name": "demo",
                "namespace": "demo",
                "operation": "CREATE",
                "userInfo": { "username": "demo-user", "groups": ["system:authenticated"] },
                "object": pod,
                "oldObject": null,
                "dryRun": false,
                "options": { "apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions" },
            }
        });
        let body = tempfile::NamedTempFile::new()?;
        std::fs::write(body.path(), serde_json::to_vec(&review)?)?;
        say(&format!(
            "POST https://{}/pods?timeout=10s  (AdmissionReview admission.k8s.io/v1, Pod demo/demo)",
            self.addr
        ));
        let output = Command::new("curl")
            .args(["-sS", "--fail-with-body", "--max-time", "10", "--cacert"])
            .arg(&self.ca_file)
            .args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(format!("@{}", body.path().display()))
            .arg(format!("https://{}/pods?timeout=10s", self.addr))
            .output()
            .context("running curl")?;
        if !output.status.success() {
            bail!(
                "the webhook answered with an error: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let answer: Value =
            serde_json::from_slice(&output.stdout).context("the webhook's answer is not JSON")?;
        let response = &answer["response"];
        if response["allowed"] != json!(true) {
            bail!(
                "the webhook denied the pod: {}",
                response["status"]["message"]
            );
        }
        let patch_b64 = response["patch"]
            .as_str()
            .context("the webhook's answer has no patch")?;
        let patch = base64::engine::general_purpose::STANDARD
            .decode(patch_b64)
            .context("patch is not base64")?;
        let warnings = response["warnings"]
            .as_array()
            .map(|w| {
                w.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Ok((
            serde_json::from_slice(&patch).context("patch is not JSON")?,
            warnings,
        ))
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_ready(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream
                .write_all(b"GET /readyz HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n");
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            if answer.starts_with("HTTP/1.1 200") {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("not ready after 20 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `manifests/examples/demo-pod.yaml`, pointed at the servers this demo started.
fn demo_pod(vault_addr: &str, pg_port: u16) -> Result<Value> {
    let path = workspace_root().join("manifests/examples/demo-pod.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut pod: Value =
        serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    pod["metadata"]["annotations"]["vault.security.banzaicloud.io/vault-addr"] = json!(vault_addr);
    for env in pod["spec"]["containers"][0]["env"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        if env["name"] == "PGPORT" {
            env["value"] = json!(pg_port.to_string());
        }
    }
    say(&format!(
        "(the demo points vault-addr at {vault_addr} and PGPORT at {pg_port})"
    ));
    Ok(pod)
}

fn print_patch(patch: &Value, warnings: &[String]) {
    say("the webhook answered allowed, with this JSONPatch:");
    for op in patch.as_array().into_iter().flatten() {
        let mut value = op["value"].to_string();
        if value.len() > 150 {
            value.truncate(147);
            value.push_str("...");
        }
        println!(
            "      {} {}  {}",
            op["op"].as_str().unwrap_or("?"),
            op["path"].as_str().unwrap_or("?"),
            value
        );
    }
    for warning in warnings {
        say(&format!("warning: {warning}"));
    }
}

/// What a container printed.
struct ContainerRun {
    lines: Vec<String>,
    /// A process of the container whose environ held DB_PASSWORD (PID, value length), as
    /// found from the host while it ran.
    environ_exposure: Option<(u32, usize)>,
}

/// A minimal kubelet: the pod's emptyDir is a tmpfs, the service-account token a file, and each
/// container a mount + PID namespace chrooted into its image.
struct Node {
    dir: tempfile::TempDir,
    empty_dir: PathBuf,
    token_dir: PathBuf,
    vault_env: PathBuf,
}

impl Node {
    fn new(bins: &Binaries, token: String) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let empty_dir = dir
            .path()
            .join("pods/demo-uid/volumes/kubernetes.io~empty-dir/vault-env");
        let token_dir = dir
            .path()
            .join("pods/demo-uid/volumes/kubernetes.io~projected/kube-api-access/");
        std::fs::create_dir_all(&empty_dir)?;
        std::fs::create_dir_all(&token_dir)?;
        run_quiet(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", "mode=1777,size=512m", "tmpfs"])
                .arg(&empty_dir),
            "mount the emptyDir tmpfs",
        )?;
        std::fs::write(token_dir.join("token"), token)?;
        say(&format!(
            "emptyDir vault-env (medium: Memory) is a tmpfs at {}",
            empty_dir.display()
        ));
        Ok(Self {
            dir,
            empty_dir,
            token_dir,
            vault_env: bins.vault_env.clone(),
        })
    }

    fn run_pod(&self, pod: &Value) -> Result<ContainerRun> {
        for init in pod["spec"]["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
        {
            say(&format!(
                "init container {}: {}",
                init["name"].as_str().unwrap_or("?"),
                command_line(init)
            ));
            let run = self.run_container(pod, init, None)?;
            for line in &run.lines {
                println!("      | {line}");
            }
        }
        let copied = self.empty_dir.join("vault-env");
        let mode = std::fs::metadata(&copied)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777);
        match mode {
            Ok(mode) => say(&format!("the emptyDir now holds vault-env (mode {mode:o})")),
            Err(_) => bail!("the init container did not copy vault-env into the emptyDir"),
        }
        let app = pod["spec"]["containers"]
            .as_array()
            .and_then(|c| c.first())
            .context("the pod has no container")?;
        say(&format!(
            "container {}: {}",
            app["name"].as_str().unwrap_or("?"),
            command_line(app)
        ));
        self.run_container(pod, app, Some("database login"))
    }

    /// Runs one container; with `until`, stops the pod (SIGTERM, then SIGKILL) once a line
    /// containing it was printed.
    fn run_container(
        &self,
        pod: &Value,
        container: &Value,
        until: Option<&str>,
    ) -> Result<ContainerRun> {
        let name = container["name"].as_str().unwrap_or("container");
        let root = self.dir.path().join(format!("rootfs-{name}"));
        std::fs::create_dir_all(&root)?;
        let mut script = String::from("set -e\nR=\"$1\"; shift\n");
        for dir in [
            "proc",
            "tmp",
            "dev",
            "var/run/secrets/kubernetes.io/serviceaccount",
        ] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        script.push_str("mount -t proc proc \"$R/proc\"\nmount -t tmpfs -o mode=1777 tmpfs \"$R/tmp\"\nmount --rbind /dev \"$R/dev\"\n");
        let binds = |script: &mut String, src: &Path, dst: &str, ro: bool| {
            script.push_str(&format!("mount --bind {} \"$R{}\"\n", quote(src), dst));
            if ro {
                script.push_str(&format!("mount -o remount,bind,ro \"$R{dst}\"\n"));
            }
        };
        let image = container["image"].as_str().unwrap_or_default();
        if image.contains("vault-env") {
            // The vault-env image: scratch with just the static binary.
            let bin = root.join("usr/local/bin");
            std::fs::create_dir_all(&bin)?;
            std::fs::copy(&self.vault_env, bin.join("vault-env"))?;
            if is_dynamically_linked(&self.vault_env) {
                // A debug build is not static: lend it the host's libraries (read-only).
                lend_host_dirs(
                    &root,
                    &["usr/lib", "usr/lib64", "lib", "lib64"],
                    &mut script,
                )?;
            }
        } else {
            // Any other image: the host's userland stands in (read-only), e.g. for busybox.
            lend_host_dirs(
                &root,
                &["usr", "bin", "sbin", "lib", "lib64", "etc"],
                &mut script,
            )?;
        }
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            let path = mount["mountPath"].as_str().unwrap_or_default();
            let ro = mount["readOnly"] == json!(true);
            let source = match mount["name"].as_str() {
                Some("vault-env") => &self.empty_dir,
                Some(n) if n.starts_with("kube-api-access") => &self.token_dir,
                _ => continue,
            };
            std::fs::create_dir_all(root.join(path.trim_start_matches('/')))?;
            binds(&mut script, source, path, ro);
        }
        if !container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount")
        {
            binds(
                &mut script,
                &self.token_dir,
                "/var/run/secrets/kubernetes.io/serviceaccount",
                true,
            );
        }
        let context = &container["securityContext"];
        let uid = context["runAsUser"]
            .as_i64()
            .or(pod["spec"]["securityContext"]["runAsUser"].as_i64())
            .unwrap_or(0);
        let gid = context["runAsGroup"]
            .as_i64()
            .or(pod["spec"]["securityContext"]["runAsGroup"].as_i64())
            .unwrap_or(uid);
        script.push_str(&format!(
            "exec chroot --userspec={uid}:{gid} \"$R\" \"$@\"\n"
        ));

        let mut command = Command::new("unshare");
        command
            .args([
                "--mount",
                "--propagation",
                "private",
                "--pid",
                "--fork",
                "--kill-child=SIGKILL",
                "--",
                "sh",
                "-c",
                &script,
                "node",
            ])
            .arg(&root)
            .args(container_argv(container))
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env(
                "HOSTNAME",
                pod["metadata"]["name"].as_str().unwrap_or("pod"),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for env in container["env"].as_array().into_iter().flatten() {
            if let (Some(name), Some(value)) = (env["name"].as_str(), env["value"].as_str()) {
                command.env(name, value);
            }
        }
        let mut child = command
            .spawn()
            .context("starting the container (unshare)")?;
        let (tx, rx) = mpsc::channel();
        for (stream, tag) in [
            (
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
                "",
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
                "log ",
            ),
        ] {
            let Some(stream) = stream else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(format!("{tag}{line}"));
                }
            });
        }
        drop(tx);
        let mut run = ContainerRun {
            lines: Vec::new(),
            environ_exposure: None,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut stopping: Option<Instant> = None;
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    if until.is_some() {
                        println!("      {name} | {line}");
                    }
                    let done = until.is_some_and(|u| line.contains(u));
                    run.lines.push(line);
                    if done && stopping.is_none() {
                        run.environ_exposure = exposure(child.id());
                        say(
                            "stopping the pod (SIGTERM to the container's PID 1, as the kubelet does)",
                        );
                        signal_container(child.id(), "TERM");
                        stopping = Some(Instant::now());
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if stopping.is_some_and(|s| s.elapsed() > Duration::from_secs(10))
                || Instant::now() > deadline
            {
                signal_container(child.id(), "KILL");
                let _ = child.kill();
                if stopping.is_none() {
                    let _ = child.wait();
                    bail!(
                        "container {name} did not finish in time; its output:\n{}",
                        run.lines.join("\n")
                    );
                }
            }
        }
        let status = child.wait()?;
        if until.is_none() && !status.success() {
            bail!(
                "container {name} failed ({status}); its output:\n{}",
                run.lines.join("\n")
            );
        }
        Ok(run)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.empty_dir)
            .status();
    }
}

/// The container's PID 1 as the host sees it (the child of `unshare`).
fn container_init(unshare_pid: u32) -> Option<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{unshare_pid}/task/{unshare_pid}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

fn signal_container(unshare_pid: u32, signal: &str) {
    if let Some(pid) = container_init(unshare_pid) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status();
    }
}

/// Finds a process of the container whose environment holds DB_PASSWORD, as an exec session
/// (or anyone with the same rights) would: returns its PID and the value's length.
fn exposure(unshare_pid: u32) -> Option<(u32, usize)> {
    let mut queue = vec![container_init(unshare_pid)?];
    while let Some(pid) = queue.pop() {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if let Some(entry) = environ
            .split(|b| *b == 0)
            .find(|e| e.starts_with(b"DB_PASSWORD=") && !e.starts_with(b"DB_PASSWORD=vault:"))
        {
            return Some((pid, entry.len() - "DB_PASSWORD=".len()));
        }
        queue.extend(children(pid));
    }
    None
}

/// The children of every thread of `pid` (a multi-threaded parent such as vault-env's daemon
/// mode may fork from any thread).
fn children(pid: u32) -> Vec<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten();
    tasks
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|c| c.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

fn show_attacker_view(pod: &Value, app: &ContainerRun) -> Result<()> {
    say("`kubectl get pod demo -o yaml` shows the app container's env as:");
    for env in pod["spec"]["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
    {
        println!(
            "      {} = {}",
            env["name"].as_str().unwrap_or("?"),
            env["value"].as_str().unwrap_or("(valueFrom)")
        );
    }
    let spec = serde_json::to_string(pod)?;
    if spec.contains(DEMO_SECRET) {
        bail!("the mutated pod spec contains the secret value");
    }
    say("the secret value appears nowhere in the pod spec or the patch: only references");
    match app.environ_exposure {
        Some((pid, len)) => say(&format!(
            "but without the guard, an exec session into the pod could read DB_PASSWORD ({len} characters) from /proc/{pid}/environ: that is what ebpf-guard denies"
        )),
        None => say("(the app's environment could not be inspected from the host)"),
    }
    Ok(())
}

/// Boots the QEMU guest and runs the guard's exec-session scenario, when QEMU is installed.
fn guard_part() -> Result<()> {
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        say("QEMU is not installed: skipped (cargo xtask deps installs it)");
        return Ok(());
    }
    say(
        "booting a Debian kernel with the BPF LSM in QEMU: a simulated pod starts through vault-env",
    );
    say(
        "with a secret in its environment, the guard agent protects it, and an exec session (joined",
    );
    say("from outside, as `kubectl exec` does) tries to get at the secret...");
    let status = cargo(&["xtask", "vm-test", "--scenario", GUARD_SCENARIO])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .context("running cargo xtask vm-test")?;
    let log = workspace_root().join("target/vm/latest.log");
    let console = std::fs::read_to_string(&log).unwrap_or_default();
    if !status.success() && !console.contains(&format!("VMTEST SCENARIO {GUARD_SCENARIO} END")) {
        bail!(
            "cargo xtask vm-test --scenario {GUARD_SCENARIO} failed before the scenario ran (see its output above)"
        );
    }
    let attempts = [
        ("exec_read_environ", "cat /proc/<app>/environ"),
        ("exec_read_mem", "read /proc/<app>/mem"),
        ("exec_ptrace_attach", "attach a debugger (ptrace)"),
        ("exec_vm_readv", "process_vm_readv of the app"),
        ("exec_runs_vault_env", "run /vault/vault-env again"),
        ("exec_open_token", "open the service-account token"),
    ];
    for (check, what) in attempts {
        let prefix = format!("VMTEST RESULT {GUARD_SCENARIO} {check} ");
        let Some(line) = console
            .lines()
            .find_map(|l| l.split_once(&prefix).map(|(_, rest)| rest.to_owned()))
        else {
            bail!(
                "the guard scenario reported nothing for {check} (console: {})",
                log.display()
            );
        };
        let (verdict, detail) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let errno = detail.split_whitespace().nth(1).unwrap_or("?");
        if verdict != "PASS" {
            bail!("exec session: {what} was not denied ({detail})");
        }
        say(&format!("exec session: {what:<34} -> denied ({errno})"));
    }
    if !status.success() {
        bail!(
            "the guard scenario failed in the QEMU guest (console: {})",
            log.display()
        );
    }
    say("each attempt was also recorded as a JSON audit event naming pod, container and process");
    milestone(GUARD_MILESTONE);
    Ok(())
}

fn container_argv(container: &Value) -> Vec<String> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    let mut argv = strings(&container["command"]);
    argv.extend(strings(&container["args"]));
    argv
}

fn command_line(container: &Value) -> String {
    let argv = container_argv(container);
    let mut line = argv
        .iter()
        .map(|a| {
            if a.contains(' ') {
                "'…'".to_owned()
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    if line.len() > 120 {
        line.truncate(117);
        line.push_str("...");
    }
    line
}

/// Makes the host's `dirs` appear read-only in `root`: symlinks copied as symlinks (merged
/// /usr), directories bind-mounted by the container's setup script.
fn lend_host_dirs(root: &Path, dirs: &[&str], script: &mut String) -> Result<()> {
    for dir in dirs {
        let host = Path::new("/").join(dir);
        let target = root.join(dir);
        if let Ok(link) = std::fs::read_link(&host) {
            if std::fs::symlink_metadata(&target).is_err() {
                std::os::unix::fs::symlink(link, &target)?;
            }
        } else if host.is_dir() {
            std::fs::create_dir_all(&target)?;
            script.push_str(&format!("mount --bind {} \"$R/{dir}\"\n", quote(&host)));
            script.push_str(&format!("mount -o remount,bind,ro \"$R/{dir}\"\n"));
        }
    }
    Ok(())
}

/// Whether an ELF binary names a dynamic loader (static release builds do not).
fn is_dynamically_linked(binary: &Path) -> bool {
    let mut head = vec![0u8; 4096];
    let read = std::fs::File::open(binary)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    head[..read].windows(8).any(|w| w == b"/lib64/l")
}

fn fingerprint(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))[..12].to_owned()
}

fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "'\\''"))
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run_quiet(command: &mut Command, what: &str) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("{what}: could not start"))?;
    if !output.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn section(n: u32, title: &str) {
    println!();
    println!("[{n}/6] {title}");
}

fn say(text: &str) {
    println!("    {text}");
}

fn milestone(text: &str) {
    println!("  ✔ {text}");
}

/// Checks that `output` shows every milestone in order (the demo test).
pub fn check_milestones(output: &str, guard: bool) -> Result<()> {
    let mut wanted: Vec<&str> = MILESTONES.to_vec();
    if guard {
        wanted.push(GUARD_MILESTONE);
    }
    let mut rest = output;
    for milestone in wanted {
        match rest.find(milestone) {
            Some(at) => rest = &rest[at + milestone.len()..],
            None => bail!("the demo's output lacks `{milestone}` (or shows it out of order)"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_milestones_in_order_passes() {
        let output = MILESTONES.join("\nsome text\n");
        assert!(check_milestones(&output, false).is_ok());
        assert!(check_milestones(&output, true).is_err());
    }

    #[test]
    fn check_milestones_out_of_order_fails() {
        let mut reversed = MILESTONES.to_vec();
        reversed.reverse();
        assert!(check_milestones(&reversed.join("\n"), false).is_err());
    }

    #[test]
    fn fingerprint_is_sha256_prefix() {
        assert_eq!(fingerprint("abc"), "ba7816bf8f01");
    }
}

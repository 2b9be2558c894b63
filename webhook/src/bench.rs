//! Benchmark helper behind the hidden `bench-admission` subcommand (`cargo xtask bench` runs
//! it): starts the webhook (`serve`) and the no-op baseline (`noop-server`) as child
//! processes of this binary on the same hyper + tokio-rustls stack, drives both with the same
//! open-loop load (a 3-container pod with 10 references, 16 keep-alive TLS connections,
//! 200 reviews/s) and then at saturation, both in interleaved A/B rounds, and measures the
//! in-process mutation cost. Prints the figures as JSON for xtask. The registry lookup's
//! benchmark (`bench-registry`) lives in [`registry`]; [`Figure`] is the JSON both print.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::image::StaticImageResolver;
use crate::mutate::{MutationConfig, Mutator};
use crate::objects::NoObjects;
use crate::policy::AddressPolicy;

/// The entry name under which xtask reports these figures.
const BENCH: &str = "admission";

mod figure;
pub mod registry;

pub use figure::Figure;

/// Load shape.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub connections: usize,
    /// Reviews per second over all connections.
    pub rate: f64,
    pub duration: Duration,
}

/// Latency samples of one run, microseconds, measured from the scheduled send time (so a
/// stalled server is not hidden by coordinated omission).
#[derive(Clone, Debug, Default)]
pub struct Samples {
    pub micros: Vec<u64>,
}

impl Samples {
    /// The `q` quantile (0..=1).
    pub fn quantile(&self, q: f64) -> f64 {
        let values: Vec<f64> = self.micros.iter().map(|&m| m as f64).collect();
        quantile(&values, q)
    }
}

/// The `q` quantile (0..=1, nearest rank) of `values`; NaN when empty.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// A review of a 3-container pod with 10 Vault references.
pub fn bench_review() -> Value {
    let container = |name: &str, refs: &[(&str, &str)]| {
        let mut env: Vec<Value> = refs
            .iter()
            .map(|(n, v)| json!({"name": n, "value": v}))
            .collect();
        env.push(json!({"name": "PLAIN", "value": "x"}));
        json!({
            "name": name,
            "image": "registry.local/app:1",
            "command": ["/app", "--serve"],
            "args": ["--port", "8080"],
            "env": env,
            "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}],
        })
    };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "00000000-0000-0000-0000-000000000000",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "bench",
            "operation": "CREATE",
            "userInfo": {"username": "admin"},
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": "bench",
                    "namespace": "bench",
                    "annotations": {
                        "vault.security.banzaicloud.io/vault-addr": "https://vault.vault.svc.cluster.local:8200",
                        "vault.security.banzaicloud.io/vault-role": "bench",
                        "vault.security.banzaicloud.io/vault-tls-secret": "vault-tls",
                    },
                },
                "spec": {
                    "serviceAccountName": "bench",
                    "volumes": [{"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}],
                    "containers": [
                        container("app", &[
                            ("DB_USER", "vault:secret/data/db#user"),
                            ("DB_PASSWORD", "vault:secret/data/db#password"),
                            ("API_KEY", "vault:secret/data/api#key#3"),
                            ("URL", "postgres://${vault:secret/data/db#user}:${vault:secret/data/db#password}@db/app"),
                        ]),
                        container("worker", &[
                            ("QUEUE_TOKEN", "vault:secret/data/queue#token"),
                            ("AWS_KEY", "vault:secret/data/aws#AWS_ACCESS_KEY_ID"),
                            ("AWS_SECRET", "vault:secret/data/aws#AWS_SECRET_ACCESS_KEY"),
                        ]),
                        container("proxy", &[
                            ("TLS_KEY", "vault:pki/data/proxy#key"),
                            ("TLS_CERT", "vault:pki/data/proxy#cert"),
                            ("SESSION", "vault:secret/data/proxy#session"),
                        ]),
                    ],
                },
            },
        },
    })
}

/// One keep-alive HTTP/1.1 + TLS connection.
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

async fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> anyhow::Result<Conn> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1")?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    Ok(Conn { sender })
}

impl Conn {
    /// Sends one review and checks the answer (uid echoed, allowed; patched if `patched`).
    async fn review(&mut self, body: Bytes, expect_patch: bool) -> anyhow::Result<()> {
        self.sender.ready().await?;
        let request = http::Request::post("/pods?timeout=10s")
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Full::new(body))?;
        let response = self.sender.send_request(request).await?;
        ensure!(response.status() == 200, "status {}", response.status());
        let bytes = response.into_body().collect().await?.to_bytes();
        // Only the checked fields, borrowed: the load client shares the cores with the server
        // it measures, so its own work must stay small and the same for both servers.
        #[derive(serde::Deserialize)]
        struct Review<'a> {
            #[serde(borrow)]
            response: Response<'a>,
        }
        #[derive(serde::Deserialize)]
        struct Response<'a> {
            uid: &'a str,
            allowed: bool,
            #[serde(default)]
            patch: Option<&'a str>,
        }
        let review: Review<'_> = serde_json::from_slice(&bytes)?;
        ensure!(review.response.allowed, "review not allowed");
        ensure!(
            review.response.uid == "00000000-0000-0000-0000-000000000000",
            "uid not echoed"
        );
        ensure!(
            review.response.patch.is_some() == expect_patch,
            "unexpected patch presence"
        );
        Ok(())
    }
}

/// Open-loop load: each connection sends on its own fixed schedule.
pub async fn open_loop(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    body: Bytes,
    expect_patch: bool,
    load: Load,
) -> anyhow::Result<Samples> {
    let per_connection = Duration::from_secs_f64(load.connections as f64 / load.rate);
    let mut tasks = Vec::new();
    for index in 0..load.connections {
        let config = Arc::clone(&config);
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = connect(addr, config).await?;
            // Stagger the connections across one interval.
            let offset = per_connection.mul_f64(index as f64 / load.connections as f64);
            let start = tokio::time::Instant::now() + offset;
            let end = start + load.duration;
            let mut micros = Vec::new();
            let mut next = start;
            while next < end {
                tokio::time::sleep_until(next).await;
                conn.review(body.clone(), expect_patch).await?;
                micros.push(next.elapsed().as_micros() as u64);
                next += per_connection;
            }
            anyhow::Ok(micros)
        }));
    }
    let mut samples = Samples::default();
    for task in tasks {
        samples.micros.extend(task.await??);
    }
    Ok(samples)
}

/// What one closed-loop round achieved.
#[derive(Clone, Copy, Debug)]
pub struct Throughput {
    pub reviews: u64,
    pub seconds: f64,
}

impl Throughput {
    pub fn per_second(self) -> f64 {
        self.reviews as f64 / self.seconds
    }
}

/// Closed-loop load: every connection busy for `duration`. The connections are opened (TLS
/// handshakes done) before the clock starts.
pub async fn saturation(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    body: Bytes,
    expect_patch: bool,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Throughput> {
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(connect(addr, Arc::clone(&config)).await?);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut conn in conns {
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut count = 0u64;
            while started.elapsed() < duration {
                conn.review(body.clone(), expect_patch).await?;
                count += 1;
            }
            anyhow::Ok(count)
        }));
    }
    let mut reviews = 0;
    for task in tasks {
        reviews += task.await??;
    }
    Ok(Throughput {
        reviews,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Nanoseconds per review: (full decision = parse + decide + patch + serialise answer,
/// serde_json parse + serialise of the same review).
pub async fn mutation_cost(iterations: u32) -> anyhow::Result<(f64, f64)> {
    let body = serde_json::to_vec(&bench_review())?;
    let mutator = bench_mutator();
    let started = Instant::now();
    for _ in 0..iterations {
        let answer = crate::handler::answer(&mutator, &body).await;
        ensure!(answer.outcome.response.patch.is_some(), "no patch");
        std::hint::black_box(answer.to_json());
    }
    let decision = started.elapsed().as_nanos() as f64 / f64::from(iterations);
    let started = Instant::now();
    for _ in 0..iterations {
        let value: Value = serde_json::from_slice(&body)?;
        std::hint::black_box(serde_json::to_vec(&value)?);
    }
    let serde = started.elapsed().as_nanos() as f64 / f64::from(iterations);
    Ok((decision, serde))
}

/// The mutator every admission benchmark measures (operator config as `bench-admission`'s).
pub fn bench_mutator() -> Mutator {
    let addr = "https://vault.vault.svc.cluster.local:8200";
    Mutator::new(
        MutationConfig {
            vault_addr: addr.to_owned(),
            address_policy: AddressPolicy::new(Some(addr), &[]),
            ..MutationConfig::default()
        },
        Arc::new(StaticImageResolver::default()),
        Arc::new(NoObjects),
    )
}

/// A child server process, killed on drop.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    /// CPU time (user + system, all threads) the server has used so far, in seconds: from
    /// `/proc/PID/stat`, in clock ticks of `USER_HZ` (100 on Linux, whatever the kernel's HZ).
    fn cpu_seconds(&self) -> anyhow::Result<f64> {
        const USER_HZ: f64 = 100.0;
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .context("reading the server's /proc stat")?;
        // Fields after the parenthesised command name (which may contain spaces): state is
        // field 3, utime and stime are fields 14 and 15.
        let after_comm = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .context("no command name in /proc stat")?;
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        let ticks = |index: usize| -> anyhow::Result<f64> {
            Ok(fields
                .get(index - 3)
                .context("short /proc stat")?
                .parse::<u64>()? as f64)
        };
        Ok((ticks(14)? + ticks(15)?) / USER_HZ)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn spawn_server(subcommand: &str, dir: &Path) -> anyhow::Result<ServerProcess> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let port = free_port()?;
    let telemetry = free_port()?;
    let child = Command::new(exe)
        .args(["--log-level", "warn", subcommand])
        .arg(format!("--listen-address=127.0.0.1:{port}"))
        .arg(format!("--telemetry-listen-address=127.0.0.1:{telemetry}"))
        .arg("--tls-cert-file")
        .arg(dir.join("tls.crt"))
        .arg("--tls-private-key-file")
        .arg(dir.join("tls.key"))
        .env("VAULT_ADDR", "https://vault.vault.svc.cluster.local:8200")
        .env("KUBECONFIG", "/nonexistent")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {subcommand}"))?;
    let process = ServerProcess {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(process.addr).is_err() {
        if Instant::now() > deadline {
            bail!("{subcommand} did not listen within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(process)
}

/// Writes a throw-away CA-signed certificate for 127.0.0.1; returns the client config.
fn write_certs(dir: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let leaf_key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])?.signed_by(&leaf_key, &ca)?;
    std::fs::write(dir.join("tls.crt"), format!("{}{}", leaf.pem(), ca.pem()))?;
    std::fs::write(dir.join("tls.key"), leaf_key.serialize_pem())?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone())?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Which server goes first in round `index` (true: the webhook): interleaved A/B rounds that
/// alternate the order, so drift hits both alike.
fn ab_order(index: u32) -> [bool; 2] {
    if index.is_multiple_of(2) {
        [true, false]
    } else {
        [false, true]
    }
}

/// Runs the admission benchmark and returns its figures.
///
/// # Errors
///
/// When a server does not start or an answer is wrong (a broken benchmark).
pub async fn run(quick: bool) -> anyhow::Result<Vec<Figure>> {
    let dir = std::env::temp_dir().join(format!("strongroom-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(&dir, quick).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(dir: &Path, quick: bool) -> anyhow::Result<Vec<Figure>> {
    let client = write_certs(dir)?;
    let webhook = spawn_server("serve", dir)?;
    let noop = spawn_server("noop-server", dir)?;
    let body = Bytes::from(serde_json::to_vec(&bench_review())?);
    let rounds: u32 = 5;
    let round = if quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(6)
    };
    let load = Load {
        connections: 16,
        rate: 200.0,
        duration: round,
    };
    // Warm up both (TLS session setup, allocator, page cache).
    open_loop(
        webhook.addr,
        Arc::clone(&client),
        body.clone(),
        true,
        Load {
            duration: Duration::from_millis(500),
            ..load
        },
    )
    .await?;
    open_loop(
        noop.addr,
        Arc::clone(&client),
        body.clone(),
        false,
        Load {
            duration: Duration::from_millis(500),
            ..load
        },
    )
    .await?;
    let mut webhook_samples = Samples::default();
    let mut noop_samples = Samples::default();
    for index in 0..rounds {
        for is_webhook in ab_order(index) {
            let (addr, into) = if is_webhook {
                (webhook.addr, &mut webhook_samples)
            } else {
                (noop.addr, &mut noop_samples)
            };
            let samples =
                open_loop(addr, Arc::clone(&client), body.clone(), is_webhook, load).await?;
            into.micros.extend(samples.micros);
        }
    }
    let expected = (load.rate * round.as_secs_f64() * f64::from(rounds)) as usize;
    ensure!(
        webhook_samples.micros.len() + 16 >= expected && noop_samples.micros.len() + 16 >= expected,
        "too few samples: webhook {} noop {} expected {expected}",
        webhook_samples.micros.len(),
        noop_samples.micros.len()
    );
    // Saturation in interleaved A/B rounds too; the median round of each is reported.
    let saturation_round = if quick {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(2)
    };
    // Also the servers' own CPU time per review over those rounds: unlike reviews/s it
    // hardly moves with other load on the machine or with the load client's share.
    let mut rates = [Vec::new(), Vec::new()];
    let mut cpu = [(0.0, 0u64), (0.0, 0u64)];
    for index in 0..rounds {
        for is_webhook in ab_order(index) {
            let (server, slot) = if is_webhook {
                (&webhook, 0)
            } else {
                (&noop, 1)
            };
            let cpu_before = server.cpu_seconds()?;
            let round = saturation(
                server.addr,
                Arc::clone(&client),
                body.clone(),
                is_webhook,
                load.connections,
                saturation_round,
            )
            .await?;
            cpu[slot].0 += server.cpu_seconds()? - cpu_before;
            cpu[slot].1 += round.reviews;
            rates[slot].push(round.per_second());
        }
    }
    let (webhook_rps, noop_rps) = (quantile(&rates[0], 0.5), quantile(&rates[1], 0.5));
    let cpu_per_review = |(seconds, reviews): (f64, u64)| seconds * 1e6 / reviews.max(1) as f64;
    let (decision_ns, serde_ns) = mutation_cost(if quick { 200 } else { 2000 }).await?;
    let ms = |us: f64| us / 1000.0;
    let p99 = (
        ms(webhook_samples.quantile(0.99)),
        ms(noop_samples.quantile(0.99)),
    );
    Ok(vec![
        Figure::compared(
            BENCH,
            "p50 latency at 200 reviews/s",
            (
                ms(webhook_samples.quantile(0.5)),
                ms(noop_samples.quantile(0.5)),
            ),
            "ms",
            None,
        ),
        Figure::compared(BENCH, "p99 latency at 200 reviews/s", p99, "ms", Some(1.5)),
        Figure::limit(
            BENCH,
            "p99 latency at 200 reviews/s, absolute",
            p99.0,
            "ms",
            5.0,
        ),
        Figure::compared(
            BENCH,
            "saturation throughput (16 connections)",
            (webhook_rps, noop_rps),
            "reviews/s",
            Some(0.5),
        )
        .at_least(),
        Figure::compared(
            BENCH,
            "server CPU time per review at saturation",
            (cpu_per_review(cpu[0]), cpu_per_review(cpu[1])),
            "us",
            None,
        ),
        Figure::compared(
            BENCH,
            "mutation cost per review (decision+patch vs serde parse+serialise)",
            (decision_ns / 1000.0, serde_ns / 1000.0),
            "us",
            Some(2.0),
        ),
    ])
}

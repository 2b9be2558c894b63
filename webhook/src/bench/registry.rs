//! `bench-registry`: the image-entrypoint lookup against a real registry (`cargo xtask bench`
//! entry `registry-cache` starts the distribution registry, pushes the images and passes
//! their names and the registry's CA here).
//!
//! 1. Looks the cached image up once (a miss: a real fetch), then times every single
//!    cache-hit lookup through [`RegistryResolver`]'s `resolve`, the call the admission path
//!    makes; the figure is the median (and the 99th percentile, for information).
//! 2. Fires `--concurrent` lookups of the uncached image at once and checks that each got
//!    the pushed ENTRYPOINT. How many upstream manifest fetches they caused is counted by
//!    xtask in the registry's access log, where no in-process shortcut can hide one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};

use super::Figure;
use crate::image::{ImageLookup, ImageResolver as _};
use crate::registry::bench::NoObjects;
use crate::registry::{RegistryConfig, RegistryResolver};

const BENCH: &str = "registry-cache";
/// The budget for one cache hit.
const HIT_BUDGET_US: f64 = 50.0;

/// `bench-registry` flags.
#[derive(Debug, clap::Args)]
pub struct RegistryBenchArgs {
    /// The registry, `HOST:PORT` (HTTPS).
    #[arg(long)]
    pub registry: String,
    /// PEM CA bundle the registry's certificate chains to.
    #[arg(long)]
    pub ca_file: PathBuf,
    /// `REPO:TAG` looked up once, then timed as cache hits.
    #[arg(long)]
    pub cached: String,
    /// `REPO:TAG` nobody has looked up yet, for the concurrent misses.
    #[arg(long)]
    pub uncached: String,
    /// The ENTRYPOINT both images were pushed with (checked on every answer).
    #[arg(long)]
    pub entrypoint: String,
    /// How many lookups of the uncached image run at once.
    #[arg(long, default_value_t = 100)]
    pub concurrent: usize,
    /// Fewer timed hits (a smoke run).
    #[arg(long)]
    pub quick: bool,
}

/// Runs the registry-cache benchmark and returns its figures.
///
/// # Errors
///
/// When the registry cannot be reached or a lookup returns a wrong answer (a broken
/// benchmark, never a slow one).
pub async fn run(args: &RegistryBenchArgs) -> anyhow::Result<Vec<Figure>> {
    let ca = std::fs::read(&args.ca_file)
        .with_context(|| format!("reading {}", args.ca_file.display()))?;
    let mut config = RegistryConfig {
        // The loaded 2-core build hosts can take seconds to serve 100 requests at once.
        timeout: Duration::from_secs(20),
        ..RegistryConfig::default()
    };
    config.tls.ca_bundle_pem = Some(ca);
    let resolver = RegistryResolver::new(config, Arc::new(NoObjects))
        .context("building the registry resolver")?;

    let cached = lookup(&format!("{}/{}", args.registry, args.cached));
    check(&resolver, &cached, &args.entrypoint)
        .await
        .context("first (uncached) lookup")?;
    let (rounds, per_round) = if args.quick { (5, 1_000) } else { (9, 20_000) };
    let mut nanos = Vec::with_capacity(rounds * per_round);
    for _ in 0..rounds {
        for _ in 0..per_round {
            let started = Instant::now();
            let answer = resolver.resolve(&cached).await;
            nanos.push(started.elapsed().as_nanos() as f64);
            answer.context("cache-hit lookup")?;
        }
        // Let other tasks and the metrics catch up between rounds, as between admissions.
        tokio::task::yield_now().await;
    }
    ensure!(
        resolver.metrics().cache_entries() >= 1,
        "the resolver cached nothing"
    );

    let uncached = lookup(&format!("{}/{}", args.registry, args.uncached));
    let start = Arc::new(tokio::sync::Barrier::new(args.concurrent));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.concurrent);
    for _ in 0..args.concurrent {
        let (resolver, uncached, start) = (resolver.clone(), uncached.clone(), Arc::clone(&start));
        let entrypoint = args.entrypoint.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            check(&resolver, &uncached, &entrypoint).await
        }));
    }
    for task in tasks {
        task.await.context("lookup task panicked")??;
    }
    let burst_ms = started.elapsed().as_secs_f64() * 1e3;

    let micros = |q: f64| super::quantile(&nanos, q) / 1e3;
    Ok(vec![
        Figure::limit(
            BENCH,
            "cache-hit lookup, median",
            micros(0.5),
            "us",
            HIT_BUDGET_US,
        ),
        Figure::measured(BENCH, "cache-hit lookup, p99", micros(0.99), "us"),
        Figure::measured(
            BENCH,
            &format!("{} concurrent misses, all answered", args.concurrent),
            burst_ms,
            "ms",
        ),
    ])
}

/// A lookup of `image` as a pod in namespace `bench` with no pull secrets makes it.
fn lookup(image: &str) -> ImageLookup {
    ImageLookup {
        image: image.to_owned(),
        namespace: "bench".to_owned(),
        service_account: "default".to_owned(),
        image_pull_policy: "IfNotPresent".to_owned(),
        ..ImageLookup::default()
    }
}

/// Resolves `image` and checks the answer's ENTRYPOINT.
async fn check(
    resolver: &RegistryResolver,
    image: &ImageLookup,
    entrypoint: &str,
) -> anyhow::Result<()> {
    let answer = resolver
        .resolve(image)
        .await
        .with_context(|| format!("looking up {}", image.image))?;
    ensure!(
        answer.entrypoint == [entrypoint],
        "{}: ENTRYPOINT {:?}, pushed [{entrypoint:?}]",
        image.image,
        answer.entrypoint
    );
    Ok(())
}

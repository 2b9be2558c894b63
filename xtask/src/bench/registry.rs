//! `registry-cache`: the webhook's image-entrypoint lookup against a real CNCF distribution
//! registry (TLS, anonymous pulls) started here through the testbed.
//!
//! Pushes two small images, runs `vault-secrets-webhook bench-registry` (the median
//! cache-hit lookup against the 50 µs budget; 100 concurrent lookups of the image nobody has
//! looked up, each checked for the pushed ENTRYPOINT), then counts in the registry's access
//! log how many manifest fetches those 100 misses caused: the target is exactly one.
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use strongroom_testbed::registry::{Registry, TestImage};

use super::{BenchContext, Figure, webhook_figures};

const ENTRYPOINT: &str = "/usr/local/bin/bench-app";
const CONCURRENT: usize = 100;
const UNCACHED_REPO: &str = "bench/uncached";

pub fn run(context: &BenchContext) -> Result<Vec<Figure>> {
    let registry = Registry::start_anonymous().context("starting the registry")?;
    let image = TestImage::linux("amd64")
        .entrypoint([ENTRYPOINT])
        .cmd(["serve"]);
    registry
        .push_image("bench/cached", "1", &image)
        .context("pushing bench/cached:1")?;
    registry
        .push_image(UNCACHED_REPO, "1", &image)
        .context("pushing bench/uncached:1")?;
    let dir = tempfile::tempdir().context("tempdir for the registry CA")?;
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, registry.ca_pem()).context("writing the registry CA")?;
    let fetched_before = manifest_fetches(&registry)?;

    let args = [
        "bench-registry".into(),
        "--registry".into(),
        registry.host().into(),
        "--ca-file".into(),
        ca_file.into_os_string(),
        "--cached".into(),
        "bench/cached:1".into(),
        "--uncached".into(),
        format!("{UNCACHED_REPO}:1").into(),
        "--entrypoint".into(),
        ENTRYPOINT.into(),
        "--concurrent".into(),
        CONCURRENT.to_string().into(),
    ];
    let limit = Duration::from_secs(if context.quick { 120 } else { 300 });
    let mut figures = webhook_figures(context, &args, limit)?;

    let fetches = manifest_fetches(&registry)? - fetched_before;
    // Every lookup got the right ENTRYPOINT, so at least one fetch happened; none logged
    // means the count is not measuring what it should.
    ensure!(
        fetches >= 1,
        "the registry logged no manifest fetch for {UNCACHED_REPO}: the count is broken"
    );
    figures.push(Figure::limit(
        "registry-cache",
        &format!("{CONCURRENT} concurrent misses: upstream manifest fetches"),
        fetches as f64,
        "fetches",
        1.0,
    ));
    Ok(figures)
}

/// Successful `GET /v2/bench/uncached/manifests/…` in the access log, once the log has
/// stopped growing (the registry writes a line as each response completes).
fn manifest_fetches(registry: &Registry) -> Result<usize> {
    let mut last = None;
    for _ in 0..20 {
        let count = registry
            .count_requests("GET", UNCACHED_REPO, "manifests")
            .context("reading the registry's access log")?;
        if last == Some(count) {
            return Ok(count);
        }
        last = Some(count);
        std::thread::sleep(Duration::from_millis(100));
    }
    last.context("the registry's access log kept changing")
}

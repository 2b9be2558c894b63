//! Interleaved micro-benchmark of the admission decision (`cargo bench -p
//! vault-secrets-webhook --bench mutation`): runs `bench-admission`'s mutation-cost
//! measurement ([`webhook::bench::mutation_cost`]: parse + decide + patch + serialise the
//! answer, against a `serde_json` parse + serialise of the same review) in many short rounds
//! and prints the per-round ratios and their median, which is far steadier than one long
//! round on a shared, noisy machine. `ROUNDS` and `ITERATIONS` override the defaults;
//! `BREAKDOWN=1` also times the stages of one answer (parse, decide + patch, write).

use std::process::ExitCode;
use std::time::Instant;

use webhook::admission::AdmissionReview;

/// Median microseconds of each stage of one answer.
async fn breakdown(iterations: u32) -> anyhow::Result<()> {
    let body = serde_json::to_vec(&webhook::bench::bench_review())?;
    let mutator = webhook::bench::bench_mutator();
    let mut stages = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..iterations {
        let t0 = Instant::now();
        let review: AdmissionReview<'_> = serde_json::from_slice(&body)?;
        let request = review
            .request
            .ok_or_else(|| anyhow::anyhow!("no request"))?;
        let t1 = Instant::now();
        let outcome = mutator.review(&request).await;
        let t2 = Instant::now();
        let mut answer = Vec::new();
        outcome
            .response
            .write_review(webhook::admission::API_VERSIONS[0], &mut answer)?;
        std::hint::black_box(answer);
        let t3 = Instant::now();
        for (stage, (a, b)) in stages.iter_mut().zip([(t0, t1), (t1, t2), (t2, t3)]) {
            stage.push((b - a).as_secs_f64() * 1e6);
        }
    }
    let names = ["parse review", "decide + patch", "write answer"];
    for (name, values) in names.iter().zip(&stages) {
        println!(
            "  {name:<18} {:8.2} us",
            webhook::bench::quantile(values, 0.5)
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let env = |name: &str, default: u32| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let rounds = env("ROUNDS", 25);
    let iterations = env("ITERATIONS", 400);
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mutation bench: starting the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    if std::env::var_os("BREAKDOWN").is_some()
        && let Err(error) = runtime.block_on(breakdown(iterations * 5))
    {
        eprintln!("mutation bench: {error:#}");
        return ExitCode::FAILURE;
    }
    let mut ratios = Vec::new();
    let mut decisions = Vec::new();
    let mut serdes = Vec::new();
    for _ in 0..rounds {
        match runtime.block_on(webhook::bench::mutation_cost(iterations)) {
            Ok((decision, serde)) => {
                decisions.push(decision / 1000.0);
                serdes.push(serde / 1000.0);
                ratios.push(decision / serde);
            }
            Err(error) => {
                eprintln!("mutation bench: {error:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    let median = |values: &[f64]| webhook::bench::quantile(values, 0.5);
    println!(
        "mutation cost: decision {:.2} us, serde {:.2} us, ratio median {:.3} (min {:.3}, {rounds} rounds x {iterations})",
        median(&decisions),
        median(&serdes),
        median(&ratios),
        ratios.iter().copied().fold(f64::INFINITY, f64::min),
    );
    ExitCode::SUCCESS
}

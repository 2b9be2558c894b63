//! The `vault-secrets-webhook` binary: `serve`, `inject -f FILE`, the hidden benchmark
//! baseline `noop-server` and the hidden benchmark drivers `bench-admission`, `bench-registry`.

use std::io::Read as _;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use webhook::config::{Cli, Command, InjectArgs, NoopArgs, ServeArgs};
use webhook::image::{ChainedResolver, ImageResolver};
use webhook::mutate::Mutator;
use webhook::objects::{KubeObjects, NoObjects, ObjectSource};
use webhook::registry::RegistryResolver;
use webhook::selfcert::{SelfCertArgs, SelfManagedTls};
use webhook::server::Server;
use webhook::telemetry::{Metrics, init_logging};

/// mimalloc instead of glibc malloc: a review allocates and frees many small objects on
/// whichever worker thread runs it, and glibc's per-arena locking and consolidation were the
/// largest single cost in the admission benchmark's profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = init_logging(&cli.log_level, cli.log_format) {
        eprintln!("vault-secrets-webhook: error: {error:#}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("vault-secrets-webhook: error: starting the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Inject(args) => inject(args).await,
            Command::NoopServer(args) => noop(args).await,
            Command::BenchAdmission(args) => {
                let figures = webhook::bench::run(args.quick).await?;
                println!("{}", serde_json::to_string(&figures)?);
                Ok(())
            }
            Command::BenchRegistry(args) => {
                let figures = webhook::bench::registry::run(&args).await?;
                println!("{}", serde_json::to_string(&figures)?);
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vault-secrets-webhook: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut settings = args.server.settings()?;
    let mut config = args.operator.mutation_config()?;
    let static_images = args.operator.static_images()?;
    let client = kube::Client::try_default().await;
    if let Some(tls) = self_managed_tls(&args.self_cert, client.as_ref().ok()).await? {
        settings.cert_file = tls.cert_file();
        settings.key_file = tls.key_file();
    }
    // The registry lookup reads pull secrets through the API; without it only the operator's
    // static map (IMAGE_ENTRYPOINT_FILE) knows entrypoints.
    let client_for_registry = client.as_ref().ok().cloned();
    let objects: Arc<dyn ObjectSource> = match client {
        Ok(client) => Arc::new(KubeObjects::new(client)),
        Err(error) => {
            tracing::warn!(
                error = %error,
                "no Kubernetes API access; valueFrom/envFrom references in Secrets and ConfigMaps will not be injected"
            );
            Arc::new(NoObjects)
        }
    };
    let mut metrics = Metrics::new();
    let images = match client_for_registry {
        Some(client) => {
            let registry = RegistryResolver::with_kube_client(args.registry.to_config()?, client)
                .context("configuring the registry lookup")?;
            config.image_failure_policy = Some(registry.failure_policy());
            metrics.register_registry(registry.metrics());
            Arc::new(ChainedResolver::new(vec![
                static_images,
                Arc::new(registry),
            ])) as Arc<dyn ImageResolver>
        }
        None => static_images,
    };
    let mutator = Mutator::new(config, images, objects);
    let server = Server::bind(settings, mutator, Arc::new(metrics))
        .await
        .context("starting the server")?;
    tracing::info!(
        listen = %server.local_addr(),
        telemetry = %server.telemetry_addr(),
        version = webhook::mutate::VERSION,
        "serving admission reviews"
    );
    server.serve(shutdown_signal()).await;
    Ok(())
}

/// With `TLS_SELF_MANAGED=true`: makes or reads the certificate once (the server then waits
/// for it before reporting ready if that fails) and keeps it fresh in a background task.
async fn self_managed_tls(
    args: &SelfCertArgs,
    client: Option<&kube::Client>,
) -> anyhow::Result<Option<Arc<SelfManagedTls>>> {
    if !args.tls_self_managed {
        return Ok(None);
    }
    let client = client.context("TLS_SELF_MANAGED=true needs Kubernetes API access")?;
    let Some(settings) = args.settings(client.default_namespace())? else {
        return Ok(None);
    };
    let tls = SelfManagedTls::new(client.clone(), settings);
    match tls.reconcile().await {
        Ok(done) => tracing::info!(
            stored = done.stored,
            patched_webhooks = done.patched_webhooks,
            "self-managed TLS ready"
        ),
        Err(error) => tracing::warn!(
            error = %error,
            "self-managed TLS not ready yet; retrying in the background"
        ),
    }
    tokio::spawn(Arc::clone(&tls).run());
    Ok(Some(tls))
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::error!(error = %error, "cannot watch SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

async fn inject(args: InjectArgs) -> anyhow::Result<()> {
    let text = if args.file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading stdin")?;
        text
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?
    };
    let config = args.operator.mutation_config()?;
    let mutator = Mutator::new(config, args.operator.static_images()?, Arc::new(NoObjects));
    let documents = webhook::inject::parse_documents(&text)?;
    let injected = webhook::inject::inject_documents(&mutator, documents, &args.namespace).await?;
    for document in &injected {
        for warning in &document.warnings {
            eprintln!("warning: {warning}");
        }
    }
    print!("{}", webhook::inject::render_yaml(&injected)?);
    Ok(())
}

/// The benchmark baseline: same listener, TLS and HTTP stack, a mutator that never injects.
async fn noop(args: NoopArgs) -> anyhow::Result<()> {
    let settings = args.server.settings()?;
    let server = Server::bind_noop(settings, Arc::new(Metrics::new()))
        .await
        .context("starting the no-op server")?;
    tracing::info!(listen = %server.local_addr(), "serving the no-op baseline");
    server.serve(shutdown_signal()).await;
    Ok(())
}

//! `cargo xtask dist`'s OCI layouts: built from small stand-in executables (the layout does
//! not depend on the binary; `cargo xtask dist` feeds it the static release binaries),
//! checked blob by blob, pushed to the real distribution registry (TLS + htpasswd) and
//! resolved through the webhook's own registry lookup.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../src/images.rs"]
#[allow(dead_code)]
mod images;

use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use images::{BuiltImage, IMAGES, ImageSpec};
use serde_json::{Value, json};
use strongroom_testbed::registry::Registry;
use strongroom_testbed::{FakeApiServer, ServiceAccountIssuer};
use webhook::image::{ImageLookup, ImageResolver};
use webhook::registry::credentials::KubeSecretSource;
use webhook::registry::{RegistryConfig, RegistryResolver};

const NS: &str = "apps";

/// A directory of small stand-in executables named like the three programs (copies of the
/// host's `true`): the layout does not depend on which ELF it carries, and the workspace's
/// debug binaries (hundreds of MB) made this test take minutes. `cargo xtask dist` feeds the
/// static release binaries.
fn binaries_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        for spec in IMAGES {
            std::fs::copy("/bin/true", dir.path().join(spec.name)).unwrap();
        }
        dir
    });
    dir.path().to_owned()
}

fn build(out: &std::path::Path) -> Vec<BuiltImage> {
    images::build_all(&binaries_dir(), out, "test").unwrap()
}

fn spec(name: &str) -> &'static ImageSpec {
    IMAGES.iter().find(|s| s.name == name).unwrap()
}

/// One tar entry of a layer.
struct Entry {
    /// Path without a trailing `/`.
    path: String,
    mode: u32,
    owner: (u64, u64),
    mtime: u64,
    content: Vec<u8>,
}

/// Every entry of a gzip'd tar layer, in archive order.
fn tar_entries(layer: &[u8]) -> Vec<Entry> {
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(layer)
        .read_to_end(&mut tar)
        .unwrap();
    let mut archive = tar::Archive::new(&tar[..]);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let header = entry.header().clone();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            Entry {
                path: entry
                    .path()
                    .unwrap()
                    .to_string_lossy()
                    .trim_end_matches('/')
                    .to_owned(),
                mode: header.mode().unwrap(),
                owner: (header.uid().unwrap(), header.gid().unwrap()),
                mtime: header.mtime().unwrap(),
                content,
            }
        })
        .collect()
}

#[test]
fn images_layouts_are_consistent_reproducible_and_scratch_style() {
    let bins = binaries_dir();
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    let built = build(first.path());
    let again = build(second.path());
    assert_eq!(built.len(), 3);
    for (image, twin) in built.iter().zip(&again) {
        assert_eq!(image.digest, twin.digest, "{} is reproducible", image.name);
        let layout = images::read_layout(&image.dir).unwrap();
        assert_eq!(images::digest(&layout.manifest), image.digest);
        let spec = spec(&image.name);
        let config: Value = serde_json::from_slice(&layout.config).unwrap();
        assert_eq!(config["architecture"], "amd64");
        assert_eq!(config["os"], "linux");
        assert_eq!(config["config"]["User"], spec.user);
        assert_eq!(
            config["config"]["Entrypoint"],
            json!([format!("/usr/local/bin/{}", spec.name)])
        );
        assert_eq!(
            config["config"].get("Cmd").cloned().unwrap_or(json!([])),
            json!(spec.cmd)
        );

        assert_eq!(layout.layers.len(), 1);
        let entries = tar_entries(&layout.layers[0]);
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        let mut sorted = paths.clone();
        sorted.sort_unstable();
        assert_eq!(paths, sorted, "entries are sorted");
        for entry in &entries {
            assert_eq!((entry.owner, entry.mtime), ((0, 0), 0), "{}", entry.path);
        }
        let find = |p: &str| entries.iter().find(|e| e.path == p);
        let binary = find(&format!("usr/local/bin/{}", spec.name)).expect("the binary");
        assert_eq!(binary.mode, 0o555);
        assert_eq!(binary.content, std::fs::read(bins.join(spec.name)).unwrap());
        let passwd = String::from_utf8(find("etc/passwd").unwrap().content.clone()).unwrap();
        assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");
        let group = String::from_utf8(find("etc/group").unwrap().content.clone()).unwrap();
        assert!(group.contains("nonroot:x:65532:"), "{group}");
        let tmp = find("tmp").expect("/tmp");
        assert_eq!(tmp.mode, 0o1777);
        assert!(tmp.content.is_empty());
        let ca = find("etc/ssl/certs/ca-certificates.crt");
        assert_eq!(ca.is_some(), spec.ca_roots, "{}", spec.name);
        if let Some(ca) = ca {
            assert_eq!(ca.content, std::fs::read(images::HOST_CA_BUNDLE).unwrap());
        }
    }
    let guard = spec("ebpf-guard");
    assert_eq!(guard.user, "0:0", "the guard DaemonSet runs as uid 0");
}

/// Pushes a layout's blobs and manifest through the registry HTTP API.
async fn push(
    registry: &Registry,
    client: &reqwest::Client,
    repo: &str,
    tag: &str,
    dir: &std::path::Path,
) {
    let layout = images::read_layout(dir).unwrap();
    let user = registry.username().unwrap();
    let password = registry.password();
    let host = registry.host();
    for blob in layout.layers.iter().chain([&layout.config]) {
        let start = client
            .post(format!("https://{host}/v2/{repo}/blobs/uploads/"))
            .basic_auth(user, password)
            .send()
            .await
            .unwrap();
        assert_eq!(start.status(), 202);
        let location = start.headers()["location"].to_str().unwrap().to_owned();
        let base = if location.starts_with("http") {
            location
        } else {
            format!("https://{host}{location}")
        };
        let sep = if base.contains('?') { '&' } else { '?' };
        let put = client
            .put(format!("{base}{sep}digest={}", images::digest(blob)))
            .basic_auth(user, password)
            .header("content-type", "application/octet-stream")
            .body(blob.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 201);
    }
    let put = client
        .put(format!("https://{host}/v2/{repo}/manifests/{tag}"))
        .basic_auth(user, password)
        .header("content-type", images::MANIFEST_MEDIA_TYPE)
        .body(layout.manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    assert_eq!(
        put.headers()["docker-content-digest"].to_str().unwrap(),
        images::digest(&layout.manifest)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_pushed_to_registry_resolve_entrypoints_through_webhook_lookup() {
    let out = tempfile::tempdir().unwrap();
    let built = build(out.path());
    let registry = Registry::start().unwrap();
    let tls = strongroom_testbed::tls::client_config(registry.ca_pem()).unwrap();
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .unwrap();
    for image in &built {
        push(
            &registry,
            &client,
            &format!("strongroom/{}", image.name),
            "0.1.0",
            &image.dir,
        )
        .await;
    }

    // The webhook's lookup, with the pull secret read from the (fake) API server.
    let api = FakeApiServer::start(ServiceAccountIssuer::new().unwrap().verifier()).unwrap();
    api.insert(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "regcred", "namespace": NS },
        "type": "kubernetes.io/dockerconfigjson",
        "data": { ".dockerconfigjson": base64::engine::general_purpose::STANDARD
            .encode(registry.docker_config_json().unwrap()) },
    }))
    .unwrap();
    let mut config = RegistryConfig::default();
    config.tls.ca_bundle_pem = Some(registry.ca_pem().as_bytes().to_vec());
    config.timeout = Duration::from_secs(5);
    let resolver = RegistryResolver::new(
        config,
        Arc::new(KubeSecretSource::new(api.kube_client().unwrap())),
    )
    .unwrap();

    for image in &built {
        let spec = spec(&image.name);
        let lookup = ImageLookup {
            image: format!("{}/strongroom/{}:0.1.0", registry.host(), image.name),
            namespace: NS.to_owned(),
            image_pull_secrets: vec!["regcred".to_owned()],
            service_account: "default".to_owned(),
            image_pull_policy: "IfNotPresent".to_owned(),
            ..ImageLookup::default()
        };
        let resolved = resolver.resolve(&lookup).await.unwrap();
        assert_eq!(
            resolved.entrypoint,
            vec![format!("/usr/local/bin/{}", spec.name)],
            "{}",
            spec.name
        );
        let cmd: Vec<String> = spec.cmd.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(resolved.cmd, cmd, "{}", spec.name);
        // The pushed manifest is byte-identical to the layout's (same digest in the registry).
        let fetched = registry
            .fetch_manifest(&format!("strongroom/{}", image.name), "0.1.0")
            .unwrap();
        assert_eq!(images::digest(&fetched), image.digest);
    }
}

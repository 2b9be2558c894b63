//! OCI image layouts for the three programs, built without a container daemon.
//!
//! Each image is scratch-style: one gzip'd tar layer holding the binary at
//! `/usr/local/bin/<name>` (mode 0555), `/etc/passwd` and `/etc/group` with the `nonroot`
//! user 65532, an empty `/tmp`, and for programs that speak TLS to the outside the host's
//! Debian CA bundle at `/etc/ssl/certs/ca-certificates.crt`. The tar is deterministic
//! (sorted entries, mtime 0, uid/gid 0, fixed modes) and so is the gzip stream (no name, mtime
//! 0, the pure-Rust backend), so the same binary always gives the same digests.
//!
//! The layout (`oci-layout`, `index.json`, `blobs/sha256/…`) is what `skopeo copy oci:DIR …`,
//! `crane push DIR …` or `oras cp --from-oci-layout` push to a registry.
//!
//! This file is also compiled into `xtask/tests/images.rs` (`#[path]`), so it uses nothing
//! from the rest of xtask.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// OCI image manifest media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type (`index.json`).
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config media type.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Gzip'd tar layer media type.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The host's CA bundle (Debian `ca-certificates`), copied into images that need roots.
pub const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The unprivileged user of the images (distroless' `nonroot`).
pub const NONROOT: u32 = 65532;

/// One image: which binary, who runs it and how.
#[derive(Debug, Clone, Copy)]
pub struct ImageSpec {
    /// Binary name; also the image name and `/usr/local/bin/<name>`.
    pub name: &'static str,
    /// `config.User`.
    pub user: &'static str,
    /// `config.Cmd` (the entrypoint is always the binary alone).
    pub cmd: &'static [&'static str],
    /// Whether the image carries [`HOST_CA_BUNDLE`].
    pub ca_roots: bool,
}

/// The three images `cargo xtask dist` builds.
///
/// - `vault-env` runs as the init container's `copy-self` and inside app containers (as the
///   app's user); it talks TLS to Vault, so it carries CA roots.
/// - `vault-secrets-webhook` runs `serve` as 65532 and talks TLS to registries (CA roots).
/// - `ebpf-guard` runs as root: the chart's DaemonSet sets `runAsUser: 0` with only the BPF
///   capabilities it adds, and loading BPF LSM programs needs uid 0 plus those capabilities. It
///   talks only to the local kernel, so no CA roots.
pub const IMAGES: &[ImageSpec] = &[
    ImageSpec {
        name: "vault-env",
        user: "65532:65532",
        cmd: &[],
        ca_roots: true,
    },
    ImageSpec {
        name: "vault-secrets-webhook",
        user: "65532:65532",
        cmd: &["serve"],
        ca_roots: true,
    },
    ImageSpec {
        name: "ebpf-guard",
        user: "0:0",
        cmd: &["run"],
        ca_roots: false,
    },
];

/// A finished layout.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// Image name.
    pub name: String,
    /// The layout directory.
    pub dir: PathBuf,
    /// `sha256:…` of the manifest: the image digest.
    pub digest: String,
    /// Compressed layer size in bytes.
    pub layer_size: u64,
    /// Manifest + config + layer, in bytes (what a registry stores).
    pub total_size: u64,
}

/// Builds `<out_root>/<name>/` for every spec from `<binaries>/<name>`.
///
/// # Errors
///
/// When a binary or the CA bundle cannot be read or the layout cannot be written.
pub fn build_all(binaries: &Path, out_root: &Path, version: &str) -> Result<Vec<BuiltImage>> {
    IMAGES
        .iter()
        .map(|spec| {
            build_layout(
                spec,
                &binaries.join(spec.name),
                Path::new(HOST_CA_BUNDLE),
                &out_root.join(spec.name),
                version,
            )
        })
        .collect()
}

/// Builds one OCI image layout in `out` (replacing what was there).
///
/// # Errors
///
/// When an input cannot be read or the layout cannot be written.
pub fn build_layout(
    spec: &ImageSpec,
    binary: &Path,
    ca_bundle: &Path,
    out: &Path,
    version: &str,
) -> Result<BuiltImage> {
    let binary_bytes =
        std::fs::read(binary).with_context(|| format!("read {}", binary.display()))?;
    let ca = if spec.ca_roots {
        Some(std::fs::read(ca_bundle).with_context(|| format!("read {}", ca_bundle.display()))?)
    } else {
        None
    };
    let tar = layer_tar(spec, &binary_bytes, ca.as_deref())?;
    let diff_id = digest(&tar);
    let layer = gzip(&tar)?;

    let mut config_fields = json!({
        "User": spec.user,
        "Entrypoint": [format!("/usr/local/bin/{}", spec.name)],
        "Env": ["PATH=/usr/local/bin"],
        "WorkingDir": "/",
    });
    if !spec.cmd.is_empty() {
        config_fields["Cmd"] = json!(spec.cmd);
    }
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": config_fields,
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created_by": "cargo xtask dist" }],
    }))?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": descriptor(CONFIG_MEDIA_TYPE, &config),
        "layers": [descriptor(LAYER_MEDIA_TYPE, &layer)],
        "annotations": { "org.opencontainers.image.title": spec.name },
    }))?;
    let mut manifest_descriptor = descriptor(MANIFEST_MEDIA_TYPE, &manifest);
    manifest_descriptor["platform"] = json!({ "architecture": "amd64", "os": "linux" });
    manifest_descriptor["annotations"] = json!({ "org.opencontainers.image.ref.name": version });
    let index = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [manifest_descriptor],
    }))?;

    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("remove {}", out.display()))?;
    }
    let blobs = out.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).with_context(|| format!("create {}", blobs.display()))?;
    for blob in [&layer, &config, &manifest] {
        let path = blobs.join(hex_digest(blob));
        std::fs::write(&path, blob).with_context(|| format!("write {}", path.display()))?;
    }
    write(
        &out.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    write(&out.join("index.json"), &index)?;
    // Read back what a registry client would read: catches any descriptor/blob mismatch.
    let checked = read_layout(out).with_context(|| format!("check {}", out.display()))?;
    ensure!(
        checked.manifest == manifest
            && checked.config == config
            && checked.layers == [layer.clone()],
        "{} does not read back as written",
        out.display()
    );
    Ok(BuiltImage {
        name: spec.name.to_owned(),
        dir: out.to_owned(),
        digest: digest(&manifest),
        layer_size: len(&layer),
        total_size: len(&layer) + len(&config) + len(&manifest),
    })
}

/// The blobs of a layout, checked: `oci-layout` version, every descriptor's digest and size
/// against the blob it names, media types, and the config's `diff_ids` against the
/// uncompressed layers.
#[derive(Debug)]
pub struct Layout {
    /// The manifest (raw bytes, as pushed).
    pub manifest: Vec<u8>,
    /// The config (raw bytes).
    pub config: Vec<u8>,
    /// The layers (compressed bytes), in order.
    pub layers: Vec<Vec<u8>>,
}

/// Reads and checks the single-image layout in `dir` (see [`Layout`]).
///
/// # Errors
///
/// On the first inconsistency.
pub fn read_layout(dir: &Path) -> Result<Layout> {
    let layout: Value = serde_json::from_slice(&read(&dir.join("oci-layout"))?)?;
    ensure!(
        layout["imageLayoutVersion"] == "1.0.0",
        "oci-layout: {layout}"
    );
    let index: Value = serde_json::from_slice(&read(&dir.join("index.json"))?)?;
    ensure!(index["schemaVersion"] == 2, "index.json schemaVersion");
    ensure!(
        index["mediaType"] == INDEX_MEDIA_TYPE,
        "index.json mediaType"
    );
    let manifests = index["manifests"]
        .as_array()
        .context("index.json has no manifests")?;
    ensure!(manifests.len() == 1, "one manifest per layout");
    let manifest = blob(dir, &manifests[0], MANIFEST_MEDIA_TYPE)?;
    let parsed: Value = serde_json::from_slice(&manifest)?;
    ensure!(parsed["schemaVersion"] == 2, "manifest schemaVersion");
    ensure!(
        parsed["mediaType"] == MANIFEST_MEDIA_TYPE,
        "manifest mediaType"
    );
    let config = blob(dir, &parsed["config"], CONFIG_MEDIA_TYPE)?;
    let config_json: Value = serde_json::from_slice(&config)?;
    let diff_ids = config_json["rootfs"]["diff_ids"]
        .as_array()
        .context("config has no rootfs.diff_ids")?;
    ensure!(
        config_json["rootfs"]["type"] == "layers",
        "rootfs.type must be layers"
    );
    let layer_descriptors = parsed["layers"]
        .as_array()
        .context("manifest has no layers")?;
    ensure!(
        layer_descriptors.len() == diff_ids.len(),
        "{} layers but {} diff_ids",
        layer_descriptors.len(),
        diff_ids.len()
    );
    let mut layers = Vec::new();
    for (descriptor, diff_id) in layer_descriptors.iter().zip(diff_ids) {
        let layer = blob(dir, descriptor, LAYER_MEDIA_TYPE)?;
        let mut tar = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&layer[..]), &mut tar)
            .context("gunzip layer")?;
        ensure!(
            diff_id.as_str() == Some(digest(&tar).as_str()),
            "diff_id {diff_id} does not match the uncompressed layer"
        );
        layers.push(layer);
    }
    Ok(Layout {
        manifest,
        config,
        layers,
    })
}

/// The blob a descriptor names, checked against its digest, size and media type.
fn blob(dir: &Path, descriptor: &Value, media_type: &str) -> Result<Vec<u8>> {
    ensure!(
        descriptor["mediaType"] == media_type,
        "descriptor media type {} is not {media_type}",
        descriptor["mediaType"]
    );
    let named = descriptor["digest"]
        .as_str()
        .context("descriptor without digest")?;
    let hex = named
        .strip_prefix("sha256:")
        .context("digest is not sha256")?;
    ensure!(
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "malformed digest {named}"
    );
    let bytes = read(&dir.join("blobs").join("sha256").join(hex))?;
    ensure!(digest(&bytes) == named, "blob {named} has another digest");
    ensure!(
        descriptor["size"].as_u64() == Some(len(&bytes)),
        "blob {named} is {} bytes, descriptor says {}",
        bytes.len(),
        descriptor["size"]
    );
    Ok(bytes)
}

/// The layer's tar: sorted paths, fixed owners, modes and times.
fn layer_tar(spec: &ImageSpec, binary: &[u8], ca: Option<&[u8]>) -> Result<Vec<u8>> {
    let passwd = format!(
        "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n"
    );
    let group = format!("root:x:0:\nnonroot:x:{NONROOT}:\n");
    let bin_path = format!("usr/local/bin/{}", spec.name);
    // (path, mode, content); `None` content = directory.
    let mut entries: Vec<(String, u32, Option<&[u8]>)> = vec![
        ("etc/".into(), 0o755, None),
        ("etc/group".into(), 0o644, Some(group.as_bytes())),
        ("etc/passwd".into(), 0o644, Some(passwd.as_bytes())),
        ("tmp/".into(), 0o1777, None),
        ("usr/".into(), 0o755, None),
        ("usr/local/".into(), 0o755, None),
        ("usr/local/bin/".into(), 0o755, None),
        (bin_path, 0o555, Some(binary)),
    ];
    if let Some(ca) = ca {
        entries.push(("etc/ssl/".into(), 0o755, None));
        entries.push(("etc/ssl/certs/".into(), 0o755, None));
        entries.push(("etc/ssl/certs/ca-certificates.crt".into(), 0o444, Some(ca)));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut builder = tar::Builder::new(Vec::new());
    for (path, mode, content) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header
            .set_username("root")
            .and_then(|()| header.set_groupname("root"))
            .context("tar owner names")?;
        match content {
            Some(bytes) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(len(bytes));
                builder
                    .append_data(&mut header, &path, bytes)
                    .with_context(|| format!("tar {path}"))?;
            }
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                builder
                    .append_data(&mut header, &path, std::io::empty())
                    .with_context(|| format!("tar {path}"))?;
            }
        }
    }
    builder.into_inner().context("finish tar")
}

/// Gzip with a fixed header (no file name, mtime 0) so the bytes are reproducible.
fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).context("gzip")?;
    encoder.finish().context("gzip")
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": digest(bytes), "size": len(bytes) })
}

/// `sha256:<hex>`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex_digest(bytes))
}

fn hex_digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn len(bytes: &[u8]) -> u64 {
    u64::try_from(bytes.len()).unwrap_or(u64::MAX)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("read {}", path.display()))
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("write {}", path.display()))
}

/// Prints one line per image (used by `cargo xtask dist`).
pub fn report(images: &[BuiltImage]) {
    for image in images {
        println!(
            "{}: {} layer {} bytes, image {} bytes ({:.2} MiB) in {}",
            image.name,
            image.digest,
            image.layer_size,
            image.total_size,
            image.total_size as f64 / (1024.0 * 1024.0),
            image.dir.display()
        );
    }
}

//! Platform selection in image indexes.
//!
//! A multi-arch image is an index of per-platform manifests. The webhook must read the
//! ENTRYPOINT/CMD of the variant the pod will actually run: the one matching its
//! `kubernetes.io/arch` / `kubernetes.io/os` constraints, else the operator's default
//! platform. Attestation manifests (BuildKit's provenance/SBOM entries, platform
//! `unknown/unknown`) are never candidates. When several allowed platforms exist and
//! their images disagree, guessing would silently run the wrong binary on some nodes, so
//! the disagreement is an error.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

use crate::image::{ImageEntrypoint, Platform};

/// Annotation BuildKit puts on index entries that are attestations, not runnable images.
pub const REFERENCE_TYPE_ANNOTATION: &str = "vnd.docker.reference.type";
/// Value of [`REFERENCE_TYPE_ANNOTATION`] for attestation manifests.
pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";

/// A platform given as `os/arch[/variant]` (`linux/amd64`, `linux/arm64/v8`).
///
/// The variant is accepted for familiarity but not used: node selectors only carry
/// `kubernetes.io/os` and `kubernetes.io/arch`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformSpec(pub Platform);

/// A `PlatformSpec` that is not `os/arch[/variant]`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/amd64")]
pub struct ParsePlatformError(String);

impl FromStr for PlatformSpec {
    type Err = ParsePlatformError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = |part: &str| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        let mut parts = s.split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(os), Some(arch), variant, None)
                if valid(os) && valid(arch) && variant.is_none_or(valid) =>
            {
                Ok(Self(Platform {
                    os: os.to_owned(),
                    architecture: arch.to_owned(),
                }))
            }
            _ => Err(ParsePlatformError(s.to_owned())),
        }
    }
}

impl fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0.os, self.0.architecture)
    }
}

/// One entry of an image index (OCI index or Docker manifest list), as far as selection needs.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexEntry {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub platform: Option<IndexPlatform>,
    #[serde(default)]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

/// The `platform` object of an index entry.
#[derive(Clone, Debug, Deserialize)]
pub struct IndexPlatform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
}

impl IndexEntry {
    /// True for entries that describe a runnable image (not an attestation or unknown).
    fn is_runnable(&self) -> bool {
        let attestation = self
            .annotations
            .as_ref()
            .and_then(|a| a.get(REFERENCE_TYPE_ANNOTATION))
            .is_some_and(|v| v == ATTESTATION_MANIFEST);
        let known = self
            .platform
            .as_ref()
            .is_some_and(|p| p.os != "unknown" && p.architecture != "unknown");
        !attestation && known
    }

    fn matches(&self, wanted: &Platform) -> bool {
        self.platform
            .as_ref()
            .is_some_and(|p| p.os == wanted.os && p.architecture == wanted.architecture)
    }
}

/// Picks, for each wanted platform, the index entries that can run there.
///
/// Returns `(platform, entry)` pairs, several per platform when the index has variants
/// (e.g. `arm/v6` and `arm/v7`). Platforms without any entry are left out: the pod cannot
/// be scheduled there with this image anyway. An empty result means no wanted platform is
/// in the index.
pub fn select<'a>(
    entries: &'a [IndexEntry],
    wanted: &[Platform],
) -> Vec<(Platform, &'a IndexEntry)> {
    wanted
        .iter()
        .flat_map(|platform| {
            entries
                .iter()
                .filter(|e| e.is_runnable() && e.matches(platform))
                .map(move |e| (platform.clone(), e))
        })
        .collect()
}

/// The runnable platforms an index offers, for error messages.
pub fn available(entries: &[IndexEntry]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e.is_runnable())
        .filter_map(|e| e.platform.as_ref())
        .map(|p| format!("{}/{}", p.os, p.architecture))
        .collect()
}

/// Two allowed platforms whose images would run different commands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disagreement {
    pub first: (Platform, ImageEntrypoint),
    pub second: (Platform, ImageEntrypoint),
}

impl fmt::Display for Disagreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |(p, e): &(Platform, ImageEntrypoint)| {
            format!(
                "{}/{} has ENTRYPOINT {:?} CMD {:?}",
                p.os, p.architecture, e.entrypoint, e.cmd
            )
        };
        write!(
            f,
            "{} but {}; set the container's command or constrain the pod to one platform",
            show(&self.first),
            show(&self.second)
        )
    }
}

/// The single ENTRYPOINT/CMD every candidate agrees on, or the first disagreement.
pub fn agree(
    candidates: Vec<(Platform, ImageEntrypoint)>,
) -> Result<Option<ImageEntrypoint>, Box<Disagreement>> {
    let mut iter = candidates.into_iter();
    let Some(first) = iter.next() else {
        return Ok(None);
    };
    for other in iter {
        if other.1 != first.1 {
            return Err(Box::new(Disagreement {
                first,
                second: other,
            }));
        }
    }
    Ok(Some(first.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(os: &str, arch: &str) -> Platform {
        Platform {
            os: os.into(),
            architecture: arch.into(),
        }
    }

    fn index() -> Vec<IndexEntry> {
        serde_json::from_value(serde_json::json!([
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:aa", "size": 1,
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:bb", "size": 1,
             "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:cc", "size": 1,
             "platform": {"architecture": "unknown", "os": "unknown"},
             "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                             "vnd.docker.reference.digest": "sha256:aa"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:dd", "size": 1,
             "platform": {"architecture": "amd64", "os": "linux"},
             "annotations": {"vnd.docker.reference.type": "attestation-manifest"}}
        ]))
        .expect("index entries")
    }

    #[test]
    fn platform_spec_parse_accepts_variant_rejects_garbage() {
        let spec: PlatformSpec = "linux/arm64/v8".parse().expect("variant");
        assert_eq!(spec.0, p("linux", "arm64"));
        assert_eq!(spec.to_string(), "linux/arm64");
        for bad in [
            "linux",
            "linux/",
            "/amd64",
            "linux/amd64/v8/x",
            "Linux/amd64",
            "linux/am d64",
        ] {
            assert!(bad.parse::<PlatformSpec>().is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn select_wanted_platform_skips_attestations() {
        let entries = index();
        let amd = select(&entries, &[p("linux", "amd64")]);
        assert_eq!(amd.len(), 1);
        assert_eq!(amd[0].1.digest, "sha256:aa");
        let arm = select(&entries, &[p("linux", "arm64")]);
        assert_eq!(arm[0].1.digest, "sha256:bb");
        let unknown = select(&entries, &[p("unknown", "unknown")]);
        assert!(unknown.is_empty());
        assert_eq!(available(&entries), vec!["linux/amd64", "linux/arm64"]);
    }

    #[test]
    fn select_missing_platform_left_out() {
        let entries = index();
        let picked = select(&entries, &[p("linux", "s390x"), p("linux", "arm64")]);
        assert_eq!(picked.len(), 1);
        assert_eq!(picked[0].0, p("linux", "arm64"));
    }

    #[test]
    fn agree_same_entrypoints_ok_different_error() {
        let e = |s: &str| ImageEntrypoint {
            entrypoint: vec![s.into()],
            cmd: vec![],
        };
        assert_eq!(agree(vec![]), Ok(None));
        assert_eq!(
            agree(vec![
                (p("linux", "amd64"), e("/a")),
                (p("linux", "arm64"), e("/a"))
            ]),
            Ok(Some(e("/a")))
        );
        let err = agree(vec![
            (p("linux", "amd64"), e("/a")),
            (p("linux", "arm64"), e("/b")),
        ])
        .expect_err("disagree");
        let text = err.to_string();
        assert!(
            text.contains("linux/amd64") && text.contains("linux/arm64"),
            "{text}"
        );
        assert!(text.contains("\"/a\"") && text.contains("\"/b\""), "{text}");
    }
}

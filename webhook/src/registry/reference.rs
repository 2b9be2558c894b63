//! Image references: parsing, Docker Hub normalisation and mirror rewriting.
//!
//! A container's `image` is written the way `docker pull` accepts it (`redis`,
//! `bitnami/redis:7`, `ghcr.io/org/app@sha256:…`). The registry lookup needs the fully
//! qualified form (`docker.io/library/redis:latest`), the host to talk to
//! (`registry-1.docker.io` for Docker Hub) and, in air-gapped clusters, the mirror the
//! operator wants used instead of the upstream registry.
//!
//! # Security
//!
//! The image string comes from the admitted pod and is attacker-controlled. Parsing is
//! strict (the distribution reference grammar's character sets), so nothing but a host, an
//! optional port and a path of plain components can reach a URL: no userinfo, query,
//! fragment, whitespace or percent-encoding.

use std::fmt;
use std::str::FromStr;

/// The registry that short names (`redis`, `bitnami/redis`) belong to.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves Docker Hub's registry API.
pub const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";
/// Other spellings of Docker Hub found in images and in docker config files.
const DOCKER_HUB_ALIASES: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];
/// The tag a reference without tag or digest means.
pub const DEFAULT_TAG: &str = "latest";

/// A parsed, fully qualified image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Registry host with optional port, Docker Hub spelled `docker.io`.
    pub registry: String,
    /// Repository path (`library/redis`).
    pub repository: String,
    /// The tag, if the reference named one (`None` with a digest-only reference).
    pub tag: Option<String>,
    /// `algorithm:hex` digest, if the reference is pinned.
    pub digest: Option<String>,
}

/// Why an image reference was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid image reference {image:?}: {reason}")]
    ParseReference { image: String, reason: &'static str },
    #[error("invalid registry mirror rule {rule:?}: {reason}")]
    ParseMirror { rule: String, reason: &'static str },
}

impl ImageRef {
    /// Parses an image reference as `docker pull` does, normalising Docker Hub names.
    pub fn parse(image: &str) -> Result<Self, ReferenceError> {
        let fail = |reason| ReferenceError::ParseReference {
            image: image.to_owned(),
            reason,
        };
        if image.is_empty() || image.len() > 4096 {
            return Err(fail("empty or longer than 4096 bytes"));
        }
        let (name_tag, digest) = match image.split_once('@') {
            Some((left, digest)) => {
                validate_digest(digest).map_err(fail)?;
                (left, Some(digest.to_owned()))
            }
            None => (image, None),
        };
        // A ':' after the last '/' separates the tag; one before it is a registry port.
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => {
                let split = last_slash + i;
                (&name_tag[..split], Some(&name_tag[split + 1..]))
            }
            None => (name_tag, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag).map_err(fail)?;
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                validate_host(first).map_err(fail)?;
                (first.to_owned(), rest.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        let registry = if DOCKER_HUB_ALIASES.contains(&registry.as_str()) {
            DOCKER_HUB.to_owned()
        } else {
            registry
        };
        validate_path(&path).map_err(fail)?;
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_owned()),
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The `reference` path segment of the manifest URL: the digest when pinned, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or(DEFAULT_TAG)
    }

    /// Host (and port) to send registry API requests to.
    pub fn endpoint_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_ENDPOINT
        } else {
            &self.registry
        }
    }

    /// True for references that can change meaning quickly: `:latest` or no tag at all.
    pub fn is_latest(&self) -> bool {
        self.digest.is_none() && self.tag.as_deref().is_none_or(|t| t == DEFAULT_TAG)
    }

    /// The same repository pinned to `digest` (used to key the cache by content).
    pub fn with_digest(&self, digest: &str) -> Self {
        Self {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest.to_owned()),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// An operator rewrite rule `FROM=TO`: images under registry (and optional path prefix)
/// `FROM` are fetched from `TO` instead, e.g. `docker.io=registry.local:5000` or
/// `docker.io/library=registry.local:5000/hub`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorRule {
    from_registry: String,
    from_prefix: String,
    to_registry: String,
    to_prefix: String,
}

impl MirrorRule {
    /// Applies the rule; `None` when the reference is not under `FROM`.
    fn apply(&self, image: &ImageRef) -> Option<ImageRef> {
        if image.registry != self.from_registry {
            return None;
        }
        let rest = if self.from_prefix.is_empty() {
            image.repository.as_str()
        } else if image.repository == self.from_prefix {
            ""
        } else {
            image
                .repository
                .strip_prefix(&self.from_prefix)?
                .strip_prefix('/')?
        };
        let repository = match (self.to_prefix.is_empty(), rest.is_empty()) {
            (true, _) => rest.to_owned(),
            (false, true) => self.to_prefix.clone(),
            (false, false) => format!("{}/{rest}", self.to_prefix),
        };
        Some(ImageRef {
            registry: self.to_registry.clone(),
            repository,
            tag: image.tag.clone(),
            digest: image.digest.clone(),
        })
    }

    fn specificity(&self) -> usize {
        self.from_prefix.len()
    }
}

impl FromStr for MirrorRule {
    type Err = ReferenceError;

    fn from_str(rule: &str) -> Result<Self, Self::Err> {
        let fail = |reason| ReferenceError::ParseMirror {
            rule: rule.to_owned(),
            reason,
        };
        let (from, to) = rule
            .split_once('=')
            .ok_or_else(|| fail("expected FROM=TO"))?;
        let split = |side: &str| -> Result<(String, String), ReferenceError> {
            let side = side.trim().trim_end_matches('/');
            let (host, prefix) = side.split_once('/').unwrap_or((side, ""));
            validate_host(host).map_err(fail)?;
            if !prefix.is_empty() {
                validate_path(prefix).map_err(fail)?;
            }
            let host = if DOCKER_HUB_ALIASES.contains(&host) {
                DOCKER_HUB.to_owned()
            } else {
                host.to_owned()
            };
            Ok((host, prefix.to_owned()))
        };
        let (from_registry, from_prefix) = split(from)?;
        let (to_registry, to_prefix) = split(to)?;
        Ok(Self {
            from_registry,
            from_prefix,
            to_registry,
            to_prefix,
        })
    }
}

impl fmt::Display for MirrorRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |host: &str, prefix: &str| {
            if prefix.is_empty() {
                host.to_owned()
            } else {
                format!("{host}/{prefix}")
            }
        };
        write!(
            f,
            "{}={}",
            side(&self.from_registry, &self.from_prefix),
            side(&self.to_registry, &self.to_prefix)
        )
    }
}

/// Rewrites `image` with the most specific matching rule, or returns it unchanged.
pub fn apply_mirrors(rules: &[MirrorRule], image: &ImageRef) -> ImageRef {
    rules
        .iter()
        .filter_map(|rule| rule.apply(image).map(|rewritten| (rule, rewritten)))
        .max_by_key(|(rule, _)| rule.specificity())
        .map_or_else(|| image.clone(), |(_, rewritten)| rewritten)
}

fn validate_host(host: &str) -> Result<(), &'static str> {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("registry port must be 1-5 digits");
    }
    let labels_ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if labels_ok {
        Ok(())
    } else {
        Err("registry host must be a DNS name or IPv4 address")
    }
}

fn validate_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() || path.len() > 255 {
        return Err("repository must be 1-255 characters");
    }
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && c.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    };
    if path.split('/').all(component_ok) {
        Ok(())
    } else {
        Err("repository components must be lower-case alphanumerics separated by . _ -")
    }
}

fn validate_tag(tag: &str) -> Result<(), &'static str> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err("tag must be 1-128 of [A-Za-z0-9_.-], not starting with . or -")
    }
}

fn validate_digest(digest: &str) -> Result<(), &'static str> {
    let hex_ok = |hex: &str, len: usize| {
        hex.len() == len
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match digest.split_once(':') {
        Some(("sha256", hex)) if hex_ok(hex, 64) => Ok(()),
        Some(("sha512", hex)) if hex_ok(hex, 128) => Ok(()),
        _ => Err("digest must be sha256:<64 hex> or sha512:<128 hex>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parse_docker_hub_short_names_normalised() {
        let cases = [
            ("redis", "docker.io/library/redis:latest"),
            ("redis:7", "docker.io/library/redis:7"),
            ("bitnami/redis:7.2", "docker.io/bitnami/redis:7.2"),
            ("docker.io/redis", "docker.io/library/redis:latest"),
            (
                "index.docker.io/library/redis",
                "docker.io/library/redis:latest",
            ),
            ("registry-1.docker.io/redis:6", "docker.io/library/redis:6"),
            ("localhost/app", "localhost/app:latest"),
            ("localhost:5000/app:v1", "localhost:5000/app:v1"),
            ("127.0.0.1:5000/a/b/c:1.0", "127.0.0.1:5000/a/b/c:1.0"),
            ("ghcr.io/org/app", "ghcr.io/org/app:latest"),
        ];
        for (input, want) in cases {
            let parsed = ImageRef::parse(input).expect(input);
            assert_eq!(parsed.to_string(), want, "{input}");
        }
    }

    #[test]
    fn parse_digest_reference_keeps_digest_and_tag() {
        let pinned = ImageRef::parse(&format!("redis@{D}")).expect("pinned");
        assert_eq!(pinned.tag, None);
        assert_eq!(pinned.manifest_reference(), D);
        assert!(!pinned.is_latest());
        let both = ImageRef::parse(&format!("quay.io/x/y:1@{D}")).expect("both");
        assert_eq!(both.tag.as_deref(), Some("1"));
        assert_eq!(both.manifest_reference(), D);
    }

    #[test]
    fn parse_hostile_input_rejected() {
        for bad in [
            "",
            "user:pass@evil.com/x",
            "evil.com/x?y=1",
            "evil.com/x#frag",
            "evil.com/a b",
            "evil.com/%2e%2e/x",
            "evil.com/../x",
            "evil.com:/x",
            "evil.com:99999999/x",
            "Redis",
            "redis:-bad",
            "redis@sha256:abc",
            "a//b",
            "a/",
            "[::1]:5000/x",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn endpoint_docker_hub_uses_registry_1() {
        let hub = ImageRef::parse("redis").expect("hub");
        assert_eq!(hub.endpoint_host(), "registry-1.docker.io");
        let other = ImageRef::parse("quay.io/a/b").expect("quay");
        assert_eq!(other.endpoint_host(), "quay.io");
    }

    #[test]
    fn is_latest_true_for_untagged_and_latest_only() {
        assert!(ImageRef::parse("redis").expect("r").is_latest());
        assert!(ImageRef::parse("redis:latest").expect("r").is_latest());
        assert!(!ImageRef::parse("redis:7").expect("r").is_latest());
    }

    #[test]
    fn mirror_whole_registry_rewritten() {
        let rules = vec![
            "docker.io=registry.local:5000"
                .parse::<MirrorRule>()
                .expect("rule"),
        ];
        let image = ImageRef::parse("redis:7").expect("redis");
        assert_eq!(
            apply_mirrors(&rules, &image).to_string(),
            "registry.local:5000/library/redis:7"
        );
        let untouched = ImageRef::parse("quay.io/a/b").expect("quay");
        assert_eq!(apply_mirrors(&rules, &untouched), untouched);
    }

    #[test]
    fn mirror_most_specific_prefix_wins() {
        let rules: Vec<MirrorRule> = [
            "index.docker.io=mirror.local",
            "docker.io/library=mirror.local:443/hub-official",
        ]
        .iter()
        .map(|r| r.parse().expect("rule"))
        .collect();
        let official = ImageRef::parse("redis").expect("redis");
        assert_eq!(
            apply_mirrors(&rules, &official).to_string(),
            "mirror.local:443/hub-official/redis:latest"
        );
        let user = ImageRef::parse("bitnami/redis").expect("bitnami");
        assert_eq!(
            apply_mirrors(&rules, &user).to_string(),
            "mirror.local/bitnami/redis:latest"
        );
        // A prefix only matches whole path components.
        let near = ImageRef::parse("docker.io/libraryx/y").expect("near");
        assert_eq!(
            apply_mirrors(&rules, &near).to_string(),
            "mirror.local/libraryx/y:latest"
        );
    }

    #[test]
    fn mirror_rule_invalid_rejected() {
        for bad in ["docker.io", "=x", "a=", "a=b c", "a=user@b"] {
            assert!(bad.parse::<MirrorRule>().is_err(), "accepted {bad:?}");
        }
        let rule: MirrorRule = "docker.io=registry.local:5000/"
            .parse()
            .expect("trailing slash");
        assert_eq!(rule.to_string(), "docker.io=registry.local:5000");
    }
}

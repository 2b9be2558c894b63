//! Image entrypoint lookup: what a container runs when its spec leaves `command` empty.
//!
//! The mutation needs the image's ENTRYPOINT and CMD to rewrite the command of a container
//! whose spec has no `command`. The lookup sits behind [`ImageResolver`] so that the pure
//! mutation can be tested with a static map and the registry implementation (in
//! `registry/`) can be swapped in by the server.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

/// Everything a resolver may use to look an image up, taken from the pod being admitted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageLookup {
    /// The image reference exactly as written in the container spec.
    pub image: String,
    /// Namespace of the pod (pull secrets and the ServiceAccount live there).
    pub namespace: String,
    /// Names of the pod's `imagePullSecrets`.
    pub image_pull_secrets: Vec<String>,
    /// The pod's ServiceAccount name (its `imagePullSecrets` are tried next).
    pub service_account: String,
    /// `Always`, `IfNotPresent`, `Never` or empty.
    pub image_pull_policy: String,
    /// Platforms the pod may be scheduled on, from `kubernetes.io/arch` / `kubernetes.io/os`
    /// node selectors and required node affinity; empty when the pod does not constrain it.
    pub platforms: Vec<Platform>,
}

/// An OS/architecture pair as OCI image indexes name them (`linux`/`amd64`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
}

/// The part of an image's config that decides what a container runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageEntrypoint {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

/// Why an image could not be resolved; the message names the image and the cause, never a
/// credential.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {image} is not known to the operator's entrypoint map")]
    Unknown { image: String },
    #[error("image {image}: {reason}")]
    Lookup { image: String, reason: String },
    #[error("image {image}: lookup timed out after {millis} ms")]
    Timeout { image: String, millis: u64 },
}

/// The future a resolver returns; boxed so the trait stays object safe.
pub type ResolveFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ImageEntrypoint, ImageError>> + Send + 'a>>;

/// Looks up an image's ENTRYPOINT and CMD.
pub trait ImageResolver: Send + Sync {
    fn resolve<'a>(&'a self, lookup: &'a ImageLookup) -> ResolveFuture<'a>;
}

/// An operator-supplied `image → entrypoint` map (the `--image-entrypoint` setting).
#[derive(Clone, Debug, Default)]
pub struct StaticImageResolver {
    images: BTreeMap<String, ImageEntrypoint>,
}

impl StaticImageResolver {
    pub fn new(images: BTreeMap<String, ImageEntrypoint>) -> Self {
        Self { images }
    }
}

impl ImageResolver for StaticImageResolver {
    fn resolve<'a>(&'a self, lookup: &'a ImageLookup) -> ResolveFuture<'a> {
        let found = self
            .images
            .get(&lookup.image)
            .cloned()
            .ok_or_else(|| ImageError::Unknown {
                image: lookup.image.clone(),
            });
        Box::pin(std::future::ready(found))
    }
}

/// Resolvers tried in order (the operator's static map, then the registry); the first answer
/// wins, and when none knows the image the last error is returned.
pub struct ChainedResolver {
    resolvers: Vec<std::sync::Arc<dyn ImageResolver>>,
}

impl ChainedResolver {
    pub fn new(resolvers: Vec<std::sync::Arc<dyn ImageResolver>>) -> Self {
        Self { resolvers }
    }
}

impl ImageResolver for ChainedResolver {
    fn resolve<'a>(&'a self, lookup: &'a ImageLookup) -> ResolveFuture<'a> {
        Box::pin(async move {
            let mut last = ImageError::Unknown {
                image: lookup.image.clone(),
            };
            for resolver in &self.resolvers {
                match resolver.resolve(lookup).await {
                    Ok(found) => return Ok(found),
                    Err(error) => last = error,
                }
            }
            Err(last)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(command: &str) -> ImageEntrypoint {
        ImageEntrypoint {
            entrypoint: vec![command.to_owned()],
            cmd: Vec::new(),
        }
    }

    fn lookup(image: &str) -> ImageLookup {
        ImageLookup {
            image: image.to_owned(),
            ..ImageLookup::default()
        }
    }

    #[tokio::test]
    async fn chained_resolver_first_known_answer_wins() {
        let first = StaticImageResolver::new(BTreeMap::from([("a".to_owned(), entry("/first"))]));
        let second = StaticImageResolver::new(BTreeMap::from([
            ("a".to_owned(), entry("/second")),
            ("b".to_owned(), entry("/b")),
        ]));
        let chain = ChainedResolver::new(vec![
            std::sync::Arc::new(first),
            std::sync::Arc::new(second),
        ]);
        assert_eq!(
            chain.resolve(&lookup("a")).await.ok(),
            Some(entry("/first"))
        );
        assert_eq!(chain.resolve(&lookup("b")).await.ok(), Some(entry("/b")));
        assert!(matches!(
            chain.resolve(&lookup("c")).await,
            Err(ImageError::Unknown { image }) if image == "c"
        ));
    }
}

//! Registry entrypoint lookup against the real CNCF distribution registry (TLS + htpasswd)
//! and the fake kube-apiserver for pull secrets and ServiceAccounts.
//!
//! Command building is the webhook's own (`Mutator`, Kubernetes semantics); these tests
//! send real AdmissionReviews through it with the registry resolver wired in, and check the
//! patched container's command line. Failure, timing, cache and platform cases that have no
//! admission-level difference are checked on the resolver directly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use strongroom_testbed::registry::{Registry, TestImage, docker_config_json};
use strongroom_testbed::{FakeApiServer, ServiceAccountIssuer};
use webhook::image::{ImageEntrypoint, ImageError, ImageLookup, ImageResolver, Platform};
use webhook::mutate::Mutator;
use webhook::registry::credentials::KubeSecretSource;
use webhook::registry::{RegistryConfig, RegistryResolver};

const NS: &str = "fixtures-1";

/// Two real registries (private with htpasswd, public anonymous), the fake API server with
/// pull secrets, and the images of the acceptance list.
struct Bed {
    private: Registry,
    public: Registry,
    api: FakeApiServer,
}

impl Bed {
    fn start() -> Self {
        let private = Registry::start().unwrap();
        let public = Registry::start_anonymous().unwrap();
        let amd = TestImage::linux("amd64")
            .entrypoint(["/app-amd64"])
            .cmd(["serve"]);
        let arm = TestImage::linux("arm64")
            .entrypoint(["/app-arm64"])
            .cmd(["serve"]);
        private
            .push_index("team/app", "1.0", &[amd, arm], true)
            .unwrap();
        private
            .push_image(
                "team/cmd-only",
                "7",
                &TestImage::linux("amd64").cmd(["redis-server"]),
            )
            .unwrap();
        private
            .push_image(
                "team/entrypoint-only",
                "1",
                &TestImage::linux("amd64").entrypoint(["/docker-entrypoint.sh", "--init"]),
            )
            .unwrap();
        public
            .push_image(
                "library/hello",
                "1",
                &TestImage::linux("amd64")
                    .entrypoint(["/hello"])
                    .cmd(["--greet"]),
            )
            .unwrap();

        let api = FakeApiServer::start(ServiceAccountIssuer::new().unwrap().verifier()).unwrap();
        let good = private.docker_config_json().unwrap();
        let bad = docker_config_json(private.host(), "strongroom", "wrong-password");
        for (ns, name, config) in [
            (NS, "regcred", &good),
            (NS, "stale", &bad),
            (NS, "sa-cred", &good),
            ("strongroom-system", "default-cred", &good),
        ] {
            api.insert(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": ns},
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(config)},
            }))
            .unwrap();
        }
        api.insert(json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "app-sa", "namespace": NS},
            "imagePullSecrets": [{"name": "sa-cred"}],
        }))
        .unwrap();
        Self {
            private,
            public,
            api,
        }
    }

    fn config(&self) -> RegistryConfig {
        let mut config = RegistryConfig::default();
        let bundle = format!("{}{}", self.private.ca_pem(), self.public.ca_pem());
        config.tls.ca_bundle_pem = Some(bundle.into_bytes());
        config.timeout = Duration::from_millis(1500);
        config
    }

    fn resolver(&self, config: RegistryConfig) -> RegistryResolver {
        let source = KubeSecretSource::new(self.api.kube_client().unwrap());
        RegistryResolver::new(config, Arc::new(source)).unwrap()
    }

    fn mutator(&self, resolver: RegistryResolver) -> Mutator {
        Mutator::new(
            common::test_config(),
            Arc::new(resolver),
            Arc::new(common::test_objects()),
        )
    }
}

/// The captured `pod-no-command` pod with its container's image and pod fields replaced.
fn pod(image: &str, edit: impl FnOnce(&mut Value)) -> Value {
    let mut pod = common::fixture_json("pod-no-command")["request"]["object"].clone();
    pod["spec"]["containers"][0]["image"] = json!(image);
    pod["spec"]["imagePullSecrets"] = json!([]);
    pod["spec"]["serviceAccountName"] = json!("default");
    edit(&mut pod);
    pod
}

/// The first container's full command line after mutation (`command` + `args`), or `None`
/// when the webhook did not inject into it; plus the response.
async fn mutated_command(mutator: &Mutator, pod: &Value) -> (Option<Vec<String>>, Value) {
    let answer = webhook::handler::answer(mutator, &common::pod_review(pod)).await;
    let patched = common::apply(pod, &answer.body());
    common::as_pod(&patched);
    let container = &patched["spec"]["containers"][0];
    let line: Vec<String> = container["command"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(container["args"].as_array().into_iter().flatten())
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let injected = line.first().is_some_and(|c| c.starts_with("/vault/"));
    (injected.then(|| line[1..].to_vec()), answer.body())
}

fn lookup(image: &str) -> ImageLookup {
    ImageLookup {
        image: image.to_owned(),
        namespace: NS.to_owned(),
        service_account: "default".to_owned(),
        image_pull_policy: "IfNotPresent".to_owned(),
        ..ImageLookup::default()
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn metrics_text(resolver: &RegistryResolver) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    resolver.metrics().register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_anonymous_public_image_entrypoint_plus_cmd() {
    let bed = Bed::start();
    let mutator = bed.mutator(bed.resolver(bed.config()));
    let image = format!("{}/library/hello:1", bed.public.host());
    let (line, review) = mutated_command(&mutator, &pod(&image, |_| {})).await;
    assert_eq!(line, Some(strings(&["/hello", "--greet"])), "{review}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_private_image_with_pod_pull_secret_resolved() {
    let bed = Bed::start();
    let mutator = bed.mutator(bed.resolver(bed.config()));
    let image = format!("{}/team/cmd-only:7", bed.private.host());
    let with_secret = pod(&image, |p| {
        p["spec"]["imagePullSecrets"] = json!([{"name": "regcred"}])
    });
    let (line, review) = mutated_command(&mutator, &with_secret).await;
    assert_eq!(line, Some(strings(&["redis-server"])), "{review}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_private_image_with_service_account_secret_resolved() {
    let bed = Bed::start();
    let mutator = bed.mutator(bed.resolver(bed.config()));
    let image = format!("{}/team/entrypoint-only:1", bed.private.host());
    let via_sa = pod(&image, |p| {
        p["spec"]["serviceAccountName"] = json!("app-sa")
    });
    let (line, review) = mutated_command(&mutator, &via_sa).await;
    assert_eq!(
        line,
        Some(strings(&["/docker-entrypoint.sh", "--init"])),
        "{review}"
    );
    assert_eq!(
        bed.api.count_requests(
            "GET",
            &format!("/api/v1/namespaces/{NS}/serviceaccounts/app-sa")
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_private_image_with_default_secret_resolved() {
    let bed = Bed::start();
    let mut config = bed.config();
    config.defaults.secret = Some("default-cred".to_owned());
    config.defaults.namespace = Some("strongroom-system".to_owned());
    let mutator = bed.mutator(bed.resolver(config));
    let image = format!("{}/team/cmd-only:7", bed.private.host());
    let (line, review) = mutated_command(&mutator, &pod(&image, |_| {})).await;
    assert_eq!(line, Some(strings(&["redis-server"])), "{review}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_two_secrets_first_invalid_second_used() {
    let bed = Bed::start();
    let mutator = bed.mutator(bed.resolver(bed.config()));
    let image = format!("{}/team/app:1.0", bed.private.host());
    let both = pod(&image, |p| {
        p["spec"]["imagePullSecrets"] = json!([{"name": "stale"}, {"name": "regcred"}]);
    });
    let (line, review) = mutated_command(&mutator, &both).await;
    assert_eq!(line, Some(strings(&["/app-amd64", "serve"])), "{review}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_arm64_node_selector_arm64_entrypoint_never_attestation() {
    let bed = Bed::start();
    let mutator = bed.mutator(bed.resolver(bed.config()));
    let image = format!("{}/team/app:1.0", bed.private.host());
    let arm = pod(&image, |p| {
        p["spec"]["imagePullSecrets"] = json!([{"name": "regcred"}]);
        p["spec"]["nodeSelector"] =
            json!({"kubernetes.io/arch": "arm64", "kubernetes.io/os": "linux"});
    });
    let (line, review) = mutated_command(&mutator, &arm).await;
    assert_eq!(line, Some(strings(&["/app-arm64", "serve"])), "{review}");
    // Without a selector the operator default (linux/amd64) applies.
    let default = pod(&image, |p| {
        p["spec"]["imagePullSecrets"] = json!([{"name": "regcred"}])
    });
    let (line, review) = mutated_command(&mutator, &default).await;
    assert_eq!(line, Some(strings(&["/app-amd64", "serve"])), "{review}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_args_only_container_entrypoint_plus_args() {
    let bed = Bed::start();
    let mutator = bed.mutator(bed.resolver(bed.config()));
    let image = format!("{}/team/app:1.0", bed.private.host());
    let args_only = pod(&image, |p| {
        p["spec"]["imagePullSecrets"] = json!([{"name": "regcred"}]);
        p["spec"]["containers"][0]["args"] = json!(["--debug", "--port=1"]);
    });
    let (line, review) = mutated_command(&mutator, &args_only).await;
    assert_eq!(
        line,
        Some(strings(&["/app-amd64", "--debug", "--port=1"])),
        "{review}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_100_concurrent_one_manifest_and_one_config_fetch() {
    let bed = Bed::start();
    let resolver = bed.resolver(bed.config());
    let mutator = Arc::new(bed.mutator(resolver.clone()));
    let image = format!("{}/team/cmd-only:7", bed.private.host());
    let body = Arc::new(common::pod_review(&pod(&image, |p| {
        p["spec"]["imagePullSecrets"] = json!([{"name": "regcred"}]);
    })));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let mutator = Arc::clone(&mutator);
            let body = Arc::clone(&body);
            tokio::spawn(async move { webhook::handler::answer(&mutator, &body).await })
        })
        .collect();
    for task in tasks {
        let answer = task.await.unwrap();
        assert_eq!(
            answer.body()["response"]["patchType"],
            "JSONPatch",
            "{}",
            answer.body()
        );
    }
    assert_eq!(
        bed.private
            .count_requests("GET", "team/cmd-only", "manifests")
            .unwrap(),
        1
    );
    assert_eq!(
        bed.private
            .count_requests("GET", "team/cmd-only", "blobs")
            .unwrap(),
        1
    );
    let text = metrics_text(&resolver);
    assert!(
        text.contains("registry_lookup_duration_seconds_count{result=\"miss\"}"),
        "{text}"
    );
    assert!(
        text.contains("registry_cache_entries 2"),
        "tag + digest entries: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_tag_repushed_new_digest_seen_after_ttl() {
    let bed = Bed::start();
    let mut config = bed.config();
    config.tag_ttl = Duration::from_secs(2);
    let resolver = bed.resolver(config);
    let image = format!("{}/library/moving:2", bed.public.host());
    let v1 = TestImage::linux("amd64").entrypoint(["/v1"]);
    bed.public.push_image("library/moving", "2", &v1).unwrap();
    assert_eq!(
        resolver.resolve(&lookup(&image)).await.unwrap().entrypoint,
        ["/v1"]
    );
    let first_fetch = Instant::now();
    let v2 = TestImage::linux("amd64").entrypoint(["/v2"]);
    bed.public.push_image("library/moving", "2", &v2).unwrap();
    // Within the TTL the cached answer stands (no registry request).
    assert_eq!(
        resolver.resolve(&lookup(&image)).await.unwrap().entrypoint,
        ["/v1"]
    );
    assert_eq!(
        bed.public
            .count_requests("GET", "library/moving", "manifests")
            .unwrap(),
        1
    );
    tokio::time::sleep(
        (first_fetch + Duration::from_millis(2100)).saturating_duration_since(Instant::now()),
    )
    .await;
    assert_eq!(
        resolver.resolve(&lookup(&image)).await.unwrap().entrypoint,
        ["/v2"]
    );
    // `imagePullPolicy: Always` uses the short TTL even on a fresh tag entry.
    let mut always = lookup(&image);
    always.image_pull_policy = "Always".to_owned();
    assert_eq!(resolver.resolve(&always).await.unwrap().entrypoint, ["/v2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_unchanged_tag_after_ttl_reuses_config_by_digest() {
    let bed = Bed::start();
    let mut config = bed.config();
    config.tag_ttl = Duration::from_millis(300);
    let resolver = bed.resolver(config);
    let image = format!("{}/library/hello:1", bed.public.host());
    resolver.resolve(&lookup(&image)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = resolver.resolve(&lookup(&image)).await.unwrap();
    assert_eq!(again.entrypoint, ["/hello"]);
    assert_eq!(
        bed.public
            .count_requests("GET", "library/hello", "manifests")
            .unwrap(),
        2
    );
    assert_eq!(
        bed.public
            .count_requests("GET", "library/hello", "blobs")
            .unwrap(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_digest_pinned_reference_resolved_and_verified() {
    let bed = Bed::start();
    let resolver = bed.resolver(bed.config());
    let digest = bed
        .public
        .push_image(
            "library/pinned",
            "x",
            &TestImage::linux("amd64").cmd(["/pinned"]),
        )
        .unwrap();
    let image = format!("{}/library/pinned@{digest}", bed.public.host());
    assert_eq!(
        resolver.resolve(&lookup(&image)).await.unwrap().cmd,
        ["/pinned"]
    );
    let wrong = format!(
        "{}/library/pinned@sha256:{}",
        bed.public.host(),
        "0".repeat(64)
    );
    let err = resolver.resolve(&lookup(&wrong)).await.unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_platforms_disagree_error_names_both() {
    let bed = Bed::start();
    let resolver = bed.resolver(bed.config());
    let mut both = lookup(&format!("{}/team/app:1.0", bed.private.host()));
    both.image_pull_secrets = vec!["regcred".to_owned()];
    both.platforms = ["amd64", "arm64"]
        .iter()
        .map(|arch| Platform {
            os: "linux".to_owned(),
            architecture: (*arch).to_owned(),
        })
        .collect();
    let err = resolver.resolve(&both).await.unwrap_err().to_string();
    assert!(
        err.contains("linux/amd64") && err.contains("linux/arm64"),
        "{err}"
    );
    assert!(
        err.contains("/app-amd64") && err.contains("/app-arm64"),
        "{err}"
    );
    let mut s390 = both.clone();
    s390.platforms = vec![Platform {
        os: "linux".to_owned(),
        architecture: "s390x".to_owned(),
    }];
    let err = resolver.resolve(&s390).await.unwrap_err().to_string();
    assert!(err.contains("no manifest for linux/s390x"), "{err}");
    assert!(
        !err.contains("unknown/unknown"),
        "attestations are not offered: {err}"
    );
}

/// Asserts a failure arrives within the lookup timeout + 100 ms and names the image.
async fn assert_fails_fast(
    resolver: &RegistryResolver,
    lookup: &ImageLookup,
    expect: &str,
) -> ImageError {
    let budget = resolver.config().timeout + Duration::from_millis(100);
    let started = Instant::now();
    let err = resolver.resolve(lookup).await.unwrap_err();
    let took = started.elapsed();
    assert!(took <= budget, "{err} after {took:?}, budget {budget:?}");
    let text = err.to_string();
    assert!(
        text.contains(&lookup.image),
        "message must name the image: {text}"
    );
    assert!(text.contains(expect), "expected {expect:?} in {text}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_registry_down_connect_error_within_timeout() {
    let bed = Bed::start();
    let mut config = bed.config();
    config.timeout = Duration::from_millis(500);
    let resolver = bed.resolver(config);
    let port = strongroom_testbed::free_port().unwrap();
    let down = lookup(&format!("127.0.0.1:{port}/team/app:1"));
    assert_fails_fast(&resolver, &down, "connect to registry").await;
    // The resolver keeps serving other images.
    let ok = lookup(&format!("{}/library/hello:1", bed.public.host()));
    assert_eq!(resolver.resolve(&ok).await.unwrap().entrypoint, ["/hello"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_registry_stopped_mid_life_connect_error() {
    let mut bed = Bed::start();
    let mut config = bed.config();
    config.timeout = Duration::from_millis(500);
    let resolver = bed.resolver(config);
    let image = format!("{}/library/hello:1", bed.public.host());
    bed.public.stop();
    assert_fails_fast(&resolver, &lookup(&image), "connect to registry").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_slow_registry_times_out_within_budget() {
    let bed = Bed::start();
    let mut config = bed.config();
    config.timeout = Duration::from_millis(600);
    let resolver = bed.resolver(config);
    // Accepts TCP connections and never says a word (not even a TLS handshake).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let slow = lookup(&format!("{addr}/team/app:1"));
    // Normally the fetch's own deadline answers ("registry … did not answer within 600 ms");
    // on a starved runtime the waiter's deadline may fire first ("lookup timed out after
    // 600 ms"). Both name the image and the budget.
    let err = assert_fails_fast(&resolver, &slow, "600 ms").await;
    assert!(
        matches!(err, ImageError::Lookup { .. } | ImageError::Timeout { .. }),
        "{err:?}"
    );
    // The fetch itself ends at its deadline and is counted once, as a timeout.
    let counted = async {
        loop {
            if metrics_text(&resolver).contains("registry_errors_total{cause=\"timeout\"} 1") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let in_time = tokio::time::timeout(Duration::from_secs(3), counted).await;
    silent.abort();
    assert!(in_time.is_ok(), "{}", metrics_text(&resolver));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_unknown_image_not_found_and_negative_cached() {
    let bed = Bed::start();
    let resolver = bed.resolver(bed.config());
    let missing = lookup(&format!("{}/library/nope:1", bed.public.host()));
    assert_fails_fast(&resolver, &missing, "not found").await;
    assert_fails_fast(&resolver, &missing, "not found").await;
    let fetches = bed
        .public
        .access_log()
        .unwrap()
        .iter()
        .filter(|e| e.method == "GET" && e.path.starts_with("/v2/library/nope/manifests/"))
        .count();
    assert_eq!(
        fetches, 1,
        "second failure must come from the negative cache"
    );
    let text = metrics_text(&resolver);
    assert!(
        text.contains("registry_errors_total{cause=\"not_found\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("registry_lookup_duration_seconds_count{result=\"error\"} 2"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_bad_credentials_auth_error_names_secret_not_password() {
    let bed = Bed::start();
    let resolver = bed.resolver(bed.config());
    let mut bad = lookup(&format!("{}/team/cmd-only:7", bed.private.host()));
    bad.image_pull_secrets = vec!["stale".to_owned()];
    let err = assert_fails_fast(&resolver, &bad, "denied access")
        .await
        .to_string();
    assert!(err.contains("fixtures-1/stale"), "{err}");
    assert!(!err.contains("wrong-password"), "{err}");
    let anonymous = lookup(&format!("{}/team/cmd-only:7", bed.private.host()));
    assert_fails_fast(&resolver, &anonymous, "no image pull secret matches").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_private_result_not_shared_with_other_namespace() {
    let bed = Bed::start();
    let resolver = bed.resolver(bed.config());
    let image = format!("{}/team/cmd-only:7", bed.private.host());
    let mut owner = lookup(&image);
    owner.image_pull_secrets = vec!["regcred".to_owned()];
    assert_eq!(
        resolver.resolve(&owner).await.unwrap().cmd,
        ["redis-server"]
    );
    let mut stranger = lookup(&image);
    stranger.namespace = "other".to_owned();
    assert_fails_fast(&resolver, &stranger, "denied access").await;
    // The same namespace (other pod, same secret) is served from the cache.
    assert_eq!(
        resolver.resolve(&owner).await.unwrap().cmd,
        ["redis-server"]
    );
    assert_eq!(
        bed.private
            .count_requests("GET", "team/cmd-only", "blobs")
            .unwrap(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_docker_hub_name_through_mirror_rule() {
    let bed = Bed::start();
    let mut config = bed.config();
    config.mirrors = vec![format!("docker.io={}", bed.public.host()).parse().unwrap()];
    let resolver = bed.resolver(config);
    // `hello:1` is docker.io/library/hello:1, fetched from the mirror.
    let got = resolver.resolve(&lookup("hello:1")).await.unwrap();
    assert_eq!(
        got,
        ImageEntrypoint {
            entrypoint: strings(&["/hello"]),
            cmd: strings(&["--greet"]),
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_tls_unknown_ca_fails_skip_verify_succeeds() {
    let bed = Bed::start();
    let image = lookup(&format!("{}/library/hello:1", bed.public.host()));
    let mut untrusted = bed.config();
    untrusted.tls.ca_bundle_pem = None;
    let err = bed.resolver(untrusted).resolve(&image).await.unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    let mut skip = bed.config();
    skip.tls.ca_bundle_pem = None;
    skip.tls.skip_verify = true;
    assert_eq!(
        bed.resolver(skip).resolve(&image).await.unwrap().entrypoint,
        ["/hello"]
    );
}

/// The captured review, image rewritten to the test registry, through the real HTTPS server
/// wired with the registry resolver; then an unknown image on the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_captured_review_patched_with_registry_entrypoint() {
    use common::net::{SecretDir, TestServer, connect, default_client, test_settings};

    let bed = Bed::start();
    bed.private
        .push_image(
            "team/redis",
            "7",
            &TestImage::linux("amd64")
                .entrypoint(["docker-entrypoint.sh"])
                .cmd(["redis-server"]),
        )
        .unwrap();
    let ca = strongroom_testbed::TestCa::new().unwrap();
    let dir = SecretDir::new(&ca);
    let server =
        TestServer::start(bed.mutator(bed.resolver(bed.config())), test_settings(&dir)).await;
    let mut conn = connect(server.addr, default_client(&[&ca])).await;

    let mut review = common::fixture_json("pod-no-command");
    let image = format!("{}/team/redis:7", bed.private.host());
    review["request"]["object"]["spec"]["containers"][0]["image"] = json!(image);
    let object = review["request"]["object"].clone();
    let answer = conn.review(serde_json::to_vec(&review).unwrap()).await;
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
    let patched = common::apply(&object, &answer);
    let pod = common::as_pod(&patched);
    let container = &pod.spec.unwrap().containers[0];
    let line: Vec<String> = container
        .command
        .clone()
        .unwrap_or_default()
        .into_iter()
        .chain(container.args.clone().unwrap_or_default())
        .collect();
    assert!(line[0].starts_with("/vault/"), "{line:?}");
    assert_eq!(
        line[1..],
        strings(&["docker-entrypoint.sh", "redis-server"]),
        "{line:?}"
    );
    // The pod's own pull secret (regcred, from the captured review) was read.
    assert_eq!(
        bed.api
            .count_requests("GET", &format!("/api/v1/namespaces/{NS}/secrets/regcred")),
        1
    );

    // An unknown image: answered on the same connection, the webhook keeps serving.
    let missing = format!("{}/team/missing:1", bed.private.host());
    review["request"]["object"]["spec"]["containers"][0]["image"] = json!(missing);
    let answer = conn.review(serde_json::to_vec(&review).unwrap()).await;
    let text = answer["response"].to_string();
    assert!(
        text.contains(&missing) && text.contains("not found"),
        "{answer}"
    );
}

/// Token auth (the Docker Hub scheme): `Bearer` challenge, pull token from the realm with the
/// pull secret's credentials, one token per lookup session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_token_auth_registry_bearer_token_with_pull_secret() {
    let reg = Registry::start_token_auth().unwrap();
    reg.push_image(
        "team/tok",
        "1",
        &TestImage::linux("amd64").entrypoint(["/tok"]).cmd(["run"]),
    )
    .unwrap();
    let api = FakeApiServer::start(ServiceAccountIssuer::new().unwrap().verifier()).unwrap();
    api.insert(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "hub", "namespace": NS},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": reg.docker_config_json().unwrap()},
    }))
    .unwrap();
    let mut config = RegistryConfig::default();
    config.tls.ca_bundle_pem = Some(reg.ca_pem().as_bytes().to_vec());
    let source = KubeSecretSource::new(api.kube_client().unwrap());
    let resolver = RegistryResolver::new(config, Arc::new(source)).unwrap();

    let mut with_secret = lookup(&format!("{}/team/tok:1", reg.host()));
    with_secret.image_pull_secrets = vec!["hub".to_owned()];
    let got = resolver.resolve(&with_secret).await.unwrap();
    assert_eq!(
        (got.entrypoint, got.cmd),
        (strings(&["/tok"]), strings(&["run"]))
    );
    assert_eq!(reg.token_requests(), 1, "one token for the whole lookup");

    // Another namespace without a secret gets an access-less token and is refused.
    let mut anonymous = lookup(&format!("{}/team/tok:1", reg.host()));
    anonymous.namespace = "other".to_owned();
    assert_fails_fast(&resolver, &anonymous, "denied access").await;
}

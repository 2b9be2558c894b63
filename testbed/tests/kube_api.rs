//! Integration tests of the fake kube-apiserver, driven by the real `kube` client and raw HTTP.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use strongroom_testbed::{FakeApiServer, ServiceAccountIssuer};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn kube_client(api: &FakeApiServer) -> Result<kube::Client, kube::Error> {
    let mut config = kube::Config::new(
        api.url()
            .parse()
            .map_err(|_| kube::Error::LinesCodecMaxLineLengthExceeded)?,
    );
    config.root_cert = Some(vec![api.ca_der()]);
    config.auth_info.token = Some(api.token().to_owned().into());
    kube::Client::try_from(config)
}

#[tokio::test]
async fn fake_api_kube_client_gets_creates_and_sees_real_not_found() -> TestResult {
    let issuer = ServiceAccountIssuer::new()?;
    let api = FakeApiServer::start(issuer.verifier())?;
    api.insert(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "pull", "namespace": "demo" },
        "stringData": { "k": "v" },
    }))?;
    let client = kube_client(&api)?;
    let secrets: kube::Api<Secret> = kube::Api::namespaced(client, "demo");

    let got = secrets.get("pull").await?;
    let data = got.data.unwrap_or_default();
    assert_eq!(data.get("k").map(|b| b.0.as_slice()), Some(b"v".as_slice()));
    assert_eq!(
        api.count_requests("GET", "/api/v1/namespaces/demo/secrets/pull"),
        1
    );

    let err = secrets.get("missing").await;
    match err {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 404);
            assert_eq!(status.reason, "NotFound");
            assert_eq!(status.message, "secrets \"missing\" not found");
        }
        other => panic!("expected a NotFound Status, got {other:?}"),
    }

    let mut new: Secret = serde_json::from_value(json!({
        "metadata": { "name": "created" },
        "stringData": { "a": "b" },
    }))?;
    let created = secrets.create(&PostParams::default(), &new).await?;
    assert_eq!(created.metadata.namespace.as_deref(), Some("demo"));
    let rv = created.metadata.resource_version.clone();
    assert!(rv.is_some());

    match secrets.create(&PostParams::default(), &new).await {
        Err(kube::Error::Api(status)) => assert_eq!(
            (status.code, status.reason.as_str()),
            (409, "AlreadyExists")
        ),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }

    // Optimistic concurrency: a stale resourceVersion conflicts.
    new.metadata.resource_version = Some("1".to_owned());
    match secrets
        .replace("created", &PostParams::default(), &new)
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"))
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    new.metadata.resource_version = rv.clone();
    let replaced = secrets
        .replace("created", &PostParams::default(), &new)
        .await?;
    assert_ne!(replaced.metadata.resource_version, rv);

    let patched = secrets
        .patch(
            "created",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "x": "y" } } })),
        )
        .await?;
    assert_eq!(
        patched
            .metadata
            .labels
            .unwrap_or_default()
            .get("x")
            .map(String::as_str),
        Some("y")
    );
    let patched = secrets
        .patch(
            "created",
            &PatchParams::default(),
            &Patch::<()>::Json(serde_json::from_value(
                json!([{ "op": "add", "path": "/metadata/annotations", "value": { "n": "1" } }]),
            )?),
        )
        .await?;
    assert_eq!(
        patched
            .metadata
            .annotations
            .unwrap_or_default()
            .get("n")
            .map(String::as_str),
        Some("1")
    );

    // Server-side apply creates a missing object, then merges into it.
    let applied = secrets
        .patch(
            "applied",
            &PatchParams::apply("testbed"),
            &Patch::Apply(json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "applied" }, "data": { "x": "eQ==" } })),
        )
        .await?;
    assert_eq!(applied.metadata.namespace.as_deref(), Some("demo"));
    secrets.delete("applied", &Default::default()).await?;

    let list = secrets.list(&Default::default()).await?;
    assert_eq!(list.items.len(), 2);
    secrets.delete("created", &Default::default()).await?;
    assert!(api.get("secrets", "demo", "created").is_none());
    Ok(())
}

async fn review(
    api: &FakeApiServer,
    bearer: &str,
    token: &str,
) -> Result<(u16, serde_json::Value), Box<dyn std::error::Error + Send + Sync>> {
    let tls = strongroom_testbed::tls::client_config(api.ca_pem())?;
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()?;
    let resp = client
        .post(format!("{}/apis/authentication.k8s.io/v1/tokenreviews", api.url()))
        .bearer_auth(bearer)
        .json(&json!({ "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": { "token": token } }))
        .send()
        .await?;
    Ok((resp.status().as_u16(), resp.json().await?))
}

#[tokio::test]
async fn token_review_bad_signature_unauthenticated_valid_authenticated() -> TestResult {
    let issuer = ServiceAccountIssuer::new()?;
    let api = FakeApiServer::start(issuer.verifier())?;

    let good =
        issuer.issue_with(&strongroom_testbed::TokenSpec::new("demo", "app-sa").pod("web-1"))?;
    let (code, body) = review(&api, api.token(), &good).await?;
    assert_eq!(code, 201);
    assert_eq!(body["status"]["authenticated"], true);
    assert_eq!(
        body["status"]["user"]["username"],
        "system:serviceaccount:demo:app-sa"
    );
    assert_eq!(
        body["status"]["user"]["extra"]["authentication.kubernetes.io/pod-name"],
        json!(["web-1"])
    );

    let forged = ServiceAccountIssuer::new()?.issue("demo", "app-sa")?;
    let (code, body) = review(&api, api.token(), &forged).await?;
    assert_eq!(code, 201);
    assert_ne!(body["status"]["authenticated"], true);
    assert!(
        body["status"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );

    // A valid service-account JWT may act as the reviewer (Vault without token_reviewer_jwt).
    let (code, body) = review(&api, &good, &good).await?;
    assert_eq!(
        (code, &body["status"]["authenticated"]),
        (201, &json!(true))
    );
    let expired =
        issuer.issue_with(&strongroom_testbed::TokenSpec::new("demo", "app-sa").expired())?;
    let (code, _) = review(&api, &expired, &good).await?;
    assert_eq!(code, 401);

    let (code, body) = review(&api, "wrong-reviewer", &good).await?;
    assert_eq!(code, 401);
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Unauthorized");
    Ok(())
}

#[tokio::test]
async fn fake_api_service_account_and_webhook_config_patch_round_trip() -> TestResult {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    use k8s_openapi::api::core::v1::ServiceAccount;

    let api = FakeApiServer::start(ServiceAccountIssuer::new()?.verifier())?;
    api.insert(json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": { "name": "app-sa", "namespace": "demo" },
        "imagePullSecrets": [{ "name": "pull" }],
    }))?;
    api.insert(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": { "name": "strongroom" },
        "webhooks": [{
            "name": "pods.strongroom.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "clientConfig": { "service": { "name": "wh", "namespace": "sys" } },
        }],
    }))?;
    let client = kube_client(&api)?;
    let sas: kube::Api<ServiceAccount> = kube::Api::namespaced(client.clone(), "demo");
    let sa = sas.get("app-sa").await?;
    assert_eq!(sa.image_pull_secrets.unwrap_or_default()[0].name, "pull");

    let mwcs: kube::Api<MutatingWebhookConfiguration> = kube::Api::all(client);
    let patch = serde_json::from_value(json!([
        { "op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": "Q0E=" }
    ]))?;
    let patched = mwcs
        .patch(
            "strongroom",
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await?;
    let bundle = patched.webhooks.unwrap_or_default()[0]
        .client_config
        .ca_bundle
        .clone();
    assert_eq!(bundle.map(|b| b.0), Some(b"CA".to_vec()));
    assert_eq!(
        api.count_requests(
            "PATCH",
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/strongroom"
        ),
        1
    );
    match mwcs.get("absent").await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 404);
            assert_eq!(
                status.message,
                "mutatingwebhookconfigurations.admissionregistration.k8s.io \"absent\" not found"
            );
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    Ok(())
}

#[cfg(feature = "kube")]
#[tokio::test]
async fn fake_api_kube_client_helper_lists_configmaps() -> TestResult {
    use k8s_openapi::api::core::v1::ConfigMap;
    let api = FakeApiServer::start(ServiceAccountIssuer::new()?.verifier())?;
    api.insert(json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "c", "namespace": "default", "labels": { "app": "x" } } }))?;
    api.insert(json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "d", "namespace": "default" } }))?;
    let cms: kube::Api<ConfigMap> = kube::Api::default_namespaced(api.kube_client()?);
    let listed = cms
        .list(&kube::api::ListParams::default().labels("app=x"))
        .await?;
    assert_eq!(listed.items.len(), 1);
    Ok(())
}

#[test]
fn fake_api_feature_free_plain_test_can_insert_and_get() -> TestResult {
    let api = FakeApiServer::start(ServiceAccountIssuer::new()?.verifier())?;
    let stored = api.insert(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": { "name": "strongroom" }, "webhooks": [],
    }))?;
    assert!(stored["metadata"]["resourceVersion"].as_str().is_some());
    assert_eq!(
        api.get("mutatingwebhookconfigurations", "", "strongroom"),
        Some(stored)
    );
    Ok(())
}

async fn raw(
    api: &FakeApiServer,
    method: reqwest::Method,
    path: &str,
    bearer: Option<&str>,
    content_type: &str,
    body: Option<serde_json::Value>,
) -> Result<(u16, serde_json::Value), Box<dyn std::error::Error + Send + Sync>> {
    let tls = strongroom_testbed::tls::client_config(api.ca_pem())?;
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()?;
    let mut req = client.request(method, format!("{}{path}", api.url()));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    if let Some(b) = body {
        req = req.header("content-type", content_type).body(b.to_string());
    }
    let resp = req.send().await?;
    Ok((resp.status().as_u16(), resp.json().await?))
}

#[tokio::test]
async fn fake_api_raw_http_statuses_match_real_server_shapes() -> TestResult {
    use reqwest::Method;
    let api = FakeApiServer::start(ServiceAccountIssuer::new()?.verifier())?;
    let t = Some(api.token());
    let json_ct = "application/json";

    let (code, body) = raw(
        &api,
        Method::GET,
        "/api/v1/namespaces/demo/secrets/x",
        None,
        json_ct,
        None,
    )
    .await?;
    assert_eq!((code, body["reason"].as_str()), (401, Some("Unauthorized")));

    let cm = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "c" }, "data": { "a": "1" } });
    let (code, created) = raw(
        &api,
        Method::POST,
        "/api/v1/namespaces/demo/configmaps",
        t,
        json_ct,
        Some(cm.clone()),
    )
    .await?;
    assert_eq!(code, 201);
    assert_eq!(created["metadata"]["namespace"], "demo");
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let (code, body) = raw(
        &api,
        Method::POST,
        "/api/v1/namespaces/demo/configmaps",
        t,
        json_ct,
        Some(cm.clone()),
    )
    .await?;
    assert_eq!(code, 409);
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["status"], "Failure");
    assert_eq!(body["reason"], "AlreadyExists");
    assert_eq!(
        body["details"],
        json!({ "name": "c", "kind": "configmaps" })
    );
    assert_eq!(body["message"], "configmaps \"c\" already exists");

    let mut stale = created.clone();
    stale["metadata"]["resourceVersion"] = json!("0");
    let (code, body) = raw(
        &api,
        Method::PUT,
        "/api/v1/namespaces/demo/configmaps/c",
        t,
        json_ct,
        Some(stale),
    )
    .await?;
    assert_eq!((code, body["reason"].as_str()), (409, Some("Conflict")));

    let patch = json!({ "metadata": { "resourceVersion": rv }, "data": { "b": "2" } });
    let (code, patched) = raw(
        &api,
        Method::PATCH,
        "/api/v1/namespaces/demo/configmaps/c",
        t,
        "application/merge-patch+json",
        Some(patch.clone()),
    )
    .await?;
    assert_eq!(code, 200);
    assert_eq!(patched["data"], json!({ "a": "1", "b": "2" }));
    // The same patch again carries a now-stale resourceVersion.
    let (code, _) = raw(
        &api,
        Method::PATCH,
        "/api/v1/namespaces/demo/configmaps/c",
        t,
        "application/merge-patch+json",
        Some(patch),
    )
    .await?;
    assert_eq!(code, 409);

    api.insert(json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "demo", "labels": { "team": "a" } } }))?;
    let (code, ns) = raw(
        &api,
        Method::GET,
        "/api/v1/namespaces/demo",
        t,
        json_ct,
        None,
    )
    .await?;
    assert_eq!(
        (code, ns["metadata"]["labels"]["team"].as_str()),
        (200, Some("a"))
    );

    api.insert(json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "c", "namespace": "other" } }))?;
    let (code, all) = raw(&api, Method::GET, "/api/v1/configmaps", t, json_ct, None).await?;
    assert_eq!((code, all["kind"].as_str()), (200, Some("ConfigMapList")));
    assert_eq!(all["items"].as_array().map(Vec::len), Some(2));

    let ev = json!({ "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": { "generateName": "guard-" }, "reason": "Denied" });
    let (code, ev) = raw(
        &api,
        Method::POST,
        "/apis/events.k8s.io/v1/namespaces/demo/events",
        t,
        json_ct,
        Some(ev),
    )
    .await?;
    assert_eq!(code, 201);
    assert!(
        ev["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("guard-"))
    );

    let (code, body) = raw(
        &api,
        Method::DELETE,
        "/api/v1/namespaces/demo/configmaps/c",
        t,
        json_ct,
        None,
    )
    .await?;
    assert_eq!((code, body["status"].as_str()), (200, Some("Success")));
    let (code, body) = raw(
        &api,
        Method::GET,
        "/api/v1/namespaces/demo/configmaps/c",
        t,
        json_ct,
        None,
    )
    .await?;
    assert_eq!(
        (code, body["reason"].as_str(), body["code"].as_u64()),
        (404, Some("NotFound"), Some(404))
    );
    let (code, _) = raw(
        &api,
        Method::GET,
        "/api/v1/namespaces/demo/widgets",
        t,
        json_ct,
        None,
    )
    .await?;
    assert_eq!(code, 404);

    api.inject_failure("GET", "/api/v1/namespaces/demo/configmaps", 503, 2);
    for _ in 0..2 {
        let (code, body) = raw(
            &api,
            Method::GET,
            "/api/v1/namespaces/demo/configmaps",
            t,
            json_ct,
            None,
        )
        .await?;
        assert_eq!(
            (code, body["reason"].as_str()),
            (503, Some("ServiceUnavailable"))
        );
    }
    let (code, _) = raw(
        &api,
        Method::GET,
        "/api/v1/namespaces/demo/configmaps",
        t,
        json_ct,
        None,
    )
    .await?;
    assert_eq!(code, 200);
    assert!(api.remove("namespaces", "", "demo").is_some());
    assert!(api.get("namespaces", "", "demo").is_none());

    assert!(api.requests().len() >= 12);
    api.clear_requests();
    assert!(api.requests().is_empty());
    Ok(())
}

#[test]
fn servers_are_send_and_sync_for_shared_statics() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<FakeApiServer>();
    assert_send_sync::<strongroom_testbed::OpenBao>();
    assert_send_sync::<strongroom_testbed::Postgres>();
    assert_send_sync::<ServiceAccountIssuer>();
}

#[tokio::test]
async fn test_ca_write_files_key_private_and_foreign_ca_rejected() -> TestResult {
    use std::os::unix::fs::PermissionsExt as _;
    let ca = strongroom_testbed::TestCa::new()?;
    let dir = tempfile::tempdir()?;
    let files = ca.write_files(dir.path())?;
    assert_eq!(
        std::fs::metadata(&files.key)?.permissions().mode() & 0o777,
        0o600
    );
    assert!(
        std::fs::read_to_string(&files.cert)?
            .matches("BEGIN CERTIFICATE")
            .count()
            == 2
    );
    // The fake API server is served with such a CA: a client trusting a different CA fails.
    let api = FakeApiServer::start(ServiceAccountIssuer::new()?.verifier())?;
    let wrong = strongroom_testbed::tls::client_config(ca.ca_pem())?;
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(wrong)
        .build()?;
    assert!(
        client
            .get(format!("{}/api/v1/namespaces/demo/secrets", api.url()))
            .send()
            .await
            .is_err()
    );
    Ok(())
}

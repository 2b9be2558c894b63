//! The fake kube-apiserver's field selectors and watch streams, over raw HTTPS as a client sees
//! them: `{"type":…,"object":…}` lines, resume from a resourceVersion, 410 for expired ones.

use std::time::Duration;

use serde_json::{Value, json};
use strongroom_testbed::{FakeApiServer, ServiceAccountIssuer};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn client(
    api: &FakeApiServer,
) -> Result<reqwest::Client, Box<dyn std::error::Error + Send + Sync>> {
    let tls = strongroom_testbed::tls::client_config(api.ca_pem())?;
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()?)
}

fn pod(name: &str, node: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": "demo" },
        "spec": { "nodeName": node, "containers": [{ "name": "app", "image": "app" }] },
    })
}

async fn get(
    api: &FakeApiServer,
    path_and_query: &str,
) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
    let resp = client(api)?
        .get(format!("{}{path_and_query}", api.url()))
        .bearer_auth(api.token())
        .send()
        .await?;
    Ok(resp.json().await?)
}

/// Reads watch lines until `count` arrived (or 10 s passed).
async fn watch_lines(
    api: &FakeApiServer,
    path_and_query: &str,
    count: usize,
    during: impl AsyncFnOnce(),
) -> Result<Vec<Value>, Box<dyn std::error::Error + Send + Sync>> {
    let mut resp = client(api)?
        .get(format!("{}{path_and_query}", api.url()))
        .bearer_auth(api.token())
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    during().await;
    let mut buffer = Vec::new();
    let mut lines = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while lines.len() < count {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk()).await??;
        let Some(chunk) = chunk else { break };
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            lines.push(serde_json::from_slice(&line)?);
        }
    }
    Ok(lines)
}

fn summary(lines: &[Value]) -> Vec<(String, String)> {
    lines
        .iter()
        .map(|l| {
            (
                l["type"].as_str().unwrap_or_default().to_owned(),
                l["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn fake_api_list_field_selector_filters_equal_and_not_equal() -> TestResult {
    let api = FakeApiServer::start(ServiceAccountIssuer::new()?.verifier())?;
    api.insert(pod("a", "node-1"))?;
    api.insert(pod("b", "node-2"))?;
    let names = |list: &Value| -> Vec<String> {
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
            .collect()
    };
    let on_node = get(&api, "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1").await?;
    assert_eq!(names(&on_node), ["a"]);
    let elsewhere = get(&api, "/api/v1/pods?fieldSelector=spec.nodeName%21%3Dnode-1").await?;
    assert_eq!(names(&elsewhere), ["b"]);
    let by_name = get(
        &api,
        "/api/v1/namespaces/demo/pods?fieldSelector=metadata.name%3Db%2Cspec.nodeName%3Dnode-2",
    )
    .await?;
    assert_eq!(names(&by_name), ["b"]);
    Ok(())
}

#[tokio::test]
async fn fake_api_watch_from_resource_version_streams_selected_changes() -> TestResult {
    let api = FakeApiServer::start(ServiceAccountIssuer::new()?.verifier())?;
    api.insert(pod("before", "node-1"))?;
    let list = get(&api, "/api/v1/pods").await?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let path = format!(
        "/api/v1/pods?watch=true&resourceVersion={rv}&fieldSelector=spec.nodeName%3Dnode-1&timeoutSeconds=30"
    );
    let lines = watch_lines(&api, &path, 3, async || {
        let _ = api.insert(pod("other", "node-2"));
        let _ = api.insert(pod("mine", "node-1"));
        let _ = api.insert(pod("mine", "node-1"));
        let _ = api.remove("pods", "demo", "mine");
    })
    .await?;
    assert_eq!(
        summary(&lines),
        [
            ("ADDED".to_owned(), "mine".to_owned()),
            ("MODIFIED".to_owned(), "mine".to_owned()),
            ("DELETED".to_owned(), "mine".to_owned()),
        ]
    );
    assert_eq!(lines[0]["object"]["kind"], "Pod");
    assert_eq!(lines[0]["object"]["apiVersion"], "v1");
    let rvs: Vec<u64> = lines
        .iter()
        .filter_map(|l| {
            l["object"]["metadata"]["resourceVersion"]
                .as_str()?
                .parse()
                .ok()
        })
        .collect();
    assert!(rvs.windows(2).all(|w| w[0] < w[1]), "{rvs:?}");
    Ok(())
}

#[tokio::test]
async fn fake_api_watch_without_resource_version_starts_with_current_state() -> TestResult {
    let api = FakeApiServer::start(ServiceAccountIssuer::new()?.verifier())?;
    api.insert(pod("a", "node-1"))?;
    api.insert(pod("b", "node-2"))?;
    let lines = watch_lines(
        &api,
        "/api/v1/namespaces/demo/pods?watch=1&fieldSelector=spec.nodeName%3Dnode-1",
        1,
        async || {},
    )
    .await?;
    assert_eq!(summary(&lines), [("ADDED".to_owned(), "a".to_owned())]);
    Ok(())
}

#[tokio::test]
async fn fake_api_watch_expired_resource_version_gets_410() -> TestResult {
    let api = FakeApiServer::start(ServiceAccountIssuer::new()?.verifier())?;
    // More changes than the history keeps.
    for i in 0..4100 {
        api.insert(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": format!("c{}", i % 3), "namespace": "demo" },
        }))?;
    }
    let lines = watch_lines(
        &api,
        "/api/v1/configmaps?watch=true&resourceVersion=1",
        1,
        async || {},
    )
    .await?;
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["type"], "ERROR");
    assert_eq!(lines[0]["object"]["code"], 410);
    assert_eq!(lines[0]["object"]["reason"], "Expired");
    Ok(())
}

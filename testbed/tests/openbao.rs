//! Integration tests of the OpenBao and PostgreSQL parts of the test bed, against the real servers.

use std::time::Duration;

use serde_json::json;
use strongroom_testbed::{Error, OpenBao, Postgres, Result, TokenSpec};

#[test]
fn openbao_plain_starts_and_serves_kv_transit_and_audit() -> Result<()> {
    let bao = OpenBao::start()?;
    assert!(bao.addr().starts_with("http://127.0.0.1:"));
    let health = bao.api("GET", "sys/health", None)?;
    assert_eq!(health["sealed"], false);

    assert_eq!(bao.write_kv2("app/db", json!({ "user": "alice" }))?, 1);
    assert_eq!(bao.write_kv2("app/db", json!({ "user": "bob" }))?, 2);
    let v1 = bao.api("GET", "secret/data/app/db?version=1", None)?;
    assert_eq!(v1["data"]["data"]["user"], "alice");
    bao.write_kv1("legacy", json!({ "key": "v1value" }))?;
    assert_eq!(
        bao.api("GET", "kv1/legacy", None)?["data"]["key"],
        "v1value"
    );

    let ct = bao.transit_encrypt(strongroom_testbed::TRANSIT_KEY, b"hello")?;
    assert!(ct.starts_with("vault:v1:"), "{ct}");
    let pt = bao.api(
        "POST",
        &format!("transit/decrypt/{}", strongroom_testbed::TRANSIT_KEY),
        Some(json!({ "ciphertext": ct })),
    )?;
    assert_eq!(pt["data"]["plaintext"], "aGVsbG8=");

    let entries = bao.audit_entries()?;
    assert!(
        entries
            .iter()
            .any(|e| e.is_request() && e.path == "kv1/legacy" && e.operation == "read")
    );
    // Default HMAC: the written value never appears in the log.
    let log = std::fs::read_to_string(bao.audit_log_path()).map_err(|e| Error::Io {
        op: "read audit",
        source: e,
    })?;
    assert!(!log.contains("v1value"));
    Ok(())
}

#[test]
fn openbao_and_postgres_dropped_are_reaped_and_their_dirs_removed() -> Result<()> {
    let bao = OpenBao::start()?;
    let pg = Postgres::start()?;
    let (bao_pid, pg_pid) = (bao.pid(), pg.pid());
    let bao_dir = bao.audit_log_path().parent().map(ToOwned::to_owned);
    assert!(std::path::Path::new(&format!("/proc/{bao_pid}")).exists());
    drop(bao);
    drop(pg);
    // Reaped by the guard, so not even a zombie is left.
    assert!(!std::path::Path::new(&format!("/proc/{bao_pid}")).exists());
    assert!(!std::path::Path::new(&format!("/proc/{pg_pid}")).exists());
    assert!(bao_dir.is_some_and(|d| !d.exists()));
    Ok(())
}

#[tokio::test]
async fn openbao_tls_starts_and_answers_with_its_ca() -> Result<()> {
    let bao = OpenBao::start_tls()?;
    assert!(bao.addr().starts_with("https://127.0.0.1:"));
    let ca = bao.ca_cert().ok_or_else(|| Error::NotReady {
        what: "ca".into(),
        detail: "no ca path".into(),
    })?;
    assert!(ca.exists());
    assert_eq!(bao.api("GET", "sys/health", None)?["initialized"], true);
    Ok(())
}

#[test]
fn kubernetes_login_valid_jwt_succeeds_expired_or_unbound_fails() -> Result<()> {
    let bao = OpenBao::start()?;
    let jwt = bao.issuer().issue("demo", "app-sa")?;
    let auth = bao.login_kubernetes(&jwt)?;
    assert!(auth["client_token"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(
        auth["policies"]
            .as_array()
            .is_some_and(|p| p.contains(&json!(strongroom_testbed::POLICY)))
    );
    assert_eq!(auth["metadata"]["service_account_namespace"], "demo");
    assert_eq!(
        bao.kube_api()
            .count_requests("POST", "/apis/authentication.k8s.io/v1/tokenreviews"),
        1
    );

    let token = auth["client_token"].as_str().unwrap_or_default();
    bao.write_kv2("app/x", json!({ "k": "v" }))?;
    assert_eq!(
        bao.api_with_token(token, "GET", "secret/data/app/x", None)?["data"]["data"]["k"],
        "v"
    );

    let expired = bao
        .issuer()
        .issue_with(&TokenSpec::new("demo", "app-sa").expired())?;
    let err = bao.login_kubernetes(&expired).map(drop);
    assert!(
        matches!(err, Err(Error::Api { status: 403, .. })),
        "{err:?}"
    );

    let unbound = bao.issuer().issue("kube-system", "app-sa")?;
    assert!(matches!(
        bao.login_kubernetes(&unbound),
        Err(Error::Api { status: 403, .. })
    ));

    let entries = bao.audit_entries()?;
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.is_request() && e.path == "auth/kubernetes/login")
            .count(),
        3
    );
    assert_eq!(bao.audit_request_count("auth/kubernetes/login")?, 3);
    Ok(())
}

#[test]
fn jwt_login_valid_jwt_succeeds_foreign_or_expired_fails() -> Result<()> {
    let bao = OpenBao::start()?;
    let jwt = bao
        .issuer()
        .issue_with(&TokenSpec::new("default", "default").audiences(["vault"]))?;
    let auth = bao.login_jwt(&jwt)?;
    assert!(auth["client_token"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(
        bao.login_jwt(&bao.issuer().issue("demo", "app-sa")?)?["policies"],
        auth["policies"]
    );

    let expired = bao
        .issuer()
        .issue_with(&TokenSpec::new("demo", "app-sa").expired())?;
    assert!(matches!(
        bao.login_jwt(&expired),
        Err(Error::Api {
            status: 400 | 403,
            ..
        })
    ));
    let foreign = strongroom_testbed::ServiceAccountIssuer::new()?.issue("demo", "app-sa")?;
    assert!(matches!(
        bao.login_jwt(&foreign),
        Err(Error::Api {
            status: 400 | 403,
            ..
        })
    ));
    Ok(())
}

#[test]
fn postgres_database_engine_issues_creds_that_log_in_with_visible_lease() -> Result<()> {
    let pg = Postgres::start()?;
    assert!(!pg.can_login("nobody", "wrong"));
    assert!(pg.can_login(pg.admin_user(), pg.admin_password()));
    assert_eq!(pg.psql("SELECT current_database()")?, "app");

    let bao = OpenBao::start()?;
    bao.enable_database(
        &pg,
        "app",
        Duration::from_secs(30),
        Duration::from_secs(120),
    )?;
    let creds = bao.api("GET", "database/creds/app", None)?;
    let user = creds["data"]["username"].as_str().unwrap_or_default();
    let pass = creds["data"]["password"].as_str().unwrap_or_default();
    assert!(pg.can_login(user, pass), "issued credentials cannot log in");
    assert!(!pg.can_login(user, "not-the-password"));
    assert_eq!(creds["lease_duration"], 30);

    let lease = bao.api(
        "PUT",
        "sys/leases/lookup",
        Some(json!({ "lease_id": creds["lease_id"] })),
    )?;
    assert_eq!(lease["data"]["id"], creds["lease_id"]);
    assert!(
        lease["data"]["ttl"]
            .as_u64()
            .is_some_and(|t| t > 0 && t <= 30)
    );
    let valid_until = pg.psql(&format!(
        "SELECT rolvaliduntil IS NOT NULL FROM pg_roles WHERE rolname = '{user}'"
    ))?;
    assert_eq!(valid_until, "t");

    // Revocation drops the role.
    bao.api(
        "PUT",
        "sys/leases/revoke",
        Some(json!({ "lease_id": creds["lease_id"] })),
    )?;
    assert!(!pg.can_login(user, pass));
    Ok(())
}

#[test]
fn database_lease_short_ttl_renews_and_extends_valid_until() -> Result<()> {
    let pg = Postgres::start()?;
    let bao = OpenBao::start()?;
    bao.enable_database(
        &pg,
        "short",
        Duration::from_secs(4),
        Duration::from_secs(12),
    )?;
    let creds = bao.api("GET", "database/creds/short", None)?;
    assert_eq!(creds["lease_duration"], 4);
    assert_eq!(creds["renewable"], true);
    let user = creds["data"]["username"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let valid_until = |pg: &Postgres| -> Result<i64> {
        let out = pg.psql(&format!(
            "SELECT extract(epoch FROM rolvaliduntil)::bigint FROM pg_roles WHERE rolname = '{user}'"
        ))?;
        out.parse().map_err(|_| Error::Decode {
            what: "rolvaliduntil",
            detail: out.clone(),
        })
    };
    let before = valid_until(&pg)?;

    std::thread::sleep(Duration::from_millis(2100));
    let renewed = bao.api(
        "PUT",
        "sys/leases/renew",
        Some(json!({ "lease_id": creds["lease_id"], "increment": 4 })),
    )?;
    assert_eq!(renewed["lease_duration"], 4);
    let after = valid_until(&pg)?;
    assert!(
        after >= before + 2,
        "VALID UNTIL not extended: {before} -> {after}"
    );
    assert!(pg.can_login(
        &user,
        creds["data"]["password"].as_str().unwrap_or_default()
    ));
    Ok(())
}

#[test]
fn openbao_paused_does_not_answer_then_resumes_with_state() -> Result<()> {
    let bao = OpenBao::start()?;
    bao.write_kv1("p", json!({ "k": "v" }))?;
    bao.pause()?;
    let addr: std::net::SocketAddr =
        bao.addr()
            .trim_start_matches("http://")
            .parse()
            .map_err(|_| Error::Decode {
                what: "addr",
                detail: bao.addr().to_owned(),
            })?;
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| Error::Io {
        op: "connect",
        source: e,
    })?;
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .map_err(|e| Error::Io {
            op: "timeout",
            source: e,
        })?;
    use std::io::{Read, Write};
    let _ = stream.write_all(b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = [0u8; 16];
    assert!(stream.read(&mut buf).is_err(), "a paused server answered");
    bao.resume()?;
    assert_eq!(bao.api("GET", "kv1/p", None)?["data"]["k"], "v");
    Ok(())
}

#[test]
fn client_env_tls_variant_names_addr_and_cacert() -> Result<()> {
    let bao = OpenBao::start_tls()?;
    let env = bao.client_env();
    assert_eq!(env[0], ("VAULT_ADDR", bao.addr().to_owned()));
    assert_eq!(env.get(1).map(|e| e.0), Some("VAULT_CACERT"));
    // The CA file really verifies the server: a plain-trust client would fail.
    let jwt = bao.issuer().issue("fixtures-1", "default")?;
    assert!(bao.login_kubernetes(&jwt)?["client_token"].is_string());
    Ok(())
}

#[test]
fn namespace_created_has_its_own_kv_and_kubernetes_login() -> Result<()> {
    let bao = OpenBao::start()?;
    bao.create_namespace("team-a")?;
    bao.api_in(
        "team-a",
        "POST",
        "secret/data/app",
        Some(json!({ "data": { "k": "in-ns" } })),
    )?;
    // The root namespace has no such secret.
    assert!(matches!(
        bao.api("GET", "secret/data/app", None),
        Err(Error::Api { status: 404, .. })
    ));

    let jwt = bao.issuer().issue("demo", "app-sa")?;
    let login = bao.call(
        Some("team-a"),
        "",
        "POST",
        "auth/kubernetes/login",
        Some(json!({ "role": "default", "jwt": jwt })),
    )?;
    let token = login["auth"]["client_token"].as_str().unwrap_or_default();
    let read = bao.call(Some("team-a"), token, "GET", "secret/data/app", None)?;
    assert_eq!(read["data"]["data"]["k"], "in-ns");
    // Audit paths are namespace-relative; the namespace is in the raw entry.
    let in_ns =
        |e: &strongroom_testbed::AuditEntry| e.raw["request"]["namespace"]["path"] == "team-a/";
    let reads: Vec<_> = bao
        .audit_entries()?
        .into_iter()
        .filter(|e| e.is_request() && e.path == "secret/data/app" && e.operation == "read")
        .collect();
    assert_eq!(
        reads.len(),
        2,
        "one root read (404) and one namespaced read"
    );
    assert_eq!(
        reads.iter().filter(|e| in_ns(e)).count(),
        1,
        "{:?}",
        reads
            .iter()
            .map(|e| &e.raw["request"]["namespace"])
            .collect::<Vec<_>>()
    );
    Ok(())
}

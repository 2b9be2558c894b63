//! Daemon mode and the Vault token itself, against a real OpenBao: a short-lived login
//! token is renewed (`auth/token/renew-self`) until its max TTL, then the expiry policy
//! applies; under `restart` vault-env logs in again and the app gets the current secrets.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod daemon_support;
mod support;

use std::time::{Duration, Instant};

use daemon_support::{Daemon, login_accessors};
use nix::sys::signal::Signal;
use serde_json::json;
use strongroom_testbed::{BOUND_NAMESPACES, BOUND_SERVICE_ACCOUNTS, POLICY};
use support::{Bed, with};

/// A bed whose kubernetes role `short` issues renewable tokens with these TTLs, and a KV
/// secret the app logs as its `DB_USER` (the daemon app prints that variable on start).
fn short_token_bed(ttl: &str, max_ttl: &str, value: &str) -> (Bed, Vec<(String, String)>) {
    let bed = Bed::start();
    bed.bao
        .api(
            "POST",
            "auth/kubernetes/role/short",
            Some(json!({
                "bound_service_account_names": BOUND_SERVICE_ACCOUNTS,
                "bound_service_account_namespaces": BOUND_NAMESPACES,
                "token_policies": [POLICY],
                "token_ttl": ttl,
                "token_max_ttl": max_ttl,
            })),
        )
        .unwrap();
    bed.bao.write_kv2("app", json!({ "v": value })).unwrap();
    let env = with(
        &bed.env(),
        &[
            ("VAULT_ROLE", "short"),
            ("DB_USER", "vault:secret/data/app#v"),
            ("APP_EXIT_ON", "TERM=0"),
        ],
    );
    (bed, env)
}

#[test]
fn daemon_token_renewed_until_max_ttl_then_exit_policy() {
    let (bed, env) = short_token_bed("2s", "6s", "first");
    let env = with(
        &env,
        &[
            ("VAULT_ENV_EXPIRY_POLICY", "exit"),
            ("VAULT_ENV_GRACE_PERIOD", "1s"),
        ],
    );
    let mut daemon = Daemon::start(&env, &["wait"]);
    let status = daemon.wait_exit(Duration::from_secs(15));
    let lifetime = daemon.started.elapsed();
    let stderr = daemon.stderr_text();
    assert_eq!(status.code(), Some(1), "{stderr}");
    // The 2 s token lived on well past 2 s because it was renewed, up to its 6 s max.
    let renewals = bed
        .bao
        .audit_request_count("auth/token/renew-self")
        .unwrap();
    assert!(renewals >= 2, "{renewals} token renewals\n{stderr}");
    assert!(lifetime >= Duration::from_secs(4), "{lifetime:?}\n{stderr}");
    // At the max TTL OpenBao either grants what is left or refuses; on a loaded machine it
    // may also answer too late. Either way the token is what ran out.
    let policy_line = stderr
        .lines()
        .find(|l| l.contains("applying the expiry policy"))
        .unwrap_or_else(|| panic!("no expiry:\n{stderr}"));
    assert!(policy_line.contains("subject=token"), "{policy_line}");
    assert!(daemon.lines().contains(&"signal TERM".to_owned()));
    assert_eq!(
        bed.bao
            .audit_request_count("auth/kubernetes/login")
            .unwrap(),
        1
    );
}

#[test]
fn daemon_token_max_ttl_restart_policy_logs_in_again_with_current_secrets() {
    let (bed, env) = short_token_bed("2s", "4s", "first");
    let env = with(
        &env,
        &[
            ("VAULT_ENV_EXPIRY_POLICY", "restart"),
            ("VAULT_ENV_GRACE_PERIOD", "1s"),
            ("VAULT_ENV_REVOKE_ON_EXIT", "true"),
        ],
    );
    let mut daemon = Daemon::start(&env, &["wait"]);
    daemon.wait_for("the app to start", Duration::from_secs(10), |l| {
        l.iter().any(|l| l.starts_with("start "))
    });
    // The secret changes while the app runs; a restart must pick up the new value.
    bed.bao.write_kv2("app", json!({ "v": "second" })).unwrap();
    let started = Instant::now();
    daemon.wait_for("the restart", Duration::from_secs(15), |l| {
        l.iter().filter(|l| l.starts_with("start ")).count() >= 2
    });
    assert!(started.elapsed() < Duration::from_secs(10));
    let starts = daemon.starts();
    assert_eq!(starts[0].2, "first");
    assert_eq!(starts[1].2, "second");
    assert_ne!(starts[0].0, starts[1].0);
    assert!(daemon.running());
    assert_eq!(
        bed.bao
            .audit_request_count("auth/kubernetes/login")
            .unwrap(),
        2
    );
    // The first login's token is revoked once its app is gone; the second stays.
    let deadline = Instant::now() + Duration::from_secs(5);
    while login_accessors(&bed.bao).len() > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        login_accessors(&bed.bao).len(),
        1,
        "{}",
        daemon.stderr_text()
    );
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(10)).success());
    assert!(
        login_accessors(&bed.bao).is_empty(),
        "{}",
        daemon.stderr_text()
    );
}

#[test]
fn daemon_given_token_is_renewed_and_watched() {
    let (bed, env) = short_token_bed("1h", "1h", "given");
    let created = bed
        .bao
        .api(
            "POST",
            "auth/token/create",
            Some(json!({
                "policies": [POLICY],
                "ttl": "2s",
                "explicit_max_ttl": "5s",
                "renewable": true,
            })),
        )
        .unwrap();
    let token = created["auth"]["client_token"].as_str().unwrap().to_owned();
    let env = with(
        &env,
        &[
            ("VAULT_TOKEN", token.as_str()),
            ("VAULT_ENV_EXPIRY_POLICY", "exit"),
            ("VAULT_ENV_GRACE_PERIOD", "1s"),
        ],
    );
    let mut daemon = Daemon::start(&env, &["wait"]);
    let status = daemon.wait_exit(Duration::from_secs(15));
    let lifetime = daemon.started.elapsed();
    let stderr = daemon.stderr_text();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(daemon.starts()[0].2, "given");
    // No login: the given token was looked up, renewed past its 2 s, and its end applied
    // the policy.
    assert_eq!(
        bed.bao
            .audit_request_count("auth/kubernetes/login")
            .unwrap(),
        0
    );
    assert_eq!(
        bed.bao
            .audit_request_count("auth/token/lookup-self")
            .unwrap(),
        1
    );
    let renewals = bed
        .bao
        .audit_request_count("auth/token/renew-self")
        .unwrap();
    assert!(renewals >= 1, "{renewals} renewals\n{stderr}");
    assert!(lifetime >= Duration::from_secs(3), "{lifetime:?}\n{stderr}");
    assert!(!stderr.contains(&token), "token in the log");
}

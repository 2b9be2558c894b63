//! vault-env as a process: logins (kubernetes through the TokenReview server, jwt), the
//! app's environment and descriptors, `vault:login`, token revocation, and every failure
//! giving one line that names variable and reference without leaking a value.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use strongroom_testbed::TokenSpec;
use support::{Bed, Run, TESTAPP, VAULT_ENV, assert_absent, canary, run, with};

const TOKEN_REVIEW: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

#[test]
fn login_kubernetes_goes_through_token_review() {
    let bed = Bed::start();
    bed.bao.write_kv2("k8s", json!({ "v": "via-k8s" })).unwrap();
    let reviews_before = bed.bao.kube_api().count_requests("POST", TOKEN_REVIEW);
    let env = with(&bed.env(), &[("V", "vault:secret/data/k8s#v")]);
    let report = run(&env, &[]).report();
    assert_eq!(report.get("V"), Some("via-k8s"));
    assert_eq!(
        bed.bao
            .audit_request_count("auth/kubernetes/login")
            .unwrap(),
        1
    );
    assert!(bed.bao.kube_api().count_requests("POST", TOKEN_REVIEW) > reviews_before);
}

#[test]
fn login_jwt_method_logs_in() {
    let bed = Bed::start();
    bed.bao.write_kv2("jwt", json!({ "v": "via-jwt" })).unwrap();
    let env = with(
        &bed.env(),
        &[
            ("VAULT_AUTH_METHOD", "jwt"),
            ("VAULT_PATH", "jwt"),
            ("V", "vault:secret/data/jwt#v"),
        ],
    );
    let report = run(&env, &[]).report();
    assert_eq!(report.get("V"), Some("via-jwt"));
    assert_eq!(bed.bao.audit_request_count("auth/jwt/login").unwrap(), 1);
    assert_eq!(
        bed.bao
            .audit_request_count("auth/kubernetes/login")
            .unwrap(),
        0
    );
}

#[test]
fn login_wrong_role_fails_with_clear_message() {
    let bed = Bed::start();
    let env = with(
        &bed.env(),
        &[
            ("VAULT_ROLE", "no-such-role"),
            ("V", "vault:secret/data/x#v"),
        ],
    );
    let line = run(&env, &[]).error_line();
    assert!(line.contains("auth/kubernetes/login"), "{line}");
    assert!(line.contains("\"no-such-role\""), "{line}");
    assert!(line.contains("400") || line.contains("403"), "{line}");
}

#[test]
fn login_expired_jwt_fails_with_clear_message() {
    let bed = Bed::start();
    let expired = bed
        .bao
        .issuer()
        .issue_with(&TokenSpec::new("demo", "app-sa").expired())
        .unwrap();
    std::fs::write(&bed.jwt_file, &expired).unwrap();
    for (method, path) in [("kubernetes", "kubernetes"), ("jwt", "jwt")] {
        let env = with(
            &bed.env(),
            &[
                ("VAULT_AUTH_METHOD", method),
                ("VAULT_PATH", path),
                ("V", "vault:secret/data/x#v"),
            ],
        );
        let run = run(&env, &[]);
        let line = run.error_line();
        assert!(
            line.contains(&format!("log in with {method} auth")),
            "{line}"
        );
        assert!(line.contains("Vault answered"), "{line}");
        assert_absent("stderr", &run.stderr(), &[expired.as_str()]);
    }
}

#[test]
fn app_env_has_secrets_keeps_order_and_strips_vault_config() {
    let bed = Bed::start();
    let secret = canary("app");
    bed.bao.write_kv2("app", json!({ "pw": secret })).unwrap();
    let env = with(
        &bed.env(),
        &[
            ("FIRST", "1"),
            ("DB_PASSWORD", "vault:secret/data/app#pw"),
            ("VAULT_ENV_PASSTHROUGH", "VAULT_ROLE"),
            ("VAULT_IGNORE_MISSING_SECRETS", "false"),
            ("VAULT_LOG_LEVEL", "debug"),
            ("MIDDLE", "2"),
            ("VAULT_CUSTOM_THING", "kept"),
            ("LAST", "3"),
        ],
    );
    // `env -i` hands vault-env exactly this order (std's Command would sort it); the shell
    // leaves an inherited descriptor (fd 7, no close-on-exec) that must not reach the app.
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg("exec 7</etc/hostname; exec /usr/bin/env -i \"$@\"")
        .arg("sh");
    command.args(env.iter().map(|(k, v)| format!("{k}={v}")));
    let output = command
        .arg(VAULT_ENV)
        .arg(TESTAPP)
        .arg("--flag")
        .arg("two words")
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let run = Run { output };
    let report = run.report();
    assert_eq!(report.args[1..], ["--flag", "two words"]);
    assert_eq!(report.get("DB_PASSWORD"), Some(secret.as_str()));
    // Exactly the given variables minus the stripped ones, in the given order.
    let kept = [
        "VAULT_ROLE",
        "VAULT_JWT_FILE",
        "FIRST",
        "DB_PASSWORD",
        "MIDDLE",
        "VAULT_CUSTOM_THING",
        "LAST",
    ];
    assert_eq!(report.names(), kept);
    // Bank-Vaults' strip list, except what VAULT_ENV_PASSTHROUGH names.
    for stripped in [
        "VAULT_ADDR",
        "VAULT_AUTH_METHOD",
        "VAULT_PATH",
        "VAULT_CLIENT_TIMEOUT",
        "VAULT_ENV_PASSTHROUGH",
        "VAULT_IGNORE_MISSING_SECRETS",
        "VAULT_LOG_LEVEL",
        "VAULT_TOKEN",
    ] {
        assert!(report.get(stripped).is_none(), "{stripped} reached the app");
    }
    assert_eq!(report.get("VAULT_ROLE"), Some("default"));
    // No descriptor beyond 0-2 (the inherited fd 7, sockets, the JWT file…).
    let fds: Vec<u32> = report.fds.iter().map(|(fd, _)| *fd).collect();
    assert_eq!(fds, [0, 1, 2], "open descriptors: {:?}", report.fds);
    // Debug logging names references, never the value.
    assert_absent("stderr", &run.stderr(), &[secret.as_str()]);
}

#[test]
fn app_env_command_is_found_in_path_without_shell() {
    let bed = Bed::start();
    let dir = std::path::Path::new(TESTAPP).parent().unwrap();
    let env = with(
        &bed.env(),
        &[("PATH", &format!("/nonexistent:{}", dir.display()))],
    );
    let report = support::run_program(VAULT_ENV, &env, "vault-env-testapp", &["x"]).report();
    assert_eq!(report.args, ["vault-env-testapp", "x"]);
    assert_eq!(
        bed.bao
            .audit_request_count("auth/kubernetes/login")
            .unwrap(),
        0
    );
}

#[test]
fn vault_login_hands_the_token_and_client_variables_to_the_app() {
    let bed = Bed::start();
    bed.bao.write_kv2("l", json!({ "v": "x" })).unwrap();
    let env = with(
        &bed.env(),
        &[
            ("VAULT_TOKEN", "vault:login"),
            ("V", "vault:secret/data/l#v"),
        ],
    );
    let report = run(&env, &[]).report();
    let token = report.get("VAULT_TOKEN").unwrap();
    assert_ne!(token, "vault:login");
    // The token is the live login token of role default.
    let me = bed
        .bao
        .api_with_token(token, "GET", "auth/token/lookup-self", None)
        .unwrap();
    assert!(
        me["data"]["policies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == strongroom_testbed::POLICY)
    );
    // Client variables stay (login: true in Bank-Vaults' list), the others go.
    assert_eq!(report.get("VAULT_ADDR"), Some(bed.bao.addr()));
    assert_eq!(report.get("VAULT_CLIENT_TIMEOUT"), Some("5s"));
    assert!(report.get("VAULT_ROLE").is_none());
    assert!(report.get("VAULT_PATH").is_none());
}

#[test]
fn app_env_has_no_token_unless_asked() {
    let bed = Bed::start();
    bed.bao.write_kv2("n", json!({ "v": "x" })).unwrap();
    let env = with(
        &bed.env(),
        &[
            ("VAULT_TOKEN", bed.bao.root_token()),
            ("V", "vault:secret/data/n#v"),
        ],
    );
    let report = run(&env, &[]).report();
    assert_eq!(report.get("V"), Some("x"));
    assert!(report.get("VAULT_TOKEN").is_none());
    assert!(report.env.iter().all(|(_, v)| v != bed.bao.root_token()));
}

#[test]
fn revoke_token_true_revokes_before_exec() {
    let bed = Bed::start();
    bed.bao.write_kv2("r", json!({ "v": "x" })).unwrap();
    let env = with(
        &bed.env(),
        &[
            ("VAULT_TOKEN", "vault:login"),
            ("VAULT_REVOKE_TOKEN", "true"),
            ("V", "vault:secret/data/r#v"),
        ],
    );
    let report = run(&env, &[]).report();
    let token = report.get("VAULT_TOKEN").unwrap();
    let revokes: Vec<_> = bed
        .bao
        .audit_entries()
        .unwrap()
        .into_iter()
        // The dev server revokes its own initial root token at start; count ours only.
        .filter(|e| e.is_request() && e.path == "auth/token/revoke-self")
        .filter(|e| e.display_name.as_deref() != Some("root"))
        .map(|e| e.raw)
        .collect();
    assert_eq!(revokes.len(), 1, "{revokes:#?}");
    let lookup = bed
        .bao
        .api_with_token(token, "GET", "auth/token/lookup-self", None);
    assert!(lookup.is_err(), "the handed token still works");
}

#[test]
fn token_file_is_used_without_login() {
    let bed = Bed::start();
    bed.bao
        .write_kv2("tf", json!({ "v": "from-file" }))
        .unwrap();
    let file = bed.dir.path().join("vault-token");
    std::fs::write(&file, format!("{}\n", bed.bao.root_token())).unwrap();
    let env = with(
        &bed.env(),
        &[
            ("VAULT_TOKEN_FILE", file.to_str().unwrap()),
            ("V", "vault:secret/data/tf#v"),
        ],
    );
    let report = run(&env, &[]).report();
    assert_eq!(report.get("V"), Some("from-file"));
    assert_eq!(
        bed.bao
            .audit_request_count("auth/kubernetes/login")
            .unwrap(),
        0
    );
}

/// The shared bad-input check: one error line naming `var` and `reference`, no secret in
/// stderr or in the audit log, and the app never started.
fn assert_clean_failure(bed: &Bed, run: &Run, var: &str, reference: &str, secrets: &[&str]) {
    let line = run.error_line();
    assert!(line.contains(&format!("variable {var}")), "{line}");
    assert!(line.contains(reference), "{line}");
    assert_absent("stderr", &run.stderr(), secrets);
    assert_absent("audit log", &bed.audit_text(), secrets);
    assert!(!bed.marker().exists(), "the app was started");
}

#[test]
fn bad_input_malformed_reference_fails_before_login() {
    let bed = Bed::start();
    let secret = canary("malformed");
    bed.bao.write_kv2("m", json!({ "k": secret })).unwrap();
    let marker = bed.marker();
    let env = with(
        &bed.env(),
        &[
            ("TESTAPP_MARKER", marker.to_str().unwrap()),
            ("GOOD", "vault:secret/data/m#k"),
            ("BAD", "vault:secret/data/m"),
        ],
    );
    let run = run(&env, &[]);
    assert_clean_failure(&bed, &run, "BAD", "vault:secret/data/m", &[&secret]);
    assert_eq!(
        bed.bao
            .audit_request_count("auth/kubernetes/login")
            .unwrap(),
        0
    );
}

#[test]
fn bad_input_permission_denied_names_variable_and_reference() {
    let bed = Bed::start();
    let secret = canary("denied");
    bed.bao.write_kv2("ok", json!({ "k": secret })).unwrap();
    let marker = bed.marker();
    let env = with(
        &bed.env(),
        &[
            ("TESTAPP_MARKER", marker.to_str().unwrap()),
            ("OK", "vault:secret/data/ok#k"),
            ("DENIED", "vault:private/db#password"),
        ],
    );
    let run = run(&env, &[]);
    assert_clean_failure(
        &bed,
        &run,
        "DENIED",
        "vault:private/db#password",
        &[&secret],
    );
    assert!(run.error_line().contains("403"), "{}", run.error_line());
    // A 4xx answer is final: exactly one request, no retry.
    assert_eq!(bed.bao.audit_request_count("private/db").unwrap(), 1);
}

#[test]
fn bad_input_missing_key_names_variable_and_reference() {
    let bed = Bed::start();
    let secret = canary("missing");
    bed.bao.write_kv2("mk", json!({ "k": secret })).unwrap();
    let marker = bed.marker();
    let env = with(
        &bed.env(),
        &[
            ("TESTAPP_MARKER", marker.to_str().unwrap()),
            ("MK", "vault:secret/data/mk#nokey"),
        ],
    );
    let run = run(&env, &[]);
    assert_clean_failure(&bed, &run, "MK", "vault:secret/data/mk#nokey", &[&secret]);
    assert!(run.error_line().contains("\"nokey\" not found"));
}

#[test]
fn bad_input_vault_down_retries_then_fails_without_starting_app() {
    let bed = Bed::start();
    let port = strongroom_testbed::free_port().unwrap();
    let marker = bed.marker();
    let env = with(
        &bed.env(),
        &[
            ("VAULT_ADDR", &format!("http://127.0.0.1:{port}")),
            ("VAULT_TOKEN", "s.not-a-real-token"),
            ("VAULT_CLIENT_TIMEOUT", "2s"),
            ("TESTAPP_MARKER", marker.to_str().unwrap()),
            ("DOWN", "vault:secret/data/down#k"),
        ],
    );
    let started = Instant::now();
    let run = run(&env, &[]);
    let elapsed = started.elapsed();
    assert_clean_failure(
        &bed,
        &run,
        "DOWN",
        "vault:secret/data/down#k",
        &["s.not-a-real-token"],
    );
    let line = run.error_line();
    let attempts: u32 = line
        .split("after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no attempt count in {line}"));
    assert!(attempts >= 3, "{line}");
    // Retries stay within the client timeout budget (plus process start).
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(6), "{elapsed:?}");
}

/// Forwards TCP connections from `listener` to `upstream` for at most `life`.
fn forward(listener: std::net::TcpListener, upstream: String, life: Duration) {
    use std::io::copy;
    use std::net::{Shutdown, TcpStream};
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + life;
        while Instant::now() < deadline {
            let Ok((client, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            client.set_nonblocking(false).unwrap();
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut c_read, mut c_write) = (client.try_clone().unwrap(), client);
            let (mut s_read, mut s_write) = (server.try_clone().unwrap(), server);
            std::thread::spawn(move || {
                let _ = copy(&mut c_read, &mut s_write);
                let _ = s_write.shutdown(Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = copy(&mut s_read, &mut c_write);
                let _ = c_write.shutdown(Shutdown::Write);
            });
        }
    });
}

#[test]
fn vault_reachable_late_is_retried_until_it_answers() {
    // Like a mesh proxy that starts after the app container: nothing listens at first.
    let bed = Bed::start();
    bed.bao
        .write_kv2("late", json!({ "v": "worth-the-wait" }))
        .unwrap();
    let port = strongroom_testbed::free_port().unwrap();
    let upstream = bed.bao.addr().trim_start_matches("http://").to_owned();
    let env = with(
        &bed.env(),
        &[
            ("VAULT_ADDR", &format!("http://127.0.0.1:{port}")),
            ("VAULT_CLIENT_TIMEOUT", "8s"),
            ("V", "vault:secret/data/late#v"),
        ],
    );
    let child = Command::new(VAULT_ENV)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("VAULT_LOG_LEVEL", "debug")
        .arg(TESTAPP)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    forward(listener, upstream, Duration::from_secs(20));
    let run = Run {
        output: child.wait_with_output().unwrap(),
    };
    assert_eq!(run.report().get("V"), Some("worth-the-wait"));
    assert!(
        run.stderr().contains("retrying Vault request"),
        "{}",
        run.stderr()
    );
}

#[test]
fn sealed_vault_5xx_is_retried_then_fails() {
    let bed = Bed::start();
    bed.bao.api("PUT", "sys/seal", None).unwrap();
    let env = with(
        &bed.env(),
        &[
            ("VAULT_TOKEN", bed.bao.root_token()),
            ("VAULT_CLIENT_TIMEOUT", "1500ms"),
            ("SEALED", "vault:secret/data/s#k"),
        ],
    );
    let run = run(&env, &[]);
    let line = run.error_line();
    assert!(line.contains("variable SEALED"), "{line}");
    assert!(line.contains("503"), "{line}");
    let attempts: u32 = line
        .split("(after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no attempt count in {line}"));
    assert!(attempts >= 2, "{line}");
    assert_absent("stderr", &run.stderr(), &[bed.bao.root_token()]);
}

#[test]
fn json_log_writes_json_lines_to_stderr() {
    let bed = Bed::start();
    bed.bao
        .write_kv2("j", json!({ "v": "json-logged" }))
        .unwrap();
    let env = with(
        &bed.env(),
        &[
            ("VAULT_JSON_LOG", "true"),
            ("VAULT_LOG_LEVEL", "debug"),
            ("V", "vault:secret/data/j#v"),
        ],
    );
    let run = run(&env, &[]);
    assert_eq!(run.report().get("V"), Some("json-logged"));
    let stderr = run.stderr();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() >= 2, "{stderr}");
    for line in lines {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(event["level"].is_string(), "{line}");
    }
    assert_absent("stderr", &stderr, &["json-logged"]);
}

#[test]
fn bad_input_login_to_unreachable_vault_fails_with_one_line() {
    let bed = Bed::start();
    let port = strongroom_testbed::free_port().unwrap();
    let env = with(
        &bed.env(),
        &[
            ("VAULT_ADDR", &format!("http://127.0.0.1:{port}")),
            ("VAULT_CLIENT_TIMEOUT", "1s"),
            ("V", "vault:secret/data/x#v"),
        ],
    );
    let line = run(&env, &[]).error_line();
    assert!(line.contains("log in with kubernetes auth"), "{line}");
    assert!(line.contains("no answer from Vault"), "{line}");
}

#[test]
fn bad_config_is_one_line_before_anything_runs() {
    let bed = Bed::start();
    for (name, value, expected) in [
        (
            "VAULT_SKIP_VERIFY",
            "yes",
            "VAULT_SKIP_VERIFY=\"yes\" is invalid",
        ),
        (
            "VAULT_AUTH_METHOD",
            "aws-ec2",
            "VAULT_AUTH_METHOD=\"aws-ec2\" is not supported",
        ),
        (
            "VAULT_TRANSIT_BATCH_SIZE",
            "0",
            "VAULT_TRANSIT_BATCH_SIZE=\"0\" is invalid",
        ),
    ] {
        let env = with(&bed.env(), &[(name, value), ("V", "vault:secret/data/x#v")]);
        let line = run(&env, &[]).error_line();
        assert!(line.contains(expected), "{line}");
    }
    let env = with(&bed.env(), &[]);
    let run = support::run_program(VAULT_ENV, &env, "no-such-command-xyz", &[]);
    assert!(run.error_line().contains("not found in PATH"));
    assert_eq!(
        bed.bao
            .audit_request_count("auth/kubernetes/login")
            .unwrap(),
        0
    );
}

#[test]
fn tls_with_cacert_works_and_without_it_fails() {
    let bed = Bed::start_tls();
    bed.bao
        .write_kv2("tls", json!({ "v": "over-tls" }))
        .unwrap();
    let ca = bed.bao.ca_cert().unwrap().to_str().unwrap().to_owned();
    let env = with(
        &bed.env(),
        &[
            ("VAULT_CACERT", ca.as_str()),
            ("V", "vault:secret/data/tls#v"),
        ],
    );
    assert_eq!(run(&env, &[]).report().get("V"), Some("over-tls"));

    let env = with(
        &bed.env(),
        &[
            ("VAULT_SKIP_VERIFY", "true"),
            ("V", "vault:secret/data/tls#v"),
        ],
    );
    assert_eq!(run(&env, &[]).report().get("V"), Some("over-tls"));

    // Unknown CA: TLS fails, and certificate errors are not retried forever.
    let env = with(
        &bed.env(),
        &[
            ("VAULT_CLIENT_TIMEOUT", "1s"),
            ("V", "vault:secret/data/tls#v"),
        ],
    );
    let line = run(&env, &[]).error_line();
    assert!(line.contains("auth/kubernetes/login"), "{line}");
}

#[test]
fn namespace_header_logs_in_and_reads_inside_the_namespace() {
    let bed = Bed::start();
    bed.bao.create_namespace("team-a").unwrap();
    bed.bao
        .api_in(
            "team-a",
            "POST",
            "secret/data/ns",
            Some(json!({ "data": { "v": "in-namespace" } })),
        )
        .unwrap();
    let env = with(
        &bed.env(),
        &[
            ("VAULT_NAMESPACE", "team-a"),
            ("V", "vault:secret/data/ns#v"),
        ],
    );
    let report = run(&env, &[]).report();
    assert_eq!(report.get("V"), Some("in-namespace"));
    assert!(report.get("VAULT_NAMESPACE").is_none());
    // Without the namespace the same reference names nothing.
    let env = with(&bed.env(), &[("V", "vault:secret/data/ns#v")]);
    let line = run(&env, &[]).error_line();
    assert!(line.contains("no secret at this path"), "{line}");
}

#[test]
fn version_flag_prints_version() {
    let output = Command::new(VAULT_ENV).arg("--version").output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("vault-env {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn no_command_is_an_error() {
    let output = Command::new(VAULT_ENV).env_clear().output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no command given"));
}

#[test]
fn copy_self_with_guard_mode_writes_mode_file_next_to_binary() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(VAULT_ENV)
        .arg("copy-self")
        .arg(dir.path())
        .env_clear()
        .env("STRONGROOM_GUARD_MODE", "audit")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("guard-mode")).unwrap(),
        "audit\n"
    );
    assert!(dir.path().join("vault-env").is_file());
}

#[test]
fn copy_self_with_unknown_guard_mode_fails_and_installs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(VAULT_ENV)
        .arg("copy-self")
        .arg(dir.path())
        .env_clear()
        .env("STRONGROOM_GUARD_MODE", "off")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("STRONGROOM_GUARD_MODE must be enforce or audit, not \"off\""),
        "{stderr}"
    );
    // Without its mode the pod would run less strictly than asked: no binary either.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

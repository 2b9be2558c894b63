//! Daemon mode keeping dynamic PostgreSQL credentials alive, against real OpenBao and real
//! PostgreSQL: renewals while the app logs in with the injected username and password,
//! the three expiry policies at max TTL, a Vault that is briefly unreachable, revocation on
//! exit, and the resident memory of a vault-env renewing ten leases.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod daemon_support;
mod support;

use std::time::{Duration, Instant};

use daemon_support::{Daemon, login_accessors, status_kib};
use nix::sys::signal::Signal;
use serde_json::Value;
use strongroom_testbed::Postgres;
use support::{Bed, with};

/// OpenBao + PostgreSQL with database role `app`.
struct DbBed {
    bed: Bed,
    pg: Postgres,
}

impl DbBed {
    fn start(ttl: u64, max_ttl: u64) -> DbBed {
        let pg = Postgres::start().unwrap();
        let bed = Bed::start();
        bed.bao
            .enable_database(
                &pg,
                "app",
                Duration::from_secs(ttl),
                Duration::from_secs(max_ttl),
            )
            .unwrap();
        DbBed { bed, pg }
    }

    /// Login settings plus the app's database variables, both from one read.
    fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let port = self.pg.port().to_string();
        let env = with(
            &self.bed.env(),
            &[
                ("DB_USER", "vault:database/creds/app#username"),
                ("DB_PASS", "vault:database/creds/app#password"),
                ("DB_PORT", &port),
                ("DB_NAME", self.pg.database()),
            ],
        );
        with(&env, extra)
    }

    /// The ids of the live leases of `database/creds/<role>/`.
    fn leases(&self, role: &str) -> Vec<String> {
        let prefix = format!("database/creds/{role}/");
        match self
            .bed
            .bao
            .api("LIST", &format!("sys/leases/lookup/{prefix}"), None)
        {
            Ok(answer) => answer["data"]["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| format!("{prefix}{}", k.as_str().unwrap()))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Waits for the one lease of role `app` and returns its id.
    fn wait_lease(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let leases = self.leases("app");
            if let Some(first) = leases.first() {
                assert_eq!(leases.len(), 1, "{leases:?}");
                return first.clone();
            }
            assert!(Instant::now() < deadline, "no lease appeared");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn lease_ttl(&self, id: &str) -> Option<Value> {
        self.bed.bao.lease_lookup(id).unwrap()
    }
}

/// Waits for a successful database login logged after the first `after` lines.
fn wait_new_login(daemon: &Daemon, after: usize) {
    daemon.wait_for("a later database login", Duration::from_secs(10), |lines| {
        lines.iter().skip(after).any(|l| l.starts_with("pg ok "))
    });
}

/// `pg ok|fail <user>` lines of the app log.
fn pg_results(lines: &[String]) -> Vec<(bool, String)> {
    lines
        .iter()
        .filter_map(|l| {
            let rest = l.strip_prefix("pg ")?;
            let (result, user) = rest.split_once(' ')?;
            Some((result == "ok", user.to_owned()))
        })
        .collect()
}

#[test]
fn daemon_renews_lease_while_app_logs_in_to_postgres() {
    let db = DbBed::start(3, 120);
    let env = db.env(&[("APP_EXIT_ON", "TERM=0")]);
    let mut daemon = Daemon::start(&env, &["pg"]);
    let lease = db.wait_lease();
    let first_seen = Instant::now();
    // Poll the lease for 8 s (more than twice its 3 s TTL): its TTL must go back up at
    // every renewal.
    let mut ttls = Vec::new();
    while first_seen.elapsed() < Duration::from_secs(8) {
        let info = db.lease_ttl(&lease).expect("lease vanished");
        ttls.push(info["ttl"].as_i64().unwrap());
        std::thread::sleep(Duration::from_millis(200));
    }
    let rises = ttls.windows(2).filter(|w| w[1] > w[0]).count();
    assert!(rises >= 3, "lease TTL did not grow at renewals: {ttls:?}");
    let info = db.lease_ttl(&lease).unwrap();
    assert!(!info["last_renewal"].is_null(), "{info}");

    let lines = daemon.lines();
    let starts = daemon.starts();
    assert_eq!(starts.len(), 1, "the app was restarted: {lines:?}");
    let user = &starts[0].2;
    assert!(lease.contains("database/creds/app/"));
    // Logins keep working well past the first 3 s TTL (VALID UNTIL moved with renewals).
    wait_new_login(&daemon, lines.len());
    let lines = daemon.lines();
    let results = pg_results(&lines);
    assert!(
        results.iter().all(|(ok, u)| *ok && u == user),
        "{lines:?}\n{}",
        daemon.stderr_text()
    );
    // Username and password came from the one lease: a single credential read.
    assert_eq!(db.leases("app").len(), 1);
    assert_eq!(db.bed.reads("database/creds/app"), 1);
    let role = db
        .pg
        .psql(&format!(
            "SELECT count(*) FROM pg_roles WHERE rolname = '{user}'"
        ))
        .unwrap();
    assert_eq!(role, "1");

    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    let stderr = daemon.stderr_text();
    assert!(stderr.contains("renewed"), "{stderr}");
}

#[test]
fn daemon_vault_briefly_down_renewal_retries_without_touching_app() {
    let db = DbBed::start(6, 120);
    let env = db.env(&[("APP_EXIT_ON", "TERM=0"), ("VAULT_CLIENT_TIMEOUT", "1s")]);
    let mut daemon = Daemon::start(&env, &["pg"]);
    let lease = db.wait_lease();
    let granted = Instant::now();
    // The first renewal is due 3.6 to 4 s after the grant; Vault is frozen from 2.8 s to
    // 5.3 s, the lease ends at 6 s.
    std::thread::sleep(Duration::from_millis(2800));
    db.bed.bao.pause().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    db.bed.bao.resume().unwrap();
    // Past the original end of the lease.
    std::thread::sleep(Duration::from_millis(7500).saturating_sub(granted.elapsed()));
    let info = db
        .lease_ttl(&lease)
        .expect("lease expired while Vault was down");
    assert!(!info["last_renewal"].is_null(), "{info}");
    let stderr = daemon.stderr_text();
    assert!(
        stderr.contains("retrying the renewal"),
        "Vault was never found unreachable:\n{stderr}"
    );
    assert!(daemon.running());
    let lines = daemon.lines();
    assert_eq!(daemon.starts().len(), 1, "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.starts_with("signal ")),
        "the app was signalled: {lines:?}"
    );
    // The credentials still work past the lease's original end.
    wait_new_login(&daemon, lines.len());
    let lines = daemon.lines();
    let results = pg_results(&lines);
    assert!(results.iter().all(|(ok, _)| *ok), "{lines:?}");
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn daemon_max_ttl_restart_policy_restarts_app_with_new_credentials() {
    let db = DbBed::start(2, 5);
    let env = db.env(&[
        ("APP_EXIT_ON", "TERM=0"),
        ("VAULT_ENV_EXPIRY_POLICY", "restart"),
        ("VAULT_ENV_GRACE_PERIOD", "1s"),
    ]);
    let mut daemon = Daemon::start(&env, &["pg"]);
    let lines = daemon.wait_for(
        "a restarted app logging in",
        Duration::from_secs(20),
        |lines| {
            let starts: Vec<&String> = lines.iter().filter(|l| l.starts_with("start ")).collect();
            let Some(second) = starts.get(1) else {
                return false;
            };
            let user = second.rsplit(' ').next().unwrap_or_default();
            lines.iter().any(|l| *l == format!("pg ok {user}"))
        },
    );
    assert!(daemon.running(), "vault-env must stay up across a restart");
    let starts = daemon.starts();
    assert_eq!(starts.len(), 2, "{lines:?}");
    let (first, second) = (&starts[0], &starts[1]);
    assert_ne!(first.0, second.0, "same app process");
    assert_ne!(first.2, second.2, "the restarted app got the same username");
    // The first app was stopped with SIGTERM before the second started.
    let term = lines.iter().position(|l| l == "signal TERM").unwrap();
    let second_start = lines
        .iter()
        .position(|l| l.starts_with("start ") && l.ends_with(&second.2))
        .unwrap();
    assert!(term < second_start, "{lines:?}");
    // Both credentials worked while their app ran; the new one was read with a new login.
    let results = pg_results(&lines);
    assert!(
        results.iter().any(|(ok, u)| *ok && *u == first.2),
        "{lines:?}"
    );
    assert!(
        results.iter().all(|(ok, _)| *ok),
        "{lines:?}\n{}",
        daemon.stderr_text()
    );
    assert_eq!(db.bed.reads("database/creds/app"), 2);
    assert_eq!(
        db.bed
            .bao
            .audit_request_count("auth/kubernetes/login")
            .unwrap(),
        2
    );

    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn daemon_max_ttl_signal_policy_terms_then_kills_after_grace() {
    let db = DbBed::start(2, 4);
    // Default policy (signal); the app ignores SIGTERM.
    let env = db.env(&[("VAULT_ENV_GRACE_PERIOD", "1500ms")]);
    let mut daemon = Daemon::start(&env, &["pg"]);
    db.wait_lease();
    daemon.wait_for("SIGTERM at max TTL", Duration::from_secs(15), |l| {
        l.contains(&"signal TERM".to_owned())
    });
    let term_seen = Instant::now();
    let status = daemon.wait_exit(Duration::from_secs(10));
    let waited = term_seen.elapsed();
    // Killed by SIGKILL after the grace period (less the time this test took to notice
    // the SIGTERM on a loaded machine).
    assert_eq!(status.code(), Some(137), "{}", daemon.stderr_text());
    assert!(waited >= Duration::from_millis(1000), "{waited:?}");
    assert!(waited < Duration::from_secs(4), "{waited:?}");
    assert_eq!(daemon.starts().len(), 1);
    let stderr = daemon.stderr_text();
    assert!(stderr.contains("max TTL reached"), "{stderr}");
    assert!(stderr.contains("sending SIGKILL"), "{stderr}");
}

#[test]
fn daemon_max_ttl_exit_policy_exits_nonzero() {
    let db = DbBed::start(2, 4);
    let env = db.env(&[
        ("APP_EXIT_ON", "TERM=0"),
        ("VAULT_ENV_EXPIRY_POLICY", "exit"),
        ("VAULT_ENV_GRACE_PERIOD", "3s"),
    ]);
    let mut daemon = Daemon::start(&env, &["pg"]);
    let status = daemon.wait_exit(Duration::from_secs(15));
    // The app ended cleanly on SIGTERM, yet vault-env reports the expiry.
    assert_eq!(status.code(), Some(1), "{}", daemon.stderr_text());
    let lines = daemon.lines();
    assert!(lines.contains(&"signal TERM".to_owned()), "{lines:?}");
    assert_eq!(daemon.starts().len(), 1);
    assert!(daemon.started.elapsed() < Duration::from_secs(8));
}

#[test]
fn daemon_revoke_on_exit_removes_lease_and_token() {
    let db = DbBed::start(30, 120);
    let env = db.env(&[
        ("APP_EXIT_ON", "TERM=0"),
        ("VAULT_ENV_REVOKE_ON_EXIT", "true"),
    ]);
    let mut daemon = Daemon::start(&env, &["pg"]);
    daemon.wait_for("a database login", Duration::from_secs(15), |l| {
        l.iter().any(|l| l.starts_with("pg ok "))
    });
    let lease = db.wait_lease();
    assert!(db.lease_ttl(&lease).is_some());
    assert_eq!(login_accessors(&db.bed.bao).len(), 1, "vault-env's token");
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(10)).success());
    assert!(db.lease_ttl(&lease).is_none(), "lease survived");
    assert!(db.leases("app").is_empty());
    assert!(login_accessors(&db.bed.bao).is_empty(), "token survived");
    let user = daemon.starts()[0].2.clone();
    let role = db
        .pg
        .psql(&format!(
            "SELECT count(*) FROM pg_roles WHERE rolname = '{user}'"
        ))
        .unwrap();
    assert_eq!(role, "0", "database role not dropped");
}

#[test]
fn daemon_rss_renewing_ten_leases_stays_small_and_flat() {
    let db = DbBed::start(3, 600);
    let mut extra = Vec::new();
    for i in 0..10 {
        db.bed
            .bao
            .api(
                "POST",
                &format!("database/roles/app{i}"),
                Some(db.bed.bao.api("GET", "database/roles/app", None).unwrap()["data"].clone()),
            )
            .unwrap();
        extra.push((
            format!("DB{i}"),
            format!("vault:database/creds/app{i}#username"),
        ));
    }
    let mut env = db.bed.env();
    env.extend(extra);
    env.push(("APP_EXIT_ON".into(), "TERM=0".into()));
    let mut daemon = Daemon::start(&env, &["wait"]);
    daemon.wait_for("the app to start", Duration::from_secs(15), |l| {
        l.iter().any(|l| l.starts_with("start "))
    });
    let sample = |pid| {
        [
            status_kib(pid, "VmRSS"),
            status_kib(pid, "RssAnon"),
            status_kib(pid, "RssFile"),
        ]
    };
    std::thread::sleep(Duration::from_secs(4));
    let early = sample(daemon.pid());
    std::thread::sleep(Duration::from_secs(6));
    let late = sample(daemon.pid());
    let renewals = db.bed.bao.audit_request_count("sys/leases/renew").unwrap();
    eprintln!(
        "vault-env [VmRSS, RssAnon, RssFile] KiB: {early:?} at 4 s, {late:?} at 10 s; {renewals} renewals"
    );
    assert!(renewals >= 25, "only {renewals} renewals");
    // What vault-env allocates itself stays small and flat while it renews; the mapped
    // binary (RssFile, large in a debug build) is what the release measurement
    // (`examples/daemon_rss.rs`, under 8 MiB in total) adds to it.
    let [rss_early, anon_early, _] = early;
    let [rss_late, anon_late, _] = late;
    assert!(anon_late < 4 * 1024, "anonymous RSS {anon_late} KiB");
    assert!(
        anon_late <= anon_early + 64,
        "anonymous RSS grew: {early:?} -> {late:?}"
    );
    assert!(
        rss_late <= rss_early + 64,
        "RSS grew: {early:?} -> {late:?}"
    );
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn daemon_lease_revoked_elsewhere_renewal_refused_applies_policy() {
    let db = DbBed::start(3, 120);
    let env = db.env(&[
        ("APP_EXIT_ON", "TERM=0"),
        ("VAULT_ENV_EXPIRY_POLICY", "exit"),
        ("VAULT_ENV_GRACE_PERIOD", "1s"),
    ]);
    let mut daemon = Daemon::start(&env, &["pg"]);
    let lease = db.wait_lease();
    // An operator revokes the credentials: the next renewal is refused (no retrying).
    db.bed
        .bao
        .api(
            "POST",
            "sys/leases/revoke",
            Some(serde_json::json!({ "lease_id": lease })),
        )
        .unwrap();
    let revoked = Instant::now();
    let status = daemon.wait_exit(Duration::from_secs(10));
    let stderr = daemon.stderr_text();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(revoked.elapsed() < Duration::from_secs(5), "{stderr}");
    assert!(stderr.contains("Vault refused the renewal"), "{stderr}");
    assert!(stderr.contains("reason=\"renewal refused\""), "{stderr}");
    assert!(daemon.lines().contains(&"signal TERM".to_owned()));
}

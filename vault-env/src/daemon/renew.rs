//! Keeping the Vault token and every lease vault-env read alive while the app runs.
//!
//! Each item is renewed when a fraction of its TTL has passed (`VAULT_ENV_RENEW_FRACTION`,
//! two thirds by default), minus up to a tenth of that for jitter so that many pods started
//! together do not renew in step. A renewal asks for the item's original TTL again; when
//! Vault grants less (the lease is capped by its max TTL) or says it is not renewable, the
//! item is *final*: it ends at the granted time, and the expiry policy fires shortly before
//! (see [`super::policy::fire_at`]). A refused renewal (4xx: lease unknown, token revoked,
//! permission withdrawn) is final at once. A Vault that does not answer (connection
//! refused, timeout, 5xx) is retried with backoff until the item would expire; the app is
//! not touched meanwhile.
//!
//! # Security
//!
//! Lease ids are identifiers, not credentials; logs show them shortened. The token is only
//! ever sent as a header by the transport; renewal answers, which repeat it, are parsed from
//! zeroizing buffers.

use std::time::{Duration, Instant};

use crate::auth::VaultToken;
use crate::client::{ClientError, Method, Request, Transport};
use crate::resolve::Lease;
use crate::secret::SecretJson;

/// First delay before retrying a renewal Vault did not answer; doubles up to [`RETRY_MAX`].
const RETRY_START: Duration = Duration::from_millis(250);
/// Longest delay between two renewal attempts while Vault is unreachable.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Share of the renewal delay that jitter may take off.
const JITTER: f64 = 0.1;

/// What is kept alive.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Subject {
    Token,
    Lease(String),
}

impl Subject {
    fn label(&self) -> String {
        match self {
            Subject::Token => "token".to_owned(),
            Subject::Lease(id) => short_lease_id(id),
        }
    }
}

/// One renewable thing and its schedule.
#[derive(Debug)]
struct Tracked {
    subject: Subject,
    /// The TTL asked for at each renewal: the TTL first granted.
    increment: Duration,
    expires_at: Instant,
    /// When to act next: renew, or (once final) apply the policy.
    due: Instant,
    /// Renewal is over; `due` is when the policy fires.
    is_final: bool,
    /// Why renewal is over (once final), for the log.
    end_reason: &'static str,
    /// Renewal attempts Vault did not answer, in a row.
    failures: u32,
}

/// A secret that could not be kept alive: the policy must apply now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    /// `token` or the shortened lease id.
    pub subject: String,
    /// Why, for the log.
    pub reason: &'static str,
}

/// Vault's answer to a renewal.
#[derive(Debug, Clone, Copy)]
struct Grant {
    ttl: Duration,
    renewable: bool,
}

/// Why a renewal did not succeed.
#[derive(Debug)]
enum Failure {
    /// Vault answered and said no.
    Refused(ClientError),
    /// No usable answer in time; worth retrying.
    Unanswered(String),
}

/// The renewal schedule of one login: its token and the leases read with it.
pub struct Renewer {
    transport: Transport,
    token: Option<VaultToken>,
    items: Vec<Tracked>,
    fraction: f64,
    grace: Duration,
    attempt_timeout: Duration,
    /// Set once an expiry was reported: nothing more is scheduled.
    expired: bool,
}

impl std::fmt::Debug for Renewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renewer")
            .field("token", &self.token)
            .field("items", &self.items)
            .field("fraction", &self.fraction)
            .finish_non_exhaustive()
    }
}

impl Renewer {
    /// Schedules `token` (when vault-env logged in and it is renewable or expires) and every
    /// lease with a TTL, as of `now`.
    pub fn new(
        transport: Transport,
        token: Option<VaultToken>,
        leases: &[Lease],
        fraction: f64,
        grace: Duration,
        attempt_timeout: Duration,
    ) -> Renewer {
        let mut renewer = Renewer {
            transport,
            token: None,
            items: Vec::new(),
            fraction,
            grace,
            attempt_timeout,
            expired: false,
        };
        renewer.replace(token, leases);
        renewer
    }

    /// Starts over with a new login (the restart policy): the old token and lease ids are
    /// returned, so the caller may revoke them.
    pub fn replace(
        &mut self,
        token: Option<VaultToken>,
        leases: &[Lease],
    ) -> (Option<VaultToken>, Vec<String>) {
        let now = Instant::now();
        let old_leases = self
            .items
            .drain(..)
            .filter_map(|item| match item.subject {
                Subject::Lease(id) => Some(id),
                Subject::Token => None,
            })
            .collect();
        if let Some(token) = &token
            && !token.ttl.is_zero()
        {
            let item = self.track(Subject::Token, token.ttl, token.renewable, now);
            self.items.push(item);
        }
        for lease in leases.iter().filter(|l| !l.ttl.is_zero()) {
            let item = self.track(
                Subject::Lease(lease.lease_id.clone()),
                lease.ttl,
                lease.renewable,
                now,
            );
            self.items.push(item);
        }
        self.expired = false;
        tracing::info!(
            leases = leases.len(),
            scheduled = self.items.len(),
            "renewal schedule set"
        );
        (std::mem::replace(&mut self.token, token), old_leases)
    }

    fn track(&self, subject: Subject, ttl: Duration, renewable: bool, now: Instant) -> Tracked {
        let expires_at = now + ttl;
        let (due, is_final) = if renewable {
            (now + self.renew_delay(ttl), false)
        } else {
            tracing::info!(subject = %subject.label(), ttl_s = ttl.as_secs(), "not renewable; the expiry policy applies before it ends");
            (
                super::policy::fire_at(now, expires_at, self.grace, self.fraction),
                true,
            )
        };
        Tracked {
            subject,
            increment: ttl,
            expires_at,
            due,
            is_final,
            end_reason: "not renewable",
            failures: 0,
        }
    }

    /// The delay before renewing something granted for `ttl`: the fraction, minus jitter.
    fn renew_delay(&self, ttl: Duration) -> Duration {
        let jitter = 1.0 - rand::random_range(0.0..=JITTER);
        ttl.mul_f64(self.fraction * jitter)
    }

    /// When [`step`](Self::step) has work next; `None` when nothing is scheduled.
    pub fn next_due(&self) -> Option<Instant> {
        if self.expired {
            return None;
        }
        self.items.iter().map(|item| item.due).min()
    }

    /// The lease ids and token currently kept alive (for revocation).
    pub fn lease_ids(&self) -> Vec<String> {
        self.items
            .iter()
            .filter_map(|item| match &item.subject {
                Subject::Lease(id) => Some(id.clone()),
                Subject::Token => None,
            })
            .collect()
    }

    /// The current token, if vault-env holds one.
    pub fn token(&self) -> Option<&VaultToken> {
        self.token.as_ref()
    }

    /// Renews everything that is due (concurrently) and reports the first secret whose
    /// policy time has come. After an expiry is reported nothing more is scheduled until
    /// [`replace`](Self::replace).
    pub async fn step(&mut self) -> Option<Expiry> {
        let now = Instant::now();
        if let Some(expiry) = self.final_due(now) {
            return Some(expiry);
        }
        let due: Vec<usize> = (0..self.items.len())
            .filter(|i| !self.items[*i].is_final && self.items[*i].due <= now)
            .collect();
        let attempts = due.iter().map(|i| {
            let item = &self.items[*i];
            let budget = item
                .expires_at
                .saturating_duration_since(now)
                .min(self.attempt_timeout)
                .max(Duration::from_millis(100));
            self.renew(&item.subject, item.increment, budget)
        });
        let outcomes = futures::future::join_all(attempts).await;
        let now = Instant::now();
        for (index, outcome) in due.into_iter().zip(outcomes) {
            self.apply(index, outcome, now);
        }
        self.final_due(now)
    }

    /// The first final item whose policy time has come.
    fn final_due(&mut self, now: Instant) -> Option<Expiry> {
        let item = self
            .items
            .iter()
            .find(|item| item.is_final && item.due <= now)?;
        let expiry = Expiry {
            subject: item.subject.label(),
            reason: item.end_reason,
        };
        self.expired = true;
        Some(expiry)
    }

    fn apply(&mut self, index: usize, outcome: Result<Grant, Failure>, now: Instant) {
        let grace = self.grace;
        let fraction = self.fraction;
        let delay_for = |ttl| self.renew_delay(ttl);
        let item = &self.items[index];
        let label = item.subject.label();
        let mut next = Tracked {
            subject: item.subject.clone(),
            ..*item
        };
        match outcome {
            Ok(grant) => {
                next.failures = 0;
                next.expires_at = now + grant.ttl;
                if grant.renewable && grant.ttl >= next.increment && !grant.ttl.is_zero() {
                    next.due = now + delay_for(grant.ttl);
                    tracing::info!(subject = %label, ttl_s = grant.ttl.as_secs(), "renewed");
                } else {
                    next.is_final = true;
                    next.end_reason = "max TTL reached";
                    next.due = super::policy::fire_at(now, next.expires_at, grace, fraction);
                    tracing::info!(
                        subject = %label,
                        ttl_s = grant.ttl.as_secs(),
                        "renewed for the last time: max TTL reached"
                    );
                }
            }
            Err(Failure::Refused(error)) => {
                next.is_final = true;
                // OpenBao may grant a full TTL one renewal before the max and only then
                // refuse with "past the max TTL".
                next.end_reason = match &error {
                    ClientError::Status { errors, .. }
                        if errors.iter().any(|e| e.contains("max TTL")) =>
                    {
                        "max TTL reached"
                    }
                    _ => "renewal refused",
                };
                next.expires_at = now;
                next.due = now;
                tracing::warn!(
                    subject = %label,
                    error = %format!("{:#}", anyhow::Error::new(error)),
                    "Vault refused the renewal"
                );
            }
            Err(Failure::Unanswered(error)) => {
                next.failures += 1;
                let remaining = next.expires_at.saturating_duration_since(now);
                if remaining.is_zero() {
                    next.is_final = true;
                    next.end_reason = "expired while Vault was unreachable";
                    next.due = now;
                    tracing::warn!(subject = %label, %error, "Vault did not answer before the end of the TTL");
                } else {
                    let backoff = RETRY_START
                        .saturating_mul(1 << next.failures.saturating_sub(1).min(8))
                        .min(RETRY_MAX)
                        .min(remaining);
                    next.due = now + backoff;
                    tracing::warn!(
                        subject = %label,
                        %error,
                        attempt = next.failures,
                        retry_ms = backoff.as_millis() as u64,
                        remaining_ms = remaining.as_millis() as u64,
                        "Vault unreachable; retrying the renewal until the TTL ends"
                    );
                }
            }
        }
        self.items[index] = next;
    }

    /// One renewal request, bounded by `budget`.
    async fn renew(
        &self,
        subject: &Subject,
        increment: Duration,
        budget: Duration,
    ) -> Result<Grant, Failure> {
        let Some(token) = &self.token else {
            return Err(Failure::Unanswered("no token".into()));
        };
        let (path, body, operation) = match subject {
            Subject::Token => (
                "auth/token/renew-self".to_owned(),
                serde_json::json!({ "increment": format!("{}s", increment.as_secs()) }),
                "renew the token",
            ),
            Subject::Lease(id) => (
                "sys/leases/renew".to_owned(),
                serde_json::json!({ "lease_id": id, "increment": increment.as_secs() }),
                "renew a lease",
            ),
        };
        let body = body.to_string();
        let request = self.transport.send(Request {
            operation,
            method: Method::Post,
            path: &path,
            query: &[],
            token: Some(&token.secret),
            body: Some(body.as_bytes()),
        });
        let answer = match tokio::time::timeout(budget, request).await {
            Err(_) => return Err(Failure::Unanswered(format!("no answer within {budget:?}"))),
            Ok(Err(error)) if is_refusal(&error) => return Err(Failure::Refused(error)),
            Ok(Err(error)) => {
                return Err(Failure::Unanswered(format!(
                    "{:#}",
                    anyhow::Error::new(error)
                )));
            }
            Ok(Ok(answer)) => answer,
        };
        let json = SecretJson::from_slice(&answer)
            .map_err(|_| Failure::Unanswered("renewal answer is not JSON".into()))?;
        // A token renewal answers in `auth`, a lease renewal at the top level.
        let root = match subject {
            Subject::Token => json
                .get("auth")
                .ok_or_else(|| Failure::Unanswered("renewal answer has no auth".into()))?,
            Subject::Lease(_) => &json,
        };
        let ttl = root
            .get("lease_duration")
            .map(|d| d.to_env_string())
            .and_then(|d| d.parse::<u64>().ok())
            .ok_or_else(|| Failure::Unanswered("renewal answer has no lease_duration".into()))?;
        Ok(Grant {
            ttl: Duration::from_secs(ttl),
            renewable: matches!(root.get("renewable"), Some(SecretJson::Bool(true))),
        })
    }

    /// Revokes every lease still tracked, then the token (see [`revoke`]); nothing is
    /// scheduled afterwards.
    pub async fn revoke(&mut self, revoke_token: bool) {
        let ids = self.lease_ids();
        if let Some(token) = &self.token {
            revoke(&self.transport, token, &ids, revoke_token).await;
        }
        self.items.clear();
        self.expired = true;
    }

    /// The transport, for revoking what earlier logins left.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }
}

/// The TTL and renewability of a token vault-env did not log in for (`VAULT_TOKEN`,
/// `VAULT_TOKEN_FILE`), from `auth/token/lookup-self`; `None` (and a warning) when Vault
/// does not say. A token without a TTL (`ttl` 0) never expires.
pub async fn lookup_token(transport: &Transport, token: &VaultToken) -> Option<(Duration, bool)> {
    let answer = transport
        .send(Request {
            operation: "look up the token",
            method: Method::Get,
            path: "auth/token/lookup-self",
            query: &[],
            token: Some(&token.secret),
            body: None,
        })
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(error) => {
            tracing::warn!(
                error = %format!("{:#}", anyhow::Error::new(error)),
                "cannot look up the given token; it is not renewed"
            );
            return None;
        }
    };
    // The answer repeats the token (`data.id`): parsed from the zeroizing buffer only.
    let json = SecretJson::from_slice(&answer).ok()?;
    let data = json.get("data")?;
    let ttl = data.get("ttl")?.to_env_string().parse::<u64>().ok()?;
    let renewable = matches!(data.get("renewable"), Some(SecretJson::Bool(true)));
    Some((Duration::from_secs(ttl), renewable))
}

/// Revokes `leases` (`sys/leases/revoke`, concurrently), then `token` itself
/// (`auth/token/revoke-self`) when vault-env logged in for it or `revoke_token` asks for it
/// (a token handed in by `VAULT_TOKEN`/`VAULT_TOKEN_FILE` may belong to someone else).
/// Failures are logged and otherwise ignored: the TTLs end the rest.
pub async fn revoke(
    transport: &Transport,
    token: &VaultToken,
    leases: &[String],
    revoke_token: bool,
) {
    let revocations = leases.iter().map(|id| async move {
        let body = serde_json::json!({ "lease_id": id }).to_string();
        let result = transport
            .send(Request {
                operation: "revoke a lease",
                method: Method::Post,
                path: "sys/leases/revoke",
                query: &[],
                token: Some(&token.secret),
                body: Some(body.as_bytes()),
            })
            .await;
        match result {
            Ok(_) => tracing::info!(lease = %short_lease_id(id), "revoked the lease"),
            Err(error) => tracing::warn!(
                lease = %short_lease_id(id),
                error = %format!("{:#}", anyhow::Error::new(error)),
                "failed to revoke the lease"
            ),
        }
    });
    futures::future::join_all(revocations).await;
    if revoke_token || token.from_login {
        match crate::auth::revoke(transport, &token.secret).await {
            Ok(()) => tracing::info!("revoked the Vault token"),
            Err(error) => tracing::warn!(
                error = %format!("{:#}", anyhow::Error::new(error)),
                "failed to revoke the Vault token"
            ),
        }
    }
}

/// Whether Vault answered and refused (a 4xx other than 429, which means "later").
fn is_refusal(error: &ClientError) -> bool {
    error
        .status()
        .is_some_and(|s| s.is_client_error() && s.as_u16() != 429)
}

/// A lease id cut for logs: the path and the first characters of the unique part.
pub fn short_lease_id(id: &str) -> String {
    match id.rsplit_once('/') {
        Some((path, unique)) => {
            let head: String = unique.chars().take(6).collect();
            format!("{path}/{head}…")
        }
        None => id.chars().take(12).collect::<String>() + "…",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;
    use crate::config::ClientConfig;

    fn renewer(fraction: f64) -> Renewer {
        let transport = Transport::new(&ClientConfig {
            addr: "http://127.0.0.1:1".parse().unwrap(),
            namespace: None,
            ca_cert: None,
            skip_verify: false,
            timeout: Duration::from_secs(1),
        })
        .unwrap();
        Renewer::new(
            transport,
            None,
            &[],
            fraction,
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
    }

    fn lease(id: &str, ttl: u64, renewable: bool) -> Lease {
        Lease {
            read: crate::reference::ReadKey {
                path: "database/creds/app".into(),
                version: None,
            },
            lease_id: id.into(),
            ttl: Duration::from_secs(ttl),
            renewable,
        }
    }

    #[test]
    fn short_lease_id_keeps_path_and_prefix() {
        assert_eq!(
            short_lease_id("database/creds/app/AbCdEfGhIjKl"),
            "database/creds/app/AbCdEf…"
        );
        assert_eq!(short_lease_id("x"), "x…");
    }

    #[test]
    fn schedule_renews_within_jittered_fraction() {
        let mut r = renewer(2.0 / 3.0);
        let before = Instant::now();
        r.replace(None, &[lease("database/creds/app/a", 30, true)]);
        let due = r.next_due().unwrap() - before;
        assert!(due <= Duration::from_secs(20), "{due:?}");
        assert!(
            due >= Duration::from_secs(18) - Duration::from_millis(50),
            "{due:?}"
        );
    }

    #[test]
    fn schedule_non_renewable_is_final_and_zero_ttl_untracked() {
        let mut r = renewer(0.5);
        r.replace(
            None,
            &[
                lease("database/creds/app/a", 0, true),
                lease("database/creds/app/b", 100, false),
            ],
        );
        assert_eq!(r.lease_ids(), ["database/creds/app/b"]);
        assert!(r.items[0].is_final);
    }

    #[test]
    fn apply_capped_grant_makes_item_final() {
        let mut r = renewer(2.0 / 3.0);
        r.replace(None, &[lease("database/creds/app/a", 10, true)]);
        let now = Instant::now();
        r.apply(
            0,
            Ok(Grant {
                ttl: Duration::from_secs(10),
                renewable: true,
            }),
            now,
        );
        assert!(!r.items[0].is_final);
        r.apply(
            0,
            Ok(Grant {
                ttl: Duration::from_secs(4),
                renewable: true,
            }),
            now,
        );
        assert!(r.items[0].is_final);
        assert_eq!(r.items[0].expires_at, now + Duration::from_secs(4));
        // Grace 1 s + 1 s margin before the end, earlier than 2/3 of 4 s.
        assert_eq!(r.items[0].due, now + Duration::from_secs(2));
    }

    #[test]
    fn apply_unanswered_retries_until_expiry_then_expires() {
        let mut r = renewer(2.0 / 3.0);
        r.replace(None, &[lease("database/creds/app/a", 2, true)]);
        let start = Instant::now();
        r.apply(0, Err(Failure::Unanswered("down".into())), start);
        assert!(!r.items[0].is_final);
        assert_eq!(r.items[0].due, start + RETRY_START);
        let late = r.items[0].expires_at + Duration::from_millis(1);
        r.apply(0, Err(Failure::Unanswered("down".into())), late);
        assert!(r.items[0].is_final);
        let expiry = r.final_due(late).unwrap();
        assert_eq!(expiry.reason, "expired while Vault was unreachable");
        assert_eq!(r.next_due(), None);
    }
}

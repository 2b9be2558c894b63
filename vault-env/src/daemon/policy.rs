//! What daemon mode does when a secret can no longer be kept alive (a lease reached its
//! max TTL, Vault refused a renewal, the token was revoked or expired): the operator's
//! [`ExpiryPolicy`], and when it fires relative to the final expiry.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// The grace period between SIGTERM and SIGKILL when `VAULT_ENV_GRACE_PERIOD` is unset.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);

/// Time kept, on top of the grace period, for logging in again and reading fresh secrets
/// before the old ones expire.
const FETCH_MARGIN: Duration = Duration::from_secs(1);

/// The operator's choice for a secret that cannot be renewed any further
/// (`VAULT_ENV_EXPIRY_POLICY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpiryPolicy {
    /// Log in again, read fresh secrets, stop the app gracefully (SIGTERM, grace period,
    /// SIGKILL) and start it again with the new environment; the container keeps running.
    Restart,
    /// SIGTERM to the app, SIGKILL after the grace period; vault-env then exits with the
    /// app's status. Bank-Vaults' behaviour, hence the default.
    #[default]
    Signal,
    /// Stop the app as `Signal` does, then exit non-zero whatever the app's status, so the
    /// kubelet restarts the container.
    Exit,
}

impl ExpiryPolicy {
    /// The name used in `VAULT_ENV_EXPIRY_POLICY` and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Restart => "restart",
            Self::Signal => "signal",
            Self::Exit => "exit",
        }
    }
}

impl fmt::Display for ExpiryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown policy name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown expiry policy {0:?}: expected restart, signal or exit")]
pub struct UnknownPolicy(pub String);

impl FromStr for ExpiryPolicy {
    type Err = UnknownPolicy;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.to_ascii_lowercase().as_str() {
            "restart" => Ok(Self::Restart),
            "signal" => Ok(Self::Signal),
            "exit" => Ok(Self::Exit),
            _ => Err(UnknownPolicy(value.to_owned())),
        }
    }
}

/// When the policy fires for a secret that expires for good at `expires_at`, seen at `now`.
///
/// The app must be gone (or restarted on fresh secrets) while the old ones still work, so
/// the policy fires the grace period plus [`FETCH_MARGIN`] before the end; but never later
/// than a renewal would have been due (`fraction` of the remaining time), and never in the
/// past.
pub fn fire_at(now: Instant, expires_at: Instant, grace: Duration, fraction: f64) -> Instant {
    let remaining = expires_at.saturating_duration_since(now);
    let by_fraction = now + remaining.mul_f64(fraction);
    let by_grace = expires_at
        .checked_sub(grace + FETCH_MARGIN)
        .unwrap_or(now)
        .max(now);
    by_fraction.min(by_grace)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn expiry_policy_names_round_trip() {
        for policy in [
            ExpiryPolicy::Restart,
            ExpiryPolicy::Signal,
            ExpiryPolicy::Exit,
        ] {
            assert_eq!(policy.as_str().parse::<ExpiryPolicy>().unwrap(), policy);
        }
        assert_eq!(
            "RESTART".parse::<ExpiryPolicy>().unwrap(),
            ExpiryPolicy::Restart
        );
        assert!("kill".parse::<ExpiryPolicy>().is_err());
        assert_eq!(ExpiryPolicy::default(), ExpiryPolicy::Signal);
    }

    #[test]
    fn fire_at_long_remaining_leaves_grace_before_expiry() {
        let now = Instant::now();
        let expires = now + Duration::from_secs(600);
        let at = fire_at(now, expires, Duration::from_secs(10), 2.0 / 3.0);
        assert_eq!(at, now + Duration::from_secs(400));
        let at = fire_at(
            now,
            now + Duration::from_secs(30),
            Duration::from_secs(10),
            0.9,
        );
        assert_eq!(at, now + Duration::from_secs(19));
    }

    #[test]
    fn fire_at_short_remaining_fires_now() {
        let now = Instant::now();
        let at = fire_at(
            now,
            now + Duration::from_secs(3),
            Duration::from_secs(10),
            2.0 / 3.0,
        );
        assert_eq!(at, now);
        let at = fire_at(now, now, Duration::ZERO, 2.0 / 3.0);
        assert_eq!(at, now);
    }
}

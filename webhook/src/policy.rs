//! What an admitted object may override: the Vault address (allowlist + SSRF guard) and the
//! vault-env image (allowlist).
//!
//! # Security
//!
//! A `vault-addr` annotation is attacker-controlled: vault-env in the pod would send the pod's
//! service-account token to it. An address must be `http`/`https`, carry no userinfo, query or
//! fragment, match the operator's `VAULT_ADDR_ALLOWLIST`, and (unless the operator names the
//! exact host) point at no loopback, link-local, metadata, private, CGNAT or otherwise
//! non-public IP. IP literals are normalised first by the WHATWG URL parser, so `2130706433`,
//! `0x7f.1` and `0177.0.0.1` are all `127.0.0.1` by the time they are checked. Host names are
//! not resolved (the decision is pure); the allowlist is what keeps names in check.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// Host names that serve cloud instance metadata.
const METADATA_HOSTS: &[&str] = &[
    "metadata.google.internal",
    "metadata.goog",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.azure.internal",
    "kubernetes.default",
];

/// Why an address from an object was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("is not a valid URL")]
    Parse,
    #[error("uses scheme {0:?}; only http and https are allowed")]
    Scheme(String),
    #[error("carries user information")]
    Userinfo,
    #[error("carries a query string")]
    Query,
    #[error("carries a fragment")]
    Fragment,
    #[error("has a path; give only scheme, host and port")]
    Path,
    #[error("has no host")]
    NoHost,
    #[error("points at a cloud metadata host")]
    Metadata,
    #[error("points at a non-public address ({0})")]
    NonPublic(&'static str),
    #[error("is not in the operator's VAULT_ADDR_ALLOWLIST")]
    NotAllowlisted,
}

/// One `VAULT_ADDR_ALLOWLIST` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
enum AllowEntry {
    /// `https://vault.example:8200`: exactly this origin; the operator names the host, so
    /// the address checks for non-public IPs are waived.
    Origin(String),
    /// `vault.example`: this host on any port, http or https; non-public IPs waived.
    Host(String),
    /// `*.svc.cluster.local`: any host under the suffix; never an IP literal.
    Suffix(String),
}

/// The operator's address policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    operator_addr: Option<String>,
    allow: Vec<AllowEntry>,
}

impl AddressPolicy {
    /// Builds the policy from the operator's own `VAULT_ADDR` (always allowed) and the
    /// comma-separated `VAULT_ADDR_ALLOWLIST` entries (`https://host:port`, `host` or
    /// `*.suffix`).
    pub fn new(operator_addr: Option<&str>, allowlist: &[String]) -> Self {
        let allow = allowlist
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .map(|entry| {
                if let Some(suffix) = entry.strip_prefix("*.") {
                    AllowEntry::Suffix(format!(".{}", suffix.to_ascii_lowercase()))
                } else if entry.contains("://") {
                    match Url::parse(entry) {
                        Ok(url) => AllowEntry::Origin(url.origin().ascii_serialization()),
                        Err(_) => AllowEntry::Origin(entry.to_owned()),
                    }
                } else {
                    AllowEntry::Host(entry.to_ascii_lowercase())
                }
            })
            .collect();
        Self {
            operator_addr: operator_addr.map(|a| a.trim_end_matches('/').to_owned()),
            allow,
        }
    }

    /// Checks an address taken from an object.
    ///
    /// # Errors
    ///
    /// [`AddressError`] says which rule the address breaks.
    pub fn check(&self, addr: &str) -> Result<(), AddressError> {
        if self
            .operator_addr
            .as_deref()
            .is_some_and(|own| own == addr.trim_end_matches('/'))
        {
            return Ok(());
        }
        let url = Url::parse(addr).map_err(|_| AddressError::Parse)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(AddressError::Scheme(url.scheme().to_owned()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(AddressError::Userinfo);
        }
        if url.query().is_some() {
            return Err(AddressError::Query);
        }
        if url.fragment().is_some() {
            return Err(AddressError::Fragment);
        }
        if !matches!(url.path(), "" | "/") {
            return Err(AddressError::Path);
        }
        let host = url.host().ok_or(AddressError::NoHost)?;
        let host_text = match &host {
            Host::Domain(d) => d.trim_end_matches('.').to_ascii_lowercase(),
            Host::Ipv4(ip) => ip.to_string(),
            Host::Ipv6(ip) => ip.to_string(),
        };
        let origin = url.origin().ascii_serialization();
        let named = self.allow.iter().any(|entry| match entry {
            AllowEntry::Origin(o) => *o == origin,
            AllowEntry::Host(h) => h.trim_matches(['[', ']']) == host_text,
            AllowEntry::Suffix(_) => false,
        });
        if named {
            return Ok(());
        }
        match host {
            Host::Domain(_) => {
                if METADATA_HOSTS.contains(&host_text.as_str()) {
                    return Err(AddressError::Metadata);
                }
                if host_text == "localhost" || host_text.ends_with(".localhost") {
                    return Err(AddressError::NonPublic("loopback"));
                }
            }
            Host::Ipv4(ip) => check_ip(IpAddr::V4(ip))?,
            Host::Ipv6(ip) => check_ip(IpAddr::V6(ip))?,
        }
        let by_suffix = matches!(url.host(), Some(Host::Domain(_)))
            && self.allow.iter().any(|entry| match entry {
                AllowEntry::Suffix(s) => host_text.ends_with(s.as_str()),
                _ => false,
            });
        if by_suffix {
            Ok(())
        } else {
            Err(AddressError::NotAllowlisted)
        }
    }
}

/// Refuses every IP that is not a public unicast address.
fn check_ip(ip: IpAddr) -> Result<(), AddressError> {
    match ip {
        IpAddr::V4(v4) => check_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return check_v4(v4);
            }
            check_v6(v6)
        }
    }
}

fn check_v4(ip: Ipv4Addr) -> Result<(), AddressError> {
    let [a, b, ..] = ip.octets();
    let reason = if ip.is_loopback() {
        "loopback"
    } else if ip.is_link_local() {
        "link-local or instance metadata"
    } else if ip.is_private() {
        "RFC 1918 private"
    } else if a == 100 && (64..128).contains(&b) {
        "CGNAT 100.64.0.0/10"
    } else if ip.is_unspecified() || a == 0 {
        "unspecified"
    } else if ip.is_broadcast() || ip.is_multicast() || a >= 240 {
        "broadcast, multicast or reserved"
    } else if a == 192 && b == 0 && ip.octets()[2] == 0 {
        "IETF protocol assignments"
    } else if a == 198 && (b == 18 || b == 19) {
        "benchmarking"
    } else if ip.is_documentation() {
        "documentation"
    } else {
        return Ok(());
    };
    Err(AddressError::NonPublic(reason))
}

fn check_v6(ip: Ipv6Addr) -> Result<(), AddressError> {
    let first = ip.segments()[0];
    let reason = if ip.is_loopback() {
        "loopback"
    } else if ip.is_unspecified() {
        "unspecified"
    } else if first & 0xffc0 == 0xfe80 {
        "link-local"
    } else if first & 0xfe00 == 0xfc00 {
        "unique local"
    } else if ip.is_multicast() {
        "multicast"
    } else if ip.segments()[..6] == [0, 0, 0, 0, 0, 0] {
        "IPv4-compatible"
    } else if first == 0x64 && ip.segments()[1] == 0xff9b {
        "NAT64"
    } else if first == 0x2001 && ip.segments()[1] == 0x0db8 {
        "documentation"
    } else {
        return Ok(());
    };
    Err(AddressError::NonPublic(reason))
}

/// Whether an image named by an object's `vault-env-image` is allowed: exact match, or a
/// `repo:*`/`prefix*` pattern ending in `*`.
pub fn image_allowed(image: &str, allowlist: &[String]) -> bool {
    allowlist.iter().map(|e| e.trim()).any(|entry| {
        if let Some(prefix) = entry.strip_suffix('*') {
            !prefix.is_empty() && image.starts_with(prefix)
        } else {
            !entry.is_empty() && entry == image
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AddressPolicy {
        AddressPolicy::new(
            Some("https://vault.vault.svc:8200"),
            &[
                "*.svc.cluster.local".to_owned(),
                "https://vault.example.com:8200".to_owned(),
                "10.0.0.5".to_owned(),
            ],
        )
    }

    #[test]
    fn check_ssrf_table_denied() {
        let table: &[(&str, AddressError)] = &[
            (
                "http://169.254.169.254",
                AddressError::NonPublic("link-local or instance metadata"),
            ),
            (
                "http://169.254.169.254/latest/meta-data/",
                AddressError::Path,
            ),
            ("http://metadata.google.internal", AddressError::Metadata),
            ("http://metadata.google.internal.", AddressError::Metadata),
            ("http://127.0.0.1:8200", AddressError::NonPublic("loopback")),
            ("http://localhost:8200", AddressError::NonPublic("loopback")),
            ("http://[::1]:8200", AddressError::NonPublic("loopback")),
            (
                "http://[::ffff:127.0.0.1]",
                AddressError::NonPublic("loopback"),
            ),
            ("http://2130706433", AddressError::NonPublic("loopback")),
            ("http://0x7f.1", AddressError::NonPublic("loopback")),
            ("http://0177.0.0.1", AddressError::NonPublic("loopback")),
            ("http://0x7f000001", AddressError::NonPublic("loopback")),
            (
                "http://10.1.2.3",
                AddressError::NonPublic("RFC 1918 private"),
            ),
            (
                "http://172.16.0.1",
                AddressError::NonPublic("RFC 1918 private"),
            ),
            (
                "http://192.168.1.1",
                AddressError::NonPublic("RFC 1918 private"),
            ),
            (
                "http://100.64.0.1",
                AddressError::NonPublic("CGNAT 100.64.0.0/10"),
            ),
            (
                "http://100.127.255.254",
                AddressError::NonPublic("CGNAT 100.64.0.0/10"),
            ),
            ("http://0.0.0.0", AddressError::NonPublic("unspecified")),
            ("http://[fd00::1]", AddressError::NonPublic("unique local")),
            ("http://[fe80::1]", AddressError::NonPublic("link-local")),
            (
                "https://user:pw@vault.svc.cluster.local",
                AddressError::Userinfo,
            ),
            ("https://vault.svc.cluster.local?x=1", AddressError::Query),
            (
                "https://vault.svc.cluster.local#frag",
                AddressError::Fragment,
            ),
            (
                "ftp://vault.svc.cluster.local",
                AddressError::Scheme("ftp".to_owned()),
            ),
            (
                "file:///etc/passwd",
                AddressError::Scheme("file".to_owned()),
            ),
            (
                "https://evil.example.org:8200",
                AddressError::NotAllowlisted,
            ),
            ("https://8.8.8.8", AddressError::NotAllowlisted),
            (
                "https://vault.example.com:8201",
                AddressError::NotAllowlisted,
            ),
            ("not a url", AddressError::Parse),
        ];
        let policy = policy();
        for (addr, expected) in table {
            assert_eq!(policy.check(addr).as_ref(), Err(expected), "{addr}");
        }
    }

    #[test]
    fn check_allowlisted_addresses_pass() {
        let policy = policy();
        for addr in [
            "https://vault.vault.svc:8200",
            "https://vault.vault.svc:8200/",
            "https://vault.default.svc.cluster.local:8200",
            "http://vault.team.svc.cluster.local",
            "https://vault.example.com:8200",
            "https://10.0.0.5:8200",
        ] {
            assert_eq!(policy.check(addr), Ok(()), "{addr}");
        }
    }

    #[test]
    fn check_suffix_entry_does_not_waive_metadata_names() {
        let policy = AddressPolicy::new(None, &["*.internal".to_owned()]);
        assert_eq!(
            policy.check("http://metadata.google.internal"),
            Err(AddressError::Metadata)
        );
        assert_eq!(policy.check("https://vault.corp.internal"), Ok(()));
    }

    #[test]
    fn check_empty_allowlist_allows_only_operator_addr() {
        let policy = AddressPolicy::new(Some("https://vault:8200"), &[]);
        assert_eq!(policy.check("https://vault:8200"), Ok(()));
        assert_eq!(
            policy.check("https://vault.example.com"),
            Err(AddressError::NotAllowlisted)
        );
    }

    #[test]
    fn image_allowed_exact_and_prefix() {
        let list = vec![
            "ghcr.io/strongroom/vault-env:*".to_owned(),
            "registry.local/vault-env:1.0".to_owned(),
        ];
        assert!(image_allowed("ghcr.io/strongroom/vault-env:0.2", &list));
        assert!(image_allowed("registry.local/vault-env:1.0", &list));
        assert!(!image_allowed("registry.local/vault-env:1.1", &list));
        assert!(!image_allowed("evil.io/vault-env:1", &list));
        assert!(!image_allowed("anything", &["*".to_owned()]));
    }
}

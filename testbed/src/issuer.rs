//! A test Kubernetes service-account token issuer: an ES256 key that signs JWTs shaped exactly like
//! the kube-apiserver's projected service-account tokens, plus the matching verifier the fake API
//! server's TokenReview endpoint uses.
//!
//! OpenBao's jwt auth method is configured with [`ServiceAccountIssuer::public_key_pem`]; its
//! kubernetes auth method asks the fake API server, which verifies with the same key.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, UnparsedPublicKey};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::net::{random_uuid, unix_now};

/// The issuer (`iss`) real clusters use by default, and the default token audience.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Signs Kubernetes-shaped service-account JWTs with a fresh ES256 key.
pub struct ServiceAccountIssuer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    public_key_pem: String,
    issuer: String,
    kid: String,
}

/// What to put in one token; build with [`TokenSpec::new`] and the builder methods.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// Service account namespace.
    pub namespace: String,
    /// Service account name.
    pub service_account: String,
    /// `aud`; `None` means [`DEFAULT_ISSUER`] (the API server's own audience, like a default token).
    pub audiences: Option<Vec<String>>,
    /// Lifetime from now (`exp = iat + ttl`).
    pub ttl: Duration,
    /// Issue a token that expired an hour ago (`iat` two hours ago).
    pub expired: bool,
    /// Pod name for the `kubernetes.io.pod` claim (a pod-bound token); `None` omits the claim.
    pub pod: Option<String>,
}

impl TokenSpec {
    /// A one-hour token for `namespace`/`service_account` with the default audience and no pod.
    pub fn new(namespace: &str, service_account: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
            audiences: None,
            ttl: Duration::from_secs(3600),
            expired: false,
            pod: None,
        }
    }

    /// Sets the `aud` claim.
    pub fn audiences<S: Into<String>>(mut self, audiences: impl IntoIterator<Item = S>) -> Self {
        self.audiences = Some(audiences.into_iter().map(Into::into).collect());
        self
    }

    /// Sets the lifetime.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Makes the token already expired.
    pub fn expired(mut self) -> Self {
        self.expired = true;
        self
    }

    /// Binds the token to a pod name (adds `kubernetes.io.pod`).
    pub fn pod(mut self, name: &str) -> Self {
        self.pod = Some(name.to_owned());
        self
    }
}

impl ServiceAccountIssuer {
    /// Generates a new P-256 key; the issuer claim is [`DEFAULT_ISSUER`].
    pub fn new() -> Result<Self> {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng)
            .map_err(|e| Error::crypto("generate signing key")(&e))?;
        let key = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng)
            .map_err(|e| Error::crypto("load signing key")(&e))?;
        let public_key_pem = spki_pem_p256(key.public_key().as_ref());
        let kid = crate::net::random_hex(16);
        Ok(Self {
            key,
            rng,
            public_key_pem,
            issuer: DEFAULT_ISSUER.to_owned(),
            kid,
        })
    }

    /// The `iss` claim of every token.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The default `aud` of tokens (and the API audience the fake TokenReview assumes).
    pub fn default_audience(&self) -> &str {
        &self.issuer
    }

    /// The public key as a PEM `PUBLIC KEY` (SubjectPublicKeyInfo), for `jwt_validation_pubkeys`.
    pub fn public_key_pem(&self) -> &str {
        &self.public_key_pem
    }

    /// A one-hour token for `namespace`/`service_account` with the default audience.
    pub fn issue(&self, namespace: &str, service_account: &str) -> Result<String> {
        self.issue_with(&TokenSpec::new(namespace, service_account))
    }

    /// A token as described by `spec`. The result is a test credential (still: do not log it).
    pub fn issue_with(&self, spec: &TokenSpec) -> Result<String> {
        let now = unix_now();
        let (iat, exp) = if spec.expired {
            (now - 7200, now - 3600)
        } else {
            (now, now + spec.ttl.as_secs() as i64)
        };
        let audiences = spec
            .audiences
            .clone()
            .unwrap_or_else(|| vec![self.issuer.clone()]);
        let mut k8s = json!({
            "namespace": spec.namespace,
            "serviceaccount": {
                "name": spec.service_account,
                "uid": service_account_uid(&spec.namespace, &spec.service_account),
            },
        });
        if let Some(pod) = &spec.pod {
            k8s["pod"] = json!({ "name": pod, "uid": random_uuid() });
        }
        let claims = json!({
            "aud": audiences,
            "exp": exp,
            "iat": iat,
            "iss": self.issuer,
            "jti": random_uuid(),
            "kubernetes.io": k8s,
            "nbf": iat,
            "sub": format!("system:serviceaccount:{}:{}", spec.namespace, spec.service_account),
        });
        let header = json!({ "alg": "ES256", "kid": self.kid });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|e| Error::crypto("sign token")(&e))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(sig.as_ref())
        ))
    }

    /// A verifier for tokens from this issuer (what the fake API server's TokenReview uses).
    pub fn verifier(&self) -> TokenVerifier {
        TokenVerifier {
            public_key: self.key.public_key().as_ref().to_vec(),
            issuer: self.issuer.clone(),
        }
    }
}

impl std::fmt::Debug for ServiceAccountIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountIssuer")
            .field("issuer", &self.issuer)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The stable uid a service account gets in tokens and TokenReview answers (derived from its
/// namespace and name, like a real object's uid that never changes).
pub fn service_account_uid(namespace: &str, name: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{namespace}/{name}").as_bytes(),
    );
    let h: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Verifies tokens from one [`ServiceAccountIssuer`]: signature, issuer, expiry and audience.
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    public_key: Vec<u8>,
    issuer: String,
}

/// The identity in a token that passed [`TokenVerifier::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// Service account namespace.
    pub namespace: String,
    /// Service account name.
    pub service_account: String,
    /// Service account uid (`kubernetes.io.serviceaccount.uid`).
    pub uid: String,
    /// Pod name and uid if the token is pod-bound.
    pub pod: Option<(String, String)>,
    /// The token's audiences that matched the requested ones.
    pub audiences: Vec<String>,
}

impl TokenVerifier {
    /// Checks `token` and returns its identity, or a reason phrased like the API server's.
    ///
    /// `audiences` are the acceptable ones (any match suffices); empty means "the issuer's own".
    ///
    /// # Security
    /// `token` is attacker-controlled: it is parsed only after the signature over its first two
    /// segments verifies, and every failure is a plain `Err` with a message that never echoes it.
    pub fn verify(&self, token: &str, audiences: &[String]) -> Result<VerifiedToken, String> {
        let invalid = || "invalid bearer token".to_owned();
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| invalid())?;
        UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &self.public_key)
            .verify(format!("{h}.{c}").as_bytes(), &sig)
            .map_err(|_| {
                "invalid bearer token, square/go-jose: error in cryptographic primitive".to_owned()
            })?;
        let header: Value = decode_segment(h).ok_or_else(invalid)?;
        if header["alg"] != "ES256" {
            return Err(invalid());
        }
        let claims: Value = decode_segment(c).ok_or_else(invalid)?;
        if claims["iss"] != self.issuer.as_str() {
            return Err(invalid());
        }
        let now = unix_now();
        let exp = claims["exp"].as_i64().ok_or_else(invalid)?;
        if exp <= now {
            return Err("invalid bearer token, service account token has expired".to_owned());
        }
        if claims["nbf"].as_i64().is_some_and(|nbf| nbf > now + 60) {
            return Err("invalid bearer token, service account token is not valid yet".to_owned());
        }
        let token_auds: Vec<String> = match &claims["aud"] {
            Value::String(a) => vec![a.clone()],
            Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        let wanted: Vec<String> = if audiences.is_empty() {
            vec![self.issuer.clone()]
        } else {
            audiences.to_vec()
        };
        let matched: Vec<String> = wanted
            .into_iter()
            .filter(|a| token_auds.contains(a))
            .collect();
        if matched.is_empty() {
            return Err(
                "invalid bearer token, token audiences is invalid for the target audiences"
                    .to_owned(),
            );
        }
        let k8s = &claims["kubernetes.io"];
        let namespace = k8s["namespace"].as_str().ok_or_else(invalid)?.to_owned();
        let service_account = k8s["serviceaccount"]["name"]
            .as_str()
            .ok_or_else(invalid)?
            .to_owned();
        let uid = k8s["serviceaccount"]["uid"]
            .as_str()
            .ok_or_else(invalid)?
            .to_owned();
        if claims["sub"] != format!("system:serviceaccount:{namespace}:{service_account}").as_str()
        {
            return Err(invalid());
        }
        let pod = match (k8s["pod"]["name"].as_str(), k8s["pod"]["uid"].as_str()) {
            (Some(n), Some(u)) => Some((n.to_owned(), u.to_owned())),
            _ => None,
        };
        Ok(VerifiedToken {
            namespace,
            service_account,
            uid,
            pod,
            audiences: matched,
        })
    }
}

fn decode_segment(seg: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(seg).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Wraps an uncompressed P-256 point in a SubjectPublicKeyInfo and PEM-encodes it.
fn spki_pem_p256(point: &[u8]) -> String {
    // DER prefix: SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (65-byte point) }.
    const PREFIX: [u8; 26] = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    let mut der = PREFIX.to_vec();
    der.extend_from_slice(point);
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_issued_token_returns_identity() -> Result<()> {
        let issuer = ServiceAccountIssuer::new()?;
        let jwt = issuer.issue_with(&TokenSpec::new("demo", "app-sa").pod("p1"))?;
        let id = issuer
            .verifier()
            .verify(&jwt, &[])
            .map_err(|d| Error::Decode {
                what: "token",
                detail: d,
            })?;
        assert_eq!(id.namespace, "demo");
        assert_eq!(id.service_account, "app-sa");
        assert_eq!(id.uid, service_account_uid("demo", "app-sa"));
        assert_eq!(id.pod.map(|p| p.0).as_deref(), Some("p1"));
        Ok(())
    }

    #[test]
    fn verify_expired_or_foreign_or_wrong_audience_fails() -> Result<()> {
        let issuer = ServiceAccountIssuer::new()?;
        let other = ServiceAccountIssuer::new()?;
        let v = issuer.verifier();
        let expired = issuer.issue_with(&TokenSpec::new("demo", "app-sa").expired())?;
        assert!(
            v.verify(&expired, &[])
                .is_err_and(|e| e.contains("expired"))
        );
        let foreign = other.issue("demo", "app-sa")?;
        assert!(v.verify(&foreign, &[]).is_err());
        let vault_aud =
            issuer.issue_with(&TokenSpec::new("demo", "app-sa").audiences(["vault"]))?;
        assert!(v.verify(&vault_aud, &[]).is_err());
        assert!(v.verify(&vault_aud, &["vault".to_owned()]).is_ok());
        let mut tampered = issuer.issue("demo", "app-sa")?;
        tampered.insert(10, 'x');
        assert!(v.verify(&tampered, &[]).is_err());
        assert!(v.verify("not-a-jwt", &[]).is_err());
        Ok(())
    }
}

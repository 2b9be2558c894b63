//! Getting a Vault token: a literal `VAULT_TOKEN`, a `VAULT_TOKEN_FILE`, or a login with the
//! service-account JWT at `auth/$VAULT_PATH/login` (kubernetes and jwt methods), and revoking
//! it again (`VAULT_REVOKE_TOKEN`).
//!
//! # Security
//!
//! The JWT and the token are read into zeroizing buffers and moved into [`SecretString`]s;
//! the login body is built in a zeroizing buffer of exact capacity. Errors name the auth
//! mount, the role and the file, never the JWT or the token.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::client::{ClientError, Method, Request, Transport};
use crate::config::{AuthConfig, LoginMethod};
use crate::secret::SecretJson;

/// A failure to obtain or revoke a token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The service-account JWT file could not be read.
    #[error("read the service-account token {path}")]
    ReadJwt {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The token file could not be read.
    #[error("read VAULT_TOKEN_FILE {path}")]
    ReadTokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A credential file is empty or not UTF-8.
    #[error("{path} is empty or not UTF-8 text")]
    BadCredentialFile {
        /// The file.
        path: PathBuf,
    },
    /// Vault refused the login or could not be reached.
    #[error("log in with {method} auth at auth/{mount}/login as role {role:?}")]
    Login {
        /// `kubernetes` or `jwt`.
        method: &'static str,
        /// The auth mount.
        mount: String,
        /// The role.
        role: String,
        /// Vault's answer.
        #[source]
        source: ClientError,
    },
    /// Vault's login answer has no `auth.client_token`.
    #[error("login answer from auth/{mount}/login has no client token")]
    LoginAnswer {
        /// The auth mount.
        mount: String,
    },
    /// Revoking the token failed.
    #[error("revoke the Vault token")]
    Revoke(#[source] vaultrs::error::ClientError),
}

/// The token vault-env works with, and what Vault said about its lifetime.
pub struct VaultToken {
    /// The token.
    pub secret: SecretString,
    /// `auth.lease_duration` of the login (zero for a given token, whose TTL is not looked up).
    pub ttl: Duration,
    /// `auth.renewable` of the login.
    pub renewable: bool,
    /// Whether vault-env logged in itself (and so owns the token's life).
    pub from_login: bool,
}

impl std::fmt::Debug for VaultToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultToken")
            .field("secret", &"<redacted>")
            .field("ttl", &self.ttl)
            .field("renewable", &self.renewable)
            .field("from_login", &self.from_login)
            .finish()
    }
}

/// Obtains a token as `auth` says: one login request at most.
pub async fn obtain(transport: &Transport, auth: &AuthConfig) -> Result<VaultToken, AuthError> {
    let token = obtain_unlocked(transport, auth).await?;
    // The token lives as long as vault-env (a daemon's whole life): keep it out of swap.
    crate::hygiene::lock(token.secret.expose_secret().as_bytes());
    Ok(token)
}

async fn obtain_unlocked(
    transport: &Transport,
    auth: &AuthConfig,
) -> Result<VaultToken, AuthError> {
    match auth {
        AuthConfig::Token(token) => Ok(VaultToken {
            secret: token.clone(),
            ttl: Duration::ZERO,
            renewable: false,
            from_login: false,
        }),
        AuthConfig::TokenFile(path) => {
            let secret = read_credential(path).map_err(|source| AuthError::ReadTokenFile {
                path: path.clone(),
                source,
            })??;
            Ok(VaultToken {
                secret,
                ttl: Duration::ZERO,
                renewable: false,
                from_login: false,
            })
        }
        AuthConfig::Login {
            method,
            mount,
            role,
            jwt_file,
        } => login(transport, *method, mount, role, jwt_file).await,
    }
}

async fn login(
    transport: &Transport,
    method: LoginMethod,
    mount: &str,
    role: &str,
    jwt_file: &Path,
) -> Result<VaultToken, AuthError> {
    let jwt = read_credential(jwt_file).map_err(|source| AuthError::ReadJwt {
        path: jwt_file.to_owned(),
        source,
    })??;
    let body = login_body(role, jwt.expose_secret());
    drop(jwt);
    let path = format!("auth/{mount}/login");
    let answer = transport
        .send(Request {
            operation: "log in",
            method: Method::Post,
            path: &path,
            query: &[],
            token: None,
            body: Some(&body),
        })
        .await
        .map_err(|source| AuthError::Login {
            method: method.as_str(),
            mount: mount.to_owned(),
            role: role.to_owned(),
            source,
        })?;
    drop(body);
    let no_token = || AuthError::LoginAnswer {
        mount: mount.to_owned(),
    };
    let json = SecretJson::from_slice(&answer).map_err(|_| no_token())?;
    let auth = json.get("auth").ok_or_else(no_token)?;
    let token = auth
        .get("client_token")
        .and_then(SecretJson::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(no_token)?;
    let ttl = auth
        .get("lease_duration")
        .map(|d| d.to_env_string())
        .and_then(|d| d.parse::<u64>().ok())
        .unwrap_or(0);
    let renewable = matches!(auth.get("renewable"), Some(SecretJson::Bool(true)));
    tracing::info!(
        method = method.as_str(),
        mount,
        role,
        ttl_s = ttl,
        "logged in to Vault"
    );
    Ok(VaultToken {
        secret: SecretString::from(token.to_owned()),
        ttl: Duration::from_secs(ttl),
        renewable,
        from_login: true,
    })
}

/// Revokes `token` (`auth/token/revoke-self`) through vaultrs' typed call.
pub async fn revoke(transport: &Transport, token: &SecretString) -> Result<(), AuthError> {
    let client = transport.vaultrs(token);
    vaultrs::token::revoke_self(&client.0)
        .await
        .map_err(AuthError::Revoke)
}

/// `{"role":…,"jwt":…}` in a zeroizing buffer allocated once at its final size.
fn login_body(role: &str, jwt: &str) -> Zeroizing<Vec<u8>> {
    let mut body = Zeroizing::new(Vec::with_capacity(
        (role.len() + jwt.len()).saturating_mul(6) + 32,
    ));
    let mut text = Zeroizing::new(String::with_capacity(body.capacity()));
    text.push_str("{\"role\":");
    crate::secret::write_json_string(role, &mut text);
    text.push_str(",\"jwt\":");
    crate::secret::write_json_string(jwt, &mut text);
    text.push('}');
    body.extend_from_slice(text.as_bytes());
    body
}

/// Reads a credential file into a secret, trimming surrounding whitespace (files written by
/// `echo` end in a newline). The outer error is the I/O failure, the inner one bad content.
fn read_credential(path: &Path) -> std::io::Result<Result<SecretString, AuthError>> {
    let bytes = Zeroizing::new(std::fs::read(path)?);
    let bad = || AuthError::BadCredentialFile {
        path: path.to_owned(),
    };
    Ok(match std::str::from_utf8(&bytes).map(str::trim) {
        Ok(text) if !text.is_empty() => Ok(SecretString::from(text.to_owned())),
        _ => Err(bad()),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn login_body_escapes_and_fits() {
        let body = login_body("r\"1", "a.b.c");
        assert_eq!(&body[..], br#"{"role":"r\"1","jwt":"a.b.c"}"#);
    }

    #[test]
    fn read_credential_trims_and_rejects_empty() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        std::fs::write(&file, "  s.tok\n").unwrap();
        let token = read_credential(&file).unwrap().unwrap();
        assert_eq!(token.expose_secret(), "s.tok");
        std::fs::write(&file, "\n").unwrap();
        assert!(matches!(
            read_credential(&file).unwrap(),
            Err(AuthError::BadCredentialFile { .. })
        ));
        assert!(read_credential(&dir.path().join("missing")).is_err());
    }
}

//! OAuth2 client credentials against the tenant's token endpoint, with a client
//! secret or a certificate-signed JWT assertion; the token is cached and renewed
//! before it expires. Secrets never appear in `Debug`, logs or errors.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::GraphError;
use crate::config::{AssertionAlgorithm, GraphConfig};

/// The app's credential.
enum Credential {
    Secret(String),
    Certificate {
        key: Box<EncodingKey>,
        algorithm: AssertionAlgorithm,
        x5t_s256: String,
        x5t: String,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Secret(_) => f.write_str("Secret(<redacted>)"),
            Credential::Certificate { x5t_s256, .. } => {
                write!(f, "Certificate(x5t#S256={x5t_s256})")
            }
        }
    }
}

/// Gets and caches access tokens for one tenant.
#[derive(Debug)]
pub struct TokenSource {
    token_url: String,
    client_id: String,
    scope: String,
    credential: Credential,
    cache: tokio::sync::Mutex<Option<(String, Instant, Duration)>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize, Default)]
struct TokenError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: i64,
    iat: i64,
    exp: i64,
}

fn read_secret(what: &str, path: &Path) -> Result<String, GraphError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| GraphError::Auth(format!("cannot read {what} {}: {e}", path.display())))
}

fn credential_path(name: &str) -> Result<std::path::PathBuf, GraphError> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
        GraphError::Auth(format!(
            "credential {name:?} needs systemd's LoadCredential= ($CREDENTIALS_DIRECTORY is not set)"
        ))
    })?;
    Ok(Path::new(&dir).join(name))
}

impl TokenSource {
    /// Builds the token source from config, reading the secret or key now.
    pub fn new(tenant_id: &str, cfg: &GraphConfig) -> Result<TokenSource, GraphError> {
        let credential = if let Some(cert) = &cfg.certificate_file {
            let key_pem = match (&cfg.private_key_file, &cfg.private_key_credential) {
                (Some(p), _) => read_secret("private key", p)?,
                (None, Some(name)) => {
                    read_secret("private key credential", &credential_path(name)?)?
                }
                (None, None) => return Err(GraphError::Auth("no private key configured".into())),
            };
            let key = EncodingKey::from_rsa_pem(key_pem.as_bytes())
                .map_err(|e| GraphError::Auth(format!("private key is not an RSA PEM key: {e}")))?;
            let cert_pem = std::fs::read(cert).map_err(|e| {
                GraphError::Auth(format!("cannot read certificate {}: {e}", cert.display()))
            })?;
            let der = CertificateDer::from_pem_slice(&cert_pem).map_err(|e| {
                GraphError::Auth(format!("{} is not a PEM certificate: {e}", cert.display()))
            })?;
            let sha1 = sha1::Sha1::digest(der.as_ref());
            Credential::Certificate {
                key: Box::new(key),
                algorithm: cfg.assertion_algorithm,
                x5t_s256: URL_SAFE_NO_PAD.encode(Sha256::digest(der.as_ref())),
                x5t: URL_SAFE_NO_PAD.encode(sha1),
            }
        } else if let Some(p) = &cfg.client_secret_file {
            Credential::Secret(read_secret("client secret file", p)?)
        } else if let Some(var) = &cfg.client_secret_env {
            Credential::Secret(
                std::env::var(var)
                    .map(|s| s.trim().to_string())
                    .map_err(|_| {
                        GraphError::Auth(format!("environment variable {var} is not set"))
                    })?,
            )
        } else if let Some(name) = &cfg.client_secret_credential {
            Credential::Secret(read_secret(
                "client secret credential",
                &credential_path(name)?,
            )?)
        } else {
            return Err(GraphError::Auth("no credential configured".into()));
        };
        Ok(TokenSource {
            token_url: format!("{}/{tenant_id}/oauth2/v2.0/token", cfg.authority()),
            client_id: cfg.client_id.clone(),
            scope: format!("{}/.default", cfg.graph_url()),
            credential,
            cache: tokio::sync::Mutex::new(None),
        })
    }

    /// A valid access token; `force` renews it even if the cached one looks valid
    /// (after a 401).
    pub async fn token(&self, http: &reqwest::Client, force: bool) -> Result<String, GraphError> {
        let mut cache = self.cache.lock().await;
        if !force && let Some((tok, expires, lifetime)) = cache.as_ref() {
            // Renew when a fifth of the lifetime (at most 5 minutes) is left.
            let margin = (*lifetime / 5).min(Duration::from_secs(300));
            if Instant::now() + margin < *expires {
                return Ok(tok.clone());
            }
        }
        let mut form: Vec<(&str, String)> = vec![
            ("grant_type", "client_credentials".into()),
            ("client_id", self.client_id.clone()),
            ("scope", self.scope.clone()),
        ];
        match &self.credential {
            Credential::Secret(s) => form.push(("client_secret", s.clone())),
            Credential::Certificate { .. } => {
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push(("client_assertion", self.assertion()?));
            }
        }
        let started = Instant::now();
        // Its own id too, to find a refused token request in Entra's sign-in logs.
        let client_request_id = uuid::Uuid::new_v4().to_string();
        let resp = http
            .post(&self.token_url)
            .header("client-request-id", &client_request_id)
            .header("return-client-request-id", "true")
            .form(&form)
            .send()
            .await
            .map_err(|e| GraphError::Transport(format!("token endpoint: {}", e.without_url())))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| GraphError::Transport(format!("token endpoint: {}", e.without_url())))?;
        if !status.is_success() {
            let err: TokenError = serde_json::from_str(&text).unwrap_or_default();
            // The description starts with the AADSTS code; it names no secret.
            let first_line = err.error_description.lines().next().unwrap_or("");
            return Err(GraphError::Auth(format!(
                "token request refused ({status}): {} {first_line} (client-request-id {client_request_id})",
                err.error
            )));
        }
        let tok: TokenResponse = serde_json::from_str(&text)
            .map_err(|e| GraphError::Auth(format!("token response not understood: {e}")))?;
        let lifetime = Duration::from_secs(tok.expires_in);
        *cache = Some((tok.access_token.clone(), started + lifetime, lifetime));
        Ok(tok.access_token)
    }

    fn assertion(&self) -> Result<String, GraphError> {
        let Credential::Certificate {
            key,
            algorithm,
            x5t_s256,
            x5t,
        } = &self.credential
        else {
            return Err(GraphError::Auth("no certificate configured".into()));
        };
        let mut header = match algorithm {
            AssertionAlgorithm::PS256 => {
                let mut h = Header::new(Algorithm::PS256);
                h.x5t_s256 = Some(x5t_s256.clone());
                h
            }
            AssertionAlgorithm::RS256 => {
                let mut h = Header::new(Algorithm::RS256);
                h.x5t = Some(x5t.clone());
                h
            }
        };
        header.typ = Some("JWT".into());
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            aud: &self.token_url,
            iss: &self.client_id,
            sub: &self.client_id,
            jti: uuid::Uuid::new_v4().to_string(),
            nbf: now,
            iat: now,
            exp: now + 300,
        };
        jsonwebtoken::encode(&header, &claims, key)
            .map_err(|e| GraphError::Auth(format!("cannot sign the client assertion: {e}")))
    }
}

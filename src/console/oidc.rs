//! Sign-in with OpenID Connect against Entra ID, through the `openidconnect`
//! crate: discovery, the authorization code flow with PKCE (S256), `state` and
//! `nonce`, and the ID token's signature and claims (issuer, audience, expiry,
//! nonce) checked before anything of it is believed. The HTTP calls go through
//! our reqwest client (rustls, no redirects followed).

use std::sync::Arc;
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, Client, ClientId, ClientSecret, CsrfToken,
    EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenFields, IssuerUrl,
    Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, StandardErrorResponse,
    StandardTokenResponse, TokenResponse,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::config::ConsoleConfig;

/// How long discovered provider metadata and keys are used before they are
/// fetched again (keys roll over; a token signed by an unknown key also
/// triggers a fresh discovery once).
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// Time allowed for each call to the identity provider.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The claims Entra adds that roles are mapped from.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EntraClaims {
    /// The person's object id in the directory.
    #[serde(default)]
    pub oid: Option<String>,
    /// The directory (tenant) id.
    #[serde(default)]
    pub tid: Option<String>,
    /// The person's UPN (v1 tokens; v2 sends `preferred_username`).
    #[serde(default)]
    pub upn: Option<String>,
    /// Object ids of the person's groups, when the app registration emits them.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl AdditionalClaims for EntraClaims {}

type EntraIdTokenFields = IdTokenFields<
    EntraClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type EntraTokenResponse = StandardTokenResponse<EntraIdTokenFields, CoreTokenType>;
type EntraClient = Client<
    EntraClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    EntraTokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Why a sign-in failed. Shown to the person (without secrets) and logged.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The console's settings cannot work (bad URL, unreadable secret).
    #[error("console sign-in is misconfigured: {0}")]
    Config(String),
    /// The identity provider could not be reached or answered wrongly.
    #[error("the identity provider could not be used: {0}")]
    Provider(String),
    /// The ID token was refused (signature, issuer, audience, expiry, nonce).
    #[error("the sign-in was refused: {0}")]
    Refused(String),
}

/// What a verified ID token says about the person.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// Object id (`oid`).
    pub object_id: String,
    /// UPN (`preferred_username`, else `upn`), when sent.
    pub upn: Option<String>,
    /// Display name (`name`), when sent.
    pub name: Option<String>,
    /// Group object ids (`groups`).
    pub groups: Vec<String>,
}

/// A sign-in to send the browser to, with what the callback must check.
#[derive(Debug)]
pub struct Authorize {
    /// The identity provider's authorize URL.
    pub url: String,
    /// The `state` sent.
    pub state: String,
    /// The `nonce` sent.
    pub nonce: String,
    /// The PKCE verifier kept for the token request.
    pub verifier: String,
}

/// The OpenID Connect relying party: settings, and the provider's metadata
/// discovered at the first sign-in and kept for an hour.
pub struct Oidc {
    issuer: String,
    client_id: String,
    secret: String,
    redirect_url: String,
    http: reqwest::Client,
    client: Mutex<Option<(Arc<EntraClient>, Instant)>>,
}

/// Reads a secret from a file or a systemd credential, trimmed; `what` names
/// the setting in errors.
fn read_secret(
    file: Option<&std::path::Path>,
    credential: Option<&str>,
    what: &str,
) -> Result<String, OidcError> {
    let path = match (file, credential) {
        (Some(f), _) => f.to_path_buf(),
        (None, Some(name)) => {
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                OidcError::Config(format!(
                    "{what} credential {name:?} needs systemd's LoadCredential= ($CREDENTIALS_DIRECTORY is not set)"
                ))
            })?;
            std::path::Path::new(&dir).join(name)
        }
        (None, None) => return Err(OidcError::Config(format!("{what} is not set"))),
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| OidcError::Config(format!("cannot read {what} {}: {e}", path.display())))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(OidcError::Config(format!(
            "{what} {} is empty",
            path.display()
        )));
    }
    Ok(secret.to_string())
}

impl Oidc {
    /// The relying party for `[console]`, reading the client secret now.
    pub fn new(cfg: &ConsoleConfig) -> Result<Oidc, OidcError> {
        let secret = read_secret(
            cfg.client_secret_file.as_deref(),
            cfg.client_secret_credential.as_deref(),
            "console client secret",
        )?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .build()
            .map_err(|e| OidcError::Config(format!("HTTP client: {e}")))?;
        Ok(Oidc {
            issuer: cfg.issuer.clone(),
            client_id: cfg.client_id.clone(),
            secret,
            redirect_url: cfg.redirect_url.clone(),
            http,
            client: Mutex::new(None),
        })
    }

    /// Sends one request of the `openidconnect` crate through our client.
    async fn send(
        http: reqwest::Client,
        req: openidconnect::HttpRequest,
    ) -> Result<openidconnect::HttpResponse, HttpError> {
        let req = reqwest::Request::try_from(req).map_err(|e| HttpError(e.to_string()))?;
        let resp = http
            .execute(req)
            .await
            .map_err(|e| HttpError(e.to_string()))?;
        let mut out = axum::http::Response::builder().status(resp.status());
        for (k, v) in resp.headers() {
            out = out.header(k, v);
        }
        let body = resp.bytes().await.map_err(|e| HttpError(e.to_string()))?;
        out.body(body.to_vec())
            .map_err(|e| HttpError(e.to_string()))
    }

    /// The client built from fresh or cached metadata; `refresh` forces discovery.
    async fn client(&self, refresh: bool) -> Result<Arc<EntraClient>, OidcError> {
        let mut slot = self.client.lock().await;
        if let Some((c, at)) = slot.as_ref()
            && !refresh
            && at.elapsed() < METADATA_TTL
        {
            return Ok(c.clone());
        }
        let issuer = IssuerUrl::new(self.issuer.clone())
            .map_err(|e| OidcError::Config(format!("console.issuer: {e}")))?;
        let http = self.http.clone();
        let send = move |r| Self::send(http.clone(), r);
        let metadata = CoreProviderMetadata::discover_async(issuer, &send)
            .await
            .map_err(|e| {
                OidcError::Provider(format!("discovery at {}: {}", self.issuer, chain(&e)))
            })?;
        let redirect = RedirectUrl::new(self.redirect_url.clone())
            .map_err(|e| OidcError::Config(format!("console.redirect_url: {e}")))?;
        let client = EntraClient::from_provider_metadata(
            metadata,
            ClientId::new(self.client_id.clone()),
            Some(ClientSecret::new(self.secret.clone())),
        )
        .set_redirect_uri(redirect);
        let client = Arc::new(client);
        *slot = Some((client.clone(), Instant::now()));
        Ok(client)
    }

    /// Starts a sign-in: the authorize URL with PKCE, state and nonce.
    pub async fn authorize(&self) -> Result<Authorize, OidcError> {
        let client = self.client(false).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge)
            .url();
        Ok(Authorize {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
        })
    }

    /// Redeems the authorization code and verifies the ID token it brings.
    pub async fn finish(
        &self,
        code: &str,
        verifier: &str,
        nonce: &str,
    ) -> Result<SignedIn, OidcError> {
        let client = self.client(false).await?;
        let http = self.http.clone();
        let send = move |r| Self::send(http.clone(), r);
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| OidcError::Provider(format!("no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_string()))
            .request_async(&send)
            .await
            .map_err(|e| OidcError::Refused(format!("the code was not redeemed: {}", chain(&e))))?;
        let id_token = token
            .id_token()
            .ok_or_else(|| OidcError::Refused("the token response has no ID token".into()))?;
        let nonce = Nonce::new(nonce.to_string());
        let claims = match id_token.claims(&client.id_token_verifier(), &nonce) {
            Ok(c) => c.clone(),
            Err(first) => {
                // The provider may have rolled its keys over: discover again once.
                let fresh = self.client(true).await?;
                id_token
                    .claims(&fresh.id_token_verifier(), &nonce)
                    .map_err(|_| OidcError::Refused(format!("ID token: {}", chain(&first))))?
                    .clone()
            }
        };
        let extra = claims.additional_claims();
        let object_id = extra.oid.clone().filter(|o| !o.is_empty()).ok_or_else(|| {
            OidcError::Refused("the ID token has no oid (object id) claim".into())
        })?;
        let upn = claims
            .preferred_username()
            .map(|u| u.to_string())
            .or_else(|| extra.upn.clone());
        let name = claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.to_string());
        Ok(SignedIn {
            object_id,
            upn,
            name,
            groups: extra.groups.clone(),
        })
    }
}

/// An HTTP failure talking to the identity provider.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

/// An error with its causes, one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

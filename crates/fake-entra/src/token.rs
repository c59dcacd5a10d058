//! The v2.0 token endpoint: client credentials with a client secret or a
//! certificate-signed client assertion (RFC 7523), errors as Entra writes them.

use crate::state::{Cert, State, TokenInfo};
use crate::util::{Resp, aad_timestamp, unix_now};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use x509_cert::Certificate;
use x509_cert::der::Decode;

/// The token endpoint URL for this tenant (what `aud` must be).
pub(crate) fn token_url(base: &str, tenant: &str) -> String {
    format!("{base}/{tenant}/oauth2/v2.0/token")
}

/// Longest assertion lifetime accepted: the documented 10 minutes plus a minute of skew.
const MAX_ASSERTION_LIFETIME: i64 = 600 + 60;

/// rsaEncryption.
const RSA_OID: &str = "1.2.840.113549.1.1.1";

/// Reads the first CERTIFICATE block of a PEM text: thumbprints and RSA key.
pub(crate) fn parse_certificate(pem: &str) -> Result<Cert, String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = pem.find(BEGIN).ok_or("no BEGIN CERTIFICATE line")? + BEGIN.len();
    let len = pem[start..].find(END).ok_or("no END CERTIFICATE line")?;
    let b64: String = pem[start..start + len]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = STANDARD
        .decode(b64)
        .map_err(|e| format!("certificate is not base64: {e}"))?;
    let cert = Certificate::from_der(&der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let spki = cert.tbs_certificate().subject_public_key_info();
    if spki.algorithm.oid.to_string() != RSA_OID {
        return Err(format!(
            "certificate key is not RSA (algorithm {})",
            spki.algorithm.oid
        ));
    }
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or("public key bit string is not byte aligned")?
        .to_vec();
    Ok(Cert {
        x5t_s256: URL_SAFE_NO_PAD.encode(Sha256::digest(&der)),
        x5t: URL_SAFE_NO_PAD.encode(Sha1::digest(&der)),
        rsa_public_key: key,
    })
}

/// `client_secret_basic` (RFC 6749 2.3.1, what OAuth libraries send by
/// default): an `Authorization: Basic` header's form-encoded client id and
/// secret fill `client_id` and `client_secret` when the form lacks them.
pub(crate) fn with_basic_auth(
    mut form: Vec<(String, String)>,
    authorization: Option<&str>,
) -> Vec<(String, String)> {
    let Some(b64) = authorization.and_then(|a| {
        a.strip_prefix("Basic ")
            .or_else(|| a.strip_prefix("basic "))
    }) else {
        return form;
    };
    let Some(pair) = STANDARD
        .decode(b64.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
    else {
        return form;
    };
    let Some((id, secret)) = pair.split_once(':') else {
        return form;
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    for (name, value) in [("client_id", decode(id)), ("client_secret", decode(secret))] {
        if !form.iter().any(|(k, v)| k == name && !v.is_empty()) {
            form.push((name.to_string(), value));
        }
    }
    form
}

/// An Entra token endpoint error.
pub(crate) struct AadError {
    status: u16,
    error: &'static str,
    code: u32,
    description: String,
}

/// Builds an Entra token endpoint error.
pub(crate) fn aad(
    status: u16,
    error: &'static str,
    code: u32,
    description: impl Into<String>,
) -> AadError {
    AadError {
        status,
        error,
        code,
        description: description.into(),
    }
}

impl AadError {
    /// The error as Entra's JSON answer.
    pub(crate) fn into_resp(self, correlation_id: &str) -> Resp {
        let trace_id = uuid::Uuid::new_v4().to_string();
        let ts = aad_timestamp();
        let desc = format!(
            "AADSTS{}: {}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {ts}",
            self.code, self.description
        );
        Resp::json(
            self.status,
            json!({
                "error": self.error,
                "error_description": desc,
                "error_codes": [self.code],
                "timestamp": ts,
                "trace_id": trace_id,
                "correlation_id": correlation_id,
                "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
            }),
        )
    }
}

/// The error for a missing form parameter.
pub(crate) fn missing(param: &str) -> AadError {
    aad(
        400,
        "invalid_request",
        900144,
        format!("The request body must contain the following parameter: '{param}'."),
    )
}

/// Handles `POST /{tenant}/oauth2/v2.0/token`.
pub(crate) fn handle(
    st: &mut State,
    base: &str,
    tenant: &str,
    path_tenant: &str,
    form: &[(String, String)],
    correlation_id: &str,
) -> Resp {
    match issue(st, base, tenant, path_tenant, form) {
        Ok(r) => r,
        Err(e) => e.into_resp(correlation_id),
    }
}

fn issue(
    st: &mut State,
    base: &str,
    tenant: &str,
    path_tenant: &str,
    form: &[(String, String)],
) -> Result<Resp, AadError> {
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    if !path_tenant.eq_ignore_ascii_case(tenant) {
        return Err(aad(
            400,
            "invalid_request",
            90002,
            format!(
                "Tenant '{path_tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        ));
    }
    let grant_type = get("grant_type").ok_or_else(|| missing("grant_type"))?;
    if grant_type == "authorization_code" {
        return crate::oidc_token::redeem(st, base, tenant, form);
    }
    if grant_type != "client_credentials" {
        return Err(aad(
            400,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant_type}'."),
        ));
    }
    let client_id = get("client_id").ok_or_else(|| missing("client_id"))?;
    let scope = get("scope").ok_or_else(|| missing("scope"))?;
    if !scope.ends_with("/.default") || scope.contains(' ') {
        return Err(aad(
            400,
            "invalid_scope",
            1002012,
            format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        ));
    }
    client_auth(st, base, tenant, client_id, form)?;
    let lifetime = st.token_lifetime;
    let now = unix_now();
    let claims = json!({
        "aud": "https://graph.microsoft.com",
        "iss": format!("https://sts.windows.net/{tenant}/"),
        "iat": now,
        "nbf": now,
        "exp": now + lifetime as i64,
        "appid": client_id,
        "idtyp": "app",
        "tid": tenant,
        "roles": [],
        "uti": uuid::Uuid::new_v4().to_string(),
        "ver": "1.0",
    });
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&st.token_key),
    )
    .map_err(|e| {
        aad(
            500,
            "server_error",
            90000,
            format!("cannot issue token: {e}"),
        )
    })?;
    st.tokens.insert(
        token.clone(),
        TokenInfo {
            client_id: client_id.to_string(),
            expires: Instant::now() + Duration::from_secs(lifetime),
            revoked: false,
        },
    );
    Ok(Resp::json(
        200,
        json!({
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        }),
    ))
}

/// Checks the client's credential (a secret or a certificate-signed assertion)
/// for both grants, with Entra's errors.
pub(crate) fn client_auth(
    st: &State,
    base: &str,
    tenant: &str,
    client_id: &str,
    form: &[(String, String)],
) -> Result<(), AadError> {
    let Some(app) = st.apps.get(client_id) else {
        return Err(aad(
            400,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        ));
    };
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let secret = get("client_secret");
    let assertion = get("client_assertion");
    match (secret, assertion) {
        (Some(_), Some(_)) => {
            return Err(aad(
                400,
                "invalid_request",
                90023,
                "Invalid request. The request presents both 'client_secret' and 'client_assertion'; send one client credential.",
            ));
        }
        (None, None) => {
            return Err(aad(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            ));
        }
        (Some(s), None) => {
            if !app.secrets.iter().any(|x| x == s) {
                return Err(aad(
                    401,
                    "invalid_client",
                    7000215,
                    format!(
                        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
                    ),
                ));
            }
        }
        (None, Some(a)) => {
            match get("client_assertion_type") {
                Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer") => {}
                Some(other) => {
                    return Err(aad(
                        400,
                        "invalid_request",
                        50027,
                        format!(
                            "Invalid client_assertion_type '{other}'; expected 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'."
                        ),
                    ));
                }
                None => return Err(missing("client_assertion_type")),
            }
            verify_assertion(app.certs.as_slice(), a, client_id, &token_url(base, tenant))?;
        }
    }
    Ok(())
}

fn invalid_signature(reason: &str, client_id: &str, thumbprint: &str) -> AadError {
    aad(
        401,
        "invalid_client",
        700027,
        format!(
            "Client assertion contains an invalid signature. [Reason - {reason}, Thumbprint of key used by client: '{thumbprint}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{client_id}'.]"
        ),
    )
}

fn malformed(reason: &str) -> AadError {
    aad(
        400,
        "invalid_request",
        50027,
        format!("JWT token is invalid or malformed. [Reason - {reason}]"),
    )
}

/// Hex thumbprint (upper case) of a base64url x5t value, for messages.
fn hex_thumbprint(b64: &str) -> String {
    URL_SAFE_NO_PAD
        .decode(b64.trim_end_matches('='))
        .map(|b| b.iter().map(|x| format!("{x:02X}")).collect())
        .unwrap_or_else(|_| b64.to_string())
}

fn verify_assertion(
    certs: &[Cert],
    assertion: &str,
    client_id: &str,
    audience: &str,
) -> Result<(), AadError> {
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|e| malformed(&format!("the assertion is not a JWT: {e}")))?;
    if !matches!(header.alg, Algorithm::RS256 | Algorithm::PS256) {
        return Err(invalid_signature(
            &format!(
                "The algorithm {:?} is not supported; use PS256 or RS256",
                header.alg
            ),
            client_id,
            "",
        ));
    }
    let cert = match (&header.x5t_s256, &header.x5t) {
        (Some(s256), _) => certs
            .iter()
            .find(|c| c.x5t_s256 == s256.trim_end_matches('='))
            .ok_or_else(|| {
                invalid_signature("The key was not found.", client_id, &hex_thumbprint(s256))
            })?,
        (None, Some(x5t)) => certs
            .iter()
            .find(|c| c.x5t == x5t.trim_end_matches('='))
            .ok_or_else(|| {
                invalid_signature("The key was not found.", client_id, &hex_thumbprint(x5t))
            })?,
        (None, None) => {
            return Err(invalid_signature(
                "The key was not found (the header carries neither x5t#S256 nor x5t).",
                client_id,
                "",
            ));
        }
    };
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation.leeway = 0;
    let data = jsonwebtoken::decode::<Value>(
        assertion,
        &DecodingKey::from_rsa_der(&cert.rsa_public_key),
        &validation,
    )
    .map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::InvalidSignature => invalid_signature(
            "The provided signature value did not match the expected signature value.",
            client_id,
            &hex_thumbprint(&cert.x5t),
        ),
        _ => malformed(&e.to_string()),
    })?;
    let claims = data.claims;
    let str_claim = |k: &str| claims.get(k).and_then(Value::as_str);
    if str_claim("iss") != Some(client_id) || str_claim("sub") != Some(client_id) {
        return Err(aad(
            401,
            "invalid_client",
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at https://docs.microsoft.com/en-us/azure/active-directory/develop/active-directory-certificate-credentials .",
        ));
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == audience,
        Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(audience)),
        _ => false,
    };
    if !aud_ok {
        return Err(aad(
            401,
            "invalid_client",
            700023,
            format!(
                "Client assertion audience claim does not match Realm issuer. Expected '{audience}'. Review the documentation at https://docs.microsoft.com/en-us/azure/active-directory/develop/active-directory-certificate-credentials ."
            ),
        ));
    }
    if str_claim("jti").is_none_or(str::is_empty) {
        return Err(malformed("the assertion has no jti claim"));
    }
    let now = unix_now();
    let Some(exp) = claims.get("exp").and_then(Value::as_i64) else {
        return Err(malformed("the assertion has no numeric exp claim"));
    };
    let nbf = match claims.get("nbf") {
        None => None,
        Some(v) => Some(
            v.as_i64()
                .ok_or_else(|| malformed("the nbf claim is not a number"))?,
        ),
    };
    let out_of_range =
        exp <= now || nbf.is_some_and(|n| n > now) || exp - now > MAX_ASSERTION_LIFETIME;
    if out_of_range {
        let fmt = |t: i64| crate::util::rfc3339(t);
        return Err(aad(
            401,
            "invalid_client",
            700024,
            format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}. Review the documentation at https://docs.microsoft.com/en-us/azure/active-directory/develop/active-directory-certificate-credentials .",
                fmt(now),
                nbf.map(fmt).unwrap_or_else(|| "(no nbf)".into()),
                fmt(exp)
            ),
        ));
    }
    Ok(())
}

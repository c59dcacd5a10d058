//! The authorization-code grant of the token endpoint (PKCE checked), the
//! RS256 ID tokens it issues and the fake's fixed signing keys.

use crate::oidc::IdTokenFault;
use crate::state::State;
use crate::token::{AadError, aad, client_auth, missing};
use crate::util::{Resp, unix_now};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// The key the fake signs ID tokens with and publishes (a test key: it is a fake's).
const SIGNING_KEY: &str = include_str!("oidc_key.pem");
/// A key the fake never publishes, for `set_oidc_signing_key_mismatch`.
const OTHER_KEY: &str = include_str!("oidc_other_key.pem");
/// How long an authorization code may wait to be redeemed.
const CODE_LIFETIME: Duration = Duration::from_secs(600);
/// ID token lifetime (Entra: one hour).
const ID_TOKEN_LIFETIME: i64 = 3600;

/// PKCS#1 DER of a PEM `RSA PRIVATE KEY`.
fn pem_der(pem: &str) -> Result<Vec<u8>, String> {
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .flat_map(str::chars)
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD
        .decode(b64)
        .map_err(|e| format!("signing key is not base64: {e}"))
}

/// Reads one DER TLV at `at`: (tag, content start, content end).
fn tlv(der: &[u8], at: usize) -> Option<(u8, usize, usize)> {
    let tag = *der.get(at)?;
    let first = *der.get(at + 1)? as usize;
    let (len, start) = if first < 0x80 {
        (first, at + 2)
    } else {
        let n = first & 0x7f;
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *der.get(at + 2 + i)? as usize;
        }
        (len, at + 2 + n)
    };
    (start + len <= der.len()).then_some((tag, start, start + len))
}

/// Modulus and exponent (big-endian, no leading zero) of a PKCS#1 private key:
/// `SEQUENCE { version, n, e, ... }`.
fn modulus_exponent(der: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (0x30, seq, _) = tlv(der, 0)? else {
        return None;
    };
    let (_, _, after_version) = tlv(der, seq)?;
    let (0x02, ns, ne) = tlv(der, after_version)? else {
        return None;
    };
    let (0x02, es, ee) = tlv(der, ne)? else {
        return None;
    };
    let strip = |b: &[u8]| {
        let i = b.iter().position(|x| *x != 0).unwrap_or(b.len());
        b[i..].to_vec()
    };
    Some((strip(&der[ns..ne]), strip(&der[es..ee])))
}

/// The published key's id: base64url of the SHA-256 of its modulus, shortened.
fn kid(n: &[u8]) -> String {
    let mut k = URL_SAFE_NO_PAD.encode(Sha256::digest(n));
    k.truncate(27);
    k
}

/// The published key as a JWK (`kid`, `kty`, `use`, `n`, `e`).
fn published_jwk(issuer: &str) -> Result<Value, String> {
    let der = pem_der(SIGNING_KEY)?;
    let (n, e) = modulus_exponent(&der).ok_or("signing key is not a PKCS#1 RSA key")?;
    Ok(json!({
        "kty": "RSA",
        "use": "sig",
        "kid": kid(&n),
        "n": URL_SAFE_NO_PAD.encode(&n),
        "e": URL_SAFE_NO_PAD.encode(&e),
        "issuer": issuer,
    }))
}

/// The JWKS document of the keys endpoint (Entra names each key's issuer).
pub(crate) fn jwks(base: &str, tenant: &str) -> Value {
    match published_jwk(&crate::oidc::issuer(base, tenant)) {
        Ok(k) => json!({ "keys": [k] }),
        Err(_) => json!({ "keys": [] }),
    }
}

fn invalid_grant(code: u32, message: impl Into<String>) -> AadError {
    aad(400, "invalid_grant", code, message)
}

/// `grant_type=authorization_code`: the client's credential, the code (single
/// use, ten minutes, bound to client and redirect URI), PKCE, then tokens.
pub(crate) fn redeem(
    st: &mut State,
    base: &str,
    tenant: &str,
    form: &[(String, String)],
) -> Result<Resp, AadError> {
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let client_id = get("client_id").ok_or_else(|| missing("client_id"))?;
    let code = get("code").ok_or_else(|| missing("code"))?;
    let redirect_uri = get("redirect_uri").ok_or_else(|| missing("redirect_uri"))?;
    client_auth(st, base, tenant, client_id, form)?;
    let Some(slot) = st.oidc.codes.iter_mut().find(|(a, _, _)| a.code == code) else {
        return Err(invalid_grant(
            9002313,
            "Invalid request. Request is malformed or invalid. The authorization code is not one this tenant issued.",
        ));
    };
    let (auth, user_id, issued) = slot;
    auth.redemption_attempts += 1;
    if auth.redeemed {
        return Err(invalid_grant(
            54005,
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
        ));
    }
    if issued.elapsed() > CODE_LIFETIME {
        return Err(invalid_grant(
            70008,
            "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
        ));
    }
    if auth.client_id != client_id {
        return Err(invalid_grant(
            70000,
            "Provided grant is invalid or malformed: the authorization code was issued to another application.",
        ));
    }
    if auth.redirect_uri != redirect_uri {
        return Err(invalid_grant(
            70000,
            "Provided grant is invalid or malformed: 'redirect_uri' must be the redirect URI the authorization code was sent to.",
        ));
    }
    if let Some(challenge) = &auth.code_challenge {
        let verifier = get("code_verifier").unwrap_or("");
        let computed = match auth.code_challenge_method.as_deref() {
            Some("S256") => URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())),
            _ => verifier.to_string(),
        };
        if verifier.is_empty() || &computed != challenge {
            return Err(invalid_grant(
                501481,
                "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
            ));
        }
    }
    auth.redeemed = true;
    let auth = auth.clone();
    let user_id = user_id.clone();
    tokens(st, base, tenant, &auth, &user_id)
}

fn server_error(e: impl std::fmt::Display) -> AadError {
    aad(
        500,
        "server_error",
        90000,
        format!("cannot issue token: {e}"),
    )
}

/// The token answer: an opaque-to-the-client access token and, with `openid`, an ID token.
fn tokens(
    st: &State,
    base: &str,
    tenant: &str,
    auth: &crate::OidcAuthorization,
    user_id: &str,
) -> Result<Resp, AadError> {
    let entry = st
        .users
        .get(user_id)
        .ok_or_else(|| invalid_grant(70000, "The user of this code no longer exists."))?;
    let now = unix_now();
    let access = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({
            "aud": "00000003-0000-0000-c000-000000000000",
            "iss": format!("https://sts.windows.net/{tenant}/"),
            "iat": now, "nbf": now, "exp": now + ID_TOKEN_LIFETIME,
            "appid": auth.client_id, "oid": user_id, "tid": tenant,
            "scp": auth.scope, "idtyp": "user", "ver": "1.0",
            "uti": uuid::Uuid::new_v4().to_string(),
        }),
        &EncodingKey::from_secret(&st.token_key),
    )
    .map_err(server_error)?;
    let mut body = json!({
        "token_type": "Bearer",
        "scope": auth.scope,
        "expires_in": ID_TOKEN_LIFETIME,
        "ext_expires_in": ID_TOKEN_LIFETIME,
        "access_token": access,
    });
    if auth.scope.split(' ').any(|s| s == "openid") {
        let mut groups: Vec<&String> = st
            .members
            .iter()
            .filter(|(_, m)| m.iter().any(|x| x == user_id))
            .map(|(g, _)| g)
            .collect();
        groups.sort();
        let mut claims = json!({
            "aud": auth.client_id,
            "iss": crate::oidc::issuer(base, tenant),
            "iat": now, "nbf": now, "exp": now + ID_TOKEN_LIFETIME,
            "name": entry.user.display_name,
            "nonce": auth.nonce,
            "oid": user_id,
            "preferred_username": entry.user.user_principal_name,
            "sub": pairwise_sub(tenant, &auth.client_id, user_id),
            "tid": tenant,
            "uti": uuid::Uuid::new_v4().simple().to_string(),
            "ver": "2.0",
            "groups": groups,
        });
        if auth.nonce.is_none()
            && let Some(o) = claims.as_object_mut()
        {
            o.remove("nonce");
        }
        apply_fault(&mut claims, st.oidc.fault, base, now);
        body["id_token"] = json!(sign(&claims, st.oidc.key_mismatch)?);
    }
    Ok(Resp::json(200, body))
}

/// Stable per user and application, as Entra's pairwise `sub`.
fn pairwise_sub(tenant: &str, client_id: &str, user_id: &str) -> String {
    let mut s = URL_SAFE_NO_PAD.encode(Sha256::digest(format!("{tenant}|{client_id}|{user_id}")));
    s.truncate(43);
    s
}

fn apply_fault(claims: &mut Value, fault: Option<IdTokenFault>, base: &str, now: i64) {
    match fault {
        None => {}
        Some(IdTokenFault::WrongNonce) => claims["nonce"] = json!("not-the-nonce-that-was-sent"),
        Some(IdTokenFault::WrongAudience) => {
            claims["aud"] = json!("00000000-0000-0000-0000-00000000bad0")
        }
        Some(IdTokenFault::Expired) => {
            claims["iat"] = json!(now - 2 * ID_TOKEN_LIFETIME);
            claims["nbf"] = json!(now - 2 * ID_TOKEN_LIFETIME);
            claims["exp"] = json!(now - ID_TOKEN_LIFETIME);
        }
        Some(IdTokenFault::WrongIssuer) => {
            claims["iss"] = json!(format!("{base}/00000000-0000-0000-0000-0000000000ff/v2.0"))
        }
    }
}

/// RS256 with the published key's `kid`; with `mismatch`, signed by the other key.
fn sign(claims: &Value, mismatch: bool) -> Result<String, AadError> {
    let published = pem_der(SIGNING_KEY).map_err(server_error)?;
    let (n, _) = modulus_exponent(&published)
        .ok_or_else(|| server_error("signing key is not a PKCS#1 RSA key"))?;
    let der = if mismatch {
        pem_der(OTHER_KEY).map_err(server_error)?
    } else {
        published
    };
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid(&n));
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_der(&der)).map_err(server_error)
}

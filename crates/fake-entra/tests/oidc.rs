//! The fake's OpenID Connect provider through real HTTP: discovery, JWKS,
//! the authorize endpoint (login_hint, sign-in form, errors) and the
//! authorization-code grant with PKCE, ID tokens verified against the JWKS.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fake_entra::{FakeTenant, Group, IdTokenFault, User};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::{Client, redirect::Policy};
use serde_json::Value;
use sha2::{Digest, Sha256};

const TENANT: &str = "11111111-2222-3333-4444-555555555555";
const APP: &str = "cccccccc-0000-0000-0000-000000000001";
const SECRET: &str = "console~secret";
const REDIRECT: &str = "http://127.0.0.1:9999/auth/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-verifier";
const ALICE: &str = "alice@contoso.test";

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn http() -> Client {
    Client::builder().redirect(Policy::none()).build().unwrap()
}

fn person(id: &str, upn: &str, enabled: bool) -> User {
    User {
        id: id.into(),
        user_principal_name: upn.into(),
        display_name: format!("Person {id}"),
        user_type: "Member".into(),
        account_enabled: enabled,
    }
}

async fn tenant() -> FakeTenant {
    let t = FakeTenant::start(TENANT).await;
    t.register_app_secret(APP, SECRET);
    t.register_app_redirect(APP, REDIRECT);
    t.add_user(person("u-alice", ALICE, true));
    t.add_user(person("u-bob", "bob@contoso.test", false));
    t.add_group(Group {
        id: "g-admins".into(),
        display_name: "Remediator admins".into(),
        dynamic: false,
        mail_enabled: false,
        security_enabled: true,
        on_premises_sync_enabled: false,
        is_assignable_to_role: false,
    });
    t.add_member("g-admins", "u-alice");
    t
}

fn authorize_url(t: &FakeTenant, extra: &[(&str, &str)]) -> String {
    let ch = challenge(VERIFIER);
    let mut q = url_pairs(&[
        ("client_id", APP),
        ("response_type", "code"),
        ("redirect_uri", REDIRECT),
        ("scope", "openid profile"),
        ("state", "st-123"),
        ("nonce", "n-456"),
        ("code_challenge", &ch),
        ("code_challenge_method", "S256"),
    ]);
    for (k, v) in extra {
        q.push('&');
        q.push_str(&url_pairs(&[(k, v)]));
    }
    format!("{}/{TENANT}/oauth2/v2.0/authorize?{q}", t.base_url())
}

fn url_pairs(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// The query parameters of a redirect's Location.
fn location_params(r: &reqwest::Response) -> Vec<(String, String)> {
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let (base, q) = loc.split_once('?').unwrap();
    assert_eq!(base, REDIRECT);
    form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
    p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// Signs alice in through login_hint; returns the code.
async fn code_for(t: &FakeTenant, extra: &[(&str, &str)]) -> String {
    let r = http().get(authorize_url(t, extra)).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let p = location_params(&r);
    assert_eq!(param(&p, "state"), Some("st-123"));
    param(&p, "code").unwrap().to_string()
}

async fn redeem(t: &FakeTenant, code: &str, verifier: &str) -> (u16, Value) {
    let r = http()
        .post(t.token_url())
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", APP),
            ("client_secret", SECRET),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn get_json(url: &str) -> Value {
    let r = http().get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.json().await.unwrap()
}

/// Verifies an ID token as a relying party does: JWKS key by kid, RS256, iss, aud, exp.
async fn verify(t: &FakeTenant, id_token: &str) -> Result<Value, jsonwebtoken::errors::Error> {
    let disco = get_json(&format!(
        "{}/.well-known/openid-configuration",
        t.oidc_issuer()
    ))
    .await;
    let jwks = get_json(disco["jwks_uri"].as_str().unwrap()).await;
    let kid = jsonwebtoken::decode_header(id_token)?.kid.unwrap();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("kid published");
    let dk =
        DecodingKey::from_rsa_components(key["n"].as_str().unwrap(), key["e"].as_str().unwrap())?;
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[APP]);
    v.set_issuer(&[disco["issuer"].as_str().unwrap()]);
    v.leeway = 0;
    jsonwebtoken::decode::<Value>(id_token, &dk, &v).map(|d| d.claims)
}

#[tokio::test]
async fn discovery_authorize_token_and_the_id_token_verifies() {
    let t = tenant().await;
    let base = t.base_url();
    let d = get_json(&format!(
        "{base}/{TENANT}/v2.0/.well-known/openid-configuration"
    ))
    .await;
    assert_eq!(d["issuer"], format!("{base}/{TENANT}/v2.0"));
    assert_eq!(
        d["authorization_endpoint"],
        format!("{base}/{TENANT}/oauth2/v2.0/authorize")
    );
    assert_eq!(d["token_endpoint"], t.token_url());
    assert_eq!(
        d["jwks_uri"],
        format!("{base}/{TENANT}/discovery/v2.0/keys")
    );
    assert_eq!(
        d["subject_types_supported"],
        serde_json::json!(["pairwise"])
    );
    assert_eq!(
        d["id_token_signing_alg_values_supported"],
        serde_json::json!(["RS256"])
    );
    assert!(d.get("code_challenge_methods_supported").is_none());
    let jwks = get_json(d["jwks_uri"].as_str().unwrap()).await;
    assert_eq!(jwks["keys"][0]["kty"], "RSA");
    assert_eq!(jwks["keys"][0]["use"], "sig");

    let code = code_for(&t, &[("login_hint", "ALICE@contoso.test")]).await;
    let (status, body) = redeem(&t, &code, VERIFIER).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "openid profile");
    assert!(body["access_token"].as_str().is_some_and(|s| !s.is_empty()));
    let claims = verify(&t, body["id_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(claims["oid"], "u-alice");
    assert_eq!(claims["tid"], TENANT);
    assert_eq!(claims["preferred_username"], ALICE);
    assert_eq!(claims["name"], "Person u-alice");
    assert_eq!(claims["nonce"], "n-456");
    assert_eq!(claims["ver"], "2.0");
    assert_eq!(claims["groups"], serde_json::json!(["g-admins"]));
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 3600);

    // sub is pairwise: the same for the same user and app, never the object id.
    let code2 = code_for(&t, &[("login_hint", ALICE)]).await;
    let (_, body2) = redeem(&t, &code2, VERIFIER).await;
    let claims2 = verify(&t, body2["id_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(claims2["sub"], claims["sub"]);
    assert_ne!(claims["sub"], "u-alice");

    let auths = t.oidc_authorizations();
    assert_eq!(auths.len(), 2);
    assert_eq!(auths[0].code, code);
    assert_eq!(auths[0].code_challenge_method.as_deref(), Some("S256"));
    assert_eq!(auths[0].code_challenge, Some(challenge(VERIFIER)));
    assert_eq!(auths[0].user_principal_name, ALICE);
    assert_eq!((auths[0].redemption_attempts, auths[0].redeemed), (1, true));
}

#[tokio::test]
async fn a_wrong_verifier_and_a_reused_code_are_refused() {
    let t = tenant().await;
    let code = code_for(&t, &[("login_hint", ALICE)]).await;
    let (status, body) = redeem(&t, &code, "another-verifier-of-enough-length-0123456789").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(body["error_codes"][0], 501481);
    assert!(body.get("id_token").is_none());
    let (status, _) = redeem(&t, &code, VERIFIER).await;
    assert_eq!(status, 200);
    let (status, body) = redeem(&t, &code, VERIFIER).await;
    assert_eq!(
        (status, body["error_codes"][0].as_u64()),
        (400, Some(54005))
    );
    let a = &t.oidc_authorizations()[0];
    assert_eq!((a.redemption_attempts, a.redeemed), (3, true));

    // Ten minutes is all a code lives.
    let code = code_for(&t, &[("login_hint", ALICE)]).await;
    t.expire_oidc_codes();
    let (status, body) = redeem(&t, &code, VERIFIER).await;
    assert_eq!(
        (status, body["error_codes"][0].as_u64()),
        (400, Some(70008))
    );

    // Bound to the redirect URI and the client's secret.
    let code = code_for(&t, &[("login_hint", ALICE)]).await;
    let r = http()
        .post(t.token_url())
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", APP),
            ("client_secret", "wrong"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http()
        .post(t.token_url())
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", APP),
            ("client_secret", SECRET),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9999/elsewhere"),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "invalid_grant");

    // client_secret_basic (what OAuth libraries send by default) works too.
    let r = http()
        .post(t.token_url())
        .basic_auth(APP, Some(SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let code = code_for(&t, &[("login_hint", ALICE)]).await;
    let r = http()
        .post(t.token_url())
        .basic_auth(APP, Some("wrong"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn unregistered_redirects_and_clients_get_an_error_page_not_a_redirect() {
    let t = tenant().await;
    let url = authorize_url(&t, &[("login_hint", ALICE)])
        .replace("9999%2Fauth%2Fcallback", "9999%2Fevil");
    let r = http().get(url).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none());
    assert!(r.text().await.unwrap().contains("AADSTS50011"));

    let url = authorize_url(&t, &[]).replace(APP, "dddddddd-0000-0000-0000-000000000009");
    let r = http().get(url).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("AADSTS700016"));

    // With a trusted redirect URI, errors go back to it.
    let url = authorize_url(&t, &[("login_hint", ALICE)])
        .replace("response_type=code", "response_type=token");
    let r = http().get(url).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let p = location_params(&r);
    assert_eq!(param(&p, "error"), Some("unsupported_response_type"));
    assert_eq!(param(&p, "state"), Some("st-123"));

    let r = http()
        .get(authorize_url(&t, &[("login_hint", "bob@contoso.test")]))
        .send()
        .await
        .unwrap();
    let p = location_params(&r);
    assert_eq!(param(&p, "error"), Some("access_denied"));
    assert!(
        param(&p, "error_description")
            .unwrap()
            .starts_with("AADSTS50057")
    );
    assert!(t.oidc_authorizations().is_empty());
}

#[tokio::test]
async fn the_sign_in_form_signs_the_typed_user_in() {
    let t = tenant().await;
    let url = authorize_url(&t, &[]);
    let r = http().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("id=\"login\"") && html.contains("id=\"signin\""));
    assert!(html.contains("method=\"post\""));

    let r = http()
        .post(&url)
        .form(&[("login", "nobody@contoso.test")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("AADSTS50034") && html.contains("id=\"login\""));

    let r = http()
        .post(&url)
        .form(&[("login", ALICE)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let code = param(&location_params(&r), "code").unwrap().to_string();
    let (status, _) = redeem(&t, &code, VERIFIER).await;
    assert_eq!(status, 200);

    // A test may choose who signs in next, whatever the request hints.
    t.add_user(person("u-carol", "carol@contoso.test", true));
    t.set_next_sign_in(Some("carol@contoso.test"));
    let code = code_for(&t, &[("login_hint", ALICE)]).await;
    let (_, body) = redeem(&t, &code, VERIFIER).await;
    let claims = verify(&t, body["id_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(claims["oid"], "u-carol");
    // Only once.
    let r = http().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // form_post answers a self-submitting form to the redirect URI.
    let r = http()
        .get(authorize_url(
            &t,
            &[("login_hint", ALICE), ("response_mode", "form_post")],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains(&format!("action=\"{REDIRECT}\"")));
    assert!(html.contains("name=\"code\"") && html.contains("value=\"st-123\""));
}

#[tokio::test]
async fn spoiled_id_tokens_fail_verification() {
    let t = tenant().await;
    async fn spoiled(t: &FakeTenant) -> Result<Value, jsonwebtoken::errors::Error> {
        let code = code_for(t, &[("login_hint", ALICE)]).await;
        let (status, body) = redeem(t, &code, VERIFIER).await;
        assert_eq!(status, 200);
        verify(t, body["id_token"].as_str().unwrap()).await
    }
    t.set_oidc_signing_key_mismatch(true);
    let e = spoiled(&t).await.unwrap_err();
    assert!(
        matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature),
        "{e:?}"
    );
    t.set_oidc_signing_key_mismatch(false);

    t.set_id_token_fault(Some(IdTokenFault::WrongAudience));
    let e = spoiled(&t).await.unwrap_err();
    assert!(
        matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidAudience),
        "{e:?}"
    );
    t.set_id_token_fault(Some(IdTokenFault::Expired));
    let e = spoiled(&t).await.unwrap_err();
    assert!(
        matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature),
        "{e:?}"
    );
    t.set_id_token_fault(Some(IdTokenFault::WrongIssuer));
    let e = spoiled(&t).await.unwrap_err();
    assert!(
        matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidIssuer),
        "{e:?}"
    );
    t.set_id_token_fault(Some(IdTokenFault::WrongNonce));
    let claims = spoiled(&t).await.unwrap();
    assert_ne!(claims["nonce"], "n-456");
    t.set_id_token_fault(None);
    assert_eq!(spoiled(&t).await.unwrap()["nonce"], "n-456");
}

//! Behaviour of the fake tenant through real HTTP.

use fake_entra::{FakeTenant, Fault, Group, RoleAssignment, User};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Client, Response};
use serde_json::{Value, json};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const TENANT: &str = "11111111-2222-3333-4444-555555555555";
const APP: &str = "aaaaaaaa-0000-0000-0000-000000000001";
const SECRET: &str = "s3cr3t~value";

fn fixture(name: &str) -> String {
    let p = format!(
        "{}/../../tests/fixtures/certs/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn user(id: &str) -> User {
    User {
        id: id.into(),
        user_principal_name: format!("{id}@contoso.test"),
        display_name: format!("User {id}"),
        user_type: "Member".into(),
        account_enabled: true,
    }
}

fn group(id: &str) -> Group {
    Group {
        id: id.into(),
        display_name: format!("Group {id}"),
        dynamic: false,
        mail_enabled: false,
        security_enabled: true,
        on_premises_sync_enabled: false,
        is_assignable_to_role: false,
    }
}

async fn tenant() -> FakeTenant {
    let t = FakeTenant::start(TENANT).await;
    t.register_app_secret(APP, SECRET);
    t
}

fn http() -> Client {
    Client::builder().build().unwrap()
}

async fn token_form(t: &FakeTenant, form: &[(&str, &str)]) -> Response {
    http()
        .post(format!("{}/{TENANT}/oauth2/v2.0/token", t.base_url()))
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn token(t: &FakeTenant) -> String {
    let scope = format!("{}/.default", t.base_url());
    let r = token_form(
        t,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("client_secret", SECRET),
            ("scope", &scope),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["access_token"].as_str().unwrap().to_string()
}

/// Sends a Graph request; returns status, headers and JSON body (Null if empty).
#[tokio::test]
async fn batch_items_run_one_after_another_unless_asked_in_parallel() {
    let t = tenant().await;
    let tok = token(&t).await;
    for i in 0..5 {
        t.add_user(user(&format!("u{i}")));
    }
    t.inject(Fault::Latency {
        matching: "/users/".into(),
        delay: Duration::from_millis(300),
    });
    // 3 depends on 2, which fails: 424 in both modes; the others run.
    let body = json!({"requests": [
        {"id": "0", "method": "GET", "url": "/users/u0"},
        {"id": "1", "method": "GET", "url": "/users/u1"},
        {"id": "2", "method": "GET", "url": "/users/missing"},
        {"id": "3", "method": "POST", "url": "/users/u3/revokeSignInSessions", "dependsOn": ["2"]},
        {"id": "4", "method": "POST", "url": "/users/u4/revokeSignInSessions", "dependsOn": ["0"]},
    ]});
    let mut took = Vec::new();
    for parallel in [false, true] {
        t.set_parallel_batch_items(parallel);
        let started = Instant::now();
        let (s, _, v) = graph(&t, &tok, "POST", "/$batch", Some(body.clone())).await;
        took.push(started.elapsed());
        assert_eq!(s, 200);
        let status = |id: &str| {
            v["responses"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["id"] == id)
                .unwrap()["status"]
                .clone()
        };
        assert_eq!(
            [
                status("0"),
                status("1"),
                status("2"),
                status("3"),
                status("4")
            ],
            [json!(200), json!(200), json!(404), json!(424), json!(200)],
            "parallel = {parallel}"
        );
    }
    assert_eq!(t.revocations("u3"), 0);
    assert_eq!(t.revocations("u4"), 2);
    // One after another: 4 items x 300 ms. In parallel: two waves (0, 1, 2
    // then 4, after 0), 600 ms.
    assert!(took[0] >= Duration::from_millis(1200), "{took:?}");
    assert!(took[1] >= Duration::from_millis(600), "{took:?}");
    assert!(took[1] < Duration::from_millis(1100), "{took:?}");
}

async fn graph(
    t: &FakeTenant,
    tok: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut rb = http()
        .request(
            method.parse().unwrap(),
            format!("{}/v1.0{path}", t.base_url()),
        )
        .bearer_auth(tok);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    };
    (status, headers, v)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A client assertion; `alg` PS256 uses x5t#S256, RS256 uses x5t.
fn assertion(t: &FakeTenant, key_pem: &str, alg: Algorithm, claims: Value) -> String {
    use base64::Engine;
    use sha2::Digest;
    let cert = fixture("app-cert.pem");
    let b64: String = cert.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let mut h = Header::new(alg);
    match alg {
        Algorithm::PS256 => {
            h.x5t_s256 = Some(
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&der)),
            )
        }
        _ => {
            h.x5t = Some(
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha1::Sha1::digest(&der)),
            )
        }
    }
    let mut c = json!({
        "aud": t.token_url(),
        "iss": APP,
        "sub": APP,
        "jti": "3c1e0f6a-1111-2222-3333-444444444444",
        "nbf": now(),
        "iat": now(),
        "exp": now() + 600,
    });
    for (k, v) in claims.as_object().unwrap() {
        c[k] = v.clone();
    }
    let key = EncodingKey::from_rsa_pem(key_pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&h, &c, &key).unwrap()
}

async fn assertion_token(t: &FakeTenant, jwt: &str) -> (u16, Value) {
    let scope = format!("{}/.default", t.base_url());
    let r = token_form(
        t,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("scope", &scope),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", jwt),
        ],
    )
    .await;
    (r.status().as_u16(), r.json().await.unwrap())
}

fn aadsts(v: &Value) -> u64 {
    v["error_codes"][0].as_u64().unwrap()
}

#[tokio::test]
async fn secret_tokens_and_bearer_checks() {
    let t = tenant().await;
    t.add_user(user("u1"));
    let scope = format!("{}/.default", t.base_url());

    let r = token_form(
        &t,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("client_secret", SECRET),
            ("scope", &scope),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3600);
    let tok = v["access_token"].as_str().unwrap().to_string();

    let r = token_form(
        &t,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("client_secret", "wrong"),
            ("scope", &scope),
        ],
    )
    .await;
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "invalid_client");
    assert_eq!(aadsts(&v), 7000215);
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS7000215: Invalid client secret provided.")
    );

    let r = token_form(
        &t,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "unknown-app"),
            ("client_secret", SECRET),
            ("scope", &scope),
        ],
    )
    .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "unauthorized_client");
    assert_eq!(aadsts(&v), 700016);

    let r = token_form(
        &t,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("client_secret", SECRET),
            ("scope", "https://graph.microsoft.com/User.Read.All"),
        ],
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_scope");

    // The token works; request-id is set and client-request-id echoed.
    let r = http()
        .get(format!("{}/v1.0/users/u1", t.base_url()))
        .bearer_auth(&tok)
        .header("client-request-id", "my-crid")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["client-request-id"], "my-crid");
    assert!(r.headers().contains_key("request-id"));

    // No token, unknown token, expired tokens: 401 InvalidAuthenticationToken.
    let r = http()
        .get(format!("{}/v1.0/users/u1", t.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (s, _, v) = graph(&t, "not-a-token", "GET", "/users/u1", None).await;
    assert_eq!(s, 401);
    assert_eq!(v["error"]["code"], "InvalidAuthenticationToken");

    t.set_token_lifetime(120);
    let r = token_form(
        &t,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("client_secret", SECRET),
            ("scope", &scope),
        ],
    )
    .await;
    assert_eq!(r.json::<Value>().await.unwrap()["expires_in"], 120);

    t.expire_all_tokens();
    let (s, h, v) = graph(&t, &tok, "GET", "/users/u1", None).await;
    assert_eq!(s, 401);
    assert_eq!(v["error"]["code"], "InvalidAuthenticationToken");
    assert_eq!(
        v["error"]["message"],
        "Access token has expired or is not yet valid."
    );
    let inner = &v["error"]["innerError"];
    assert_eq!(inner["request-id"].as_str(), h["request-id"].to_str().ok());
    assert!(inner["date"].is_string() && inner["client-request-id"].is_string());
    // A new token works again.
    let fresh = token(&t).await;
    assert_eq!(graph(&t, &fresh, "GET", "/users/u1", None).await.0, 200);
}

#[tokio::test]
async fn certificate_assertions() {
    let t = tenant().await;
    t.register_app_certificate(APP, &fixture("app-cert.pem"));
    let key = fixture("app-key.pem");

    // PS256 + x5t#S256 and RS256 + x5t are both accepted.
    let (s, v) = assertion_token(&t, &assertion(&t, &key, Algorithm::PS256, json!({}))).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["access_token"].is_string());
    let (s, v) = assertion_token(&t, &assertion(&t, &key, Algorithm::RS256, json!({}))).await;
    assert_eq!(s, 200, "{v}");

    // Signed by another key, claiming the trusted certificate: 700027.
    let other = fixture("other-key.pem");
    let (s, v) = assertion_token(&t, &assertion(&t, &other, Algorithm::PS256, json!({}))).await;
    assert_eq!((s, aadsts(&v)), (401, 700027), "{v}");
    assert_eq!(v["error"], "invalid_client");

    // Expired, not yet valid, or too long-lived: 700024.
    for claims in [
        json!({"exp": now() - 10, "nbf": now() - 700}),
        json!({"nbf": now() + 120}),
        json!({"exp": now() + 3600}),
    ] {
        let (s, v) = assertion_token(&t, &assertion(&t, &key, Algorithm::PS256, claims)).await;
        assert_eq!((s, aadsts(&v)), (401, 700024), "{v}");
    }
    // Wrong audience, wrong issuer, no jti.
    let (_, v) = assertion_token(
        &t,
        &assertion(
            &t,
            &key,
            Algorithm::PS256,
            json!({"aud": "https://login.microsoftonline.com/x/oauth2/v2.0/token"}),
        ),
    )
    .await;
    assert_eq!(aadsts(&v), 700023);
    let (_, v) = assertion_token(
        &t,
        &assertion(&t, &key, Algorithm::PS256, json!({"iss": "someone-else"})),
    )
    .await;
    assert_eq!(aadsts(&v), 700021);
    let (s, v) = assertion_token(
        &t,
        &assertion(&t, &key, Algorithm::PS256, json!({"jti": ""})),
    )
    .await;
    assert_eq!((s, aadsts(&v)), (400, 50027));

    // A certificate the app does not trust (thumbprint unknown): 700027.
    let t2 = tenant().await;
    t2.register_app_certificate(APP, &fixture("other-cert.pem"));
    let (s, v) = assertion_token(&t2, &assertion(&t2, &key, Algorithm::PS256, json!({}))).await;
    assert_eq!((s, aadsts(&v)), (401, 700027), "{v}");
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .contains("The key was not found")
    );
}

#[tokio::test]
async fn batch_is_shuffled_and_dependents_fail_with_424() {
    let t = tenant().await;
    let tok = token(&t).await;
    for i in 0..6 {
        t.add_user(user(&format!("u{i}")));
    }
    let requests: Vec<Value> = (0..6)
        .map(|i| json!({"id": format!("{i}"), "method": "GET", "url": format!("/users/u{i}?$select=id,accountEnabled")}))
        .collect();
    let (s, _, v) = graph(
        &t,
        &tok,
        "POST",
        "/$batch",
        Some(json!({"requests": requests})),
    )
    .await;
    assert_eq!(s, 200);
    let resp = v["responses"].as_array().unwrap();
    let ids: Vec<&str> = resp.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_ne!(
        ids,
        vec!["0", "1", "2", "3", "4", "5"],
        "responses must not keep request order"
    );
    for r in resp {
        assert_eq!(r["status"], 200);
        assert_eq!(r["body"]["id"], format!("u{}", r["id"].as_str().unwrap()));
        assert_eq!(r["body"]["accountEnabled"], true);
    }
    let recorded = t.requests();
    assert_eq!(recorded.iter().filter(|r| r.in_batch).count(), 6);
    assert!(
        recorded
            .iter()
            .any(|r| !r.in_batch && r.path == "/v1.0/$batch")
    );
    assert!(
        recorded
            .iter()
            .any(|r| r.in_batch && r.path == "/v1.0/users/u3" && r.status == 200)
    );

    // 1 fails (404), 2 depends on 1 -> 424 and is not executed; 3 depends on 0 -> runs.
    let body = json!({"requests": [
        {"id": "0", "method": "PATCH", "url": "/users/u0", "headers": {"Content-Type": "application/json"}, "body": {"accountEnabled": false}},
        {"id": "1", "method": "PATCH", "url": "/users/missing", "headers": {"Content-Type": "application/json"}, "body": {"accountEnabled": false}},
        {"id": "2", "method": "POST", "url": "/users/u2/revokeSignInSessions", "dependsOn": ["1"]},
        {"id": "3", "method": "POST", "url": "/users/u0/revokeSignInSessions", "dependsOn": ["0"]},
    ]});
    let (s, _, v) = graph(&t, &tok, "POST", "/$batch", Some(body)).await;
    assert_eq!(s, 200);
    let by_id = |id: &str| {
        v["responses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(by_id("0")["status"], 204);
    assert_eq!(by_id("1")["status"], 404);
    assert_eq!(
        by_id("1")["body"]["error"]["code"],
        "Request_ResourceNotFound"
    );
    assert_eq!(by_id("2")["status"], 424);
    assert_eq!(by_id("3")["status"], 200);
    assert_eq!(t.revocations("u2"), 0);
    assert_eq!(t.revocations("u0"), 1);
    assert!(!t.user("u0").unwrap().account_enabled);

    // More than 20 requests: 400 for the whole batch.
    let many: Vec<Value> = (0..21)
        .map(|i| json!({"id": format!("{i}"), "method": "GET", "url": "/users/u0"}))
        .collect();
    let (s, _, v) = graph(&t, &tok, "POST", "/$batch", Some(json!({"requests": many}))).await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["code"], "BadRequest");
}

#[tokio::test]
async fn throttling_with_and_without_retry_after() {
    let t = tenant().await;
    let tok = token(&t).await;
    t.add_user(user("u1"));

    t.inject(Fault::Throttle {
        matching: "GET /v1.0/users/u1".into(),
        count: 2,
        retry_after: Some(1.5),
    });
    for _ in 0..2 {
        let (s, h, v) = graph(&t, &tok, "GET", "/users/u1", None).await;
        assert_eq!(s, 429);
        assert_eq!(h["retry-after"], "1.5");
        assert_eq!(v["error"]["code"], "TooManyRequests");
    }
    assert_eq!(graph(&t, &tok, "GET", "/users/u1", None).await.0, 200);

    t.inject(Fault::Throttle {
        matching: "".into(),
        count: 1,
        retry_after: None,
    });
    // An empty pattern spares the token endpoint (and the $batch envelope).
    let tok = token(&t).await;
    let (s, h, _) = graph(&t, &tok, "GET", "/users/u1", None).await;
    assert_eq!(s, 429);
    assert!(!h.contains_key("retry-after"));

    // Inside a batch the item is throttled, with Retry-After in its headers.
    t.inject(Fault::Throttle {
        matching: "POST /v1.0/users/u1/revokeSignInSessions".into(),
        count: 1,
        retry_after: Some(2.0),
    });
    let body = json!({"requests": [
        {"id": "a", "method": "POST", "url": "/users/u1/revokeSignInSessions"},
        {"id": "b", "method": "GET", "url": "/users/u1"},
    ]});
    let (s, _, v) = graph(&t, &tok, "POST", "/$batch", Some(body)).await;
    assert_eq!(s, 200);
    let a = v["responses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "a")
        .unwrap();
    assert_eq!(a["status"], 429);
    assert_eq!(a["headers"]["Retry-After"], "2");
    assert_eq!(t.revocations("u1"), 0);

    // 5xx faults.
    t.inject(Fault::ServerError {
        matching: "GET /v1.0/users".into(),
        count: 1,
        status: 503,
    });
    let (s, _, v) = graph(&t, &tok, "GET", "/users/u1", None).await;
    assert_eq!(s, 503);
    assert_eq!(v["error"]["code"], "serviceNotAvailable");

    // Rate limit: the third request within a second gets 429 with Retry-After 1.
    t.clear_faults();
    t.inject(Fault::RateLimit { per_second: 2 });
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let (s, h, _) = graph(&t, &tok, "GET", "/users/u1", None).await;
        statuses.push(s);
        last = h.get("retry-after").cloned();
    }
    assert_eq!(statuses, vec![200, 200, 429]);
    assert_eq!(last.unwrap(), "1");

    // Latency.
    t.clear_faults();
    t.inject(Fault::Latency {
        matching: "GET /v1.0/users/u1".into(),
        delay: Duration::from_millis(150),
    });
    let started = Instant::now();
    assert_eq!(graph(&t, &tok, "GET", "/users/u1", None).await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

fn policy() -> Value {
    json!({
        "displayName": "Block legacy auth",
        "state": "enabledForReportingButNotEnforced",
        "conditions": {
            "clientAppTypes": ["exchangeActiveSync", "other"],
            "applications": {"includeApplications": ["All"]},
            "users": {"includeUsers": ["All"], "excludeUsers": ["u-breakglass"]}
        },
        "grantControls": {"operator": "OR", "builtInControls": ["block"]}
    })
}

#[tokio::test]
async fn conditional_access_one_request_per_second() {
    let t = tenant().await;
    let tok = token(&t).await;
    let (s, h, created) = graph(
        &t,
        &tok,
        "POST",
        "/identity/conditionalAccess/policies",
        Some(policy()),
    )
    .await;
    assert_eq!(s, 201);
    assert!(
        h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let id = created["id"].as_str().unwrap().to_string();
    assert!(created["createdDateTime"].is_string());
    assert_eq!(created["modifiedDateTime"], Value::Null);

    // A second CA request within the same second: 429 and no Retry-After.
    let path = format!("/identity/conditionalAccess/policies/{id}");
    let patch = json!({"state": "enabled", "conditions": {"users": {"excludeUsers": []}}});
    let (s, h, v) = graph(&t, &tok, "PATCH", &path, Some(patch.clone())).await;
    assert_eq!(s, 429);
    assert!(!h.contains_key("retry-after"));
    assert_eq!(v["error"]["code"], "TooManyRequests");

    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(graph(&t, &tok, "PATCH", &path, Some(patch)).await.0, 204);
    let p = &t.ca_policies()[0];
    assert_eq!(p["state"], "enabled");
    // Objects merge, arrays given replace.
    assert_eq!(p["conditions"]["users"]["includeUsers"], json!(["All"]));
    assert_eq!(p["conditions"]["users"]["excludeUsers"], json!([]));
    assert_eq!(
        p["conditions"]["clientAppTypes"],
        json!(["exchangeActiveSync", "other"])
    );
    assert!(p["modifiedDateTime"].is_string());

    // Reads count too (as documented) unless turned off.
    assert_eq!(graph(&t, &tok, "GET", &path, None).await.0, 429);
    t.set_ca_read_throttling(false);
    let (s, _, v) = graph(&t, &tok, "GET", &path, None).await;
    assert_eq!(s, 200);
    assert_eq!(v["id"], id.as_str());

    t.delete_ca_policy_out_of_band(&id);
    assert_eq!(graph(&t, &tok, "GET", &path, None).await.0, 404);
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(graph(&t, &tok, "DELETE", &path, None).await.0, 404);
}

#[tokio::test]
async fn membership_ref_rules() {
    let t = tenant().await;
    let tok = token(&t).await;
    t.add_user(user("u1"));
    t.add_group(group("g1"));
    t.add_group(Group {
        dynamic: true,
        ..group("gdyn")
    });
    t.add_member("gdyn", "u1");
    let add = json!({"@odata.id": "https://graph.microsoft.com/v1.0/directoryObjects/u1"});

    assert_eq!(
        graph(
            &t,
            &tok,
            "POST",
            "/groups/g1/members/$ref",
            Some(add.clone())
        )
        .await
        .0,
        204
    );
    assert_eq!(t.members("g1"), vec!["u1".to_string()]);
    let (s, _, v) = graph(
        &t,
        &tok,
        "POST",
        "/groups/g1/members/$ref",
        Some(add.clone()),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["code"], "Request_BadRequest");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already exist")
    );

    let (s, _, v) = graph(&t, &tok, "GET", "/groups/g1/members?$select=id", None).await;
    assert_eq!(s, 200);
    assert_eq!(
        v["value"],
        json!([{"@odata.type": "#microsoft.graph.user", "id": "u1"}])
    );

    // DELETE without /$ref is not a membership removal: refused, recorded, member kept.
    let (s, _, v) = graph(&t, &tok, "DELETE", "/groups/g1/members/u1", None).await;
    assert_eq!(s, 403);
    assert_eq!(v["error"]["code"], "Authorization_RequestDenied");
    assert_eq!(t.members("g1"), vec!["u1".to_string()]);
    assert!(
        t.requests()
            .iter()
            .any(|r| r.method == "DELETE" && r.path == "/v1.0/groups/g1/members/u1")
    );

    assert_eq!(
        graph(&t, &tok, "DELETE", "/groups/g1/members/u1/$ref", None)
            .await
            .0,
        204
    );
    assert!(t.members("g1").is_empty());
    let (s, _, v) = graph(&t, &tok, "DELETE", "/groups/g1/members/u1/$ref", None).await;
    assert_eq!(s, 404);
    assert_eq!(v["error"]["code"], "Request_ResourceNotFound");

    // Dynamic groups refuse both.
    assert_eq!(
        graph(&t, &tok, "DELETE", "/groups/gdyn/members/u1/$ref", None)
            .await
            .0,
        400
    );
    assert_eq!(
        graph(&t, &tok, "POST", "/groups/gdyn/members/$ref", Some(add))
            .await
            .0,
        400
    );
    assert_eq!(t.members("gdyn"), vec!["u1".to_string()]);
    let (_, _, g) = graph(&t, &tok, "GET", "/groups/gdyn", None).await;
    assert_eq!(g["groupTypes"], json!(["DynamicMembership"]));
}

#[tokio::test]
async fn users_roles_and_pim() {
    let t = tenant().await;
    let tok = token(&t).await;
    t.add_user(user("u1"));

    // Default property set has no accountEnabled / userType; $select brings them.
    let (_, _, v) = graph(&t, &tok, "GET", "/users/u1", None).await;
    assert!(v.get("accountEnabled").is_none());
    assert_eq!(v["userPrincipalName"], "u1@contoso.test");
    let (_, _, v) = graph(
        &t,
        &tok,
        "GET",
        "/users/u1?$select=id,userPrincipalName,displayName,userType,accountEnabled",
        None,
    )
    .await;
    assert_eq!(v["accountEnabled"], true);
    assert_eq!(v["userType"], "Member");
    assert_eq!(graph(&t, &tok, "GET", "/users/nobody", None).await.0, 404);

    assert_eq!(
        graph(
            &t,
            &tok,
            "PATCH",
            "/users/u1",
            Some(json!({"accountEnabled": false}))
        )
        .await
        .0,
        204
    );
    assert!(!t.user("u1").unwrap().account_enabled);
    assert_eq!(
        graph(
            &t,
            &tok,
            "PATCH",
            "/users/u1",
            Some(json!({"accountEnabled": "no"}))
        )
        .await
        .0,
        400
    );

    let (s, _, v) = graph(&t, &tok, "POST", "/users/u1/revokeSignInSessions", None).await;
    assert_eq!((s, v["value"].clone()), (200, json!(true)));
    assert_eq!(t.revocations("u1"), 1);

    t.add_role_assignment(RoleAssignment {
        id: "ra-direct".into(),
        principal_id: "u1".into(),
        role_definition_id: "62e90394-69f5-4237-9190-012177145e10".into(),
        directory_scope_id: "/".into(),
        pim_managed: false,
    });
    t.add_role_assignment(RoleAssignment {
        id: "ra-pim".into(),
        principal_id: "u1".into(),
        role_definition_id: "194ae4cb-b126-40b2-bd5b-6091b380977d".into(),
        directory_scope_id: "/".into(),
        pim_managed: true,
    });
    let (s, _, v) = graph(
        &t,
        &tok,
        "GET",
        "/roleManagement/directory/roleAssignments?$filter=principalId%20eq%20'u1'",
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["value"].as_array().unwrap().len(), 2);
    let (_, _, v) = graph(&t, &tok, "GET", "/roleManagement/directory/roleAssignments?$filter=roleDefinitionId eq '62e90394-69f5-4237-9190-012177145e10'", None).await;
    assert_eq!(v["value"][0]["id"], "ra-direct");

    let (_, _, v) = graph(
        &t,
        &tok,
        "GET",
        "/roleManagement/directory/roleAssignmentScheduleInstances?$filter=principalId eq 'u1'",
        None,
    )
    .await;
    let inst = v["value"].as_array().unwrap();
    assert_eq!(inst.len(), 1);
    assert_eq!(inst[0]["roleAssignmentOriginId"], "ra-pim");
    assert_eq!(inst[0]["assignmentType"], "Assigned");
    assert_eq!(inst[0]["memberType"], "Direct");

    let (s, _, v) = graph(
        &t,
        &tok,
        "POST",
        "/roleManagement/directory/roleAssignmentScheduleRequests",
        Some(json!({"action": "adminRemove", "principalId": "u1", "roleDefinitionId": "194ae4cb-b126-40b2-bd5b-6091b380977d", "directoryScopeId": "/", "justification": "remediation"})),
    )
    .await;
    assert_eq!(s, 201);
    assert_eq!(v["status"], "Revoked");
    assert_eq!(v["justification"], "remediation");
    assert!(t.role_assignments().iter().all(|a| a.id != "ra-pim"));

    // Delete and re-create a direct assignment.
    assert_eq!(
        graph(
            &t,
            &tok,
            "DELETE",
            "/roleManagement/directory/roleAssignments/ra-direct",
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        graph(
            &t,
            &tok,
            "DELETE",
            "/roleManagement/directory/roleAssignments/ra-direct",
            None
        )
        .await
        .0,
        404
    );
    let create = json!({"principalId": "u1", "roleDefinitionId": "62e90394-69f5-4237-9190-012177145e10", "directoryScopeId": "/"});
    let (s, _, v) = graph(
        &t,
        &tok,
        "POST",
        "/roleManagement/directory/roleAssignments",
        Some(create.clone()),
    )
    .await;
    assert_eq!(s, 201);
    let new_id = v["id"].as_str().unwrap().to_string();
    let (s, _, _) = graph(
        &t,
        &tok,
        "GET",
        &format!("/roleManagement/directory/roleAssignments/{new_id}"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        graph(
            &t,
            &tok,
            "POST",
            "/roleManagement/directory/roleAssignments",
            Some(create)
        )
        .await
        .0,
        400
    );

    // Unknown routes: 404 with a Graph error body.
    let (s, _, v) = graph(&t, &tok, "GET", "/nothingHere", None).await;
    assert_eq!(s, 404);
    assert!(v["error"]["code"].is_string());
}

#[tokio::test]
async fn batch_items_have_their_own_request_ids() {
    let t = tenant().await;
    let tok = token(&t).await;
    t.add_user(user("u1"));
    t.add_user(user("u2"));
    let requests = json!([
        {"id": "a", "method": "GET", "url": "/users/u1", "headers": {"client-request-id": "item-a"}},
        {"id": "b", "method": "GET", "url": "/users/u2"},
    ]);
    let (s, headers, v) = graph(
        &t,
        &tok,
        "POST",
        "/$batch",
        Some(json!({"requests": requests})),
    )
    .await;
    assert_eq!(s, 200);
    let envelope = headers["request-id"].to_str().unwrap().to_string();
    let resp = v["responses"].as_array().unwrap();
    let item = |id: &str| resp.iter().find(|r| r["id"] == id).unwrap()["headers"].clone();
    let (a, b) = (item("a"), item("b"));
    assert_eq!(a["client-request-id"], "item-a");
    // Without its own, an item echoes the envelope's client-request-id.
    assert_eq!(
        b["client-request-id"].as_str().unwrap(),
        headers["client-request-id"].to_str().unwrap()
    );
    let (ra, rb) = (
        a["request-id"].as_str().unwrap(),
        b["request-id"].as_str().unwrap(),
    );
    assert!(ra != rb && ra != envelope && rb != envelope);
}

#[tokio::test]
async fn member_of_and_sign_in_sessions_valid_from() {
    let t = tenant().await;
    let tok = token(&t).await;
    t.add_user(user("u1"));
    let mut outer = group("g-outer");
    outer.display_name = "Break Glass".into();
    t.add_group(outer);
    t.add_group(group("g-inner"));
    t.add_member("g-outer", "g-inner");
    t.add_member("g-inner", "u1");
    let ids = |v: &Value| {
        let mut ids: Vec<String> = v["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let (s, _, v) = graph(&t, &tok, "GET", "/users/u1/memberOf?$select=id", None).await;
    assert_eq!(s, 200);
    assert_eq!(ids(&v), vec!["g-inner"]);
    let (s, _, v) = graph(
        &t,
        &tok,
        "GET",
        "/users/u1/transitiveMemberOf?$select=id,displayName&$top=1",
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["value"].as_array().unwrap().len(), 1);
    assert_eq!(v["value"][0]["@odata.type"], "#microsoft.graph.group");
    let next = v["@odata.nextLink"].as_str().unwrap();
    let path = next.split_once("/v1.0").unwrap().1.to_string();
    let (s, _, v2) = graph(&t, &tok, "GET", &path, None).await;
    assert_eq!(s, 200);
    let mut all = ids(&v);
    all.extend(ids(&v2));
    all.sort();
    assert_eq!(all, vec!["g-inner", "g-outer"]);
    let (s, _, _) = graph(&t, &tok, "GET", "/users/nobody/transitiveMemberOf", None).await;
    assert_eq!(s, 404);

    // revokeSignInSessions resets signInSessionsValidFromDateTime to now (whole seconds).
    let select = "/users/u1?$select=id,signInSessionsValidFromDateTime";
    let (_, _, v) = graph(&t, &tok, "GET", select, None).await;
    assert_eq!(v["signInSessionsValidFromDateTime"], Value::Null);
    t.set_sessions_valid_from("u1", Some("2020-01-01T00:00:00Z"));
    let (_, _, v) = graph(&t, &tok, "GET", select, None).await;
    assert_eq!(v["signInSessionsValidFromDateTime"], "2020-01-01T00:00:00Z");
    let (s, _, _) = graph(&t, &tok, "POST", "/users/u1/revokeSignInSessions", None).await;
    assert_eq!(s, 200);
    let (_, _, v) = graph(&t, &tok, "GET", select, None).await;
    let at = v["signInSessionsValidFromDateTime"].as_str().unwrap();
    assert!(
        at > "2020-01-01T00:00:00Z" && at.ends_with('Z') && at.len() == 20,
        "{at}"
    );
    assert_eq!(t.sessions_valid_from("u1").as_deref(), Some(at));
}

#[tokio::test]
async fn conditional_access_policies_over_the_size_limit_are_refused() {
    let t = tenant().await;
    t.set_ca_read_throttling(false);
    let tok = token(&t).await;
    // 300 listed users: about 11.7 KB of JSON, over the 10,240-byte limit.
    let many: Vec<String> = (0..300)
        .map(|n| format!("00000000-0000-0000-0000-{n:012x}"))
        .collect();
    let mut big = policy();
    big["conditions"]["users"] = json!({"includeUsers": many});
    let (s, _, v) = graph(
        &t,
        &tok,
        "POST",
        "/identity/conditionalAccess/policies",
        Some(big),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["code"], "BadRequest");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maximum allowed size")
    );
    assert!(t.ca_policies().is_empty());
    assert_eq!(t.ca_oversized_refusals(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, _, created) = graph(
        &t,
        &tok,
        "POST",
        "/identity/conditionalAccess/policies",
        Some(policy()),
    )
    .await;
    assert_eq!(s, 201);
    let id = created["id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // A patch that would make it too large changes nothing.
    let (s, _, _) = graph(
        &t,
        &tok,
        "PATCH",
        &format!("/identity/conditionalAccess/policies/{id}"),
        Some(json!({"conditions": {"users": {"includeUsers": many}}})),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(
        t.ca_policies()[0]["conditions"]["users"]["includeUsers"],
        json!(["All"])
    );
    assert_eq!(t.ca_oversized_refusals(), 2);
}

#[tokio::test]
async fn security_groups_are_created_and_found_by_display_name() {
    let t = tenant().await;
    let tok = token(&t).await;
    let body = json!({"displayName": "MFA (members)", "mailEnabled": false, "mailNickname": "mfa", "securityEnabled": true});
    let (s, _, g) = graph(&t, &tok, "POST", "/groups", Some(body)).await;
    assert_eq!(s, 201);
    assert_eq!(g["securityEnabled"], true);
    assert_eq!(t.created_groups(), 1);
    let (s, _, _) = graph(
        &t,
        &tok,
        "POST",
        "/groups",
        Some(json!({"displayName": "x", "mailEnabled": false, "securityEnabled": true})),
    )
    .await;
    assert_eq!(s, 400, "mailNickname is required");
    let (s, _, v) = graph(
        &t,
        &tok,
        "GET",
        "/groups?$filter=displayName%20eq%20%27MFA%20%28members%29%27&$select=id,displayName",
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["value"].as_array().unwrap().len(), 1);
    assert_eq!(v["value"][0]["id"], g["id"]);
}

#[tokio::test]
async fn pim_schedules_keep_their_expiry_and_refuse_one_in_the_past() {
    let t = tenant().await;
    let tok = token(&t).await;
    t.add_user(user("u1"));
    let role = "fe930be7-5e62-47db-91af-98c3a49a38b1";
    let assign = |end: &str| {
        json!({"action": "adminAssign", "principalId": "u1", "roleDefinitionId": role, "directoryScopeId": "/",
               "scheduleInfo": {"startDateTime": "2026-01-01T00:00:00Z", "expiration": {"type": "afterDateTime", "endDateTime": end}}})
    };
    let path = "/roleManagement/directory/roleAssignmentScheduleRequests";
    let (s, _, v) = graph(&t, &tok, "POST", path, Some(assign("2020-01-01T00:00:00Z"))).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("InvalidScheduleRequest"))
    );
    assert!(t.role_assignments().is_empty());
    let (s, _, _) = graph(&t, &tok, "POST", path, Some(assign("2999-01-01T00:00:00Z"))).await;
    assert_eq!(s, 201);
    let a = t.role_assignments().pop().unwrap();
    assert!(a.pim_managed);
    let sched = t.pim_schedule(&a.id).unwrap();
    assert_eq!(sched.end.as_deref(), Some("2999-01-01T00:00:00Z"));
    assert_eq!(sched.assignment_type, "Assigned");
    let (_, _, v) = graph(
        &t,
        &tok,
        "GET",
        "/roleManagement/directory/roleAssignmentScheduleInstances?$filter=principalId eq 'u1'",
        None,
    )
    .await;
    assert_eq!(v["value"][0]["endDateTime"], "2999-01-01T00:00:00Z");
    assert_eq!(v["value"][0]["startDateTime"], "2026-01-01T00:00:00Z");
    // adminRemove takes the schedule away with the assignment.
    let (s, _, _) = graph(
        &t,
        &tok,
        "POST",
        path,
        Some(json!({"action": "adminRemove", "principalId": "u1", "roleDefinitionId": role, "directoryScopeId": "/"})),
    )
    .await;
    assert_eq!(s, 201);
    assert_eq!(t.pim_schedule(&a.id), None);
}

// ---------------------------------------------------------------- posture-scan reads

/// GET on an absolute URL (a nextLink): status, headers, body.
async fn get_url(tok: &str, url: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = http().get(url).bearer_auth(tok).send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    };
    (status, headers, v)
}

/// Follows nextLink from `path`; returns the size of each page and every item.
async fn all_pages(t: &FakeTenant, tok: &str, path: &str) -> (Vec<usize>, Vec<Value>) {
    let mut url = format!("{}/v1.0{path}", t.base_url());
    let mut sizes = Vec::new();
    let mut items = Vec::new();
    loop {
        let (status, _, v) = get_url(tok, &url).await;
        assert_eq!(status, 200, "{url}: {v}");
        let page = v["value"].as_array().unwrap();
        sizes.push(page.len());
        items.extend(page.iter().cloned());
        match v["@odata.nextLink"].as_str() {
            Some(next) => {
                assert!(next.starts_with(&t.base_url()), "absolute nextLink: {next}");
                url = next.to_string();
            }
            None => return (sizes, items),
        }
    }
}

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

const USERS_SCAN: &str = "/users?$select=id,userPrincipalName,displayName,userType,accountEnabled,onPremisesSyncEnabled,createdDateTime,signInActivity&$top=500";

#[tokio::test]
async fn users_page_with_sign_in_activity_and_p1_gap() {
    let t = tenant().await;
    let tok = token(&t).await;
    let g = t.generate(1_200, 7);
    assert_eq!(g.users, 1_202);

    let (sizes, users) = all_pages(&t, &tok, USERS_SCAN).await;
    assert_eq!(sizes, vec![500, 500, 202]);
    let ids: std::collections::HashSet<&str> =
        users.iter().map(|u| u["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1_202);
    let never = users
        .iter()
        .filter(|u| u["signInActivity"].is_null())
        .count();
    assert_eq!(never, g.never_signed_in);
    let disabled = users
        .iter()
        .filter(|u| u["accountEnabled"] == json!(false))
        .count();
    assert_eq!(disabled, g.disabled);
    let guests = users.iter().filter(|u| u["userType"] == "Guest").count();
    assert_eq!(guests, g.guests);
    assert!(
        users[0].get("mail").is_none(),
        "projection keeps only $select"
    );

    // Graph documents pages of at most 500 with signInActivity, even for a larger $top.
    let (sizes, _) = all_pages(&t, &tok, "/users?$select=id,signInActivity&$top=999").await;
    assert_eq!(sizes, vec![500, 500, 202]);
    // Without it, up to 999; 100 by default.
    let (sizes, _) = all_pages(&t, &tok, "/users?$select=id&$top=999").await;
    assert_eq!(sizes, vec![999, 203]);
    let (sizes, _) = all_pages(&t, &tok, "/users").await;
    assert_eq!(sizes.len(), 13);
    assert_eq!(sizes[0], 100);
    let (s, _, v) = graph(&t, &tok, "GET", "/users?$top=1000", None).await;
    assert_eq!((s, error_code(&v)), (400, "Request_BadRequest"));
    let (s, _, v) = graph(&t, &tok, "GET", "/users?$select=id,nope", None).await;
    assert_eq!((s, error_code(&v)), (400, "BadRequest"));

    // The shape of one user's sign-in activity.
    t.add_user(user("u-1"));
    t.set_user_details(
        "u-1",
        fake_entra::UserDetails {
            created: Some("2023-01-02T03:04:05Z".into()),
            on_premises_sync_enabled: Some(true),
            sign_in: Some(fake_entra::SignIn {
                last: Some("2024-05-01T10:00:00Z".into()),
                last_non_interactive: None,
                last_successful: Some("2024-04-30T09:00:00Z".into()),
            }),
            ..Default::default()
        },
    );
    let (_, _, v) = graph(
        &t,
        &tok,
        "GET",
        "/users?$select=id,createdDateTime,onPremisesSyncEnabled,signInActivity&$filter=id eq 'u-1'",
        None,
    )
    .await;
    let u = &v["value"][0];
    assert_eq!(u["createdDateTime"], "2023-01-02T03:04:05Z");
    assert_eq!(u["onPremisesSyncEnabled"], true);
    assert_eq!(
        u["signInActivity"]["lastSignInDateTime"],
        "2024-05-01T10:00:00Z"
    );
    assert!(u["signInActivity"]["lastNonInteractiveSignInDateTime"].is_null());
    assert_eq!(
        u["signInActivity"]["lastSuccessfulSignInDateTime"],
        "2024-04-30T09:00:00Z"
    );

    // Without P1: signInActivity is refused, the rest still reads.
    t.set_licences(false, true);
    let (s, _, v) = graph(&t, &tok, "GET", USERS_SCAN, None).await;
    assert_eq!(
        (s, error_code(&v)),
        (403, "Authentication_RequestFromNonPremiumTenantOrB2CTenant")
    );
    let (s, _, v) = graph(
        &t,
        &tok,
        "GET",
        "/users?$select=id,accountEnabled&$top=500",
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["value"].as_array().unwrap().len(), 500);
}

#[tokio::test]
async fn registration_details_page_refuse_select_and_need_p1() {
    let t = tenant().await;
    let tok = token(&t).await;
    let g = t.generate(2_500, 3);
    let path = "/reports/authenticationMethods/userRegistrationDetails";
    let (sizes, rows) = all_pages(&t, &tok, path).await;
    assert_eq!(sizes, vec![1000, 1000, 502]);
    let without = rows
        .iter()
        .filter(|r| r["isMfaRegistered"] == false)
        .count();
    assert_eq!(without, g.without_mfa);
    let bg = rows
        .iter()
        .find(|r| r["id"] == json!(g.break_glass[0]))
        .unwrap();
    assert_eq!(bg["isAdmin"], true);
    assert_eq!(bg["methodsRegistered"], json!(["fido2SecurityKey"]));
    assert_eq!(bg["isPasswordlessCapable"], true);
    assert_eq!(bg["userType"], "member");
    assert!(rows.iter().any(|r| r["userType"] == "guest"));

    let (s, _, v) = graph(&t, &tok, "GET", &format!("{path}?$select=id"), None).await;
    assert_eq!((s, error_code(&v)), (400, "BadRequest"));
    let (sizes, _) = all_pages(&t, &tok, &format!("{path}?$top=600")).await;
    assert_eq!(sizes, vec![600, 600, 600, 600, 102]);

    t.set_licences(false, false);
    let (s, _, v) = graph(&t, &tok, "GET", path, None).await;
    assert_eq!(
        (s, error_code(&v)),
        (403, "Authentication_RequestFromNonPremiumTenantOrB2CTenant")
    );
}

#[tokio::test]
async fn risky_users_need_p2_and_share_the_one_per_second_limit() {
    let t = tenant().await;
    let tok = token(&t).await;
    for (id, level, state) in [
        ("r1", "high", "atRisk"),
        ("r2", "low", "remediated"),
        ("r3", "medium", "atRisk"),
    ] {
        t.add_user(user(id));
        t.set_user_details(
            id,
            fake_entra::UserDetails {
                risk: Some(fake_entra::Risk {
                    level: level.into(),
                    state: state.into(),
                    detail: "none".into(),
                    last_updated: None,
                }),
                ..Default::default()
            },
        );
    }
    t.add_user(user("calm"));
    let path = "/identityProtection/riskyUsers?$top=500";
    let (s, h, v) = graph(&t, &tok, "GET", path, None).await;
    assert_eq!(s, 200, "{v}");
    let ids: Vec<&str> = v["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["r1", "r2", "r3"]);
    assert_eq!(v["value"][0]["riskLevel"], "high");
    assert_eq!(v["value"][0]["riskState"], "atRisk");
    assert_eq!(v["value"][0]["userPrincipalName"], "r1@contoso.test");
    assert!(h.get("x-ms-resource-unit").is_none());
    // Within the same second: 429 without Retry-After, and Conditional Access shares the limit.
    let (s, h, _) = graph(&t, &tok, "GET", path, None).await;
    assert_eq!(s, 429);
    assert!(h.get("retry-after").is_none());
    let (s, _, _) = graph(
        &t,
        &tok,
        "GET",
        "/identity/conditionalAccess/policies",
        None,
    )
    .await;
    assert_eq!(s, 429);
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    let (s, _, v) = graph(
        &t,
        &tok,
        "GET",
        "/identityProtection/riskyUsers?$select=id,riskLevel&$top=2",
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["value"][0], json!({"id": "r1", "riskLevel": "high"}));
    let next = v["@odata.nextLink"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    let (s, _, v) = get_url(&tok, &next).await;
    assert_eq!(s, 200);
    assert_eq!(v["value"], json!([{"id": "r3", "riskLevel": "medium"}]));

    tokio::time::sleep(Duration::from_millis(1_050)).await;
    t.set_licences(true, false);
    let (s, _, v) = graph(&t, &tok, "GET", path, None).await;
    assert_eq!(
        (s, error_code(&v)),
        (403, "Authentication_RequestFromNonPremiumTenantOrB2CTenant")
    );
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    t.set_licences(true, true);
    t.set_permissions(Some(vec!["User.Read.All".into()]));
    let (s, _, v) = graph(&t, &tok, "GET", path, None).await;
    assert_eq!((s, error_code(&v)), (403, "Authorization_RequestDenied"));
}

#[tokio::test]
async fn permissions_are_enforced_per_read() {
    let t = tenant().await;
    let tok = token(&t).await;
    t.add_user(user("u1"));
    t.add_group(group("g1"));
    t.set_permissions(Some(vec!["User.Read.All".into()]));
    let (s, _, _) = graph(&t, &tok, "GET", "/users?$select=id", None).await;
    assert_eq!(s, 200);
    for path in [
        "/users?$select=id,signInActivity",
        "/groups",
        "/groups/g1/members?$select=id",
        "/organization?$select=id,displayName",
        "/roleManagement/directory/roleDefinitions",
        "/roleManagement/directory/roleAssignments",
        "/roleManagement/directory/roleEligibilitySchedules",
        "/reports/authenticationMethods/userRegistrationDetails",
    ] {
        let (s, _, v) = graph(&t, &tok, "GET", path, None).await;
        assert_eq!(
            (s, error_code(&v)),
            (403, "Authorization_RequestDenied"),
            "{path}"
        );
        assert_eq!(
            v["error"]["message"],
            "Insufficient privileges to complete the operation."
        );
    }
    t.set_permissions(Some(vec![
        "User.Read.All".into(),
        "AuditLog.Read.All".into(),
        "Directory.Read.All".into(),
    ]));
    for path in [
        "/users?$select=id,signInActivity",
        "/groups",
        "/groups/g1/members?$select=id",
        "/organization?$select=id,displayName",
        "/roleManagement/directory/roleDefinitions",
        "/roleManagement/directory/roleAssignments",
        "/reports/authenticationMethods/userRegistrationDetails",
    ] {
        let (s, _, v) = graph(&t, &tok, "GET", path, None).await;
        assert_eq!(s, 200, "{path}: {v}");
    }
    // PIM schedules need a role-management or schedule permission, not Directory.Read.All.
    let (s, _, _) = graph(
        &t,
        &tok,
        "GET",
        "/roleManagement/directory/roleEligibilitySchedules",
        None,
    )
    .await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn organization_roles_expand_and_pim_schedules() {
    let t = tenant().await;
    let tok = token(&t).await;
    t.set_tenant_name("Fabrikam Ltd");
    let (s, _, v) = graph(
        &t,
        &tok,
        "GET",
        "/organization?$select=id,displayName",
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        v["value"],
        json!([{"id": TENANT, "displayName": "Fabrikam Ltd"}])
    );

    let (_, _, v) = graph(
        &t,
        &tok,
        "GET",
        "/roleManagement/directory/roleDefinitions?$select=id,displayName,templateId,isBuiltIn",
        None,
    )
    .await;
    let defs = v["value"].as_array().unwrap();
    for (id, name) in [
        (
            "62e90394-69f5-4237-9190-012177145e10",
            "Global Administrator",
        ),
        (
            "e8611ab8-c189-46e8-94e1-60213ab1f814",
            "Privileged Role Administrator",
        ),
        ("fe930be7-5e62-47db-91af-98c3a49a38b1", "User Administrator"),
        (
            "194ae4cb-b126-40b2-bd5b-6091b380977d",
            "Security Administrator",
        ),
        (
            "29232cdf-9323-42fd-ade2-1d097af3e4de",
            "Exchange Administrator",
        ),
        (
            "729827e3-9c14-49f7-bb1b-9608f156bbb8",
            "Helpdesk Administrator",
        ),
        (
            "7be44c8a-adaf-4e2a-84d6-ab2649e08a13",
            "Privileged Authentication Administrator",
        ),
        (
            "b1be1c3e-b65d-4f19-8427-f6fa0d97feb9",
            "Conditional Access Administrator",
        ),
        (
            "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3",
            "Application Administrator",
        ),
        ("f2ef992c-3afb-46b9-b7cf-a126ee74c451", "Global Reader"),
    ] {
        assert!(
            defs.contains(
                &json!({"id": id, "displayName": name, "templateId": id, "isBuiltIn": true})
            ),
            "{name}"
        );
    }

    let ga = "62e90394-69f5-4237-9190-012177145e10";
    t.add_user(user("admin"));
    let mut rg = group("rg");
    rg.is_assignable_to_role = true;
    t.add_group(rg);
    t.add_service_principal("sp1", "Automation");
    for (id, principal) in [("a1", "admin"), ("a2", "rg"), ("a3", "sp1"), ("a4", "gone")] {
        t.add_role_assignment(RoleAssignment {
            id: id.into(),
            principal_id: principal.into(),
            role_definition_id: ga.into(),
            directory_scope_id: "/".into(),
            pim_managed: false,
        });
    }
    t.set_pim_schedule(
        "a1",
        fake_entra::PimSchedule {
            start: "2024-01-01T00:00:00Z".into(),
            end: Some("2030-01-01T00:00:00Z".into()),
            assignment_type: "Activated".into(),
        },
    );
    let (sizes, items) = all_pages(
        &t,
        &tok,
        "/roleManagement/directory/roleAssignments?$expand=principal&$top=3",
    )
    .await;
    assert_eq!(sizes, vec![3, 1]);
    assert_eq!(
        items[0]["principal"]["@odata.type"],
        "#microsoft.graph.user"
    );
    assert_eq!(
        items[0]["principal"]["userPrincipalName"],
        "admin@contoso.test"
    );
    assert_eq!(
        items[1]["principal"]["@odata.type"],
        "#microsoft.graph.group"
    );
    assert_eq!(items[1]["principal"]["displayName"], "Group rg");
    assert_eq!(
        items[2]["principal"]["@odata.type"],
        "#microsoft.graph.servicePrincipal"
    );
    assert_eq!(items[2]["principal"]["displayName"], "Automation");
    assert!(items[3]["principal"].is_null());

    let (_, _, v) = graph(
        &t,
        &tok,
        "GET",
        "/roleManagement/directory/roleAssignmentSchedules",
        None,
    )
    .await;
    let sch = v["value"].as_array().unwrap();
    assert_eq!(sch.len(), 4);
    assert_eq!(sch[0]["assignmentType"], "Activated");
    assert_eq!(
        sch[0]["scheduleInfo"]["expiration"]["type"],
        "afterDateTime"
    );
    assert_eq!(
        sch[0]["scheduleInfo"]["expiration"]["endDateTime"],
        "2030-01-01T00:00:00Z"
    );
    assert_eq!(sch[1]["assignmentType"], "Assigned");
    assert_eq!(sch[1]["memberType"], "Direct");
    assert_eq!(sch[1]["scheduleInfo"]["expiration"]["type"], "noExpiration");

    t.add_eligibility(fake_entra::RoleEligibility {
        id: "e1".into(),
        principal_id: "admin".into(),
        role_definition_id: ga.into(),
        directory_scope_id: "/".into(),
        start: "2024-02-01T00:00:00Z".into(),
        end: None,
        member_type: "Direct".into(),
    });
    let (_, _, v) = graph(
        &t,
        &tok,
        "GET",
        "/roleManagement/directory/roleEligibilitySchedules",
        None,
    )
    .await;
    assert_eq!(v["value"].as_array().unwrap().len(), 1);
    assert_eq!(v["value"][0]["principalId"], "admin");
    assert_eq!(
        v["value"][0]["scheduleInfo"]["startDateTime"],
        "2024-02-01T00:00:00Z"
    );
    assert_eq!(
        v["value"][0]["scheduleInfo"]["expiration"]["type"],
        "noExpiration"
    );

    t.set_licences(true, false);
    for path in [
        "/roleManagement/directory/roleEligibilitySchedules",
        "/roleManagement/directory/roleAssignmentSchedules",
    ] {
        let (s, _, v) = graph(&t, &tok, "GET", path, None).await;
        assert_eq!(
            (s, error_code(&v)),
            (400, "AadPremiumLicenseRequired"),
            "{path}"
        );
    }
    // Role assignments themselves need no P2.
    let (s, _, _) = graph(
        &t,
        &tok,
        "GET",
        "/roleManagement/directory/roleAssignments",
        None,
    )
    .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn groups_page_with_rules_and_big_memberships_page_at_999() {
    let t = tenant().await;
    let tok = token(&t).await;
    let g = t.generate(100_000, 11);
    let (sizes, groups) = all_pages(
        &t,
        &tok,
        "/groups?$select=id,displayName,groupTypes,membershipRule,onPremisesSyncEnabled,isAssignableToRole,mailEnabled,securityEnabled&$top=20",
    )
    .await;
    assert_eq!(sizes, vec![20, 20, 10]);
    assert_eq!(groups.len(), g.groups);
    let dynamic: Vec<&Value> = groups
        .iter()
        .filter(|x| {
            x["groupTypes"]
                .as_array()
                .unwrap()
                .contains(&json!("DynamicMembership"))
        })
        .collect();
    assert_eq!(dynamic.len(), g.dynamic_groups);
    assert!(dynamic.iter().all(|x| x["membershipRule"].is_string()));
    assert_eq!(
        groups
            .iter()
            .filter(|x| x["onPremisesSyncEnabled"] == true)
            .count(),
        g.synced_groups
    );
    assert_eq!(
        groups
            .iter()
            .filter(|x| x["isAssignableToRole"] == true)
            .count(),
        g.role_assignable_groups
    );

    let all = groups
        .iter()
        .find(|x| x["displayName"] == "All Employees")
        .unwrap();
    let gid = all["id"].as_str().unwrap();
    let expected = t.members(gid).len();
    assert!(expected > 90_000, "{expected}");
    let (sizes, members) = all_pages(
        &t,
        &tok,
        &format!("/groups/{gid}/members?$select=id&$top=999"),
    )
    .await;
    assert_eq!(members.len(), expected);
    assert!(sizes[..sizes.len() - 1].iter().all(|s| *s == 999));

    // The same listing inside $batch pages the same way.
    let body = json!({"requests": [{"id": "1", "method": "GET", "url": format!("/groups/{gid}/members?$select=id&$top=999")}]});
    let (s, _, v) = graph(&t, &tok, "POST", "/$batch", Some(body)).await;
    assert_eq!(s, 200);
    let item = &v["responses"][0];
    assert_eq!(item["status"], 200);
    assert_eq!(item["body"]["value"].as_array().unwrap().len(), 999);
    assert!(
        item["body"]["@odata.nextLink"]
            .as_str()
            .unwrap()
            .contains("skiptoken")
    );

    let dept = groups
        .iter()
        .find(|x| x["displayName"] == "Department 1")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    t.set_group_membership_rule(&dept, "(user.city -eq \"Oslo\")");
    let (_, _, v) = graph(
        &t,
        &tok,
        "GET",
        &format!("/groups/{dept}?$select=membershipRule"),
        None,
    )
    .await;
    assert_eq!(v["membershipRule"], "(user.city -eq \"Oslo\")");
}

#[tokio::test]
async fn generator_is_realistic_and_deterministic() {
    let a = FakeTenant::start(TENANT).await;
    let b = FakeTenant::start(TENANT).await;
    let started = Instant::now();
    let ga = a.generate(20_000, 42);
    let gb = b.generate(20_000, 42);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(ga, gb);
    let pct = |n: usize| n as f64 * 100.0 / 20_000.0;
    assert!((4.0..6.0).contains(&pct(ga.guests)), "{ga:?}");
    assert!((9.0..11.0).contains(&pct(ga.disabled)), "{ga:?}");
    assert!((13.0..17.0).contains(&pct(ga.stale)), "{ga:?}");
    assert!((2.0..4.0).contains(&pct(ga.never_signed_in)), "{ga:?}");
    assert!((18.0..22.0).contains(&pct(ga.without_mfa)), "{ga:?}");
    assert!((0.3..0.7).contains(&pct(ga.risky)), "{ga:?}");
    assert!(ga.high_risk_at_risk > 0);
    assert_eq!(ga.groups, 50);
    assert!(ga.dynamic_groups > 0 && ga.synced_groups > 0 && ga.role_assignable_groups > 0);
    assert_eq!(ga.role_assignments, 30);
    assert_eq!(ga.role_assignments, a.role_assignments().len());
    assert!(ga.pim_assignments > 0 && ga.permanent_assignments > 0 && ga.group_assignments > 0);
    assert_eq!(ga.eligibilities, a.eligibilities().len());
    assert_eq!(ga.break_glass.len(), 2);
    for bg in &ga.break_glass {
        assert!(a.role_assignments().iter().any(|r| &r.principal_id == bg
            && r.role_definition_id == "62e90394-69f5-4237-9190-012177145e10"
            && !r.pim_managed));
    }
    let c = FakeTenant::start(TENANT).await;
    assert_ne!(c.generate(20_000, 43), ga);
}

#[tokio::test]
async fn resource_units_are_charged_and_throttled() {
    let t = tenant().await;
    let tok = token(&t).await;
    t.add_user(user("u1"));
    assert_eq!(FakeTenant::documented_resource_unit_budget(10), 3_500);
    assert_eq!(FakeTenant::documented_resource_unit_budget(100_000), 8_000);
    t.inject(Fault::ResourceUnits { per_10s: 5 });
    // GET /users costs 2 (1 with $select).
    let (s, h, _) = graph(&t, &tok, "GET", "/users", None).await;
    assert_eq!(s, 200);
    assert_eq!(h["x-ms-resource-unit"], "2");
    let (s, h, _) = graph(&t, &tok, "GET", "/users?$select=id", None).await;
    assert_eq!((s, &h["x-ms-resource-unit"]), (200, &"1".parse().unwrap()));
    let (s, _, _) = graph(&t, &tok, "GET", "/users", None).await;
    assert_eq!(s, 200);
    let (s, h, v) = graph(&t, &tok, "GET", "/users", None).await;
    assert_eq!((s, error_code(&v)), (429, "TooManyRequests"));
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry));
    // Not an identity resource: not charged.
    let (s, _, _) = graph(
        &t,
        &tok,
        "GET",
        "/roleManagement/directory/roleDefinitions",
        None,
    )
    .await;
    assert_eq!(s, 200);

    // Batch items are charged one by one.
    t.clear_faults();
    t.inject(Fault::ResourceUnits { per_10s: 3 });
    let requests: Vec<Value> = (1..=4)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/users/u1?$select=id"}))
        .collect();
    let (s, _, v) = graph(
        &t,
        &tok,
        "POST",
        "/$batch",
        Some(json!({"requests": requests})),
    )
    .await;
    assert_eq!(s, 200);
    let statuses: Vec<u64> = v["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 3);
    let throttled = v["responses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["status"] == 429)
        .unwrap();
    assert!(throttled["headers"]["Retry-After"].is_string());
}

/// The ids of a getByIds answer's `value`, in order.
fn value_ids(v: &Value) -> Vec<&str> {
    v["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn get_by_ids_returns_the_objects_asked_for_of_the_types_asked_for() {
    let t = tenant().await;
    let tok = token(&t).await;
    t.add_user(user("u1"));
    t.add_user(user("u2"));
    t.add_group(group("g1"));
    t.add_service_principal("sp1", "Payroll app");
    let ids = json!(["u1", "missing", "g1", "u2", "sp1", "u1"]);
    let sel = "/directoryObjects/getByIds?$select=id,userPrincipalName,accountEnabled";

    // Users only: the missing id and the other types are simply left out.
    let body = json!({"ids": ids, "types": ["user"]});
    let (s, _, v) = graph(&t, &tok, "POST", sel, Some(body)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(value_ids(&v), vec!["u1", "u2"]);
    assert_eq!(
        v["value"][0],
        json!({"@odata.type": "#microsoft.graph.user", "id": "u1",
               "userPrincipalName": "u1@contoso.test", "accountEnabled": true})
    );
    assert_eq!(
        v["@odata.context"],
        "https://graph.microsoft.com/v1.0/$metadata#directoryObjects(id,userPrincipalName,accountEnabled)"
    );

    // Every type without `types`; each object says its type; a group has no UPN.
    let (s, _, v) = graph(&t, &tok, "POST", sel, Some(json!({"ids": ids}))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(value_ids(&v), vec!["u1", "g1", "u2", "sp1"]);
    let types: Vec<&str> = v["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["@odata.type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec![
            "#microsoft.graph.user",
            "#microsoft.graph.group",
            "#microsoft.graph.user",
            "#microsoft.graph.servicePrincipal"
        ]
    );
    assert_eq!(
        v["value"][1],
        json!({"@odata.type": "#microsoft.graph.group", "id": "g1"})
    );
    let body = json!({"ids": ids, "types": ["Group", "servicePrincipal"]});
    let (s, _, v) = graph(&t, &tok, "POST", sel, Some(body)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(value_ids(&v), vec!["g1", "sp1"]);

    // Without $select a user has Graph's default set: no accountEnabled.
    let body = json!({"ids": ["u1"], "types": ["user"]});
    let (s, _, v) = graph(&t, &tok, "POST", "/directoryObjects/getByIds", Some(body)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["value"][0]["displayName"], "User u1");
    assert!(v["value"][0].get("accountEnabled").is_none(), "{v}");

    // A deleted user is no longer found, and no longer a member.
    t.add_member("g1", "u2");
    t.delete_user("u2");
    let body = json!({"ids": ["u1", "u2"], "types": ["user"]});
    let (_, _, v) = graph(&t, &tok, "POST", sel, Some(body)).await;
    assert_eq!(value_ids(&v), vec!["u1"]);
    assert!(t.members("g1").is_empty());
}

#[tokio::test]
async fn get_by_ids_refuses_more_than_a_thousand_ids_and_bad_bodies() {
    let t = tenant().await;
    let tok = token(&t).await;
    t.add_user(user("u1"));
    let path = "/directoryObjects/getByIds?$select=id";
    let ids = |n: usize| -> Vec<String> { (0..n).map(|i| format!("id{i}")).collect() };
    let (s, _, v) = graph(&t, &tok, "POST", path, Some(json!({"ids": ids(1000)}))).await;
    assert_eq!(s, 200, "{v}");
    assert!(value_ids(&v).is_empty());
    for body in [
        json!({"ids": ids(1001)}),
        json!({"types": ["user"]}),
        json!({"ids": "u1"}),
        json!({"ids": ["u1"], "types": ["person"]}),
    ] {
        let (s, _, v) = graph(&t, &tok, "POST", path, Some(body.clone())).await;
        assert_eq!((s, error_code(&v)), (400, "Request_BadRequest"), "{body}");
    }
    let (s, _, v) = graph(&t, &tok, "POST", path, None).await;
    assert_eq!(s, 400, "{v}");
    let (s, _, v) = graph(
        &t,
        &tok,
        "POST",
        "/directoryObjects/getByIds?$select=id,shoeSize",
        Some(json!({"ids": ["u1"]})),
    )
    .await;
    assert_eq!((s, error_code(&v)), (400, "BadRequest"));
    let (s, _, _) = graph(&t, &tok, "GET", "/directoryObjects/getByIds", None).await;
    assert_eq!(s, 405);
    // It needs Directory.Read.All (User.Read.All is not enough).
    t.set_permissions(Some(vec!["User.Read.All".into()]));
    let (s, _, v) = graph(&t, &tok, "POST", path, Some(json!({"ids": ["u1"]}))).await;
    assert_eq!((s, error_code(&v)), (403, "Authorization_RequestDenied"));
    t.set_permissions(Some(vec!["Directory.Read.All".into()]));
    let (s, _, _) = graph(&t, &tok, "POST", path, Some(json!({"ids": ["u1"]}))).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn get_by_ids_in_a_batch_is_one_item_under_faults_and_the_rate_limit() {
    let t = tenant().await;
    let tok = token(&t).await;
    for i in 0..3 {
        t.add_user(user(&format!("u{i}")));
    }
    let item = |id: &str| {
        json!({"id": id, "method": "POST", "url": "/directoryObjects/getByIds?$select=id,accountEnabled",
               "headers": {"Content-Type": "application/json"},
               "body": {"ids": ["u0", "u1", "u2", "gone"], "types": ["user"]}})
    };
    t.inject(Fault::Throttle {
        matching: "POST /v1.0/directoryObjects/getByIds".into(),
        count: 1,
        retry_after: Some(2.0),
    });
    let batch = json!({"requests": [item("a"), item("b")]});
    let (s, _, v) = graph(&t, &tok, "POST", "/$batch", Some(batch.clone())).await;
    assert_eq!(s, 200);
    let by_id = |v: &Value, id: &str| {
        v["responses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap()
            .clone()
    };
    // Items run in order: the first is throttled, the second answered.
    assert_eq!(by_id(&v, "a")["status"], 429);
    assert_eq!(by_id(&v, "a")["headers"]["Retry-After"], "2");
    let b = by_id(&v, "b");
    assert_eq!(b["status"], 200);
    assert_eq!(
        b["body"]["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        vec!["u0", "u1", "u2"]
    );
    let recorded: Vec<_> = t
        .requests()
        .into_iter()
        .filter(|r| r.in_batch && r.path == "/v1.0/directoryObjects/getByIds")
        .collect();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[1].body.as_ref().unwrap()["ids"][3], "gone");

    // One item counts once against the rate limit, whatever its ids.
    t.clear_faults();
    t.inject(Fault::RateLimit { per_second: 1 });
    let (s, _, v) = graph(&t, &tok, "POST", "/$batch", Some(batch)).await;
    assert_eq!(s, 200);
    assert_eq!(by_id(&v, "a")["status"], 200);
    assert_eq!(by_id(&v, "b")["status"], 429);
}

/// `GET /users?$filter=id in (...)` for these ids, encoded as a client sends it.
fn id_in_path(ids: &[&str], select: &str) -> String {
    let list: Vec<String> = ids
        .iter()
        .map(|id| format!("%27{}%27", id.replace('\'', "%27%27")))
        .collect();
    format!(
        "/users?$filter=id%20in%20({})&$select={select}",
        list.join(",")
    )
}

#[tokio::test]
async fn users_are_read_by_id_in_with_user_read_all_and_missing_ids_left_out() {
    let t = tenant().await;
    let tok = token(&t).await;
    t.add_user(user("u1"));
    t.add_user(user("u2"));
    t.add_user(user("u3"));
    t.add_group(group("g1"));
    let sel = "id,userPrincipalName,accountEnabled";
    // Least privilege is enough: User.Read.All reads users.
    t.set_permissions(Some(vec!["User.Read.All".into()]));
    let path = id_in_path(&["U2", "missing", "g1", "u1", "o'hara"], sel);
    let (s, _, v) = graph(&t, &tok, "GET", &path, None).await;
    assert_eq!(s, 200, "{v}");
    // Only users, matched whatever the case of the id; no nextLink for one page.
    assert_eq!(value_ids(&v), vec!["u1", "u2"]);
    assert_eq!(
        v["value"][0],
        json!({"id": "u1", "userPrincipalName": "u1@contoso.test", "accountEnabled": true})
    );
    assert!(v.get("@odata.nextLink").is_none(), "{v}");
    // A deleted user is no longer returned.
    t.delete_user("u2");
    let (_, _, v) = graph(&t, &tok, "GET", &id_in_path(&["u1", "u2"], sel), None).await;
    assert_eq!(value_ids(&v), vec!["u1"]);
    // Without a user permission it is refused.
    t.set_permissions(Some(vec!["GroupMember.Read.All".into()]));
    let (s, _, v) = graph(&t, &tok, "GET", &id_in_path(&["u1"], sel), None).await;
    assert_eq!((s, error_code(&v)), (403, "Authorization_RequestDenied"));
}

#[tokio::test]
async fn id_in_takes_at_most_fifteen_ids_and_only_quoted_values() {
    let t = tenant().await;
    let tok = token(&t).await;
    let names: Vec<String> = (0..16).map(|i| format!("u{i:02}")).collect();
    for n in &names {
        t.add_user(user(n));
    }
    let ids: Vec<&str> = names.iter().map(String::as_str).collect();
    let (s, _, v) = graph(&t, &tok, "GET", &id_in_path(&ids[..15], "id"), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(value_ids(&v), ids[..15].to_vec());
    let (s, _, v) = graph(&t, &tok, "GET", &id_in_path(&ids, "id"), None).await;
    assert_eq!(
        (s, error_code(&v)),
        (400, "Request_UnsupportedQuery"),
        "{v}"
    );
    let (s, _, v) = graph(&t, &tok, "GET", "/users?$filter=id%20in%20(u01)", None).await;
    assert_eq!(
        (s, error_code(&v)),
        (400, "Request_UnsupportedQuery"),
        "{v}"
    );
}

#[tokio::test]
async fn id_in_as_a_batch_item_is_one_item_under_faults() {
    let t = tenant().await;
    let tok = token(&t).await;
    for i in 0..3 {
        t.add_user(user(&format!("u{i}")));
    }
    let url = id_in_path(&["u0", "u1", "u2", "gone"], "id,accountEnabled");
    let item = |id: &str| json!({"id": id, "method": "GET", "url": url});
    t.inject(Fault::Throttle {
        matching: "GET /v1.0/users".into(),
        count: 1,
        retry_after: Some(2.0),
    });
    let batch = json!({"requests": [item("a"), item("b")]});
    let (s, _, v) = graph(&t, &tok, "POST", "/$batch", Some(batch)).await;
    assert_eq!(s, 200);
    let by_id = |id: &str| {
        v["responses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(by_id("a")["status"], 429);
    let b = by_id("b");
    assert_eq!(b["status"], 200, "{b}");
    assert_eq!(value_ids(&b["body"]), vec!["u0", "u1", "u2"]);
    assert_eq!(
        b["body"]["value"][2],
        json!({"id": "u2", "accountEnabled": true})
    );
    let recorded = t
        .requests()
        .into_iter()
        .filter(|r| r.in_batch && r.path == "/v1.0/users")
        .count();
    assert_eq!(recorded, 2);
}

//! Entra's v2.0 OpenID Connect provider for the fake tenant: the discovery
//! document, the signing keys (JWKS) and the authorize endpoint with its
//! sign-in page. Codes are redeemed at the token endpoint (`oidc_token`).

use crate::oidc_token;
use crate::state::{Scope, State, lock};
use crate::util::{Body, Resp, aad_timestamp, parse_query};
use crate::{RecordedRequest, Shared};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::time::Instant;

/// A way to spoil the ID tokens the fake issues, so a client's checks can be
/// shown to refuse them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdTokenFault {
    /// `nonce` differs from the one sent to the authorize endpoint.
    WrongNonce,
    /// `aud` is another application's client id.
    WrongAudience,
    /// `exp` (and `iat`, `nbf`) lie an hour in the past.
    Expired,
    /// `iss` names another tenant.
    WrongIssuer,
}

/// One authorization code the authorize endpoint issued, with what the client
/// sent for it (so tests can assert PKCE S256, state and nonce were used) and
/// how often the token endpoint was asked to redeem it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcAuthorization {
    /// client_id sent.
    pub client_id: String,
    /// redirect_uri the code was sent to.
    pub redirect_uri: String,
    /// scope sent.
    pub scope: String,
    /// state sent.
    pub state: Option<String>,
    /// nonce sent.
    pub nonce: Option<String>,
    /// code_challenge sent.
    pub code_challenge: Option<String>,
    /// code_challenge_method sent (`None` when absent: Entra then takes "plain").
    pub code_challenge_method: Option<String>,
    /// response_mode used: "query", "fragment" or "form_post".
    pub response_mode: String,
    /// UPN of the user who signed in.
    pub user_principal_name: String,
    /// The code issued.
    pub code: String,
    /// Token requests that presented this code (successful or not).
    pub redemption_attempts: u32,
    /// Whether the code was redeemed for tokens.
    pub redeemed: bool,
}

/// What the fake keeps for sign-in.
#[derive(Default)]
pub(crate) struct OidcState {
    /// Registered redirect URIs by client id.
    pub redirects: HashMap<String, Vec<String>>,
    /// UPN signed in by the next authorize request, whatever it asks.
    pub next_sign_in: Option<String>,
    /// Sign ID tokens with a key the JWKS does not publish.
    pub key_mismatch: bool,
    /// Spoils every ID token from now on.
    pub fault: Option<IdTokenFault>,
    /// Codes issued, in order; `user_id` and `issued` are kept beside them.
    pub codes: Vec<(OidcAuthorization, String, Instant)>,
}

/// Which OIDC endpoint a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `/{tenant}/v2.0/.well-known/openid-configuration`.
    Discovery,
    /// `/{tenant}/discovery/v2.0/keys`.
    Keys,
    /// `/{tenant}/oauth2/v2.0/authorize`.
    Authorize,
}

/// The tenant and endpoint of an OIDC path.
pub(crate) fn route(path: &str) -> Option<(&str, Endpoint)> {
    let (tenant, tail) = path.strip_prefix('/')?.split_once('/')?;
    let ep = match tail {
        "v2.0/.well-known/openid-configuration" => Endpoint::Discovery,
        "discovery/v2.0/keys" => Endpoint::Keys,
        "oauth2/v2.0/authorize" => Endpoint::Authorize,
        _ => return None,
    };
    (!tenant.is_empty()).then_some((tenant, ep))
}

/// One request to an OIDC endpoint.
pub(crate) struct Call<'a> {
    /// Upper-case method.
    pub method: &'a str,
    /// Path as sent.
    pub path: &'a str,
    /// Tenant named in the path.
    pub tenant: &'a str,
    /// Which endpoint.
    pub endpoint: Endpoint,
    /// Raw query.
    pub query: Option<String>,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
}

/// Latency, faults (matched against "METHOD path"), the endpoint, the record.
pub(crate) async fn serve(shared: &Shared, call: Call<'_>, body: &[u8]) -> Resp {
    let line = format!("{} {}", call.method, call.path);
    let delay = lock(&shared.state).latency_for(&line, Scope::Other);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let form = if call.method == "POST" {
        parse_query(&String::from_utf8_lossy(body))
    } else {
        Vec::new()
    };
    let mut st = lock(&shared.state);
    let resp = if let Some(r) = st.apply_faults(&line, Scope::Other, Instant::now()) {
        r
    } else {
        endpoint(&mut st, shared, &call, &form)
    };
    let recorded = if form.is_empty() {
        Body::from_bytes(body).recorded()
    } else {
        let m: Map<String, Value> = form.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        Some(Value::Object(m))
    };
    st.record(RecordedRequest {
        method: call.method.to_string(),
        path: call.path.to_string(),
        query: call.query,
        body: recorded,
        headers: call.headers,
        in_batch: false,
        status: resp.status,
    });
    resp
}

fn endpoint(st: &mut State, shared: &Shared, call: &Call, form: &[(String, String)]) -> Resp {
    let base = &shared.base_url;
    let tenant = &shared.tenant;
    if !call.tenant.eq_ignore_ascii_case(tenant) && call.endpoint != Endpoint::Authorize {
        return Resp::json(
            400,
            json!({"error": "invalid_tenant", "error_description": format!("AADSTS90002: Tenant '{}' not found.", call.tenant), "error_codes": [90002]}),
        );
    }
    if !call.tenant.eq_ignore_ascii_case(tenant) {
        return error_page(400, 90002, &format!("Tenant '{}' not found.", call.tenant));
    }
    let get_only = || {
        Resp::json(
            405,
            json!({"error": "invalid_request", "error_description": "AADSTS900561: The endpoint only accepts GET requests."}),
        )
    };
    match call.endpoint {
        Endpoint::Discovery if call.method == "GET" => Resp::json(200, discovery(base, tenant))
            .with_header("Content-Type", "application/json; charset=utf-8"),
        Endpoint::Keys if call.method == "GET" => Resp::json(200, oidc_token::jwks(base, tenant))
            .with_header("Content-Type", "application/json; charset=utf-8"),
        Endpoint::Discovery | Endpoint::Keys => get_only(),
        Endpoint::Authorize if call.method == "GET" || call.method == "POST" => {
            let params = parse_query(call.query.as_deref().unwrap_or(""));
            let login = form
                .iter()
                .find(|(k, _)| k == "login")
                .map(|(_, v)| v.trim().to_string());
            authorize(st, call, &params, login)
        }
        Endpoint::Authorize => Resp::html(405, page("Method not allowed", "", "")),
    }
}

/// The issuer of this tenant's ID tokens.
pub(crate) fn issuer(base: &str, tenant: &str) -> String {
    format!("{base}/{tenant}/v2.0")
}

/// The discovery document, shaped as Entra's v2.0 one (no
/// `code_challenge_methods_supported`: Entra does not publish it).
fn discovery(base: &str, tenant: &str) -> Value {
    json!({
        "token_endpoint": crate::token::token_url(base, tenant),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": issuer(base, tenant),
        "request_uri_parameter_supported": false,
        "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/{tenant}/oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(title: &str, message: &str, form: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title></head><body>\n<h1>{}</h1>\n{}{}</body></html>\n",
        esc(title),
        esc(title),
        if message.is_empty() {
            String::new()
        } else {
            format!("<p id=\"error\">{}</p>\n", esc(message))
        },
        form
    )
}

/// Entra's error page, for requests whose redirect URI cannot be trusted.
fn error_page(status: u16, code: u32, message: &str) -> Resp {
    let msg = format!(
        "AADSTS{code}: {message} Trace ID: {} Timestamp: {}",
        uuid::Uuid::new_v4(),
        aad_timestamp()
    );
    Resp::html(
        status,
        page("Sorry, but we're having trouble signing you in.", &msg, ""),
    )
}

/// The sign-in page: a form posting `login` back to the same URL.
fn sign_in_page(call: &Call, hint: &str, error: &str) -> Resp {
    let action = match &call.query {
        Some(q) => format!("{}?{q}", call.path),
        None => call.path.to_string(),
    };
    let form = format!(
        "<form method=\"post\" action=\"{}\">\n<label for=\"login\">Email, phone, or Skype</label>\n<input type=\"text\" name=\"login\" id=\"login\" value=\"{}\">\n<button type=\"submit\" id=\"signin\">Sign in</button>\n</form>\n",
        esc(&action),
        esc(hint)
    );
    Resp::html(200, page("Sign in to your account", error, &form))
}

/// Where and how the answer goes back to the client.
struct Reply<'a> {
    redirect_uri: &'a str,
    mode: &'a str,
    state: Option<&'a str>,
}

impl Reply<'_> {
    /// Sends `pairs` (plus `state`) to the redirect URI in the response mode.
    fn send(&self, mut pairs: Vec<(&str, String)>) -> Resp {
        if let Some(s) = self.state {
            pairs.push(("state", s.to_string()));
        }
        if self.mode == "form_post" {
            let inputs: String = pairs
                .iter()
                .map(|(k, v)| {
                    format!(
                        "<input type=\"hidden\" name=\"{}\" value=\"{}\">\n",
                        esc(k),
                        esc(v)
                    )
                })
                .collect();
            let form = format!(
                "<form method=\"post\" action=\"{}\">\n{inputs}<noscript><button type=\"submit\">Continue</button></noscript>\n</form>\n<script>document.forms[0].submit();</script>\n",
                esc(self.redirect_uri)
            );
            return Resp::html(200, page("Working...", "", &form));
        }
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &pairs {
            q.append_pair(k, v);
        }
        let q = q.finish();
        let sep = match (self.mode, self.redirect_uri.contains('?')) {
            ("fragment", _) => '#',
            (_, true) => '&',
            (_, false) => '?',
        };
        Resp::empty(302).with_header("Location", &format!("{}{sep}{q}", self.redirect_uri))
    }

    /// Sends an OAuth error as Entra does (`error`, `error_description` with the AADSTS code).
    fn error(&self, error: &str, code: u32, message: &str) -> Resp {
        let desc = format!(
            "AADSTS{code}: {message} Trace ID: {} Correlation ID: {} Timestamp: {}",
            uuid::Uuid::new_v4(),
            uuid::Uuid::new_v4(),
            aad_timestamp()
        );
        self.send(vec![
            ("error", error.to_string()),
            ("error_description", desc),
            (
                "error_uri",
                format!("https://login.microsoftonline.com/error?code={code}"),
            ),
        ])
    }
}

/// `GET` (and the sign-in form's `POST`) of the authorize endpoint.
fn authorize(
    st: &mut State,
    call: &Call,
    params: &[(String, String)],
    login: Option<String>,
) -> Resp {
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let Some(client_id) = get("client_id") else {
        return error_page(
            400,
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    };
    let Some(registered) = st.oidc.redirects.get(client_id) else {
        return error_page(
            400,
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'.",
                call.tenant
            ),
        );
    };
    let redirect_uri = match get("redirect_uri") {
        Some(r) => r.to_string(),
        None => registered.first().cloned().unwrap_or_default(),
    };
    if !registered.contains(&redirect_uri) {
        return error_page(
            400,
            50011,
            &format!(
                "The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs configured for the application '{client_id}'."
            ),
        );
    }
    let mode = get("response_mode").unwrap_or("query");
    let reply = Reply {
        redirect_uri: &redirect_uri,
        mode: if mode == "form_post" || mode == "fragment" {
            mode
        } else {
            "query"
        },
        state: get("state"),
    };
    if let Some(r) = check_request(&reply, mode, &get) {
        return r;
    }
    let upn = match st.oidc.next_sign_in.take().or(login) {
        Some(u) => Some((u, true)),
        None => get("login_hint").map(|h| (h.to_string(), false)),
    };
    let Some((upn, chosen)) = upn else {
        return sign_in_page(call, "", "");
    };
    let Some(entry) = st
        .find_user(&upn)
        .filter(|e| e.user.user_principal_name.eq_ignore_ascii_case(&upn))
    else {
        let error = if chosen {
            format!(
                "AADSTS50034: The user account {upn} does not exist in the {} directory. To sign into this application, the account must be added to the directory.",
                call.tenant
            )
        } else {
            String::new()
        };
        return sign_in_page(call, &upn, &error);
    };
    if !entry.user.account_enabled {
        return reply.error("access_denied", 50057, "The user account is disabled.");
    }
    let user_id = entry.user.id.clone();
    let code = format!(
        "1.{}.{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let auth = OidcAuthorization {
        client_id: client_id.to_string(),
        redirect_uri: redirect_uri.clone(),
        scope: get("scope").unwrap_or("").to_string(),
        state: get("state").map(str::to_string),
        nonce: get("nonce").map(str::to_string),
        code_challenge: get("code_challenge").map(str::to_string),
        code_challenge_method: get("code_challenge_method").map(str::to_string),
        response_mode: reply.mode.to_string(),
        user_principal_name: entry.user.user_principal_name.clone(),
        code: code.clone(),
        redemption_attempts: 0,
        redeemed: false,
    };
    st.oidc.codes.push((auth, user_id, Instant::now()));
    reply.send(vec![("code", code)])
}

/// The checks Entra makes once the redirect URI is trusted (errors go back to it).
fn check_request<'a>(
    reply: &Reply,
    mode: &str,
    get: &impl Fn(&str) -> Option<&'a str>,
) -> Option<Resp> {
    let Some(response_type) = get("response_type") else {
        return Some(reply.error(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'response_type'.",
        ));
    };
    if response_type != "code" {
        return Some(reply.error(
            "unsupported_response_type",
            700054,
            &format!("response_type '{response_type}' is not enabled for the application (the fake serves only the code flow)."),
        ));
    }
    if !matches!(mode, "query" | "fragment" | "form_post") {
        return Some(reply.error(
            "invalid_request",
            900144,
            &format!(
                "The response_mode '{mode}' is not supported; use query, fragment or form_post."
            ),
        ));
    }
    if get("scope").is_none() {
        return Some(reply.error(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        ));
    }
    if let Some(c) = get("code_challenge")
        && !(43..=128).contains(&c.len())
    {
        return Some(reply.error(
            "invalid_request",
            501491,
            "Invalid size of Code_Challenge parameter.",
        ));
    }
    match get("code_challenge_method") {
        None | Some("S256") | Some("plain") => None,
        Some(m) => Some(reply.error(
            "invalid_request",
            501492,
            &format!("The code_challenge_method '{m}' is not supported; use S256 or plain."),
        )),
    }
}

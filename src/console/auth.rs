//! Signing in and out: the sign-in page, the redirect to Entra ID, the
//! callback that verifies the ID token and starts a session, and sign-out.

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::ConsoleState;
use super::page::{PageError, Signed, form_urlencoded, render};
use super::session::{cookie, same_token};
use crate::access::{Caller, Claims, Interface};

/// A console path to return to after sign-in; anything else (another site,
/// `//host`, a path outside the console) becomes the console's home.
fn safe_return(to: Option<&str>) -> String {
    match to {
        Some(p)
            if p.starts_with("/console")
                && !p.starts_with("//")
                && !p.contains("\\")
                && !p.starts_with("/console/log")
                && !p.starts_with("/console/auth") =>
        {
            p.to_string()
        }
        _ => "/console".into(),
    }
}

/// The query of the sign-in page.
#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    return_to: Option<String>,
    go: Option<String>,
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    start: String,
    signed_out: bool,
}

/// `GET /console/login`: the sign-in page; with `go=1`, off to Entra ID.
pub async fn login(State(s): State<ConsoleState>, q: Query<LoginQuery>) -> Response {
    let back = safe_return(q.return_to.as_deref());
    if q.go.as_deref() != Some("1") {
        return render(&LoginPage {
            start: format!(
                "/console/login?{}",
                form_urlencoded(&[("go", "1"), ("return_to", &back)])
            ),
            signed_out: q.return_to.as_deref() == Some("signed-out"),
        });
    }
    let auth = match s.oidc.authorize().await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "console sign-in could not start");
            return PageError::new(StatusCode::BAD_GATEWAY, e.to_string()).into_response();
        }
    };
    let id = s
        .sessions
        .start_login(auth.state, auth.nonce, auth.verifier, back);
    let mut resp = Redirect::to(&auth.url).into_response();
    set_cookie(resp.headers_mut(), &s.cookies.login_cookie(&id));
    resp
}

fn set_cookie(h: &mut HeaderMap, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.append(header::SET_COOKIE, v);
    }
}

/// What Entra ID sends back.
#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

#[derive(Template)]
#[template(path = "console/continue.html")]
struct Continue {
    to: String,
}

/// `GET /console/auth/callback`: checks `state`, redeems the code with the
/// PKCE verifier, verifies the ID token and its nonce, maps roles, and starts
/// the session.
pub async fn callback(
    State(s): State<ConsoleState>,
    headers: HeaderMap,
    q: Query<CallbackQuery>,
) -> Response {
    match finish(&s, &headers, &q).await {
        Ok((session_id, to)) => {
            // A page of ours leads on, not a redirect: the session cookie is
            // `SameSite=Strict`, and a redirect chain that began at the identity
            // provider is cross-site, so the browser would not send it yet.
            let mut resp = render(&Continue { to });
            set_cookie(resp.headers_mut(), &s.cookies.session_cookie(&session_id));
            set_cookie(resp.headers_mut(), &s.cookies.clear(s.cookies.login));
            resp
        }
        Err(e) => {
            let mut resp = e.into_response();
            set_cookie(resp.headers_mut(), &s.cookies.clear(s.cookies.login));
            resp
        }
    }
}

async fn finish(
    s: &ConsoleState,
    headers: &HeaderMap,
    q: &CallbackQuery,
) -> Result<(String, String), PageError> {
    let refused = |m: String| PageError::new(StatusCode::FORBIDDEN, m);
    let pending = cookie(headers, s.cookies.login)
        .and_then(|id| s.sessions.finish_login(id))
        .ok_or_else(|| {
            refused(
                "This sign-in was not started in this browser, or it took too long. Sign in again."
                    .into(),
            )
        })?;
    if let Some(err) = &q.error {
        let why = q.error_description.as_deref().unwrap_or_default();
        tracing::warn!(error = %err, description = %crate::text::clip(why, 300), "console sign-in refused by the identity provider");
        return Err(refused(format!(
            "The identity provider refused the sign-in: {err}: {}",
            crate::text::clip(why, 300)
        )));
    }
    let (Some(code), Some(state)) = (&q.code, &q.state) else {
        return Err(PageError::bad_request(
            "The sign-in answer has no code or state.",
        ));
    };
    if !same_token(state, &pending.state) {
        tracing::warn!("console sign-in refused: state does not match");
        return Err(refused(
            "The sign-in answer does not belong to this sign-in (state mismatch). Sign in again."
                .into(),
        ));
    }
    let who = s
        .oidc
        .finish(code, &pending.verifier, &pending.nonce)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "console sign-in refused");
            refused(e.to_string())
        })?;
    let cfg = s.config();
    let roles = cfg.console.roles.roles_for(Claims {
        object_id: &who.object_id,
        upn: who.upn.as_deref(),
        groups: &who.groups,
    });
    let name = who.upn.clone().unwrap_or_else(|| who.object_id.clone());
    if roles.is_empty() {
        tracing::warn!(person = %name, object_id = %who.object_id, "console sign-in: no role");
        return Err(refused(format!(
            "{name} signed in, but holds no role in this console. Ask an administrator to add your object id ({}), UPN or group to [console.roles].",
            who.object_id
        )));
    }
    let role_words: Vec<&str> = roles.list().iter().map(|r| r.as_str()).collect();
    tracing::info!(person = %name, roles = %role_words.join(","), "console sign-in");
    let display = who.name.clone().unwrap_or_else(|| name.clone());
    let caller = Caller {
        name,
        interface: Interface::Console,
        roles,
    };
    Ok((s.sessions.create(caller, display), pending.return_to))
}

/// The sign-out form.
#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    csrf: Option<String>,
}

/// `POST /console/logout`: ends the session.
pub async fn logout(
    State(s): State<ConsoleState>,
    who: Signed,
    headers: HeaderMap,
    Form(f): Form<LogoutForm>,
) -> Response {
    if let Err(e) = who.check_csrf(f.csrf.as_deref()) {
        return e.into_response();
    }
    if let Some(id) = cookie(&headers, s.cookies.session) {
        s.sessions.end(id);
    }
    tracing::info!(person = %who.0.caller.name, "console sign-out");
    let mut resp = Redirect::to("/console/login?return_to=signed-out").into_response();
    set_cookie(resp.headers_mut(), &s.cookies.clear(s.cookies.session));
    resp
}

#[cfg(test)]
mod tests {
    use super::safe_return;

    #[test]
    fn only_console_paths_are_returned_to() {
        assert_eq!(
            safe_return(Some("/console/approvals")),
            "/console/approvals"
        );
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/other",
            "/console/logout",
            "/console\\x",
        ] {
            assert_eq!(safe_return(Some(bad)), "/console", "{bad}");
        }
        assert_eq!(safe_return(None), "/console");
    }
}

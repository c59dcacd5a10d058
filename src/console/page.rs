//! What every page shares: the signed-in person (an extractor that sends
//! anyone else to sign in), the page chrome, CSRF checks, rendering and the
//! error page; and the first page, the tenant picker.

use askama::Template;
use axum::extract::{FromRequestParts, OriginalUri, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::ConsoleState;
use super::session::{Session, cookie, same_token};
use crate::access::Role;

/// The signed-in person of a request; pages that take it are for them only.
pub struct Signed(pub Session);

impl FromRequestParts<ConsoleState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &ConsoleState) -> Result<Self, Response> {
        let cfg = s.config();
        let session = cookie(&parts.headers, s.cookies.session).and_then(|id| {
            s.sessions.touch(
                id,
                cfg.console.idle_timeout.0,
                cfg.console.session_lifetime.0,
            )
        });
        match session {
            Some(sess) if !sess.caller.roles.is_empty() => Ok(Signed(sess)),
            Some(_) => Err(PageError::new(
                StatusCode::FORBIDDEN,
                "You are signed in but hold no role in this console. Ask an administrator to add your object id, UPN or group to [console.roles].",
            )
            .into_response()),
            None if parts.method == axum::http::Method::GET => {
                let here = OriginalUri::from_request_parts(parts, s)
                    .await
                    .map(|u| u.0.path().to_string())
                    .unwrap_or_default();
                let back = if here.starts_with("/console") && !here.starts_with("/console/log") {
                    here
                } else {
                    "/console".into()
                };
                let q = form_urlencoded(&[("return_to", &back)]);
                Err(Redirect::to(&format!("/console/login?{q}")).into_response())
            }
            None => Err(PageError::new(
                StatusCode::UNAUTHORIZED,
                "Your session has ended. Sign in again; nothing was changed.",
            )
            .into_response()),
        }
    }
}

/// `k=v&...`, percent-encoded.
pub fn form_urlencoded(pairs: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push('&');
        }
        s.push_str(&urlencode(k));
        s.push('=');
        s.push_str(&urlencode(v));
    }
    s
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Signed {
    /// The chrome every page shows: who is signed in, the logout form's token.
    pub fn chrome(&self) -> Chrome {
        Chrome {
            user: self.0.display_name.clone(),
            name: self.0.caller.name.clone(),
            roles: self
                .0
                .caller
                .roles
                .list()
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            csrf: self.0.csrf.clone(),
            may_request: self.0.caller.may(Role::Operator),
            may_decide: self.0.caller.may(Role::Approver),
        }
    }

    /// Refuses unless the caller holds `role`.
    pub fn require(&self, role: Role) -> Result<(), PageError> {
        if self.0.caller.may(role) {
            Ok(())
        } else {
            Err(PageError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "This needs the {role} role; you hold: {}. Nothing was changed.",
                    self.chrome().roles
                ),
            ))
        }
    }

    /// Refuses a state-changing request whose form does not carry this
    /// session's CSRF token.
    pub fn check_csrf(&self, token: Option<&str>) -> Result<(), PageError> {
        match token {
            Some(t) if same_token(t, &self.0.csrf) => Ok(()),
            _ => Err(PageError::new(
                StatusCode::FORBIDDEN,
                "The form's security token is missing or wrong (was the page open in another session?). Reload the page and try again; nothing was changed.",
            )),
        }
    }
}

/// The parts of the layout every signed-in page fills.
#[derive(Debug, Clone)]
pub struct Chrome {
    /// Display name.
    pub user: String,
    /// The recorded name (UPN).
    pub name: String,
    /// The roles held, as words.
    pub roles: String,
    /// The session's CSRF token for the page's forms.
    pub csrf: String,
    /// Whether the person may request remediations.
    pub may_request: bool,
    /// Whether the person may approve or reject.
    pub may_decide: bool,
}

/// A page that could not be shown, with what to tell the person.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    /// An error page with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> PageError {
        PageError {
            status,
            message: message.into(),
        }
    }

    /// A 400 naming what is wrong with the request.
    pub fn bad_request(message: impl Into<String>) -> PageError {
        PageError::new(StatusCode::BAD_REQUEST, message)
    }

    /// A 404.
    pub fn not_found(message: impl Into<String>) -> PageError {
        PageError::new(StatusCode::NOT_FOUND, message)
    }

    /// A 500 for a failure of ours; the details go to the log only.
    pub fn internal(what: &str, e: &dyn std::fmt::Display) -> PageError {
        tracing::error!(error = %e, "console: {what}");
        PageError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{what} failed; the daemon's log has the details."),
        )
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    message: &'a str,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            status: self.status.as_u16(),
            reason: self.status.canonical_reason().unwrap_or("Error"),
            message: &self.message,
        };
        match page.render() {
            Ok(html) => (self.status, Html(html)).into_response(),
            Err(_) => (self.status, self.message).into_response(),
        }
    }
}

/// Renders a template, or the error page when rendering fails.
pub fn render<T: Template>(t: &T) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => PageError::internal("rendering the page", &e).into_response(),
    }
}

/// One tenant on the tenant picker.
pub struct TenantRow {
    /// Its name.
    pub name: String,
    /// Its mode.
    pub mode: String,
    /// Its scans, newest first: (timestamp for the URL, as shown, identities, findings).
    pub scans: Vec<(String, String, usize, usize)>,
    /// Why its scans cannot be listed, if they cannot.
    pub note: Option<String>,
}

#[derive(Template)]
#[template(path = "console/home.html")]
struct Home {
    chrome: Chrome,
    tenants: Vec<TenantRow>,
}

/// `GET /console`: pick a tenant and a scan.
pub async fn home(State(s): State<ConsoleState>, who: Signed) -> Response {
    let cfg = s.config();
    let mut tenants = Vec::new();
    for t in &cfg.tenants {
        let mut row = TenantRow {
            name: t.name.clone(),
            mode: t.mode_under(cfg.mode).to_string(),
            scans: Vec::new(),
            note: None,
        };
        match s.scans.list(&cfg, &t.name).await {
            Ok(list) => {
                for e in list.into_iter().take(50) {
                    if let Some(at) = e.scanned_at {
                        row.scans.push((
                            at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                            at.format("%Y-%m-%d %H:%M UTC").to_string(),
                            e.identities,
                            e.findings,
                        ));
                    }
                }
            }
            Err(e) => row.note = Some(format!("only the newest scan is shown: {e}")),
        }
        tenants.push(row);
    }
    render(&Home {
        chrome: who.chrome(),
        tenants,
    })
}

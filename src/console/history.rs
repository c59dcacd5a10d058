//! Remediation history in the browser: actions filtered by tenant, identity,
//! action, state, rule or person and time, newest first and paged; the audit
//! chain's verification on request.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;

use super::ConsoleState;
use super::page::{Chrome, PageError, Signed, form_urlencoded, render};
use crate::domain::Action;
use crate::store::Filter;

/// Rows per history page.
const PER_PAGE: usize = 100;

/// The history filters, as the form sends them (empty means any).
#[derive(Debug, Default, Deserialize)]
pub struct HistoryQuery {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    identity: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    rule: String,
    #[serde(default)]
    person: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    run: String,
    #[serde(default)]
    recorded: Option<usize>,
    #[serde(default)]
    page: Option<i64>,
}

fn some(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// A `YYYY-MM-DD` day (midnight UTC) or an RFC 3339 time.
fn parse_day(field: &str, s: &str) -> Result<Option<DateTime<Utc>>, PageError> {
    let t = s.trim();
    if t.is_empty() {
        return Ok(None);
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).map(|n| n.and_utc()));
    }
    DateTime::parse_from_rfc3339(t)
        .map(|d| Some(d.with_timezone(&Utc)))
        .map_err(|_| {
            PageError::bad_request(format!(
                "{field} {t:?} is not a day (YYYY-MM-DD) or an RFC 3339 time"
            ))
        })
}

impl HistoryQuery {
    /// The store filter these fields ask for.
    pub fn filter(&self) -> Result<Filter, PageError> {
        if let Some(a) = some(&self.action)
            && crate::domain::WorkKind::parse(&a).is_none()
        {
            return Err(PageError::bad_request(format!(
                "action {a:?} is not one of the actions"
            )));
        }
        Ok(Filter {
            tenant: some(&self.tenant),
            identity: some(&self.identity),
            action: some(&self.action),
            state: some(&self.state),
            rule: some(&self.rule),
            person: some(&self.person),
            run: some(&self.run),
            since: parse_day("since", &self.since)?,
            until: parse_day("until", &self.until)?,
            ..Filter::default()
        })
    }

    /// The query string of these filters (for paging and export links).
    fn query(&self) -> String {
        form_urlencoded(&[
            ("tenant", &self.tenant),
            ("identity", &self.identity),
            ("action", &self.action),
            ("state", &self.state),
            ("rule", &self.rule),
            ("person", &self.person),
            ("since", &self.since),
            ("until", &self.until),
            ("run", &self.run),
        ])
    }
}

#[derive(Template)]
#[template(path = "console/history.html")]
struct HistoryPage {
    chrome: Chrome,
    q: HistoryQuery,
    rows: Vec<Action>,
    page: i64,
    more: bool,
    query: String,
    tenants: Vec<String>,
    kinds: Vec<&'static str>,
}

/// `GET /console/history`: the actions matching the filters, a page at a time.
pub async fn history(
    State(s): State<ConsoleState>,
    who: Signed,
    q: Query<HistoryQuery>,
) -> Response {
    let Query(q) = q;
    let filter = match q.filter() {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let page = q.page.unwrap_or(1).max(1);
    let at = usize::try_from(page).unwrap_or(1);
    let (rows, more) = match crate::service::history::actions_page(
        s.store.as_ref(),
        &filter,
        at,
        PER_PAGE,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => return PageError::internal("reading history", &e).into_response(),
    };
    let cfg = s.config();
    render(&HistoryPage {
        chrome: who.chrome(),
        query: q.query(),
        q,
        rows,
        page,
        more,
        tenants: cfg.tenants.iter().map(|t| t.name.clone()).collect(),
        kinds: crate::domain::ActionKind::ALL
            .iter()
            .map(|k| k.as_str())
            .chain(["undo"])
            .collect(),
    })
}

/// `GET /console/history.csv`: every action matching the filters, as CSV.
pub async fn history_csv(
    State(s): State<ConsoleState>,
    _who: Signed,
    q: Query<HistoryQuery>,
) -> Response {
    let filter = match q.filter() {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let mut bytes = Vec::new();
    match crate::service::history::export_actions_csv(
        s.store.as_ref(),
        &filter,
        Utc::now(),
        &mut bytes,
    )
    .await
    {
        Ok(_) => (
            [
                (axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    axum::http::header::CONTENT_DISPOSITION,
                    "attachment; filename=\"remediation-history.csv\"",
                ),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => PageError::internal("exporting history", &e).into_response(),
    }
}

#[derive(Template)]
#[template(path = "console/verify.html")]
struct VerifyPage {
    chrome: Chrome,
    ok: bool,
    events: u64,
    problems: Vec<String>,
    checked_at: String,
}

/// `GET /console/history/verify`: re-computes the audit chain and shows the result.
pub async fn verify(State(s): State<ConsoleState>, who: Signed) -> Response {
    match crate::service::history::chain_status(s.store.as_ref(), Utc::now()).await {
        Ok(r) => render(&VerifyPage {
            chrome: who.chrome(),
            ok: r.ok,
            events: r.events,
            problems: r.problems,
            checked_at: r.checked_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        }),
        Err(e) => PageError::internal("verifying the audit chain", &e).into_response(),
    }
}

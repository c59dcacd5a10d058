//! A person's remediation from the console: the form of a finding or an
//! identity page is reviewed first (the exact plan: each target, what it
//! changes, what the guardrails refused and why, the mode it will run under),
//! then confirmed; large bulk selections need their size typed. Both steps call
//! the same use case as the CLI and the API, as the signed-in person.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;

use super::ConsoleState;
use super::page::{Chrome, PageError, Signed, form_urlencoded, render};
use super::posture::view;
use crate::domain::ActionKind;
use crate::plan::{PlannedAction, Verdict};
use crate::service::remediate::{self, RemediateError, RemediationRequest, Selection};

/// Rows of each kind a review page lists (the counts are always complete).
const SHOWN: usize = 300;

/// The remediation form, as posted (identities and targets repeat).
#[derive(Debug, Default, Clone)]
pub struct RemediateForm {
    csrf: Option<String>,
    scan: String,
    finding: String,
    scope: String,
    action: String,
    identities: Vec<String>,
    targets: Vec<String>,
    reason: String,
    typed: String,
}

impl RemediateForm {
    fn parse(body: &[u8]) -> RemediateForm {
        let mut f = RemediateForm::default();
        for (k, v) in form_urlencoded::parse(body) {
            let v = v.into_owned();
            match k.as_ref() {
                "csrf" => f.csrf = Some(v),
                "scan" => f.scan = v,
                "finding" => f.finding = v,
                "scope" => f.scope = v,
                "action" => f.action = v,
                "identity" => f.identities.push(v),
                "target" => f.targets.push(v),
                "reason" => f.reason = v,
                "typed" => f.typed = v,
                _ => {}
            }
        }
        f
    }

    /// The hidden fields that carry this request from review to confirmation.
    fn hidden(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![
            ("scan", self.scan.clone()),
            ("finding", self.finding.clone()),
            ("scope", self.scope.clone()),
            ("action", self.action.clone()),
            ("reason", self.reason.clone()),
        ];
        h.extend(self.identities.iter().map(|i| ("identity", i.clone())));
        h.extend(self.targets.iter().map(|t| ("target", t.clone())));
        h
    }

    fn request(&self, who: &Signed, tenant: &str) -> Result<RemediationRequest, PageError> {
        let kind = ActionKind::parse(&self.action).ok_or_else(|| {
            PageError::bad_request(format!(
                "action {:?} is not one of the six actions",
                self.action
            ))
        })?;
        let selection = if self.scope == "finding" {
            if self.finding.is_empty() {
                return Err(PageError::bad_request(
                    "Everyone a finding affects was chosen, but no finding was given.",
                ));
            }
            Selection::Finding(self.finding.clone())
        } else {
            if self.identities.is_empty() {
                return Err(PageError::bad_request(
                    "Select at least one identity (or choose everyone the finding affects). Nothing was changed.",
                ));
            }
            Selection::Identities(self.identities.clone())
        };
        Ok(RemediationRequest {
            tenant: tenant.to_string(),
            kind,
            selection,
            targets: self.targets.clone(),
            reason: self.reason.clone(),
            caller: who.0.caller.clone(),
            now: Utc::now(),
        })
    }
}

fn refused(e: RemediateError) -> PageError {
    match e {
        RemediateError::Forbidden(m) => PageError::new(StatusCode::FORBIDDEN, m),
        RemediateError::Store(e) => PageError::internal("recording the request", &e),
        RemediateError::UnknownTenant(_) => PageError::not_found(e.to_string()),
        other => PageError::bad_request(format!("{other}. Nothing was changed.")),
    }
}

/// One row of the review page.
pub struct Line {
    /// The identity.
    pub upn: String,
    /// Its name.
    pub name: String,
    /// The action.
    pub kind: &'static str,
    /// What it changes.
    pub effect: &'static str,
    /// Role assignment / group ids.
    pub targets: String,
    /// The mode it runs under.
    pub mode: String,
    /// Why it was refused or excepted; empty when it goes ahead.
    pub why: String,
}

fn line(a: &PlannedAction) -> Line {
    Line {
        upn: a.identity_upn.clone(),
        name: a.identity_name.clone(),
        kind: a.kind.as_str(),
        effect: a.kind.effect(),
        targets: a.targets.join(", "),
        mode: a.mode.to_string(),
        why: match &a.decision {
            Verdict::Proceed => String::new(),
            Verdict::Refused(w) => format!("refused: {w}"),
            Verdict::Excepted(w) => format!("excepted: {w}"),
        },
    }
}

#[derive(Template)]
#[template(path = "console/review.html")]
struct Review {
    chrome: Chrome,
    tenant: String,
    scan_label: String,
    mode: String,
    downgrades: Vec<String>,
    proceeding: usize,
    refused: usize,
    going: Vec<Line>,
    stopped: Vec<Line>,
    hidden: Vec<(&'static str, String)>,
    typed_needed: Option<usize>,
    reason: String,
}

/// `POST /console/t/{tenant}/remediate`: the plan the request would make;
/// nothing is recorded.
pub async fn review(
    State(s): State<ConsoleState>,
    who: Signed,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Result<Response, PageError> {
    let f = RemediateForm::parse(&body);
    who.check_csrf(f.csrf.as_deref())?;
    remediate::authorize(&who.0.caller).map_err(refused)?;
    let req = f.request(&who, &tenant)?;
    let v = view(&s, &tenant, &f.scan).await?;
    let cfg = s.config();
    let p = remediate::preview(&cfg, Some(s.store.as_ref()), &v.loaded, &req)
        .await
        .map_err(refused)?;
    let (go, stop): (Vec<&PlannedAction>, Vec<&PlannedAction>) = p
        .plan
        .actions
        .iter()
        .partition(|a| a.decision == Verdict::Proceed);
    let typed_needed = (p.identities > cfg.console.bulk_confirm_over).then_some(p.identities);
    Ok(render(&Review {
        chrome: who.chrome(),
        tenant,
        scan_label: format!(
            "{} ({})",
            p.scanned_at.format("%Y-%m-%d %H:%M UTC"),
            p.scan_source
        ),
        mode: p.plan.mode.to_string(),
        downgrades: p.plan.downgrades.clone(),
        proceeding: go.len(),
        refused: stop.len(),
        going: go.iter().take(SHOWN).map(|a| line(a)).collect(),
        stopped: stop.iter().take(SHOWN).map(|a| line(a)).collect(),
        hidden: f.hidden(),
        typed_needed,
        reason: f.reason.trim().to_string(),
    }))
}

/// `POST /console/t/{tenant}/remediate/confirm`: records the request as
/// reviewed, under the tenant's mode, as the signed-in person.
pub async fn confirm(
    State(s): State<ConsoleState>,
    who: Signed,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Result<Response, PageError> {
    let f = RemediateForm::parse(&body);
    who.check_csrf(f.csrf.as_deref())?;
    remediate::authorize(&who.0.caller).map_err(refused)?;
    let req = f.request(&who, &tenant)?;
    let v = view(&s, &tenant, &f.scan).await?;
    let cfg = s.config();
    let p = remediate::preview(&cfg, Some(s.store.as_ref()), &v.loaded, &req)
        .await
        .map_err(refused)?;
    if p.identities > cfg.console.bulk_confirm_over && f.typed.trim() != p.identities.to_string() {
        return Err(PageError::bad_request(format!(
            "This request selects {} identities: type that number to confirm it. Nothing was changed.",
            p.identities
        )));
    }
    let done = remediate::submit(&cfg, s.store.as_ref(), &v.loaded, &req)
        .await
        .map_err(refused)?;
    tracing::info!(tenant = %tenant, run = %done.run_id, actions = done.ids.len(), by = %who.0.caller.name, "remediation requested in the console");
    let _ = s.requests.try_send(crate::api::DaemonRequest::Execute {
        tenant: tenant.clone(),
    });
    let q = form_urlencoded(&[
        ("run", &done.run_id),
        ("recorded", &done.ids.len().to_string()),
    ]);
    Ok(Redirect::to(&format!("/console/history?{q}")).into_response())
}

//! The posture pages of one scan: the dashboard (findings by severity, the
//! riskiest identities, what was done), a finding with who it affects
//! (search, sort, paging, multi-select), and an identity with its roles,
//! groups, findings and history.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::ConsoleState;
use super::page::{Chrome, PageError, Signed, form_urlencoded, render};
use crate::domain::{Action, ActionKind};
use crate::scan::{AssignmentType, Identity};
use crate::service::posture::{self, AffectedQuery, Dashboard, FindingPage, IdentityRow, SortKey};
use crate::service::scan_view::{RANKING, ScanView};

/// The scan a page shows: `scan=<scanned_at>` in the URL, the newest without.
#[derive(Debug, Default, Deserialize)]
pub struct ScanQuery {
    #[serde(default)]
    scan: String,
}

/// Parses the `scan` parameter.
pub fn scan_time(s: &str) -> Result<Option<DateTime<Utc>>, PageError> {
    let t = s.trim();
    if t.is_empty() {
        return Ok(None);
    }
    DateTime::parse_from_rfc3339(t)
        .map(|d| Some(d.with_timezone(&Utc)))
        .map_err(|_| {
            PageError::bad_request(format!(
                "scan {t:?} is not an RFC 3339 time (the scan's scanned_at)"
            ))
        })
}

/// The view of the tenant's chosen scan, loaded once and kept.
pub async fn view(s: &ConsoleState, tenant: &str, scan: &str) -> Result<Arc<ScanView>, PageError> {
    let cfg = s.config();
    if cfg.tenant(tenant).is_none() {
        return Err(PageError::not_found(format!(
            "No tenant named {tenant:?} is configured."
        )));
    }
    let at = scan_time(scan)?;
    s.scans
        .get(&cfg, tenant, at, Utc::now())
        .await
        .map_err(|e| {
            PageError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                format!("The scan cannot be shown: {e}"),
            )
        })
}

/// What every page of one scan shows about it.
pub struct ScanHead {
    /// Tenant name.
    pub tenant: String,
    /// `scanned_at` as the URL carries it.
    pub scan: String,
    /// As shown.
    pub scanned_at: String,
    /// Which scanner wrote it.
    pub scanner: String,
    /// The file or URL.
    pub source: String,
}

impl ScanHead {
    fn of(tenant: &str, v: &ScanView) -> ScanHead {
        let at = v.loaded.scan.scanned_at;
        ScanHead {
            tenant: tenant.to_string(),
            scan: at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            scanned_at: at.format("%Y-%m-%d %H:%M UTC").to_string(),
            scanner: v
                .loaded
                .scan
                .scanner
                .clone()
                .unwrap_or_else(|| "unknown scanner".into()),
            source: v.loaded.source_name.clone(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/dashboard.html")]
struct DashboardPage {
    chrome: Chrome,
    head: ScanHead,
    d: Dashboard,
    ranking: &'static str,
    scans: Vec<(String, String)>,
}

/// `GET /console/t/{tenant}`: the posture dashboard of the chosen scan.
pub async fn dashboard(
    State(s): State<ConsoleState>,
    who: Signed,
    Path(tenant): Path<String>,
    Query(q): Query<ScanQuery>,
) -> Result<Response, PageError> {
    let v = view(&s, &tenant, &q.scan).await?;
    let d = posture::dashboard(s.store.as_ref(), &v)
        .await
        .map_err(|e| PageError::internal("reading the dashboard", &e))?;
    let scans = s
        .scans
        .list(&s.config(), &tenant)
        .await
        .map(|list| {
            list.into_iter()
                .filter_map(|e| e.scanned_at)
                .take(50)
                .map(|at| {
                    (
                        at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                        at.format("%Y-%m-%d %H:%M UTC").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(render(&DashboardPage {
        chrome: who.chrome(),
        head: ScanHead::of(&tenant, &v),
        d,
        ranking: RANKING,
        scans,
    }))
}

/// The search, sort and page of a finding page.
#[derive(Debug, Default, Deserialize)]
pub struct FindingQuery {
    #[serde(default)]
    scan: String,
    #[serde(default)]
    q: String,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    dir: String,
    #[serde(default)]
    page: Option<usize>,
}

/// A remediation a form offers: its name and what it changes.
pub struct Offer {
    /// The action's name (the form's value).
    pub kind: &'static str,
    /// What it changes in Entra ID.
    pub effect: &'static str,
}

/// The bulk-capable actions, for the finding page's form.
fn bulk_offers() -> Vec<Offer> {
    ActionKind::ALL
        .iter()
        .filter(|k| k.is_bulk())
        .map(|k| Offer {
            kind: k.as_str(),
            effect: k.effect(),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "console/finding.html")]
struct FindingView {
    chrome: Chrome,
    head: ScanHead,
    f: FindingPage,
    q: String,
    sort: &'static str,
    desc: bool,
    base: String,
    offers: Vec<Offer>,
}

/// `GET /console/t/{tenant}/findings/{id}`: a finding and who it affects.
pub async fn finding(
    State(s): State<ConsoleState>,
    who: Signed,
    Path((tenant, id)): Path<(String, String)>,
    Query(q): Query<FindingQuery>,
) -> Result<Response, PageError> {
    let v = view(&s, &tenant, &q.scan).await?;
    let sort = if q.sort.is_empty() {
        SortKey::Risk
    } else {
        SortKey::parse(&q.sort).ok_or_else(|| {
            PageError::bad_request(format!(
                "sort {:?} must be upn, name, risk, last_sign_in or findings",
                q.sort
            ))
        })?
    };
    let desc = match q.dir.as_str() {
        "" => sort == SortKey::Risk || sort == SortKey::Findings,
        "desc" => true,
        "asc" => false,
        other => {
            return Err(PageError::bad_request(format!(
                "dir {other:?} must be asc or desc"
            )));
        }
    };
    let query = AffectedQuery {
        q: Some(q.q.trim().to_string()).filter(|t| !t.is_empty()),
        sort,
        desc,
        page: q.page.unwrap_or(1).max(1),
        per_page: 50,
    };
    let f = posture::finding_page(&v, &id, &query)
        .ok_or_else(|| PageError::not_found(format!("The scan has no finding {id:?}.")))?;
    let head = ScanHead::of(&tenant, &v);
    let base = format!(
        "/console/t/{}/findings/{}?{}",
        enc(&tenant),
        enc(&id),
        form_urlencoded(&[("scan", &head.scan), ("q", &q.q)])
    );
    Ok(render(&FindingView {
        chrome: who.chrome(),
        head,
        f,
        q: q.q.clone(),
        sort: sort.as_str(),
        desc,
        base,
        offers: bulk_offers(),
    }))
}

fn enc(s: &str) -> String {
    form_urlencoded(&[("", s)])
        .trim_start_matches('=')
        .to_string()
}

/// One role assignment on the identity page.
pub struct RoleLine {
    /// The assignment id (what removal deletes).
    pub id: String,
    /// The role's name.
    pub role: String,
    /// Active or eligible.
    pub kind: &'static str,
    /// Held through this group, if so.
    pub via_group: Option<String>,
    /// Whether it can be removed here (active and direct).
    pub removable: bool,
}

/// One group membership on the identity page.
pub struct GroupLine {
    /// Group id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Dynamic membership (never changed by us).
    pub dynamic: bool,
}

#[derive(Template)]
#[template(path = "console/identity.html")]
struct IdentityView {
    chrome: Chrome,
    head: ScanHead,
    row: IdentityRow,
    roles: Vec<RoleLine>,
    groups: Vec<GroupLine>,
    findings: Vec<posture::FindingRow>,
    actions: Vec<Action>,
    more_actions: bool,
    offers: Vec<Offer>,
}

fn lines(ident: &Identity) -> (Vec<RoleLine>, Vec<GroupLine>) {
    let roles = ident
        .roles
        .iter()
        .map(|r| RoleLine {
            id: r.assignment_id.clone(),
            role: r.role_name.clone(),
            kind: match r.assignment_type {
                AssignmentType::Active => "active",
                AssignmentType::Eligible => "eligible",
            },
            via_group: r.via_group.as_ref().map(|g| g.0.to_string()),
            removable: r.assignment_type == AssignmentType::Active && r.via_group.is_none(),
        })
        .collect();
    let groups = ident
        .groups
        .iter()
        .map(|g| GroupLine {
            id: g.id.0.to_string(),
            name: g.display_name.to_string(),
            dynamic: g.dynamic,
        })
        .collect();
    (roles, groups)
}

/// `GET /console/t/{tenant}/identities/{id}`: one identity, its findings,
/// its history, and every action that can be asked for it.
pub async fn identity(
    State(s): State<ConsoleState>,
    who: Signed,
    Path((tenant, id)): Path<(String, String)>,
    Query(q): Query<ScanQuery>,
) -> Result<Response, PageError> {
    let v = view(&s, &tenant, &q.scan).await?;
    let page = posture::identity_page(s.store.as_ref(), &v, &tenant, &id)
        .await
        .map_err(|e| PageError::internal("reading the identity", &e))?
        .ok_or_else(|| PageError::not_found(format!("The scan has no identity {id:?}.")))?;
    let (roles, groups) = lines(&page.identity);
    Ok(render(&IdentityView {
        chrome: who.chrome(),
        head: ScanHead::of(&tenant, &v),
        row: page.row,
        roles,
        groups,
        findings: page.findings,
        actions: page.actions,
        more_actions: page.more_actions,
        offers: bulk_offers(),
    }))
}

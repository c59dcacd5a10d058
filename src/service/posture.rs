//! The console's read models of one scan, as plain data: the posture
//! dashboard, a finding's page (who is affected: search, sort, paging at
//! 100,000 identities without cloning them) and an identity's page.

use std::cmp::Ordering;

use crate::domain::{Action, ActionState};
use crate::scan::{Finding, Identity, LastSignIn, Severity, UserType};
use crate::store::{Filter, Store, StoreError};

use super::scan_view::{ScanView, privileged_roles};

/// Identities listed as the riskiest on the dashboard.
pub const TOP: usize = 10;
/// The newest actions an identity page lists.
pub const IDENTITY_ACTIONS: usize = 200;

/// One finding as the pages list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindingRow {
    /// The scanner's finding id.
    pub id: String,
    /// Short title.
    pub title: String,
    /// Severity.
    pub severity: Severity,
    /// Category.
    pub category: String,
    /// Identities it affects.
    pub affected: usize,
}

/// One identity as the pages list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRow {
    /// Its index in the scan (stable for the view).
    pub index: u32,
    /// Object id.
    pub id: String,
    /// UPN, when the scan knows it.
    pub upn: Option<String>,
    /// Display name.
    pub display_name: String,
    /// Member or guest, when known.
    pub user_type: Option<UserType>,
    /// Whether sign-in is allowed, when known.
    pub enabled: Option<bool>,
    /// The scanner's 0-100 risk score, if any.
    pub risk_score: Option<u8>,
    /// Whether MFA methods are registered, when known.
    pub mfa_registered: Option<bool>,
    /// The last sign-in as text: an RFC 3339 time, `never` or `unknown`.
    pub last_sign_in: String,
    /// How many of the scan's findings affect it.
    pub findings: usize,
    /// True when it holds an active highly privileged role.
    pub privileged: bool,
}

/// What was done with one scan: its runs' actions by state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionCounts {
    /// Planned by a dry run.
    pub planned: u64,
    /// Refused by a guardrail.
    pub refused: u64,
    /// Waiting for approval.
    pub pending: u64,
    /// Approved, waiting for execution.
    pub approved: u64,
    /// Ready (enforce mode) or executing.
    pub ready: u64,
    /// Done, or found already done.
    pub done: u64,
    /// Failed for good.
    pub failed: u64,
    /// Skipped by an exception.
    pub skipped: u64,
    /// Rejected, expired or carried over.
    pub other: u64,
}

impl ActionCounts {
    /// Counts from the store's (state, count) pairs.
    pub fn from_states(counts: &[(ActionState, u64)]) -> ActionCounts {
        let mut c = ActionCounts::default();
        for &(state, n) in counts {
            let slot = match state {
                ActionState::Planned => &mut c.planned,
                ActionState::Refused => &mut c.refused,
                ActionState::Pending => &mut c.pending,
                ActionState::Approved => &mut c.approved,
                ActionState::Ready | ActionState::Executing => &mut c.ready,
                ActionState::Done | ActionState::AlreadyDone => &mut c.done,
                ActionState::Failed => &mut c.failed,
                ActionState::Skipped => &mut c.skipped,
                ActionState::Rejected | ActionState::Expired | ActionState::CarriedOver => {
                    &mut c.other
                }
            };
            *slot += n;
        }
        c
    }

    /// Every action counted.
    pub fn total(&self) -> u64 {
        self.planned
            + self.refused
            + self.pending
            + self.approved
            + self.ready
            + self.done
            + self.failed
            + self.skipped
            + self.other
    }
}

/// The posture dashboard of one scan.
#[derive(Debug, Clone)]
pub struct Dashboard {
    /// Every finding, most severe first, then by identities affected.
    pub findings: Vec<FindingRow>,
    /// Per severity, most severe first: (severity, findings, distinct identities).
    pub by_severity: Vec<(Severity, usize, usize)>,
    /// The riskiest identities (see `scan_view::RANKING`).
    pub top: Vec<IdentityRow>,
    /// The actions recorded by this scan's runs, by state.
    pub actions: ActionCounts,
    /// Checks the scanner could not evaluate.
    pub not_evaluated: usize,
    /// Identities in the scan.
    pub identities: usize,
}

/// The severities, most severe first.
const SEVERITIES: [Severity; 5] = [
    Severity::Critical,
    Severity::High,
    Severity::Medium,
    Severity::Low,
    Severity::Info,
];

fn finding_row(view: &ScanView, f: &Finding) -> FindingRow {
    FindingRow {
        id: f.id.clone(),
        title: f.title.clone(),
        severity: f.severity,
        category: f.category.clone(),
        affected: view.by_finding.get(&f.id).map_or(0, Vec::len),
    }
}

/// How the pages show a last sign-in.
fn sign_in_text(s: LastSignIn) -> String {
    match s {
        LastSignIn::Unknown => "unknown".into(),
        LastSignIn::Never => "never".into(),
        LastSignIn::At(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }
}

/// The row of the identity at `index`.
pub fn identity_row(view: &ScanView, index: u32) -> Option<IdentityRow> {
    let ident = view.identity(index)?;
    Some(IdentityRow {
        index,
        id: ident.id.0.to_string(),
        upn: ident.user_principal_name.clone(),
        display_name: ident.display_name.clone(),
        user_type: ident.user_type,
        enabled: ident.account_enabled,
        risk_score: ident.risk_score,
        mfa_registered: ident.mfa_registered,
        last_sign_in: sign_in_text(ident.last_sign_in),
        findings: view.findings_of.get(index as usize).map_or(0, Vec::len),
        privileged: privileged_roles(ident) > 0,
    })
}

/// The dashboard of a scan view; one store query (the action counts).
pub async fn dashboard(store: &dyn Store, view: &ScanView) -> Result<Dashboard, StoreError> {
    let counts = store
        .scan_action_counts(&view.tenant, &view.loaded.sha256)
        .await?;
    let scan = &view.loaded.scan;
    let mut findings: Vec<FindingRow> =
        scan.findings.iter().map(|f| finding_row(view, f)).collect();
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.affected.cmp(&a.affected))
            .then_with(|| a.id.cmp(&b.id))
    });
    // Per identity, a bit per severity it has a finding of.
    let mut people = [0usize; 5];
    for fs in &view.findings_of {
        let mut seen = 0u8;
        for &f in fs {
            if let Some(f) = scan.findings.get(f as usize) {
                seen |= 1 << (f.severity as u8);
            }
        }
        for (i, s) in SEVERITIES.iter().enumerate() {
            if seen & (1 << (*s as u8)) != 0 {
                people[i] += 1;
            }
        }
    }
    let by_severity = SEVERITIES
        .iter()
        .zip(people)
        .map(|(&s, n)| (s, findings.iter().filter(|f| f.severity == s).count(), n))
        .collect();
    let top = view
        .ranked
        .iter()
        .take(TOP)
        .filter_map(|&i| identity_row(view, i))
        .collect();
    Ok(Dashboard {
        findings,
        by_severity,
        top,
        actions: ActionCounts::from_states(&counts),
        not_evaluated: scan.not_evaluated.len(),
        identities: scan.identities.len(),
    })
}

/// What the "who is affected" table is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    /// UPN (the object id when unknown), case-insensitive.
    Upn,
    /// Display name, case-insensitive.
    Name,
    /// The console's ranking (descending: riskiest first).
    #[default]
    Risk,
    /// Last sign-in: unknown, then never, then by time.
    LastSignIn,
    /// How many findings affect the identity.
    Findings,
}

impl SortKey {
    /// Parses the name a page's URL carries (`upn`, `name`, `risk`,
    /// `last_sign_in`, `findings`).
    pub fn parse(s: &str) -> Option<SortKey> {
        match s {
            "upn" => Some(SortKey::Upn),
            "name" => Some(SortKey::Name),
            "risk" => Some(SortKey::Risk),
            "last_sign_in" => Some(SortKey::LastSignIn),
            "findings" => Some(SortKey::Findings),
            _ => None,
        }
    }

    /// The name `parse` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            SortKey::Upn => "upn",
            SortKey::Name => "name",
            SortKey::Risk => "risk",
            SortKey::LastSignIn => "last_sign_in",
            SortKey::Findings => "findings",
        }
    }
}

/// Search, sort and page of a finding's affected identities.
#[derive(Debug, Clone)]
pub struct AffectedQuery {
    /// A substring of the UPN or display name, any case.
    pub q: Option<String>,
    /// Sort key; ties are always riskiest first.
    pub sort: SortKey,
    /// Descending (for `Risk`: riskiest first).
    pub desc: bool,
    /// 1-based page; past the last page shows the last page.
    pub page: usize,
    /// Rows per page, clamped to 10..=200.
    pub per_page: usize,
}

impl Default for AffectedQuery {
    fn default() -> Self {
        AffectedQuery {
            q: None,
            sort: SortKey::Risk,
            desc: true,
            page: 1,
            per_page: 50,
        }
    }
}

/// A finding's page: the finding, what to do, and one page of who it affects.
#[derive(Debug, Clone)]
pub struct FindingPage {
    /// The finding.
    pub finding: FindingRow,
    /// The scanner's recommendation.
    pub recommendation: String,
    /// Where the check is documented, if the scanner says.
    pub documentation: Option<String>,
    /// Affected identities matching the search.
    pub matched: usize,
    /// This page's rows.
    pub rows: Vec<IdentityRow>,
    /// The page shown (1-based; the last one when a later one was asked for).
    pub page: usize,
    /// Pages in all (at least 1).
    pub pages: usize,
}

/// True when `hay` contains `needle` (already lowercase), ignoring case.
fn contains_ci(hay: &str, needle: &str) -> bool {
    if needle.is_ascii() {
        let (h, n) = (hay.as_bytes(), needle.as_bytes());
        n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
    } else {
        hay.to_lowercase().contains(needle)
    }
}

/// Case-insensitive (ASCII) order of two strings, without allocating.
fn cmp_ci(a: &str, b: &str) -> Ordering {
    a.bytes()
        .map(|c| c.to_ascii_lowercase())
        .cmp(b.bytes().map(|c| c.to_ascii_lowercase()))
}

fn sign_in_key(s: LastSignIn) -> i64 {
    match s {
        LastSignIn::Unknown => i64::MIN,
        LastSignIn::Never => i64::MIN + 1,
        LastSignIn::At(t) => t.timestamp_millis(),
    }
}

/// The order of two identities by a sort key (reversed when `desc`); ties
/// always riskiest first.
fn compare(view: &ScanView, key: SortKey, desc: bool, a: u32, b: u32) -> Ordering {
    let rank = |i: u32| view.rank_of.get(i as usize).copied().unwrap_or(u32::MAX);
    let by_rank = rank(a).cmp(&rank(b));
    let (Some(ia), Some(ib)) = (view.identity(a), view.identity(b)) else {
        return by_rank;
    };
    let primary = match key {
        SortKey::Upn => cmp_ci(ia.label(), ib.label()),
        SortKey::Name => cmp_ci(&ia.display_name, &ib.display_name),
        // Ascending risk is the ranking reversed.
        SortKey::Risk => by_rank.reverse(),
        SortKey::LastSignIn => sign_in_key(ia.last_sign_in).cmp(&sign_in_key(ib.last_sign_in)),
        SortKey::Findings => {
            let n = |i: u32| view.findings_of.get(i as usize).map_or(0, Vec::len);
            n(a).cmp(&n(b))
        }
    };
    let primary = if desc { primary.reverse() } else { primary };
    primary.then(by_rank)
}

fn matches(ident: &Identity, q: &str) -> bool {
    ident
        .user_principal_name
        .as_deref()
        .is_some_and(|u| contains_ci(u, q))
        || contains_ci(&ident.display_name, q)
}

/// A finding's page, or `None` when the scan has no such finding.
pub fn finding_page(view: &ScanView, finding_id: &str, q: &AffectedQuery) -> Option<FindingPage> {
    let f = view
        .loaded
        .scan
        .findings
        .iter()
        .find(|f| f.id == finding_id)?;
    let all = view.by_finding.get(&f.id).map_or(&[][..], Vec::as_slice);
    let needle =
        q.q.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_lowercase);
    let mut hits: Vec<u32> = match &needle {
        None => all.to_vec(),
        Some(n) => all
            .iter()
            .copied()
            .filter(|&i| view.identity(i).is_some_and(|id| matches(id, n)))
            .collect(),
    };
    let per_page = q.per_page.clamp(10, 200);
    let matched = hits.len();
    let pages = matched.div_ceil(per_page).max(1);
    let page = q.page.clamp(1, pages);
    let start = (page - 1) * per_page;
    let end = (start + per_page).min(matched);
    let cmp = |a: &u32, b: &u32| compare(view, q.sort, q.desc, *a, *b);
    // Only the rows up to this page's end are put in order.
    if end < hits.len() && end > 0 {
        hits.select_nth_unstable_by(end - 1, cmp);
        hits.truncate(end);
    }
    hits.sort_unstable_by(cmp);
    let rows = hits
        .get(start..end)
        .unwrap_or_default()
        .iter()
        .filter_map(|&i| identity_row(view, i))
        .collect();
    Some(FindingPage {
        finding: finding_row(view, f),
        recommendation: f.recommendation.clone(),
        documentation: f.documentation.clone(),
        matched,
        rows,
        page,
        pages,
    })
}

/// An identity's page: its summary, the scan's record of it (roles, groups),
/// its findings and its actions in history.
#[derive(Debug, Clone)]
pub struct IdentityPage {
    /// The summary row.
    pub row: IdentityRow,
    /// The identity as the scan has it (roles with assignment type, via group
    /// and permanence; groups with dynamic, synced and role-assignable).
    pub identity: Identity,
    /// The findings that affect it, most severe first.
    pub findings: Vec<FindingRow>,
    /// Its actions in the tenant's history, newest first (at most
    /// [`IDENTITY_ACTIONS`]).
    pub actions: Vec<Action>,
    /// True when it has more actions than listed.
    pub more_actions: bool,
}

/// The page of the identity with this object id or UPN (any case); `None`
/// when the scan does not have it.
pub async fn identity_page(
    store: &dyn Store,
    view: &ScanView,
    tenant: &str,
    id_or_upn: &str,
) -> Result<Option<IdentityPage>, StoreError> {
    let Some(index) = view.find(id_or_upn) else {
        return Ok(None);
    };
    let (Some(row), Some(ident)) = (identity_row(view, index), view.identity(index)) else {
        return Ok(None);
    };
    let scan = &view.loaded.scan;
    let mut findings: Vec<FindingRow> = view
        .findings_of
        .get(index as usize)
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter_map(|&f| scan.findings.get(f as usize))
        .map(|f| finding_row(view, f))
        .collect();
    findings.sort_by(|a, b| b.severity.cmp(&a.severity).then_with(|| a.id.cmp(&b.id)));
    let filter = Filter {
        tenant: Some(tenant.to_string()),
        identity: Some(ident.id.0.to_string()),
        limit: Some(IDENTITY_ACTIONS as i64 + 1),
        ..Filter::default()
    };
    let mut actions = store.actions(&filter).await?;
    actions.reverse();
    let more_actions = actions.len() > IDENTITY_ACTIONS;
    actions.truncate(IDENTITY_ACTIONS);
    Ok(Some(IdentityPage {
        row,
        identity: ident.clone(),
        findings,
        actions,
        more_actions,
    }))
}

#[cfg(test)]
#[path = "posture_tests.rs"]
mod tests;

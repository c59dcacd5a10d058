//! The ten checks of [`CHECKS`] over the built identities.
//!
//! Terms and choices, as the documentation states them:
//! - **Privileged**: holds an active or eligible assignment, at any scope,
//!   directly or through a group, of a role in
//!   [`HIGHLY_PRIVILEGED`](super::roles::HIGHLY_PRIVILEGED).
//! - **Stale**: enabled, and the last sign-in is older than `stale_days` before
//!   the reading; or never signed in and created more than `stale_days` before
//!   it. A never-used account of unknown age, and any account whose last
//!   sign-in is unknown, is not stale: the scan never guesses.
//! - **Protected** identities (`[protected]`, decided by
//!   `Identity::protected_by`) are never affected. When `protected.groups` is
//!   set and group memberships could not be read, protection cannot be ruled
//!   out, so no check is evaluated.
//! - ER-MFA-001: enabled users, members and guests alike (guests who do MFA
//!   in their home tenant show as not registered here; a rule can tell them by
//!   `user_type`), whose registration details say MFA is not registered.
//! - ER-PRIV-002: enabled privileged users whose registered methods
//!   (`methodsRegistered`) hold none in
//!   [`PHISHING_RESISTANT`](super::roles::PHISHING_RESISTANT); a user missing
//!   from the registration details is unknown, not affected.
//! - ER-GUEST-004 and ER-PRIV-009 look at disabled accounts too: a disabled
//!   guest's roles, or a synchronised admin re-enabled on-premises, come back
//!   with the account. ER-PRIV-006 too: the standing assignment is there.
//! - ER-RISK-005: enabled accounts only. A disabled account cannot sign in or
//!   refresh tokens, so its risk is contained, and the remediations (revoke
//!   sessions, require a password change) mean nothing for it; its risk stays
//!   visible in the identity's `risk_score` and `attributes`.
//! - ER-GA-010 counts enabled users with an active Global Administrator
//!   assignment, direct or through a group, protected ones included; the
//!   count is in the title. Above eight, the unprotected ones are affected;
//!   below two, nobody (the finding alone says it).
//! - A check whose data has a gap is not evaluated. The roles also have a gap
//!   when a group holds a role and its members could not be read (nobody's
//!   roles are then complete). Eligible (PIM)
//!   assignments are the exception, being a P2 feature many tenants lack: the
//!   checks that count them still run on the active ones; what they find is
//!   reported with a note in the recommendation, and when they find nobody they
//!   are not evaluated (never reported clean).

use chrono::{DateTime, Duration, Utc};

use super::graph_data::{Part, TenantData};
use super::identities::People;
use super::roles::{has_phishing_resistant, is_highly_privileged};
use super::{
    CHECKS, Check, GLOBAL_ADMIN_COUNT, GUEST_WITH_ROLES, HIGH_RISK_USERS, MFA_NOT_REGISTERED,
    Needs, PERMANENT_PRIVILEGED, PRIV_NO_PHISHING_RESISTANT, PostureSettings, STALE_ACCOUNTS,
    STALE_PRIVILEGED, STALE_PRIVILEGED_GROUP_MEMBERS, SYNCED_PRIVILEGED,
};
use crate::scan::{AssignmentType, Finding, Identity, LastSignIn, NotEvaluated};

/// The checks that count eligible assignments (see the module doc).
const ELIGIBLE_TOO: &[&str] = &[
    PRIV_NO_PHISHING_RESISTANT,
    GUEST_WITH_ROLES,
    STALE_PRIVILEGED_GROUP_MEMBERS,
    STALE_PRIVILEGED,
    SYNCED_PRIVILEGED,
];

/// What running the checks gave.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// One per check that found someone (or, ER-GA-010, a count out of range).
    pub(super) findings: Vec<Finding>,
    /// One per check whose data had a gap.
    pub(super) not_evaluated: Vec<NotEvaluated>,
    /// Every check that ran, whether it found something or not.
    pub(super) evaluated: Vec<&'static str>,
}

/// What the predicates read.
struct Ctx<'p, 'a> {
    people: &'p People<'a>,
    settings: &'p PostureSettings,
    /// Per identity.
    stale: Vec<bool>,
    /// Per identity.
    privileged: Vec<bool>,
}

impl Ctx<'_, '_> {
    fn identity(&self, i: usize) -> &Identity {
        &self.people.identities[i]
    }

    fn in_privileged_group(&self, i: usize) -> bool {
        self.identity(i).groups.iter().any(|g| {
            g.role_assignable == Some(true)
                || self
                    .people
                    .role_groups
                    .contains(&g.id.0.to_ascii_lowercase())
                || self.settings.privileged_groups.iter().any(|p| {
                    p.eq_ignore_ascii_case(&g.id.0) || p.eq_ignore_ascii_case(&g.display_name)
                })
        })
    }
}

fn stale(id: &Identity, created: Option<DateTime<Utc>>, cutoff: DateTime<Utc>) -> bool {
    id.is_enabled()
        && match id.last_sign_in {
            LastSignIn::At(t) => t < cutoff,
            LastSignIn::Never => created.is_some_and(|c| c < cutoff),
            LastSignIn::Unknown => false,
        }
}

fn is(v: Option<&str>, x: &str) -> bool {
    v.is_some_and(|v| v.eq_ignore_ascii_case(x))
}

/// Whether identity `i` is affected by the per-identity check `id` (None for
/// ER-GA-010, which is tenant-wide, and for an id this build does not know).
fn predicate(id: &str) -> Option<fn(&Ctx, usize) -> bool> {
    Some(match id {
        MFA_NOT_REGISTERED => |c, i| {
            let x = c.identity(i);
            x.is_enabled() && x.mfa_registered == Some(false)
        },
        PRIV_NO_PHISHING_RESISTANT => |c, i| {
            c.identity(i).is_enabled()
                && c.privileged[i]
                && c.people.facts[i]
                    .methods
                    .is_some_and(|m| !has_phishing_resistant(m))
        },
        STALE_ACCOUNTS => |c, i| c.stale[i],
        GUEST_WITH_ROLES => |c, i| {
            let x = c.identity(i);
            x.is_guest() && !x.roles.is_empty()
        },
        HIGH_RISK_USERS => |c, i| {
            let f = &c.people.facts[i];
            c.identity(i).is_enabled()
                && is(f.risk_level, "high")
                && (is(f.risk_state, "atRisk") || is(f.risk_state, "confirmedCompromised"))
        },
        PERMANENT_PRIVILEGED => |c, i| {
            c.identity(i).roles.iter().any(|r| {
                r.assignment_type == AssignmentType::Active
                    && r.permanent == Some(true)
                    && is_highly_privileged(&r.role_definition_id.0)
            })
        },
        STALE_PRIVILEGED_GROUP_MEMBERS => |c, i| c.stale[i] && c.in_privileged_group(i),
        STALE_PRIVILEGED => |c, i| c.stale[i] && c.privileged[i],
        SYNCED_PRIVILEGED => {
            |c, i| c.privileged[i] && c.people.facts[i].on_premises_sync == Some(true)
        }
        _ => return None,
    })
}

fn gap<T>(part: &Part<T>) -> Option<String> {
    part.as_ref()
        .err()
        .map(|g| format!("{}: {}", g.data, g.reason))
}

/// Why `check` cannot be evaluated; empty when it can.
fn gaps(
    check: &Check,
    data: &TenantData,
    people: &People,
    settings: &PostureSettings,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for need in check.needs {
        match need {
            Needs::SignIn => out.extend(gap(&data.sign_in)),
            Needs::Registration => out.extend(gap(&data.registration)),
            Needs::Risk => out.extend(gap(&data.risky_users)),
            Needs::Roles => {
                out.extend(gap(&data.role_definitions));
                out.extend(gap(&data.role_assignments));
                out.extend(people.roles_incomplete.clone());
            }
            Needs::AssignmentSchedules => out.extend(gap(&data.assignment_schedules)),
            Needs::Groups => {
                out.extend(gap(&data.groups));
                out.extend(gap(&data.members));
            }
        }
    }
    if !settings.protected.groups.is_empty() {
        for g in [gap(&data.groups), gap(&data.members)]
            .into_iter()
            .flatten()
        {
            out.push(format!("protected.groups cannot be ruled out: {g}"));
        }
    }
    out.dedup();
    out
}

fn is_protected(people: &People, settings: &PostureSettings, i: usize) -> bool {
    let id = &people.identities[i];
    if id.protected_by(&settings.protected).is_some() {
        return true;
    }
    let unlisted = &people.facts[i].unlisted_groups;
    !unlisted.is_empty()
        && settings
            .protected
            .covers(&id.id.0, id.user_principal_name.as_deref(), unlisted)
            .is_some()
}

fn finding(check: &Check, title: String, recommendation: String, ids: &[&Identity]) -> Finding {
    Finding {
        id: check.id.to_string(),
        title,
        severity: check.severity,
        category: check.category.to_string(),
        recommendation,
        affected_identities: ids.iter().map(|x| x.id.clone()).collect(),
        documentation: Some(check.documentation.to_string()),
    }
}

fn not_evaluated(check: &Check, reason: String) -> NotEvaluated {
    NotEvaluated {
        check: check.id.to_string(),
        title: check.title.to_string(),
        reason,
    }
}

/// ER-GA-010 (see the module doc).
fn global_admins(check: &Check, people: &People, protected: &[bool]) -> Option<Finding> {
    let gas: Vec<usize> = (0..people.identities.len())
        .filter(|&i| people.identities[i].is_enabled() && people.identities[i].is_global_admin())
        .collect();
    let n = gas.len();
    if (2..=8).contains(&n) {
        return None;
    }
    let affected: Vec<&Identity> = if n > 8 {
        gas.iter()
            .filter(|&&i| !protected[i])
            .map(|&i| &people.identities[i])
            .collect()
    } else {
        Vec::new()
    };
    let title = format!("{} (found {n})", check.title);
    Some(finding(
        check,
        title,
        check.recommendation.to_string(),
        &affected,
    ))
}

/// Runs every check of [`CHECKS`] in order.
pub(super) fn run(data: &TenantData, people: &People, settings: &PostureSettings) -> Outcome {
    let cutoff = data.read_at - Duration::days(i64::from(settings.stale_days));
    let n = people.identities.len();
    let ctx = Ctx {
        people,
        settings,
        stale: (0..n)
            .map(|i| stale(&people.identities[i], people.facts[i].created, cutoff))
            .collect(),
        privileged: people
            .identities
            .iter()
            .map(|x| {
                x.roles
                    .iter()
                    .any(|r| is_highly_privileged(&r.role_definition_id.0))
            })
            .collect(),
    };
    let protected: Vec<bool> = (0..n).map(|i| is_protected(people, settings, i)).collect();
    let mut out = Outcome::default();
    for check in CHECKS {
        let reasons = gaps(check, data, people, settings);
        if !reasons.is_empty() {
            out.not_evaluated
                .push(not_evaluated(check, reasons.join("; ")));
            continue;
        }
        if check.id == GLOBAL_ADMIN_COUNT {
            out.findings
                .extend(global_admins(check, people, &protected));
            out.evaluated.push(check.id);
            continue;
        }
        let Some(affects) = predicate(check.id) else {
            let why = "this build has no implementation of the check".to_string();
            out.not_evaluated.push(not_evaluated(check, why));
            continue;
        };
        let affected: Vec<&Identity> = (0..n)
            .filter(|&i| !protected[i] && affects(&ctx, i))
            .map(|i| &people.identities[i])
            .collect();
        let partial = ELIGIBLE_TOO
            .contains(&check.id)
            .then(|| gap(&data.eligibility))
            .flatten();
        match (partial, affected.is_empty()) {
            (None, true) => out.evaluated.push(check.id),
            (None, false) => {
                let rec = check.recommendation.to_string();
                out.findings
                    .push(finding(check, check.title.to_string(), rec, &affected));
                out.evaluated.push(check.id);
            }
            (Some(g), true) => out.not_evaluated.push(not_evaluated(
                check,
                format!(
                    "{g} (nobody found on active assignments; eligible ones could not be read)"
                ),
            )),
            (Some(g), false) => {
                let rec = format!(
                    "{} Eligible (PIM) assignments could not be read ({g}): accounts privileged only through eligibility are not listed.",
                    check.recommendation
                );
                out.findings
                    .push(finding(check, check.title.to_string(), rec, &affected));
                out.evaluated.push(check.id);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;

//! From Graph's users, registration details, risky users, role assignments,
//! PIM schedules and group members to the scan's identities: one per user, in
//! the order Graph listed them, disabled ones included.
//!
//! Choices, as the scan format documents them:
//! - **Last sign-in**: `lastSuccessfulSignInDateTime` when Graph gives it (it
//!   counts successful sign-ins only, interactive or not). Without it (records
//!   older than December 2023) the newer of `lastSignInDateTime` and
//!   `lastNonInteractiveSignInDateTime`, which also count failed attempts. None
//!   of them: never signed in. A time that does not parse counts as absent.
//!   When sign-in activity could not be read at all, every identity's last
//!   sign-in is unknown (never "never").
//! - **Risk score** from Identity Protection's risky users: a risk state of
//!   `remediated`, `dismissed` or `confirmedSafe` is 0 and `confirmedCompromised`
//!   is 100 whatever the level; otherwise the level: `high` 90, `medium` 60,
//!   `low` 30, `none` 0, `hidden` or absent unknown. A user without a risk
//!   record has 0 when risky users were read, unknown when they were not.
//! - **MFA registered**: `isMfaRegistered` from the registration details;
//!   unknown for a user missing from them, or when they were not read.
//! - **Roles**: active assignments (`roleAssignments`) and PIM eligibilities
//!   (`roleEligibilitySchedules`, the schedule id as assignment id) of the user,
//!   and those of every group the user is a direct member of (`via_group`).
//!   `permanent` is read from the matching assignment schedule (same
//!   principal, role definition and scope); unknown without one. An
//!   assignment whose role id is not a GUID is left out and counted.
//! - **Attributes**: what scan v1 has no field for (`on_premises_sync_enabled`,
//!   `created_date_time`, `methods_registered`, `risk_level`, `risk_state`,
//!   `risk_detail`, `is_admin`), only the keys Graph gave.
//!
//! Ids are compared ignoring case. Users and groups whose id is not a GUID
//! cannot be written in a scan v1: they are left out and counted.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;

use super::graph_data::{
    DirectoryRoleAssignment, GraphGroup, GraphUser, RegistrationDetail, RiskyUser, RoleSchedule,
    SignInActivity, TenantData,
};
use super::roles::known_name;
use crate::scan::intern;
use crate::scan::{
    AssignmentType, GroupMembership, Guid, Identity, LastSignIn, RoleAssignment, UserType,
};
use crate::text::{clip, is_guid};

/// What the checks need about a user besides its [`Identity`].
#[derive(Debug, Default)]
pub(super) struct Facts<'a> {
    /// `createdDateTime`, when it parses.
    pub(super) created: Option<DateTime<Utc>>,
    /// `onPremisesSyncEnabled`.
    pub(super) on_premises_sync: Option<bool>,
    /// `methodsRegistered`, when the user is in the registration details.
    pub(super) methods: Option<&'a [String]>,
    /// Identity Protection's `riskLevel`, when the user has a risk record.
    pub(super) risk_level: Option<&'a str>,
    /// Identity Protection's `riskState`.
    pub(super) risk_state: Option<&'a str>,
    /// Groups (id, display name) the user is a member of that the scan could
    /// not list (id not a GUID): protection by group must still see them.
    pub(super) unlisted_groups: Vec<(&'a str, &'a str)>,
}

/// The identities, in the order of `data.users`, and what building them found.
#[derive(Debug, Default)]
pub(super) struct People<'a> {
    /// One per user kept.
    pub(super) identities: Vec<Identity>,
    /// Beside `identities`, same index.
    pub(super) facts: Vec<Facts<'a>>,
    /// What was left out, one line each.
    pub(super) skipped: Vec<String>,
    /// Why the roles are incomplete although the role parts were read (the
    /// members of a role-holding group could not be read).
    pub(super) roles_incomplete: Option<String>,
    /// Ids (lowercase) of groups holding a directory role, active or eligible.
    pub(super) role_groups: HashSet<String>,
}

/// Lowercase, allocating only when needed.
fn key(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

fn time(s: Option<&str>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// See the module doc.
fn last_sign_in(a: Option<&SignInActivity>, read: bool) -> LastSignIn {
    if !read {
        return LastSignIn::Unknown;
    }
    let Some(a) = a else {
        return LastSignIn::Never;
    };
    if let Some(t) = time(a.last_successful_sign_in_date_time.as_deref()) {
        return LastSignIn::At(t);
    }
    let attempts = [
        time(a.last_sign_in_date_time.as_deref()),
        time(a.last_non_interactive_sign_in_date_time.as_deref()),
    ];
    attempts
        .into_iter()
        .flatten()
        .max()
        .map_or(LastSignIn::Never, LastSignIn::At)
}

/// See the module doc.
fn risk_score(r: Option<&RiskyUser>, read: bool) -> Option<u8> {
    if !read {
        return None;
    }
    let Some(r) = r else {
        return Some(0);
    };
    let is = |v: &Option<String>, x: &str| v.as_deref().is_some_and(|v| v.eq_ignore_ascii_case(x));
    if ["remediated", "dismissed", "confirmedSafe"]
        .iter()
        .any(|s| is(&r.risk_state, s))
    {
        return Some(0);
    }
    if is(&r.risk_state, "confirmedCompromised") {
        return Some(100);
    }
    [("high", 90), ("medium", 60), ("low", 30), ("none", 0)]
        .iter()
        .find(|(l, _)| is(&r.risk_level, l))
        .map(|(_, s)| *s)
}

fn user_type(t: Option<&str>) -> Option<UserType> {
    match t {
        Some(t) if t.eq_ignore_ascii_case("Member") => Some(UserType::Member),
        Some(t) if t.eq_ignore_ascii_case("Guest") => Some(UserType::Guest),
        _ => None,
    }
}

/// The keys of an identity's `attributes` (see the module doc).
#[derive(Serialize, Default)]
struct Attributes<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    on_premises_sync_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_date_time: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    methods_registered: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    risk_level: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    risk_state: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    risk_detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    is_admin: Option<bool>,
}

fn attributes(
    u: &GraphUser,
    reg: Option<&RegistrationDetail>,
    risk: Option<&RiskyUser>,
) -> Option<Box<RawValue>> {
    let a = Attributes {
        on_premises_sync_enabled: u.on_premises_sync_enabled,
        created_date_time: u.created_date_time.as_deref(),
        methods_registered: reg.map(|r| r.methods_registered.as_slice()),
        risk_level: risk.and_then(|r| r.risk_level.as_deref()),
        risk_state: risk.and_then(|r| r.risk_state.as_deref()),
        risk_detail: risk.and_then(|r| r.risk_detail.as_deref()),
        is_admin: reg.and_then(|r| r.is_admin),
    };
    let text = serde_json::to_string(&a).ok()?;
    if text == "{}" {
        return None;
    }
    RawValue::from_string(text).ok()
}

/// A role definition as assignments name it: the template id to write and the name.
struct RoleRef<'a> {
    template: &'a str,
    name: Option<&'a str>,
}

/// The state of one build.
struct Builder<'a> {
    data: &'a TenantData,
    /// Kept users, in order.
    users: Vec<&'a GraphUser>,
    /// Lowercase user id -> index in `users`.
    user_index: HashMap<String, usize>,
    /// Lowercase group id -> group.
    groups: HashMap<String, &'a GraphGroup>,
    /// Role definition id or template id (lowercase) -> what assignments write.
    definitions: HashMap<String, RoleRef<'a>>,
    /// (principal, role definition, scope), lowercase -> permanent.
    schedules: HashMap<(String, String, String), Option<bool>>,
    roles: Vec<Vec<RoleAssignment>>,
    memberships: Vec<Vec<&'a GraphGroup>>,
    facts: Vec<Facts<'a>>,
    skipped: Vec<String>,
    /// Role-holding groups whose members could not be read.
    unread_role_groups: Vec<String>,
    role_groups: HashSet<String>,
}

fn scope(s: &Option<String>) -> &str {
    s.as_deref().filter(|s| !s.is_empty()).unwrap_or("/")
}

fn skip_line(what: &str, id: &str, why: &str) -> String {
    format!("{what} {:?}: {why}", clip(id, 80))
}

impl<'a> Builder<'a> {
    fn new(data: &'a TenantData) -> Builder<'a> {
        let mut b = Builder {
            data,
            users: Vec::with_capacity(data.users.len()),
            user_index: HashMap::with_capacity(data.users.len()),
            groups: HashMap::new(),
            definitions: HashMap::new(),
            schedules: HashMap::new(),
            roles: Vec::new(),
            memberships: Vec::new(),
            facts: Vec::new(),
            skipped: Vec::new(),
            unread_role_groups: Vec::new(),
            role_groups: HashSet::new(),
        };
        for u in &data.users {
            if !is_guid(&u.id) {
                b.skipped
                    .push(skip_line("user", &u.id, "id is not a GUID; left out"));
            } else if b.user_index.contains_key(key(&u.id).as_ref()) {
                b.skipped
                    .push(skip_line("user", &u.id, "listed twice; the first kept"));
            } else {
                b.user_index
                    .insert(u.id.to_ascii_lowercase(), b.users.len());
                b.users.push(u);
            }
        }
        let n = b.users.len();
        b.roles.resize_with(n, Vec::new);
        b.memberships.resize_with(n, Vec::new);
        b.facts.resize_with(n, Facts::default);
        if let Ok(groups) = &data.groups {
            b.groups = groups
                .iter()
                .map(|g| (g.id.to_ascii_lowercase(), g))
                .collect();
        }
        if let Ok(defs) = &data.role_definitions {
            for d in defs {
                let template = d.template_id.as_deref().filter(|t| !t.is_empty());
                let r = || RoleRef {
                    template: template.unwrap_or(&d.id),
                    name: d.display_name.as_deref(),
                };
                b.definitions.insert(d.id.to_ascii_lowercase(), r());
                if let Some(t) = template {
                    b.definitions
                        .entry(t.to_ascii_lowercase())
                        .or_insert_with(r);
                }
            }
        }
        if let Ok(schedules) = &data.assignment_schedules {
            for s in schedules {
                let k = (
                    s.principal_id.to_ascii_lowercase(),
                    s.role_definition_id.to_ascii_lowercase(),
                    scope(&s.directory_scope_id).to_ascii_lowercase(),
                );
                let permanent = s.never_expires();
                let slot = b.schedules.entry(k).or_insert(permanent);
                // Several schedules for one assignment: permanent if any is.
                if permanent == Some(true) {
                    *slot = Some(true);
                } else if slot.is_none() {
                    *slot = permanent;
                }
            }
        }
        b
    }

    fn memberships(&mut self) {
        let data = self.data;
        let (Ok(groups), Ok(members)) = (&data.groups, &data.members) else {
            return;
        };
        for g in groups {
            let Some(ids) = members.get(&g.id) else {
                continue;
            };
            let listed = is_guid(&g.id);
            if !listed {
                self.skipped.push(skip_line(
                    "group",
                    &g.id,
                    "id is not a GUID; left out of its members' groups",
                ));
            }
            for m in ids {
                let Some(&u) = self.user_index.get(key(m).as_ref()) else {
                    continue;
                };
                if !listed {
                    let name = g.display_name.as_deref().unwrap_or_default();
                    self.facts[u].unlisted_groups.push((&g.id, name));
                } else if self.memberships[u]
                    .last()
                    .is_none_or(|last| !std::ptr::eq(*last, g))
                {
                    self.memberships[u].push(g);
                }
            }
        }
    }

    /// The template id and name an assignment of `role_definition_id` writes;
    /// None (counted) when the id is not a GUID.
    fn role(&mut self, assignment: &str, role_definition_id: &str) -> Option<(Guid, String)> {
        let found = self.definitions.get(key(role_definition_id).as_ref());
        let template = found.map_or(role_definition_id, |r| r.template);
        if !is_guid(template) {
            self.skipped.push(skip_line(
                "role assignment",
                assignment,
                "role definition id is not a GUID; left out",
            ));
            return None;
        }
        let name = found
            .and_then(|r| r.name)
            .map(str::to_string)
            .or_else(|| known_name(template).map(str::to_string))
            .unwrap_or_else(|| template.to_string());
        Some((Guid::from(template), name))
    }

    /// Gives `ra` to the principal: a user, or each direct user member of a
    /// group. `group` is what the expanded principal says, None when not expanded.
    fn attach(&mut self, principal_id: &str, group: Option<bool>, ra: RoleAssignment) {
        if let Some(&u) = self.user_index.get(key(principal_id).as_ref()) {
            self.roles[u].push(ra);
            return;
        }
        let known_group = self.groups.contains_key(key(principal_id).as_ref());
        if !(group == Some(true) || known_group) {
            if group.is_none() && self.data.groups.is_err() {
                // Maybe a group, whose members are then unknown.
                self.unread_role_groups.push(principal_id.to_string());
            }
            return; // a service principal: not an identity of the scan
        }
        self.role_groups.insert(principal_id.to_ascii_lowercase());
        if !is_guid(principal_id) {
            self.skipped.push(skip_line(
                "role assignment",
                &ra.assignment_id,
                "held by a group whose id is not a GUID; left out",
            ));
            return;
        }
        let members = match &self.data.members {
            Ok(m) => m.get(principal_id),
            Err(_) => None,
        };
        let Some(members) = members else {
            self.unread_role_groups.push(principal_id.to_string());
            return;
        };
        for m in members {
            if let Some(&u) = self.user_index.get(key(m).as_ref()) {
                let mut r = ra.clone();
                r.via_group = Some(Guid::from(principal_id));
                self.roles[u].push(r);
            }
        }
    }

    fn active(&mut self, a: &'a DirectoryRoleAssignment) {
        if a.id.is_empty() {
            return;
        }
        let Some((template, role_name)) = self.role(&a.id, &a.role_definition_id) else {
            return;
        };
        let scope = scope(&a.directory_scope_id);
        let permanent = self
            .schedules
            .get(&(
                a.principal_id.to_ascii_lowercase(),
                a.role_definition_id.to_ascii_lowercase(),
                scope.to_ascii_lowercase(),
            ))
            .copied()
            .flatten();
        let ra = RoleAssignment {
            assignment_id: a.id.clone(),
            role_definition_id: template,
            role_name,
            directory_scope_id: scope.to_string(),
            assignment_type: AssignmentType::Active,
            via_group: None,
            permanent,
        };
        let group = a.principal.as_ref().map(|p| p.is_group());
        self.attach(&a.principal_id, group, ra);
    }

    fn eligible(&mut self, s: &'a RoleSchedule) {
        // A schedule a user inherits through a group is the group's own
        // schedule, expanded to its members here: counting both would list
        // the role twice, once as if assigned directly.
        let inherited = s
            .member_type
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("Direct"));
        if s.id.is_empty() || inherited {
            return;
        }
        let Some((template, role_name)) = self.role(&s.id, &s.role_definition_id) else {
            return;
        };
        let ra = RoleAssignment {
            assignment_id: s.id.clone(),
            role_definition_id: template,
            role_name,
            directory_scope_id: scope(&s.directory_scope_id).to_string(),
            assignment_type: AssignmentType::Eligible,
            via_group: None,
            permanent: s.never_expires(),
        };
        self.attach(&s.principal_id, None, ra);
    }

    fn finish(mut self) -> People<'a> {
        let d = self.data;
        let registration: Option<HashMap<&str, &RegistrationDetail>> = d
            .registration
            .as_ref()
            .ok()
            .map(|r| r.iter().map(|x| (x.id.as_str(), x)).collect());
        let risky: Option<HashMap<&str, &RiskyUser>> = d
            .risky_users
            .as_ref()
            .ok()
            .map(|r| r.iter().map(|x| (x.id.as_str(), x)).collect());
        let mut identities = Vec::with_capacity(self.users.len());
        let roles = std::mem::take(&mut self.roles);
        let memberships = std::mem::take(&mut self.memberships);
        for (((u, roles), groups), facts) in self
            .users
            .iter()
            .zip(roles)
            .zip(memberships)
            .zip(self.facts.iter_mut())
        {
            let reg = registration
                .as_ref()
                .and_then(|r| r.get(u.id.as_str()).copied());
            let risk = risky.as_ref().and_then(|r| r.get(u.id.as_str()).copied());
            facts.created = time(u.created_date_time.as_deref());
            facts.on_premises_sync = u.on_premises_sync_enabled;
            facts.methods = reg.map(|r| r.methods_registered.as_slice());
            facts.risk_level = risk.and_then(|r| r.risk_level.as_deref());
            facts.risk_state = risk.and_then(|r| r.risk_state.as_deref());
            identities.push(Identity {
                id: Guid::from(u.id.as_str()),
                user_principal_name: u.user_principal_name.clone().filter(|s| !s.is_empty()),
                display_name: u.display_name.clone().unwrap_or_default(),
                user_type: user_type(u.user_type.as_deref()),
                account_enabled: u.account_enabled,
                risk_score: risk_score(risk, risky.is_some()),
                last_sign_in: last_sign_in(u.sign_in_activity.as_ref(), d.sign_in.is_ok()),
                mfa_registered: reg.and_then(|r| r.is_mfa_registered),
                roles,
                groups: groups.into_iter().map(membership).collect(),
                attributes: attributes(u, reg, risk),
            });
        }
        let roles_incomplete = self.roles_incomplete();
        People {
            identities,
            facts: self.facts,
            skipped: self.skipped,
            roles_incomplete,
            role_groups: self.role_groups,
        }
    }

    fn roles_incomplete(&mut self) -> Option<String> {
        self.unread_role_groups.sort();
        self.unread_role_groups.dedup();
        let first = self.unread_role_groups.first()?;
        let why = match (&self.data.members, &self.data.groups) {
            (Err(gap), _) | (_, Err(gap)) => format!("{}: {}", gap.data, gap.reason),
            _ => "not read".to_string(),
        };
        Some(format!(
            "members of {} role-holding group(s) (first {}): {why}",
            self.unread_role_groups.len(),
            first
        ))
    }
}

/// One membership of `g`; its id and name are shared with every other
/// membership of the group while [`build`] interns.
fn membership(g: &GraphGroup) -> GroupMembership {
    GroupMembership {
        id: Guid(intern::shared(&g.id)),
        display_name: intern::shared(g.display_name.as_deref().unwrap_or_default()),
        dynamic: g.is_dynamic(),
        on_premises_synced: g.on_premises_sync_enabled,
        role_assignable: g.is_assignable_to_role,
    }
}

/// Builds the identities (see the module doc).
pub(super) fn build(data: &TenantData) -> People<'_> {
    // The groups' ids and names are shared by all their memberships.
    let _sharing = intern::Interning::start();
    let mut b = Builder::new(data);
    b.memberships();
    if let Ok(assignments) = &data.role_assignments {
        for a in assignments {
            b.active(a);
        }
    }
    if let Ok(eligibility) = &data.eligibility {
        for s in eligibility {
            b.eligible(s);
        }
    }
    b.finish()
}

#[cfg(test)]
mod tests;

//! The reads of the posture scan: organization, users with sign-in activity,
//! authentication methods registration, risky users, role definitions,
//! role assignments (with `$expand=principal`), PIM schedules and groups, with
//! Graph's paging, licence gaps and application permissions. Everything here
//! runs under the state lock and never awaits.

use crate::graph::{
    ASSIGNMENT_PROPS, Ctx, DEFAULT_RULE, GROUP_PROPS, META, USER_DEFAULT, USER_PROPS,
    assignment_json, context_for, filter_matches, group_default, group_json, parse_filter,
    parse_select, project,
};
use crate::state::{State, UserEntry};
use crate::util::{Req, Resp, bad_request, graph_error, rfc3339};
use crate::{PimSchedule, RoleAssignment, RoleEligibility};
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::ops::Bound;

// ---------------------------------------------------------------- permissions

/// Application permissions that allow listing users (least privileged first).
pub(crate) const USER_READ: &[&str] = &[
    "User.Read.All",
    "User.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
/// Needed besides a user permission for `signInActivity`, and for registration details.
pub(crate) const AUDIT_LOG_READ: &[&str] = &["AuditLog.Read.All"];
/// Reading the organization.
pub(crate) const ORG_READ: &[&str] = &[
    "Organization.Read.All",
    "Organization.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
/// Reading riskyUsers.
pub(crate) const RISKY_USER_READ: &[&str] = &[
    "IdentityRiskyUser.Read.All",
    "IdentityRiskyUser.ReadWrite.All",
];
/// Reading role definitions and assignments.
pub(crate) const ROLE_READ: &[&str] = &[
    "RoleManagement.Read.Directory",
    "RoleManagement.Read.All",
    "RoleManagement.ReadWrite.Directory",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
/// Reading roleEligibilitySchedules.
pub(crate) const ELIGIBILITY_SCHEDULE_READ: &[&str] = &[
    "RoleEligibilitySchedule.Read.Directory",
    "RoleEligibilitySchedule.ReadWrite.Directory",
    "RoleManagement.Read.Directory",
    "RoleManagement.Read.All",
    "RoleManagement.ReadWrite.Directory",
];
/// Reading roleAssignmentSchedules and their instances.
pub(crate) const ASSIGNMENT_SCHEDULE_READ: &[&str] = &[
    "RoleAssignmentSchedule.Read.Directory",
    "RoleAssignmentSchedule.ReadWrite.Directory",
    "RoleManagement.Read.Directory",
    "RoleManagement.Read.All",
    "RoleManagement.ReadWrite.Directory",
];
/// Listing groups and their members.
pub(crate) const GROUP_MEMBER_READ: &[&str] = &[
    "GroupMember.Read.All",
    "Group.Read.All",
    "Group.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
/// Reading Conditional Access policies.
pub(crate) const POLICY_READ: &[&str] = &["Policy.Read.All", "Policy.ReadWrite.ConditionalAccess"];

/// Graph's 403 when the application holds none of `any_of` (only when
/// permissions were restricted with `set_permissions`).
pub(crate) fn require(st: &State, any_of: &[&str]) -> Option<Resp> {
    let granted = st.permissions.as_ref()?;
    if any_of
        .iter()
        .any(|p| granted.iter().any(|g| g.eq_ignore_ascii_case(p)))
    {
        return None;
    }
    Some(graph_error(
        403,
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
    ))
}

/// What Graph answers a tenant without Microsoft Entra ID P1 (or P2, for
/// Identity Protection) reading sign-in activity, registration details or
/// risky users.
fn non_premium() -> Resp {
    graph_error(
        403,
        "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
        "Neither tenant is B2C or tenant doesn't have premium license",
    )
}

/// The permission, then the licence check of the PIM reads: without P2 (or ID
/// Governance) Graph answers 400 `AadPremiumLicenseRequired`.
pub(crate) fn pim_gate(st: &State, perms: &[&str]) -> Option<Resp> {
    if let Some(r) = require(st, perms) {
        return Some(r);
    }
    (!st.p2).then(|| {
        graph_error(
            400,
            "AadPremiumLicenseRequired",
            "The tenant needs to have Microsoft Entra ID P2 or Microsoft Entra ID Governance license.",
        )
    })
}

// ---------------------------------------------------------------- paging

/// `$top` between 1 and `max` (`default` without), or Graph's 400.
fn top_param(req: &Req, default: usize, max: usize) -> Result<usize, Resp> {
    match req.param("$top") {
        None => Ok(default),
        Some(t) => match t.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(graph_error(
                400,
                "Request_BadRequest",
                &format!(
                    "Invalid page size specified: '{t}'. Must be between 1 and {max} inclusive."
                ),
            )),
        },
    }
}

/// `(skip, top)` of an index-paged listing: `$skiptoken` is `fake-N`.
pub(crate) fn paging(req: &Req, default: usize, max: usize) -> Result<(usize, usize), Resp> {
    let top = top_param(req, default, max)?;
    let skip = match req.param("$skiptoken") {
        None => 0,
        Some(t) => t
            .strip_prefix("fake-")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| bad_request("Invalid skip token."))?,
    };
    Ok((skip, top))
}

/// The key after which a key-paged listing continues (`$skiptoken` `k-ID`).
fn after_key(req: &Req) -> Result<Option<String>, Resp> {
    match req.param("$skiptoken") {
        None => Ok(None),
        Some(t) => t
            .strip_prefix("k-")
            .map(|k| Some(k.to_string()))
            .ok_or_else(|| bad_request("Invalid skip token.")),
    }
}

/// The request's own URL with `$skiptoken` replaced: Graph's `@odata.nextLink`.
pub(crate) fn next_link(req: &Req, ctx: &Ctx, token: &str) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in req.params() {
        if !k.eq_ignore_ascii_case("$skiptoken") {
            q.append_pair(&k, &v);
        }
    }
    q.append_pair("$skiptoken", token);
    format!("{}/v1.0{}?{}", ctx.base_url, req.path, q.finish())
}

/// A collection answer.
fn collection(context: String, value: Vec<Value>, next: Option<String>) -> Resp {
    let mut body = Map::new();
    body.insert("@odata.context".into(), json!(context));
    if let Some(n) = next {
        body.insert("@odata.nextLink".into(), json!(n));
    }
    body.insert("value".into(), Value::Array(value));
    Resp::json(200, Value::Object(body))
}

/// One index page of `items`, with a nextLink when more follow.
fn index_page(
    req: &Req,
    ctx: &Ctx,
    context: String,
    items: Vec<Value>,
    skip: usize,
    top: usize,
) -> Resp {
    let more = skip + top < items.len();
    let value: Vec<Value> = items.into_iter().skip(skip).take(top).collect();
    let next = more.then(|| next_link(req, ctx, &format!("fake-{}", skip + top)));
    collection(context, value, next)
}

/// Users after `after` (by id), in id order.
fn users_after<'a>(
    st: &'a State,
    after: Option<&'a str>,
) -> impl Iterator<Item = &'a UserEntry> + 'a {
    let lower = match after {
        Some(a) => Bound::Excluded(a),
        None => Bound::Unbounded,
    };
    st.users
        .range::<str, _>((lower, Bound::Unbounded))
        .map(|(_, e)| e)
}

/// Up to `top` of `iter`, and whether more follow.
fn take_page<'a>(
    iter: impl Iterator<Item = &'a UserEntry>,
    top: usize,
) -> (Vec<&'a UserEntry>, bool) {
    let mut page: Vec<&UserEntry> = iter.take(top + 1).collect();
    let more = page.len() > top;
    page.truncate(top);
    (page, more)
}

/// The key-paged nextLink after the last user of a page.
fn user_next(req: &Req, ctx: &Ctx, page: &[&UserEntry], more: bool) -> Option<String> {
    let last = page.last()?;
    more.then(|| next_link(req, ctx, &format!("k-{}", last.user.id)))
}

/// `$filter` clauses (only `prop eq 'value'` joined by `and`).
fn filter_clauses(req: &Req, known: &[&'static str]) -> Result<Vec<(&'static str, String)>, Resp> {
    match req.param("$filter") {
        None => Ok(Vec::new()),
        Some(f) => parse_filter(&f, known),
    }
}

// ---------------------------------------------------------------- organization

const ORG_PROPS: &[&str] = &[
    "id",
    "displayName",
    "tenantType",
    "createdDateTime",
    "verifiedDomains",
    "countryLetterCode",
    "preferredLanguage",
    "businessPhones",
    "city",
    "country",
    "postalCode",
    "state",
    "street",
    "technicalNotificationMails",
    "assignedPlans",
    "provisionedPlans",
    "onPremisesSyncEnabled",
    "onPremisesLastSyncDateTime",
    "deletedDateTime",
    "securityComplianceNotificationMails",
    "securityComplianceNotificationPhones",
    "marketingNotificationEmails",
    "privacyProfile",
];

/// `GET /organization`: the one organization of the tenant.
pub(crate) fn list_organization(st: &mut State, req: &Req, ctx: &Ctx) -> Resp {
    if let Some(r) = require(st, ORG_READ) {
        return r;
    }
    let select = match parse_select(req, ORG_PROPS, "microsoft.graph.organization") {
        Ok(s) => s,
        Err(e) => return e,
    };
    let domain: String = st
        .tenant_name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase();
    let mut full = Map::new();
    for p in ORG_PROPS {
        full.insert((*p).to_string(), Value::Null);
    }
    for p in [
        "businessPhones",
        "technicalNotificationMails",
        "assignedPlans",
        "provisionedPlans",
        "securityComplianceNotificationMails",
        "securityComplianceNotificationPhones",
        "marketingNotificationEmails",
    ] {
        full.insert(p.to_string(), json!([]));
    }
    full.insert("id".into(), json!(ctx.tenant));
    full.insert("displayName".into(), json!(st.tenant_name));
    full.insert("tenantType".into(), json!("AAD"));
    full.insert("createdDateTime".into(), json!(rfc3339(st.started)));
    full.insert(
        "verifiedDomains".into(),
        json!([{
            "capabilities": "Email, OfficeCommunicationsOnline",
            "isDefault": true,
            "isInitial": true,
            "name": format!("{domain}.onmicrosoft.com"),
            "type": "Managed",
        }]),
    );
    let obj = match &select {
        Some(s) => project(&full, s),
        None => full,
    };
    collection(
        context_for("organization", &select, ""),
        vec![Value::Object(obj)],
        None,
    )
}

// ---------------------------------------------------------------- users

/// One property of a user as Graph returns it.
pub(crate) fn user_value(e: &UserEntry, prop: &str, started: i64) -> Value {
    let u = &e.user;
    let d = &e.details;
    match prop {
        "id" => json!(u.id),
        "userPrincipalName" => json!(u.user_principal_name),
        "displayName" => json!(u.display_name),
        "userType" => json!(u.user_type),
        "accountEnabled" => json!(u.account_enabled),
        "signInSessionsValidFromDateTime" => json!(e.sessions_valid_from),
        "createdDateTime" => json!(d.created.clone().unwrap_or_else(|| rfc3339(started))),
        "onPremisesSyncEnabled" => json!(d.on_premises_sync_enabled),
        // Graph also gives the request id of each sign-in; the fake has none (null).
        "signInActivity" => match &d.sign_in {
            None => Value::Null,
            Some(s) => json!({
                "lastSignInDateTime": s.last,
                "lastSignInRequestId": null,
                "lastNonInteractiveSignInDateTime": s.last_non_interactive,
                "lastNonInteractiveSignInRequestId": null,
                "lastSuccessfulSignInDateTime": s.last_successful,
                "lastSuccessfulSignInRequestId": null,
            }),
        },
        "businessPhones" | "assignedLicenses" | "assignedPlans" | "identities" | "imAddresses"
        | "otherMails" | "proxyAddresses" => json!([]),
        _ => Value::Null,
    }
}

/// These properties of a user, in this order.
pub(crate) fn user_object(e: &UserEntry, props: &[&str], started: i64) -> Map<String, Value> {
    props
        .iter()
        .map(|p| ((*p).to_string(), user_value(e, p, started)))
        .collect()
}

/// `GET /users`: key-paged (default 100, `$top` up to 999); `$filter` takes
/// `eq` clauses or `id in (...)` (up to 15 ids). With
/// `signInActivity` selected Graph documents at most 500 a page ("Requests with
/// `$top` set higher than 500 return pages with up to 500 users"), needs
/// `AuditLog.Read.All` and P1.
pub(crate) fn list_users(st: &mut State, req: &Req, ctx: &Ctx) -> Resp {
    if let Some(r) = require(st, USER_READ) {
        return r;
    }
    let select = match parse_select(req, USER_PROPS, "microsoft.graph.user") {
        Ok(s) => s,
        Err(e) => return e,
    };
    let sign_in = select
        .as_ref()
        .is_some_and(|s| s.contains(&"signInActivity"));
    if sign_in {
        if let Some(r) = require(st, AUDIT_LOG_READ) {
            return r;
        }
        if !st.p1 {
            return non_premium();
        }
    }
    let top = match top_param(req, 100, 999) {
        Ok(t) if sign_in => t.min(500),
        Ok(t) => t,
        Err(e) => return e,
    };
    let id_in = req.param("$filter").and_then(|f| crate::id_in::ids_in(&f));
    let (clauses, ids) = match id_in {
        Some(Ok(ids)) => (Vec::new(), Some(ids)),
        Some(Err(e)) => return e,
        None => match filter_clauses(req, USER_PROPS) {
            Ok(c) => (c, None),
            Err(e) => return e,
        },
    };
    let after = match after_key(req) {
        Ok(a) => a,
        Err(e) => return e,
    };
    let started = st.started;
    let matching = users_after(st, after.as_deref()).filter(|e| {
        ids.as_ref()
            .is_none_or(|ids| ids.contains(&e.user.id.to_ascii_lowercase()))
            && clauses
                .iter()
                .all(|(p, v)| user_value(e, p, started).as_str() == Some(v.as_str()))
    });
    let (page, more) = take_page(matching, top);
    let props = select.as_deref().unwrap_or(USER_DEFAULT);
    let value = page
        .iter()
        .map(|e| Value::Object(user_object(e, props, started)))
        .collect();
    collection(
        context_for("users", &select, ""),
        value,
        user_next(req, ctx, &page, more),
    )
}

// ---------------------------------------------------------------- registration details

/// Page size of userRegistrationDetails: the fake pages at 1,000 (and takes
/// `$top` up to that), the page size Graph's other identity reports (signIns,
/// directoryAudits) document as default and maximum.
const REGISTRATION_PAGE: usize = 1000;

/// Ids of users holding a directory role: directly (active or eligible) or
/// as direct members of a group that holds one.
fn admin_ids(st: &State) -> HashSet<&str> {
    let mut ids: HashSet<&str> = HashSet::new();
    let principals = st
        .role_assignments
        .iter()
        .map(|a| a.principal_id.as_str())
        .chain(st.eligibilities.iter().map(|e| e.principal_id.as_str()));
    for p in principals {
        ids.insert(p);
        if let Some(m) = st.members.get(p) {
            ids.extend(m.iter().map(String::as_str));
        }
    }
    ids
}

/// The preferred second factor Entra reports for these methods.
fn preferred_method(methods: &[String]) -> &'static str {
    let has = |m: &str| methods.iter().any(|x| x == m);
    if has("microsoftAuthenticatorPush") {
        "push"
    } else if has("softwareOneTimePasscode") || has("hardwareOneTimePasscode") {
        "oath"
    } else if has("mobilePhone") {
        "sms"
    } else {
        "none"
    }
}

/// `GET /reports/authenticationMethods/userRegistrationDetails`: every user,
/// key-paged; `$select` is refused as Graph does; `$filter` takes `eq` on the
/// string properties; `$orderby` is ignored (the order is by id).
pub(crate) fn list_registration_details(st: &mut State, req: &Req, ctx: &Ctx) -> Resp {
    if let Some(r) = require(st, AUDIT_LOG_READ) {
        return r;
    }
    if !st.p1 {
        return non_premium();
    }
    if req.param("$select").is_some() {
        return graph_error(
            400,
            "BadRequest",
            "The query specified in the URI is not valid. Query option 'Select' is not allowed. To allow it, set the 'AllowedQueryOptions' property on EnableQueryAttribute or QueryValidationSettings.",
        );
    }
    let top = match top_param(req, REGISTRATION_PAGE, REGISTRATION_PAGE) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let clauses = match filter_clauses(
        req,
        &["id", "userPrincipalName", "userDisplayName", "userType"],
    ) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let after = match after_key(req) {
        Ok(a) => a,
        Err(e) => return e,
    };
    let admins = admin_ids(st);
    let started = rfc3339(st.started);
    let rows =
        users_after(st, after.as_deref()).map(|e| (e, registration_row(e, &admins, &started)));
    let mut page = Vec::new();
    let mut more = false;
    for (e, row) in rows {
        if !filter_matches(&row, &clauses) {
            continue;
        }
        if page.len() == top {
            more = true;
            break;
        }
        page.push((e, row));
    }
    let entries: Vec<&UserEntry> = page.iter().map(|(e, _)| *e).collect();
    let next = user_next(req, ctx, &entries, more);
    let value = page.into_iter().map(|(_, r)| Value::Object(r)).collect();
    collection(
        format!("{META}#reports/authenticationMethods/userRegistrationDetails"),
        value,
        next,
    )
}

/// One userRegistrationDetails item.
fn registration_row(e: &UserEntry, admins: &HashSet<&str>, started: &str) -> Map<String, Value> {
    let u = &e.user;
    let reg = e.details.registration.clone().unwrap_or_default();
    let is_admin = reg
        .is_admin
        .unwrap_or_else(|| admins.contains(u.id.as_str()));
    let user_type = if u.user_type.eq_ignore_ascii_case("guest") {
        "guest"
    } else {
        "member"
    };
    let json = json!({
        "id": u.id,
        "userPrincipalName": u.user_principal_name,
        "userDisplayName": u.display_name,
        "userType": user_type,
        "isAdmin": is_admin,
        "isSsprRegistered": reg.is_sspr_registered,
        "isSsprEnabled": false,
        "isSsprCapable": false,
        "isMfaRegistered": reg.is_mfa_registered,
        "isMfaCapable": reg.is_mfa_capable,
        "isPasswordlessCapable": reg.is_passwordless_capable,
        "lastUpdatedDateTime": reg.last_updated.clone().unwrap_or_else(|| started.to_string()),
        "methodsRegistered": reg.methods,
        "isSystemPreferredAuthenticationMethodEnabled": false,
        "systemPreferredAuthenticationMethods": [],
        "userPreferredMethodForSecondaryAuthentication": preferred_method(&reg.methods),
    });
    match json {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

// ---------------------------------------------------------------- risky users

const RISKY_PROPS: &[&str] = &[
    "id",
    "isDeleted",
    "isProcessing",
    "riskDetail",
    "riskLastUpdatedDateTime",
    "riskLevel",
    "riskState",
    "userDisplayName",
    "userPrincipalName",
];

/// `GET /identityProtection/riskyUsers`: users with a risk record, key-paged.
/// Graph does not document the page size; the fake uses 100 by default and
/// takes `$top` up to 500. Needs P2 (Graph: "Using the riskyUsers API requires
/// a Microsoft Entra ID P2 license"); the one-request-per-second limit is
/// applied before (shared with Conditional Access).
pub(crate) fn list_risky_users(st: &mut State, req: &Req, ctx: &Ctx) -> Resp {
    if let Some(r) = require(st, RISKY_USER_READ) {
        return r;
    }
    if !st.p2 {
        return non_premium();
    }
    let select = match parse_select(req, RISKY_PROPS, "microsoft.graph.riskyUser") {
        Ok(s) => s,
        Err(e) => return e,
    };
    let top = match top_param(req, 100, 500) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let clauses = match filter_clauses(req, RISKY_PROPS) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let after = match after_key(req) {
        Ok(a) => a,
        Err(e) => return e,
    };
    let started = rfc3339(st.started);
    let mut page: Vec<(&UserEntry, Map<String, Value>)> = Vec::new();
    let mut more = false;
    for e in users_after(st, after.as_deref()) {
        let Some(r) = &e.details.risk else { continue };
        let mut o = Map::new();
        o.insert("id".into(), json!(e.user.id));
        o.insert("isDeleted".into(), json!(false));
        o.insert("isProcessing".into(), json!(false));
        o.insert(
            "riskLastUpdatedDateTime".into(),
            json!(r.last_updated.clone().unwrap_or_else(|| started.clone())),
        );
        o.insert("riskLevel".into(), json!(r.level));
        o.insert("riskState".into(), json!(r.state));
        o.insert("riskDetail".into(), json!(r.detail));
        o.insert("userDisplayName".into(), json!(e.user.display_name));
        o.insert(
            "userPrincipalName".into(),
            json!(e.user.user_principal_name),
        );
        if !filter_matches(&o, &clauses) {
            continue;
        }
        if page.len() == top {
            more = true;
            break;
        }
        page.push((e, o));
    }
    let entries: Vec<&UserEntry> = page.iter().map(|(e, _)| *e).collect();
    let next = user_next(req, ctx, &entries, more);
    let value = page
        .into_iter()
        .map(|(_, o)| {
            Value::Object(match &select {
                Some(s) => project(&o, s),
                None => o,
            })
        })
        .collect();
    collection(
        context_for("identityProtection/riskyUsers", &select, ""),
        value,
        next,
    )
}

// ---------------------------------------------------------------- role definitions

/// Built-in directory roles the fake knows: (templateId, displayName, description).
pub(crate) const BUILT_IN_ROLES: &[(&str, &str, &str)] = &[
    (
        "62e90394-69f5-4237-9190-012177145e10",
        "Global Administrator",
        "Can manage all aspects of Microsoft Entra ID and Microsoft services that use Microsoft Entra identities.",
    ),
    (
        "e8611ab8-c189-46e8-94e1-60213ab1f814",
        "Privileged Role Administrator",
        "Can manage role assignments in Microsoft Entra ID, and all aspects of Privileged Identity Management.",
    ),
    (
        "7be44c8a-adaf-4e2a-84d6-ab2649e08a13",
        "Privileged Authentication Administrator",
        "Can access to view, set and reset authentication method information for any user (admin or non-admin).",
    ),
    (
        "fe930be7-5e62-47db-91af-98c3a49a38b1",
        "User Administrator",
        "Can manage all aspects of users and groups, including resetting passwords for limited admins.",
    ),
    (
        "194ae4cb-b126-40b2-bd5b-6091b380977d",
        "Security Administrator",
        "Can read security information and reports, and manage configuration in Microsoft Entra ID and Office 365.",
    ),
    (
        "29232cdf-9323-42fd-ade2-1d097af3e4de",
        "Exchange Administrator",
        "Can manage all aspects of the Exchange product.",
    ),
    (
        "729827e3-9c14-49f7-bb1b-9608f156bbb8",
        "Helpdesk Administrator",
        "Can reset passwords for non-administrators and Helpdesk Administrators.",
    ),
    (
        "b1be1c3e-b65d-4f19-8427-f6fa0d97feb9",
        "Conditional Access Administrator",
        "Can manage Conditional Access capabilities.",
    ),
    (
        "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3",
        "Application Administrator",
        "Can create and manage all aspects of app registrations and enterprise apps.",
    ),
    (
        "158c047a-c907-4556-b7ef-446551a6b5f7",
        "Cloud Application Administrator",
        "Can create and manage all aspects of app registrations and enterprise apps except App Proxy.",
    ),
    (
        "c4e39bd9-1100-46d3-8c65-fb160da0071f",
        "Authentication Administrator",
        "Can access to view, set and reset authentication method information for any non-admin user.",
    ),
    (
        "fdd7a751-b60b-444a-984c-02652fe8fa1c",
        "Groups Administrator",
        "Members of this role can create/manage groups, create/manage groups settings like naming and expiration policies, and view groups activity and audit reports.",
    ),
    (
        "f28a1f50-f6e7-4571-818b-6a12f2af6b6c",
        "SharePoint Administrator",
        "Can manage all aspects of the SharePoint service.",
    ),
    (
        "3a2c62db-5318-420d-8d74-23affee5d9d5",
        "Intune Administrator",
        "Can manage all aspects of the Intune product.",
    ),
    (
        "69091246-20e8-4a56-aa4d-066075b2a7a8",
        "Teams Administrator",
        "Can manage the Microsoft Teams service.",
    ),
    (
        "b0f54661-2d74-4c50-afa3-1ec803f12efe",
        "Billing Administrator",
        "Can perform common billing related tasks like updating payment information.",
    ),
    (
        "f2ef992c-3afb-46b9-b7cf-a126ee74c451",
        "Global Reader",
        "Can read everything that a Global Administrator can, but not update anything.",
    ),
    (
        "5d6b6bb7-de71-4623-b4af-96380a352509",
        "Security Reader",
        "Can read security information and reports in Microsoft Entra ID and Office 365.",
    ),
    (
        "5f2222b1-57c3-48ba-8ad5-d4759f1fde6f",
        "Security Operator",
        "Creates and manages security events.",
    ),
    (
        "88d8e3e3-8f55-4a1e-953a-9b9898b8876b",
        "Directory Readers",
        "Can read basic directory information. Commonly used to grant directory read access to applications and guests.",
    ),
];

const ROLE_DEF_PROPS: &[&str] = &[
    "id",
    "description",
    "displayName",
    "isBuiltIn",
    "isEnabled",
    "resourceScopes",
    "templateId",
    "version",
    "rolePermissions",
];

/// `GET /roleManagement/directory/roleDefinitions`: the built-in roles, whose
/// `id` is their `templateId`, in one page.
pub(crate) fn list_role_definitions(st: &mut State, req: &Req, _ctx: &Ctx) -> Resp {
    if let Some(r) = require(st, ROLE_READ) {
        return r;
    }
    let select = match parse_select(req, ROLE_DEF_PROPS, "microsoft.graph.unifiedRoleDefinition") {
        Ok(s) => s,
        Err(e) => return e,
    };
    let clauses = match filter_clauses(req, &["id", "displayName", "templateId"]) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let value = BUILT_IN_ROLES
        .iter()
        .filter_map(|(id, name, description)| {
            let full = json!({
                "id": id,
                "description": description,
                "displayName": name,
                "isBuiltIn": true,
                "isEnabled": true,
                "resourceScopes": ["/"],
                "templateId": id,
                "version": "1",
                "rolePermissions": [],
            });
            let o = full.as_object()?.clone();
            filter_matches(&o, &clauses).then(|| {
                Value::Object(match &select {
                    Some(s) => project(&o, s),
                    None => o,
                })
            })
        })
        .collect();
    collection(
        context_for("roleManagement/directory/roleDefinitions", &select, ""),
        value,
        None,
    )
}

// ---------------------------------------------------------------- role assignments

/// The principal of an assignment as `$expand=principal` gives it (null when
/// the directory has no such object).
fn principal_json(st: &State, id: &str) -> Value {
    if let Some(e) = st.users.get(id) {
        json!({
            "@odata.type": "#microsoft.graph.user",
            "id": e.user.id,
            "displayName": e.user.display_name,
            "userPrincipalName": e.user.user_principal_name,
            "userType": e.user.user_type,
            "accountEnabled": e.user.account_enabled,
        })
    } else if let Some(g) = st.groups.get(id) {
        json!({
            "@odata.type": "#microsoft.graph.group",
            "id": g.id,
            "displayName": g.display_name,
            "securityEnabled": g.security_enabled,
            "isAssignableToRole": if g.is_assignable_to_role { json!(true) } else { Value::Null },
        })
    } else if let Some(name) = st.service_principals.get(id) {
        json!({
            "@odata.type": "#microsoft.graph.servicePrincipal",
            "id": id,
            "displayName": name,
        })
    } else {
        Value::Null
    }
}

/// `GET /roleManagement/directory/roleAssignments`: `$filter` (eq), `$select`,
/// `$expand=principal`, index-paged (default 100, `$top` up to 999).
pub(crate) fn list_assignments(st: &mut State, req: &Req, ctx: &Ctx) -> Resp {
    if let Some(r) = require(st, ROLE_READ) {
        return r;
    }
    let select = match parse_select(
        req,
        ASSIGNMENT_PROPS,
        "microsoft.graph.unifiedRoleAssignment",
    ) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let clauses = match filter_clauses(req, ASSIGNMENT_PROPS) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let expand = match req.param("$expand") {
        None => false,
        Some(x) if x.trim().eq_ignore_ascii_case("principal") => true,
        Some(x) => {
            return graph_error(
                400,
                "BadRequest",
                &format!(
                    "The fake tenant supports only $expand=principal on role assignments (got '{x}')."
                ),
            );
        }
    };
    let (skip, top) = match paging(req, 100, 999) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let items: Vec<Value> = st
        .role_assignments
        .iter()
        .map(|a| (a, assignment_json(a)))
        .filter(|(_, o)| filter_matches(o, &clauses))
        .map(|(a, o)| {
            let mut o = match &select {
                Some(s) => project(&o, s),
                None => o,
            };
            if expand {
                o.insert("principal".into(), principal_json(st, &a.principal_id));
            }
            Value::Object(o)
        })
        .collect();
    let suffix = if expand { "(principal())" } else { "" };
    index_page(
        req,
        ctx,
        context_for("roleManagement/directory/roleAssignments", &select, suffix),
        items,
        skip,
        top,
    )
}

// ---------------------------------------------------------------- PIM schedules

const SCHEDULE_PROPS: &[&str] = &[
    "id",
    "principalId",
    "roleDefinitionId",
    "directoryScopeId",
    "appScopeId",
    "createdDateTime",
    "modifiedDateTime",
    "createdUsing",
    "status",
    "memberType",
    "assignmentType",
    "scheduleInfo",
];

/// `scheduleInfo` of a schedule.
fn schedule_info(start: &str, end: Option<&str>) -> Value {
    let expiration = match end {
        Some(e) => json!({"type": "afterDateTime", "endDateTime": e, "duration": null}),
        None => json!({"type": "noExpiration", "endDateTime": null, "duration": null}),
    };
    json!({"startDateTime": start, "recurrence": null, "expiration": expiration})
}

/// A roleAssignmentSchedule for an active assignment: its PIM schedule, or
/// `Assigned` with no expiration since the fake started (a direct assignment).
fn assignment_schedule(
    a: &RoleAssignment,
    sched: Option<&PimSchedule>,
    started: &str,
) -> Map<String, Value> {
    let (start, end, kind) = match sched {
        Some(s) => (
            s.start.as_str(),
            s.end.as_deref(),
            s.assignment_type.as_str(),
        ),
        None => (started, None, "Assigned"),
    };
    let mut m = Map::new();
    m.insert("id".into(), json!(a.id));
    m.insert("principalId".into(), json!(a.principal_id));
    m.insert("roleDefinitionId".into(), json!(a.role_definition_id));
    m.insert("directoryScopeId".into(), json!(a.directory_scope_id));
    m.insert("appScopeId".into(), Value::Null);
    m.insert("createdDateTime".into(), json!(start));
    m.insert("modifiedDateTime".into(), Value::Null);
    m.insert("createdUsing".into(), json!(a.id));
    m.insert("status".into(), json!("Provisioned"));
    m.insert("memberType".into(), json!("Direct"));
    m.insert("assignmentType".into(), json!(kind));
    m.insert("scheduleInfo".into(), schedule_info(start, end));
    m
}

/// A roleEligibilitySchedule.
fn eligibility_schedule(e: &RoleEligibility) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(e.id));
    m.insert("principalId".into(), json!(e.principal_id));
    m.insert("roleDefinitionId".into(), json!(e.role_definition_id));
    m.insert("directoryScopeId".into(), json!(e.directory_scope_id));
    m.insert("appScopeId".into(), Value::Null);
    m.insert("createdDateTime".into(), json!(e.start));
    m.insert("modifiedDateTime".into(), Value::Null);
    m.insert("createdUsing".into(), json!(e.id));
    m.insert("status".into(), json!("Provisioned"));
    m.insert("memberType".into(), json!(e.member_type));
    m.insert(
        "scheduleInfo".into(),
        schedule_info(&e.start, e.end.as_deref()),
    );
    m
}

/// `GET /roleManagement/directory/roleEligibilitySchedules` (`eligible`) or
/// `roleAssignmentSchedules`: needs P2 and a schedule permission; `$filter`
/// (eq), `$select`, index-paged (default 100, `$top` up to 999).
pub(crate) fn list_schedules(st: &mut State, req: &Req, ctx: &Ctx, eligible: bool) -> Resp {
    let perms = if eligible {
        ELIGIBILITY_SCHEDULE_READ
    } else {
        ASSIGNMENT_SCHEDULE_READ
    };
    if let Some(r) = pim_gate(st, perms) {
        return r;
    }
    let (entity, type_name) = if eligible {
        (
            "roleEligibilitySchedules",
            "microsoft.graph.unifiedRoleEligibilitySchedule",
        )
    } else {
        (
            "roleAssignmentSchedules",
            "microsoft.graph.unifiedRoleAssignmentSchedule",
        )
    };
    let known: Vec<&'static str> = SCHEDULE_PROPS
        .iter()
        .copied()
        .filter(|p| !eligible || *p != "assignmentType")
        .collect();
    let select = match parse_select(req, &known, type_name) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let clauses = match filter_clauses(req, &known) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let (skip, top) = match paging(req, 100, 999) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let started = rfc3339(st.started);
    let all: Vec<Map<String, Value>> = if eligible {
        st.eligibilities.iter().map(eligibility_schedule).collect()
    } else {
        st.role_assignments
            .iter()
            .map(|a| assignment_schedule(a, st.pim_schedules.get(&a.id), &started))
            .collect()
    };
    let items = all
        .into_iter()
        .filter(|o| filter_matches(o, &clauses))
        .map(|o| {
            Value::Object(match &select {
                Some(s) => project(&o, s),
                None => o,
            })
        })
        .collect();
    index_page(
        req,
        ctx,
        context_for(&format!("roleManagement/directory/{entity}"), &select, ""),
        items,
        skip,
        top,
    )
}

// ---------------------------------------------------------------- groups

/// `GET /groups`: `$filter` (eq on string properties), `$select`, index-paged
/// by id (default 100, `$top` up to 999).
pub(crate) fn list_groups(st: &mut State, req: &Req, ctx: &Ctx) -> Resp {
    if let Some(r) = require(st, GROUP_MEMBER_READ) {
        return r;
    }
    let select = match parse_select(req, GROUP_PROPS, "microsoft.graph.group") {
        Ok(s) => s,
        Err(e) => return e,
    };
    let clauses = match filter_clauses(req, GROUP_PROPS) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let (skip, top) = match paging(req, 100, 999) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let default = group_default();
    let mut groups: Vec<_> = st.groups.values().collect();
    groups.sort_by(|a, b| a.id.cmp(&b.id));
    let items = groups
        .into_iter()
        .map(|g| {
            let rule = g.dynamic.then(|| {
                st.group_rules
                    .get(&g.id)
                    .map_or(DEFAULT_RULE, String::as_str)
            });
            group_json(g, rule)
        })
        .filter(|o| filter_matches(o, &clauses))
        .map(|o| Value::Object(project(&o, select.as_deref().unwrap_or(&default))))
        .collect();
    index_page(
        req,
        ctx,
        context_for("groups", &select, ""),
        items,
        skip,
        top,
    )
}

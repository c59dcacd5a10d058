//! Microsoft Graph v1.0 handlers. Everything here runs under the state lock and
//! never awaits.

use crate::RoleAssignment;
use crate::reads;
use crate::state::{State, UserEntry};
use crate::util::{
    Body, Req, Resp, bad_request, decode_segment, graph_error, merge_patch, method_not_allowed,
    not_found, now_rfc3339, rfc3339,
};
use crate::{Group, User};
use serde_json::{Map, Value, json};

pub(crate) const META: &str = "https://graph.microsoft.com/v1.0/$metadata";

/// Real user properties (besides the modelled ones, returned as null / empty).
pub(crate) const USER_PROPS: &[&str] = &[
    "id",
    "userPrincipalName",
    "displayName",
    "userType",
    "accountEnabled",
    "signInSessionsValidFromDateTime",
    "businessPhones",
    "givenName",
    "surname",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "aboutMe",
    "ageGroup",
    "assignedLicenses",
    "assignedPlans",
    "city",
    "companyName",
    "country",
    "createdDateTime",
    "creationType",
    "deletedDateTime",
    "department",
    "employeeHireDate",
    "employeeId",
    "employeeType",
    "externalUserState",
    "externalUserStateChangeDateTime",
    "identities",
    "imAddresses",
    "lastPasswordChangeDateTime",
    "mailNickname",
    "onPremisesDistinguishedName",
    "onPremisesDomainName",
    "onPremisesImmutableId",
    "onPremisesLastSyncDateTime",
    "onPremisesSamAccountName",
    "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled",
    "onPremisesUserPrincipalName",
    "otherMails",
    "passwordPolicies",
    "postalCode",
    "proxyAddresses",
    "signInActivity",
    "state",
    "streetAddress",
    "usageLocation",
];

/// What GET /users/{id} returns without $select (Graph's documented default set).
pub(crate) const USER_DEFAULT: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "id",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
];

/// Real group properties (besides the modelled ones, returned as null / empty).
pub(crate) const GROUP_PROPS: &[&str] = &[
    "id",
    "displayName",
    "groupTypes",
    "mailEnabled",
    "securityEnabled",
    "onPremisesSyncEnabled",
    "isAssignableToRole",
    "membershipRule",
    "membershipRuleProcessingState",
    "description",
    "mail",
    "mailNickname",
    "createdDateTime",
    "deletedDateTime",
    "classification",
    "expirationDateTime",
    "visibility",
    "securityIdentifier",
    "onPremisesSecurityIdentifier",
    "onPremisesLastSyncDateTime",
    "onPremisesSamAccountName",
    "onPremisesDomainName",
    "onPremisesNetBiosName",
    "proxyAddresses",
    "renewedDateTime",
    "preferredDataLocation",
    "preferredLanguage",
    "theme",
    "resourceBehaviorOptions",
    "resourceProvisioningOptions",
    "uniqueName",
];

pub(crate) const ASSIGNMENT_PROPS: &[&str] = &[
    "id",
    "principalId",
    "roleDefinitionId",
    "directoryScopeId",
    "appScopeId",
    "condition",
];

pub(crate) const INSTANCE_PROPS: &[&str] = &[
    "id",
    "principalId",
    "roleDefinitionId",
    "directoryScopeId",
    "appScopeId",
    "startDateTime",
    "endDateTime",
    "assignmentType",
    "memberType",
    "roleAssignmentOriginId",
    "roleAssignmentScheduleId",
];

/// Values the fake is handed besides the state.
pub(crate) struct Ctx<'a> {
    /// The fake's base URL (for @odata.nextLink).
    pub base_url: &'a str,
    /// The tenant id (the organization's id).
    pub tenant: &'a str,
}

/// Routes one Graph request.
pub(crate) fn dispatch(st: &mut State, req: &Req, ctx: &Ctx) -> Resp {
    let mut segs: Vec<String> = req
        .path
        .trim_start_matches('/')
        .split('/')
        .map(decode_segment)
        .collect();
    if segs.len() > 1 && segs.last().is_some_and(String::is_empty) {
        segs.pop();
    }
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = req.method.as_str();
    let is = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    match s.as_slice() {
        [u, id] if is(u, "users") => match m {
            "GET" => get_user(st, req, id),
            "PATCH" => patch_user(st, req, id),
            _ => method_not_allowed(),
        },
        [u, id, action]
            if is(u, "users")
                && (is(action, "revokeSignInSessions")
                    || is(action, "microsoft.graph.revokeSignInSessions")) =>
        {
            match m {
                "POST" => revoke_sessions(st, id),
                _ => method_not_allowed(),
            }
        }
        [u, id, rel]
            if is(u, "users") && (is(rel, "memberOf") || is(rel, "transitiveMemberOf")) =>
        {
            match m {
                "GET" => list_member_of(st, req, ctx, id, is(rel, "transitiveMemberOf")),
                _ => method_not_allowed(),
            }
        }
        [d, op]
            if is(d, "directoryObjects")
                && (is(op, "getByIds") || is(op, "microsoft.graph.getByIds")) =>
        {
            match m {
                "POST" => crate::by_ids::get_by_ids(st, req),
                _ => method_not_allowed(),
            }
        }
        [o] if is(o, "organization") => match m {
            "GET" => reads::list_organization(st, req, ctx),
            _ => method_not_allowed(),
        },
        [u] if is(u, "users") => match m {
            "GET" => reads::list_users(st, req, ctx),
            _ => method_not_allowed(),
        },
        [r, am, urd]
            if is(r, "reports")
                && is(am, "authenticationMethods")
                && is(urd, "userRegistrationDetails") =>
        {
            match m {
                "GET" => reads::list_registration_details(st, req, ctx),
                _ => method_not_allowed(),
            }
        }
        [ip, ru] if is(ip, "identityProtection") && is(ru, "riskyUsers") => match m {
            "GET" => reads::list_risky_users(st, req, ctx),
            _ => method_not_allowed(),
        },
        [rm, d, rd]
            if is(rm, "roleManagement") && is(d, "directory") && is(rd, "roleDefinitions") =>
        {
            match m {
                "GET" => reads::list_role_definitions(st, req, ctx),
                _ => method_not_allowed(),
            }
        }
        [rm, d, sch]
            if is(rm, "roleManagement")
                && is(d, "directory")
                && (is(sch, "roleEligibilitySchedules") || is(sch, "roleAssignmentSchedules")) =>
        {
            match m {
                "GET" => reads::list_schedules(st, req, ctx, is(sch, "roleEligibilitySchedules")),
                _ => method_not_allowed(),
            }
        }
        [g] if is(g, "groups") => match m {
            "GET" => reads::list_groups(st, req, ctx),
            "POST" => create_group(st, req),
            _ => method_not_allowed(),
        },
        [g, id] if is(g, "groups") => match m {
            "GET" => get_group(st, req, id),
            _ => method_not_allowed(),
        },
        [g, id, mm] if is(g, "groups") && is(mm, "members") => match m {
            "GET" => list_members(st, req, ctx, id),
            _ => method_not_allowed(),
        },
        [g, id, mm, r] if is(g, "groups") && is(mm, "members") && *r == "$ref" => match m {
            "POST" => add_member(st, req, id),
            _ => method_not_allowed(),
        },
        [g, id, mm, uid, r] if is(g, "groups") && is(mm, "members") && *r == "$ref" => match m {
            "DELETE" => remove_member(st, id, uid),
            _ => method_not_allowed(),
        },
        [g, id, mm, uid] if is(g, "groups") && is(mm, "members") => match m {
            "GET" => get_member(st, req, id, uid),
            // Without /$ref this would delete the member object itself from the
            // directory (or 403 without the permission): never a membership removal.
            "DELETE" => delete_member_object(st, id),
            _ => method_not_allowed(),
        },
        [rm, d, ra]
            if is(rm, "roleManagement") && is(d, "directory") && is(ra, "roleAssignments") =>
        {
            match m {
                "GET" => reads::list_assignments(st, req, ctx),
                "POST" => create_assignment(st, req),
                _ => method_not_allowed(),
            }
        }
        [rm, d, ra, id]
            if is(rm, "roleManagement") && is(d, "directory") && is(ra, "roleAssignments") =>
        {
            match m {
                "GET" => get_assignment(st, req, id),
                "DELETE" => delete_assignment(st, id),
                _ => method_not_allowed(),
            }
        }
        [rm, d, si]
            if is(rm, "roleManagement")
                && is(d, "directory")
                && is(si, "roleAssignmentScheduleInstances") =>
        {
            match m {
                "GET" => list_instances(st, req),
                _ => method_not_allowed(),
            }
        }
        [rm, d, sr]
            if is(rm, "roleManagement")
                && is(d, "directory")
                && is(sr, "roleAssignmentScheduleRequests") =>
        {
            match m {
                "POST" => schedule_request(st, req),
                _ => method_not_allowed(),
            }
        }
        [i, ca, p] if is(i, "identity") && is(ca, "conditionalAccess") && is(p, "policies") => {
            match m {
                "GET" => list_policies(st),
                "POST" => create_policy(st, req),
                _ => method_not_allowed(),
            }
        }
        [i, ca, p, id] if is(i, "identity") && is(ca, "conditionalAccess") && is(p, "policies") => {
            match m {
                "GET" => get_policy(st, id),
                "PATCH" => patch_policy(st, req, id),
                "DELETE" => delete_policy(st, id),
                _ => method_not_allowed(),
            }
        }
        _ => route_not_found(&s),
    }
}

/// 404 for a path the fake does not know.
pub(crate) fn route_not_found(segs: &[&str]) -> Resp {
    let seg = segs.first().copied().unwrap_or("");
    graph_error(
        404,
        "NotFound",
        &format!("Resource not found for the segment '{seg}'."),
    )
}

// ---------------------------------------------------------------- bodies

/// The JSON object body of a POST/PATCH, or Graph's 400.
pub(crate) fn object_body(req: &Req) -> Result<&Map<String, Value>, Resp> {
    match &req.body {
        Body::None => Err(graph_error(
            400,
            "BadRequest",
            "Empty Payload. JSON content expected.",
        )),
        Body::Json(Value::Object(o)) => Ok(o),
        Body::Json(_) | Body::Invalid(_) => Err(graph_error(
            400,
            "BadRequest",
            "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
        )),
    }
}

// ---------------------------------------------------------------- $select / $filter

/// Canonical property names from `$select`, validated against `known`.
pub(crate) fn parse_select(
    req: &Req,
    known: &[&'static str],
    type_name: &str,
) -> Result<Option<Vec<&'static str>>, Resp> {
    let Some(sel) = req.param("$select") else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for name in sel.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match known.iter().find(|k| k.eq_ignore_ascii_case(name)) {
            Some(k) => {
                if !out.contains(k) {
                    out.push(*k);
                }
            }
            None => {
                return Err(graph_error(
                    400,
                    "BadRequest",
                    &format!("Could not find a property named '{name}' on type '{type_name}'."),
                ));
            }
        }
    }
    Ok(Some(out))
}

/// Keeps only `props` of `full` (in that order); `@odata.*` annotations stay.
pub(crate) fn project(full: &Map<String, Value>, props: &[&str]) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in full {
        if k.starts_with("@odata.") {
            out.insert(k.clone(), v.clone());
        }
    }
    for p in props {
        out.insert(
            (*p).to_string(),
            full.get(*p).cloned().unwrap_or(Value::Null),
        );
    }
    out
}

/// `principalId eq 'x' and roleDefinitionId eq 'y'` into (property, value) pairs.
pub(crate) fn parse_filter(
    filter: &str,
    known: &[&'static str],
) -> Result<Vec<(&'static str, String)>, Resp> {
    let unsupported = || {
        graph_error(
            400,
            "BadRequest",
            &format!(
                "Invalid filter clause: the fake tenant supports only \"property eq 'value'\" clauses joined by 'and' (got \"{filter}\")."
            ),
        )
    };
    let mut out = Vec::new();
    let mut rest = filter.trim();
    loop {
        let (prop, after) = rest
            .split_once(char::is_whitespace)
            .ok_or_else(unsupported)?;
        let after = after.trim_start();
        let after = after
            .strip_prefix("eq ")
            .or_else(|| after.strip_prefix("EQ "))
            .ok_or_else(unsupported)?
            .trim_start();
        let after = after.strip_prefix('\'').ok_or_else(unsupported)?;
        // A quote inside the literal is doubled ('').
        let mut value = String::new();
        let mut chars = after.char_indices().peekable();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if chars.peek().is_some_and(|(_, n)| *n == '\'') {
                    value.push('\'');
                    chars.next();
                } else {
                    end = Some(i + 1);
                    break;
                }
            } else {
                value.push(c);
            }
        }
        let end = end.ok_or_else(unsupported)?;
        let canonical = known
            .iter()
            .find(|k| k.eq_ignore_ascii_case(prop))
            .ok_or_else(|| {
                graph_error(
                    400,
                    "BadRequest",
                    &format!(
                        "Invalid filter clause: property '{prop}' is not supported in $filter."
                    ),
                )
            })?;
        out.push((*canonical, value));
        rest = after[end..].trim_start();
        if rest.is_empty() {
            return Ok(out);
        }
        let lower = rest.to_ascii_lowercase();
        if !lower.starts_with("and ") {
            return Err(unsupported());
        }
        rest = rest[4..].trim_start();
    }
}

pub(crate) fn filter_matches(obj: &Map<String, Value>, clauses: &[(&str, String)]) -> bool {
    clauses
        .iter()
        .all(|(p, v)| obj.get(*p).and_then(Value::as_str) == Some(v.as_str()))
}

pub(crate) fn context_for(base: &str, select: &Option<Vec<&str>>, suffix: &str) -> String {
    match select {
        Some(s) if !s.is_empty() => format!("{META}#{base}({}){suffix}", s.join(",")),
        _ => format!("{META}#{base}{suffix}"),
    }
}

// ---------------------------------------------------------------- users

/// Every property of a user (unmodelled ones null or empty).
fn user_json(e: &UserEntry, started: i64) -> Map<String, Value> {
    reads::user_object(e, USER_PROPS, started)
}

fn get_user(st: &mut State, req: &Req, id: &str) -> Resp {
    let select = match parse_select(req, USER_PROPS, "microsoft.graph.user") {
        Ok(s) => s,
        Err(e) => return e,
    };
    let Some(e) = st.find_user(id) else {
        return not_found(id);
    };
    let mut obj = reads::user_object(e, select.as_deref().unwrap_or(USER_DEFAULT), st.started);
    obj.insert(
        "@odata.context".into(),
        json!(context_for("users", &select, "/$entity")),
    );
    Resp::json(200, Value::Object(obj))
}

fn patch_user(st: &mut State, req: &Req, id: &str) -> Resp {
    let body = match object_body(req) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let Some(key) = st.find_user(id).map(|e| e.user.id.clone()) else {
        return not_found(id);
    };
    let invalid = |p: &str| {
        bad_request(&format!(
            "Invalid value specified for property '{p}' of resource 'User'."
        ))
    };
    // Validate everything first: a PATCH applies all or nothing.
    for (k, v) in body {
        if k.starts_with('@') {
            continue;
        }
        match k.as_str() {
            "accountEnabled" if !v.is_boolean() => return invalid(k),
            "displayName" | "userPrincipalName" if !v.is_string() => return invalid(k),
            "userType" if !matches!(v.as_str(), Some("Member" | "Guest")) => return invalid(k),
            "id" => {
                return bad_request("Property 'id' is read-only and cannot be set.");
            }
            _ if USER_PROPS.contains(&k.as_str()) => {}
            _ => {
                return graph_error(
                    400,
                    "BadRequest",
                    &format!(
                        "The property '{k}' does not exist on type 'microsoft.graph.user'. Make sure to only use property names that are defined by the type or mark the type as open type."
                    ),
                );
            }
        }
    }
    let Some(entry) = st.users.get_mut(&key) else {
        return not_found(id);
    };
    let u: &mut User = &mut entry.user;
    for (k, v) in body {
        match (k.as_str(), v) {
            ("accountEnabled", Value::Bool(b)) => u.account_enabled = *b,
            ("displayName", Value::String(s)) => u.display_name = s.clone(),
            ("userPrincipalName", Value::String(s)) => u.user_principal_name = s.clone(),
            ("userType", Value::String(s)) => u.user_type = s.clone(),
            _ => {}
        }
    }
    Resp::empty(204)
}

fn revoke_sessions(st: &mut State, id: &str) -> Resp {
    let Some(key) = st.find_user(id).map(|e| e.user.id.clone()) else {
        return not_found(id);
    };
    if let Some(e) = st.users.get_mut(&key) {
        e.sessions_valid_from = Some(now_rfc3339());
    }
    *st.revocations.entry(key).or_insert(0) += 1;
    Resp::json(
        200,
        json!({"@odata.context": format!("{META}#Edm.Boolean"), "value": true}),
    )
}

// ---------------------------------------------------------------- groups

/// The default membershipRule of a dynamic group without one of its own.
pub(crate) const DEFAULT_RULE: &str = "(user.department -eq \"Sales\")";

/// A group's properties (`rule`: its membershipRule, when dynamic).
pub(crate) fn group_json(g: &Group, rule: Option<&str>) -> Map<String, Value> {
    let mut m = Map::new();
    for p in GROUP_PROPS {
        m.insert((*p).to_string(), Value::Null);
    }
    for p in [
        "proxyAddresses",
        "resourceBehaviorOptions",
        "resourceProvisioningOptions",
    ] {
        m.insert(p.to_string(), json!([]));
    }
    let mut types = Vec::new();
    if g.mail_enabled && !g.security_enabled {
        types.push("Unified");
    }
    if g.dynamic {
        types.push("DynamicMembership");
        m.insert("membershipRule".into(), json!(rule.unwrap_or(DEFAULT_RULE)));
        m.insert("membershipRuleProcessingState".into(), json!("On"));
    }
    m.insert("id".into(), json!(g.id));
    m.insert("displayName".into(), json!(g.display_name));
    m.insert("groupTypes".into(), json!(types));
    m.insert("mailEnabled".into(), json!(g.mail_enabled));
    m.insert("securityEnabled".into(), json!(g.security_enabled));
    // Graph: true when synced, null when never synced.
    m.insert(
        "onPremisesSyncEnabled".into(),
        if g.on_premises_sync_enabled {
            json!(true)
        } else {
            Value::Null
        },
    );
    // Set only at creation; groups that are not role-assignable read null.
    m.insert(
        "isAssignableToRole".into(),
        if g.is_assignable_to_role {
            json!(true)
        } else {
            Value::Null
        },
    );
    m
}

/// What GET /groups/{id} returns without $select.
pub(crate) fn group_default() -> Vec<&'static str> {
    GROUP_PROPS.to_vec()
}

fn get_group(st: &mut State, req: &Req, id: &str) -> Resp {
    let select = match parse_select(req, GROUP_PROPS, "microsoft.graph.group") {
        Ok(s) => s,
        Err(e) => return e,
    };
    let Some(g) = st.groups.get(id) else {
        return not_found(id);
    };
    let default = group_default();
    let rule = st.group_rules.get(id).map(String::as_str);
    let mut obj = project(&group_json(g, rule), select.as_deref().unwrap_or(&default));
    obj.insert(
        "@odata.context".into(),
        json!(context_for("groups", &select, "/$entity")),
    );
    Resp::json(200, Value::Object(obj))
}

/// `POST /groups`: Graph requires displayName, mailEnabled, mailNickname and
/// securityEnabled; only security groups (or Microsoft 365 groups) are made.
fn create_group(st: &mut State, req: &Req) -> Resp {
    let body = match object_body(req) {
        Ok(b) => b,
        Err(e) => return e,
    };
    for k in ["displayName", "mailNickname"] {
        if body
            .get(k)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return bad_request(&format!(
                "Invalid value specified for property '{k}' of resource 'Group'."
            ));
        }
    }
    for k in ["mailEnabled", "securityEnabled"] {
        if !body.get(k).is_some_and(Value::is_boolean) {
            return bad_request(&format!(
                "Invalid value specified for property '{k}' of resource 'Group'."
            ));
        }
    }
    let mail_enabled = body["mailEnabled"] == json!(true);
    let unified = body
        .get("groupTypes")
        .and_then(Value::as_array)
        .is_some_and(|t| t.iter().any(|x| x == "Unified"));
    if mail_enabled && !unified {
        return bad_request(
            "Creating mail-enabled security groups or distribution groups is not supported through Microsoft Graph.",
        );
    }
    let g = Group {
        id: uuid::Uuid::new_v4().to_string(),
        display_name: body["displayName"].as_str().unwrap_or("").to_string(),
        dynamic: false,
        mail_enabled,
        security_enabled: body["securityEnabled"] == json!(true),
        on_premises_sync_enabled: false,
        is_assignable_to_role: body.get("isAssignableToRole") == Some(&json!(true)),
    };
    let mut obj = group_json(&g, None);
    obj.insert(
        "@odata.context".into(),
        json!(format!("{META}#groups/$entity")),
    );
    st.members.entry(g.id.clone()).or_default();
    st.groups.insert(g.id.clone(), g);
    st.created_groups += 1;
    Resp::json(201, Value::Object(obj))
}

/// A directory object (user, group or unknown) for member listings.
fn directory_object(
    st: &State,
    id: &str,
    select: &Option<Vec<&'static str>>,
) -> Map<String, Value> {
    if let Some(e) = st.users.get(id) {
        let props: Vec<&str> = match select {
            Some(s) => s
                .iter()
                .copied()
                .filter(|p| USER_PROPS.contains(p))
                .collect(),
            None => USER_DEFAULT.to_vec(),
        };
        let mut o = project(&user_json(e, st.started), &props);
        o.insert("@odata.type".into(), json!("#microsoft.graph.user"));
        o
    } else if let Some(g) = st.groups.get(id) {
        let props: Vec<&str> = match select {
            Some(s) => s
                .iter()
                .copied()
                .filter(|p| GROUP_PROPS.contains(p))
                .collect(),
            None => group_default(),
        };
        let rule = st.group_rules.get(id).map(String::as_str);
        let mut o = project(&group_json(g, rule), &props);
        o.insert("@odata.type".into(), json!("#microsoft.graph.group"));
        o
    } else {
        let mut o = Map::new();
        o.insert(
            "@odata.type".into(),
            json!("#microsoft.graph.directoryObject"),
        );
        o.insert("id".into(), json!(id));
        o
    }
}

/// `$select` of a directory object listing: any user or group property.
pub(crate) fn member_select(req: &Req) -> Result<Option<Vec<&'static str>>, Resp> {
    let mut known: Vec<&'static str> = USER_PROPS.to_vec();
    known.extend(GROUP_PROPS.iter().filter(|p| !USER_PROPS.contains(p)));
    parse_select(req, &known, "microsoft.graph.directoryObject")
}

fn list_members(st: &mut State, req: &Req, ctx: &Ctx, gid: &str) -> Resp {
    let select = match member_select(req) {
        Ok(s) => s,
        Err(e) => return e,
    };
    if let Some(r) = reads::require(st, reads::GROUP_MEMBER_READ) {
        return r;
    }
    if !st.groups.contains_key(gid) {
        return not_found(gid);
    }
    let (skip, top) = match page_params(req) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let st: &State = st;
    let ids = st.members.get(gid).map(Vec::as_slice).unwrap_or(&[]);
    directory_page(st, req, ctx, ids, &select, skip, top)
}

/// `$skiptoken` and `$top` of a directory listing, as Graph checks them:
/// (skip, top), or the 400 Graph answers.
fn page_params(req: &Req) -> Result<(usize, usize), Resp> {
    reads::paging(req, 100, 999)
}

/// One page of directory objects with Graph's `@odata.nextLink` (a
/// `$skiptoken`) when more follow.
fn directory_page(
    st: &State,
    req: &Req,
    ctx: &Ctx,
    ids: &[String],
    select: &Option<Vec<&'static str>>,
    skip: usize,
    top: usize,
) -> Resp {
    let page: Vec<Value> = ids
        .iter()
        .skip(skip)
        .take(top)
        .map(|id| Value::Object(directory_object(st, id, select)))
        .collect();
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(context_for("directoryObjects", select, "")),
    );
    if skip + top < ids.len() {
        body.insert(
            "@odata.nextLink".into(),
            json!(reads::next_link(req, ctx, &format!("fake-{}", skip + top))),
        );
    }
    body.insert("value".into(), Value::Array(page));
    Resp::json(200, Value::Object(body))
}

/// `GET /users/{id}/memberOf` (direct) or `/transitiveMemberOf` (through nested
/// groups too): the groups the user is in, paged like member listings.
fn list_member_of(st: &mut State, req: &Req, ctx: &Ctx, id: &str, transitive: bool) -> Resp {
    let select = match member_select(req) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let Some(uid) = st.find_user(id).map(|e| e.user.id.clone()) else {
        return not_found(id);
    };
    let (skip, top) = match page_params(req) {
        Ok(p) => p,
        Err(e) => return e,
    };
    // Groups containing the user, then (transitively) groups containing those.
    let mut found: Vec<String> = Vec::new();
    let mut frontier = vec![uid];
    while let Some(member) = frontier.pop() {
        let mut parents: Vec<&String> = st
            .members
            .iter()
            .filter(|(_, m)| m.contains(&member))
            .map(|(g, _)| g)
            .collect();
        parents.sort();
        for g in parents {
            if !found.contains(g) {
                found.push(g.clone());
                if transitive {
                    frontier.push(g.clone());
                }
            }
        }
    }
    directory_page(st, req, ctx, &found, &select, skip, top)
}

fn get_member(st: &mut State, req: &Req, gid: &str, uid: &str) -> Resp {
    let select = match member_select(req) {
        Ok(s) => s,
        Err(e) => return e,
    };
    if !st.groups.contains_key(gid) {
        return not_found(gid);
    }
    if !st
        .members
        .get(gid)
        .is_some_and(|m| m.iter().any(|x| x == uid))
    {
        return not_found(uid);
    }
    let mut obj = directory_object(st, uid, &select);
    obj.insert(
        "@odata.context".into(),
        json!(context_for("directoryObjects", &select, "/$entity")),
    );
    Resp::json(200, Value::Object(obj))
}

/// Graph refuses membership changes on groups it cannot manage.
fn unmanageable(g: &Group) -> Option<Resp> {
    if g.dynamic {
        return Some(bad_request(&format!(
            "Members of the group '{}' are managed by its dynamic membership rule; they cannot be added or removed.",
            g.id
        )));
    }
    if g.on_premises_sync_enabled {
        return Some(bad_request(
            "Unable to update the specified properties for on-premises mastered Directory Sync objects or objects currently undergoing migration.",
        ));
    }
    if g.mail_enabled && g.security_enabled {
        return Some(bad_request(
            "Cannot Update a mail-enabled security groups and or distribution list.",
        ));
    }
    None
}

/// The object id in an `@odata.id` such as
/// `https://graph.microsoft.com/v1.0/directoryObjects/{id}`.
fn odata_id_target(url: &str) -> Option<String> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let path = path.trim_end_matches('/');
    let (head, last) = path.rsplit_once('/')?;
    let collection = head.rsplit('/').next()?;
    let known = [
        "directoryObjects",
        "users",
        "groups",
        "servicePrincipals",
        "devices",
        "contacts",
    ];
    if !known.iter().any(|k| k.eq_ignore_ascii_case(collection)) || last.is_empty() {
        return None;
    }
    Some(decode_segment(last))
}

fn add_member(st: &mut State, req: &Req, gid: &str) -> Resp {
    let body = match object_body(req) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let Some(url) = body.get("@odata.id").and_then(Value::as_str) else {
        return bad_request(
            "The request body must contain an '@odata.id' reference to the object to add.",
        );
    };
    let Some(oid) = odata_id_target(url) else {
        return bad_request(&format!("Invalid object identifier '{url}'."));
    };
    let Some(g) = st.groups.get(gid) else {
        return not_found(gid);
    };
    if let Some(r) = unmanageable(g) {
        return r;
    }
    if !st.users.contains_key(&oid) && !st.groups.contains_key(&oid) {
        return not_found(&oid);
    }
    let members = st.members.entry(gid.to_string()).or_default();
    if members.contains(&oid) {
        return bad_request(
            "One or more added object references already exist for the following modified properties: 'members'.",
        );
    }
    members.push(oid);
    Resp::empty(204)
}

fn remove_member(st: &mut State, gid: &str, uid: &str) -> Resp {
    let Some(g) = st.groups.get(gid) else {
        return not_found(gid);
    };
    if let Some(r) = unmanageable(g) {
        return r;
    }
    let members = st.members.entry(gid.to_string()).or_default();
    let Some(pos) = members.iter().position(|m| m == uid) else {
        return not_found(uid);
    };
    members.remove(pos);
    Resp::empty(204)
}

fn delete_member_object(st: &mut State, gid: &str) -> Resp {
    if !st.groups.contains_key(gid) {
        return not_found(gid);
    }
    graph_error(
        403,
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
    )
}

// ---------------------------------------------------------------- role assignments

pub(crate) fn assignment_json(a: &RoleAssignment) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(a.id));
    m.insert("principalId".into(), json!(a.principal_id));
    m.insert("roleDefinitionId".into(), json!(a.role_definition_id));
    m.insert("directoryScopeId".into(), json!(a.directory_scope_id));
    m.insert("appScopeId".into(), Value::Null);
    m.insert("condition".into(), Value::Null);
    m
}

fn get_assignment(st: &mut State, req: &Req, id: &str) -> Resp {
    let select = match parse_select(
        req,
        ASSIGNMENT_PROPS,
        "microsoft.graph.unifiedRoleAssignment",
    ) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let Some(a) = st.role_assignments.iter().find(|a| a.id == id) else {
        return not_found(id);
    };
    let full = assignment_json(a);
    let mut obj = match &select {
        Some(s) => project(&full, s),
        None => full,
    };
    obj.insert(
        "@odata.context".into(),
        json!(context_for(
            "roleManagement/directory/roleAssignments",
            &select,
            "/$entity"
        )),
    );
    Resp::json(200, Value::Object(obj))
}

/// principalId, roleDefinitionId, directoryScopeId of a create body.
fn assignment_triple(body: &Map<String, Value>) -> Result<(String, String, String), Resp> {
    let s = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    let principal = s("principalId")
        .ok_or_else(|| bad_request("Invalid request: 'principalId' is required."))?;
    let role = s("roleDefinitionId")
        .ok_or_else(|| bad_request("Invalid request: 'roleDefinitionId' is required."))?;
    let scope = match (s("directoryScopeId"), s("appScopeId")) {
        (Some(d), _) => d,
        (None, Some(_)) => {
            return Err(bad_request(
                "The fake tenant supports directoryScopeId only, not appScopeId.",
            ));
        }
        (None, None) => {
            return Err(bad_request(
                "Invalid request: either 'directoryScopeId' or 'appScopeId' is required.",
            ));
        }
    };
    Ok((principal.to_string(), role.to_string(), scope.to_string()))
}

fn find_assignment(st: &State, principal: &str, role: &str, scope: &str) -> Option<usize> {
    st.role_assignments.iter().position(|a| {
        a.principal_id == principal && a.role_definition_id == role && a.directory_scope_id == scope
    })
}

fn new_assignment_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn create_assignment(st: &mut State, req: &Req) -> Resp {
    let body = match object_body(req) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let (principal, role, scope) = match assignment_triple(body) {
        Ok(t) => t,
        Err(e) => return e,
    };
    if find_assignment(st, &principal, &role, &scope).is_some() {
        return bad_request(
            "A conflicting object with one or more of the specified property values is present in the directory.",
        );
    }
    let a = RoleAssignment {
        id: new_assignment_id(),
        principal_id: principal,
        role_definition_id: role,
        directory_scope_id: scope,
        pim_managed: false,
    };
    let mut obj = assignment_json(&a);
    obj.insert(
        "@odata.context".into(),
        json!(format!(
            "{META}#roleManagement/directory/roleAssignments/$entity"
        )),
    );
    st.role_assignments.push(a);
    Resp::json(201, Value::Object(obj))
}

fn delete_assignment(st: &mut State, id: &str) -> Resp {
    let Some(pos) = st.role_assignments.iter().position(|a| a.id == id) else {
        return not_found(id);
    };
    st.role_assignments.remove(pos);
    Resp::empty(204)
}

// ---------------------------------------------------------------- PIM

fn instance_json(
    a: &RoleAssignment,
    started: i64,
    sched: Option<&crate::PimSchedule>,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(a.id));
    m.insert("principalId".into(), json!(a.principal_id));
    m.insert("roleDefinitionId".into(), json!(a.role_definition_id));
    m.insert("directoryScopeId".into(), json!(a.directory_scope_id));
    m.insert("appScopeId".into(), Value::Null);
    match sched {
        Some(s) => {
            m.insert("startDateTime".into(), json!(s.start));
            m.insert("endDateTime".into(), json!(s.end));
            m.insert("assignmentType".into(), json!(s.assignment_type));
        }
        None => {
            m.insert("startDateTime".into(), json!(rfc3339(started)));
            m.insert("endDateTime".into(), Value::Null);
            m.insert("assignmentType".into(), json!("Assigned"));
        }
    }
    m.insert("memberType".into(), json!("Direct"));
    m.insert("roleAssignmentOriginId".into(), json!(a.id));
    m.insert("roleAssignmentScheduleId".into(), json!(a.id));
    m
}

fn list_instances(st: &mut State, req: &Req) -> Resp {
    if let Some(r) = reads::pim_gate(st, reads::ASSIGNMENT_SCHEDULE_READ) {
        return r;
    }
    let select = match parse_select(
        req,
        INSTANCE_PROPS,
        "microsoft.graph.unifiedRoleAssignmentScheduleInstance",
    ) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let clauses = match req.param("$filter") {
        None => Vec::new(),
        Some(f) => match parse_filter(&f, INSTANCE_PROPS) {
            Ok(c) => c,
            Err(e) => return e,
        },
    };
    let value: Vec<Value> = st
        .role_assignments
        .iter()
        .filter(|a| a.pim_managed)
        .map(|a| instance_json(a, st.started, st.pim_schedules.get(&a.id)))
        .filter(|o| filter_matches(o, &clauses))
        .map(|o| match &select {
            Some(s) => Value::Object(project(&o, s)),
            None => Value::Object(o),
        })
        .collect();
    Resp::json(
        200,
        json!({
            "@odata.context": context_for("roleManagement/directory/roleAssignmentScheduleInstances", &select, ""),
            "value": value,
        }),
    )
}

/// The schedule an `adminAssign` asks for: `scheduleInfo.startDateTime` (now by
/// default) and `expiration` (`noExpiration`, or `afterDateTime` with an
/// `endDateTime` that must be in the future); `afterDuration` is not modelled.
fn pim_schedule_of(info: Option<&Value>) -> Result<crate::PimSchedule, Resp> {
    let now = now_rfc3339();
    let info = info.cloned().unwrap_or(Value::Null);
    let start = info["startDateTime"].as_str().unwrap_or(&now).to_string();
    let exp = &info["expiration"];
    let end = match exp["type"].as_str().unwrap_or("noExpiration") {
        t if t.eq_ignore_ascii_case("noExpiration") => None,
        t if t.eq_ignore_ascii_case("afterDateTime") => {
            let Some(end) = exp["endDateTime"].as_str() else {
                return Err(bad_request(
                    "Invalid request: expiration.endDateTime is required for afterDateTime.",
                ));
            };
            // RFC 3339 UTC strings of one shape compare as text.
            if end.get(..19) <= now.get(..19) {
                return Err(graph_error(
                    400,
                    "InvalidScheduleRequest",
                    "The expiration endDateTime must be in the future.",
                ));
            }
            Some(end.to_string())
        }
        other => {
            return Err(graph_error(
                501,
                "NotImplemented",
                &format!("The fake tenant does not implement expiration type '{other}'."),
            ));
        }
    };
    Ok(crate::PimSchedule {
        start,
        end,
        assignment_type: "Assigned".into(),
    })
}

const ACTIONS: &[&str] = &[
    "adminAssign",
    "adminUpdate",
    "adminRemove",
    "selfActivate",
    "selfDeactivate",
    "adminExtend",
    "adminRenew",
    "selfExtend",
    "selfRenew",
];

fn schedule_request(st: &mut State, req: &Req) -> Resp {
    let body = match object_body(req) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let Some(action) = body.get("action").and_then(Value::as_str) else {
        return bad_request("Invalid request: 'action' is required.");
    };
    let Some(action) = ACTIONS
        .iter()
        .find(|a| a.eq_ignore_ascii_case(action))
        .copied()
    else {
        return graph_error(
            400,
            "BadRequest",
            &format!(
                "The value '{action}' is not valid for property 'action' (unifiedRoleScheduleRequestActions)."
            ),
        );
    };
    let (principal, role, scope) = match assignment_triple(body) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let validation_only = body
        .get("isValidationOnly")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let existing = find_assignment(st, &principal, &role, &scope);
    let (status, target) = match action {
        "adminRemove" => {
            let Some(pos) = existing else {
                return graph_error(
                    400,
                    "RoleAssignmentDoesNotExist",
                    "The Role assignment does not exist.",
                );
            };
            let id = st.role_assignments[pos].id.clone();
            if !validation_only {
                st.role_assignments.remove(pos);
                st.pim_schedules.remove(&id);
            }
            ("Revoked", id)
        }
        "adminAssign" => {
            if existing.is_some() {
                return graph_error(
                    400,
                    "RoleAssignmentExists",
                    "The Role assignment already exists.",
                );
            }
            let sched = match pim_schedule_of(body.get("scheduleInfo")) {
                Ok(s) => s,
                Err(e) => return e,
            };
            let id = new_assignment_id();
            if !validation_only {
                st.pim_schedules.insert(id.clone(), sched);
                st.role_assignments.push(RoleAssignment {
                    id: id.clone(),
                    principal_id: principal.clone(),
                    role_definition_id: role.clone(),
                    directory_scope_id: scope.clone(),
                    pim_managed: true,
                });
            }
            ("Provisioned", id)
        }
        other => {
            return graph_error(
                501,
                "NotImplemented",
                &format!("The fake tenant does not implement the '{other}' action."),
            );
        }
    };
    let now = now_rfc3339();
    let schedule = body.get("scheduleInfo").cloned().unwrap_or_else(|| {
        json!({
            "startDateTime": now,
            "recurrence": null,
            "expiration": {"type": "noExpiration", "endDateTime": null, "duration": null}
        })
    });
    let ticket = body
        .get("ticketInfo")
        .cloned()
        .unwrap_or_else(|| json!({"ticketNumber": null, "ticketSystem": null}));
    Resp::json(
        201,
        json!({
            "@odata.context": format!("{META}#roleManagement/directory/roleAssignmentScheduleRequests/$entity"),
            "id": uuid::Uuid::new_v4().to_string(),
            "status": status,
            "createdDateTime": now,
            "completedDateTime": now,
            "approvalId": null,
            "customData": body.get("customData").cloned().unwrap_or(Value::Null),
            "action": action,
            "principalId": principal,
            "roleDefinitionId": role,
            "directoryScopeId": scope,
            "appScopeId": null,
            "isValidationOnly": validation_only,
            "targetScheduleId": target,
            "justification": body.get("justification").cloned().unwrap_or(Value::Null),
            "createdBy": {
                "application": {"displayName": null, "id": req.client_id},
                "device": null,
                "user": null
            },
            "scheduleInfo": schedule,
            "ticketInfo": ticket,
        }),
    )
}

// ---------------------------------------------------------------- Conditional Access

const CA_STATES: &[&str] = &["enabled", "disabled", "enabledForReportingButNotEnforced"];

fn ca_schema_error(detail: &str) -> Resp {
    graph_error(
        400,
        "BadRequest",
        &format!(
            "1007: Incoming ConditionalAccessPolicy object is null or does not match the schema of ConditionalAccessPolicy type. {detail}"
        ),
    )
}

/// The size limit of a Conditional Access policy: the whole policy object in
/// the directory may not exceed 10 KB, all conditions and the name together
/// (reported by Microsoft support; Graph answers 400). The fake measures the
/// policy's compact JSON without `@odata` annotations against 10,240 bytes.
pub(crate) const CA_POLICY_MAX_BYTES: usize = 10 * 1024;

/// Graph's 400 for a policy that would exceed the size limit, if it would.
fn ca_too_large(p: &Map<String, Value>) -> Option<Resp> {
    let mut p = p.clone();
    p.retain(|k, _| !k.starts_with("@odata."));
    let size = serde_json::to_string(&p)
        .map(|t| t.len())
        .unwrap_or(usize::MAX);
    (size > CA_POLICY_MAX_BYTES).then(|| {
        graph_error(
            400,
            "BadRequest",
            &format!(
                "The policy exceeds the maximum allowed size: {size} bytes, the limit is {CA_POLICY_MAX_BYTES}. Use groups instead of listing individual users."
            ),
        )
    })
}

fn ca_not_found(id: &str) -> Resp {
    graph_error(
        404,
        "ResourceNotFound",
        &format!("Could not find a conditional access policy with id '{id}'."),
    )
}

fn list_policies(st: &mut State) -> Resp {
    if let Some(r) = reads::require(st, reads::POLICY_READ) {
        return r;
    }
    Resp::json(
        200,
        json!({
            "@odata.context": format!("{META}#identity/conditionalAccess/policies"),
            "value": st.ca_policies,
        }),
    )
}

fn create_policy(st: &mut State, req: &Req) -> Resp {
    let body = match object_body(req) {
        Ok(b) => b,
        Err(e) => return e,
    };
    if !body.get("displayName").is_some_and(Value::is_string) {
        return ca_schema_error("displayName is required.");
    }
    match body.get("state").and_then(Value::as_str) {
        Some(s) if CA_STATES.contains(&s) => {}
        _ => {
            return ca_schema_error(
                "state must be enabled, disabled or enabledForReportingButNotEnforced.",
            );
        }
    }
    if !body.get("conditions").is_some_and(Value::is_object) {
        return ca_schema_error("conditions is required.");
    }
    let mut p = body.clone();
    p.retain(|k, _| !k.starts_with("@odata."));
    p.insert("id".into(), json!(uuid::Uuid::new_v4().to_string()));
    p.insert("createdDateTime".into(), json!(now_rfc3339()));
    p.insert("modifiedDateTime".into(), Value::Null);
    p.entry("grantControls").or_insert(Value::Null);
    p.entry("sessionControls").or_insert(Value::Null);
    if let Some(r) = ca_too_large(&p) {
        st.ca_oversized += 1;
        return r;
    }
    st.ca_policies.push(Value::Object(p.clone()));
    p.insert(
        "@odata.context".into(),
        json!(format!(
            "{META}#identity/conditionalAccess/policies/$entity"
        )),
    );
    Resp::json(201, Value::Object(p))
}

fn policy_pos(st: &State, id: &str) -> Option<usize> {
    st.ca_policies
        .iter()
        .position(|p| p.get("id").and_then(Value::as_str) == Some(id))
}

fn get_policy(st: &mut State, id: &str) -> Resp {
    let Some(pos) = policy_pos(st, id) else {
        return ca_not_found(id);
    };
    let mut p = st.ca_policies[pos].clone();
    if let Some(o) = p.as_object_mut() {
        o.insert(
            "@odata.context".into(),
            json!(format!(
                "{META}#identity/conditionalAccess/policies/$entity"
            )),
        );
    }
    Resp::json(200, p)
}

fn patch_policy(st: &mut State, req: &Req, id: &str) -> Resp {
    let body = match object_body(req) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let Some(pos) = policy_pos(st, id) else {
        return ca_not_found(id);
    };
    if let Some(s) = body.get("state")
        && !s.as_str().is_some_and(|s| CA_STATES.contains(&s))
    {
        return ca_schema_error(
            "state must be enabled, disabled or enabledForReportingButNotEnforced.",
        );
    }
    if body.get("conditions").is_some_and(|c| !c.is_object()) {
        return ca_schema_error("conditions must be an object.");
    }
    let mut patch = body.clone();
    patch.retain(|k, _| {
        !k.starts_with("@odata.")
            && !matches!(k.as_str(), "id" | "createdDateTime" | "modifiedDateTime")
    });
    // All or nothing: a patch that would make the policy too large changes nothing.
    let mut merged = st.ca_policies[pos].as_object().cloned().unwrap_or_default();
    merge_patch(&mut merged, &patch);
    if let Some(r) = ca_too_large(&merged) {
        st.ca_oversized += 1;
        return r;
    }
    if let Some(target) = st.ca_policies[pos].as_object_mut() {
        merge_patch(target, &patch);
        target.insert("modifiedDateTime".into(), json!(now_rfc3339()));
    }
    Resp::empty(204)
}

fn delete_policy(st: &mut State, id: &str) -> Resp {
    let Some(pos) = policy_pos(st, id) else {
        return ca_not_found(id);
    };
    st.ca_policies.remove(pos);
    Resp::empty(204)
}

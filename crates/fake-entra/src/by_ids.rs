//! `POST /directoryObjects/getByIds`: the directory objects of up to 1,000 ids
//! in one request, as Graph v1.0 answers it. `types` narrows the object types
//! (all of them without it); an id that matches nothing, or an object of a type
//! not asked for, is simply left out of `value`; more than 1,000 ids is a 400.
//! Each object carries its `@odata.type`; `$select` applies to every type
//! (users without it get Graph's default subset, which has no `accountEnabled`).
//! Runs under the state lock and never awaits.

use crate::graph::{
    GROUP_PROPS, USER_DEFAULT, USER_PROPS, context_for, group_default, group_json, member_select,
    object_body, project,
};
use crate::reads;
use crate::state::State;
use crate::util::{Req, Resp, graph_error};
use serde_json::{Map, Value, json};
use std::collections::HashSet;

/// Graph's limit of ids in one request.
pub(crate) const MAX_IDS: usize = 1000;

/// The permissions Graph documents for getByIds (application): nothing narrower.
const DIRECTORY_READ: &[&str] = &["Directory.Read.All", "Directory.ReadWrite.All"];

/// The object types `types` may name (case-insensitive). The fake keeps users,
/// groups and service principals; the other types are accepted and match nothing.
const TYPES: &[&str] = &[
    "user",
    "group",
    "servicePrincipal",
    "application",
    "device",
    "orgContact",
    "directoryRole",
    "directoryRoleTemplate",
    "administrativeUnit",
    "contract",
];

/// Service principal properties the fake models.
const SP_PROPS: &[&str] = &["id", "displayName"];

fn bad(msg: &str) -> Resp {
    graph_error(400, "Request_BadRequest", msg)
}

/// A string collection of the body, or Graph's 400 naming the parameter.
fn strings(body: &Map<String, Value>, name: &str) -> Result<Option<Vec<String>>, Resp> {
    let Some(v) = body.get(name).filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let invalid = || {
        bad(&format!(
            "Invalid value specified for property '{name}': a collection of strings is expected."
        ))
    };
    let items = v.as_array().ok_or_else(invalid)?;
    items
        .iter()
        .map(|x| x.as_str().map(str::to_string).ok_or_else(invalid))
        .collect::<Result<Vec<String>, Resp>>()
        .map(Some)
}

/// The canonical names of the types asked for (every type without `types`).
fn wanted_types(body: &Map<String, Value>) -> Result<Vec<&'static str>, Resp> {
    let Some(asked) = strings(body, "types")? else {
        return Ok(TYPES.to_vec());
    };
    asked
        .iter()
        .map(|t| {
            TYPES
                .iter()
                .find(|k| k.eq_ignore_ascii_case(t.trim()))
                .copied()
                .ok_or_else(|| bad(&format!("Invalid value '{t}' in 'types'.")))
        })
        .collect()
}

/// The object with id `id` if it exists and is of one of `types`.
fn object_of(
    st: &State,
    id: &str,
    types: &[&str],
    select: &Option<Vec<&'static str>>,
) -> Option<Map<String, Value>> {
    let wants = |t: &str| types.contains(&t);
    let pick = |known: &[&str], default: Vec<&'static str>| -> Vec<&str> {
        match select {
            Some(s) => s.iter().copied().filter(|p| known.contains(p)).collect(),
            None => default,
        }
    };
    let user = st.users.get(id).or_else(|| {
        st.users
            .values()
            .find(|e| e.user.id.eq_ignore_ascii_case(id))
    });
    if let Some(e) = user {
        if !wants("user") {
            return None;
        }
        let props = pick(USER_PROPS, USER_DEFAULT.to_vec());
        let mut o = reads::user_object(e, &props, st.started);
        o.insert("@odata.type".into(), json!("#microsoft.graph.user"));
        return Some(o);
    }
    if let Some(g) = st.groups.get(id) {
        if !wants("group") {
            return None;
        }
        let rule = st.group_rules.get(id).map(String::as_str);
        let props = pick(GROUP_PROPS, group_default());
        let mut o = project(&group_json(g, rule), &props);
        o.insert("@odata.type".into(), json!("#microsoft.graph.group"));
        return Some(o);
    }
    let name = st.service_principals.get(id)?;
    if !wants("servicePrincipal") {
        return None;
    }
    let full: Map<String, Value> = [
        ("id".to_string(), json!(id)),
        ("displayName".to_string(), json!(name)),
    ]
    .into_iter()
    .collect();
    let mut o = project(&full, &pick(SP_PROPS, SP_PROPS.to_vec()));
    o.insert(
        "@odata.type".into(),
        json!("#microsoft.graph.servicePrincipal"),
    );
    Some(o)
}

/// `POST /directoryObjects/getByIds`.
pub(crate) fn get_by_ids(st: &mut State, req: &Req) -> Resp {
    let select = match member_select(req) {
        Ok(s) => s,
        Err(e) => return e,
    };
    if let Some(r) = reads::require(st, DIRECTORY_READ) {
        return r;
    }
    let body = match object_body(req) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let ids = match strings(body, "ids") {
        Ok(Some(ids)) => ids,
        Ok(None) => return bad("The 'ids' parameter is required."),
        Err(e) => return e,
    };
    if ids.len() > MAX_IDS {
        return bad(&format!(
            "Too many ids: {} were given, at most {MAX_IDS} are allowed.",
            ids.len()
        ));
    }
    let types = match wanted_types(body) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let mut seen = HashSet::new();
    let value: Vec<Value> = ids
        .iter()
        .filter(|id| seen.insert(id.to_ascii_lowercase()))
        .filter_map(|id| object_of(st, id, &types, &select))
        .map(Value::Object)
        .collect();
    Resp::json(
        200,
        json!({
            "@odata.context": context_for("directoryObjects", &select, ""),
            "value": value,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_matched_case_insensitively_and_unknown_ones_refused() {
        let body = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert_eq!(
            wanted_types(&body(json!({"types": ["User", "GROUP"]}))).ok(),
            Some(vec!["user", "group"])
        );
        assert_eq!(wanted_types(&body(json!({}))).ok(), Some(TYPES.to_vec()));
        let refused = wanted_types(&body(json!({"types": ["people"]})));
        assert_eq!(refused.err().map(|r| r.status), Some(400));
        let refused = wanted_types(&body(json!({"types": "user"})));
        assert_eq!(refused.err().map(|r| r.status), Some(400));
    }
}

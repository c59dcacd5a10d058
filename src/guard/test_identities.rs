//! Builders of scan identities for the guardrail tests (here and in each
//! action's module under `actions`).

use serde_json::{Value, json};

use super::Refusal;
use crate::scan::{GLOBAL_ADMIN_TEMPLATE, Identity, Scan};

pub(crate) fn guid(n: u32) -> String {
    format!("00000000-0000-0000-0000-{n:012x}")
}

/// An enabled member; `extra` overrides its fields.
pub(crate) fn identity(n: u32, upn: &str, extra: Value) -> Identity {
    serde_json::from_value(identity_json(n, upn, extra)).unwrap()
}

pub(crate) fn identity_json(n: u32, upn: &str, extra: Value) -> Value {
    let mut v = json!({
        "id": guid(n), "user_principal_name": upn, "display_name": upn,
        "user_type": "Member", "account_enabled": true, "last_sign_in": null,
        "roles": [], "groups": []
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

pub(crate) fn role(assignment: &str, template: &str, kind: &str) -> Value {
    json!({
        "assignment_id": assignment, "role_definition_id": template,
        "role_name": "Global Administrator", "directory_scope_id": "/",
        "assignment_type": kind
    })
}

pub(crate) fn ga(n: u32, upn: &str) -> Identity {
    serde_json::from_value(ga_json(n, upn)).unwrap()
}

pub(crate) fn ga_json(n: u32, upn: &str) -> Value {
    identity_json(
        n,
        upn,
        json!({ "roles": [role(&format!("ga-{n}"), GLOBAL_ADMIN_TEMPLATE, "active")] }),
    )
}

pub(crate) fn group(n: u32, name: &str, dynamic: bool, synced: bool) -> Value {
    json!({ "id": guid(n), "display_name": name, "dynamic": dynamic, "on_premises_synced": synced })
}

pub(crate) fn refusal(r: Result<(), Refusal>) -> (&'static str, String) {
    let e = r.unwrap_err();
    (e.guard, e.reason)
}

pub(crate) fn scan_of(identities: Vec<Value>) -> Scan {
    serde_json::from_value(json!({
        "schema_version": 1, "tenant_id": guid(999), "tenant_name": "T",
        "scanned_at": "2026-11-20T00:00:00Z", "identities": identities, "findings": []
    }))
    .unwrap()
}

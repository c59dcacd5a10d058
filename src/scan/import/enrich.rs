//! Enrichment of an import: identities the file does not describe fully take
//! what the tenant says about them (the built-in scan's identities, read
//! through Graph). The file's own values always win; what neither says stays
//! absent.

use std::collections::HashMap;

use crate::scan::{Identity, LastSignIn, Scan};

/// Fills the gaps of the identities `ids` of `scan` from `tenant` (a scan of
/// the same tenant); returns how many identities were found there.
pub fn enrich(scan: &mut Scan, tenant: &Scan, ids: &[String]) -> usize {
    let known: HashMap<String, &Identity> = tenant
        .identities
        .iter()
        .map(|i| (i.id.0.to_ascii_lowercase(), i))
        .collect();
    let wanted: std::collections::HashSet<String> =
        ids.iter().map(|i| i.to_ascii_lowercase()).collect();
    let mut found = 0;
    for ident in &mut scan.identities {
        let key = ident.id.0.to_ascii_lowercase();
        if !wanted.contains(&key) {
            continue;
        }
        if let Some(from) = known.get(&key) {
            fill(ident, from);
            found += 1;
        }
    }
    found
}

/// What `from` knows and `to` does not.
fn fill(to: &mut Identity, from: &Identity) {
    if to.user_principal_name.is_none() {
        to.user_principal_name = from.user_principal_name.clone();
    }
    if to.display_name.is_empty() {
        to.display_name = from.display_name.clone();
    }
    if to.user_type.is_none() {
        to.user_type = from.user_type;
    }
    if to.account_enabled.is_none() {
        to.account_enabled = from.account_enabled;
    }
    if to.last_sign_in == LastSignIn::Unknown {
        to.last_sign_in = from.last_sign_in;
    }
    if to.mfa_registered.is_none() {
        to.mfa_registered = from.mfa_registered;
    }
    if to.risk_score.is_none() {
        to.risk_score = from.risk_score;
    }
    for r in &from.roles {
        if !to.roles.iter().any(|x| x.assignment_id == r.assignment_id) {
            to.roles.push(r.clone());
        }
    }
    for g in &from.groups {
        if !to.groups.iter().any(|x| x.id == g.id) {
            to.groups.push(g.clone());
        }
    }
    if to.attributes.is_none() {
        to.attributes = from.attributes.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(identities: &str) -> Scan {
        Scan::from_slice(
            format!(
                r#"{{"schema_version":1,"tenant_id":"11111111-2222-3333-4444-555555555555","tenant_name":"t","scanned_at":"2026-11-20T00:00:00Z","identities":[{identities}],"findings":[]}}"#
            )
            .as_bytes(),
            "x",
        )
        .unwrap()
    }

    const A: &str = "00000000-0000-0000-0000-00000000000a";
    const B: &str = "00000000-0000-0000-0000-00000000000b";

    #[test]
    fn gaps_are_filled_and_the_file_wins() {
        let mut imported = scan(&format!(
            r#"{{"id":"{A}","display_name":"Alice (file)","roles":[],"groups":[]}},
               {{"id":"{B}","display_name":"Bob","account_enabled":false,"roles":[],"groups":[]}}"#
        ));
        let tenant = scan(&format!(
            r#"{{"id":"{}","user_principal_name":"a@t.com","display_name":"Alice","user_type":"Member","account_enabled":true,"last_sign_in":null,"mfa_registered":false,
                 "roles":[{{"assignment_id":"x","role_definition_id":"62e90394-69f5-4237-9190-012177145e10","role_name":"Global Administrator","directory_scope_id":"/","assignment_type":"active"}}],"groups":[]}},
               {{"id":"{B}","user_principal_name":"b@t.com","display_name":"Bob","user_type":"Guest","account_enabled":true,"roles":[],"groups":[]}}"#,
            A.to_uppercase()
        ));
        let n = enrich(&mut imported, &tenant, &[A.to_string(), B.to_string()]);
        assert_eq!(n, 2);
        let a = &imported.identities[0];
        assert_eq!(a.user_principal_name.as_deref(), Some("a@t.com"));
        assert_eq!(a.display_name, "Alice (file)");
        assert_eq!(a.last_sign_in, LastSignIn::Never);
        assert_eq!(a.roles.len(), 1);
        let b = &imported.identities[1];
        // The file said disabled: the file wins; what the tenant does not know stays unknown.
        assert_eq!(b.account_enabled, Some(false));
        assert_eq!(b.last_sign_in, LastSignIn::Unknown);
        assert_eq!(b.user_type, Some(crate::scan::UserType::Guest));
    }
}

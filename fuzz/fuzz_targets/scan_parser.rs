//! Bytes -> `Scan::from_slice`: never panics, and whatever it accepts keeps the
//! loader's promises (unique identity and finding ids, no dangling references,
//! GUID-shaped ids, risk scores within 0..=100).
#![no_main]

use std::collections::HashSet;

use entra_remediator::scan::{self, Scan};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = scan::digest(data);
    match Scan::from_slice(data, "fuzz.json") {
        Ok(s) => check(&s),
        Err(e) => {
            // Errors must render (they are printed and recorded in history).
            let msg = e.to_string();
            assert!(
                msg.starts_with("fuzz.json"),
                "error does not name the source: {msg}"
            );
        }
    }
});

fn check(s: &Scan) {
    assert_eq!(s.schema_version, 1);
    assert!(entra_remediator::text::is_guid(&s.tenant_id.0));
    assert!(!s.tenant_name.is_empty());
    let mut ids = HashSet::new();
    for ident in &s.identities {
        assert!(entra_remediator::text::is_guid(&ident.id.0));
        assert!(
            ids.insert(ident.id.0.to_ascii_lowercase()),
            "duplicate identity {} accepted",
            ident.id
        );
        assert!(ident.user_principal_name.as_ref().is_none_or(|u| !u.is_empty()));
        assert!(ident.risk_score.is_none_or(|r| r <= 100));
        if let Some(raw) = &ident.attributes {
            assert!(raw.get().trim_start().starts_with('{'));
        }
        for r in &ident.roles {
            assert!(entra_remediator::text::is_guid(&r.role_definition_id.0));
            assert!(!r.assignment_id.is_empty());
        }
        for g in &ident.groups {
            assert!(entra_remediator::text::is_guid(&g.id.0));
        }
        let _ = (ident.is_guest(), ident.is_global_admin());
    }
    let mut fids = HashSet::new();
    for f in &s.findings {
        assert!(
            fids.insert(f.id.as_str()),
            "duplicate finding {:?} accepted",
            f.id
        );
        for a in &f.affected_identities {
            assert!(
                ids.contains(&a.0.to_ascii_lowercase()),
                "dangling reference {a} accepted"
            );
        }
    }
    // What the loader accepted must serialize (plans and history print it).
    let _ = serde_json::to_vec(s).expect("an accepted scan must serialize");
}

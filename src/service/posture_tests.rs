//! Unit tests of the console's read models: ranking, look-up, search, sort, paging.

use serde_json::{Value, json};

use super::*;
use crate::scan::{LoadedScan, Scan};
use crate::service::scan_view::ScanView;

const GA: &str = "62e90394-69f5-4237-9190-012177145e10";

fn guid(n: u32) -> String {
    format!("00000000-0000-0000-0000-{n:012x}")
}

fn person(n: u32, upn: &str, risk: Option<u8>) -> Value {
    let mut v = json!({
        "id": guid(n), "user_principal_name": upn, "display_name": format!("Person {n:02}"),
        "user_type": "Member", "account_enabled": true, "mfa_registered": true,
        "roles": [], "groups": []
    });
    if let Some(r) = risk {
        v["risk_score"] = json!(r);
    }
    v
}

fn role(kind: &str) -> Value {
    json!({"assignment_id": format!("a-{kind}"), "role_definition_id": GA,
           "role_name": "Global Administrator", "directory_scope_id": "/", "assignment_type": kind})
}

fn finding(id: &str, severity: &str, affected: &[u32]) -> Value {
    json!({"id": id, "title": format!("Finding {id}"), "severity": severity, "category": "test",
           "recommendation": "fix it", "affected_identities": affected.iter().map(|n| guid(*n)).collect::<Vec<_>>()})
}

/// Nine people whose order exercises every step of the ranking, and 26
/// fillers (`filler-00` ..) without a risk score; `ER-ALL` (info) affects all.
fn view() -> ScanView {
    let mut ids = vec![
        person(1, "p1@x.test", Some(80)),
        person(2, "p2@x.test", Some(50)),
        person(3, "p3@x.test", Some(50)),
        person(4, "p4@x.test", Some(30)),
        person(5, "p5@x.test", Some(30)),
        person(6, "p6@x.test", Some(10)),
        person(7, "p7@x.test", Some(10)),
        person(8, "b@x.test", None),
        person(9, "A@x.test", None),
    ];
    ids[1]["roles"] = json!([role("active")]);
    ids[2]["roles"] = json!([role("eligible")]);
    ids[5]["mfa_registered"] = json!(false);
    ids[5]["last_sign_in"] = json!(null);
    ids[6]["last_sign_in"] = json!("2026-01-01T00:00:00Z");
    for n in 0..26u32 {
        let mut f = person(100 + n, &format!("filler-{n:02}@x.test"), None);
        f["display_name"] = json!(format!("Filler {n:02}"));
        f["last_sign_in"] = json!(format!("2026-02-{:02}T00:00:00Z", n + 1));
        ids.push(f);
    }
    let all: Vec<u32> = (1..=9).chain(100..126).collect();
    let findings = vec![
        finding("ER-CRIT", "critical", &[3]),
        finding("ER-HIGH", "high", &[4]),
        finding("ER-MED", "medium", &[5, 5]),
        finding("ER-ALL", "info", &all),
    ];
    let doc = json!({"schema_version": 1, "tenant_id": "11111111-2222-3333-4444-555555555555",
        "tenant_name": "T", "scanned_at": "2026-11-20T00:00:00Z", "identities": ids, "findings": findings});
    let bytes = serde_json::to_vec(&doc).unwrap();
    let scan = Scan::from_slice(&bytes, "t.json").unwrap();
    ScanView::new(
        "t",
        LoadedScan {
            scan,
            source_name: "t.json".into(),
            sha256: "abc".into(),
            refused: Vec::new(),
        },
    )
}

fn upns(rows: &[IdentityRow]) -> Vec<String> {
    rows.iter()
        .map(|r| r.upn.clone().unwrap_or_default())
        .collect()
}

fn page(v: &ScanView, q: AffectedQuery) -> FindingPage {
    finding_page(v, "ER-ALL", &q).unwrap()
}

#[test]
fn ranking_is_risk_then_privileged_roles_then_weighted_findings_then_no_mfa_then_upn() {
    let v = view();
    let first: Vec<&str> = v.ranked[..11]
        .iter()
        .map(|&i| v.identity(i).unwrap().label())
        .collect();
    assert_eq!(
        first,
        [
            "p1@x.test", // risk 80
            "p2@x.test", // risk 50, an active GA (p3's is only eligible)
            "p3@x.test", // risk 50, a critical finding
            "p4@x.test", // risk 30, high (4) beats medium (2)
            "p5@x.test",
            "p6@x.test", // risk 10, enabled without MFA
            "p7@x.test",
            "A@x.test", // no risk score: by UPN, any case
            "b@x.test",
            "filler-00@x.test",
            "filler-01@x.test",
        ]
    );
    for (pos, &i) in v.ranked.iter().enumerate() {
        assert_eq!(v.rank_of[i as usize] as usize, pos);
    }
    assert!(
        RANKING_MENTIONS
            .iter()
            .all(|w| crate::service::scan_view::RANKING.contains(w))
    );
}

const RANKING_MENTIONS: [&str; 4] = ["risk score", "privileged", "severity", "MFA"];

#[test]
fn identities_are_found_by_object_id_or_upn_in_any_case_and_duplicates_count_once() {
    let v = view();
    assert_eq!(v.find(&guid(2).to_uppercase()), Some(1));
    assert_eq!(v.find("A@X.TEST"), Some(8));
    assert_eq!(v.find("nobody@x.test"), None);
    assert_eq!(v.by_finding["ER-MED"], vec![4]);
    assert_eq!(v.findings_of[4], vec![2, 3]);
}

#[test]
fn search_matches_upn_or_name_ignoring_case_and_nothing_gives_an_empty_first_page() {
    let v = view();
    let q = |s: &str| AffectedQuery {
        q: Some(s.into()),
        sort: SortKey::Upn,
        desc: false,
        ..AffectedQuery::default()
    };
    let p = page(&v, q("FILLER-0"));
    assert_eq!(p.matched, 10);
    assert_eq!(p.rows.len(), 10);
    assert_eq!(p.rows[0].upn.as_deref(), Some("filler-00@x.test"));
    // The display name, not only the UPN.
    assert_eq!(page(&v, q("person 0")).matched, 9);
    let none = page(&v, q("zzz"));
    assert_eq!((none.matched, none.page, none.pages), (0, 1, 1));
    assert!(none.rows.is_empty());
    assert!(finding_page(&v, "ER-NOPE", &AffectedQuery::default()).is_none());
}

#[test]
fn sorting_by_each_key_in_both_directions() {
    let v = view();
    let q = |sort, desc| AffectedQuery {
        sort,
        desc,
        per_page: 200,
        ..AffectedQuery::default()
    };
    let risk = page(&v, q(SortKey::Risk, true));
    let ranked: Vec<u32> = risk.rows.iter().map(|r| r.index).collect();
    assert_eq!(ranked, v.ranked);
    let up = page(&v, q(SortKey::Risk, false));
    assert_eq!(up.rows[0].upn.as_deref(), Some("filler-25@x.test"));
    let by_upn = upns(&page(&v, q(SortKey::Upn, false)).rows);
    assert_eq!(&by_upn[..3], ["A@x.test", "b@x.test", "filler-00@x.test"]);
    assert_eq!(by_upn.last().map(String::as_str), Some("p7@x.test"));
    let by_name = page(&v, q(SortKey::Name, true));
    assert_eq!(by_name.rows[0].display_name, "Person 09");
    let findings = upns(&page(&v, q(SortKey::Findings, true)).rows);
    // Two findings each, ties in ranking order.
    assert_eq!(&findings[..3], ["p3@x.test", "p4@x.test", "p5@x.test"]);
    // Ascending sign-in: unknown, then never, then oldest time first.
    let seen = page(&v, q(SortKey::LastSignIn, false)).rows;
    assert_eq!(seen[0].last_sign_in, "unknown");
    assert_eq!(seen[7].last_sign_in, "never");
    assert_eq!(seen[7].upn.as_deref(), Some("p6@x.test"));
    assert_eq!(seen[8].last_sign_in, "2026-01-01T00:00:00Z");
    assert_eq!(seen[34].upn.as_deref(), Some("filler-25@x.test"));
}

#[test]
fn pages_cover_every_match_once_and_past_the_end_shows_the_last_page() {
    let v = view();
    let q = |page, per_page| AffectedQuery {
        sort: SortKey::Upn,
        desc: true,
        page,
        per_page,
        ..AffectedQuery::default()
    };
    let whole = upns(&page(&v, q(1, 200)).rows);
    assert_eq!(whole.len(), 35);
    let mut joined = Vec::new();
    for n in 1..=4 {
        let p = page(&v, q(n, 10));
        assert_eq!((p.page, p.pages, p.matched), (n, 4, 35));
        joined.extend(upns(&p.rows));
    }
    assert_eq!(joined, whole);
    let past = page(&v, q(99, 10));
    assert_eq!((past.page, past.rows.len()), (4, 5));
    assert_eq!(upns(&past.rows), whole[30..]);
    // Page 0 is the first; per_page is clamped to 10..=200.
    let first = page(&v, q(0, 3));
    assert_eq!((first.page, first.rows.len(), first.pages), (1, 10, 4));
}

#[test]
fn rows_say_what_the_pages_show() {
    let v = view();
    let row = identity_row(&v, 1).unwrap();
    assert!(row.privileged);
    assert_eq!(row.risk_score, Some(50));
    assert_eq!(row.last_sign_in, "unknown");
    assert!(!identity_row(&v, 2).unwrap().privileged, "eligible only");
    assert_eq!(identity_row(&v, 5).unwrap().last_sign_in, "never");
    assert_eq!(identity_row(&v, 2).unwrap().findings, 2);
    assert!(identity_row(&v, 999).is_none());
}

#[test]
fn action_counts_group_the_states() {
    let c = ActionCounts::from_states(&[
        (ActionState::Planned, 3),
        (ActionState::Done, 2),
        (ActionState::AlreadyDone, 1),
        (ActionState::Ready, 1),
        (ActionState::Executing, 1),
        (ActionState::Expired, 4),
        (ActionState::Rejected, 1),
        (ActionState::Pending, 5),
    ]);
    assert_eq!(
        (c.planned, c.done, c.ready, c.other, c.pending),
        (3, 3, 2, 5, 5)
    );
    assert_eq!(c.total(), 18);
}

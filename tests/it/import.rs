//! Importers (Maester, ScubaGear, Zero Trust Assessment): real-shaped files in
//! `tests/fixtures/import/` become scan v1 with the exact findings, affected
//! identities, severities and not-evaluated checks; foreign tenants and
//! malformed files are refused with the file and the place named.

use std::path::{Path, PathBuf};

use entra_remediator::scan::import::{Format, ImportError, Imported, import};
use entra_remediator::scan::{LastSignIn, Scan, Severity};

const TENANT: &str = "7f3c9a52-1d4e-4b8a-9c61-2e5f8d0b3a47";
const OTHER_TENANT: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

const ANN: &str = "3b8e2f10-6c4d-4e7a-9b21-5d0f7a8c9e14";
const BOB: &str = "a4c71e92-0b3f-4d58-8e6a-1f2b3c4d5e6f";
const CAT: &str = "c9d0e1f2-3a4b-4c5d-8e6f-7a8b9c0d1e2f";
const DAN: &str = "e5f6a7b8-9c0d-4e1f-a2b3-c4d5e6f7a8b9";

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/import")
        .join(rel)
}

const MAESTER: &str = "TestResults-2026-11-19-082907.json";

/// The scan round-trips through the strict loader (ids unique, references resolve).
fn reloads(imported: &Imported) -> Scan {
    let bytes = serde_json::to_vec(&imported.scan).unwrap();
    Scan::from_slice(&bytes, "imported").unwrap()
}

fn finding<'a>(scan: &'a Scan, id: &str) -> &'a entra_remediator::scan::Finding {
    scan.findings
        .iter()
        .find(|f| f.id == id)
        .unwrap_or_else(|| panic!("no finding {id}"))
}

fn affected(scan: &Scan, id: &str) -> Vec<String> {
    finding(scan, id)
        .affected_identities
        .iter()
        .map(|g| g.0.to_string())
        .collect()
}

fn ids(scan: &Scan) -> Vec<&str> {
    scan.findings.iter().map(|f| f.id.as_str()).collect()
}

/// Writes `text` as a file named `name` in a fresh directory and imports it.
fn import_text(format: Format, name: &str, text: &[u8]) -> Result<Imported, ImportError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    import(format, &path, TENANT, "contoso")
}

fn refused(format: Format, name: &str, text: &[u8]) -> String {
    match import_text(format, name, text) {
        Ok(_) => panic!("{name} was accepted"),
        Err(e) => e.to_string(),
    }
}

fn maester_text() -> String {
    std::fs::read_to_string(fixture(MAESTER)).unwrap()
}

#[test]
fn maester_failed_and_investigate_tests_become_findings() {
    let got = import(Format::Maester, &fixture(MAESTER), TENANT, "contoso").unwrap();
    let scan = reloads(&got);
    assert_eq!(scan.tenant_id.as_str(), TENANT);
    assert_eq!(scan.tenant_name, "Contoso");
    assert_eq!(
        scan.scanned_at.to_rfc3339(),
        "2026-11-18T22:29:07.071475+00:00"
    );
    assert_eq!(
        scan.scanner.as_deref(),
        Some("maester 1.3.0 import (TestResults-2026-11-19-082907.json)")
    );
    // Order of the file; the repeated data-driven MT.1005 gets a suffix.
    assert_eq!(ids(&scan), ["MT.1005", "MT.1020", "MT.1061", "MT.1005#2"]);

    let f = finding(&scan, "MT.1005");
    assert_eq!(f.severity, Severity::High);
    assert_eq!(f.category, "EntraID");
    assert_eq!(
        f.documentation.as_deref(),
        Some("https://maester.dev/docs/tests/MT.1005")
    );
    assert_eq!(
        f.recommendation,
        "1. Create an emergency access account.\n2. Exclude it from every policy."
    );
    // The policy link is not a user link; the two user links are.
    assert_eq!(affected(&scan, "MT.1005"), [ANN, BOB]);
    // Investigate: one step below the test's Critical.
    assert_eq!(finding(&scan, "MT.1020").severity, Severity::High);
    assert_eq!(affected(&scan, "MT.1020"), [ANN, CAT]);
    // No Id/Title keys: split from Name; empty Severity reads as medium; no HelpUrl.
    let f = finding(&scan, "MT.1061");
    assert_eq!(f.title, "App registration owners have MFA registered");
    assert_eq!(f.severity, Severity::Medium);
    assert_eq!(f.category, "Maester/Entra");
    assert_eq!(f.documentation, None);
    assert_eq!(affected(&scan, "MT.1061"), [DAN]);
    assert_eq!(affected(&scan, "MT.1005#2"), [BOB]);
}

#[test]
fn maester_skipped_error_and_not_run_are_not_evaluated() {
    let got = import(Format::Maester, &fixture(MAESTER), TENANT, "contoso").unwrap();
    let scan = reloads(&got);
    let ne: Vec<(&str, &str)> = scan
        .not_evaluated
        .iter()
        .map(|n| (n.check.as_str(), n.reason.as_str()))
        .collect();
    assert_eq!(ne.len(), 3, "{ne:?}");
    assert_eq!(ne[0].0, "MT.1033");
    assert!(
        ne[0]
            .1
            .starts_with("This test is for tenants that are licensed for Entra ID P2.")
    );
    assert_eq!(ne[1].0, "EIDSCA.AF01");
    assert!(ne[1].1.contains("Forbidden"), "{}", ne[1].1);
    assert_eq!(ne[2].0, "MT.1050");
    assert!(ne[2].1.contains("not run"), "{}", ne[2].1);
    assert!(
        !ids(&scan).contains(&"CIS.M365.1.1.1"),
        "passed tests are not findings"
    );
}

#[test]
fn maester_identities_say_only_what_the_markdown_says() {
    let got = import(Format::Maester, &fixture(MAESTER), TENANT, "contoso").unwrap();
    let scan = reloads(&got);
    let people: Vec<(&str, &str, Option<&str>)> = scan
        .identities
        .iter()
        .map(|i| {
            (
                i.id.as_str(),
                i.display_name.as_str(),
                i.user_principal_name.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        people,
        [
            // The UPN comes from MT.1020's table, where Ann's row has one.
            (ANN, "Ann Quinn", Some("ann.quinn@contoso.com")),
            // Bob is only in list items: no UPN.
            (BOB, "Bob Leaf", None),
            (CAT, "Cat Ng", Some("cat.ng@contoso.com")),
            // The link text is the UPN; the name comes from the Owner column.
            (DAN, "Dan Ortiz", Some("dan.ortiz@contoso.com")),
        ]
    );
    for i in &scan.identities {
        assert_eq!(i.user_type, None);
        assert_eq!(i.account_enabled, None);
        assert_eq!(i.last_sign_in, LastSignIn::Unknown);
        assert!(i.roles.is_empty());
    }
    assert_eq!(got.incomplete, [ANN, BOB, CAT, DAN]);
    let attrs: serde_json::Value =
        serde_json::from_str(scan.identities[0].attributes.as_ref().unwrap().get()).unwrap();
    assert_eq!(attrs["tests"], serde_json::json!(["MT.1005", "MT.1020"]));
}

#[test]
fn maester_file_for_another_tenant_is_refused() {
    let text = maester_text().replace(TENANT, OTHER_TENANT);
    let err = refused(Format::Maester, "other.json", text.as_bytes());
    assert!(err.contains("other.json"), "{err}");
    assert!(
        err.contains(&format!("is for tenant {OTHER_TENANT}")),
        "{err}"
    );
    assert!(err.contains(TENANT), "{err}");
    // Maester run without a Graph connection writes a placeholder id.
    let text = maester_text().replace(TENANT, "TenantId (not connected to Graph)");
    let err = refused(Format::Maester, "offline.json", text.as_bytes());
    assert!(err.contains("offline.json: at TenantId"), "{err}");
    assert!(err.contains("not a GUID"), "{err}");
}

#[test]
fn malformed_maester_files_are_refused_with_file_and_place() {
    let err = refused(Format::Maester, "m.json", b"<html>not json</html>");
    assert!(err.starts_with("m.json:1:1:"), "{err}");

    let err = refused(Format::Maester, "m.json", br#"{"TenantId": 5}"#);
    assert!(err.starts_with("m.json:1:"), "{err}");
    assert!(err.contains("at TenantId"), "{err}");

    let text = maester_text().replace("\"ExecutedAt\"", "\"ExecutedWhen\"");
    let err = refused(Format::Maester, "m.json", text.as_bytes());
    assert!(err.contains("missing field `ExecutedAt`"), "{err}");

    let text = maester_text().replace(&format!("userId/{CAT}"), "userId/not-a-guid");
    let err = refused(Format::Maester, "m.json", text.as_bytes());
    assert!(
        err.contains("m.json: at Tests[2].ResultDetail.TestResult (markdown line 7)"),
        "{err}"
    );
    assert!(err.contains("\"not-a-guid\", which is not a GUID"), "{err}");

    let text = maester_text();
    let err = refused(
        Format::Maester,
        "m.json",
        &text.as_bytes()[..text.len() / 2],
    );
    assert!(err.contains("EOF while parsing"), "{err}");
    assert!(err.starts_with("m.json:"), "{err}");

    let text = maester_text().replace("\"Result\": \"Investigate\"", "\"Result\": \"Maybe\"");
    let err = refused(Format::Maester, "m.json", text.as_bytes());
    assert!(
        err.contains("at Tests[2].Result: unknown result \"Maybe\""),
        "{err}"
    );

    let text = maester_text().replace("+10:00\"", "\"");
    let err = refused(Format::Maester, "m.json", text.as_bytes());
    assert!(err.contains("at ExecutedAt"), "{err}");
}

#[test]
fn format_names_parse() {
    assert_eq!("maester".parse::<Format>().unwrap(), Format::Maester);
    assert_eq!("ScubaGear".parse::<Format>().unwrap(), Format::ScubaGear);
    assert_eq!("zta".parse::<Format>().unwrap(), Format::Zta);
    let err = "qualys".parse::<Format>().unwrap_err();
    assert!(err.contains("maester, scubagear or zta"), "{err}");
}

const SCUBA: &str = "ScubaResults_0c4f3a2e-8d1b.json";
const GA: &str = "62e90394-69f5-4237-9190-012177145e10";

fn scuba_text() -> String {
    let bytes = std::fs::read(fixture(SCUBA)).unwrap();
    assert!(
        bytes.starts_with(b"\xEF\xBB\xBF"),
        "the fixture keeps ScubaGear's BOM"
    );
    String::from_utf8(bytes[3..].to_vec()).unwrap()
}

#[test]
fn scubagear_failing_aad_controls_become_findings() {
    let got = import(Format::ScubaGear, &fixture(SCUBA), TENANT, "contoso").unwrap();
    let scan = reloads(&got);
    assert_eq!(scan.tenant_name, "Contoso");
    assert_eq!(
        scan.scanned_at.to_rfc3339(),
        "2026-11-19T17:15:48.307+00:00"
    );
    assert_eq!(
        scan.scanner.as_deref(),
        Some("scubagear 1.8.0 import (ScubaResults_0c4f3a2e-8d1b.json)")
    );
    // AAD only (the Defender failure is not about identities); Pass is nothing.
    assert_eq!(
        ids(&scan),
        [
            "MS.AAD.3.1v1",
            "MS.AAD.7.1v1",
            "MS.AAD.7.3v1",
            "MS.AAD.7.4v1",
            "MS.AAD.7.5v1",
            "MS.AAD.7.9v1"
        ]
    );
    let f = finding(&scan, "MS.AAD.7.1v1");
    assert_eq!(f.severity, Severity::High, "Shall");
    assert_eq!(
        f.title,
        "A minimum of two users and a maximum of eight users SHALL be provisioned with the Global Administrator role."
    );
    assert_eq!(f.category, "AAD: Highly Privileged User Access");
    assert!(
        f.recommendation
            .ends_with("ScubaGear found: 1 global admin(s) found: Ann Quinn")
    );
    assert_eq!(
        f.documentation.as_deref(),
        Some(
            "https://github.com/cisagov/ScubaGear/blob/v1.8.0/PowerShell/ScubaGear/baselines/aad.md#7-highly-privileged-user-access"
        )
    );
    // Warning (a Should not met) is a finding one level lower.
    assert_eq!(finding(&scan, "MS.AAD.7.9v1").severity, Severity::Medium);
    // The service principal holding Global Administrator is not a user.
    assert_eq!(affected(&scan, "MS.AAD.7.1v1"), [ANN]);
    assert_eq!(
        affected(&scan, "MS.AAD.7.3v1"),
        [BOB],
        "OnPremisesImmutableId set"
    );
    // Permanent (EndDateTime null): Ann; the group and the service principal are not users.
    assert_eq!(affected(&scan, "MS.AAD.7.4v1"), [ANN]);
    // Outside PIM (StartDateTime null): Ann.
    assert_eq!(affected(&scan, "MS.AAD.7.5v1"), [ANN]);
    assert!(affected(&scan, "MS.AAD.3.1v1").is_empty());
    assert!(affected(&scan, "MS.AAD.7.9v1").is_empty());

    let ne: Vec<&str> = scan
        .not_evaluated
        .iter()
        .map(|n| n.check.as_str())
        .collect();
    assert_eq!(ne, ["MS.AAD.3.2v2", "MS.AAD.3.4v1", "MS.AAD.7.10v1"]);
    assert!(
        scan.not_evaluated[0]
            .reason
            .starts_with("not checked automatically")
    );
    assert!(
        scan.not_evaluated[1]
            .reason
            .starts_with("ScubaGear reported an error")
    );
    assert!(
        scan.not_evaluated[2]
            .reason
            .contains("Reviewed quarterly by the SOC")
    );
}

#[test]
fn scubagear_identities_are_the_privileged_users_with_their_assignments() {
    let got = import(Format::ScubaGear, &fixture(SCUBA), TENANT, "contoso").unwrap();
    let scan = reloads(&got);
    let people: Vec<(&str, &str)> = scan
        .identities
        .iter()
        .map(|i| (i.id.as_str(), i.display_name.as_str()))
        .collect();
    assert_eq!(people, [(ANN, "Ann Quinn"), (BOB, "Bob Leaf")]);
    let ann = &scan.identities[0];
    assert_eq!(ann.user_principal_name, None);
    assert_eq!(ann.roles.len(), 1);
    assert_eq!(ann.roles[0].assignment_id, "lAPpYvVpN0KRkAEhdxReEAnnQ1-1");
    assert_eq!(ann.roles[0].role_definition_id.as_str(), GA);
    assert_eq!(ann.roles[0].permanent, Some(true));
    assert!(ann.is_global_admin());
    // A single assignment written as an object, not an array (PowerShell's quirk).
    let bob = &scan.identities[1];
    assert_eq!(bob.roles[0].role_name, "User Administrator");
    assert_eq!(bob.roles[0].permanent, Some(false));
    let attrs: serde_json::Value =
        serde_json::from_str(bob.attributes.as_ref().unwrap().get()).unwrap();
    assert_eq!(
        attrs["on_premises_immutable_id"],
        "k2VfUJp0WkGmG0Gl2h3rxA=="
    );
    assert_eq!(attrs["roles"], serde_json::json!(["User Administrator"]));
    assert_eq!(got.incomplete, [ANN, BOB]);
}

#[test]
fn scubagear_foreign_and_malformed_files_are_refused() {
    let text = scuba_text().replace(TENANT, OTHER_TENANT);
    let err = refused(Format::ScubaGear, "s.json", text.as_bytes());
    assert!(
        err.contains(&format!("s.json: the file is for tenant {OTHER_TENANT}")),
        "{err}"
    );

    // Without the BOM it reads the same.
    assert!(import_text(Format::ScubaGear, "s.json", scuba_text().as_bytes()).is_ok());

    let err = refused(Format::ScubaGear, "s.json", b"\xEF\xBB\xBFScubaGear failed");
    assert!(err.starts_with("s.json:1:1:"), "{err}");

    let text = scuba_text().replace("\"TimestampZulu\"", "\"Timestamp\"");
    let err = refused(Format::ScubaGear, "s.json", text.as_bytes());
    assert!(
        err.contains("at MetaData: missing field `TimestampZulu`"),
        "{err}"
    );

    let text = scuba_text().replace("\"Controls\": [", "\"Controls\": {");
    let err = refused(Format::ScubaGear, "s.json", text.as_bytes());
    assert!(err.contains("at Results.AAD[0].Controls"), "{err}");

    let text = scuba_text().replace("\"AAD\": [", "\"AzureAD\": [");
    let err = refused(Format::ScubaGear, "s.json", text.as_bytes());
    assert!(
        err.contains("at Results.AAD: the file has no AAD results"),
        "{err}"
    );

    let text = scuba_text().replace(&format!("\"{BOB}\": {{"), "\"bob\": {");
    let err = refused(Format::ScubaGear, "s.json", text.as_bytes());
    assert!(
        err.contains("at Raw.privileged_users.bob: the key is not an object id"),
        "{err}"
    );

    let text = scuba_text().replace("\"Criticality\": \"Should\"", "\"Criticality\": \"Ought\"");
    let err = refused(Format::ScubaGear, "s.json", text.as_bytes());
    assert!(
        err.contains("Results.AAD[2].Controls[5].Criticality: unknown criticality \"Ought\""),
        "{err}"
    );

    let text = scuba_text();
    let err = refused(
        Format::ScubaGear,
        "s.json",
        &text.as_bytes()[..text.len() - 40],
    );
    assert!(err.contains("EOF while parsing"), "{err}");
}

const GONE: &str = "d1e2f3a4-b5c6-4d7e-8f9a-0b1c2d3e4f5a";

/// A copy of the ZTA fixture folder, for tests that spoil one file of it.
fn zta_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let from = fixture("zta/zt-export");
    for entry in walk(&from) {
        let to = dir
            .path()
            .join("zt-export")
            .join(entry.strip_prefix(&from).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &to).unwrap();
    }
    dir
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn zta_ids(scan: &Scan) -> Vec<&str> {
    ids(scan)
        .into_iter()
        .filter(|id| id.starts_with("ZTA-"))
        .collect()
}

#[test]
fn zta_tests_become_prefixed_findings_and_not_evaluated() {
    let got = import(Format::Zta, &fixture("zta"), TENANT, "contoso").unwrap();
    let scan = reloads(&got);
    assert_eq!(scan.tenant_id.as_str(), TENANT);
    assert_eq!(scan.tenant_name, "Contoso");
    assert_eq!(
        scan.scanned_at.to_rfc3339(),
        "2026-11-18T22:21:38.163451+00:00"
    );
    assert_eq!(
        scan.scanner.as_deref(),
        Some("zero trust assessment 2.1.8 import (zta)")
    );
    // Failed and Investigate, in file order; the numeric TestId 21770 reads as text.
    assert_eq!(zta_ids(&scan), ["ZTA-22128", "ZTA-21896", "ZTA-21770"]);
    let f = finding(&scan, "ZTA-22128");
    assert_eq!(f.severity, Severity::High);
    assert_eq!(f.category, "Application management");
    assert_eq!(
        f.title,
        "Guests are not assigned high privileged directory roles"
    );
    assert!(f.recommendation.contains("Review the assignments."));
    assert_eq!(f.documentation, None);
    // Investigate: one step below its Medium risk.
    assert_eq!(finding(&scan, "ZTA-21896").severity, Severity::Low);
    assert_eq!(finding(&scan, "ZTA-21770").severity, Severity::High);

    let ne: Vec<(&str, &str)> = scan
        .not_evaluated
        .iter()
        .filter(|n| n.check.starts_with("ZTA-"))
        .map(|n| (n.check.as_str(), n.reason.as_str()))
        .collect();
    assert_eq!(ne.len(), 2, "Planned and Passed are left out: {ne:?}");
    assert_eq!(ne[0].0, "ZTA-25406");
    assert!(
        ne[0].1.contains("Entra_Premium_Internet_Access"),
        "{}",
        ne[0].1
    );
    assert_eq!(ne[1], ("ZTA-24541", "Error in the Zero Trust Assessment"));
    // What the export lacks is a gap of the built-in checks, never clean.
    assert!(scan.not_evaluated.iter().all(|n| !n.reason.is_empty()));
}

/// The export's Graph pages become identities through the posture builder,
/// the same code the built-in scan uses.
#[test]
fn zta_identities_come_from_the_graph_pages() {
    let got = import(Format::Zta, &fixture("zta"), TENANT, "contoso").unwrap();
    let scan = reloads(&got);
    let mut people: Vec<&str> = scan.identities.iter().map(|i| i.id.as_str()).collect();
    people.sort();
    // Both User pages are read.
    assert_eq!(people, [ANN, BOB, CAT]);
    let cat = scan
        .identities
        .iter()
        .find(|i| i.id.as_str() == CAT)
        .unwrap();
    assert_eq!(
        cat.user_principal_name.as_deref(),
        Some("cat_fabrikam.com#EXT#@contoso.onmicrosoft.com")
    );
    assert!(cat.is_guest());
    assert!(cat.is_global_admin());
    // The linked user missing from the User pages is left out.
    assert_eq!(affected(&scan, "ZTA-22128"), [CAT]);
    assert!(!affected(&scan, "ZTA-22128").contains(&GONE.to_string()));
    assert_eq!(affected(&scan, "ZTA-21770"), [ANN, BOB]);
    // The export gives UPN, type, enabled and sign-in for everyone.
    assert!(got.incomplete.is_empty(), "{:?}", got.incomplete);
}

#[test]
fn zta_accepts_the_report_folder_the_export_folder_or_the_report_file() {
    for p in [
        fixture("zta"),
        fixture("zta/zt-export"),
        fixture("zta/zt-export/ZeroTrustAssessmentReport.json"),
    ] {
        let got = import(Format::Zta, &p, TENANT, "contoso").unwrap();
        assert_eq!(zta_ids(&got.scan).len(), 3, "{}", p.display());
    }
}

#[test]
fn zta_foreign_and_malformed_exports_are_refused() {
    let err = import(Format::Zta, &fixture("zta"), OTHER_TENANT, "fabrikam")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ZeroTrustAssessmentReport.json: the file is for tenant"),
        "{err}"
    );
    assert!(err.contains("\"fabrikam\" is configured as"), "{err}");

    let err = import(Format::Zta, &fixture("."), TENANT, "contoso")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no ZeroTrustAssessmentReport.json here"),
        "{err}"
    );

    let spoil = |rel: &str, f: &dyn Fn(String) -> String| -> String {
        let dir = zta_copy();
        let path = dir.path().join("zt-export").join(rel);
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        std::fs::write(&path, f(text)).unwrap();
        import(Format::Zta, dir.path(), TENANT, "contoso")
            .unwrap_err()
            .to_string()
    };
    let err = spoil("User/User-1.json", &|t| t.replace("\"id\"", "\"objectId\""));
    assert!(err.contains("User-1.json:"), "{err}");
    assert!(err.contains("at value[0]: missing field `id`"), "{err}");

    let err = spoil("User/User-0.json", &|t| t[..t.len() / 2].to_string());
    assert!(err.contains("User-0.json:"), "{err}");
    assert!(err.contains("EOF while parsing"), "{err}");

    let err = spoil("RoleDefinition/RoleDefinition-0.json", &|_| "[]".into());
    assert!(err.contains("RoleDefinition-0.json:1:"), "{err}");

    let err = spoil("ZeroTrustAssessmentReport.json", &|t| {
        t.replace(&format!("userId/{CAT}"), "userId/{CAT}")
    });
    assert!(
        err.contains("at Tests[0].TestResult (markdown line 10)"),
        "{err}"
    );
    assert!(err.contains("\"{CAT}\", which is not a GUID"), "{err}");

    let err = spoil("ZeroTrustAssessmentReport.json", &|t| {
        t.replace("\"TestStatus\": \"Planned\"", "\"TestStatus\": \"Later\"")
    });
    assert!(
        err.contains("at Tests[5].TestStatus: unknown status \"Later\""),
        "{err}"
    );

    let err = spoil("ZeroTrustAssessmentReport.json", &|t| {
        t.replace("\"Tests\"", "\"Checks\"")
    });
    assert!(err.contains("missing field `Tests`"), "{err}");
}

/// The Maester fixture rewritten for the workspace's tenant.
fn maester_for_workspace(ws: &crate::common::Workspace) -> PathBuf {
    let text = std::fs::read_to_string(fixture("TestResults-2026-11-19-082907.json")).unwrap();
    ws.write(
        "maester-results.json",
        &text.replace(TENANT, crate::common::TENANT),
    )
}

/// The users the Maester fixture links to.
fn maester_users() -> Vec<String> {
    let text = std::fs::read_to_string(fixture("TestResults-2026-11-19-082907.json")).unwrap();
    let mut ids: Vec<String> = text
        .split("userId/")
        .skip(1)
        .map(|rest| rest.chars().take(36).collect())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_import_writes_the_scan_enriched_from_graph_and_records_it() {
    use crate::common::*;
    let (fake, mut ws) = enforce_setup("", "").await;
    ws.set_top("mode = \"dry-run\"");
    // The fixture is from 2026-11-19.
    ws.set_tenant_extra("max_scan_age = \"100years\"");
    let users = maester_users();
    assert!(users.len() >= 2, "{users:?}");
    // Graph knows all but the last one (deleted since the Maester run).
    for (n, id) in users.iter().enumerate().take(users.len() - 1) {
        fake.add_user(fake_entra::User {
            id: id.clone(),
            user_principal_name: format!("user{n}@contoso.com"),
            display_name: format!("User {n}"),
            user_type: "Member".into(),
            account_enabled: true,
        });
    }
    let file = maester_for_workspace(&ws);
    let out = ws
        .cli_async(&[
            "scan",
            "import",
            "--from",
            "maester",
            file.to_str().unwrap(),
            "--tenant",
            "test",
        ])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("enriched from Graph"), "{}", out.stdout);
    let written: Vec<PathBuf> = std::fs::read_dir(ws.path().join("scans"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(written.len(), 1);
    let scan = Scan::from_slice(&std::fs::read(&written[0]).unwrap(), "written").unwrap();
    let known = &users[0];
    let ident = scan
        .identities
        .iter()
        .find(|i| i.id.as_str() == known)
        .unwrap();
    // The file's UPN wins; what only Graph knows is filled in.
    assert!(ident.user_principal_name.is_some());
    assert_eq!(ident.account_enabled, Some(true));
    assert_eq!(
        ident.user_type,
        Some(entra_remediator::scan::UserType::Member)
    );
    let gone = users.last().unwrap();
    let ident = scan
        .identities
        .iter()
        .find(|i| i.id.as_str() == gone)
        .unwrap();
    assert_eq!(ident.account_enabled, None, "never guessed");
    let events = ws.events();
    let ev = events.iter().find(|e| e["kind"] == "scan_written").unwrap();
    let detail: serde_json::Value = serde_json::from_str(ev["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["how"], "import:maester");
    assert_eq!(detail["enriched_identities"], users.len() - 1);
    // A planned run reads it like any scan.
    let out = ws.cli_async(&["plan"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn scan_import_refuses_a_bad_file_naming_it_and_writes_nothing() {
    let ws = crate::common::Workspace::new();
    let bad = ws.write("broken.json", "{\"TenantId\": \"x\", \"Tests\": [");
    let out = ws.cli(&[
        "scan",
        "import",
        "--from",
        "maester",
        bad.to_str().unwrap(),
        "--tenant",
        "test",
    ]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("broken.json:1:"), "{}", out.stderr);
    let out = ws.cli(&[
        "scan",
        "import",
        "--from",
        "nessus",
        bad.to_str().unwrap(),
        "--tenant",
        "test",
    ]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("maester, scubagear or zta"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_dir(ws.path().join("scans")).unwrap().count(),
        0
    );
    // Without reachable Graph the import is written with what the file says, and says so.
    let file = maester_for_workspace(&ws);
    let out = ws.cli(&[
        "scan",
        "import",
        "--from",
        "maester",
        file.to_str().unwrap(),
        "--tenant",
        "test",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("not enriched from Graph"),
        "{}",
        out.stdout
    );
    let out = ws.cli(&["scans", "list", "--tenant", "test"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("maester 1.3.0 import (maester-results.json)"),
        "{}",
        out.stdout
    );
}

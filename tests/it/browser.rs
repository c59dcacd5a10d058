//! The console in a real browser: headless Chromium driven through
//! ChromeDriver (WebDriver), the real daemon, the fake tenant as identity
//! provider and Graph. Skipped, and said so, where Chromium or ChromeDriver is
//! missing; CI installs both and sets ENTRA_REMEDIATOR_REQUIRE_BROWSER=1, so
//! there they always run. ENTRA_REMEDIATOR_SCREENSHOTS=DIR saves the main pages
//! as PNG files there (docs/screenshots holds the README's).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::console::Rig;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// ChromeDriver and a browser session; both end when dropped.
pub struct Browser {
    pub c: Client,
    driver: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Whether the browser tests can run here; panics in CI when they cannot.
pub fn available() -> bool {
    let here =
        std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
    if !here {
        if std::env::var_os("ENTRA_REMEDIATOR_REQUIRE_BROWSER").is_some_and(|v| v == "1") {
            panic!(
                "ENTRA_REMEDIATOR_REQUIRE_BROWSER=1 but {CHROMIUM} or {CHROMEDRIVER} is missing"
            );
        }
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            // Straight to stderr, past the test harness's output capture.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "Browser tests SKIPPED: they need {CHROMIUM} and {CHROMEDRIVER} (Debian packages chromium, chromium-driver; .ci/run installs them)"
            );
        });
    }
    here
}

impl Browser {
    pub async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1366,900", "--no-first-run", "--password-store=basic"]
            }),
        );
        let started = Instant::now();
        let c = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(c) => break c,
                Err(e) => {
                    assert!(
                        started.elapsed() < Duration::from_secs(30),
                        "chromedriver: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        Browser { c, driver }
    }

    pub async fn go(&self, url: &str) {
        self.c.goto(url).await.unwrap();
    }

    pub async fn text(&self, css: &str) -> String {
        self.c
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    pub async fn body(&self) -> String {
        self.text("body").await
    }

    pub async fn click(&self, css: &str) {
        self.c
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap();
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        self.c
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .send_keys(text)
            .await
            .unwrap();
    }

    /// Waits until the page's body contains `what`.
    pub async fn wait_for(&self, what: &str) {
        let started = Instant::now();
        loop {
            let body = self.c.find(Locator::Css("body")).await;
            if let Ok(b) = body
                && b.text().await.unwrap_or_default().contains(what)
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "{what:?} never appeared: {}",
                self.body().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Signs in through the console's sign-in page and the fake tenant's own
    /// sign-in form, typing the UPN as a person would.
    pub async fn sign_in(&self, rig: &Rig, upn: &str) {
        self.go(&rig.url("/console")).await;
        self.click("#sign-in").await;
        self.type_into("#login", upn).await;
        self.click("#signin").await;
        self.wait_for("Sign out").await;
        assert!(self.text("#signed-in-as").await.len() > 1);
    }

    pub async fn sign_out(&self) {
        // Error pages have no header: sign out from the console's home.
        if self.c.find(Locator::Css("#logout")).await.is_err() {
            let url = self.c.current_url().await.unwrap();
            self.go(url.join("/console").unwrap().as_str()).await;
        }
        self.click("#logout").await;
        self.wait_for("You are signed out").await;
    }

    /// Saves the page as DIR/NAME.png when ENTRA_REMEDIATOR_SCREENSHOTS=DIR.
    pub async fn screenshot(&self, name: &str) {
        if let Some(dir) = std::env::var_os("ENTRA_REMEDIATOR_SCREENSHOTS") {
            let png = self.c.screenshot().await.unwrap();
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(std::path::Path::new(&dir).join(format!("{name}.png")), png).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_through_the_identity_providers_form_and_out_again() {
    if !available() {
        return;
    }
    let rig = Rig::start("approval", "").await;
    let b = Browser::start().await;
    b.sign_in(&rig, "carol@t.com").await;
    assert!(b.body().await.contains("viewer"));
    b.screenshot("tenants").await;
    b.sign_out().await;
    b.go(&rig.url("/console/approvals")).await;
    b.wait_for("Sign in with Microsoft Entra ID").await;
    let _ = b.c.clone().close().await;
}

/// A tenant for the portal flow: u1..u30 without MFA (finding F1; u1 is a
/// protected break-glass account), u31 holding two User Administrator
/// assignments d1 and d2 (finding F2). Nothing is proposed by rules: people do it.
async fn portal_tenant(rig: &Rig) {
    use crate::common::*;
    const USER_ADMIN: &str = "fe930be7-5e62-47db-91af-98c3a49a38b1";
    for n in 1..=31 {
        rig.fake
            .add_user(crate::console::person(n, &format!("u{n}@t.com")));
    }
    for id in ["d1", "d2"] {
        rig.fake.add_role_assignment(fake_entra::RoleAssignment {
            id: id.into(),
            principal_id: guid(31),
            role_definition_id: USER_ADMIN.into(),
            directory_scope_id: "/".into(),
            pim_managed: false,
        });
    }
    let mut ids: Vec<serde_json::Value> =
        (1..=30).map(|n| ident(n, &format!("u{n}@t.com"))).collect();
    let mut admin = ident(31, "u31@t.com");
    admin["roles"] = json!([
        {"assignment_id": "d1", "role_definition_id": USER_ADMIN, "role_name": "User Administrator", "directory_scope_id": "/", "assignment_type": "active"},
        {"assignment_id": "d2", "role_definition_id": USER_ADMIN, "role_name": "User Administrator", "directory_scope_id": "/", "assignment_type": "active"}
    ]);
    ids.push(admin);
    let findings = vec![
        finding("F1", "high", &(1..=30).collect::<Vec<u32>>()),
        finding("F2", "critical", &[31]),
    ];
    rig.ws
        .add_scan("s.json", &scan(&now_rfc3339(), ids, findings));
}

/// The id of the action on `upn` in `state`.
async fn action_of(rig: &Rig, upn: &str, kind: &str, state: &str) -> i64 {
    rig.actions()
        .await
        .iter()
        .find(|a| a["identity_upn"] == upn && a["action"] == kind && a["state"] == state)
        .and_then(|a| a["id"].as_i64())
        .unwrap_or_else(|| panic!("no {kind} of {upn} in {state}"))
}

/// Waits until the store shows the action in `state`.
async fn wait_state(rig: &Rig, id: i64, state: &str) {
    let started = Instant::now();
    loop {
        if rig
            .actions()
            .await
            .iter()
            .any(|a| a["id"] == id && a["state"] == state)
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "action {id} never {state}: {}",
            rig.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Posts a form the page never offered, from inside the page (a forged
/// request): its fields, as the browser would send them.
async fn forge(b: &Browser, action: &str, fields: &[(&str, &str)]) {
    let fields: Vec<serde_json::Value> = fields.iter().map(|(k, v)| json!([k, v])).collect();
    b.c.execute(
        "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];
         for (const [k, v] of arguments[1]) { const i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i); }
         document.body.appendChild(f); f.submit();",
        vec![json!(action), json!(fields)],
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_remediate_from_a_finding_and_an_identity_and_approve_with_four_eyes() {
    if !available() {
        return;
    }
    let rig = Rig::start(
        "approval",
        "[approvals]\nfour_eyes = [\"remove_role_assignment\"]\n[protected]\nupns = [\"u1@t.com\"]\n",
    )
    .await;
    portal_tenant(&rig).await;
    let b = Browser::start().await;

    // Alice picks the tenant and the newest scan, reads the dashboard and a finding.
    b.sign_in(&rig, "alice@t.com").await;
    b.screenshot("tenants").await;
    b.click("#tenant-test button[type=submit]").await;
    b.wait_for("Riskiest identities").await;
    assert!(b.text("#findings").await.contains("F1"));
    b.screenshot("dashboard").await;
    b.click("#findings a[href*='/findings/F1']").await;
    b.wait_for("Who is affected").await;
    assert!(b.text("#affected").await.contains("30 identities"));
    // Search narrows the table; then back to all and pick three, one protected.
    b.type_into("#q", "u2@").await;
    b.click("#search button[type=submit]").await;
    b.wait_for("match").await;
    assert!(
        b.text("#matched").await.starts_with("1 match "),
        "{}",
        b.text("#matched").await
    );
    b.c.goto(&rig.url("/console/t/test/findings/F1"))
        .await
        .unwrap();
    b.wait_for("Who is affected").await;
    b.screenshot("finding").await;
    for n in [1, 2, 3] {
        b.click(&format!(
            "input[name=identity][value='{}']",
            crate::common::guid(n)
        ))
        .await;
    }
    b.c.find(Locator::Css("#action"))
        .await
        .unwrap()
        .select_by_value("disable_user")
        .await
        .unwrap();
    b.type_into("#reason", "INC-7: no MFA and stale").await;
    b.click("#review").await;
    b.wait_for("nothing has happened yet").await;
    assert_eq!(b.text("#review-proceeding").await, "2 actions");
    assert_eq!(b.text("#review-refused").await, "1");
    let refused = b.text("#review-stopped").await;
    assert!(
        refused.contains("u1@t.com") && refused.contains("protected"),
        "{refused}"
    );
    b.screenshot("review").await;
    assert!(rig.actions().await.is_empty(), "a review records nothing");
    b.click("#confirm").await;
    b.wait_for("Your request is recorded").await;
    b.screenshot("history").await;
    let u2 = action_of(&rig, "u2@t.com", "disable_user", "pending").await;
    let u3 = action_of(&rig, "u3@t.com", "disable_user", "pending").await;
    action_of(&rig, "u1@t.com", "disable_user", "refused").await;

    // Everyone the finding affects: 30 is over bulk_confirm_over (20), so the count must be typed.
    b.c.goto(&rig.url("/console/t/test/findings/F1"))
        .await
        .unwrap();
    b.click("#scope-finding").await;
    b.type_into("#reason", "INC-7: all of them").await;
    b.click("#review").await;
    b.wait_for("Type 30 to confirm").await;
    b.click("#confirm").await;
    b.wait_for("type that number").await;
    assert_eq!(
        rig.actions().await.len(),
        3,
        "nothing recorded without the typed count"
    );

    // Alice may not approve her own request.
    b.go(&rig.url(&format!("/console/actions/{u2}"))).await;
    b.click("#approve").await;
    b.wait_for("may not approve it").await;

    // Alice asks to remove one of u31's two role assignments (four eyes applies).
    b.go(&rig.url(&format!(
        "/console/t/test/identities/{}",
        crate::common::guid(31)
    )))
    .await;
    b.wait_for("User Administrator").await;
    b.screenshot("identity").await;
    b.click("input.role-pick[value='d1']").await;
    b.type_into("#roles-form textarea", "standing admin, INC-8")
        .await;
    b.click("#remove-roles").await;
    b.wait_for("nothing has happened yet").await;
    assert!(b.text("#review-going").await.contains("d1"));
    b.click("#confirm").await;
    b.wait_for("Your request is recorded").await;
    let d1 = action_of(&rig, "u31@t.com", "remove_role_assignment", "pending").await;
    b.sign_out().await;

    // Carol (viewer) sees no decision buttons, and a forged approval is refused.
    b.sign_in(&rig, "carol@t.com").await;
    b.go(&rig.url(&format!("/console/actions/{u2}"))).await;
    assert!(
        b.c.find(Locator::Css("#approve")).await.is_err(),
        "no approve button for a viewer"
    );
    let csrf =
        b.c.find(Locator::Css("input[name=csrf]"))
            .await
            .unwrap()
            .attr("value")
            .await
            .unwrap()
            .unwrap();
    forge(
        &b,
        &format!("/console/actions/{u2}/decide"),
        &[("csrf", &csrf), ("decision", "approve")],
    )
    .await;
    b.wait_for("approver role").await;
    b.sign_out().await;

    // Bob: an approval without the form's CSRF token is refused; with it, it counts.
    b.sign_in(&rig, "bob@t.com").await;
    b.go(&rig.url("/console/approvals")).await;
    b.wait_for("u31@t.com").await;
    b.screenshot("approvals").await;
    b.go(&rig.url(&format!("/console/actions/{u2}"))).await;
    b.c.execute(
        "document.querySelector('#decide input[name=csrf]').remove()",
        vec![],
    )
    .await
    .unwrap();
    b.click("#approve").await;
    b.wait_for("security token").await;
    assert_eq!(
        rig.actions().await.iter().find(|a| a["id"] == u2).unwrap()["state"],
        "pending"
    );
    for id in [u2, u3] {
        b.go(&rig.url(&format!("/console/actions/{id}"))).await;
        b.type_into("#comment", "checked with the user's manager")
            .await;
        b.click("#approve").await;
        b.wait_for("Your approval is recorded").await;
    }
    // Four eyes: bob's approval of the role removal leaves it pending; twice is refused.
    b.go(&rig.url(&format!("/console/actions/{d1}"))).await;
    b.click("#approve").await;
    b.wait_for("Your approval is recorded").await;
    assert_eq!(b.text("#action-state").await, "pending");
    b.click("#approve").await;
    b.wait_for("someone else").await;
    b.sign_out().await;

    // The approved disables run at the fake tenant; the protected account is untouched.
    wait_state(&rig, u2, "done").await;
    wait_state(&rig, u3, "done").await;
    let enabled = |n: u32| {
        rig.fake
            .user(&crate::common::guid(n))
            .unwrap()
            .account_enabled
    };
    assert!(!enabled(2) && !enabled(3) && enabled(1) && enabled(4));

    // Erin's second approval completes four eyes; only d1 is removed.
    b.sign_in(&rig, "erin@t.com").await;
    b.go(&rig.url(&format!("/console/actions/{d1}"))).await;
    b.click("#approve").await;
    b.wait_for("Your approval is recorded").await;
    wait_state(&rig, d1, "done").await;
    let left: Vec<String> = rig
        .fake
        .role_assignments()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(left, vec!["d2".to_string()]);
    // History shows it done, with who asked and who approved.
    b.go(&rig.url(&format!("/console/actions/{d1}"))).await;
    b.wait_for("done").await;
    let approvals = b.text("#approvals").await;
    assert!(
        approvals.contains("bob@t.com") && approvals.contains("erin@t.com"),
        "{approvals}"
    );
    assert!(b.text("#history").await.contains("alice@t.com"));
    b.screenshot("action").await;
    b.go(&rig.url("/console/history?tenant=test&state=done"))
        .await;
    let table = b.text("#history-table").await;
    assert!(
        table.contains("u2@t.com") && table.contains("u31@t.com"),
        "{table}"
    );
    let _ = b.c.clone().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_action_is_refused_in_the_browser() {
    if !available() {
        return;
    }
    let rig = Rig::start_with("mode = \"approval\"\napproval_ttl = \"8s\"", "").await;
    portal_tenant(&rig).await;
    let b = Browser::start().await;
    b.sign_in(&rig, "alice@t.com").await;
    b.go(&rig.url(&format!(
        "/console/t/test/identities/{}",
        crate::common::guid(5)
    )))
    .await;
    b.c.find(Locator::Css("#identity-action"))
        .await
        .unwrap()
        .select_by_value("revoke_sessions")
        .await
        .unwrap();
    b.type_into("#actions textarea", "suspicious sign-in").await;
    b.click("#actions button[type=submit]").await;
    b.wait_for("nothing has happened yet").await;
    b.click("#confirm").await;
    b.wait_for("Your request is recorded").await;
    let recorded = Instant::now();
    let id = action_of(&rig, "u5@t.com", "revoke_sessions", "pending").await;
    b.sign_out().await;
    b.sign_in(&rig, "bob@t.com").await;
    b.go(&rig.url(&format!("/console/actions/{id}"))).await;
    assert!(
        recorded.elapsed() < Duration::from_secs(7),
        "too slow to see it pending"
    );
    // The page still offers approval; the approval comes after the expiry.
    tokio::time::sleep(Duration::from_secs(9).saturating_sub(recorded.elapsed())).await;
    b.click("#approve").await;
    b.wait_for("expired").await;
    let _ = b.c.clone().close().await;
}

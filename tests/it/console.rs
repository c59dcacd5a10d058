//! The console over real HTTP, as a browser would use it: the real daemon, the
//! fake tenant as identity provider (OpenID Connect with PKCE), a real SQLite
//! file. Sign-in and its refusals, cookies and headers, CSRF, roles, four eyes
//! and expiry, all through the pages' forms.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fake_entra::{FakeTenant, IdTokenFault, User};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::Value;

use crate::common::*;

/// The staff who sign in, and the identities the scan names.
fn person(n: u32, upn: &str) -> User {
    User {
        id: guid(n),
        user_principal_name: upn.into(),
        display_name: upn.split('@').next().unwrap_or(upn).into(),
        user_type: "Member".into(),
        account_enabled: true,
    }
}

/// The daemon serving the console, with the fake tenant behind it.
pub struct Rig {
    pub fake: FakeTenant,
    pub ws: Workspace,
    pub base: String,
    child: Child,
    http: reqwest::Client,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A signed-in browser session: its cookie and the forms' CSRF token.
pub struct Session {
    pub cookie: String,
    pub csrf: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `name=value` of the named cookie in a response's `Set-Cookie` headers.
fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<(String, String)> {
    resp.headers().get_all(SET_COOKIE).iter().find_map(|v| {
        let v = v.to_str().ok()?;
        let pair = v.split(';').next()?;
        let (k, val) = pair.split_once('=')?;
        (k == name && !val.is_empty()).then(|| (format!("{k}={val}"), v.to_string()))
    })
}

/// The value of the first `name="csrf"` hidden input in a page.
pub fn csrf_of(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    html[at..].split('"').next().map(str::to_string)
}

impl Rig {
    /// Starts the fake tenant with alice (operator, approver), bob (approver),
    /// carol (viewer) and dave (no role), and the daemon in `mode` with the
    /// console on; `extra` is more TOML tables.
    pub async fn start(mode: &str, extra: &str) -> Rig {
        let fake = FakeTenant::start(TENANT).await;
        fake.register_app_secret(CLIENT, SECRET);
        for (n, upn) in [
            (901, "alice@t.com"),
            (902, "bob@t.com"),
            (903, "carol@t.com"),
            (904, "dave@t.com"),
        ] {
            fake.add_user(person(n, upn));
        }
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        fake.register_app_redirect(CLIENT, &format!("{base}/console/auth/callback"));
        let mut ws = Workspace::new();
        ws.write("secret", SECRET);
        ws.write("api-token", "console-test-api-token");
        ws.set_top(&format!("mode = \"{mode}\""));
        ws.set_graph(&graph_table(&fake.base_url(), CLIENT, "secret", ""));
        ws.set_tables(&format!(
            r#"[api]
enabled = true
listen = "127.0.0.1:{port}"
token_file = "api-token"
[console]
enabled = true
issuer = "{issuer}"
client_id = "{CLIENT}"
client_secret_file = "secret"
redirect_url = "{base}/console/auth/callback"
secure_cookies = false
[console.roles]
operators = ["alice@t.com"]
approvers = ["alice@t.com", "bob@t.com"]
viewers = ["carol@t.com"]
[daemon]
schedule = "0 0 0 1 1 *"
execute_interval_secs = 1
{extra}
"#,
            issuer = fake.oidc_issuer()
        ));
        let child = Command::new(env!("CARGO_BIN_EXE_entra-remediator"))
            .args([
                "--config",
                ws.config_path().to_str().unwrap(),
                "--log",
                "info",
                "daemon",
            ])
            .current_dir(ws.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(ws.path().join("daemon.log")).unwrap())
            .spawn()
            .unwrap();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let rig = Rig {
            fake,
            ws,
            base,
            child,
            http,
        };
        let started = Instant::now();
        loop {
            if let Ok(r) = rig.http.get(rig.url("/readyz")).send().await
                && r.status() == 200
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "daemon not ready: {}",
                rig.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        rig
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.ws.path().join("daemon.log")).unwrap_or_default()
    }

    /// Signs `upn` in through the whole OpenID Connect flow; `None` when the
    /// console refused the sign-in (the error page's text is returned then).
    pub async fn try_sign_in(&self, upn: &str) -> Result<Session, String> {
        let start = self
            .http
            .get(self.url("/console/login?go=1&return_to=/console"))
            .send()
            .await
            .unwrap();
        assert_eq!(start.status(), 303, "sign-in starts with a redirect");
        let (login_cookie, _) = set_cookie(&start, "er-login").expect("a sign-in cookie");
        let authorize = start.headers()[LOCATION].to_str().unwrap().to_string();
        assert!(
            authorize.starts_with(&self.fake.oidc_issuer().replace("/v2.0", "")),
            "{authorize}"
        );
        self.fake.set_next_sign_in(Some(upn));
        let idp = self.http.get(&authorize).send().await.unwrap();
        assert_eq!(idp.status(), 302, "the fake signs {upn} in");
        let back = idp.headers()[LOCATION].to_str().unwrap().to_string();
        assert!(
            back.starts_with(&self.url("/console/auth/callback")),
            "{back}"
        );
        let cb = self
            .http
            .get(&back)
            .header(COOKIE, &login_cookie)
            .send()
            .await
            .unwrap();
        let session = set_cookie(&cb, "er-session");
        let status = cb.status();
        let body = cb.text().await.unwrap();
        let Some((cookie, attrs)) = session else {
            return Err(format!("{status}: {body}"));
        };
        assert!(
            attrs.contains("HttpOnly") && attrs.contains("SameSite=Strict"),
            "{attrs}"
        );
        assert!(!attrs.contains("Secure"), "plain-HTTP loopback: {attrs}");
        let home = self
            .get(
                &Session {
                    cookie: cookie.clone(),
                    csrf: String::new(),
                },
                "/console",
            )
            .await;
        assert_eq!(home.0, 200, "{}", home.1);
        let csrf = csrf_of(&home.1).expect("the page carries a CSRF token");
        Ok(Session { cookie, csrf })
    }

    pub async fn sign_in(&self, upn: &str) -> Session {
        match self.try_sign_in(upn).await {
            Ok(s) => s,
            Err(e) => panic!("{upn} could not sign in: {e}\n{}", self.log()),
        }
    }

    pub async fn get(&self, s: &Session, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(self.url(path))
            .header(COOKIE, &s.cookie)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub async fn post(&self, s: &Session, path: &str, form: &[(&str, &str)]) -> (u16, String) {
        let r = self
            .http
            .post(self.url(path))
            .header(COOKIE, &s.cookie)
            .form(form)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// The actions in the store (through the CLI).
    pub async fn actions(&self) -> Vec<Value> {
        let out = self
            .ws
            .cli_async(&["approvals", "list", "--all", "--format", "json"])
            .await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.json_lines()
    }
}

/// A scan naming u1..u3 under one finding, and a rule disabling them: run once,
/// so that approval mode leaves three pending actions.
pub async fn pending_disables(rig: &Rig) -> Vec<i64> {
    for n in 1..=3 {
        rig.fake.add_user(person(n, &format!("u{n}@t.com")));
    }
    let ids = (1..=3).map(|n| ident(n, &format!("u{n}@t.com"))).collect();
    rig.ws.add_scan(
        "s.json",
        &scan(&now_rfc3339(), ids, vec![finding("F1", "high", &[1, 2, 3])]),
    );
    rig.ws.add_rule(
        "r.rhai",
        &rule("disable-f1", "F1", "[disable_user(\"stale\")]"),
    );
    let out = rig.ws.cli_async(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    let actions = rig.actions().await;
    let ids: Vec<i64> = actions
        .iter()
        .filter(|a| a["state"] == "pending")
        .map(|a| a["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{actions:?}");
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_checks_the_id_token_and_pages_carry_strict_headers() {
    let rig = Rig::start("approval", "").await;
    // Without a session, a page leads to sign-in.
    let r = rig
        .http
        .get(rig.url("/console/approvals"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()[LOCATION]
            .to_str()
            .unwrap()
            .starts_with("/console/login?return_to=%2Fconsole%2Fapprovals")
    );
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );

    let alice = rig.sign_in("alice@t.com").await;
    let auths = rig.fake.oidc_authorizations();
    let last = auths.last().unwrap();
    assert_eq!(
        last.code_challenge_method.as_deref(),
        Some("S256"),
        "PKCE S256 is used"
    );
    assert!(last.nonce.is_some() && last.state.is_some());
    let (status, page) = rig.get(&alice, "/console").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("alice") && page.contains("operator, approver"),
        "{page}"
    );
    assert!(
        !page.contains(alice.cookie.split('=').nth(1).unwrap()),
        "the session id is never in a page"
    );

    // Tokens the console must refuse: each leaves no session behind.
    for fault in [
        IdTokenFault::WrongNonce,
        IdTokenFault::WrongAudience,
        IdTokenFault::Expired,
        IdTokenFault::WrongIssuer,
    ] {
        rig.fake.set_id_token_fault(Some(fault.clone()));
        let e = rig
            .try_sign_in("alice@t.com")
            .await
            .err()
            .unwrap_or_else(|| panic!("{fault:?} accepted"));
        assert!(
            e.starts_with("403") && e.contains("refused"),
            "{fault:?}: {e}"
        );
    }
    rig.fake.set_id_token_fault(None);
    rig.fake.set_oidc_signing_key_mismatch(true);
    let e = rig
        .try_sign_in("alice@t.com")
        .await
        .err()
        .expect("a bad signature is refused");
    assert!(e.contains("refused"), "{e}");
    rig.fake.set_oidc_signing_key_mismatch(false);

    // Someone without a role gets no session.
    let e = rig
        .try_sign_in("dave@t.com")
        .await
        .err()
        .expect("no role, no session");
    assert!(e.contains("holds no role") && e.contains(&guid(904)), "{e}");

    // A replayed callback (the sign-in cookie is single use) is refused.
    let log = rig.log();
    assert!(!log.contains(&alice.csrf), "no CSRF token in the log");
    assert!(
        !log.contains(alice.cookie.split('=').nth(1).unwrap()),
        "no session id in the log"
    );

    // Sign-out ends the session.
    let (status, _) = rig
        .post(&alice, "/console/logout", &[("csrf", &alice.csrf)])
        .await;
    assert_eq!(status, 303);
    let r = rig
        .http
        .get(rig.url("/console"))
        .header(COOKIE, &alice.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "the old cookie no longer works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_need_the_role_a_csrf_token_and_four_eyes_from_two_people() {
    let rig = Rig::start("approval", "[approvals]\nfour_eyes = [\"disable_user\"]\n").await;
    let ids = pending_disables(&rig).await;
    let (alice, bob, carol) = (
        rig.sign_in("alice@t.com").await,
        rig.sign_in("bob@t.com").await,
        rig.sign_in("carol@t.com").await,
    );
    let (status, queue) = rig.get(&carol, "/console/approvals").await;
    assert_eq!(status, 200);
    assert!(
        queue.contains("u1@t.com") && queue.contains("four eyes"),
        "{queue}"
    );
    let path = format!("/console/actions/{}/decide", ids[0]);

    // A viewer may not approve; a form without the token is refused.
    let (status, page) = rig
        .post(
            &carol,
            &path,
            &[("csrf", &carol.csrf), ("decision", "approve")],
        )
        .await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("approver role"), "{page}");
    let (status, page) = rig.post(&alice, &path, &[("decision", "approve")]).await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("security token"), "{page}");
    let (status, _) = rig
        .post(
            &alice,
            &path,
            &[("csrf", &bob.csrf), ("decision", "approve")],
        )
        .await;
    assert_eq!(status, 403, "another session's token does not do");
    assert!(rig.actions().await.iter().all(|a| a["state"] == "pending"));

    // Four eyes: alice once, alice again refused, bob completes it.
    let (status, page) = rig
        .post(
            &alice,
            &path,
            &[
                ("csrf", &alice.csrf),
                ("decision", "approve"),
                ("comment", "ok"),
            ],
        )
        .await;
    assert_eq!(status, 303, "{page}");
    let (status, page) = rig
        .post(
            &alice,
            &path,
            &[("csrf", &alice.csrf), ("decision", "approve")],
        )
        .await;
    assert_eq!(status, 409, "{page}");
    assert!(page.contains("someone else"), "{page}");
    let (_, action) = rig.get(&bob, &format!("/console/actions/{}", ids[0])).await;
    assert!(
        action.contains("alice@t.com") && action.contains("pending"),
        "{action}"
    );
    let (status, _) = rig
        .post(&bob, &path, &[("csrf", &bob.csrf), ("decision", "approve")])
        .await;
    assert_eq!(status, 303);
    let events = rig.ws.events();
    let approvers: Vec<&str> = events
        .iter()
        .filter(|e| {
            e["action_id"] == ids[0]
                && (e["kind"] == "approval_recorded" || e["kind"] == "state_changed")
        })
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert!(
        approvers.contains(&"alice@t.com") && approvers.contains(&"bob@t.com"),
        "{approvers:?}"
    );
    // The daemon executes the approved action at the fake tenant.
    let started = Instant::now();
    while rig.fake.user(&guid(1)).is_some_and(|u| u.account_enabled) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not executed: {}",
            rig.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A rejection by an approver, with a comment.
    let path = format!("/console/actions/{}/decide", ids[1]);
    let (status, _) = rig
        .post(
            &bob,
            &path,
            &[
                ("csrf", &bob.csrf),
                ("decision", "reject"),
                ("comment", "not now"),
            ],
        )
        .await;
    assert_eq!(status, 303);
    let a = rig
        .actions()
        .await
        .into_iter()
        .find(|a| a["id"] == ids[1])
        .unwrap();
    assert_eq!(a["state"], "rejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_action_cannot_be_approved() {
    let mut rig = Rig::start("approval", "").await;
    rig.ws.set_top("mode = \"approval\"\napproval_ttl = \"1s\"");
    let ids = pending_disables(&rig).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let bob = rig.sign_in("bob@t.com").await;
    let (status, page) = rig
        .post(
            &bob,
            &format!("/console/actions/{}/decide", ids[0]),
            &[("csrf", &bob.csrf), ("decision", "approve")],
        )
        .await;
    assert_eq!(status, 409, "{page}");
    assert!(page.contains("expired"), "{page}");
    assert!(rig.fake.user(&guid(1)).unwrap().account_enabled);
}

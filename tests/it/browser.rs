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
        eprintln!(
            "SKIPPED: browser tests need {CHROMIUM} and {CHROMEDRIVER} (Debian packages chromium, chromium-driver); .ci/run installs them"
        );
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

//! Part of section `console`: whole console pages, end to end, in this process
//! and without sockets. A `ConsoleState` is built the way the daemon builds it
//! (`[console]` config with a client secret file; no network is touched since
//! nobody signs in), an admin session is created directly, and each request
//! carries its cookie through `console::router(state)` with
//! `tower::ServiceExt::oneshot`: routing, the session extractor, the service
//! read model, the askama template and the security headers, up to the whole
//! body in memory.
//!
//! The first dashboard request loads the scan into the console's own (empty)
//! `ScanCache` and is reported on its own (cold). Then each page gets one
//! warm-up request and `CALLS` timed ones; every response is checked (status
//! 200 and the content the page must carry) so an error page is never timed.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use entra_remediator::access::{Caller, Interface, Role, Roles};
use entra_remediator::config::Config;
use entra_remediator::console::oidc::Oidc;
use entra_remediator::console::session::CookieNames;
use entra_remediator::console::{self, ConsoleState};
use entra_remediator::service::scan_view::ScanCache;
use entra_remediator::store::Store;
use tower::ServiceExt;

use crate::Ctx;
use crate::console::{CALLS, fine, stats};
use crate::util::{self, fmt_dur};

/// The `[api]` and `[console]` tables of the bench config (the console is
/// served by the API's listener, so both are on; nothing is bound here). Writes
/// the API token and the console's client secret into `ws`.
pub fn config_tables(ws: &Path) -> String {
    std::fs::write(ws.join("api-token"), "console-bench-api-token").expect("api token");
    std::fs::write(ws.join("console-secret"), "console-bench-client-secret").expect("secret");
    r#"[api]
enabled = true
token_file = "api-token"
[console]
enabled = true
issuer = "https://login.microsoftonline.com/5b1c0e2a-7d3f-4e8a-9c21-6f4b3a2d1e0f/v2.0"
client_id = "0c0ffee0-0000-4000-8000-00000000be9c"
client_secret_file = "console-secret"
redirect_url = "http://127.0.0.1:8080/console/auth/callback"
secure_cookies = false
[console.roles]
admins = ["bench@example.com"]
"#
    .to_string()
}

/// What the pages are asked about, found by the read-model part of the section
/// (with the service's own search, so the expected counts are its answers).
pub struct Subjects {
    /// The finding with the most affected identities, and how many.
    pub finding: (String, usize),
    /// A search term within that finding, and how many identities it matches.
    pub search: (String, usize),
    /// The riskiest identity's object id and label (UPN).
    pub top: (String, String),
    /// How many actions the recorded run holds.
    pub recorded: usize,
    /// The run's actor (for the history filter by person).
    pub actor: String,
}

/// `s` percent-encoded the way forms are.
fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// One GET through the router with the session cookie: status and body.
async fn get(router: &Router, cookie: Option<&str>, uri: &str) -> (StatusCode, String) {
    let mut req = Request::builder().uri(uri);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    let req = req.body(Body::empty()).expect("request");
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    (
        status,
        String::from_utf8(body.to_vec()).expect("utf-8 page"),
    )
}

/// What a page's body must show: `Err` says what is missing.
type Check = Box<dyn Fn(&str) -> Result<(), String>>;

/// A page to time and what its body must show.
struct Page {
    name: String,
    uri: String,
    check: Check,
}

/// Fails unless `body` contains every one of `needles`.
fn has(body: &str, needles: &[&str]) -> Result<(), String> {
    match needles.iter().find(|n| !body.contains(**n)) {
        None => Ok(()),
        Some(n) => Err(format!("the page lacks {n:?}")),
    }
}

/// How many selectable rows (affected identities) a finding page lists.
fn picks(body: &str) -> usize {
    body.matches("class=\"pick\"").count()
}

/// Checks status and content of one response; panics naming the page.
fn verify(page: &Page, status: StatusCode, body: &str) {
    assert_eq!(
        status,
        StatusCode::OK,
        "{} ({}): {body}",
        page.name,
        page.uri
    );
    if let Err(e) = (page.check)(body) {
        panic!("{} ({}): {e}", page.name, page.uri);
    }
}

/// One warm-up request, then `CALLS` timed ones, each checked; prints a row.
async fn measure(router: &Router, cookie: &str, page: &Page) -> (Duration, Duration) {
    let (status, body) = get(router, Some(cookie), &page.uri).await;
    verify(page, status, &body);
    let mut times = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let t = Instant::now();
        let (status, body) = get(router, Some(cookie), &page.uri).await;
        times.push(t.elapsed());
        verify(page, status, &body);
    }
    let (med, p99) = stats(times);
    println!(
        "  {:<58} median {:>9}  p99 {:>9}  ({} KiB)",
        page.name,
        fine(med),
        fine(p99),
        body.len() / 1024
    );
    (med, p99)
}

/// The timed pages and their checks.
fn pages(n: usize, s: &Subjects) -> Vec<Page> {
    let (fid, affected) = s.finding.clone();
    let (q, matched) = s.search.clone();
    let (top_id, top_label) = s.top.clone();
    let finding = format!("/console/t/bench/findings/{}", enc(&fid));
    let pages_of = affected.div_ceil(50);
    let deep = pages_of.min(30);
    let last_deep = deep == pages_of;
    let identities = format!("<span class=\"n\">{n}</span><span class=\"l\">identities</span>");
    let search_rows = matched.min(50);
    let history_rows = |b: &str| b.matches("<tr id=\"action-").count();
    let recorded = s.recorded;
    // Halfway through the history (100 rows a page): page 50 of 100 at 10,000.
    let deep_history = (recorded / 200).max(1);
    vec![
        Page {
            name: "GET /console/t/bench (dashboard)".into(),
            uri: "/console/t/bench".into(),
            check: Box::new(move |b| has(b, &[&identities, "id=\"findings\"", "id=\"top\""])),
        },
        Page {
            name: format!("GET …/findings/{fid} ({affected} affected), page 1 by risk"),
            uri: finding.clone(),
            check: Box::new(move |b| {
                has(
                    b,
                    &["id=\"affected-table\"", &format!("page 1 of {pages_of}")],
                )?;
                (picks(b) == 50)
                    .then_some(())
                    .ok_or(format!("{} rows, not 50", picks(b)))
            }),
        },
        Page {
            name: format!("  the same, ?q={q} ({matched} match)"),
            uri: format!("{finding}?q={}", enc(&q)),
            check: Box::new(move |b| {
                has(b, &[&format!("{matched} match")])?;
                (picks(b) == search_rows)
                    .then_some(())
                    .ok_or(format!("{} rows, not {search_rows}", picks(b)))
            }),
        },
        Page {
            name: format!("  the same, by UPN ascending, page {deep}"),
            uri: format!("{finding}?sort=upn&dir=asc&page={deep}"),
            check: Box::new(move |b| {
                has(b, &[&format!("page {deep} of {pages_of}")])?;
                let want = if last_deep {
                    affected - (deep - 1) * 50
                } else {
                    50
                };
                (picks(b) == want)
                    .then_some(())
                    .ok_or(format!("{} rows, not {want}", picks(b)))
            }),
        },
        Page {
            name: "GET …/identities/{id} (the riskiest identity)".into(),
            uri: format!("/console/t/bench/identities/{}", enc(&top_id)),
            check: Box::new(move |b| {
                has(
                    b,
                    &[
                        &format!("<h1>{top_label}</h1>"),
                        "id=\"summary\"",
                        "id=\"identity-history\"",
                    ],
                )
            }),
        },
        Page {
            name: format!("GET /console/history ({recorded} actions), page 1"),
            uri: "/console/history".into(),
            check: Box::new(move |b| {
                has(b, &["id=\"history-table\"", "id=\"older\""])?;
                (history_rows(b) == 100)
                    .then_some(())
                    .ok_or(format!("{} rows, not 100", history_rows(b)))
            }),
        },
        Page {
            name: format!("  page {deep_history}"),
            uri: format!("/console/history?page={deep_history}"),
            check: Box::new(move |b| {
                has(
                    b,
                    &[
                        "id=\"history-table\"",
                        &format!("<span>Page {deep_history}</span>"),
                    ],
                )?;
                (history_rows(b) == 100)
                    .then_some(())
                    .ok_or(format!("{} rows, not 100", history_rows(b)))
            }),
        },
        Page {
            name: format!("  ?person={} (the run's actor), page 1", s.actor),
            uri: format!("/console/history?person={}", enc(&s.actor)),
            check: Box::new(move |b| {
                has(b, &["id=\"history-table\"", "id=\"older\""])?;
                (history_rows(b) == 100)
                    .then_some(())
                    .ok_or(format!("{} rows, not 100", history_rows(b)))
            }),
        },
    ]
}

/// Times the console's pages at `n` identities (config at `cfg_path`, the
/// recorded history in `store`) and adds a summary line.
pub fn run(
    ctx: &mut Ctx,
    rt: &tokio::runtime::Runtime,
    cfg_path: &Path,
    store: Arc<dyn Store>,
    subjects: &Subjects,
) {
    let n = ctx.largest();
    println!(
        "\n  -- whole pages through console::router (in process, no socket), {CALLS} requests each after one warm-up"
    );
    println!("  load before: loadavg {}", util::loadavg());
    let cfg = Config::load(cfg_path).expect("load bench config");
    let oidc = Oidc::new(&cfg.console).expect("console relying party");
    let (requests, _keep) = tokio::sync::mpsc::channel(1);
    let state = ConsoleState {
        store,
        cookies: CookieNames::new(cfg.console.secure_cookies),
        config: Arc::new(RwLock::new(Arc::new(cfg))),
        sessions: Arc::default(),
        oidc: Arc::new(oidc),
        requests,
        scans: Arc::new(ScanCache::new(2)),
    };
    let caller = Caller {
        name: "bench@example.com".into(),
        interface: Interface::Console,
        roles: Roles::of(&[Role::Admin]),
    };
    let id = state.sessions.create(caller, "Bench".into());
    let cookie = format!("{}={id}", state.cookies.session);
    let router = console::router(state);
    let pages = pages(n, subjects);
    let rows = rt.block_on(async {
        let (status, _) = get(&router, None, "/console/t/bench").await;
        assert_eq!(status, StatusCode::SEE_OTHER, "without the cookie: sign in");
        let t = Instant::now();
        let (status, body) = get(&router, Some(&cookie), &pages[0].uri).await;
        let cold = t.elapsed();
        verify(&pages[0], status, &body);
        println!(
            "  {:<58} {}",
            "dashboard, cold (loads the scan into the console's cache)",
            fmt_dur(cold)
        );
        let mut rows = Vec::new();
        for p in &pages {
            rows.push(measure(&router, &cookie, p).await);
        }
        (cold, rows)
    });
    let (cold, rows) = rows;
    println!("  load after: loadavg {}", util::loadavg());
    let worst = rows.iter().map(|r| r.1).max().unwrap_or_default();
    ctx.summary.push(format!(
        "console pages at {n} identities: cold dashboard {}, slowest page p99 {} (no target set)",
        fmt_dur(cold),
        fine(worst),
    ));
}

//! Section `tenants`, set-up: the generated tenants (one fake Entra tenant
//! each, served in the bench process), their scans, the bench rules, the shared
//! PostgreSQL database and the daemon instances' configs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fake_entra::{FakeTenant, User};

use crate::scangen::Rng;
use crate::util;

pub const CLIENT: &str = "00000000-0000-0000-0000-00000000be77";
pub const SECRET: &str = "bench-tenants-secret-0123456789";
/// Seconds between two cron ticks of every tenant.
pub fn period_secs(quick: bool) -> u64 {
    if quick { 15 } else { 60 }
}
/// The lease, at the minimum the config accepts, so that a take-over is quick.
pub const LEASE_SECS: u64 = 10;

/// How big the bench is.
#[derive(Clone, Copy)]
pub struct Size {
    pub tenants: usize,
    pub identities: usize,
    /// Identities per tenant and tick that are stale and high-risk: each gets
    /// disable_user and revoke_sessions (two Graph writes).
    pub risky: usize,
}

impl Size {
    pub fn new(quick: bool) -> Size {
        let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse().ok());
        Size {
            tenants: env("BENCH_TENANTS").unwrap_or(if quick { 50 } else { 1_000 }),
            identities: env("BENCH_TENANT_IDENTITIES").unwrap_or(if quick { 200 } else { 1_000 }),
            risky: 10,
        }
    }
}

/// One generated tenant: its name, Entra tenant id, fake and identity ids.
pub struct Tenant {
    pub name: String,
    pub tenant_id: String,
    pub fake: FakeTenant,
    pub ids: Vec<String>,
}

fn upn(t: usize, i: usize) -> String {
    format!("user{i}.t{t}@tenant{t}.example.com")
}

/// Starts one fake per tenant, with the users the ticks act on.
pub async fn tenants(size: Size, ticks: usize) -> Vec<Tenant> {
    let mut out = Vec::with_capacity(size.tenants);
    for t in 0..size.tenants {
        let mut rng = Rng::new(0x7e4a_4175_0000 ^ t as u64);
        let tenant_id = rng.guid(t as u64);
        let ids: Vec<String> = (0..size.identities)
            .map(|i| rng.guid(((t as u64) << 24) | i as u64))
            .collect();
        let fake = FakeTenant::start(&tenant_id).await;
        fake.register_app_secret(CLIENT, SECRET);
        for (i, id) in ids.iter().enumerate().take(size.risky * ticks) {
            fake.add_user(User {
                id: id.clone(),
                user_principal_name: upn(t, i),
                display_name: format!("User {i} of tenant {t}"),
                user_type: "Member".into(),
                account_enabled: true,
            });
        }
        out.push(Tenant {
            name: format!("t{t:04}"),
            tenant_id,
            fake,
            ids,
        });
    }
    out
}

/// The scan of tick `tick`: identities `tick*risky..(tick+1)*risky` are stale
/// (200 days) and high-risk (90); the others signed in yesterday, no risk.
pub fn scan(t: usize, tenant: &Tenant, size: Size, tick: usize, scanned_at: &str) -> String {
    let at: chrono::DateTime<chrono::Utc> = scanned_at.parse().expect("time");
    let stale = (at - chrono::Duration::days(200)).to_rfc3339();
    let fresh = (at - chrono::Duration::days(1)).to_rfc3339();
    let risky = tick * size.risky..(tick + 1) * size.risky;
    let mut s = String::with_capacity(size.identities * 260);
    write!(
        s,
        r#"{{"schema_version":1,"tenant_id":"{}","tenant_name":"tenant{t}.example.com","scanned_at":"{scanned_at}","identities":["#,
        tenant.tenant_id
    )
    .expect("fmt");
    for (i, id) in tenant.ids.iter().enumerate() {
        let (last, risk) = if risky.contains(&i) {
            (&stale, 90)
        } else {
            (&fresh, 0)
        };
        if i > 0 {
            s.push(',');
        }
        write!(
            s,
            r#"{{"id":"{id}","user_principal_name":"{}","display_name":"User {i} of tenant {t}","user_type":"Member","account_enabled":true,"last_sign_in":"{last}","roles":[],"groups":[],"risk_score":{risk},"mfa_registered":true}}"#,
            upn(t, i)
        )
        .expect("fmt");
    }
    let affected: Vec<String> = tenant.ids[risky]
        .iter()
        .map(|id| format!("\"{id}\""))
        .collect();
    let affected = affected.join(",");
    write!(
        s,
        r#"],"findings":[{{"id":"ZS-STALE-003","title":"Stale accounts","severity":"high","category":"bench","recommendation":"disable","affected_identities":[{affected}]}},{{"id":"ZS-RISK-005","title":"High-risk users with active sessions","severity":"high","category":"bench","recommendation":"revoke","affected_identities":[{affected}]}}]}}"#
    )
    .expect("fmt");
    s
}

/// Writes every tenant's scan of this tick (atomically: written aside, renamed).
pub fn write_scans(ws: &Path, tenants: &[Tenant], size: Size, tick: usize, scanned_at: &str) {
    for (t, tenant) in tenants.iter().enumerate() {
        let dir = ws.join("scans").join(&tenant.name);
        std::fs::create_dir_all(&dir).expect("scan dir");
        let tmp = dir.join(".scan.json.tmp");
        std::fs::write(&tmp, scan(t, tenant, size, tick, scanned_at)).expect("write scan");
        std::fs::rename(&tmp, dir.join("scan.json")).expect("rename scan");
    }
}

/// The two shipped rules the scans trigger, without the stale rule's own
/// approval mode (so that enforce mode executes), and no exceptions.
pub fn policies(ws: &Path) {
    let pol = ws.join("policies");
    std::fs::create_dir_all(&pol).expect("policies");
    for f in [
        "stale-accounts-disable.rhai",
        "high-risk-revoke-sessions.rhai",
    ] {
        let text = std::fs::read_to_string(util::repo().join("policies").join(f)).expect("rule");
        let text = text.replace("        mode: \"approval\",\n", "");
        std::fs::write(pol.join(f), text).expect("write rule");
    }
}

/// The config of instance `name`: every tenant, enforce mode, one store.
pub fn config(tenants: &[Tenant], store_url: &str, name: &str, quick: bool) -> String {
    let mut s = format!(
        r#"mode = "enforce"
policies_dir = "policies"
[store]
url = "{store_url}"
[guardrails]
max_actions_per_run = 1000
max_actions_percent = 100.0
[daemon]
schedule = "*/{} * * * * *"
catch_up = false
lease_secs = {LEASE_SECS}
instance = "{name}"
shutdown_grace_secs = 10
"#,
        period_secs(quick)
    );
    for t in tenants {
        write!(
            s,
            r#"[[tenant]]
name = "{}"
tenant_id = "{}"
source = {{ dir = "scans/{}" }}
[tenant.graph]
authority = "{base}"
graph_url = "{base}"
client_id = "{CLIENT}"
client_secret_file = "secret"
"#,
            t.name,
            t.tenant_id,
            t.name,
            base = t.fake.base_url()
        )
        .expect("fmt");
    }
    s
}

/// The PostgreSQL server to use: `BENCH_POSTGRES_URL` or the local default.
pub fn admin_url() -> String {
    std::env::var("BENCH_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Creates a fresh database; its URL, or why not.
pub async fn create_database(admin: &str) -> Result<String, String> {
    use sqlx::Connection;
    let mut c = tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(admin))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let db = format!(
        "entra_bench_tenants_{}",
        chrono::Utc::now().format("%Y%m%d%H%M%S")
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&mut c)
        .await
        .map_err(|e| e.to_string())?;
    let (base, _) = admin.rsplit_once('/').ok_or("no database in the URL")?;
    Ok(format!("{base}/{db}"))
}

/// The daemon binary: the one under test, or `BENCH_TENANTS_BIN` (to measure
/// another build, e.g. the daemon before a change, with the same bench).
pub fn daemon_bin() -> PathBuf {
    std::env::var_os("BENCH_TENANTS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(util::bin)
}

/// A daemon instance, started from its own config in the work directory.
pub struct Instance {
    pub name: String,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Instance {
    /// Starts `entra-remediator daemon` and waits for "daemon ready" in its log.
    pub fn start(ws: &Path, name: &str) -> Instance {
        let log = ws.join(format!("daemon-{name}.log"));
        let child = Command::new(daemon_bin())
            .current_dir(ws)
            .env_remove("ENTRA_REMEDIATOR_CONFIG")
            .env_remove("NOTIFY_SOCKET")
            .args([
                "--config",
                &format!("config-{name}.toml"),
                "--log",
                "info",
                "daemon",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn daemon");
        let mut me = Instance {
            name: name.into(),
            child: Some(child),
            log,
        };
        let t = Instant::now();
        while !std::fs::read_to_string(&me.log)
            .unwrap_or_default()
            .contains("daemon ready")
        {
            if let Some(s) = me.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("instance {name} exited ({s}): {}", me.log_tail());
            }
            assert!(t.elapsed() < Duration::from_secs(120), "{name} not ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        me
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The end of its log, for a failure message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Sends a signal; SIGKILL leaves its leases to expire.
    pub fn signal(&mut self, sig: libc::c_int) {
        if let Some(c) = &self.child {
            // SAFETY: kill on our own child's pid.
            unsafe {
                libc::kill(c.id() as libc::pid_t, sig);
            }
        }
    }

    /// SIGTERM, then waits for it to exit.
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

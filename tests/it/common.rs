//! Shared test support: a temporary workspace with a config, rules and scans,
//! scan builders, and a runner for the real binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

/// The tenant id every test scan uses.
pub const TENANT: &str = "11111111-2222-3333-4444-555555555555";
/// Global Administrator role template id.
pub const GA: &str = "62e90394-69f5-4237-9190-012177145e10";

/// A GUID made from a number, readable in test output.
pub fn guid(n: u32) -> String {
    format!("00000000-0000-0000-0000-{n:012x}")
}

/// A member identity with sensible defaults; tweak the JSON as needed.
pub fn ident(n: u32, upn: &str) -> Value {
    json!({
        "id": guid(n),
        "user_principal_name": upn,
        "display_name": upn.split('@').next().unwrap_or(upn),
        "user_type": "Member",
        "account_enabled": true,
        "last_sign_in": "2026-11-19T06:00:00Z",
        "roles": [],
        "groups": []
    })
}

/// A guest identity.
pub fn guest(n: u32, upn: &str) -> Value {
    let mut v = ident(n, upn);
    v["user_type"] = json!("Guest");
    v
}

/// Adds an active Global Administrator assignment.
pub fn with_ga(mut v: Value, assignment: &str) -> Value {
    v["roles"].as_array_mut().unwrap().push(json!({
        "assignment_id": assignment,
        "role_definition_id": GA,
        "role_name": "Global Administrator",
        "directory_scope_id": "/",
        "assignment_type": "active"
    }));
    v
}

/// Adds a group membership.
pub fn with_group(mut v: Value, gid: u32, name: &str, dynamic: bool, synced: bool) -> Value {
    v["groups"].as_array_mut().unwrap().push(json!({
        "id": guid(gid), "display_name": name, "dynamic": dynamic, "on_premises_synced": synced
    }));
    v
}

/// A finding affecting the given identity numbers.
pub fn finding(id: &str, severity: &str, affected: &[u32]) -> Value {
    json!({
        "id": id,
        "title": format!("Finding {id}"),
        "severity": severity,
        "category": "test",
        "recommendation": "fix it",
        "affected_identities": affected.iter().map(|n| guid(*n)).collect::<Vec<_>>()
    })
}

/// A whole scan document.
pub fn scan(scanned_at: &str, identities: Vec<Value>, findings: Vec<Value>) -> Value {
    json!({
        "schema_version": 1,
        "tenant_id": TENANT,
        "tenant_name": "Test Tenant",
        "scanned_at": scanned_at,
        "identities": identities,
        "findings": findings
    })
}

/// The current time as RFC 3339, for scans that must be fresh.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339()
}

/// A rule file proposing `action_expr` for every identity of the given finding.
pub fn rule(name: &str, finding: &str, action_expr: &str) -> String {
    format!(
        r#"fn metadata() {{ #{{ name: "{name}", description: "test rule {name}", findings: ["{finding}"] }} }}
fn evaluate(finding, identity, tenant) {{ {action_expr} }}
"#
    )
}

/// A temporary workspace: config, policies/, scans/, and the SQLite file.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    /// Extra TOML appended to the config (top-level keys before tables).
    pub top: String,
    /// Extra TOML tables appended to the config.
    pub tables: String,
    /// Extra keys for the tenant table.
    pub tenant_extra: String,
    /// The `[tenant.graph]` table: by default an unreachable tenant whose secret
    /// variable is unset, so nothing is ever sent unless a test points it at a fake.
    pub graph: String,
}

/// The default `[tenant.graph]`: nothing listens there and its secret is unset.
pub const UNREACHABLE_GRAPH: &str = "[tenant.graph]\nauthority = \"http://127.0.0.1:9\"\ngraph_url = \"http://127.0.0.1:9\"\nclient_id = \"00000000-0000-0000-0000-0000000000aa\"\nclient_secret_env = \"ENTRA_TEST_UNSET_SECRET\"\n";

/// A `[tenant.graph]` table for a fake tenant at `base` with a client secret file.
pub fn graph_table(base: &str, client_id: &str, secret_file: &str, extra: &str) -> String {
    format!(
        "[tenant.graph]\nauthority = \"{base}\"\ngraph_url = \"{base}\"\nclient_id = \"{client_id}\"\nclient_secret_file = \"{secret_file}\"\nmax_retry_secs = 20\n{extra}\n"
    )
}

impl Workspace {
    pub fn new() -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("policies/tests")).unwrap();
        std::fs::create_dir_all(dir.path().join("scans")).unwrap();
        let ws = Workspace {
            dir,
            top: String::new(),
            tables: String::new(),
            tenant_extra: String::new(),
            graph: UNREACHABLE_GRAPH.into(),
        };
        ws.write_config();
        ws
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join("config.toml")
    }

    pub fn db_path(&self) -> PathBuf {
        self.path().join("history.db")
    }

    /// Rewrites config.toml from the current settings.
    pub fn write_config(&self) {
        let text = format!(
            r#"{top}
policies_dir = "policies"
[store]
url = "sqlite://history.db"
{tables}
[[tenant]]
name = "test"
tenant_id = "{TENANT}"
source = {{ dir = "scans" }}
{extra}
{graph}
"#,
            top = self.top,
            tables = self.tables,
            extra = self.tenant_extra,
            graph = self.graph
        );
        std::fs::write(self.config_path(), text).unwrap();
    }

    pub fn set_top(&mut self, top: &str) {
        self.top = top.to_string();
        self.write_config();
    }

    pub fn set_tables(&mut self, tables: &str) {
        self.tables = tables.to_string();
        self.write_config();
    }

    pub fn set_tenant_extra(&mut self, extra: &str) {
        self.tenant_extra = extra.to_string();
        self.write_config();
    }

    pub fn set_graph(&mut self, graph: &str) {
        self.graph = graph.to_string();
        self.write_config();
    }

    pub fn add_rule(&self, file: &str, text: &str) {
        std::fs::write(self.path().join("policies").join(file), text).unwrap();
    }

    pub fn add_scan(&self, file: &str, scan: &Value) -> PathBuf {
        let p = self.path().join("scans").join(file);
        std::fs::write(&p, serde_json::to_vec_pretty(scan).unwrap()).unwrap();
        p
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path().join(rel);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Runs the binary with `--config` set to this workspace's config.
    pub fn cli(&self, args: &[&str]) -> Output {
        let cfg = self.config_path();
        let mut full = vec!["--config", cfg.to_str().unwrap()];
        full.extend_from_slice(args);
        run_bin(self.path(), &full)
    }

    /// Runs `history --format json` and parses the events.
    pub fn events(&self) -> Vec<Value> {
        let out = self.cli(&["history", "--format", "json"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.json_lines()
    }

    /// Runs `approvals list --all --format json` and parses the actions.
    pub fn actions(&self) -> Vec<Value> {
        let out = self.cli(&["approvals", "list", "--all", "--format", "json"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.json_lines()
    }
}

/// What the binary did.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect()
    }

    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs the real binary in `cwd`.
pub fn run_bin(cwd: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_entra-remediator"))
        .args(args)
        .current_dir(cwd)
        .env_remove("ENTRA_REMEDIATOR_CONFIG")
        .env("USER", "tester")
        .output()
        .unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The repository root (for the shipped config, policies and example).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The operating-system user the CLI records beside `--by` (this test process
/// runs it as the same user, in the same login session).
pub fn cli_os_user() -> String {
    entra_remediator::approval::os_user()
}

/// The executor's read of users by id: `$filter=id in (...)`, as sent (encoded).
pub const ID_IN: &str = "$filter=id%20in%20(";

/// Whether `r` is the executor's read of up to 15 users by id
/// (`GET /users?$filter=id in ('a','b',...)`).
pub fn is_users_read(r: &fake_entra::RecordedRequest) -> bool {
    r.method == "GET"
        && r.path == "/v1.0/users"
        && r.query.as_deref().is_some_and(|q| q.contains(ID_IN))
}

/// The ids a read of users by id asked for (GUIDs: nothing in them is encoded).
pub fn users_read_ids(r: &fake_entra::RecordedRequest) -> Vec<String> {
    let q = r.query.as_deref().unwrap_or("");
    let list = q.split_once(ID_IN).map_or("", |(_, l)| l);
    let list = list.split_once(')').map_or("", |(l, _)| l);
    list.split(',')
        .filter_map(|v| v.strip_prefix("%27")?.strip_suffix("%27"))
        .map(str::to_string)
        .collect()
}

/// Whether the fake received `r` as a write: a Graph request or `$batch` item
/// that is not a read (a GET), nor the token endpoint, nor an envelope.
pub fn is_write(r: &fake_entra::RecordedRequest) -> bool {
    r.method != "GET" && !r.path.ends_with("/$batch") && !r.path.contains("/oauth2/")
}

/// The app registration the fake-tenant tests use.
pub const CLIENT: &str = "00000000-0000-0000-0000-00000000c11e";
/// Its client secret.
pub const SECRET: &str = "test-secret-value-0123456789";

/// A plain (assigned, cloud-only, security) group in the fake tenant.
pub fn fake_group(n: u32, name: &str) -> fake_entra::Group {
    fake_entra::Group {
        id: guid(n),
        display_name: name.into(),
        dynamic: false,
        mail_enabled: false,
        security_enabled: true,
        on_premises_sync_enabled: false,
        is_assignable_to_role: false,
    }
}

/// A fake tenant with our app registered and a workspace in enforce mode
/// pointing at it: `tables` is TOML for `[guardrails]`, `[protected]` and so on,
/// `graph_extra` more `[tenant.graph]` keys.
pub async fn enforce_setup(tables: &str, graph_extra: &str) -> (fake_entra::FakeTenant, Workspace) {
    let fake = fake_entra::FakeTenant::start(TENANT).await;
    fake.register_app_secret(CLIENT, SECRET);
    let mut ws = Workspace::new();
    ws.set_top("mode = \"enforce\"");
    ws.set_tables(tables);
    ws.write("secret", SECRET);
    ws.set_graph(&graph_table(
        &fake.base_url(),
        CLIENT,
        "secret",
        graph_extra,
    ));
    (fake, ws)
}

impl Workspace {
    /// Runs the binary like `cli`, off the async runtime's worker threads.
    pub async fn cli_async(&self, args: &[&str]) -> Output {
        let dir = self.path().to_path_buf();
        let cfg = self.config_path();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let mut full = vec!["--config".to_string(), cfg.to_str().unwrap().to_string()];
            full.extend(args);
            let refs: Vec<&str> = full.iter().map(String::as_str).collect();
            run_bin(&dir, &refs)
        })
        .await
        .unwrap()
    }
}

//! Configuration: bad config is a clear error naming key and line and changes
//! nothing; the shipped example works on a fresh copy as the README says.

use crate::common::*;

fn bad_config(text: &str, needles: &[&str]) {
    let ws = Workspace::new();
    std::fs::write(ws.config_path(), text).unwrap();
    for cmd in [&["config", "check"][..], &["run", "--once"][..]] {
        let out = ws.cli(cmd);
        assert_eq!(out.code, 1, "{cmd:?}: {}", out.all());
        for n in needles {
            assert!(
                out.stderr.contains(n),
                "{cmd:?}: missing {n:?} in {}",
                out.stderr
            );
        }
        assert!(!ws.db_path().exists(), "a bad config created the store");
    }
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    bad_config(
        "mode = \"dry-run\"\n[guardrails]\nmax_actions = 5\n",
        &["config.toml", "line 3", "unknown field `max_actions`"],
    );
}

#[test]
fn a_wrong_mode_is_refused() {
    bad_config("mode = \"yolo\"\n", &["line 1", "unknown variant `yolo`"]);
}

#[test]
fn a_bad_duration_is_refused() {
    bad_config(
        "approval_ttl = \"tomorrow\"\n",
        &["line 1", "invalid duration \"tomorrow\""],
    );
}

#[test]
fn a_tenant_id_that_is_not_a_guid_is_refused() {
    bad_config(
        "[[tenant]]\nname = \"x\"\ntenant_id = \"contoso\"\nsource = { dir = \"scans\" }\n",
        &["tenant[0].tenant_id", "\"contoso\" is not a GUID"],
    );
}

#[test]
fn a_tenant_needs_exactly_one_source() {
    bad_config(
        &format!(
            "[[tenant]]\nname = \"x\"\ntenant_id = \"{TENANT}\"\nsource = {{ dir = \"a\", url = \"https://b\" }}\n"
        ),
        &["tenant[0].source", "exactly one of dir or url"],
    );
}

#[test]
fn duplicate_tenant_names_and_bad_store_urls_are_refused() {
    let t =
        format!("[[tenant]]\nname = \"x\"\ntenant_id = \"{TENANT}\"\nsource = {{ dir = \"a\" }}\n");
    bad_config(&format!("{t}{t}"), &["used twice"]);
    bad_config(
        "[store]\nurl = \"mysql://x\"\n",
        &["store.url", "sqlite:// or postgres://"],
    );
}

#[test]
fn a_missing_config_file_is_named() {
    let ws = Workspace::new();
    let out = run_bin(ws.path(), &["--config", "nope.toml", "run", "--once"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("cannot read config nope.toml"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_config_path_comes_from_the_environment_when_not_given() {
    let ws = Workspace::new();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_entra-remediator"))
        .args(["config", "check"])
        .current_dir(ws.path())
        .env("ENTRA_REMEDIATOR_CONFIG", ws.config_path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (1 tenant(s)"));
}

#[test]
fn help_explains_the_commands_to_a_newcomer() {
    let out = run_bin(&repo(), &["--help"]);
    assert_eq!(out.code, 0);
    for cmd in [
        "plan",
        "run",
        "approvals",
        "history",
        "audit",
        "policy",
        "config",
        "dry-run",
    ] {
        assert!(
            out.stdout.contains(cmd),
            "--help lacks {cmd}: {}",
            out.stdout
        );
    }
    let out = run_bin(&repo(), &["run"]);
    assert_eq!(
        out.code, 1,
        "run without --once is a usage error (exit 1: 2 means a refused scan)"
    );
    assert!(out.stderr.contains("--once"));
}

/// Copies the shipped example (config, policies, scan) into a fresh directory.
fn example_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let copy = |rel: &str| {
        let src = repo().join(rel);
        let dst = dir.path().join(rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(src, dst).unwrap();
    };
    copy("config.example.toml");
    copy("examples/scans/contoso-2026-11-20.json");
    for sub in ["policies", "policies/tests"] {
        for e in std::fs::read_dir(repo().join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                copy(&format!(
                    "{sub}/{}",
                    p.file_name().unwrap().to_str().unwrap()
                ));
            }
        }
    }
    dir
}

#[test]
fn the_readme_example_runs_a_dry_run_and_writes_history() {
    let dir = example_copy();
    let out = run_bin(
        dir.path(),
        &["run", "--once", "--config", "config.example.toml"],
    );
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stderr.contains("mode dry-run"), "{}", out.stderr);
    assert!(out.stdout.contains("planned"), "{}", out.stdout);
    // The break-glass account is in the findings and protected.
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains("breakglass01@contoso.onmicrosoft.com") && l.contains("refused")),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains(" ready "),
        "dry-run must not make anything ready: {}",
        out.stdout
    );
    assert!(dir.path().join("entra-remediator.db").exists());
    let out = run_bin(
        dir.path(),
        &["audit", "verify", "--config", "config.example.toml"],
    );
    assert_eq!(out.code, 0, "{}", out.all());
    let out = run_bin(
        dir.path(),
        &["config", "check", "--config", "config.example.toml"],
    );
    assert_eq!(out.code, 0, "{}", out.all());
}

#[test]
fn a_tenant_that_may_act_needs_a_graph_section() {
    bad_config(
        &format!(
            "mode = \"approval\"\n[[tenant]]\nname = \"x\"\ntenant_id = \"{TENANT}\"\nsource = {{ dir = \"scans\" }}\n"
        ),
        &["tenant[0].graph", "no [tenant.graph] section"],
    );
    bad_config(
        &format!(
            "[[tenant]]\nname = \"x\"\ntenant_id = \"{TENANT}\"\nsource = {{ dir = \"scans\" }}\n[tenant.graph]\nclient_id = \"{TENANT}\"\nclient_secret_file = \"a\"\nclient_secret_env = \"B\"\n"
        ),
        &[
            "tenant[0].graph.client_secret_file",
            "exactly one credential",
        ],
    );
    bad_config(
        &format!(
            "[[tenant]]\nname = \"x\"\ntenant_id = \"{TENANT}\"\nsource = {{ dir = \"scans\" }}\n[tenant.graph]\nclient_id = \"{TENANT}\"\nclient_secret_env = \"B\"\nbatch_size = 50\n"
        ),
        &["tenant[0].graph.batch_size", "1 to 20"],
    );
}

#[test]
fn a_schedule_that_never_fires_is_refused() {
    bad_config(
        "[daemon]\nschedule = \"0 0 0 30 2 *\"\n",
        &["daemon.schedule", "never fires"],
    );
    bad_config(
        "[daemon]\nschedule = \"every hour\"\n",
        &["daemon.schedule", "not a cron schedule"],
    );
}

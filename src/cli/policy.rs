//! `policy check|test` and `config check`: rule files and the configuration,
//! checked without touching the store.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::args::PolicyCmd;
use crate::config::{Config, RuleLimits};
use crate::policy::{RuleSet, rule_test};

/// `config check`: parses and validates the config, its rules and exceptions.
pub(super) fn config_check(config: &Path) -> Result<i32> {
    let cfg = Config::load(config)?;
    let (rules, exceptions) = crate::service::run::load_rules(&cfg)?;
    println!(
        "{}: OK ({} tenant(s), {} rule(s) in {}, {} exception(s), store {})",
        config.display(),
        cfg.tenants.len(),
        rules.rules.len(),
        cfg.policies_dir.display(),
        exceptions.items.len(),
        cfg.store.url
    );
    Ok(0)
}

fn load_rules_for(config: &Path, dir: Option<PathBuf>) -> Result<(PathBuf, RuleSet)> {
    // With an explicit DIR the config is optional (its rule limits apply if present).
    let (dir, limits) = match dir {
        Some(d) => {
            let limits = if config.exists() {
                Config::load(config)?.rules
            } else {
                RuleLimits::default()
            };
            (d, limits)
        }
        None => {
            let cfg = Config::load(config)?;
            (cfg.policies_dir.clone(), cfg.rules.clone())
        }
    };
    let rules = RuleSet::load(&dir, &limits)?;
    Ok((dir, rules))
}

/// `policy check` and `policy test`.
pub(super) fn policy(config: &Path, cmd: PolicyCmd) -> Result<i32> {
    match cmd {
        PolicyCmd::Check { dir } => check(config, dir),
        PolicyCmd::Test { dir } => test(config, dir),
    }
}

fn check(config: &Path, dir: Option<PathBuf>) -> Result<i32> {
    let explicit_dir = dir.is_some();
    let (dir, rules) = load_rules_for(config, dir)?;
    // A rules directory checked on its own has its optional exceptions.toml;
    // otherwise the config says where the exceptions are.
    let source = if explicit_dir {
        crate::exceptions::ExceptionsSource {
            path: dir.join("exceptions.toml"),
            configured_in: None,
        }
    } else {
        crate::exceptions::ExceptionsSource::from_config(&Config::load(config)?)
    };
    crate::exceptions::Exceptions::load_from(&source)?
        .check_rules(rules.rules.iter().map(|r| r.name.as_str()))?;
    for w in rules.rules.iter().flat_map(|r| &r.warnings) {
        eprintln!("warning: {w}");
    }
    for r in &rules.rules {
        println!(
            "ok  {:<40} {}{}{}",
            r.name,
            r.file.display(),
            r.mode.map(|m| format!(" (mode {m})")).unwrap_or_default(),
            if r.enabled { "" } else { " (disabled)" }
        );
    }
    println!("{} rule file(s) OK in {}", rules.rules.len(), dir.display());
    Ok(0)
}

fn test(config: &Path, dir: Option<PathBuf>) -> Result<i32> {
    let (dir, rules) = load_rules_for(config, dir)?;
    let outcomes = rule_test::run_dir(&dir, &rules)?;
    let failed = outcomes.iter().filter(|o| !o.problems.is_empty()).count();
    for o in &outcomes {
        if o.problems.is_empty() {
            println!("PASS {} — {}", o.file.display(), o.description);
        } else {
            println!("FAIL {} — {}", o.file.display(), o.description);
            for p in &o.problems {
                println!("     {p}");
            }
        }
    }
    println!("{} passed, {} failed", outcomes.len() - failed, failed);
    Ok(if failed > 0 || outcomes.is_empty() {
        1
    } else {
        0
    })
}

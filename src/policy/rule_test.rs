//! `policy test`: rule test cases kept beside the rules in `tests/*.json`, each a
//! small scan and the exact set of actions the rules must propose for it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::{Evaluation, PolicyError, RuleSet};
use crate::domain::ActionKind;
use crate::scan::Scan;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    description: String,
    #[serde(default)]
    rules: Option<Vec<String>>,
    scan: serde_json::Value,
    expect: Vec<Expected>,
}

#[derive(Deserialize, Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
struct Expected {
    identity: String,
    action: ActionKind,
    rule: String,
    #[serde(default)]
    targets: Vec<String>,
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} on {} by {}", self.action, self.identity, self.rule)?;
        if !self.targets.is_empty() {
            write!(f, " targets {:?}", self.targets)?;
        }
        Ok(())
    }
}

/// The result of one rule test file.
#[derive(Debug)]
pub struct TestOutcome {
    /// The test file.
    pub file: PathBuf,
    /// Its description.
    pub description: String,
    /// What did not match; empty when the test passed.
    pub problems: Vec<String>,
}

/// Runs every `tests/*.json` beside the rules in `dir` against `rules`.
pub fn run_dir(dir: &Path, rules: &RuleSet) -> Result<Vec<TestOutcome>, PolicyError> {
    let tdir = dir.join("tests");
    let mut files = Vec::new();
    let entries = std::fs::read_dir(&tdir).map_err(|e| PolicyError::Read {
        path: tdir.clone(),
        message: e.to_string(),
    })?;
    for e in entries {
        let p = e
            .map_err(|e| PolicyError::Read {
                path: tdir.clone(),
                message: e.to_string(),
            })?
            .path();
        if p.extension().and_then(|x| x.to_str()) == Some("json") {
            files.push(p);
        }
    }
    files.sort();
    Ok(files.into_iter().map(|f| run_file(&f, rules)).collect())
}

fn run_file(file: &Path, rules: &RuleSet) -> TestOutcome {
    let mut outcome = TestOutcome {
        file: file.to_path_buf(),
        description: String::new(),
        problems: Vec::new(),
    };
    if let Err(problem) = check_file(file, rules, &mut outcome) {
        outcome.problems.push(problem);
    }
    outcome
}

/// Reads the test file, evaluates its scan and records every mismatch in
/// `outcome`; a problem that stops the test is returned as the error.
fn check_file(file: &Path, rules: &RuleSet, outcome: &mut TestOutcome) -> Result<(), String> {
    let tf = read_test(file)?;
    outcome.description = tf.description.clone();
    let scan_bytes = tf.scan.to_string();
    let scan = Scan::from_slice(scan_bytes.as_bytes(), &format!("{} (scan)", file.display()))
        .map(Arc::new)
        .map_err(|e| e.to_string())?;
    for n in tf.rules.iter().flatten() {
        if !rules.rules.iter().any(|r| &r.name == n) {
            outcome
                .problems
                .push(format!("names rule {n:?}, which does not exist"));
        }
    }
    let eval = rules
        .evaluate(&scan, tf.rules.as_deref())
        .map_err(|e| e.to_string())?;
    for f in &eval.failures {
        outcome.problems.push(format!(
            "rule {} failed for identity {}: {}",
            f.rule, f.identity_id, f.message
        ));
    }
    compare(&proposed(&scan, &eval), expected(tf.expect), outcome);
    Ok(())
}

/// Parses a test file; the error names the JSON path, line and column.
fn read_test(file: &Path) -> Result<TestFile, String> {
    let text = std::fs::read(file).map_err(|e| format!("cannot read: {e}"))?;
    let mut de = serde_json::Deserializer::from_slice(&text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        format!(
            "{}:{}:{}: at {path}: {inner}",
            file.display(),
            inner.line(),
            inner.column()
        )
    })
}

/// What the rules proposed, in the shape of the expectations.
fn proposed(scan: &Scan, eval: &Evaluation) -> BTreeSet<Expected> {
    eval.proposals
        .iter()
        .map(|p| Expected {
            identity: scan.identities[p.identity].id.0.to_string(),
            action: p.kind,
            rule: p.rule.clone(),
            targets: p.targets.clone(),
        })
        .collect()
}

/// The expectations, with targets sorted as rules' actions sort them.
fn expected(expect: Vec<Expected>) -> BTreeSet<Expected> {
    expect
        .into_iter()
        .map(|mut e| {
            e.targets.sort();
            e
        })
        .collect()
}

/// Records what was expected but not proposed, then what was proposed but not expected.
fn compare(got: &BTreeSet<Expected>, want: BTreeSet<Expected>, outcome: &mut TestOutcome) {
    for missing in want.difference(got) {
        outcome
            .problems
            .push(format!("expected but not proposed: {missing}"));
    }
    for extra in got.difference(&want) {
        outcome
            .problems
            .push(format!("proposed but not expected: {extra}"));
    }
}

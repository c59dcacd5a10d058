//! Rule files: loading and checking a directory of Rhai rules once, then
//! evaluating them for every (finding, identity) pair of a scan.

mod api;
mod compile;
mod props;
pub mod rule_test;
mod sandbox;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rhai::{AST, CallFnOptions, Dynamic, Engine, EvalAltResult, Position, Scope};
use sha2::{Digest, Sha256};

use crate::config::RuleLimits;
use crate::domain::ActionKind;
use crate::domain::Mode;
use crate::scan::Scan;

use api::{AttributeCache, FindingRef, IdentityRef, RuleAction};

/// One problem in one rule file, with its place.
#[derive(Debug, Clone)]
pub struct RuleFileError {
    /// The rule file.
    pub file: PathBuf,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for RuleFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        } else {
            write!(f, "{}: {}", self.file.display(), self.message)
        }
    }
}

/// Why a rule set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The directory could not be listed or a file read.
    #[error("cannot read rules in {path}: {message}")]
    Read {
        /// Directory or file.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// One or more rule files are invalid; the whole set is refused.
    #[error("{} invalid rule file(s):\n{}", .0.len(), .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<RuleFileError>),
    /// The thread that runs rules could not be started or stopped unexpectedly.
    #[error("rule evaluation failed: {0}")]
    Thread(String),
}

/// One compiled rule file.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique rule name from its metadata.
    pub name: String,
    /// What it does, for people.
    pub description: String,
    /// Disabled rules are loaded and checked but not evaluated.
    pub enabled: bool,
    /// A mode that can only make runs stricter.
    pub mode: Option<Mode>,
    /// Only evaluated for these finding ids (all when empty).
    pub findings: BTreeSet<String>,
    /// The file it came from.
    pub file: PathBuf,
    /// Problems worth a look that do not refuse the rule (unknown properties).
    pub warnings: Vec<RuleFileError>,
    /// Where `fn evaluate` is, for errors that have no place of their own.
    evaluate_at: Place,
    ast: Arc<AST>,
}

/// A compiled, checked set of rules with the engine that runs them.
pub struct RuleSet {
    engine: Arc<Engine>,
    /// The rules, sorted by file name.
    pub rules: Vec<Rule>,
    /// SHA-256 over the rule files' names and contents, recorded with each run.
    pub hash: String,
    timeout: Duration,
    /// Stack of the threads rules run on, sized for `rules.max_call_depth`.
    stack: usize,
}

/// An action a rule proposed, before guardrails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// The rule's name.
    pub rule: String,
    /// The finding it was evaluated for.
    pub finding: String,
    /// Index of the identity in the scan.
    pub identity: usize,
    /// The action.
    pub kind: ActionKind,
    /// Role assignment ids or group ids, for the removal actions.
    pub targets: Vec<String>,
    /// Why, in the rule's words.
    pub reason: String,
}

/// A rule that failed for one identity; recorded, and the other rules go on.
#[derive(Debug, Clone)]
pub struct RuleFailure {
    /// The rule's name.
    pub rule: String,
    /// The finding.
    pub finding: String,
    /// The identity's object id.
    pub identity_id: String,
    /// What went wrong, with the file and place.
    pub message: String,
}

/// Everything the rules said about a scan.
#[derive(Debug, Default)]
pub struct Evaluation {
    /// Proposed actions in evaluation order.
    pub proposals: Vec<Proposal>,
    /// Errors and limit hits, one per (rule, finding, identity).
    pub failures: Vec<RuleFailure>,
    /// How many `evaluate` calls were made.
    pub calls: u64,
}

/// Functions that exist in every script without being registered.
const KEYWORD_FUNCTIONS: &[&str] = &[
    "type_of",
    "print",
    "debug",
    "Fn",
    "call",
    "curry",
    "is_shared",
    "is_def_fn",
    "is_def_var",
    "throw",
];

impl RuleSet {
    /// Loads and checks every `*.rhai` file in `dir`; any invalid file refuses the set.
    pub fn load(dir: &Path, limits: &RuleLimits) -> Result<RuleSet, PolicyError> {
        let read = |path: &Path, e: std::io::Error| PolicyError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| read(dir, e))? {
            let path = entry.map_err(|e| read(dir, e))?.path();
            if path.extension().and_then(|e| e.to_str()) == Some("rhai") && path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        let mut sources = Vec::with_capacity(files.len());
        let mut not_text = Vec::new();
        for f in files {
            let bytes = std::fs::read(&f).map_err(|e| read(&f, e))?;
            match String::from_utf8(bytes) {
                Ok(text) => sources.push((f, text)),
                Err(e) => {
                    let (line, column) =
                        crate::text::place_of(e.as_bytes(), e.utf8_error().valid_up_to());
                    not_text.push(RuleFileError {
                        file: f,
                        line,
                        column,
                        message: "not UTF-8 text".into(),
                    });
                }
            }
        }
        if !not_text.is_empty() {
            // Report the other files' problems too.
            if let Err(PolicyError::Invalid(mut more)) = Self::from_sources(sources, limits) {
                not_text.append(&mut more);
            }
            return Err(PolicyError::Invalid(not_text));
        }
        Self::from_sources(sources, limits)
    }

    /// Compiles rules from (file, text) pairs; used by `load` and by tests.
    /// Runs on a rule thread, since compiling calls each rule's `metadata()`.
    pub fn from_sources(
        sources: Vec<(PathBuf, String)>,
        limits: &RuleLimits,
    ) -> Result<RuleSet, PolicyError> {
        let stack = sandbox::stack_size(limits.max_call_depth);
        sandbox::on_rule_thread(stack, || Self::compile_all(sources, limits))
            .map_err(PolicyError::Thread)?
    }

    fn compile_all(
        sources: Vec<(PathBuf, String)>,
        limits: &RuleLimits,
    ) -> Result<RuleSet, PolicyError> {
        let mut engine = sandbox::engine(limits);
        api::register(&mut engine);
        let known: HashSet<String> = engine
            .gen_fn_signatures(true)
            .iter()
            .filter_map(|s| s.split('(').next())
            .map(|s| s.trim().to_string())
            .chain(KEYWORD_FUNCTIONS.iter().map(|s| s.to_string()))
            .collect();
        let timeout = Duration::from_millis(limits.timeout_ms);
        let mut hasher = Sha256::new();
        let mut errors = Vec::new();
        let mut rules: Vec<Rule> = Vec::new();
        for (file, text) in sources {
            hasher.update(
                file.file_name()
                    .map(|n| n.as_encoded_bytes())
                    .unwrap_or_default(),
            );
            hasher.update([0]);
            hasher.update(text.as_bytes());
            hasher.update([0]);
            match compile::compile_rule(&engine, &known, &file, &text, timeout) {
                Ok(rule) => {
                    if let Some(other) = rules.iter().find(|r| r.name == rule.name) {
                        errors.push(RuleFileError {
                            file: file.clone(),
                            line: 0,
                            column: 0,
                            message: format!(
                                "rule name {:?} is already used by {}",
                                rule.name,
                                other.file.display()
                            ),
                        });
                    } else {
                        rules.push(rule);
                    }
                }
                Err(mut e) => errors.append(&mut e),
            }
        }
        if !errors.is_empty() {
            return Err(PolicyError::Invalid(errors));
        }
        Ok(RuleSet {
            engine: Arc::new(engine),
            rules,
            hash: hex::encode(hasher.finalize()),
            timeout,
            stack: sandbox::stack_size(limits.max_call_depth),
        })
    }

    /// Evaluates every enabled rule for every (finding, affected identity) pair,
    /// on a thread whose stack is sized for `rules.max_call_depth`.
    /// Blocking: call it from `spawn_blocking`.
    pub fn evaluate(
        &self,
        scan: &Arc<Scan>,
        only: Option<&[String]>,
    ) -> Result<Evaluation, PolicyError> {
        sandbox::on_rule_thread(self.stack, || self.evaluate_here(scan, only))
            .map_err(PolicyError::Thread)
    }

    fn evaluate_here(&self, scan: &Arc<Scan>, only: Option<&[String]>) -> Evaluation {
        let mut out = Evaluation::default();
        let tenant = Dynamic::from_map(api::tenant_map(scan));
        let attributes = Arc::new(AttributeCache::default());
        let index: HashMap<&str, usize> = scan
            .identities
            .iter()
            .enumerate()
            .map(|(i, id)| (id.id.as_str(), i))
            .collect();
        let rules: Vec<&Rule> = self
            .rules
            .iter()
            .filter(|r| r.enabled && only.is_none_or(|o| o.contains(&r.name)))
            .collect();
        for (fi, finding) in scan.findings.iter().enumerate() {
            let applicable: Vec<&Rule> = rules
                .iter()
                .copied()
                .filter(|r| r.findings.is_empty() || r.findings.contains(&finding.id))
                .collect();
            if applicable.is_empty() {
                continue;
            }
            for affected in &finding.affected_identities {
                let Some(ii) = identity_at(scan, &index, &affected.0) else {
                    continue;
                };
                for rule in &applicable {
                    out.calls += 1;
                    match self.call_evaluate(rule, scan, (fi, ii), (&tenant, &attributes)) {
                        Ok(actions) => {
                            out.proposals.extend(actions.into_iter().map(|a| Proposal {
                                rule: rule.name.clone(),
                                finding: finding.id.clone(),
                                identity: ii,
                                kind: a.kind,
                                targets: a.targets,
                                reason: a.reason,
                            }))
                        }
                        Err(problem) => {
                            out.failures
                                .push(rule.failure(&finding.id, &affected.0, problem));
                        }
                    }
                }
            }
        }
        out
    }

    /// Calls one rule's `evaluate` for (finding index, identity index) under the
    /// wall-clock limit and reads the actions it returned.
    fn call_evaluate(
        &self,
        rule: &Rule,
        scan: &Arc<Scan>,
        (finding, identity): (usize, usize),
        (tenant, attributes): (&Dynamic, &Arc<AttributeCache>),
    ) -> Result<Vec<RuleAction>, (Place, String)> {
        let args = (
            FindingRef {
                scan: scan.clone(),
                idx: finding,
            },
            IdentityRef {
                scan: scan.clone(),
                idx: identity,
                attributes: attributes.clone(),
            },
            tenant.clone(),
        );
        let result = sandbox::with_deadline(self.timeout, || {
            let mut scope = Scope::new();
            self.engine.call_fn_with_options::<Dynamic>(
                CallFnOptions::new().eval_ast(false).rewind_scope(false),
                &mut scope,
                &rule.ast,
                "evaluate",
                args,
            )
        });
        match result {
            Ok(value) => actions_of(value).map_err(|m| (rule.evaluate_at, m)),
            Err(e) => Err(describe(&e, self.timeout, rule.evaluate_at)),
        }
    }
}

impl Rule {
    /// The failure recorded when this rule's `evaluate` went wrong at `place`.
    fn failure(
        &self,
        finding: &str,
        identity_id: &str,
        (place, msg): (Place, String),
    ) -> RuleFailure {
        RuleFailure {
            rule: self.name.clone(),
            finding: finding.to_string(),
            identity_id: identity_id.to_string(),
            message: RuleFileError {
                file: self.file.clone(),
                line: place.0,
                column: place.1,
                message: crate::text::clip(&msg, RULE_ECHO_LIMIT),
            }
            .to_string(),
        }
    }
}

/// The index of an affected identity: the loader guarantees the id exists;
/// matched case-insensitively as it does.
fn identity_at(scan: &Scan, index: &HashMap<&str, usize>, id: &str) -> Option<usize> {
    index.get(id).copied().or_else(|| {
        scan.identities
            .iter()
            .position(|x| x.id.0.eq_ignore_ascii_case(id))
    })
}

/// A (line, column) in a rule file; (0, 0) when unknown.
type Place = (usize, usize);

fn place_of(pos: Position) -> Option<Place> {
    match (pos.line(), pos.position()) {
        (Some(l), c) => Some((l, c.unwrap_or(0))),
        _ => None,
    }
}

/// What went wrong in a rule call and where: the innermost known position (the
/// failing expression inside nested function calls), else `fallback`.
fn describe(e: &EvalAltResult, timeout: Duration, fallback: Place) -> (Place, String) {
    let mut inner = e;
    let mut place = place_of(e.position());
    while let EvalAltResult::ErrorInFunctionCall(_, _, err, _) = inner {
        inner = err;
        place = place_of(inner.position()).or(place);
    }
    let message = match inner {
        EvalAltResult::ErrorTerminated(token, _)
            if token.clone().into_immutable_string().ok().as_deref()
                == Some(sandbox::TIMEOUT_TOKEN) =>
        {
            format!(
                "exceeded the wall-clock limit of {} ms",
                timeout.as_millis()
            )
        }
        EvalAltResult::ErrorTooManyOperations(_) => {
            "too many operations (limit: rules.max_operations)".to_string()
        }
        EvalAltResult::ErrorStackOverflow(_) => {
            "function calls nested too deep (limit: rules.max_call_depth)".to_string()
        }
        EvalAltResult::ErrorDataTooLarge(what, _) => format!(
            "{what} too large (limits: rules.max_string_size, max_array_size, max_map_size)"
        ),
        _ => crate::text::strip_rhai_position(&inner.to_string()),
    };
    (place.unwrap_or(fallback), message)
}

fn actions_of(value: Dynamic) -> Result<Vec<RuleAction>, String> {
    if value.is_unit() {
        return Ok(Vec::new());
    }
    if value.is::<RuleAction>() {
        return value
            .try_cast::<RuleAction>()
            .map(|a| vec![a])
            .ok_or_else(|| "could not read the returned action".to_string());
    }
    if value.is_array() {
        let arr = value
            .into_array()
            .map_err(|t| format!("expected an array, got {t}"))?;
        let mut out = Vec::with_capacity(arr.len());
        for (i, v) in arr.into_iter().enumerate() {
            let t = v.type_name();
            match v.try_cast::<RuleAction>() {
                Some(a) => out.push(a),
                None => {
                    return Err(format!(
                        "evaluate returned an array whose item {i} is a {t}, not an action"
                    ));
                }
            }
        }
        return Ok(out);
    }
    Err(format!(
        "evaluate must return an action, an array of actions or (), not a {}",
        value.type_name()
    ))
}

/// Longest message kept for one rule problem: a message may quote the rule's
/// text or a thrown value, and one rule error is recorded per identity.
const RULE_ECHO_LIMIT: usize = 1000;

//! Compiling one rule file: parse it, check its shape and the functions it calls,
//! then run its `metadata()` and read the rule's name, mode and findings.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rhai::{AST, CallFnOptions, Dynamic, Engine, Map, Position, Scope};

use super::{RULE_ECHO_LIMIT, Rule, RuleFileError, describe, props, sandbox};
use crate::domain::{ActionKind, Mode};

/// The metadata keys a rule may set.
const METADATA_KEYS: [&str; 5] = ["name", "description", "enabled", "mode", "findings"];

/// Compiles and checks one rule file; every problem found is returned.
pub(super) fn compile_rule(
    engine: &Engine,
    known: &HashSet<String>,
    file: &Path,
    text: &str,
    timeout: Duration,
) -> Result<Rule, Vec<RuleFileError>> {
    let ast = engine.compile(text).map_err(|e| {
        vec![pos_err(
            file,
            e.1,
            crate::text::strip_rhai_position(&e.0.to_string()),
        )]
    })?;
    let mut errors = shape_errors(file, &ast);
    errors.append(&mut unknown_calls(known, file, &ast));
    if !errors.is_empty() {
        return Err(errors);
    }
    let warnings = props::check(file, &ast);
    let meta_line = line_of(text, "fn metadata");
    let meta = Metadata {
        file,
        line: meta_line,
        map: run_metadata(engine, &ast, file, meta_line, timeout)?,
    };
    let fields = meta.read()?;
    let evaluate_line = line_of(text, "fn evaluate");
    Ok(Rule {
        name: fields.name,
        description: fields.description,
        enabled: fields.enabled,
        mode: fields.mode,
        findings: fields.findings,
        file: file.to_path_buf(),
        warnings,
        evaluate_at: (evaluate_line, usize::from(evaluate_line > 0)),
        ast: Arc::new(ast),
    })
}

fn pos_err(file: &Path, pos: Position, message: impl Into<String>) -> RuleFileError {
    RuleFileError {
        file: file.to_path_buf(),
        line: pos.line().unwrap_or(0),
        column: pos.position().unwrap_or(0),
        message: crate::text::clip(&message.into(), RULE_ECHO_LIMIT),
    }
}

/// The 1-based line of the first line containing `needle` (0 when none).
/// Kept as a plain number: Rhai positions stop at line 65,535.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map_or(0, |i| i + 1)
}

/// No top-level statements, and both `metadata()` and `evaluate(..)` defined.
fn shape_errors(file: &Path, ast: &AST) -> Vec<RuleFileError> {
    let mut errors = Vec::new();
    if let Some(stmt) = ast.statements().first() {
        errors.push(pos_err(
            file,
            stmt.position(),
            "top-level statements are not run; put everything inside fn metadata() and fn evaluate(finding, identity, tenant)",
        ));
    }
    let has = |name: &str, arity: usize| {
        ast.iter_functions()
            .any(|f| f.name == name && f.params.len() == arity)
    };
    if !has("metadata", 0) {
        errors.push(pos_err(file, Position::NONE, "missing fn metadata()"));
    }
    if !has("evaluate", 3) {
        errors.push(pos_err(
            file,
            Position::NONE,
            "missing fn evaluate(finding, identity, tenant)",
        ));
    }
    errors
}

/// Static check: every called function must exist (catches misspelt action names).
fn unknown_calls(known: &HashSet<String>, file: &Path, ast: &AST) -> Vec<RuleFileError> {
    let script_fns: HashSet<String> = ast.iter_functions().map(|f| f.name.to_string()).collect();
    let mut errors = Vec::new();
    ast.walk(&mut |path| {
        let (name, pos, op) = match path.last() {
            Some(rhai::ASTNode::Expr(rhai::Expr::FnCall(call, pos)))
            | Some(rhai::ASTNode::Expr(rhai::Expr::MethodCall(call, pos)))
            | Some(rhai::ASTNode::Stmt(rhai::Stmt::FnCall(call, pos))) => {
                (call.name.to_string(), *pos, call.op_token.is_some())
            }
            _ => return true,
        };
        if !op && !known.contains(&name) && !script_fns.contains(&name) {
            errors.push(pos_err(
                file,
                pos,
                format!("unknown function or action {name:?}{}", action_hint(&name)),
            ));
        }
        true
    });
    errors
}

/// Lists the actions when an unknown name looks like a misspelt one.
fn action_hint(name: &str) -> String {
    if ActionKind::ALL
        .iter()
        .any(|k| k.as_str().starts_with(&name[..name.len().min(6)]))
    {
        format!(
            "; actions are {}",
            ActionKind::ALL.map(|k| k.as_str()).join(", ")
        )
    } else {
        String::new()
    }
}

/// Calls the rule's `metadata()` (at `line`) under the wall-clock limit; it must
/// return a map.
fn run_metadata(
    engine: &Engine,
    ast: &AST,
    file: &Path,
    line: usize,
    timeout: Duration,
) -> Result<Map, Vec<RuleFileError>> {
    let at = (line, usize::from(line > 0));
    let value = sandbox::with_deadline(timeout, || {
        engine.call_fn_with_options::<Dynamic>(
            CallFnOptions::new().eval_ast(false),
            &mut Scope::new(),
            ast,
            "metadata",
            (),
        )
    })
    .map_err(|e| {
        let ((line, column), m) = describe(&e, timeout, at);
        vec![RuleFileError {
            file: file.to_path_buf(),
            line,
            column,
            message: format!("metadata() failed: {m}"),
        }]
    })?;
    value.try_cast::<Map>().ok_or_else(|| {
        vec![RuleFileError {
            file: file.to_path_buf(),
            line: at.0,
            column: at.1,
            message: "metadata() must return a map #{ name: ..., description: ... }".into(),
        }]
    })
}

/// What `metadata()` returned, with the place its errors are reported at.
struct Metadata<'a> {
    file: &'a Path,
    line: usize,
    map: Map,
}

/// The checked metadata fields of a rule.
struct Fields {
    name: String,
    description: String,
    enabled: bool,
    mode: Option<Mode>,
    findings: BTreeSet<String>,
}

type MetaResult<T> = Result<T, Vec<RuleFileError>>;

impl Metadata<'_> {
    /// Checks the keys, then reads each field in turn.
    fn read(&self) -> MetaResult<Fields> {
        self.check_keys()?;
        Ok(Fields {
            name: self.name()?,
            description: self.description()?,
            enabled: self.enabled()?,
            mode: self.mode()?,
            findings: self.findings()?,
        })
    }

    fn err(&self, message: String) -> Vec<RuleFileError> {
        vec![RuleFileError {
            file: self.file.to_path_buf(),
            line: self.line,
            column: usize::from(self.line > 0),
            message,
        }]
    }

    fn string(&self, key: &str) -> MetaResult<Option<String>> {
        match self.map.get(key) {
            None => Ok(None),
            Some(v) => v
                .clone()
                .into_immutable_string()
                .map(|s| Some(s.to_string()))
                .map_err(|t| self.err(format!("metadata {key} must be a string, not {t}"))),
        }
    }

    fn check_keys(&self) -> MetaResult<()> {
        match self
            .map
            .keys()
            .find(|k| !METADATA_KEYS.contains(&k.as_str()))
        {
            Some(key) => Err(self.err(format!(
                "unknown metadata key {key:?} (allowed: name, description, enabled, mode, findings)"
            ))),
            None => Ok(()),
        }
    }

    fn name(&self) -> MetaResult<String> {
        let name = self
            .string("name")?
            .ok_or_else(|| self.err("metadata needs a name".into()))?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(self.err(format!(
                "rule name {name:?} must be lowercase letters, digits and '-'"
            )));
        }
        Ok(name)
    }

    fn description(&self) -> MetaResult<String> {
        self.string("description")?
            .filter(|d| !d.trim().is_empty())
            .ok_or_else(|| self.err("metadata needs a non-empty description".into()))
    }

    fn enabled(&self) -> MetaResult<bool> {
        match self.map.get("enabled") {
            None => Ok(true),
            Some(v) => v
                .as_bool()
                .map_err(|t| self.err(format!("metadata enabled must be true or false, not {t}"))),
        }
    }

    fn mode(&self) -> MetaResult<Option<Mode>> {
        let Some(m) = self.string("mode")? else {
            return Ok(None);
        };
        Mode::parse(&m).map(Some).ok_or_else(|| {
            self.err(format!(
                "metadata mode {m:?} must be \"dry-run\", \"approval\" or \"enforce\""
            ))
        })
    }

    fn findings(&self) -> MetaResult<BTreeSet<String>> {
        let mut findings = BTreeSet::new();
        let Some(v) = self.map.get("findings") else {
            return Ok(findings);
        };
        let arr = v.clone().into_array().map_err(|t| {
            self.err(format!(
                "metadata findings must be an array of finding ids, not {t}"
            ))
        })?;
        for f in arr {
            let s = f
                .into_immutable_string()
                .map_err(|t| self.err(format!("metadata findings must hold strings, not {t}")))?;
            findings.insert(s.to_string());
        }
        Ok(findings)
    }
}

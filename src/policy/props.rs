//! A static check of property names: reading a key a role or group map does not
//! have (`r.assignment_typ`) yields `()` at run time, so the rule silently never
//! fires. `policy check` warns about property names the known objects lack.
//!
//! The check follows what a rule's `evaluate(finding, identity, tenant)` is handed
//! and the common ways of reaching roles and groups (`for r in identity.roles`,
//! `let gs = identity.groups`); values it cannot follow are not checked.

use std::collections::HashMap;
use std::path::Path;

use rhai::{AST, ASTNode, Expr, Stmt};

use super::RuleFileError;

/// The objects rules are handed, and what they hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Finding,
    Identity,
    Tenant,
    Role,
    Group,
    Roles,
    Groups,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Finding => "finding",
            Kind::Identity => "identity",
            Kind::Tenant => "tenant",
            Kind::Role => "role assignment",
            Kind::Group => "group membership",
            Kind::Roles | Kind::Groups => "array",
        }
    }

    /// The property names of the object (documented in `docs/rules.md`).
    fn properties(self) -> &'static [&'static str] {
        match self {
            Kind::Finding => &[
                "id",
                "title",
                "severity",
                "category",
                "recommendation",
                "documentation",
            ],
            Kind::Identity => &[
                "id",
                "upn",
                "display_name",
                "user_type",
                "account_enabled",
                "risk_score",
                "mfa_registered",
                "last_sign_in",
                "attributes",
                "roles",
                "groups",
            ],
            Kind::Tenant => &["id", "name", "scanned_at"],
            Kind::Role => &[
                "assignment_id",
                "role_definition_id",
                "role_name",
                "directory_scope_id",
                "assignment_type",
                "via_group",
                "permanent",
            ],
            Kind::Group => &[
                "id",
                "display_name",
                "dynamic",
                "on_premises_synced",
                "role_assignable",
            ],
            // Arrays have no properties worth checking here (`len` is a method).
            Kind::Roles | Kind::Groups => &[],
        }
    }

    /// What a property of this object is, when it is itself a known object.
    fn property(self, prop: &str) -> Option<Kind> {
        match (self, prop) {
            (Kind::Identity, "roles") => Some(Kind::Roles),
            (Kind::Identity, "groups") => Some(Kind::Groups),
            _ => None,
        }
    }

    /// What one item of this array is.
    fn item(self) -> Option<Kind> {
        match self {
            Kind::Roles => Some(Kind::Role),
            Kind::Groups => Some(Kind::Group),
            _ => None,
        }
    }
}

/// Warnings for property names the known objects lack, in source order.
pub(crate) fn check(file: &Path, ast: &AST) -> Vec<RuleFileError> {
    let mut out = Vec::new();
    let evaluate =
        ast.clone_functions_only_filtered(|_, _, _, name, arity| name == "evaluate" && arity == 3);
    let Some(params) = evaluate
        .iter_functions()
        .find(|f| f.name == "evaluate" && f.params.len() == 3)
        .map(|f| f.params.iter().map(|p| p.to_string()).collect::<Vec<_>>())
    else {
        return out;
    };
    let mut vars: HashMap<String, Kind> = params
        .into_iter()
        .zip([Kind::Finding, Kind::Identity, Kind::Tenant])
        .collect();
    evaluate.walk(&mut |nodes: &[ASTNode]| {
        match nodes.last() {
            Some(ASTNode::Stmt(Stmt::Var(x, _, _))) => {
                let (name, value, _) = &**x;
                match kind_of(&vars, value) {
                    Some(k) => vars.insert(name.name.to_string(), k),
                    None => vars.remove(name.name.as_str()),
                };
            }
            Some(ASTNode::Stmt(Stmt::For(x, _))) => {
                let (var, _, flow) = &**x;
                match kind_of(&vars, &flow.expr).and_then(Kind::item) {
                    Some(k) => vars.insert(var.name.to_string(), k),
                    None => vars.remove(var.name.as_str()),
                };
            }
            Some(ASTNode::Expr(e)) => {
                if let Some((kind, prop, pos)) = read_property(&vars, e)
                    && !kind.properties().is_empty()
                    && !kind.properties().contains(&prop.as_str())
                {
                    out.push(RuleFileError {
                        file: file.to_path_buf(),
                        line: pos.line().unwrap_or(0),
                        column: pos.position().unwrap_or(0),
                        message: format!(
                            "unknown property {prop:?} of a {} (it reads as (), so a comparison with it is never true); known: {}",
                            kind.name(),
                            kind.properties().join(", ")
                        ),
                    });
                }
            }
            _ => {}
        }
        true
    });
    out.sort_by_key(|e| (e.line, e.column));
    out.dedup_by(|a, b| a.line == b.line && a.column == b.column);
    out
}

/// The known object an expression evaluates to, when it can be told statically.
fn kind_of(vars: &HashMap<String, Kind>, e: &Expr) -> Option<Kind> {
    match e {
        Expr::Variable(x, _, _) => vars.get(x.1.as_str()).copied(),
        Expr::Dot(b, _, _) => {
            let lhs = kind_of(vars, &b.lhs)?;
            match &b.rhs {
                Expr::Property(p, _) => lhs.property(p.2.as_str()),
                _ => None,
            }
        }
        Expr::Index(b, _, _) => kind_of(vars, &b.lhs).and_then(Kind::item),
        _ => None,
    }
}

/// `object.prop` or `object["prop"]` on a known object: (object, prop, place).
fn read_property(vars: &HashMap<String, Kind>, e: &Expr) -> Option<(Kind, String, rhai::Position)> {
    match e {
        Expr::Dot(b, _, _) => {
            let lhs = kind_of(vars, &b.lhs)?;
            // `a.b.c` is Dot(a, Dot(b, c)); `a.b[0]` is Dot(a, Index(b, 0)).
            let first = match &b.rhs {
                Expr::Dot(r, _, _) | Expr::Index(r, _, _) => &r.lhs,
                other => other,
            };
            match first {
                Expr::Property(p, pos) => Some((lhs, p.2.to_string(), *pos)),
                _ => None,
            }
        }
        Expr::Index(b, _, _) => {
            let lhs = kind_of(vars, &b.lhs)?;
            match &b.rhs {
                Expr::StringConstant(s, pos) => Some((lhs, s.to_string(), *pos)),
                _ => None,
            }
        }
        _ => None,
    }
}

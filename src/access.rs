//! Who may do what: the four roles that signed-in people and API tokens hold,
//! the caller a request comes from, and the rules that map a person's object
//! id, UPN or groups to roles. Plain data in and out, no I/O.

use serde::{Deserialize, Serialize};

/// What a caller may do. Every role may read; `Admin` holds all the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads posture, plans and history.
    Viewer,
    /// Requests remediations (which then follow the tenant's mode).
    Operator,
    /// Approves or rejects pending actions.
    Approver,
    /// Everything, including undo.
    Admin,
}

impl Role {
    /// Every role, weakest first.
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Operator, Role::Approver, Role::Admin];

    /// The name used in config and shown in pages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Role::Viewer => 1,
            Role::Operator => 2,
            Role::Approver => 4,
            Role::Admin => 8,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of roles, as granted; `allows` answers what they permit together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Roles(u8);

impl Roles {
    /// No role: may do nothing, not even read.
    pub const NONE: Roles = Roles(0);

    /// The roles in `list`.
    pub fn of(list: &[Role]) -> Roles {
        Roles(list.iter().fold(0, |acc, r| acc | r.bit()))
    }

    /// Adds a role.
    pub fn grant(&mut self, role: Role) {
        self.0 |= role.bit();
    }

    /// Whether these roles permit what `role` permits: admin permits all, and
    /// any role permits reading.
    pub fn allows(self, role: Role) -> bool {
        if self.0 & Role::Admin.bit() != 0 {
            return true;
        }
        match role {
            Role::Viewer => self.0 != 0,
            r => self.0 & r.bit() != 0,
        }
    }

    /// Whether no role is held.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The roles granted, weakest first (for pages and logs).
    pub fn list(self) -> Vec<Role> {
        Role::ALL
            .into_iter()
            .filter(|r| self.0 & r.bit() != 0)
            .collect()
    }
}

/// Which interface a request came through; recorded in history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    /// The browser console, by a signed-in person.
    Console,
    /// The JSON API, by a named token.
    Api,
    /// The command line, by an operating-system user.
    Cli,
}

impl Interface {
    /// The word kept in history.
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Console => "console",
            Interface::Api => "api",
            Interface::Cli => "cli",
        }
    }
}

/// Who a request comes from: a signed-in person, a named API token or the
/// command line's user, with what they may do. Its `name` is what history
/// records as the actor, never a name the request typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The recorded name: a person's UPN, `token:NAME`, or the CLI's `--by`.
    pub name: String,
    /// Where the request came from.
    pub interface: Interface,
    /// What the caller may do.
    pub roles: Roles,
}

impl Caller {
    /// Whether the caller may do what `role` permits.
    pub fn may(&self, role: Role) -> bool {
        self.roles.allows(role)
    }
}

/// The `[console.roles]` table: who holds each role. An entry is an object id
/// (a person's, or a group's: both are GUIDs) or a UPN (it holds an `@`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleRules {
    /// May read.
    pub viewers: Vec<String>,
    /// May request remediations.
    pub operators: Vec<String>,
    /// May approve or reject.
    pub approvers: Vec<String>,
    /// May do everything.
    pub admins: Vec<String>,
}

/// What the identity provider says about a signed-in person, as far as roles go.
#[derive(Debug, Clone, Copy)]
pub struct Claims<'a> {
    /// The person's object id (`oid`).
    pub object_id: &'a str,
    /// The person's UPN (`preferred_username` or `upn`), when sent.
    pub upn: Option<&'a str>,
    /// The group object ids the token lists (`groups`).
    pub groups: &'a [String],
}

impl RoleRules {
    /// The roles a person holds: every role with an entry naming their object
    /// id, their UPN (case-insensitive) or one of their groups.
    pub fn roles_for(&self, who: Claims<'_>) -> Roles {
        let names = |entry: &String| {
            let e = entry.trim();
            if e.contains('@') {
                who.upn.is_some_and(|u| u.eq_ignore_ascii_case(e))
            } else {
                e.eq_ignore_ascii_case(who.object_id)
                    || who.groups.iter().any(|g| g.eq_ignore_ascii_case(e))
            }
        };
        let mut roles = Roles::NONE;
        for (role, entries) in [
            (Role::Viewer, &self.viewers),
            (Role::Operator, &self.operators),
            (Role::Approver, &self.approvers),
            (Role::Admin, &self.admins),
        ] {
            if entries.iter().any(names) {
                roles.grant(role);
            }
        }
        roles
    }

    /// Every entry with the role it grants, for config validation.
    pub fn entries(&self) -> impl Iterator<Item = (Role, &str)> {
        [
            (Role::Viewer, &self.viewers),
            (Role::Operator, &self.operators),
            (Role::Approver, &self.approvers),
            (Role::Admin, &self.admins),
        ]
        .into_iter()
        .flat_map(|(r, v)| v.iter().map(move |e| (r, e.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "11111111-1111-1111-1111-111111111111";
    const SECOPS: &str = "22222222-2222-2222-2222-222222222222";

    fn rules() -> RoleRules {
        RoleRules {
            viewers: vec![SECOPS.into()],
            operators: vec!["Alice@Contoso.com".into()],
            approvers: vec![ALICE.into()],
            admins: vec![],
        }
    }

    #[test]
    fn roles_come_from_object_id_upn_and_groups() {
        let groups = vec![SECOPS.to_uppercase()];
        let r = rules().roles_for(Claims {
            object_id: ALICE,
            upn: Some("alice@contoso.com"),
            groups: &groups,
        });
        assert_eq!(r.list(), vec![Role::Viewer, Role::Operator, Role::Approver]);
        assert!(!r.allows(Role::Admin));
        let bob = rules().roles_for(Claims {
            object_id: "33333333-3333-3333-3333-333333333333",
            upn: Some("bob@contoso.com"),
            groups: &[],
        });
        assert!(bob.is_empty());
        assert!(!bob.allows(Role::Viewer));
    }

    #[test]
    fn a_upn_entry_never_matches_an_object_id_and_admin_allows_all() {
        let r = RoleRules {
            operators: vec![format!("{ALICE}@x")],
            admins: vec![SECOPS.into()],
            ..RoleRules::default()
        };
        let none = r.roles_for(Claims {
            object_id: ALICE,
            upn: None,
            groups: &[],
        });
        assert!(none.is_empty());
        let admin = r.roles_for(Claims {
            object_id: SECOPS,
            upn: None,
            groups: &[],
        });
        assert!(Role::ALL.iter().all(|x| admin.allows(*x)));
        let operator = Roles::of(&[Role::Operator]);
        assert!(operator.allows(Role::Viewer) && !operator.allows(Role::Approver));
    }
}

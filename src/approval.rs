//! Approval rules, as plain data in and out: who may approve, four eyes, expiry,
//! and which actions can never be approved in bulk.

use chrono::{DateTime, Utc};

use crate::access::{Caller, Interface};
use crate::config::ApprovalConfig;
use crate::domain::ActionKind;
use crate::domain::{Action, ActionState};
use crate::store::ApprovalRow;

/// Approve or reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let the action be executed.
    Approve,
    /// Never execute the action.
    Reject,
}

impl Decision {
    /// The word stored in history.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
        }
    }
}

/// Who may decide, and which actions need two approvers.
#[derive(Debug, Clone, Default)]
pub struct ApprovalPolicy {
    /// Allowed approvers; empty means anyone.
    pub approvers: Vec<String>,
    /// Actions needing two distinct approvers.
    pub four_eyes: Vec<ActionKind>,
    /// Two CLI approvals of one action must come from two operating-system users.
    pub distinct_os_users: bool,
}

impl From<&ApprovalConfig> for ApprovalPolicy {
    fn from(c: &ApprovalConfig) -> Self {
        Self {
            approvers: c.approvers.clone(),
            four_eyes: c.four_eyes.clone(),
            distinct_os_users: c.distinct_os_users,
        }
    }
}

/// Where a decision came from: a command-line name is self-declared (`--by`), so
/// the history also keeps what the machine can tell (the OS user); API and
/// console names are the calling token's or signed-in person's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// `cli` or `api`; empty for library callers (recorded as unknown).
    pub interface: &'static str,
    /// The operating-system user who ran the CLI; `None` through the API.
    pub os_user: Option<String>,
}

// Here rather than in `access`, which stays a leaf module that config can use.
impl Caller {
    /// The origin a decision by this caller records.
    pub fn origin(&self) -> Origin {
        match self.interface {
            Interface::Cli => Origin::cli(),
            Interface::Api => Origin::api(),
            Interface::Console => Origin {
                interface: "console",
                os_user: None,
            },
        }
    }
}

impl Origin {
    /// A decision made with the command line by the user running this process.
    pub fn cli() -> Origin {
        Origin {
            interface: "cli",
            os_user: Some(os_user()),
        }
    }

    /// A decision made through the daemon's HTTP API (recorded as `token:NAME`).
    pub fn api() -> Origin {
        Origin {
            interface: "api",
            os_user: None,
        }
    }

    /// The interface as stored: `None` when unknown.
    pub fn interface_column(&self) -> Option<&'static str> {
        (!self.interface.is_empty()).then_some(self.interface)
    }

    /// Adds `interface` and `os_user` to a history event's detail object.
    pub fn describe(&self, detail: &mut serde_json::Value) {
        if let Some(map) = detail.as_object_mut() {
            if let Some(i) = self.interface_column() {
                map.insert("interface".into(), i.into());
            }
            if let Some(u) = &self.os_user {
                map.insert("os_user".into(), u.clone().into());
            }
        }
    }
}

/// The operating-system user running this process, from the kernel's view (the
/// real uid, named through the system's user database), not from `$USER`,
/// which anyone can set.
/// When the login session belongs to someone else (`sudo`, `su`), that login is
/// added: "root (login alice)".
pub fn os_user() -> String {
    let uid = nix::unistd::getuid();
    // getpwuid_r through NSS: local, LDAP and SSSD users alike.
    let name_of = |id: nix::unistd::Uid| match nix::unistd::User::from_uid(id) {
        Ok(Some(u)) => u.name,
        _ => format!("uid {id}"),
    };
    let me = name_of(uid);
    // The audit login uid survives sudo and su and cannot be changed by the user;
    // u32::MAX means unset (services, containers).
    let login = std::fs::read_to_string("/proc/self/loginuid")
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .filter(|l| *l != u32::MAX && *l != uid.as_raw());
    match login {
        Some(l) => format!("{me} (login {})", name_of(nix::unistd::Uid::from_raw(l))),
        None => me,
    }
}

/// Why an approval request was refused. Nothing is changed when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    /// No such action.
    #[error("action {0} does not exist")]
    UnknownId(i64),
    /// Not waiting for approval.
    #[error("action {id} is {state}, not pending: it cannot be approved or rejected")]
    NotPending {
        /// The action.
        id: i64,
        /// Its state.
        state: ActionState,
    },
    /// Approver name missing.
    #[error("--by must name who approves")]
    NoName,
    /// Not in the approvers list.
    #[error("{0:?} is not in approvals.approvers and may not approve or reject")]
    NotAllowed(String),
    /// Already approved by this person.
    #[error(
        "action {id} was already approved by {by:?}; a second approval must come from someone else"
    )]
    SameApprover {
        /// The action.
        id: i64,
        /// The approver.
        by: String,
    },
    /// Approved before by another name from the same operating-system user.
    #[error(
        "action {id} was already approved as {first:?} by operating-system user {os_user:?}; a second approval must come from another person (another OS user, or the API)"
    )]
    SameOsUser {
        /// The action.
        id: i64,
        /// The name given with the first approval.
        first: String,
        /// The operating-system user of both.
        os_user: String,
    },
    /// The approver asked for the action (a person's request): nobody approves
    /// their own request; rejecting it (withdrawing) is allowed.
    #[error("action {id} was requested by {by}, who may not approve it")]
    OwnRequest {
        /// The action.
        id: i64,
        /// Who requested it (and tried to approve it).
        by: String,
    },
    /// A single-identity action in a bulk request.
    #[error("action {id} ({kind}) is a single-identity action and must be approved on its own")]
    NotBulk {
        /// The action.
        id: i64,
        /// Its kind.
        kind: String,
    },
    /// No ids given.
    #[error("no actions to decide on")]
    Empty,
}

/// What a valid decision does to one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The new state, or `None` when it stays pending for a second approver.
    pub new_state: Option<ActionState>,
}

/// Checks that `by` may decide at all.
pub fn check_approver(policy: &ApprovalPolicy, by: &str) -> Result<(), ApprovalError> {
    if by.trim().is_empty() {
        return Err(ApprovalError::NoName);
    }
    if !policy.approvers.is_empty() && !policy.approvers.iter().any(|a| a == by) {
        return Err(ApprovalError::NotAllowed(by.to_string()));
    }
    Ok(())
}

/// Decides what approving or rejecting one action does, or why it is refused.
/// `several` is true when the request names more than one action; `requester`
/// is who asked for the action when a person did (never its approver).
#[allow(clippy::too_many_arguments)] // plain data in, one decision out
pub fn transition(
    action: &Action,
    prior: &[ApprovalRow],
    decision: Decision,
    by: &str,
    requester: Option<&str>,
    origin: &Origin,
    several: bool,
    policy: &ApprovalPolicy,
    now: DateTime<Utc>,
) -> Result<Transition, ApprovalError> {
    if action.state != ActionState::Pending {
        return Err(ApprovalError::NotPending {
            id: action.id,
            state: action.state,
        });
    }
    if action.is_overdue(now) {
        return Err(ApprovalError::NotPending {
            id: action.id,
            state: ActionState::Expired,
        });
    }
    let kind = action.remedy();
    if decision == Decision::Approve && several && kind.is_some_and(|k| !k.is_bulk()) {
        return Err(ApprovalError::NotBulk {
            id: action.id,
            kind: action.kind.to_string(),
        });
    }
    if decision == Decision::Reject {
        return Ok(Transition {
            new_state: Some(ActionState::Rejected),
        });
    }
    if let Some(r) = requester
        && r.trim().eq_ignore_ascii_case(by.trim())
    {
        return Err(ApprovalError::OwnRequest {
            id: action.id,
            by: r.to_string(),
        });
    }
    let approvers: std::collections::BTreeSet<&str> = prior
        .iter()
        .filter(|a| a.decision == "approve")
        .map(|a| a.approver.as_str())
        .collect();
    if approvers.contains(by) {
        return Err(ApprovalError::SameApprover {
            id: action.id,
            by: by.to_string(),
        });
    }
    if policy.distinct_os_users
        && let Some(me) = &origin.os_user
        && let Some(first) = prior
            .iter()
            .find(|a| a.decision == "approve" && a.os_user.as_ref() == Some(me))
    {
        return Err(ApprovalError::SameOsUser {
            id: action.id,
            first: first.approver.clone(),
            os_user: me.clone(),
        });
    }
    let needed = if kind.is_some_and(|k| policy.four_eyes.contains(&k)) {
        2
    } else {
        1
    };
    Ok(Transition {
        new_state: (approvers.len() + 1 >= needed).then_some(ActionState::Approved),
    })
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::domain::{Mode, WorkKind};

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap()
    }

    fn action(kind: ActionKind, state: ActionState) -> Action {
        Action {
            id: 7,
            run_id: "run".into(),
            tenant: "t".into(),
            identity_id: "id".into(),
            identity_upn: "u@contoso.com".into(),
            identity_name: "U".into(),
            kind: WorkKind::Remedy(kind),
            targets: vec![],
            reasons: vec![],
            rules: vec![],
            mode: Mode::Approval,
            state,
            state_reason: None,
            created_at: now(),
            expires_at: Some(now() + chrono::Duration::hours(1)),
        }
    }

    fn approved_by(who: &str, os_user: Option<&str>) -> ApprovalRow {
        ApprovalRow {
            action_id: 7,
            approver: who.into(),
            decision: "approve".into(),
            comment: None,
            at: String::new(),
            event_seq: Some(1),
            interface: Some("cli".into()),
            os_user: os_user.map(str::to_string),
        }
    }

    fn cli_as(user: &str) -> Origin {
        Origin {
            interface: "cli",
            os_user: Some(user.into()),
        }
    }

    fn decide(
        a: &Action,
        prior: &[ApprovalRow],
        d: Decision,
        by: &str,
        policy: &ApprovalPolicy,
    ) -> Result<Option<ActionState>, ApprovalError> {
        transition(a, prior, d, by, None, &cli_as(by), false, policy, now()).map(|t| t.new_state)
    }

    #[test]
    fn one_approval_approves_and_a_rejection_rejects() {
        let a = action(ActionKind::DisableUser, ActionState::Pending);
        let p = ApprovalPolicy::default();
        assert_eq!(
            decide(&a, &[], Decision::Approve, "alice", &p),
            Ok(Some(ActionState::Approved))
        );
        assert_eq!(
            decide(&a, &[], Decision::Reject, "alice", &p),
            Ok(Some(ActionState::Rejected))
        );
    }

    #[test]
    fn four_eyes_needs_two_distinct_people() {
        let a = action(ActionKind::RemoveRoleAssignment, ActionState::Pending);
        let p = ApprovalPolicy {
            four_eyes: vec![ActionKind::RemoveRoleAssignment],
            ..ApprovalPolicy::default()
        };
        assert_eq!(decide(&a, &[], Decision::Approve, "alice", &p), Ok(None));
        let prior = [approved_by("alice", Some("alice"))];
        assert_eq!(
            decide(&a, &prior, Decision::Approve, "alice", &p),
            Err(ApprovalError::SameApprover {
                id: 7,
                by: "alice".into()
            })
        );
        assert_eq!(
            decide(&a, &prior, Decision::Approve, "bob", &p),
            Ok(Some(ActionState::Approved))
        );
    }

    #[test]
    fn distinct_os_users_refuses_a_second_name_from_the_same_login() {
        let a = action(ActionKind::DisableUser, ActionState::Pending);
        let p = ApprovalPolicy {
            four_eyes: vec![ActionKind::DisableUser],
            distinct_os_users: true,
            ..ApprovalPolicy::default()
        };
        let prior = [approved_by("alice", Some("ops"))];
        let same_login = transition(
            &a,
            &prior,
            Decision::Approve,
            "bob",
            None,
            &cli_as("ops"),
            false,
            &p,
            now(),
        );
        assert_eq!(
            same_login,
            Err(ApprovalError::SameOsUser {
                id: 7,
                first: "alice".into(),
                os_user: "ops".into()
            })
        );
        let api = transition(
            &a,
            &prior,
            Decision::Approve,
            "bob",
            None,
            &Origin::api(),
            false,
            &p,
            now(),
        );
        assert_eq!(api.map(|t| t.new_state), Ok(Some(ActionState::Approved)));
    }

    #[test]
    fn only_pending_unexpired_actions_are_decided() {
        let p = ApprovalPolicy::default();
        let done = action(ActionKind::DisableUser, ActionState::Done);
        assert_eq!(
            decide(&done, &[], Decision::Approve, "alice", &p),
            Err(ApprovalError::NotPending {
                id: 7,
                state: ActionState::Done
            })
        );
        let mut late = action(ActionKind::DisableUser, ActionState::Pending);
        late.expires_at = Some(now());
        assert_eq!(
            decide(&late, &[], Decision::Reject, "alice", &p),
            Err(ApprovalError::NotPending {
                id: 7,
                state: ActionState::Expired
            })
        );
    }

    #[test]
    fn single_identity_actions_are_not_approved_in_bulk_but_may_be_rejected() {
        let p = ApprovalPolicy::default();
        let a = action(ActionKind::RemoveGroupMembership, ActionState::Pending);
        let bulk = |d| transition(&a, &[], d, "alice", None, &Origin::api(), true, &p, now());
        assert_eq!(
            bulk(Decision::Approve),
            Err(ApprovalError::NotBulk {
                id: 7,
                kind: "remove_group_membership".into()
            })
        );
        assert_eq!(
            bulk(Decision::Reject).map(|t| t.new_state),
            Ok(Some(ActionState::Rejected))
        );
    }

    #[test]
    fn the_requester_may_withdraw_but_not_approve_their_own_request() {
        let p = ApprovalPolicy::default();
        let a = action(ActionKind::DisableUser, ActionState::Pending);
        let by_requester = |d, by| {
            transition(
                &a,
                &[],
                d,
                by,
                Some("Alice@Contoso.com"),
                &Origin::api(),
                false,
                &p,
                now(),
            )
            .map(|t| t.new_state)
        };
        assert_eq!(
            by_requester(Decision::Approve, "alice@contoso.com"),
            Err(ApprovalError::OwnRequest {
                id: 7,
                by: "Alice@Contoso.com".into()
            })
        );
        assert_eq!(
            ApprovalError::OwnRequest {
                id: 7,
                by: "alice".into()
            }
            .to_string(),
            "action 7 was requested by alice, who may not approve it"
        );
        assert_eq!(
            by_requester(Decision::Reject, "alice@contoso.com"),
            Ok(Some(ActionState::Rejected))
        );
        assert_eq!(
            by_requester(Decision::Approve, "bob@contoso.com"),
            Ok(Some(ActionState::Approved))
        );
    }

    #[test]
    fn approvers_list_is_enforced_and_a_name_is_required() {
        let p = ApprovalPolicy {
            approvers: vec!["alice".into()],
            ..ApprovalPolicy::default()
        };
        assert_eq!(check_approver(&p, "alice"), Ok(()));
        assert_eq!(
            check_approver(&p, "mallory"),
            Err(ApprovalError::NotAllowed("mallory".into()))
        );
        assert_eq!(check_approver(&p, "  "), Err(ApprovalError::NoName));
    }
}

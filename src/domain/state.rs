//! The action life cycle: every state an action can be in, and the one
//! function that knows which state may follow which.

use serde::{Deserialize, Serialize};

/// Where an action stands. Stored by its [`as_str`](ActionState::as_str) name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionState {
    /// Planned by a dry run: recorded, never executed.
    Planned,
    /// Waiting for a person's approval.
    Pending,
    /// Approved; waits for execution.
    Approved,
    /// Planned in enforce mode; waits for execution.
    Ready,
    /// Claimed by an executor; its Graph writes may be under way.
    Executing,
    /// Graph made the change.
    Done,
    /// Live state already matched; nothing was written.
    AlreadyDone,
    /// A guardrail refused it (at planning or against live state).
    Refused,
    /// Graph failed, for good.
    Failed,
    /// A person rejected it.
    Rejected,
    /// Its approval window passed.
    Expired,
    /// An exception excluded it.
    Skipped,
    /// The same action still waits for approval from an earlier run.
    CarriedOver,
}

/// A state change the life cycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an action cannot go from {from} to {to}")]
pub struct IllegalTransition {
    /// The state it was in.
    pub from: ActionState,
    /// The state asked for.
    pub to: ActionState,
}

impl ActionState {
    /// Every state, in life-cycle order.
    pub const ALL: [ActionState; 13] = [
        ActionState::Planned,
        ActionState::Pending,
        ActionState::Approved,
        ActionState::Ready,
        ActionState::Executing,
        ActionState::Done,
        ActionState::AlreadyDone,
        ActionState::Refused,
        ActionState::Failed,
        ActionState::Rejected,
        ActionState::Expired,
        ActionState::Skipped,
        ActionState::CarriedOver,
    ];

    /// The name kept in the store and shown in history.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionState::Planned => "planned",
            ActionState::Pending => "pending",
            ActionState::Approved => "approved",
            ActionState::Ready => "ready",
            ActionState::Executing => "executing",
            ActionState::Done => "done",
            ActionState::AlreadyDone => "already_done",
            ActionState::Refused => "refused",
            ActionState::Failed => "failed",
            ActionState::Rejected => "rejected",
            ActionState::Expired => "expired",
            ActionState::Skipped => "skipped",
            ActionState::CarriedOver => "carried_over",
        }
    }

    /// Parses a stored state name.
    pub fn parse(s: &str) -> Option<ActionState> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The states a new action may be recorded in.
    pub fn is_initial(self) -> bool {
        matches!(
            self,
            ActionState::Planned
                | ActionState::Pending
                | ActionState::Ready
                | ActionState::Refused
                | ActionState::Skipped
                | ActionState::CarriedOver
        )
    }

    /// Waiting to be executed (ready in enforce mode, or approved).
    pub fn is_runnable(self) -> bool {
        matches!(self, ActionState::Ready | ActionState::Approved)
    }

    /// The one place that knows the life cycle: which state may follow `self`.
    /// Pending -> approved / rejected / expired; ready or approved -> executing;
    /// executing -> an outcome, or back to ready / approved for a retry.
    pub fn transition(self, to: ActionState) -> Result<ActionState, IllegalTransition> {
        use ActionState::*;
        let ok = match self {
            Pending => matches!(to, Approved | Rejected | Expired),
            Ready | Approved => to == Executing,
            Executing => matches!(to, Done | AlreadyDone | Refused | Failed | Ready | Approved),
            Planned | Done | AlreadyDone | Refused | Failed | Rejected | Expired | Skipped
            | CarriedOver => false,
        };
        if ok {
            Ok(to)
        } else {
            Err(IllegalTransition { from: self, to })
        }
    }
}

impl std::fmt::Display for ActionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ActionState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ActionState::parse(s).ok_or_else(|| format!("unknown action state {s:?}"))
    }
}

impl PartialEq<&str> for ActionState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for ActionState {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

#[cfg(test)]
mod tests {
    use super::ActionState::*;
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for s in ActionState::ALL {
            assert_eq!(ActionState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).ok(), Some(s.as_str().into()));
        }
        assert_eq!(ActionState::parse("Pending"), None);
        assert_eq!(ActionState::parse(""), None);
    }

    #[test]
    fn approval_leads_to_execution_and_execution_to_an_outcome() {
        let path = [Pending, Approved, Executing, Done];
        for w in path.windows(2) {
            assert_eq!(w[0].transition(w[1]), Ok(w[1]));
        }
        assert_eq!(Ready.transition(Executing), Ok(Executing));
        assert_eq!(Executing.transition(Ready), Ok(Ready), "a retry");
        assert_eq!(Executing.transition(Approved), Ok(Approved), "a retry");
    }

    #[test]
    fn final_states_never_change_and_nothing_skips_a_step() {
        for from in [
            Planned,
            Done,
            AlreadyDone,
            Refused,
            Failed,
            Rejected,
            Expired,
            Skipped,
            CarriedOver,
        ] {
            for to in ActionState::ALL {
                assert_eq!(from.transition(to), Err(IllegalTransition { from, to }));
            }
        }
        assert!(
            Pending.transition(Executing).is_err(),
            "execution needs approval"
        );
        assert!(Pending.transition(Done).is_err());
        assert!(
            Ready.transition(Done).is_err(),
            "a write needs its claim first"
        );
        assert!(Approved.transition(Rejected).is_err());
        assert!(Executing.transition(Pending).is_err());
    }

    #[test]
    fn new_actions_start_only_in_initial_states() {
        let initial: Vec<_> = ActionState::ALL
            .into_iter()
            .filter(|s| s.is_initial())
            .collect();
        assert_eq!(
            initial,
            vec![Planned, Pending, Ready, Refused, Skipped, CarriedOver]
        );
        assert!(Ready.is_runnable() && Approved.is_runnable() && !Pending.is_runnable());
    }
}

//! Why an action was asked for: the rule, the finding and the rule's words.

use serde::Serialize;

/// One reason an action was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Reason {
    /// The rule.
    pub rule: String,
    /// The finding.
    pub finding: String,
    /// The rule's words.
    pub reason: String,
}

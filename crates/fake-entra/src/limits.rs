//! Graph's documented identity and access throttling: every request on an
//! identity resource (users, groups, organization, directory objects, ...)
//! costs resource units, and an application+tenant pair may spend a budget of
//! them per 10 seconds (3,500 under 50 users, 5,000 up to 500, 8,000 above).
//! The fake charges the documented costs and, when `Fault::ResourceUnits` is
//! injected, refuses with 429 and `Retry-After` once the budget is spent.

use crate::state::State;
use crate::util::{Req, Resp, too_many_requests};
use std::time::{Duration, Instant};

/// The window the budget applies to.
const WINDOW: Duration = Duration::from_secs(10);

/// First path segments of the identity resources the limit applies to.
const IDENTITY_ROOTS: &[&str] = &[
    "users",
    "groups",
    "organization",
    "directoryobjects",
    "serviceprincipals",
    "applications",
    "devices",
    "domains",
    "contracts",
    "contacts",
    "oauth2permissiongrants",
    "subscribedskus",
    "directoryroles",
    "directoryroletemplates",
    "me",
];

/// The documented budget of an application+tenant pair per 10 seconds for a
/// tenant of this many users (S under 50: 3,500; M up to 500: 5,000; L: 8,000).
pub(crate) fn budget_for(users: usize) -> u32 {
    match users {
        0..50 => 3_500,
        50..=500 => 5_000,
        _ => 8_000,
    }
}

/// Resource units a request costs, or `None` when the path is not an identity
/// resource. Base costs from Graph's table (GET users 2, group members 3,
/// transitive members 5, memberOf 2, any other 1), then: `$select` -1,
/// `$expand` +1, `$top` below 20 -1, never below 1.
pub(crate) fn cost(req: &Req) -> Option<u32> {
    let lower = req.path.to_ascii_lowercase();
    let segs: Vec<&str> = lower
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let root = *segs.first()?;
    if !IDENTITY_ROOTS.contains(&root) {
        return None;
    }
    let get = req.method == "GET";
    let base: i64 = match segs.as_slice() {
        ["users"] | ["applications"] | ["oauth2permissiongrants"] if get => 2,
        ["subscribedskus"] if get => 3,
        ["groups", _, "members"] if get => 3,
        ["groups", _, "transitivemembers"] if get => 5,
        [
            "users",
            _,
            "memberof" | "transitivememberof" | "ownedobjects" | "licensedetails",
        ]
        | [
            "me",
            "memberof" | "transitivememberof" | "ownedobjects" | "licensedetails",
        ] if get => 2,
        _ => 1,
    };
    let mut c = base;
    if req.param("$select").is_some() {
        c -= 1;
    }
    if req.param("$expand").is_some() {
        c += 1;
    }
    if req
        .param("$top")
        .and_then(|t| t.parse::<u32>().ok())
        .is_some_and(|t| t < 20)
    {
        c -= 1;
    }
    Some(c.max(1) as u32)
}

impl State {
    /// Charges the request's resource units: `Ok(Some(cost))` when charged
    /// (the answer then carries `x-ms-resource-unit`), `Ok(None)` when the path
    /// is not an identity resource, `Err` the 429 when `Fault::ResourceUnits`
    /// is set and the budget of the last 10 seconds is spent.
    pub(crate) fn charge_resource_units(
        &mut self,
        req: &Req,
        tenant: &str,
        now: Instant,
    ) -> Result<Option<u32>, Resp> {
        let Some(cost) = cost(req) else {
            return Ok(None);
        };
        let Some(budget) = self
            .faults
            .iter()
            .filter_map(|f| match f {
                crate::Fault::ResourceUnits { per_10s } => Some(*per_10s),
                _ => None,
            })
            .min()
        else {
            return Ok(Some(cost));
        };
        while self
            .ru_window
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= WINDOW)
        {
            self.ru_window.pop_front();
        }
        let spent: u32 = self.ru_window.iter().map(|(_, c)| *c).sum();
        if spent.saturating_add(cost) <= budget {
            self.ru_window.push_back((now, cost));
            return Ok(Some(cost));
        }
        // When enough of the window's charges expire for this request to fit.
        let mut freed = 0u32;
        let mut wait = WINDOW;
        for (t, c) in &self.ru_window {
            freed += c;
            if spent - freed + cost <= budget {
                wait = (*t + WINDOW).saturating_duration_since(now);
                break;
            }
        }
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Err(too_many_requests()
            .with_header("Retry-After", &secs.max(1).to_string())
            .with_header(
                "x-ms-throttle-scope",
                &format!("Tenant_Application/ReadWrite/{}/{tenant}", req.client_id),
            )
            .with_header("x-ms-throttle-information", "ResourceUnitLimitExceeded"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::Body;

    fn get(path: &str, query: Option<&str>) -> Req {
        Req {
            method: "GET".into(),
            path: path.into(),
            query: query.map(str::to_string),
            headers: Vec::new(),
            body: Body::None,
            client_id: "app".into(),
        }
    }

    #[test]
    fn documented_costs() {
        assert_eq!(cost(&get("/users", None)), Some(2));
        assert_eq!(cost(&get("/users", Some("$select=id"))), Some(1));
        assert_eq!(cost(&get("/groups/g/members", Some("$select=id"))), Some(2));
        assert_eq!(cost(&get("/groups/g/members", Some("$top=5"))), Some(2));
        assert_eq!(cost(&get("/groups/g/transitiveMembers", None)), Some(5));
        assert_eq!(cost(&get("/users/u", Some("$select=id"))), Some(1));
        assert_eq!(cost(&get("/groups", Some("$expand=members"))), Some(2));
        assert_eq!(cost(&get("/organization", None)), Some(1));
        assert_eq!(
            cost(&get("/roleManagement/directory/roleAssignments", None)),
            None
        );
        assert_eq!(cost(&get("/identityProtection/riskyUsers", None)), None);
    }

    #[test]
    fn budgets_by_tenant_size() {
        assert_eq!(budget_for(10), 3_500);
        assert_eq!(budget_for(50), 5_000);
        assert_eq!(budget_for(500), 5_000);
        assert_eq!(budget_for(501), 8_000);
    }
}

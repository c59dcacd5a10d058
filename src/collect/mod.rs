//! The built-in posture scan's reading: one tenant through Microsoft Graph
//! v1.0, read-only, into [`TenantData`] for [`crate::scan::posture::build_scan`].
//!
//! Every listing follows `@odata.nextLink` (the client's paging) and is parsed
//! page by page, so memory holds one page of Graph's JSON at a time. Users
//! must be read or nothing is; every other part that Graph refuses (a licence
//! the tenant lacks, a permission the app lacks, an error after retries)
//! becomes a [`Gap`] naming the licence or permission, so that the checks
//! needing it are reported as not evaluated, never as clean.

mod gaps;
mod members;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::graph::paging::ListingError;
use crate::graph::{Answer, GraphClient, GraphRequest};
use crate::scan::posture::{
    DirectoryRoleAssignment, GraphGroup, GraphUser, Part, RegistrationDetail, RiskyUser,
    RoleDefinition, RoleSchedule, TenantData,
};
use gaps::{Data, gap};

/// At most this many pages per listing: 100,000 users are 200 pages of 500.
const MAX_PAGES: usize = 100_000;

/// The users' properties the checks read; `signInActivity` needs Entra ID P1
/// and `AuditLog.Read.All`, and caps a page at 500 users.
const USER_SELECT: &str = "id,userPrincipalName,displayName,userType,accountEnabled,onPremisesSyncEnabled,createdDateTime";

/// Groups' properties the checks read.
const GROUP_SELECT: &str = "id,displayName,groupTypes,membershipRule,onPremisesSyncEnabled,isAssignableToRole,mailEnabled,securityEnabled";

/// A tenant as read, with what the reading cost.
#[derive(Debug)]
pub struct Reading {
    /// The tenant's data, gaps included.
    pub data: TenantData,
    /// HTTP requests sent (every attempt; a `$batch` item counts as one).
    pub requests: u64,
    /// Wall time of the reading.
    pub duration: Duration,
    /// Items Graph returned that could not be understood (skipped, each named).
    pub skipped: Vec<String>,
}

/// Why no scan could be read.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// Without the users there is nothing to scan: no scan is written.
    #[error("cannot read the tenant's users, so no scan was written: {0}")]
    Users(String),
}

/// Counts requests and remembers items that could not be parsed.
#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    skipped: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn record(&self, _req: &GraphRequest, ans: &Answer) {
        let n = match ans {
            Ok(r) => r.attempts.len().max(1),
            Err(_) => 1,
        };
        self.requests.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn skip(&self, what: String) {
        if let Ok(mut s) = self.skipped.lock() {
            s.push(what);
        }
    }

    /// Parses a page's items, skipping (and naming) those Graph sent malformed.
    fn parse<T: DeserializeOwned>(&self, what: &str, items: Vec<Value>, into: &mut Vec<T>) {
        into.reserve(items.len());
        for item in items {
            let id = item
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string();
            match serde_json::from_value::<T>(item) {
                Ok(v) => into.push(v),
                Err(e) => self.skip(format!("{what} {id}: {e}")),
            }
        }
    }
}

/// Reads one tenant. `name` is used when the organisation's name cannot be read.
pub async fn read_tenant(
    client: &Arc<GraphClient>,
    tenant_id: &str,
    name: &str,
) -> Result<Reading, CollectError> {
    let started = Instant::now();
    let tally = Tally::default();
    let (users, tenant_name, registration, risky_users, roles, pim, groups) = tokio::join!(
        read_users(client, &tally),
        read_name(client, &tally, name),
        listing::<RegistrationDetail>(
            client,
            &tally,
            Data::Registration,
            "/reports/authenticationMethods/userRegistrationDetails".into(),
        ),
        listing::<RiskyUser>(
            client,
            &tally,
            Data::Risk,
            "/identityProtection/riskyUsers?$top=500".into(),
        ),
        read_roles(client, &tally),
        read_pim(client, &tally),
        read_groups(client, &tally),
    );
    let (users, sign_in) = users?;
    let (role_definitions, role_assignments) = roles;
    let (eligibility, assignment_schedules) = pim;
    let (groups, members) = groups;
    let data = TenantData {
        tenant_id: tenant_id.to_string(),
        tenant_name,
        // Milliseconds, as the scan file's name carries them.
        read_at: Utc::now().trunc_subsecs(3),
        users,
        sign_in,
        registration,
        risky_users,
        role_definitions,
        role_assignments,
        eligibility,
        assignment_schedules,
        groups,
        members,
    };
    let skipped = tally.skipped.lock().map(|s| s.clone()).unwrap_or_default();
    Ok(Reading {
        data,
        requests: tally.requests.load(Ordering::Relaxed),
        duration: started.elapsed(),
        skipped,
    })
}

/// Every item of a listing, parsed page by page, or the gap that stopped it.
async fn listing<T: DeserializeOwned>(
    client: &GraphClient,
    tally: &Tally,
    data: Data,
    path: String,
) -> Part<Vec<T>> {
    let mut out = Vec::new();
    client
        .for_each_page(
            path,
            MAX_PAGES,
            |r, a| tally.record(r, a),
            |items| tally.parse(data.noun(), items, &mut out),
        )
        .await
        .map_err(|e| gap(data, &e))?;
    Ok(out)
}

/// The organisation's display name, or `fallback`.
async fn read_name(client: &GraphClient, tally: &Tally, fallback: &str) -> String {
    let req = GraphRequest::get("/organization?$select=id,displayName");
    let ans = client.call(&req).await;
    tally.record(&req, &ans);
    ans.ok()
        .filter(|r| r.ok())
        .and_then(|r| {
            r.body
                .pointer("/value/0/displayName")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| fallback.to_string())
}

/// The users with their sign-in activity; when the tenant or the app may not
/// read sign-in activity, the users without it and the gap.
async fn read_users(
    client: &GraphClient,
    tally: &Tally,
) -> Result<(Vec<GraphUser>, Part<()>), CollectError> {
    let with = format!("/users?$select={USER_SELECT},signInActivity&$top=500");
    let mut users = Vec::new();
    let mut pages = 0usize;
    let first = client
        .for_each_page(
            with,
            MAX_PAGES,
            |r, a| tally.record(r, a),
            |items| {
                pages += 1;
                tally.parse("user", items, &mut users)
            },
        )
        .await;
    let sign_in = match first {
        Ok(()) => return Ok((users, Ok(()))),
        // Refused on the first page: sign-in activity is what was refused.
        Err(ref e @ ListingError::Refused(ref resp)) if pages == 0 && resp.status < 500 => {
            gap(Data::SignIn, e)
        }
        Err(e) => return Err(CollectError::Users(gap(Data::Users, &e).reason)),
    };
    tracing::warn!("sign-in activity not read: {}", sign_in.reason);
    let without = format!("/users?$select={USER_SELECT}&$top=999");
    let users = listing::<GraphUser>(client, tally, Data::Users, without)
        .await
        .map_err(|g| CollectError::Users(g.reason))?;
    Ok((users, Err(sign_in)))
}

/// Role definitions (names) and active assignments with their principals.
async fn read_roles(
    client: &GraphClient,
    tally: &Tally,
) -> (
    Part<Vec<RoleDefinition>>,
    Part<Vec<DirectoryRoleAssignment>>,
) {
    tokio::join!(
        listing::<RoleDefinition>(
            client,
            tally,
            Data::Roles,
            "/roleManagement/directory/roleDefinitions?$select=id,displayName,templateId".into(),
        ),
        listing::<DirectoryRoleAssignment>(
            client,
            tally,
            Data::Roles,
            "/roleManagement/directory/roleAssignments?$expand=principal".into(),
        ),
    )
}

/// PIM: eligibility schedules and the schedules of active assignments.
async fn read_pim(
    client: &GraphClient,
    tally: &Tally,
) -> (Part<Vec<RoleSchedule>>, Part<Vec<RoleSchedule>>) {
    tokio::join!(
        listing::<RoleSchedule>(
            client,
            tally,
            Data::Eligibility,
            "/roleManagement/directory/roleEligibilitySchedules".into(),
        ),
        listing::<RoleSchedule>(
            client,
            tally,
            Data::AssignmentSchedules,
            "/roleManagement/directory/roleAssignmentSchedules".into(),
        ),
    )
}

/// Groups and the direct user members of each.
async fn read_groups(
    client: &Arc<GraphClient>,
    tally: &Tally,
) -> (Part<Vec<GraphGroup>>, Part<HashMap<String, Vec<String>>>) {
    let path = format!("/groups?$select={GROUP_SELECT}&$top=999");
    match listing::<GraphGroup>(client, tally, Data::Groups, path).await {
        Ok(groups) => {
            let members = members::read(client, tally, &groups).await;
            (Ok(groups), members)
        }
        Err(g) => (Err(g.clone()), Err(g)),
    }
}

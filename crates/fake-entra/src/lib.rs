//! A stateful fake Microsoft Entra ID tenant for tests: the v2.0 token endpoint
//! (client secret and certificate client assertions), OpenID Connect sign-in
//! (authorization code with PKCE) and the subset of
//! Microsoft Graph v1.0 that `entra-remediator` calls, served on 127.0.0.1.
//!
//! Shapes follow Microsoft's Graph v1.0 reference. Points worth knowing:
//!
//! - Every answer carries `request-id` and echoes `client-request-id` (or repeats
//!   the request id); so does each `$batch` item, in the item's own `headers`
//!   (its own `request-id`, and its own `client-request-id` or the envelope's). Graph errors are `{"error": {"code", "message",
//!   "innerError": {"date", "request-id", "client-request-id"}}}`; token endpoint
//!   errors are Entra's `{"error", "error_description": "AADSTSnnn: ...",
//!   "error_codes", "timestamp", "trace_id", "correlation_id", "error_uri"}`.
//! - Fault patterns are matched against `"METHOD /v1.0/path"` (path as sent,
//!   without the query). An empty pattern matches every Graph request and every
//!   `$batch` item, but neither the token endpoint nor the `$batch` envelope; a
//!   non-empty pattern is matched against those too (e.g. `"oauth2"`,
//!   `"$batch"`). `RateLimit` counts Graph requests and batch items only.
//! - A Conditional Access policy whose compact JSON (without `@odata`
//!   annotations) would exceed 10,240 bytes is refused with 400 `BadRequest`
//!   and nothing changes: Microsoft documents a 10 KB limit for the whole
//!   policy object. `POST /groups` creates security groups; `GET /groups`
//!   takes `$filter` on string properties.
//! - Conditional Access (`/identity/conditionalAccess/...`) and Identity
//!   Protection (`/identityProtection/...`) share one budget: more than one
//!   request per rolling second per tenant gets 429 `TooManyRequests` without
//!   `Retry-After`. Graph documents this limit for *any* request, so GETs count
//!   too; [`FakeTenant::set_ca_read_throttling`] turns that off for GETs.
//! - `GET /users/{id}` without `$select` returns Graph's default property set,
//!   which has neither `accountEnabled` nor `userType`: select them.
//! - `GET /users?$filter=id in ('a','b',...)` reads users by id with
//!   `User.Read.All` (ids of no user are left out of `value`); more than 15
//!   values is 400 `Request_UnsupportedQuery`, Graph's default limit of `in`.
//! - `POST /directoryObjects/getByIds` reads up to 1,000 objects by id (400
//!   `Request_BadRequest` above), of the `types` asked for; missing ids are left
//!   out of `value`; it needs `Directory.Read.All` when permissions are set.
//! - `signInSessionsValidFromDateTime` (select it) is reset to the current time,
//!   in whole seconds, by `revokeSignInSessions`; null until then.
//! - `GET /users/{id}/memberOf` and `/transitiveMemberOf` list the groups a user
//!   is in (directly, or through nested groups too), paged like members.
//! - `onPremisesSyncEnabled` and `isAssignableToRole` of a group read `null`
//!   (not `false`) when unset, as Graph returns them.
//! - Membership changes are refused (400) on dynamic, on-premises synced and
//!   mail-enabled security groups. `DELETE /groups/{g}/members/{u}` without
//!   `/$ref` is recorded and answered 403 `Authorization_RequestDenied` (in Graph
//!   it deletes the member object itself when the app may, else 403); the member
//!   stays.
//! - The reads of the posture scan: `GET /organization` (id = tenant id,
//!   displayName from [`FakeTenant::set_tenant_name`]); `GET /users` with
//!   `$select` (incl. `createdDateTime`, `onPremisesSyncEnabled`,
//!   `signInActivity`), `$filter` (eq) and key paging (`@odata.nextLink` with a
//!   `$skiptoken`; 100 by default, `$top` up to 999, at most 500 a page when
//!   `signInActivity` is selected: Graph documents that a larger `$top` is
//!   served in pages of 500, not refused); `GET
//!   /reports/authenticationMethods/userRegistrationDetails` (every user, pages
//!   of 1,000, `$select` refused with 400); `GET /identityProtection/riskyUsers`
//!   (users with a risk record, 100 a page, `$top` up to 500, `$select`);
//!   `GET /roleManagement/directory/roleDefinitions` (built-in roles, `id` =
//!   `templateId`); `roleAssignments` with `$expand=principal` (user, group or
//!   service principal; null when the principal is gone), paged (100, `$top` up
//!   to 999); `roleEligibilitySchedules` and `roleAssignmentSchedules` (one per
//!   active assignment: its PIM schedule, else `Assigned` with `noExpiration`);
//!   `GET /groups` (`membershipRule` of dynamic groups, paged like members).
//!   Per-user data comes from [`FakeTenant::set_user_details`] ([`UserDetails`]:
//!   without it a user was created when the fake started, never signed in, is
//!   registered for nothing and has no risk record); eligibilities from
//!   [`FakeTenant::add_eligibility`].
//! - Licences ([`FakeTenant::set_licences`], both by default): without P1,
//!   selecting `signInActivity` and reading registration details get 403
//!   `Authentication_RequestFromNonPremiumTenantOrB2CTenant` (users without
//!   `signInActivity` still read); without P2, riskyUsers gets the same 403 and
//!   the PIM schedules (and `roleAssignmentScheduleInstances`) get 400
//!   `AadPremiumLicenseRequired`, as Graph answers them.
//! - Permissions ([`FakeTenant::set_permissions`]; `None`, the default, grants
//!   everything): each read needs one of the application permissions Graph
//!   documents for it (users: `User.Read.All` or higher, plus
//!   `AuditLog.Read.All` for `signInActivity`; registration details:
//!   `AuditLog.Read.All`; riskyUsers: `IdentityRiskyUser.Read.All`; roles:
//!   `RoleManagement.Read.Directory` or `Directory.Read.All`; PIM schedules:
//!   `RoleEligibilitySchedule.Read.Directory` / `RoleAssignmentSchedule.Read.Directory`
//!   or a `RoleManagement` permission; groups and members: `GroupMember.Read.All`
//!   or higher; organization: `Organization.Read.All` or `Directory.Read.All`;
//!   Conditional Access: `Policy.Read.All`), else 403
//!   `Authorization_RequestDenied`. Writes are not checked.
//! - Identity resources (users, groups, organization, ...) cost Graph's
//!   documented resource units (GET users 2, group members 3, others 1;
//!   `$select` -1, `$expand` +1, `$top` below 20 -1; at least 1), reported in
//!   `x-ms-resource-unit`; [`Fault::ResourceUnits`] enforces a budget per 10
//!   seconds (429 with `Retry-After`).
//! - [`FakeTenant::generate`] fills a big, realistic tenant deterministically
//!   from a seed and reports what it made ([`Generated`]).
//! - OpenID Connect sign-in, shaped as Entra's v2.0 provider (issuer
//!   `{base}/{tenant}/v2.0`, [`FakeTenant::oidc_issuer`]): `GET
//!   {issuer}/.well-known/openid-configuration` (Entra's fields; no
//!   `code_challenge_methods_supported`, as Entra), `GET
//!   /{tenant}/discovery/v2.0/keys` (one fixed RSA test key, `kid`, no `x5c`),
//!   `GET /{tenant}/oauth2/v2.0/authorize` (code flow only; `response_mode`
//!   query, fragment or form_post; PKCE S256 or plain, recorded in
//!   [`FakeTenant::oidc_authorizations`]). An unknown client id or a redirect
//!   URI not registered by [`FakeTenant::register_app_redirect`] gets a 400
//!   HTML page (AADSTS700016 / AADSTS50011); other errors redirect with
//!   `error`, `error_description` = `AADSTSnnn: ...` and `state`. The user is
//!   [`FakeTenant::set_next_sign_in`]'s, else `login_hint`'s (a UPN), else the
//!   one typed in the sign-in page (`<input id="login" name="login">`,
//!   `<button id="signin">`, posting to the same URL; unknown UPN: the page
//!   again with AADSTS50034); a disabled user gets `access_denied`
//!   AADSTS50057. The token endpoint redeems a code with
//!   `grant_type=authorization_code` (client secret or assertion as for client
//!   credentials; single use, AADSTS54005; 10 minutes, AADSTS70008; bound to
//!   client and `redirect_uri`; `code_verifier` checked, AADSTS501481), giving
//!   an HS256 access token and, with scope `openid`, an RS256 ID token (iss,
//!   aud, pairwise sub, oid, tid, preferred_username, name, nonce, iat, nbf,
//!   exp +1 h, ver 2.0, groups = direct memberships). ID tokens can be spoiled
//!   for tests ([`FakeTenant::set_id_token_fault`],
//!   [`FakeTenant::set_oidc_signing_key_mismatch`]).
//! - `$batch` answers come back shuffled (never in request order when there are
//!   two or more), each item goes through the same faults and handlers as a
//!   direct call and is recorded with `in_batch = true` (after the envelope).
#![warn(missing_docs)]

mod by_ids;
mod details;
mod generate;
mod id_in;
mod graph;
mod limits;
mod oidc;
mod oidc_token;
mod reads;
mod server;
mod state;
mod token;
mod util;

pub use details::{Generated, Registration, Risk, RoleEligibility, SignIn, UserDetails};
pub use oidc::{IdTokenFault, OidcAuthorization};
use serde_json::Value;
use state::{State, UserEntry, lock};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A user of the fake directory.
#[derive(Clone, Debug)]
pub struct User {
    /// Object id.
    pub id: String,
    /// userPrincipalName.
    pub user_principal_name: String,
    /// displayName.
    pub display_name: String,
    /// userType: "Member" or "Guest".
    pub user_type: String,
    /// accountEnabled.
    pub account_enabled: bool,
}

/// A group of the fake directory.
#[derive(Clone, Debug)]
pub struct Group {
    /// Object id.
    pub id: String,
    /// displayName.
    pub display_name: String,
    /// Dynamic membership (groupTypes contains "DynamicMembership").
    pub dynamic: bool,
    /// mailEnabled (mail-enabled and not security-enabled means a Microsoft 365 group, groupTypes "Unified").
    pub mail_enabled: bool,
    /// securityEnabled.
    pub security_enabled: bool,
    /// Synchronized from on-premises AD.
    pub on_premises_sync_enabled: bool,
    /// isAssignableToRole.
    pub is_assignable_to_role: bool,
}

/// An active directory role assignment.
#[derive(Clone, Debug)]
pub struct RoleAssignment {
    /// unifiedRoleAssignment id.
    pub id: String,
    /// Principal (user or group) id.
    pub principal_id: String,
    /// roleDefinitionId.
    pub role_definition_id: String,
    /// directoryScopeId ("/" for tenant-wide).
    pub directory_scope_id: String,
    /// Created through PIM: has a matching roleAssignmentScheduleInstance.
    pub pim_managed: bool,
}

/// The PIM schedule of an active role assignment: when it started, when it
/// ends (`None`: no expiration), and how it came to be (`Assigned` by an
/// administrator, or `Activated` from an eligible assignment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PimSchedule {
    /// startDateTime (RFC 3339).
    pub start: String,
    /// endDateTime (RFC 3339), `None` for noExpiration.
    pub end: Option<String>,
    /// assignmentType: "Assigned" or "Activated".
    pub assignment_type: String,
}

/// One request the fake received (a `$batch` envelope and each of its items are separate entries).
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// HTTP method, upper case.
    pub method: String,
    /// Path, e.g. "/v1.0/users/ID" or "/TENANT/oauth2/v2.0/token" (still percent-encoded).
    pub path: String,
    /// Raw query string without '?'.
    pub query: Option<String>,
    /// Parsed JSON body, or the form as a JSON object (token endpoint), or the raw text when not JSON.
    pub body: Option<Value>,
    /// Headers, names lower-cased (for a `$batch` item: the item's own headers).
    pub headers: Vec<(String, String)>,
    /// True for an item inside a `$batch`.
    pub in_batch: bool,
    /// Status answered.
    pub status: u16,
}

/// A fault to inject.
#[derive(Clone, Debug)]
pub enum Fault {
    /// The next `count` requests whose "METHOD path" contains `matching` get 429 TooManyRequests, with a Retry-After header (seconds, may be fractional) when given. Inside a $batch, the item gets status 429 with the Retry-After in the item's headers.
    Throttle {
        /// Substring of "METHOD /v1.0/path" ("" = every Graph request).
        matching: String,
        /// How many requests to throttle.
        count: u32,
        /// Retry-After seconds.
        retry_after: Option<f64>,
    },
    /// The next `count` matching requests get this 5xx status (e.g. 503 serviceUnavailable, 504).
    ServerError {
        /// Substring of "METHOD /v1.0/path" ("" = every Graph request).
        matching: String,
        /// How many requests to fail.
        count: u32,
        /// The status: a 5xx, or 403 for Graph's `Authorization_RequestDenied`.
        status: u16,
    },
    /// Every matching request is delayed by this long before being answered.
    Latency {
        /// Substring of "METHOD /v1.0/path" ("" = every Graph request).
        matching: String,
        /// The delay.
        delay: Duration,
    },
    /// Rate limit: more than `per_second` requests per rolling second (batch items counted individually) get 429 with Retry-After 1.
    RateLimit {
        /// Requests allowed per rolling second.
        per_second: u32,
    },
    /// Graph's identity and access limit: requests on identity resources
    /// (users, groups, organization, ...) cost their documented resource units
    /// (batch items counted individually); once `per_10s` units are spent in a
    /// rolling 10 seconds, the excess gets 429 with `Retry-After` (see
    /// [`FakeTenant::documented_resource_unit_budget`]).
    ResourceUnits {
        /// Resource units allowed per rolling 10 seconds.
        per_10s: u32,
    },
}

/// Shared between the handle and the server task.
pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub tenant: String,
    pub base_url: String,
    /// `$batch` envelopes being served now, and the most at once.
    pub batches: Gauge,
}

/// A count of requests being served at once, and its peak.
#[derive(Default)]
pub(crate) struct Gauge {
    now: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
}

impl Gauge {
    /// Counts one more until the returned guard is dropped.
    pub(crate) fn enter(&self) -> GaugeGuard<'_> {
        use std::sync::atomic::Ordering::SeqCst;
        let n = self.now.fetch_add(1, SeqCst) + 1;
        self.peak.fetch_max(n, SeqCst);
        GaugeGuard(self)
    }

    /// The peak since the last call, which starts the next one from the count now.
    fn take_peak(&self) -> usize {
        use std::sync::atomic::Ordering::SeqCst;
        self.peak.swap(self.now.load(SeqCst), SeqCst)
    }
}

/// One request counted by a [`Gauge`].
pub(crate) struct GaugeGuard<'a>(&'a Gauge);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A running fake tenant; the server stops when this is dropped.
pub struct FakeTenant {
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeTenant {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeTenant {
    /// Starts a fake tenant on 127.0.0.1 (an ephemeral port).
    pub async fn start(tenant_id: &str) -> FakeTenant {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake-entra: cannot bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("fake-entra: no local address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new()),
            tenant: tenant_id.to_string(),
            base_url: format!("http://{addr}"),
            batches: Gauge::default(),
        });
        let app = server::router(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeTenant { shared, server }
    }

    /// "http://127.0.0.1:PORT": Graph is at {base}/v1.0/..., the token endpoint at {base}/{tenant}/oauth2/v2.0/token.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The tenant id given to `start`.
    pub fn tenant_id(&self) -> String {
        self.shared.tenant.clone()
    }

    /// The token endpoint URL (also the `aud` client assertions must carry).
    pub fn token_url(&self) -> String {
        token::token_url(&self.shared.base_url, &self.shared.tenant)
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    /// Registers an application with a client secret (several secrets may be registered).
    pub fn register_app_secret(&self, client_id: &str, secret: &str) {
        self.st()
            .apps
            .entry(client_id.to_string())
            .or_default()
            .secrets
            .push(secret.to_string());
    }

    /// Trusts this PEM certificate (RSA key) for the application's client assertions; panics on a PEM that is not an RSA certificate.
    pub fn register_app_certificate(&self, client_id: &str, cert_pem: &str) {
        let cert = token::parse_certificate(cert_pem)
            .unwrap_or_else(|e| panic!("fake-entra: register_app_certificate: {e}"));
        self.st()
            .apps
            .entry(client_id.to_string())
            .or_default()
            .certs
            .push(cert);
    }

    /// expires_in (seconds) of tokens issued from now on (default 3600).
    pub fn set_token_lifetime(&self, secs: u64) {
        self.st().token_lifetime = secs;
    }

    /// Every token issued so far is now refused with 401 InvalidAuthenticationToken.
    pub fn expire_all_tokens(&self) {
        for t in self.st().tokens.values_mut() {
            t.revoked = true;
        }
    }

    /// Adds (or replaces) a user.
    pub fn add_user(&self, u: User) {
        self.st().users.insert(
            u.id.clone(),
            UserEntry {
                user: u,
                sessions_valid_from: None,
                details: UserDetails::default(),
            },
        );
    }

    /// Sets what the posture reads say about a user (created, sync, sign-in
    /// activity, registration, risk); ignored for an unknown user.
    pub fn set_user_details(&self, user_id: &str, d: UserDetails) {
        if let Some(e) = self.st().users.get_mut(user_id) {
            e.details = d;
        }
    }

    /// The user's details as the posture reads see them.
    pub fn user_details(&self, user_id: &str) -> Option<UserDetails> {
        self.st().users.get(user_id).map(|e| e.details.clone())
    }

    /// The organization's displayName (default "Contoso").
    pub fn set_tenant_name(&self, name: &str) {
        self.st().tenant_name = name.to_string();
    }

    /// Which Microsoft Entra ID licences the tenant has (default both): without
    /// P1, `signInActivity` and registration details are refused; without P2,
    /// riskyUsers and the PIM schedules are.
    pub fn set_licences(&self, p1: bool, p2: bool) {
        let mut st = self.st();
        st.p1 = p1;
        st.p2 = p2;
    }

    /// The application permissions granted (`None`, the default: all). With a
    /// list, each read needs one of the permissions Graph documents for it and
    /// is answered 403 `Authorization_RequestDenied` otherwise.
    pub fn set_permissions(&self, granted: Option<Vec<String>>) {
        self.st().permissions = granted;
    }

    /// Sets the membershipRule of a dynamic group (default
    /// `(user.department -eq "Sales")`).
    pub fn set_group_membership_rule(&self, group_id: &str, rule: &str) {
        self.st()
            .group_rules
            .insert(group_id.to_string(), rule.to_string());
    }

    /// Adds a service principal, so role assignments to it expand to a
    /// `#microsoft.graph.servicePrincipal`.
    pub fn add_service_principal(&self, id: &str, display_name: &str) {
        self.st()
            .service_principals
            .insert(id.to_string(), display_name.to_string());
    }

    /// Adds (or replaces) a PIM eligible role assignment.
    pub fn add_eligibility(&self, e: RoleEligibility) {
        let mut st = self.st();
        st.eligibilities.retain(|x| x.id != e.id);
        st.eligibilities.push(e);
    }

    /// PIM eligible role assignments.
    pub fn eligibilities(&self) -> Vec<RoleEligibility> {
        self.st().eligibilities.clone()
    }

    /// The resource-unit budget Graph documents for an application in a tenant
    /// of this many users, per 10 seconds (for `Fault::ResourceUnits`).
    pub fn documented_resource_unit_budget(users: usize) -> u32 {
        limits::budget_for(users)
    }

    /// Fills the tenant with a realistic directory of `n_users` users (plus two
    /// break-glass Global Administrators), deterministic from `seed`: guests,
    /// disabled, stale and never-used accounts, missing MFA, a few risky users,
    /// about 50 groups (dynamic, synced, role-assignable) with members, about
    /// 30 role assignments (permanent, PIM, to groups) and eligibilities.
    pub fn generate(&self, n_users: usize, seed: u64) -> Generated {
        let mut st = self.st();
        generate::generate(&mut st, n_users, seed)
    }

    /// Deletes a user the way Graph does: it is gone from the directory, from
    /// every group's members and from its role assignments and eligibilities.
    pub fn delete_user(&self, id: &str) {
        let mut st = self.st();
        st.users.remove(id);
        for m in st.members.values_mut() {
            m.retain(|x| x != id);
        }
        st.role_assignments.retain(|a| a.principal_id != id);
        st.eligibilities.retain(|e| e.principal_id != id);
    }

    /// The user with this id, as it is now.
    pub fn user(&self, id: &str) -> Option<User> {
        self.st().users.get(id).map(|e| e.user.clone())
    }

    /// Adds (or replaces) a group.
    pub fn add_group(&self, g: Group) {
        let mut st = self.st();
        st.members.entry(g.id.clone()).or_default();
        st.groups.insert(g.id.clone(), g);
    }

    /// Makes a user (or group) a direct member of a group.
    pub fn add_member(&self, group_id: &str, user_id: &str) {
        let mut st = self.st();
        let m = st.members.entry(group_id.to_string()).or_default();
        if !m.iter().any(|x| x == user_id) {
            m.push(user_id.to_string());
        }
    }

    /// Direct member ids of a group, in the order they were added.
    pub fn members(&self, group_id: &str) -> Vec<String> {
        self.st().members.get(group_id).cloned().unwrap_or_default()
    }

    /// Adds an active role assignment (`pim_managed` gives it a roleAssignmentScheduleInstance).
    pub fn add_role_assignment(&self, a: RoleAssignment) {
        let mut st = self.st();
        st.role_assignments.retain(|x| x.id != a.id);
        st.role_assignments.push(a);
    }

    /// Gives a role assignment a PIM schedule (and makes it PIM-managed): its
    /// roleAssignmentScheduleInstance then carries these dates and type.
    pub fn set_pim_schedule(&self, assignment_id: &str, s: PimSchedule) {
        let mut st = self.st();
        for a in st
            .role_assignments
            .iter_mut()
            .filter(|a| a.id == assignment_id)
        {
            a.pim_managed = true;
        }
        st.pim_schedules.insert(assignment_id.to_string(), s);
    }

    /// The PIM schedule of an active role assignment, when it has one of its own
    /// (set by `set_pim_schedule` or an `adminAssign` schedule request).
    pub fn pim_schedule(&self, assignment_id: &str) -> Option<PimSchedule> {
        self.st().pim_schedules.get(assignment_id).cloned()
    }

    /// Active role assignments.
    pub fn role_assignments(&self) -> Vec<RoleAssignment> {
        self.st().role_assignments.clone()
    }

    /// Conditional Access policies as Graph returns them in a list.
    pub fn ca_policies(&self) -> Vec<Value> {
        self.st().ca_policies.clone()
    }

    /// How many Conditional Access creates or updates were refused (400) for
    /// exceeding the policy size limit of 10,240 bytes of JSON.
    pub fn ca_oversized_refusals(&self) -> u32 {
        self.st().ca_oversized
    }

    /// The size limit the fake enforces on a Conditional Access policy, in bytes.
    pub const CA_POLICY_MAX_BYTES: usize = graph::CA_POLICY_MAX_BYTES;

    /// How many groups were created through `POST /groups`.
    pub fn created_groups(&self) -> u32 {
        self.st().created_groups
    }

    /// Groups of the directory, as the test or `POST /groups` made them.
    pub fn groups(&self) -> Vec<Group> {
        let mut g: Vec<Group> = self.st().groups.values().cloned().collect();
        g.sort_by(|a, b| a.id.cmp(&b.id));
        g
    }

    /// Deletes a Conditional Access policy behind the client's back (not recorded).
    pub fn delete_ca_policy_out_of_band(&self, id: &str) {
        self.st()
            .ca_policies
            .retain(|p| p.get("id").and_then(Value::as_str) != Some(id));
    }

    /// Whether GETs count toward the Conditional Access one-request-per-second limit
    /// (default true: Graph documents the limit for any request).
    pub fn set_ca_read_throttling(&self, on: bool) {
        self.st().ca_throttle_reads = on;
    }

    /// Whether the items of a `$batch` are served in parallel (every item whose
    /// `dependsOn` are settled at once, each after its own latency) instead of
    /// one after another (the default): Graph does not say which it does, so
    /// the executor is measured against both.
    pub fn set_parallel_batch_items(&self, on: bool) {
        self.st().parallel_batch_items = on;
    }

    /// Sets the user's `signInSessionsValidFromDateTime` (RFC 3339, whole seconds
    /// as Graph gives it; `None` reads null), as if sessions were revoked then.
    pub fn set_sessions_valid_from(&self, user_id: &str, at: Option<&str>) {
        if let Some(e) = self.st().users.get_mut(user_id) {
            e.sessions_valid_from = at.map(str::to_string);
        }
    }

    /// The user's `signInSessionsValidFromDateTime`, which `revokeSignInSessions`
    /// resets to the current time.
    pub fn sessions_valid_from(&self, user_id: &str) -> Option<String> {
        self.st()
            .users
            .get(user_id)
            .and_then(|e| e.sessions_valid_from.clone())
    }

    /// How many times this user's sessions were revoked.
    pub fn revocations(&self, user_id: &str) -> u32 {
        self.st().revocations.get(user_id).copied().unwrap_or(0)
    }

    /// Injects a fault.
    pub fn inject(&self, f: Fault) {
        self.st().faults.push(f);
    }

    /// Removes every fault (and forgets the rate-limit window).
    pub fn clear_faults(&self) {
        let mut st = self.st();
        st.faults.clear();
        st.rate_window.clear();
        st.ru_window.clear();
    }

    /// Lets `client_id` sign users in with this redirect URI (several may be
    /// registered); the authorize endpoint refuses unregistered ones. Redeeming
    /// codes also needs a secret or certificate of the same client id.
    pub fn register_app_redirect(&self, client_id: &str, redirect_uri: &str) {
        let mut st = self.st();
        let uris = st.oidc.redirects.entry(client_id.to_string()).or_default();
        if !uris.iter().any(|u| u == redirect_uri) {
            uris.push(redirect_uri.to_string());
        }
    }

    /// The user (UPN) the next authorize request signs in without showing the
    /// sign-in page, whatever its `login_hint`; `None` forgets it.
    pub fn set_next_sign_in(&self, user_principal_name: Option<&str>) {
        self.st().oidc.next_sign_in = user_principal_name.map(str::to_string);
    }

    /// Signs ID tokens from now on with a key the JWKS does not publish (the
    /// header still names the published key's `kid`), so signature checks fail.
    pub fn set_oidc_signing_key_mismatch(&self, on: bool) {
        self.st().oidc.key_mismatch = on;
    }

    /// Spoils every ID token issued from now on (`None`: correct tokens again).
    pub fn set_id_token_fault(&self, fault: Option<IdTokenFault>) {
        self.st().oidc.fault = fault;
    }

    /// Every authorization code issued so far, in order, with what the client
    /// sent (PKCE, state, nonce) and how often it was presented for redemption.
    pub fn oidc_authorizations(&self) -> Vec<OidcAuthorization> {
        self.st()
            .oidc
            .codes
            .iter()
            .map(|(a, _, _)| a.clone())
            .collect()
    }

    /// Ages every authorization code issued so far past its ten minutes, so
    /// redeeming it gets `invalid_grant` AADSTS70008.
    pub fn expire_oidc_codes(&self) {
        let aged = std::time::Instant::now().checked_sub(Duration::from_secs(601));
        for (_, _, issued) in self.st().oidc.codes.iter_mut() {
            if let Some(t) = aged {
                *issued = t;
            }
        }
    }

    /// The issuer of ID tokens, `{base}/{tenant}/v2.0`; discovery is at
    /// `{issuer}/.well-known/openid-configuration`.
    pub fn oidc_issuer(&self) -> String {
        oidc::issuer(&self.shared.base_url, &self.shared.tenant)
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.st().requests.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.st().requests.clear();
    }

    /// The most `$batch` envelopes served at once since the previous call (or
    /// the start): how many a client kept in flight.
    pub fn take_peak_batches_in_flight(&self) -> usize {
        self.shared.batches.take_peak()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn handle_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<super::FakeTenant>();
        check::<super::Fault>();
        check::<super::RecordedRequest>();
    }
}

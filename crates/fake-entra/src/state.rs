//! The tenant's state behind one `std::sync::Mutex` (never held across an await).

use crate::util::{Req, Resp, graph_error, too_many_requests};
use crate::{
    Fault, Group, PimSchedule, RecordedRequest, RoleAssignment, RoleEligibility, User, UserDetails,
};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A trusted certificate of an application.
#[derive(Clone, Debug)]
pub(crate) struct Cert {
    /// Base64url SHA-256 of the DER (`x5t#S256`).
    pub x5t_s256: String,
    /// Base64url SHA-1 of the DER (`x5t`).
    pub x5t: String,
    /// PKCS#1 `RSAPublicKey` DER of the certificate's key.
    pub rsa_public_key: Vec<u8>,
}

/// An application registration's credentials.
#[derive(Clone, Debug, Default)]
pub(crate) struct App {
    /// Client secrets.
    pub secrets: Vec<String>,
    /// Trusted certificates.
    pub certs: Vec<Cert>,
}

/// An issued access token.
#[derive(Clone, Debug)]
pub(crate) struct TokenInfo {
    /// Application it was issued to.
    pub client_id: String,
    /// When it stops being accepted.
    pub expires: Instant,
    /// Set by `expire_all_tokens`.
    pub revoked: bool,
}

/// A user plus the state the fake keeps about it.
#[derive(Clone, Debug)]
pub(crate) struct UserEntry {
    /// The user as the test defined it (accountEnabled updated by PATCH).
    pub user: User,
    /// Set by revokeSignInSessions.
    pub sessions_valid_from: Option<String>,
    /// Creation time, sync, sign-in activity, MFA registration and risk.
    pub details: UserDetails,
}

/// Where a fault pattern is evaluated: an empty pattern matches only Graph
/// requests (including each `$batch` item), never the token endpoint nor the
/// `$batch` envelope; a non-empty pattern is matched everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// A Graph request or `$batch` item.
    Graph,
    /// The token endpoint, the `$batch` envelope, unknown paths.
    Other,
}

fn pattern_matches(pattern: &str, line: &str, scope: Scope) -> bool {
    if pattern.is_empty() {
        scope == Scope::Graph
    } else {
        line.contains(pattern)
    }
}

/// Everything the fake tenant knows.
pub(crate) struct State {
    pub apps: HashMap<String, App>,
    pub tokens: HashMap<String, TokenInfo>,
    pub token_lifetime: u64,
    /// Users by id; ordered, so listings page by key without sorting.
    pub users: BTreeMap<String, UserEntry>,
    pub groups: HashMap<String, Group>,
    pub members: HashMap<String, Vec<String>>,
    /// membershipRule of dynamic groups, by group id (a default rule otherwise).
    pub group_rules: HashMap<String, String>,
    /// Service principals (id -> displayName), for `$expand=principal`.
    pub service_principals: HashMap<String, String>,
    pub role_assignments: Vec<RoleAssignment>,
    /// PIM eligible assignments.
    pub eligibilities: Vec<RoleEligibility>,
    /// organization displayName.
    pub tenant_name: String,
    /// Microsoft Entra ID P1 (sign-in activity, registration details).
    pub p1: bool,
    /// Microsoft Entra ID P2 (risky users, PIM).
    pub p2: bool,
    /// Granted application permissions; `None` grants everything.
    pub permissions: Option<Vec<String>>,
    /// Resource units charged in the last 10 seconds (`Fault::ResourceUnits`).
    pub ru_window: VecDeque<(Instant, u32)>,
    /// PIM schedules of active assignments, by assignment id.
    pub pim_schedules: HashMap<String, PimSchedule>,
    pub ca_policies: Vec<Value>,
    /// Conditional Access writes refused for exceeding the size limit.
    pub ca_oversized: u32,
    /// Groups created through `POST /groups`.
    pub created_groups: u32,
    pub ca_last: Option<Instant>,
    pub ca_throttle_reads: bool,
    /// Whether a `$batch`'s items run in parallel (each wave of items whose
    /// dependencies are settled at once) instead of one after another.
    pub parallel_batch_items: bool,
    pub revocations: HashMap<String, u32>,
    pub faults: Vec<Fault>,
    pub rate_window: VecDeque<Instant>,
    pub requests: Vec<RecordedRequest>,
    pub started: i64,
    pub token_key: [u8; 32],
    /// Sign-in: redirect URIs, codes issued, ID token faults.
    pub oidc: crate::oidc::OidcState,
}

impl State {
    /// A fresh, empty tenant.
    pub(crate) fn new() -> State {
        let mut token_key = [0u8; 32];
        token_key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        token_key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        State {
            apps: HashMap::new(),
            tokens: HashMap::new(),
            token_lifetime: 3600,
            users: BTreeMap::new(),
            groups: HashMap::new(),
            members: HashMap::new(),
            group_rules: HashMap::new(),
            service_principals: HashMap::new(),
            role_assignments: Vec::new(),
            eligibilities: Vec::new(),
            tenant_name: "Contoso".to_string(),
            p1: true,
            p2: true,
            permissions: None,
            ru_window: VecDeque::new(),
            pim_schedules: HashMap::new(),
            ca_policies: Vec::new(),
            ca_oversized: 0,
            created_groups: 0,
            ca_last: None,
            ca_throttle_reads: true,
            parallel_batch_items: false,
            revocations: HashMap::new(),
            faults: Vec::new(),
            rate_window: VecDeque::new(),
            requests: Vec::new(),
            started: crate::util::unix_now(),
            token_key,
            oidc: crate::oidc::OidcState::default(),
        }
    }

    /// Total injected latency for this request.
    pub(crate) fn latency_for(&self, line: &str, scope: Scope) -> Duration {
        self.faults
            .iter()
            .filter_map(|f| match f {
                Fault::Latency { matching, delay } if pattern_matches(matching, line, scope) => {
                    Some(*delay)
                }
                _ => None,
            })
            .sum()
    }

    /// Throttle / ServerError / RateLimit faults; consumes counts.
    pub(crate) fn apply_faults(&mut self, line: &str, scope: Scope, now: Instant) -> Option<Resp> {
        let mut hit = None;
        for f in self.faults.iter_mut() {
            match f {
                Fault::Throttle {
                    matching,
                    count,
                    retry_after,
                } if *count > 0 && pattern_matches(matching, line, scope) => {
                    *count -= 1;
                    let mut r = too_many_requests();
                    if let Some(secs) = retry_after {
                        r = r.with_header("Retry-After", &format!("{secs}"));
                    }
                    hit = Some(r);
                    break;
                }
                Fault::ServerError {
                    matching,
                    count,
                    status,
                } if *count > 0 && pattern_matches(matching, line, scope) => {
                    *count -= 1;
                    hit = Some(server_error(*status));
                    break;
                }
                _ => {}
            }
        }
        self.faults.retain(|f| match f {
            Fault::Throttle { count, .. } | Fault::ServerError { count, .. } => *count > 0,
            _ => true,
        });
        if hit.is_some() {
            return hit;
        }
        if scope != Scope::Graph {
            return None;
        }
        let limit = self
            .faults
            .iter()
            .filter_map(|f| match f {
                Fault::RateLimit { per_second } => Some(*per_second),
                _ => None,
            })
            .min()?;
        while let Some(front) = self.rate_window.front() {
            if now.duration_since(*front) >= Duration::from_secs(1) {
                self.rate_window.pop_front();
            } else {
                break;
            }
        }
        if self.rate_window.len() >= limit as usize {
            return Some(too_many_requests().with_header("Retry-After", "1"));
        }
        self.rate_window.push_back(now);
        None
    }

    /// The documented limit of Identity Protection and Conditional Access: one
    /// request per second per tenant for all apps, shared by both, answered 429
    /// without `Retry-After`.
    pub(crate) fn ca_limit(&mut self, req: &Req, now: Instant) -> Option<Resp> {
        let lower = req.path.to_ascii_lowercase();
        if !lower.starts_with("/identity/conditionalaccess")
            && !lower.starts_with("/identityprotection")
        {
            return None;
        }
        if req.method == "GET" && !self.ca_throttle_reads {
            return None;
        }
        if let Some(last) = self.ca_last
            && now.duration_since(last) < Duration::from_secs(1)
        {
            return Some(too_many_requests());
        }
        self.ca_last = Some(now);
        None
    }

    /// The bearer token's application, or the 401 Graph gives.
    pub(crate) fn authenticate(&self, authorization: Option<&str>) -> Result<String, Resp> {
        let unauthorized = |msg: &str| {
            graph_error(401, "InvalidAuthenticationToken", msg).with_header(
                "WWW-Authenticate",
                "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"",
            )
        };
        let token = authorization
            .and_then(|h| {
                let (scheme, rest) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err(unauthorized("Access token is empty."));
        };
        let Some(info) = self.tokens.get(token) else {
            if !token.contains('.') {
                return Err(unauthorized(
                    "IDX14100: JWT is not well formed, there are no dots (.).\nThe token needs to be in JWS or JWE Compact Serialization Format. (JWS): 'EncodedHeader.EndcodedPayload.EncodedSignature'. (JWE): 'EncodedProtectedHeader.EncodedEncryptedKey.EncodedInitializationVector.EncodedCiphertext.EncodedAuthenticationTag'.",
                ));
            }
            return Err(unauthorized(
                "Access token validation failure. Invalid signature.",
            ));
        };
        if info.revoked || Instant::now() >= info.expires {
            return Err(unauthorized(
                "Access token has expired or is not yet valid.",
            ));
        }
        Ok(info.client_id.clone())
    }

    /// Finds a user by id or userPrincipalName.
    pub(crate) fn find_user(&self, key: &str) -> Option<&UserEntry> {
        self.users.get(key).or_else(|| {
            self.users
                .values()
                .find(|u| u.user.user_principal_name.eq_ignore_ascii_case(key))
        })
    }

    /// Adds an entry to the request record.
    pub(crate) fn record(&mut self, r: RecordedRequest) {
        self.requests.push(r);
    }
}

/// The Graph error for an injected 5xx.
fn server_error(status: u16) -> Resp {
    let (code, msg) = match status {
        500 => ("generalException", "An unspecified error has occurred."),
        502 => ("BadGateway", "Bad Gateway."),
        503 => (
            "serviceNotAvailable",
            "The service is not available. Try the request again after a delay.",
        ),
        504 => ("GatewayTimeout", "Gateway Timeout."),
        // What Graph answers when the app may not change this object (for
        // example a privileged administrator without the right directory role).
        403 => (
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        ),
        _ => ("UnknownError", "An unknown error has occurred."),
    };
    graph_error(status, code, msg)
}

/// Locks the state, recovering from a poisoned lock (a panicking test thread
/// must not wedge the server).
pub(crate) fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

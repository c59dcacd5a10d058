//! Console sessions, kept in the daemon's memory: a random id in an `HttpOnly`,
//! `SameSite=Strict` cookie, the signed-in caller, a CSRF token, idle and
//! absolute expiry. Only the SHA-256 of a session id is held, so neither memory
//! dumps nor logs carry a usable id. Sign-ins in progress (state, nonce, PKCE
//! verifier) are kept here too, bound to the browser by a short-lived cookie.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::access::Caller;

/// Most sessions held at once; the least recently used goes first beyond it.
const MAX_SESSIONS: usize = 10_000;
/// Most sign-ins in progress at once.
const MAX_PENDING: usize = 1_000;
/// How long a sign-in may take at the identity provider.
pub const PENDING_TTL: Duration = Duration::from_secs(10 * 60);

/// A signed-in person's session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who, with their roles.
    pub caller: Caller,
    /// The person's display name, for the page header.
    pub display_name: String,
    /// The token every state-changing form must carry.
    pub csrf: String,
    /// When the person signed in.
    created: Instant,
    /// When the session was last used.
    last_seen: Instant,
}

/// A sign-in started here and not finished at the identity provider yet.
#[derive(Debug, Clone)]
pub struct PendingLogin {
    /// The `state` sent to the identity provider.
    pub state: String,
    /// The `nonce` the ID token must carry.
    pub nonce: String,
    /// The PKCE code verifier.
    pub verifier: String,
    /// The console page to return to.
    pub return_to: String,
    created: Instant,
}

/// The cookie names, which depend on whether cookies are `Secure`: the
/// `__Host-` prefix makes browsers refuse the cookie unless it is `Secure`,
/// host-only and for `/`.
#[derive(Debug, Clone, Copy)]
pub struct CookieNames {
    /// The session cookie.
    pub session: &'static str,
    /// The sign-in-in-progress cookie.
    pub login: &'static str,
    secure: bool,
}

impl CookieNames {
    /// The names and attributes for `secure` cookies or plain-HTTP loopback.
    pub fn new(secure: bool) -> CookieNames {
        if secure {
            CookieNames {
                session: "__Host-er-session",
                login: "__Host-er-login",
                secure,
            }
        } else {
            CookieNames {
                session: "er-session",
                login: "er-login",
                secure,
            }
        }
    }

    /// `Set-Cookie` for a new session id.
    pub fn session_cookie(&self, id: &str) -> String {
        self.cookie(self.session, id, "Strict", None)
    }

    /// `Set-Cookie` for a sign-in in progress. `Lax`, because the identity
    /// provider's redirect back is a cross-site navigation that a `Strict`
    /// cookie would not come with.
    pub fn login_cookie(&self, id: &str) -> String {
        self.cookie(self.login, id, "Lax", Some(PENDING_TTL.as_secs()))
    }

    /// `Set-Cookie` that removes `name`.
    pub fn clear(&self, name: &str) -> String {
        self.cookie(name, "", "Strict", Some(0))
    }

    fn cookie(&self, name: &str, value: &str, same_site: &str, max_age: Option<u64>) -> String {
        let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite={same_site}");
        if self.secure {
            c.push_str("; Secure");
        }
        if let Some(age) = max_age {
            c.push_str(&format!("; Max-Age={age}"));
        }
        c
    }
}

/// A new random token: 32 bytes from the operating system, URL-safe base64.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The value of cookie `name` in the request, if sent.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// Compares two tokens in constant time (through their digests).
pub fn same_token(a: &str, b: &str) -> bool {
    let (x, y) = (digest(a), digest(b));
    let diff = x
        .iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q));
    std::hint::black_box(diff) == 0
}

/// The sessions and sign-ins in progress of one daemon.
#[derive(Debug, Default)]
pub struct Sessions {
    live: Mutex<HashMap<[u8; 32], Session>>,
    pending: Mutex<HashMap<[u8; 32], PendingLogin>>,
}

impl Sessions {
    /// Starts a session for `caller`; returns the id for the cookie (only its
    /// digest is kept).
    pub fn create(&self, caller: Caller, display_name: String) -> String {
        let id = random_token();
        let now = Instant::now();
        let session = Session {
            caller,
            display_name,
            csrf: random_token(),
            created: now,
            last_seen: now,
        };
        let mut live = lock(&self.live);
        if live.len() >= MAX_SESSIONS
            && let Some(oldest) = live
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| *k)
        {
            live.remove(&oldest);
        }
        live.insert(digest(&id), session);
        id
    }

    /// The session with this id if it has not expired; using it counts as
    /// activity. An expired session is removed.
    pub fn touch(&self, id: &str, idle: Duration, lifetime: Duration) -> Option<Session> {
        let key = digest(id);
        let mut live = lock(&self.live);
        let now = Instant::now();
        let s = live.get_mut(&key)?;
        if now.duration_since(s.last_seen) > idle || now.duration_since(s.created) > lifetime {
            live.remove(&key);
            return None;
        }
        s.last_seen = now;
        Some(s.clone())
    }

    /// Ends a session.
    pub fn end(&self, id: &str) {
        lock(&self.live).remove(&digest(id));
    }

    /// Removes every session idle longer than `idle` or older than `lifetime`,
    /// and sign-ins in progress for too long.
    pub fn sweep(&self, idle: Duration, lifetime: Duration) {
        let now = Instant::now();
        lock(&self.live).retain(|_, s| {
            now.duration_since(s.last_seen) <= idle && now.duration_since(s.created) <= lifetime
        });
        lock(&self.pending).retain(|_, p| now.duration_since(p.created) <= PENDING_TTL);
    }

    /// Records a sign-in in progress; returns the id for its cookie.
    pub fn start_login(
        &self,
        state: String,
        nonce: String,
        verifier: String,
        return_to: String,
    ) -> String {
        let id = random_token();
        let mut pending = lock(&self.pending);
        let now = Instant::now();
        pending.retain(|_, p| now.duration_since(p.created) <= PENDING_TTL);
        if pending.len() >= MAX_PENDING
            && let Some(oldest) = pending
                .iter()
                .min_by_key(|(_, p)| p.created)
                .map(|(k, _)| *k)
        {
            pending.remove(&oldest);
        }
        pending.insert(
            digest(&id),
            PendingLogin {
                state,
                nonce,
                verifier,
                return_to,
                created: now,
            },
        );
        id
    }

    /// Takes the sign-in in progress of this cookie id (once: a replayed
    /// callback finds nothing).
    pub fn finish_login(&self, id: &str) -> Option<PendingLogin> {
        let p = lock(&self.pending).remove(&digest(id))?;
        (p.created.elapsed() <= PENDING_TTL).then_some(p)
    }

    /// How many sessions are live (for tests and metrics).
    pub fn len(&self) -> usize {
        lock(&self.live).len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{Interface, Roles};
    use axum::http::HeaderValue;

    fn alice() -> Caller {
        Caller {
            name: "alice@contoso.com".into(),
            interface: Interface::Console,
            roles: Roles::NONE,
        }
    }

    #[test]
    fn sessions_expire_when_idle_and_are_found_by_id_only() {
        let s = Sessions::default();
        let id = s.create(alice(), "Alice".into());
        let long = Duration::from_secs(3600);
        assert_eq!(
            s.touch(&id, long, long).unwrap().caller.name,
            "alice@contoso.com"
        );
        assert!(s.touch("not-the-id", long, long).is_none());
        std::thread::sleep(Duration::from_millis(20));
        assert!(s.touch(&id, Duration::from_millis(5), long).is_none());
        assert!(s.is_empty(), "an expired session is removed");
        let id = s.create(alice(), "Alice".into());
        s.end(&id);
        assert!(s.touch(&id, long, long).is_none());
    }

    #[test]
    fn a_sign_in_in_progress_is_taken_once() {
        let s = Sessions::default();
        let id = s.start_login("st".into(), "n".into(), "v".into(), "/console".into());
        assert_eq!(s.finish_login(&id).unwrap().state, "st");
        assert!(s.finish_login(&id).is_none());
    }

    #[test]
    fn cookies_are_parsed_and_written_with_their_attributes() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; er-session=xyz"),
        );
        assert_eq!(cookie(&h, "er-session"), Some("xyz"));
        assert_eq!(cookie(&h, "b"), None);
        let secure = CookieNames::new(true).session_cookie("id");
        assert!(
            secure.starts_with("__Host-er-session=id; Path=/; HttpOnly; SameSite=Strict; Secure")
        );
        assert!(
            !CookieNames::new(false)
                .session_cookie("id")
                .contains("Secure")
        );
        assert!(
            CookieNames::new(true)
                .login_cookie("x")
                .contains("SameSite=Lax")
        );
        assert!(same_token("abc", "abc") && !same_token("abc", "abd"));
    }
}

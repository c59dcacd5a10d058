//! The API's named bearer tokens: where each is read from, the set SIGHUP
//! replaces, and the constant-time match of a request's `Authorization` header
//! to the one token (and so the caller) it names.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};

use crate::access::{Caller, Interface, Roles};
use crate::config::{ApiConfig, ApiTokenConfig, LEGACY_TOKEN_NAME};

/// One token in force: the name history records for its holder, the digest of
/// its secret (the secret itself is not kept) and the roles it grants.
#[derive(Clone, PartialEq, Eq)]
pub struct NamedToken {
    name: String,
    digest: [u8; 32],
    roles: Roles,
}

impl NamedToken {
    /// A token named `name` whose secret is `secret`, granting `roles`.
    pub fn new(name: &str, secret: &str, roles: Roles) -> NamedToken {
        NamedToken {
            name: name.to_string(),
            digest: Sha256::digest(secret.as_bytes()).into(),
            roles,
        }
    }

    /// The token's configured name (history records `token:NAME`).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Debug for NamedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the digest: it would let a log reader test guesses offline.
        f.debug_struct("NamedToken")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

/// The API's tokens, shared with the daemon so that SIGHUP can replace the
/// whole set (a rotated token works at once and the old one is refused).
#[derive(Clone)]
pub struct Tokens(Arc<RwLock<Arc<[NamedToken]>>>);

impl Tokens {
    /// A slot holding `set`.
    pub fn new(set: Vec<NamedToken>) -> Tokens {
        Tokens(Arc::new(RwLock::new(Arc::from(set))))
    }

    /// The tokens in force now.
    pub fn current(&self) -> Arc<[NamedToken]> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the set; requests after this need one of the new tokens.
    /// Answers whether anything (a secret, a name, a role) changed.
    pub fn replace(&self, set: Vec<NamedToken>) -> bool {
        let mut slot = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = **slot != *set;
        *slot = Arc::from(set);
        changed
    }
}

/// The caller a request's bearer token names, or `None` when it names none.
pub(super) fn caller(headers: &HeaderMap, tokens: &[NamedToken]) -> Option<Caller> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())?;
    let (scheme, given) = value.trim().split_once(' ')?;
    let given = given.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || given.is_empty() {
        return None;
    }
    let t = tokens.get(matching(given, tokens)?)?;
    Some(Caller {
        name: format!("token:{}", t.name),
        interface: Interface::Api,
        roles: t.roles,
    })
}

/// The index of the token whose secret is `given`. Every token is compared,
/// by SHA-256 digest and without an early exit, so the time taken reveals
/// neither which token matched, nor a matching prefix, nor a token's length.
fn matching(given: &str, tokens: &[NamedToken]) -> Option<usize> {
    let digest = Sha256::digest(given.as_bytes());
    // The index plus one of the match; 0 for none (names are unique by secret).
    let mut found = 0usize;
    for (i, t) in tokens.iter().enumerate() {
        let diff = t
            .digest
            .iter()
            .zip(digest.iter())
            .fold(0u8, |acc, (p, q)| acc | (p ^ q));
        // 1 when diff is 0, else 0, without a branch.
        let equal = (u16::from(diff).wrapping_sub(1) >> 8) as usize & 1;
        found |= 0usize.wrapping_sub(equal) & (i + 1);
    }
    std::hint::black_box(found).checked_sub(1)
}

/// Reads every token the config names (`[[api.tokens]]` and the legacy
/// `token_file` / `token_credential`); refuses an unreadable or empty one, and
/// two tokens with the same secret (the name recorded would be ambiguous).
pub fn load_tokens(cfg: &ApiConfig) -> Result<Vec<NamedToken>, String> {
    let entries = cfg.token_entries();
    if entries.is_empty() {
        return Err(
            "the API needs a bearer token: add an [[api.tokens]] entry (name, file or credential, roles)"
                .into(),
        );
    }
    // The legacy token, when set, is the first entry.
    let has_legacy = cfg.token_file.is_some() || cfg.token_credential.is_some();
    let mut set: Vec<NamedToken> = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let legacy = has_legacy && i == 0;
        let (source, path) = locate(e, legacy)?;
        let secret = read_secret(&source, &path, e.file.is_some())?;
        let token = NamedToken::new(&e.name, &secret, Roles::of(&e.roles));
        if let Some(other) = set.iter().find(|t| t.digest == token.digest) {
            return Err(format!(
                "the API tokens {:?} and {:?} have the same secret: give each its own, or the name history records would be ambiguous",
                other.name, e.name
            ));
        }
        set.push(token);
    }
    Ok(set)
}

/// Where one token is read from, and how errors name it.
fn locate(e: &ApiTokenConfig, legacy: bool) -> Result<(String, PathBuf), String> {
    let (file_key, credential_key) = if legacy {
        (
            "api.token_file".to_string(),
            "api.token_credential".to_string(),
        )
    } else {
        (
            format!("api.tokens {:?} file", e.name),
            format!("api.tokens {:?} credential", e.name),
        )
    };
    match (&e.file, &e.credential) {
        (Some(file), None) => Ok((format!("{file_key} {}", file.display()), file.clone())),
        (None, Some(name)) => {
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                return Err(format!(
                    "{credential_key} {name:?} must be a credential name, not a path"
                ));
            }
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                format!(
                    "{credential_key} {name:?} needs systemd's LoadCredential= ($CREDENTIALS_DIRECTORY is not set)"
                )
            })?;
            Ok((
                format!("{credential_key} {name:?}"),
                Path::new(&dir).join(name),
            ))
        }
        _ => Err(format!(
            "API token {:?}: give exactly one of a file or a credential",
            if legacy { LEGACY_TOKEN_NAME } else { &e.name }
        )),
    }
}

/// Reads one token: one line without spaces; warns when a file is readable by others.
fn read_secret(source: &str, path: &Path, is_file: bool) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the API token ({source}): {e}"))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("the API token ({source}) is empty"));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "the API token ({source}) must be one line without spaces"
        ));
    }
    #[cfg(unix)]
    if is_file {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path)
            && m.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                file = %path.display(),
                "an API token file is readable by group or others; chmod 600 it"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = is_file;
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Role;
    use axum::http::HeaderValue;

    fn set() -> Vec<NamedToken> {
        vec![
            NamedToken::new("ci", "s3cret-ci", Roles::of(&[Role::Operator])),
            NamedToken::new("alice", "s3cret-alice", Roles::of(&[Role::Approver])),
            NamedToken::new("bob", "s3cret-bob", Roles::of(&[Role::Approver])),
        ]
    }

    fn with(auth: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static(auth));
        h
    }

    #[test]
    fn a_bearer_token_names_exactly_its_own_caller() {
        let tokens = set();
        let alice = caller(&with("Bearer s3cret-alice"), &tokens).unwrap();
        assert_eq!(alice.name, "token:alice");
        assert_eq!(alice.interface, Interface::Api);
        assert!(alice.may(Role::Approver) && !alice.may(Role::Operator));
        let bob = caller(&with("bearer  s3cret-bob "), &tokens).unwrap();
        assert_eq!(bob.name, "token:bob");
        let ci = caller(&with("Bearer s3cret-ci"), &tokens).unwrap();
        assert_eq!(ci.name, "token:ci");
        assert!(!ci.may(Role::Approver));
        for refused in [
            "Bearer s3cret-alic",
            "Bearer s3cret-alice2",
            "Bearer ",
            "Basic s3cret-alice",
            "s3cret-alice",
        ] {
            assert_eq!(caller(&with(refused), &tokens), None, "{refused}");
        }
        assert_eq!(caller(&HeaderMap::new(), &tokens), None);
        assert_eq!(caller(&with("Bearer s3cret-ci"), &[]), None);
        assert_eq!(matching("s3cret-bob", &tokens), Some(2));
        assert_eq!(matching("s3cret-ci", &tokens), Some(0));
    }

    #[test]
    fn replacing_the_set_says_whether_it_changed() {
        let slot = Tokens::new(set());
        assert!(!slot.replace(set()));
        let mut rotated = set();
        rotated[1] = NamedToken::new("alice", "rotated", Roles::of(&[Role::Approver]));
        assert!(slot.replace(rotated));
        assert_eq!(matching("s3cret-alice", &slot.current()), None);
        assert_eq!(matching("rotated", &slot.current()), Some(1));
        let mut regranted = slot.current().to_vec();
        regranted[0] = NamedToken::new("ci", "s3cret-ci", Roles::of(&[Role::Admin]));
        assert!(slot.replace(regranted));
        assert!(!format!("{:?}", slot.current()).contains("digest"));
    }

    fn config(dir: &Path, tokens: &[(&str, &str)]) -> ApiConfig {
        let mut cfg = ApiConfig::default();
        for (name, secret) in tokens {
            let file = dir.join(name);
            std::fs::write(&file, format!("{secret}\n")).unwrap();
            cfg.tokens.push(ApiTokenConfig {
                name: name.to_string(),
                file: Some(file),
                credential: None,
                roles: vec![Role::Approver],
            });
        }
        cfg
    }

    #[test]
    fn load_tokens_reads_each_file_and_refuses_empty_shared_or_missing_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), &[("alice", "a1"), ("bob", "b2")]);
        let set = load_tokens(&cfg).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(matching("b2", &set), Some(1));
        assert_eq!(set[1].name(), "bob");

        let shared = config(dir.path(), &[("alice", "same"), ("bob", "same")]);
        let e = load_tokens(&shared).unwrap_err();
        assert!(
            e.contains("\"alice\" and \"bob\" have the same secret"),
            "{e}"
        );

        let empty = config(dir.path(), &[("alice", " ")]);
        assert!(load_tokens(&empty).unwrap_err().contains("empty"));
        let spaced = config(dir.path(), &[("alice", "a b")]);
        assert!(load_tokens(&spaced).unwrap_err().contains("one line"));
        assert!(
            load_tokens(&ApiConfig::default())
                .unwrap_err()
                .contains("needs a bearer token")
        );

        // The legacy token comes first, named "api", with the operator role.
        let mut legacy = config(dir.path(), &[("ci", "c3")]);
        std::fs::write(dir.path().join("legacy"), "l4").unwrap();
        legacy.token_file = Some(dir.path().join("legacy"));
        let set = load_tokens(&legacy).unwrap();
        assert_eq!(set[0].name(), LEGACY_TOKEN_NAME);
        assert_eq!(set[0].roles, Roles::of(&[Role::Operator]));
        legacy.token_file = Some(dir.path().join("absent"));
        let e = load_tokens(&legacy).unwrap_err();
        assert!(e.contains("api.token_file"), "{e}");
    }
}

//! Shares the strings a scan repeats: a 100k-identity scan names the same few
//! thousand groups in some 440k memberships, and every finding repeats the ids
//! of the identities it affects. While [`Interning`] is alive on a thread, the
//! scan's GUIDs and group names deserialized on that thread are looked up in
//! one set and shared (`Arc<str>`) instead of allocated once per occurrence.

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::Arc;

thread_local! {
    static POOL: RefCell<Option<HashSet<Arc<str>>>> = const { RefCell::new(None) };
}

/// The string as an `Arc<str>`: the shared one when interning is on.
pub(crate) fn shared(s: &str) -> Arc<str> {
    POOL.with(|pool| match pool.borrow_mut().as_mut() {
        Some(set) => match set.get(s) {
            Some(a) => a.clone(),
            None => {
                let a: Arc<str> = Arc::from(s);
                set.insert(a.clone());
                a
            }
        },
        None => Arc::from(s),
    })
}

/// Interning is on for this thread while this lives (one scan's parse).
pub(crate) struct Interning(());

impl Interning {
    /// Starts sharing strings on this thread.
    pub(crate) fn start() -> Interning {
        POOL.with(|pool| *pool.borrow_mut() = Some(HashSet::new()));
        Interning(())
    }
}

impl Drop for Interning {
    fn drop(&mut self) {
        POOL.with(|pool| *pool.borrow_mut() = None);
    }
}

/// Deserializes a string as a shared `Arc<str>` (no intermediate `String`).
pub(crate) fn shared_str<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = Arc<str>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Arc<str>, E> {
            Ok(shared(s))
        }
    }
    d.deserialize_str(V)
}

/// Serializes a shared string as a plain JSON string.
pub(crate) fn as_str<S: serde::Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_only_while_interning() {
        let (a, b) = (shared("x"), shared("x"));
        assert!(!Arc::ptr_eq(&a, &b), "no sharing outside a parse");
        let on = Interning::start();
        let (c, d) = (shared("x"), shared("x"));
        assert!(Arc::ptr_eq(&c, &d));
        assert_ne!(&*shared("y"), &*c);
        drop(on);
        assert!(!Arc::ptr_eq(&shared("x"), &shared("x")));
    }
}

//! A name the kernel or the host gives a drop (its reason, code location, namespace,
//! interface), copied into every drop and every handshake's note of it. A flood repeats the
//! same few names: interned, a name is a pointer and a length, and copying or dropping one
//! costs no atomic operation (an `Arc<str>` cost two per copy: one to share, one to free,
//! and each made the processor wait for the memory traffic before it).
//!
//! Interned names live for the rest of the process, so interning is bounded: at most
//! [`MAX_INTERNED`] names of at most [`MAX_INTERNED_LEN`] bytes. Past either bound a name is
//! shared as before (`Arc<str>`), correct and only slower.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::{Arc, Mutex};

/// Names interned at most, for the process's life.
pub const MAX_INTERNED: usize = 4096;
/// Room for names the host makes and unmakes (namespaces, interfaces): they are interned
/// while fewer than this many names are, the rest of the room kept for the kernel's (its
/// drop reasons and code locations). Past it they are shared.
pub const HOST_ROOM: usize = MAX_INTERNED / 2;
/// The longest name interned (longer ones are shared): at most 512 KiB kept in all.
pub const MAX_INTERNED_LEN: usize = 128;

static INTERNED: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);

/// Interns `s` in `set` unless it is full (`max`) or `s` is too long; shares it otherwise.
fn intern_in(set: &mut HashSet<&'static str>, s: &str, max: usize) -> Name {
    if s.len() <= MAX_INTERNED_LEN {
        if let Some(&kept) = set.get(s) {
            return Name(Repr::Interned(kept));
        }
        if set.len() < max {
            let kept: &'static str = Box::leak(s.into());
            set.insert(kept);
            return Name(Repr::Interned(kept));
        }
    }
    Name(Repr::Shared(s.into()))
}

#[derive(Clone)]
enum Repr {
    Interned(&'static str),
    Shared(Arc<str>),
}

/// A shared name; reads as its `str`. Equal, ordered and hashed by its text.
#[derive(Clone)]
pub struct Name(Repr);

impl Name {
    /// The name of `s`, interned while the bounds allow (one lock and lookup: for tables of
    /// names, not per event).
    pub fn intern(s: &str) -> Self {
        let mut set = INTERNED.lock().unwrap_or_else(|e| e.into_inner());
        intern_in(set.get_or_insert_with(HashSet::new), s, MAX_INTERNED)
    }

    /// [`Self::intern`] while fewer than `room` names are interned (a part of the room for
    /// names that come and go, as namespaces do, leaving the rest to the kernel's).
    pub fn intern_within(s: &str, room: usize) -> Self {
        let mut set = INTERNED.lock().unwrap_or_else(|e| e.into_inner());
        intern_in(
            set.get_or_insert_with(HashSet::new),
            s,
            room.min(MAX_INTERNED),
        )
    }

    /// The name of `s`, shared and never interned (text read back from files).
    pub fn shared(s: &str) -> Self {
        Self(Repr::Shared(s.into()))
    }

    /// A name from the program's text (never interned: it lives as long already).
    pub const fn from_static(s: &'static str) -> Self {
        Self(Repr::Interned(s))
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Interned(s) => s,
            Repr::Shared(s) => s,
        }
    }

    /// Where its text is: one interned name is one address (a copy of the text elsewhere
    /// has another).
    pub fn addr(&self) -> usize {
        self.as_str().as_ptr() as usize
    }

    /// Whether it is interned (copied without an atomic operation).
    pub fn is_interned(&self) -> bool {
        matches!(self.0, Repr::Interned(_))
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.as_str(), other.as_str());
        std::ptr::eq(a, b) || a == b
    }
}

impl Eq for Name {}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

/// As its `str` (so a table of names is looked up by a `&str`).
impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

/// Shared, not interned: interning is for the tables of names ([`Name::intern`]).
impl From<&str> for Name {
    fn from(s: &str) -> Self {
        Self::shared(s)
    }
}

impl From<String> for Name {
    fn from(s: String) -> Self {
        Self::shared(&s)
    }
}

impl serde::Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Read back (bundles, reports) shared, not interned: their text is not the kernel's.
impl<'de> serde::Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(Self::shared(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interned_names_are_one_and_read_as_their_text() {
        let a = Name::intern("NETFILTER_DROP");
        let b = Name::intern(&String::from("NETFILTER_DROP"));
        assert!(a.is_interned());
        assert_eq!(a.addr(), b.addr(), "one name, one address");
        assert_eq!(a, b);
        assert_eq!(&*a, "NETFILTER_DROP");
        assert_eq!(a.to_string(), "NETFILTER_DROP");
        assert_eq!(format!("{a:?}"), "\"NETFILTER_DROP\"");
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"NETFILTER_DROP\"");
        let back: Name = serde_json::from_str("\"NETFILTER_DROP\"").unwrap();
        assert_eq!(back, a, "equal by text, wherever it is");
        assert!(!back.is_interned());
        let mut t = std::collections::HashMap::new();
        t.insert(back, 1);
        assert_eq!(t.get("NETFILTER_DROP"), Some(&1), "looked up by its text");
    }

    #[test]
    fn interning_is_bounded() {
        let long = "x".repeat(MAX_INTERNED_LEN + 1);
        assert!(!Name::intern(&long).is_interned());
        assert_eq!(&*Name::intern(&long), long);
        // A table of room for 3 (the process's has MAX_INTERNED): past it, names are shared.
        let mut set = HashSet::new();
        for s in ["a", "b", "c", "a"] {
            assert!(intern_in(&mut set, s, 3).is_interned());
        }
        let late = intern_in(&mut set, "d", 3);
        assert!(!late.is_interned());
        assert_eq!(&*late, "d");
        assert!(
            intern_in(&mut set, "b", 3).is_interned(),
            "kept ones still are"
        );
        assert_eq!(set.len(), 3);
    }
}

//! Typed keys, the values that flow between atoms, and failures.
//!
//! Values stay typed in memory (`Arc<dyn Any>`): the in-memory path never touches JSON.
//! A value is serialized only when a persistent store writes it, and a value loaded from
//! a store stays JSON until a task reads it with its typed key.

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use smallvec::SmallVec;

/// What a value moved between atoms must be: cloneable, shareable and serializable.
pub trait Value: Any + Clone + Send + Sync + Serialize + DeserializeOwned {}

impl<T: Any + Clone + Send + Sync + Serialize + DeserializeOwned> Value for T {}

/// A typed symbol name. Tasks name their inputs and outputs with keys, so a rename is a
/// compile error and a type mismatch cannot be written.
pub struct Key<T> {
    name: &'static str,
    _type: PhantomData<fn() -> T>,
}

impl<T> Key<T> {
    /// A key named `name`.
    pub const fn new(name: &'static str) -> Self {
        Self { name, _type: PhantomData }
    }

    /// The symbol name.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

impl<T> Clone for Key<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Key<T> {}

impl<T> fmt::Debug for Key<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:?})", self.name)
    }
}

type ToJson = fn(&(dyn Any + Send + Sync)) -> serde_json::Result<Json>;

/// One stored value: typed (made in this process) or JSON (loaded from a store).
#[derive(Clone)]
pub enum Slot {
    Typed(Arc<dyn Any + Send + Sync>, ToJson),
    Json(Arc<Json>),
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Slot::Typed(..) => f.write_str("Slot::Typed(..)"),
            Slot::Json(j) => write!(f, "Slot::Json({j})"),
        }
    }
}

fn to_json<T: Value>(v: &(dyn Any + Send + Sync)) -> serde_json::Result<Json> {
    match v.downcast_ref::<T>() {
        Some(v) => serde_json::to_value(v),
        None => Ok(Json::Null),
    }
}

impl Slot {
    /// A typed slot.
    pub fn new<T: Value>(value: T) -> Self {
        Slot::Typed(Arc::new(value), to_json::<T>)
    }

    /// The value as `T`, cloned; a JSON slot is deserialized.
    pub fn get<T: Value>(&self, name: &str) -> Result<T, Failure> {
        match self {
            Slot::Typed(v, _) => v.downcast_ref::<T>().cloned().ok_or_else(|| {
                Failure::new(
                    "TypeMismatch",
                    format!("{name:?} does not hold a {}", std::any::type_name::<T>()),
                )
            }),
            Slot::Json(j) => T::deserialize(&**j).map_err(|e| {
                Failure::new("TypeMismatch", format!("{name:?} is not a {}: {e}", std::any::type_name::<T>()))
            }),
        }
    }

    /// The value as JSON.
    pub fn to_json(&self) -> serde_json::Result<Json> {
        match self {
            Slot::Typed(v, f) => f(&**v),
            Slot::Json(j) => Ok((**j).clone()),
        }
    }
}

/// A symbol name: static for names that come from keys, owned for names loaded from a store.
pub type Name = Cow<'static, str>;

/// A small map of named values: a task's outputs, a flow's inputs, an atom's arguments.
#[derive(Clone, Debug, Default)]
pub struct Values {
    entries: SmallVec<[(Name, Slot); 2]>,
}

impl Values {
    /// No values.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) `key`'s value.
    pub fn with<T: Value>(mut self, key: &Key<T>, value: T) -> Self {
        self.insert_slot(Cow::Borrowed(key.name()), Slot::new(value));
        self
    }

    /// Adds (or replaces) `key`'s value.
    pub fn set<T: Value>(&mut self, key: &Key<T>, value: T) {
        self.insert_slot(Cow::Borrowed(key.name()), Slot::new(value));
    }

    /// Adds (or replaces) a value by name.
    pub fn insert_slot(&mut self, name: Name, slot: Slot) {
        match self.entries.iter_mut().find(|(n, _)| *n == name) {
            Some(e) => e.1 = slot,
            None => self.entries.push((name, slot)),
        }
    }

    /// The slot named `name`.
    pub fn slot(&self, name: &str) -> Option<&Slot> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }

    /// Whether a value named `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.slot(name).is_some()
    }

    /// `key`'s value, if present.
    pub fn get<T: Value>(&self, key: &Key<T>) -> Result<Option<T>, Failure> {
        self.slot(key.name()).map(|s| s.get(key.name())).transpose()
    }

    /// The names present.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_ref())
    }

    /// The entries.
    pub fn iter(&self) -> impl Iterator<Item = (&Name, &Slot)> {
        self.entries.iter().map(|(n, s)| (n, s))
    }

    /// How many values.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Copies every entry of `other` in, replacing same-named ones.
    pub fn extend_from(&mut self, other: &Values) {
        for (n, s) in other.iter() {
            self.insert_slot(n.clone(), s.clone());
        }
    }

    /// The values as one JSON object.
    pub fn to_json(&self) -> serde_json::Result<Json> {
        let mut map = serde_json::Map::with_capacity(self.entries.len());
        for (n, s) in &self.entries {
            map.insert(n.to_string(), s.to_json()?);
        }
        Ok(Json::Object(map))
    }

    /// Values from a JSON object (anything else gives an error message).
    pub fn from_json(json: Json) -> Result<Self, String> {
        match json {
            Json::Object(map) => Ok(Self {
                entries: map.into_iter().map(|(k, v)| (Cow::Owned(k), Slot::Json(Arc::new(v)))).collect(),
            }),
            Json::Null => Ok(Self::new()),
            other => Err(format!("expected a JSON object of values, found {other}")),
        }
    }
}

/// Why an atom failed: the error's kind, message and cause chain. It survives a round trip
/// through a store (the live error does not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<String>,
}

impl Failure {
    /// A failure of `kind` saying `message`.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self { kind: kind.into(), message: message.into(), causes: Vec::new() }
    }

    /// The kind of a failure that says a dependency (a database) is unavailable for now:
    /// `unavailable`, alone or as the last dot-separated part (`service.unavailable`).
    pub const UNAVAILABLE: &'static str = "unavailable";

    /// Whether this failure is transient ([`Failure::UNAVAILABLE`]): a worker's run keeps
    /// the atom and runs it again later rather than revert the flow.
    pub fn is_transient(&self) -> bool {
        self.kind.rsplit('.').next() == Some(Self::UNAVAILABLE)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)?;
        for c in &self.causes {
            write!(f, ": {c}")?;
        }
        Ok(())
    }
}

/// Any error converts into a failure, so tasks use `?`: the kind is the error's type name,
/// the causes its `source()` chain.
impl<E: std::error::Error + 'static> From<E> for Failure {
    fn from(e: E) -> Self {
        let kind = std::any::type_name::<E>().rsplit("::").next().unwrap_or("Error").to_owned();
        let mut causes = Vec::new();
        let mut src = e.source();
        while let Some(s) = src {
            causes.push(s.to_string());
            src = s.source();
        }
        Self { kind, message: e.to_string(), causes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: Key<u64> = Key::new("size");
    const NAME: Key<String> = Key::new("name");

    #[test]
    fn typed_values_survive_json() {
        let v = Values::new().with(&SIZE, 10).with(&NAME, "a".to_owned());
        assert_eq!(v.get(&SIZE).unwrap(), Some(10));
        let back = Values::from_json(v.to_json().unwrap()).unwrap();
        assert_eq!(back.get(&SIZE).unwrap(), Some(10));
        assert_eq!(back.get(&NAME).unwrap().as_deref(), Some("a"));
        let wrong: Key<String> = Key::new("size");
        assert!(back.get(&wrong).is_err());
        assert!(v.get(&wrong).is_err());
    }

    #[test]
    fn failure_keeps_the_cause_chain() {
        let io = std::io::Error::other("disk gone");
        let f = Failure::from(io);
        assert_eq!(f.kind, "Error");
        assert_eq!(f.message, "disk gone");
    }
}

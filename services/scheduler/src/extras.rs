//! Free-form capabilities in a compact form: keys interned to small ids once per report, so
//! that matching an extra spec against a pool is a short scan of contiguous memory rather
//! than a walk through a map of heap strings (the scheduler's hottest loop).

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::extra_specs::CapValue;

/// Capability names seen in reports, each given a small id.
#[derive(Debug, Clone, Default)]
pub struct Interner {
    ids: HashMap<String, u32>,
}

impl Interner {
    /// The id of `key`, assigning the next one if it is new.
    pub fn intern(&mut self, key: &str) -> u32 {
        if let Some(&id) = self.ids.get(key) {
            return id;
        }
        let id = u32::try_from(self.ids.len()).unwrap_or(u32::MAX);
        self.ids.insert(key.to_owned(), id);
        id
    }

    /// The id of `key`, if any report ever held it.
    pub fn get(&self, key: &str) -> Option<u32> {
        self.ids.get(key).copied()
    }
}

/// One capability value, with the scalar kinds unwrapped.
#[derive(Debug, Clone, PartialEq)]
enum Cap {
    Str(Box<str>),
    Num(f64),
    Bool(bool),
    /// Null, lists and objects, and numbers too large for an f64.
    Json(Box<Value>),
}

/// A report's free-form capabilities, keyed by interned id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extras {
    entries: Vec<(u32, Cap)>,
}

impl Extras {
    pub fn from_map(map: &Map<String, Value>, interner: &mut Interner) -> Self {
        let entries = map
            .iter()
            .map(|(k, v)| {
                let cap = match v {
                    Value::String(s) => Cap::Str(s.as_str().into()),
                    Value::Bool(b) => Cap::Bool(*b),
                    Value::Number(n) => n.as_f64().map_or_else(|| Cap::Json(Box::new(v.clone())), Cap::Num),
                    other => Cap::Json(Box::new(other.clone())),
                };
                (interner.intern(k), cap)
            })
            .collect();
        Self { entries }
    }

    /// The value under `id`, borrowed.
    pub fn get(&self, id: u32) -> Option<CapValue<'_>> {
        self.entries.iter().find(|(k, _)| *k == id).map(|(_, c)| match c {
            Cap::Str(s) => CapValue::Str(s),
            Cap::Num(n) => CapValue::Num(*n),
            Cap::Bool(b) => CapValue::Bool(*b),
            Cap::Json(v) => CapValue::Json(v),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn values_come_back_as_reported() {
        let mut interner = Interner::default();
        let map = json!({ "a": "x", "b": 2, "c": true, "d": [1], "e": null });
        let extras = Extras::from_map(map.as_object().unwrap(), &mut interner);
        let get = |k| extras.get(interner.get(k).unwrap());
        assert_eq!(get("a"), Some(CapValue::Str("x")));
        assert_eq!(get("b"), Some(CapValue::Num(2.0)));
        assert_eq!(get("c"), Some(CapValue::Bool(true)));
        assert_eq!(get("d"), Some(CapValue::Json(&json!([1]))));
        assert_eq!(get("e"), Some(CapValue::Json(&Value::Null)));
        assert_eq!(interner.get("zz"), None);
        // The same key keeps its id across reports.
        assert_eq!(interner.intern("a"), interner.get("a").unwrap());
    }
}

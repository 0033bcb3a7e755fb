//! Checks of request bodies field by field, with Cinder's JSON-schema style messages
//! ("Invalid input for field/attribute size. Value: 0. 0 is less than the minimum of 1").

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::fault::Fault;

/// A JSON object of a request body.
pub type Object = Map<String, Value>;

/// The largest size of a volume and the largest integer a field takes (2^31 - 1).
pub const MAX_INT: i64 = i32::MAX as i64;
/// The longest name, description, metadata key or value.
pub const MAX_TEXT: usize = 255;

/// The object under `key` of the body (`{"volume": {...}}`).
pub fn section<'a>(body: &'a Value, key: &str) -> Result<&'a Object, Fault> {
    match body.as_object().and_then(|o| o.get(key)) {
        None => Err(Fault::bad_request(format!("Missing required element '{key}' in request body."))),
        Some(Value::Object(obj)) => Ok(obj),
        Some(other) => Err(invalid(key, other, "is not of type 'object'")),
    }
}

/// The object under `key`, where a missing key or `null` count as `{}` (action bodies).
pub fn optional_section(body: &Value, key: &str) -> Result<Object, Fault> {
    match body.as_object().and_then(|o| o.get(key)) {
        None | Some(Value::Null) => Ok(Object::new()),
        Some(Value::Object(obj)) => Ok(obj.clone()),
        Some(other) => Err(invalid(key, other, "is not of type 'object'")),
    }
}

/// Cinder's message for a field that failed its schema.
pub fn invalid(field: &str, value: &Value, reason: &str) -> Fault {
    let shown = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Fault::bad_request(format!("Invalid input for field/attribute {field}. Value: {shown}. {reason}"))
}

/// Refuses a body with anything beside its one section `key` (Cinder's top-level
/// `additionalProperties: false`).
pub fn only_top_key(body: &Value, key: &str) -> Result<(), Fault> {
    match body.as_object() {
        Some(obj) => only_keys(obj, &[key]),
        None => Err(invalid("body", body, "is not of type 'object'")),
    }
}

/// Refuses keys outside `allowed`.
pub fn only_keys(obj: &Object, allowed: &[&str]) -> Result<(), Fault> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(extra) => Err(Fault::bad_request(format!(
            "Invalid input received: Additional properties are not allowed ('{extra}' was unexpected)"
        ))),
        None => Ok(()),
    }
}

/// A string of at most `max` characters, or `None` when absent or null.
pub fn opt_string(obj: &Object, key: &str, max: usize) -> Result<Option<String>, Fault> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= max => Ok(Some(s.clone())),
        Some(v @ Value::String(_)) => Err(invalid(key, v, &format!("is longer than {max} characters"))),
        Some(v) => Err(invalid(key, v, "is not of type 'string'")),
    }
}

/// A non-empty string of at most `max` characters that is required.
pub fn required_string(obj: &Object, key: &str, max: usize) -> Result<String, Fault> {
    match opt_string(obj, key, max)? {
        Some(s) if !s.trim().is_empty() => Ok(s),
        Some(s) => Err(invalid(key, &Value::String(s), "should be non-empty")),
        None => Err(Fault::bad_request(format!("Invalid input received: '{key}' is a required property"))),
    }
}

/// A UUID string, or `None` when absent or null.
pub fn opt_uuid(obj: &Object, key: &str) -> Result<Option<String>, Fault> {
    match opt_string(obj, key, 36)? {
        None => Ok(None),
        Some(s) if uuid::Uuid::try_parse(&s).is_ok() => Ok(Some(s)),
        Some(s) => Err(invalid(key, &Value::String(s), "is not a 'uuid'")),
    }
}

/// An integer in `1..=2^31-1`, given as a JSON integer or a string of digits.
pub fn positive_int(field: &str, value: &Value) -> Result<i64, Fault> {
    let n = match value {
        Value::Number(n) => n.as_i64().ok_or_else(|| invalid(field, value, "is not of type 'integer'"))?,
        Value::String(s) if !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse::<i64>().map_err(|_| invalid(field, value, "is too large"))?
        }
        Value::String(_) => return Err(invalid(field, value, "does not match '^[0-9]+$'")),
        _ => return Err(invalid(field, value, "is not of type 'integer', 'string'")),
    };
    if n < 1 {
        return Err(invalid(field, value, &format!("{n} is less than the minimum of 1")));
    }
    if n > MAX_INT {
        return Err(invalid(field, value, &format!("{n} is greater than the maximum of {MAX_INT}")));
    }
    Ok(n)
}

/// A boolean as Cinder's `strutils.bool_from_string(strict=True)` reads it.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "on" | "y" | "yes" => Some(true),
        "0" | "f" | "false" | "off" | "n" | "no" => Some(false),
        _ => None,
    }
}

/// A boolean given as JSON `true`/`false` or as one of [`parse_bool`]'s strings.
pub fn bool_value(field: &str, value: &Value) -> Result<bool, Fault> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => parse_bool(s).ok_or_else(|| invalid(field, value, "is not a valid boolean")),
        _ => Err(invalid(field, value, "is not of type 'boolean'")),
    }
}

/// An optional boolean field.
pub fn opt_bool(obj: &Object, key: &str) -> Result<Option<bool>, Fault> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => bool_value(key, v).map(Some),
    }
}

/// A map of metadata: string keys of 1 to 255 characters, string values of at most 255.
pub fn metadata_value(field: &str, value: &Value) -> Result<BTreeMap<String, String>, Fault> {
    let Value::Object(items) = value else {
        return Err(invalid(field, value, "is not of type 'object'"));
    };
    let mut out = BTreeMap::new();
    for (k, v) in items {
        if k.is_empty() || k.chars().count() > MAX_TEXT {
            return Err(invalid(field, value, "has a key that is empty or longer than 255 characters"));
        }
        match v {
            Value::String(s) if s.chars().count() <= MAX_TEXT => {
                out.insert(k.clone(), s.clone());
            }
            Value::String(_) => return Err(invalid(field, value, "has a value longer than 255 characters")),
            _ => return Err(invalid(field, v, &format!("value of '{k}' is not of type 'string'"))),
        }
    }
    Ok(out)
}

/// An optional metadata field (`null` is no metadata).
pub fn opt_metadata(obj: &Object, key: &str) -> Result<Option<BTreeMap<String, String>>, Fault> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => metadata_value(key, v).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn sizes_are_positive_integers_or_digit_strings() {
        assert_eq!(positive_int("size", &json!(3)).unwrap(), 3);
        assert_eq!(positive_int("size", &json!("42")).unwrap(), 42);
        for bad in
            [json!(0), json!(-1), json!(1.5), json!("abc"), json!(""), json!(true), json!(2147483648_i64)]
        {
            let fault = positive_int("size", &bad).unwrap_err();
            assert_eq!(fault.status.as_u16(), 400, "{bad}");
            assert!(fault.message.starts_with("Invalid input for field/attribute size"), "{}", fault.message);
        }
        assert!(positive_int("size", &json!("99999999999999999999999")).is_err());
    }

    #[test]
    fn booleans_and_metadata_follow_cinder() {
        assert_eq!(parse_bool("True"), Some(true));
        assert_eq!(parse_bool("off"), Some(false));
        assert_eq!(parse_bool("maybe"), None);
        assert!(metadata_value("metadata", &json!({"a": "b"})).is_ok());
        assert!(metadata_value("metadata", &json!({"a": 1})).is_err());
        assert!(metadata_value("metadata", &json!({"": "x"})).is_err());
        assert!(metadata_value("metadata", &json!(["a"])).is_err());
    }
}

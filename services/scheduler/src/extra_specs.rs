//! Volume-type extra specs matched against capabilities: Cinder's `extra_specs_ops.match`,
//! parsed once per request so that matching a pool allocates nothing.

use serde_json::Value;

/// A capability value as the matcher sees it, borrowed from a pool or backend report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CapValue<'a> {
    Str(&'a str),
    Num(f64),
    Bool(bool),
    /// Anything else from a report's free-form keys: JSON null, lists, objects, numbers.
    Json(&'a Value),
}

impl<'a> CapValue<'a> {
    /// Wraps a JSON value, unwrapping the scalar kinds so they compare like typed fields.
    pub fn from_json(v: &'a Value) -> Self {
        match v {
            Value::String(s) => CapValue::Str(s),
            Value::Bool(b) => CapValue::Bool(*b),
            Value::Number(n) => n.as_f64().map_or(CapValue::Json(v), CapValue::Num),
            other => CapValue::Json(other),
        }
    }

    /// Python's `float(x)`: strings are parsed, booleans are 0 or 1, the rest fails.
    fn as_float(self) -> Option<f64> {
        match self {
            CapValue::Num(n) => Some(n),
            CapValue::Bool(b) => Some(if b { 1.0 } else { 0.0 }),
            CapValue::Str(s) => parse_float(s),
            CapValue::Json(_) => None,
        }
    }

    /// Python's `x == "word"`: only a string can equal a string.
    fn eq_str(self, word: &str) -> bool {
        matches!(self, CapValue::Str(s) if s == word)
    }

    fn is_null(self) -> bool {
        matches!(self, CapValue::Json(Value::Null))
    }
}

/// Python's `float()` on a string: surrounding whitespace allowed, `inf`/`nan` accepted.
fn parse_float(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok()
}

/// oslo's `bool_from_string` (not strict): `1, t, true, on, y, yes` in any case are true.
pub fn bool_from_string(s: &str) -> bool {
    let s = s.trim();
    ["1", "t", "true", "on", "y", "yes"].iter().any(|t| s.eq_ignore_ascii_case(t))
}

/// `bool_from_string` applied to a capability: booleans are themselves and numbers go through
/// their Python `str()`, so only 1 is true (a float 1.0 also counts, since the report's JSON
/// number no longer says which it was).
fn cap_as_bool(v: CapValue<'_>) -> bool {
    match v {
        CapValue::Bool(b) => b,
        CapValue::Str(s) => bool_from_string(s),
        CapValue::Num(n) => n == 1.0,
        CapValue::Json(_) => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumOp {
    /// `=`: at least, Cinder's legacy meaning (not equality).
    AtLeast,
    Eq,
    Ne,
    Ge,
    Le,
    Lt,
    Gt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// One parsed requirement (the value side of an extra spec).
#[derive(Debug, Clone, PartialEq)]
pub enum Matcher<'a> {
    /// No known operator: the whole requirement must equal the capability string.
    Exact(&'a str),
    /// A numeric comparison; `None` when the requirement is not a number (never matches).
    Num(NumOp, Option<f64>),
    Str(StrOp, &'a str),
    /// `<in> word`: the word is a substring of the capability.
    In(&'a str),
    /// `<all-in> w1 w2 ...`: every word is in the capability (substring, or element of a list).
    AllIn(Vec<&'a str>),
    /// `<is> True`: both sides read as booleans and equal.
    Is(bool),
    /// `<or> a <or> b ...`: the capability equals one of the words.
    Or(Vec<&'a str>),
    /// An operator with nothing after it: matches nothing.
    Never,
}

impl<'a> Matcher<'a> {
    /// Parses a requirement as `extra_specs_ops.match` reads it: the first word is the operator.
    pub fn parse(req: &'a str) -> Self {
        let mut words = req.split_whitespace();
        let Some(op) = words.next() else {
            return Matcher::Exact(req);
        };
        let first = words.clone().next();
        let num = |op| Matcher::Num(op, first.and_then(parse_float));
        let matcher = match op {
            "=" => num(NumOp::AtLeast),
            "==" => num(NumOp::Eq),
            "!=" => num(NumOp::Ne),
            ">=" => num(NumOp::Ge),
            "<=" => num(NumOp::Le),
            "<" => num(NumOp::Lt),
            ">" => num(NumOp::Gt),
            "s==" | "s!=" | "s<" | "s<=" | "s>" | "s>=" => match first {
                Some(w) => Matcher::Str(str_op(op), w),
                None => Matcher::Never,
            },
            "<in>" => first.map_or(Matcher::Never, Matcher::In),
            "<is>" => first.map_or(Matcher::Never, |w| Matcher::Is(bool_from_string(w))),
            "<all-in>" => Matcher::AllIn(words.collect()),
            // `<or> a <or> b`: the alternatives sit at even positions; Cinder skips the
            // keyword between them without looking at it.
            "<or>" => Matcher::Or(words.step_by(2).collect()),
            _ => return Matcher::Exact(req),
        };
        match matcher {
            Matcher::Num(_, _) if first.is_none() => Matcher::Never,
            Matcher::AllIn(ref w) | Matcher::Or(ref w) if w.is_empty() => Matcher::Never,
            m => m,
        }
    }

    /// Whether one capability value satisfies the requirement.
    pub fn matches(&self, value: CapValue<'_>) -> bool {
        if let Matcher::Exact(req) = self {
            return value.eq_str(req);
        }
        if value.is_null() {
            return false;
        }
        match self {
            Matcher::Exact(_) | Matcher::Never => false,
            Matcher::Num(op, rhs) => match (value.as_float(), rhs) {
                (Some(x), Some(y)) => num_cmp(*op, x, *y),
                _ => false,
            },
            Matcher::Str(op, word) => match value {
                CapValue::Str(s) => str_cmp(*op, s, word),
                // Python: a non-string is never equal to a string; ordering it raises, which
                // we read as "no match".
                _ => *op == StrOp::Ne,
            },
            Matcher::In(word) => matches!(value, CapValue::Str(s) if s.contains(word)),
            Matcher::AllIn(words) => match value {
                CapValue::Str(s) => words.iter().all(|w| s.contains(w)),
                CapValue::Json(Value::Array(items)) => {
                    words.iter().all(|w| items.iter().any(|i| i.as_str() == Some(w)))
                }
                _ => false,
            },
            Matcher::Is(want) => cap_as_bool(value) == *want,
            Matcher::Or(words) => words.iter().any(|w| value.eq_str(w)),
        }
    }

    /// Whether a list-valued capability is matched as a whole rather than element by element.
    pub fn wants_whole_list(&self) -> bool {
        matches!(self, Matcher::AllIn(_))
    }
}

fn str_op(op: &str) -> StrOp {
    match op {
        "s==" => StrOp::Eq,
        "s!=" => StrOp::Ne,
        "s<" => StrOp::Lt,
        "s<=" => StrOp::Le,
        "s>" => StrOp::Gt,
        _ => StrOp::Ge,
    }
}

fn num_cmp(op: NumOp, x: f64, y: f64) -> bool {
    match op {
        NumOp::AtLeast | NumOp::Ge => x >= y,
        NumOp::Eq => x == y,
        NumOp::Ne => x != y,
        NumOp::Le => x <= y,
        NumOp::Lt => x < y,
        NumOp::Gt => x > y,
    }
}

fn str_cmp(op: StrOp, x: &str, y: &str) -> bool {
    match op {
        StrOp::Eq => x == y,
        StrOp::Ne => x != y,
        StrOp::Lt => x < y,
        StrOp::Le => x <= y,
        StrOp::Gt => x > y,
        StrOp::Ge => x >= y,
    }
}

/// Where an extra spec looks in the capabilities: `capabilities:` is stripped, the remaining
/// `a:b` parts are a nested lookup.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecCheck<'a> {
    pub key: &'a str,
    pub path: Vec<&'a str>,
    pub matcher: Matcher<'a>,
}

/// Parses the extra specs the CapabilitiesFilter checks; scoped keys other than
/// `capabilities:` (`RESKEY:`, `QoS:`, `provisioning:`, vendor scopes) are left out.
pub fn parse_specs<'a, I>(specs: I) -> Vec<SpecCheck<'a>>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut out = Vec::new();
    for (key, req) in specs {
        let mut scope: Vec<&str> = key.split(':').collect();
        if scope.len() > 1 && scope[0] != "capabilities" {
            continue;
        }
        if scope[0] == "capabilities" {
            scope.remove(0);
        }
        out.push(SpecCheck { key, path: scope, matcher: Matcher::parse(req) });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_keys_are_skipped_and_capabilities_prefix_stripped() {
        let specs = parse_specs([
            ("capabilities:compression", "<is> True"),
            ("RESKEY:availability_zones", "az1"),
            ("provisioning:type", "thin"),
            ("volume_backend_name", "lvm"),
            ("capabilities:a:b", "x"),
        ]);
        let paths: Vec<_> = specs.iter().map(|s| s.path.join("/")).collect();
        assert_eq!(paths, ["compression", "volume_backend_name", "a/b"]);
    }

    #[test]
    fn or_skips_the_keywords_between_words() {
        assert_eq!(Matcher::parse("<or> a <or> b <or> c"), Matcher::Or(vec!["a", "b", "c"]));
        assert_eq!(Matcher::parse("<or>"), Matcher::Never);
        assert_eq!(Matcher::parse("="), Matcher::Never);
        assert_eq!(Matcher::parse(""), Matcher::Exact(""));
    }
}

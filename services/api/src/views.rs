//! Pieces shared by every view: timestamps as Cinder prints them.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// `2026-11-21T18:23:46.000000`: Cinder's timestamps, UTC without an offset.
pub fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// [`time`], or `null`.
pub fn opt_time(at: Option<DateTime<Utc>>) -> Value {
    at.map_or(Value::Null, |t| Value::String(time(t)))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn timestamps_have_six_fraction_digits_and_no_offset() {
        let t = Utc.timestamp_millis_opt(1_795_285_426_123).unwrap();
        assert_eq!(time(t), "2026-11-21T18:23:46.123000");
        assert_eq!(opt_time(None), Value::Null);
    }
}

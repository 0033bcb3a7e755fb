//! The bodies of attachment create and update, checked as Cinder's JSON schemas
//! (`cinder/api/schemas/attachments.py`): no unknown keys, `volume_uuid` a UUID,
//! `connector` an object, `mode` (3.54+) `rw` or `ro`.

use serde_json::Value;

use ember_common::ops::CreateAttachment;

use crate::fault::{ApiResult, Fault};
use crate::validate::{self, Object};

/// The `attachment` object of a body whose only key it must be.
fn attachment_section(body: &Value) -> ApiResult<&Object> {
    let top = body.as_object().ok_or_else(|| Fault::bad_request("Malformed request body"))?;
    validate::only_keys(top, &["attachment"])?;
    validate::section(body, "attachment")
}

/// `POST /attachments`: `{"attachment": {"volume_uuid", "instance_uuid"?, "connector"?,
/// "mode"?}}`; `mode` is a key only from 3.54 (`with_mode`). An empty connector is none,
/// as Cinder reads it (the attachment is only reserved).
pub fn create(body: &Value, with_mode: bool) -> ApiResult<CreateAttachment> {
    let a = attachment_section(body)?;
    let allowed: &[&str] = if with_mode {
        &["volume_uuid", "instance_uuid", "connector", "mode"]
    } else {
        &["volume_uuid", "instance_uuid", "connector"]
    };
    validate::only_keys(a, allowed)?;
    let volume_id = validate::opt_uuid(a, "volume_uuid")?
        .ok_or_else(|| Fault::bad_request("Invalid input received: 'volume_uuid' is a required property"))?;
    let instance_uuid = validate::opt_uuid(a, "instance_uuid")?;
    let connector = match a.get("connector") {
        None | Some(Value::Null) => None,
        Some(Value::Object(c)) if c.is_empty() => None,
        Some(c @ Value::Object(_)) => Some(c.clone()),
        Some(other) => return Err(validate::invalid("connector", other, "is not of type 'object', 'null'")),
    };
    let mode = match a.get("mode") {
        None => None,
        Some(Value::String(m)) if m == "rw" || m == "ro" => Some(m.clone()),
        Some(other) => return Err(validate::invalid("mode", other, "is not one of ['rw', 'ro']")),
    };
    Ok(CreateAttachment { volume_id, instance_uuid, connector, mode })
}

/// `PUT /attachments/{id}`: `{"attachment": {"connector": {...}}}`, a connector of at
/// least one key.
pub fn update(body: &Value) -> ApiResult<Value> {
    let a = attachment_section(body)?;
    validate::only_keys(a, &["connector"])?;
    match a.get("connector") {
        None => Err(Fault::bad_request("Invalid input received: 'connector' is a required property")),
        Some(Value::Object(c)) if c.is_empty() => {
            Err(validate::invalid("connector", &Value::Object(c.clone()), "does not have enough properties"))
        }
        Some(c @ Value::Object(_)) => Ok(c.clone()),
        Some(other) => Err(validate::invalid("connector", other, "is not of type 'object'")),
    }
}

/// The one key of an action body (`{"os-complete": ...}`); its value is not read.
pub fn action_name(body: &Value) -> ApiResult<&str> {
    let obj = body.as_object().ok_or_else(|| Fault::bad_request("Malformed request body"))?;
    let mut keys = obj.keys();
    match (keys.next(), keys.next()) {
        (Some(name), None) => Ok(name.as_str()),
        (None, _) => Err(Fault::bad_request("Malformed request body: no action given")),
        (Some(_), Some(_)) => Err(Fault::bad_request("Malformed request body: only one action may be given")),
    }
}

/// A connector given to a legacy action (`os-initialize_connection`...): a JSON object.
/// Cinder's schema also lets a string through, which no driver can use; Ember refuses it.
pub fn connector(args: &Object, required: bool) -> ApiResult<Option<Value>> {
    match args.get("connector") {
        None if required => {
            Err(Fault::bad_request("Invalid input received: 'connector' is a required property"))
        }
        None => Ok(None),
        Some(Value::Null) if !required => Ok(None),
        Some(c @ Value::Object(_)) => Ok(Some(c.clone())),
        Some(other) => Err(validate::invalid("connector", other, "is not of type 'object'")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const VOL: &str = "462dcc2d-130d-4654-8db1-da0df2da6a0d";

    #[test]
    fn creates_follow_cinders_schema() {
        let req = create(&json!({"attachment": {"volume_uuid": VOL, "connector": {}}}), false).unwrap();
        assert_eq!((req.volume_id.as_str(), req.connector), (VOL, None));
        let req = create(&json!({"attachment": {"volume_uuid": VOL, "mode": "ro"}}), true).unwrap();
        assert_eq!(req.mode.as_deref(), Some("ro"));
        for (bad, with_mode) in [
            (json!({"attachment": {"volume_uuid": VOL, "mode": "ro"}}), false),
            (json!({"attachment": {"volume_uuid": VOL, "mode": "rx"}}), true),
            (json!({"attachment": {"volume_uuid": "nope"}}), true),
            (json!({"attachment": {}}), true),
            (json!({"attachment": {"volume_uuid": VOL, "connector": "c"}}), true),
            (json!({"attachment": {"volume_uuid": VOL, "instance_uuid": 3}}), true),
            (json!({"attachment": {"volume_uuid": VOL}, "extra": 1}), true),
            (json!({"attachment": {"volume_uuid": VOL, "colour": "red"}}), true),
        ] {
            assert_eq!(create(&bad, with_mode).unwrap_err().status.as_u16(), 400, "{bad}");
        }
    }

    #[test]
    fn updates_need_a_connector_with_keys() {
        assert!(update(&json!({"attachment": {"connector": {"host": "h"}}})).is_ok());
        for bad in [
            json!({"attachment": {"connector": {}}}),
            json!({"attachment": {}}),
            json!({"attachment": {"connector": {"host": "h"}, "mode": "ro"}}),
            json!({"attachment": {"connector": []}}),
        ] {
            let fault = update(&bad).unwrap_err();
            assert!(fault.message.contains("connector") || fault.message.contains("mode"), "{bad}");
        }
    }
}

//! `POST /volumes`: the body checked as Cinder's `volumes.create` schema checks it.

use serde_json::Value;

use ember_common::ops::CreateVolume;

use crate::fault::Fault;
use crate::validate::{self, MAX_TEXT, Object};

/// The keys `volume` may hold (Cinder's schema; at 3.53 and later others are refused).
const KEYS: &[&str] = &[
    "name",
    "description",
    "display_name",
    "display_description",
    "size",
    "availability_zone",
    "source_volid",
    "snapshot_id",
    "volume_type",
    "metadata",
    "consistencygroup_id",
    "imageRef",
    "image_id",
    "multiattach",
    "backup_id",
    "group_id",
];

/// Parses the create body; `strict` (3.53+) refuses unknown keys.
pub fn parse(body: &Value, strict: bool, backup_allowed: bool) -> Result<CreateVolume, Fault> {
    let v = validate::section(body, "volume")?;
    if strict {
        validate::only_keys(v, KEYS)?;
    }
    let size = match v.get("size") {
        None | Some(Value::Null) => None,
        Some(value) => Some(validate::positive_int("size", value)?),
    };
    refuse_unsupported(v)?;
    let req = CreateVolume {
        size,
        name: text(v, "name", "display_name")?,
        description: text(v, "description", "display_description")?,
        volume_type: validate::opt_string(v, "volume_type", MAX_TEXT)?,
        availability_zone: validate::opt_string(v, "availability_zone", MAX_TEXT)?,
        snapshot_id: validate::opt_uuid(v, "snapshot_id")?,
        source_volid: validate::opt_uuid(v, "source_volid")?,
        backup_id: if backup_allowed { validate::opt_uuid(v, "backup_id")? } else { None },
        metadata: validate::opt_metadata(v, "metadata")?.unwrap_or_default(),
        scheduler_hints: scheduler_hints(body)?,
    };
    if req.size.is_none()
        && req.snapshot_id.is_none()
        && req.source_volid.is_none()
        && req.backup_id.is_none()
    {
        return Err(Fault::bad_request(
            "Invalid input received: size is required unless the volume is created from a snapshot, volume or backup",
        ));
    }
    Ok(req)
}

/// `name`, or Cinder's older `display_name` when `name` is absent.
fn text(v: &Object, key: &str, legacy: &str) -> Result<Option<String>, Fault> {
    match validate::opt_string(v, key, MAX_TEXT)? {
        Some(s) => Ok(Some(s)),
        None => validate::opt_string(v, legacy, MAX_TEXT),
    }
}

/// What Cinder accepts but Ember does not offer: multiattach through the body (Cinder
/// refuses it too), images, groups.
fn refuse_unsupported(v: &Object) -> Result<(), Fault> {
    if validate::opt_bool(v, "multiattach")? == Some(true) {
        return Err(Fault::bad_request(
            "Invalid input received: multiattach volumes are created with a volume type whose \
             extra spec is multiattach=\"<is> True\", not with the multiattach parameter",
        ));
    }
    for key in ["imageRef", "image_id"] {
        if v.get(key).is_some_and(|x| !x.is_null()) {
            return Err(Fault::bad_request(
                "Invalid input received: creating a volume from an image is not supported",
            ));
        }
    }
    for key in ["consistencygroup_id", "group_id"] {
        if v.get(key).is_some_and(|x| !x.is_null()) {
            return Err(Fault::bad_request(format!("Invalid input received: {key} is not supported")));
        }
    }
    Ok(())
}

/// `OS-SCH-HNT:scheduler_hints`, an object if given.
fn scheduler_hints(body: &Value) -> Result<Option<Value>, Fault> {
    match body.get("OS-SCH-HNT:scheduler_hints") {
        None | Some(Value::Null) => Ok(None),
        Some(h @ Value::Object(_)) => Ok(Some(h.clone())),
        Some(other) => Err(validate::invalid("OS-SCH-HNT:scheduler_hints", other, "is not of type 'object'")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn names_fall_back_to_display_names() {
        let body = json!({"volume": {"size": "2", "display_name": "a", "description": "d"}});
        let req = parse(&body, false, true).unwrap();
        assert_eq!(
            (req.size, req.name.as_deref(), req.description.as_deref()),
            (Some(2), Some("a"), Some("d"))
        );
    }

    #[test]
    fn bad_bodies_are_refused() {
        let cases = [
            json!({"nothing": {}}),
            json!({"volume": {"size": 0}}),
            json!({"volume": {}}),
            json!({"volume": {"size": 1, "multiattach": true}}),
            json!({"volume": {"size": 1, "metadata": {"k": 1}}}),
            json!({"volume": {"size": 1, "snapshot_id": "not-a-uuid"}}),
            json!({"volume": {"size": 1, "name": 5}}),
            json!({"volume": "x"}),
        ];
        for body in cases {
            assert_eq!(parse(&body, false, true).unwrap_err().status.as_u16(), 400, "{body}");
        }
        let extra = json!({"volume": {"size": 1, "colour": "red"}});
        assert!(parse(&extra, false, true).is_ok());
        assert!(parse(&extra, true, true).unwrap_err().message.contains("'colour' was unexpected"));
    }
}

//! Volume types and their extra specs.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The name of the type every deployment has, created by the first domain migration.
pub const DEFAULT_VOLUME_TYPE_NAME: &str = "__DEFAULT__";

/// The fixed id of [`DEFAULT_VOLUME_TYPE_NAME`], so every database agrees on it.
pub const DEFAULT_VOLUME_TYPE_ID: &str = "5fed9d7c-401d-46e2-8e80-f30c70cb7e1d";

/// A volume type (Cinder's `volume_types` row with its `volume_type_extra_specs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeType {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub is_public: bool,
    pub qos_specs_id: Option<String>,
    /// E.g. `volume_backend_name`, `multiattach` (`<is> True`), `provisioning:type`.
    pub extra_specs: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
    pub deleted: bool,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl VolumeType {
    /// A public type named `name` with no extra specs.
    pub fn new(id: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            description: None,
            is_public: true,
            qos_specs_id: None,
            extra_specs: BTreeMap::new(),
            created_at: Utc::now(),
            updated_at: None,
            deleted: false,
            deleted_at: None,
        }
    }

    /// Whether the type asks for multiattach volumes (`multiattach = "<is> True"`).
    pub fn multiattach(&self) -> bool {
        self.extra_specs.get("multiattach").is_some_and(|v| v.trim().eq_ignore_ascii_case("<is> true"))
    }
}

//! Pagination and sorting of list queries, as Cinder's `limit`, `marker` and `sort`.

use serde::{Deserialize, Serialize};

/// A sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortDir {
    Asc,
    Desc,
}

impl std::str::FromStr for SortDir {
    type Err = crate::error::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "asc" => Ok(SortDir::Asc),
            "desc" => Ok(SortDir::Desc),
            other => Err(crate::error::Error::Invalid(format!("invalid sort direction {other:?}"))),
        }
    }
}

/// How much of a list to return and in which order.
///
/// Items come after the `marker` item (the last one of the previous page) in the given
/// order; the id is always the last sort key so the order is total.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// At most this many items; `None` for all.
    pub limit: Option<u32>,
    /// The id of the last item already seen; unknown markers are a not-found error.
    pub marker: Option<String>,
    /// Skips this many items (after the marker, if any).
    pub offset: Option<u32>,
    /// Sort keys with their directions; empty means Cinder's default, `created_at desc`.
    pub sort: Vec<(SortKey, SortDir)>,
}

impl ListOptions {
    /// The first `limit` items in the default order.
    pub fn limit(limit: u32) -> Self {
        Self { limit: Some(limit), ..Self::default() }
    }
}

/// The keys a list can be sorted by; each repository accepts the ones its resource has
/// and answers [`crate::error::Error::Invalid`] for the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SortKey {
    CreatedAt,
    UpdatedAt,
    Id,
    Name,
    Status,
    Size,
    AvailabilityZone,
    Bootable,
}

impl std::str::FromStr for SortKey {
    type Err = crate::error::Error;

    /// Parses Cinder's sort key names (`display_name` is accepted for `name`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "created_at" => Self::CreatedAt,
            "updated_at" => Self::UpdatedAt,
            "id" => Self::Id,
            "name" | "display_name" => Self::Name,
            "status" => Self::Status,
            "size" => Self::Size,
            "availability_zone" => Self::AvailabilityZone,
            "bootable" => Self::Bootable,
            other => return Err(crate::error::Error::Invalid(format!("invalid sort key {other:?}"))),
        })
    }
}

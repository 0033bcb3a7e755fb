//! The flows the API process runs synchronously inside a request (Cinder's
//! `cinder/volume/flows/api` and the API-side halves of delete, extend and snapshots).

pub mod complete_attachment;
pub mod create_attachment;
pub mod create_backup;
pub mod create_snapshot;
pub mod create_volume;
pub mod delete_attachment;
pub mod delete_backup;
pub mod delete_reserved_attachment;
pub mod delete_snapshot;
pub mod delete_volume;
pub mod extend_volume;
pub mod legacy_attachment;
pub mod legacy_swaps;
pub mod restore_backup;
pub mod update_attachment;

//! The flows the scheduler process runs (Cinder's `cinder/scheduler/flows`).

pub mod create_volume;

//! Cinder's filter scheduler: pick a backend pool with filters and weighers.

//! Volume and backup drivers behind Cinder-like traits.

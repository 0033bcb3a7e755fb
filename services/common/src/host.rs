//! Cinder's host strings, `host@backend#pool`, and their three extraction levels.

/// The pool name used when a backend reports no pools of its own.
pub const DEFAULT_POOL_NAME: &str = "_pool0";

/// How much of a host string to keep (Cinder's `volume_utils.extract_host`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `host`
    Host,
    /// `host@backend`: the RPC routing key of a volume.
    Backend,
    /// `pool`, the part after `#`.
    Pool,
}

/// Extracts one level of `host@backend#pool`.
///
/// For [`Level::Pool`] a string without `#` gives `None`, or [`DEFAULT_POOL_NAME`] when
/// `default_pool` is set, as Cinder does.
pub fn extract_host(host: &str, level: Level, default_pool: bool) -> Option<&str> {
    match level {
        Level::Host => Some(host.split(['@', '#']).next().unwrap_or(host)),
        Level::Backend => Some(host.split('#').next().unwrap_or(host)),
        Level::Pool => match host.split_once('#') {
            Some((_, pool)) => Some(pool),
            None if default_pool => Some(DEFAULT_POOL_NAME),
            None => None,
        },
    }
}

/// `host@backend` of a `host@backend#pool` string: the RPC routing key of a volume.
pub fn backend_of(host: &str) -> &str {
    extract_host(host, Level::Backend, false).unwrap_or(host)
}

/// `host@backend#pool` from its parts (Cinder's `append_host`).
pub fn append_pool(backend: &str, pool: &str) -> String {
    format!("{backend}#{pool}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extraction_levels_match_cinder() {
        let full = "node1@lvm#pool_a";
        assert_eq!(extract_host(full, Level::Host, false), Some("node1"));
        assert_eq!(extract_host(full, Level::Backend, false), Some("node1@lvm"));
        assert_eq!(extract_host(full, Level::Pool, false), Some("pool_a"));
        assert_eq!(extract_host("node1@lvm", Level::Pool, false), None);
        assert_eq!(extract_host("node1@lvm", Level::Pool, true), Some("_pool0"));
        assert_eq!(extract_host("node1", Level::Backend, false), Some("node1"));
        assert_eq!(extract_host("node1#p", Level::Host, false), Some("node1"));
        assert_eq!(append_pool("node1@lvm", "p"), "node1@lvm#p");
    }
}

//! Addressing: a target (topic and optional server) and the queue names it maps to.

use std::fmt;

/// The topic of the scheduler processes.
pub const SCHEDULER_TOPIC: &str = "ember-scheduler";
/// The topic of the volume processes; a backend's own topic is `ember-volume.HOST@BACKEND`.
pub const VOLUME_TOPIC: &str = "ember-volume";
/// The topic of the backup processes.
pub const BACKUP_TOPIC: &str = "ember-backup";

/// Where a message goes, as oslo.messaging's `Target`: every server of `topic` shares the
/// topic's queue (work-queue semantics), and `server` picks one server's own queue.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub topic: String,
    pub server: Option<String>,
}

impl Target {
    /// All servers of a topic; one of them takes each message.
    pub fn topic(topic: impl Into<String>) -> Self {
        Self { topic: topic.into(), server: None }
    }

    /// One server of a topic.
    pub fn server(topic: impl Into<String>, server: impl Into<String>) -> Self {
        Self { topic: topic.into(), server: Some(server.into()) }
    }

    /// The target of one volume backend, `ember-volume.HOST@BACKEND`, as Cinder's
    /// `VolumeAPI._get_cctxt` addresses it (the pool is not part of the routing key).
    pub fn volume_backend(host_at_backend: &str) -> Self {
        Self::topic(format!("{VOLUME_TOPIC}.{host_at_backend}"))
    }

    /// The routing key, which is also the queue's name (before any prefix): `topic` or
    /// `topic.server`.
    pub fn routing_key(&self) -> String {
        match &self.server {
            Some(server) => format!("{}.{server}", self.topic),
            None => self.topic.clone(),
        }
    }

    /// The routing keys a server listening on this target consumes: the shared topic queue and,
    /// when the target names a server, that server's own queue.
    pub fn listen_keys(&self) -> Vec<String> {
        let mut keys = vec![self.topic.clone()];
        if self.server.is_some() {
            keys.push(self.routing_key());
        }
        keys
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.routing_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_map_to_cinder_queue_names() {
        assert_eq!(Target::topic(SCHEDULER_TOPIC).routing_key(), "ember-scheduler");
        assert_eq!(Target::volume_backend("node1@lvm").routing_key(), "ember-volume.node1@lvm");
        assert_eq!(Target::server(BACKUP_TOPIC, "node2").routing_key(), "ember-backup.node2");
        assert_eq!(Target::server(VOLUME_TOPIC, "n@b").listen_keys(), ["ember-volume", "ember-volume.n@b"]);
        assert_eq!(Target::topic(VOLUME_TOPIC).listen_keys(), ["ember-volume"]);
    }
}

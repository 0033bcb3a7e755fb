-- Ember's domain schema: volumes, types, snapshots, backups, attachments, services and
-- quotas. Ids are TEXT (UUIDs), timestamps INTEGER milliseconds since the Unix epoch (UTC),
-- rows are soft-deleted (deleted, deleted_at) as Cinder's are. Keep in step with
-- migrations/postgres/0002_domain.sql.

CREATE TABLE volume_types (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    description  TEXT,
    is_public    INTEGER NOT NULL DEFAULT 1,
    qos_specs_id TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER,
    deleted      INTEGER NOT NULL DEFAULT 0,
    deleted_at   INTEGER
);
CREATE UNIQUE INDEX volume_types_live_name ON volume_types (name) WHERE deleted = 0;

CREATE TABLE volume_type_extra_specs (
    volume_type_id TEXT NOT NULL REFERENCES volume_types (id),
    key            TEXT NOT NULL,
    value          TEXT NOT NULL,
    PRIMARY KEY (volume_type_id, key)
);

-- The projects that may use a private type (Cinder's os-volume-type-access).
CREATE TABLE volume_type_projects (
    volume_type_id TEXT NOT NULL REFERENCES volume_types (id),
    project_id     TEXT NOT NULL,
    PRIMARY KEY (volume_type_id, project_id)
);

-- The default type every deployment has, with the fixed id of DEFAULT_VOLUME_TYPE_ID.
INSERT INTO volume_types (id, name, description, is_public, created_at)
VALUES ('5fed9d7c-401d-46e2-8e80-f30c70cb7e1d', '__DEFAULT__', 'Default Volume Type', 1,
        CAST(strftime('%s', 'now') AS INTEGER) * 1000);

CREATE TABLE volumes (
    id                 TEXT PRIMARY KEY,
    project_id         TEXT NOT NULL,
    user_id            TEXT NOT NULL,
    name               TEXT,
    description        TEXT,
    size               INTEGER NOT NULL,
    status             TEXT NOT NULL,
    attach_status      TEXT NOT NULL,
    migration_status   TEXT,
    previous_status    TEXT,
    availability_zone  TEXT NOT NULL,
    host               TEXT,
    cluster_name       TEXT,
    volume_type_id     TEXT NOT NULL REFERENCES volume_types (id),
    snapshot_id        TEXT,
    source_volid       TEXT,
    backup_id          TEXT,
    group_id           TEXT,
    bootable           INTEGER NOT NULL DEFAULT 0,
    multiattach        INTEGER NOT NULL DEFAULT 0,
    encryption_key_id  TEXT,
    provider_location  TEXT,
    provider_auth      TEXT,
    provider_id        TEXT,
    replication_status TEXT,
    service_uuid       TEXT,
    shared_targets     INTEGER,
    consumes_quota     INTEGER NOT NULL DEFAULT 1,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER,
    scheduled_at       INTEGER,
    launched_at        INTEGER,
    terminated_at      INTEGER,
    deleted            INTEGER NOT NULL DEFAULT 0,
    deleted_at         INTEGER
);
CREATE INDEX volumes_project ON volumes (project_id, deleted, created_at);
CREATE INDEX volumes_host ON volumes (host);
CREATE INDEX volumes_type ON volumes (volume_type_id);

CREATE TABLE volume_metadata (
    volume_id TEXT NOT NULL REFERENCES volumes (id),
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (volume_id, key)
);

CREATE TABLE volume_admin_metadata (
    volume_id TEXT NOT NULL REFERENCES volumes (id),
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (volume_id, key)
);

CREATE TABLE snapshots (
    id                TEXT PRIMARY KEY,
    project_id        TEXT NOT NULL,
    user_id           TEXT NOT NULL,
    volume_id         TEXT NOT NULL REFERENCES volumes (id),
    volume_type_id    TEXT NOT NULL,
    name              TEXT,
    description       TEXT,
    volume_size       INTEGER NOT NULL,
    status            TEXT NOT NULL,
    progress          TEXT,
    provider_location TEXT,
    provider_id       TEXT,
    group_snapshot_id TEXT,
    consumes_quota    INTEGER NOT NULL DEFAULT 1,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER,
    deleted           INTEGER NOT NULL DEFAULT 0,
    deleted_at        INTEGER
);
CREATE INDEX snapshots_project ON snapshots (project_id, deleted, created_at);
CREATE INDEX snapshots_volume ON snapshots (volume_id, deleted);

CREATE TABLE snapshot_metadata (
    snapshot_id TEXT NOT NULL REFERENCES snapshots (id),
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    PRIMARY KEY (snapshot_id, key)
);

CREATE TABLE backups (
    id                    TEXT PRIMARY KEY,
    project_id            TEXT NOT NULL,
    user_id               TEXT NOT NULL,
    volume_id             TEXT NOT NULL,
    snapshot_id           TEXT,
    name                  TEXT,
    description           TEXT,
    status                TEXT NOT NULL,
    fail_reason           TEXT,
    size                  INTEGER NOT NULL,
    object_count          INTEGER NOT NULL DEFAULT 0,
    availability_zone     TEXT,
    container             TEXT,
    host                  TEXT,
    service               TEXT,
    parent_id             TEXT,
    num_dependent_backups INTEGER NOT NULL DEFAULT 0,
    data_timestamp        INTEGER,
    restore_volume_id     TEXT,
    temp_volume_id        TEXT,
    temp_snapshot_id      TEXT,
    encryption_key_id     TEXT,
    service_metadata      TEXT,
    metadata              TEXT NOT NULL DEFAULT '{}',
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER,
    deleted               INTEGER NOT NULL DEFAULT 0,
    deleted_at            INTEGER
);
CREATE INDEX backups_project ON backups (project_id, deleted, created_at);
CREATE INDEX backups_volume ON backups (volume_id, deleted);

CREATE TABLE volume_attachments (
    id              TEXT PRIMARY KEY,
    volume_id       TEXT NOT NULL REFERENCES volumes (id),
    project_id      TEXT NOT NULL,
    instance_uuid   TEXT,
    attached_host   TEXT,
    mountpoint      TEXT,
    attach_mode     TEXT NOT NULL DEFAULT 'rw',
    attach_status   TEXT NOT NULL,
    connector       TEXT,
    connection_info TEXT,
    attached_at     INTEGER,
    detached_at     INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER,
    deleted         INTEGER NOT NULL DEFAULT 0,
    deleted_at      INTEGER
);
CREATE INDEX volume_attachments_volume ON volume_attachments (volume_id, deleted);

CREATE TABLE services (
    id                  TEXT PRIMARY KEY,
    host                TEXT NOT NULL,
    "binary"            TEXT NOT NULL,
    topic               TEXT NOT NULL,
    availability_zone   TEXT NOT NULL,
    disabled            INTEGER NOT NULL DEFAULT 0,
    disabled_reason     TEXT,
    frozen              INTEGER NOT NULL DEFAULT 0,
    cluster_name        TEXT,
    report_count        INTEGER NOT NULL DEFAULT 0,
    version             TEXT NOT NULL,
    rpc_current_version TEXT,
    heartbeat_at        INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    UNIQUE (host, "binary")
);

-- Per-project limits that override the defaults.
CREATE TABLE quotas (
    project_id TEXT NOT NULL,
    resource   TEXT NOT NULL,
    hard_limit INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER,
    PRIMARY KEY (project_id, resource)
);

-- Limits per quota class; the class `default` overrides the configured defaults.
CREATE TABLE quota_classes (
    class_name TEXT NOT NULL,
    resource   TEXT NOT NULL,
    hard_limit INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER,
    PRIMARY KEY (class_name, resource)
);

CREATE TABLE quota_usages (
    project_id TEXT NOT NULL,
    resource   TEXT NOT NULL,
    in_use     INTEGER NOT NULL DEFAULT 0,
    reserved   INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER,
    PRIMARY KEY (project_id, resource)
);

CREATE TABLE reservations (
    id         TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    resource   TEXT NOT NULL,
    delta      INTEGER NOT NULL,
    expire_at  INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX reservations_expire ON reservations (expire_at);

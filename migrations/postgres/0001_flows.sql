-- The flow engine's store: one row per flow, one row per atom that has left PENDING.
CREATE TABLE flows (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    inputs TEXT NOT NULL,
    state TEXT NOT NULL,
    owner TEXT,
    lease_expires_at BIGINT,
    claim_epoch BIGINT NOT NULL DEFAULT 0,
    topic TEXT NOT NULL,
    subject TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE INDEX flows_claim_idx ON flows (topic, state);
CREATE INDEX flows_name_idx ON flows (name, state);
CREATE INDEX flows_subject_idx ON flows (subject);
CREATE INDEX flows_created_idx ON flows (created_at);

CREATE TABLE flow_atoms (
    flow_id TEXT NOT NULL REFERENCES flows (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    intention TEXT NOT NULL,
    result TEXT,
    failure TEXT,
    revert_failure TEXT,
    history TEXT,
    attempts BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (flow_id, name)
);

-- A quota reservation made once per key (a flow's task): the key is recorded in the
-- reservation's transaction, so a task executed again after a crash gets the same
-- reservation ids back instead of reserving (or releasing) twice. A key is forgotten once
-- twice its reservation's life has passed.
CREATE TABLE reservation_keys (
    key        TEXT PRIMARY KEY,
    expire_at  BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX reservation_keys_expire ON reservation_keys (expire_at);

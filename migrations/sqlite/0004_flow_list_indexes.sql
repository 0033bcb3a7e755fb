-- The flows table at scale (issue 16, `ember bench scale`: 1,000,000 finished flows).
--
-- The admin list pages newest first under each filter: an index per filter column that
-- ends in created_at, so a page reads its rows in order and stops at the limit instead of
-- sorting every match (a state or a name matches a large part of a year's flows).
-- Finished flows have no owner, so the owner index is small.
--
-- Claims (every worker's sweep, every 2 s) and a restarted process's reclaim look only at
-- flows that have not finished: a partial index holds just those, oldest first, so a sweep
-- costs what is in flight, not the table's history. Its condition is written exactly as the
-- store's queries write it (SQLite uses a partial index only for a query that repeats it).
DROP INDEX flows_name_idx;
DROP INDEX flows_subject_idx;
CREATE INDEX flows_live_idx ON flows (created_at) WHERE state NOT IN ('SUCCESS', 'FAILURE', 'REVERTED');
CREATE INDEX flows_state_created_idx ON flows (state, created_at);
CREATE INDEX flows_name_created_idx ON flows (name, created_at);
CREATE INDEX flows_subject_created_idx ON flows (subject, created_at);
CREATE INDEX flows_owner_idx ON flows (owner);

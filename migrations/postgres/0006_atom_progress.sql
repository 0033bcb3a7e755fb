-- How far a running task says it is (done of total, in its own units), for admin views:
-- written by `FlowStore::record_progress` outside the engine's fenced batches.
ALTER TABLE flow_atoms ADD COLUMN progress_done BIGINT;
ALTER TABLE flow_atoms ADD COLUMN progress_total BIGINT;

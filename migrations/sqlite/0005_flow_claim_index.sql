-- Claims at scale (issue 16, `ember bench scale`, measured with 1,000,000 finished flows).
--
-- `flows_claim_idx (topic, state)` indexes every flow, finished or not: with a year of
-- flows, a claim by topic (every worker's sweep and every wake-up) could be planned over
-- it and read a third of the table (measured: 110-190 ms a claim on SQLite, and a create
-- twelve times slower than on an empty database). The claims look only at flows that have
-- not finished, so their topic index is partial too, holding just those, oldest first; no
-- index over all flows is left whose leading column is the topic.
--
-- The admin list's state and name filters together read one index in created_at order.
DROP INDEX flows_claim_idx;
CREATE INDEX flows_live_topic_idx ON flows (topic, created_at) WHERE state NOT IN ('SUCCESS', 'FAILURE', 'REVERTED');
CREATE INDEX flows_state_name_created_idx ON flows (state, name, created_at);

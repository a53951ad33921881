-- workflow 0.1.0 → 0.2.0, applied by ALTER EXTENSION workflow UPDATE.
--
-- The upgrade test (tests/tests/upgrade.rs) checks that a populated 0.1.0 database,
-- upgraded with this script, has the same schema as a fresh 0.2.0 install and keeps its data.

-- Header values are credentials as often as not (authorization, api keys): the view shows
-- their names only, and secrets not at all.
DROP VIEW workflow.endpoints;
CREATE VIEW workflow.endpoints AS
SELECT name, url, cardinality(secrets) AS secret_count,
       ARRAY(SELECT jsonb_object_keys(headers) ORDER BY 1) AS header_names,
       timeout, max_attempts, disabled_at, disabled_reason, created_at, updated_at
  FROM workflow.endpoint_settings;
COMMENT ON VIEW workflow.endpoints IS 'Named endpoints, without their secrets or header values';
GRANT SELECT ON workflow.endpoints TO workflow_user;

-- Messages stored with an infinite due time before 0.2.0 refused them: due now instead
-- (the infinities meant "never" or "at once", and a message that is never due is lost).
UPDATE workflow.outbox SET next_attempt_at = statement_timestamp()
 WHERE status = 'pending' AND NOT isfinite(next_attempt_at);

-- How many messages are delivered, dead and cancelled, so that wf_stats and dashboards never
-- count the kept history. Kept as deltas: each statement that moves messages into or out
-- of one of those states, or deletes them, adds a row (an insert waits for no one), and the
-- dispatcher's housekeeping folds the rows into one per status. wf_stats sums them.
CREATE TABLE workflow.message_counts (
    status  workflow.message_status NOT NULL,
    n       bigint NOT NULL
) WITH (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 2000,
    autovacuum_vacuum_cost_delay = 0
);
INSERT INTO workflow.message_counts (status, n)
SELECT status, count(*) FROM workflow.outbox WHERE status <> 'pending' GROUP BY status;

-- Backups keep everything (G9): pg_dump dumps the rows of these tables, and the positions of
-- their identity sequences, with the database; CREATE EXTENSION on restore makes the rest.
SELECT pg_catalog.pg_extension_config_dump('workflow.runs', '');
SELECT pg_catalog.pg_extension_config_dump('workflow.checkpoints', '');
SELECT pg_catalog.pg_extension_config_dump('workflow.checkpoints_seq_seq', '');
SELECT pg_catalog.pg_extension_config_dump('workflow.endpoint_settings', '');
SELECT pg_catalog.pg_extension_config_dump('workflow.outbox', '');
SELECT pg_catalog.pg_extension_config_dump('workflow.outbox_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('workflow.delivery_attempts', '');
SELECT pg_catalog.pg_extension_config_dump('workflow.delivery_attempts_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('workflow.message_counts', '');

-- Blocked messages leave the due path: a claim parks what it finds behind a disabled
-- endpoint or an ordering key's head, and what unblocks them unparks them (see the
-- dispatcher's parking module). The columns come last, as in a fresh install.
CREATE DOMAIN workflow.park_reason AS text
    CHECK (VALUE IN ('endpoint', 'ordering_key'));
ALTER TABLE workflow.outbox
    ADD COLUMN parked workflow.park_reason,
    ADD COLUMN unpark_successor boolean;
ALTER TABLE workflow.endpoint_settings ADD COLUMN unpark_messages boolean;
DROP INDEX workflow.outbox_due;
CREATE INDEX outbox_due ON workflow.outbox (next_attempt_at)
    WHERE (status = 'pending') IS TRUE AND parked IS NULL;
CREATE INDEX outbox_parked ON workflow.outbox (endpoint, next_attempt_at) WHERE parked IS NOT NULL;
CREATE INDEX outbox_unpark_successor ON workflow.outbox (ordering_key) WHERE unpark_successor IS TRUE;

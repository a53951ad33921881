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
-- The messages views say why a message is parked (a view's new column comes last, and
-- dead_letters' * is expanded again).
CREATE OR REPLACE VIEW workflow.messages AS
SELECT id, coalesce(endpoint, url) AS target, endpoint, payload, headers, idempotency_key,
       webhook_id, status::text AS status, attempts,
       -- While a dispatcher holds the message, no attempt starts before its lease ends.
       CASE WHEN status = 'pending' THEN greatest(next_attempt_at, leased_until) END AS next_attempt_at,
       ordering_key, workflow_id, step, last_status_code, last_error, created_at, delivered_at,
       finished_at,
       -- Why the dispatcher set a pending message aside: its endpoint is disabled
       -- ('endpoint'), or an older message of its key is pending ('ordering_key').
       parked::text AS parked
  FROM workflow.outbox;
CREATE OR REPLACE VIEW workflow.dead_letters AS
SELECT * FROM workflow.messages WHERE status = 'dead';

-- Fencing (G7): the workflow writes take an optional owner, and two functions are new.
-- The definitions are the ones `cargo pgrx schema` generates for 0.2.0.
DROP FUNCTION wf_checkpoint(uuid, text, jsonb);
DROP FUNCTION wf_complete(uuid, jsonb);
DROP FUNCTION wf_fail(uuid, text);
DROP FUNCTION wf_sleep(uuid, text, timestamptz);

CREATE  FUNCTION "wf_checkpoint"(
	"workflow" uuid, /* Option < pgrx :: Uuid > */
	"step" TEXT, /* Option < & str > */
	"output" jsonb DEFAULT NULL, /* Option < Document > */
	"owner" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS jsonb /* Document */
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wf_checkpoint_wrapper';

CREATE  FUNCTION "wf_complete"(
	"workflow" uuid, /* Option < pgrx :: Uuid > */
	"output" jsonb DEFAULT NULL, /* Option < Document > */
	"owner" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS void
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wf_complete_wrapper';

CREATE  FUNCTION "wf_fail"(
	"workflow" uuid, /* Option < pgrx :: Uuid > */
	"error" TEXT, /* Option < & str > */
	"owner" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS void
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wf_fail_wrapper';

CREATE  FUNCTION "wf_sleep"(
	"workflow" uuid, /* Option < pgrx :: Uuid > */
	"step" TEXT, /* Option < & str > */
	"until" timestamp with time zone, /* Option < TimestampWithTimeZone > */
	"owner" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS void
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wf_sleep_wrapper';

CREATE  FUNCTION "wf_heartbeat"(
	"workflow" uuid, /* Option < pgrx :: Uuid > */
	"owner" TEXT DEFAULT NULL, /* Option < & str > */
	"lease" interval DEFAULT NULL /* Option < Interval > */
) RETURNS timestamp with time zone /* TimestampWithTimeZone */
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wf_heartbeat_wrapper';

CREATE  FUNCTION "wf_find"(
	"name" TEXT, /* Option < & str > */
	"idempotency_key" TEXT /* Option < & str > */
) RETURNS uuid /* Option < pgrx :: Uuid > */
STABLE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wf_find_wrapper';

-- Every function, the new ones included, with the grants of a fresh install.
DO $$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure
          FROM pg_catalog.pg_proc p
          JOIN pg_catalog.pg_depend d
            ON d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
          JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND e.extname = 'workflow'
         WHERE p.proname LIKE 'wf\_%' OR p.pronamespace = 'workflow'::regnamespace
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
        -- Endpoints hold secrets and destinations: the owner's business, not the app's.
        IF fn::text LIKE 'wf\_%' AND fn::text NOT LIKE 'wf\_endpoint%' THEN
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO workflow_user', fn);
        END IF;
    END LOOP;
END
$$;

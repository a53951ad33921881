-- workflow 0.1.0 → 0.2.0, applied by ALTER EXTENSION workflow UPDATE.
--
-- The upgrade test (tests/tests/upgrade.rs) checks that a populated 0.1.0 database,
-- upgraded with this script, has the same schema as a fresh 0.2.0 install and keeps its data.

-- Messages stored with an infinite due time before 0.2.0 refused them: due now instead
-- (the infinities meant "never" or "at once", and a message that is never due is lost).
UPDATE workflow.outbox SET next_attempt_at = statement_timestamp()
 WHERE status = 'pending' AND NOT isfinite(next_attempt_at);

-- How many messages are delivered, dead and cancelled, so that wf_stats and dashboards never
-- count the kept history. Kept as deltas: each statement that moves messages into or out
-- of one of those states, or deletes them, adds a row (an insert waits for no one), and the
-- dispatcher's housekeeping folds the rows into one per status, endpoint and sign. wf_stats
-- and workflow.metrics sum them for the kept counts; the positive rows alone only grow, and
-- are the counters workflow.metrics gives Prometheus.
CREATE TABLE workflow.message_counts (
    status  workflow.message_status NOT NULL,
    n       bigint NOT NULL,
    -- The messages' endpoint; NULL for URL targets.
    endpoint text
) WITH (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 2000,
    autovacuum_vacuum_cost_delay = 0
);
INSERT INTO workflow.message_counts (status, n, endpoint)
SELECT status, count(*), endpoint FROM workflow.outbox WHERE status <> 'pending' GROUP BY status, endpoint;

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
    CHECK (VALUE IN ('endpoint', 'ordering_key', 'limit'));
ALTER TABLE workflow.outbox
    ADD COLUMN parked workflow.park_reason,
    ADD COLUMN unpark_successor boolean,
    -- A URL target's origin (scheme://host:port as written): URL targets share
    -- workflow.max_concurrency_per_destination by origin, as endpoints share their limits.
    ADD COLUMN origin text GENERATED ALWAYS AS (lower(substring(url FROM '^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*'))) STORED;
-- Delivery policy (wf_endpoint): limits, event types, the retry schedule, rotation and
-- health (see the fresh install's schema for each column).
ALTER TABLE workflow.endpoint_settings
    ADD COLUMN unpark_messages boolean,
    ADD COLUMN max_concurrency integer,
    ADD COLUMN rate_per_second double precision,
    ADD COLUMN event_types text[],
    ADD COLUMN retry_schedule interval[],
    ADD COLUMN retiring_secrets text[],
    ADD COLUMN retiring_until timestamptz,
    ADD COLUMN failing_since timestamptz;
-- Header values are credentials as often as not (authorization, api keys): the view shows
-- their names only, and secrets not at all.
DROP VIEW workflow.endpoints;
CREATE VIEW workflow.endpoints AS
SELECT name, url, cardinality(secrets) AS secret_count,
       ARRAY(SELECT jsonb_object_keys(headers) ORDER BY 1) AS header_names,
       timeout, max_attempts, disabled_at, disabled_reason, created_at, updated_at,
       max_concurrency, rate_per_second, event_types, retry_schedule, failing_since,
       CASE WHEN retiring_until > statement_timestamp() THEN cardinality(retiring_secrets) ELSE 0 END
           AS retiring_secret_count,
       CASE WHEN retiring_until > statement_timestamp() THEN retiring_until END AS retiring_until
  FROM workflow.endpoint_settings;
COMMENT ON VIEW workflow.endpoints IS 'Named endpoints, without their secrets or header values';
GRANT SELECT ON workflow.endpoints TO workflow_user;
DROP INDEX workflow.outbox_due;
CREATE INDEX outbox_due ON workflow.outbox (next_attempt_at)
    WHERE (status = 'pending') IS TRUE AND parked IS NULL;
CREATE INDEX outbox_parked ON workflow.outbox (endpoint, next_attempt_at) WHERE parked IS NOT NULL;
CREATE INDEX outbox_unpark_successor ON workflow.outbox (ordering_key) WHERE unpark_successor IS TRUE;
CREATE INDEX outbox_limited ON workflow.outbox (coalesce(endpoint, origin), next_attempt_at)
    WHERE parked = 'limit';
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
       -- ('endpoint'), an older message of its key is pending ('ordering_key'), or its
       -- destination is at its concurrency or rate limit ('limit').
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

-- Signals, waits and child workflows. The new columns come last, as in a fresh install.
ALTER TABLE workflow.runs
    ADD COLUMN parent uuid,
    ADD COLUMN wait_step text,
    ADD COLUMN wait_signal text,
    ADD COLUMN wait_deadline timestamptz;
CREATE INDEX runs_children ON workflow.runs (parent) WHERE parent IS NOT NULL;
CREATE OR REPLACE VIEW workflow.workflows AS
SELECT r.id, r.name, r.status::text AS status, r.input, r.output, r.error,
       s.steps_done, s.last_step,
       r.owner, r.lease_expires_at, r.recovery_attempts, r.idempotency_key,
       r.created_at, r.updated_at, r.finished_at,
       r.parent, coalesce(r.wait_signal, r.wait_step) AS waiting_for,
       r.wait_deadline AS waiting_until
  FROM workflow.runs r
  LEFT JOIN LATERAL (
        SELECT count(*)::integer AS steps_done,
               (array_agg(c.step ORDER BY c.seq DESC))[1] AS last_step
          FROM workflow.checkpoints c
         WHERE c.workflow_id = r.id) s ON true;

-- Signals sent to workflows (wf_signal), queued per workflow and name in commit order:
-- wf_signal locks the run before it inserts, so ids follow the order of the commits. A
-- signal is consumed by one wf_wait, which records it as its step. No foreign key, for
-- the checkpoints' reason; retention deletes a run's signals with it.
CREATE TABLE workflow.run_signals (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_id      uuid        NOT NULL,
    name             text        NOT NULL,
    payload          jsonb,
    idempotency_key  text,
    sent_at          timestamptz NOT NULL DEFAULT statement_timestamp(),
    consumed_at      timestamptz,
    -- The step of the wait that consumed it.
    consumed_by      text
);
-- The queue of one workflow's signals of one name, oldest first; also retention's path.
CREATE INDEX run_signals_queue ON workflow.run_signals (workflow_id, name, id);
CREATE UNIQUE INDEX run_signals_idempotency ON workflow.run_signals (workflow_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE VIEW workflow.signals AS
SELECT s.id, s.workflow_id, r.name AS workflow_name, s.name AS signal, s.payload,
       s.idempotency_key, s.sent_at, s.consumed_at, s.consumed_by
  FROM workflow.run_signals s
  LEFT JOIN workflow.runs r ON r.id = s.workflow_id;
COMMENT ON VIEW workflow.signals IS 'Every signal sent to a workflow, queued or consumed by a wait';
GRANT SELECT ON workflow.signals TO workflow_user;
SELECT pg_catalog.pg_extension_config_dump('workflow.run_signals', '');
SELECT pg_catalog.pg_extension_config_dump('workflow.run_signals_id_seq', '');

-- wf_start takes a parent, wf_status says more, and wf_signal and wf_wait are new.
DROP FUNCTION wf_start(text, jsonb, text, text);
DROP FUNCTION wf_status(uuid);

CREATE  FUNCTION "wf_start"(
	"name" TEXT, /* Option < & str > */
	"input" jsonb DEFAULT NULL, /* Option < Document > */
	"idempotency_key" TEXT DEFAULT NULL, /* Option < & str > */
	"owner" TEXT DEFAULT NULL, /* Option < & str > */
	"parent" uuid DEFAULT NULL /* Option < pgrx :: Uuid > */
) RETURNS uuid /* pgrx :: Uuid */
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wf_start_wrapper';

CREATE  FUNCTION "wf_status"(
	"workflow" uuid /* Option < pgrx :: Uuid > */
) RETURNS TABLE (
	"name" TEXT,  /* String */
	"status" TEXT,  /* String */
	"input" jsonb,  /* Option < Document > */
	"output" jsonb,  /* Option < Document > */
	"error" TEXT,  /* Option < String > */
	"steps_done" INT,  /* i32 */
	"last_step" TEXT,  /* Option < String > */
	"created_at" timestamp with time zone,  /* TimestampWithTimeZone */
	"updated_at" timestamp with time zone,  /* TimestampWithTimeZone */
	"finished_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"owner" TEXT,  /* Option < String > */
	"lease_expires_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"recovery_attempts" INT,  /* i32 */
	"idempotency_key" TEXT,  /* Option < String > */
	"parent" uuid,  /* Option < pgrx :: Uuid > */
	"waiting_for" TEXT,  /* Option < String > */
	"waiting_until" timestamp with time zone  /* Option < TimestampWithTimeZone > */
)
STABLE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wf_status_wrapper';

CREATE  FUNCTION "wf_signal"(
	"workflow" uuid, /* Option < pgrx :: Uuid > */
	"signal" TEXT, /* Option < & str > */
	"payload" jsonb DEFAULT NULL, /* Option < Document > */
	"idempotency_key" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS bigint /* i64 */
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wf_signal_wrapper';

CREATE  FUNCTION "wf_wait"(
	"workflow" uuid, /* Option < pgrx :: Uuid > */
	"step" TEXT, /* Option < & str > */
	"signal" TEXT DEFAULT NULL, /* Option < & str > */
	"timeout" interval DEFAULT NULL, /* Option < Interval > */
	"owner" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS jsonb /* Option < Document > */
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wf_wait_wrapper';

-- Push handlers (wf_handler): every ready workflow of `name` is claimed by the dispatcher
-- and POSTed to the target, a URL or an endpoint (exactly one is set), as a signed
-- workflow.ready webhook. The owner's business, like endpoints: not granted to applications.
CREATE TABLE workflow.handlers (
    name        text        PRIMARY KEY,
    url         text,
    endpoint    text        REFERENCES workflow.endpoint_settings (name) ON UPDATE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT statement_timestamp(),
    updated_at  timestamptz NOT NULL DEFAULT statement_timestamp()
);
SELECT pg_catalog.pg_extension_config_dump('workflow.handlers', '');

CREATE  FUNCTION "wf_handler"(
	"name" TEXT, /* Option < & str > */
	"target" TEXT /* Option < & str > */
) RETURNS void
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wf_handler_wrapper';

CREATE  FUNCTION "wf_handler_drop"(
	"name" TEXT /* Option < & str > */
) RETURNS void
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wf_handler_drop_wrapper';

-- One row per endpoint and one for URL targets (endpoint NULL), for dashboards and the
-- Prometheus exporter. Cheap at any size: the pending backlog through the due and parked
-- indexes, the kept totals from message_counts, the last minute through the finished
-- index and the attempts' BRIN index; never a scan of delivered history.
CREATE VIEW workflow.metrics AS
WITH pending AS (
    SELECT q.endpoint, count(*) AS pending,
           count(*) FILTER (WHERE q.leased_until > statement_timestamp()) AS in_flight,
           count(*) FILTER (WHERE q.parked IS NOT NULL) AS parked,
           statement_timestamp() - min(q.created_at) AS oldest_pending_age
      FROM (SELECT endpoint, leased_until, parked, created_at FROM workflow.outbox
             WHERE (status = 'pending') IS TRUE AND parked IS NULL
            UNION ALL
            SELECT endpoint, leased_until, parked, created_at FROM workflow.outbox
             WHERE parked IS NOT NULL) q
     GROUP BY q.endpoint),
kept AS (
    SELECT endpoint,
           sum(n) FILTER (WHERE status = 'delivered') AS delivered,
           sum(n) FILTER (WHERE status = 'dead') AS dead,
           sum(n) FILTER (WHERE status = 'cancelled') AS cancelled,
           sum(n) FILTER (WHERE status = 'delivered' AND n > 0) AS delivered_total,
           sum(n) FILTER (WHERE status = 'dead' AND n > 0) AS dead_total
      FROM workflow.message_counts
     GROUP BY endpoint),
delivered AS (
    SELECT endpoint, count(*) AS deliveries,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - created_at) * 1000) AS p50,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - created_at) * 1000) AS p99
      FROM workflow.outbox
     WHERE (status <> 'pending') IS TRUE AND status = 'delivered'
       AND finished_at >= statement_timestamp() - interval '1 minute'
     GROUP BY endpoint),
failed AS (
    SELECT f.endpoint, count(*) AS failures
      FROM (-- The message's endpoint by key, a probe per failed attempt.
            SELECT (SELECT m.endpoint FROM workflow.outbox m WHERE m.id = a.message_id) AS endpoint
              FROM workflow.delivery_attempts a
             WHERE a.started_at >= statement_timestamp() - interval '1 minute'
               AND (a.status_code IS NULL OR a.status_code NOT BETWEEN 200 AND 299)
            UNION ALL
            SELECT endpoint FROM workflow.outbox
             WHERE (status = 'pending') IS TRUE AND parked IS NULL
               AND last_started_at >= statement_timestamp() - interval '1 minute'
               AND (last_status_code IS NULL OR last_status_code NOT BETWEEN 200 AND 299)
            UNION ALL
            SELECT endpoint FROM workflow.outbox
             WHERE parked IS NOT NULL
               AND last_started_at >= statement_timestamp() - interval '1 minute'
               AND (last_status_code IS NULL OR last_status_code NOT BETWEEN 200 AND 299)
            UNION ALL
            SELECT endpoint FROM workflow.outbox
             WHERE (status <> 'pending') IS TRUE AND status = 'dead'
               AND finished_at >= statement_timestamp() - interval '1 minute'
               AND last_started_at >= statement_timestamp() - interval '1 minute'
               AND (last_status_code IS NULL OR last_status_code NOT BETWEEN 200 AND 299)) f
     GROUP BY f.endpoint)
SELECT d.endpoint, d.disabled, d.failing_since,
       coalesce(p.pending, 0) AS pending, coalesce(p.in_flight, 0) AS in_flight,
       coalesce(p.parked, 0) AS parked, p.oldest_pending_age,
       coalesce(k.delivered, 0)::bigint AS delivered, coalesce(k.dead, 0)::bigint AS dead,
       coalesce(k.cancelled, 0)::bigint AS cancelled,
       coalesce(k.delivered_total, 0)::bigint AS delivered_total,
       coalesce(k.dead_total, 0)::bigint AS dead_total,
       coalesce(l.deliveries, 0) AS deliveries_last_minute,
       coalesce(f.failures, 0) AS failures_last_minute,
       l.p50 AS latency_p50_ms, l.p99 AS latency_p99_ms
  FROM (SELECT e.name, e.disabled_at IS NOT NULL, e.failing_since FROM workflow.endpoint_settings e
        UNION ALL
        SELECT NULL, false, NULL) d (endpoint, disabled, failing_since)
  LEFT JOIN pending p ON p.endpoint IS NOT DISTINCT FROM d.endpoint
  LEFT JOIN kept k ON k.endpoint IS NOT DISTINCT FROM d.endpoint
  LEFT JOIN delivered l ON l.endpoint IS NOT DISTINCT FROM d.endpoint
  LEFT JOIN failed f ON f.endpoint IS NOT DISTINCT FROM d.endpoint;
COMMENT ON VIEW workflow.metrics IS 'Delivery health per endpoint, and for URL targets, cheap enough to scrape';
GRANT SELECT ON workflow.metrics TO workflow_user;

-- One row per workflow name with running workflows or workflows finished in the last minute,
-- for dashboards and the Prometheus exporter. Cheap at any size: the running ones through
-- runs_claimable, the last minute through runs_finished; never a scan of finished history.
CREATE VIEW workflow.workflow_metrics AS
WITH running AS (
    SELECT name,
           count(*) FILTER (WHERE lease_expires_at <= statement_timestamp()) AS ready,
           count(*) FILTER (WHERE owner IS NOT NULL AND lease_expires_at > statement_timestamp()) AS leased,
           count(*) FILTER (WHERE owner IS NULL
                              AND (lease_expires_at > statement_timestamp() OR lease_expires_at IS NULL)) AS parked
      FROM workflow.runs
     WHERE (status = 'running') IS TRUE
     GROUP BY name),
finished AS (
    SELECT name,
           count(*) FILTER (WHERE status = 'completed') AS completed,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           count(*) FILTER (WHERE status = 'cancelled') AS cancelled
      FROM workflow.runs
     WHERE (status <> 'running') IS TRUE AND finished_at >= statement_timestamp() - interval '1 minute'
     GROUP BY name)
SELECT coalesce(r.name, f.name) AS name,
       coalesce(r.ready, 0) AS ready, coalesce(r.leased, 0) AS leased,
       coalesce(r.parked, 0) AS parked,
       coalesce(f.completed, 0) AS completed_last_minute,
       coalesce(f.failed, 0) AS failed_last_minute,
       coalesce(f.cancelled, 0) AS cancelled_last_minute
  FROM running r FULL JOIN finished f ON f.name = r.name;
COMMENT ON VIEW workflow.workflow_metrics IS 'Running workflows by state, and the last minute''s finished ones, per name';
GRANT SELECT ON workflow.workflow_metrics TO workflow_user;

-- Delivery policy: wf_endpoint updates only the fields given and takes limits, event types
-- and a retry schedule; wf_stats counts disabled endpoints; rotation, fan-out and replay
-- are new. The definitions are the ones `cargo pgrx schema` generates for 0.2.0.
DROP FUNCTION wf_endpoint(text, text, text, jsonb, interval, integer, integer, integer);
DROP FUNCTION wf_stats();

CREATE  FUNCTION "wf_endpoint"(
	"name" TEXT, /* Option < & str > */
	"url" TEXT DEFAULT NULL, /* Option < & str > */
	"secret" TEXT DEFAULT NULL, /* Option < & str > */
	"headers" jsonb DEFAULT NULL, /* Option < Document > */
	"timeout" interval DEFAULT NULL, /* Option < Interval > */
	"max_attempts" INT DEFAULT NULL, /* Option < i32 > */
	"max_concurrency" INT DEFAULT NULL, /* Option < i32 > */
	"rate_per_second" NUMERIC DEFAULT NULL, /* Option < AnyNumeric > */
	"event_types" TEXT[] DEFAULT NULL, /* :: std :: option :: Option < Vec < Option < String > > > */
	"retry_schedule" interval[] DEFAULT NULL /* :: std :: option :: Option < Vec < Option < Interval > > > */
) RETURNS TEXT /* Option < String > */
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wf_endpoint_wrapper';

CREATE  FUNCTION "wf_stats"() RETURNS TABLE (
	"pending" bigint,  /* i64 */
	"delivered" bigint,  /* i64 */
	"dead" bigint,  /* i64 */
	"cancelled" bigint,  /* i64 */
	"oldest_pending_age" interval,  /* Option < pgrx :: datum :: Interval > */
	"deliveries_last_minute" bigint,  /* i64 */
	"failures_last_minute" bigint,  /* i64 */
	"latency_p50_ms" double precision,  /* Option < f64 > */
	"latency_p99_ms" double precision,  /* Option < f64 > */
	"dispatcher_running" bool,  /* bool */
	"endpoints_disabled" bigint  /* i64 */
)
STRICT STABLE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wf_stats_wrapper';

CREATE  FUNCTION "wf_endpoint_rotate"(
	"name" TEXT, /* Option < & str > */
	"keep_old" interval DEFAULT '24 hours' /* Option < Interval > */
) RETURNS TEXT /* String */
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wf_endpoint_rotate_wrapper';

CREATE  FUNCTION "wf_publish"(
	"event_type" TEXT, /* Option < & str > */
	"payload" jsonb, /* Option < Document > */
	"headers" jsonb DEFAULT NULL, /* Option < Document > */
	"idempotency_key" TEXT DEFAULT NULL, /* Option < & str > */
	"deliver_at" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"ordering_key" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS bigint[] /* Vec < i64 > */
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wf_publish_wrapper';

CREATE  FUNCTION "wf_replay"(
	"endpoint" TEXT, /* Option < & str > */
	"since" timestamp with time zone, /* Option < TimestampWithTimeZone > */
	"until" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"statuses" TEXT[] DEFAULT '{dead}' /* :: std :: option :: Option < Vec < Option < String > > > */
) RETURNS bigint /* i64 */
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wf_replay_wrapper';

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
        -- Endpoints hold secrets and destinations, handlers choose destinations: the
        -- owner's business, not the app's.
        IF fn::text LIKE 'wf\_%' AND fn::text NOT LIKE 'wf\_endpoint%'
           AND fn::text NOT LIKE 'wf\_handler%' AND fn::text NOT LIKE 'wf\_replay%' THEN
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO workflow_user', fn);
        END IF;
    END LOOP;
END
$$;

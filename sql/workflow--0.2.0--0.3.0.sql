-- workflow 0.2.0 → 0.3.0, applied by ALTER EXTENSION workflow UPDATE.
--
-- The upgrade test (tests/tests/upgrade.rs) checks that populated 0.2.0 and 0.1.0 databases,
-- upgraded with this script (0.1.0 through both), have the same schema as a fresh 0.3.0
-- install and keep their data.

-- Who the work is for, and the session a lease without an explicit owner is bound to (see
-- src/schema.sql). Leases taken before the upgrade are bound to no session: they run out as
-- they did.
ALTER TABLE workflow.runs
    ADD COLUMN tenant text,
    ADD COLUMN session_pid integer,
    ADD COLUMN session_started timestamptz;
-- The session-bound leases, for the dispatcher's look for sessions that ended.
CREATE INDEX runs_sessions ON workflow.runs (session_pid) WHERE session_pid IS NOT NULL;

-- Leases are at most a day from 0.3.0 on: one taken longer under 0.2.0 ends within a day,
-- and renews by a day at most. (A parked run's time is its wait's deadline: no lease.)
UPDATE workflow.runs
   SET lease_duration = least(lease_duration, interval '1 day'),
       lease_expires_at = CASE WHEN owner IS NOT NULL
                               THEN least(lease_expires_at, now() + interval '1 day')
                               ELSE lease_expires_at END
 WHERE status = 'running'
   AND (lease_duration > interval '1 day'
        OR (owner IS NOT NULL AND lease_expires_at > now() + interval '1 day'));

CREATE OR REPLACE VIEW workflow.workflows AS
SELECT r.id, r.name, r.status::text AS status, r.input, r.output, r.error,
       s.steps_done, s.last_step,
       r.owner, r.lease_expires_at, r.recovery_attempts, r.idempotency_key,
       r.created_at, r.updated_at, r.finished_at,
       r.parent, coalesce(r.wait_signal, r.wait_step) AS waiting_for,
       r.wait_deadline AS waiting_until, r.tenant
  FROM workflow.runs r
  LEFT JOIN LATERAL (
        SELECT count(*)::integer AS steps_done,
               (array_agg(c.step ORDER BY c.seq DESC))[1] AS last_step
          FROM workflow.checkpoints c
         WHERE c.workflow_id = r.id) s ON true;

-- wf_start takes a tenant and if_exists, wf_status shows the tenant, and wf_claim's owner is
-- optional (a session-bound lease); wf_claim_runs and wf_release are new.
DROP FUNCTION wf_start(text, jsonb, text, text, uuid);
DROP FUNCTION wf_status(uuid);
DROP FUNCTION wf_claim(text, text, interval, integer);

CREATE  FUNCTION "wf_start"(
	"name" TEXT, /* Option < & str > */
	"input" jsonb DEFAULT NULL, /* Option < Document > */
	"idempotency_key" TEXT DEFAULT NULL, /* Option < & str > */
	"owner" TEXT DEFAULT NULL, /* Option < & str > */
	"parent" uuid DEFAULT NULL, /* Option < pgrx :: Uuid > */
	"tenant" TEXT DEFAULT NULL, /* Option < & str > */
	"if_exists" TEXT DEFAULT 'return' /* Option < & str > */
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
	"waiting_until" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"tenant" TEXT  /* Option < String > */
)
STABLE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wf_status_wrapper';

CREATE  FUNCTION "wf_claim"(
	"name" TEXT, /* Option < & str > */
	"owner" TEXT DEFAULT NULL, /* Option < & str > */
	"lease" interval DEFAULT NULL, /* Option < Interval > */
	"max" INT DEFAULT 1 /* Option < i32 > */
) RETURNS SETOF uuid /* pgrx :: Uuid */
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wf_claim_wrapper';

CREATE  FUNCTION "wf_claim_runs"(
	"name" TEXT, /* Option < & str > */
	"owner" TEXT DEFAULT NULL, /* Option < & str > */
	"lease" interval DEFAULT NULL, /* Option < Interval > */
	"max" INT DEFAULT 1 /* Option < i32 > */
) RETURNS TABLE (
	"workflow" uuid,  /* pgrx :: Uuid */
	"name" TEXT,  /* String */
	"input" jsonb,  /* Option < Document > */
	"steps" jsonb,  /* Document */
	"tenant" TEXT,  /* Option < String > */
	"lease_expires_at" timestamp with time zone  /* TimestampWithTimeZone */
)
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wf_claim_runs_wrapper';

CREATE  FUNCTION "wf_release"(
	"workflow" uuid, /* Option < pgrx :: Uuid > */
	"owner" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS void
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wf_release_wrapper';

-- Destinations as explicit state (G11).
CREATE DOMAIN workflow.destination_state AS text
    CHECK (VALUE IN ('healthy', 'failing'));
-- The health of every destination that has failed (G11): an endpoint's name, or a URL
-- target's origin, as the claim names it. A failing destination is probed with one request
-- at a time, the next not before next_probe_at, and its other messages wait parked at its
-- limit without attempts; its first answer makes it healthy and all of them due. Written
-- only by the dispatcher (and by wf_endpoint_enable), kept here so that a restarted
-- dispatcher, or a promoted standby's, goes on where it was.
CREATE TABLE workflow.destinations (
    destination    text        PRIMARY KEY,
    state          workflow.destination_state NOT NULL,
    -- When it entered its state.
    since          timestamptz NOT NULL,
    -- Failed requests in a row while failing: the probe interval doubles with them.
    probes         integer     NOT NULL DEFAULT 0,
    next_probe_at  timestamptz
);
SELECT pg_catalog.pg_extension_config_dump('workflow.destinations', '');

-- A URL target's origin is canonical, so that one server written three ways is one
-- destination. The column is computed by the library now: it is dropped and added again
-- (this rewrites the outbox), and the limited messages' index with it.
-- A URL's canonical origin, for the outbox's origin column (Rust: delivery::target::origin).
CREATE FUNCTION workflow.url_origin(url text) RETURNS text
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'url_origin_wrapper';
REVOKE ALL ON FUNCTION workflow.url_origin(text) FROM PUBLIC;
DROP INDEX workflow.outbox_limited;
ALTER TABLE workflow.outbox DROP COLUMN origin;
ALTER TABLE workflow.outbox ADD COLUMN origin text GENERATED ALWAYS AS (workflow.url_origin(url)) STORED;
CREATE INDEX outbox_limited ON workflow.outbox (coalesce(endpoint, origin), next_attempt_at)
    WHERE parked = 'limit';

-- The endpoints view shows each endpoint's state and since when.
CREATE OR REPLACE VIEW workflow.endpoints AS
SELECT e.name, e.url, cardinality(e.secrets) AS secret_count,
       ARRAY(SELECT jsonb_object_keys(e.headers) ORDER BY 1) AS header_names,
       e.timeout, e.max_attempts, e.disabled_at, e.disabled_reason, e.created_at, e.updated_at,
       e.max_concurrency, e.rate_per_second, e.event_types, e.retry_schedule, e.failing_since,
       CASE WHEN e.retiring_until > statement_timestamp() THEN cardinality(e.retiring_secrets) ELSE 0 END
           AS retiring_secret_count,
       CASE WHEN e.retiring_until > statement_timestamp() THEN e.retiring_until END AS retiring_until,
       CASE WHEN e.disabled_at IS NOT NULL THEN 'disabled' ELSE coalesce(d.state::text, 'healthy') END AS state,
       CASE WHEN e.disabled_at IS NOT NULL THEN e.disabled_at ELSE coalesce(d.since, e.created_at) END
           AS state_since,
       CASE WHEN e.disabled_at IS NULL AND d.state = 'failing' THEN d.next_probe_at END AS next_probe_at
  FROM workflow.endpoint_settings e
  LEFT JOIN workflow.destinations d ON d.destination = e.name;

-- wf_endpoint_disable is new; owner only, like every wf_endpoint*.
CREATE  FUNCTION "wf_endpoint_disable"(
	"name" TEXT, /* Option < & str > */
	"reason" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS void
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wf_endpoint_disable_wrapper';
REVOKE ALL ON FUNCTION wf_endpoint_disable(text, text) FROM PUBLIC;

-- As the install script's grants do: nothing for PUBLIC, every wf_* for workflow_user.
DO $$
DECLARE
    fn regprocedure;
BEGIN
    FOREACH fn IN ARRAY ARRAY['wf_start(text, jsonb, text, text, uuid, text, text)',
                              'wf_status(uuid)',
                              'wf_claim(text, text, interval, integer)',
                              'wf_claim_runs(text, text, interval, integer)',
                              'wf_release(uuid, text)']::regprocedure[]
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO workflow_user', fn);
    END LOOP;
END
$$;

-- One attempt's outcome as the dispatcher records it: a round's attempts travel to their
-- messages as one array of these (src/dispatcher/record/record.sql).
CREATE TYPE workflow.attempt_outcome AS (
    id               bigint,
    attempt          integer,
    started          double precision,
    duration_ms      real,
    status_code      integer,
    error            text,
    body             text,
    state            text,
    delay_s          double precision,
    replaces_attempt boolean
);

-- Copies that stay silent (G12): the database's identity, the dispatch state pg_dump
-- carries, and the identity each message and run is written under (see src/schema.sql).
-- The rows already here were written in this database.
CREATE FUNCTION workflow.database_identity() RETURNS bigint
    LANGUAGE c STABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'database_identity_wrapper';
REVOKE ALL ON FUNCTION workflow.database_identity() FROM PUBLIC;

CREATE TABLE workflow.dispatch (
    identity       bigint      NOT NULL,
    paused_at      timestamptz,
    paused_reason  text
);
INSERT INTO workflow.dispatch (identity) VALUES (workflow.database_identity());
SELECT pg_catalog.pg_extension_config_dump('workflow.dispatch', '');

-- A constant default first, so that adding the columns rewrites neither table.
DO $$
BEGIN
    EXECUTE pg_catalog.format(
        'ALTER TABLE workflow.runs ADD COLUMN written_in bigint NOT NULL DEFAULT %s',
        workflow.database_identity());
    EXECUTE pg_catalog.format(
        'ALTER TABLE workflow.outbox ADD COLUMN written_in bigint NOT NULL DEFAULT %s',
        workflow.database_identity());
END
$$;
-- From now on the wf_* functions say where a row is written; a row that does not say (a
-- dump from before 0.3.0 restored later) counts as another database's.
ALTER TABLE workflow.runs ALTER COLUMN written_in SET DEFAULT 0;
ALTER TABLE workflow.outbox ALTER COLUMN written_in SET DEFAULT 0;

-- Messages say who they are for: wf_enqueue and wf_publish take a tenant (wf_enqueue's
-- default is its workflow's), and a push carries its run's.
ALTER TABLE workflow.outbox ADD COLUMN tenant text;
CREATE INDEX outbox_limited_tenants
    ON workflow.outbox (coalesce(endpoint, origin), (coalesce(tenant, '')), next_attempt_at)
    WHERE parked = 'limit';
DROP FUNCTION wf_enqueue(text, jsonb, jsonb, text, timestamptz, uuid, text, text);
CREATE  FUNCTION "wf_enqueue"(
	"target" TEXT, /* Option < & str > */
	"payload" jsonb, /* Option < Document > */
	"headers" jsonb DEFAULT NULL, /* Option < Document > */
	"idempotency_key" TEXT DEFAULT NULL, /* Option < & str > */
	"deliver_at" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"workflow" uuid DEFAULT NULL, /* Option < pgrx :: Uuid > */
	"step" TEXT DEFAULT NULL, /* Option < & str > */
	"ordering_key" TEXT DEFAULT NULL, /* Option < & str > */
	"tenant" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS bigint /* i64 */
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wf_enqueue_wrapper';
REVOKE ALL ON FUNCTION wf_enqueue(text, jsonb, jsonb, text, timestamptz, uuid, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wf_enqueue(text, jsonb, jsonb, text, timestamptz, uuid, text, text, text) TO workflow_user;
DROP FUNCTION wf_publish(text, jsonb, jsonb, text, timestamptz, text);
CREATE  FUNCTION "wf_publish"(
	"event_type" TEXT, /* Option < & str > */
	"payload" jsonb, /* Option < Document > */
	"headers" jsonb DEFAULT NULL, /* Option < Document > */
	"idempotency_key" TEXT DEFAULT NULL, /* Option < & str > */
	"deliver_at" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"ordering_key" TEXT DEFAULT NULL, /* Option < & str > */
	"tenant" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS bigint[] /* Vec < i64 > */
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wf_publish_wrapper';
REVOKE ALL ON FUNCTION wf_publish(text, jsonb, jsonb, text, timestamptz, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wf_publish(text, jsonb, jsonb, text, timestamptz, text, text) TO workflow_user;

-- Flow control by workflow name (wf_queue; see src/schema.sql).
CREATE TABLE workflow.queue_settings (
    name                    text             PRIMARY KEY,
    max_running             integer          CHECK (max_running > 0),
    max_running_per_tenant  integer          CHECK (max_running_per_tenant > 0),
    rate_per_second         double precision CHECK (rate_per_second > 0),
    tokens                  double precision NOT NULL DEFAULT 1,
    refilled_at             timestamptz      NOT NULL DEFAULT statement_timestamp(),
    next_tenant             text,
    created_at              timestamptz      NOT NULL DEFAULT statement_timestamp(),
    updated_at              timestamptz      NOT NULL DEFAULT statement_timestamp()
);
SELECT pg_catalog.pg_extension_config_dump('workflow.queue_settings', '');
CREATE INDEX runs_tenants ON workflow.runs (name, (coalesce(tenant, '')), lease_expires_at)
    WHERE (status = 'running') IS TRUE;
CREATE INDEX runs_leased ON workflow.runs (name, (coalesce(tenant, ''))) INCLUDE (lease_expires_at)
    WHERE (status = 'running') IS TRUE AND owner IS NOT NULL;
CREATE  FUNCTION "wf_queue"(
	"name" TEXT, /* Option < & str > */
	"max_running" INT DEFAULT NULL, /* Option < i32 > */
	"max_running_per_tenant" INT DEFAULT NULL, /* Option < i32 > */
	"rate_per_second" NUMERIC DEFAULT NULL /* Option < AnyNumeric > */
) RETURNS void
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wf_queue_wrapper';
REVOKE ALL ON FUNCTION wf_queue(text, integer, integer, numeric) FROM PUBLIC;
CREATE  FUNCTION "wf_queue_drop"(
	"name" TEXT /* Option < & str > */
) RETURNS void
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wf_queue_drop_wrapper';
REVOKE ALL ON FUNCTION wf_queue_drop(text) FROM PUBLIC;

-- wf_stats says why delivery is paused and names its latencies for what they measure
-- (enqueue to answer, the request alone); wf_dispatch_pause and wf_dispatch_resume are new,
-- and the owner's only.
DROP FUNCTION wf_stats();
CREATE  FUNCTION "wf_stats"() RETURNS TABLE (
	"pending" bigint,  /* i64 */
	"delivered" bigint,  /* i64 */
	"dead" bigint,  /* i64 */
	"cancelled" bigint,  /* i64 */
	"oldest_pending_age" interval,  /* Option < pgrx :: datum :: Interval > */
	"deliveries_last_minute" bigint,  /* i64 */
	"failures_last_minute" bigint,  /* i64 */
	"enqueue_to_answer_p50_ms" double precision,  /* Option < f64 > */
	"enqueue_to_answer_p99_ms" double precision,  /* Option < f64 > */
	"request_p50_ms" double precision,  /* Option < f64 > */
	"request_p99_ms" double precision,  /* Option < f64 > */
	"dispatcher_running" bool,  /* bool */
	"endpoints_disabled" bigint,  /* i64 */
	"paused_reason" TEXT  /* Option < String > */
)
STRICT STABLE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wf_stats_wrapper';
REVOKE ALL ON FUNCTION wf_stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wf_stats() TO workflow_user;

CREATE  FUNCTION "wf_dispatch_pause"(
	"reason" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS void
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wf_dispatch_pause_wrapper';
REVOKE ALL ON FUNCTION wf_dispatch_pause(text) FROM PUBLIC;

CREATE  FUNCTION "wf_dispatch_resume"() RETURNS void
STRICT VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wf_dispatch_resume_wrapper';
REVOKE ALL ON FUNCTION wf_dispatch_resume() FROM PUBLIC;

-- Header values stay with the owner: workflow.messages (and dead_letters, built on it)
-- shows header names only, as workflow.endpoints does.
DROP VIEW workflow.dead_letters;
DROP VIEW workflow.messages;
CREATE VIEW workflow.messages AS
SELECT id, coalesce(endpoint, url) AS target, endpoint, payload,
       ARRAY(SELECT jsonb_object_keys(headers) ORDER BY 1) AS header_names, idempotency_key,
       webhook_id, status::text AS status, attempts,
       CASE WHEN status = 'pending' THEN greatest(next_attempt_at, leased_until) END AS next_attempt_at,
       ordering_key, workflow_id, step, last_status_code, last_error, created_at, delivered_at,
       finished_at,
       parked::text AS parked, tenant
  FROM workflow.outbox;
COMMENT ON VIEW workflow.messages IS 'Every outbox message and where its delivery stands, without its header values';
CREATE VIEW workflow.dead_letters AS
SELECT * FROM workflow.messages WHERE status = 'dead';
COMMENT ON VIEW workflow.dead_letters IS 'Messages that will not be sent again unless wf_retry revives them';
GRANT SELECT ON workflow.messages, workflow.dead_letters TO workflow_user;

-- Workflow counters that only grow (see src/schema.sql): the runs kept so far are counted
-- as started, and the finished ones by outcome.
CREATE TABLE workflow.workflow_counts (
    name    text               NOT NULL,
    status  workflow.run_status NOT NULL,
    n       bigint             NOT NULL
) WITH (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 2000,
    autovacuum_vacuum_cost_delay = 0
);
INSERT INTO workflow.workflow_counts (name, status, n)
SELECT name, 'running', count(*) FROM workflow.runs GROUP BY name
UNION ALL
SELECT name, status, count(*) FROM workflow.runs WHERE status <> 'running' GROUP BY name, status;
SELECT pg_catalog.pg_extension_config_dump('workflow.workflow_counts', '');

-- The last minute's attempts through a B-tree: BRIN hands a read every page a burst added
-- until a vacuum summarizes it.
DROP INDEX workflow.delivery_attempts_started;
CREATE INDEX delivery_attempts_started ON workflow.delivery_attempts (started_at);

-- Metrics that cost nothing at any size, also under stale statistics: the views read
-- functions that forbid sequential scans. The oldest pending age counts due messages only,
-- from when they were due; failures_last_minute counts a failed attempt whatever then
-- finished its message. Latency is enqueue to answer and the request alone.
CREATE FUNCTION workflow.metrics_rows()
    RETURNS TABLE (endpoint text, disabled boolean, failing_since timestamptz, pending bigint,
                   in_flight bigint, parked bigint, oldest_pending_age interval,
                   delivered bigint, dead bigint, cancelled bigint, delivered_total bigint,
                   dead_total bigint, deliveries_last_minute bigint,
                   failures_last_minute bigint, enqueue_to_answer_p50_ms double precision,
                   enqueue_to_answer_p99_ms double precision, request_p50_ms double precision,
                   request_p99_ms double precision, scheduled bigint)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET enable_seqscan = off
    -- A small table has no index to use instead: its scan, 'disabled', must not look
    -- costly enough to be worth parallel workers or a JIT compilation (half a second).
    SET max_parallel_workers_per_gather = 0
    SET jit = off
AS $$
    WITH pending AS (
        SELECT q.endpoint, count(*) AS pending,
               count(*) FILTER (WHERE q.leased_until > statement_timestamp()) AS in_flight,
               count(*) FILTER (WHERE q.parked IS NOT NULL) AS parked,
               -- How long the oldest due message has waited since it was due: a message
               -- scheduled for later, or waiting for its retry, is not late yet.
               statement_timestamp() - min(q.next_attempt_at)
                   FILTER (WHERE q.next_attempt_at <= statement_timestamp()) AS oldest_pending_age,
               -- Never tried and due later (a deliver_at ahead): scheduled work, its own gauge.
               count(*) FILTER (WHERE q.parked IS NULL AND q.attempts = 0
                                  AND q.next_attempt_at > statement_timestamp()) AS scheduled
          FROM (SELECT endpoint, leased_until, parked, next_attempt_at, attempts FROM workflow.outbox
                 WHERE (status = 'pending') IS TRUE AND parked IS NULL
                UNION ALL
                SELECT endpoint, leased_until, parked, next_attempt_at, attempts FROM workflow.outbox
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
    -- Two latencies of the last minute's deliveries: from the enqueue to the receiver's
    -- answer (delivered_at is when the answer arrived, not when it was recorded), and the
    -- delivering request alone.
    delivered AS (
        SELECT endpoint, count(*) AS deliveries,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - created_at) * 1000) AS answer_p50,
               percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - created_at) * 1000) AS answer_p99,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY last_duration_ms) AS request_p50,
               percentile_cont(0.99) WITHIN GROUP (ORDER BY last_duration_ms) AS request_p99
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
                -- A finished message's last attempt, whatever finished it (a cancel too).
                SELECT endpoint FROM workflow.outbox
                 WHERE (status <> 'pending') IS TRUE
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
           l.answer_p50 AS enqueue_to_answer_p50_ms, l.answer_p99 AS enqueue_to_answer_p99_ms,
           l.request_p50 AS request_p50_ms, l.request_p99 AS request_p99_ms,
           coalesce(p.scheduled, 0) AS scheduled
      FROM (SELECT e.name, e.disabled_at IS NOT NULL, e.failing_since FROM workflow.endpoint_settings e
            UNION ALL
            SELECT NULL, false, NULL) d (endpoint, disabled, failing_since)
      LEFT JOIN pending p ON p.endpoint IS NOT DISTINCT FROM d.endpoint
      LEFT JOIN kept k ON k.endpoint IS NOT DISTINCT FROM d.endpoint
      LEFT JOIN delivered l ON l.endpoint IS NOT DISTINCT FROM d.endpoint
      LEFT JOIN failed f ON f.endpoint IS NOT DISTINCT FROM d.endpoint
$$;
-- The latency columns are renamed for what they measure: a new view.
DROP VIEW workflow.metrics;
CREATE VIEW workflow.metrics AS SELECT * FROM workflow.metrics_rows();
COMMENT ON VIEW workflow.metrics IS 'Delivery health per endpoint, and for URL targets, cheap enough to scrape';
GRANT SELECT ON workflow.metrics TO workflow_user;

-- Flow control per workflow name (wf_queue): its limits, how many of its workflows are
-- leased (running) and ready now, and its five busiest tenants (most running, then most
-- ready). It reads the name's running workflows: for people and the console, not for
-- scraping every few seconds.
CREATE VIEW workflow.queues AS
SELECT q.name, q.max_running, q.max_running_per_tenant, q.rate_per_second,
       coalesce(t.running, 0) AS running, coalesce(t.ready, 0) AS ready,
       coalesce(t.busiest_tenants, '[]') AS busiest_tenants
  FROM workflow.queue_settings q
  LEFT JOIN LATERAL (
       SELECT sum(b.running)::bigint AS running, sum(b.ready)::bigint AS ready,
              jsonb_agg(jsonb_build_object('tenant', b.tenant, 'running', b.running, 'ready', b.ready)
                        ORDER BY b.running DESC, b.ready DESC, b.tenant)
                  FILTER (WHERE b.rank <= 5) AS busiest_tenants
         FROM (SELECT r.tenant,
                      count(*) FILTER (WHERE r.owner IS NOT NULL
                                         AND r.lease_expires_at > statement_timestamp()) AS running,
                      count(*) FILTER (WHERE r.lease_expires_at <= statement_timestamp()) AS ready,
                      row_number() OVER (ORDER BY count(*) FILTER (WHERE r.owner IS NOT NULL
                                                   AND r.lease_expires_at > statement_timestamp()) DESC,
                                                  count(*) FILTER (WHERE r.lease_expires_at <= statement_timestamp()) DESC,
                                                  r.tenant) AS rank
                 FROM workflow.runs r
                WHERE r.name = q.name AND (r.status = 'running') IS TRUE
                GROUP BY r.tenant) b) t ON true;
COMMENT ON VIEW workflow.queues IS 'Flow control per workflow name: limits, running and ready workflows, the busiest tenants';
GRANT SELECT ON workflow.queues TO workflow_user;
REVOKE ALL ON FUNCTION workflow.metrics_rows() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION workflow.metrics_rows() TO workflow_user;
CREATE FUNCTION workflow.workflow_metrics_rows()
    RETURNS TABLE (name text, ready bigint, leased bigint, parked bigint,
                   completed_last_minute bigint, failed_last_minute bigint,
                   cancelled_last_minute bigint, oldest_ready_age interval,
                   started_total bigint, completed_total bigint, failed_total bigint,
                   cancelled_total bigint)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET enable_seqscan = off
    -- A small table has no index to use instead: its scan, 'disabled', must not look
    -- costly enough to be worth parallel workers or a JIT compilation (half a second).
    SET max_parallel_workers_per_gather = 0
    SET jit = off
AS $$
    WITH running AS (
        SELECT name,
               count(*) FILTER (WHERE lease_expires_at <= statement_timestamp()) AS ready,
               count(*) FILTER (WHERE owner IS NOT NULL AND lease_expires_at > statement_timestamp()) AS leased,
               count(*) FILTER (WHERE owner IS NULL
                                  AND (lease_expires_at > statement_timestamp() OR lease_expires_at IS NULL)) AS parked,
               -- How long the oldest ready workflow has waited for a claim: rising while no
               -- worker claims the name (a pool that stopped, a push handler that is down).
               statement_timestamp() - min(lease_expires_at)
                   FILTER (WHERE lease_expires_at <= statement_timestamp()) AS oldest_ready_age
          FROM workflow.runs
         WHERE (status = 'running') IS TRUE
         GROUP BY name),
    -- The last minute's runs in finished order, walked from runs_finished: grouped by name
    -- straight from the table, a plan believing it small read every run in name order.
    finished AS (
        SELECT name,
               count(*) FILTER (WHERE status = 'completed') AS completed,
               count(*) FILTER (WHERE status = 'failed') AS failed,
               count(*) FILTER (WHERE status = 'cancelled') AS cancelled
          FROM (SELECT name, status FROM workflow.runs
                 WHERE (status <> 'running') IS TRUE
                   AND finished_at >= statement_timestamp() - interval '1 minute'
                 ORDER BY finished_at
                OFFSET 0) last_minute
         GROUP BY name),
    counted AS (
        SELECT name,
               sum(n) FILTER (WHERE status = 'running') AS started,
               sum(n) FILTER (WHERE status = 'completed') AS completed,
               sum(n) FILTER (WHERE status = 'failed') AS failed,
               sum(n) FILTER (WHERE status = 'cancelled') AS cancelled
          FROM workflow.workflow_counts
         GROUP BY name)
    SELECT coalesce(r.name, f.name, k.name) AS name,
           coalesce(r.ready, 0) AS ready, coalesce(r.leased, 0) AS leased,
           coalesce(r.parked, 0) AS parked,
           coalesce(f.completed, 0) AS completed_last_minute,
           coalesce(f.failed, 0) AS failed_last_minute,
           coalesce(f.cancelled, 0) AS cancelled_last_minute,
           r.oldest_ready_age,
           coalesce(k.started, 0)::bigint AS started_total,
           coalesce(k.completed, 0)::bigint AS completed_total,
           coalesce(k.failed, 0)::bigint AS failed_total,
           coalesce(k.cancelled, 0)::bigint AS cancelled_total
      FROM running r FULL JOIN finished f ON f.name = r.name
      FULL JOIN counted k ON k.name = coalesce(r.name, f.name)
$$;
CREATE OR REPLACE VIEW workflow.workflow_metrics AS SELECT * FROM workflow.workflow_metrics_rows();
REVOKE ALL ON FUNCTION workflow.workflow_metrics_rows() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION workflow.workflow_metrics_rows() TO workflow_user;

-- The newest workflows first, a page at a time (the console's list): without it a page of
-- the unfiltered list sorted every run kept.
CREATE INDEX runs_created ON workflow.runs (created_at, id);
-- The failed ones, newest first: a rare status, found without walking the others.
CREATE INDEX runs_failed ON workflow.runs (created_at, id) WHERE status = 'failed';
-- The dead letters, newest first (the console's list of them): a rare status, found
-- without walking the delivered history.
CREATE INDEX outbox_dead ON workflow.outbox (id) WHERE status = 'dead';

-- The attempts started since `since`, for charts of recent failures (the console's
-- overview): what workflow.attempts shows, read through indexes only. The attempts moved to
-- the log by their start; a pending message's last attempt through the due and parked
-- indexes (the backlog, not the history); a finished message's through the finished index,
-- since an attempt started since then finished since then too. A filter on the view's
-- started_at finds no index for the messages' last attempts, and read all of them.
CREATE FUNCTION workflow.attempts_since(since timestamptz)
    RETURNS TABLE (message_id bigint, endpoint text, started_at timestamptz, status_code integer)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET enable_seqscan = off
    SET max_parallel_workers_per_gather = 0
    SET jit = off
AS $$
    SELECT a.message_id, (SELECT m.endpoint FROM workflow.outbox m WHERE m.id = a.message_id),
           a.started_at, a.status_code
      FROM workflow.delivery_attempts a
     WHERE a.started_at >= since
    UNION ALL
    SELECT id, endpoint, last_started_at, last_status_code FROM workflow.outbox
     WHERE (status = 'pending') IS TRUE AND parked IS NULL AND last_started_at >= since
    UNION ALL
    SELECT id, endpoint, last_started_at, last_status_code FROM workflow.outbox
     WHERE parked IS NOT NULL AND last_started_at >= since
    UNION ALL
    SELECT id, endpoint, last_started_at, last_status_code FROM workflow.outbox
     WHERE (status <> 'pending') IS TRUE AND finished_at >= since AND last_started_at >= since
$$;
REVOKE ALL ON FUNCTION workflow.attempts_since(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION workflow.attempts_since(timestamptz) TO workflow_user;

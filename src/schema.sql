-- The storage of the `workflow` extension, shipped with it and versioned with it.
--
-- Tables are internal: applications go through the wf_* functions (SECURITY DEFINER, with a
-- pinned search_path) and read the views. Nothing here is granted to PUBLIC; the role
-- `workflow_user` receives exactly what an application needs.

CREATE SCHEMA workflow;
COMMENT ON SCHEMA workflow IS 'Storage and views of the workflow extension';

-- Statuses are checked by their domains: Postgres parses a domain's constraint once per
-- session, but a table's CHECK constraints again in every statement that writes the table
-- (a seventh of each checkpoint's time went there). The invariants between columns — a
-- run or message has finished_at exactly when it is no longer running or pending, a
-- message has exactly one target, a step only with a workflow, only a pending message is
-- parked — are kept by the wf_* functions and the dispatcher, the tables' only writers,
-- and checked over every table by the test `the_invariants_between_columns_hold`.
CREATE DOMAIN workflow.run_status AS text
    CHECK (VALUE IN ('running', 'completed', 'failed', 'cancelled'));
CREATE DOMAIN workflow.message_status AS text
    CHECK (VALUE IN ('pending', 'delivered', 'dead', 'cancelled'));
CREATE DOMAIN workflow.park_reason AS text
    CHECK (VALUE IN ('endpoint', 'ordering_key', 'limit'));
CREATE DOMAIN workflow.destination_state AS text
    CHECK (VALUE IN ('healthy', 'failing'));

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

-- Which database this is (G12): a number made of the cluster's system identifier and the
-- database's oid (Rust: identity.rs). A physical copy, a standby promoted or not, keeps
-- both; a dump restored anywhere, or a CREATE DATABASE … TEMPLATE, does not.
CREATE FUNCTION workflow.database_identity() RETURNS bigint
    LANGUAGE c STABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'database_identity_wrapper';

-- One row per workflow run. Hot paths: insert on start, lease renewal on checkpoint, the
-- claim scan for expired leases, and the retention scan over finished runs.
CREATE TABLE workflow.runs (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    name               text        NOT NULL,
    idempotency_key    text,
    status             workflow.run_status NOT NULL DEFAULT 'running',
    input              jsonb,
    output             jsonb,
    error              text,
    -- Who may run the workflow now, and until when. A running workflow whose lease has
    -- expired (or that has no owner, after wf_sleep) is claimable by wf_claim.
    owner              text,
    lease_expires_at   timestamptz,
    -- The lease length the current owner asked for; every checkpoint renews by it.
    lease_duration     interval    NOT NULL,
    recovery_attempts  integer     NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT statement_timestamp(),
    updated_at         timestamptz NOT NULL DEFAULT statement_timestamp(),
    finished_at        timestamptz,
    -- NULL keys never conflict, so only keyed starts are de-duplicated (G4).
    CONSTRAINT runs_idempotency UNIQUE (name, idempotency_key),
    -- The workflow that started this one (wf_start's parent): it gets the signal
    -- workflow.finished when this one finishes, and its cancel cancels this one.
    parent             uuid,
    -- An unresolved wf_wait: the step it records, the signal it waits for (NULL: the
    -- durable HTTP step wait_step), and when it times out (NULL: never). A timed-out wait
    -- stays here until the next wf_wait of its step records the timeout.
    wait_step          text,
    wait_signal        text,
    wait_deadline      timestamptz,
    -- Who the work is for (wf_start's tenant), shown with the workflow and its claims: the
    -- key that flow control by tenant, and a split of the data, go by.
    tenant             text,
    -- The session a lease without an explicit owner is bound to: its backend's pid and
    -- start (pg_stat_activity's backend_start), so that a reused pid is another session.
    -- When the session ends, the dispatcher frees the lease at once (see runs::sessions).
    session_pid        integer,
    session_started    timestamptz,
    -- The database the run was started in (workflow.database_identity(), see
    -- workflow.dispatch): a run copied from another database is not pushed until
    -- wf_dispatch_resume adopts it. 0: written by no wf_* function (a dump from before
    -- 0.3.0 restored, a hand insert), which counts as another database's.
    written_in         bigint      NOT NULL DEFAULT 0
) WITH (fillfactor = 85); -- room for HOT updates of status and lease on the same page

-- The partial indexes on status are for the statements that mean to walk them, which
-- spell the predicate the same way, `(status ...) IS TRUE`. Postgres does not derive that
-- from a plain `status = 'running'`, so a statement that finds its rows by key cannot be
-- planned onto one of these: a plan made from statistics taken while nothing was running
-- (an idle system) would otherwise read the whole index, which it believes empty, for each
-- lookup. The test `key_lookups_go_by_key_when_the_statistics_are_stale` holds this.

-- Shaped like the claim query: running workflows of one name, oldest expired lease first.
CREATE INDEX runs_claimable ON workflow.runs (name, lease_expires_at) WHERE (status = 'running') IS TRUE;
-- Shaped like the retention scan.
CREATE INDEX runs_finished ON workflow.runs (finished_at) WHERE (status <> 'running') IS TRUE;
-- The newest workflows first, a page at a time (the console's list): without it a page of
-- the unfiltered list sorted every run kept.
CREATE INDEX runs_created ON workflow.runs (created_at, id);
-- The failed ones, newest first: a rare status, found without walking the others.
CREATE INDEX runs_failed ON workflow.runs (created_at, id) WHERE status = 'failed';
-- A run's children, for the cancel that cascades to them.
CREATE INDEX runs_children ON workflow.runs (parent) WHERE parent IS NOT NULL;
-- The session-bound leases, for the dispatcher's look for sessions that ended.
CREATE INDEX runs_sessions ON workflow.runs (session_pid) WHERE session_pid IS NOT NULL;
-- Flow control (wf_queue, runs/queue): a name's running workflows by tenant (NULL as ''),
-- for the round-robin over tenants with a ready run, one probe per tenant; and its leased
-- ones, which its limits count, so that counting never reads a backlog.
CREATE INDEX runs_tenants ON workflow.runs (name, (coalesce(tenant, '')), lease_expires_at)
    WHERE (status = 'running') IS TRUE;
CREATE INDEX runs_leased ON workflow.runs (name, (coalesce(tenant, ''))) INCLUDE (lease_expires_at)
    WHERE (status = 'running') IS TRUE AND owner IS NOT NULL;

-- One row per completed step. The primary key makes a second record of a step impossible.
-- There is no foreign key to runs on purpose: its per-row check (an SPI query and a row
-- lock) cost a third of every checkpoint. Every writer locks the run and checks that it is
-- running in the statement that writes the step, and retention deletes a run's steps with it.
CREATE TABLE workflow.checkpoints (
    workflow_id  uuid        NOT NULL,
    step         text        NOT NULL,
    -- JSON null (never SQL NULL) for a step recorded without output, so that wf_step
    -- tells "done, no output" apart from "not done".
    output       jsonb       NOT NULL,
    -- Global recording order: the last step of a run is its highest seq.
    seq          bigint      GENERATED ALWAYS AS IDENTITY,
    recorded_at  timestamptz NOT NULL DEFAULT statement_timestamp(),
    PRIMARY KEY (workflow_id, step)
);

CREATE VIEW workflow.workflows AS
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
COMMENT ON VIEW workflow.workflows IS 'Every workflow run with its progress and lease';

CREATE VIEW workflow.steps AS
SELECT c.workflow_id, r.name AS workflow_name, c.step, c.output, c.recorded_at
  FROM workflow.checkpoints c
  JOIN workflow.runs r ON r.id = c.workflow_id;
COMMENT ON VIEW workflow.steps IS 'Every recorded step checkpoint, in recording order per workflow';

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

-- Named webhook destinations. Secrets never leave this table: the view hides them.
CREATE TABLE workflow.endpoint_settings (
    name             text        PRIMARY KEY,
    url              text        NOT NULL,
    -- Standard Webhooks secrets (whsec_<base64>); several during a rotation, each signs.
    secrets          text[]      NOT NULL DEFAULT '{}',
    headers          jsonb,
    timeout          interval,
    max_attempts     integer,
    disabled_at      timestamptz,
    disabled_reason  text,
    created_at       timestamptz NOT NULL DEFAULT statement_timestamp(),
    updated_at       timestamptz NOT NULL DEFAULT statement_timestamp(),
    -- Set by wf_endpoint_enable: the dispatcher unparks the endpoint's messages, a batch a
    -- round, and clears it when none is left (a flag, for unpark_successor's reason).
    unpark_messages  boolean,
    -- Delivery policy (wf_endpoint): requests in flight at once (NULL:
    -- workflow.max_concurrency_per_destination), sustained requests a second (NULL: no
    -- limit), the wf_publish event types it subscribes to (patterns like 'order.*'), and
    -- the delays between attempts (NULL: workflow.retry_schedule).
    max_concurrency  integer,
    rate_per_second  double precision,
    event_types      text[],
    retry_schedule   interval[],
    -- Secrets replaced by wf_endpoint_rotate, which keep signing until retiring_until.
    retiring_secrets text[],
    retiring_until   timestamptz,
    -- The first failed attempt since the last delivery: an endpoint failing throughout
    -- workflow.endpoint_disable_after is disabled.
    failing_since    timestamptz
);

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

-- Flow control per workflow name (wf_queue): at most max_running of its workflows leased at
-- once, at most max_running_per_tenant of one tenant's, and at most rate_per_second leases
-- started a second, a token bucket (`tokens` as of `refilled_at`, holding at most a
-- second's worth, or one). NULL: no such limit. Every claim of the name locks its row
-- first, so that claimers count each other's leases; `next_tenant` is the tenant (NULL as
-- '') its round-robin served last. The owner's configuration: kept by pg_dump.
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

-- The database the dispatcher delivers for, and whether it is paused (G12). The extension
-- writes the database's identity when it is created; pg_dump carries the row, so a copy
-- (restored from a dump into any cluster or database, or made by CREATE DATABASE …
-- TEMPLATE) holds an identity that is not its own, and its dispatcher pauses it until an
-- operator calls wf_dispatch_resume(). A restore adds its row beside the new install's:
-- every row must name this database. wf_dispatch_pause() pauses by hand.
CREATE TABLE workflow.dispatch (
    identity       bigint      NOT NULL,
    paused_at      timestamptz,
    paused_reason  text
);
INSERT INTO workflow.dispatch (identity) VALUES (workflow.database_identity());

-- A URL's canonical origin, for the outbox's origin column (Rust: delivery::target::origin).
CREATE FUNCTION workflow.url_origin(url text) RETURNS text
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'url_origin_wrapper';

-- The outbox. A pending message is due when next_attempt_at has passed and no dispatcher
-- holds it: a claim sets leased_until, so a dispatcher that dies mid-send leaves the
-- message due again when the lease runs out. The lease is a column of its own, in no
-- index, so that a claim is a HOT update (no index entries; fillfactor leaves the room).
CREATE TABLE workflow.outbox (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Exactly one of url (a URL target) and endpoint (a named endpoint) is set.
    url              text,
    endpoint         text        REFERENCES workflow.endpoint_settings (name) ON UPDATE CASCADE,
    payload          jsonb       NOT NULL,
    headers          jsonb,
    idempotency_key  text,
    -- Stable across retries, so receivers can de-duplicate (Standard Webhooks webhook-id).
    webhook_id       text        NOT NULL DEFAULT 'msg_' || replace(gen_random_uuid()::text, '-', ''),
    status           workflow.message_status NOT NULL DEFAULT 'pending',
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT statement_timestamp(),
    leased_until     timestamptz,
    ordering_key     text,
    -- A durable HTTP step: on delivery the response is checkpointed as this step. No
    -- foreign key, for the checkpoints' reason: wf_enqueue locks the run (KEY SHARE) and
    -- checks it is running; once retention has deleted the run, the id stays as history.
    workflow_id      uuid,
    step             text,
    -- The latest attempt, kept on the message: most messages are delivered by their first
    -- attempt, and an attempt row of its own cost a quarter of the dispatcher's time per
    -- delivery. The next outcome moves it to delivery_attempts; workflow.attempts shows both.
    last_attempt     integer,
    last_started_at  timestamptz,
    last_duration_ms real,
    last_status_code integer,
    last_error       text,
    last_response_body text,
    created_at       timestamptz NOT NULL DEFAULT statement_timestamp(),
    delivered_at     timestamptz,
    finished_at      timestamptz,
    -- Why a pending message is out of the due path (see outbox_due): 'endpoint' while its
    -- endpoint is disabled, 'ordering_key' while an older message of its key is pending.
    -- Set by the claim that finds it blocked, so that no later claim walks it again.
    parked           workflow.park_reason,
    -- Set when a message with an ordering key stops being pending: the dispatcher then
    -- unparks the key's next message and clears it. A flag rather than the unpark itself,
    -- because the writer's snapshot may predate the claim that parked the next message.
    unpark_successor boolean,
    -- A URL target's origin, canonical (scheme://host:port as the URL standard reads it:
    -- 127.1 is 127.0.0.1, the default port explicit): URL targets share
    -- workflow.max_concurrency_per_destination and their health by origin, as endpoints do.
    origin           text GENERATED ALWAYS AS (workflow.url_origin(url)) STORED,
    -- The database the message was enqueued in (as runs.written_in): the claim sends
    -- nothing while one it walks was copied from another database, and a push carries its
    -- run's. Restored rows carry their original's, whatever order a restore brings them in.
    written_in       bigint      NOT NULL DEFAULT 0,
    -- Who the message is for (wf_enqueue's or wf_publish's tenant, else its workflow's): a
    -- destination's due messages are claimed round-robin by tenant.
    tenant           text
) WITH (
    -- Room on each page for the claim's HOT update (a fifth: a claim updates a batch of
    -- neighbouring rows, so not all of them stay on their page; half was tried, and the
    -- doubled heap cost enqueueing more than the extra HOT claims saved).
    fillfactor = 80,
    -- A queue: rows die as fast as they arrive. Vacuum by the number of dead rows rather
    -- than a share of a table that is usually near-empty, and unthrottled (the table is
    -- small), so its indexes do not grow between passes.
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 2000,
    autovacuum_vacuum_cost_delay = 0
);

-- Shaped like the claim query: due pending messages in due order, without the parked
-- ones, so that a blocked backlog costs a claim nothing. (On the predicates' spelling,
-- see runs_claimable.)
CREATE INDEX outbox_due ON workflow.outbox (next_attempt_at)
    WHERE (status = 'pending') IS TRUE AND parked IS NULL;
-- The parked messages, by endpoint in due order: what wf_endpoint_enable lets go.
CREATE INDEX outbox_parked ON workflow.outbox (endpoint, next_attempt_at) WHERE parked IS NOT NULL;
-- The messages set aside because their destination was at its limit, by destination in
-- due order: what the dispatcher lets go as the destination's requests finish.
CREATE INDEX outbox_limited ON workflow.outbox (coalesce(endpoint, origin), next_attempt_at)
    WHERE parked = 'limit';
-- The same messages by destination and tenant (NULL as ''): the dispatcher lets them go
-- round-robin across tenants, one probe per tenant (parking/unpark_limited.sql).
CREATE INDEX outbox_limited_tenants
    ON workflow.outbox (coalesce(endpoint, origin), (coalesce(tenant, '')), next_attempt_at)
    WHERE parked = 'limit';
-- The messages whose key's next message the dispatcher has yet to unpark.
CREATE INDEX outbox_unpark_successor ON workflow.outbox (ordering_key) WHERE unpark_successor IS TRUE;
-- The head of each ordering key: the lowest pending id.
CREATE INDEX outbox_ordering ON workflow.outbox (ordering_key, id)
    WHERE status = 'pending' AND ordering_key IS NOT NULL;
-- The dead letters, newest first (the console's list of them): a rare status, found
-- without walking the delivered history.
CREATE INDEX outbox_dead ON workflow.outbox (id) WHERE status = 'dead';
CREATE UNIQUE INDEX outbox_idempotency ON workflow.outbox (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Retention and the statistics of the last minute.
CREATE INDEX outbox_finished ON workflow.outbox (finished_at) WHERE (status <> 'pending') IS TRUE;
CREATE INDEX outbox_workflow ON workflow.outbox (workflow_id) WHERE workflow_id IS NOT NULL;

-- One row per HTTP attempt that is no longer a message's latest (see outbox.last_attempt),
-- written in the dispatcher's batched outcome transaction: an append-only log, shaped for
-- a cheap insert (two B-tree indexes). There is no foreign key to the outbox on
-- purpose: its per-row check and per-row cascade cost the dispatcher a tenth of its time.
-- Only the dispatcher writes here, and only for a message that exists in the same
-- statement; retention deletes a message's attempts with it.
CREATE TABLE workflow.delivery_attempts (
    message_id     bigint      NOT NULL,
    id             bigint      GENERATED ALWAYS AS IDENTITY,
    attempt        integer     NOT NULL,
    started_at     timestamptz NOT NULL,
    duration_ms    real        NOT NULL,
    status_code    integer,
    error          text,
    response_body  text,
    -- wf_retry restarts a message's attempt count, so (message_id, attempt) can repeat.
    PRIMARY KEY (message_id, id)
) WITH (
    -- Deleted with its messages by retention: vacuum it like the outbox.
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 2000,
    autovacuum_vacuum_cost_delay = 0
);
-- The statistics of the last minute. A B-tree, not BRIN: the ranges a burst adds stay
-- unsummarized until a vacuum, and BRIN hands every page of them to each read (a scrape
-- right after a burst read them all). Only replaced attempts are logged here, so the index
-- costs the hot path little.
CREATE INDEX delivery_attempts_started ON workflow.delivery_attempts (started_at);

-- Columns no query filters on: no planner statistics, so that ANALYZE (which the
-- dispatcher runs when the outbox outgrows its statistics) does not sort documents.
ALTER TABLE workflow.outbox
    ALTER COLUMN payload SET STATISTICS 0,
    ALTER COLUMN headers SET STATISTICS 0,
    ALTER COLUMN webhook_id SET STATISTICS 0,
    ALTER COLUMN last_error SET STATISTICS 0,
    ALTER COLUMN last_response_body SET STATISTICS 0,
    ALTER COLUMN url SET STATISTICS 0;
ALTER TABLE workflow.delivery_attempts
    ALTER COLUMN error SET STATISTICS 0,
    ALTER COLUMN response_body SET STATISTICS 0;

-- Header values are credentials as often as not (authorization, api keys): the view shows
-- their names only, and secrets not at all.
-- Its state: disabled (by its owner, a 410, or endpoint_disable_after), failing (probed,
-- its messages waiting), or healthy; and since when.
CREATE VIEW workflow.endpoints AS
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
COMMENT ON VIEW workflow.endpoints IS 'Named endpoints, without their secrets or header values';

-- Header values stay with the owner (the tables): an application reads the names only, as
-- in workflow.endpoints, so that one application's Authorization token is not another's.
CREATE VIEW workflow.messages AS
SELECT id, coalesce(endpoint, url) AS target, endpoint, payload,
       ARRAY(SELECT jsonb_object_keys(headers) ORDER BY 1) AS header_names, idempotency_key,
       webhook_id, status::text AS status, attempts,
       -- While a dispatcher holds the message, no attempt starts before its lease ends.
       CASE WHEN status = 'pending' THEN greatest(next_attempt_at, leased_until) END AS next_attempt_at,
       ordering_key, workflow_id, step, last_status_code, last_error, created_at, delivered_at,
       finished_at,
       -- Why the dispatcher set a pending message aside: its endpoint is disabled
       -- ('endpoint'), an older message of its key is pending ('ordering_key'), or its
       -- destination is at its concurrency or rate limit ('limit').
       parked::text AS parked, tenant
  FROM workflow.outbox;
COMMENT ON VIEW workflow.messages IS 'Every outbox message and where its delivery stands, without its header values';

CREATE VIEW workflow.dead_letters AS
SELECT * FROM workflow.messages WHERE status = 'dead';
COMMENT ON VIEW workflow.dead_letters IS 'Messages that will not be sent again unless wf_retry revives them';

CREATE VIEW workflow.attempts AS
SELECT message_id, attempt, started_at, duration_ms, status_code, error, response_body
  FROM (SELECT message_id, attempt, started_at, duration_ms, status_code, error, response_body
          FROM workflow.delivery_attempts
        UNION ALL
        SELECT id, last_attempt, last_started_at, last_duration_ms, last_status_code, last_error,
               last_response_body
          FROM workflow.outbox
         WHERE last_started_at IS NOT NULL) a
 ORDER BY started_at, message_id;
COMMENT ON VIEW workflow.attempts IS 'One row per HTTP delivery attempt';

-- The application role: members may call the wf_* functions and read the views, nothing
-- more. Roles are cluster-wide, so it may already exist from another database.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'workflow_user') THEN
        CREATE ROLE workflow_user NOLOGIN;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA workflow TO workflow_user;
GRANT SELECT ON workflow.workflows, workflow.steps, workflow.messages, workflow.dead_letters,
    workflow.attempts, workflow.endpoints, workflow.signals TO workflow_user;

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

-- How many workflows of each name were started ('running') and finished, by outcome: the
-- counters workflow.workflow_metrics gives Prometheus, which only grow, and the names it
-- keeps showing while they are idle. Kept as deltas like message_counts: a start or a
-- finish adds a row (an insert waits for no one), and housekeeping folds them into one per
-- name and status. Retention removes runs, never their counts.
CREATE TABLE workflow.workflow_counts (
    name    text               NOT NULL,
    status  workflow.run_status NOT NULL,
    n       bigint             NOT NULL
) WITH (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 2000,
    autovacuum_vacuum_cost_delay = 0
);

-- One row per endpoint and one for URL targets (endpoint NULL), for dashboards and the
-- Prometheus exporter. Cheap at any size: the pending backlog through the due and parked
-- indexes, the kept totals from message_counts, the last minute through the finished
-- index and the attempts' started index; never a scan of delivered history. The view reads a
-- function so that it may forbid sequential scans: right after a burst, statistics that
-- call the outbox small made the planner scan it whole, every scrape.
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
GRANT EXECUTE ON FUNCTION workflow.metrics_rows() TO workflow_user;

-- One row per workflow name ever started (its counters, from workflow_counts), with its
-- running workflows and those finished in the last minute, for dashboards and the
-- Prometheus exporter. Cheap at any size: the running ones through runs_claimable, the last
-- minute through runs_finished, the counters from their folded rows; never a scan of
-- finished history (sequential scans forbidden, as for workflow.metrics).
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
CREATE VIEW workflow.workflow_metrics AS SELECT * FROM workflow.workflow_metrics_rows();
COMMENT ON VIEW workflow.workflow_metrics IS 'Running workflows by state, and the last minute''s finished ones, per name';
GRANT SELECT ON workflow.workflow_metrics TO workflow_user;
GRANT EXECUTE ON FUNCTION workflow.workflow_metrics_rows() TO workflow_user;

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
GRANT EXECUTE ON FUNCTION workflow.attempts_since(timestamptz) TO workflow_user;

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
SELECT pg_catalog.pg_extension_config_dump('workflow.workflow_counts', '');
SELECT pg_catalog.pg_extension_config_dump('workflow.run_signals', '');
SELECT pg_catalog.pg_extension_config_dump('workflow.dispatch', '');
SELECT pg_catalog.pg_extension_config_dump('workflow.run_signals_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('workflow.handlers', '');
SELECT pg_catalog.pg_extension_config_dump('workflow.queue_settings', '');
SELECT pg_catalog.pg_extension_config_dump('workflow.destinations', '');

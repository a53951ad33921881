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

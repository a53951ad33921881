-- The storage of the `workflow` extension, shipped with it and versioned with it.
--
-- Tables are internal: applications go through the wf_* functions (SECURITY DEFINER, with a
-- pinned search_path) and read the views. Nothing here is granted to PUBLIC; the role
-- `workflow_user` receives exactly what an application needs.

CREATE SCHEMA workflow;
COMMENT ON SCHEMA workflow IS 'Storage and views of the workflow extension';

-- One row per workflow run. Hot paths: insert on start, lease renewal on checkpoint, the
-- claim scan for expired leases, and the retention scan over finished runs.
CREATE TABLE workflow.runs (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    name               text        NOT NULL,
    idempotency_key    text,
    status             text        NOT NULL DEFAULT 'running'
                                   CHECK (status IN ('running', 'completed', 'failed', 'cancelled')),
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
    CONSTRAINT runs_finished_iff_terminal CHECK ((status = 'running') = (finished_at IS NULL)),
    -- NULL keys never conflict, so only keyed starts are de-duplicated (G4).
    CONSTRAINT runs_idempotency UNIQUE (name, idempotency_key)
) WITH (fillfactor = 85); -- room for HOT updates of status and lease on the same page

-- Shaped like the claim query: running workflows of one name, oldest expired lease first.
CREATE INDEX runs_claimable ON workflow.runs (name, lease_expires_at) WHERE status = 'running';
-- Shaped like the retention scan.
CREATE INDEX runs_finished ON workflow.runs (finished_at) WHERE status <> 'running';

-- One row per completed step. The primary key makes a second record of a step impossible.
CREATE TABLE workflow.checkpoints (
    workflow_id  uuid        NOT NULL REFERENCES workflow.runs (id) ON DELETE CASCADE,
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
SELECT r.id, r.name, r.status, r.input, r.output, r.error,
       s.steps_done, s.last_step,
       r.owner, r.lease_expires_at, r.recovery_attempts, r.idempotency_key,
       r.created_at, r.updated_at, r.finished_at
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
GRANT SELECT ON workflow.workflows, workflow.steps TO workflow_user;

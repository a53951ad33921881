-- Frees the leases whose session is gone, of the sessions with pids `$1` (NULL: of every
-- session with a bound lease): due at once (the owner's name stays, so the claim that
-- takes the run counts a recovery, as for an expired lease), and announced. Finds them
-- through `runs_sessions`, so its work grows with those sessions' leases, not with the
-- runs; a run someone holds locked is left for a later look. A lease bound by a statement
-- that started after this one is never freed by it: such a session may be missing from
-- the list of live backends this statement took. The live backends are read with
-- `backend_start`, which only a superuser (the dispatcher's role) sees for every backend.
-- Returns how many leases it freed, and how many names it notified.
WITH alive AS MATERIALIZED (
    SELECT pid, backend_start FROM pg_catalog.pg_stat_get_activity(NULL::integer)),
orphaned AS (
    SELECT r.id FROM workflow.runs r
     WHERE r.session_pid = ANY (coalesce($1, ARRAY(
               SELECT DISTINCT s.session_pid FROM workflow.runs s WHERE s.session_pid IS NOT NULL)))
       AND r.session_pid IS NOT NULL
       AND r.updated_at < statement_timestamp()
       AND NOT EXISTS (SELECT FROM alive a
                        WHERE a.pid = r.session_pid AND a.backend_start = r.session_started)
       FOR NO KEY UPDATE SKIP LOCKED),
freed AS (
    UPDATE workflow.runs r
       SET lease_expires_at = CASE WHEN r.status = 'running' AND r.owner IS NOT NULL
                                   THEN least(r.lease_expires_at, clock_timestamp())
                                   ELSE r.lease_expires_at END,
           session_pid = NULL, session_started = NULL,
           updated_at = statement_timestamp()
     WHERE r.id = ANY (ARRAY(SELECT id FROM orphaned)) AND r.session_pid IS NOT NULL
       AND r.updated_at < statement_timestamp()
    RETURNING r.name, r.status = 'running' AND r.owner IS NOT NULL AS ready),
sent AS (
    SELECT pg_notify('workflow_ready', name) FROM (SELECT DISTINCT name FROM freed WHERE ready) n)
SELECT (SELECT count(*) FROM freed WHERE ready), (SELECT count(*) FROM sent);

-- Starts a run of the workflow name $1 without an idempotency key ($2, NULL here;
-- start_keyed.sql takes the keyed ones), with the input $3, the parent $6 and the tenant
-- $7, leased for $5 to the owner $4, or without one to this session under its own name,
-- bound to the session when $8 (its start, see runs/sessions.rs) is given. A start without
-- an owner of a name with a push handler or a queue is ready at once instead, for the
-- dispatcher to push or a claim within the queue's limits to take. The row says it is written in this database (`written_in =
-- workflow.database_identity()`, see identity.rs). Returns the id, and whether the run is
-- ready.
--
-- Without a key nothing can conflict, and a plain insert skips the speculative insertion
-- `ON CONFLICT` always costs (see api/outbox/enqueue.sql).
-- A start is counted (workflow_counts: 'running' counts the started).
WITH started AS (
    INSERT INTO workflow.runs AS r
           (name, idempotency_key, input, owner, lease_duration, lease_expires_at,
            parent, tenant, session_pid, session_started, written_in)
    SELECT $1, $2, $3,
           CASE WHEN p.pushed THEN NULL ELSE COALESCE($4, session_user || ':' || pg_backend_pid()) END,
           $5,
           CASE WHEN p.pushed THEN clock_timestamp() ELSE clock_timestamp() + $5 END,
           $6, $7,
           CASE WHEN p.pushed OR $8 IS NULL THEN NULL ELSE pg_backend_pid() END,
           CASE WHEN p.pushed THEN NULL ELSE $8 END,
           workflow.database_identity()
      FROM (SELECT $4::text IS NULL
                   AND (EXISTS (SELECT FROM workflow.handlers WHERE name = $1)
                        OR EXISTS (SELECT FROM workflow.queue_settings WHERE name = $1)) AS pushed) p
    RETURNING r.id, r.owner IS NULL AS ready, r.name),
counted AS (
    INSERT INTO workflow.workflow_counts (name, status, n) SELECT name, 'running', 1 FROM started)
SELECT id, ready FROM started;

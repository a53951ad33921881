-- Without a key, a plain insert (see `outbox::ENQUEUE` on what `ON CONFLICT` costs). A
-- start without an owner of a name with a push handler is ready at once, for the
-- dispatcher to push. Returns the id, and whether the run is ready.
INSERT INTO workflow.runs AS r
       (name, idempotency_key, input, owner, lease_duration, lease_expires_at,
        parent, tenant, session_pid, session_started)
SELECT $1, $2, $3,
       CASE WHEN p.pushed THEN NULL ELSE COALESCE($4, session_user || ':' || pg_backend_pid()) END,
       $5,
       CASE WHEN p.pushed THEN clock_timestamp() ELSE clock_timestamp() + $5 END,
       $6, $7,
       CASE WHEN p.pushed OR $8 IS NULL THEN NULL ELSE pg_backend_pid() END,
       CASE WHEN p.pushed THEN NULL ELSE $8 END
  FROM (SELECT $4::text IS NULL AND EXISTS (SELECT FROM workflow.handlers WHERE name = $1) AS pushed) p
RETURNING r.id, r.owner IS NULL;

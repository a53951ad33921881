-- Enqueues the push of each claimed run `$1` to its handler, and cancels the pushes of
-- earlier owners still pending. The body is the SPEC's `workflow.ready` document; the
-- idempotency key, `workflow.ready:<workflow>:<owner>`, is how stale pushes are found
-- (`wf_enqueue` refuses keys with the `workflow.` prefix, `validate::RESERVED_KEY_PREFIX`).
-- The steps go in only while their outputs together stay within `$2` bytes
-- (`workflow.max_payload_bytes`): an application can record any number of steps, and a
-- push built from all of them would fail the round that builds it, every round. Beyond
-- that, `steps` is null and `steps_omitted` true; the handler reads them with `wf_step`.
-- A push is written under its run's database (`written_in`): a run copied from another
-- database makes a push the claim recognises as a copy's (see identity.rs). It is for its
-- run's tenant.
WITH pushed AS (
    SELECT r.id, r.name, r.owner, r.lease_expires_at, r.input, r.written_in, r.tenant, h.url, h.endpoint,
           CASE WHEN (SELECT coalesce(sum(pg_column_size(c.output)), 0)
                        FROM workflow.checkpoints c WHERE c.workflow_id = r.id) <= $2
                THEN (SELECT coalesce(jsonb_object_agg(c.step, c.output), '{}')
                        FROM workflow.checkpoints c WHERE c.workflow_id = r.id)
           END AS steps
      FROM workflow.runs r JOIN workflow.handlers h ON h.name = r.name
     WHERE r.id = ANY ($1)),
superseded AS (
    UPDATE workflow.outbox m
       SET status = 'cancelled', leased_until = NULL, finished_at = statement_timestamp(),
           parked = NULL
     WHERE m.workflow_id = ANY ($1) AND m.status = 'pending'
       AND m.idempotency_key LIKE 'workflow.ready:%'
    RETURNING m.id, m.endpoint),
counted AS (
    INSERT INTO workflow.message_counts (status, n, endpoint)
    SELECT 'cancelled', count(*), endpoint FROM superseded GROUP BY endpoint),
enqueued AS (
    INSERT INTO workflow.outbox (url, endpoint, payload, idempotency_key, workflow_id, written_in, tenant)
    SELECT url, endpoint,
           jsonb_build_object('type', 'workflow.ready', 'workflow', id, 'name', name,
                              'owner', owner, 'lease_expires_at', lease_expires_at,
                              'input', input, 'steps', steps,
                              'steps_omitted', steps IS NULL),
           'workflow.ready:' || id || ':' || owner, id, written_in, tenant
      FROM pushed
    RETURNING id)
SELECT extract(epoch FROM min(p.lease_expires_at) - clock_timestamp())::float8
  FROM pushed p WHERE EXISTS (SELECT FROM enqueued);

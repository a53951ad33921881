-- Without an idempotency key nothing can conflict, and a plain insert skips the
-- speculative insertion `ON CONFLICT` always costs (a lock on a speculative token, a
-- probe of the arbiter index and a second WAL record to confirm the row).
INSERT INTO workflow.outbox AS m
    (url, endpoint, payload, headers, idempotency_key, next_attempt_at, workflow_id, step, ordering_key)
VALUES ($1, $2, $3, $4, $5, COALESCE($6, statement_timestamp()), $7, $8, $9)
RETURNING m.id;

-- Enqueues a message with an idempotency key: a key used before inserts nothing, and the
-- caller looks the first message up (find_by_key.sql).
INSERT INTO workflow.outbox AS m
    (url, endpoint, payload, headers, idempotency_key, next_attempt_at, workflow_id, step, ordering_key)
VALUES ($1, $2, $3, $4, $5, COALESCE($6, statement_timestamp()), $7, $8, $9)
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING m.id;

-- The message enqueued with the idempotency key $1, if any.
SELECT id FROM workflow.outbox WHERE idempotency_key = $1;

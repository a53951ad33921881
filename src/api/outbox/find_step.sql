-- The message already enqueued for a durable step.
SELECT id FROM workflow.outbox WHERE workflow_id = $1 AND step = $2 ORDER BY id LIMIT 1;

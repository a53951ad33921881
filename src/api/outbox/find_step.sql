-- The message already enqueued for the durable step $2 of the workflow $1, the oldest if
-- there are several.
SELECT id FROM workflow.outbox WHERE workflow_id = $1 AND step = $2 ORDER BY id LIMIT 1;

-- The status of the message of the durable step `$2`, if one was enqueued.
SELECT status FROM workflow.outbox WHERE workflow_id = $1 AND step = $2 ORDER BY id LIMIT 1;

-- The status of the message of the durable step `$2` of the run `$1`, if one was
-- enqueued (the oldest if there are several).
SELECT status FROM workflow.outbox WHERE workflow_id = $1 AND step = $2 ORDER BY id LIMIT 1;

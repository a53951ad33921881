-- Drops the queue of the workflow name $1; returns the name if there was one.
DELETE FROM workflow.queue_settings WHERE name = $1 RETURNING name;

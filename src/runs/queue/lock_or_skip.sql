-- Like lock.sql, but skips the queue of the workflow name $1 when another claimer holds it
-- (no row): for the push and for claims of any name, which try again later rather than wait.
SELECT name FROM workflow.queue_settings WHERE name = $1 FOR NO KEY UPDATE SKIP LOCKED;

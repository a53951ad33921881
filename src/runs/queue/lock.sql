-- Locks the queue of the workflow name $1 for this claim, waiting for a claimer of the same
-- name to commit: the statements after it then see that claimer's leases. No row: the name
-- has no queue.
SELECT name FROM workflow.queue_settings WHERE name = $1 FOR NO KEY UPDATE;

-- Writes the row of the parent $1 of a run being started, which also locks it, and
-- returns its status: a cancel of the parent that runs concurrently waits for the child's
-- start and then sees the child (under REPEATABLE READ it fails with a serialization error
-- instead of missing it).
UPDATE workflow.runs SET updated_at = statement_timestamp() WHERE id = $1 RETURNING status;

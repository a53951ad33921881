-- For a durable HTTP step: writes the row of its run $1, which locks it, so that two
-- enqueues of one step queue behind each other and the second finds the first's message
-- (under REPEATABLE READ it fails with a serialization error instead of sending twice).
-- Returns the run's status.
UPDATE workflow.runs SET updated_at = statement_timestamp() WHERE id = $1 RETURNING status;

-- If the message $1 is a durable step: writes its run's row, which locks it as the run's
-- writers do, so that a finish of the workflow racing a retry either comes first and is
-- seen, or waits (and under REPEATABLE READ fails with a serialization error instead of
-- missing it).
UPDATE workflow.runs SET updated_at = statement_timestamp()
 WHERE id = (SELECT workflow_id FROM workflow.outbox WHERE id = $1 AND step IS NOT NULL);

-- The signal of the run $1 sent with the idempotency key $2, if there is one.
SELECT id FROM workflow.run_signals WHERE workflow_id = $1 AND idempotency_key = $2;

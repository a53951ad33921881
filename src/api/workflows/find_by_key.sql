-- The run of the name $1 started with the idempotency key $2, if any.
SELECT id FROM workflow.runs WHERE name = $1 AND idempotency_key = $2;

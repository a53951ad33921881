-- Cancels the pending durable steps and pushes of the workflows `$1`, which completed or
-- failed; returns how many per endpoint. Their plain messages stay: they are the outbox,
-- delivered as committed.
WITH cancelled AS (
    UPDATE workflow.outbox
       SET status = 'cancelled', leased_until = NULL, finished_at = statement_timestamp(),
           parked = NULL, unpark_successor = CASE WHEN ordering_key IS NOT NULL THEN true END
     WHERE workflow_id = ANY ($1) AND status = 'pending'
       AND (step IS NOT NULL OR idempotency_key LIKE 'workflow.ready:%')
    RETURNING id, endpoint)
INSERT INTO workflow.message_counts (status, n, endpoint)
SELECT 'cancelled', count(*), endpoint FROM cancelled GROUP BY endpoint
RETURNING n;

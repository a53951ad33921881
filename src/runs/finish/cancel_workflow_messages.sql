-- Cancels every pending message of the workflows `$1` (a cancel).
WITH cancelled AS (
    UPDATE workflow.outbox
       SET status = 'cancelled', leased_until = NULL, finished_at = statement_timestamp(),
           parked = NULL, unpark_successor = CASE WHEN ordering_key IS NOT NULL THEN true END
     WHERE workflow_id = ANY ($1) AND status = 'pending'
    RETURNING id, endpoint)
INSERT INTO workflow.message_counts (status, n, endpoint)
SELECT 'cancelled', count(*), endpoint FROM cancelled GROUP BY endpoint;

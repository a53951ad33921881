-- Cancels the message of the durable step `$2` of the run `$1` if it is still pending: its
-- wait timed out, and the workflow goes on without it (G10). Returns how many it
-- cancelled (no row: none).
WITH cancelled AS (
    UPDATE workflow.outbox
       SET status = 'cancelled', leased_until = NULL, finished_at = statement_timestamp(),
           parked = NULL, unpark_successor = CASE WHEN ordering_key IS NOT NULL THEN true END
     WHERE workflow_id = $1 AND step = $2 AND status = 'pending'
    RETURNING id, endpoint)
INSERT INTO workflow.message_counts (status, n, endpoint)
SELECT 'cancelled', count(*), endpoint FROM cancelled GROUP BY endpoint
RETURNING n;

-- Cancels the message $1 if it is still pending, counting it (message_counts) and flagging
-- its ordering key's next message for unparking; returns it if it was cancelled.
WITH cancelled AS (
    UPDATE workflow.outbox
       SET status = 'cancelled', leased_until = NULL, finished_at = statement_timestamp(),
           parked = NULL, unpark_successor = CASE WHEN ordering_key IS NOT NULL THEN true END
     WHERE id = $1 AND status = 'pending'
    RETURNING id, endpoint),
counted AS (
    INSERT INTO workflow.message_counts (status, n, endpoint)
    SELECT 'cancelled', 1, endpoint FROM cancelled)
SELECT id FROM cancelled;

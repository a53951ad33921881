-- Sends the message $1 again if it is dead or cancelled: pending and due now, its attempts
-- counted afresh, as `wf_retry` does; returns it if it was revived.
--
-- The message leaves its old status's count in workflow.message_counts, as every statement
-- that moves messages between states keeps the counts. A revived message is pending, so it
-- flags no next message of its ordering key (only a message that leaves pending does), and
-- any flag its finish left is cleared. A durable step is checked before this runs: its run
-- is locked (step_run.sql), and a step its workflow decided without is refused (G10).
WITH revived AS (
    SELECT id, status, endpoint FROM workflow.outbox WHERE id = $1 AND status IN ('dead', 'cancelled') FOR UPDATE),
pending AS (
    UPDATE workflow.outbox
       SET status = 'pending', attempts = 0, next_attempt_at = statement_timestamp(),
           leased_until = NULL, finished_at = NULL, delivered_at = NULL,
           unpark_successor = NULL
     WHERE id = (SELECT id FROM revived)
    RETURNING id),
counted AS (
    INSERT INTO workflow.message_counts (status, n, endpoint)
    SELECT status, -1, endpoint FROM revived WHERE EXISTS (SELECT FROM pending))
SELECT id FROM pending;

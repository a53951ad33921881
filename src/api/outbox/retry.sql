-- (Each statement that moves messages between states keeps `workflow.message_counts`.
-- One that takes a message with an ordering key out of pending flags the key's next
-- message for the dispatcher to unpark; a revived message is pending and needs no flag.)
-- (A durable step is checked first, see `STEP_RUN`.)
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

-- Cancels, among the durable steps just claimed `$1`, those their workflow decided without
-- — the workflow finished, the step is recorded, or the wait for it timed out — so that
-- none is sent (G10); the claim's attempt is taken back. Run only for a claim that took
-- durable steps: a probe of the runs in the claim's walk made every claim several times
-- dearer (bench/NOTES.md). Returns the cancelled messages.
WITH decided AS (
    SELECT m.id FROM workflow.outbox m
     WHERE m.id = ANY ($1) AND m.step IS NOT NULL
       AND EXISTS (SELECT FROM workflow.runs r
                    WHERE r.id = m.workflow_id
                      AND (r.status <> 'running'
                           OR (r.wait_step = m.step AND r.wait_signal IS NULL
                               AND r.wait_deadline <= clock_timestamp())
                           OR EXISTS (SELECT FROM workflow.checkpoints c
                                       WHERE c.workflow_id = m.workflow_id AND c.step = m.step)))),
cancelled AS (
    UPDATE workflow.outbox m
       SET status = 'cancelled', finished_at = clock_timestamp(), leased_until = NULL,
           attempts = greatest(m.attempts - 1, 0),
           unpark_successor = CASE WHEN m.ordering_key IS NOT NULL THEN true END
     WHERE m.id = ANY (ARRAY(SELECT id FROM decided)) AND m.status = 'pending'
    RETURNING m.id, m.endpoint),
counted AS (
    INSERT INTO workflow.message_counts (status, n, endpoint)
    SELECT 'cancelled', count(*), endpoint FROM cancelled GROUP BY endpoint)
SELECT id FROM cancelled;

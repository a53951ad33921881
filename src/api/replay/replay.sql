-- Looks at up to `$6` finished messages, oldest finished first from `$2` (a message
-- finishes after its last attempt starts, so the window's start bounds the walk of
-- `outbox_finished`), and sends those of endpoint `$1` (NULL: URL targets) in a status of
-- `$4` whose last attempt started in `[$2, $3)` again, at most `$5`: pending and due now,
-- their attempts counted afresh, as `wf_retry` does. A durable step whose workflow decided
-- without it — the step recorded, the wait for it timed out, the workflow no longer
-- running — is skipped (G10). Returns how many it sent, where to go on if a bound stopped
-- it (NULL: the window is done), and how many it skipped.
WITH examined AS (
    SELECT m.id, m.finished_at FROM workflow.outbox m
     WHERE (m.status <> 'pending') IS TRUE AND m.finished_at >= $2
     ORDER BY m.finished_at
     LIMIT $6),
decided AS (
    SELECT m.id FROM workflow.outbox m
     WHERE m.id = ANY (ARRAY(SELECT id FROM examined)) AND m.step IS NOT NULL
       AND m.status::text = ANY ($4) AND m.endpoint IS NOT DISTINCT FROM $1
       AND m.last_started_at >= $2 AND ($3::timestamptz IS NULL OR m.last_started_at < $3)
       AND (NOT EXISTS (SELECT FROM workflow.runs r
                         WHERE r.id = m.workflow_id AND r.status = 'running'
                           AND (r.wait_step = m.step AND r.wait_signal IS NULL
                                AND r.wait_deadline <= clock_timestamp()) IS NOT TRUE)
            OR EXISTS (SELECT FROM workflow.checkpoints c
                        WHERE c.workflow_id = m.workflow_id AND c.step = m.step))),
chosen AS (
    SELECT m.id, m.status, m.endpoint, m.finished_at FROM workflow.outbox m
     WHERE m.id = ANY (ARRAY(SELECT id FROM examined))
       AND m.id <> ALL (ARRAY(SELECT id FROM decided))
       AND m.status::text = ANY ($4) AND m.endpoint IS NOT DISTINCT FROM $1
       AND m.last_started_at >= $2 AND ($3::timestamptz IS NULL OR m.last_started_at < $3)
     ORDER BY m.finished_at
     LIMIT $5
       FOR UPDATE SKIP LOCKED),
revived AS (
    UPDATE workflow.outbox m
       SET status = 'pending', attempts = 0, next_attempt_at = statement_timestamp(),
           leased_until = NULL, finished_at = NULL, delivered_at = NULL,
           unpark_successor = NULL
     WHERE m.id = ANY (ARRAY(SELECT id FROM chosen))
    RETURNING m.id),
counted AS (
    INSERT INTO workflow.message_counts (status, n, endpoint)
    SELECT status, -count(*), endpoint FROM chosen GROUP BY status, endpoint)
SELECT (SELECT count(*) FROM revived),
       CASE WHEN (SELECT count(*) FROM chosen) >= $5 THEN (SELECT max(finished_at) FROM chosen)
            WHEN (SELECT count(*) FROM examined) >= $6 THEN (SELECT max(finished_at) FROM examined)
       END,
       (SELECT count(*) FROM decided);

-- Cancels the running descendants of the runs `$1`, however deep (a finished child's
-- running children too), locking them level by level first, and counts them
-- (workflow_counts); returns them.
WITH RECURSIVE tree (id, depth) AS (
    SELECT id, 1 FROM workflow.runs WHERE parent = ANY ($1)
    UNION ALL
    SELECT r.id, t.depth + 1 FROM workflow.runs r JOIN tree t ON r.parent = t.id),
locked AS (
    SELECT r.id FROM workflow.runs r JOIN tree t ON t.id = r.id
     WHERE r.status = 'running'
     ORDER BY t.depth, r.id
       FOR NO KEY UPDATE OF r),
cancelled AS (
    UPDATE workflow.runs r
       SET status = 'cancelled', finished_at = statement_timestamp(),
           updated_at = statement_timestamp(), owner = NULL, lease_expires_at = NULL,
           session_pid = NULL, session_started = NULL,
           wait_step = NULL, wait_signal = NULL, wait_deadline = NULL
     WHERE r.id = ANY (ARRAY(SELECT id FROM locked)) AND r.status = 'running'
    RETURNING r.id, r.name),
counted AS (
    INSERT INTO workflow.workflow_counts (name, status, n)
    SELECT name, 'cancelled', count(*) FROM cancelled GROUP BY name)
SELECT id FROM cancelled;

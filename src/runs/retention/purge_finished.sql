-- Deletes one batch of at most $2 runs that finished more than $1 (workflow.retention)
-- ago, oldest first, with their checkpoints and signals (there is no cascading foreign
-- key, see the schema); returns them. Small batches keep locks short and let vacuum keep
-- up.
WITH doomed AS (
    SELECT id FROM workflow.runs
     WHERE (status <> 'running') IS TRUE AND finished_at <= statement_timestamp() - $1
     ORDER BY finished_at
     LIMIT $2
       FOR UPDATE SKIP LOCKED),
gone AS (
    DELETE FROM workflow.runs r
     WHERE r.id = ANY (ARRAY(SELECT id FROM doomed))
    RETURNING r.id),
steps AS (
    DELETE FROM workflow.checkpoints c
     WHERE c.workflow_id = ANY (ARRAY(SELECT id FROM gone))),
signals AS (
    DELETE FROM workflow.run_signals s
     WHERE s.workflow_id = ANY (ARRAY(SELECT id FROM gone)))
SELECT id FROM gone;

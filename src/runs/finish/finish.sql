-- Finishes the run $1 with the status $2 (completed, failed or cancelled), its output $3
-- or error $4, if it is running and the owner $5 (NULL: no fence) holds its lease.
-- Returns whether the run has a parent to tell, and its name if the name has a queue
-- (wf_queue) and ready runs waiting (the finish leaves room for one: its listeners and the
-- push are told), and counts the finish (workflow_counts).
-- Whether $5 holds the lease is the condition of runs/guard/lock_run.sql, which explains
-- it.
WITH finished AS (
    UPDATE workflow.runs
       SET status = $2, output = $3, error = $4,
           finished_at = statement_timestamp(), updated_at = statement_timestamp(),
           owner = NULL, lease_expires_at = NULL, session_pid = NULL, session_started = NULL,
           wait_step = NULL, wait_signal = NULL, wait_deadline = NULL
     WHERE id = $1 AND status = 'running'
       AND ($5::text IS NULL OR (owner = $5 AND lease_expires_at > clock_timestamp()))
    RETURNING parent IS NOT NULL AS has_parent, name, status),
counted AS (
    INSERT INTO workflow.workflow_counts (name, status, n) SELECT name, status, 1 FROM finished)
SELECT f.has_parent,
       -- The ready probe takes the name's oldest expiry in runs_claimable's order: an
       -- EXISTS was planned as a scan of all runs, which finds the name's rows last.
       CASE WHEN EXISTS (SELECT FROM workflow.queue_settings q WHERE q.name = f.name)
                 AND (SELECT r.lease_expires_at FROM workflow.runs r
                       WHERE r.name = f.name AND (r.status = 'running') IS TRUE
                         AND r.lease_expires_at <= (SELECT clock_timestamp())
                       ORDER BY r.lease_expires_at LIMIT 1) IS NOT NULL
            THEN f.name END AS queued
  FROM finished f;

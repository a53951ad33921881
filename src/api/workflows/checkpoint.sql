-- Records the step $2 of the run $1 with the output $3 (NULL: JSON null) and renews the
-- lease, in one statement: a checkpoint is the hot path of every workflow. The step is
-- written only while the run is `running` and, when $4 names an owner, only while that
-- owner holds the lease (G7). The lease is renewed and the recoveries counted so far are
-- forgiven only when the step is new, so a replay writes nothing (G3). Returns the run's
-- status (NULL: no such run), whether the owner holds it, whether the step was recorded
-- now, and otherwise its recorded output as of the statement's snapshot.
--
-- The run's parent, if it has one, is locked first (as runs/guard/lock_parent.sql does;
-- the run's lock waits for it), then the run, for the rest of the transaction, so that
-- concurrent checkpoints of one workflow queue behind each other and a claimer skips it
-- (SKIP LOCKED). Whether $4 holds the lease is the condition of runs/guard/lock_run.sql,
-- which explains it.
--
-- Checking for the step with `NOT EXISTS` in the update, to lock and renew in one write,
-- made SERIALIZABLE callers read `checkpoints_pkey` pages that every checkpoint inserts
-- into: unrelated workflows then failed each other. The arbiter probe of `ON CONFLICT`
-- takes no such read lock.
WITH parent AS MATERIALIZED (
    SELECT p.id FROM workflow.runs p
     WHERE p.id = (SELECT r.parent FROM workflow.runs r WHERE r.id = $1)
       FOR NO KEY UPDATE),
run AS (
    SELECT status, ($4::text IS NULL OR (owner = $4 AND lease_expires_at > clock_timestamp())) AS holds FROM workflow.runs
     WHERE id = $1 AND (SELECT count(*) FROM parent) >= 0
       FOR NO KEY UPDATE),
new_step AS (
    INSERT INTO workflow.checkpoints (workflow_id, step, output)
    SELECT $1, $2, COALESCE($3, 'null'::jsonb) FROM run WHERE status = 'running' AND holds
    ON CONFLICT (workflow_id, step) DO NOTHING
    RETURNING workflow_id),
renewed AS (
    UPDATE workflow.runs
       SET lease_expires_at = clock_timestamp() + lease_duration,
           recovery_attempts = 0,
           updated_at = statement_timestamp()
     WHERE id = (SELECT workflow_id FROM new_step)
    RETURNING id)
SELECT (SELECT status FROM run),
       (SELECT holds FROM run),
       EXISTS (SELECT FROM renewed),
       (SELECT output FROM workflow.checkpoints
         WHERE workflow_id = $1 AND step = $2 AND NOT EXISTS (SELECT FROM renewed));

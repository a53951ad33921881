-- Deletes one batch of at most $2 messages that finished more than $1 (workflow.retention)
-- ago, oldest first, with their attempts, and takes them off the counts; returns them.
-- Every finished message goes: delivered, cancelled, and dead (dead letters, dead and
-- cancelled pushes), so that nothing grows without bound (G6); a dead letter to keep
-- longer is for wf_replay or an export before then. One whose flag has not yet unparked
-- its ordering key's next message stays until it has.
--
-- The attempts go with their messages (there is no cascading foreign key, see the
-- schema). Both deletes find their rows by key from one array, so their plans do not
-- depend on a guess of how many rows `LIMIT $2` yields. The cut-off is computed once, in
-- a sub-select: compared with the volatile `clock_timestamp()` directly it could not bound
-- the index scan, which then walked every finished message, every round (bench/NOTES.md).
WITH doomed AS (
    SELECT id FROM workflow.outbox
     WHERE (status <> 'pending') IS TRUE
       AND finished_at <= (SELECT clock_timestamp() - $1)
       AND unpark_successor IS NOT TRUE
     ORDER BY finished_at
     LIMIT $2
       FOR UPDATE SKIP LOCKED),
gone AS (
    DELETE FROM workflow.outbox m
     WHERE m.id = ANY (ARRAY(SELECT id FROM doomed))
    RETURNING m.id, m.status, m.endpoint),
attempts AS (
    DELETE FROM workflow.delivery_attempts a
     WHERE a.message_id = ANY (ARRAY(SELECT id FROM gone))),
counted AS (
    INSERT INTO workflow.message_counts (status, n, endpoint)
    SELECT status, -count(*), endpoint FROM gone GROUP BY status, endpoint)
SELECT id FROM gone;

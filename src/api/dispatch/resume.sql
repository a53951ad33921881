-- Resumes delivery for this database ($1 its identity): workflow.dispatch holds one row,
-- this database's, not paused; every message and workflow written in another database (a
-- copy's) becomes this one's, so that the claim sends the pending ones and the push pushes
-- the running ones, and a dead one wf_retry revives later does not pause it again.
-- Returns how many pending messages and running workflows it adopted. Reads both tables
-- once and rewrites the copied rows: resuming a copy is rare.
WITH cleared AS (
    DELETE FROM workflow.dispatch RETURNING 1),
mine AS (
    INSERT INTO workflow.dispatch (identity)
    SELECT $1 FROM (SELECT count(*) FROM cleared) c),
messages AS (
    UPDATE workflow.outbox
       SET written_in = $1
     WHERE written_in <> $1
    RETURNING status),
runs AS (
    UPDATE workflow.runs
       SET written_in = $1
     WHERE written_in <> $1
    RETURNING status)
SELECT (SELECT count(*) FROM messages WHERE status = 'pending'),
       (SELECT count(*) FROM runs WHERE status = 'running');

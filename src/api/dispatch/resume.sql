-- Resumes delivery for this database ($1 its identity): workflow.dispatch holds one row,
-- this database's, not paused; the pending messages and running workflows written in
-- another database (a copy's) become this one's, so that the claim sends them and the push
-- pushes them. Returns how many of each it adopted. Reads every pending message and running
-- workflow once: resuming is rare.
WITH cleared AS (
    DELETE FROM workflow.dispatch RETURNING 1),
mine AS (
    INSERT INTO workflow.dispatch (identity)
    SELECT $1 FROM (SELECT count(*) FROM cleared) c),
messages AS (
    UPDATE workflow.outbox
       SET written_in = $1
     WHERE (status = 'pending') IS TRUE AND written_in <> $1
    RETURNING 1),
runs AS (
    UPDATE workflow.runs
       SET written_in = $1
     WHERE (status = 'running') IS TRUE AND written_in <> $1
    RETURNING 1)
SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM runs);

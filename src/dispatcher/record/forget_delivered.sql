-- Deletes the delivered messages $1, each delivered by its attempt in $2, with any
-- attempts they had: with `workflow.retention = 0` nothing finished is kept, so the
-- statement that learns of a delivery deletes the message instead of recording it (no
-- outcome update, no attempt row, nothing left for retention). Returns, as record.sql
-- does, the messages it deleted (`skipped` false) and the ones it skipped (`skipped`
-- true).
--
-- Same condition as record.sql: only a message still pending in the attempt that produced
-- the outcome goes, and a message an application holds locked is skipped, never waited
-- for.
WITH o AS (SELECT * FROM unnest($1::int8[], $2::int4[]) AS o(id, attempt)),
locked AS (
    SELECT m.id FROM workflow.outbox m WHERE m.id = ANY ($1) FOR UPDATE SKIP LOCKED),
gone AS (
    DELETE FROM workflow.outbox m
     USING o
     WHERE m.id = ANY (ARRAY(SELECT id FROM locked)) AND m.id = o.id
       AND m.status = 'pending' AND m.attempts = o.attempt
    RETURNING m.id, m.workflow_id, m.step),
attempts AS (
    DELETE FROM workflow.delivery_attempts a
     WHERE a.message_id = ANY (ARRAY(SELECT id FROM gone)))
SELECT id, workflow_id, step, false FROM gone
UNION ALL
SELECT m.id, NULL, NULL, true FROM workflow.outbox m
 WHERE (SELECT count(*) FROM locked) < cardinality($1)
   AND m.id = ANY ($1) AND m.id <> ALL (ARRAY(SELECT id FROM locked));

-- Records a round's attempts, $1: rows of workflow.attempt_outcome as text (see
-- record.rs, `Recorded`). Returns the messages it changed (`skipped` false) and the ones
-- it skipped (`skipped` true).
--
-- An outcome only changes its message if the message is still pending in the attempt that
-- produced it: a cancel, or a newer claim after this dispatcher lost its lease, wins. A
-- message an application holds locked (a `wf_cancel_message` not yet committed) is
-- skipped, never waited for: its outcome is kept for a later round.
--
-- The attempt becomes the message's latest (`last_*`); the one it replaces moves to the
-- log, read from the statement's snapshot, which is the row before this update (only the
-- dispatcher writes `last_*`, one round at a time). Each row says whether its message
-- holds one, as its claim saw (`replaces_attempt`): most outcomes are first attempts, and
-- looking up every message again to find nothing was a tenth of the statement. An outcome
-- that no longer changes its message still happened: it goes to the log directly.
--
-- An outcome also unparks its message (a claim may have parked it after its lease ran
-- out), and a message with an ordering key that finishes flags its key's next message
-- for unparking (see parking/unpark.sql).
--
-- Every read of the outbox goes by key from the id array, with an index condition on it
-- even where a join would express it, so the plan does not hinge on a join order: under
-- statistics that call the outbox empty (an ANALYZE taken while a large enqueueing
-- transaction was still open) a join probe became a walk of the whole primary key, a
-- second a round. The update reaches the locked rows by their `ctid` (locked by this
-- statement, they cannot move), so the lock costs no second index probe; the skipped ones
-- are looked for only when a lock was missed.
WITH o AS MATERIALIZED (
    SELECT * FROM unnest($1::text[]::workflow.attempt_outcome[])),
locked AS (
    SELECT m.id, m.ctid FROM workflow.outbox m
     WHERE m.id = ANY (ARRAY(SELECT id FROM o)) FOR NO KEY UPDATE SKIP LOCKED),
changed AS (
    UPDATE workflow.outbox m
       SET status = o.state,
           next_attempt_at = CASE WHEN o.state = 'pending'
                                  THEN clock_timestamp() + make_interval(secs => o.delay_s)
                                  ELSE m.next_attempt_at END,
           leased_until = NULL,
           last_attempt = o.attempt,
           last_started_at = to_timestamp(o.started),
           last_duration_ms = o.duration_ms,
           last_status_code = o.status_code,
           last_error = o.error,
           last_response_body = o.body,
           -- When the answer arrived, not when this round recorded it.
           delivered_at = CASE WHEN o.state = 'delivered'
                               THEN to_timestamp(o.started) + make_interval(secs => o.duration_ms / 1000) END,
           finished_at = CASE WHEN o.state = 'pending' THEN NULL ELSE clock_timestamp() END,
           parked = NULL,
           unpark_successor = CASE WHEN o.state <> 'pending' AND m.ordering_key IS NOT NULL
                                   THEN true END
      FROM o
     WHERE m.ctid = ANY (ARRAY(SELECT ctid FROM locked)) AND m.id = o.id
       AND m.status = 'pending' AND m.attempts = o.attempt
    RETURNING m.id, m.workflow_id, m.step, m.status, m.endpoint),
counted AS (
    INSERT INTO workflow.message_counts (status, n, endpoint)
    SELECT status, count(*), endpoint FROM changed
     WHERE status IN ('delivered', 'dead') GROUP BY status, endpoint),
logged AS (
    INSERT INTO workflow.delivery_attempts
           (message_id, attempt, started_at, duration_ms, status_code, error, response_body)
    SELECT p.id, p.last_attempt, p.last_started_at, p.last_duration_ms, p.last_status_code,
           p.last_error, p.last_response_body
      FROM workflow.outbox p
     WHERE p.id = ANY (ARRAY(SELECT c.id FROM changed c JOIN o USING (id) WHERE o.replaces_attempt))
       AND p.last_started_at IS NOT NULL
    UNION ALL
    SELECT o.id, o.attempt, to_timestamp(o.started), o.duration_ms, o.status_code, o.error, o.body
      FROM o
     WHERE o.id <> ALL (ARRAY(SELECT id FROM changed))
       AND o.id = ANY (ARRAY(SELECT id FROM locked)))
SELECT id, workflow_id, step, false FROM changed
UNION ALL
SELECT m.id, NULL, NULL, true FROM workflow.outbox m
 WHERE (SELECT count(*) FROM locked) < (SELECT count(*) FROM o)
   AND m.id = ANY (ARRAY(SELECT id FROM o)) AND m.id <> ALL (ARRAY(SELECT id FROM locked));

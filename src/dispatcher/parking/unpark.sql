-- Unparks what the flags name, at most $1 flags of ordering keys and $1 messages of one
-- flagged endpoint, clears the flags whose work is done, and returns how many messages it
-- unparked and how many flags it kept.
--
-- For each flagged message, the key's head (its lowest pending id, by `outbox_ordering`)
-- is unparked if it was parked behind the key; a head parked behind its endpoint stays,
-- its endpoint's flag lets it go. For one flagged endpoint, the first `$1` of its messages
-- in due order are unparked while it is enabled; its flag is cleared when none is left, or
-- when it is disabled again (then its messages rightly stay).
--
-- Only `flagged` and `candidates` may read the parked and flag indexes: the heads are
-- looked up by primary key with `parked` kept out of their condition, and locked by key
-- too. Under statistics that call those indexes empty, a condition on `parked` let the
-- planner walk the whole parked index to find a few ids.
WITH flagged AS (
    SELECT f.id, f.ordering_key FROM workflow.outbox f
     WHERE f.unpark_successor IS TRUE
     LIMIT $1
       FOR NO KEY UPDATE SKIP LOCKED),
heads AS (
    SELECT f.id AS flagged,
           (SELECT h.id FROM workflow.outbox h
             WHERE h.ordering_key = f.ordering_key AND h.status = 'pending'
             ORDER BY h.id LIMIT 1) AS head
      FROM flagged f),
parked_heads AS MATERIALIZED (
    SELECT m.id, m.parked = 'ordering_key' AS behind_key FROM workflow.outbox m
     WHERE m.id = ANY (ARRAY(SELECT head FROM heads))),
freed_heads AS (
    SELECT m.id FROM workflow.outbox m
     WHERE m.id = ANY (ARRAY(SELECT id FROM parked_heads WHERE behind_key))
       FOR NO KEY UPDATE SKIP LOCKED),
endpoint AS (
    SELECT e.name, e.disabled_at IS NULL AS enabled FROM workflow.endpoint_settings e
     WHERE e.unpark_messages IS TRUE
     LIMIT 1
       FOR NO KEY UPDATE SKIP LOCKED),
candidates AS (
    SELECT m.id FROM workflow.outbox m
     WHERE m.endpoint = (SELECT name FROM endpoint WHERE enabled) AND m.parked = 'endpoint'
     ORDER BY m.next_attempt_at
     LIMIT $1),
freed_messages AS (
    SELECT m.id FROM workflow.outbox m
     WHERE m.id = ANY (ARRAY(SELECT id FROM candidates))
       FOR NO KEY UPDATE SKIP LOCKED),
unparked AS (
    UPDATE workflow.outbox m SET parked = NULL
     WHERE m.id = ANY (ARRAY(SELECT id FROM freed_heads UNION ALL SELECT id FROM freed_messages))
    RETURNING m.id),
keys_done AS (
    UPDATE workflow.outbox m SET unpark_successor = NULL
     WHERE m.id = ANY (ARRAY(
               SELECT h.flagged FROM heads h
                WHERE h.head IS NULL
                   OR h.head <> ALL (ARRAY(SELECT id FROM parked_heads WHERE behind_key))
                   OR h.head = ANY (ARRAY(SELECT id FROM freed_heads))))
    RETURNING 1),
-- An endpoint its owner enabled is no longer failing: its next request is no probe.
forgotten AS (
    DELETE FROM workflow.destinations d
     WHERE d.destination = (SELECT name FROM endpoint WHERE enabled)),
endpoint_done AS (
    UPDATE workflow.endpoint_settings e SET unpark_messages = NULL
     WHERE e.name = (SELECT name FROM endpoint)
       AND (NOT (SELECT enabled FROM endpoint)
            OR ((SELECT count(*) FROM candidates) < $1
                AND (SELECT count(*) FROM freed_messages) = (SELECT count(*) FROM candidates)))
    RETURNING 1)
SELECT (SELECT count(*) FROM unparked),
       (SELECT count(*) FROM flagged) - (SELECT count(*) FROM keys_done)
       + (SELECT count(*) FROM endpoint) - (SELECT count(*) FROM endpoint_done);

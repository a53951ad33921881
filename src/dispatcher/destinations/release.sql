-- Makes every message parked at the destinations `$1` due now, with the messages `$2`
-- (failed in the round that ended the outage): their outage ended. Found through
-- `outbox_limited`; a message an application holds locked keeps its time.
WITH waiting AS (
    SELECT m.id FROM workflow.outbox m
     WHERE coalesce(m.endpoint, m.origin) = ANY ($1) AND m.parked = 'limit'
       AND m.next_attempt_at > clock_timestamp()
       FOR NO KEY UPDATE SKIP LOCKED)
UPDATE workflow.outbox m SET next_attempt_at = clock_timestamp()
 WHERE m.id = ANY (ARRAY(SELECT id FROM waiting UNION ALL SELECT unnest($2::int8[])))
   AND m.status = 'pending';

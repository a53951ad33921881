-- Locks up to $1 ready runs of the names with a push handler and no queue (those are
-- claimed within its limits afterwards: runs/queue), oldest expiry first,
-- skipping the runs another claimer holds locked, and the runs written in another
-- database than this one ($2, see identity.rs): a copy's are pushed once it is resumed,
-- and touched by no push before. claim/hand_out.sql then hands them to the push's owner.
--
-- The names come from the handlers, each name's ready runs from runs_claimable, so the
-- work grows with the handlers and the batch, never with the runs.
SELECT id
  FROM workflow.runs
 WHERE id = ANY (ARRAY(
           SELECT c.id FROM workflow.handlers h
            CROSS JOIN LATERAL (
               SELECT r.id, r.lease_expires_at FROM workflow.runs r
                WHERE r.name = h.name AND (r.status = 'running') IS TRUE
                  AND r.lease_expires_at <= (SELECT clock_timestamp()) AND r.written_in = $2
                ORDER BY r.lease_expires_at LIMIT $1) c
            WHERE NOT EXISTS (SELECT FROM workflow.queue_settings q WHERE q.name = h.name)
            ORDER BY c.lease_expires_at LIMIT $1))
   AND status = 'running' AND lease_expires_at <= clock_timestamp() AND written_in = $2
 ORDER BY lease_expires_at
   FOR NO KEY UPDATE SKIP LOCKED;

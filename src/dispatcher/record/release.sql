-- Hands back the messages $1, claimed in their attempts $2 (position by position) but
-- not sent (see `Outcome::released`): due again at once, the claim's attempt not counted.
-- A message held locked keeps its lease, which runs out.
WITH o AS (SELECT * FROM unnest($1::int8[], $2::int4[]) AS o(id, attempt)),
locked AS (
    SELECT m.id FROM workflow.outbox m WHERE m.id = ANY ($1) FOR NO KEY UPDATE SKIP LOCKED)
UPDATE workflow.outbox m
   SET attempts = m.attempts - 1, leased_until = NULL
  FROM o
 WHERE m.id = ANY (ARRAY(SELECT id FROM locked)) AND m.id = o.id
   AND m.status = 'pending' AND m.attempts = o.attempt;

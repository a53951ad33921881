-- Parks the messages `$1` that a failed request left pending, at their destination's
-- limit, with their retry time: they wait for a probe's turn, or for the outage's end.
UPDATE workflow.outbox m SET parked = 'limit'
 WHERE m.id = ANY ($1) AND m.status = 'pending' AND m.parked IS NULL;

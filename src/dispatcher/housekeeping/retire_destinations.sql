-- Forgets the failing destinations that have had nothing to probe for a minute past their
-- turn (their messages delivered, dead or cancelled): a destination that is never sent to
-- again must not stay failing, and cost every round a look, for ever. One that is sent to
-- again starts healthy, and fails again if it must.
DELETE FROM workflow.destinations d
 WHERE coalesce(d.next_probe_at, '-infinity') <= clock_timestamp() - interval '1 minute'
   AND NOT EXISTS (SELECT FROM workflow.outbox m
                    WHERE coalesce(m.endpoint, m.origin) = d.destination
                      AND m.parked = 'limit');

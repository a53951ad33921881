-- The destinations with messages parked at their limit, one index probe each (a skip
-- scan of `outbox_limited`): what a dispatcher that starts has to let go as room frees.
WITH RECURSIVE d AS (
    (SELECT coalesce(endpoint, origin) AS destination FROM workflow.outbox
      WHERE parked = 'limit' ORDER BY coalesce(endpoint, origin) LIMIT 1)
    UNION ALL
    SELECT (SELECT coalesce(m.endpoint, m.origin) FROM workflow.outbox m
             WHERE m.parked = 'limit' AND coalesce(m.endpoint, m.origin) > d.destination
             ORDER BY coalesce(m.endpoint, m.origin) LIMIT 1)
      FROM d WHERE d.destination IS NOT NULL)
SELECT destination FROM d WHERE destination IS NOT NULL;

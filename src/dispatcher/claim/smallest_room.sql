-- The smallest number of requests any destination may have outstanding (see
-- `destination_room!`): an endpoint's own limits, or the default for the rest; none while
-- a destination is failing.
SELECT least($1 * $2, min(least(coalesce(e.max_concurrency, $1) * $2,
                                 CASE WHEN e.rate_per_second IS NULL THEN 2147483647
                                      ELSE greatest(1, ceil(e.rate_per_second))::int END)),
              CASE WHEN EXISTS (SELECT FROM workflow.destinations s WHERE s.state = 'failing')
                   THEN 0 END)
  FROM workflow.endpoint_settings e;

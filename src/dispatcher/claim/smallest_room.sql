-- The smallest number of requests any destination may have outstanding, with $1 the
-- default requests in flight per destination and $2 the lease generations: an endpoint's
-- own limits, or the default for the rest; 0 while any destination is failing.
--
-- A bound below the room that claim/claim.sql (and parking/unpark_limited.sql) computes
-- for each destination, before its outstanding requests are taken off: while the most
-- outstanding at one destination plus a whole walk stays within it, no destination can
-- reach its room, and the claim skips its ranking (its $9, see plan.rs).
SELECT least($1 * $2, min(least(coalesce(e.max_concurrency, $1) * $2,
                                 CASE WHEN e.rate_per_second IS NULL THEN 2147483647
                                      ELSE greatest(1, ceil(e.rate_per_second))::int END)),
              CASE WHEN EXISTS (SELECT FROM workflow.destinations s WHERE s.state = 'failing')
                   THEN 0 END)
  FROM workflow.endpoint_settings e;

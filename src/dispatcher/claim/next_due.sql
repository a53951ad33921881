-- How long until the next pending message becomes due, in milliseconds. Messages already
-- due but not claimable — parked, or leased — do not count: what unblocks them (an enable,
-- a head's outcome, a cancel, this dispatcher's own outcome) wakes the dispatcher itself,
-- and counting them would make it spin. The one exception, the lease of a dispatcher that
-- died, is noticed within a poll interval. Capped at a day, so that no stored time (an
-- `infinity` from before 0.2.0) can make the subtraction fail.
SELECT (extract(epoch FROM least(min(next_attempt_at), clock_timestamp() + interval '1 day')
                           - clock_timestamp()) * 1000)::bigint
  FROM workflow.outbox
 WHERE (status = 'pending') IS TRUE AND parked IS NULL
   AND next_attempt_at > (SELECT clock_timestamp());

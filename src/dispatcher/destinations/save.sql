-- Stores the states of the failing destinations $1: $2 unreachable requests in a row,
-- $3 seconds until the next probe, position by position. `since` stays while a
-- destination stays failing.
INSERT INTO workflow.destinations AS d (destination, state, since, probes, next_probe_at)
SELECT t.destination, 'failing', clock_timestamp(), t.probes,
       clock_timestamp() + make_interval(secs => t.probe_in)
  FROM unnest($1::text[], $2::int4[], $3::float8[]) AS t(destination, probes, probe_in)
ON CONFLICT (destination) DO UPDATE
   SET probes = EXCLUDED.probes, next_probe_at = EXCLUDED.next_probe_at;

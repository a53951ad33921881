-- Locks up to $2 ready runs of the workflow name $1 within its queue's limits, round-robin
-- across tenants: the oldest ready run of each tenant after the one served last (the
-- queue's `next_tenant`), then of each from the first tenant on, then each one's second,
-- and so on. With $3, only runs written in this database (the push; see identity.rs).
-- Returns the locked runs in that order; claim/hand_out.sql hands them out. A tenant at its
-- max_running_per_tenant is stepped over.
--
-- The queue's row is locked by lock.sql in this transaction, before this statement took
-- its snapshot, so the counts see every lease another claimer of the name committed. Room:
-- $2, less what max_running leaves, less the rate's tokens; a tenant gets at most what
-- max_running_per_tenant leaves it. The walk probes runs_tenants once per tenant with a
-- ready run, until it found room tenants with room after the cursor and from the first, so
-- its work grows with the batch and the tenants at their limit, never with a tenant's
-- backlog; the counts read runs_leased, the leased runs only. The cursor moves to the last
-- tenant served (or looked at, when none could be served), and the leases taken come out
-- of the tokens.
WITH RECURSIVE
-- The bucket is refilled to one time, read once, which the update below stores: a claim
-- loses no refill to its own duration, and a clock stepped back refills nothing.
now AS MATERIALIZED (SELECT clock_timestamp() AS t),
q AS MATERIALIZED (
    SELECT s.max_running, s.max_running_per_tenant, s.rate_per_second, s.next_tenant,
           CASE WHEN s.rate_per_second IS NOT NULL
                THEN least(greatest(s.rate_per_second, 1),
                           s.tokens + s.rate_per_second
                                      * greatest(0, extract(epoch FROM (SELECT t FROM now) - s.refilled_at)))
           END AS tokens
      FROM workflow.queue_settings s WHERE s.name = $1),
room AS MATERIALIZED (
    SELECT greatest(0, least($2,
               CASE WHEN q.max_running IS NULL THEN $2
                    ELSE q.max_running - (SELECT count(*) FROM workflow.runs r
                                           WHERE r.name = $1 AND (r.status = 'running') IS TRUE
                                             AND r.owner IS NOT NULL
                                             AND r.lease_expires_at > clock_timestamp()) END,
               coalesce(floor(q.tokens), $2)))::int AS n
      FROM q),
-- The walks: each step is the next tenant with a running workflow (one probe), and how
-- many of its ready workflows it may take (`free`: none when none is ready or it is at its
-- limit, checked with a probe and a count of its leases); a walk ends once it found room
-- tenants to take from.
after (tenant, free, turn, served) AS (
    SELECT x.tenant, CASE WHEN (SELECT r.lease_expires_at FROM workflow.runs r
                  WHERE r.name = $1 AND (r.status = 'running') IS TRUE
                    AND coalesce(r.tenant, '') = x.tenant
                    AND r.lease_expires_at <= (SELECT clock_timestamp())
                  ORDER BY r.lease_expires_at LIMIT 1) IS NULL
                 THEN 0
                 WHEN (SELECT max_running_per_tenant FROM q) IS NULL THEN (SELECT n FROM room)
                 ELSE (SELECT max_running_per_tenant FROM q) - (
                      SELECT count(*) FROM workflow.runs o
                       WHERE o.name = $1 AND (o.status = 'running') IS TRUE AND o.owner IS NOT NULL
                         AND coalesce(o.tenant, '') = x.tenant
                         AND o.lease_expires_at > clock_timestamp()) END, 1, 0
      FROM (SELECT (SELECT coalesce(r.tenant, '') FROM workflow.runs r
                      WHERE r.name = $1 AND (r.status = 'running') IS TRUE AND coalesce(r.tenant, '') > (SELECT next_tenant FROM q)
                      ORDER BY coalesce(r.tenant, '') LIMIT 1) AS tenant) x
     WHERE (SELECT n FROM room) > 0
    UNION ALL
    SELECT x.tenant, CASE WHEN (SELECT r.lease_expires_at FROM workflow.runs r
                  WHERE r.name = $1 AND (r.status = 'running') IS TRUE
                    AND coalesce(r.tenant, '') = x.tenant
                    AND r.lease_expires_at <= (SELECT clock_timestamp())
                  ORDER BY r.lease_expires_at LIMIT 1) IS NULL
                 THEN 0
                 WHEN (SELECT max_running_per_tenant FROM q) IS NULL THEN (SELECT n FROM room)
                 ELSE (SELECT max_running_per_tenant FROM q) - (
                      SELECT count(*) FROM workflow.runs o
                       WHERE o.name = $1 AND (o.status = 'running') IS TRUE AND o.owner IS NOT NULL
                         AND coalesce(o.tenant, '') = x.tenant
                         AND o.lease_expires_at > clock_timestamp()) END, a.turn + 1, a.served + (a.free > 0)::int
      FROM after a
     CROSS JOIN LATERAL (
           SELECT (SELECT coalesce(r.tenant, '') FROM workflow.runs r
                      WHERE r.name = $1 AND (r.status = 'running') IS TRUE AND coalesce(r.tenant, '') > a.tenant
                      ORDER BY coalesce(r.tenant, '') LIMIT 1) AS tenant) x
     WHERE a.tenant IS NOT NULL AND a.served + (a.free > 0)::int < (SELECT n FROM room)),
from_first (tenant, free, turn, served) AS (
    SELECT x.tenant, CASE WHEN (SELECT r.lease_expires_at FROM workflow.runs r
                  WHERE r.name = $1 AND (r.status = 'running') IS TRUE
                    AND coalesce(r.tenant, '') = x.tenant
                    AND r.lease_expires_at <= (SELECT clock_timestamp())
                  ORDER BY r.lease_expires_at LIMIT 1) IS NULL
                 THEN 0
                 WHEN (SELECT max_running_per_tenant FROM q) IS NULL THEN (SELECT n FROM room)
                 ELSE (SELECT max_running_per_tenant FROM q) - (
                      SELECT count(*) FROM workflow.runs o
                       WHERE o.name = $1 AND (o.status = 'running') IS TRUE AND o.owner IS NOT NULL
                         AND coalesce(o.tenant, '') = x.tenant
                         AND o.lease_expires_at > clock_timestamp()) END, 1, 0
      FROM (SELECT (SELECT coalesce(r.tenant, '') FROM workflow.runs r
                      WHERE r.name = $1 AND (r.status = 'running') IS TRUE AND coalesce(r.tenant, '') >= ''
                      ORDER BY coalesce(r.tenant, '') LIMIT 1) AS tenant) x
     WHERE (SELECT n FROM room) > 0
    UNION ALL
    SELECT x.tenant, CASE WHEN (SELECT r.lease_expires_at FROM workflow.runs r
                  WHERE r.name = $1 AND (r.status = 'running') IS TRUE
                    AND coalesce(r.tenant, '') = x.tenant
                    AND r.lease_expires_at <= (SELECT clock_timestamp())
                  ORDER BY r.lease_expires_at LIMIT 1) IS NULL
                 THEN 0
                 WHEN (SELECT max_running_per_tenant FROM q) IS NULL THEN (SELECT n FROM room)
                 ELSE (SELECT max_running_per_tenant FROM q) - (
                      SELECT count(*) FROM workflow.runs o
                       WHERE o.name = $1 AND (o.status = 'running') IS TRUE AND o.owner IS NOT NULL
                         AND coalesce(o.tenant, '') = x.tenant
                         AND o.lease_expires_at > clock_timestamp()) END, f.turn + 1, f.served + (f.free > 0)::int
      FROM from_first f
     CROSS JOIN LATERAL (
           SELECT (SELECT coalesce(r.tenant, '') FROM workflow.runs r
                      WHERE r.name = $1 AND (r.status = 'running') IS TRUE AND coalesce(r.tenant, '') > f.tenant
                      ORDER BY coalesce(r.tenant, '') LIMIT 1) AS tenant) x
     WHERE f.tenant IS NOT NULL AND f.served + (f.free > 0)::int < (SELECT n FROM room)
       AND ((SELECT next_tenant FROM q) IS NULL OR f.tenant < (SELECT next_tenant FROM q))),
tenants AS MATERIALIZED (
    SELECT tenant, free, turn FROM after WHERE tenant IS NOT NULL AND free > 0
    UNION ALL
    SELECT tenant, free, turn + $2 FROM from_first
     WHERE tenant IS NOT NULL AND free > 0
       AND ((SELECT next_tenant FROM q) IS NULL OR tenant <= (SELECT next_tenant FROM q))),
walked AS MATERIALIZED (
    SELECT tenant, turn FROM after WHERE tenant IS NOT NULL
    UNION ALL
    SELECT tenant, turn + $2 FROM from_first
     WHERE tenant IS NOT NULL
       AND ((SELECT next_tenant FROM q) IS NULL OR tenant <= (SELECT next_tenant FROM q))),
candidates AS MATERIALIZED (
    SELECT c.id, t.tenant, c.k, t.turn
      FROM tenants t
     CROSS JOIN LATERAL (
           SELECT r.id, row_number() OVER (ORDER BY r.lease_expires_at) AS k
             FROM workflow.runs r
            WHERE r.name = $1 AND (r.status = 'running') IS TRUE
              AND coalesce(r.tenant, '') = t.tenant
              AND r.lease_expires_at <= (SELECT clock_timestamp())
              AND ($3::bigint IS NULL OR r.written_in = $3)
            ORDER BY r.lease_expires_at
            LIMIT greatest(0, least((SELECT n FROM room), t.free))) c),
picked AS MATERIALIZED (
    SELECT id, tenant, k, turn FROM candidates ORDER BY k, turn LIMIT (SELECT n FROM room)),
locked AS MATERIALIZED (
    SELECT r.id FROM workflow.runs r
     WHERE r.id = ANY (ARRAY(SELECT id FROM picked))
       AND r.status = 'running' AND r.lease_expires_at <= (SELECT clock_timestamp())
       FOR NO KEY UPDATE SKIP LOCKED),
chosen AS MATERIALIZED (
    SELECT p.id, p.tenant, p.k, p.turn FROM picked p WHERE p.id IN (SELECT id FROM locked)),
advanced AS (
    UPDATE workflow.queue_settings s
       SET next_tenant = coalesce(
               (SELECT c.tenant FROM chosen c ORDER BY c.k DESC, c.turn DESC LIMIT 1),
               (SELECT w.tenant FROM walked w ORDER BY w.turn DESC LIMIT 1),
               s.next_tenant),
           tokens = CASE WHEN s.rate_per_second IS NULL THEN s.tokens
                         ELSE (SELECT q.tokens FROM q) - (SELECT count(*) FROM chosen) END,
           refilled_at = CASE WHEN s.rate_per_second IS NULL THEN s.refilled_at
                              ELSE greatest(s.refilled_at, (SELECT t FROM now)) END
     -- Rewritten only by a claim that took or looked at something: an idle claim leaves
     -- the row (and REPEATABLE READ claimers' snapshots of it) alone.
     WHERE s.name = $1 AND EXISTS (SELECT FROM walked))
SELECT id FROM chosen ORDER BY k, turn;

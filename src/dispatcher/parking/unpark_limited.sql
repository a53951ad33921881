-- Lets go of messages parked at their destination's limit ('limit', see claim/claim.sql),
-- as many of each destination of $5 as it has room for now, round-robin across tenants:
-- the oldest due message of each tenant after the one served last ($6/$7: destinations
-- and the tenant, NULL as '', each served last), then of each from the first tenant on,
-- then each one's second, and so on; so a tenant's backlog delays another's messages by at
-- most a turn. $1 is the lease generations, $2 the default requests in flight per
-- destination, and $3/$4 the destinations with requests outstanding and how many. Returns,
-- for each destination, whether any are left parked, how many messages were let go, and
-- the tenant served last.
--
-- The walk over tenants probes outbox_limited_tenants twice per tenant with a parked
-- message, until it found room tenants with a due one after the last served and from the
-- first: its work grows with the room and the tenants waiting, never with a backlog.
--
-- The room is the claim's, written again here from the `rooms` of claim/claim.sql, where
-- this $1 is $5, $2 is $6 and $3/$4 are $7/$8: change both together. A disabled endpoint
-- has none here; its enable lets its messages go. A message a failed request parked waits
-- for its retry time (see destinations.rs). A message an application holds locked stays
-- for a later round.
WITH room AS (
    SELECT t.destination,
           CASE WHEN EXISTS (SELECT FROM workflow.endpoint_settings e
                              WHERE e.name = t.destination AND e.disabled_at IS NOT NULL)
                THEN 0
                ELSE greatest(
                       least(coalesce((SELECT CASE WHEN coalesce(s.next_probe_at, '-infinity') <= clock_timestamp()
                                                   THEN 1 ELSE 0 END
                                         FROM workflow.destinations s
                                        WHERE s.destination = t.destination AND s.state = 'failing'),
                                      2147483647),
                             coalesce((SELECT least(coalesce(e.max_concurrency, $2) * $1,
                                                    CASE WHEN e.rate_per_second IS NULL THEN 2147483647
                                                         ELSE greatest(1, ceil(e.rate_per_second))::int END)
                                         FROM workflow.endpoint_settings e WHERE e.name = t.destination),
                                      $2 * $1))
                       - coalesce((SELECT b.n FROM unnest($3::text[], $4::int4[]) AS b(destination, n)
                                    WHERE b.destination = t.destination), 0),
                       0) END AS n
      FROM unnest($5::text[]) AS t(destination)),
freed AS MATERIALIZED (
    SELECT f.id, f.tenant, f.k, f.turn, r.destination FROM room r
     CROSS JOIN LATERAL (
           WITH RECURSIVE
           last AS (
               SELECT (SELECT c.tenant FROM unnest($6::text[], $7::text[]) AS c(destination, tenant)
                        WHERE c.destination = r.destination LIMIT 1) AS tenant),
           -- Messages of one tenant only (the first tenant is the last: two probes): its
           -- oldest due ones, as before tenants, without a walk.
           single AS (
               SELECT (SELECT coalesce(m.tenant, '') FROM workflow.outbox m
                        WHERE coalesce(m.endpoint, m.origin) = r.destination AND m.parked = 'limit'
                        ORDER BY coalesce(m.tenant, '') LIMIT 1)
                      IS NOT DISTINCT FROM
                      (SELECT coalesce(m.tenant, '') FROM workflow.outbox m
                        WHERE coalesce(m.endpoint, m.origin) = r.destination AND m.parked = 'limit'
                        ORDER BY coalesce(m.tenant, '') DESC LIMIT 1) AS one),
           -- Each step is the next tenant with a parked message (one probe) and whether
           -- one of them is due (another); a walk ends once it found room tenants with one.
           after (tenant, due, turn, served) AS (
               SELECT x.tenant, EXISTS (SELECT FROM workflow.outbox m
                             WHERE coalesce(m.endpoint, m.origin) = r.destination AND m.parked = 'limit'
                               AND coalesce(m.tenant, '') = x.tenant
                               AND m.next_attempt_at <= (SELECT clock_timestamp())), 1, 0
                 FROM (SELECT (SELECT coalesce(m.tenant, '') FROM workflow.outbox m
                        WHERE coalesce(m.endpoint, m.origin) = r.destination AND m.parked = 'limit'
                          AND coalesce(m.tenant, '') > (SELECT tenant FROM last)
                        ORDER BY coalesce(m.tenant, '') LIMIT 1) AS tenant) x
                WHERE r.n > 0 AND NOT (SELECT one FROM single)
               UNION ALL
               SELECT x.tenant, EXISTS (SELECT FROM workflow.outbox m
                             WHERE coalesce(m.endpoint, m.origin) = r.destination AND m.parked = 'limit'
                               AND coalesce(m.tenant, '') = x.tenant
                               AND m.next_attempt_at <= (SELECT clock_timestamp())), a.turn + 1, a.served + a.due::int
                 FROM after a
                CROSS JOIN LATERAL (SELECT (SELECT coalesce(m.tenant, '') FROM workflow.outbox m
                        WHERE coalesce(m.endpoint, m.origin) = r.destination AND m.parked = 'limit'
                          AND coalesce(m.tenant, '') > a.tenant
                        ORDER BY coalesce(m.tenant, '') LIMIT 1) AS tenant) x
                WHERE a.tenant IS NOT NULL AND a.served + a.due::int < r.n),
           from_first (tenant, due, turn, served) AS (
               SELECT x.tenant, EXISTS (SELECT FROM workflow.outbox m
                             WHERE coalesce(m.endpoint, m.origin) = r.destination AND m.parked = 'limit'
                               AND coalesce(m.tenant, '') = x.tenant
                               AND m.next_attempt_at <= (SELECT clock_timestamp())), 1, 0
                 FROM (SELECT (SELECT coalesce(m.tenant, '') FROM workflow.outbox m
                        WHERE coalesce(m.endpoint, m.origin) = r.destination AND m.parked = 'limit'
                          AND coalesce(m.tenant, '') >= ''
                        ORDER BY coalesce(m.tenant, '') LIMIT 1) AS tenant) x
                WHERE r.n > 0 AND NOT (SELECT one FROM single)
               UNION ALL
               SELECT x.tenant, EXISTS (SELECT FROM workflow.outbox m
                             WHERE coalesce(m.endpoint, m.origin) = r.destination AND m.parked = 'limit'
                               AND coalesce(m.tenant, '') = x.tenant
                               AND m.next_attempt_at <= (SELECT clock_timestamp())), f.turn + 1, f.served + f.due::int
                 FROM from_first f
                CROSS JOIN LATERAL (SELECT (SELECT coalesce(m.tenant, '') FROM workflow.outbox m
                        WHERE coalesce(m.endpoint, m.origin) = r.destination AND m.parked = 'limit'
                          AND coalesce(m.tenant, '') > f.tenant
                        ORDER BY coalesce(m.tenant, '') LIMIT 1) AS tenant) x
                WHERE f.tenant IS NOT NULL AND f.served + f.due::int < r.n
                  AND ((SELECT tenant FROM last) IS NULL OR f.tenant < (SELECT tenant FROM last))),
           tenants AS (
               SELECT tenant, turn FROM after WHERE tenant IS NOT NULL AND due
               UNION ALL
               SELECT tenant, turn + r.n FROM from_first
                WHERE tenant IS NOT NULL AND due
                  AND ((SELECT tenant FROM last) IS NULL OR tenant <= (SELECT tenant FROM last))),
           candidates AS MATERIALIZED (
               -- Numbered after the LIMIT: a window over the index scan itself reads every
               -- peer of the current row, and a flood enqueued by one statement shares one
               -- due time (all of it, every round).
               SELECT c.id, t.tenant, c.k, t.turn
                 FROM tenants t
                CROSS JOIN LATERAL (
                      SELECT l.id, row_number() OVER (ORDER BY l.next_attempt_at) AS k
                        FROM (SELECT m.id, m.next_attempt_at
                                FROM workflow.outbox m
                               WHERE coalesce(m.endpoint, m.origin) = r.destination AND m.parked = 'limit'
                                 AND coalesce(m.tenant, '') = t.tenant
                                 AND m.next_attempt_at <= (SELECT clock_timestamp())
                               ORDER BY m.next_attempt_at
                               LIMIT r.n) l) c
               UNION ALL
               SELECT o.id, o.tenant, row_number() OVER (ORDER BY o.next_attempt_at), 1
                 FROM (SELECT m.id, coalesce(m.tenant, '') AS tenant, m.next_attempt_at
                         FROM workflow.outbox m
                        WHERE coalesce(m.endpoint, m.origin) = r.destination AND m.parked = 'limit'
                          AND m.next_attempt_at <= (SELECT clock_timestamp())
                        ORDER BY m.next_attempt_at
                        LIMIT r.n) o
                WHERE r.n > 0 AND (SELECT one FROM single)),
           picked AS MATERIALIZED (
               SELECT id, tenant, k, turn FROM candidates ORDER BY k, turn LIMIT r.n),
           -- Locked by key from the array, never by a join (see claim/claim.sql); the
           -- check of `parked` is spelled so that no partial index on it matches, which a
           -- plan from statistics that call the outbox empty would walk whole instead.
           locked AS (
               SELECT m.id FROM workflow.outbox m
                WHERE m.id = ANY (ARRAY(SELECT id FROM picked))
                  AND m.parked IS NOT DISTINCT FROM 'limit'
                  FOR NO KEY UPDATE SKIP LOCKED)
           SELECT p.id, p.tenant, p.k, p.turn FROM picked p
            WHERE p.id IN (SELECT id FROM locked)) f),
-- A failing destination whose probe is due, none of whose messages' retry time has come (a
-- quiet backlog, all of it tried): the one due soonest is the probe, early. An early probe
-- is no attempt of the message's own: its count is kept (the claim adds the one taken back
-- here), so that probing never shortens the message's retries.
early AS (
    SELECT e.id FROM room r
     CROSS JOIN LATERAL (
           SELECT m.id FROM workflow.outbox m
            WHERE coalesce(m.endpoint, m.origin) = r.destination AND m.parked = 'limit'
              AND m.next_attempt_at > clock_timestamp()
            ORDER BY coalesce(m.endpoint, m.origin), m.next_attempt_at
            LIMIT 1
              FOR NO KEY UPDATE SKIP LOCKED) e
     WHERE r.n > 0
       AND EXISTS (SELECT FROM workflow.destinations s
                    WHERE s.destination = r.destination AND s.state = 'failing')
       AND NOT EXISTS (SELECT FROM freed f WHERE f.destination = r.destination)),
unparked AS (
    UPDATE workflow.outbox m
       SET parked = NULL,
           attempts = CASE WHEN m.id = ANY (ARRAY(SELECT id FROM early))
                           THEN greatest(m.attempts - 1, 0) ELSE m.attempts END,
           next_attempt_at = CASE WHEN m.id = ANY (ARRAY(SELECT id FROM early))
                                  THEN clock_timestamp() ELSE m.next_attempt_at END
     WHERE m.id = ANY (ARRAY(SELECT id FROM freed UNION ALL SELECT id FROM early))
    RETURNING m.id)
SELECT r.destination,
       -- A probe per destination (LIMIT keeps the planner from hashing the whole index
       -- instead).
       (SELECT true FROM workflow.outbox m
         WHERE coalesce(m.endpoint, m.origin) = r.destination AND m.parked = 'limit'
           AND m.id <> ALL (ARRAY(SELECT id FROM freed UNION ALL SELECT id FROM early))
         LIMIT 1) IS NOT NULL AS still_parked,
       (SELECT count(*) FROM unparked) AS messages,
       (SELECT f.tenant FROM freed f WHERE f.destination = r.destination
         ORDER BY f.k DESC, f.turn DESC LIMIT 1) AS served_last
  FROM room r;

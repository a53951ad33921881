-- Walks up to $1 due messages, oldest due first, and claims those that may go now.
--
-- A message waits while its named endpoint is disabled, while an older message of its
-- ordering key is pending (the key's head is the only one sent, so a failing head blocks
-- only its own key), and while its destination (its endpoint, or its URL's origin) has as
-- many requests outstanding as its limits allow. Such a blocked message is parked instead
-- (see parking.rs): out of outbox_due, so no later claim walks it again; every row the
-- walk takes is claimed or parked, so each claim makes progress and its work grows with
-- $1, never with what is blocked. The last columns count the parked, and name the
-- destinations parked at their limit; a walk that claims nothing still returns one row,
-- its other columns NULL.
--
-- Parameters: $1 batch, $2 default request timeout, $3 lease margin, $4 default max
-- attempts, $5 lease generations, $6 default requests in flight per destination, $7/$8
-- the destinations with requests outstanding and how many, $9 whether a destination's
-- room can bind this round: when false the ranking below is skipped (a one-time filter),
-- which saves a sort and a window per claim (bench/NOTES.md, ninth session); $10 this
-- database's identity (see identity.rs); $11/$12/$13 the destinations, the tenants with
-- requests outstanding there, and how many.
--
-- A message written in another database (restored from a dump, or copied with a
-- template: its written_in is not $10) stops the claim: it claims and parks nothing, and
-- says how many it found (copied), so that the dispatcher pauses the database (G12). Its
-- restored rows are recognised whatever order the restore brought the tables in.
--
-- A destination's room: as for the dispatcher as a whole, one generation of requests
-- queued behind the one in flight ($5 per request it may have in flight); a rate-limited
-- destination at most a second of its rate, so that none waits for its turn past its
-- lease; a failing destination one, its probe, and none before the probe is due. The same
-- room is written again in parking/unpark_limited.sql, whose $1 is $5 here, $2 is $6 and
-- $3/$4 are $7/$8: change both together. claim/smallest_room.sql reads the smallest of
-- it over all destinations, before outstanding requests are taken off.
--
-- The dispatcher runs this as a generic plan (`plan_cache_mode` is set in
-- dispatcher/mod.rs), which cannot know $1, so the statement leaves the planner no costly
-- choice:
-- - due walks outbox_due in index order and stops after $1 rows: what blocks a row is
--   found by per-row EXISTS probes. Messages in flight keep their due time and sit at the
--   head of the index, so a claim steps over at most the outstanding ones. (Joining the
--   endpoint's settings here let the planner hash-join and sort the whole backlog.)
-- - the updates find their rows by primary key from arrays, not by a join, which a
--   generic plan estimated at a tenth of the table and ran as a merge join over the whole
--   primary key;
-- - the endpoint's settings are joined to the claimed rows only;
-- - the lease goes to leased_until, which no index covers: the claim is a HOT update.
WITH due AS (
    SELECT m.id, m.next_attempt_at, coalesce(m.endpoint, m.origin) AS destination,
           coalesce(m.tenant, '') AS tenant, m.written_in <> $10 AS copied,
           m.endpoint IS NOT NULL AND EXISTS (
              SELECT FROM workflow.endpoint_settings d
               WHERE d.name = m.endpoint AND d.disabled_at IS NOT NULL) AS behind_endpoint,
           m.ordering_key IS NOT NULL AND EXISTS (
              SELECT FROM workflow.outbox p
               WHERE p.ordering_key = m.ordering_key AND p.status = 'pending' AND p.id < m.id) AS behind_key
      FROM workflow.outbox m
     WHERE (m.status = 'pending') IS TRUE AND m.parked IS NULL
       AND m.next_attempt_at <= (SELECT clock_timestamp())
       AND (m.leased_until IS NULL OR m.leased_until <= (SELECT clock_timestamp()))
     ORDER BY m.next_attempt_at
     LIMIT $1
       FOR UPDATE OF m SKIP LOCKED),
copied AS MATERIALIZED (SELECT count(*) AS n FROM due WHERE copied),
sendable AS (
    SELECT d.id, d.destination, d.tenant, d.next_attempt_at
      FROM due d
     WHERE NOT (d.behind_endpoint OR d.behind_key) AND (SELECT n FROM copied) = 0),
-- Within a destination, round-robin across tenants: each tenant's first due message, then
-- each one's second, so that what is beyond the room (parked) is the big backlogs' tail.
turns AS MATERIALIZED (
    SELECT s.id, s.destination, s.tenant, s.next_attempt_at,
           row_number() OVER (PARTITION BY s.destination, s.tenant
                              ORDER BY s.next_attempt_at, s.id) AS turn
      FROM sendable s
     WHERE $9),
ranked AS MATERIALIZED (
    SELECT t.id, t.destination,
           row_number() OVER (PARTITION BY t.destination ORDER BY t.turn, t.next_attempt_at, t.id) AS rank,
           -- A light tenant: fewer than two requests outstanding at the destination. Its
           -- messages up to two outstanding may go beyond the room (see `beyond`).
           t.turn + coalesce((SELECT b.n FROM unnest($11::text[], $12::text[], $13::int4[])
                                           AS b(destination, tenant, n)
                               WHERE b.destination = t.destination AND b.tenant = t.tenant), 0)
               <= 2 AS newcomer
      FROM turns t),
rooms AS MATERIALIZED (
    SELECT d.destination, c.failing, c.cap, c.concurrency, c.rated,
           least(coalesce(c.failing, 2147483647), c.cap) - d.outstanding AS room,
           d.outstanding
      FROM (SELECT x.destination,
                   coalesce((SELECT b.n FROM unnest($7::text[], $8::int4[]) AS b(destination, n)
                              WHERE b.destination = x.destination), 0) AS outstanding
              FROM (SELECT DISTINCT destination FROM ranked) x) d
     CROSS JOIN LATERAL (
           SELECT (SELECT CASE WHEN coalesce(s.next_probe_at, '-infinity') <= clock_timestamp()
                               THEN 1 ELSE 0 END
                     FROM workflow.destinations s
                    WHERE s.destination = d.destination AND s.state = 'failing') AS failing,
                  coalesce((SELECT least(coalesce(e.max_concurrency, $6) * $5,
                                         CASE WHEN e.rate_per_second IS NULL THEN 2147483647
                                              ELSE greatest(1, ceil(e.rate_per_second))::int END)
                              FROM workflow.endpoint_settings e WHERE e.name = d.destination),
                           $6 * $5) AS cap,
                  coalesce((SELECT coalesce(e.max_concurrency, $6)
                              FROM workflow.endpoint_settings e WHERE e.name = d.destination),
                           $6) AS concurrency,
                  EXISTS (SELECT FROM workflow.endpoint_settings e
                           WHERE e.name = d.destination AND e.rate_per_second IS NOT NULL) AS rated) c),
-- Beyond the room, a light tenant's message is claimed all the same, up to one more
-- generation of the destination's requests in all: it waits on the HTTP side, where the
-- destination's slots go round-robin by tenant (dispatcher/limits.rs), for the next slot
-- that frees, instead of parked behind a backlog's claimed generation. Never for a failing
-- destination (its probe is one request), nor under a rate limit, whose room is already a
-- second of its rate: more would wait for their turns past their leases, and go back.
beyond AS MATERIALIZED (
    SELECT k.id, k.destination, k.newcomer, k.rank,
           CASE WHEN r.failing IS NULL AND NOT r.rated
                THEN greatest(0, least(r.concurrency, r.cap + r.concurrency - r.outstanding))
                ELSE 0 END AS extra
      FROM ranked k JOIN rooms r ON r.destination = k.destination
     WHERE k.rank > r.room),
limited AS MATERIALIZED (
    SELECT b.id, b.destination
      FROM (SELECT b.id, b.destination, b.newcomer, b.extra,
                   row_number() OVER (PARTITION BY b.destination, b.newcomer ORDER BY b.rank) AS n
              FROM beyond b) b
     WHERE NOT (b.newcomer AND b.n <= b.extra)),
parked AS (
    UPDATE workflow.outbox m
       SET parked = CASE WHEN m.id = ANY (ARRAY(SELECT id FROM due WHERE behind_endpoint))
                         THEN 'endpoint'
                         WHEN m.id = ANY (ARRAY(SELECT id FROM limited)) THEN 'limit'
                         ELSE 'ordering_key' END
     WHERE m.id = ANY (ARRAY(SELECT id FROM due WHERE behind_endpoint OR behind_key
                             UNION ALL SELECT id FROM limited))
       AND (SELECT n FROM copied) = 0
    RETURNING m.id),
claimed AS (
    UPDATE workflow.outbox m
       SET attempts = m.attempts + 1,
           leased_until = clock_timestamp()
               + COALESCE((SELECT e.timeout FROM workflow.endpoint_settings e
                            WHERE e.name = m.endpoint), $2) * $5
               + $3
     WHERE m.id = ANY (ARRAY(SELECT id FROM sendable
                              WHERE id <> ALL (ARRAY(SELECT id FROM limited))))
    RETURNING m.id, m.attempts, m.url, m.endpoint, m.payload, m.headers,
              m.idempotency_key, m.webhook_id, m.step, m.ordering_key,
              m.last_started_at, coalesce(m.endpoint, m.origin) AS destination,
              coalesce(m.tenant, '') AS tenant)
SELECT c.id, c.attempts AS attempt, COALESCE(e.url, c.url) AS url, c.payload::text AS body,
       e.headers::text AS endpoint_headers, c.headers::text AS message_headers,
       -- A published message's key is its publish's, per endpoint (see wf_publish).
       CASE WHEN starts_with(c.idempotency_key, 'workflow.publish:')
            THEN substr(c.idempotency_key, length('workflow.publish:' || c.endpoint || ':') + 1)
            ELSE c.idempotency_key END AS idempotency_key,
       c.webhook_id,
       -- Secrets being rotated out sign too, until their time is up.
       e.secrets || CASE WHEN e.retiring_until > clock_timestamp()
                         THEN e.retiring_secrets ELSE '{}' END AS secrets,
       COALESCE(e.max_attempts, $4) AS max_attempts,
       (extract(epoch FROM COALESCE(e.timeout, $2)) * 1000)::bigint AS timeout_ms,
       c.step IS NOT NULL AS durable_step, c.endpoint IS NOT NULL AS named_endpoint,
       c.ordering_key IS NOT NULL AS ordered, c.last_started_at IS NOT NULL AS replaces_attempt,
       p.n AS parked, c.destination, c.tenant,
       coalesce(e.max_concurrency, $6) AS concurrency, e.rate_per_second,
       CASE WHEN e.retry_schedule IS NOT NULL
            THEN ARRAY(SELECT (extract(epoch FROM d) * 1000)::float8 FROM unnest(e.retry_schedule) d)
       END AS retry_schedule_ms,
       e.failing_since IS NOT NULL AS endpoint_failing, l.destinations AS limited,
       (SELECT n FROM copied) AS copied
  FROM (SELECT count(*) AS n FROM parked) p
 CROSS JOIN (SELECT array_agg(DISTINCT destination) AS destinations FROM limited) l
  LEFT JOIN (claimed c LEFT JOIN workflow.endpoint_settings e ON e.name = c.endpoint) ON true;

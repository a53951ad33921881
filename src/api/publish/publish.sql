-- Publishes the event $1: one message to each subscriber in $7 (endpoint names), with the
-- Standard Webhooks payload `{"type": $1, "timestamp", "data": $2}` and the headers $3,
-- due at $5 (NULL: now), for the tenant $8. Each row says it is written in this database (`written_in =
-- workflow.database_identity()`, see identity.rs). Returns each new message's id,
-- endpoint and whether it was parked; a subscriber whose message a keyed publish made before gets no row
-- (find_published.sql finds it).
--
-- The idempotency key $4 becomes one per subscriber, `workflow.publish:<endpoint>:<key>`
-- (the claim sends the caller's key), so a repeated publish finds each subscriber's
-- message; the ordering key $6 likewise orders each subscriber's messages apart, so that
-- one failing subscriber holds back only its own.
--
-- A message due now ($5 NULL) to a subscriber where its tenant has messages parked at the limit is
-- parked with them
-- (see api/crowding.rs), and the caller tells the dispatcher so at commit.
INSERT INTO workflow.outbox AS m
       (endpoint, payload, headers, idempotency_key, next_attempt_at, ordering_key, written_in,
        tenant, parked)
SELECT s.name,
       jsonb_build_object('type', $1, 'timestamp', to_jsonb(statement_timestamp()), 'data', $2),
       $3,
       'workflow.publish:' || s.name || ':' || $4,
       COALESCE($5, statement_timestamp()),
       'workflow.publish:' || s.name || ':' || $6,
       workflow.database_identity(), $8,
       CASE WHEN $5 IS NULL
                 AND EXISTS (SELECT FROM workflow.outbox p
                              WHERE coalesce(p.endpoint, p.origin) = s.name AND p.parked = 'limit'
                                AND coalesce(p.tenant, '') = coalesce($8, ''))
            THEN 'limit'::workflow.park_reason END
  FROM unnest($7::text[]) AS s(name)
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING m.id, m.endpoint, m.parked IS NOT NULL AS parked;

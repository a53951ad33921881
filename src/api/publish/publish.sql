-- One message per subscriber `$7`, with the Standard Webhooks payload structure. A key
-- `$4` becomes one per subscriber, `workflow.publish:<endpoint>:<key>` (the claim sends
-- the caller's key), so a repeated publish finds each subscriber's message; an ordering
-- key likewise orders each subscriber's messages apart, so that one failing subscriber
-- holds back only its own.
INSERT INTO workflow.outbox AS m
       (endpoint, payload, headers, idempotency_key, next_attempt_at, ordering_key)
SELECT s.name,
       jsonb_build_object('type', $1, 'timestamp', to_jsonb(statement_timestamp()), 'data', $2),
       $3,
       'workflow.publish:' || s.name || ':' || $4,
       COALESCE($5, statement_timestamp()),
       'workflow.publish:' || s.name || ':' || $6
  FROM unnest($7::text[]) AS s(name)
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING m.id, m.endpoint;

-- The messages a keyed publish made before, by subscriber.
SELECT m.id, m.endpoint FROM workflow.outbox m
 WHERE m.idempotency_key = ANY (ARRAY(
           SELECT 'workflow.publish:' || s.name || ':' || $1 FROM unnest($2::text[]) AS s(name)));

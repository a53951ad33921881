-- The messages a publish with the idempotency key $1 made before for the subscribers $2
-- (endpoint names), each with its endpoint (see publish.sql for the keys).
SELECT m.id, m.endpoint FROM workflow.outbox m
 WHERE m.idempotency_key = ANY (ARRAY(
           SELECT 'workflow.publish:' || s.name || ':' || $1 FROM unnest($2::text[]) AS s(name)));

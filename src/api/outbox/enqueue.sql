-- Enqueues a message without an idempotency key ($5, NULL here; enqueue_keyed.sql takes
-- the keyed ones): to the URL $1 or the endpoint $2, with the payload $3 and the headers
-- $4, due at $6 (NULL: now), for the durable step $8 of the workflow $7 if they are given,
-- under the ordering key $9, for the tenant $10 (NULL: the workflow's). The row says it is written in this database (`written_in =
-- workflow.database_identity()`, see identity.rs). Returns the message's id, and whether
-- it was parked.
--
-- A message due now ($6 NULL) to the destination $11 (the endpoint, or the URL's origin) is parked
-- at its limit when its tenant has messages parked there, or when this transaction
-- already enqueued $12 to it and that is its room ($13 requests in flight by default, $14
-- lease generations: the claim's room, without what is outstanding; a disabled endpoint's
-- messages are its enable's business, parked by the claim): see api/crowding.rs.
--
-- Without an idempotency key nothing can conflict, and a plain insert skips the
-- speculative insertion `ON CONFLICT` always costs (a lock on a speculative token, a
-- probe of the arbiter index and a second WAL record to confirm the row).
INSERT INTO workflow.outbox AS m
    (url, endpoint, payload, headers, idempotency_key, next_attempt_at, workflow_id, step, ordering_key,
     written_in, tenant, parked)
VALUES ($1, $2, $3, $4, $5, COALESCE($6, statement_timestamp()), $7, $8, $9,
        workflow.database_identity(),
        coalesce($10, (SELECT r.tenant FROM workflow.runs r WHERE r.id = $7)),
        CASE WHEN $6 IS NULL
                  AND (EXISTS (SELECT FROM workflow.outbox p
                                WHERE coalesce(p.endpoint, p.origin) = $11 AND p.parked = 'limit'
                                  AND coalesce(p.tenant, '')
                                      = coalesce($10, (SELECT r.tenant FROM workflow.runs r WHERE r.id = $7), ''))
                       OR CASE WHEN $12 = 0 THEN false
                               ELSE $12 >= coalesce(
                                   (SELECT CASE WHEN e.disabled_at IS NOT NULL THEN 2147483647
                                                ELSE least(coalesce(e.max_concurrency, $13) * $14,
                                                           CASE WHEN e.rate_per_second IS NULL THEN 2147483647
                                                                ELSE greatest(1, ceil(e.rate_per_second))::int END)
                                           END
                                      FROM workflow.endpoint_settings e WHERE e.name = $2),
                                   $13 * $14) END)
             THEN 'limit'::workflow.park_reason END)
RETURNING m.id, m.parked IS NOT NULL AS parked;

-- The outbox's numbers for `wf_stats()`: pending, counts by outcome, how long the oldest
-- due message has waited, the last minute's attempts and latency, whether a dispatcher runs, and how
-- many endpoints are disabled.
WITH counts AS (
    SELECT (SELECT count(*) FROM workflow.outbox WHERE (status = 'pending') IS TRUE AND parked IS NULL)
           + (SELECT count(*) FROM workflow.outbox WHERE parked IS NOT NULL) AS pending,
           coalesce(sum(n) FILTER (WHERE status = 'delivered'), 0)::bigint AS delivered,
           coalesce(sum(n) FILTER (WHERE status = 'dead'), 0)::bigint AS dead,
           coalesce(sum(n) FILTER (WHERE status = 'cancelled'), 0)::bigint AS cancelled
      FROM workflow.message_counts),
-- How long the oldest due message has waited since it was due: a message scheduled for
-- later, or waiting for its retry, is not late yet.
oldest AS (
    SELECT clock_timestamp() - least(
               (SELECT min(next_attempt_at) FROM workflow.outbox
                 WHERE (status = 'pending') IS TRUE AND parked IS NULL
                   AND next_attempt_at <= clock_timestamp()),
               (SELECT min(next_attempt_at) FROM workflow.outbox
                 WHERE parked IS NOT NULL AND next_attempt_at <= clock_timestamp())) AS age),
last_minute AS (
    SELECT count(*) FILTER (WHERE status_code BETWEEN 200 AND 299) AS deliveries,
           count(*) FILTER (WHERE status_code IS NULL OR status_code NOT BETWEEN 200 AND 299) AS failures
      FROM (SELECT status_code FROM workflow.delivery_attempts
             WHERE started_at >= statement_timestamp() - interval '1 minute'
            UNION ALL
            -- Each message's latest attempt is on the message: pending ones
            -- through the due and parked indexes, finished ones through the
            -- finished index (a message finishes after its last attempt starts, so
            -- the condition on finished_at follows and bounds the scan to the last
            -- minute).
            SELECT last_status_code FROM workflow.outbox
             WHERE (status = 'pending') IS TRUE AND parked IS NULL
               AND last_started_at >= statement_timestamp() - interval '1 minute'
            UNION ALL
            SELECT last_status_code FROM workflow.outbox
             WHERE parked IS NOT NULL
               AND last_started_at >= statement_timestamp() - interval '1 minute'
            UNION ALL
            SELECT last_status_code FROM workflow.outbox
             WHERE (status <> 'pending') IS TRUE
               AND finished_at >= statement_timestamp() - interval '1 minute'
               AND last_started_at >= statement_timestamp() - interval '1 minute') a),
-- From the enqueue to the receiver's answer (delivered_at is when it arrived), and the
-- delivering request alone.
latency AS (
    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY answer_ms) AS answer_p50,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY answer_ms) AS answer_p99,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY last_duration_ms) AS request_p50,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY last_duration_ms) AS request_p99
      FROM (SELECT extract(epoch FROM delivered_at - created_at) * 1000 AS answer_ms, last_duration_ms
              FROM workflow.outbox
             WHERE (status <> 'pending') IS TRUE AND status = 'delivered'
               AND finished_at >= statement_timestamp() - interval '1 minute') d)
SELECT c.pending, c.delivered, c.dead, c.cancelled, o.age, m.deliveries, m.failures,
       l.answer_p50, l.answer_p99, l.request_p50, l.request_p99,
       EXISTS (SELECT FROM pg_catalog.pg_stat_activity
                WHERE backend_type = 'workflow dispatcher' AND datname = current_database()),
       (SELECT count(*) FROM workflow.endpoint_settings WHERE disabled_at IS NOT NULL)
  FROM counts c, oldest o, last_minute m, latency l;

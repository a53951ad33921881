-- The workflow names with a queue, and with a push handler when $1 (the push): claims of
-- any name take these within their limits, one name at a time.
SELECT q.name FROM workflow.queue_settings q
 WHERE NOT $1 OR EXISTS (SELECT FROM workflow.handlers h WHERE h.name = q.name)
 ORDER BY q.name;

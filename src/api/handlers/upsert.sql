-- Sets the push handler of the workflow name $1: its URL $2, or the endpoint $3.
INSERT INTO workflow.handlers AS h (name, url, endpoint) VALUES ($1, $2, $3)
ON CONFLICT (name) DO UPDATE
   SET url = EXCLUDED.url, endpoint = EXCLUDED.endpoint, updated_at = statement_timestamp();

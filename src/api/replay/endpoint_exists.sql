-- Whether the endpoint $1 exists.
SELECT true FROM workflow.endpoint_settings WHERE name = $1;

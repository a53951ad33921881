-- Drops the push handler of the workflow name $1; returns the name if there was one.
DELETE FROM workflow.handlers WHERE name = $1 RETURNING name;

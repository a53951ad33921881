-- Forgets the destinations `$1` whose outage ended: a healthy destination has no row.
DELETE FROM workflow.destinations WHERE destination = ANY ($1);

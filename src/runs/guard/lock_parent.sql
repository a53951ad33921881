-- Locks the parent of the run `$1`, if it has one (a run's parent never changes).
SELECT FROM workflow.runs p
 WHERE p.id = (SELECT r.parent FROM workflow.runs r WHERE r.id = $1)
   FOR NO KEY UPDATE;

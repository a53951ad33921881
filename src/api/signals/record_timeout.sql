-- Records the wait's step $2 of the run $1 as timed out; returns its output.
INSERT INTO workflow.checkpoints (workflow_id, step, output)
VALUES ($1, $2, '{"timed_out": true}') RETURNING output;

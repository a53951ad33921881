-- What a worker needs of the runs $1 it claimed, in that order: what a push carries.
SELECT r.id, r.name, r.input,
       (SELECT coalesce(jsonb_object_agg(c.step, c.output ORDER BY c.seq), '{}')
          FROM workflow.checkpoints c WHERE c.workflow_id = r.id),
       r.tenant, r.lease_expires_at
  FROM unnest($1::uuid[]) WITH ORDINALITY AS k(id, n)
  JOIN workflow.runs r ON r.id = k.id
 ORDER BY k.n;

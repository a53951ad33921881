-- The status of the run $1 (NULL: no such run), whether it has an owner, whether the
-- owner $2 (NULL: no fence) holds its lease, and whether it is claimable now; always one
-- row. Whether $2 holds the lease is the condition of runs/guard/lock_run.sql, which
-- explains it.
SELECT r.status,
       r.owner IS NOT NULL AS leased,
       $2::text IS NULL OR (r.owner = $2 AND r.lease_expires_at > clock_timestamp()) AS holds_lease,
       r.lease_expires_at <= clock_timestamp() AS claimable
  FROM (SELECT $1::uuid AS id) k
  LEFT JOIN workflow.runs r ON r.id = k.id;

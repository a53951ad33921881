-- Which of the transactions `$1` (NULL: any of this database's) are still prepared,
-- waiting for their COMMIT PREPARED. Asked before a look: a transaction it no longer
-- finds has ended before the look's snapshot, which sees what it committed.
SELECT coalesce(array_agg(transaction::text::bigint), '{}')
  FROM pg_catalog.pg_prepared_xacts
 WHERE database = current_database()
   AND ($1::int8[] IS NULL OR transaction::text::bigint = ANY ($1));

-- The failing destinations, with seconds until their next probe and since they failed.
SELECT destination, probes,
       extract(epoch FROM next_probe_at - clock_timestamp())::float8,
       extract(epoch FROM clock_timestamp() - since)::float8
  FROM workflow.destinations WHERE state = 'failing';

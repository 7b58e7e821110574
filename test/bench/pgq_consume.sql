-- pgbench script: a PgQ consumer: the next batch of queue bench_c (run.sh
-- ticks it every 1,000 events, so a batch is 1,000 events), its events, and
-- finish_batch, in one transaction.
BEGIN;
SELECT pgq.next_batch('bench_c', :consumer) AS batch_id \gset
SELECT count(*) FROM pgq.get_batch_events(:batch_id);
SELECT pgq.finish_batch(:batch_id);
COMMIT;

-- pgbench script: a statement that writes nothing and waits for no disk.  Its
-- round trip is the floor under every one-statement-per-transaction
-- workload on the machine: the latency no append or INSERT can go below
-- (plus the disk's fdatasync), and at 32 clients the rate none can exceed.
-- :payload is bound like the other scripts' so that the statements carry
-- the same parameter.
SELECT octet_length(:payload::text);

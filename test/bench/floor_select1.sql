-- pgbench script: a statement that writes nothing and waits for no disk.
-- At 32 clients its rate is the ceiling of any one-statement-per-
-- transaction workload on the machine.  At one client its latency shows
-- what a round trip costs here (mostly waking an idle vCPU), but it is no
-- floor to add an fdatasync to: an INSERT that waits for the disk has
-- measured below that sum on this VM.  :payload is bound like the other
-- scripts' so that the statements carry the same parameter.
SELECT octet_length(:payload::text);

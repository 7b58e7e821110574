-- the extension belongs to batpak.database only
CREATE DATABASE batpak_other;
\c batpak_other
\set VERBOSITY default
CREATE EXTENSION batpak;
\c contrib_regression
DROP DATABASE batpak_other;
-- nothing is granted to PUBLIC
SELECT count(*) AS public_functions
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'batpak' AND has_function_privilege('public', p.oid, 'EXECUTE');
SELECT has_table_privilege('public', 'batpak.stats', 'SELECT') AS public_stats;

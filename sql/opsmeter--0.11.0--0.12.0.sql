-- opsmeter 0.11.0 -> 0.12.0: ops_op_claim and ops_op_completed (behind ops_op_complete) plan
-- with enable_seqscan = off. They keep generic plans for a session's life; one planned while
-- opsmeter.leases or opsmeter.retries was nearly empty scanned them whole on every claim and
-- completion as they grew (a lease row per claim until autovacuum): now their indexes are used
-- whatever the tables' size at planning time. Nothing else changes: tables, the stored
-- ops_sketch encoding and every signature are as in 0.11.0.
\echo Use "ALTER EXTENSION opsmeter UPDATE TO '0.12.0'" to load this file. \quit

ALTER FUNCTION ops_op_claim(integer, interval) SET enable_seqscan = off;
ALTER FUNCTION ops_op_completed(text[], uuid) SET enable_seqscan = off;

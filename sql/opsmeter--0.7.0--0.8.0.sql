-- opsmeter 0.7.0 -> 0.8.0: speed on more data shapes; no SQL object changes.
-- The library's in-memory aggregate state of ops_sketch (its working layout 3: a value buffer and
-- counters that start one byte wide) and ops_add_records' reading of its jsonb argument changed;
-- the stored ops_sketch encoding, every function's signature and every table are as in 0.7.0.
-- (The install script differs from 0.7.0's only in a comment pgrx writes beside the argument of
-- ops_add_records.)
\echo Use "ALTER EXTENSION opsmeter UPDATE TO '0.8.0'" to load this file. \quit

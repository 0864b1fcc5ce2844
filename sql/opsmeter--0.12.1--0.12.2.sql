-- opsmeter 0.12.1 -> 0.12.2: faster per-state work in ops_sketch's final, merge and decode paths
-- (the library only). A working state's non-zero counters are collected and the compact form
-- written and read back without a branch on whether a bucket is empty, and merges add into the
-- counters through one loop per counter width. No SQL object changes: tables, signatures, the
-- stored ops_sketch encoding and the working layout (3) are as in 0.12.1, and every sketch's
-- bytes are the same as 0.12.1 makes.
\echo Use "ALTER EXTENSION opsmeter UPDATE TO '0.12.2'" to load this file. \quit

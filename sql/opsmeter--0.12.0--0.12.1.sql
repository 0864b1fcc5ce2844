-- opsmeter 0.12.0 -> 0.12.1: a faster ops_sketch transition (the library only). A flush of the
-- 16-value buffer now finds most bucket indices in a per-binade table of exact boundaries, sums
-- integral values without overflow checks and fractional ones in vectorised integer lanes, and
-- runs a loop per counter width. No SQL object changes: tables, signatures, the stored
-- ops_sketch encoding and the working layout (3) are as in 0.12.0, and every sketch's bytes are
-- the same as 0.12.0 makes.
\echo Use "ALTER EXTENSION opsmeter UPDATE TO '0.12.1'" to load this file. \quit

-- opsmeter 0.12.2 -> 0.12.3: faster combine functions (the library only). A partial state of a
-- parallel plan or a Citus worker is merged into the group's state straight from its counters
-- instead of being read into a sketch first, and the group's first partial pair state is
-- checked without building its sketches. No SQL object changes: tables, signatures, the stored
-- ops_sketch encoding and the working layout (3) are as in 0.12.2, and every sketch's bytes
-- are the same as 0.12.2 makes.
\echo Use "ALTER EXTENSION opsmeter UPDATE TO '0.12.3'" to load this file. \quit

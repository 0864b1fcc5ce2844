-- opsmeter 0.9.0 -> 0.10.0: speed of merges and accessors; no SQL object changes.
-- The library now keeps the last two compact ops_sketch values it decoded, or made in the final
-- function, with their decoded sketches (per backend, keyed by the whole byte string), and a
-- group's lone compact input to ops_sketch_merge is its result as it is (a merge of one sketch
-- is that sketch, byte for byte). The stored ops_sketch encoding, every function's signature and
-- every table are as in 0.9.0.
\echo Use "ALTER EXTENSION opsmeter UPDATE TO '0.10.0'" to load this file. \quit

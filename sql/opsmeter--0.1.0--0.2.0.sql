-- opsmeter 0.1.0 -> 0.2.0: adds ops_sketch (SPEC section 1), the mergeable relative-error
-- quantile sketch type, its aggregates ops_sketch(float8), ops_sketch(float8, float8) and
-- ops_sketch_merge(ops_sketch), and its accessors. Nothing existing changes.
\echo Use "ALTER EXTENSION opsmeter UPDATE TO '0.2.0'" to load this file. \quit

CREATE TYPE ops_sketch;
CREATE FUNCTION ops_sketch_in(cstring) RETURNS ops_sketch
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ops_sketch_in';
CREATE FUNCTION ops_sketch_out(ops_sketch) RETURNS cstring
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ops_sketch_out';
CREATE FUNCTION ops_sketch_recv(internal) RETURNS ops_sketch
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ops_sketch_recv';
CREATE FUNCTION ops_sketch_send(ops_sketch) RETURNS bytea
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ops_sketch_send';
CREATE TYPE ops_sketch (
    INPUT = ops_sketch_in, OUTPUT = ops_sketch_out,
    RECEIVE = ops_sketch_recv, SEND = ops_sketch_send,
    INTERNALLENGTH = VARIABLE, STORAGE = extended, ALIGNMENT = int4
);

CREATE FUNCTION ops_sketch_trans(ops_sketch, float8) RETURNS ops_sketch
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ops_sketch_trans';
CREATE FUNCTION ops_sketch_trans(ops_sketch, float8, float8) RETURNS ops_sketch
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ops_sketch_trans_alpha';
CREATE FUNCTION ops_sketch_combine(ops_sketch, ops_sketch) RETURNS ops_sketch
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ops_sketch_combine';
CREATE FUNCTION ops_sketch_final(ops_sketch) RETURNS ops_sketch
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ops_sketch_final';

CREATE AGGREGATE ops_sketch(value float8) (
    SFUNC = ops_sketch_trans, STYPE = ops_sketch, SSPACE = 8192,
    COMBINEFUNC = ops_sketch_combine, FINALFUNC = ops_sketch_final, PARALLEL = SAFE
);
CREATE AGGREGATE ops_sketch(value float8, alpha float8) (
    SFUNC = ops_sketch_trans, STYPE = ops_sketch, SSPACE = 8192,
    COMBINEFUNC = ops_sketch_combine, FINALFUNC = ops_sketch_final, PARALLEL = SAFE
);
CREATE AGGREGATE ops_sketch_merge(ops_sketch) (
    SFUNC = ops_sketch_combine, STYPE = ops_sketch, SSPACE = 8192,
    COMBINEFUNC = ops_sketch_combine, FINALFUNC = ops_sketch_final, PARALLEL = SAFE
);

CREATE  FUNCTION "ops_count"(
	"s" ops_sketch /* OpsSketch */
) RETURNS bigint /* i64 */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ops_count_wrapper';

CREATE  FUNCTION "ops_max"(
	"s" ops_sketch /* OpsSketch */
) RETURNS double precision /* Option < f64 > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ops_max_wrapper';

CREATE  FUNCTION "ops_mean"(
	"s" ops_sketch /* OpsSketch */
) RETURNS double precision /* Option < f64 > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ops_mean_wrapper';

CREATE  FUNCTION "ops_min"(
	"s" ops_sketch /* OpsSketch */
) RETURNS double precision /* Option < f64 > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ops_min_wrapper';

CREATE  FUNCTION "ops_quantile"(
	"s" ops_sketch, /* OpsSketch */
	"q" double precision /* f64 */
) RETURNS double precision /* Option < f64 > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ops_quantile_wrapper';

CREATE  FUNCTION "ops_quantiles"(
	"s" ops_sketch, /* OpsSketch */
	"qs" double precision[] /* Vec < Option < f64 > > */
) RETURNS double precision[] /* Vec < Option < f64 > > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ops_quantiles_wrapper';

CREATE  FUNCTION "ops_rank"(
	"s" ops_sketch, /* OpsSketch */
	"value" double precision /* f64 */
) RETURNS double precision /* Option < f64 > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ops_rank_wrapper';

CREATE  FUNCTION "ops_sketch_alpha"(
	"s" ops_sketch /* OpsSketch */
) RETURNS double precision /* f64 */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ops_sketch_alpha_wrapper';

CREATE  FUNCTION "ops_sum"(
	"s" ops_sketch /* OpsSketch */
) RETURNS double precision /* Option < f64 > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ops_sum_wrapper';

COMMENT ON TYPE ops_sketch IS 'opsmeter: mergeable relative-error quantile sketch (DDSketch family); text form ddsk1:<base64>';
COMMENT ON FUNCTION ops_sketch_in(cstring) IS 'opsmeter: ops_sketch text input (ddsk1:<base64 of the compact encoding>)';
COMMENT ON FUNCTION ops_sketch_out(ops_sketch) IS 'opsmeter: ops_sketch text output; round-trips exactly';
COMMENT ON FUNCTION ops_sketch_recv(internal) IS 'opsmeter: ops_sketch binary input (validated compact encoding)';
COMMENT ON FUNCTION ops_sketch_send(ops_sketch) IS 'opsmeter: ops_sketch binary output (compact encoding)';
COMMENT ON FUNCTION ops_sketch_trans(ops_sketch, float8) IS 'opsmeter: aggregate support for ops_sketch(value): adds a value, in place inside an aggregate';
COMMENT ON FUNCTION ops_sketch_trans(ops_sketch, float8, float8) IS 'opsmeter: aggregate support for ops_sketch(value, alpha): adds a value, in place inside an aggregate';
COMMENT ON FUNCTION ops_sketch_combine(ops_sketch, ops_sketch) IS 'opsmeter: aggregate support: merges the second sketch into the first (exact)';
COMMENT ON FUNCTION ops_sketch_final(ops_sketch) IS 'opsmeter: aggregate support: compact form of a sketch state';
COMMENT ON AGGREGATE ops_sketch(float8) IS 'opsmeter: sketch of the non-NULL values at alpha 0.005 (quantiles within 0.5% of percentile_disc); parallel safe, distributable';
COMMENT ON AGGREGATE ops_sketch(float8, float8) IS 'opsmeter: sketch of the non-NULL values at relative accuracy alpha (0.0001 .. 0.1)';
COMMENT ON AGGREGATE ops_sketch_merge(ops_sketch) IS 'opsmeter: exact merge of stored sketches (hourly to daily to monthly; all of one alpha)';
COMMENT ON FUNCTION ops_quantile(ops_sketch, float8) IS 'opsmeter: value at quantile q in [0, 1], within alpha of percentile_disc(q), clamped to [min, max]';
COMMENT ON FUNCTION ops_quantiles(ops_sketch, float8[]) IS 'opsmeter: ops_quantile for each q of an array';
COMMENT ON FUNCTION ops_rank(ops_sketch, float8) IS 'opsmeter: estimated share of values <= value (for SLOs such as the share of requests under 2 s)';
COMMENT ON FUNCTION ops_count(ops_sketch) IS 'opsmeter: exact number of values in the sketch';
COMMENT ON FUNCTION ops_sum(ops_sketch) IS 'opsmeter: exact sum of the values, correctly rounded to float8';
COMMENT ON FUNCTION ops_mean(ops_sketch) IS 'opsmeter: exact mean of the values';
COMMENT ON FUNCTION ops_min(ops_sketch) IS 'opsmeter: exact minimum';
COMMENT ON FUNCTION ops_max(ops_sketch) IS 'opsmeter: exact maximum';
COMMENT ON FUNCTION ops_sketch_alpha(ops_sketch) IS 'opsmeter: relative accuracy alpha the sketch was built with';

-- The source registry: every role starts on the extension's own table.
SELECT role, relation, is_default, status FROM ops_sources() ORDER BY role;
SELECT count(*) AS overrides FROM opsmeter.sources;

-- A user's usage table with other column names, served through a view that renames them.
CREATE TABLE gw_requests (
    ts timestamptz NOT NULL, gid integer, took_ms double precision, ttfb_ms integer,
    tin bigint, tout bigint, cache_w bigint, cache_r bigint, note text
);
CREATE VIEW gw_usage AS
SELECT ts AS created_at, gid AS group_id, took_ms AS duration_ms, ttfb_ms AS first_token_ms,
       tin AS input_tokens, tout AS output_tokens, cache_w AS cache_creation_tokens,
       cache_r AS cache_read_tokens
  FROM gw_requests;
SELECT ops_set_source('usage_logs', 'gw_usage');
SELECT role, relation, is_default, status FROM ops_sources() WHERE role = 'usage_logs';
SELECT role, relation, set_by FROM opsmeter.sources;

-- Domains resolve to their base type.
CREATE DOMAIN group_key AS bigint CHECK (VALUE > 0);
CREATE TABLE my_groups (id group_key PRIMARY KEY, platform varchar(32), label text);
SELECT ops_set_source('groups', 'my_groups');

-- Unknown role: 22023 with the list of known roles.
SELECT ops_set_source('usage', 'gw_usage');
SELECT regress.err($$SELECT ops_set_source('usage', 'gw_usage')$$);
SELECT regress.err($$SELECT ops_reset_source('Groups')$$);

-- A missing column (42703) and a mistyped one (42804) are named with the type they need.
CREATE VIEW gw_usage_no_ttft AS SELECT created_at, group_id, duration_ms, input_tokens,
       output_tokens, cache_creation_tokens, cache_read_tokens FROM gw_usage;
SELECT ops_set_source('usage_logs', 'gw_usage_no_ttft');
SELECT regress.err($$SELECT ops_set_source('usage_logs', 'gw_usage_no_ttft')$$);
CREATE VIEW gw_usage_naive_ts AS SELECT created_at::timestamp AS created_at, group_id,
       duration_ms, first_token_ms, input_tokens, output_tokens, cache_creation_tokens,
       cache_read_tokens FROM gw_usage;
SELECT regress.err($$SELECT ops_set_source('usage_logs', 'gw_usage_naive_ts')$$);
CREATE TABLE bad_errors (created_at timestamptz, platform text, group_id bigint,
       is_business_limited text, error_owner text, status_code int, upstream_status_code int);
SELECT regress.err($$SELECT ops_set_source('error_logs', 'bad_errors')$$);
-- Not a table-like relation (42809); not a relation at all (regclass input, 42P01).
SELECT regress.err($$SELECT ops_set_source('groups', 'my_groups_pkey')$$);
SELECT regress.err($$SELECT ops_set_source('groups', 'no_such_table')$$);
-- NULL arguments: the functions are STRICT and do nothing.
SELECT ops_set_source(NULL, 'my_groups') IS NULL AS strict_null;

-- Failing calls changed nothing: usage_logs still points at gw_usage.
SELECT role, relation FROM opsmeter.sources ORDER BY role;

-- A caller who cannot read the relation cannot register it (42501).
CREATE ROLE opsmeter_regress_nobody;
GRANT USAGE ON SCHEMA opsmeter, regress TO opsmeter_regress_nobody;
GRANT ALL ON opsmeter.sources TO opsmeter_regress_nobody;
CREATE TABLE secret_logs (created_at timestamptz, model_name text, status_code int,
       tokens_in int, tokens_out int, latency_ms numeric);
REVOKE ALL ON secret_logs FROM PUBLIC;
SET ROLE opsmeter_regress_nobody;
SELECT regress.err($$SELECT ops_set_source('log_records', 'secret_logs')$$);
RESET ROLE;
SELECT ops_set_source('log_records', 'secret_logs');

-- A registered relation that later loses a column, or disappears, is reported by ops_sources().
ALTER TABLE secret_logs DROP COLUMN tokens_out;
SELECT role, status FROM ops_sources() WHERE role = 'log_records';
DROP TABLE secret_logs;
SELECT role, is_default, status LIKE 'source "log_records" points to a relation that no longer exists (OID %)' AS dangling
  FROM ops_sources() WHERE role = 'log_records';

-- Reset goes back to the extension's own tables.
SELECT ops_reset_source('log_records'), ops_reset_source('usage_logs'), ops_reset_source('groups');
SELECT role, relation, is_default, status FROM ops_sources() ORDER BY role;

-- A typo in an opsmeter setting is an error once the library is loaded.
SET opsmeter.no_such_setting = 1;
DROP OWNED BY opsmeter_regress_nobody;
DROP ROLE opsmeter_regress_nobody;

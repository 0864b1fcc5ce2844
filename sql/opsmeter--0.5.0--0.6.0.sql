-- opsmeter 0.5.0 -> 0.6.0: adds billing from cumulative counters (SPEC section 6): tables
-- opsmeter.billing_sources, billing_source_sync, billing_profiles, billing_checkpoints,
-- billing_minutes, billing_ledger and billing_quota, the functions billing_source_upsert,
-- billing_profile_upsert, billing_ingest, billing_advance_window, billing_window and
-- billing_status, and their comments. Nothing existing changes.
\echo Use "ALTER EXTENSION opsmeter UPDATE TO '0.6.0'" to load this file. \quit


CREATE TABLE opsmeter.billing_sources (
    source_id        text PRIMARY KEY,
    expected_node_id text,
    expected_env     text,
    enabled          boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at       timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE opsmeter.billing_sources IS 'opsmeter billing: exporters whose snapshots billing_ingest accepts; expected_node_id / expected_env, when set, must match every snapshot; write with billing_source_upsert';
SELECT pg_catalog.pg_extension_config_dump('opsmeter.billing_sources', '');

CREATE TABLE opsmeter.billing_source_sync (
    source_id            text PRIMARY KEY REFERENCES opsmeter.billing_sources ON DELETE CASCADE,
    last_completed_until timestamptz,
    last_success_at      timestamptz,
    last_error           text,
    last_error_at        timestamptz,
    last_result          jsonb,
    updated_at           timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE opsmeter.billing_source_sync IS 'opsmeter billing: per source, how far its window has been collected (last_completed_until), the last success, the last error and the last call''s result';
SELECT pg_catalog.pg_extension_config_dump('opsmeter.billing_source_sync', '');

CREATE TABLE opsmeter.billing_profiles (
    account_id           uuid PRIMARY KEY,
    included_quota_bytes bigint NOT NULL DEFAULT 0 CHECK (included_quota_bytes >= 0),
    price_per_byte       numeric NOT NULL DEFAULT 0
                         CHECK (price_per_byte >= 0 AND price_per_byte < 'Infinity'),
    multiplier           numeric NOT NULL DEFAULT 1
                         CHECK (multiplier > '-Infinity' AND multiplier < 'Infinity'),
    pricing_rule_version text NOT NULL DEFAULT 'default',
    created_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at           timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE opsmeter.billing_profiles IS 'opsmeter billing: per-account pricing (included bytes per UTC month, numeric price per byte, multiplier, rule version); accounts without one use the opsmeter.billing_* settings; write with billing_profile_upsert';
SELECT pg_catalog.pg_extension_config_dump('opsmeter.billing_profiles', '');

CREATE TABLE opsmeter.billing_checkpoints (
    storage_node_id  text NOT NULL,
    account_id       uuid NOT NULL,
    sampled_at       timestamptz NOT NULL,
    cumulative_bytes bigint NOT NULL CHECK (cumulative_bytes >= 0),
    updated_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (storage_node_id, account_id)
);
COMMENT ON TABLE opsmeter.billing_checkpoints IS 'opsmeter billing: the last counted sample per (storage node, account); a sample at or before sampled_at is a replay and changes nothing';
SELECT pg_catalog.pg_extension_config_dump('opsmeter.billing_checkpoints', '');

CREATE TABLE opsmeter.billing_minutes (
    storage_node_id text NOT NULL,
    account_id      uuid NOT NULL,
    minute          timestamptz NOT NULL,
    bytes           bigint NOT NULL CHECK (bytes >= 0),
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (storage_node_id, account_id, minute)
);
COMMENT ON TABLE opsmeter.billing_minutes IS 'opsmeter billing: bytes counted per (storage node, account, UTC minute of sampled_at); every new sample of a minute adds to it';
SELECT pg_catalog.pg_extension_config_dump('opsmeter.billing_minutes', '');

CREATE TABLE opsmeter.billing_ledger (
    id                   uuid PRIMARY KEY,
    storage_node_id      text NOT NULL,
    account_id           uuid NOT NULL,
    minute               timestamptz NOT NULL,
    bytes                bigint NOT NULL,
    included_bytes       bigint NOT NULL,
    billable_bytes       bigint NOT NULL,
    amount               numeric NOT NULL,
    pricing_rule_version text NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CHECK (bytes = included_bytes + billable_bytes AND included_bytes >= 0 AND billable_bytes >= 0)
);
CREATE INDEX billing_ledger_account_minute ON opsmeter.billing_ledger (account_id, minute);
COMMENT ON TABLE opsmeter.billing_ledger IS 'opsmeter billing: one row per minute bucket; id = UUIDv5 (URL namespace) of storage_node_id|account_id|YYYY-MM-DDTHH:MM:00Z; bytes = included_bytes + billable_bytes; amount = billable bytes x price_per_byte x multiplier, exact numeric';
SELECT pg_catalog.pg_extension_config_dump('opsmeter.billing_ledger', '');

CREATE TABLE opsmeter.billing_quota (
    account_id           uuid NOT NULL,
    period_start         timestamptz NOT NULL,
    included_quota_bytes bigint NOT NULL CHECK (included_quota_bytes >= 0),
    included_used_bytes  bigint NOT NULL DEFAULT 0 CHECK (included_used_bytes >= 0),
    billable_bytes       bigint NOT NULL DEFAULT 0 CHECK (billable_bytes >= 0),
    amount               numeric NOT NULL DEFAULT 0,
    updated_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (account_id, period_start)
);
COMMENT ON TABLE opsmeter.billing_quota IS 'opsmeter billing: per account and UTC calendar month, the included quota in force, what of it is used, billable bytes and amount; always the sums of the account''s ledger rows of the month';
SELECT pg_catalog.pg_extension_config_dump('opsmeter.billing_quota', '');

CREATE FUNCTION billing_source_upsert(source_id text, expected_node_id text DEFAULT NULL,
                                      expected_env text DEFAULT NULL, enabled boolean DEFAULT true)
RETURNS opsmeter.billing_sources
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r opsmeter.billing_sources;
BEGIN
    IF source_id IS NULL OR source_id = '' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = 'source_id must be a non-empty text';
    END IF;
    -- an existing source keeps an expectation given as NULL; '' clears it
    INSERT INTO opsmeter.billing_sources AS s (source_id, expected_node_id, expected_env, enabled)
    VALUES ($1, nullif($2, ''), nullif($3, ''), coalesce($4, true))
    ON CONFLICT ON CONSTRAINT billing_sources_pkey DO UPDATE
       SET expected_node_id = CASE WHEN $2 IS NULL THEN s.expected_node_id ELSE EXCLUDED.expected_node_id END,
           expected_env = CASE WHEN $3 IS NULL THEN s.expected_env ELSE EXCLUDED.expected_env END,
           enabled = EXCLUDED.enabled, updated_at = pg_catalog.now()
    RETURNING s.* INTO r;
    RETURN r;
END
$fn$;

CREATE FUNCTION billing_profile_upsert(account_id uuid, included_quota_bytes bigint DEFAULT 0,
                                       price_per_byte numeric DEFAULT 0, multiplier numeric DEFAULT 1,
                                       pricing_rule_version text DEFAULT 'default')
RETURNS opsmeter.billing_profiles
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r opsmeter.billing_profiles;
BEGIN
    IF account_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'account_id must not be NULL';
    END IF;
    IF included_quota_bytes IS NULL OR included_quota_bytes < 0 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = pg_catalog.format('included_quota_bytes must be an integer >= 0, got %s', coalesce(included_quota_bytes::text, 'NULL'));
    END IF;
    -- NaN compares greater than every number, Infinity too: both are refused
    IF price_per_byte IS NULL OR NOT (price_per_byte >= 0 AND price_per_byte < 'Infinity') THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = pg_catalog.format('price_per_byte must be a finite number >= 0, got %s', coalesce(price_per_byte::text, 'NULL'));
    END IF;
    IF multiplier IS NULL OR NOT (multiplier > '-Infinity' AND multiplier < 'Infinity') THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = pg_catalog.format('multiplier must be a finite number (<= 0 means 1), got %s', coalesce(multiplier::text, 'NULL'));
    END IF;
    INSERT INTO opsmeter.billing_profiles AS p
           (account_id, included_quota_bytes, price_per_byte, multiplier, pricing_rule_version)
    VALUES ($1, $2, $3, $4, coalesce(nullif($5, ''), 'default'))
    ON CONFLICT ON CONSTRAINT billing_profiles_pkey DO UPDATE
       SET included_quota_bytes = EXCLUDED.included_quota_bytes,
           price_per_byte = EXCLUDED.price_per_byte, multiplier = EXCLUDED.multiplier,
           pricing_rule_version = EXCLUDED.pricing_rule_version, updated_at = pg_catalog.now()
    RETURNING p.* INTO r;
    RETURN r;
END
$fn$;
/* </end connected objects> */

/* <begin connected objects> */
CREATE  FUNCTION "billing_advance_window"(
	"source_id" TEXT, /* & str */
	"page" jsonb /* JsonbText */
) RETURNS jsonb /* JsonB */
STRICT VOLATILE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'billing_advance_window_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
CREATE  FUNCTION "billing_ingest"(
	"source_id" TEXT, /* & str */
	"snapshots" jsonb /* JsonbText */
) RETURNS jsonb /* JsonB */
STRICT VOLATILE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'billing_ingest_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
CREATE  FUNCTION "billing_window"(
	"source_id" TEXT /* & str */
) RETURNS TABLE (
	"since" timestamp with time zone,  /* TimestampWithTimeZone */
	"until" timestamp with time zone  /* TimestampWithTimeZone */
)
STRICT STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'billing_window_wrapper';
/* </end connected objects> */

/* <begin connected objects> */

CREATE FUNCTION billing_status()
RETURNS TABLE (source_id text, enabled boolean, expected_node_id text, expected_env text,
               window_since timestamptz, window_until timestamptz,
               last_completed_until timestamptz, last_success_at timestamptz,
               last_error text, last_error_at timestamptz, last_result jsonb, healthy boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT s.source_id, s.enabled, s.expected_node_id, s.expected_env, w.since, w.until,
           y.last_completed_until, y.last_success_at, y.last_error, y.last_error_at, y.last_result,
           coalesce(y.last_result ->> 'status', '') <> 'error'
      FROM opsmeter.billing_sources s
      LEFT JOIN opsmeter.billing_source_sync y ON y.source_id = s.source_id
     CROSS JOIN LATERAL @extschema@.billing_window(s.source_id) w
     ORDER BY s.source_id
$fn$;
/* </end connected objects> */

/* <begin connected objects> */
COMMENT ON FUNCTION billing_source_upsert(text, text, text, boolean) IS 'opsmeter billing: register or change an exporter source (expected_node_id / expected_env checked against every snapshot where set; for an existing source NULL keeps the stored value and '''' clears it; enabled); returns the row';
COMMENT ON FUNCTION billing_profile_upsert(uuid, bigint, numeric, numeric, text) IS 'opsmeter billing: set an account''s pricing: included bytes per UTC month (>= 0), finite numeric price per billable byte (>= 0), finite multiplier (<= 0 means 1), rule version; returns the row';
COMMENT ON FUNCTION billing_ingest(text, jsonb) IS 'opsmeter billing: ingest a JSON array of exporter snapshots (node_id, env, sampled_at, samples of account_id + cumulative_bytes) for a source: deltas against checkpoints (replays change nothing; resets per opsmeter.billing_reset_policy) into minute buckets, ledger rows with UUIDv5 ids and monthly quota; returns the job result (status ok / partial / error), also stored as the source''s last_result';
COMMENT ON FUNCTION billing_advance_window(text, jsonb) IS 'opsmeter billing: ingest one page of a source''s window ({since, until, snapshots, has_more, next_cursor}) and move last_completed_until to next_cursor (has_more) or until, never backwards; since > until moves it with no work; recorded errors (nothing billed or moved): has_more with an empty, non-RFC 3339 or out-of-window next_cursor, an until in the future, a since after last_completed_until, a snapshot after until; returns the job result';
COMMENT ON FUNCTION billing_window(text) IS 'opsmeter billing: the window a source''s collector should fetch next: since = last_completed_until or now() - opsmeter.billing_lookback, until = now() - opsmeter.billing_delay';
COMMENT ON FUNCTION billing_status() IS 'opsmeter billing: one row per source: enabled, expected node/env, current window, last completed, last success, last error, last result, and healthy (the last result is not an error)';

//! Billing from cumulative counters (SPEC §6): exporters' snapshots of per-account cumulative
//! byte counters become minute buckets, a ledger with deterministic ids and monthly quota
//! state, one call per page of snapshots.
//!
//! A call reads the state it needs in a few set-based statements (checkpoints of its keys,
//! profiles, quota rows), lets [`crate::cores::billing`] apply the rules, and writes the result
//! in one statement. Calls that bill the same storage node queue on a transaction advisory lock
//! per node; quota rows, which several nodes share, are locked in key order by an upsert, so
//! overlapping calls never double-bill, never deadlock and never hit a unique violation.

use crate::cores::billing::{self as bc, Advance, BillingError, Checkpoint, Class, QuotaState};
use crate::error::{OrRaise, SqlError};
use crate::rollups::{tstz, us};
use crate::types::JsonbText;
use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode};
use serde_json::{json, Value};
use std::collections::HashMap;

impl SqlError for BillingError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self.class() {
            Class::InvalidParameter => ERRCODE_INVALID_PARAMETER_VALUE,
            Class::TextRepresentation => ERRCODE_INVALID_TEXT_REPRESENTATION,
            Class::DatetimeFormat => ERRCODE_INVALID_DATETIME_FORMAT,
            Class::OutOfRange => ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
        }
    }
    fn hint(&self) -> Option<String> {
        BillingError::hint(self)
    }
}

/// First key of the per-storage-node advisory locks ('opsb'); the second is hashtext(node).
const NODE_LOCK_CLASS: i32 = 0x6f70_7362;

extension_sql!(
    r#"
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
"#,
    name = "billing_tables",
    requires = ["queue_tables"]
);

extension_sql!(
    r#"
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
"#,
    name = "billing_status",
    requires = ["billing_tables", billing_window]
);

/// A registered source and how far its window has been collected.
struct Source {
    expected_node_id: Option<String>,
    expected_env: Option<String>,
    enabled: bool,
    last_completed_until: Option<i64>,
}

/// The source, or 22023 when it is not registered.
fn lookup(source_id: &str) -> Source {
    let row = Spi::connect(|c| {
        let mut rows = c.select(
            "SELECT s.expected_node_id, s.expected_env, s.enabled, y.last_completed_until
               FROM opsmeter.billing_sources s
               LEFT JOIN opsmeter.billing_source_sync y ON y.source_id = s.source_id
              WHERE s.source_id = $1",
            Some(1),
            &[source_id.into()],
        )?;
        match rows.next() {
            None => Ok(None),
            Some(r) => Ok(Some(Source {
                expected_node_id: r.get::<String>(1)?,
                expected_env: r.get::<String>(2)?,
                enabled: r.get::<bool>(3)?.unwrap_or(false),
                last_completed_until: r.get::<TimestampWithTimeZone>(4)?.map(us),
            })),
        }
    })
    .unwrap_or_else(|e: pgrx::spi::Error| {
        pgrx::error!("opsmeter: could not read source {source_id}: {e}")
    });
    row.unwrap_or_else(|| Err(BillingError::unknown_source(source_id)).or_raise())
}

/// The source, or 22023 when it is unknown or disabled.
fn source(source_id: &str) -> Source {
    let src = lookup(source_id);
    if !src.enabled {
        return Err(BillingError::Argument {
            arg: "source_id",
            expected: "an enabled source",
            got: format!("\"{source_id}\" (disabled)"),
        })
        .or_raise();
    }
    src
}

/// What one ingest did, before the source's sync state is written.
struct Outcome {
    status: &'static str,
    plan: bc::DeltaPlan,
    written_minutes: i64,
    /// the source failure (rule 2, or a bad page cursor)
    failure: Option<String>,
}

impl Outcome {
    fn failed(message: String) -> Outcome {
        Outcome {
            status: "error",
            plan: bc::DeltaPlan::default(),
            written_minutes: 0,
            failure: Some(message),
        }
    }
}

fn spi_err<T>(what: &str) -> impl Fn(pgrx::spi::Error) -> T + '_ {
    move |e| pgrx::error!("opsmeter: could not {what}: {e}")
}

/// Locks the storage nodes a call bills (in lock-key order). The statements after it read with
/// a fresh snapshot, so a checkpoint another call wrote while we waited is seen: pgrx runs SPI
/// read-only (on the caller's snapshot) only until the transaction has an xid, and running
/// this statement through `Spi::run` assigns one.
fn lock_nodes(nodes: Vec<String>) {
    Spi::run_with_args(
        &format!(
            "SELECT pg_catalog.count(pg_catalog.pg_advisory_xact_lock({NODE_LOCK_CLASS}, s.h))
               FROM (SELECT DISTINCT pg_catalog.hashtext(n) AS h
                       FROM pg_catalog.unnest($1::text[]) n ORDER BY 1) s"
        ),
        &[nodes.into()],
    )
    .unwrap_or_else(spi_err("lock the storage nodes"));
}

fn read_checkpoints(keys: &[bc::Key]) -> HashMap<bc::Key, Checkpoint> {
    let nodes: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
    let accounts: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
    Spi::connect(|c| {
        let mut out = HashMap::with_capacity(keys.len());
        for r in c.select(
            "SELECT c.storage_node_id, c.account_id::text, c.sampled_at, c.cumulative_bytes
               FROM ROWS FROM (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::text[]::uuid[]))
                    AS k(node, account)
               JOIN opsmeter.billing_checkpoints c
                 ON c.storage_node_id = k.node AND c.account_id = k.account",
            None,
            &[nodes.into(), accounts.into()],
        )? {
            let node = r.get::<String>(1)?.unwrap_or_default();
            let account = r.get::<String>(2)?.unwrap_or_default();
            let at = r
                .get::<TimestampWithTimeZone>(3)?
                .map(us)
                .unwrap_or(i64::MIN);
            let value = r.get::<i64>(4)?.unwrap_or(0);
            out.insert(
                (node, account),
                Checkpoint {
                    sampled_at: at,
                    cumulative_bytes: value,
                },
            );
        }
        Ok(out)
    })
    .unwrap_or_else(|e: pgrx::spi::Error| spi_err("read checkpoints")(e))
}

/// The effective pricing of each account (profile, else the settings).
fn pricing(accounts: &[String], defaults: &bc::Pricing) -> HashMap<String, bc::Pricing> {
    let profiles: HashMap<String, bc::Pricing> = Spi::connect(|c| {
        let mut out = HashMap::new();
        for r in c.select(
            "SELECT account_id::text, included_quota_bytes, price_per_byte::text, multiplier::text,
                    pricing_rule_version
               FROM opsmeter.billing_profiles WHERE account_id = ANY ($1::text[]::uuid[])",
            None,
            &[accounts.to_vec().into()],
        )? {
            out.insert(
                r.get::<String>(1)?.unwrap_or_default(),
                bc::Pricing {
                    included_quota_bytes: r.get::<i64>(2)?.unwrap_or(0),
                    price_per_byte: r.get::<String>(3)?.unwrap_or_else(|| "0".into()),
                    multiplier: r.get::<String>(4)?.unwrap_or_else(|| "1".into()),
                    pricing_rule_version: r.get::<String>(5)?.unwrap_or_default(),
                },
            );
        }
        Ok(out)
    })
    .unwrap_or_else(|e: pgrx::spi::Error| spi_err("read billing profiles")(e));
    accounts
        .iter()
        .map(|a| (a.clone(), bc::effective_pricing(profiles.get(a), defaults)))
        .collect()
}

/// Creates the missing quota rows of these (account, period) keys and locks them all, in key
/// order, returning what each period has used so far.
fn lock_quota(
    keys: &[(String, i64)],
    prices: &HashMap<String, bc::Pricing>,
) -> HashMap<(String, i64), QuotaState> {
    let accounts: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
    let periods: Vec<TimestampWithTimeZone> = keys.iter().map(|k| tstz(k.1)).collect();
    let quota: Vec<i64> = keys
        .iter()
        .map(|k| prices[&k.0].included_quota_bytes)
        .collect();
    Spi::connect_mut(|c| {
        let mut out = HashMap::with_capacity(keys.len());
        for r in c.update(
            "INSERT INTO opsmeter.billing_quota AS q
                    (account_id, period_start, included_quota_bytes, included_used_bytes,
                     billable_bytes, amount, updated_at)
             SELECT u.account::uuid, u.period, u.quota, 0, 0, 0, pg_catalog.now()
               FROM ROWS FROM (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::timestamptz[]),
                               pg_catalog.unnest($3::int8[])) AS u(account, period, quota)
              ORDER BY u.account::uuid, u.period
             ON CONFLICT (account_id, period_start) DO UPDATE
                SET included_quota_bytes = EXCLUDED.included_quota_bytes
             RETURNING q.account_id::text, q.period_start, q.included_quota_bytes,
                       q.included_used_bytes",
            None,
            &[accounts.into(), periods.into(), quota.into()],
        )? {
            let account = r.get::<String>(1)?.unwrap_or_default();
            let period = r.get::<TimestampWithTimeZone>(2)?.map(us).unwrap_or(0);
            out.insert(
                (account, period),
                QuotaState {
                    included_quota_bytes: r.get::<i64>(3)?.unwrap_or(0),
                    included_used_bytes: r.get::<i64>(4)?.unwrap_or(0),
                },
            );
        }
        Ok(out)
    })
    .unwrap_or_else(|e: pgrx::spi::Error| spi_err("lock quota rows")(e))
}

/// Writes checkpoints, minute buckets, ledger rows and quota rows in one statement.
fn write(plan: &bc::DeltaPlan, alloc: &bc::Allocation, prices: &HashMap<String, bc::Pricing>) {
    let cp_node: Vec<&str> = plan.checkpoints.iter().map(|(k, _)| k.0.as_str()).collect();
    let cp_account: Vec<&str> = plan.checkpoints.iter().map(|(k, _)| k.1.as_str()).collect();
    let cp_at: Vec<TimestampWithTimeZone> = plan
        .checkpoints
        .iter()
        .map(|(_, c)| tstz(c.sampled_at))
        .collect();
    let cp_value: Vec<i64> = plan
        .checkpoints
        .iter()
        .map(|(_, c)| c.cumulative_bytes)
        .collect();

    let l = &alloc.ledger;
    let l_id: Vec<String> = l
        .iter()
        .map(|x| bc::ledger_id(&x.node, &x.account, x.minute))
        .collect();
    let l_node: Vec<&str> = l.iter().map(|x| x.node.as_str()).collect();
    let l_account: Vec<&str> = l.iter().map(|x| x.account.as_str()).collect();
    let l_minute: Vec<TimestampWithTimeZone> = l.iter().map(|x| tstz(x.minute)).collect();
    let l_bytes: Vec<i64> = l.iter().map(|x| x.bytes).collect();
    let l_included: Vec<i64> = l.iter().map(|x| x.included).collect();
    let l_billable: Vec<i64> = l.iter().map(|x| x.billable).collect();

    let q = &alloc.quota;
    let q_account: Vec<&str> = q.iter().map(|x| x.account.as_str()).collect();
    let q_period: Vec<TimestampWithTimeZone> = q.iter().map(|x| tstz(x.period_start)).collect();
    let q_included: Vec<i64> = q.iter().map(|x| x.included).collect();
    let q_billable: Vec<i64> = q.iter().map(|x| x.billable).collect();

    // one price per account, joined in SQL (the ledger and the quota multiply the same way)
    let mut p_account: Vec<&str> = Vec::with_capacity(prices.len());
    let mut p_price: Vec<&str> = Vec::with_capacity(prices.len());
    let mut p_mult: Vec<&str> = Vec::with_capacity(prices.len());
    let mut p_version: Vec<&str> = Vec::with_capacity(prices.len());
    for (a, p) in prices {
        p_account.push(a);
        p_price.push(&p.price_per_byte);
        p_mult.push(&p.multiplier);
        p_version.push(&p.pricing_rule_version);
    }

    Spi::run_with_args(
        "WITH price AS MATERIALIZED (
             SELECT p.account::uuid AS account_id, p.price::numeric * p.mult::numeric AS unit,
                    p.version
               FROM ROWS FROM (pg_catalog.unnest($16::text[]), pg_catalog.unnest($17::text[]),
                               pg_catalog.unnest($18::text[]), pg_catalog.unnest($19::text[]))
                    AS p(account, price, mult, version)),
         cp AS (
             INSERT INTO opsmeter.billing_checkpoints AS c
                    (storage_node_id, account_id, sampled_at, cumulative_bytes, updated_at)
             SELECT u.node, u.account::uuid, u.at, u.value, pg_catalog.now()
               FROM ROWS FROM (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::text[]),
                               pg_catalog.unnest($3::timestamptz[]), pg_catalog.unnest($4::int8[]))
                    AS u(node, account, at, value)
             ON CONFLICT (storage_node_id, account_id) DO UPDATE
                SET sampled_at = EXCLUDED.sampled_at, cumulative_bytes = EXCLUDED.cumulative_bytes,
                    updated_at = EXCLUDED.updated_at),
         adds AS MATERIALIZED (
             SELECT u.id::uuid AS id, u.node, u.account::uuid AS account_id, u.minute, u.bytes,
                    u.included, u.billable
               FROM ROWS FROM (pg_catalog.unnest($5::text[]), pg_catalog.unnest($6::text[]),
                               pg_catalog.unnest($7::text[]), pg_catalog.unnest($8::timestamptz[]),
                               pg_catalog.unnest($9::int8[]), pg_catalog.unnest($10::int8[]),
                               pg_catalog.unnest($11::int8[]))
                    AS u(id, node, account, minute, bytes, included, billable)),
         mb AS (
             INSERT INTO opsmeter.billing_minutes AS b
                    (storage_node_id, account_id, minute, bytes, created_at, updated_at)
             SELECT a.node, a.account_id, a.minute, a.bytes, pg_catalog.now(), pg_catalog.now()
               FROM adds a
             ON CONFLICT (storage_node_id, account_id, minute) DO UPDATE
                SET bytes = b.bytes + EXCLUDED.bytes, updated_at = EXCLUDED.updated_at),
         lg AS (
             INSERT INTO opsmeter.billing_ledger AS l
                    (id, storage_node_id, account_id, minute, bytes, included_bytes, billable_bytes,
                     amount, pricing_rule_version, created_at, updated_at)
             SELECT a.id, a.node, a.account_id, a.minute, a.bytes, a.included, a.billable,
                    a.billable::numeric * p.unit, p.version, pg_catalog.now(), pg_catalog.now()
               FROM adds a JOIN price p ON p.account_id = a.account_id
             ON CONFLICT (id) DO UPDATE
                SET bytes = l.bytes + EXCLUDED.bytes,
                    included_bytes = l.included_bytes + EXCLUDED.included_bytes,
                    billable_bytes = l.billable_bytes + EXCLUDED.billable_bytes,
                    amount = l.amount + EXCLUDED.amount,
                    pricing_rule_version = EXCLUDED.pricing_rule_version,
                    updated_at = EXCLUDED.updated_at)
         UPDATE opsmeter.billing_quota q
            SET included_used_bytes = q.included_used_bytes + u.included,
                billable_bytes = q.billable_bytes + u.billable,
                amount = q.amount + u.billable::numeric * p.unit,
                updated_at = pg_catalog.now()
           FROM ROWS FROM (pg_catalog.unnest($12::text[]), pg_catalog.unnest($13::timestamptz[]),
                           pg_catalog.unnest($14::int8[]), pg_catalog.unnest($15::int8[]))
                AS u(account, period, included, billable)
           JOIN price p ON p.account_id = u.account::uuid
          WHERE q.account_id = u.account::uuid AND q.period_start = u.period",
        &[
            cp_node.into(),
            cp_account.into(),
            cp_at.into(),
            cp_value.into(),
            l_id.into(),
            l_node.into(),
            l_account.into(),
            l_minute.into(),
            l_bytes.into(),
            l_included.into(),
            l_billable.into(),
            q_account.into(),
            q_period.into(),
            q_included.into(),
            q_billable.into(),
            p_account.into(),
            p_price.into(),
            p_mult.into(),
            p_version.into(),
        ],
    )
    .unwrap_or_else(spi_err("write the billing rows"));
}

/// Rules 2–11 for one page of snapshots of a checked source. Writes nothing on a source failure.
fn ingest(src: &Source, at: &str, snapshots: &[bc::Snapshot]) -> Outcome {
    if let Some(m) = bc::source_mismatch_at(
        at,
        snapshots,
        src.expected_node_id.as_deref(),
        src.expected_env.as_deref(),
    ) {
        return Outcome::failed(m);
    }
    let (rules, defaults) = crate::gucs::billing_settings().or_raise();
    let keys = bc::sample_keys(snapshots);
    let mut nodes: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
    nodes.dedup();
    if !nodes.is_empty() {
        lock_nodes(nodes);
    }
    let checkpoints = if keys.is_empty() {
        HashMap::new()
    } else {
        read_checkpoints(&keys)
    };
    let plan = bc::plan_deltas_at(at, snapshots, &checkpoints, rules);
    let quota_keys = bc::quota_keys(&plan.deltas);
    let mut accounts: Vec<String> = quota_keys.iter().map(|k| k.0.clone()).collect();
    accounts.dedup();
    let (alloc, prices) = if plan.deltas.is_empty() {
        (bc::Allocation::default(), HashMap::new())
    } else {
        let prices = pricing(&accounts, &defaults);
        let quota = lock_quota(&quota_keys, &prices);
        (bc::allocate(&plan.deltas, &quota).or_raise(), prices)
    };
    if !plan.checkpoints.is_empty() || !alloc.ledger.is_empty() {
        write(&plan, &alloc, &prices);
    }
    Outcome {
        status: if plan.skipped > 0 { "partial" } else { "ok" },
        written_minutes: alloc.ledger.len() as i64,
        plan,
        failure: None,
    }
}

fn rfc3339(t: Option<TimestampWithTimeZone>) -> Value {
    t.map_or(Value::Null, |t| Value::String(bc::time_text(us(t))))
}

/// Records the outcome in the source's sync state (moving last_completed_until to `advance_to`,
/// never backwards) and returns the job result, which is also stored as `last_result`.
fn finish(source_id: &str, out: Outcome, advance_to: Option<i64>) -> Value {
    let ok = out.failure.is_none();
    let row = Spi::connect_mut(|c| {
        let mut rows = c.update(
            "INSERT INTO opsmeter.billing_source_sync AS y
                    (source_id, last_completed_until, last_success_at, last_error, last_error_at,
                     updated_at)
             VALUES ($1, $2, CASE WHEN $3 THEN pg_catalog.now() END, $4,
                     CASE WHEN $4 IS NOT NULL THEN pg_catalog.now() END, pg_catalog.now())
             ON CONFLICT (source_id) DO UPDATE
                SET last_completed_until = GREATEST(y.last_completed_until, EXCLUDED.last_completed_until),
                    last_success_at = coalesce(EXCLUDED.last_success_at, y.last_success_at),
                    last_error = coalesce(EXCLUDED.last_error, y.last_error),
                    last_error_at = coalesce(EXCLUDED.last_error_at, y.last_error_at),
                    updated_at = EXCLUDED.updated_at
             RETURNING last_completed_until, last_success_at, last_error",
            Some(1),
            &[
                source_id.into(),
                advance_to.map(tstz).into(),
                ok.into(),
                out.failure.clone().into(),
            ],
        )?;
        let r = rows.next().expect("an upsert returns its row");
        Ok((
            r.get::<TimestampWithTimeZone>(1)?,
            r.get::<TimestampWithTimeZone>(2)?,
            r.get::<String>(3)?,
        ))
    })
    .unwrap_or_else(|e: pgrx::spi::Error| spi_err("record the source's sync state")(e));
    let mut errors: Vec<Value> = out.plan.errors.into_iter().map(Value::String).collect();
    if let Some(f) = &out.failure {
        errors.insert(0, Value::String(f.clone()));
    }
    let result = json!({
        "status": out.status,
        "processed_samples": out.plan.processed,
        "replayed_samples": out.plan.replayed,
        "reset_samples": out.plan.resets,
        "skipped_samples": out.plan.skipped,
        "written_minutes": out.written_minutes,
        "replayed_minutes": out.plan.replayed_minutes,
        "errors": errors,
        "source": {
            "source_id": source_id,
            "last_completed_until": rfc3339(row.0),
            "last_success_at": rfc3339(row.1),
            "last_error": row.2,
        },
    });
    Spi::run_with_args(
        "UPDATE opsmeter.billing_source_sync SET last_result = $2 WHERE source_id = $1",
        &[source_id.into(), JsonB(result.clone()).into()],
    )
    .unwrap_or_else(spi_err("record the job result"));
    result
}

/// Ingests a page of exporter snapshots for a source (the rules are in `docs/billing.md`):
/// per (storage node, account) in sampled_at order, the delta against the checkpoint goes to
/// its minute bucket, its ledger row and the account's monthly quota. Returns the job result
/// (status ok / partial / error), also stored as the source's last_result. A snapshot from an
/// unexpected node or env is the source's failure: nothing is billed, the error is recorded,
/// and the result says so (not an ERROR).
#[pg_extern(volatile, strict)]
#[search_path(pg_catalog, pg_temp)]
fn billing_ingest(source_id: &str, snapshots: JsonbText) -> JsonB {
    let snapshots = bc::parse_snapshots_text(&snapshots.0).or_raise();
    let src = source(source_id);
    let out = ingest(&src, "snapshots", &snapshots);
    JsonB(finish(source_id, out, None))
}

/// Ingests one page of a source's window (`{"since", "until", "snapshots", "has_more",
/// "next_cursor"}`) and moves the source's last_completed_until to next_cursor when has_more,
/// else to until (never backwards). since > until moves it to until with no work. The source's
/// failure (recorded, nothing billed, nothing moved): has_more with an empty or non-RFC 3339
/// next_cursor, or one not in (since, until]; an until in the future; a since after the source's
/// last_completed_until (a gap); a snapshot sampled after until.
#[pg_extern(volatile, strict)]
#[search_path(pg_catalog, pg_temp)]
fn billing_advance_window(source_id: &str, page: JsonbText) -> JsonB {
    let page = bc::parse_page_text(&page.0).or_raise();
    let src = source(source_id);
    // SAFETY: reads this statement's start time (statement_timestamp()); no side effects.
    let now = unsafe { pgrx::pg_sys::GetCurrentStatementStartTimestamp() };
    let result = match bc::next_position(&page, src.last_completed_until, now) {
        Advance::Skip(until) => finish(
            source_id,
            Outcome {
                status: "ok",
                plan: bc::DeltaPlan::default(),
                written_minutes: 0,
                failure: None,
            },
            Some(until),
        ),
        Advance::Fail(message) => finish(source_id, Outcome::failed(message), None),
        Advance::Ingest(to) => {
            let out = ingest(&src, "page.snapshots", &page.snapshots);
            let advance = out.failure.is_none().then_some(to);
            finish(source_id, out, advance)
        }
    };
    JsonB(result)
}

/// The window a source's collector should fetch next: since = its last_completed_until, or
/// now() − `opsmeter.billing_lookback` when it has none; until = now() −
/// `opsmeter.billing_delay`. 22023 for an unknown source.
#[pg_extern(stable, strict)]
#[search_path(pg_catalog, pg_temp)]
fn billing_window(
    source_id: &str,
) -> TableIterator<
    'static,
    (
        name!(since, TimestampWithTimeZone),
        name!(until, TimestampWithTimeZone),
    ),
> {
    let last = lookup(source_id).last_completed_until;
    // SAFETY: reads the transaction's start time (what now() returns); no side effects.
    let now = unsafe { pgrx::pg_sys::GetCurrentTransactionStartTimestamp() };
    let (lookback, delay) = crate::gucs::billing_window_us();
    let (since, until) = bc::window(last, now, lookback, delay);
    TableIterator::once((tstz(since), tstz(until)))
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    const A: &str = "6f1c7a52-9a7e-4c5b-8f0e-0d6b2a1c3e4f";

    fn ingest(source: &str, snapshots: &str) -> serde_json::Value {
        Spi::get_one_with_args::<pgrx::JsonB>(
            "SELECT billing_ingest($1, $2::jsonb)",
            &[source.into(), snapshots.into()],
        )
        .unwrap()
        .unwrap()
        .0
    }

    fn count(sql: &str) -> i64 {
        Spi::get_one::<i64>(sql).unwrap().unwrap()
    }

    fn snap(at: &str, value: i64) -> String {
        format!(
            r#"{{"node_id":"n1","env":"prod","sampled_at":"{at}","samples":[{{"account_id":"{A}","cumulative_bytes":{value}}}]}}"#
        )
    }

    #[pg_test]
    fn billing_ingest_bills_and_replays_change_nothing() {
        Spi::run("SELECT billing_source_upsert('s1', 'n1', 'prod')").unwrap();
        Spi::run(&format!(
            "SELECT billing_profile_upsert('{A}', 100, 0.5, 2, 'v1')"
        ))
        .unwrap();
        let page = format!(
            "[{}, {}, {}]",
            snap("2026-11-30T10:00:50Z", 150),
            snap("2026-11-30T10:00:10Z", 60),
            snap("2026-11-30T10:01:05Z", 200)
        );
        let r = ingest("s1", &page);
        assert_eq!(r["status"], "ok");
        assert_eq!(r["processed_samples"], 3);
        assert_eq!(r["written_minutes"], 2);
        // 60 + 90 in 10:00, 50 in 10:01; 100 included, 100 billable at 0.5 x 2
        let ledger = Spi::get_one::<String>(
            "SELECT string_agg(format('%s %s %s %s %s', to_char(minute AT TIME ZONE 'UTC', 'HH24:MI'),
                    bytes, included_bytes, billable_bytes, amount), '; ' ORDER BY minute)
               FROM opsmeter.billing_ledger",
        )
        .unwrap()
        .unwrap();
        assert_eq!(ledger, "10:00 150 100 50 50.0; 10:01 50 0 50 50.0");
        let quota = Spi::get_one::<String>(
            "SELECT format('%s %s %s', included_used_bytes, billable_bytes, amount) FROM opsmeter.billing_quota",
        )
        .unwrap()
        .unwrap();
        assert_eq!(quota, "100 100 100.0");
        let before = Spi::get_one::<String>(
            "SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM (
                 SELECT row(l.*)::text AS t FROM opsmeter.billing_ledger l
                 UNION ALL SELECT row(q.*)::text FROM opsmeter.billing_quota q
                 UNION ALL SELECT row(c.*)::text FROM opsmeter.billing_checkpoints c
                 UNION ALL SELECT row(m.*)::text FROM opsmeter.billing_minutes m) s",
        )
        .unwrap();
        let again = ingest("s1", &page);
        assert_eq!(again["replayed_samples"], 3);
        assert_eq!(again["written_minutes"], 0);
        let after = Spi::get_one::<String>(
            "SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM (
                 SELECT row(l.*)::text AS t FROM opsmeter.billing_ledger l
                 UNION ALL SELECT row(q.*)::text FROM opsmeter.billing_quota q
                 UNION ALL SELECT row(c.*)::text FROM opsmeter.billing_checkpoints c
                 UNION ALL SELECT row(m.*)::text FROM opsmeter.billing_minutes m) s",
        )
        .unwrap();
        assert_eq!(before, after);
    }

    #[pg_test]
    fn billing_ledger_id_is_uuidv5_of_the_bucket() {
        Spi::run("SELECT billing_source_upsert('s1')").unwrap();
        ingest("s1", &format!("[{}]", snap("2026-11-30T09:05:30Z", 10)));
        let id = Spi::get_one::<String>("SELECT id::text FROM opsmeter.billing_ledger")
            .unwrap()
            .unwrap();
        assert_eq!(
            id,
            crate::cores::billing::ledger_id(
                "prod:n1",
                A,
                crate::cores::records::parse_rfc3339("2026-11-30T09:05:00Z").unwrap()
            )
        );
    }

    #[pg_test]
    fn billing_source_failure_is_recorded_not_raised() {
        Spi::run("SELECT billing_source_upsert('s1', 'n2')").unwrap();
        let r = ingest("s1", &format!("[{}]", snap("2026-11-30T10:00:00Z", 10)));
        assert_eq!(r["status"], "error");
        assert_eq!(count("SELECT count(*) FROM opsmeter.billing_ledger"), 0);
        assert_eq!(
            count("SELECT count(*) FROM opsmeter.billing_checkpoints"),
            0
        );
        assert_eq!(
            count("SELECT count(*) FROM opsmeter.billing_source_sync WHERE last_error LIKE '%expects \"n2\"%' AND last_result->>'status' = 'error'"),
            1
        );
    }

    #[pg_test(
        error = "source_id must be a source registered with billing_source_upsert, got \"nope\" (unknown)"
    )]
    fn billing_unknown_source_is_an_error() {
        ingest("nope", "[]");
    }

    #[pg_test(error = "snapshots[0].samples[0].cumulative_bytes must be >= 0, got -5")]
    fn billing_bad_sample_is_an_error() {
        Spi::run("SELECT billing_source_upsert('s1')").unwrap();
        ingest(
            "s1",
            &format!(
                r#"[{{"node_id":"n","sampled_at":"2026-11-30T10:00:00Z","samples":[{{"account_id":"{A}","cumulative_bytes":-5}}]}}]"#
            ),
        );
    }

    #[pg_test]
    fn billing_advance_window_moves_the_cursor() {
        Spi::run("SELECT billing_source_upsert('s1')").unwrap();
        let page = |body: &str| {
            Spi::get_one_with_args::<pgrx::JsonB>(
                "SELECT billing_advance_window('s1', $1::jsonb)",
                &[body.into()],
            )
            .unwrap()
            .unwrap()
            .0
        };
        let r = page(&format!(
            r#"{{"since":"2026-11-30T10:00:00Z","until":"2026-11-30T11:00:00Z","has_more":true,"next_cursor":"2026-11-30T10:30:00Z","snapshots":[{}]}}"#,
            snap("2026-11-30T10:10:00Z", 5)
        ));
        assert_eq!(r["source"]["last_completed_until"], "2026-11-30T10:30:00Z");
        let r = page(
            r#"{"since":"2026-11-30T10:30:00Z","until":"2026-11-30T11:00:00Z","has_more":true,"next_cursor":""}"#,
        );
        assert_eq!(r["status"], "error");
        assert_eq!(r["source"]["last_completed_until"], "2026-11-30T10:30:00Z");
        let since = Spi::get_one::<String>(
            "SELECT to_char(since AT TIME ZONE 'UTC', 'HH24:MI') FROM billing_window('s1')",
        )
        .unwrap()
        .unwrap();
        assert_eq!(since, "10:30");
        let r = page(
            r#"{"since":"2026-11-30T10:30:00Z","until":"2026-11-30T11:00:00Z","has_more":false}"#,
        );
        assert_eq!(r["source"]["last_completed_until"], "2026-11-30T11:00:00Z");
        assert_eq!(
            count("SELECT count(*) FROM billing_status() WHERE healthy AND last_result->>'status' = 'ok'"),
            1
        );
    }
}

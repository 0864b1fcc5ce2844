//! The request-record store (SPEC §3): per-request records of a gateway's upstream keys in a
//! table range-partitioned by UTC day, the latest success/failure per key kept current as
//! records arrive, circuit-breaker states, and bucketed history with `ops_sketch` percentiles.
//! Rules and SQL text live in [`crate::cores::records`]; this file runs them through SPI.

use crate::cores::records::{self as rc, Class, HistoryFilter, RecordError};
use crate::error::{OrRaise, SqlError};
use crate::rollups::{ext_schema, tstz, us, with_hash_aggregation};
use crate::types::JsonbDatum;
use pgrx::datum::Date;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

impl SqlError for RecordError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self.class() {
            Class::InvalidParameter => ERRCODE_INVALID_PARAMETER_VALUE,
            Class::DatetimeFormat => ERRCODE_INVALID_DATETIME_FORMAT,
            Class::OutOfRange => ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
            Class::NullNotAllowed => ERRCODE_NULL_VALUE_NOT_ALLOWED,
        }
    }
    fn hint(&self) -> Option<String> {
        RecordError::hint(self)
    }
}

extension_sql!(
    r#"
CREATE TABLE opsmeter.request_records (
    api_type    text NOT NULL,
    metrics_key text NOT NULL,
    base_url    text NOT NULL DEFAULT '',
    model       text NOT NULL DEFAULT '',
    success     boolean NOT NULL,
    status_code integer NOT NULL DEFAULT 0,
    latency_ms  double precision NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL
) PARTITION BY RANGE (created_at);
-- No index on the parent: each day partition gets its own (api_type, metrics_key, created_at)
-- index when ops_create_record_partitions() creates it. A partitioned index owned by the
-- extension would break pg_dump/restore: CREATE EXTENSION would recreate it before the dump
-- re-attaches the partitions, attaching would create each partition's index, and the dump's
-- own CREATE INDEX for it would then fail.
COMMENT ON TABLE opsmeter.request_records IS 'opsmeter request-record store: one row per upstream request of a gateway key, range-partitioned by UTC day (opsmeter.request_records_pYYYYMMDD, created on demand, each indexed on api_type, metrics_key, created_at); written by ops_add_records()';

CREATE TABLE opsmeter.record_latest (
    api_type        text NOT NULL,
    metrics_key     text NOT NULL,
    last_success_at timestamptz,
    last_failure_at timestamptz,
    PRIMARY KEY (api_type, metrics_key)
);
COMMENT ON TABLE opsmeter.record_latest IS 'opsmeter: latest success and failure time of every key ever recorded, kept current by ops_add_records() so ops_latest_timestamps() never scans history';
SELECT pg_catalog.pg_extension_config_dump('opsmeter.record_latest', '');

CREATE TABLE opsmeter.circuit_states (
    api_type             text NOT NULL,
    metrics_key          text NOT NULL,
    state                text NOT NULL CHECK (state IN ('closed', 'open', 'half_open')),
    failure_count        integer NOT NULL DEFAULT 0 CHECK (failure_count >= 0),
    consecutive_failures integer NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    opened_at            timestamptz,
    next_attempt_at      timestamptz,
    updated_at           timestamptz NOT NULL,
    PRIMARY KEY (api_type, metrics_key)
);
COMMENT ON TABLE opsmeter.circuit_states IS 'opsmeter circuit-breaker state per api_type and key; written by ops_circuit_upsert()';
SELECT pg_catalog.pg_extension_config_dump('opsmeter.circuit_states', '');

CREATE FUNCTION ops_load_records(since timestamptz, api_type text)
RETURNS SETOF opsmeter.request_records
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT r.* FROM opsmeter.request_records r
     WHERE r.api_type = $2 AND r.created_at >= $1
     ORDER BY r.created_at
$fn$;

CREATE FUNCTION ops_latest_timestamps(api_type text)
RETURNS TABLE (metrics_key text, last_success_at timestamptz, last_failure_at timestamptz)
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT l.metrics_key, l.last_success_at, l.last_failure_at
      FROM opsmeter.record_latest l
     WHERE l.api_type = $1
     ORDER BY l.metrics_key COLLATE "C"
$fn$;

CREATE FUNCTION ops_circuit_states(api_type text)
RETURNS SETOF opsmeter.circuit_states
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT c.* FROM opsmeter.circuit_states c
     WHERE c.api_type = $1
     ORDER BY c.metrics_key COLLATE "C"
$fn$;

CREATE FUNCTION ops_delete_by_metrics_keys(keys text[], api_type text)
RETURNS bigint
LANGUAGE sql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH gone AS (
        DELETE FROM opsmeter.request_records r
         WHERE r.api_type = $2 AND r.metrics_key = ANY ($1)
        RETURNING 1),
    latest AS (
        DELETE FROM opsmeter.record_latest l
         WHERE l.api_type = $2 AND l.metrics_key = ANY ($1))
    SELECT pg_catalog.count(*) FROM gone
$fn$;

CREATE FUNCTION ops_delete_circuit_states(keys text[], api_type text)
RETURNS bigint
LANGUAGE sql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH gone AS (
        DELETE FROM opsmeter.circuit_states c
         WHERE c.api_type = $2 AND c.metrics_key = ANY ($1)
        RETURNING 1)
    SELECT pg_catalog.count(*) FROM gone
$fn$;

CREATE FUNCTION ops_record_partitions()
RETURNS TABLE (partition regclass, day date)
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT c.oid::regclass,
           CASE WHEN c.relname ~ '^request_records_p[0-9]{8}$'
                THEN pg_catalog.to_date(pg_catalog.substr(c.relname, 18), 'YYYYMMDD') END
      FROM pg_catalog.pg_inherits i
      JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = 'opsmeter.request_records'::regclass
     ORDER BY 2, 1::text
$fn$;
"#,
    name = "record_tables",
    requires = ["rollup_tables"]
);

fn finite(arg: &'static str, t: TimestampWithTimeZone) -> i64 {
    if t.is_infinity() || t.is_neg_infinity() {
        Err::<i64, _>(RecordError::Infinite { arg }).or_raise()
    } else {
        us(t)
    }
}

/// A `date` from a day number the cores computed (always inside PostgreSQL's range here).
pub(crate) fn date(day: i32) -> Date {
    // SAFETY: days come from timestamps PostgreSQL accepted or from dates it passed in.
    unsafe { Date::from_pg_epoch_days(day) }
}

/// The (unqualified) names of `opsmeter.request_records`'s partitions.
fn partitions() -> Vec<String> {
    Spi::connect(|c| {
        let rows = c.select(
            "SELECT c.relname::text FROM pg_catalog.pg_inherits i
               JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'opsmeter.request_records'::pg_catalog.regclass
              ORDER BY 1",
            None,
            &[],
        )?;
        rows.map(|r| r.get::<String>(1).map(|n| n.unwrap_or_default()))
            .collect::<Result<Vec<_>, _>>()
    })
    .unwrap_or_else(|e| pgrx::error!("opsmeter: could not list record partitions: {e}"))
}

fn partition_exists(name: &str) -> bool {
    Spi::get_one_with_args::<bool>(
        "SELECT pg_catalog.to_regclass('opsmeter.' || pg_catalog.quote_ident($1)) IS NOT NULL",
        &[name.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// Creates the day partitions of `opsmeter.request_records` for `from_day .. to_day`
/// (inclusive) that do not exist yet; returns how many it created. Runs as the extension's
/// owner, so a role that may only call `ops_add_records` still gets its partitions; at most
/// 366 days per call. Use it to create tomorrow's partition ahead of time.
#[pg_extern(volatile, strict, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn ops_create_record_partitions(from_day: Date, to_day: Date) -> i32 {
    let days =
        rc::partition_days(from_day.to_pg_epoch_days(), to_day.to_pg_epoch_days()).or_raise();
    let mut locked = false;
    let mut created = 0;
    for day in days {
        let name = rc::partition_name(day);
        if partition_exists(&name) {
            continue;
        }
        if !locked {
            // concurrent batches needing the same day queue here; the loser sees the table
            let (k1, k2) = rc::PARTITION_LOCK_KEYS;
            Spi::run(&format!(
                "SELECT pg_catalog.pg_advisory_xact_lock({k1}, {k2})"
            ))
            .unwrap_or_else(|e| pgrx::error!("opsmeter: could not take the partition lock: {e}"));
            // An advisory lock, unlike a table lock, does not make this backend read the
            // catalog changes other sessions committed while it waited; without this the
            // re-check below still answers "missing" for a partition the lock holder created.
            // SAFETY: processes pending shared-invalidation messages; callable at any point
            // of a transaction outside a critical section.
            unsafe { pg_sys::AcceptInvalidationMessages() };
            locked = true;
            if partition_exists(&name) {
                continue;
            }
        }
        let (lo, hi) = (rc::day_text(day), rc::day_text(day + 1));
        // CREATE TABLE ... PARTITION OF would take an ACCESS EXCLUSIVE lock on the parent,
        // which waits for every open transaction that wrote records (and two such transactions
        // that both need a new day deadlock). ATTACH PARTITION takes SHARE UPDATE EXCLUSIVE,
        // which does not conflict with writers or readers; the new table is empty, so its
        // bounds check is instant.
        Spi::run(&format!(
            "CREATE TABLE IF NOT EXISTS opsmeter.{name}
                 (LIKE opsmeter.request_records INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
             CREATE INDEX IF NOT EXISTS {name}_key
                 ON opsmeter.{name} (api_type, metrics_key, created_at);
             ALTER TABLE opsmeter.request_records ATTACH PARTITION opsmeter.{name}
                 FOR VALUES FROM ('{lo} 00:00:00+00') TO ('{hi} 00:00:00+00')"
        ))
        .unwrap_or_else(|e| {
            pgrx::error!("opsmeter: could not create partition opsmeter.{name}: {e}")
        });
        created += 1;
    }
    created
}

/// The checked records of a `jsonb` batch. Read from the binary form: each element's eight
/// fields are looked up in its object (no text, no JSON tree) and checked by
/// [`rc::record_from_fields`]. If any element fails a check, or the batch is not an array of
/// objects, the whole batch is read again from its text by [`rc::parse_records_text`], whose
/// error (the first bad element, its value shown as text) is the one raised: the errors are
/// those of the text reader, and the binary reader only ever accepts what it accepts.
fn read_batch(records: JsonbDatum) -> Vec<rc::Record> {
    // SAFETY: a jsonb datum; read only, within this call.
    match unsafe { read_binary(records.0) } {
        Some(batch) => batch,
        None => rc::parse_records_text(&records.text()).or_raise(),
    }
}

/// The binary reader of [`read_batch`]; `None`: read the text instead.
///
/// # Safety
/// `datum` must be a `jsonb` datum valid for the call.
unsafe fn read_binary(datum: pg_sys::Datum) -> Option<Vec<rc::Record>> {
    unsafe {
        let jb = pg_sys::pg_detoast_datum(datum.cast_mut_ptr::<pg_sys::varlena>());
        // struct Jsonb { int32 vl_len_; JsonbContainer root; }
        let root = (jb as *mut u8).add(4) as *mut pg_sys::JsonbContainer;
        let header = (*root).header;
        if header & pg_sys::JB_FARRAY == 0 || header & pg_sys::JB_FSCALAR != 0 {
            return None;
        }
        let n = header & pg_sys::JB_CMASK;
        let mut out = Vec::with_capacity(n as usize);
        let mut res: pg_sys::JsonbValue = std::mem::zeroed();
        for i in 0..n {
            let elem = pg_sys::getIthJsonbValueFromContainer(root, i);
            if elem.is_null() || (*elem).type_ != pg_sys::jbvType::jbvBinary {
                return None;
            }
            let obj = (*elem).val.binary.data;
            if (*obj).header & pg_sys::JB_FOBJECT == 0 {
                return None;
            }
            let mut fields = [rc::Scalar::Absent; 8];
            for (f, key) in fields.iter_mut().zip(rc::FIELDS) {
                let v = pg_sys::getKeyJsonValueFromContainer(
                    obj,
                    key.as_ptr() as *const core::ffi::c_char,
                    key.len() as i32,
                    &mut res,
                );
                *f = if v.is_null() {
                    rc::Scalar::Absent
                } else {
                    scalar(&*v)?
                };
            }
            out.push(rc::record_from_fields(&fields)?);
            pg_sys::pfree(elem.cast());
        }
        Some(out)
    }
}

/// A found value as the checks see it (see [`rc::Scalar`]); strings borrow the jsonb's bytes.
///
/// # Safety
/// `v` must be a value found in a jsonb container that outlives the result.
unsafe fn scalar<'a>(v: &pg_sys::JsonbValue) -> Option<rc::Scalar<'a>> {
    unsafe {
        Some(match v.type_ {
            pg_sys::jbvType::jbvNull => rc::Scalar::Absent,
            pg_sys::jbvType::jbvBool => rc::Scalar::Bool(v.val.boolean),
            pg_sys::jbvType::jbvString => {
                let s = v.val.string;
                let bytes = std::slice::from_raw_parts(s.val as *const u8, s.len as usize);
                rc::Scalar::Str(std::str::from_utf8(bytes).ok()?)
            }
            pg_sys::jbvType::jbvNumeric => {
                // numeric -> text -> double as float8in reads it: the double the text reader
                // gets from the same text (a value too large for a double reads as infinite)
                let d = pgrx::direct_function_call::<f64>(
                    pg_sys::numeric_float8_no_overflow,
                    &[Some(pg_sys::Datum::from(v.val.numeric))],
                )?;
                rc::Scalar::Num(d)
            }
            _ => rc::Scalar::Other,
        })
    }
}

/// Writes a JSON array of request records (see `docs/records.md` for the fields). One bad
/// element rejects the whole batch with an `ERROR` naming its index and field; nothing is
/// written. Creates missing day partitions and moves each key's latest success/failure time.
/// Returns the number of records written (0 for an empty array).
#[pg_extern(volatile, strict)]
#[search_path(pg_catalog, pg_temp)]
fn ops_add_records(records: JsonbDatum) -> i64 {
    let batch = read_batch(records);
    if batch.is_empty() {
        return 0;
    }
    // the extension's schema is looked up only when a day's partition is missing (rarely)
    let mut ext = None;
    for day in rc::days_of(&batch) {
        if !partition_exists(&rc::partition_name(day)) {
            let ext = ext.get_or_insert_with(ext_schema);
            Spi::run_with_args(
                &format!("SELECT {ext}.ops_create_record_partitions($1, $1)"),
                &[date(day).into()],
            )
            .unwrap_or_else(|e| pgrx::error!("opsmeter: {e}"));
        }
    }
    let latest = rc::latest_per_key(&batch);
    let n = batch.len();
    let (mut api, mut key, mut url, mut model) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut ok, mut status, mut latency, mut at) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for r in batch {
        api.push(r.api_type);
        key.push(r.metrics_key);
        url.push(r.base_url);
        model.push(r.model);
        ok.push(r.success);
        status.push(r.status_code);
        latency.push(r.latency_ms);
        at.push(tstz(r.created_at));
    }
    let written = Spi::connect_mut(|c| {
        c.update(
            "INSERT INTO opsmeter.request_records
                    (api_type, metrics_key, base_url, model, success, status_code, latency_ms, created_at)
             SELECT * FROM ROWS FROM (
                    pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::text[]),
                    pg_catalog.unnest($3::text[]), pg_catalog.unnest($4::text[]),
                    pg_catalog.unnest($5::bool[]), pg_catalog.unnest($6::int4[]),
                    pg_catalog.unnest($7::float8[]), pg_catalog.unnest($8::timestamptz[]))",
            None,
            &[
                api.into(),
                key.into(),
                url.into(),
                model.into(),
                ok.into(),
                status.into(),
                latency.into(),
                at.into(),
            ],
        )
        .map(|t| t.len() as i64)
    })
    .unwrap_or_else(|e| pgrx::error!("opsmeter: could not write records: {e}"));
    // GREATEST ignores NULLs; keys arrive sorted, so concurrent batches lock rows in one order
    let (mut la, mut lk, mut ls, mut lf) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for l in latest {
        la.push(l.api_type);
        lk.push(l.metrics_key);
        ls.push(l.last_success_at.map(tstz));
        lf.push(l.last_failure_at.map(tstz));
    }
    Spi::run_with_args(
        "INSERT INTO opsmeter.record_latest AS l (api_type, metrics_key, last_success_at, last_failure_at)
         SELECT * FROM ROWS FROM (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::text[]),
                                  pg_catalog.unnest($3::timestamptz[]), pg_catalog.unnest($4::timestamptz[]))
         ON CONFLICT (api_type, metrics_key) DO UPDATE
            SET last_success_at = GREATEST(l.last_success_at, EXCLUDED.last_success_at),
                last_failure_at = GREATEST(l.last_failure_at, EXCLUDED.last_failure_at)
          WHERE GREATEST(l.last_success_at, EXCLUDED.last_success_at) IS DISTINCT FROM l.last_success_at
             OR GREATEST(l.last_failure_at, EXCLUDED.last_failure_at) IS DISTINCT FROM l.last_failure_at",
        &[la.into(), lk.into(), ls.into(), lf.into()],
    )
    .unwrap_or_else(|e| pgrx::error!("opsmeter: could not update latest timestamps: {e}"));
    written
}

/// Inserts or replaces the circuit-breaker state of a key. A state older than the stored one
/// (by `updated_at`) changes nothing and returns false.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::too_many_arguments)]
fn ops_circuit_upsert(
    api_type: Option<&str>,
    metrics_key: Option<&str>,
    state: Option<&str>,
    failure_count: default!(Option<i32>, 0),
    consecutive_failures: default!(Option<i32>, 0),
    opened_at: default!(Option<TimestampWithTimeZone>, "NULL"),
    next_attempt_at: default!(Option<TimestampWithTimeZone>, "NULL"),
    updated_at: default!(Option<TimestampWithTimeZone>, "now()"),
) -> bool {
    let need =
        |v: Option<&str>, arg: &'static str| v.ok_or(RecordError::Null(arg)).or_raise().to_string();
    let api_type = need(api_type, "api_type");
    let metrics_key = need(metrics_key, "metrics_key");
    let state = rc::CircuitState::parse(&need(state, "state")).or_raise();
    let failure_count = rc::count("failure_count", failure_count.unwrap_or(0)).or_raise();
    let consecutive =
        rc::count("consecutive_failures", consecutive_failures.unwrap_or(0)).or_raise();
    let updated_at = updated_at.ok_or(RecordError::Null("updated_at")).or_raise();
    Spi::get_one_with_args::<bool>(
        "WITH up AS (
             INSERT INTO opsmeter.circuit_states AS c
                    (api_type, metrics_key, state, failure_count, consecutive_failures,
                     opened_at, next_attempt_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (api_type, metrics_key) DO UPDATE
                SET state = EXCLUDED.state, failure_count = EXCLUDED.failure_count,
                    consecutive_failures = EXCLUDED.consecutive_failures,
                    opened_at = EXCLUDED.opened_at, next_attempt_at = EXCLUDED.next_attempt_at,
                    updated_at = EXCLUDED.updated_at
              WHERE c.updated_at <= EXCLUDED.updated_at
             RETURNING 1)
         SELECT pg_catalog.count(*) > 0 FROM up",
        &[
            api_type.into(),
            metrics_key.into(),
            state.name().into(),
            failure_count.into(),
            consecutive.into(),
            opened_at.into(),
            next_attempt_at.into(),
            updated_at.into(),
        ],
    )
    .unwrap_or_else(|e| pgrx::error!("opsmeter: could not write the circuit state: {e}"))
    .unwrap_or(false)
}

type HistoryRow = (
    TimestampWithTimeZone,
    Option<String>,
    i64,
    i64,
    i64,
    f64,
    Option<f64>,
    Option<f64>,
    Option<f64>,
);

fn history_rows(
    api_type: Option<&str>,
    since: Option<TimestampWithTimeZone>,
    interval_seconds: Option<i64>,
    metrics_key: Option<String>,
    base_url: Option<String>,
    by_model: bool,
) -> Vec<HistoryRow> {
    let iv = rc::history_interval(interval_seconds).or_raise();
    let (Some(api_type), Some(since)) = (api_type, since) else {
        return Vec::new();
    };
    let since_us = finite("since", since);
    let metrics_key = rc::filter_value(metrics_key);
    let base_url = rc::filter_value(base_url);
    let sql = rc::history_sql(
        &ext_schema(),
        HistoryFilter {
            metrics_key: metrics_key.is_some(),
            base_url: base_url.is_some(),
            by_model,
        },
    );
    let origin = tstz(rc::history_origin(since_us, iv));
    let width = Interval::from_micros(iv * rc::USECS_PER_SECOND);
    let mut rows = with_hash_aggregation(|| {
        Spi::connect(|c| {
            let rows = c.select(
                &sql,
                None,
                &[
                    api_type.into(),
                    since.into(),
                    width.into(),
                    origin.into(),
                    metrics_key.unwrap_or_default().into(),
                    base_url.unwrap_or_default().into(),
                ],
            )?;
            let off = usize::from(by_model);
            rows.map(|r| {
                Ok((
                    r.get::<TimestampWithTimeZone>(1)?
                        .unwrap_or_else(|| tstz(0)),
                    if by_model { r.get::<String>(2)? } else { None },
                    r.get::<i64>(2 + off)?.unwrap_or(0),
                    r.get::<i64>(3 + off)?.unwrap_or(0),
                    r.get::<i64>(4 + off)?.unwrap_or(0),
                    r.get::<f64>(5 + off)?.unwrap_or(0.0),
                    r.get::<f64>(6 + off)?,
                    r.get::<f64>(7 + off)?,
                    r.get::<f64>(8 + off)?,
                ))
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
        })
        .unwrap_or_else(|e| pgrx::error!("opsmeter: history query failed: {e}"))
    });
    // in time order, models in byte order (the query leaves the order to us; see history_sql)
    rows.sort_by(|a, b| us(a.0).cmp(&us(b.0)).then_with(|| a.1.cmp(&b.1)));
    rows
}

/// Request history of an api_type since a time, in buckets of `interval_seconds` aligned to
/// multiples of it since the Unix epoch (only buckets with records): requests, successes,
/// failures, success rate in percent, latency p50/p95/p99 from `ops_sketch` (within 0.5%).
/// `metrics_key` / `base_url` narrow it; NULL or '' means all.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn ops_history(
    api_type: Option<&str>,
    since: Option<TimestampWithTimeZone>,
    interval_seconds: Option<i64>,
    metrics_key: default!(Option<String>, "NULL"),
    base_url: default!(Option<String>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(bucket_start, TimestampWithTimeZone),
        name!(requests, i64),
        name!(successes, i64),
        name!(failures, i64),
        name!(success_rate, f64),
        name!(latency_p50_ms, Option<f64>),
        name!(latency_p95_ms, Option<f64>),
        name!(latency_p99_ms, Option<f64>),
    ),
> {
    let rows = history_rows(
        api_type,
        since,
        interval_seconds,
        metrics_key,
        base_url,
        false,
    );
    TableIterator::new(
        rows.into_iter()
            .map(|(b, _, n, s, f, r, p50, p95, p99)| (b, n, s, f, r, p50, p95, p99)),
    )
}

/// [`ops_history`] per model: one row per bucket and model.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn ops_model_history(
    api_type: Option<&str>,
    since: Option<TimestampWithTimeZone>,
    interval_seconds: Option<i64>,
    metrics_key: default!(Option<String>, "NULL"),
    base_url: default!(Option<String>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(bucket_start, TimestampWithTimeZone),
        name!(model, String),
        name!(requests, i64),
        name!(successes, i64),
        name!(failures, i64),
        name!(success_rate, f64),
        name!(latency_p50_ms, Option<f64>),
        name!(latency_p95_ms, Option<f64>),
        name!(latency_p99_ms, Option<f64>),
    ),
> {
    let rows = history_rows(
        api_type,
        since,
        interval_seconds,
        metrics_key,
        base_url,
        true,
    );
    TableIterator::new(rows.into_iter().map(|(b, m, n, s, f, r, p50, p95, p99)| {
        (b, m.unwrap_or_default(), n, s, f, r, p50, p95, p99)
    }))
}

/// Removes every record older than `before` (all api_types): day partitions wholly before it
/// are dropped (no DELETE, no bloat), the partition holding `before` is cleaned with DELETE.
/// The latest success/failure times per key are kept. Returns the number of records removed.
#[pg_extern(volatile, strict)]
#[search_path(pg_catalog, pg_temp)]
fn ops_cleanup_records(before: TimestampWithTimeZone) -> i64 {
    let before_us = finite("before", before);
    let plan = rc::cleanup_plan(&partitions(), before_us);
    let mut removed = 0;
    for name in &plan.drop {
        removed += Spi::get_one::<i64>(&format!("SELECT pg_catalog.count(*) FROM opsmeter.{name}"))
            .ok()
            .flatten()
            .unwrap_or(0);
        Spi::run(&format!("DROP TABLE opsmeter.{name}"))
            .unwrap_or_else(|e| pgrx::error!("opsmeter: could not drop opsmeter.{name}: {e}"));
    }
    for name in &plan.delete_from {
        removed += Spi::connect_mut(|c| {
            c.update(
                &format!(
                    "DELETE FROM opsmeter.{} WHERE created_at < $1",
                    pgrx::spi::quote_identifier(name)
                ),
                None,
                &[before.into()],
            )
            .map(|t| t.len() as i64)
        })
        .unwrap_or_else(|e| pgrx::error!("opsmeter: could not clean opsmeter.{name}: {e}"));
    }
    removed
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::pgrx_tests::sqlstate_of;
    use pgrx::prelude::*;

    fn count(sql: &str) -> i64 {
        Spi::get_one::<i64>(sql).unwrap().unwrap_or(-1)
    }

    /// `#[pg_test]`s run at once, each in one open transaction of the same database. Tests
    /// that create partitions take the partition lock first and keep it to their end, so they
    /// run one after another: otherwise one holding the lock can wait on catalog rows another
    /// test's uncommitted GRANT or ATTACH updated while that one waits for the lock (a
    /// deadlock seen once in five runs of this layer; a gateway does not interleave such transactions).
    fn one_partition_test_at_a_time() {
        let (k1, k2) = crate::cores::records::PARTITION_LOCK_KEYS;
        Spi::run(&format!("SELECT pg_advisory_xact_lock({k1}, {k2})")).unwrap();
    }

    fn batch(n: i64, day: &str) -> String {
        format!(
            "(SELECT jsonb_agg(jsonb_build_object(
                 'api_type', 'messages', 'metrics_key', 'k' || (i % 7), 'base_url', 'https://u' || (i % 2),
                 'model', 'm' || (i % 3), 'success', i % 5 <> 0, 'status_code', CASE WHEN i % 5 = 0 THEN 529 ELSE 200 END,
                 'latency_ms', 10 + (i * 7919) % 5000,
                 'created_at', to_char(TIMESTAMPTZ '{day} 00:00+00' + i * INTERVAL '13 seconds', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')))
               FROM generate_series(1, {n}) i)"
        )
    }

    /// A batch with one bad element leaves nothing behind: no rows, no latest times, and no
    /// partition for the new day it would have needed.
    #[pg_test]
    fn a_rejected_batch_changes_nothing() {
        one_partition_test_at_a_time();
        Spi::run(&format!(
            "SELECT ops_add_records({})",
            batch(50, "2026-03-01")
        ))
        .unwrap();
        let bad = format!(
            "SELECT ops_add_records({} || '[{{\"api_type\": \"messages\"}}]'::jsonb)",
            batch(20, "2026-03-05")
        );
        assert_eq!(sqlstate_of(&format!("PERFORM ({bad})")), "22023");
        assert_eq!(count("SELECT count(*) FROM opsmeter.request_records"), 50);
        assert_eq!(count("SELECT count(*) FROM ops_record_partitions()"), 1);
        assert_eq!(count("SELECT count(*) FROM opsmeter.record_latest"), 7);
    }

    /// Serial and parallel plans give the same history (the sketches merge exactly).
    #[pg_test]
    fn history_is_the_same_serial_and_parallel() {
        one_partition_test_at_a_time();
        for d in ["2026-03-01", "2026-03-02", "2026-03-03"] {
            Spi::run(&format!("SELECT ops_add_records({})", batch(6000, d))).unwrap();
        }
        Spi::run("ANALYZE opsmeter.request_records").unwrap();
        let q = "SELECT md5(string_agg(h::text, ',' ORDER BY h.bucket_start, h.model))
                   FROM ops_model_history('messages', '2026-03-01 05:00+00', 3600) h";
        Spi::run("SET max_parallel_workers_per_gather = 0").unwrap();
        let serial = Spi::get_one::<String>(q).unwrap();
        Spi::run(
            "SET max_parallel_workers_per_gather = 4; SET parallel_setup_cost = 0;
             SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0",
        )
        .unwrap();
        let parallel = Spi::get_one::<String>(q).unwrap();
        assert!(serial.is_some());
        assert_eq!(serial, parallel);
    }

    /// A role that may only insert records still gets its partitions: they are created by the
    /// SECURITY DEFINER ops_create_record_partitions as the extension owner.
    #[pg_test]
    fn an_unprivileged_writer_gets_its_partitions() {
        one_partition_test_at_a_time();
        Spi::run(
            "CREATE ROLE opsmeter_test_writer;
             GRANT USAGE ON SCHEMA opsmeter TO opsmeter_test_writer;
             GRANT INSERT ON opsmeter.request_records TO opsmeter_test_writer;
             GRANT SELECT, INSERT, UPDATE ON opsmeter.record_latest TO opsmeter_test_writer;",
        )
        .unwrap();
        Spi::run("SET ROLE opsmeter_test_writer").unwrap();
        // it may not create tables in opsmeter itself
        assert_eq!(
            sqlstate_of("CREATE TABLE opsmeter.not_mine (x int)"),
            "42501"
        );
        let n = count(&format!(
            "SELECT ops_add_records({})",
            batch(10, "2026-04-01")
        ));
        Spi::run("RESET ROLE").unwrap();
        assert_eq!(n, 10);
        assert_eq!(
            Spi::get_one::<String>(
                "SELECT pg_get_userbyid(relowner)::text FROM pg_class
                  WHERE oid = 'opsmeter.request_records_p20260401'::regclass"
            )
            .unwrap()
            .as_deref(),
            Spi::get_one::<String>("SELECT current_user::text")
                .unwrap()
                .as_deref()
        );
    }

    /// Whole days go by DROP; the boundary day by DELETE; nothing at or after `before` changes.
    #[pg_test]
    fn cleanup_drops_whole_days() {
        one_partition_test_at_a_time();
        for d in ["2026-05-01", "2026-05-02", "2026-05-03"] {
            Spi::run(&format!("SELECT ops_add_records({})", batch(1000, d))).unwrap();
        }
        let keep = "SELECT count(*) FROM opsmeter.request_records WHERE created_at >= '2026-05-02 01:00+00'";
        let kept = count(keep);
        let gone = count("SELECT count(*) FROM opsmeter.request_records WHERE created_at < '2026-05-02 01:00+00'");
        assert_eq!(
            count("SELECT ops_cleanup_records('2026-05-02 01:00+00')"),
            gone
        );
        assert_eq!(count(keep), kept);
        assert_eq!(count("SELECT count(*) FROM opsmeter.request_records"), kept);
        assert_eq!(
            Spi::get_one::<Vec<String>>(
                "SELECT array_agg(day::text ORDER BY day) FROM ops_record_partitions()"
            )
            .unwrap()
            .unwrap(),
            vec!["2026-05-02", "2026-05-03"]
        );
    }
}

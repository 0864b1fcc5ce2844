//! Day partitions of the raw log tables opsmeter owns (`opsmeter.usage_logs`, `error_logs`,
//! `log_records`, SPEC §7): the `partitions` job creates them ahead (and for rows that landed
//! in a table's default partition), the `retention` job drops whole days older than
//! `opsmeter.retention`. Retention never DELETEs, and never touches a relation that is not one
//! of those tables' day partitions (a user table registered with `ops_set_source` included).
//! Names and day arithmetic live in [`crate::cores::jobs`].

use crate::cores::jobs as jc;
use crate::cores::records::day_text;
use crate::error::OrRaise;
use crate::gucs;
use crate::jobs::{write_one, Done};
use pgrx::prelude::*;

extension_sql!(
    r#"
CREATE FUNCTION ops_log_partitions()
RETURNS TABLE (parent regclass, partition regclass, day date, is_default boolean)
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT p.oid::regclass, c.oid::regclass,
           CASE WHEN c.relname ~ ('^' || p.relname || '_p[0-9]{8}$')
                THEN pg_catalog.to_date(pg_catalog.right(c.relname, 8), 'YYYYMMDD') END,
           pg_catalog.pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'
      FROM pg_catalog.pg_class p
      JOIN pg_catalog.pg_inherits i ON i.inhparent = p.oid
      JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
     WHERE p.oid IN ('opsmeter.usage_logs'::regclass, 'opsmeter.error_logs'::regclass,
                     'opsmeter.log_records'::regclass, 'opsmeter.request_records'::regclass)
     ORDER BY p.relname, 3 NULLS FIRST, c.relname
$fn$;
"#,
    name = "log_partitions",
    requires = ["record_tables", "job_tables"]
);

/// Rows of a default partition outside these days (an infinite or far-off `created_at`) stay
/// there: no day partition can be named or bounded for them.
const STRAY_FROM: &str = "1900-01-01 00:00:00+00";
const STRAY_UNTIL: &str = "9000-01-01 00:00:00+00";

/// Day partitions of `opsmeter.<table>` as (name, day): our naming, in schema opsmeter only.
fn day_partitions(table: &str) -> Vec<(String, i32)> {
    Spi::connect(|c| {
        c.select(
            "SELECT c.relname::text FROM pg_catalog.pg_inherits i
               JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = ('opsmeter.' || pg_catalog.quote_ident($1))::pg_catalog.regclass
                AND c.relnamespace = 'opsmeter'::pg_catalog.regnamespace
                AND c.oid NOT IN (SELECT s.relation FROM opsmeter.sources s)
              ORDER BY 1",
            None,
            &[table.into()],
        )?
        .map(|r| r.get::<String>(1).map(|n| n.unwrap_or_default()))
        .collect::<Result<Vec<_>, _>>()
    })
    .unwrap_or_else(|e| pgrx::error!("opsmeter: could not list the partitions of {table}: {e}"))
    .into_iter()
    .filter_map(|n| jc::partition_day(table, &n).map(|d| (n, d)))
    .collect()
}

fn today() -> i32 {
    Spi::get_one::<pgrx::datum::Date>("SELECT (pg_catalog.now() AT TIME ZONE 'UTC')::date")
        .ok()
        .flatten()
        .map(|d| d.to_pg_epoch_days())
        .unwrap_or_else(|| pgrx::error!("opsmeter: could not read today's date"))
}

/// The `partitions` job: today's and `opsmeter.partitions_ahead` days' partitions of every raw
/// log table (and of `opsmeter.request_records`), plus a partition for each day that has rows
/// in a table's default partition, those rows moved into it.
pub(crate) fn create_ahead(ext: &str) -> Done {
    with_lock_timeout(|| create_ahead_locked(ext))
}

fn create_ahead_locked(ext: &str) -> Done {
    let today = today();
    let ahead = gucs::partitions_ahead();
    let mut created: Vec<String> = Vec::new();
    let mut moved = 0i64;
    for table in jc::LOG_TABLES {
        let existing: Vec<i32> = day_partitions(table).into_iter().map(|(_, d)| d).collect();
        let default = jc::default_partition(table);
        let strays: Vec<i32> = Spi::connect(|c| {
            c.select(
                &format!(
                    "SELECT DISTINCT (d.created_at AT TIME ZONE 'UTC')::date
                       FROM opsmeter.{default} d
                      WHERE d.created_at >= '{STRAY_FROM}' AND d.created_at < '{STRAY_UNTIL}'
                      ORDER BY 1 LIMIT {}",
                    jc::MAX_CATCH_UP_PARTITIONS
                ),
                None,
                &[],
            )?
            .map(|r| {
                r.get::<pgrx::datum::Date>(1)
                    .map(|d| d.map(|d| d.to_pg_epoch_days()).unwrap_or(0))
            })
            .collect::<Result<Vec<_>, _>>()
        })
        .unwrap_or_else(|e| pgrx::error!("opsmeter: could not read opsmeter.{default}: {e}"));
        for day in jc::partitions_to_create(today, ahead, &strays, &existing) {
            // A day ahead may have rows in the default partition too (future-stamped rows)
            // without being among the oldest strays listed: ask for each day created.
            let has_rows = strays.contains(&day) || default_has_rows(&default, day);
            moved += create_day(table, day, has_rows);
            created.push(jc::partition_name(table, day));
        }
    }
    let records = write_one::<i32>(
        &format!("SELECT {ext}.ops_create_record_partitions($1, $2)"),
        &[
            crate::records::date(today).into(),
            crate::records::date(today + ahead).into(),
        ],
    )
    .unwrap_or_else(|e| pgrx::error!("{e}"))
    .unwrap_or(0);
    let n = created.len() as i64 + records as i64;
    let mut message = format!("{n} partitions created");
    if !created.is_empty() {
        message.push_str(&format!(" ({})", created.join(", ")));
    }
    if records > 0 {
        message.push_str(&format!(", {records} of request_records"));
    }
    if moved > 0 {
        message.push_str(&format!("; {moved} rows moved out of default partitions"));
    }
    Done::new(n, message)
}

/// Whether `opsmeter.<default>` holds a row of `day` (an index probe on its primary key).
fn default_has_rows(default: &str, day: i32) -> bool {
    let (lo, hi) = (day_text(day), day_text(day + 1));
    Spi::get_one::<bool>(&format!(
        "SELECT EXISTS (SELECT 1 FROM opsmeter.{default}
                         WHERE created_at >= '{lo} 00:00:00+00' AND created_at < '{hi} 00:00:00+00')"
    ))
    .unwrap_or_else(|e| pgrx::error!("opsmeter: could not read opsmeter.{default}: {e}"))
    .unwrap_or(false)
}

/// Creates `opsmeter.<table>_pYYYYMMDD` and attaches it; with `strays`, first moves that day's
/// rows out of the default partition. Returns the rows moved.
fn create_day(table: &str, day: i32, strays: bool) -> i64 {
    let name = jc::partition_name(table, day);
    let default = jc::default_partition(table);
    let (lo, hi) = (day_text(day), day_text(day + 1));
    // The table is created on its own and attached: ATTACH takes SHARE UPDATE EXCLUSIVE on the
    // parent, which does not wait for writers (CREATE TABLE ... PARTITION OF would). Each day
    // partition carries its own primary key, as the default partition does; an index on the
    // parent would break pg_dump/restore of the extension's tables (see records.rs).
    Spi::run(&format!(
        "CREATE TABLE opsmeter.{name}
             (LIKE opsmeter.{table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
         ALTER TABLE opsmeter.{name} ADD PRIMARY KEY (created_at, id)"
    ))
    .unwrap_or_else(|e| pgrx::error!("opsmeter: could not create opsmeter.{name}: {e}"));
    let mut moved = 0;
    if strays {
        // ATTACH locks the default partition ACCESS EXCLUSIVE to check it holds no row of the
        // new day; taking that lock first means none can land there between the move and it.
        Spi::run(&format!(
            "LOCK TABLE opsmeter.{default} IN ACCESS EXCLUSIVE MODE"
        ))
        .unwrap_or_else(|e| pgrx::error!("opsmeter: could not lock opsmeter.{default}: {e}"));
        moved = write_one::<i64>(
            &format!(
                "WITH moved AS (
                DELETE FROM opsmeter.{default}
                 WHERE created_at >= '{lo} 00:00:00+00' AND created_at < '{hi} 00:00:00+00'
                RETURNING *),
             ins AS (INSERT INTO opsmeter.{name} SELECT * FROM moved RETURNING 1)
             SELECT pg_catalog.count(*) FROM ins"
            ),
            &[],
        )
        .unwrap_or_else(|e| pgrx::error!("opsmeter: could not move rows into opsmeter.{name}: {e}"))
        .unwrap_or(0);
    }
    Spi::run(&format!(
        "ALTER TABLE opsmeter.{table} ATTACH PARTITION opsmeter.{name}
             FOR VALUES FROM ('{lo} 00:00:00+00') TO ('{hi} 00:00:00+00')"
    ))
    .unwrap_or_else(|e| pgrx::error!("opsmeter: could not attach opsmeter.{name}: {e}"));
    moved
}

/// How long an ATTACH or DROP waits for its lock before the run fails (and is retried next
/// time) rather than queueing every writer of the table behind it.
const DDL_LOCK_TIMEOUT: &str = "5s";

/// Runs `f` with `lock_timeout` at [`DDL_LOCK_TIMEOUT`], then restores the caller's value (on
/// an error the run's subtransaction restores it).
fn with_lock_timeout<T>(f: impl FnOnce() -> T) -> T {
    let old = write_one::<String>(
        &format!(
            "SELECT pg_catalog.current_setting('lock_timeout'),
                    pg_catalog.set_config('lock_timeout', '{DDL_LOCK_TIMEOUT}', true)"
        ),
        &[],
    )
    .ok()
    .flatten()
    .unwrap_or_else(|| "0".into());
    let value = f();
    write_one::<String>(
        "SELECT pg_catalog.set_config('lock_timeout', $1, true)",
        &[old.into()],
    )
    .unwrap_or_else(|e| pgrx::error!("opsmeter: {e}"));
    value
}

/// The `retention` job: drops the day partitions of the raw log tables whose whole day is
/// older than `opsmeter.retention`. Never a DELETE; `0` keeps everything.
pub(crate) fn retention() -> Done {
    let keep_us = gucs::retention_us().or_raise();
    if keep_us == 0 {
        return Done::new(0, "opsmeter.retention is 0: everything is kept".into());
    }
    let now = crate::jobs::now_us();
    let mut dropped: Vec<String> = Vec::new();
    with_lock_timeout(|| {
        for table in jc::LOG_TABLES {
            for name in jc::retention_drops(&day_partitions(table), now, keep_us) {
                Spi::run(&format!("DROP TABLE opsmeter.{name}")).unwrap_or_else(|e| {
                    pgrx::error!("opsmeter: could not drop opsmeter.{name}: {e}")
                });
                dropped.push(name);
            }
        }
    });
    let n = dropped.len() as i64;
    let message = if dropped.is_empty() {
        "no day partition is past the retention".to_string()
    } else {
        format!("{n} day partitions dropped ({})", dropped.join(", "))
    };
    Done::new(n, message)
}

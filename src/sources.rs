//! The source registry (SPEC §2): which relation serves each input role, checked against the
//! columns the role needs. Rules live in [`crate::cores::sources`]; this file reads the catalog
//! and the registry table through SPI.

use crate::cores::sources::{self as rules, Column, Role, SourceError};
use crate::error::OrRaise;
use crate::types::Regclass;
use pgrx::prelude::*;

/// The relation currently serving `role`: the registered override, else the default table.
fn effective_oid(role: Role) -> (pg_sys::Oid, bool) {
    let overridden: Option<pg_sys::Oid> = Spi::get_one_with_args(
        "SELECT relation::pg_catalog.oid FROM opsmeter.sources WHERE role = $1",
        &[role.name().into()],
    )
    .unwrap_or(None);
    match overridden {
        Some(oid) => (oid, false),
        None => (default_oid(role), true),
    }
}

fn default_oid(role: Role) -> pg_sys::Oid {
    Spi::get_one_with_args::<pg_sys::Oid>(
        "SELECT pg_catalog.to_regclass($1)::pg_catalog.oid",
        &[role.default_relation().into()],
    )
    .ok()
    .flatten()
    .unwrap_or(pg_sys::InvalidOid)
}

/// Checks that `oid` can serve `role` now: it exists, is a table-like relation the caller can
/// read, and has every needed column with an accepted type.
fn check(role: Role, oid: pg_sys::Oid) -> Result<String, SourceError> {
    let row = Spi::connect(|client| {
        let rows = client.select(
            "SELECT c.relkind::text,
                    pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname),
                    pg_catalog.has_table_privilege(c.oid, 'SELECT')
               FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE c.oid = $1",
            Some(1),
            &[oid.into()],
        )?;
        let mut out = None;
        for r in rows {
            out = Some((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<bool>(3)?.unwrap_or(false),
            ));
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .unwrap_or(None);
    let Some((relkind, qualified, can_select)) = row else {
        return Err(SourceError::Dangling {
            role: role.name(),
            oid: oid.to_u32(),
        });
    };
    let kind = relkind.chars().next().unwrap_or('?');
    if !rules::relkind_allowed(kind) {
        return Err(SourceError::WrongRelkind {
            role: role.name(),
            relation: qualified,
            kind: rules::relkind_name(kind).to_string(),
        });
    }
    if !can_select {
        return Err(SourceError::NoSelectPrivilege {
            role: role.name(),
            relation: qualified,
        });
    }
    rules::check_columns(role, &qualified, &columns_of(oid))?;
    Ok(qualified)
}

/// The relation's live columns with their base types (domains resolved to what they wrap).
fn columns_of(oid: pg_sys::Oid) -> Vec<Column> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT a.attname::text, b.typname::text,
                    pg_catalog.format_type(a.atttypid, a.atttypmod)
               FROM pg_catalog.pg_attribute a
               JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
               JOIN pg_catalog.pg_type b
                 ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
              WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum",
            None,
            &[oid.into()],
        )?;
        let mut cols = Vec::new();
        for r in rows {
            cols.push(Column {
                name: r.get::<String>(1)?.unwrap_or_default(),
                typname: r.get::<String>(2)?.unwrap_or_default(),
                display: r.get::<String>(3)?.unwrap_or_default(),
            });
        }
        Ok::<_, pgrx::spi::Error>(cols)
    })
    .unwrap_or_default()
}

/// The checked relation serving `role` (schema-qualified and quoted, safe to splice into SQL),
/// or an `ERROR` naming what is wrong. Readers of a source call this before they scan, so a
/// relation that lost a column since it was registered fails clearly instead of mid-query.
#[allow(dead_code)] // tested here; first caller outside tests: the rollup readers (SPEC §2)
pub fn resolve(role: Role) -> String {
    let (oid, _) = effective_oid(role);
    check(role, oid).or_raise()
}

/// Points a source role at a table, view, materialized view or foreign table.
#[pg_extern(volatile, strict)]
#[search_path(pg_catalog, pg_temp)]
fn ops_set_source(role: &str, rel: Regclass) {
    let role = Role::parse(role).or_raise();
    check(role, rel.0).or_raise();
    Spi::run_with_args(
        "INSERT INTO opsmeter.sources AS s (role, relation) VALUES ($1, $2::pg_catalog.regclass)
         ON CONFLICT (role) DO UPDATE
            SET relation = EXCLUDED.relation, set_at = pg_catalog.now(), set_by = CURRENT_USER",
        &[role.name().into(), rel.0.into()],
    )
    .unwrap_or_else(|e| pgrx::error!("opsmeter: could not register source: {e}"));
}

/// Points a source role back at the extension's own table `opsmeter.<role>`.
#[pg_extern(volatile, strict)]
#[search_path(pg_catalog, pg_temp)]
fn ops_reset_source(role: &str) {
    let role = Role::parse(role).or_raise();
    Spi::run_with_args(
        "DELETE FROM opsmeter.sources WHERE role = $1",
        &[role.name().into()],
    )
    .unwrap_or_else(|e| pgrx::error!("opsmeter: could not reset source: {e}"));
}

/// Every role, the relation serving it, whether that is the extension's own table, and
/// whether it passes the checks right now (`ok`, or the problem).
#[pg_extern(stable, strict)]
#[search_path(pg_catalog, pg_temp)]
fn ops_sources() -> TableIterator<
    'static,
    (
        name!(role, String),
        name!(relation, Regclass),
        name!(is_default, bool),
        name!(status, String),
    ),
> {
    let rows: Vec<_> = Role::ALL
        .into_iter()
        .map(|role| {
            let (oid, is_default) = effective_oid(role);
            let status = match check(role, oid) {
                Ok(_) => "ok".to_string(),
                Err(e) => e.to_string(),
            };
            (role.name().to_string(), Regclass(oid), is_default, status)
        })
        .collect();
    TableIterator::new(rows)
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::pgrx_tests::{message_of, sqlstate_of};

    #[pg_test]
    fn resolve_defaults_to_extension_tables() {
        for role in crate::cores::sources::Role::ALL {
            assert_eq!(super::resolve(role), role.default_relation());
        }
    }

    #[pg_test]
    fn view_with_renamed_columns_is_accepted_and_resolved() {
        Spi::run(
            "CREATE TABLE my_reqs (ts timestamptz, gid int, dur float8, ttft int,
                                   tin int, tout int, cc int, cr int);
             CREATE VIEW my_usage AS SELECT ts AS created_at, gid AS group_id,
                    dur AS duration_ms, ttft AS first_token_ms, tin AS input_tokens,
                    tout AS output_tokens, cc AS cache_creation_tokens, cr AS cache_read_tokens
               FROM my_reqs;
             SELECT ops_set_source('usage_logs', 'my_usage');",
        )
        .unwrap();
        let name = super::resolve(crate::cores::sources::Role::UsageLogs);
        let same =
            Spi::get_one::<bool>(&format!("SELECT '{name}'::regclass = 'my_usage'::regclass"))
                .unwrap();
        assert_eq!(same, Some(true));
        let def =
            Spi::get_one::<bool>("SELECT is_default FROM ops_sources() WHERE role = 'usage_logs'")
                .unwrap();
        assert_eq!(def, Some(false));
    }

    #[pg_test]
    fn unknown_role_is_22023() {
        assert_eq!(
            sqlstate_of("PERFORM ops_set_source('usage', 'pg_class')"),
            "22023"
        );
        assert_eq!(
            message_of("PERFORM ops_set_source('usage', 'pg_class')"),
            "unknown source role \"usage\""
        );
    }

    #[pg_test]
    fn missing_and_mistyped_columns_are_named_with_their_sqlstates() {
        Spi::run("CREATE TABLE g1 (id bigint); CREATE TABLE g2 (id text, platform text);").unwrap();
        assert_eq!(
            sqlstate_of("PERFORM ops_set_source('groups', 'g1')"),
            "42703"
        );
        assert_eq!(
            sqlstate_of("PERFORM ops_set_source('groups', 'g2')"),
            "42804"
        );
        let msg = message_of("PERFORM ops_set_source('groups', 'g2')");
        assert!(
            msg.contains("column \"id\" is text, it needs an integer type"),
            "{msg}"
        );
        assert_eq!(
            sqlstate_of("PERFORM ops_set_source('groups', 'opsmeter.groups_pkey')"),
            "42809"
        );
        // Nothing was registered by the failing calls.
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM opsmeter.sources").unwrap(),
            Some(0)
        );
    }

    #[pg_test]
    fn a_source_that_loses_a_column_fails_at_use() {
        Spi::run(
            "CREATE TABLE g3 (id bigint, platform text);
             SELECT ops_set_source('groups', 'g3');
             ALTER TABLE g3 DROP COLUMN platform;",
        )
        .unwrap();
        let status =
            Spi::get_one::<String>("SELECT status FROM ops_sources() WHERE role = 'groups'")
                .unwrap()
                .unwrap();
        assert!(status.contains("no column \"platform\""), "{status}");
        Spi::run("SELECT ops_reset_source('groups')").unwrap();
        let status =
            Spi::get_one::<String>("SELECT status FROM ops_sources() WHERE role = 'groups'")
                .unwrap();
        assert_eq!(status.as_deref(), Some("ok"));
    }
}

#!/usr/bin/env bash
# Every released version upgrades to the current one with the same result as a fresh install:
# for each frozen sql/opsmeter--<old>.sql, create the extension at <old> in a scratch database,
# ALTER EXTENSION opsmeter UPDATE, and compare the extension's objects (definitions, flags,
# comments, config tables) with a fresh CREATE EXTENSION; rows of the raw log tables survive.
#   check-upgrade.sh SOCKDIR PORT
source "$(dirname "$0")/common.sh"
cd "$ROOT"
sock="${1:?sockdir}"; port="${2:?port}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
extdir="$("$PG_CONFIG" --sharedir)/extension"
PSQL=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -U postgres)

# The catalog fingerprint of the installed extension, one line per member object.
read -r -d '' FINGERPRINT <<'SQL' || true
WITH m AS (
    SELECT classid, objid FROM pg_depend
     WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
       AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'opsmeter')
)
SELECT pg_describe_object(m.classid, m.objid, 0) || ' | ' ||
       coalesce(obj_description(m.objid, (SELECT relname FROM pg_class WHERE oid = m.classid)), '<no comment>') || ' | ' ||
       coalesce(CASE m.classid
         WHEN 'pg_proc'::regclass THEN (
             SELECT concat_ws(' ', p.prokind::text, pg_get_function_arguments(p.oid), '->',
                              pg_get_function_result(p.oid), p.provolatile, p.proparallel,
                              p.proisstrict, p.proconfig::text, p.prosrc,
                              (SELECT concat_ws(' ', a.aggtransfn, a.aggtranstype::regtype, a.aggcombinefn,
                                                a.aggfinalfn, a.aggtransspace)
                                 FROM pg_aggregate a WHERE a.aggfnoid = p.oid))
               FROM pg_proc p WHERE p.oid = m.objid)
         WHEN 'pg_class'::regclass THEN (
             SELECT c.relkind::text || ' ' || string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                                           || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END, ', ' ORDER BY a.attnum)
               FROM pg_class c LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
              WHERE c.oid = m.objid GROUP BY c.relkind)
         WHEN 'pg_type'::regclass THEN (
             SELECT concat_ws(' ', t.typtype, t.typinput, t.typoutput, t.typreceive, t.typsend, t.typstorage, t.typalign)
               FROM pg_type t WHERE t.oid = m.objid)
       END, '')
  FROM m
UNION ALL
SELECT 'config: ' || unnest(extconfig)::regclass::text FROM pg_extension WHERE extname = 'opsmeter'
ORDER BY 1;
SQL

# Rows in the raw log tables before the upgrade (they become partitioned by day in 0.7.0): the
# same rows after it, each in its day's partition (one at created_at 'infinity' in the default
# partition), and the ids go on from the old sequences.
read -r -d '' SEED <<'SQL' || true
INSERT INTO opsmeter.usage_logs (created_at, group_id, model, input_tokens, duration_ms)
SELECT timestamptz '2026-11-20 00:00+00' + i * interval '37 minutes', 1 + i % 5, 'm' || i % 3, i, i * 7
  FROM generate_series(1, 500) i;
INSERT INTO opsmeter.usage_logs (created_at, group_id, model) VALUES ('infinity', 1, 'never');
INSERT INTO opsmeter.error_logs (created_at, platform, group_id, status_code, error_message)
SELECT timestamptz '2026-11-21 00:00+00' + i * interval '41 minutes', 'p' || i % 2, 1 + i % 5, 500, 'e' || i
  FROM generate_series(1, 200) i;
INSERT INTO opsmeter.log_records (created_at, model_name, status_code, latency_ms)
SELECT timestamptz '2026-11-19 12:00+00' + i * interval '53 minutes', 'm' || i % 4, 200, i
  FROM generate_series(1, 300) i;
SQL
ROWS="SELECT (SELECT count(*) || ':' || md5(string_agg(u::text, ',' ORDER BY id)) FROM opsmeter.usage_logs u) || ' ' ||
             (SELECT count(*) || ':' || md5(string_agg(e::text, ',' ORDER BY id)) FROM opsmeter.error_logs e) || ' ' ||
             (SELECT count(*) || ':' || md5(string_agg(l::text, ',' ORDER BY id)) FROM opsmeter.log_records l)"
read -r -d '' PLACED <<'SQL' || true
WITH n AS (INSERT INTO opsmeter.usage_logs (created_at) VALUES ('2026-11-20 12:00+00') RETURNING id)
SELECT (SELECT count(*) FROM opsmeter.usage_logs_default WHERE created_at = 'infinity') = 1
   AND (SELECT count(*) FROM opsmeter.usage_logs_default) + (SELECT count(*) FROM opsmeter.error_logs_default)
       + (SELECT count(*) FROM opsmeter.log_records_default) = 1
   AND NOT EXISTS (SELECT 1 FROM opsmeter.usage_logs u JOIN ops_log_partitions() p ON p.partition = u.tableoid
                    WHERE NOT p.is_default AND p.day IS DISTINCT FROM (u.created_at AT TIME ZONE 'UTC')::date)
   AND (SELECT count(*) FROM ops_log_partitions() WHERE day IS NOT NULL) > 10
   AND n.id = 502
  FROM n
SQL
# Queue state in flight across the upgrade (0.5.0 on): ten operations, three under a live lease,
# two under one that has expired (ended by hand, as 0.5.0 .. 0.8.0 kept it: lease_expires_at and
# available_at). After the upgrade a claim hands out the five fresh and the two expired ones and
# none of the live lease's; the lease rows left are the live one and the new claim's.
read -r -d '' QUEUE_SEED <<'SQL' || true
INSERT INTO opsmeter.operations (op_id, "timestamp")
SELECT 'u-' || i, timestamptz '2026-11-01 00:00+00' + i * interval '1 second' FROM generate_series(1, 10) i;
SELECT count(*) FROM ops_op_claim(3, '1 hour');
CREATE TEMP TABLE c AS SELECT op_id FROM ops_op_claim(2, '1 hour');
UPDATE opsmeter.operations o SET lease_expires_at = now() - interval '1 second',
       available_at = now() - interval '1 second'
  FROM c WHERE o.op_id = c.op_id;
SQL
read -r -d '' QUEUE_CHECK <<'SQL' || true
SELECT (SELECT string_agg(op_id, ',' ORDER BY op_id) FROM ops_op_claim(100))
       || ' ' || (SELECT count(*) FROM opsmeter.leases)
SQL
"${PSQL[@]}" -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS opsmeter_fresh" -c "CREATE DATABASE opsmeter_fresh"
"${PSQL[@]}" -d opsmeter_fresh -c "CREATE EXTENSION opsmeter"
fresh="$("${PSQL[@]}" -d opsmeter_fresh -Atc "$FINGERPRINT")"
checked=0
for frozen in sql/opsmeter--*.sql; do
    old="$(basename "$frozen" .sql)"; old="${old#opsmeter--}"
    case "$old" in *--*|"$version") continue ;; esac
    # Old versions' install scripts are not shipped by `cargo pgrx install`; put the frozen copy
    # where CREATE EXTENSION ... VERSION finds it.
    install -m 644 "$frozen" "$extdir/opsmeter--$old.sql"
    "${PSQL[@]}" -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS opsmeter_upgrade" -c "CREATE DATABASE opsmeter_upgrade"
    "${PSQL[@]}" -d opsmeter_upgrade -c "CREATE EXTENSION opsmeter VERSION '$old'" -c "$SEED"
    # From 0.7.0 on the log tables are partitioned already: the seeded rows sit in the default
    # partitions until the partitions job moves them, as it would have before the upgrade.
    if [ "$(printf '%s\n' 0.7.0 "$old" | sort -V | head -1)" = 0.7.0 ]; then
        "${PSQL[@]}" -d opsmeter_upgrade -c "SET client_min_messages = warning" \
            -c "SELECT ops_run_job('partitions')" >/dev/null
    fi
    queue=0
    if [ "$(printf '%s\n' 0.5.0 "$old" | sort -V | head -1)" = 0.5.0 ]; then
        queue=1
        "${PSQL[@]}" -d opsmeter_upgrade -c "$QUEUE_SEED" >/dev/null
    fi
    before="$("${PSQL[@]}" -d opsmeter_upgrade -Atc "$ROWS")"
    "${PSQL[@]}" -d opsmeter_upgrade -c "ALTER EXTENSION opsmeter UPDATE TO '$version'"
    after="$("${PSQL[@]}" -d opsmeter_upgrade -Atc "$ROWS")"
    [ "$before" = "$after" ] || die "upgrading $old -> $version changed the log tables' rows ($before -> $after)"
    placed="$("${PSQL[@]}" -d opsmeter_upgrade -Atc "$PLACED")"
    [ "$placed" = t ] || die "after upgrading $old -> $version the log rows are not in their day partitions, or ids do not continue"
    if [ "$queue" = 1 ]; then
        got="$("${PSQL[@]}" -d opsmeter_upgrade -Atc "$QUEUE_CHECK")"
        [ "$got" = "u-10,u-4,u-5,u-6,u-7,u-8,u-9 2" ] \
            || die "after upgrading $old -> $version the queue hands out '$got', expected the 5 fresh and 2 expired operations and 2 lease rows"
    fi
    upgraded="$("${PSQL[@]}" -d opsmeter_upgrade -Atc "$FINGERPRINT")"
    if ! diff -u <(echo "$fresh") <(echo "$upgraded"); then
        die "upgrading $old -> $version differs from a fresh $version install (diff above: - fresh, + upgraded)"
    fi
    echo "test upgrade $old -> $version             ... ok"
    checked=$((checked + 1))
done
echo "upgrade paths checked: $checked"

#!/usr/bin/env bash
# Every released version upgrades to the current one with the same result as a fresh install:
# for each frozen sql/opsmeter--<old>.sql, create the extension at <old> in a scratch database,
# ALTER EXTENSION opsmeter UPDATE, and compare the extension's objects (definitions, flags,
# comments, config tables) with a fresh CREATE EXTENSION.
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
    "${PSQL[@]}" -d opsmeter_upgrade -c "CREATE EXTENSION opsmeter VERSION '$old'" \
        -c "ALTER EXTENSION opsmeter UPDATE TO '$version'"
    upgraded="$("${PSQL[@]}" -d opsmeter_upgrade -Atc "$FINGERPRINT")"
    if ! diff -u <(echo "$fresh") <(echo "$upgraded"); then
        die "upgrading $old -> $version differs from a fresh $version install (diff above: - fresh, + upgraded)"
    fi
    echo "test upgrade $old -> $version             ... ok"
    checked=$((checked + 1))
done
echo "upgrade paths checked: $checked"

#!/usr/bin/env bash
# `make demo`: install what is missing, build and install opsmeter (release), start a throwaway
# cluster owned by the postgres user in .demo/ with opsmeter and pg_cron preloaded and
# opsmeter's background worker running in database opsmeter_demo, create the extension there,
# load a generated day of gateway traffic, wait for the worker's jobs to turn ops_health()
# green by themselves, and print a report plus the psql line to connect. Safe to run again;
# `make demo-stop` stops the cluster.
#   DEMO_PORT (55432), DEMO_ROWS (200000 usage rows), DEMO_DAY (yesterday, UTC), SOCKDIR
source "$(dirname "$0")/common.sh"
cd "$ROOT"

DEMO_PORT="${DEMO_PORT:-55432}"
DEMO_ROWS="${DEMO_ROWS:-200000}"
DB=opsmeter_demo

"$ROOT/scripts/deps.sh"

say "building and installing opsmeter (release)"
# A running demo cluster maps the library that is about to be replaced: stop it first.
"$ROOT/scripts/cluster.sh" stop .demo >/dev/null
install_extension demo-install.log --release

say "starting the demo cluster in .demo (port $DEMO_PORT)"
"$ROOT/scripts/cluster.sh" start .demo "$DEMO_PORT" \
    "shared_preload_libraries = 'opsmeter,pg_cron'" "cron.database_name = '$DB'" \
    "cron.use_background_workers = on" "opsmeter.database = '$DB'"
SOCK="$("$ROOT/scripts/cluster.sh" sockdir .demo)"
PSQL=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$DEMO_PORT" -U postgres)

if [ "$("${PSQL[@]}" -d postgres -Atc "SELECT count(*) FROM pg_database WHERE datname = '$DB'")" = 0 ]; then
    "${PSQL[@]}" -d postgres -c "CREATE DATABASE $DB"
fi
"${PSQL[@]}" -d "$DB" -c "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS pg_cron" \
    -c "CREATE EXTENSION IF NOT EXISTS opsmeter" -c "ALTER EXTENSION opsmeter UPDATE"

DAY_ARGS=()
[ -n "${DEMO_DAY:-}" ] && DAY_ARGS=(-v "day=$DEMO_DAY")
say "loading a day of gateway traffic ($DEMO_ROWS requests)"
"${PSQL[@]}" -d "$DB" "${DAY_ARGS[@]}" -v "usage_rows=$DEMO_ROWS" -f "$ROOT/bench/traffic.sql" >/dev/null

say "loading a week of log records and two days of request records"
"${PSQL[@]}" -d "$DB" -f "$ROOT/scripts/demo-records.sql" >/dev/null

say "opsmeter's background worker runs the jobs by itself (no pg_cron line needed)"
# earlier demos scheduled the jobs with pg_cron; the worker does it now
"${PSQL[@]}" -d "$DB" -Atc "SELECT count(cron.unschedule(jobid)) FROM cron.job WHERE jobname LIKE 'opsmeter%'" >/dev/null
for _ in $(seq 1 60); do
    green=$("${PSQL[@]}" -d "$DB" -Atc "SELECT count(*) FILTER (WHERE last_status = 'ok') = 4 FROM ops_health()
                                         WHERE job IN ('rollup', 'daily_stats', 'partitions', 'retention')")
    [ "$green" = t ] && break
    sleep 1
done
[ "$green" = t ] || echo "(the worker has not run every job yet: see ops_health() below and .demo/log)"

say "report"
"$PG_BIN/psql" -X -v ON_ERROR_STOP=1 -h "$SOCK" -p "$DEMO_PORT" -U postgres -d "$DB" \
    -f "$ROOT/scripts/demo-report.sql"

echo
echo "Connect with:"
echo "  psql -h $SOCK -p $DEMO_PORT -U postgres $DB"
echo "Stop with: make demo-stop"

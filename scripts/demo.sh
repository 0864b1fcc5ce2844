#!/usr/bin/env bash
# `make demo`: install what is missing, build and install opsmeter (release), start a throwaway
# cluster owned by the postgres user in .demo/ with opsmeter and pg_cron preloaded, create
# database opsmeter_demo with the extension, load a generated day of gateway traffic, and print
# a report plus the psql line to connect. Safe to run again; `make demo-stop` stops the cluster.
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
    "cron.use_background_workers = on"
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

say "scheduling opsmeter's jobs with pg_cron (the README's recipe)"
"${PSQL[@]}" -d "$DB" -Atc "SELECT cron.schedule('opsmeter-rollup', '*/5 * * * *', \$\$SELECT ops_rollup_catch_up()\$\$)" \
    -c "SELECT cron.schedule('opsmeter-daily-stats', '5 0 * * *', \$\$SELECT ops_daily_stats_run()\$\$)" \
    -c "SELECT cron.schedule('opsmeter-records', '15 0 * * *', \$\$SELECT ops_create_record_partitions((now() AT TIME ZONE 'UTC')::date, (now() AT TIME ZONE 'UTC')::date + 2), ops_cleanup_records(now() - interval '30 days')\$\$)" >/dev/null

say "report"
"$PG_BIN/psql" -X -v ON_ERROR_STOP=1 -h "$SOCK" -p "$DEMO_PORT" -U postgres -d "$DB" \
    -f "$ROOT/scripts/demo-report.sql"

echo
echo "Connect with:"
echo "  psql -h $SOCK -p $DEMO_PORT -U postgres $DB"
echo "Stop with: make demo-stop"

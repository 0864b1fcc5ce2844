#!/usr/bin/env bash
# `make test`: every test layer, in order, failing on the first failure.
#   1. core      plain Rust #[test]s of src/cores (no PostgreSQL)
#   2. pg_test   #[pg_test]s inside a PostgreSQL that cargo-pgrx starts (as the postgres user)
#   3. regress   SQL files in tests/regress run by pg_regress against a throwaway cluster,
#                plus: the install script matches its frozen sql/ copy, a pg_dump/restore
#                round trip, every frozen old version upgrades to a fresh install's catalog, and
#                the concurrency tests in tests/concurrency (several real sessions), and the
#                README's pg_cron recipe run by a real pg_cron (tests/cron), and the background
#                worker in a cluster preloading opsmeter and pg_cron (tests/worker)
# Prints each runner's summary and a closing total.
source "$(dirname "$0")/common.sh"
cd "$ROOT"

"$ROOT/scripts/deps.sh"

LOGS="$(pg_dir .test)"
chmod 755 "$LOGS"
TEST_PORT="${TEST_PORT:-55433}"
declare -A PASSED=([core]=0 [pg_test]=0 [regress]=0)
# LAYERS="regress" make test   runs a subset while developing; CI runs all three.
LAYERS="${LAYERS:-core pg_test regress}"
want() { [[ " $LAYERS " == *" $1 "* ]]; }

# The demo cluster maps the installed library; replacing the file under it can crash it.
if [ -f "$ROOT/.demo/data/PG_VERSION" ]; then
    say "stopping the demo cluster (its library is about to be replaced; make demo restarts it)"
    "$ROOT/scripts/cluster.sh" stop .demo
fi

count_cargo() { grep -E '^test result: ok\.' "$1" | awk '{s += $4} END {print s + 0}'; }

if want core; then
say "layer 1/3: core unit and property tests (cargo test --lib cores::)"
cargo test --lib cores:: 2>&1 | tee "$LOGS/core.log" | grep -E '^(test result|running|error|failures|---- )' || true
[ "${PIPESTATUS[0]}" -eq 0 ] || die "core tests failed (log: $LOGS/core.log)"
PASSED[core]=$(count_cargo "$LOGS/core.log")
fi

if want pg_test; then
say "layer 2/3: #[pg_test]s (cargo pgrx test pg${PG_MAJOR} --runas postgres)"
PGRX_DATA="$LOGS/pgrx-data"
own_dir "$PGRX_DATA"
set +e
cargo pgrx test "pg${PG_MAJOR}" "tests::pg_" --runas postgres --pgdata "$PGRX_DATA" >"$LOGS/pg_test.log" 2>&1
rc=$?
set -e
grep -E '^(test |test result)' "$LOGS/pg_test.log" | grep -v '^test result: ok. 0 passed' || true
if [ "$rc" -ne 0 ]; then
    grep -E 'Client Error' -A6 "$LOGS/pg_test.log" | head -60 || true
    die "pg_test layer failed (log: $LOGS/pg_test.log)"
fi
PASSED[pg_test]=$(count_cargo "$LOGS/pg_test.log")
fi

if want regress; then
say "layer 3/3: SQL regression tests (pg_regress)"
install_extension install.log
"$ROOT/scripts/check-sql-frozen.sh"
# a new cluster every run, as on a fresh machine (its files live under /tmp and outlive a clone)
"$ROOT/scripts/cluster.sh" stop .test/cluster >/dev/null
rm -rf "${LOGS:?}/cluster/data" "$LOGS/cluster/log"
"$ROOT/scripts/cluster.sh" start .test/cluster "$TEST_PORT" \
    "timezone = 'UTC'" "shared_preload_libraries = 'pg_cron'" "cron.database_name = 'opsmeter_cron'" \
    "cron.use_background_workers = on"
trap '"$ROOT/scripts/cluster.sh" stop .test/cluster >/dev/null' EXIT
SOCK="$("$ROOT/scripts/cluster.sh" sockdir .test/cluster)"
# the pg_cron recipe: scheduled now, checked at the end (pg_cron 1.4 runs jobs by the minute)
"$ROOT/tests/cron/rollups.sh" start "$SOCK" "$TEST_PORT"
OUT="$LOGS/regress"
rm -rf "$OUT"; mkdir -p "$OUT"
set +e
"$(dirname "$PG_CONFIG")/../lib/pgxs/src/test/regress/pg_regress" \
    --bindir="$PG_BIN" --host="$SOCK" --port="$TEST_PORT" --user=postgres \
    --inputdir="$ROOT/tests/regress" --outputdir="$OUT" --dbname=opsmeter_regress \
    --schedule="$ROOT/tests/regress/schedule" 2>&1 | tee "$LOGS/regress.log"
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -ne 0 ]; then
    [ -f "$OUT/regression.diffs" ] && head -80 "$OUT/regression.diffs"
    die "pg_regress failed (diffs: $OUT/regression.diffs)"
fi
PASSED[regress]=$(grep -cE '\.\.\. ok' "$LOGS/regress.log" || true)

# pg_dump/restore of the regression database: stored sketches and the extension's tables
# survive (the sketch file leaves table sketch_dump_check behind for this).
PSQL=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$TEST_PORT" -U postgres)
"$PG_BIN/pg_dump" -h "$SOCK" -p "$TEST_PORT" -U postgres opsmeter_regress >"$LOGS/regress-dump.sql"
"${PSQL[@]}" -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS opsmeter_restore" -c "CREATE DATABASE opsmeter_restore"
"${PSQL[@]}" -d opsmeter_restore -f "$LOGS/regress-dump.sql" >"$LOGS/restore.log" 2>&1 \
    || { tail -20 "$LOGS/restore.log"; die "restoring the pg_dump of the regression database failed"; }
q="SELECT id, s::text, ops_quantile(s, 0.99) FROM sketch_dump_check ORDER BY id;
   SELECT h::text FROM opsmeter.metrics_hourly h ORDER BY bucket_start, platform, group_id;
   SELECT d::text FROM opsmeter.metrics_daily d ORDER BY bucket_date, platform, group_id;
   SELECT count(*), md5(string_agg(r::text, ',' ORDER BY r::text)) FROM opsmeter.request_records r;
   SELECT * FROM ops_record_partitions();
   SELECT l::text FROM opsmeter.record_latest l ORDER BY 1;
   SELECT c::text FROM opsmeter.circuit_states c ORDER BY 1;
   SELECT d::text FROM opsmeter.daily_stats d ORDER BY 1;
   SELECT m::text FROM opsmeter.daily_model_stats m ORDER BY 1;
   SELECT o::text FROM opsmeter.operations o ORDER BY op_id;
   SELECT r::text FROM opsmeter.retries r ORDER BY op_id;
   SELECT c::text FROM opsmeter.cursors c ORDER BY cursor_key;
   SELECT s::text FROM opsmeter.billing_sources s ORDER BY source_id;
   SELECT y::text FROM opsmeter.billing_source_sync y ORDER BY source_id;
   SELECT p::text FROM opsmeter.billing_profiles p ORDER BY account_id;
   SELECT c::text FROM opsmeter.billing_checkpoints c ORDER BY storage_node_id, account_id;
   SELECT m::text FROM opsmeter.billing_minutes m ORDER BY storage_node_id, account_id, minute;
   SELECT l::text FROM opsmeter.billing_ledger l ORDER BY id;
   SELECT q::text FROM opsmeter.billing_quota q ORDER BY account_id, period_start;
   SELECT count(*), md5(string_agg(u::text, ',' ORDER BY id)) FROM opsmeter.usage_logs u;
   SELECT count(*), md5(string_agg(e::text, ',' ORDER BY id)) FROM opsmeter.error_logs e;
   SELECT count(*), md5(string_agg(l::text, ',' ORDER BY id)) FROM opsmeter.log_records l;
   SELECT * FROM ops_log_partitions();
   SELECT r::text FROM opsmeter.job_runs r ORDER BY id;
   SELECT s::text FROM opsmeter.job_state s ORDER BY job"
if diff <("${PSQL[@]}" -d opsmeter_regress -Atc "$q") <("${PSQL[@]}" -d opsmeter_restore -Atc "$q") >/dev/null \
   && [ "$("${PSQL[@]}" -d opsmeter_restore -Atc "SELECT count(*) FROM sketch_dump_check")" -gt 0 ] \
   && [ "$("${PSQL[@]}" -d opsmeter_restore -Atc "SELECT count(*) FROM opsmeter.metrics_hourly")" -gt 0 ] \
   && [ "$("${PSQL[@]}" -d opsmeter_restore -Atc "SELECT count(*) FROM opsmeter.request_records")" -gt 0 ] \
   && [ "$("${PSQL[@]}" -d opsmeter_restore -Atc "SELECT count(*) FROM opsmeter.daily_stats")" -gt 0 ] \
   && [ "$("${PSQL[@]}" -d opsmeter_restore -Atc "SELECT count(*) FROM opsmeter.operations")" -gt 0 ] \
   && [ "$("${PSQL[@]}" -d opsmeter_restore -Atc "SELECT count(*) FROM opsmeter.cursors")" -gt 0 ] \
   && [ "$("${PSQL[@]}" -d opsmeter_restore -Atc "SELECT count(*) FROM opsmeter.billing_ledger")" -gt 0 ] \
   && [ "$("${PSQL[@]}" -d opsmeter_restore -Atc "SELECT count(*) FROM ops_log_partitions() WHERE day IS NOT NULL")" -gt 0 ] \
   && [ "$("${PSQL[@]}" -d opsmeter_restore -Atc "SELECT count(*) FROM opsmeter.job_runs")" -gt 0 ]; then
    echo "test pg_dump/restore                ... ok"
    PASSED[regress]=$(( PASSED[regress] + 1 ))
else
    die "sketches, rollup rows, records, daily stats, queue, billing, log partitions or job tables differ after pg_dump/restore"
fi

"$ROOT/scripts/check-upgrade.sh" "$SOCK" "$TEST_PORT" | tee "$LOGS/upgrade.log"
PASSED[regress]=$(( PASSED[regress] + $(grep -c '\.\.\. ok' "$LOGS/upgrade.log") ))

# several real sessions rolling up overlapping windows at once
"$ROOT/tests/concurrency/rollups.sh" "$SOCK" "$TEST_PORT" | tee "$LOGS/concurrency.log"
"$ROOT/tests/concurrency/records.sh" "$SOCK" "$TEST_PORT" | tee -a "$LOGS/concurrency.log"
"$ROOT/tests/concurrency/queue.sh" "$SOCK" "$TEST_PORT" | tee -a "$LOGS/concurrency.log"
"$ROOT/tests/concurrency/billing.sh" "$SOCK" "$TEST_PORT" | tee -a "$LOGS/concurrency.log"
# the reference billing fetcher against a stub exporter
"$ROOT/tests/billing/fetcher.sh" "$SOCK" "$TEST_PORT" | tee -a "$LOGS/concurrency.log"
PASSED[regress]=$(( PASSED[regress] + $(grep -c '\.\.\. ok' "$LOGS/concurrency.log") ))

CRON_SERVER_LOG="$LOGS/cluster/log" "$ROOT/tests/cron/rollups.sh" check "$SOCK" "$TEST_PORT" | tee "$LOGS/cron.log"
PASSED[regress]=$(( PASSED[regress] + $(grep -c '\.\.\. ok' "$LOGS/cron.log") ))

# the background worker, in a cluster of its own that preloads opsmeter and pg_cron
"$ROOT/tests/worker/worker.sh" "$((TEST_PORT + 1))" | tee "$LOGS/worker.log"
PASSED[regress]=$(( PASSED[regress] + $(grep -c '\.\.\. ok' "$LOGS/worker.log") ))
fi

total=$(( PASSED[core] + PASSED[pg_test] + PASSED[regress] ))
echo
echo "core: ${PASSED[core]} passed; pg_test: ${PASSED[pg_test]} passed; regress: ${PASSED[regress]} passed"
echo "opsmeter: ${total} passed, 0 failed"

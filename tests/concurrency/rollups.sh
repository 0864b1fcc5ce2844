#!/usr/bin/env bash
# Concurrency test for the rollups (SPEC §2: "concurrent calls on overlapping windows never fail
# and never leave a wrong row"), with several real sessions against a running server.
#   tests/concurrency/rollups.sh SOCKDIR PORT
# Loads a generated day into a fresh database, then SESSIONS psql sessions each run ROUNDS
# transactions at once: ops_upsert_hourly on a random window overlapping the others (some
# half-hour, some spanning midnight), ops_upsert_daily, or ops_rollup_catch_up; inside the same
# transaction each checks its window against the exact oracle. Every session must exit 0 with
# no mismatch, and the tables must match the oracle at the end.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/scripts/common.sh"
SOCK="${1:?socket dir}"; PORT="${2:?port}"
SESSIONS="${SESSIONS:-4}"; ROUNDS="${ROUNDS:-6}"
DB=opsmeter_concurrency
PSQL=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres)
cd "$ROOT"

"${PSQL[@]}" -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
"${PSQL[@]}" -d "$DB" -c "CREATE EXTENSION opsmeter" -f tests/oracle/rollups_oracle.sql -f tests/oracle/compare.sql >/dev/null
"${PSQL[@]}" -d "$DB" -v day=2026-11-21 -v usage_rows=40000 -v seed=0.7 -f bench/traffic.sql >/dev/null
# a second day, so windows can span midnight
"${PSQL[@]}" -d "$DB" -c "INSERT INTO opsmeter.usage_logs (created_at, group_id, input_tokens, duration_ms, first_token_ms)
    SELECT created_at + interval '1 day', group_id, input_tokens, duration_ms + 1, first_token_ms FROM opsmeter.usage_logs" \
    -c "INSERT INTO opsmeter.error_logs (created_at, platform, group_id, status_code, upstream_status_code, error_owner, is_business_limited)
    SELECT created_at + interval '1 day', platform, group_id, status_code, upstream_status_code, error_owner, is_business_limited FROM opsmeter.error_logs" >/dev/null

session() {
    local s=$1 r kind h len from to
    RANDOM=$((s * 7919))
    for r in $(seq "$ROUNDS"); do
        kind=$((RANDOM % 6)); h=$((RANDOM % 40)); len=$((1 + RANDOM % 12))
        from="TIMESTAMPTZ '2026-11-21 00:00+00' + interval '$h hours 30 minutes'"
        to="$from + interval '$len hours'"
        case $kind in
        # daily rows and catch-up depend on which hours others have rolled up so far: they must
        # not fail; the final check below judges their rows
        0) echo "SELECT ops_upsert_daily($from, $to);" ;;
        1) echo "SELECT ops_rollup_catch_up();" ;;
        *) echo "BEGIN; SELECT ops_upsert_hourly($from, $to);
                 SELECT 'bad window ' || d::text FROM oracle.hourly_diff(date_bin('1 hour', $from, '2000-01-03 00:00+00'),
                                                                        date_bin('1 hour', $to - interval '1 microsecond', '2000-01-03 00:00+00') + interval '1 hour') d
                  WHERE d.missing + d.extra + d.bad_counts + d.bad_percentiles + d.bad_avg_max > 0; COMMIT;" ;;
        esac
    done | "${PSQL[@]}" -d "$DB" -At
}

pids=()
for s in $(seq "$SESSIONS"); do
    session "$s" >"$(pg_dir .test)/concurrency-$s.out" 2>&1 &
    pids+=($!)
done
failed=0
for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then failed=1; echo "session $((i + 1)) failed:"; tail -5 "$(pg_dir .test)/concurrency-$((i + 1)).out"; fi
done
bad=$(cat "$(pg_dir .test)"/concurrency-*.out | grep -c '^bad' || true)
[ "$failed" = 0 ] || die "a concurrent rollup session failed"
[ "$bad" = 0 ] || { grep -h '^bad' "$(pg_dir .test)"/concurrency-*.out | head; die "a concurrent rollup left a wrong row"; }
echo "test concurrent rollups ($SESSIONS sessions x $ROUNDS)  ... ok"

# afterwards: one more full pass, and every row matches the oracle
final=$("${PSQL[@]}" -d "$DB" -At -c "SELECT ops_upsert_hourly('2026-11-21 00:00+00', '2026-11-23 00:00+00')" \
    -c "SELECT ops_upsert_daily('2026-11-21 00:00+00', '2026-11-23 00:00+00')" \
    -c "SELECT d.missing + d.extra + d.bad_counts + d.bad_percentiles + d.bad_avg_max FROM oracle.hourly_diff('2026-11-21 00:00+00', '2026-11-23 00:00+00') d" \
    -c "SELECT d.missing + d.extra + d.bad_counts + d.bad_percentiles + d.bad_avg_max FROM oracle.daily_diff('2026-11-21', '2026-11-23') d" | tail -2 | tr '\n' ' ')
[ "$final" = "0 0 " ] || die "rollup tables differ from the oracle after the concurrent run: $final"
echo "test rollups match the oracle after concurrency ... ok"
"${PSQL[@]}" -d postgres -c "DROP DATABASE $DB"

#!/usr/bin/env bash
# Test of the reference billing fetcher (scripts/billing-fetch.py, 0.6.0) against a stub
# exporter (tests/billing/stub_exporter.py), on a running server.
#   tests/billing/fetcher.sh SOCKDIR PORT
# The stub serves a generated stream: 3 accounts x 50 snapshots 10 s apart, 35 to 27 minutes
# ago, counters growing (some steps by 0), one counter reset, one sample with a non-UUID
# account, and 2 snapshots in the future. Checks:
# 1. the fetcher pages through the window (--limit 7: 8 pages, cursor on every page after the
#    first) and the ledger has, per account and minute, exactly what the stream bills
#    (computed here from the stream file: first sample in full, a reset bills nothing, the
#    sum of the positive deltas otherwise); the quota rows agree;
# 2. last_completed_until is the window's until (now() - opsmeter.billing_delay);
# 3. running it again, and a second source reading the same exporter from scratch (--once,
#    then the rest), change nothing: every sample is a replay; a window with since > until is
#    closed by an empty page without asking the exporter;
# 4. faults: a page with has_more and an empty next_cursor -> exit 2, billing_status() not
#    healthy with last_error set, nothing moved; HTTP 500, a timeout, an unreachable exporter,
#    a next_cursor past the window asked for -> exit 3, nothing moved or recorded; a malformed
#    snapshot (an ERROR of billing_advance_window) and an unknown source -> exit 1; a clean
#    run afterwards is healthy again.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/scripts/common.sh"
SOCK="${1:?socket dir}"; PORT="${2:?port}"
DB=opsmeter_billing_fetch
PSQL=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres)
WORK="$(mktemp -d /tmp/opsmeter-billing-fetch.XXXXXX)"
cd /
q() { "${PSQL[@]}" -d "$DB" -At -c "$1"; }

STUB_PID=""
cleanup() {
    local rc=$?
    if [ -n "$STUB_PID" ]; then kill "$STUB_PID" 2>/dev/null || true; fi
    if [ "$rc" -eq 0 ] && [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; else echo "the run's files (KEEP=1 keeps them): $WORK" >&2; fi
}
trap cleanup EXIT

"${PSQL[@]}" -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
"${PSQL[@]}" -d "$DB" >/dev/null <<SQL
CREATE EXTENSION opsmeter;
ALTER DATABASE $DB SET opsmeter.billing_first_sample = 'full';
ALTER DATABASE $DB SET opsmeter.billing_reset_policy = 'skip';
ALTER DATABASE $DB SET opsmeter.billing_lookback = '1h';
ALTER DATABASE $DB SET opsmeter.billing_delay = '60s';
SELECT billing_source_upsert('stub-a', 'n1', 'prod');
SELECT billing_source_upsert('stub-b', 'n1', 'prod');
SQL

# --- the stub exporter ---------------------------------------------------------------------
STUB="$ROOT/tests/billing/stub_exporter.py"
python3 "$STUB" generate --out "$WORK/stream.json" --accounts 3 --count 50 --step 10 \
    --start-ago 2100 --reset 1:30 --future 2 --seed 7
python3 "$STUB" serve --snapshots "$WORK/stream.json" --port-file "$WORK/port" --pid-file "$WORK/pid" \
    --fault-file "$WORK/fault" --log "$WORK/requests" 2>"$WORK/stub.err" &
STUB_PID=$!
for _ in $(seq 100); do [ -s "$WORK/port" ] && [ -s "$WORK/pid" ] && break; sleep 0.05; done
[ -s "$WORK/port" ] || { cat "$WORK/stub.err" >&2; die "the stub exporter did not start"; }
STUB_PID="$(cat "$WORK/pid")"
URL="http://127.0.0.1:$(cat "$WORK/port")"

# fetch NAME SOURCE [ARGS...]: runs the fetcher; stdout in $WORK/NAME.out, stderr in
# $WORK/NAME.err, exit code in $RC.
fetch() {
    local name=$1 source=$2
    shift 2
    RC=0
    python3 "$ROOT/scripts/billing-fetch.py" --psql "$PG_BIN/psql" \
        --dsn "host=$SOCK port=$PORT user=postgres dbname=$DB" \
        --source "$source" --exporter-url "$URL" --limit 7 --timeout 1 "$@" \
        >"$WORK/$name.out" 2>"$WORK/$name.err" || RC=$?
}
# sum FILE FIELD: the sum of FIELD over the result lines in FILE
sum() { python3 -c 'import json, sys; print(sum(json.loads(l)[sys.argv[2]] for l in open(sys.argv[1])))' "$1" "$2"; }
state() {
    q "SELECT md5(string_agg(t, '|' ORDER BY t)) FROM (
           SELECT row(l.*)::text AS t FROM opsmeter.billing_ledger l
           UNION ALL SELECT row(q.*)::text FROM opsmeter.billing_quota q
           UNION ALL SELECT row(c.*)::text FROM opsmeter.billing_checkpoints c
           UNION ALL SELECT row(m.*)::text FROM opsmeter.billing_minutes m) s"
}
lcu() { q "SELECT coalesce(last_completed_until::text, 'none') FROM opsmeter.billing_source_sync WHERE source_id = '$1'"; }
show() { echo "--- $1: exit $RC"; cat "$WORK/$1.out" "$WORK/$1.err"; }

# --- 1. paging and billing -----------------------------------------------------------------
t0="$(q "SELECT now()")"
fetch first stub-a
[ "$RC" = 0 ] || { show first; die "the first fetch exited $RC"; }
[ "$(wc -l <"$WORK/first.out")" = 8 ] || { show first; die "50 snapshots at --limit 7 must take 8 pages"; }
[ "$(sum "$WORK/first.out" processed_samples)" = 150 ] && [ "$(sum "$WORK/first.out" skipped_samples)" = 1 ] \
    && [ "$(sum "$WORK/first.out" reset_samples)" = 1 ] && [ "$(sum "$WORK/first.out" replayed_samples)" = 0 ] \
    || { show first; die "the pages must process 150 samples, skip the non-UUID one, see the one reset"; }
[ "$(grep -c '"status": "partial"' "$WORK/first.out")" = 1 ] && [ "$(grep -c '"status": "ok"' "$WORK/first.out")" = 7 ] \
    || { show first; die "one page (the non-UUID sample) must be partial, the others ok"; }
[ "$(wc -l <"$WORK/requests")" = 8 ] && ! head -1 "$WORK/requests" | grep -q cursor= \
    && [ "$(tail -n +2 "$WORK/requests" | grep -c 'cursor=')" = 7 ] \
    || { cat "$WORK/requests"; die "the first request must have no cursor, the next 7 one each"; }
echo "test the fetcher pages through the window (8 pages of <= 7 snapshots, cursors) ... ok"

until_a="$(q "SELECT to_char(last_completed_until AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')
                FROM opsmeter.billing_source_sync WHERE source_id = 'stub-a'")"
# what the stream bills up to the window's end, per account and minute (and in total)
python3 - "$WORK/stream.json" "$until_a" >"$WORK/expected" <<'PY'
import json, sys, uuid
from collections import defaultdict
from datetime import datetime
at = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
until = at(sys.argv[2])
last, billed = {}, defaultdict(int)
for snap in sorted(json.load(open(sys.argv[1])), key=lambda s: at(s["sampled_at"])):
    t = at(snap["sampled_at"])
    if t > until:
        continue
    for x in snap["samples"]:
        try:
            acc = str(uuid.UUID(x["account_id"]))
        except ValueError:
            continue
        v = x["cumulative_bytes"]
        delta = v if acc not in last else (0 if v < last[acc] else v - last[acc])
        last[acc] = v
        if delta > 0:
            billed[acc, t.strftime("%Y-%m-%dT%H:%M")] += delta
for (acc, minute), b in sorted(billed.items()):
    print(f"{acc}|{minute}|{b}")
totals = defaultdict(int)
for (acc, _), b in billed.items():
    totals[acc] += b
for acc, b in sorted(totals.items()):
    print(f"{acc}|total|{b}")
PY
q "SELECT account_id || '|' || to_char(minute AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI') || '|' || sum(bytes)
     FROM opsmeter.billing_ledger GROUP BY account_id, minute ORDER BY 1" >"$WORK/ledger"
q "SELECT account_id || '|total|' || sum(bytes) FROM opsmeter.billing_ledger GROUP BY account_id ORDER BY 1" >>"$WORK/ledger"
diff "$WORK/expected" "$WORK/ledger" >"$WORK/ledger.diff" || { cat "$WORK/ledger.diff"; die "the ledger differs from what the stream bills"; }
[ "$(grep -c '|total|' "$WORK/ledger")" = 3 ] || die "expected 3 accounts in the ledger"
echo "test every account's ledger bytes per minute and in total equal the stream's deltas ($(grep '|total|' "$WORK/ledger" | cut -d'|' -f3 | paste -sd' ')) ... ok"

[ "$(q "SELECT count(*) FROM opsmeter.billing_minutes b JOIN opsmeter.billing_ledger l USING (storage_node_id, account_id, minute)
         WHERE b.bytes = l.bytes AND l.storage_node_id = 'prod:n1'")" = "$(q "SELECT count(*) FROM opsmeter.billing_ledger")" ] \
  && [ "$(q "SELECT count(*) FROM opsmeter.billing_minutes")" = "$(q "SELECT count(*) FROM opsmeter.billing_ledger")" ] \
  && [ "$(q "SELECT bool_and(q.billable_bytes = l.b AND q.included_used_bytes = 0) FROM opsmeter.billing_quota q
             JOIN (SELECT account_id, sum(billable_bytes) b FROM opsmeter.billing_ledger GROUP BY 1) l USING (account_id)")" = t ] \
  && [ "$(q "SELECT count(*) FROM opsmeter.billing_quota")" = 3 ] \
    || die "minute buckets, ledger rows and quota rows disagree"
[ "$(q "SELECT count(*) FROM billing_status() WHERE source_id = 'stub-a' AND healthy AND last_error IS NULL")" = 1 ] \
    || die "stub-a must be healthy after the first fetch"
echo "test minute buckets, ledger and quota rows agree, the source is healthy ... ok"

# --- 2. the window moved to its until --------------------------------------------------------
[ "$(q "SELECT last_completed_until BETWEEN timestamptz '$t0' - interval '60 s' AND now() - interval '60 s'
          FROM opsmeter.billing_source_sync WHERE source_id = 'stub-a'")" = t ] \
    || die "last_completed_until $(lcu stub-a) is not the window's until (started at $t0, delay 60 s)"
[ "$(tail -1 "$WORK/first.out" | python3 -c 'import json, sys; print(json.load(sys.stdin)["source"]["last_completed_until"])')" = "$until_a" ] \
    || die "the last page's result must show last_completed_until $until_a"
nth() { python3 -c 'import json, sys; print(sorted(json.load(open(sys.argv[1])), key=lambda s: s["sampled_at"])[int(sys.argv[2])]["sampled_at"])' "$WORK/stream.json" "$1"; }
[ "$(q "SELECT count(*) FROM opsmeter.billing_checkpoints WHERE sampled_at = timestamptz '$(nth 49)'")" = 3 ] \
    || die "each account's checkpoint must be the last snapshot before the window's until ($(nth 49))"
echo "test last_completed_until = the window's until (now() - delay, $until_a); future snapshots not fetched ... ok"

# --- 3. re-runs and replays ----------------------------------------------------------------
before="$(state)"
fetch again stub-a
[ "$RC" = 0 ] && [ "$(wc -l <"$WORK/again.out")" = 1 ] && [ "$(sum "$WORK/again.out" processed_samples)" = 0 ] \
    || { show again; die "a re-run must fetch one empty page"; }
[ "$(state)" = "$before" ] || die "a re-run changed the billing tables"
echo "test running the fetcher again changes nothing ... ok"

fetch once stub-b --once
seventh="$(nth 6)"
[ "$RC" = 0 ] && [ "$(wc -l <"$WORK/once.out")" = 1 ] \
    && [ "$(q "SELECT last_completed_until = timestamptz '$seventh' FROM opsmeter.billing_source_sync WHERE source_id = 'stub-b'")" = t ] \
    || { show once; die "--once must fetch one page and move stub-b to its 7th snapshot ($seventh), not $(lcu stub-b)"; }
fetch replay stub-b
[ "$RC" = 0 ] && [ "$(wc -l <"$WORK/replay.out")" = 7 ] \
    && [ "$(cat "$WORK/once.out" "$WORK/replay.out" | sum /dev/stdin replayed_samples)" = 150 ] \
    && [ "$(cat "$WORK/once.out" "$WORK/replay.out" | sum /dev/stdin written_minutes)" = 0 ] \
    || { show once; show replay; die "a second source over the same exporter must replay all 150 samples"; }
[ "$(state)" = "$before" ] || die "replaying the stream from a second source changed the billing tables"
echo "test --once takes one page; a second source re-reading the stream replays all 150 samples, nothing changes ... ok"

# since > until (the delay grew past the last collected point): an empty page closes the
# window without asking the exporter, and last_completed_until never moves back
q "ALTER DATABASE $DB SET opsmeter.billing_delay = '2h'"
lcu_a="$(lcu stub-a)"; requests="$(wc -l <"$WORK/requests")"
fetch empty stub-a
q "ALTER DATABASE $DB SET opsmeter.billing_delay = '60s'"
[ "$RC" = 0 ] && [ "$(wc -l <"$WORK/empty.out")" = 1 ] && grep -q '"status": "ok"' "$WORK/empty.out" \
    && [ "$(wc -l <"$WORK/requests")" = "$requests" ] && [ "$(lcu stub-a)" = "$lcu_a" ] && [ "$(state)" = "$before" ] \
    || { show empty; die "since > until must be closed by one empty page, without a request, nothing moved back"; }
echo "test since > until: one empty page, no exporter request, last_completed_until not moved back ... ok"

# --- 4. faults ------------------------------------------------------------------------------
lcu_a="$(lcu stub-a)"
echo bad_cursor >"$WORK/fault"
fetch badcursor stub-a
[ "$RC" = 2 ] || { show badcursor; die "has_more with an empty next_cursor must exit 2, not $RC"; }
[ "$(q "SELECT count(*) FROM billing_status() WHERE source_id = 'stub-a' AND NOT healthy
          AND last_error LIKE '%next_cursor is empty%' AND last_result->>'status' = 'error'")" = 1 ] \
    || { q "SELECT * FROM billing_status()"; die "billing_status() must show stub-a unhealthy with the cursor error"; }
[ "$(lcu stub-a)" = "$lcu_a" ] && [ "$(state)" = "$before" ] \
    || die "a bad cursor moved last_completed_until ($lcu_a -> $(lcu stub-a)) or billed"
echo "test has_more with an empty next_cursor: exit 2, not healthy, last_error set, nothing moved ... ok"

sync_a="$(q "SELECT row(y.*)::text FROM opsmeter.billing_source_sync y WHERE source_id = 'stub-a'")"
for fault in http500 hang unreachable future_cursor; do
    if [ "$fault" = unreachable ]; then
        URL_SAVED="$URL"; URL="http://127.0.0.1:1"
        fetch "$fault" stub-a
        URL="$URL_SAVED"
    else
        echo "$fault" >"$WORK/fault"
        fetch "$fault" stub-a
    fi
    [ "$RC" = 3 ] && [ ! -s "$WORK/$fault.out" ] && grep -q 'nothing was moved' "$WORK/$fault.err" \
        || { show "$fault"; die "exporter fault $fault must exit 3 with a message, not $RC"; }
    [ "$(q "SELECT row(y.*)::text FROM opsmeter.billing_source_sync y WHERE source_id = 'stub-a'")" = "$sync_a" ] \
        && [ "$(state)" = "$before" ] || die "exporter fault $fault changed the source's sync state or billed"
done
grep -q 'HTTP 500' "$WORK/http500.err" || { show http500; die "an HTTP 500 must be named"; }
grep -q 'next_cursor 2999-01-01T00:00:00Z is after the requested until' "$WORK/future_cursor.err" \
    || { show future_cursor; die "a next_cursor past the window must be named"; }
echo "test HTTP 500, a timeout, an unreachable exporter, a cursor past the window: exit 3, nothing moved or recorded ... ok"

echo bad_snapshot >"$WORK/fault"
fetch bad_snapshot stub-a
[ "$RC" = 1 ] && [ ! -s "$WORK/bad_snapshot.out" ] && grep -q 'sampled_at is not an RFC 3339 timestamp' "$WORK/bad_snapshot.err" \
    || { show bad_snapshot; die "a page billing_advance_window rejects must exit 1 with its ERROR, not $RC"; }
[ "$(q "SELECT row(y.*)::text FROM opsmeter.billing_source_sync y WHERE source_id = 'stub-a'")" = "$sync_a" ] \
    && [ "$(state)" = "$before" ] || die "a malformed page changed the source's sync state or billed"
echo "test a malformed snapshot: exit 1 with the ERROR, nothing moved or recorded ... ok"

fetch unknown nope
[ "$RC" = 1 ] && grep -q 'unknown' "$WORK/unknown.err" || { show unknown; die "an unknown source must exit 1 with the error"; }
fetch recover stub-a
[ "$RC" = 0 ] && [ "$(q "SELECT count(*) FROM billing_status() WHERE source_id = 'stub-a' AND healthy")" = 1 ] \
    && [ "$(state)" = "$before" ] || { show recover; die "a clean run after the faults must be healthy and bill nothing new"; }
echo "test an unknown source exits 1; a clean run after the faults is healthy again ... ok"

#!/usr/bin/env bash
# Billing from cumulative counters: throughput of one billing_ingest call on a page of
# snapshots (issue: billing, 0.6.0; SPEC §6). One run, one server:
#   bash bench/billing.sh     (BENCH_ACCOUNTS=2000 accounts, BENCH_SNAPSHOTS=100 snapshots a
#                              page, so 200 000 samples a page; BENCH_SEED_SNAPSHOTS=100, BENCH_RUNS=5)
# Data: one exporter (node n1, env prod) samples every account's cumulative byte counter every
# 10 s; counters grow by a per-account random rate (10 kB .. 10 MB a step), some steps idle, one
# account in ten idle throughout. Two pages of BENCH_SNAPSHOTS snapshots each, stored once as
# jsonb in bench.page; the second page crosses into the next UTC month (a fresh quota period).
# Half of the accounts have a billing profile (a quarter an included quota that runs out in the
# middle of the first page, a quarter one that never does); the others use the opsmeter.billing_*
# settings (an included quota of 200 MB a month, which some use up).
# Timed (median and fastest of BENCH_RUNS interleaved rounds, one session, after a warm-up):
#   opsmeter  billing_ingest('src1', page 1) on empty billing tables, then page 2 on top of it
#       (checkpoints exist), then page 2 again (every sample a replay); plus the reading half
#       (page 1 for a source that expects another node: parsed and checked, nothing billed) and
#       jsonb -> text of the page (what billing_ingest reads its argument with).
#   seed      the seed's pattern in our own words (bench/billing_baselines.sql: per sample read
#       checkpoint, read profile, read and update quota, upsert bucket, upsert ledger, write
#       checkpoint) on page 1, or its first BENCH_SEED_SNAPSHOTS snapshots, on empty tables.
#   floor     INSERT ... SELECT FROM jsonb_array_elements / jsonb_to_recordset of page 1 into a
#       table without indexes; and the same SELECT counted without the INSERT.
# Every timed statement is its own transaction; each round TRUNCATEs the tables first.
# Checked afterwards (the script fails otherwise): the result counts, the ledger bytes against
# the counters, opsmeter's rows against the seed pattern's row by row on the same page, quota
# rows against their ledger rows, and that a replay changes nothing.
# Writes bench/results/billing.md.
BENCH_RUNS="${BENCH_RUNS:-5}"
source "$(dirname "$0")/common.sh"
cd "$ROOT"
BENCH_ACCOUNTS="${BENCH_ACCOUNTS:-2000}"
BENCH_SNAPSHOTS="${BENCH_SNAPSHOTS:-100}"
BENCH_SEED_SNAPSHOTS="${BENCH_SEED_SNAPSHOTS:-$BENCH_SNAPSHOTS}"
A=$BENCH_ACCOUNTS; S=$BENCH_SNAPSHOTS; SS=$BENCH_SEED_SNAPSHOTS
[ "$SS" -ge 1 ] && [ "$SS" -le "$S" ] || die "BENCH_SEED_SNAPSHOTS must be 1 .. BENCH_SNAPSHOTS ($S)"
cmd="bash bench/billing.sh"
for v in BENCH_RUNS BENCH_ACCOUNTS BENCH_SNAPSHOTS BENCH_SEED_SNAPSHOTS; do
    case "$v=${!v}" in BENCH_RUNS=5 | BENCH_ACCOUNTS=2000 | BENCH_SNAPSHOTS=100 | BENCH_SEED_SNAPSHOTS=100) ;; *) cmd="$v=${!v} $cmd" ;; esac
done
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
t_start=$(date +%s)
bench_setup
DB=opsmeter_bench
q() { "${PSQL[@]}" -d "$DB" -At -F ' ' -c "$1"; }
LIB="$("$PG_CONFIG" --pkglibdir)/opsmeter.so"
lib_note="the release build, preloaded"
cmp -s "$(ls target/release/libopsmeter.so 2>/dev/null || echo /dev/null)" "$LIB" \
    || lib_note="the installed build, preloaded (NOT verified to be target/release's)"

# the page of the seed pattern: page 1, or its first BENCH_SEED_SNAPSHOTS snapshots (page 0)
if [ "$SS" -lt "$S" ]; then SEED_PAGE=0; else SEED_PAGE=1; fi
SAMPLES=$((A * S)); SEED_SAMPLES=$((A * SS))
TRUNC_OPS="TRUNCATE opsmeter.billing_checkpoints, opsmeter.billing_minutes, opsmeter.billing_ledger, opsmeter.billing_quota, opsmeter.billing_source_sync"
TRUNC_SEED="TRUNCATE bench.billing_checkpoints, bench.billing_minutes, bench.billing_ledger, bench.billing_quota"
READ_PAGE1="FROM bench.page p, jsonb_array_elements(p.j) s, jsonb_to_recordset(s -> 'samples') AS x(account_id uuid, cumulative_bytes bigint) WHERE p.n = 1"

# ---------------------------------------------------------------------------------------------
say "generating $A accounts x 2 pages of $S snapshots (jsonb, untimed)"
g0=$(date +%s)
"${PSQL[@]}" -d "$DB" -c 'CREATE EXTENSION "uuid-ossp"' -f bench/billing_baselines.sql >/dev/null
"${PSQL[@]}" -d "$DB" <<SQL >/dev/null
ALTER DATABASE $DB SET opsmeter.billing_included_quota_bytes = '200000000';
ALTER DATABASE $DB SET opsmeter.billing_price_per_byte = '0.000000002';
ALTER DATABASE $DB SET opsmeter.billing_multiplier = '1.1';
SELECT setseed(0.6);
CREATE TABLE bench.accounts AS
SELECT i, md5('acct' || i)::uuid AS account_id,
       round(exp(ln(10000) + random() * ln(1000)))::bigint AS rate,       -- 10 kB .. 10 MB a step
       CASE WHEN i % 10 = 0 THEN 1.0 ELSE 0.3 * random() END AS idle,     -- share of idle steps
       floor(random() * 1e8)::bigint AS start_bytes                       -- counter before the page
  FROM generate_series(1, $A) i;
-- 2 x S snapshots, 10 s apart; the second page crosses into December at its middle
CREATE TABLE bench.samples AS
SELECT k, a.i, a.account_id,
       TIMESTAMPTZ '2026-12-01 00:00:00+00' - $((S * 15)) * interval '1 s' + k * interval '10 s' AS sampled_at,
       (a.start_bytes + sum(CASE WHEN random() < a.idle THEN 0 ELSE floor(a.rate * (0.5 + random()))::bigint END)
                       OVER (PARTITION BY a.i ORDER BY k))::bigint AS cum
  FROM bench.accounts a, generate_series(1, $((2 * S))) k;
CREATE TABLE bench.snaps AS
SELECT k, jsonb_build_object('node_id', 'n1', 'env', 'prod',
                             'sampled_at', to_char(sampled_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                             'samples', jsonb_agg(jsonb_build_object('account_id', account_id, 'cumulative_bytes', cum) ORDER BY i)) AS snap
  FROM bench.samples GROUP BY k, sampled_at;
TRUNCATE bench.page;
INSERT INTO bench.page SELECT (k - 1) / $S + 1, jsonb_agg(snap ORDER BY k) FROM bench.snaps GROUP BY 1;
INSERT INTO bench.page SELECT 0, jsonb_agg(snap ORDER BY k) FROM bench.snaps WHERE k <= $SS AND $SEED_PAGE = 0 HAVING count(*) > 0;
DROP TABLE bench.snaps;
-- profiles: even accounts; i % 4 = 0 an included quota that runs out half way through page 1
SELECT count(billing_profile_upsert(a.account_id,
           CASE WHEN a.i % 4 = 0 THEN s.cum ELSE 1000000000000 END,
           (ARRAY[0.000000001, 0.0000000015, 0.000000003])[a.i / 2 % 3 + 1],
           (ARRAY[1, 1.25, 0])[a.i / 2 % 3 + 1],                              -- 0 means 1
           'v' || (a.i / 2 % 3 + 1)))
  FROM bench.accounts a JOIN bench.samples s ON s.i = a.i AND s.k = greatest($S / 2, 1)
 WHERE a.i % 2 = 0;
SELECT billing_source_upsert('src1', 'n1', 'prod');
SELECT billing_source_upsert('src_other', 'n2', 'prod');   -- expects another node: nothing is billed
VACUUM (ANALYZE, FREEZE) bench.page, bench.samples, bench.accounts, opsmeter.billing_profiles, opsmeter.billing_sources;
SQL
g1=$(date +%s)
read -r n_pages page_mb page_text_mb < <(q "SELECT count(*) FILTER (WHERE n > 0),
       round(avg(pg_column_size(j)) FILTER (WHERE n = 1) / 1048576.0, 1),
       round(avg(octet_length(j::text)) FILTER (WHERE n = 1) / 1048576.0, 1) FROM bench.page")
[ "$n_pages" = 2 ] || die "expected 2 pages, got $n_pages"
read -r n_profiles n_minutes_p1 < <(q "SELECT (SELECT count(*) FROM opsmeter.billing_profiles),
       (SELECT count(DISTINCT date_trunc('minute', sampled_at)) FROM bench.samples WHERE k <= $S)")
# from the counters: what page 1 (and pages 1 + 2) must bill, the first sample in full
read -r want_p1 want_p12 want_seed < <(q "SELECT sum(cum) FILTER (WHERE k = $S), sum(cum) FILTER (WHERE k = $((2 * S))),
       sum(cum) FILTER (WHERE k = $SS) FROM bench.samples")
# and the minute buckets each page adds to: (account, minute) with a positive delta
read -r want_m1 want_m2 < <(q "SELECT count(DISTINCT (i, m)) FILTER (WHERE k <= $S), count(DISTINCT (i, m)) FILTER (WHERE k > $S)
       FROM (SELECT i, k, date_trunc('minute', sampled_at) AS m, cum - coalesce(lag(cum) OVER (PARTITION BY i ORDER BY k), 0) AS d
               FROM bench.samples) s WHERE d > 0")

# ---------------------------------------------------------------------------------------------
say "timing (median and fastest of $BENCH_RUNS interleaved rounds, after a warm-up round)"
declare -A T M
while read -r name med min; do T[$name]=$med; M[$name]=$min; done < <(BENCH_WITH_MIN=1 interleaved_medians \
    "trunc_ops=$TRUNC_OPS" \
    "ops1=SELECT billing_ingest('src1', j) FROM bench.page WHERE n = 1" \
    "ops2=SELECT billing_ingest('src1', j) FROM bench.page WHERE n = 2" \
    "replay=SELECT billing_ingest('src1', j) FROM bench.page WHERE n = 2" \
    "parse=SELECT billing_ingest('src_other', j) FROM bench.page WHERE n = 1" \
    "text=SELECT octet_length(j::text) FROM bench.page WHERE n = 1" \
    "trunc_seed=$TRUNC_SEED" \
    "seed=SELECT bench.seed_ingest(j) FROM bench.page WHERE n = $SEED_PAGE" \
    "trunc_floor=TRUNCATE bench.floor_samples" \
    "floor=INSERT INTO bench.floor_samples SELECT s ->> 'node_id', s ->> 'env', (s ->> 'sampled_at')::timestamptz, x.account_id, x.cumulative_bytes $READ_PAGE1" \
    "read=SELECT count(*) $READ_PAGE1")
for k in ops1 ops2 replay parse text seed floor read; do
    [ -n "${T[$k]:-}" ] || die "no timing for $k (a timed statement failed?)"
done

# ---------------------------------------------------------------------------------------------
say "where the time of a page-1 call goes (auto_explain durations of the statements it runs)"
# a warm-up call, then 3 calls, each on empty tables, in one session; the call with the median total
CALLS=()
for i in 1 2 3 4; do CALLS+=(-c "$TRUNC_OPS" -c "SELECT billing_ingest('src1', j) FROM bench.page WHERE n = 1"); done
read -r in_total in_write in_quota in_read in_other < <("${PSQL[@]}" -d "$DB" -o /dev/null -c "LOAD 'auto_explain'" \
    -c "SET auto_explain.log_min_duration = 0" -c "SET auto_explain.log_nested_statements = on" \
    -c "SET client_min_messages = log" "${CALLS[@]}" 2>&1 | awk '
        /LOG:  duration: / { for (i = 1; i < NF; i++) if ($i == "duration:") d = $(i + 1); next }
        /^Query Text: / && d != "" {
            if ($0 ~ /^Query Text: SELECT billing_ingest/) {   # the call, logged after its statements
                if (++n > 1) { tot[n] = d; line[n] = sprintf("%.1f %.1f %.1f %.1f %.1f", d, w, q, r, o) }
                w = q = r = o = 0
            }
            else if ($0 ~ /WITH price AS/) w += d
            else if ($0 ~ /INSERT INTO opsmeter.billing_quota/) q += d
            else if ($0 ~ /c.storage_node_id, c.account_id|included_quota_bytes, price_per_byte/) r += d
            else o += d
            d = ""
        }
        END {
            for (i = 2; i <= n; i++) { rank = 0; for (j = 2; j <= n; j++) if (tot[j] < tot[i] || (tot[j] == tot[i] && j < i)) rank++
                                       if (rank == int((n - 1) / 2)) print line[i] }
        }')
[ -n "${in_other:-}" ] || die "could not read the statement durations of a billing_ingest call"
in_sql=$(awk -v a="$in_write" -v b="$in_quota" -v c="$in_read" -v d="$in_other" 'BEGIN {printf "%.1f", a + b + c + d}')
in_rust=$(awk -v t="$in_total" -v s="$in_sql" 'BEGIN {printf "%.1f", t - s}')

# ---------------------------------------------------------------------------------------------
say "checking"
# opsmeter on the seed pattern's page, from empty, against the seed pattern's tables (its last round)
q "$TRUNC_OPS" >/dev/null
read -r r0_status r0_processed < <(q "SELECT r ->> 'status', r ->> 'processed_samples'
    FROM (SELECT billing_ingest('src1', j) r FROM bench.page WHERE n = $SEED_PAGE) s")
[ "$r0_status" = ok ] && [ "$r0_processed" = "$SEED_SAMPLES" ] \
    || die "opsmeter on the seed page: status $r0_status, processed $r0_processed (want ok, $SEED_SAMPLES)"
[ "$(q "SELECT bench.seed_ingest('[]')")" = 0 ] || die "seed_ingest of no snapshots"
diff_rows() {   # TABLE COLUMNS: rows of opsmeter.TABLE and bench.TABLE that differ (both ways)
    q "SELECT count(*) FROM ((SELECT $2 FROM opsmeter.$1 EXCEPT ALL SELECT $2 FROM bench.$1)
                   UNION ALL (SELECT $2 FROM bench.$1 EXCEPT ALL SELECT $2 FROM opsmeter.$1)) d"
}
d_cp=$(diff_rows billing_checkpoints "storage_node_id, account_id, sampled_at, cumulative_bytes")
d_mb=$(diff_rows billing_minutes "storage_node_id, account_id, minute, bytes")
d_lg=$(diff_rows billing_ledger "id, storage_node_id, account_id, minute, bytes, included_bytes, billable_bytes, amount, pricing_rule_version")
d_q=$(diff_rows billing_quota "account_id, period_start, included_quota_bytes, included_used_bytes, billable_bytes, amount")
read -r seed_rows seed_bytes seed_ledger_rows seed_amount < <(q "SELECT (SELECT count(*) FROM bench.billing_checkpoints),
       (SELECT sum(bytes) FROM bench.billing_ledger), (SELECT count(*) FROM bench.billing_ledger),
       (SELECT sum(amount) FROM bench.billing_ledger)")
[ "$d_cp$d_mb$d_lg$d_q" = 0000 ] \
    || die "opsmeter and the seed pattern differ: checkpoints $d_cp, minutes $d_mb, ledger $d_lg, quota $d_q rows"
[ "$seed_bytes" = "$want_seed" ] || die "seed pattern billed $seed_bytes bytes, the counters say $want_seed"
seed_check="on the same $SEED_SAMPLES samples opsmeter's checkpoints, minute buckets, ledger rows (ids, bytes, included, billable, amount, rule version) and quota rows equal the seed pattern's row for row ($seed_rows checkpoints, $seed_ledger_rows ledger rows, $seed_bytes bytes, amount $seed_amount)"

# page 1, page 2, replay of page 2, as in the timed rounds
q "$TRUNC_OPS" >/dev/null
ingest_check() {   # PAGE: "status processed replayed written_minutes"
    q "SELECT r ->> 'status', r ->> 'processed_samples', r ->> 'replayed_samples', r ->> 'written_minutes'
         FROM (SELECT billing_ingest('src1', j) r FROM bench.page WHERE n = $1) s"
}
sums() { q "SELECT coalesce(sum(bytes), 0), count(*), coalesce(sum(amount), 0) FROM opsmeter.billing_ledger"; }
read -r r1_status r1_processed r1_replayed r1_written < <(ingest_check 1)
read -r p1_bytes p1_rows p1_amount < <(sums)
[ "$r1_status $r1_processed $r1_replayed $r1_written $p1_rows" = "ok $SAMPLES 0 $want_m1 $want_m1" ] \
    || die "page 1: $r1_status $r1_processed processed $r1_replayed replayed $r1_written minutes, $p1_rows ledger rows (want ok $SAMPLES 0 $want_m1 $want_m1)"
[ "$p1_bytes" = "$want_p1" ] || die "page 1 billed $p1_bytes bytes, the counters say $want_p1"
p1_quota=$(q "SELECT count(*) FILTER (WHERE included_quota_bytes > 0 AND billable_bytes > 0 AND included_used_bytes = included_quota_bytes)
              || ' of ' || count(*) FROM opsmeter.billing_quota")
read -r r2_status r2_processed r2_replayed r2_written < <(ingest_check 2)
read -r p12_bytes p12_rows p12_amount < <(sums)
[ "$r2_status $r2_processed $r2_replayed $r2_written" = "ok $SAMPLES 0 $want_m2" ] \
    || die "page 2: $r2_status $r2_processed processed $r2_replayed replayed $r2_written minutes (want ok $SAMPLES 0 $want_m2)"
[ "$p12_bytes" = "$want_p12" ] || die "pages 1 + 2 billed $p12_bytes bytes, the counters say $want_p12"
state_md5() {
    q "SELECT md5(string_agg(t, '|' ORDER BY t)) FROM (
           SELECT row(l.*)::text AS t FROM opsmeter.billing_ledger l
           UNION ALL SELECT row(q.*)::text FROM opsmeter.billing_quota q
           UNION ALL SELECT row(c.*)::text FROM opsmeter.billing_checkpoints c
           UNION ALL SELECT row(m.*)::text FROM opsmeter.billing_minutes m) s"
}
md5_before=$(state_md5)
read -r r3_status r3_processed r3_replayed r3_written < <(ingest_check 2)
[ "$r3_status $r3_processed $r3_replayed $r3_written" = "ok $SAMPLES $SAMPLES 0" ] \
    || die "replay of page 2: $r3_status $r3_processed processed $r3_replayed replayed $r3_written minutes (want ok $SAMPLES $SAMPLES 0)"
[ "$(state_md5)" = "$md5_before" ] || die "the replay of page 2 changed the billing tables"
# invariants: quota rows are the sums of their ledger rows, buckets are their ledger rows
read -r bad_quota bad_minutes over_quota n_quota n_periods < <(q "
    SELECT (SELECT count(*) FROM opsmeter.billing_quota q
              FULL JOIN (SELECT account_id, date_trunc('month', minute, 'UTC') AS period_start,
                                sum(included_bytes) AS inc, sum(billable_bytes) AS bill, sum(amount) AS amount
                           FROM opsmeter.billing_ledger GROUP BY 1, 2) l USING (account_id, period_start)
             WHERE q.included_used_bytes IS DISTINCT FROM l.inc OR q.billable_bytes IS DISTINCT FROM l.bill
                OR q.amount IS DISTINCT FROM l.amount),
           (SELECT count(*) FROM opsmeter.billing_minutes m
              FULL JOIN opsmeter.billing_ledger l USING (storage_node_id, account_id, minute)
             WHERE m.bytes IS DISTINCT FROM l.bytes),
           (SELECT count(*) FROM opsmeter.billing_quota WHERE included_used_bytes > included_quota_bytes),
           (SELECT count(*) FROM opsmeter.billing_quota),
           (SELECT count(DISTINCT period_start) FROM opsmeter.billing_quota)")
[ "$bad_quota$bad_minutes$over_quota" = 000 ] \
    || die "invariants: $bad_quota quota rows differ from their ledger sums, $bad_minutes buckets from their ledger rows, $over_quota over quota"
floor_rows=$(q "SELECT count(*) FROM bench.floor_samples")
[ "$floor_rows" = "$SAMPLES" ] || die "floor: $floor_rows rows, want $SAMPLES"
sizes=$(q "SELECT string_agg(format('| %s | %s | %s |', t, n, pg_size_pretty(pg_total_relation_size(t::regclass))), E'\n' ORDER BY o)
    FROM (VALUES (1, 'opsmeter.billing_checkpoints', (SELECT count(*) FROM opsmeter.billing_checkpoints)),
                 (2, 'opsmeter.billing_minutes', (SELECT count(*) FROM opsmeter.billing_minutes)),
                 (3, 'opsmeter.billing_ledger', (SELECT count(*) FROM opsmeter.billing_ledger)),
                 (4, 'opsmeter.billing_quota', (SELECT count(*) FROM opsmeter.billing_quota)),
                 (5, 'bench.billing_ledger', (SELECT count(*) FROM bench.billing_ledger)),
                 (6, 'bench.floor_samples', (SELECT count(*) FROM bench.floor_samples))) v(o, t, n)")
t_end=$(date +%s)
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------
rate() { awk -v n="$1" -v ms="$2" 'BEGIN {printf "%.0f", n / (ms / 1000)}'; }
ops1_rate=$(rate "$SAMPLES" "${T[ops1]}"); ops1_best=$(rate "$SAMPLES" "${M[ops1]}")
seed_rate=$(rate "$SEED_SAMPLES" "${T[seed]}"); seed_best=$(rate "$SEED_SAMPLES" "${M[seed]}")
floor_rate=$(rate "$SAMPLES" "${T[floor]}")
if [ "$ops1_rate" -ge 100000 ]; then target="met"; else target="NOT met"; fi
if [ "$SEED_PAGE" = 0 ]; then
    seed_what="the first $SS snapshots of page 1 ($SEED_SAMPLES samples; BENCH_SEED_SNAPSHOTS=$SS, its rate is per sample as the others')"
else
    seed_what="page 1 ($SEED_SAMPLES samples)"
fi
row() {   # NAME LABEL SAMPLES
    printf '| %s | %s | %s | %s | %s |\n' "$2" "$3" "${T[$1]}" "${M[$1]}" "$(rate "$3" "${T[$1]}")"
}
mkdir -p bench/results
{
    echo "# billing benchmark"
    echo
    echo "\`$cmd\` — $(date -u +%Y-%m-%d), $(nproc) cores (shared with other work; load average $load_start at the start, $load_end at the end), PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'), $lib_note, median (and fastest) of $BENCH_RUNS interleaved rounds after a warm-up round, one session, every statement its own transaction, jit off, shared_buffers 2GB, synchronous_commit off, fsync off. The whole run took $((t_end - t_start)) s (generating the pages $((g1 - g0)) s)."
    echo
    echo "## One call, $A accounts x $S snapshots = $SAMPLES samples a page"
    echo
    echo "One exporter (storage node prod:n1) samples every account's cumulative byte counter every 10 s, so a page spans $n_minutes_p1 minute buckets per account; counters grow by a per-account rate of 10 kB .. 10 MB a step, with idle steps (delta 0) and one account in ten idle throughout. The first sample of an account bills its whole counter (billing_first_sample full). $n_profiles accounts have a profile (half of them with an included quota that runs out half way through page 1), the others use the settings (200 MB included a month, price 0.000000002, multiplier 1.1). The page is stored once as jsonb ($page_mb MB, $page_text_mb MB as text); the timed statement is the call on it. Page 2 (the next $S snapshots) crosses into December, a new quota period."
    echo
    echo "| what (serial) | samples | ms, median | ms, fastest | samples/s (median) |"
    echo "|---|---:|---:|---:|---:|"
    row ops1 "**opsmeter** \`billing_ingest\`, page 1 on empty billing tables" "$SAMPLES"
    row ops2 "**opsmeter**, page 2 on top of page 1 (every key has a checkpoint)" "$SAMPLES"
    row replay "**opsmeter**, page 2 again (every sample a replay, nothing written)" "$SAMPLES"
    row parse "reading half of opsmeter: page 1 for a source expecting another node (parsed and checked, nothing billed)" "$SAMPLES"
    row text "\`j::text\` of page 1 (billing_ingest reads its jsonb argument as text)" "$SAMPLES"
    row seed "seed's pattern (PL/pgSQL, per sample: read checkpoint, read profile, read + update quota, upsert bucket, upsert ledger, write checkpoint), $seed_what" "$SEED_SAMPLES"
    row floor "floor: \`INSERT ... SELECT FROM jsonb_array_elements, jsonb_to_recordset\` of page 1 into a table without indexes" "$SAMPLES"
    row read "reading half of the floor: the same SELECT, \`count(*)\`" "$SAMPLES"
    echo
    echo "| ratio | median | fastest |"
    echo "|---|---:|---:|"
    echo "| opsmeter page 1 samples/s ÷ seed pattern samples/s | **$(ratio "$ops1_rate" "$seed_rate")×** | $(ratio "$ops1_best" "$seed_best")× |"
    echo "| opsmeter page 1 time ÷ floor time | **$(ratio "${T[ops1]}" "${T[floor]}")** | $(ratio "${M[ops1]}" "${M[floor]}") |"
    echo "| opsmeter page 2 time ÷ page 1 time | $(ratio "${T[ops2]}" "${T[ops1]}") | $(ratio "${M[ops2]}" "${M[ops1]}") |"
    echo "| reading half ÷ opsmeter page 1 | $(ratio "${T[parse]}" "${T[ops1]}") | $(ratio "${M[parse]}" "${M[ops1]}") |"
    echo "| replay ÷ opsmeter page 2 | $(ratio "${T[replay]}" "${T[ops2]}") | $(ratio "${M[replay]}" "${M[ops2]}") |"
    echo
    echo "The issue's target, one call with >= 200 k samples at >= 100 k samples/s: **$target** ($ops1_rate samples/s, median, page 1; $(rate "$SAMPLES" "${T[ops2]}") on page 2). The floor writes $floor_rate samples/s."
    echo
    echo "## Where the time of a call goes"
    echo
    echo "Three more page-1 calls on empty tables (after a warm-up call in the same session), with auto_explain logging the duration of every statement they run (no instrumentation); the call with the median total took $in_total ms. Its SQL statements take $in_sql ms ($(awk -v a="$in_sql" -v b="$in_total" 'BEGIN {printf "%.0f", 100 * a / b}') %): the one write statement (a CTE that upserts $r1_written minute buckets and ledger rows and $A checkpoints and updates the quota rows) $in_write ms, creating and locking the quota rows $in_quota ms, reading checkpoints and profiles $in_read ms, source, node lock and sync state $in_other ms. The remaining $in_rust ms ($(awk -v a="$in_rust" -v b="$in_total" 'BEGIN {printf "%.0f", 100 * a / b}') %) run in the extension itself: jsonb → text (${T[text]} ms median), parsing and checking the samples (the reading half above, ${T[parse]} ms with the text), then the deltas against the checkpoints, the quota allocation, the ledger ids and the argument arrays (roughly the rest; the replay, which plans every sample but writes nothing, takes ${T[replay]} ms)."
    echo
    echo "## Checked after the runs"
    echo
    echo "- page 1: status $r1_status, $r1_processed processed, $r1_replayed replayed, $r1_written minutes written = $p1_rows ledger rows = the (account, minute) pairs with a positive delta; ledger $p1_bytes bytes = the sum of the counters' last values on page 1 (first sample in full); amount $p1_amount; $p1_quota quota rows with an included quota used up and billable bytes beyond it."
    echo "- page 2 on top: status $r2_status, $r2_processed processed, $r2_replayed replayed, $r2_written minutes written (some of them the minute page 1 ended in), $p12_rows ledger rows; ledger $p12_bytes bytes = the counters' last values after page 2; $n_quota quota rows over $n_periods months."
    echo "- page 2 again: status $r3_status, $r3_processed processed, $r3_replayed replayed, $r3_written minutes written; checkpoints, buckets, ledger and quota unchanged (md5 of all rows)."
    echo "- every quota row is the sum of its account's ledger rows of the month (included, billable, amount), every minute bucket its ledger row's bytes, no included use above the quota."
    echo "- $seed_check."
    echo "- floor: $floor_rows rows."
    echo
    echo "## Sizes after page 1 + page 2 (opsmeter), the seed pattern's page (bench.billing_ledger) and the floor's page 1"
    echo
    echo "| table | rows | size with indexes |"
    echo "|---|---:|---:|"
    echo "$sizes"
} >bench/results/billing.md
cat bench/results/billing.md
"$ROOT/scripts/cluster.sh" stop .bench >/dev/null

//! `COMMENT ON` for every public function, in one place so the catalog test in
//! `pgrx-tests/catalog.rs` can insist nothing is left undocumented.

use pgrx::prelude::*;

extension_sql!(
    r#"
COMMENT ON FUNCTION opsmeter_version() IS 'opsmeter: version of the loaded opsmeter library';
COMMENT ON FUNCTION ops_set_source(text, regclass) IS 'opsmeter: point a source role (groups, usage_logs, error_logs, log_records) at a table or view, checking the columns the role needs';
COMMENT ON FUNCTION ops_reset_source(text) IS 'opsmeter: point a source role back at the extension''s own table opsmeter.<role>';
COMMENT ON FUNCTION ops_sources() IS 'opsmeter: every source role, the relation serving it, whether it is the default, and whether it passes its checks now';
COMMENT ON TYPE ops_sketch IS 'opsmeter: mergeable relative-error quantile sketch (DDSketch family); text form ddsk1:<base64>';
COMMENT ON FUNCTION ops_sketch_in(cstring) IS 'opsmeter: ops_sketch text input (ddsk1:<base64 of the compact encoding>)';
COMMENT ON FUNCTION ops_sketch_out(ops_sketch) IS 'opsmeter: ops_sketch text output; round-trips exactly';
COMMENT ON FUNCTION ops_sketch_recv(internal) IS 'opsmeter: ops_sketch binary input (validated compact encoding)';
COMMENT ON FUNCTION ops_sketch_send(ops_sketch) IS 'opsmeter: ops_sketch binary output (compact encoding)';
COMMENT ON FUNCTION ops_sketch_trans(ops_sketch, float8) IS 'opsmeter: aggregate support for ops_sketch(value): adds a value, in place inside an aggregate';
COMMENT ON FUNCTION ops_sketch_trans(ops_sketch, float8, float8) IS 'opsmeter: aggregate support for ops_sketch(value, alpha): adds a value, in place inside an aggregate';
COMMENT ON FUNCTION ops_sketch_combine(ops_sketch, ops_sketch) IS 'opsmeter: aggregate support: merges the second sketch into the first (exact)';
COMMENT ON FUNCTION ops_sketch_final(ops_sketch) IS 'opsmeter: aggregate support: compact form of a sketch state';
COMMENT ON AGGREGATE ops_sketch(float8) IS 'opsmeter: sketch of the non-NULL values at alpha 0.005 (quantiles within 0.5% of percentile_disc); parallel safe, distributable';
COMMENT ON AGGREGATE ops_sketch(float8, float8) IS 'opsmeter: sketch of the non-NULL values at relative accuracy alpha (0.0001 .. 0.1)';
COMMENT ON AGGREGATE ops_sketch_merge(ops_sketch) IS 'opsmeter: exact merge of stored sketches (hourly to daily to monthly; all of one alpha)';
COMMENT ON FUNCTION ops_sketch_pair_trans(bytea, float8, float8) IS 'opsmeter: aggregate support for ops_sketch_pair_a/_b: adds one row''s two values (a NULL skipped on its side), in place inside an aggregate';
COMMENT ON FUNCTION ops_sketch_pair_combine(bytea, bytea) IS 'opsmeter: aggregate support for ops_sketch_pair_a/_b: merges the second pair state into the first, side by side (exact)';
COMMENT ON FUNCTION ops_sketch_pair_final_a(bytea) IS 'opsmeter: aggregate support: the first side of a pair state as an ops_sketch (NULL when it has no value)';
COMMENT ON FUNCTION ops_sketch_pair_final_b(bytea) IS 'opsmeter: aggregate support: the second side of a pair state as an ops_sketch (NULL when it has no value)';
COMMENT ON AGGREGATE ops_sketch_pair_a(float8, float8) IS 'opsmeter: ops_sketch(a), the same bytes, computed in one state with ops_sketch_pair_b(a, b) when a query calls both on the same arguments (one state per group instead of two)';
COMMENT ON AGGREGATE ops_sketch_pair_b(float8, float8) IS 'opsmeter: ops_sketch(b), the same bytes, computed in one state with ops_sketch_pair_a(a, b) when a query calls both on the same arguments';
COMMENT ON FUNCTION ops_quantile(ops_sketch, float8) IS 'opsmeter: value at quantile q in [0, 1], within alpha of percentile_disc(q), clamped to [min, max]';
COMMENT ON FUNCTION ops_quantiles(ops_sketch, float8[]) IS 'opsmeter: ops_quantile for each q of an array';
COMMENT ON FUNCTION ops_rank(ops_sketch, float8) IS 'opsmeter: estimated share of values <= value (for SLOs such as the share of requests under 2 s)';
COMMENT ON FUNCTION ops_count(ops_sketch) IS 'opsmeter: exact number of values in the sketch';
COMMENT ON FUNCTION ops_sum(ops_sketch) IS 'opsmeter: exact sum of the values, correctly rounded to float8';
COMMENT ON FUNCTION ops_mean(ops_sketch) IS 'opsmeter: exact mean of the values';
COMMENT ON FUNCTION ops_min(ops_sketch) IS 'opsmeter: exact minimum';
COMMENT ON FUNCTION ops_max(ops_sketch) IS 'opsmeter: exact maximum';
COMMENT ON FUNCTION ops_sketch_alpha(ops_sketch) IS 'opsmeter: relative accuracy alpha the sketch was built with';
COMMENT ON FUNCTION ops_upsert_hourly(timestamptz, timestamptz) IS 'opsmeter: recompute opsmeter.metrics_hourly for [start_time, end_time) widened to whole UTC hours (each hour replaced exactly); NULL, empty or inverted windows return 0; returns rows written';
COMMENT ON FUNCTION ops_upsert_daily(timestamptz, timestamptz) IS 'opsmeter: recompute opsmeter.metrics_daily for [start_time, end_time) widened to whole UTC days, merging the hourly sketches; returns rows written';
COMMENT ON FUNCTION ops_latest_hourly_bucket() IS 'opsmeter: start of the latest hour in opsmeter.metrics_hourly (NULL when empty)';
COMMENT ON FUNCTION ops_latest_daily_bucket() IS 'opsmeter: latest date in opsmeter.metrics_daily (NULL when empty)';
COMMENT ON FUNCTION ops_rollup_catch_up() IS 'opsmeter: roll up from the latest rolled-up hour to now() - opsmeter.rollup_lag, then the complete days; what pg_cron or the background worker calls; returns rows written';
COMMENT ON FUNCTION ops_metrics_query(timestamptz, timestamptz, interval) IS 'opsmeter: the SQL ops_metrics runs for a bucket width ($1 since, $2 until, $3 platform, $4 group_id), for EXPLAIN';
COMMENT ON FUNCTION ops_metrics(timestamptz, timestamptz, interval, text, bigint) IS 'opsmeter: ops metrics for [since, until) in buckets of any width (1 minute .. 366 days, or months), one grain (overall, a platform, or a group), percentiles merged from stored sketches';
COMMENT ON FUNCTION ops_create_record_partitions(date, date) IS 'opsmeter: create the missing day partitions of opsmeter.request_records for from_day .. to_day (inclusive, at most 366 days), as the extension owner; returns how many were created';
COMMENT ON FUNCTION ops_add_records(jsonb) IS 'opsmeter: write a JSON array of request records (api_type, metrics_key, base_url, model, success, status_code, latency_ms, created_at as RFC 3339); one bad element rejects the batch naming its index and field; returns records written';
COMMENT ON FUNCTION ops_load_records(timestamptz, text) IS 'opsmeter: the records of an api_type since a time, oldest first';
COMMENT ON FUNCTION ops_latest_timestamps(text) IS 'opsmeter: last success and last failure time of every key of an api_type over its whole history, from opsmeter.record_latest (no history scan)';
COMMENT ON FUNCTION ops_circuit_upsert(text, text, text, integer, integer, timestamptz, timestamptz, timestamptz) IS 'opsmeter: insert or replace a key''s circuit-breaker state (closed, open, half_open); a state older than the stored one (by updated_at) is ignored and returns false';
COMMENT ON FUNCTION ops_circuit_states(text) IS 'opsmeter: the circuit-breaker states of an api_type, by key';
COMMENT ON FUNCTION ops_history(text, timestamptz, bigint, text, text) IS 'opsmeter: request history of an api_type since a time in buckets of interval_seconds (1 .. 2678400, aligned to the Unix epoch): requests, successes, failures, success rate (percent), latency p50/p95/p99 (ops_sketch, within 0.5%)';
COMMENT ON FUNCTION ops_model_history(text, timestamptz, bigint, text, text) IS 'opsmeter: ops_history per (bucket, model)';
COMMENT ON FUNCTION ops_cleanup_records(timestamptz) IS 'opsmeter: remove records older than before: whole days by dropping their partitions, the boundary day by DELETE; returns records removed';
COMMENT ON FUNCTION ops_record_partitions() IS 'opsmeter: the partitions of opsmeter.request_records and the UTC day each holds';
COMMENT ON FUNCTION ops_delete_by_metrics_keys(text[], text) IS 'opsmeter: delete the records (and latest times) of these keys of one api_type only; returns records deleted';
COMMENT ON FUNCTION ops_delete_circuit_states(text[], text) IS 'opsmeter: delete the circuit-breaker states of these keys of one api_type only; returns states deleted';
COMMENT ON FUNCTION ops_daily_stats_run(date) IS 'opsmeter: write opsmeter.daily_stats for one complete UTC day (default yesterday) from the log_records source; false when the day exists already or had no traffic; rows are never modified';
COMMENT ON FUNCTION ops_daily_stats_backfill(date, date) IS 'opsmeter: ops_daily_stats_run for every day of from_day .. to_day (inclusive); returns days written';
COMMENT ON FUNCTION ops_stats(text) IS 'opsmeter: requests, success, failed, tokens, latency and top 10 models for ''today'', ''last7d'' or ''last30d'' (UTC days up to now), from daily_stats rows and the source';
COMMENT ON FUNCTION ops_op_save(jsonb, text) IS 'opsmeter queue: record one operation (JSON object with the columns of opsmeter.operations; op_id required) with status NOT_TRUSTLOGGED (default) or TRUSTLOGGED; an existing op_id is 23505; a bad field is an error naming it; notifies channel opsmeter_operations';
COMMENT ON FUNCTION ops_op_save_batch(jsonb) IS 'opsmeter queue: record a JSON array of operations (at most 10000) in one statement; one bad element or existing op_id rejects the batch naming ops[i] and the field, nothing written; notifies opsmeter_operations; returns operations written';
COMMENT ON FUNCTION ops_op_claim(integer, interval) IS 'opsmeter queue: lease up to batch (1 .. 10000) of the oldest claimable operations (NOT_TRUSTLOGGED, no live lease, no retry pending in the future, not dead-lettered) for lease (at most 7 days), one statement with SKIP LOCKED; returns them with one lease_token per call and lease_expires_at, oldest timestamp first';
COMMENT ON FUNCTION ops_op_completed(text[], uuid) IS 'opsmeter queue: ops_op_complete returning the op_ids this call changed from NOT_TRUSTLOGGED to TRUSTLOGGED';
COMMENT ON FUNCTION ops_op_complete(text[], uuid) IS 'opsmeter queue: compare-and-set NOT_TRUSTLOGGED -> TRUSTLOGGED for these op_ids (with lease_token: only those that lease still holds), removing their retry rows; returns how many this call changed';
COMMENT ON FUNCTION ops_op_fail(text, text, uuid) IS 'opsmeter queue: record a failed attempt: release the lease and retry at now + opsmeter.retry_base * 2^n (n = retries so far), or DEAD_LETTER once opsmeter.max_retries retries have failed too; false (nothing changed) for a completed, unknown or dead-lettered operation or a lease no longer held';
COMMENT ON FUNCTION ops_op_requeue(text[]) IS 'opsmeter queue: give these dead-lettered operations a fresh set of tries (retry row removed, claimable now); returns how many were revived';
COMMENT ON FUNCTION ops_retry_due(integer) IS 'opsmeter queue: retry rows (PENDING or RETRYING) whose next_retry_at has come, soonest first, at most limit';
COMMENT ON FUNCTION ops_retry_done(text) IS 'opsmeter queue: remove an operation''s retry row (its retry finished); a not yet trustlogged, unleased operation becomes claimable now; true if there was a row';
COMMENT ON FUNCTION ops_cursor_get(text) IS 'opsmeter queue: value of a cursor, '''' when it does not exist (as the seed)';
COMMENT ON FUNCTION ops_cursor_set(text, text) IS 'opsmeter queue: set a cursor''s value (insert or replace), stamping last_updated_at';
COMMENT ON FUNCTION ops_cursor_init(text, text, boolean) IS 'opsmeter queue: initialise a cursor; as in the seed this overwrites an existing value unless keep_existing is true; returns the value now stored';
COMMENT ON FUNCTION ops_operations_query(jsonb, integer, integer, text, boolean) IS 'opsmeter queue: a page of operations matching a filter (op_id, op_source, op_code, doid and do_prefix as contains, producer_id, op_actor, do_repository, trustlog_status, client_ip, server_ip, time_from, time_to), ordered by created_at, timestamp or op_id; page_size clamped to 1 .. 1000; every row carries total and total_pages';
COMMENT ON FUNCTION ops_operations_count(jsonb) IS 'opsmeter queue: number of operations matching an ops_operations_query filter';
COMMENT ON FUNCTION ops_queue_stats() IS 'opsmeter queue: not_trustlogged, pending (claimable now), leased, retrying, dead_letters, age of the oldest operation still to be done, and cursor lag (now - oldest RFC 3339 cursor value)';
COMMENT ON FUNCTION billing_source_upsert(text, text, text, boolean) IS 'opsmeter billing: register or change an exporter source (expected_node_id / expected_env checked against every snapshot where set; for an existing source NULL keeps the stored value and '''' clears it; enabled); returns the row';
COMMENT ON FUNCTION billing_profile_upsert(uuid, bigint, numeric, numeric, text) IS 'opsmeter billing: set an account''s pricing: included bytes per UTC month (>= 0), finite numeric price per billable byte (>= 0), finite multiplier (<= 0 means 1), rule version; returns the row';
COMMENT ON FUNCTION billing_ingest(text, jsonb) IS 'opsmeter billing: ingest a JSON array of exporter snapshots (node_id, env, sampled_at, samples of account_id + cumulative_bytes) for a source: deltas against checkpoints (replays change nothing; resets per opsmeter.billing_reset_policy) into minute buckets, ledger rows with UUIDv5 ids and monthly quota; returns the job result (status ok / partial / error), also stored as the source''s last_result';
COMMENT ON FUNCTION billing_advance_window(text, jsonb) IS 'opsmeter billing: ingest one page of a source''s window ({since, until, snapshots, has_more, next_cursor}) and move last_completed_until to next_cursor (has_more) or until, never backwards; since > until moves it with no work; recorded errors (nothing billed or moved): has_more with an empty, non-RFC 3339 or out-of-window next_cursor, an until in the future, a since after last_completed_until, a snapshot after until; returns the job result';
COMMENT ON FUNCTION billing_window(text) IS 'opsmeter billing: the window a source''s collector should fetch next: since = last_completed_until or now() - opsmeter.billing_lookback, until = now() - opsmeter.billing_delay';
COMMENT ON FUNCTION billing_status() IS 'opsmeter billing: one row per source: enabled, expected node/env, current window, last completed, last success, last error, last result, and healthy (the last result is not an error)';
COMMENT ON FUNCTION ops_run_job(text) IS 'opsmeter jobs: run one job now in this session (rollup, daily_stats, partitions, retention, or a registered queue worker) under its advisory lock; another run holding it makes this one skipped; a failure is recorded, not raised; returns {job, status ok/error/skipped, rows, message, duration_ms}; what the background worker and pg_cron call';
COMMENT ON FUNCTION ops_health() IS 'opsmeter jobs: one row per job: last status, last run, last OK run, next run as the worker schedules it, consecutive failures, lag (rollup: now - end of the latest rolled-up hour; daily_stats: now - end of the latest written day; queue workers: age of the oldest operation still to be done) and the last message';
COMMENT ON FUNCTION ops_worker_register(text, regprocedure, integer, interval) IS 'opsmeter jobs: register or replace a queue worker: handler(op opsmeter.operations) called per claimed operation, batch (1 .. 10000) at a time, every (10 ms .. 1 day); a return completes the operation in the handler''s transaction, an exception fails it with its message; true when new; superusers only unless granted';
COMMENT ON FUNCTION ops_worker_unregister(text) IS 'opsmeter jobs: remove a queue worker and its job state; true if it existed';
COMMENT ON FUNCTION ops_worker_run(text) IS 'opsmeter jobs: run one batch of a queue worker in this session and transaction, without the job lock (claims never overlap); returns operations completed';
COMMENT ON FUNCTION ops_workers() IS 'opsmeter jobs: the registered queue workers with their handler, batch, interval, registration and last run';
COMMENT ON FUNCTION ops_log_partitions() IS 'opsmeter jobs: the partitions of opsmeter.usage_logs, error_logs, log_records and request_records, the UTC day each holds (NULL for a default partition) and whether it is the default';
REVOKE ALL ON FUNCTION ops_worker_register(text, regprocedure, integer, interval) FROM PUBLIC;
"#,
    name = "comments",
    finalize,
    requires = [
        "ops_sketch_type",
        "rollup_tables",
        "ops_metrics",
        "record_tables",
        "daily_stats_tables",
        "queue_tables",
        "billing_tables",
        "billing_status",
        "job_tables",
        "log_partitions"
    ]
);

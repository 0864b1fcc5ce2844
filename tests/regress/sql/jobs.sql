-- The job framework (0.7.0) without the background worker: every job through ops_run_job,
-- failures recorded (not raised) and counted in ops_health, the cap on opsmeter.job_runs,
-- queue workers (registration checks, a batch with handler effects and failures), day
-- partitions of the raw log tables (ahead, and for rows in the default partition) and
-- retention by partition. Days are shown relative to today (UTC), never as dates.
-- (Skipped runs need a second session: tests/worker/worker.sh shows them, with a real worker
-- and pg_cron.)
SET client_min_messages = warning;
TRUNCATE opsmeter.usage_logs, opsmeter.error_logs, opsmeter.log_records, opsmeter.job_runs, opsmeter.job_state,
         opsmeter.daily_stats, opsmeter.daily_model_stats;
-- the earlier files' operations are done with, so the queue worker below sees only its own
SELECT ops_op_complete(array_agg(op_id)) IS NOT NULL AS cleared FROM opsmeter.operations
 WHERE trustlog_status = 'NOT_TRUSTLOGGED';
CREATE FUNCTION regress.today() RETURNS date LANGUAGE sql STABLE AS $$ SELECT (now() AT TIME ZONE 'UTC')::date $$;
CREATE FUNCTION regress.day_start(d int) RETURNS timestamptz LANGUAGE sql STABLE
    AS $$ SELECT (regress.today() + d)::timestamp AT TIME ZONE 'UTC' $$;

-- 1. The jobs, and a name that is none
SELECT j, r->>'status' AS status, r->>'job' = j AS named FROM unnest(ARRAY['partitions', 'rollup', 'daily_stats', 'retention']) j,
       LATERAL ops_run_job(j) r;
SELECT regress.err($$SELECT ops_run_job('vacuum')$$);
SELECT job, status, runner, pid = pg_backend_pid() AS this_session, finished_at >= started_at AS ordered
  FROM opsmeter.job_runs ORDER BY id;
SELECT job, last_status, consecutive_failures, next_run_at > last_run_at AS next_after_last
  FROM ops_health() ORDER BY job;

-- 2. Settings are checked when set
SELECT regress.err($$SET opsmeter.rollup_interval = '0.5s'$$);
SELECT regress.err($$SET opsmeter.maintenance_interval = '1 month'$$);
SELECT regress.err($$SET opsmeter.daily_stats_at = '24:00'$$);
SELECT regress.err($$SET opsmeter.retention = '12 hours'$$);
SELECT regress.err($$SET opsmeter.job_runs_keep = 5$$);
SET opsmeter.rollup_interval = '10 minutes';
SELECT next_run_at - last_run_at AS rollup_every FROM ops_health() WHERE job = 'rollup';
RESET opsmeter.rollup_interval;

-- 3. Partitions: today and 3 days ahead, plus a day for each day with rows in the default
-- partition, whose rows move into it
INSERT INTO opsmeter.usage_logs (created_at, group_id, model, duration_ms)
SELECT regress.day_start(-d) + i * interval '1 hour', 1, 'm', 10 * i
  FROM generate_series(4, 6) d, generate_series(0, 9) i;
INSERT INTO opsmeter.log_records (created_at, model_name, status_code, tokens_in, tokens_out, latency_ms)
SELECT regress.day_start(-d) + i * interval '1 hour', 'm' || (i % 2), CASE WHEN i = 0 THEN 500 ELSE 200 END, 1, 2, 100
  FROM generate_series(1, 5) d, generate_series(0, 9) i;
SELECT count(*) AS rows_in_default FROM opsmeter.usage_logs_default;
SELECT ops_run_job('partitions')->>'rows' AS created;
SELECT parent, day - regress.today() AS day, (SELECT count(*) FROM opsmeter.usage_logs u WHERE u.tableoid = p.partition) AS usage_rows
  FROM ops_log_partitions() p WHERE parent = 'opsmeter.usage_logs'::regclass ORDER BY day NULLS FIRST;
SELECT parent, count(*) FILTER (WHERE is_default) AS defaults, count(*) FILTER (WHERE day >= regress.today()) AS ahead
  FROM ops_log_partitions() GROUP BY parent ORDER BY parent::text;
SELECT count(*) AS usage_rows, sum(duration_ms) AS durations FROM opsmeter.usage_logs;
SELECT ops_run_job('partitions')->>'rows' AS created_again;

-- 4. Daily stats: the missed days up to opsmeter.daily_stats_catch_up, oldest first
SET opsmeter.daily_stats_at = '00:00';
SET opsmeter.daily_stats_catch_up = 3;
SELECT ops_run_job('daily_stats')->>'rows' AS days_written;
SELECT date - regress.today() AS day, requests, success, failed FROM opsmeter.daily_stats
 WHERE date >= regress.today() - 10 ORDER BY date;
SELECT ops_run_job('daily_stats')->>'rows' AS nothing_left;
SELECT next_run_at = regress.day_start(1) AS next_is_tomorrow FROM ops_health() WHERE job = 'daily_stats';
RESET opsmeter.daily_stats_at;
RESET opsmeter.daily_stats_catch_up;

-- 5. Retention drops whole day partitions past opsmeter.retention ('0' keeps all); never a DELETE
CREATE TABLE regress.deleted (n int);
CREATE FUNCTION regress.log_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO regress.deleted VALUES (1); RETURN OLD; END $$;
CREATE TRIGGER no_delete BEFORE DELETE ON opsmeter.usage_logs FOR EACH ROW EXECUTE FUNCTION regress.log_delete();
SET opsmeter.retention = '0';
SELECT ops_run_job('retention')->>'message' AS keep_all;
SET opsmeter.retention = '5 days';
SELECT ops_run_job('retention')->>'rows' AS dropped;
SELECT day - regress.today() AS day_left FROM ops_log_partitions()
 WHERE parent = 'opsmeter.usage_logs'::regclass AND day < regress.today() ORDER BY day;
SELECT count(*) AS usage_rows, (SELECT count(*) FROM regress.deleted) AS deleted_rows FROM opsmeter.usage_logs;
RESET opsmeter.retention;
DROP TRIGGER no_delete ON opsmeter.usage_logs;

-- 6. A failing job is recorded as an error and counted; the call does not raise (its WARNING
-- names an OID, so it is not shown here)
SET client_min_messages = error;
CREATE TABLE regress.gone (LIKE opsmeter.usage_logs);
SELECT ops_set_source('usage_logs', 'regress.gone');
DROP TABLE regress.gone;
SELECT r->>'status' AS status, r->>'message' LIKE 'source "usage_logs" points to a relation that no longer exists%' AS says_why
  FROM ops_run_job('rollup') r;
SELECT ops_run_job('rollup')->>'status' AS again;
SELECT last_status, consecutive_failures, last_ok_at < last_run_at AS ok_before
  FROM ops_health() WHERE job = 'rollup';
SELECT ops_reset_source('usage_logs');
SET client_min_messages = warning;
SELECT ops_run_job('rollup')->>'status' AS healed;
SELECT last_status, consecutive_failures FROM ops_health() WHERE job = 'rollup';

-- 7. Queue workers: registration checks, then a batch whose handler writes and sometimes raises
CREATE TABLE regress.sent (op_id text PRIMARY KEY);
CREATE FUNCTION regress.send(op opsmeter.operations) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO regress.sent VALUES (op.op_id);
    IF op.op_code = 500 THEN
        RAISE EXCEPTION 'cannot send %', op.op_id;
    END IF;
    RETURN 'sent';
END $$;
CREATE FUNCTION regress.wrong(op text) RETURNS void LANGUAGE sql AS $$ SELECT $$;
SELECT regress.err($$SELECT ops_worker_register('rollup', 'regress.send(opsmeter.operations)')$$);
SELECT regress.err($$SELECT ops_worker_register('a b', 'regress.send(opsmeter.operations)')$$);
SELECT regress.err($$SELECT ops_worker_register('sender', 'regress.wrong(text)')$$);
SELECT regress.err($$SELECT ops_worker_register('sender', 'regress.send(opsmeter.operations)', 0)$$);
SELECT regress.err($$SELECT ops_worker_register('sender', 'regress.send(opsmeter.operations)', 10, '1 ms')$$);
SELECT regress.err($$SELECT ops_worker_run('nobody')$$);
SELECT ops_worker_register('sender', 'regress.send(opsmeter.operations)', 4) AS new;
SELECT ops_worker_register('sender', 'regress.send(opsmeter.operations)', 8, '2 seconds') AS new;
SELECT name, handler, batch, every, last_status FROM ops_workers();
SELECT has_function_privilege('public', 'ops_worker_register(text, regprocedure, integer, interval)', 'EXECUTE') AS public_may_register;
SELECT ops_op_save_batch((SELECT jsonb_agg(jsonb_build_object('op_id', 'job-w' || i, 'op_code', CASE WHEN i IN (3, 7) THEN 500 ELSE 1 END,
                                 'timestamp', '2026-11-30T00:00:0' || i || 'Z')) FROM generate_series(1, 9) i));
SELECT ops_worker_run('sender') AS completed;
SELECT op_id FROM regress.sent ORDER BY op_id;
SELECT o.op_id, o.trustlog_status, r.retry_count, r.error_message
  FROM opsmeter.operations o LEFT JOIN opsmeter.retries r USING (op_id) WHERE o.op_id LIKE 'job-w%' ORDER BY o.op_id;
SELECT r->>'status' AS status, r->>'rows' AS completed, r->>'message' AS message FROM ops_run_job('sender') r;
SELECT ops_run_job('sender')->>'message' AS idle;
SELECT job, status, rows FROM opsmeter.job_runs WHERE job = 'sender' ORDER BY id;
SELECT job, last_status, lag IS NOT NULL AS has_lag FROM ops_health() WHERE job = 'sender';
-- a handler runs as its function's owner, not as the caller (here a superuser)
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'regress_handler_owner') THEN
        CREATE ROLE regress_handler_owner;
    END IF;
END $$;
CREATE TABLE regress.who (op_id text, who name, leased boolean);
GRANT USAGE ON SCHEMA regress TO regress_handler_owner;
GRANT INSERT ON regress.who TO regress_handler_owner;
-- (the row it gets carries the lease the batch's claim just wrote)
CREATE FUNCTION regress.note(op opsmeter.operations) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO regress.who VALUES (op.op_id, current_user, op.lease_token IS NOT NULL) $$;
ALTER FUNCTION regress.note(opsmeter.operations) OWNER TO regress_handler_owner;
SELECT ops_worker_register('noter', 'regress.note(opsmeter.operations)', 10);
SELECT ops_op_save('{"op_id": "job-who", "timestamp": "2026-11-30T01:00:00Z"}');
SELECT ops_worker_run('noter') AS completed, current_user AS caller;
SELECT op_id, who, leased FROM regress.who;
SELECT ops_worker_unregister('noter');
DROP FUNCTION regress.note(opsmeter.operations);
REVOKE ALL ON SCHEMA regress FROM regress_handler_owner;
DROP TABLE regress.who;
DROP ROLE regress_handler_owner;
SELECT ops_worker_unregister('sender') AS removed, ops_worker_unregister('sender') AS again;
SELECT count(*) AS workers FROM ops_workers();
SELECT count(*) AS sender_state FROM opsmeter.job_state WHERE job = 'sender';

-- 8. opsmeter.job_runs keeps the newest opsmeter.job_runs_keep rows
SET opsmeter.job_runs_keep = 10;
SELECT count(*) AS runs FROM generate_series(1, 15), LATERAL ops_run_job('retention');
SELECT count(*) AS kept, max(id) - min(id) AS span FROM opsmeter.job_runs;
RESET opsmeter.job_runs_keep;

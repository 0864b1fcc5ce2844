-- Operations queue (0.5.0): saving operations, claims and leases, completion by compare-and-set,
-- failures with backoff and dead letters, requeue, retry rows, cursors, the filtered query and
-- the stats. Times and tokens change from run to run, so they are shown as facts about them
-- (equalities, differences), never as values. pg_regress runs in PST8PDT: every timestamp
-- below carries an explicit offset.
SET client_min_messages = warning;

-- 1. Saving: one operation with every field, a batch, and each kind of rejection (nothing written)
SELECT ops_op_save('{"op_id": "op-01", "op_actor": "alice", "doid": "10.100/obj-1", "producer_id": "prod-a",
                     "request_body_hash": "h-req", "response_body_hash": null, "op_source": "IRP",
                     "op_code": 1, "do_prefix": "10.100", "do_repository": "repo-a",
                     "client_ip": "192.0.2.10", "server_ip": null, "timestamp": "2026-11-01T08:00:00Z"}');
SELECT ops_op_save_batch(
    (SELECT jsonb_agg(jsonb_build_object(
         'op_id', 'op-' || lpad(i::text, 2, '0'), 'op_actor', CASE WHEN i % 2 = 0 THEN 'bob' ELSE 'alice' END,
         'doid', '10.100/obj-' || i, 'producer_id', 'prod-' || (i % 3), 'op_source', 'DOIP',
         'op_code', (i % 4)::text, 'do_prefix', '10.' || (100 + i % 2), 'do_repository', 'repo-b',
         'client_ip', CASE WHEN i % 3 = 0 THEN NULL ELSE '192.0.2.' || i END,
         'timestamp', to_char((TIMESTAMPTZ '2026-11-01 08:00:00+00' + i * interval '1 minute') AT TIME ZONE 'UTC',
                              'YYYY-MM-DD"T"HH24:MI:SS"+00:00"')) ORDER BY i)
       FROM generate_series(2, 12) i));
SELECT ops_op_save('{"op_id": "rec-01", "timestamp": "2026-10-01T00:00:00+02:00"}', 'TRUSTLOGGED');
SELECT ops_op_save_batch('[]');
SELECT regress.err($$SELECT ops_op_save('{"op_id": "op-01"}')$$);
SELECT regress.err($$SELECT ops_op_save_batch('[{"op_id": "new-1"}, {"op_id": "op-05"}]')$$);
SELECT regress.err($$SELECT ops_op_save_batch('[{"op_id": "new-1"}, {"op_id": "new-1"}]')$$);
SELECT regress.err($$SELECT ops_op_save_batch('[{"op_id": "new-1"}, {"doid": "x"}]')$$);
SELECT regress.err($$SELECT ops_op_save_batch('[{"op_id": "new-1"}, {"op_id": "new-2", "op_code": 2.5}]')$$);
SELECT regress.err($$SELECT ops_op_save_batch('[{"op_id": "new-1", "op_code": 99999999999}]')$$);
SELECT regress.err($$SELECT ops_op_save_batch('[{"op_id": "new-1", "timestamp": "2026-11-01 08:00"}]')$$);
SELECT regress.err($$SELECT ops_op_save_batch('[{"op_id": "new-1", "client_ip": 7}]')$$);
SELECT regress.err($$SELECT ops_op_save('{"op_id": "new-1"}', 'DONE')$$);
SELECT regress.err($$SELECT ops_op_save('{"op_id": "new-1", "trustlog_status": "TRUSTLOGGED"}')$$);
SELECT regress.err($$SELECT ops_op_save_batch('{"op_id": "new-1"}')$$);
SELECT count(*) AS operations, count(*) FILTER (WHERE trustlog_status = 'NOT_TRUSTLOGGED') AS to_do
  FROM opsmeter.operations;
SELECT op_id, op_actor, doid, producer_id, request_body_hash, response_body_hash, op_source, op_code,
       do_prefix, do_repository, client_ip, server_ip, trustlog_status,
       "timestamp" AT TIME ZONE 'UTC' AS ts_utc, created_at <= now() AS created_before_now
  FROM opsmeter.operations WHERE op_id IN ('op-01', 'op-03', 'rec-01') ORDER BY op_id;

-- 2. Claims: oldest first, one token per call, disjoint while leases live; bad arguments
CREATE TABLE regress.c1 AS SELECT * FROM ops_op_claim(3, '10 minutes');
SELECT op_id, trustlog_status, op_code FROM regress.c1 ORDER BY "timestamp";
SELECT count(DISTINCT lease_token) AS tokens,
       bool_and(lease_expires_at - clock_timestamp() BETWEEN interval '9 minutes' AND interval '10 minutes') AS ten_minutes
  FROM regress.c1;
CREATE TABLE regress.c2 AS SELECT * FROM ops_op_claim(4);
SELECT op_id FROM regress.c2 ORDER BY "timestamp";
SELECT (SELECT min(lease_token::text) FROM regress.c1) <> (SELECT min(lease_token::text) FROM regress.c2) AS new_token;
SELECT regress.err('SELECT * FROM ops_op_claim(0)');
SELECT regress.err('SELECT * FROM ops_op_claim(10001)');
SELECT regress.err($$SELECT * FROM ops_op_claim(1, '-5 minutes')$$);
SELECT regress.err($$SELECT * FROM ops_op_claim(1, '8 days')$$);
SELECT count(*) AS strict_null FROM ops_op_claim(NULL);

-- 3. Completion: compare-and-set, counted once; with a token, only what that lease holds
SELECT ops_op_complete(ARRAY['op-01', 'op-02', 'op-01', 'no-such-op']) AS completed;
SELECT ops_op_complete(ARRAY['op-01', 'op-02']) AS again;
SELECT ops_op_complete(ARRAY(SELECT op_id FROM regress.c2), (SELECT min(lease_token::text)::uuid FROM regress.c1)) AS other_token;
SELECT ops_op_completed(ARRAY(SELECT op_id FROM regress.c2 ORDER BY op_id), (SELECT min(lease_token::text)::uuid FROM regress.c2)) AS completed_ids
 ORDER BY 1;
SELECT ops_op_complete(NULL) AS null_ids;
SELECT op_id, trustlog_status, lease_token IS NULL AS no_lease, available_at IS NULL AS off_queue
  FROM opsmeter.operations WHERE op_id IN ('op-01', 'op-03', 'op-04') ORDER BY op_id;

-- 4. Failures: backoff 1, 2, 4, 8, 16 x retry_base, dead letter on failure max_retries + 1
SET opsmeter.retry_base = '1 hour';
SELECT ops_op_fail('op-03', 'wrong token', '00000000-0000-0000-0000-000000000000') AS with_wrong_token;
SELECT ops_op_fail('op-03', 'upstream 503', (SELECT min(lease_token::text)::uuid FROM regress.c1)) AS failed;
SELECT f.n, ops_op_fail('op-03', 'upstream 503 #' || f.n) AS failed FROM generate_series(2, 7) f(n) ORDER BY f.n;
-- history of op-03 as ops_op_fail left it: the sixth failure made it a dead letter
SELECT op_id, retry_count, retry_status, next_retry_at, error_message, last_retry_at >= created_at AS retried
  FROM opsmeter.retries ORDER BY op_id;
SET opsmeter.max_retries = 2;
SELECT ops_op_fail('op-11', 'a') AS f1, ops_op_fail('op-11', 'b') AS f2, ops_op_fail('op-11', 'c') AS f3, ops_op_fail('op-11', 'd') AS f4;
SELECT op_id, retry_count, retry_status, error_message FROM opsmeter.retries WHERE op_id = 'op-11';
RESET opsmeter.max_retries;
SELECT ops_op_fail('op-12', 'first') AS failed;
SELECT op_id, retry_count, retry_status, next_retry_at - updated_at AS delay, last_retry_at IS NULL AS never_retried
  FROM opsmeter.retries WHERE op_id = 'op-12';
SELECT ops_op_fail('op-01', 'completed already') AS on_completed, ops_op_fail(NULL, 'x') AS on_null;
SELECT regress.err($$SET opsmeter.retry_base = '1 month'$$);
SELECT regress.err($$SET opsmeter.retry_base = '-1 minute'$$);
SELECT regress.err($$SET opsmeter.retry_jitter = 2$$);
SHOW opsmeter.retry_base;
RESET opsmeter.retry_base;
SHOW opsmeter.retry_base;

-- 5. Dead letters and waiting retries are not claimed; requeue revives dead letters only
SELECT op_id FROM ops_op_claim(100) ORDER BY "timestamp";
SELECT count(*) AS due_now FROM ops_retry_due(10);
SELECT not_trustlogged, pending, leased, retrying, dead_letters, cursor_lag FROM ops_queue_stats();
SELECT ops_op_requeue(ARRAY['op-03', 'op-11', 'op-12', 'op-01']) AS requeued;
SELECT op_id FROM opsmeter.retries ORDER BY op_id;
SELECT op_id FROM ops_op_claim(100) ORDER BY "timestamp";
SELECT ops_retry_done('op-12') AS done, ops_retry_done('op-12') AS again;
SELECT op_id FROM ops_op_claim(100) ORDER BY "timestamp";

-- 6. Cursors: missing is '' (seed), init overwrites unless keep_existing
SELECT ops_cursor_get('scan') AS missing;
SELECT ops_cursor_init('scan', '2026-11-01T08:00:00Z') AS init, ops_cursor_get('scan') AS now_set;
SELECT ops_cursor_init('scan', '2026-11-01T09:00:00Z') AS overwritten;
SELECT ops_cursor_init('scan', '2026-11-01T10:00:00Z', keep_existing => true) AS kept;
SELECT ops_cursor_set('scan', '2026-11-01T11:00:00Z');
SELECT ops_cursor_set('other', 'not a time');
SELECT cursor_key, cursor_value FROM opsmeter.cursors ORDER BY cursor_key;
-- the lag is measured from the oldest value that is an RFC 3339 time ('not a time' is ignored)
SELECT abs(EXTRACT(EPOCH FROM cursor_lag - (clock_timestamp() - TIMESTAMPTZ '2026-11-01 11:00:00+00'))) < 60 AS lag_from_oldest_time
  FROM ops_queue_stats();

-- 7. The filtered, paged query (the seed's filters; LIKE input escaped; whitelist ordering)
SELECT ops_op_save_batch('[{"op_id": "like-1", "doid": "50%_off", "timestamp": "2026-11-02T00:00:00Z"},
                           {"op_id": "like-2", "doid": "50x_off", "timestamp": "2026-11-02T00:00:01Z"},
                           {"op_id": "like-3", "doid": "back\\slash", "timestamp": "2026-11-02T00:00:02Z"}]');
SELECT op_id, doid, total, total_pages FROM ops_operations_query('{"doid": "%_"}');
SELECT op_id, doid, total FROM ops_operations_query('{"doid": "\\"}');
SELECT op_id, total FROM ops_operations_query('{"doid": "_off"}', order_by => 'op_id', descending => true);
SELECT op_id, op_actor, op_code, total, total_pages
  FROM ops_operations_query('{"op_actor": "bob", "op_code": 2, "op_source": "DOIP"}');
SELECT op_id, total, total_pages
  FROM ops_operations_query('{"do_prefix": "10.101", "trustlog_status": "TRUSTLOGGED"}', 2, 1, 'timestamp');
SELECT op_id, total, total_pages FROM ops_operations_query('{}', 4, 2, 'timestamp', true);
SELECT count(*) AS past_the_end FROM ops_operations_query('{}', 4, 99);
SELECT count(*) AS clamped_to_1000 FROM ops_operations_query('{}', 100000);
SELECT count(*) AS clamped_to_1, max(total_pages) AS pages FROM ops_operations_query('{}', -3, -3);
SELECT op_id FROM ops_operations_query('{"time_from": "2026-11-01T08:05:00Z", "time_to": "2026-11-01T08:07:00Z", "op_actor": "", "client_ip": null}', 10, 1, 'timestamp');
SELECT op_id FROM ops_operations_query('{"client_ip": "192.0.2.10", "server_ip": ""}');
SELECT ops_operations_count('{}') AS all_ops, ops_operations_count('{"producer_id": "prod-1"}') AS prod_1,
       ops_operations_count(NULL) AS null_filter;
SELECT regress.err($$SELECT * FROM ops_operations_query('{}', 10, 1, 'op_actor')$$);
SELECT regress.err($$SELECT * FROM ops_operations_query('{"opId": "x"}')$$);
SELECT regress.err($$SELECT * FROM ops_operations_query('[1]')$$);
SELECT regress.err($$SELECT * FROM ops_operations_query('{"time_to": "yesterday"}')$$);
SELECT regress.err($$SELECT * FROM ops_operations_query('{"trustlog_status": "DONE"}')$$);
SELECT regress.err($$SELECT * FROM ops_operations_query('{"op_code": "x"}')$$);

-- 8. The whole flow in one transaction (what an in-database handler does): claim, work, complete
BEGIN;
CREATE TABLE regress.handled (op_id text PRIMARY KEY);
WITH c AS (SELECT * FROM ops_op_claim(100, '1 minute')),
     w AS (INSERT INTO regress.handled SELECT op_id FROM c RETURNING op_id)
SELECT ops_op_complete(ARRAY(SELECT op_id FROM w), (SELECT min(lease_token::text)::uuid FROM c)) AS completed_in_txn;
COMMIT;
SELECT count(*) AS handled FROM regress.handled;
SELECT not_trustlogged, pending, leased, retrying, dead_letters FROM ops_queue_stats();

-- 9. The plain-SQL worker loop of docs/queue.md, as written there, run until it first finds
-- nothing to claim: every batch it committed stays done, failures are scheduled, nothing is
-- lost. Its idle sleep is stubbed for the test (a function earlier in search_path than
-- pg_catalog's pg_sleep) to stop it there: a statement timeout would stop it after a time, which
-- a slow machine can reach while work remains.
CREATE FUNCTION my_process(op_id text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF op_id LIKE 'w-%7' THEN RAISE EXCEPTION 'cannot process %', op_id; END IF;
    INSERT INTO regress.handled VALUES (op_id);
END $$;
CREATE PROCEDURE my_worker(batch integer DEFAULT 100)
LANGUAGE plpgsql AS $$
DECLARE
    op    record;
    token uuid;
    done  text[];
BEGIN
    LOOP
        token := NULL; done := '{}';
        FOR op IN SELECT * FROM ops_op_claim(batch, '5 minutes') LOOP
            token := op.lease_token;
            BEGIN
                PERFORM my_process(op.op_id);   -- your work; raise to fail the operation
                done := done || op.op_id;
            EXCEPTION WHEN OTHERS THEN          -- my_process's changes are rolled back
                PERFORM ops_op_fail(op.op_id, SQLERRM, op.lease_token);
            END;
        END LOOP;
        PERFORM ops_op_complete(done, token);   -- nothing to do when nothing was claimed
        COMMIT;
        IF token IS NULL THEN
            PERFORM pg_sleep(5);                -- nothing claimed
        END IF;
    END LOOP;
END
$$;
SELECT ops_op_save_batch((SELECT jsonb_agg(jsonb_build_object('op_id', 'w-' || i,
           'timestamp', to_char((TIMESTAMPTZ '2026-11-03 00:00+00' + i * interval '1 second') AT TIME ZONE 'UTC',
                                'YYYY-MM-DD"T"HH24:MI:SS"Z"')))
         FROM generate_series(1, 250) i));
CREATE FUNCTION regress.pg_sleep(float8) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'worker idle: nothing to claim';
END $$;
SET search_path = regress, pg_catalog, public;
CALL my_worker(40);
RESET search_path;
DROP FUNCTION regress.pg_sleep(float8);
SELECT count(*) FILTER (WHERE o.trustlog_status = 'TRUSTLOGGED') AS done,
       count(*) FILTER (WHERE r.retry_status = 'PENDING' AND r.error_message = 'cannot process ' || o.op_id) AS failed_once,
       count(*) FILTER (WHERE h.op_id IS NOT NULL) AS handled
  FROM opsmeter.operations o
  LEFT JOIN opsmeter.retries r ON r.op_id = o.op_id
  LEFT JOIN regress.handled h ON h.op_id = o.op_id
 WHERE o.op_id LIKE 'w-%';

-- 10. A claim and a completion read opsmeter.leases and opsmeter.retries through their indexes,
-- even with the generic plans this session made when both were nearly empty (0.12.0): no
-- sequential scan of either, nor of the operations, in the transaction's own statistics (the
-- session's earlier counts are flushed first: pg_stat_xact_* shows what is not flushed yet)
SELECT ops_op_save_batch((SELECT jsonb_agg(jsonb_build_object('op_id', 'ix-' || i, 'timestamp', '2026-10-02T00:00:00Z'))
         FROM generate_series(1, 5) i));
SELECT FROM pg_stat_force_next_flush();
BEGIN;
CREATE TEMP TABLE c10 AS SELECT * FROM ops_op_claim(5, '1 minute');
SELECT ops_op_complete((SELECT array_agg(op_id) FROM c10), (SELECT lease_token FROM c10 LIMIT 1)) AS completed;
SELECT relname, seq_scan, idx_scan > 0 AS used_an_index
  FROM pg_stat_xact_user_tables
 WHERE schemaname = 'opsmeter' AND relname IN ('leases', 'retries', 'operations')
 ORDER BY relname;
COMMIT;

-- 11. Claims in REPEATABLE READ and SERIALIZABLE lease as in READ COMMITTED, but leave the walk
-- start where it is and the rows of expired leases in opsmeter.leases (docs/queue.md); the next
-- READ COMMITTED claim moves the one and deletes the others. (A claim there whose snapshot
-- predates another claim's lease of the same rows fails with 40001: tests/concurrency/queue.sh.)
SELECT ops_op_save_batch((SELECT jsonb_agg(jsonb_build_object('op_id', 'rr-' || i, 'timestamp', '2000-01-01T00:00:0' || i || 'Z'))
         FROM generate_series(1, 3) i));
CREATE TEMP TABLE b11 AS SELECT generation FROM opsmeter.queue_bound;
BEGIN ISOLATION LEVEL REPEATABLE READ;
CREATE TEMP TABLE rr11 AS SELECT * FROM ops_op_claim(2, '10 milliseconds');
SELECT string_agg(op_id, ',' ORDER BY op_id) AS claimed_in_repeatable_read FROM rr11;
COMMIT;
SELECT b.generation = b11.generation AS walk_start_unmoved FROM opsmeter.queue_bound b, b11;
SELECT pg_sleep(0.05);
BEGIN ISOLATION LEVEL SERIALIZABLE;
CREATE TEMP TABLE sr11 AS SELECT * FROM ops_op_claim(2, '1 minute');
SELECT string_agg(op_id, ',' ORDER BY op_id) AS taken_over_in_serializable,
       count(DISTINCT lease_token) = 1 AND bool_and(lease_token <> (SELECT lease_token FROM rr11 LIMIT 1)) AS new_token
  FROM sr11;
COMMIT;
SELECT count(*) AS expired_lease_row_left FROM opsmeter.leases WHERE lease_token = (SELECT lease_token FROM rr11 LIMIT 1);
SELECT string_agg(op_id, ',' ORDER BY op_id) AS claimed_in_read_committed FROM ops_op_claim(1, '1 minute');
SELECT count(*) AS expired_lease_row_left FROM opsmeter.leases WHERE lease_token = (SELECT lease_token FROM rr11 LIMIT 1);
SELECT b.generation > b11.generation AS walk_start_moved FROM opsmeter.queue_bound b, b11;
RESET client_min_messages;

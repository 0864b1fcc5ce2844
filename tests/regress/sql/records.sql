-- Request-record store (0.4.0): ops_add_records, ops_load_records, ops_latest_timestamps,
-- ops_history / ops_model_history, partitions and ops_cleanup_records, deletes by key, circuit
-- states. Checked against an independent exact oracle (tests/oracle/records_oracle.sql: plain
-- GROUP BYs with percentile_disc) on 40 000 generated records over 10 days, plus hand-made cases.
-- pg_regress runs in PST8PDT: every timestamp below carries an explicit offset.
\set ECHO none
\set QUIET on
SET client_min_messages = warning;
\i tests/oracle/records_oracle.sql
RESET client_min_messages;
\o /dev/null
SELECT setseed(0.4242);
\o
-- 40 000 records, 2026-11-10 00:00Z .. 2026-11-20 00:00Z: 3 api_types, 20 keys (skewed), 3
-- base_urls ('' sent as absent, null or ""), 5 models ('' likewise), log-normal latencies
-- around 900 ms with a Pareto tail, clamped to 1 ms .. 10 min (integers, 3 decimals, or full
-- float8); 5% failures (30% for key-07; gemini/key-19 never fails, responses/key-20 always does)
-- with status 0/429/500/529. created_at is written in 5 offsets x 0..9 fraction digits (7..9
-- digits carry random sub-µs digits, never an exact half).
CREATE TABLE regress.rec_gen AS
WITH u AS (
    SELECT i, random() AS u_api, random() AS u_key, random() AS u_url, random() AS u_model,
           random() AS u_fail, random() AS u_status, random() AS u1, random() AS u2, random() AS u_tail,
           random() AS u_t, random() AS u_frac, random() AS u_shuffle
      FROM generate_series(1, 40000) AS i
), v AS (
    SELECT u.*,
           CASE WHEN u_api < 0.5 THEN 'messages' WHEN u_api < 0.8 THEN 'responses' ELSE 'gemini' END AS api_type,
           'key-' || lpad((1 + floor(power(u_key, 1.5) * 20))::int::text, 2, '0') AS metrics_key,
           CASE WHEN u_url < 0.5 THEN 'https://api.example.com' WHEN u_url < 0.8 THEN 'https://relay.example.net/v1' ELSE '' END AS base_url,
           CASE WHEN u_model < 0.35 THEN 'claude-sonnet-4-5' WHEN u_model < 0.55 THEN 'claude-haiku-4-5'
                WHEN u_model < 0.75 THEN 'gpt-5' WHEN u_model < 0.9 THEN 'gemini-2.5-pro' ELSE '' END AS model,
           timestamptz '2026-11-10 00:00:00+00' + floor(u_t * 864000e6)::bigint * interval '1 microsecond' AS t,
           i % 5 AS off_idx, (i / 5) % 10 AS digits
      FROM u
), w AS (
    SELECT v.*,
           NOT CASE WHEN api_type = 'gemini' AND metrics_key = 'key-19' THEN false
                    WHEN api_type = 'responses' AND metrics_key = 'key-20' THEN true
                    ELSE u_fail < CASE metrics_key WHEN 'key-07' THEN 0.3 ELSE 0.05 END END AS success,
           least(600000, greatest(1, CASE WHEN u_tail < 0.03 THEN 20000 * power((u_tail + 1e-6) / 0.03, -0.8)
                                          ELSE exp(ln(900) + 1.2 * sqrt(-2 * ln(1 - u1)) * cos(2 * pi() * u2)) END))::float8 AS lat,
           (t AT TIME ZONE 'UTC') + CASE off_idx WHEN 1 THEN interval '5:45' WHEN 2 THEN interval '-8:00'
                                                 WHEN 4 THEN interval '-3:30' ELSE interval '0' END AS local_t,
           lpad(floor(u_frac * 1000)::int::text, 3, '0') AS sub_us
      FROM v
), x AS (
    SELECT w.*,
           CASE WHEN success THEN CASE WHEN u_status < 0.9 THEN 200 WHEN u_status < 0.97 THEN 201 ELSE 204 END
                ELSE CASE WHEN u_status < 0.2 THEN 0 WHEN u_status < 0.5 THEN 429 WHEN u_status < 0.8 THEN 500 ELSE 529 END
           END AS status_code,
           CASE i % 3 WHEN 0 THEN round(lat)::numeric WHEN 1 THEN round(lat::numeric, 3) ELSE lat::text::numeric END AS latency_num,
           to_char(local_t, 'YYYY-MM-DD"T"HH24:MI:SS')
             || CASE WHEN digits = 0 THEN ''
                     WHEN digits <= 6 THEN '.' || left(to_char(local_t, 'US'), digits)
                     ELSE '.' || to_char(local_t, 'US')
                          || CASE WHEN left(sub_us, digits - 6) = rpad('5', digits - 6, '0') THEN rpad('4', digits - 6, '9')
                                  ELSE left(sub_us, digits - 6) END
                END
             || (ARRAY['Z', '+05:45', '-08:00', '+00:00', '-03:30'])[off_idx + 1] AS created_text
      FROM w
)
SELECT i, api_type, metrics_key, base_url, model, success, status_code, latency_num, created_text, t, u_shuffle,
       jsonb_build_object('api_type', api_type, 'metrics_key', metrics_key, 'success', success,
                          'status_code', status_code, 'latency_ms', latency_num, 'created_at', created_text)
         || CASE WHEN base_url <> '' THEN jsonb_build_object('base_url', base_url)
                 WHEN i % 3 = 0 THEN '{}' WHEN i % 3 = 1 THEN '{"base_url": null}' ELSE '{"base_url": ""}' END
         || CASE WHEN model <> '' THEN jsonb_build_object('model', model)
                 WHEN i % 4 < 2 THEN '{}' WHEN i % 4 = 2 THEN '{"model": null}' ELSE '{"model": ""}' END
         || CASE WHEN i % 7 = 0 THEN jsonb_build_object('request_id', 'req-' || i, 'usage', jsonb_build_object('tokens_in', i % 1000))
                 ELSE '{}' END AS elem
  FROM x;
-- 40 batches of 1000: 0..19 hold the first 20 000 records cut in time order (phase 1 sends them
-- newest first), 20..39 the other 20 000 in random order (phase 2); elements shuffled in each.
CREATE TABLE regress.rec_batches (batch int PRIMARY KEY, phase int NOT NULL, ord int NOT NULL, doc jsonb NOT NULL, result bigint);
INSERT INTO regress.rec_batches (batch, phase, ord, doc)
SELECT b, CASE WHEN b < 20 THEN 1 ELSE 2 END, CASE WHEN b < 20 THEN 19 - b ELSE b END, jsonb_agg(elem ORDER BY u_shuffle)
  FROM (SELECT g.*, (row_number() OVER (ORDER BY i > 20000, CASE WHEN i <= 20000 THEN t END, u_shuffle) - 1) / 1000 AS b
          FROM regress.rec_gen g) s
 GROUP BY b;
-- regress.rec_send(phase): sends that phase's batches through ops_add_records in `ord` order,
-- keeps each result, returns their sum.
CREATE FUNCTION regress.rec_send(p int) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE r record; total bigint := 0; n bigint;
BEGIN
    FOR r IN SELECT * FROM regress.rec_batches WHERE phase = p ORDER BY ord LOOP
        n := ops_add_records(r.doc);
        UPDATE regress.rec_batches SET result = n WHERE batch = r.batch;
        total := total + n;
    END LOOP;
    RETURN total;
END $$;
-- Every element sent and accepted, as the contract reads it: absent or null base_url / model
-- are '', created_at is the RFC 3339 string cast with ::timestamptz.
CREATE VIEW regress.rec_expected AS
SELECT e->>'api_type' AS api_type, e->>'metrics_key' AS metrics_key, coalesce(e->>'base_url', '') AS base_url,
       coalesce(e->>'model', '') AS model, (e->'success')::boolean AS success, (e->>'status_code')::int AS status_code,
       (e->>'latency_ms')::float8 AS latency_ms, (e->>'created_at')::timestamptz AS created_at,
       e->>'created_at' AS created_text, e->>'latency_ms' AS latency_text
  FROM regress.rec_batches b, jsonb_array_elements(b.doc) AS e
 WHERE b.result IS NOT NULL;
-- a fingerprint of a set of records (any order)
CREATE FUNCTION regress.rec_md5(rows text[]) RETURNS text LANGUAGE sql AS $$
SELECT md5(string_agg(x, E'\n' ORDER BY x)) FROM unnest(rows) x
$$;
-- what a rejected call must leave alone: every record, the partitions, record_latest
CREATE FUNCTION regress.rec_state() RETURNS text LANGUAGE sql SET TimeZone = 'UTC' AS $$
SELECT md5(concat_ws('|',
    (SELECT count(*) FROM opsmeter.request_records),
    (SELECT regress.rec_md5(array_agg(r::text)) FROM opsmeter.request_records r),
    (SELECT string_agg(p.partition::text || ' ' || p.day, ',' ORDER BY p.day) FROM ops_record_partitions() p),
    (SELECT string_agg(c.inhrelid::regclass::text, ',' ORDER BY c.inhrelid::regclass::text) FROM pg_inherits c
      WHERE c.inhparent = 'opsmeter.request_records'::regclass),
    (SELECT regress.rec_md5(array_agg(l::text)) FROM opsmeter.record_latest l)))
$$;
\set QUIET off
\set ECHO all

-- 1. Phase 1: 20 batches in time order, sent newest first; every call returns its batch size.
-- ops_latest_timestamps then matches the records (later batches were all older: GREATEST kept).
SELECT regress.rec_send(1) AS written;
SELECT count(*) AS batches, bool_and(result = jsonb_array_length(doc)) AS each_batch_size
  FROM regress.rec_batches WHERE phase = 1;
SELECT a.api_type, d.* FROM (VALUES ('messages'), ('responses'), ('gemini')) a(api_type), oracle.rec_latest_diff(a.api_type) d;

-- 2. Phase 2: 20 batches spread over all 10 days, in another TimeZone and DateStyle (neither
-- may matter), then hand-made edge cases: sub-µs rounding into the next second and the next
-- UTC day (a partition of its own), -00:00 and +14:00 offsets, latency 0, 1.5E3 and 600000,
-- status 999, a 9-digit zero fraction, absent/null/"" base_url and model, unknown keys; and
-- latencies with 16-17 significant digits (key "float", checked in 4).
SET TimeZone = 'Asia/Kathmandu';
SET DateStyle = 'SQL, DMY';
SELECT regress.rec_send(2) AS written;
RESET DateStyle;
RESET TimeZone;
SELECT count(*) AS batches, bool_and(result = jsonb_array_length(doc)) AS each_batch_size
  FROM regress.rec_batches WHERE phase = 2;
INSERT INTO regress.rec_batches (batch, phase, ord, doc) VALUES (40, 3, 0, $$[
 {"api_type": "messages", "metrics_key": "edge", "success": true, "status_code": 200, "latency_ms": 0, "created_at": "2026-11-19T23:59:59.9999996Z"},
 {"api_type": "messages", "metrics_key": "edge", "success": true, "status_code": 200, "latency_ms": 1.5E3, "created_at": "2026-11-15T05:44:59.999999+05:45"},
 {"api_type": "messages", "metrics_key": "edge", "success": false, "status_code": 999, "latency_ms": 600000, "created_at": "2026-11-12T10:00:00.000000000Z"},
 {"api_type": "messages", "metrics_key": "edge", "success": false, "status_code": 0, "latency_ms": 0.001, "created_at": "2026-11-13T04:59:59.123456501-00:00", "base_url": null, "model": null},
 {"api_type": "messages", "metrics_key": "edge", "success": true, "status_code": 204, "latency_ms": 12.25, "created_at": "2026-11-14T13:59:59.99999951+14:00", "base_url": "", "model": "", "id": 7, "extra": {"a": [1, 2]}},
 {"api_type": "gemini", "metrics_key": "edge", "success": true, "status_code": 200, "latency_ms": 3, "created_at": "2026-11-11T00:00:00Z", "base_url": "https://api.example.com", "model": "gemini-2.5-pro"},
 {"api_type": "responses", "metrics_key": "float", "success": true, "status_code": 200, "latency_ms": 245.49838101061434, "created_at": "2026-11-16T00:00:01Z"},
 {"api_type": "responses", "metrics_key": "float", "success": true, "status_code": 200, "latency_ms": 991.9339281847857, "created_at": "2026-11-16T00:00:02Z"},
 {"api_type": "responses", "metrics_key": "float", "success": true, "status_code": 200, "latency_ms": 3.0000000000000004, "created_at": "2026-11-16T00:00:03Z"},
 {"api_type": "responses", "metrics_key": "float", "success": true, "status_code": 200, "latency_ms": 0.1, "created_at": "2026-11-16T00:00:04Z"},
 {"api_type": "responses", "metrics_key": "float", "success": true, "status_code": 200, "latency_ms": 123456.78901234567, "created_at": "2026-11-16T00:00:05Z"}
]$$);
SELECT regress.rec_send(3) AS written;
-- the edge records as stored (UTC)
SELECT e.created_text, to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS stored_utc,
       r.created_at = e.created_at AS equals_cast, r.api_type, r.base_url, r.model, r.success, r.status_code, r.latency_ms
  FROM regress.rec_expected e
  JOIN opsmeter.request_records r ON r.metrics_key = 'edge' AND r.api_type = e.api_type AND r.latency_ms = e.latency_ms
 WHERE e.metrics_key = 'edge'
 ORDER BY r.created_at;
SELECT a.api_type, d.* FROM (VALUES ('messages'), ('responses'), ('gemini')) a(api_type), oracle.rec_latest_diff(a.api_type) d;

-- 3. A later batch with OLDER timestamps adds its rows but does not move record_latest back;
-- a new key gets its row. key-01's latest times before and after:
SELECT last_success_at AS s01, last_failure_at AS f01 FROM ops_latest_timestamps('messages') WHERE metrics_key = 'key-01' \gset
INSERT INTO regress.rec_batches (batch, phase, ord, doc) VALUES (41, 4, 0, $$[
 {"api_type": "messages", "metrics_key": "key-01", "success": true, "status_code": 200, "latency_ms": 10, "created_at": "2026-11-10T00:00:01Z"},
 {"api_type": "messages", "metrics_key": "key-01", "success": false, "status_code": 500, "latency_ms": 10, "created_at": "2026-11-10T00:00:02+05:45"},
 {"api_type": "messages", "metrics_key": "old-only", "success": true, "status_code": 200, "latency_ms": 10, "created_at": "2026-11-10T01:02:03.5-08:00"}
]$$);
SELECT regress.rec_send(4) AS written;
SELECT metrics_key, last_success_at = :'s01' AS success_kept, last_failure_at = :'f01' AS failure_kept,
       last_success_at > '2026-11-19 00:00+00' AND last_failure_at > '2026-11-19 00:00+00' AS recent
  FROM ops_latest_timestamps('messages') WHERE metrics_key = 'key-01';
SELECT metrics_key, last_success_at, last_failure_at FROM ops_latest_timestamps('messages') WHERE metrics_key = 'old-only';
SELECT a.api_type, d.* FROM (VALUES ('messages'), ('responses'), ('gemini')) a(api_type), oracle.rec_latest_diff(a.api_type) d;
-- keys with only successes / only failures, and the key lists in order
SELECT metrics_key, last_success_at IS NOT NULL AS has_success, last_failure_at IS NOT NULL AS has_failure
  FROM ops_latest_timestamps('gemini') WHERE metrics_key = 'key-19'
UNION ALL
SELECT metrics_key, last_success_at IS NOT NULL, last_failure_at IS NOT NULL
  FROM ops_latest_timestamps('responses') WHERE metrics_key = 'key-20';
SELECT a.api_type, (SELECT string_agg(metrics_key, ' ') FROM ops_latest_timestamps(a.api_type)) AS keys
  FROM (VALUES ('messages'), ('responses'), ('gemini'), ('no-such-api')) a(api_type);

-- 4. Stored rows are exactly the accepted elements (multiset, every column), for every
-- created_at form: 5 offsets x 0..9 fraction digits, plus the edge forms.
SELECT count(*) AS records, (SELECT count(*) FROM regress.rec_expected) AS sent FROM opsmeter.request_records;
-- (created_at_not_stored ignores latency_ms: the created_at forms alone)
SELECT count(DISTINCT (substring(e.created_text FROM '(Z|[+-]\d\d:\d\d)$'), length(substring(e.created_text FROM '\.(\d+)')))) AS forms,
       count(*) AS rows, count(*) FILTER (WHERE r.api_type IS NULL) AS not_stored,
       count(*) FILTER (WHERE t.api_type IS NULL) AS created_at_not_stored
  FROM regress.rec_expected e
  LEFT JOIN (SELECT DISTINCT * FROM opsmeter.request_records) r
    ON (r.api_type, r.metrics_key, r.base_url, r.model, r.success, r.status_code, r.latency_ms, r.created_at)
     = (e.api_type, e.metrics_key, e.base_url, e.model, e.success, e.status_code, e.latency_ms, e.created_at)
  LEFT JOIN (SELECT DISTINCT api_type, metrics_key, base_url, model, success, status_code, created_at FROM opsmeter.request_records) t
    ON (t.api_type, t.metrics_key, t.base_url, t.model, t.success, t.status_code, t.created_at)
     = (e.api_type, e.metrics_key, e.base_url, e.model, e.success, e.status_code, e.created_at);
SELECT (SELECT count(*) FROM (SELECT api_type, metrics_key, base_url, model, success, status_code, latency_ms, created_at FROM regress.rec_expected
                              EXCEPT ALL SELECT * FROM opsmeter.request_records) d) AS missing,
       (SELECT count(*) FROM (SELECT * FROM opsmeter.request_records
                              EXCEPT ALL SELECT api_type, metrics_key, base_url, model, success, status_code, latency_ms, created_at FROM regress.rec_expected) d) AS extra;
-- latency_ms is the JSON number read as the nearest double, like ::float8 (1/3 of the
-- generated latencies are float8s printed with up to 17 significant digits)
SELECT e.latency_text AS sent, r.latency_ms AS stored, r.latency_ms = e.latency_ms AS exact
  FROM regress.rec_expected e JOIN opsmeter.request_records r ON r.metrics_key = 'float' AND r.created_at = e.created_at
 WHERE e.metrics_key = 'float' ORDER BY e.created_at;
-- sub-µs digits round to the nearest µs, like ::timestamptz (a few generated rows in full)
SELECT e.created_text, to_char(e.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS cast_and_stored_utc
  FROM regress.rec_expected e
 WHERE e.created_text ~ '\.\d{7,9}(Z|[+-]\d\d:\d\d)$' AND e.metrics_key = 'key-12' AND e.api_type = 'gemini'
   AND EXISTS (SELECT FROM opsmeter.request_records r WHERE r.created_at = e.created_at AND r.metrics_key = 'key-12' AND r.api_type = 'gemini')
 ORDER BY e.created_at LIMIT 6;

-- 5. One partition per UTC day that has records (the +05:45 and -08:00 forms cross local
-- midnights; the edge record rounded into 2026-11-20 made that day's), named
-- request_records_pYYYYMMDD, bounded by UTC midnights, each holding only its day's rows; the
-- same set as pg_inherits.
SELECT count(*) AS partitions, string_agg(to_char(p.day, 'MM-DD'), ' ' ORDER BY p.day) AS days,
       bool_and(p.partition::text = 'opsmeter.request_records_p' || to_char(p.day, 'YYYYMMDD')) AS named,
       bool_and((regexp_match(pg_get_expr(c.relpartbound, c.oid), $$FROM \('([^']*)'\) TO \('([^']*)'\)$$))[1]::timestamptz = p.day::timestamp AT TIME ZONE 'UTC'
            AND (regexp_match(pg_get_expr(c.relpartbound, c.oid), $$FROM \('([^']*)'\) TO \('([^']*)'\)$$))[2]::timestamptz = (p.day + 1)::timestamp AT TIME ZONE 'UTC') AS utc_bounds,
       array_agg(p.day ORDER BY p.day) = (SELECT array_agg(DISTINCT (created_at AT TIME ZONE 'UTC')::date ORDER BY (created_at AT TIME ZONE 'UTC')::date) FROM regress.rec_expected) AS days_with_records,
       array_agg(p.partition::oid ORDER BY p.partition::oid) = (SELECT array_agg(inhrelid ORDER BY inhrelid) FROM pg_inherits WHERE inhparent = 'opsmeter.request_records'::regclass) AS same_as_pg_inherits
  FROM ops_record_partitions() p JOIN pg_class c ON c.oid = p.partition;
SELECT count(*) AS rows_outside_their_day
  FROM ops_record_partitions() p,
       LATERAL (SELECT created_at FROM opsmeter.request_records r WHERE r.tableoid = p.partition) r
 WHERE (r.created_at AT TIME ZONE 'UTC')::date <> p.day;
SELECT p.day, count(r.*) AS rows FROM ops_record_partitions() p
  LEFT JOIN opsmeter.request_records r ON r.tableoid = p.partition AND r.metrics_key = 'edge'
 WHERE p.day IN ('2026-11-14', '2026-11-20') GROUP BY p.day ORDER BY p.day;

-- 6. ops_load_records: the api_type's records with created_at >= since, in created_at order
-- (ties in any order: compared as multisets, order checked separately).
SELECT a.api_type, s.since_label, count(l.rec) AS loaded,
       (SELECT count(*) FROM opsmeter.request_records r WHERE r.api_type = a.api_type AND r.created_at >= s.since) = count(l.rec) AS count_ok,
       regress.rec_md5(array_agg(l.rec::text)) = (SELECT regress.rec_md5(array_agg(r::text)) FROM opsmeter.request_records r WHERE r.api_type = a.api_type AND r.created_at >= s.since) AS same_rows,
       bool_and(l.ordered) AS ordered
  FROM (VALUES ('messages'), ('responses'), ('gemini')) a(api_type),
       (VALUES ('all', timestamptz '2026-11-01 00:00+00'), ('mid-day', '2026-11-17T11:22:33.444555+05:45')) s(since_label, since),
       LATERAL (SELECT (x.api_type, x.metrics_key, x.base_url, x.model, x.success, x.status_code, x.latency_ms, x.created_at)::opsmeter.request_records AS rec,
                       x.created_at >= coalesce(lag(x.created_at) OVER (ORDER BY x.n), '-infinity') AS ordered
                  FROM ops_load_records(s.since, a.api_type) WITH ORDINALITY AS x(api_type, metrics_key, base_url, model, success, status_code, latency_ms, created_at, n)) l
 GROUP BY a.api_type, s.since_label, s.since ORDER BY 1, 2;
SELECT count(*) AS exactly_at_since FROM ops_load_records('2026-11-12T10:00:00Z', 'messages') WHERE created_at = '2026-11-12T10:00:00Z';
SELECT (SELECT count(*) FROM ops_load_records(NULL, 'messages')) AS null_since,
       (SELECT count(*) FROM ops_load_records('2026-11-01Z', NULL)) AS null_api,
       (SELECT count(*) FROM ops_load_records('2026-11-01Z', 'no-such-api')) AS unknown_api,
       (SELECT count(*) FROM ops_load_records('2026-11-21Z', 'messages')) AS after_all;

-- 7. ops_history and ops_model_history against the oracle: no mismatching rows for intervals
-- of 1 s .. 31 days (7777 s aligns to neither hours nor days), since before all data or
-- mid-bucket, with and without metrics_key / base_url filters.
CREATE TABLE regress.rec_cases (api_type text, since timestamptz, iv bigint, key text, base_url text);
INSERT INTO regress.rec_cases
SELECT a, timestamptz '2026-11-01 00:00+00', iv::bigint, NULL::text, NULL::text
  FROM unnest(ARRAY['messages', 'responses', 'gemini']) a, unnest(ARRAY[60, 3600, 7777, 86400, 604800, 2678400]) iv
UNION ALL
SELECT 'messages', (ARRAY[timestamptz '2026-11-14T12:34:56.789+05:45', '2026-11-13T07:23:45.5-08:00'])[1 + (i.n + f.n) % 2], i.iv, f.k, f.u
  FROM unnest(ARRAY[3600, 86400, 604800, 2678400]) WITH ORDINALITY AS i(iv, n),
       (VALUES (1, 'key-03', NULL), (2, NULL, 'https://relay.example.net/v1'), (3, 'key-07', 'https://api.example.com'), (4, '', ''), (5, 'key-01', '')) f(n, k, u)
UNION ALL
VALUES ('gemini', timestamptz '2026-11-14T12:34:56.789+05:45', 86400::bigint, 'key-03'::text, NULL::text),
       ('gemini', '2026-11-13T07:23:45.5-08:00', 3600, NULL, 'https://relay.example.net/v1'),
       ('messages', '2026-11-19T12:00:00Z', 1, NULL, NULL),
       ('responses', '2026-11-18T00:00:00.5Z', 1, 'key-02', NULL),
       ('gemini', '2026-11-10T00:00:00Z', 1, NULL, NULL),
       ('messages', '2026-11-01T00:00:00Z', 3600, 'edge', ''),
       ('messages', '2026-11-01T00:00:00Z', 60, '', 'https://api.example.com'),
       ('messages', '2026-11-20T00:00:00Z', 86400, NULL, NULL),
       ('messages', '2026-11-21T00:00:00Z', 86400, NULL, NULL),
       ('messages', '2026-11-01T00:00:00Z', 86400, 'no-such-key', NULL),
       ('no-such-api', '2026-11-01T00:00:00Z', 3600, NULL, NULL);
SELECT count(*) AS cases FROM regress.rec_cases;
SELECT c.*, d.* FROM regress.rec_cases c, oracle.rec_diff(c.api_type, c.since, c.iv, c.key, c.base_url, false) d;
SELECT c.*, d.* FROM regress.rec_cases c, oracle.rec_diff(c.api_type, c.since, c.iv, c.key, c.base_url, true) d;
-- what was compared: buckets and requests per interval (the oracle's, which opsmeter's equal)
SELECT c.iv, count(*) AS cases, sum(h.buckets) AS buckets, sum(h.requests) AS requests, sum(m.buckets) AS model_buckets,
       sum(m.requests) AS model_requests, count(*) FILTER (WHERE h.buckets = 0) AS empty_cases
  FROM regress.rec_cases c,
       LATERAL (SELECT count(*) AS buckets, coalesce(sum(requests), 0) AS requests FROM oracle.rec_history(c.api_type, c.since, c.iv, c.key, c.base_url)) h,
       LATERAL (SELECT count(*) AS buckets, coalesce(sum(requests), 0) AS requests FROM oracle.rec_model_history(c.api_type, c.since, c.iv, c.key, c.base_url)) m
 GROUP BY c.iv ORDER BY c.iv;
-- the session TimeZone changes nothing (buckets are multiples of iv since the epoch)
SET TimeZone = 'Asia/Kathmandu';
SELECT c.*, m.by_model, d.* FROM regress.rec_cases c, (VALUES (false), (true)) m(by_model), oracle.rec_diff(c.api_type, c.since, c.iv, c.key, c.base_url, m.by_model) d
 WHERE c.iv IN (3600, 86400) AND c.since = '2026-11-01 00:00+00' AND c.key IS NULL AND c.base_url IS NULL;
RESET TimeZone;
-- '' and NULL filters are the same as no filter; the defaults are NULL
SELECT regress.rec_md5(array(SELECT h::text FROM ops_history('messages', '2026-11-01Z', 3600) h))
     = regress.rec_md5(array(SELECT h::text FROM ops_history('messages', '2026-11-01Z', 3600, '', '') h)) AS empty_is_all,
       regress.rec_md5(array(SELECT h::text FROM ops_model_history('gemini', '2026-11-01Z', 86400) h))
     = regress.rec_md5(array(SELECT h::text FROM ops_model_history('gemini', '2026-11-01Z', 86400, NULL, '') h)) AS model_empty_is_all;
-- a few buckets in full: 31-day buckets (2026-10-13 and 2026-11-13 UTC), 7-day buckets
-- (Thursdays), one day of key-07 (30% failures)
SELECT to_char(bucket_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') AS bucket_utc, requests, successes, failures, round(success_rate::numeric, 4) AS success_rate
  FROM ops_history('responses', '2026-11-01Z', 2678400);
SELECT to_char(bucket_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') AS bucket_utc, requests, successes, failures, round(success_rate::numeric, 4) AS success_rate
  FROM ops_history('responses', '2026-11-01Z', 604800);
SELECT to_char(bucket_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') AS bucket_utc, model, requests, successes, failures, round(success_rate::numeric, 4) AS success_rate
  FROM ops_model_history('messages', '2026-11-15T00:00:00Z', 86400, 'key-07', NULL) WHERE bucket_start < '2026-11-16T00:00:00Z';
-- responses/key-20 always fails: success_rate 0; the edge key's 1-hour buckets
SELECT count(*) AS buckets, max(success_rate) AS max_rate, sum(failures) = sum(requests) AS all_failed FROM ops_history('responses', '2026-11-01Z', 86400, 'key-20');
SELECT to_char(bucket_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') AS bucket_utc, requests, successes, latency_p50_ms, latency_p99_ms
  FROM ops_history('messages', '2026-11-01Z', 3600, 'edge');

-- 8. Bad arguments: interval_seconds outside 1 .. 2678400 or NULL is 22023 (both functions);
-- NULL api_type or since gives no rows.
SELECT f, iv, split_part(r, E'\nHINT: ', 1) AS result
  FROM unnest(ARRAY['ops_history', 'ops_model_history']) f, unnest(ARRAY['0', '-1', '2678401', 'NULL']) iv,
       regress.err(format('SELECT * FROM %s(%L, %L, %s)', f, 'messages', '2026-11-01Z', iv)) r
 ORDER BY 1, 2;
SELECT (SELECT count(*) FROM ops_history(NULL, '2026-11-01Z', 3600)) AS null_api,
       (SELECT count(*) FROM ops_history('messages', NULL, 3600)) AS null_since,
       (SELECT count(*) FROM ops_model_history(NULL, '2026-11-01Z', 3600)) AS model_null_api,
       (SELECT count(*) FROM ops_model_history('messages', NULL, 3600)) AS model_null_since,
       (SELECT count(*) FROM ops_history('messages', '2026-11-01Z', 2678400)) AS max_interval_buckets,
       (SELECT count(*) FROM ops_history('messages', '2026-11-19T23:00:00Z', 1)) AS one_second_buckets;

-- 9. Rejected batches: SQLSTATE and a message naming records[i] and the field; nothing is
-- written (records, partitions, record_latest unchanged). The index-3 case: elements 0..2 are
-- good and on a day without a partition (2026-12-25); no partition is left behind.
SELECT regress.rec_state() AS state_before \gset
CREATE TABLE regress.rec_bad (n int, what text, doc jsonb);
INSERT INTO regress.rec_bad
WITH good(e) AS (VALUES (jsonb '{"api_type": "messages", "metrics_key": "bad", "success": true, "status_code": 200, "latency_ms": 5, "created_at": "2026-12-25T10:00:00Z"}'))
SELECT n, what, CASE WHEN what IN ('not an array', 'JSON null') THEN fix
                     WHEN what = 'element not an object' THEN jsonb_build_array(e, e, fix)
                     WHEN what = 'missing metrics_key' THEN jsonb_build_array(e, e, e, e - 'metrics_key')
                     ELSE jsonb_build_array(e, e, e, e || fix) END
  FROM good, (VALUES
    (1, 'not an array', jsonb '{"api_type": "messages"}'),
    (2, 'JSON null', 'null'),
    (3, 'element not an object', '5'),
    (4, 'missing metrics_key', '{}'),
    (5, 'metrics_key null', '{"metrics_key": null}'),
    (6, 'empty api_type', '{"api_type": ""}'),
    (7, 'success as string', '{"success": "true"}'),
    (8, 'status_code 1000', '{"status_code": 1000}'),
    (9, 'status_code 1.5', '{"status_code": 1.5}'),
    (10, 'status_code -1', '{"status_code": -1}'),
    (11, 'latency_ms -1', '{"latency_ms": -1}'),
    (12, 'latency_ms 1e400', '{"latency_ms": 1e400}'),
    (13, 'latency_ms as string', '{"latency_ms": "5"}'),
    (14, 'base_url as number', '{"base_url": 1}'),
    (15, 'created_at yesterday', '{"created_at": "yesterday"}'),
    (16, 'created_at 2026-02-30', '{"created_at": "2026-02-30T00:00:00Z"}'),
    (17, 'created_at without offset', '{"created_at": "2026-12-25T10:00:00"}'),
    (18, 'created_at 10 fraction digits', '{"created_at": "2026-12-25T10:00:00.1234567891Z"}'),
    (19, 'created_at as number', '{"created_at": 1766656800}')) AS bad(n, what, fix);
CREATE TABLE regress.rec_bad_result AS SELECT n, what, regress.err(format('SELECT ops_add_records(%L)', doc)) AS r FROM regress.rec_bad;
SELECT n, what, split_part(r, E'\nHINT: ', 1) AS result FROM regress.rec_bad_result ORDER BY n;
-- (every one with the same hint)
SELECT count(*) AS errors, count(DISTINCT split_part(r, E'\nHINT: ', 2)) AS hints, min(split_part(r, E'\nHINT: ', 2)) AS hint FROM regress.rec_bad_result;
SELECT regress.rec_state() = :'state_before' AS nothing_changed,
       (SELECT count(*) FROM ops_record_partitions() WHERE day = '2026-12-25') AS dec_25_partitions,
       to_regclass('opsmeter.request_records_p20261225') AS dec_25_table;
-- a whole good batch for that day would have made the partition (checked, then rolled back)
BEGIN;
SELECT ops_add_records(doc - 3) AS written FROM regress.rec_bad WHERE n = 15;
SELECT day, partition FROM ops_record_partitions() WHERE day = '2026-12-25';
ROLLBACK;
-- the empty array writes nothing; a SQL NULL is NULL (strict)
SELECT ops_add_records('[]') AS empty, ops_add_records(NULL) IS NULL AS null_is_null;
SELECT regress.rec_state() = :'state_before' AS nothing_changed;

-- 10. Circuit states: insert, replace, a stale update (false, nothing changes), an equally
-- old one (written), defaults, order by metrics_key, and bad arguments.
SELECT ops_circuit_upsert('messages', 'key-09', 'open', 5, 3, '2026-11-20T10:00:00Z', '2026-11-20T10:01:00Z', '2026-11-20T10:00:00Z') AS inserted,
       ops_circuit_upsert('messages', 'key-02', 'closed', updated_at => '2026-11-20T09:00:00Z') AS inserted_defaults,
       ops_circuit_upsert('messages', 'key-05', 'half_open', 1, 0, '2026-11-20T08:00:00+05:45', NULL, '2026-11-20T08:00:00+05:45') AS inserted_half_open,
       ops_circuit_upsert('gemini', 'key-09', 'closed', 0, 0, NULL, NULL, '2026-11-20T10:00:00Z') AS other_api;
SET TimeZone = 'UTC';
SELECT * FROM ops_circuit_states('messages');
SELECT ops_circuit_upsert('messages', 'key-09', 'half_open', 6, 0, '2026-11-20T10:00:00Z', NULL, '2026-11-20T10:01:30Z') AS replaced;
SELECT * FROM ops_circuit_states('messages') WHERE metrics_key = 'key-09';
SELECT regress.rec_md5(array_agg(c::text)) AS circuits_before FROM opsmeter.circuit_states c \gset
SELECT ops_circuit_upsert('messages', 'key-09', 'closed', 0, 0, NULL, NULL, '2026-11-20T10:01:29.999999Z') AS stale;
SELECT regress.rec_md5(array_agg(c::text)) = :'circuits_before' AS unchanged FROM opsmeter.circuit_states c;
SELECT ops_circuit_upsert('messages', 'key-09', 'open', 7, 1, '2026-11-20T10:01:30Z', '2026-11-20T10:02:30Z', '2026-11-20T10:01:30Z') AS same_time_written;
SELECT * FROM ops_circuit_states('messages') WHERE metrics_key = 'key-09';
RESET TimeZone;
BEGIN;
SELECT ops_circuit_upsert('responses', 'key-01', 'closed') AS default_updated_at;
SELECT metrics_key, state, failure_count, consecutive_failures, opened_at, next_attempt_at, updated_at = now() AS updated_now
  FROM ops_circuit_states('responses');
ROLLBACK;
SELECT regress.rec_md5(array_agg(c::text)) AS circuits_before FROM opsmeter.circuit_states c \gset
SELECT what, regress.err(sql) AS result FROM (VALUES
    ('bad state', $$SELECT ops_circuit_upsert('messages', 'key-09', 'broken', 0, 0, NULL, NULL, '2026-11-21T00:00:00Z')$$),
    ('NULL api_type', $$SELECT ops_circuit_upsert(NULL, 'key-09', 'open', 0, 0, NULL, NULL, '2026-11-21T00:00:00Z')$$),
    ('NULL metrics_key', $$SELECT ops_circuit_upsert('messages', NULL, 'open', 0, 0, NULL, NULL, '2026-11-21T00:00:00Z')$$),
    ('NULL state', $$SELECT ops_circuit_upsert('messages', 'key-09', NULL, 0, 0, NULL, NULL, '2026-11-21T00:00:00Z')$$),
    ('NULL updated_at', $$SELECT ops_circuit_upsert('messages', 'key-09', 'open', 0, 0, NULL, NULL, NULL)$$),
    ('negative failure_count', $$SELECT ops_circuit_upsert('messages', 'key-09', 'open', -1, 0, NULL, NULL, '2026-11-21T00:00:00Z')$$),
    ('negative consecutive_failures', $$SELECT ops_circuit_upsert('messages', 'key-09', 'open', 0, -1, NULL, NULL, '2026-11-21T00:00:00Z')$$)) t(what, sql);
SELECT regress.rec_md5(array_agg(c::text)) = :'circuits_before' AS unchanged FROM opsmeter.circuit_states c;
SELECT count(*) AS unknown_api_rows FROM ops_circuit_states('no-such-api');

-- 11. Deletes by key touch only the given api_type: key-03 and key-05 of messages go (records,
-- record_latest rows, circuit states); the same keys of responses and gemini stay.
CREATE TABLE regress.rec_counts AS
SELECT api_type, metrics_key, count(*) AS n FROM opsmeter.request_records GROUP BY 1, 2;
SELECT ops_delete_by_metrics_keys(ARRAY['key-03', 'key-05', 'no-such-key'], 'messages')
     = (SELECT sum(n) FROM regress.rec_counts WHERE api_type = 'messages' AND metrics_key IN ('key-03', 'key-05')) AS deleted_count_ok;
SELECT c.api_type, c.metrics_key, c.n AS before, (SELECT count(*) FROM opsmeter.request_records r WHERE (r.api_type, r.metrics_key) = (c.api_type, c.metrics_key)) AS after,
       EXISTS (SELECT FROM ops_latest_timestamps(c.api_type) l WHERE l.metrics_key = c.metrics_key) AS in_latest
  FROM regress.rec_counts c WHERE c.metrics_key IN ('key-03', 'key-05') ORDER BY 1, 2;
SELECT count(*) AS other_keys_changed
  FROM regress.rec_counts c
 WHERE NOT (c.api_type = 'messages' AND c.metrics_key IN ('key-03', 'key-05'))
   AND c.n <> (SELECT count(*) FROM opsmeter.request_records r WHERE (r.api_type, r.metrics_key) = (c.api_type, c.metrics_key));
SELECT a.api_type, d.* FROM (VALUES ('messages'), ('responses'), ('gemini')) a(api_type), oracle.rec_latest_diff(a.api_type) d;
SELECT ops_delete_by_metrics_keys('{}', 'messages') AS empty_keys, ops_delete_by_metrics_keys(ARRAY['key-03'], 'messages') AS again,
       ops_delete_by_metrics_keys(NULL, 'messages') IS NULL AS null_is_null;
SELECT ops_circuit_upsert('gemini', 'key-05', 'open', 1, 1, NULL, NULL, '2026-11-20T10:00:00Z') AS other_api_key_05;
SELECT ops_delete_circuit_states(ARRAY['key-05', 'key-09', 'no-such-key'], 'messages') AS circuits_deleted;
SELECT api_type, metrics_key, state FROM opsmeter.circuit_states ORDER BY 1, 2;
SELECT ops_delete_circuit_states('{}', 'messages') AS empty_keys, ops_delete_circuit_states(ARRAY['key-09'], 'messages') AS again;

-- 12. ops_cleanup_records(before) with before mid-day (2026-11-13 10:30:30.25 UTC): returns the
-- number of records older than before, drops the partitions wholly before it, DELETEs from the
-- boundary partition, and leaves every other record and record_latest as they were.
SELECT count(*) AS removed_expected FROM opsmeter.request_records WHERE created_at < '2026-11-13T16:15:30.25+05:45' \gset
SELECT count(*) AS boundary_kept FROM opsmeter.request_records WHERE created_at >= '2026-11-13T10:30:30.25Z' AND created_at < '2026-11-14T00:00:00Z' \gset
SELECT regress.rec_md5(array_agg(r::text)) AS kept_md5 FROM opsmeter.request_records r WHERE created_at >= '2026-11-13T10:30:30.25Z' \gset
SELECT regress.rec_md5(array_agg(l::text)) AS latest_md5 FROM opsmeter.record_latest l \gset
SELECT ops_cleanup_records('2026-11-13T16:15:30.25+05:45') AS removed, :removed_expected AS removed_expected;
SELECT (SELECT min(day) FROM ops_record_partitions()) AS first_day,
       (SELECT count(*) FROM ops_record_partitions()) AS partitions,
       (SELECT count(*) FROM pg_inherits WHERE inhparent = 'opsmeter.request_records'::regclass) AS children,
       to_regclass('opsmeter.request_records_p20261112') AS p1112,
       to_regclass('opsmeter.request_records_p20261113') AS p1113;
SELECT count(*) = :boundary_kept AS boundary_rows_kept, min(created_at) >= '2026-11-13T10:30:30.25Z' AS none_before
  FROM opsmeter.request_records_p20261113;
SELECT regress.rec_md5(array_agg(r::text)) = :'kept_md5' AS rest_unchanged FROM opsmeter.request_records r;
SELECT regress.rec_md5(array_agg(l::text)) = :'latest_md5' AS latest_unchanged FROM opsmeter.record_latest l;
-- record_latest forgets nothing: old-only's only record (2026-11-10) is gone, its row is not
SELECT metrics_key, last_success_at FROM ops_latest_timestamps('messages') WHERE metrics_key = 'old-only';
-- history over what is left still matches the oracle
SELECT c.*, d.* FROM regress.rec_cases c, oracle.rec_diff(c.api_type, c.since, c.iv, c.key, c.base_url, true) d
 WHERE c.iv IN (3600, 604800) AND c.key IS NULL;
-- cleanup at exactly a UTC midnight: 2026-11-13 is now wholly before and goes; nothing older
-- than all data goes; a second call is a no-op
SELECT count(*) AS removed_expected FROM opsmeter.request_records WHERE created_at < '2026-11-14T00:00:00Z' \gset
SELECT ops_cleanup_records('2026-11-13T16:00:00-08:00') AS removed, :removed_expected AS removed_expected;
SELECT string_agg(to_char(day, 'MM-DD'), ' ' ORDER BY day) AS days FROM ops_record_partitions();
SELECT regress.rec_state() AS state_before \gset
SELECT ops_cleanup_records('2026-11-14T00:00:00Z') AS again, ops_cleanup_records('2026-11-01T00:00:00Z') AS older,
       ops_cleanup_records(NULL) IS NULL AS null_is_null;
SELECT regress.rec_state() = :'state_before' AS nothing_changed;

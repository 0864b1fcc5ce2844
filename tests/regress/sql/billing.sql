-- Billing from cumulative counters (0.6.0): sources and profiles, billing_ingest's numbered
-- rules (the billing issue's 1 .. 12), quota across a month boundary, settings, windows and
-- status. pg_regress runs in PST8PDT: times are shown in UTC; times relative to now() are shown
-- as facts (equalities), never as values.
SET client_min_messages = warning;

-- regress.snap(node, env, at, accounts, values): one snapshot
CREATE FUNCTION regress.snap(node text, env text, at text, accounts text[], vals bigint[])
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('node_id', node, 'env', env, 'sampled_at', at, 'samples',
           coalesce((SELECT jsonb_agg(jsonb_build_object('account_id', a, 'cumulative_bytes', v) ORDER BY i)
                       FROM unnest(accounts, vals) WITH ORDINALITY AS u(a, v, i)), '[]'))
$$;
-- regress.ingest(source, snapshots): the job result without the source's timestamps
CREATE FUNCTION regress.ingest(src text, snaps jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT r - 'source' || jsonb_build_object('source_error', r->'source'->'last_error',
                                              'success_recorded', r->'source'->'last_success_at' <> 'null')
      FROM billing_ingest(src, snaps) r
$$;
-- the ledger, compactly
CREATE VIEW regress.ledger AS
    SELECT storage_node_id AS node, right(account_id::text, 1) AS acct,
           to_char(minute AT TIME ZONE 'UTC', 'MM-DD HH24:MI') AS minute,
           bytes, included_bytes AS incl, billable_bytes AS bill, amount, pricing_rule_version AS rule
      FROM opsmeter.billing_ledger ORDER BY storage_node_id, account_id, minute;
CREATE VIEW regress.quota AS
    SELECT right(account_id::text, 1) AS acct, to_char(period_start AT TIME ZONE 'UTC', 'YYYY-MM') AS period,
           included_quota_bytes AS quota, included_used_bytes AS used, billable_bytes AS bill, amount
      FROM opsmeter.billing_quota ORDER BY account_id, period_start;
CREATE VIEW regress.checkpoints AS
    SELECT storage_node_id AS node, right(account_id::text, 1) AS acct,
           to_char(sampled_at AT TIME ZONE 'UTC', 'MM-DD HH24:MI:SS') AS sampled_at, cumulative_bytes
      FROM opsmeter.billing_checkpoints ORDER BY storage_node_id, account_id;
-- everything billing writes (not the sync state), as one fingerprint
CREATE FUNCTION regress.billing_state() RETURNS text LANGUAGE sql AS $$
    SELECT md5(string_agg(t, '|' ORDER BY t)) FROM (
        SELECT 'l' || row(l.*)::text AS t FROM opsmeter.billing_ledger l
        UNION ALL SELECT 'q' || row(q.*)::text FROM opsmeter.billing_quota q
        UNION ALL SELECT 'c' || row(c.*)::text FROM opsmeter.billing_checkpoints c
        UNION ALL SELECT 'm' || row(m.*)::text FROM opsmeter.billing_minutes m
        UNION ALL SELECT 'empty') s
$$;
CREATE TABLE regress.fingerprint (name text PRIMARY KEY, state text);

-- accounts: A has a profile, B uses the settings' defaults, C a profile with multiplier <= 0
\set A '''aaaaaaaa-0000-4000-8000-000000000001'''
\set B '''aaaaaaaa-0000-4000-8000-000000000002'''
\set C '''aaaaaaaa-0000-4000-8000-000000000003'''

-- 1. Sources and profiles, and their argument checks
SELECT source_id, expected_node_id, expected_env, enabled FROM billing_source_upsert('s1', 'n1', 'prod');
SELECT source_id, expected_node_id, expected_env, enabled FROM billing_source_upsert('s2');
SELECT source_id, expected_node_id, expected_env, enabled FROM billing_source_upsert('s3', '', '', false);
SELECT account_id, included_quota_bytes, price_per_byte, multiplier, pricing_rule_version
  FROM billing_profile_upsert(:A, 100, 0.000001, 1.5, 'v2');
SELECT account_id, included_quota_bytes, price_per_byte, multiplier, pricing_rule_version
  FROM billing_profile_upsert(:C, 0, 0.25, -2);
SELECT regress.err($$SELECT billing_source_upsert('')$$);
SELECT regress.err($$SELECT billing_profile_upsert('aaaaaaaa-0000-4000-8000-000000000009', -1)$$);
SELECT regress.err($$SELECT billing_profile_upsert('aaaaaaaa-0000-4000-8000-000000000009', 0, -0.5)$$);
SELECT regress.err($$SELECT billing_profile_upsert('aaaaaaaa-0000-4000-8000-000000000009', 0, 'NaN')$$);
SELECT regress.err($$SELECT billing_profile_upsert('aaaaaaaa-0000-4000-8000-000000000009', 0, 'Infinity')$$);
SELECT regress.err($$SELECT billing_profile_upsert('aaaaaaaa-0000-4000-8000-000000000009', 0, 1, '-Infinity')$$);
-- an existing source keeps an expectation passed as NULL; '' clears it
SELECT source_id, expected_node_id, expected_env, enabled FROM billing_source_upsert('s9', 'n9', 'prod');
SELECT source_id, expected_node_id, expected_env, enabled FROM billing_source_upsert('s9', enabled => false);
SELECT source_id, expected_node_id, expected_env, enabled FROM billing_source_upsert('s9', '', NULL);
DELETE FROM opsmeter.billing_sources WHERE source_id = 's9';
SELECT count(*) AS profiles FROM opsmeter.billing_profiles;
SET opsmeter.billing_included_quota_bytes = '50';
SET opsmeter.billing_price_per_byte = '0.01';
SET opsmeter.billing_multiplier = '0';

-- 2. Rule 1: unknown or disabled source, and JSON shape errors: an ERROR naming the place,
--    nothing written (not even the sync state)
SELECT regress.err($$SELECT billing_ingest('nope', '[]')$$);
SELECT regress.err($$SELECT billing_ingest('s3', '[]')$$);
SELECT regress.err($$SELECT billing_ingest('s2', '{"node_id": "n1"}')$$);
SELECT regress.err($$SELECT billing_ingest('s2', '[{"env": "", "sampled_at": "2026-11-30T10:00:00Z", "samples": []}]')$$);
SELECT regress.err($$SELECT billing_ingest('s2', '[{"node_id": "n1", "sampled_at": "2026-11-30 10:00", "samples": []}]')$$);
SELECT regress.err($$SELECT billing_ingest('s2', '[{"node_id": "n1", "sampled_at": "2026-11-30T10:00:00Z", "samples": {}}]')$$);
SELECT regress.err($$SELECT billing_ingest('s2', '[{"node_id": "n1", "sampled_at": "2026-11-30T10:00:00Z", "samples": [{"account_id": "aaaaaaaa-0000-4000-8000-000000000002", "cumulative_bytes": 5}]},
                                                  {"node_id": "n1", "sampled_at": "2026-11-30T10:00:10Z", "samples": [{"account_id": "aaaaaaaa-0000-4000-8000-000000000002", "cumulative_bytes": 6}, {"account_id": "x", "cumulative_bytes": -1}]}]')$$);
SELECT regress.err($$SELECT billing_ingest('s2', '[{"node_id": "n1", "sampled_at": "2026-11-30T10:00:00Z", "samples": [{"account_id": "x", "cumulative_bytes": 1.5}]}]')$$);
SELECT regress.err($$SELECT billing_ingest('s2', '[{"node_id": "n1", "sampled_at": "2026-11-30T10:00:00Z", "samples": [{"account_id": "x", "cumulative_bytes": "12"}]}]')$$);
SELECT regress.err($$SELECT billing_ingest('s2', '[{"node_id": "n1", "sampled_at": "2026-11-30T10:00:00Z", "samples": [{"account_id": "x", "cumulative_bytes": 9223372036854775808}]}]')$$);
SELECT regress.err($$SELECT billing_ingest('s2', '[{"node_id": "n1", "sampled_at": "2026-11-30T10:00:00Z", "samples": [{"account_id": "x"}]}]')$$);
SELECT regress.err($$SELECT billing_ingest('s2', '[{"node_id": 7, "sampled_at": "2026-11-30T10:00:00Z", "samples": []}]')$$);
SELECT regress.err($$SELECT billing_ingest('s2', '[{"node_id": "", "sampled_at": "2026-11-30T10:00:00Z", "samples": []}]')$$);
SELECT (SELECT count(*) FROM opsmeter.billing_ledger) + (SELECT count(*) FROM opsmeter.billing_checkpoints)
     + (SELECT count(*) FROM opsmeter.billing_minutes) + (SELECT count(*) FROM opsmeter.billing_quota)
     + (SELECT count(*) FROM opsmeter.billing_source_sync) AS rows_written;

-- 3. Rule 2: a snapshot from another node or env than the source expects fails the call as a
--    source failure: a result with status error (not an ERROR), recorded, nothing billed
SELECT regress.ingest('s1', jsonb_build_array(
    regress.snap('n1', 'prod', '2026-11-30T10:00:00Z', ARRAY[:A], ARRAY[10]),
    regress.snap('n2', 'prod', '2026-11-30T10:00:10Z', ARRAY[:A], ARRAY[20])));
SELECT regress.ingest('s1', jsonb_build_array(regress.snap('n1', 'dev', '2026-11-30T10:00:00Z', ARRAY[:A], ARRAY[10])));
SELECT source_id, last_error, last_error_at IS NOT NULL AS error_time, last_success_at IS NULL AS never_succeeded,
       last_result->>'status' AS last_status
  FROM opsmeter.billing_source_sync;
SELECT count(*) AS ledger_rows, (SELECT count(*) FROM opsmeter.billing_checkpoints) AS checkpoints FROM opsmeter.billing_ledger;

-- 4. Rules 3, 4, 5, 7, 9, 10, 11: snapshots in any order, per (storage node, account) in
--    sampled_at order; storage node env:node_id; a bad account id skips its sample (partial);
--    the first sample bills its whole value; two samples in one minute add up; included quota
--    first; ledger ids are UUIDv5 of storage_node_id|account_id|minute
SELECT regress.ingest('s1', jsonb_build_array(
    regress.snap('n1', 'prod', '2026-11-30T10:00:40Z', ARRAY[:A, :B], ARRAY[90, 30]),
    regress.snap('n1', 'prod', '2026-11-30T10:00:10Z', ARRAY[:A, :B, 'not-a-uuid'], ARRAY[60, 10, 5]),
    regress.snap('n1', 'prod', '2026-11-30T10:01:20Z', ARRAY[:A, :B, :C], ARRAY[150, 30, 40])));
SELECT * FROM regress.ledger;
SELECT * FROM regress.quota;
SELECT * FROM regress.checkpoints;
SELECT node, acct, minute, bytes FROM (
    SELECT storage_node_id AS node, right(account_id::text, 1) AS acct,
           to_char(minute AT TIME ZONE 'UTC', 'MM-DD HH24:MI') AS minute, bytes
      FROM opsmeter.billing_minutes ORDER BY 1, 2, 3) m;
-- computed outside the database with Python's uuid.uuid5(uuid.NAMESPACE_URL, name)
SELECT id = '85014ac2-cae5-5822-8ec3-d5734d9f37bc' AS ledger_id_is_uuidv5
  FROM opsmeter.billing_ledger
 WHERE storage_node_id = 'prod:n1' AND account_id = :A AND minute = '2026-11-30 10:00:00+00';
-- env empty: the storage node is the node_id alone (source s2 expects nothing)
SELECT regress.ingest('s2', jsonb_build_array(regress.snap('n1', '', '2026-11-30T10:01:05Z', ARRAY[:B], ARRAY[7])));
SELECT id = '1b362f95-d366-5ac1-b1c1-372fc30ebb0c' AS ledger_id_is_uuidv5, storage_node_id, bytes, included_bytes, billable_bytes
  FROM opsmeter.billing_ledger WHERE storage_node_id = 'n1';

-- 5. Rule 6: replays change nothing: the same page again, each snapshot alone, and a late
--    sample (before the checkpoint, lower value: a replay, not a reset)
INSERT INTO regress.fingerprint SELECT 'before replay', regress.billing_state();
SELECT regress.ingest('s1', jsonb_build_array(
    regress.snap('n1', 'prod', '2026-11-30T10:01:20Z', ARRAY[:A, :B, :C], ARRAY[150, 30, 40]),
    regress.snap('n1', 'prod', '2026-11-30T10:00:10Z', ARRAY[:A, :B, 'not-a-uuid'], ARRAY[60, 10, 5]),
    regress.snap('n1', 'prod', '2026-11-30T10:00:40Z', ARRAY[:A, :B], ARRAY[90, 30])));
SELECT regress.ingest('s1', jsonb_build_array(regress.snap('n1', 'prod', '2026-11-30T10:00:40Z', ARRAY[:A, :B], ARRAY[90, 30])));
SELECT regress.ingest('s1', jsonb_build_array(regress.snap('n1', 'prod', '2026-11-30T10:01:00Z', ARRAY[:A], ARRAY[1])));
SELECT state = regress.billing_state() AS unchanged FROM regress.fingerprint WHERE name = 'before replay';

-- 6. Rule 9: a new sample in a minute billed by an earlier call adds to its bucket and ledger
--    row; delta 0 moves only the checkpoint
SELECT regress.ingest('s1', jsonb_build_array(
    regress.snap('n1', 'prod', '2026-11-30T10:01:50Z', ARRAY[:A, :B], ARRAY[175, 30])));
SELECT * FROM regress.ledger WHERE node = 'prod:n1' AND minute = '11-30 10:01';
SELECT * FROM regress.checkpoints WHERE node = 'prod:n1';

-- 7. Rule 8: a counter reset; 'skip' (default) bills nothing, 'from_zero' bills the new value;
--    the checkpoint becomes the new sample either way
SELECT regress.ingest('s1', jsonb_build_array(regress.snap('n1', 'prod', '2026-11-30T10:02:10Z', ARRAY[:A], ARRAY[20])));
SELECT * FROM regress.checkpoints WHERE node = 'prod:n1' AND acct = '1';
SET opsmeter.billing_reset_policy = 'from_zero';
SELECT regress.ingest('s1', jsonb_build_array(regress.snap('n1', 'prod', '2026-11-30T10:02:40Z', ARRAY[:A], ARRAY[5])));
SELECT * FROM regress.ledger WHERE node = 'prod:n1' AND acct = '1' AND minute = '11-30 10:02';
RESET opsmeter.billing_reset_policy;

-- 8. Rule 7: opsmeter.billing_first_sample = 'baseline': the first sample only sets the checkpoint
SET opsmeter.billing_first_sample = 'baseline';
SELECT regress.ingest('s2', jsonb_build_array(
    regress.snap('n7', '', '2026-11-30T10:00:00Z', ARRAY[:A], ARRAY[1000]),
    regress.snap('n7', '', '2026-11-30T10:00:30Z', ARRAY[:A], ARRAY[1004])));
SELECT * FROM regress.ledger WHERE node = 'n7';
SELECT * FROM regress.checkpoints WHERE node = 'n7';
RESET opsmeter.billing_first_sample;

-- 9. Rule 11 across a month boundary: each UTC month has its own included quota; amounts are
--    exact numeric (billable x price x multiplier); the quota rows are the ledger's sums
SELECT regress.ingest('s2', jsonb_build_array(
    regress.snap('n9', '', '2026-11-30T23:59:30Z', ARRAY[:A, :B], ARRAY[0, 0]),
    regress.snap('n9', '', '2026-11-30T23:59:50Z', ARRAY[:A, :B], ARRAY[333, 70]),
    regress.snap('n9', '', '2026-12-01T00:00:20Z', ARRAY[:A, :B], ARRAY[456, 90])));
SELECT * FROM regress.ledger WHERE node = 'n9';
SELECT * FROM regress.quota;
SELECT bool_and(q.included_used_bytes = s.incl AND q.billable_bytes = s.bill AND q.amount = s.amount
                AND q.included_used_bytes <= q.included_quota_bytes) AS quota_is_ledger_sums
  FROM opsmeter.billing_quota q
  JOIN (SELECT account_id, date_trunc('month', minute AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS period_start,
               sum(included_bytes) AS incl, sum(billable_bytes) AS bill, sum(amount) AS amount
          FROM opsmeter.billing_ledger GROUP BY 1, 2) s USING (account_id, period_start);

-- 10. Rule 12: the whole result, also stored as last_result
SELECT jsonb_pretty(billing_ingest('s2', jsonb_build_array(
    regress.snap('n9', '', '2026-12-01T00:01:00Z', ARRAY[:A, 'bad'], ARRAY[500, 1]))) - 'source') AS result;
SELECT jsonb_object_keys(last_result->'source') AS source_keys FROM opsmeter.billing_source_sync WHERE source_id = 's2' ORDER BY 1;
SELECT last_result->>'status' AS status, (last_result->'source'->>'source_id') AS source_id
  FROM opsmeter.billing_source_sync WHERE source_id = 's2';

-- 11. Settings are checked when they are set
SELECT regress.err($$SET opsmeter.billing_reset_policy = 'never'$$);
SELECT regress.err($$SET opsmeter.billing_first_sample = 'half'$$);
SELECT regress.err($$SET opsmeter.billing_price_per_byte = '-0.1'$$);
SELECT regress.err($$SET opsmeter.billing_multiplier = 'one'$$);
SELECT regress.err($$SET opsmeter.billing_included_quota_bytes = '1e9'$$);
SELECT regress.err($$SET opsmeter.billing_lookback = '-1'$$);
SHOW opsmeter.billing_reset_policy;

-- 12. Windows: since = last_completed_until or now() - lookback, until = now() - delay; pages
--     move last_completed_until (never backwards); bad cursors are recorded failures
SELECT since = now() - interval '1 hour' AS since_is_lookback, until = now() - interval '60 seconds' AS until_is_delay
  FROM billing_window('s2');
SET opsmeter.billing_lookback = '2h';
SET opsmeter.billing_delay = 0;
SELECT since = now() - interval '2 hours' AS since_is_lookback, until = now() AS until_is_now FROM billing_window('s2');
SELECT regress.err($$SELECT * FROM billing_window('nope')$$);
SELECT r->>'status' AS status, r->>'processed_samples' AS processed, r->'source'->>'last_completed_until' AS completed
  FROM billing_advance_window('s2', jsonb_build_object('since', '2026-11-30T10:00:00Z', 'until', '2026-11-30T11:00:00Z',
       'has_more', true, 'next_cursor', '2026-11-30T10:30:00Z',
       'snapshots', jsonb_build_array(regress.snap('n3', '', '2026-11-30T10:10:00Z', ARRAY[:B], ARRAY[8])))) r;
SELECT to_char(since AT TIME ZONE 'UTC', 'MM-DD HH24:MI') AS since FROM billing_window('s2');
INSERT INTO regress.fingerprint SELECT 'before bad cursor', regress.billing_state();
SELECT r->>'status' AS status, r->'errors' AS errors, r->'source'->>'last_completed_until' AS completed
  FROM billing_advance_window('s2', jsonb_build_object('since', '2026-11-30T10:30:00Z', 'until', '2026-11-30T11:00:00Z',
       'has_more', true, 'next_cursor', '',
       'snapshots', jsonb_build_array(regress.snap('n3', '', '2026-11-30T10:40:00Z', ARRAY[:B], ARRAY[9])))) r;
SELECT r->>'status' AS status, r->'errors' AS errors
  FROM billing_advance_window('s2', '{"since": "2026-11-30T10:30:00Z", "until": "2026-11-30T11:00:00Z", "has_more": true, "next_cursor": "page-2"}') r;
SELECT state = regress.billing_state() AS nothing_billed FROM regress.fingerprint WHERE name = 'before bad cursor';
SELECT source_id, healthy, last_error, to_char(last_completed_until AT TIME ZONE 'UTC', 'MM-DD HH24:MI') AS completed
  FROM billing_status();
SELECT r->>'status' AS status, r->'source'->>'last_completed_until' AS completed
  FROM billing_advance_window('s2', '{"since": "2026-11-30T10:30:00Z", "until": "2026-11-30T11:00:00Z", "has_more": false, "snapshots": []}') r;
-- since > until: nothing to collect; the window moves to until, never backwards (seed): a new
-- source's first window moves, s2's stays
SELECT source_id FROM billing_source_upsert('s4');
SELECT r->>'status' AS status, r->'source'->>'last_completed_until' AS completed
  FROM billing_advance_window('s4', '{"since": "2026-11-30T12:00:00Z", "until": "2026-11-30T11:30:00Z", "has_more": true}') r;
SELECT r->>'status' AS status, r->'source'->>'last_completed_until' AS completed
  FROM billing_advance_window('s2', '{"since": "2026-11-30T11:00:00Z", "until": "2026-11-30T10:45:00Z"}') r;
-- a stale page (it overlaps what is done) never moves the window back
SELECT r->>'status' AS status, r->'source'->>'last_completed_until' AS completed
  FROM billing_advance_window('s2', '{"since": "2026-11-30T09:00:00Z", "until": "2026-11-30T09:30:00Z"}') r;
-- pages that would move the window where no later page could repair it are the source's
-- failure: a cursor outside (since, until], an until in the future, a gap after what is done,
-- a snapshot after until; nothing billed, nothing moved
INSERT INTO regress.fingerprint SELECT 'before bad pages', regress.billing_state();
SELECT r->>'status' AS status, r->'errors'->>0 AS error, r->'source'->>'last_completed_until' AS completed
  FROM (VALUES
    ('{"since": "2026-11-30T11:00:00Z", "until": "2026-11-30T12:00:00Z", "has_more": true, "next_cursor": "2030-01-01T00:00:00Z"}'::jsonb),
    ('{"since": "2026-11-30T11:00:00Z", "until": "2026-11-30T12:00:00Z", "has_more": true, "next_cursor": "2026-11-30T11:00:00Z"}'),
    ('{"since": "2026-11-30T11:00:00Z", "until": "2026-11-30T12:00:00Z", "has_more": true, "next_cursor": 1764500400}'),
    ('{"since": "2026-11-30T11:00:00Z", "until": "2999-01-01T00:00:00Z"}'),
    ('{"since": "2026-11-30T11:10:00Z", "until": "2026-11-30T12:00:00Z"}'),
    (jsonb_build_object('since', '2026-11-30T11:00:00Z', 'until', '2026-11-30T12:00:00Z',
         'snapshots', jsonb_build_array(regress.snap('n3', '', '2026-11-30T12:00:01Z', ARRAY[:B], ARRAY[99]))))) AS p(page),
       LATERAL billing_advance_window('s2', p.page) r;
SELECT state = regress.billing_state() AS nothing_billed FROM regress.fingerprint WHERE name = 'before bad pages';
-- the mismatch and skip messages of a page name page.snapshots[i]
SELECT r->>'status' AS status, r->'errors' AS errors
  FROM billing_advance_window('s1', jsonb_build_object('since', '2026-11-30T11:00:00Z', 'until', '2026-11-30T12:00:00Z',
       'snapshots', jsonb_build_array(regress.snap('n1', 'prod', '2026-11-30T11:10:00Z', ARRAY['x'], ARRAY[1]),
                                      regress.snap('n5', 'prod', '2026-11-30T11:20:00Z', ARRAY[:A], ARRAY[1])))) r;
SELECT r->>'status' AS status, r->'errors' AS errors
  FROM billing_advance_window('s1', jsonb_build_object('since', '2026-11-30T11:00:00Z', 'until', '2026-11-30T12:00:00Z',
       'snapshots', jsonb_build_array(regress.snap('n1', 'prod', '2026-11-30T11:10:00Z', ARRAY['x'], ARRAY[1])))) r;
SELECT regress.err($$SELECT billing_advance_window('s2', '{"until": "2026-11-30T11:00:00Z"}')$$);
SELECT regress.err($$SELECT billing_advance_window('s2', '{"since": "yesterday", "until": "2026-11-30T11:00:00Z"}')$$);
SELECT regress.err($$SELECT billing_advance_window('s2', '{"since": "2026-11-30T10:00:00Z", "until": "2026-11-30T11:00:00Z", "has_more": "yes"}')$$);
SELECT regress.err($$SELECT billing_advance_window('nope', '{"since": "2026-11-30T10:00:00Z", "until": "2026-11-30T11:00:00Z"}')$$);
SELECT source_id, enabled, expected_node_id, expected_env, healthy, last_error IS NOT NULL AS has_error,
       last_result->>'status' AS last_status
  FROM billing_status();
RESET opsmeter.billing_lookback;
RESET opsmeter.billing_delay;

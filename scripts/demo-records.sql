-- The demo's request records and daily-stats source (make demo): replaces what an earlier run
-- loaded. A week of log_records before today (UTC) plus today so far, and two days of request
-- records written through ops_add_records in batches of 1 000, as a gateway would send them.
SET client_min_messages = warning;
TRUNCATE opsmeter.log_records, opsmeter.daily_stats, opsmeter.daily_model_stats,
         opsmeter.request_records, opsmeter.record_latest, opsmeter.circuit_states;
SELECT setseed(0.7);

-- log_records: ~15 000 requests a day, 12 models with a skewed mix, ~4% failures
INSERT INTO opsmeter.log_records (created_at, model_name, status_code, tokens_in, tokens_out, latency_ms)
SELECT t, m.model,
       CASE WHEN r < 0.02 THEN 429 WHEN r < 0.03 THEN 500 WHEN r < 0.035 THEN 0 WHEN r < 0.04 THEN 400 ELSE 200 END,
       (200 + random() * 3000)::int, (50 + random() * 800)::int, (300 + 4000 * random() ^ 3)::int
  FROM generate_series(((now() AT TIME ZONE 'UTC')::date - 7)::timestamp AT TIME ZONE 'UTC', now(), interval '5.76 seconds') t,
       LATERAL (SELECT random() + 0 * extract(epoch FROM t) AS r, random() AS z) x,
       LATERAL (SELECT (ARRAY['claude-sonnet-4', 'claude-haiku-4', 'gpt-4.1', 'gpt-4.1-mini', 'gemini-2.5-pro',
                              'gemini-2.5-flash', 'claude-opus-4', 'o3', 'o4-mini', 'gpt-4o', 'deepseek-v3', 'qwen3'])
                       [1 + floor(12 * x.z ^ 2)::int] AS model) m
 ORDER BY t;

-- request records: two days of 8 keys over 3 api_types, via ops_add_records
DO $$
DECLARE
    b int;
BEGIN
    FOR b IN 0..39 LOOP
        PERFORM ops_add_records((
            SELECT jsonb_agg(jsonb_build_object(
                       'api_type', (ARRAY['messages', 'messages', 'responses', 'gemini'])[1 + i % 4],
                       'metrics_key', 'key-' || (i % 8), 'base_url', 'https://upstream-' || (i % 3) || '.example',
                       'model', (ARRAY['claude-sonnet-4', 'claude-haiku-4', 'gpt-4.1'])[1 + i % 3],
                       'success', ok, 'status_code', CASE WHEN ok THEN 200 ELSE (ARRAY[429, 500, 529, 0])[1 + i % 4] END,
                       'latency_ms', round((200 + 3000 * random() ^ 3)::numeric, 1),
                       'created_at', to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
                     ORDER BY t)
              FROM (SELECT i, now() - interval '2 days' + (b * 1000 + i) * interval '4.32 seconds' AS t,
                           random() > (CASE WHEN i % 8 = 5 THEN 0.30 ELSE 0.03 END) AS ok
                      FROM generate_series(0, 999) i) g));
    END LOOP;
END $$;
SELECT ops_circuit_upsert('messages', 'key-5', 'open', 12, 5, now() - interval '2 minutes', now() + interval '28 seconds');
SELECT ops_circuit_upsert('messages', 'key-1', 'closed');
SELECT ops_circuit_upsert('gemini', 'key-3', 'half_open', 3, 0, now() - interval '31 seconds', now());
ANALYZE opsmeter.log_records, opsmeter.request_records;

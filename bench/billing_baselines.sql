-- Baselines for the billing benchmark (bench/billing.sh, issue: billing from cumulative
-- counters), to time billing_ingest against. Re-runnable; needs, in this order:
--
--   CREATE EXTENSION opsmeter; CREATE EXTENSION "uuid-ossp";    -- both in schema public
--   \i bench/billing_baselines.sql
--   -- bench.page(n, j) filled with pages of snapshots (bench/billing.sh)
--   SELECT bench.seed_ingest(j) FROM bench.page WHERE n = 1;
--   INSERT INTO bench.floor_samples SELECT ... FROM bench.page, jsonb_array_elements(j) s,
--          jsonb_to_recordset(s -> 'samples') AS x(account_id uuid, cumulative_bytes bigint);
--
-- What each baseline is:
--   seed_ingest  the seed's pattern in our own words: one PL/pgSQL loop over every sample, per
--       (storage node, account) in sampled_at order, and per sample: SELECT the checkpoint,
--       compute the delta (first sample: its whole value; a decrease: nothing; at or before the
--       checkpoint: a replay, skipped), SELECT the profile (else the opsmeter.billing_* settings),
--       SELECT ... FOR UPDATE the month's quota row (INSERT it when missing), split the delta
--       into included and billable bytes, UPDATE the quota row, INSERT ... ON CONFLICT the
--       minute bucket, INSERT ... ON CONFLICT the ledger row (id = uuid_generate_v5 of
--       node|account|minute), INSERT ... ON CONFLICT the checkpoint. Its own copies of
--       opsmeter's tables (LIKE ... INCLUDING ALL: same columns, keys, indexes, checks), so the
--       two can be compared row by row.
--   floor_samples  the floor (bench/billing.sh runs the INSERT): the same samples read with
--       jsonb_array_elements / jsonb_to_recordset and inserted as rows into a table without an
--       index (no checkpoint, no bucket, no ledger, no quota).

SET client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS bench;

CREATE TABLE IF NOT EXISTS bench.page (n integer PRIMARY KEY, j jsonb NOT NULL);

DROP TABLE IF EXISTS bench.billing_checkpoints, bench.billing_minutes, bench.billing_ledger,
                     bench.billing_quota, bench.floor_samples;
CREATE TABLE bench.billing_checkpoints (LIKE opsmeter.billing_checkpoints INCLUDING ALL);
CREATE TABLE bench.billing_minutes (LIKE opsmeter.billing_minutes INCLUDING ALL);
CREATE TABLE bench.billing_ledger (LIKE opsmeter.billing_ledger INCLUDING ALL);
CREATE TABLE bench.billing_quota (LIKE opsmeter.billing_quota INCLUDING ALL);
CREATE TABLE bench.floor_samples (
    node_id          text NOT NULL,
    env              text NOT NULL,
    sampled_at       timestamptz NOT NULL,
    account_id       uuid NOT NULL,
    cumulative_bytes bigint NOT NULL
);

-- bench.seed_ingest(snapshots): the seed's per-sample pattern; returns the samples it read.
-- Its statements are planned once per session and reused (PL/pgSQL caches plans); planned on
-- the freshly truncated tables, the lookups could be planned as sequential scans and the loop
-- would then scan every checkpoint per sample (one run took over 18 minutes that way). The
-- seed's own tables have statistics and use their keys, so the function runs with
-- enable_seqscan off: every lookup by key is an index lookup, as it would be in production.
CREATE OR REPLACE FUNCTION bench.seed_ingest(snapshots jsonb) RETURNS bigint
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    r record;
    cp record;
    prof record;
    d bigint;
    b_minute timestamptz;
    b_period timestamptz;
    quota bigint;
    price numeric;
    mult numeric;
    ver text;
    used bigint;
    inc bigint;
    bill bigint;
    n bigint := 0;
BEGIN
    FOR r IN
        SELECT CASE WHEN coalesce(s ->> 'env', '') = '' THEN s ->> 'node_id'
                    ELSE (s ->> 'env') || ':' || (s ->> 'node_id') END AS node,
               (x ->> 'account_id')::uuid AS account,
               (s ->> 'sampled_at')::timestamptz AS at,
               (x ->> 'cumulative_bytes')::bigint AS value
          FROM jsonb_array_elements(snapshots) s, jsonb_array_elements(s -> 'samples') x
         ORDER BY 1, 2, 3, 4
    LOOP
        n := n + 1;
        -- read checkpoint
        SELECT c.sampled_at, c.cumulative_bytes INTO cp
          FROM bench.billing_checkpoints c
         WHERE c.storage_node_id = r.node AND c.account_id = r.account;
        IF FOUND AND r.at <= cp.sampled_at THEN
            CONTINUE;                                   -- a replay changes nothing
        END IF;
        IF NOT FOUND THEN
            d := r.value;                               -- first sample: the counter started at 0
        ELSIF r.value < cp.cumulative_bytes THEN
            d := 0;                                     -- a reset bills nothing
        ELSE
            d := r.value - cp.cumulative_bytes;
        END IF;
        IF d > 0 THEN
            b_minute := date_trunc('minute', r.at, 'UTC');
            b_period := date_trunc('month', r.at, 'UTC');
            -- read profile
            SELECT p.included_quota_bytes, p.price_per_byte, p.multiplier, p.pricing_rule_version
              INTO prof FROM opsmeter.billing_profiles p WHERE p.account_id = r.account;
            IF FOUND THEN
                quota := prof.included_quota_bytes; price := prof.price_per_byte;
                mult := prof.multiplier; ver := prof.pricing_rule_version;
            ELSE
                quota := current_setting('opsmeter.billing_included_quota_bytes')::bigint;
                price := current_setting('opsmeter.billing_price_per_byte')::numeric;
                mult := current_setting('opsmeter.billing_multiplier')::numeric;
                ver := 'default';
            END IF;
            IF mult <= 0 THEN mult := 1; END IF;
            IF ver = '' THEN ver := 'default'; END IF;
            -- read and update quota
            SELECT q.included_used_bytes INTO used
              FROM bench.billing_quota q
             WHERE q.account_id = r.account AND q.period_start = b_period
               FOR UPDATE;
            IF NOT FOUND THEN
                INSERT INTO bench.billing_quota (account_id, period_start, included_quota_bytes)
                VALUES (r.account, b_period, quota);
                used := 0;
            END IF;
            inc := least(d, greatest(quota - used, 0));
            bill := d - inc;
            UPDATE bench.billing_quota q
               SET included_quota_bytes = quota, included_used_bytes = q.included_used_bytes + inc,
                   billable_bytes = q.billable_bytes + bill, amount = q.amount + bill * price * mult,
                   updated_at = now()
             WHERE q.account_id = r.account AND q.period_start = b_period;
            -- upsert bucket
            INSERT INTO bench.billing_minutes AS b (storage_node_id, account_id, minute, bytes)
            VALUES (r.node, r.account, b_minute, d)
            ON CONFLICT (storage_node_id, account_id, minute) DO UPDATE
               SET bytes = b.bytes + EXCLUDED.bytes, updated_at = now();
            -- upsert ledger
            INSERT INTO bench.billing_ledger AS l
                   (id, storage_node_id, account_id, minute, bytes, included_bytes, billable_bytes,
                    amount, pricing_rule_version)
            VALUES (uuid_generate_v5(uuid_ns_url(), r.node || '|' || r.account::text || '|'
                        || to_char(b_minute AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:00"Z"')),
                    r.node, r.account, b_minute, d, inc, bill, bill * price * mult, ver)
            ON CONFLICT (id) DO UPDATE
               SET bytes = l.bytes + EXCLUDED.bytes,
                   included_bytes = l.included_bytes + EXCLUDED.included_bytes,
                   billable_bytes = l.billable_bytes + EXCLUDED.billable_bytes,
                   amount = l.amount + EXCLUDED.amount,
                   pricing_rule_version = EXCLUDED.pricing_rule_version, updated_at = now();
        END IF;
        -- write checkpoint
        INSERT INTO bench.billing_checkpoints AS c (storage_node_id, account_id, sampled_at, cumulative_bytes)
        VALUES (r.node, r.account, r.at, r.value)
        ON CONFLICT (storage_node_id, account_id) DO UPDATE
           SET sampled_at = EXCLUDED.sampled_at, cumulative_bytes = EXCLUDED.cumulative_bytes,
               updated_at = now();
    END LOOP;
    RETURN n;
END
$$;

-- A measured prototype, not part of opsmeter (docs/queue-design.md, "A claim that writes no
-- operation row, with its bookkeeping"): the fast path of a claim that leaves the rows it hands
-- out unwritten, with the bookkeeping a correct one needs, over opsmeter.operations, and the
-- completion that goes with it. Loaded and driven by bench/queue_rowless.sh in a database of
-- its own. What it has:
-- * a walk start that is a (timestamp, op_id) key (ties), taken FOR UPDATE with a 20 ms
--   lock_timeout in a subtransaction (a claim inside a long transaction must not hold every
--   other claim up; the claim that would then take today's path is NOT prototyped: it raises);
-- * the next fresh rows after it, read without a lock, then locked by tuple id (FOR UPDATE SKIP
--   LOCKED: a claim on the other path could otherwise lease a row this one takes), and only the
--   prefix before the first row it could not lock taken, so the walk start never passes one;
-- * rows made fresh behind the walk start (lowmarks), retries due and expired leases through
--   today's rowful path (lease written into the row); a row behind the walk start is left out
--   when the latest lease row starting at or before it lists it (lease rows of the fast path
--   cover disjoint, increasing key ranges);
-- * one lease row per claim (token, end, op_ids, first key of its fast part);
-- * a completion that counts a row as held by lease L when the row carries L, or carries no
--   lease, is fresh and L's lease row lists it.
DROP TABLE IF EXISTS bench.f_bound, bench.f_leases CASCADE;
CREATE TABLE bench.f_bound (w_ts timestamptz NOT NULL, w_id text NOT NULL);
INSERT INTO bench.f_bound VALUES ('-infinity', '');
CREATE TABLE bench.f_leases (
    lease_token uuid PRIMARY KEY, expires_at timestamptz NOT NULL, op_ids text[] NOT NULL,
    first_ts timestamptz, first_id text) WITH (autovacuum_vacuum_scale_factor = 0.05);
CREATE INDEX ON bench.f_leases (expires_at);
CREATE INDEX ON bench.f_leases (first_ts, first_id) WHERE first_ts IS NOT NULL;

CREATE OR REPLACE FUNCTION bench.f_claim(batch integer, lease interval)
RETURNS TABLE (op_id text, "timestamp" timestamptz, lease_token uuid, lease_expires_at timestamptz)
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $fn$
#variable_conflict use_column
DECLARE
    t       timestamptz := pg_catalog.clock_timestamp();
    token   uuid := pg_catalog.gen_random_uuid();
    wts timestamptz; wid text; low timestamptz;
    expired text[];
    got boolean := false;
BEGIN
    BEGIN
        PERFORM pg_catalog.set_config('lock_timeout', '20ms', true);
        SELECT b.w_ts, b.w_id INTO wts, wid FROM bench.f_bound b FOR UPDATE;
        got := true;
    EXCEPTION WHEN lock_not_available THEN
        got := false;
    END;
    PERFORM pg_catalog.set_config('lock_timeout', '0', true);
    IF NOT got THEN
        RAISE EXCEPTION 'the walk start is held: the other claim path is not prototyped';
    END IF;
    SELECT pg_catalog.min(l.ts) INTO low FROM opsmeter.queue_lowmarks l;
    SELECT pg_catalog.array_agg(x.id) INTO expired
      FROM (SELECT e.op_ids,
                   pg_catalog.sum(pg_catalog.cardinality(e.op_ids))
                       OVER (ORDER BY e.expires_at, e.lease_token) - pg_catalog.cardinality(e.op_ids) AS before
              FROM bench.f_leases e
             WHERE e.expires_at <= t) e,
           LATERAL pg_catalog.unnest(e.op_ids) x(id)
     WHERE e.before < batch;
    RETURN QUERY
    WITH ahead AS (
        SELECT o.ctid AS tid, o."timestamp" AS ts, o.op_id AS id,
               pg_catalog.row_number() OVER (ORDER BY o.available_at, o."timestamp", o.op_id) AS rn
          FROM opsmeter.operations o
         WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' AND o.available_at = '-infinity'
           AND o."timestamp" >= wts AND (o."timestamp", o.op_id) > (wts, wid) AND o.lease_token IS NULL
         ORDER BY o.available_at, o."timestamp", o.op_id
         LIMIT batch),
    locked AS (
        SELECT o.ctid AS tid
          FROM opsmeter.operations o
         WHERE o.ctid = ANY (ARRAY(SELECT a.tid FROM ahead a))
           AND o.trustlog_status = 'NOT_TRUSTLOGGED' AND o.available_at = '-infinity' AND o.lease_token IS NULL
           FOR UPDATE SKIP LOCKED),
    prefix AS (
        SELECT a.tid, a.ts, a.id, false AS rowful FROM ahead a
         WHERE a.rn < coalesce((SELECT pg_catalog.min(a2.rn) FROM ahead a2
                                 WHERE a2.tid <> ALL (ARRAY(SELECT k.tid FROM locked k))), batch + 1)),
    behind AS (
        SELECT o.ctid AS tid, o."timestamp" AS ts, o.op_id AS id, true AS rowful
          FROM opsmeter.operations o
         WHERE low IS NOT NULL AND low <= wts
           AND o.trustlog_status = 'NOT_TRUSTLOGGED' AND o.available_at = '-infinity'
           AND o."timestamp" >= low AND o."timestamp" <= wts AND o.lease_token IS NULL
           AND NOT o.op_id = ANY (coalesce((SELECT e.op_ids FROM bench.f_leases e
                                  WHERE e.first_ts IS NOT NULL AND (e.first_ts, e.first_id) <= (o."timestamp", o.op_id)
                                  ORDER BY e.first_ts DESC, e.first_id DESC LIMIT 1), '{}'))
         ORDER BY o.available_at, o."timestamp"
         LIMIT batch
           FOR UPDATE SKIP LOCKED),
    due AS (
        SELECT o.ctid AS tid, o."timestamp" AS ts, o.op_id AS id, true AS rowful
          FROM opsmeter.operations o
         WHERE o.trustlog_status = 'NOT_TRUSTLOGGED'
           AND o.available_at > '-infinity' AND o.available_at <= t
         ORDER BY o.available_at
         LIMIT batch
           FOR UPDATE SKIP LOCKED),
    lapsed AS (
        SELECT o.ctid AS tid, o."timestamp" AS ts, o.op_id AS id, true AS rowful
          FROM opsmeter.operations o
         WHERE o.op_id = ANY (expired) AND o.trustlog_status = 'NOT_TRUSTLOGGED'
           AND ((o.lease_token IS NOT NULL AND o.lease_expires_at <= t)
                OR (o.lease_token IS NULL AND o.available_at = '-infinity'))
           FOR UPDATE SKIP LOCKED),
    picked AS (
        SELECT c.* FROM (SELECT * FROM prefix UNION ALL SELECT * FROM behind UNION ALL SELECT * FROM due UNION ALL SELECT * FROM lapsed) c
         ORDER BY c.ts, c.id
         LIMIT batch),
    marked AS (
        UPDATE opsmeter.operations o
           SET lease_token = token, lease_expires_at = t + lease, available_at = '-infinity'
         WHERE o.ctid = ANY (ARRAY(SELECT p.tid FROM picked p WHERE p.rowful))
        RETURNING o.op_id, o."timestamp"),
    fast AS (
        SELECT p.id, p.ts FROM picked p WHERE NOT p.rowful),
    recorded AS (
        INSERT INTO bench.f_leases (lease_token, expires_at, op_ids, first_ts, first_id)
        SELECT token, t + lease, x.ids, f.ts, f.id
          FROM (SELECT pg_catalog.array_agg(a.op_id) AS ids FROM (SELECT m.op_id FROM marked m UNION ALL SELECT f.id FROM fast f) a) x
          LEFT JOIN LATERAL (SELECT f.ts, f.id FROM fast f ORDER BY f.ts, f.id LIMIT 1) f ON true
         WHERE x.ids IS NOT NULL),
    moved AS (
        UPDATE bench.f_bound b SET w_ts = l.ts, w_id = l.id
          FROM (SELECT f.ts, f.id FROM fast f ORDER BY f.ts DESC, f.id DESC LIMIT 1) l
        RETURNING 1),
    cleared AS (
        DELETE FROM opsmeter.queue_lowmarks l WHERE l.ts > wts)
    SELECT m.op_id, m."timestamp", token, t + lease FROM marked m
    UNION ALL
    SELECT f.id, f.ts, token, t + lease FROM fast f;
    IF expired IS NOT NULL THEN
        DELETE FROM bench.f_leases e
         WHERE e.expires_at <= t
           AND NOT EXISTS (SELECT 1 FROM opsmeter.operations o
                            WHERE o.op_id = ANY (e.op_ids) AND o.trustlog_status = 'NOT_TRUSTLOGGED'
                              AND (o.lease_token = e.lease_token
                                   OR (o.lease_token IS NULL AND o.available_at = '-infinity')));
    END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION bench.f_complete(op_ids text[], lease_token uuid DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $fn$
DECLARE
    done text[];
BEGIN
    WITH l AS (SELECT e.op_ids FROM bench.f_leases e WHERE e.lease_token = $2),
    locked AS (
        SELECT o.ctid AS tid
          FROM opsmeter.operations o
         WHERE o.op_id = ANY ($1) AND o.trustlog_status = 'NOT_TRUSTLOGGED'
           AND ($2 IS NULL OR o.lease_token = $2
                OR (o.lease_token IS NULL AND o.available_at = '-infinity'
                    AND o.op_id = ANY (coalesce((SELECT l.op_ids FROM l), '{}'))))
         ORDER BY o.op_id
           FOR UPDATE),
    changed AS (
        UPDATE opsmeter.operations o
           SET trustlog_status = 'TRUSTLOGGED', lease_token = NULL, lease_expires_at = NULL,
               available_at = NULL
         WHERE o.ctid = ANY (ARRAY(SELECT k.tid FROM locked k))
        RETURNING o.op_id),
    cleared AS (
        DELETE FROM opsmeter.retries r WHERE r.op_id IN (SELECT c.op_id FROM changed c))
    SELECT pg_catalog.array_agg(c.op_id) INTO done FROM changed c;
    IF $2 IS NOT NULL AND done IS NOT NULL THEN
        DELETE FROM bench.f_leases e
         WHERE e.lease_token = $2 AND pg_catalog.cardinality(e.op_ids) <= pg_catalog.cardinality(done);
    END IF;
    RETURN coalesce(pg_catalog.cardinality(done), 0);
END
$fn$;

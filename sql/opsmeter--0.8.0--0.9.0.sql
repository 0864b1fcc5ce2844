-- opsmeter 0.8.0 -> 0.9.0: a faster operations queue (leases as HOT updates, expired leases
-- found through opsmeter.leases, generic plans in the queue functions).
-- A lease now writes only lease_token and lease_expires_at (available_at stays -infinity while an
-- operation is leased), which with fillfactor 50 makes it a HOT update: no index entries. Each
-- claim records its lease end and operations in the new table opsmeter.leases, where later
-- claims find the expired ones. ops_op_completed / ops_op_complete are PL/pgSQL now (their plans
-- are kept, where a SQL function's were made on every call). Signatures do not change.
\echo Use "ALTER EXTENSION opsmeter UPDATE TO '0.9.0'" to load this file. \quit

-- Pages written from now on keep half their space for the lease's new row version (pages of
-- existing rows get it as VACUUM frees them); the options are set again in install order.
ALTER TABLE opsmeter.operations RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_insert_scale_factor);
ALTER TABLE opsmeter.operations SET (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.02,
       autovacuum_vacuum_insert_scale_factor = 0.05);
COMMENT ON TABLE opsmeter.operations IS 'opsmeter operations queue: one row per operation (the seed''s columns), kept as a record after it is TRUSTLOGGED; lease_token/lease_expires_at: the claim holding it (claimable again once lease_expires_at has passed); available_at: when it may next be claimed (-infinity: now, or when its lease ends; its next retry time; infinity: dead letter; NULL once TRUSTLOGGED). Write it with ops_op_save*, change it with ops_op_claim/complete/fail';
COMMENT ON COLUMN opsmeter.operations.available_at IS 'opsmeter: when the operation may next be claimed: -infinity (now, or at lease_expires_at while leased), its next retry time, infinity (dead letter); NULL once TRUSTLOGGED';

CREATE TABLE opsmeter.leases (
    lease_token uuid PRIMARY KEY,
    expires_at  timestamptz NOT NULL,
    op_ids      text[] NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0.05);
CREATE INDEX leases_expiry ON opsmeter.leases (expires_at);
COMMENT ON TABLE opsmeter.leases IS 'opsmeter queue (internal): one row per claim whose lease may still hold operations (lease end, op_ids), read by claims to find expired leases; written by ops_op_claim, removed when no operation is held under it';
SELECT pg_catalog.pg_extension_config_dump('opsmeter.leases', '');


-- Operations under a lease now (or under one that has expired but was not taken over yet):
-- available_at goes back to -infinity, as a claim now leaves it, and each lease gets its row.
UPDATE opsmeter.operations SET available_at = '-infinity'
 WHERE trustlog_status = 'NOT_TRUSTLOGGED' AND lease_token IS NOT NULL;
INSERT INTO opsmeter.leases (lease_token, expires_at, op_ids)
SELECT o.lease_token, pg_catalog.max(o.lease_expires_at), pg_catalog.array_agg(o.op_id ORDER BY o.op_id)
  FROM opsmeter.operations o
 WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' AND o.lease_token IS NOT NULL
 GROUP BY o.lease_token;

DROP TRIGGER queue_lowmark_update ON opsmeter.operations;
CREATE TRIGGER queue_lowmark_update AFTER UPDATE ON opsmeter.operations
    FOR EACH ROW
    WHEN (NEW.trustlog_status = 'NOT_TRUSTLOGGED' AND NEW.available_at = '-infinity'
          AND NEW.lease_token IS NULL
          AND (OLD.available_at IS DISTINCT FROM NEW.available_at OR OLD.trustlog_status <> NEW.trustlog_status
               OR OLD.lease_token IS NOT NULL))
    EXECUTE FUNCTION opsmeter.queue_lowmark();

CREATE OR REPLACE FUNCTION ops_op_claim(batch integer DEFAULT 100, lease interval DEFAULT '5 minutes')
RETURNS TABLE (
    op_id text, op_actor text, doid text, producer_id text, request_body_hash text,
    response_body_hash text, op_source text, op_code integer, do_prefix text,
    do_repository text, client_ip text, server_ip text, trustlog_status text,
    "timestamp" timestamptz, created_at timestamptz, lease_token uuid,
    lease_expires_at timestamptz)
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $fn$
#variable_conflict use_column
DECLARE
    t       timestamptz := pg_catalog.clock_timestamp();
    token   uuid := pg_catalog.gen_random_uuid();
    since   timestamptz;
    expired text[];
BEGIN
    IF batch < 1 OR batch > 10000 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = pg_catalog.format('batch must be between 1 and 10000, got %s', batch);
    END IF;
    IF lease <= interval '0' OR lease > interval '7 days' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = pg_catalog.format('lease must be a positive interval of at most 7 days, got %s', lease);
    END IF;
    SELECT LEAST(b.claim_from, (SELECT pg_catalog.min(l.ts) FROM opsmeter.queue_lowmarks l))
      INTO since FROM opsmeter.queue_bound b;
    since := coalesce(since, '-infinity');
    -- The operations of the oldest expired leases, whole leases until they add up to batch.
    SELECT pg_catalog.array_agg(x.id) INTO expired
      FROM (SELECT e.op_ids,
                   pg_catalog.sum(pg_catalog.cardinality(e.op_ids))
                       OVER (ORDER BY e.expires_at, e.lease_token) - pg_catalog.cardinality(e.op_ids) AS before
              FROM opsmeter.leases e
             WHERE e.expires_at <= t) e,
           LATERAL pg_catalog.unnest(e.op_ids) x(id)
     WHERE e.before < batch;
    -- One statement. Fresh operations oldest first (a row under a lease is passed over), those
    -- whose retry is due, and those of expired leases, each locked as it is read unless another
    -- claimer holds it (SKIP LOCKED); a row another claimer leased and committed after this
    -- statement's snapshot is re-checked on its new version (it has a lease_token then, or a
    -- lease end in the future) and skipped. The oldest `batch` of them are leased.
    RETURN QUERY
    WITH fresh AS (
        SELECT o.ctid AS tid, o."timestamp" AS ts
          FROM opsmeter.operations o
         WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' AND o.available_at = '-infinity'
           AND o."timestamp" >= since AND o.lease_token IS NULL
         ORDER BY o.available_at, o."timestamp"
         LIMIT batch
           FOR UPDATE SKIP LOCKED),
    due AS (
        SELECT o.ctid AS tid, o."timestamp" AS ts
          FROM opsmeter.operations o
         WHERE o.trustlog_status = 'NOT_TRUSTLOGGED'
           AND o.available_at > '-infinity' AND o.available_at <= t
         ORDER BY o.available_at
         LIMIT batch
           FOR UPDATE SKIP LOCKED),
    lapsed AS (
        SELECT o.ctid AS tid, o."timestamp" AS ts
          FROM opsmeter.operations o
         WHERE o.op_id = ANY (expired) AND o.trustlog_status = 'NOT_TRUSTLOGGED'
           AND o.lease_token IS NOT NULL AND o.lease_expires_at <= t
           FOR UPDATE SKIP LOCKED),
    picked AS (
        SELECT c.tid FROM (SELECT * FROM fresh UNION ALL SELECT * FROM due UNION ALL SELECT * FROM lapsed) c
         ORDER BY c.ts
         LIMIT batch),
    leased AS (
        UPDATE opsmeter.operations o
           SET lease_token = token, lease_expires_at = t + lease, available_at = '-infinity'
         WHERE o.ctid = ANY (ARRAY(SELECT p.tid FROM picked p))
        RETURNING o.*),
    recorded AS (
        INSERT INTO opsmeter.leases (lease_token, expires_at, op_ids)
        SELECT token, t + lease, pg_catalog.array_agg(l.op_id) FROM leased l
        HAVING pg_catalog.count(*) > 0)
    SELECT l.op_id, l.op_actor, l.doid, l.producer_id, l.request_body_hash, l.response_body_hash,
           l.op_source, l.op_code, l.do_prefix, l.do_repository, l.client_ip, l.server_ip,
           l.trustlog_status, l."timestamp", l.created_at, l.lease_token, l.lease_expires_at
      FROM leased l
     ORDER BY l."timestamp", l.op_id;
    -- Expired leases none of whose operations is still held under them are done with. (Not
    -- under REPEATABLE READ, where a row another claim deleted first would be a serialization
    -- failure: a later claim in READ COMMITTED deletes it.)
    IF expired IS NOT NULL AND pg_catalog.current_setting('transaction_isolation') = 'read committed' THEN
        DELETE FROM opsmeter.leases e
         WHERE e.expires_at <= t
           AND NOT EXISTS (SELECT 1 FROM opsmeter.operations o
                            WHERE o.op_id = ANY (e.op_ids) AND o.lease_token = e.lease_token
                              AND o.trustlog_status = 'NOT_TRUSTLOGGED');
    END IF;
    -- Move the start of the walk up to the oldest fresh operation this snapshot sees (an
    -- operation under another claim that may still roll back is seen as fresh, so it stays
    -- covered) and clear the lowmarks it has accounted for. Skipped when another claim's
    -- transaction holds the row, or when the row changed after this snapshot (generation).
    -- Under REPEATABLE READ the row lock would raise a serialization failure: skipped there.
    IF pg_catalog.current_setting('transaction_isolation') = 'read committed' THEN
        WITH cur AS (
            SELECT b.generation,
                   coalesce(LEAST(b.claim_from,
                                             (SELECT pg_catalog.min(l.ts) FROM opsmeter.queue_lowmarks l)),
                            '-infinity') AS since
              FROM opsmeter.queue_bound b),
        oldest AS (
            SELECT cur.generation,
                   (SELECT o."timestamp" FROM opsmeter.operations o
                     WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' AND o.available_at = '-infinity'
                       AND o."timestamp" >= cur.since AND o.lease_token IS NULL
                     ORDER BY o.available_at, o."timestamp"
                     LIMIT 1) AS ts
              FROM cur),
        locked AS (
            SELECT b.ctid AS tid FROM opsmeter.queue_bound b FOR UPDATE SKIP LOCKED),
        moved AS (
            UPDATE opsmeter.queue_bound b
               SET claim_from = coalesce(oldest.ts, 'infinity'), generation = b.generation + 1
              FROM locked, oldest
             WHERE b.ctid = locked.tid AND b.generation = oldest.generation
            RETURNING 1)
        DELETE FROM opsmeter.queue_lowmarks l WHERE EXISTS (SELECT 1 FROM moved);
        -- the lowmarks this transaction wrote may be gone now: its next fresh row writes one
        PERFORM pg_catalog.set_config('opsmeter.queue_lowmark_written', '', true);
    END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION ops_op_completed(op_ids text[], lease_token uuid DEFAULT NULL)
RETURNS SETOF text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    done text[];
BEGIN
    -- rows are locked in op_id order, so completers with overlapping lists never deadlock; a
    -- row another transaction changed meanwhile (completed it, or took over its expired lease)
    -- is re-checked on its new version and left out
    WITH locked AS (
        SELECT o.ctid AS tid
          FROM opsmeter.operations o
         WHERE o.op_id = ANY ($1) AND o.trustlog_status = 'NOT_TRUSTLOGGED'
           AND ($2 IS NULL OR o.lease_token = $2)
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
    -- a lease all of whose operations this call completed holds nothing any more
    IF $2 IS NOT NULL AND done IS NOT NULL THEN
        DELETE FROM opsmeter.leases e
         WHERE e.lease_token = $2 AND pg_catalog.cardinality(e.op_ids) <= pg_catalog.cardinality(done);
    END IF;
    RETURN QUERY SELECT pg_catalog.unnest(done);
END
$fn$;

CREATE OR REPLACE FUNCTION ops_op_complete(op_ids text[], lease_token uuid DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    RETURN (SELECT pg_catalog.count(*)::integer FROM @extschema@.ops_op_completed($1, $2));
END
$fn$;


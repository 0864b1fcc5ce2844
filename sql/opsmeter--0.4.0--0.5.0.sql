-- opsmeter 0.4.0 -> 0.5.0: adds the operations queue (SPEC section 5): tables
-- opsmeter.operations (with its partial claim index), opsmeter.retries, opsmeter.cursors,
-- opsmeter.queue_bound and opsmeter.queue_lowmarks (where claims start their walk), the
-- claim / complete / fail / requeue / retry / cursor / query / stats functions and their
-- comments. Nothing existing changes.
\echo Use "ALTER EXTENSION opsmeter UPDATE TO '0.5.0'" to load this file. \quit


CREATE TABLE opsmeter.operations (
    op_id              text PRIMARY KEY,
    op_actor           text NOT NULL DEFAULT '',
    doid               text NOT NULL DEFAULT '',
    producer_id        text NOT NULL DEFAULT '',
    request_body_hash  text,
    response_body_hash text,
    op_source          text NOT NULL DEFAULT '',
    op_code            integer NOT NULL DEFAULT 0,
    do_prefix          text NOT NULL DEFAULT '',
    do_repository      text NOT NULL DEFAULT '',
    client_ip          text,
    server_ip          text,
    trustlog_status    text NOT NULL DEFAULT 'NOT_TRUSTLOGGED'
                       CHECK (trustlog_status IN ('NOT_TRUSTLOGGED', 'TRUSTLOGGED')),
    "timestamp"        timestamptz NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    lease_token        uuid,
    lease_expires_at   timestamptz,
    available_at       timestamptz DEFAULT '-infinity'
) WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.05);
CREATE INDEX operations_claim ON opsmeter.operations (available_at, "timestamp")
    WHERE trustlog_status = 'NOT_TRUSTLOGGED';
COMMENT ON TABLE opsmeter.operations IS 'opsmeter operations queue: one row per operation (the seed''s columns), kept as a record after it is TRUSTLOGGED; lease_token/lease_expires_at: the claim holding it; available_at: when it may next be claimed (-infinity: now; its lease end; its next retry time; infinity: dead letter; NULL once TRUSTLOGGED). Write it with ops_op_save*, change it with ops_op_claim/complete/fail';
COMMENT ON COLUMN opsmeter.operations.available_at IS 'opsmeter: when the operation may next be claimed: -infinity (now), the end of its lease, its next retry time, infinity (dead letter); NULL once TRUSTLOGGED';
SELECT pg_catalog.pg_extension_config_dump('opsmeter.operations', '');

CREATE TABLE opsmeter.retries (
    op_id         text PRIMARY KEY,
    retry_count   integer NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
    retry_status  text NOT NULL CHECK (retry_status IN ('PENDING', 'RETRYING', 'DEAD_LETTER')),
    last_retry_at timestamptz,
    next_retry_at timestamptz,
    error_message text,
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at    timestamptz NOT NULL DEFAULT pg_catalog.now()
) WITH (autovacuum_vacuum_scale_factor = 0.05);
CREATE INDEX retries_due ON opsmeter.retries (next_retry_at) WHERE retry_status <> 'DEAD_LETTER';
COMMENT ON TABLE opsmeter.retries IS 'opsmeter retry queue: one row per failed operation not yet completed; retry_count = retries that have failed (0 after the first failure), PENDING / RETRYING with next_retry_at, or DEAD_LETTER after max_retries + 1 failures; removed on completion';
SELECT pg_catalog.pg_extension_config_dump('opsmeter.retries', '');

CREATE TABLE opsmeter.cursors (
    cursor_key      text PRIMARY KEY,
    cursor_value    text NOT NULL,
    last_updated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE opsmeter.cursors IS 'opsmeter key/value cursors (the seed''s trustlog_cursor), e.g. the timestamp a scanning worker has reached; ops_cursor_get/set/init';
SELECT pg_catalog.pg_extension_config_dump('opsmeter.cursors', '');

CREATE TABLE opsmeter.queue_bound (
    claim_from timestamptz NOT NULL,
    generation bigint NOT NULL
);
INSERT INTO opsmeter.queue_bound VALUES ('-infinity', 0);
COMMENT ON TABLE opsmeter.queue_bound IS 'opsmeter queue (internal, one row): claims start their walk over fresh operations at least(claim_from, min(opsmeter.queue_lowmarks.ts)); moved up by claims';
CREATE TABLE opsmeter.queue_lowmarks (ts timestamptz NOT NULL);
CREATE INDEX queue_lowmarks_ts ON opsmeter.queue_lowmarks (ts);
SELECT pg_catalog.pg_extension_config_dump('opsmeter.queue_bound', 'WHERE false');
SELECT pg_catalog.pg_extension_config_dump('opsmeter.queue_lowmarks', 'WHERE false');
COMMENT ON TABLE opsmeter.queue_lowmarks IS 'opsmeter queue (internal): the oldest timestamp each statement made claimable (saves, requeues, any INSERT or COPY into opsmeter.operations), until a claim has seen it';

CREATE FUNCTION opsmeter.queue_lowmark() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    written text := pg_catalog.current_setting('opsmeter.queue_lowmark_written', true);
    epoch   numeric := EXTRACT(EPOCH FROM NEW."timestamp");
BEGIN
    IF written IS NULL OR written = '' OR epoch < written::numeric THEN
        INSERT INTO opsmeter.queue_lowmarks (ts) VALUES (NEW."timestamp");
        PERFORM pg_catalog.set_config('opsmeter.queue_lowmark_written', epoch::text, true);
    END IF;
    RETURN NULL;
END
$fn$;
COMMENT ON FUNCTION opsmeter.queue_lowmark() IS 'opsmeter queue (internal trigger): records in opsmeter.queue_lowmarks the timestamp of an operation an INSERT or UPDATE made claimable, unless this transaction recorded an older one';
CREATE TRIGGER queue_lowmark_insert AFTER INSERT ON opsmeter.operations
    FOR EACH ROW
    WHEN (NEW.trustlog_status = 'NOT_TRUSTLOGGED' AND NEW.available_at = '-infinity')
    EXECUTE FUNCTION opsmeter.queue_lowmark();
CREATE TRIGGER queue_lowmark_update AFTER UPDATE ON opsmeter.operations
    FOR EACH ROW
    WHEN (NEW.trustlog_status = 'NOT_TRUSTLOGGED' AND NEW.available_at = '-infinity'
          AND (OLD.available_at IS DISTINCT FROM NEW.available_at OR OLD.trustlog_status <> NEW.trustlog_status))
    EXECUTE FUNCTION opsmeter.queue_lowmark();

CREATE FUNCTION ops_op_claim(batch integer DEFAULT 100, lease interval DEFAULT '5 minutes')
RETURNS TABLE (
    op_id text, op_actor text, doid text, producer_id text, request_body_hash text,
    response_body_hash text, op_source text, op_code integer, do_prefix text,
    do_repository text, client_ip text, server_ip text, trustlog_status text,
    "timestamp" timestamptz, created_at timestamptz, lease_token uuid,
    lease_expires_at timestamptz)
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    t     timestamptz := pg_catalog.clock_timestamp();
    token uuid := pg_catalog.gen_random_uuid();
    since timestamptz;
BEGIN
    IF batch < 1 OR batch > 10000 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = pg_catalog.format('batch must be between 1 and 10000, got %s', batch);
    END IF;
    IF lease <= interval '0' OR lease > interval '7 days' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = pg_catalog.format('lease must be a positive interval of at most 7 days, got %s', lease);
    END IF;
    -- One statement. Fresh operations oldest first, and those whose retry is due or whose
    -- lease expired, each locked as the index hands them out unless another claimer holds
    -- them (SKIP LOCKED); a row another claimer leased and committed after this statement's
    -- snapshot is re-checked on its new version (available_at is then in the future) and
    -- skipped. The oldest `batch` of both are leased.
    SELECT LEAST(b.claim_from, (SELECT pg_catalog.min(l.ts) FROM opsmeter.queue_lowmarks l))
      INTO since FROM opsmeter.queue_bound b;
    since := coalesce(since, '-infinity');
    RETURN QUERY
    WITH fresh AS (
        SELECT o.ctid AS tid, o."timestamp" AS ts
          FROM opsmeter.operations o
         WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' AND o.available_at = '-infinity'
           AND o."timestamp" >= since
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
    picked AS (
        SELECT c.tid FROM (SELECT * FROM fresh UNION ALL SELECT * FROM due) c
         ORDER BY c.ts
         LIMIT batch),
    leased AS (
        UPDATE opsmeter.operations o
           SET lease_token = token, lease_expires_at = t + lease, available_at = t + lease
         WHERE o.ctid = ANY (ARRAY(SELECT p.tid FROM picked p))
        RETURNING o.*)
    SELECT l.op_id, l.op_actor, l.doid, l.producer_id, l.request_body_hash, l.response_body_hash,
           l.op_source, l.op_code, l.do_prefix, l.do_repository, l.client_ip, l.server_ip,
           l.trustlog_status, l."timestamp", l.created_at, l.lease_token, l.lease_expires_at
      FROM leased l
     ORDER BY l."timestamp", l.op_id;
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
                       AND o."timestamp" >= cur.since
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

CREATE FUNCTION ops_op_completed(op_ids text[], lease_token uuid DEFAULT NULL)
RETURNS SETOF text
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
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
    done AS (
        UPDATE opsmeter.operations o
           SET trustlog_status = 'TRUSTLOGGED', lease_token = NULL, lease_expires_at = NULL,
               available_at = NULL
         WHERE o.ctid = ANY (ARRAY(SELECT k.tid FROM locked k))
        RETURNING o.op_id),
    cleared AS (
        DELETE FROM opsmeter.retries r WHERE r.op_id IN (SELECT d.op_id FROM done d))
    SELECT d.op_id FROM done d
$fn$;

CREATE FUNCTION ops_op_complete(op_ids text[], lease_token uuid DEFAULT NULL)
RETURNS integer
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT pg_catalog.count(*)::integer FROM @extschema@.ops_op_completed($1, $2)
$fn$;

CREATE FUNCTION ops_op_requeue(op_ids text[])
RETURNS integer
LANGUAGE sql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH dead AS (
        SELECT o.ctid AS tid, o.op_id
          FROM opsmeter.operations o
          JOIN opsmeter.retries r ON r.op_id = o.op_id
         WHERE o.op_id = ANY ($1) AND o.trustlog_status = 'NOT_TRUSTLOGGED'
           AND r.retry_status = 'DEAD_LETTER'
         ORDER BY o.op_id
           FOR UPDATE OF o),
    cleared AS (
        DELETE FROM opsmeter.retries r WHERE r.op_id IN (SELECT d.op_id FROM dead d)),
    revived AS (
        UPDATE opsmeter.operations o
           SET available_at = '-infinity', lease_token = NULL, lease_expires_at = NULL
         WHERE o.ctid = ANY (ARRAY(SELECT d.tid FROM dead d))
        RETURNING 1)
    SELECT pg_catalog.count(*)::integer FROM revived
$fn$;

CREATE FUNCTION ops_retry_due("limit" integer DEFAULT 100)
RETURNS SETOF opsmeter.retries
LANGUAGE sql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT r.* FROM opsmeter.retries r
     WHERE r.retry_status IN ('PENDING', 'RETRYING') AND r.next_retry_at <= pg_catalog.clock_timestamp()
     ORDER BY r.next_retry_at, r.op_id
     LIMIT $1
$fn$;

CREATE FUNCTION ops_retry_done(op_id text)
RETURNS boolean
LANGUAGE sql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH gone AS (
        DELETE FROM opsmeter.retries r WHERE r.op_id = $1 RETURNING r.op_id),
    freed AS (
        UPDATE opsmeter.operations o SET available_at = '-infinity'
         WHERE o.op_id IN (SELECT g.op_id FROM gone g)
           AND o.trustlog_status = 'NOT_TRUSTLOGGED' AND o.lease_token IS NULL)
    SELECT EXISTS (SELECT 1 FROM gone)
$fn$;

CREATE FUNCTION ops_cursor_get(cursor_key text)
RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT coalesce((SELECT c.cursor_value FROM opsmeter.cursors c WHERE c.cursor_key = $1), '')
$fn$;

CREATE FUNCTION ops_cursor_set(cursor_key text, cursor_value text)
RETURNS void
LANGUAGE sql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
    INSERT INTO opsmeter.cursors AS c (cursor_key, cursor_value, last_updated_at)
    VALUES ($1, $2, pg_catalog.clock_timestamp())
    ON CONFLICT (cursor_key) DO UPDATE
       SET cursor_value = EXCLUDED.cursor_value, last_updated_at = EXCLUDED.last_updated_at
$fn$;

CREATE FUNCTION ops_cursor_init(cursor_key text, initial_value text, keep_existing boolean DEFAULT false)
RETURNS text
LANGUAGE sql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH up AS (
        INSERT INTO opsmeter.cursors AS c (cursor_key, cursor_value, last_updated_at)
        VALUES ($1, $2, pg_catalog.clock_timestamp())
        ON CONFLICT (cursor_key) DO UPDATE
           SET cursor_value = EXCLUDED.cursor_value, last_updated_at = EXCLUDED.last_updated_at
         WHERE NOT $3
        RETURNING c.cursor_value)
    SELECT coalesce((SELECT u.cursor_value FROM up u),
                    (SELECT c.cursor_value FROM opsmeter.cursors c WHERE c.cursor_key = $1))
$fn$;
/* </end connected objects> */

/* <begin connected objects> */

CREATE  FUNCTION "ops_op_fail"(
	"op_id" TEXT, /* Option < & str > */
	"error" TEXT, /* Option < & str > */
	"lease_token" uuid DEFAULT NULL /* Option < Uuid > */
) RETURNS bool /* bool */
VOLATILE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ops_op_fail_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
CREATE  FUNCTION "ops_op_save"(
	"op" jsonb, /* JsonbText */
	"status" TEXT DEFAULT 'NOT_TRUSTLOGGED' /* & str */
) RETURNS void
STRICT VOLATILE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ops_op_save_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
CREATE  FUNCTION "ops_op_save_batch"(
	"ops" jsonb /* JsonbText */
) RETURNS bigint /* i64 */
STRICT VOLATILE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ops_op_save_batch_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
CREATE  FUNCTION "ops_operations_count"(
	"filter" jsonb DEFAULT '{}' /* Option < JsonbText > */
) RETURNS bigint /* i64 */
STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ops_operations_count_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
CREATE  FUNCTION "ops_operations_query"(
	"filter" jsonb DEFAULT '{}', /* Option < JsonbText > */
	"page_size" INT DEFAULT 20, /* Option < i32 > */
	"page_number" INT DEFAULT 1, /* Option < i32 > */
	"order_by" TEXT DEFAULT 'created_at', /* Option < & str > */
	"descending" bool DEFAULT false /* Option < bool > */
) RETURNS TABLE (
	"op_id" TEXT,  /* String */
	"op_actor" TEXT,  /* String */
	"doid" TEXT,  /* String */
	"producer_id" TEXT,  /* String */
	"request_body_hash" TEXT,  /* Option < String > */
	"response_body_hash" TEXT,  /* Option < String > */
	"op_source" TEXT,  /* String */
	"op_code" INT,  /* i32 */
	"do_prefix" TEXT,  /* String */
	"do_repository" TEXT,  /* String */
	"client_ip" TEXT,  /* Option < String > */
	"server_ip" TEXT,  /* Option < String > */
	"trustlog_status" TEXT,  /* String */
	"timestamp" timestamp with time zone,  /* TimestampWithTimeZone */
	"created_at" timestamp with time zone,  /* TimestampWithTimeZone */
	"total" bigint,  /* i64 */
	"total_pages" bigint  /* i64 */
)
STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ops_operations_query_wrapper';
/* </end connected objects> */

/* <begin connected objects> */

CREATE  FUNCTION "ops_queue_stats"() RETURNS TABLE (
	"not_trustlogged" bigint,  /* i64 */
	"pending" bigint,  /* i64 */
	"leased" bigint,  /* i64 */
	"retrying" bigint,  /* i64 */
	"dead_letters" bigint,  /* i64 */
	"oldest_pending_age" interval,  /* Option < Interval > */
	"cursor_lag" interval  /* Option < Interval > */
)
STRICT STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ops_queue_stats_wrapper';
/* </end connected objects> */

/* <begin connected objects> */

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

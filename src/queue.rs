//! The operations queue (SPEC §5): operations recorded at once and processed asynchronously,
//! exactly once, by workers that claim batches under leases, complete them with a
//! compare-and-set, and fail them into a retry schedule that ends in dead letters.
//!
//! The queue state lives on the operation row (`lease_token` and `lease_expires_at`, the lease
//! holding it, and `available_at`, when it may next be handed out: now, a retry time, never for
//! a dead letter); a claim walks a partial index of the not-yet-trustlogged rows, however many
//! completed rows the table keeps. A lease writes only columns no index reads, so it is a HOT
//! update in the row's own page (the table keeps half of each page free for it);
//! `opsmeter.leases` records each claim's lease end and operations, which is how an expired
//! lease is found again. `opsmeter.retries` holds the retry count, schedule and last error.
//! Rules (JSON checks, backoff, query filters) live in [`crate::cores::queue`].

use crate::cores::queue::{self as qc, Class, Operation, Param, QueueError, RetryStatus};
use crate::error::{OrRaise, SqlError};
use crate::rollups::{tstz, us};
use crate::types::JsonbText;
use pgrx::datum::{DatumWithOid, Interval, Uuid};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

impl SqlError for QueueError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self.class() {
            Class::InvalidParameter => ERRCODE_INVALID_PARAMETER_VALUE,
            Class::TextRepresentation => ERRCODE_INVALID_TEXT_REPRESENTATION,
            Class::DatetimeFormat => ERRCODE_INVALID_DATETIME_FORMAT,
            Class::OutOfRange => ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
            Class::UniqueViolation => ERRCODE_UNIQUE_VIOLATION,
        }
    }
    fn hint(&self) -> Option<String> {
        QueueError::hint(self)
    }
}

/// The channel `ops_op_save` / `ops_op_save_batch` notify when they save claimable operations;
/// the payload is how many.
pub const CHANNEL: &str = "opsmeter_operations";

extension_sql!(
    r#"
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
) WITH (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.02,
       autovacuum_vacuum_insert_scale_factor = 0.05);
-- Only rows still to be trustlogged are in the claim index, however many completed ones the
-- table keeps. Fresh operations (available_at = -infinity) come in "timestamp" order at its
-- head, retry times after them, dead letters (infinity) at the end. A lease changes no indexed
-- column (lease_token and lease_expires_at are in no index; available_at stays -infinity), so
-- with the page space fillfactor 50 keeps free it is a HOT update: no new entry in this index
-- or the primary key, and the entry of a leased row stays where it was. A claim skips leased
-- rows by their lease_token; the walk start (queue_bound below) keeps it from passing the
-- leased and completed rows at the head over and over.
CREATE INDEX operations_claim ON opsmeter.operations (available_at, "timestamp")
    WHERE trustlog_status = 'NOT_TRUSTLOGGED';
COMMENT ON TABLE opsmeter.operations IS 'opsmeter operations queue: one row per operation (the seed''s columns), kept as a record after it is TRUSTLOGGED; lease_token/lease_expires_at: the claim holding it (claimable again once lease_expires_at has passed); available_at: when it may next be claimed (-infinity: now, or when its lease ends; its next retry time; infinity: dead letter; NULL once TRUSTLOGGED). Write it with ops_op_save*, change it with ops_op_claim/complete/fail';
COMMENT ON COLUMN opsmeter.operations.available_at IS 'opsmeter: when the operation may next be claimed: -infinity (now, or at lease_expires_at while leased), its next retry time, infinity (dead letter); NULL once TRUSTLOGGED';
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

-- One row per claim whose lease may still hold operations: the lease end and the operations it
-- leased. Claims read the expired rows (by expires_at) to hand those operations out again, and
-- delete a row once none of its operations is held under it any more; a completion with the
-- token that completes all of them deletes it at once. Dumped with the operations: a leased
-- operation without its row here would never be found again once its lease expired.
CREATE TABLE opsmeter.leases (
    lease_token uuid PRIMARY KEY,
    expires_at  timestamptz NOT NULL,
    op_ids      text[] NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0.05);
CREATE INDEX leases_expiry ON opsmeter.leases (expires_at);
COMMENT ON TABLE opsmeter.leases IS 'opsmeter queue (internal): one row per claim whose lease may still hold operations (lease end, op_ids), read by claims to find expired leases; written by ops_op_claim, removed when no operation is held under it';
SELECT pg_catalog.pg_extension_config_dump('opsmeter.leases', '');

CREATE TABLE opsmeter.cursors (
    cursor_key      text PRIMARY KEY,
    cursor_value    text NOT NULL,
    last_updated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE opsmeter.cursors IS 'opsmeter key/value cursors (the seed''s trustlog_cursor), e.g. the timestamp a scanning worker has reached; ops_cursor_get/set/init';
SELECT pg_catalog.pg_extension_config_dump('opsmeter.cursors', '');

-- Where the claim's walk over fresh operations starts. Completed and leased operations leave
-- dead entries at the head of the claim index until VACUUM removes them, and a walk from its
-- very start would pass all of them on every claim (slower and slower between vacuums). So a
-- claim starts at least(claim_from, min(queue_lowmarks.ts)): claim_from is the oldest fresh
-- operation's timestamp as the last claim saw it, and every statement that makes operations
-- claimable writes the oldest timestamp it made claimable into queue_lowmarks, in its own
-- transaction (triggers below), so an operation saved with an old timestamp is never skipped.
-- A claim moves claim_from up and clears the lowmarks it has seen, both in one statement (one
-- snapshot).
CREATE TABLE opsmeter.queue_bound (
    claim_from timestamptz NOT NULL,
    generation bigint NOT NULL
);
INSERT INTO opsmeter.queue_bound VALUES ('-infinity', 0);
COMMENT ON TABLE opsmeter.queue_bound IS 'opsmeter queue (internal, one row): claims start their walk over fresh operations at least(claim_from, min(opsmeter.queue_lowmarks.ts)); moved up by claims';
CREATE TABLE opsmeter.queue_lowmarks (ts timestamptz NOT NULL);
CREATE INDEX queue_lowmarks_ts ON opsmeter.queue_lowmarks (ts);
-- Derived state: registered so pg_dump knows about them, with a filter that dumps no rows. A
-- restored database starts with the row CREATE EXTENSION wrote (-infinity: walk from the head)
-- and the lowmarks the restored operations' triggers write.
SELECT pg_catalog.pg_extension_config_dump('opsmeter.queue_bound', 'WHERE false');
SELECT pg_catalog.pg_extension_config_dump('opsmeter.queue_lowmarks', 'WHERE false');
COMMENT ON TABLE opsmeter.queue_lowmarks IS 'opsmeter queue (internal): the oldest timestamp each statement made claimable (saves, requeues, any INSERT or COPY into opsmeter.operations), until a claim has seen it';

-- Every way an operation becomes claimable leaves a lowmark: any INSERT or COPY, and any UPDATE
-- that makes a row fresh again (requeue, ops_retry_done, a hand-made reset). Row triggers with a
-- WHEN clause, so claims, completions and failures never call them (a statement trigger with a
-- transition table would make every UPDATE of the table capture its rows). A transaction writes
-- a lowmark only for a timestamp older than any it wrote before (tracked in the
-- transaction-local setting opsmeter.queue_lowmark_written), so a batch saved in timestamp
-- order writes one, rows in random order about ln(n).
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
-- A claim (lease_token set) never fires it; a lease cleared by hand while the row stays fresh does.
CREATE TRIGGER queue_lowmark_update AFTER UPDATE ON opsmeter.operations
    FOR EACH ROW
    WHEN (NEW.trustlog_status = 'NOT_TRUSTLOGGED' AND NEW.available_at = '-infinity'
          AND NEW.lease_token IS NULL
          AND (OLD.available_at IS DISTINCT FROM NEW.available_at OR OLD.trustlog_status <> NEW.trustlog_status
               OR OLD.lease_token IS NOT NULL))
    EXECUTE FUNCTION opsmeter.queue_lowmark();

CREATE FUNCTION ops_op_claim(batch integer DEFAULT 100, lease interval DEFAULT '5 minutes')
RETURNS TABLE (
    op_id text, op_actor text, doid text, producer_id text, request_body_hash text,
    response_body_hash text, op_source text, op_code integer, do_prefix text,
    do_repository text, client_ip text, server_ip text, trustlog_status text,
    "timestamp" timestamptz, created_at timestamptz, lease_token uuid,
    lease_expires_at timestamptz)
LANGUAGE plpgsql VOLATILE STRICT
-- generic plans: the statements below have one good plan whatever the arguments, and custom
-- plans would be planned again on every call. A session keeps its generic plans, so one planned
-- while opsmeter.leases or opsmeter.retries was nearly empty would scan them whole for the
-- session's life as they fill (a lease row per claim until autovacuum comes by): index plans only
-- (enable_seqscan = off still scans queue_bound, which has no index).
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
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

CREATE FUNCTION ops_op_completed(op_ids text[], lease_token uuid DEFAULT NULL)
RETURNS SETOF text
LANGUAGE plpgsql VOLATILE
-- generic plans, index plans only: as in ops_op_claim
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
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

CREATE FUNCTION ops_op_complete(op_ids text[], lease_token uuid DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    RETURN (SELECT pg_catalog.count(*)::integer FROM @extschema@.ops_op_completed($1, $2));
END
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
"#,
    name = "queue_tables",
    requires = ["daily_stats_tables"]
);

fn text_array(v: Vec<Option<String>>) -> DatumWithOid<'static> {
    v.into()
}

/// Writes checked operations in one INSERT; an op_id already in the table is a 23505 error
/// naming it (and where it was in the input), which rolls the whole call back. Notifies
/// [`CHANNEL`] when claimable operations were saved. Returns how many were written.
fn save(ops: Vec<Operation>, place: impl Fn(usize) -> String) -> i64 {
    let n = ops.len();
    if n == 0 {
        return 0;
    }
    // in timestamp order (those without one, stamped now, last), so the lowmark trigger writes
    // one row for the batch; `place` still names elements by their index in the input
    let mut ops: Vec<(usize, Operation)> = ops.into_iter().enumerate().collect();
    ops.sort_by_key(|(_, o)| (o.timestamp.is_none(), o.timestamp));
    let mut cols: [Vec<Option<String>>; 12] = Default::default();
    let mut code = Vec::with_capacity(n);
    let mut ts = Vec::with_capacity(n);
    let mut claimable = 0i64;
    let ids: Vec<(usize, String)> = ops.iter().map(|(i, o)| (*i, o.op_id.clone())).collect();
    for (_, o) in ops {
        if o.trustlog_status == qc::Status::NotTrustlogged {
            claimable += 1;
        }
        let row = [
            Some(o.op_id),
            Some(o.op_actor),
            Some(o.doid),
            Some(o.producer_id),
            o.request_body_hash,
            o.response_body_hash,
            Some(o.op_source),
            Some(o.do_prefix),
            Some(o.do_repository),
            o.client_ip,
            o.server_ip,
            Some(o.trustlog_status.name().to_string()),
        ];
        for (c, v) in cols.iter_mut().zip(row) {
            c.push(v);
        }
        code.push(o.op_code);
        ts.push(o.timestamp.map(tstz));
    }
    let [id, actor, doid, producer, req, resp, source, prefix, repo, cip, sip, status] = cols;
    let inserted: Vec<String> = Spi::get_one_with_args::<Vec<String>>(
        "WITH ins AS (
             INSERT INTO opsmeter.operations
                    (op_id, op_actor, doid, producer_id, request_body_hash, response_body_hash,
                     op_source, op_code, do_prefix, do_repository, client_ip, server_ip,
                     trustlog_status, \"timestamp\", available_at)
             SELECT u.id, u.actor, u.doid, u.producer, u.req, u.resp, u.source, u.code, u.prefix,
                    u.repo, u.cip, u.sip, u.status, coalesce(u.ts, pg_catalog.now()),
                    CASE WHEN u.status = 'NOT_TRUSTLOGGED' THEN '-infinity'::timestamptz END
               FROM ROWS FROM (
                    pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::text[]),
                    pg_catalog.unnest($3::text[]), pg_catalog.unnest($4::text[]),
                    pg_catalog.unnest($5::text[]), pg_catalog.unnest($6::text[]),
                    pg_catalog.unnest($7::text[]), pg_catalog.unnest($8::int4[]),
                    pg_catalog.unnest($9::text[]), pg_catalog.unnest($10::text[]),
                    pg_catalog.unnest($11::text[]), pg_catalog.unnest($12::text[]),
                    pg_catalog.unnest($13::text[]), pg_catalog.unnest($14::timestamptz[]))
                    AS u(id, actor, doid, producer, req, resp, source, code, prefix, repo, cip,
                         sip, status, ts)
             ON CONFLICT (op_id) DO NOTHING
             RETURNING op_id)
         SELECT coalesce(pg_catalog.array_agg(op_id), '{}') FROM ins",
        &[
            text_array(id),
            text_array(actor),
            text_array(doid),
            text_array(producer),
            text_array(req),
            text_array(resp),
            text_array(source),
            code.into(),
            text_array(prefix),
            text_array(repo),
            text_array(cip),
            text_array(sip),
            text_array(status),
            ts.into(),
        ],
    )
    .unwrap_or_else(|e| pgrx::error!("opsmeter: could not save operations: {e}"))
    .unwrap_or_default();
    if inserted.len() < n {
        let got: std::collections::HashSet<&str> = inserted.iter().map(String::as_str).collect();
        // the first one in input order that was not written
        if let Some((i, dup)) = ids
            .iter()
            .filter(|(_, id)| !got.contains(id.as_str()))
            .min_by_key(|(i, _)| *i)
        {
            Err::<(), _>(QueueError::Duplicate {
                op_id: dup.clone(),
                at: place(*i),
            })
            .or_raise();
        }
    }
    if claimable > 0 {
        Spi::run_with_args(
            "SELECT pg_catalog.pg_notify($1, $2)",
            &[CHANNEL.into(), claimable.to_string().into()],
        )
        .unwrap_or_else(|e| pgrx::error!("opsmeter: could not notify {CHANNEL}: {e}"));
    }
    n as i64
}

/// Records one operation (a JSON object with the table's columns as keys; see
/// `docs/queue.md`) with the given status. A bad field is an `ERROR` naming it; an op_id that
/// exists is 23505. Notifies `opsmeter_operations` when the operation is NOT_TRUSTLOGGED.
#[pg_extern(volatile, strict)]
#[search_path(pg_catalog, pg_temp)]
fn ops_op_save(op: JsonbText, status: default!(&str, "'NOT_TRUSTLOGGED'")) {
    let op = qc::parse_op_text(&op.0, status).or_raise();
    save(vec![op], |_| "op".into());
}

/// Records a JSON array of operations in one statement; the first bad element rejects the whole
/// batch naming its index and field, nothing written. Each element may carry its own
/// `trustlog_status` (default NOT_TRUSTLOGGED). Returns how many were written.
#[pg_extern(volatile, strict)]
#[search_path(pg_catalog, pg_temp)]
fn ops_op_save_batch(ops: JsonbText) -> i64 {
    let ops = qc::parse_ops_text(&ops.0).or_raise();
    save(ops, |i| format!("ops[{i}]"))
}

/// A uniform draw in [0, 1) from PostgreSQL's own generator (what `random()` uses).
fn uniform() -> f64 {
    // SAFETY: pg_global_prng_state is seeded at backend start; this is how random() reads it.
    unsafe { pg_sys::pg_prng_double(&raw mut pg_sys::pg_global_prng_state) }
}

/// Records a failed attempt of an operation: releases its lease and schedules a retry at
/// now + retry_base · 2^n (n = retries so far), or makes it a dead letter when all
/// `opsmeter.max_retries` retries have failed too. With `lease_token`, only the holder of that
/// lease may fail it. Returns false, changing nothing, for an unknown or completed operation,
/// a dead letter, or a lease that is no longer held.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn ops_op_fail(
    op_id: Option<&str>,
    error: Option<&str>,
    lease_token: default!(Option<Uuid>, "NULL"),
) -> bool {
    let Some(op_id) = op_id else {
        return false;
    };
    let policy = crate::gucs::retry_policy().or_raise();
    let row = Spi::connect_mut(|c| {
        let mut rows = c.update(
            "SELECT o.lease_token, r.retry_count, r.retry_status
               FROM opsmeter.operations o
               LEFT JOIN opsmeter.retries r ON r.op_id = o.op_id
              WHERE o.op_id = $1 AND o.trustlog_status = 'NOT_TRUSTLOGGED'
                FOR UPDATE OF o",
            Some(1),
            &[op_id.into()],
        )?;
        match rows.next() {
            None => Ok(None),
            Some(r) => Ok(Some((
                r.get::<Uuid>(1)?,
                r.get::<i32>(2)?,
                r.get::<String>(3)?,
            ))),
        }
    })
    .unwrap_or_else(|e: pgrx::spi::Error| pgrx::error!("opsmeter: could not read {op_id}: {e}"));
    let Some((held_by, retry_count, retry_status)) = row else {
        return false;
    };
    if lease_token.is_some() && held_by != lease_token {
        return false;
    }
    if retry_status.as_deref().and_then(RetryStatus::parse) == Some(RetryStatus::DeadLetter) {
        return false;
    }
    let f = qc::on_failure(retry_count, &policy, uniform());
    Spi::run_with_args(
        "WITH t AS (SELECT pg_catalog.clock_timestamp() AS now),
         r AS (
             INSERT INTO opsmeter.retries AS r
                    (op_id, retry_count, retry_status, last_retry_at, next_retry_at, error_message,
                     created_at, updated_at)
             SELECT $1, $2, $3, NULL, t.now + $4, $5, t.now, t.now FROM t
             ON CONFLICT (op_id) DO UPDATE
                SET retry_count = EXCLUDED.retry_count, retry_status = EXCLUDED.retry_status,
                    last_retry_at = EXCLUDED.updated_at, next_retry_at = EXCLUDED.next_retry_at,
                    error_message = EXCLUDED.error_message, updated_at = EXCLUDED.updated_at)
         UPDATE opsmeter.operations o
            SET lease_token = NULL, lease_expires_at = NULL,
                available_at = coalesce((SELECT t.now + $4 FROM t), 'infinity')
          WHERE o.op_id = $1",
        &[
            op_id.into(),
            f.retry_count.into(),
            f.status.name().into(),
            f.delay_us.map(Interval::from_micros).into(),
            error.into(),
        ],
    )
    .unwrap_or_else(|e| pgrx::error!("opsmeter: could not record the failure of {op_id}: {e}"));
    true
}

fn param(p: &Param) -> DatumWithOid<'static> {
    match p {
        Param::Text(s) => s.clone().into(),
        Param::Int(i) => (*i).into(),
        Param::Time(t) => tstz(*t).into(),
    }
}

fn plan(
    filter: Option<JsonbText>,
    page_size: Option<i32>,
    page_number: Option<i32>,
    order_by: Option<&str>,
    descending: Option<bool>,
) -> qc::QueryPlan {
    qc::plan_query(
        "opsmeter.operations",
        filter.as_ref().map(|f| f.0.as_str()),
        page_size,
        page_number,
        order_by,
        descending,
    )
    .or_raise()
}

fn count_matching(plan: &qc::QueryPlan) -> i64 {
    let args: Vec<_> = plan.params.iter().map(param).collect();
    Spi::get_one_with_args::<i64>(&plan.count_sql, &args)
        .unwrap_or_else(|e| pgrx::error!("opsmeter: could not count operations: {e}"))
        .unwrap_or(0)
}

/// How many operations match a filter (the keys of `ops_operations_query`).
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
fn ops_operations_count(filter: default!(Option<JsonbText>, "'{}'")) -> i64 {
    count_matching(&plan(filter, None, None, None, None))
}

type OperationRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    i32,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    TimestampWithTimeZone,
    TimestampWithTimeZone,
    i64,
    i64,
);

/// A page of operations matching a filter (the seed's OperationQueryRequest fields as JSON
/// keys), ordered by `created_at`, `timestamp` or `op_id` (anything else is 22023) and then
/// op_id; page_size clamped to 1 .. 1000, page_number from 1. Every row carries the total
/// number of matches and of pages (`ops_operations_count` gives the total alone).
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn ops_operations_query(
    filter: default!(Option<JsonbText>, "'{}'"),
    page_size: default!(Option<i32>, 20),
    page_number: default!(Option<i32>, 1),
    order_by: default!(Option<&str>, "'created_at'"),
    descending: default!(Option<bool>, false),
) -> TableIterator<
    'static,
    (
        name!(op_id, String),
        name!(op_actor, String),
        name!(doid, String),
        name!(producer_id, String),
        name!(request_body_hash, Option<String>),
        name!(response_body_hash, Option<String>),
        name!(op_source, String),
        name!(op_code, i32),
        name!(do_prefix, String),
        name!(do_repository, String),
        name!(client_ip, Option<String>),
        name!(server_ip, Option<String>),
        name!(trustlog_status, String),
        name!(timestamp, TimestampWithTimeZone),
        name!(created_at, TimestampWithTimeZone),
        name!(total, i64),
        name!(total_pages, i64),
    ),
> {
    let plan = plan(filter, page_size, page_number, order_by, descending);
    let total = count_matching(&plan);
    let pages = qc::total_pages(total, plan.page_size);
    let mut args: Vec<_> = plan.params.iter().map(param).collect();
    args.push(i64::from(plan.page_size).into());
    args.push(plan.offset.into());
    let rows: Vec<OperationRow> = Spi::connect(|c| {
        let mut out = Vec::new();
        for r in c.select(&plan.page_sql, None, &args)? {
            let s = |i: usize| -> Result<String, pgrx::spi::Error> {
                Ok(r.get::<String>(i)?.unwrap_or_default())
            };
            let t = |i: usize| -> Result<TimestampWithTimeZone, pgrx::spi::Error> {
                Ok(r.get::<TimestampWithTimeZone>(i)?
                    .unwrap_or_else(|| tstz(0)))
            };
            out.push((
                s(1)?,
                s(2)?,
                s(3)?,
                s(4)?,
                r.get::<String>(5)?,
                r.get::<String>(6)?,
                s(7)?,
                r.get::<i32>(8)?.unwrap_or(0),
                s(9)?,
                s(10)?,
                r.get::<String>(11)?,
                r.get::<String>(12)?,
                s(13)?,
                t(14)?,
                t(15)?,
                total,
                pages,
            ));
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .unwrap_or_else(|e| pgrx::error!("opsmeter: could not query operations: {e}"));
    TableIterator::new(rows)
}

/// The queue at a glance: operations not yet trustlogged, of them claimable now (`pending`,
/// expired leases included), under a live lease, waiting for a retry, dead letters; the age of
/// the oldest one still to be done (dead letters aside); and the cursor lag, now minus the
/// oldest cursor value that is an RFC 3339 time (NULL when no cursor holds one).
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn ops_queue_stats() -> TableIterator<
    'static,
    (
        name!(not_trustlogged, i64),
        name!(pending, i64),
        name!(leased, i64),
        name!(retrying, i64),
        name!(dead_letters, i64),
        name!(oldest_pending_age, Option<Interval>),
        name!(cursor_lag, Option<Interval>),
    ),
> {
    let (counts, cursors) = Spi::connect(|c| {
        let r = c
            .select(
                "WITH t AS (SELECT pg_catalog.clock_timestamp() AS now)
                 SELECT pg_catalog.count(o.op_id),
                        pg_catalog.count(*) FILTER (WHERE o.available_at <= t.now
                                                      AND (o.lease_token IS NULL OR o.lease_expires_at <= t.now)),
                        pg_catalog.count(*) FILTER (WHERE o.lease_token IS NOT NULL AND o.lease_expires_at > t.now),
                        pg_catalog.count(*) FILTER (WHERE o.lease_token IS NULL AND o.available_at > t.now
                                                      AND o.available_at < 'infinity'),
                        pg_catalog.count(*) FILTER (WHERE o.available_at = 'infinity'),
                        t.now - pg_catalog.min(o.\"timestamp\") FILTER (WHERE o.available_at < 'infinity'),
                        t.now
                   FROM t LEFT JOIN opsmeter.operations o ON o.trustlog_status = 'NOT_TRUSTLOGGED'
                  GROUP BY t.now",
                None,
                &[],
            )?
            .first();
        let counts = (
            r.get::<i64>(1)?.unwrap_or(0),
            r.get::<i64>(2)?.unwrap_or(0),
            r.get::<i64>(3)?.unwrap_or(0),
            r.get::<i64>(4)?.unwrap_or(0),
            r.get::<i64>(5)?.unwrap_or(0),
            r.get::<Interval>(6)?,
            r.get::<TimestampWithTimeZone>(7)?.map(us).unwrap_or(0),
        );
        let mut cursors = Vec::new();
        for row in c.select("SELECT cursor_value FROM opsmeter.cursors", None, &[])? {
            cursors.push(row.get::<String>(1)?.unwrap_or_default());
        }
        Ok::<_, pgrx::spi::Error>((counts, cursors))
    })
    .unwrap_or_else(|e| pgrx::error!("opsmeter: could not read the queue: {e}"));
    let (all, pending, leased, retrying, dead, oldest, now_us) = counts;
    let lag = cursors
        .iter()
        .filter_map(|v| crate::cores::records::parse_rfc3339(v.trim()).ok())
        .min()
        .map(|oldest_cursor| Interval::from_micros(now_us - oldest_cursor));
    TableIterator::once((all, pending, leased, retrying, dead, oldest, lag))
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::pgrx_tests::{message_of, sqlstate_of};
    use pgrx::prelude::*;

    fn one<T: pgrx::FromDatum + pgrx::IntoDatum>(sql: &str) -> Option<T> {
        Spi::get_one::<T>(sql).unwrap()
    }

    fn count(sql: &str) -> i64 {
        one::<i64>(sql).unwrap_or(-1)
    }

    /// `n` operations q-1 .. q-n with timestamps one second apart from 2026-01-01 (saved in
    /// reverse order, so the table's physical order is not the claim order).
    fn save_ops(n: i64) {
        Spi::run(&format!(
            "SELECT ops_op_save_batch((SELECT jsonb_agg(jsonb_build_object(
                 'op_id', 'q-' || i, 'op_actor', 'actor-' || (i % 3), 'doid', '10.1/' || i,
                 'op_code', i % 4,
                 'timestamp', to_char(TIMESTAMPTZ '2026-01-01 00:00+00' + i * interval '1 second',
                                      'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')) ORDER BY i DESC)
               FROM generate_series(1, {n}) i))"
        ))
        .unwrap();
    }

    fn claimed(batch: i32, lease: &str) -> Vec<String> {
        one::<Vec<String>>(&format!(
            "SELECT coalesce(array_agg(op_id ORDER BY \"timestamp\"), '{{}}') FROM ops_op_claim({batch}, '{lease}')"
        ))
        .unwrap()
    }

    /// Claims hand out the oldest first, one token per call, and never the same operation
    /// twice while its lease lives.
    #[pg_test]
    fn claims_are_oldest_first_and_disjoint() {
        save_ops(10);
        let tokens = count(
            "WITH c AS (SELECT * FROM ops_op_claim(4, '5 minutes'))
             SELECT count(DISTINCT lease_token) FROM c",
        );
        assert_eq!(tokens, 1);
        assert_eq!(claimed(3, "5 minutes"), vec!["q-5", "q-6", "q-7"]);
        assert_eq!(claimed(100, "5 minutes"), vec!["q-8", "q-9", "q-10"]);
        assert!(claimed(100, "5 minutes").is_empty());
        assert_eq!(
            count("SELECT leased FROM ops_queue_stats()"),
            10,
            "every operation is under a live lease"
        );
    }

    /// An expired lease makes the operation claimable again; the first lease's token then no
    /// longer completes it, the new one does, exactly once.
    #[pg_test]
    fn an_expired_lease_is_claimed_again() {
        save_ops(1);
        let first =
            one::<String>("SELECT lease_token::text FROM ops_op_claim(1, '2 seconds')").unwrap();
        assert!(
            claimed(1, "5 minutes").is_empty(),
            "the lease is still live"
        );
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM opsmeter.leases WHERE lease_token = '{first}' AND op_ids = '{{q-1}}'"
            )),
            1,
            "the claim records its lease"
        );
        Spi::run("SELECT pg_sleep(2.1)").unwrap();
        let second =
            one::<String>("SELECT lease_token::text FROM ops_op_claim(1, '5 minutes')").unwrap();
        assert_ne!(first, second);
        // the expired lease holds nothing now: its row is gone, the new lease has one
        assert_eq!(
            count("SELECT count(*) FROM opsmeter.leases"),
            1,
            "one lease row"
        );
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM opsmeter.leases WHERE lease_token = '{second}'"
            )),
            1,
            "and it is the new lease's"
        );
        assert_eq!(
            count(&format!(
                "SELECT ops_op_complete('{{q-1}}', '{first}')::int8"
            )),
            0
        );
        assert_eq!(
            count(&format!(
                "SELECT ops_op_complete('{{q-1}}', '{second}')::int8"
            )),
            1
        );
        assert_eq!(
            count(&format!(
                "SELECT ops_op_complete('{{q-1}}', '{second}')::int8"
            )),
            0
        );
        assert_eq!(count("SELECT ops_op_complete('{q-1}')::int8"), 0);
        assert_eq!(
            one::<String>("SELECT trustlog_status FROM opsmeter.operations WHERE op_id = 'q-1'")
                .as_deref(),
            Some("TRUSTLOGGED")
        );
        assert_eq!(
            count("SELECT count(*) FROM opsmeter.leases"),
            0,
            "completing all of a lease with its token removes its row"
        );
    }

    /// A lease writes no indexed column, so in a page with room (fillfactor 50) it is a HOT
    /// update; the queue's counts read the lease from lease_expires_at.
    #[pg_test]
    fn a_lease_is_a_hot_update() {
        save_ops(20);
        let hot = "SELECT pg_stat_get_xact_tuples_hot_updated('opsmeter.operations'::regclass)";
        let before = count(hot);
        let token =
            one::<String>("SELECT min(lease_token::text) FROM ops_op_claim(10, '5 minutes')")
                .unwrap();
        assert_eq!(count(hot) - before, 10, "all ten leases are HOT updates");
        assert_eq!(
            count("SELECT count(*) FROM opsmeter.operations WHERE lease_token IS NOT NULL AND available_at = '-infinity'"),
            10
        );
        assert_eq!(
            one::<String>(
                "SELECT format('%s %s %s %s', not_trustlogged, pending, leased, retrying) FROM ops_queue_stats()"
            )
            .as_deref(),
            Some("20 10 10 0")
        );
        assert_eq!(
            count(&format!(
                "SELECT ops_op_complete((SELECT array_agg(op_id) FROM opsmeter.operations WHERE lease_token = '{token}'), '{token}')::int8"
            )),
            10
        );
        assert_eq!(
            one::<String>(
                "SELECT format('%s %s %s', not_trustlogged, pending, leased) FROM ops_queue_stats()"
            )
            .as_deref(),
            Some("10 10 0")
        );
        assert_eq!(count("SELECT count(*) FROM opsmeter.leases"), 0);
    }

    /// The default schedule: retries after 1, 2, 4, 8, 16 × retry_base, then a dead letter on
    /// the sixth failure; a dead letter is never claimed until it is requeued.
    #[pg_test]
    fn failures_back_off_then_dead_letter() {
        save_ops(1);
        Spi::run("SET LOCAL opsmeter.retry_base = '1 hour'").unwrap();
        let token = one::<String>("SELECT lease_token::text FROM ops_op_claim(1)").unwrap();
        assert_eq!(
            one::<bool>(&format!(
                "SELECT ops_op_fail('q-1', 'upstream 503', '{token}')"
            )),
            Some(true)
        );
        // the lease is released and the retry is not due yet
        assert!(claimed(1, "5 minutes").is_empty());
        let mut delays = Vec::new();
        for attempt in 1..=6 {
            if attempt > 1 {
                assert_eq!(
                    one::<bool>(&format!("SELECT ops_op_fail('q-1', 'err {attempt}')")),
                    Some(true)
                );
            }
            delays.push(
                one::<String>(
                    "SELECT coalesce((next_retry_at - updated_at)::text, 'dead') || ' ' || retry_count || ' ' || retry_status
                       FROM opsmeter.retries WHERE op_id = 'q-1'",
                )
                .unwrap(),
            );
        }
        assert_eq!(
            delays,
            vec![
                "01:00:00 0 PENDING",
                "02:00:00 1 RETRYING",
                "04:00:00 2 RETRYING",
                "08:00:00 3 RETRYING",
                "16:00:00 4 RETRYING",
                "dead 5 DEAD_LETTER",
            ]
        );
        assert_eq!(
            one::<String>("SELECT error_message FROM opsmeter.retries WHERE op_id = 'q-1'")
                .as_deref(),
            Some("err 6")
        );
        // a dead letter cannot fail again, is not due, and is not claimed
        assert_eq!(
            one::<bool>("SELECT ops_op_fail('q-1', 'again')"),
            Some(false)
        );
        assert_eq!(count("SELECT count(*) FROM ops_retry_due(10)"), 0);
        assert_eq!(count("SELECT dead_letters FROM ops_queue_stats()"), 1);
        assert!(claimed(1, "5 minutes").is_empty());
        assert_eq!(count("SELECT ops_op_requeue('{q-1, q-404}')::int8"), 1);
        assert_eq!(count("SELECT count(*) FROM opsmeter.retries"), 0);
        assert_eq!(claimed(1, "5 minutes"), vec!["q-1"]);
    }

    /// The claim's walk starts at the oldest fresh operation it last saw; an operation saved
    /// later with an older timestamp, or one whose claim rolled back, is still claimed.
    #[pg_test]
    fn the_walk_start_never_skips_an_operation() {
        save_ops(10);
        assert_eq!(
            count("SELECT count(*) FROM opsmeter.queue_lowmarks"),
            1,
            "a batch (given newest first) is written in timestamp order: one lowmark"
        );
        assert_eq!(
            claimed(5, "5 minutes"),
            vec!["q-1", "q-2", "q-3", "q-4", "q-5"]
        );
        assert_eq!(
            one::<String>("SELECT to_char(claim_from AT TIME ZONE 'UTC', 'HH24:MI:SS') FROM opsmeter.queue_bound").as_deref(),
            Some("00:00:06"),
            "the walk now starts at q-6"
        );
        assert_eq!(count("SELECT count(*) FROM opsmeter.queue_lowmarks"), 0);
        assert_eq!(claimed(100, "5 minutes").len(), 5);
        assert_eq!(
            one::<String>("SELECT claim_from::text FROM opsmeter.queue_bound").as_deref(),
            Some("infinity")
        );
        // saved later, timestamped earlier than anything claimed
        Spi::run(r#"SELECT ops_op_save('{"op_id": "late", "timestamp": "2025-06-01T00:00:00Z"}')"#)
            .unwrap();
        assert_eq!(claimed(100, "5 minutes"), vec!["late"]);
        // a claim that rolls back (with the bound it moved) leaves its operations claimable
        Spi::run(r#"SELECT ops_op_save_batch('[{"op_id": "r-1", "timestamp": "2024-01-01T00:00:00Z"},
                                               {"op_id": "r-2", "timestamp": "2024-01-01T00:00:01Z"}]')"#)
            .unwrap();
        Spi::run(
            "DO $$ BEGIN
                 PERFORM * FROM ops_op_claim(10);
                 RAISE EXCEPTION 'worker died';
             EXCEPTION WHEN OTHERS THEN NULL;
             END $$",
        )
        .unwrap();
        assert_eq!(claimed(100, "5 minutes"), vec!["r-1", "r-2"]);
        // rows written by hand: an INSERT (as COPY or a bulk load would), and a completed
        // operation reset to claimable by UPDATE (q-1 was claimed above: a reset clears the
        // lease too, or the operation waits for its lease to expire like any leased one)
        Spi::run(
            "INSERT INTO opsmeter.operations (op_id, \"timestamp\") VALUES ('bulk-1', '2023-01-01 00:00+00');
             UPDATE opsmeter.operations SET trustlog_status = 'TRUSTLOGGED', available_at = NULL,
                    lease_token = NULL, lease_expires_at = NULL WHERE op_id = 'q-1';
             UPDATE opsmeter.operations SET trustlog_status = 'NOT_TRUSTLOGGED', available_at = '-infinity' WHERE op_id = 'q-1'",
        )
        .unwrap();
        assert_eq!(claimed(100, "5 minutes"), vec!["bulk-1", "q-1"]);
    }

    /// A due retry is claimed again, and completing it removes its retry row.
    #[pg_test]
    fn a_due_retry_is_claimed_and_completion_clears_it() {
        save_ops(2);
        Spi::run("SET LOCAL opsmeter.retry_base = '20 milliseconds'").unwrap();
        assert_eq!(claimed(1, "5 minutes"), vec!["q-1"]);
        assert_eq!(one::<bool>("SELECT ops_op_fail('q-1', 'boom')"), Some(true));
        Spi::run("SELECT pg_sleep(0.05)").unwrap();
        assert_eq!(count("SELECT count(*) FROM ops_retry_due(10)"), 1);
        // the due retry (older) and the fresh q-2 are both claimable, oldest first
        assert_eq!(claimed(5, "5 minutes"), vec!["q-1", "q-2"]);
        assert_eq!(count("SELECT ops_op_complete('{q-1, q-2}')::int8"), 2);
        assert_eq!(count("SELECT count(*) FROM opsmeter.retries"), 0);
        assert_eq!(count("SELECT not_trustlogged FROM ops_queue_stats()"), 0);
    }

    /// A lease that was taken over, or a completed operation, cannot be failed.
    #[pg_test]
    fn failing_what_is_not_held_changes_nothing() {
        save_ops(2);
        Spi::run("SELECT * FROM ops_op_claim(2, '5 minutes')").unwrap();
        let q1 = "SELECT o::text FROM opsmeter.operations o WHERE op_id = 'q-1'";
        let before = one::<String>(q1);
        assert!(before.is_some());
        assert_eq!(
            one::<bool>("SELECT ops_op_fail('q-1', 'x', '00000000-0000-0000-0000-000000000000')"),
            Some(false)
        );
        assert_eq!(one::<bool>("SELECT ops_op_fail('nope', 'x')"), Some(false));
        assert_eq!(count("SELECT ops_op_complete('{q-2}')::int8"), 1);
        assert_eq!(one::<bool>("SELECT ops_op_fail('q-2', 'x')"), Some(false));
        assert_eq!(count("SELECT count(*) FROM opsmeter.retries"), 0);
        // q-1 is exactly as the claim left it: same lease, same availability
        assert_eq!(one::<String>(q1), before);
        assert_eq!(
            one::<String>("SELECT trustlog_status FROM opsmeter.operations WHERE op_id = 'q-2'")
                .as_deref(),
            Some("TRUSTLOGGED")
        );
    }

    /// Every rejected save writes nothing and says why with the right SQLSTATE.
    #[pg_test]
    fn rejected_saves_write_nothing() {
        save_ops(1);
        let cases = [
            (
                r#"[{"op_id": "n-1"}, {"op_id": "q-1"}]"#,
                "23505",
                "operation op_id \"q-1\" already exists (ops[1])",
            ),
            (
                r#"[{"op_id": "n-1"}, {"op_id": "n-1"}]"#,
                "23505",
                "given twice",
            ),
            (
                r#"[{"op_id": "n-1"}, {"op_actor": "a"}]"#,
                "22023",
                "ops[1].op_id is missing",
            ),
            (
                r#"[{"op_id": "n-1", "op_code": "7x"}]"#,
                "22P02",
                "ops[0].op_code is not an integer",
            ),
            (
                r#"[{"op_id": "n-1", "op_code": 3000000000}]"#,
                "22003",
                "ops[0].op_code is out of range",
            ),
            (
                r#"[{"op_id": "n-1", "timestamp": "2026-13-01T00:00:00Z"}]"#,
                "22007",
                "ops[0].timestamp is not an RFC 3339 timestamp",
            ),
            (r#"{"op_id": "n-1"}"#, "22023", "ops must be a JSON array"),
        ];
        for (json, state, msg) in cases {
            let stmt = format!("PERFORM ops_op_save_batch('{json}')");
            assert_eq!(sqlstate_of(&stmt), state, "{json}");
            assert!(
                message_of(&stmt).contains(msg),
                "{json}: {}",
                message_of(&stmt)
            );
        }
        assert_eq!(
            sqlstate_of("PERFORM ops_op_save('{\"op_id\": \"q-1\"}')"),
            "23505"
        );
        assert_eq!(
            sqlstate_of("PERFORM ops_op_save('{\"op_id\": \"n-2\"}', 'DONE')"),
            "22023"
        );
        assert_eq!(count("SELECT count(*) FROM opsmeter.operations"), 1);
        // a TRUSTLOGGED save is a record, never claimable
        Spi::run("SELECT ops_op_save('{\"op_id\": \"n-3\"}', 'TRUSTLOGGED')").unwrap();
        assert_eq!(claimed(10, "1 minute"), vec!["q-1"]);
    }

    /// Bad claim arguments and settings are errors naming the accepted range.
    #[pg_test]
    fn bad_arguments_and_settings() {
        assert_eq!(sqlstate_of("PERFORM * FROM ops_op_claim(0)"), "22023");
        assert!(message_of("PERFORM * FROM ops_op_claim(10001)").contains("between 1 and 10000"));
        assert_eq!(
            sqlstate_of("PERFORM * FROM ops_op_claim(1, '0 seconds')"),
            "22023"
        );
        assert_eq!(
            sqlstate_of("PERFORM * FROM ops_op_claim(1, '8 days')"),
            "22023"
        );
        assert_eq!(sqlstate_of("SET opsmeter.retry_base = '1 month'"), "22023");
        assert_eq!(sqlstate_of("SET opsmeter.retry_base = '0'"), "22023");
        assert_eq!(sqlstate_of("SET opsmeter.max_retries = -1"), "22023");
        assert_eq!(sqlstate_of("SET opsmeter.retry_jitter = 1.5"), "22023");
        assert_eq!(
            sqlstate_of("PERFORM * FROM ops_operations_query('{}', 10, 1, 'doid')"),
            "22023"
        );
        assert_eq!(
            sqlstate_of("PERFORM * FROM ops_operations_query('{\"opid\": 1}')"),
            "22023"
        );
        assert_eq!(
            sqlstate_of("PERFORM * FROM ops_operations_query('{\"time_from\": \"today\"}')"),
            "22007"
        );
    }

    /// The interval parser behind opsmeter.retry_base agrees with PostgreSQL's interval input.
    #[pg_test]
    fn retry_base_reads_intervals_like_postgres() {
        for text in [
            "1 minute",
            "1min",
            "90s",
            "500 milliseconds",
            "1.5 hours",
            "2 days 3 hours",
            "00:01:30",
            "01:02",
            "60",
            "250 us",
            "1 week",
            "1 hour -30 minutes",
            "3 mins 4 secs",
        ] {
            let pg = one::<i64>(&format!(
                "SELECT (EXTRACT(EPOCH FROM '{text}'::interval) * 1000000)::int8"
            ));
            assert_eq!(
                crate::cores::queue::parse_interval_us(text).ok(),
                pg,
                "{text}"
            );
        }
    }

    /// With jitter, every retry lands in [delay·(1 − j), delay].
    #[pg_test]
    fn jitter_shortens_within_its_band() {
        save_ops(50);
        Spi::run("SET LOCAL opsmeter.retry_base = '1 hour'; SET LOCAL opsmeter.retry_jitter = 0.5")
            .unwrap();
        Spi::run("SELECT ops_op_fail('q-' || i, 'x') FROM generate_series(1, 50) i").unwrap();
        let (lo, hi): (Option<f64>, Option<f64>) = Spi::get_two(
            "SELECT min(EXTRACT(EPOCH FROM next_retry_at - updated_at))::float8,
                    max(EXTRACT(EPOCH FROM next_retry_at - updated_at))::float8 FROM opsmeter.retries",
        )
        .unwrap();
        let (lo, hi) = (lo.unwrap(), hi.unwrap());
        assert!(lo >= 1800.0 && hi <= 3600.0, "{lo} .. {hi}");
        assert!(
            hi - lo > 60.0,
            "50 draws spread over the band: {lo} .. {hi}"
        );
    }

    /// Query filters: LIKE metacharacters in the input match themselves; pages and totals.
    #[pg_test]
    fn query_filters_and_pages() {
        save_ops(25);
        Spi::run(
            r#"SELECT ops_op_save_batch('[{"op_id": "pct", "doid": "50%_off", "timestamp": "2025-01-01T00:00:00Z"},
                                        {"op_id": "und", "doid": "50x_off", "timestamp": "2025-01-01T00:00:01Z"}]')"#,
        )
        .unwrap();
        assert_eq!(
            one::<Vec<String>>(
                "SELECT array_agg(op_id) FROM ops_operations_query('{\"doid\": \"%_\"}')"
            )
            .unwrap(),
            vec!["pct"]
        );
        assert_eq!(
            count("SELECT ops_operations_count('{\"doid\": \"_off\"}')"),
            2
        );
        assert_eq!(
            count("SELECT ops_operations_count('{\"op_actor\": \"actor-1\", \"op_code\": 1}')"),
            3
        );
        assert_eq!(
            count("SELECT ops_operations_count('{\"op_actor\": \"\"}')"),
            27
        );
        assert_eq!(
            count("SELECT ops_operations_count('{\"time_from\": \"2026-01-01T00:00:05Z\", \"time_to\": \"2026-01-01T00:00:09Z\"}')"),
            5
        );
        let page: Vec<String> = one::<Vec<String>>(
            "SELECT array_agg(op_id || ':' || total || ':' || total_pages)
               FROM ops_operations_query('{}', 10, 3, 'timestamp', false)",
        )
        .unwrap();
        assert_eq!(
            page,
            ["q-19", "q-20", "q-21", "q-22", "q-23", "q-24", "q-25"]
                .map(|id| format!("{id}:27:3"))
                .to_vec()
        );
        // clamps: page_size 0 is 1, 5000 is 1000; page 0 is page 1
        assert_eq!(
            count("SELECT count(*) FROM ops_operations_query('{}', 0, 0)"),
            1
        );
        assert_eq!(
            count("SELECT max(total_pages) FROM ops_operations_query('{}', 0)"),
            27
        );
        assert_eq!(
            count("SELECT count(*) FROM ops_operations_query('{}', 5000)"),
            27
        );
        assert_eq!(
            one::<String>("SELECT op_id FROM ops_operations_query('{}', 1, 1, 'op_id', true)")
                .as_deref(),
            Some("und")
        );
    }

    /// Cursors keep the seed's semantics: missing is '', init overwrites unless asked not to.
    #[pg_test]
    fn cursors() {
        assert_eq!(
            one::<String>("SELECT ops_cursor_get('c')").as_deref(),
            Some("")
        );
        assert_eq!(
            one::<String>("SELECT ops_cursor_init('c', 'a')").as_deref(),
            Some("a")
        );
        assert_eq!(
            one::<String>("SELECT ops_cursor_init('c', 'b')").as_deref(),
            Some("b")
        );
        assert_eq!(
            one::<String>("SELECT ops_cursor_init('c', 'z', true)").as_deref(),
            Some("b")
        );
        Spi::run("SELECT ops_cursor_set('c', '2026-01-01T00:00:00Z')").unwrap();
        assert_eq!(
            one::<String>("SELECT ops_cursor_get('c')").as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
        assert_eq!(
            one::<bool>("SELECT cursor_lag > now() - TIMESTAMPTZ '2026-01-01 00:00+00' - interval '1 minute' FROM ops_queue_stats()"),
            Some(true)
        );
    }
}

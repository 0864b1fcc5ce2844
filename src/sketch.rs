//! `ops_sketch` (SPEC §1): the SQL type, its aggregates and accessors. The algorithm is
//! [`crate::cores::sketch`]; this file moves bytes between PostgreSQL and it.
//!
//! One varlena type carries two forms, told apart by the first payload byte:
//! - the **compact** canonical encoding (version byte 1): what tables store and `ops_sketch_out`
//!   prints;
//! - the **working** buffer (magic 0xD6): the aggregates' transition state, a dense layout with
//!   slack that the transition function updates in place.
//!
//! The aggregates' transition type is `ops_sketch` itself — a real type, not `internal` — so
//! Citus can push partial aggregation down to shards and ship partial states through the text
//! form. Speed comes from updating the state in place: when `AggCheckCallContext` says we run
//! inside an aggregate, the state datum belongs to the aggregate's memory context and
//! PostgreSQL allows modifying it; returning the same pointer costs no copy. A state that must
//! grow is rebuilt in the per-call memory context and returned; the executor copies it into the
//! aggregate context and frees the old one (growth is rare: windows grow with slack).

use crate::cores::sketch::{self as dd, AddError, Sketch, SketchError, WORKING_MAGIC};
use crate::cores::sketch_pair::{self as sp, PairAddError, Side};
use crate::error::{OrRaise, SqlError};
use pgrx::fcinfo::{pg_arg_is_null, pg_getarg_datum_raw, pg_return_null};
use pgrx::prelude::*;
use pgrx::{pg_sys, FromDatum, IntoDatum, PgSqlErrorCode};
use std::rc::Rc;

impl SqlError for SketchError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            SketchError::InvalidValue(_)
            | SketchError::AlphaOutOfRange(_)
            | SketchError::AlphaMismatch { .. }
            | SketchError::QuantileOutOfRange(_) => ERRCODE_INVALID_PARAMETER_VALUE,
            SketchError::Parse(_) => ERRCODE_INVALID_TEXT_REPRESENTATION,
            SketchError::Corrupt(_) | SketchError::UnsupportedVersion(_) => {
                ERRCODE_INVALID_BINARY_REPRESENTATION
            }
            SketchError::CountOverflow => ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
            SketchError::BufferTooSmall { .. } => ERRCODE_INTERNAL_ERROR,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// varlena plumbing

const VARHDRSZ: usize = 4;

/// A fresh 4-byte-header varlena with `len` payload bytes, zeroed, in the current memory context.
unsafe fn alloc_varlena(len: usize) -> *mut pg_sys::varlena {
    let total = VARHDRSZ + len;
    if total > 0x3fff_ffff {
        crate::error::raise(
            &SketchError::Corrupt(format!("sketch state of {total} bytes exceeds 1 GB")),
            "ops_sketch",
        );
    }
    unsafe {
        let p = pg_sys::palloc0(total) as *mut pg_sys::varlena;
        pgrx::set_varsize_4b(p, total as i32);
        p
    }
}

/// The payload of a 4-byte-header, uncompressed varlena, mutable.
unsafe fn payload_mut<'a>(p: *mut pg_sys::varlena) -> &'a mut [u8] {
    unsafe {
        let len = pgrx::varsize_4b(p) - VARHDRSZ;
        std::slice::from_raw_parts_mut((p as *mut u8).add(VARHDRSZ), len)
    }
}

/// The payload of any varlena datum, detoasted if needed (the detoasted copy lives in the current
/// memory context). A plain, inline, uncompressed value (always the case for transition states)
/// is read where it is, without the guarded FFI call: this runs once per row.
unsafe fn payload_of<'a>(d: pg_sys::Datum) -> (&'a [u8], *mut pg_sys::varlena) {
    unsafe {
        let raw = d.cast_mut_ptr::<pg_sys::varlena>();
        let p = if pgrx::varatt_is_4b_u(raw) {
            raw
        } else {
            pg_sys::pg_detoast_datum(raw)
        };
        let len = pgrx::varsize_any_exhdr(p);
        let data = pgrx::vardata_any(p) as *const u8;
        (std::slice::from_raw_parts(data, len), p)
    }
}

/// A compact-form datum holding `bytes`.
unsafe fn bytes_datum(bytes: &[u8]) -> pg_sys::Datum {
    unsafe {
        let p = alloc_varlena(bytes.len());
        payload_mut(p).copy_from_slice(bytes);
        pg_sys::Datum::from(p)
    }
}

/// Decodes either form.
fn sketch_from_payload(bytes: &[u8]) -> Result<Sketch, SketchError> {
    match bytes.first() {
        Some(&WORKING_MAGIC) => dd::working_to_sketch(bytes),
        _ => Sketch::decode(bytes),
    }
}

thread_local! {
    /// This backend's last two decoded compact sketches (see [`dd::DecodeCache`]).
    static DECODED: std::cell::RefCell<dd::DecodeCache> = Default::default();
}

/// Decodes either form, a compact one through this backend's decode cache: the accessors of
/// one rollup row read the same stored sketch six times, and a grouping-sets merge passes each
/// input to every set.
fn shared_sketch_from_payload(bytes: &[u8]) -> Result<Rc<Sketch>, SketchError> {
    match bytes.first() {
        Some(&WORKING_MAGIC) => dd::working_to_sketch(bytes).map(Rc::new),
        _ => DECODED.with(|c| c.borrow_mut().decode(bytes)),
    }
}

/// A working-form varlena built from an owned sketch, in the current memory context.
unsafe fn working_varlena_from(s: &Sketch) -> *mut pg_sys::varlena {
    unsafe { bytes_datum(&dd::sketch_to_working(s)).cast_mut_ptr() }
}

/// Initial room for counters in a fresh state (besides its header): 1 024 one-byte counters, a
/// factor of 28 000 in value at the default alpha (1 ms .. 28 s), so a typical latency
/// distribution does not grow more than once or twice; counters widen in place while the
/// used part fits.
const INITIAL_WINDOW_BYTES: usize = 1024;

/// Applies `op` to the working buffer in `state`, growing it (into a new varlena in the current
/// memory context) as often as the core asks. Returns the state to hand back to the executor.
unsafe fn with_growth(
    mut state: *mut pg_sys::varlena,
    mut op: impl FnMut(&mut [u8]) -> Result<(), AddError>,
) -> *mut pg_sys::varlena {
    loop {
        let buf = unsafe { payload_mut(state) };
        match op(buf) {
            Ok(()) => return state,
            Err(AddError::NeedsGrow { suggested_len, .. }) => {
                let grown = unsafe { alloc_varlena(suggested_len) };
                dd::working_grow(buf, unsafe { payload_mut(grown) }).or_raise();
                state = grown;
            }
            Err(AddError::Sketch(e)) => crate::error::raise(&e, "ops_sketch"),
        }
    }
}

/// Whether the call comes from a plain aggregate (not a window aggregate), where PostgreSQL lets
/// a transition function modify its state argument. This is `AggCheckCallContext`'s test done
/// inline: a node-tag read instead of a guarded FFI call on every row.
unsafe fn in_plain_aggregate(fcinfo: pg_sys::FunctionCallInfo) -> bool {
    unsafe {
        let ctx = (*fcinfo).context;
        !ctx.is_null() && (*ctx).type_ == pg_sys::NodeTag::T_AggState
    }
}

/// The transition state from argument 0, ready for in-place updates: the argument itself when
/// it is a working buffer owned by the aggregate, else a working copy in the current context.
/// `alpha` is used for a NULL (first) state.
unsafe fn writable_state(fcinfo: pg_sys::FunctionCallInfo, alpha: f64) -> *mut pg_sys::varlena {
    unsafe {
        if pg_arg_is_null(fcinfo, 0) {
            let p = alloc_varlena(dd::working_min_len() + INITIAL_WINDOW_BYTES);
            dd::working_init(payload_mut(p), alpha).or_raise();
            return p;
        }
        // Hot path, once per row: our own working buffer (always a plain 4-byte-header varlena,
        // never toasted) inside a plain aggregate. No copy.
        if let Some((p, buf)) = aggregate_owned_state(fcinfo) {
            if dd::is_current_working(buf) {
                return p;
            }
        }
        let (bytes, _) = payload_of(pg_getarg_datum_raw(fcinfo, 0));
        // A compact state (the first input of ops_sketch_merge, a state shipped as text by
        // Citus), or a call outside a plain aggregate, where arguments must not be modified.
        let s = shared_sketch_from_payload(bytes).or_raise();
        working_varlena_from(&s)
    }
}

// ---------------------------------------------------------------------------------------------
// Raw V1 functions: type I/O and aggregate support. Declared in SQL below.

macro_rules! v1_info {
    ($finfo:ident) => {
        #[no_mangle]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static pg_sys::Pg_finfo_record {
            static V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }
    };
}

v1_info!(pg_finfo_ops_sketch_in);
/// `ops_sketch_in(cstring)`: the text form (`ddsk1:` + base64 of the compact encoding).
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn ops_sketch_in(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    unsafe {
        let cstr = std::ffi::CStr::from_ptr(pg_getarg_datum_raw(fcinfo, 0).cast_mut_ptr());
        let text = cstr
            .to_str()
            .map_err(|_| SketchError::Parse("not valid UTF-8".into()));
        let s = text.and_then(Sketch::from_text).or_raise();
        bytes_datum(&s.encode())
    }
}

v1_info!(pg_finfo_ops_sketch_out);
/// `ops_sketch_out(ops_sketch)`: the text form of either representation.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn ops_sketch_out(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    unsafe {
        let (bytes, _) = payload_of(pg_getarg_datum_raw(fcinfo, 0));
        let text = sketch_from_payload(bytes).or_raise().to_text();
        let c = std::ffi::CString::new(text).expect("base64 text has no NUL");
        pg_sys::Datum::from(pg_sys::pstrdup(c.as_ptr()))
    }
}

v1_info!(pg_finfo_ops_sketch_recv);
/// `ops_sketch_recv(internal)`: binary input (COPY BINARY, binary protocol): the compact bytes,
/// validated.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn ops_sketch_recv(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    unsafe {
        let buf = pg_getarg_datum_raw(fcinfo, 0).cast_mut_ptr::<pg_sys::StringInfoData>();
        let len = ((*buf).len - (*buf).cursor) as usize;
        let data =
            std::slice::from_raw_parts(((*buf).data as *const u8).add((*buf).cursor as usize), len);
        (*buf).cursor = (*buf).len;
        let s = Sketch::decode(data).or_raise();
        bytes_datum(&s.encode())
    }
}

v1_info!(pg_finfo_ops_sketch_send);
/// `ops_sketch_send(ops_sketch)`: binary output, the compact bytes.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn ops_sketch_send(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    unsafe {
        let (bytes, _) = payload_of(pg_getarg_datum_raw(fcinfo, 0));
        let compact = if bytes.first() == Some(&WORKING_MAGIC) {
            sketch_from_payload(bytes).or_raise().encode()
        } else {
            bytes.to_vec()
        };
        // bytea and ops_sketch share the varlena layout; send is "the bytes".
        bytes_datum(&compact)
    }
}

/// Argument `n`, a non-NULL float8 (passed by value on 64-bit platforms).
unsafe fn float8_arg(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> f64 {
    unsafe { f64::from_bits(pg_getarg_datum_raw(fcinfo, n).value() as u64) }
}

/// For the transition and combine functions: when argument 1 (the value or sketch to add) is
/// NULL it is skipped, and the result is the state unchanged (or still NULL).
unsafe fn skip_null_input(fcinfo: pg_sys::FunctionCallInfo) -> Option<pg_sys::Datum> {
    unsafe {
        if !pg_arg_is_null(fcinfo, 1) {
            None
        } else if pg_arg_is_null(fcinfo, 0) {
            Some(pg_return_null(fcinfo))
        } else {
            Some(pg_getarg_datum_raw(fcinfo, 0))
        }
    }
}

/// Shared body of the two transition functions: argument 1 is the value, `alpha` the accuracy.
unsafe fn trans(fcinfo: pg_sys::FunctionCallInfo, alpha: f64) -> pg_sys::Datum {
    unsafe {
        if let Some(unchanged) = skip_null_input(fcinfo) {
            return unchanged;
        }
        let x = float8_arg(fcinfo, 1);
        let state = writable_state(fcinfo, alpha);
        pg_sys::Datum::from(with_growth(state, |buf| dd::working_add(buf, x)))
    }
}

/// The state argument and its payload, writable in place: when there is one, the call comes
/// from a plain aggregate (which owns the state and lets us modify it) and the state is a plain
/// 4-byte-header varlena (ours always are; anything else is read through `payload_of`). Makes no
/// PostgreSQL call: the per-row fast paths use it, and so do the writable-state helpers and the
/// final functions' in-place flush.
#[inline(always)]
unsafe fn aggregate_owned_state<'a>(
    fcinfo: pg_sys::FunctionCallInfo,
) -> Option<(*mut pg_sys::varlena, &'a mut [u8])> {
    unsafe {
        if pg_arg_is_null(fcinfo, 0) || !in_plain_aggregate(fcinfo) {
            return None;
        }
        let state = pg_getarg_datum_raw(fcinfo, 0).cast_mut_ptr::<pg_sys::varlena>();
        if !pgrx::varatt_is_4b_u(state) {
            return None;
        }
        Some((state, payload_mut(state)))
    }
}

/// The per-row fast path of `ops_sketch(value)`: a non-NULL finite value added in place to a
/// working state that belongs to a plain aggregate, when it fits the state's current windows.
/// It makes no PostgreSQL call (no allocation, no error report), so it needs no pgrx guard;
/// `None` means "take the guarded path", which redoes the work with growth and errors.
///
/// # Safety
/// `fcinfo` must be a valid call frame of `ops_sketch_trans`.
#[inline(always)]
unsafe fn trans_fast(fcinfo: pg_sys::FunctionCallInfo) -> Option<pg_sys::Datum> {
    unsafe {
        if pg_arg_is_null(fcinfo, 1) {
            return None;
        }
        let (state, buf) = aggregate_owned_state(fcinfo)?;
        let x = float8_arg(fcinfo, 1);
        // On error `x` is not added and the buffer holds the same values (the core guarantees
        // it; a state that is not a working buffer of this layout is refused untouched), and
        // the guarded path repeats the add and converts, grows or reports.
        dd::working_add(buf, x).ok()?;
        Some(pg_sys::Datum::from(state))
    }
}

v1_info!(pg_finfo_ops_sketch_trans);
/// `ops_sketch_trans(ops_sketch, float8)`: adds a value at the default alpha.
///
/// Not `#[pg_guard]`ed itself: the row path ([`trans_fast`]) runs under `catch_unwind` and
/// touches nothing of PostgreSQL's, and everything else goes through the guarded
/// [`ops_sketch_trans_guarded`].
#[no_mangle]
pub unsafe extern "C-unwind" fn ops_sketch_trans(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    unsafe { fast_or_guarded(fcinfo, trans_fast, ops_sketch_trans_guarded) }
}

/// A transition function's body: `fast` (the per-row path, which touches nothing of
/// PostgreSQL's) under `catch_unwind`; when it declines or panics, the `#[pg_guard]`ed `guarded`
/// redoes the work with growth and error reports.
#[inline(always)]
unsafe fn fast_or_guarded(
    fcinfo: pg_sys::FunctionCallInfo,
    fast: unsafe fn(pg_sys::FunctionCallInfo) -> Option<pg_sys::Datum>,
    guarded: unsafe extern "C-unwind" fn(pg_sys::FunctionCallInfo) -> pg_sys::Datum,
) -> pg_sys::Datum {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe { fast(fcinfo) }));
    match r {
        Ok(Some(d)) => d,
        _ => unsafe { guarded(fcinfo) },
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn ops_sketch_trans_guarded(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    unsafe { trans(fcinfo, dd::DEFAULT_ALPHA) }
}

v1_info!(pg_finfo_ops_sketch_trans_alpha);
/// `ops_sketch_trans(ops_sketch, float8, alpha float8)`: adds a value at the given alpha, which
/// must be the same on every row of one aggregate.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn ops_sketch_trans_alpha(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    unsafe {
        let alpha = if pg_arg_is_null(fcinfo, 2) {
            dd::DEFAULT_ALPHA
        } else {
            float8_arg(fcinfo, 2)
        };
        if !(dd::MIN_ALPHA..=dd::MAX_ALPHA).contains(&alpha) {
            crate::error::raise(&SketchError::AlphaOutOfRange(alpha), "ops_sketch");
        }
        if !pg_arg_is_null(fcinfo, 0) {
            let (bytes, _) = payload_of(pg_getarg_datum_raw(fcinfo, 0));
            let have = match bytes.first() {
                Some(&WORKING_MAGIC) => dd::working_alpha(bytes).or_raise(),
                _ => sketch_from_payload(bytes).or_raise().alpha(),
            };
            if have.to_bits() != alpha.to_bits() {
                crate::error::raise(
                    &SketchError::AlphaMismatch {
                        left: have,
                        right: alpha,
                    },
                    "ops_sketch",
                );
            }
        }
        trans(fcinfo, alpha)
    }
}

v1_info!(pg_finfo_ops_sketch_combine);
/// `ops_sketch_combine(ops_sketch, ops_sketch)`: merges the second sketch into the first. The
/// combine function of all three aggregates and the transition function of `ops_sketch_merge`.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn ops_sketch_combine(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    unsafe {
        if let Some(unchanged) = skip_null_input(fcinfo) {
            return unchanged;
        }
        let (bytes, _) = payload_of(pg_getarg_datum_raw(fcinfo, 1));
        // A partial state of a parallel or distributed plan into a group's state (a fresh one
        // for the group's first): merged straight from its counters, checked as a decode
        // checks them. (One whose header does not even give a valid alpha takes the decode
        // below, which reports it as a decode does.)
        let direct = dd::is_current_working(bytes)
            .then(|| dd::working_alpha(bytes).ok())
            .flatten()
            .filter(|a| (dd::MIN_ALPHA..=dd::MAX_ALPHA).contains(a));
        if let Some(alpha) = direct {
            let state = writable_state(fcinfo, alpha);
            return pg_sys::Datum::from(with_growth(state, |buf| {
                dd::working_merge_working(buf, bytes, &[])
            }));
        }
        let other = shared_sketch_from_payload(bytes).or_raise();
        if pg_arg_is_null(fcinfo, 0) && bytes.first() == Some(&dd::FORMAT_VERSION) {
            // The first input of a group, in the compact form (it decoded, so it is valid and
            // canonical): it is the merge of itself, byte for byte, so it becomes the state as
            // it is. A group with one input (every group of the finest grouping set of a
            // rollup) then costs a copy instead of a working buffer, a merge and an encode; a
            // second input turns the state into a working buffer (writable_state).
            return bytes_datum(bytes);
        }
        let state = writable_state(fcinfo, other.alpha());
        pg_sys::Datum::from(with_growth(state, |buf| {
            dd::working_merge_sketch(buf, &other)
        }))
    }
}

v1_info!(pg_finfo_ops_sketch_final);
/// `ops_sketch_final(ops_sketch)`: the compact form of the state. Inside an aggregate it may
/// count the state's buffered values into its counters first; that changes no value the state
/// holds.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn ops_sketch_final(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    unsafe {
        if let Some((_, buf)) =
            aggregate_owned_state(fcinfo).filter(|(_, b)| dd::is_current_working(b))
        {
            // Count the buffered values in place, as one batch (instead of one at a time into
            // the decoded sketch): the state holds the same values afterwards, so a final
            // function called again on it (a state shared by two aggregates) reads the same.
            // When the state would have to grow, the rest stay buffered and are counted below.
            let _ = dd::working_flush(buf);
        }
        let original = pg_getarg_datum_raw(fcinfo, 0);
        let (bytes, _) = payload_of(original);
        if bytes.first() != Some(&WORKING_MAGIC) {
            return original;
        }
        // Kept in the decode cache: a rollup merges each hourly sketch into its coarser
        // grouping sets right after this final function made it.
        let s = dd::working_to_sketch(bytes).or_raise();
        DECODED.with(|c| c.borrow_mut().encode_keeping(s, |b| bytes_datum(b)))
    }
}

extension_sql!(
    r#"
CREATE TYPE ops_sketch;
CREATE FUNCTION ops_sketch_in(cstring) RETURNS ops_sketch
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ops_sketch_in';
CREATE FUNCTION ops_sketch_out(ops_sketch) RETURNS cstring
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ops_sketch_out';
CREATE FUNCTION ops_sketch_recv(internal) RETURNS ops_sketch
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ops_sketch_recv';
CREATE FUNCTION ops_sketch_send(ops_sketch) RETURNS bytea
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ops_sketch_send';
CREATE TYPE ops_sketch (
    INPUT = ops_sketch_in, OUTPUT = ops_sketch_out,
    RECEIVE = ops_sketch_recv, SEND = ops_sketch_send,
    INTERNALLENGTH = VARIABLE, STORAGE = extended, ALIGNMENT = int4
);

-- Aggregate support. Not STRICT: a NULL state starts a sketch, a NULL value is skipped.
CREATE FUNCTION ops_sketch_trans(ops_sketch, float8) RETURNS ops_sketch
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ops_sketch_trans';
CREATE FUNCTION ops_sketch_trans(ops_sketch, float8, float8) RETURNS ops_sketch
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ops_sketch_trans_alpha';
CREATE FUNCTION ops_sketch_combine(ops_sketch, ops_sketch) RETURNS ops_sketch
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ops_sketch_combine';
CREATE FUNCTION ops_sketch_final(ops_sketch) RETURNS ops_sketch
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ops_sketch_final';

CREATE AGGREGATE ops_sketch(value float8) (
    SFUNC = ops_sketch_trans, STYPE = ops_sketch, SSPACE = 8192,
    COMBINEFUNC = ops_sketch_combine, FINALFUNC = ops_sketch_final, PARALLEL = SAFE
);
CREATE AGGREGATE ops_sketch(value float8, alpha float8) (
    SFUNC = ops_sketch_trans, STYPE = ops_sketch, SSPACE = 8192,
    COMBINEFUNC = ops_sketch_combine, FINALFUNC = ops_sketch_final, PARALLEL = SAFE
);
CREATE AGGREGATE ops_sketch_merge(ops_sketch) (
    SFUNC = ops_sketch_combine, STYPE = ops_sketch, SSPACE = 8192,
    COMBINEFUNC = ops_sketch_combine, FINALFUNC = ops_sketch_final, PARALLEL = SAFE
);

-- ops_sketch_pair_a / ops_sketch_pair_b (see "Two sketches in one state" below). In this block,
-- not one of their own, so that the install script's order does not depend on the build.
-- Not STRICT: a NULL state starts a pair, a NULL value is skipped on its side.
CREATE FUNCTION ops_sketch_pair_trans(bytea, float8, float8) RETURNS bytea
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ops_sketch_pair_trans';
CREATE FUNCTION ops_sketch_pair_combine(bytea, bytea) RETURNS bytea
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ops_sketch_pair_combine';
CREATE FUNCTION ops_sketch_pair_final_a(bytea) RETURNS ops_sketch
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ops_sketch_pair_final_a';
CREATE FUNCTION ops_sketch_pair_final_b(bytea) RETURNS ops_sketch
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ops_sketch_pair_final_b';
-- SSPACE: the two sketches' (one shared state, counted once by the planner).
CREATE AGGREGATE ops_sketch_pair_a(a float8, b float8) (
    SFUNC = ops_sketch_pair_trans, STYPE = bytea, SSPACE = 16384,
    COMBINEFUNC = ops_sketch_pair_combine, FINALFUNC = ops_sketch_pair_final_a,
    FINALFUNC_MODIFY = READ_ONLY, PARALLEL = SAFE
);
CREATE AGGREGATE ops_sketch_pair_b(a float8, b float8) (
    SFUNC = ops_sketch_pair_trans, STYPE = bytea, SSPACE = 16384,
    COMBINEFUNC = ops_sketch_pair_combine, FINALFUNC = ops_sketch_pair_final_b,
    FINALFUNC_MODIFY = READ_ONLY, PARALLEL = SAFE
);
"#,
    name = "ops_sketch_type",
    creates = [Type(OpsSketch)],
);

// ---------------------------------------------------------------------------------------------
// Two sketches in one state: ops_sketch_pair_a(a, b) and ops_sketch_pair_b(a, b). The two
// aggregates have the same transition function, transition type and combine function, so
// PostgreSQL gives the two calls of one query on the same arguments a single shared state
// (`AggTransInfo`); the layout is [`crate::cores::sketch_pair`]. The transition type is bytea, a
// real type with text I/O (Citus ships partial states as text); a state that does not come
// from this aggregate is validated and rebuilt before anything writes to it.

/// Initial length of each section of a fresh pair state (the single sketch's initial state).
const PAIR_SECTION_BYTES: usize = INITIAL_WINDOW_BYTES;

/// Applies `op` to the pair state in `state`, growing it (into a new varlena in the current
/// memory context) as often as the core asks.
unsafe fn with_pair_growth(
    mut state: *mut pg_sys::varlena,
    mut op: impl FnMut(&mut [u8]) -> Result<(), PairAddError>,
) -> *mut pg_sys::varlena {
    loop {
        let buf = unsafe { payload_mut(state) };
        match op(buf) {
            Ok(()) => return state,
            Err(PairAddError::NeedsGrow {
                side,
                suggested_len,
                ..
            }) => {
                let grown = unsafe { alloc_varlena(suggested_len) };
                sp::pair_grow(buf, unsafe { payload_mut(grown) }, side).or_raise();
                state = grown;
            }
            Err(PairAddError::Sketch(e)) => crate::error::raise(&e, "ops_sketch_pair"),
        }
    }
}

/// The pair state from argument 0, ready for in-place updates (as [`writable_state`]): the
/// argument itself when it is a pair state owned by a plain aggregate, else a validated copy.
unsafe fn writable_pair_state(fcinfo: pg_sys::FunctionCallInfo) -> *mut pg_sys::varlena {
    unsafe {
        if pg_arg_is_null(fcinfo, 0) {
            let p = alloc_varlena(sp::pair_len(dd::working_min_len() + PAIR_SECTION_BYTES));
            sp::pair_init(payload_mut(p), dd::DEFAULT_ALPHA).or_raise();
            return p;
        }
        if let Some((p, buf)) = aggregate_owned_state(fcinfo) {
            if sp::is_pair(buf) {
                return p;
            }
        }
        let (bytes, _) = payload_of(pg_getarg_datum_raw(fcinfo, 0));
        let (a, b) = sp::pair_sketches(bytes).or_raise();
        bytes_datum(&sp::pair_from_sketches(&a, &b)).cast_mut_ptr()
    }
}

/// A nullable float8 argument.
unsafe fn opt_float8_arg(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> Option<f64> {
    unsafe { (!pg_arg_is_null(fcinfo, n)).then(|| float8_arg(fcinfo, n)) }
}

/// The per-row fast path of the pair aggregates (as [`trans_fast`]).
#[inline(always)]
unsafe fn pair_trans_fast(fcinfo: pg_sys::FunctionCallInfo) -> Option<pg_sys::Datum> {
    unsafe {
        let (state, buf) = aggregate_owned_state(fcinfo)?;
        // On error nothing of this row is added (the core guarantees it; a state that is not a
        // pair state is refused untouched), and the guarded path repeats the add and grows or
        // reports.
        sp::pair_add(buf, opt_float8_arg(fcinfo, 1), opt_float8_arg(fcinfo, 2)).ok()?;
        Some(pg_sys::Datum::from(state))
    }
}

v1_info!(pg_finfo_ops_sketch_pair_trans);
/// `ops_sketch_pair_trans(bytea, float8, float8)`: adds one row's two values (a NULL one is
/// skipped on its side). Guarded like [`ops_sketch_trans`].
#[no_mangle]
pub unsafe extern "C-unwind" fn ops_sketch_pair_trans(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    unsafe { fast_or_guarded(fcinfo, pair_trans_fast, ops_sketch_pair_trans_guarded) }
}

#[pg_guard]
unsafe extern "C-unwind" fn ops_sketch_pair_trans_guarded(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    unsafe {
        let (a, b) = (opt_float8_arg(fcinfo, 1), opt_float8_arg(fcinfo, 2));
        if a.is_none() && b.is_none() {
            return if pg_arg_is_null(fcinfo, 0) {
                pg_return_null(fcinfo)
            } else {
                pg_getarg_datum_raw(fcinfo, 0)
            };
        }
        let state = writable_pair_state(fcinfo);
        pg_sys::Datum::from(with_pair_growth(state, |buf| sp::pair_add(buf, a, b)))
    }
}

v1_info!(pg_finfo_ops_sketch_pair_combine);
/// `ops_sketch_pair_combine(bytea, bytea)`: merges the second pair state into the first, side
/// by side (parallel and distributed plans).
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn ops_sketch_pair_combine(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    unsafe {
        if let Some(unchanged) = skip_null_input(fcinfo) {
            return unchanged;
        }
        let (bytes, _) = payload_of(pg_getarg_datum_raw(fcinfo, 1));
        if pg_arg_is_null(fcinfo, 0) {
            // The group's first partial state: valid (checked as a decode checks it), so a copy
            // of it is the state.
            sp::pair_check(bytes).or_raise();
            return bytes_datum(bytes);
        }
        // The others are merged side by side straight from their counters (checked as the
        // decode would check them), without a sketch in between.
        let state = writable_pair_state(fcinfo);
        let state = with_pair_growth(state, |buf| sp::pair_merge_pair_side(buf, Side::A, bytes));
        pg_sys::Datum::from(with_pair_growth(state, |buf| {
            sp::pair_merge_pair_side(buf, Side::B, bytes)
        }))
    }
}

/// The final function of one side: that side's compact sketch, or NULL when the side has no
/// value (as `ops_sketch` over only NULLs). Read-only on the state, which the other side's
/// final function reads too.
unsafe fn pair_final(fcinfo: pg_sys::FunctionCallInfo, side: Side) -> pg_sys::Datum {
    unsafe {
        if let Some((_, buf)) = aggregate_owned_state(fcinfo).filter(|(_, b)| sp::is_pair(b)) {
            // Count the buffered rows into the sections in place (one batch, instead of one
            // value at a time into the decoded sketch below). The state then holds the same
            // values, so the other side's final function, which reads the same state, gives
            // the same result; if a section would have to grow, the values not yet added stay
            // buffered and are counted below.
            let _ = sp::pair_flush(buf);
        }
        let (bytes, _) = payload_of(pg_getarg_datum_raw(fcinfo, 0));
        let s = sp::pair_sketch(bytes, side).or_raise();
        if s.is_empty() {
            return pg_return_null(fcinfo);
        }
        DECODED.with(|c| c.borrow_mut().encode_keeping(s, |b| bytes_datum(b)))
    }
}

v1_info!(pg_finfo_ops_sketch_pair_final_a);
/// `ops_sketch_pair_final_a(bytea)`: the sketch of the first argument.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn ops_sketch_pair_final_a(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    unsafe { pair_final(fcinfo, Side::A) }
}

v1_info!(pg_finfo_ops_sketch_pair_final_b);
/// `ops_sketch_pair_final_b(bytea)`: the sketch of the second argument.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn ops_sketch_pair_final_b(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    unsafe { pair_final(fcinfo, Side::B) }
}

// ---------------------------------------------------------------------------------------------
// Accessors: ordinary pgrx functions over a decoded sketch.

/// An `ops_sketch` argument, decoded from either form.
pub struct OpsSketch(pub Rc<Sketch>);

impl FromDatum for OpsSketch {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _typoid: pg_sys::Oid,
    ) -> Option<Self> {
        if is_null {
            return None;
        }
        let (bytes, _) = unsafe { payload_of(datum) };
        Some(OpsSketch(shared_sketch_from_payload(bytes).or_raise()))
    }
}

impl IntoDatum for OpsSketch {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(unsafe { bytes_datum(&self.0.encode()) })
    }
    fn type_oid() -> pg_sys::Oid {
        pg_sys::InvalidOid
    }
}

unsafe impl pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable for OpsSketch {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(OpsSketch);
    const TYPE_ORIGIN: pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin =
        pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin::ThisExtension;
    const ARGUMENT_SQL: Result<
        pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef,
        pgrx::pgrx_sql_entity_graph::metadata::ArgumentError,
    > = Ok(pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef::literal("ops_sketch"));
    const RETURN_SQL: Result<
        pgrx::pgrx_sql_entity_graph::metadata::ReturnsRef,
        pgrx::pgrx_sql_entity_graph::metadata::ReturnsError,
    > = Ok(pgrx::pgrx_sql_entity_graph::metadata::ReturnsRef::One(
        pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef::literal("ops_sketch"),
    ));
}

// SAFETY: an ops_sketch argument is a varlena pointer, read through FromDatum above.
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for OpsSketch {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum() }
            .unwrap_or_else(|| panic!("ops_sketch argument {index} must not be null"))
    }
}

/// `ops_quantile(s, q)`: the value at quantile q (0 … 1), within alpha of `percentile_disc(q)`.
#[pg_extern(immutable, strict, parallel_safe)]
fn ops_quantile(s: OpsSketch, q: f64) -> Option<f64> {
    s.0.quantile(q).or_raise()
}

/// `ops_quantiles(s, qs)`: several quantiles at once (NULL entries stay NULL).
#[pg_extern(immutable, strict, parallel_safe)]
fn ops_quantiles(s: OpsSketch, qs: Vec<Option<f64>>) -> Vec<Option<f64>> {
    qs.into_iter()
        .map(|q| q.and_then(|q| s.0.quantile(q).or_raise()))
        .collect()
}

/// `ops_rank(s, v)`: the estimated share of values ≤ v (0 below min, 1 at or above max).
#[pg_extern(immutable, strict, parallel_safe)]
fn ops_rank(s: OpsSketch, value: f64) -> Option<f64> {
    s.0.rank(value).or_raise()
}

/// `ops_count(s)`: exact number of values.
#[pg_extern(immutable, strict, parallel_safe)]
fn ops_count(s: OpsSketch) -> i64 {
    i64::try_from(s.0.count()).unwrap_or(i64::MAX)
}

/// `ops_sum(s)`: exact sum, correctly rounded.
#[pg_extern(immutable, strict, parallel_safe)]
fn ops_sum(s: OpsSketch) -> Option<f64> {
    s.0.sum()
}

/// `ops_mean(s)`: exact sum / count.
#[pg_extern(immutable, strict, parallel_safe)]
fn ops_mean(s: OpsSketch) -> Option<f64> {
    s.0.mean()
}

/// `ops_min(s)`: exact minimum.
#[pg_extern(immutable, strict, parallel_safe)]
fn ops_min(s: OpsSketch) -> Option<f64> {
    s.0.min()
}

/// `ops_max(s)`: exact maximum.
#[pg_extern(immutable, strict, parallel_safe)]
fn ops_max(s: OpsSketch) -> Option<f64> {
    s.0.max()
}

/// `ops_sketch_alpha(s)`: the relative accuracy the sketch was built with.
#[pg_extern(immutable, strict, parallel_safe)]
fn ops_sketch_alpha(s: OpsSketch) -> f64 {
    s.0.alpha()
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::pgrx_tests::sqlstate_of;
    use pgrx::prelude::*;

    #[pg_test]
    fn quantiles_match_percentile_disc_within_alpha() {
        Spi::run(
            "CREATE TABLE v AS SELECT (exp(3 + 2 * sin(i * 0.7)) * (1 + (i % 7)))::float8 AS x
               FROM generate_series(1, 20000) i",
        )
        .unwrap();
        for q in [0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let (est, exact) = Spi::get_two::<f64, f64>(&format!(
                "SELECT ops_quantile(ops_sketch(x), {q}),
                        percentile_disc({q}) WITHIN GROUP (ORDER BY x) FROM v"
            ))
            .unwrap();
            let (est, exact) = (est.unwrap(), exact.unwrap());
            assert!(
                (est - exact).abs() <= 0.005 * exact.abs() * (1.0 + 1e-9),
                "q={q}: {est} vs exact {exact}"
            );
        }
    }

    #[pg_test]
    fn in_place_aggregate_equals_merge_of_parts_byte_for_byte() {
        let same = Spi::get_one::<bool>(
            "WITH d AS (SELECT i, (i * 7919 % 10007)::float8 / 3 AS x
                          FROM generate_series(1, 50000) i),
                  parts AS (SELECT i % 13 AS k, ops_sketch(x) AS s FROM d GROUP BY 1)
             SELECT (SELECT ops_sketch(x) FROM d)::text
                  = (SELECT ops_sketch_merge(s ORDER BY k DESC) FROM parts)::text",
        )
        .unwrap();
        assert_eq!(same, Some(true));
    }

    #[pg_test]
    fn bad_inputs_raise_their_sqlstates() {
        assert_eq!(
            sqlstate_of("PERFORM ops_sketch(x) FROM (VALUES (1.0::float8), ('NaN')) v(x)"),
            "22023"
        );
        assert_eq!(sqlstate_of("PERFORM ops_sketch(1.0, 0.5)"), "22023");
        assert_eq!(
            sqlstate_of("PERFORM ops_quantile(ops_sketch(1.0), 1.5)"),
            "22023"
        );
        assert_eq!(sqlstate_of("PERFORM 'ddsk1:@@@'::ops_sketch"), "22P02");
        assert_eq!(
            sqlstate_of(
                "PERFORM ops_sketch_merge(s) FROM (VALUES ((SELECT ops_sketch(1.0, 0.01))),
                                                       ((SELECT ops_sketch(1.0, 0.02)))) v(s)"
            ),
            "22023"
        );
    }
}

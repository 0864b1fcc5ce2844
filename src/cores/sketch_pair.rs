//! Two sketches in one aggregate state: the state of `ops_sketch_pair_a(a, b)` and
//! `ops_sketch_pair_b(a, b)`, which PostgreSQL shares between the two aggregates when one query
//! calls both on the same arguments (same transition function, same inputs). A rollup that
//! sketches two columns of every row (duration and time to first token) then updates one
//! state per row instead of two, and the row's two values go to one slot of one buffer: with
//! thousands of groups in a hash aggregation, where the state's first cache line is a miss
//! on nearly every row, that is one miss per row instead of two, and one function call.
//!
//! Layout 1 (native endian):
//!   0   u8   PAIR_MAGIC
//!   1   u8   layout version (1)
//!   2   u8   pairs waiting in the pair buffer (0 ..= PAIR_CAP)
//!   3   u8   reserved (0)
//!   4   u32  offset of section B
//!   8   (f64, f64)[PAIR_CAP] pair buffer: the rows' (a, b) not yet added to the sections; a
//!            missing value (SQL NULL, or one already added) is the bit pattern [`NONE_BITS`]
//!   A_OFF .. offset of B: section A, a working buffer of [`crate::cores::sketch`]
//!   offset of B .. end:   section B, the same
//!
//! When the pair buffer is full, its a values are added to section A, then its b values to
//! section B ([`pair_flush`]); each section is an ordinary working buffer, so everything the
//! single sketch guarantees (exact count, sum, min, max; the same compact bytes as any other
//! way of adding the same values) holds for each side.

use crate::cores::sketch::{
    self as dd, rd_u32, rd_u64, wr_u32, wr_u64, AddError, Sketch, SketchError,
};

/// First byte of a pair state (the single working buffer's is `dd::WORKING_MAGIC`, a compact
/// sketch's its format version).
pub const PAIR_MAGIC: u8 = 0xD9;
const PAIR_LAYOUT: u8 = 1;
/// Rows a pair state buffers before it adds them to its sections.
pub const PAIR_CAP: usize = 16;
const P_MAGIC: usize = 0;
const P_LAYOUT: usize = 1;
const P_NBUF: usize = 2;
const P_B_OFF: usize = 4;
const P_BUF: usize = 8;
/// Where section A starts.
pub const A_OFF: usize = P_BUF + 16 * PAIR_CAP;
/// A missing value in the pair buffer: a NaN, which no input can be (inputs must be finite).
const NONE_BITS: u64 = 0x7ff8_0000_dead_0001;

/// One of the two sketches of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

/// Error of the in-place pair operations.
#[derive(Debug, Clone, PartialEq)]
pub enum PairAddError {
    /// Invalid input, corrupt state, overflow.
    Sketch(SketchError),
    /// Section `side` must grow: allocate a state of at least `min_len` bytes (`suggested_len`
    /// has slack), call [`pair_grow`] with the same side, and retry the operation.
    NeedsGrow {
        side: Side,
        min_len: usize,
        suggested_len: usize,
    },
}

impl From<SketchError> for PairAddError {
    fn from(e: SketchError) -> Self {
        PairAddError::Sketch(e)
    }
}

fn corrupt<T>(msg: &str) -> Result<T, SketchError> {
    Err(SketchError::Corrupt(format!("sketch pair state: {msg}")))
}

/// Writes the offset of section B.
fn set_b_off(buf: &mut [u8], b_off: usize) {
    wr_u32(buf, P_B_OFF, b_off as u32);
}

fn slot(i: usize, side: Side) -> usize {
    P_BUF + 16 * i + if side == Side::A { 0 } else { 8 }
}

/// Buffered row `i`'s value on `side`: `None` when missing (NULL, or already added).
fn buffered(buf: &[u8], i: usize, side: Side) -> Result<Option<f64>, SketchError> {
    let bits = rd_u64(buf, slot(i, side));
    if bits == NONE_BITS {
        return Ok(None);
    }
    let x = f64::from_bits(bits);
    if !x.is_finite() {
        return corrupt("buffered value");
    }
    Ok(Some(x))
}

/// The length of a fresh pair state whose sections each have `section_len` bytes.
pub fn pair_len(section_len: usize) -> usize {
    A_OFF + 2 * section_len.max(dd::working_min_len())
}

/// Initialise a pair state (`buf.len()` as from [`pair_len`]): two empty sections of equal
/// length at `alpha`.
pub fn pair_init(buf: &mut [u8], alpha: f64) -> Result<(), SketchError> {
    if buf.len() < pair_len(0) {
        return Err(SketchError::BufferTooSmall {
            need: pair_len(0),
            got: buf.len(),
        });
    }
    let section = (buf.len() - A_OFF) / 2;
    let b_off = A_OFF + section;
    buf[..A_OFF].fill(0);
    buf[P_MAGIC] = PAIR_MAGIC;
    buf[P_LAYOUT] = PAIR_LAYOUT;
    set_b_off(buf, b_off);
    dd::working_init(&mut buf[A_OFF..b_off], alpha)?;
    dd::working_init(&mut buf[b_off..], alpha)?;
    Ok(())
}

/// Whether `buf` starts like a pair state of this layout (the in-place operations check the
/// rest as they go).
pub fn is_pair(buf: &[u8]) -> bool {
    buf.len() >= A_OFF && buf[P_MAGIC] == PAIR_MAGIC && buf[P_LAYOUT] == PAIR_LAYOUT
}

/// Checks the header; returns (pairs buffered, offset of section B).
fn header(buf: &[u8]) -> Result<(usize, usize), SketchError> {
    if !is_pair(buf) {
        return corrupt("not a pair state");
    }
    let n = buf[P_NBUF] as usize;
    if n > PAIR_CAP {
        return corrupt("pair buffer overfull");
    }
    let b_off = rd_u32(buf, P_B_OFF) as usize;
    let min = dd::working_min_len();
    if b_off < A_OFF + min || b_off > buf.len() || buf.len() - b_off < min {
        return corrupt("section offset out of range");
    }
    Ok((n, b_off))
}

fn section(buf: &[u8], b_off: usize, side: Side) -> &[u8] {
    match side {
        Side::A => &buf[A_OFF..b_off],
        Side::B => &buf[b_off..],
    }
}

fn section_mut(buf: &mut [u8], b_off: usize, side: Side) -> &mut [u8] {
    match side {
        Side::A => &mut buf[A_OFF..b_off],
        Side::B => &mut buf[b_off..],
    }
}

fn check_input(v: Option<f64>) -> Result<(), SketchError> {
    match v {
        Some(x) if !x.is_finite() => Err(SketchError::InvalidValue(x)),
        _ => Ok(()),
    }
}

/// Add one row's values (`None`: SQL NULL, skipped on that side) in place. On any error
/// nothing of this row is added, and the state holds the same values as before (some may
/// have moved from the pair buffer into the sections).
#[inline(always)]
pub fn pair_add(buf: &mut [u8], a: Option<f64>, b: Option<f64>) -> Result<(), PairAddError> {
    check_input(a)?;
    check_input(b)?;
    if !is_pair(buf) {
        return Err(SketchError::Corrupt("sketch pair state: not a pair state".into()).into());
    }
    if a.is_none() && b.is_none() {
        return Ok(());
    }
    let mut n = buf[P_NBUF] as usize;
    if n >= PAIR_CAP {
        pair_flush(buf)?;
        n = 0;
    }
    wr_u64(buf, slot(n, Side::A), a.map_or(NONE_BITS, f64::to_bits));
    wr_u64(buf, slot(n, Side::B), b.map_or(NONE_BITS, f64::to_bits));
    buf[P_NBUF] = n as u8 + 1;
    Ok(())
}

/// Add every buffered value to its section, leaving the pair buffer empty. On `NeedsGrow` the
/// values already added are marked missing in the buffer and the rest wait, so growing and
/// calling again adds each value exactly once.
pub fn pair_flush(buf: &mut [u8]) -> Result<(), PairAddError> {
    let (n, b_off) = header(buf)?;
    let len = buf.len();
    for side in [Side::A, Side::B] {
        for i in 0..n {
            let Some(x) = buffered(buf, i, side)? else {
                continue;
            };
            let sec = section_mut(buf, b_off, side);
            let sec_len = sec.len();
            dd::working_add(sec, x).map_err(|e| section_error(e, side, len, sec_len))?;
            wr_u64(buf, slot(i, side), NONE_BITS);
        }
    }
    buf[P_NBUF] = 0;
    Ok(())
}

/// Copy a pair state into a longer one (after `NeedsGrow` for `side`), growing that side's
/// section by the extra length; the other section and the pair buffer are copied as they are.
pub fn pair_grow(old: &[u8], new: &mut [u8], side: Side) -> Result<(), SketchError> {
    let (_, b_off) = header(old)?;
    let Some(extra) = new.len().checked_sub(old.len()) else {
        return Err(SketchError::BufferTooSmall {
            need: old.len(),
            got: new.len(),
        });
    };
    new[..A_OFF].copy_from_slice(&old[..A_OFF]);
    match side {
        Side::A => {
            let nb = b_off + extra;
            dd::working_grow(&old[A_OFF..b_off], &mut new[A_OFF..nb])?;
            new[nb..].copy_from_slice(&old[b_off..]);
            set_b_off(new, nb);
        }
        Side::B => {
            new[A_OFF..b_off].copy_from_slice(&old[A_OFF..b_off]);
            dd::working_grow(&old[b_off..], &mut new[b_off..])?;
        }
    }
    Ok(())
}

/// The sketch of one side: its section plus that side's buffered values (validated).
pub fn pair_sketch(buf: &[u8], side: Side) -> Result<Sketch, SketchError> {
    let (n, b_off) = header(buf)?;
    let mut s = dd::working_to_sketch(section(buf, b_off, side))?;
    for i in 0..n {
        if let Some(x) = buffered(buf, i, side)? {
            s.add(x)?;
        }
    }
    Ok(s)
}

/// Both sketches (the whole state validated).
pub fn pair_sketches(buf: &[u8]) -> Result<(Sketch, Sketch), SketchError> {
    Ok((pair_sketch(buf, Side::A)?, pair_sketch(buf, Side::B)?))
}

/// Merge `other` into section `side` in place (`NeedsGrow` as for [`pair_add`]; nothing is
/// merged when it is returned).
pub fn pair_merge_side(buf: &mut [u8], side: Side, other: &Sketch) -> Result<(), PairAddError> {
    let (_, b_off) = header(buf)?;
    let len = buf.len();
    let sec = section_mut(buf, b_off, side);
    let sec_len = sec.len();
    dd::working_merge_sketch(sec, other).map_err(|e| section_error(e, side, len, sec_len))
}

/// The values of side `side` waiting in the first `n` slots of the pair buffer, in order.
fn side_values(buf: &[u8], n: usize, side: Side) -> Result<([f64; PAIR_CAP], usize), SketchError> {
    let mut vals = [0f64; PAIR_CAP];
    let mut m = 0;
    for i in 0..n {
        if let Some(x) = buffered(buf, i, side)? {
            vals[m] = x;
            m += 1;
        }
    }
    Ok((vals, m))
}

/// Check a pair state as [`pair_sketches`] checks it (both sides, each with its buffered
/// rows), without building the sketches.
pub fn pair_check(buf: &[u8]) -> Result<(), SketchError> {
    let (n, b_off) = header(buf)?;
    for side in [Side::A, Side::B] {
        let (vals, m) = side_values(buf, n, side)?;
        dd::working_check(section(buf, b_off, side), &vals[..m])?;
    }
    Ok(())
}

/// Merge side `side` of the pair state `src` (its section and the values of its pair buffer)
/// into section `side` of `buf` in place, without a sketch in between: the same result as
/// [`pair_merge_side`] with [`pair_sketch`] of `src` (`src` checked as that checks it);
/// `NeedsGrow` as for [`pair_add`], nothing merged when any error is returned.
pub fn pair_merge_pair_side(buf: &mut [u8], side: Side, src: &[u8]) -> Result<(), PairAddError> {
    let (sn, s_b_off) = header(src)?;
    let (extra, m) = side_values(src, sn, side)?;
    let (_, b_off) = header(buf)?;
    let len = buf.len();
    let sec = section_mut(buf, b_off, side);
    let sec_len = sec.len();
    dd::working_merge_working(sec, section(src, s_b_off, side), &extra[..m])
        .map_err(|e| section_error(e, side, len, sec_len))
}

/// A section's error as the pair's: a growth request becomes one for the whole state (of
/// `len` bytes, the section `sec_len` of them).
fn section_error(e: AddError, side: Side, len: usize, sec_len: usize) -> PairAddError {
    match e {
        AddError::Sketch(e) => PairAddError::Sketch(e),
        AddError::NeedsGrow {
            min_len,
            suggested_len,
        } => PairAddError::NeedsGrow {
            side,
            min_len: len - sec_len + min_len,
            suggested_len: len - sec_len + suggested_len,
        },
    }
}

/// A fresh pair state holding `a` and `b` (same alpha on both sides), with slack.
pub fn pair_from_sketches(a: &Sketch, b: &Sketch) -> Vec<u8> {
    let wa = dd::sketch_to_working(a);
    let wb = dd::sketch_to_working(b);
    let mut out = vec![0u8; A_OFF + wa.len() + wb.len()];
    out[P_MAGIC] = PAIR_MAGIC;
    out[P_LAYOUT] = PAIR_LAYOUT;
    let b_off = A_OFF + wa.len();
    set_b_off(&mut out, b_off);
    out[A_OFF..b_off].copy_from_slice(&wa);
    out[b_off..].copy_from_slice(&wb);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Applies `op` to a pair state held in a Vec, growing it as asked (as the SQL glue does).
    fn with_growth(
        buf: &mut Vec<u8>,
        mut op: impl FnMut(&mut [u8]) -> Result<(), PairAddError>,
    ) -> Result<(), SketchError> {
        loop {
            match op(buf) {
                Ok(()) => return Ok(()),
                Err(PairAddError::NeedsGrow {
                    side,
                    min_len,
                    suggested_len,
                }) => {
                    assert!(suggested_len >= min_len && min_len > buf.len());
                    let mut nb = vec![0xAAu8; suggested_len];
                    pair_grow(buf, &mut nb, side)?;
                    *buf = nb;
                }
                Err(PairAddError::Sketch(e)) => return Err(e),
            }
        }
    }

    fn fresh(section: usize) -> Vec<u8> {
        let mut buf = vec![0u8; pair_len(section)];
        pair_init(&mut buf, dd::DEFAULT_ALPHA).unwrap();
        buf
    }

    /// The single-sketch path: one value at a time into a working buffer, growing as asked.
    fn single(values: &[f64]) -> Option<Vec<u8>> {
        if values.is_empty() {
            return None;
        }
        let mut w = vec![0u8; dd::working_min_len() + 64];
        dd::working_init(&mut w, dd::DEFAULT_ALPHA).unwrap();
        for &x in values {
            loop {
                match dd::working_add(&mut w, x) {
                    Ok(()) => break,
                    Err(AddError::NeedsGrow { suggested_len, .. }) => {
                        let mut nb = vec![0u8; suggested_len];
                        dd::working_grow(&w, &mut nb).unwrap();
                        w = nb;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
        Some(dd::working_to_sketch(&w).unwrap().encode())
    }

    fn side_bytes(buf: &[u8], side: Side) -> Option<Vec<u8>> {
        let s = pair_sketch(buf, side).unwrap();
        (!s.is_empty()).then(|| s.encode())
    }

    fn value() -> impl Strategy<Value = Option<f64>> {
        prop_oneof![
            1 => Just(None),
            4 => (1u32..40_000).prop_map(|v| Some(v as f64)),
            2 => (1e-3f64..1e6).prop_map(Some),
            1 => (-1e4f64..1e4).prop_map(Some),
            1 => Just(Some(0.0)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Each side of a pair state encodes to the same bytes as a single sketch of that
        /// side's non-NULL values, whatever the NULLs, the growth and the buffer position.
        #[test]
        fn each_side_equals_its_single_sketch(
            rows in prop::collection::vec((value(), value()), 0..400),
            section in prop::sample::select(vec![0usize, 64, 1024, 4096]),
        ) {
            let mut buf = fresh(section);
            for &(a, b) in &rows {
                with_growth(&mut buf, |s| pair_add(s, a, b)).unwrap();
            }
            let xs: Vec<f64> = rows.iter().filter_map(|r| r.0).collect();
            let ys: Vec<f64> = rows.iter().filter_map(|r| r.1).collect();
            prop_assert_eq!(side_bytes(&buf, Side::A), single(&xs));
            prop_assert_eq!(side_bytes(&buf, Side::B), single(&ys));
            // flushing changes nothing either side reads
            with_growth(&mut buf, pair_flush).unwrap();
            prop_assert_eq!(buf[P_NBUF], 0);
            prop_assert_eq!(side_bytes(&buf, Side::A), single(&xs));
            prop_assert_eq!(side_bytes(&buf, Side::B), single(&ys));
        }

        /// Merging one pair's sketches into another, side by side, equals the single sketch of
        /// all values; a pair rebuilt from its sketches reads the same.
        #[test]
        fn merged_pairs_equal_the_single_sketch_of_all_rows(
            r1 in prop::collection::vec((value(), value()), 0..200),
            r2 in prop::collection::vec((value(), value()), 0..200),
        ) {
            let mut p1 = fresh(256);
            let mut p2 = fresh(256);
            for &(a, b) in &r1 { with_growth(&mut p1, |s| pair_add(s, a, b)).unwrap(); }
            for &(a, b) in &r2 { with_growth(&mut p2, |s| pair_add(s, a, b)).unwrap(); }
            let (sa, sb) = pair_sketches(&p2).unwrap();
            with_growth(&mut p1, |s| pair_merge_side(s, Side::A, &sa)).unwrap();
            with_growth(&mut p1, |s| pair_merge_side(s, Side::B, &sb)).unwrap();
            let all: Vec<(Option<f64>, Option<f64>)> = r1.iter().chain(r2.iter()).copied().collect();
            let xs: Vec<f64> = all.iter().filter_map(|r| r.0).collect();
            let ys: Vec<f64> = all.iter().filter_map(|r| r.1).collect();
            prop_assert_eq!(side_bytes(&p1, Side::A), single(&xs));
            prop_assert_eq!(side_bytes(&p1, Side::B), single(&ys));
            let (a1, b1) = pair_sketches(&p1).unwrap();
            let rebuilt = pair_from_sketches(&a1, &b1);
            prop_assert_eq!(side_bytes(&rebuilt, Side::A), single(&xs));
            prop_assert_eq!(side_bytes(&rebuilt, Side::B), single(&ys));
        }

        /// A pair state with any byte changed passes the check exactly when its sketches
        /// can be read.
        #[test]
        fn the_check_agrees_with_reading_the_sketches(
            rows in prop::collection::vec((value(), value()), 1..300),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut p = fresh(64);
            for &(a, b) in &rows { with_growth(&mut p, |s| pair_add(s, a, b)).unwrap(); }
            prop_assert!(pair_check(&p).is_ok());
            let i = at.index(p.len());
            p[i] = byte;
            prop_assert_eq!(pair_check(&p).is_ok(), pair_sketches(&p).is_ok(), "byte {} = {}", i, byte);
        }

        /// The direct merge of one pair state into another (each side's section and pair
        /// buffer read in place) equals the merge through that side's sketch, and the single
        /// sketch of all values.
        #[test]
        fn the_direct_pair_merge_equals_the_merge_through_sketches(
            r1 in prop::collection::vec((value(), value()), 0..200),
            r2 in prop::collection::vec((value(), value()), 0..200),
            s1 in prop::sample::select(vec![0usize, 64, 1024]),
            s2 in prop::sample::select(vec![0usize, 64, 1024]),
        ) {
            let mut p1 = fresh(s1);
            let mut p2 = fresh(s2);
            for &(a, b) in &r1 { with_growth(&mut p1, |s| pair_add(s, a, b)).unwrap(); }
            for &(a, b) in &r2 { with_growth(&mut p2, |s| pair_add(s, a, b)).unwrap(); }
            let mut old = p1.clone();
            let (sa, sb) = pair_sketches(&p2).unwrap();
            with_growth(&mut old, |s| pair_merge_side(s, Side::A, &sa)).unwrap();
            with_growth(&mut old, |s| pair_merge_side(s, Side::B, &sb)).unwrap();
            with_growth(&mut p1, |s| pair_merge_pair_side(s, Side::A, &p2)).unwrap();
            with_growth(&mut p1, |s| pair_merge_pair_side(s, Side::B, &p2)).unwrap();
            let all: Vec<(Option<f64>, Option<f64>)> = r1.iter().chain(r2.iter()).copied().collect();
            let xs: Vec<f64> = all.iter().filter_map(|r| r.0).collect();
            let ys: Vec<f64> = all.iter().filter_map(|r| r.1).collect();
            prop_assert_eq!(side_bytes(&p1, Side::A), side_bytes(&old, Side::A));
            prop_assert_eq!(side_bytes(&p1, Side::B), side_bytes(&old, Side::B));
            prop_assert_eq!(side_bytes(&p1, Side::A), single(&xs));
            prop_assert_eq!(side_bytes(&p1, Side::B), single(&ys));
        }
    }

    #[test]
    fn a_failed_row_adds_nothing() {
        let mut buf = fresh(0);
        with_growth(&mut buf, |s| pair_add(s, Some(5.0), Some(7.0))).unwrap();
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let before = buf.clone();
            let r = pair_add(&mut buf, Some(1.0), Some(bad));
            assert!(
                matches!(r, Err(PairAddError::Sketch(SketchError::InvalidValue(v))) if v.to_bits() == bad.to_bits()),
                "{r:?}"
            );
            assert_eq!(buf, before);
        }
        assert_eq!(pair_sketch(&buf, Side::A).unwrap().count(), 1);
        assert_eq!(pair_sketch(&buf, Side::B).unwrap().count(), 1);
    }

    #[test]
    fn a_row_of_two_nulls_leaves_the_state_as_it_was() {
        let mut buf = fresh(0);
        let before = buf.clone();
        pair_add(&mut buf, None, None).unwrap();
        assert_eq!(buf, before);
        assert!(pair_sketch(&buf, Side::A).unwrap().is_empty());
    }

    #[test]
    fn corrupt_states_are_errors_not_panics() {
        let mut good = fresh(128);
        for i in 0..40 {
            with_growth(&mut good, |s| pair_add(s, Some(i as f64), None)).unwrap();
        }
        let mut cases: Vec<Vec<u8>> = vec![vec![], vec![PAIR_MAGIC], good[..A_OFF].to_vec()];
        let mut bad_magic = good.clone();
        bad_magic[P_MAGIC] = 0;
        cases.push(bad_magic);
        let mut overfull = good.clone();
        overfull[P_NBUF] = PAIR_CAP as u8 + 1;
        cases.push(overfull);
        for off in [0u32, A_OFF as u32, u32::MAX, good.len() as u32] {
            let mut b = good.clone();
            wr_u32(&mut b, P_B_OFF, off);
            cases.push(b);
        }
        let mut bad_slot = good.clone();
        bad_slot[P_NBUF] = 1;
        wr_u64(&mut bad_slot, slot(0, Side::A), f64::INFINITY.to_bits());
        cases.push(bad_slot);
        let b_off = header(&good).unwrap().1;
        let mut truncated = good.clone();
        truncated.truncate(b_off + 10);
        cases.push(truncated);
        for (i, c) in cases.iter().enumerate() {
            assert!(pair_sketches(c).is_err(), "case {i} decoded");
            assert!(pair_check(c).is_err(), "case {i} passed the check");
            let mut m = c.clone();
            assert!(
                pair_flush(&mut m).is_err() || pair_sketches(&m).is_err(),
                "case {i}"
            );
            // merged directly into a good state: refused on at least one side, and a side
            // refused is left as it was
            let mut dst = good.clone();
            let ra = pair_merge_pair_side(&mut dst, Side::A, c);
            let after_a = dst.clone();
            let rb = pair_merge_pair_side(&mut dst, Side::B, c);
            assert!(ra.is_err() || rb.is_err(), "case {i} merged");
            if ra.is_err() {
                assert_eq!(after_a, good, "case {i}");
            }
            if rb.is_err() {
                assert_eq!(dst, after_a, "case {i}");
            }
        }
        assert!(pair_sketches(&good).is_ok());
        let mut dst = good.clone();
        pair_merge_pair_side(&mut dst, Side::A, &good).unwrap();
        assert_eq!(pair_sketch(&dst, Side::A).unwrap().count(), 80);
    }
}

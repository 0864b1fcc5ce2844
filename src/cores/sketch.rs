//! DDSketch-family relative-error quantile sketch (pure Rust core, no pgrx).
//!
//! # Model
//! * `alpha` (α) in `[1e-4, 0.1]`, default `0.005`; γ = (1+α)/(1−α).
//! * A value `x != 0` goes to bucket `i = ceil(ln|x| / ln γ)` of the positive store
//!   (x > 0) or of the negative store (x < 0, indexed by |x|). Bucket `i` covers
//!   `(γ^(i-1), γ^i]`; its representative is `2·γ^i/(γ+1) = γ^i·(1−α)`, which is
//!   within relative error α of every value in the bucket.
//! * Only exact `0.0` / `-0.0` go to the zero count. Subnormal magnitudes are
//!   bucketed normally (`ln` is exact enough for them); for them the estimate
//!   carries an extra absolute error of at most one subnormal ulp (2^-1074)
//!   because the representative itself must be rounded to a subnormal. All
//!   normal magnitudes (1e-300 .. f64::MAX) keep the α guarantee (up to ~1e-13
//!   relative floating-point slack at bucket boundaries).
//! * `-0.0` is normalised to `+0.0` (so `min`/`max` are order independent).
//! * NaN and ±∞ are rejected. Buckets are never collapsed.
//! * count, min, max and the SUM are exact. The sum is a fixed-point
//!   superaccumulator (68 limbs of 32 bits stored in `i64`, lazily carried) that
//!   covers every finite f64 times any u64 count, so merging is exactly
//!   associative and commutative (byte-identical encodings).
//!
//! # Representations
//! 1. [`Sketch`]: owned, sparse sorted bucket vectors.
//! 2. Working buffer: a flat, in-place-updatable byte layout in a caller-owned
//!    `&mut [u8]` (no alignment requirement), see [`working_add`]. Its header keeps what an
//!    add of an integral value touches (besides the bucket counter) in the first 64 bytes,
//!    including an i64 that sums integral values exactly and is folded into the limbs
//!    before they are read.
//! 3. Compact canonical binary encoding ([`Sketch::encode`]) and text form
//!    ([`Sketch::to_text`]).
#![allow(clippy::needless_range_loop)]

use std::sync::OnceLock;
use thiserror::Error;

/// Version byte of the compact encoding (first byte of [`Sketch::encode`]).
pub const FORMAT_VERSION: u8 = 1;
/// First byte of a working buffer (distinct from [`FORMAT_VERSION`]).
/// Layout 2 (integer accumulator, hot fields in the first 64 bytes) took a new magic so that a
/// build expecting layout 1 (magic 0xD5) rejects it cleanly, and this build rejects layout 1.
/// Layout 3 keeps the magic: it added the value buffer and moved the cold fields after it;
/// layout-2 buffers are still read (converted) by [`working_to_sketch`].
pub const WORKING_MAGIC: u8 = 0xD6;
const WORKING_LAYOUT: u8 = 3;
const LEGACY_LAYOUT: u8 = 2;
/// Default relative accuracy.
pub const DEFAULT_ALPHA: f64 = 0.005;
/// Smallest accepted alpha.
pub const MIN_ALPHA: f64 = 1e-4;
/// Largest accepted alpha.
pub const MAX_ALPHA: f64 = 0.1;
/// Prefix of the text form.
pub const TEXT_PREFIX: &str = "ddsk1:";

/// Errors of the sketch core.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SketchError {
    #[error("value {} is not allowed; ops_sketch accepts finite numbers", pg_float(*.0))]
    InvalidValue(f64),
    #[error("alpha must be between 0.0001 and 0.1, got {0}")]
    AlphaOutOfRange(f64),
    #[error("cannot merge sketches with different alpha ({left} and {right})")]
    AlphaMismatch { left: f64, right: f64 },
    #[error("q must be between 0 and 1, got {0}")]
    QuantileOutOfRange(f64),
    #[error("corrupt sketch: {0}")]
    Corrupt(String),
    #[error("invalid sketch text: {0}")]
    Parse(String),
    #[error("unsupported sketch format version {0} (this build reads version 1)")]
    UnsupportedVersion(u8),
    #[error("sketch count overflows 64 bits")]
    CountOverflow,
    #[error("working buffer too small: need {need} bytes, got {got}")]
    BufferTooSmall { need: usize, got: usize },
}

/// A float as PostgreSQL prints it (`NaN`, `Infinity`, `-Infinity`), for messages.
fn pg_float(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        if x > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        x.to_string()
    }
}

/// Error of the in-place working-buffer operations.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum AddError {
    /// Invalid input (NaN/inf), corrupt buffer, alpha mismatch, overflow.
    #[error(transparent)]
    Sketch(#[from] SketchError),
    /// The value's bucket lies outside the buffer's index window and the buffer
    /// has no spare capacity. Allocate a buffer of at least `min_len` bytes
    /// (`suggested_len` includes slack for amortised growth), call
    /// [`working_grow`], and retry the operation.
    #[error("working buffer must grow to at least {min_len} bytes (suggested {suggested_len})")]
    NeedsGrow {
        min_len: usize,
        suggested_len: usize,
    },
}

fn corrupt<T>(msg: impl Into<String>) -> Result<T, SketchError> {
    Err(SketchError::Corrupt(msg.into()))
}

// ---------------------------------------------------------------------------
// Parameters and index mapping
// ---------------------------------------------------------------------------

/// Smallest positive subnormal.
const TINY: f64 = f64::from_bits(1);

#[derive(Clone, Copy, Debug, PartialEq)]
struct Params {
    alpha: f64,
    ln_gamma: f64,
    inv_ln_gamma: f64,
    /// ln(1 - alpha) = ln(2/(γ+1)).
    ln_rep: f64,
    kmin: i32,
    kmax: i32,
}

/// Bucket index of a magnitude: `ceil(ln(mag) / ln γ)`, computed as `mag.ln() * inv_ln_gamma`.
/// This expression is the definition (every sketch's bytes depend on it); [`index_of`] computes
/// the same value faster.
#[inline]
fn index_of_exact(mag: f64, inv_ln_gamma: f64) -> i32 {
    ceil_i32(mag.ln() * inv_ln_gamma)
}

/// `ceil` without a libm call (baseline x86_64 has no SSE4.1 roundsd); |t| < 2^31 for every
/// finite magnitude and valid alpha, and `as` saturates anyway.
#[inline(always)]
fn ceil_i32(t: f64) -> i32 {
    let i = t as i32;
    i.saturating_add(((i as f64) < t) as i32)
}

/// Bits of the mantissa that select a row of [`LN_TABLE`].
const LN_TABLE_BITS: u32 = 8;
const LN_TABLE_ROWS: usize = 1 << LN_TABLE_BITS;

/// `(ln c_j, 1 / c_j)` for `c_j = 1 + j / 256`, computed at compile time (ln by the atanh series,
/// accurate to ~1e-16: the fast path only needs ~1e-12).
const LN_TABLE: [(f64, f64); LN_TABLE_ROWS] = {
    let mut t = [(0.0, 0.0); LN_TABLE_ROWS];
    let mut j = 0;
    while j < LN_TABLE_ROWS {
        let c = 1.0 + j as f64 / LN_TABLE_ROWS as f64;
        let z = (c - 1.0) / (c + 1.0);
        let z2 = z * z;
        let (mut term, mut sum, mut k) = (z, 0.0, 1);
        while k < 60 {
            sum += term / k as f64;
            term *= z2;
            k += 2;
        }
        t[j] = (2.0 * sum, 1.0 / c);
        j += 1;
    }
    t
};

/// ln(mag) for a normal positive magnitude, as two parts whose sum has absolute error below
/// ~1e-12: `base` (the exponent times ln 2 plus a table row's ln c, available early) and `p`, the
/// degree-4 series of ln(1 + r) on 0 <= r < 1/256, whose truncation error is below
/// r^5 / 5 < 2e-13. The series is evaluated by Estrin's scheme (`(r - r^2/2) + r^3 (1/3 - r/4)`)
/// rather than Horner's: this runs once per aggregated row, where the length of the dependency
/// chain (not the number of operations) is the cost, and Horner's chain of multiply-adds was the
/// longest part of it. `None` for subnormals, where the caller uses libm.
#[inline(always)]
fn ln_parts(mag: f64) -> Option<(f64, f64)> {
    let (normal, m, inv_c, base) = ln_split(mag);
    normal.then(|| (base, ln_series(m, inv_c)))
}

/// The parts of [`ln_parts`] that come from the bits of `mag`: whether it is a normal number,
/// its mantissa `m` in [1, 2), the table row's `1 / c`, and `base` (meaningful when normal).
#[inline(always)]
fn ln_split(mag: f64) -> (bool, f64, f64, f64) {
    let bits = mag.to_bits();
    let biased = (bits >> 52) & 0x7ff;
    let mantissa = bits & ((1u64 << 52) - 1);
    let (ln_c, inv_c) = LN_TABLE[(mantissa >> (52 - LN_TABLE_BITS)) as usize];
    let m = f64::from_bits(mantissa | (1023u64 << 52));
    let base = (biased as i64 - 1023) as f64 * std::f64::consts::LN_2 + ln_c;
    (biased != 0 && biased != 0x7ff, m, inv_c, base)
}

/// The series part of [`ln_parts`]: ln(m / c) for c = 1 + j / 256 <= m < c + 1/256. m * (1/c)
/// lies in [1, 1 + 2^-8) (or a rounding below 1), so the subtraction is exact and r is off by at
/// most an ulp of 1.
#[inline(always)]
fn ln_series(m: f64, inv_c: f64) -> f64 {
    let r = m * inv_c - 1.0;
    let r2 = r * r;
    let low = r - 0.5 * r2;
    let high = (1.0 / 3.0 - 0.25 * r) * (r2 * r);
    low + high
}

/// [`ln_parts`] summed: ln(mag) with absolute error below ~1e-12.
#[cfg(test)]
fn ln_approx(mag: f64) -> Option<f64> {
    ln_parts(mag).map(|(base, p)| base + p)
}

/// How far from an integer the fast estimate of `ln(mag) * inv_ln_gamma` must be for its ceiling
/// to be certain. The estimate's error is below ~1e-12 * 5000 (the largest 1 / ln γ) = 5e-9;
/// libm's ln is within an ulp. One in ~500 000 values lands this close and takes the libm path.
const INDEX_MARGIN: f64 = 1e-6;

/// 1.5 * 2^52: adding it to a double `u` with |u| < 2^51 rounds `u` to the nearest integer `k`
/// (in the default rounding mode), and the sum's low 32 mantissa bits are `k` in two's
/// complement when |k| < 2^31. An integer from a double in two additions and a register move.
const ROUND_MAGIC: f64 = 6_755_399_441_055_744.0;

/// Bucket index of a magnitude: always equal to [`index_of_exact`], but decided from
/// [`ln_parts`] when the result is not within [`INDEX_MARGIN`] of a bucket boundary, which
/// avoids the libm call for almost every value.
///
/// With `t = ln(mag) / ln γ = n + f` and `f` in (margin, 1 - margin), `u = t + 1/2` rounds to
/// `n + 1 = ceil(t)` and lies within `1/2 - margin` of it; `t` near an integer shows as `u` near
/// a half. The 1/2 is added to `base / ln γ`, which is ready before the series is, so the chain
/// from the series to the index is a multiply, two additions and a move.
#[inline(always)]
fn index_of(mag: f64, inv_ln_gamma: f64) -> i32 {
    match index_fast(mag, inv_ln_gamma) {
        Some(i) => i,
        None => index_of_exact(mag, inv_ln_gamma),
    }
}

/// The fast decision of [`index_of`]; `None` when it cannot be certain (a subnormal, or within
/// [`INDEX_MARGIN`] of a boundary).
#[inline(always)]
fn index_fast(mag: f64, inv_ln_gamma: f64) -> Option<i32> {
    let (base, p) = ln_parts(mag)?;
    let (u, rounded, d) = index_estimate(base, p, inv_ln_gamma);
    index_sure(u, d).then(|| rounded.to_bits() as u32 as i32)
}

/// From ln(mag) = base + p: `u = t + 1/2`, `u + ROUND_MAGIC` (whose low bits are the index) and
/// `u`'s distance from that integer.
#[inline(always)]
fn index_estimate(base: f64, p: f64, inv_ln_gamma: f64) -> (f64, f64, f64) {
    let u = p * inv_ln_gamma + (base * inv_ln_gamma + 0.5);
    let rounded = u + ROUND_MAGIC;
    (u, rounded, u - (rounded - ROUND_MAGIC))
}

/// Whether [`index_estimate`]'s integer is certainly the index.
#[inline(always)]
fn index_sure(u: f64, d: f64) -> bool {
    u.abs() < (1u64 << 30) as f64 && d.abs() < 0.5 - INDEX_MARGIN
}

/// [`index_of`] of `|x|` for up to [`BUF_CAP`] values at once (any value for a zero). The same
/// arithmetic as [`index_fast`], written as stages over arrays so that the compiler evaluates
/// the series of two values per SIMD instruction and the CPU overlaps the rest; a value whose
/// fast estimate is not certain gets [`index_of_exact`], exactly as in [`index_of`].
#[inline(always)]
fn batch_indices(vals: &[f64], inv_ln_gamma: f64) -> [i32; BUF_CAP] {
    let n = vals.len().min(BUF_CAP);
    let mut m = [1.0f64; BUF_CAP];
    let mut inv_c = [1.0f64; BUF_CAP];
    let mut base = [0.0f64; BUF_CAP];
    let mut normal = [false; BUF_CAP];
    for i in 0..n {
        (normal[i], m[i], inv_c[i], base[i]) = ln_split(vals[i].abs());
    }
    let mut u = [0.0f64; BUF_CAP];
    let mut d = [0.0f64; BUF_CAP];
    let mut rounded = [0.0f64; BUF_CAP];
    for i in 0..BUF_CAP {
        (u[i], rounded[i], d[i]) = index_estimate(base[i], ln_series(m[i], inv_c[i]), inv_ln_gamma);
    }
    let mut out = [0i32; BUF_CAP];
    for i in 0..n {
        out[i] = if normal[i] && index_sure(u[i], d[i]) {
            rounded[i].to_bits() as u32 as i32
        } else if vals[i] == 0.0 {
            0
        } else {
            index_of_exact(vals[i].abs(), inv_ln_gamma)
        };
    }
    out
}

// ---------------------------------------------------------------------------
// Bucket index by table lookup
// ---------------------------------------------------------------------------

/// One row of a binade's index table: the magnitudes whose bits fall in one 2^-row_bits slice
/// of the binade's mantissas. A magnitude with bits below `lo` has index `idx`, one at or above
/// `hi` has `idx + 1`; one in between (near the row's bucket boundary) is not decided here.
/// A row without a boundary has `lo = hi = u64::MAX`; a row the table cannot decide has `lo` at
/// the row's first bits and `hi = u64::MAX`, so none of its magnitudes is decided.
#[derive(Clone, Copy, Debug, PartialEq)]
struct IndexRow {
    lo: u64,
    hi: u64,
    idx: i32,
}

impl IndexRow {
    /// `(index, decided)` for a magnitude of this row with these bits.
    #[inline(always)]
    fn lookup(self, bits: u64) -> (i32, bool) {
        let up = bits >= self.hi;
        (self.idx + up as i32, bits < self.lo || up)
    }
}

/// Ulps on each side of a row's boundary that the table leaves undecided: at least 2^-25 of the
/// magnitude, which is at least 1.4e-7 in index units for every alpha (ln γ <= 0.21), far above
/// the 2e-9 by which `ln(mag) * inv` as computed can differ from the exact value (an ulp of
/// libm's ln, |ln| <= 745, times inv <= 5000, plus the product's rounding).
const ROW_GUARD_ULPS: u64 = 1 << 28;
/// At most 2^10 rows per binade; a smaller alpha (below about 0.00054) has no table.
const MAX_ROW_BITS: u32 = 10;

/// The index of every normal magnitude, for one alpha, as a table per binade (built when a
/// magnitude of that binade first needs it) that decides almost every magnitude by two integer
/// comparisons, exactly as [`index_of_exact`] would: a row is built from `index_of_exact` at its
/// two ends and at its boundary (found by bisection), and a row whose ends are not clearly
/// inside their buckets, or which holds more than one boundary, decides nothing.
///
/// Why a decided magnitude gets the definition's index: with g(x) = ln(x) / ln γ (exact) and
/// c(x) = `ln(x) * inv` as computed, |c - g| < 2e-9. A row's first magnitude S has
/// c(S) - (k - 1) >= [`INDEX_MARGIN`] and its last E has k' - c(E) >= INDEX_MARGIN (k, k' their
/// indices), so every x of the row has k - 1 < c(x) and c(x) <= k' (g is increasing): its index
/// is k or k'. When k = k' that decides it. When k' = k + 1, the bisection ends at B with
/// c(B - 1 ulp) <= k < c(B), so g(B) is within 2e-9 of k, and an x at least [`ROW_GUARD_ULPS`]
/// below B has g(x) < k - 1.3e-7, so c(x) <= k; one at least that far above B has c(x) > k.
///
/// The tables are process-wide statics (a backend is one thread; tests run several), filled
/// once each: a slot per alpha in use, at most [`MAX_INDEX_TABLES`] alphas (the others use
/// [`batch_indices`]). A binade's rows take 24 * 2^row_bits bytes (3 KiB at the default alpha),
/// and only the binades values fall in are built.
struct IndexTable {
    /// `(1 / ln γ as bits, row bits)`; no row bits: this alpha's buckets are too narrow for a
    /// table.
    key: OnceLock<(u64, Option<u32>)>,
    /// By biased exponent (1 ..= 2046 are built on demand; 0, the subnormals, never).
    binades: [OnceLock<Box<[IndexRow]>>; 2047],
}

const MAX_INDEX_TABLES: usize = 4;

static INDEX_TABLES: [IndexTable; MAX_INDEX_TABLES] = [const {
    IndexTable {
        key: OnceLock::new(),
        binades: [const { OnceLock::new() }; 2047],
    }
}; MAX_INDEX_TABLES];

/// Rows per binade (as bits) for an alpha: a row spans at most 2^-row_bits * inv index units;
/// kept below 0.9 so that it holds at most one boundary, with room for the margins.
fn row_bits_for(inv_ln_gamma: f64) -> Option<u32> {
    (0..=MAX_ROW_BITS).find(|&b| inv_ln_gamma / (1u64 << b) as f64 <= 0.9)
}

impl IndexTable {
    /// The table of this alpha, if it has one: the first slot is the default alpha's, the
    /// others go to the first alphas that ask (for the life of the process).
    fn of(inv_ln_gamma: f64) -> Option<(&'static IndexTable, u32)> {
        let bits = inv_ln_gamma.to_bits();
        let first = &INDEX_TABLES[0];
        let &(b, rb) = first.key.get_or_init(|| {
            let inv = Params::new(DEFAULT_ALPHA).map_or(0.0, |p| p.inv_ln_gamma);
            (inv.to_bits(), row_bits_for(inv))
        });
        if b == bits {
            return rb.map(|rb| (first, rb));
        }
        for t in &INDEX_TABLES[1..] {
            let &(b, rb) = t.key.get_or_init(|| (bits, row_bits_for(inv_ln_gamma)));
            if b == bits {
                return rb.map(|rb| (t, rb));
            }
        }
        None
    }

    /// A table outside the process-wide slots (tests check alphas that have none).
    #[cfg(test)]
    fn new_boxed(inv_ln_gamma: f64) -> (Box<IndexTable>, Option<u32>) {
        let t = Box::new(IndexTable {
            key: OnceLock::new(),
            binades: [const { OnceLock::new() }; 2047],
        });
        let rb = row_bits_for(inv_ln_gamma);
        t.key.set((inv_ln_gamma.to_bits(), rb)).unwrap();
        (t, rb)
    }

    /// The rows of biased exponent `e` (1 ..= 2046), built if needed.
    fn binade(&self, e: usize, row_bits: u32) -> &[IndexRow] {
        let inv = f64::from_bits(self.key.get().map_or(0, |k| k.0));
        self.binades[e].get_or_init(|| build_binade(e as u64, row_bits, inv))
    }
}

/// The rows of the binade with biased exponent `e` (normal magnitudes 2^(e - 1023) ..).
fn build_binade(e: u64, row_bits: u32, inv_ln_gamma: f64) -> Box<[IndexRow]> {
    let shift = 52 - row_bits;
    let c = |bits: u64| f64::from_bits(bits).ln() * inv_ln_gamma;
    (0..1u64 << row_bits)
        .map(|j| {
            let start = (e << 52) | (j << shift);
            let end = start + (1u64 << shift) - 1;
            let undecided = IndexRow {
                lo: start,
                hi: u64::MAX,
                idx: 0,
            };
            let (cs, ce) = (c(start), c(end));
            let (ks, ke) = (ceil_i32(cs), ceil_i32(ce));
            if cs - (ks as f64 - 1.0) < INDEX_MARGIN || ke as f64 - ce < INDEX_MARGIN {
                return undecided;
            }
            if ke == ks {
                return IndexRow {
                    lo: u64::MAX,
                    hi: u64::MAX,
                    idx: ks,
                };
            }
            if ke != ks.wrapping_add(1) {
                return undecided;
            }
            // index(a) <= ks and index(b) > ks throughout
            let (mut a, mut b) = (start, end);
            while b - a > 1 {
                let m = a + (b - a) / 2;
                if ceil_i32(c(m)) <= ks {
                    a = m;
                } else {
                    b = m;
                }
            }
            IndexRow {
                lo: b - ROW_GUARD_ULPS,
                hi: b + ROW_GUARD_ULPS,
                idx: ks,
            }
        })
        .collect()
}

/// [`batch_indices`] of a full buffer by the alpha's [`IndexTable`]: the same indices (a lane
/// the table does not decide, a zero or a subnormal gets [`index_of`]).
#[inline(always)]
fn batch_indices_tabled(vals: &[f64; BUF_CAP], inv_ln_gamma: f64) -> [i32; BUF_CAP] {
    match IndexTable::of(inv_ln_gamma) {
        Some((table, row_bits)) => table_indices(table, row_bits, vals, inv_ln_gamma),
        None => batch_indices(vals, inv_ln_gamma),
    }
}

#[inline(always)]
fn table_indices(
    table: &IndexTable,
    row_bits: u32,
    vals: &[f64; BUF_CAP],
    inv_ln_gamma: f64,
) -> [i32; BUF_CAP] {
    let shift = 52 - row_bits;
    let mask = (1usize << row_bits) - 1;
    let mut out = [0i32; BUF_CAP];
    let mut sure = [false; BUF_CAP];
    for i in 0..BUF_CAP {
        let bits = vals[i].abs().to_bits();
        let e = (bits >> 52) as usize;
        if let Some(rows) = table.binades.get(e).and_then(OnceLock::get) {
            if let Some(&row) = rows.get((bits >> shift) as usize & mask) {
                (out[i], sure[i]) = row.lookup(bits);
            }
        }
    }
    if sure.iter().all(|&s| s) {
        return out;
    }
    for i in 0..BUF_CAP {
        if sure[i] {
            continue;
        }
        let mag = vals[i].abs();
        let bits = mag.to_bits();
        let e = (bits >> 52) as usize;
        out[i] = if mag == 0.0 {
            0
        } else if (1..=2046).contains(&e) {
            let row = table.binade(e, row_bits)[(bits >> shift) as usize & mask];
            match row.lookup(bits) {
                (k, true) => k,
                _ => index_of(mag, inv_ln_gamma),
            }
        } else {
            index_of(mag, inv_ln_gamma)
        };
    }
    out
}

fn index_bounds(inv_ln_gamma: f64) -> (i64, i64) {
    (
        index_of(TINY, inv_ln_gamma) as i64,
        index_of(f64::MAX, inv_ln_gamma) as i64,
    )
}

impl Params {
    fn new(alpha: f64) -> Result<Self, SketchError> {
        if !(MIN_ALPHA..=MAX_ALPHA).contains(&alpha) {
            return Err(SketchError::AlphaOutOfRange(alpha));
        }
        let ln_gamma = alpha.ln_1p() - (-alpha).ln_1p();
        let inv = 1.0 / ln_gamma;
        let (kmin, kmax) = index_bounds(inv);
        Ok(Params {
            alpha,
            ln_gamma,
            inv_ln_gamma: inv,
            ln_rep: (-alpha).ln_1p(),
            kmin: kmin as i32,
            kmax: kmax as i32,
        })
    }

    /// Representative magnitude of bucket `idx` (never 0, may be +inf for the
    /// very last bucket; callers clamp to [min, max]).
    #[inline]
    fn rep(&self, idx: i32) -> f64 {
        (idx as f64 * self.ln_gamma + self.ln_rep).exp().max(TINY)
    }
}

// ---------------------------------------------------------------------------
// Exact sum (fixed-point superaccumulator)
// ---------------------------------------------------------------------------

/// Number of 32-bit limbs. Bit 0 has weight 2^-1074; finite |x| < 2^2098 units;
/// |sum| < 2^(2098+64) units; 68*32 = 2176 bits leaves room for the sign.
const LIMBS: usize = 68;
const LIMB_MASK: i64 = 0xFFFF_FFFF;
/// Normalise after this many un-carried additions (each adds < 2^32 per limb).
const PENDING_LIMIT: u32 = 1 << 30;
/// |x| < 2^MAX_VALUE_BITS units for every finite x.
const MAX_VALUE_BITS: u32 = 2098;

#[inline(always)]
fn decompose(x: f64) -> (u64, u32) {
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as u32;
    let frac = bits & ((1u64 << 52) - 1);
    if exp == 0 {
        (frac, 0)
    } else {
        (frac | (1u64 << 52), exp - 1)
    }
}

/// Bit of the fixed-point sum that weighs 2^0 (bit 0 weighs 2^-1074): `decompose(1.0)` is
/// `(2^52, 1022)`, i.e. 2^52 * 2^1022 units (checked by a test). The working buffer's integer
/// accumulator is added at this bit.
const UNIT_BIT: u32 = 1074;
const UNIT_LIMB: usize = (UNIT_BIT / 32) as usize;
const UNIT_SHIFT: u32 = UNIT_BIT % 32;
// any i64 magnitude (<= 2^63) shifted by UNIT_SHIFT fits the three limbs from UNIT_LIMB
const _: () = assert!(64 + UNIT_SHIFT <= 96 && UNIT_LIMB + 3 <= LIMBS);

/// Signed contributions to limbs `UNIT_LIMB..UNIT_LIMB + 3` of the integer `v`, i.e. of
/// `v * 2^1074` units: exact for every i64 (like [`sum_parts`] for a float, one addition of
/// less than 2^32 per limb).
#[inline]
fn int_parts(v: i64) -> [i64; 3] {
    let w = (v.unsigned_abs() as u128) << UNIT_SHIFT;
    let l = [
        (w as u64 as i64) & LIMB_MASK,
        ((w >> 32) as u64 as i64) & LIMB_MASK,
        ((w >> 64) as u64 as i64) & LIMB_MASK,
    ];
    if v < 0 {
        l.map(|c| -c)
    } else {
        l
    }
}

/// Add the integer `v` (at weight 2^0) to carry-save limbs, exactly.
#[inline]
fn add_int_to_limbs(l: &mut [i64; LIMBS], v: i64) {
    for (j, c) in int_parts(v).into_iter().enumerate() {
        l[UNIT_LIMB + j] = l[UNIT_LIMB + j].wrapping_add(c);
    }
}

/// Limb position and signed limb contributions of a finite x.
#[inline(always)]
fn sum_parts(x: f64) -> (usize, [i64; 3]) {
    let (m, p) = decompose(x);
    let k = (p / 32) as usize;
    let v = (m as u128) << (p % 32);
    let l0 = (v as u64 as i64) & LIMB_MASK;
    let l1 = ((v >> 32) as u64 as i64) & LIMB_MASK;
    let l2 = ((v >> 64) as u64 as i64) & LIMB_MASK;
    if x.is_sign_negative() {
        (k, [-l0, -l1, -l2])
    } else {
        (k, [l0, l1, l2])
    }
}

fn normalize_limbs(l: &mut [i64; LIMBS]) {
    let mut carry: i64 = 0;
    for i in 0..LIMBS - 1 {
        let v = l[i].wrapping_add(carry);
        l[i] = v & LIMB_MASK;
        carry = v >> 32;
    }
    l[LIMBS - 1] = l[LIMBS - 1].wrapping_add(carry);
}

/// Sign and magnitude digits of normalized limbs.
fn sign_magnitude(l: &[i64; LIMBS]) -> (bool, [u32; LIMBS]) {
    let neg = l[LIMBS - 1] < 0;
    let mut t = *l;
    if neg {
        for v in t.iter_mut() {
            *v = v.wrapping_neg();
        }
        normalize_limbs(&mut t);
    }
    let mut mag = [0u32; LIMBS];
    for i in 0..LIMBS {
        mag[i] = t[i] as u32;
    }
    (neg, mag)
}

fn from_sign_magnitude(neg: bool, mag: &[u32; LIMBS]) -> [i64; LIMBS] {
    let mut l = [0i64; LIMBS];
    for i in 0..LIMBS {
        let v = mag[i] as i64;
        l[i] = if neg { -v } else { v };
    }
    normalize_limbs(&mut l);
    l
}

/// Position of the highest set bit of a magnitude (None if zero).
fn mag_top_bit(mag: &[u32; LIMBS]) -> Option<u32> {
    let t = mag.iter().rposition(|&d| d != 0)?;
    Some(t as u32 * 32 + (31 - mag[t].leading_zeros()))
}

/// Fraction below the unit (2^-1074) for rounding a quotient.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Frac {
    Zero,
    Below,
    Half,
    Above,
}

fn pow2(e: i32) -> f64 {
    // valid for e in [-1022, 1023]
    f64::from_bits(((e + 1023) as u64) << 52)
}

/// `x * 2^e` for an integer-valued x <= 2^53 where the result is exactly
/// representable or overflows.
fn ldexp(mut x: f64, mut e: i32) -> f64 {
    while e > 1023 {
        x *= pow2(1023);
        e -= 1023;
        if x.is_infinite() {
            return x;
        }
    }
    if e < -1022 {
        x *= pow2(-1022);
        e += 1022;
    }
    x * pow2(e)
}

fn mag_bit(mag: &[u32; LIMBS], b: u32) -> bool {
    let w = (b / 32) as usize;
    w < LIMBS && (mag[w] >> (b % 32)) & 1 == 1
}

fn mag_any_below(mag: &[u32; LIMBS], b: u32) -> bool {
    let w = (b / 32) as usize;
    if mag[..w.min(LIMBS)].iter().any(|&d| d != 0) {
        return true;
    }
    w < LIMBS && (mag[w] & ((1u32 << (b % 32)) - 1)) != 0
}

/// Correctly rounded (nearest, ties to even) conversion of
/// `±(mag + frac) * 2^-1074` to f64.
fn mag_to_f64(neg: bool, mag: &[u32; LIMBS], frac: Frac) -> f64 {
    let r = match mag_top_bit(mag) {
        None => {
            if frac == Frac::Above {
                TINY
            } else {
                0.0
            }
        }
        Some(h) => {
            let s = h.saturating_sub(52);
            let w = (s / 32) as usize;
            let mut acc: u128 = 0;
            for j in 0..3 {
                if w + j < LIMBS {
                    acc |= (mag[w + j] as u128) << (32 * j);
                }
            }
            let keep = ((acc >> (s % 32)) as u64) & ((1u64 << 53) - 1);
            let up = if s == 0 {
                match frac {
                    Frac::Zero | Frac::Below => false,
                    Frac::Above => true,
                    Frac::Half => keep & 1 == 1,
                }
            } else {
                let half = mag_bit(mag, s - 1);
                let sticky = frac != Frac::Zero || mag_any_below(mag, s - 1);
                half && (sticky || keep & 1 == 1)
            };
            ldexp((keep + up as u64) as f64, s as i32 - 1074)
        }
    };
    if neg {
        -r
    } else {
        r
    }
}

#[derive(Clone, Debug)]
struct ExactSum {
    limbs: [i64; LIMBS],
    pending: u32,
}

impl PartialEq for ExactSum {
    fn eq(&self, other: &Self) -> bool {
        self.normalized() == other.normalized()
    }
}

impl ExactSum {
    fn new() -> Self {
        ExactSum {
            limbs: [0; LIMBS],
            pending: 0,
        }
    }

    #[inline]
    fn bump(&mut self) {
        self.pending += 1;
        if self.pending >= PENDING_LIMIT {
            self.normalize();
        }
    }

    #[inline]
    fn add(&mut self, x: f64) {
        let (k, p) = sum_parts(x);
        for j in 0..3 {
            self.limbs[k + j] = self.limbs[k + j].wrapping_add(p[j]);
        }
        self.bump();
    }

    fn add_n(&mut self, x: f64, n: u64) {
        let (m, p) = decompose(x);
        let k = (p / 32) as usize;
        let sh = p % 32;
        let prod = (m as u128) * (n as u128);
        let neg = x.is_sign_negative();
        for j in 0..5usize {
            let chunk = if j == 0 {
                ((prod << sh) as u64 as i64) & LIMB_MASK
            } else {
                (prod.checked_shr(32 * j as u32 - sh).unwrap_or(0) as u64 as i64) & LIMB_MASK
            };
            if k + j < LIMBS {
                let c = if neg { -chunk } else { chunk };
                self.limbs[k + j] = self.limbs[k + j].wrapping_add(c);
            }
        }
        self.bump();
    }

    fn normalize(&mut self) {
        normalize_limbs(&mut self.limbs);
        self.pending = 0;
    }

    fn normalized(&self) -> [i64; LIMBS] {
        let mut l = self.limbs;
        normalize_limbs(&mut l);
        l
    }

    fn add_sum(&mut self, other: &ExactSum) {
        self.normalize();
        let o = other.normalized();
        for i in 0..LIMBS {
            self.limbs[i] = self.limbs[i].wrapping_add(o[i]);
        }
        self.normalize();
    }

    fn to_f64(&self) -> f64 {
        let (neg, mag) = sign_magnitude(&self.normalized());
        mag_to_f64(neg, &mag, Frac::Zero)
    }

    /// Correctly rounded exact sum / n (n > 0).
    fn mean(&self, n: u64) -> f64 {
        let (neg, mag) = sign_magnitude(&self.normalized());
        let d = n as u128;
        let mut q = [0u32; LIMBS];
        let mut r: u128 = 0;
        for i in (0..LIMBS).rev() {
            let cur = (r << 32) | mag[i] as u128;
            q[i] = (cur / d) as u32;
            r = cur % d;
        }
        let frac = if r == 0 {
            Frac::Zero
        } else {
            match (2 * r).cmp(&d) {
                std::cmp::Ordering::Less => Frac::Below,
                std::cmp::Ordering::Equal => Frac::Half,
                std::cmp::Ordering::Greater => Frac::Above,
            }
        };
        mag_to_f64(neg, &q, frac)
    }
}

// ---------------------------------------------------------------------------
// Owned sketch
// ---------------------------------------------------------------------------

/// Sparse store: sorted by index, counts > 0.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
struct Store {
    bins: Vec<(i32, u64)>,
}

impl Store {
    #[inline]
    fn add(&mut self, idx: i32, n: u64) {
        if let Some(last) = self.bins.last_mut() {
            if last.0 == idx {
                last.1 = last.1.wrapping_add(n);
                return;
            }
        }
        match self.bins.binary_search_by_key(&idx, |b| b.0) {
            Ok(p) => self.bins[p].1 = self.bins[p].1.wrapping_add(n),
            Err(p) => self.bins.insert(p, (idx, n)),
        }
    }

    fn merge(&mut self, other: &Store) {
        if other.bins.is_empty() {
            return;
        }
        let a = std::mem::take(&mut self.bins);
        let b = &other.bins;
        let mut out = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            match a[i].0.cmp(&b[j].0) {
                std::cmp::Ordering::Less => {
                    out.push(a[i]);
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    out.push(b[j]);
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    out.push((a[i].0, a[i].1.wrapping_add(b[j].1)));
                    i += 1;
                    j += 1;
                }
            }
        }
        out.extend_from_slice(&a[i..]);
        out.extend_from_slice(&b[j..]);
        self.bins = out;
    }

    fn range(&self) -> Option<(i64, i64)> {
        Some((self.bins.first()?.0 as i64, self.bins.last()?.0 as i64))
    }
}

/// What the checks of a non-empty sketch read beyond its buckets: counts, extremes, the
/// (first, last) non-empty bucket of the positive and negative stores, the normalised sum.
/// Shared by [`Sketch::validate`] and the merge of one working state into another, which
/// checks its input without building a sketch of it.
struct Shape {
    count: u64,
    zero: u64,
    min: f64,
    max: f64,
    ranges: [Option<(i64, i64)>; 2],
    sum: [i64; LIMBS],
}

impl Shape {
    /// The check of a sketch with `count == 0`: nothing else in it either.
    fn check_empty(&self) -> Result<(), String> {
        if self.zero != 0 || self.ranges != [None, None] || self.sum != [0; LIMBS] {
            return Err("empty sketch with data".into());
        }
        Ok(())
    }

    /// The first checks of a sketch with `count > 0` (before its buckets are read).
    fn check_extremes(&self) -> Result<(), String> {
        let (min, max) = (self.min, self.max);
        if !min.is_finite() || !max.is_finite() || min > max {
            return Err(format!("invalid min/max ({min}, {max})"));
        }
        if min.to_bits() == (-0.0f64).to_bits() || max.to_bits() == (-0.0f64).to_bits() {
            return Err("negative zero min/max".into());
        }
        Ok(())
    }

    /// The other checks of a sketch with `count > 0` whose bucket counts (each in range) and
    /// zero count add up to `total`.
    fn check_rest(&self, inv: f64, total: u64) -> Result<(), String> {
        let (min, max) = (self.min, self.max);
        if total != self.count {
            return Err(format!(
                "bucket counts sum to {total}, count is {}",
                self.count
            ));
        }
        if self.zero > 0 && !(min <= 0.0 && max >= 0.0) {
            return Err("zeros outside [min, max]".into());
        }
        match self.ranges[1] {
            None if min < 0.0 => return Err("min < 0 but no negative buckets".into()),
            Some(_) if min >= 0.0 => return Err("negative buckets but min >= 0".into()),
            Some((lo, hi)) => {
                if index_of(-min, inv) as i64 != hi {
                    return Err("min not in the most negative bucket".into());
                }
                if max < 0.0 && index_of(-max, inv) as i64 != lo {
                    return Err("max not in the least negative bucket".into());
                }
            }
            None => {}
        }
        match self.ranges[0] {
            None if max > 0.0 => return Err("max > 0 but no positive buckets".into()),
            Some(_) if max <= 0.0 => return Err("positive buckets but max <= 0".into()),
            Some((lo, hi)) => {
                if index_of(max, inv) as i64 != hi {
                    return Err("max not in the largest bucket".into());
                }
                if min > 0.0 && index_of(min, inv) as i64 != lo {
                    return Err("min not in the smallest bucket".into());
                }
            }
            None => {}
        }
        let norm = &self.sum;
        let top = norm[LIMBS - 1];
        if !(i32::MIN as i64..=i32::MAX as i64).contains(&top) {
            return Err("sum out of range".into());
        }
        let (neg, mag) = sign_magnitude(norm);
        if let Some(h) = mag_top_bit(&mag) {
            let bound = MAX_VALUE_BITS + (64 - self.count.leading_zeros());
            if h >= bound {
                return Err("sum magnitude impossible for count".into());
            }
            if neg && min >= 0.0 {
                return Err("negative sum of non-negative values".into());
            }
            if !neg && max <= 0.0 {
                return Err("positive sum of non-positive values".into());
            }
        } else if min > 0.0 || max < 0.0 {
            return Err("zero sum of same-signed non-zero values".into());
        }
        Ok(())
    }
}

/// Owned quantile sketch.
#[derive(Clone, Debug, PartialEq)]
pub struct Sketch {
    p: Params,
    count: u64,
    /// +inf when empty
    min: f64,
    /// -inf when empty
    max: f64,
    zero: u64,
    sum: ExactSum,
    neg: Store,
    pos: Store,
}

impl Default for Sketch {
    fn default() -> Self {
        Sketch::with_params(Params::new(DEFAULT_ALPHA).unwrap_or(Params {
            alpha: DEFAULT_ALPHA,
            ln_gamma: 0.0,
            inv_ln_gamma: 0.0,
            ln_rep: 0.0,
            kmin: 0,
            kmax: 0,
        }))
    }
}

impl Sketch {
    fn with_params(p: Params) -> Self {
        Sketch {
            p,
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            zero: 0,
            sum: ExactSum::new(),
            neg: Store::default(),
            pos: Store::default(),
        }
    }

    /// Empty sketch with relative accuracy `alpha` in `[1e-4, 0.1]`.
    pub fn new(alpha: f64) -> Result<Self, SketchError> {
        Ok(Self::with_params(Params::new(alpha)?))
    }

    pub fn alpha(&self) -> f64 {
        self.p.alpha
    }

    /// Add one finite value.
    pub fn add(&mut self, x: f64) -> Result<(), SketchError> {
        if !x.is_finite() {
            return Err(SketchError::InvalidValue(x));
        }
        self.count = self
            .count
            .checked_add(1)
            .ok_or(SketchError::CountOverflow)?;
        self.record(x, 1);
        self.sum.add(x);
        Ok(())
    }

    /// Add `n` copies of a finite value (exactly as `n` calls to `add`).
    pub fn add_n(&mut self, x: f64, n: u64) -> Result<(), SketchError> {
        if !x.is_finite() {
            return Err(SketchError::InvalidValue(x));
        }
        if n == 0 {
            return Ok(());
        }
        self.count = self
            .count
            .checked_add(n)
            .ok_or(SketchError::CountOverflow)?;
        self.record(x, n);
        self.sum.add_n(x, n);
        Ok(())
    }

    #[inline]
    fn record(&mut self, x: f64, n: u64) {
        if x == 0.0 {
            self.zero = self.zero.wrapping_add(n);
            self.min = self.min.min(0.0);
            self.max = self.max.max(0.0);
        } else {
            let idx = index_of(x.abs(), self.p.inv_ln_gamma);
            if x > 0.0 {
                self.pos.add(idx, n);
            } else {
                self.neg.add(idx, n);
            }
            if x < self.min {
                self.min = x;
            }
            if x > self.max {
                self.max = x;
            }
        }
    }

    /// Merge `other` into `self`. The result is identical (same encoding) to a
    /// sketch built from the concatenated input, whatever the merge order.
    pub fn merge(&mut self, other: &Sketch) -> Result<(), SketchError> {
        if self.p.alpha.to_bits() != other.p.alpha.to_bits() {
            return Err(SketchError::AlphaMismatch {
                left: self.p.alpha,
                right: other.p.alpha,
            });
        }
        if other.count == 0 {
            return Ok(());
        }
        self.count = self
            .count
            .checked_add(other.count)
            .ok_or(SketchError::CountOverflow)?;
        self.zero = self.zero.wrapping_add(other.zero);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum.add_sum(&other.sum);
        self.neg.merge(&other.neg);
        self.pos.merge(&other.pos);
        Ok(())
    }

    /// Merge two sketches into a new one.
    pub fn merged(a: &Sketch, b: &Sketch) -> Result<Sketch, SketchError> {
        let mut r = a.clone();
        r.merge(b)?;
        Ok(r)
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Number of exact zeros seen.
    pub fn zero_count(&self) -> u64 {
        self.zero
    }

    /// Number of non-empty buckets (both signs, zero count excluded).
    pub fn num_buckets(&self) -> usize {
        self.pos.bins.len() + self.neg.bins.len()
    }

    pub fn min(&self) -> Option<f64> {
        (self.count > 0).then_some(self.min)
    }

    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }

    /// Exact sum rounded to nearest f64 (ties to even); ±inf if the exact sum
    /// is beyond the f64 range.
    pub fn sum(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum.to_f64())
    }

    /// Exact sum / count, correctly rounded (never overflows).
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum.mean(self.count))
    }

    /// Buckets in ascending value order: (unclamped representative, count).
    fn walk(&self, mut f: impl FnMut(f64, u64) -> bool) {
        for &(i, c) in self.neg.bins.iter().rev() {
            if !f(-self.p.rep(i), c) {
                return;
            }
        }
        if self.zero > 0 && !f(0.0, self.zero) {
            return;
        }
        for &(i, c) in &self.pos.bins {
            if !f(self.p.rep(i), c) {
                return;
            }
        }
    }

    #[inline]
    fn clamp(&self, v: f64) -> f64 {
        v.max(self.min).min(self.max)
    }

    /// Estimate of `percentile_disc(q)`: the value of rank
    /// `r = clamp(ceil(q * n), 1, n)` (computed in f64 exactly like
    /// PostgreSQL), returned as its bucket representative clamped to
    /// `[min, max]`; rank 1 returns exactly `min`, rank n exactly `max`.
    pub fn quantile(&self, q: f64) -> Result<Option<f64>, SketchError> {
        if !(0.0..=1.0).contains(&q) {
            return Err(SketchError::QuantileOutOfRange(q));
        }
        if self.count == 0 {
            return Ok(None);
        }
        let n = self.count;
        let r = ((q * n as f64).ceil() as u64).clamp(1, n);
        if r == 1 {
            return Ok(Some(self.min));
        }
        if r == n {
            return Ok(Some(self.max));
        }
        let mut seen = 0u64;
        let mut out = self.max;
        self.walk(|v, c| {
            seen = seen.saturating_add(c);
            if seen >= r {
                out = v;
                false
            } else {
                true
            }
        });
        Ok(Some(self.clamp(out)))
    }

    /// Several quantiles at once.
    pub fn quantiles(&self, qs: &[f64]) -> Result<Vec<Option<f64>>, SketchError> {
        qs.iter().map(|&q| self.quantile(q)).collect()
    }

    /// Estimated fraction of values `<= v`.
    ///
    /// Definition: every value is represented by its bucket's estimate
    /// `est(x)` (the representative clamped to `[min, max]`, exactly 0 for
    /// zeros), the same value `quantile` reports; `rank(v)` is the fraction of
    /// values with `est(x) <= v`. Hence `rank(v) == 0` for `v < min`,
    /// `rank(v) == 1` for `v >= max`, it is monotone in `v`, and (since
    /// `|est(x) - x| <= alpha*|x|`) it lies between the exact fractions at
    /// `v/(1+alpha)` and `v/(1-alpha)` (for negative v the two swap).
    /// `v` may be ±inf; NaN is an error.
    pub fn rank(&self, v: f64) -> Result<Option<f64>, SketchError> {
        if v.is_nan() {
            return Err(SketchError::InvalidValue(v));
        }
        if self.count == 0 {
            return Ok(None);
        }
        if v < self.min {
            return Ok(Some(0.0));
        }
        if v >= self.max {
            return Ok(Some(1.0));
        }
        let mut acc = 0u64;
        self.walk(|r, c| {
            if self.clamp(r) <= v {
                acc = acc.saturating_add(c);
                true
            } else {
                false
            }
        });
        Ok(Some(acc as f64 / self.count as f64))
    }

    /// Internal consistency checks (used by decode and working_to_sketch).
    fn validate(&self) -> Result<(), String> {
        let shape = Shape {
            count: self.count,
            zero: self.zero,
            min: self.min,
            max: self.max,
            ranges: [self.pos.range(), self.neg.range()],
            sum: self.sum.normalized(),
        };
        if self.count == 0 {
            return shape.check_empty();
        }
        shape.check_extremes()?;
        let mut total = self.zero;
        for store in [&self.neg, &self.pos] {
            let mut prev: Option<i32> = None;
            for &(i, c) in &store.bins {
                if c == 0 {
                    return Err("empty bucket stored".into());
                }
                if i < self.p.kmin || i > self.p.kmax {
                    return Err(format!("bucket index {i} out of range"));
                }
                if prev.is_some_and(|p| p >= i) {
                    return Err("bucket indices not increasing".into());
                }
                prev = Some(i);
                total = total.checked_add(c).ok_or("bucket counts overflow")?;
            }
        }
        shape.check_rest(self.p.inv_ln_gamma, total)
    }

    // -----------------------------------------------------------------------
    // Compact encoding
    // -----------------------------------------------------------------------

    /// Canonical compact encoding (equal sketches <=> equal bytes):
    ///
    /// ```text
    /// u8      version = 1
    /// f64 LE  alpha
    /// varint  count                 (if 0: end of encoding)
    /// f64 LE  min, f64 LE max
    /// varint  zero_count
    /// sum:    varint (n_limbs*2 + negative), then n_limbs x
    ///         (varint limb_index_gap, varint limb_value 1..2^32-1)
    ///         sign/magnitude of the exact sum in units of 2^-1074,
    ///         32-bit limbs, only non-zero limbs, gap = index - (prev_index+1)
    /// store negative, store positive (negative indexed by |x|):
    ///         varint n_runs, then per run:
    ///           first run: zigzag varint start index; later runs:
    ///           varint gap = start - (prev_run_last + 1), >= 3
    ///           varint run_len >= 1, run_len x varint count
    ///         a run starts and ends with a non-zero count and contains
    ///         at most 2 consecutive zero counts (gaps <= 2 are inlined).
    /// ```
    /// varint = unsigned LEB128, minimal length.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + 3 * self.num_buckets());
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&self.p.alpha.to_bits().to_le_bytes());
        put_varint(&mut out, self.count);
        if self.count == 0 {
            return out;
        }
        out.extend_from_slice(&self.min.to_bits().to_le_bytes());
        out.extend_from_slice(&self.max.to_bits().to_le_bytes());
        put_varint(&mut out, self.zero);
        let (neg, mag) = sign_magnitude(&self.sum.normalized());
        let nz: Vec<usize> = (0..LIMBS).filter(|&i| mag[i] != 0).collect();
        put_varint(&mut out, (nz.len() as u64) * 2 + neg as u64);
        let mut next = 0usize;
        for &i in &nz {
            put_varint(&mut out, (i - next) as u64);
            put_varint(&mut out, mag[i] as u64);
            next = i + 1;
        }
        encode_store(&mut out, &self.neg);
        encode_store(&mut out, &self.pos);
        out
    }

    /// Decode a compact encoding; validates everything, never panics, and
    /// never allocates more than O(input length).
    pub fn decode(bytes: &[u8]) -> Result<Sketch, SketchError> {
        let mut r = Reader { b: bytes, p: 0 };
        let version = match r.u8() {
            Ok(v) => v,
            Err(_) => return corrupt("empty input"),
        };
        if version != FORMAT_VERSION {
            return Err(SketchError::UnsupportedVersion(version));
        }
        let alpha = r.f64()?;
        let p = match Params::new(alpha) {
            Ok(p) => p,
            Err(_) => return corrupt(format!("alpha {alpha} out of range")),
        };
        let mut s = Sketch::with_params(p);
        let count = r.varint()?;
        if count > 0 {
            s.count = count;
            s.min = r.f64()?;
            s.max = r.f64()?;
            s.zero = r.varint()?;
            let h = r.varint()?;
            let neg = h & 1 == 1;
            let n = h >> 1;
            if n > LIMBS as u64 || (n == 0 && neg) {
                return corrupt("bad sum header");
            }
            let mut mag = [0u32; LIMBS];
            let mut next = 0u64;
            for _ in 0..n {
                let gap = r.varint()?;
                let idx = next.checked_add(gap).filter(|&i| i < LIMBS as u64);
                let Some(idx) = idx else {
                    return corrupt("sum limb index out of range");
                };
                let v = r.varint()?;
                if v == 0 || v > u32::MAX as u64 {
                    return corrupt("bad sum limb");
                }
                mag[idx as usize] = v as u32;
                next = idx + 1;
            }
            s.sum.limbs = from_sign_magnitude(neg, &mag);
            s.neg = decode_store(&mut r, &p)?;
            s.pos = decode_store(&mut r, &p)?;
        }
        if r.p != bytes.len() {
            return corrupt(format!("{} trailing bytes", bytes.len() - r.p));
        }
        s.validate().map_err(SketchError::Corrupt)?;
        Ok(s)
    }

    /// Text form: `ddsk1:` + standard padded base64 of [`Sketch::encode`].
    pub fn to_text(&self) -> String {
        let mut s = String::from(TEXT_PREFIX);
        b64_encode_into(&self.encode(), &mut s);
        s
    }

    /// Parse the text form (surrounding ASCII whitespace allowed). Every
    /// failure, including an invalid payload, is reported as
    /// [`SketchError::Parse`].
    pub fn from_text(text: &str) -> Result<Sketch, SketchError> {
        let t = text.trim_matches(|c: char| c.is_ascii_whitespace());
        let Some(body) = t.strip_prefix(TEXT_PREFIX) else {
            return Err(SketchError::Parse(format!(
                "expected text starting with \"{TEXT_PREFIX}\""
            )));
        };
        let bytes = b64_decode(body).map_err(SketchError::Parse)?;
        Sketch::decode(&bytes).map_err(|e| SketchError::Parse(e.to_string()))
    }
}

// ---------------------------------------------------------------------------
// Varint / store codec
// ---------------------------------------------------------------------------

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// Longest run of empty buckets kept inside a run (costs 1 byte each).
const MAX_INLINE_GAP: i64 = 2;

fn encode_store(out: &mut Vec<u8>, st: &Store) {
    let bins = &st.bins;
    // a run ends where the next bucket is more than MAX_INLINE_GAP empty buckets away
    let breaks_after = |i: usize| bins[i + 1].0 as i64 - bins[i].0 as i64 - 1 > MAX_INLINE_GAP;
    let nruns = if bins.is_empty() {
        0
    } else {
        1 + (0..bins.len() - 1).filter(|&i| breaks_after(i)).count()
    };
    put_varint(out, nruns as u64);
    // at most: per run three 10-byte varints, per bucket a 10-byte count and two inline zeros
    out.reserve(30 * nruns + 12 * bins.len());
    let mut prev_last: i64 = 0;
    let mut a = 0usize;
    while a < bins.len() {
        let mut b = a + 1;
        while b < bins.len() && !breaks_after(b - 1) {
            b += 1;
        }
        let first = bins[a].0 as i64;
        let last = bins[b - 1].0 as i64;
        if a == 0 {
            put_varint(out, zigzag(first));
        } else {
            put_varint(out, (first - prev_last - 1) as u64);
        }
        put_varint(out, (last - first + 1) as u64);
        // every bucket of the run in turn, an empty one as a zero count (a walk over the
        // run's indices: no branch on whether a bucket is empty)
        let mut k = a;
        for idx in first..=last {
            let (i, c) = bins[k];
            let here = i as i64 == idx;
            put_varint(out, if here { c } else { 0 });
            k += here as usize;
        }
        prev_last = last;
        a = b;
    }
}

fn decode_store(r: &mut Reader, p: &Params) -> Result<Store, SketchError> {
    let nruns = r.varint()?;
    if nruns > (r.remaining() / 3) as u64 {
        return corrupt("too many runs");
    }
    if nruns == 0 {
        return Ok(Store::default());
    }
    let (kmin, kmax) = (p.kmin as i64, p.kmax as i64);
    // each bucket takes at least one byte of the input
    let mut bins = Vec::with_capacity(r.remaining().min(1 << 16));
    let mut prev_last: i64 = 0;
    for run in 0..nruns {
        let start = if run == 0 {
            unzigzag(r.varint()?)
        } else {
            let gap = r.varint()?;
            if gap < (MAX_INLINE_GAP + 1) as u64 || gap > (kmax - prev_last).max(0) as u64 {
                return corrupt("bad run gap");
            }
            prev_last + 1 + gap as i64
        };
        if start < kmin || start > kmax {
            return corrupt(format!("bucket index {start} out of range"));
        }
        let len = r.varint()?;
        if len == 0 || len > r.remaining() as u64 {
            return corrupt("bad run length");
        }
        let last = start + len as i64 - 1;
        if last > kmax {
            return corrupt("run exceeds index range");
        }
        // every count is written to the next free slot, which only a non-zero one keeps (no
        // branch on whether a bucket is empty); a zero is canonical inside a run only, and at
        // most MAX_INLINE_GAP in a row
        let mut k = bins.len();
        bins.resize(k + len as usize, (0, 0));
        let (mut zeros, mut bad) = (0i64, false);
        for j in 0..len as i64 {
            let c = r.varint()?;
            let empty = c == 0;
            zeros = if empty { zeros + 1 } else { 0 };
            bad |= empty & ((j == 0) | (j == len as i64 - 1) | (zeros > MAX_INLINE_GAP));
            bins[k] = ((start + j) as i32, c);
            k += !empty as usize;
        }
        bins.truncate(k);
        if bad {
            return corrupt("non-canonical empty buckets in run");
        }
        prev_last = last;
    }
    Ok(Store { bins })
}

struct Reader<'a> {
    b: &'a [u8],
    p: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.b.len() - self.p
    }

    fn u8(&mut self) -> Result<u8, SketchError> {
        match self.b.get(self.p) {
            Some(&v) => {
                self.p += 1;
                Ok(v)
            }
            None => corrupt("unexpected end of data"),
        }
    }

    fn f64(&mut self) -> Result<f64, SketchError> {
        match self.b.get(self.p..self.p + 8) {
            Some(s) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(s);
                self.p += 8;
                Ok(f64::from_bits(u64::from_le_bytes(a)))
            }
            None => corrupt("unexpected end of data"),
        }
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, SketchError> {
        // one byte: most bucket counts and gaps
        if let Some(&byte) = self.b.get(self.p) {
            if byte < 0x80 {
                self.p += 1;
                return Ok(byte as u64);
            }
        }
        let mut v = 0u64;
        for i in 0..10 {
            let byte = self.u8()?;
            if i == 9 && byte > 1 {
                return corrupt("varint overflow");
            }
            v |= ((byte & 0x7f) as u64) << (7 * i);
            if byte & 0x80 == 0 {
                if i > 0 && byte == 0 {
                    return corrupt("non-minimal varint");
                }
                return Ok(v);
            }
        }
        corrupt("varint too long")
    }
}

// ---------------------------------------------------------------------------
// Base64 (standard alphabet, padded, strict)
// ---------------------------------------------------------------------------

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64_encode_into(data: &[u8], out: &mut String) {
    out.reserve(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = (chunk[0] as u32) << 16 | (b1 as u32) << 8 | b2 as u32;
        out.push(B64[(n >> 18) as usize & 63] as char);
        out.push(B64[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            B64[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            B64[n as usize & 63] as char
        } else {
            '='
        });
    }
}

fn b64_val(c: u8) -> Option<u32> {
    match c {
        b'A'..=b'Z' => Some((c - b'A') as u32),
        b'a'..=b'z' => Some((c - b'a') as u32 + 26),
        b'0'..=b'9' => Some((c - b'0') as u32 + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

fn b64_decode(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    if b.is_empty() {
        return Err("empty base64 payload".into());
    }
    if !b.len().is_multiple_of(4) {
        return Err("base64 length is not a multiple of 4".into());
    }
    let nchunks = b.len() / 4;
    let mut out = Vec::with_capacity(nchunks * 3);
    for (ci, chunk) in b.chunks_exact(4).enumerate() {
        let pad = if ci + 1 == nchunks {
            chunk.iter().rev().take_while(|&&c| c == b'=').count()
        } else {
            0
        };
        if pad > 2 {
            return Err("invalid base64 padding".into());
        }
        let mut n = 0u32;
        for (j, &c) in chunk.iter().enumerate() {
            let v = if j >= 4 - pad {
                0
            } else {
                b64_val(c).ok_or_else(|| {
                    format!(
                        "invalid base64 character '{}'",
                        char::from(c).escape_default()
                    )
                })?
            };
            n = n << 6 | v;
        }
        if (pad == 1 && n & 0xff != 0) || (pad == 2 && n & 0xffff != 0) {
            return Err("non-canonical base64 padding bits".into());
        }
        out.push((n >> 16) as u8);
        if pad < 2 {
            out.push((n >> 8) as u8);
        }
        if pad < 1 {
            out.push(n as u8);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Working buffer
// ---------------------------------------------------------------------------
//
// Layout 3 (native endian, no alignment assumed). `working_add`, once per row, touches only the
// first four bytes and one slot of the value buffer right after them, so a row added to a state
// that is not in the CPU caches misses on one line (the buffer's next slot is usually in the
// line just read). The fields a flush updates follow the buffer:
//   0   u8   WORKING_MAGIC
//   1   u8   layout version (3)
//   2   u8   values waiting in the value buffer (0 ..= BUF_CAP)
//   3   u8   counter width in bytes (1, 2, 4 or 8): every counter of both windows has it
//   4   f64[BUF_CAP] value buffer: values added but not yet counted. `working_add` only appends
//            here; when the buffer is full they are all added to the counters, min, max and sum
//            in one loop, so the bucket computations of BUF_CAP values (and, when the state is
//            not in the CPU caches, their counter misses) overlap instead of following one
//            another row by row. Every reader counts them ([`working_to_sketch`],
//            [`working_count`]); merges and re-layouts leave them waiting.
//   then, at H_POS_OFF = 4 + 8 * BUF_CAP (layout 2's bytes 4..64, shifted by the buffer):
//   +0  i32  positive window first index
//   +4  f64  1/ln(gamma)
//   +12 u64  count (of the values flushed into the counters; the buffered ones are not in it)
//   +20 f64  min (+inf when empty)
//   +28 f64  max (-inf when empty)
//   +36 i64  integer part of the sum: an exact integer added at weight 2^0 to the limbs'
//            value (integral |x| < 2^53 go here; folded into the limbs before they are read)
//   +44 u32  positive window length
//   +48 i32  negative window first index;       +52 u32 negative window length
//   +56 u32  pending un-carried limb additions (only non-integral values bump it; they
//            touch the limbs anyway)
//   -- cold --
//   H_ALPHA       f64  alpha
//   H_ZERO        u64  zero count
//   H_REQ         4 x i32  pending growth request (pos lo, pos hi, neg lo, neg hi; lo>hi = none)
//   H_WIDEN       u8   pending widening request: the counter width the next re-layout makes
//                      (0 or the current width: none)
//   H_SUM         68 x i64 sum limbs (carry-save; the sum is their value plus the integer part)
//   HEADER        pos_len positive counts, then neg_len negative counts, each an unsigned
//                 integer of the counter width. A counter narrower than 8 bytes stays at or
//                 below `cnt_limit(width)`, BUF_CAP short of its maximum, so a flush of BUF_CAP
//                 values can never overflow it; a value that would pass the limit widens them
//                 all first. Narrow counters keep a state's hot part small: at 1 byte a
//                 64-byte line holds 64 buckets (a factor of 1.9 in value at alpha = 0.005)
//                 where 8-byte counters held 8, so many states touched in random order stay
//                 in the CPU caches.
// Bytes past the windows are spare capacity (content irrelevant).
// Layout 2 had no value buffer (its bytes 4..64 are this layout's H_POS_OFF..H_HOT_END), no
// widening request and 8-byte counters only; its cold fields started at byte 64.

const H_MAGIC: usize = 0;
const H_LAYOUT: usize = 1;
const H_NBUF: usize = 2;
const H_WIDTH: usize = 3;
/// Values a working buffer holds before it counts them.
const BUF_CAP: usize = 16;
const H_BUF: usize = 4;
/// Where layout 2's fields at bytes 4..64 are in this layout.
const HOT_SHIFT: usize = 8 * BUF_CAP;
const H_POS_OFF: usize = 4 + HOT_SHIFT;
const H_INV: usize = 8 + HOT_SHIFT;
const H_COUNT: usize = 16 + HOT_SHIFT;
const H_MIN: usize = 24 + HOT_SHIFT;
const H_MAX: usize = 32 + HOT_SHIFT;
const H_INT: usize = 40 + HOT_SHIFT;
const H_POS_LEN: usize = 48 + HOT_SHIFT;
const H_NEG_OFF: usize = 52 + HOT_SHIFT;
const H_NEG_LEN: usize = 56 + HOT_SHIFT;
const H_PENDING: usize = 60 + HOT_SHIFT;
/// End of the fields a flush updates (layout 2's first 64 bytes, plus the value buffer).
const H_HOT_END: usize = 64 + HOT_SHIFT;
const H_ALPHA: usize = H_HOT_END;
const H_ZERO: usize = H_ALPHA + 8;
const H_REQ: usize = H_ZERO + 8;
const H_WIDEN: usize = H_REQ + 16;
const H_SUM: usize = H_WIDEN + 8;
/// Counter width (bytes) of a fresh working buffer. Counters widen (1 -> 2 -> 4 -> 8 bytes, the
/// whole window at once) before one could overflow.
const INITIAL_WIDTH: u8 = 1;
// every field of the integral fast path ends within the hot part; cold fields follow it
const _: () = {
    assert!(H_MAGIC < H_LAYOUT && H_LAYOUT < H_NBUF && H_NBUF < H_WIDTH && H_WIDTH < H_BUF);
    assert!(H_BUF + 8 * BUF_CAP <= H_POS_OFF);
    assert!(H_POS_OFF + 4 <= H_INV && H_INV + 8 <= H_COUNT && H_COUNT + 8 <= H_MIN);
    assert!(H_MIN + 8 <= H_MAX && H_MAX + 8 <= H_INT && H_INT + 8 <= H_POS_LEN);
    assert!(H_POS_LEN + 4 <= H_NEG_OFF && H_NEG_OFF + 4 <= H_NEG_LEN);
    assert!(H_NEG_LEN + 4 <= H_PENDING && H_PENDING + 4 <= H_HOT_END);
    assert!(H_HOT_END <= H_ALPHA);
    assert!(H_ALPHA + 8 <= H_ZERO && H_ZERO + 8 <= H_REQ);
    assert!(H_REQ + 16 <= H_WIDEN && H_WIDEN + 8 <= H_SUM);
    assert!(BUF_CAP < 256);
};
/// Size of the working-buffer header.
pub const WORKING_HEADER_LEN: usize = H_SUM + 8 * LIMBS;
const HEADER: usize = WORKING_HEADER_LEN;
/// Minimum number of spare slots suggested on growth.
const MIN_SLACK_SLOTS: u64 = 128;

#[inline(always)]
fn rd8(b: &[u8], off: usize) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    a
}
#[inline(always)]
pub(crate) fn rd_u64(b: &[u8], off: usize) -> u64 {
    u64::from_ne_bytes(rd8(b, off))
}
#[inline(always)]
fn rd_i64(b: &[u8], off: usize) -> i64 {
    i64::from_ne_bytes(rd8(b, off))
}
#[inline(always)]
fn rd_f64(b: &[u8], off: usize) -> f64 {
    f64::from_bits(rd_u64(b, off))
}
#[inline(always)]
pub(crate) fn rd_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_ne_bytes(a)
}
#[inline(always)]
fn rd_i32(b: &[u8], off: usize) -> i32 {
    rd_u32(b, off) as i32
}
#[inline(always)]
pub(crate) fn wr_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}
#[inline(always)]
fn wr_i64(b: &mut [u8], off: usize, v: i64) {
    b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}
#[inline(always)]
fn wr_f64(b: &mut [u8], off: usize, v: f64) {
    wr_u64(b, off, v.to_bits());
}
#[inline(always)]
pub(crate) fn wr_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

/// Header length: the smallest valid working buffer (with empty windows).
/// Largest value a counter of `width` bytes holds in a working buffer (see the layout).
#[inline(always)]
fn cnt_limit(width: usize) -> u64 {
    if width >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * width)) - 1 - BUF_CAP as u64
    }
}

/// The narrowest counter width whose limit holds `v`.
fn width_for(v: u64) -> u8 {
    [1u8, 2, 4]
        .into_iter()
        .find(|&w| v <= cnt_limit(w as usize))
        .unwrap_or(8)
}

#[inline(always)]
fn rd_cnt(b: &[u8], off: usize, width: usize) -> u64 {
    match width {
        1 => rd_cnt_w::<1>(b, off),
        2 => rd_cnt_w::<2>(b, off),
        4 => rd_cnt_w::<4>(b, off),
        _ => rd_cnt_w::<8>(b, off),
    }
}

/// Store `v` (which fits `width`) at `off`.
#[inline(always)]
fn wr_cnt(b: &mut [u8], off: usize, width: usize, v: u64) {
    match width {
        1 => wr_cnt_w::<1>(b, off, v),
        2 => wr_cnt_w::<2>(b, off, v),
        4 => wr_cnt_w::<4>(b, off, v),
        _ => wr_cnt_w::<8>(b, off, v),
    }
}

/// Counter width of a working buffer's header: 1, 2, 4 or 8 bytes, else the buffer is corrupt.
#[inline(always)]
fn width_of(hdr: &[u8]) -> Result<usize, SketchError> {
    match hdr[H_WIDTH] {
        w @ (1 | 2 | 4 | 8) => Ok(w as usize),
        _ => corrupt("working counter width invalid"),
    }
}

pub fn working_min_len() -> usize {
    HEADER
}

/// Initialise a working buffer (any length >= [`working_min_len`]; extra
/// length is used as capacity for the bucket windows).
pub fn working_init(buf: &mut [u8], alpha: f64) -> Result<(), SketchError> {
    let p = Params::new(alpha)?;
    if buf.len() < HEADER {
        return Err(SketchError::BufferTooSmall {
            need: HEADER,
            got: buf.len(),
        });
    }
    buf[..HEADER].fill(0);
    buf[H_MAGIC] = WORKING_MAGIC;
    buf[H_LAYOUT] = WORKING_LAYOUT;
    buf[H_WIDTH] = INITIAL_WIDTH;
    wr_f64(buf, H_ALPHA, p.alpha);
    wr_f64(buf, H_INV, p.inv_ln_gamma);
    wr_f64(buf, H_MIN, f64::INFINITY);
    wr_f64(buf, H_MAX, f64::NEG_INFINITY);
    clear_requests(buf);
    Ok(())
}

fn clear_requests(buf: &mut [u8]) {
    for s in 0..2 {
        wr_u32(buf, H_REQ + 8 * s, 1);
        wr_u32(buf, H_REQ + 8 * s + 4, 0);
    }
    buf[H_WIDEN] = 0;
}

fn set_request(buf: &mut [u8], store: usize, lo: i64, hi: i64) {
    wr_u32(buf, H_REQ + 8 * store, lo as i32 as u32);
    wr_u32(buf, H_REQ + 8 * store + 4, hi as i32 as u32);
}

#[derive(Clone, Copy, Debug)]
struct Layout {
    /// (first index, length) of the positive and negative windows.
    win: [(i64, i64); 2],
    used: usize,
    kmin: i64,
    kmax: i64,
    /// Counter width in bytes.
    w: usize,
}

impl Layout {
    /// Byte offset in the buffer of the counter of bucket `idx` in store `s` (0 positive, 1
    /// negative); `None` outside the store's window.
    fn cell(&self, s: usize, idx: i64) -> Option<usize> {
        let (at, off) = self.window(s);
        (idx >= off && idx < off + self.win[s].1).then(|| at + self.w * (idx - off) as usize)
    }

    /// Where the counters of store `s` start in the buffer, and the bucket index of the first.
    fn window(&self, s: usize) -> (usize, i64) {
        let before = if s == 0 { 0 } else { self.win[0].1 };
        (HEADER + self.w * before as usize, self.win[s].0)
    }

    fn read(buf: &[u8]) -> Result<Layout, SketchError> {
        if buf.len() < HEADER {
            return corrupt("working buffer shorter than its header");
        }
        if buf[H_MAGIC] != WORKING_MAGIC || buf[H_LAYOUT] != WORKING_LAYOUT {
            return corrupt("not a working buffer");
        }
        if buf[H_NBUF] as usize > BUF_CAP {
            return corrupt("working value buffer overfull");
        }
        let w = width_of(buf)?;
        if !matches!(buf[H_WIDEN], 0 | 1 | 2 | 4 | 8) {
            return corrupt("working widening request invalid");
        }
        let (kmin, kmax) = index_bounds(rd_f64(buf, H_INV));
        let mut win = [(0i64, 0i64); 2];
        for (s, (o, l)) in [(H_POS_OFF, H_POS_LEN), (H_NEG_OFF, H_NEG_LEN)]
            .into_iter()
            .enumerate()
        {
            let off = rd_i32(buf, o) as i64;
            let len = rd_u32(buf, l) as i64;
            if len > 0 && (off < kmin || off + len > kmax + 1) {
                return corrupt("working window out of index range");
            }
            win[s] = (off, len);
        }
        let used = HEADER as u64 + w as u64 * (win[0].1 as u64 + win[1].1 as u64);
        if used > buf.len() as u64 {
            return corrupt("working windows exceed buffer");
        }
        Ok(Layout {
            win,
            used: used as usize,
            kmin,
            kmax,
            w,
        })
    }
}

/// Bytes of `buf` in use (header + windows).
pub fn working_used_len(buf: &[u8]) -> Result<usize, SketchError> {
    Ok(Layout::read(buf)?.used)
}

/// Alpha of a working buffer.
pub fn working_alpha(buf: &[u8]) -> Result<f64, SketchError> {
    if is_legacy_working(buf) {
        return working_alpha(&from_legacy_layout(buf)?);
    }
    Layout::read(buf)?;
    Ok(rd_f64(buf, H_ALPHA))
}

/// Value count of a working buffer (counted and buffered values).
pub fn working_count(buf: &[u8]) -> Result<u64, SketchError> {
    Layout::read(buf)?;
    rd_u64(buf, H_COUNT)
        .checked_add(buf[H_NBUF] as u64)
        .ok_or(SketchError::CountOverflow)
}

/// Whether `buf` is a working buffer of this build's layout, which the in-place operations
/// ([`working_add`], [`working_merge_sketch`], [`working_grow`]) accept. Other working layouts
/// are read by [`working_to_sketch`] only.
pub fn is_current_working(buf: &[u8]) -> bool {
    buf.len() >= HEADER && buf[H_MAGIC] == WORKING_MAGIC && buf[H_LAYOUT] == WORKING_LAYOUT
}

/// The header's exact sum as carry-save limbs, with the integer part folded in.
fn header_sum_limbs(hdr: &[u8]) -> [i64; LIMBS] {
    let mut l = [0i64; LIMBS];
    for i in 0..LIMBS {
        l[i] = rd_i64(hdr, H_SUM + 8 * i);
    }
    add_int_to_limbs(&mut l, rd_i64(hdr, H_INT));
    l
}

/// Fold the integer part into the limbs and carry them (same value, canonical limbs).
fn normalize_header_sum(hdr: &mut [u8]) {
    let mut l = header_sum_limbs(hdr);
    normalize_limbs(&mut l);
    for i in 0..LIMBS {
        wr_i64(hdr, H_SUM + 8 * i, l[i]);
    }
    wr_i64(hdr, H_INT, 0);
    wr_u32(hdr, H_PENDING, 0);
}

/// Move the integer part into the limbs exactly (one limb addition), leaving it 0.
#[cold]
#[inline(never)]
fn fold_int_sum(hdr: &mut [u8]) {
    let v = rd_i64(hdr, H_INT);
    if v == 0 {
        return;
    }
    for (j, c) in int_parts(v).into_iter().enumerate() {
        let o = H_SUM + 8 * (UNIT_LIMB + j);
        wr_i64(hdr, o, rd_i64(hdr, o).wrapping_add(c));
    }
    wr_i64(hdr, H_INT, 0);
    bump_pending(hdr);
}

#[inline(always)]
fn bump_pending(hdr: &mut [u8]) {
    add_pending(hdr, 1);
}

/// Count `k` (at most [`BUF_CAP`]) un-carried limb additions, normalising at the limit. Each
/// addition is below 2^32 per limb, so up to PENDING_LIMIT + BUF_CAP of them (< 2^31) keep every
/// limb far below 2^63.
#[inline(always)]
fn add_pending(hdr: &mut [u8], k: u32) {
    let p = rd_u32(hdr, H_PENDING).saturating_add(k);
    if p >= PENDING_LIMIT {
        normalize_header_sum(hdr);
    } else {
        wr_u32(hdr, H_PENDING, p);
    }
}

/// Add a finite x to the header's sum limbs (one un-carried addition: the caller counts it as
/// pending).
#[inline(always)]
fn add_to_limbs(hdr: &mut [u8], x: f64) {
    let (k, parts) = sum_parts(x);
    for j in 0..3 {
        let o = H_SUM + 8 * (k + j);
        let v = rd_i64(hdr, o).wrapping_add(parts[j]);
        wr_i64(hdr, o, v);
    }
}

/// Add `v` (|v| < 2^96) at limb `k` (weight 2^(32 k) units): one addition below 2^32 to each of
/// the limbs k .. k + 2, like [`add_to_limbs`] for one value.
#[inline(always)]
fn add_i128_to_limbs(hdr: &mut [u8], k: usize, v: i128) {
    let mag = v.unsigned_abs();
    debug_assert!(mag >> 96 == 0 && k + 3 <= LIMBS);
    for j in 0..3 {
        let c = ((mag >> (32 * j)) as u64 & LIMB_MASK as u64) as i64;
        let o = H_SUM + 8 * (k + j);
        let l = rd_i64(hdr, o).wrapping_add(if v < 0 { -c } else { c });
        wr_i64(hdr, o, l);
    }
}

/// Integral values with a magnitude below this go to the header's integer part.
const INT_PART_LIMIT: u64 = 1 << 53;
/// 2^52: the doubles from here to 2^53 are exactly the integers.
const TWO_52: f64 = 4_503_599_627_370_496.0;

/// Fast path. Ok(false): the value's bucket is outside its window (nothing written then).
#[inline(always)]
fn working_add_fast(buf: &mut [u8], x: f64) -> Result<bool, SketchError> {
    let Some((hdr, data)) = buf.split_first_chunk_mut::<HEADER>() else {
        return corrupt("working buffer shorter than its header");
    };
    if hdr[H_MAGIC] != WORKING_MAGIC {
        return corrupt("not a working buffer");
    }
    let w = width_of(hdr)?;
    let count = rd_u64(hdr, H_COUNT)
        .checked_add(1)
        .ok_or(SketchError::CountOverflow)?;
    let xv = if x == 0.0 {
        let z = rd_u64(hdr, H_ZERO).wrapping_add(1);
        wr_u64(hdr, H_ZERO, z);
        0.0
    } else {
        let idx = index_of(x.abs(), rd_f64(hdr, H_INV)) as i64;
        let pos_len = rd_u32(hdr, H_POS_LEN) as u64;
        let (off, len, base) = if x > 0.0 {
            (rd_i32(hdr, H_POS_OFF) as i64, pos_len, 0u64)
        } else {
            (
                rd_i32(hdr, H_NEG_OFF) as i64,
                rd_u32(hdr, H_NEG_LEN) as u64,
                pos_len,
            )
        };
        let slot = idx - off;
        if slot < 0 || slot as u64 >= len {
            return Ok(false);
        }
        let p = ((base + slot as u64) * w as u64) as usize;
        let Some(cell) = data.get_mut(p..p + w) else {
            return corrupt("working windows exceed buffer");
        };
        let c = rd_cnt(cell, 0, w).wrapping_add(1);
        if c > cnt_limit(w) {
            return Ok(false);
        }
        wr_cnt(cell, 0, w, c);
        x
    };
    wr_u64(hdr, H_COUNT, count);
    if xv < rd_f64(hdr, H_MIN) {
        wr_f64(hdr, H_MIN, xv);
    }
    if xv > rd_f64(hdr, H_MAX) {
        wr_f64(hdr, H_MAX, xv);
    }
    // Exact sum. An integral value (latencies in ms) goes to the integer part, in the hot
    // line; on i64 overflow (>= 1024 adds near 2^53) the integer part is folded into the
    // limbs first. Other values go to the limbs, whose carries are pending.
    let i = x as i64;
    if i as f64 == x && i.unsigned_abs() < INT_PART_LIMIT {
        let v = match rd_i64(hdr, H_INT).checked_add(i) {
            Some(v) => v,
            None => {
                fold_int_sum(hdr);
                i
            }
        };
        wr_i64(hdr, H_INT, v);
    } else {
        add_to_limbs(hdr, x);
        bump_pending(hdr);
    }
    Ok(true)
}

/// Add one value to a working buffer in place.
///
/// The value is appended to the buffer's value buffer; when that is full, its values are first
/// added to the counters ([`working_flush`]). If a value's bucket is outside the current window
/// the buffer is re-laid-out in place when its length allows; otherwise
/// `AddError::NeedsGrow` is returned: allocate a new buffer of at least `min_len` bytes, call
/// [`working_grow`], and retry. On any error `x` is not added, and the buffer holds the same
/// values as before (some may have moved from the value buffer into the counters).
#[inline(always)]
pub fn working_add(buf: &mut [u8], x: f64) -> Result<(), AddError> {
    if !x.is_finite() {
        return Err(SketchError::InvalidValue(x).into());
    }
    if buf.len() < HEADER || buf[H_MAGIC] != WORKING_MAGIC || buf[H_LAYOUT] != WORKING_LAYOUT {
        return Err(SketchError::Corrupt("not a working buffer".into()).into());
    }
    let mut n = buf[H_NBUF] as usize;
    if n >= BUF_CAP {
        working_flush(buf)?;
        n = 0;
    }
    wr_f64(buf, H_BUF + 8 * n, x);
    buf[H_NBUF] = n as u8 + 1;
    Ok(())
}

/// Add every buffered value to the counters, min, max and sum, leaving the value buffer empty.
/// Same growth protocol as [`working_add`]: on `NeedsGrow` the values not yet counted stay
/// buffered (at the front, in order) and nothing is lost or counted twice.
pub fn working_flush(buf: &mut [u8]) -> Result<(), AddError> {
    let n = if buf.len() >= HEADER {
        buf[H_NBUF] as usize
    } else {
        0
    };
    if n > BUF_CAP {
        return Err(SketchError::Corrupt("working value buffer overfull".into()).into());
    }
    loop {
        match flush_batch(buf)? {
            Batch::Done => {
                buf[H_NBUF] = 0;
                return Ok(());
            }
            Batch::NearLimit => {
                // widen every counter before one can pass its width's limit, then retry
                let w = buf[H_WIDTH];
                clear_requests(buf);
                buf[H_WIDEN] = w.saturating_mul(2).min(8);
                relayout(buf)?;
            }
            Batch::OneByOne => break,
        }
    }
    // Some value's bucket is outside its window: one value at a time, re-laying out (or asking
    // to grow) where needed.
    let mut done = 0;
    let res = loop {
        if done == n {
            break Ok(());
        }
        let x = rd_f64(buf, H_BUF + 8 * done);
        match working_add_fast(buf, x) {
            Ok(true) => done += 1,
            Ok(false) => match working_add_slow(buf, done) {
                Ok(()) => done += 1,
                Err(e) => break Err(e),
            },
            Err(e) => break Err(e.into()),
        }
    };
    if done > 0 {
        buf.copy_within(H_BUF + 8 * done..H_BUF + 8 * n, H_BUF);
        buf[H_NBUF] = (n - done) as u8;
    }
    res
}

/// The common case of [`working_flush`]: every buffered value's bucket is inside its window.
/// The buckets of all values are computed first (independent computations the CPU overlaps),
/// then the counters, min, max and sum are updated with the header's fields in registers.
/// Anything but `Batch::Done`: nothing was written.
#[inline(always)]
fn flush_batch(buf: &mut [u8]) -> Result<Batch, SketchError> {
    if buf.len() < HEADER {
        return corrupt("working buffer shorter than its header");
    }
    // one copy of the loop per counter width, so that a counter is one plain load and store
    let w = width_of(&buf[..HEADER])?;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above)
        return unsafe { flush_batch_avx2(buf, w) };
    }
    flush_batch_any(buf, w)
}

#[inline(always)]
fn flush_batch_any(buf: &mut [u8], w: usize) -> Result<Batch, SketchError> {
    match w {
        1 => flush_batch_w::<1>(buf),
        2 => flush_batch_w::<2>(buf),
        4 => flush_batch_w::<4>(buf),
        _ => flush_batch_w::<8>(buf),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn flush_batch_avx2(buf: &mut [u8], w: usize) -> Result<Batch, SketchError> {
    flush_batch_any(buf, w)
}

/// Counter `off` of width `W` (a constant, so this is one load).
#[inline(always)]
fn rd_cnt_w<const W: usize>(b: &[u8], off: usize) -> u64 {
    match W {
        1 => b[off] as u64,
        2 => u16::from_ne_bytes([b[off], b[off + 1]]) as u64,
        4 => rd_u32(b, off) as u64,
        _ => rd_u64(b, off),
    }
}

/// Store counter `off` of width `W`.
#[inline(always)]
fn wr_cnt_w<const W: usize>(b: &mut [u8], off: usize, v: u64) {
    match W {
        1 => b[off] = v as u8,
        2 => b[off..off + 2].copy_from_slice(&(v as u16).to_ne_bytes()),
        4 => wr_u32(b, off, v as u32),
        _ => wr_u64(b, off, v),
    }
}

/// [`flush_batch`] for counters of width `W` (the header's width).
#[inline(always)]
fn flush_batch_w<const W: usize>(buf: &mut [u8]) -> Result<Batch, SketchError> {
    let Some((hdr, data)) = buf.split_first_chunk_mut::<HEADER>() else {
        return corrupt("working buffer shorter than its header");
    };
    let n = (hdr[H_NBUF] as usize).min(BUF_CAP);
    let inv = rd_f64(hdr, H_INV);
    let pos_off = rd_i32(hdr, H_POS_OFF) as i64;
    let pos_len = rd_u32(hdr, H_POS_LEN) as i64;
    let neg_off = rd_i32(hdr, H_NEG_OFF) as i64;
    let neg_len = rd_u32(hdr, H_NEG_LEN) as i64;
    let used = W * (pos_len + neg_len) as usize;
    let Some(data) = data.get_mut(..used) else {
        return corrupt("working windows exceed buffer");
    };
    let Some(count) = rd_u64(hdr, H_COUNT).checked_add(n as u64) else {
        return Ok(Batch::OneByOne);
    };
    if n == 0 {
        return Ok(Batch::Done);
    }
    // The values, the unused slots repeating the first one, so that every loop below runs over
    // all BUF_CAP lanes without a branch (the padded lanes change no minimum or maximum, and
    // they are masked out of the counts and the sum).
    let mut vals = [0f64; BUF_CAP];
    for (i, v) in vals.iter_mut().enumerate() {
        *v = rd_f64(hdr, H_BUF + 8 * if i < n { i } else { 0 });
    }
    // pass 1: every value's counter (byte offset in `data`; usize::MAX for a zero)
    let idx = batch_indices_tabled(&vals, inv);
    let mut cells = [0usize; BUF_CAP];
    let mut inside = true;
    let mut zeros = 0u64;
    for i in 0..BUF_CAP {
        let x = vals[i];
        let zero = x == 0.0;
        let neg = x < 0.0;
        let off = if neg { neg_off } else { pos_off };
        let len = if neg { neg_len } else { pos_len };
        let base = if neg { pos_len } else { 0 };
        let slot = idx[i] as i64 - off;
        // slot in 0..len (len < 2^32, so a negative slot is a huge u64)
        let ok = (slot as u64) < len as u64;
        inside &= ok | zero;
        zeros += (zero & (i < n)) as u64;
        // (a lane outside its window gets a meaningless offset, never used: the batch is refused)
        cells[i] = if zero {
            usize::MAX
        } else {
            W.wrapping_mul((base + slot) as usize)
        };
    }
    if !inside {
        return Ok(Batch::OneByOne);
    }
    // each counter can take all n values and stay within its width's limit. A counter is at
    // most the count of values counted (8-byte counters, and any state whose count is below
    // the width's limit, cannot pass it).
    if W < 8 && count > cnt_limit(W) {
        let limit = cnt_limit(W).saturating_sub(n as u64);
        let mut room = true;
        for &p in &cells[..n] {
            if p != usize::MAX {
                room &= rd_cnt_w::<W>(data, p) <= limit;
            }
        }
        if !room {
            return Ok(Batch::NearLimit);
        }
    }
    // pass 2: counters
    for &p in &cells[..n] {
        if p != usize::MAX {
            let c = rd_cnt_w::<W>(data, p).wrapping_add(1);
            wr_cnt_w::<W>(data, p, c);
        }
    }
    // min and max (a zero counts as +0.0, whatever its sign: `x + 0.0` is +0.0 for both zeros
    // and x for every other finite x), in four independent lanes rather than one chain of
    // dependent comparisons
    let mut mn = rd_f64(hdr, H_MIN);
    let mut mx = rd_f64(hdr, H_MAX);
    {
        let mut lo = [f64::INFINITY; 4];
        let mut hi = [f64::NEG_INFINITY; 4];
        for c in vals.chunks_exact(4) {
            for j in 0..4 {
                let xv = c[j] + 0.0;
                lo[j] = if xv < lo[j] { xv } else { lo[j] };
                hi[j] = if xv > hi[j] { xv } else { hi[j] };
            }
        }
        for j in 0..4 {
            mn = if lo[j] < mn { lo[j] } else { mn };
            mx = if hi[j] > mx { hi[j] } else { mx };
        }
    }
    // exact sum. Integral values below 2^53 are summed in an i64 (BUF_CAP of them sum to less
    // than 2^57, no overflow check), added to the integer part once. Integrality without a
    // conversion: for a = |x| < 2^52, t = a + 2^52 rounds a to an integer (the doubles from 2^52
    // to 2^53 are the integers), so a is integral exactly when t - 2^52 == a, and then t's
    // mantissa bits are a; from 2^52 to 2^53 every double is integral. Every lane is computed
    // (the padded ones are masked out), so the loop has no branch.
    let mut ints = 0i64;
    let mut frac = [false; BUF_CAP];
    let mut nfrac = 0u32;
    for i in 0..BUF_CAP {
        let x = vals[i];
        let a = x.abs();
        let t = a + TWO_52;
        let big = a >= TWO_52;
        let integral = a < INT_PART_LIMIT as f64 && (big || t - TWO_52 == a);
        // from 2^52 to 2^53 a is its own mantissa with the implicit bit
        let frac_bits = if big { a.to_bits() } else { t.to_bits() } & ((1u64 << 52) - 1);
        let iv = (frac_bits | if big { 1u64 << 52 } else { 0 }) as i64;
        let live = i < n;
        let iv = if x < 0.0 { -iv } else { iv };
        ints += if integral && live { iv } else { 0 };
        frac[i] = !integral && live;
        nfrac += frac[i] as u32;
    }
    // The others: those whose limbs start at the same place as the batch's first one (all of
    // them, for latencies within a factor of 2^32) are summed exactly in integers and added to
    // the limbs once; any other goes to the limbs alone. A value is m * 2^p units, which is
    // (m << s) at limb k for k = p / 32, s = p % 32: with m = hi * 2^26 + lo (hi < 2^27,
    // lo < 2^26), the lanes sum lo << s (< 2^57) and hi << s (< 2^58) in four u64 accumulators,
    // by sign, which BUF_CAP values cannot overflow; no branch, so the loop is vectorised.
    let mut frac_sum = 0i128;
    let mut frac_k = usize::MAX;
    if nfrac > 0 {
        let first = (0..n).find(|&i| frac[i]).unwrap_or(0);
        frac_k = (decompose(vals[first]).1 / 32) as usize;
        let (mut pos_lo, mut pos_hi, mut neg_lo, mut neg_hi) = (0u64, 0u64, 0u64, 0u64);
        let mut others = false;
        for i in 0..BUF_CAP {
            let x = vals[i];
            let (m, p) = decompose(x);
            let same = (p / 32) as usize == frac_k;
            others |= frac[i] & !same;
            let take = frac[i] & same;
            let s = p % 32;
            let lo = if take { (m & ((1 << 26) - 1)) << s } else { 0 };
            let hi = if take { (m >> 26) << s } else { 0 };
            let neg = x.is_sign_negative();
            pos_lo += if neg { 0 } else { lo };
            pos_hi += if neg { 0 } else { hi };
            neg_lo += if neg { lo } else { 0 };
            neg_hi += if neg { hi } else { 0 };
        }
        frac_sum = (((pos_hi as i128) << 26) + pos_lo as i128)
            - (((neg_hi as i128) << 26) + neg_lo as i128);
        if others {
            for i in 0..n {
                if frac[i] && (decompose(vals[i]).1 / 32) as usize != frac_k {
                    add_to_limbs(hdr, vals[i]);
                }
            }
        }
    }
    let int_sum = match rd_i64(hdr, H_INT).checked_add(ints) {
        Some(v) => v,
        None => {
            fold_int_sum(hdr);
            ints
        }
    };
    if frac_sum != 0 {
        add_i128_to_limbs(hdr, frac_k, frac_sum);
    }
    wr_u64(hdr, H_COUNT, count);
    if zeros > 0 {
        let z = rd_u64(hdr, H_ZERO).wrapping_add(zeros);
        wr_u64(hdr, H_ZERO, z);
    }
    wr_f64(hdr, H_MIN, mn);
    wr_f64(hdr, H_MAX, mx);
    wr_i64(hdr, H_INT, int_sum);
    if nfrac > 0 {
        add_pending(hdr, nfrac);
    }
    Ok(Batch::Done)
}

/// Outcome of [`flush_batch`].
enum Batch {
    /// Every buffered value was counted.
    Done,
    /// Some bucket is outside its window (or the count would overflow): count the values one at
    /// a time, re-laying out where needed.
    OneByOne,
    /// Some counter could pass its width's limit: widen the counters first.
    NearLimit,
}

/// Slow path of [`working_flush`] for the buffered value at `from`, whose bucket is outside its
/// window: re-lay out (in place if the length allows) so the windows cover it and every value
/// still buffered after it, then count it.
#[cold]
fn working_add_slow(buf: &mut [u8], from: usize) -> Result<(), AddError> {
    Layout::read(buf)?;
    let inv = rd_f64(buf, H_INV);
    let n = buf[H_NBUF] as usize;
    let mut want = [(i64::MAX, i64::MIN); 2];
    for i in from..n {
        let y = rd_f64(buf, H_BUF + 8 * i);
        if y != 0.0 {
            let idx = index_of(y.abs(), inv) as i64;
            let w = &mut want[if y > 0.0 { 0 } else { 1 }];
            *w = (w.0.min(idx), w.1.max(idx));
        }
    }
    clear_requests(buf);
    for (store, (lo, hi)) in want.into_iter().enumerate() {
        if lo <= hi {
            set_request(buf, store, lo, hi);
        }
    }
    // the value itself may be inside its window with its counter at the width's limit
    let lay = Layout::read(buf)?;
    let x = rd_f64(buf, H_BUF + 8 * from);
    if x != 0.0 {
        let st = if x > 0.0 { 0 } else { 1 };
        if let Some(o) = lay.cell(st, index_of(x.abs(), inv) as i64) {
            let c = rd_cnt(buf, o, lay.w);
            if c >= cnt_limit(lay.w) {
                buf[H_WIDEN] = width_for(c + 1);
            }
        }
    }
    relayout(buf)?;
    if working_add_fast(buf, rd_f64(buf, H_BUF + 8 * from))? {
        Ok(())
    } else {
        Err(SketchError::Corrupt("working buffer relayout failed".into()).into())
    }
}

/// Result of planning a re-layout.
struct Plan {
    /// Counter width of the source and of the re-laid-out buffer.
    sw: usize,
    tw: usize,
    /// New windows (first index, length) for the positive/negative store.
    win: [(i64, i64); 2],
    /// Byte offset and length in slots, in the source buffer, of each store's used (non-empty)
    /// part.
    src: [(usize, usize); 2],
    /// Destination byte offset of each store's used part.
    dst: [usize; 2],
    /// End of the new windows.
    end: usize,
}

/// Plan windows covering the used buckets plus the recorded request, using
/// `capacity` bytes. Err(Some((min_len, suggested_len))) if too small.
fn plan_relayout(buf: &[u8], capacity: usize) -> Result<Result<Plan, (usize, usize)>, SketchError> {
    let lay = Layout::read(buf)?;
    let (kmin, kmax) = (lay.kmin, lay.kmax);
    let sw = lay.w;
    let tw = sw.max(buf[H_WIDEN] as usize);
    let mut want = [(0i64, 0i64); 2]; // [lo, hi)
    let mut used = [(0i64, 0i64); 2]; // [lo, hi) of non-empty buckets
    let mut src = [(0usize, 0usize); 2];
    let mut dir = [(false, false); 2];
    let mut base = HEADER;
    for s in 0..2 {
        let (off, len) = lay.win[s];
        let slot = |j: usize| rd_cnt(buf, base + sw * j, sw) != 0;
        let first = (0..len as usize).find(|&j| slot(j));
        let mut range = None;
        if let Some(f) = first {
            let l = (0..len as usize).rev().find(|&j| slot(j)).unwrap_or(f);
            range = Some((off + f as i64, off + l as i64 + 1));
            src[s] = (base + sw * f, l - f + 1);
        }
        used[s] = range.unwrap_or((0, 0));
        base += sw * len as usize;
        let rlo = rd_i32(buf, H_REQ + 8 * s) as i64;
        let rhi = rd_i32(buf, H_REQ + 8 * s + 4) as i64;
        if rlo <= rhi {
            if rlo < kmin || rhi > kmax {
                return corrupt("growth request out of index range");
            }
            range = Some(match range {
                None => {
                    dir[s] = (true, true);
                    (rlo, rhi + 1)
                }
                Some((a, b)) => {
                    dir[s] = (rlo < a, rhi + 1 > b);
                    (a.min(rlo), b.max(rhi + 1))
                }
            });
        }
        want[s] = range.unwrap_or((0, 0));
    }
    let need = (want[0].1 - want[0].0) + (want[1].1 - want[1].0);
    let min_len = HEADER + tw * need as usize;
    if min_len > capacity {
        let full = 2 * (kmax - kmin + 1) as u64;
        let sugg =
            (need as u64 + (need as u64 / 2).max(MIN_SLACK_SLOTS)).min(full.max(need as u64));
        return Ok(Err((min_len, HEADER + tw * sugg as usize)));
    }
    // distribute spare slots to the stores that grew (else the non-empty ones)
    let spare = ((capacity - min_len) / tw) as i64;
    let mut chosen: Vec<usize> = (0..2).filter(|&s| dir[s] != (false, false)).collect();
    if chosen.is_empty() {
        chosen = (0..2).filter(|&s| want[s].1 > want[s].0).collect();
        for &s in &chosen {
            dir[s] = (true, true);
        }
    }
    if chosen.is_empty() {
        chosen.push(0);
        dir[0] = (true, true);
    }
    let per = spare / chosen.len() as i64;
    let mut win = [(0i64, 0i64); 2];
    for s in 0..2 {
        win[s] = (want[s].0, want[s].1 - want[s].0);
    }
    for &s in &chosen {
        let (lo, hi) = if want[s].1 > want[s].0 {
            want[s]
        } else {
            (0, 0)
        };
        let below = match dir[s] {
            (true, false) => per * 3 / 4,
            (false, true) => per / 4,
            _ => per / 2,
        };
        let target = (hi - lo + per).min(kmax + 1 - kmin);
        let mut nlo = (lo - below).max(kmin);
        let mut nhi = (nlo + target).min(kmax + 1);
        if nhi - nlo < target {
            nlo = (nhi - target).max(kmin);
        }
        if nlo > lo {
            nlo = lo.max(kmin);
        }
        if nhi < hi {
            nhi = hi;
        }
        win[s] = (nlo, nhi - nlo);
    }
    let end = HEADER + tw * (win[0].1 + win[1].1) as usize;
    if end > capacity || win.iter().any(|w| w.1 > u32::MAX as i64) {
        return corrupt("internal relayout overflow");
    }
    // offset (in slots) of the used part inside the new window; 0 if unused
    let rel = |s: usize| {
        if src[s].1 > 0 {
            (used[s].0 - win[s].0) as usize
        } else {
            0
        }
    };
    let dst = [
        HEADER + tw * rel(0),
        HEADER + tw * (win[0].1 as usize + rel(1)),
    ];
    Ok(Ok(Plan {
        sw,
        tw,
        win,
        src,
        dst,
        end,
    }))
}

fn write_plan_header(buf: &mut [u8], plan: &Plan) {
    for (s, (ho, hl)) in [(H_POS_OFF, H_POS_LEN), (H_NEG_OFF, H_NEG_LEN)]
        .into_iter()
        .enumerate()
    {
        let (lo, len) = plan.win[s];
        wr_u32(buf, ho, if len > 0 { lo as i32 as u32 } else { 0 });
        wr_u32(buf, hl, len as u32);
    }
    buf[H_WIDTH] = plan.tw as u8;
    clear_requests(buf);
}

/// Zero the new window area except the destination ranges of the used data.
fn zero_gaps(buf: &mut [u8], plan: &Plan) {
    let (d0, n0) = (plan.dst[0], plan.tw * plan.src[0].1);
    let (d1, n1) = (plan.dst[1], plan.tw * plan.src[1].1);
    buf[HEADER..d0].fill(0);
    buf[d0 + n0..d1].fill(0);
    buf[d1 + n1..plan.end].fill(0);
}

/// Re-lay out `buf` in place so its windows cover the recorded request (and its counters have
/// the requested width), using all of `buf` as capacity. `AddError::NeedsGrow` if `buf` is too
/// small (nothing is moved then).
fn relayout(buf: &mut [u8]) -> Result<(), AddError> {
    let plan = match plan_relayout(buf, buf.len())? {
        Ok(p) => p,
        Err((min_len, suggested_len)) => {
            return Err(AddError::NeedsGrow {
                min_len,
                suggested_len,
            })
        }
    };
    if plan.sw != plan.tw {
        // widening: read the used counters out, then write them back wider
        let src = buf.to_vec();
        move_counters(&src, buf, &plan);
        zero_gaps(buf, &plan);
        write_plan_header(buf, &plan);
        return Ok(());
    }
    let [(s0, n0), (s1, n1)] = plan.src.map(|(o, n)| (o, n * plan.sw));
    let [d0, d1] = plan.dst;
    // Both moves are overlap-safe individually (memmove); order them so the
    // first move never clobbers the source of the second one.
    if d1 < s0 + n0 {
        buf.copy_within(s0..s0 + n0, d0);
        buf.copy_within(s1..s1 + n1, d1);
    } else {
        buf.copy_within(s1..s1 + n1, d1);
        buf.copy_within(s0..s0 + n0, d0);
    }
    zero_gaps(buf, &plan);
    write_plan_header(buf, &plan);
    Ok(())
}

/// Copy each store's used counters from `src` (at the plan's source width) to their places in
/// `dst` (at its target width).
fn move_counters(src: &[u8], dst: &mut [u8], plan: &Plan) {
    for s in 0..2 {
        let (so, n) = plan.src[s];
        if plan.sw == plan.tw {
            dst[plan.dst[s]..plan.dst[s] + n * plan.sw].copy_from_slice(&src[so..so + n * plan.sw]);
        } else {
            for j in 0..n {
                let c = rd_cnt(src, so + plan.sw * j, plan.sw);
                wr_cnt(dst, plan.dst[s] + plan.tw * j, plan.tw, c);
            }
        }
    }
}

/// Copy a working buffer into a new one (after `NeedsGrow`), re-centring the
/// windows to cover the pending request and spreading the extra length as
/// slack. `new` may contain garbage and may be of any length >= the
/// `min_len` reported by `NeedsGrow`.
pub fn working_grow(old: &[u8], new: &mut [u8]) -> Result<(), SketchError> {
    let plan = match plan_relayout(old, new.len())? {
        Ok(p) => p,
        Err((need, _)) => {
            return Err(SketchError::BufferTooSmall {
                need,
                got: new.len(),
            })
        }
    };
    new[..HEADER].copy_from_slice(&old[..HEADER]);
    move_counters(old, new, &plan);
    zero_gaps(new, &plan);
    write_plan_header(new, &plan);
    Ok(())
}

/// What a merge into the working buffer `buf` checks first, whatever its source: the source's
/// `alpha` must be the buffer's, and the merged count must fit. `None`: the source holds no
/// value, there is nothing to merge.
fn merged_count(buf: &[u8], alpha: f64, count: u64) -> Result<Option<u64>, AddError> {
    let own = rd_f64(buf, H_ALPHA);
    if own.to_bits() != alpha.to_bits() {
        return Err(SketchError::AlphaMismatch {
            left: own,
            right: alpha,
        }
        .into());
    }
    if count == 0 {
        return Ok(None);
    }
    match rd_u64(buf, H_COUNT).checked_add(count) {
        Some(c) => Ok(Some(c)),
        None => Err(SketchError::CountOverflow.into()),
    }
}

/// Make `buf`'s windows cover `ranges` (a merge's non-zero buckets, per store) and its counters
/// wide enough for `top(buf, layout)`, the largest counter after the merge, computed on the
/// covering layout: relaid out and widened as needed (`NeedsGrow` when the buffer must grow
/// first; the values it holds are the same either way). Returns the layout to add under.
fn fit_for_merge(
    buf: &mut [u8],
    mut lay: Layout,
    ranges: [Option<(i64, i64)>; 2],
    top: impl Fn(&[u8], &Layout) -> Result<u64, SketchError>,
) -> Result<Layout, AddError> {
    let covered = |lay: &Layout| {
        (0..2).all(|s| {
            ranges[s].is_none_or(|(a, b)| a >= lay.win[s].0 && b < lay.win[s].0 + lay.win[s].1)
        })
    };
    // request both ranges: relayout trims unused window slots
    let request = |buf: &mut [u8]| {
        clear_requests(buf);
        for s in 0..2 {
            if let Some((a, b)) = ranges[s] {
                set_request(buf, s, a, b);
            }
        }
    };
    if !covered(&lay) {
        request(buf);
        relayout(buf)?;
        lay = Layout::read(buf)?;
        if !covered(&lay) {
            return Err(SketchError::Corrupt("working buffer relayout failed".into()).into());
        }
    }
    let t = top(buf, &lay)?;
    if t > cnt_limit(lay.w) {
        request(buf);
        buf[H_WIDEN] = width_for(t);
        relayout(buf)?;
        lay = Layout::read(buf)?;
        if !covered(&lay) || t > cnt_limit(lay.w) {
            return Err(SketchError::Corrupt("working buffer widening failed".into()).into());
        }
    }
    Ok(lay)
}

/// Merge an owned sketch into a working buffer in place (same `NeedsGrow`
/// protocol as [`working_add`]; nothing is merged when it is returned).
pub fn working_merge_sketch(buf: &mut [u8], other: &Sketch) -> Result<(), AddError> {
    let lay = Layout::read(buf)?;
    let Some(count) = merged_count(buf, other.p.alpha, other.count)? else {
        return Ok(());
    };
    let ranges = [other.pos.range(), other.neg.range()];
    // the largest merged counter decides the width (every bin is inside its window once the
    // windows cover the ranges)
    let lay = fit_for_merge(buf, lay, ranges, |buf, lay| {
        let cell = |s: usize, i: i32| {
            lay.cell(s, i as i64)
                .ok_or_else(|| SketchError::Corrupt("merged bucket outside its window".into()))
        };
        let mut top = 0u64;
        for (s, store) in [&other.pos, &other.neg].into_iter().enumerate() {
            // the window covers the store's range, so its first and last bucket have cells and
            // every bucket between them does
            if let (Some(&(a, _)), Some(&(b, _))) = (store.bins.first(), store.bins.last()) {
                cell(s, a)?;
                cell(s, b)?;
                let cells = lay.window(s);
                top = top.max(match lay.w {
                    1 => largest_sum::<1>(&buf[cells.0..], cells.1, &store.bins),
                    2 => largest_sum::<2>(&buf[cells.0..], cells.1, &store.bins),
                    4 => largest_sum::<4>(&buf[cells.0..], cells.1, &store.bins),
                    _ => largest_sum::<8>(&buf[cells.0..], cells.1, &store.bins),
                });
            }
        }
        Ok(top)
    })?;
    for (s, store) in [&other.pos, &other.neg].into_iter().enumerate() {
        if store.bins.is_empty() {
            continue;
        }
        let (at, first) = lay.window(s);
        let cells = &mut buf[at..];
        match lay.w {
            1 => add_bins::<1>(cells, first, &store.bins),
            2 => add_bins::<2>(cells, first, &store.bins),
            4 => add_bins::<4>(cells, first, &store.bins),
            _ => add_bins::<8>(cells, first, &store.bins),
        }
    }
    merge_header(buf, count, other.zero, other.min, other.max, &other.sum);
    Ok(())
}

/// The header of a merge's target after its counters: the new count, the merged zero count,
/// extremes and exact sum (added to the limbs as one addition).
fn merge_header(buf: &mut [u8], count: u64, zero: u64, min: f64, max: f64, sum: &ExactSum) {
    wr_u64(buf, H_COUNT, count);
    let z = rd_u64(buf, H_ZERO).wrapping_add(zero);
    wr_u64(buf, H_ZERO, z);
    let mn = rd_f64(buf, H_MIN).min(min);
    wr_f64(buf, H_MIN, mn);
    let mx = rd_f64(buf, H_MAX).max(max);
    wr_f64(buf, H_MAX, mx);
    fold_int_sum(buf);
    let ol = sum.normalized();
    for i in 0..LIMBS {
        let o = H_SUM + 8 * i;
        wr_i64(buf, o, rd_i64(buf, o).wrapping_add(ol[i]));
    }
    bump_pending(buf);
}

/// `$f::<D, S>(args)` for the runtime counter widths `$dw` (target) and `$sw` (source).
macro_rules! with_widths {
    ($dw:expr, $sw:expr, $f:ident($($arg:expr),*)) => {
        match ($dw, $sw) {
            (1, 1) => $f::<1, 1>($($arg),*),
            (1, 2) => $f::<1, 2>($($arg),*),
            (1, 4) => $f::<1, 4>($($arg),*),
            (1, _) => $f::<1, 8>($($arg),*),
            (2, 1) => $f::<2, 1>($($arg),*),
            (2, 2) => $f::<2, 2>($($arg),*),
            (2, 4) => $f::<2, 4>($($arg),*),
            (2, _) => $f::<2, 8>($($arg),*),
            (4, 1) => $f::<4, 1>($($arg),*),
            (4, 2) => $f::<4, 2>($($arg),*),
            (4, 4) => $f::<4, 4>($($arg),*),
            (4, _) => $f::<4, 8>($($arg),*),
            (_, 1) => $f::<8, 1>($($arg),*),
            (_, 2) => $f::<8, 2>($($arg),*),
            (_, 4) => $f::<8, 4>($($arg),*),
            (_, _) => $f::<8, 8>($($arg),*),
        }
    };
}

/// Read the working state `src` as the source of a merge, with its buffered values and then
/// `extra`: layout, parameters, the non-zero range and total of its counters, and the checks
/// [`working_to_sketch`] makes (of the state with its own buffered values, before `extra`).
fn read_source(src: &[u8], extra: &[f64]) -> Result<Source, SketchError> {
    let slay = Layout::read(src)?;
    let salpha = rd_f64(src, H_ALPHA);
    let p = match Params::new(salpha) {
        Ok(p) => p,
        Err(_) => return Err(SketchError::Corrupt(format!("alpha {salpha} out of range"))),
    };
    if p.inv_ln_gamma.to_bits() != rd_u64(src, H_INV) {
        return Err(SketchError::Corrupt(
            "working buffer parameters do not match alpha".into(),
        ));
    }
    let inv = p.inv_ln_gamma;
    // src's counters: per store its non-zero range and their total
    let mut ranges: [Option<(i64, i64)>; 2] = [None, None];
    let mut total = rd_u64(src, H_ZERO);
    for (s, range) in ranges.iter_mut().enumerate() {
        let (at, first) = slay.window(s);
        let cells = &src[at..at + slay.w * slay.win[s].1 as usize];
        let (r, t) = match slay.w {
            1 => scan_window::<1>(cells, first),
            2 => scan_window::<2>(cells, first),
            4 => scan_window::<4>(cells, first),
            _ => scan_window::<8>(cells, first),
        };
        *range = r;
        total = t
            .and_then(|t| total.checked_add(t))
            .ok_or_else(|| SketchError::Corrupt("bucket counts overflow".into()))?;
    }
    let corrupt_src = SketchError::Corrupt;
    let mut shape = Shape {
        count: rd_u64(src, H_COUNT),
        zero: rd_u64(src, H_ZERO),
        min: rd_f64(src, H_MIN),
        max: rd_f64(src, H_MAX),
        ranges,
        sum: [0; LIMBS],
    };
    if shape.count == 0 {
        shape.min = f64::INFINITY;
        shape.max = f64::NEG_INFINITY;
    }
    let mut sum = ExactSum {
        limbs: header_sum_limbs(src),
        pending: 0,
    };
    sum.normalize();
    // the values: src's buffered ones, then `extra`, each with its store and bucket index
    let nbuf = src[H_NBUF] as usize;
    let mut vals = [0f64; 2 * BUF_CAP];
    if extra.len() > BUF_CAP {
        return Err(SketchError::Corrupt(
            "too many buffered values to merge".into(),
        ));
    }
    for i in 0..nbuf {
        vals[i] = rd_f64(src, H_BUF + 8 * i);
    }
    vals[nbuf..nbuf + extra.len()].copy_from_slice(extra);
    let nvals = nbuf + extra.len();
    let vals_all = vals;
    let vals = &vals_all[..nvals];
    for &x in vals {
        if !x.is_finite() {
            return Err(SketchError::InvalidValue(x));
        }
    }
    let mut idx = [0i64; 2 * BUF_CAP];
    for (c, out) in vals.chunks(BUF_CAP).zip(idx.chunks_mut(BUF_CAP)) {
        let mut lanes = [c[0]; BUF_CAP];
        lanes[..c.len()].copy_from_slice(c);
        let k = batch_indices_tabled(&lanes, inv);
        for (o, &k) in out.iter_mut().zip(&k[..c.len()]) {
            *o = k as i64;
        }
    }
    for (i, &x) in vals.iter().enumerate() {
        if i == nbuf {
            // src with its own buffered values is what working_to_sketch checks
            check_shape(&mut shape, &sum, inv, total).map_err(corrupt_src)?;
        }
        shape.count = shape
            .count
            .checked_add(1)
            .ok_or(SketchError::CountOverflow)?;
        sum.add(x);
        let xv = x + 0.0;
        shape.min = shape.min.min(xv);
        shape.max = shape.max.max(xv);
        total += 1;
        if x == 0.0 {
            shape.zero += 1;
        } else {
            let s = (x < 0.0) as usize;
            let k = idx[i];
            shape.ranges[s] = Some(match shape.ranges[s] {
                Some((a, b)) => (a.min(k), b.max(k)),
                None => (k, k),
            });
        }
    }
    if vals.len() == nbuf {
        check_shape(&mut shape, &sum, inv, total).map_err(corrupt_src)?;
    }
    Ok(Source {
        slay,
        salpha,
        ranges,
        shape,
        sum,
        vals: vals_all,
        nvals,
        idx,
    })
}

/// A working state read and checked as the source of a merge (see [`read_source`]).
struct Source {
    slay: Layout,
    salpha: f64,
    /// The (first, last) non-zero counter of each store of the state itself.
    ranges: [Option<(i64, i64)>; 2],
    /// The state with its buffered values and the extra ones.
    shape: Shape,
    sum: ExactSum,
    vals: [f64; 2 * BUF_CAP],
    nvals: usize,
    /// The bucket index of each value.
    idx: [i64; 2 * BUF_CAP],
}

/// Check a working state (with its buffered values, then `extra`, which must be finite) as
/// [`working_to_sketch`] checks it, without building a sketch: the check
/// [`working_merge_working`] makes of its source.
pub fn working_check(src: &[u8], extra: &[f64]) -> Result<(), SketchError> {
    read_source(src, extra).map(|_| ())
}

/// Merge the working buffer `src`, and then the values `extra` (finite, as if they were
/// buffered in `src`), into the working buffer `buf` in place: the same result as
/// `working_merge_sketch(buf, &s)` with `s` the sketch of `src` plus `extra`, read from `src`'s
/// counters directly instead of through a sketch. `src` is checked as [`working_to_sketch`]
/// checks it (with its own buffered values, before `extra`). `NeedsGrow` as for
/// [`working_merge_sketch`]; nothing is merged when any error is returned. A legacy-layout
/// `src` is refused as corrupt: convert it with [`working_to_sketch`] first.
pub fn working_merge_working(buf: &mut [u8], src: &[u8], extra: &[f64]) -> Result<(), AddError> {
    let lay = Layout::read(buf)?;
    let Source {
        slay,
        salpha,
        ranges,
        shape,
        sum,
        vals,
        nvals,
        idx,
    } = read_source(src, extra)?;
    let vals = &vals[..nvals];
    let Some(count) = merged_count(buf, salpha, shape.count)? else {
        return Ok(());
    };
    // the largest merged counter decides the width: at most the largest sum of a counter of
    // each, plus the number of values, over src's buckets and the values' (a bound; a counter
    // wider than needed holds the same counts)
    let lay = fit_for_merge(buf, lay, shape.ranges, |buf, lay| {
        let mut top = 0u64;
        for (i, &x) in vals.iter().enumerate() {
            if x != 0.0 {
                let s = (x < 0.0) as usize;
                let d = lay.cell(s, idx[i]).map_or(0, |o| rd_cnt(buf, o, lay.w));
                let c = slay.cell(s, idx[i]).map_or(0, |o| rd_cnt(src, o, slay.w));
                top = top.max(d.saturating_add(c));
            }
        }
        for s in 0..2 {
            if let Some((a, b)) = ranges[s] {
                let (at, first) = lay.window(s);
                let (sat, sfirst) = slay.window(s);
                top = top.max(with_widths!(
                    lay.w,
                    slay.w,
                    top_sum_w(&buf[at..], first, &src[sat..], sfirst, a, b)
                ));
            }
        }
        Ok(top.saturating_add(vals.len() as u64))
    })?;
    for s in 0..2 {
        if let Some((a, b)) = ranges[s] {
            let (at, first) = lay.window(s);
            let (sat, sfirst) = slay.window(s);
            with_widths!(
                lay.w,
                slay.w,
                add_window_w(&mut buf[at..], first, &src[sat..], sfirst, a, b)
            );
        }
    }
    for (i, &x) in vals.iter().enumerate() {
        if x != 0.0 {
            let s = (x < 0.0) as usize;
            let o = lay
                .cell(s, idx[i])
                .ok_or_else(|| SketchError::Corrupt("merged bucket outside its window".into()))?;
            let v = rd_cnt(buf, o, lay.w).wrapping_add(1);
            wr_cnt(buf, o, lay.w, v);
        }
    }
    merge_header(buf, count, shape.zero, shape.min, shape.max, &sum);
    Ok(())
}

/// [`Shape::check_extremes`] and [`Shape::check_rest`] of a working state's shape with its
/// sum as it stands (an empty state: the empty sketch's check).
fn check_shape(shape: &mut Shape, sum: &ExactSum, inv: f64, total: u64) -> Result<(), String> {
    shape.sum = sum.normalized();
    if shape.count == 0 {
        return shape.check_empty();
    }
    shape.check_extremes()?;
    shape.check_rest(inv, total)
}

/// The first and last non-zero counter of a window of `W`-byte counters whose first bucket is
/// `first`, as bucket indices, and the counters' total (`None` when it overflows). The zeros
/// at either end (most of a window with room to grow) are skipped eight bytes at a time.
fn scan_window<const W: usize>(cells: &[u8], first: i64) -> (Option<(i64, i64)>, Option<u64>) {
    let cells = &cells[..cells.len() / W * W];
    let Some(lo) = first_nonzero_byte(cells) else {
        return (None, Some(0));
    };
    let hi = last_nonzero_byte(cells).unwrap_or(lo);
    let (lo, hi) = (lo / W, hi / W);
    let used = &cells[W * lo..W * (hi + 1)];
    let total = if W == 1 {
        Some(used.iter().map(|&c| c as u64).sum())
    } else if W < 8 {
        // below 2^32 counters of below 2^32 each: no overflow
        Some(
            used.chunks_exact(W)
                .fold(0u64, |t, c| t.wrapping_add(rd_cnt_w::<W>(c, 0))),
        )
    } else {
        used.chunks_exact(W)
            .try_fold(0u64, |t, c| t.checked_add(rd_cnt_w::<W>(c, 0)))
    };
    (Some((first + lo as i64, first + hi as i64)), total)
}

/// Offset of the first non-zero byte.
fn first_nonzero_byte(b: &[u8]) -> Option<usize> {
    let words = b.chunks_exact(8);
    let tail = words.remainder();
    for (k, w) in words.enumerate() {
        let v = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
        if v != 0 {
            return Some(8 * k + (v.trailing_zeros() / 8) as usize);
        }
    }
    let base = b.len() - tail.len();
    tail.iter().position(|&c| c != 0).map(|k| base + k)
}

/// Offset of the last non-zero byte.
fn last_nonzero_byte(b: &[u8]) -> Option<usize> {
    let words = b.rchunks_exact(8);
    let head = words.remainder();
    for (k, w) in words.enumerate() {
        let v = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
        if v != 0 {
            return Some(b.len() - 8 * (k + 1) + 7 - (v.leading_zeros() / 8) as usize);
        }
    }
    head.iter().rposition(|&c| c != 0)
}

/// The largest sum of a counter of `dst` (`D`-byte counters from bucket `dfirst`) and the
/// counter of the same bucket in `src` (`S`-byte, from `sfirst`) over the buckets `a ..= b`
/// (inside both windows).
fn top_sum_w<const D: usize, const S: usize>(
    dst: &[u8],
    dfirst: i64,
    src: &[u8],
    sfirst: i64,
    a: i64,
    b: i64,
) -> u64 {
    let n = (b - a + 1) as usize;
    let d = &dst[D * (a - dfirst) as usize..D * ((a - dfirst) as usize + n)];
    let s = &src[S * (a - sfirst) as usize..S * ((a - sfirst) as usize + n)];
    d.chunks_exact(D)
        .zip(s.chunks_exact(S))
        .fold(0u64, |top, (x, y)| {
            top.max(rd_cnt_w::<D>(x, 0).saturating_add(rd_cnt_w::<S>(y, 0)))
        })
}

/// Adds `src`'s counters of the buckets `a ..= b` to `dst`'s (as [`top_sum_w`]; every sum
/// fits `dst`'s width).
fn add_window_w<const D: usize, const S: usize>(
    dst: &mut [u8],
    dfirst: i64,
    src: &[u8],
    sfirst: i64,
    a: i64,
    b: i64,
) {
    let n = (b - a + 1) as usize;
    let d = &mut dst[D * (a - dfirst) as usize..D * ((a - dfirst) as usize + n)];
    let s = &src[S * (a - sfirst) as usize..S * ((a - sfirst) as usize + n)];
    for (x, y) in d.chunks_exact_mut(D).zip(s.chunks_exact(S)) {
        let v = rd_cnt_w::<D>(x, 0).wrapping_add(rd_cnt_w::<S>(y, 0));
        wr_cnt_w::<D>(x, 0, v);
    }
}

/// The largest counter + added count over `bins` (all inside the window of `W`-byte counters
/// `cells`, whose first bucket is `first`).
fn largest_sum<const W: usize>(cells: &[u8], first: i64, bins: &[(i32, u64)]) -> u64 {
    bins.iter().fold(0u64, |top, &(i, c)| {
        let o = W * (i as i64 - first) as usize;
        top.max(rd_cnt_w::<W>(cells, o).saturating_add(c))
    })
}

/// Adds `bins` to their counters (as [`largest_sum`]; every sum fits the width).
fn add_bins<const W: usize>(cells: &mut [u8], first: i64, bins: &[(i32, u64)]) {
    for &(i, c) in bins {
        let o = W * (i as i64 - first) as usize;
        let v = rd_cnt_w::<W>(cells, o).wrapping_add(c);
        wr_cnt_w::<W>(cells, o, v);
    }
}

/// Convert a working buffer into an owned sketch (validated).
pub fn working_to_sketch(buf: &[u8]) -> Result<Sketch, SketchError> {
    if is_legacy_working(buf) {
        return working_to_sketch(&from_legacy_layout(buf)?);
    }
    let lay = Layout::read(buf)?;
    let alpha = rd_f64(buf, H_ALPHA);
    let p = match Params::new(alpha) {
        Ok(p) => p,
        Err(_) => return corrupt(format!("alpha {alpha} out of range")),
    };
    if p.inv_ln_gamma.to_bits() != rd_u64(buf, H_INV) {
        return corrupt("working buffer parameters do not match alpha");
    }
    let mut s = Sketch::with_params(p);
    s.count = rd_u64(buf, H_COUNT);
    s.zero = rd_u64(buf, H_ZERO);
    s.min = rd_f64(buf, H_MIN);
    s.max = rd_f64(buf, H_MAX);
    if s.count == 0 {
        s.min = f64::INFINITY;
        s.max = f64::NEG_INFINITY;
    }
    s.sum.limbs = header_sum_limbs(buf);
    s.sum.normalize();
    for (sidx, store) in [&mut s.pos, &mut s.neg].into_iter().enumerate() {
        let (at, off) = lay.window(sidx);
        let cells = &buf[at..at + lay.w * lay.win[sidx].1 as usize];
        let most = s.count;
        store.bins = match lay.w {
            1 => nonzero_bins::<1>(cells, off, most),
            2 => nonzero_bins::<2>(cells, off, most),
            4 => nonzero_bins::<4>(cells, off, most),
            _ => nonzero_bins::<8>(cells, off, most),
        };
    }
    // the values still buffered, added as `working_flush` would have added them
    for i in 0..buf[H_NBUF] as usize {
        s.add(rd_f64(buf, H_BUF + 8 * i))?;
    }
    s.validate().map_err(SketchError::Corrupt)?;
    Ok(s)
}

/// The non-zero counters of a window of `W`-byte counters whose first bucket is `first`, as
/// (index, count) in index order; `most` bounds how many there are (the values counted).
/// Branch-free over the counters (whether a counter is zero is data, not a pattern a branch
/// predictor learns: a sparse window mispredicted on most of them): each counter of a block of
/// 64 is written to the next free slot of a scratch block on the stack, which only a non-zero
/// one keeps, and the block's kept slots are appended at once.
fn nonzero_bins<const W: usize>(cells: &[u8], first: i64, most: u64) -> Vec<(i32, u64)> {
    const BLOCK: usize = 64;
    let n = cells.len() / W;
    let mut out = Vec::with_capacity(most.min(n as u64) as usize);
    let mut scratch = [(0i32, 0u64); BLOCK];
    for (b, block) in cells[..n * W].chunks(BLOCK * W).enumerate() {
        let base = first + (b * BLOCK) as i64;
        let mut k = 0usize;
        for j in 0..block.len() / W {
            let c = rd_cnt_w::<W>(block, W * j);
            scratch[k & (BLOCK - 1)] = ((base + j as i64) as i32, c);
            k += (c != 0) as usize;
        }
        out.extend_from_slice(&scratch[..k]);
    }
    out
}

/// Whether `buf` is a layout-2 working buffer (read through [`from_legacy_layout`]).
fn is_legacy_working(buf: &[u8]) -> bool {
    buf.len() >= 4 && buf[H_MAGIC] == WORKING_MAGIC && buf[H_LAYOUT] == LEGACY_LAYOUT
}

/// A layout-3 copy of a layout-2 working buffer (a state a 0.7.0 build returned from a direct
/// `ops_sketch_trans` call and that was stored as such): the hot fields stay, the cold fields
/// and the windows move up by the value buffer, which starts empty.
fn from_legacy_layout(buf: &[u8]) -> Result<Vec<u8>, SketchError> {
    // layout 2: magic, layout, 2 reserved bytes, the fields at 4..64, then alpha, zero count and
    // growth request (64..96), then the limbs (96..640), then 8-byte counters
    const L2_COLD: usize = 64;
    const L2_SUM: usize = L2_COLD + 32;
    const L2_HEADER: usize = L2_SUM + 8 * LIMBS;
    if buf.len() < L2_HEADER {
        return corrupt("working buffer shorter than its header");
    }
    let mut out = vec![0u8; buf.len() + (HEADER - L2_HEADER)];
    out[..4].copy_from_slice(&buf[..4]);
    out[H_POS_OFF..H_HOT_END].copy_from_slice(&buf[4..L2_COLD]);
    out[H_ALPHA..H_ALPHA + 32].copy_from_slice(&buf[L2_COLD..L2_SUM]);
    out[H_SUM..].copy_from_slice(&buf[L2_SUM..]);
    out[H_LAYOUT] = WORKING_LAYOUT;
    out[H_NBUF] = 0;
    out[H_WIDTH] = 8;
    Ok(out)
}

/// Build a working buffer from an owned sketch (with slack for growth).
pub fn sketch_to_working(s: &Sketch) -> Vec<u8> {
    let span = |st: &Store| st.range().map_or(0, |(a, b)| (b - a + 1) as usize);
    let need = span(&s.pos) + span(&s.neg);
    let slots = need + (need / 2).max(MIN_SLACK_SLOTS as usize);
    let mut buf = vec![0u8; HEADER + 8 * slots];
    // Cannot fail: alpha is valid, the buffer is fresh and large enough.
    if working_init(&mut buf, s.p.alpha).is_err() {
        return buf;
    }
    loop {
        match working_merge_sketch(&mut buf, s) {
            Err(AddError::NeedsGrow { suggested_len, .. }) => {
                let mut nb = vec![0u8; suggested_len];
                if working_grow(&buf, &mut nb).is_err() {
                    return buf;
                }
                buf = nb;
            }
            _ => return buf,
        }
    }
}

/// The last few compact encodings decoded, with their sketches: a query that reads several
/// values from one stored sketch (a rollup row's four percentiles, mean and max), or passes
/// one sketch to several grouping sets, decodes it once. The key is the whole byte string
/// (compared in full), and decoding is a pure function of it, so a hit returns exactly what
/// decoding would; errors are not kept. Inputs longer than [`DecodeCache::MAX_BYTES`] are
/// decoded every time.
#[derive(Default)]
pub struct DecodeCache {
    entries: [Option<(Vec<u8>, std::rc::Rc<Sketch>)>; 2],
    /// The entry the next miss replaces (the older of the two).
    next: usize,
    /// How many decodes this cache has done (for tests).
    pub misses: u64,
}

impl DecodeCache {
    /// Longest input kept (a stored sketch is at most a few KiB).
    pub const MAX_BYTES: usize = 64 * 1024;

    /// `Sketch::decode(bytes)`, from the cache when these exact bytes were decoded lately.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<std::rc::Rc<Sketch>, SketchError> {
        for (k, hit) in self.entries.iter().enumerate() {
            if let Some((b, s)) = hit {
                if b.as_slice() == bytes {
                    // the other entry is now the older one
                    self.next = 1 - k;
                    return Ok(s.clone());
                }
            }
        }
        self.misses += 1;
        let s = std::rc::Rc::new(Sketch::decode(bytes)?);
        if bytes.len() <= Self::MAX_BYTES {
            let slot = self.older_slot();
            let mut key = slot.take().map(|(b, _)| b).unwrap_or_default();
            key.clear();
            key.extend_from_slice(bytes);
            *slot = Some((key, s.clone()));
        }
        Ok(s)
    }

    /// `f(&s.encode())`, keeping `s` as what those bytes decode to (unless they are longer
    /// than [`DecodeCache::MAX_BYTES`]): a final function's output that the same query merges
    /// next (the hourly sketches a rollup passes to its coarser grouping sets) is then a hit
    /// instead of a decode. Exact because decoding an encoding gives back the sketch
    /// (`prop_roundtrip`, `prop_decode_cache_primed`).
    pub fn encode_keeping<R>(&mut self, s: Sketch, f: impl FnOnce(&[u8]) -> R) -> R {
        let bytes = s.encode();
        let r = f(&bytes);
        if bytes.len() <= Self::MAX_BYTES {
            *self.older_slot() = Some((bytes, std::rc::Rc::new(s)));
        }
        r
    }

    /// The older entry, for the caller to replace; the other one becomes the older.
    fn older_slot(&mut self) -> &mut Option<(Vec<u8>, std::rc::Rc<Sketch>)> {
        let slot = self.next;
        self.next = 1 - slot;
        &mut self.entries[slot]
    }
}

#[cfg(test)]
mod index_tests {
    use super::*;
    use proptest::prelude::*;

    fn inv_for(alpha: f64) -> f64 {
        Params::new(alpha).unwrap().inv_ln_gamma
    }

    #[test]
    fn fast_index_equals_the_definition_next_to_every_boundary() {
        // Values a few ulps either side of each bucket boundary γ^i are where a fast estimate
        // could disagree with the definition; check all of them over the latency range and more.
        for alpha in [1e-4, 0.001, 0.005, 0.01, 0.05, 0.1] {
            let inv = inv_for(alpha);
            let lo = index_of_exact(1e-3, inv);
            let hi = index_of_exact(1e7, inv);
            for i in lo..=hi {
                let b = (i as f64 / inv).exp();
                let mut x = b;
                for _ in 0..4 {
                    x = f64::from_bits(x.to_bits() - 1);
                }
                for _ in 0..9 {
                    assert_eq!(
                        index_of(x, inv),
                        index_of_exact(x, inv),
                        "alpha {alpha} x {x:e}"
                    );
                    x = f64::from_bits(x.to_bits() + 1);
                }
            }
        }
    }

    #[test]
    fn fast_index_equals_the_definition_over_every_binade() {
        // Every normal exponent, both signs of the index (magnitudes below and above 1), and the
        // extremes where |ln(x) / ln γ| is largest (~3.5e6 at α = 1e-4): the integer read from
        // the rounded double's low bits must be the ceiling in all of them.
        for alpha in [1e-4, 0.005, 0.1] {
            let inv = inv_for(alpha);
            for e in -1022..=1023 {
                for k in 0..64u64 {
                    let x =
                        f64::from_bits((((e + 1023) as u64) << 52) | (k * 0x0000_4000_0000_0001));
                    assert_eq!(
                        index_of(x, inv),
                        index_of_exact(x, inv),
                        "alpha {alpha} x {x:e}"
                    );
                }
            }
            assert_eq!(index_of(f64::MAX, inv), index_of_exact(f64::MAX, inv));
            assert_eq!(
                index_of(f64::MIN_POSITIVE, inv),
                index_of_exact(f64::MIN_POSITIVE, inv)
            );
        }
    }

    #[test]
    fn fast_path_is_taken_for_almost_all_values() {
        // Guards the speed claim: the libm fallback stays rare.
        let inv = inv_for(0.005);
        let mut fallbacks = 0;
        let n = 200_000;
        for k in 0..n {
            let x = 1.0 + k as f64 * 2.9917;
            if index_fast(x, inv).is_none() {
                fallbacks += 1;
            }
        }
        assert!(
            fallbacks < 20,
            "{fallbacks} of {n} values took the libm path"
        );
    }

    #[test]
    fn ln_approx_is_accurate() {
        for k in 0..100_000 {
            let x = f64::from_bits(0x0010_0000_0000_0000 + k * 0x0000_7fd0_0000_0000);
            if !x.is_finite() {
                break;
            }
            let (a, e) = (ln_approx(x).unwrap(), x.ln());
            assert!((a - e).abs() <= 1e-12, "x {x:e}: {a} vs {e}");
        }
        assert_eq!(ln_approx(f64::from_bits(1)), None);
    }

    /// Values a flush may see: any finite bits, latencies, integers, zero, a subnormal, the largest.
    fn flush_value() -> BoxedStrategy<f64> {
        prop_oneof![
            (1u64..0x7fef_ffff_ffff_ffff).prop_map(f64::from_bits),
            (-1e7f64..1e7),
            (1u32..600_000).prop_map(|v| v as f64),
            Just(0.0),
            Just(f64::MIN_POSITIVE / 8.0),
            Just(f64::MAX),
        ]
        .boxed()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// The batched bucket computation of a flush equals `index_of` value by value.
        #[test]
        fn batch_indices_equal_index_of(
            vals in prop::collection::vec(flush_value(), 0..=BUF_CAP),
            alpha in prop::sample::select(vec![1e-4, 0.005, 0.02, 0.1]),
        ) {
            let inv = inv_for(alpha);
            let got = batch_indices(&vals, inv);
            for (i, &x) in vals.iter().enumerate() {
                if x != 0.0 {
                    prop_assert_eq!(got[i], index_of(x.abs(), inv), "x {:e}", x);
                }
            }
        }

        #[test]
        fn fast_index_equals_the_definition(
            bits in 1u64..0x7fef_ffff_ffff_ffff,
            alpha in prop::sample::select(vec![1e-4, 0.001, 0.005, 0.02, 0.1]),
        ) {
            let x = f64::from_bits(bits);
            let inv = inv_for(alpha);
            prop_assert_eq!(index_of(x, inv), index_of_exact(x, inv));
        }
    }

    /// Magnitudes around bucket boundaries of `inv`: each boundary γ^k (as libm computes
    /// it) moved by a signed number of ulps, so that the guard band's edges and the boundary
    /// itself are hit.
    fn near_boundaries(inv: f64, ks: &[(i32, i64)]) -> Vec<f64> {
        ks.iter()
            .map(|&(k, ulps)| {
                let b = (k as f64 / inv).exp();
                f64::from_bits(b.to_bits().saturating_add_signed(ulps))
            })
            .filter(|x| x.is_finite() && *x > 0.0)
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        /// The index table decides every magnitude as the definition does: random magnitudes,
        /// and magnitudes within a few ulps, at the guard band's edges and inside it, of bucket
        /// boundaries; every alpha (the small ones have no table and take `batch_indices`).
        #[test]
        fn table_indices_equal_the_definition(
            vals in prop::collection::vec(flush_value(), BUF_CAP),
            near in prop::collection::vec(
                (
                    -140_000i32..140_000,
                    prop_oneof![
                        -4i64..4,
                        (ROW_GUARD_ULPS as i64 - 3)..(ROW_GUARD_ULPS as i64 + 3),
                        (-(ROW_GUARD_ULPS as i64) - 3)..(-(ROW_GUARD_ULPS as i64) + 3),
                        -(1i64 << 40)..(1i64 << 40),
                    ],
                ),
                BUF_CAP,
            ),
            alpha in prop_oneof![
                prop::sample::select(vec![1e-4, 0.0005, 0.0006, 0.001, 0.005, 0.02, 0.1]),
                MIN_ALPHA..=MAX_ALPHA,
            ],
        ) {
            let inv = inv_for(alpha);
            let mut near = near_boundaries(inv, &near);
            near.resize(BUF_CAP, 1.0);
            let (table, row_bits) = IndexTable::new_boxed(inv);
            for set in [vals, near] {
                let v: [f64; BUF_CAP] = set.try_into().unwrap();
                let got = match row_bits {
                    Some(rb) => table_indices(&table, rb, &v, inv),
                    None => batch_indices(&v, inv),
                };
                // and the process-wide tables, whichever this alpha gets
                prop_assert_eq!(batch_indices_tabled(&v, inv), got);
                for (i, &x) in v.iter().enumerate() {
                    if x != 0.0 {
                        prop_assert_eq!(got[i], index_of_exact(x.abs(), inv), "alpha {} x {:e}", alpha, x);
                    }
                }
            }
        }
    }

    /// Every row of a binade's table, checked at its boundary and at the guard band's edges
    /// against the definition, for binades of typical latencies.
    #[test]
    fn table_rows_match_the_definition() {
        for alpha in [0.0006, 0.001, 0.005, 0.01, 0.1] {
            let inv = inv_for(alpha);
            let row_bits = row_bits_for(inv).expect("alpha has a table");
            for e in [1023u64 - 30, 1023 - 1, 1023, 1023 + 9, 1023 + 19, 2046] {
                let rows = build_binade(e, row_bits, inv);
                let (mut boundaries, mut undecided) = (0, 0);
                for (j, row) in rows.iter().enumerate() {
                    let start = (e << 52) | ((j as u64) << (52 - row_bits));
                    let end = start + (1u64 << (52 - row_bits)) - 1;
                    let exact = |b: u64| index_of_exact(f64::from_bits(b), inv);
                    if row.hi == u64::MAX && row.lo != u64::MAX {
                        undecided += 1;
                        continue;
                    }
                    for b in [start, end, start + 1, end - 1, (start + end) / 2] {
                        match row.lookup(b) {
                            (k, true) => assert_eq!(k, exact(b), "alpha {alpha} e {e} row {j}"),
                            (_, false) => assert!(b >= row.lo && b < row.hi),
                        }
                    }
                    if row.lo != u64::MAX {
                        boundaries += 1;
                        let bnd = row.lo + ROW_GUARD_ULPS;
                        assert_eq!(exact(bnd - 1), row.idx);
                        assert_eq!(exact(bnd), row.idx + 1);
                        for b in [row.lo - 1, row.hi, row.hi + 1] {
                            if (start..=end).contains(&b) {
                                assert_eq!(row.lookup(b), (exact(b), true));
                            }
                        }
                    }
                }
                // the table decides: almost every row is decided (a row that ends just below
                // 1.0, itself a bucket edge, is not)
                assert!(
                    undecided <= 1.max(rows.len() / 50),
                    "alpha {alpha} e {e}: {undecided} of {} undecided",
                    rows.len()
                );
                assert!(boundaries > 0, "alpha {alpha} e {e}");
            }
        }
        // too narrow for a table: the smallest alphas
        assert_eq!(row_bits_for(inv_for(MIN_ALPHA)), None);
    }

    #[test]
    fn table_decides_almost_all_values() {
        // Guards the speed claim: the table leaves few values to `index_of`.
        let inv = inv_for(DEFAULT_ALPHA);
        let (table, row_bits) = IndexTable::of(inv).unwrap();
        let (mut undecided, n) = (0, 200_000);
        for k in 0..n {
            let x = 1.0 + k as f64 * 2.9917;
            let bits = x.to_bits();
            let rows = table.binade((bits >> 52) as usize, row_bits);
            let row = rows[(bits >> (52 - row_bits)) as usize & ((1 << row_bits) - 1)];
            undecided += !row.lookup(bits).1 as u32;
        }
        assert!(undecided < 20, "{undecided} of {n} values undecided");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    // ---------------------------------------------------------------- helpers

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn unit(&mut self) -> f64 {
            ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }
        fn normal(&mut self) -> f64 {
            let (u1, u2) = (self.unit(), self.unit());
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        }
    }

    fn build(values: &[f64], alpha: f64) -> Sketch {
        let mut s = Sketch::new(alpha).unwrap();
        for &v in values {
            s.add(v).unwrap();
        }
        s
    }

    /// Encodings longer than `MAX_BYTES` are not kept, whether decoded or made by
    /// `encode_keeping`; the result is the same either way.
    #[test]
    fn decode_cache_does_not_keep_long_encodings() {
        // every other bucket over a wide range at a fine alpha: a long list of counts
        let values: Vec<f64> = (0..40_000).map(|i| 1.0004f64.powi(2 * i)).collect();
        let s = build(&values, 0.0001);
        let b = s.encode();
        assert!(b.len() > DecodeCache::MAX_BYTES, "{} bytes", b.len());
        let mut cache = DecodeCache::default();
        assert_eq!(cache.encode_keeping(s.clone(), |b| b.to_vec()), b);
        assert_eq!(*cache.decode(&b).unwrap(), s);
        assert_eq!(cache.misses, 1);
        assert_eq!(*cache.decode(&b).unwrap(), s);
        assert_eq!(cache.misses, 2);
    }

    fn sorted(values: &[f64]) -> Vec<f64> {
        let mut v = values.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        v
    }

    /// percentile_disc(q) exactly as PostgreSQL computes it.
    fn oracle(sorted: &[f64], q: f64) -> f64 {
        let n = sorted.len() as u64;
        let r = ((q * n as f64).ceil() as u64).clamp(1, n);
        sorted[(r - 1) as usize]
    }

    const QGRID: [f64; 10] = [0.0, 0.001, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0];

    fn tol(alpha: f64, exact: f64) -> f64 {
        (alpha + 1e-12) * exact.abs() + 2.0 * TINY
    }

    fn check_quantile(s: &Sketch, sorted: &[f64], q: f64) -> Result<(), TestCaseError> {
        let exact = oracle(sorted, q);
        let est = s.quantile(q).unwrap().unwrap();
        if exact == 0.0 {
            prop_assert_eq!(est, 0.0, "q={} exact 0", q);
        } else {
            prop_assert!(
                (est - exact).abs() <= tol(s.alpha(), exact),
                "q={} est={} exact={} alpha={}",
                q,
                est,
                exact,
                s.alpha()
            );
        }
        Ok(())
    }

    /// Exact fraction of values <= v.
    fn frac_le(sorted: &[f64], v: f64) -> f64 {
        sorted.partition_point(|&x| x <= v) as f64 / sorted.len() as f64
    }

    /// Feed values into a working buffer that starts at the minimum length and
    /// grows to exactly (or nearly) the minimum each time, filling new buffers
    /// with garbage. Returns (buffer, number of grows).
    fn working_build(values: &[f64], alpha: f64, rng: &mut Rng) -> (Vec<u8>, usize) {
        let mut buf = vec![0x5Au8; working_min_len()];
        working_init(&mut buf, alpha).unwrap();
        let mut grows = 0;
        for &x in values {
            loop {
                match working_add(&mut buf, x) {
                    Ok(()) => break,
                    Err(AddError::NeedsGrow {
                        min_len,
                        suggested_len,
                    }) => {
                        assert!(suggested_len >= min_len);
                        let extra = 8 * rng.below(3) as usize + rng.below(8) as usize;
                        let mut nb = vec![0xABu8; min_len + extra];
                        working_grow(&buf, &mut nb).unwrap();
                        buf = nb;
                        grows += 1;
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
            }
        }
        grows += flush_growing(&mut buf);
        (buf, grows)
    }

    /// `working_flush`, growing `buf` to the suggested length when asked: afterwards every value
    /// is in the counters, as a `working_add` of layout 2 left it.
    fn flush_growing(buf: &mut Vec<u8>) -> usize {
        let mut grows = 0;
        loop {
            match working_flush(buf) {
                Ok(()) => return grows,
                Err(AddError::NeedsGrow { suggested_len, .. }) => {
                    let mut nb = vec![0xEEu8; suggested_len];
                    working_grow(buf, &mut nb).unwrap();
                    *buf = nb;
                    grows += 1;
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
    }

    /// `working_add` and then `working_flush`, growing when asked.
    fn add_now(buf: &mut Vec<u8>, x: f64) {
        add_growing(buf, x);
        flush_growing(buf);
    }

    /// `working_add`, growing `buf` to the suggested length when asked.
    fn add_growing(buf: &mut Vec<u8>, x: f64) {
        loop {
            match working_add(buf, x) {
                Ok(()) => return,
                Err(AddError::NeedsGrow { suggested_len, .. }) => {
                    let mut nb = vec![0xEEu8; suggested_len];
                    working_grow(buf, &mut nb).unwrap();
                    *buf = nb;
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
    }

    fn working_merge_all(buf: &mut Vec<u8>, s: &Sketch) {
        loop {
            match working_merge_sketch(buf, s) {
                Ok(()) => return,
                Err(AddError::NeedsGrow { min_len, .. }) => {
                    let mut nb = vec![0xCDu8; min_len];
                    working_grow(buf, &mut nb).unwrap();
                    *buf = nb;
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
    }

    // ----------------------------------------------------------- strategies

    fn finite_any() -> BoxedStrategy<f64> {
        prop_oneof![
            prop::num::f64::NORMAL,
            prop::num::f64::SUBNORMAL,
            prop::num::f64::ZERO,
            -1e6f64..1e6,
        ]
        .boxed()
    }

    fn lognormal(mu: f64, sigma: f64, n: std::ops::Range<usize>) -> BoxedStrategy<Vec<f64>> {
        vec((1e-12f64..1.0, 0.0f64..1.0), n)
            .prop_map(move |v| {
                v.into_iter()
                    .map(|(u1, u2)| {
                        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                        (mu + sigma * z).exp()
                    })
                    .collect()
            })
            .boxed()
    }

    fn dataset() -> BoxedStrategy<Vec<f64>> {
        prop_oneof![
            // uniform
            vec(0.0f64..1000.0, 1..300),
            // log-normal heavy tail
            lognormal(3.0, 2.0, 1..400),
            // Pareto (alpha 1.1): heavy tail up to ~1e10
            vec(1e-9f64..1.0, 1..300)
                .prop_map(|v| v.into_iter().map(|u| 2.0 / u.powf(1.0 / 1.1)).collect()),
            // many ties
            vec(
                prop::sample::select(vec![1.0, 2.0, 2.5, 100.0, 1e6, -3.0]),
                1..300
            ),
            // all constant
            (finite_any(), 1usize..200).prop_map(|(c, n)| vec![c; n]),
            // zeros mixed in (both signs of zero)
            vec(
                prop_oneof![Just(0.0), Just(-0.0), 0.001f64..10.0, -10.0f64..-0.001],
                1..300
            ),
            // negatives only
            vec(-1e4f64..-1e-4, 1..300),
            // mixed signs
            vec(-1e6f64..1e6, 1..300),
            // tiny and huge magnitudes, both signs
            vec((any::<bool>(), -300.0f64..300.0), 1..300).prop_map(|v| v
                .into_iter()
                .map(|(neg, e)| if neg { -(10f64.powf(e)) } else { 10f64.powf(e) })
                .collect()),
            // extremes incl. subnormals and f64::MAX
            vec(
                prop::sample::select(vec![
                    f64::MAX,
                    -f64::MAX,
                    f64::MIN_POSITIVE,
                    -f64::MIN_POSITIVE,
                    TINY,
                    -TINY,
                    1e-300,
                    1e300,
                    -1e300,
                    0.0,
                    1.0,
                    3e-310,
                ]),
                1..100
            ),
            // single value
            finite_any().prop_map(|x| vec![x]),
            // two values
            (finite_any(), finite_any()).prop_map(|(a, b)| vec![a, b]),
            // any finite values
            vec(finite_any(), 1..100),
        ]
        .boxed()
    }

    /// 2^53 - 1: the largest magnitude that goes to the working buffer's integer part.
    const BIG_INT: i64 = (1 << 53) - 1;

    /// Integer-valued inputs (the working buffer's integer part), alone and mixed with values
    /// that take the limb path.
    fn int_dataset() -> BoxedStrategy<Vec<f64>> {
        let ints = |v: Vec<i64>| v.into_iter().map(|i| i as f64).collect::<Vec<f64>>();
        prop_oneof![
            // small latencies, zeros included
            vec(0i64..1000, 1..300).prop_map(ints),
            // log-normal integer milliseconds in 1..=600000
            lognormal(6.65, 2.2, 1..400).prop_map(|v| v
                .into_iter()
                .map(|x| x.round().clamp(1.0, 600000.0))
                .collect()),
            // near +-2^53
            vec((any::<bool>(), 0i64..1000), 1..300).prop_map(|v| v
                .into_iter()
                .map(|(neg, k)| if neg { -(BIG_INT - k) } else { BIG_INT - k } as f64)
                .collect()),
            // negatives only, and any sign and size below 2^53
            vec(-600000i64..0, 1..300).prop_map(ints),
            vec(-BIG_INT..=BIG_INT, 1..300).prop_map(ints),
            // integers mixed with fractional values, zeros, and integral values the integer part
            // does not take (|x| >= 2^53)
            vec(
                prop_oneof![
                    4 => (-100000i64..100000).prop_map(|i| i as f64),
                    1 => (-100000i64..100000).prop_map(|i| i as f64 + 0.5),
                    1 => -1e6f64..1e6,
                    1 => prop::sample::select(vec![
                        0.0,
                        -0.0,
                        BIG_INT as f64,
                        -(BIG_INT as f64),
                        9007199254740992.0,
                        -9007199254740992.0,
                        9007199254740994.0,
                        1e18,
                        -1e300,
                        0.1,
                        TINY,
                    ]),
                ],
                1..300
            ),
            // forced i64 overflow of the integer part, upwards then downwards: runs of more
            // than 1024 values near 2^53, then near -2^53
            (1030usize..1300, 1030usize..2600, 0i64..100).prop_map(|(up, down, k)| {
                let mut v = vec![(BIG_INT - k) as f64; up];
                v.extend(std::iter::repeat_n(-((BIG_INT - k) as f64), down));
                v
            }),
        ]
        .boxed()
    }

    fn alpha_strategy() -> BoxedStrategy<f64> {
        prop_oneof![
            Just(DEFAULT_ALPHA),
            Just(MIN_ALPHA),
            Just(0.01),
            Just(MAX_ALPHA),
            MIN_ALPHA..=MAX_ALPHA,
        ]
        .boxed()
    }

    // -------------------------------------------------------- property tests

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        /// Quantiles within alpha of the exact percentile_disc, count/min/max
        /// exact, sum == correctly rounded exact sum when the naive sum is exact.
        #[test]
        fn prop_quantile_accuracy(values in dataset(), alpha in alpha_strategy(),
                                  qs in vec(0.0f64..=1.0, 5)) {
            let s = build(&values, alpha);
            let sv = sorted(&values);
            for q in QGRID.iter().chain(qs.iter()) {
                check_quantile(&s, &sv, *q)?;
            }
            prop_assert_eq!(s.count(), values.len() as u64);
            prop_assert_eq!(s.min().unwrap(), sv[0]);
            prop_assert_eq!(s.max().unwrap(), *sv.last().unwrap());
            prop_assert_eq!(s.quantile(0.0).unwrap().unwrap(), sv[0]);
            prop_assert_eq!(s.quantile(1.0).unwrap().unwrap(), *sv.last().unwrap());
            prop_assert_eq!(s.zero_count(), values.iter().filter(|&&x| x == 0.0).count() as u64);
            // min/max/sum bounds: mean lies in [min, max]
            let m = s.mean().unwrap();
            prop_assert!(m >= sv[0] && m <= *sv.last().unwrap(), "mean {} outside", m);
        }

        /// rank(v): monotone, 0 below min, 1 at/above max, within bucket
        /// resolution of the exact fraction.
        #[test]
        fn prop_rank(values in dataset(), alpha in alpha_strategy(),
                     probes in vec(0usize..1000, 1..20), factors in vec(0.5f64..2.0, 1..20)) {
            let s = build(&values, alpha);
            let sv = sorted(&values);
            let (mn, mx) = (sv[0], *sv.last().unwrap());
            let mut vs: Vec<f64> = probes.iter().map(|&i| sv[i % sv.len()]).collect();
            vs.extend(factors.iter().zip(probes.iter()).map(|(f, &i)| sv[i % sv.len()] * f));
            vs.extend([mn, mx, 0.0, f64::INFINITY, f64::NEG_INFINITY]);
            if mn > -f64::MAX { vs.push(mn - mn.abs() * 1e-9 - TINY) }
            vs.sort_by(|a, b| a.total_cmp(b));
            let mut prev = 0.0;
            for &v in &vs {
                let r = s.rank(v).unwrap().unwrap();
                prop_assert!(r >= prev, "rank not monotone at {}", v);
                prev = r;
                if v < mn { prop_assert_eq!(r, 0.0); }
                if v >= mx { prop_assert_eq!(r, 1.0); }
                let e = 1e-12;
                let (a, b) = (v / (1.0 + alpha), v / (1.0 - alpha));
                let (lo, hi) = if v >= 0.0 { (a * (1.0 - e) - 2.0 * TINY, b * (1.0 + e) + 2.0 * TINY) }
                               else { (b * (1.0 + e) - 2.0 * TINY, a * (1.0 - e) + 2.0 * TINY) };
                let (flo, fhi) = (frac_le(&sv, lo), frac_le(&sv, hi));
                prop_assert!(r >= flo - 1e-12 && r <= fhi + 1e-12,
                             "rank({})={} not in [{}, {}]", v, r, flo, fhi);
            }
            prop_assert!(s.rank(f64::NAN).is_err());
        }

        /// Random split into k parts merged in random order and grouping gives
        /// byte-identical encodings; so does the working-buffer path.
        #[test]
        fn prop_merge_bytes(values in dataset(), alpha in alpha_strategy(),
                            k in 1usize..8, seed in any::<u64>()) {
            let whole = build(&values, alpha);
            let want = whole.encode();
            let mut rng = Rng(seed);
            let mut parts: Vec<Vec<f64>> = vec![Vec::new(); k];
            for &v in &values {
                parts[rng.below(k as u64) as usize].push(v);
            }
            let sketches: Vec<Sketch> = parts.iter().map(|p| build(p, alpha)).collect();
            let mut pool = sketches.clone();
            while pool.len() > 1 {
                let i = rng.below(pool.len() as u64) as usize;
                let a = pool.swap_remove(i);
                let j = rng.below(pool.len() as u64) as usize;
                let b = pool.swap_remove(j);
                let m = if rng.below(2) == 0 { Sketch::merged(&a, &b) } else { Sketch::merged(&b, &a) };
                pool.push(m.unwrap());
            }
            prop_assert_eq!(&pool[0].encode(), &want);
            prop_assert_eq!(&pool[0], &whole);
            // working buffer: merge the parts into a tiny working buffer
            let mut buf = vec![0u8; working_min_len()];
            working_init(&mut buf, alpha).unwrap();
            for i in 0..k {
                let s = &sketches[(i + seed as usize % k) % k];
                working_merge_all(&mut buf, s);
            }
            prop_assert_eq!(working_to_sketch(&buf).unwrap().encode(), want.clone());
            // working buffer: add part values then merge others
            let (mut wb, _) = working_build(&parts[0], alpha, &mut rng);
            for s in &sketches[1..] {
                working_merge_all(&mut wb, s);
            }
            prop_assert_eq!(working_to_sketch(&wb).unwrap().encode(), want);
        }

        /// Working-buffer path with forced tiny buffers (growth many times, new
        /// buffers full of garbage) equals the owned path byte for byte.
        #[test]
        fn prop_working_equals_owned(values in dataset(), alpha in alpha_strategy(), seed in any::<u64>()) {
            let whole = build(&values, alpha);
            let mut rng = Rng(seed);
            let (buf, grows) = working_build(&values, alpha, &mut rng);
            let ws = working_to_sketch(&buf).unwrap();
            prop_assert_eq!(ws.encode(), whole.encode());
            prop_assert_eq!(working_count(&buf).unwrap(), values.len() as u64);
            prop_assert!(grows >= 1 || values.iter().all(|&x| x == 0.0));
            // sketch_to_working round trip and continued adds
            let mut w2 = sketch_to_working(&whole);
            prop_assert_eq!(working_to_sketch(&w2).unwrap(), whole.clone());
            for &x in values.iter().take(20) {
                loop {
                    match working_add(&mut w2, x) {
                        Ok(()) => break,
                        Err(AddError::NeedsGrow { suggested_len, .. }) => {
                            let mut nb = vec![0xEEu8; suggested_len];
                            working_grow(&w2, &mut nb).unwrap();
                            w2 = nb;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            let mut both = whole.clone();
            for &x in values.iter().take(20) { both.add(x).unwrap(); }
            prop_assert_eq!(working_to_sketch(&w2).unwrap().encode(), both.encode());
        }

        /// Large caller-provided buffers (in-place relayout, never NeedsGrow).
        #[test]
        fn prop_working_in_place(values in lognormal(4.0, 2.0, 1..300), alpha in alpha_strategy()) {
            // lognormal(4, 2) spans < e^30; 30/ln(gamma) slots always suffice
            let slots = (30.0 / (alpha.ln_1p() - (-alpha).ln_1p())) as usize + 2;
            let mut buf = vec![0x77u8; working_min_len() + 8 * slots];
            working_init(&mut buf, alpha).unwrap();
            for &x in &values {
                working_add(&mut buf, x).unwrap();
            }
            prop_assert_eq!(working_to_sketch(&buf).unwrap().encode(), build(&values, alpha).encode());
        }

        /// Integer-valued inputs (alone, near 2^53, negative, zero, mixed with values that take
        /// the limb path, overflowing the integer part) give byte-identical compact sketches
        /// and identical sums to the owned path: built in a growing working buffer, merged from
        /// any split, and after a working -> sketch -> working round trip half way.
        #[test]
        fn prop_working_integers_equal_owned(values in int_dataset(), alpha in alpha_strategy(),
                                             k in 1usize..6, seed in any::<u64>()) {
            let whole = build(&values, alpha);
            let want = whole.encode();
            let bits = |s: &Sketch| (s.sum().map(f64::to_bits), s.mean().map(f64::to_bits));
            let mut rng = Rng(seed);
            let (buf, _) = working_build(&values, alpha, &mut rng);
            let ws = working_to_sketch(&buf).unwrap();
            prop_assert_eq!(ws.encode(), want.clone());
            prop_assert_eq!(bits(&ws), bits(&whole));
            if values.iter().all(|x| x.fract() == 0.0 && x.abs() < 1e30) {
                let exact: i128 = values.iter().map(|&x| x as i128).sum();
                prop_assert_eq!(ws.sum().unwrap(), exact as f64);
            }
            // random split into k working buffers, merged into the first (whose integer part
            // is live), and as owned sketches in reverse order
            let mut parts: Vec<Vec<f64>> = vec![Vec::new(); k];
            for &v in &values {
                parts[rng.below(k as u64) as usize].push(v);
            }
            let bufs: Vec<Vec<u8>> = parts.iter().map(|p| working_build(p, alpha, &mut rng).0).collect();
            let mut acc = bufs[0].clone();
            for b in &bufs[1..] {
                working_merge_all(&mut acc, &working_to_sketch(b).unwrap());
            }
            let merged = working_to_sketch(&acc).unwrap();
            prop_assert_eq!(merged.encode(), want.clone());
            prop_assert_eq!(bits(&merged), bits(&whole));
            let mut owned = Sketch::new(alpha).unwrap();
            for b in bufs.iter().rev() {
                owned.merge(&working_to_sketch(b).unwrap()).unwrap();
            }
            prop_assert_eq!(owned.encode(), want.clone());
            // working -> sketch -> working half way, then the rest of the values
            let cut = rng.below(values.len() as u64 + 1) as usize;
            let (half, _) = working_build(&values[..cut], alpha, &mut rng);
            let hs = working_to_sketch(&half).unwrap();
            prop_assert_eq!(hs.encode(), build(&values[..cut], alpha).encode());
            let mut w2 = sketch_to_working(&hs);
            prop_assert_eq!(working_to_sketch(&w2).unwrap(), hs);
            for &x in &values[cut..] {
                add_growing(&mut w2, x);
            }
            let rt = working_to_sketch(&w2).unwrap();
            prop_assert_eq!(rt.encode(), want);
            prop_assert_eq!(bits(&rt), bits(&whole));
        }

        /// Encoding and text round trips are exact.
        #[test]
        fn prop_roundtrip(values in dataset(), alpha in alpha_strategy()) {
            let s = build(&values, alpha);
            let b = s.encode();
            prop_assert_eq!(b[0], FORMAT_VERSION);
            let d = Sketch::decode(&b).unwrap();
            prop_assert_eq!(&d, &s);
            prop_assert_eq!(d.encode(), b);
            let t = s.to_text();
            prop_assert!(t.starts_with(TEXT_PREFIX));
            let d2 = Sketch::from_text(&t).unwrap();
            prop_assert_eq!(d2.to_text(), t);
            prop_assert_eq!(d2.sum().map(f64::to_bits), s.sum().map(f64::to_bits));
        }

        /// Mutated / truncated / extended encodings never panic; anything that
        /// decodes re-encodes to the same bytes (canonical form).
        #[test]
        fn prop_decode_mutations(values in dataset(), alpha in alpha_strategy(),
                                 muts in vec((any::<u16>(), any::<u8>(), 0u8..4), 1..6)) {
            let s = build(&values, alpha);
            let mut b = s.encode();
            for (pos, byte, kind) in muts {
                let i = pos as usize % (b.len() + 1);
                match kind {
                    0 => if i < b.len() { b[i] = byte },
                    1 => b.truncate(i),
                    2 => b.insert(i, byte),
                    _ => if i < b.len() { b[i] ^= 1 << (byte % 8) },
                }
            }
            if let Ok(d) = Sketch::decode(&b) {
                prop_assert_eq!(d.encode(), b);
            }
        }

        #[test]
        fn prop_decode_random_bytes(mut b in vec(any::<u8>(), 0..200), v1 in any::<bool>()) {
            if v1 && !b.is_empty() { b[0] = FORMAT_VERSION; }
            if let Ok(d) = Sketch::decode(&b) {
                prop_assert_eq!(d.encode(), b);
            }
        }

        /// A merge of one compact sketch into an empty state (what `ops_sketch_merge` does for
        /// a group with one input, starting from a small fresh buffer) is that sketch, byte for
        /// byte: the SQL combine function may therefore keep a lone compact input as it is.
        #[test]
        fn prop_merge_of_one_is_the_input(values in dataset(), alpha in alpha_strategy(),
                                          room in 0usize..64) {
            let s = build(&values, alpha);
            let b = s.encode();
            let mut buf = vec![0x77u8; working_min_len() + 8 * room];
            working_init(&mut buf, Sketch::decode(&b).unwrap().alpha()).unwrap();
            working_merge_all(&mut buf, &Sketch::decode(&b).unwrap());
            prop_assert_eq!(working_to_sketch(&buf).unwrap().encode(), b);
        }

        /// The decode cache returns what `Sketch::decode` returns, for valid and corrupt inputs
        /// in any order, and decodes bytes seen in one of its last two misses only once.
        #[test]
        fn prop_decode_cache_equals_decode(sets in vec((dataset(), alpha_strategy()), 1..5),
                                           picks in vec((any::<u8>(), any::<u16>(), any::<bool>()), 1..40)) {
            let encodings: Vec<Vec<u8>> = sets.iter().map(|(v, a)| build(v, *a).encode()).collect();
            let mut cache = DecodeCache::default();
            let mut last: Option<Vec<u8>> = None;
            for (k, pos, corrupt) in picks {
                let mut b = encodings[k as usize % encodings.len()].clone();
                if corrupt {
                    let i = pos as usize % b.len();
                    b[i] ^= 0x40;
                }
                let before = cache.misses;
                let got = cache.decode(&b);
                match Sketch::decode(&b) {
                    Ok(want) => prop_assert_eq!(&*got.unwrap(), &want),
                    Err(e) => prop_assert_eq!(got.unwrap_err(), e),
                }
                // the same bytes twice in a row: the second call is a hit when they decoded
                if last.as_deref() == Some(b.as_slice()) && Sketch::decode(&b).is_ok() {
                    prop_assert_eq!(cache.misses, before);
                }
                last = Some(b);
            }
        }

        /// A cache primed with a working buffer's sketch by `encode_keeping` returns, for those
        /// bytes, exactly what decoding them returns, without a decode; the older entry stays.
        #[test]
        fn prop_decode_cache_primed(values in dataset(), other in dataset(), alpha in alpha_strategy(),
                                    cut in any::<u16>()) {
            let cut = cut as usize % (values.len() + 1);
            let mut w = sketch_to_working(&build(&values[..cut], alpha));
            for &x in &values[cut..] {
                add_growing(&mut w, x);
            }
            let s = working_to_sketch(&w).unwrap();
            let older = build(&other, alpha).encode();
            let mut cache = DecodeCache::default();
            cache.decode(&older).unwrap();
            let b = cache.encode_keeping(s.clone(), |b| b.to_vec());
            prop_assert_eq!(&b, &s.encode());
            let before = cache.misses;
            let got = cache.decode(&b).unwrap();
            prop_assert_eq!(cache.misses, before);
            prop_assert_eq!(&*got, &Sketch::decode(&b).unwrap());
            prop_assert_eq!(&*got, &s);
            prop_assert_eq!(got.encode(), b);
            let o = cache.decode(&older).unwrap();
            prop_assert_eq!(cache.misses, before);
            prop_assert_eq!(&*o, &Sketch::decode(&older).unwrap());
        }

        #[test]
        fn prop_from_text_random(s in ".{0,80}", body in "[A-Za-z0-9+/=]{0,120}") {
            let _ = Sketch::from_text(&s);
            let t = format!("{TEXT_PREFIX}{body}");
            match Sketch::from_text(&t) {
                Ok(d) => prop_assert_eq!(d.to_text(), t),
                Err(e) => prop_assert!(matches!(e, SketchError::Parse(_))),
            }
        }

        /// Hostile working buffers never panic.
        #[test]
        fn prop_working_hostile(values in vec(-1e3f64..1e3, 1..50), muts in vec((any::<u16>(), any::<u8>()), 1..8),
                                x in finite_any()) {
            let mut rng = Rng(1);
            let (mut buf, _) = working_build(&values, 0.01, &mut rng);
            let len = buf.len();
            for (pos, byte) in muts {
                let i = pos as usize % len.min(HEADER + 64);
                buf[i] = byte;
            }
            let _ = working_to_sketch(&buf);
            let _ = working_used_len(&buf);
            let _ = working_add(&mut buf, x);
            let _ = working_merge_sketch(&mut buf, &build(&values, 0.01));
            let mut nb = vec![0u8; len + 64];
            let _ = working_grow(&buf, &mut nb);
            let _ = working_to_sketch(&buf);
        }

        /// Integer sums are exact (compared with i128), including mixed signs
        /// and values beyond 2^53 (m * 2^e).
        #[test]
        fn prop_sum_integers(ints in vec(-(1i64 << 53)..(1i64 << 53), 1..300),
                             scaled in vec((any::<i32>(), 0u32..60), 0..50)) {
            let mut s = Sketch::new(0.01).unwrap();
            let mut exact: i128 = 0;
            for &i in &ints {
                s.add(i as f64).unwrap();
                exact += i as i128;
            }
            for &(m, e) in &scaled {
                let v = (m as i128) << e;
                s.add(v as f64).unwrap();
                exact += v;
            }
            prop_assert_eq!(s.sum().unwrap(), exact as f64);
            let n = s.count() as i128;
            if exact % n == 0 {
                prop_assert_eq!(s.mean().unwrap(), (exact / n) as f64);
            } else {
                let r = exact as f64 / n as f64;
                prop_assert!((s.mean().unwrap() - r).abs() <= r.abs() * 4.5e-16 + 1e-300);
            }
            // working path gives the same sum
            let mut rng = Rng(7);
            let all: Vec<f64> = ints.iter().map(|&i| i as f64)
                .chain(scaled.iter().map(|&(m, e)| ((m as i128) << e) as f64)).collect();
            let (buf, _) = working_build(&all, 0.01, &mut rng);
            prop_assert_eq!(working_to_sketch(&buf).unwrap().sum().unwrap(), exact as f64);
        }

        /// Dyadic values where the naive f64 sum is exact.
        #[test]
        fn prop_sum_naive_exact(ks in vec(-(1i64 << 30)..(1i64 << 30), 1..300), shift in 0i32..40) {
            let scale = 2f64.powi(-shift);
            let vals: Vec<f64> = ks.iter().map(|&k| k as f64 * scale).collect();
            let naive: f64 = vals.iter().sum();
            prop_assert_eq!(build(&vals, 0.005).sum().unwrap(), naive);
        }

        /// add_n(x, n) is identical to n adds.
        #[test]
        fn prop_add_n(items in vec((finite_any(), 0u64..20), 1..30)) {
            let mut a = Sketch::new(0.005).unwrap();
            let mut b = Sketch::new(0.005).unwrap();
            for &(x, n) in &items {
                a.add_n(x, n).unwrap();
                for _ in 0..n { b.add(x).unwrap(); }
            }
            prop_assert_eq!(a.encode(), b.encode());
        }
    }

    // ------------------------------------------------------------ unit tests

    #[test]
    fn empty_sketch() {
        let s = Sketch::new(0.01).unwrap();
        assert_eq!(s.count(), 0);
        assert_eq!(s.sum(), None);
        assert_eq!(s.mean(), None);
        assert_eq!(s.min(), None);
        assert_eq!(s.max(), None);
        assert_eq!(s.quantile(0.5).unwrap(), None);
        assert_eq!(s.rank(1.0).unwrap(), None);
        let b = s.encode();
        assert_eq!(b.len(), 10);
        assert_eq!(Sketch::decode(&b).unwrap(), s);
        assert_eq!(Sketch::default().alpha(), DEFAULT_ALPHA);
        // empty working buffer converts to the empty sketch
        let mut w = vec![0u8; working_min_len()];
        working_init(&mut w, 0.01).unwrap();
        assert_eq!(working_to_sketch(&w).unwrap().encode(), b);
    }

    #[test]
    fn constant_and_extremes_exact() {
        for &c in &[42.123, -7.5, 1e-300, 1e300, TINY, f64::MAX, -f64::MAX, 0.0] {
            let s = build(&[c; 17], 0.05);
            for q in QGRID {
                assert_eq!(s.quantile(q).unwrap().unwrap(), c);
            }
        }
        let s = build(&[1e-300, 1e300, -1e300, -1e-300, 5.0], 0.001);
        assert_eq!(s.quantile(0.0).unwrap(), Some(-1e300));
        assert_eq!(s.quantile(1.0).unwrap(), Some(1e300));
        let q = s.quantile(0.4).unwrap().unwrap(); // rank 2 -> -1e-300
        assert!((q + 1e-300).abs() <= 0.001 * 1e-300 * (1.0 + 1e-12));
        let q = s.quantile(0.6).unwrap().unwrap(); // rank 3 -> 1e-300
        assert!((q - 1e-300).abs() <= 0.001 * 1e-300 * (1.0 + 1e-12));
    }

    #[test]
    fn percentile_disc_semantics() {
        let s = build(&[1.0, 2.0, 3.0, 4.0], 0.001);
        // rank = ceil(q*n): q=0.5 -> rank 2; q=0.51 -> rank 3; q=0.25 -> rank 1
        assert!((s.quantile(0.5).unwrap().unwrap() - 2.0).abs() <= 0.002);
        assert!((s.quantile(0.51).unwrap().unwrap() - 3.0).abs() <= 0.003);
        assert_eq!(s.quantile(0.25).unwrap().unwrap(), 1.0);
        assert_eq!(s.quantile(0.76).unwrap().unwrap(), 4.0);
        assert_eq!(s.rank(0.5).unwrap(), Some(0.0));
        assert_eq!(s.rank(4.0).unwrap(), Some(1.0));
        assert_eq!(s.rank(2.5).unwrap(), Some(0.5));
    }

    #[test]
    fn negative_zero_and_zero() {
        let s = build(&[-0.0, -0.0], 0.01);
        assert!(s.min().unwrap().is_sign_positive());
        assert!(s.sum().unwrap().is_sign_positive());
        assert_eq!(s.encode(), build(&[0.0, 0.0], 0.01).encode());
        let s = build(&[-0.0, 1.0, -1.0], 0.01);
        assert_eq!(s.sum().unwrap(), 0.0);
        assert_eq!(s.quantile(0.5).unwrap(), Some(0.0));
    }

    #[test]
    fn exact_sum_cases() {
        let s = build(&[0.1; 10], 0.01);
        assert_eq!(s.sum().unwrap(), 1.0);
        let naive: f64 = [0.1; 10].iter().sum();
        assert_ne!(naive, 1.0); // the naive sum is not correctly rounded
        assert_eq!(s.mean().unwrap(), 0.1);
        let s = build(&[1e308, 1e308, -1e308], 0.01);
        assert_eq!(s.sum().unwrap(), 1e308);
        let s = build(&[f64::MAX, f64::MAX], 0.01);
        assert_eq!(s.sum().unwrap(), f64::INFINITY);
        assert_eq!(s.mean().unwrap(), f64::MAX);
        let s = build(&[-f64::MAX, -f64::MAX, -f64::MAX], 0.01);
        assert_eq!(s.sum().unwrap(), f64::NEG_INFINITY);
        assert_eq!(s.mean().unwrap(), -f64::MAX);
        let s = build(&[f64::MAX, -f64::MAX, TINY], 0.01);
        assert_eq!(s.sum().unwrap(), TINY);
        // 1 + 2^-53 + 2^-53: naive gives 1.0, exact is 1 + 2^-52
        let e = 2f64.powi(-53);
        assert_eq!(build(&[1.0, e, e], 0.01).sum().unwrap(), 1.0 + 2.0 * e);
        // ties to even: 2^53 + 1 rounds to 2^53
        assert_eq!(
            build(&[9007199254740992.0, 1.0], 0.01).sum().unwrap(),
            9007199254740992.0
        );
        assert_eq!(
            build(&[9007199254740992.0, 1.0, 1e-300], 0.01)
                .sum()
                .unwrap(),
            9007199254740994.0
        );
        // mean of subnormals: (TINY + 0) / 2 = half a unit -> ties to even -> 0
        assert_eq!(build(&[TINY, 0.0], 0.01).mean().unwrap(), 0.0);
        assert_eq!(build(&[TINY, TINY, TINY, 0.0], 0.01).mean().unwrap(), TINY);
        // many additions cross the lazy-carry threshold in add_n sized chunks
        let mut s = Sketch::new(0.01).unwrap();
        s.add_n(0.1, 1 << 40).unwrap();
        s.add_n(-0.1, (1 << 40) - 3).unwrap();
        assert_eq!(s.sum().unwrap(), 0.30000000000000004); // 3 * double(0.1)
    }

    #[test]
    fn lazy_carry_normalization() {
        let mut s = Sketch::new(0.01).unwrap();
        s.sum.pending = PENDING_LIMIT - 5;
        let mut w = vec![0u8; working_min_len() + 64 * 8];
        working_init(&mut w, 0.01).unwrap();
        wr_u32(&mut w, H_PENDING, PENDING_LIMIT - 5);
        // In the working buffer only non-integral values are limb additions (pending); the
        // integral ones go to the integer part, which the normalization at the limit folds in.
        let (frac, int) = (-(u32::MAX as f64) - 0.5, -(u32::MAX as f64));
        for _ in 0..20 {
            for x in [frac, int] {
                s.add(x).unwrap();
                add_now(&mut w, x);
            }
        }
        assert!(s.sum.pending < 40);
        // normalized at the 5th non-integral add (after 4 integral ones)
        assert_eq!(rd_u32(&w, H_PENDING), 15);
        assert_eq!(rd_i64(&w, H_INT), 16 * -(u32::MAX as i64));
        assert_eq!(s.sum().unwrap(), 20.0 * (frac + int));
        assert_eq!(working_to_sketch(&w).unwrap(), s);
    }

    #[test]
    fn errors_and_messages() {
        let mut s = Sketch::new(0.005).unwrap();
        let e = s.add(f64::NAN).unwrap_err();
        assert_eq!(
            e.to_string(),
            "value NaN is not allowed; ops_sketch accepts finite numbers"
        );
        assert_eq!(
            SketchError::InvalidValue(f64::NEG_INFINITY).to_string(),
            "value -Infinity is not allowed; ops_sketch accepts finite numbers"
        );
        assert!(matches!(
            s.add(f64::INFINITY),
            Err(SketchError::InvalidValue(_))
        ));
        assert!(matches!(
            s.add(f64::NEG_INFINITY),
            Err(SketchError::InvalidValue(_))
        ));
        assert_eq!(s.count(), 0);
        assert_eq!(
            Sketch::new(0.5).unwrap_err().to_string(),
            "alpha must be between 0.0001 and 0.1, got 0.5"
        );
        assert!(Sketch::new(f64::NAN).is_err());
        assert!(Sketch::new(0.00009).is_err());
        assert!(Sketch::new(1e-4).is_ok() && Sketch::new(0.1).is_ok());
        let a = build(&[1.0], 0.005);
        let b = build(&[1.0], 0.01);
        assert_eq!(
            Sketch::merged(&a, &b).unwrap_err().to_string(),
            "cannot merge sketches with different alpha (0.005 and 0.01)"
        );
        assert_eq!(
            a.quantile(1.5).unwrap_err().to_string(),
            "q must be between 0 and 1, got 1.5"
        );
        assert!(a.quantile(-0.1).is_err() && a.quantile(f64::NAN).is_err());
        let mut bytes = a.encode();
        bytes[0] = 7;
        assert_eq!(
            Sketch::decode(&bytes).unwrap_err(),
            SketchError::UnsupportedVersion(7)
        );
        assert!(SketchError::UnsupportedVersion(7).to_string().contains('7'));
        assert!(matches!(Sketch::decode(&[]), Err(SketchError::Corrupt(_))));
        let mut trailing = a.encode();
        trailing.push(0);
        assert!(matches!(
            Sketch::decode(&trailing),
            Err(SketchError::Corrupt(_))
        ));
        for bad in [
            "",
            "ddsk1:",
            "ddsk2:AAAA",
            "ddsk1:A",
            "ddsk1:!!!!",
            "ddsk1:AQ==",
            "xyz",
        ] {
            assert!(
                matches!(Sketch::from_text(bad), Err(SketchError::Parse(_))),
                "{bad}"
            );
        }
        assert_eq!(
            Sketch::from_text(&format!("  {}\n", a.to_text())).unwrap(),
            a
        );
        // working buffer errors
        let mut w = vec![0u8; working_min_len()];
        assert!(working_init(&mut w, 0.2).is_err());
        assert!(working_init(&mut w[..10], 0.01).is_err());
        working_init(&mut w, 0.01).unwrap();
        assert!(matches!(
            working_add(&mut w, f64::NAN),
            Err(AddError::Sketch(SketchError::InvalidValue(_)))
        ));
        // the value waits in the value buffer; counting it needs a window
        working_add(&mut w, 5.0).unwrap();
        assert_eq!(working_count(&w).unwrap(), 1);
        match working_flush(&mut w) {
            Err(AddError::NeedsGrow {
                min_len,
                suggested_len,
            }) => {
                // one counter, of the initial width (1 byte)
                assert_eq!(min_len, working_min_len() + INITIAL_WIDTH as usize);
                assert!(suggested_len > min_len);
                let mut small = vec![0u8; min_len - 1];
                assert!(matches!(
                    working_grow(&w, &mut small),
                    Err(SketchError::BufferTooSmall { .. })
                ));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            working_merge_sketch(&mut w, &a),
            Err(AddError::Sketch(SketchError::AlphaMismatch { .. }))
        ));
        assert!(working_to_sketch(&[0u8; 5]).is_err());
        let mut notw = w.clone();
        notw[0] = FORMAT_VERSION;
        assert!(working_to_sketch(&notw).is_err());
        assert!(working_add(&mut notw, 1.0).is_err());
        assert_ne!(WORKING_MAGIC, FORMAT_VERSION);
    }

    #[test]
    fn unaligned_working_buffer() {
        let mut backing = vec![0u8; working_min_len() + 8 * 500 + 3];
        let buf = &mut backing[3..];
        working_init(buf, 0.01).unwrap();
        let vals: Vec<f64> = (1..2000).map(|i| i as f64 * 0.37).collect();
        for &v in &vals {
            working_add(buf, v).unwrap();
        }
        assert_eq!(
            working_to_sketch(buf).unwrap().encode(),
            build(&vals, 0.01).encode()
        );
    }

    #[test]
    fn growth_is_amortized() {
        let mut rng = Rng(3);
        let mut buf = vec![0u8; working_min_len()];
        working_init(&mut buf, 0.005).unwrap();
        let mut grows = 0;
        let mut vals = Vec::new();
        for _ in 0..200_000 {
            let x = (4.0 + 2.0 * rng.normal()).exp();
            vals.push(x);
            loop {
                match working_add(&mut buf, x) {
                    Ok(()) => break,
                    Err(AddError::NeedsGrow { suggested_len, .. }) => {
                        let mut nb = vec![0u8; suggested_len];
                        working_grow(&buf, &mut nb).unwrap();
                        buf = nb;
                        grows += 1;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
        assert!(grows <= 12, "grew {grows} times");
        assert_eq!(
            working_to_sketch(&buf).unwrap().encode(),
            build(&vals, 0.005).encode()
        );
    }

    /// A gateway-day-like worst case: every bucket for 1..=600000 ms populated
    /// with random counts up to 50000 (alpha 0.005).
    #[test]
    fn size_every_bucket_populated() {
        let alpha = 0.005;
        let mut s = Sketch::new(alpha).unwrap();
        let lg = s.p.ln_gamma;
        let hi = index_of(600000.0, s.p.inv_ln_gamma);
        let mut rng = Rng(11);
        let mut total = 0;
        for i in 0..=hi {
            let x = ((i as f64 - 0.5) * lg).exp().clamp(1.0, 600000.0);
            assert_eq!(index_of(x, s.p.inv_ln_gamma), i);
            let c = 1 + rng.below(50000);
            // a fractional value to make the sum realistic
            s.add_n(x, c).unwrap();
            total += c;
        }
        s.add(1.0).unwrap();
        s.add(600000.0).unwrap();
        assert_eq!(s.num_buckets() as i32, hi + 1);
        let len = s.encode().len();
        eprintln!(
            "every-bucket size: {len} bytes for {} buckets, {} values",
            hi + 1,
            total + 2
        );
        assert!(len <= 4096, "{len}");
        // the worst-case counts (all >= 2^14) still fit
        let mut w = Sketch::new(alpha).unwrap();
        for i in 0..=hi {
            let x = ((i as f64 - 0.5) * lg).exp().clamp(1.0, 600000.0);
            w.add_n(x * 1.000001f64.min(600000.0 / x), 50000).unwrap();
        }
        let wl = w.encode().len();
        eprintln!("all-50000 size: {wl} bytes");
        assert!(wl <= 4096, "{wl}");
    }

    #[test]
    fn size_lognormal_day() {
        let mut rng = Rng(5);
        let mut buf = sketch_to_working(&Sketch::new(0.005).unwrap());
        let mut vals = Vec::with_capacity(1_000_000);
        for _ in 0..1_000_000 {
            let x = (6.65 + 2.2 * rng.normal()).exp().clamp(1.0, 600000.0);
            vals.push(x);
            if let Err(AddError::NeedsGrow { suggested_len, .. }) = working_add(&mut buf, x) {
                let mut nb = vec![0u8; suggested_len];
                working_grow(&buf, &mut nb).unwrap();
                buf = nb;
                working_add(&mut buf, x).unwrap();
            }
        }
        let s = working_to_sketch(&buf).unwrap();
        let len = s.encode().len();
        eprintln!(
            "lognormal 1M size: {len} bytes, {} buckets",
            s.num_buckets()
        );
        assert!(len <= 4096, "{len}");
        let sv = sorted(&vals);
        for q in QGRID {
            let (e, x) = (s.quantile(q).unwrap().unwrap(), oracle(&sv, q));
            assert!((e - x).abs() <= tol(0.005, x), "q={q} {e} vs {x}");
        }
    }

    /// The integer part is added at the bit of 2^0, exactly, for every i64.
    #[test]
    fn integer_part_is_placed_exactly() {
        let (m, p) = decompose(1.0);
        assert_eq!(m.trailing_zeros() + p, UNIT_BIT);
        let (k, parts) = sum_parts(1.0);
        let mut one = [0i64; LIMBS];
        add_int_to_limbs(&mut one, 1);
        assert_eq!(one[k..k + 3], parts);
        for v in [
            0,
            1,
            -1,
            3,
            600000,
            -600000,
            BIG_INT,
            -BIG_INT,
            1 << 53,
            (1 << 62) + 12345,
            i64::MAX,
            i64::MIN,
            i64::MIN + 1,
        ] {
            let mut l = [0i64; LIMBS];
            add_int_to_limbs(&mut l, v);
            normalize_limbs(&mut l);
            let (neg, mag) = sign_magnitude(&l);
            assert_eq!(neg, v < 0, "{v}");
            let mut w: u128 = 0;
            for j in 0..3 {
                w |= (mag[UNIT_LIMB + j] as u128) << (32 * j);
            }
            assert_eq!(w >> UNIT_SHIFT, v.unsigned_abs() as u128, "{v}");
            assert_eq!(w & ((1 << UNIT_SHIFT) - 1), 0);
            for (i, &d) in mag.iter().enumerate() {
                assert!(d == 0 || (UNIT_LIMB..UNIT_LIMB + 3).contains(&i), "{v}");
            }
            // the same as the float path wherever v is a float
            if v.unsigned_abs() <= 1 << 53 {
                let mut e = ExactSum::new();
                e.add(v as f64);
                assert_eq!(e.normalized(), l, "{v}");
            }
        }
    }

    /// Integral adds touch only the hot line of the header (and a bucket): the limbs and the
    /// pending counter stay untouched, the integer part holds the sum.
    #[test]
    fn integral_adds_stay_in_the_hot_line() {
        let mut w = vec![0u8; working_min_len() + 8 * 2000];
        working_init(&mut w, DEFAULT_ALPHA).unwrap();
        // (the value buffer, after the hot line, is where working_add writes)
        let cold = w[H_ALPHA..HEADER].to_vec();
        let vals: Vec<f64> = (0..5000)
            .map(|i| ((i * 7919) % 600000 + 1) as f64)
            .collect();
        for &x in &vals {
            working_add(&mut w, x).unwrap();
        }
        working_flush(&mut w).unwrap();
        assert_eq!(&w[H_ALPHA..HEADER], &cold[..]);
        assert_eq!(rd_u32(&w, H_PENDING), 0);
        assert_eq!(rd_i64(&w, H_INT), vals.iter().sum::<f64>() as i64);
        assert_eq!(
            working_to_sketch(&w).unwrap().encode(),
            build(&vals, DEFAULT_ALPHA).encode()
        );
        // a non-integral value goes to the limbs and is pending
        working_add(&mut w, 0.25).unwrap();
        working_flush(&mut w).unwrap();
        assert_eq!(rd_u32(&w, H_PENDING), 1);
        assert_ne!(&w[H_SUM..HEADER], &cold[H_SUM - H_ALPHA..]);
    }

    /// Runs of values near +-2^53 overflow the i64 integer part both ways; each overflow folds
    /// it into the limbs and the sum stays exact.
    #[test]
    fn integer_part_overflow_folds_exactly() {
        let mut w = vec![0u8; working_min_len()];
        working_init(&mut w, 0.01).unwrap();
        let mut s = Sketch::new(0.01).unwrap();
        let (mut model, mut folds, mut exact) = (0i64, 0, 0i128);
        for (n, v) in [
            (3000, BIG_INT),
            (7000, -BIG_INT),
            (2500, BIG_INT - 1),
            (10, -5),
        ] {
            for _ in 0..n {
                add_now(&mut w, v as f64);
                s.add(v as f64).unwrap();
                exact += v as i128;
                model = model.checked_add(v).unwrap_or_else(|| {
                    folds += 1;
                    v
                });
                assert_eq!(rd_i64(&w, H_INT), model);
            }
        }
        assert!(folds >= 6, "{folds}");
        let ws = working_to_sketch(&w).unwrap();
        assert_eq!(ws.sum().unwrap(), exact as f64);
        assert_eq!(ws.encode(), s.encode());
        // and mixed with limb additions, then merged and round-tripped
        add_growing(&mut w, 0.5);
        s.add(0.5).unwrap();
        let mut m = sketch_to_working(&working_to_sketch(&w).unwrap());
        working_merge_all(&mut m, &s);
        let twice = Sketch::merged(&s, &s).unwrap();
        assert_eq!(working_to_sketch(&m).unwrap().encode(), twice.encode());
        assert_eq!(
            working_to_sketch(&m).unwrap().sum().unwrap().to_bits(),
            twice.sum().unwrap().to_bits()
        );
    }

    /// Values wait in the value buffer until BUF_CAP of them are there; until then every reader
    /// counts them, and the counters are untouched.
    #[test]
    fn buffered_values_are_read_before_they_are_counted() {
        let mut w = vec![0u8; working_min_len() + 600];
        working_init(&mut w, DEFAULT_ALPHA).unwrap();
        let vals = [3.5, -2.0, 0.0, 1e6, 17.0];
        for &x in &vals {
            working_add(&mut w, x).unwrap();
        }
        assert_eq!(w[H_NBUF] as usize, vals.len());
        assert_eq!(rd_u64(&w, H_COUNT), 0);
        assert_eq!(working_count(&w).unwrap(), vals.len() as u64);
        assert_eq!(
            working_to_sketch(&w).unwrap().encode(),
            build(&vals, DEFAULT_ALPHA).encode()
        );
        // merging into it leaves them waiting, and they are still counted once
        let other = build(&[4.0, 4.0], DEFAULT_ALPHA);
        let mut v = w.to_vec();
        working_merge_all(&mut v, &other);
        assert_eq!(v[H_NBUF] as usize, vals.len());
        let mut all = vals.to_vec();
        all.extend([4.0, 4.0]);
        assert_eq!(
            working_to_sketch(&v).unwrap().encode(),
            build(&all, DEFAULT_ALPHA).encode()
        );
        // the BUF_CAP + 1st add counts the first BUF_CAP
        let mut u = vec![0u8; working_min_len() + 600];
        working_init(&mut u, DEFAULT_ALPHA).unwrap();
        let many: Vec<f64> = (1..=BUF_CAP as u32 + 1).map(|i| i as f64 * 1.25).collect();
        for &x in &many {
            add_growing(&mut u, x);
        }
        assert_eq!(u[H_NBUF], 1);
        assert_eq!(rd_u64(&u, H_COUNT), BUF_CAP as u64);
        assert_eq!(
            working_to_sketch(&u).unwrap().encode(),
            build(&many, DEFAULT_ALPHA).encode()
        );
    }

    /// Counters start one byte wide and widen (the whole window) before any would pass its
    /// width's limit, by adds and by merges; every step equals the owned sketch.
    #[test]
    fn counters_widen_before_they_overflow() {
        let mut w = vec![0u8; working_min_len()];
        working_init(&mut w, 0.01).unwrap();
        assert_eq!(w[H_WIDTH], INITIAL_WIDTH);
        let mut s = Sketch::new(0.01).unwrap();
        let mut seen = vec![w[H_WIDTH]];
        for i in 0..200_000u64 {
            let x = if i % 3 == 0 {
                250.0
            } else {
                12.5 + (i % 7) as f64
            };
            add_growing(&mut w, x);
            s.add(x).unwrap();
            if *seen.last().unwrap() != w[H_WIDTH] {
                seen.push(w[H_WIDTH]);
            }
        }
        flush_growing(&mut w);
        assert_eq!(seen, vec![1, 2, 4]);
        assert_eq!(working_to_sketch(&w).unwrap().encode(), s.encode());
        // a merge whose counts need 8 bytes widens first
        let mut big = Sketch::new(0.01).unwrap();
        big.add_n(12.5, 1 << 40).unwrap();
        big.add_n(-3.0, 5).unwrap();
        working_merge_all(&mut w, &big);
        assert_eq!(w[H_WIDTH], 8);
        s.merge(&big).unwrap();
        assert_eq!(working_to_sketch(&w).unwrap().encode(), s.encode());
        // a fresh state merging a sketch picks the narrowest width that holds its counts
        let mut f = vec![0u8; working_min_len()];
        working_init(&mut f, 0.01).unwrap();
        let mut mid = Sketch::new(0.01).unwrap();
        mid.add_n(7.0, 300).unwrap();
        working_merge_all(&mut f, &mid);
        assert_eq!(f[H_WIDTH], 2);
        assert_eq!(working_to_sketch(&f).unwrap().encode(), mid.encode());
        assert_eq!(width_for(cnt_limit(1)), 1);
        assert_eq!(width_for(cnt_limit(1) + 1), 2);
        assert_eq!(width_for(cnt_limit(4) + 1), 8);
    }

    /// A layout-2 working buffer (0.7.0: no value buffer, 8-byte counters) is still read.
    #[test]
    fn layout_2_working_buffer_is_read() {
        let vals: Vec<f64> = (1..500)
            .map(|i| (i * 37 % 1000) as f64 * 0.75 - 40.0)
            .collect();
        let want = build(&vals, 0.01);
        let mut w = vec![0u8; working_min_len()];
        working_init(&mut w, 0.01).unwrap();
        for &x in &vals {
            add_growing(&mut w, x);
        }
        // widen to 8 bytes and count everything, as layout 2 kept it
        clear_requests(&mut w);
        w[H_WIDEN] = 8;
        let mut nb = vec![0u8; w.len() * 8 + 64];
        working_grow(&w, &mut nb).unwrap();
        let mut w = nb;
        flush_growing(&mut w);
        assert_eq!((w[H_WIDTH], w[H_NBUF]), (8, 0));
        let mut l2 = w[..4].to_vec();
        l2[H_LAYOUT] = LEGACY_LAYOUT;
        l2[H_NBUF] = 0;
        l2[H_WIDTH] = 0;
        l2.extend_from_slice(&w[H_POS_OFF..H_HOT_END]);
        l2.extend_from_slice(&w[H_ALPHA..H_ALPHA + 32]);
        l2.extend_from_slice(&w[H_SUM..]);
        assert_eq!(working_to_sketch(&l2).unwrap().encode(), want.encode());
        assert_eq!(working_alpha(&l2).unwrap(), 0.01);
        // not updated in place: the in-place operations reject it
        assert!(!is_current_working(&l2));
        assert!(working_add(&mut l2, 1.0).is_err());
    }

    /// A layout-1 working buffer (magic 0xD5) is rejected, not misread.
    #[test]
    fn old_working_layout_is_rejected() {
        let mut w = vec![0u8; working_min_len() + 64];
        working_init(&mut w, 0.01).unwrap();
        working_add(&mut w, 5.0).unwrap();
        let mut old = w.clone();
        old[H_MAGIC] = 0xD5;
        assert!(working_to_sketch(&old).is_err());
        assert!(working_add(&mut old, 1.0).is_err());
        assert!(matches!(
            Sketch::decode(&old),
            Err(SketchError::UnsupportedVersion(0xD5))
        ));
        let mut layout1 = w.clone();
        layout1[H_LAYOUT] = 1;
        assert!(working_to_sketch(&layout1).is_err());
        assert!(working_used_len(&layout1).is_err());
    }

    #[test]
    fn varint_base64_primitives() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut r = Reader { b: &b, p: 0 };
            assert_eq!(r.varint().unwrap(), v);
            assert_eq!(r.p, b.len());
        }
        assert!(Reader {
            b: &[0x80, 0x00],
            p: 0
        }
        .varint()
        .is_err());
        assert!(Reader {
            b: &[0xff; 10],
            p: 0
        }
        .varint()
        .is_err());
        for v in [0i64, 1, -1, i32::MAX as i64, i32::MIN as i64] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        for data in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar"] {
            let mut s = String::new();
            b64_encode_into(data, &mut s);
            if !data.is_empty() {
                assert_eq!(b64_decode(&s).unwrap(), data);
            }
        }
        let mut s = String::new();
        b64_encode_into(b"foobar", &mut s);
        assert_eq!(s, "Zm9vYmFy");
        assert!(b64_decode("Zm9=YmFy").is_err());
        assert!(b64_decode("Zg=").is_err());
        assert!(b64_decode("Zh==").is_err()); // non-zero pad bits
    }

    /// Timing report (not an assertion): `cargo test --release -- --ignored --nocapture bench`.
    #[test]
    #[ignore]
    fn bench_report() {
        use std::hint::black_box;
        use std::time::Instant;
        let n = 10_000_000;
        let mut rng = Rng(42);
        let vals: Vec<f64> = (0..n).map(|_| (4.0 + 1.5 * rng.normal()).exp()).collect();
        let mut buf = vec![0u8; working_min_len() + 8 * 4000];
        working_init(&mut buf, 0.005).unwrap();
        for &x in &vals[..1000] {
            working_add(&mut buf, x).unwrap();
        }
        working_init(&mut buf, 0.005).unwrap();
        let t = Instant::now();
        for &x in &vals {
            if let Err(AddError::NeedsGrow { suggested_len, .. }) =
                working_add(black_box(&mut buf), x)
            {
                let mut nb = vec![0u8; suggested_len];
                working_grow(&buf, &mut nb).unwrap();
                buf = nb;
                working_add(&mut buf, x).unwrap();
            }
        }
        let wt = t.elapsed().as_secs_f64() * 1e9 / n as f64;
        let mut s = Sketch::new(0.005).unwrap();
        let t = Instant::now();
        for &x in &vals {
            black_box(&mut s).add(x).unwrap();
        }
        let st = t.elapsed().as_secs_f64() * 1e9 / n as f64;
        assert_eq!(working_to_sketch(&buf).unwrap(), s);
        let t = Instant::now();
        let mut acc = 0.0;
        for &x in &vals {
            acc += black_box(x).ln();
        }
        let lt = t.elapsed().as_secs_f64() * 1e9 / n as f64;
        black_box(acc);
        eprintln!(
            "working_add: {wt:.2} ns/value; Sketch::add: {st:.2} ns/value; ln alone: {lt:.2} ns"
        );
        let t = Instant::now();
        let e = s.encode();
        let et = t.elapsed();
        let t = Instant::now();
        let d = Sketch::decode(&e).unwrap();
        let dt = t.elapsed();
        assert_eq!(d, s);
        eprintln!(
            "encode {} bytes in {et:?}, decode in {dt:?}, {} buckets",
            e.len(),
            s.num_buckets()
        );
        // gateway day sizes
        for m in [1_000_000usize, 5_000_000] {
            let mut g = Sketch::new(0.005).unwrap();
            for _ in 0..m {
                g.add((6.65 + 2.2 * rng.normal()).exp().clamp(1.0, 600000.0))
                    .unwrap();
            }
            eprintln!(
                "lognormal(6.65, 2.2) clamped to [1, 600000], {m} values: {} bytes",
                g.encode().len()
            );
            let mut g = Sketch::new(0.005).unwrap();
            for _ in 0..m {
                g.add((4.5 + 1.2 * rng.normal()).exp().clamp(1.0, 600000.0))
                    .unwrap();
            }
            eprintln!(
                "lognormal(4.5, 1.2) clamped to [1, 600000], {m} values: {} bytes",
                g.encode().len()
            );
        }
    }

    /// Hash-aggregation-like timing (not an assertion): 1152 live working buffers (two sets of
    /// 576, e.g. 24 hours x 24 groups per column), 3.5 M log-normal integer latencies in
    /// 1..=600000 ms, 75% to random buffers of the first set and 25% to random buffers of the
    /// second, each buffer its own heap allocation started like the SQL glue's (512 slots) with
    /// the payload 4 bytes in (as behind a varlena header). Reports ns per add for a first pass
    /// (including growth) and for three more passes over the grown buffers, then checks every
    /// buffer against the owned path. A second configuration with 16 times the buffers (whose
    /// headers no longer fit this machine's L2) shows the cost when the header lines are cold.
    /// `cargo test --release --lib bench_hashagg -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn bench_hashagg_report() {
        for set in [576, 16 * 576] {
            hashagg_run(set);
        }
    }

    fn hashagg_run(set: usize) {
        use std::hint::black_box;
        use std::time::Instant;
        const N: usize = 3_500_000;
        const PASSES: usize = 4;
        const VARHDR: usize = 4;
        let buffers = 2 * set;
        let mut rng = Rng(2024);
        let gen = |rng: &mut Rng| -> (u32, f64) {
            let second = rng.below(4) == 0;
            let (mu, sigma, base) = if second {
                (4.5, 1.2, set)
            } else {
                (6.65, 2.2, 0)
            };
            let x = (mu + sigma * rng.normal())
                .exp()
                .round()
                .clamp(1.0, 600000.0);
            ((base + rng.below(set as u64) as usize) as u32, x)
        };
        let passes: Vec<Vec<(u32, f64)>> = (0..PASSES)
            .map(|_| (0..N).map(|_| gen(&mut rng)).collect())
            .collect();
        let mut bufs: Vec<Vec<u8>> = (0..buffers)
            .map(|_| {
                let mut b = vec![0u8; VARHDR + working_min_len() + 8 * 512];
                working_init(&mut b[VARHDR..], DEFAULT_ALPHA).unwrap();
                b
            })
            .collect();
        let mut times = Vec::new();
        for pass in &passes {
            let t = Instant::now();
            for &(i, x) in pass {
                let buf = &mut bufs[i as usize];
                if let Err(AddError::NeedsGrow { suggested_len, .. }) =
                    working_add(black_box(&mut buf[VARHDR..]), x)
                {
                    let mut nb = vec![0u8; VARHDR + suggested_len];
                    working_grow(&buf[VARHDR..], &mut nb[VARHDR..]).unwrap();
                    *buf = nb;
                    working_add(&mut buf[VARHDR..], x).unwrap();
                }
            }
            times.push(t.elapsed().as_secs_f64() * 1e9 / N as f64);
        }
        let kb = bufs.iter().map(Vec::len).sum::<usize>() as f64 / 1024.0;
        let steady: Vec<String> = times[1..].iter().map(|t| format!("{t:.2}")).collect();
        eprintln!(
            "hashagg: {buffers} buffers ({kb:.0} KiB), {N} integer values per pass: working_add \
             {:.2} ns/value (first pass, with growth), {} ns/value (next passes)",
            times[0],
            steady.join(" / ")
        );
        let mut owned: Vec<Sketch> = (0..buffers)
            .map(|_| Sketch::new(DEFAULT_ALPHA).unwrap())
            .collect();
        for &(i, x) in passes.iter().flatten() {
            owned[i as usize].add(x).unwrap();
        }
        for (b, s) in bufs.iter().zip(&owned) {
            assert_eq!(
                working_to_sketch(&b[VARHDR..]).unwrap().encode(),
                s.encode()
            );
        }
    }
}

/// The 0.12.1 store codec and working-buffer scan, kept as oracles for the branch-free ones
/// (the stored encoding must not change by a byte).
#[cfg(test)]
mod codec_reference_tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn encode_store_reference(out: &mut Vec<u8>, st: &Store) {
        let bins = &st.bins;
        let mut runs: Vec<(usize, usize)> = Vec::new();
        let mut start = 0;
        for i in 1..=bins.len() {
            if i == bins.len() || (bins[i].0 as i64 - bins[i - 1].0 as i64 - 1) > MAX_INLINE_GAP {
                if i > start {
                    runs.push((start, i));
                }
                start = i;
            }
        }
        put_varint(out, runs.len() as u64);
        let mut prev_last: i64 = 0;
        for (r, &(a, b)) in runs.iter().enumerate() {
            let first = bins[a].0 as i64;
            let last = bins[b - 1].0 as i64;
            if r == 0 {
                put_varint(out, zigzag(first));
            } else {
                put_varint(out, (first - prev_last - 1) as u64);
            }
            put_varint(out, (last - first + 1) as u64);
            let mut expect = first;
            for &(i, c) in &bins[a..b] {
                while expect < i as i64 {
                    out.push(0);
                    expect += 1;
                }
                put_varint(out, c);
                expect += 1;
            }
            prev_last = last;
        }
    }

    fn varint_reference(r: &mut Reader) -> Result<u64, SketchError> {
        let mut v = 0u64;
        for i in 0..10 {
            let byte = r.u8()?;
            if i == 9 && byte > 1 {
                return corrupt("varint overflow");
            }
            v |= ((byte & 0x7f) as u64) << (7 * i);
            if byte & 0x80 == 0 {
                if i > 0 && byte == 0 {
                    return corrupt("non-minimal varint");
                }
                return Ok(v);
            }
        }
        corrupt("varint too long")
    }

    fn decode_store_reference(r: &mut Reader, p: &Params) -> Result<Store, SketchError> {
        let nruns = varint_reference(r)?;
        if nruns > (r.remaining() / 3) as u64 {
            return corrupt("too many runs");
        }
        let (kmin, kmax) = (p.kmin as i64, p.kmax as i64);
        let mut bins = Vec::new();
        let mut prev_last: i64 = 0;
        for run in 0..nruns {
            let start = if run == 0 {
                unzigzag(varint_reference(r)?)
            } else {
                let gap = varint_reference(r)?;
                if gap < (MAX_INLINE_GAP + 1) as u64 || gap > (kmax - prev_last).max(0) as u64 {
                    return corrupt("bad run gap");
                }
                prev_last + 1 + gap as i64
            };
            if start < kmin || start > kmax {
                return corrupt(format!("bucket index {start} out of range"));
            }
            let len = varint_reference(r)?;
            if len == 0 || len > r.remaining() as u64 {
                return corrupt("bad run length");
            }
            let last = start + len as i64 - 1;
            if last > kmax {
                return corrupt("run exceeds index range");
            }
            let mut zeros = 0;
            for j in 0..len as i64 {
                let c = varint_reference(r)?;
                if c == 0 {
                    zeros += 1;
                    if j == 0 || j == len as i64 - 1 || zeros > MAX_INLINE_GAP {
                        return corrupt("non-canonical empty buckets in run");
                    }
                } else {
                    zeros = 0;
                    bins.push(((start + j) as i32, c));
                }
            }
            prev_last = last;
        }
        Ok(Store { bins })
    }

    /// Sparse stores as sketches make them: increasing indices with gaps of every size around
    /// the inline limit, counts of one to ten varint bytes.
    fn store() -> impl Strategy<Value = Store> {
        (
            -3000i32..3000,
            vec(
                (
                    prop_oneof![4 => 1i32..4, 2 => 4i32..8, 1 => 8i32..400],
                    prop_oneof![
                        6 => 1u64..128,
                        2 => 128u64..70_000,
                        1 => any::<u64>().prop_map(|c| c.max(1)),
                    ],
                ),
                0..300,
            ),
        )
            .prop_map(|(mut idx, steps)| {
                let mut bins = Vec::with_capacity(steps.len());
                for (gap, c) in steps {
                    bins.push((idx, c));
                    idx += gap;
                }
                Store { bins }
            })
    }

    fn params() -> Params {
        Params::new(DEFAULT_ALPHA).unwrap()
    }

    fn decode_both(bytes: &[u8]) -> (Result<Store, SketchError>, Result<Store, SketchError>) {
        let p = params();
        let mut a = Reader { b: bytes, p: 0 };
        let mut b = Reader { b: bytes, p: 0 };
        let new = decode_store(&mut a, &p).map(|s| (s, a.p));
        let old = decode_store_reference(&mut b, &p).map(|s| (s, b.p));
        match (new, old) {
            (Ok((s, pa)), Ok((t, pb))) => {
                assert_eq!(pa, pb, "both read the same bytes");
                (Ok(s), Ok(t))
            }
            (x, y) => (x.map(|v| v.0), y.map(|v| v.0)),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// The store codec writes the same bytes as 0.12.1's and reads them back.
        #[test]
        fn prop_encode_store_equals_reference(st in store()) {
            let (mut new, mut old) = (vec![7u8], vec![7u8]);
            encode_store(&mut new, &st);
            encode_store_reference(&mut old, &st);
            prop_assert_eq!(&new, &old);
            let (a, b) = decode_both(&new[1..]);
            prop_assert_eq!(a.as_ref().ok(), Some(&st));
            prop_assert_eq!(b.as_ref().ok(), Some(&st));
        }

        /// On any bytes (encodings with bytes changed, cut, or random), the decoder accepts
        /// exactly what 0.12.1's accepted, with the same result.
        #[test]
        fn prop_decode_store_equals_reference(st in store(),
                                              muts in vec((any::<u16>(), any::<u8>()), 0..4),
                                              cut in any::<u16>(),
                                              random in vec(any::<u8>(), 0..64),
                                              runs in vec((0u64..12, vec(prop_oneof![2 => Just(0u64), 3 => 1u64..300], 0..12)), 0..4)) {
            // runs written as the format spells them, with empty buckets anywhere: canonical
            // or not
            let mut raw = Vec::new();
            put_varint(&mut raw, runs.len() as u64);
            for (gap, counts) in &runs {
                put_varint(&mut raw, *gap);
                put_varint(&mut raw, counts.len() as u64);
                for &c in counts {
                    put_varint(&mut raw, c);
                }
            }
            let mut bytes = Vec::new();
            encode_store(&mut bytes, &st);
            for (at, v) in muts {
                if !bytes.is_empty() {
                    let i = at as usize % bytes.len();
                    bytes[i] = v;
                }
            }
            for b in [bytes.clone(), bytes[..cut as usize % (bytes.len() + 1)].to_vec(), random, raw] {
                let (new, old) = decode_both(&b);
                prop_assert_eq!(new.is_ok(), old.is_ok(), "accepted by one only: {:?}", b);
                prop_assert_eq!(new.ok(), old.ok());
            }
        }

        /// The branch-free scan of a working window finds the non-zero counters a plain loop
        /// finds, at every counter width.
        #[test]
        fn prop_nonzero_bins_equal_a_loop(cells in vec(prop_oneof![3 => Just(0u8), 2 => any::<u8>()], 0..600),
                                          first in -5000i64..5000, most in prop_oneof![Just(0u64), 0u64..700, Just(u64::MAX)]) {
            fn check<const W: usize>(cells: &[u8], first: i64, most: u64) -> Result<(), TestCaseError> {
                let cells = &cells[..cells.len() / W * W];
                let expect: Vec<(i32, u64)> = (0..cells.len() / W)
                    .map(|j| ((first + j as i64) as i32, rd_cnt_w::<W>(cells, W * j)))
                    .filter(|&(_, c)| c != 0)
                    .collect();
                prop_assert_eq!(nonzero_bins::<W>(cells, first, most), expect);
                Ok(())
            }
            check::<1>(&cells, first, most)?;
            check::<2>(&cells, first, most)?;
            check::<4>(&cells, first, most)?;
            check::<8>(&cells, first, most)?;
        }
    }
}

/// `working_merge_working` against the route it replaces (the source state read into a sketch
/// by `working_to_sketch`, the extra values added to that sketch, then `working_merge_sketch`):
/// the same merged values, the same errors, and nothing changed by a failed merge.
#[cfg(test)]
mod working_merge_tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn grow_to(buf: &mut Vec<u8>, len: usize) {
        let mut nb = vec![0xA5u8; len];
        working_grow(buf, &mut nb).unwrap();
        *buf = nb;
    }

    /// A working state of `values` (some left in its value buffer), starting from `cap` bytes
    /// of window capacity, widened to `width` bytes per counter when that is wider.
    fn state(values: &[f64], cap: usize, alpha: f64) -> Vec<u8> {
        let mut w = vec![0u8; working_min_len() + cap];
        working_init(&mut w, alpha).unwrap();
        for &x in values {
            loop {
                match working_add(&mut w, x) {
                    Ok(()) => break,
                    Err(AddError::NeedsGrow { suggested_len, .. }) => {
                        grow_to(&mut w, suggested_len)
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
        w
    }

    fn merge_growing(
        buf: &mut Vec<u8>,
        mut op: impl FnMut(&mut [u8]) -> Result<(), AddError>,
    ) -> Result<(), SketchError> {
        loop {
            match op(buf) {
                Ok(()) => return Ok(()),
                Err(AddError::NeedsGrow { min_len, .. }) => {
                    assert!(min_len > buf.len());
                    grow_to(buf, min_len);
                }
                Err(AddError::Sketch(e)) => return Err(e),
            }
        }
    }

    /// The old route: src read into a sketch (checked), `extra` added to it, merged.
    fn by_sketch(dst: &mut Vec<u8>, src: &[u8], extra: &[f64]) -> Result<(), SketchError> {
        let mut s = working_to_sketch(src)?;
        for &x in extra {
            s.add(x)?;
        }
        merge_growing(dst, |b| working_merge_sketch(b, &s))
    }

    fn direct(dst: &mut Vec<u8>, src: &[u8], extra: &[f64]) -> Result<(), SketchError> {
        merge_growing(dst, |b| working_merge_working(b, src, extra))
    }

    fn read(buf: &[u8]) -> Vec<u8> {
        working_to_sketch(buf).unwrap().encode()
    }

    fn value() -> BoxedStrategy<f64> {
        prop_oneof![
            4 => (1u32..40_000).prop_map(|v| v as f64),
            3 => 1e-3f64..1e6,
            1 => -1e4f64..1e4,
            1 => Just(0.0),
            1 => Just(-0.0),
            1 => prop::num::f64::NORMAL,
        ]
        .boxed()
    }

    /// Values that pile up in few buckets, so that merged counters pass a width's limit.
    fn heavy() -> BoxedStrategy<Vec<f64>> {
        (
            1usize..3000,
            prop::sample::select(vec![7.0f64, 250.0, 251.5]),
        )
            .prop_map(|(n, x)| vec![x; n])
            .boxed()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn equals_the_merge_through_a_sketch(
            a in prop_oneof![vec(value(), 0..300), heavy()],
            b in prop_oneof![vec(value(), 0..300), heavy()],
            extra in vec(value(), 0..=BUF_CAP),
            cap_a in prop::sample::select(vec![0usize, 16, 256, 4096]),
            cap_b in prop::sample::select(vec![0usize, 16, 256, 4096]),
        ) {
            let src = state(&b, cap_b, DEFAULT_ALPHA);
            let mut old = state(&a, cap_a, DEFAULT_ALPHA);
            let mut new = old.clone();
            by_sketch(&mut old, &src, &extra).unwrap();
            direct(&mut new, &src, &extra).unwrap();
            prop_assert_eq!(read(&new), read(&old));
            let all: Vec<f64> = a.iter().chain(&b).chain(&extra).copied().collect();
            let mut s = Sketch::new(DEFAULT_ALPHA).unwrap();
            for &x in &all {
                s.add(x).unwrap();
            }
            prop_assert_eq!(read(&new), s.encode());
            // the merged state goes on taking values as any other
            let mut more = new.clone();
            for &x in &extra {
                merge_growing(&mut more, |w| working_add(w, x)).unwrap();
            }
            for &x in &extra {
                s.add(x).unwrap();
            }
            prop_assert_eq!(read(&more), s.encode());
        }

        /// A source with any byte changed: the direct merge fails exactly when the old route
        /// does (leaving the target as it was), and otherwise gives the same values.
        #[test]
        fn a_corrupt_source_fails_as_the_old_route_fails(
            a in vec(value(), 0..100),
            b in vec(value(), 1..300),
            extra in vec(value(), 0..4),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cap_b in prop::sample::select(vec![0usize, 64]),
        ) {
            let mut src = state(&b, cap_b, DEFAULT_ALPHA);
            let i = at.index(src.len());
            src[i] = byte;
            let mut old = state(&a, 64, DEFAULT_ALPHA);
            let mut new = old.clone();
            let before = new.clone();
            let o = by_sketch(&mut old, &src, &extra);
            let n = direct(&mut new, &src, &extra);
            prop_assert_eq!(o.is_ok(), n.is_ok(), "byte {} = {}: old {:?}, new {:?}", i, byte, o, n);
            if n.is_ok() {
                prop_assert_eq!(read(&new), read(&old));
            } else {
                prop_assert_eq!(&new, &before);
            }
        }
    }

    #[test]
    fn the_first_and_last_non_zero_bytes() {
        for len in 0..40usize {
            for a in 0..len {
                for b in a..len {
                    let mut v = vec![0u8; len];
                    v[a] = 1 + (a as u8 % 7);
                    v[b] = 3;
                    assert_eq!(first_nonzero_byte(&v), Some(a), "{len} {a} {b}");
                    assert_eq!(last_nonzero_byte(&v), Some(b), "{len} {a} {b}");
                }
            }
            assert_eq!(first_nonzero_byte(&vec![0u8; len]), None);
            assert_eq!(last_nonzero_byte(&vec![0u8; len]), None);
        }
    }

    #[test]
    fn alphas_must_match() {
        let src = state(&[1.0, 2.0], 64, 0.01);
        let mut dst = state(&[3.0], 64, DEFAULT_ALPHA);
        let before = dst.clone();
        assert!(matches!(
            direct(&mut dst, &src, &[]),
            Err(SketchError::AlphaMismatch { .. })
        ));
        // an empty source of another alpha is refused too, as the old route refuses it
        let empty = state(&[], 0, 0.01);
        assert!(matches!(
            direct(&mut dst, &empty, &[]),
            Err(SketchError::AlphaMismatch { .. })
        ));
        assert_eq!(dst, before);
    }

    #[test]
    fn extra_values_are_checked() {
        let src = state(&[1.0], 64, DEFAULT_ALPHA);
        let mut dst = state(&[3.0], 64, DEFAULT_ALPHA);
        let before = dst.clone();
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(matches!(
                direct(&mut dst, &src, &[2.0, bad]),
                Err(SketchError::InvalidValue(_))
            ));
        }
        assert!(direct(&mut dst, &src, &[1.0; BUF_CAP + 1]).is_err());
        assert_eq!(dst, before);
    }

    /// Counters near the one-byte limit in both states, and values on the same bucket: the
    /// merge widens rather than wraps.
    #[test]
    fn merged_counters_widen_instead_of_wrapping() {
        let a = vec![100.0; 230];
        let b = vec![100.0; 230];
        let extra = [100.0; BUF_CAP];
        let src = state(&b, 64, DEFAULT_ALPHA);
        let mut dst = state(&a, 64, DEFAULT_ALPHA);
        assert_eq!(dst[H_WIDTH], 1);
        direct(&mut dst, &src, &extra).unwrap();
        assert!(dst[H_WIDTH] >= 2);
        let s = working_to_sketch(&dst).unwrap();
        assert_eq!(s.count(), 230 + 230 + BUF_CAP as u64);
        assert_eq!(s.num_buckets(), 1);
        // a one-byte counter at 224 (the most 16-value batches leave it at), a source whose
        // 15 values are all still buffered, and 16 more: the sum of the two counters is within
        // the limit, the values take it past, and the next values would wrap a byte
        let mut dst = state(&[100.0; 224], 0, DEFAULT_ALPHA);
        merge_growing(&mut dst, working_flush).unwrap();
        assert_eq!((dst[H_WIDTH], dst[H_NBUF]), (1, 0));
        let src = state(&[100.0; 15], 0, DEFAULT_ALPHA);
        assert_eq!(src[H_NBUF], 15);
        direct(&mut dst, &src, &extra).unwrap();
        assert!(dst[H_WIDTH] >= 2);
        for _ in 0..48 {
            merge_growing(&mut dst, |w| working_add(w, 100.0)).unwrap();
        }
        let s = working_to_sketch(&dst).unwrap();
        assert_eq!(s.count(), 224 + 15 + BUF_CAP as u64 + 48);
        assert_eq!(s.num_buckets(), 1);
    }
}

//! Billing from cumulative counters (SPEC §6) as plain Rust: checking exporters' snapshots,
//! the counter diff against checkpoints (replays, resets, first samples), minute buckets and
//! deterministic ledger ids, monthly included quota, and pricing.
//!
//! The pgrx glue (`src/billing.rs`) reads the state a call needs (checkpoints, quota rows,
//! profiles), calls [`plan_deltas`] and [`allocate`], and writes what they return in a few
//! set-based statements. Money never passes through here as a float: the core decides how
//! many bytes are included and billable, and PostgreSQL multiplies the billable bytes by the
//! `numeric` price and multiplier (exact).
//!
//! Timestamps are PostgreSQL `timestamptz` values (microseconds since 2000-01-01 UTC).

use crate::cores::records::{
    civil_from_days, days_from_civil, kind, parse_rfc3339, shown, UNIX_TO_PG_EPOCH_DAYS,
};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use thiserror::Error;

const USECS_PER_MINUTE: i64 = 60_000_000;
const USECS_PER_DAY: i64 = 86_400_000_000;
/// At most this many messages are listed in a result's `errors`; the rest are counted.
pub const MAX_LISTED_ERRORS: usize = 100;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum BillingError {
    #[error("{at} must be a JSON {expected}, not {got}")]
    Shape {
        at: String,
        expected: &'static str,
        got: &'static str,
    },
    #[error("{at} is missing")]
    Missing { at: String },
    #[error("{at} must be {expected}, not {got}")]
    WrongType {
        at: String,
        expected: &'static str,
        got: String,
    },
    #[error("{at} is not an integer: {value}")]
    NotInteger { at: String, value: String },
    #[error("{at} must be >= 0, got {value}")]
    Negative { at: String, value: String },
    #[error("{at} is out of range: {value} (accepted: 0 .. 9223372036854775807)")]
    OutOfRange { at: String, value: String },
    #[error("{at} is not an RFC 3339 timestamp: {value} ({why})")]
    BadTime {
        at: String,
        value: String,
        why: &'static str,
    },
    #[error("the bytes of {what} exceed bigint (9223372036854775807)")]
    Overflow { what: String },
    #[error("snapshots is not valid JSON: {0}")]
    BadJson(String),
    #[error("{name} must be {expected}, got \"{got}\"")]
    Setting {
        name: &'static str,
        expected: &'static str,
        got: String,
    },
    #[error("{arg} must be {expected}, got {got}")]
    Argument {
        arg: &'static str,
        expected: &'static str,
        got: String,
    },
}

/// How PostgreSQL should see a [`BillingError`] (kept here so the rule is tested with the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    InvalidParameter,
    TextRepresentation,
    DatetimeFormat,
    OutOfRange,
}

impl BillingError {
    pub fn class(&self) -> Class {
        match self {
            BillingError::NotInteger { .. } | BillingError::BadJson(_) => Class::TextRepresentation,
            BillingError::BadTime { .. } => Class::DatetimeFormat,
            BillingError::OutOfRange { .. } | BillingError::Overflow { .. } => Class::OutOfRange,
            _ => Class::InvalidParameter,
        }
    }

    /// `source_id` names no source registered with `billing_source_upsert`.
    pub fn unknown_source(source_id: &str) -> BillingError {
        BillingError::Argument {
            arg: "source_id",
            expected: "a source registered with billing_source_upsert",
            got: format!("\"{source_id}\" (unknown)"),
        }
    }

    /// Where in the input the error is (`snapshots[2].samples[0].cumulative_bytes`, `page.since`).
    pub fn at(&self) -> Option<&str> {
        match self {
            BillingError::Shape { at, .. }
            | BillingError::Missing { at }
            | BillingError::WrongType { at, .. }
            | BillingError::NotInteger { at, .. }
            | BillingError::Negative { at, .. }
            | BillingError::OutOfRange { at, .. }
            | BillingError::BadTime { at, .. } => Some(at),
            _ => None,
        }
    }

    pub fn hint(&self) -> Option<String> {
        let in_page = self
            .at()
            .is_some_and(|at| at.starts_with("page") && !at.starts_with("page.snapshots"));
        match self {
            BillingError::Setting { .. }
            | BillingError::Argument { .. }
            | BillingError::Overflow { .. } => None,
            _ if in_page => Some(
                "page is a JSON object {\"since\": RFC 3339, \"until\": RFC 3339, \"snapshots\": [...], \"has_more\": boolean (optional), \"next_cursor\": RFC 3339 text (needed when has_more)}; nothing was ingested or moved."
                    .into(),
            ),
            _ => Some(
                "snapshots is a JSON array of {\"node_id\": text, \"env\": text (optional), \"sampled_at\": RFC 3339, \"samples\": [{\"account_id\": UUID text, \"cumulative_bytes\": integer >= 0}]}. Indexes count from 0; nothing of the call was written."
                    .into(),
            ),
        }
    }
}

/// One account's counter in a snapshot, as sent (the account id is checked later: a bad one
/// skips the sample instead of failing the call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleIn {
    pub account_id: String,
    pub cumulative_bytes: i64,
}

/// One exporter snapshot, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub node_id: String,
    pub env: String,
    pub sampled_at: i64,
    pub samples: Vec<SampleIn>,
}

fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

fn text_field(
    obj: &Map<String, Value>,
    at: &str,
    name: &str,
    required: bool,
) -> Result<String, BillingError> {
    match field(obj, name) {
        None if required => Err(BillingError::Missing {
            at: format!("{at}.{name}"),
        }),
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(BillingError::WrongType {
            at: format!("{at}.{name}"),
            expected: "a string",
            got: format!("{} {}", kind(v), shown(v)),
        }),
    }
}

/// An RFC 3339 string field.
pub fn time_field(obj: &Map<String, Value>, at: &str, name: &str) -> Result<i64, BillingError> {
    let at = format!("{at}.{name}");
    match field(obj, name) {
        None => Err(BillingError::Missing { at }),
        Some(Value::String(s)) => parse_rfc3339(s).map_err(|why| BillingError::BadTime {
            at,
            value: shown(&Value::String(s.clone())),
            why,
        }),
        Some(v) => Err(BillingError::WrongType {
            at,
            expected: "an RFC 3339 string",
            got: format!("{} {}", kind(v), shown(v)),
        }),
    }
}

/// A counter: a JSON integer 0 .. i64::MAX (with `arbitrary_precision`, a number keeps its text).
fn counter(v: Option<&Value>, at: String) -> Result<i64, BillingError> {
    let v = v.ok_or_else(|| BillingError::Missing { at: at.clone() })?;
    let n = match v {
        Value::Number(n) => n,
        v => {
            return Err(BillingError::WrongType {
                at,
                expected: "an integer >= 0",
                got: format!("{} {}", kind(v), shown(v)),
            })
        }
    };
    if let Some(i) = n.as_i64() {
        return if i >= 0 {
            Ok(i)
        } else {
            Err(BillingError::Negative {
                at,
                value: i.to_string(),
            })
        };
    }
    let text = n.to_string();
    let digits = text.strip_prefix('-').unwrap_or(&text);
    if digits.bytes().all(|c| c.is_ascii_digit()) {
        // an integer too large for bigint
        if text.starts_with('-') {
            Err(BillingError::Negative { at, value: text })
        } else {
            Err(BillingError::OutOfRange { at, value: text })
        }
    } else {
        Err(BillingError::NotInteger { at, value: text })
    }
}

/// Checks the text of a `jsonb` array of snapshots. The first bad element (in array order) is
/// the error; an account id that is not a UUID is not an error here.
pub fn parse_snapshots_text(text: &str) -> Result<Vec<Snapshot>, BillingError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| BillingError::BadJson(e.to_string()))?;
    parse_snapshots(&value, "snapshots")
}

/// Checks a JSON array of snapshots; `at` names it in errors (`snapshots`, `page.snapshots`).
pub fn parse_snapshots(value: &Value, at: &str) -> Result<Vec<Snapshot>, BillingError> {
    let items = match value {
        Value::Array(items) => items,
        v => {
            return Err(BillingError::Shape {
                at: at.into(),
                expected: "array of snapshot objects",
                got: kind(v),
            })
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let here = format!("{at}[{i}]");
        let obj = match item {
            Value::Object(o) => o,
            v => {
                return Err(BillingError::Shape {
                    at: here,
                    expected: "object",
                    got: kind(v),
                })
            }
        };
        let node_id = text_field(obj, &here, "node_id", true)?;
        if node_id.is_empty() {
            return Err(BillingError::WrongType {
                at: format!("{here}.node_id"),
                expected: "a non-empty string",
                got: "\"\"".into(),
            });
        }
        let env = text_field(obj, &here, "env", false)?;
        let sampled_at = time_field(obj, &here, "sampled_at")?;
        let samples = match field(obj, "samples") {
            None => {
                return Err(BillingError::Missing {
                    at: format!("{here}.samples"),
                })
            }
            Some(Value::Array(s)) => s,
            Some(v) => {
                return Err(BillingError::Shape {
                    at: format!("{here}.samples"),
                    expected: "array",
                    got: kind(v),
                })
            }
        };
        let mut checked = Vec::with_capacity(samples.len());
        for (j, s) in samples.iter().enumerate() {
            let at_s = || format!("{here}.samples[{j}]");
            let so = match s {
                Value::Object(o) => o,
                v => {
                    return Err(BillingError::Shape {
                        at: at_s(),
                        expected: "object",
                        got: kind(v),
                    })
                }
            };
            // a missing or null account id is an empty one: skipped like any non-UUID (seed)
            let account_id = text_field(so, &at_s(), "account_id", false)?;
            let cumulative_bytes = counter(
                field(so, "cumulative_bytes"),
                format!("{}.cumulative_bytes", at_s()),
            )?;
            checked.push(SampleIn {
                account_id,
                cumulative_bytes,
            });
        }
        out.push(Snapshot {
            node_id,
            env,
            sampled_at,
            samples: checked,
        });
    }
    Ok(out)
}

/// The storage node a snapshot bills: `node_id` when `env` is empty, else `env:node_id`.
pub fn storage_node_id(env: &str, node_id: &str) -> String {
    if env.is_empty() {
        node_id.to_string()
    } else {
        format!("{env}:{node_id}")
    }
}

/// The first snapshot whose node_id / env differ from a source's expected values (each checked
/// only when set and non-empty), as the message the source failure records.
pub fn source_mismatch(
    snapshots: &[Snapshot],
    expected_node_id: Option<&str>,
    expected_env: Option<&str>,
) -> Option<String> {
    source_mismatch_at("snapshots", snapshots, expected_node_id, expected_env)
}

/// [`source_mismatch`] naming the array `at` (`page.snapshots`).
pub fn source_mismatch_at(
    at: &str,
    snapshots: &[Snapshot],
    expected_node_id: Option<&str>,
    expected_env: Option<&str>,
) -> Option<String> {
    let node = expected_node_id.filter(|s| !s.is_empty());
    let env = expected_env.filter(|s| !s.is_empty());
    snapshots.iter().enumerate().find_map(|(i, s)| {
        if let Some(n) = node.filter(|n| *n != s.node_id) {
            Some(format!(
                "{at}[{i}].node_id is \"{}\", the source expects \"{n}\"",
                s.node_id
            ))
        } else {
            env.filter(|e| *e != s.env)
                .map(|e| format!("{at}[{i}].env is \"{}\", the source expects \"{e}\"", s.env))
        }
    })
}

/// An account id in canonical form (lowercase, hyphenated), or None when it is not a UUID. The
/// forms Go's `uuid.Parse` takes are accepted: hyphenated, 32 hex digits, `{...}`, `urn:uuid:`.
pub fn account_uuid(raw: &str) -> Option<String> {
    uuid::Uuid::try_parse(raw)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

/// The start of the UTC minute a time falls in.
pub fn minute_of(t: i64) -> i64 {
    t.div_euclid(USECS_PER_MINUTE) * USECS_PER_MINUTE
}

/// The start of the UTC calendar month a time falls in (the quota period).
pub fn month_of(t: i64) -> i64 {
    let day = t.div_euclid(USECS_PER_DAY) + UNIX_TO_PG_EPOCH_DAYS;
    let (y, m, _) = civil_from_days(day);
    (days_from_civil(y, m, 1) - UNIX_TO_PG_EPOCH_DAYS) * USECS_PER_DAY
}

/// A minute as the ledger id names it: `YYYY-MM-DDTHH:MM:00Z` (the minute `t` falls in).
pub fn minute_text(t: i64) -> String {
    time_text(minute_of(t))
}

/// The ledger id of a minute bucket: UUIDv5 in the RFC 4122 URL namespace of
/// `storage_node_id|account_id|YYYY-MM-DDTHH:MM:00Z` (account id canonical), so anyone can
/// recompute it.
pub fn ledger_id(storage_node_id: &str, account_id: &str, minute: i64) -> String {
    let name = format!("{storage_node_id}|{account_id}|{}", minute_text(minute));
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes())
        .hyphenated()
        .to_string()
}

/// What a first sample (no checkpoint yet) bills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstSample {
    /// The counter started at zero: the whole value is the delta (default).
    Full,
    /// The first sample only sets the checkpoint.
    Baseline,
}

/// What a counter reset (a value below the checkpoint's) bills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetPolicy {
    /// Nothing (the seed; default).
    Skip,
    /// The new value, as if the counter restarted from zero (as Prometheus counts it).
    FromZero,
}

impl FirstSample {
    pub const NAMES: &'static str = "'full' or 'baseline'";
    pub fn parse(s: &str) -> Result<FirstSample, BillingError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "full" => Ok(FirstSample::Full),
            "baseline" => Ok(FirstSample::Baseline),
            _ => Err(BillingError::Setting {
                name: "opsmeter.billing_first_sample",
                expected: Self::NAMES,
                got: s.into(),
            }),
        }
    }
}

impl ResetPolicy {
    pub const NAMES: &'static str = "'skip' or 'from_zero'";
    pub fn parse(s: &str) -> Result<ResetPolicy, BillingError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "skip" => Ok(ResetPolicy::Skip),
            "from_zero" => Ok(ResetPolicy::FromZero),
            _ => Err(BillingError::Setting {
                name: "opsmeter.billing_reset_policy",
                expected: Self::NAMES,
                got: s.into(),
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub first: FirstSample,
    pub reset: ResetPolicy,
}

/// A checkpoint: the last sample counted for a (storage node, account).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub sampled_at: i64,
    pub cumulative_bytes: i64,
}

/// (storage node, canonical account id).
pub type Key = (String, String);

/// A positive counter increase, billed to the minute of `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    pub node: String,
    pub account: String,
    pub at: i64,
    pub bytes: i64,
}

/// What the samples of one call do to checkpoints, before any quota is applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeltaPlan {
    /// The new checkpoint of every key whose checkpoint moves, in key order.
    pub checkpoints: Vec<(Key, Checkpoint)>,
    /// Positive deltas, per key in time order (keys in order).
    pub deltas: Vec<Delta>,
    /// Samples with a valid account id (replays included).
    pub processed: i64,
    pub replayed: i64,
    pub resets: i64,
    pub skipped: i64,
    /// Distinct (storage node, account, minute) of the replayed samples.
    pub replayed_minutes: i64,
    /// The skipped samples, as messages (the first [`MAX_LISTED_ERRORS`]).
    pub errors: Vec<String>,
}

/// The keys (storage node, canonical account) of a call's valid samples, in order, for reading
/// their checkpoints.
pub fn sample_keys(snapshots: &[Snapshot]) -> Vec<Key> {
    let mut keys = BTreeSet::new();
    for s in snapshots {
        let node = storage_node_id(&s.env, &s.node_id);
        for x in &s.samples {
            if let Some(a) = account_uuid(&x.account_id) {
                keys.insert((node.clone(), a));
            }
        }
    }
    keys.into_iter().collect()
}

/// Rules 3–9 of the billing issue: per (storage node, account), the call's samples in
/// `sampled_at` order (ties: the smaller counter first, so the order of the input never
/// matters) against the checkpoint. A sample at or before the checkpoint is a replay and
/// changes nothing; otherwise delta = value − checkpoint, the first sample bills its value (or
/// nothing under [`FirstSample::Baseline`]), a decrease is a reset billed per [`ResetPolicy`],
/// and the sample becomes the checkpoint.
pub fn plan_deltas(
    snapshots: &[Snapshot],
    checkpoints: &HashMap<Key, Checkpoint>,
    rules: Rules,
) -> DeltaPlan {
    plan_deltas_at("snapshots", snapshots, checkpoints, rules)
}

/// [`plan_deltas`] naming the array `at` in its messages (`page.snapshots`).
pub fn plan_deltas_at(
    at: &str,
    snapshots: &[Snapshot],
    checkpoints: &HashMap<Key, Checkpoint>,
    rules: Rules,
) -> DeltaPlan {
    let mut plan = DeltaPlan::default();
    let mut per_key: BTreeMap<Key, Vec<(i64, i64)>> = BTreeMap::new();
    for (i, s) in snapshots.iter().enumerate() {
        let node = storage_node_id(&s.env, &s.node_id);
        for (j, x) in s.samples.iter().enumerate() {
            match account_uuid(&x.account_id) {
                Some(a) => {
                    plan.processed += 1;
                    per_key
                        .entry((node.clone(), a))
                        .or_default()
                        .push((s.sampled_at, x.cumulative_bytes));
                }
                None => {
                    plan.skipped += 1;
                    if plan.errors.len() < MAX_LISTED_ERRORS {
                        plan.errors.push(format!(
                            "{at}[{i}].samples[{j}].account_id is not a UUID: {}; sample skipped",
                            shown(&Value::String(x.account_id.clone()))
                        ));
                    }
                }
            }
        }
    }
    if plan.skipped > MAX_LISTED_ERRORS as i64 {
        plan.errors.push(format!(
            "... and {} more samples skipped for an account_id that is not a UUID",
            plan.skipped - MAX_LISTED_ERRORS as i64
        ));
    }
    for (key, mut samples) in per_key {
        samples.sort_unstable();
        let start = checkpoints.get(&key).copied();
        let mut cp = start;
        let mut replayed_minutes = BTreeSet::new();
        for (at, value) in samples {
            let delta = match cp {
                Some(c) if at <= c.sampled_at => {
                    plan.replayed += 1;
                    replayed_minutes.insert(minute_of(at));
                    continue;
                }
                None => match rules.first {
                    FirstSample::Full => value,
                    FirstSample::Baseline => 0,
                },
                Some(c) if value < c.cumulative_bytes => {
                    plan.resets += 1;
                    match rules.reset {
                        ResetPolicy::Skip => 0,
                        ResetPolicy::FromZero => value,
                    }
                }
                Some(c) => value - c.cumulative_bytes,
            };
            cp = Some(Checkpoint {
                sampled_at: at,
                cumulative_bytes: value,
            });
            if delta > 0 {
                plan.deltas.push(Delta {
                    node: key.0.clone(),
                    account: key.1.clone(),
                    at,
                    bytes: delta,
                });
            }
        }
        plan.replayed_minutes += replayed_minutes.len() as i64;
        if cp != start {
            plan.checkpoints.push((key, cp.expect("moved")));
        }
    }
    plan
}

/// The (account, period) quota rows a call's deltas touch, in order (the order the glue locks
/// them in).
pub fn quota_keys(deltas: &[Delta]) -> Vec<(String, i64)> {
    let keys: BTreeSet<(String, i64)> = deltas
        .iter()
        .map(|d| (d.account.clone(), month_of(d.at)))
        .collect();
    keys.into_iter().collect()
}

/// A quota row as a call starts: the effective included quota of the account and what of it
/// the period has used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaState {
    pub included_quota_bytes: i64,
    pub included_used_bytes: i64,
}

/// What one call adds to a minute bucket and its ledger row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerAdd {
    pub node: String,
    pub account: String,
    pub minute: i64,
    pub bytes: i64,
    pub included: i64,
    pub billable: i64,
}

/// What one call adds to a quota row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaAdd {
    pub account: String,
    pub period_start: i64,
    pub included_quota_bytes: i64,
    pub included: i64,
    pub billable: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allocation {
    /// One per (storage node, account, minute), in that order.
    pub ledger: Vec<LedgerAdd>,
    /// One per (account, period), in that order.
    pub quota: Vec<QuotaAdd>,
}

/// Rule 11: each account's deltas in time order (ties: storage node) consume the period's
/// included quota first: included = min(delta, max(0, quota − used)), billable = the rest.
/// Deltas in one minute of one storage node add up into one ledger row. `quota` has the state
/// of every (account, period) of `deltas` (a missing one starts at used 0 with no quota).
pub fn allocate(
    deltas: &[Delta],
    quota: &HashMap<(String, i64), QuotaState>,
) -> Result<Allocation, BillingError> {
    let mut order: Vec<&Delta> = deltas.iter().collect();
    order.sort_by(|a, b| (&a.account, a.at, &a.node).cmp(&(&b.account, b.at, &b.node)));
    let mut state: BTreeMap<(String, i64), (QuotaState, i64, i64)> = BTreeMap::new();
    let mut ledger: BTreeMap<(String, String, i64), (i64, i64, i64)> = BTreeMap::new();
    for d in order {
        let period = month_of(d.at);
        let (q, inc_sum, bill_sum) =
            state.entry((d.account.clone(), period)).or_insert_with(|| {
                let q = quota
                    .get(&(d.account.clone(), period))
                    .copied()
                    .unwrap_or(QuotaState {
                        included_quota_bytes: 0,
                        included_used_bytes: 0,
                    });
                (q, 0, 0)
            });
        let left = (q.included_quota_bytes - q.included_used_bytes).max(0);
        let included = d.bytes.min(left);
        let billable = d.bytes - included;
        let overflow = |what: String| BillingError::Overflow { what };
        q.included_used_bytes += included; // <= included_quota_bytes
        *inc_sum += included;
        *bill_sum = bill_sum.checked_add(billable).ok_or_else(|| {
            overflow(format!(
                "account {} in the month of {}",
                d.account,
                minute_text(period)
            ))
        })?;
        let minute = minute_of(d.at);
        let row = ledger
            .entry((d.node.clone(), d.account.clone(), minute))
            .or_insert((0, 0, 0));
        let grown = row.0.checked_add(d.bytes).ok_or_else(|| {
            overflow(format!(
                "storage node {} account {} minute {}",
                d.node,
                d.account,
                minute_text(minute)
            ))
        })?;
        row.0 = grown;
        row.1 += included;
        row.2 += billable; // included + billable = bytes, which did not overflow
    }
    Ok(Allocation {
        ledger: ledger
            .into_iter()
            .map(
                |((node, account, minute), (bytes, included, billable))| LedgerAdd {
                    node,
                    account,
                    minute,
                    bytes,
                    included,
                    billable,
                },
            )
            .collect(),
        quota: state
            .into_iter()
            .map(
                |((account, period_start), (q, included, billable))| QuotaAdd {
                    account,
                    period_start,
                    included_quota_bytes: q.included_quota_bytes,
                    included,
                    billable,
                },
            )
            .collect(),
    })
}

/// A decimal number as text (`12`, `0.000001`, `-1.5`, `2e-9`): what PostgreSQL's `numeric`
/// input takes, without NaN or infinities. Returns its sign: -1, 0 or 1.
pub fn decimal_sign(s: &str) -> Option<i32> {
    let t = s.trim();
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(p) => (&body[..p], Some(&body[p + 1..])),
        None => (body, None),
    };
    if let Some(e) = exp {
        let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
        // at most 3 exponent digits: numeric takes more, but no price needs them
        if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) || digits.len() > 3 {
            return None;
        }
    }
    let (int, frac) = match mantissa.find('.') {
        Some(p) => (&mantissa[..p], &mantissa[p + 1..]),
        None => (mantissa, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let nonzero = int.bytes().chain(frac.bytes()).any(|c| c != b'0');
    Some(match (nonzero, neg) {
        (false, _) => 0,
        (true, true) => -1,
        (true, false) => 1,
    })
}

/// `opsmeter.billing_price_per_byte`, or a profile's price: a decimal >= 0.
pub fn check_price(name: &'static str, s: &str) -> Result<(), BillingError> {
    match decimal_sign(s) {
        Some(sign) if sign >= 0 => Ok(()),
        _ => Err(BillingError::Setting {
            name,
            expected: "a decimal number >= 0 such as '0.000000002'",
            got: s.into(),
        }),
    }
}

/// `opsmeter.billing_multiplier`: any decimal (one <= 0 means 1).
pub fn check_multiplier(name: &'static str, s: &str) -> Result<(), BillingError> {
    decimal_sign(s).map(|_| ()).ok_or(BillingError::Setting {
        name,
        expected: "a decimal number such as '1' or '1.25'",
        got: s.into(),
    })
}

/// `opsmeter.billing_included_quota_bytes`: an integer 0 .. i64::MAX.
pub fn parse_quota_bytes(s: &str) -> Result<i64, BillingError> {
    s.trim()
        .parse::<i64>()
        .ok()
        .filter(|v| *v >= 0)
        .ok_or(BillingError::Setting {
            name: "opsmeter.billing_included_quota_bytes",
            expected: "an integer 0 .. 9223372036854775807",
            got: s.into(),
        })
}

/// The pricing in force for an account: its profile's, else the settings'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pricing {
    pub included_quota_bytes: i64,
    /// decimal text, >= 0
    pub price_per_byte: String,
    /// decimal text, > 0
    pub multiplier: String,
    pub pricing_rule_version: String,
}

/// The effective pricing (the seed's `resolvePricing`): the profile when there is one, else
/// the defaults; a multiplier <= 0 (or not a number) means 1; an empty rule version means
/// `default`.
pub fn effective_pricing(profile: Option<&Pricing>, defaults: &Pricing) -> Pricing {
    let mut p = profile.cloned().unwrap_or_else(|| defaults.clone());
    if decimal_sign(&p.multiplier).is_none_or(|s| s <= 0) {
        p.multiplier = "1".into();
    }
    if p.pricing_rule_version.is_empty() {
        p.pricing_rule_version = "default".into();
    }
    p
}

/// The window of a source (seed): since = last_completed_until, or now − lookback when it has
/// none; until = now − delay.
pub fn window(
    last_completed_until: Option<i64>,
    now: i64,
    lookback_us: i64,
    delay_us: i64,
) -> (i64, i64) {
    (
        last_completed_until.unwrap_or(now - lookback_us),
        now - delay_us,
    )
}

/// A page of `billing_advance_window`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub since: i64,
    pub until: i64,
    pub snapshots: Vec<Snapshot>,
    pub has_more: bool,
    /// The cursor as sent: its text, or (Err) a rendering of a value that is not a string
    /// (checked by [`next_position`], which records it as the source's failure).
    pub next_cursor: Option<Result<String, String>>,
}

/// Parses the text of a page `{"since", "until", "snapshots", "has_more", "next_cursor"}`.
/// Shape errors are errors; a bad `next_cursor` is left to [`next_position`] (the seed records
/// it as the source's failure).
pub fn parse_page_text(text: &str) -> Result<Page, BillingError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| BillingError::BadJson(e.to_string()))?;
    let obj = match &value {
        Value::Object(o) => o,
        v => {
            return Err(BillingError::Shape {
                at: "page".into(),
                expected: "object",
                got: kind(v),
            })
        }
    };
    let since = time_field(obj, "page", "since")?;
    let until = time_field(obj, "page", "until")?;
    let snapshots = match field(obj, "snapshots") {
        None => Vec::new(),
        Some(v) => parse_snapshots(v, "page.snapshots")?,
    };
    let has_more = match field(obj, "has_more") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(BillingError::WrongType {
                at: "page.has_more".into(),
                expected: "a boolean",
                got: format!("{} {}", kind(v), shown(v)),
            })
        }
    };
    let next_cursor = match field(obj, "next_cursor") {
        None => None,
        Some(Value::String(s)) => Some(Ok(s.clone())),
        Some(v) => Some(Err(format!("{} {}", kind(v), shown(v)))),
    };
    Ok(Page {
        since,
        until,
        snapshots,
        has_more,
        next_cursor,
    })
}

/// What a page does to the window (seed rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Advance {
    /// since > until: nothing to collect; last_completed_until moves to until.
    Skip(i64),
    /// Ingest the snapshots, then move last_completed_until here.
    Ingest(i64),
    /// has_more with an empty or non-RFC 3339 next_cursor: the source fails, nothing moves.
    Fail(String),
}

/// Where a page moves the window (the seed's rules, and checks that keep a bad page from
/// moving it somewhere no later page can repair):
/// * `page.until` after `now`: the source's failure (a window ends in the past);
/// * `page.since` after the source's `last_completed_until`: the source's failure (a gap: the
///   stretch in between would never be fetched);
/// * since > until: nothing to collect; move to until (never backwards, so in practice only a
///   source's first window moves);
/// * has_more: `next_cursor` must be RFC 3339, after since and not after until; the window
///   moves there;
/// * a snapshot sampled after `page.until`: the source's failure (it would make the samples of
///   the next window replays);
/// * otherwise ingest, then move to until.
pub fn next_position(page: &Page, last_completed_until: Option<i64>, now: i64) -> Advance {
    if page.until > now {
        return Advance::Fail(
            "page.until is in the future: a window ends at or before now()".into(),
        );
    }
    if let Some(done) = last_completed_until.filter(|done| page.since > *done) {
        return Advance::Fail(format!(
            "page.since is after the source's last_completed_until ({}): the stretch between would never be collected",
            time_text(done)
        ));
    }
    if page.since > page.until {
        return Advance::Skip(page.until);
    }
    let to = if page.has_more {
        match page
            .next_cursor
            .as_ref()
            .map(|c| c.as_deref().map(str::trim))
        {
            Some(Err(got)) => {
                return Advance::Fail(format!(
                    "page.next_cursor must be an RFC 3339 string, not {got}"
                ))
            }
            None | Some(Ok("")) => {
                return Advance::Fail("page.has_more is true but page.next_cursor is empty".into())
            }
            Some(Ok(c)) => match parse_rfc3339(c) {
                Ok(t) if t > page.since && t <= page.until => t,
                Ok(_) => {
                    return Advance::Fail(format!(
                        "page.next_cursor {} is not after page.since and at or before page.until",
                        shown(&Value::String(c.into()))
                    ))
                }
                Err(why) => {
                    return Advance::Fail(format!(
                        "page.next_cursor is not an RFC 3339 timestamp: {} ({why})",
                        shown(&Value::String(c.into()))
                    ))
                }
            },
        }
    } else {
        page.until
    };
    if let Some(i) = page
        .snapshots
        .iter()
        .position(|s| s.sampled_at > page.until)
    {
        return Advance::Fail(format!(
            "page.snapshots[{i}].sampled_at is after page.until: it belongs to a later window"
        ));
    }
    Advance::Ingest(to)
}

/// A time as RFC 3339 in UTC (`2026-11-30T10:00:00Z`, microseconds when there are any).
pub fn time_text(t: i64) -> String {
    let secs = t.div_euclid(1_000_000);
    let micros = t.rem_euclid(1_000_000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400) + UNIX_TO_PG_EPOCH_DAYS);
    let s = secs.rem_euclid(86_400);
    let frac = if micros == 0 {
        String::new()
    } else {
        format!(".{micros:06}")
    };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{frac}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: &str = "6f1c7a52-9a7e-4c5b-8f0e-0d6b2a1c3e4f";
    const B: &str = "0b3f7e1a-2c4d-4e5f-9a8b-7c6d5e4f3a2b";

    fn ts(s: &str) -> i64 {
        parse_rfc3339(s).unwrap()
    }

    fn snap(node: &str, env: &str, at: &str, samples: &[(&str, i64)]) -> Snapshot {
        Snapshot {
            node_id: node.into(),
            env: env.into(),
            sampled_at: ts(at),
            samples: samples
                .iter()
                .map(|(a, v)| SampleIn {
                    account_id: (*a).into(),
                    cumulative_bytes: *v,
                })
                .collect(),
        }
    }

    const RULES: Rules = Rules {
        first: FirstSample::Full,
        reset: ResetPolicy::Skip,
    };

    #[test]
    fn parses_snapshots_and_names_bad_fields() {
        let ok = parse_snapshots_text(
            r#"[{"node_id":"n1","env":"prod","sampled_at":"2026-11-30T10:00:30Z",
                 "samples":[{"account_id":"x","cumulative_bytes":5}]}]"#,
        )
        .unwrap();
        assert_eq!(ok[0].node_id, "n1");
        assert_eq!(ok[0].env, "prod");
        assert_eq!(ok[0].samples[0].cumulative_bytes, 5);
        let err = |t: &str| parse_snapshots_text(t).unwrap_err();
        let e = err(r#"{"a":1}"#);
        assert_eq!(e.class(), Class::InvalidParameter);
        assert!(e.to_string().starts_with("snapshots must be a JSON array"));
        let e = err(
            r#"[{"node_id":"n","sampled_at":"2026-11-30T10:00:00Z","samples":[{"account_id":"a","cumulative_bytes":-1}]}]"#,
        );
        assert_eq!(
            e.to_string(),
            "snapshots[0].samples[0].cumulative_bytes must be >= 0, got -1"
        );
        assert_eq!(e.class(), Class::InvalidParameter);
        let e = err(
            r#"[{"node_id":"n","sampled_at":"2026-11-30T10:00:00Z","samples":[{"account_id":"a","cumulative_bytes":1},{"account_id":"a","cumulative_bytes":1.5}]}]"#,
        );
        assert_eq!(
            e.to_string(),
            "snapshots[0].samples[1].cumulative_bytes is not an integer: 1.5"
        );
        assert_eq!(e.class(), Class::TextRepresentation);
        let e = err(
            r#"[{"node_id":"n","sampled_at":"2026-11-30T10:00:00Z","samples":[{"account_id":"a","cumulative_bytes":"7"}]}]"#,
        );
        assert_eq!(e.class(), Class::InvalidParameter);
        let e = err(
            r#"[{"node_id":"n","sampled_at":"2026-11-30T10:00:00Z","samples":[{"account_id":"a","cumulative_bytes":99999999999999999999}]}]"#,
        );
        assert_eq!(e.class(), Class::OutOfRange);
        let e = err(
            r#"[{"node_id":"n","sampled_at":"2026-11-30T10:00:00Z","samples":[{"account_id":"a"}]}]"#,
        );
        assert_eq!(
            e.to_string(),
            "snapshots[0].samples[0].cumulative_bytes is missing"
        );
        let e = err(r#"[{"node_id":"n","sampled_at":"yesterday","samples":[]}]"#);
        assert_eq!(e.class(), Class::DatetimeFormat);
        assert!(e
            .to_string()
            .starts_with("snapshots[0].sampled_at is not an RFC 3339"));
        let e = err(r#"[{"sampled_at":"2026-11-30T10:00:00Z","samples":[]}]"#);
        assert_eq!(e.to_string(), "snapshots[0].node_id is missing");
        let e = err(r#"[{"node_id":"n","sampled_at":"2026-11-30T10:00:00Z"}]"#);
        assert_eq!(e.to_string(), "snapshots[0].samples is missing");
        let e = err(r#"[{"node_id":"n","sampled_at":"2026-11-30T10:00:00Z","samples":[1]}]"#);
        assert_eq!(
            e.to_string(),
            "snapshots[0].samples[0] must be a JSON object, not a number"
        );
        let e = err(
            r#"[{"node_id":"n","sampled_at":"2026-11-30T10:00:00Z","samples":[{"account_id":7,"cumulative_bytes":1}]}]"#,
        );
        assert!(e
            .to_string()
            .starts_with("snapshots[0].samples[0].account_id must be a string"));
    }

    #[test]
    fn storage_node_and_mismatch() {
        assert_eq!(storage_node_id("", "n1"), "n1");
        assert_eq!(storage_node_id("prod", "n1"), "prod:n1");
        let s = vec![snap("n1", "prod", "2026-11-30T10:00:00Z", &[])];
        assert_eq!(source_mismatch(&s, Some("n1"), Some("prod")), None);
        assert_eq!(source_mismatch(&s, None, None), None);
        assert_eq!(source_mismatch(&s, Some(""), Some("")), None);
        assert!(source_mismatch(&s, Some("n2"), None)
            .unwrap()
            .contains("node_id is \"n1\""));
        assert!(source_mismatch(&s, None, Some("dev"))
            .unwrap()
            .contains("env is \"prod\""));
    }

    #[test]
    fn accounts_minutes_months_and_ledger_ids() {
        assert_eq!(account_uuid(&A.to_uppercase()).as_deref(), Some(A));
        assert_eq!(account_uuid(&A.replace('-', "")).as_deref(), Some(A));
        assert_eq!(account_uuid(&format!("urn:uuid:{A}")).as_deref(), Some(A));
        assert_eq!(account_uuid(""), None);
        assert_eq!(account_uuid("not-a-uuid"), None);
        assert_eq!(
            minute_of(ts("2026-11-30T10:00:59.999999Z")),
            ts("2026-11-30T10:00:00Z")
        );
        assert_eq!(
            minute_of(ts("1999-12-31T23:59:30Z")),
            ts("1999-12-31T23:59:00Z")
        );
        assert_eq!(
            month_of(ts("2026-12-31T23:59:59Z")),
            ts("2026-12-01T00:00:00Z")
        );
        assert_eq!(
            month_of(ts("2024-02-29T12:00:00Z")),
            ts("2024-02-01T00:00:00Z")
        );
        assert_eq!(
            month_of(ts("1999-12-15T00:00:00Z")),
            ts("1999-12-01T00:00:00Z")
        );
        assert_eq!(
            minute_text(ts("2026-11-30T09:05:00Z")),
            "2026-11-30T09:05:00Z"
        );
        // values computed independently with Python's uuid.uuid5(uuid.NAMESPACE_URL, name)
        assert_eq!(
            uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, b"http://www.example.com/").to_string(),
            "fcde3c85-2270-590f-9e7c-ee003d65e0e2"
        );
        let id = ledger_id("prod:n1", A, ts("2026-11-30T09:05:00Z"));
        assert_eq!(id, "5bd14d73-d9b8-513e-be91-ace440927e9d");
        assert_eq!(&id[14..15], "5");
    }

    #[test]
    fn replay_reset_first_sample_rules() {
        let s = vec![
            snap("n", "", "2026-11-30T10:00:10Z", &[(A, 100), ("bad", 1)]),
            snap("n", "", "2026-11-30T10:00:40Z", &[(A, 150)]),
            snap("n", "", "2026-11-30T10:01:10Z", &[(A, 20)]),
            snap("n", "", "2026-11-30T10:01:40Z", &[(A, 50)]),
        ];
        let p = plan_deltas(&s, &HashMap::new(), RULES);
        assert_eq!((p.processed, p.skipped, p.resets, p.replayed), (4, 1, 1, 0));
        let bytes: Vec<i64> = p.deltas.iter().map(|d| d.bytes).collect();
        assert_eq!(bytes, vec![100, 50, 30]);
        assert_eq!(p.checkpoints[0].1.cumulative_bytes, 50);
        assert!(p.errors[0].contains("snapshots[0].samples[1].account_id"));
        // from_zero bills the value after the reset; baseline bills nothing first
        let p = plan_deltas(
            &s,
            &HashMap::new(),
            Rules {
                first: FirstSample::Baseline,
                reset: ResetPolicy::FromZero,
            },
        );
        let bytes: Vec<i64> = p.deltas.iter().map(|d| d.bytes).collect();
        assert_eq!(bytes, vec![50, 20, 30]);
        // replays: at or before the checkpoint change nothing, even with another value
        let key = ("n".to_string(), A.to_string());
        let cps = HashMap::from([(
            key.clone(),
            Checkpoint {
                sampled_at: ts("2026-11-30T10:00:40Z"),
                cumulative_bytes: 150,
            },
        )]);
        let p = plan_deltas(&s[..2], &cps, RULES);
        assert_eq!((p.replayed, p.resets, p.replayed_minutes), (2, 0, 1));
        assert!(p.deltas.is_empty() && p.checkpoints.is_empty());
        // order of the snapshots does not matter
        let mut rev = s.clone();
        rev.reverse();
        assert_eq!(
            plan_deltas(&rev, &HashMap::new(), RULES).deltas,
            plan_deltas(&s, &HashMap::new(), RULES).deltas
        );
    }

    #[test]
    fn quota_is_consumed_first_then_billed() {
        let m = ts("2026-11-30T10:00:00Z");
        let d = |node: &str, at: i64, bytes| Delta {
            node: node.into(),
            account: A.into(),
            at,
            bytes,
        };
        let deltas = vec![
            d("n", m, 60),
            d("n", m + 30_000_000, 60),
            d("n", m + 60_000_000, 10),
        ];
        let q = HashMap::from([(
            (A.to_string(), month_of(m)),
            QuotaState {
                included_quota_bytes: 100,
                included_used_bytes: 0,
            },
        )]);
        let a = allocate(&deltas, &q).unwrap();
        assert_eq!(a.ledger.len(), 2);
        assert_eq!(
            (
                a.ledger[0].bytes,
                a.ledger[0].included,
                a.ledger[0].billable
            ),
            (120, 100, 20)
        );
        assert_eq!((a.ledger[1].included, a.ledger[1].billable), (0, 10));
        assert_eq!((a.quota[0].included, a.quota[0].billable), (100, 30));
        // a new month starts with a fresh quota (no row yet: no quota at all unless given)
        let next = ts("2026-12-01T00:00:00Z");
        let a = allocate(&[d("n", next, 5)], &q).unwrap();
        assert_eq!((a.quota[0].period_start, a.quota[0].billable), (next, 5));
    }

    #[test]
    fn sums_beyond_bigint_are_errors_not_wraps() {
        let m = ts("2026-11-30T10:00:00Z");
        let d = |at: i64, bytes| Delta {
            node: "n".into(),
            account: A.into(),
            at,
            bytes,
        };
        let e = allocate(
            &[d(m, i64::MAX), d(m + 40_000_000, i64::MAX)],
            &HashMap::new(),
        )
        .unwrap_err();
        assert_eq!(e.class(), Class::OutOfRange);
        assert!(e.to_string().contains("exceed bigint"), "{e}");
        // the same bytes in two minutes are two rows, each fine; the month's billable overflows
        let e = allocate(&[d(m, i64::MAX), d(m + 60_000_000, 1)], &HashMap::new()).unwrap_err();
        assert!(e.to_string().contains("in the month of"), "{e}");
        assert!(allocate(&[d(m, i64::MAX)], &HashMap::new()).is_ok());
        // an empty node_id is refused; a non-string cursor is the source's failure when needed
        let e = parse_snapshots_text(
            r#"[{"node_id":"","sampled_at":"2026-11-30T10:00:00Z","samples":[]}]"#,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "snapshots[0].node_id must be a non-empty string, not \"\""
        );
        let p = parse_page_text(r#"{"since":"2026-11-30T10:00:00Z","until":"2026-11-30T11:00:00Z","has_more":true,"next_cursor":1733100000}"#).unwrap();
        assert!(
            matches!(next_position(&p, None, m + 86_400_000_000), Advance::Fail(f) if f.contains("must be an RFC 3339 string, not a number"))
        );
        let p = parse_page_text(
            r#"{"since":"2026-11-30T10:00:00Z","until":"2026-11-30T11:00:00Z","next_cursor":7}"#,
        )
        .unwrap();
        assert_eq!(
            next_position(&p, None, m + 86_400_000_000),
            Advance::Ingest(ts("2026-11-30T11:00:00Z"))
        );
    }

    #[test]
    fn decimals_and_pricing() {
        for (s, sign) in [
            ("0", 0),
            ("0.000", 0),
            ("1", 1),
            ("-1.5", -1),
            ("2e-9", 1),
            (".5", 1),
            ("1.", 1),
        ] {
            assert_eq!(decimal_sign(s), Some(sign), "{s}");
        }
        for s in [
            "",
            ".",
            "abc",
            "NaN",
            "1e",
            "1..2",
            "Infinity",
            "1e9999999",
            "1e1000",
        ] {
            assert_eq!(decimal_sign(s), None, "{s}");
        }
        assert!(check_price("p", "-1").is_err());
        assert!(check_price("p", "0.000000002").is_ok());
        assert!(check_multiplier("m", "-3").is_ok());
        assert_eq!(parse_quota_bytes("1000").unwrap(), 1000);
        assert!(parse_quota_bytes("-1").is_err());
        let defaults = Pricing {
            included_quota_bytes: 10,
            price_per_byte: "0.5".into(),
            multiplier: "0".into(),
            pricing_rule_version: "".into(),
        };
        let p = effective_pricing(None, &defaults);
        assert_eq!(
            (p.multiplier.as_str(), p.pricing_rule_version.as_str()),
            ("1", "default")
        );
        let prof = Pricing {
            included_quota_bytes: 1,
            price_per_byte: "2".into(),
            multiplier: "1.5".into(),
            pricing_rule_version: "v2".into(),
        };
        assert_eq!(effective_pricing(Some(&prof), &defaults), prof);
    }

    #[test]
    fn window_and_page_rules() {
        assert_eq!(window(Some(5), 100, 50, 10), (5, 90));
        assert_eq!(window(None, 100, 50, 10), (50, 90));
        let now = ts("2026-11-30T12:00:00Z");
        let page = |t: &str| parse_page_text(t).unwrap();
        let at = |t: &str| next_position(&page(t), None, now);
        assert_eq!(
            at(
                r#"{"since":"2026-11-30T10:00:00Z","until":"2026-11-30T11:00:00Z","snapshots":[],"has_more":true,"next_cursor":"2026-11-30T10:30:00Z"}"#
            ),
            Advance::Ingest(ts("2026-11-30T10:30:00Z"))
        );
        assert_eq!(
            at(
                r#"{"since":"2026-11-30T10:00:00Z","until":"2026-11-30T11:00:00Z","has_more":false}"#
            ),
            Advance::Ingest(ts("2026-11-30T11:00:00Z"))
        );
        let fails = |t: &str, done: Option<&str>, what: &str| match next_position(
            &page(t),
            done.map(ts),
            now,
        ) {
            Advance::Fail(m) => assert!(m.contains(what), "{m}"),
            other => panic!("{t}: {other:?}"),
        };
        fails(
            r#"{"since":"2026-11-30T10:00:00Z","until":"2026-11-30T11:00:00Z","has_more":true,"next_cursor":""}"#,
            None,
            "empty",
        );
        fails(
            r#"{"since":"2026-11-30T10:00:00Z","until":"2026-11-30T11:00:00Z","has_more":true,"next_cursor":"page-2"}"#,
            None,
            "not an RFC 3339",
        );
        fails(
            r#"{"since":"2026-11-30T10:00:00Z","until":"2026-11-30T11:00:00Z","has_more":true,"next_cursor":"2026-11-30T10:00:00Z"}"#,
            None,
            "not after page.since",
        );
        fails(
            r#"{"since":"2026-11-30T10:00:00Z","until":"2026-11-30T11:00:00Z","has_more":true,"next_cursor":"2030-01-01T00:00:00Z"}"#,
            None,
            "at or before page.until",
        );
        fails(
            r#"{"since":"2026-11-30T10:00:00Z","until":"2026-11-30T13:00:00Z"}"#,
            None,
            "in the future",
        );
        fails(
            r#"{"since":"2026-11-30T10:30:00Z","until":"2026-11-30T11:00:00Z"}"#,
            Some("2026-11-30T10:00:00Z"),
            "stretch between",
        );
        fails(
            r#"{"since":"2026-11-30T10:00:00Z","until":"2026-11-30T11:00:00Z","snapshots":[{"node_id":"n","sampled_at":"2026-11-30T11:00:01Z","samples":[]}]}"#,
            None,
            "page.snapshots[0].sampled_at is after page.until",
        );
        // an overlap with what is done is fine (its samples are replays)
        assert_eq!(
            next_position(
                &page(r#"{"since":"2026-11-30T09:00:00Z","until":"2026-11-30T11:00:00Z"}"#),
                Some(ts("2026-11-30T10:00:00Z")),
                now
            ),
            Advance::Ingest(ts("2026-11-30T11:00:00Z"))
        );
        assert_eq!(
            at(
                r#"{"since":"2026-11-30T12:00:00Z","until":"2026-11-30T11:00:00Z","has_more":true}"#
            ),
            Advance::Skip(ts("2026-11-30T11:00:00Z"))
        );
        let e = parse_page_text(r#"{"until":"2026-11-30T11:00:00Z"}"#).unwrap_err();
        assert_eq!(e.to_string(), "page.since is missing");
        assert!(e.hint().unwrap().starts_with("page is a JSON object"));
        let e = parse_page_text(r#"{"since":"2026-11-30T10:00:00Z","until":"2026-11-30T11:00:00Z","snapshots":[{"node_id":"n","sampled_at":"x","samples":[]}]}"#).unwrap_err();
        assert!(e.to_string().starts_with("page.snapshots[0].sampled_at"));
        assert!(e.hint().unwrap().starts_with("snapshots is a JSON array"));
        assert_eq!(
            time_text(ts("2026-11-30T10:00:00.25Z")),
            "2026-11-30T10:00:00.250000Z"
        );
    }

    // ---- the oracle: the issue's rules, applied one sample at a time to a plain state ----

    /// One database's billing state, as the oracle keeps it.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    struct State {
        checkpoints: BTreeMap<Key, Checkpoint>,
        minutes: BTreeMap<(String, String, i64), i64>,
        /// (node, account, minute) -> (bytes, included, billable)
        ledger: BTreeMap<(String, String, i64), (i64, i64, i64)>,
        /// (account, period) -> (included_used, billable)
        quota: BTreeMap<(String, i64), (i64, i64)>,
    }

    /// The rules read literally: every sample of a call, one at a time, in (sampled_at,
    /// counter) order per key; each positive delta in (account, time, node) order then takes
    /// quota and is added to its bucket, its ledger row and its quota row.
    fn oracle_call(
        st: &mut State,
        snaps: &[Snapshot],
        rules: Rules,
        quota_of: &dyn Fn(&str) -> i64,
    ) {
        let mut all: Vec<(String, String, i64, i64)> = Vec::new();
        for s in snaps {
            for x in &s.samples {
                if let Ok(u) = uuid::Uuid::parse_str(&x.account_id) {
                    let node = if s.env.is_empty() {
                        s.node_id.clone()
                    } else {
                        format!("{}:{}", s.env, s.node_id)
                    };
                    all.push((node, u.to_string(), s.sampled_at, x.cumulative_bytes));
                }
            }
        }
        all.sort();
        let mut deltas = Vec::new();
        for (node, account, at, value) in all {
            let key = (node.clone(), account.clone());
            let cp = st.checkpoints.get(&key).copied();
            if let Some(c) = cp {
                if at <= c.sampled_at {
                    continue;
                }
            }
            let delta = match cp {
                None if rules.first == FirstSample::Baseline => 0,
                None => value,
                Some(c) if value < c.cumulative_bytes => {
                    if rules.reset == ResetPolicy::FromZero {
                        value
                    } else {
                        0
                    }
                }
                Some(c) => value - c.cumulative_bytes,
            };
            st.checkpoints.insert(
                key,
                Checkpoint {
                    sampled_at: at,
                    cumulative_bytes: value,
                },
            );
            if delta > 0 {
                deltas.push((account, at, node, delta));
            }
        }
        deltas.sort();
        for (account, at, node, delta) in deltas {
            let minute = at.div_euclid(60_000_000) * 60_000_000;
            let (y, m, _) = civil_from_days(at.div_euclid(86_400_000_000) + UNIX_TO_PG_EPOCH_DAYS);
            let period = (days_from_civil(y, m, 1) - UNIX_TO_PG_EPOCH_DAYS) * 86_400_000_000;
            let q = st.quota.entry((account.clone(), period)).or_insert((0, 0));
            let included = delta.min((quota_of(&account) - q.0).max(0));
            q.0 += included;
            q.1 += delta - included;
            *st.minutes
                .entry((node.clone(), account.clone(), minute))
                .or_insert(0) += delta;
            let l = st
                .ledger
                .entry((node, account, minute))
                .or_insert((0, 0, 0));
            l.0 += delta;
            l.1 += included;
            l.2 += delta - included;
        }
    }

    /// One call through the core, against the same kind of state (what the glue does with SQL).
    fn core_call(
        st: &mut State,
        snaps: &[Snapshot],
        rules: Rules,
        quota_of: &dyn Fn(&str) -> i64,
    ) -> DeltaPlan {
        let cps: HashMap<Key, Checkpoint> = sample_keys(snaps)
            .into_iter()
            .filter_map(|k| st.checkpoints.get(&k).map(|c| (k, *c)))
            .collect();
        let plan = plan_deltas(snaps, &cps, rules);
        let q: HashMap<(String, i64), QuotaState> = quota_keys(&plan.deltas)
            .into_iter()
            .map(|(a, p)| {
                let used = st.quota.get(&(a.clone(), p)).map_or(0, |q| q.0);
                let qs = QuotaState {
                    included_quota_bytes: quota_of(&a),
                    included_used_bytes: used,
                };
                ((a, p), qs)
            })
            .collect();
        let alloc = allocate(&plan.deltas, &q).unwrap();
        for (k, c) in &plan.checkpoints {
            st.checkpoints.insert(k.clone(), *c);
        }
        for l in &alloc.ledger {
            let k = (l.node.clone(), l.account.clone(), l.minute);
            *st.minutes.entry(k.clone()).or_insert(0) += l.bytes;
            let e = st.ledger.entry(k).or_insert((0, 0, 0));
            e.0 += l.bytes;
            e.1 += l.included;
            e.2 += l.billable;
        }
        for qa in &alloc.quota {
            let e = st
                .quota
                .entry((qa.account.clone(), qa.period_start))
                .or_insert((0, 0));
            e.0 += qa.included;
            e.1 += qa.billable;
        }
        plan
    }

    const ACCOUNTS: [&str; 3] = [A, B, "7d9e8f0a-1b2c-4d3e-8f4a-5b6c7d8e9f0a"];

    /// Random exporter streams: per (node, account) counters that grow, sometimes reset, are
    /// sampled several times a minute around a month boundary; some samples are duplicated,
    /// some ids are bad, and the snapshots are shuffled and cut into calls.
    fn stream() -> impl Strategy<Value = (Vec<Snapshot>, Vec<usize>)> {
        let sample = (0usize..4, 0i64..3, 0u8..20, 0i64..5_000);
        (
            prop::collection::vec(
                (0usize..2, 0i64..240, prop::collection::vec(sample, 1..6)),
                1..40,
            ),
            prop::collection::vec(0usize..40, 0..6),
        )
            .prop_map(|(raw, cuts)| {
                let start = parse_rfc3339("2026-11-30T23:58:00Z").unwrap();
                let mut counters: HashMap<(usize, usize, i64), i64> = HashMap::new();
                let mut snaps: Vec<Snapshot> = raw
                    .into_iter()
                    .map(|(node, step, samples)| Snapshot {
                        node_id: format!("n{node}"),
                        env: if node == 1 {
                            "prod".into()
                        } else {
                            String::new()
                        },
                        sampled_at: start + step * 1_500_000,
                        samples: samples
                            .into_iter()
                            .map(|(acc, _, reset, grow)| {
                                let c = counters.entry((node, acc, step)).or_insert(0);
                                *c = if reset == 0 {
                                    grow / 10
                                } else {
                                    step * 1000 + grow
                                };
                                SampleIn {
                                    account_id: if acc == 3 {
                                        "nope".into()
                                    } else {
                                        ACCOUNTS[acc].into()
                                    },
                                    cumulative_bytes: *c,
                                }
                            })
                            .collect(),
                    })
                    .collect();
                // duplicates
                if let Some(first) = snaps.first().cloned() {
                    snaps.push(first);
                }
                (snaps, cuts)
            })
    }

    fn split(snaps: &[Snapshot], cuts: &[usize]) -> Vec<Vec<Snapshot>> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (snaps.len() + 1)).collect();
        cuts.push(0);
        cuts.push(snaps.len());
        cuts.sort_unstable();
        cuts.dedup();
        cuts.windows(2)
            .map(|w| snaps[w[0]..w[1]].to_vec())
            .collect()
    }

    fn rules_of(i: u8) -> Rules {
        Rules {
            first: if i & 1 == 0 {
                FirstSample::Full
            } else {
                FirstSample::Baseline
            },
            reset: if i & 2 == 0 {
                ResetPolicy::Skip
            } else {
                ResetPolicy::FromZero
            },
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Call by call, the core and the oracle agree on every checkpoint, bucket, ledger row
        /// and quota row, for every policy.
        #[test]
        fn core_matches_oracle((snaps, cuts) in stream(), r in 0u8..4, quota in 0i64..20_000) {
            let rules = rules_of(r);
            let quota_of = |a: &str| if a == A { quota } else { quota / 3 };
            let (mut want, mut got) = (State::default(), State::default());
            for call in split(&snaps, &cuts) {
                oracle_call(&mut want, &call, rules, &quota_of);
                core_call(&mut got, &call, rules, &quota_of);
                prop_assert_eq!(&got, &want);
            }
        }

        /// Ingesting the same snapshots again, in any grouping, shuffled, changes nothing, and
        /// counts every valid sample as a replay.
        #[test]
        fn reingest_changes_nothing((snaps, cuts) in stream(), again in prop::collection::vec(0usize..40, 0..6), seed in any::<u64>(), r in 0u8..4) {
            let rules = rules_of(r);
            let quota_of = |_: &str| 1000;
            let mut st = State::default();
            for call in split(&snaps, &cuts) {
                core_call(&mut st, &call, rules, &quota_of);
            }
            let before = st.clone();
            let mut shuffled = snaps.clone();
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            for call in split(&shuffled, &again) {
                let p = core_call(&mut st, &call, rules, &quota_of);
                prop_assert_eq!(p.replayed, p.processed);
                prop_assert!(p.deltas.is_empty() && p.checkpoints.is_empty());
            }
            prop_assert_eq!(st, before);
        }

        /// Invariants of any state: every ledger row is its bucket (bytes = included + billable),
        /// every quota row is the sum of its ledger rows, and included never exceeds the quota.
        /// With counters that never reset, each (node, account) bills exactly its last value
        /// (the counter started at zero), however the stream is cut into calls.
        #[test]
        fn ledger_quota_invariants((snaps, cuts) in stream(), quota in 0i64..5_000) {
            let rules = rules_of(0);
            let quota_of = |_: &str| quota;
            let mut st = State::default();
            for call in split(&snaps, &cuts) {
                core_call(&mut st, &call, rules, &quota_of);
            }
            for (k, l) in &st.ledger {
                prop_assert_eq!(l.0, l.1 + l.2);
                prop_assert_eq!(st.minutes[k], l.0);
            }
            let mut sums: BTreeMap<(String, i64), (i64, i64)> = BTreeMap::new();
            for ((_, a, m), l) in &st.ledger {
                let e = sums.entry((a.clone(), month_of(*m))).or_insert((0, 0));
                e.0 += l.1;
                e.1 += l.2;
            }
            prop_assert_eq!(&sums, &st.quota);
            for (inc, _) in st.quota.values() {
                prop_assert!(*inc <= quota);
            }
        }

        /// Monotonic counters in time order: the bytes billed per (node, account) equal the
        /// last value, in any grouping into calls.
        #[test]
        fn monotonic_counters_bill_their_last_value(steps in prop::collection::vec((0usize..2, 1i64..1_000), 1..60), cuts in prop::collection::vec(0usize..60, 0..8)) {
            let start = parse_rfc3339("2026-11-30T23:55:00Z").unwrap();
            let mut value = [0i64; 2];
            let snaps: Vec<Snapshot> = steps.iter().enumerate().map(|(i, (acc, grow))| {
                value[*acc] += grow;
                Snapshot { node_id: "n".into(), env: String::new(), sampled_at: start + i as i64 * 7_000_000,
                    samples: vec![SampleIn { account_id: ACCOUNTS[*acc].into(), cumulative_bytes: value[*acc] }] }
            }).collect();
            let mut st = State::default();
            for call in split(&snaps, &cuts) {
                core_call(&mut st, &call, RULES, &|_| 0);
            }
            for (acc, v) in value.iter().enumerate() {
                let billed: i64 = st.ledger.iter().filter(|((_, a, _), _)| a == ACCOUNTS[acc]).map(|(_, l)| l.0).sum();
                prop_assert_eq!(billed, *v);
            }
        }

        /// decimal_sign agrees with Rust's own float parsing on the sign of simple decimals.
        #[test]
        fn decimal_sign_matches_parse(int in 0u32..1000, frac in 0u32..1000, neg in any::<bool>()) {
            let s = format!("{}{int}.{frac:03}", if neg { "-" } else { "" });
            let f: f64 = s.parse().unwrap();
            let want = if f == 0.0 { 0 } else if f < 0.0 { -1 } else { 1 };
            prop_assert_eq!(decimal_sign(&s), Some(want));
        }
    }
}

//! The operations queue (SPEC §5) as plain Rust: checking operations given as JSON, the retry
//! schedule (exponential backoff with optional jitter, dead letters after the last retry), and
//! the filters, ordering and paging of `ops_operations_query`, turned into SQL text with
//! positional parameters.
//!
//! Timestamps are PostgreSQL `timestamptz` values (microseconds since 2000-01-01 UTC).

use crate::cores::records::{kind, parse_rfc3339, shown};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::fmt::Write as _;
use thiserror::Error;

/// The most operations one `ops_op_save_batch` call or one claim handles.
pub const MAX_BATCH: i64 = 10_000;
/// The longest a retry is ever put off, whatever `retry_base · 2^n` comes to: 100 years.
pub const MAX_DELAY_US: i64 = 100 * 365 * 86_400 * 1_000_000;
/// `ops_operations_query` page sizes are clamped to this range.
pub const PAGE_SIZE_RANGE: (i32, i32) = (1, 1000);
pub const DEFAULT_PAGE_SIZE: i32 = 20;
/// The columns `ops_operations_query` may order by (the seed's whitelist).
pub const ORDER_COLUMNS: [&str; 3] = ["created_at", "timestamp", "op_id"];

#[derive(Debug, Clone, PartialEq, Error)]
pub enum QueueError {
    #[error("{at} must be a JSON array of operation objects, not {got}")]
    NotArray { at: &'static str, got: &'static str },
    #[error("{at} must be a JSON object, not {got}")]
    NotObject { at: String, got: &'static str },
    #[error("{at}.{field} is missing")]
    Missing { at: String, field: &'static str },
    #[error("{at}.{field} must be {expected}, not {got}")]
    WrongType {
        at: String,
        field: &'static str,
        expected: &'static str,
        got: String,
    },
    #[error("{at}.{field} is not an integer: {value}")]
    NotInteger {
        at: String,
        field: &'static str,
        value: String,
    },
    #[error("{at}.{field} is out of range: {value} (accepted: {range})")]
    OutOfRange {
        at: String,
        field: &'static str,
        value: String,
        range: &'static str,
    },
    #[error("{at}.{field} is not an RFC 3339 timestamp: {value} ({why})")]
    BadTime {
        at: String,
        field: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("{at} must be NOT_TRUSTLOGGED or TRUSTLOGGED, got {got}")]
    Status { at: String, got: String },
    #[error("op.trustlog_status is {in_op} but status is {arg}")]
    StatusConflict { in_op: String, arg: String },
    #[error("operation op_id \"{op_id}\" already exists ({at})")]
    Duplicate { op_id: String, at: String },
    #[error("a batch holds at most {MAX_BATCH} operations, got {0}")]
    TooMany(usize),
    #[error("filter must be a JSON object, not {0}")]
    FilterNotObject(&'static str),
    #[error("filter has no key \"{0}\"")]
    UnknownFilter(String),
    #[error("order_by must be one of created_at, timestamp, op_id; got \"{0}\"")]
    OrderBy(String),
    #[error("setting {name} must be {accepted}, got \"{value}\"")]
    Setting {
        name: &'static str,
        value: String,
        accepted: &'static str,
    },
}

/// How PostgreSQL should see a [`QueueError`] (kept here so the rule is tested with the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    InvalidParameter,
    TextRepresentation,
    DatetimeFormat,
    OutOfRange,
    UniqueViolation,
}

impl QueueError {
    pub fn class(&self) -> Class {
        match self {
            QueueError::NotInteger { .. } => Class::TextRepresentation,
            QueueError::BadTime { .. } => Class::DatetimeFormat,
            QueueError::OutOfRange { .. } => Class::OutOfRange,
            QueueError::Duplicate { .. } => Class::UniqueViolation,
            _ => Class::InvalidParameter,
        }
    }

    /// Where in the input the error is (`op`, `ops[i]`, `filter`), when it is in the input.
    fn at(&self) -> Option<&str> {
        match self {
            QueueError::NotObject { at, .. }
            | QueueError::Missing { at, .. }
            | QueueError::WrongType { at, .. }
            | QueueError::NotInteger { at, .. }
            | QueueError::OutOfRange { at, .. }
            | QueueError::BadTime { at, .. }
            | QueueError::Status { at, .. } => Some(at),
            _ => None,
        }
    }

    pub fn hint(&self) -> Option<String> {
        if self.at().is_some_and(|at| at.starts_with("filter")) {
            return Some(format!(
                "Filter keys: {}; time_from and time_to are RFC 3339 times, op_code an integer.",
                FILTER_KEYS.join(", ")
            ));
        }
        match self {
            QueueError::NotArray { .. }
            | QueueError::NotObject { .. }
            | QueueError::Missing { .. }
            | QueueError::WrongType { .. }
            | QueueError::NotInteger { .. }
            | QueueError::OutOfRange { .. }
            | QueueError::BadTime { .. } => Some(
                "An operation needs op_id (a non-empty string); timestamp (RFC 3339, default now), op_code (integer) and the strings op_actor, doid, producer_id, op_source, do_prefix, do_repository are optional, as are request_body_hash, response_body_hash, client_ip, server_ip (string or null) and trustlog_status. Indexes count from 0; nothing was written."
                    .into(),
            ),
            QueueError::UnknownFilter(_) | QueueError::FilterNotObject(_) => Some(format!(
                "Filter keys: {}; time_from and time_to are RFC 3339 times, op_code an integer.",
                FILTER_KEYS.join(", ")
            )),
            QueueError::Duplicate { .. } => {
                Some("op_id is the primary key of opsmeter.operations; nothing was written.".into())
            }
            _ => None,
        }
    }
}

/// `trustlog_status` of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    NotTrustlogged,
    Trustlogged,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::NotTrustlogged => "NOT_TRUSTLOGGED",
            Status::Trustlogged => "TRUSTLOGGED",
        }
    }

    pub fn parse(s: &str, at: &str) -> Result<Status, QueueError> {
        match s {
            "NOT_TRUSTLOGGED" => Ok(Status::NotTrustlogged),
            "TRUSTLOGGED" => Ok(Status::Trustlogged),
            _ => Err(QueueError::Status {
                at: at.to_string(),
                got: format!("\"{s}\""),
            }),
        }
    }
}

/// One operation, checked. `timestamp` None means "now" (the database's clock).
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub op_id: String,
    pub op_actor: String,
    pub doid: String,
    pub producer_id: String,
    pub request_body_hash: Option<String>,
    pub response_body_hash: Option<String>,
    pub op_source: String,
    pub op_code: i32,
    pub do_prefix: String,
    pub do_repository: String,
    pub client_ip: Option<String>,
    pub server_ip: Option<String>,
    pub trustlog_status: Status,
    pub timestamp: Option<i64>,
}

struct Element<'a> {
    at: String,
    obj: &'a Map<String, Value>,
}

impl<'a> Element<'a> {
    fn get(&self, field: &'static str) -> Option<&'a Value> {
        self.obj.get(field).filter(|v| !v.is_null())
    }

    fn wrong(&self, field: &'static str, expected: &'static str, v: &Value) -> QueueError {
        QueueError::WrongType {
            at: self.at.clone(),
            field,
            expected,
            got: format!("{} {}", kind(v), shown(v)),
        }
    }

    fn text(&self, field: &'static str) -> Result<Option<String>, QueueError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.wrong(field, "a string", v)),
        }
    }

    fn op_id(&self) -> Result<String, QueueError> {
        match self.get("op_id") {
            None => Err(QueueError::Missing {
                at: self.at.clone(),
                field: "op_id",
            }),
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(v) => Err(self.wrong("op_id", "a non-empty string", v)),
        }
    }

    /// An integer as PostgreSQL's `::integer` takes it: a JSON integer or a string of one;
    /// anything else that is a number or a string is not an integer (22P02), a whole number
    /// outside the int4 range is out of range (22003).
    fn int4(&self, field: &'static str) -> Result<i32, QueueError> {
        let Some(v) = self.get(field) else {
            return Ok(0);
        };
        let parsed: Option<i128> = match v {
            Value::Number(n) => n.as_str().trim().parse::<i128>().ok(),
            Value::String(s) => s.trim().parse::<i128>().ok(),
            _ => return Err(self.wrong(field, "an integer", v)),
        };
        match parsed {
            Some(i) => i32::try_from(i).map_err(|_| QueueError::OutOfRange {
                at: self.at.clone(),
                field,
                value: shown(v),
                range: "-2147483648 .. 2147483647",
            }),
            // a long run of digits that does not fit even an i128 is still a whole number
            None if is_whole_number_text(v) => Err(QueueError::OutOfRange {
                at: self.at.clone(),
                field,
                value: shown(v),
                range: "-2147483648 .. 2147483647",
            }),
            None => Err(QueueError::NotInteger {
                at: self.at.clone(),
                field,
                value: shown(v),
            }),
        }
    }

    fn time(&self, field: &'static str) -> Result<Option<i64>, QueueError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => {
                parse_rfc3339(s)
                    .map(Some)
                    .map_err(|why| QueueError::BadTime {
                        at: self.at.clone(),
                        field,
                        value: shown(&Value::String(s.clone())),
                        why,
                    })
            }
            Some(v) => Err(self.wrong(field, "an RFC 3339 string", v)),
        }
    }

    fn status(&self, default: Status) -> Result<Status, QueueError> {
        match self.get("trustlog_status") {
            None => Ok(default),
            Some(Value::String(s)) => Status::parse(s, &format!("{}.trustlog_status", self.at)),
            Some(v) => Err(self.wrong("trustlog_status", "a string", v)),
        }
    }

    fn operation(&self, default_status: Status) -> Result<Operation, QueueError> {
        Ok(Operation {
            op_id: self.op_id()?,
            op_actor: self.text("op_actor")?.unwrap_or_default(),
            doid: self.text("doid")?.unwrap_or_default(),
            producer_id: self.text("producer_id")?.unwrap_or_default(),
            request_body_hash: self.text("request_body_hash")?,
            response_body_hash: self.text("response_body_hash")?,
            op_source: self.text("op_source")?.unwrap_or_default(),
            op_code: self.int4("op_code")?,
            do_prefix: self.text("do_prefix")?.unwrap_or_default(),
            do_repository: self.text("do_repository")?.unwrap_or_default(),
            client_ip: self.text("client_ip")?,
            server_ip: self.text("server_ip")?,
            trustlog_status: self.status(default_status)?,
            timestamp: self.time("timestamp")?,
        })
    }
}

fn is_whole_number_text(v: &Value) -> bool {
    let s = match v {
        Value::Number(n) => n.as_str().trim().to_string(),
        Value::String(s) => s.trim().to_string(),
        _ => return false,
    };
    let digits = s.strip_prefix(['-', '+']).unwrap_or(&s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn parse_json(text: &str) -> Value {
    // the text comes from jsonb_out, so it is valid JSON; arbitrary_precision keeps numbers exact
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// Checks one operation (`ops_op_save`). `status` is the function's argument; an op that also
/// carries `trustlog_status` must agree with it.
pub fn parse_op_text(text: &str, status: &str) -> Result<Operation, QueueError> {
    let status = Status::parse(status, "status")?;
    match parse_json(text) {
        Value::Object(obj) => {
            let el = Element {
                at: "op".into(),
                obj: &obj,
            };
            let op = el.operation(status)?;
            if op.trustlog_status != status {
                return Err(QueueError::StatusConflict {
                    in_op: op.trustlog_status.name().into(),
                    arg: status.name().into(),
                });
            }
            Ok(op)
        }
        v => Err(QueueError::NotObject {
            at: "op".into(),
            got: kind(&v),
        }),
    }
}

/// Checks a JSON array of operations (`ops_op_save_batch`): the first bad element, in array
/// order, is the error; an op_id given twice in the batch is a duplicate at its second place.
pub fn parse_ops_text(text: &str) -> Result<Vec<Operation>, QueueError> {
    let value = parse_json(text);
    let items = match &value {
        Value::Array(items) => items,
        v => {
            return Err(QueueError::NotArray {
                at: "ops",
                got: kind(v),
            })
        }
    };
    if items.len() as i64 > MAX_BATCH {
        return Err(QueueError::TooMany(items.len()));
    }
    let mut seen = HashSet::with_capacity(items.len());
    let mut ops = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("ops[{i}]");
        let op = match item {
            Value::Object(obj) => Element {
                at: at.clone(),
                obj,
            }
            .operation(Status::NotTrustlogged)?,
            v => return Err(QueueError::NotObject { at, got: kind(v) }),
        };
        if !seen.insert(op.op_id.clone()) {
            return Err(QueueError::Duplicate {
                op_id: op.op_id,
                at: format!("{at}, given twice in the batch"),
            });
        }
        ops.push(op);
    }
    Ok(ops)
}

/// `retry_status` of a row in `opsmeter.retries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryStatus {
    Pending,
    Retrying,
    DeadLetter,
}

impl RetryStatus {
    pub fn name(self) -> &'static str {
        match self {
            RetryStatus::Pending => "PENDING",
            RetryStatus::Retrying => "RETRYING",
            RetryStatus::DeadLetter => "DEAD_LETTER",
        }
    }

    pub fn parse(s: &str) -> Option<RetryStatus> {
        match s {
            "PENDING" => Some(RetryStatus::Pending),
            "RETRYING" => Some(RetryStatus::Retrying),
            "DEAD_LETTER" => Some(RetryStatus::DeadLetter),
            _ => None,
        }
    }
}

/// The retry settings in force (`opsmeter.retry_base`, `opsmeter.max_retries`,
/// `opsmeter.retry_jitter`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub base_us: i64,
    pub max_retries: i32,
    pub jitter: f64,
}

/// What a failure does to an operation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Failure {
    /// `retry_count` afterwards: how many retries have failed (0 after the first failure).
    pub retry_count: i32,
    pub status: RetryStatus,
    /// How long until the next try; None for a dead letter.
    pub delay_us: Option<i64>,
}

/// `base · 2^n` microseconds, shortened by up to `jitter` of itself (`u` uniform in [0, 1)),
/// so a retry is never later than the schedule; saturates at [`MAX_DELAY_US`].
pub fn backoff_us(base_us: i64, n: i32, jitter: f64, u: f64) -> i64 {
    let base = base_us.max(0) as f64;
    let nominal = (base * 2f64.powi(n.clamp(0, 1100))).min(MAX_DELAY_US as f64);
    let j = jitter.clamp(0.0, 1.0) * u.clamp(0.0, 1.0);
    let d = (nominal * (1.0 - j)).round();
    (d as i64).clamp(0, MAX_DELAY_US)
}

/// The failure of an operation whose retry row holds `retry_count` = `prior` (None: no row, so
/// this is its first failure). n = retries so far: 0 on the first failure (delay = base), then
/// the number of retries made, each of which failed. When all `max_retries` retries have failed
/// too — the (max_retries + 1)-th failure — it is a dead letter.
pub fn on_failure(prior: Option<i32>, policy: &RetryPolicy, u: f64) -> Failure {
    let retries_so_far = match prior {
        None => 0,
        Some(c) => c.max(0).saturating_add(1),
    };
    if retries_so_far >= policy.max_retries.max(0) {
        return Failure {
            retry_count: retries_so_far,
            status: RetryStatus::DeadLetter,
            delay_us: None,
        };
    }
    Failure {
        retry_count: retries_so_far,
        status: if prior.is_none() {
            RetryStatus::Pending
        } else {
            RetryStatus::Retrying
        },
        delay_us: Some(backoff_us(policy.base_us, retries_so_far, policy.jitter, u)),
    }
}

/// Parses a fixed-length interval as PostgreSQL writes and reads them: terms such as
/// `1 minute`, `90s`, `1.5 hours`, `2 days 3 hours`, `500 milliseconds` (units us, ms, s, min,
/// h, d, w and their long names), `HH:MM[:SS[.fff]]`, or a bare number of seconds. Months and
/// years are refused: they have no fixed length. Returns microseconds.
pub fn parse_interval_us(s: &str) -> Result<i64, &'static str> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty");
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let sign = if let Some(r) = rest.strip_prefix('-') {
            rest = r;
            -1.0
        } else {
            rest = rest.strip_prefix('+').unwrap_or(rest);
            1.0
        };
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        if num.is_empty() {
            return Err("expected a number");
        }
        if num.contains(':') {
            let parts: Vec<&str> = num.split(':').collect();
            if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
                return Err("expected HH:MM or HH:MM:SS");
            }
            let h: f64 = parts[0].parse().map_err(|_| "bad hours")?;
            let m: f64 = parts[1].parse().map_err(|_| "bad minutes")?;
            let sec: f64 = match parts.get(2) {
                Some(p) => p.parse().map_err(|_| "bad seconds")?,
                None => 0.0,
            };
            total += sign * ((h * 60.0 + m) * 60.0 + sec) * 1e6;
            rest = after;
            continue;
        }
        let value: f64 = num.parse().map_err(|_| "bad number")?;
        let after = after.trim_start();
        let unit_len = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, tail) = after.split_at(unit_len);
        let scale = match unit.to_ascii_lowercase().as_str() {
            "" | "s" | "sec" | "secs" | "second" | "seconds" => 1e6,
            "us" | "usec" | "usecs" | "microsecond" | "microseconds" => 1.0,
            "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => 1e3,
            "m" | "min" | "mins" | "minute" | "minutes" => 60e6,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600e6,
            "d" | "day" | "days" => 86_400e6,
            "w" | "week" | "weeks" => 7.0 * 86_400e6,
            "mon" | "mons" | "month" | "months" | "y" | "year" | "years" => {
                return Err("months and years have no fixed length; use days")
            }
            _ => return Err("unknown unit"),
        };
        if unit.is_empty() && !tail.trim().is_empty() {
            return Err("expected a unit after the number");
        }
        total += sign * value * scale;
        rest = tail;
    }
    if !total.is_finite() || total.abs() > 9.2e18 {
        return Err("out of range");
    }
    Ok(total.round() as i64)
}

/// `opsmeter.retry_base` in microseconds: a positive fixed-length interval.
pub fn retry_base(text: &str) -> Result<i64, QueueError> {
    match parse_interval_us(text).ok() {
        Some(us) if us > 0 => Ok(us),
        _ => Err(QueueError::Setting {
            name: "opsmeter.retry_base",
            value: text.to_string(),
            accepted: "a positive interval such as '1 minute' or '500 milliseconds'",
        }),
    }
}

/// The filter keys of `ops_operations_query`, as the seed's OperationQueryRequest has them.
pub const FILTER_KEYS: [&str; 13] = [
    "op_id",
    "op_source",
    "op_code",
    "doid",
    "producer_id",
    "op_actor",
    "do_prefix",
    "do_repository",
    "trustlog_status",
    "client_ip",
    "server_ip",
    "time_from",
    "time_to",
];

/// A value bound to a positional parameter of the query SQL.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Text(String),
    Int(i32),
    Time(i64),
}

/// `ops_operations_query` turned into SQL: `count_sql` counts the matches, `page_sql` returns a
/// page of them; both take `params` as $1 .. $n, and `page_sql` also takes LIMIT $n+1 and
/// OFFSET $n+2.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPlan {
    pub count_sql: String,
    pub page_sql: String,
    pub params: Vec<Param>,
    pub page_size: i32,
    pub page_number: i32,
    pub offset: i64,
}

/// `s` as a LIKE pattern matching any text that contains it: `\`, `%` and `_` in the input
/// are escaped (the pattern uses LIKE's default escape character `\`).
pub fn like_contains(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('%');
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// Page size clamped to 1 .. 1000 (NULL: 20); page number at least 1 (NULL: 1).
pub fn paging(page_size: Option<i32>, page_number: Option<i32>) -> (i32, i32) {
    let size = page_size
        .unwrap_or(DEFAULT_PAGE_SIZE)
        .clamp(PAGE_SIZE_RANGE.0, PAGE_SIZE_RANGE.1);
    (size, page_number.unwrap_or(1).max(1))
}

/// ceil(total / page_size).
pub fn total_pages(total: i64, page_size: i32) -> i64 {
    let size = i64::from(page_size.max(1));
    (total.max(0) + size - 1) / size
}

/// The columns a query page returns, in order (the table's seed columns).
pub const OPERATION_COLUMNS: &str = "o.op_id, o.op_actor, o.doid, o.producer_id, o.request_body_hash, o.response_body_hash, o.op_source, o.op_code, o.do_prefix, o.do_repository, o.client_ip, o.server_ip, o.trustlog_status, o.\"timestamp\", o.created_at";

/// Builds the query for a filter object (the text of a jsonb, or None for no filter). String
/// filters that are empty are ignored, as in the seed; `doid` and `do_prefix` match as
/// "contains" with LIKE metacharacters in the input escaped; the rest match exactly;
/// `time_from` / `time_to` bound `timestamp` inclusively.
pub fn plan_query(
    ext_table: &str,
    filter: Option<&str>,
    page_size: Option<i32>,
    page_number: Option<i32>,
    order_by: Option<&str>,
    descending: Option<bool>,
) -> Result<QueryPlan, QueueError> {
    let order_by = order_by.unwrap_or("created_at");
    if !ORDER_COLUMNS.contains(&order_by) {
        return Err(QueueError::OrderBy(order_by.to_string()));
    }
    let value = filter.map(parse_json).unwrap_or(Value::Null);
    let empty = Map::new();
    let obj = match &value {
        Value::Null => &empty,
        Value::Object(o) => o,
        v => return Err(QueueError::FilterNotObject(kind(v))),
    };
    let el = Element {
        at: "filter".into(),
        obj,
    };
    let mut conds: Vec<String> = Vec::new();
    let mut params: Vec<Param> = Vec::new();
    // keys in the seed's order, so the SQL (and its plan cache entry) is the same for a filter
    for key in FILTER_KEYS {
        if el.get(key).is_none() {
            continue;
        }
        let (cond, param) = match key {
            "op_code" => ("o.op_code = $", Param::Int(el.int4("op_code")?)),
            "trustlog_status" => {
                let s = match el.get(key) {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => return Err(el.wrong(key, "a string", v)),
                    None => unreachable!("checked above"),
                };
                let st = Status::parse(&s, "filter.trustlog_status")?;
                ("o.trustlog_status = $", Param::Text(st.name().into()))
            }
            "time_from" | "time_to" => {
                let t = el.time(key)?.expect("checked above");
                let op = if key == "time_from" { ">=" } else { "<=" };
                params.push(Param::Time(t));
                conds.push(format!("o.\"timestamp\" {op} ${}", params.len()));
                continue;
            }
            _ => {
                let s = el.text(key)?.unwrap_or_default();
                if s.is_empty() {
                    continue;
                }
                if key == "doid" || key == "do_prefix" {
                    params.push(Param::Text(like_contains(&s)));
                    conds.push(format!("o.{key} LIKE ${}", params.len()));
                    continue;
                }
                params.push(Param::Text(s));
                conds.push(format!("o.{key} = ${}", params.len()));
                continue;
            }
        };
        params.push(param);
        conds.push(format!("{cond}{}", params.len()));
    }
    if let Some(k) = obj.keys().find(|k| !FILTER_KEYS.contains(&k.as_str())) {
        return Err(QueueError::UnknownFilter(k.clone()));
    }
    let (size, number) = paging(page_size, page_number);
    let mut where_sql = String::new();
    if !conds.is_empty() {
        where_sql = format!(" WHERE {}", conds.join(" AND "));
    }
    let dir = if descending.unwrap_or(false) {
        "DESC"
    } else {
        "ASC"
    };
    let mut order = format!("o.\"{order_by}\" {dir}");
    if order_by != "op_id" {
        // a total order, so pages neither repeat nor skip rows with equal times
        let _ = write!(order, ", o.op_id {dir}");
    }
    let n = params.len();
    Ok(QueryPlan {
        count_sql: format!("SELECT pg_catalog.count(*) FROM {ext_table} o{where_sql}"),
        page_sql: format!(
            "SELECT {OPERATION_COLUMNS} FROM {ext_table} o{where_sql} ORDER BY {order} LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        ),
        params,
        page_size: size,
        page_number: number,
        offset: (i64::from(number) - 1) * i64::from(size),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const POLICY: RetryPolicy = RetryPolicy {
        base_us: 60_000_000,
        max_retries: 5,
        jitter: 0.0,
    };

    fn op(json: &str) -> Result<Operation, QueueError> {
        parse_op_text(json, "NOT_TRUSTLOGGED")
    }

    #[test]
    fn a_full_operation_parses() {
        let o = op(
            r#"{"op_id": "a1", "op_actor": "alice", "doid": "10.1/x", "producer_id": "p",
                       "request_body_hash": "rq", "response_body_hash": null, "op_source": "IRP",
                       "op_code": 7, "do_prefix": "10.1", "do_repository": "repo",
                       "client_ip": "10.0.0.1", "server_ip": null,
                       "timestamp": "2026-11-22T10:15:00.5Z", "extra": 1}"#,
        )
        .unwrap();
        assert_eq!(o.op_id, "a1");
        assert_eq!(o.op_actor, "alice");
        assert_eq!(o.request_body_hash.as_deref(), Some("rq"));
        assert_eq!(o.response_body_hash, None);
        assert_eq!(o.op_code, 7);
        assert_eq!(o.client_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(o.server_ip, None);
        assert_eq!(o.trustlog_status, Status::NotTrustlogged);
        assert_eq!(
            o.timestamp,
            Some(parse_rfc3339("2026-11-22T10:15:00.5Z").unwrap())
        );
    }

    #[test]
    fn optional_fields_default() {
        let o = op(r#"{"op_id": "x"}"#).unwrap();
        assert_eq!(o.op_actor, "");
        assert_eq!(o.op_code, 0);
        assert_eq!(o.timestamp, None);
        let t = parse_op_text(r#"{"op_id": "x"}"#, "TRUSTLOGGED").unwrap();
        assert_eq!(t.trustlog_status, Status::Trustlogged);
    }

    #[test]
    fn op_code_follows_integer_casts() {
        assert_eq!(
            op(r#"{"op_id": "x", "op_code": "42"}"#).unwrap().op_code,
            42
        );
        assert_eq!(op(r#"{"op_id": "x", "op_code": -7}"#).unwrap().op_code, -7);
        for bad in [r#""abc""#, "1.5", r#""1.5""#, "1e3"] {
            let e = op(&format!(r#"{{"op_id": "x", "op_code": {bad}}}"#)).unwrap_err();
            assert_eq!(e.class(), Class::TextRepresentation, "{bad}: {e}");
            assert!(e.to_string().starts_with("op.op_code"), "{e}");
        }
        for big in [
            "2147483648",
            "-2147483649",
            "123456789012345678901234567890123456789012",
        ] {
            let e = op(&format!(r#"{{"op_id": "x", "op_code": {big}}}"#)).unwrap_err();
            assert_eq!(e.class(), Class::OutOfRange, "{big}: {e}");
        }
        let e = op(r#"{"op_id": "x", "op_code": true}"#).unwrap_err();
        assert_eq!(e.class(), Class::InvalidParameter);
    }

    #[test]
    fn bad_operations_name_their_field() {
        let cases = [
            (
                r#"{"op_actor": "a"}"#,
                "op.op_id is missing",
                Class::InvalidParameter,
            ),
            (
                r#"{"op_id": ""}"#,
                "op.op_id must be a non-empty string",
                Class::InvalidParameter,
            ),
            (
                r#"{"op_id": 5}"#,
                "op.op_id must be a non-empty string",
                Class::InvalidParameter,
            ),
            (
                r#"{"op_id": "x", "doid": 1}"#,
                "op.doid must be a string",
                Class::InvalidParameter,
            ),
            (
                r#"{"op_id": "x", "timestamp": "2026-02-30T00:00:00Z"}"#,
                "op.timestamp is not an RFC 3339",
                Class::DatetimeFormat,
            ),
            (
                r#"{"op_id": "x", "timestamp": 5}"#,
                "op.timestamp must be an RFC 3339 string",
                Class::InvalidParameter,
            ),
            (
                r#"{"op_id": "x", "trustlog_status": "DONE"}"#,
                "op.trustlog_status must be NOT_TRUSTLOGGED or TRUSTLOGGED",
                Class::InvalidParameter,
            ),
            (
                r#"[1]"#,
                "op must be a JSON object",
                Class::InvalidParameter,
            ),
        ];
        for (json, msg, class) in cases {
            let e = op(json).unwrap_err();
            assert!(e.to_string().starts_with(msg), "{json}: {e}");
            assert_eq!(e.class(), class, "{json}");
        }
        let e = parse_op_text(
            r#"{"op_id": "x", "trustlog_status": "TRUSTLOGGED"}"#,
            "NOT_TRUSTLOGGED",
        )
        .unwrap_err();
        assert!(matches!(e, QueueError::StatusConflict { .. }));
        let e = parse_op_text(r#"{"op_id": "x"}"#, "done").unwrap_err();
        assert_eq!(
            e.to_string(),
            "status must be NOT_TRUSTLOGGED or TRUSTLOGGED, got \"done\""
        );
    }

    #[test]
    fn batches_name_the_element() {
        let e = parse_ops_text(r#"[{"op_id": "a"}, {"op_id": "b", "op_code": "x"}]"#).unwrap_err();
        assert_eq!(e.to_string(), "ops[1].op_code is not an integer: \"x\"");
        let e = parse_ops_text(r#"[{"op_id": "a"}, 3]"#).unwrap_err();
        assert_eq!(e.to_string(), "ops[1] must be a JSON object, not a number");
        let e = parse_ops_text(r#"{"op_id": "a"}"#).unwrap_err();
        assert!(matches!(e, QueueError::NotArray { .. }));
        let e = parse_ops_text(r#"[{"op_id": "a"}, {"op_id": "b"}, {"op_id": "a"}]"#).unwrap_err();
        assert_eq!(e.class(), Class::UniqueViolation);
        assert!(
            e.to_string().contains("\"a\"") && e.to_string().contains("ops[2]"),
            "{e}"
        );
        assert_eq!(parse_ops_text("[]").unwrap(), vec![]);
        let many = format!(
            "[{}]",
            vec![r#"{"op_id": "x"}"#; MAX_BATCH as usize + 1].join(",")
        );
        assert!(matches!(parse_ops_text(&many), Err(QueueError::TooMany(_))));
    }

    #[test]
    fn the_default_schedule_is_1_2_4_8_16_minutes_then_dead() {
        let mut prior = None;
        let mut delays = Vec::new();
        let mut failures = 0;
        loop {
            let f = on_failure(prior, &POLICY, 0.5);
            failures += 1;
            match f.delay_us {
                Some(d) => delays.push(d / 60_000_000),
                None => {
                    assert_eq!(f.status, RetryStatus::DeadLetter);
                    assert_eq!(f.retry_count, 5);
                    break;
                }
            }
            assert_eq!(
                f.status,
                if prior.is_none() {
                    RetryStatus::Pending
                } else {
                    RetryStatus::Retrying
                }
            );
            prior = Some(f.retry_count);
        }
        assert_eq!(delays, vec![1, 2, 4, 8, 16]);
        assert_eq!(failures, POLICY.max_retries + 1);
    }

    #[test]
    fn no_retries_means_the_first_failure_is_dead() {
        let p = RetryPolicy {
            max_retries: 0,
            ..POLICY
        };
        let f = on_failure(None, &p, 0.0);
        assert_eq!(f.status, RetryStatus::DeadLetter);
        assert_eq!(f.retry_count, 0);
    }

    #[test]
    fn huge_exponents_saturate() {
        assert_eq!(backoff_us(60_000_000, 60, 0.0, 0.0), MAX_DELAY_US);
        assert_eq!(backoff_us(i64::MAX, 3, 0.0, 0.0), MAX_DELAY_US);
        let p = RetryPolicy {
            max_retries: 1000,
            ..POLICY
        };
        assert_eq!(on_failure(Some(998), &p, 0.0).delay_us, Some(MAX_DELAY_US));
    }

    #[test]
    fn intervals_parse_like_postgres() {
        let cases: [(&str, i64); 12] = [
            ("1 minute", 60_000_000),
            ("1min", 60_000_000),
            ("90s", 90_000_000),
            ("500 milliseconds", 500_000),
            ("1.5 hours", 5_400_000_000),
            ("2 days 3 hours", (2 * 86_400 + 3 * 3600) * 1_000_000),
            ("00:01:30", 90_000_000),
            ("01:02", 3_720_000_000),
            ("60", 60_000_000),
            ("250 us", 250),
            ("1 week", 7 * 86_400_000_000),
            ("1 hour -30 minutes", 1_800_000_000),
        ];
        for (text, us) in cases {
            assert_eq!(parse_interval_us(text), Ok(us), "{text}");
        }
        for bad in ["", "soon", "1 month", "5 parsecs", "1:2:3:4", "1 2"] {
            assert!(parse_interval_us(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn retry_base_must_be_positive() {
        assert_eq!(retry_base("1 minute"), Ok(60_000_000));
        assert!(retry_base("0").is_err());
        assert!(retry_base("-1 s").is_err());
        let e = retry_base("soon").unwrap_err();
        assert!(e.to_string().contains("opsmeter.retry_base"));
    }

    proptest! {
        /// With jitter j, a delay lies in [nominal·(1 − j), nominal] and never exceeds the cap.
        #[test]
        fn jitter_stays_within_its_band(base in 1i64..10_000_000_000, n in 0i32..40, j in 0.0f64..=1.0, u in 0.0f64..1.0) {
            let nominal = ((base as f64) * 2f64.powi(n)).min(MAX_DELAY_US as f64);
            let d = backoff_us(base, n, j, u) as f64;
            prop_assert!(d <= nominal.round() + 1.0);
            prop_assert!(d >= (nominal * (1.0 - j)).floor() - 1.0);
            prop_assert!(d >= 0.0 && d <= MAX_DELAY_US as f64);
        }

        /// Every schedule dead-letters after exactly max_retries + 1 failures, and without
        /// jitter each delay doubles the one before.
        #[test]
        fn dead_after_max_retries_plus_one(max in 0i32..30, base in 1i64..1_000_000) {
            let p = RetryPolicy { base_us: base, max_retries: max, jitter: 0.0 };
            let (mut prior, mut failures, mut last) = (None, 0, None::<i64>);
            loop {
                let f = on_failure(prior, &p, 0.3);
                failures += 1;
                let Some(d) = f.delay_us else { break };
                if let Some(l) = last { prop_assert_eq!(d, 2 * l); } else { prop_assert_eq!(d, base); }
                last = Some(d);
                prior = Some(f.retry_count);
                prop_assert!(failures <= max + 1);
            }
            prop_assert_eq!(failures, max + 1);
        }

        /// The LIKE pattern matches exactly the texts that contain the input (checked with a
        /// small LIKE matcher written from the SQL standard's rules).
        #[test]
        fn like_contains_matches_substrings(needle in "[a-c%_\\\\]{0,4}", hay in "[a-c%_\\\\]{0,8}") {
            let pat = like_contains(&needle);
            prop_assert_eq!(like(&pat, &hay), hay.contains(&needle));
        }
    }

    /// LIKE with `\` as the escape character: `%` any run, `_` one character.
    fn like(pat: &str, s: &str) -> bool {
        #[derive(Clone, Copy)]
        enum T {
            Any,
            One,
            Lit(char),
        }
        let mut toks = Vec::new();
        let mut it = pat.chars();
        while let Some(c) = it.next() {
            toks.push(match c {
                '%' => T::Any,
                '_' => T::One,
                '\\' => T::Lit(it.next().unwrap_or('\\')),
                c => T::Lit(c),
            });
        }
        let s: Vec<char> = s.chars().collect();
        fn go(t: &[T], s: &[char]) -> bool {
            match t.first() {
                None => s.is_empty(),
                Some(T::Any) => (0..=s.len()).any(|k| go(&t[1..], &s[k..])),
                Some(T::One) => !s.is_empty() && go(&t[1..], &s[1..]),
                Some(T::Lit(c)) => s.first() == Some(c) && go(&t[1..], &s[1..]),
            }
        }
        go(&toks, &s)
    }

    #[test]
    fn paging_is_clamped() {
        assert_eq!(paging(None, None), (20, 1));
        assert_eq!(paging(Some(0), Some(0)), (1, 1));
        assert_eq!(paging(Some(-5), Some(-2)), (1, 1));
        assert_eq!(paging(Some(5000), Some(3)), (1000, 3));
        assert_eq!(total_pages(0, 20), 0);
        assert_eq!(total_pages(20, 20), 1);
        assert_eq!(total_pages(21, 20), 2);
    }

    #[test]
    fn query_filters_become_parameters() {
        let p = plan_query(
            "opsmeter.operations",
            Some(r#"{"doid": "50%_off\\", "op_code": 3, "op_actor": "", "trustlog_status": "TRUSTLOGGED",
                     "time_from": "2026-01-01T00:00:00Z", "client_ip": null}"#),
            Some(10),
            Some(3),
            Some("timestamp"),
            Some(true),
        )
        .unwrap();
        assert_eq!(
            p.params,
            vec![
                Param::Int(3),
                Param::Text("%50\\%\\_off\\\\%".into()),
                Param::Text("TRUSTLOGGED".into()),
                Param::Time(parse_rfc3339("2026-01-01T00:00:00Z").unwrap()),
            ]
        );
        assert!(p.count_sql.ends_with(
            "WHERE o.op_code = $1 AND o.doid LIKE $2 AND o.trustlog_status = $3 AND o.\"timestamp\" >= $4"
        ), "{}", p.count_sql);
        assert!(
            p.page_sql
                .ends_with("ORDER BY o.\"timestamp\" DESC, o.op_id DESC LIMIT $5 OFFSET $6"),
            "{}",
            p.page_sql
        );
        assert_eq!((p.page_size, p.page_number, p.offset), (10, 3, 20));
        let all = plan_query("t", None, None, None, None, None).unwrap();
        assert!(all.params.is_empty());
        assert!(!all.count_sql.contains("WHERE"));
        assert!(all
            .page_sql
            .contains("ORDER BY o.\"created_at\" ASC, o.op_id ASC LIMIT $1 OFFSET $2"));
    }

    #[test]
    fn query_rejects_what_it_does_not_know() {
        let e =
            plan_query("t", None, None, None, Some("op_actor; DROP TABLE x"), None).unwrap_err();
        assert!(matches!(e, QueueError::OrderBy(_)));
        let e = plan_query("t", Some(r#"{"opid": "x"}"#), None, None, None, None).unwrap_err();
        assert_eq!(e.to_string(), "filter has no key \"opid\"");
        let e = plan_query("t", Some("[1]"), None, None, None, None).unwrap_err();
        assert!(matches!(e, QueueError::FilterNotObject(_)));
        let e = plan_query(
            "t",
            Some(r#"{"time_to": "yesterday"}"#),
            None,
            None,
            None,
            None,
        )
        .unwrap_err();
        assert_eq!(e.class(), Class::DatetimeFormat);
        assert!(
            e.hint().unwrap().starts_with("Filter keys"),
            "{:?}",
            e.hint()
        );
        let e = plan_query(
            "t",
            Some(r#"{"trustlog_status": "X"}"#),
            None,
            None,
            None,
            None,
        )
        .unwrap_err();
        assert_eq!(e.class(), Class::InvalidParameter);
    }
}

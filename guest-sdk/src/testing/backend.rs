//! The in-process stand-in for the host's side of the `sundial:job` imports.
//!
//! Its modules mirror the generated import modules function for function, so
//! the SDK calls `sys::database::query(...)` the same way on both sides. The
//! semantics follow the host's (`host/src/runtime/host.rs` and the
//! application database session): `$N` parameters, value decoding, error
//! classes, grants enforced by SQLite's `query_only`, the time zone rules.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode};

use super::{Level, LogRecord};
use crate::DbAccess;
use crate::wit::types as w;

/// Why a call reached no backend: SDK functions were called outside a run.
const NO_RUN: &str = "no sundial_guest::testing::TestRun is running on this thread";

/// The largest value `state::set` accepts.
pub(crate) const MAX_STATE_VALUE: usize = 1 << 20;
/// The longest key of the key-value state.
const MAX_STATE_KEY: usize = 256;
/// Keys a job's key-value state holds at most.
const MAX_STATE_KEYS: usize = 10_000;

/// What the running job may do: the host's session grant and key-value grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grant {
    pub(crate) database: Option<DbAccess>,
    pub(crate) key_value: bool,
}

/// One test run's database, log, clock and state.
pub(crate) struct Backend {
    conn: Result<Connection, String>,
    /// Set while a job runs; `None` for the test's own fixture and inspection
    /// statements, which may do anything.
    pub(crate) grant: Option<Grant>,
    pub(crate) now_ms: i64,
    /// The running job's name, for messages.
    pub(crate) job_name: String,
    pub(crate) logs: Vec<LogRecord>,
    pub(crate) progress: Option<(u64, Option<u64>)>,
    pub(crate) state: BTreeMap<String, Vec<u8>>,
    /// `(method, URL prefix, answer)`; the longest matching prefix answers.
    pub(crate) http: Vec<HttpStub>,
    pub(crate) http_requests: Vec<(crate::http::Method, String)>,
}

/// A canned HTTP answer.
pub(crate) struct HttpStub {
    pub(crate) method: Option<crate::http::Method>,
    pub(crate) prefix: String,
    pub(crate) answer: Result<crate::http::Response, crate::http::HttpError>,
}

impl Backend {
    /// A backend over a fresh private in-memory database, configured like the
    /// host's connections (foreign keys on).
    pub(crate) fn new() -> Backend {
        let conn = Connection::open_in_memory()
            .and_then(|c| c.execute_batch("PRAGMA foreign_keys = ON").map(|()| c))
            .map_err(|e| format!("cannot open an in-memory SQLite database: {e}"));
        Backend {
            conn,
            grant: None,
            now_ms: 0,
            job_name: String::new(),
            logs: Vec::new(),
            progress: None,
            state: BTreeMap::new(),
            http: Vec::new(),
            http_requests: Vec::new(),
        }
    }

    fn conn(&self) -> Result<&Connection, w::DbError> {
        self.conn.as_ref().map_err(|e| w::DbError::Other(e.clone()))
    }

    /// Runs statements without parameters (fixtures, transaction control).
    pub(crate) fn batch(&self, sql: &str) -> Result<(), w::DbError> {
        self.conn()?.execute_batch(sql).map_err(db_error)
    }

    /// Whether a transaction is open.
    pub(crate) fn in_transaction(&self) -> bool {
        self.conn.as_ref().is_ok_and(|c| !c.is_autocommit())
    }

    /// A statement returning rows, with no grant check.
    pub(crate) fn query(&self, sql: &str, params: &[w::Value]) -> Result<w::Rows, w::DbError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(sql).map_err(db_error)?;
        bind_all(&mut stmt, params)?;
        let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
        let n = columns.len();
        let mut out = Vec::new();
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next().map_err(db_error)? {
            let mut values = Vec::with_capacity(n);
            for i in 0..n {
                values.push(decode(row.get_ref(i).map_err(db_error)?));
            }
            out.push(values);
        }
        Ok(w::Rows { columns, rows: out })
    }

    /// A statement changing data, with no grant check; returns rows affected.
    pub(crate) fn execute(&self, sql: &str, params: &[w::Value]) -> Result<u64, w::DbError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(sql).map_err(db_error)?;
        bind_all(&mut stmt, params)?;
        let mut rows = stmt.raw_query();
        while rows.next().map_err(db_error)?.is_some() {}
        drop(rows);
        Ok(conn.changes())
    }

    /// The database access of the running job, or why it has none.
    fn access(&self) -> Result<DbAccess, w::DbError> {
        match self.grant.map(|g| g.database) {
            None => Ok(DbAccess::ReadWrite),
            Some(Some(access)) => Ok(access),
            Some(None) => Err(w::DbError::Denied(
                "this job has no database grant (set `database = \"read-only\"` or \"read-write\" for it in sundial.toml)"
                    .into(),
            )),
        }
    }

    /// Whether the running job may use its key-value state, and `key` is a
    /// valid key (1 to 256 bytes).
    fn key_value(&self, key: &str) -> Result<(), String> {
        if let Some(g) = self.grant
            && !g.key_value
        {
            return Err(format!(
                "key-value state is not granted to this job (set `state = true` under [jobs.{}] in sundial.toml)",
                self.job_name
            ));
        }
        if key.is_empty() {
            return Err("key-value state: the key is empty; keys are 1 to 256 bytes".into());
        }
        if key.len() > MAX_STATE_KEY {
            return Err(format!(
                "key-value state: the key {} is {} bytes long; keys are at most {MAX_STATE_KEY} bytes",
                shown(key),
                key.len()
            ));
        }
        Ok(())
    }
}

thread_local! {
    /// The backend the SDK's calls on this thread go to.
    static CURRENT: RefCell<Option<Rc<RefCell<Backend>>>> = const { RefCell::new(None) };
}

/// Makes a backend the current one until dropped; then the previous one (if
/// any) is current again.
pub(crate) struct Activation {
    previous: Option<Rc<RefCell<Backend>>>,
}

impl Activation {
    pub(crate) fn new(backend: &Rc<RefCell<Backend>>) -> Activation {
        let previous = CURRENT.with_borrow_mut(|c| c.replace(backend.clone()));
        Activation { previous }
    }
}

impl Drop for Activation {
    fn drop(&mut self) {
        let previous = self.previous.take();
        let _ = CURRENT.try_with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                *c = previous;
            }
        });
    }
}

/// Runs `f` on the current backend; `None` outside a run.
fn with<R>(f: impl FnOnce(&mut Backend) -> R) -> Option<R> {
    let backend = CURRENT.with_borrow(|c| c.clone())?;
    let mut backend = backend.try_borrow_mut().ok()?;
    Some(f(&mut backend))
}

/// The `log` interface.
pub(crate) mod log {
    use super::*;

    /// Records a message in the run's log and prints it (shown for failing tests).
    pub(crate) fn log(level: w::Level, message: &str) {
        let level = match level {
            w::Level::Trace => Level::Trace,
            w::Level::Debug => Level::Debug,
            w::Level::Info => Level::Info,
            w::Level::Warn => Level::Warn,
            w::Level::Error => Level::Error,
        };
        println!("{level} {message}");
        with(|b| b.logs.push(LogRecord { level, message: message.to_string() }));
    }
}

/// The `database` interface, with the host session's grant checks.
pub(crate) mod database {
    use super::*;

    /// Runs a statement that returns rows.
    pub(crate) fn query(sql: &str, params: &[w::Value]) -> Result<w::Rows, w::DbError> {
        with(|b| {
            b.access()?;
            b.query(sql, params)
        })
        .unwrap_or_else(|| Err(w::DbError::Denied(NO_RUN.into())))
    }

    /// Runs a statement that changes data.
    pub(crate) fn execute(sql: &str, params: &[w::Value]) -> Result<u64, w::DbError> {
        with(|b| {
            if b.access()? == DbAccess::ReadOnly {
                return Err(w::DbError::Denied("this job has read-only database access".into()));
            }
            b.execute(sql, params)
        })
        .unwrap_or_else(|| Err(w::DbError::Denied(NO_RUN.into())))
    }
}

/// The `progress` interface.
pub(crate) mod progress {
    use super::*;

    /// Keeps the last report.
    pub(crate) fn report(done: u64, total: Option<u64>) {
        with(|b| b.progress = Some((done, total)));
    }
}

/// The `time` interface: the run's fixed clock, and chrono-tz for zones.
pub(crate) mod time {
    use chrono::{DateTime, Datelike, LocalResult, NaiveDate, Offset, TimeZone, Timelike, Utc};
    use chrono_tz::Tz;

    use super::*;

    /// The run's clock; the system clock outside a run.
    pub(crate) fn now() -> w::Timestamp {
        with(|b| b.now_ms).unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
        })
    }

    pub(crate) fn parse_zone(zone: &str) -> Result<Tz, String> {
        zone.parse::<Tz>().map_err(|_| format!("unknown time zone {zone:?}"))
    }

    /// The local date and time of `instant` in `zone`.
    pub(crate) fn to_local(instant: w::Timestamp, zone: &str) -> Result<w::LocalDatetime, String> {
        let tz = parse_zone(zone)?;
        let utc = DateTime::<Utc>::from_timestamp_millis(instant)
            .ok_or_else(|| format!("instant {instant} is out of range"))?;
        let local = utc.with_timezone(&tz);
        Ok(w::LocalDatetime {
            year: local.year(),
            month: local.month() as u8,
            day: local.day() as u8,
            hour: local.hour() as u8,
            minute: local.minute() as u8,
            second: local.second() as u8,
            weekday: local.weekday().number_from_monday() as u8,
            offset_seconds: local.offset().fix().local_minus_utc(),
        })
    }

    /// The instant of a local time in `zone`: the first occurrence if
    /// repeated, the end of the gap if skipped by a DST change.
    pub(crate) fn from_local(l: w::LocalDatetime, zone: &str) -> Result<w::Timestamp, String> {
        let tz = parse_zone(zone)?;
        let naive = NaiveDate::from_ymd_opt(l.year, l.month.into(), l.day.into())
            .and_then(|d| d.and_hms_opt(l.hour.into(), l.minute.into(), l.second.into()))
            .ok_or_else(|| {
                format!(
                    "invalid local date-time {:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                    l.year, l.month, l.day, l.hour, l.minute, l.second
                )
            })?;
        match tz.from_local_datetime(&naive) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Ok(t.timestamp_millis()),
            LocalResult::None => {
                // In a gap: real gaps start and end on minute boundaries, so the
                // first valid local minute after `naive` is the transition.
                let minute = naive - chrono::Duration::seconds(i64::from(naive.second()));
                for k in 1..=(6 * 60) {
                    let probe = minute + chrono::Duration::minutes(k);
                    if let LocalResult::Single(t) | LocalResult::Ambiguous(t, _) = tz.from_local_datetime(&probe) {
                        return Ok(t.timestamp_millis());
                    }
                }
                Err(format!("local time {naive} does not exist in {zone}"))
            }
        }
    }

    /// Milliseconds since the Unix epoch of RFC 3339 text.
    pub(crate) fn parse_instant(text: &str) -> Result<i64, String> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.timestamp_millis())
            .map_err(|e| format!("invalid instant {text:?} ({e}); expected RFC 3339 such as 2026-03-01T00:10:00Z"))
    }
}

/// The `state` interface: the run's in-memory key-value map.
pub(crate) mod state {
    use super::*;

    /// Reads a value.
    pub(crate) fn get(key: &str) -> Result<Option<Vec<u8>>, String> {
        with(|b| {
            b.key_value(key)?;
            Ok(b.state.get(key).cloned())
        })
        .unwrap_or_else(|| Err(NO_RUN.into()))
    }

    /// Sets a value (at most 1 MiB).
    pub(crate) fn set(key: &str, value: &[u8]) -> Result<(), String> {
        with(|b| {
            b.key_value(key)?;
            if value.len() > MAX_STATE_VALUE {
                return Err(format!(
                    "key-value state: the value for {} is {} bytes; values are at most 1 MiB ({MAX_STATE_VALUE} bytes)",
                    shown(key),
                    value.len()
                ));
            }
            if !b.state.contains_key(key) && b.state.len() >= MAX_STATE_KEYS {
                return Err(format!(
                    "key-value state: the job already holds {} keys, the limit is {MAX_STATE_KEYS}; \
                     delete keys before adding {}",
                    b.state.len(),
                    shown(key)
                ));
            }
            b.state.insert(key.to_string(), value.to_vec());
            Ok(())
        })
        .unwrap_or_else(|| Err(NO_RUN.into()))
    }

    /// Removes a key; a missing key is not an error.
    pub(crate) fn delete(key: &str) -> Result<(), String> {
        with(|b| {
            b.key_value(key)?;
            b.state.remove(key);
            Ok(())
        })
        .unwrap_or_else(|| Err(NO_RUN.into()))
    }
}

/// `key` cut for messages.
fn shown(key: &str) -> String {
    if key.len() <= 40 {
        return format!("{key:?}");
    }
    let mut cut = 40;
    while !key.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{:?}… ({} bytes)", &key[..cut], key.len())
}

/// Outbound HTTP: canned answers only; nothing leaves the process.
pub(crate) mod http {
    use super::*;
    use crate::http::{HttpError, Method, Response};

    /// The answer to a request: the stub with the longest matching URL prefix
    /// (and method, if it names one), else a denial that says how to stub it.
    pub(crate) fn intercept(method: Method, url: &str, host: &str) -> Option<Result<Response, HttpError>> {
        let answer = with(|b| {
            b.http_requests.push((method, url.to_string()));
            b.http
                .iter()
                .filter(|s| s.method.is_none_or(|m| m == method) && url.starts_with(&s.prefix))
                .max_by_key(|s| s.prefix.len())
                .map(|s| {
                    s.answer.clone().map(|mut r| {
                        r.url = url.to_string();
                        r
                    })
                })
        })
        .flatten();
        Some(answer.unwrap_or_else(|| {
            Err(HttpError::Denied(format!(
                "HTTP request to {host} denied: no canned response for {method:?} {url} \
                 (sundial_guest::testing::TestRun::http_response)"
            )))
        }))
    }
}

/// The host's classification of SQLite errors.
pub(crate) fn db_error(e: rusqlite::Error) -> w::DbError {
    match &e {
        rusqlite::Error::SqliteFailure(f, msg) => {
            let msg = msg.clone().unwrap_or_else(|| f.to_string());
            match f.code {
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => w::DbError::Busy(msg),
                ErrorCode::ReadOnly => w::DbError::Denied(format!("read-only access: {msg}")),
                ErrorCode::ConstraintViolation => w::DbError::Constraint(msg),
                ErrorCode::OperationInterrupted => w::DbError::Other("statement interrupted".into()),
                _ => w::DbError::Other(msg),
            }
        }
        _ => w::DbError::Other(e.to_string()),
    }
}

/// Binds `$N` (and `?N`, `?`) placeholders like the host: other parameter
/// names are refused, as is a count mismatch.
fn bind_all(stmt: &mut rusqlite::CachedStatement<'_>, params: &[w::Value]) -> Result<(), w::DbError> {
    let count = stmt.parameter_count();
    let mut highest = 0usize;
    for idx in 1..=count {
        let n = match stmt.parameter_name(idx) {
            None => idx,
            Some(name) => {
                let digits = name.strip_prefix('$').or_else(|| name.strip_prefix('?'));
                match digits.and_then(|d| d.parse::<usize>().ok()) {
                    Some(n) if n >= 1 => n,
                    _ => {
                        return Err(w::DbError::Other(format!(
                            "parameter {name} is not supported; use $1, $2, … in the order of the values"
                        )));
                    }
                }
            }
        };
        highest = highest.max(n);
        let Some(value) = params.get(n - 1) else {
            return Err(w::DbError::Other(format!(
                "the statement uses parameter ${n} but {} value{} given",
                params.len(),
                if params.len() == 1 { " was" } else { "s were" }
            )));
        };
        let bound = match value {
            w::Value::Null => stmt.raw_bind_parameter(idx, rusqlite::types::Null),
            w::Value::Integer(i) => stmt.raw_bind_parameter(idx, i),
            w::Value::Real(f) => stmt.raw_bind_parameter(idx, f),
            w::Value::Text(s) => stmt.raw_bind_parameter(idx, s.as_str()),
            w::Value::Blob(b) => stmt.raw_bind_parameter(idx, b.as_slice()),
        };
        bound.map_err(db_error)?;
    }
    if highest < params.len() {
        return Err(w::DbError::Other(format!(
            "{} values given but the statement uses {highest} parameter{}",
            params.len(),
            if highest == 1 { "" } else { "s" }
        )));
    }
    Ok(())
}

fn decode(v: ValueRef<'_>) -> w::Value {
    match v {
        ValueRef::Null => w::Value::Null,
        ValueRef::Integer(i) => w::Value::Integer(i),
        ValueRef::Real(f) => w::Value::Real(f),
        ValueRef::Text(t) => w::Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => w::Value::Blob(b.to_vec()),
    }
}

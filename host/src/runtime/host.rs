//! The per-execution store data and the host side of the `sundial:job` imports.
//!
//! Every host call first checks that the execution may still run (deadline,
//! cancellation) and bounds the time it may spend: an epoch deadline only
//! interrupts wasm code, so a guest blocked in a slow query is stopped here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use chrono::{DateTime, Datelike, LocalResult, NaiveDate, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Result as WResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::WasiHttpCtx;

use super::bindings::sundial::job::{database, log, progress, state, time, types};
use super::http::HttpGuard;
use crate::clock::Clock;
use crate::store::appdb::{AppDbError, AppSession, SqlRows, SqlValue};
use crate::store::state::{JobState, StateError};

/// Logs kept per execution; the rest is dropped and the log marked truncated.
pub const LOG_CAP_BYTES: usize = 64 * 1024;

/// Why the host stopped a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// The execution's deadline passed.
    Timeout,
    /// An operator (or the host stopping) cancelled it.
    Cancelled,
}

/// The error a host call returns to trap the guest when it must stop.
#[derive(Debug, thiserror::Error)]
#[error("execution interrupted: {0:?}")]
pub struct Interrupted(pub Interrupt);

/// The host failed while serving a guest call (not the guest's fault).
#[derive(Debug, thiserror::Error)]
#[error("host failure: {0}")]
pub struct HostFailure(pub String);

/// A flag set to stop an execution (by an operator, or by the host
/// stopping); shared with the actor side.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicU8>);

const NOT_CANCELLED: u8 = 0;
const BY_OPERATOR: u8 = 1;
const BY_SHUTDOWN: u8 = 2;

impl CancelToken {
    /// A token not yet cancelled.
    pub fn new() -> Self {
        Self::default()
    }
    /// Asks the execution to stop at its next check (≤ one epoch tick).
    pub fn cancel(&self) {
        let _ = self.0.compare_exchange(NOT_CANCELLED, BY_OPERATOR, Ordering::SeqCst, Ordering::SeqCst);
    }
    /// Like [`cancel`](CancelToken::cancel), because the host is stopping.
    pub fn cancel_for_shutdown(&self) {
        let _ = self.0.compare_exchange(NOT_CANCELLED, BY_SHUTDOWN, Ordering::SeqCst, Ordering::SeqCst);
    }
    /// Whether cancellation was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst) != NOT_CANCELLED
    }
    /// Whether the host stopping asked for it.
    pub fn by_shutdown(&self) -> bool {
        self.0.load(Ordering::SeqCst) == BY_SHUTDOWN
    }
    /// Why the execution was cancelled, for its row.
    pub fn reason(&self) -> &'static str {
        match self.0.load(Ordering::SeqCst) {
            BY_SHUTDOWN => "cancelled: the host stopped and the grace period ran out",
            _ => "cancelled by an operator",
        }
    }
}

/// Live progress of an execution, read by the actor side while it runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Units done.
    pub done: AtomicU64,
    /// Units in total; `u64::MAX` when unknown.
    pub total: AtomicU64,
    /// Items that succeeded (item jobs).
    pub ok: AtomicU64,
    /// Items skipped (item jobs).
    pub skipped: AtomicU64,
    /// Items that failed (item jobs).
    pub failed: AtomicU64,
}

impl Progress {
    /// A progress cell with an unknown total.
    pub fn new() -> Arc<Self> {
        Arc::new(Progress {
            done: AtomicU64::new(0),
            total: AtomicU64::new(u64::MAX),
            ok: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
    }
    /// `(done, total)` now.
    pub fn snapshot(&self) -> (u64, Option<u64>) {
        let total = self.total.load(Ordering::Relaxed);
        (self.done.load(Ordering::Relaxed), (total != u64::MAX).then_some(total))
    }
}

/// Memory and table limits; records whether the memory limit was hit so the
/// resulting trap is reported as a memory-limit failure.
pub struct Limiter {
    pub max_memory_bytes: usize,
    pub max_table_elements: usize,
    pub memory_limit_hit: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> WResult<bool> {
        if desired > self.max_memory_bytes {
            self.memory_limit_hit = true;
            return Err(wasmtime::format_err!(
                "memory limit exceeded: the guest asked for {} MiB, the limit is {} MiB",
                desired.div_ceil(1 << 20),
                self.max_memory_bytes >> 20
            ));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> WResult<bool> {
        Ok(desired <= self.max_table_elements)
    }

    fn instances(&self) -> usize {
        16
    }
    fn tables(&self) -> usize {
        16
    }
    fn memories(&self) -> usize {
        4
    }
}

/// A bounded log buffer.
#[derive(Debug, Default)]
pub struct LogBuffer {
    pub text: String,
    pub truncated: bool,
}

impl LogBuffer {
    /// Appends one line, dropping it (and marking the log truncated) past the cap.
    pub fn push(&mut self, level: &str, message: &str) {
        if self.truncated {
            return;
        }
        let line_len = level.len() + message.len() + 2;
        if self.text.len() + line_len > LOG_CAP_BYTES {
            self.truncated = true;
            return;
        }
        self.text.push_str(level);
        self.text.push(' ');
        self.text.push_str(message);
        self.text.push('\n');
    }
}

/// Everything one execution's `Store` carries.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) http_ctx: WasiHttpCtx,
    /// The job's HTTP grant and the deadline its requests obey.
    pub(crate) http: HttpGuard,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: Limiter,
    pub(crate) job_name: String,
    pub(crate) execution_id: i64,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) deadline: Instant,
    pub(crate) cancel: CancelToken,
    pub(crate) interrupt: Option<Interrupt>,
    pub(crate) db: Option<AppSession>,
    /// The job's key-value state, when granted.
    pub(crate) state: Option<JobState>,
    pub(crate) logs: LogBuffer,
    pub(crate) progress: Arc<Progress>,
    pub(crate) stdout: super::output::CappedPipe,
    pub(crate) stderr: super::output::CappedPipe,
    /// Fuel accounting across the stores one execution goes through.
    pub(crate) fuel: FuelMeter,
    /// Whether host calls check the deadline and cancellation (always, but
    /// in the limits benchmark).
    pub(crate) checks: bool,
}

/// An execution's fuel: its budget, what earlier stores used (a trapped
/// item job moves to a fresh store), and what the current store started with.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FuelMeter {
    /// The operator's budget; `None`: unmetered (counted, never exhausted).
    pub budget: Option<u64>,
    /// Used by the stores before the current one.
    pub used_before: u64,
    /// Fuel the current store was given.
    pub start: u64,
}

impl FuelMeter {
    /// A meter for a new execution.
    pub fn new(budget: Option<u64>) -> Self {
        FuelMeter { budget, used_before: 0, start: budget.unwrap_or(u64::MAX) }
    }

    /// Fuel used so far, given what the current store has left.
    pub fn used(&self, left: u64) -> u64 {
        self.used_before.saturating_add(self.start.saturating_sub(left))
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl HostState {
    /// Copies refused HTTP requests into the execution's log, where they
    /// appear before whatever the guest logs or does next.
    pub(crate) fn log_http_denials(&mut self) {
        for denied in self.http.take_denials() {
            self.logs.push("WARN", &denied);
        }
    }

    /// Returns an error that traps the guest if it must stop now.
    pub(crate) fn check(&mut self) -> WResult<()> {
        if !self.checks {
            return Ok(());
        }
        self.log_http_denials();
        if self.cancel.is_cancelled() {
            self.interrupt = Some(Interrupt::Cancelled);
            return Err(Interrupted(Interrupt::Cancelled).into());
        }
        if Instant::now() >= self.deadline {
            self.interrupt = Some(Interrupt::Timeout);
            return Err(Interrupted(Interrupt::Timeout).into());
        }
        Ok(())
    }

    /// Runs a database call; the session's interrupt check stops a statement
    /// that outlives the execution's deadline or a cancellation.
    fn db_call<T>(
        &mut self,
        f: impl FnOnce(&mut AppSession) -> Result<T, AppDbError>,
    ) -> WResult<Result<T, types::DbError>> {
        self.check()?;
        let Some(session) = self.db.as_mut() else {
            return Ok(Err(types::DbError::Denied("no application database is configured for this host".into())));
        };
        match f(session) {
            Err(AppDbError::Interrupted) => {
                self.check()?;
                Ok(Err(types::DbError::Other("statement interrupted".into())))
            }
            r => Ok(r.map_err(to_wit_db_error)),
        }
    }
}

/// What a state call gets when the job has no `state` grant.
const STATE_NOT_GRANTED: &str = "key-value state is not granted to this job";

impl HostState {
    /// Runs a state call. Writes wait in the execution's overlay while its
    /// own database session holds the write lock of the file the state is
    /// kept in; waiting writes go out with the first write made without it
    /// (or when the batch or the execution ends).
    fn state_call<T>(
        &mut self,
        f: impl FnOnce(&mut JobState, bool) -> Result<T, StateError>,
    ) -> WResult<Result<T, String>> {
        self.check()?;
        let Some(state) = self.state.as_mut() else {
            return Ok(Err(format!(
                "{STATE_NOT_GRANTED} (set `state = true` under [jobs.{}] in sundial.toml)",
                self.job_name
            )));
        };
        let blocked = state.shares_app_file() && self.db.as_ref().is_some_and(AppSession::may_hold_write_lock);
        Ok(f(state, blocked).map_err(|e| e.0))
    }

    /// Writes state writes that waited for the execution's own write lock
    /// (after an item batch ended); a failure is logged and they wait on.
    pub(crate) fn flush_state(&mut self) {
        let blocked = self.db.as_ref().is_some_and(AppSession::may_hold_write_lock);
        if let Some(state) = self.state.as_mut()
            && state.has_pending()
            && !(blocked && state.shares_app_file())
            && let Err(e) = state.flush()
        {
            tracing::warn!(job = %self.job_name, execution = self.execution_id, error = %e,
                "key-value state writes could not be saved yet; retrying later");
            self.logs.push("WARN", &format!("{e} (the writes are retried before the execution ends)"));
        }
    }
}

fn to_wit_db_error(e: AppDbError) -> types::DbError {
    match e {
        AppDbError::Denied(m) => types::DbError::Denied(m),
        AppDbError::Constraint(m) => types::DbError::Constraint(m),
        AppDbError::Busy(m) => types::DbError::Busy(m),
        AppDbError::Interrupted => types::DbError::Other("statement interrupted".into()),
        AppDbError::Other(m) => types::DbError::Other(m),
    }
}

pub(crate) fn from_wit_value(v: types::Value) -> SqlValue {
    match v {
        types::Value::Null => SqlValue::Null,
        types::Value::Integer(i) => SqlValue::Integer(i),
        types::Value::Real(f) => SqlValue::Real(f),
        types::Value::Text(s) => SqlValue::Text(s),
        types::Value::Blob(b) => SqlValue::Blob(b),
    }
}

pub(crate) fn to_wit_value(v: SqlValue) -> types::Value {
    match v {
        SqlValue::Null => types::Value::Null,
        SqlValue::Integer(i) => types::Value::Integer(i),
        SqlValue::Real(f) => types::Value::Real(f),
        SqlValue::Text(s) => types::Value::Text(s),
        SqlValue::Blob(b) => types::Value::Blob(b),
    }
}

fn to_wit_rows(r: SqlRows) -> types::Rows {
    types::Rows {
        columns: r.columns,
        rows: r.rows.into_iter().map(|row| row.into_iter().map(to_wit_value).collect()).collect(),
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    fn log(&mut self, level: types::Level, message: String) -> WResult<()> {
        self.log_http_denials();
        let (name, job, exec) = (level_name(level), self.job_name.as_str(), self.execution_id);
        match level {
            types::Level::Trace => tracing::trace!(target: "sundial::guest", job, execution = exec, "{message}"),
            types::Level::Debug => tracing::debug!(target: "sundial::guest", job, execution = exec, "{message}"),
            types::Level::Info => tracing::info!(target: "sundial::guest", job, execution = exec, "{message}"),
            types::Level::Warn => tracing::warn!(target: "sundial::guest", job, execution = exec, "{message}"),
            types::Level::Error => tracing::error!(target: "sundial::guest", job, execution = exec, "{message}"),
        }
        self.logs.push(name, &message);
        Ok(())
    }
}

fn level_name(level: types::Level) -> &'static str {
    match level {
        types::Level::Trace => "TRACE",
        types::Level::Debug => "DEBUG",
        types::Level::Info => "INFO",
        types::Level::Warn => "WARN",
        types::Level::Error => "ERROR",
    }
}

impl database::Host for HostState {
    fn query(&mut self, sql: String, params: Vec<types::Value>) -> WResult<Result<types::Rows, types::DbError>> {
        let params: Vec<SqlValue> = params.into_iter().map(from_wit_value).collect();
        let r = self.db_call(|s| s.query(&sql, &params))?;
        Ok(r.map(to_wit_rows))
    }

    fn execute(&mut self, sql: String, params: Vec<types::Value>) -> WResult<Result<u64, types::DbError>> {
        let params: Vec<SqlValue> = params.into_iter().map(from_wit_value).collect();
        self.db_call(|s| s.execute(&sql, &params))
    }
}

impl progress::Host for HostState {
    fn report(&mut self, done: u64, total: Option<u64>) -> WResult<()> {
        self.progress.done.store(done, Ordering::Relaxed);
        self.progress.total.store(total.unwrap_or(u64::MAX), Ordering::Relaxed);
        self.check()
    }
}

impl time::Host for HostState {
    fn now(&mut self) -> WResult<types::Timestamp> {
        Ok(self.clock.now().timestamp_millis())
    }

    fn to_local(&mut self, instant: types::Timestamp, zone: String) -> WResult<Result<types::LocalDatetime, String>> {
        Ok(to_local(instant, &zone))
    }

    fn from_local(&mut self, local: types::LocalDatetime, zone: String) -> WResult<Result<types::Timestamp, String>> {
        Ok(from_local(&local, &zone))
    }
}

impl state::Host for HostState {
    fn get(&mut self, key: String) -> WResult<Result<Option<Vec<u8>>, String>> {
        self.state_call(|s, _| s.get(&key))
    }
    fn set(&mut self, key: String, value: Vec<u8>) -> WResult<Result<(), String>> {
        self.state_call(|s, blocked| s.set(&key, value, blocked))
    }
    fn delete(&mut self, key: String) -> WResult<Result<(), String>> {
        self.state_call(|s, blocked| s.delete(&key, blocked))
    }
}

fn parse_zone(zone: &str) -> Result<Tz, String> {
    zone.parse::<Tz>().map_err(|_| format!("unknown time zone {zone:?}"))
}

/// The local date and time of `instant_ms` in `zone`.
pub(crate) fn to_local(instant_ms: i64, zone: &str) -> Result<types::LocalDatetime, String> {
    let tz = parse_zone(zone)?;
    let utc = DateTime::<Utc>::from_timestamp_millis(instant_ms)
        .ok_or_else(|| format!("instant {instant_ms} is out of range"))?;
    let local = utc.with_timezone(&tz);
    Ok(types::LocalDatetime {
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

/// The instant of a local time in `zone`: the first occurrence if repeated, the
/// end of the gap if skipped by a DST change.
pub(crate) fn from_local(l: &types::LocalDatetime, zone: &str) -> Result<types::Timestamp, String> {
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
            // In a gap. Real gaps start and end on minute boundaries, so the first
            // valid local minute after `naive` is the transition instant itself.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ldt(y: i32, mo: u8, d: u8, h: u8, mi: u8) -> types::LocalDatetime {
        types::LocalDatetime {
            year: y,
            month: mo,
            day: d,
            hour: h,
            minute: mi,
            second: 0,
            weekday: 0,
            offset_seconds: 0,
        }
    }

    fn iso(ms: i64) -> String {
        DateTime::<Utc>::from_timestamp_millis(ms).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    #[test]
    fn local_time_conversions_follow_the_dst_policy() {
        let tokyo = to_local(1_795_377_600_000, "Asia/Tokyo").unwrap(); // 2026-11-22T20:00Z
        assert_eq!((tokyo.year, tokyo.month, tokyo.day, tokyo.hour), (2026, 11, 23, 5));
        assert_eq!(tokyo.weekday, 1);
        assert_eq!(tokyo.offset_seconds, 9 * 3600);
        // Spring forward in New York: 02:30 does not exist → 03:00 EDT.
        assert_eq!(iso(from_local(&ldt(2026, 3, 8, 2, 30), "America/New_York").unwrap()), "2026-03-08T07:00:00Z");
        // Fall back: 01:30 happens twice → the first (EDT).
        assert_eq!(iso(from_local(&ldt(2026, 11, 1, 1, 30), "America/New_York").unwrap()), "2026-11-01T05:30:00Z");
        assert!(to_local(0, "Mars/Olympus").unwrap_err().contains("unknown time zone"));
        assert!(from_local(&ldt(2026, 2, 30, 0, 0), "UTC").unwrap_err().contains("invalid local date-time"));
    }

    #[test]
    fn logs_are_capped() {
        let mut logs = LogBuffer::default();
        for _ in 0..10_000 {
            logs.push("INFO", "0123456789");
        }
        assert!(logs.truncated);
        assert!(logs.text.len() <= LOG_CAP_BYTES);
    }
}

//! Write [Sundial](https://example.invalid/sundial) jobs in plain Rust.
//!
//! A job is a crate of type `cdylib` that implements [`Job`] (one `run` per
//! execution) or [`ItemJob`] (the host pages through items and runs each in its
//! own transaction), exports it with [`export_job!`] or [`export_item_job!`],
//! and is compiled to a `wasm32-wasip2` component (`cargo xtask build-jobs`, or
//! `cargo build --release --target wasm32-wasip2` where rustup has the target).
//! Dropping the `.wasm` file into the host's jobs directory deploys it.
//!
//! Everything a job may touch outside its own memory goes through the host:
//! [`db`] (the application database, if the operator granted it), [`http`]
//! (outbound HTTP to the hosts the operator granted), [`log`], [`progress`],
//! [`time`] (clock and time zones) and [`state`] (private key-value state).
//!
//! # Example: a complete job
//!
//! ```no_run
//! use sundial_guest::{db, log, Context, Job, JobError, JobInfo, Outcome, Value};
//!
//! struct Cleanup;
//!
//! impl Job for Cleanup {
//!     fn info() -> JobInfo {
//!         JobInfo::new("cleanup", "Deletes expired sessions", "0 * * * *")
//!             .read_write_database()
//!     }
//!
//!     fn run(ctx: &Context) -> Result<Outcome, JobError> {
//!         let days: i64 = ctx.arg("retention_days").unwrap_or("30").parse()
//!             .map_err(|_| JobError::fatal("retention_days must be a whole number"))?;
//!         let cutoff = ctx.scheduled_for() - days * 86_400_000;
//!         let deleted = db::execute(
//!             "DELETE FROM sessions WHERE expires_at_ms < $1",
//!             &[Value::from(cutoff)],
//!         )?;
//!         log::info(&format!("deleted {deleted} expired sessions"));
//!         Ok(Outcome::changed(deleted))
//!     }
//! }
//!
//! sundial_guest::export_job!(Cleanup);
//! ```
//!
//! Errors say what the host should do: [`JobError::skip`] (a precondition is
//! not met; recorded, never retried), [`JobError::retryable`] and
//! [`JobError::fatal`]. A database error converts into one of these with `?`.
//!
//! # Testing
//!
//! The `testing` feature (for `[dev-dependencies]`) adds the module
//! `sundial_guest::testing`: `cargo test` runs a job's `run` or its items
//! against an in-memory SQLite database, with the host's rules for
//! parameters, grants and per-item transactions, and no component build.

#![warn(missing_docs)]

use std::fmt;

pub mod http;
mod types;
pub use types::{Capability, Context, DbAccess, Item, JobError, JobInfo, Outcome, Page, Row, Rows, Trigger, Value};

/// Generated bindings. Not part of the public API: use the traits, types and
/// functions at the crate root instead.
#[doc(hidden)]
#[allow(clippy::too_many_arguments, missing_docs)]
pub mod __bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "sundial:job/job@0.1.0",
        pub_export_macro: true,
        export_macro_name: "__export_job_world",
        default_bindings_module: "sundial_guest::__bindings",
        runtime_path: "sundial_guest::__bindings::wit_bindgen::rt",
    });

    pub use wit_bindgen;
}

// Lets the generated code name this crate the same way inside and outside it.
extern crate self as sundial_guest;

use __bindings::sundial::job as wit;

// Where the imported interfaces are served. In a component (and on any target
// without the `testing` feature) that is the host, through the generated
// imports; with `testing` on the build machine it is the in-process backend of
// [`testing`], whose functions have the same signatures.
#[cfg(not(all(feature = "testing", not(target_arch = "wasm32"))))]
use wit as sys;

#[cfg(all(feature = "testing", not(target_arch = "wasm32")))]
use testing::backend as sys;

#[cfg(all(feature = "testing", not(target_arch = "wasm32")))]
pub mod testing;

/// A single-shot job: the host calls [`Job::run`] once per execution.
pub trait Job {
    /// Name, description, default schedule, time zone and requested capabilities.
    fn info() -> JobInfo;

    /// Runs the job once.
    fn run(ctx: &Context) -> Result<Outcome, JobError>;
}

/// An item job: the host pages through [`ItemJob::items`] and calls
/// [`ItemJob::run_item`] for each item in its own transaction, so one item's
/// failure never stops or undoes the others.
pub trait ItemJob {
    /// Name, description, default schedule, time zone and requested capabilities.
    fn info() -> JobInfo;

    /// The page of items after `cursor` (`None` for the first page). Return at
    /// most a few thousand items per page and a cursor for the next page.
    fn items(ctx: &Context, cursor: Option<&str>) -> Result<Page, JobError>;

    /// Processes one item. [`JobError::skip`] marks it skipped with a reason;
    /// any other error marks it failed and rolls back what it wrote.
    fn run_item(ctx: &Context, item: &Item) -> Result<Outcome, JobError>;
}

/// Exports a type implementing [`Job`] as the component's job.
#[macro_export]
macro_rules! export_job {
    ($job:ty) => {
        const _: () = {
            struct __SundialJob;
            impl $crate::__bindings::Guest for __SundialJob {
                fn describe() -> $crate::__bindings::sundial::job::types::JobInfo {
                    $crate::__private::describe(<$job as $crate::Job>::info(), false)
                }
                fn run(ctx: $crate::__bindings::sundial::job::types::Context) -> $crate::__private::WitResult {
                    $crate::__private::finish(<$job as $crate::Job>::run(&ctx.into()))
                }
                fn items(
                    _ctx: $crate::__bindings::sundial::job::types::Context,
                    _cursor: Option<String>,
                ) -> $crate::__private::WitPageResult {
                    $crate::__private::not_item_job()
                }
                fn run_item(
                    _ctx: $crate::__bindings::sundial::job::types::Context,
                    _item: $crate::__bindings::sundial::job::types::Item,
                ) -> $crate::__private::WitResult {
                    $crate::__private::finish(Err($crate::JobError::fatal("run-item called on a single-shot job")))
                }
            }
            $crate::__bindings::__export_job_world!(__SundialJob);
        };
    };
}

/// Exports a type implementing [`ItemJob`] as the component's job.
#[macro_export]
macro_rules! export_item_job {
    ($job:ty) => {
        const _: () = {
            struct __SundialJob;
            impl $crate::__bindings::Guest for __SundialJob {
                fn describe() -> $crate::__bindings::sundial::job::types::JobInfo {
                    $crate::__private::describe(<$job as $crate::ItemJob>::info(), true)
                }
                fn run(_ctx: $crate::__bindings::sundial::job::types::Context) -> $crate::__private::WitResult {
                    $crate::__private::finish(Err($crate::JobError::fatal("run called on an item job")))
                }
                fn items(
                    ctx: $crate::__bindings::sundial::job::types::Context,
                    cursor: Option<String>,
                ) -> $crate::__private::WitPageResult {
                    $crate::__private::page(<$job as $crate::ItemJob>::items(&ctx.into(), cursor.as_deref()))
                }
                fn run_item(
                    ctx: $crate::__bindings::sundial::job::types::Context,
                    item: $crate::__bindings::sundial::job::types::Item,
                ) -> $crate::__private::WitResult {
                    $crate::__private::finish(<$job as $crate::ItemJob>::run_item(&ctx.into(), &item.into()))
                }
            }
            $crate::__bindings::__export_job_world!(__SundialJob);
        };
    };
}

/// Computes a value once per execution and shares it with every later call
/// in the same execution — the dates, zones and timestamps all items of a run
/// use, computed without host calls per item. A value from an earlier
/// execution (an instance reused) is never returned: it is recomputed.
///
/// ```no_run
/// use sundial_guest::{Context, JobError};
///
/// struct Run {
///     yesterday: String,
/// }
///
/// fn run(ctx: &Context) -> Result<std::rc::Rc<Run>, JobError> {
///     sundial_guest::per_execution(ctx, || Ok(Run { yesterday: ctx.run_date()?.add_days(-1).to_string() }))
/// }
/// ```
pub fn per_execution<T: 'static>(
    ctx: &Context,
    init: impl FnOnce() -> Result<T, JobError>,
) -> Result<std::rc::Rc<T>, JobError> {
    use std::any::{Any, TypeId};
    use std::cell::RefCell;
    use std::rc::Rc;
    /// One value per type: (type, execution, value).
    type Entry = (TypeId, i64, Rc<dyn Any>);
    thread_local! {
        static CACHE: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
    }
    let ty = TypeId::of::<T>();
    let cached =
        CACHE.with_borrow(|c| c.iter().find(|(t, e, _)| *t == ty && *e == ctx.execution_id).map(|(_, _, v)| v.clone()));
    if let Some(v) = cached.and_then(|v| v.downcast::<T>().ok()) {
        return Ok(v);
    }
    let value = Rc::new(init()?);
    CACHE.with_borrow_mut(|c| {
        c.retain(|(t, _, _)| *t != ty);
        c.push((ty, ctx.execution_id, value.clone() as Rc<dyn Any>));
    });
    Ok(value)
}

/// Support for the export macros. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    pub type WitResult = Result<wit::types::Outcome, wit::types::JobError>;
    pub type WitPageResult = Result<wit::types::Page, wit::types::JobError>;

    pub fn describe(info: JobInfo, items: bool) -> wit::types::JobInfo {
        info.into_wit(if items { wit::types::JobKind::Items } else { wit::types::JobKind::Single })
    }

    pub fn finish(result: Result<Outcome, JobError>) -> WitResult {
        result.map(Into::into).map_err(Into::into)
    }

    pub fn page(result: Result<Page, JobError>) -> WitPageResult {
        result.map(Into::into).map_err(Into::into)
    }

    pub fn not_item_job() -> WitPageResult {
        Err(JobError::fatal("items called on a single-shot job").into())
    }
}

/// Logging into the execution's log, which operators see in `sundial history`,
/// the API and the UI.
pub mod log {
    use super::sys::log::log;
    use super::wit::log::Level;

    /// Logs at debug level.
    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }
    /// Logs at info level.
    pub fn info(message: &str) {
        log(Level::Info, message)
    }
    /// Logs at warn level.
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }
    /// Logs at error level.
    pub fn error(message: &str) {
        log(Level::Error, message)
    }
}

/// The application database. Placeholders are `$1`, `$2`, ... on every backend.
///
/// Requires the operator to grant the job database access; a job without the
/// grant gets [`DbError::Denied`].
pub mod db {
    use super::*;

    /// Runs a statement that returns rows.
    pub fn query(sql: &str, params: &[Value]) -> Result<Rows, DbError> {
        let params: Vec<_> = params.iter().cloned().map(Into::into).collect();
        sys::database::query(sql, &params).map(Into::into).map_err(Into::into)
    }

    /// Runs a statement that returns at most one row.
    pub fn query_opt(sql: &str, params: &[Value]) -> Result<Option<Row>, DbError> {
        Ok(query(sql, params)?.into_iter().next())
    }

    /// Appends `values` to `params` and returns their placeholders, `$n, $m, ...`,
    /// for an `IN (...)` list: `format!("timezone IN ({})", db::bind_list(&mut params, zones))`.
    pub fn bind_list<V: Into<Value>>(params: &mut Vec<Value>, values: impl IntoIterator<Item = V>) -> String {
        let mut marks = Vec::new();
        for v in values {
            params.push(v.into());
            marks.push(format!("${}", params.len()));
        }
        marks.join(", ")
    }

    /// Runs a statement that changes data and returns the number of rows affected.
    pub fn execute(sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let params: Vec<_> = params.iter().cloned().map(Into::into).collect();
        sys::database::execute(sql, &params).map_err(Into::into)
    }
}

/// Why a database call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum DbError {
    /// The operator did not grant the access this call needs.
    Denied(String),
    /// A unique, foreign key, not-null or check constraint was violated.
    Constraint(String),
    /// The database is busy or locked; a retry may succeed.
    Busy(String),
    /// Anything else: syntax, types, connection.
    Other(String),
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Denied(m) => write!(f, "database access denied: {m}"),
            DbError::Constraint(m) => write!(f, "constraint violated: {m}"),
            DbError::Busy(m) => write!(f, "database busy: {m}"),
            DbError::Other(m) => write!(f, "database error: {m}"),
        }
    }
}

impl std::error::Error for DbError {}

impl From<wit::types::DbError> for DbError {
    fn from(e: wit::types::DbError) -> Self {
        use wit::types::DbError as W;
        match e {
            W::Denied(m) => DbError::Denied(m),
            W::Constraint(m) => DbError::Constraint(m),
            W::Busy(m) => DbError::Busy(m),
            W::Other(m) => DbError::Other(m),
        }
    }
}

/// A busy database is worth retrying; everything else is fatal for the call site.
impl From<DbError> for JobError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Busy(_) => JobError::retryable(e.to_string()),
            _ => JobError::fatal(e.to_string()),
        }
    }
}

/// Progress of a single-shot job (item jobs get item progress for free).
pub mod progress {
    /// Reports `done` units of `total` finished.
    pub fn report(done: u64, total: Option<u64>) {
        super::sys::progress::report(done, total)
    }
}

/// Time and time zones, using the host's clock and IANA database.
pub mod time {
    use super::{sys, wit};

    pub use wit::types::LocalDatetime as LocalDateTime;

    /// The host's current time in milliseconds since the Unix epoch.
    pub fn now_ms() -> i64 {
        sys::time::now()
    }

    /// The local date and time of `instant_ms` in the IANA zone `zone`.
    pub fn to_local(instant_ms: i64, zone: &str) -> Result<LocalDateTime, String> {
        sys::time::to_local(instant_ms, zone)
    }

    /// The instant of a local date and time in `zone` (a time in a DST gap moves
    /// to the end of the gap; a repeated time resolves to its first occurrence).
    pub fn from_local(local: LocalDateTime, zone: &str) -> Result<i64, String> {
        sys::time::from_local(local, zone)
    }

    /// The local calendar date of `instant_ms` in `zone`.
    pub fn local_date(instant_ms: i64, zone: &str) -> Result<crate::Date, String> {
        let l = to_local(instant_ms, zone)?;
        Ok(crate::Date::new(l.year, l.month, l.day))
    }

    /// ISO 8601 UTC text of `ms` since the Unix epoch, to the second
    /// (`2026-11-22T10:00:00Z`), computed in the guest without a host call.
    /// Text in this form compares and sorts like the instants it names.
    ///
    /// ```
    /// assert_eq!(sundial_guest::time::iso_utc(1_795_341_600_000), "2026-11-22T10:00:00Z");
    /// ```
    pub fn iso_utc(ms: i64) -> String {
        let date = crate::Date::new(1970, 1, 1).add_days(ms.div_euclid(86_400_000));
        let secs = ms.rem_euclid(86_400_000) / 1000;
        format!("{date}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
    }
}

/// The job's private key-value state, kept by the host between executions.
/// Requires the `key-value` grant.
pub mod state {
    use super::sys;

    /// Reads a value.
    pub fn get(key: &str) -> Result<Option<Vec<u8>>, String> {
        sys::state::get(key)
    }
    /// Sets a value (at most 1 MiB).
    pub fn set(key: &str, value: &[u8]) -> Result<(), String> {
        sys::state::set(key, value)
    }
    /// Removes a key.
    pub fn delete(key: &str) -> Result<(), String> {
        sys::state::delete(key)
    }
}

/// A calendar date (proleptic Gregorian), enough for "yesterday" and
/// "the Monday of this week" without pulling a date library into the component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    days: i64,
}

impl Date {
    /// The date `year-month-day`. Out-of-range days roll over like `mktime`.
    pub fn new(year: i32, month: u8, day: u8) -> Date {
        Date { days: days_from_civil(year as i64, month as i64, day as i64) }
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Option<Date> {
        let mut it = s.splitn(3, '-');
        let y: i32 = it.next()?.parse().ok()?;
        let m: u8 = it.next()?.parse().ok()?;
        let d: u8 = it.next()?.parse().ok()?;
        if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
            return None;
        }
        Some(Date::new(y, m, d))
    }

    /// The date `n` days later (earlier for negative `n`).
    pub fn add_days(self, n: i64) -> Date {
        Date { days: self.days + n }
    }

    /// ISO weekday: 1 = Monday ... 7 = Sunday.
    pub fn weekday(self) -> u8 {
        // 1970-01-01 was a Thursday (4).
        ((self.days + 3).rem_euclid(7) + 1) as u8
    }

    /// `(year, month, day)`.
    pub fn ymd(self) -> (i32, u8, u8) {
        civil_from_days(self.days)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl From<Date> for Value {
    fn from(d: Date) -> Value {
        Value::Text(d.to_string())
    }
}

fn days_in_month(y: i32, m: u8) -> u8 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

// Howard Hinnant's days_from_civil / civil_from_days.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y as i32, m as u8, d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_know_their_weekday() {
        let d = Date::parse("2026-03-01").unwrap();
        assert_eq!(d.add_days(-1).to_string(), "2026-02-28");
        assert_eq!(Date::parse("2024-03-01").unwrap().add_days(-1).to_string(), "2024-02-29");
        assert_eq!(Date::parse("2026-11-23").unwrap().weekday(), 1); // a Monday
        assert_eq!(Date::parse("1970-01-01").unwrap().weekday(), 4);
        assert_eq!(Date::parse("2026-02-30"), None);
        assert_eq!(Date::parse("2026-13-01"), None);
        assert_eq!(Date::parse("yesterday"), None);
    }
}

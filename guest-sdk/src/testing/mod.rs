//! Run a job's logic in `cargo test`, without building a component.
//!
//! With the `testing` feature, on the build machine (any target but `wasm32`),
//! the SDK's calls that a component makes to the host — [`db`](crate::db),
//! [`log`](crate::log), [`progress`](crate::progress), [`time`](crate::time),
//! [`state`](crate::state) and [`http`](crate::http) — go to an in-process
//! backend instead: a private in-memory SQLite database, a log, a fixed clock,
//! a key-value map and canned HTTP answers. A [`TestRun`] sets them up, runs a
//! [`Job`] or an [`ItemJob`] the way the host does, and lets the test look at
//! the database, the log and the state afterwards.
//!
//! Enable it for tests only, in the job crate's `Cargo.toml`:
//!
//! ```toml
//! [dependencies]
//! sundial-guest = "0.1"
//!
//! [dev-dependencies]
//! sundial-guest = { version = "0.1", features = ["testing"] }
//! ```
//!
//! The component (`cargo build --target wasm32-wasip2`) is not affected:
//! dev-dependency features apply to test builds only, and the feature does
//! nothing on `wasm32`.
//!
//! # Example
//!
//! ```
//! use sundial_guest::testing::TestRun;
//! use sundial_guest::{Context, Job, JobError, JobInfo, Outcome, Value, db, log};
//!
//! struct Cleanup;
//!
//! impl Job for Cleanup {
//!     fn info() -> JobInfo {
//!         JobInfo::new("cleanup", "Deletes expired sessions", "0 * * * *").read_write_database()
//!     }
//!
//!     fn run(ctx: &Context) -> Result<Outcome, JobError> {
//!         let days: i64 = ctx.arg("retention_days").unwrap_or("30").parse()
//!             .map_err(|_| JobError::fatal("retention_days must be a whole number"))?;
//!         let cutoff = sundial_guest::time::iso_utc(ctx.scheduled_for() - days * 86_400_000);
//!         let deleted = db::execute("DELETE FROM sessions WHERE expires_at < $1", &[Value::from(cutoff)])?;
//!         log::info(&format!("deleted {deleted} expired sessions"));
//!         Ok(Outcome::changed(deleted))
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut t = TestRun::new()
//!     .sql(
//!         "CREATE TABLE sessions (id INTEGER PRIMARY KEY, expires_at TEXT NOT NULL);
//!          INSERT INTO sessions VALUES (1, '2026-02-01T00:00:00Z'), (2, '2026-02-28T00:00:00Z');",
//!     )?
//!     .scheduled_for("2026-03-01T00:10:00Z")?
//!     .arg("retention_days", "7");
//!
//! assert_eq!(t.run::<Cleanup>()?, Outcome::changed(1));
//! assert_eq!(t.value("SELECT group_concat(id) FROM sessions", &[])?, Value::from("2"));
//! assert_eq!(t.log_text(), "INFO deleted 1 expired sessions\n");
//!
//! // A bad argument is the job's error, as the host would record it.
//! let mut t = t.arg("retention_days", "a week");
//! assert_eq!(t.run::<Cleanup>(), Err(JobError::fatal("retention_days must be a whole number")));
//! # Ok(())
//! # }
//! ```
//!
//! # How close to the host
//!
//! A run does what the host does where a test can tell:
//!
//! - **SQL**: the same SQLite binding and rules: parameters are `$1`, `$2`,
//!   …; values and rows convert the same way; errors have the same classes
//!   ([`DbError::Constraint`], …); foreign keys are enforced.
//! - **Grants**: the job gets the database access and key-value state its
//!   [`JobInfo`] requests (change it with [`TestRun::grant_database`],
//!   [`TestRun::deny_database`] and [`TestRun::grant_key_value`]). Without
//!   read-write access every write fails with [`DbError::Denied`], as SQLite
//!   itself refuses it.
//! - **Transactions**: a single-shot job's statements commit as they run
//!   (nothing is undone when it then fails). An item job lists each page in a
//!   savepoint that is rolled back, and runs each item in its own savepoint
//!   inside the run's transaction: a failed or skipped item's writes are
//!   undone, the others are committed at the end. A dry run
//!   ([`TestRun::dry_run`]) rolls everything back, key-value state included.
//! - **Time**: [`time::now_ms`](crate::time::now_ms) is a fixed clock (the
//!   scheduled instant unless [`TestRun::now`] says otherwise); time zones use
//!   the IANA database with the host's DST rules.
//!
//! The differences: a panic in the job propagates (fails the test) where the
//! host records a trap; there are no deadlines, memory limits or log caps;
//! item runs commit once at the end rather than in batches, and do not resume
//! from a checkpoint; HTTP answers come only from [`TestRun::http_response`]
//! and [`TestRun::http_answer`].

pub(crate) mod backend;

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering};

use backend::{Activation, Backend, Grant, HttpStub};

use crate::http::{HttpError, Method, Response};
use crate::wit::types as w;
use crate::{Capability, Context, DbAccess, DbError, ItemJob, Job, JobError, JobInfo, Outcome, Rows, Trigger, Value};

/// The scheduled instant of a run that does not set one: 2026-01-01T00:00:00Z.
pub const DEFAULT_SCHEDULED_FOR_MS: i64 = 1_767_225_600_000;

/// Result messages larger than this fail the run, as on the host.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Execution ids, unique in the process (as on the host, per database), so
/// that [`per_execution`](crate::per_execution) values never leak between runs.
static NEXT_EXECUTION_ID: AtomicI64 = AtomicI64::new(1);

/// Why a [`TestRun`] could not be set up as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestError {
    message: String,
}

impl TestError {
    fn new(message: impl Into<String>) -> Self {
        TestError { message: message.into() }
    }
}

impl fmt::Display for TestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TestError {}

/// Level of a [`LogRecord`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// `TRACE`
    Trace,
    /// `DEBUG`
    Debug,
    /// `INFO`
    Info,
    /// `WARN`
    Warn,
    /// `ERROR`
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        })
    }
}

/// One message the job logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Its level.
    pub level: Level,
    /// The message.
    pub message: String,
}

impl fmt::Display for LogRecord {
    /// `LEVEL message`, as in the execution log operators see.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.level, self.message)
    }
}

/// How an item run ended, as the host records the execution's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// No item failed (some may have been skipped).
    Succeeded,
    /// Some items failed, others succeeded or were skipped.
    Partial,
    /// Every item failed.
    Failed,
}

/// One item of an item run and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemRecord {
    /// The item's key.
    pub key: String,
    /// What [`ItemJob::run_item`] returned (an item whose work could not be
    /// committed is a [`JobError::Fatal`] here, as on the host).
    pub result: Result<Outcome, JobError>,
}

/// What an item run did: each item's result and the totals the host records.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemsReport {
    /// Every item run, in order.
    pub items: Vec<ItemRecord>,
    /// Items that succeeded.
    pub ok: u64,
    /// Items that returned [`JobError::Skip`] (their writes are rolled back).
    pub skipped: u64,
    /// Items that failed (their writes are rolled back).
    pub failed: u64,
    /// Rows changed, summed over the items that succeeded.
    pub changed: u64,
    /// Whether this was a dry run (nothing was committed).
    pub dry_run: bool,
}

impl ItemsReport {
    /// Items run.
    pub fn total(&self) -> u64 {
        self.items.len() as u64
    }

    /// The execution's status, by the host's rule.
    pub fn status(&self) -> RunStatus {
        if self.failed == 0 {
            RunStatus::Succeeded
        } else if self.ok == 0 && self.skipped == 0 {
            RunStatus::Failed
        } else {
            RunStatus::Partial
        }
    }

    /// The result of the item with this key (the first, if keys repeat).
    pub fn result(&self, key: &str) -> Option<&Result<Outcome, JobError>> {
        self.items.iter().find(|i| i.key == key).map(|i| &i.result)
    }

    /// The keys of the items that ended with an error of any class, with it.
    pub fn problems(&self) -> Vec<(&str, &JobError)> {
        self.items.iter().filter_map(|i| i.result.as_ref().err().map(|e| (i.key.as_str(), e))).collect()
    }

    /// The summary the host records, e.g. `5 items: 3 ok, 2 skipped, 0 failed`.
    pub fn summary(&self) -> String {
        let mut s = format!("{} items: {} ok, {} skipped, {} failed", self.total(), self.ok, self.skipped, self.failed);
        if self.dry_run {
            s.push_str(&format!("; dry run: {} changes would have been made, nothing committed", self.changed));
        }
        s
    }
}

/// One job under test: its database and state, and the context of its next
/// run. See the [module documentation](self).
///
/// Setup methods take and return the run so they chain; those that parse
/// their input return a [`TestError`] for bad input. A `TestRun` can run
/// jobs any number of times; each run is a new execution (new id, fresh log)
/// over the same database and state.
pub struct TestRun {
    backend: Rc<RefCell<Backend>>,
    scheduled_for_ms: i64,
    now_ms: Option<i64>,
    timezone: Option<String>,
    date: Option<String>,
    limit: Option<u64>,
    dry_run: bool,
    trigger: Trigger,
    attempt: u32,
    args: Vec<(String, String)>,
    database: Option<Option<DbAccess>>,
    key_value: Option<bool>,
    last_context: Option<Context>,
}

impl Default for TestRun {
    fn default() -> Self {
        TestRun::new()
    }
}

impl fmt::Debug for TestRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestRun")
            .field("scheduled_for_ms", &self.scheduled_for_ms)
            .field("timezone", &self.timezone)
            .field("args", &self.args)
            .field("dry_run", &self.dry_run)
            .finish_non_exhaustive()
    }
}

impl TestRun {
    /// A run over a fresh, empty in-memory database, scheduled for
    /// [`DEFAULT_SCHEDULED_FOR_MS`] by the schedule ([`Trigger::Schedule`],
    /// attempt 1) in the job's default time zone, with no arguments.
    pub fn new() -> TestRun {
        TestRun {
            backend: Rc::new(RefCell::new(Backend::new())),
            scheduled_for_ms: DEFAULT_SCHEDULED_FOR_MS,
            now_ms: None,
            timezone: None,
            date: None,
            limit: None,
            dry_run: false,
            trigger: Trigger::Schedule,
            attempt: 1,
            args: Vec::new(),
            database: None,
            key_value: None,
            last_context: None,
        }
    }

    /// Runs SQL statements (`;`-separated, no parameters) against the
    /// database: the schema and the fixtures.
    pub fn sql(self, sql: &str) -> Result<TestRun, TestError> {
        self.backend
            .borrow()
            .batch(sql)
            .map_err(|e| TestError::new(format!("fixture SQL failed: {}", DbError::from(e))))?;
        Ok(self)
    }

    /// The instant the run stands for, as RFC 3339 text (`2026-03-01T00:10:00Z`,
    /// `2026-03-01T09:10:00+09:00`).
    pub fn scheduled_for(self, instant: &str) -> Result<TestRun, TestError> {
        let ms = backend::time::parse_instant(instant).map_err(TestError::new)?;
        Ok(self.scheduled_for_ms(ms))
    }

    /// The instant the run stands for, in milliseconds since the Unix epoch.
    pub fn scheduled_for_ms(mut self, ms: i64) -> TestRun {
        self.scheduled_for_ms = ms;
        self
    }

    /// What [`time::now_ms`](crate::time::now_ms) returns during the run, as
    /// RFC 3339 text. By default it is the scheduled instant. The clock does
    /// not move while the job runs.
    pub fn now(self, instant: &str) -> Result<TestRun, TestError> {
        let ms = backend::time::parse_instant(instant).map_err(TestError::new)?;
        Ok(self.now_ms(ms))
    }

    /// What [`time::now_ms`](crate::time::now_ms) returns during the run.
    pub fn now_ms(mut self, ms: i64) -> TestRun {
        self.now_ms = Some(ms);
        self
    }

    /// The IANA zone the job is scheduled in; by default its
    /// [`JobInfo::timezone`] (`UTC` if empty).
    pub fn timezone(mut self, zone: &str) -> Result<TestRun, TestError> {
        backend::time::parse_zone(zone).map_err(TestError::new)?;
        self.timezone = Some(zone.to_string());
        Ok(self)
    }

    /// The date an operator asked for (`--date`, `YYYY-MM-DD`): a backfill.
    pub fn date(mut self, date: &str) -> Result<TestRun, TestError> {
        if crate::Date::parse(date).is_none() {
            return Err(TestError::new(format!("invalid date {date:?}, expected YYYY-MM-DD")));
        }
        self.date = Some(date.to_string());
        Ok(self)
    }

    /// Adds an operator argument (`--arg key=value`); a later value for the
    /// same key replaces the earlier one.
    pub fn arg(mut self, key: &str, value: &str) -> TestRun {
        self.args.retain(|(k, _)| k != key);
        self.args.push((key.to_string(), value.to_string()));
        self
    }

    /// At most this many items (`--limit`).
    pub fn limit(mut self, items: u64) -> TestRun {
        self.limit = Some(items);
        self
    }

    /// A dry run (`--dry-run`): the job is told so, and nothing it writes to
    /// the database or the key-value state is kept.
    pub fn dry_run(mut self) -> TestRun {
        self.dry_run = true;
        self
    }

    /// Why the execution started (default [`Trigger::Schedule`]).
    pub fn trigger(mut self, trigger: Trigger) -> TestRun {
        self.trigger = trigger;
        self
    }

    /// The attempt number (default 1; 2 is the first retry).
    pub fn attempt(mut self, attempt: u32) -> TestRun {
        self.attempt = attempt;
        self
    }

    /// Grants this database access, whatever the job requests (by default it
    /// gets what its [`JobInfo`] requests).
    pub fn grant_database(mut self, access: DbAccess) -> TestRun {
        self.database = Some(Some(access));
        self
    }

    /// Grants no database access: every database call fails with
    /// [`DbError::Denied`].
    pub fn deny_database(mut self) -> TestRun {
        self.database = Some(None);
        self
    }

    /// Grants (or refuses) the key-value state, whatever the job requests (by
    /// default it is granted if its [`JobInfo`] requests it).
    pub fn grant_key_value(mut self, granted: bool) -> TestRun {
        self.key_value = Some(granted);
        self
    }

    /// Sets a key of the job's key-value state before the run, as an earlier
    /// execution would have left it.
    pub fn state_value(self, key: &str, value: impl Into<Vec<u8>>) -> TestRun {
        self.backend.borrow_mut().state.insert(key.to_string(), value.into());
        self
    }

    /// Answers HTTP requests (any method) to URLs starting with `url_prefix`
    /// with this status and body. Where prefixes overlap, the longest wins.
    /// Requests no stub answers fail with [`HttpError::Denied`].
    pub fn http_response(self, url_prefix: &str, status: u16, body: impl Into<Vec<u8>>) -> TestRun {
        let response = Response { status, headers: Vec::new(), body: body.into(), url: String::new() };
        self.http_answer(None, url_prefix, Ok(response))
    }

    /// Answers HTTP requests to URLs starting with `url_prefix` (with this
    /// method, or any if `None`) with a full response or an error.
    pub fn http_answer(self, method: Option<Method>, url_prefix: &str, answer: Result<Response, HttpError>) -> TestRun {
        let stub = HttpStub { method, prefix: url_prefix.to_string(), answer };
        self.backend.borrow_mut().http.push(stub);
        self
    }

    /// Runs a single-shot job once and returns what it returned.
    ///
    /// Statements commit as they run, as on the host; in a dry run they are
    /// all rolled back at the end.
    pub fn run<J: Job>(&mut self) -> Result<Outcome, JobError> {
        let info = J::info();
        check_info(&info)?;
        let session = self.start(&info);
        let ctx = session.ctx.clone();
        let has_db = session.has_db;
        if self.dry_run && has_db {
            session.control("BEGIN", "cannot start the dry-run transaction")?;
        }
        let result = J::run(&ctx);
        drop(session);
        match result {
            Ok(outcome) => match outcome.message.as_ref().map(String::len) {
                Some(len) if len > MAX_MESSAGE_BYTES => Err(JobError::fatal(format!(
                    "the job's result message is {len} bytes; results are limited to {MAX_MESSAGE_BYTES} bytes"
                ))),
                _ => Ok(outcome),
            },
            Err(e) => Err(e),
        }
    }

    /// Runs an item job to its end the way the host does: pages through
    /// [`ItemJob::items`] (each page listed in a savepoint that is rolled
    /// back), runs each item in its own savepoint (rolled back if the item
    /// fails or is skipped), stops after [`TestRun::limit`] items, and
    /// commits (or, in a dry run, rolls back) at the end.
    ///
    /// Fails with the job's error if listing a page fails; items of earlier
    /// pages stay committed then, as on the host.
    pub fn run_items<J: ItemJob>(&mut self) -> Result<ItemsReport, JobError> {
        let info = J::info();
        check_info(&info)?;
        let session = self.start(&info);
        let ctx = session.ctx.clone();
        let limit = self.limit.unwrap_or(u64::MAX);
        let mut report =
            ItemsReport { items: Vec::new(), ok: 0, skipped: 0, failed: 0, changed: 0, dry_run: self.dry_run };
        if session.access == Some(DbAccess::ReadWrite) && !self.dry_run {
            // The host keeps its item checkpoints in the application database.
            session.control(CREATE_CHECKPOINTS, "cannot create the item checkpoint table")?;
        }
        if session.has_db {
            let begin = if session.access == Some(DbAccess::ReadWrite) { "BEGIN IMMEDIATE" } else { "BEGIN" };
            session.control(begin, "cannot begin a transaction")?;
        }
        let mut cursor: Option<String> = None;
        'pages: loop {
            if report.total() >= limit {
                break;
            }
            session.savepoint();
            let page = J::items(&ctx, cursor.as_deref());
            session.rollback_savepoint();
            let page = page.map_err(|e| {
                let message = |m: &str| format!("listing items: {m}");
                match e {
                    JobError::Skip(m) => JobError::Skip(message(&m)),
                    JobError::Retryable(m) => JobError::Retryable(message(&m)),
                    JobError::Fatal(m) => JobError::Fatal(message(&m)),
                }
            });
            let page = match page {
                Ok(page) => page,
                Err(e) => {
                    session.commit(&mut report);
                    return Err(e);
                }
            };
            for item in page.items {
                if report.total() >= limit {
                    break 'pages;
                }
                session.savepoint();
                let result = J::run_item(&ctx, &item);
                match &result {
                    Ok(outcome) => {
                        session.release_savepoint();
                        report.ok += 1;
                        report.changed += outcome.changed;
                    }
                    Err(e) => {
                        session.rollback_savepoint();
                        if matches!(e, JobError::Skip(_)) {
                            report.skipped += 1;
                        } else {
                            report.failed += 1;
                        }
                    }
                }
                report.items.push(ItemRecord { key: item.key, result });
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        session.commit(&mut report);
        Ok(report)
    }

    /// Runs `f` as a new execution of a job that requests read-write
    /// database access and key-value state (unless granted otherwise), with
    /// the SDK's calls served by this run's backend: for testing a job's
    /// helper functions, or [`ItemJob::items`] and [`ItemJob::run_item`] one
    /// at a time. No transaction is opened for it: its statements commit as
    /// they run.
    pub fn within<R>(&mut self, f: impl FnOnce(&Context) -> R) -> R {
        let info = JobInfo::new("test", "", "").read_write_database().key_value();
        let session = self.start(&info);
        let r = f(&session.ctx);
        drop(session);
        r
    }

    /// Runs a statement returning rows against the database (no grant
    /// applies), with `$1`-style parameters: to look at what the job did.
    pub fn query(&self, sql: &str, params: &[Value]) -> Result<Rows, DbError> {
        let params: Vec<w::Value> = params.iter().cloned().map(Into::into).collect();
        self.backend.borrow().query(sql, &params).map(Into::into).map_err(Into::into)
    }

    /// The first column of the first row a statement returns (`Null` if it
    /// returns none): `t.value("SELECT count(*) FROM sessions", &[])?`.
    pub fn value(&self, sql: &str, params: &[Value]) -> Result<Value, DbError> {
        Ok(self.query(sql, params)?.into_iter().next().map(|r| r.get(0).clone()).unwrap_or(Value::Null))
    }

    /// Runs a statement changing data (no grant applies) and returns the
    /// number of rows affected: to change fixtures between runs.
    pub fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let params: Vec<w::Value> = params.iter().cloned().map(Into::into).collect();
        self.backend.borrow().execute(sql, &params).map_err(Into::into)
    }

    /// What the last run logged, in order.
    pub fn logs(&self) -> Vec<LogRecord> {
        self.backend.borrow().logs.clone()
    }

    /// What the last run logged, one `LEVEL message` line each.
    pub fn log_text(&self) -> String {
        self.backend.borrow().logs.iter().map(|l| format!("{l}\n")).collect()
    }

    /// The last progress the last run reported: `(done, total)`.
    pub fn progress(&self) -> Option<(u64, Option<u64>)> {
        self.backend.borrow().progress
    }

    /// A key of the job's key-value state.
    pub fn state(&self, key: &str) -> Option<Vec<u8>> {
        self.backend.borrow().state.get(key).cloned()
    }

    /// The HTTP requests the last run sent (method and URL), stubbed or not.
    pub fn http_requests(&self) -> Vec<(Method, String)> {
        self.backend.borrow().http_requests.clone()
    }

    /// The context the last run was given.
    pub fn last_context(&self) -> Option<&Context> {
        self.last_context.as_ref()
    }

    fn grant(&self, info: &JobInfo) -> Grant {
        let requested = info.capabilities.iter().find_map(|c| match c {
            Capability::Database(a) => Some(*a),
            _ => None,
        });
        let key_value = info.capabilities.contains(&Capability::KeyValue);
        Grant { database: self.database.unwrap_or(requested), key_value: self.key_value.unwrap_or(key_value) }
    }

    fn context(&self, info: &JobInfo) -> Context {
        let zone = match &self.timezone {
            Some(z) => z.clone(),
            None if info.default_timezone.trim().is_empty() => "UTC".into(),
            None => info.default_timezone.clone(),
        };
        Context {
            execution_id: NEXT_EXECUTION_ID.fetch_add(1, Ordering::Relaxed),
            job_name: info.name.trim().to_string(),
            scheduled_for_ms: self.scheduled_for_ms,
            timezone: zone,
            trigger: self.trigger,
            attempt: self.attempt,
            date: self.date.clone(),
            limit: self.limit,
            dry_run: self.dry_run,
            args: self.args.clone(),
        }
    }

    /// Makes this run's backend current for a new execution.
    fn start(&mut self, info: &JobInfo) -> Session {
        let ctx = self.context(info);
        let grant = self.grant(info);
        self.last_context = Some(ctx.clone());
        let activation = Activation::new(&self.backend);
        {
            let mut b = self.backend.borrow_mut();
            b.grant = Some(grant);
            b.now_ms = self.now_ms.unwrap_or(self.scheduled_for_ms);
            b.job_name = ctx.job_name.clone();
            b.logs.clear();
            b.progress = None;
            b.http_requests.clear();
            // The host's read-only grant: SQLite refuses every write. (This
            // fails only if the database could not be opened, and then every
            // statement fails anyway.)
            let query_only = if grant.database == Some(DbAccess::ReadOnly) { "ON" } else { "OFF" };
            let _ = b.batch(&format!("PRAGMA query_only = {query_only}"));
        }
        let saved_state = self.dry_run.then(|| self.backend.borrow().state.clone());
        Session {
            backend: self.backend.clone(),
            _activation: activation,
            ctx,
            access: grant.database,
            has_db: grant.database.is_some(),
            dry_run: self.dry_run,
            saved_state,
        }
    }
}

const CREATE_CHECKPOINTS: &str = "CREATE TABLE IF NOT EXISTS sundial_item_checkpoints (
    job TEXT NOT NULL,
    run_key TEXT NOT NULL,
    cursor TEXT,
    last_key TEXT,
    done INTEGER NOT NULL,
    execution_id INTEGER NOT NULL,
    PRIMARY KEY (job, run_key)
)";

/// The host's check of a job name.
fn check_info(info: &JobInfo) -> Result<(), JobError> {
    let name = info.name.trim();
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !name.starts_with('-');
    if valid {
        Ok(())
    } else {
        Err(JobError::fatal(format!(
            "the host would not load this job: job name {name:?} is invalid: use 1-64 lowercase letters, digits, '-' or '_'"
        )))
    }
}

/// One execution in progress. Dropping it (also when the job panics) ends
/// it: an open transaction is rolled back, the grant lifted, a dry run's
/// key-value changes undone and the previous backend made current again.
struct Session {
    backend: Rc<RefCell<Backend>>,
    _activation: Activation,
    ctx: Context,
    access: Option<DbAccess>,
    has_db: bool,
    dry_run: bool,
    saved_state: Option<std::collections::BTreeMap<String, Vec<u8>>>,
}

impl Session {
    fn control(&self, sql: &str, doing: &str) -> Result<(), JobError> {
        self.backend.borrow().batch(sql).map_err(|e| {
            let e = DbError::from(e);
            let message = format!("{doing}: {e}");
            if matches!(e, DbError::Busy(_)) { JobError::retryable(message) } else { JobError::fatal(message) }
        })
    }

    /// Opens the item savepoint (inside the run's transaction, if any).
    fn savepoint(&self) {
        if self.has_db {
            let _ = self.backend.borrow().batch("SAVEPOINT sundial_item");
        }
    }

    fn release_savepoint(&self) {
        if self.has_db {
            let _ = self.backend.borrow().batch("RELEASE sundial_item");
        }
    }

    fn rollback_savepoint(&self) {
        if self.has_db {
            let _ = self.backend.borrow().batch("ROLLBACK TO sundial_item; RELEASE sundial_item");
        }
    }

    /// Ends an item run's transaction: rolls back in a dry run, else
    /// commits; if the commit fails, the items that succeeded count as failed.
    fn commit(&self, report: &mut ItemsReport) {
        let b = self.backend.borrow();
        if !b.in_transaction() {
            return;
        }
        if self.dry_run {
            let _ = b.batch("ROLLBACK");
            return;
        }
        if let Err(e) = b.batch("COMMIT") {
            let _ = b.batch("ROLLBACK");
            let message = format!("commit failed, the batch's work was rolled back: {}", DbError::from(e));
            for item in report.items.iter_mut().filter(|i| i.result.is_ok()) {
                item.result = Err(JobError::fatal(message.clone()));
            }
            report.failed += report.ok;
            report.ok = 0;
            report.changed = 0;
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let Ok(mut b) = self.backend.try_borrow_mut() else { return };
        if b.in_transaction() {
            // A dry run's transaction, or one the job opened and left open:
            // the host's session rolls back whatever is uncommitted.
            let _ = b.batch("ROLLBACK");
        }
        let _ = b.batch("PRAGMA query_only = OFF");
        b.grant = None;
        if let Some(state) = self.saved_state.take() {
            b.state = state;
        }
    }
}

#[cfg(test)]
mod tests;

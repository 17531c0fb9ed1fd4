//! The application database that jobs read and write through the `database`
//! capability: a SQLite file, or a Postgres database
//! ([`appdb_pg`](super::appdb_pg)).
//!
//! Guests send SQL with `$1`-style placeholders and typed values; rows come back
//! as typed values. One [`AppSession`] per execution holds at most one
//! connection and owns its transaction state, so the host — not the guest —
//! decides what is committed: item jobs run each item in a savepoint inside a
//! batch transaction, dry runs roll everything back, and read-only grants are
//! enforced by SQLite itself (`PRAGMA query_only`).
//!
//! Calls are synchronous: a session is only used on the worker thread that
//! runs its guest, where blocking is expected, and a direct call costs a few
//! microseconds where a hop through an async driver costs tens. Statements
//! are prepared once per connection and cached. A session can be given an
//! interrupt check (deadline, cancellation) that SQLite polls while a
//! statement runs, so a runaway query stops at the execution's deadline.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::appdb_pg::{PgConn, Watch};

use crate::model::DbAccess;

/// Items per batch transaction on Postgres at most. Each item that writes
/// runs in a subtransaction (its savepoint), and Postgres caches only 64
/// subtransaction ids per transaction: past that, every snapshot taken
/// anywhere in the database looks them up in `pg_subtrans`, and the whole
/// server slows down (the "subtransaction overflow").
pub const PG_BATCH_ITEMS: u64 = 64;
/// How long a statement waits for another writer before failing as busy.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections kept for reuse.
const MAX_IDLE: usize = 8;
/// Prepared statements cached per connection.
const STATEMENT_CACHE: usize = 128;
/// SQLite virtual-machine steps between interrupt checks.
const INTERRUPT_CHECK_STEPS: i32 = 10_000;

/// Writers in this process waiting for a SQLite write lock.
static WRITE_WAITERS: AtomicUsize = AtomicUsize::new(0);
/// How long a writer that just committed gives way to a waiting one.
const GIVE_WAY: Duration = Duration::from_millis(50);

/// Takes SQLite's write lock fairly among this process's connections.
///
/// SQLite has no queue for its write lock: a connection that commits and
/// begins again at once (an item job's batches) can starve every other
/// writer, whose busy handler happens to poll while the lock is held. So a
/// writer first gives way while others are waiting (bounded by
/// [`GIVE_WAY`]; Sundial's own short writes never give way), then counts
/// itself as waiting while it takes the lock; and busy handlers poll every
/// millisecond ([`retry_busy`]).
pub(crate) fn take_write_lock<T>(give_way: bool, begin: impl FnOnce() -> T) -> T {
    let start = std::time::Instant::now();
    while give_way && WRITE_WAITERS.load(Ordering::SeqCst) > 0 && start.elapsed() < GIVE_WAY {
        std::thread::sleep(Duration::from_millis(1));
    }
    WRITE_WAITERS.fetch_add(1, Ordering::SeqCst);
    let r = begin();
    WRITE_WAITERS.fetch_sub(1, Ordering::SeqCst);
    r
}

/// Counts a write of Sundial's own (through sqlx, whose busy handler
/// Sundial cannot replace) as waiting for the write lock while it lives, so
/// that item jobs' batches on the same file give way to it.
pub(crate) struct WriteTurn(());

impl WriteTurn {
    /// Starts waiting.
    pub(crate) fn take() -> WriteTurn {
        WRITE_WAITERS.fetch_add(1, Ordering::SeqCst);
        WriteTurn(())
    }
}

impl Drop for WriteTurn {
    fn drop(&mut self) {
        WRITE_WAITERS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A busy handler that retries every millisecond for about [`BUSY_TIMEOUT`].
pub(crate) fn retry_busy(attempt: i32) -> bool {
    std::thread::sleep(Duration::from_millis(1));
    u128::try_from(attempt).unwrap_or(0) < BUSY_TIMEOUT.as_millis()
}

/// A value bound to or read from the application database.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// NULL.
    Null,
    /// An integer.
    Integer(i64),
    /// A float.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

/// Rows returned by a query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SqlRows {
    /// Column names.
    pub columns: Vec<String>,
    /// One value per column per row.
    pub rows: Vec<Vec<SqlValue>>,
}

/// Why an application-database call failed, in the classes guests can match.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppDbError {
    /// The job lacks the grant.
    #[error("{0}")]
    Denied(String),
    /// A constraint was violated.
    #[error("{0}")]
    Constraint(String),
    /// The database is locked or busy.
    #[error("{0}")]
    Busy(String),
    /// The interrupt check stopped the statement (deadline or cancellation).
    #[error("statement interrupted")]
    Interrupted,
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl From<rusqlite::Error> for AppDbError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, msg) => {
                let msg = msg.clone().unwrap_or_else(|| f.to_string());
                match f.code {
                    ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => AppDbError::Busy(msg),
                    ErrorCode::ReadOnly => AppDbError::Denied(format!("read-only access: {msg}")),
                    ErrorCode::ConstraintViolation => AppDbError::Constraint(msg),
                    ErrorCode::OperationInterrupted => AppDbError::Interrupted,
                    _ => AppDbError::Other(msg),
                }
            }
            _ => AppDbError::Other(e.to_string()),
        }
    }
}

/// Why the application database cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum AppDbOpenError {
    /// Not a SQLite URL or path.
    #[error("unsupported application database url {0:?} (expected sqlite://path or postgres://…)")]
    Url(String),
    /// SQLite refused to open or configure it.
    #[error("cannot open the application database {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
}

/// The file a `sqlite://path` URL (or a plain path) names.
pub fn sqlite_path(url: &str) -> Result<PathBuf, AppDbOpenError> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
    let rest = rest.split('?').next().unwrap_or(rest);
    if rest.is_empty() || rest == ":memory:" || rest.contains("://") {
        return Err(AppDbOpenError::Url(url.to_string()));
    }
    Ok(PathBuf::from(rest))
}

/// Opens one connection configured for job use: WAL, a busy timeout, foreign
/// keys on, a statement cache.
pub fn connect(path: &Path) -> Result<Connection, AppDbOpenError> {
    let open = |path: &Path| -> Result<Connection, rusqlite::Error> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_handler(Some(retry_busy))?;
        // Another process may hold the write lock while WAL is switched on;
        // the busy timeout covers that, and an existing WAL database needs no switch.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "application database is not in WAL mode");
        }
        conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;")?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(conn)
    };
    open(path).map_err(|source| AppDbOpenError::Open { path: path.to_path_buf(), source })
}

/// A handle on the application database (cheap to clone).
#[derive(Clone)]
pub struct AppDb {
    inner: Arc<Inner>,
}

/// Where a database is: a SQLite file or a Postgres database (for the
/// application database and for job state alike).
pub(super) enum Location {
    Sqlite(PathBuf),
    Postgres(Box<postgres::Config>),
}

impl Location {
    /// The database a `sqlite://path` (or plain path) or `postgres://…` URL names.
    pub(super) fn parse(url: &str) -> Result<Location, AppDbOpenError> {
        if super::is_postgres_url(url) {
            let config = url.parse::<postgres::Config>().map_err(|_| AppDbOpenError::Url(super::redact_url(url)))?;
            Ok(Location::Postgres(Box::new(config)))
        } else {
            Ok(Location::Sqlite(sqlite_path(url)?))
        }
    }
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
            Location::Postgres(c) => write!(f, "postgres database {:?}", c.get_dbname().unwrap_or("")),
        }
    }
}

struct Inner {
    location: Location,
    idle: Mutex<Vec<Conn>>,
}

/// One connection of either kind.
pub(super) enum Conn {
    Sqlite(Connection),
    Postgres(PgConn),
}

impl std::fmt::Debug for AppDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppDb").field("location", &self.inner.location).finish_non_exhaustive()
    }
}

impl AppDb {
    /// The application database at `url`: `sqlite://path` (created on first
    /// use if missing) or `postgres://…`. Connections are opened lazily, on
    /// the worker threads that use them.
    pub fn open(url: &str) -> Result<AppDb, AppDbOpenError> {
        Ok(AppDb { inner: Arc::new(Inner { location: Location::parse(url)?, idle: Mutex::new(Vec::new()) }) })
    }

    /// The database file (`None` on Postgres).
    pub fn path(&self) -> Option<&Path> {
        match &self.inner.location {
            Location::Sqlite(path) => Some(path),
            Location::Postgres(_) => None,
        }
    }

    /// A session for one execution with the given grant.
    pub fn session(&self, access: DbAccess) -> AppSession {
        AppSession {
            db: self.clone(),
            access,
            conn: None,
            tx: TxState::None,
            release_pending: false,
            interrupt: None,
            watch: None,
            interrupted: Arc::new(AtomicBool::new(false)),
        }
    }

    fn acquire(&self) -> Result<Conn, AppDbError> {
        let reused = self.inner.idle.lock().ok().and_then(|mut idle| idle.pop());
        if let Some(c) = reused {
            return Ok(c);
        }
        match &self.inner.location {
            Location::Sqlite(path) => {
                connect(path).map(Conn::Sqlite).map_err(|e| AppDbError::Other(format!("{:#}", anyhow::Error::new(e))))
            }
            Location::Postgres(config) => PgConn::connect(config).map(Conn::Postgres),
        }
    }

    fn release(&self, conn: Conn) {
        if let Ok(mut idle) = self.inner.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(conn);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxState {
    None,
    Open,
    /// A transaction with the item savepoint open inside it.
    Savepoint,
    /// On Postgres: the item savepoint asked for, to be opened before the
    /// item's first statement (an item that runs none costs no round trip).
    SavepointPending,
}

type InterruptCheck = Box<dyn FnMut() -> bool + Send + 'static>;

/// One execution's use of the application database.
pub struct AppSession {
    db: AppDb,
    access: DbAccess,
    conn: Option<Conn>,
    tx: TxState,
    /// On Postgres: a kept item's savepoint not yet released; the release
    /// goes with the next item's savepoint, in one round trip (the commit
    /// releases it otherwise).
    release_pending: bool,
    interrupt: Option<InterruptCheck>,
    /// On Postgres: the watcher polling `interrupt` while the session lives.
    watch: Option<Watch>,
    /// On Postgres: set once the interrupt check said stop.
    interrupted: Arc<AtomicBool>,
}

impl AppSession {
    /// The grant this session enforces.
    pub fn access(&self) -> DbAccess {
        self.access
    }

    /// Polled while statements run; returning true stops the statement with
    /// [`AppDbError::Interrupted`].
    pub fn interrupt_when(&mut self, check: impl FnMut() -> bool + Send + 'static) {
        self.interrupt = Some(Box::new(check));
        if self.conn.is_some() {
            self.arm_interrupt();
        }
    }

    /// Hands the interrupt check to the connection: SQLite polls it while a
    /// statement runs; on Postgres a watcher polls it.
    fn arm_interrupt(&mut self) {
        let Some(check) = self.interrupt.take() else { return };
        match &self.conn {
            Some(Conn::Sqlite(c)) => c.progress_handler(INTERRUPT_CHECK_STEPS, Some(check)),
            Some(Conn::Postgres(c)) => self.watch = Some(c.watch(check, self.interrupted.clone())),
            None => self.interrupt = Some(check),
        }
    }

    fn conn(&mut self) -> Result<&mut Conn, AppDbError> {
        if self.access == DbAccess::None {
            return Err(AppDbError::Denied(
                "this job has no database grant (set `database = \"read-only\"` or \"read-write\" for it in sundial.toml)"
                    .into(),
            ));
        }
        if self.interrupted.load(Ordering::SeqCst) {
            return Err(AppDbError::Interrupted);
        }
        if self.conn.is_none() {
            let read_only = self.access == DbAccess::ReadOnly;
            let mut conn = self.db.acquire()?;
            match &mut conn {
                Conn::Sqlite(c) => {
                    c.execute_batch(if read_only { "PRAGMA query_only = ON" } else { "PRAGMA query_only = OFF" })?
                }
                Conn::Postgres(c) => c.batch(if read_only {
                    "SET default_transaction_read_only = on"
                } else {
                    "SET default_transaction_read_only = off"
                })?,
            }
            self.conn = Some(conn);
            self.arm_interrupt();
        }
        self.conn.as_mut().ok_or_else(|| AppDbError::Other("no connection".into()))
    }

    fn exec_control(&mut self, sql: &str) -> Result<(), AppDbError> {
        match self.conn()? {
            Conn::Sqlite(c) => {
                c.prepare_cached(sql)?.execute([])?;
                Ok(())
            }
            Conn::Postgres(c) => c.batch(sql),
        }
    }

    /// Starts a transaction (no-op if one is open).
    pub fn begin(&mut self) -> Result<(), AppDbError> {
        if self.access == DbAccess::None || self.tx != TxState::None {
            return Ok(());
        }
        // IMMEDIATE takes the write lock up front, so a busy database fails here,
        // before the item did any work, rather than half-way through it.
        // (Postgres has no such lock: rows are locked as they are written.)
        if matches!(self.db.inner.location, Location::Postgres(_)) {
            self.exec_control("BEGIN")?;
        } else if self.access == DbAccess::ReadWrite {
            take_write_lock(true, || self.exec_control("BEGIN IMMEDIATE"))?;
        } else {
            self.exec_control("BEGIN")?;
        }
        self.tx = TxState::Open;
        Ok(())
    }

    /// Runs statements without parameters or results (Sundial's own
    /// tables), outside any item savepoint.
    pub(crate) fn execute_batch(&mut self, sql: &str) -> Result<(), AppDbError> {
        if self.access != DbAccess::ReadWrite {
            return Err(AppDbError::Denied("this job has no read-write database access".into()));
        }
        match self.conn()? {
            Conn::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Conn::Postgres(c) => c.batch(sql),
        }
    }

    /// The database this session is on.
    pub fn database(&self) -> &AppDb {
        &self.db
    }

    /// Whether the session is on Postgres.
    pub fn is_postgres(&self) -> bool {
        self.on_postgres()
    }

    /// Whether a transaction is open.
    pub fn in_transaction(&self) -> bool {
        self.tx != TxState::None
    }

    /// Whether the session may hold the database file's write lock: a
    /// read-write session whose connection is inside a transaction (the
    /// host's, or one the guest began itself).
    pub fn may_hold_write_lock(&self) -> bool {
        self.access == DbAccess::ReadWrite && matches!(self.conn.as_ref(), Some(Conn::Sqlite(c)) if !c.is_autocommit())
    }

    /// Items per batch transaction: `default`, or fewer where the database
    /// needs it ([`PG_BATCH_ITEMS`] on Postgres).
    pub fn batch_items(&self, default: u64) -> u64 {
        if self.on_postgres() { default.min(PG_BATCH_ITEMS) } else { default }
    }

    fn on_postgres(&self) -> bool {
        matches!(self.db.inner.location, Location::Postgres(_))
    }

    /// Opens the item savepoint inside the open transaction (on Postgres,
    /// just before the item's first statement).
    pub fn savepoint(&mut self) -> Result<(), AppDbError> {
        if self.tx != TxState::Open {
            return Ok(());
        }
        if self.on_postgres() {
            self.tx = TxState::SavepointPending;
            return Ok(());
        }
        self.exec_control("SAVEPOINT sundial_item")?;
        self.tx = TxState::Savepoint;
        Ok(())
    }

    /// Opens a savepoint asked for on Postgres, with the release of the
    /// previous item's in the same round trip.
    fn open_pending_savepoint(&mut self) -> Result<(), AppDbError> {
        if self.tx != TxState::SavepointPending {
            return Ok(());
        }
        let sql = if self.release_pending {
            "RELEASE sundial_item; SAVEPOINT sundial_item"
        } else {
            "SAVEPOINT sundial_item"
        };
        self.exec_control(sql)?;
        self.release_pending = false;
        self.tx = TxState::Savepoint;
        Ok(())
    }

    /// Keeps the item's work (part of the transaction, committed with it).
    pub fn release(&mut self) -> Result<(), AppDbError> {
        match self.tx {
            TxState::SavepointPending => {
                self.tx = TxState::Open;
                Ok(())
            }
            TxState::Savepoint => {
                self.tx = TxState::Open;
                if self.on_postgres() {
                    self.release_pending = true;
                    return Ok(());
                }
                self.exec_control("RELEASE sundial_item")
            }
            TxState::None | TxState::Open => Ok(()),
        }
    }

    /// Undoes the item's work; the transaction stays open.
    pub fn rollback_item(&mut self) -> Result<(), AppDbError> {
        match self.tx {
            TxState::SavepointPending => {
                self.tx = TxState::Open;
                Ok(())
            }
            TxState::Savepoint => {
                self.tx = TxState::Open;
                if self.on_postgres() {
                    return self.exec_control("ROLLBACK TO sundial_item; RELEASE sundial_item");
                }
                self.exec_control("ROLLBACK TO sundial_item")?;
                self.exec_control("RELEASE sundial_item")
            }
            TxState::None | TxState::Open => Ok(()),
        }
    }

    /// Commits the open transaction, if any.
    pub fn commit(&mut self) -> Result<(), AppDbError> {
        self.commit_with("COMMIT")
    }

    /// Commits the open transaction without waiting for its WAL to reach
    /// the disk (Postgres: `synchronous_commit = off` for this transaction
    /// alone; the same round trip). Visible at once, durable a moment later:
    /// the first ordinary commit after it, on any connection to the server,
    /// makes it durable too (the WAL is flushed in order). A server crash
    /// before then loses it whole — so use it only for work whose record of
    /// progress commits with it, and end with an ordinary [`commit`](Self::commit).
    /// On SQLite the same as `commit`.
    pub fn commit_relaxed(&mut self) -> Result<(), AppDbError> {
        if self.on_postgres() { self.commit_with("SET LOCAL synchronous_commit = off; COMMIT") } else { self.commit() }
    }

    fn commit_with(&mut self, sql: &str) -> Result<(), AppDbError> {
        if self.tx == TxState::None {
            return Ok(());
        }
        self.tx = TxState::None;
        self.release_pending = false;
        let r = self.exec_control(sql);
        if r.is_err() {
            // A failed COMMIT may leave the transaction open: undo it.
            let _ = self.exec_control("ROLLBACK");
        }
        r
    }

    /// Rolls back the open transaction, if any.
    pub fn rollback(&mut self) -> Result<(), AppDbError> {
        if self.tx == TxState::None {
            return Ok(());
        }
        self.tx = TxState::None;
        self.release_pending = false;
        self.exec_control("ROLLBACK")
    }

    /// Runs a statement returning rows.
    pub fn query(&mut self, sql: &str, params: &[SqlValue]) -> Result<SqlRows, AppDbError> {
        self.open_pending_savepoint()?;
        let conn = match self.conn()? {
            Conn::Sqlite(c) => c,
            Conn::Postgres(c) => return c.query(sql, params),
        };
        let mut stmt = conn.prepare_cached(sql)?;
        bind_all(&mut stmt, params)?;
        let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
        let n = columns.len();
        let mut out = Vec::new();
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(n);
            for i in 0..n {
                values.push(decode(row.get_ref(i)?));
            }
            out.push(values);
        }
        Ok(SqlRows { columns, rows: out })
    }

    /// Runs a statement changing data; returns rows affected.
    pub fn execute(&mut self, sql: &str, params: &[SqlValue]) -> Result<u64, AppDbError> {
        if self.access == DbAccess::ReadOnly {
            return Err(AppDbError::Denied("this job has read-only database access".into()));
        }
        self.open_pending_savepoint()?;
        let conn = match self.conn()? {
            Conn::Sqlite(c) => c,
            Conn::Postgres(c) => return c.execute(sql, params),
        };
        let mut stmt = conn.prepare_cached(sql)?;
        bind_all(&mut stmt, params)?;
        let mut rows = stmt.raw_query();
        while rows.next()?.is_some() {}
        drop(rows);
        Ok(conn.changes())
    }

    /// Ends the session: rolls back anything uncommitted and returns the
    /// connection for reuse in its default state.
    pub fn close(mut self) {
        let _ = self.rollback();
        self.watch = None;
        match self.conn.take() {
            Some(Conn::Sqlite(conn)) => {
                conn.progress_handler(0, None::<fn() -> bool>);
                let reset = conn.execute_batch("PRAGMA query_only = OFF");
                // A statement that left a transaction open behind our back, or a
                // connection that cannot be reset, is not reused.
                if reset.is_ok() && conn.is_autocommit() {
                    self.db.release(Conn::Sqlite(conn));
                }
            }
            Some(Conn::Postgres(mut conn)) => {
                // Ends a transaction a statement may have left open (a
                // warning, not an error, when there is none); a cancelled or
                // broken connection is not reused.
                let reusable =
                    !self.interrupted.load(Ordering::SeqCst) && conn.batch("ROLLBACK").is_ok() && conn.is_usable();
                if reusable {
                    self.db.release(Conn::Postgres(conn));
                }
            }
            None => {}
        }
    }
}

impl Drop for AppSession {
    fn drop(&mut self) {
        if let Some(Conn::Sqlite(conn)) = self.conn.take() {
            // Dropped without close (a panic): never reuse it.
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
}

/// Binds `$N` (and `?N`, `?`) placeholders; other parameter names are
/// refused, as is a count mismatch.
fn bind_all(stmt: &mut rusqlite::CachedStatement<'_>, params: &[SqlValue]) -> Result<(), AppDbError> {
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
                        return Err(AppDbError::Other(format!(
                            "parameter {name} is not supported; use $1, $2, … in the order of the values"
                        )));
                    }
                }
            }
        };
        highest = highest.max(n);
        let Some(value) = params.get(n - 1) else {
            return Err(AppDbError::Other(format!(
                "the statement uses parameter ${n} but {} value{} given",
                params.len(),
                if params.len() == 1 { " was" } else { "s were" }
            )));
        };
        let bound = match value {
            SqlValue::Null => stmt.raw_bind_parameter(idx, rusqlite::types::Null),
            SqlValue::Integer(i) => stmt.raw_bind_parameter(idx, i),
            SqlValue::Real(f) => stmt.raw_bind_parameter(idx, f),
            SqlValue::Text(s) => stmt.raw_bind_parameter(idx, s.as_str()),
            SqlValue::Blob(b) => stmt.raw_bind_parameter(idx, b.as_slice()),
        };
        bound?;
    }
    if highest < params.len() {
        return Err(AppDbError::Other(format!(
            "{} values given but the statement uses {highest} parameter{}",
            params.len(),
            if highest == 1 { "" } else { "s" }
        )));
    }
    Ok(())
}

fn decode(v: ValueRef<'_>) -> SqlValue {
    match v {
        ValueRef::Null => SqlValue::Null,
        ValueRef::Integer(i) => SqlValue::Integer(i),
        ValueRef::Real(f) => SqlValue::Real(f),
        ValueRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, AppDb) {
        let dir = tempfile::tempdir().unwrap();
        let db = AppDb::open(&format!("sqlite://{}", dir.path().join("app.db").display())).unwrap();
        let mut s = db.session(DbAccess::ReadWrite);
        s.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE, score REAL, data BLOB)", &[]).unwrap();
        s.close();
        (dir, db)
    }

    #[test]
    fn placeholders_bind_by_number_whatever_their_order() {
        let (_d, db) = db();
        let mut s = db.session(DbAccess::ReadWrite);
        let n = s
            .execute(
                "INSERT INTO t (name, id) VALUES ($2, $1)",
                &[SqlValue::Integer(7), SqlValue::Text("seven".into())],
            )
            .unwrap();
        assert_eq!(n, 1);
        let rows = s.query("SELECT id, name, score FROM t WHERE id = $1", &[SqlValue::Integer(7)]).unwrap();
        assert_eq!(rows.columns, vec!["id", "name", "score"]);
        assert_eq!(rows.rows, vec![vec![SqlValue::Integer(7), SqlValue::Text("seven".into()), SqlValue::Null]]);
        let err = s.query("SELECT $2", &[SqlValue::Integer(1)]).unwrap_err();
        assert!(err.to_string().contains("uses parameter $2 but 1 value was given"), "{err}");
        let err = s.query("SELECT $1", &[SqlValue::Integer(1), SqlValue::Integer(2)]).unwrap_err();
        assert!(err.to_string().contains("2 values given"), "{err}");
        let err = s.query("SELECT :name", &[SqlValue::Integer(1)]).unwrap_err();
        assert!(err.to_string().contains(":name is not supported"), "{err}");
        s.close();
    }

    #[test]
    fn savepoints_keep_good_items_and_undo_failed_ones() {
        let (_d, db) = db();
        let mut s = db.session(DbAccess::ReadWrite);
        s.begin().unwrap();
        for (id, ok) in [(1, true), (2, false), (3, true)] {
            s.savepoint().unwrap();
            s.execute("INSERT INTO t (id) VALUES ($1)", &[SqlValue::Integer(id)]).unwrap();
            if ok { s.release().unwrap() } else { s.rollback_item().unwrap() }
        }
        s.commit().unwrap();
        let rows = s.query("SELECT id FROM t ORDER BY id", &[]).unwrap();
        assert_eq!(rows.rows, vec![vec![SqlValue::Integer(1)], vec![SqlValue::Integer(3)]]);
        s.close();
    }

    #[test]
    fn grants_are_enforced_by_the_database() {
        let (_d, db) = db();
        let mut s = db.session(DbAccess::ReadOnly);
        let err = s.query("INSERT INTO t (id) VALUES (1) RETURNING id", &[]).unwrap_err();
        assert!(matches!(err, AppDbError::Denied(_)), "{err:?}");
        s.close();
        // The connection went back to the pool writable again.
        let mut s = db.session(DbAccess::ReadWrite);
        s.execute("INSERT INTO t (id) VALUES (1)", &[]).unwrap();
        s.close();
        let mut s = db.session(DbAccess::None);
        assert!(matches!(s.query("SELECT 1", &[]), Err(AppDbError::Denied(_))));
    }

    #[test]
    fn constraint_violations_and_interrupts_are_classified() {
        let (_d, db) = db();
        let mut s = db.session(DbAccess::ReadWrite);
        s.execute("INSERT INTO t (id, name) VALUES (1, 'a')", &[]).unwrap();
        let err = s.execute("INSERT INTO t (id, name) VALUES (2, 'a')", &[]).unwrap_err();
        assert!(matches!(err, AppDbError::Constraint(_)), "{err:?}");
        s.interrupt_when(|| true);
        let err = s
            .query("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c", &[])
            .unwrap_err();
        assert_eq!(err, AppDbError::Interrupted);
        s.close();
    }

    #[test]
    fn urls_name_files() {
        assert_eq!(sqlite_path("sqlite://a/b.db").unwrap(), PathBuf::from("a/b.db"));
        assert_eq!(sqlite_path("sqlite:///abs/b.db?mode=rwc").unwrap(), PathBuf::from("/abs/b.db"));
        assert!(sqlite_path("postgres://x").is_err());
        assert!(sqlite_path("sqlite::memory:").is_err());
    }
}

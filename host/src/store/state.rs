//! Job-private key-value state (the `state` interface of `sundial:job`),
//! kept in Sundial's own database (table `job_state`, keyed by job name and
//! key; a SQLite file or Postgres) so that it survives new versions of a job
//! and host restarts, and is shared by the hosts on one Postgres database.
//!
//! Guest calls are synchronous and run on the worker thread of their
//! execution, like application-database calls: each call is a direct SQLite
//! statement on a connection the execution borrows from a small pool, and a
//! write is one short transaction of its own. Nothing is held open across the
//! guest's run.
//!
//! Writes take effect when the call returns; a failed item of an item job
//! does not undo them, nor does the end of an `items` listing (state is not
//! part of the per-item rollback). One case needs care: when the application
//! database is Sundial's own file and the execution's session holds that
//! file's write lock (an item job's batch transaction, with a read-write
//! grant), a write from another connection would wait for a lock that only
//! this very execution can release. Such writes are kept in the execution's
//! overlay, visible to its own reads at once, and written as soon as the
//! lock is released: at the end of the batch, at the next state write made
//! outside it, or at the end of the execution.
//!
//! A dry run writes nothing: its writes live in the overlay only, where the
//! execution's own reads see them, and are dropped at its end.
//!
//! Limits: keys of 1 to [`MAX_KEY_BYTES`] bytes, values of at most
//! [`MAX_VALUE_BYTES`], at most [`MAX_KEYS`] keys per job (checked when a key
//! is added; executions of the same job running at the same time may pass it
//! by a few).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use rusqlite::types::ValueRef;

use super::appdb::{AppDbError, AppDbOpenError, Conn as StateConn, Location, SqlValue, retry_busy, take_write_lock};
use super::appdb_pg::PgConn;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Largest value, in bytes (1 MiB).
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Keys one job may hold.
pub const MAX_KEYS: u64 = 10_000;
/// Idle connections kept for reuse.
const MAX_IDLE: usize = 4;

/// Where job state is kept: Sundial's database, a SQLite file or Postgres
/// (cheap to clone).
#[derive(Clone)]
pub struct StateDb {
    inner: Arc<Inner>,
}

struct Inner {
    location: Location,
    /// Whether the application database is the same file.
    shares_app_file: bool,
    idle: Mutex<Vec<StateConn>>,
}

impl std::fmt::Debug for StateDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateDb").field("location", &self.inner.location).finish_non_exhaustive()
    }
}

/// The file a path names, symbolic links and `..` resolved when it exists.
fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

impl StateDb {
    /// State in Sundial's database at `url` (already migrated); `app_db` is
    /// the application database's file, if any. Connections open lazily.
    pub fn open(url: &str, app_db: Option<&Path>) -> Result<StateDb, AppDbOpenError> {
        let location = Location::parse(url)?;
        // Postgres locks rows, not the database: no write of the execution's
        // session blocks a state write there.
        let shares_app_file = match &location {
            Location::Sqlite(path) => app_db.is_some_and(|a| canonical(a) == canonical(path)),
            Location::Postgres(_) => false,
        };
        Ok(StateDb { inner: Arc::new(Inner { location, shares_app_file, idle: Mutex::new(Vec::new()) }) })
    }

    /// One execution's handle on `job`'s state.
    pub fn session(&self, job: &str, dry_run: bool) -> JobState {
        JobState { db: self.clone(), job: job.to_string(), dry_run, conn: None, overlay: BTreeMap::new() }
    }

    fn acquire(&self) -> Result<StateConn, StateError> {
        let reused = self.inner.idle.lock().ok().and_then(|mut idle| idle.pop());
        if let Some(c) = reused {
            return Ok(c);
        }
        let path = match &self.inner.location {
            Location::Sqlite(path) => path,
            Location::Postgres(config) => return Ok(StateConn::Postgres(PgConn::connect(config)?)),
        };
        // The store made the file, its table and WAL mode already.
        let open = || -> Result<Connection, rusqlite::Error> {
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let conn = Connection::open_with_flags(path, flags)?;
            conn.busy_handler(Some(retry_busy))?;
            conn.execute_batch("PRAGMA synchronous = NORMAL;")?;
            conn.set_prepared_statement_cache_capacity(16);
            Ok(conn)
        };
        open().map(StateConn::Sqlite).map_err(StateError::from)
    }

    fn release(&self, conn: StateConn) {
        let reusable = match &conn {
            StateConn::Sqlite(c) => c.is_autocommit(),
            StateConn::Postgres(c) => c.is_usable(),
        };
        if reusable
            && let Ok(mut idle) = self.inner.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(conn);
        }
    }
}

/// Why a state call failed; the message is what the guest gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StateError(pub String);

impl From<rusqlite::Error> for StateError {
    fn from(e: rusqlite::Error) -> Self {
        StateError::from(AppDbError::from(e))
    }
}

impl From<AppDbError> for StateError {
    fn from(e: AppDbError) -> Self {
        match e {
            AppDbError::Busy(m) => StateError(format!(
                "key-value state is busy: Sundial's database is locked by another writer ({m}); try again later"
            )),
            other => StateError(format!("key-value state: database error: {other}")),
        }
    }
}

/// A write not yet in the database (or never, in a dry run).
#[derive(Debug, Clone)]
struct Entry {
    /// The value; `None` for a deletion.
    value: Option<Vec<u8>>,
    /// Whether the key was in the database when the entry was made.
    in_db: bool,
}

/// One execution's use of its job's state.
///
/// Item jobs: calls from `items` and `run-item` work alike, and their writes
/// are kept whatever becomes of the item — a failed or trapped item does
/// not roll its state writes back (unlike its database writes).
pub struct JobState {
    db: StateDb,
    job: String,
    dry_run: bool,
    conn: Option<StateConn>,
    /// Writes the database does not have yet: all of a dry run's, or those
    /// made while the execution's own session held the file's write lock.
    overlay: BTreeMap<String, Entry>,
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

fn check_key(key: &str) -> Result<(), StateError> {
    if key.is_empty() {
        return Err(StateError("key-value state: the key is empty; keys are 1 to 256 bytes".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(StateError(format!(
            "key-value state: the key {} is {} bytes long; keys are at most {MAX_KEY_BYTES} bytes",
            shown(key),
            key.len()
        )));
    }
    Ok(())
}

impl JobState {
    /// Whether the application database is Sundial's own file: then a
    /// write transaction of the execution's session blocks state writes.
    pub fn shares_app_file(&self) -> bool {
        self.db.inner.shares_app_file
    }

    /// Whether this is a dry run (nothing is written).
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    fn conn(&mut self) -> Result<&mut StateConn, StateError> {
        if self.conn.is_none() {
            self.conn = Some(self.db.acquire()?);
        }
        self.conn.as_mut().ok_or_else(|| StateError("key-value state: no connection".into()))
    }

    /// The first column of the first row of `sql` over (job, key…).
    fn stored_value(&mut self, sql: &str, key: Option<&str>) -> Result<Option<SqlValue>, StateError> {
        let job = self.job.clone();
        match self.conn()? {
            StateConn::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let read = |r: &rusqlite::Row<'_>| -> Result<SqlValue, rusqlite::Error> {
                    Ok(match r.get_ref(0)? {
                        ValueRef::Integer(i) => SqlValue::Integer(i),
                        ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
                        _ => SqlValue::Null,
                    })
                };
                Ok(match key {
                    Some(k) => stmt.query_row((job.as_str(), k), read),
                    None => stmt.query_row([job.as_str()], read),
                }
                .optional()?)
            }
            StateConn::Postgres(c) => {
                let mut params = vec![SqlValue::Text(job)];
                params.extend(key.map(|k| SqlValue::Text(k.to_string())));
                Ok(c.query(sql, &params)?.rows.into_iter().next().and_then(|r| r.into_iter().next()))
            }
        }
    }

    fn stored(&mut self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let v = self.stored_value("SELECT value FROM job_state WHERE job_name = $1 AND key = $2", Some(key))?;
        Ok(match v {
            Some(SqlValue::Blob(b)) => Some(b),
            _ => None,
        })
    }

    fn stored_exists(&mut self, key: &str) -> Result<bool, StateError> {
        Ok(self.stored_value("SELECT 1 FROM job_state WHERE job_name = $1 AND key = $2", Some(key))?.is_some())
    }

    fn stored_count(&mut self) -> Result<u64, StateError> {
        let n = match self.stored_value("SELECT count(*) FROM job_state WHERE job_name = $1", None)? {
            Some(SqlValue::Integer(n)) => n,
            _ => 0,
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Reads a value: the execution's own writes first, then the database.
    pub fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        check_key(key)?;
        if let Some(e) = self.overlay.get(key) {
            return Ok(e.value.clone());
        }
        self.stored(key)
    }

    /// Sets a value. With `blocked` (the execution's own session holds the
    /// file's write lock) the write waits in the overlay.
    pub fn set(&mut self, key: &str, value: Vec<u8>, blocked: bool) -> Result<(), StateError> {
        check_key(key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(StateError(format!(
                "key-value state: the value for {} is {} bytes; values are at most 1 MiB ({MAX_VALUE_BYTES} bytes)",
                shown(key),
                value.len()
            )));
        }
        let in_db = match self.overlay.get(key) {
            Some(e) => e.in_db,
            None => self.stored_exists(key)?,
        };
        let exists = self.overlay.get(key).map_or(in_db, |e| e.value.is_some());
        if !exists {
            let mut count = self.stored_count()?;
            for e in self.overlay.values() {
                count = (count + u64::from(e.value.is_some())).saturating_sub(u64::from(e.in_db));
            }
            if count >= MAX_KEYS {
                return Err(StateError(format!(
                    "key-value state: the job already holds {count} keys, the limit is {MAX_KEYS}; \
                     delete keys before adding {}",
                    shown(key)
                )));
            }
        }
        self.write(key, Entry { value: Some(value), in_db }, blocked)
    }

    /// Removes a key (a missing key is not an error).
    pub fn delete(&mut self, key: &str, blocked: bool) -> Result<(), StateError> {
        check_key(key)?;
        let in_db = match self.overlay.get(key) {
            Some(e) => e.in_db,
            None => self.stored_exists(key)?,
        };
        if !in_db && !self.overlay.contains_key(key) {
            return Ok(());
        }
        self.write(key, Entry { value: None, in_db }, blocked)
    }

    /// Puts a write in the overlay and, unless it must wait, writes the
    /// overlay out; a write that fails is taken back and reported.
    fn write(&mut self, key: &str, entry: Entry, blocked: bool) -> Result<(), StateError> {
        let previous = self.overlay.insert(key.to_string(), entry);
        if self.dry_run || blocked {
            return Ok(());
        }
        if let Err(e) = self.flush() {
            match previous {
                Some(p) => self.overlay.insert(key.to_string(), p),
                None => self.overlay.remove(key),
            };
            return Err(e);
        }
        Ok(())
    }

    /// Whether writes wait for the database.
    pub fn has_pending(&self) -> bool {
        !self.dry_run && !self.overlay.is_empty()
    }

    /// Writes the waiting writes in one short transaction (nothing in a dry
    /// run). Call only when the execution's session does not hold the file's
    /// write lock.
    pub fn flush(&mut self) -> Result<(), StateError> {
        if self.dry_run || self.overlay.is_empty() {
            return Ok(());
        }
        let job = self.job.clone();
        let now = super::ts(chrono::Utc::now());
        let overlay = &self.overlay;
        let conn = match self.conn.as_mut() {
            Some(c) => c,
            None => {
                self.conn = Some(self.db.acquire()?);
                self.conn.as_mut().ok_or_else(|| StateError("key-value state: no connection".into()))?
            }
        };
        let conn = match conn {
            StateConn::Sqlite(c) => c,
            StateConn::Postgres(c) => {
                flush_pg(c, &job, &now, overlay)?;
                self.overlay.clear();
                return Ok(());
            }
        };
        let tx = take_write_lock(true, || conn.transaction_with_behavior(TransactionBehavior::Immediate))?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO job_state (job_name, key, value, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (job_name, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )?;
            let mut delete = tx.prepare_cached("DELETE FROM job_state WHERE job_name = ?1 AND key = ?2")?;
            for (key, e) in overlay {
                match &e.value {
                    Some(v) => upsert.execute((job.as_str(), key.as_str(), v.as_slice(), now.as_str()))?,
                    None => delete.execute((job.as_str(), key.as_str()))?,
                };
            }
        }
        tx.commit()?;
        self.overlay.clear();
        Ok(())
    }

    /// Ends the execution's use of the state: writes what waits (nothing in
    /// a dry run) and returns the connection to the pool.
    pub fn close(mut self) -> Result<(), StateError> {
        let r = self.flush();
        if let Some(conn) = self.conn.take() {
            self.db.release(conn);
        }
        r
    }
}

/// [`JobState::flush`] on Postgres: one transaction.
fn flush_pg(c: &mut PgConn, job: &str, now: &str, overlay: &BTreeMap<String, Entry>) -> Result<(), StateError> {
    c.batch("BEGIN")?;
    let written = (|| -> Result<(), AppDbError> {
        for (key, e) in overlay {
            let (job, key) = (SqlValue::Text(job.to_string()), SqlValue::Text(key.clone()));
            match &e.value {
                Some(v) => c.execute(
                    "INSERT INTO job_state (job_name, key, value, updated_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (job_name, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    &[job, key, SqlValue::Blob(v.clone()), SqlValue::Text(now.to_string())],
                )?,
                None => c.execute("DELETE FROM job_state WHERE job_name = $1 AND key = $2", &[job, key])?,
            };
        }
        c.batch("COMMIT")
    })();
    if written.is_err() {
        let _ = c.batch("ROLLBACK");
    }
    Ok(written?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(db: &StateDb) -> &Path {
        match &db.inner.location {
            Location::Sqlite(path) => path,
            Location::Postgres(_) => unreachable!("a SQLite test"),
        }
    }

    fn db() -> (tempfile::TempDir, StateDb) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sundial.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL;").unwrap();
        conn.execute_batch(include_str!("../../../migrations/sqlite/0005_job_state.sql")).unwrap();
        let db = StateDb::open(&format!("sqlite://{}", path.display()), None).unwrap();
        (dir, db)
    }

    #[test]
    fn values_round_trip_and_jobs_are_apart() {
        let (_d, db) = db();
        let mut a = db.session("a", false);
        assert_eq!(a.get("k").unwrap(), None);
        a.set("k", b"one".to_vec(), false).unwrap();
        a.set("empty", Vec::new(), false).unwrap();
        assert_eq!(a.get("k").unwrap(), Some(b"one".to_vec()));
        assert_eq!(a.get("empty").unwrap(), Some(Vec::new()));
        a.close().unwrap();
        let mut b = db.session("b", false);
        assert_eq!(b.get("k").unwrap(), None);
        let mut a = db.session("a", false);
        assert_eq!(a.get("k").unwrap(), Some(b"one".to_vec()));
        a.delete("k", false).unwrap();
        a.delete("never-set", false).unwrap();
        assert_eq!(a.get("k").unwrap(), None);
    }

    #[test]
    fn dry_runs_and_blocked_writes_stay_in_the_overlay() {
        let (_d, db) = db();
        let mut dry = db.session("a", true);
        dry.set("k", b"1".to_vec(), false).unwrap();
        assert_eq!(dry.get("k").unwrap(), Some(b"1".to_vec()));
        dry.close().unwrap();
        assert_eq!(db.session("a", false).get("k").unwrap(), None);

        let mut s = db.session("a", false);
        s.set("k", b"2".to_vec(), true).unwrap();
        assert_eq!(s.get("k").unwrap(), Some(b"2".to_vec()));
        assert_eq!(db.session("a", false).get("k").unwrap(), None, "not written while blocked");
        s.flush().unwrap();
        assert_eq!(db.session("a", false).get("k").unwrap(), Some(b"2".to_vec()));
        s.delete("k", true).unwrap();
        assert_eq!(s.get("k").unwrap(), None);
        s.close().unwrap();
        assert_eq!(db.session("a", false).get("k").unwrap(), None);
    }

    #[test]
    fn limits_have_clear_messages() {
        let (_d, db) = db();
        let mut s = db.session("a", false);
        assert!(s.get("").unwrap_err().0.contains("the key is empty"));
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(s.set(&long, vec![], false).unwrap_err().0.contains("257 bytes long"));
        s.set(&"k".repeat(MAX_KEY_BYTES), vec![1], false).unwrap();
        let e = s.set("big", vec![0; MAX_VALUE_BYTES + 1], false).unwrap_err();
        assert!(e.0.contains("at most 1 MiB"), "{e}");
        s.set("big", vec![0; MAX_VALUE_BYTES], false).unwrap();
    }

    #[test]
    fn the_key_limit_counts_the_overlay() {
        let (_d, db) = db();
        {
            let mut conn = Connection::open(file(&db)).unwrap();
            let tx = conn.transaction().unwrap();
            for i in 0..MAX_KEYS - 1 {
                tx.execute(
                    "INSERT INTO job_state (job_name, key, value, updated_at) VALUES ('a', ?1, x'00', '')",
                    [format!("k{i}")],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        let mut s = db.session("a", true);
        s.set("new", vec![1], false).unwrap();
        let e = s.set("another", vec![1], false).unwrap_err();
        assert!(e.0.contains("limit is 10000"), "{e}");
        // Replacing a key adds none; deleting one makes room.
        s.set("k0", vec![2], false).unwrap();
        s.delete("k1", false).unwrap();
        s.set("another", vec![1], false).unwrap();
    }

    #[test]
    fn a_busy_database_is_an_error_not_a_hang() {
        let (_d, db) = db();
        let mut locker = Connection::open(file(&db)).unwrap();
        let tx = locker.transaction_with_behavior(TransactionBehavior::Immediate).unwrap();
        let mut s = db.session("a", false);
        let e = s.set("k", vec![1], false).unwrap_err();
        assert!(e.0.contains("busy"), "{e}");
        assert_eq!(s.get("k").unwrap(), None, "a failed write is not kept");
        tx.rollback().unwrap();
        s.set("k", vec![1], false).unwrap();
    }
}

//! The application database that jobs read and write through the `database`
//! capability.
//!
//! Guests send SQL with `$1`-style placeholders and typed values; rows come back
//! as typed values. One [`AppSession`] per execution holds at most one pooled
//! connection and owns its transaction state, so the host — not the guest —
//! decides what is committed: item jobs get one transaction per item, dry runs
//! roll everything back, and read-only grants are enforced by SQLite itself
//! (`PRAGMA query_only`).

use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow};
use sqlx::{Column, Connection, Executor, Row, Sqlite, SqlitePool, TypeInfo, ValueRef};

use crate::model::DbAccess;

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
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl From<sqlx::Error> for AppDbError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            let msg = db.message().to_string();
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            // SQLite primary result codes: 5 BUSY, 6 LOCKED, 8 READONLY, 19 CONSTRAINT
            // (extended codes keep the primary code in the low byte).
            let primary = code.parse::<i64>().map(|c| c & 0xff).unwrap_or(-1);
            return match primary {
                5 | 6 => AppDbError::Busy(msg),
                8 => AppDbError::Denied(format!("read-only access: {msg}")),
                19 => AppDbError::Constraint(msg),
                _ if msg.contains("readonly") || msg.contains("read-only") => {
                    AppDbError::Denied(format!("read-only access: {msg}"))
                }
                _ => AppDbError::Other(msg),
            };
        }
        match e {
            sqlx::Error::PoolTimedOut => AppDbError::Busy("timed out waiting for a database connection".into()),
            other => AppDbError::Other(other.to_string()),
        }
    }
}

/// A handle on the application database (cheap to clone).
#[derive(Debug, Clone)]
pub struct AppDb {
    pool: SqlitePool,
}

impl AppDb {
    /// Opens (lazily) the application database at `url` (`sqlite://path`,
    /// created if missing).
    pub fn open(url: &str) -> Result<AppDb, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options);
        Ok(AppDb { pool })
    }

    /// The underlying pool (for the demo seeder and tests).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A session for one execution with the given grant.
    pub fn session(&self, access: DbAccess) -> AppSession {
        AppSession { db: self.clone(), access, conn: None, in_tx: false }
    }
}

/// One execution's use of the application database.
pub struct AppSession {
    db: AppDb,
    access: DbAccess,
    conn: Option<PoolConnection<Sqlite>>,
    in_tx: bool,
}

impl AppSession {
    /// The grant this session enforces.
    pub fn access(&self) -> DbAccess {
        self.access
    }

    async fn conn(&mut self) -> Result<&mut PoolConnection<Sqlite>, AppDbError> {
        if self.access == DbAccess::None {
            return Err(AppDbError::Denied(
                "this job has no database grant (set `database = \"read-only\"` or \"read-write\" for it in sundial.toml)"
                    .into(),
            ));
        }
        if self.conn.is_none() {
            let mut conn = self.db.pool.acquire().await?;
            let query_only = if self.access == DbAccess::ReadOnly { "ON" } else { "OFF" };
            conn.execute(format!("PRAGMA query_only = {query_only}").as_str()).await?;
            self.conn = Some(conn);
        }
        match self.conn.as_mut() {
            Some(c) => Ok(c),
            None => Err(AppDbError::Other("no connection".into())),
        }
    }

    /// Starts a transaction (no-op if one is open).
    pub async fn begin(&mut self) -> Result<(), AppDbError> {
        if self.access == DbAccess::None || self.in_tx {
            return Ok(());
        }
        // IMMEDIATE takes the write lock up front, so a busy database fails here,
        // before the item did any work, rather than half-way through it.
        let begin = if self.access == DbAccess::ReadWrite { "BEGIN IMMEDIATE" } else { "BEGIN" };
        let conn = self.conn().await?;
        conn.execute(begin).await?;
        self.in_tx = true;
        Ok(())
    }

    /// Commits the open transaction, if any.
    pub async fn commit(&mut self) -> Result<(), AppDbError> {
        self.end("COMMIT").await
    }

    /// Rolls back the open transaction, if any.
    pub async fn rollback(&mut self) -> Result<(), AppDbError> {
        self.end("ROLLBACK").await
    }

    async fn end(&mut self, sql: &str) -> Result<(), AppDbError> {
        if !self.in_tx {
            return Ok(());
        }
        self.in_tx = false;
        let conn = self.conn().await?;
        conn.execute(sql).await?;
        Ok(())
    }

    /// Runs a statement returning rows.
    pub async fn query(&mut self, sql: &str, params: Vec<SqlValue>) -> Result<SqlRows, AppDbError> {
        let conn = self.conn().await?;
        let rows: Vec<SqliteRow> = bind_all(sqlx::query(sql), params).fetch_all(&mut **conn).await?;
        let columns = match rows.first() {
            Some(r) => r.columns().iter().map(|c| c.name().to_string()).collect(),
            None => Vec::new(),
        };
        let rows = rows.iter().map(decode_row).collect::<Result<_, _>>()?;
        Ok(SqlRows { columns, rows })
    }

    /// Runs a statement changing data; returns rows affected.
    pub async fn execute(&mut self, sql: &str, params: Vec<SqlValue>) -> Result<u64, AppDbError> {
        if self.access == DbAccess::ReadOnly {
            return Err(AppDbError::Denied("this job has read-only database access".into()));
        }
        let conn = self.conn().await?;
        let done = bind_all(sqlx::query(sql), params).execute(&mut **conn).await?;
        Ok(done.rows_affected())
    }

    /// Ends the session: rolls back anything uncommitted and returns the
    /// connection to the pool in its default state.
    pub async fn close(mut self) {
        let _ = self.rollback().await;
        if let Some(mut conn) = self.conn.take() {
            if self.access == DbAccess::ReadOnly {
                let _ = conn.execute("PRAGMA query_only = OFF").await;
            }
            if !conn.is_in_transaction() {
                return;
            }
            // A statement left a transaction open behind our back: don't return
            // a dirty connection to the pool.
            let _ = conn.detach().close().await;
        }
    }
}

type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

fn bind_all(mut q: SqliteQuery<'_>, params: Vec<SqlValue>) -> SqliteQuery<'_> {
    for p in params {
        q = match p {
            SqlValue::Null => q.bind(None::<i64>),
            SqlValue::Integer(i) => q.bind(i),
            SqlValue::Real(f) => q.bind(f),
            SqlValue::Text(s) => q.bind(s),
            SqlValue::Blob(b) => q.bind(b),
        };
    }
    q
}

fn decode_row(row: &SqliteRow) -> Result<Vec<SqlValue>, AppDbError> {
    (0..row.len())
        .map(|i| {
            let raw = row.try_get_raw(i)?;
            if raw.is_null() {
                return Ok(SqlValue::Null);
            }
            let ty = raw.type_info().name().to_ascii_uppercase();
            Ok(match ty.as_str() {
                "INTEGER" | "BOOLEAN" | "INT" | "BIGINT" => SqlValue::Integer(row.try_get_unchecked(i)?),
                "REAL" | "FLOAT" | "DOUBLE" | "NUMERIC" => SqlValue::Real(row.try_get_unchecked(i)?),
                "BLOB" => SqlValue::Blob(row.try_get_unchecked(i)?),
                _ => SqlValue::Text(row.try_get_unchecked(i)?),
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(AppDbError::from)
}

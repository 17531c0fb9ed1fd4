//! The application database on Postgres: one synchronous connection per
//! session (the `postgres` crate), used on the worker thread that runs the
//! guest, with a statement cache per connection.
//!
//! Values cross as the guest's typed values:
//! - parameters go in Postgres's text format, so Postgres parses them for
//!   whatever type it inferred for the placeholder (`$1` compared with a
//!   `date` column takes `"2026-03-08"`, with a `numeric` one `42`);
//!   bytes go to `bytea` parameters as hex;
//! - results come back by column type: integers (`int2/4/8`, `oid`, `bool`
//!   as 0/1, `numeric` without fractional digits) as integers, `float4/8` and
//!   fractional `numeric` as reals, `bytea` as bytes, dates and times as
//!   ISO 8601 text (`timestamptz` in UTC with a `Z`), text, `json`, `jsonb`
//!   and `uuid` as text. Other types come back as their raw bytes; cast them
//!   to text in the query.
//!
//! A read-only grant is enforced by Postgres (`default_transaction_read_only`);
//! an interrupt check (deadline, cancellation) is polled by a watcher that
//! cancels the running statement through Postgres's cancel request.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta};
use postgres::types::{Format, FromSql, IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, NoTls, Statement};

use super::appdb::{AppDbError, SqlRows, SqlValue};

/// Statements cached per connection.
const STATEMENT_CACHE: usize = 128;
/// How often the watcher polls an interrupt check while a session lives.
const WATCH_EVERY: Duration = Duration::from_millis(20);

/// One connection and its prepared statements.
pub(super) struct PgConn {
    client: Client,
    statements: HashMap<String, Statement>,
}

impl PgConn {
    /// Connects.
    pub(super) fn connect(config: &postgres::Config) -> Result<PgConn, AppDbError> {
        // Notices (such as the warning a ROLLBACK outside a transaction
        // gives when a session ends) reach no one: do not send them.
        let mut config = config.clone();
        let options = match config.get_options() {
            Some(o) if !o.is_empty() => format!("{o} -c client_min_messages=error"),
            _ => "-c client_min_messages=error".to_string(),
        };
        config.options(&options);
        let client = config.connect(NoTls).map_err(AppDbError::from)?;
        Ok(PgConn { client, statements: HashMap::new() })
    }

    /// Runs statements without parameters or results (transaction control).
    pub(super) fn batch(&mut self, sql: &str) -> Result<(), AppDbError> {
        self.client.batch_execute(sql).map_err(AppDbError::from)
    }

    /// Whether the connection can be used again.
    pub(super) fn is_usable(&self) -> bool {
        !self.client.is_closed()
    }

    fn prepared(&mut self, sql: &str, params: &[SqlValue]) -> Result<Statement, AppDbError> {
        let stmt = match self.statements.get(sql) {
            Some(s) => s.clone(),
            None => {
                let s = self.client.prepare(sql)?;
                if self.statements.len() >= STATEMENT_CACHE {
                    self.statements.clear();
                }
                self.statements.insert(sql.to_string(), s.clone());
                s
            }
        };
        let uses = stmt.params().len();
        if uses > params.len() {
            return Err(AppDbError::Other(format!(
                "the statement uses parameter ${uses} but {} value{} given",
                params.len(),
                if params.len() == 1 { " was" } else { "s were" }
            )));
        }
        if uses < params.len() {
            return Err(AppDbError::Other(format!(
                "{} values given but the statement uses {uses} parameter{}",
                params.len(),
                if uses == 1 { "" } else { "s" }
            )));
        }
        Ok(stmt)
    }

    /// Runs a statement returning rows.
    pub(super) fn query(&mut self, sql: &str, params: &[SqlValue]) -> Result<SqlRows, AppDbError> {
        let stmt = self.prepared(sql, params)?;
        let bound: Vec<Param<'_>> = params.iter().map(Param).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let rows = self.client.query(&stmt, &refs)?;
        let columns: Vec<String> = stmt.columns().iter().map(|c| c.name().to_string()).collect();
        let types: Vec<Type> = stmt.columns().iter().map(|c| c.type_().clone()).collect();
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut values = Vec::with_capacity(types.len());
            for (i, ty) in types.iter().enumerate() {
                let raw: Option<Raw<'_>> = row.try_get(i)?;
                values.push(match raw {
                    None => SqlValue::Null,
                    Some(Raw(bytes)) => decode(ty, bytes),
                });
            }
            out.push(values);
        }
        Ok(SqlRows { columns, rows: out })
    }

    /// Runs a statement changing data; returns rows affected.
    pub(super) fn execute(&mut self, sql: &str, params: &[SqlValue]) -> Result<u64, AppDbError> {
        let stmt = self.prepared(sql, params)?;
        let bound: Vec<Param<'_>> = params.iter().map(Param).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        Ok(self.client.execute(&stmt, &refs)?)
    }

    /// Polls `check` while the returned guard lives; once it returns true,
    /// the statement running then is cancelled and `interrupted` is set.
    pub(super) fn watch(&self, mut check: Box<dyn FnMut() -> bool + Send>, interrupted: Arc<AtomicBool>) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let token = self.client.cancel_token();
        let stopped = stop.clone();
        let spawned = std::thread::Builder::new().name("sundial-pg-watch".into()).spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                if check() {
                    interrupted.store(true, Ordering::SeqCst);
                    if let Err(e) = token.cancel_query(NoTls) {
                        tracing::debug!(error = %e, "cannot cancel a statement");
                    }
                    return;
                }
                std::thread::sleep(WATCH_EVERY);
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot watch the deadline of application-database statements");
        }
        Watch { stop }
    }
}

/// Stops a session's watcher when dropped.
pub(super) struct Watch {
    stop: Arc<AtomicBool>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl From<postgres::Error> for AppDbError {
    fn from(e: postgres::Error) -> Self {
        let Some(db) = e.as_db_error() else {
            return AppDbError::Other(format!("{:#}", anyhow::Error::new(e)));
        };
        let message = db.message().to_string();
        let code = db.code().code();
        match code {
            // query_canceled: the watcher's cancel request.
            "57014" => AppDbError::Interrupted,
            // read_only_sql_transaction, insufficient_privilege.
            "25006" => AppDbError::Denied(format!("read-only access: {message}")),
            "42501" => AppDbError::Denied(message),
            // deadlock, serialization failure, lock not available.
            "40P01" | "40001" | "55P03" => AppDbError::Busy(message),
            c if c.starts_with("23") => AppDbError::Constraint(message),
            _ => AppDbError::Other(message),
        }
    }
}

/// A guest value bound as a parameter, in text format whatever the type.
#[derive(Debug)]
struct Param<'a>(&'a SqlValue);

impl ToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        let text = match self.0 {
            SqlValue::Null => return Ok(IsNull::Yes),
            SqlValue::Integer(i) => i.to_string(),
            SqlValue::Real(f) => f.to_string(),
            SqlValue::Text(s) => s.clone(),
            SqlValue::Blob(b) if *ty == Type::BYTEA => format!("\\x{}", hex::encode(b)),
            SqlValue::Blob(_) => return Err(format!("bytes cannot be bound to a parameter of type {ty}").into()),
        };
        out.extend_from_slice(text.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

/// A column's value as Postgres sent it (binary format).
struct Raw<'a>(&'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(Raw(raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

fn be<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
    b.get(..N).and_then(|s| s.try_into().ok())
}

/// Postgres's epoch for dates and timestamps.
fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default()
}

fn text_or_bytes(b: &[u8]) -> SqlValue {
    match std::str::from_utf8(b) {
        Ok(s) => SqlValue::Text(s.to_string()),
        Err(_) => SqlValue::Blob(b.to_vec()),
    }
}

/// A binary-format value as the guest's value (see the module docs).
fn decode(ty: &Type, b: &[u8]) -> SqlValue {
    let decoded = match *ty {
        Type::BOOL => b.first().map(|v| SqlValue::Integer(i64::from(*v != 0))),
        Type::INT2 => be::<2>(b).map(|v| SqlValue::Integer(i16::from_be_bytes(v).into())),
        Type::INT4 => be::<4>(b).map(|v| SqlValue::Integer(i32::from_be_bytes(v).into())),
        Type::INT8 => be::<8>(b).map(|v| SqlValue::Integer(i64::from_be_bytes(v))),
        Type::OID => be::<4>(b).map(|v| SqlValue::Integer(u32::from_be_bytes(v).into())),
        Type::FLOAT4 => be::<4>(b).map(|v| SqlValue::Real(f32::from_be_bytes(v).into())),
        Type::FLOAT8 => be::<8>(b).map(|v| SqlValue::Real(f64::from_be_bytes(v))),
        Type::NUMERIC => numeric(b),
        Type::BYTEA => Some(SqlValue::Blob(b.to_vec())),
        Type::DATE => be::<4>(b).map(|v| match i32::from_be_bytes(v) {
            i32::MAX => SqlValue::Text("infinity".into()),
            i32::MIN => SqlValue::Text("-infinity".into()),
            days => SqlValue::Text(
                epoch()
                    .checked_add_signed(TimeDelta::days(days.into()))
                    .map(|d| d.format("%Y-%m-%d").to_string())
                    .unwrap_or_default(),
            ),
        }),
        Type::TIMESTAMP | Type::TIMESTAMPTZ => be::<8>(b).map(|v| match i64::from_be_bytes(v) {
            i64::MAX => SqlValue::Text("infinity".into()),
            i64::MIN => SqlValue::Text("-infinity".into()),
            us => {
                let at = epoch().and_time(NaiveTime::MIN).checked_add_signed(TimeDelta::microseconds(us));
                let format = if *ty == Type::TIMESTAMPTZ { "%Y-%m-%dT%H:%M:%S%.fZ" } else { "%Y-%m-%dT%H:%M:%S%.f" };
                SqlValue::Text(at.map(|t| t.format(format).to_string()).unwrap_or_default())
            }
        }),
        Type::TIME => be::<8>(b).map(|v| {
            let us = i64::from_be_bytes(v);
            let t = DateTime::from_timestamp_micros(us).map(|t| t.time()).unwrap_or(NaiveTime::MIN);
            SqlValue::Text(t.format("%H:%M:%S%.f").to_string())
        }),
        Type::JSONB => b.split_first().map(|(_, rest)| text_or_bytes(rest)),
        Type::UUID => (b.len() == 16).then(|| {
            let h = hex::encode(b);
            SqlValue::Text(format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]))
        }),
        _ => None,
    };
    decoded.unwrap_or_else(|| text_or_bytes(b))
}

/// `numeric` in binary format: digit count, weight (of the first base-10000
/// digit), sign, display scale, then the base-10000 digits. Whole numbers
/// that fit come back as integers, the rest as reals.
fn numeric(b: &[u8]) -> Option<SqlValue> {
    let word = |i: usize| be::<2>(b.get(i * 2..)?).map(u16::from_be_bytes);
    let (ndigits, weight, sign, dscale) = (word(0)?, word(1)? as i16, word(2)?, word(3)?);
    match sign {
        0xC000 => return Some(SqlValue::Real(f64::NAN)),
        0xD000 => return Some(SqlValue::Real(f64::INFINITY)),
        0xF000 => return Some(SqlValue::Real(f64::NEG_INFINITY)),
        _ => {}
    }
    let negative = sign == 0x4000;
    let digits: Vec<u16> = (0..usize::from(ndigits)).map(|i| word(4 + i)).collect::<Option<_>>()?;
    if dscale == 0 {
        let mut n: i128 = 0;
        for (i, d) in digits.iter().enumerate() {
            let power = i32::from(weight) - i32::try_from(i).ok()?;
            if power < 0 {
                break;
            }
            n = n.checked_add(i128::from(*d).checked_mul(10_000i128.checked_pow(u32::try_from(power).ok()?)?)?)?;
        }
        let n = if negative { -n } else { n };
        if let Ok(i) = i64::try_from(n) {
            return Some(SqlValue::Integer(i));
        }
    }
    let mut value = 0f64;
    for (i, d) in digits.iter().enumerate() {
        value += f64::from(*d) * 10_000f64.powi(i32::from(weight) - i32::try_from(i).ok()?);
    }
    Some(SqlValue::Real(if negative { -value } else { value }))
}

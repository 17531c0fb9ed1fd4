//! The SDK's plain-Rust types and their conversions to and from the WIT types.

use std::fmt;

use crate::wit::types as w;

/// Why an execution was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The cron schedule fired.
    Schedule,
    /// An operator asked for it.
    Manual,
    /// A retry of a failed attempt.
    Retry,
    /// A fire missed while the host was down, run late.
    CatchUp,
}

/// Everything a job learns about the execution it runs in.
#[derive(Debug, Clone)]
pub struct Context {
    /// The host's id of this execution.
    pub execution_id: i64,
    /// The job's registered name.
    pub job_name: String,
    /// The scheduled instant, milliseconds since the Unix epoch (UTC).
    pub scheduled_for_ms: i64,
    /// The IANA zone the job is scheduled in.
    pub timezone: String,
    /// Why the execution started.
    pub trigger: Trigger,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// A date the operator asked for (`--date`), `YYYY-MM-DD`.
    pub date: Option<String>,
    /// At most this many items, if set.
    pub limit: Option<u64>,
    /// Nothing written is committed.
    pub dry_run: bool,
    /// Operator arguments (`--arg key=value`).
    pub args: Vec<(String, String)>,
}

impl Context {
    /// The scheduled instant in milliseconds since the Unix epoch.
    pub fn scheduled_for(&self) -> i64 {
        self.scheduled_for_ms
    }

    /// An operator argument by name.
    pub fn arg(&self, name: &str) -> Option<&str> {
        self.args.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// For a job scheduled in its items' local time (`item_zones` in the
    /// host's configuration): the zones whose items this execution is for.
    /// `None` for any other run (every item is due). List only the items in
    /// these zones, e.g. `WHERE timezone IN (...)`.
    pub fn zones(&self) -> Option<Vec<&str>> {
        self.arg("sundial.zones").map(|z| z.split(',').filter(|z| !z.is_empty()).collect())
    }

    /// For an item-local job whose items chose their own local time of day:
    /// the `(zone, "HH:MM")` pairs this execution is for. List only the items
    /// with one of these pairs. `None` when the group has no such times.
    pub fn slots(&self) -> Option<Vec<(&str, &str)>> {
        self.arg("sundial.slots").map(|s| s.split(',').filter_map(|slot| slot.split_once('@')).collect())
    }

    /// The date this run is for in the job's time zone: the operator's `--date`
    /// if given, else the local date of the scheduled instant.
    pub fn run_date(&self) -> Result<crate::Date, JobError> {
        if let Some(d) = &self.date {
            return crate::Date::parse(d)
                .ok_or_else(|| JobError::fatal(format!("invalid date {d:?}, expected YYYY-MM-DD")));
        }
        crate::time::local_date(self.scheduled_for_ms, &self.timezone).map_err(JobError::fatal)
    }
}

impl From<w::Context> for Context {
    fn from(c: w::Context) -> Self {
        Context {
            execution_id: c.execution_id,
            job_name: c.job_name,
            scheduled_for_ms: c.scheduled_for,
            timezone: c.timezone,
            trigger: match c.trigger {
                w::Trigger::Schedule => Trigger::Schedule,
                w::Trigger::Manual => Trigger::Manual,
                w::Trigger::Retry => Trigger::Retry,
                w::Trigger::CatchUp => Trigger::CatchUp,
            },
            attempt: c.attempt,
            date: c.date,
            limit: c.limit,
            dry_run: c.dry_run,
            args: c.args,
        }
    }
}

/// Why a run or an item did not succeed; the case tells the host what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    /// A precondition is not met; recorded as the reason, never retried.
    Skip(String),
    /// A transient failure; the host may retry.
    Retryable(String),
    /// A permanent failure.
    Fatal(String),
}

impl JobError {
    /// A precondition is not met (e.g. "not enough reports").
    pub fn skip(reason: impl Into<String>) -> Self {
        JobError::Skip(reason.into())
    }
    /// A transient failure worth retrying.
    pub fn retryable(message: impl Into<String>) -> Self {
        JobError::Retryable(message.into())
    }
    /// A permanent failure.
    pub fn fatal(message: impl Into<String>) -> Self {
        JobError::Fatal(message.into())
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobError::Skip(m) => write!(f, "skipped: {m}"),
            JobError::Retryable(m) => write!(f, "retryable: {m}"),
            JobError::Fatal(m) => write!(f, "fatal: {m}"),
        }
    }
}

impl std::error::Error for JobError {}

impl From<JobError> for w::JobError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::Skip(m) => w::JobError::Skip(m),
            JobError::Retryable(m) => w::JobError::Retryable(m),
            JobError::Fatal(m) => w::JobError::Fatal(m),
        }
    }
}

/// What a successful run or item reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Rows or objects changed (or that would have been, in a dry run).
    pub changed: u64,
    /// A short summary.
    pub message: Option<String>,
}

impl Outcome {
    /// Nothing changed.
    pub fn unchanged() -> Self {
        Outcome::default()
    }
    /// `n` rows or objects changed.
    pub fn changed(n: u64) -> Self {
        Outcome { changed: n, message: None }
    }
    /// Adds a summary message.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }
}

impl From<Outcome> for w::Outcome {
    fn from(o: Outcome) -> Self {
        w::Outcome { changed: o.changed, message: o.message }
    }
}

/// Database access a job can request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbAccess {
    /// Reads only.
    ReadOnly,
    /// Reads and writes.
    ReadWrite,
}

/// A capability a job requests; the operator decides whether to grant it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// The application database.
    Database(DbAccess),
    /// Outbound HTTP to this host.
    Http(String),
    /// Private key-value state.
    KeyValue,
}

/// What a job says about itself.
#[derive(Debug, Clone)]
pub struct JobInfo {
    /// Unique name: lowercase letters, digits and `-`.
    pub name: String,
    /// One line for operators.
    pub description: String,
    /// Default cron expression.
    pub default_schedule: String,
    /// Default IANA time zone (`UTC` if empty).
    pub default_timezone: String,
    /// Requested capabilities.
    pub capabilities: Vec<Capability>,
}

impl JobInfo {
    /// A job with a name, a description and a default schedule, in UTC, that
    /// requests nothing.
    pub fn new(name: &str, description: &str, default_schedule: &str) -> Self {
        JobInfo {
            name: name.into(),
            description: description.into(),
            default_schedule: default_schedule.into(),
            default_timezone: "UTC".into(),
            capabilities: Vec::new(),
        }
    }
    /// Sets the default time zone of the schedule.
    pub fn timezone(mut self, zone: &str) -> Self {
        self.default_timezone = zone.into();
        self
    }
    /// Requests read-only access to the application database.
    pub fn read_only_database(mut self) -> Self {
        self.capabilities.push(Capability::Database(DbAccess::ReadOnly));
        self
    }
    /// Requests read-write access to the application database.
    pub fn read_write_database(mut self) -> Self {
        self.capabilities.push(Capability::Database(DbAccess::ReadWrite));
        self
    }
    /// Requests outbound HTTP to `host` (`api.example.com` or
    /// `api.example.com:8443`); `"*"` says the job reaches whatever hosts its
    /// operator configures (its URL is an argument). Requesting grants nothing:
    /// the host warns at load when the operator's `http` grant does not match.
    pub fn http(mut self, host: &str) -> Self {
        self.capabilities.push(Capability::Http(host.into()));
        self
    }
    /// Requests private key-value state.
    pub fn key_value(mut self) -> Self {
        self.capabilities.push(Capability::KeyValue);
        self
    }

    pub(crate) fn into_wit(self, kind: w::JobKind) -> w::JobInfo {
        w::JobInfo {
            name: self.name,
            description: self.description,
            kind,
            default_schedule: self.default_schedule,
            default_timezone: self.default_timezone,
            capabilities: self
                .capabilities
                .into_iter()
                .map(|c| match c {
                    Capability::Database(DbAccess::ReadOnly) => w::Capability::Database(w::DbAccess::ReadOnly),
                    Capability::Database(DbAccess::ReadWrite) => w::Capability::Database(w::DbAccess::ReadWrite),
                    Capability::Http(h) => w::Capability::Http(h),
                    Capability::KeyValue => w::Capability::KeyValue,
                })
                .collect(),
        }
    }
}

/// A database value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer (also booleans on SQLite).
    Integer(i64),
    /// A float.
    Real(f64),
    /// Text (also ISO 8601 dates and times).
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl Value {
    /// The integer, if this is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Integer(i) => Some(*i),
            _ => None,
        }
    }
    /// The float (integers widen), if this is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Real(f) => Some(*f),
            Value::Integer(i) => Some(*i as f64),
            _ => None,
        }
    }
    /// The text, if this is text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
    /// Whether this is NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Integer(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Integer(v.into())
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Integer(v.into())
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.into())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

impl From<Value> for w::Value {
    fn from(v: Value) -> Self {
        match v {
            Value::Null => w::Value::Null,
            Value::Integer(i) => w::Value::Integer(i),
            Value::Real(f) => w::Value::Real(f),
            Value::Text(s) => w::Value::Text(s),
            Value::Blob(b) => w::Value::Blob(b),
        }
    }
}

impl From<w::Value> for Value {
    fn from(v: w::Value) -> Self {
        match v {
            w::Value::Null => Value::Null,
            w::Value::Integer(i) => Value::Integer(i),
            w::Value::Real(f) => Value::Real(f),
            w::Value::Text(s) => Value::Text(s),
            w::Value::Blob(b) => Value::Blob(b),
        }
    }
}

/// One row of a query result.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    values: Vec<Value>,
}

impl Row {
    /// The value in column `i` (`Null` past the end).
    pub fn get(&self, i: usize) -> &Value {
        self.values.get(i).unwrap_or(&Value::Null)
    }
    /// The integer in column `i`.
    pub fn i64(&self, i: usize) -> Option<i64> {
        self.get(i).as_i64()
    }
    /// The text in column `i`.
    pub fn str(&self, i: usize) -> Option<&str> {
        self.get(i).as_str()
    }
    /// All values.
    pub fn values(&self) -> &[Value] {
        &self.values
    }
}

/// The rows a query returned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    /// Column names in select-list order.
    pub columns: Vec<String>,
    /// The rows.
    pub rows: Vec<Row>,
}

impl Rows {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }
    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl IntoIterator for Rows {
    type Item = Row;
    type IntoIter = std::vec::IntoIter<Row>;
    fn into_iter(self) -> Self::IntoIter {
        self.rows.into_iter()
    }
}

impl From<w::Rows> for Rows {
    fn from(r: w::Rows) -> Self {
        Rows {
            columns: r.columns,
            rows: r.rows.into_iter().map(|vals| Row { values: vals.into_iter().map(Into::into).collect() }).collect(),
        }
    }
}

/// One unit of work of an item job.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Stable identity (e.g. the user id), recorded for failed and skipped items.
    pub key: String,
    /// Data `run_item` needs (e.g. the user's plan and time zone).
    pub data: Vec<Value>,
}

impl Item {
    /// An item with a key and its data.
    pub fn new(key: impl Into<String>, data: Vec<Value>) -> Self {
        Item { key: key.into(), data }
    }
    /// The value at `i` (`Null` past the end).
    pub fn get(&self, i: usize) -> &Value {
        self.data.get(i).unwrap_or(&Value::Null)
    }
}

impl From<w::Item> for Item {
    fn from(i: w::Item) -> Self {
        Item { key: i.key, data: i.data.into_iter().map(Into::into).collect() }
    }
}

impl From<Item> for w::Item {
    fn from(i: Item) -> Self {
        w::Item { key: i.key, data: i.data.into_iter().map(Into::into).collect() }
    }
}

/// One page of items and where the next one starts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    /// The items, in a stable order.
    pub items: Vec<Item>,
    /// Cursor of the next page; `None` on the last.
    pub next_cursor: Option<String>,
}

impl Page {
    /// The id after which a keyset-paginated page starts: 0 for the first
    /// page, else the cursor [`Page::from_rows`] made from an integer key.
    ///
    /// ```
    /// use sundial_guest::Page;
    /// assert_eq!(Page::after_id(None).unwrap(), 0);
    /// assert_eq!(Page::after_id(Some("42")).unwrap(), 42);
    /// assert!(Page::after_id(Some("x")).is_err());
    /// ```
    pub fn after_id(cursor: Option<&str>) -> Result<i64, JobError> {
        match cursor {
            None => Ok(0),
            Some(c) => c.parse().map_err(|_| JobError::fatal(format!("invalid page cursor {c:?}, expected an id"))),
        }
    }

    /// Builds a page from rows whose first column is the item key: the next
    /// cursor is the last key when the page is full (`rows.len() == page_size`).
    pub fn from_rows(rows: Rows, page_size: usize) -> Page {
        let full = rows.len() >= page_size && page_size > 0;
        let items: Vec<Item> = rows
            .into_iter()
            .map(|r| {
                let key = match r.get(0) {
                    Value::Integer(i) => i.to_string(),
                    Value::Text(s) => s.clone(),
                    other => format!("{other:?}"),
                };
                Item { key, data: r.values }
            })
            .collect();
        let next_cursor = if full { items.last().map(|i| i.key.clone()) } else { None };
        Page { items, next_cursor }
    }
}

impl From<Page> for w::Page {
    fn from(p: Page) -> Self {
        w::Page { items: p.items.into_iter().map(Into::into).collect(), next_cursor: p.next_cursor }
    }
}

//! Shared item runs: one execution's items worked by several workers, on
//! the host that runs the execution and on every other host serving the job.
//!
//! With `item_workers` set for a job whose application database is Postgres,
//! an item run is split into the pages its `items` export returns:
//! - The execution's own worker (the *starter*) lists the pages into
//!   `sundial_item_pages` in the application database, each page with the
//!   items as listed, and records the run in `sundial_item_runs`: the
//!   execution, the component digest, the context the guest is given.
//! - Workers claim pages in short transactions of their own (`FOR UPDATE SKIP
//!   LOCKED`): `item_workers` threads on the starter's host, and as many on
//!   every other host serving the job with the same component digest (they
//!   look for open runs every second). No transaction is held open while a
//!   guest runs.
//! - A claim carries a lease (the host lease, timed by the database's clock)
//!   and a fencing token. Each batch of a page commits its items' work
//!   together with the page's progress (the last item done, the counts, the
//!   failed and skipped items) in one transaction that checks the token and
//!   renews the lease: a worker whose lease ran out and whose page another
//!   worker took has its batch rolled back. Nothing is committed twice.
//! - A worker that dies (its host killed) leaves its page claimed until the
//!   lease runs out; another worker then claims it and goes on after the
//!   last committed item.
//! - The starter works pages too, then waits until every page is done, sums
//!   the pages into the execution's report and deletes the run's rows. If
//!   it stops early (deadline, cancellation, a listing error) it closes the
//!   run: workers stop claiming. A later attempt for the same scheduled
//!   instant reopens it and goes on from the pages done.
//!
//! Dry runs and runs with a `--limit` do not share: they run in one worker,
//! as on SQLite.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{DbAccess, ErrorClass, ExecutionId, ItemProblem, RunArgs, RunContext, RunReport, Trigger};
use crate::store::appdb::{AppDb, AppDbError, AppSession, SqlValue};
use crate::store::state::StateDb;

/// Failed and skipped items kept per page (the counts are always whole).
pub const PAGE_PROBLEMS: usize = 20;
/// How long an idle worker waits before it looks for a page again.
pub(crate) const IDLE_WAIT: Duration = Duration::from_millis(50);

const CREATE_TABLES: &str = "
CREATE TABLE IF NOT EXISTS sundial_item_runs (
    job TEXT NOT NULL,
    run_key TEXT NOT NULL,
    execution_id BIGINT NOT NULL,
    digest TEXT NOT NULL,
    context TEXT NOT NULL,
    open BOOLEAN NOT NULL,
    listed BOOLEAN NOT NULL DEFAULT FALSE,
    next_cursor TEXT,
    pages BIGINT NOT NULL DEFAULT 0,
    -- When the starter last opened the run or listed a page (database clock).
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (job, run_key)
);
CREATE TABLE IF NOT EXISTS sundial_item_pages (
    job TEXT NOT NULL,
    run_key TEXT NOT NULL,
    page_no BIGINT NOT NULL,
    items BYTEA NOT NULL,
    last_key TEXT,
    done BOOLEAN NOT NULL DEFAULT FALSE,
    owner TEXT,
    fence BIGINT NOT NULL DEFAULT 0,
    lease_until TIMESTAMPTZ,
    total BIGINT NOT NULL DEFAULT 0,
    ok BIGINT NOT NULL DEFAULT 0,
    skipped BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    changed BIGINT NOT NULL DEFAULT 0,
    problems TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (job, run_key, page_no)
);
CREATE INDEX IF NOT EXISTS sundial_item_pages_todo ON sundial_item_pages (job, run_key, page_no) WHERE NOT done;
";

/// How an execution shares its items (from the job's `item_workers`).
#[derive(Clone)]
pub struct SharedItems {
    /// Workers on this host, the execution's own included.
    pub workers: u32,
    /// This host's name (recorded as the owner of the pages it claims).
    pub node: String,
    /// How long a claim holds without a commit.
    pub lease: Duration,
    /// Where the job's key-value state is, if it has the grant.
    pub state_db: Option<StateDb>,
}

/// One run's pages, as one worker claims them.
pub(crate) struct Claims {
    pub job: String,
    pub run_key: String,
    pub node: String,
    /// How long a claim holds without a commit.
    pub lease: Duration,
    lease_secs: String,
}

/// A page claimed by a worker.
pub(crate) struct Claim {
    pub page: i64,
    pub fence: i64,
    pub items: Vec<(String, Vec<SqlValue>)>,
    pub last_key: Option<String>,
    pub problems: Vec<(String, String, String)>,
}

/// The run as recorded by its starter.
pub(crate) struct RunRow {
    pub listed: bool,
    pub next_cursor: Option<String>,
    pub pages: i64,
    pub execution_id: i64,
}

/// Where the run stands.
pub(crate) struct RunStatus {
    /// Workers may claim its pages.
    pub open: bool,
    /// Every page is listed.
    pub listed: bool,
    /// Pages not done yet.
    pub remaining: i64,
}

/// The pages' counts summed.
#[derive(Default)]
pub(crate) struct Totals {
    pub total: u64,
    pub ok: u64,
    pub skipped: u64,
    pub failed: u64,
    pub changed: u64,
    pub pages: u64,
    pub problems: Vec<ItemProblem>,
    pub problems_dropped: u64,
    /// The hosts that worked the pages.
    pub hosts: Vec<String>,
}

/// What a batch adds to its page.
pub(crate) struct BatchMark<'a> {
    pub last_key: Option<&'a str>,
    pub total: u64,
    pub ok: u64,
    pub skipped: u64,
    pub failed: u64,
    pub changed: u64,
    pub problems: &'a [(String, String, String)],
    pub done: bool,
}

/// The context a starter records for the run's other workers.
#[derive(Serialize, Deserialize)]
struct StoredContext {
    execution_id: i64,
    job_name: String,
    scheduled_for_ms: i64,
    timezone: String,
    trigger: Trigger,
    attempt: u32,
    args: RunArgs,
}

/// Encodes a run context for the run row.
pub(crate) fn encode_context(ctx: &RunContext) -> String {
    let stored = StoredContext {
        execution_id: ctx.execution_id.0,
        job_name: ctx.job_name.clone(),
        scheduled_for_ms: ctx.scheduled_for.timestamp_millis(),
        timezone: ctx.timezone.clone(),
        trigger: ctx.trigger,
        attempt: ctx.attempt,
        args: ctx.args.clone(),
    };
    serde_json::to_string(&stored).unwrap_or_default()
}

/// Decodes a run context from the run row.
pub(crate) fn decode_context(text: &str) -> Result<RunContext, String> {
    let s: StoredContext = serde_json::from_str(text).map_err(|e| format!("unreadable run context: {e}"))?;
    let scheduled_for = chrono::DateTime::from_timestamp_millis(s.scheduled_for_ms)
        .ok_or_else(|| format!("unreadable run context: instant {}", s.scheduled_for_ms))?;
    Ok(RunContext {
        execution_id: ExecutionId(s.execution_id),
        job_name: s.job_name,
        scheduled_for,
        timezone: s.timezone,
        trigger: s.trigger,
        attempt: s.attempt,
        args: s.args,
    })
}

fn text(v: Option<&SqlValue>) -> Option<String> {
    match v {
        Some(SqlValue::Text(s)) => Some(s.clone()),
        _ => None,
    }
}

fn int(v: Option<&SqlValue>) -> i64 {
    match v {
        Some(SqlValue::Integer(i)) => *i,
        _ => 0,
    }
}

fn count(n: u64) -> SqlValue {
    SqlValue::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

/// Creates the tables if missing. Two hosts creating them at once may
/// collide on Postgres's catalog: the loser tries again.
pub(crate) fn ensure_tables(db: &mut AppSession) -> Result<(), AppDbError> {
    let first = db.execute_batch(CREATE_TABLES);
    if first.is_err() {
        std::thread::sleep(Duration::from_millis(50));
        return db.execute_batch(CREATE_TABLES);
    }
    first
}

impl Claims {
    pub(crate) fn new(job: &str, run_key: &str, node: &str, lease: Duration) -> Claims {
        Claims {
            job: job.to_string(),
            run_key: run_key.to_string(),
            node: node.to_string(),
            lease,
            lease_secs: format!("{:.3}", lease.as_secs_f64()),
        }
    }

    fn key(&self) -> [SqlValue; 2] {
        [SqlValue::Text(self.job.clone()), SqlValue::Text(self.run_key.clone())]
    }

    /// Records the run (or reopens the one an earlier attempt left) and
    /// returns where its listing stands.
    pub(crate) fn open(
        &self,
        db: &mut AppSession,
        execution_id: i64,
        digest: &str,
        context: &str,
    ) -> Result<RunRow, AppDbError> {
        let [job, key] = self.key();
        let rows = db.query(
            "INSERT INTO sundial_item_runs (job, run_key, execution_id, digest, context, open)
             VALUES ($1, $2, $3, $4, $5, TRUE)
             ON CONFLICT (job, run_key) DO UPDATE SET execution_id = excluded.execution_id,
               digest = excluded.digest, context = excluded.context, open = TRUE, updated_at = now()
             RETURNING listed, next_cursor, pages,
               (SELECT r.execution_id FROM sundial_item_runs r WHERE r.job = $1 AND r.run_key = $2)",
            &[job, key, SqlValue::Integer(execution_id), SqlValue::Text(digest.into()), SqlValue::Text(context.into())],
        )?;
        let row = rows.rows.into_iter().next().unwrap_or_default();
        Ok(RunRow {
            listed: int(row.first()) != 0,
            next_cursor: text(row.get(1)),
            pages: int(row.get(2)),
            // The execution that opened the run before (this one if none).
            execution_id: match row.get(3) {
                Some(SqlValue::Integer(i)) => *i,
                _ => execution_id,
            },
        })
    }

    /// Adds a listed page; with no next cursor, the listing is complete.
    /// Runs in the caller's transaction.
    pub(crate) fn add_page(
        &self,
        db: &mut AppSession,
        page: i64,
        items: Vec<u8>,
        next_cursor: Option<&str>,
    ) -> Result<(), AppDbError> {
        let [job, key] = self.key();
        db.execute(
            "INSERT INTO sundial_item_pages (job, run_key, page_no, items) VALUES ($1, $2, $3, $4)",
            &[job.clone(), key.clone(), SqlValue::Integer(page), SqlValue::Blob(items)],
        )?;
        let next = next_cursor.map(|c| SqlValue::Text(c.to_string())).unwrap_or(SqlValue::Null);
        db.execute(
            "UPDATE sundial_item_runs SET pages = $3, next_cursor = $4, listed = ($4::text IS NULL),
               updated_at = now()
             WHERE job = $1 AND run_key = $2",
            &[job, key, SqlValue::Integer(page + 1), next],
        )?;
        Ok(())
    }

    /// Claims the first page nobody holds (or whose holder's lease ran out)
    /// of the run, if it is open.
    pub(crate) fn claim(&self, db: &mut AppSession) -> Result<Option<Claim>, AppDbError> {
        let [job, key] = self.key();
        let rows = db.query(
            "UPDATE sundial_item_pages SET owner = $3, fence = fence + 1,
               lease_until = now() + make_interval(secs => $4::float8)
             WHERE (job, run_key, page_no) = (
               SELECT p.job, p.run_key, p.page_no FROM sundial_item_pages p
               WHERE p.job = $1 AND p.run_key = $2 AND NOT p.done
                 AND (p.owner IS NULL OR p.lease_until < now())
                 AND EXISTS (SELECT 1 FROM sundial_item_runs r WHERE r.job = $1 AND r.run_key = $2 AND r.open)
               ORDER BY p.page_no LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING page_no, fence, items, last_key, problems",
            &[job, key, SqlValue::Text(self.node.clone()), SqlValue::Text(self.lease_secs.clone())],
        )?;
        let Some(row) = rows.rows.into_iter().next() else { return Ok(None) };
        let items = match row.get(2) {
            Some(SqlValue::Blob(b)) => decode_items(b)
                .ok_or_else(|| AppDbError::Other(format!("page {} of the run is unreadable", int(row.first()))))?,
            _ => Vec::new(),
        };
        let problems = text(row.get(4)).and_then(|p| serde_json::from_str(&p).ok()).unwrap_or_default();
        Ok(Some(Claim { page: int(row.first()), fence: int(row.get(1)), items, last_key: text(row.get(3)), problems }))
    }

    /// Writes a batch's progress into its page, in the batch's transaction,
    /// if the worker still holds the page (its fencing token is the page's);
    /// renews the lease. `false`: the page was taken over.
    pub(crate) fn mark(&self, db: &mut AppSession, claim: &Claim, m: &BatchMark<'_>) -> Result<bool, AppDbError> {
        let [job, key] = self.key();
        let problems = serde_json::to_string(m.problems).unwrap_or_else(|_| "[]".into());
        let n = db.execute(
            "UPDATE sundial_item_pages SET last_key = $5, total = total + $6, ok = ok + $7,
               skipped = skipped + $8, failed = failed + $9, changed = changed + $10, problems = $11,
               done = $12::boolean, lease_until = now() + make_interval(secs => $13::float8)
             WHERE job = $1 AND run_key = $2 AND page_no = $3 AND fence = $4",
            &[
                job,
                key,
                SqlValue::Integer(claim.page),
                SqlValue::Integer(claim.fence),
                m.last_key.map(|k| SqlValue::Text(k.to_string())).unwrap_or(SqlValue::Null),
                count(m.total),
                count(m.ok),
                count(m.skipped),
                count(m.failed),
                count(m.changed),
                SqlValue::Text(problems),
                SqlValue::Text(if m.done { "true" } else { "false" }.into()),
                SqlValue::Text(self.lease_secs.clone()),
            ],
        )?;
        Ok(n == 1)
    }

    /// Gives a page back at once (its worker stops), if still held.
    pub(crate) fn release(&self, db: &mut AppSession, claim: &Claim) -> Result<(), AppDbError> {
        let [job, key] = self.key();
        db.execute(
            "UPDATE sundial_item_pages SET owner = NULL, lease_until = NULL
             WHERE job = $1 AND run_key = $2 AND page_no = $3 AND fence = $4",
            &[job, key, SqlValue::Integer(claim.page), SqlValue::Integer(claim.fence)],
        )?;
        Ok(())
    }

    /// Where the run stands.
    pub(crate) fn status(&self, db: &mut AppSession) -> Result<RunStatus, AppDbError> {
        let [job, key] = self.key();
        let rows = db.query(
            "SELECT r.open, r.listed,
               (SELECT count(*) FROM sundial_item_pages p WHERE p.job = $1 AND p.run_key = $2 AND NOT p.done)
             FROM sundial_item_runs r WHERE r.job = $1 AND r.run_key = $2",
            &[job, key],
        )?;
        Ok(match rows.rows.into_iter().next() {
            Some(row) => {
                RunStatus { open: int(row.first()) != 0, listed: int(row.get(1)) != 0, remaining: int(row.get(2)) }
            }
            None => RunStatus { open: false, listed: true, remaining: 0 },
        })
    }

    /// Items done so far (for live progress): total, ok, skipped, failed.
    pub(crate) fn progress(&self, db: &mut AppSession) -> Result<[u64; 4], AppDbError> {
        let [job, key] = self.key();
        let rows = db.query(
            "SELECT coalesce(sum(total), 0)::bigint, coalesce(sum(ok), 0)::bigint,
               coalesce(sum(skipped), 0)::bigint, coalesce(sum(failed), 0)::bigint
             FROM sundial_item_pages WHERE job = $1 AND run_key = $2",
            &[job, key],
        )?;
        let row = rows.rows.into_iter().next().unwrap_or_default();
        Ok([0, 1, 2, 3].map(|i| u64::try_from(int(row.get(i))).unwrap_or(0)))
    }

    /// Closes the run: workers stop claiming its pages.
    pub(crate) fn close(&self, db: &mut AppSession) -> Result<(), AppDbError> {
        let [job, key] = self.key();
        db.execute("UPDATE sundial_item_runs SET open = FALSE WHERE job = $1 AND run_key = $2", &[job, key])?;
        Ok(())
    }

    /// Sums the finished run's pages and deletes its rows, in one
    /// transaction.
    pub(crate) fn finish(&self, db: &mut AppSession) -> Result<Totals, AppDbError> {
        let [job, key] = self.key();
        db.begin()?;
        let rows = db.query(
            "SELECT total, ok, skipped, failed, changed, problems, owner FROM sundial_item_pages
             WHERE job = $1 AND run_key = $2 ORDER BY page_no",
            &[job.clone(), key.clone()],
        );
        let rows = match rows {
            Ok(r) => r,
            Err(e) => {
                let _ = db.rollback();
                return Err(e);
            }
        };
        let mut t = Totals::default();
        let n = |v: Option<&SqlValue>| u64::try_from(int(v)).unwrap_or(0);
        for row in &rows.rows {
            t.pages += 1;
            t.total += n(row.first());
            t.ok += n(row.get(1));
            t.skipped += n(row.get(2));
            t.failed += n(row.get(3));
            t.changed += n(row.get(4));
            let problems: Vec<(String, String, String)> =
                text(row.get(5)).and_then(|p| serde_json::from_str(&p).ok()).unwrap_or_default();
            for (key, class, message) in problems {
                if t.problems.len() < crate::model::MAX_ITEM_PROBLEMS {
                    let class = class.parse().unwrap_or(ErrorClass::Fatal);
                    t.problems.push(ItemProblem { key, class, message });
                } else {
                    t.problems_dropped += 1;
                }
            }
            if let Some(owner) = text(row.get(6))
                && !t.hosts.contains(&owner)
            {
                t.hosts.push(owner);
            }
        }
        // Problems the pages counted but did not keep.
        let kept = t.problems.len() as u64 + t.problems_dropped;
        t.problems_dropped += (t.skipped + t.failed).saturating_sub(kept);
        let deleted = db
            .execute("DELETE FROM sundial_item_pages WHERE job = $1 AND run_key = $2", &[job.clone(), key.clone()])
            .and_then(|_| db.execute("DELETE FROM sundial_item_runs WHERE job = $1 AND run_key = $2", &[job, key]))
            .and_then(|_| db.commit());
        if let Err(e) = deleted {
            let _ = db.rollback();
            return Err(e);
        }
        t.hosts.sort();
        Ok(t)
    }
}

impl Totals {
    /// The run's report: the pages' counts, and its status by them.
    pub(crate) fn apply(self, report: &mut RunReport) {
        report.items_total = self.total;
        report.items_ok = self.ok;
        report.items_skipped = self.skipped;
        report.items_failed = self.failed;
        report.changed = self.changed;
        report.problems = self.problems;
        report.problems_dropped = self.problems_dropped;
    }
}

/// An open run of a job that other hosts may help with.
pub(crate) struct OpenRun {
    pub run_key: String,
    pub context: String,
}

/// The open runs of `job` on component `digest` with work left to claim: a
/// page free to claim, or pages still being listed (a run whose listing
/// stood still for a lease has lost its starter).
pub(crate) fn open_runs(
    db: &mut AppSession,
    job: &str,
    digest: &str,
    lease: Duration,
) -> Result<Vec<OpenRun>, AppDbError> {
    let exists = db.query("SELECT to_regclass('sundial_item_runs') IS NOT NULL", &[])?;
    if exists.rows.first().map(|r| int(r.first())) != Some(1) {
        return Ok(Vec::new());
    }
    let rows = db.query(
        "SELECT r.run_key, r.context FROM sundial_item_runs r
         WHERE r.job = $1 AND r.digest = $2 AND r.open
           AND ((NOT r.listed AND r.updated_at > now() - make_interval(secs => $3::float8))
                OR EXISTS (SELECT 1 FROM sundial_item_pages p
                  WHERE p.job = r.job AND p.run_key = r.run_key AND NOT p.done
                    AND (p.owner IS NULL OR p.lease_until < now())))
         ORDER BY r.run_key",
        &[
            SqlValue::Text(job.into()),
            SqlValue::Text(digest.into()),
            SqlValue::Text(format!("{:.3}", lease.as_secs_f64())),
        ],
    )?;
    Ok(rows
        .rows
        .into_iter()
        .filter_map(|r| Some(OpenRun { run_key: text(r.first())?, context: text(r.get(1))? }))
        .collect())
}

/// A session for a run's bookkeeping beside the worker's own (which may
/// have been interrupted by the execution's deadline or cancellation).
pub(crate) fn bookkeeping(db: &AppDb) -> AppSession {
    db.session(DbAccess::ReadWrite)
}

// Pages are stored as the items were listed: for each item its key and its
// values, length-prefixed.

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_len(out, b.len());
    out.extend_from_slice(b);
}

/// Encodes a listed page.
pub(crate) fn encode_items(items: &[(String, Vec<SqlValue>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.len() * 32);
    put_len(&mut out, items.len());
    for (key, values) in items {
        put_bytes(&mut out, key.as_bytes());
        put_len(&mut out, values.len());
        for v in values {
            match v {
                SqlValue::Null => out.push(0),
                SqlValue::Integer(i) => {
                    out.push(1);
                    out.extend_from_slice(&i.to_le_bytes());
                }
                SqlValue::Real(f) => {
                    out.push(2);
                    out.extend_from_slice(&f.to_le_bytes());
                }
                SqlValue::Text(s) => {
                    out.push(3);
                    put_bytes(&mut out, s.as_bytes());
                }
                SqlValue::Blob(b) => {
                    out.push(4);
                    put_bytes(&mut out, b);
                }
            }
        }
    }
    out
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn len(&mut self) -> Option<usize> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize)
    }

    fn eight(&mut self) -> Option<[u8; 8]> {
        self.take(8)?.try_into().ok()
    }

    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = self.len()?;
        Some(self.take(n)?.to_vec())
    }

    fn text(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?).ok()
    }
}

/// Decodes a page encoded by [`encode_items`].
pub(crate) fn decode_items(b: &[u8]) -> Option<Vec<(String, Vec<SqlValue>)>> {
    let mut r = Reader(b);
    let n = r.len()?;
    let mut items = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let key = r.text()?;
        let m = r.len()?;
        let mut values = Vec::with_capacity(m.min(1 << 10));
        for _ in 0..m {
            values.push(match r.take(1)?[0] {
                0 => SqlValue::Null,
                1 => SqlValue::Integer(i64::from_le_bytes(r.eight()?)),
                2 => SqlValue::Real(f64::from_le_bytes(r.eight()?)),
                3 => SqlValue::Text(r.text()?),
                4 => SqlValue::Blob(r.bytes()?),
                _ => return None,
            });
        }
        items.push((key, values));
    }
    r.0.is_empty().then_some(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_round_trip() {
        let items = vec![
            ("1".to_string(), vec![SqlValue::Null, SqlValue::Integer(-7), SqlValue::Real(1.5)]),
            ("ü".to_string(), vec![SqlValue::Text("Asia/Tokyo".into()), SqlValue::Blob(vec![0, 255])]),
            (String::new(), vec![]),
        ];
        let bytes = encode_items(&items);
        assert_eq!(decode_items(&bytes), Some(items));
        assert_eq!(decode_items(&bytes[..bytes.len() - 1]), None, "a cut page is refused");
        assert_eq!(decode_items(&[]), None);
    }
}

//! The per-item engine: the host owns the loop over a job's items so job
//! authors write only the per-item logic.
//!
//! - Items come a page at a time from the guest's `items(cursor)`; a million
//!   items are never one list in memory. Listing a page never changes data
//!   (it runs in a savepoint that is always rolled back).
//! - Each item runs in its own savepoint inside a batch transaction: a
//!   failed item is rolled back to its savepoint and the loop goes on; the
//!   batch commits every [`BATCH_ITEMS`] items (on Postgres every
//!   [`PG_BATCH_ITEMS`](crate::store::appdb::PG_BATCH_ITEMS)) or
//!   [`BATCH_TIME`], so the cost of a commit is shared. A dry run rolls every
//!   batch back.
//! - With a read-write grant, each commit also writes a checkpoint (the page
//!   cursor and the last item done) into the application database in the same
//!   transaction. A later attempt for the same scheduled instant (a retry, or
//!   a re-run after the host died) starts after the checkpoint, so no item
//!   already committed is run again. A finished run deletes its checkpoint.
//! - A timeout or cancellation keeps the work committed so far (and its
//!   checkpoint); a trap costs only the item that trapped (the loop continues
//!   in a fresh instance).
//! - With `item_workers` on Postgres, a run's pages are shared by workers on
//!   every host serving the job ([`shared`](super::shared)): the same loop,
//!   with each batch's progress written into its page instead of a
//!   checkpoint.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use wasmtime::Store;

use super::Runtime;
use super::bindings::{Job, types as wit};
use super::component::ComponentVersion;
use super::exec::{SharedSetup, classify, fresh_instance, guest_error, interruption};
use super::host::{HostState, Progress, from_wit_value, to_wit_value};
use super::shared::{BatchMark, Claim, Claims, IDLE_WAIT, PAGE_PROBLEMS, RunRow, Totals};
use crate::model::{DbAccess, ErrorClass, ExecutionStatus, RunReport};
use crate::store::appdb::{AppDbError, AppSession, SqlValue};

/// Items per batch transaction at most.
pub const BATCH_ITEMS: u64 = 1000;
/// A batch commits after this long even if it has fewer items.
pub const BATCH_TIME: Duration = Duration::from_millis(250);
/// The checkpoint table Sundial keeps in the application database.
pub const CHECKPOINT_TABLE: &str = "sundial_item_checkpoints";

const CREATE_CHECKPOINTS: &str = "CREATE TABLE IF NOT EXISTS sundial_item_checkpoints (
    job TEXT NOT NULL,
    run_key TEXT NOT NULL,
    cursor TEXT,
    last_key TEXT,
    done BIGINT NOT NULL,
    execution_id BIGINT NOT NULL,
    PRIMARY KEY (job, run_key)
)";

struct Resume {
    cursor: Option<String>,
    last_key: Option<String>,
    done: u64,
    execution_id: i64,
}

/// Where the loop stands: the cursor that fetched the current page and the
/// last item finished in it.
#[derive(Default)]
struct Position {
    cursor: Option<String>,
    last_key: Option<String>,
}

struct Batch {
    items: u64,
    ok: u64,
    skipped: u64,
    failed: u64,
    changed: u64,
    /// The batch's failed and skipped items, for its page in a shared run
    /// (at most [`PAGE_PROBLEMS`]).
    problems: Vec<(String, String, String)>,
    started: Instant,
    /// What the batch's items log is inside (debug level: free when off).
    span: tracing::Span,
}

impl Batch {
    fn new() -> Self {
        Batch {
            items: 0,
            ok: 0,
            skipped: 0,
            failed: 0,
            changed: 0,
            problems: Vec::new(),
            started: Instant::now(),
            span: tracing::Span::none(),
        }
    }

    fn open(first_item: u64) -> Self {
        Batch { span: tracing::info_span!("batch", first_item), ..Batch::new() }
    }
}

/// Why a run stops early.
pub struct Failure {
    /// The run's status.
    pub status: ExecutionStatus,
    /// Its error class.
    pub class: ErrorClass,
    /// What happened.
    pub message: String,
}

/// How one item ended.
pub enum ItemResult {
    /// Done; the number of rows it changed.
    Ok(u64),
    /// The item failed or was skipped (class `skip`); the run goes on.
    Err(ErrorClass, String),
    /// The item failed and the run must stop (deadline, cancellation, a host
    /// failure).
    Stop(Failure),
}

/// What the engine needs from a job: its pages, its items, the database
/// session it runs in. Implemented for WebAssembly components and for
/// native Rust jobs, which then go through the same loop.
pub trait ItemDriver {
    /// An item as the job sees it.
    type Item;
    /// The item's key (recorded with problems, and in checkpoints).
    fn key(item: &Self::Item) -> &str;
    /// The item as stored in a shared run's page: its key and values.
    fn to_parts(item: &Self::Item) -> (String, Vec<SqlValue>);
    /// An item from a shared run's page.
    fn from_parts(key: String, data: Vec<SqlValue>) -> Self::Item;
    /// Whether the run must stop (deadline, cancellation), checked between
    /// pages of a shared run.
    fn should_stop(&self) -> Option<Failure> {
        None
    }
    /// The execution's database session, if it has one.
    fn session(&mut self) -> Option<&mut AppSession>;
    /// The page after `cursor`: items and the next cursor (none at the end).
    fn list(&mut self, cursor: Option<&str>) -> Result<(Vec<Self::Item>, Option<String>), Failure>;
    /// Runs one item.
    fn run_item(&mut self, item: &Self::Item) -> ItemResult;
    /// Records a line in the execution's log.
    fn log(&mut self, message: &str);
    /// Where live progress goes.
    fn progress(&self) -> &Progress;
    /// Called after each batch transaction ended (committed or rolled back).
    fn batch_ended(&mut self) {}
}

/// The run as the engine sees it.
pub struct ItemRun {
    /// The job.
    pub job_name: String,
    /// The execution.
    pub execution_id: i64,
    /// The scheduled instant (ms): with the job, the checkpoint's key.
    pub scheduled_for_ms: i64,
    /// Roll everything back.
    pub dry_run: bool,
    /// Stop after this many items.
    pub limit: Option<u64>,
}

struct Engine<'a, D: ItemDriver> {
    driver: &'a mut D,
    run: &'a ItemRun,
    report: RunReport,
    batch: Batch,
    checkpoints: bool,
    /// Items per batch transaction at most (fewer on Postgres).
    batch_cap: u64,
    /// Items counted by earlier attempts (from the checkpoint).
    done_before: u64,
    /// In a shared run: its pages.
    shared: Option<&'a Claims>,
    /// In a shared run: the page this worker holds.
    page: Option<Held>,
}

/// A page a worker holds.
struct Held {
    claim: Claim,
    /// The claim was lost (taken over, or a commit failed): the worker
    /// leaves the page.
    lost: bool,
}

/// How a batch transaction ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BatchEnd {
    /// Full (or old enough): the run goes on with a new batch.
    GoOn,
    /// The run (or the page) is done.
    Complete,
    /// The run stops early.
    Stop,
}

/// Runs an item job's loop to its end.
pub fn run_with<D: ItemDriver>(driver: &mut D, run: &ItemRun, started_at: chrono::DateTime<chrono::Utc>) -> RunReport {
    let access = driver.session().map(|s| s.access()).unwrap_or(DbAccess::None);
    let batch_cap = driver.session().map_or(BATCH_ITEMS, |s| s.batch_items(BATCH_ITEMS));
    let mut report = RunReport::new(ExecutionStatus::Succeeded);
    report.guest_started_at = Some(started_at);
    let mut engine = Engine {
        driver,
        run,
        report,
        batch: Batch::new(),
        checkpoints: access == DbAccess::ReadWrite && !run.dry_run,
        batch_cap,
        done_before: 0,
        shared: None,
        page: None,
    };
    let mut resumed = None;
    if engine.checkpoints {
        match engine.load_checkpoint() {
            Ok(r) => resumed = r,
            Err(e) => {
                engine.report.fail(
                    ExecutionStatus::Failed,
                    db_class(&e),
                    format!("cannot read the item checkpoint from the application database: {e}"),
                );
                return engine.report;
            }
        }
    }
    if let Some(r) = &resumed {
        engine.done_before = r.done;
        engine.driver.log(&format!(
            "resuming after {} items already committed by execution {} for this scheduled instant",
            r.done, r.execution_id
        ));
    }
    let ended = engine.run(resumed);
    engine.finish(ended)
}

/// A WebAssembly item job: pages and items are guest calls.
struct WasmDriver<'a> {
    rt: &'a Runtime,
    version: &'a ComponentVersion,
    store: &'a mut Store<HostState>,
    job: Job,
    ctx: &'a wit::Context,
    timeout: Duration,
}

impl ItemDriver for WasmDriver<'_> {
    type Item = wit::Item;

    fn key(item: &wit::Item) -> &str {
        &item.key
    }

    fn to_parts(item: &wit::Item) -> (String, Vec<SqlValue>) {
        (item.key.clone(), item.data.iter().cloned().map(from_wit_value).collect())
    }

    fn from_parts(key: String, data: Vec<SqlValue>) -> wit::Item {
        wit::Item { key, data: data.into_iter().map(to_wit_value).collect() }
    }

    fn should_stop(&self) -> Option<Failure> {
        interruption(self.store.data(), self.timeout).map(|(status, class, message)| Failure { status, class, message })
    }

    fn session(&mut self) -> Option<&mut AppSession> {
        self.store.data_mut().db.as_mut()
    }

    fn list(&mut self, cursor: Option<&str>) -> Result<(Vec<wit::Item>, Option<String>), Failure> {
        match self.job.call_items(&mut *self.store, self.ctx, cursor) {
            Ok(Ok(page)) => Ok((page.items, page.next_cursor)),
            Ok(Err(e)) => {
                let (class, message) = guest_error(e);
                let status = if class == ErrorClass::Skip { ExecutionStatus::Skipped } else { ExecutionStatus::Failed };
                Err(Failure { status, class, message })
            }
            Err(e) => {
                let (status, class, message) = classify(&e, self.store.data(), self.timeout);
                Err(Failure { status, class, message })
            }
        }
    }

    fn run_item(&mut self, item: &wit::Item) -> ItemResult {
        match self.job.call_run_item(&mut *self.store, self.ctx, item) {
            Ok(Ok(outcome)) => ItemResult::Ok(outcome.changed),
            Ok(Err(e)) => {
                let (class, message) = guest_error(e);
                ItemResult::Err(class, message)
            }
            Err(e) => {
                let (status, class, message) = classify(&e, self.store.data(), self.timeout);
                // Out of time or fuel: both belong to the execution, not the item.
                if matches!(status, ExecutionStatus::TimedOut | ExecutionStatus::Cancelled) || class == ErrorClass::Fuel
                {
                    return ItemResult::Stop(Failure { status, class, message });
                }
                // A trapped instance may not be entered again: continue
                // with a fresh instance in a fresh store (same session).
                match fresh_instance(self.rt, self.version, self.store) {
                    Ok(fresh) => {
                        self.job = fresh;
                        ItemResult::Err(class, message)
                    }
                    Err(e) => ItemResult::Stop(Failure {
                        status: ExecutionStatus::Failed,
                        class: ErrorClass::Host,
                        message: format!("{message}; cannot re-instantiate after it: {e:#}"),
                    }),
                }
            }
        }
    }

    fn log(&mut self, message: &str) {
        let data = self.store.data_mut();
        tracing::info!(target: "sundial::items", job = %data.job_name, execution = data.execution_id, "{message}");
        data.logs.push("INFO", message);
    }

    fn progress(&self) -> &Progress {
        &self.store.data().progress
    }

    fn batch_ended(&mut self) {
        // Key-value state writes made while the batch held the write lock of
        // the file they go to.
        self.store.data_mut().flush_state();
    }
}

/// An item as a native job sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NativeItem {
    /// Its key.
    pub key: String,
    /// What the page carried for it.
    pub data: Vec<SqlValue>,
}

/// A native item job made of two closures over the database session: the
/// page source and the per-item function. It goes through the same loop,
/// transactions and checkpoints as a component.
pub struct ClosureItems<L, R> {
    /// The execution's session.
    pub session: AppSession,
    /// `(session, cursor) -> (items, next cursor)`.
    pub list: L,
    /// `(session, item) -> rows changed`, or the item's error class and message.
    pub run: R,
    /// Live progress.
    pub progress: std::sync::Arc<Progress>,
}

impl<L, R> ItemDriver for ClosureItems<L, R>
where
    L: FnMut(&mut AppSession, Option<&str>) -> Result<(Vec<NativeItem>, Option<String>), String>,
    R: FnMut(&mut AppSession, &NativeItem) -> Result<u64, (ErrorClass, String)>,
{
    type Item = NativeItem;

    fn key(item: &NativeItem) -> &str {
        &item.key
    }

    fn to_parts(item: &NativeItem) -> (String, Vec<SqlValue>) {
        (item.key.clone(), item.data.clone())
    }

    fn from_parts(key: String, data: Vec<SqlValue>) -> NativeItem {
        NativeItem { key, data }
    }

    fn session(&mut self) -> Option<&mut AppSession> {
        Some(&mut self.session)
    }

    fn list(&mut self, cursor: Option<&str>) -> Result<(Vec<NativeItem>, Option<String>), Failure> {
        (self.list)(&mut self.session, cursor).map_err(|message| Failure {
            status: ExecutionStatus::Failed,
            class: ErrorClass::Fatal,
            message,
        })
    }

    fn run_item(&mut self, item: &NativeItem) -> ItemResult {
        match (self.run)(&mut self.session, item) {
            Ok(changed) => ItemResult::Ok(changed),
            Err((class, message)) => ItemResult::Err(class, message),
        }
    }

    fn log(&mut self, message: &str) {
        tracing::info!(target: "sundial::items", "{message}");
    }

    fn progress(&self) -> &Progress {
        &self.progress
    }
}

fn item_run(ctx: &wit::Context) -> ItemRun {
    ItemRun {
        job_name: ctx.job_name.clone(),
        execution_id: ctx.execution_id,
        scheduled_for_ms: ctx.scheduled_for,
        dry_run: ctx.dry_run,
        limit: ctx.limit,
    }
}

/// Runs a WebAssembly item job to its end; shared with other workers when
/// `shared` says so.
pub(crate) fn run_items(
    rt: &Runtime,
    version: &Arc<ComponentVersion>,
    store: &mut Store<HostState>,
    job: Job,
    ctx: &wit::Context,
    timeout: Duration,
    shared: Option<&SharedSetup>,
) -> RunReport {
    let run = item_run(ctx);
    let started = rt.clock().now();
    let mut driver = WasmDriver { rt, version, store, job, ctx, timeout };
    let Some(setup) = shared else { return run_with(&mut driver, &run, started) };
    let claims = Claims::new(&run.job_name, &run.scheduled_for_ms.to_string(), &setup.items.node, setup.items.lease);
    let context = super::shared::encode_context(&setup.ctx);
    std::thread::scope(|scope| {
        // The execution's own worker is one of `workers`.
        let spawn = || {
            for _ in 1..setup.items.workers {
                let span = tracing::Span::current();
                let claims = &claims;
                scope.spawn(move || span.in_scope(|| super::exec::work_shared(rt, version, setup, claims)));
            }
        };
        run_shared(&mut driver, &run, &claims, (&version.digest, &context), started, spawn)
    })
}

/// A worker of a shared run: claims the run's pages and works them until
/// none is left to claim. Its report counts only its own items.
pub(crate) fn work_pages(
    rt: &Runtime,
    version: &ComponentVersion,
    store: &mut Store<HostState>,
    job: Job,
    ctx: &wit::Context,
    timeout: Duration,
    claims: &Claims,
) -> RunReport {
    let run = item_run(ctx);
    let started = rt.clock().now();
    let mut driver = WasmDriver { rt, version, store, job, ctx, timeout };
    let mut engine = Engine::shared(&mut driver, &run, claims, started);
    let ended = engine.work_pages(claims, false);
    engine.finish(ended)
}

/// The starter of a shared run: records the run, lists its pages (while
/// the workers `spawn` starts claim them), works pages, waits for every
/// page, and reports the whole run from the pages' counts.
pub(crate) fn run_shared<D: ItemDriver>(
    driver: &mut D,
    run: &ItemRun,
    claims: &Claims,
    (digest, context): (&str, &str),
    started_at: chrono::DateTime<chrono::Utc>,
    spawn: impl FnOnce(),
) -> RunReport {
    let mut engine = Engine::shared(driver, run, claims, started_at);
    let opened = match engine.db() {
        Some(db) => super::shared::ensure_tables(db).and_then(|()| claims.open(db, run.execution_id, digest, context)),
        None => Err(AppDbError::Other("a shared item run needs the application database".into())),
    };
    let row = match opened {
        Ok(row) => row,
        Err(e) => {
            engine.report.fail(
                ExecutionStatus::Failed,
                db_class(&e),
                format!("cannot record the shared item run: {e}"),
            );
            return engine.report;
        }
    };
    if row.execution_id != run.execution_id {
        engine.driver.log(&format!(
            "resuming the shared item run that execution {} began ({} pages listed{})",
            row.execution_id,
            row.pages,
            if row.listed { ", all" } else { " so far" }
        ));
    }
    spawn();
    let ended = match engine.list_pages(claims, row) {
        Ok(()) => engine.work_pages(claims, true),
        Err(()) => Ended::Stopped,
    };
    // The worker's own session may have been interrupted (deadline,
    // cancellation): the run's bookkeeping uses a session of its own.
    let Some(app) = engine.db().map(|db| db.database().clone()) else { return engine.report };
    let mut book = super::shared::bookkeeping(&app);
    let report = match ended {
        Ended::Stopped => {
            // Stop the other workers; a later attempt reopens the run.
            if let Err(e) = claims.close(&mut book) {
                tracing::warn!(job = %run.job_name, error = %e, "cannot close the shared item run");
            }
            if let Ok([total, ok, skipped, failed]) = claims.progress(&mut book) {
                let r = &mut engine.report;
                (r.items_total, r.items_ok, r.items_skipped, r.items_failed) = (total, ok, skipped, failed);
            }
            engine.finish(ended)
        }
        Ended::Complete => match claims.finish(&mut book) {
            Ok(totals) => engine.finish_shared(totals),
            Err(e) => {
                engine.report.fail(
                    ExecutionStatus::Failed,
                    db_class(&e),
                    format!("cannot sum the shared item run: {e}"),
                );
                engine.report
            }
        },
    };
    book.close();
    report
}

/// How the loop ended.
enum Ended {
    /// Every item was seen (or the limit reached).
    Complete,
    /// The run stopped early; the report already says why.
    Stopped,
}

impl<'a, D: ItemDriver> Engine<'a, D> {
    /// An engine working a shared run's pages.
    fn shared(
        driver: &'a mut D,
        run: &'a ItemRun,
        claims: &'a Claims,
        started_at: chrono::DateTime<chrono::Utc>,
    ) -> Self {
        let batch_cap = driver.session().map_or(BATCH_ITEMS, |s| s.batch_items(BATCH_ITEMS));
        let mut report = RunReport::new(ExecutionStatus::Succeeded);
        report.guest_started_at = Some(started_at);
        Engine {
            driver,
            run,
            report,
            batch: Batch::new(),
            checkpoints: false,
            batch_cap,
            done_before: 0,
            shared: Some(claims),
            page: None,
        }
    }

    fn db(&mut self) -> Option<&mut AppSession> {
        self.driver.session()
    }

    /// Lists the run's pages into the page table, from where an earlier
    /// attempt left off. Each page commits on its own, so workers can claim
    /// it at once.
    fn list_pages(&mut self, claims: &Claims, row: RunRow) -> Result<(), ()> {
        let (mut cursor, mut page, mut listed) = (row.next_cursor, row.pages, row.listed);
        while !listed {
            if let Some(f) = self.driver.should_stop() {
                self.report.fail(f.status, f.class, f.message);
                return Err(());
            }
            if let Some(Err(e)) = self.db().map(|db| db.begin()) {
                self.report.fail(ExecutionStatus::Failed, db_class(&e), format!("cannot begin a transaction: {e}"));
                return Err(());
            }
            let Ok((items, next)) = self.list(cursor.as_deref()) else {
                if let Some(db) = self.db() {
                    let _ = db.rollback();
                }
                return Err(());
            };
            let parts: Vec<_> = items.iter().map(D::to_parts).collect();
            let bytes = super::shared::encode_items(&parts);
            let Some(db) = self.db() else { return Err(()) };
            let added = claims.add_page(db, page, bytes, next.as_deref()).and_then(|()| db.commit());
            if let Err(e) = added {
                let _ = db.rollback();
                self.report.fail(ExecutionStatus::Failed, db_class(&e), format!("cannot record a page of items: {e}"));
                return Err(());
            }
            page += 1;
            listed = next.is_none();
            cursor = next;
        }
        Ok(())
    }

    /// Claims pages and works them until none is left to claim (and, for
    /// the starter, `until_all_done`, until every page is done: a page
    /// whose worker died is claimed again once its lease runs out). A
    /// worker waiting for pages still being listed gives up after a lease
    /// without a new page (the run's starter died while listing).
    fn work_pages(&mut self, claims: &Claims, until_all_done: bool) -> Ended {
        let mut published = Instant::now();
        let mut idle_since: Option<Instant> = None;
        loop {
            if let Some(f) = self.driver.should_stop() {
                self.report.fail(f.status, f.class, f.message);
                return Ended::Stopped;
            }
            let Some(db) = self.db() else { return Ended::Complete };
            let claim = match claims.claim(db) {
                Ok(c) => c,
                Err(e) => {
                    self.report.fail(
                        ExecutionStatus::Failed,
                        db_class(&e),
                        format!("cannot claim a page of items: {e}"),
                    );
                    return Ended::Stopped;
                }
            };
            if let Some(claim) = claim {
                idle_since = None;
                if let Stop::Yes = self.work_page(claim) {
                    return Ended::Stopped;
                }
            } else {
                let status = match claims.status(db) {
                    Ok(s) => s,
                    Err(e) => {
                        self.report.fail(
                            ExecutionStatus::Failed,
                            db_class(&e),
                            format!("cannot read the shared run: {e}"),
                        );
                        return Ended::Stopped;
                    }
                };
                if !status.open || (status.listed && (!until_all_done || status.remaining == 0)) {
                    return Ended::Complete;
                }
                if !until_all_done && idle_since.get_or_insert_with(Instant::now).elapsed() > claims.lease {
                    tracing::warn!(job = %claims.job, run = %claims.run_key,
                        "no new page of the shared item run for a lease: its listing stopped; leaving it");
                    return Ended::Complete;
                }
                std::thread::sleep(IDLE_WAIT);
            }
            if until_all_done && published.elapsed() >= Duration::from_secs(1) {
                published = Instant::now();
                if let Some(Ok([total, ok, skipped, failed])) = self.db().map(|db| claims.progress(db)) {
                    let p = self.driver.progress();
                    p.done.store(total, Ordering::Relaxed);
                    p.ok.store(ok, Ordering::Relaxed);
                    p.skipped.store(skipped, Ordering::Relaxed);
                    p.failed.store(failed, Ordering::Relaxed);
                }
            }
        }
    }

    /// Works one claimed page from after its last committed item.
    fn work_page(&mut self, claim: Claim) -> Stop {
        let mut items = claim.items.clone();
        let mut at = Position { cursor: None, last_key: claim.last_key.clone() };
        if let Some(last) = &claim.last_key
            && let Some(pos) = items.iter().position(|(k, _)| k == last)
        {
            items.drain(..=pos);
        }
        self.page = Some(Held { claim, lost: false });
        let mut stop = Stop::No;
        for (key, data) in items {
            if let Err(e) = self.ensure_batch() {
                self.report.fail(ExecutionStatus::Failed, db_class(&e), format!("cannot begin a transaction: {e}"));
                stop = Stop::Yes;
                break;
            }
            let item = D::from_parts(key, data);
            if let Stop::Yes = self.run_one(&item, &at) {
                stop = Stop::Yes;
                break;
            }
            at.last_key = Some(D::key(&item).to_string());
            if self.batch.items >= self.batch_cap || self.batch.started.elapsed() >= BATCH_TIME {
                self.end_batch(&at, BatchEnd::GoOn);
                if self.page.as_ref().is_some_and(|h| h.lost) {
                    break;
                }
            }
        }
        let lost = self.page.as_ref().is_none_or(|h| h.lost);
        if matches!(stop, Stop::No) && !lost {
            match self.ensure_batch() {
                Ok(()) => self.end_batch(&at, BatchEnd::Complete),
                Err(e) => {
                    self.report.fail(ExecutionStatus::Failed, db_class(&e), format!("cannot begin a transaction: {e}"));
                    stop = Stop::Yes;
                }
            }
        }
        if let (Stop::Yes, Some(held), Some(claims)) = (&stop, self.page.as_ref(), self.shared) {
            // Let another worker go on with the page at once.
            let db = self.driver.session().map(|db| db.database().clone());
            if let Some(db) = db {
                let mut book = super::shared::bookkeeping(&db);
                let _ = claims.release(&mut book, &held.claim);
                book.close();
            }
        }
        self.page = None;
        stop
    }

    /// The starter's report of a finished shared run: the pages' counts.
    fn finish_shared(mut self, totals: Totals) -> RunReport {
        let (pages, hosts) = (totals.pages, totals.hosts.join(", "));
        totals.apply(&mut self.report);
        let mut report = self.finish(Ended::Complete);
        if let Some(summary) = report.summary.as_mut() {
            summary.push_str(&format!("; {pages} pages, worked by {hosts}"));
        }
        report
    }

    fn run_key(&self) -> String {
        self.run.scheduled_for_ms.to_string()
    }

    fn load_checkpoint(&mut self) -> Result<Option<Resume>, AppDbError> {
        let job = SqlValue::Text(self.run.job_name.clone());
        let key = SqlValue::Text(self.run_key());
        let Some(db) = self.db() else { return Ok(None) };
        db.execute(CREATE_CHECKPOINTS, &[])?;
        let rows = db.query(
            "SELECT cursor, last_key, done, execution_id FROM sundial_item_checkpoints WHERE job = $1 AND run_key = $2",
            &[job, key],
        )?;
        let Some(row) = rows.rows.into_iter().next() else { return Ok(None) };
        let text = |v: &SqlValue| match v {
            SqlValue::Text(s) => Some(s.clone()),
            _ => None,
        };
        let int = |v: &SqlValue| match v {
            SqlValue::Integer(i) => *i,
            _ => 0,
        };
        Ok(Some(Resume {
            cursor: row.first().and_then(text),
            last_key: row.get(1).and_then(text),
            done: u64::try_from(row.get(2).map(int).unwrap_or(0)).unwrap_or(0),
            execution_id: row.get(3).map(int).unwrap_or(0),
        }))
    }

    /// Opens the batch transaction if none is open.
    fn ensure_batch(&mut self) -> Result<(), AppDbError> {
        let Some(db) = self.db() else { return Ok(()) };
        if !db.in_transaction() {
            db.begin()?;
            self.batch = Batch::open(self.done_before + self.report.items_total + 1);
        }
        Ok(())
    }

    /// Ends the batch: rolls back in a dry run, else writes the checkpoint
    /// (or deletes it when the run is complete) and commits. If the commit
    /// fails, the batch's items are counted as failed. Then the driver
    /// hears that the batch ended.
    fn end_batch(&mut self, at: &Position, end: BatchEnd) {
        self.end_batch_transaction(at, end);
        self.driver.batch_ended();
    }

    fn end_batch_transaction(&mut self, at: &Position, end: BatchEnd) {
        let complete = end == BatchEnd::Complete;
        // A batch the run goes on after need not wait for the disk: its
        // progress (checkpoint or page mark) commits with it, so a database
        // crash loses both and the items are done again; the run's last
        // batch commits as usual, which makes every batch before it durable.
        let commit = |db: &mut AppSession| if end == BatchEnd::GoOn { db.commit_relaxed() } else { db.commit() };
        let dry_run = self.run.dry_run;
        let checkpoints = self.checkpoints;
        let job = SqlValue::Text(self.run.job_name.clone());
        let key = SqlValue::Text(self.run_key());
        let done = i64::try_from(self.done_before + self.report.items_total).unwrap_or(i64::MAX);
        let execution = SqlValue::Integer(self.run.execution_id);
        let batch = std::mem::replace(&mut self.batch, Batch::new());
        let _in_batch = batch.span.enter();
        tracing::debug!(
            items = batch.items,
            ok = batch.ok,
            ms = batch.started.elapsed().as_millis() as u64,
            "batch ends"
        );
        let Some(db) = self.driver.session() else { return };
        if !db.in_transaction() {
            return;
        }
        if dry_run {
            let _ = db.rollback();
            return;
        }
        let mut result = Ok(());
        if let (Some(claims), Some(held)) = (self.shared, self.page.as_mut()) {
            let mut problems = held.claim.problems.clone();
            let room = PAGE_PROBLEMS.saturating_sub(problems.len());
            problems.extend(batch.problems.iter().take(room).cloned());
            let mark = BatchMark {
                last_key: at.last_key.as_deref(),
                total: batch.items,
                ok: batch.ok,
                skipped: batch.skipped,
                failed: batch.failed,
                changed: batch.changed,
                problems: &problems,
                done: complete,
            };
            // `Err(None)`: the page was taken over.
            let marked = match claims.mark(db, &held.claim, &mark) {
                Ok(true) => commit(db).map_err(Some),
                Ok(false) => Err(None),
                Err(e) => Err(Some(e)),
            };
            match marked {
                Ok(()) => held.claim.problems = problems,
                Err(e) => {
                    let _ = db.rollback();
                    held.lost = true;
                    let page = held.claim.page;
                    match e {
                        None => tracing::warn!(
                            job = %claims.job, page, items = batch.items,
                            "another worker took this page over (this worker's lease ran out): \
                             its last batch was rolled back"
                        ),
                        Some(e) => tracing::warn!(
                            job = %claims.job, page, items = batch.items, error = %e,
                            "cannot commit a batch: rolled back, the page is left to another worker"
                        ),
                    }
                }
            }
            return;
        }
        if checkpoints {
            result = if complete {
                db.execute("DELETE FROM sundial_item_checkpoints WHERE job = $1 AND run_key = $2", &[job, key])
                    .map(|_| ())
            } else {
                let text = |v: &Option<String>| v.clone().map(SqlValue::Text).unwrap_or(SqlValue::Null);
                db.execute(
                    "INSERT INTO sundial_item_checkpoints (job, run_key, cursor, last_key, done, execution_id)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (job, run_key) DO UPDATE SET cursor = excluded.cursor,
                       last_key = excluded.last_key, done = excluded.done, execution_id = excluded.execution_id",
                    &[job, key, text(&at.cursor), text(&at.last_key), SqlValue::Integer(done), execution],
                )
                .map(|_| ())
            };
        }
        let result = result.and_then(|()| commit(db));
        if let Err(e) = result {
            let _ = db.rollback();
            if batch.ok > 0 {
                self.report.items_ok -= batch.ok;
                self.report.items_failed += batch.ok;
                self.report.changed = self.report.changed.saturating_sub(batch.changed);
                self.report.problem(
                    format!("batch of {} items", batch.items),
                    db_class(&e),
                    format!("commit failed, the batch's work was rolled back: {e}"),
                );
                self.publish_progress();
            }
        }
    }

    fn publish_progress(&mut self) {
        let (total, ok, skipped, failed) =
            (self.report.items_total, self.report.items_ok, self.report.items_skipped, self.report.items_failed);
        let p = self.driver.progress();
        p.done.store(total, Ordering::Relaxed);
        p.ok.store(ok, Ordering::Relaxed);
        p.skipped.store(skipped, Ordering::Relaxed);
        p.failed.store(failed, Ordering::Relaxed);
    }

    fn run(&mut self, resumed: Option<Resume>) -> Ended {
        let limit = self.run.limit.unwrap_or(u64::MAX);
        let mut at = Position::default();
        let mut skip_through = None;
        if let Some(r) = resumed {
            at.cursor = r.cursor;
            skip_through = r.last_key;
        }
        loop {
            if self.report.items_total >= limit {
                self.end_batch(&at, BatchEnd::Complete);
                return Ended::Complete;
            }
            if let Err(e) = self.ensure_batch() {
                self.report.fail(ExecutionStatus::Failed, db_class(&e), format!("cannot begin a transaction: {e}"));
                return Ended::Stopped;
            }
            let (mut items, next_cursor) = match self.list(at.cursor.as_deref()) {
                Ok(page) => page,
                Err(()) => {
                    self.end_batch(&at, BatchEnd::Stop);
                    return Ended::Stopped;
                }
            };
            // Resuming inside a page: skip the items the checkpoint covers (if
            // the page still holds the last one done; else the page changed
            // and every item in it runs).
            if let Some(last) = skip_through.take()
                && let Some(pos) = items.iter().position(|i| D::key(i) == last)
            {
                items.drain(..=pos);
                at.last_key = Some(last);
            }
            for item in items {
                if self.report.items_total >= limit {
                    break;
                }
                if let Stop::Yes = self.run_one(&item, &at) {
                    return Ended::Stopped;
                }
                at.last_key = Some(D::key(&item).to_string());
                if self.batch.items >= self.batch_cap || self.batch.started.elapsed() >= BATCH_TIME {
                    self.end_batch(&at, BatchEnd::GoOn);
                    if let Err(e) = self.ensure_batch() {
                        self.report.fail(
                            ExecutionStatus::Failed,
                            db_class(&e),
                            format!("cannot begin a transaction: {e}"),
                        );
                        return Ended::Stopped;
                    }
                }
            }
            match next_cursor {
                Some(next) if self.report.items_total < limit => {
                    at = Position { cursor: Some(next), last_key: None };
                }
                _ => {
                    self.end_batch(&at, BatchEnd::Complete);
                    return Ended::Complete;
                }
            }
        }
    }

    /// Lists one page; listing never changes data.
    fn list(&mut self, cursor: Option<&str>) -> Result<(Vec<D::Item>, Option<String>), ()> {
        if let Some(db) = self.db() {
            let _ = db.savepoint();
        }
        let page = self.driver.list(cursor);
        if let Some(db) = self.db() {
            let _ = db.rollback_item();
        }
        page.map_err(|f| self.report.fail(f.status, f.class, format!("listing items: {}", f.message)))
    }

    fn run_one(&mut self, item: &D::Item, at: &Position) -> Stop {
        let key = D::key(item);
        self.report.items_total += 1;
        self.batch.items += 1;
        if let Some(e) = self.db().and_then(|db| db.savepoint().err()) {
            self.report.items_failed += 1;
            self.batch.failed += 1;
            self.problem(key, db_class(&e), format!("cannot open the item's savepoint: {e}"));
            self.publish_progress();
            return Stop::No;
        }
        let driver = &mut self.driver;
        let outcome = self.batch.span.in_scope(|| driver.run_item(item));
        match outcome {
            ItemResult::Ok(changed) => match self.db().map(|db| db.release()) {
                None | Some(Ok(())) => {
                    self.report.items_ok += 1;
                    self.report.changed += changed;
                    self.batch.ok += 1;
                    self.batch.changed += changed;
                }
                Some(Err(e)) => {
                    self.report.items_failed += 1;
                    self.batch.failed += 1;
                    self.problem(key, db_class(&e), format!("cannot keep the item's work: {e}"));
                }
            },
            ItemResult::Err(class, message) => {
                if let Some(db) = self.db() {
                    let _ = db.rollback_item();
                }
                if class == ErrorClass::Skip {
                    self.report.items_skipped += 1;
                    self.batch.skipped += 1;
                } else {
                    self.report.items_failed += 1;
                    self.batch.failed += 1;
                }
                self.problem(key, class, message);
            }
            ItemResult::Stop(f) => {
                if let Some(db) = self.db() {
                    let _ = db.rollback_item();
                }
                // Keep what is done; the interrupted item is not.
                self.report.items_failed += 1;
                self.report.problem(key.to_string(), f.class, f.message.clone());
                self.publish_progress();
                self.report.fail(f.status, f.class, f.message);
                self.end_batch(at, BatchEnd::Stop);
                return Stop::Yes;
            }
        }
        self.publish_progress();
        Stop::No
    }

    /// Records a failed or skipped item (in a shared run, also for its page).
    fn problem(&mut self, key: &str, class: ErrorClass, message: String) {
        if self.shared.is_some() && self.batch.problems.len() < PAGE_PROBLEMS {
            self.batch.problems.push((key.to_string(), class.as_str().to_string(), message.clone()));
        }
        self.report.problem(key.to_string(), class, message);
    }

    fn finish(mut self, ended: Ended) -> RunReport {
        self.publish_progress();
        let mut report = self.report;
        if matches!(ended, Ended::Complete) && report.items_failed > 0 {
            let status = if report.items_ok == 0 && report.items_skipped == 0 {
                ExecutionStatus::Failed
            } else {
                ExecutionStatus::Partial
            };
            let message = format!("{} of {} items failed", report.items_failed, report.items_total);
            report.fail(status, ErrorClass::Fatal, message);
        }
        let mut summary = format!(
            "{} items: {} ok, {} skipped, {} failed",
            report.items_total, report.items_ok, report.items_skipped, report.items_failed
        );
        if self.run.dry_run {
            summary.push_str(&format!("; dry run: {} changes would have been made, nothing committed", report.changed));
        }
        if self.done_before > 0 {
            summary.push_str(&format!(" (resumed after {} items done by an earlier attempt)", self.done_before));
        }
        report.summary = Some(summary);
        report
    }
}

enum Stop {
    Yes,
    No,
}

fn db_class(e: &AppDbError) -> ErrorClass {
    match e {
        AppDbError::Busy(_) => ErrorClass::Retryable,
        _ => ErrorClass::Host,
    }
}

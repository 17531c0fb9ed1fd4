//! The hot write path on SQLite: the four writes on every execution's way
//! (create its row, mark it running, finish it, advance its job's schedule)
//! run on one dedicated thread that owns a direct SQLite connection.
//!
//! A batch is one hop to that thread and one transaction there, with cached
//! prepared statements: a few microseconds per row, instead of a round trip
//! through the async driver per statement. When a thousand jobs fire in the
//! same second this is the difference between the writes taking the CPU the
//! guests need and not.

use std::path::Path;
use std::sync::mpsc::{Sender, channel};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::{StoreError, Verdict};

type Task = Box<dyn FnOnce(&mut Connection) + Send + 'static>;

/// The writer thread's handle; the thread ends when this is dropped.
pub(crate) struct HotWriter {
    tx: Sender<Task>,
}

impl std::fmt::Debug for HotWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotWriter").finish_non_exhaustive()
    }
}

impl HotWriter {
    /// Opens the connection and starts the thread.
    pub(crate) fn open(path: &Path) -> Result<HotWriter, StoreError> {
        let connect = || -> Result<Connection, rusqlite::Error> {
            let conn = Connection::open(path)?;
            conn.busy_handler(Some(super::appdb::retry_busy))?;
            conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")?;
            conn.set_prepared_statement_cache_capacity(32);
            Ok(conn)
        };
        let mut conn = connect().map_err(|source| StoreError::Write { action: "opening the store", source })?;
        let (tx, rx) = channel::<Task>();
        std::thread::Builder::new()
            .name("sundial-store".into())
            .spawn(move || {
                while let Ok(task) = rx.recv() {
                    task(&mut conn);
                }
            })
            .map_err(|e| StoreError::Batch(format!("cannot start the store writer thread: {e}")))?;
        Ok(HotWriter { tx })
    }

    /// Runs `f` in a transaction on the writer thread.
    pub(crate) async fn transaction<R: Send + 'static>(
        &self,
        action: &'static str,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<R, rusqlite::Error> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.run(action, f, None).await
    }

    /// [`HotWriter::transaction`] committed only once `verdict` is `true`:
    /// the writer holds the transaction open until then. `false`, or the
    /// sender dropped, rolls it back ([`StoreError::Abandoned`]).
    pub(crate) async fn transaction_pending<R: Send + 'static>(
        &self,
        action: &'static str,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<R, rusqlite::Error> + Send + 'static,
        verdict: Verdict,
    ) -> Result<R, StoreError> {
        self.run(action, f, Some(verdict)).await
    }

    async fn run<R: Send + 'static>(
        &self,
        action: &'static str,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<R, rusqlite::Error> + Send + 'static,
        verdict: Option<Verdict>,
    ) -> Result<R, StoreError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let task: Task = Box::new(move |conn| {
            let write = |source| StoreError::Write { action, source };
            let r = (|| {
                let tx = super::appdb::take_write_lock(false, || {
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                })
                .map_err(write)?;
                let r = f(&tx).map_err(write)?;
                if let Some(verdict) = verdict
                    && !given(verdict)
                {
                    // Dropping the transaction rolls it back.
                    return Err(StoreError::Abandoned);
                }
                tx.commit().map_err(write)?;
                Ok(r)
            })();
            let _ = done.send(r);
        });
        if self.tx.send(task).is_err() {
            return Err(StoreError::Closed);
        }
        result.await.unwrap_or(Err(StoreError::Closed))
    }
}

/// How long the writer spins for a verdict before it sleeps on it.
const VERDICT_SPIN: Duration = Duration::from_millis(2);

/// Waits for `verdict` on the writer thread (not a runtime thread: this
/// blocks only the writer). A verdict comes within a millisecond or so, and
/// waking this thread from sleep would cost a good part of that, so it
/// spins (yielding) a little first.
fn given(mut verdict: Verdict) -> bool {
    use tokio::sync::oneshot::error::TryRecvError;
    let until = Instant::now() + VERDICT_SPIN;
    while Instant::now() < until {
        match verdict.try_recv() {
            Ok(v) => return v,
            Err(TryRecvError::Closed) => return false,
            Err(TryRecvError::Empty) => std::thread::yield_now(),
        }
    }
    verdict.blocking_recv() == Ok(true)
}

//! A cached pool of worker threads for guest execution and compilation.
//!
//! Guests are CPU work with unbounded duration (until their deadline), so the
//! pool grows when every worker is busy instead of queueing behind a runaway
//! guest; idle workers exit after a minute. Concurrency limits belong to the
//! supervisors, not here.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Task = Box<dyn FnOnce() + Send + 'static>;

const IDLE_EXIT: Duration = Duration::from_secs(60);
/// At most this many workers: enough that a few runaway guests (each stopped
/// at its deadline) cannot hold up well-behaved ones, few enough that a burst
/// of short executions does not spawn a thread each.
const MAX_WORKERS: usize = 64;

pub(crate) struct WorkerPool {
    name: &'static str,
    tx: Mutex<Sender<Task>>,
    rx: Arc<Mutex<Receiver<Task>>>,
    idle: Arc<AtomicUsize>,
    workers: Arc<AtomicUsize>,
    /// Tasks sent but not yet taken by a worker.
    pending: Arc<AtomicUsize>,
}

impl WorkerPool {
    pub(crate) fn new(name: &'static str) -> Self {
        let (tx, rx) = channel();
        WorkerPool {
            name,
            tx: Mutex::new(tx),
            rx: Arc::new(Mutex::new(rx)),
            idle: Arc::new(AtomicUsize::new(0)),
            workers: Arc::new(AtomicUsize::new(0)),
            pending: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Runs `f` on a worker; the future resolves with its result, or `Err` if
    /// the worker panicked.
    pub(crate) fn run<R, F>(&self, f: F) -> tokio::sync::oneshot::Receiver<R>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        let task: Task = Box::new(move || {
            let _ = done.send(f());
        });
        // More tasks waiting than idle workers to take them: one more worker,
        // so no task waits behind a runaway guest. (Comparing with idle == 0
        // alone let two tasks sent at once share one idle worker.)
        let pending = self.pending.fetch_add(1, Ordering::SeqCst) + 1;
        if pending > self.idle.load(Ordering::SeqCst) && self.workers.load(Ordering::SeqCst) < MAX_WORKERS {
            self.spawn_worker();
        }
        if let Ok(tx) = self.tx.lock() {
            // The receiver lives as long as the pool, so sending cannot fail.
            let _ = tx.send(task);
        }
        result
    }

    fn spawn_worker(&self) {
        let rx = self.rx.clone();
        let idle = self.idle.clone();
        let workers = self.workers.clone();
        let pending = self.pending.clone();
        idle.fetch_add(1, Ordering::SeqCst);
        workers.fetch_add(1, Ordering::SeqCst);
        let spawned = std::thread::Builder::new().name(self.name.to_string()).spawn(move || {
            loop {
                let next = match rx.lock() {
                    Ok(rx) => rx.recv_timeout(IDLE_EXIT),
                    Err(_) => Err(RecvTimeoutError::Disconnected),
                };
                match next {
                    Ok(task) => {
                        pending.fetch_sub(1, Ordering::SeqCst);
                        idle.fetch_sub(1, Ordering::SeqCst);
                        // A panicking task drops its result sender, which the
                        // caller sees as an error; the worker lives on.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(task));
                        idle.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => {
                        // Stop counting as idle first, then look once more: a
                        // task sent while this worker still counted as idle
                        // (so no new worker was spawned for it) is taken here.
                        idle.fetch_sub(1, Ordering::SeqCst);
                        let late = rx.lock().ok().and_then(|rx| rx.try_recv().ok());
                        match late {
                            Some(task) => {
                                pending.fetch_sub(1, Ordering::SeqCst);
                                let _ = std::panic::catch_unwind(AssertUnwindSafe(task));
                                idle.fetch_add(1, Ordering::SeqCst);
                            }
                            None => {
                                workers.fetch_sub(1, Ordering::SeqCst);
                                return;
                            }
                        }
                    }
                }
            }
        });
        if spawned.is_err() {
            self.idle.fetch_sub(1, Ordering::SeqCst);
            self.workers.fetch_sub(1, Ordering::SeqCst);
            tracing::error!("cannot spawn a runtime worker thread; tasks will wait for a free worker");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait<R>(mut rx: tokio::sync::oneshot::Receiver<R>, limit: Duration) -> Option<R> {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if let Ok(v) = rx.try_recv() {
                return Some(v);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        None
    }

    /// Two tasks sent at once to a pool with one idle worker, the first of
    /// which blocks: the second still runs at once, on a new worker.
    #[test]
    fn a_task_never_waits_behind_a_busy_worker() {
        let pool = WorkerPool::new("pool-test");
        assert_eq!(wait(pool.run(|| 1), Duration::from_secs(5)), Some(1), "one idle worker now");
        for _ in 0..20 {
            let (release, blocked) = channel::<()>();
            let blocker = pool.run(move || blocked.recv().is_ok());
            let quick = pool.run(|| 42);
            assert_eq!(wait(quick, Duration::from_secs(2)), Some(42), "the second task waited behind the first");
            release.send(()).unwrap();
            assert_eq!(wait(blocker, Duration::from_secs(5)), Some(true));
        }
    }
}

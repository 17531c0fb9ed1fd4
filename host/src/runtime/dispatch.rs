//! Guest calls started at their instant.
//!
//! An execution prepared ahead of its scheduled instant (store built,
//! component instantiated) is handed here with the instant its guest call
//! must start. A few dispatcher threads — one per core — sleep until the
//! earliest instant and then make the due calls themselves, one after
//! another: no thread is woken and no task is handed over between the instant
//! and the call. When a thousand jobs fire in the same second, the last call
//! starts after the thousand before it have *run*, not after they have also
//! been torn down and recorded.
//!
//! That is the second half of the design: each call returns a *tail* — its
//! report to finish, its store to drop (unmapping an instance's memory costs
//! more than a short guest call, and its TLB shootdown interrupts the other
//! core too), the reply to send — and tails wait until no call is due within
//! [`QUIET`], or at most [`TAIL_WAIT`]. So the burst of calls runs first and
//! the bookkeeping after it.
//!
//! A call can take long (an item job runs for minutes). A dispatcher that has
//! been inside one call for [`STUCK`] while other calls are due is retired —
//! it finishes its call and exits — and a new one takes its place, so no call
//! waits behind a long one for more than about [`STUCK`] (checked on every
//! epoch tick).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// What is left of an execution once its guest call returned.
pub(crate) type Tail = Box<dyn FnOnce() + Send + 'static>;
/// A guest call, made at its instant; returns its tail.
pub(crate) type Call = Box<dyn FnOnce() -> Tail + Send + 'static>;

/// Tails wait while a call is due within this.
pub(crate) const QUIET: Duration = Duration::from_millis(2);
/// A tail waits at most this long for a quiet moment.
pub(crate) const TAIL_WAIT: Duration = Duration::from_millis(50);
/// A dispatcher this long inside one call, while calls are due, is replaced.
pub(crate) const STUCK: Duration = Duration::from_millis(5);
/// Dispatchers at most, retired ones still finishing their call included.
const MAX_THREADS: usize = 64;

pub(crate) struct Dispatcher {
    shared: Arc<Shared>,
    /// Dispatchers taking calls (one per core).
    live: usize,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    /// Calls by instant (then by arrival).
    due: BinaryHeap<Reverse<Due>>,
    /// Tails by arrival, with when they arrived.
    tails: VecDeque<(Instant, Tail)>,
    seq: u64,
    /// Dispatcher threads by id.
    threads: HashMap<u64, Thread>,
    next_id: u64,
    stopping: bool,
}

#[derive(Default)]
struct Thread {
    /// In a call (or a tail) since.
    busy_since: Option<Instant>,
    /// Replaced while in a long call: exits once the call returns.
    retired: bool,
}

struct Due {
    at: Instant,
    seq: u64,
    call: Call,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl State {
    fn live(&self) -> usize {
        self.threads.values().filter(|t| !t.retired).count()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Dispatcher {
    /// A dispatcher with `live` threads (started with the first call).
    pub(crate) fn new(live: usize) -> Dispatcher {
        let shared = Arc::new(Shared { state: Mutex::new(State::default()), wake: Condvar::new() });
        Dispatcher { shared, live: live.max(1) }
    }

    /// Makes `call` at `at` (at once if `at` has passed); its tail runs later.
    pub(crate) fn schedule(&self, at: Instant, call: Call) {
        let mut st = self.shared.lock();
        st.seq += 1;
        let seq = st.seq;
        st.due.push(Reverse(Due { at, seq, call }));
        while st.live() < self.live && st.threads.len() < MAX_THREADS {
            if !spawn(&self.shared, &mut st) {
                break;
            }
        }
        // Sleepers wait for the earliest instant: only a new earliest one
        // changes that.
        let earliest = st.due.peek().is_some_and(|d| d.0.seq == seq);
        drop(st);
        if earliest {
            self.shared.wake.notify_all();
        }
    }

    /// What the epoch ticker holds to [`Watch::check`] the dispatchers.
    pub(crate) fn watch(&self) -> Watch {
        Watch(self.shared.clone())
    }

    /// Stops the dispatchers; calls not yet made are dropped (their callers
    /// see the runtime go away).
    fn stop(&self) {
        let mut st = self.shared.lock();
        st.stopping = true;
        st.due.clear();
        drop(st);
        self.shared.wake.notify_all();
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A handle that checks on the dispatchers without keeping them running.
pub(crate) struct Watch(Arc<Shared>);

impl Watch {
    /// Replaces dispatchers stuck in a long call while calls are due (called
    /// on every epoch tick).
    pub(crate) fn check(&self) {
        let now = Instant::now();
        let shared = &self.0;
        let mut st = shared.lock();
        if st.due.peek().is_none_or(|d| d.0.at > now) {
            return;
        }
        // A live dispatcher that is free will take the due call.
        let live: Vec<(u64, Option<Instant>)> =
            st.threads.iter().filter(|(_, t)| !t.retired).map(|(id, t)| (*id, t.busy_since)).collect();
        if live.iter().any(|(_, busy)| busy.is_none()) {
            return;
        }
        let mut stuck: Vec<(Instant, u64)> = live
            .iter()
            .filter_map(|(id, busy)| busy.filter(|since| now.duration_since(*since) >= STUCK).map(|s| (s, *id)))
            .collect();
        stuck.sort();
        for (_, id) in stuck {
            if st.threads.len() >= MAX_THREADS {
                break;
            }
            if !spawn(shared, &mut st) {
                break;
            }
            if let Some(t) = st.threads.get_mut(&id) {
                t.retired = true;
            }
            tracing::debug!("a dispatcher is in a long guest call; another takes the due calls");
        }
    }
}

/// Starts one more dispatcher thread; false if the system refused.
fn spawn(shared: &Arc<Shared>, st: &mut State) -> bool {
    let id = st.next_id;
    st.next_id += 1;
    let for_thread = shared.clone();
    let spawned = std::thread::Builder::new().name("sundial-dispatch".into()).spawn(move || dispatch(&for_thread, id));
    match spawned {
        Ok(_) => {
            st.threads.insert(id, Thread::default());
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start a dispatcher thread");
            false
        }
    }
}

/// One dispatcher: due calls first, tails when quiet.
fn dispatch(shared: &Shared, id: u64) {
    let mut st = shared.lock();
    loop {
        let retired = st.threads.get(&id).is_none_or(|t| t.retired);
        if st.stopping || retired {
            // Tails left behind are run by the remaining dispatchers, or on
            // stop, here.
            if st.stopping && !st.tails.is_empty() {
                let tails = std::mem::take(&mut st.tails);
                drop(st);
                tails.into_iter().for_each(|(_, tail)| run_tail(tail));
                st = shared.lock();
            }
            st.threads.remove(&id);
            return;
        }
        let now = Instant::now();
        if st.due.peek().is_some_and(|d| d.0.at <= now) {
            let Some(Reverse(due)) = st.due.pop() else { continue };
            // A panicking call drops its reply, which its caller sees as
            // an error; it has no tail.
            st = busy(shared, st, id, now, move || std::panic::catch_unwind(AssertUnwindSafe(due.call)).ok());
            continue;
        }
        let next = st.due.peek().map(|d| d.0.at);
        let quiet = next.is_none_or(|at| at.saturating_duration_since(now) > QUIET);
        let oldest = st.tails.front().map(|(since, _)| now.duration_since(*since));
        if (quiet || oldest.is_some_and(|age| age >= TAIL_WAIT))
            && let Some((_, tail)) = st.tails.pop_front()
        {
            st = busy(shared, st, id, now, move || {
                run_tail(tail);
                None
            });
            continue;
        }
        // Sleep until the next call is due, or a waiting tail's time is up.
        let mut wait = next.map(|at| at.saturating_duration_since(now));
        if let Some(age) = oldest {
            let left = TAIL_WAIT.saturating_sub(age);
            wait = Some(wait.map_or(left, |w| w.min(left)));
        }
        st = match wait {
            Some(w) => shared.wake.wait_timeout(st, w).unwrap_or_else(PoisonError::into_inner).0,
            None => shared.wake.wait(st).unwrap_or_else(PoisonError::into_inner),
        };
    }
}

/// Runs `work` unlocked with this dispatcher marked busy; queues the tail it
/// returns.
fn busy<'a>(
    shared: &'a Shared,
    mut st: MutexGuard<'a, State>,
    id: u64,
    now: Instant,
    work: impl FnOnce() -> Option<Tail>,
) -> MutexGuard<'a, State> {
    if let Some(t) = st.threads.get_mut(&id) {
        t.busy_since = Some(now);
    }
    drop(st);
    let tail = work();
    let mut st = shared.lock();
    if let Some(t) = st.threads.get_mut(&id) {
        t.busy_since = None;
    }
    if let Some(tail) = tail {
        st.tails.push_back((Instant::now(), tail));
    }
    st
}

fn run_tail(tail: Tail) {
    // A panicking tail drops its reply, which its caller sees as an error.
    let _ = std::panic::catch_unwind(AssertUnwindSafe(tail));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{Receiver, channel};

    fn recv<T>(rx: &Receiver<T>) -> T {
        rx.recv_timeout(Duration::from_secs(10)).unwrap()
    }

    /// Calls start at their instant, in order, never early; each tail runs
    /// after its call.
    #[test]
    fn calls_start_at_their_instant_in_order() {
        let d = Dispatcher::new(2);
        let (tx, rx) = channel();
        let start = Instant::now();
        for (i, ms) in [(2, 60u64), (0, 20), (1, 40)] {
            let tx = tx.clone();
            let at = start + Duration::from_millis(ms);
            d.schedule(
                at,
                Box::new(move || {
                    let called = Instant::now();
                    let tx2 = tx.clone();
                    tx.send(("call", i, called >= at)).unwrap();
                    Box::new(move || tx2.send(("tail", i, true)).unwrap())
                }),
            );
        }
        let mut calls = Vec::new();
        let mut tails = Vec::new();
        for _ in 0..6 {
            let (what, i, on_time) = recv(&rx);
            assert!(on_time, "call {i} started before its instant");
            if what == "call" {
                calls.push(i);
            } else {
                assert!(calls.contains(&i), "tail {i} before its call");
                tails.push(i);
            }
        }
        assert_eq!(calls, vec![0, 1, 2]);
        tails.sort();
        assert_eq!(tails, vec![0, 1, 2]);
    }

    /// Tails wait for the burst of calls due together to be made.
    #[test]
    fn tails_wait_until_the_due_calls_are_made() {
        let d = Dispatcher::new(1);
        let (tx, rx) = channel();
        let at = Instant::now() + Duration::from_millis(30);
        for i in 0..50 {
            let tx = tx.clone();
            d.schedule(
                at,
                Box::new(move || {
                    tx.send(format!("call {i}")).unwrap();
                    Box::new(move || tx.send(format!("tail {i}")).unwrap())
                }),
            );
        }
        let order: Vec<String> = (0..100).map(|_| recv(&rx)).collect();
        let first_tail = order.iter().position(|e| e.starts_with("tail")).unwrap();
        assert_eq!(first_tail, 50, "a tail ran before every due call was made: {order:?}");
    }

    /// A call that blocks does not hold up the calls due after it: another
    /// dispatcher takes them once the first is stuck.
    #[test]
    fn a_long_call_does_not_hold_up_the_next() {
        let d = Dispatcher::new(1);
        let (release, blocked) = channel::<()>();
        let (tx, rx) = channel();
        let at = Instant::now() + Duration::from_millis(10);
        d.schedule(
            at,
            Box::new(move || {
                let _ = blocked.recv();
                Box::new(|| {})
            }),
        );
        let tx2 = tx.clone();
        d.schedule(
            at,
            Box::new(move || {
                tx2.send(Instant::now()).unwrap();
                Box::new(|| {})
            }),
        );
        // What the epoch ticker does.
        let watch = d.watch();
        let started = Instant::now();
        let second = loop {
            watch.check();
            if let Ok(t) = rx.try_recv() {
                break t;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "the second call waited behind the first");
            std::thread::sleep(Duration::from_millis(1));
        };
        assert!(second.duration_since(at) < Duration::from_secs(1));
        release.send(()).unwrap();
        drop(tx);
    }

    /// A panicking call loses only itself.
    #[test]
    fn a_panicking_call_loses_only_itself() {
        let d = Dispatcher::new(1);
        let (tx, rx) = channel();
        let at = Instant::now();
        d.schedule(at, Box::new(|| panic!("a call panicked on purpose")));
        d.schedule(
            at,
            Box::new(move || {
                tx.send(1).unwrap();
                Box::new(|| {})
            }),
        );
        assert_eq!(recv(&rx), 1);
    }
}

//! Concurrency limits: at most N executions running at once, host-wide
//! (`max_running` in `sundial.toml`) and per job (`[jobs.x] max_running`).
//!
//! An execution takes a slot before its guest starts and gives it back when
//! the guest returns. When none is free it waits — its row says `queued` —
//! and freed slots go to the waiters in priority order: the job's `priority`
//! (higher first), then the earlier scheduled instant, then the order of
//! arrival. Nothing is dropped while it waits; cancelling it (an operator, or
//! the host stopping) ends the wait.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use crate::runtime::CancelToken;

/// A pool of slots (cheap to clone).
#[derive(Debug, Clone)]
pub struct Slots {
    inner: Arc<Mutex<Inner>>,
    limit: usize,
}

#[derive(Debug, Default)]
struct Inner {
    running: usize,
    waiting: BinaryHeap<Waiter>,
    arrivals: u64,
}

#[derive(Debug)]
struct Waiter {
    priority: i32,
    scheduled_for: DateTime<Utc>,
    arrival: u64,
    grant: oneshot::Sender<()>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
/// The greatest waiter is served first.
impl Ord for Waiter {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.scheduled_for.cmp(&self.scheduled_for))
            .then_with(|| other.arrival.cmp(&self.arrival))
    }
}

/// A held slot, given back (to the next waiter, if any) when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Slots,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.release();
    }
}

/// A wait for a slot that was granted but never taken up (the waiting
/// future was dropped) gives the slot back.
struct Pending {
    grant: Option<oneshot::Receiver<()>>,
    slots: Slots,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut grant) = self.grant.take() {
            grant.close();
            if grant.try_recv().is_ok() {
                self.slots.release();
            }
        }
    }
}

/// How often a waiting execution checks whether it was cancelled.
const CANCEL_POLL: std::time::Duration = std::time::Duration::from_millis(20);

impl Slots {
    /// `limit` slots (at least one).
    pub fn new(limit: usize) -> Slots {
        Slots { inner: Arc::new(Mutex::new(Inner::default())), limit: limit.max(1) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The number of slots.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Slots in use.
    pub fn running(&self) -> usize {
        self.lock().running
    }

    /// Executions waiting for a slot.
    pub fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }

    /// A slot now, if one is free and nobody is waiting for it.
    pub fn try_acquire(&self) -> Option<Slot> {
        let mut inner = self.lock();
        if inner.running < self.limit && inner.waiting.is_empty() {
            inner.running += 1;
            return Some(Slot { slots: self.clone() });
        }
        None
    }

    /// Waits for a slot in priority order; `None` if `cancel` fires first.
    pub async fn acquire(&self, priority: i32, scheduled_for: DateTime<Utc>, cancel: &CancelToken) -> Option<Slot> {
        let rx = {
            let mut inner = self.lock();
            if inner.running < self.limit && inner.waiting.is_empty() {
                inner.running += 1;
                return Some(Slot { slots: self.clone() });
            }
            let (grant, rx) = oneshot::channel();
            inner.arrivals += 1;
            let arrival = inner.arrivals;
            inner.waiting.push(Waiter { priority, scheduled_for, arrival, grant });
            rx
        };
        let mut pending = Pending { grant: Some(rx), slots: self.clone() };
        loop {
            if cancel.is_cancelled() {
                return None; // `pending` gives back a slot granted meanwhile
            }
            let rx = pending.grant.as_mut()?;
            match tokio::time::timeout(CANCEL_POLL, rx).await {
                Ok(Ok(())) => {
                    pending.grant = None;
                    return Some(Slot { slots: self.clone() });
                }
                Ok(Err(_)) => return None, // the pool is gone
                Err(_) => {}
            }
        }
    }

    /// Hands a freed slot to the best live waiter, or frees it.
    fn release(&self) {
        let mut inner = self.lock();
        while let Some(w) = inner.waiting.pop() {
            if w.grant.send(()).is_ok() {
                return; // the slot passes on: `running` stays
            }
        }
        inner.running = inner.running.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u32) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + i64::from(s), 0).unwrap()
    }

    #[tokio::test]
    async fn freed_slots_go_by_priority_then_scheduled_instant_then_arrival() {
        let slots = Slots::new(1);
        let first = slots.try_acquire().unwrap();
        assert!(slots.try_acquire().is_none());
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // (name, priority, scheduled second), queued in this order.
        for (name, priority, s) in [("low", 0, 1), ("high-late", 5, 9), ("high-early", 5, 2), ("low-2", 0, 1)] {
            let (pool, order) = (slots.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let slot = pool.acquire(priority, at(s), &CancelToken::new()).await.unwrap();
                order.lock().unwrap().push(name);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                drop(slot);
            }));
            while slots.waiting() < tasks.len() {
                tokio::task::yield_now().await;
            }
        }
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["high-early", "high-late", "low", "low-2"]);
        assert_eq!((slots.running(), slots.waiting()), (0, 0));
    }

    #[tokio::test]
    async fn a_cancelled_wait_leaves_and_never_holds_a_slot() {
        let slots = Slots::new(1);
        let held = slots.try_acquire().unwrap();
        let cancel = CancelToken::new();
        let waiting = {
            let (pool, cancel) = (slots.clone(), cancel.clone());
            tokio::spawn(async move { pool.acquire(0, at(0), &cancel).await.is_some() })
        };
        while slots.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        cancel.cancel();
        assert!(!waiting.await.unwrap());
        drop(held);
        assert_eq!(slots.running(), 0, "the slot is free again, not handed to the cancelled waiter");
        assert!(slots.try_acquire().is_some());
    }
}

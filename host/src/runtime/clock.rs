//! `wasi:clocks/monotonic-clock` with sleeps bounded by the execution's
//! deadline.
//!
//! Epoch interruption stops guest code, not a guest blocked inside a host
//! call: a guest that sleeps for an hour (`subscribe-duration` then
//! `poll`) would hold its worker thread past any deadline. Here every
//! subscription ends no later than the deadline (plus a tick), or as soon as
//! the execution is cancelled (checked every [`STOP_CHECK`]), so the poll
//! returns, the guest resumes, and the next epoch check ends it `timed_out`
//! or `cancelled`. A sleep that is neither cut short by the deadline nor
//! cancelled lasts exactly as long as asked.

use std::time::{Duration, Instant as StdInstant};

use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::clocks::WasiClocksView as _;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::{self, Duration as WasiDuration, Instant};
use wasmtime_wasi::p2::{DynPollable, Pollable};

use super::host::{CancelToken, HostState};
use super::http::STOP_CHECK;

/// How long past the deadline a bounded sleep may end (the epoch check
/// that follows ends the run).
const SLACK: Duration = Duration::from_millis(5);

struct Bounded<'a> {
    state: &'a mut HostState,
}

impl Bounded<'_> {
    /// A pollable ready after `requested`, or at the deadline, or on cancellation.
    fn sleep(&mut self, requested: Duration) -> wasmtime::Result<Resource<DynPollable>> {
        if requested.is_zero() {
            // WASI's own zero-length subscription yields to the IO runtime once.
            return monotonic_clock::Host::subscribe_duration(&mut self.state.clocks(), 0);
        }
        let left = self.state.deadline.saturating_duration_since(StdInstant::now()) + SLACK;
        let until = tokio::time::Instant::now() + requested.min(left);
        let sleep = BoundedSleep { until, cancel: self.state.cancel.clone() };
        let resource = self.state.table.push(sleep)?;
        wasmtime_wasi::p2::subscribe(&mut self.state.table, resource)
    }
}

/// Ready at `until`, or once the execution is cancelled.
struct BoundedSleep {
    until: tokio::time::Instant,
    cancel: CancelToken,
}

#[wasmtime_wasi::async_trait]
impl Pollable for BoundedSleep {
    async fn ready(&mut self) {
        while !self.cancel.is_cancelled() {
            let now = tokio::time::Instant::now();
            if now >= self.until {
                return;
            }
            tokio::time::sleep_until(self.until.min(now + STOP_CHECK)).await;
        }
    }
}

impl monotonic_clock::Host for Bounded<'_> {
    fn now(&mut self) -> wasmtime::Result<Instant> {
        self.state.clocks().now()
    }

    fn resolution(&mut self) -> wasmtime::Result<Instant> {
        self.state.clocks().resolution()
    }

    fn subscribe_instant(&mut self, when: Instant) -> wasmtime::Result<Resource<DynPollable>> {
        let now = self.state.clocks().now()?;
        self.sleep(Duration::from_nanos(when.saturating_sub(now)))
    }

    fn subscribe_duration(&mut self, duration: WasiDuration) -> wasmtime::Result<Resource<DynPollable>> {
        self.sleep(Duration::from_nanos(duration))
    }
}

struct BoundedClock;

impl HasData for BoundedClock {
    type Data<'a> = Bounded<'a>;
}

/// Replaces WASI's monotonic clock in `linker` with the bounded one.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let r = monotonic_clock::add_to_linker::<HostState, BoundedClock>(linker, |state| Bounded { state });
    linker.allow_shadowing(false);
    r
}

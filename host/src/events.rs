//! Execution and job events, broadcast to whoever subscribes (embedders, the
//! bench, the metrics and the live UI). Publishing never blocks a run: a subscriber that falls
//! behind by more than the channel's capacity misses events and is told so
//! (`RecvError::Lagged`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::model::{ExecutionId, ExecutionStatus, Trigger};

/// Something that happened to an execution.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The row exists and the guest is about to be called.
    ExecutionStarted {
        /// The execution.
        id: ExecutionId,
        /// Its job.
        job: String,
        /// Why.
        trigger: Trigger,
        /// The instant it stands for.
        scheduled_for: DateTime<Utc>,
        /// 1 for the first attempt.
        attempt: i64,
    },
    /// The execution ended and its row is final.
    ExecutionFinished {
        /// The execution.
        id: ExecutionId,
        /// Its job.
        job: String,
        /// Why it ran.
        trigger: Trigger,
        /// The instant it stands for.
        scheduled_for: DateTime<Utc>,
        /// When it was due to start: the instant, plus the job's jitter
        /// offset for scheduled runs.
        due_at: DateTime<Utc>,
        /// How it ended.
        status: ExecutionStatus,
        /// When the guest call began.
        guest_started_at: Option<DateTime<Utc>>,
        /// When it ended.
        finished_at: DateTime<Utc>,
        /// Item counts (item jobs).
        items: ItemCounts,
    },
    /// A running execution's progress changed (about once a second at most).
    ExecutionProgress {
        /// The execution.
        id: ExecutionId,
        /// Its job.
        job: String,
        /// Units (items) done.
        done: u64,
        /// Units in total, when known.
        total: Option<u64>,
        /// Items that succeeded.
        ok: u64,
        /// Items skipped.
        skipped: u64,
        /// Items failed.
        failed: u64,
    },
    /// A running execution passed its job's expected duration.
    ExecutionOverrun {
        /// The execution.
        id: ExecutionId,
        /// Its job.
        job: String,
        /// The expected duration, seconds.
        expected_secs: u64,
    },
    /// A job's definition, switch, schedule, version or load error changed.
    JobChanged {
        /// The job.
        job: String,
    },
    /// A loaded job's file changed and its new version went live (a job
    /// seen for the first time has only its `JobChanged`).
    JobReloaded {
        /// The job.
        job: String,
        /// The new version's number.
        version: i64,
        /// The new version's digest.
        digest: String,
        /// From the file event that completed the new file (its rename into
        /// place, or its last write before it went quiet, so the quiet
        /// period is included) to the new version live, microseconds.
        took_us: u64,
    },
    /// The global switch changed.
    SchedulerChanged {
        /// On or off.
        enabled: bool,
    },
}

impl Event {
    /// The event's name (its `type`), as in the server-sent events stream.
    pub fn name(&self) -> &'static str {
        match self {
            Event::ExecutionStarted { .. } => "execution_started",
            Event::ExecutionFinished { .. } => "execution_finished",
            Event::ExecutionProgress { .. } => "execution_progress",
            Event::ExecutionOverrun { .. } => "execution_overrun",
            Event::JobChanged { .. } => "job_changed",
            Event::JobReloaded { .. } => "job_reloaded",
            Event::SchedulerChanged { .. } => "scheduler_changed",
        }
    }
}

/// Items seen, succeeded, skipped and failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ItemCounts {
    /// Items seen.
    pub total: u64,
    /// Items that succeeded.
    pub ok: u64,
    /// Items skipped.
    pub skipped: u64,
    /// Items failed.
    pub failed: u64,
}

/// The sending side, shared by the supervisors.
pub type Events = broadcast::Sender<Event>;

/// A channel keeping up to `capacity` events per slow subscriber.
pub fn channel(capacity: usize) -> Events {
    broadcast::channel(capacity.max(1)).0
}

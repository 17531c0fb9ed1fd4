//! Execution events, broadcast to whoever subscribes (embedders, the bench,
//! later the live UI). Publishing never blocks a run: a subscriber that falls
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
        /// How it ended.
        status: ExecutionStatus,
        /// When the guest call began.
        guest_started_at: Option<DateTime<Utc>>,
    },
}

/// The sending side, shared by the supervisors.
pub type Events = broadcast::Sender<Event>;

/// A channel keeping up to `capacity` events per slow subscriber.
pub fn channel(capacity: usize) -> Events {
    broadcast::channel(capacity.max(1)).0
}

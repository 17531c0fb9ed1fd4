//! `Scheduler`: the one actor that knows when each enabled job fires next. It
//! sleeps until the earliest fire, sends `Fire` to that job's supervisor, and
//! persists the last handled instant so the next fire is always computed from
//! the last scheduled instant — never from "now" — across restarts and clock
//! steps. Missed instants (host down, clock jumped forward) go through the
//! job's misfire policy: never a burst of hundreds of runs.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};

use super::repository::{AdvanceSchedule, Repository, SetGlobalEnabled, SetJobEnabled, SetNextRun};
use super::supervisor::{Fire, JobSupervisor};
use crate::clock::Clock;
use crate::model::{JobId, JobRecord, MisfirePolicy, Trigger};
use crate::schedule::{Schedule, ScheduleError};
use crate::store::ScheduleAdvance;

/// A fire handled within this long after its instant is on time; older due
/// instants are misfires.
pub const MISFIRE_GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(60);
/// At most this many catch-up runs per job under the `all` policy.
pub const MAX_CATCH_UP: usize = 10;
/// Fires are sent this far ahead of their instant: the supervisor writes the
/// execution row and the runtime prepares the instance in the meantime, so at
/// the instant only the guest call is left. The overlap gate and the misfire
/// policy are still decided against the instant itself.
pub const FIRE_LEAD: Duration = Duration::from_millis(500);
/// Longest sleep between checks, so a stepped wall clock is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// Due instants enumerated at most per check (an every-second job down for a day).
const MAX_ENUMERATED: usize = 200_000;

/// What to do with the instants due now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuePlan {
    /// Instants to run, with their trigger, oldest first.
    pub fires: Vec<(DateTime<Utc>, Trigger)>,
    /// Due instants not run (misfire policy).
    pub missed: u64,
    /// The latest due instant: the new "last scheduled".
    pub last: DateTime<Utc>,
    /// The next fire after it.
    pub next: Option<DateTime<Utc>>,
}

/// Plans the instants from `first_due` up to `now` under `policy`. A pure
/// function of its inputs.
pub fn plan_due(schedule: &Schedule, first_due: DateTime<Utc>, now: DateTime<Utc>, policy: MisfirePolicy) -> DuePlan {
    let mut due = vec![first_due];
    let mut next = schedule.next_after(first_due);
    let mut enumerated_all = true;
    while let Some(n) = next {
        if n > now {
            break;
        }
        if due.len() >= MAX_ENUMERATED {
            enumerated_all = false;
            break;
        }
        due.push(n);
        next = schedule.next_after(n);
    }
    let last = due.last().copied().unwrap_or(first_due);
    if !enumerated_all {
        // Skip the rest of a very long outage in one jump: the next fire after now.
        next = schedule.next_after(now);
    }
    let (late, on_time): (Vec<_>, Vec<_>) = due.iter().partition(|t| now - **t > MISFIRE_GRACE);
    let mut fires: Vec<(DateTime<Utc>, Trigger)> = Vec::new();
    let mut missed = late.len() as u64 + if enumerated_all { 0 } else { 1 };
    match policy {
        MisfirePolicy::Skip => {}
        MisfirePolicy::Once => {
            if on_time.is_empty()
                && let Some(t) = late.last()
            {
                fires.push((*t, Trigger::CatchUp));
                missed -= 1;
            }
        }
        MisfirePolicy::All => {
            let take = late.len().min(MAX_CATCH_UP);
            for t in &late[late.len() - take..] {
                fires.push((*t, Trigger::CatchUp));
            }
            missed -= take as u64;
        }
    }
    fires.extend(on_time.into_iter().map(|t| (t, Trigger::Schedule)));
    DuePlan { fires, missed, last, next }
}

struct Entry {
    id: JobId,
    schedule: Schedule,
    misfire: MisfirePolicy,
    enabled: bool,
    next: Option<DateTime<Utc>>,
    missed: u64,
    supervisor: Addr<JobSupervisor>,
}

/// The scheduler.
pub struct Scheduler {
    repo: Addr<Repository>,
    clock: Arc<dyn Clock>,
    enabled: bool,
    jobs: HashMap<String, Entry>,
    queue: BTreeSet<(DateTime<Utc>, String)>,
    timer: Option<SpawnHandle>,
}

impl Scheduler {
    /// A scheduler with the global switch as stored.
    pub fn new(repo: Addr<Repository>, clock: Arc<dyn Clock>, enabled: bool) -> Self {
        Scheduler { repo, clock, enabled, jobs: HashMap::new(), queue: BTreeSet::new(), timer: None }
    }

    fn set_next(&mut self, name: &str, next: Option<DateTime<Utc>>) {
        if let Some(e) = self.jobs.get_mut(name) {
            if let Some(old) = e.next {
                self.queue.remove(&(old, name.to_string()));
            }
            e.next = next;
            if let Some(n) = next {
                self.queue.insert((n, name.to_string()));
            }
        }
    }

    /// Fires everything due and re-arms the timer.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        let now = self.clock.now();
        let horizon = now + chrono::TimeDelta::from_std(FIRE_LEAD).unwrap_or_default();
        while let Some((due, name)) = self.queue.first().cloned() {
            if due > horizon {
                break;
            }
            self.queue.remove(&(due, name.clone()));
            let Some(entry) = self.jobs.get_mut(&name) else { continue };
            entry.next = None;
            let plan = plan_due(&entry.schedule, due, now, entry.misfire);
            if self.enabled && entry.enabled {
                for (at, trigger) in &plan.fires {
                    entry.supervisor.do_send(Fire { scheduled_for: *at, trigger: *trigger });
                }
                if plan.missed > 0 {
                    entry.missed += plan.missed;
                    tracing::warn!(job = %name, missed = plan.missed, policy = %entry.misfire,
                        "missed scheduled instants (host down or clock stepped)");
                }
            }
            let missed = if self.enabled && entry.enabled { plan.missed } else { 0 };
            self.repo.do_send(AdvanceSchedule(ScheduleAdvance {
                job: entry.id,
                last_scheduled_for: plan.last,
                next_run_at: plan.next,
                missed,
            }));
            self.set_next(&name, plan.next);
        }
        self.arm(ctx);
    }

    fn arm(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.timer.take() {
            ctx.cancel_future(h);
        }
        let now = self.clock.now();
        let sleep = match self.queue.first() {
            Some((t, _)) => (*t - now).to_std().unwrap_or(Duration::ZERO).saturating_sub(FIRE_LEAD).min(MAX_SLEEP),
            None => MAX_SLEEP,
        };
        self.timer = Some(ctx.run_later(sleep, |act, ctx| act.tick(ctx)));
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.arm(ctx);
    }
}

/// Sent by the loader: schedule (or reschedule) a job. Replies with its next fire.
#[derive(Message)]
#[rtype(result = "Result<Option<DateTime<Utc>>, ScheduleError>")]
pub struct RegisterJob {
    /// The stored job (schedule, zone, switch, last scheduled instant).
    pub job: JobRecord,
    /// Its misfire policy.
    pub misfire: MisfirePolicy,
    /// Its supervisor.
    pub supervisor: Addr<JobSupervisor>,
}

impl Handler<RegisterJob> for Scheduler {
    type Result = Result<Option<DateTime<Utc>>, ScheduleError>;

    fn handle(&mut self, msg: RegisterJob, ctx: &mut Context<Self>) -> Self::Result {
        let schedule = Schedule::parse(&msg.job.schedule, &msg.job.timezone)?;
        let now = self.clock.now();
        // Continue the series from the last handled instant; a new job (or a
        // changed schedule) starts from now.
        let next = match msg.job.last_scheduled_for {
            Some(last) => schedule.next_after(last),
            None => {
                let n = schedule.next_after(now);
                self.repo.do_send(SetNextRun { job: msg.job.id, next_run_at: n });
                n
            }
        };
        let name = msg.job.name.clone();
        if let Some(old) = self.jobs.remove(&name)
            && let Some(t) = old.next
        {
            self.queue.remove(&(t, name.clone()));
        }
        self.jobs.insert(
            name.clone(),
            Entry {
                id: msg.job.id,
                schedule,
                misfire: msg.misfire,
                enabled: msg.job.enabled,
                next: None,
                missed: 0,
                supervisor: msg.supervisor,
            },
        );
        self.set_next(&name, next);
        tracing::info!(job = %name, schedule = %msg.job.schedule, timezone = %msg.job.timezone,
            next = ?next.map(|n| n.to_rfc3339()), enabled = msg.job.enabled, "job scheduled");
        self.tick(ctx);
        Ok(next)
    }
}

/// Sent by tests and interfaces: check for due fires now (the clock may have moved).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Tick;

impl Handler<Tick> for Scheduler {
    type Result = ();

    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        self.tick(ctx);
    }
}

/// Sent by interfaces: the global switch. Takes effect at once; running
/// executions finish.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SwitchScheduler {
    /// On or off.
    pub enabled: bool,
}

impl Handler<SwitchScheduler> for Scheduler {
    type Result = ResponseFuture<()>;

    /// Replies once the switch is stored, so a read right after sees it.
    fn handle(&mut self, msg: SwitchScheduler, ctx: &mut Context<Self>) -> Self::Result {
        self.enabled = msg.enabled;
        tracing::info!(enabled = msg.enabled, "scheduler switched");
        self.tick(ctx);
        let stored = self.repo.send(SetGlobalEnabled { enabled: msg.enabled });
        Box::pin(async move { log_unstored(stored.await, "the scheduler switch") })
    }
}

/// Logs a switch the repository could not store (it is in effect until the
/// host stops).
fn log_unstored(result: Result<Result<(), crate::store::StoreError>, MailboxError>, what: &str) {
    let error = match result {
        Ok(Ok(())) => return,
        Ok(Err(e)) => format!("{:#}", anyhow::Error::new(e)),
        Err(e) => e.to_string(),
    };
    tracing::error!(%error, "cannot store {what}; it holds until the host stops");
}

/// Sent by interfaces: a job's switch. Replies false for an unknown job.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct SwitchJob {
    /// The job.
    pub name: String,
    /// On or off.
    pub enabled: bool,
}

impl Handler<SwitchJob> for Scheduler {
    type Result = ResponseFuture<bool>;

    /// Replies once the switch is stored, so a read right after sees it.
    fn handle(&mut self, msg: SwitchJob, ctx: &mut Context<Self>) -> Self::Result {
        let Some(entry) = self.jobs.get_mut(&msg.name) else { return Box::pin(async { false }) };
        entry.enabled = msg.enabled;
        tracing::info!(job = %msg.name, enabled = msg.enabled, "job switched");
        self.tick(ctx);
        let stored = self.repo.send(SetJobEnabled { name: msg.name, enabled: msg.enabled });
        Box::pin(async move {
            log_unstored(stored.await, "a job's switch");
            true
        })
    }
}

/// Sent by interfaces: each job's next fire and missed count.
#[derive(Debug, Message)]
#[rtype(result = "Vec<(String, Option<DateTime<Utc>>, u64)>")]
pub struct GetNextFires;

impl Handler<GetNextFires> for Scheduler {
    type Result = Vec<(String, Option<DateTime<Utc>>, u64)>;

    fn handle(&mut self, _: GetNextFires, _: &mut Context<Self>) -> Self::Result {
        let mut v: Vec<_> = self.jobs.iter().map(|(n, e)| (n.clone(), e.next, e.missed)).collect();
        v.sort();
        v
    }
}

/// Sent when the host stops: stop firing. Running executions are not touched.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for Scheduler {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        if let Some(h) = self.timer.take() {
            ctx.cancel_future(h);
        }
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn an_on_time_fire_is_a_plain_schedule_fire() {
        let s = Schedule::parse("*/5 * * * *", "UTC").unwrap();
        let p = plan_due(&s, t("2026-11-22T10:00:00Z"), t("2026-11-22T10:00:00.002Z"), MisfirePolicy::Once);
        assert_eq!(p.fires, vec![(t("2026-11-22T10:00:00Z"), Trigger::Schedule)]);
        assert_eq!(p.missed, 0);
        assert_eq!(p.next, Some(t("2026-11-22T10:05:00Z")));
    }

    #[test]
    fn a_long_outage_runs_once_under_the_default_policy() {
        let s = Schedule::parse("* * * * *", "UTC").unwrap();
        // Down from 10:00 to 13:00:30: 181 instants due, 180 of them late.
        let p = plan_due(&s, t("2026-11-22T10:00:00Z"), t("2026-11-22T13:00:30Z"), MisfirePolicy::Once);
        assert_eq!(p.fires, vec![(t("2026-11-22T13:00:00Z"), Trigger::Schedule)]);
        assert_eq!(p.missed, 180);
        assert_eq!(p.last, t("2026-11-22T13:00:00Z"));
        assert_eq!(p.next, Some(t("2026-11-22T13:01:00Z")));

        // Nothing on time: one catch-up run for the latest missed instant.
        let s = Schedule::parse("0 * * * *", "UTC").unwrap();
        let p = plan_due(&s, t("2026-11-22T10:00:00Z"), t("2026-11-22T13:30:00Z"), MisfirePolicy::Once);
        assert_eq!(p.fires, vec![(t("2026-11-22T13:00:00Z"), Trigger::CatchUp)]);
        assert_eq!(p.missed, 3);
    }

    #[test]
    fn skip_and_all_policies_are_bounded() {
        let s = Schedule::parse("0 * * * *", "UTC").unwrap();
        let p = plan_due(&s, t("2026-11-20T00:00:00Z"), t("2026-11-22T00:30:00Z"), MisfirePolicy::Skip);
        assert!(p.fires.is_empty());
        assert_eq!(p.missed, 49);
        let p = plan_due(&s, t("2026-11-20T00:00:00Z"), t("2026-11-22T00:30:00Z"), MisfirePolicy::All);
        assert_eq!(p.fires.len(), MAX_CATCH_UP);
        assert!(p.fires.iter().all(|(_, tr)| *tr == Trigger::CatchUp));
        assert_eq!(p.fires.last().unwrap().0, t("2026-11-22T00:00:00Z"));
        assert_eq!(p.missed, 49 - MAX_CATCH_UP as u64);
    }
}

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
use crate::config::ItemZones;
use crate::model::{DbAccess, JobId, JobRecord, MisfirePolicy, Trigger};
use crate::schedule::{ItemSchedule, LocalSlot, Schedule, ScheduleError};
use crate::store::ScheduleAdvance;
use crate::store::appdb::{AppDb, SqlValue};

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
/// How often the slots of item-local jobs with `item_zones_query` are read again.
pub const ZONES_REFRESH: Duration = Duration::from_secs(600);
/// At most this many slots per item-local job; more are dropped with a warning.
pub const MAX_SLOTS: usize = 10_000;
/// The run argument naming the zones of an item-local execution's group.
pub const ZONES_ARG: &str = "sundial.zones";
/// The run argument naming the slots (`zone@HH:MM`) of a group whose items
/// chose their own local time.
pub const SLOTS_ARG: &str = "sundial.slots";

/// Anything that yields a series of fire instants.
pub trait FireTimes {
    /// The first fire instant strictly after `after`.
    fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>>;
}

impl FireTimes for Schedule {
    fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        Schedule::next_after(self, after)
    }
}

impl FireTimes for ItemSchedule {
    fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        ItemSchedule::next_after(self, after)
    }
}

/// When a job fires: its schedule in its zone, or item-local.
#[derive(Debug, Clone)]
enum Timing {
    Job(Schedule),
    Items(ItemSchedule),
}

impl FireTimes for Timing {
    fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Timing::Job(s) => s.next_after(after),
            Timing::Items(s) => s.next_after(after),
        }
    }
}

impl Timing {
    /// Run arguments of the execution for `at` standing for every due
    /// instant in `(after, at]` (a catch-up, or an on-time fire after missed
    /// ones): an item-local job's groups at those instants.
    fn args_for(&self, after: DateTime<Utc>, at: DateTime<Utc>) -> Vec<(String, String)> {
        let Timing::Items(s) = self else { return Vec::new() };
        group_args(&s.groups_between(after, at))
    }
}

/// The run arguments naming a group of slots: [`ZONES_ARG`] always, and
/// [`SLOTS_ARG`] when some slot has its own local time.
pub fn group_args(group: &[LocalSlot]) -> Vec<(String, String)> {
    let mut zones: Vec<&str> = group.iter().map(|s| s.zone.name()).collect();
    zones.dedup();
    let mut args = vec![(ZONES_ARG.to_string(), zones.join(","))];
    if group.iter().any(|s| s.time.is_some()) {
        let slots: Vec<String> = group.iter().map(ToString::to_string).collect();
        args.push((SLOTS_ARG.to_string(), slots.join(",")));
    }
    args
}

/// The slots an `item_zones_query` returned: column 1 a zone, column 2 (if
/// any) an `HH:MM` local time. Rows with a NULL zone are ignored; unknown
/// zones and bad times are returned apart so they can be reported.
pub fn slots_from_rows(rows: &[Vec<SqlValue>]) -> (Vec<LocalSlot>, Vec<String>) {
    let text = |v: Option<&SqlValue>| match v {
        Some(SqlValue::Text(t)) => Some(t.clone()),
        Some(SqlValue::Integer(i)) => Some(i.to_string()),
        _ => None,
    };
    let mut slots = Vec::new();
    let mut bad = Vec::new();
    for row in rows {
        let Some(zone) = text(row.first()) else { continue };
        let time = text(row.get(1));
        match LocalSlot::parse_parts(&zone, time.as_deref()) {
            Ok(slot) => slots.push(slot),
            Err(e) => bad.push(e.to_string()),
        }
    }
    slots.sort();
    slots.dedup();
    (slots, bad)
}

/// Runs an `item_zones_query` read-only (on a blocking thread's behalf).
fn query_slots(db: &AppDb, sql: &str) -> Result<(Vec<LocalSlot>, Vec<String>), String> {
    let mut session = db.session(DbAccess::ReadOnly);
    let rows = session.query(sql, &[]).map_err(|e| e.to_string());
    session.close();
    let rows = rows?;
    if rows.columns.is_empty() || rows.columns.len() > 2 {
        return Err(format!(
            "item_zones_query must return one column (zone) or two (zone, HH:MM local time), got {}",
            rows.columns.len()
        ));
    }
    Ok(slots_from_rows(&rows.rows))
}

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
pub fn plan_due<S: FireTimes + ?Sized>(
    schedule: &S,
    first_due: DateTime<Utc>,
    now: DateTime<Utc>,
    policy: MisfirePolicy,
) -> DuePlan {
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
    timing: Timing,
    /// The last handled instant (or when the job was first scheduled): the
    /// next fire is computed from here when an item-local job's slots change.
    from: DateTime<Utc>,
    /// An item-local job's `item_zones_query` and where to run it.
    zones_query: Option<(String, AppDb)>,
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
            let plan = plan_due(&entry.timing, due, now, entry.misfire);
            entry.from = plan.last;
            if self.enabled && entry.enabled {
                // An item-local job's run stands for the groups of the missed
                // instants before it too, unless they are to be skipped.
                let mut covered = due - chrono::TimeDelta::seconds(1);
                for (at, trigger) in &plan.fires {
                    let after = if entry.misfire == MisfirePolicy::Skip {
                        *at - chrono::TimeDelta::seconds(1)
                    } else {
                        covered
                    };
                    let args = entry.timing.args_for(after, *at);
                    covered = *at;
                    entry.supervisor.do_send(Fire { scheduled_for: *at, trigger: *trigger, args });
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
        ctx.run_interval(ZONES_REFRESH, |_, ctx| ctx.notify(RefreshZones));
    }
}

impl Scheduler {
    /// Reads an item-local job's slots again (on a blocking thread) and
    /// reschedules it from its last handled instant.
    fn refresh_zones(&mut self, name: &str, ctx: &mut Context<Self>) {
        let Some((sql, db)) = self.jobs.get(name).and_then(|e| e.zones_query.clone()) else { return };
        let name = name.to_string();
        let read = async move { tokio::task::spawn_blocking(move || query_slots(&db, &sql)).await };
        ctx.spawn(read.into_actor(self).map(move |result, act, ctx| {
            let result = result.unwrap_or_else(|e| Err(format!("the query task failed: {e}")));
            act.zones_read(&name, result, ctx);
        }));
    }

    fn zones_read(
        &mut self,
        name: &str,
        result: Result<(Vec<LocalSlot>, Vec<String>), String>,
        ctx: &mut Context<Self>,
    ) {
        let Some(entry) = self.jobs.get_mut(name) else { return };
        let Timing::Items(current) = &entry.timing else { return };
        let mut slots = match result {
            Ok((slots, bad)) => {
                if !bad.is_empty() {
                    tracing::warn!(job = %name, count = bad.len(), first = %bad[0],
                        "item_zones_query returned zones or times Sundial cannot schedule; their items are not run");
                }
                slots
            }
            Err(error) if current.is_empty() => {
                tracing::error!(job = %name, %error,
                    "cannot read item_zones_query; scheduling the job in every zone until it can be read");
                let every = ItemSchedule::every_zone(current.base());
                let changed = every.len() != current.len();
                entry.timing = Timing::Items(every);
                if changed {
                    self.reschedule(name, ctx);
                }
                return;
            }
            Err(error) => {
                tracing::error!(job = %name, %error, "cannot read item_zones_query; keeping the zones read before");
                return;
            }
        };
        if slots.len() > MAX_SLOTS {
            tracing::warn!(job = %name, slots = slots.len(), max = MAX_SLOTS,
                "item_zones_query returned too many slots; the rest are not scheduled");
            slots.truncate(MAX_SLOTS);
        }
        let read = ItemSchedule::new(current.base(), slots);
        if read.slots().eq(current.slots()) {
            return;
        }
        tracing::info!(job = %name, slots = read.len(), "item-local slots read");
        entry.timing = Timing::Items(read);
        self.reschedule(name, ctx);
    }

    /// Recomputes a job's next fire from its last handled instant.
    fn reschedule(&mut self, name: &str, ctx: &mut Context<Self>) {
        let Some(entry) = self.jobs.get(name) else { return };
        let next = entry.timing.next_after(entry.from);
        self.repo.do_send(SetNextRun { job: entry.id, next_run_at: next });
        self.set_next(name, next);
        self.tick(ctx);
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
    /// Item-local scheduling: where the items' zones come from.
    pub item_zones: Option<ItemZones>,
    /// The application database, for `item_zones_query`.
    pub app_db: Option<AppDb>,
}

impl Handler<RegisterJob> for Scheduler {
    type Result = Result<Option<DateTime<Utc>>, ScheduleError>;

    fn handle(&mut self, msg: RegisterJob, ctx: &mut Context<Self>) -> Self::Result {
        let schedule = Schedule::parse(&msg.job.schedule, &msg.job.timezone)?;
        let now = self.clock.now();
        let mut zones_query = None;
        let timing = match msg.item_zones {
            None => Timing::Job(schedule),
            Some(ItemZones::Query(sql)) => match msg.app_db {
                // Nothing fires until the query has been read.
                Some(db) => {
                    zones_query = Some((sql, db));
                    Timing::Items(ItemSchedule::new(&schedule, []))
                }
                None => {
                    tracing::error!(job = %msg.job.name,
                        "item_zones_query needs an application database; scheduling the job in every zone");
                    Timing::Items(ItemSchedule::every_zone(&schedule))
                }
            },
            Some(fixed) => {
                Timing::Items(fixed.fixed_schedule(&schedule).unwrap_or_else(|| ItemSchedule::new(&schedule, [])))
            }
        };
        // Continue the series from the last handled instant; a new job (or a
        // changed schedule) starts from now.
        let from = msg.job.last_scheduled_for.unwrap_or(now);
        let next = timing.next_after(from);
        if msg.job.last_scheduled_for.is_none() {
            self.repo.do_send(SetNextRun { job: msg.job.id, next_run_at: next });
        }
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
                timing,
                from,
                zones_query,
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
        if self.jobs.get(&name).is_some_and(|e| e.zones_query.is_some()) {
            self.refresh_zones(&name, ctx);
        }
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

/// Sent by tests and interfaces: read the slots of every item-local job with
/// an `item_zones_query` again now (it is read every [`ZONES_REFRESH`] anyway).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RefreshZones;

impl Handler<RefreshZones> for Scheduler {
    type Result = ();

    fn handle(&mut self, _: RefreshZones, ctx: &mut Context<Self>) {
        let names: Vec<String> =
            self.jobs.iter().filter(|(_, e)| e.zones_query.is_some()).map(|(n, _)| n.clone()).collect();
        for name in names {
            self.refresh_zones(&name, ctx);
        }
    }
}

/// Sent by interfaces: an item-local job's next `count` fires after `after`,
/// each with its group's slots. `None` for a job scheduled in one zone (or
/// unknown here).
#[derive(Debug, Message)]
#[rtype(result = "Option<Vec<(DateTime<Utc>, Vec<String>)>>")]
pub struct UpcomingGroups {
    /// The job.
    pub name: String,
    /// Fires strictly after this instant.
    pub after: DateTime<Utc>,
    /// How many.
    pub count: usize,
}

impl Handler<UpcomingGroups> for Scheduler {
    type Result = Option<Vec<(DateTime<Utc>, Vec<String>)>>;

    fn handle(&mut self, msg: UpcomingGroups, _: &mut Context<Self>) -> Self::Result {
        let Timing::Items(s) = &self.jobs.get(&msg.name)?.timing else { return None };
        let mut out = Vec::with_capacity(msg.count);
        let mut at = msg.after;
        while out.len() < msg.count {
            let Some(next) = s.next_after(at) else { break };
            out.push((next, s.group_at(next).iter().map(ToString::to_string).collect()));
            at = next;
        }
        Some(out)
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

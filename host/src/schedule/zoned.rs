//! Item-local schedules: one cron expression read in each item's own time
//! zone ("at 02:00 in each user's zone"), optionally at a per-item local time
//! of day ("at each user's chosen delivery time").
//!
//! The items' zones (and local times) are *slots*. Each slot has its own fire
//! series — the job's expression in that zone, under the same DST policy as
//! any job schedule — and the item schedule is their union. All slots that
//! fire at one instant form that instant's *group*: they share the local
//! date and time (a zone in a spring-forward gap fires at the first instant
//! after it, as any fixed-time job does), and one execution per instant runs
//! the group's items. The execution is keyed by (job, instant) like every
//! other, so a group fires exactly once.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;

use super::{Schedule, ScheduleError, parse_timezone};

/// One zone the items live in, with an optional local time of day that
/// replaces the hour and minute of the job's expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LocalSlot {
    /// The IANA zone.
    pub zone: Tz,
    /// `(hour, minute)`, if the items of this slot chose their own time.
    pub time: Option<(u8, u8)>,
}

impl LocalSlot {
    /// A slot at the job's own times of day.
    pub fn zone(zone: Tz) -> LocalSlot {
        LocalSlot { zone, time: None }
    }

    /// Parses a zone and an optional local time given apart (as a query's
    /// two columns return them). The time is `HH:MM` (or `HH:MM:SS` with
    /// zero seconds).
    pub fn parse_parts(zone: &str, time: Option<&str>) -> Result<LocalSlot, ScheduleError> {
        let zone = parse_timezone(zone)?;
        let time = match time.map(str::trim).filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => Some(parse_local_time(t).ok_or_else(|| ScheduleError::InvalidLocalTime(t.to_string()))?),
        };
        Ok(LocalSlot { zone, time })
    }
}

/// By zone name, then time (none first).
impl Ord for LocalSlot {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.zone.name(), self.time).cmp(&(other.zone.name(), other.time))
    }
}

impl PartialOrd for LocalSlot {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

fn parse_local_time(t: &str) -> Option<(u8, u8)> {
    let mut parts = t.split(':');
    let two = |p: Option<&str>| p.filter(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()))?.parse::<u8>().ok();
    let hour = two(parts.next()).filter(|h| *h < 24)?;
    let minute = two(parts.next()).filter(|m| *m < 60)?;
    match parts.next() {
        None => {}
        Some("00") if parts.next().is_none() => {}
        Some(_) => return None,
    }
    Some((hour, minute))
}

/// `Asia/Tokyo` or `Asia/Tokyo@07:30`.
impl FromStr for LocalSlot {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<LocalSlot, ScheduleError> {
        match s.split_once('@') {
            Some((zone, time)) => LocalSlot::parse_parts(zone, Some(time)),
            None => LocalSlot::parse_parts(s, None),
        }
    }
}

impl fmt::Display for LocalSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.time {
            Some((h, m)) => write!(f, "{}@{h:02}:{m:02}", self.zone.name()),
            None => f.write_str(self.zone.name()),
        }
    }
}

/// The union of one expression's fire series over a set of slots.
#[derive(Debug, Clone)]
pub struct ItemSchedule {
    base: Schedule,
    slots: Vec<(LocalSlot, Schedule)>,
}

impl ItemSchedule {
    /// `base`'s expression in each slot (duplicates dropped).
    pub fn new(base: &Schedule, slots: impl IntoIterator<Item = LocalSlot>) -> ItemSchedule {
        let mut slots: Vec<LocalSlot> = slots.into_iter().collect();
        slots.sort();
        slots.dedup();
        let slots = slots
            .into_iter()
            .map(|slot| {
                let in_zone = base.in_zone(slot.zone);
                let schedule = match slot.time {
                    Some((h, m)) => in_zone.at_local_time(h, m),
                    None => in_zone,
                };
                (slot, schedule)
            })
            .collect();
        ItemSchedule { base: base.clone(), slots }
    }

    /// `base`'s expression in every zone of the time zone database.
    pub fn every_zone(base: &Schedule) -> ItemSchedule {
        ItemSchedule::new(base, chrono_tz::TZ_VARIANTS.iter().copied().map(LocalSlot::zone))
    }

    /// The expression, as in the job's own schedule.
    pub fn base(&self) -> &Schedule {
        &self.base
    }

    /// The slots, sorted by zone name and time.
    pub fn slots(&self) -> impl Iterator<Item = &LocalSlot> {
        self.slots.iter().map(|(s, _)| s)
    }

    /// How many slots there are.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are none (the schedule never fires).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The first instant strictly after `after` at which any slot fires.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.slots.iter().filter_map(|(_, s)| s.next_after(after)).min()
    }

    /// The slots that fire at any instant in `(after, until]`, in slot
    /// order: the items a catch-up run for those instants is for. Past
    /// `MAX_GROUPS` instants, every slot.
    pub fn groups_between(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> Vec<LocalSlot> {
        const MAX_GROUPS: usize = 10_000;
        let mut fired = vec![false; self.slots.len()];
        let mut at = after;
        for _ in 0..MAX_GROUPS {
            let Some(next) = self.next_after(at).filter(|n| *n <= until) else {
                return self.slots.iter().zip(fired).filter(|(_, f)| *f).map(|((slot, _), _)| *slot).collect();
            };
            let before = next - TimeDelta::seconds(1);
            for (i, (_, s)) in self.slots.iter().enumerate() {
                if !fired[i] && s.next_after(before) == Some(next) {
                    fired[i] = true;
                }
            }
            at = next;
        }
        self.slots.iter().map(|(slot, _)| *slot).collect()
    }

    /// The slots that fire at `at` (empty if none does).
    pub fn group_at(&self, at: DateTime<Utc>) -> Vec<LocalSlot> {
        let before = at - TimeDelta::seconds(1);
        self.slots.iter().filter(|(_, s)| s.next_after(before) == Some(at)).map(|(slot, _)| *slot).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn slots(names: &[&str]) -> Vec<LocalSlot> {
        names.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn fires(s: &ItemSchedule, from: &str, to: &str) -> Vec<(DateTime<Utc>, Vec<String>)> {
        let mut out = Vec::new();
        let mut at = t(from);
        while let Some(n) = s.next_after(at).filter(|n| *n < t(to)) {
            out.push((n, s.group_at(n).iter().map(ToString::to_string).collect()));
            at = n;
        }
        out
    }

    #[test]
    fn slots_parse_and_reject_bad_input() {
        assert_eq!("Asia/Tokyo".parse::<LocalSlot>().unwrap().to_string(), "Asia/Tokyo");
        assert_eq!(
            "Asia/Tokyo@7:30".parse::<LocalSlot>().unwrap_err().to_string(),
            "invalid local time \"7:30\" (expected HH:MM, 00:00-23:59)"
        );
        assert_eq!("Asia/Tokyo@07:30".parse::<LocalSlot>().unwrap().to_string(), "Asia/Tokyo@07:30");
        assert_eq!(LocalSlot::parse_parts("Asia/Tokyo", Some("07:30:00")).unwrap().time, Some((7, 30)));
        assert!(LocalSlot::parse_parts("Asia/Tokyo", Some("24:00")).is_err());
        assert!(LocalSlot::parse_parts("Asia/Tokyo", Some("07:60")).is_err());
        assert!(LocalSlot::parse_parts("Asia/Tokyo", Some("07:30:15")).is_err());
        assert_eq!(LocalSlot::parse_parts("Asia/Tokyo", Some(" ")).unwrap().time, None);
        assert!(matches!("Mars/Olympus".parse::<LocalSlot>(), Err(ScheduleError::UnknownTimeZone(_))));
    }

    #[test]
    fn zones_at_the_same_local_time_and_offset_share_one_instant() {
        let base = Schedule::parse("0 2 * * *", "UTC").unwrap();
        let s = ItemSchedule::new(&base, slots(&["Asia/Tokyo", "Asia/Seoul", "Asia/Kolkata", "Europe/London"]));
        assert_eq!(
            fires(&s, "2026-01-10T00:00:00Z", "2026-01-11T00:00:00Z"),
            vec![
                (t("2026-01-10T02:00:00Z"), vec!["Europe/London".to_string()]),
                (t("2026-01-10T17:00:00Z"), vec!["Asia/Seoul".to_string(), "Asia/Tokyo".to_string()]),
                (t("2026-01-10T20:30:00Z"), vec!["Asia/Kolkata".to_string()]),
            ]
        );
    }

    #[test]
    fn each_zone_keeps_the_dst_policy_of_job_schedules() {
        let base = Schedule::parse("30 2 * * *", "UTC").unwrap();
        let s = ItemSchedule::new(&base, slots(&["America/New_York", "America/Chicago"]));
        // 2026-03-08: 02:30 does not exist in either zone; each fires once at
        // the end of its gap (03:00 local).
        assert_eq!(
            fires(&s, "2026-03-08T00:00:00Z", "2026-03-09T00:00:00Z"),
            vec![
                (t("2026-03-08T07:00:00Z"), vec!["America/New_York".to_string()]),
                (t("2026-03-08T08:00:00Z"), vec!["America/Chicago".to_string()]),
            ]
        );
        // 2026-11-01 01:30 occurs twice; a 01:30 job fires at the first only.
        let s = ItemSchedule::new(&Schedule::parse("30 1 * * *", "UTC").unwrap(), slots(&["America/New_York"]));
        assert_eq!(fires(&s, "2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z").len(), 1);
        // Lord Howe's half-hour shift: 02:15 falls in the 02:00-02:30 gap on 2026-10-04.
        let s = ItemSchedule::new(&Schedule::parse("15 2 * * *", "UTC").unwrap(), slots(&["Australia/Lord_Howe"]));
        assert_eq!(
            fires(&s, "2026-10-03T12:00:00Z", "2026-10-04T12:00:00Z"),
            vec![(t("2026-10-03T15:30:00Z"), vec!["Australia/Lord_Howe".to_string()])]
        );
    }

    #[test]
    fn per_item_times_replace_hour_and_minute_only() {
        let base = Schedule::parse("0 7 * * MON-FRI", "UTC").unwrap();
        let s = ItemSchedule::new(&base, slots(&["Asia/Tokyo@06:30", "Asia/Shanghai@05:30", "Asia/Tokyo"]));
        // 2026-01-09 is a Friday, 2026-01-10 a Saturday.
        assert_eq!(
            fires(&s, "2026-01-08T12:00:00Z", "2026-01-11T00:00:00Z"),
            vec![
                (t("2026-01-08T21:30:00Z"), vec!["Asia/Shanghai@05:30".to_string(), "Asia/Tokyo@06:30".to_string()]),
                (t("2026-01-08T22:00:00Z"), vec!["Asia/Tokyo".to_string()]),
            ]
        );
    }

    #[test]
    fn a_catch_up_covers_every_group_it_stands_for() {
        let base = Schedule::parse("0 2 * * *", "UTC").unwrap();
        let s = ItemSchedule::new(&base, slots(&["Asia/Tokyo", "Europe/London", "America/New_York"]));
        let names = |v: Vec<LocalSlot>| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        // Down from 2026-01-10 00:00 to 08:00 UTC: London (02:00Z) and New York (07:00Z).
        assert_eq!(
            names(s.groups_between(t("2026-01-10T00:00:00Z"), t("2026-01-10T07:00:00Z"))),
            ["America/New_York", "Europe/London"]
        );
        assert_eq!(names(s.groups_between(t("2026-01-10T07:00:00Z"), t("2026-01-10T16:59:59Z"))), Vec::<String>::new());
        assert_eq!(names(s.groups_between(t("2026-01-09T00:00:00Z"), t("2026-01-12T00:00:00Z"))).len(), 3);
    }

    #[test]
    fn every_zone_groups_the_whole_database_by_offset() {
        let base = Schedule::parse("0 2 * * *", "UTC").unwrap();
        let s = ItemSchedule::every_zone(&base);
        // The UTC day 2026-01-10, both ends: [00:00, 24:00).
        let day = fires(&s, "2026-01-09T23:59:59Z", "2026-01-11T00:00:00Z");
        // One group per distinct offset in use that day: a few dozen, not hundreds.
        assert!((30..=45).contains(&day.len()), "{} groups", day.len());
        let zones: usize = day.iter().map(|(_, g)| g.len()).sum();
        assert_eq!(zones, chrono_tz::TZ_VARIANTS.len(), "every zone fires once a day");
        assert!(day.iter().any(|(at, g)| *at == t("2026-01-10T17:00:00Z") && g.contains(&"Asia/Tokyo".to_string())));
    }
}

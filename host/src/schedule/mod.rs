//! Crontab schedules: parsing, validation and next-fire-time computation.
//!
//! # Dialect
//!
//! Sundial speaks standard crontab with Vixie/cronie semantics, so that
//! expressions copied from an existing crontab keep their meaning:
//!
//! * 5 fields `minute hour day-of-month month day-of-week`, or 6 fields with a
//!   leading `second` field. Fields are separated by any run of whitespace.
//! * Each field is a comma list of items; an item is `*`, a value, a range
//!   `a-b`, optionally followed by a step `/n`. `a/n` means `a-max/n`.
//! * Months and weekdays accept three-letter English names (`JAN`, `MON`),
//!   case-insensitively, also as range ends (`MON-FRI`).
//! * Day-of-week is 0-7 with both 0 and 7 meaning Sunday (`5-7` is Friday to
//!   Sunday).
//! * Macros `@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`/`@midnight`
//!   and `@hourly`. `@reboot` is rejected: Sundial has no notion of "boot".
//! * Day matching follows Vixie cron: if both day-of-month and day-of-week are
//!   restricted (neither field starts with `*`), a day matches when *either*
//!   matches; otherwise both must match (the `*` one matches everything or, for
//!   `*/n`, its step set). This is surprising but it is what every crontab
//!   user's existing schedules rely on.
//! * Steps must lie in `1..=span` of the field (e.g. 1-60 for minutes): a step
//!   of 0 is meaningless and a step beyond the span is almost always a typo.
//!
//! Validation is strict and never panics; every error names the field and the
//! allowed range. Expressions that can statically never fire (`0 0 30 2 *`)
//! are rejected rather than silently scheduling nothing.
//!
//! # Time zones and daylight saving time
//!
//! Fire times are computed in the schedule's IANA zone on *local* dates and
//! times. Around DST transitions we follow cronie's policy, because it gives
//! the least surprising result for both kinds of job people write:
//!
//! * A **wildcard-hour** job (hour field starts with `*`, e.g. `0 * * * *`,
//!   `*/10 */2 * * *`) is about elapsed real time, so it follows the wall
//!   clock literally: local times inside a spring-forward gap do not exist and
//!   do not fire, and a local time that occurs twice during a fall-back overlap
//!   fires at both occurrences. Hourly jobs therefore keep running hourly.
//! * Every other job is a **fixed-time** job ("at 02:30"), about a time of day,
//!   and must run exactly once that day: if its local time falls in a gap it
//!   fires once at the first instant after the gap (several gap times collapse
//!   into that one instant), and if its local time occurs twice it fires only
//!   at the first occurrence.
//!
//! # Algorithm
//!
//! Each field is a `u64` bitset. [`Schedule::next_after`] never scans minute
//! by minute: it jumps to the next matching local date (per-month day masks
//! built from the weekday of the 1st) and then to the next matching
//! hour/minute/second with bit operations. Only candidate local times are
//! mapped to instants through the zone. Because several local times can map
//! to instants in a different order than their local order around a fall-back,
//! the scan starts at the earliest local time that can still map after `t`
//! (the start of an upcoming overlap) and uses the monotonicity of the
//! "earliest" and "latest" local-to-instant mappings to stop early and to skip
//! over candidates that provably cannot win. The result is a pure function of
//! (expression, zone, `t`), strictly increasing when fed back into itself.

use std::fmt;

use chrono::{DateTime, Datelike, LocalResult, Months, NaiveDate, NaiveDateTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

mod describe;
mod parse;
#[cfg(test)]
mod tests;
mod zoned;

pub use zoned::{ItemSchedule, LocalSlot};

/// Expressions longer than this are rejected before any parsing: no sensible
/// crontab line is this long and it bounds the work done on hostile input.
pub const MAX_EXPRESSION_LEN: usize = 256;

/// How far (in years of local dates) `next_after` searches before giving up.
/// Longer than the obvious 8 years needed for `0 0 29 2 *`: with day-of-week
/// `*/n` the AND rule can require "February 29th on a Sunday", which recurs
/// every 28 years and up to 40 across a skipped century leap year. Every
/// expression that passes validation fires within this horizon; the search
/// itself is month-by-month bit arithmetic, so the bound is cheap.
const HORIZON_MONTHS: u32 = 50 * 12;

/// Window (seconds) within which a fall-back after `t` can make an earlier
/// local time map to an instant after `t`. Real DST shifts are at most 2 h.
const LOOKAHEAD_SECS: i64 = 3 * 3600;

/// Half-width (seconds) of the instant window searched for a gap's end. UTC
/// offsets lie within -12h..+14h, so the transition is within 16 h of the
/// local time read as UTC.
const GAP_SEARCH_SECS: i64 = 16 * 3600;

/// Defensive cap on candidate evaluations per call; the algorithm needs a
/// handful, this only guarantees termination if zone data is pathological.
const MAX_CANDIDATES: usize = 10_000;

/// A crontab field, used to name the culprit in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    Second,
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Second => "second",
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::DayOfMonth => "day-of-month",
            Field::Month => "month",
            Field::DayOfWeek => "day-of-week",
        })
    }
}

/// Why an expression or time zone was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("empty expression")]
    Empty,
    #[error("expression is too long ({len} characters, at most {max})")]
    TooLong { len: usize, max: usize },
    #[error("expected 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds, got {0}")]
    FieldCount(usize),
    #[error("@reboot is not supported: sundial only runs time-based schedules")]
    RebootUnsupported,
    #[error("unknown macro {0:?} (expected @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)")]
    UnknownMacro(String),
    #[error("{field}: {value} is out of range {min}-{max}")]
    OutOfRange { field: Field, value: String, min: u32, max: u32 },
    #[error("{field}: invalid value {value:?} (expected a number in {min}-{max}{names})")]
    InvalidValue {
        field: Field,
        value: String,
        min: u32,
        max: u32,
        /// Either empty or a hint such as " or a name JAN-DEC".
        names: &'static str,
    },
    #[error("{field}: unknown name {name:?} (expected {expected} or a number in {min}-{max})")]
    UnknownName { field: Field, name: String, expected: &'static str, min: u32, max: u32 },
    #[error("{field}: range {start}-{end} is reversed")]
    ReversedRange { field: Field, start: u32, end: u32 },
    #[error("{field}: step must be at least 1")]
    ZeroStep { field: Field },
    #[error("{field}: step {step} is out of range 1-{max}")]
    StepOutOfRange { field: Field, step: String, max: u32 },
    #[error("{field}: empty list item in {text:?}")]
    EmptyListItem { field: Field, text: String },
    #[error("never fires: {0}")]
    NeverFires(String),
    #[error("unknown time zone {0:?} (expected an IANA name such as Europe/London)")]
    UnknownTimeZone(String),
    #[error("invalid local time {0:?} (expected HH:MM, 00:00-23:59)")]
    InvalidLocalTime(String),
}

/// Parses an IANA zone name ("UTC", "Asia/Tokyo"), with a clear error naming the zone.
pub fn parse_timezone(name: &str) -> Result<Tz, ScheduleError> {
    name.trim().parse::<Tz>().map_err(|_| ScheduleError::UnknownTimeZone(name.to_string()))
}

/// The parsed fields as bitsets (bit `v` set = value `v` allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fields {
    seconds: u64,
    minutes: u64,
    hours: u64,
    /// Bits 1..=31.
    days_of_month: u64,
    /// Bits 1..=12.
    months: u64,
    /// Bits 0..=6, Sunday = 0 (a 7 in the expression is folded into bit 0).
    days_of_week: u64,
    /// Day-of-month field does not start with `*` (Vixie "restricted").
    dom_restricted: bool,
    /// Day-of-week field does not start with `*`.
    dow_restricted: bool,
    /// Hour field starts with `*`: the job follows real time across DST.
    wildcard_hour: bool,
    /// The expression had a seconds field.
    has_seconds: bool,
}

/// Smallest set bit `>= from`, if any.
fn next_bit(mask: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let masked = mask & (u64::MAX << from);
    if masked == 0 { None } else { Some(masked.trailing_zeros()) }
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
            if leap { 29 } else { 28 }
        }
    }
}

impl Fields {
    /// Days (bits 1..=31) of `year-month` on which the schedule may fire.
    fn day_mask(&self, year: i32, month: u32) -> u64 {
        let Some(first) = NaiveDate::from_ymd_opt(year, month, 1) else {
            return 0;
        };
        let w1 = first.weekday().num_days_from_sunday();
        let dow = self.days_of_week & 0x7f;
        // Rotate the weekday set so that bit j means "day j+1 of the month
        // has an allowed weekday", then tile it over five weeks.
        let week = ((dow >> w1) | (dow << (7 - w1))) & 0x7f;
        let weekly = (week | week << 7 | week << 14 | week << 21 | week << 28) << 1;
        let valid = ((1u64 << (days_in_month(year, month) + 1)) - 1) & !1;
        let days = if self.dom_restricted && self.dow_restricted {
            self.days_of_month | weekly
        } else {
            self.days_of_month & weekly
        };
        days & valid
    }

    /// The first matching local date `>= from`, not later than `limit`.
    fn next_date(&self, from: NaiveDate, limit: NaiveDate) -> Option<NaiveDate> {
        let (mut year, mut month, mut day) = (from.year(), from.month(), from.day());
        loop {
            if (year, month) > (limit.year(), limit.month()) {
                return None;
            }
            if self.months & (1 << month) != 0
                && let Some(d) = next_bit(self.day_mask(year, month), day)
            {
                return NaiveDate::from_ymd_opt(year, month, d).filter(|date| *date <= limit);
            }
            // Jump straight to the next allowed month.
            day = 1;
            match next_bit(self.months, month + 1) {
                Some(m) if m <= 12 => month = m,
                _ => {
                    year = year.checked_add(1)?;
                    month = next_bit(self.months, 1)?;
                }
            }
        }
    }

    /// The first matching time of day `>= (hour, minute, second)`.
    fn next_time(&self, hour: u32, minute: u32, second: u32) -> Option<(u32, u32, u32)> {
        let first_minute = next_bit(self.minutes, 0)?;
        let first_second = next_bit(self.seconds, 0)?;
        let h = next_bit(self.hours, hour)?;
        if h > hour {
            return Some((h, first_minute, first_second));
        }
        if let Some(m) = next_bit(self.minutes, minute) {
            if m > minute {
                return Some((hour, m, first_second));
            }
            if let Some(s) = next_bit(self.seconds, second) {
                return Some((hour, minute, s));
            }
            if let Some(m) = next_bit(self.minutes, minute + 1) {
                return Some((hour, m, first_second));
            }
        }
        let h = next_bit(self.hours, hour + 1)?;
        Some((h, first_minute, first_second))
    }

    /// The first matching local time `>= from` whose date is `<= limit`.
    fn next_match(&self, from: NaiveDateTime, limit: NaiveDate) -> Option<NaiveDateTime> {
        let mut date = from.date();
        let (mut h, mut m, mut s) = (from.hour(), from.minute(), from.second());
        loop {
            let d = self.next_date(date, limit)?;
            if d != date {
                (h, m, s) = (0, 0, 0);
            }
            if let Some((hh, mm, ss)) = self.next_time(h, m, s) {
                return d.and_hms_opt(hh, mm, ss);
            }
            date = d.succ_opt()?;
            (h, m, s) = (0, 0, 0);
        }
    }

    /// Straightforward field check, used by tests as an independent oracle.
    #[cfg(test)]
    fn matches(&self, n: NaiveDateTime) -> bool {
        let bit = |mask: u64, v: u32| mask & (1 << v) != 0;
        let dom = bit(self.days_of_month, n.day());
        let dow = bit(self.days_of_week, n.weekday().num_days_from_sunday());
        let day = if self.dom_restricted && self.dow_restricted { dom || dow } else { dom && dow };
        day && bit(self.seconds, n.second())
            && bit(self.minutes, n.minute())
            && bit(self.hours, n.hour())
            && bit(self.months, n.month())
    }
}

/// A validated cron schedule in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expression: String,
    timezone: Tz,
    fields: Fields,
}

/// Local wall-clock time as seconds since 1970-01-01T00:00:00 (naive).
fn naive_secs(n: NaiveDateTime) -> i64 {
    n.and_utc().timestamp()
}

fn naive_from_secs(secs: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp(secs, 0).map(|d| d.naive_utc())
}

impl Schedule {
    /// Parses a crontab expression and an IANA zone name.
    pub fn parse(expression: &str, timezone: &str) -> Result<Schedule, ScheduleError> {
        // Checked on the raw input, before trimming or parsing anything.
        // Characters never outnumber bytes, so only count them when needed.
        if expression.len() > MAX_EXPRESSION_LEN {
            let len = expression.chars().count();
            if len > MAX_EXPRESSION_LEN {
                return Err(ScheduleError::TooLong { len, max: MAX_EXPRESSION_LEN });
            }
        }
        let trimmed = expression.trim();
        if trimmed.is_empty() {
            return Err(ScheduleError::Empty);
        }
        let fields = parse::parse_expression(trimmed)?;
        let timezone = parse_timezone(timezone)?;
        Ok(Schedule { expression: trimmed.to_string(), timezone, fields })
    }

    /// The expression as given (trimmed).
    pub fn expression(&self) -> &str {
        &self.expression
    }

    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    /// A short English description for operators, e.g. "at 03:15 every day",
    /// "every 15 minutes", "at 07:00 on Monday to Friday". Best effort: falls
    /// back to the expression itself.
    pub fn describe(&self) -> String {
        describe::describe(&self.fields).unwrap_or_else(|| self.expression.clone())
    }

    /// The same schedule at one fixed local time of day: the hour and minute
    /// fields become `hour` and `minute` (seconds 0); the day, month and
    /// weekday fields are kept. Used for per-item delivery times.
    pub fn at_local_time(&self, hour: u8, minute: u8) -> Schedule {
        let mut fields = self.fields;
        fields.hours = 1 << hour.min(23);
        fields.minutes = 1 << minute.min(59);
        fields.seconds = 1;
        fields.wildcard_hour = false;
        Schedule {
            expression: format!("{} at {hour:02}:{minute:02}", self.expression),
            timezone: self.timezone,
            fields,
        }
    }

    /// The same expression in another zone.
    pub fn in_zone(&self, timezone: Tz) -> Schedule {
        Schedule { expression: self.expression.clone(), timezone, fields: self.fields }
    }

    /// Iterator of successive fire instants strictly after `after`.
    pub fn iter_after(&self, after: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        std::iter::successors(self.next_after(after), move |prev| self.next_after(*prev))
    }

    /// The first fire instant strictly after `after`. `None` only if the
    /// schedule never fires again within the search horizon.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Fire instants are whole seconds, so "x > after" is "x > floor(after)".
        let t = after.timestamp();
        self.next_after_secs(t).and_then(|secs| DateTime::from_timestamp(secs, 0))
    }

    fn offset_at(&self, ts: i64) -> Option<i64> {
        let utc = DateTime::from_timestamp(ts, 0)?.naive_utc();
        let offset = self.timezone.offset_from_utc_datetime(&utc).fix();
        Some(i64::from(offset.local_minus_utc()))
    }

    /// Smallest instant in `(lo, hi]` whose offset differs from `base`,
    /// given that `hi`'s does (binary search; one transition assumed).
    fn first_change(&self, mut lo: i64, mut hi: i64, base: i64) -> Option<i64> {
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.offset_at(mid)? != base {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Some(hi)
    }

    /// For a local time inside a spring-forward gap: the transition instant,
    /// i.e. the first instant whose local time is `>= local`.
    fn gap_end(&self, local: i64) -> Option<i64> {
        let (mut lo, mut hi) = (local - GAP_SEARCH_SECS, local + GAP_SEARCH_SECS);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if mid + self.offset_at(mid)? >= local {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Some(hi)
    }

    /// Core search on Unix seconds; see the module docs for the policy.
    ///
    /// Two facts make this exact without scanning: the *earliest* instant a
    /// local time maps to (first occurrence, or the transition for a gap) is
    /// non-decreasing in local time, and so is the *latest* (second
    /// occurrence). Fixed-time jobs always emit the earliest mapping, so the
    /// first candidate whose earliest instant is after `t` ends the search;
    /// wildcard-hour jobs may also emit second occurrences, which we collect
    /// in `best` while skipping candidates that cannot beat it.
    fn next_after_secs(&self, t: i64) -> Option<i64> {
        let tz = self.timezone;
        let wildcard = self.fields.wildcard_hour;
        let offset_t = self.offset_at(t)?;
        let local_t = t + offset_t;

        // Local times before local(t) can only map after t if the offset
        // drops soon (fall-back): then scan from the start of that overlap.
        let mut from = local_t;
        let probe = t + LOOKAHEAD_SECS;
        if self.offset_at(probe)? < offset_t {
            let transition = self.first_change(t, probe, offset_t)?;
            from = from.min(transition + self.offset_at(transition)?);
        }

        let limit = naive_from_secs(local_t)?.date().checked_add_months(Months::new(HORIZON_MONTHS))?;
        let mut best: Option<i64> = None;
        let finish = |best: Option<i64>, x: i64| Some(best.map_or(x, |b| b.min(x)));

        for _ in 0..MAX_CANDIDATES {
            let Some(candidate) = self.fields.next_match(naive_from_secs(from)?, limit) else {
                return best;
            };
            let local = naive_secs(candidate);
            match tz.from_local_datetime(&candidate) {
                LocalResult::Single(x) => {
                    let x = x.timestamp();
                    if x > t {
                        return finish(best, x);
                    }
                    from = local + 1;
                }
                LocalResult::Ambiguous(p, q) => {
                    let (first, second) = {
                        let (p, q) = (p.timestamp(), q.timestamp());
                        (p.min(q), p.max(q))
                    };
                    if first > t {
                        return finish(best, first);
                    }
                    // Offsets before and after the fall-back.
                    let (before, after) = (local - first, local - second);
                    from = if wildcard && second > t {
                        // Later candidates' second occurrences are later
                        // still; only a first occurrence after t can win,
                        // and those start at local(t) + 1 s.
                        best = Some(best.map_or(second, |b| b.min(second)));
                        (local + 1).max(t + before + 1)
                    } else if wildcard {
                        // Second occurrences up to local t + `after` offset
                        // are not after t either; skip them.
                        (local + 1).max(t + after + 1)
                    } else {
                        // Fixed-time: second occurrences are suppressed, so
                        // skip to whichever comes first: a first occurrence
                        // after t, or the end of the overlap (where local
                        // times map singly again).
                        let transition = self.first_change(first, second, before)?;
                        (local + 1).max((t + before + 1).min(transition + before))
                    };
                }
                LocalResult::None => {
                    let transition = self.gap_end(local)?;
                    if !wildcard && transition > t {
                        // Fixed-time job in a gap: fire once at the first
                        // instant after it. Other gap times map to the same
                        // instant and are filtered by "strictly after t".
                        return finish(best, transition);
                    }
                    if let Some(b) = best
                        && b <= transition
                    {
                        return Some(b);
                    }
                    // Wildcard-hour: the time does not exist; resume at the
                    // first local time after the gap.
                    from = (local + 1).max(transition + self.offset_at(transition)?);
                }
            }
        }
        best
    }
}

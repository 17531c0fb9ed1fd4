// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use chrono::{SecondsFormat, Weekday};
use proptest::prelude::*;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn rfc(d: DateTime<Utc>) -> String {
    d.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn sched(expr: &str, tz: &str) -> Schedule {
    Schedule::parse(expr, tz).unwrap_or_else(|e| panic!("{expr:?} in {tz}: {e}"))
}

/// The first `n` fires strictly after `after`, as RFC 3339 strings.
fn fires(expr: &str, tz: &str, after: &str, n: usize) -> Vec<String> {
    sched(expr, tz).iter_after(at(after)).take(n).map(rfc).collect()
}

fn next(expr: &str, tz: &str, after: &str) -> String {
    rfc(sched(expr, tz).next_after(at(after)).unwrap())
}

fn err(expr: &str) -> String {
    Schedule::parse(expr, "UTC").unwrap_err().to_string()
}

// ---------------------------------------------------------------- DST: New York

#[test]
fn new_york_spring_forward_fixed_time_fires_after_gap() {
    assert_eq!(
        fires("30 2 * * *", "America/New_York", "2026-03-07T00:00:00Z", 3),
        ["2026-03-07T07:30:00Z", "2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"]
    );
}

#[test]
fn new_york_spring_forward_several_gap_times_fire_once() {
    assert_eq!(
        fires("0,30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", 3),
        ["2026-03-08T07:00:00Z", "2026-03-09T06:00:00Z", "2026-03-09T06:30:00Z"]
    );
    // Starting exactly at the gap-mapped instant does not repeat it.
    assert_eq!(next("0,30 2 * * *", "America/New_York", "2026-03-08T07:00:00Z"), "2026-03-09T06:00:00Z");
    // Every minute of the missing hour collapses into one fire.
    assert_eq!(
        fires("* 2 * * *", "America/New_York", "2026-03-08T06:00:00Z", 2),
        ["2026-03-08T07:00:00Z", "2026-03-09T06:00:00Z"]
    );
}

#[test]
fn new_york_fall_back_fixed_time_fires_first_occurrence_only() {
    assert_eq!(
        fires("30 1 * * *", "America/New_York", "2026-10-30T12:00:00Z", 3),
        ["2026-10-31T05:30:00Z", "2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
    );
    // From inside the overlap, at either occurrence.
    for after in ["2026-11-01T05:30:00Z", "2026-11-01T06:00:00Z", "2026-11-01T06:30:00Z"] {
        assert_eq!(next("30 1 * * *", "America/New_York", after), "2026-11-02T06:30:00Z");
    }
    // A fixed job in the second occurrence hour does not re-fire, but the
    // next hour (02:00 EST) is reached normally, also from inside the
    // second occurrence.
    assert_eq!(next("*/20 1,2 * * *", "America/New_York", "2026-11-01T06:30:00Z"), "2026-11-01T07:00:00Z");
    assert_eq!(
        fires("*/20 1,2 * * *", "America/New_York", "2026-11-01T05:10:00Z", 6),
        [
            "2026-11-01T05:20:00Z",
            "2026-11-01T05:40:00Z",
            "2026-11-01T07:00:00Z",
            "2026-11-01T07:20:00Z",
            "2026-11-01T07:40:00Z",
            "2026-11-02T06:00:00Z"
        ]
    );
}

#[test]
fn new_york_hourly_across_fall_back_fires_both_occurrences() {
    assert_eq!(
        fires("0 * * * *", "America/New_York", "2026-11-01T03:30:00Z", 5),
        [
            "2026-11-01T04:00:00Z",
            "2026-11-01T05:00:00Z",
            "2026-11-01T06:00:00Z",
            "2026-11-01T07:00:00Z",
            "2026-11-01T08:00:00Z"
        ]
    );
    assert_eq!(next("0 * * * *", "America/New_York", "2026-11-01T05:00:00Z"), "2026-11-01T06:00:00Z");
    assert_eq!(next("0 * * * *", "America/New_York", "2026-11-01T05:30:00Z"), "2026-11-01T06:00:00Z");
    assert_eq!(next("0 * * * *", "America/New_York", "2026-11-01T06:00:00Z"), "2026-11-01T07:00:00Z");
}

#[test]
fn new_york_hourly_across_spring_forward_has_no_duplicate() {
    assert_eq!(
        fires("0 * * * *", "America/New_York", "2026-03-08T04:30:00Z", 4),
        ["2026-03-08T05:00:00Z", "2026-03-08T06:00:00Z", "2026-03-08T07:00:00Z", "2026-03-08T08:00:00Z"]
    );
}

#[test]
fn new_york_half_hourly_across_transitions() {
    assert_eq!(
        fires("*/30 * * * *", "America/New_York", "2026-11-01T04:45:00Z", 6),
        [
            "2026-11-01T05:00:00Z",
            "2026-11-01T05:30:00Z",
            "2026-11-01T06:00:00Z",
            "2026-11-01T06:30:00Z",
            "2026-11-01T07:00:00Z",
            "2026-11-01T07:30:00Z"
        ]
    );
    assert_eq!(
        fires("*/30 * * * *", "America/New_York", "2026-03-08T05:45:00Z", 4),
        ["2026-03-08T06:00:00Z", "2026-03-08T06:30:00Z", "2026-03-08T07:00:00Z", "2026-03-08T07:30:00Z"]
    );
}

// ------------------------------------------------------------ DST: London

#[test]
fn london_gap_and_overlap() {
    assert_eq!(
        fires("30 1 * * *", "Europe/London", "2026-03-28T12:00:00Z", 2),
        ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]
    );
    assert_eq!(
        fires("30 1 * * *", "Europe/London", "2026-10-24T12:00:00Z", 2),
        ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
    );
}

// ------------------------------------------------------ DST: Lord Howe (30 min)

#[test]
fn lord_howe_transitions_are_what_we_pin() {
    // Verified against chrono-tz: +11:00 -> +10:30 at 2026-04-04T15:00Z
    // (02:00 -> 01:30 local on 2026-04-05), +10:30 -> +11:00 at
    // 2026-10-03T15:30Z (02:00 -> 02:30 local on 2026-10-04).
    let s = sched("* * * * *", "Australia/Lord_Howe");
    let off = |ts: &str| s.offset_at(at(ts).timestamp()).unwrap();
    assert_eq!(off("2026-04-04T14:59:59Z"), 39_600);
    assert_eq!(off("2026-04-04T15:00:00Z"), 37_800);
    assert_eq!(off("2026-10-03T15:29:59Z"), 37_800);
    assert_eq!(off("2026-10-03T15:30:00Z"), 39_600);
}

#[test]
fn lord_howe_spring_forward_half_hour_gap() {
    assert_eq!(
        fires("15 2 * * *", "Australia/Lord_Howe", "2026-10-02T00:00:00Z", 3),
        ["2026-10-02T15:45:00Z", "2026-10-03T15:30:00Z", "2026-10-04T15:15:00Z"]
    );
    // Wildcard-hour: 02:00 and 02:15 do not exist that night.
    assert_eq!(
        fires("*/15 * * * *", "Australia/Lord_Howe", "2026-10-03T15:00:00Z", 3),
        ["2026-10-03T15:15:00Z", "2026-10-03T15:30:00Z", "2026-10-03T15:45:00Z"]
    );
}

#[test]
fn lord_howe_fall_back_half_hour_overlap() {
    assert_eq!(
        fires("45 1 * * *", "Australia/Lord_Howe", "2026-04-03T00:00:00Z", 3),
        ["2026-04-03T14:45:00Z", "2026-04-04T14:45:00Z", "2026-04-05T15:15:00Z"]
    );
    // Wildcard-hour: 01:45 local occurs at both +11:00 and +10:30.
    assert_eq!(
        fires("45 * * * *", "Australia/Lord_Howe", "2026-04-04T14:00:00Z", 3),
        ["2026-04-04T14:45:00Z", "2026-04-04T15:15:00Z", "2026-04-04T16:15:00Z"]
    );
}

// ------------------------------------------------------------- plain cases

#[test]
fn tokyo_daily() {
    assert_eq!(next("0 7 * * *", "Asia/Tokyo", "2026-11-22T12:00:00Z"), "2026-11-22T22:00:00Z");
}

#[test]
fn weekdays_skip_the_weekend() {
    assert_eq!(at("2026-11-20T04:00:00Z").weekday(), Weekday::Fri);
    assert_eq!(next("30 3 * * 1-5", "UTC", "2026-11-20T04:00:00Z"), "2026-11-23T03:30:00Z");
    assert_eq!(next("30 3 * * MON-FRI", "UTC", "2026-11-20T04:00:00Z"), "2026-11-23T03:30:00Z");
}

#[test]
fn sunday_is_zero_and_seven() {
    for expr in ["0 0 * * 0", "0 0 * * 7", "0 0 * * sun", "@weekly"] {
        let got = sched(expr, "UTC").next_after(at("2026-11-20T04:00:00Z")).unwrap();
        assert_eq!(rfc(got), "2026-11-22T00:00:00Z", "{expr}");
        assert_eq!(got.weekday(), Weekday::Sun);
    }
    // 5-7 is Friday, Saturday, Sunday.
    assert_eq!(
        fires("0 0 * * 5-7", "UTC", "2026-11-18T00:00:00Z", 4),
        ["2026-11-20T00:00:00Z", "2026-11-21T00:00:00Z", "2026-11-22T00:00:00Z", "2026-11-27T00:00:00Z"]
    );
}

#[test]
fn vixie_day_or_rule() {
    // Restricted day-of-month and day-of-week: either matches.
    assert_eq!(
        fires("0 0 13 * 5", "UTC", "2026-11-01T00:00:00Z", 8),
        [
            "2026-11-06T00:00:00Z",
            "2026-11-13T00:00:00Z",
            "2026-11-20T00:00:00Z",
            "2026-11-27T00:00:00Z",
            "2026-12-04T00:00:00Z",
            "2026-12-11T00:00:00Z",
            "2026-12-13T00:00:00Z",
            "2026-12-18T00:00:00Z"
        ]
    );
    // Day-of-month starting with `*` means AND: odd days that are Fridays.
    assert_eq!(
        fires("0 0 */2 * 5", "UTC", "2026-11-01T00:00:00Z", 3),
        ["2026-11-13T00:00:00Z", "2026-11-27T00:00:00Z", "2026-12-11T00:00:00Z"]
    );
}

#[test]
fn seconds_field() {
    assert_eq!(
        fires("*/10 * * * * *", "UTC", "2026-01-01T00:00:05Z", 7),
        [
            "2026-01-01T00:00:10Z",
            "2026-01-01T00:00:20Z",
            "2026-01-01T00:00:30Z",
            "2026-01-01T00:00:40Z",
            "2026-01-01T00:00:50Z",
            "2026-01-01T00:01:00Z",
            "2026-01-01T00:01:10Z"
        ]
    );
    assert_eq!(next("30 15 10 * * *", "UTC", "2026-01-01T10:15:30Z"), "2026-01-02T10:15:30Z");
    // Sub-second start: a fire at the same whole second is not "after".
    let s = sched("* * * * * *", "UTC");
    let t = at("2026-01-01T00:00:00.5Z");
    assert_eq!(rfc(s.next_after(t).unwrap()), "2026-01-01T00:00:01Z");
}

#[test]
fn macros() {
    let cases = [
        ("@yearly", "2027-01-01T00:00:00Z"),
        ("@annually", "2027-01-01T00:00:00Z"),
        ("@monthly", "2026-12-01T00:00:00Z"),
        ("@weekly", "2026-11-22T00:00:00Z"),
        ("@daily", "2026-11-21T00:00:00Z"),
        ("@midnight", "2026-11-21T00:00:00Z"),
        ("@hourly", "2026-11-20T05:00:00Z"),
        ("  @DAILY\t", "2026-11-21T00:00:00Z"),
    ];
    for (expr, want) in cases {
        assert_eq!(next(expr, "UTC", "2026-11-20T04:00:00Z"), want, "{expr}");
    }
    assert!(sched("@hourly", "UTC").fields.wildcard_hour);
    assert!(!sched("@daily", "UTC").fields.wildcard_hour);
}

#[test]
fn names_lists_and_steps() {
    assert_eq!(
        fires("0 12 1 jan,Jul *", "UTC", "2026-02-01T00:00:00Z", 2),
        ["2026-07-01T12:00:00Z", "2027-01-01T12:00:00Z"]
    );
    assert_eq!(
        fires("0 9-17/4 * * *", "UTC", "2026-01-01T00:00:00Z", 4),
        ["2026-01-01T09:00:00Z", "2026-01-01T13:00:00Z", "2026-01-01T17:00:00Z", "2026-01-02T09:00:00Z"]
    );
    // `a/n` is `a-max/n`.
    assert_eq!(
        fires("50/5 23 * * *", "UTC", "2026-01-01T00:00:00Z", 3),
        ["2026-01-01T23:50:00Z", "2026-01-01T23:55:00Z", "2026-01-02T23:50:00Z"]
    );
    assert_eq!(
        fires("0 0 1 FEB-APR/2 *", "UTC", "2026-01-01T00:00:00Z", 3),
        ["2026-02-01T00:00:00Z", "2026-04-01T00:00:00Z", "2027-02-01T00:00:00Z"]
    );
    assert_eq!(
        fires("5,10-12,*/30 0 1 1 *", "UTC", "2026-01-01T00:00:00Z", 6),
        [
            "2026-01-01T00:05:00Z",
            "2026-01-01T00:10:00Z",
            "2026-01-01T00:11:00Z",
            "2026-01-01T00:12:00Z",
            "2026-01-01T00:30:00Z",
            "2027-01-01T00:00:00Z"
        ]
    );
    // Tabs and runs of spaces separate fields.
    assert_eq!(next(" 0\t\t7  * *   * ", "UTC", "2026-01-01T00:00:00Z"), "2026-01-01T07:00:00Z");
    assert_eq!(sched(" 0\t7 * * * ", "UTC").expression(), "0\t7 * * *");
}

#[test]
fn leap_day_and_month_ends() {
    assert_eq!(next("0 0 29 2 *", "UTC", "2026-03-01T00:00:00Z"), "2028-02-29T00:00:00Z");
    // Across the non-leap year 2100: eight years between leap days.
    assert_eq!(next("0 0 29 2 *", "UTC", "2096-03-01T00:00:00Z"), "2104-02-29T00:00:00Z");
    // February 29th on a Sunday (AND rule): 40 years between 2088 and 2128.
    assert_eq!(next("0 0 29 2 */7", "UTC", "2088-03-01T00:00:00Z"), "2128-02-29T00:00:00Z");
    assert_eq!(fires("0 0 31 * *", "UTC", "2026-01-31T12:00:00Z", 2), ["2026-03-31T00:00:00Z", "2026-05-31T00:00:00Z"]);
}

#[test]
fn ten_thousand_seconds_are_fast() {
    let s = sched("* * * * * *", "America/New_York");
    let start = at("2026-11-01T05:00:00Z");
    let started = std::time::Instant::now();
    let all: Vec<_> = s.iter_after(start).take(10_000).collect();
    assert_eq!(all.len(), 10_000);
    for (i, x) in all.iter().enumerate() {
        assert_eq!(x.timestamp(), start.timestamp() + 1 + i as i64);
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn accessors_and_describe() {
    let s = sched("  30 3 * * 1-5 ", "Asia/Tokyo");
    assert_eq!(s.expression(), "30 3 * * 1-5");
    assert_eq!(s.timezone(), chrono_tz::Asia::Tokyo);
    let cases = [
        ("15 3 * * *", "at 03:15 every day"),
        ("* * * * *", "every minute"),
        ("*/15 * * * *", "every 15 minutes"),
        ("0 7 * * 1-5", "at 07:00 on Monday to Friday"),
        ("0 7 * * MON,WED,FRI", "at 07:00 on Monday, Wednesday and Friday"),
        ("0 0 * * 5-7", "at 00:00 on Friday to Sunday"),
        ("0 * * * *", "every hour"),
        ("@hourly", "every hour"),
        ("30 * * * *", "every hour at 30 minutes past"),
        ("0 9,17 * * *", "at 09:00 and 17:00 every day"),
        ("0 0 1 * *", "at 00:00 on day 1 of the month"),
        ("0 0 1 1 *", "at 00:00 on day 1 of the month in January"),
        ("0 0 13 * 5", "at 00:00 on day 13 of the month or on Friday"),
        ("* * * * * *", "every second"),
        ("*/10 * * * * *", "every 10 seconds"),
        ("5 30 2 * * *", "at 02:30:05 every day"),
        ("*/7 * * * *", "*/7 * * * *"),
        ("0 0 */2 * 5", "0 0 */2 * 5"),
    ];
    for (expr, want) in cases {
        assert_eq!(sched(expr, "UTC").describe(), want, "{expr}");
    }
}

// -------------------------------------------------------------- validation

#[test]
fn rejects_wrong_field_count() {
    assert_eq!(
        err("* * * *"),
        "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds, got 4"
    );
    assert!(err("* * * * * * *").ends_with("got 7"));
}

#[test]
fn rejects_empty_and_too_long() {
    assert_eq!(err(""), "empty expression");
    assert_eq!(err(" \t "), "empty expression");
    let long = format!("{}* * * * *", " ".repeat(300));
    assert_eq!(err(&long), "expression is too long (309 characters, at most 256)");
}

#[test]
fn rejects_out_of_range_values() {
    assert_eq!(err("0 24 * * *"), "hour: 24 is out of range 0-23");
    assert_eq!(err("60 * * * *"), "minute: 60 is out of range 0-59");
    assert_eq!(err("60 * * * * *"), "second: 60 is out of range 0-59");
    assert_eq!(err("0 0 0 * *"), "day-of-month: 0 is out of range 1-31");
    assert_eq!(err("0 0 32 * *"), "day-of-month: 32 is out of range 1-31");
    assert_eq!(err("0 0 * 13 *"), "month: 13 is out of range 1-12");
    assert_eq!(err("0 0 * * 8"), "day-of-week: 8 is out of range 0-7");
    assert_eq!(err("0 1-99 * * *"), "hour: 99 is out of range 0-23");
    assert_eq!(err("99999999999999999999 * * * *"), "minute: 99999999999999999999 is out of range 0-59");
}

#[test]
fn rejects_bad_steps() {
    assert_eq!(err("*/0 * * * *"), "minute: step must be at least 1");
    assert_eq!(err("0 1-5/0 * * *"), "hour: step must be at least 1");
    assert_eq!(err("*/61 * * * *"), "minute: step 61 is out of range 1-60");
    assert_eq!(err("*/x * * * *"), "minute: invalid value \"x\" (expected a number in 1-60)");
    assert_eq!(err("*/5/2 * * * *"), "minute: invalid value \"5/2\" (expected a number in 1-60)");
    // The full span is allowed and selects only the start value.
    assert_eq!(next("*/60 * * * *", "UTC", "2026-01-01T00:30:00Z"), "2026-01-01T01:00:00Z");
}

#[test]
fn rejects_reversed_range() {
    assert_eq!(err("0 0 * * 5-1"), "day-of-week: range 5-1 is reversed");
    assert_eq!(err("0 0 * * FRI-MON"), "day-of-week: range 5-1 is reversed");
    assert_eq!(err("0 0 * DEC-JAN *"), "month: range 12-1 is reversed");
}

#[test]
fn rejects_empty_list_items() {
    assert_eq!(err("1,,2 * * * *"), "minute: empty list item in \"1,,2\"");
    assert_eq!(err("0 1, * * *"), "hour: empty list item in \"1,\"");
    assert_eq!(err("0 0 ,1 * *"), "day-of-month: empty list item in \",1\"");
}

#[test]
fn rejects_unknown_names_and_garbage() {
    assert_eq!(err("0 0 * * FOO"), "day-of-week: unknown name \"FOO\" (expected a name SUN-SAT or a number in 0-7)");
    assert_eq!(err("0 0 * JANUARY *"), "month: unknown name \"JANUARY\" (expected a name JAN-DEC or a number in 1-12)");
    assert_eq!(err("0 MON * * *"), "hour: invalid value \"MON\" (expected a number in 0-23)");
    assert_eq!(err("1x * * * *"), "minute: invalid value \"1x\" (expected a number in 0-59)");
    assert_eq!(err("0 0 * * -1"), "day-of-week: invalid value \"\" (expected a number in 0-7 or a name SUN-SAT)");
    assert_eq!(err("0 0 * * 1.5"), "day-of-week: invalid value \"1.5\" (expected a number in 0-7 or a name SUN-SAT)");
    assert_eq!(err("0 0 ** * *"), "day-of-month: invalid value \"**\" (expected a number in 1-31)");
}

#[test]
fn rejects_macros() {
    assert_eq!(err("@reboot"), "@reboot is not supported: sundial only runs time-based schedules");
    assert!(err("@fortnightly").starts_with("unknown macro \"@fortnightly\""));
}

#[test]
fn rejects_schedules_that_never_fire() {
    assert_eq!(err("0 0 30 2 *"), "never fires: day-of-month 30 does not exist in February");
    assert_eq!(err("0 0 31 4,6 *"), "never fires: day-of-month 31 does not exist in April or June");
    assert_eq!(err("0 0 30,31 FEB *"), "never fires: day-of-month 30,31 does not exist in February");
    // Fine: February 29th exists in leap years; Vixie OR with weekdays; 31st in May.
    sched("0 0 29 2 *", "UTC");
    sched("0 0 30 2 1", "UTC");
    sched("0 0 31 4,5 *", "UTC");
}

#[test]
fn rejects_unknown_time_zone() {
    let e = Schedule::parse("* * * * *", "Mars/Olympus").unwrap_err();
    assert_eq!(e.to_string(), "unknown time zone \"Mars/Olympus\" (expected an IANA name such as Europe/London)");
    assert_eq!(e, ScheduleError::UnknownTimeZone("Mars/Olympus".into()));
    assert_eq!(parse_timezone("Asia/Tokyo").unwrap(), chrono_tz::Asia::Tokyo);
    assert_eq!(parse_timezone("UTC").unwrap(), chrono_tz::UTC);
    assert!(parse_timezone("").is_err());
}

// ---------------------------------------------------------- property tests

const ZONES: [&str; 16] = [
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "America/St_Johns",
    "Pacific/Chatham",
    "Asia/Kathmandu",
    "UTC",
    "Asia/Tokyo",
    "Europe/Berlin",
    "America/Los_Angeles",
    "Australia/Sydney",
    "America/Santiago",
    "Europe/Dublin",
    "Antarctica/Troll",
    "Africa/Casablanca",
];

fn item(min: u32, max: u32) -> BoxedStrategy<String> {
    let span = max - min + 1;
    prop_oneof![
        Just("*".to_string()),
        (1..=span).prop_map(|n| format!("*/{n}")),
        (min..=max).prop_map(|a| a.to_string()),
        (min..=max, min..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        (min..=max, min..=max, 1..=span).prop_map(|(a, b, n)| format!("{}-{}/{n}", a.min(b), a.max(b))),
        (min..=max, 1..=span).prop_map(|(a, n)| format!("{a}/{n}")),
    ]
    .boxed()
}

fn field(min: u32, max: u32) -> BoxedStrategy<String> {
    prop_oneof![
        3 => item(min, max),
        1 => prop::collection::vec(item(min, max), 1..=3).prop_map(|v| v.join(",")),
    ]
    .boxed()
}

/// Random expressions, biased towards the small-hours times DST touches.
fn expression(with_seconds: bool) -> impl Strategy<Value = String> {
    let hour = prop_oneof![
        2 => field(0, 23),
        1 => (0u32..=3).prop_map(|h| h.to_string()),
        1 => Just("*".to_string()),
    ];
    let days = prop_oneof![
        3 => Just(("*".to_string(), "*".to_string(), "*".to_string())),
        1 => (field(1, 31), field(1, 12), field(0, 7)),
    ];
    let seconds = if with_seconds {
        prop_oneof![Just("0".to_string()), field(0, 59)].prop_map(|s| format!("{s} ")).boxed()
    } else {
        Just(String::new()).boxed()
    };
    (seconds, field(0, 59), hour, days).prop_map(|(s, m, h, (dom, mon, dow))| format!("{s}{m} {h} {dom} {mon} {dow}"))
}

/// A start instant in 2025-2027, or one within hours of a transition.
fn start(zone: &str, base: i64, near_transition: bool, back: i64) -> i64 {
    let s = sched("* * * * *", zone);
    if near_transition {
        let o = s.offset_at(base).unwrap();
        let mut ts = base;
        while ts < base + 400 * 86_400 {
            ts += 3600;
            if s.offset_at(ts).unwrap() != o {
                return s.first_change(ts - 3600, ts, o).unwrap() - back;
            }
        }
    }
    base
}

const Y2025: i64 = 1_735_689_600;
const THREE_YEARS: i64 = 3 * 365 * 86_400;

fn is_gap_transition(s: &Schedule, x: i64) -> bool {
    s.offset_at(x - 1).unwrap() < s.offset_at(x).unwrap()
}

fn local(s: &Schedule, x: i64) -> NaiveDateTime {
    naive_from_secs(x + s.offset_at(x).unwrap()).unwrap()
}

/// Brute-force oracle for the DST policy at a given granularity.
fn fires_at(s: &Schedule, x: i64, step: i64) -> bool {
    let n = local(s, x);
    let f = &s.fields;
    if f.wildcard_hour {
        return f.matches(n);
    }
    let first_occurrence = match s.timezone.from_local_datetime(&n) {
        LocalResult::Single(d) => d.timestamp() == x,
        LocalResult::Ambiguous(a, b) => a.timestamp().min(b.timestamp()) == x,
        LocalResult::None => false,
    };
    if f.matches(n) && first_occurrence {
        return true;
    }
    // A transition instant fires for every matching local time in the gap.
    if is_gap_transition(s, x) {
        let gap_start = x + s.offset_at(x - 1).unwrap();
        let gap_end = x + s.offset_at(x).unwrap();
        let mut l = gap_start;
        while l < gap_end {
            if f.matches(naive_from_secs(l).unwrap()) {
                return true;
            }
            l += step;
        }
    }
    false
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn successive_fires_are_increasing_and_stable(
        expr in prop_oneof![3 => expression(false), 1 => expression(true)],
        zone in prop::sample::select(&ZONES[..]),
        base in Y2025..Y2025 + THREE_YEARS,
        near in any::<bool>(),
        back in -3 * 3600i64..6 * 3600,
    ) {
        let s = match Schedule::parse(&expr, zone) {
            Ok(s) => s,
            Err(ScheduleError::NeverFires(_)) => return Ok(()),
            Err(e) => panic!("{expr:?}: {e}"),
        };
        let t0 = start(zone, base, near, back);
        let t0 = DateTime::from_timestamp(t0, 0).unwrap();
        let all: Vec<DateTime<Utc>> = s.iter_after(t0).take(50).collect();
        prop_assert_eq!(all.len(), 50, "{} in {} ran out", expr, zone);
        let mut prev = t0;
        let mut seen_local = std::collections::HashSet::new();
        for &x in &all {
            prop_assert!(x > prev, "{} in {}: {} after {}", expr, zone, x, prev);
            // Stable from any point in [prev, x): same next fire.
            prop_assert_eq!(s.next_after(prev), Some(x));
            let mid = prev + (x - prev) / 2;
            prop_assert_eq!(s.next_after(mid), Some(x), "{} in {} from {}", expr, zone, mid);
            prop_assert_eq!(s.next_after(x - chrono::TimeDelta::seconds(1)), Some(x));
            // Every fire is a matching local time, or a gap-mapped transition
            // instant of a fixed-time job.
            let ts = x.timestamp();
            let n = local(&s, ts);
            prop_assert!(
                s.fields.matches(n) || (!s.fields.wildcard_hour && is_gap_transition(&s, ts)),
                "{} in {}: {} (local {}) does not match", expr, zone, x, n
            );
            if !s.fields.wildcard_hour {
                prop_assert!(seen_local.insert(n), "{} in {}: local {} fired twice", expr, zone, n);
            }
            prev = x;
        }
    }

    #[test]
    fn matches_brute_force_oracle_near_transitions(
        expr in prop_oneof![3 => expression(false), 1 => expression(true)],
        zone in prop::sample::select(&ZONES[..]),
        base in Y2025..Y2025 + THREE_YEARS,
        back in -3 * 3600i64..4 * 3600,
    ) {
        let s = match Schedule::parse(&expr, zone) {
            Ok(s) => s,
            Err(ScheduleError::NeverFires(_)) => return Ok(()),
            Err(e) => panic!("{expr:?}: {e}"),
        };
        let t0 = start(zone, base, true, back);
        // Seconds-level schedules: check second by second over 6 hours;
        // otherwise minute by minute over 2 days (all fires and transitions
        // of these zones fall on whole minutes).
        let (step, window) = if s.fields.has_seconds { (1, 6 * 3600) } else { (60, 2 * 86_400) };
        let mut expected = Vec::new();
        let mut x = (t0.div_euclid(step) + 1) * step;
        while x <= t0 + window {
            if fires_at(&s, x, step) {
                expected.push(x);
            }
            x += step;
        }
        let got: Vec<i64> = s
            .iter_after(DateTime::from_timestamp(t0, 0).unwrap())
            .map(|d| d.timestamp())
            .take_while(|x| *x <= t0 + window)
            .collect();
        prop_assert_eq!(got, expected, "{} in {} from {}", expr, zone, t0);
    }
}

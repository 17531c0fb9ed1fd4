//! Short English descriptions of schedules for operators.
//!
//! Only common shapes are described; anything else returns `None` and the
//! caller shows the expression itself, which is better than a misleading
//! paraphrase.

use super::Fields;

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

pub(super) fn month_name(month: u32) -> &'static str {
    MONTHS.get(month.wrapping_sub(1) as usize).copied().unwrap_or("?")
}

/// "a", "a and b", "a, b and c".
pub(super) fn join<S: AsRef<str>>(items: &[S], conjunction: &str) -> String {
    match items {
        [] => String::new(),
        [one] => one.as_ref().to_string(),
        [init @ .., last] => {
            let init: Vec<&str> = init.iter().map(AsRef::as_ref).collect();
            format!("{} {conjunction} {}", init.join(", "), last.as_ref())
        }
    }
}

fn full(mask: u64, min: u32, max: u32) -> bool {
    (min..=max).all(|v| mask & (1 << v) != 0)
}

fn values(mask: u64, max: u32) -> Vec<u32> {
    (0..=max).filter(|v| mask & (1 << v) != 0).collect()
}

fn single(mask: u64) -> Option<u32> {
    (mask.count_ones() == 1).then(|| mask.trailing_zeros())
}

/// `Some(n)` if the set is exactly `0, n, 2n, ...` with `n > 1` dividing
/// `span`, i.e. a true "every n" that does not skew at the wrap-around.
fn even_step(mask: u64, span: u32) -> Option<u32> {
    let vals = values(mask, span - 1);
    let step = *vals.get(1)?;
    let even = vals.first() == Some(&0)
        && span.is_multiple_of(step)
        && vals.len() as u32 == span / step
        && vals.iter().enumerate().all(|(i, v)| *v == i as u32 * step);
    even.then_some(step)
}

/// Weekday names Monday-first, collapsing runs of 3+ into "X to Y".
fn weekdays(mask: u64) -> String {
    let order = [1u32, 2, 3, 4, 5, 6, 0];
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < order.len() {
        if mask & (1 << order[i]) == 0 {
            i += 1;
            continue;
        }
        let start = i;
        while i + 1 < order.len() && mask & (1 << order[i + 1]) != 0 {
            i += 1;
        }
        let name = |k: usize| WEEKDAYS[order[k] as usize];
        match i - start {
            0 => parts.push(name(start).to_string()),
            1 => {
                parts.push(name(start).to_string());
                parts.push(name(i).to_string());
            }
            _ => parts.push(format!("{} to {}", name(start), name(i))),
        }
        i += 1;
    }
    join(&parts, "and")
}

fn days_of_month(mask: u64) -> String {
    let days: Vec<String> = values(mask, 31).iter().map(u32::to_string).collect();
    let noun = if days.len() == 1 { "day" } else { "days" };
    format!("{noun} {} of the month", join(&days, "and"))
}

/// The day part, e.g. "" (every day), " on Monday to Friday".
fn day_part(f: &Fields) -> Option<String> {
    let all_dom = full(f.days_of_month, 1, 31);
    let all_dow = full(f.days_of_week, 0, 6);
    let days = match (f.dom_restricted, f.dow_restricted) {
        (false, false) if all_dom && all_dow => String::new(),
        (false, true) if all_dom => format!(" on {}", weekdays(f.days_of_week)),
        (true, false) if all_dow => format!(" on {}", days_of_month(f.days_of_month)),
        (true, true) => format!(" on {} or on {}", days_of_month(f.days_of_month), weekdays(f.days_of_week)),
        _ => return None,
    };
    let months = if full(f.months, 1, 12) {
        String::new()
    } else {
        let names: Vec<&str> = values(f.months, 12).into_iter().map(month_name).collect();
        format!(" in {}", join(&names, "and"))
    };
    Some(format!("{days}{months}"))
}

pub(super) fn describe(f: &Fields) -> Option<String> {
    let days = day_part(f)?;
    let all_hours = full(f.hours, 0, 23);
    let all_minutes = full(f.minutes, 0, 59);
    let all_seconds = full(f.seconds, 0, 59);
    let zero_seconds = f.seconds == 1;

    // Frequent jobs: "every ..." plus an optional day restriction.
    if all_hours {
        let every = if all_seconds && all_minutes {
            Some("every second".to_string())
        } else if all_minutes && let Some(n) = even_step(f.seconds, 60) {
            Some(format!("every {n} seconds"))
        } else if zero_seconds && all_minutes {
            Some("every minute".to_string())
        } else if zero_seconds && let Some(n) = even_step(f.minutes, 60) {
            Some(format!("every {n} minutes"))
        } else if zero_seconds && f.minutes == 1 {
            Some("every hour".to_string())
        } else if zero_seconds && let Some(m) = single(f.minutes) {
            Some(format!("every hour at {m} minutes past"))
        } else {
            None
        };
        if let Some(every) = every {
            return Some(format!("{every}{days}"));
        }
    }

    // Fixed times of day: "at 09:00 and 17:30 every day".
    let second = single(f.seconds)?;
    let minute = single(f.minutes)?;
    let hours = values(f.hours, 23);
    if hours.len() > 6 {
        return None;
    }
    let times: Vec<String> = hours
        .iter()
        .map(|h| if second == 0 { format!("{h:02}:{minute:02}") } else { format!("{h:02}:{minute:02}:{second:02}") })
        .collect();
    let days = if days.is_empty() { " every day".to_string() } else { days };
    Some(format!("at {}{days}", join(&times, "and")))
}

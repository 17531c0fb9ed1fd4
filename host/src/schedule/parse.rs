//! Expression parsing and static validation.

use super::{Field, Fields, ScheduleError, days_in_month};

const MONTH_NAMES: [&str; 12] = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Static description of one field's syntax.
struct FieldSpec {
    field: Field,
    min: u32,
    max: u32,
    /// Names for the values `min..`, if the field accepts names.
    names: &'static [&'static str],
    /// Hint for error messages, e.g. "a name JAN-DEC".
    names_hint: &'static str,
}

const SECOND: FieldSpec = FieldSpec { field: Field::Second, min: 0, max: 59, names: &[], names_hint: "" };
const MINUTE: FieldSpec = FieldSpec { field: Field::Minute, min: 0, max: 59, names: &[], names_hint: "" };
const HOUR: FieldSpec = FieldSpec { field: Field::Hour, min: 0, max: 23, names: &[], names_hint: "" };
const DAY_OF_MONTH: FieldSpec = FieldSpec { field: Field::DayOfMonth, min: 1, max: 31, names: &[], names_hint: "" };
const MONTH: FieldSpec =
    FieldSpec { field: Field::Month, min: 1, max: 12, names: &MONTH_NAMES, names_hint: "a name JAN-DEC" };
// 0-7 like Vixie cron: 7 is a second spelling of Sunday, folded into bit 0.
const DAY_OF_WEEK: FieldSpec =
    FieldSpec { field: Field::DayOfWeek, min: 0, max: 7, names: &DAY_NAMES, names_hint: "a name SUN-SAT" };

/// Expands a macro into its 5-field equivalent.
fn expand_macro(expression: &str) -> Result<&'static str, ScheduleError> {
    match expression.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => Ok("0 0 1 1 *"),
        "@monthly" => Ok("0 0 1 * *"),
        "@weekly" => Ok("0 0 * * 0"),
        "@daily" | "@midnight" => Ok("0 0 * * *"),
        "@hourly" => Ok("0 * * * *"),
        "@reboot" => Err(ScheduleError::RebootUnsupported),
        _ => Err(ScheduleError::UnknownMacro(expression.to_string())),
    }
}

/// Parses a trimmed, non-empty expression into field bitsets.
pub(super) fn parse_expression(expression: &str) -> Result<Fields, ScheduleError> {
    let expression = if expression.starts_with('@') { expand_macro(expression)? } else { expression };
    let parts: Vec<&str> = expression.split_ascii_whitespace().collect();
    let (seconds, rest, has_seconds) = match parts.as_slice() {
        [_, _, _, _, _] => ("0", parts.as_slice(), false),
        [s, rest @ ..] if rest.len() == 5 => (*s, rest, true),
        _ => return Err(ScheduleError::FieldCount(parts.len())),
    };
    let [minute, hour, dom, month, dow] = rest else {
        return Err(ScheduleError::FieldCount(parts.len()));
    };

    let days_of_week = parse_field(dow, &DAY_OF_WEEK)?;
    let fields = Fields {
        seconds: parse_field(seconds, &SECOND)?,
        minutes: parse_field(minute, &MINUTE)?,
        hours: parse_field(hour, &HOUR)?,
        days_of_month: parse_field(dom, &DAY_OF_MONTH)?,
        months: parse_field(month, &MONTH)?,
        // Fold 7 (Sunday) into 0.
        days_of_week: (days_of_week | days_of_week >> 7) & 0x7f,
        dom_restricted: !dom.starts_with('*'),
        dow_restricted: !dow.starts_with('*'),
        wildcard_hour: hour.starts_with('*'),
        has_seconds,
    };
    check_fires(&fields, dom)?;
    Ok(fields)
}

/// Rejects day-of-month/month combinations that can never occur. Only
/// relevant when the day-of-month set must match (AND rule, i.e. day-of-week
/// starts with `*`); under the OR rule the weekdays alone fire every week,
/// and a day-of-month starting with `*` always contains the 1st.
fn check_fires(fields: &Fields, dom_text: &str) -> Result<(), ScheduleError> {
    if fields.dow_restricted {
        return Ok(());
    }
    // February counts as 29 days: `0 0 29 2 *` is valid, it fires in leap years.
    let possible = (1..=12u32).any(|m| {
        let days = if m == 2 { 29 } else { days_in_month(2001, m) };
        let valid = ((1u64 << (days + 1)) - 1) & !1;
        fields.months & (1 << m) != 0 && fields.days_of_month & valid != 0
    });
    if possible {
        return Ok(());
    }
    let months: Vec<&str> =
        (1..=12u32).filter(|m| fields.months & (1 << m) != 0).map(super::describe::month_name).collect();
    Err(ScheduleError::NeverFires(format!(
        "day-of-month {dom_text} does not exist in {}",
        super::describe::join(&months, "or")
    )))
}

/// Parses one field into a bitset.
fn parse_field(text: &str, spec: &FieldSpec) -> Result<u64, ScheduleError> {
    let mut mask = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(ScheduleError::EmptyListItem { field: spec.field, text: text.to_string() });
        }
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => (base, Some(parse_step(step, spec)?)),
            None => (item, None),
        };
        let (start, end) = if base == "*" {
            (spec.min, spec.max)
        } else if let Some((a, b)) = base.split_once('-') {
            let (start, end) = (parse_value(a, spec)?, parse_value(b, spec)?);
            if start > end {
                return Err(ScheduleError::ReversedRange { field: spec.field, start, end });
            }
            (start, end)
        } else {
            let start = parse_value(base, spec)?;
            // `a/n` means `a-max/n`, as in Vixie cron.
            (start, if step.is_some() { spec.max } else { start })
        };
        let step = step.unwrap_or(1);
        let mut value = start;
        while value <= end {
            mask |= 1 << value;
            value += step;
        }
    }
    Ok(mask)
}

fn parse_step(text: &str, spec: &FieldSpec) -> Result<u32, ScheduleError> {
    let span = spec.max - spec.min + 1;
    let out_of_range = || ScheduleError::StepOutOfRange { field: spec.field, step: text.to_string(), max: span };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ScheduleError::InvalidValue {
            field: spec.field,
            value: text.to_string(),
            min: 1,
            max: span,
            names: "",
        });
    }
    // Long digit strings cannot fit any field; avoid overflow in parsing.
    if text.len() > 9 {
        return Err(out_of_range());
    }
    let step: u32 = text.parse().map_err(|_| out_of_range())?;
    if step == 0 {
        return Err(ScheduleError::ZeroStep { field: spec.field });
    }
    if step > span {
        return Err(out_of_range());
    }
    Ok(step)
}

fn parse_value(text: &str, spec: &FieldSpec) -> Result<u32, ScheduleError> {
    let out_of_range =
        || ScheduleError::OutOfRange { field: spec.field, value: text.to_string(), min: spec.min, max: spec.max };
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        if text.len() > 9 {
            return Err(out_of_range());
        }
        let value: u32 = text.parse().map_err(|_| out_of_range())?;
        if value < spec.min || value > spec.max {
            return Err(out_of_range());
        }
        return Ok(value);
    }
    if !spec.names.is_empty() && !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphabetic()) {
        let upper = text.to_ascii_uppercase();
        return match spec.names.iter().position(|n| *n == upper) {
            // Names are listed from `min` (SUN = 0, JAN = 1).
            Some(i) => Ok(spec.min + i as u32),
            None => Err(ScheduleError::UnknownName {
                field: spec.field,
                name: text.to_string(),
                expected: spec.names_hint,
                min: spec.min,
                max: spec.max,
            }),
        };
    }
    Err(ScheduleError::InvalidValue {
        field: spec.field,
        value: text.to_string(),
        min: spec.min,
        max: spec.max,
        names: if spec.names.is_empty() {
            ""
        } else if spec.field == Field::Month {
            " or a name JAN-DEC"
        } else {
            " or a name SUN-SAT"
        },
    })
}

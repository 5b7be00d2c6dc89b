//! Dates and lifecycle phases: joiner by start date, leaver by status or end date.

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp, tz::TimeZone};

use super::index::HumanRecord;
use super::model::Phase;
use crate::api::EmploymentStatus;

/// Parses a `YYYY-MM-DD` date, rejecting impossible ones (`2026-02-30`).
pub fn parse_date(value: &str) -> Result<Date, String> {
    value
        .parse::<Date>()
        .map_err(|e| format!("{value:?} is not a valid YYYY-MM-DD date ({e})"))
}

/// Parses an RFC 3339 timestamp.
pub fn parse_timestamp(value: &str) -> Result<Timestamp, String> {
    value
        .parse::<Timestamp>()
        .map_err(|e| format!("{value:?} is not a valid RFC 3339 timestamp ({e})"))
}

/// Parses a Go-style duration such as `720h` or `1h30m`; `d` is a day of 24 hours (`90d`).
pub fn parse_duration(value: &str) -> Result<SignedDuration, String> {
    let bad = || format!("{value:?} is not a duration like 720h, 90m or 90d");
    let mut total = SignedDuration::ZERO;
    let mut rest = value.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        let unit = rest[digits..].chars().next().ok_or_else(bad)?;
        let seconds = match unit {
            'd' => 86400.0,
            'h' => 3600.0,
            'm' => 60.0,
            's' => 1.0,
            _ => return Err(bad()),
        };
        let part = SignedDuration::try_from_secs_f64(number * seconds).map_err(|_| bad())?;
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = &rest[digits + 1..];
    }
    Ok(total)
}

/// Midnight UTC at the start of `date`: the instant a start date takes effect.
pub fn start_of(date: Date) -> Timestamp {
    date.to_zoned(TimeZone::UTC)
        .map(|z| z.timestamp())
        .unwrap_or(Timestamp::MAX)
}

/// Midnight UTC after `date`: the instant an (inclusive) end date takes effect.
pub fn end_of(date: Date) -> Timestamp {
    date.tomorrow().map(start_of).unwrap_or(Timestamp::MAX)
}

/// The phase of a human at `now`, and the next instant it changes without an edit.
pub fn human_phase(rec: &HumanRecord, now: Timestamp) -> (Phase, Option<Timestamp>) {
    let ended = rec.end_date.map(end_of);
    if rec.status == EmploymentStatus::Terminated || ended.is_some_and(|end| end <= now) {
        return (Phase::Terminated, None);
    }
    let started = rec.start_date.map(start_of);
    if let Some(start) = started.filter(|start| *start > now) {
        // Not started yet, whatever HR's status says (an OnLeave record included).
        return (Phase::PreHire, Some(start));
    }
    match rec.status {
        EmploymentStatus::OnLeave => (Phase::OnLeave, ended),
        EmploymentStatus::PreHire if started.is_none() => (Phase::PreHire, None),
        EmploymentStatus::Active | EmploymentStatus::PreHire => (Phase::Active, ended),
        EmploymentStatus::Terminated => unreachable!("handled above"),
    }
}

/// The earlier of two optional instants.
pub fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(
            parse_duration("720h").unwrap(),
            SignedDuration::from_hours(720)
        );
        assert_eq!(
            parse_duration("1h30m").unwrap(),
            SignedDuration::from_mins(90)
        );
        assert_eq!(
            parse_duration("1.5h").unwrap(),
            SignedDuration::from_mins(90)
        );
        // Days, for review cadences (`every: 90d`), are 24 hours.
        assert_eq!(
            parse_duration("90d").unwrap(),
            SignedDuration::from_hours(90 * 24)
        );
        for bad in ["", "h", "10", "10w", "1h-", "abc"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn impossible_dates_are_rejected() {
        assert!(parse_date("2026-02-30").is_err());
        assert!(parse_date("2026-13-01").is_err());
        assert!(parse_date("2028-02-29").is_ok());
    }

    #[test]
    fn end_date_is_inclusive() {
        let d = parse_date("2026-12-01").unwrap();
        assert_eq!(
            end_of(d),
            "2026-12-02T00:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(
            start_of(d),
            "2026-12-01T00:00:00Z".parse::<Timestamp>().unwrap()
        );
    }
}

//! Effective times of HR events: RFC 3339 instants, or calendar dates read
//! in an explicit IANA time zone.
//!
//! A date-only termination takes effect at the *end* of that day in the zone
//! (the start of the next local day: the person works the whole day); any
//! other date-only event at the start of the day.

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

/// Where in the day a date-only effective date falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayBoundary {
    StartOfDay,
    EndOfDay,
}

/// Parses an IANA zone name such as `Europe/Oslo`.
/// What is wrong with a date in `year` in HR data: one far outside any
/// working life (before 1900 or after 2200) is a typo, not a plan.
pub fn implausible_year(year: i32, shown: impl std::fmt::Display) -> Option<String> {
    (!(1900..=2200).contains(&year))
        .then(|| format!("{shown} is outside 1900–2200; check the date"))
}

pub fn parse_zone(name: &str) -> Result<Tz, String> {
    if name.len() > 64 {
        return Err(
            "is longer than 64 characters; use an IANA zone name such as \"Europe/Oslo\"".into(),
        );
    }
    name.parse::<Tz>().map_err(|_| {
        format!(
            "unknown IANA time zone {}; use a name such as \"Europe/Oslo\" or \"UTC\"",
            crate::error::echo(name)
        )
    })
}

/// Parses a calendar date `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| format!("{} is not a date; use YYYY-MM-DD", crate::error::echo(s)))
}

/// Resolves an effective time. Empty means `now`; an RFC 3339 value is taken
/// as is; a date is placed at `boundary` in `zone`.
pub fn resolve_effective(
    value: &str,
    zone: Tz,
    boundary: DayBoundary,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(now);
    }
    if value.len() > 64 {
        return Err(
            "is longer than 64 characters; use an RFC 3339 timestamp or a date YYYY-MM-DD".into(),
        );
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        let day = match boundary {
            DayBoundary::StartOfDay => date,
            DayBoundary::EndOfDay => date
                .checked_add_days(Days::new(1))
                .ok_or_else(|| format!("date {value} is out of range"))?,
        };
        return local_day_start(day, zone)
            .ok_or_else(|| format!("date {value} has no start of day in {zone}"));
    }
    Err(format!(
        "{} is neither an RFC 3339 timestamp (2026-03-01T09:00:00+01:00) nor a date (2026-03-01)",
        crate::error::echo(value)
    ))
}

/// The first instant of `day` in `zone`. Where a DST change skips midnight,
/// the day starts at the first local time that exists.
pub fn local_day_start(day: NaiveDate, zone: Tz) -> Option<DateTime<Utc>> {
    for minutes in (0..=180).step_by(15) {
        let t = NaiveTime::from_hms_opt(0, 0, 0)?
            .overflowing_add_signed(chrono::Duration::minutes(minutes))
            .0;
        if let Some(local) = zone.from_local_datetime(&day.and_time(t)).earliest() {
            return Some(local.with_timezone(&Utc));
        }
    }
    None
}

/// The local calendar date of an instant in `zone`.
pub fn local_date(t: DateTime<Utc>, zone: Tz) -> NaiveDate {
    t.with_timezone(&zone).date_naive()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0)
            .single()
            .unwrap_or_default()
    }

    #[test]
    fn date_only_termination_ends_the_day_in_the_zone() -> Result<(), String> {
        let oslo = parse_zone("Europe/Oslo")?;
        let t = resolve_effective("2026-06-30", oslo, DayBoundary::EndOfDay, now())?;
        // Midnight 1 July in Oslo (UTC+2 in summer) is 22:00 UTC on 30 June.
        assert_eq!(t.to_rfc3339(), "2026-06-30T22:00:00+00:00");
        Ok(())
    }

    #[test]
    fn date_only_hire_starts_the_day_in_the_zone() -> Result<(), String> {
        let ny = parse_zone("America/New_York")?;
        let t = resolve_effective("2026-01-05", ny, DayBoundary::StartOfDay, now())?;
        assert_eq!(t.to_rfc3339(), "2026-01-05T05:00:00+00:00");
        Ok(())
    }

    #[test]
    fn explicit_timestamps_and_empty_values() -> Result<(), String> {
        let utc = parse_zone("UTC")?;
        let t = resolve_effective(
            "2026-03-01T09:30:00+01:00",
            utc,
            DayBoundary::EndOfDay,
            now(),
        )?;
        assert_eq!(t.to_rfc3339(), "2026-03-01T08:30:00+00:00");
        assert_eq!(
            resolve_effective("", utc, DayBoundary::StartOfDay, now())?,
            now()
        );
        Ok(())
    }

    #[test]
    fn a_day_whose_midnight_is_skipped_starts_when_it_exists() -> Result<(), String> {
        // America/Santiago skipped 00:00 -> 01:00 on 2022-09-11.
        let zone = parse_zone("America/Santiago")?;
        let day = parse_date("2022-09-11")?;
        let start = local_day_start(day, zone).ok_or("no start")?;
        assert_eq!(start.to_rfc3339(), "2022-09-11T04:00:00+00:00");
        Ok(())
    }

    #[test]
    fn rejects_garbage() -> Result<(), String> {
        let utc = parse_zone("UTC")?;
        assert!(resolve_effective("next tuesday", utc, DayBoundary::StartOfDay, now()).is_err());
        assert!(parse_zone("Mars/Olympus").is_err());
        Ok(())
    }
}

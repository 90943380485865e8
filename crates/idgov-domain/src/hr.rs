//! HR events as they arrive: validation, effective-time resolution and the
//! payload fingerprint that makes `(source, event_id)` an idempotency key.

use crate::error::{DomainError, FieldViolation};
use crate::identity::{AttributesPatch, text_problem, validate_employee_id};
use crate::time::{DayBoundary, parse_date, parse_zone, resolve_effective};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

string_enum!(
    /// The kind of an HR event.
    EventKind {
        Hire => "hire",
        Update => "update",
        Move => "move",
        Terminate => "terminate",
        Rehire => "rehire",
        Rescind => "rescind",
    }
);

string_enum!(
    /// What became of a recorded HR event.
    EventState {
        Applied => "applied",
        Scheduled => "scheduled",
        Superseded => "superseded",
        Rescinded => "rescinded",
        Rejected => "rejected",
    }
);

/// An HR event as received, before validation. Dates are still text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HrEventInput {
    pub source: String,
    pub event_id: String,
    pub kind: Option<EventKind>,
    pub employee_id: String,
    pub effective_at: String,
    pub time_zone: String,
    pub attrs: AttributesPatch,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub rescinds_event_id: String,
}

/// A validated HR event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HrEvent {
    pub source: String,
    pub event_id: String,
    pub kind: EventKind,
    pub employee_id: String,
    pub effective_at: DateTime<Utc>,
    /// The effective time as sent (empty: "now").
    pub effective_input: String,
    /// The zone a date-only value was read in.
    pub time_zone: String,
    pub attrs: AttributesPatch,
    pub rescinds_event_id: Option<String>,
    /// SHA-256 of the payload as sent; a different payload under the same
    /// key is a conflict, not a duplicate.
    pub fingerprint: String,
    /// Written by a roster snapshot: the snapshot's word about the person at
    /// its time ("works here, like this", or "does not work here"), folded
    /// by the state at that time rather than by the kind the diff chose.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_roster: bool,
    /// The fingerprint versions before 2026-12-01 gave the same payload,
    /// where it differs: they wrote an empty manager id (a cleared manager)
    /// as `null`. A re-send across the upgrade is still the same event, not
    /// a conflict. Known when the event is parsed; not stored.
    #[serde(skip)]
    pub earlier_fingerprint: Option<String>,
}

fn check_key_part(field: &str, value: &str, max: usize, v: &mut Vec<FieldViolation>) {
    if value.is_empty() {
        v.push(FieldViolation::new(field, "is required"));
    } else if let Some(p) = text_problem(value, max) {
        v.push(FieldViolation::new(field, p));
    }
}

impl HrEvent {
    /// Validates an event. `hr_zone` reads date-only values when the event
    /// names no zone; `now` resolves an empty effective time.
    pub fn parse(
        input: HrEventInput,
        hr_zone: Tz,
        now: DateTime<Utc>,
    ) -> Result<HrEvent, DomainError> {
        let mut v = Vec::new();
        check_key_part("event.source", &input.source, 128, &mut v);
        check_key_part("event.event_id", &input.event_id, 256, &mut v);
        if crate::roster::is_roster_event_id(&input.event_id) {
            v.push(FieldViolation::new(
                "event.event_id",
                format!(
                    "starts with {:?}, which idgov keeps for the events it makes from roster \
                     snapshots; give the event an id of your own",
                    crate::roster::EVENT_ID_PREFIX
                ),
            ));
        }
        if let Err(e) = validate_employee_id(&input.employee_id) {
            v.push(FieldViolation::new("event.employee_id", e));
        }
        let kind = match input.kind {
            Some(k) => Some(k),
            None => {
                v.push(FieldViolation::new(
                    "event.type",
                    "is required: hire, update, move, terminate, rehire or rescind",
                ));
                None
            }
        };
        let zone = if input.time_zone.trim().is_empty() {
            hr_zone
        } else {
            match parse_zone(&input.time_zone) {
                Ok(z) => z,
                Err(e) => {
                    v.push(FieldViolation::new("event.time_zone", e));
                    hr_zone
                }
            }
        };
        let boundary = if kind == Some(EventKind::Terminate) {
            DayBoundary::EndOfDay
        } else {
            DayBoundary::StartOfDay
        };
        // With no effective time, a hire or rehire takes effect on its start
        // date and a termination at the end of its end date.
        let implied = match (kind, input.effective_at.trim().is_empty()) {
            (Some(EventKind::Hire | EventKind::Rehire), true) => input.start_date.clone(),
            (Some(EventKind::Terminate), true) => input.end_date.clone(),
            _ => None,
        }
        .filter(|d| parse_date(d).is_ok());
        let effective_text = implied.as_deref().unwrap_or(&input.effective_at);
        let effective_at = match resolve_effective(effective_text, zone, boundary, now) {
            Ok(t) => t,
            Err(e) => {
                v.push(FieldViolation::new("event.effective_at", e));
                now
            }
        };
        let mut attrs = input.attrs.clone();
        for (field, raw, slot) in [
            (
                "event.attributes.start_date",
                &input.start_date,
                &mut attrs.start_date,
            ),
            (
                "event.attributes.end_date",
                &input.end_date,
                &mut attrs.end_date,
            ),
        ] {
            if let Some(s) = raw.as_deref().filter(|s| !s.trim().is_empty()) {
                match parse_date(s) {
                    Ok(d) => *slot = Some(d),
                    Err(e) => v.push(FieldViolation::new(field, e)),
                }
            }
        }
        if let Some(problem) = crate::time::implausible_year(
            chrono::Datelike::year(&effective_at),
            effective_at.to_rfc3339(),
        ) {
            v.push(FieldViolation::new("event.effective_at", problem));
        }
        // An empty end date sent takes the end date away (a termination's
        // own end date is its last day, not an attribute to clear).
        if kind != Some(EventKind::Terminate)
            && input
                .end_date
                .as_deref()
                .is_some_and(|s| s.trim().is_empty())
        {
            attrs.clear_end_date = true;
        }
        v.extend(attrs.validate("event.attributes", &input.employee_id));
        let rescinds = input.rescinds_event_id.trim().to_string();
        if let Some(p) = text_problem(&rescinds, 256) {
            v.push(FieldViolation::new("event.rescinds_event_id", p));
        }
        match kind {
            Some(EventKind::Rescind) => {
                if rescinds.is_empty() {
                    v.push(FieldViolation::new(
                        "event.rescinds_event_id",
                        "a rescind names the event_id of the future-dated event it cancels",
                    ));
                } else if rescinds == input.event_id {
                    v.push(FieldViolation::new(
                        "event.rescinds_event_id",
                        "an event cannot rescind itself",
                    ));
                }
            }
            Some(EventKind::Hire) | Some(EventKind::Rehire)
                if attrs.display_name.as_deref().unwrap_or("").is_empty()
                    && kind == Some(EventKind::Hire) =>
            {
                v.push(FieldViolation::new(
                    "event.attributes.display_name",
                    "a hire needs the person's name",
                ));
            }
            Some(EventKind::Update) | Some(EventKind::Move) if attrs.is_empty() => {
                v.push(FieldViolation::new(
                    "event.attributes",
                    "an update or move must change at least one attribute",
                ));
            }
            _ => {}
        }
        if kind != Some(EventKind::Rescind) && !rescinds.is_empty() {
            v.push(FieldViolation::new(
                "event.rescinds_event_id",
                "only a rescind event names an event to cancel",
            ));
        }
        match kind {
            Some(kind) if v.is_empty() => {
                let fingerprint = fingerprint(&input);
                let earlier_fingerprint = (input.attrs.manager_id == Some(None)).then(|| {
                    let mut before = input.clone();
                    before.attrs.manager_id = None;
                    self::fingerprint(&before)
                });
                Ok(HrEvent {
                    source: input.source,
                    event_id: input.event_id,
                    kind,
                    employee_id: input.employee_id,
                    effective_at,
                    effective_input: input.effective_at,
                    time_zone: zone.name().to_string(),
                    attrs,
                    rescinds_event_id: (!rescinds.is_empty()).then_some(rescinds),
                    fingerprint,
                    from_roster: false,
                    earlier_fingerprint,
                })
            }
            _ => Err(DomainError::invalid("the HR event is invalid", v)),
        }
    }
}

impl HrEvent {
    /// True when `stored` (the fingerprint of an event accepted under the
    /// same key) is this payload's, as this version or an earlier one
    /// computed it.
    pub fn same_payload(&self, stored: &str) -> bool {
        self.fingerprint == stored || self.earlier_fingerprint.as_deref() == Some(stored)
    }
}

/// SHA-256 over the canonical JSON of the input as sent.
pub fn fingerprint(input: &HrEventInput) -> String {
    let json = serde_json::to_vec(input).unwrap_or_default();
    hex::encode(Sha256::digest(json))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0)
            .single()
            .unwrap_or_default()
    }

    fn input(kind: EventKind) -> HrEventInput {
        HrEventInput {
            source: "workday".into(),
            event_id: "ev-1".into(),
            kind: Some(kind),
            employee_id: "E1".into(),
            attrs: AttributesPatch {
                display_name: Some("Ada".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn date_only_terminate_uses_the_event_zone() -> Result<(), DomainError> {
        let mut i = input(EventKind::Terminate);
        i.effective_at = "2026-06-30".into();
        i.time_zone = "Asia/Tokyo".into();
        let e = HrEvent::parse(i, chrono_tz::UTC, now())?;
        assert_eq!(e.effective_at.to_rfc3339(), "2026-06-30T15:00:00+00:00");
        Ok(())
    }

    #[test]
    fn every_problem_is_reported_by_field() {
        let i = HrEventInput {
            kind: None,
            employee_id: "*)(uid=*".into(),
            effective_at: "soon".into(),
            time_zone: "Atlantis/Capital".into(),
            start_date: Some("31/12/2026".into()),
            ..Default::default()
        };
        let err = HrEvent::parse(i, chrono_tz::UTC, now())
            .err()
            .map(|e| e.violations)
            .unwrap_or_default();
        let fields: Vec<_> = err.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "event.source",
                "event.event_id",
                "event.employee_id",
                "event.type",
                "event.time_zone",
                "event.effective_at",
                "event.attributes.start_date"
            ]
        );
    }

    #[test]
    fn an_event_cannot_take_a_roster_snapshots_id() {
        for id in ["roster:s2:E1", "ROSTER:s2:E1", "Roster:", "roster:"] {
            let mut i = input(EventKind::Update);
            i.event_id = id.into();
            let err = HrEvent::parse(i, chrono_tz::UTC, now())
                .err()
                .map(|e| e.violations)
                .unwrap_or_default();
            assert_eq!(err.len(), 1, "{id}: {err:?}");
            assert_eq!(err[0].field, "event.event_id");
            assert!(err[0].description.contains("roster"), "{err:?}");
        }
        for id in ["roster-1", "rostered:1", "s2:roster:E1", "roster"] {
            let mut i = input(EventKind::Update);
            i.event_id = id.into();
            assert!(
                HrEvent::parse(i, chrono_tz::UTC, now()).is_ok(),
                "{id} is an id of the feed's own"
            );
        }
    }

    #[test]
    fn dates_imply_the_effective_time() -> Result<(), DomainError> {
        let mut hire = input(EventKind::Hire);
        hire.start_date = Some("2026-09-01".into());
        let e = HrEvent::parse(hire, chrono_tz::Europe::Oslo, now())?;
        assert_eq!(e.effective_at.to_rfc3339(), "2026-08-31T22:00:00+00:00");
        let mut term = input(EventKind::Terminate);
        term.end_date = Some("2026-09-30".into());
        let e = HrEvent::parse(term, chrono_tz::UTC, now())?;
        assert_eq!(e.effective_at.to_rfc3339(), "2026-10-01T00:00:00+00:00");
        Ok(())
    }

    #[test]
    fn an_empty_end_date_takes_the_end_date_away_except_in_a_termination() -> Result<(), DomainError>
    {
        for (kind, clears) in [
            (EventKind::Update, true),
            (EventKind::Move, true),
            (EventKind::Hire, true),
            (EventKind::Terminate, false),
        ] {
            let mut i = input(kind);
            i.end_date = Some(" ".into());
            let e = HrEvent::parse(i, chrono_tz::UTC, now())?;
            assert_eq!(e.attrs.clear_end_date, clears, "{kind:?}");
            assert_eq!(e.attrs.end_date, None);
        }
        // Not sent: kept.
        let e = HrEvent::parse(input(EventKind::Update), chrono_tz::UTC, now())?;
        assert!(!e.attrs.clear_end_date);
        let base = crate::identity::Attributes {
            end_date: chrono::NaiveDate::from_ymd_opt(2026, 9, 30),
            ..crate::identity::Attributes::new_person(crate::Classification::Internal)
        };
        let clear = crate::identity::AttributesPatch {
            clear_end_date: true,
            ..Default::default()
        };
        assert_eq!(clear.apply_to(&base).end_date, None);
        assert_eq!(e.attrs.apply_to(&base).end_date, base.end_date);
        // Stored and read back alike; stored without the flag when unset.
        let json = serde_json::to_string(&clear).unwrap_or_default();
        let back: crate::identity::AttributesPatch =
            serde_json::from_str(&json).unwrap_or_default();
        assert!(back.clear_end_date, "{json}");
        let json = serde_json::to_string(&e.attrs).unwrap_or_default();
        assert!(!json.contains("clear_end_date"), "{json}");
        Ok(())
    }

    #[test]
    fn dates_outside_a_working_life_are_refused() {
        let mut i = input(EventKind::Hire);
        i.effective_at = "0001-01-01T00:00:00Z".into();
        i.end_date = Some("9999-12-31".into());
        let err = HrEvent::parse(i, chrono_tz::UTC, now())
            .err()
            .map(|e| e.violations)
            .unwrap_or_default();
        let fields: Vec<_> = err.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["event.effective_at", "event.attributes.end_date"]);
    }

    #[test]
    fn rescind_needs_a_target() {
        let i = input(EventKind::Rescind);
        let err = HrEvent::parse(i, chrono_tz::UTC, now())
            .err()
            .map(|e| e.violations)
            .unwrap_or_default();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].field, "event.rescinds_event_id");
    }

    #[test]
    fn fingerprint_ignores_nothing_in_the_payload() -> Result<(), DomainError> {
        let a = HrEvent::parse(input(EventKind::Hire), chrono_tz::UTC, now())?;
        let mut other = input(EventKind::Hire);
        other.attrs.department = Some("Sales".into());
        let b = HrEvent::parse(other, chrono_tz::UTC, now())?;
        assert_ne!(a.fingerprint, b.fingerprint);
        let again = HrEvent::parse(input(EventKind::Hire), chrono_tz::UTC, now())?;
        assert_eq!(a.fingerprint, again.fingerprint);
        Ok(())
    }
}

//! Conversions between `idgov.v1` messages and domain values.

use crate::app::ActivePolicy;
use crate::app::roster::{Outcome, SyncOutcome};
use chrono::{DateTime, Utc};
use idgov_domain::Classification;
use idgov_domain::FieldViolation;
use idgov_domain::grant::{Grant, RevokeReason, SourceKind};
use idgov_domain::guard::{HeldKind, HeldState, Verdict};
use idgov_domain::hr::{EventKind, EventState, HrEventInput};
use idgov_domain::identity::{AttributesPatch, BackgroundCheck, EmploymentType, Identity, Status};
use idgov_domain::roster::{ChangeKind, DiffCounts, RosterChange, RosterDiff, RosterEntry};
use idgov_proto::v1 as pb;
use idgov_store::{HeldChange, RecordedEvent};

pub fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

pub fn opt_ts(t: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    t.map(ts)
}

pub fn from_ts(t: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
}

pub fn classification(c: Classification) -> pb::Classification {
    match c {
        Classification::Public => pb::Classification::Public,
        Classification::Internal => pb::Classification::Internal,
        Classification::Confidential => pb::Classification::Confidential,
        Classification::Restricted => pb::Classification::Restricted,
    }
}

/// A classification from the wire; `None` for unspecified.
pub fn classification_from(v: i32, field: &str) -> Result<Option<Classification>, FieldViolation> {
    match pb::Classification::try_from(v) {
        Ok(pb::Classification::Unspecified) => Ok(None),
        Ok(pb::Classification::Public) => Ok(Some(Classification::Public)),
        Ok(pb::Classification::Internal) => Ok(Some(Classification::Internal)),
        Ok(pb::Classification::Confidential) => Ok(Some(Classification::Confidential)),
        Ok(pb::Classification::Restricted) => Ok(Some(Classification::Restricted)),
        Err(_) => Err(FieldViolation::new(
            field,
            format!("{v} is not a classification"),
        )),
    }
}

pub fn status(s: Status) -> pb::IdentityStatus {
    match s {
        Status::PreHire => pb::IdentityStatus::PreHire,
        Status::Active => pb::IdentityStatus::Active,
        Status::Suspended => pb::IdentityStatus::Suspended,
        Status::Terminated => pb::IdentityStatus::Terminated,
    }
}

pub fn status_from(v: i32) -> Result<Option<Status>, FieldViolation> {
    match pb::IdentityStatus::try_from(v) {
        Ok(pb::IdentityStatus::Unspecified) => Ok(None),
        Ok(pb::IdentityStatus::PreHire) => Ok(Some(Status::PreHire)),
        Ok(pb::IdentityStatus::Active) => Ok(Some(Status::Active)),
        Ok(pb::IdentityStatus::Suspended) => Ok(Some(Status::Suspended)),
        Ok(pb::IdentityStatus::Terminated) => Ok(Some(Status::Terminated)),
        Err(_) => Err(FieldViolation::new(
            "status",
            format!("{v} is not an identity status"),
        )),
    }
}

fn employment(e: EmploymentType) -> pb::EmploymentType {
    match e {
        EmploymentType::Employee => pb::EmploymentType::Employee,
        EmploymentType::Contractor => pb::EmploymentType::Contractor,
        EmploymentType::Intern => pb::EmploymentType::Intern,
    }
}

fn background(b: BackgroundCheck) -> pb::BackgroundCheck {
    match b {
        BackgroundCheck::Pending => pb::BackgroundCheck::Pending,
        BackgroundCheck::Cleared => pb::BackgroundCheck::Cleared,
        BackgroundCheck::Failed => pb::BackgroundCheck::Failed,
    }
}

/// A roster entry from the wire; `i` is its place in the roster (violations
/// are named `roster[i].field`). Dates are parsed here: a roster's entries
/// have no event to carry them as text.
pub fn roster_entry(e: pb::RosterEntry, i: usize) -> Result<RosterEntry, Vec<FieldViolation>> {
    let Some(a) = &e.attributes else {
        return Ok(RosterEntry {
            employee_id: e.employee_id,
            attrs: AttributesPatch::default(),
        });
    };
    let (mut attrs, start, end) = attrs_from(a, &format!("roster[{i}]"))?;
    let mut violations = Vec::new();
    for (field, raw, slot) in [
        ("start_date", start, &mut attrs.start_date),
        ("end_date", end, &mut attrs.end_date),
    ] {
        match raw {
            Some(s) if !s.trim().is_empty() => match idgov_domain::time::parse_date(&s) {
                Ok(d) => *slot = Some(d),
                Err(m) => violations.push(FieldViolation::new(format!("roster[{i}].{field}"), m)),
            },
            // Listed with an empty end date: the person has none.
            Some(_) if field == "end_date" => attrs.clear_end_date = true,
            _ => {}
        }
    }
    if violations.is_empty() {
        Ok(RosterEntry {
            employee_id: e.employee_id,
            attrs,
        })
    } else {
        Err(violations)
    }
}

/// Reads HR attributes from the wire. Dates stay text (validated by the
/// domain); enum values out of range are violations.
pub fn attrs_from(
    a: &pb::PersonAttributes,
    prefix: &str,
) -> Result<(AttributesPatch, Option<String>, Option<String>), Vec<FieldViolation>> {
    let mut v = Vec::new();
    let employment_type = match pb::EmploymentType::try_from(a.employment_type) {
        Ok(pb::EmploymentType::Unspecified) => None,
        Ok(pb::EmploymentType::Employee) => Some(EmploymentType::Employee),
        Ok(pb::EmploymentType::Contractor) => Some(EmploymentType::Contractor),
        Ok(pb::EmploymentType::Intern) => Some(EmploymentType::Intern),
        Err(_) => {
            v.push(FieldViolation::new(
                format!("{prefix}.employment_type"),
                "unknown value",
            ));
            None
        }
    };
    let background_check = match pb::BackgroundCheck::try_from(a.background_check) {
        Ok(pb::BackgroundCheck::Unspecified) => None,
        Ok(pb::BackgroundCheck::Pending) => Some(BackgroundCheck::Pending),
        Ok(pb::BackgroundCheck::Cleared) => Some(BackgroundCheck::Cleared),
        Ok(pb::BackgroundCheck::Failed) => Some(BackgroundCheck::Failed),
        Err(_) => {
            v.push(FieldViolation::new(
                format!("{prefix}.background_check"),
                "unknown value",
            ));
            None
        }
    };
    let clearance = classification_from(a.clearance, &format!("{prefix}.clearance"))
        .unwrap_or_else(|e| {
            v.push(e);
            None
        });
    let background_check_date = match a.background_check_date.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(d) => match idgov_domain::time::parse_date(d) {
            Ok(d) => Some(d),
            Err(e) => {
                v.push(FieldViolation::new(
                    format!("{prefix}.background_check_date"),
                    e,
                ));
                None
            }
        },
    };
    if !v.is_empty() {
        return Err(v);
    }
    let patch = AttributesPatch {
        display_name: a.display_name.clone(),
        email: a.email.clone(),
        department: a.department.clone(),
        title: a.title.clone(),
        job_code: a.job_code.clone(),
        location: a.location.clone(),
        cost_center: a.cost_center.clone(),
        manager_id: a
            .manager_employee_id
            .as_ref()
            .map(|m| if m.is_empty() { None } else { Some(m.clone()) }),
        employment_type,
        background_check,
        clearance,
        start_date: None,
        end_date: None,
        background_check_date,
        clear_end_date: false,
    };
    Ok((patch, a.start_date.clone(), a.end_date.clone()))
}

pub fn event_kind(k: EventKind) -> pb::HrEventType {
    match k {
        EventKind::Hire => pb::HrEventType::Hire,
        EventKind::Update => pb::HrEventType::Update,
        EventKind::Move => pb::HrEventType::Move,
        EventKind::Terminate => pb::HrEventType::Terminate,
        EventKind::Rehire => pb::HrEventType::Rehire,
        EventKind::Rescind => pb::HrEventType::Rescind,
    }
}

/// Reads an HR event from the wire into unvalidated input.
pub fn event_input(e: &pb::HrEvent) -> Result<HrEventInput, Vec<FieldViolation>> {
    let mut v = Vec::new();
    let kind = match pb::HrEventType::try_from(e.r#type) {
        Ok(pb::HrEventType::Unspecified) => None,
        Ok(pb::HrEventType::Hire) => Some(EventKind::Hire),
        Ok(pb::HrEventType::Update) => Some(EventKind::Update),
        Ok(pb::HrEventType::Move) => Some(EventKind::Move),
        Ok(pb::HrEventType::Terminate) => Some(EventKind::Terminate),
        Ok(pb::HrEventType::Rehire) => Some(EventKind::Rehire),
        Ok(pb::HrEventType::Rescind) => Some(EventKind::Rescind),
        Err(_) => {
            v.push(FieldViolation::new(
                "event.type",
                format!("{} is not an event type", e.r#type),
            ));
            None
        }
    };
    let (attrs, start_date, end_date) = match &e.attributes {
        Some(a) => match attrs_from(a, "event.attributes") {
            Ok(x) => x,
            Err(mut errs) => {
                v.append(&mut errs);
                (AttributesPatch::default(), None, None)
            }
        },
        None => (AttributesPatch::default(), None, None),
    };
    if !v.is_empty() {
        return Err(v);
    }
    Ok(HrEventInput {
        source: e.source.clone(),
        event_id: e.event_id.clone(),
        kind,
        employee_id: e.employee_id.clone(),
        effective_at: e.effective_at.clone(),
        time_zone: e.time_zone.clone(),
        attrs,
        start_date,
        end_date,
        rescinds_event_id: e.rescinds_event_id.clone(),
    })
}

pub fn event_state(s: EventState) -> pb::HrEventState {
    match s {
        EventState::Applied => pb::HrEventState::Applied,
        EventState::Scheduled => pb::HrEventState::Scheduled,
        EventState::Superseded => pb::HrEventState::Superseded,
        EventState::Rescinded => pb::HrEventState::Rescinded,
        EventState::Rejected => pb::HrEventState::Rejected,
    }
}

pub fn event_state_from(v: i32) -> Result<Option<EventState>, FieldViolation> {
    match pb::HrEventState::try_from(v) {
        Ok(pb::HrEventState::Unspecified) => Ok(None),
        Ok(pb::HrEventState::Applied) => Ok(Some(EventState::Applied)),
        Ok(pb::HrEventState::Scheduled) => Ok(Some(EventState::Scheduled)),
        Ok(pb::HrEventState::Superseded) => Ok(Some(EventState::Superseded)),
        Ok(pb::HrEventState::Rescinded) => Ok(Some(EventState::Rescinded)),
        Ok(pb::HrEventState::Rejected) => Ok(Some(EventState::Rejected)),
        Err(_) => Err(FieldViolation::new(
            "state",
            format!("{v} is not an event state"),
        )),
    }
}

fn attrs_to(
    a: &AttributesPatch,
    start: Option<String>,
    end: Option<String>,
) -> pb::PersonAttributes {
    pb::PersonAttributes {
        display_name: a.display_name.clone(),
        email: a.email.clone(),
        department: a.department.clone(),
        title: a.title.clone(),
        job_code: a.job_code.clone(),
        location: a.location.clone(),
        cost_center: a.cost_center.clone(),
        manager_employee_id: a.manager_id.as_ref().map(|m| m.clone().unwrap_or_default()),
        employment_type: a.employment_type.map(employment).unwrap_or_default() as i32,
        background_check: a.background_check.map(background).unwrap_or_default() as i32,
        clearance: a.clearance.map(classification).unwrap_or_default() as i32,
        start_date: start,
        end_date: end,
        background_check_date: a.background_check_date.map(|d| d.to_string()),
    }
}

pub fn recorded_event(r: &RecordedEvent) -> pb::RecordedHrEvent {
    let e = &r.event;
    pb::RecordedHrEvent {
        event: Some(pb::HrEvent {
            source: e.source.clone(),
            event_id: e.event_id.clone(),
            r#type: event_kind(e.kind) as i32,
            employee_id: e.employee_id.clone(),
            effective_at: e.effective_input.clone(),
            time_zone: e.time_zone.clone(),
            attributes: Some(attrs_to(
                &e.attrs,
                e.attrs.start_date.map(|d| d.to_string()),
                match (e.attrs.end_date, e.attrs.clear_end_date) {
                    (Some(d), _) => Some(d.to_string()),
                    (None, true) => Some(String::new()),
                    (None, false) => None,
                },
            )),
            rescinds_event_id: e.rescinds_event_id.clone().unwrap_or_default(),
        }),
        state: event_state(r.state) as i32,
        effective_at: Some(ts(e.effective_at)),
        received_at: Some(ts(r.received_at)),
        applied_at: opt_ts(r.applied_at),
        detail: r.detail.clone(),
    }
}

pub fn identity(i: &Identity, active_grants: i64) -> pb::Identity {
    let a = &i.attrs;
    pb::Identity {
        employee_id: i.employee_id.clone(),
        display_name: a.display_name.clone(),
        email: a.email.clone(),
        department: a.department.clone(),
        title: a.title.clone(),
        job_code: a.job_code.clone(),
        location: a.location.clone(),
        cost_center: a.cost_center.clone(),
        manager_employee_id: a.manager_id.clone().unwrap_or_default(),
        employment_type: employment(a.employment_type) as i32,
        background_check: background(a.background_check) as i32,
        clearance: classification(a.clearance) as i32,
        status: status(i.status) as i32,
        start_date: a.start_date.map(|d| d.to_string()).unwrap_or_default(),
        end_date: a.end_date.map(|d| d.to_string()).unwrap_or_default(),
        access_ceiling: if i.may_hold_access() {
            classification(a.access_ceiling()) as i32
        } else {
            pb::Classification::Unspecified as i32
        },
        created_at: Some(ts(i.created_at)),
        updated_at: Some(ts(i.updated_at)),
        state_effective_at: Some(ts(i.state_effective_at())),
        active_grant_count: active_grants,
        background_check_date: a
            .background_check_date
            .map(|d| d.to_string())
            .unwrap_or_default(),
        employment_start: i.history.employment_start.map(ts),
        rehired: i.history.employments >= 2,
    }
}

pub fn grant(g: &Grant, c: Classification) -> pb::Grant {
    let source = match g.source {
        SourceKind::Birthright => pb::GrantSourceKind::Birthright,
        SourceKind::Request => pb::GrantSourceKind::Request,
        SourceKind::Exception => pb::GrantSourceKind::Exception,
        SourceKind::Imported => pb::GrantSourceKind::Imported,
    };
    let reason = g.revoke_reason.map(|r| match r {
        RevokeReason::Leaver => pb::RevokeReason::Leaver,
        RevokeReason::Mover => pb::RevokeReason::Mover,
        RevokeReason::Review => pb::RevokeReason::Review,
        RevokeReason::Expired => pb::RevokeReason::Expired,
        RevokeReason::Manual => pb::RevokeReason::Manual,
        RevokeReason::Sod => pb::RevokeReason::Sod,
        RevokeReason::Clearance => pb::RevokeReason::Clearance,
        RevokeReason::Policy => pb::RevokeReason::Policy,
    });
    pb::Grant {
        id: g.id.clone(),
        employee_id: g.employee_id.clone(),
        entitlement_id: g.entitlement_id.clone(),
        source: source as i32,
        source_ref: g.source_ref.clone(),
        granted_at: Some(ts(g.granted_at)),
        expires_at: opt_ts(g.expires_at),
        approvers: g.approvers.clone(),
        justification: g.justification.clone(),
        active: g.is_active(),
        revoked_at: opt_ts(g.revoked_at),
        revoke_reason: reason.unwrap_or_default() as i32,
        review_pending: g.review_pending,
        classification: classification(c) as i32,
    }
}

pub fn verdict(v: &Verdict) -> pb::GuardVerdict {
    pb::GuardVerdict {
        active: v.active as i64,
        affected: v.affected as i64,
        threshold: v.threshold as i64,
        tripped: v.tripped,
    }
}

/// How large a diff's shown changes may be, encoded: at most 1,000 are
/// shown, and fewer when their values are long, so an answer that shows a
/// diff stays well within the 4 MiB message limit.
pub const DIFF_BYTES: usize = 2 * 1024 * 1024;

/// One roster change as the API shows it.
pub fn roster_change(c: &RosterChange) -> pb::RosterChange {
    let kind = match c.kind {
        ChangeKind::Joiner => pb::RosterChangeKind::Joiner,
        ChangeKind::Mover => pb::RosterChangeKind::Mover,
        ChangeKind::Update => pb::RosterChangeKind::Update,
        ChangeKind::Leaver => pb::RosterChangeKind::Leaver,
        ChangeKind::Rehire => pb::RosterChangeKind::Rehire,
        ChangeKind::Withdrawal => pb::RosterChangeKind::Withdrawal,
    };
    pb::RosterChange {
        employee_id: c.employee_id.clone(),
        kind: kind as i32,
        display_name: c.display_name.clone(),
        changes: c
            .changes
            .iter()
            .map(|f| pb::FieldChange {
                field: f.field.clone(),
                old_value: f.old.clone(),
                new_value: f.new.clone(),
            })
            .collect(),
    }
}

pub fn diff(d: &RosterDiff, counts: &DiffCounts) -> pb::RosterDiff {
    let d = &d.shown(crate::app::roster::SHOWN_CHANGES);
    let mut changes: Vec<pb::RosterChange> = d.changes.iter().map(roster_change).collect();
    changes.truncate(super::paging::fitting(&changes, DIFF_BYTES));
    pb::RosterDiff {
        changes_truncated: (changes.len() as u64) < counts.total,
        changes,
        joiners: counts.joiners as i32,
        movers: counts.movers as i32,
        updates: counts.updates as i32,
        leavers: counts.leavers as i32,
        rehires: counts.rehires as i32,
        withdrawals: counts.withdrawals as i32,
        unchanged: counts.unchanged as i32,
        total_changes: counts.total as i32,
    }
}

pub fn change_outcome(o: Outcome) -> pb::ChangeOutcome {
    match o {
        Outcome::Applied => pb::ChangeOutcome::Applied,
        Outcome::Held => pb::ChangeOutcome::Held,
        Outcome::DryRun => pb::ChangeOutcome::DryRun,
        Outcome::Unchanged => pb::ChangeOutcome::Unchanged,
    }
}

pub fn sync_response(o: &SyncOutcome) -> pb::SyncRosterResponse {
    pb::SyncRosterResponse {
        sync_id: o.sync_id.clone(),
        outcome: change_outcome(o.outcome) as i32,
        diff: Some(diff(&o.diff, &o.counts)),
        guard: Some(verdict(&o.guard)),
        held_change_id: o.held_change_id.clone().unwrap_or_default(),
        entries_received: o.entries_received as i32,
        preview_id: o.preview_id.clone().unwrap_or_default(),
        resent: o.resent,
        superseded_by: o.superseded_by.clone().unwrap_or_default(),
        content_sha256: o.content_sha256.clone().unwrap_or_default(),
    }
}

pub fn held_state_from(v: i32) -> Result<HeldState, FieldViolation> {
    match pb::HeldChangeState::try_from(v) {
        Ok(pb::HeldChangeState::Unspecified) | Ok(pb::HeldChangeState::Held) => Ok(HeldState::Held),
        Ok(pb::HeldChangeState::Released) => Ok(HeldState::Released),
        Ok(pb::HeldChangeState::Discarded) => Ok(HeldState::Discarded),
        Err(_) => Err(FieldViolation::new(
            "state",
            format!("{v} is not a held-change state"),
        )),
    }
}

pub fn held(h: &HeldChange) -> pb::HeldChange {
    let staged_diff = crate::app::held::held_diff(h);
    pb::HeldChange {
        id: h.id.clone(),
        kind: match h.kind {
            HeldKind::RosterSync => pb::HeldChangeKind::RosterSync,
            HeldKind::PolicyApply => pb::HeldChangeKind::PolicyApply,
            HeldKind::CampaignClose => pb::HeldChangeKind::CampaignClose,
        } as i32,
        state: match h.state {
            HeldState::Held => pb::HeldChangeState::Held,
            HeldState::Released => pb::HeldChangeState::Released,
            HeldState::Discarded => pb::HeldChangeState::Discarded,
        } as i32,
        created_at: Some(ts(h.created_at)),
        created_by: h.created_by.clone(),
        guard: Some(verdict(&h.guard)),
        diff: staged_diff.as_ref().map(|(d, counts)| diff(d, counts)),
        summary: h.summary.clone(),
        decided_by: h.decided_by.clone().unwrap_or_default(),
        decided_at: opt_ts(h.decided_at),
        decision_reason: h.decision_reason.clone().unwrap_or_default(),
    }
}

pub fn policy(p: &ActivePolicy) -> pb::Policy {
    let pol = &p.policy;
    pb::Policy {
        version: p.version,
        sha256: p.sha256.clone(),
        applied_at: opt_ts(p.applied_at),
        applied_by: p.applied_by.clone(),
        document: pol.document.clone(),
        levels: Classification::ALL
            .iter()
            .map(|c| {
                let l = pol.level(*c);
                pb::ClassificationLevel {
                    level: classification(*c) as i32,
                    birthright_allowed: l.birthright_allowed,
                    approvals: l.approvals.iter().map(|a| a.to_string()).collect(),
                    max_grant_days: l.max_grant_days as i32,
                    review_every_months: l.review_every_months as i32,
                    on_mover: l.on_mover.to_string(),
                    no_review_response: l.no_review_response.to_string(),
                }
            })
            .collect(),
        systems: pol.systems.len() as i32,
        entitlements: pol.entitlements.len() as i32,
        roles: pol.roles.len() as i32,
        birthright_rules: pol.birthright.len() as i32,
        hr_time_zone: pol.hr_time_zone.name().to_string(),
        guard_max_leavers_percent: pol.guard.max_leavers_percent as i32,
        guard_max_leavers: pol.guard.max_leavers as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(end_date: Option<&str>) -> pb::RosterEntry {
        pb::RosterEntry {
            employee_id: "E1".into(),
            attributes: Some(pb::PersonAttributes {
                display_name: Some("Ada".into()),
                end_date: end_date.map(String::from),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_roster_entry_with_an_empty_end_date_takes_it_away() {
        let read = |e| roster_entry(entry(e), 0).ok().map(|r| r.attrs);
        let cleared = read(Some("")).unwrap_or_default();
        assert!(cleared.clear_end_date);
        assert_eq!(cleared.end_date, None);
        let kept = read(None).unwrap_or_default();
        assert!(!kept.clear_end_date, "an end date not sent is kept");
        let set = read(Some("2026-09-30")).unwrap_or_default();
        assert!(!set.clear_end_date);
        assert_eq!(
            set.end_date.map(|d| d.to_string()).as_deref(),
            Some("2026-09-30")
        );
        assert!(roster_entry(entry(Some("30/09/2026")), 0).is_err());
    }
}

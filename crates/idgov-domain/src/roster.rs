//! Roster sync: diff a full HR roster against the known identities. New
//! people are joiners, departed people returning are rehires, changed people
//! movers or updates, and active people missing from the roster leavers.

use crate::error::{DomainError, FieldViolation};
use crate::hr::{EventKind, HrEvent};
use crate::identity::{
    AttributesPatch, FieldChange, Identity, Status, diff_attributes, is_move, validate_employee_id,
};
pub use crate::packed_roster::PackedRoster;
use crate::time::{local_date, local_day_start};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};

/// One person in a roster snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterEntry {
    pub employee_id: String,
    pub attrs: AttributesPatch,
}

/// The kind of a roster change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Joiner,
    Mover,
    Update,
    Leaver,
    Rehire,
}

/// One change a roster would make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterChange {
    pub employee_id: String,
    pub kind: ChangeKind,
    pub display_name: String,
    pub changes: Vec<FieldChange>,
    pub attrs: AttributesPatch,
}

/// The diff of a roster against the identities.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterDiff {
    pub changes: Vec<RosterChange>,
    pub unchanged: u64,
}

impl RosterDiff {
    pub fn count(&self, kind: ChangeKind) -> u64 {
        self.changes.iter().filter(|c| c.kind == kind).count() as u64
    }

    /// How many changes of each kind, and in all.
    pub fn counts(&self) -> DiffCounts {
        DiffCounts::of(self.changes.iter().map(|c| c.kind), self.unchanged)
    }

    /// At most `max` changes to show a person (leavers first: they are what
    /// the guard is about); the counts tell how many there are in all.
    pub fn shown(&self, max: usize) -> RosterDiff {
        if self.changes.len() <= max {
            return self.clone();
        }
        let mut changes: Vec<RosterChange> = self
            .changes
            .iter()
            .filter(|c| c.kind == ChangeKind::Leaver)
            .take(max)
            .cloned()
            .collect();
        let room = max.saturating_sub(changes.len());
        changes.extend(
            self.changes
                .iter()
                .filter(|c| c.kind != ChangeKind::Leaver)
                .take(room)
                .cloned(),
        );
        RosterDiff {
            changes,
            unchanged: self.unchanged,
        }
    }
}

/// How many changes of each kind a roster makes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffCounts {
    pub joiners: u64,
    pub movers: u64,
    pub updates: u64,
    pub leavers: u64,
    pub rehires: u64,
    pub unchanged: u64,
    pub total: u64,
}

impl DiffCounts {
    /// The counts of changes of `kinds`, beside `unchanged` people.
    pub fn of(kinds: impl Iterator<Item = ChangeKind>, unchanged: u64) -> DiffCounts {
        let mut c = DiffCounts {
            unchanged,
            ..DiffCounts::default()
        };
        for kind in kinds {
            *match kind {
                ChangeKind::Joiner => &mut c.joiners,
                ChangeKind::Mover => &mut c.movers,
                ChangeKind::Update => &mut c.updates,
                ChangeKind::Leaver => &mut c.leavers,
                ChangeKind::Rehire => &mut c.rehires,
            } += 1;
            c.total += 1;
        }
        c
    }
}

/// Validates roster entries: ids, attributes, duplicates, and a name for
/// everyone (joiners need one).
pub fn validate(entries: &PackedRoster) -> Result<(), DomainError> {
    let mut v = Vec::new();
    let mut seen = HashSet::new();
    for (i, e) in entries.iter().enumerate() {
        let path = format!("roster[{i}]");
        if let Err(msg) = validate_employee_id(&e.employee_id) {
            v.push(FieldViolation::new(format!("{path}.employee_id"), msg));
        } else if !seen.insert(entries.employee_id(i)) {
            v.push(FieldViolation::new(
                format!("{path}.employee_id"),
                format!("employee {} appears twice in the roster", e.employee_id),
            ));
        }
        v.extend(e.attrs.validate(&path, &e.employee_id));
        if e.attrs.display_name.as_deref().unwrap_or("").is_empty() {
            v.push(FieldViolation::new(
                format!("{path}.display_name"),
                "is required",
            ));
        }
        if v.len() >= 100 {
            v.push(FieldViolation::new(
                "roster",
                "more problems follow; fix these first",
            ));
            break;
        }
    }
    if v.is_empty() {
        Ok(())
    } else {
        Err(DomainError::invalid(
            format!("the roster has {} problem(s)", v.len()),
            v,
        ))
    }
}

/// The first management cycle the roster would create, as the people in it
/// with the first repeated at the end (`[A, B, A]`), and the index of the
/// entry it starts at. A manager column absent from the roster keeps the
/// person's current manager (`current`: employee id → their manager now;
/// only those entries need be in it).
pub fn manager_cycle(
    entries: &PackedRoster,
    current: &HashMap<String, String>,
) -> Option<(usize, Vec<String>)> {
    let index: HashMap<&str, usize> = (0..entries.len())
        .map(|i| (entries.employee_id(i), i))
        .collect();
    let manager = |i: usize| -> Option<&str> {
        match entries.manager_id(i) {
            Some(m) => m,
            None => current.get(entries.employee_id(i)).map(String::as_str),
        }
    };
    // 0: unvisited, 1: on the current path, 2: done.
    let mut mark = vec![0u8; entries.len()];
    for start in 0..entries.len() {
        if mark[start] != 0 {
            continue;
        }
        let mut path = vec![start];
        mark[start] = 1;
        let mut cur = start;
        while let Some(next) = manager(cur).and_then(|m| index.get(m).copied()) {
            match mark[next] {
                0 => {
                    mark[next] = 1;
                    path.push(next);
                    cur = next;
                }
                1 => {
                    let from = path.iter().position(|&p| p == next).unwrap_or(0);
                    let mut cycle: Vec<String> = path[from..]
                        .iter()
                        .map(|&i| entries.employee_id(i).to_string())
                        .collect();
                    cycle.push(entries.employee_id(next).to_string());
                    return Some((next, cycle));
                }
                _ => break,
            }
        }
        for p in path {
            mark[p] = 2;
        }
    }
    None
}

/// What the roster says of one person listed in it, against what is
/// known of them (`None`: unknown): a change, or `None` when it changes
/// nothing.
pub fn classify(e: &RosterEntry, cur: Option<&Identity>) -> Option<RosterChange> {
    classify_kind(e, cur).map(|(kind, fields)| change_of(e, kind, fields))
}

/// What [`classify`] finds, without the change itself: its kind and the
/// fields it changes. A roster of a million people keeps these beside its
/// entries and makes each change ([`change_of`]) when it is taken, rather
/// than holding every entry twice.
pub fn classify_kind(
    e: &RosterEntry,
    cur: Option<&Identity>,
) -> Option<(ChangeKind, Vec<FieldChange>)> {
    match cur {
        None => Some((ChangeKind::Joiner, vec![])),
        Some(cur) if cur.status == Status::Terminated => Some((ChangeKind::Rehire, vec![])),
        // Not working here yet (announced by a future hire, or known only
        // from events before it): a joiner, hired on the roster's start
        // date like anyone new.
        Some(cur) if cur.status == Status::PreHire => Some((ChangeKind::Joiner, vec![])),
        Some(cur) => {
            let new = crate::history::preview_update(cur, &e.attrs);
            let changes = diff_attributes(&cur.attrs, &new);
            if changes.is_empty() {
                None
            } else if is_move(&changes) {
                Some((ChangeKind::Mover, changes))
            } else {
                Some((ChangeKind::Update, changes))
            }
        }
    }
}

/// The change entry `e` makes, of `kind`, changing `fields` (see
/// [`classify_kind`]).
pub fn change_of(e: &RosterEntry, kind: ChangeKind, fields: Vec<FieldChange>) -> RosterChange {
    RosterChange {
        employee_id: e.employee_id.clone(),
        kind,
        display_name: e.attrs.display_name.clone().unwrap_or_default(),
        changes: fields,
        attrs: e.attrs.clone(),
    }
}

/// True when a person the roster does not list leaves with it.
pub fn leaves_when_unlisted(i: &Identity) -> bool {
    matches!(i.status, Status::Active | Status::Suspended)
}

/// The leaver change of someone working here whom the roster does not list.
pub fn leaver(i: &Identity) -> RosterChange {
    RosterChange {
        employee_id: i.employee_id.clone(),
        kind: ChangeKind::Leaver,
        display_name: i.attrs.display_name.clone(),
        changes: vec![],
        attrs: AttributesPatch::default(),
    }
}

/// Diffs `entries` against `identities` (every known identity): the
/// listed people's changes in roster order, then the leavers by employee
/// id. (The service computes the same a page of people at a time.)
pub fn diff(entries: &[RosterEntry], identities: &HashMap<String, Identity>) -> RosterDiff {
    let mut out = RosterDiff::default();
    let mut present = HashSet::with_capacity(entries.len());
    for e in entries {
        present.insert(e.employee_id.as_str());
        match classify(e, identities.get(&e.employee_id)) {
            Some(c) => out.changes.push(c),
            None => out.unchanged += 1,
        }
    }
    let mut leavers: Vec<&Identity> = identities
        .values()
        .filter(|i| leaves_when_unlisted(i))
        .filter(|i| !present.contains(i.employee_id.as_str()))
        .collect();
    leavers.sort_by(|a, b| a.employee_id.cmp(&b.employee_id));
    out.changes.extend(leavers.into_iter().map(leaver));
    out
}

/// The HR event of one roster change, of `source`, effective `as_of`,
/// keyed by the sync id so that re-sending a snapshot is idempotent. A
/// joiner whose start date (in `zone`) is after `as_of` is hired at the
/// start of that day: the event is scheduled and the person is a pre-hire
/// until then. The event keeps the roster's zone, so its dates mean what
/// the roster meant. A large roster turns its changes into events one at a
/// time, in the order they apply: **leavers first** (a leaver's access
/// must not wait behind thousands of joiners and updates), the others in
/// the roster's order. (Nothing listed depends on a leaver being still
/// active: a change that names a leaver as manager is applied the same
/// either way.)
pub fn event_of(
    c: RosterChange,
    source: &str,
    sync_id: &str,
    as_of: DateTime<Utc>,
    zone: Tz,
) -> HrEvent {
    let kind = match c.kind {
        ChangeKind::Joiner => EventKind::Hire,
        ChangeKind::Rehire => EventKind::Rehire,
        ChangeKind::Mover => EventKind::Move,
        ChangeKind::Update => EventKind::Update,
        ChangeKind::Leaver => EventKind::Terminate,
    };
    let event_id = format!("roster:{sync_id}:{}", c.employee_id);
    let effective_at = match (c.kind, c.attrs.start_date) {
        (ChangeKind::Joiner, Some(d)) if d > local_date(as_of, zone) => {
            local_day_start(d, zone).unwrap_or(as_of)
        }
        _ => as_of,
    };
    let payload = serde_json::to_vec(&(&event_id, kind, &c.attrs)).unwrap_or_default();
    HrEvent {
        source: source.to_string(),
        event_id,
        kind,
        employee_id: c.employee_id,
        effective_at,
        effective_input: effective_at.to_rfc3339(),
        time_zone: zone.name().to_string(),
        attrs: c.attrs,
        rescinds_event_id: None,
        fingerprint: hex::encode(Sha256::digest(payload)),
        from_roster: true,
        earlier_fingerprint: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Classification;
    use crate::identity::Attributes;
    use chrono::TimeZone;

    /// A diff's events in the order a sync applies them (leavers first,
    /// as the application's roster walk yields them).
    fn to_events(
        mut changes: Vec<RosterChange>,
        source: &str,
        sync_id: &str,
        as_of: DateTime<Utc>,
        zone: Tz,
    ) -> Vec<HrEvent> {
        changes.sort_by_key(|c| c.kind != ChangeKind::Leaver);
        changes
            .into_iter()
            .map(|c| event_of(c, source, sync_id, as_of, zone))
            .collect()
    }

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default()
    }

    fn person(id: &str, dept: &str, status: Status) -> Identity {
        Identity {
            employee_id: id.into(),
            attrs: Attributes {
                display_name: format!("Person {id}"),
                department: dept.into(),
                ..Attributes::new_person(Classification::Internal)
            },
            status,
            attrs_effective_at: t0(),
            status_effective_at: t0(),
            created_at: t0(),
            updated_at: t0(),
            history: Default::default(),
        }
    }

    fn entry(id: &str, dept: &str) -> RosterEntry {
        RosterEntry {
            employee_id: id.into(),
            attrs: AttributesPatch {
                display_name: Some(format!("Person {id}")),
                department: Some(dept.into()),
                ..Default::default()
            },
        }
    }

    #[test]
    fn classifies_every_kind() {
        let known: HashMap<_, _> = [
            person("A", "Sales", Status::Active),
            person("B", "Sales", Status::Active),
            person("C", "Sales", Status::Active),
            person("D", "Sales", Status::Terminated),
            person("E", "Sales", Status::Active),
            person("P", "Sales", Status::PreHire),
        ]
        .into_iter()
        .map(|i| (i.employee_id.clone(), i))
        .collect();
        let mut moved_email = entry("C", "Sales");
        moved_email.attrs.email = Some("c@example.com".into());
        let roster = vec![
            entry("A", "Sales"),
            entry("B", "Finance"),
            moved_email,
            entry("D", "Sales"),
            entry("N", "Sales"),
        ];
        let d = diff(&roster, &known);
        let kinds: Vec<_> = d
            .changes
            .iter()
            .map(|c| (c.employee_id.as_str(), c.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("B", ChangeKind::Mover),
                ("C", ChangeKind::Update),
                ("D", ChangeKind::Rehire),
                ("N", ChangeKind::Joiner),
                ("E", ChangeKind::Leaver),
            ]
        );
        assert_eq!(d.unchanged, 1, "A unchanged; the pre-hire P is not listed");
        // Applied leavers first, the rest in roster order.
        let events = to_events(d.changes.clone(), "workday", "s1", t0(), chrono_tz::UTC);
        let order: Vec<(&str, EventKind)> = events
            .iter()
            .map(|e| (e.employee_id.as_str(), e.kind))
            .collect();
        assert_eq!(
            order,
            [
                ("E", EventKind::Terminate),
                ("B", EventKind::Move),
                ("C", EventKind::Update),
                ("D", EventKind::Rehire),
                ("N", EventKind::Hire),
            ]
        );
        assert_eq!(events[0].event_id, "roster:s1:E");
    }

    #[test]
    fn a_joiner_starting_later_is_hired_on_their_start_date() {
        let mut later = entry("N", "Sales");
        later.attrs.start_date = chrono::NaiveDate::from_ymd_opt(2026, 2, 1);
        let d = diff(&[later], &HashMap::new());
        let events = to_events(d.changes, "hr", "s1", t0(), chrono_tz::Europe::Oslo);
        assert_eq!(
            events[0].effective_at.to_rfc3339(),
            "2026-01-31T23:00:00+00:00"
        );
    }

    #[test]
    fn management_cycles_are_found_with_their_people() {
        let mut a = entry("A", "X");
        a.attrs.manager_id = Some(Some("B".into()));
        let mut b = entry("B", "X");
        b.attrs.manager_id = Some(Some("C".into()));
        let mut c = entry("C", "X");
        c.attrs.manager_id = Some(Some("A".into()));
        let d = entry("D", "X");
        let (at, cycle) = manager_cycle(
            &vec![d.clone(), a.clone(), b.clone(), c.clone()].into(),
            &HashMap::new(),
        )
        .expect("a cycle");
        assert_eq!(cycle, ["A", "B", "C", "A"]);
        assert_eq!(at, 1);
        c.attrs.manager_id = Some(Some("D".into()));
        assert_eq!(
            manager_cycle(&vec![d, a, b, c].into(), &HashMap::new()),
            None
        );
        // A manager column left out keeps the current manager.
        let mut known = person("Q", "X", Status::Active);
        known.attrs.manager_id = Some("P".into());
        let mut p = entry("P", "X");
        p.attrs.manager_id = Some(Some("Q".into()));
        let q = entry("Q", "X");
        let current: HashMap<String, String> = [(
            known.employee_id.clone(),
            known.attrs.manager_id.clone().unwrap_or_default(),
        )]
        .into_iter()
        .collect();
        assert!(manager_cycle(&vec![p, q].into(), &current).is_some());
    }

    #[test]
    fn validation_catches_duplicates_and_names() {
        let mut nameless = entry("B", "X");
        nameless.attrs.display_name = None;
        let err = validate(&vec![entry("A", "X"), entry("A", "Y"), nameless].into()).err();
        let fields: Vec<_> = err
            .map(|e| e.violations.into_iter().map(|v| v.field).collect())
            .unwrap_or_default();
        assert_eq!(fields, ["roster[1].employee_id", "roster[2].display_name"]);
    }
}

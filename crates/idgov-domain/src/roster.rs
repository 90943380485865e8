//! Roster sync: diff a full HR roster against the known identities. New
//! people are joiners, departed people returning are rehires, changed people
//! movers or updates, and active people missing from the roster leavers.

use crate::error::{DomainError, FieldViolation};
use crate::hr::{EventKind, HrEvent};
use crate::identity::{
    AttributesPatch, FieldChange, Identity, Status, diff_attributes, is_move, validate_employee_id,
};
use crate::time::{local_date, local_day_start};
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};

/// How the id of every event a roster snapshot makes begins:
/// `roster:<sync_id>:<employee_id>` (an employee id holds no ':', so the
/// id names its snapshot and person unambiguously). Reserved: an HR event
/// sent with such an id is refused (see [`is_roster_event_id`]), so that no
/// feed can take the key of a snapshot's event before the snapshot makes it
/// (which would make the snapshot's own event a conflict, or a stranger
/// listed among its events).
pub const EVENT_ID_PREFIX: &str = "roster:";

/// The id of the event snapshot `sync_id` makes for `employee_id`.
pub fn event_id(sync_id: &str, employee_id: &str) -> String {
    format!("{EVENT_ID_PREFIX}{sync_id}:{employee_id}")
}

/// Whether `id` is in the range roster snapshots' events are named in
/// ([`EVENT_ID_PREFIX`], in any letter case: an id that differs from a
/// snapshot's only by case would still read as one of its events).
pub fn is_roster_event_id(id: &str) -> bool {
    id.get(..EVENT_ID_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(EVENT_ID_PREFIX))
}

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
    /// A future starter whose start an older snapshot of the same source
    /// scheduled, and whom this one no longer lists: the offer is
    /// withdrawn (their scheduled start is rescinded; see
    /// [`newer_snapshot`]).
    Withdrawal,
}

impl ChangeKind {
    /// True for the changes that end someone's access or a start to come
    /// (leavers, withdrawals): a sync applies them first and shows them
    /// first, and the guard counts them.
    pub fn ends(self) -> bool {
        matches!(self, ChangeKind::Leaver | ChangeKind::Withdrawal)
    }
}

/// One change a roster would make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterChange {
    pub employee_id: String,
    pub kind: ChangeKind,
    pub display_name: String,
    pub changes: Vec<FieldChange>,
    pub attrs: AttributesPatch,
    /// A withdrawal's scheduled start (the event id an older snapshot
    /// gave it), which its event rescinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescinds: Option<String>,
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

    /// At most `max` changes to show a person (leavers and withdrawals
    /// first: they are what the guard is about); the counts tell how many
    /// there are in all.
    pub fn shown(&self, max: usize) -> RosterDiff {
        let mut changes: Vec<RosterChange> = self
            .changes
            .iter()
            .filter(|c| c.kind.ends())
            .take(max)
            .cloned()
            .collect();
        let room = max.saturating_sub(changes.len());
        changes.extend(
            self.changes
                .iter()
                .filter(|c| !c.kind.ends())
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
    /// Future starters whose start is withdrawn.
    #[serde(default)]
    pub withdrawals: u64,
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
                ChangeKind::Withdrawal => &mut c.withdrawals,
            } += 1;
            c.total += 1;
        }
        c
    }
}

/// How many problems the answer to an invalid roster lists at most.
pub const MAX_PROBLEMS: usize = 100;

/// The problems of the entry at place `i` of a roster on its own: its id,
/// its attributes, and a name (joiners need one). An id listed twice is
/// found across entries ([`duplicate_problem`]).
pub fn entry_problems(i: usize, e: &RosterEntry) -> Vec<FieldViolation> {
    let path = format!("roster[{i}]");
    let mut v = Vec::new();
    if let Err(msg) = validate_employee_id(&e.employee_id) {
        v.push(FieldViolation::new(format!("{path}.employee_id"), msg));
    }
    v.extend(e.attrs.validate(&path, &e.employee_id));
    if e.attrs.display_name.as_deref().unwrap_or("").is_empty() {
        v.push(FieldViolation::new(
            format!("{path}.display_name"),
            "is required",
        ));
    }
    v
}

/// The problem of the entry at place `i`, whose employee id an entry
/// before it has.
pub fn duplicate_problem(i: usize, employee_id: &str) -> FieldViolation {
    FieldViolation::new(
        format!("roster[{i}].employee_id"),
        format!("employee {employee_id} appears twice in the roster"),
    )
}

/// The answer to a roster with `problems` (by place; `more`: further
/// problems were not listed).
pub fn invalid_roster(mut problems: Vec<FieldViolation>, more: bool) -> DomainError {
    if more {
        problems.push(FieldViolation::new(
            "roster",
            "more problems follow; fix these first",
        ));
    }
    DomainError::invalid(
        format!("the roster has {} problem(s)", problems.len()),
        problems,
    )
}

/// The first management cycle among `n` people numbered `0..n`, each with
/// the number of their manager among them (`manager`; `None`: none, or
/// one outside them): the people in it with the first repeated at the end
/// (`[a, b, a]`), and the number it was entered at. People are tried in
/// order of number, so the same line gives the same answer.
pub fn first_cycle(
    n: usize,
    manager: impl Fn(usize) -> Option<usize>,
) -> Option<(usize, Vec<usize>)> {
    // 0: unvisited, 1: on the current path, 2: done.
    let mut mark = vec![0u8; n];
    for start in 0..n {
        if mark[start] != 0 {
            continue;
        }
        let mut path = vec![start];
        mark[start] = 1;
        let mut cur = start;
        while let Some(next) = manager(cur).filter(|&m| m < n) {
            match mark[next] {
                0 => {
                    mark[next] = 1;
                    path.push(next);
                    cur = next;
                }
                1 => {
                    let from = path.iter().position(|&p| p == next).unwrap_or(0);
                    let mut cycle = path[from..].to_vec();
                    cycle.push(next);
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
/// nothing. `today` is the roster's day (the local date of its `as_of` in
/// its zone): a pre-hire's start after it is still to come.
pub fn classify(e: &RosterEntry, cur: Option<&Identity>, today: NaiveDate) -> Option<RosterChange> {
    classify_kind(e, cur, today)
        .map(|(kind, fields)| change_of(e, kind, fields, kept_start(e, cur, today)))
}

/// The start a pre-hire is known to have after the roster's day
/// (`today`): their first day is still to come.
fn start_to_come(cur: &Identity, today: NaiveDate) -> Option<NaiveDate> {
    (cur.status == Status::PreHire)
        .then_some(cur.attrs.start_date)
        .flatten()
        .filter(|d| *d > today)
}

/// The start date a listed pre-hire keeps when their entry gives none (an
/// absent or empty `start_date` keeps the one known), when it is after the
/// roster's day (`today`). The change made from the entry carries it, so
/// their hire is scheduled on that day, not made at once: leaving the date
/// out never gives access before the first day. (A pre-hire with no start
/// to come is listed as working here: hired as of the roster.)
pub fn kept_start(e: &RosterEntry, cur: Option<&Identity>, today: NaiveDate) -> Option<NaiveDate> {
    if e.attrs.start_date.is_some() {
        return None;
    }
    start_to_come(cur?, today)
}

/// What [`classify`] finds, without the change itself: its kind and the
/// fields it changes. A roster of a million people keeps these beside its
/// entries and makes each change ([`change_of`]) when it is taken, rather
/// than holding every entry twice.
pub fn classify_kind(
    e: &RosterEntry,
    cur: Option<&Identity>,
    today: NaiveDate,
) -> Option<(ChangeKind, Vec<FieldChange>)> {
    match cur {
        None => Some((ChangeKind::Joiner, vec![])),
        // Never employed (an offer withdrawn, or a leaver never hired): a
        // joiner, not a returning employee.
        Some(cur) if cur.status == Status::Terminated && cur.history.employments == 0 => {
            Some((ChangeKind::Joiner, vec![]))
        }
        Some(cur) if cur.status == Status::Terminated => Some((ChangeKind::Rehire, vec![])),
        // Announced by a future hire that is still to come, and listed as
        // that hire says (same start date, same attributes): nothing new.
        // Hiring them again would schedule a second hire at each roster
        // that lists them before their first day.
        Some(cur) if announced_as_listed(e, cur, today) => None,
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

/// True when `cur` is a pre-hire only a future hire announced, with a
/// start after the roster's day (`today`), and entry `e` says what that
/// hire says: the same start date (or none, which keeps it) and no
/// attribute that would change.
fn announced_as_listed(e: &RosterEntry, cur: &Identity, today: NaiveDate) -> bool {
    let Some(start) = start_to_come(cur, today) else {
        return false;
    };
    cur.history.last.is_none()
        && cur.history.announced.is_some()
        && e.attrs.start_date.is_none_or(|d| d == start)
        && diff_attributes(&cur.attrs, &crate::history::preview_update(cur, &e.attrs)).is_empty()
}

/// The change entry `e` makes, of `kind`, changing `fields` (see
/// [`classify_kind`]), with the start date the person keeps when the entry
/// gives none (`kept`, see [`kept_start`]).
pub fn change_of(
    e: &RosterEntry,
    kind: ChangeKind,
    fields: Vec<FieldChange>,
    kept: Option<NaiveDate>,
) -> RosterChange {
    let mut attrs = e.attrs.clone();
    if attrs.start_date.is_none() {
        attrs.start_date = kept;
    }
    RosterChange {
        employee_id: e.employee_id.clone(),
        kind,
        display_name: e.attrs.display_name.clone().unwrap_or_default(),
        changes: fields,
        attrs,
        rescinds: None,
    }
}

/// What a roster snapshot said, as a fingerprint: the same for the same
/// header (`as_of` and time zone, as sent) and the same entries in any
/// order, different when any entry differs. A snapshot sent again under a
/// sync id already used is a retry only if its fingerprint is the same; a
/// different one is refused (a correction needs a new sync id), so that
/// no export is silently answered with another's outcome.
///
/// Order does not count: each entry's SHA-256 is added (as a 256-bit
/// number, wrapping) to a running sum, so a feed that streams its roster
/// in another order on a retry is still retrying, and the fingerprint of a
/// million entries needs 40 bytes, not the entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RosterDigest {
    sum: [u64; 4],
    entries: u64,
}

impl RosterDigest {
    /// Adds one entry.
    pub fn add(&mut self, e: &RosterEntry) {
        let bytes = serde_json::to_vec(e).unwrap_or_default();
        self.add_bytes(&bytes);
    }

    /// Adds an entry the sender sent but that could not be read.
    pub fn add_unreadable(&mut self) {
        self.add_bytes(b"\0unreadable entry");
    }

    fn add_bytes(&mut self, bytes: &[u8]) {
        let h = Sha256::digest(bytes);
        let mut carry = 0u64;
        for (i, limb) in self.sum.iter_mut().enumerate() {
            let mut word = [0u8; 8];
            word.copy_from_slice(&h[i * 8..i * 8 + 8]);
            let (a, c1) = limb.overflowing_add(u64::from_le_bytes(word));
            let (b, c2) = a.overflowing_add(carry);
            *limb = b;
            carry = u64::from(c1) + u64::from(c2);
        }
        self.entries += 1;
    }

    /// The fingerprint of the snapshot: its header as sent (`as_of` and
    /// `time_zone`, trimmed) and its entries, as 64 hex digits.
    pub fn finish(&self, as_of: &str, time_zone: &str) -> String {
        let mut h = Sha256::new();
        h.update(b"idgov roster v1\0");
        h.update(as_of.trim().as_bytes());
        h.update(b"\0");
        h.update(time_zone.trim().as_bytes());
        h.update(b"\0");
        h.update(self.entries.to_le_bytes());
        for limb in self.sum {
            h.update(limb.to_le_bytes());
        }
        hex::encode(h.finalize())
    }
}

/// Which of two roster snapshots of one source is HR's newer word: the
/// later `as_of`, and of two with the same time the greater sync id (so
/// that snapshots taken in any order decide the same way).
///
/// The rule it serves, **the newest snapshot decides a future start**: a
/// snapshot that lists a person with a start date after its time
/// schedules their hire; of the starts snapshots of one source schedule
/// for one person, only the newest snapshot's stands. A newer snapshot
/// that lists them with another start date or other attributes schedules
/// a new start and rescinds the older one; one that does not list them
/// withdraws it ([`ChangeKind::Withdrawal`]); one that lists them as
/// announced changes nothing. A snapshot older than one already applied
/// schedules nothing for a person the newer one already decided.
pub fn newer_snapshot(a: (DateTime<Utc>, &str), b: (DateTime<Utc>, &str)) -> bool {
    a > b
}

/// The sync id of the snapshot that made roster event `event_id`
/// (`roster:<sync_id>:<employee_id>`, see [`event_id`]); `None` for an
/// event no snapshot made.
pub fn sync_of_event_id(event_id: &str) -> Option<&str> {
    if !is_roster_event_id(event_id) {
        return None;
    }
    let rest = event_id.get(EVENT_ID_PREFIX.len()..)?;
    rest.rsplit_once(':').map(|(sync, _)| sync)
}

/// The withdrawal of future starter `i`, whom the roster does not list,
/// rescinding their scheduled start `rescinds`. It shows the start date
/// they would have had going.
pub fn withdrawal(i: &Identity, rescinds: String) -> RosterChange {
    RosterChange {
        employee_id: i.employee_id.clone(),
        kind: ChangeKind::Withdrawal,
        display_name: i.attrs.display_name.clone(),
        changes: vec![FieldChange {
            field: "start_date".into(),
            old: i
                .attrs
                .start_date
                .map(|d| d.to_string())
                .unwrap_or_default(),
            new: String::new(),
        }],
        attrs: AttributesPatch::default(),
        rescinds: Some(rescinds),
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
        rescinds: None,
    }
}

/// Diffs `entries` against `identities` (every known identity): the
/// listed people's changes in roster order, then the leavers by employee
/// id. (The service computes the same a page of people at a time.)
pub fn diff(
    entries: &[RosterEntry],
    identities: &HashMap<String, Identity>,
    today: NaiveDate,
) -> RosterDiff {
    let mut out = RosterDiff::default();
    let mut present = HashSet::with_capacity(entries.len());
    for e in entries {
        present.insert(e.employee_id.as_str());
        match classify(e, identities.get(&e.employee_id), today) {
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
/// joiner (or a returning employee) whose start date (in `zone`) is after
/// `as_of` is hired at the start of that day: the event is scheduled, and
/// nobody gets access before their first day (a joiner is a pre-hire
/// until then). The event keeps the roster's zone, so its dates mean what
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
        ChangeKind::Withdrawal => EventKind::Rescind,
    };
    let event_id = event_id(sync_id, &c.employee_id);
    let effective_at = match (c.kind, c.attrs.start_date) {
        (ChangeKind::Joiner | ChangeKind::Rehire, Some(d)) if d > local_date(as_of, zone) => {
            local_day_start(d, zone).unwrap_or(as_of)
        }
        _ => as_of,
    };
    let payload = match &c.rescinds {
        None => serde_json::to_vec(&(&event_id, kind, &c.attrs)),
        Some(target) => serde_json::to_vec(&(&event_id, kind, &c.attrs, target)),
    }
    .unwrap_or_default();
    HrEvent {
        source: source.to_string(),
        event_id,
        kind,
        employee_id: c.employee_id,
        effective_at,
        effective_input: effective_at.to_rfc3339(),
        time_zone: zone.name().to_string(),
        attrs: c.attrs,
        rescinds_event_id: c.rescinds,
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
        changes.sort_by_key(|c| !c.kind.ends());
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

    /// The tests' roster day.
    fn today() -> NaiveDate {
        t0().date_naive()
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

    /// A pre-hire announced by a future hire, and a roster entry that says
    /// the same: unchanged (no second hire is scheduled). Any difference
    /// (start date, an attribute, no start date given, a history beyond
    /// the announcement) keeps it a joiner.
    #[test]
    fn a_future_starter_listed_as_announced_is_unchanged() {
        let day = |m, d| chrono::NaiveDate::from_ymd_opt(2027, m, d);
        let mut announced = person("P", "Sales", Status::PreHire);
        announced.attrs.start_date = day(6, 1);
        announced.history.announced = Some(crate::history::EventKey {
            at: t0(),
            rank: 0,
            source: "workday".into(),
            event_id: "roster:s0:P".into(),
        });
        let listed = |f: &dyn Fn(&mut AttributesPatch)| {
            let mut e = entry("P", "Sales");
            e.attrs.start_date = day(6, 1);
            f(&mut e.attrs);
            e
        };
        assert_eq!(
            classify_kind(&listed(&|_| {}), Some(&announced), today()),
            None
        );
        // No start date keeps the one known.
        assert_eq!(
            classify_kind(&listed(&|a| a.start_date = None), Some(&announced), today()),
            None
        );
        let joiner = Some((ChangeKind::Joiner, vec![]));
        for (what, e) in [
            ("a later start", listed(&|a| a.start_date = day(7, 1))),
            ("an earlier start", listed(&|a| a.start_date = day(5, 1))),
            (
                "no start date and another title",
                listed(&|a| {
                    a.start_date = None;
                    a.title = Some("Lead".into());
                }),
            ),
            (
                "another department",
                listed(&|a| a.department = Some("Finance".into())),
            ),
            ("another title", listed(&|a| a.title = Some("Lead".into()))),
        ] {
            assert_eq!(
                classify_kind(&e, Some(&announced), today()),
                joiner,
                "{what}"
            );
        }
        // Known from an event before the hire, or never announced: a joiner.
        let mut known = announced.clone();
        known.history.last = known.history.announced.clone();
        assert_eq!(
            classify_kind(&listed(&|_| {}), Some(&known), today()),
            joiner
        );
        let mut unannounced = announced.clone();
        unannounced.history.announced = None;
        assert_eq!(
            classify_kind(&listed(&|_| {}), Some(&unannounced), today()),
            joiner
        );
        // Their start kept, a change without a start date is still hired
        // on it, not when the roster arrives.
        let retitled = listed(&|a| {
            a.start_date = None;
            a.title = Some("Lead".into());
        });
        let c = classify(&retitled, Some(&announced), today()).expect("a joiner");
        assert_eq!(c.attrs.start_date, day(6, 1));
        let ev = event_of(c, "hr", "s1", t0(), chrono_tz::UTC);
        assert_eq!(ev.effective_at.date_naive(), day(6, 1).unwrap_or_default());
        // Someone working here keeps nothing this way: their start is past.
        let active = person("A", "Sales", Status::Active);
        assert_eq!(
            kept_start(&entry("A", "Sales"), Some(&active), today()),
            None
        );
    }

    #[test]
    fn classifies_every_kind() {
        let known: HashMap<_, _> = [
            person("A", "Sales", Status::Active),
            person("B", "Sales", Status::Active),
            person("C", "Sales", Status::Active),
            Identity {
                history: crate::history::History {
                    employments: 1,
                    ..Default::default()
                },
                ..person("D", "Sales", Status::Terminated)
            },
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
        let d = diff(&roster, &known, today());
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
        let d = diff(&[later], &HashMap::new(), today());
        let events = to_events(d.changes, "hr", "s1", t0(), chrono_tz::Europe::Oslo);
        assert_eq!(
            events[0].effective_at.to_rfc3339(),
            "2026-01-31T23:00:00+00:00"
        );
    }

    /// A returning employee whose start date is ahead is rehired on it,
    /// not when the roster arrives; someone terminated who never worked
    /// here (an offer withdrawn) is a joiner.
    #[test]
    fn a_returning_employee_starting_later_is_rehired_on_their_start_date() {
        let mut departed = person("D", "Sales", Status::Terminated);
        departed.history.employments = 1;
        let mut back = entry("D", "Sales");
        back.attrs.start_date = chrono::NaiveDate::from_ymd_opt(2026, 2, 1);
        let (kind, _) =
            classify_kind(&back, Some(&departed), today()).unwrap_or((ChangeKind::Update, vec![]));
        assert_eq!(kind, ChangeKind::Rehire);
        let ev = event_of(
            change_of(&back, kind, vec![], None),
            "hr",
            "s1",
            t0(),
            chrono_tz::Europe::Oslo,
        );
        assert_eq!(ev.kind, EventKind::Rehire);
        assert_eq!(ev.effective_at.to_rfc3339(), "2026-01-31T23:00:00+00:00");
        // Back today or earlier: rehired as of the snapshot.
        back.attrs.start_date = chrono::NaiveDate::from_ymd_opt(2025, 12, 1);
        let ev = event_of(
            change_of(&back, kind, vec![], None),
            "hr",
            "s1",
            t0(),
            chrono_tz::UTC,
        );
        assert_eq!(ev.effective_at, t0());
        let withdrawn = person("W", "Sales", Status::Terminated);
        assert_eq!(
            classify_kind(&entry("W", "Sales"), Some(&withdrawn), today()),
            Some((ChangeKind::Joiner, vec![]))
        );
    }

    /// A withdrawal rescinds the start an older snapshot scheduled, under
    /// the snapshot's own event id, and applies before the other changes.
    #[test]
    fn a_withdrawal_rescinds_the_start_an_older_snapshot_scheduled() {
        let p = person("P", "Sales", Status::PreHire);
        let changes = vec![
            change_of(&entry("N", "Sales"), ChangeKind::Joiner, vec![], None),
            withdrawal(&p, "roster:s0:P".into()),
        ];
        let events = to_events(changes, "hr", "s1", t0(), chrono_tz::UTC);
        let w = &events[0];
        assert_eq!(
            (w.kind, w.event_id.as_str(), w.rescinds_event_id.as_deref()),
            (EventKind::Rescind, "roster:s1:P", Some("roster:s0:P"))
        );
        assert!(w.from_roster);
        // Another target is another payload: a re-sent snapshot that
        // rescinds something else is a conflict, not a duplicate.
        let other = event_of(
            withdrawal(&p, "roster:s9:P".into()),
            "hr",
            "s1",
            t0(),
            chrono_tz::UTC,
        );
        assert_ne!(other.fingerprint, w.fingerprint);
        let counts = DiffCounts::of([ChangeKind::Withdrawal, ChangeKind::Leaver].into_iter(), 0);
        assert_eq!(
            (counts.withdrawals, counts.leavers, counts.total),
            (1, 1, 2)
        );
    }

    #[test]
    fn a_roster_event_names_its_snapshot() {
        assert_eq!(sync_of_event_id(&event_id("s1", "E")), Some("s1"));
        assert_eq!(
            sync_of_event_id(&event_id("2026:12:03", "E-1")),
            Some("2026:12:03")
        );
        assert_eq!(sync_of_event_id("ROSTER:s2:E"), Some("s2"));
        assert_eq!(sync_of_event_id("hr-1"), None);
        assert_eq!(sync_of_event_id("roster:"), None);
    }

    /// The newer of two snapshots: the later time, and of two at the same
    /// time the greater sync id; never both, never neither unless equal.
    #[test]
    fn the_newer_snapshot_is_decided_the_same_way_in_any_order() {
        let times = [t0(), t0() + chrono::Duration::hours(1)];
        let ids = ["a", "b"];
        for &ta in &times {
            for &tb in &times {
                for ia in ids {
                    for ib in ids {
                        let (x, y) = ((ta, ia), (tb, ib));
                        let (xy, yx) = (newer_snapshot(x, y), newer_snapshot(y, x));
                        assert!(!(xy && yx), "{x:?} {y:?}");
                        assert_eq!(xy || yx, x != y, "{x:?} {y:?}");
                        if ta != tb {
                            assert_eq!(xy, ta > tb);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn management_cycles_are_found_with_their_people() {
        // 0 has no manager; 1 → 2 → 3 → 1.
        let line = [None, Some(2), Some(3), Some(1)];
        let (at, cycle) = first_cycle(4, |i| line[i]).expect("a cycle");
        assert_eq!(cycle, [1, 2, 3, 1]);
        assert_eq!(at, 1);
        // 3 reports to 0 instead: a line, no cycle.
        let line = [None, Some(2), Some(3), Some(0)];
        assert_eq!(first_cycle(4, |i| line[i]), None);
        // Someone who is their own manager; a manager outside the people.
        assert_eq!(
            first_cycle(2, |i| [Some(9), Some(1)][i]),
            Some((1, vec![1, 1]))
        );
        // Tried in order: the cycle entered first is the one answered.
        let line = [Some(1), Some(0), Some(3), Some(2)];
        assert_eq!(first_cycle(4, |i| line[i]), Some((0, vec![0, 1, 0])));
    }

    #[test]
    fn an_entry_names_its_problems_by_place() {
        let mut nameless = entry("B", "X");
        nameless.attrs.display_name = None;
        let fields =
            |v: Vec<FieldViolation>| -> Vec<String> { v.into_iter().map(|v| v.field).collect() };
        assert_eq!(
            fields(entry_problems(2, &nameless)),
            ["roster[2].display_name"]
        );
        assert!(entry_problems(0, &entry("A", "X")).is_empty());
        let bad = entry("*)(uid=*", "X");
        assert_eq!(fields(entry_problems(7, &bad)), ["roster[7].employee_id"]);
        assert_eq!(duplicate_problem(1, "A").field, "roster[1].employee_id");
        let err = invalid_roster(vec![duplicate_problem(1, "A")], true);
        assert_eq!(fields(err.violations), ["roster[1].employee_id", "roster"]);
    }

    fn digest_of(entries: &[RosterEntry], as_of: &str, zone: &str) -> String {
        let mut d = RosterDigest::default();
        for e in entries {
            d.add(e);
        }
        d.finish(as_of, zone)
    }

    /// The fingerprint of a snapshot: the same for its entries in any
    /// order (generated shuffles), different for any one entry changed,
    /// added, dropped or listed twice, or another header.
    #[test]
    fn a_roster_fingerprint_ignores_order_and_sees_every_change() {
        use rand::rngs::StdRng;
        use rand::seq::SliceRandom;
        use rand::{Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(20261203);
        for round in 0..200 {
            let n = rng.random_range(1..40);
            let entries: Vec<RosterEntry> = (0..n)
                .map(|i| {
                    entry(
                        &format!("E{i}"),
                        ["Sales", "Finance", "IT"][rng.random_range(0..3)],
                    )
                })
                .collect();
            let at = "2026-12-01T00:00:00Z";
            let first = digest_of(&entries, at, "Europe/Oslo");
            let mut shuffled = entries.clone();
            shuffled.shuffle(&mut rng);
            assert_eq!(
                digest_of(&shuffled, at, "Europe/Oslo"),
                first,
                "round {round}"
            );
            assert_eq!(
                digest_of(&shuffled, " 2026-12-01T00:00:00Z ", "Europe/Oslo "),
                first
            );

            let k = rng.random_range(0..n);
            let mut changed = shuffled.clone();
            changed[k].attrs.title = Some("Changed".into());
            assert_ne!(
                digest_of(&changed, at, "Europe/Oslo"),
                first,
                "round {round}"
            );
            let mut dropped = shuffled.clone();
            dropped.remove(k);
            assert_ne!(
                digest_of(&dropped, at, "Europe/Oslo"),
                first,
                "round {round}"
            );
            let mut twice = shuffled.clone();
            twice.push(shuffled[k].clone());
            assert_ne!(digest_of(&twice, at, "Europe/Oslo"), first, "round {round}");
            let mut added = shuffled.clone();
            added.push(entry("NEW", "Sales"));
            assert_ne!(digest_of(&added, at, "Europe/Oslo"), first, "round {round}");
            assert_ne!(
                digest_of(&entries, "2026-12-02T00:00:00Z", "Europe/Oslo"),
                first
            );
            assert_ne!(digest_of(&entries, at, "UTC"), first);
            assert_ne!(digest_of(&entries, at, ""), first);
        }
        // An unreadable entry counts as an entry of its own.
        let mut d = RosterDigest::default();
        d.add(&entry("A", "Sales"));
        let one = d.finish("", "");
        d.add_unreadable();
        assert_ne!(d.finish("", ""), one);
        assert_eq!(one.len(), 64);
    }

    /// The running sum carries between its 64-bit limbs (a sum that
    /// dropped carries would still be order-free, but weaker).
    #[test]
    fn the_fingerprint_sum_carries() {
        let mut d = RosterDigest {
            sum: [u64::MAX, u64::MAX, 0, 0],
            entries: 0,
        };
        d.add_bytes(b"x");
        let h = Sha256::digest(b"x");
        let limb =
            |i: usize| u64::from_le_bytes(h[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        // SHA-256("x") has no zero low limb and no all-ones third limb, so
        // the carries are exactly: out of limb 0, through limb 1, into 2.
        assert!(limb(0) != 0 && limb(2) != u64::MAX);
        assert_eq!(d.sum, [limb(0) - 1, limb(1), limb(2) + 1, limb(3)]);
        assert_eq!(d.entries, 1);
    }
}

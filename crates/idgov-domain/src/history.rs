//! A person's HR history and the state it gives.
//!
//! **The ordering rule.** For every person, the state after any set of
//! accepted events equals the state after applying those events in
//! *effective-time order*, whatever order they arrived in. Events with the
//! same effective time are ordered by kind (hire, rehire, update and move,
//! terminate: at one instant a termination comes last), then by source, then
//! by event id; nothing depends on arrival. [`EventKey`] is that order.
//!
//! The state is a fold: [`step`] applies one event to the state before it,
//! [`settle`] applies the **end-date rule** (an end date that has passed
//! terminates, at the end of that day in the zone the date was given in,
//! whenever the person was created). An event newer than everything folded
//! so far is applied with one step ([`fold_in`]); an older one makes the
//! caller [`replay`] the person's whole history in order. Both give the
//! same state: the fast path is one step of the replay.
//!
//! Per field, a later value of *that field* wins: an event sets only the
//! fields it carries, so an older update still sets a field no newer event
//! touched. Status changes are ordered by their own times.
//!
//! **Rehire and the background check.** A rehire starts a new employment:
//! dates and the background check of the old one are cleared. A clearance
//! counts for the current employment only: after a rehire, `cleared` lifts
//! the gate only with a `background_check_date` on or after the new start
//! date; an undated or older clearance leaves the check pending.

use crate::Classification;
use crate::hr::{EventKind, HrEvent};
use crate::identity::{Attributes, AttributesPatch, BackgroundCheck, Identity, Status};
use crate::time::{local_date, local_day_start, parse_zone};
use chrono::{DateTime, Days, Duration, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// The position of an event in a person's history: effective time, then the
/// kind's rank, then source, then event id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EventKey {
    pub at: DateTime<Utc>,
    pub rank: u8,
    pub source: String,
    pub event_id: String,
}

/// The rank of a kind among events of the same instant.
pub fn rank(kind: EventKind) -> u8 {
    match kind {
        EventKind::Hire => 0,
        EventKind::Rehire => 1,
        EventKind::Update | EventKind::Move => 2,
        EventKind::Terminate => 3,
        EventKind::Rescind => 4,
    }
}

/// The rank of a roster presence: with updates.
const PRESENCE_RANK: u8 = 2;

impl EventKey {
    /// The key of an event. A roster snapshot's events rank as presence (or,
    /// for its leavers, as a termination) whatever kind the diff gave them.
    pub fn of(ev: &HrEvent) -> EventKey {
        let rank = match (ev.from_roster, ev.kind) {
            (true, EventKind::Terminate) => rank(EventKind::Terminate),
            (true, _) => PRESENCE_RANK,
            (false, kind) => rank(kind),
        };
        EventKey {
            at: ev.effective_at,
            rank,
            source: ev.source.clone(),
            event_id: ev.event_id.clone(),
        }
    }

    /// The key of the termination an end date causes.
    fn end_date(at: DateTime<Utc>) -> EventKey {
        EventKey {
            at,
            rank: rank(EventKind::Terminate),
            source: "idgov".into(),
            event_id: "end-date".into(),
        }
    }
}

/// A roster snapshot's word about one person in it: who they were at
/// `as_of`. It takes part in the fold like an event: it starts an
/// employment for someone unknown or departed, and updates anyone else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub source: String,
    pub sync_id: String,
    pub as_of: DateTime<Utc>,
    /// The zone the roster's dates were given in.
    pub time_zone: String,
    pub attrs: AttributesPatch,
}

impl Presence {
    /// The listing this presence leaves in the person's history.
    pub fn listing(&self, attrs: Option<AttributesPatch>) -> Listing {
        Listing {
            source: self.source.clone(),
            sync_id: self.sync_id.clone(),
            as_of: self.as_of,
            time_zone: self.time_zone.clone(),
            attrs,
            same_as_newer: false,
        }
    }

    pub fn key(&self, employee_id: &str) -> EventKey {
        EventKey {
            at: self.as_of,
            rank: PRESENCE_RANK,
            source: self.source.clone(),
            event_id: crate::roster::event_id(&self.sync_id, employee_id),
        }
    }
}

/// The newest roster snapshot applied: HR's statement of who worked here at
/// `as_of`. Someone it did not list was not employed then: in effective
/// order its absence terminates them if they were active at that time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterMark {
    pub source: String,
    pub sync_id: String,
    pub as_of: DateTime<Utc>,
    pub time_zone: String,
}

impl RosterMark {
    /// The key of the snapshot's word about `employee_id`: the same as the
    /// termination it writes for a leaver it finds.
    pub fn key(&self, employee_id: &str) -> EventKey {
        EventKey {
            at: self.as_of,
            rank: rank(EventKind::Terminate),
            source: self.source.clone(),
            event_id: crate::roster::event_id(&self.sync_id, employee_id),
        }
    }

    /// The person's listing in this snapshot, if it listed them.
    pub fn listing<'a>(&self, person: Option<&'a Identity>) -> Option<&'a Listing> {
        person?
            .history
            .rosters
            .iter()
            .find(|l| l.source == self.source && l.sync_id == self.sync_id)
    }

    /// True when the snapshot listed this person.
    pub fn lists(&self, person: Option<&Identity>) -> bool {
        self.listing(person).is_some()
    }

    /// A listing in this snapshot that gives no attributes: the person's
    /// row was an event of its own, or was refused.
    pub fn listing_without_attributes(&self) -> Listing {
        Listing {
            source: self.source.clone(),
            sync_id: self.sync_id.clone(),
            as_of: self.as_of,
            time_zone: self.time_zone.clone(),
            attrs: None,
            same_as_newer: false,
        }
    }
}

/// How many of the newest roster snapshots a replay takes into account
/// (their listings are kept per person, their absences folded). An event
/// older than all of them is still ordered among events, but no longer
/// among the snapshots older than the horizon.
pub const ROSTER_HORIZON: usize = 6;

/// A roster snapshot that listed a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    pub source: String,
    pub sync_id: String,
    pub as_of: DateTime<Utc>,
    pub time_zone: String,
    /// The attributes it gave, when it did not change the person (a change
    /// is an event of its own, which carries them).
    pub attrs: Option<AttributesPatch>,
    /// The attributes are those of the next newer listing (kept once: a
    /// person unchanged across snapshots costs a few bytes per snapshot).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub same_as_newer: bool,
}

impl Listing {
    /// The presence this listing folds as, if it is not an event.
    pub fn presence(&self) -> Option<Presence> {
        Some(Presence {
            source: self.source.clone(),
            sync_id: self.sync_id.clone(),
            as_of: self.as_of,
            time_zone: self.time_zone.clone(),
            attrs: self.attrs.clone()?,
        })
    }
}

/// The listings with their attributes filled in (newest first).
pub fn materialized(listings: &[Listing]) -> Vec<Listing> {
    let mut carry: Option<AttributesPatch> = None;
    listings
        .iter()
        .map(|l| {
            let mut l = l.clone();
            if l.same_as_newer {
                l.attrs = carry.clone();
                l.same_as_newer = false;
            }
            carry = l.attrs.clone();
            l
        })
        .collect()
}

/// Notes a listing in a person's history: newest first, once per
/// snapshot, at most [`ROSTER_HORIZON`]; attributes equal to the next newer
/// listing's are kept once.
pub fn note_listing(h: &mut History, l: Listing) {
    let mut all = materialized(&h.rosters);
    all.retain(|x| !(x.source == l.source && x.sync_id == l.sync_id));
    let at = all
        .iter()
        .position(|x| x.as_of < l.as_of)
        .unwrap_or(all.len());
    all.insert(at, l);
    all.truncate(ROSTER_HORIZON);
    let mut newer: Option<AttributesPatch> = None;
    for x in all.iter_mut() {
        let own = x.attrs.clone();
        if own.is_some() && own == newer {
            x.attrs = None;
            x.same_as_newer = true;
        }
        newer = own;
    }
    h.rosters = all;
}

/// What a person's history leaves behind besides the attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The newest event (or end-date termination, or roster presence)
    /// folded into the state. `None` for a pre-hire that only a future
    /// hire announced.
    pub last: Option<EventKey>,
    /// When the current (or last) employment started.
    pub employment_start: Option<DateTime<Utc>>,
    /// How many employments have started; two or more means rehired.
    pub employments: u32,
    /// The background check as HR last reported it; the attributes hold
    /// the one that counts.
    pub reported_check: BackgroundCheck,
    /// The IANA zone the end date was given in.
    pub end_zone: Option<String>,
    /// The newest roster snapshots that listed this person.
    #[serde(default)]
    pub rosters: Vec<Listing>,
    /// For a pre-hire only announced by future hires: the earliest of them,
    /// whose attributes the pre-hire shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announced: Option<EventKey>,
    /// Birthright revoked by hand: not given back while the person and the
    /// rules that give it stay as they were then (see [`Suppressed::holds`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suppressed: Vec<Suppressed>,
}

/// A birthright grant revoked by hand, and the basis it was revoked on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppressed {
    pub entitlement_id: String,
    /// [`crate::policy::Policy::birthright_basis`] of the entitlement then.
    #[serde(alias = "policy_sha256")]
    pub basis_sha256: String,
    /// SHA-256 of the person's attributes then.
    pub attrs_sha256: String,
}

impl Suppressed {
    /// True while the person's attributes and what gives the entitlement by
    /// birthright are as they were when it was revoked. An unrelated policy
    /// edit does not undo a hand revocation; a change of the person (a move,
    /// a new title) or of the rules that give it does.
    pub fn holds(&self, basis_sha256: &str, attrs_sha256: &str) -> bool {
        self.basis_sha256 == basis_sha256 && self.attrs_sha256 == attrs_sha256
    }
}

impl Default for History {
    fn default() -> Self {
        History {
            last: None,
            employment_start: None,
            employments: 0,
            reported_check: BackgroundCheck::Pending,
            end_zone: None,
            rosters: Vec::new(),
            announced: None,
            suppressed: Vec::new(),
        }
    }
}

/// What the fold needs besides the events.
#[derive(Debug, Clone, Copy)]
pub struct FoldContext {
    /// Clearance of people whose HR data names none.
    pub default_clearance: Classification,
    /// The zone of events that name none (the policy's HR zone).
    pub default_zone: Tz,
}

/// One thing folded into a person's state.
#[derive(Debug, Clone, Copy)]
enum Item<'a> {
    Event(&'a HrEvent),
    Presence(&'a Presence),
    /// Absent from the newest roster snapshot.
    Absence(&'a RosterMark),
}

impl Item<'_> {
    fn key(&self, employee_id: &str) -> EventKey {
        match self {
            Item::Event(e) => EventKey::of(e),
            Item::Presence(p) => p.key(employee_id),
            Item::Absence(m) => m.key(employee_id),
        }
    }
    fn at(&self) -> DateTime<Utc> {
        match self {
            Item::Event(e) => e.effective_at,
            Item::Presence(p) => p.as_of,
            Item::Absence(m) => m.as_of,
        }
    }
}

fn zone_named(name: &str, ctx: &FoldContext) -> Tz {
    if name.trim().is_empty() {
        ctx.default_zone
    } else {
        parse_zone(name).unwrap_or(ctx.default_zone)
    }
}

/// The background check that counts: a clearance counts for the first
/// employment, and after a rehire only when dated on or after its start.
pub fn effective_check(a: &Attributes, h: &History) -> BackgroundCheck {
    match h.reported_check {
        BackgroundCheck::Cleared if h.employments >= 2 => {
            match (a.background_check_date, a.start_date) {
                (Some(checked), Some(start)) if checked >= start => BackgroundCheck::Cleared,
                _ => BackgroundCheck::Pending,
            }
        }
        other => other,
    }
}

fn blank(employee_id: &str, ctx: &FoldContext, now: DateTime<Utc>, t: DateTime<Utc>) -> Identity {
    Identity {
        employee_id: employee_id.to_string(),
        attrs: Attributes::new_person(ctx.default_clearance),
        status: Status::PreHire,
        attrs_effective_at: t,
        status_effective_at: t,
        created_at: now,
        updated_at: now,
        history: History::default(),
    }
}

/// Sets the fields `patch` carries, keeping track of the reported check and
/// the zone of the end date. The attributes' time moves only when they
/// change: a roster restating a person as they are says nothing new, and
/// whether its restatement came as an event or as a presence depends on
/// what was known when it arrived, so a restatement moving the time would
/// make the state depend on arrival order.
fn patch_into(p: &mut Identity, patch: &AttributesPatch, zone: Tz, t: DateTime<Utc>) {
    let before = (
        p.attrs.clone(),
        p.history.reported_check,
        p.history.end_zone.clone(),
    );
    p.attrs = patch.apply_to(&p.attrs);
    if let Some(b) = patch.background_check {
        p.history.reported_check = b;
    }
    if patch.end_date.is_some() {
        p.history.end_zone = Some(zone.name().to_string());
    } else if patch.clear_end_date {
        p.history.end_zone = None;
    }
    if before
        != (
            p.attrs.clone(),
            p.history.reported_check,
            p.history.end_zone.clone(),
        )
    {
        p.attrs_effective_at = p.attrs_effective_at.max(t);
    }
}

/// A new employment: a person unknown, announced, departed, or never hired.
fn start(p: &mut Identity, patch: &AttributesPatch, zone: Tz, t: DateTime<Utc>) {
    if p.status == Status::Terminated {
        // A returning person: keep who they are, not what they were
        // cleared for or when they worked.
        p.attrs.start_date = None;
        p.attrs.end_date = None;
        p.attrs.background_check_date = None;
        p.history.reported_check = BackgroundCheck::Pending;
        p.history.end_zone = None;
    }
    patch_into(p, patch, zone, t);
    if p.attrs.start_date.is_none() {
        p.attrs.start_date = Some(local_date(t, zone));
    }
    p.status = Status::Active;
    p.status_effective_at = t;
    p.attrs_effective_at = p.attrs_effective_at.max(t);
    p.history.employment_start = Some(t);
    p.history.employments += 1;
}

fn terminate(p: &mut Identity, patch: &AttributesPatch, zone: Tz, t: DateTime<Utc>) {
    patch_into(p, patch, zone, t);
    if patch.end_date.is_none() {
        // The last day worked: the day before an end-of-day boundary.
        p.attrs.end_date = Some(local_date(t - Duration::microseconds(1), zone));
        p.history.end_zone = Some(zone.name().to_string());
    }
    p.status = Status::Terminated;
    p.status_effective_at = t;
    p.attrs_effective_at = p.attrs_effective_at.max(t);
}

/// Folds one event (or presence) into the state before it. Returns the new
/// state and, where the event meant something other than its name, a note
/// for the audit trail.
fn step_item(
    employee_id: &str,
    cur: Option<Identity>,
    item: Item<'_>,
    ctx: &FoldContext,
    now: DateTime<Utc>,
) -> (Option<Identity>, Option<String>) {
    let t = item.at();
    let key = item.key(employee_id);
    // A person only announced by a future hire (or whose offer was
    // withdrawn) has no history yet: fold from nothing, so what the
    // announcement said never outlives it.
    let cur = cur.map(|c| {
        if c.history.last.is_none() && c.status != Status::Active {
            blank(employee_id, ctx, c.created_at, t)
        } else {
            c
        }
    });
    // A roster snapshot's events mean presence (or absence), whatever kind
    // the diff gave them when it arrived.
    let roster_absence;
    let item = match item {
        Item::Event(e) if e.from_roster && e.kind == EventKind::Terminate => {
            roster_absence = RosterMark {
                source: e.source.clone(),
                sync_id: e.event_id.clone(),
                as_of: e.effective_at,
                time_zone: e.time_zone.clone(),
            };
            Item::Absence(&roster_absence)
        }
        other => other,
    };
    let created = cur.as_ref().map(|c| c.created_at).unwrap_or(now);
    if let Item::Absence(m) = item {
        // Not listed: someone working here then left; anyone else is as was.
        let mut p = match cur {
            Some(c) if c.may_hold_access() => c,
            other => return (other, None),
        };
        terminate(
            &mut p,
            &AttributesPatch::default(),
            zone_named(&m.time_zone, ctx),
            t,
        );
        p.history.last = Some(key).max(p.history.last.take());
        p.created_at = created;
        p.updated_at = now;
        let sync = m
            .sync_id
            .strip_prefix(crate::roster::EVENT_ID_PREFIX)
            .and_then(|r| r.split(':').next())
            .unwrap_or(&m.sync_id);
        let note = format!(
            "not listed by roster snapshot {sync} of {} (as of {})",
            m.source,
            m.as_of.to_rfc3339()
        );
        return (Some(p), Some(note));
    }
    let (kind, patch, zone) = match item {
        Item::Event(e) if e.from_roster => {
            let kind = match cur.as_ref().map(|c| c.status) {
                None | Some(Status::Terminated | Status::PreHire) => EventKind::Rehire,
                Some(Status::Active | Status::Suspended) => EventKind::Update,
            };
            (kind, &e.attrs, zone_named(&e.time_zone, ctx))
        }
        Item::Event(e) => (e.kind, &e.attrs, zone_named(&e.time_zone, ctx)),
        Item::Presence(pr) => {
            // A roster presence starts anyone not working here (unknown,
            // departed, or known only from events before their hire) and
            // updates anyone else.
            let kind = match cur.as_ref().map(|c| c.status) {
                None | Some(Status::Terminated | Status::PreHire) => EventKind::Rehire,
                Some(Status::Active | Status::Suspended) => EventKind::Update,
            };
            (kind, &pr.attrs, zone_named(&pr.time_zone, ctx))
        }
        Item::Absence(_) => return (cur, None),
    };
    let mut note = None;
    let mut p = cur.unwrap_or_else(|| blank(employee_id, ctx, now, t));
    let known = p.history.last.is_some() || p.status != Status::PreHire;
    match kind {
        EventKind::Hire | EventKind::Rehire => match p.status {
            Status::PreHire | Status::Terminated => {
                if kind == EventKind::Hire && p.history.employments > 0 {
                    note = Some("hire of a departed person applied as rehire".into());
                } else if kind == EventKind::Rehire
                    && p.history.employments == 0
                    && matches!(item, Item::Event(e) if !e.from_roster)
                {
                    note = Some("rehire of a person never employed applied as hire".into());
                }
                start(&mut p, patch, zone, t);
            }
            Status::Active | Status::Suspended => {
                note = Some(format!("{kind} of an active person applied as update"));
                patch_into(&mut p, patch, zone, t);
            }
        },
        EventKind::Update | EventKind::Move => {
            if !known {
                note = Some(
                    "not hired yet: kept as a pre-hire; their hire decides when they start".into(),
                );
            }
            patch_into(&mut p, patch, zone, t);
        }
        EventKind::Terminate => match p.status {
            Status::Terminated if known => {
                note = Some("already terminated: attributes updated only".into());
                patch_into(&mut p, patch, zone, t);
            }
            _ => {
                if !known {
                    note = Some("never hired: recorded as departed".into());
                }
                terminate(&mut p, patch, zone, t);
            }
        },
        EventKind::Rescind => return (Some(p), None),
    }
    p.attrs.background_check = effective_check(&p.attrs, &p.history);
    p.history.last = Some(key).max(p.history.last.take());
    p.created_at = created;
    p.updated_at = now;
    (Some(p), note)
}

/// Applies the end-date rule up to `until`: an active person whose end date
/// is over is terminated at the end of that day (in the zone the date was
/// given in), or at the start of their employment if that came later.
/// Returns true when it terminated them.
pub fn settle(p: &mut Identity, until: DateTime<Utc>, ctx: &FoldContext) -> bool {
    let Some(end_at) = end_instant(p, ctx) else {
        return false;
    };
    if !p.may_hold_access() || end_at > until {
        return false;
    }
    let at = end_at.max(p.status_effective_at);
    p.status = Status::Terminated;
    p.status_effective_at = at;
    p.history.last = Some(EventKey::end_date(at)).max(p.history.last.take());
    true
}

/// When the person's end date is over: the start of the next day in the
/// zone the date was given in.
pub fn end_instant(p: &Identity, ctx: &FoldContext) -> Option<DateTime<Utc>> {
    let end = p.attrs.end_date?;
    let zone = zone_named(p.history.end_zone.as_deref().unwrap_or(""), ctx);
    end.checked_add_days(Days::new(1))
        .and_then(|d| local_day_start(d, zone))
}

/// The result of folding an event into a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folded {
    pub state: Option<Identity>,
    pub note: Option<String>,
    /// True when the end-date rule terminated the person.
    pub ended: bool,
}

/// Folds `ev` into `cur` when it is newer than everything folded so far
/// (and than each of the newest roster snapshots, `marks`, that did not
/// list the person). `None` means it is older: replay the person's history instead.
pub fn fold_in(
    cur: Option<&Identity>,
    ev: &HrEvent,
    marks: &[RosterMark],
    ctx: &FoldContext,
    now: DateTime<Utc>,
) -> Option<Folded> {
    let key = EventKey::of(ev);
    if marks
        .iter()
        .any(|m| !m.lists(cur) && key < m.key(&ev.employee_id))
    {
        return None;
    }
    fold_item(&ev.employee_id, cur, Item::Event(ev), ctx, now)
}

/// Folds a roster presence into `cur` when it is newer than everything
/// folded so far; `None` means replay.
pub fn fold_presence(
    employee_id: &str,
    cur: Option<&Identity>,
    presence: &Presence,
    ctx: &FoldContext,
    now: DateTime<Utc>,
) -> Option<Folded> {
    fold_item(employee_id, cur, Item::Presence(presence), ctx, now)
}

fn fold_item(
    employee_id: &str,
    cur: Option<&Identity>,
    item: Item<'_>,
    ctx: &FoldContext,
    now: DateTime<Utc>,
) -> Option<Folded> {
    let key = item.key(employee_id);
    if let Some(last) = cur.and_then(|c| c.history.last.as_ref())
        && key <= *last
    {
        return None;
    }
    let mut before = cur.cloned();
    let mut ended = false;
    if let Some(b) = before.as_mut() {
        ended |= settle(b, item.at(), ctx);
    }
    let (mut state, note) = step_item(employee_id, before, item, ctx, now);
    if let Some(s) = state.as_mut() {
        ended |= settle(s, now, ctx);
    }
    Some(Folded { state, note, ended })
}

/// The state `events` (every event folded for the person, in any order;
/// rescinds and future events are skipped) and the newest roster snapshots
/// `marks` (listing or not listing the person) give at `now`; `extra` is a
/// presence being folded now. `created_at` and the roster listings are kept
/// from `cur`.
pub fn replay(
    employee_id: &str,
    cur: Option<&Identity>,
    events: &[&HrEvent],
    extra: Option<&Presence>,
    marks: &[RosterMark],
    ctx: &FoldContext,
    now: DateTime<Utc>,
) -> Folded {
    let mut items: Vec<(EventKey, Item<'_>)> = events
        .iter()
        .filter(|e| e.kind != EventKind::Rescind && e.effective_at <= now)
        .map(|e| (EventKey::of(e), Item::Event(e)))
        .collect();
    let listings = cur
        .map(|c| materialized(&c.history.rosters))
        .unwrap_or_default();
    let listed = |m: &RosterMark| {
        listings
            .iter()
            .find(|l| l.source == m.source && l.sync_id == m.sync_id)
    };
    let presences: Vec<Presence> = marks
        .iter()
        .filter_map(listed)
        .filter_map(Listing::presence)
        .chain(extra.cloned())
        .filter(|p| p.as_of <= now)
        .collect();
    for p in &presences {
        items.push((p.key(employee_id), Item::Presence(p)));
    }
    let listed_extra =
        |m: &RosterMark| extra.is_some_and(|p| p.source == m.source && p.sync_id == m.sync_id);
    for m in marks
        .iter()
        .filter(|m| m.as_of <= now && !m.lists(cur) && !listed_extra(m))
    {
        items.push((m.key(employee_id), Item::Absence(m)));
    }
    items.sort_by(|a, b| a.0.cmp(&b.0));
    items.dedup_by(|a, b| a.0 == b.0);
    let created = cur.map(|c| c.created_at).unwrap_or(now);
    // A pre-hire announced by a future hire stays one until something
    // happens to them.
    let mut state: Option<Identity> = cur.filter(|c| c.history.last.is_none()).cloned();
    let mut note = None;
    let mut ended = false;
    for (_, item) in items {
        if let Some(s) = state.as_mut() {
            ended |= settle(s, item.at(), ctx);
        }
        let (next, n) = step_item(employee_id, state, item, ctx, now);
        state = next;
        note = n.or(note);
    }
    if let Some(s) = state.as_mut() {
        ended |= settle(s, now, ctx);
        s.created_at = created;
        s.updated_at = now;
        s.history.rosters = cur.map(|c| c.history.rosters.clone()).unwrap_or_default();
    }
    Folded { state, note, ended }
}

/// The attributes an update carrying `patch` would give `cur` (the
/// background check as it counts), for previews such as a roster diff.
pub fn preview_update(cur: &Identity, patch: &AttributesPatch) -> Attributes {
    let mut h = cur.history.clone();
    if let Some(b) = patch.background_check {
        h.reported_check = b;
    }
    let mut a = patch.apply_to(&cur.attrs);
    a.background_check = effective_check(&a, &h);
    a
}

/// The pre-hire a future hire announces for someone not working here yet:
/// for a person unknown, withdrawn, or announced by a later hire. `None`
/// when the person has a history or an earlier announcement stands.
pub fn announce(
    current: Option<&Identity>,
    ev: &HrEvent,
    ctx: &FoldContext,
    now: DateTime<Utc>,
) -> Option<Identity> {
    if !matches!(ev.kind, EventKind::Hire | EventKind::Rehire) {
        return None;
    }
    let key = EventKey::of(ev);
    if let Some(c) = current {
        let placeholder = c.history.last.is_none() && c.status != Status::Active;
        let earlier =
            c.status == Status::PreHire && c.history.announced.as_ref().is_some_and(|k| *k < key);
        if !placeholder || earlier {
            return None;
        }
    }
    let mut p = blank(&ev.employee_id, ctx, now, now);
    p.attrs = ev.attrs.apply_to(&p.attrs);
    p.history.announced = Some(key);
    if let Some(c) = current {
        p.created_at = c.created_at;
    }
    Some(p)
}

/// What is left of a pre-hire when their last announcing hire is
/// withdrawn: a departed record that keeps no HR data of the offer.
pub fn withdrawn(current: &Identity, ctx: &FoldContext, now: DateTime<Utc>) -> Identity {
    Identity {
        status: Status::Terminated,
        ..blank(&current.employee_id, ctx, current.created_at, now)
    }
}

/// True when two states of a person are the same HR truth (ignoring when
/// they were written). The times their attributes and status last changed
/// are part of it: a late event whose replay leaves the attributes as they
/// were may still place their last change elsewhere.
pub fn same_state(a: &Identity, b: &Identity) -> bool {
    a.attrs == b.attrs
        && a.attrs_effective_at == b.attrs_effective_at
        && a.status == b.status
        && a.status_effective_at == b.status_effective_at
        && a.history.employment_start == b.history.employment_start
        && a.history.employments == b.history.employments
        && a.history.reported_check == b.history.reported_check
}

#[cfg(test)]
mod tests;

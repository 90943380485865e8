use super::*;
use crate::identity::EmploymentType;
use chrono::{NaiveDate, TimeZone};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

fn ctx() -> FoldContext {
    FoldContext {
        default_clearance: Classification::Internal,
        default_zone: chrono_tz::Europe::Oslo,
    }
}

fn day(d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, h, 0, 0)
        .single()
        .unwrap_or_default()
        + Duration::days(i64::from(d))
}

fn ev(kind: EventKind, id: &str, at: DateTime<Utc>, attrs: AttributesPatch) -> HrEvent {
    HrEvent {
        source: "hr".into(),
        event_id: id.into(),
        kind,
        employee_id: "E1".into(),
        effective_at: at,
        effective_input: at.to_rfc3339(),
        time_zone: "Europe/Oslo".into(),
        attrs,
        rescinds_event_id: None,
        fingerprint: id.into(),
        from_roster: false,
        earlier_fingerprint: None,
    }
}

fn named(dept: &str) -> AttributesPatch {
    AttributesPatch {
        display_name: Some("Ada".into()),
        department: Some(dept.into()),
        background_check: Some(BackgroundCheck::Cleared),
        ..Default::default()
    }
}

/// Folds events in arrival order the way intake does: one step when newer
/// than the state, a replay of everything accepted otherwise.
fn arrive(events: &[HrEvent], now: DateTime<Utc>) -> Option<Identity> {
    let mut state: Option<Identity> = None;
    let mut accepted: Vec<&HrEvent> = Vec::new();
    for e in events.iter().filter(|e| e.effective_at <= now) {
        let folded = match fold_in(state.as_ref(), e, &[], &ctx(), now) {
            Some(f) => f,
            None => {
                let mut all = accepted.clone();
                all.push(e);
                replay("E1", state.as_ref(), &all, None, &[], &ctx(), now)
            }
        };
        state = folded.state;
        accepted.push(e);
    }
    state
}

fn sorted(events: &[HrEvent], now: DateTime<Utc>) -> Option<Identity> {
    let all: Vec<&HrEvent> = events.iter().collect();
    replay("E1", None, &all, None, &[], &ctx(), now).state
}

fn status_of(events: &[HrEvent], now: DateTime<Utc>) -> Status {
    arrive(events, now)
        .map(|p| p.status)
        .unwrap_or(Status::PreHire)
}

#[test]
fn a_newer_terminate_is_not_undone_by_an_older_rehire_arriving_later() {
    // hire t1, terminate t2, rehire t3, terminate t4 arriving t1, t2, t4, t3.
    let e = [
        ev(EventKind::Hire, "h", day(1, 9), named("Finance")),
        ev(
            EventKind::Terminate,
            "t2",
            day(2, 9),
            AttributesPatch::default(),
        ),
        ev(
            EventKind::Terminate,
            "t4",
            day(4, 9),
            AttributesPatch::default(),
        ),
        ev(
            EventKind::Rehire,
            "r3",
            day(3, 9),
            AttributesPatch::default(),
        ),
    ];
    assert_eq!(status_of(&e, day(9, 0)), Status::Terminated);
}

#[test]
fn an_older_update_still_sets_the_fields_no_newer_event_touched() {
    let title = AttributesPatch {
        title: Some("Controller".into()),
        ..Default::default()
    };
    let location = AttributesPatch {
        location: Some("Oslo".into()),
        title: Some("Clerk".into()),
        ..Default::default()
    };
    let e = [
        ev(EventKind::Hire, "h", day(1, 9), named("Finance")),
        ev(EventKind::Update, "new", day(5, 9), title),
        ev(EventKind::Update, "old", day(3, 9), location),
    ];
    let p = arrive(&e, day(9, 0)).unwrap();
    assert_eq!(p.attrs.location, "Oslo", "the older update's own field");
    assert_eq!(
        p.attrs.title, "Controller",
        "the newer value of the shared field"
    );
}

#[test]
fn an_older_rehire_does_not_overwrite_newer_attributes_or_a_later_clearance() {
    let later = AttributesPatch {
        department: Some("Sales".into()),
        background_check: Some(BackgroundCheck::Cleared),
        background_check_date: NaiveDate::from_ymd_opt(2026, 3, 6),
        ..Default::default()
    };
    let e = [
        ev(EventKind::Hire, "h", day(1, 9), named("Finance")),
        ev(
            EventKind::Terminate,
            "t",
            day(2, 9),
            AttributesPatch::default(),
        ),
        ev(EventKind::Update, "u", day(5, 9), later),
        ev(EventKind::Rehire, "r", day(3, 9), named("Finance")),
    ];
    let p = arrive(&e, day(9, 0)).unwrap();
    assert_eq!(p.status, Status::Active);
    assert_eq!(p.attrs.department, "Sales");
    assert_eq!(p.attrs.background_check, BackgroundCheck::Cleared);
}

#[test]
fn an_end_date_already_over_terminates_whenever_the_person_was_created() {
    let mut hire = named("Finance");
    hire.end_date = NaiveDate::from_ymd_opt(2026, 3, 3);
    // Hired "now" (day 9) with an end date on day 2: terminated at once.
    let e = [ev(EventKind::Hire, "h", day(9, 9), hire)];
    let p = arrive(&e, day(9, 10)).unwrap();
    assert_eq!(p.status, Status::Terminated);
    // Hired on day 1 with that end date: terminated at its end. An
    // extension effective on day 2 that arrives late brings them back.
    let mut hire = named("Finance");
    hire.end_date = NaiveDate::from_ymd_opt(2026, 3, 3);
    let first = [ev(EventKind::Hire, "h", day(1, 9), hire)];
    assert_eq!(
        arrive(&first, day(9, 10)).unwrap().status,
        Status::Terminated
    );
    let extend = AttributesPatch {
        end_date: NaiveDate::from_ymd_opt(2026, 12, 31),
        ..Default::default()
    };
    let mut e2 = first.to_vec();
    e2.push(ev(EventKind::Update, "x", day(2, 9), extend));
    assert_eq!(arrive(&e2, day(9, 10)).unwrap().status, Status::Active);
}

#[test]
fn an_end_date_ends_in_the_zone_it_was_given_in() {
    let mut hire = named("Finance");
    hire.end_date = NaiveDate::from_ymd_opt(2026, 6, 30);
    let mut e = ev(EventKind::Hire, "h", day(1, 9), hire);
    e.time_zone = "Australia/Melbourne".into();
    // The end of 30 June in Melbourne (UTC+10) is 14:00 UTC that day.
    let end = Utc
        .with_ymd_and_hms(2026, 6, 30, 14, 0, 0)
        .single()
        .unwrap();
    let before = arrive(std::slice::from_ref(&e), end - Duration::minutes(1)).unwrap();
    assert_eq!(before.status, Status::Active);
    let after = arrive(std::slice::from_ref(&e), end).unwrap();
    assert_eq!(after.status, Status::Terminated);
    assert_eq!(after.status_effective_at, end);
}

#[test]
fn a_start_date_is_the_local_date_of_the_zone_given() {
    // 00:30 on 1 March in Melbourne is still 28 February in Oslo.
    let at = Utc
        .with_ymd_and_hms(2026, 2, 28, 13, 30, 0)
        .single()
        .unwrap();
    let mut e = ev(EventKind::Hire, "h", at, named("Finance"));
    e.time_zone = "Australia/Melbourne".into();
    let p = arrive(&[e], at).unwrap();
    assert_eq!(p.attrs.start_date, NaiveDate::from_ymd_opt(2026, 3, 1));
    // A terminate in Los Angeles at 20:00 local on 30 June ends that day there.
    let la = Utc.with_ymd_and_hms(2026, 7, 1, 3, 0, 0).single().unwrap();
    let mut t = ev(EventKind::Terminate, "t", la, AttributesPatch::default());
    t.time_zone = "America/Los_Angeles".into();
    let mut hire = ev(EventKind::Hire, "h2", day(1, 9), named("Finance"));
    hire.time_zone = "America/Los_Angeles".into();
    let p = arrive(&[hire, t], la).unwrap();
    assert_eq!(p.attrs.end_date, NaiveDate::from_ymd_opt(2026, 6, 30));
}

#[test]
fn a_clearance_from_before_a_rehire_does_not_lift_the_gate() {
    let e = [
        ev(EventKind::Hire, "h", day(1, 9), named("Finance")),
        ev(
            EventKind::Terminate,
            "t",
            day(2, 9),
            AttributesPatch::default(),
        ),
        // The roster after the rehire still says "cleared", undated.
        ev(EventKind::Rehire, "r", day(4, 9), named("Finance")),
    ];
    let p = arrive(&e, day(9, 0)).unwrap();
    assert_eq!(p.attrs.background_check, BackgroundCheck::Pending);
    assert_eq!(p.attrs.access_ceiling(), Classification::Public);
    // Dated before the new start: still pending.
    let mut old = e.to_vec();
    old.push(ev(
        EventKind::Update,
        "u",
        day(5, 9),
        AttributesPatch {
            background_check: Some(BackgroundCheck::Cleared),
            background_check_date: NaiveDate::from_ymd_opt(2026, 3, 1),
            ..Default::default()
        },
    ));
    assert_eq!(
        arrive(&old, day(9, 0)).unwrap().attrs.background_check,
        BackgroundCheck::Pending
    );
    // Dated on the new start: cleared.
    let mut new = e.to_vec();
    new.push(ev(
        EventKind::Update,
        "u",
        day(5, 9),
        AttributesPatch {
            background_check_date: NaiveDate::from_ymd_opt(2026, 3, 5),
            ..Default::default()
        },
    ));
    assert_eq!(
        arrive(&new, day(9, 0)).unwrap().attrs.background_check,
        BackgroundCheck::Cleared
    );
}

#[test]
fn a_roster_presence_asserts_who_was_here_when() {
    // Hired day 1 in Finance; a roster of day 5 has them in Finance; an
    // update of day 3 (Sales) arrives after the roster. In effective order
    // the roster comes last: Finance.
    let hire = ev(EventKind::Hire, "h", day(1, 9), named("Finance"));
    let presence = Presence {
        source: "hr".into(),
        sync_id: "s5".into(),
        as_of: day(5, 9),
        time_zone: "Europe/Oslo".into(),
        attrs: named("Finance"),
    };
    let now = day(9, 0);
    let p1 = fold_in(None, &hire, &[], &ctx(), now)
        .unwrap()
        .state
        .unwrap();
    let p2 = fold_presence("E1", Some(&p1), &presence, &ctx(), now)
        .unwrap()
        .state
        .unwrap();
    let late = ev(EventKind::Move, "m", day(3, 9), named("Sales"));
    assert!(
        fold_in(Some(&p2), &late, &[], &ctx(), now).is_none(),
        "older: replay"
    );
    let p3 = replay(
        "E1",
        Some(&p2),
        &[&hire, &late],
        Some(&presence),
        &[],
        &ctx(),
        now,
    )
    .state
    .unwrap();
    assert_eq!(p3.attrs.department, "Finance");
    // A late termination before the roster: the roster (later) says they work here.
    let term = ev(
        EventKind::Terminate,
        "t",
        day(2, 9),
        AttributesPatch::default(),
    );
    let p4 = replay(
        "E1",
        Some(&p2),
        &[&hire, &term],
        Some(&presence),
        &[],
        &ctx(),
        now,
    )
    .state
    .unwrap();
    assert_eq!(p4.status, Status::Active);
}

// ---- the property, over generated histories ----

const DEPTS: [&str; 3] = ["Finance", "Sales", "Engineering"];

fn random_patch(rng: &mut StdRng) -> AttributesPatch {
    let mut p = AttributesPatch::default();
    if rng.random_bool(0.6) {
        p.department = Some(DEPTS[rng.random_range(0..DEPTS.len())].into());
    }
    if rng.random_bool(0.4) {
        p.title = Some(format!("T{}", rng.random_range(0..3)));
    }
    if rng.random_bool(0.3) {
        p.location = Some(format!("L{}", rng.random_range(0..3)));
    }
    if rng.random_bool(0.3) {
        p.background_check = Some(match rng.random_range(0..3) {
            0 => BackgroundCheck::Pending,
            1 => BackgroundCheck::Cleared,
            _ => BackgroundCheck::Failed,
        });
    }
    if rng.random_bool(0.2) {
        p.background_check_date = NaiveDate::from_ymd_opt(2026, 3, rng.random_range(1..28));
    }
    if rng.random_bool(0.15) {
        p.end_date = NaiveDate::from_ymd_opt(2026, 3, rng.random_range(2..30));
    }
    if rng.random_bool(0.2) {
        p.employment_type = Some(EmploymentType::Contractor);
    }
    if rng.random_bool(0.2) {
        p.manager_id = Some(Some(format!("M{}", rng.random_range(0..3))));
    }
    p
}

fn random_history(rng: &mut StdRng) -> Vec<HrEvent> {
    let n = rng.random_range(1..9);
    let mut out = Vec::new();
    for i in 0..n {
        let kind = match rng.random_range(0..10) {
            0..=1 => EventKind::Hire,
            2 => EventKind::Rehire,
            3..=5 => EventKind::Update,
            6 => EventKind::Move,
            _ => EventKind::Terminate,
        };
        let mut attrs = random_patch(rng);
        if kind == EventKind::Hire {
            attrs.display_name = Some("Ada".into());
        }
        // Few distinct instants, so ties are common.
        let at = day(rng.random_range(1..12), [0, 9, 17][rng.random_range(0..3)]);
        let mut e = ev(kind, &format!("e{i}"), at, attrs);
        e.time_zone = ["Europe/Oslo", "Australia/Melbourne", "America/Los_Angeles"]
            [rng.random_range(0..3)]
        .into();
        if rng.random_bool(0.2) {
            e.source = "roster".into();
        }
        out.push(e);
    }
    out
}

#[test]
fn any_arrival_order_gives_the_effective_order_state() {
    let base: u64 = std::env::var("IDGOV_PROPTEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x1d90);
    for case in 0..5000u64 {
        let seed = base.wrapping_add(case);
        let mut rng = StdRng::seed_from_u64(seed);
        let history = random_history(&mut rng);
        let now = day(rng.random_range(5..40), 12);
        let expected = sorted(&history, now);
        for _ in 0..4 {
            let mut order = history.clone();
            order.shuffle(&mut rng);
            let got = arrive(&order, now);
            let same = match (&got, &expected) {
                (Some(a), Some(b)) => same_state(a, b) && a.history.last == b.history.last,
                (None, None) => true,
                _ => false,
            };
            assert!(
                same,
                "seed {seed} (IDGOV_PROPTEST_SEED={seed}): arrival order {:?}\n got      {got:?}\n expected {expected:?}",
                order.iter().map(|e| &e.event_id).collect::<Vec<_>>()
            );
        }
    }
}

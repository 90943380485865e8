//! Access review campaigns (issue 11) through the application services on
//! both backends: generation and its context, reviewer resolution,
//! decisions, reassignment, non-response defaults, the guard, leavers, and
//! the schedule across replicas.

use crate::access::{SEC, acc, access_policy, approve, ask, audit_count, code, org, request};
use crate::common::*;
use idgov_authz::{Role, Rpc};
use idgov_domain::ErrorCode;
use idgov_domain::access::TargetKind;
use idgov_domain::grant::RevokeReason;
use idgov_domain::hr::EventKind;
use idgov_domain::identity::AttributesPatch;
use idgov_domain::review::{CampaignState, ItemState, ReviewItem, Stage, Verdict};
use idgov_server::App;
use idgov_server::app::review::ItemDecision;
use idgov_tests::backends::TestStore;
use idgov_tests::both_backends;
use std::collections::BTreeSet;

pub(crate) fn campaign_policy(extra: &str) -> String {
    format!(
        "{}
[reviews]
fallback_reviewer = \"F1\"
protected = [\"P6\"]

[[campaigns]]
id = \"restricted\"
name = \"Quarterly review of restricted access\"
levels = [\"restricted\"]

[[campaigns]]
id = \"confidential\"
levels = [\"confidential\"]
scheduled = false

[[campaigns]]
id = \"internal\"
levels = [\"internal\"]
scheduled = false

[[campaigns]]
id = \"areas\"
kinds = [\"physical_area\"]
{extra}",
        access_policy()
    )
}

/// The access-test organisation plus six accountants (P1..P6, Finance,
/// title Accountant, under M1), with campaigns in the policy.
async fn setup(
    t: &TestStore,
) -> (
    std::sync::Arc<App>,
    std::sync::Arc<idgov_server::ManualClock>,
) {
    let (app, clock) = org(t).await;
    for i in 1..=6 {
        let id = format!("P{i}");
        let mut p = Person::new(&id, "Finance");
        p.manager = Some("M1");
        let mut patch = p.patch();
        patch.title = Some("Accountant".into());
        app.submit_event(
            event(&app, EventKind::Hire, &format!("hire-{id}"), &id, "", patch),
            "service:hr",
        )
        .await
        .unwrap();
    }
    app.apply_policy(&campaign_policy(""), false, "campaigns", "user:admin")
        .await
        .unwrap();
    (app, clock)
}

async fn items_of(app: &App, campaign: &str) -> Vec<ReviewItem> {
    app.review_items(
        &acc("A1", &[Role::Auditor], Rpc::ListReviewItems),
        false,
        Some(campaign.into()),
        None,
        None,
        "",
        10_000,
    )
    .await
    .unwrap()
}

fn decision(item: &ReviewItem, verdict: Verdict, why: &str) -> ItemDecision {
    ItemDecision {
        item_id: item.id.clone(),
        verdict,
        justification: why.into(),
    }
}

async fn decide(
    app: &App,
    who: &str,
    roles: &[Role],
    d: Vec<ItemDecision>,
) -> Vec<Result<ReviewItem, idgov_server::AppError>> {
    app.decide_items(&acc(who, roles, Rpc::DecideReviewItems), d)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.result)
        .collect()
}

both_backends! {
    async fn exactly_the_grants_in_scope_become_items_with_their_context(t: TestStore) {
        let (app, _) = setup(&t).await;
        // E1 gets the ledger by request, approved by M1 and O1.
        let r = request(&app, "E1", ask("", TargetKind::Entitlement, "ledger", "month end", Some(30))).await.unwrap();
        approve(&app, "M1", &[], &r.id).await.unwrap();
        approve(&app, "O1", &[], &r.id).await.unwrap();
        let preview = app.preview_campaign("confidential").await.unwrap();
        let c = app.start_campaign("confidential", "user:admin").await.unwrap();
        let items = items_of(&app, &c.id).await;
        // Independently: every active confidential grant of an active person.
        let mut expected = BTreeSet::new();
        for id in ["B1", "O1", "O2", "F1", "M1", "S1", "S2", "E1", "E2", "E3", "P1", "P2", "P3", "P4", "P5", "P6"] {
            for (g, class) in app.store.list_grants(id, false, "", 1000).await.unwrap() {
                if class == idgov_domain::Classification::Confidential {
                    expected.insert(g.id);
                }
            }
        }
        let got: BTreeSet<String> = items.iter().map(|i| i.grant_id.clone()).collect();
        assert_eq!(got, expected);
        assert_eq!(c.items as usize, expected.len());
        assert_eq!(preview.items as usize, expected.len(), "the preview counts what the start creates");
        // The peer signal: same department and title, the holder excluded.
        let p1 = items.iter().find(|i| i.employee_id == "P1").unwrap();
        assert_eq!((p1.peers_holding, p1.peers_total), (5, 5), "{p1:?}");
        let e1 = items.iter().find(|i| i.employee_id == "E1").unwrap();
        assert_eq!((e1.peers_holding, e1.peers_total), (0, 2), "E2 and E3 share E1's department and title");
        assert_eq!(e1.approvers, ["M1", "O1"]);
        assert!(e1.reason.contains("held by 0 of 2 peers") || e1.reason.contains("approved by M1, O1"), "{}", e1.reason);
        assert_eq!(p1.reason, "birthright of role finance");
        // Reviewers: the holder's manager.
        assert!(items.iter().filter(|i| i.employee_id.starts_with('P')).all(|i| i.reviewer == "M1"));
        assert_eq!(audit_count(&app, "campaign.started", &format!("campaign:{}", c.id)).await, 1);
    }
}

both_backends! {
    async fn nobody_reviews_their_own_access_or_what_they_approved_alone(t: TestStore) {
        let (app, _) = setup(&t).await;
        // chat (internal) needs the manager only: M1 approves E2's alone.
        let r = request(&app, "E2", ask("", TargetKind::Entitlement, "chat", "", None)).await.unwrap();
        approve(&app, "M1", &[], &r.id).await.unwrap();
        let c = app.start_campaign("internal", "user:admin").await.unwrap();
        let items = items_of(&app, &c.id).await;
        let chat = items.iter().find(|i| i.employee_id == "E2" && i.entitlement_id == "chat").unwrap();
        assert_eq!(chat.reviewer, "B1", "M1 approved it alone: their manager reviews");
        assert!(chat.note.contains("approved it alone"), "{}", chat.note);
        // O1 has no manager: their own wiki is reviewed by the fallback reviewer.
        let o1 = items.iter().find(|i| i.employee_id == "O1" && i.entitlement_id == "wiki").unwrap();
        assert_eq!(o1.reviewer, "F1", "{o1:?}");
        // The subject never decides their own item, even as a security officer.
        let own = items.iter().find(|i| i.employee_id == "M1").unwrap();
        let r = decide(&app, "M1", SEC, vec![decision(own, Verdict::Certify, "")]).await;
        assert_eq!(code(r[0].as_ref().unwrap_err()), Some(ErrorCode::PermissionDenied));
        // Someone else's item: refused per item, the rest of the batch applies.
        let e1 = items.iter().find(|i| i.employee_id == "E1" && i.entitlement_id == "wiki").unwrap();
        let r = decide(&app, "M1", &[], vec![decision(chat, Verdict::Certify, ""), decision(e1, Verdict::Certify, "")]).await;
        assert_eq!(code(r[0].as_ref().unwrap_err()), Some(ErrorCode::PermissionDenied));
        assert_eq!(r[1].as_ref().unwrap().state, ItemState::Certified);
        // A scoped reviewer lists only their own items.
        let mine = app.review_items(&acc("M1", &[], Rpc::ListReviewItems), false, None, None, None, "", 1000).await.unwrap();
        assert!(!mine.is_empty() && mine.iter().all(|i| i.reviewer == "M1"));
    }
}

both_backends! {
    async fn revocations_reach_the_grant_and_restricted_access_takes_two_stages(t: TestStore) {
        let (app, _) = setup(&t).await;
        let r = request(&app, "E1", ask("", TargetKind::Entitlement, "vault", "stocktake", Some(30))).await.unwrap();
        approve(&app, "M1", &[], &r.id).await.unwrap();
        approve(&app, "O2", &[], &r.id).await.unwrap();
        approve(&app, "S1", SEC, &r.id).await.unwrap();
        let c = app.start_campaign("restricted", "user:admin").await.unwrap();
        let items = items_of(&app, &c.id).await;
        assert_eq!(items.len(), 1);
        let v = &items[0];
        assert_eq!((v.stage, v.reviewer.as_str()), (Stage::Manager, "M1"));
        let r = decide(&app, "M1", &[], vec![decision(v, Verdict::Certify, "")]).await;
        assert!(r[0].is_err(), "certifying restricted access needs a justification");
        let r = decide(&app, "M1", &[], vec![decision(v, Verdict::Certify, "still runs the vault")]).await;
        let v2 = r[0].as_ref().unwrap();
        assert_eq!((v2.stage, v2.reviewer.as_str(), v2.state), (Stage::Owner, "O2", ItemState::Open));
        let r = decide(&app, "O2", &[], vec![decision(v2, Verdict::Revoke, "")]).await;
        assert!(r[0].is_err(), "a revocation needs a justification");
        let r = decide(&app, "O2", &[], vec![decision(v2, Verdict::Revoke, "stocktake is over")]).await;
        assert_eq!(r[0].as_ref().unwrap().state, ItemState::Revoked);
        let g = crate::access::grant_of(&app, "E1", "vault", true).await.unwrap();
        assert_eq!(g.revoke_reason, Some(RevokeReason::Review));
        // Decided once.
        let r = decide(&app, "O2", &[], vec![decision(v2, Verdict::Certify, "oops")]).await;
        assert_eq!(code(r[0].as_ref().unwrap_err()), Some(ErrorCode::FailedPrecondition));
        let report = app.campaign_report(&c.id).await.unwrap();
        assert_eq!(report.decided, 1);
        let o2 = report.reviewers.iter().find(|r| r.reviewer == "O2").unwrap();
        assert_eq!((o2.revoked, o2.approve_rate), (1, 0.0));
    }
}

both_backends! {
    async fn the_close_applies_each_levels_default_and_the_guard_holds_a_large_one(t: TestStore) {
        let (app, _) = setup(&t).await;
        let c = app.start_campaign("confidential", "user:admin").await.unwrap();
        let items = items_of(&app, &c.id).await;
        // M1 certifies P1; P2 leaves (superseded); nobody answers the rest.
        let p1 = items.iter().find(|i| i.employee_id == "P1").unwrap();
        decide(&app, "M1", &[], vec![decision(p1, Verdict::Certify, "")]).await[0].as_ref().unwrap();
        app.submit_event(event(&app, EventKind::Terminate, "t-P2", "P2", "", AttributesPatch::default()), "service:hr").await.unwrap();
        let p2 = items_of(&app, &c.id).await.into_iter().find(|i| i.employee_id == "P2").unwrap();
        assert_eq!(p2.state, ItemState::Superseded, "at once, in the leaver's transaction");
        assert_eq!(audit_count(&app, "review.superseded", &format!("review_item:{}", p2.id)).await, 1);
        // Unanswered confidential items are revoked: 3 people (P3, P4, P5;
        // P6 is protected) of 16 active is above the guard (5%): held.
        let out = app.close_campaign(&c.id, "user:admin").await.unwrap();
        let held = out.held_change_id.clone().expect("held by the guard");
        assert_eq!(out.campaign.state, CampaignState::Held);
        assert!(active_grants(&app, "P3").await.contains(&"ledger".to_string()), "nothing applied while held");
        app.release_held(&held, "reviewed the list", "user:S1").await.unwrap();
        let after = items_of(&app, &c.id).await;
        let state_of = |id: &str| after.iter().find(|i| i.employee_id == id).unwrap().state;
        assert_eq!(state_of("P1"), ItemState::Certified);
        assert_eq!(state_of("P2"), ItemState::Superseded);
        assert_eq!(state_of("P3"), ItemState::Revoked);
        assert_eq!(state_of("P6"), ItemState::Flagged, "protected principals are never revoked by default");
        assert!(!active_grants(&app, "P3").await.contains(&"ledger".to_string()));
        assert!(active_grants(&app, "P6").await.contains(&"ledger".to_string()));
        assert_eq!(app.campaign(&c.id).await.unwrap().state, CampaignState::Closed);
        // Internal: unanswered are kept and flagged, nothing revoked.
        let i = app.start_campaign("internal", "user:admin").await.unwrap();
        let out = app.close_campaign(&i.id, "user:admin").await.unwrap();
        assert!(out.held_change_id.is_none());
        assert_eq!(out.revoked, 0);
        assert!(items_of(&app, &i.id).await.iter().all(|x| x.state == ItemState::Flagged));
    }
}

both_backends! {
    async fn a_departed_reviewers_items_move_and_concurrent_deciders_leave_one_decision(t: TestStore) {
        let (app, _) = setup(&t).await;
        let c = app.start_campaign("confidential", "user:admin").await.unwrap();
        let items = items_of(&app, &c.id).await;
        let p1 = items.iter().find(|i| i.employee_id == "P1").unwrap().clone();
        // M1 reassigns P1's item to O1 (never to P1 itself).
        let e = app.reassign_item(&acc("M1", &[], Rpc::ReassignReviewItem), &p1.id, "P1", "self").await.unwrap_err();
        assert_eq!(code(&e), Some(ErrorCode::InvalidArgument));
        app.reassign_item(&acc("M1", &[], Rpc::ReassignReviewItem), &p1.id, "O1", "knows the ledger").await.unwrap();
        // M1 (who read it before) and O1 decide at once: one decision stands.
        let (a, b) = tokio::join!(
            decide(&app, "M1", &[], vec![decision(&p1, Verdict::Revoke, "not needed")]),
            decide(&app, "O1", &[], vec![decision(&p1, Verdict::Certify, "")])
        );
        let oks = a.iter().chain(b.iter()).filter(|r| r.is_ok()).count();
        assert_eq!(oks, 1, "{a:?} {b:?}");
        assert_eq!(items_of(&app, &c.id).await.iter().find(|i| i.id == p1.id).unwrap().state, ItemState::Certified);
        // M1 leaves: their open items go to B1, and the audit says so.
        app.submit_event(event(&app, EventKind::Terminate, "t-M1", "M1", "", AttributesPatch::default()), "service:hr").await.unwrap();
        let now = items_of(&app, &c.id).await;
        let moved: Vec<&ReviewItem> = now.iter().filter(|i| i.state == ItemState::Open && i.note.contains("M1 left")).collect();
        assert!(!moved.is_empty());
        assert!(moved.iter().all(|i| i.reviewer == "B1"));
        assert!(audit_count(&app, "review.reassigned", &format!("review_item:{}", moved[0].id)).await >= 1);
    }
}

both_backends! {
    async fn managers_who_leave_during_a_generation_hand_on_every_item(t: TestStore) {
        // 600 accountants (three pages of a generation) under twelve team
        // leads; the leads leave one after another while the campaign is
        // generated. Whatever the interleaving, no open item may wait for
        // someone who left, and nobody is left out.
        let (app, _) = setup(&t).await;
        let leads: Vec<String> = (1..=12).map(|i| format!("L{i:02}")).collect();
        for l in &leads {
            let mut p = Person::new(l, "Finance");
            p.manager = Some("M1");
            app.submit_event(event(&app, EventKind::Hire, &format!("hire-{l}"), l, "", p.patch()), "service:hr")
                .await
                .unwrap();
        }
        let people: Vec<(String, String)> =
            (0..600).map(|i| (format!("A{i:04}"), leads[i % leads.len()].clone())).collect();
        for chunk in people.chunks(50) {
            let sends = chunk.iter().map(|(id, lead)| {
                let mut p = Person::new(id, "Finance");
                p.manager = Some(lead);
                app.submit_event(event(&app, EventKind::Hire, &format!("hire-{id}"), id, "", p.patch()), "service:hr")
            });
            for r in futures::future::join_all(sends).await {
                r.unwrap();
            }
        }
        let leaving = {
            let app = app.clone();
            let leads = leads.clone();
            tokio::spawn(async move {
                for l in &leads {
                    tokio::time::sleep(std::time::Duration::from_millis(7)).await;
                    app.submit_event(event(&app, EventKind::Terminate, &format!("t-{l}"), l, "", AttributesPatch::default()), "service:hr")
                        .await
                        .unwrap();
                }
            })
        };
        let c = app.start_campaign("confidential", "user:admin").await.unwrap();
        leaving.await.unwrap();
        let items = items_of(&app, &c.id).await;
        let mut reviewed: BTreeSet<&str> = BTreeSet::new();
        for i in items.iter().filter(|i| i.state == ItemState::Open) {
            let who = app.store.get_identity(&i.reviewer).await.unwrap();
            assert!(
                who.is_none_or(|p| p.status != idgov_domain::identity::Status::Terminated),
                "{} reviews {} but left", i.reviewer, i.id
            );
            // The leads' own access ended when they left: none of it is
            // still up for review.
            assert!(!leads.contains(&i.employee_id), "{} of {} left but is open", i.id, i.employee_id);
            reviewed.insert(i.employee_id.as_str());
        }
        for (id, _) in &people {
            assert!(reviewed.contains(id.as_str()), "{id} has no open item");
        }
    }
}

both_backends! {
    async fn scheduled_campaigns_start_once_across_replicas_and_restarts(t: TestStore) {
        let (a, clock) = setup(&t).await;
        let store_b = idgov_store::Store::open(&t.url).await.unwrap();
        let b = App::start(store_b, clock.clone(), None).await.unwrap();
        // The first automatic campaign comes one period (3 months for
        // restricted access) after the definition appeared.
        a.run_campaign_schedule().await.unwrap();
        assert!(a.campaigns(false, "", 100).await.unwrap().is_empty());
        clock.advance(days(92));
        let (x, y) = tokio::join!(a.run_campaign_schedule(), b.run_campaign_schedule());
        x.unwrap();
        y.unwrap();
        let started = a.campaigns(false, "", 100).await.unwrap();
        let defs: Vec<&str> = started.iter().map(|c| c.definition_id.as_str()).collect();
        assert_eq!(defs.len(), 2, "restricted and areas, once each: {defs:?}");
        assert!(defs.contains(&"restricted") && defs.contains(&"areas"));
        // Again, and after a restart: nothing new until due.
        a.run_campaign_schedule().await.unwrap();
        let c = App::start(idgov_store::Store::open(&t.url).await.unwrap(), clock.clone(), None).await.unwrap();
        c.run_campaign_schedule().await.unwrap();
        assert_eq!(a.campaigns(false, "", 100).await.unwrap().len(), 2);
        // Past the due date the first ones close; three months on both
        // start again (the areas include the restricted vault: quarterly).
        clock.advance(days(15));
        a.run_campaign_schedule().await.unwrap();
        assert!(a.campaigns(true, "", 100).await.unwrap().is_empty(), "due campaigns closed");
        clock.advance(days(80));
        a.run_campaign_schedule().await.unwrap();
        let all = a.campaigns(false, "", 100).await.unwrap();
        assert_eq!(all.iter().filter(|c| c.definition_id == "restricted").count(), 2);
        assert_eq!(all.iter().filter(|c| c.definition_id == "areas").count(), 2);
        // Reminders were recorded once per campaign.
        assert_eq!(audit_count(&a, "campaign.reminder", "").await, 0, "closed before any scheduler tick saw day 7");
    }
}

both_backends! {
    async fn reminders_and_escalations_are_recorded_once(t: TestStore) {
        let (app, clock) = setup(&t).await;
        let c = app.start_campaign("confidential", "user:admin").await.unwrap();
        let e = app.start_campaign("confidential", "user:admin").await.unwrap_err();
        assert_eq!(code(&e), Some(ErrorCode::FailedPrecondition), "one open campaign per definition: {e}");
        clock.advance(days(8));
        app.run_campaign_schedule().await.unwrap();
        app.run_campaign_schedule().await.unwrap();
        assert_eq!(audit_count(&app, "campaign.reminder", &format!("campaign:{}", c.id)).await, 1);
        assert_eq!(audit_count(&app, "campaign.escalation", &format!("campaign:{}", c.id)).await, 0);
        clock.advance(days(3));
        app.run_campaign_schedule().await.unwrap();
        assert_eq!(audit_count(&app, "campaign.escalation", &format!("campaign:{}", c.id)).await, 1);
    }
}

/// The evidence of a campaign as lines.
async fn evidence(app: &std::sync::Arc<App>, id: &str) -> Vec<String> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let a = app.clone();
    let id = id.to_string();
    let job = tokio::spawn(async move { a.export_evidence(&id, tx).await });
    let mut lines = Vec::new();
    while let Some(l) = rx.recv().await {
        lines.push(l.unwrap());
    }
    job.await.unwrap().unwrap();
    lines
}

fn check(lines: &[String]) -> Result<idgov_domain::evidence::Summary, Vec<String>> {
    let mut c = idgov_domain::evidence::Checker::new();
    for (k, l) in lines.iter().enumerate() {
        c.line(k + 1, serde_json::from_str(l).unwrap());
    }
    c.finish()
}

both_backends! {
    async fn tampered_evidence_is_caught_and_named(t: TestStore) {
        let (app, _) = setup(&t).await;
        let c = app.start_campaign("confidential", "user:admin").await.unwrap();
        let items = items_of(&app, &c.id).await;
        let p = |id: &str| items.iter().find(|i| i.employee_id == id).unwrap();
        decide(&app, "M1", &[], vec![decision(p("P1"), Verdict::Certify, "ok"), decision(p("P2"), Verdict::Revoke, "moved on")]).await;
        // Some activity after the campaign's start that is not about it.
        hire(&app, &Person::new("Z1", "Sales")).await;
        let out = app.close_campaign(&c.id, "user:admin").await.unwrap();
        if let Some(h) = out.held_change_id {
            app.release_held(&h, "reviewed", "user:S1").await.unwrap();
        }
        let lines = evidence(&app, &c.id).await;
        let ok = check(&lines).expect("an untouched export passes");
        assert_eq!(ok.items as usize, items.len());
        assert!(ok.decisions >= 2);

        let kind = |l: &String| serde_json::from_str::<serde_json::Value>(l).unwrap()["type"].as_str().unwrap().to_string();
        // An edited decision.
        let mut edited = lines.clone();
        let k = edited.iter().position(|l| kind(l) == "item" && l.contains("moved on")).unwrap();
        edited[k] = edited[k].replace("\"state\":\"revoked\"", "\"state\":\"certified\"");
        let e = check(&edited).unwrap_err();
        assert!(e.iter().any(|p| p.contains("was altered")), "{e:?}");
        // A changed justification.
        let mut edited = lines.clone();
        edited[k] = edited[k].replace("moved on", "never needed it");
        assert!(check(&edited).unwrap_err().iter().any(|p| p.contains("justification")));
        // A dropped item.
        let mut dropped = lines.clone();
        dropped.remove(k);
        let e = check(&dropped).unwrap_err();
        assert!(e.iter().any(|p| p.contains("items dropped") || p.contains("missing from the export")), "{e:?}");
        // Two audit events swapped.
        let mut swapped = lines.clone();
        let a = swapped.iter().position(|l| kind(l) == "audit").unwrap();
        swapped.swap(a + 1, a + 2);
        let e = check(&swapped).unwrap_err();
        assert!(e.iter().any(|p| p.contains("reordered") || p.contains("does not link")), "{e:?}");
        // An edited audit event.
        let mut forged = lines.clone();
        let f = forged.iter().position(|l| kind(l) == "audit" && l.contains("review.revoked")).unwrap();
        forged[f] = forged[f].replace("moved on", "never needed it");
        assert!(check(&forged).unwrap_err().iter().any(|p| p.contains("altered")));
        // A truncated export.
        let cut = &lines[..lines.len() - 1];
        assert!(check(cut).is_err());
    }
}

both_backends! {
    async fn a_movers_kept_access_goes_to_the_new_manager_and_unanswered_is_revoked(t: TestStore) {
        let (app, clock) = setup(&t).await;
        let r = request(&app, "E1", ask("", TargetKind::Entitlement, "chat", "", None)).await.unwrap();
        approve(&app, "M1", &[], &r.id).await.unwrap();
        let r = request(&app, "E2", ask("", TargetKind::Entitlement, "chat", "", None)).await.unwrap();
        approve(&app, "M1", &[], &r.id).await.unwrap();
        // Both move to Sales under O2: internal access is kept, marked for review.
        for who in ["E1", "E2"] {
            let mv = AttributesPatch { department: Some("Sales".into()), manager_id: Some(Some("O2".into())), ..Default::default() };
            app.submit_event(event(&app, EventKind::Move, &format!("mv-{who}"), who, "", mv), "service:hr").await.unwrap();
        }
        assert!(active_grants(&app, "E1").await.contains(&"chat".to_string()));
        assert_eq!(app.start_mover_reviews().await.unwrap(), 1);
        assert_eq!(app.start_mover_reviews().await.unwrap(), 0, "covered: not twice");
        let c = app.campaigns(true, "", 10).await.unwrap();
        assert_eq!(c.len(), 1);
        assert!(c[0].mover);
        assert_eq!(c[0].due_at, app.now() + days(7));
        let items = items_of(&app, &c[0].id).await;
        assert_eq!(items.len(), 2);
        assert!(items.iter().all(|i| i.reviewer == "O2" && i.reason == "kept after a move"), "{items:?}");
        // O2 certifies E1's; nobody answers E2's: revoked at the deadline.
        let e1 = items.iter().find(|i| i.employee_id == "E1").unwrap();
        decide(&app, "O2", &[], vec![decision(e1, Verdict::Certify, "")]).await[0].as_ref().unwrap();
        clock.advance(days(8));
        app.run_campaign_schedule().await.unwrap();
        assert_eq!(app.campaign(&c[0].id).await.unwrap().state, CampaignState::Closed);
        assert!(active_grants(&app, "E1").await.contains(&"chat".to_string()));
        assert!(!active_grants(&app, "E2").await.contains(&"chat".to_string()), "unanswered mover items are revoked");
        let g = crate::access::grant_of(&app, "E2", "chat", true).await.unwrap();
        assert_eq!(g.revoke_reason, Some(RevokeReason::Review));
        // Nothing left marked.
        assert_eq!(app.start_mover_reviews().await.unwrap(), 0);
    }
}

both_backends! {
    async fn an_interrupted_start_is_resumed_by_the_schedule(t: TestStore) {
        let (app, _) = setup(&t).await;
        let expected = app.preview_campaign("confidential").await.unwrap().items;
        // A start that stopped after writing the campaign (a crash).
        let def = app.policy().policy.campaigns.iter().find(|c| c.id == "confidential").unwrap().clone();
        let now = app.now();
        let c = idgov_domain::review::Campaign {
            id: "cmp-interrupted".into(),
            definition_id: def.id.clone(),
            name: def.id.clone(),
            definition: def,
            policy_version: app.policy().version,
            state: CampaignState::Starting,
            started_at: now,
            started_by: "user:admin".into(),
            due_at: now + days(14),
            closed_at: None,
            reminded_at: None,
            escalated_at: None,
            mover: false,
            items: 0,
            held_change_id: None,
            generated_after: Some(String::new()),
            closing: None,
        };
        let mut tx = app.store.begin().await.unwrap();
        assert!(tx.insert_campaign(&c).await.unwrap());
        tx.commit(now).await.unwrap();
        // Not startable twice while starting.
        assert!(app.start_campaign("confidential", "user:admin").await.is_err());
        app.run_campaign_schedule().await.unwrap();
        let done = app.campaign("cmp-interrupted").await.unwrap();
        assert_eq!(done.state, CampaignState::Open);
        assert_eq!(done.items as u64, expected);
        assert_eq!(items_of(&app, "cmp-interrupted").await.len() as u64, expected);
        assert_eq!(audit_count(&app, "campaign.started", "campaign:cmp-interrupted").await, 1);
    }
}

both_backends! {
    async fn a_reviewers_queue_leaves_out_campaigns_still_starting(t: TestStore) {
        let (app, _) = setup(&t).await;
        let mut c = app.start_campaign("internal", "user:admin").await.unwrap();
        let m1_access = acc("M1", &[], Rpc::ListReviewItems);
        let m1 = || app.review_items(&m1_access, true, None, None, None, "", 1000);
        let open = m1().await.unwrap().len();
        assert!(open > 0);
        // The same campaign seen while its generation runs.
        c.state = CampaignState::Starting;
        let mut tx = app.store.begin().await.unwrap();
        tx.update_campaign(&c).await.unwrap();
        tx.commit(app.now()).await.unwrap();
        assert!(m1().await.unwrap().is_empty(), "not in the queue while starting");
        let staff = app.review_items(&acc("A1", &[Role::Auditor], Rpc::ListReviewItems), false, Some(c.id.clone()), None, None, "", 1000).await.unwrap();
        assert_eq!(staff.len() as i64, c.items, "staff readers still see everything");
        c.state = CampaignState::Open;
        let mut tx = app.store.begin().await.unwrap();
        tx.update_campaign(&c).await.unwrap();
        tx.commit(app.now()).await.unwrap();
        assert_eq!(m1().await.unwrap().len(), open);
    }
}

both_backends! {
    async fn decisions_on_items_never_shown_count_as_decided_without_opening(t: TestStore) {
        let (app, clock) = setup(&t).await;
        let c = app.start_campaign("internal", "user:admin").await.unwrap();
        let mine: Vec<ReviewItem> = items_of(&app, &c.id)
            .await
            .into_iter()
            .filter(|i| i.reviewer == "M1")
            .collect();
        assert!(mine.len() >= 3, "{mine:?}");
        // The web app showed the first one before it was decided; the
        // second was shown only after its decision; the third never.
        app.items_shown(&[mine[0].id.clone()]).await.unwrap();
        clock.advance(chrono::Duration::seconds(5));
        let out = decide(
            &app,
            "M1",
            &[],
            vec![
                decision(&mine[0], Verdict::Certify, ""),
                decision(&mine[1], Verdict::Certify, ""),
                decision(&mine[2], Verdict::Certify, ""),
            ],
        )
        .await;
        assert!(out.iter().all(|r| r.is_ok()), "{out:?}");
        clock.advance(chrono::Duration::seconds(5));
        app.items_shown(&[mine[1].id.clone()]).await.unwrap();
        let report = app.campaign_report(&c.id).await.unwrap();
        let m1 = report.reviewers.iter().find(|r| r.reviewer == "M1").unwrap();
        assert_eq!(m1.certified, 3);
        assert_eq!(m1.decided_without_opening, 2, "{m1:?}");
        // Showing again never moves the first time.
        app.items_shown(&[mine[0].id.clone()]).await.unwrap();
        let report = app.campaign_report(&c.id).await.unwrap();
        let m1 = report.reviewers.iter().find(|r| r.reviewer == "M1").unwrap();
        assert_eq!(m1.decided_without_opening, 2);
    }
}

/// `n` more accountants (Finance, under M1): each holds wiki (internal)
/// and ledger (confidential), so a campaign of either level has `n` items
/// and more: a close of 2,100 takes three steps of a thousand.
async fn accountants(app: &App, n: usize) {
    let people: Vec<String> = (0..n).map(|i| format!("A{i:05}")).collect();
    for chunk in people.chunks(100) {
        let sends = chunk.iter().map(|id| {
            let mut p = Person::new(id, "Finance");
            p.manager = Some("M1");
            app.submit_event(
                event(
                    app,
                    EventKind::Hire,
                    &format!("hire-{id}"),
                    id,
                    "",
                    p.patch(),
                ),
                "service:hr",
            )
        });
        for r in futures::future::join_all(sends).await {
            r.unwrap();
        }
    }
}

both_backends! {
    /// A close gives the unanswered their default in steps sized by the
    /// time they take: halved to the floor under a target no step meets,
    /// doubled under one no step reaches (fixed steps of a thousand would
    /// take four steps for ~3,000 items either way).
    async fn a_close_sizes_its_steps_by_the_time_they_take(t: TestStore) {
        let (app, _) = setup(&t).await;
        accountants(&app, 3000).await;
        let mut seen = Vec::new();
        for target in [std::time::Duration::ZERO, std::time::Duration::from_secs(3600)] {
            let c = app.start_campaign("internal", "user:admin").await.unwrap();
            let total = items_of(&app, &c.id).await.len();
            assert!((3000..4000).contains(&total), "{total} items");
            app.set_step_target_for_test(target);
            let out = app.close_campaign(&c.id, "user:admin").await.unwrap();
            app.set_step_target_for_test(idgov_server::app::policy::STEP_TARGET);
            assert_eq!(out.campaign.state, CampaignState::Closed);
            let p = out.campaign.closing.clone().unwrap();
            assert_eq!(p.defaulted as usize, total, "every item once");
            let after = items_of(&app, &c.id).await;
            assert!(after.iter().all(|i| i.state == ItemState::Flagged), "internal: kept, flagged");
            seen.push(p.steps);
        }
        eprintln!("close steps (zero target, an hour): {seen:?}");
        // Zero: 1,000, 500, 250, 125, 62, then 50 at a time.
        assert!((20..=60).contains(&seen[0]), "steps under a zero target: {seen:?}");
        // An hour: 1,000, then 2,000, then what is left.
        assert!(seen[1] <= 3, "steps under an hour's target: {seen:?}");
        assert!(app.store.verify_audit_chain().await.unwrap().broken.is_none());
    }

    /// A generation writes its items in steps sized by the time they take
    /// (its `campaign.started` event records how many): shrunk to their
    /// floor of 10 people under a target no step meets, grown under one no
    /// step reaches (fixed pages of 200 people would take 16 steps for
    /// ~3,000 people either way).
    async fn a_generation_sizes_its_steps_by_the_time_they_take(t: TestStore) {
        let (app, _) = setup(&t).await;
        accountants(&app, 3000).await;
        let mut seen = Vec::new();
        for target in [std::time::Duration::ZERO, std::time::Duration::from_secs(3600)] {
            app.set_step_target_for_test(target);
            let c = app.start_campaign("internal", "user:admin").await.unwrap();
            app.set_step_target_for_test(idgov_server::app::policy::STEP_TARGET);
            assert_eq!(c.state, CampaignState::Open);
            let items = items_of(&app, &c.id).await;
            let people: BTreeSet<&str> = items.iter().map(|i| i.employee_id.as_str()).collect();
            assert!(people.len() > 3000, "{} people", people.len());
            assert!(items.iter().all(|i| i.state == ItemState::Open));
            let filter = idgov_store::AuditFilter {
                action: "campaign.started".into(),
                target: format!("campaign:{}", c.id),
                ..Default::default()
            };
            let started = app.store.list_audit_events(&filter, 0, 10).await.unwrap();
            let detail: serde_json::Value = serde_json::from_str(&started[0].detail).unwrap();
            assert_eq!(detail["items"].as_u64(), Some(items.len() as u64));
            seen.push(detail["steps"].as_u64().unwrap());
            app.close_campaign(&c.id, "user:admin").await.unwrap();
        }
        eprintln!("generation steps (zero target, an hour): {seen:?}");
        // Zero: 200, 100, 50, 25, 12, then 10 people at a time.
        assert!(seen[0] > 200, "steps under a zero target: {seen:?}");
        // An hour: 200, 200 (read beside the first), 400, 800, 1,600, then
        // the step that finds nobody left.
        assert!(seen[1] <= 6, "steps under an hour's target: {seen:?}");
        assert!(app.store.verify_audit_chain().await.unwrap().broken.is_none());
    }

    async fn a_leaver_is_applied_at_once_during_a_large_close(t: TestStore) {
        let (app, _) = setup(&t).await;
        accountants(&app, 5100).await;
        let c = app.start_campaign("internal", "user:admin").await.unwrap();
        let items = items_of(&app, &c.id).await;
        assert!(items.len() > 5100, "{} items", items.len());
        // The last item M1 reviews (items are defaulted in id order).
        let last = items.iter().rfind(|i| i.reviewer == "M1").cloned().unwrap();
        let close = {
            let app = app.clone();
            let id = c.id.clone();
            tokio::spawn(async move { app.close_campaign(&id, "user:admin").await })
        };
        // Wait until the close has given its first page their default.
        let t0 = std::time::Instant::now();
        loop {
            let now = app.campaign(&c.id).await.unwrap();
            if now.closing.as_ref().is_some_and(|p| p.defaulted > 0) {
                break;
            }
            assert!(t0.elapsed() < std::time::Duration::from_secs(120), "the close never made a step: {:?}", now.state);
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let took = terminate_now(&app, "t-A05099", "A05099").await;
        let busy = !close.is_finished();
        // Decisions are refused once the campaign closes.
        let r = decide(&app, "M1", &[], vec![decision(&last, Verdict::Certify, "")]).await;
        assert!(r[0].is_err(), "a decision landed in a closing campaign");
        let out = close.await.unwrap().unwrap();
        eprintln!("terminate during the close acknowledged in {took:?} (close still running: {busy})");
        assert!(took < std::time::Duration::from_secs(2), "the leaver waited {took:?} behind the close");
        assert_eq!(out.campaign.state, CampaignState::Closed);
        let after = items_of(&app, &c.id).await;
        assert!(after.iter().all(|i| i.state != ItemState::Open), "an item was left open");
        let flagged = after.iter().filter(|i| i.state == ItemState::Flagged).count() as u64;
        assert_eq!(out.defaulted, flagged, "internal: the unanswered are kept, flagged");
        assert_eq!(audit_count(&app, "review.defaulted", "").await as u64, out.defaulted, "one audit event per default");
        assert!(active_grants(&app, "A05099").await.is_empty());
        let report = app.store.verify_audit_chain().await.unwrap();
        assert!(report.broken.is_none());
    }

    async fn a_released_close_cut_short_is_carried_on_by_the_scheduler(t: TestStore) {
        let (app, _) = setup(&t).await;
        accountants(&app, 2100).await;
        let c = app.start_campaign("confidential", "user:admin").await.unwrap();
        let total = items_of(&app, &c.id).await.len();
        // Nobody answers: every accountant would lose the ledger: held.
        let out = app.close_campaign(&c.id, "user:admin").await.unwrap();
        let held = out.held_change_id.clone().expect("held by the guard");
        assert_eq!(out.campaign.state, CampaignState::Held);
        let release = {
            let app = app.clone();
            tokio::spawn(async move { app.release_held(&held, "reviewed the list", "user:S1").await })
        };
        let t0 = std::time::Instant::now();
        loop {
            let now = app.campaign(&c.id).await.unwrap();
            if now.closing.as_ref().is_some_and(|p| p.defaulted > 0) {
                break;
            }
            assert!(t0.elapsed() < std::time::Duration::from_secs(120), "the release never made a step");
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        // The process stops in the middle of the close.
        release.abort();
        let _ = release.await;
        let cut = app.campaign(&c.id).await.unwrap();
        assert_eq!(cut.state, CampaignState::Closing, "cut short");
        let done_before = cut.closing.clone().unwrap().defaulted;
        assert!(done_before < total as u64, "part of it is left: {done_before} of {total}");
        // The scheduler carries it on from the recorded place (a tick that
        // fails, e.g. on the stopped process's locks not yet released, is
        // retried at the next tick).
        for tick in 0.. {
            match app.run_campaign_schedule().await {
                Ok(()) => break,
                Err(e) if tick < 5 => eprintln!("scheduler tick {tick} failed: {e:?}"),
                Err(e) => panic!("the scheduler cannot carry the close on: {e:?}"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let closed = app.campaign(&c.id).await.unwrap();
        assert_eq!(closed.state, CampaignState::Closed);
        let after = items_of(&app, &c.id).await;
        assert!(after.iter().all(|i| i.state != ItemState::Open));
        let revoked = after.iter().filter(|i| i.state == ItemState::Revoked).count();
        assert!(revoked > 2100, "{revoked}");
        assert_eq!(closed.closing.unwrap().revoked as usize, revoked, "counted once each");
        assert_eq!(audit_count(&app, "review.defaulted", "").await, after.iter().filter(|i| i.decided_by.as_deref() == Some("system:non-response")).count(), "each default audited once");
        for id in ["A00000", "A01000", "A02099"] {
            assert!(!active_grants(&app, id).await.contains(&"ledger".to_string()), "{id} kept the ledger");
        }
        assert!(active_grants(&app, "P6").await.contains(&"ledger".to_string()), "protected");
        let report = app.store.verify_audit_chain().await.unwrap();
        assert!(report.broken.is_none());
    }
}

both_backends! {
    async fn a_dated_leaver_does_not_wait_behind_a_scheduled_close(t: TestStore) {
        // The scheduler's short work (due HR events) and its long work
        // (campaigns, resumed bulk work) run in separate loops: a dated
        // termination that falls due while the scheduler closes a large
        // campaign is applied at once.
        let (app, clock) = setup(&t).await;
        accountants(&app, 6000).await;
        let c = app.start_campaign("internal", "user:admin").await.unwrap();
        let leave_at = (app.now() + days(15) + chrono::Duration::hours(1)).to_rfc3339();
        app.submit_event(event(&app, EventKind::Terminate, "t-A00001", "A00001", &leave_at, AttributesPatch::default()), "service:hr")
            .await
            .unwrap();
        clock.advance(days(15)); // the campaign is due; the leaver not yet
        let every = std::time::Duration::from_millis(20);
        let bulk = tokio::spawn(idgov_server::app::scheduler::bulk_loop(std::sync::Arc::downgrade(&app), every, app.workers.stop_token()));
        let short = tokio::spawn(idgov_server::app::scheduler::scheduler_loop(std::sync::Arc::downgrade(&app), every, app.workers.stop_token()));
        let t0 = std::time::Instant::now();
        while app.campaign(&c.id).await.unwrap().state != CampaignState::Closing {
            assert!(t0.elapsed() < std::time::Duration::from_secs(60), "the scheduler never closed the campaign");
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        clock.advance(chrono::Duration::hours(2)); // the leaver is due
        let due = std::time::Instant::now();
        loop {
            let p = app.store.get_identity("A00001").await.unwrap().unwrap();
            if p.status == idgov_domain::identity::Status::Terminated {
                break;
            }
            assert!(due.elapsed() < std::time::Duration::from_secs(60), "the dated leaver was never applied");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let took = due.elapsed();
        let closing = app.campaign(&c.id).await.unwrap().state == CampaignState::Closing;
        eprintln!("dated leaver applied {took:?} after it fell due (close still running: {closing})");
        assert!(took < std::time::Duration::from_secs(1), "the dated leaver waited {took:?} behind the close");
        while app.campaign(&c.id).await.unwrap().state != CampaignState::Closed {
            assert!(t0.elapsed() < std::time::Duration::from_secs(120), "the close never finished");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(active_grants(&app, "A00001").await.is_empty());
        bulk.abort();
        short.abort();
    }
}

//! Web sessions (issue 12) on both backends: the idle and absolute limits,
//! a leaver's session, sign-out; each end audited; only hashes stored.

use crate::common::*;
use idgov_authz::{Caller, Role};
use idgov_domain::hr::EventKind;
use idgov_domain::identity::AttributesPatch;
use idgov_server::app::web_sessions::{NoSession, SessionLimits, secret_hash};
use idgov_store::AuditFilter;
use idgov_tests::backends::TestStore;
use idgov_tests::both_backends;

fn person(id: &str) -> Caller {
    Caller {
        subject: id.into(),
        employee_id: Some(id.into()),
        roles: [Role::Auditor].into_iter().collect(),
        method: "test".into(),
    }
}

both_backends! {
    async fn sessions_end_when_idle_too_long_old_or_their_person_leaves(t: TestStore) {
        let (app, clock) = app_on(&t).await;
        with_policy(&app).await;
        for id in ["E1", "E2", "E3"] {
            hire(&app, &Person::new(id, "Finance")).await;
        }
        let limits = SessionLimits::default();
        // Only the hash of the id is stored; the id itself signs in.
        let (id1, s1) = app.sign_in(&person("E1"), "oidc", "", limits).await.unwrap();
        assert_eq!(s1.id_hash, secret_hash(&id1));
        assert!(app.store.get_web_session(&id1).await.unwrap().is_none());
        let (caller, _) = app.web_session(&id1, limits).await.unwrap().unwrap();
        assert_eq!(caller.employee_id.as_deref(), Some("E1"));
        assert!(caller.roles.contains(&Role::Auditor));
        // Active every 20 minutes: alive; then 31 minutes idle: ended.
        for _ in 0..3 {
            clock.advance(chrono::Duration::minutes(20));
            assert!(app.web_session(&id1, limits).await.unwrap().is_ok());
        }
        clock.advance(chrono::Duration::minutes(31));
        assert_eq!(app.web_session(&id1, limits).await.unwrap().unwrap_err(), NoSession::Idle);
        assert_eq!(app.web_session(&id1, limits).await.unwrap().unwrap_err(), NoSession::Ended);
        // However active, 12 hours after sign-in it ends.
        let (id2, _) = app.sign_in(&person("E2"), "oidc", "", limits).await.unwrap();
        for _ in 0..(12 * 3) {
            clock.advance(chrono::Duration::minutes(20));
            if app.web_session(&id2, limits).await.unwrap().is_err() {
                break;
            }
        }
        assert_eq!(app.web_session(&id2, limits).await.unwrap().unwrap_err(), NoSession::Ended);
        // A leaver's session ends at their next request.
        let (id3, _) = app.sign_in(&person("E3"), "dev", "", limits).await.unwrap();
        app.submit_event(
            event(&app, EventKind::Terminate, "bye-E3", "E3", "", AttributesPatch::default()),
            "service:hr",
        )
        .await
        .unwrap();
        assert_eq!(app.web_session(&id3, limits).await.unwrap().unwrap_err(), NoSession::Left);
        // And a leaver cannot sign in again.
        assert!(app.sign_in(&person("E3"), "oidc", "", limits).await.is_err());
        // Sign-out ends a session at once.
        let (id4, s4) = app.sign_in(&person("E1"), "oidc", "", limits).await.unwrap();
        app.sign_out(&s4).await.unwrap();
        assert_eq!(app.web_session(&id4, limits).await.unwrap().unwrap_err(), NoSession::Ended);
        // Garbage ids are unknown, never an error.
        assert_eq!(app.web_session("x'; DROP", limits).await.unwrap().unwrap_err(), NoSession::Unknown);
        let count = |action: &'static str| {
            let app = app.clone();
            async move {
                app.audit_events(&AuditFilter { action: action.into(), ..Default::default() }, 0, 100)
                    .await
                    .unwrap()
                    .len()
            }
        };
        assert_eq!(count("web.signed_in").await, 4);
        assert_eq!(count("web.session_ended").await, 3, "idle, absolute, leaver");
        assert_eq!(count("web.signed_out").await, 1);
    }
}

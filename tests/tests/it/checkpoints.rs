//! Signed audit checkpoints (issue 13): an attacker with write access to
//! the database can rewrite the chain from some point with every hash
//! recomputed, or cut it short, so that the chain alone verifies; the
//! signed checkpoints catch both, and a checkpoint cannot be forged.

use crate::common::*;
use idgov_server::App;
use idgov_server::app::audit_checkpoints::AuditSigner;
use idgov_store::{AuditFilter, Checkpoint};
use idgov_tests::backends::TestStore;
use idgov_tests::both_backends;
use sqlx::Connection;
use std::sync::Arc;

async fn raw(t: &TestStore) -> sqlx::AnyConnection {
    sqlx::AnyConnection::connect(&t.url)
        .await
        .expect("raw connection")
}

/// An organisation with some history, a checkpoint of it, and more after.
async fn signed_history(t: &TestStore) -> (Arc<App>, Checkpoint, tempfile::TempDir) {
    let (app, clock) = app_on(t).await;
    let keys = tempfile::tempdir().unwrap();
    app.set_audit_signer(Arc::new(AuditSigner::load_or_create(keys.path()).unwrap()));
    with_policy(&app).await;
    for id in ["E1", "E2", "E3"] {
        hire(&app, &Person::new(id, "Sales")).await;
    }
    clock.advance(chrono::Duration::minutes(10));
    let cp = app
        .checkpoint_audit()
        .await
        .unwrap()
        .expect("a checkpoint of the head");
    assert!(
        app.checkpoint_audit().await.unwrap().is_none(),
        "nothing new to sign"
    );
    for id in ["E4", "E5"] {
        hire(&app, &Person::new(id, "Finance")).await;
    }
    let r = app.verify_audit("user:auditor").await.unwrap();
    assert!(r.broken.is_none(), "{r:?}");
    assert_eq!(r.checkpoints, 1);
    assert_eq!(r.last_checkpoint.map(|c| c.0), Some(cp.seq));
    (app, cp, keys)
}

both_backends! {
    async fn a_chain_rewritten_with_recomputed_hashes_is_caught(t: TestStore) {
        let (app, cp, _keys) = signed_history(&t).await;
        let events = app.audit_events(&AuditFilter::default(), 0, 100_000).await.unwrap();
        let mut c = raw(&t).await;
        crate::common::drop_audit_guard(&t, &mut c).await;
        // Event 2 gets another detail; every later hash is recomputed, and
        // the head with them: the chain alone is consistent again.
        let mut prev = events[0].hash.clone();
        for e in events.iter().skip(1) {
            let detail = if e.seq == 2 { "{\"rewritten\":true}".to_string() } else { e.detail.clone() };
            let hash = idgov_domain::audit::event_hash(
                &prev, e.seq, e.occurred_at.timestamp_micros(), &e.actor, &e.action, &e.target, &detail, e.security,
            );
            sqlx::query("UPDATE audit_events SET detail = $1, prev_hash = $2, hash = $3 WHERE seq = $4")
                .bind(&detail).bind(&prev).bind(&hash).bind(e.seq)
                .execute(&mut c).await.unwrap();
            prev = hash;
        }
        sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1").bind(&prev).execute(&mut c).await.unwrap();
        assert!(app.store.verify_audit_chain().await.unwrap().broken.is_none(), "the chain alone looks intact");
        let r = app.verify_audit("user:auditor").await.unwrap();
        let b = r.broken.expect("the checkpoint catches it");
        assert_eq!(b.seq, cp.seq);
        assert!(b.problem.contains("rewritten"), "{}", b.problem);
    }

    async fn a_chain_cut_short_is_caught(t: TestStore) {
        let (app, cp, _keys) = signed_history(&t).await;
        let keep = cp.seq - 3;
        let kept_hash = app.store.audit_hash_at(keep).await.unwrap().unwrap();
        let mut c = raw(&t).await;
        crate::common::drop_audit_guard(&t, &mut c).await;
        sqlx::query("DELETE FROM audit_events WHERE seq > $1").bind(keep).execute(&mut c).await.unwrap();
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1").bind(keep).bind(&kept_hash).execute(&mut c).await.unwrap();
        assert!(app.store.verify_audit_chain().await.unwrap().broken.is_none(), "the chain alone looks intact");
        let r = app.verify_audit("user:auditor").await.unwrap();
        let b = r.broken.expect("the checkpoint catches it");
        assert_eq!(b.seq, cp.seq);
        assert!(b.problem.contains("cut short"), "{}", b.problem);
    }

    async fn a_forged_checkpoint_is_caught(t: TestStore) {
        let (app, cp, _keys) = signed_history(&t).await;
        let (head, hash) = app.store.audit_head().await.unwrap();
        let mut c = raw(&t).await;
        // A checkpoint made up for the head, with this service's key id.
        sqlx::query("INSERT INTO audit_checkpoints (seq, hash, signed_at, key_id, signature) VALUES ($1, $2, $3, $4, $5)")
            .bind(head).bind(&hash).bind(cp.signed_at.timestamp_micros() + 1).bind(&cp.key_id)
            .bind(&cp.signature)
            .execute(&mut c).await.unwrap();
        let r = app.verify_audit("user:auditor").await.unwrap();
        let b = r.broken.expect("a forged checkpoint is caught");
        assert_eq!(b.seq, head);
        assert!(b.problem.contains("no valid signature"), "{}", b.problem);
        // One signed by another key is refused too.
        let other = tempfile::tempdir().unwrap();
        let stranger = AuditSigner::load_or_create(other.path()).unwrap();
        assert_ne!(stranger.key_id, cp.key_id);
        let forged = Checkpoint { key_id: stranger.key_id.clone(), ..cp.clone() };
        let mine = app.audit_signer().unwrap();
        assert!(mine.check(&forged).unwrap().contains("not this service's key"));
        assert!(mine.check(&cp).is_none(), "the genuine one verifies");
    }
}

//! Smoke test of both backends (the full suite lives in `it`).
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
use idgov_tests::backends::TestStore;
use idgov_tests::both_backends;

both_backends! {
    async fn opens_and_migrates(t: TestStore) {
        t.store.ping().await.unwrap_or_else(|e| panic!("{e}"));
        let report = t.store.verify_audit_chain().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.checked, 0);
        assert!(report.broken.is_none());
    }
}

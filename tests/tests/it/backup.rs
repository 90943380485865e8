//! Online backup and restore (issue 13): a backup taken while HR events are
//! being written holds every event acknowledged before it began; the
//! restored data directory starts, its chain and signed checkpoints verify.

use crate::common::*;
use idgov_domain::hr::EventKind;
use idgov_server::ManualClock;
use idgov_server::serve::{ServeConfig, start as start_server};
use idgov_store::backup::{backup_sqlite, restore_sqlite};
use idgov_tests::server::start;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEYS: [&str; 2] = [
    idgov_server::auth::dev::KEY_FILE,
    idgov_server::app::audit_checkpoints::KEY_FILE,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_write_load_restores_every_acknowledged_event() {
    let Some(s) = start("sqlite").await else {
        return;
    };
    let app = s.app().clone();
    with_policy(&app).await;
    assert!(app.checkpoint_audit().await.unwrap().is_some());
    // HR keeps hiring while the backup runs.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (app, acked, stop) = (app.clone(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("W{i:05}");
                let ev = event(
                    &app,
                    EventKind::Hire,
                    &format!("hire-{id}"),
                    &id,
                    "",
                    Person::new(&id, "Finance").patch(),
                );
                app.submit_event(ev, "service:hr").await.unwrap();
                acked.lock().unwrap().push(id);
                i += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before: Vec<String> = acked.lock().unwrap().clone();
    assert!(before.len() > 5, "the load runs: {}", before.len());
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("idgov.backup");
    let r = backup_sqlite(s.dir.path(), &out, &KEYS).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let after = acked.lock().unwrap().len();
    assert!(after > before.len(), "writes went on during the backup");
    assert!(r.files.contains(&KEYS[1].to_string()), "{r:?}");
    // A second backup to the same file is refused.
    assert!(backup_sqlite(s.dir.path(), &out, &KEYS).await.is_err());

    // Restore into an empty directory and start the service on it.
    let restored = tempfile::tempdir().unwrap();
    let data = restored.path().join("data");
    let rr = restore_sqlite(&out, &data).await.unwrap();
    assert_eq!((rr.audit_seq, &rr.audit_hash), (r.audit_seq, &r.audit_hash));
    assert!(
        restore_sqlite(&out, &data).await.is_err(),
        "a non-empty data directory is refused"
    );
    let cfg = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data.clone(),
        scheduler_interval: Duration::from_secs(3600),
        ..ServeConfig::default()
    };
    let running = start_server(
        cfg,
        Arc::new(ManualClock::new(idgov_server::Clock::now(s.clock.as_ref()))),
    )
    .await
    .expect("the restored service starts");
    for id in &before {
        assert!(
            running.app.store.get_identity(id).await.unwrap().is_some(),
            "{id} was acknowledged before the backup began"
        );
    }
    let v = running.app.verify_audit("user:auditor").await.unwrap();
    assert!(v.broken.is_none(), "{v:?}");
    assert!(
        v.checkpoints >= 1,
        "the old checkpoints verify with the restored key"
    );
    running.stop().await.unwrap();
}

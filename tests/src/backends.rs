//! Opening a store on either backend, for the shared storage suite.

use idgov_store::Store;

/// A store on a fresh database, and what keeps it alive.
pub struct TestStore {
    pub store: Store,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

/// Opens a fresh store on `backend` (`"sqlite"` or `"postgres"`). Returns
/// `None` when PostgreSQL is unavailable locally (the test is skipped; in CI
/// it fails instead).
pub async fn open(backend: &str) -> Option<TestStore> {
    match backend {
        "sqlite" => {
            let dir = tempfile::tempdir().ok()?;
            let url = format!("sqlite:{}?mode=rwc", dir.path().join("idgov.db").display());
            let store = match Store::open(&url).await {
                Ok(s) => s,
                Err(e) => panic!("cannot open SQLite store: {e}"),
            };
            Some(TestStore {
                store,
                url,
                _dir: Some(dir),
            })
        }
        "postgres" => {
            let server = crate::pg::shared()?;
            let url = match server.fresh_database().await {
                Ok(u) => u,
                Err(e) => panic!("cannot create a PostgreSQL database: {e}"),
            };
            let store = match Store::open(&url).await {
                Ok(s) => s,
                Err(e) => panic!("cannot open PostgreSQL store: {e}"),
            };
            Some(TestStore {
                store,
                url,
                _dir: None,
            })
        }
        other => panic!("unknown backend {other}"),
    }
}

/// Defines each test once per backend: `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($($(#[$doc:meta])* async fn $name:ident($store:ident : $ty:ty) $body:block)*) => {
        $(
            $(#[$doc])*
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                async fn run($store: $ty) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    if let Some(t) = $crate::backends::open("sqlite").await { run(t).await }
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(t) = $crate::backends::open("postgres").await { run(t).await }
                }
            }
        )*
    };
}

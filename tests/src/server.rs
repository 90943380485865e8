//! An in-process idgov server on a random loopback port, on SQLite or
//! PostgreSQL, with a manual clock the test moves, and helpers that mint
//! development tokens and build clients.

use chrono::{DateTime, Duration, Utc};
use idgov_authz::Role;
use idgov_proto::v1::audit_service_client::AuditServiceClient;
use idgov_proto::v1::hr_service_client::HrServiceClient;
use idgov_proto::v1::identity_service_client::IdentityServiceClient;
use idgov_proto::v1::policy_service_client::PolicyServiceClient;
use idgov_server::auth::dev::DevAuth;
use idgov_server::serve::{Running, ServeConfig, start as start_server};
use idgov_server::{App, Clock, ManualClock};
use std::sync::Arc;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Sends a fixed bearer token (or none).
#[derive(Clone)]
pub struct Token(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(h) = &self.0 {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    }
}

/// A client channel that sends a fixed token (or none).
pub type Authed = InterceptedService<Channel, Token>;

pub struct TestServer {
    pub running: Option<Running>,
    pub clock: Arc<ManualClock>,
    pub dev: DevAuth,
    pub url: String,
    pub backend: &'static str,
    pub database_url: Option<String>,
    pub dir: tempfile::TempDir,
}

/// A fixed, realistic start time for the manual clock.
pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-02T09:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

/// Starts a server on `backend`; `None` when PostgreSQL is unavailable
/// locally (skipped; fails in CI).
pub async fn start(backend: &'static str) -> Option<TestServer> {
    start_with_auth(backend, None).await
}

/// Starts a server with an authentication configuration (the TOML of
/// `idgov serve --auth`); paths in it are relative to the server's data dir.
pub async fn start_with_auth(backend: &'static str, auth: Option<&str>) -> Option<TestServer> {
    start_at(backend, auth, 0).await
}

/// Starts a server listening on `port` (0: any free one), for tests that
/// must know the address before the server starts (an OIDC redirect URL).
pub async fn start_at(backend: &'static str, auth: Option<&str>, port: u16) -> Option<TestServer> {
    start_inner(backend, auth, port, None, None).await
}

/// Starts a server (development mode) delivering to the webhook
/// subscriptions of the file at `webhooks`.
pub async fn start_with_webhooks(
    backend: &'static str,
    webhooks: std::path::PathBuf,
) -> Option<TestServer> {
    start_inner(backend, None, 0, None, Some(webhooks)).await
}

/// A second `idgov serve` over the same PostgreSQL database as `of` (its own
/// data directory, policy cache, workers and clock, set to `of`'s time):
/// two replicas of one service.
pub async fn start_replica(of: &TestServer) -> TestServer {
    let url = of
        .database_url
        .clone()
        .expect("replicas share a PostgreSQL database");
    let s = start_inner(of.backend, None, 0, Some(url), None)
        .await
        .expect("the replica starts");
    s.clock.set(of.clock.now());
    s
}

async fn start_inner(
    backend: &'static str,
    auth: Option<&str>,
    port: u16,
    shared_database: Option<String>,
    webhooks_file: Option<std::path::PathBuf>,
) -> Option<TestServer> {
    // Server logs go to the test's output (shown when a test fails).
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IDGOV_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = match backend {
        _ if shared_database.is_some() => shared_database,
        "sqlite" => None,
        "postgres" => Some(
            crate::pg::shared()?
                .fresh_database()
                .await
                .expect("fresh database"),
        ),
        other => panic!("unknown backend {other}"),
    };
    let clock = Arc::new(ManualClock::new(t0()));
    let cfg = ServeConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        data_dir: dir.path().to_path_buf(),
        database_url: database_url.clone(),
        policy_file: None,
        directory_file: None,
        webhooks_file,
        auth_file: auth.map(|toml| {
            let path = dir.path().join("auth.toml");
            std::fs::write(&path, toml).expect("auth.toml");
            path
        }),
        // Tests run the scheduler themselves, at the times they choose.
        scheduler_interval: std::time::Duration::from_secs(3600),
        health_interval: std::time::Duration::from_millis(200),
    };
    let running = start_server(cfg, clock.clone())
        .await
        .expect("server starts");
    let scheme = if running.tls { "https" } else { "http" };
    let dev = DevAuth::load_or_create(dir.path()).expect("dev key");
    Some(TestServer {
        url: format!("{scheme}://{}", running.addr),
        running: Some(running),
        clock,
        dev,
        backend,
        database_url,
        dir,
    })
}

impl TestServer {
    pub fn app(&self) -> &Arc<App> {
        &self.running.as_ref().expect("running").app
    }

    /// A token with `roles`, acting as `employee_id` if given.
    pub fn token(&self, roles: &[Role], employee_id: Option<&str>) -> String {
        self.dev
            .mint(
                employee_id.unwrap_or("test-user"),
                employee_id,
                roles,
                Duration::hours(1),
            )
            .expect("mint")
    }

    /// A channel sending `token` (or no credentials at all).
    pub async fn channel(&self, token: Option<String>) -> Authed {
        let channel = Channel::from_shared(self.url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect");
        let header = token.map(|t| {
            format!("Bearer {t}")
                .parse::<MetadataValue<_>>()
                .expect("header")
        });
        InterceptedService::new(channel, Token(header))
    }

    pub async fn hr(&self, roles: &[Role]) -> HrServiceClient<Authed> {
        HrServiceClient::new(self.channel(Some(self.token(roles, None))).await)
    }

    pub async fn ids(
        &self,
        roles: &[Role],
        as_employee: Option<&str>,
    ) -> IdentityServiceClient<Authed> {
        IdentityServiceClient::new(self.channel(Some(self.token(roles, as_employee))).await)
    }

    pub async fn policy(&self, roles: &[Role]) -> PolicyServiceClient<Authed> {
        PolicyServiceClient::new(self.channel(Some(self.token(roles, None))).await)
    }

    pub async fn audit(&self, roles: &[Role]) -> AuditServiceClient<Authed> {
        AuditServiceClient::new(self.channel(Some(self.token(roles, None))).await)
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.expect("stop");
        }
    }

    /// Stops the server as `idgov serve` does, with `grace` for what is
    /// running; returns what the stop had to drop.
    pub async fn stop_within(
        &mut self,
        grace: std::time::Duration,
    ) -> idgov_server::app::workers::ShutdownReport {
        self.running
            .take()
            .expect("running")
            .stop_within(grace)
            .await
            .expect("stop")
    }

    /// A gRPC health client (health needs no token).
    pub async fn health(
        &self,
    ) -> tonic_health::pb::health_client::HealthClient<tonic::transport::Channel> {
        let ch = tonic::transport::Channel::from_shared(self.url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect");
        tonic_health::pb::health_client::HealthClient::new(ch)
    }

    /// The server's database opened again, as the next start would find it
    /// (after [`Running::stop`]).
    pub async fn reopen_store(&self) -> idgov_store::Store {
        match &self.database_url {
            Some(url) => idgov_store::Store::open(url).await.expect("reopen"),
            None => idgov_store::Store::open_data_dir(self.dir.path())
                .await
                .expect("reopen"),
        }
    }
}

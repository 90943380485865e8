//! Running the service: open the store, load the policy, start the intake
//! writer and the scheduler, and serve `idgov.v1` with gRPC health and
//! reflection until the shutdown signal.

use crate::app::App;
use crate::app::scheduler::{bulk_loop, scheduler_loop};
use crate::auth::config::AuthConfig;
use crate::auth::dev::DevAuth;
use crate::auth::layer::AuthLayer;
use crate::auth::oidc::OidcAuth;
use crate::auth::{Authenticator, CertRoles};
use crate::clock::Clock;
use crate::grpc::Api;
use anyhow::{Context, bail};
use idgov_proto::v1::access_service_server::AccessServiceServer;
use idgov_proto::v1::audit_service_server::AuditServiceServer;
use idgov_proto::v1::campaign_service_server::CampaignServiceServer;
use idgov_proto::v1::directory_service_server::DirectoryServiceServer;
use idgov_proto::v1::hr_service_server::HrServiceServer;
use idgov_proto::v1::identity_service_server::IdentityServiceServer;
use idgov_proto::v1::policy_service_server::PolicyServiceServer;
use idgov_proto::v1::provisioning_service_server::ProvisioningServiceServer;
use idgov_store::Store;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::server::NamedService;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// The largest request message a service accepts and the largest response
/// it sends: 4 MiB, gRPC's usual client default, so every client can read
/// every answer. Rosters stream entry by entry; lists are paged.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Applies [`MAX_MESSAGE_BYTES`] to a generated service.
macro_rules! limits {
    ($svc:expr) => {
        $svc.max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    };
}

/// The default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

/// What `idgov serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `postgres://…`; `None` uses SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// A policy document to apply at start (if it differs from the one in force).
    pub policy_file: Option<PathBuf>,
    /// The directory configuration file; without it nothing is provisioned.
    pub directory_file: Option<PathBuf>,
    /// The authentication configuration (OIDC, TLS); without it, development mode.
    pub auth_file: Option<PathBuf>,
    /// Webhook subscriptions (`[[subscriptions]]`); without it, none.
    pub webhooks_file: Option<PathBuf>,
    pub scheduler_interval: Duration,
    /// How often gRPC health checks that the database answers.
    pub health_interval: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 50051))),
            data_dir: PathBuf::from("idgov-data"),
            database_url: None,
            policy_file: None,
            directory_file: None,
            auth_file: None,
            webhooks_file: None,
            scheduler_interval: Duration::from_secs(1),
            health_interval: Duration::from_secs(5),
        }
    }
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    /// How callers authenticate (for the banner).
    pub auth_mode: &'static str,
    /// True when the listener speaks TLS.
    pub tls: bool,
    /// Why the `--policy` file is not applied yet (it will be, once the
    /// people it names exist).
    pub policy_pending: Option<String>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// How long a stopping server waits for its workers (an intake batch, a
/// provisioning run, a bulk step) before it drops them. Bulk work dropped
/// then resumes at the next start.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// The least time the workers get to stop after the calls in flight took
/// most of the grace period: a whole stop takes at most
/// `SHUTDOWN_GRACE` + this.
const WORKERS_GRACE_FLOOR: Duration = Duration::from_secs(5);

impl Running {
    /// Stops the process in order: bulk work stops after its current step
    /// (it goes on at the next start) and gRPC health turns NOT_SERVING, no
    /// new calls, in-flight calls finish, then every worker stops
    /// ([`App::shutdown`]), then the database connections close; all of it
    /// within [`SHUTDOWN_GRACE`] (plus at most 5 s for the workers when the
    /// calls in flight took it all).
    pub async fn stop(self) -> anyhow::Result<idgov_app::workers::ShutdownReport> {
        self.stop_within(SHUTDOWN_GRACE).await
    }

    /// [`Running::stop`] with another grace period for the workers.
    pub async fn stop_within(
        mut self,
        grace: Duration,
    ) -> anyhow::Result<idgov_app::workers::ShutdownReport> {
        // Bulk work stops after its current step, so that the calls
        // waiting for it are answered and the server drains at once.
        self.app.workers.wind_down();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // A call that does not end by itself (a client reading a stream
        // slowly, or never) does not hold the stop: past the grace
        // period, the connections still open are closed. The workers get
        // what is left of it, and at least WORKERS_GRACE_FLOOR.
        let deadline = tokio::time::Instant::now() + grace;
        let served = match tokio::time::timeout_at(deadline, &mut self.handle).await {
            Ok(served) => served.context("server task"),
            Err(_) => {
                tracing::warn!(
                    grace_seconds = grace.as_secs_f64(),
                    "calls still in flight after the grace period; closing their connections"
                );
                self.handle.abort();
                Ok(Ok(()))
            }
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let report = self
            .app
            .shutdown(left.max(WORKERS_GRACE_FLOOR.min(grace)))
            .await;
        self.app.store.close().await;
        served??;
        Ok(report)
    }
}

/// Opens the store the configuration names.
pub async fn open_store(cfg: &ServeConfig) -> anyhow::Result<Store> {
    Ok(match &cfg.database_url {
        Some(url) => Store::open(url).await.with_context(|| {
            format!("cannot open the database {}", idgov_store::redact_url(url))
        })?,
        None => Store::open_data_dir(&cfg.data_dir).await.with_context(|| {
            format!("cannot open the SQLite store in {}", cfg.data_dir.display())
        })?,
    })
}

/// Starts the service. It keeps serving until [`Running::stop`].
pub async fn start(cfg: ServeConfig, clock: Arc<dyn Clock>) -> anyhow::Result<Running> {
    let auth_cfg = match &cfg.auth_file {
        Some(p) => AuthConfig::load(p).map_err(anyhow::Error::msg)?,
        None => AuthConfig::default(),
    };
    let auth = match &auth_cfg.oidc {
        // Development mode: no identity provider is configured.
        None => {
            if !cfg.listen.ip().is_loopback() {
                bail!(
                    "refusing to listen on {}: without an OIDC issuer idgov runs in development mode, \
                     which accepts locally minted tokens and therefore listens on loopback only \
                     (use --listen 127.0.0.1:PORT, or configure [oidc] in the --auth file)",
                    cfg.listen
                );
            }
            Authenticator::Dev(DevAuth::load_or_create(&cfg.data_dir).map_err(anyhow::Error::msg)?)
        }
        Some(o) => {
            let oidc = Arc::new(OidcAuth::new(o.clone()).map_err(anyhow::Error::msg)?);
            // Keys are fetched now if the provider answers, else on first use.
            if let Err(e) = oidc.refresh().await {
                tracing::warn!(issuer = %oidc.issuer(), error = %e, "the OIDC provider does not answer yet; will retry on first use");
            }
            Authenticator::Oidc(oidc)
        }
    };
    let certs = CertRoles(
        auth_cfg
            .tls
            .as_ref()
            .map(|t| t.client_roles.clone())
            .unwrap_or_default(),
    );
    let directory = cfg
        .directory_file
        .as_deref()
        .map(idgov_directory::DirectoryConfig::load)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    if let Some(d) = &directory {
        tracing::info!(url = %d.connection.url, preset = ?d.preset, "provisioning to the directory");
    }
    let store = open_store(&cfg).await?;
    let app = App::start(store.clone(), clock, directory)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let signer = idgov_app::audit_checkpoints::AuditSigner::load_or_create(&cfg.data_dir)
        .map_err(anyhow::Error::msg)?;
    tracing::info!(key_id = %signer.key_id, "audit checkpoints are signed with this key (`idgov audit public-key`)");
    app.set_audit_signer(Arc::new(signer));

    let mut policy_pending = None;
    if let Some(path) = &cfg.policy_file {
        let doc = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the policy file {}", path.display()))?;
        let reason = format!("policy file {} at start", path.display());
        match app
            .apply_policy(&doc, false, &reason, "system:startup")
            .await
        {
            Ok(res) => {
                tracing::info!(outcome = ?res.outcome, version = res.policy.version, "policy file at start");
                if let Some(id) = &res.held_change_id {
                    tracing::warn!(held_change = %id, "the policy file was held by the mass-change guard; release it with `idgov hr held release`");
                }
            }
            // Owners not imported yet (a fresh install): serve anyway, and
            // apply it as soon as they exist.
            Err(e) if waits_for_people(&e) => {
                let short = short_error(&e);
                tracing::warn!(file = %path.display(), why = %short, "the policy file is not applied yet; it will be once its owners exist (or apply one with `idgov policy apply`)");
                policy_pending = Some(short);
                app.workers.spawn(
                    "pending policy file",
                    apply_when_possible(
                        Arc::downgrade(&app),
                        doc,
                        reason,
                        app.policy().version,
                        app.workers.stop_token(),
                    ),
                );
            }
            Err(e) => {
                bail!(
                    "the policy file {} was not applied: {}",
                    path.display(),
                    short_error(&e)
                );
            }
        }
    }

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    set_health(&health_reporter, tonic_health::ServingStatus::Serving).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(idgov_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("gRPC reflection")?;

    let api = Api::new(app.clone());
    let listener = TcpListener::bind(cfg.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (is another idgov running?)",
            cfg.listen
        )
    })?;
    let addr = listener.local_addr()?;
    let mode = auth.mode();
    // Headers beyond 32 KiB in all are refused before anything parses them
    // (a bearer token is at most 8 KiB; see auth::MAX_TOKEN_BYTES).
    let mut server = tonic::transport::Server::builder().http2_max_header_list_size(32 * 1024);
    if let Some(t) = &auth_cfg.tls {
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
        let mut tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(read(&t.cert_file)?, read(&t.key_file)?));
        if let Some(ca) = &t.client_ca_file {
            // Client certificates are optional: bearer-token clients need none.
            tls = tls
                .client_ca_root(Certificate::from_pem(read(ca)?))
                .client_auth_optional(true);
        }
        server = server.tls_config(tls).context("TLS configuration")?;
    }
    let signin = match (&auth, &auth_cfg.oidc, &auth_cfg.web) {
        (Authenticator::Dev(_), _, _) => idgov_web::signin::SignIn::Dev,
        (_, Some(o), Some(w)) => {
            let secret = match &w.client_secret_file {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .with_context(|| {
                            format!("cannot read web.client_secret_file {}", p.display())
                        })?
                        .trim()
                        .to_string(),
                ),
                None => None,
            };
            let rules = idgov_authz::ClaimRules {
                user_claim: o.user_claim.clone(),
                roles_claim: o.roles_claim.clone(),
                roles: o.roles.clone(),
                clients: o.clients.clone(),
            };
            idgov_web::signin::SignIn::Oidc(Box::new(
                idgov_web::signin::OidcSignIn::new(
                    o.issuer.clone(),
                    w.client_id.clone(),
                    secret,
                    w.redirect_url.clone(),
                    w.post_logout_redirect_url.clone(),
                    rules,
                    o.user_claim_is == crate::auth::config::UserKey::Email,
                )
                .map_err(anyhow::Error::msg)?,
            ))
        }
        _ => idgov_web::signin::SignIn::Unconfigured,
    };
    let web = idgov_web::router(Arc::new(idgov_web::WebState {
        app: app.clone(),
        signin,
        secure: match &auth_cfg.web {
            Some(w) => w.secure(auth_cfg.tls.is_some()),
            None => auth_cfg.tls.is_some(),
        },
        limits: auth_cfg
            .web
            .as_ref()
            .map(|w| w.limits())
            .unwrap_or_default(),
    }));
    // gRPC services and the web app on one port: the services' routes (no
    // fallback of their own) merged with the web app's (whose fallback
    // answers unknown gRPC methods as gRPC does).
    let grpc = tonic::service::Routes::from(axum::Router::new())
        .add_service(health_service)
        .add_service(reflection)
        .add_service(limits!(HrServiceServer::new(api.clone())))
        .add_service(limits!(IdentityServiceServer::new(api.clone())))
        .add_service(limits!(PolicyServiceServer::new(api.clone())))
        .add_service(limits!(ProvisioningServiceServer::new(api.clone())))
        .add_service(limits!(DirectoryServiceServer::new(api.clone())))
        .add_service(limits!(AccessServiceServer::new(api.clone())))
        .add_service(limits!(CampaignServiceServer::new(api.clone())))
        .add_service(limits!(AuditServiceServer::new(api)));
    let routes = tonic::service::Routes::from(
        grpc.into_axum_router()
            .merge(ops_routes(app.clone()))
            .merge(web),
    );
    let router = server
        .accept_http1(true)
        .layer(AuthLayer::new(auth, certs, store, app.denials.clone()))
        .add_routes(routes);
    let (tx, rx) = oneshot::channel::<()>();
    // tonic does not apply its nodelay setting to a stream of our own:
    // without it, multi-segment responses wait ~40 ms for a delayed ACK.
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |s| {
            if let Ok(s) = &s {
                let _ = s.set_nodelay(true);
            }
            s
        },
    );
    let handle = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = rx.await;
    }));
    let development = auth_cfg.oidc.is_none();
    app.set_development(development);
    let file_subs = match &cfg.webhooks_file {
        Some(path) => {
            let subs = idgov_app::webhooks::load(path, development)
                .await
                .map_err(anyhow::Error::msg)?;
            app.sync_subscriptions(&subs)
                .await
                .map_err(|e| anyhow::anyhow!("cannot record the webhook subscriptions: {e}"))?;
            tracing::info!(
                subscriptions = subs.len(),
                "delivering events to webhook subscribers"
            );
            subs
        }
        None => Vec::new(),
    };
    // Also delivers the subscriptions created through the API.
    // Every worker under the application's one shutdown (`Running::stop`).
    let weak = Arc::downgrade(&app);
    let workers = &app.workers;
    workers.spawn(
        "webhook delivery",
        idgov_app::webhooks::webhook_loop(weak.clone(), file_subs, workers.stop_token()),
    );
    workers.spawn(
        "scheduler",
        scheduler_loop(weak.clone(), cfg.scheduler_interval, workers.stop_token()),
    );
    workers.spawn(
        "bulk work",
        bulk_loop(weak.clone(), cfg.scheduler_interval, workers.stop_token()),
    );
    workers.spawn(
        "denied calls",
        crate::auth::denials::flush_loop(
            weak.clone(),
            Duration::from_secs(10),
            workers.stop_token(),
        ),
    );
    workers.spawn(
        "health",
        health_loop(
            weak,
            health_reporter,
            cfg.health_interval,
            workers.wind_down_token(),
        ),
    );
    tracing::info!(
        %addr,
        backend = app.store.backend().as_str(),
        auth = mode,
        policy_version = app.policy().version,
        "idgov serving"
    );
    Ok(Running {
        addr,
        app,
        auth_mode: mode,
        tls: auth_cfg.tls.is_some(),
        policy_pending,
        shutdown: Some(tx),
        handle,
    })
}

/// Operations endpoints, open like gRPC health (no secrets in them):
/// `/metrics` (Prometheus, OpenMetrics text), `/healthz` (the process
/// answers), `/readyz` (the database answers) and `/readyz/directory` (the
/// directory keeps up: no pending operation older than five minutes).
fn ops_routes(app: Arc<App>) -> axum::Router {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;
    let metrics = {
        let app = app.clone();
        move || {
            let app = app.clone();
            async move {
                match app.metrics_text().await {
                    Ok(text) => (
                        StatusCode::OK,
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                        .into_response(),
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics could not be read");
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "the metrics cannot be read now\n",
                        )
                            .into_response()
                    }
                }
            }
        }
    };
    let ready = {
        let app = app.clone();
        move || {
            let app = app.clone();
            async move {
                if app.database_ready().await {
                    (StatusCode::OK, "ready: the database answers\n")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not ready: the database does not answer\n",
                    )
                }
            }
        }
    };
    let directory = move || {
        let app = app.clone();
        async move {
            match app.directory_backlog().await {
                Ok(None) => (StatusCode::OK, "no directory is configured\n".to_string()),
                Ok(Some((pending, age))) if age <= 300 => (
                    StatusCode::OK,
                    format!("ready: {pending} operation(s) pending, the oldest {age} s old\n"),
                ),
                Ok(Some((pending, age))) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "behind: {pending} operation(s) pending, the oldest {age} s old; see `idgov provisioning list`\n"
                    ),
                ),
                Err(_) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: the database does not answer\n".to_string(),
                ),
            }
        }
    };
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/readyz/directory", get(directory))
}

/// True when a policy is refused only because people it names (owners,
/// fallback approvers or reviewers) are not known active identities yet:
/// data that arrives with the first roster, not a mistake in the document.
fn waits_for_people(e: &idgov_app::AppError) -> bool {
    match e {
        idgov_app::AppError::Domain(d) => {
            d.code == idgov_domain::ErrorCode::InvalidPolicy
                && !d.violations.is_empty()
                && d.violations
                    .iter()
                    .all(|v| v.field.ends_with(".owner") || v.field.contains("fallback_"))
        }
        _ => false,
    }
}

/// An error on one line: the first problem and how many more there are.
fn short_error(e: &idgov_app::AppError) -> String {
    match e {
        idgov_app::AppError::Domain(d) => {
            let mut s = d.message.clone();
            if let Some(v) = d.violations.first() {
                s.push_str(&format!(": {}: {}", v.field, v.description));
            }
            if d.violations.len() > 1 {
                s.push_str(&format!(" (and {} more)", d.violations.len() - 1));
            }
            s
        }
        other => idgov_domain::error::echo(&other.to_string()),
    }
}

/// Applies the `--policy` file once the people it names exist: tried again
/// every few seconds until it applies, until a policy is applied some
/// other way (that decision stands), or until it fails for another reason.
async fn apply_when_possible(
    app: std::sync::Weak<App>,
    doc: String,
    reason: String,
    version_at_start: i64,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut last = String::new();
    while idgov_app::workers::Workers::pause(&stop, Duration::from_secs(5)).await {
        let Some(app) = app.upgrade() else { return };
        if let Ok(p) = app.reload_policy().await
            && p.version != version_at_start
        {
            tracing::info!(
                "a policy was applied meanwhile; the --policy file is no longer pending"
            );
            return;
        }
        match app
            .apply_policy(&doc, false, &reason, "system:startup")
            .await
        {
            Ok(res) => {
                tracing::info!(outcome = ?res.outcome, version = res.policy.version, "the --policy file is applied now that its owners exist");
                return;
            }
            Err(e) if waits_for_people(&e) => {
                let now = short_error(&e);
                if now != last {
                    tracing::info!(error = %now, "the --policy file still waits for people it names");
                    last = now;
                }
            }
            Err(e) => {
                tracing::warn!(error = %short_error(&e), "the --policy file cannot be applied; apply a policy with `idgov policy apply`");
                return;
            }
        }
    }
}

/// Keeps gRPC health in step with the database: NOT_SERVING while the store
/// does not answer, SERVING again when it does, and NOT_SERVING for good
/// once the service begins to stop (`stop`: before the calls in flight are
/// drained), so that a load balancer sends no more work.
async fn health_loop(
    app: std::sync::Weak<App>,
    reporter: tonic_health::server::HealthReporter,
    interval: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut serving = true;
    while idgov_app::workers::Workers::pause(&stop, interval).await {
        let Some(app) = app.upgrade() else { return };
        let ok = app.database_ready().await;
        if ok != serving {
            serving = ok;
            let status = if ok {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            tracing::warn!(database_answers = ok, "health changed");
            set_health(&reporter, status).await;
        }
    }
    set_health(&reporter, tonic_health::ServingStatus::NotServing).await;
}

/// What gRPC health reports on: the whole server (`""`) and each service.
const HEALTH_NAMES: [&str; 9] = [
    "",
    <HrServiceServer<Api> as NamedService>::NAME,
    <IdentityServiceServer<Api> as NamedService>::NAME,
    <PolicyServiceServer<Api> as NamedService>::NAME,
    <AuditServiceServer<Api> as NamedService>::NAME,
    <ProvisioningServiceServer<Api> as NamedService>::NAME,
    <DirectoryServiceServer<Api> as NamedService>::NAME,
    <AccessServiceServer<Api> as NamedService>::NAME,
    <CampaignServiceServer<Api> as NamedService>::NAME,
];

/// Every service answers for the database: all report `status` together.
async fn set_health(
    reporter: &tonic_health::server::HealthReporter,
    status: tonic_health::ServingStatus,
) {
    for name in HEALTH_NAMES {
        reporter.set_service_status(name, status).await;
    }
}

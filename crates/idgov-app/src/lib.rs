//! idgov's application layer: the services every adapter calls (the gRPC
//! API, the web app, the CLI through the API). Each operation reads through
//! the store, asks the domain rules, and writes the result with its audit
//! events in one transaction. Adapters never touch the store themselves:
//! reads go through [`queries`], which applies object-level authorization.
//! Services never spawn: every task of the process (the workers
//! [`App::start`] starts, those `serve` adds, and work an adapter hands over
//! with [`to_the_end`]) runs under [`workers::Workers`], which stops them
//! all in one shutdown ([`App::shutdown`]).
//!
//! - [`access`]: access requests and approvals, manual revocation,
//!   time-bound grants and separation of duties;
//! - [`intake`]: HR events (submit, rescind, scheduled application), batched
//!   into group commits by one writer task;
//! - [`roster`]: roster sync with the mass-change guard;
//! - [`policy`]: applying policy documents;
//! - [`held`]: releasing and discarding held changes;
//! - [`scheduler`]: applying future-dated events and end dates when due;
//! - [`provisioning`]: the worker that applies the directory outbox;
//! - [`directory_sync`]: reading the directory, recording and remediating drift;
//! - [`steps`]: how many items the next step of bulk work takes.

pub mod access;
pub mod audit_checkpoints;
pub mod clock;
pub mod denials;
pub mod directory_sync;
pub mod error;
pub mod held;
pub mod intake;
pub mod keyfile;
pub mod metrics;
pub mod policy;
pub mod preview;
pub mod provisioning;
pub mod queries;
pub mod review;
pub mod roster;
pub mod scheduler;
pub mod steps;
pub mod web_sessions;
pub mod webhooks;
pub mod workers;

use chrono::{DateTime, Utc};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::AppError;
use idgov_domain::policy::Policy;
use idgov_store::{Store, WriteTx};
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;

/// The policy in force, as cached by this process.
#[derive(Debug, Clone)]
pub struct ActivePolicy {
    /// 0 before any policy was applied.
    pub version: i64,
    pub policy: Policy,
    pub applied_at: Option<DateTime<Utc>>,
    pub applied_by: String,
    pub sha256: String,
}

impl ActivePolicy {
    fn empty() -> Self {
        Self {
            version: 0,
            policy: Policy::empty(),
            applied_at: None,
            applied_by: String::new(),
            sha256: String::new(),
        }
    }
}

/// The application: store, clock, policy cache and the intake writer.
#[derive(Debug)]
pub struct App {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    policy: RwLock<Arc<ActivePolicy>>,
    /// Intake writers, each owning a partition of employee ids.
    writers: Vec<mpsc::Sender<intake::Job>>,
    /// The directory idgov provisions, when configured.
    pub directory: Option<Arc<idgov_directory::DirectoryConfig>>,
    /// Wakes the provisioning worker when operations were queued.
    pub(crate) provisioning_wakeup: Arc<tokio::sync::Notify>,
    /// Wakes the leavers' lane when a disable was queued.
    pub(crate) disable_wakeup: Arc<tokio::sync::Notify>,
    /// Wakes the lane that strips leavers' groups.
    pub(crate) strip_wakeup: Arc<tokio::sync::Notify>,
    /// Directory operations applied by this process whose results are not
    /// recorded yet (they are not claimed again meanwhile).
    pub(crate) dir_ops_in_flight: std::sync::Mutex<std::collections::HashSet<i64>>,
    /// Directory account DNs by employee id (see `DnCache`).
    pub(crate) account_dns: Arc<idgov_directory::DnCache>,
    /// Denied calls, counted until written to the audit log.
    pub denials: Arc<crate::denials::DenialLog>,
    /// Development mode (no identity provider): webhook subscriptions made
    /// through the API may then use http and private addresses.
    pub(crate) development: std::sync::atomic::AtomicBool,
    /// Prometheus metrics of this process.
    pub metrics: Arc<metrics::Metrics>,
    /// The key that signs audit checkpoints, once `serve` has loaded it.
    pub(crate) audit_signer: std::sync::OnceLock<Arc<audit_checkpoints::AuditSigner>>,
    /// Every task of the process, under one shutdown.
    pub workers: workers::Workers,
    /// How long a step of bulk work should hold the writer, in nanoseconds
    /// ([`policy::STEP_TARGET`]; tests set others).
    step_target: std::sync::atomic::AtomicU64,
    /// This process's name on the bulk jobs it holds (a lease renews only
    /// for its holder), unique to each start.
    holder: String,
}

/// How a step of bulk work begins ([`App::begin_step`]).
pub(crate) enum StepStart {
    /// This process holds the job: the step's transaction, and the instant
    /// it took the writer.
    Held(idgov_store::WriteTx, std::time::Instant),
    /// It does not (any more): the job as it is now, if it still exists.
    Gone(Option<idgov_store::BulkJob>),
}

impl StepStart {
    /// Why a step of job `id` found it [`StepStart::Gone`]: still running (or
    /// staging) elsewhere goes on there; ended, it is no longer running here.
    pub(crate) fn gone(id: &str, job: Option<&idgov_store::BulkJob>) -> AppError {
        match job {
            Some(j) if j.state == "running" || j.state == "staging" => {
                AppError::GoesOnLater(format!(
                    "bulk job {id} was taken over by another idgov process while this one \
                     stalled; it goes on there, and nothing needs to be sent again"
                ))
            }
            Some(j) => AppError::precondition(format!(
                "bulk job {id} is no longer running here (it is {})",
                j.state
            )),
            None => AppError::precondition(format!("bulk job {id} is no longer running here")),
        }
    }
}

/// The actor name of work the service does by itself.
pub const SYSTEM_SCHEDULER: &str = "system:scheduler";

impl App {
    /// Builds the application and starts its intake writers and, with a
    /// directory, the provisioning worker.
    pub async fn start(
        store: Store,
        clock: Arc<dyn Clock>,
        directory: Option<idgov_directory::DirectoryConfig>,
    ) -> Result<Arc<App>, AppError> {
        // SQLite has one write connection: one writer. PostgreSQL runs
        // transactions concurrently: writers work in parallel on disjoint
        // sets of people and meet only at the audit chain head. Two beat
        // one, four and eight on the 2-core bench machine (larger batches
        // amortise each transaction's round trips); see BENCHMARKS.md.
        let n = match store.backend() {
            idgov_store::Backend::Sqlite => 1,
            idgov_store::Backend::Postgres => 2,
        };
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::channel(4096)).unzip();
        let metrics = Arc::new(metrics::Metrics::default());
        let app = Arc::new(App {
            store,
            clock,
            policy: RwLock::new(Arc::new(ActivePolicy::empty())),
            writers: senders,
            directory: directory.map(Arc::new),
            provisioning_wakeup: Arc::new(tokio::sync::Notify::new()),
            disable_wakeup: Arc::new(tokio::sync::Notify::new()),
            strip_wakeup: Arc::new(tokio::sync::Notify::new()),
            account_dns: Arc::new(idgov_directory::DnCache::new(1_000_000)),
            dir_ops_in_flight: Default::default(),
            denials: Arc::new(crate::denials::DenialLog::with_counter(
                metrics.denied.clone(),
            )),
            audit_signer: std::sync::OnceLock::new(),
            development: std::sync::atomic::AtomicBool::new(false),
            metrics,
            workers: workers::Workers::default(),
            step_target: std::sync::atomic::AtomicU64::new(
                u64::try_from(policy::STEP_TARGET.as_nanos()).unwrap_or(u64::MAX),
            ),
            holder: format!("process-{}", uuid::Uuid::now_v7()),
        });
        app.reload_policy().await?;
        for rx in receivers {
            app.workers.spawn(
                "intake writer",
                intake::writer_loop(Arc::downgrade(&app), rx, app.workers.stop_token()),
            );
        }
        // A recompute a crash or a stopped replica left half done goes on.
        let weak = Arc::downgrade(&app);
        app.workers.spawn("resume bulk work", async move {
            let Some(app) = weak.upgrade() else { return };
            app.delete_ended_staging().await;
            match app.resume_bulk_jobs().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(jobs = n, "resumed bulk work"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot resume bulk work; it is retried at the next start")
                }
            }
        });
        if let Some(cfg) = app.directory.clone() {
            use idgov_store::Lane;
            for lane in [Lane::Disables, Lane::Strips, Lane::Others] {
                app.workers.spawn(
                    "provisioning lane",
                    provisioning::worker_loop(
                        Arc::downgrade(&app),
                        cfg.clone(),
                        lane,
                        app.workers.stop_token(),
                    ),
                );
            }
        }
        Ok(app)
    }

    /// Stops every task of the process (see [`workers::Workers::shutdown`]):
    /// intake writers apply what is queued, loops stop between two runs, and
    /// what is still running after `grace` is dropped (bulk work resumes at
    /// the next start). Denied calls counted so far are written.
    pub async fn shutdown(&self, grace: std::time::Duration) -> workers::ShutdownReport {
        let report = self.workers.shutdown(grace).await;
        if let Err(e) = self.flush_denials().await {
            tracing::warn!(error = %e, "cannot write denied calls to the audit log at shutdown");
        }
        report
    }

    /// True when grant changes are provisioned to a directory.
    pub fn provisioning(&self) -> bool {
        self.directory.is_some()
    }

    /// True when joiners get a directory account created.
    pub fn creates_accounts(&self) -> bool {
        self.directory.as_ref().is_some_and(|d| d.accounts.create)
    }

    /// Wakes the provisioning workers (after operations were queued).
    pub(crate) fn wake_provisioning(&self) {
        self.disable_wakeup.notify_one();
        self.strip_wakeup.notify_one();
        self.provisioning_wakeup.notify_one();
    }

    /// Between two steps of bulk work (each step's progress committed):
    /// lets intake in, and ends the work when the service has begun to stop
    /// (see [`workers::Workers::wind_down`]), so that a stop does not wait
    /// for a million-grant change. `job` is the bulk job whose lease is
    /// then given up, so the next start (or another replica) goes on at
    /// once; work without one (a campaign's generation or close) is carried
    /// on by the campaign schedule.
    pub(crate) async fn between_steps(
        &self,
        what: &str,
        job: Option<&str>,
    ) -> Result<(), AppError> {
        tokio::task::yield_now().await;
        if !self.workers.winding_down() {
            return Ok(());
        }
        if let Some(id) = job
            && let Err(e) = self.store.release_bulk_job(id, &self.holder).await
        {
            // Its lease runs out by itself; the work goes on later.
            tracing::warn!(job = id, error = %e, "cannot give up a bulk job's lease at shutdown");
        }
        tracing::info!(
            work = what,
            job = job.unwrap_or(""),
            "bulk work stopped between two steps; it goes on at the next start"
        );
        Err(AppError::GoesOnLater(format!(
            "the service is stopping: {what} stopped after a step, with its progress recorded, and goes on from there when the service is back; nothing needs to be sent again"
        )))
    }

    /// Begins a step of bulk job `id`: takes the writer and renews this
    /// process's lease in the step's transaction, so that the step and its
    /// lease commit together. [`StepStart::Gone`] (with the job as it is now)
    /// when this process no longer holds it: the job ended, or another
    /// process took it over when this one stalled past its lease.
    pub(crate) async fn begin_step(&self, id: &str) -> Result<StepStart, AppError> {
        let lease = self.now() + chrono::Duration::seconds(policy::JOB_LEASE_SECONDS);
        let mut tx = self.store.begin().await?;
        // The writer is held from here (a wait for it is not counted).
        let began = std::time::Instant::now();
        if tx.renew_bulk_job(id, &self.holder, lease).await? {
            return Ok(StepStart::Held(tx, began));
        }
        drop(tx);
        Ok(StepStart::Gone(self.store.get_bulk_job(id).await?))
    }

    /// This process's name on the bulk jobs it holds.
    pub fn bulk_job_holder(&self) -> &str {
        &self.holder
    }

    /// How long a step of bulk work should hold the writer
    /// ([`steps::StepSize`]).
    pub(crate) fn step_target(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.step_target.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Sets [`App::step_target`], for tests that watch steps shrink or grow.
    #[doc(hidden)]
    pub fn set_step_target_for_test(&self, target: std::time::Duration) {
        self.step_target.store(
            u64::try_from(target.as_nanos()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The policy in force, as cached.
    pub fn policy(&self) -> Arc<ActivePolicy> {
        self.policy
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn set_policy(&self, p: ActivePolicy) {
        match self.policy.write() {
            Ok(mut g) => *g = Arc::new(p),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(p),
        }
    }

    /// Reloads the policy in force from the store.
    pub async fn reload_policy(&self) -> Result<Arc<ActivePolicy>, AppError> {
        let active = match self.store.current_policy().await? {
            None => ActivePolicy::empty(),
            Some(stored) => {
                let policy = Policy::parse(&stored.document).map_err(|e| {
                    AppError::Store(idgov_store::StoreError::Corrupt(format!(
                        "stored policy version {} no longer parses: {e}",
                        stored.version
                    )))
                })?;
                ActivePolicy {
                    version: stored.version,
                    policy,
                    applied_at: Some(stored.applied_at),
                    applied_by: stored.applied_by,
                    sha256: stored.sha256,
                }
            }
        };
        self.set_policy(active);
        Ok(self.policy())
    }

    /// The policy to decide with inside `tx`: the cached one. The commit
    /// fails (and the work is retried) if another process applied a newer
    /// version meanwhile.
    pub(crate) fn policy_for(&self, tx: &mut WriteTx) -> Arc<ActivePolicy> {
        let cached = self.policy();
        tx.expect_policy_version(cached.version);
        cached
    }
}

/// Runs a change in a task of its own, so that it goes to its end when
/// the caller goes away (a client's deadline, a dropped connection, Ctrl-C
/// on the CLI, a closed browser tab). The caller still gets the answer when
/// it stays.
///
/// For the adapters (gRPC handlers, web pages) that start bulk work; the
/// services themselves never spawn. The server drops a call's handler when
/// its caller goes away, and a bulk change (a roster, a policy recompute, a
/// held release, a campaign's generation or close) stopped half-way waited
/// for its lease to run out before a worker carried it on, and an unheld
/// roster sync stayed half-applied until the roster was sent again.
pub async fn to_the_end<T, Fut>(
    app: &Arc<App>,
    change: impl FnOnce(Arc<App>) -> Fut,
) -> Result<T, AppError>
where
    Fut: std::future::Future<Output = Result<T, AppError>> + Send + 'static,
    T: Send + 'static,
{
    if app.workers.winding_down() {
        return Err(AppError::Unavailable(
            "the service is stopping; send the change again once it is back".into(),
        ));
    }
    app.workers
        .spawn("change", change(app.clone()))
        .await
        .map_err(|e| AppError::Unavailable(format!("the change stopped: {e}")))?
        .ok_or_else(|| {
            AppError::Unavailable(
                "the service stopped before the change ended; it resumes at the next start".into(),
            )
        })?
}

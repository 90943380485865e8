//! `idgov serve`.

use clap::{Args, ValueEnum};
use idgov_server::SystemClock;
use idgov_server::serve::{DEFAULT_LISTEN, ServeConfig, start};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "IDGOV_LISTEN", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Directory for the embedded SQLite store and local keys.
    #[arg(long, env = "IDGOV_DATA_DIR", default_value = "idgov-data")]
    data_dir: PathBuf,
    /// PostgreSQL URL (postgres://…); without it, SQLite in the data directory.
    #[arg(long, env = "IDGOV_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// A file holding the PostgreSQL URL (a container or systemd secret),
    /// instead of --database-url: the password stays out of the environment.
    #[arg(long, env = "IDGOV_DATABASE_URL_FILE", conflicts_with = "database_url")]
    database_url_file: Option<PathBuf>,
    /// Policy document (TOML) to apply at start when it differs from the one in force.
    #[arg(long, env = "IDGOV_POLICY")]
    policy: Option<PathBuf>,
    /// Authentication configuration (TOML: [oidc], [tls]); without it,
    /// development mode (locally minted tokens, loopback only).
    #[arg(long, env = "IDGOV_AUTH")]
    auth: Option<PathBuf>,
    /// Directory configuration (TOML); without it, nothing is provisioned.
    #[arg(long, env = "IDGOV_DIRECTORY")]
    directory: Option<PathBuf>,
    /// Webhook subscriptions (TOML, `[[subscriptions]]`); without it, none.
    #[arg(long, env = "IDGOV_WEBHOOKS")]
    webhooks: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "IDGOV_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

pub async fn run(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("IDGOV_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,sqlx=warn,h2=warn,tower=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match a.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.compact().init(),
    }
    let database_url = match &a.database_url_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| {
                    anyhow::anyhow!("cannot read --database-url-file {}: {e}", p.display())
                })?
                .trim()
                .to_string(),
        ),
        None => a.database_url,
    };
    let cfg = ServeConfig {
        listen: a.listen,
        data_dir: a.data_dir,
        database_url: database_url.filter(|u| !u.is_empty()),
        policy_file: a.policy,
        directory_file: a.directory,
        auth_file: a.auth,
        webhooks_file: a.webhooks,
        ..ServeConfig::default()
    };
    let data_dir = cfg.data_dir.clone();
    let running = start(cfg, Arc::new(SystemClock)).await?;
    let scheme = if running.tls { "https" } else { "http" };
    eprintln!(
        "idgov is serving on {scheme}://{} ({} store; {})",
        running.addr,
        running.app.store.backend().as_str(),
        running.auth_mode
    );
    eprintln!(
        "the web app is at {scheme}://{}/ ; metrics at /metrics, readiness at /readyz",
        running.addr
    );
    if let Some(why) = &running.policy_pending {
        eprintln!(
            "the --policy file is not applied yet ({why}); it will be as soon as the people it names exist"
        );
    }
    if running.auth_mode.starts_with("development") {
        eprintln!(
            "DEVELOPMENT MODE: no identity provider is configured; only tokens minted with\n\
             `idgov dev token --role ROLE` (key in {}) are accepted, and only on loopback.",
            data_dir.display()
        );
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    let report = running.stop().await?;
    if !report.forced.is_empty() {
        eprintln!(
            "stopped; work still running after {} s was dropped and resumes at the next start: {}",
            idgov_server::serve::SHUTDOWN_GRACE.as_secs(),
            report
                .forced
                .iter()
                .map(|(name, n)| format!("{name} ×{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

//! `idgov`: the identity lifecycle and access-review service (`idgov serve`)
//! and its command-line client for admins and scripts.

mod client;
mod cmd;
mod output;

use clap::{Args, Parser, Subcommand};
use output::Format;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "idgov", version, about = "Identity lifecycle and access governance", long_about = None)]
struct Cli {
    /// The client options; global, so they go before or after the subcommand.
    #[command(flatten)]
    client: ClientOpts,
    #[command(subcommand)]
    command: Command,
}

/// Options of every client command.
#[derive(Args, Clone, Debug)]
pub struct ClientOpts {
    /// The idgov server to talk to.
    #[arg(
        long,
        env = "IDGOV_SERVER",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub server: String,
    /// Bearer token (default: the one saved by `idgov dev token`).
    #[arg(long, env = "IDGOV_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) to verify an https:// server with (default: web roots).
    #[arg(long, env = "IDGOV_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(
        long,
        env = "IDGOV_CLIENT_CERT",
        global = true,
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// Client certificate key (PEM) for mutual TLS.
    #[arg(
        long,
        env = "IDGOV_CLIENT_KEY",
        global = true,
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
    /// Output for people (table) or scripts (json).
    #[arg(long, short = 'o', value_enum, default_value = "table", global = true)]
    pub output: Format,
}

// Parsed once per process: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve(cmd::serve::ServeArgs),
    /// Development-mode helpers.
    #[command(subcommand)]
    Dev(cmd::dev::DevCommand),
    /// HR intake: send events, import rosters, handle held syncs.
    Hr {
        #[command(subcommand)]
        command: cmd::hr::HrCommand,
    },
    /// Identities.
    Identity {
        #[command(subcommand)]
        command: cmd::identity::IdentityCommand,
    },
    /// Grants.
    Grant {
        #[command(subcommand)]
        command: cmd::identity::GrantCommand,
    },
    /// Access requests and their approvals.
    Request {
        #[command(subcommand)]
        command: cmd::access::RequestCommand,
    },
    /// Access review campaigns: items, decisions, report, evidence.
    Campaign {
        #[command(subcommand)]
        command: cmd::campaign::CampaignCommand,
    },
    /// Separation of duties: violations, exceptions, the detective check.
    Sod {
        #[command(subcommand)]
        command: cmd::access::SodCommand,
    },
    /// The catalog and classification policy.
    Policy {
        #[command(subcommand)]
        command: cmd::policy::PolicyCommand,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: cmd::audit::AuditCommand,
    },
    /// The directory: sync and drift.
    Directory {
        #[command(subcommand)]
        command: cmd::directory::DirectoryCommand,
    },
    /// Directory provisioning: the operations idgov owes the directory.
    Provisioning {
        #[command(subcommand)]
        command: cmd::provisioning::ProvisioningCommand,
    },
    /// Webhook subscriptions: where each stands, its deliveries, redelivery.
    Events {
        #[command(subcommand)]
        command: cmd::events::EventsCommand,
    },
    /// Authorization.
    #[command(subcommand)]
    Authz(cmd::authz::AuthzCommand),
    /// Is the server up? Exits 0 when it answers SERVING (gRPC health), 1
    /// otherwise: for container health checks and scripts.
    Health,
    /// Back up the service's data into one file, while it runs (on its host).
    Backup(cmd::backup::BackupArgs),
    /// Restore a backup into an empty data directory.
    Restore(cmd::backup::RestoreArgs),
}

/// Where the data directory is by default.
pub fn default_data_dir() -> PathBuf {
    PathBuf::from("idgov-data")
}

/// mimalloc: many small, short-lived allocations on many threads (a row's
/// strings, an audit event's JSON) cost about half as much as with the
/// system allocator, and freed memory goes back to the system sooner.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Serve(a) => cmd::serve::run(a).await,
            Command::Dev(c) => cmd::dev::run(c),
            Command::Hr { command } => cmd::hr::run(&cli.client, command).await,
            Command::Identity { command } => cmd::identity::run(&cli.client, command).await,
            Command::Grant { command } => cmd::identity::run_grant(&cli.client, command).await,
            Command::Request { command } => cmd::access::run_request(&cli.client, command).await,
            Command::Sod { command } => cmd::access::run_sod(&cli.client, command).await,
            Command::Campaign { command } => cmd::campaign::run(&cli.client, command).await,
            Command::Policy { command } => cmd::policy::run(&cli.client, command).await,
            Command::Audit { command } => cmd::audit::run(&cli.client, command).await,
            Command::Directory { command } => cmd::directory::run(&cli.client, command).await,
            Command::Provisioning { command } => cmd::provisioning::run(&cli.client, command).await,
            Command::Events { command } => cmd::events::run(&cli.client, command).await,
            Command::Authz(c) => cmd::authz::run(c, cli.client.output),
            Command::Health => cmd::health(&cli.client).await,
            Command::Backup(a) => cmd::backup::backup(a, cli.client.output).await,
            Command::Restore(a) => cmd::backup::restore(a, cli.client.output).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

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
        #[command(flatten)]
        client: ClientOpts,
        #[command(subcommand)]
        command: cmd::hr::HrCommand,
    },
    /// Identities.
    Identity {
        #[command(flatten)]
        client: ClientOpts,
        #[command(subcommand)]
        command: cmd::identity::IdentityCommand,
    },
    /// Grants.
    Grant {
        #[command(flatten)]
        client: ClientOpts,
        #[command(subcommand)]
        command: cmd::identity::GrantCommand,
    },
    /// Access requests and their approvals.
    Request {
        #[command(flatten)]
        client: ClientOpts,
        #[command(subcommand)]
        command: cmd::access::RequestCommand,
    },
    /// Access review campaigns: items, decisions, report, evidence.
    Campaign {
        #[command(flatten)]
        client: ClientOpts,
        #[command(subcommand)]
        command: cmd::campaign::CampaignCommand,
    },
    /// Separation of duties: violations, exceptions, the detective check.
    Sod {
        #[command(flatten)]
        client: ClientOpts,
        #[command(subcommand)]
        command: cmd::access::SodCommand,
    },
    /// The catalog and classification policy.
    Policy {
        #[command(flatten)]
        client: ClientOpts,
        #[command(subcommand)]
        command: cmd::policy::PolicyCommand,
    },
    /// The audit log.
    Audit {
        #[command(flatten)]
        client: ClientOpts,
        #[command(subcommand)]
        command: cmd::audit::AuditCommand,
    },
    /// The directory: sync and drift.
    Directory {
        #[command(flatten)]
        client: ClientOpts,
        #[command(subcommand)]
        command: cmd::directory::DirectoryCommand,
    },
    /// Directory provisioning: the operations idgov owes the directory.
    Provisioning {
        #[command(flatten)]
        client: ClientOpts,
        #[command(subcommand)]
        command: cmd::provisioning::ProvisioningCommand,
    },
    /// Authorization.
    #[command(subcommand)]
    Authz(cmd::authz::AuthzCommand),
}

/// Where the data directory is by default.
pub fn default_data_dir() -> PathBuf {
    PathBuf::from("idgov-data")
}

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
            Command::Hr { client, command } => cmd::hr::run(&client, command).await,
            Command::Identity { client, command } => cmd::identity::run(&client, command).await,
            Command::Grant { client, command } => cmd::identity::run_grant(&client, command).await,
            Command::Request { client, command } => {
                cmd::access::run_request(&client, command).await
            }
            Command::Sod { client, command } => cmd::access::run_sod(&client, command).await,
            Command::Campaign { client, command } => cmd::campaign::run(&client, command).await,
            Command::Policy { client, command } => cmd::policy::run(&client, command).await,
            Command::Audit { client, command } => cmd::audit::run(&client, command).await,
            Command::Directory { client, command } => cmd::directory::run(&client, command).await,
            Command::Provisioning { client, command } => {
                cmd::provisioning::run(&client, command).await
            }
            Command::Authz(c) => cmd::authz::run(c),
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

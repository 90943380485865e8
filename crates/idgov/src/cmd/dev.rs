//! `idgov dev token`: mint a development-mode token.

use crate::client::token_path;
use clap::{Args, Subcommand};
use idgov_authz::Role;
use idgov_server::auth::dev::DevAuth;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum DevCommand {
    /// Mint a token the development-mode server accepts, and save it where
    /// the other commands find it.
    Token(TokenArgs),
}

#[derive(Args)]
pub struct TokenArgs {
    /// A role to carry (repeat for several): hr-feed, it-admin, security-officer, auditor.
    #[arg(long = "role", value_parser = parse_role)]
    roles: Vec<Role>,
    /// Act as this person (their employee id), for self and manager access.
    #[arg(long)]
    subject: Option<String>,
    /// The server's data directory (where its signing key is).
    #[arg(long, env = "IDGOV_DATA_DIR", default_value = "idgov-data")]
    data_dir: PathBuf,
    /// Lifetime in hours.
    #[arg(long, default_value_t = 12)]
    ttl_hours: i64,
    /// Print the token instead of saving it.
    #[arg(long)]
    print: bool,
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

pub fn run(c: DevCommand) -> anyhow::Result<ExitCode> {
    let DevCommand::Token(a) = c;
    if a.roles.is_empty() && a.subject.is_none() {
        anyhow::bail!(
            "give at least one --role (hr-feed, it-admin, security-officer, auditor) or a --subject"
        );
    }
    if !(1..=24 * 30).contains(&a.ttl_hours) {
        anyhow::bail!("--ttl-hours must be between 1 and 720");
    }
    if let Some(s) = &a.subject {
        idgov_domain::identity::validate_employee_id(s).map_err(anyhow::Error::msg)?;
    }
    let auth = DevAuth::load(&a.data_dir).map_err(anyhow::Error::msg)?;
    let subject = a.subject.clone().unwrap_or_else(|| "dev-user".to_string());
    let token = auth
        .mint(
            &subject,
            a.subject.as_deref(),
            &a.roles,
            chrono::Duration::hours(a.ttl_hours),
        )
        .map_err(anyhow::Error::msg)?;
    if a.print {
        crate::outln!("{token}");
        return Ok(ExitCode::SUCCESS);
    }
    let path = token_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(&path)?.write_all(token.as_bytes())?;
    let roles: Vec<String> = a.roles.iter().map(|r| r.to_string()).collect();
    eprintln!(
        "saved a development token to {} (roles: {}{}; valid {} h)",
        path.display(),
        if roles.is_empty() {
            "none".into()
        } else {
            roles.join(", ")
        },
        a.subject
            .map(|s| format!("; acting as {s}"))
            .unwrap_or_default(),
        a.ttl_hours
    );
    Ok(ExitCode::SUCCESS)
}

//! `idgov authz matrix`: the authorization table, printed from the code.

use crate::output::{Format, json, table};
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum AuthzCommand {
    /// Print who may call each RPC, from the table the server enforces.
    Matrix,
}

pub fn run(c: AuthzCommand, output: Format) -> anyhow::Result<ExitCode> {
    let AuthzCommand::Matrix = c;
    let rows = idgov_authz::matrix();
    match output {
        Format::Json => json(&serde_json::to_value(&rows)?),
        Format::Table => {
            let mut t = table(&[
                "RPC",
                "roles (any object)",
                "relationships (related objects only)",
                "what",
            ]);
            for r in rows {
                t.add_row(vec![
                    r.rpc,
                    r.roles.join(", "),
                    if r.relations.is_empty() {
                        "—".into()
                    } else {
                        r.relations.join(", ")
                    },
                    r.description,
                ]);
            }
            crate::outln!("{t}");
            crate::outln!("Everything else is denied. Health and reflection need no credentials.");
        }
    }
    Ok(ExitCode::SUCCESS)
}

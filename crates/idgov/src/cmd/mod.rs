//! One module per command group.

pub mod access;
pub mod audit;
pub mod authz;
pub mod backup;
pub mod campaign;
pub mod dev;
pub mod directory;
pub mod events;
pub mod hr;
pub mod identity;
pub mod policy;
pub mod provisioning;
pub mod serve;

/// `idgov health`: the gRPC health check of the server (no token needed).
pub async fn health(opts: &crate::ClientOpts) -> anyhow::Result<std::process::ExitCode> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let client = crate::client::Client::connect(opts).await?;
    let answer = tonic_health::pb::health_client::HealthClient::new(client.channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(crate::client::explain)?
        .into_inner();
    let status = ServingStatus::try_from(answer.status).unwrap_or(ServingStatus::Unknown);
    let serving = status == ServingStatus::Serving;
    match opts.output {
        crate::output::Format::Json => println!(
            "{}",
            serde_json::json!({"server": opts.server, "status": status.as_str_name()})
        ),
        crate::output::Format::Table => println!("{}: {}", opts.server, status.as_str_name()),
    }
    Ok(if serving {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

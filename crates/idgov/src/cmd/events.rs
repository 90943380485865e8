//! `idgov events`: webhook subscriptions, their deliveries, redelivery.

use crate::ClientOpts;
use crate::client::{Client, explain};
use crate::output::{Format, json, plain, table, time};
use clap::Subcommand;
use idgov_proto::v1 as pb;
use idgov_proto::v1::audit_service_client::AuditServiceClient;
use serde_json::json;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum EventsCommand {
    /// The webhook subscriptions (from `idgov serve --webhooks FILE` or
    /// `idgov events subscribe`) and where each stands.
    Subscriptions,
    /// Subscribe a receiver to events from now on (security officers). Prints
    /// its signing secret once: keep it for the receiver.
    Subscribe {
        /// 1–64 letters, digits, - or _.
        id: String,
        /// https:// to a public address (http and private addresses only in
        /// development mode).
        #[arg(long)]
        url: String,
        /// Event patterns, comma-separated: `*`, `security`, `prefix.*` or an
        /// action name (e.g. `security,directory.*`).
        #[arg(long, value_delimiter = ',', required = true)]
        events: Vec<String>,
    },
    /// Delete a subscription made with `subscribe`.
    Unsubscribe {
        subscription: String,
        #[arg(long)]
        reason: String,
    },
    /// A new signing secret for a subscription made with `subscribe`, printed
    /// once; the previous one keeps signing beside it until the next rotation.
    RotateSecret { subscription: String },
    /// A subscription's delivery attempts, newest first.
    Deliveries {
        subscription: String,
        #[arg(long, default_value_t = 50)]
        limit: i32,
    },
    /// Deliver again from an audit event on (re-enables a disabled subscription).
    Redeliver {
        subscription: String,
        /// The first audit event to deliver again (default: retry where it stopped).
        #[arg(long = "from", default_value_t = 0)]
        from_seq: i64,
        #[arg(long)]
        reason: String,
    },
}

fn sub_json(s: &pb::WebhookSubscription) -> serde_json::Value {
    json!({
        "id": s.id, "url": s.url, "events": s.events, "cursor": s.cursor, "state": s.state,
        "state_reason": s.state_reason, "failures": s.failures, "next_attempt_at": time(&s.next_attempt_at),
        "origin": s.origin,
    })
}

pub async fn run(opts: &ClientOpts, c: EventsCommand) -> anyhow::Result<ExitCode> {
    let client = Client::connect(opts).await?;
    let mut audit = crate::client::limited!(AuditServiceClient::new(client.channel));
    match c {
        EventsCommand::Subscribe { id, url, events } => {
            let r = audit
                .create_webhook_subscription(pb::CreateWebhookSubscriptionRequest {
                    id,
                    url,
                    events,
                })
                .await
                .map_err(explain)?
                .into_inner();
            let sub = r.subscription.unwrap_or_default();
            match opts.output {
                Format::Json => json(&json!({"subscription": sub_json(&sub), "secret": r.secret})),
                Format::Table => {
                    crate::outln!(
                        "subscribed {} to {} at {}",
                        sub.id,
                        sub.events.join(" "),
                        sub.url
                    );
                    crate::outln!("signing secret (shown once; give it to the receiver):");
                    crate::outln!("{}", r.secret);
                }
            }
        }
        EventsCommand::Unsubscribe {
            subscription,
            reason,
        } => {
            audit
                .delete_webhook_subscription(pb::DeleteWebhookSubscriptionRequest {
                    subscription_id: subscription.clone(),
                    reason,
                })
                .await
                .map_err(explain)?;
            match opts.output {
                Format::Json => json(&json!({"deleted": subscription})),
                Format::Table => crate::outln!("deleted webhook subscription {subscription}"),
            }
        }
        EventsCommand::RotateSecret { subscription } => {
            let r = audit
                .rotate_webhook_secret(pb::RotateWebhookSecretRequest {
                    subscription_id: subscription.clone(),
                })
                .await
                .map_err(explain)?
                .into_inner();
            match opts.output {
                Format::Json => json(&json!({
                    "subscription": subscription, "secret": r.secret, "secrets_in_use": r.secrets_in_use,
                })),
                Format::Table => {
                    crate::outln!(
                        "new signing secret for {subscription} (shown once); the previous one \
                         keeps signing beside it until the next rotation:"
                    );
                    crate::outln!("{}", r.secret);
                }
            }
        }
        EventsCommand::Subscriptions => {
            let r = audit
                .list_webhook_subscriptions(pb::ListWebhookSubscriptionsRequest {})
                .await
                .map_err(explain)?
                .into_inner();
            match opts.output {
                Format::Json => json(&serde_json::Value::Array(
                    r.subscriptions.iter().map(sub_json).collect(),
                )),
                Format::Table => {
                    if r.subscriptions.is_empty() {
                        crate::outln!(
                            "no webhook subscription; add one with `idgov events subscribe` or `idgov serve --webhooks FILE` (docs/operations.md)"
                        );
                        return Ok(ExitCode::SUCCESS);
                    }
                    let mut t = table(&[
                        "id",
                        "url",
                        "events",
                        "delivered up to",
                        "state",
                        "failures",
                    ]);
                    for s in &r.subscriptions {
                        t.add_row(vec![
                            s.id.clone(),
                            s.url.clone(),
                            s.events.join(" "),
                            s.cursor.to_string(),
                            if s.state_reason.is_empty() {
                                s.state.clone()
                            } else {
                                format!("{}: {}", s.state, plain(&s.state_reason))
                            },
                            s.failures.to_string(),
                        ]);
                    }
                    crate::outln!("{t}");
                }
            }
        }
        EventsCommand::Deliveries {
            subscription,
            limit,
        } => {
            let r = audit
                .list_webhook_deliveries(pb::ListWebhookDeliveriesRequest {
                    subscription_id: subscription,
                    limit,
                })
                .await
                .map_err(explain)?
                .into_inner();
            match opts.output {
                Format::Json => json(&serde_json::Value::Array(
                    r.deliveries
                        .iter()
                        .map(|d| {
                            json!({"seq": d.seq, "attempt": d.attempt, "at": time(&d.at),
                                   "status": d.status, "error": d.error, "millis": d.millis})
                        })
                        .collect(),
                )),
                Format::Table => {
                    let mut t = table(&["event", "attempt", "at", "status", "ms", "error"]);
                    for d in &r.deliveries {
                        t.add_row(vec![
                            d.seq.to_string(),
                            d.attempt.to_string(),
                            time(&d.at),
                            if d.status == 0 {
                                "—".into()
                            } else {
                                d.status.to_string()
                            },
                            d.millis.to_string(),
                            plain(&d.error),
                        ]);
                    }
                    crate::outln!("{t}");
                }
            }
        }
        EventsCommand::Redeliver {
            subscription,
            from_seq,
            reason,
        } => {
            let s = audit
                .redeliver_webhook(pb::RedeliverWebhookRequest {
                    subscription_id: subscription,
                    from_seq,
                    reason,
                })
                .await
                .map_err(explain)?
                .into_inner();
            match opts.output {
                Format::Json => json(&sub_json(&s)),
                Format::Table => crate::outln!(
                    "{} is {}; delivering from event {} on",
                    s.id,
                    s.state,
                    s.cursor + 1
                ),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! The provisioning workers: apply the directory operations of the outbox.
//!
//! Each person's operations apply in order (only the oldest pending one of a
//! person is ever claimed); different people's apply concurrently, up to the
//! configured number of workers. Leavers' disables have a lane (a worker and
//! connections) of their own, and a disable supersedes the leaver's pending
//! operations, so locking a leaver never waits behind anything. Every
//! operation is idempotent, so applying one again after a crash changes
//! nothing.
//!
//! Every directory call has a deadline; a connection that misses one is
//! dropped and replaced. A transient failure (unreachable, busy, timed out)
//! is retried with capped exponential backoff (1 s, 2 s, 4 s … 5 min) for as
//! long as it takes; an operation still pending after 15 minutes raises a
//! security event. A permanent refusal (a value the schema cannot hold, an
//! entry that exists already…) fails the operation at once with the
//! directory's message and raises `provisioning.failed`; the person's other
//! operations go on, and an admin retries it after a fix.

use super::App;
use crate::error::AppError;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use idgov_directory::{Directory, DirectoryConfig, DirectoryError, DnCache, Pool};
use idgov_domain::audit::{Action, AuditEntry, Target};
use idgov_domain::identity::Identity;
use idgov_store::{DirOp, DirOpKind, Lane};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How long a claimed operation is reserved for this process.
const LEASE_SECONDS: i64 = 60;
/// Operations pending longer than this raise a security event.
pub const STUCK_AFTER_MINUTES: i64 = 15;

/// The delay before attempt `attempts + 1`.
pub fn backoff(attempts: i64) -> chrono::Duration {
    let secs = 1i64 << attempts.clamp(0, 9);
    chrono::Duration::seconds(secs.min(300))
}

/// The template values of a person.
fn template_values(p: &Identity) -> HashMap<&'static str, String> {
    let a = &p.attrs;
    let (given, family) = a
        .display_name
        .split_once(' ')
        .unwrap_or((&a.display_name, &a.display_name));
    HashMap::from([
        ("employee_id", p.employee_id.clone()),
        ("display_name", a.display_name.clone()),
        ("given_name", given.to_string()),
        ("family_name", family.to_string()),
        ("email", a.email.clone()),
        (
            "email_local",
            a.email.split('@').next().unwrap_or_default().to_string(),
        ),
        ("department", a.department.clone()),
        ("title", a.title.clone()),
        ("job_code", a.job_code.clone()),
        ("location", a.location.clone()),
        ("cost_center", a.cost_center.clone()),
    ])
}

/// True when an error says the entry named is not there.
fn is_missing(e: &DirectoryError) -> bool {
    matches!(
        e,
        DirectoryError::NotFound(_) | DirectoryError::Refused { code: 32, .. }
    )
}

/// Applies one operation. Every operation looks the account up by its
/// correlation attribute and remembers its DN; a leaver's lock uses the
/// remembered DN (see above).
async fn apply(
    dir: &mut Directory,
    cfg: &DirectoryConfig,
    op: &DirOp,
    person: Option<&Identity>,
    dns: &DnCache,
) -> Result<&'static str, DirectoryError> {
    // The leaver's lock: from the remembered DN, checked to still be
    // theirs in the same round trip (no search first).
    if op.kind == DirOpKind::Disable
        && let Some(dn) = dns.get(&op.employee_id)
    {
        match dir.disable_if_theirs(&dn, &op.employee_id).await {
            Err(e) if is_missing(&e) => dns.forget(&op.employee_id),
            Ok(changed) => return Ok(if changed { "applied" } else { "already" }),
            Err(e) => return Err(e),
        }
    }
    let account = dir
        .find_account(&cfg.accounts_base, &op.employee_id)
        .await?;
    if let Some(dn) = &account {
        dns.put(&op.employee_id, dn);
    }
    apply_to(dir, cfg, op, person, account).await
}

/// Applies one operation to the account `account` (None: there is none);
/// returns its outcome (`applied`, `already`, `no_account`). `person` is the
/// current HR record (for account creation).
async fn apply_to(
    dir: &mut Directory,
    cfg: &DirectoryConfig,
    op: &DirOp,
    person: Option<&Identity>,
    account: Option<String>,
) -> Result<&'static str, DirectoryError> {
    if op.kind == DirOpKind::CreateAccount {
        if account.is_some() {
            return Ok("already");
        }
        let person = person
            .ok_or_else(|| DirectoryError::NotFound(format!("identity {}", op.employee_id)))?;
        let (dn, mut attrs) = cfg.accounts.render(&template_values(person));
        attrs.retain(|(a, _)| !a.eq_ignore_ascii_case(&cfg.schema.correlation_attr));
        attrs.push(("objectClass".into(), vec![cfg.schema.account_class.clone()]));
        attrs.push((
            cfg.schema.correlation_attr.clone(),
            vec![op.employee_id.clone()],
        ));
        dir.add_entry(&dn, attrs).await?;
        return Ok("applied");
    }
    let group = op.group_dn.clone().unwrap_or_default();
    let done = |changed: bool| if changed { "applied" } else { "already" };
    match (op.kind, account) {
        // Nothing to remove or disable where there is no account.
        (DirOpKind::RemoveMember | DirOpKind::Disable | DirOpKind::StripGroups, None) => {
            Ok("no_account")
        }
        (DirOpKind::CreateAccount, _) => Ok("already"),
        (DirOpKind::AddMember | DirOpKind::Enable, None) => Err(DirectoryError::NotFound(format!(
            "no account with {}={} under {}",
            cfg.schema.correlation_attr, op.employee_id, cfg.accounts_base
        ))),
        (DirOpKind::AddMember, Some(dn)) => Ok(done(dir.add_member(&group, &dn).await?)),
        (DirOpKind::RemoveMember, Some(dn)) => Ok(done(dir.remove_member(&group, &dn).await?)),
        (DirOpKind::Enable, Some(dn)) => Ok(done(dir.enable(&dn).await?)),
        // The leaver fast path: locked first …
        (DirOpKind::Disable, Some(dn)) => Ok(done(dir.disable(&dn).await?)),
        // … then out of every managed group, whether idgov granted the
        // membership or not.
        (DirOpKind::StripGroups, Some(dn)) => {
            let mut changed = false;
            for g in dir.groups_of(&cfg.groups_base, &dn).await? {
                changed |= dir.remove_member(&g, &dn).await?;
            }
            Ok(done(changed))
        }
    }
}

/// How many leavers' locks are applied at once.
fn lock_concurrency(cfg: &DirectoryConfig) -> usize {
    (cfg.workers * 4).clamp(1, 64)
}

/// How long one operation may take in all (every call in it has its own
/// deadline too): a backstop, so nothing waits forever.
fn backstop(cfg: &DirectoryConfig) -> Duration {
    cfg.connection.op_timeout * 20 + cfg.connection.timeout * 3
}

impl App {
    /// Claims and applies the operations of `lane` whose turn has come.
    /// Returns how many were attempted and whether the directory looked
    /// unreachable.
    pub async fn run_provisioning(
        self: &Arc<Self>,
        pool: &Pool,
        cfg: &DirectoryConfig,
        lane: Lane,
    ) -> Result<(usize, bool), AppError> {
        let now = self.now();
        // Locks are single small modifies: many at once. Strips are long
        // (every managed group): a few at a time, so the lane looks for new
        // locks to yield to between them.
        let (limit, concurrency) = match lane {
            Lane::Disables => (256, lock_concurrency(cfg)),
            Lane::Strips => (cfg.workers as i64, cfg.workers),
            Lane::Others => (256, cfg.workers),
        };
        let ops = self
            .store
            .claim_directory_ops(lane, now, chrono::Duration::seconds(LEASE_SECONDS), limit)
            .await?;
        // Operations applied but not yet recorded stay ours.
        let ops: Vec<DirOp> = {
            let mut in_flight = match self.dir_ops_in_flight.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            ops.into_iter().filter(|o| in_flight.insert(o.id)).collect()
        };
        let n = ops.len();
        let results: Vec<(DirOp, Result<&'static str, DirectoryError>)> =
            futures::stream::iter(ops)
                .map(|op| async move {
                    let person = match op.kind {
                        DirOpKind::CreateAccount => self
                            .store
                            .get_identity(&op.employee_id)
                            .await
                            .ok()
                            .flatten(),
                        _ => None,
                    };
                    let mut result = Err(DirectoryError::Unreachable("not tried".into()));
                    // A pooled connection that went dead is replaced at once,
                    // and the operation tried again on a new one.
                    for attempt in 0..2 {
                        if attempt == 1 {
                            pool.clear();
                        }
                        result = match pool.get().await {
                            Err(e) => Err(e),
                            Ok(mut dir) => {
                                let r = match tokio::time::timeout(
                                    backstop(cfg),
                                    apply(&mut dir, cfg, &op, person.as_ref(), &self.account_dns),
                                )
                                .await
                                {
                                    Ok(r) => r,
                                    Err(_) => Err(DirectoryError::Unreachable(format!(
                                        "the operation took longer than {} s",
                                        backstop(cfg).as_secs()
                                    ))),
                                };
                                // A connection that failed is dropped, not reused.
                                if !r.as_ref().is_err_and(DirectoryError::is_connection) {
                                    pool.put(dir);
                                }
                                r
                            }
                        };
                        match &result {
                            Err(e) if e.is_connection() && attempt == 0 => tracing::warn!(
                                op = op.id, employee = %op.employee_id, kind = %op.kind, error = %e,
                                "directory connection failed; replacing it and trying again"
                            ),
                            _ => break,
                        }
                    }
                    (op, result)
                })
                .buffer_unordered(concurrency)
                .collect()
                .await;
        let unreachable = results
            .iter()
            .any(|(_, r)| r.as_ref().is_err_and(DirectoryError::is_connection));
        if unreachable {
            pool.clear();
        }
        // One transaction records the whole run (one commit, not one per
        // operation), with a security event for each permanent refusal. It
        // runs beside the next run: the next locks do not wait for it.
        let app = self.clone();
        self.workers.spawn("directory results", async move {
            let mut attempt = 0;
            loop {
                match app.record_run(&results).await {
                    Err(e) if e.is_retryable() && attempt < 5 => {
                        attempt += 1;
                        app.after_conflict(&e, attempt).await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot record directory operations' results; they are applied again later");
                        break;
                    }
                    Ok(()) => break,
                }
            }
            let mut in_flight = match app.dir_ops_in_flight.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            for (op, _) in &results {
                in_flight.remove(&op.id);
            }
        });
        Ok((n, unreachable))
    }

    async fn record_run(
        &self,
        results: &[(DirOp, Result<&'static str, DirectoryError>)],
    ) -> Result<(), AppError> {
        if results.is_empty() {
            return Ok(());
        }
        let now = self.now();
        let mut tx = self.store.begin().await?;
        for (op, result) in results {
            match result {
                Ok(outcome) => tx.finish_directory_op(op.id, outcome, now).await?,
                Err(e) if e.is_transient() => {
                    tracing::warn!(op = op.id, employee = %op.employee_id, kind = %op.kind,
                        attempts = op.attempts + 1, error = %e, "directory operation failed; will retry");
                    tx.retry_directory_op(op.id, &e.to_string(), now + backoff(op.attempts))
                        .await?;
                }
                Err(e) => {
                    tracing::error!(op = op.id, employee = %op.employee_id, kind = %op.kind, error = %e,
                        "the directory refused an operation for good; it needs a fix and `idgov provisioning retry`");
                    if tx.fail_directory_op(op.id, &e.to_string(), now).await? {
                        tx.audit(
                            AuditEntry::new(
                                "system:provisioning",
                                Action::ProvisioningFailed,
                                Target::identity(&op.employee_id),
                                json!({
                                    "op": op.id, "kind": op.kind, "group_dn": op.group_dn,
                                    "error": e.to_string(), "attempts": op.attempts + 1,
                                    "action": "fix the cause, then `idgov provisioning retry` the operation",
                                }),
                            )
                            .security(),
                        );
                    }
                }
            }
        }
        tx.commit(now).await?;
        Ok(())
    }

    /// Puts a failed operation back in the queue (an admin fixed the cause).
    pub async fn retry_directory_op(&self, id: i64, actor: &str) -> Result<DirOp, AppError> {
        let now = self.now();
        let op =
            self.store.get_directory_op(id).await?.ok_or_else(|| {
                AppError::not_found(format!("there is no directory operation {id}"))
            })?;
        if matches!(
            op.kind,
            DirOpKind::AddMember | DirOpKind::Enable | DirOpKind::CreateAccount
        ) && !self
            .store
            .get_identity(&op.employee_id)
            .await?
            .is_some_and(|p| p.may_hold_access())
        {
            return Err(AppError::precondition(format!(
                "employee {} holds no access any more; operation {id} ({}) is moot and stays failed",
                op.employee_id, op.kind
            )));
        }
        let mut tx = self.store.begin().await?;
        if !tx.retry_failed_directory_op(id, now).await? {
            return Err(AppError::precondition(format!(
                "directory operation {id} is {}, not failed; only failed operations are retried",
                op.state
            )));
        }
        tx.audit(AuditEntry::new(
            actor,
            Action::ProvisioningRetried,
            Target::identity(&op.employee_id),
            json!({"op": id, "kind": op.kind, "group_dn": op.group_dn, "last_error": op.last_error}),
        ));
        tx.commit(now).await?;
        self.wake_provisioning();
        self.store
            .get_directory_op(id)
            .await?
            .ok_or_else(|| AppError::not_found(format!("there is no directory operation {id}")))
    }

    /// Raises a security event for each operation pending too long.
    pub async fn alert_stuck_provisioning(&self) -> Result<usize, AppError> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let stuck = tx
            .take_stuck_directory_ops(now - chrono::Duration::minutes(STUCK_AFTER_MINUTES))
            .await?;
        for op in &stuck {
            tx.audit(
                AuditEntry::new(
                    "system:provisioning",
                    Action::ProvisioningStuck,
                    Target::identity(&op.employee_id),
                    json!({
                        "op": op.id, "kind": op.kind, "group_dn": op.group_dn, "attempts": op.attempts,
                        "last_error": op.last_error, "pending_since": op.created_at.to_rfc3339(),
                    }),
                )
                .security(),
            );
        }
        tx.commit(now).await?;
        Ok(stuck.len())
    }
}

/// When to look again: at the next due operation, or in a second at most.
async fn next_wait(app: &App, lane: Lane, now: DateTime<Utc>) -> Duration {
    match app.store.next_directory_op_due(lane).await {
        Ok(Some(t)) if t > now => (t - now)
            .to_std()
            .unwrap_or_default()
            .min(Duration::from_secs(1)),
        Ok(Some(_)) => Duration::from_millis(50),
        _ => Duration::from_secs(1),
    }
}

/// Runs a provisioning worker for `lane` until the application is dropped
/// or shutdown begins (it ends the run in progress first). Each lane has
/// its own connections.
pub(crate) async fn worker_loop(
    app: Weak<App>,
    cfg: Arc<DirectoryConfig>,
    lane: Lane,
    stop: tokio_util::sync::CancellationToken,
) {
    let size = match lane {
        Lane::Disables => lock_concurrency(&cfg),
        _ => cfg.workers,
    };
    let pool = Pool::new(cfg.connection.clone(), cfg.schema.clone(), size);
    let mut last_alert_check = None;
    let wakeup = match (app.upgrade(), lane) {
        (Some(a), Lane::Disables) => a.disable_wakeup.clone(),
        (Some(a), Lane::Strips) => a.strip_wakeup.clone(),
        (Some(a), Lane::Others) => a.provisioning_wakeup.clone(),
        (None, _) => return,
    };
    while !stop.is_cancelled() {
        let Some(app) = app.upgrade() else { return };
        let now = app.now();
        if lane == Lane::Others
            && last_alert_check
                .is_none_or(|t: DateTime<Utc>| now - t > chrono::Duration::seconds(30))
        {
            last_alert_check = Some(now);
            if let Err(e) = app.alert_stuck_provisioning().await {
                tracing::warn!(error = %e, "cannot check for stuck directory operations");
            }
        }
        let (worked, unreachable) = app
            .run_provisioning(&pool, &cfg, lane)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "provisioning run failed");
                (0, false)
            });
        if unreachable {
            tracing::warn!(url = %cfg.connection.url, ?lane, "directory unreachable; operations wait and are retried");
        }
        if worked > 0 && !unreachable {
            continue;
        }
        let wait = if unreachable {
            Duration::from_secs(1)
        } else {
            next_wait(&app, lane, now).await
        };
        drop(app);
        tokio::select! {
            _ = wakeup.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_is_capped_exponential() {
        let secs: Vec<i64> = (0..12).map(|a| super::backoff(a).num_seconds()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }
}

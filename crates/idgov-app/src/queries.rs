//! Reads, for every adapter, with object-level authorization applied
//! inside: an adapter passes the caller's [`Access`] and gets only what the
//! caller may see. Objects out of reach and objects that do not exist
//! answer alike ([`idgov_authz::out_of_reach`]).

use crate::App;
use crate::error::AppError;
use chrono::{DateTime, Utc};
use idgov_authz::{Access, Grant as Reach, ObjectFacts, check_object, out_of_reach};
use idgov_domain::audit::{Action, AuditEntry, AuditRecord, Target};
use idgov_domain::grant::Grant;
use idgov_domain::identity::{Identity, validate_employee_id};
use idgov_domain::roster::RosterChange;
use idgov_domain::{DomainError, FieldViolation};
use idgov_store::{
    AuditFilter, DirOp, DirOpState, DriftRow, EventFilter, HeldChange, HeldKind, HeldState,
    IdentityFilter, RecordedEvent, SyncRun, VerifyReport,
};
use serde_json::json;

fn hidden(access: &Access) -> AppError {
    AppError::PermissionDenied(out_of_reach(access).reason)
}

impl App {
    /// The identity a call is about, if the caller may reach it. A scoped
    /// caller learns nothing about identities outside its reach: unknown
    /// and unrelated look the same.
    pub async fn reachable_identity(
        &self,
        access: &Access,
        employee_id: &str,
    ) -> Result<Identity, AppError> {
        check_employee_id(employee_id)?;
        let found = self.store.get_identity(employee_id).await?;
        reach(access, employee_id, found)
    }

    /// An identity with the number of grants it holds (one read).
    pub async fn identity(
        &self,
        access: &Access,
        employee_id: &str,
    ) -> Result<(Identity, i64), AppError> {
        check_employee_id(employee_id)?;
        let found = self.store.get_identity_counted(employee_id).await?;
        let n = found.as_ref().map_or(0, |(_, n)| *n);
        let person = reach(access, employee_id, found.map(|(p, _)| p))?;
        Ok((person, n))
    }

    /// Identities after `after`; a manager lists their own reports, and only
    /// those.
    pub async fn identities(
        &self,
        access: &Access,
        mut filter: IdentityFilter,
        after: &str,
        limit: i64,
    ) -> Result<Vec<(Identity, i64)>, AppError> {
        if let Reach::Scoped { .. } = access.grant {
            let me = access.caller.employee_id.clone().unwrap_or_default();
            if filter.manager_id.is_empty() {
                filter.manager_id = me;
            } else if filter.manager_id != me {
                return Err(hidden(access));
            }
        }
        Ok(self.store.list_identities(&filter, after, limit).await?)
    }

    /// A reachable identity's grants.
    pub async fn grants(
        &self,
        access: &Access,
        employee_id: &str,
        include_revoked: bool,
        after: &str,
        limit: i64,
    ) -> Result<Vec<(Grant, idgov_domain::Classification)>, AppError> {
        check_employee_id(employee_id)?;
        // The holder's manager (what reach is decided on) and the page in one
        // read; nothing of it leaves unless the caller may see it.
        let found = self
            .store
            .grants_page_with_manager(employee_id, include_revoked, after, limit)
            .await?;
        may_reach(access, employee_id, found.as_ref().map(|(m, _)| m.clone()))?;
        let grants = found.map(|(_, g)| g).unwrap_or_default();
        Ok(grants)
    }

    pub async fn hr_events(
        &self,
        filter: &EventFilter,
        after: i64,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, AppError> {
        Ok(self.store.list_hr_events(filter, after, limit).await?)
    }

    /// The events roster sync `sync_id` of `source` made, in order of
    /// employee id, after event id `after` (see
    /// [`idgov_store::Store::list_roster_sync_events`]).
    pub async fn roster_sync_events(
        &self,
        source: &str,
        sync_id: &str,
        filter: &EventFilter,
        after: &str,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, AppError> {
        Ok(self
            .store
            .list_roster_sync_events(source, sync_id, filter, after, limit)
            .await?)
    }

    pub async fn held_changes(
        &self,
        state: HeldState,
        after: &str,
        limit: i64,
    ) -> Result<Vec<HeldChange>, AppError> {
        Ok(self.store.list_held_changes(state, after, limit).await?)
    }

    /// Held change `id`, in any state.
    pub async fn held_change(&self, id: &str) -> Result<HeldChange, AppError> {
        self.held_or_not_found(id).await
    }

    /// The changes of held roster sync `id` from place `from` on, at most
    /// `limit`, in the order they would apply (leavers first), and how
    /// many it makes in all. Only a change still held lists them: once
    /// released they are HR events (`hr_events`).
    pub async fn held_roster_changes(
        &self,
        id: &str,
        from: usize,
        limit: usize,
    ) -> Result<(Vec<RosterChange>, usize), AppError> {
        let held = self.store.get_held_change(id).await?.ok_or_else(|| {
            AppError::not_found(format!(
                "there is no held change {}",
                idgov_domain::error::echo(id)
            ))
        })?;
        if held.kind != HeldKind::RosterSync {
            return Err(AppError::invalid(
                "id",
                format!(
                    "held change {} is a {}, not a roster sync; ListHeldChanges shows it whole",
                    held.id,
                    held.kind.as_str()
                ),
            ));
        }
        if held.state != HeldState::Held {
            return Err(AppError::precondition(format!(
                "held change {} was {} and its staged changes are no longer kept; \
                 the changes it applied are HR events (idgov hr events)",
                held.id,
                held.state.as_str()
            )));
        }
        match crate::held::staged_items_of(&held) {
            Some(items) => {
                let want = limit.min(items.changes.saturating_sub(from));
                let page = self.staged_items(&items.job, from, want).await?;
                Ok((page, items.changes))
            }
            // Held before changes were staged: the payload has them all.
            None => {
                let (diff, _) = crate::held::held_diff(&held).unwrap_or_default();
                let mut changes = diff.changes;
                changes.sort_by_key(|c| !c.kind.ends());
                let total = changes.len();
                Ok((changes.into_iter().skip(from).take(limit).collect(), total))
            }
        }
    }

    pub async fn audit_events(
        &self,
        filter: &AuditFilter,
        after: i64,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, AppError> {
        Ok(self.store.list_audit_events(filter, after, limit).await?)
    }

    /// Verifies the whole audit chain. A failed verification is itself a
    /// security event: recording it extends the chain after the break; it
    /// does not hide it.
    pub async fn verify_audit(&self, actor: &str) -> Result<VerifyReport, AppError> {
        let mut report = self.store.verify_audit_chain().await?;
        self.check_checkpoints(&mut report).await?;
        // Verified: sign the head now (on demand, besides every 10 minutes).
        if report.broken.is_none()
            && let Err(e) = self.checkpoint_audit().await
        {
            tracing::warn!(error = %e, "cannot sign an audit checkpoint after verifying");
        }
        if let Some(b) = &report.broken {
            tracing::error!(seq = b.seq, problem = %b.problem, "audit chain verification failed");
            let now = self.now();
            let mut tx = self.store.begin().await?;
            tx.audit(
                AuditEntry::new(
                    actor,
                    Action::AuditVerifyFailed,
                    Target::Audit,
                    json!({"first_bad_seq": b.seq, "problem": b.problem, "checked": report.checked}),
                )
                .security(),
            );
            tx.commit(now).await?;
        }
        Ok(report)
    }

    pub async fn directory_ops(
        &self,
        state: Option<DirOpState>,
        employee_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<DirOp>, AppError> {
        Ok(self
            .store
            .list_directory_ops(state, employee_id, after, limit)
            .await?)
    }

    pub async fn directory_sync_run(&self, id: &str) -> Result<SyncRun, AppError> {
        self.store.get_sync_run(id).await?.ok_or_else(|| {
            AppError::not_found(format!(
                "there is no directory sync {}",
                idgov_domain::error::echo(id)
            ))
        })
    }

    /// The drift a sync found (default: the latest sync).
    pub async fn drift(
        &self,
        sync_id: &str,
        kind: Option<idgov_domain::drift::DriftKind>,
        after: i64,
        limit: i64,
    ) -> Result<(String, Vec<DriftRow>), AppError> {
        let sync_id = if sync_id.is_empty() {
            match self.store.latest_sync_run().await? {
                Some(run) => run.id,
                None => {
                    return Err(AppError::not_found(
                        "no directory sync has run yet; run `idgov directory sync`",
                    ));
                }
            }
        } else {
            sync_id.to_string()
        };
        let rows = self.store.list_drift(&sync_id, kind, after, limit).await?;
        Ok((sync_id, rows))
    }

    /// When the store last answered (for health).
    pub async fn ping(&self) -> Result<DateTime<Utc>, AppError> {
        self.store.ping().await?;
        Ok(self.now())
    }
}

fn check_employee_id(employee_id: &str) -> Result<(), AppError> {
    validate_employee_id(employee_id).map_err(|e| {
        AppError::Domain(DomainError::invalid(
            "invalid employee id",
            vec![FieldViolation::new("employee_id", e)],
        ))
    })
}

/// The identity read for `employee_id`, if the caller may see it; a scoped
/// caller learns nothing about people out of reach, present or not.
fn reach(
    access: &Access,
    employee_id: &str,
    found: Option<Identity>,
) -> Result<Identity, AppError> {
    may_reach(
        access,
        employee_id,
        found.as_ref().map(|p| p.attrs.manager_id.clone()),
    )?;
    found.ok_or_else(|| AppError::not_found(format!("there is no identity {employee_id}")))
}

/// Whether the caller may see the person `employee_id`, whose manager is
/// `manager` (None: no such person).
fn may_reach(
    access: &Access,
    employee_id: &str,
    manager: Option<Option<String>>,
) -> Result<(), AppError> {
    let Some(manager_id) = manager else {
        return Err(if matches!(access.grant, Reach::Scoped { .. }) {
            hidden(access)
        } else {
            AppError::not_found(format!("there is no identity {employee_id}"))
        });
    };
    let facts = ObjectFacts {
        employee_id: Some(employee_id.to_string()),
        manager_id,
        ..ObjectFacts::default()
    };
    check_object(access, &facts).map_err(|_| hidden(access))
}

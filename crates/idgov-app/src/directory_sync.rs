//! Directory sync: read the directory, compare it with idgov's truth, record
//! the drift, and (per kind, as configured) remediate through the outbox.

use super::App;
use crate::error::AppError;
use idgov_directory::{Directory, DirectoryError, DriftAction};
use idgov_domain::Classification;
use idgov_domain::audit::{Action, AuditEntry, Target};
use idgov_domain::drift::{self, Drift, DriftKind};
use idgov_domain::grant::{NewGrant, SourceKind};
use idgov_store::{DirOpKind, DriftRow, GrantRow, NewDirOp, SyncRun};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};

/// How many people (with their grants) the drift check reads at a time.
const DRIFT_PAGE: i64 = 1000;

/// How many drift rows (with their operations and imported grants) a sync
/// records per transaction.
const RECORD_STEP: usize = 500;

/// Security events per kind recorded one by one; beyond, one aggregate.
const SECURITY_EVENTS_PER_KIND: usize = 100;

fn unreachable(e: DirectoryError) -> AppError {
    if e.is_transient() {
        AppError::Unavailable(format!("the directory is unreachable: {e}"))
    } else {
        AppError::precondition(format!("the directory refused the sync: {e}"))
    }
}

/// The security event of a kind of drift.
fn drift_action(kind: DriftKind) -> Action {
    match kind {
        DriftKind::OrphanAccount => Action::DirectoryOrphanAccount,
        DriftKind::EnabledLeaver => Action::DirectoryEnabledLeaver,
        DriftKind::UnmanagedMembership => Action::DirectoryUnmanagedMembership,
        DriftKind::MissingMembership => Action::DirectoryMissingMembership,
        DriftKind::MissingAccount => Action::DirectoryMissingAccount,
    }
}

/// The outbox operations that remediate `d` (none for what can only be
/// reported).
fn remediation(d: &Drift, cause: &str) -> Vec<NewDirOp> {
    let Some(employee_id) = d.employee_id.clone() else {
        return vec![];
    };
    let kinds: &[DirOpKind] = match d.kind {
        DriftKind::EnabledLeaver => &[DirOpKind::Disable, DirOpKind::StripGroups],
        DriftKind::UnmanagedMembership => &[DirOpKind::RemoveMember],
        DriftKind::MissingMembership => &[DirOpKind::AddMember],
        DriftKind::OrphanAccount | DriftKind::MissingAccount => &[],
    };
    kinds
        .iter()
        .map(|kind| NewDirOp {
            employee_id: employee_id.clone(),
            kind: *kind,
            group_dn: d.group_dn.clone(),
            entitlement_id: d.entitlement_id.clone(),
            cause: cause.to_string(),
        })
        .collect()
}

impl App {
    /// Runs a directory sync. A dry run only reports; otherwise the run and
    /// its drift are recorded and audited, and drift configured for
    /// remediation is queued for the provisioning worker.
    pub async fn sync_directory(
        &self,
        dry_run: bool,
        actor: &str,
    ) -> Result<(SyncRun, Vec<DriftRow>), AppError> {
        let cfg = self.directory.clone().ok_or_else(|| {
            AppError::precondition(
                "no directory is configured; start idgov serve with --directory FILE",
            )
        })?;
        let started = self.now();
        let mut dir = Directory::connect(&cfg.connection, cfg.schema.clone())
            .await
            .map_err(unreachable)?;
        let accounts = dir
            .accounts(&cfg.accounts_base, cfg.page_size)
            .await
            .map_err(unreachable)?;
        let groups = dir
            .groups(&cfg.groups_base, cfg.page_size)
            .await
            .map_err(unreachable)?;
        dir.close().await;
        // What a sync reads, a leaver's lock can use (no search first).
        for a in &accounts {
            if let Some(e) = &a.employee_id {
                self.account_dns.put(e, &a.dn);
            }
        }
        let policy = self.policy();
        // idgov's side a page of people (with their active grants) at a
        // time: memory follows the directory and the drift, not the number
        // of grants. What an import needs of a person is kept only for
        // people with unmanaged memberships.
        let mut walk = drift::DriftWalk::new(&policy.policy, &accounts, &groups);
        let mut facts: HashMap<String, (bool, Classification)> = HashMap::new();
        let mut after = String::new();
        loop {
            let page = self
                .store
                .identities_with_grants_page(&after, DRIFT_PAGE)
                .await?;
            let Some((last, _)) = page.last() else { break };
            after = last.employee_id.clone();
            for (person, grants) in &page {
                let before = walk.found().len();
                walk.person(person, grants);
                if walk.found()[before..]
                    .iter()
                    .any(|d| d.kind == DriftKind::UnmanagedMembership)
                {
                    facts.insert(
                        person.employee_id.clone(),
                        (person.may_hold_access(), person.attrs.access_ceiling()),
                    );
                }
            }
        }
        let found = walk.finish();

        let id = uuid::Uuid::now_v7().to_string();
        let cause = format!("directory-sync:{id}");
        // What each drift row leads to (aligned with the rows): remediation
        // operations, or a grant imported; recorded with its row.
        let mut fixes: Vec<(Vec<NewDirOp>, Option<GrantRow>)> = Vec::new();
        // An unmanaged membership is adopted as a grant only for a known,
        // active person, of a catalogued entitlement, within their ceiling.
        let importable = |d: &Drift| -> Option<GrantRow> {
            let employee_id = d.employee_id.as_deref()?;
            let &(may_hold, ceiling) = facts.get(employee_id)?;
            let ent = policy
                .policy
                .entitlements
                .get(d.entitlement_id.as_deref()?)?;
            (may_hold && ent.classification <= ceiling).then(|| {
                let imported = NewGrant::plain(
                    ent.id.clone(),
                    SourceKind::Imported,
                    id.clone(),
                    format!(
                        "member of {} in the directory at sync {id}; imported for review",
                        d.group_dn.clone().unwrap_or_default()
                    ),
                );
                GrantRow {
                    review_pending: true,
                    ..GrantRow::new(employee_id, &imported, ent.classification, &cause)
                }
            })
        };
        let rows: Vec<DriftRow> = found
            .into_iter()
            .zip(1..)
            .map(|(d, seq)| {
                let mut fix = (Vec::new(), None);
                let action = match cfg.drift.get(&d.kind) {
                    Some(DriftAction::Remediate) if !dry_run => {
                        fix.0 = remediation(&d, &cause);
                        if fix.0.is_empty() {
                            "reported"
                        } else {
                            "remediated"
                        }
                    }
                    Some(DriftAction::Import) if !dry_run => {
                        fix.1 = importable(&d);
                        if fix.1.is_some() {
                            "imported"
                        } else {
                            "reported"
                        }
                    }
                    _ => "reported",
                };
                fixes.push(fix);
                DriftRow {
                    seq,
                    drift: d,
                    action: action.into(),
                }
            })
            .collect();
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        for r in &rows {
            *counts.entry(r.drift.kind.as_str()).or_default() += 1;
        }
        let run = SyncRun {
            id: if dry_run {
                format!("dry-run-{id}")
            } else {
                id.clone()
            },
            started_at: started,
            finished_at: self.now(),
            actor: actor.to_string(),
            dry_run,
            accounts: accounts.len() as i64,
            groups: groups.len() as i64,
            summary: json!({
                "drift": counts,
                "remediations_queued": fixes.iter().map(|f| f.0.len()).sum::<usize>(),
                "grants_imported": fixes.iter().filter(|f| f.1.is_some()).count(),
            }),
        };
        if dry_run {
            return Ok((run, rows));
        }
        // Recorded in steps of [`RECORD_STEP`] rows, each with its
        // operations and imported grants (and their audit events) in one
        // short transaction, so that HR intake goes on between them however
        // much drift a sync finds (a first sync of a directory nobody
        // managed can import a grant per person). The run comes with the
        // first step; its `directory.sync` audit event with the last.
        let steps = rows.len().div_ceil(RECORD_STEP).max(1);
        for step in 0..steps {
            let at = (step * RECORD_STEP).min(rows.len());
            let end = (at + RECORD_STEP).min(rows.len());
            let now = self.now();
            let mut tx = self.store.begin().await?;
            if step == 0 {
                tx.insert_sync_run(&run, &rows[at..end]).await?;
            } else {
                tx.insert_sync_drift(&run.id, &rows[at..end]).await?;
            }
            let ops: Vec<NewDirOp> = fixes[at..end].iter().flat_map(|f| f.0.clone()).collect();
            let imports: Vec<GrantRow> =
                fixes[at..end].iter().filter_map(|f| f.1.clone()).collect();
            tx.enqueue_directory_ops(&ops, now).await?;
            tx.insert_grants(&imports, now).await?;
            for g in &imports {
                tx.audit(AuditEntry::new(
                    actor,
                    Action::GrantImported,
                    Target::grant(&g.id),
                    json!({
                        "employee_id": g.employee_id, "entitlement_id": g.entitlement_id, "sync": id,
                        "justification": g.justification, "review_pending": true,
                    }),
                ));
            }
            if step + 1 == steps {
                audit_sync(&mut tx, &run, &rows, actor);
            }
            tx.commit(now).await?;
            if !ops.is_empty() {
                self.wake_provisioning();
            }
            tokio::task::yield_now().await;
        }
        Ok((run, rows))
    }
}

/// The end of a sync's recording, in its last step's transaction: its
/// `directory.sync` audit event and the security events of its drift.
fn audit_sync(tx: &mut idgov_store::WriteTx, run: &SyncRun, rows: &[DriftRow], actor: &str) {
    let id = &run.id;
    tx.audit(AuditEntry::new(
        actor,
        Action::DirectorySync,
        Target::DirectorySync(id.to_string()),
        json!({"accounts": run.accounts, "groups": run.groups, "summary": run.summary}),
    ));
    for &kind in DriftKind::ALL.iter().filter(|k| k.is_security_event()) {
        let of_kind: Vec<&DriftRow> = rows.iter().filter(|r| r.drift.kind == kind).collect();
        for r in of_kind.iter().take(SECURITY_EVENTS_PER_KIND) {
            tx.audit(
                AuditEntry::new(
                    actor,
                    drift_action(kind),
                    r.drift
                        .employee_id
                        .as_ref()
                        .map(|e| Target::identity(e))
                        .unwrap_or_else(|| {
                            Target::Account(r.drift.account_dn.clone().unwrap_or_default())
                        }),
                    json!({"sync": id, "account_dn": r.drift.account_dn, "action": r.action}),
                )
                .security(),
            );
        }
        if of_kind.len() > SECURITY_EVENTS_PER_KIND {
            tx.audit(
                AuditEntry::new(
                    actor,
                    drift_action(kind),
                    Target::DirectorySync(id.to_string()),
                    json!({"sync": id, "more": of_kind.len() - SECURITY_EVENTS_PER_KIND}),
                )
                .security(),
            );
        }
    }
}

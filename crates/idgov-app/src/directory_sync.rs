//! Directory sync: read the directory, compare it with idgov's truth, record
//! the drift, and (per kind, as configured) remediate through the outbox.

use super::App;
use crate::error::AppError;
use chrono::{DateTime, Utc};
use idgov_directory::{Directory, DirectoryConfig, DirectoryError, DriftAction};
use idgov_domain::Classification;
use idgov_domain::audit::{Action, AuditEntry, Target};
use idgov_domain::drift::{
    AccountView, Drift, DriftCheck, DriftKind, GroupView, Membership, normalize_dn,
};
use idgov_domain::grant::{NewGrant, SourceKind};
use idgov_domain::policy::Policy;
use idgov_store::{DirOpKind, DriftRow, GrantRow, NewDirOp, StagedDrift, SyncRun};
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};

/// How many people (with their grants) the drift check reads at a time.
const DRIFT_PAGE: i64 = 1000;

/// How many drift rows (with their operations and imported grants) a sync
/// records per transaction.
const RECORD_STEP: usize = 500;

/// Bounds of a recording step, in drift rows; within them a step takes as
/// many as hold the writer for about [`crate::policy::STEP_TARGET`]
/// ([`crate::steps::StepSize`]), starting at [`RECORD_STEP`].
pub const RECORD_STEP_MIN: u64 = 50;
pub const RECORD_STEP_MAX: u64 = 4_000;

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

/// How many accounts, or memberships, a sync stages per transaction.
const STAGE_STEP: usize = 1000;

/// How many drift rows a sync answers with; all are recorded (listed with
/// `drift`), and a dry run counts the rest.
pub const DRIFT_SHOWN: usize = 1000;

/// The grant that adopts an unmanaged membership `d` (None when the group
/// provisions no catalogued entitlement).
fn adoption(policy: &Policy, d: &Drift, sync: &str, cause: &str) -> Option<GrantRow> {
    let employee_id = d.employee_id.as_deref()?;
    let ent = policy.entitlements.get(d.entitlement_id.as_deref()?)?;
    let imported = NewGrant::plain(
        ent.id.clone(),
        SourceKind::Imported,
        sync.to_string(),
        format!(
            "member of {} in the directory at sync {sync}; imported for review",
            d.group_dn.clone().unwrap_or_default()
        ),
    );
    Some(GrantRow {
        review_pending: true,
        ..GrantRow::new(employee_id, &imported, ent.classification, cause)
    })
}

/// The drift a sync finds, staged in the store as it is found with what is
/// to be done about it, and counted.
struct Found<'a> {
    app: &'a App,
    run_id: &'a str,
    cause: &'a str,
    policy: &'a Policy,
    rules: &'a BTreeMap<DriftKind, DriftAction>,
    dry_run: bool,
    pending: Vec<StagedDrift>,
    seq: i64,
    counts: BTreeMap<&'static str, u64>,
    remediations: usize,
    imports: usize,
}

impl Found<'_> {
    /// Adds `d`. `owner` is what an import needs of the person it concerns
    /// (may they hold access, their ceiling), when it concerns a person.
    async fn add(
        &mut self,
        d: Drift,
        owner: Option<(bool, Classification)>,
    ) -> Result<(), AppError> {
        let action = match self.rules.get(&d.kind) {
            Some(DriftAction::Remediate) if !self.dry_run => {
                let ops = remediation(&d, self.cause).len();
                self.remediations += ops;
                if ops == 0 { "reported" } else { "remediated" }
            }
            Some(DriftAction::Import) if !self.dry_run => {
                // Adopted only for a known, active person, of a catalogued
                // entitlement, within their ceiling.
                let within = owner.is_some_and(|(may_hold, ceiling)| {
                    may_hold
                        && d.entitlement_id
                            .as_deref()
                            .and_then(|e| self.policy.entitlements.get(e))
                            .is_some_and(|e| e.classification <= ceiling)
                });
                if within {
                    self.imports += 1;
                    "imported"
                } else {
                    "reported"
                }
            }
            _ => "reported",
        };
        *self.counts.entry(d.kind.as_str()).or_default() += 1;
        self.seq += 1;
        self.pending.push(StagedDrift {
            kind_rank: DriftKind::ALL
                .iter()
                .position(|k| *k == d.kind)
                .unwrap_or_default() as i64,
            seq: self.seq,
            drift: d,
            action: action.into(),
        });
        if self.pending.len() >= STAGE_STEP {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), AppError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let now = self.app.now();
        let mut tx = self.app.store.begin().await?;
        tx.stage_drift(self.run_id, &self.pending).await?;
        tx.commit(now).await?;
        self.pending.clear();
        Ok(())
    }
}

impl App {
    /// Runs a directory sync. A dry run only reports; otherwise the run and
    /// its drift are recorded and audited, and drift configured for
    /// remediation is queued for the provisioning worker. Answers with the
    /// run and its first [`DRIFT_SHOWN`] drift rows.
    ///
    /// Neither side is held whole: what the directory lists is staged in the
    /// store as it is read, page by page; idgov's people are then read a
    /// page at a time beside the staged accounts and memberships of the
    /// same employee ids; accounts and memberships nobody owns are found in
    /// the store. The drift found is staged too, then recorded in kind order
    /// in short steps.
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
        // The stages of syncs a crash interrupted.
        for stale in self
            .store
            .stale_directory_stages(started - chrono::Duration::days(1))
            .await?
        {
            self.store.drop_directory_stage(&stale).await?;
        }
        let id = uuid::Uuid::now_v7().to_string();
        let mut tx = self.store.begin().await?;
        tx.open_directory_stage(&id, started).await?;
        tx.commit(started).await?;
        let synced = self.sync_staged(&cfg, &id, started, dry_run, actor).await;
        if let Err(e) = self.store.drop_directory_stage(&id).await {
            tracing::warn!(sync = %id, error = %e, "the directory sync's stage was not dropped; the next sync a day later drops it");
        }
        synced
    }

    async fn sync_staged(
        &self,
        cfg: &DirectoryConfig,
        id: &str,
        started: DateTime<Utc>,
        dry_run: bool,
        actor: &str,
    ) -> Result<(SyncRun, Vec<DriftRow>), AppError> {
        // The directory's side, staged as it is read.
        let mut dir = Directory::connect(&cfg.connection, cfg.schema.clone())
            .await
            .map_err(unreachable)?;
        let mut accounts = 0i64;
        let mut reader = dir
            .read_accounts(&cfg.accounts_base, cfg.page_size)
            .await
            .map_err(unreachable)?;
        loop {
            let batch = reader.next_batch(STAGE_STEP).await.map_err(unreachable)?;
            if batch.is_empty() {
                break;
            }
            // What a sync reads, a leaver's lock can use (no search first).
            for a in &batch {
                if let Some(e) = &a.employee_id {
                    self.account_dns.put(e, &a.dn);
                }
            }
            let now = self.now();
            let mut tx = self.store.begin().await?;
            tx.stage_directory_accounts(id, accounts + 1, &batch)
                .await?;
            tx.commit(now).await?;
            accounts += batch.len() as i64;
        }
        let mut groups = 0i64;
        let mut members = 0i64;
        let mut batch: Vec<Membership> = Vec::new();
        let mut reader = dir
            .read_groups(&cfg.groups_base, cfg.page_size)
            .await
            .map_err(unreachable)?;
        loop {
            let group = reader.next().await.map_err(unreachable)?;
            let end = group.is_none();
            if let Some(GroupView {
                dn,
                members: listed,
            }) = group
            {
                groups += 1;
                batch.extend(listed.into_iter().map(|member| Membership {
                    group_dn: dn.clone(),
                    member,
                }));
            }
            while batch.len() >= STAGE_STEP || (end && !batch.is_empty()) {
                let step: Vec<Membership> = batch.drain(..batch.len().min(STAGE_STEP)).collect();
                let now = self.now();
                let mut tx = self.store.begin().await?;
                tx.stage_directory_members(id, members + 1, &step).await?;
                tx.commit(now).await?;
                members += step.len() as i64;
            }
            if end {
                break;
            }
        }
        dir.close().await;
        // Not fatal: the sync is right without it, only slower on
        // PostgreSQL.
        if let Err(e) = self.store.analyze_directory_stage().await {
            tracing::warn!(sync = %id, error = %e, "cannot refresh the directory stage's statistics");
        }

        let policy = self.policy();
        let policy = &policy.policy;
        let cause = format!("directory-sync:{id}");
        let mut found = Found {
            app: self,
            run_id: id,
            cause: &cause,
            policy,
            rules: &cfg.drift,
            dry_run,
            pending: Vec::new(),
            seq: 0,
            counts: BTreeMap::new(),
            remediations: 0,
            imports: 0,
        };
        let check = DriftCheck::new(policy);
        // idgov's people a page at a time (with their active grants), each
        // beside the staged accounts naming their employee ids and the
        // memberships of those accounts.
        let mut after = String::new();
        loop {
            let page = self
                .store
                .identities_with_grants_page(&after, DRIFT_PAGE)
                .await?;
            let Some((last, _)) = page.last() else { break };
            let last = last.employee_id.clone();
            let staged = self
                .store
                .staged_accounts_between(id, &after, &last)
                .await?;
            let memberships = self
                .store
                .staged_memberships_between(id, &after, &last)
                .await?;
            // Staged by employee id: each person's accounts are one run.
            let accounts_of: HashMap<&str, &[AccountView]> = staged
                .chunk_by(|a, b| a.employee_id == b.employee_id)
                .filter_map(|run| Some((run.first()?.employee_id.as_deref()?, run)))
                .collect();
            let mut of_member: HashMap<String, Vec<&Membership>> = HashMap::new();
            for m in &memberships {
                of_member
                    .entry(normalize_dn(&m.member))
                    .or_default()
                    .push(m);
            }
            for (person, grants) in &page {
                let mine = accounts_of
                    .get(person.employee_id.as_str())
                    .copied()
                    .unwrap_or_default();
                let mut seen = HashSet::new();
                let theirs: Vec<Membership> = mine
                    .iter()
                    .map(|a| normalize_dn(&a.dn))
                    .filter(|dn| seen.insert(dn.clone()))
                    .flat_map(|dn| {
                        of_member
                            .get(&dn)
                            .into_iter()
                            .flatten()
                            .map(|m| (*m).clone())
                    })
                    .collect();
                let owner = (person.may_hold_access(), person.attrs.access_ceiling());
                for d in check.person(person, grants, mine, &theirs) {
                    found.add(d, Some(owner)).await?;
                }
            }
            after = last;
        }
        // Accounts no identity owns, then their memberships.
        let mut after = 0;
        loop {
            let page = self
                .store
                .staged_orphan_accounts(id, after, DRIFT_PAGE)
                .await?;
            let Some((last, _)) = page.last() else { break };
            after = *last;
            for (_, a) in &page {
                found.add(DriftCheck::orphan(a), None).await?;
            }
        }
        let mut after = 0;
        loop {
            let page = self
                .store
                .staged_unowned_memberships(id, after, DRIFT_PAGE)
                .await?;
            let Some((last, _)) = page.last() else { break };
            after = *last;
            for (_, m) in &page {
                found.add(check.unowned_membership(m), None).await?;
            }
        }
        found.flush().await?;

        let mut run = SyncRun {
            id: if dry_run {
                format!("dry-run-{id}")
            } else {
                id.to_string()
            },
            started_at: started,
            finished_at: self.now(),
            actor: actor.to_string(),
            dry_run,
            accounts,
            groups,
            summary: json!({
                "drift": found.counts,
                "remediations_queued": found.remediations,
                "grants_imported": found.imports,
            }),
            complete: dry_run,
        };
        // Recorded in kind order, in steps of rows sized by time, each
        // with its operations, imported grants and security events in one
        // short transaction, so that HR intake goes on between them however
        // much drift a sync finds (a first sync of a directory nobody
        // managed can import a grant per person). The run comes with the
        // first step and is complete (the latest) with the last, which
        // carries its `directory.sync` audit event.
        let mut shown: Vec<DriftRow> = Vec::new();
        let mut security: BTreeMap<DriftKind, usize> = BTreeMap::new();
        let mut at = (-1, 0);
        let mut seq = 0;
        let mut first = true;
        let mut size = crate::steps::StepSize::new(
            RECORD_STEP as u64,
            RECORD_STEP_MIN,
            RECORD_STEP_MAX,
            self.step_target(),
        );
        loop {
            let asked = size.get();
            let page = self
                .store
                .staged_drift(id, at, i64::try_from(asked).unwrap_or(RECORD_STEP as i64))
                .await?;
            let done = (page.len() as u64) < asked;
            if let Some(l) = page.last() {
                at = (l.kind_rank, l.seq);
            }
            let rows: Vec<DriftRow> = page
                .into_iter()
                .map(|s| {
                    seq += 1;
                    DriftRow {
                        seq,
                        drift: s.drift,
                        action: s.action,
                    }
                })
                .collect();
            let room = DRIFT_SHOWN.saturating_sub(shown.len());
            shown.extend(rows.iter().take(room).cloned());
            if dry_run {
                if done || shown.len() >= DRIFT_SHOWN {
                    break;
                }
                continue;
            }
            let now = self.now();
            let mut tx = self.store.begin().await?;
            // The writer is held from here (a wait for it is not counted).
            let began = std::time::Instant::now();
            if first {
                tx.insert_sync_run(&run, &rows).await?;
                first = false;
            } else {
                tx.insert_sync_drift(&run.id, &rows).await?;
            }
            let ops: Vec<NewDirOp> = rows
                .iter()
                .filter(|r| r.action == "remediated")
                .flat_map(|r| remediation(&r.drift, &cause))
                .collect();
            let imports: Vec<GrantRow> = rows
                .iter()
                .filter(|r| r.action == "imported")
                .filter_map(|r| adoption(policy, &r.drift, id, &cause))
                .collect();
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
            audit_security(&mut tx, &run.id, &rows, &mut security, actor);
            if done {
                audit_sync(&mut tx, &run, &security, actor);
                tx.complete_sync_run(&run.id, now).await?;
                run.finished_at = now;
                run.complete = true;
            }
            tx.commit(now).await?;
            size.record(rows.len() as u64, began.elapsed());
            if !ops.is_empty() {
                self.wake_provisioning();
            }
            if done {
                break;
            }
            tokio::task::yield_now().await;
        }
        Ok((run, shown))
    }
}

/// The security events of a step's drift rows: one per row for the first
/// [`SECURITY_EVENTS_PER_KIND`] of each kind (`emitted` counts them over
/// the steps).
fn audit_security(
    tx: &mut idgov_store::WriteTx,
    id: &str,
    rows: &[DriftRow],
    emitted: &mut BTreeMap<DriftKind, usize>,
    actor: &str,
) {
    for r in rows.iter().filter(|r| r.drift.kind.is_security_event()) {
        let n = emitted.entry(r.drift.kind).or_default();
        *n += 1;
        if *n > SECURITY_EVENTS_PER_KIND {
            continue;
        }
        tx.audit(
            AuditEntry::new(
                actor,
                drift_action(r.drift.kind),
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
}

/// The end of a sync's recording, in its last step's transaction: its
/// `directory.sync` audit event, and one security event per kind for the
/// rows of the kind past the first [`SECURITY_EVENTS_PER_KIND`].
fn audit_sync(
    tx: &mut idgov_store::WriteTx,
    run: &SyncRun,
    emitted: &BTreeMap<DriftKind, usize>,
    actor: &str,
) {
    let id = &run.id;
    for (&kind, &n) in emitted {
        if n > SECURITY_EVENTS_PER_KIND {
            tx.audit(
                AuditEntry::new(
                    actor,
                    drift_action(kind),
                    Target::DirectorySync(id.to_string()),
                    json!({"sync": id, "more": n - SECURITY_EVENTS_PER_KIND}),
                )
                .security(),
            );
        }
    }
    tx.audit(AuditEntry::new(
        actor,
        Action::DirectorySync,
        Target::DirectorySync(id.to_string()),
        json!({"accounts": run.accounts, "groups": run.groups, "summary": run.summary}),
    ));
}

//! Access requests and their approval steps, manual revocation, time-bound
//! grants and separation of duties. The rules live in
//! [`idgov_domain::access`]; this module reads what they need, asks them,
//! and writes the outcome with its audit events (and directory operations,
//! through the outbox) in one transaction.

use crate::App;
use crate::error::AppError;
use crate::intake::Batch;
use chrono::{DateTime, Duration, Utc};
use idgov_authz::{Access, Grant as Reach, ObjectFacts, Role, check_object, out_of_reach};
use idgov_domain::access::{
    self, AccessRequest, Decided, Decider, ExceptionState, Fulfilment, NewRequest, Org,
    RequestState, SECURITY_POOL, SodException, SodViolation, TargetKind,
};
use idgov_domain::audit::{Action, AuditEntry, Target};
use idgov_domain::grant::{Grant, GrantChange, RevokeReason, SourceKind};
use idgov_domain::history::Suppressed;
use idgov_domain::identity::{Identity, Status, text_problem, validate_employee_id};
use idgov_domain::{Classification, DomainError, FieldViolation};
use idgov_store::{DirOpKind, NewDirOp, RequestFilter, WriteTx};
use serde_json::json;
use std::collections::{BTreeSet, HashMap};

/// A request as an adapter passes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateRequest {
    pub beneficiary: String,
    pub target_kind: Option<TargetKind>,
    pub target_id: String,
    pub justification: String,
    pub duration_days: Option<u32>,
    pub extends_grant_id: Option<String>,
}

/// Which requests to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RequestView {
    /// Everything the caller may see (staff: everything).
    #[default]
    All,
    /// Made by or for the caller.
    Mine,
    /// Waiting for the caller's decision.
    WaitingForMe,
}

/// What one expiry sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Reminders recorded to approvers (half the time to expiry gone).
    pub requests_reminded: u64,
    /// Escalations recorded to approvers' managers (three quarters gone).
    pub requests_escalated: u64,
    pub requests_expired: u64,
    pub grants_expired: u64,
    pub exceptions_expired: u64,
    pub grants_revoked_sod: u64,
}

/// What a detective check found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SodCheck {
    pub holders_checked: u64,
    pub open: u64,
    pub new: u64,
    pub resolved: u64,
}

/// How many requests (or grants) a step of a sweep handles.
const SWEEP_STEP: i64 = 1000;

/// How many times a change is tried again after a concurrent change.
const ATTEMPTS: u32 = 5;

fn hidden(access: &Access) -> AppError {
    AppError::PermissionDenied(out_of_reach(access).reason)
}

pub(crate) fn is_staff(access: &Access, roles: &[Role]) -> bool {
    matches!(access.grant, Reach::Full { role } if roles.contains(&role))
}

/// The person making a call that only people make.
pub(crate) fn person(access: &Access) -> Result<&str, AppError> {
    access.caller.employee_id.as_deref().ok_or_else(|| {
        AppError::precondition(format!(
            "{} is made by a person: sign in as an employee (this caller, {}, is a service)",
            access.rpc.name(),
            access.caller.subject
        ))
    })
}

fn check_id(field: &str, id: &str) -> Result<(), AppError> {
    validate_employee_id(id).map_err(|e| {
        AppError::Domain(DomainError::invalid(
            "invalid employee id",
            vec![FieldViolation::new(field, e)],
        ))
    })
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), AppError> {
    match text_problem(value, max) {
        Some(p) => Err(AppError::invalid(field, p)),
        None => Ok(()),
    }
}

/// The managers and availability of the people a request may route to,
/// read before the transaction (routing needs no locks).
pub(crate) struct OrgMap(pub(crate) HashMap<String, Identity>);

impl Org for OrgMap {
    fn manager_of(&self, employee_id: &str) -> Option<String> {
        self.0
            .get(employee_id)
            .and_then(|p| p.attrs.manager_id.clone())
    }
    fn available(&self, employee_id: &str) -> bool {
        self.0
            .get(employee_id)
            .is_some_and(|p| p.status == Status::Active)
    }
}

/// The facts the authorization table's relations are checked against.
fn request_facts(r: &AccessRequest, beneficiary_manager: Option<String>) -> ObjectFacts {
    let mut parties: Vec<String> = vec![r.requester.clone()];
    for s in &r.steps {
        parties.push(s.assignee.clone());
        if let Some(d) = &s.decided_by {
            parties.push(d.clone());
        }
    }
    ObjectFacts {
        employee_id: Some(r.beneficiary.clone()),
        manager_id: beneficiary_manager,
        parties,
        owner: None,
        reviewer: None,
    }
}

impl App {
    /// Reads the people a request can route to: `start` and everyone above
    /// them, up to 32 levels.
    async fn org_around(&self, start: Vec<String>) -> Result<OrgMap, AppError> {
        // A batched read per level of the chain, in a read-only view.
        let mut tx = self.store.begin_read().await?;
        let org = self.org_of(&mut tx, start).await?;
        tx.rollback().await?;
        Ok(org)
    }

    /// Runs `f` again when it met a concurrent change the server resolves
    /// itself (another transaction, a newer policy).
    async fn with_retries<T, F, Fut>(&self, mut f: F) -> Result<T, AppError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, AppError>>,
    {
        let mut attempt = 0;
        loop {
            match f().await {
                Err(e) if e.is_retryable() && attempt + 1 < ATTEMPTS => {
                    attempt += 1;
                    self.after_conflict(&e, attempt).await;
                }
                other => return other,
            }
        }
    }

    /// Makes an access request for the caller or one of their direct
    /// reports. Refused with a field violation when a rule forbids it;
    /// a request that needs no approval is granted at once.
    pub async fn create_request(
        &self,
        access: &Access,
        new: CreateRequest,
    ) -> Result<AccessRequest, AppError> {
        let me = person(access)?.to_string();
        let beneficiary_id = if new.beneficiary.trim().is_empty() {
            me.clone()
        } else {
            new.beneficiary.trim().to_string()
        };
        // Every problem with the request's shape is named at once.
        let mut problems = Vec::new();
        if let Err(e) = validate_employee_id(&beneficiary_id) {
            problems.push(FieldViolation::new("beneficiary", e));
        }
        if new.target_kind.is_none() {
            problems.push(FieldViolation::new(
                "target_kind",
                "say what is asked for: entitlement or role",
            ));
        }
        if let Some(p) = text_problem(&new.target_id, 256) {
            problems.push(FieldViolation::new("target_id", p));
        } else if new.target_id.trim().is_empty() {
            problems.push(FieldViolation::new(
                "target_id",
                "name the entitlement or role asked for",
            ));
        }
        if let Some(p) = new
            .extends_grant_id
            .as_deref()
            .and_then(|g| text_problem(g, 64))
        {
            problems.push(FieldViolation::new("extends_grant_id", p));
        }
        problems.extend(access::shape_problems(
            &new.justification,
            new.duration_days,
        ));
        let Some(target_kind) = new.target_kind.filter(|_| problems.is_empty()) else {
            return Err(AppError::Domain(DomainError::invalid(
                "the access request cannot be made",
                problems,
            )));
        };
        // Only oneself or one's direct reports; nobody learns who exists.
        let beneficiary = match self.store.get_identity(&beneficiary_id).await? {
            Some(p) => p,
            None if beneficiary_id == me => {
                return Err(AppError::precondition(format!(
                    "you ({me}) are not a known identity; HR must report you first"
                )));
            }
            None => return Err(hidden(access)),
        };
        let facts = ObjectFacts {
            employee_id: Some(beneficiary.employee_id.clone()),
            manager_id: beneficiary.attrs.manager_id.clone(),
            ..ObjectFacts::default()
        };
        if beneficiary.employee_id != me && beneficiary.attrs.manager_id.as_deref() != Some(&me) {
            return Err(hidden(access));
        }
        check_object(access, &facts).map_err(|_| hidden(access))?;
        let policy = self.policy();
        let mut start = vec![beneficiary_id.clone(), me.clone()];
        start.extend(policy.policy.owner_ids());
        let org = self.org_around(start).await?;
        let actor = access.caller.actor();
        let req = NewRequest {
            requester: me.clone(),
            beneficiary: beneficiary_id.clone(),
            target_kind,
            target_id: new.target_id.trim().to_string(),
            justification: new.justification.clone(),
            duration_days: new.duration_days,
            extends_grant_id: new.extends_grant_id.clone().filter(|s| !s.is_empty()),
        };
        let r = self
            .with_retries(|| self.create_request_once(&req, &org, &actor))
            .await?;
        Ok(r)
    }

    async fn create_request_once(
        &self,
        new: &NewRequest,
        org: &OrgMap,
        actor: &str,
    ) -> Result<AccessRequest, AppError> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let policy = self.policy_for(&mut tx);
        let beneficiary = tx
            .get_identity(&new.beneficiary)
            .await?
            .ok_or_else(|| AppError::not_found("the beneficiary is gone"))?;
        if beneficiary.status != Status::Active {
            return Err(AppError::Domain(DomainError::invalid(
                "the access request cannot be made",
                vec![FieldViolation::new(
                    "beneficiary",
                    format!(
                        "{} is {}, not active; only active people get access",
                        beneficiary.employee_id, beneficiary.status
                    ),
                )],
            )));
        }
        let held = tx.active_grants(&new.beneficiary).await?;
        let open = tx
            .open_request_exists(&new.beneficiary, new.target_kind.as_str(), &new.target_id)
            .await?;
        let exceptions = tx.live_exceptions_of(&new.beneficiary, now).await?;
        let mut r = access::plan(
            new,
            &beneficiary,
            &held,
            open,
            &policy.policy,
            org,
            &exceptions,
            now,
        )?;
        r.id = format!("req-{}", uuid::Uuid::now_v7().simple());
        tx.audit(
            AuditEntry::new(
                actor,
                Action::AccessRequestCreated,
                Target::Request(r.id.clone()),
                json!({
                    "requester": r.requester, "beneficiary": r.beneficiary,
                    "target_kind": r.target_kind, "target_id": r.target_id,
                    "entitlements": r.entitlements, "classification": r.classification,
                    "justification": r.justification, "duration_days": r.duration_days,
                    "extends_grant_id": r.extends_grant_id, "sod_exception_id": r.sod_exception_id,
                    "steps": r.steps.iter().map(|s| json!({"approver": s.approver, "assignee": s.assignee, "note": s.note})).collect::<Vec<_>>(),
                    "expires_at": r.expires_at.to_rfc3339(),
                }),
            ),
        );
        let mut queued = 0;
        if r.state == RequestState::Approved {
            match access::fulfil(&r, &beneficiary, &held, &policy.policy, &exceptions, now) {
                Ok(f) => {
                    queued = self
                        .grant_request(&mut tx, policy.clone(), &mut r, f, actor, now)
                        .await?;
                }
                Err(why) => return Err(AppError::precondition(why)),
            }
        }
        tx.insert_request(&r, now).await?;
        tx.commit(now).await?;
        if queued > 0 {
            self.wake_provisioning();
        }
        Ok(r)
    }

    /// Writes what an approved request does: its grants (with their
    /// directory operations through the outbox) or the extension, audited.
    /// Returns how many directory operations were queued.
    async fn grant_request(
        &self,
        tx: &mut WriteTx,
        policy: std::sync::Arc<crate::ActivePolicy>,
        r: &mut AccessRequest,
        f: Fulfilment,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<usize, AppError> {
        let cause = format!("request:{}", r.id);
        tx.audit(AuditEntry::new(
            actor,
            Action::AccessRequestApproved,
            Target::Request(r.id.clone()),
            json!({"beneficiary": r.beneficiary, "approvers": r.approvers(), "entitlements": r.entitlements}),
        ));
        match f {
            Fulfilment::Extend {
                grant_id,
                expires_at,
            } => {
                tx.extend_grant(&grant_id, expires_at, &r.approvers())
                    .await?;
                tx.audit(AuditEntry::new(
                    actor,
                    Action::GrantExtended,
                    Target::grant(&grant_id),
                    json!({"employee_id": r.beneficiary, "request": r.id, "expires_at": expires_at.to_rfc3339(), "approvers": r.approvers()}),
                ));
                r.grant_ids = vec![grant_id];
                Ok(0)
            }
            Fulfilment::Grants(grants) => {
                let mut batch = Batch::for_people(
                    tx,
                    policy,
                    now,
                    std::slice::from_ref(&r.beneficiary),
                    self.provisioning(),
                    self.creates_accounts(),
                )
                .await?;
                let changes: Vec<GrantChange> = grants.into_iter().map(GrantChange::Add).collect();
                batch.stage_grant_changes(tx, &r.beneficiary, &changes, &cause, actor);
                r.grant_ids = batch.staged_grant_ids();
                Ok(batch.flush(tx).await?)
            }
        }
    }

    /// A request, if the caller may see it: staff readers see all; a person
    /// the requests they made or that are for them or their reports, and
    /// those with a step assigned to them.
    pub async fn request(&self, access: &Access, id: &str) -> Result<AccessRequest, AppError> {
        check_text("id", id, 64)?;
        let scoped = matches!(access.grant, Reach::Scoped { .. });
        let Some(r) = self.store.get_request(id).await? else {
            if scoped {
                return Err(hidden(access));
            }
            return Err(AppError::not_found(format!(
                "there is no access request {}",
                idgov_domain::error::echo(id)
            )));
        };
        if scoped {
            let manager = self
                .store
                .get_identity(&r.beneficiary)
                .await?
                .and_then(|p| p.attrs.manager_id);
            check_object(access, &request_facts(&r, manager)).map_err(|_| hidden(access))?;
        }
        Ok(r)
    }

    /// Requests in `view`, filtered, after the id `after`.
    pub async fn requests(
        &self,
        access: &Access,
        view: RequestView,
        state: Option<RequestState>,
        beneficiary: Option<String>,
        after: &str,
        limit: i64,
    ) -> Result<Vec<AccessRequest>, AppError> {
        let me = access.caller.employee_id.clone();
        let mut filter = RequestFilter {
            state,
            ..RequestFilter::default()
        };
        if let Some(b) = &beneficiary {
            check_id("beneficiary", b)?;
            filter.beneficiary = Some(b.clone());
        }
        let scoped = matches!(access.grant, Reach::Scoped { .. });
        match view {
            RequestView::Mine => filter.party = Some(person(access)?.to_string()),
            RequestView::WaitingForMe => {
                // A security officer's queue includes the security steps.
                filter.waiting_on = vec![person(access)?.to_string()];
                if access.caller.roles.contains(&Role::SecurityOfficer) {
                    filter.waiting_on.push(SECURITY_POOL.to_string());
                }
            }
            RequestView::All if scoped => {
                let me = me.clone().unwrap_or_default();
                match &beneficiary {
                    Some(b) if *b == me => {}
                    Some(b) => {
                        let p = self.store.get_identity(b).await?;
                        if p.and_then(|p| p.attrs.manager_id).as_deref() != Some(me.as_str()) {
                            return Err(hidden(access));
                        }
                    }
                    None => filter.party = Some(me),
                }
            }
            RequestView::All => {}
        }
        Ok(self.store.list_requests(&filter, after, limit).await?)
    }

    /// Approves or denies the open step of a request. Two approvers racing
    /// on one step: one wins, the other gets FAILED_PRECONDITION.
    pub async fn decide_request(
        &self,
        access: &Access,
        id: &str,
        approve: bool,
        comment: &str,
    ) -> Result<AccessRequest, AppError> {
        let me = person(access)?.to_string();
        check_text("id", id, 64)?;
        // Hidden unless the caller is a party to it (or a security officer).
        self.request(access, id).await?;
        let decider_person = self.store.get_identity(&me).await?;
        if decider_person.as_ref().map(|p| p.status) != Some(Status::Active) {
            return Err(AppError::PermissionDenied(format!(
                "{me} is not an active person; only active people decide requests"
            )));
        }
        let who = Decider {
            employee_id: me.clone(),
            security_officer: access.caller.roles.contains(&Role::SecurityOfficer),
        };
        let actor = access.caller.actor();
        let comment = comment.to_string();
        let outcome = self
            .with_retries(|| self.decide_once(id, &who, approve, &comment, &actor))
            .await?;
        match outcome {
            Ok(r) => Ok(r),
            Err((r, why)) => Err(AppError::precondition(format!(
                "request {} cannot be granted and was cancelled: {why}",
                r.id
            ))),
        }
    }

    /// One attempt at a decision. `Ok(Err(..))`: the final check refused
    /// the grant; the request was cancelled (committed) and the caller is
    /// told why.
    #[allow(clippy::type_complexity)]
    async fn decide_once(
        &self,
        id: &str,
        who: &Decider,
        approve: bool,
        comment: &str,
        actor: &str,
    ) -> Result<Result<AccessRequest, (AccessRequest, String)>, AppError> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let policy = self.policy_for(&mut tx);
        let mut r = tx
            .request_for_update(id)
            .await?
            .ok_or_else(|| AppError::not_found("the request is gone"))?;
        let before = r.clone();
        let decided = access::decide(&mut r, who, approve, comment, now)?;
        let (i, step) = before
            .open_step()
            .map(|(i, s)| (i, s.clone()))
            .ok_or_else(|| AppError::precondition("no step of this request is waiting"))?;
        let step_detail = json!({
            "step": i + 1, "approver": step.approver, "assignee": step.assignee,
            "decided_by": who.employee_id, "comment": r.steps[i].comment,
            "beneficiary": r.beneficiary,
        });
        let mut queued = 0;
        let mut refused = None;
        match decided {
            Decided::Denied => tx.audit(AuditEntry::new(
                actor,
                Action::AccessRequestDenied,
                Target::Request(r.id.clone()),
                step_detail,
            )),
            Decided::Advanced => tx.audit(AuditEntry::new(
                actor,
                Action::AccessRequestStepApproved,
                Target::Request(r.id.clone()),
                step_detail,
            )),
            Decided::Approved => {
                tx.audit(AuditEntry::new(
                    actor,
                    Action::AccessRequestStepApproved,
                    Target::Request(r.id.clone()),
                    step_detail,
                ));
                let beneficiary = tx.get_identity(&r.beneficiary).await?;
                let held = tx.active_grants(&r.beneficiary).await?;
                let exceptions = tx.live_exceptions_of(&r.beneficiary, now).await?;
                let check = match &beneficiary {
                    None => Err(format!("{} is no longer known", r.beneficiary)),
                    Some(b) => access::fulfil(&r, b, &held, &policy.policy, &exceptions, now),
                };
                match check {
                    Ok(f) => {
                        r.state = RequestState::Approved;
                        r.decided_at = Some(now);
                        r.reason = format!("approved by {}", r.approvers().join(", "));
                        queued = self
                            .grant_request(&mut tx, policy.clone(), &mut r, f, actor, now)
                            .await?;
                    }
                    Err(why) => {
                        r.state = RequestState::Cancelled;
                        r.decided_at = Some(now);
                        r.reason = format!("refused at the final approval: {why}");
                        tx.audit(AuditEntry::new(
                            actor,
                            Action::AccessRequestCancelled,
                            Target::Request(r.id.clone()),
                            json!({"beneficiary": r.beneficiary, "reason": r.reason}),
                        ));
                        refused = Some(why);
                    }
                }
            }
        }
        if !tx.update_request(&mut r, now).await? {
            return Err(AppError::precondition(
                "this request was decided by someone else meanwhile; read it again",
            ));
        }
        tx.commit(now).await?;
        if queued > 0 {
            self.wake_provisioning();
        }
        Ok(match refused {
            Some(why) => Err((r, why)),
            None => Ok(r),
        })
    }

    /// Cancels a pending request: its requester or beneficiary, or an
    /// it-admin.
    pub async fn cancel_request(
        &self,
        access: &Access,
        id: &str,
        reason: &str,
    ) -> Result<AccessRequest, AppError> {
        check_text("reason", reason, access::MAX_JUSTIFICATION)?;
        let r = self.request(access, id).await?;
        let me = access.caller.employee_id.clone().unwrap_or_default();
        let admin = is_staff(access, &[Role::ItAdmin]);
        if !admin && me != r.requester && me != r.beneficiary {
            return Err(AppError::PermissionDenied(
                "only the requester, the beneficiary or an it-admin cancels a request".into(),
            ));
        }
        let actor = access.caller.actor();
        let reason = if reason.trim().is_empty() {
            format!("cancelled by {actor}")
        } else {
            reason.trim().to_string()
        };
        self.with_retries(|| async {
            let now = self.now();
            let mut tx = self.store.begin().await?;
            let mut r = tx
                .request_for_update(id)
                .await?
                .ok_or_else(|| AppError::not_found("the request is gone"))?;
            if r.state != RequestState::Pending {
                return Err(AppError::precondition(format!(
                    "the request is {}, not pending",
                    r.state
                )));
            }
            r.state = RequestState::Cancelled;
            r.decided_at = Some(now);
            r.reason = reason.clone();
            tx.audit(AuditEntry::new(
                &actor,
                Action::AccessRequestCancelled,
                Target::Request(r.id.clone()),
                json!({"beneficiary": r.beneficiary, "reason": reason}),
            ));
            if !tx.update_request(&mut r, now).await? {
                return Err(AppError::precondition(
                    "this request changed meanwhile; read it again",
                ));
            }
            tx.commit(now).await?;
            Ok(r)
        })
        .await
    }

    /// Revokes a grant by hand: an it-admin, or the owner of its
    /// entitlement. A birthright grant revoked so is not given back while
    /// the policy and the person's attributes stay as they are.
    pub async fn revoke_grant(
        &self,
        access: &Access,
        grant_id: &str,
        reason: &str,
    ) -> Result<Grant, AppError> {
        check_text("grant_id", grant_id, 64)?;
        let reason = reason.trim().to_string();
        if reason.is_empty() {
            return Err(AppError::invalid(
                "reason",
                "say why the grant is revoked (it is kept in the audit log)",
            ));
        }
        check_text("reason", &reason, access::MAX_JUSTIFICATION)?;
        let scoped = matches!(access.grant, Reach::Scoped { .. });
        let Some((g, _)) = self.store.get_grant(grant_id).await? else {
            if scoped {
                return Err(hidden(access));
            }
            return Err(AppError::not_found(format!(
                "there is no grant {}",
                idgov_domain::error::echo(grant_id)
            )));
        };
        if scoped {
            let owner = self
                .policy()
                .policy
                .entitlements
                .get(&g.entitlement_id)
                .map(|e| e.owner.clone());
            let facts = ObjectFacts {
                owner,
                ..ObjectFacts::default()
            };
            check_object(access, &facts).map_err(|_| hidden(access))?;
        }
        let actor = access.caller.actor();
        self.with_retries(|| async {
            let now = self.now();
            let mut tx = self.store.begin().await?;
            let policy = self.policy_for(&mut tx);
            let Some((g, _)) = tx.active_grant_for_update(grant_id).await? else {
                return Err(AppError::precondition(format!(
                    "grant {grant_id} is already revoked"
                )));
            };
            let mut batch = Batch::for_people(
                &mut tx,
                policy.clone(),
                now,
                std::slice::from_ref(&g.employee_id),
                self.provisioning(),
                self.creates_accounts(),
            )
            .await?;
            let change = GrantChange::Revoke {
                grant_id: g.id.clone(),
                entitlement_id: g.entitlement_id.clone(),
                reason: RevokeReason::Manual,
            };
            let cause = format!("manual: {reason}");
            batch.stage_grant_changes(&mut tx, &g.employee_id, &[change], &cause, &actor);
            if g.source == SourceKind::Birthright
                && let (Some(p), _) = batch.current(&g.employee_id)
            {
                let mut history = p.history.clone();
                history
                    .suppressed
                    .retain(|s| s.entitlement_id != g.entitlement_id);
                history.suppressed.push(Suppressed {
                    entitlement_id: g.entitlement_id.clone(),
                    basis_sha256: policy.policy.birthright_basis(&g.entitlement_id),
                    attrs_sha256: p.attrs_sha256(),
                });
                batch.set_history_of(&g.employee_id, history);
            }
            let queued = batch.flush(&mut tx).await?;
            tx.commit(now).await?;
            if queued > 0 {
                self.wake_provisioning();
            }
            let mut out = g.clone();
            out.revoked_at = Some(now);
            out.revoke_reason = Some(RevokeReason::Manual);
            out.review_pending = false;
            Ok(out)
        })
        .await
    }

    /// Grants a time-bound exception to a separation-of-duties rule for one
    /// person: security officers only, with a justification, at most the
    /// level's `max_grant_days`.
    pub async fn grant_sod_exception(
        &self,
        access: &Access,
        employee_id: &str,
        rule_id: &str,
        justification: &str,
        days: u32,
    ) -> Result<SodException, AppError> {
        if !access.caller.roles.contains(&Role::SecurityOfficer) {
            return Err(AppError::PermissionDenied(
                "only a security officer grants a separation-of-duties exception".into(),
            ));
        }
        check_id("employee_id", employee_id)?;
        let policy = self.policy();
        access::check_exception(&policy.policy, rule_id, justification, days)?;
        if access.caller.employee_id.as_deref() == Some(employee_id) {
            return Err(AppError::PermissionDenied(
                "nobody grants an exception for themselves".into(),
            ));
        }
        let actor = access.caller.actor();
        self.with_retries(|| async {
            let now = self.now();
            let mut tx = self.store.begin().await?;
            let _ = self.policy_for(&mut tx);
            let p = tx.get_identity(employee_id).await?;
            match p {
                Some(p) if p.status == Status::Active => {}
                Some(p) => {
                    return Err(AppError::precondition(format!(
                        "{employee_id} is {}, not active",
                        p.status
                    )));
                }
                None => {
                    return Err(AppError::not_found(format!(
                        "there is no identity {employee_id}"
                    )));
                }
            }
            let x = SodException {
                id: format!("sodx-{}", uuid::Uuid::now_v7().simple()),
                employee_id: employee_id.to_string(),
                rule_id: rule_id.to_string(),
                justification: justification.trim().to_string(),
                granted_by: actor.clone(),
                granted_at: now,
                expires_at: now + Duration::days(i64::from(days)),
                state: ExceptionState::Active,
                ended_at: None,
            };
            tx.insert_sod_exception(&x).await?;
            tx.audit(
                AuditEntry::new(
                    &actor,
                    Action::SodExceptionGranted,
                    Target::SodException(x.id.clone()),
                    json!({"employee_id": x.employee_id, "rule_id": x.rule_id, "justification": x.justification,
                           "expires_at": x.expires_at.to_rfc3339()}),
                )
                .security(),
            );
            tx.commit(now).await?;
            Ok(x)
        })
        .await
    }

    pub async fn sod_exceptions(
        &self,
        employee_id: Option<&str>,
        active_only: bool,
        after: &str,
        limit: i64,
    ) -> Result<Vec<SodException>, AppError> {
        if let Some(e) = employee_id {
            check_id("employee_id", e)?;
        }
        Ok(self
            .store
            .list_sod_exceptions(employee_id, active_only, after, limit)
            .await?)
    }

    pub async fn sod_violations(
        &self,
        include_resolved: bool,
        after: (&str, &str),
        limit: i64,
    ) -> Result<Vec<SodViolation>, AppError> {
        Ok(self
            .store
            .list_sod_violations(include_resolved, after, limit)
            .await?)
    }

    /// A reachable person's grants that end within `days` (or everyone's,
    /// for staff readers when `employee_id` is empty), soonest first.
    pub async fn expiring_grants(
        &self,
        access: &Access,
        employee_id: &str,
        days: u32,
        after: Option<(DateTime<Utc>, String)>,
        limit: i64,
    ) -> Result<Vec<(Grant, Classification)>, AppError> {
        let before = self.now() + Duration::days(i64::from(days));
        let who = if employee_id.is_empty() {
            if matches!(access.grant, Reach::Scoped { .. }) {
                let me = person(access)?.to_string();
                self.reachable_identity(access, &me).await?;
                Some(me)
            } else {
                None
            }
        } else {
            Some(
                self.reachable_identity(access, employee_id)
                    .await?
                    .employee_id,
            )
        };
        Ok(self
            .store
            .expiring_grants(before, who.as_deref(), after, limit)
            .await?)
    }

    /// Expires what is due: requests nobody decided, time-bound grants
    /// (revoked `expired`, exactly once whatever runs concurrently) and SoD
    /// exceptions (their grants revoked `sod`). Safe after a restart that
    /// missed the moment: everything past due is swept.
    pub async fn run_access_expiry(&self) -> Result<Sweep, AppError> {
        let mut sweep = Sweep::default();
        loop {
            let (seen, r, e) = self.notify_approvers_step().await?;
            sweep.requests_reminded += r;
            sweep.requests_escalated += e;
            if seen < SWEEP_STEP as u64 {
                break;
            }
        }
        loop {
            let n = self.expire_requests_step().await?;
            sweep.requests_expired += n;
            if n < SWEEP_STEP as u64 {
                break;
            }
        }
        loop {
            let n = self.expire_grants_step().await?;
            sweep.grants_expired += n;
            if n < SWEEP_STEP as u64 {
                break;
            }
        }
        loop {
            let (x, g) = self.expire_exceptions_step().await?;
            sweep.exceptions_expired += x;
            sweep.grants_revoked_sod += g;
            if x < SWEEP_STEP as u64 {
                break;
            }
        }
        Ok(sweep)
    }

    /// Records due reminders (to whoever must decide next) and escalations
    /// (to their manager, else the fallback approver) of pending requests,
    /// once each: security-relevant notifications in the audit log, which
    /// webhook subscribers of `access.request.*` (or `security`) receive.
    /// Returns (requests seen, reminders, escalations).
    async fn notify_approvers_step(&self) -> Result<(u64, u64, u64), AppError> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let due = tx.requests_to_notify(now, SWEEP_STEP).await?;
        let waiting: Vec<String> = due
            .iter()
            .filter_map(|(r, _, _)| r.waiting_on().map(String::from))
            .collect();
        let managers: HashMap<String, Option<String>> = tx
            .people_by_ids(&waiting)
            .await?
            .into_iter()
            .map(|p| (p.employee_id, p.attrs.manager_id))
            .collect();
        let fallback = self.policy().policy.fallback_approver.clone();
        let (mut reminded, mut escalated) = (0, 0);
        for (r, remind, escalate) in &due {
            let waiting_on = r.waiting_on().unwrap_or_default().to_string();
            if *remind {
                reminded += 1;
                tx.audit(
                    AuditEntry::new(
                        crate::SYSTEM_SCHEDULER,
                        Action::AccessRequestReminder,
                        Target::Request(r.id.clone()),
                        json!({"waiting_on": waiting_on, "beneficiary": r.beneficiary,
                               "classification": r.classification, "expires_at": r.expires_at}),
                    )
                    .security(),
                );
            }
            if *escalate {
                escalated += 1;
                let to = managers
                    .get(&waiting_on)
                    .cloned()
                    .flatten()
                    .or_else(|| fallback.clone());
                tx.audit(
                    AuditEntry::new(
                        crate::SYSTEM_SCHEDULER,
                        Action::AccessRequestEscalation,
                        Target::Request(r.id.clone()),
                        json!({"waiting_on": waiting_on, "escalated_to": to, "beneficiary": r.beneficiary,
                               "classification": r.classification, "expires_at": r.expires_at}),
                    )
                    .security(),
                );
            }
            tx.mark_request_notified(&r.id, *remind, *escalate, now)
                .await?;
        }
        tx.commit(now).await?;
        Ok((due.len() as u64, reminded, escalated))
    }

    async fn expire_requests_step(&self) -> Result<u64, AppError> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let due = tx.due_requests(now, SWEEP_STEP).await?;
        let mut n = 0;
        for mut r in due {
            r.state = RequestState::Expired;
            r.decided_at = Some(now);
            r.reason = "nobody decided it in time".into();
            if tx.update_request(&mut r, now).await? {
                n += 1;
                tx.audit(AuditEntry::new(
                    crate::SYSTEM_SCHEDULER,
                    Action::AccessRequestExpired,
                    Target::Request(r.id.clone()),
                    json!({"beneficiary": r.beneficiary, "waiting_on": r.steps.iter().find(|s| s.state == access::StepState::Open).map(|s| s.assignee.clone())}),
                ));
            }
        }
        tx.commit(now).await?;
        Ok(n)
    }

    /// Stages the revocation of grants already marked revoked in this
    /// transaction: their audit events and directory operations.
    fn stage_swept(
        &self,
        tx: &mut WriteTx,
        grants: &[Grant],
        reason: RevokeReason,
        cause: &str,
        ops: &mut Vec<NewDirOp>,
    ) {
        let policy = self.policy();
        for g in grants {
            tx.audit(AuditEntry::new(
                crate::SYSTEM_SCHEDULER,
                Action::GrantRevoked,
                Target::grant(&g.id),
                json!({"employee_id": g.employee_id, "entitlement_id": g.entitlement_id, "reason": reason,
                       "cause": cause, "expires_at": g.expires_at.map(|t| t.to_rfc3339())}),
            ));
            if self.provisioning()
                && let Some(dn) = policy
                    .policy
                    .entitlements
                    .get(&g.entitlement_id)
                    .and_then(|e| e.ldap_group_dn.clone())
            {
                ops.push(NewDirOp {
                    employee_id: g.employee_id.clone(),
                    kind: DirOpKind::RemoveMember,
                    group_dn: Some(dn),
                    entitlement_id: Some(g.entitlement_id.clone()),
                    cause: cause.to_string(),
                });
            }
        }
    }

    async fn expire_grants_step(&self) -> Result<u64, AppError> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let grants = tx.revoke_due_grants(now, SWEEP_STEP).await?;
        let ids: Vec<String> = grants.iter().map(|g| g.id.clone()).collect();
        crate::review::items_of_revoked_grants(&mut tx, &ids).await?;
        let mut ops = Vec::new();
        self.stage_swept(&mut tx, &grants, RevokeReason::Expired, "expired", &mut ops);
        tx.enqueue_directory_ops(&ops, now).await?;
        tx.commit(now).await?;
        if !ops.is_empty() {
            self.wake_provisioning();
        }
        Ok(grants.len() as u64)
    }

    async fn expire_exceptions_step(&self) -> Result<(u64, u64), AppError> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let ended = tx.expire_due_exceptions(now, SWEEP_STEP).await?;
        if ended.is_empty() {
            tx.rollback().await?;
            return Ok((0, 0));
        }
        let ids: Vec<String> = ended.iter().map(|x| x.id.clone()).collect();
        let grants = tx.grants_of_exceptions(&ids).await?;
        let revokes: Vec<(String, RevokeReason)> = grants
            .iter()
            .map(|g| (g.id.clone(), RevokeReason::Sod))
            .collect();
        tx.revoke_grants(&revokes, now).await?;
        let revoked: Vec<String> = grants.iter().map(|g| g.id.clone()).collect();
        crate::review::items_of_revoked_grants(&mut tx, &revoked).await?;
        for x in &ended {
            tx.audit(
                AuditEntry::new(
                    crate::SYSTEM_SCHEDULER,
                    Action::SodExceptionExpired,
                    Target::SodException(x.id.clone()),
                    json!({"employee_id": x.employee_id, "rule_id": x.rule_id,
                           "grants_revoked": grants.iter().filter(|g| g.exception_id.as_deref() == Some(x.id.as_str())).map(|g| g.id.clone()).collect::<Vec<_>>()}),
                )
                .security(),
            );
        }
        let mut ops = Vec::new();
        self.stage_swept(
            &mut tx,
            &grants,
            RevokeReason::Sod,
            "sod exception ended",
            &mut ops,
        );
        tx.enqueue_directory_ops(&ops, now).await?;
        tx.commit(now).await?;
        if !ops.is_empty() {
            self.wake_provisioning();
        }
        Ok((ended.len() as u64, grants.len() as u64))
    }

    /// The detective check: everyone holding two sides of a rule without a
    /// live exception, a page of holders at a time. New conflicts are
    /// raised as the security event `sod.violation`; conflicts gone are
    /// resolved.
    pub async fn run_sod_check(&self, actor: &str) -> Result<SodCheck, AppError> {
        let policy = self.policy();
        let rules: Vec<String> = policy.policy.sod.iter().map(|r| r.id.clone()).collect();
        let ents: Vec<String> = policy
            .policy
            .sod
            .iter()
            .flat_map(|r| policy.policy.sod_sides(r))
            .flatten()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut out = SodCheck::default();
        let mut after = String::new();
        loop {
            let rows = self.store.grants_among(&ents, &after, 500).await?;
            let now = self.now();
            let mut held: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
            for (who, ent) in rows {
                held.entry(who).or_default().insert(ent);
            }
            let last = held.keys().next_back().cloned();
            let mut found = Vec::new();
            for (who, set) in &held {
                if policy.policy.sod_conflicts(set).is_empty() {
                    continue;
                }
                let exceptions = self.store.live_exceptions(who, now).await?;
                for (rule, entitlements) in
                    access::violations(&policy.policy, set, &exceptions, now)
                {
                    found.push(SodViolation {
                        employee_id: who.clone(),
                        rule_id: rule.id.clone(),
                        severity: rule.severity,
                        entitlements,
                        detected_at: now,
                        checked_at: now,
                        resolved_at: None,
                    });
                }
            }
            let mut tx = self.store.begin().await?;
            let upto = last.clone().unwrap_or_default();
            let (new, resolved) = match &last {
                Some(last) => tx.record_sod_check(&after, last, &found, now).await?,
                None => (vec![], vec![]),
            };
            if last.is_none() {
                out.resolved += tx.resolve_sod_beyond(&after, &rules, now).await?;
            }
            for v in &new {
                tx.audit(
                    AuditEntry::new(
                        actor,
                        Action::SodViolation,
                        Target::identity(&v.employee_id),
                        json!({"employee_id": v.employee_id, "rule_id": v.rule_id, "severity": v.severity,
                               "entitlements": v.entitlements}),
                    )
                    .security(),
                );
            }
            for v in &resolved {
                tx.audit(AuditEntry::new(
                    actor,
                    Action::SodViolationResolved,
                    Target::identity(&v.employee_id),
                    json!({"employee_id": v.employee_id, "rule_id": v.rule_id}),
                ));
            }
            out.holders_checked += held.len() as u64;
            out.open += found.len() as u64;
            out.new += new.len() as u64;
            out.resolved += resolved.len() as u64;
            tx.commit(now).await?;
            match last {
                Some(_) => after = upto,
                None => break,
            }
        }
        Ok(out)
    }
}

/// A leaver's requests: those for them are cancelled, the steps waiting
/// on them go to their manager (or the fallback approver, or the
/// security officers), audited. `leavers` are (employee id, manager,
/// actor).
pub(crate) async fn requests_after_leavers(
    tx: &mut WriteTx,
    leavers: &[(String, Option<String>, String)],
    fallback: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), AppError> {
    if leavers.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = leavers.iter().map(|l| l.0.clone()).collect();
    let by_id: HashMap<&str, &(String, Option<String>, String)> =
        leavers.iter().map(|l| (l.0.as_str(), l)).collect();
    for mut r in tx.pending_requests_for(&ids).await? {
        let actor = by_id
            .get(r.beneficiary.as_str())
            .map(|l| l.2.clone())
            .unwrap_or_default();
        r.state = RequestState::Cancelled;
        r.decided_at = Some(now);
        r.reason = format!("{} left", r.beneficiary);
        tx.audit(AuditEntry::new(
            &actor,
            Action::AccessRequestCancelled,
            Target::Request(r.id.clone()),
            json!({"beneficiary": r.beneficiary, "reason": r.reason}),
        ));
        if !tx.update_request(&mut r, now).await? {
            return Err(AppError::Store(idgov_store::StoreError::Conflict(
                "a request changed meanwhile".into(),
            )));
        }
    }
    for mut r in tx.requests_waiting_on(&ids).await? {
        let Some(from) = r.waiting_on().map(String::from) else {
            continue;
        };
        let Some((_, manager, actor)) = by_id.get(from.as_str()).map(|l| (*l).clone()) else {
            continue;
        };
        let candidates: Vec<String> = manager
            .into_iter()
            .filter(|m| !ids.contains(m))
            .chain(fallback.map(String::from))
            .chain(std::iter::once(SECURITY_POOL.to_string()))
            .collect();
        let mut to = None;
        for c in candidates {
            if access::reassign_open_step(&mut r, &from, &c, "left") {
                to = Some(c);
                break;
            }
        }
        let Some(to) = to else { continue };
        tx.audit(AuditEntry::new(
            &actor,
            Action::AccessRequestReassigned,
            Target::Request(r.id.clone()),
            json!({"beneficiary": r.beneficiary, "from": from, "to": to, "reason": format!("{from} left")}),
        ));
        if !tx.update_request(&mut r, now).await? {
            return Err(AppError::Store(idgov_store::StoreError::Conflict(
                "a request changed meanwhile".into(),
            )));
        }
    }
    Ok(())
}

/// Whether a caller reads as staff for the access views (used by adapters).
pub fn reads_everything(access: &Access) -> bool {
    is_staff(
        access,
        &[Role::ItAdmin, Role::SecurityOfficer, Role::Auditor],
    )
}

//! Grants: reads, and applying the grant changes a domain rule decided.

use crate::GrantRow;
use crate::convert::{Arg, FromRow, ReadRow, json, opt_parsed, opt_time, parsed, time};
use crate::{Store, StoreError, WriteTx};
use chrono::{DateTime, Utc};
use idgov_domain::Classification;
use idgov_domain::grant::{Grant, GrantChange};
use idgov_domain::policy::Policy;
use sqlx::Row;
use std::collections::HashMap;

impl FromRow for (Grant, Classification) {
    fn from_row(row: &impl ReadRow) -> Result<Self, StoreError> {
        grant_from_row(row)
    }
}

/// A count (`n`).
struct Count(i64);

impl FromRow for Count {
    fn from_row(row: &impl ReadRow) -> Result<Self, StoreError> {
        Ok(Count(row.col("n")?))
    }
}

/// What a grants page is asked for: holder, whether revoked grants count,
/// the last grant id of the previous page, and the page size.
pub(crate) type PageRequest = (String, bool, String, i64);
/// The holder's manager and a page of their grants; `None`: no such person.
pub(crate) type Page = (Option<String>, Vec<(Grant, Classification)>);

/// A row of a holder's grants page: the holder's manager, and a grant
/// unless the page is empty.
struct PageRow(Option<String>, Option<(Grant, Classification)>);

impl FromRow for PageRow {
    fn from_row(row: &impl ReadRow) -> Result<Self, StoreError> {
        let manager = row
            .col::<Option<String>>("holder_manager")?
            .filter(|m| !m.is_empty());
        let grant = match row.col::<Option<String>>("id")? {
            Some(_) => Some(grant_from_row(row)?),
            None => None,
        };
        Ok(PageRow(manager, grant))
    }
}

/// [`Store::grants_page_with_manager`] for many callers at once
/// (PostgreSQL): one query, each page in the order asked.
async fn pages_batch(
    pool: sqlx::PgPool,
    reqs: Vec<PageRequest>,
) -> Result<Vec<Option<Page>>, StoreError> {
    const SQL: &str = "SELECT r.n AS req, i.manager_id AS holder_manager, g.id AS id, g.employee_id AS employee_id, \
         g.entitlement_id AS entitlement_id, g.classification AS classification, g.source AS source, \
         g.source_ref AS source_ref, g.granted_at AS granted_at, g.expires_at AS expires_at, \
         g.approvers AS approvers, g.justification AS justification, g.revoked_at AS revoked_at, \
         g.revoke_reason AS revoke_reason, g.review_pending AS review_pending, \
         g.exception_id AS exception_id \
         FROM unnest($1::text[], $2::bool[], $3::text[], $4::int8[]) WITH ORDINALITY AS r(emp, incl, after_id, lim, n) \
         JOIN identities i ON i.employee_id = r.emp \
         LEFT JOIN LATERAL (SELECT * FROM grants g WHERE g.employee_id = r.emp \
           AND (r.incl OR g.revoked_at IS NULL) AND g.id > r.after_id ORDER BY g.id LIMIT r.lim) g ON true \
         ORDER BY r.n, g.id";
    let n = reqs.len();
    let mut emps = Vec::with_capacity(n);
    let mut incl = Vec::with_capacity(n);
    let mut afters = Vec::with_capacity(n);
    let mut limits = Vec::with_capacity(n);
    for (e, i, a, l) in reqs {
        emps.push(e);
        incl.push(i);
        afters.push(a);
        limits.push(l);
    }
    let rows = sqlx::query(SQL)
        .bind(emps)
        .bind(incl)
        .bind(afters)
        .bind(limits)
        .fetch_all(&pool)
        .await?;
    let mut out: Vec<Option<Page>> = vec![None; n];
    for r in &rows {
        let at: i64 = r.col("req")?;
        let slot = usize::try_from(at - 1)
            .ok()
            .and_then(|i| out.get_mut(i))
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "a batched grants page answered request {at} of {n}"
                ))
            })?;
        let PageRow(manager, grant) = PageRow::from_row(r)?;
        let page = slot.get_or_insert_with(|| (manager, Vec::new()));
        page.1.extend(grant);
    }
    Ok(out)
}

pub(crate) fn grant_from_row(row: &impl ReadRow) -> Result<(Grant, Classification), StoreError> {
    let grant = Grant {
        id: row.col("id")?,
        employee_id: row.col("employee_id")?,
        entitlement_id: row.col("entitlement_id")?,
        source: parsed(row, "source")?,
        source_ref: row.col("source_ref")?,
        granted_at: time(row.col("granted_at")?)?,
        expires_at: opt_time(row.col("expires_at")?)?,
        approvers: json(row, "approvers")?,
        justification: row.col("justification")?,
        revoked_at: opt_time(row.col("revoked_at")?)?,
        revoke_reason: opt_parsed(row, "revoke_reason")?,
        review_pending: row.col::<i64>("review_pending")? != 0,
        exception_id: row.col("exception_id")?,
    };
    Ok((grant, parsed(row, "classification")?))
}

/// What applying grant changes did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedGrants {
    pub added: Vec<(String, String)>,
    pub revoked: Vec<(String, String)>,
    pub marked: Vec<(String, String)>,
}

impl Store {
    /// An identity's grants ordered by id (creation order), with the
    /// classification each had when granted.
    pub async fn list_grants(
        &self,
        employee_id: &str,
        include_revoked: bool,
        after: &str,
        limit: i64,
    ) -> Result<Vec<(Grant, Classification)>, StoreError> {
        let sql = concat!(
            "SELECT ",
            grant_columns!(),
            " FROM grants \
             WHERE employee_id = $1 AND ($2 = 1 OR revoked_at IS NULL) AND id > $3 ORDER BY id LIMIT $4"
        );
        let args = [
            Arg::Text(employee_id),
            Arg::Int(i64::from(include_revoked)),
            Arg::Text(after),
            Arg::Int(limit),
        ];
        self.hot_rows(sql, &args).await
    }

    /// A person's manager (the facts reach is decided on) and a page of
    /// their grants, in one read: None when there is no such person.
    #[allow(clippy::type_complexity)]
    pub async fn grants_page_with_manager(
        &self,
        employee_id: &str,
        include_revoked: bool,
        after: &str,
        limit: i64,
    ) -> Result<Option<(Option<String>, Vec<(Grant, Classification)>)>, StoreError> {
        // One row per grant; one row with no grant when the page is empty.
        const SQL: &str = "SELECT i.manager_id AS holder_manager, g.id AS id, g.employee_id AS employee_id, \
             g.entitlement_id AS entitlement_id, g.classification AS classification, g.source AS source, \
             g.source_ref AS source_ref, g.granted_at AS granted_at, g.expires_at AS expires_at, \
             g.approvers AS approvers, g.justification AS justification, g.revoked_at AS revoked_at, \
             g.revoke_reason AS revoke_reason, g.review_pending AS review_pending, \
             g.exception_id AS exception_id \
             FROM identities i LEFT JOIN grants g ON g.employee_id = i.employee_id \
             AND ($2 = 1 OR g.revoked_at IS NULL) AND g.id > $3 \
             WHERE i.employee_id = $1 ORDER BY g.id LIMIT $4";
        let args = [
            Arg::Text(employee_id),
            Arg::Int(i64::from(include_revoked)),
            Arg::Text(after),
            Arg::Int(limit),
        ];
        if let Some(pool) = &self.batches.pool {
            let pool = pool.clone();
            let req = (
                employee_id.to_string(),
                include_revoked,
                after.to_string(),
                limit,
            );
            let batched = self
                .batches
                .grant_pages
                .call(req, move |reqs| pages_batch(pool, reqs))
                .await;
            if let Some(found) = batched {
                return Ok(found);
            }
        }
        let rows: Vec<PageRow> = self.hot_rows(SQL, &args).await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let manager = first.0.clone();
        Ok(Some((
            manager,
            rows.into_iter().filter_map(|r| r.1).collect(),
        )))
    }

    /// Every active grant, by holder. For tests and benchmarks only:
    /// services read grants with their holders a page at a time
    /// (`identities_with_grants_page`).
    pub async fn all_active_grants(&self) -> Result<HashMap<String, Vec<Grant>>, StoreError> {
        let sql = concat!(
            "SELECT ",
            grant_columns!(),
            " FROM grants \
             WHERE revoked_at IS NULL ORDER BY id"
        );
        let rows = sqlx::query(sql).fetch_all(self.reader()).await?;
        let mut out: HashMap<String, Vec<Grant>> = HashMap::new();
        for r in &rows {
            let (g, _) = grant_from_row(r)?;
            out.entry(g.employee_id.clone()).or_default().push(g);
        }
        Ok(out)
    }

    /// How many active grants `employee_id` holds.
    pub async fn count_active_grants(&self, employee_id: &str) -> Result<i64, StoreError> {
        const SQL: &str =
            "SELECT COUNT(*) AS n FROM grants WHERE employee_id = $1 AND revoked_at IS NULL";
        let rows: Vec<Count> = self.hot_rows(SQL, &[Arg::Text(employee_id)]).await?;
        Ok(rows.first().map_or(0, |c| c.0))
    }

    /// Counts active grants whose holder is not active (must always be zero).
    pub async fn count_active_grants_of_inactive(&self) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM grants g JOIN identities i ON i.employee_id = g.employee_id \
             WHERE g.revoked_at IS NULL AND i.status NOT IN ('active', 'suspended')",
        )
        .fetch_one(self.reader())
        .await?;
        Ok(row.try_get("n")?)
    }
}

impl WriteTx {
    /// The active grants of an identity.
    pub async fn active_grants(&mut self, employee_id: &str) -> Result<Vec<Grant>, StoreError> {
        let sql = concat!(
            "SELECT ",
            grant_columns!(),
            " FROM grants \
             WHERE employee_id = $1 AND revoked_at IS NULL ORDER BY id"
        );
        let rows = sqlx::query(sql)
            .bind(employee_id)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter()
            .map(|r| grant_from_row(r).map(|(g, _)| g))
            .collect()
    }

    /// Applies grant changes for `employee_id`. `cause` names what decided
    /// them (an HR event key, a policy version) and is kept with new grants.
    pub async fn apply_grant_changes(
        &mut self,
        employee_id: &str,
        changes: &[GrantChange],
        policy: &Policy,
        cause: &str,
        now: DateTime<Utc>,
    ) -> Result<AppliedGrants, StoreError> {
        let mut out = AppliedGrants::default();
        let mut rows = Vec::new();
        let mut revokes = Vec::new();
        let mut marks = Vec::new();
        for c in changes {
            match c {
                GrantChange::Add(n) => {
                    let classification = policy
                        .entitlements
                        .get(&n.entitlement_id)
                        .map(|e| e.classification)
                        .ok_or_else(|| {
                            StoreError::Conflict(format!(
                                "entitlement {} is not in the policy",
                                n.entitlement_id
                            ))
                        })?;
                    let row = GrantRow::new(employee_id, n, classification, cause);
                    out.added.push((row.id.clone(), n.entitlement_id.clone()));
                    rows.push(row);
                }
                GrantChange::Revoke {
                    grant_id,
                    entitlement_id,
                    reason,
                } => {
                    out.revoked.push((grant_id.clone(), entitlement_id.clone()));
                    revokes.push((grant_id.clone(), *reason));
                }
                GrantChange::MarkMoverReview {
                    grant_id,
                    entitlement_id,
                } => {
                    out.marked.push((grant_id.clone(), entitlement_id.clone()));
                    marks.push(grant_id.clone());
                }
            }
        }
        self.insert_grants(&rows, now).await?;
        self.revoke_grants(&revokes, now).await?;
        self.mark_mover_review(&marks).await?;
        Ok(out)
    }
}

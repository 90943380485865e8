//! Access requests, separation-of-duties exceptions and violations, and the
//! reads and claims of time-bound grants.

use crate::bulk::list;
use crate::convert::{get, json, micros, opt_time, parsed, time, to_json};
use crate::grants::grant_from_row;
use crate::{Store, StoreError, WriteTx};
use chrono::{DateTime, Utc};
use idgov_domain::Classification;
use idgov_domain::access::{AccessRequest, RequestState, SodException, SodViolation};
use idgov_domain::grant::Grant;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

/// Which requests to list. Set fields combine with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFilter {
    /// Made by or for this person.
    pub party: Option<String>,
    pub requester: Option<String>,
    pub beneficiary: Option<String>,
    /// Waiting for the decision of one of these (employee ids or
    /// `@security`); empty: any.
    pub waiting_on: Vec<String>,
    pub state: Option<RequestState>,
    /// For any of these beneficiaries (a manager's reports).
    pub beneficiaries: Option<Vec<String>>,
}

fn request_from_row(row: &AnyRow) -> Result<AccessRequest, StoreError> {
    let mut r: AccessRequest = json(row, "body")?;
    r.version = get(row, "version")?;
    Ok(r)
}

fn exception_from_row(row: &AnyRow) -> Result<SodException, StoreError> {
    Ok(SodException {
        id: get(row, "id")?,
        employee_id: get(row, "employee_id")?,
        rule_id: get(row, "rule_id")?,
        justification: get(row, "justification")?,
        granted_by: get(row, "granted_by")?,
        granted_at: time(get(row, "granted_at")?)?,
        expires_at: time(get(row, "expires_at")?)?,
        state: parsed(row, "state")?,
        ended_at: opt_time(get(row, "ended_at")?)?,
    })
}

fn violation_from_row(row: &AnyRow) -> Result<SodViolation, StoreError> {
    Ok(SodViolation {
        employee_id: get(row, "employee_id")?,
        rule_id: get(row, "rule_id")?,
        severity: parsed(row, "severity")?,
        entitlements: json(row, "entitlements")?,
        detected_at: time(get(row, "detected_at")?)?,
        checked_at: time(get(row, "checked_at")?)?,
        resolved_at: opt_time(get(row, "resolved_at")?)?,
    })
}

/// `$start, $start+1, …` (`n` of them): numbered placeholders, which both
/// backends bind by number, so one value may appear twice.
fn dollars(n: usize, start: usize) -> String {
    (0..n)
        .map(|i| format!("${}", start + i))
        .collect::<Vec<_>>()
        .join(", ")
}

const EXCEPTION_COLUMNS: &str =
    "id, employee_id, rule_id, justification, granted_by, granted_at, expires_at, state, ended_at";

impl Store {
    pub async fn get_request(&self, id: &str) -> Result<Option<AccessRequest>, StoreError> {
        let row = sqlx::query("SELECT version, body FROM access_requests WHERE id = $1")
            .bind(id)
            .fetch_optional(self.reader())
            .await?;
        row.as_ref().map(request_from_row).transpose()
    }

    /// Requests matching `filter` after the id `after`, oldest first.
    pub async fn list_requests(
        &self,
        filter: &RequestFilter,
        after: &str,
        limit: i64,
    ) -> Result<Vec<AccessRequest>, StoreError> {
        let mut sql = String::from("SELECT version, body FROM access_requests WHERE id > $1");
        let mut binds: Vec<String> = vec![after.to_string()];
        let mut add = |sql: &mut String, clause: &str, values: &[&str]| {
            let mut c = clause.to_string();
            for v in values {
                binds.push(v.to_string());
                c = c.replacen("{}", &format!("${}", binds.len()), 1);
            }
            sql.push_str(" AND ");
            sql.push_str(&c);
        };
        if let Some(p) = &filter.party {
            add(&mut sql, "(requester = {} OR beneficiary = {})", &[p, p]);
        }
        if let Some(p) = &filter.requester {
            add(&mut sql, "requester = {}", &[p]);
        }
        if let Some(p) = &filter.beneficiary {
            add(&mut sql, "beneficiary = {}", &[p]);
        }
        if !filter.waiting_on.is_empty() {
            let refs: Vec<&str> = filter.waiting_on.iter().map(|s| s.as_str()).collect();
            let marks = vec!["{}"; refs.len()].join(", ");
            add(&mut sql, &format!("waiting_on IN ({marks})"), &refs);
        }
        if let Some(s) = filter.state {
            add(&mut sql, "state = {}", &[s.as_str()]);
        }
        if let Some(list_of) = &filter.beneficiaries {
            if list_of.is_empty() {
                return Ok(vec![]);
            }
            let refs: Vec<&str> = list_of.iter().map(|s| s.as_str()).collect();
            let marks = vec!["{}"; refs.len()].join(", ");
            add(&mut sql, &format!("beneficiary IN ({marks})"), &refs);
        }
        sql.push_str(&format!(" ORDER BY id LIMIT ${}", binds.len() + 1));
        let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(false);
        for v in binds {
            q = q.bind(v);
        }
        let rows = q.bind(limit).fetch_all(self.reader()).await?;
        rows.iter().map(request_from_row).collect()
    }

    /// One grant, with the classification it had when granted.
    pub async fn get_grant(&self, id: &str) -> Result<Option<(Grant, Classification)>, StoreError> {
        let sql = concat!("SELECT ", grant_columns!(), " FROM grants WHERE id = $1");
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(self.reader())
            .await?;
        row.as_ref().map(grant_from_row).transpose()
    }

    /// Active grants that end before `before`, soonest first, optionally of
    /// one person; paged by (expires_at, id).
    pub async fn expiring_grants(
        &self,
        before: DateTime<Utc>,
        employee_id: Option<&str>,
        after: Option<(DateTime<Utc>, String)>,
        limit: i64,
    ) -> Result<Vec<(Grant, Classification)>, StoreError> {
        let (after_at, after_id) = after
            .map(|(t, id)| (micros(t), id))
            .unwrap_or((i64::MIN, String::new()));
        let sql = concat!(
            "SELECT ",
            grant_columns!(),
            " FROM grants WHERE revoked_at IS NULL AND expires_at IS NOT NULL AND expires_at < $1 \
             AND ($2 = '' OR employee_id = $2) \
             AND (expires_at > $3 OR (expires_at = $3 AND id > $4)) \
             ORDER BY expires_at, id LIMIT $5"
        );
        let rows = sqlx::query(sql)
            .bind(micros(before))
            .bind(employee_id.unwrap_or(""))
            .bind(after_at)
            .bind(after_id)
            .bind(limit)
            .fetch_all(self.reader())
            .await?;
        rows.iter().map(grant_from_row).collect()
    }

    pub async fn list_sod_exceptions(
        &self,
        employee_id: Option<&str>,
        active_only: bool,
        after: &str,
        limit: i64,
    ) -> Result<Vec<SodException>, StoreError> {
        let sql = format!(
            "SELECT {EXCEPTION_COLUMNS} FROM sod_exceptions WHERE id > $1 AND ($2 = '' OR employee_id = $2) \
             AND ($3 = 0 OR state = 'active') ORDER BY id LIMIT $4"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(after)
            .bind(employee_id.unwrap_or(""))
            .bind(i64::from(active_only))
            .bind(limit)
            .fetch_all(self.reader())
            .await?;
        rows.iter().map(exception_from_row).collect()
    }

    /// Violations after (employee_id, rule_id); open ones only unless
    /// `include_resolved`.
    pub async fn list_sod_violations(
        &self,
        include_resolved: bool,
        after: (&str, &str),
        limit: i64,
    ) -> Result<Vec<SodViolation>, StoreError> {
        let rows = sqlx::query(
            "SELECT employee_id, rule_id, severity, entitlements, detected_at, checked_at, resolved_at \
             FROM sod_violations WHERE ($1 = 1 OR resolved_at IS NULL) \
             AND (employee_id > $2 OR (employee_id = $2 AND rule_id > $3)) \
             ORDER BY employee_id, rule_id LIMIT $4",
        )
        .bind(i64::from(include_resolved))
        .bind(after.0)
        .bind(after.1)
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(violation_from_row).collect()
    }

    /// Active grants of the entitlements in `entitlements`, by holder after
    /// `after`, for the detective check: (employee_id, entitlement_id),
    /// holders in order, at most `limit` holders' worth (whole holders).
    pub async fn grants_among(
        &self,
        entitlements: &[String],
        after: &str,
        limit_holders: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        if entitlements.is_empty() {
            return Ok(vec![]);
        }
        let ents = dollars(entitlements.len(), 3);
        let sql = format!(
            "SELECT employee_id, entitlement_id FROM grants WHERE revoked_at IS NULL \
             AND employee_id IN (SELECT DISTINCT employee_id FROM grants WHERE revoked_at IS NULL \
               AND employee_id > $1 AND entitlement_id IN ({ents}) ORDER BY employee_id LIMIT $2) \
             AND entitlement_id IN ({ents}) ORDER BY employee_id"
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .persistent(false)
            .bind(after.to_string())
            .bind(limit_holders);
        for e in entitlements {
            q = q.bind(e.clone());
        }
        let rows = q.fetch_all(self.reader()).await?;
        rows.iter()
            .map(|r| Ok((get(r, "employee_id")?, get(r, "entitlement_id")?)))
            .collect()
    }

    /// Live exceptions of a person.
    pub async fn live_exceptions(
        &self,
        employee_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<SodException>, StoreError> {
        let sql = format!(
            "SELECT {EXCEPTION_COLUMNS} FROM sod_exceptions WHERE employee_id = $1 AND state = 'active' \
             AND expires_at > $2 ORDER BY id"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(employee_id)
            .bind(micros(now))
            .fetch_all(self.reader())
            .await?;
        rows.iter().map(exception_from_row).collect()
    }
}

impl WriteTx {
    pub async fn insert_request(
        &mut self,
        r: &AccessRequest,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO access_requests (id, requester, beneficiary, target_kind, target_id, state, waiting_on, \
             created_at, expires_at, updated_at, version, body) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&r.id)
        .bind(&r.requester)
        .bind(&r.beneficiary)
        .bind(r.target_kind.as_str())
        .bind(&r.target_id)
        .bind(r.state.as_str())
        .bind(r.waiting_on().map(String::from))
        .bind(micros(r.created_at))
        .bind(micros(r.expires_at))
        .bind(micros(now))
        .bind(r.version)
        .bind(to_json(r))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Writes `r` back if nobody changed it since it was read at
    /// `r.version`; bumps the version. A request changed meanwhile is a
    /// conflict the caller reports (it is not retried: the other change
    /// decided).
    pub async fn update_request(
        &mut self,
        r: &mut AccessRequest,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let read = r.version;
        r.version += 1;
        let done = sqlx::query(
            "UPDATE access_requests SET state = $1, waiting_on = $2, updated_at = $3, version = $4, body = $5 \
             WHERE id = $6 AND version = $7",
        )
        .bind(r.state.as_str())
        .bind(r.waiting_on().map(String::from))
        .bind(micros(now))
        .bind(r.version)
        .bind(to_json(&*r))
        .bind(&r.id)
        .bind(read)
        .execute(&mut *self.tx)
        .await?;
        if done.rows_affected() != 1 {
            r.version = read;
            return Ok(false);
        }
        Ok(true)
    }

    /// A request, locked on PostgreSQL until commit.
    pub async fn request_for_update(
        &mut self,
        id: &str,
    ) -> Result<Option<AccessRequest>, StoreError> {
        let sql = format!(
            "SELECT version, body FROM access_requests WHERE id = $1{}",
            self.backend.for_update()
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(request_from_row).transpose()
    }

    /// True when a pending request of `beneficiary` asks for the same target.
    pub async fn open_request_exists(
        &mut self,
        beneficiary: &str,
        target_kind: &str,
        target_id: &str,
    ) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM access_requests WHERE beneficiary = $1 AND target_kind = $2 \
             AND target_id = $3 AND state = 'pending'",
        )
        .bind(beneficiary)
        .bind(target_kind)
        .bind(target_id)
        .fetch_one(&mut *self.tx)
        .await?;
        let n: i64 = row.try_get("n")?;
        Ok(n > 0)
    }

    /// Pending requests for `beneficiary` (locked on PostgreSQL).
    pub async fn pending_requests_for(
        &mut self,
        beneficiaries: &[String],
    ) -> Result<Vec<AccessRequest>, StoreError> {
        self.pending_where("beneficiary", beneficiaries).await
    }

    /// Pending requests whose open step waits on one of `people`.
    pub async fn requests_waiting_on(
        &mut self,
        people: &[String],
    ) -> Result<Vec<AccessRequest>, StoreError> {
        self.pending_where("waiting_on", people).await
    }

    async fn pending_where(
        &mut self,
        column: &'static str,
        values: &[String],
    ) -> Result<Vec<AccessRequest>, StoreError> {
        let mut out = Vec::new();
        for chunk in values.chunks(500) {
            let sql = format!(
                "SELECT version, body FROM access_requests WHERE state = 'pending' AND {column} IN ({}) ORDER BY id{}",
                list(self.backend, chunk.len(), 1),
                self.backend.for_update()
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(false);
            for v in chunk {
                q = q.bind(v.clone());
            }
            let rows = q.fetch_all(&mut *self.tx).await?;
            for r in &rows {
                out.push(request_from_row(r)?);
            }
        }
        Ok(out)
    }

    /// Pending requests nobody decided in time, up to `limit` (locked).
    pub async fn due_requests(
        &mut self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<AccessRequest>, StoreError> {
        let sql = format!(
            "SELECT version, body FROM access_requests WHERE state = 'pending' AND expires_at <= $1 \
             ORDER BY expires_at, id LIMIT $2{}",
            self.backend.skip_locked()
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(micros(now))
            .bind(limit)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(request_from_row).collect()
    }

    /// Pending requests, not yet expired, whose reminder (half the time to
    /// expiry gone) or escalation (three quarters gone) is due and not yet
    /// recorded; with which of the two are due. Locked rows of another
    /// replica are skipped (PostgreSQL).
    pub async fn requests_to_notify(
        &mut self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<(AccessRequest, bool, bool)>, StoreError> {
        let sql = format!(
            "SELECT version, body, reminded_at, escalated_at, created_at, expires_at FROM access_requests \
             WHERE state = 'pending' AND expires_at > $1 AND \
             ((reminded_at IS NULL AND created_at + (expires_at - created_at) / 2 <= $2) \
              OR (escalated_at IS NULL AND created_at + (expires_at - created_at) / 4 * 3 <= $3)) \
             ORDER BY id LIMIT $4{}",
            self.backend.skip_locked()
        );
        let t = micros(now);
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(t)
            .bind(t)
            .bind(t)
            .bind(limit)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter()
            .map(|row| {
                let created: i64 = get(row, "created_at")?;
                let expires: i64 = get(row, "expires_at")?;
                let reminded: Option<i64> = get(row, "reminded_at")?;
                let escalated: Option<i64> = get(row, "escalated_at")?;
                let remind = reminded.is_none() && created + (expires - created) / 2 <= t;
                let escalate = escalated.is_none() && created + (expires - created) / 4 * 3 <= t;
                Ok((request_from_row(row)?, remind, escalate))
            })
            .collect()
    }

    /// Records that a request's reminder and/or escalation was sent.
    pub async fn mark_request_notified(
        &mut self,
        id: &str,
        reminded: bool,
        escalated: bool,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let t = micros(now);
        sqlx::query(
            "UPDATE access_requests SET \
             reminded_at = CASE WHEN $1 = 1 AND reminded_at IS NULL THEN $2 ELSE reminded_at END, \
             escalated_at = CASE WHEN $3 = 1 AND escalated_at IS NULL THEN $4 ELSE escalated_at END \
             WHERE id = $5",
        )
        .bind(i64::from(reminded))
        .bind(t)
        .bind(i64::from(escalated))
        .bind(t)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Revokes, in one statement, up to `limit` active grants whose
    /// `expires_at` has passed, and returns them: a grant is claimed by
    /// exactly one sweep, whatever runs concurrently.
    pub async fn revoke_due_grants(
        &mut self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Grant>, StoreError> {
        let lock = self.backend.skip_locked();
        let sql = format!(
            "UPDATE grants SET revoked_at = $1, revoke_reason = 'expired', review_pending = 0 \
             WHERE id IN (SELECT id FROM grants WHERE revoked_at IS NULL AND expires_at IS NOT NULL \
             AND expires_at <= $1 ORDER BY expires_at LIMIT $2{lock}) AND revoked_at IS NULL \
             RETURNING {}",
            grant_columns!()
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(micros(now))
            .bind(limit)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter()
            .map(|r| grant_from_row(r).map(|(g, _)| g))
            .collect()
    }

    /// One active grant, locked on PostgreSQL.
    pub async fn active_grant_for_update(
        &mut self,
        id: &str,
    ) -> Result<Option<(Grant, Classification)>, StoreError> {
        let sql = format!(
            "SELECT {} FROM grants WHERE id = $1 AND revoked_at IS NULL{}",
            grant_columns!(),
            self.backend.for_update()
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(grant_from_row).transpose()
    }

    /// Sets the end of an active grant (an extension).
    pub async fn extend_grant(
        &mut self,
        id: &str,
        expires_at: DateTime<Utc>,
        approvers: &[String],
    ) -> Result<(), StoreError> {
        let r = sqlx::query(
            "UPDATE grants SET expires_at = $1, approvers = $2 WHERE id = $3 AND revoked_at IS NULL",
        )
        .bind(micros(expires_at))
        .bind(to_json(&approvers))
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        if r.rows_affected() != 1 {
            return Err(StoreError::Conflict(format!(
                "grant {id} was revoked meanwhile"
            )));
        }
        Ok(())
    }

    /// Active grants that an exception allowed.
    pub async fn grants_of_exceptions(&mut self, ids: &[String]) -> Result<Vec<Grant>, StoreError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT {} FROM grants WHERE revoked_at IS NULL AND exception_id IN ({}){}",
                grant_columns!(),
                list(self.backend, chunk.len(), 1),
                self.backend.for_update()
            );
            let q = crate::bulk::by_ids(sql, chunk);
            for r in &q.fetch_all(&mut *self.tx).await? {
                out.push(grant_from_row(r)?.0);
            }
        }
        Ok(out)
    }

    pub async fn insert_sod_exception(&mut self, x: &SodException) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sod_exceptions (id, employee_id, rule_id, justification, granted_by, granted_at, \
             expires_at, state, ended_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&x.id)
        .bind(&x.employee_id)
        .bind(&x.rule_id)
        .bind(&x.justification)
        .bind(&x.granted_by)
        .bind(micros(x.granted_at))
        .bind(micros(x.expires_at))
        .bind(x.state.as_str())
        .bind(x.ended_at.map(micros))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Live exceptions of a person, read inside the transaction.
    pub async fn live_exceptions_of(
        &mut self,
        employee_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<SodException>, StoreError> {
        let sql = format!(
            "SELECT {EXCEPTION_COLUMNS} FROM sod_exceptions WHERE employee_id = $1 AND state = 'active' \
             AND expires_at > $2 ORDER BY id"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(employee_id)
            .bind(micros(now))
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(exception_from_row).collect()
    }

    /// Ends, in one statement, up to `limit` exceptions past their end and
    /// returns them (each claimed once).
    pub async fn expire_due_exceptions(
        &mut self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<SodException>, StoreError> {
        let lock = self.backend.skip_locked();
        let sql = format!(
            "UPDATE sod_exceptions SET state = 'expired', ended_at = $1 WHERE id IN \
             (SELECT id FROM sod_exceptions WHERE state = 'active' AND expires_at <= $1 ORDER BY expires_at \
             LIMIT $2{lock}) AND state = 'active' RETURNING {EXCEPTION_COLUMNS}"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(micros(now))
            .bind(limit)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(exception_from_row).collect()
    }

    /// Records the detective check's findings for the holders in
    /// (`from`, `to`]: new conflicts are inserted (and returned), known
    /// ones touched, open ones no longer found resolved (and returned).
    pub async fn record_sod_check(
        &mut self,
        from: &str,
        to: &str,
        found: &[SodViolation],
        now: DateTime<Utc>,
    ) -> Result<(Vec<SodViolation>, Vec<SodViolation>), StoreError> {
        let mut known: std::collections::HashMap<(String, String), SodViolation> =
            std::collections::HashMap::new();
        let rows = sqlx::query(
            "SELECT employee_id, rule_id, severity, entitlements, detected_at, checked_at, resolved_at \
             FROM sod_violations WHERE resolved_at IS NULL AND employee_id > $1 AND employee_id <= $2",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&mut *self.tx)
        .await?;
        for r in &rows {
            let v = violation_from_row(r)?;
            known.insert((v.employee_id.clone(), v.rule_id.clone()), v);
        }
        let mut new = Vec::new();
        for v in found {
            let key = (v.employee_id.clone(), v.rule_id.clone());
            if known.remove(&key).is_some() {
                sqlx::query(
                    "UPDATE sod_violations SET checked_at = $1, entitlements = $2, severity = $3 \
                     WHERE employee_id = $4 AND rule_id = $5",
                )
                .bind(micros(now))
                .bind(to_json(&v.entitlements))
                .bind(v.severity.as_str())
                .bind(&v.employee_id)
                .bind(&v.rule_id)
                .execute(&mut *self.tx)
                .await?;
            } else {
                // A rule broken again after it was resolved starts afresh.
                sqlx::query("DELETE FROM sod_violations WHERE employee_id = $1 AND rule_id = $2")
                    .bind(&v.employee_id)
                    .bind(&v.rule_id)
                    .execute(&mut *self.tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO sod_violations (employee_id, rule_id, severity, entitlements, detected_at, \
                     checked_at, resolved_at) VALUES ($1, $2, $3, $4, $5, $6, NULL)",
                )
                .bind(&v.employee_id)
                .bind(&v.rule_id)
                .bind(v.severity.as_str())
                .bind(to_json(&v.entitlements))
                .bind(micros(now))
                .bind(micros(now))
                .execute(&mut *self.tx)
                .await?;
                new.push(v.clone());
            }
        }
        let mut resolved = Vec::new();
        for (_, mut v) in known {
            sqlx::query(
                "UPDATE sod_violations SET resolved_at = $1, checked_at = $1 WHERE employee_id = $2 AND rule_id = $3",
            )
            .bind(micros(now))
            .bind(&v.employee_id)
            .bind(&v.rule_id)
            .execute(&mut *self.tx)
            .await?;
            v.resolved_at = Some(now);
            resolved.push(v);
        }
        resolved.sort_by(|a, b| (&a.employee_id, &a.rule_id).cmp(&(&b.employee_id, &b.rule_id)));
        Ok((new, resolved))
    }

    /// Resolves open violations of holders after `after` that the check no
    /// longer saw (the check's last page), or of rules that no longer exist.
    pub async fn resolve_sod_beyond(
        &mut self,
        after: &str,
        rules: &[String],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let not_rule = if rules.is_empty() {
            " OR 1 = 1".to_string()
        } else {
            format!(" OR rule_id NOT IN ({})", dollars(rules.len(), 3))
        };
        let sql = format!(
            "UPDATE sod_violations SET resolved_at = $1, checked_at = $1 WHERE resolved_at IS NULL \
             AND (employee_id > $2{not_rule})"
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .persistent(false)
            .bind(micros(now))
            .bind(after.to_string());
        for r in rules {
            q = q.bind(r.clone());
        }
        Ok(q.execute(&mut *self.tx).await?.rows_affected())
    }
}

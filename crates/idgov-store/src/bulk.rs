//! Set-based reads and writes for batches: a group of HR events is read with
//! a few `IN (…)` queries and written with multi-row statements, so a batch
//! costs about ten statements however many events it holds.

use crate::convert::{micros, to_json};
use crate::grants::grant_from_row;
use crate::hr_events::{RecordedEvent, event_from_row};
use crate::identities::identity_from_row;
use crate::{Backend, StoreError, WriteTx};
use chrono::{DateTime, Utc};
use idgov_domain::Classification;
use idgov_domain::grant::{Grant, NewGrant, RevokeReason};
use idgov_domain::hr::{EventState, HrEvent};
use idgov_domain::identity::Identity;
use sqlx::AssertSqlSafe;
use std::collections::HashMap;

/// Placeholder `n` (from 1) in the backend's style. SQLite gets anonymous
/// `?` placeholders: sqlx looks every named one up by name, and SQLite's
/// name lookup is a linear scan, which makes large multi-row statements
/// quadratic (measured: half the CPU of a batch). PostgreSQL needs `$n`.
pub(crate) fn ph(backend: Backend, n: usize) -> String {
    let mut out = String::new();
    push_ph(&mut out, backend, n);
    out
}

/// [`ph`] written onto `out` (no string of its own per placeholder).
pub(crate) fn push_ph(out: &mut String, backend: Backend, n: usize) {
    use std::fmt::Write;
    match backend {
        Backend::Sqlite => out.push('?'),
        Backend::Postgres => {
            let _ = write!(out, "${n}");
        }
    }
}

/// `sql`, an unprepared statement whose placeholders end with an
/// `IN (…)` list, with `ids` bound to that list.
pub(crate) fn by_ids<'q>(
    sql: String,
    ids: &[String],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    bind_each(
        sqlx::query(AssertSqlSafe(sql)).persistent(false),
        ids.iter().cloned(),
    )
}

/// Binds each of `values` in turn (the placeholders of an `IN (…)` list,
/// after whatever the query bound before).
pub(crate) fn bind_each<'q, T>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    values: impl IntoIterator<Item = T>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>
where
    T: sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    for v in values {
        q = q.bind(v);
    }
    q
}

/// `(p1, p2, …), (…)` for `rows` rows of `cols` columns.
pub(crate) fn values(backend: Backend, rows: usize, cols: usize) -> String {
    let mut out = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..cols {
            if c > 0 {
                out.push_str(", ");
            }
            push_ph(&mut out, backend, r * cols + c + 1);
        }
        out.push(')');
    }
    out
}

/// `n` placeholders numbered from `start`, comma-separated.
pub(crate) fn list(backend: Backend, n: usize, start: usize) -> String {
    let mut out = String::with_capacity(n * 6);
    for i in 0..n {
        if i > 0 {
            out.push_str(", ");
        }
        push_ph(&mut out, backend, start + i);
    }
    out
}

/// `items` in chunks whose sizes come from a small fixed set, on
/// PostgreSQL: `full` while that many remain, then powers of two, largest
/// first (a rest of 13 goes as 8, 4 and 1). Each size is one statement
/// text, kept prepared ([`Backend::prepares`]), so the server parses and
/// plans it once per connection. A batch of HR events made a statement
/// text of its own size each time, and parsing and planning those texts
/// was a third of PostgreSQL's work (profiled with `perf` during the
/// ingest bench). SQLite gets plain chunks of `full`.
///
/// For multi-row `INSERT`s only, whose plan has no choice to make. A
/// prepared `IN (…)` list gets a generic plan after five runs, and
/// PostgreSQL's generic plans for those filtered an array row by row
/// instead of probing the index: tried on every `IN` of HR intake, it
/// halved the hires per second.
pub(crate) fn stable_chunks<T>(
    backend: Backend,
    items: &[T],
    full: usize,
) -> impl Iterator<Item = &[T]> {
    let full = full.max(1);
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = if rest.len() >= full || !backend.prepares() {
            full.min(rest.len())
        } else {
            // The largest power of two not above what is left.
            1 << (usize::BITS - 1 - rest.len().leading_zeros())
        };
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Some(head)
    })
}

/// A grant to insert, with its id already chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRow {
    pub id: String,
    pub employee_id: String,
    pub entitlement_id: String,
    pub classification: String,
    pub source: String,
    pub source_ref: String,
    pub justification: String,
    pub cause: String,
    /// Pending a review (e.g. imported from the directory).
    pub review_pending: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub approvers: Vec<String>,
    pub exception_id: Option<String>,
}

impl GrantRow {
    /// The row of a new grant `n` of `employee_id`, with a fresh
    /// time-ordered id, an entitlement of `classification`, decided
    /// because of `cause`.
    pub fn new(
        employee_id: &str,
        n: &NewGrant,
        classification: Classification,
        cause: &str,
    ) -> GrantRow {
        GrantRow {
            id: uuid::Uuid::now_v7().to_string(),
            employee_id: employee_id.to_string(),
            entitlement_id: n.entitlement_id.clone(),
            classification: classification.as_str().to_string(),
            source: n.source.as_str().to_string(),
            source_ref: n.source_ref.clone(),
            justification: n.justification.clone(),
            cause: cause.to_string(),
            review_pending: false,
            expires_at: n.expires_at,
            approvers: n.approvers.clone(),
            exception_id: n.exception_id.clone(),
        }
    }
}

/// An HR event to record.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub event: HrEvent,
    pub state: EventState,
    pub detail: String,
    pub actor: String,
}

const IN_CHUNK: usize = 500;

/// "This grant is still active", for statements that name their grants by
/// id: the same test as `revoked_at IS NULL`, written so PostgreSQL cannot
/// answer it from the partial indexes on active grants. With statistics
/// gone stale after a burst of new grants, it planned a revoke of a few
/// grants by id as the primary key's rows ANDed with a bitmap of the whole
/// of `grants_active_by_entitlement` (every active grant: 180,000 entries,
/// 4–7 ms, where the primary key alone takes ~0.1 ms).
pub(crate) const STILL_ACTIVE: &str = "CASE WHEN revoked_at IS NULL THEN 1 END = 1";

impl WriteTx {
    /// Recorded events with these (source, event_id) keys, locked on
    /// PostgreSQL until commit.
    pub async fn events_by_keys(
        &mut self,
        keys: &[(String, String)],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut by_source: HashMap<&str, Vec<&str>> = HashMap::new();
        for (source, event_id) in keys {
            by_source
                .entry(source.as_str())
                .or_default()
                .push(event_id.as_str());
        }
        let lock = self.backend.for_update();
        let mut out = Vec::new();
        for (source, ids) in by_source {
            for chunk in ids.chunks(IN_CHUNK) {
                let sql = format!(
                    "SELECT arrival, payload, state, received_at, applied_at, detail, actor FROM hr_events \
                     WHERE source = {} AND event_id IN ({}){lock}",
                    ph(self.backend, 1),
                    list(self.backend, chunk.len(), 2)
                );
                let q = bind_each(
                    sqlx::query(AssertSqlSafe(sql))
                        .persistent(false)
                        .bind(source.to_string()),
                    chunk.iter().map(|id| id.to_string()),
                );
                for row in q.fetch_all(&mut *self.tx).await? {
                    out.push(event_from_row(&row)?);
                }
            }
        }
        Ok(out)
    }

    /// Identities with these ids, locked on PostgreSQL until commit.
    pub async fn identities_by_ids(&mut self, ids: &[String]) -> Result<Vec<Identity>, StoreError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(IN_CHUNK) {
            let sql = format!(
                concat!(
                    "SELECT ",
                    identity_columns!(),
                    " \
                 FROM identities WHERE employee_id IN ({}){}"
                ),
                list(self.backend, chunk.len(), 1),
                self.backend.for_update()
            );
            let q = by_ids(sql, chunk);
            for row in q.fetch_all(&mut *self.tx).await? {
                out.push(identity_from_row(&row)?);
            }
        }
        Ok(out)
    }

    /// The manager of each of `ids` that exists, read without locking
    /// (for management-cycle checks, which must not serialise writers on a
    /// shared manager's row): one query per 500 ids.
    pub async fn managers_of(
        &mut self,
        ids: &[String],
    ) -> Result<Vec<(String, Option<String>)>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT employee_id, manager_id FROM identities WHERE employee_id IN ({})",
                list(self.backend, chunk.len(), 1)
            );
            let q = by_ids(sql, chunk);
            for row in q.fetch_all(&mut *self.tx).await? {
                let m: Option<String> = crate::convert::get(&row, "manager_id")?;
                out.push((
                    crate::convert::get(&row, "employee_id")?,
                    m.filter(|m| !m.is_empty()),
                ));
            }
        }
        Ok(out)
    }

    /// The active grants of these identities, by holder.
    pub async fn active_grants_of(
        &mut self,
        ids: &[String],
    ) -> Result<HashMap<String, Vec<Grant>>, StoreError> {
        let mut out: HashMap<String, Vec<Grant>> = HashMap::new();
        for chunk in ids.chunks(IN_CHUNK) {
            let sql = format!(
                concat!(
                    "SELECT ",
                    grant_columns!(),
                    " FROM grants \
                 WHERE revoked_at IS NULL AND employee_id IN ({}) ORDER BY id"
                ),
                list(self.backend, chunk.len(), 1)
            );
            let q = by_ids(sql, chunk);
            for row in q.fetch_all(&mut *self.tx).await? {
                let (g, _) = grant_from_row(&row)?;
                out.entry(g.employee_id.clone()).or_default().push(g);
            }
        }
        Ok(out)
    }

    /// Records HR events. A key recorded meanwhile by someone else is a
    /// conflict (the caller retries and then sees a duplicate).
    pub async fn insert_hr_events(
        &mut self,
        rows: &[EventRow],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        for chunk in crate::bulk::stable_chunks(self.backend, rows, 200) {
            let sql = format!(
                "INSERT INTO hr_events (source, event_id, kind, employee_id, effective_at, received_at, state, \
                 applied_at, detail, fingerprint, payload, actor) VALUES {}",
                values(self.backend, chunk.len(), 12)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(self.backend.prepares());
            for r in chunk {
                let e = &r.event;
                q = q
                    .bind(e.source.clone())
                    .bind(e.event_id.clone())
                    .bind(e.kind.as_str())
                    .bind(e.employee_id.clone())
                    .bind(micros(e.effective_at))
                    .bind(micros(now))
                    .bind(r.state.as_str())
                    .bind((r.state == EventState::Applied).then(|| micros(now)))
                    .bind(r.detail.clone())
                    .bind(e.fingerprint.clone())
                    .bind(to_json(e))
                    .bind(r.actor.clone());
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// Replaces only the `history` of identities: what a roster's presence
    /// changes for people it leaves as they were. `rows` names each person
    /// once.
    ///
    /// A join (`UPDATE … FROM`), not a subquery per row: the subquery
    /// scanned the chunk's 400 values for every row it updated, and took
    /// twice as long on both backends (100,000 histories: PostgreSQL 8.0–9.3
    /// s against 4.7 s, SQLite 1.6–2.2 s against 0.6–0.9 s).
    pub async fn put_histories(
        &mut self,
        rows: &[(String, idgov_domain::identity::History)],
    ) -> Result<(), StoreError> {
        for chunk in rows.chunks(400) {
            let sql = format!(
                "WITH v(id, h) AS (VALUES {}) UPDATE identities SET history = v.h \
                 FROM v WHERE identities.employee_id = v.id",
                values(self.backend, chunk.len(), 2)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(false);
            for (id, h) in chunk {
                q = q.bind(id.clone()).bind(to_json(h));
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// Inserts or replaces identities (the last of several with one id wins).
    pub async fn put_identities(&mut self, people: &[Identity]) -> Result<(), StoreError> {
        let mut last: HashMap<&str, usize> = HashMap::new();
        for (i, p) in people.iter().enumerate() {
            last.insert(p.employee_id.as_str(), i);
        }
        let unique: Vec<&Identity> = people
            .iter()
            .enumerate()
            .filter(|(i, p)| last.get(p.employee_id.as_str()) == Some(i))
            .map(|(_, p)| p)
            .collect();
        for chunk in crate::bulk::stable_chunks(self.backend, &unique, 200) {
            let sql = format!(
                "INSERT INTO identities (employee_id, display_name, email, department, title, job_code, location, \
                 cost_center, manager_id, employment_type, background_check, clearance, start_date, end_date, \
                 status, attrs_effective_at, status_effective_at, created_at, updated_at, background_check_date, \
                 history) VALUES {} \
                 ON CONFLICT (employee_id) DO UPDATE SET display_name = excluded.display_name, \
                 email = excluded.email, department = excluded.department, title = excluded.title, \
                 job_code = excluded.job_code, location = excluded.location, cost_center = excluded.cost_center, \
                 manager_id = excluded.manager_id, employment_type = excluded.employment_type, \
                 background_check = excluded.background_check, clearance = excluded.clearance, \
                 start_date = excluded.start_date, end_date = excluded.end_date, status = excluded.status, \
                 attrs_effective_at = excluded.attrs_effective_at, status_effective_at = excluded.status_effective_at, \
                 updated_at = excluded.updated_at, background_check_date = excluded.background_check_date, \
                 history = excluded.history",
                values(self.backend, chunk.len(), 21)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(self.backend.prepares());
            for i in chunk {
                let a = &i.attrs;
                q = q
                    .bind(i.employee_id.clone())
                    .bind(a.display_name.clone())
                    .bind(a.email.clone())
                    .bind(a.department.clone())
                    .bind(a.title.clone())
                    .bind(a.job_code.clone())
                    .bind(a.location.clone())
                    .bind(a.cost_center.clone())
                    .bind(a.manager_id.clone())
                    .bind(a.employment_type.as_str())
                    .bind(a.background_check.as_str())
                    .bind(a.clearance.as_str())
                    .bind(a.start_date.map(|d| d.to_string()))
                    .bind(a.end_date.map(|d| d.to_string()))
                    .bind(i.status.as_str())
                    .bind(micros(i.attrs_effective_at))
                    .bind(micros(i.status_effective_at))
                    .bind(micros(i.created_at))
                    .bind(micros(i.updated_at))
                    .bind(a.background_check_date.map(|d| d.to_string()))
                    .bind(to_json(&i.history));
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// Inserts new grants.
    pub async fn insert_grants(
        &mut self,
        rows: &[GrantRow],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        for chunk in crate::bulk::stable_chunks(self.backend, rows, 250) {
            let sql = format!(
                "INSERT INTO grants (id, employee_id, entitlement_id, classification, source, source_ref, \
                 granted_at, approvers, justification, cause, review_pending, expires_at, exception_id) VALUES {}",
                values(self.backend, chunk.len(), 13)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(self.backend.prepares());
            for g in chunk {
                q = q
                    .bind(g.id.clone())
                    .bind(g.employee_id.clone())
                    .bind(g.entitlement_id.clone())
                    .bind(g.classification.clone())
                    .bind(g.source.clone())
                    .bind(g.source_ref.clone())
                    .bind(micros(now))
                    .bind(to_json(&g.approvers))
                    .bind(g.justification.clone())
                    .bind(g.cause.clone())
                    .bind(i64::from(g.review_pending))
                    .bind(g.expires_at.map(micros))
                    .bind(g.exception_id.clone());
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// Revokes active grants. Every one must still be active: a grant revoked
    /// meanwhile by someone else is a conflict.
    pub async fn revoke_grants(
        &mut self,
        revokes: &[(String, RevokeReason)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut by_reason: HashMap<RevokeReason, Vec<&String>> = HashMap::new();
        for (id, reason) in revokes {
            by_reason.entry(*reason).or_default().push(id);
        }
        for (reason, ids) in by_reason {
            for chunk in ids.chunks(IN_CHUNK) {
                let sql = format!(
                    "UPDATE grants SET revoked_at = {}, revoke_reason = {}, review_pending = 0 \
                     WHERE {STILL_ACTIVE} AND id IN ({})",
                    ph(self.backend, 1),
                    ph(self.backend, 2),
                    list(self.backend, chunk.len(), 3)
                );
                let mut q = sqlx::query(AssertSqlSafe(sql))
                    .persistent(false)
                    .bind(micros(now))
                    .bind(reason.as_str());
                for id in chunk {
                    q = q.bind((*id).clone());
                }
                let r = q.execute(&mut *self.tx).await?;
                if r.rows_affected() != chunk.len() as u64 {
                    return Err(StoreError::Conflict("a grant was revoked meanwhile".into()));
                }
            }
        }
        Ok(())
    }

    /// Marks active grants as pending the mover review.
    pub async fn mark_mover_review(&mut self, ids: &[String]) -> Result<(), StoreError> {
        for chunk in ids.chunks(IN_CHUNK) {
            let sql = format!(
                "UPDATE grants SET review_pending = 1 WHERE {STILL_ACTIVE} AND id IN ({})",
                list(self.backend, chunk.len(), 1)
            );
            let q = by_ids(sql, chunk);
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders() {
        use crate::Backend::*;
        assert_eq!(super::values(Postgres, 2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(super::list(Postgres, 3, 3), "$3, $4, $5");
        assert_eq!(super::values(Sqlite, 2, 2), "(?, ?), (?, ?)");
        assert_eq!(super::list(Sqlite, 3, 1), "?, ?, ?");
        assert_eq!(super::list(Postgres, 0, 1), "");
        assert_eq!(super::ph(Postgres, 12), "$12");
    }

    #[test]
    fn stable_chunks_cover_everything_in_few_sizes() {
        use crate::Backend::*;
        let sizes = |backend, n: usize, full| {
            let v: Vec<usize> = (0..n).collect();
            let chunks: Vec<&[usize]> = super::stable_chunks(backend, &v, full).collect();
            // In order, nothing lost or repeated.
            assert_eq!(chunks.concat(), v);
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>()
        };
        assert_eq!(sizes(Postgres, 13, 500), vec![8, 4, 1]);
        assert_eq!(sizes(Postgres, 1013, 500), vec![500, 500, 8, 4, 1]);
        assert_eq!(sizes(Postgres, 0, 500), Vec::<usize>::new());
        assert_eq!(sizes(Sqlite, 1013, 500), vec![500, 500, 13]);
        let mut seen = std::collections::BTreeSet::new();
        for n in 0..2000 {
            for s in sizes(Postgres, n, 250) {
                assert!(s == 250 || (s.is_power_of_two() && s < 250), "{n}: {s}");
                seen.insert(s);
            }
        }
        // Statement texts per statement: the full size and eight powers of two.
        assert_eq!(seen.len(), 9);
    }
}

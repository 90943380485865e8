//! Identities: reads and writes.

use crate::convert::{Arg, FromRow, OwnedArg, ReadRow, opt_date, parsed, time};
use crate::{Store, StoreError, WriteTx};
use idgov_domain::history::EventKey;
use idgov_domain::identity::{Attributes, History, Identity, Status};
use sqlx::{Any, Executor, Row};
use std::collections::HashMap;

/// Filters of [`Store::list_identities`]; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct IdentityFilter {
    pub status: Option<Status>,
    pub department: String,
    pub manager_id: String,
}

impl FromRow for Identity {
    fn from_row(row: &impl ReadRow) -> Result<Self, StoreError> {
        identity_from_row(row)
    }
}

/// An identity with its count of active grants (`active_grants`).
struct Counted(Identity, i64);

impl FromRow for Counted {
    fn from_row(row: &impl ReadRow) -> Result<Self, StoreError> {
        Ok(Counted(identity_from_row(row)?, row.col("active_grants")?))
    }
}

/// [`Store::get_identity_counted`] for many callers at once (PostgreSQL):
/// one query, each answer in the order asked.
async fn counted_batch(
    pool: sqlx::PgPool,
    ids: Vec<String>,
) -> Result<Vec<Option<(Identity, i64)>>, StoreError> {
    const SQL: &str = concat!(
        "SELECT ",
        identity_columns!(),
        ", (SELECT COUNT(*) FROM grants g WHERE g.employee_id = i.employee_id \
         AND g.revoked_at IS NULL) AS active_grants FROM identities i WHERE i.employee_id = ANY($1)"
    );
    let rows = sqlx::query(SQL)
        .bind(ids.as_slice())
        .fetch_all(&pool)
        .await?;
    let mut found = HashMap::with_capacity(rows.len());
    for r in &rows {
        let Counted(person, n) = Counted::from_row(r)?;
        found.insert(person.employee_id.clone(), (person, n));
    }
    Ok(ids.iter().map(|id| found.get(id).cloned()).collect())
}

pub(crate) fn identity_from_row(row: &impl ReadRow) -> Result<Identity, StoreError> {
    let mut i = Identity {
        employee_id: row.col("employee_id")?,
        attrs: Attributes {
            display_name: row.col("display_name")?,
            email: row.col("email")?,
            department: row.col("department")?,
            title: row.col("title")?,
            job_code: row.col("job_code")?,
            location: row.col("location")?,
            cost_center: row.col("cost_center")?,
            manager_id: row
                .col::<Option<String>>("manager_id")?
                .filter(|m| !m.is_empty()),
            employment_type: parsed(row, "employment_type")?,
            background_check: parsed(row, "background_check")?,
            clearance: parsed(row, "clearance")?,
            start_date: opt_date(row, "start_date")?,
            end_date: opt_date(row, "end_date")?,
            background_check_date: opt_date(row, "background_check_date")?,
        },
        status: parsed(row, "status")?,
        attrs_effective_at: time(row.col("attrs_effective_at")?)?,
        status_effective_at: time(row.col("status_effective_at")?)?,
        created_at: time(row.col("created_at")?)?,
        updated_at: time(row.col("updated_at")?)?,
        history: History::default(),
    };
    let history: String = row.col("history")?;
    i.history = if history.is_empty() {
        legacy_history(&i)
    } else {
        serde_json::from_str(&history)
            .map_err(|e| StoreError::Corrupt(format!("identity {}: history: {e}", i.employee_id)))?
    };
    Ok(i)
}

/// The history of a row written before histories were kept: everything up
/// to its state is folded, one employment unless a pre-hire.
fn legacy_history(i: &Identity) -> History {
    let announced = i.status == Status::PreHire;
    History {
        last: (!announced).then(|| EventKey {
            at: i.state_effective_at(),
            rank: 0,
            source: String::new(),
            event_id: String::new(),
        }),
        employment_start: (!announced).then_some(i.status_effective_at),
        employments: u32::from(!announced),
        reported_check: i.attrs.background_check,
        end_zone: None,
        rosters: Vec::new(),
        announced: None,
        suppressed: Vec::new(),
    }
}

async fn fetch_identity<'e, E: Executor<'e, Database = Any>>(
    e: E,
    sql: &'static str,
    employee_id: &str,
) -> Result<Option<Identity>, StoreError> {
    let row = sqlx::query(sql).bind(employee_id).fetch_optional(e).await?;
    row.as_ref().map(identity_from_row).transpose()
}

macro_rules! select_identity {
    ($suffix:literal) => {
        concat!(
            concat!(
                "SELECT ",
                identity_columns!(),
                " \
             FROM identities WHERE employee_id = $1"
            ),
            $suffix
        )
    };
}

impl Store {
    pub async fn get_identity(&self, employee_id: &str) -> Result<Option<Identity>, StoreError> {
        const SQL: &str = select_identity!("");
        let rows: Vec<Identity> = self.hot_rows(SQL, &[Arg::Text(employee_id)]).await?;
        Ok(rows.into_iter().next())
    }

    /// An identity and the number of active grants it holds, in one read.
    pub async fn get_identity_counted(
        &self,
        employee_id: &str,
    ) -> Result<Option<(Identity, i64)>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            identity_columns!(),
            ", (SELECT COUNT(*) FROM grants g WHERE g.employee_id = i.employee_id \
             AND g.revoked_at IS NULL) AS active_grants FROM identities i WHERE i.employee_id = $1"
        );
        if let Some(pool) = &self.batches.pool {
            let pool = pool.clone();
            let batched = self
                .batches
                .identities
                .call(employee_id.to_string(), move |ids| counted_batch(pool, ids))
                .await;
            if let Some(found) = batched {
                return Ok(found);
            }
        }
        let rows: Vec<Counted> = self.hot_rows(SQL, &[Arg::Text(employee_id)]).await?;
        Ok(rows.into_iter().next().map(|c| (c.0, c.1)))
    }

    /// Lists identities ordered by employee id, after `after`, with the
    /// number of active grants each holds.
    pub async fn list_identities(
        &self,
        filter: &IdentityFilter,
        after: &str,
        limit: i64,
    ) -> Result<Vec<(Identity, i64)>, StoreError> {
        let rows = sqlx::query(
            concat!("SELECT ", identity_columns!(), ", \
             (SELECT COUNT(*) FROM grants g WHERE g.employee_id = i.employee_id AND g.revoked_at IS NULL) AS active_grants \
             FROM identities i \
             WHERE i.employee_id > $1 AND ($2 = '' OR status = $2) AND ($3 = '' OR department = $3) \
             AND ($4 = '' OR manager_id = $4) \
             ORDER BY i.employee_id LIMIT $5"),
        )
        .bind(after)
        .bind(filter.status.map(|s| s.as_str()).unwrap_or(""))
        .bind(&filter.department)
        .bind(&filter.manager_id)
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|r| Ok((identity_from_row(r)?, r.try_get::<i64, _>("active_grants")?)))
            .collect()
    }

    /// The next `limit` identities after `after`, by employee id (a walk
    /// over everyone that never holds the whole table).
    pub async fn identities_page(
        &self,
        after: &str,
        limit: i64,
    ) -> Result<Vec<Identity>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            identity_columns!(),
            " FROM identities WHERE employee_id > $1 ORDER BY employee_id LIMIT $2"
        );
        self.page_rows(SQL.into(), vec![after.into(), OwnedArg::from(limit)])
            .await
    }

    /// Every identity, keyed by employee id. For tests and benchmarks only:
    /// services walk the people a page at a time (`identities_page`).
    pub async fn all_identities(&self) -> Result<HashMap<String, Identity>, StoreError> {
        let sql = concat!("SELECT ", identity_columns!(), " FROM identities");
        let rows = sqlx::query(sql).fetch_all(self.reader()).await?;
        rows.iter()
            .map(|r| identity_from_row(r).map(|i| (i.employee_id.clone(), i)))
            .collect()
    }

    /// Active or suspended identities whose end date is on or before
    /// `day`. With `day` the UTC date of now this includes everyone whose
    /// last day is over in any zone (and some whose day is not over yet in
    /// theirs: the caller checks the exact instant).
    pub async fn identities_past_end_date(
        &self,
        day: chrono::NaiveDate,
        after: &str,
        limit: i64,
    ) -> Result<Vec<Identity>, StoreError> {
        macro_rules! ending {
            ($from:literal) => {
                concat!(
                    "SELECT ",
                    identity_columns!(),
                    $from,
                    " WHERE status IN ('active', 'suspended') AND end_date IS NOT NULL \
                     AND end_date <= $1 AND employee_id > $2 ORDER BY employee_id LIMIT $3"
                )
            };
        }
        // The partial index identities_ending holds just these people;
        // SQLite (without statistics) has to be told to use it.
        let sql = match self.backend() {
            crate::Backend::Sqlite => ending!(" FROM identities INDEXED BY identities_ending"),
            crate::Backend::Postgres => ending!(" FROM identities"),
        };
        let rows = sqlx::query(sql)
            .bind(day.to_string())
            .bind(after)
            .bind(limit)
            .fetch_all(self.reader())
            .await?;
        rows.iter().map(identity_from_row).collect()
    }

    /// The employee id of the one identity with `email` (case-insensitive);
    /// `None` when there is none or more than one.
    pub async fn identity_id_by_email(&self, email: &str) -> Result<Option<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT employee_id FROM identities WHERE lower(email) = lower($1) LIMIT 2",
        )
        .bind(email)
        .fetch_all(self.reader())
        .await?;
        Ok(match rows.as_slice() {
            [one] => Some(one.try_get("employee_id")?),
            _ => None,
        })
    }

    /// Counts identities in `status`.
    pub async fn count_identities(&self, status: Status) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM identities WHERE status = $1")
            .bind(status.as_str())
            .fetch_one(self.reader())
            .await?;
        Ok(row.try_get("n")?)
    }
}

impl WriteTx {
    /// Reads an identity, locking it until commit on PostgreSQL.
    pub async fn get_identity(
        &mut self,
        employee_id: &str,
    ) -> Result<Option<Identity>, StoreError> {
        let sql = match self.backend {
            crate::Backend::Postgres => select_identity!(" FOR UPDATE"),
            crate::Backend::Sqlite => select_identity!(""),
        };
        fetch_identity(&mut *self.tx, sql, employee_id).await
    }

    /// Inserts or replaces an identity.
    pub async fn put_identity(&mut self, i: &Identity) -> Result<(), StoreError> {
        self.put_identities(std::slice::from_ref(i)).await
    }
}

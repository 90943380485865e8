//! Access review campaigns and their items. The columns hold what is
//! queried and changed (state, reviewer, version); the JSON body holds the
//! rest (context, recommendation, decision).

use crate::bulk::{list, ph, values};
use crate::convert::{ReadRow, get, json, micros, opt_time, time, to_json};
use crate::grants::grant_from_row;
use crate::{Fast, Store, StoreError, WriteTx};
use chrono::{DateTime, Utc};
use idgov_domain::Classification;
use idgov_domain::grant::Grant;
use idgov_domain::review::{Campaign, ItemState, ReviewItem};
use sqlx::AssertSqlSafe;
use sqlx::any::AnyRow;
use std::collections::HashMap;

fn campaign_from_row(row: &AnyRow) -> Result<Campaign, StoreError> {
    let mut c: Campaign = json(row, "body")?;
    c.state = crate::convert::parsed(row, "state")?;
    c.closed_at = opt_time(get(row, "closed_at")?)?;
    Ok(c)
}

/// What an item's JSON body holds: its context and decision, without what
/// the columns already hold, and without empty fields. (A body written
/// whole, before the columns were left out of it, reads the same: its
/// extra fields are ignored.) A million items are a million bodies: every
/// byte left out is a byte less to write, log and read.
#[derive(serde::Serialize)]
struct BodyOut<'a> {
    source: idgov_domain::grant::SourceKind,
    #[serde(skip_serializing_if = "str::is_empty")]
    source_ref: &'a str,
    granted_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    approvers: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    last_decision: Option<ItemState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_reviewed_at: Option<DateTime<Utc>>,
    peers_holding: i64,
    peers_total: i64,
    recommendation: idgov_domain::review::Recommendation,
    reason: &'a str,
    strategy: idgov_domain::policy::ReviewerStrategy,
    stage: idgov_domain::review::Stage,
    #[serde(skip_serializing_if = "str::is_empty")]
    note: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    decided_by: Option<&'a str>,
    #[serde(skip_serializing_if = "str::is_empty")]
    justification: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_stage_by: Option<&'a str>,
}

#[derive(serde::Deserialize)]
struct BodyIn {
    source: idgov_domain::grant::SourceKind,
    #[serde(default)]
    source_ref: String,
    granted_at: DateTime<Utc>,
    #[serde(default)]
    approvers: Vec<String>,
    #[serde(default)]
    last_decision: Option<ItemState>,
    #[serde(default)]
    last_reviewed_at: Option<DateTime<Utc>>,
    peers_holding: i64,
    peers_total: i64,
    recommendation: idgov_domain::review::Recommendation,
    #[serde(default)]
    reason: String,
    strategy: idgov_domain::policy::ReviewerStrategy,
    stage: idgov_domain::review::Stage,
    #[serde(default)]
    note: String,
    #[serde(default)]
    decided_by: Option<String>,
    #[serde(default)]
    justification: String,
    #[serde(default)]
    first_stage_by: Option<String>,
}

fn item_body(i: &ReviewItem) -> String {
    to_json(&BodyOut {
        source: i.source,
        source_ref: &i.source_ref,
        granted_at: i.granted_at,
        approvers: &i.approvers,
        last_decision: i.last_decision,
        last_reviewed_at: i.last_reviewed_at,
        peers_holding: i.peers_holding,
        peers_total: i.peers_total,
        recommendation: i.recommendation,
        reason: &i.reason,
        strategy: i.strategy,
        stage: i.stage,
        note: &i.note,
        decided_by: i.decided_by.as_deref(),
        justification: &i.justification,
        first_stage_by: i.first_stage_by.as_deref(),
    })
}

fn item_from_row(row: &AnyRow) -> Result<ReviewItem, StoreError> {
    let b: BodyIn = json(row, "body")?;
    let decided_at = opt_time(get(row, "decided_at")?)?;
    // Defaults at the close set the columns only (one statement per page).
    let decided_by = match (b.decided_by, decided_at) {
        (None, Some(_)) => Some(idgov_domain::review::BY_DEFAULT.into()),
        (by, _) => by,
    };
    Ok(ReviewItem {
        id: get(row, "id")?,
        campaign_id: get(row, "campaign_id")?,
        grant_id: get(row, "grant_id")?,
        employee_id: get(row, "employee_id")?,
        entitlement_id: get(row, "entitlement_id")?,
        classification: crate::convert::parsed(row, "classification")?,
        source: b.source,
        source_ref: b.source_ref,
        granted_at: b.granted_at,
        approvers: b.approvers,
        last_decision: b.last_decision,
        last_reviewed_at: b.last_reviewed_at,
        peers_holding: b.peers_holding,
        peers_total: b.peers_total,
        recommendation: b.recommendation,
        reason: b.reason,
        strategy: b.strategy,
        stage: b.stage,
        reviewer: get(row, "reviewer")?,
        note: b.note,
        state: crate::convert::parsed(row, "state")?,
        decided_by,
        decided_at,
        justification: b.justification,
        first_stage_by: b.first_stage_by,
        version: get(row, "version")?,
    })
}

/// Which items to list; set fields combine with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemFilter {
    pub campaign_id: Option<String>,
    /// Assigned to one of these (employee ids or `@security`).
    pub reviewers: Vec<String>,
    pub state: Option<ItemState>,
    pub employee_id: Option<String>,
    /// Leave out the items of campaigns still being generated.
    pub ready_only: bool,
}

/// An active grant in a campaign's scope, with what review needs of its
/// holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopedGrant {
    pub grant: Grant,
    pub classification: Classification,
    pub department: String,
    pub title: String,
    pub manager_id: Option<String>,
}

/// Counts of one reviewer's items.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReviewerCounts {
    pub reviewer: String,
    pub by_state: HashMap<String, i64>,
}

const ITEM_COLUMNS: &str = "id, campaign_id, grant_id, employee_id, entitlement_id, classification, state, \
     reviewer, version, decided_at, body";

impl Store {
    pub async fn get_campaign(&self, id: &str) -> Result<Option<Campaign>, StoreError> {
        let row = sqlx::query("SELECT state, closed_at, body FROM campaigns WHERE id = $1")
            .bind(id)
            .fetch_optional(self.reader())
            .await?;
        row.as_ref().map(campaign_from_row).transpose()
    }

    /// Campaigns, newest first, before the id `before` ("" for the first page).
    pub async fn list_campaigns(
        &self,
        open_only: bool,
        before: &str,
        limit: i64,
    ) -> Result<Vec<Campaign>, StoreError> {
        let rows = sqlx::query(
            "SELECT state, closed_at, body FROM campaigns WHERE ($1 = '' OR id < $1) \
             AND ($2 = 0 OR state <> 'closed') ORDER BY id DESC LIMIT $3",
        )
        .bind(before)
        .bind(i64::from(open_only))
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(campaign_from_row).collect()
    }

    /// When a campaign of `definition_id` last started.
    pub async fn last_campaign_start(
        &self,
        definition_id: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let row = sqlx::query(
            "SELECT MAX(started_at) AS t FROM campaigns WHERE definition_id = $1 AND mover = 0",
        )
        .bind(definition_id)
        .fetch_one(self.reader())
        .await?;
        opt_time(get(&row, "t")?)
    }

    /// When the scheduler first saw `definition_id` (recorded now if never).
    pub async fn definition_first_seen(
        &self,
        definition_id: &str,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, StoreError> {
        sqlx::query(
            "INSERT INTO campaign_schedule (definition_id, first_seen_at) VALUES ($1, $2) \
             ON CONFLICT (definition_id) DO NOTHING",
        )
        .bind(definition_id)
        .bind(micros(now))
        .execute(&self.write)
        .await?;
        let row =
            sqlx::query("SELECT first_seen_at FROM campaign_schedule WHERE definition_id = $1")
                .bind(definition_id)
                .fetch_one(&self.write)
                .await?;
        time(get(&row, "first_seen_at")?)
    }

    /// The open campaign of `definition_id`, if any.
    pub async fn open_campaign_of(
        &self,
        definition_id: &str,
    ) -> Result<Option<Campaign>, StoreError> {
        let row = sqlx::query(
            "SELECT state, closed_at, body FROM campaigns WHERE definition_id = $1 AND state <> 'closed' \
             AND mover = 0 ORDER BY started_at DESC LIMIT 1",
        )
        .bind(definition_id)
        .fetch_optional(self.reader())
        .await?;
        row.as_ref().map(campaign_from_row).transpose()
    }

    pub async fn get_item(&self, id: &str) -> Result<Option<ReviewItem>, StoreError> {
        let sql = format!("SELECT {ITEM_COLUMNS} FROM review_items WHERE id = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.reader())
            .await?;
        row.as_ref().map(item_from_row).transpose()
    }

    /// Items matching `filter` after the id `after`, in id order.
    pub async fn list_items(
        &self,
        filter: &ItemFilter,
        after: &str,
        limit: i64,
    ) -> Result<Vec<ReviewItem>, StoreError> {
        let mut sql = format!("SELECT {ITEM_COLUMNS} FROM review_items WHERE id > $1");
        let mut binds: Vec<String> = vec![after.to_string()];
        let mut add = |sql: &mut String, clause: String, vals: Vec<String>| {
            let mut c = clause;
            for v in vals {
                binds.push(v);
                c = c.replacen("{}", &format!("${}", binds.len()), 1);
            }
            sql.push_str(" AND ");
            sql.push_str(&c);
        };
        if !filter.reviewers.is_empty() {
            let marks = vec!["{}"; filter.reviewers.len()].join(", ");
            add(
                &mut sql,
                format!("reviewer IN ({marks})"),
                filter.reviewers.clone(),
            );
        }
        if let Some(c) = &filter.campaign_id {
            add(&mut sql, "campaign_id = {}".into(), vec![c.clone()]);
        }
        if let Some(s) = filter.state {
            add(&mut sql, "state = {}".into(), vec![s.as_str().to_string()]);
        }
        if let Some(e) = &filter.employee_id {
            add(&mut sql, "employee_id = {}".into(), vec![e.clone()]);
        }
        if filter.ready_only {
            sql.push_str(
                " AND campaign_id NOT IN (SELECT id FROM campaigns WHERE state = 'starting')",
            );
        }
        sql.push_str(&format!(" ORDER BY id LIMIT ${}", binds.len() + 1));
        let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(false);
        for v in binds {
            q = q.bind(v);
        }
        let rows = q.bind(limit).fetch_all(self.reader()).await?;
        rows.iter().map(item_from_row).collect()
    }

    /// Items of a campaign per reviewer and state.
    pub async fn campaign_counts(
        &self,
        campaign_id: &str,
    ) -> Result<Vec<ReviewerCounts>, StoreError> {
        let rows = sqlx::query(
            "SELECT reviewer, state, COUNT(*) AS n FROM review_items WHERE campaign_id = $1 \
             GROUP BY reviewer, state ORDER BY reviewer",
        )
        .bind(campaign_id)
        .fetch_all(self.reader())
        .await?;
        let mut out: Vec<ReviewerCounts> = Vec::new();
        for r in &rows {
            let reviewer: String = get(r, "reviewer")?;
            let state: String = get(r, "state")?;
            let n: i64 = get(r, "n")?;
            match out.last_mut() {
                Some(c) if c.reviewer == reviewer => {
                    c.by_state.insert(state, n);
                }
                _ => out.push(ReviewerCounts {
                    reviewer,
                    by_state: HashMap::from([(state, n)]),
                }),
            }
        }
        Ok(out)
    }

    /// Every decided item of a campaign, a page at a time (for reports and
    /// evidence).
    pub async fn decided_items(
        &self,
        campaign_id: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<ReviewItem>, StoreError> {
        let sql = format!(
            "SELECT {ITEM_COLUMNS} FROM review_items WHERE campaign_id = $1 AND id > $2 \
             ORDER BY id LIMIT $3"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(campaign_id)
            .bind(after)
            .bind(limit)
            .fetch_all(self.reader())
            .await?;
        rows.iter().map(item_from_row).collect()
    }
}

impl Store {
    /// Records that these items' context was shown to their reviewer now
    /// (the first time counts).
    pub async fn mark_items_shown(
        &self,
        ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        for chunk in ids.chunks(500) {
            let params: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!(
                "UPDATE review_items SET shown_at = $1 WHERE shown_at IS NULL AND id IN ({})",
                params.join(", ")
            );
            let q =
                crate::bulk::bind_each(sqlx::query(AssertSqlSafe(sql)).bind(micros(now)), chunk);
            q.execute(self.writer()).await?;
        }
        Ok(())
    }

    /// Review items waiting for a decision in open campaigns.
    pub async fn count_open_review_items(&self) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM review_items i JOIN campaigns c ON c.id = i.campaign_id \
             WHERE c.state = 'open' AND i.state = 'open'",
        )
        .fetch_one(self.reader())
        .await?;
        get(&row, "n")
    }

    /// Of the items with ids in `(after, upto]`, those decided (certified
    /// or revoked) whose context was never shown to the reviewer before the
    /// decision: decided through the API, or without the web page ever
    /// displaying them.
    pub async fn decided_unopened(
        &self,
        campaign_id: &str,
        after: &str,
        upto: &str,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM review_items WHERE campaign_id = $1 AND id > $2 AND id <= $3 \
             AND state IN ('certified', 'revoked') \
             AND (shown_at IS NULL OR shown_at > decided_at)",
        )
        .bind(campaign_id)
        .bind(after)
        .bind(upto)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(|r| get(r, "id")).collect()
    }
}

impl WriteTx {
    pub async fn insert_campaign(&mut self, c: &Campaign) -> Result<bool, StoreError> {
        let sql = format!(
            "INSERT INTO campaigns (id, definition_id, state, started_at, due_at, closed_at, mover, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8){}",
            " ON CONFLICT (id) DO NOTHING"
        );
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(&c.id)
            .bind(&c.definition_id)
            .bind(c.state.as_str())
            .bind(micros(c.started_at))
            .bind(micros(c.due_at))
            .bind(c.closed_at.map(micros))
            .bind(i64::from(c.mover))
            .bind(to_json(c))
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn update_campaign(&mut self, c: &Campaign) -> Result<(), StoreError> {
        sqlx::query("UPDATE campaigns SET state = $1, closed_at = $2, body = $3 WHERE id = $4")
            .bind(c.state.as_str())
            .bind(c.closed_at.map(micros))
            .bind(to_json(c))
            .bind(&c.id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// A campaign, locked on PostgreSQL until commit.
    pub async fn campaign_for_update(&mut self, id: &str) -> Result<Option<Campaign>, StoreError> {
        let sql = format!(
            "SELECT state, closed_at, body FROM campaigns WHERE id = $1{}",
            self.backend.for_update()
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(campaign_from_row).transpose()
    }

    /// Open, starting and closing campaigns (the scheduler's work list).
    pub async fn open_campaigns(&mut self) -> Result<Vec<Campaign>, StoreError> {
        let rows = sqlx::query(
            "SELECT state, closed_at, body FROM campaigns WHERE state IN ('open', 'starting', 'closing') \
             ORDER BY due_at LIMIT 1000",
        )
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(campaign_from_row).collect()
    }

    pub async fn insert_items(&mut self, items: &[ReviewItem]) -> Result<(), StoreError> {
        for chunk in items.chunks(200) {
            let sql = format!(
                "INSERT INTO review_items (id, campaign_id, grant_id, employee_id, entitlement_id, classification, \
                 reviewer, state, decided_at, version, body) VALUES {}",
                values(self.backend, chunk.len(), 11)
            );
            // Full chunks share one text: prepared once per connection.
            let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(chunk.len() == 200);
            for i in chunk {
                q = q
                    .bind(i.id.clone())
                    .bind(i.campaign_id.clone())
                    .bind(i.grant_id.clone())
                    .bind(i.employee_id.clone())
                    .bind(i.entitlement_id.clone())
                    .bind(i.classification.as_str())
                    .bind(i.reviewer.clone())
                    .bind(i.state.as_str())
                    .bind(i.decided_at.map(micros))
                    .bind(i.version)
                    .bind(item_body(i));
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// Gives open items `state` at the close (columns only; the body keeps
    /// the context). Returns how many changed.
    pub async fn default_items(
        &mut self,
        ids: &[String],
        state: ItemState,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut n = 0;
        for chunk in ids.chunks(500) {
            let sql = format!(
                "UPDATE review_items SET state = {}, decided_at = {}, version = version + 1 \
                 WHERE state = 'open' AND id IN ({})",
                crate::bulk::ph(self.backend, 1),
                crate::bulk::ph(self.backend, 2),
                list(self.backend, chunk.len(), 3)
            );
            let q = crate::bulk::bind_each(
                sqlx::query(AssertSqlSafe(sql))
                    .persistent(chunk.len() == 500)
                    .bind(state.as_str())
                    .bind(micros(now)),
                chunk.iter().cloned(),
            );
            n += q.execute(&mut *self.tx).await?.rows_affected();
        }
        Ok(n)
    }

    /// An item, locked on PostgreSQL until commit.
    pub async fn item_for_update(&mut self, id: &str) -> Result<Option<ReviewItem>, StoreError> {
        let sql = format!(
            "SELECT {ITEM_COLUMNS} FROM review_items WHERE id = $1{}",
            self.backend.for_update()
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(item_from_row).transpose()
    }

    /// Writes `i` back if nobody changed it since it was read; bumps the
    /// version. False: it changed meanwhile (the other decision stands).
    pub async fn update_item(&mut self, i: &mut ReviewItem) -> Result<bool, StoreError> {
        let read = i.version;
        i.version += 1;
        let done = sqlx::query(
            "UPDATE review_items SET state = $1, reviewer = $2, decided_at = $3, version = $4, body = $5 \
             WHERE id = $6 AND version = $7",
        )
        .bind(i.state.as_str())
        .bind(&i.reviewer)
        .bind(i.decided_at.map(micros))
        .bind(i.version)
        .bind(item_body(i))
        .bind(&i.id)
        .bind(read)
        .execute(&mut *self.tx)
        .await?;
        if done.rows_affected() != 1 {
            i.version = read;
            return Ok(false);
        }
        Ok(true)
    }

    /// A page of a campaign's open items after `after`.
    pub async fn open_items(
        &mut self,
        campaign_id: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<ReviewItem>, StoreError> {
        let sql = format!(
            "SELECT {ITEM_COLUMNS} FROM review_items WHERE campaign_id = $1 AND state = 'open' AND id > $2 \
             ORDER BY id LIMIT $3"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(campaign_id)
            .bind(after)
            .bind(limit)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(item_from_row).collect()
    }

    /// On PostgreSQL, waits for the page a campaign generation is writing
    /// and keeps the next one from starting until this transaction ends:
    /// a share lock on every campaign still `starting` (a generation step
    /// holds its campaign's row for update). A leaver or a revocation calls
    /// it before it reads the open items it changes, so it sees every page
    /// written before it, and every page after it sees its change (the
    /// audit head moved, and the page is planned again). Without it a page
    /// committed between the two could hand items to someone who had just
    /// left, or review a grant just revoked. SQLite's single writer
    /// already keeps them apart.
    pub async fn hold_generations(&mut self) -> Result<(), StoreError> {
        if self.backend != crate::Backend::Postgres {
            return Ok(());
        }
        sqlx::query("SELECT id FROM campaigns WHERE state = 'starting' ORDER BY id FOR SHARE")
            .fetch_all(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// People who left (terminated) and still review open items of
    /// `campaign_id`, with their managers: one probe of the reviewer index
    /// per person who left, not a scan of the campaign's items.
    pub async fn departed_reviewers(
        &mut self,
        campaign_id: &str,
    ) -> Result<Vec<(String, Option<String>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT i.employee_id, i.manager_id FROM identities i WHERE i.status = 'terminated' \
             AND EXISTS (SELECT 1 FROM review_items r WHERE r.reviewer = i.employee_id \
             AND r.campaign_id = $1 AND r.state = 'open') ORDER BY i.employee_id",
        )
        .bind(campaign_id)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| Ok((get(r, "employee_id")?, get(r, "manager_id")?)))
            .collect()
    }

    /// Open items assigned to `reviewer`, in every open campaign.
    pub async fn open_items_of_reviewer(
        &mut self,
        reviewer: &str,
        limit: i64,
    ) -> Result<Vec<ReviewItem>, StoreError> {
        let sql = format!(
            "SELECT {ITEM_COLUMNS} FROM review_items WHERE reviewer = $1 AND state = 'open' ORDER BY id LIMIT $2"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(reviewer)
            .bind(limit)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(item_from_row).collect()
    }

    /// Closes as `superseded` the open items whose grant has ended; returns
    /// them (id, grant id, employee id) for their audit events.
    pub async fn supersede_ended(
        &mut self,
        campaign_id: &str,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows = sqlx::query(
            "UPDATE review_items SET state = 'superseded', version = version + 1 \
             WHERE campaign_id = $1 AND state = 'open' AND EXISTS (SELECT 1 FROM grants g \
             WHERE g.id = review_items.grant_id AND g.revoked_at IS NOT NULL) RETURNING id, grant_id, employee_id",
        )
        .bind(campaign_id)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| Ok((get(r, "id")?, get(r, "grant_id")?, get(r, "employee_id")?)))
            .collect()
    }

    /// Closes as `superseded` the open items of `grant_ids` (grants revoked
    /// in this transaction); returns them (id, campaign, grant, employee).
    pub async fn supersede_grants(
        &mut self,
        grant_ids: &[String],
    ) -> Result<Vec<(String, String, String, String)>, StoreError> {
        let mut out = Vec::new();
        for chunk in grant_ids.chunks(500) {
            let sql = format!(
                "UPDATE review_items SET state = 'superseded', version = version + 1 \
                 WHERE state = 'open' AND grant_id IN ({}) RETURNING id, campaign_id, grant_id, employee_id",
                list(self.backend, chunk.len(), 1)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(false);
            for g in chunk {
                q = q.bind(g.clone());
            }
            for r in &q.fetch_all(&mut *self.tx).await? {
                out.push((
                    get(r, "id")?,
                    get(r, "campaign_id")?,
                    get(r, "grant_id")?,
                    get(r, "employee_id")?,
                ));
            }
        }
        Ok(out)
    }

    /// Active grants in scope (of `entitlements`) of the next `people` active
    /// (or suspended) people after the employee id `after`, with what
    /// review needs of their holders; and the last person read (None: no
    /// more people). Paged by person so that both backends walk an index.
    pub async fn grants_in_scope(
        &mut self,
        entitlements: &[String],
        after: &str,
        people: i64,
    ) -> Result<(Vec<ScopedGrant>, Option<String>), StoreError> {
        let rows = sqlx::query(SCOPE_PEOPLE)
            .bind(after)
            .bind(people)
            .fetch_all(&mut *self.tx)
            .await?;
        let holders = rows
            .iter()
            .map(holder_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let Some((sql, ids)) = scope_grants_sql(self.backend, after, &holders, entitlements) else {
            return Ok((vec![], holders.last().map(|h| h.0.clone())));
        };
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for id in ids.iter().chain(scope_binds(entitlements)) {
            q = q.bind(id.clone());
        }
        let rows = q.fetch_all(&mut *self.tx).await?;
        scoped(holders, rows.iter().map(grant_from_row))
    }

    /// Active grant ids among `ids` (a page read outside this transaction,
    /// checked before it is written).
    pub async fn active_grant_ids(
        &mut self,
        ids: &[String],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut out = std::collections::HashSet::new();
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT id FROM grants WHERE {} AND id IN ({})",
                crate::bulk::STILL_ACTIVE,
                list(self.backend, chunk.len(), 1)
            );
            let q = crate::bulk::by_ids(sql, chunk);
            for r in q.fetch_all(&mut *self.tx).await? {
                out.insert(get::<String>(&r, "id")?);
            }
        }
        Ok(out)
    }

    /// Active people per (department, title), and holders of each of
    /// `entitlements` per (department, title, entitlement): the peer signal.
    #[allow(clippy::type_complexity)]
    pub async fn peer_counts(
        &mut self,
        entitlements: &[String],
    ) -> Result<
        (
            HashMap<(String, String), i64>,
            HashMap<(String, String, String), i64>,
        ),
        StoreError,
    > {
        let mut people = HashMap::new();
        let rows = sqlx::query(
            "SELECT department, title, COUNT(*) AS n FROM identities WHERE status = 'active' \
             GROUP BY department, title",
        )
        .fetch_all(&mut *self.tx)
        .await?;
        for r in &rows {
            people.insert((get(r, "department")?, get(r, "title")?), get(r, "n")?);
        }
        let mut holders = HashMap::new();
        if entitlements.is_empty() {
            return Ok((people, holders));
        }
        let sql = format!(
            "SELECT i.department AS department, i.title AS title, g.entitlement_id AS entitlement_id, \
             COUNT(*) AS n FROM grants g JOIN identities i ON i.employee_id = g.employee_id \
             WHERE g.revoked_at IS NULL AND i.status = 'active' AND g.entitlement_id IN ({}) \
             GROUP BY i.department, i.title, g.entitlement_id",
            list(self.backend, entitlements.len(), 1)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(false);
        for e in entitlements {
            q = q.bind(e.clone());
        }
        for r in &q.fetch_all(&mut *self.tx).await? {
            holders.insert(
                (
                    get(r, "department")?,
                    get(r, "title")?,
                    get(r, "entitlement_id")?,
                ),
                get(r, "n")?,
            );
        }
        Ok((people, holders))
    }

    /// True once any review item was decided. Ordered by `decided_at` so
    /// that both backends read the partial index of decided items (one
    /// entry at most): PostgreSQL, with statistics from before the
    /// campaign, planned the plain form as a scan of every item, once per
    /// page of a generation, which grew with the square of its size.
    pub async fn any_decided_item(&mut self) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM (SELECT decided_at FROM review_items WHERE decided_at IS NOT NULL \
             ORDER BY decided_at LIMIT 1) x",
        )
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(get::<i64>(&row, "n")? > 0)
    }

    /// The last decision on each of `grant_ids` in earlier campaigns.
    pub async fn last_reviews(
        &mut self,
        grant_ids: &[String],
    ) -> Result<HashMap<String, (ItemState, DateTime<Utc>)>, StoreError> {
        let mut out = HashMap::new();
        for chunk in grant_ids.chunks(500) {
            let sql = format!(
                "SELECT grant_id, state, decided_at FROM review_items WHERE decided_at IS NOT NULL \
                 AND grant_id IN ({}) ORDER BY decided_at",
                list(self.backend, chunk.len(), 1)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(false);
            for g in chunk {
                q = q.bind(g.clone());
            }
            for r in &q.fetch_all(&mut *self.tx).await? {
                let state: ItemState = crate::convert::parsed(r, "state")?;
                let at = time(get(r, "decided_at")?)?;
                out.insert(get::<String>(r, "grant_id")?, (state, at));
            }
        }
        Ok(out)
    }

    /// The grants marked for a mover review that no open item covers yet.
    pub async fn mover_review_grants(
        &mut self,
        limit: i64,
    ) -> Result<Vec<ScopedGrant>, StoreError> {
        let cols = grant_columns!()
            .split(", ")
            .map(|c| format!("g.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {cols}, i.department AS department, i.title AS title, i.manager_id AS manager_id \
             FROM grants g JOIN identities i ON i.employee_id = g.employee_id \
             WHERE g.revoked_at IS NULL AND g.review_pending <> 0 AND i.status IN ('active', 'suspended') \
             AND NOT EXISTS (SELECT 1 FROM review_items r WHERE r.grant_id = g.id AND r.state = 'open') \
             ORDER BY i.manager_id, g.id LIMIT $1"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter()
            .map(|r| {
                let (grant, classification) = grant_from_row(r)?;
                Ok(ScopedGrant {
                    grant,
                    classification,
                    department: get(r, "department")?,
                    title: get(r, "title")?,
                    manager_id: get(r, "manager_id")?,
                })
            })
            .collect()
    }

    /// People by id, read without locking (review routing needs no locks).
    pub async fn people_by_ids(
        &mut self,
        ids: &[String],
    ) -> Result<Vec<idgov_domain::identity::Identity>, StoreError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            let sql = format!(
                concat!(
                    "SELECT ",
                    identity_columns!(),
                    " FROM identities WHERE employee_id IN ({})"
                ),
                list(self.backend, chunk.len(), 1)
            );
            let q = crate::bulk::by_ids(sql, chunk);
            for row in q.fetch_all(&mut *self.tx).await? {
                out.push(crate::identities::identity_from_row(&row)?);
            }
        }
        Ok(out)
    }

    /// Clears the review mark of grants a review decided.
    pub async fn clear_review_pending(&mut self, grant_ids: &[String]) -> Result<(), StoreError> {
        for chunk in grant_ids.chunks(500) {
            let sql = format!(
                "UPDATE grants SET review_pending = 0 WHERE id IN ({})",
                list(self.backend, chunk.len(), 1)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(false);
            for g in chunk {
                q = q.bind(g.clone());
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }
}

/// The next page of people who may hold access, in employee id order:
/// one ordered, limited walk of the status index per status, merged. (As
/// `status IN (…)`, PostgreSQL read every remaining person of both statuses
/// and sorted them for each page: generation grew with the square of the
/// organisation.)
const SCOPE_PEOPLE: &str = "SELECT employee_id, department, title, manager_id FROM ( \
     SELECT * FROM (SELECT employee_id, department, title, manager_id FROM identities \
       WHERE status = 'active' AND employee_id > $1 ORDER BY employee_id LIMIT $2) a \
     UNION ALL \
     SELECT * FROM (SELECT employee_id, department, title, manager_id FROM identities \
       WHERE status = 'suspended' AND employee_id > $1 ORDER BY employee_id LIMIT $2) s \
     ) p ORDER BY employee_id LIMIT $2";

/// (employee id, department, title, manager) of a person in scope.
type Holder = (String, String, String, Option<String>);

fn holder_from_row(r: &impl ReadRow) -> Result<Holder, StoreError> {
    Ok((
        r.col("employee_id")?,
        r.col("department")?,
        r.col("title")?,
        r.col("manager_id")?,
    ))
}

/// The grants query of a page of holders (people after `after`, in
/// employee id order), and what it binds first (the entitlements follow,
/// see [`scope_binds`]); None when nothing can match.
///
/// The page is read as the range of employee ids it spans, not as an IN
/// list of them: one range scan of the active grants' index on both
/// backends (PostgreSQL planned an IN list of 500 ids as a scan of every
/// grant, so generation grew with the square of the organisation). The
/// range holds nobody else's active grants but those of people out of
/// scope (not active, so holding none), and [`scoped`] keeps only the
/// holders'.
fn scope_grants_sql(
    backend: crate::Backend,
    after: &str,
    holders: &[Holder],
    entitlements: &[String],
) -> Option<(String, Vec<String>)> {
    let last = holders.last()?;
    if entitlements.is_empty() {
        return None;
    }
    let sql = format!(
        concat!(
            "SELECT ",
            grant_columns!(),
            " FROM grants WHERE revoked_at IS NULL AND employee_id > {} AND employee_id <= {}{} \
             ORDER BY employee_id, id"
        ),
        ph(backend, 1),
        ph(backend, 2),
        if wide(entitlements) {
            String::new()
        } else {
            format!(
                " AND entitlement_id IN ({})",
                list(backend, entitlements.len(), 3)
            )
        }
    );
    Some((sql, vec![after.to_string(), last.0.clone()]))
}

/// A wide scope reads every active grant of the page (the caller filters);
/// an IN list of thousands costs more than it skips.
fn wide(entitlements: &[String]) -> bool {
    entitlements.len() > 200
}

/// The entitlements bound after the holders' ids (none for a wide scope).
fn scope_binds(entitlements: &[String]) -> impl Iterator<Item = &String> {
    entitlements.iter().take(if wide(entitlements) {
        0
    } else {
        entitlements.len()
    })
}

/// Puts each grant read beside what review needs of its holder.
fn scoped(
    holders: Vec<Holder>,
    grants: impl Iterator<Item = Result<(Grant, Classification), StoreError>>,
) -> Result<(Vec<ScopedGrant>, Option<String>), StoreError> {
    let last = holders.last().map(|h| h.0.clone());
    let by_id: HashMap<String, Holder> = holders.into_iter().map(|h| (h.0.clone(), h)).collect();
    let mut out = Vec::new();
    for g in grants {
        let (grant, classification) = g?;
        let Some((_, department, title, manager_id)) = by_id.get(&grant.employee_id).cloned()
        else {
            continue;
        };
        out.push(ScopedGrant {
            grant,
            classification,
            department,
            title,
            manager_id,
        });
    }
    Ok((out, last))
}

impl Store {
    /// [`WriteTx::grants_in_scope`] outside any transaction, on the native
    /// read path: a page read while the writer writes the page before. What
    /// it returns may have changed by the time it is written; the caller
    /// checks ([`WriteTx::active_grant_ids`]).
    pub async fn grants_in_scope(
        &self,
        entitlements: &[String],
        after: &str,
        people: i64,
    ) -> Result<(Vec<ScopedGrant>, Option<String>), StoreError> {
        if let Fast::Lite(l) = self.fast() {
            let (ents, after) = (entitlements.to_vec(), after.to_string());
            return l
                .run_blocking(move |c| {
                    let holders = crate::lite::all(c, SCOPE_PEOPLE, &[&after, &people], |r| {
                        holder_from_row(r)
                    })?;
                    let Some((sql, ids)) =
                        scope_grants_sql(crate::Backend::Sqlite, &after, &holders, &ents)
                    else {
                        return Ok((vec![], holders.last().map(|h| h.0.clone())));
                    };
                    let binds: Vec<&dyn rusqlite::ToSql> = ids
                        .iter()
                        .chain(scope_binds(&ents))
                        .map(|s| s as &dyn rusqlite::ToSql)
                        .collect();
                    let grants = crate::lite::all(c, &sql, &binds, |r| grant_from_row(r))?;
                    scoped(holders, grants.into_iter().map(Ok))
                })
                .await;
        }
        let mut tx = self.begin_read().await?;
        let out = tx.grants_in_scope(entitlements, after, people).await;
        tx.rollback().await?;
        out
    }
}

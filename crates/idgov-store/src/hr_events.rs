//! Recorded HR events (the idempotency record and the schedule) and roster
//! sync receipts.

use crate::convert::{get, json, micros, opt_time, parsed, time, to_json};
use crate::{Store, StoreError, WriteTx};
use chrono::{DateTime, Utc};
use idgov_domain::history::RosterMark;
use idgov_domain::hr::{EventState, HrEvent};
use sqlx::AssertSqlSafe;
use sqlx::any::AnyRow;
use std::collections::HashMap;

/// An HR event as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    pub arrival: i64,
    pub event: HrEvent,
    pub state: EventState,
    pub received_at: DateTime<Utc>,
    pub applied_at: Option<DateTime<Utc>>,
    pub detail: String,
    pub actor: String,
}

/// Filters of [`Store::list_hr_events`]; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub state: Option<EventState>,
    pub employee_id: String,
}

/// The receipt of a roster sync, for idempotent re-sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSync {
    pub outcome: String,
    pub held_change_id: Option<String>,
    pub response: serde_json::Value,
}

pub(crate) fn event_from_row(row: &AnyRow) -> Result<RecordedEvent, StoreError> {
    Ok(RecordedEvent {
        arrival: get(row, "arrival")?,
        event: json(row, "payload")?,
        state: parsed(row, "state")?,
        received_at: time(get(row, "received_at")?)?,
        applied_at: opt_time(get(row, "applied_at")?)?,
        detail: get(row, "detail")?,
        actor: get(row, "actor")?,
    })
}

macro_rules! select_events {
    ($where:literal) => {
        concat!(
            "SELECT arrival, payload, state, received_at, applied_at, detail, actor FROM hr_events ",
            $where
        )
    };
}

impl Store {
    pub async fn get_hr_event(
        &self,
        source: &str,
        event_id: &str,
    ) -> Result<Option<RecordedEvent>, StoreError> {
        let row = sqlx::query(select_events!("WHERE source = $1 AND event_id = $2"))
            .bind(source)
            .bind(event_id)
            .fetch_optional(self.reader())
            .await?;
        row.as_ref().map(event_from_row).transpose()
    }

    /// Events in arrival order, after arrival number `after`.
    pub async fn list_hr_events(
        &self,
        filter: &EventFilter,
        after: i64,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(select_events!(
            "WHERE arrival > $1 AND ($2 = '' OR state = $2) AND ($3 = '' OR employee_id = $3) \
             ORDER BY arrival LIMIT $4"
        ))
        .bind(after)
        .bind(filter.state.map(|s| s.as_str()).unwrap_or(""))
        .bind(&filter.employee_id)
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// The events roster sync `sync_id` of `source` made (their ids are
    /// `roster:{sync_id}:{employee_id}`), in order of event id (so of
    /// employee id), after event id `after`. An id of another sync whose
    /// id only starts alike (`roster:{sync_id}:x:E`) is not one of them:
    /// what follows the prefix must be the event's own employee id.
    ///
    /// On PostgreSQL the ids are compared bytewise (`COLLATE "C"`, served
    /// by the index `hr_events_by_roster_sync`), whatever the database's
    /// collation: under a linguistic one the ids of one prefix need not be
    /// neighbours.
    pub async fn list_roster_sync_events(
        &self,
        source: &str,
        sync_id: &str,
        filter: &EventFilter,
        after: &str,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let prefix = idgov_domain::roster::event_id(sync_id, "");
        // Every id of the sync is longer than the prefix, and below the
        // prefix with its last ':' raised to ';'.
        let below = format!("{}{sync_id};", idgov_domain::roster::EVENT_ID_PREFIX);
        let from = if after.as_bytes() > prefix.as_bytes() {
            after
        } else {
            prefix.as_str()
        };
        let sql = match self.backend {
            crate::Backend::Sqlite => select_events!(
                "WHERE source = $1 AND event_id > $2 AND event_id < $3 \
                 AND employee_id = substr(event_id, $4) \
                 AND ($5 = '' OR state = $5) AND ($6 = '' OR employee_id = $6) \
                 ORDER BY event_id LIMIT $7"
            ),
            crate::Backend::Postgres => select_events!(
                "WHERE source = $1 AND event_id COLLATE \"C\" > $2 AND event_id COLLATE \"C\" < $3 \
                 AND employee_id = substr(event_id, $4) \
                 AND ($5 = '' OR state = $5) AND ($6 = '' OR employee_id = $6) \
                 ORDER BY event_id COLLATE \"C\" LIMIT $7"
            ),
        };
        let rows = sqlx::query(sql)
            .bind(source)
            .bind(from)
            .bind(&below)
            .bind(prefix.chars().count() as i32 + 1)
            .bind(filter.state.map(|s| s.as_str()).unwrap_or(""))
            .bind(&filter.employee_id)
            .bind(limit)
            .fetch_all(self.reader())
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Scheduled events due at `now`, oldest effective time first.
    pub async fn due_events(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(select_events!(
            "WHERE state = 'scheduled' AND effective_at <= $1 ORDER BY effective_at, arrival LIMIT $2"
        ))
        .bind(micros(now))
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// The effective time of the next scheduled event, if any.
    pub async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let row =
            sqlx::query("SELECT MIN(effective_at) AS t FROM hr_events WHERE state = 'scheduled'")
                .fetch_one(self.reader())
                .await?;
        opt_time(get(&row, "t")?)
    }

    pub async fn get_sync(
        &self,
        source: &str,
        sync_id: &str,
    ) -> Result<Option<StoredSync>, StoreError> {
        let row = sqlx::query(
            "SELECT outcome, held_change_id, response FROM roster_syncs WHERE source = $1 AND sync_id = $2",
        )
        .bind(source)
        .bind(sync_id)
        .fetch_optional(self.reader())
        .await?;
        row.map(|r| {
            Ok(StoredSync {
                outcome: get(&r, "outcome")?,
                held_change_id: get(&r, "held_change_id")?,
                response: json(&r, "response")?,
            })
        })
        .transpose()
    }
}

/// Which HR events [`WriteTx::people_with_events_after`] looks at.
#[derive(Debug, Clone, Copy)]
pub enum EventsAfter {
    /// Those that arrived after this place in the arrival order (an index
    /// seek, however long the table).
    Arrival(i64),
    /// Those received or applied at or after this time (a scan).
    Time(DateTime<Utc>),
}

impl Store {
    /// The place of the newest HR event in the arrival order (0 with none).
    pub async fn last_hr_event_arrival(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(arrival), 0) AS a FROM hr_events")
            .fetch_one(self.reader())
            .await?;
        get(&row, "a")
    }
}

impl WriteTx {
    /// The `n` newest roster snapshots applied (by the time they
    /// describe), newest first.
    pub async fn latest_rosters(&mut self, n: i64) -> Result<Vec<RosterMark>, StoreError> {
        let rows = sqlx::query(
            "SELECT source, sync_id, as_of, time_zone FROM roster_snapshots \
             ORDER BY as_of DESC, applied_at DESC LIMIT $1",
        )
        .bind(n)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RosterMark {
                    source: get(r, "source")?,
                    sync_id: get(r, "sync_id")?,
                    as_of: time(get(r, "as_of")?)?,
                    time_zone: get(r, "time_zone")?,
                })
            })
            .collect()
    }

    /// Records that a roster snapshot was applied.
    pub async fn record_roster_snapshot(
        &mut self,
        mark: &RosterMark,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO roster_snapshots (source, sync_id, as_of, time_zone, applied_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (source, sync_id) DO NOTHING",
        )
        .bind(&mark.source)
        .bind(&mark.sync_id)
        .bind(micros(mark.as_of))
        .bind(&mark.time_zone)
        .bind(micros(now))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Every event folded into `employee_id`'s state (applied or
    /// superseded), in arrival order: the history a late event is replayed
    /// with.
    pub async fn folded_events_of(
        &mut self,
        employee_id: &str,
    ) -> Result<Vec<HrEvent>, StoreError> {
        let rows = sqlx::query(select_events!(
            "WHERE employee_id = $1 AND state IN ('applied', 'superseded') ORDER BY arrival"
        ))
        .bind(employee_id)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| event_from_row(r).map(|e| e.event))
            .collect()
    }

    /// The people with an HR event that arrived after `read` (see
    /// [`EventsAfter`]), effective at or before `effective_until`, other
    /// than the events of roster snapshot `sync_id` of `source` itself (by
    /// employee id, each once). A snapshot applied in steps, or held and
    /// released later, asks this at its end: these people changed after it
    /// read them, at a time it speaks for.
    pub async fn people_with_events_after(
        &mut self,
        read: EventsAfter,
        effective_until: DateTime<Utc>,
        source: &str,
        sync_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let own = format!("{}{sync_id}:", idgov_domain::roster::EVENT_ID_PREFIX);
        let (window, bound) = match read {
            EventsAfter::Arrival(a) => ("arrival > $1", a),
            EventsAfter::Time(t) => ("(received_at >= $1 OR applied_at >= $1)", micros(t)),
        };
        // The prefix's length goes into the text as a number (both backends'
        // `substr` take an integer; a bound value would be a bigint on
        // PostgreSQL), the prefix itself is bound.
        let sql = format!(
            "SELECT DISTINCT employee_id FROM hr_events \
             WHERE {window} AND effective_at <= $2 \
             AND NOT (source = $3 AND substr(event_id, 1, {}) = $4) \
             ORDER BY employee_id",
            own.chars().count()
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .persistent(false)
            .bind(bound)
            .bind(micros(effective_until))
            .bind(source)
            .bind(own)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(|r| get(r, "employee_id")).collect()
    }

    /// The events of `employee_id` still scheduled, in arrival order.
    pub async fn scheduled_events_of(
        &mut self,
        employee_id: &str,
    ) -> Result<Vec<HrEvent>, StoreError> {
        let rows = sqlx::query(select_events!(
            "WHERE employee_id = $1 AND state = 'scheduled' ORDER BY arrival"
        ))
        .bind(employee_id)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| event_from_row(r).map(|e| e.event))
            .collect()
    }

    /// Records an event unless its (source, event_id) is already recorded.
    /// Returns whether it was inserted.
    pub async fn insert_hr_event(
        &mut self,
        event: &HrEvent,
        state: EventState,
        detail: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let applied_at = (state == EventState::Applied).then(|| micros(now));
        let r = sqlx::query(
            "INSERT INTO hr_events (source, event_id, kind, employee_id, effective_at, received_at, state, \
             applied_at, detail, fingerprint, payload, actor) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (source, event_id) DO NOTHING",
        )
        .bind(&event.source)
        .bind(&event.event_id)
        .bind(event.kind.as_str())
        .bind(&event.employee_id)
        .bind(micros(event.effective_at))
        .bind(micros(now))
        .bind(state.as_str())
        .bind(applied_at)
        .bind(detail)
        .bind(&event.fingerprint)
        .bind(to_json(event))
        .bind(actor)
        .execute(&mut *self.tx)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Moves a recorded event from `from` to `to`. Returns false when it was
    /// not in `from` (someone else got there first).
    pub async fn transition_hr_event(
        &mut self,
        source: &str,
        event_id: &str,
        from: EventState,
        to: EventState,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let applied_at = (to == EventState::Applied).then(|| micros(now));
        let r = sqlx::query(
            "UPDATE hr_events SET state = $1, detail = $2, applied_at = $3 \
             WHERE source = $4 AND event_id = $5 AND state = $6",
        )
        .bind(to.as_str())
        .bind(detail)
        .bind(applied_at)
        .bind(source)
        .bind(event_id)
        .bind(from.as_str())
        .execute(&mut *self.tx)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn insert_sync(
        &mut self,
        source: &str,
        sync_id: &str,
        sync: &StoredSync,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "INSERT INTO roster_syncs (source, sync_id, received_at, outcome, held_change_id, response) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (source, sync_id) DO NOTHING",
        )
        .bind(source)
        .bind(sync_id)
        .bind(micros(now))
        .bind(&sync.outcome)
        .bind(sync.held_change_id.clone())
        .bind(to_json(&sync.response))
        .execute(&mut *self.tx)
        .await?;
        Ok(r.rows_affected() == 1)
    }
}

/// How many ids one `IN (…)` list of a roster-snapshot query holds.
const SNAPSHOT_CHUNK: usize = 500;

/// The query for when the roster snapshots of `source` among `sync_ids`
/// (at most [`SNAPSHOT_CHUNK`]) describe.
fn snapshot_times_query<'q>(
    backend: crate::Backend,
    source: &'q str,
    sync_ids: &'q [String],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    let sql = format!(
        "SELECT sync_id, as_of FROM roster_snapshots WHERE source = {} AND sync_id IN ({})",
        crate::bulk::ph(backend, 1),
        crate::bulk::list(backend, sync_ids.len(), 2)
    );
    let q = sqlx::query(AssertSqlSafe(sql))
        .persistent(false)
        .bind(source);
    crate::bulk::bind_each(q, sync_ids.iter().map(|id| id.as_str()))
}

fn snapshot_times_from(
    rows: &[AnyRow],
    out: &mut HashMap<String, DateTime<Utc>>,
) -> Result<(), StoreError> {
    for r in rows {
        out.insert(get(r, "sync_id")?, time(get(r, "as_of")?)?);
    }
    Ok(())
}

/// The newest roster snapshot of a source (`$1`).
const NEWEST_SNAPSHOT: &str = "SELECT sync_id, as_of FROM roster_snapshots WHERE source = $1 \
     ORDER BY as_of DESC, sync_id DESC LIMIT 1";

fn newest_from(row: Option<AnyRow>) -> Result<Option<(String, DateTime<Utc>)>, StoreError> {
    row.map(|r| Ok((get(&r, "sync_id")?, time(get(&r, "as_of")?)?)))
        .transpose()
}

impl Store {
    /// [`WriteTx::newest_roster_snapshot`], outside a transaction.
    pub async fn newest_roster_snapshot(
        &self,
        source: &str,
    ) -> Result<Option<(String, DateTime<Utc>)>, StoreError> {
        let row = sqlx::query(NEWEST_SNAPSHOT)
            .bind(source)
            .fetch_optional(self.reader())
            .await?;
        newest_from(row)
    }

    /// The starts roster snapshots of `source` scheduled that are still to
    /// come: (employee id, event id). Read through the index of scheduled
    /// events: as many rows as there are future starters and people due
    /// back, not a row of anyone's history.
    pub async fn scheduled_roster_starts(
        &self,
        source: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT employee_id, event_id FROM hr_events \
             WHERE state = 'scheduled' AND source = $1 AND kind IN ('hire', 'rehire')",
        )
        .bind(source)
        .fetch_all(self.reader())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let event_id: String = get(r, "event_id")?;
            if idgov_domain::roster::is_roster_event_id(&event_id) {
                out.push((get(r, "employee_id")?, event_id));
            }
        }
        Ok(out)
    }

    /// When the roster snapshots of `source` among `sync_ids` that were
    /// applied describe (their `as_of`), by sync id.
    pub async fn roster_snapshot_times(
        &self,
        source: &str,
        sync_ids: &[String],
    ) -> Result<HashMap<String, DateTime<Utc>>, StoreError> {
        let mut out = HashMap::new();
        for chunk in sync_ids.chunks(SNAPSHOT_CHUNK) {
            let q = snapshot_times_query(self.backend, source, chunk);
            snapshot_times_from(&q.fetch_all(self.reader()).await?, &mut out)?;
        }
        Ok(out)
    }
}

impl WriteTx {
    /// [`Store::roster_snapshot_times`], in this transaction.
    pub async fn roster_snapshot_times(
        &mut self,
        source: &str,
        sync_ids: &[String],
    ) -> Result<HashMap<String, DateTime<Utc>>, StoreError> {
        let mut out = HashMap::new();
        for chunk in sync_ids.chunks(SNAPSHOT_CHUNK) {
            let q = snapshot_times_query(self.backend, source, chunk);
            snapshot_times_from(&q.fetch_all(&mut *self.tx).await?, &mut out)?;
        }
        Ok(out)
    }

    /// The newest roster snapshot of `source` applied, by
    /// [`idgov_domain::roster::newer_snapshot`]: its sync id and time.
    pub async fn newest_roster_snapshot(
        &mut self,
        source: &str,
    ) -> Result<Option<(String, DateTime<Utc>)>, StoreError> {
        let row = sqlx::query(NEWEST_SNAPSHOT)
            .bind(source)
            .fetch_optional(&mut *self.tx)
            .await?;
        newest_from(row)
    }
}

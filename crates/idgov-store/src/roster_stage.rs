//! A roster snapshot staged in the store while its sync runs (migration
//! `0018_roster_stage`), so that the sync reads the roster a page at a time
//! beside idgov's own people instead of holding it whole. Scratch rows
//! under the sync's run id: nothing here is audited or kept once the sync
//! ends.

use crate::bulk::{push_ph, values};
use crate::convert::{FromRow, OwnedArg, ReadRow, get, to_json};
use crate::directory_stage::{analyze, drop_stage, insert_rows, open_stage, stale_stages};
use crate::{Store, StoreError, WriteTx};
use chrono::{DateTime, Utc};
use idgov_domain::roster::RosterEntry;

/// A staged entry: its place in the roster (from 0) and the entry.
pub type StagedEntry = (usize, RosterEntry);

const RUNS: &str = "roster_stage_runs";
const ENTRIES: &str = "roster_stage_entries";

impl WriteTx {
    /// Opens the stage of run `run_id`.
    pub async fn open_roster_stage(
        &mut self,
        run_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        open_stage(self, RUNS, run_id, now).await
    }

    /// Stages entries at their places in the roster.
    pub async fn stage_roster_entries(
        &mut self,
        run_id: &str,
        entries: &[StagedEntry],
    ) -> Result<(), StoreError> {
        insert_rows(
            self,
            "roster_stage_entries (run_id, seq, employee_id, manager_given, manager_id, entry)",
            6,
            entries,
            |q, _, (seq, e)| {
                let manager = e.attrs.manager_id.as_ref();
                q.bind(run_id.to_string())
                    .bind(*seq as i64)
                    .bind(e.employee_id.clone())
                    .bind(i64::from(manager.is_some()))
                    .bind(manager.and_then(|m| m.clone()))
                    .bind(to_json(e))
            },
        )
        .await
    }
}

/// A staged entry as read: its place and its JSON, parsed only when
/// wanted ([`parse`]).
struct Body(usize, String);

impl FromRow for Body {
    fn from_row(r: &impl ReadRow) -> Result<Self, StoreError> {
        Ok(Body(place(r.col("seq")?)?, r.col("entry")?))
    }
}

fn parse((at, body): (usize, String)) -> Result<StagedEntry, StoreError> {
    let entry = serde_json::from_str(&body)
        .map_err(|e| StoreError::Corrupt(format!("staged roster entry {at}: {e}")))?;
    Ok((at, entry))
}

/// An entry's place and its manager's.
struct Line(usize, usize);

impl FromRow for Line {
    fn from_row(r: &impl ReadRow) -> Result<Self, StoreError> {
        Ok(Line(place(r.col("seq")?)?, place(r.col("manager_seq")?)?))
    }
}

fn place(seq: i64) -> Result<usize, StoreError> {
    usize::try_from(seq).map_err(|_| StoreError::Corrupt(format!("staged roster place {seq}")))
}

impl Store {
    /// At most `limit` staged entries whose employee id comes after `after`
    /// and, with `last`, not after `last` (the bounds of a page of
    /// identities, compared as identities are ordered), by employee id.
    pub async fn staged_roster_by_id(
        &self,
        run_id: &str,
        after: &str,
        last: Option<&str>,
        limit: i64,
    ) -> Result<Vec<StagedEntry>, StoreError> {
        const BOUNDED: &str = "SELECT seq, entry FROM roster_stage_entries WHERE run_id = $1 \
             AND employee_id > $2 AND employee_id <= $3 ORDER BY employee_id LIMIT $4";
        const OPEN: &str = "SELECT seq, entry FROM roster_stage_entries WHERE run_id = $1 \
             AND employee_id > $2 ORDER BY employee_id LIMIT $3";
        let mut args = vec![run_id.into(), after.into()];
        let sql = match last {
            Some(last) => {
                args.push(last.into());
                BOUNDED
            }
            None => OPEN,
        };
        args.push(OwnedArg::from(limit));
        let rows: Vec<Body> = self.page_rows(sql.into(), args).await?;
        rows.into_iter().map(|Body(at, b)| parse((at, b))).collect()
    }

    /// The staged entries at the places `seqs` (in any order, repeats
    /// allowed), each once, by place (a place with no entry is left out).
    pub async fn staged_roster_at(
        &self,
        run_id: &str,
        seqs: &[usize],
    ) -> Result<Vec<StagedEntry>, StoreError> {
        self.staged_roster_json_at(run_id, seqs)
            .await?
            .into_iter()
            .map(parse)
            .collect()
    }

    /// [`Store::staged_roster_at`] with each entry as it is staged: the
    /// JSON of its `RosterEntry`, unparsed. Places close together (a run
    /// of people present, a roster's changes when many change) are read as
    /// one range of the stage, the rows between them skipped; scattered
    /// places by lists of up to 500.
    pub async fn staged_roster_json_at(
        &self,
        run_id: &str,
        seqs: &[usize],
    ) -> Result<Vec<(usize, String)>, StoreError> {
        let mut sorted = seqs.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut out = Vec::with_capacity(sorted.len());
        for chunk in sorted.chunks(500) {
            let (Some(&lo), Some(&hi)) = (chunk.first(), chunk.last()) else {
                continue;
            };
            let run = run_id.into();
            let rows: Vec<Body> = if hi - lo < 2 * chunk.len() {
                const RANGE: &str = "SELECT seq, entry FROM roster_stage_entries \
                     WHERE run_id = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq";
                let args = vec![run, OwnedArg::from(lo as i64), OwnedArg::from(hi as i64)];
                self.page_rows(RANGE.into(), args).await?
            } else {
                let mut sql = format!(
                    "SELECT seq, entry FROM roster_stage_entries WHERE seq IN {} AND run_id = ",
                    values(self.backend, 1, chunk.len())
                );
                push_ph(&mut sql, self.backend, chunk.len() + 1);
                sql.push_str(" ORDER BY seq");
                let mut args: Vec<OwnedArg> =
                    chunk.iter().map(|s| OwnedArg::from(*s as i64)).collect();
                args.push(run);
                self.page_rows(sql.into(), args).await?
            };
            out.extend(
                rows.into_iter()
                    .filter(|Body(at, _)| chunk.binary_search(at).is_ok())
                    .map(|Body(at, b)| (at, b)),
            );
        }
        Ok(out)
    }

    /// Entries whose employee id an entry earlier in the roster has: at
    /// most `limit` of them, by place, with that id.
    pub async fn staged_roster_duplicates(
        &self,
        run_id: &str,
        limit: i64,
    ) -> Result<Vec<(usize, String)>, StoreError> {
        // Whether any id is listed twice, from the index alone: rarely.
        let any = sqlx::query(
            "SELECT employee_id FROM roster_stage_entries WHERE run_id = $1 \
             GROUP BY employee_id HAVING COUNT(*) > 1 LIMIT 1",
        )
        .bind(run_id)
        .fetch_optional(self.reader())
        .await?;
        if any.is_none() {
            return Ok(Vec::new());
        }
        // Then the first of them by place: each entry after another of its
        // id (a probe of the id index per entry, paid only by a roster
        // that is refused).
        let rows = sqlx::query(
            "SELECT e.seq AS seq, e.employee_id AS employee_id FROM roster_stage_entries e \
             WHERE e.run_id = $1 AND EXISTS (SELECT 1 FROM roster_stage_entries f \
             WHERE f.run_id = e.run_id AND f.employee_id = e.employee_id AND f.seq < e.seq) \
             ORDER BY e.seq LIMIT $2",
        )
        .bind(run_id)
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|r| Ok((place(get(r, "seq")?)?, get(r, "employee_id")?)))
            .collect()
    }

    /// The management line the roster would leave, for at most `limit`
    /// entries after place `after`, by place: each entry's place with the
    /// place of its manager's entry, for those whose manager is in the
    /// roster. The manager is the one the entry names, or, where it
    /// leaves the column out, the person's manager now.
    pub async fn staged_roster_managers(
        &self,
        run_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(usize, usize)>, StoreError> {
        const SQL: &str = "SELECT e.seq AS seq, m.seq AS manager_seq FROM roster_stage_entries e \
             LEFT JOIN identities i ON e.manager_given = 0 AND i.employee_id = e.employee_id \
             JOIN roster_stage_entries m ON m.run_id = e.run_id AND m.employee_id = \
             CASE WHEN e.manager_given = 1 THEN e.manager_id ELSE i.manager_id END \
             WHERE e.run_id = $1 AND e.seq > $2 ORDER BY e.seq LIMIT $3";
        let args = vec![run_id.into(), OwnedArg::from(after), OwnedArg::from(limit)];
        let rows: Vec<Line> = self.page_rows(SQL.into(), args).await?;
        Ok(rows.into_iter().map(|Line(e, m)| (e, m)).collect())
    }

    /// Brings the planner's statistics of the staged entries up to date,
    /// once a roster is staged (see [`crate::directory_stage::analyze`]).
    pub async fn analyze_roster_stage(&self) -> Result<(), StoreError> {
        analyze(self, &[ENTRIES]).await
    }

    /// Runs whose stage was opened before `before` (left by a crash).
    pub async fn stale_roster_stages(
        &self,
        before: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        stale_stages(self, RUNS, before).await
    }

    /// Drops the stage of `run_id`, a few thousand rows per statement so
    /// that no statement holds the writer for long.
    pub async fn drop_roster_stage(&self, run_id: &str) -> Result<(), StoreError> {
        drop_stage(self, RUNS, &[ENTRIES], run_id).await
    }
}

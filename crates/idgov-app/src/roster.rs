//! Roster sync: diff a full roster, guard against mass termination, apply.

use super::App;
use crate::error::AppError;
use chrono::{DateTime, Utc};
use idgov_domain::audit::{Action, AuditEntry, Target};
use idgov_domain::guard::{self, HeldKind, Verdict};
use idgov_domain::history::{Presence, RosterMark};
use idgov_domain::hr::HrEvent;
use idgov_domain::identity::{Identity, text_problem};
use idgov_domain::roster::{self, ChangeKind, DiffCounts, RosterChange, RosterDiff, RosterEntry};
use std::collections::HashMap;
use std::sync::Arc;

/// How many changes a sync's answer (and its stored receipt) shows.
pub const SHOWN_CHANGES: usize = 1000;
use idgov_domain::{DomainError, ErrorCode, FieldViolation};
use idgov_store::{StagedEntry, StoredSync};
use serde::de::DeserializeSeed;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// A roster snapshot to sync.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub source: String,
    pub sync_id: String,
    pub dry_run: bool,
    /// RFC 3339; empty means now.
    pub as_of: String,
    /// IANA zone for the roster's dates; empty means the policy's HR zone.
    pub time_zone: String,
    /// The entries in the roster's order.
    pub entries: RosterInput,
}

/// A roster's entries, in the roster's order.
#[derive(Debug, Clone)]
pub enum RosterInput {
    /// Held in memory by an in-process caller: the sync stages them first.
    Entries(Vec<RosterEntry>),
    /// Staged as they arrived ([`App::begin_roster_upload`]): a
    /// million-person roster streamed in is never held whole.
    Staged(StagedRoster),
}

impl From<Vec<RosterEntry>> for RosterInput {
    fn from(entries: Vec<RosterEntry>) -> Self {
        RosterInput::Entries(entries)
    }
}

/// Entries staged per transaction while a roster arrives.
const UPLOAD_STEP: usize = 1000;

/// A roster being staged as it arrives, an entry at a time (see
/// [`App::begin_roster_upload`]). Each entry is checked on its own as it
/// comes (its id, attributes and name, and what the directory can hold);
/// the entries without problems are staged, [`UPLOAD_STEP`] to a
/// transaction. Ids listed twice and management cycles are found across
/// the staged entries by the sync.
#[derive(Debug)]
pub struct RosterUpload {
    run: String,
    buffer: Vec<StagedEntry>,
    len: usize,
    checked: Checked,
    /// The fingerprint of the entries so far.
    digest: roster::RosterDigest,
    /// When the upload began (for the log of how long staging took).
    began: std::time::Instant,
}

/// What the checks of each entry on its own found.
#[derive(Debug, Clone, Default)]
struct Checked {
    /// The first problems, by place.
    problems: Vec<(usize, FieldViolation)>,
    /// Values the directory cannot hold (the first 100).
    unholdable: Vec<FieldViolation>,
}

/// A roster staged in the store, ready to sync.
#[derive(Debug, Clone)]
pub struct StagedRoster {
    run: String,
    len: usize,
    checked: Checked,
    /// The fingerprint of its entries (see [`roster::RosterDigest`]).
    digest: roster::RosterDigest,
}

impl StagedRoster {
    /// How many entries the roster has.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl RosterUpload {
    /// How many entries have arrived.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes the next entry of the roster.
    pub async fn push(&mut self, app: &App, e: RosterEntry) -> Result<(), AppError> {
        let at = self.len;
        self.len += 1;
        self.digest.add(&e);
        let problems = roster::entry_problems(at, &e);
        if !problems.is_empty() {
            let room = (roster::MAX_PROBLEMS + 1).saturating_sub(self.checked.problems.len());
            self.checked
                .problems
                .extend(problems.into_iter().take(room).map(|v| (at, v)));
            return Ok(());
        }
        if self.checked.unholdable.len() < roster::MAX_PROBLEMS {
            let v = app.directory_violations(&e.attrs, &format!("roster[{at}]"));
            self.checked.unholdable.extend(v);
        }
        self.buffer.push((at, e));
        if self.buffer.len() >= UPLOAD_STEP {
            self.flush(app).await?;
        }
        Ok(())
    }

    /// Counts the place of an entry the caller could not read (and
    /// reports itself), so that the entries after it keep their places.
    pub fn skip(&mut self) {
        self.len += 1;
        self.digest.add_unreadable();
    }

    async fn flush(&mut self, app: &App) -> Result<(), AppError> {
        let (run, rows) = (&self.run, &self.buffer);
        app.retrying(|| async move {
            let now = app.now();
            let mut tx = app.store.begin().await?;
            tx.stage_roster_entries(run, rows).await?;
            tx.commit(now).await?;
            Ok(())
        })
        .await?;
        self.buffer.clear();
        Ok(())
    }

    /// The roster once its last entry arrived.
    pub async fn finish(mut self, app: &App) -> Result<StagedRoster, AppError> {
        if let Err(e) = self.flush(app).await {
            app.drop_roster_stage(&self.run).await;
            return Err(e);
        }
        // Not fatal: the sync is right without it, only slower on
        // PostgreSQL.
        if let Err(e) = app.store.analyze_roster_stage().await {
            tracing::warn!(run = %self.run, error = %e, "cannot refresh the roster stage's statistics");
        }
        tracing::info!(run = %self.run, entries = self.len,
            ms = self.began.elapsed().as_millis() as u64, "roster received and staged");
        Ok(StagedRoster {
            run: self.run,
            len: self.len,
            checked: self.checked,
            digest: self.digest,
        })
    }

    /// Gives up on the roster (its sender went away, or it was refused
    /// before it was whole) and drops what was staged of it.
    pub async fn abandon(self, app: &App) {
        app.drop_roster_stage(&self.run).await;
    }

    /// A guard that drops this upload's stage if it is itself dropped
    /// while still armed: a server drops a call's handler when its sender
    /// goes away, and no cleanup can then be awaited, so a worker does it.
    /// Disarm it once the upload is finished or abandoned.
    pub fn guard(&self, app: &Arc<App>) -> UploadGuard {
        UploadGuard {
            app: app.clone(),
            run: Some(self.run.clone()),
        }
    }
}

/// See [`RosterUpload::guard`].
#[derive(Debug)]
pub struct UploadGuard {
    app: Arc<App>,
    run: Option<String>,
}

impl UploadGuard {
    /// The upload ended (finished or abandoned): nothing left to drop.
    pub fn disarm(mut self) {
        self.run = None;
    }
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        if let Some(run) = self.run.take() {
            tracing::info!(run = %run, "a roster's sender went away mid-upload; dropping its stage");
            let app = self.app.clone();
            // Not awaited: the worker runs on after this drop.
            drop(self.app.workers.spawn("roster stage drop", async move {
                app.drop_roster_stage(&run).await;
            }));
        }
    }
}

/// The outcome of a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Applied,
    Held,
    DryRun,
    Unchanged,
}

/// What a sync did or would do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncOutcome {
    pub sync_id: String,
    pub outcome: Outcome,
    pub diff: RosterDiff,
    pub guard: Verdict,
    pub held_change_id: Option<String>,
    pub entries_received: u64,
    /// The counts of the whole diff (`diff` shows at most
    /// [`SHOWN_CHANGES`] of its changes).
    #[serde(default)]
    pub counts: DiffCounts,
    /// Events of the diff the rules refused (e.g. a rehire of someone active).
    pub rejected: Vec<(String, String)>,
    /// A dry run whose answer shows only some of its changes: the preview
    /// that lists them all (see `preview.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_id: Option<String>,
    /// This (source, sync id) was received before: the answer is the first
    /// one's, and nothing was applied now. Not stored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resent: bool,
    /// For a snapshot received before: a newer snapshot of the same source
    /// applied since, which is what counts now (so sending this one again
    /// is no longer a retry, but an older statement). Not stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
    /// The fingerprint of the snapshot as received: its header and its
    /// entries in any order (see [`roster::RosterDigest`]). Stored with
    /// the answer: the same sync id sent again with another fingerprint
    /// is refused. `None` in answers stored before fingerprints were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_sha256: Option<String>,
}

/// What a held roster sync stores for its release.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StagedSync {
    pub source: String,
    pub sync_id: String,
    pub events: Vec<HrEvent>,
    pub diff: RosterDiff,
    /// The people present and unchanged, with the snapshot's time and zone.
    #[serde(default)]
    pub present: Vec<RosterEntry>,
    #[serde(default)]
    pub as_of: Option<DateTime<Utc>>,
    #[serde(default)]
    pub time_zone: String,
    /// People to replay with the snapshot (see `behind`).
    #[serde(default)]
    pub behind: Vec<String>,
    /// When the snapshot read the people (its diff is as of then); a
    /// sync held before this was kept was read when it was held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<DateTime<Utc>>,
    /// The newest HR event's place in the arrival order then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_arrival: Option<i64>,
    /// Where the changes and the people present are kept when they are
    /// not in the payload: a held sync's release job holds them as staged
    /// items, 2,000 to a row (its changes, leavers first, then the people
    /// present). `events`, `present` and `diff.changes` are then empty
    /// but for the first [`SHOWN_CHANGES`] changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<HeldItems>,
}

/// A held roster sync's changes and presences, staged as items of its
/// release job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HeldItems {
    pub job: String,
    /// Items 0..changes are the changes (in the order they apply), then
    /// `present` people present.
    pub changes: usize,
    pub present: usize,
    pub counts: DiffCounts,
}

impl StagedSync {
    /// The snapshot's mark (its time defaults to `now` for a sync held
    /// before marks were kept).
    pub(crate) fn mark(&self, now: DateTime<Utc>) -> RosterMark {
        RosterMark {
            source: self.source.clone(),
            sync_id: self.sync_id.clone(),
            as_of: self.as_of.unwrap_or(now),
            time_zone: self.time_zone.clone(),
        }
    }
}

/// The presences of `entries`, people a snapshot (`mark`) lists unchanged.
fn presences(mark: &RosterMark, entries: Vec<RosterEntry>) -> Vec<(String, Presence)> {
    entries
        .into_iter()
        .map(|e| {
            (
                e.employee_id,
                Presence {
                    source: mark.source.clone(),
                    sync_id: mark.sync_id.clone(),
                    as_of: mark.as_of,
                    time_zone: mark.time_zone.clone(),
                    attrs: e.attrs,
                },
            )
        })
        .collect()
}

/// What a roster's steps apply (see [`App::record_roster_in_steps`]):
/// `events` HR events, then the presences of `present` people listed
/// unchanged, read a step at a time, so that applying a million-person
/// roster (sent, resumed or released) holds one step in memory, not the
/// roster.
pub(crate) struct RosterSteps {
    pub events: usize,
    pub present: usize,
    from: StepSource,
}

enum StepSource {
    /// A held sync from before its changes were staged: in its payload.
    Payload {
        events: Vec<HrEvent>,
        present: Vec<RosterEntry>,
    },
    /// A job's staged items (see [`App::stage_items`]): its events, or the
    /// changes of a held sync (`changes`: turned into events a step at a
    /// time, at the snapshot's time and zone), then the people present.
    Staged {
        job: String,
        changes: Option<(DateTime<Utc>, chrono_tz::Tz)>,
    },
}

impl RosterSteps {
    /// Job `job`'s staged items: `events` HR events (or, with `changes`,
    /// roster changes of a held sync at its time and zone), then `present`
    /// roster entries.
    pub(crate) fn staged(
        job: &str,
        events: usize,
        present: usize,
        changes: Option<(DateTime<Utc>, chrono_tz::Tz)>,
    ) -> Self {
        RosterSteps {
            events,
            present,
            from: StepSource::Staged {
                job: job.to_string(),
                changes,
            },
        }
    }

    /// Events and entries held in memory.
    pub(crate) fn in_memory(events: Vec<HrEvent>, present: Vec<RosterEntry>) -> Self {
        RosterSteps {
            events: events.len(),
            present: present.len(),
            from: StepSource::Payload { events, present },
        }
    }

    /// Items `pos..pos + n` (all events or all presences: a step never
    /// spans both), with `mark` the snapshot they belong to.
    pub(crate) async fn read(
        &self,
        app: &App,
        mark: &RosterMark,
        pos: usize,
        n: usize,
    ) -> Result<(Vec<HrEvent>, Vec<(String, Presence)>), AppError> {
        let is_event = pos < self.events;
        match &self.from {
            StepSource::Payload { events, present } => Ok(if is_event {
                (events[pos..pos + n].to_vec(), vec![])
            } else {
                let p = pos - events.len();
                (vec![], presences(mark, present[p..p + n].to_vec()))
            }),
            StepSource::Staged { job, changes } => {
                let whole = |got: usize| {
                    if got == n {
                        Ok(())
                    } else {
                        Err(AppError::Store(idgov_store::StoreError::Corrupt(format!(
                            "staged items of job {job}: {got} of items {pos}..{} are staged",
                            pos + n
                        ))))
                    }
                };
                Ok(match changes {
                    _ if !is_event => {
                        let entries: Vec<RosterEntry> = app.staged_items(job, pos, n).await?;
                        whole(entries.len())?;
                        (vec![], presences(mark, entries))
                    }
                    None => {
                        let events: Vec<HrEvent> = app.staged_items(job, pos, n).await?;
                        whole(events.len())?;
                        (events, vec![])
                    }
                    Some((as_of, zone)) => {
                        // Staged in the order they apply (leavers first):
                        // each becomes its event in place.
                        let changes: Vec<RosterChange> = app.staged_items(job, pos, n).await?;
                        whole(changes.len())?;
                        let (source, sync_id) = (&mark.source, &mark.sync_id);
                        let events = changes
                            .into_iter()
                            .map(|c| roster::event_of(c, source, sync_id, *as_of, *zone))
                            .collect();
                        (events, vec![])
                    }
                })
            }
        }
    }
}

/// How many people, and staged entries, a roster diff reads at a time.
const WALK_PAGE: i64 = 2000;
/// How many entries' managers the cycle check reads at a time.
const CYCLE_PAGE: i64 = 10_000;

/// A roster against the people, read a page at a time (never the whole
/// table at once).
#[derive(Default)]
struct Walked {
    /// The listed people's changes, in roster order.
    listed: Vec<Listed>,
    /// The people the roster does not list whom it ends, by employee id:
    /// those working here (leavers), and future starters whose start an
    /// older snapshot scheduled (withdrawals). The guard counts both.
    leavers: Vec<RosterChange>,
    unchanged: u64,
    /// The entries (by place) of people listed, unchanged, who work here:
    /// their presence is recorded (see `history::Presence`).
    present: Vec<usize>,
    /// People the roster does not list and does not terminate (they hold
    /// no access now) whose history goes past the roster's time: in
    /// effective order its absence may still concern them, so they are
    /// replayed with it.
    behind: Vec<String>,
    /// People working here (active or suspended): the guard's base.
    active: u64,
    /// The roster's day (its `as_of` in its zone): a pre-hire's start
    /// after it is still to come.
    today: chrono::NaiveDate,
    /// Departed people listed with a return date ahead whose return an
    /// older snapshot already scheduled: (entry place, that start's event
    /// id, the entry). Listed as that start says, they are unchanged
    /// ([`App::returns_as_scheduled`]).
    returns: Vec<(usize, String, RosterEntry)>,
}

/// A listed person's change, by the place of their entry in the roster:
/// the change itself (with the entry's attributes, read back from the
/// stage) is made when it is taken ([`App::sync_changes`]).
struct Listed {
    at: usize,
    kind: ChangeKind,
    fields: Vec<idgov_domain::identity::FieldChange>,
    /// The start date a pre-hire keeps when the entry gives none
    /// (`roster::kept_start`).
    kept_start: Option<chrono::NaiveDate>,
}

impl Walked {
    fn visit(&mut self, at: usize, e: &RosterEntry, cur: Option<&Identity>) {
        match roster::classify_kind(e, cur, self.today) {
            Some((kind, fields)) => self.listed.push(Listed {
                at,
                kind,
                fields,
                kept_start: roster::kept_start(e, cur, self.today),
            }),
            None => {
                self.unchanged += 1;
                if cur.is_some_and(|p| p.may_hold_access()) {
                    self.present.push(at);
                }
            }
        }
    }

    /// How many changes the roster makes.
    fn total(&self) -> usize {
        self.listed.len() + self.leavers.len()
    }

    fn counts(&self) -> DiffCounts {
        let kinds = self.listed.iter().map(|l| l.kind);
        DiffCounts::of(
            kinds.chain(self.leavers.iter().map(|c| c.kind)),
            self.unchanged,
        )
    }
}

impl App {
    /// Opens the stage of a roster about to arrive (see [`RosterUpload`]).
    /// Stages a crash left behind more than a day ago are dropped first.
    pub async fn begin_roster_upload(&self) -> Result<RosterUpload, AppError> {
        let now = self.now();
        for stale in self
            .store
            .stale_roster_stages(now - chrono::Duration::days(1))
            .await?
        {
            tracing::warn!(run = %stale, "dropping a roster stage a crash left behind");
            self.drop_roster_stage(&stale).await;
        }
        let run = uuid::Uuid::now_v7().to_string();
        let run_ref = &run;
        self.retrying(|| async move {
            let now = self.now();
            let mut tx = self.store.begin().await?;
            tx.open_roster_stage(run_ref, now).await?;
            tx.commit(now).await?;
            Ok(())
        })
        .await?;
        Ok(RosterUpload {
            run,
            buffer: Vec::with_capacity(UPLOAD_STEP),
            len: 0,
            checked: Checked::default(),
            digest: roster::RosterDigest::default(),
            began: std::time::Instant::now(),
        })
    }

    /// Stages a roster held in memory, as one streamed in is staged.
    async fn stage_roster(&self, entries: Vec<RosterEntry>) -> Result<StagedRoster, AppError> {
        let mut upload = self.begin_roster_upload().await?;
        for e in entries {
            if let Err(err) = upload.push(self, e).await {
                upload.abandon(self).await;
                return Err(err);
            }
        }
        upload.finish(self).await
    }

    /// Drops a roster's stage. Best effort: what a failure leaves is
    /// dropped by a roster sync a day later.
    pub(crate) async fn drop_roster_stage(&self, run: &str) {
        let began = std::time::Instant::now();
        match self.store.drop_roster_stage(run).await {
            Ok(()) => tracing::debug!(
                run,
                ms = began.elapsed().as_millis() as u64,
                "roster stage dropped"
            ),
            Err(e) => {
                tracing::warn!(run, error = %e, "cannot drop a roster's stage; it is dropped a day later")
            }
        }
    }

    /// The problems of a staged roster: those of its entries on their
    /// own, and the ids it lists twice, by place.
    async fn roster_problems(&self, roster: &StagedRoster) -> Result<(), AppError> {
        let max = roster::MAX_PROBLEMS;
        let twice = self
            .store
            .staged_roster_duplicates(&roster.run, max as i64 + 1)
            .await?;
        let mut more = twice.len() > max || roster.checked.problems.len() > max;
        let mut all: Vec<(usize, FieldViolation)> = roster.checked.problems.clone();
        all.extend(
            twice
                .iter()
                .map(|(at, id)| (*at, roster::duplicate_problem(*at, id))),
        );
        if all.is_empty() {
            return Ok(());
        }
        all.sort_by_key(|(at, _)| *at);
        if all.len() > max {
            all.truncate(max);
            more = true;
        }
        Err(AppError::Domain(roster::invalid_roster(
            all.into_iter().map(|(_, v)| v).collect(),
            more,
        )))
    }

    /// The first management cycle a staged roster would make, as the
    /// entry it starts at and the people in it.
    async fn roster_cycle(
        &self,
        roster: &StagedRoster,
    ) -> Result<Option<(usize, Vec<String>)>, AppError> {
        const NONE: u32 = u32::MAX;
        // A manager's place per place: 4 bytes a person.
        let mut manager = vec![NONE; roster.len];
        let mut after = -1i64;
        loop {
            let page = self
                .store
                .staged_roster_managers(&roster.run, after, CYCLE_PAGE)
                .await?;
            let Some(&(last, _)) = page.last() else {
                break;
            };
            for (at, m) in page {
                if let (Some(slot), Ok(m)) = (manager.get_mut(at), u32::try_from(m)) {
                    *slot = m;
                }
            }
            after = last as i64;
        }
        let found = roster::first_cycle(manager.len(), |i| {
            manager.get(i).filter(|&&m| m != NONE).map(|&m| m as usize)
        });
        drop(manager);
        let Some((at, cycle)) = found else {
            return Ok(None);
        };
        let ids: HashMap<usize, String> = self
            .store
            .staged_roster_at(&roster.run, &cycle)
            .await?
            .into_iter()
            .map(|(at, e)| (at, e.employee_id))
            .collect();
        let names = cycle
            .iter()
            .map(|at| ids.get(at).cloned().unwrap_or_default())
            .collect();
        Ok(Some((at, names)))
    }

    /// Diffs a staged roster against the people a page at a time, in a
    /// merge of both by employee id (each read a page at a time, in the
    /// store's order): what `roster::diff` computes over everyone, with the
    /// listed people's changes in roster order and the leavers by employee
    /// id.
    async fn walk_people(
        &self,
        run: &str,
        mark: &RosterMark,
        today: chrono::NaiveDate,
    ) -> Result<Walked, AppError> {
        let mut w = Walked {
            today,
            ..Walked::default()
        };
        // The starts older snapshots of the source scheduled, which this
        // one withdraws from people it does not list (read once).
        let older_starts = self.older_roster_starts(mark).await?;
        let mut after = String::new();
        loop {
            let page = self.store.identities_page(&after, WALK_PAGE).await?;
            let Some(last) = page.last().map(|p| p.employee_id.clone()) else {
                break;
            };
            let by_id: HashMap<&str, &Identity> =
                page.iter().map(|p| (p.employee_id.as_str(), p)).collect();
            // The page's people the roster lists.
            let mut listed: std::collections::HashSet<String> = Default::default();
            let mut from = after.clone();
            loop {
                let entries = self
                    .store
                    .staged_roster_by_id(run, &from, Some(&last), WALK_PAGE)
                    .await?;
                for (at, e) in &entries {
                    let cur = by_id.get(e.employee_id.as_str()).copied();
                    if cur.is_some() {
                        listed.insert(e.employee_id.clone());
                    }
                    if let Some(p) = cur
                        && p.status == idgov_domain::identity::Status::Terminated
                        && p.history.employments > 0
                        && e.attrs.start_date.is_some_and(|d| d > today)
                        && let Some(start) = older_starts.get(&e.employee_id)
                    {
                        w.returns.push((*at, start.clone(), e.clone()));
                    }
                    w.visit(*at, e, cur);
                }
                match entries.last() {
                    Some((_, e)) if entries.len() as i64 == WALK_PAGE => {
                        from = e.employee_id.clone();
                    }
                    _ => break,
                }
            }
            for p in &page {
                let works_here = roster::leaves_when_unlisted(p);
                if works_here {
                    w.active += 1;
                }
                if listed.contains(&p.employee_id) {
                    continue;
                }
                if !works_here && let Some(start) = older_starts.get(&p.employee_id) {
                    w.leavers.push(roster::withdrawal(p, start.clone()));
                }
                if works_here {
                    w.leavers.push(roster::leaver(p));
                } else if p
                    .history
                    .last
                    .as_ref()
                    .is_some_and(|key| *key > mark.key(&p.employee_id))
                {
                    w.behind.push(p.employee_id.clone());
                }
            }
            after = last;
        }
        // Everyone after the last person known is new.
        loop {
            let entries = self
                .store
                .staged_roster_by_id(run, &after, None, WALK_PAGE)
                .await?;
            for (at, e) in &entries {
                w.visit(*at, e, None);
            }
            match entries.last() {
                Some((_, e)) if entries.len() as i64 == WALK_PAGE => {
                    after = e.employee_id.clone();
                }
                _ => break,
            }
        }
        w.listed.sort_unstable_by_key(|l| l.at);
        w.present.sort_unstable();
        self.returns_as_scheduled(&mut w, mark).await?;
        Ok(w)
    }

    /// A departed person due back is listed by each snapshot until their
    /// return: one that lists them as the start an older snapshot
    /// scheduled says (the same entry, the same zone) changes nothing,
    /// as a pre-hire listed as announced changes nothing. (Counted as a
    /// rehire, the same return was reported again at every roster.) The
    /// older start stands; any difference makes the entry a rehire, and
    /// the newest snapshot's start replaces it.
    async fn returns_as_scheduled(
        &self,
        w: &mut Walked,
        mark: &RosterMark,
    ) -> Result<(), AppError> {
        if w.returns.is_empty() {
            return Ok(());
        }
        // The people due back are few: one read each, by key.
        let mut scheduled: HashMap<String, HrEvent> = HashMap::new();
        for (_, id, _) in &w.returns {
            if let Some(r) = self.store.get_hr_event(&mark.source, id).await?
                && r.state == idgov_domain::hr::EventState::Scheduled
            {
                scheduled.insert(id.clone(), r.event);
            }
        }
        let same: std::collections::HashSet<usize> = std::mem::take(&mut w.returns)
            .into_iter()
            .filter(|(_, id, e)| {
                scheduled.get(id).is_some_and(|ev| {
                    ev.employee_id == e.employee_id
                        && ev.time_zone == mark.time_zone
                        && ev.attrs == e.attrs
                })
            })
            .map(|(at, _, _)| at)
            .collect();
        let before = w.listed.len();
        w.listed
            .retain(|l| !(l.kind == ChangeKind::Rehire && same.contains(&l.at)));
        w.unchanged += (before - w.listed.len()) as u64;
        Ok(())
    }

    /// The starts older snapshots of `mark`'s source scheduled that are
    /// still to come, by person: the newest of each person's (see
    /// [`roster::newer_snapshot`]). A person not working here whom `mark`
    /// does not list is withdrawn from it (intake rescinds the others with
    /// it). Empty when a newer snapshot of the source was applied: that one
    /// decided already. Scheduled starts are the future starters and the
    /// people due back, so this is as small as they are few.
    async fn older_roster_starts(
        &self,
        mark: &RosterMark,
    ) -> Result<HashMap<String, String>, AppError> {
        let this = (mark.as_of, mark.sync_id.as_str());
        if let Some((sync, at)) = self.store.newest_roster_snapshot(&mark.source).await?
            && roster::newer_snapshot((at, sync.as_str()), this)
        {
            return Ok(HashMap::new());
        }
        let starts = self.store.scheduled_roster_starts(&mark.source).await?;
        if starts.is_empty() {
            return Ok(HashMap::new());
        }
        let mut syncs: Vec<String> = starts
            .iter()
            .filter_map(|(_, e)| roster::sync_of_event_id(e).map(str::to_string))
            .collect();
        syncs.sort();
        syncs.dedup();
        let times = self
            .store
            .roster_snapshot_times(&mark.source, &syncs)
            .await?;
        let mut newest: HashMap<String, (DateTime<Utc>, String, String)> = HashMap::new();
        for (person, event_id) in starts {
            let Some(sync) = roster::sync_of_event_id(&event_id) else {
                continue;
            };
            let Some(at) = times.get(sync).copied() else {
                continue;
            };
            if !roster::newer_snapshot(this, (at, sync)) {
                continue;
            }
            let sync = sync.to_string();
            match newest.get(&person) {
                Some((t, s, _)) if !roster::newer_snapshot((at, &sync), (*t, s)) => {}
                _ => {
                    newest.insert(person, (at, sync, event_id));
                }
            }
        }
        Ok(newest
            .into_iter()
            .map(|(person, (_, _, event_id))| (person, event_id))
            .collect())
    }

    /// Changes `from..from + n` of a walked roster in the order they apply
    /// (leavers first, see `roster::event_of`, then the rest in roster
    /// order), each listed person's made with their entry read back from
    /// the stage.
    async fn sync_changes(
        &self,
        run: &str,
        w: &Walked,
        from: usize,
        n: usize,
    ) -> Result<Vec<RosterChange>, AppError> {
        let leavers = w.leavers.len();
        let mut out: Vec<RosterChange> = w.leavers.iter().skip(from).take(n).cloned().collect();
        let start = from.saturating_sub(leavers).min(w.listed.len());
        let end = (from + n).saturating_sub(leavers).min(w.listed.len());
        let listed = &w.listed[start..end];
        let ats: Vec<usize> = listed.iter().map(|l| l.at).collect();
        let entries = self.store.staged_roster_at(run, &ats).await?;
        if entries.len() != listed.len() {
            return Err(AppError::Store(idgov_store::StoreError::Corrupt(format!(
                "roster stage {run}: {} of {} entries read back",
                entries.len(),
                listed.len()
            ))));
        }
        for (l, (_, e)) in listed.iter().zip(entries) {
            out.push(roster::change_of(
                &e,
                l.kind,
                l.fields.clone(),
                l.kept_start,
            ));
        }
        Ok(out)
    }

    /// The diff an answer shows (`RosterDiff::shown`), made from no more
    /// changes than it can show of each side.
    async fn shown_diff(&self, run: &str, w: &Walked, max: usize) -> Result<RosterDiff, AppError> {
        let mut changes = self
            .sync_changes(run, w, w.leavers.len(), max.min(w.listed.len()))
            .await?;
        changes.extend(w.leavers.iter().take(max).cloned());
        Ok(RosterDiff {
            changes,
            unchanged: w.unchanged,
        }
        .shown(max))
    }

    /// Syncs a roster snapshot. Re-sending the same (source, sync_id) returns
    /// the first outcome and changes nothing. The server's own concurrency
    /// (a policy changed by another replica) is retried here.
    pub async fn sync_roster(
        &self,
        req: SyncRequest,
        actor: &str,
    ) -> Result<SyncOutcome, AppError> {
        let mut req = req;
        let roster = match std::mem::replace(&mut req.entries, RosterInput::Entries(vec![])) {
            RosterInput::Entries(entries) => self.stage_roster(entries).await?,
            RosterInput::Staged(staged) => staged,
        };
        let mut attempt = 0;
        let out = loop {
            match self.sync_roster_once(&req, &roster, actor).await {
                Err(e) if e.is_retryable() && attempt < 5 => {
                    attempt += 1;
                    self.after_conflict(&e, attempt).await;
                }
                r => break r,
            }
        };
        self.drop_roster_stage(&roster.run).await;
        out
    }

    async fn sync_roster_once(
        &self,
        req: &SyncRequest,
        roster: &StagedRoster,
        actor: &str,
    ) -> Result<SyncOutcome, AppError> {
        let started = std::time::Instant::now();
        let mut v = Vec::new();
        for (field, value) in [
            ("header.source", &req.source),
            ("header.sync_id", &req.sync_id),
        ] {
            if value.is_empty() {
                v.push(FieldViolation::new(field, "is required"));
            } else if let Some(p) = text_problem(value, 128) {
                v.push(FieldViolation::new(field, p));
            }
        }
        let now = self.now();
        let as_of: DateTime<Utc> = if req.as_of.trim().is_empty() {
            now
        } else {
            match DateTime::parse_from_rfc3339(req.as_of.trim()) {
                Ok(t) => t.with_timezone(&Utc),
                Err(_) => {
                    v.push(FieldViolation::new(
                        "header.as_of",
                        "use an RFC 3339 timestamp, or leave it empty for now",
                    ));
                    now
                }
            }
        };
        let policy = self.policy();
        let zone = if req.time_zone.trim().is_empty() {
            policy.policy.hr_time_zone
        } else {
            match idgov_domain::time::parse_zone(&req.time_zone) {
                Ok(z) => z,
                Err(e) => {
                    v.push(FieldViolation::new("header.time_zone", e));
                    policy.policy.hr_time_zone
                }
            }
        };
        if as_of > now {
            v.push(FieldViolation::new(
                "header.as_of",
                "a roster snapshot cannot be in the future; send future changes as dated HR events",
            ));
        }
        if roster.is_empty() {
            v.push(FieldViolation::new(
                "entries",
                "the roster is empty; an empty roster would terminate everyone and is refused",
            ));
        }
        if !v.is_empty() {
            return Err(AppError::Domain(DomainError::invalid(
                "the roster sync is invalid",
                v,
            )));
        }
        self.roster_problems(roster).await?;
        let dv = &roster.checked.unholdable;
        if !dv.is_empty() {
            return Err(AppError::Domain(DomainError::invalid(
                format!(
                    "{} roster value(s) the directory cannot hold; nothing was applied",
                    dv.len()
                ),
                dv.clone(),
            )));
        }

        let content = roster.digest.finish(&req.as_of, &req.time_zone);
        if !req.dry_run
            && let Some(prev) = self.store.get_sync(&req.source, &req.sync_id).await?
        {
            return self.resent(&req.source, &req.sync_id, prev, &content).await;
        }
        let claim = sync_claim(&req.source, &req.sync_id);
        if !req.dry_run
            && let Some(answer) = self
                .after_the_claim_holder(&claim, &req.source, &req.sync_id, &content)
                .await?
        {
            return Ok(answer);
        }

        let mark = RosterMark {
            source: req.source.clone(),
            sync_id: req.sync_id.clone(),
            as_of,
            time_zone: zone.name().to_string(),
        };
        if let Some((at, cycle)) = self.roster_cycle(roster).await? {
            return Err(AppError::invalid(
                &format!("roster[{at}].manager_employee_id"),
                format!(
                    "the roster would make a management cycle: {}; nothing was applied",
                    super::intake::cycle_text(&cycle)
                ),
            ));
        }
        let checked = started.elapsed();
        let today = idgov_domain::time::local_date(as_of, zone);
        // Where the HR events stood when the people were read: at its end
        // the snapshot looks at the people whose events came after
        // (`App::finish_roster`).
        let read_arrival = self.store.last_hr_event_arrival().await?;
        let mut walked = self.walk_people(&roster.run, &mark, today).await?;
        let diffed = started.elapsed();
        let verdict = guard::evaluate(
            walked.active,
            walked.leavers.len() as u64,
            &policy.policy.guard,
        );
        let mut out = SyncOutcome {
            sync_id: req.sync_id.clone(),
            outcome: Outcome::DryRun,
            counts: walked.counts(),
            diff: self.shown_diff(&roster.run, &walked, SHOWN_CHANGES).await?,
            guard: verdict,
            held_change_id: None,
            entries_received: roster.len as u64,
            rejected: vec![],
            preview_id: None,
            resent: false,
            superseded_by: None,
            content_sha256: Some(content.clone()),
        };
        let total = walked.total();
        if req.dry_run {
            if crate::preview::needs_preview(total, &out.diff) {
                let changes = SyncItems::new(&roster.run, &walked, None, false);
                out.preview_id = Some(
                    self.stage_preview(&req.source, &req.sync_id, changes, total, actor)
                        .await?,
                );
            }
            return Ok(out);
        }
        let counts = summary(&out.counts);
        if !verdict.tripped {
            // Unheld: staged as a bulk job (its events and the people it
            // lists unchanged, 2,000 to a row), then applied in bounded steps
            // read back from there, the way a resumed sync is, that record
            // the job's place, so intake goes on between them and a crash
            // half-way is resumed from there.
            let ctx = SyncContext {
                mark,
                behind: std::mem::take(&mut walked.behind),
                read_at: Some(now),
                read_arrival: Some(read_arrival),
                out,
                events: total,
                present: walked.present.len(),
                actor: actor.to_string(),
            };
            // Two sends of one id may both have passed the checks above
            // while they were diffed; the database lets one job at a time
            // hold the snapshot's claim (see `sync_claim`). The other waits
            // for it and is answered (the same roster) or refused (another
            // one); if it ended without an answer, this one claims again.
            let job = loop {
                let items = SyncItems::new(&roster.run, &walked, Some((&ctx.mark, zone)), true);
                if let Some(job) = self.stage_sync(&ctx, items, &claim).await? {
                    break job;
                }
                if let Some(answer) = self
                    .after_the_claim_holder(&claim, &req.source, &req.sync_id, &content)
                    .await?
                {
                    return Ok(answer);
                }
            };
            drop(walked);
            if let Some(answer) = self
                .answered_before_the_claim(&job.id, req, &content)
                .await?
            {
                return Ok(answer);
            }
            log_phases(req, roster.len, total, false, checked, diffed, started);
            let step = crate::held::StepJob {
                id: &job.id,
                detail: job.detail.clone(),
            };
            let steps = RosterSteps::staged(&job.id, ctx.events, ctx.present, None);
            let detail = self
                .record_roster_in_steps(&steps, &ctx.mark, actor, 0, &step)
                .await
                .inspect_err(|e| {
                    tracing::warn!(job = %job.id, error = %e,
                        "a roster sync stopped half-way; it is resumed from its place once its lease runs out");
                })?;
            return self.finish_sync(&job.id, &ctx, &detail, false).await;
        }
        // Held: its changes (leavers first, the order they would apply in)
        // and the people present are staged as items of the job that
        // applies them once released, so the held change stays small
        // however large the roster, and its changes can be read a page at
        // a time. The hold is one transaction once every item is written.
        let held_id = uuid::Uuid::now_v7().to_string();
        let job = idgov_store::BulkJob {
            id: format!("release-{held_id}"),
            kind: crate::held::ROSTER_RELEASE.into(),
            state: "staging".into(),
            policy_version: policy.version,
            cursor: "0".into(),
            detail: json!({
                "source": req.source, "sync_id": req.sync_id, "held": held_id,
                "content": content,
                "changes": total + walked.present.len(), "actor": actor,
                "refused_count": 0, "refused": [],
            }),
            created_at: self.now(),
            updated_at: self.now(),
        };
        loop {
            let items = SyncItems::new(&roster.run, &walked, None, true);
            if self.stage_items(&job, None, items, Some(&claim)).await? {
                break;
            }
            if let Some(answer) = self
                .after_the_claim_holder(&claim, &req.source, &req.sync_id, &content)
                .await?
            {
                return Ok(answer);
            }
        }
        if let Some(answer) = self
            .answered_before_the_claim(&job.id, req, &content)
            .await?
        {
            return Ok(answer);
        }
        log_phases(req, roster.len, total, true, checked, diffed, started);
        let staged = StagedSync {
            behind: walked.behind,
            read_at: Some(now),
            read_arrival: Some(read_arrival),
            source: req.source.clone(),
            sync_id: req.sync_id.clone(),
            events: vec![],
            diff: out.diff.clone(),
            present: vec![],
            as_of: Some(as_of),
            time_zone: zone.name().to_string(),
            staged: Some(HeldItems {
                job: job.id.clone(),
                changes: total,
                present: walked.present.len(),
                counts: out.counts,
            }),
        };
        let ended = if out.counts.withdrawals > 0 {
            "leavers and withdrawn starts"
        } else {
            "leavers"
        };
        let summary_text = format!(
            "roster sync {} from {}: {} {ended} of {} active (threshold {}); {}",
            req.sync_id, req.source, verdict.affected, verdict.active, verdict.threshold, counts
        );
        out.outcome = Outcome::Held;
        out.held_change_id = Some(held_id.clone());
        let receipt = StoredSync {
            outcome: format!("{:?}", out.outcome).to_lowercase(),
            held_change_id: out.held_change_id.clone(),
            response: serde_json::to_value(&out).unwrap_or_default(),
        };
        let (staged, summary_text, out_ref, receipt) = (&staged, &summary_text, &out, &receipt);
        let (held_ref, job_ref, counts) = (&held_id, &job, &counts);
        let recorded = self
            .retrying(|| async move {
                let now = self.now();
                let mut tx = self.store.begin().await?;
                super::held::hold(
                    &mut tx,
                    held_ref.clone(),
                    HeldKind::RosterSync,
                    summary_text.clone(),
                    verdict,
                    serde_json::to_value(staged).unwrap_or_default(),
                    Action::RosterSyncHeld,
                    json!({"source": req.source, "sync_id": req.sync_id}),
                    actor,
                    now,
                )
                .await?;
                tx.update_bulk_job(&job_ref.id, "held", "0", &job_ref.detail, now)
                    .await?;
                tx.audit(AuditEntry::new(
                    actor,
                    Action::RosterSync,
                    Target::Roster {
                        source: req.source.clone(),
                        sync_id: req.sync_id.clone(),
                    },
                    json!({
                        "outcome": out_ref.outcome, "entries": out_ref.entries_received,
                        "summary": counts, "unchanged": out_ref.diff.unchanged, "guard": verdict,
                        "rejected": out_ref.rejected, "held_change_id": out_ref.held_change_id,
                    }),
                ));
                if !tx
                    .insert_sync(&req.source, &req.sync_id, receipt, now)
                    .await?
                {
                    return Ok(false);
                }
                tx.commit(now).await?;
                Ok(true)
            })
            .await;
        match recorded {
            Ok(true) => Ok(out),
            Ok(false) => {
                // A concurrent send of the same snapshot won; report its outcome.
                self.end_sync_job(&job.id, "failed").await;
                self.concurrent_sync(&req.source, &req.sync_id, &content)
                    .await
            }
            Err(e) => {
                self.end_sync_job(&job.id, "failed").await;
                Err(e)
            }
        }
    }

    /// The answer to snapshot `sync_id` of `source` sent again with
    /// fingerprint `content`: the first answer, marked as such, and the
    /// newer snapshot of the source applied since, if any. Refused when
    /// the first was another roster (a different fingerprint): answering
    /// it with the first one's outcome would drop this one unseen.
    async fn resent(
        &self,
        source: &str,
        sync_id: &str,
        prev: StoredSync,
        content: &str,
    ) -> Result<SyncOutcome, AppError> {
        let mut out = stored_outcome(prev)?;
        if let Some(first) = out.content_sha256.as_deref()
            && first != content
        {
            return Err(AppError::Domain(DomainError::new(
                ErrorCode::IdempotencyConflict,
                format!(
                    "roster snapshot {} from {} was already received with different content \
                     ({} entries, fingerprint {}…; this one is {}…); nothing was applied. \
                     A corrected or newer export is a new snapshot: send it under a new sync_id",
                    idgov_domain::error::echo(sync_id),
                    idgov_domain::error::echo(source),
                    out.entries_received,
                    first.get(..12).unwrap_or(first),
                    content.get(..12).unwrap_or(content),
                ),
            )));
        }
        out.resent = true;
        let mine = self
            .store
            .roster_snapshot_times(source, &[sync_id.to_string()])
            .await?;
        if let (Some(at), Some((newest, newest_at))) = (
            mine.get(sync_id),
            self.store.newest_roster_snapshot(source).await?,
        ) && roster::newer_snapshot((newest_at, newest.as_str()), (*at, sync_id))
        {
            out.superseded_by = Some(newest);
        }
        Ok(out)
    }

    /// What a send of snapshot `sync_id` of `source` (fingerprint
    /// `content`) does about another sync holding the snapshot's `claim`,
    /// one whose answer is not recorded yet, so that [`Self::resent`] cannot
    /// see it. Another roster under the same id (a feed that gave up waiting
    /// and sent a corrected export, say) is refused: both would apply. The
    /// same roster (a retry) waits for it and is answered with its answer,
    /// marked `resent`, rather than diffing and applying the whole roster a
    /// second time beside it. `None` when no sync holds the claim, or when
    /// the one that did ended without an answer (it failed): this send then
    /// does the work.
    async fn after_the_claim_holder(
        &self,
        claim: &str,
        source: &str,
        sync_id: &str,
        content: &str,
    ) -> Result<Option<SyncOutcome>, AppError> {
        let mut waited = false;
        while let Some(job) = self.store.claim_holder(claim).await? {
            if job.detail["content"].as_str() != Some(content) {
                return Err(AppError::Domain(DomainError::new(
                    ErrorCode::IdempotencyConflict,
                    format!(
                        "roster snapshot {} from {} is being applied with different content (job {}); \
                         nothing of this one was applied. A corrected or newer export is a new \
                         snapshot: send it under a new sync_id",
                        idgov_domain::error::echo(sync_id),
                        idgov_domain::error::echo(source),
                        job.id
                    ),
                )));
            }
            if !waited {
                tracing::info!(
                    source,
                    sync_id,
                    job = %job.id,
                    "the same roster snapshot is being applied; waiting for its answer"
                );
                waited = true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        if !waited {
            return Ok(None);
        }
        match self.store.get_sync(source, sync_id).await? {
            Some(prev) => Ok(Some(self.resent(source, sync_id, prev, content).await?)),
            None => Ok(None),
        }
    }

    /// After a sync's job `job_id` took its snapshot's claim: the answer,
    /// when a send that held the claim before recorded one after this send
    /// first looked (its job then ends, superseded, with nothing applied).
    /// A sync records its answer and gives up its claim in one transaction,
    /// so a claim taken is never taken before that answer is readable.
    async fn answered_before_the_claim(
        &self,
        job_id: &str,
        req: &SyncRequest,
        content: &str,
    ) -> Result<Option<SyncOutcome>, AppError> {
        let Some(prev) = self.store.get_sync(&req.source, &req.sync_id).await? else {
            return Ok(None);
        };
        self.end_sync_job(job_id, "superseded").await;
        self.resent(&req.source, &req.sync_id, prev, content)
            .await
            .map(Some)
    }

    /// The outcome of a snapshot another send of it recorded first.
    async fn concurrent_sync(
        &self,
        source: &str,
        sync_id: &str,
        content: &str,
    ) -> Result<SyncOutcome, AppError> {
        if let Some(prev) = self.store.get_sync(source, sync_id).await? {
            return self.resent(source, sync_id, prev, content).await;
        }
        Err(AppError::Store(idgov_store::StoreError::Conflict(
            "the same sync is being processed concurrently; retry".into(),
        )))
    }

    /// Ends an unheld sync whose steps are all applied, in one transaction:
    /// the people behind the snapshot, the snapshot's mark, its receipt and
    /// its `roster.sync` audit event; the job is done and its staged items
    /// go. `resumed`: after a crash or a stop cut the sync short.
    async fn finish_sync(
        &self,
        job_id: &str,
        ctx: &SyncContext,
        detail: &serde_json::Value,
        resumed: bool,
    ) -> Result<SyncOutcome, AppError> {
        let mut out = ctx.out.clone();
        out.rejected = detail["refused"]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|r| {
                        let text = |i: usize| r[i].as_str().unwrap_or_default().to_string();
                        (text(0), text(1))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.outcome = if out.counts.total == 0 {
            Outcome::Unchanged
        } else {
            Outcome::Applied
        };
        let receipt = StoredSync {
            outcome: format!("{:?}", out.outcome).to_lowercase(),
            held_change_id: None,
            response: serde_json::to_value(&out).unwrap_or_default(),
        };
        let (source, sync_id) = (&ctx.mark.source, &ctx.mark.sync_id);
        let total = (ctx.events + ctx.present).to_string();
        let (out_ref, receipt, total) = (&out, &receipt, &total);
        let recorded = self
            .retrying(|| async move {
                let now = self.now();
                let mut tx = self.store.begin().await?;
                tx.update_bulk_job(job_id, "done", total, detail, now)
                    .await?;
                let read = crate::intake::RosterRead {
                    at: ctx.read_at.unwrap_or(now - chrono::Duration::days(1)),
                    arrival: ctx.read_arrival,
                };
                self.finish_roster(
                    &mut tx,
                    &ctx.behind,
                    read,
                    ctx.mark.clone(),
                    &ctx.actor,
                    now,
                )
                .await?;
                tx.audit(AuditEntry::new(
                    &ctx.actor,
                    Action::RosterSync,
                    Target::Roster {
                        source: source.clone(),
                        sync_id: sync_id.clone(),
                    },
                    json!({
                        "outcome": out_ref.outcome, "entries": out_ref.entries_received,
                        "summary": summary(&out_ref.counts), "unchanged": out_ref.diff.unchanged,
                        "guard": out_ref.guard, "rejected": out_ref.rejected,
                        "rejected_count": detail["refused_count"], "held_change_id": null,
                        "job": job_id, "resumed": resumed,
                    }),
                ));
                if !tx.insert_sync(source, sync_id, receipt, now).await? {
                    return Ok(false);
                }
                tx.commit(now).await?;
                Ok(true)
            })
            .await?;
        if !recorded {
            // A concurrent send of the same snapshot won; report its outcome.
            self.end_sync_job(job_id, "failed").await;
            let content = out.content_sha256.clone().unwrap_or_default();
            return self.concurrent_sync(source, sync_id, &content).await;
        }
        self.wake_provisioning();
        self.drop_staged(job_id, ctx.events + ctx.present).await;
        Ok(out)
    }

    /// Deletes an ended job's staged rows (`items` of them staged), 10
    /// rows (20,000 items) per transaction: one large delete would hold
    /// SQLite's writer. Best effort: what a failure or a crash leaves is
    /// deleted at the next start.
    pub(crate) async fn drop_staged(&self, job_id: &str, items: usize) {
        let rows = items.div_ceil(STAGE_STEP) as i64;
        let dropped = async {
            let mut below = 0;
            loop {
                // The last round takes whatever is left.
                below = if below + 10 >= rows {
                    i64::MAX
                } else {
                    below + 10
                };
                let now = self.now();
                let mut tx = self.store.begin().await?;
                tx.delete_bulk_job_items(job_id, below).await?;
                tx.commit(now).await?;
                if below == i64::MAX {
                    return Ok::<_, AppError>(());
                }
                tokio::task::yield_now().await;
            }
        };
        if let Err(e) = dropped.await {
            tracing::warn!(job = job_id, error = %e, "cannot delete a roster sync's staged rows; they are deleted at the next start");
        }
    }
}

/// What a sync stages as items, read a chunk at a time (see
/// [`App::stage_items`]): its changes in the order they apply (as HR
/// events at the snapshot's time and zone, with `events`; else as they
/// are), then, with `present`, the entries of the people it lists
/// unchanged.
pub(crate) struct SyncItems<'a> {
    run: &'a str,
    walked: &'a Walked,
    events: Option<(&'a RosterMark, chrono_tz::Tz)>,
    present: bool,
    pos: usize,
}

impl<'a> SyncItems<'a> {
    fn new(
        run: &'a str,
        walked: &'a Walked,
        events: Option<(&'a RosterMark, chrono_tz::Tz)>,
        present: bool,
    ) -> Self {
        SyncItems {
            run,
            walked,
            events,
            present,
            pos: 0,
        }
    }

    /// The next `n` items, as JSON (fewer only at the end; none once all
    /// are taken): a staged row holds a whole chunk, whether it spans the
    /// changes and the people present or not.
    pub(crate) async fn next(&mut self, app: &App, n: usize) -> Result<Vec<String>, AppError> {
        let w = self.walked;
        let changes = w.total();
        let mut out = Vec::with_capacity(n);
        if self.pos < changes {
            let taken = app.sync_changes(self.run, w, self.pos, n).await?;
            for c in taken {
                out.push(match self.events {
                    Some((mark, zone)) => serde_json::to_string(&roster::event_of(
                        c,
                        &mark.source,
                        &mark.sync_id,
                        mark.as_of,
                        zone,
                    )),
                    None => serde_json::to_string(&c),
                });
            }
        }
        let from = (self.pos + out.len()).saturating_sub(changes);
        let end = (from + n - out.len()).min(w.present.len());
        if self.present && self.pos + out.len() >= changes && from < end {
            // Their entries as staged: the JSON of a `RosterEntry`, what
            // an item of a person present is, copied unparsed.
            let entries = app
                .store
                .staged_roster_json_at(self.run, &w.present[from..end])
                .await?;
            if entries.len() != end - from {
                return Err(AppError::Store(idgov_store::StoreError::Corrupt(format!(
                    "roster stage {}: {} of {} entries read back",
                    self.run,
                    entries.len(),
                    end - from
                ))));
            }
            out.extend(entries.into_iter().map(|(_, e)| Ok(e)));
        }
        self.pos += out.len();
        out.into_iter()
            .collect::<Result<_, _>>()
            .map_err(unstageable)
    }
}

/// What an unheld sync's job keeps besides its items: enough to finish
/// it, and to answer and audit it as the sync itself would have.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SyncContext {
    mark: RosterMark,
    behind: Vec<String>,
    /// When the snapshot read the people (a job staged before this was
    /// kept: a day before it finishes, which only replays more people).
    #[serde(default)]
    read_at: Option<DateTime<Utc>>,
    #[serde(default)]
    read_arrival: Option<i64>,
    /// The answer without its outcome and refusals (known at the end).
    out: SyncOutcome,
    /// How many events (items 0..events), then presences, are staged.
    events: usize,
    present: usize,
    actor: String,
}

/// The staged item that holds a sync job's [`SyncContext`].
const CONTEXT_ITEM: i64 = -1;
/// Items staged per row (and transaction).
const STAGE_STEP: usize = 2000;

/// Logs how long a roster sync took to check its roster (ids listed
/// twice, management cycles), to diff it against the people, and to stage
/// its changes for applying or holding: what an operator of a large
/// roster looks at first.
fn log_phases(
    req: &SyncRequest,
    entries: usize,
    changes: usize,
    held: bool,
    checked: std::time::Duration,
    diffed: std::time::Duration,
    started: std::time::Instant,
) {
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    tracing::info!(
        source = %req.source,
        sync_id = %req.sync_id,
        entries,
        changes,
        held,
        check_ms = ms(checked),
        diff_ms = ms(diffed.saturating_sub(checked)),
        stage_ms = ms(started.elapsed().saturating_sub(diffed)),
        "roster sync checked, diffed and staged"
    );
}

/// Items `skip..skip + take` of a staged row (a JSON array of items),
/// each made straight into a `T`; the items around them are checked as
/// JSON and skipped, not built.
struct ItemsOfRow<T> {
    skip: usize,
    take: usize,
    item: std::marker::PhantomData<T>,
}

impl<T> ItemsOfRow<T> {
    fn new(skip: usize, take: usize) -> Self {
        ItemsOfRow {
            skip,
            take,
            item: std::marker::PhantomData,
        }
    }
}

impl<'de, T: Deserialize<'de>> serde::de::DeserializeSeed<'de> for ItemsOfRow<T> {
    type Value = Vec<T>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<T>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ItemsOfRow<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array of staged items")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        use serde::de::IgnoredAny;
        for _ in 0..self.skip {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(Vec::new());
            }
        }
        let mut out = Vec::with_capacity(self.take.min(STAGE_STEP));
        while out.len() < self.take {
            match seq.next_element::<T>()? {
                Some(item) => out.push(item),
                None => return Ok(out),
            }
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(out)
    }
}

/// A staged item that cannot be written as JSON.
fn unstageable(e: serde_json::Error) -> AppError {
    AppError::Store(idgov_store::StoreError::Database(format!(
        "staging a roster sync: {e}"
    )))
}

/// The outcome a stored receipt recorded.
fn stored_outcome(prev: StoredSync) -> Result<SyncOutcome, AppError> {
    serde_json::from_value(prev.response).map_err(|e| {
        AppError::Store(idgov_store::StoreError::Corrupt(format!(
            "stored sync receipt: {e}"
        )))
    })
}

/// "2 joiners, 1 mover, 0 updates, 3 leavers, 0 rehires".
pub fn summary(c: &DiffCounts) -> String {
    let mut s = format!(
        "{} joiners, {} movers, {} updates, {} leavers, {} rehires",
        c.joiners, c.movers, c.updates, c.leavers, c.rehires
    );
    // Rare: named only when there are some.
    if c.withdrawals > 0 {
        s.push_str(&format!(", {} withdrawn starts", c.withdrawals));
    }
    s
}

/// The kind of an unheld roster sync's bulk job.
pub const ROSTER_SYNC: &str = "roster_sync";

/// The claim a sync of snapshot `sync_id` of `source` holds while it is
/// staged and applied (held: while it is staged): the database lets one job
/// at a time hold it (see `bulk_jobs_one_claim` in the migrations), so two
/// sends of one snapshot that arrive together never both apply.
pub fn sync_claim(source: &str, sync_id: &str) -> String {
    serde_json::json!(["roster", source, sync_id]).to_string()
}

impl App {
    /// Stages an unheld sync as a bulk job leased to this process (its
    /// context, its events, then the entries of the people it lists
    /// unchanged; see [`App::stage_items`]), and marks it `running`: a crash
    /// while staging leaves a job that is reported (nothing of it was
    /// applied), never one applied from part of its items. Returns the
    /// running job, or `None` when another job holds `claim` (nothing
    /// staged).
    async fn stage_sync(
        &self,
        ctx: &SyncContext,
        items: SyncItems<'_>,
        claim: &str,
    ) -> Result<Option<idgov_store::BulkJob>, AppError> {
        let now = self.now();
        let mut job = idgov_store::BulkJob {
            id: format!("sync-{}", uuid::Uuid::now_v7()),
            kind: ROSTER_SYNC.into(),
            state: "staging".into(),
            policy_version: self.policy().version,
            cursor: "0".into(),
            detail: json!({
                "source": ctx.mark.source, "sync_id": ctx.mark.sync_id,
                "content": ctx.out.content_sha256,
                "changes": ctx.events + ctx.present, "actor": ctx.actor,
                "refused_count": 0, "refused": [],
            }),
            created_at: now,
            updated_at: now,
        };
        let context = serde_json::to_string(ctx).map_err(unstageable)?;
        if !self
            .stage_items(&job, Some(context), items, Some(claim))
            .await?
        {
            return Ok(None);
        }
        job.state = "running".into();
        let job_ref = &job;
        self.retrying(|| async move {
            let now = self.now();
            let mut tx = self.store.begin().await?;
            tx.update_bulk_job(&job_ref.id, "running", "0", &job_ref.detail, now)
                .await?;
            tx.commit(now).await?;
            Ok(())
        })
        .await?;
        Ok(Some(job))
    }

    /// Starts `job` (in state `staging`, leased to this process) with its
    /// `context` item, then writes `items` as its staged rows,
    /// [`STAGE_STEP`] to a row (a JSON array), a row per transaction
    /// (intake goes on between them), renewing the lease before each. The
    /// job stays `staging`: the caller says what it becomes. With a
    /// `claim` (see [`sync_claim`]), the job holds it from its start;
    /// false, and nothing written, when another job holds it.
    pub(crate) async fn stage_items(
        &self,
        job: &idgov_store::BulkJob,
        context: Option<String>,
        mut items: SyncItems<'_>,
        claim: Option<&str>,
    ) -> Result<bool, AppError> {
        let context = &context;
        let started = self
            .retrying(|| async move {
                let now = self.now();
                let lease = now + chrono::Duration::seconds(crate::policy::JOB_LEASE_SECONDS);
                let mut tx = self.store.begin().await?;
                if claim.is_none() {
                    tx.insert_bulk_job(job, &self.holder, lease).await?;
                } else if !tx
                    .insert_claiming_bulk_job(job, &self.holder, lease, claim)
                    .await?
                {
                    return Ok(false);
                }
                if let Some(context) = context {
                    tx.insert_bulk_job_items(&job.id, CONTEXT_ITEM, std::slice::from_ref(context))
                        .await?;
                }
                tx.commit(now).await?;
                Ok(true)
            })
            .await?;
        if !started {
            return Ok(false);
        }
        let mut n = 0i64;
        loop {
            let chunk = items.next(self, STAGE_STEP).await?;
            if chunk.is_empty() {
                return Ok(true);
            }
            // One row per chunk, a JSON array of its items: a row per item
            // cost PostgreSQL a sixth more on a million-person import.
            let body = [format!("[{}]", chunk.join(","))];
            let (id, chunk_ref) = (&job.id, &body);
            self.retrying(|| async move {
                let now = self.now();
                let lease = now + chrono::Duration::seconds(crate::policy::JOB_LEASE_SECONDS);
                if !self.store.claim_bulk_job(id, &self.holder, now, lease, true).await? {
                    return Err(AppError::Unavailable(format!(
                        "roster sync job {id} was taken over while it was staged; send the roster again"
                    )));
                }
                let mut tx = self.store.begin().await?;
                tx.insert_bulk_job_items(id, n, chunk_ref).await?;
                tx.commit(now).await?;
                Ok(())
            })
            .await?;
            n += 1;
        }
    }

    /// Job `job_id`'s staged items `from..from + limit` (their places in
    /// the order they were staged), read a row at a time, each turned into
    /// a `T`.
    pub(crate) async fn staged_items<T: serde::de::DeserializeOwned>(
        &self,
        job_id: &str,
        from: usize,
        limit: usize,
    ) -> Result<Vec<T>, AppError> {
        let corrupt = |e: serde_json::Error| {
            AppError::Store(idgov_store::StoreError::Corrupt(format!(
                "staged items of job {job_id}: {e}"
            )))
        };
        let mut out = Vec::with_capacity(limit.min(STAGE_STEP * 16));
        let mut row = (from / STAGE_STEP) as i64;
        let mut skip = from % STAGE_STEP;
        while out.len() < limit {
            // The rows that hold what is still wanted, at most 16 a read.
            let rows = (skip + limit - out.len()).div_ceil(STAGE_STEP).clamp(1, 16) as i64;
            let page = self.store.bulk_job_items(job_id, row, rows).await?;
            if page.is_empty() {
                break;
            }
            for (n, body) in page {
                if n != row {
                    return Err(AppError::Store(idgov_store::StoreError::Corrupt(format!(
                        "staged items of job {job_id}: row {row} is missing"
                    ))));
                }
                let want = limit - out.len();
                let mut de = serde_json::Deserializer::from_str(&body);
                let items = ItemsOfRow::<T>::new(skip, want)
                    .deserialize(&mut de)
                    .and_then(|items| de.end().map(|()| items))
                    .map_err(corrupt)?;
                out.extend(items);
                if out.len() == limit {
                    return Ok(out);
                }
                skip = 0;
                row += 1;
            }
        }
        Ok(out)
    }

    /// Goes on with an unheld sync a crash or a stop cut short, from its
    /// recorded place (run by `resume_bulk_jobs` once its lease ran out),
    /// and finishes it as the sync itself would have. A job cut short while
    /// it was staged (or staged before items were kept) is reported
    /// instead: nothing of it was applied, or what was is not staged.
    pub(crate) async fn resume_sync(&self, job: &idgov_store::BulkJob) -> Result<(), AppError> {
        if job.state != "running" {
            return self.interrupted_sync(job).await;
        }
        let context = self
            .store
            .bulk_job_items(&job.id, CONTEXT_ITEM, 1)
            .await?
            .into_iter()
            .find(|(n, _)| *n == CONTEXT_ITEM);
        let Some((_, context)) = context else {
            return self.interrupted_sync(job).await;
        };
        let staged = |e: serde_json::Error| {
            AppError::Store(idgov_store::StoreError::Corrupt(format!(
                "roster sync job {}: {e}",
                job.id
            )))
        };
        let ctx: SyncContext = serde_json::from_str(&context).map_err(staged)?;
        let at = job.cursor.parse::<usize>().unwrap_or(0);
        tracing::warn!(job = %job.id, source = %ctx.mark.source, sync_id = %ctx.mark.sync_id,
            applied = at, changes = ctx.events + ctx.present, "resuming a roster sync cut short");
        let step = crate::held::StepJob {
            id: &job.id,
            detail: job.detail.clone(),
        };
        let steps = RosterSteps::staged(&job.id, ctx.events, ctx.present, None);
        let detail = self
            .record_roster_in_steps(&steps, &ctx.mark, &ctx.actor, at, &step)
            .await?;
        self.finish_sync(&job.id, &ctx, &detail, true).await?;
        Ok(())
    }

    /// Ends a sync's job that stopped with an error its caller was told
    /// of, with its staged items (best effort: if the store is down, the
    /// job is found again later).
    pub(crate) async fn end_sync_job(&self, id: &str, state: &str) {
        let now = self.now();
        let ended = async {
            let job = self.store.get_bulk_job(id).await?;
            let mut tx = self.store.begin().await?;
            if let Some(job) = job {
                tx.update_bulk_job(id, state, &job.cursor, &job.detail, now)
                    .await?;
            }
            tx.delete_bulk_job_items(id, i64::MAX).await?;
            tx.commit(now).await?;
            Ok::<_, AppError>(())
        };
        if let Err(e) = ended.await {
            tracing::warn!(job = id, error = %e, "cannot record the end of a roster sync's job");
        }
    }

    /// Reports an unheld roster sync that a crash or a stop cut short and
    /// that cannot be resumed: one cut short while it was staged (nothing
    /// of it was applied), or one staged before items were kept. A security
    /// event says so, and what to do: send the roster again (it is diffed
    /// against what was applied).
    pub(crate) async fn interrupted_sync(
        &self,
        job: &idgov_store::BulkJob,
    ) -> Result<(), AppError> {
        let now = self.now();
        let d = &job.detail;
        let source = d["source"].as_str().unwrap_or_default().to_string();
        let sync_id = d["sync_id"].as_str().unwrap_or_default().to_string();
        let applied = if job.state == "staging" {
            "0"
        } else {
            job.cursor.as_str()
        };
        let mut tx = self.store.begin().await?;
        tx.update_bulk_job(&job.id, "interrupted", &job.cursor, d, now)
            .await?;
        tx.delete_bulk_job_items(&job.id, i64::MAX).await?;
        tx.audit(
            AuditEntry::new(
                crate::SYSTEM_SCHEDULER,
                Action::RosterSyncInterrupted,
                Target::Roster {
                    source: source.clone(),
                    sync_id: sync_id.clone(),
                },
                json!({
                    "job": job.id, "applied": applied, "changes": d["changes"],
                    "started_at": job.created_at, "actor": d["actor"],
                    "what_to_do": "send the roster again: it is diffed against what was applied",
                }),
            )
            .security(),
        );
        tx.commit(now).await?;
        tracing::warn!(source = %source, sync_id = %sync_id, applied = %applied, "a roster sync was cut short and cannot be resumed; send it again");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::ItemsOfRow;
    use serde::de::DeserializeSeed;

    fn items(body: &str, skip: usize, take: usize) -> Result<Vec<u32>, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(body);
        let v = ItemsOfRow::<u32>::new(skip, take).deserialize(&mut de)?;
        de.end()?;
        Ok(v)
    }

    #[test]
    fn a_staged_row_gives_the_items_asked_for_and_checks_the_rest() {
        let row = "[0,1,2,3,4,5,6,7,8,9]";
        for skip in 0..=11 {
            for take in 0..=11 {
                let want: Vec<u32> = (0..10).skip(skip).take(take).collect();
                assert_eq!(
                    items(row, skip, take).unwrap(),
                    want,
                    "skip {skip} take {take}"
                );
            }
        }
        // Items skipped or left are still checked as JSON, and so is
        // what follows the row.
        assert!(items("[0,{\"a\":}]", 0, 1).is_err());
        assert!(items("[{\"a\":,0]", 1, 1).is_err());
        assert!(items("[0,1] x", 0, 2).is_err());
        // An item of the wrong shape, where one is wanted, is refused.
        assert!(items("[0,\"one\"]", 0, 2).is_err());
        assert!(items("{}", 0, 1).is_err());
    }
}

//! Roster previews: the whole diff of a dry run, kept for a day to be read
//! a page at a time (ListRosterPreview, `idgov hr preview`).
//!
//! A dry run answers with the counts and at most [`SHOWN_CHANGES`](crate::roster::SHOWN_CHANGES) of its
//! changes, so the answer stays small whatever the roster. When it shows
//! fewer than it found, its changes (leavers first, the order a sync would
//! apply them in) are staged as items of a bulk job of kind
//! [`ROSTER_PREVIEW`], 2,000 to a row, and the answer carries the
//! preview's id. Nothing of the dry run is applied; the preview is not a
//! change of state and is not audited. It is removed [`PREVIEW_KEPT_HOURS`]
//! after its dry run (`expire_previews`, run by the bulk loop).

use super::App;
use crate::error::AppError;
use chrono::{DateTime, Utc};
use idgov_domain::roster::{RosterChange, RosterDiff};
use idgov_store::BulkJob;
use serde_json::json;

/// The kind of a roster preview's bulk job.
pub const ROSTER_PREVIEW: &str = "roster_preview";

/// How long a preview is kept after its dry run.
pub const PREVIEW_KEPT_HOURS: i64 = 24;

/// A dry run whose changes, written as JSON, pass this many bytes is
/// previewed even with fewer than [`SHOWN_CHANGES`](crate::roster::SHOWN_CHANGES) changes: its answer
/// may be cut to stay under the message limit.
const PREVIEW_ABOVE_BYTES: usize = 1 << 20;

/// The bulk job that holds preview `id`.
fn job_id(id: &str) -> String {
    format!("preview-{id}")
}

/// True when a dry run's answer, `shown` of its `total` changes, may not
/// show them all.
pub(crate) fn needs_preview(total: usize, shown: &RosterDiff) -> bool {
    if total > shown.changes.len() {
        return true;
    }
    let mut bytes = 0;
    for c in &shown.changes {
        bytes += serde_json::to_string(c).map_or(0, |s| s.len());
        if bytes > PREVIEW_ABOVE_BYTES {
            return true;
        }
    }
    false
}

/// One page of a roster preview.
#[derive(Debug, Clone)]
pub struct PreviewPage {
    pub changes: Vec<RosterChange>,
    /// How many changes the dry run found in all.
    pub total: usize,
    pub expires_at: DateTime<Utc>,
}

impl App {
    /// Stages the whole of a dry run's diff, its `total` `changes` in the
    /// order a sync would apply them (leavers first), as a preview and
    /// returns its id. A failure leaves nothing to read (and nothing behind
    /// once the sweep has run).
    pub(crate) async fn stage_preview(
        &self,
        source: &str,
        sync_id: &str,
        changes: crate::roster::SyncItems<'_>,
        total: usize,
        actor: &str,
    ) -> Result<String, AppError> {
        let id = uuid::Uuid::now_v7().to_string();
        let now = self.now();
        let detail = json!({
            "source": source, "sync_id": sync_id, "changes": total, "actor": actor,
        });
        let job = BulkJob {
            id: job_id(&id),
            kind: ROSTER_PREVIEW.into(),
            state: "staging".into(),
            policy_version: self.policy().version,
            cursor: "0".into(),
            detail,
            created_at: now,
            updated_at: now,
        };
        let staged = async {
            self.stage_items(&job, None, changes, None).await?;
            let job = &job;
            self.retrying(|| async move {
                let now = self.now();
                let mut tx = self.store.begin().await?;
                tx.update_bulk_job(&job.id, "preview", "0", &job.detail, now)
                    .await?;
                tx.commit(now).await?;
                Ok(())
            })
            .await
        };
        if let Err(e) = staged.await {
            self.end_sync_job(&job.id, "failed").await;
            return Err(e);
        }
        tracing::info!(preview = %id, changes = total, "roster dry run kept as a preview");
        Ok(id)
    }

    /// Preview `id`'s changes from place `from` on, at most `limit`, in
    /// the order a sync would apply them (leavers first).
    pub async fn roster_preview(
        &self,
        id: &str,
        from: usize,
        limit: usize,
    ) -> Result<PreviewPage, AppError> {
        let gone = || {
            AppError::not_found(format!(
                "there is no roster preview {}; a preview is kept for {PREVIEW_KEPT_HOURS} hours \
                 after its dry run: send the dry run again",
                idgov_domain::error::echo(id)
            ))
        };
        if id.is_empty() || id.len() > 64 {
            return Err(gone());
        }
        let job = self
            .store
            .get_bulk_job(&job_id(id))
            .await?
            .filter(|j| j.kind == ROSTER_PREVIEW && j.state == "preview")
            .ok_or_else(gone)?;
        let expires_at = job.created_at + chrono::Duration::hours(PREVIEW_KEPT_HOURS);
        if self.now() >= expires_at {
            return Err(gone());
        }
        let total = job.detail["changes"].as_u64().unwrap_or(0) as usize;
        let want = limit.min(total.saturating_sub(from));
        let changes = self.staged_items(&job.id, from, want).await?;
        Ok(PreviewPage {
            changes,
            total,
            expires_at,
        })
    }

    /// Removes the previews older than [`PREVIEW_KEPT_HOURS`] (and any a
    /// failure or a crash left half staged), their rows a few at a time.
    /// Returns how many went.
    pub async fn expire_previews(&self) -> Result<usize, AppError> {
        let before = self.now() - chrono::Duration::hours(PREVIEW_KEPT_HOURS);
        let mut n = 0;
        loop {
            let old = self
                .store
                .bulk_jobs_started_before(
                    ROSTER_PREVIEW,
                    ["preview", "staging", "failed"],
                    before,
                    100,
                )
                .await?;
            if old.is_empty() {
                return Ok(n);
            }
            for job in old {
                let items = job.detail["changes"].as_u64().unwrap_or(0) as usize;
                self.drop_staged(&job.id, items).await;
                let now = self.now();
                let mut tx = self.store.begin().await?;
                tx.delete_bulk_job(&job.id).await?;
                tx.commit(now).await?;
                n += 1;
            }
        }
    }
}

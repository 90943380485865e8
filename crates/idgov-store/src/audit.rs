//! Reading and verifying the audit chain.

use crate::convert::{ReadRow, get, micros, time};
use crate::{Fast, Store, StoreError, WriteTx};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use idgov_domain::audit::{
    AuditRecord, ChainBreak, ChainPart, join_parts, split_chain, subject_in_text,
};

/// Filters of [`Store::list_audit_events`]; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: String,
    pub target: String,
    pub action: String,
    /// The person the events are about (`idgov_domain::audit::subject_of`).
    pub subject: String,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

/// The result of verifying the whole chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub checked: u64,
    pub head_hash: String,
    pub broken: Option<ChainBreak>,
    /// Signed checkpoints checked against the chain (filled by the app).
    pub checkpoints: u64,
    /// The newest checkpoint's position and time, if any.
    pub last_checkpoint: Option<(i64, DateTime<Utc>)>,
}

/// A signed audit checkpoint: the chain head at `seq` had `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
    pub signed_at: DateTime<Utc>,
    pub key_id: String,
    /// Ed25519 signature (base64) over `idgov_domain::audit::checkpoint_statement`.
    pub signature: String,
}

pub(crate) fn record_from_row(row: &impl ReadRow) -> Result<AuditRecord, StoreError> {
    Ok(AuditRecord {
        seq: row.col("seq")?,
        occurred_at: time(row.col("occurred_at")?)?,
        actor: row.col("actor")?,
        action: row.col("action")?,
        target: row.col("target")?,
        detail: row.col("detail")?,
        security: row.col::<i64>("security")? != 0,
        prev_hash: row.col("prev_hash")?,
        hash: row.col("hash")?,
    })
}

impl Store {
    /// Audit events in chain order, after `after_seq`. Only the filters
    /// given become predicates, so each can use its index (`actor, seq`;
    /// `target, seq`; `occurred_at, seq`) and an unfiltered page is a seek
    /// on `seq`, however long the log.
    pub async fn list_audit_events(
        &self,
        f: &AuditFilter,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let mut conds = vec!["seq > $1".to_string()];
        let mut texts: Vec<&str> = Vec::new();
        let mut times: Vec<i64> = Vec::new();
        let mut n = 1;
        for (col, v) in [
            ("actor", &f.actor),
            ("target", &f.target),
            ("action", &f.action),
            ("subject", &f.subject),
        ] {
            if !v.is_empty() {
                n += 1;
                conds.push(format!("{col} = ${n}"));
                texts.push(v);
            }
        }
        for (op, t) in [(">=", f.start), ("<", f.end)] {
            if let Some(t) = t {
                n += 1;
                conds.push(format!("occurred_at {op} ${n}"));
                times.push(micros(t));
            }
        }
        let sql = format!(
            "SELECT seq, occurred_at, actor, action, target, detail, security, prev_hash, hash \
             FROM audit_events WHERE {} ORDER BY seq LIMIT ${}",
            conds.join(" AND "),
            n + 1
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(after_seq);
        for t in texts {
            q = q.bind(t);
        }
        for t in times {
            q = q.bind(t);
        }
        let rows = q.bind(limit).fetch_all(self.reader()).await?;
        rows.iter().map(record_from_row).collect()
    }

    /// The chain head: the last event's position and hash.
    pub async fn audit_head(&self) -> Result<(i64, String), StoreError> {
        let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(self.reader())
            .await?;
        Ok((get(&row, "seq")?, get(&row, "hash")?))
    }

    /// Recomputes the whole chain up to the head read first (events added
    /// meanwhile are left to the next run) and reports the first event
    /// altered, missing or out of place. The chain is read in parts side by
    /// side, one per core, on the native read path; `join_parts` makes the
    /// answer the same as one pass over the chain.
    pub async fn verify_audit_chain(&self) -> Result<VerifyReport, StoreError> {
        let (head_seq, head_hash) = self.audit_head().await?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let parts = split_chain(head_seq, cores);
        let mut tasks = Vec::with_capacity(parts.len());
        for part in parts {
            let store = self.clone();
            tasks.push(tokio::spawn(async move { store.check_part(part).await }));
        }
        let mut parts = Vec::with_capacity(tasks.len());
        for t in tasks {
            parts.push(
                t.await
                    .map_err(|e| StoreError::Database(format!("a verify task failed: {e}")))??,
            );
        }
        let (checked, broken) = join_parts(&parts, Some((head_seq, &head_hash)));
        Ok(VerifyReport {
            checkpoints: 0,
            last_checkpoint: None,
            checked,
            head_hash,
            broken,
        })
    }

    /// Reads and checks one part of the chain.
    async fn check_part(&self, mut part: ChainPart) -> Result<ChainPart, StoreError> {
        const SQL: &str = "SELECT seq, occurred_at, actor, action, target, detail, security, \
                           prev_hash, hash, subject FROM audit_events WHERE seq > $1 AND seq <= $2 ORDER BY seq";
        let (after, through) = part.bounds();
        if let Fast::Lite(l) = self.fast() {
            return l
                .run_blocking(move |c| {
                    let mut st = c.prepare(SQL)?;
                    let names = crate::lite::names(&st);
                    let mut rows = crate::lite::query(&mut st, &[&after, &through])?;
                    while let Some(row) = rows.next()? {
                        if !feed_row(&mut part, &crate::lite::LiteRow::new(row, &names)) {
                            break;
                        }
                    }
                    Ok(part)
                })
                .await;
        }
        read_pool!(self, |pool| {
            let mut rows = sqlx::query(SQL).bind(after).bind(through).fetch(pool);
            while let Some(row) = rows.try_next().await? {
                if !feed_row(&mut part, &row) {
                    break;
                }
            }
            Ok(part)
        })
    }
}

/// Feeds one stored row to a part; a row that does not read as an event is
/// the part's problem, named by its position when that reads.
///
/// The event's person (the index of `audit list --employee`) is checked
/// against its content too: it is not hashed, but derived from what is, so
/// a person index altered to hide an event from one person's trail is
/// found like an altered event.
fn feed_row(part: &mut ChainPart, row: &impl ReadRow) -> bool {
    let rec = match record_from_row(row) {
        Ok(rec) => rec,
        Err(e) => {
            part.unreadable(row.col::<i64>("seq").ok(), &e.to_string());
            return false;
        }
    };
    if !part.feed(&rec) {
        return false;
    }
    let stored = match row.col::<Option<String>>("subject") {
        Ok(s) => s,
        Err(e) => {
            part.unreadable(Some(rec.seq), &e.to_string());
            return false;
        }
    };
    let derived = subject_in_text(&rec.target, &rec.detail);
    if stored != derived {
        part.mismatch(
            rec.seq,
            format!(
                "event {}: its person index reads {} but its content names {}: the index was altered",
                rec.seq,
                stored.as_deref().unwrap_or("nobody"),
                derived.as_deref().unwrap_or("nobody"),
            ),
        );
        return false;
    }
    true
}

impl Store {
    /// Checkpoints after `after_seq`, oldest first.
    pub async fn list_checkpoints(
        &self,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<Checkpoint>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, hash, signed_at, key_id, signature FROM audit_checkpoints \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after_seq)
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Checkpoint {
                    seq: get(r, "seq")?,
                    hash: get(r, "hash")?,
                    signed_at: time(get(r, "signed_at")?)?,
                    key_id: get(r, "key_id")?,
                    signature: get(r, "signature")?,
                })
            })
            .collect()
    }

    /// The newest checkpoint's position (0 without one).
    pub async fn last_checkpoint_seq(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS seq FROM audit_checkpoints")
            .fetch_one(self.reader())
            .await?;
        get(&row, "seq")
    }

    /// The stored hash of event `seq`, if the event exists.
    pub async fn audit_hash_at(&self, seq: i64) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT hash FROM audit_events WHERE seq = $1")
            .bind(seq)
            .fetch_optional(self.reader())
            .await?;
        row.map(|r| get(&r, "hash")).transpose()
    }
}

impl WriteTx {
    /// Records a signed checkpoint (once per position); false when one
    /// for that position exists.
    pub async fn insert_checkpoint(&mut self, c: &Checkpoint) -> Result<bool, StoreError> {
        let sql = match self.backend {
            crate::Backend::Sqlite => {
                "INSERT OR IGNORE INTO audit_checkpoints (seq, hash, signed_at, key_id, signature) \
                 VALUES ($1, $2, $3, $4, $5)"
            }
            crate::Backend::Postgres => {
                "INSERT INTO audit_checkpoints (seq, hash, signed_at, key_id, signature) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (seq) DO NOTHING"
            }
        };
        let n = sqlx::query(sql)
            .bind(c.seq)
            .bind(&c.hash)
            .bind(micros(c.signed_at))
            .bind(&c.key_id)
            .bind(&c.signature)
            .execute(&mut *self.tx)
            .await?
            .rows_affected();
        Ok(n > 0)
    }
}

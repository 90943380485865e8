//! Concurrent point reads gathered into one query (PostgreSQL).
//!
//! On PostgreSQL every read is a round trip to another process, and at
//! many concurrent callers the round trips, not the lookups, take the CPU
//! (measured: 137 µs of server CPU per GetIdentity at 64 clients). A
//! [`Coalescer`] lets the callers that arrive while earlier reads are in
//! flight share one query (`= ANY($1)`): each caller queues its request,
//! and whoever gets one of the few leader places next runs every queued
//! request as one batch and hands each caller its own answer. A lone
//! caller runs at once, alone; nobody waits for a batch to fill.
//!
//! A batch that fails or is abandoned (its leader cancelled) answers
//! nobody: each of its callers then reads alone and gets its own answer
//! or error ([`Coalescer::call`] returns `None`).

use crate::StoreError;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{Semaphore, oneshot};

struct Waiting<Req, Resp> {
    id: u64,
    req: Req,
    reply: oneshot::Sender<Resp>,
}

struct Queue<Req, Resp> {
    next_id: u64,
    waiting: Vec<Waiting<Req, Resp>>,
}

/// Gathers concurrent requests of one kind into batches.
pub(crate) struct Coalescer<Req, Resp> {
    queue: Mutex<Queue<Req, Resp>>,
    leaders: Semaphore,
    max_batch: usize,
    stats: Counters,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    answered: AtomicU64,
    failed: AtomicU64,
}

/// What the batches did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Batches run (failed ones included).
    pub batches: u64,
    /// Requests answered by a batch.
    pub answered: u64,
    /// Batches that failed (their callers read alone).
    pub failed: u64,
}

impl std::ops::Add for BatchStats {
    type Output = BatchStats;
    fn add(self, o: BatchStats) -> BatchStats {
        BatchStats {
            batches: self.batches + o.batches,
            answered: self.answered + o.answered,
            failed: self.failed + o.failed,
        }
    }
}

impl<Req, Resp> std::fmt::Debug for Coalescer<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer")
            .field("leaders", &self.leaders.available_permits())
            .field("max_batch", &self.max_batch)
            .finish()
    }
}

impl<Req, Resp> Coalescer<Req, Resp> {
    /// At most `leaders` batches run at once, each of at most `max_batch`
    /// requests.
    pub(crate) fn new(leaders: usize, max_batch: usize) -> Self {
        Coalescer {
            queue: Mutex::new(Queue {
                next_id: 0,
                waiting: Vec::new(),
            }),
            leaders: Semaphore::new(leaders.max(1)),
            max_batch: max_batch.max(1),
            stats: Counters::default(),
        }
    }

    pub(crate) fn stats(&self) -> BatchStats {
        BatchStats {
            batches: self.stats.batches.load(Ordering::Relaxed),
            answered: self.stats.answered.load(Ordering::Relaxed),
            failed: self.stats.failed.load(Ordering::Relaxed),
        }
    }

    /// Answers `req` within a batch run by `run`, which gets the requests
    /// and answers each, in order. `None` when the batch failed or was
    /// abandoned: the caller then reads alone.
    pub(crate) async fn call<F, Fut>(&self, req: Req, run: F) -> Option<Resp>
    where
        F: FnOnce(Vec<Req>) -> Fut,
        Fut: Future<Output = Result<Vec<Resp>, StoreError>>,
    {
        let (reply, mut answer) = oneshot::channel();
        let id = {
            let mut q = self.queue.lock().ok()?;
            let id = q.next_id;
            q.next_id = q.next_id.wrapping_add(1);
            q.waiting.push(Waiting { id, req, reply });
            id
        };
        // Answered by another caller's batch, or a leader place: whichever
        // comes first.
        let permit = tokio::select! {
            biased;
            r = &mut answer => return r.ok(),
            p = self.leaders.acquire() => p.ok()?,
        };
        let batch = self.take(id);
        if !batch.is_empty() {
            let (reqs, replies): (Vec<Req>, Vec<oneshot::Sender<Resp>>) =
                batch.into_iter().map(|w| (w.req, w.reply)).unzip();
            let n = reqs.len();
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            match run(reqs).await {
                Ok(answers) if answers.len() == n => {
                    self.stats.answered.fetch_add(n as u64, Ordering::Relaxed);
                    for (reply, a) in replies.into_iter().zip(answers) {
                        let _ = reply.send(a);
                    }
                }
                Ok(answers) => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        asked = n,
                        answered = answers.len(),
                        "a batched read answered the wrong number of requests; each reads alone"
                    );
                }
                Err(e) => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, requests = n, "a batched read failed; each reads alone");
                }
            }
        }
        drop(permit);
        answer.await.ok()
    }

    /// The leader's batch: its own request (if no other leader took it)
    /// and the oldest others, at most `max_batch`.
    fn take(&self, own: u64) -> Vec<Waiting<Req, Resp>> {
        let Ok(mut q) = self.queue.lock() else {
            return Vec::new();
        };
        let waiting = &mut q.waiting;
        if waiting.len() <= self.max_batch {
            return std::mem::take(waiting);
        }
        let mut batch = Vec::with_capacity(self.max_batch);
        if let Some(pos) = waiting.iter().position(|w| w.id == own) {
            batch.push(waiting.remove(pos));
        }
        let rest = self.max_batch - batch.len();
        batch.extend(waiting.drain(..rest));
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::Coalescer;
    use crate::StoreError;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Every caller gets the answer to its own request, whatever batches
    /// formed; concurrent callers share batches; a failed batch answers
    /// nobody (each caller then reads alone).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_caller_gets_its_own_answer() {
        let c: Arc<Coalescer<u64, u64>> = Arc::new(Coalescer::new(2, 7));
        let batches = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..500u64 {
            let (c, batches) = (c.clone(), batches.clone());
            tasks.push(tokio::spawn(async move {
                c.call(i, |reqs: Vec<u64>| async move {
                    batches.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    assert!(reqs.len() <= 7, "a batch over its limit");
                    Ok(reqs.iter().map(|r| r * 3).collect())
                })
                .await
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.ok().flatten(), Some(i as u64 * 3));
        }
        let n = batches.load(Ordering::Relaxed);
        assert!(
            n < 500,
            "500 concurrent calls made {n} batches: nothing was shared"
        );
        let stats = c.stats();
        assert_eq!(
            (stats.batches, stats.answered, stats.failed),
            (n as u64, 500, 0)
        );

        let failed = c
            .call(1, |_reqs: Vec<u64>| async {
                Err::<Vec<u64>, _>(StoreError::Conflict("down".into()))
            })
            .await;
        assert_eq!(failed, None);
        let short = c.call(1, |_reqs: Vec<u64>| async { Ok(Vec::new()) }).await;
        assert_eq!(short, None, "an answer missing from a batch is no answer");
        assert_eq!(c.stats().failed, 2);
    }
}

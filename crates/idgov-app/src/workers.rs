//! Every task the process runs beside the calls it answers, under one
//! shutdown.
//!
//! The workers (intake writers, provisioning lanes, the scheduler and bulk
//! loops, webhook delivery, …) and the work an adapter hands over to finish
//! without its caller ([`crate::to_the_end`]) are all started through
//! [`Workers::spawn`]. [`Workers::shutdown`] then stops them in one place:
//! it asks every worker to stop at its next step (a loop between two runs,
//! an intake writer once its queue is empty), waits for them for a grace
//! period, and only then drops what is still running. Bulk work dropped
//! that way resumes at the next start (its progress is recorded), and
//! nothing a caller was told is stored is lost: stopping never interrupts
//! a commit that was answered.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The tasks of one process and their shutdown.
#[derive(Debug, Default)]
pub struct Workers {
    /// Cancelled when shutdown begins: workers stop at their next step.
    stop: CancellationToken,
    /// Cancelled when the service begins to stop (before the calls in
    /// flight are drained) and at shutdown: bulk work stops after its
    /// current step (see [`Workers::wind_down`]).
    wind_down: CancellationToken,
    /// Cancelled when the grace period is over: what still runs is dropped.
    force: CancellationToken,
    tracker: TaskTracker,
    /// How many tasks of each name are running.
    running: std::sync::Arc<Mutex<BTreeMap<&'static str, usize>>>,
}

/// What a shutdown did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Tasks that did not stop within the grace period and were dropped
    /// (with how many of each); empty when everything stopped by itself.
    pub forced: Vec<(&'static str, usize)>,
}

impl Workers {
    /// Runs `task` as `name` until it ends or the shutdown's grace period is
    /// over. Its handle answers `None` when it was dropped at shutdown.
    pub fn spawn<F>(
        &self,
        name: &'static str,
        task: F,
    ) -> tokio::task::JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let force = self.force.clone();
        let running = self.running.clone();
        count(&running, name, true);
        self.tracker.spawn(async move {
            // Counted down however the task ends (even by a panic).
            let _guard = Running { running, name };
            tokio::select! {
                out = task => Some(out),
                _ = force.cancelled() => {
                    tracing::warn!(task = name, "stopped before its end at shutdown; it resumes at the next start");
                    None
                }
            }
        })
    }

    /// A token cancelled when shutdown begins: a worker checks it between
    /// two steps (see [`Workers::pause`]).
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// The first thing a stop does, before the calls in flight are drained:
    /// bulk work (a policy recompute, a roster sync, a held release, a
    /// campaign's generation or close) stops after the step it is in, with
    /// its progress recorded, instead of holding the stop until its end;
    /// it goes on at the next start. New bulk changes are refused. The
    /// workers go on until [`Workers::shutdown`].
    pub fn wind_down(&self) {
        self.wind_down.cancel();
    }

    /// A token cancelled when the service begins to stop (see
    /// [`Workers::wind_down`]), for what must change before the calls in
    /// flight are drained (gRPC health turning NOT_SERVING).
    pub fn wind_down_token(&self) -> CancellationToken {
        self.wind_down.clone()
    }

    /// True once the service has begun to stop ([`Workers::wind_down`] or
    /// [`Workers::shutdown`]): bulk work stops at its next step.
    pub fn winding_down(&self) -> bool {
        self.wind_down.is_cancelled()
    }

    /// Tasks running now, by name.
    pub fn running(&self) -> BTreeMap<&'static str, usize> {
        lock(&self.running).clone()
    }

    /// Sleeps for `d`, or less when shutdown begins. False when the worker
    /// should stop.
    pub async fn pause(stop: &CancellationToken, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => !stop.is_cancelled(),
            _ = stop.cancelled() => false,
        }
    }

    /// Stops every task: asks them to stop, waits up to `grace`, then drops
    /// the rest. Calling it again waits for the same tasks.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        self.wind_down.cancel();
        self.stop.cancel();
        self.tracker.close();
        let mut report = ShutdownReport::default();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            report.forced = self.running().into_iter().filter(|(_, n)| *n > 0).collect();
            tracing::warn!(still_running = ?report.forced, grace_seconds = grace.as_secs_f64(), "tasks did not stop within the grace period; dropping them");
            self.force.cancel();
            self.tracker.wait().await;
        }
        report
    }
}

struct Running {
    running: std::sync::Arc<Mutex<BTreeMap<&'static str, usize>>>,
    name: &'static str,
}

impl Drop for Running {
    fn drop(&mut self) {
        count(&self.running, self.name, false);
    }
}

fn count(running: &Mutex<BTreeMap<&'static str, usize>>, name: &'static str, up: bool) {
    let mut m = lock(running);
    let n = m.entry(name).or_default();
    if up {
        *n += 1;
    } else {
        *n = n.saturating_sub(1);
        if *n == 0 {
            m.remove(name);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_worker_that_stops_when_asked_is_not_forced() {
        let w = Workers::default();
        let stop = w.stop_token();
        let h = w.spawn("polite", async move {
            while Workers::pause(&stop, Duration::from_millis(10)).await {}
            7
        });
        assert_eq!(w.running().get("polite"), Some(&1));
        let report = w.shutdown(Duration::from_secs(5)).await;
        assert!(report.forced.is_empty(), "{report:?}");
        assert_eq!(h.await.ok().flatten(), Some(7));
        assert!(w.running().is_empty());
    }

    #[tokio::test]
    async fn a_worker_that_ignores_the_stop_is_dropped_after_the_grace_period() {
        let w = Workers::default();
        let h = w.spawn("stubborn", async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        let t = std::time::Instant::now();
        let report = w.shutdown(Duration::from_millis(100)).await;
        assert!(t.elapsed() < Duration::from_secs(10));
        assert_eq!(report.forced, vec![("stubborn", 1)]);
        assert_eq!(h.await.ok().flatten(), None);
        assert!(w.running().is_empty());
    }
}

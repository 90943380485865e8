//! How much the next step of bulk work takes.
//!
//! A step of bulk work (a policy recompute's people, a roster's events)
//! holds the writer from its `BEGIN` to its commit; an HR event that
//! arrives meanwhile, a leaver above all, waits for it. A fixed count of
//! items per step bounds that wait only on the machine the count was tuned
//! on: on a slower disk or CPU the same step takes longer, and on a faster
//! one steps stay smaller than they need to be, paying each step's fixed
//! cost (its commit, the index pages it writes again) more often.
//! [`StepSize`] bounds the step by time instead: after each step it sets
//! the next step's count from the pace just measured, so that a step holds
//! the writer for about [`StepSize::target`], never more than
//! [`StepSize::max`] items (which bounds the memory a step holds) and never
//! fewer than [`StepSize::min`] (so bulk work always moves on).
//!
//! Pure arithmetic over durations passed in: no clock is read here.

use std::time::Duration;

/// The number of items of the next step, adapted to the pace of the last.
#[derive(Debug, Clone)]
pub struct StepSize {
    size: u64,
    min: u64,
    max: u64,
    target: Duration,
}

impl StepSize {
    /// Starts at `start` items, kept within `min..=max` (`min` at least 1),
    /// aiming at steps of `target`.
    pub fn new(start: u64, min: u64, max: u64, target: Duration) -> StepSize {
        let min = min.max(1);
        let max = max.max(min);
        StepSize {
            size: start.clamp(min, max),
            min,
            max,
            target,
        }
    }

    /// How many items the next step takes.
    pub fn get(&self) -> u64 {
        self.size
    }

    pub fn min(&self) -> u64 {
        self.min
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn target(&self) -> Duration {
        self.target
    }

    /// Records that a step of `items` items took `took`, and sets the next
    /// step's size: the count that would have taken `target` at this pace,
    /// but at most twice and at least half the current size (one slow or
    /// fast step, a checkpoint or a cold cache, moves it only so far).
    ///
    /// A short step (fewer items than asked for: the end of the work, or
    /// items with nothing to do) says little about the pace, so it can only
    /// make steps smaller, when it alone overran the target.
    pub fn record(&mut self, items: u64, took: Duration) {
        self.record_asked(self.size, items, took);
    }

    /// [`StepSize::record`] for a step that asked for `asked` items, not
    /// the current size: work that reads its next step while it writes
    /// this one (a campaign's generation) asks with the size of a step
    /// before, and such a step is short only when it got fewer than it
    /// asked for.
    pub fn record_asked(&mut self, asked: u64, items: u64, took: Duration) {
        if items == 0 {
            return;
        }
        let nanos = took.as_nanos().max(1);
        let ideal = self.target.as_nanos().saturating_mul(u128::from(items)) / nanos;
        let ideal = u64::try_from(ideal).unwrap_or(u64::MAX);
        let next = ideal.clamp(self.size / 2, self.size.saturating_mul(2));
        let next = if items < asked {
            next.min(self.size)
        } else {
            next
        };
        self.size = next.clamp(self.min, self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step asked for at an older, smaller size and given all it asked
    /// for is a full step: it grows the size (as `record` would shrink
    /// nothing for it), where the same items recorded against the current
    /// size would count as short and leave it where it is.
    #[test]
    fn a_full_step_asked_at_an_older_size_still_grows_the_next() {
        let fast = Duration::from_millis(1);
        let mut s = StepSize::new(400, 10, 10_000, Duration::from_millis(150));
        s.record_asked(200, 200, fast);
        assert_eq!(s.get(), 800);
        let mut t = StepSize::new(400, 10, 10_000, Duration::from_millis(150));
        t.record(200, fast);
        assert_eq!(t.get(), 400, "counted against the current size it is short");
        // Fewer than asked: short, so it can only shrink.
        let mut u = StepSize::new(400, 10, 10_000, Duration::from_millis(150));
        u.record_asked(400, 100, fast);
        assert_eq!(u.get(), 400);
    }

    /// A small deterministic generator (xorshift), so that a failure names
    /// the case that produced it.
    struct Gen(u64);
    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn steps_settle_at_the_count_that_takes_the_target_whatever_the_pace() {
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        for case in 0..500 {
            // A cost per item from 1 µs to 20 ms, a start anywhere.
            let per_item_us = 1 + g.below(20_000);
            let start = 1 + g.below(5_000);
            let target = ms(50 + g.below(950));
            let (min, max) = (1 + g.below(50), 100 + g.below(10_000));
            let mut s = StepSize::new(start, min, max, target);
            for _ in 0..40 {
                let n = s.get();
                s.record(n, Duration::from_micros(per_item_us * n));
            }
            let took = Duration::from_micros(per_item_us * s.get());
            let ideal = (target.as_micros() as u64 / per_item_us).clamp(s.min(), s.max());
            assert!(
                s.get() == ideal || s.get().abs_diff(ideal) <= 1 + ideal / 100,
                "case {case}: {per_item_us} µs an item, target {target:?}, within {min}..={max}: \
                 settled at {} items ({took:?} a step), expected about {ideal}",
                s.get()
            );
        }
    }

    #[test]
    fn the_size_stays_within_its_bounds_and_moves_at_most_twofold_a_step() {
        let mut g = Gen(0x2545_f491_4f6c_dd1d);
        for case in 0..2_000 {
            let (min, max) = (g.below(100), g.below(5_000));
            let mut s = StepSize::new(g.below(10_000), min, max, ms(1 + g.below(2_000)));
            for step in 0..30 {
                let before = s.get();
                // Any count (short steps included), any time (zero included).
                let items = g.below(before * 2 + 1);
                s.record(items, Duration::from_micros(g.below(5_000_000)));
                let after = s.get();
                assert!(
                    (s.min()..=s.max()).contains(&after) && s.min() >= 1,
                    "case {case}, step {step}: {after} outside {}..={}",
                    s.min(),
                    s.max()
                );
                if items > 0 {
                    assert!(
                        after <= (before * 2).max(s.min()) && after >= (before / 2).max(s.min()),
                        "case {case}, step {step}: {before} → {after} after {items} items"
                    );
                }
            }
        }
    }

    #[test]
    fn a_step_that_overran_the_target_makes_the_next_smaller() {
        let mut g = Gen(0xdead_beef_cafe_f00d);
        for case in 0..1_000 {
            let target = ms(10 + g.below(1_000));
            let mut s = StepSize::new(2 + g.below(5_000), 1, 10_000, target);
            let before = s.get();
            // Full or short, a step slower than the target.
            let items = 1 + g.below(before);
            let took = target + ms(1 + g.below(3_000));
            s.record(items, took);
            assert!(
                s.get() < before || before == 1,
                "case {case}: {items} of {before} items took {took:?} (target {target:?}), next {}",
                s.get()
            );
        }
    }

    #[test]
    fn a_short_fast_step_does_not_grow_the_next() {
        let mut s = StepSize::new(500, 10, 5_000, ms(250));
        // The last step of the work: 3 people in a millisecond.
        s.record(3, ms(1));
        assert_eq!(s.get(), 500);
        // A full fast step does.
        s.record(500, ms(10));
        assert_eq!(s.get(), 1_000);
    }
}

//! Bounded-memory counter windows for one SLO.
//!
//! An SLO keeps two running sums (bad or good, and total) as wrapping
//! 64-bit integers of exact millionths, and rings of snapshots of those
//! sums taken at bucket boundaries. A window's increase is the running sum
//! now minus the snapshot at the window's far edge, so each window costs
//! one subtraction at evaluation time and memory does not grow with the
//! window or the period:
//!
//! * 1-minute snapshots for 6 hours (exact windows up to 6h),
//! * 10-minute snapshots for 3 days (windows over 6h; the far edge falls on
//!   a 10-minute boundary because such windows are whole multiples of 10m),
//! * period/720 snapshots for the budget period (hourly for 30 days).
//!
//! Snapshot `k` of a ring holds the sums of every increase with event time
//! before `k * step`. Snapshots are written lazily, when an increase or an
//! evaluation needs them, so idle SLOs cost nothing per minute.

use crate::time::{Duration, Timestamp, MINUTE};

/// Longest window served by the 1-minute ring.
pub const FINE_SPAN: i64 = 6 * crate::time::HOUR;
/// Step of the coarse ring.
pub const COARSE_STEP: i64 = 10 * MINUTE;
/// Longest window served by the coarse ring.
pub const COARSE_SPAN: i64 = 3 * crate::time::DAY;
/// Buckets per budget period.
pub const PERIOD_BUCKETS: i64 = 720;

/// A pair of wrapping running sums (errors, total) in millionths.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sums {
    pub err: u64,
    pub total: u64,
}

impl Sums {
    /// The sums added since `earlier` was read.
    pub fn since(self, earlier: Sums) -> Sums {
        Sums {
            err: self.err.wrapping_sub(earlier.err),
            total: self.total.wrapping_sub(earlier.total),
        }
    }
}

/// Snapshots of the running sums at every `step` boundary, for `slots` steps.
#[derive(Debug, Clone)]
struct Ring {
    step: i64,
    /// Empty until the first write: an SLO whose series live on another
    /// partition's engine costs no ring memory there.
    slots: Box<[Sums]>,
    /// Slots once allocated.
    n: usize,
    /// Index of the latest boundary whose snapshot is written.
    last: Option<i64>,
    /// The slot of `last`.
    last_slot: usize,
    /// Time of the boundary after `last`: a sync before it writes nothing.
    next_at: i64,
}

impl Ring {
    fn new(step: i64, span: i64) -> Ring {
        let n = (span / step + 1) as usize;
        Ring {
            step,
            slots: Box::default(),
            n,
            last: None,
            last_slot: 0,
            next_at: 0,
        }
    }

    fn slot(&self, k: i64) -> usize {
        k.rem_euclid(self.n as i64) as usize
    }

    /// Writes `cum` into every boundary after the last written one, up to
    /// the boundary at or before `t`: nothing was added in between.
    fn sync(&mut self, t: i64, cum: Sums) {
        if self.last.is_some() && t < self.next_at {
            return;
        }
        let upto = t.div_euclid(self.step);
        let n = self.n as i64;
        let from = match self.last {
            Some(last) if last >= upto => return,
            Some(last) => (last + 1).max(upto - n + 1),
            None => {
                self.slots = vec![cum; self.n].into_boxed_slice();
                upto
            }
        };
        let mut i = self.slot(from);
        for _ in from..=upto {
            self.slots[i] = cum;
            i += 1;
            if i == self.slots.len() {
                i = 0;
            }
        }
        self.last = Some(upto);
        self.last_slot = self.slot(upto);
        self.next_at = (upto + 1).saturating_mul(self.step);
    }

    /// The slot of boundary index `k`, counted back from the last
    /// boundary without a division when `k` is within the ring.
    fn index(&self, k: i64) -> usize {
        let n = self.slots.len();
        match self.last.map(|last| last - k) {
            Some(back) if (0..n as i64).contains(&back) => {
                let back = back as usize;
                if back <= self.last_slot {
                    self.last_slot - back
                } else {
                    self.last_slot + n - back
                }
            }
            _ => self.slot(k),
        }
    }

    /// Asks the CPU to bring the snapshot at boundary index `k` (or the
    /// one a sync will write there) into the cache; a hint only, nothing
    /// is read or changed.
    fn prefetch(&self, k: i64) {
        if !self.slots.is_empty() {
            prefetch(&self.slots[self.index(k)]);
        }
    }

    /// Snapshot at boundary index `k`; `k` must be within the ring.
    fn at(&self, k: i64) -> Sums {
        if self.slots.is_empty() {
            return Sums::default();
        }
        self.slots[self.index(k)]
    }
}

/// Exact error and total increases over one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Increase {
    pub err: u64,
    pub total: u64,
}

/// All windows of one SLO.
#[derive(Debug, Clone)]
pub struct Windows {
    cum: Sums,
    fine: Ring,
    coarse: Option<Ring>,
    period: Ring,
    period_len: i64,
    /// `good` selectors count successes; errors are total minus good.
    counts_good: bool,
}

impl Windows {
    /// `longest` is the longest burn-rate window; `period` the budget period.
    pub fn new(longest: Duration, period: Duration, counts_good: bool) -> Windows {
        let fine_span = longest.0.clamp(MINUTE, FINE_SPAN);
        Windows {
            cum: Sums::default(),
            fine: Ring::new(MINUTE, fine_span),
            coarse: (longest.0 > FINE_SPAN).then(|| Ring::new(COARSE_STEP, COARSE_SPAN)),
            period: Ring::new(period_step(period), period.0.max(MINUTE)),
            period_len: period.0,
            counts_good,
        }
    }

    /// Heap bytes held now: nothing until the first sample or
    /// evaluation.
    pub fn heap_bytes(&self) -> usize {
        let slot = std::mem::size_of::<Sums>();
        let coarse = self.coarse.as_ref().map_or(0, |r| r.slots.len());
        (self.fine.slots.len() + coarse + self.period.slots.len()) * slot
    }

    /// Heap bytes held once the SLO has seen traffic (the memory budget).
    pub fn active_heap_bytes(&self) -> usize {
        let slot = std::mem::size_of::<Sums>();
        let coarse = self.coarse.as_ref().map_or(0, |r| r.n);
        (self.fine.n + coarse + self.period.n) * slot
    }

    fn sync(&mut self, t: i64) {
        let cum = self.cum;
        self.fine.sync(t, cum);
        if let Some(c) = &mut self.coarse {
            c.sync(t, cum);
        }
        self.period.sync(t, cum);
    }

    /// Adds an increase observed at `ts` (event time never goes back).
    pub fn add(&mut self, ts: Timestamp, err_or_good: u64, total: u64) {
        self.sync(ts.0);
        self.cum.err = self.cum.err.wrapping_add(err_or_good);
        self.cum.total = self.cum.total.wrapping_add(total);
    }

    /// Increases in `[at - window, at)`, `at` being a minute boundary at or
    /// after every increase added so far. Windows over 6h reach back to the
    /// 10-minute boundary at or before their far edge.
    pub fn increase(&mut self, at: Timestamp, window: Duration) -> Increase {
        self.sync(at.0);
        self.increase_synced(at, window)
    }

    /// Brings every ring up to `at` so that several windows can then be
    /// read with [`Windows::increase_synced`] without re-checking.
    pub fn sync_to(&mut self, at: Timestamp) {
        self.sync(at.0);
    }

    /// [`Windows::increase`] after [`Windows::sync_to`] with the same `at`.
    pub fn increase_synced(&self, at: Timestamp, window: Duration) -> Increase {
        let edge = at.0 - window.0;
        let snap = if window.0 <= FINE_SPAN {
            self.fine.at(edge.div_euclid(MINUTE))
        } else if let Some(c) = &self.coarse {
            c.at(edge.div_euclid(COARSE_STEP))
        } else {
            self.fine.at(edge.div_euclid(MINUTE))
        };
        self.to_increase(self.cum.since(snap))
    }

    /// Asks the CPU to bring what an evaluation at minute boundary `at`
    /// touches into the cache: the snapshot its sync writes and the far
    /// edges of the budget period and of `windows`. A hint only: an
    /// evaluation reads a handful of snapshots scattered over rings that
    /// other SLOs' samples have pushed out of the cache since its last
    /// one, and prefetching the next SLOs' while one is evaluated lets
    /// those waits overlap.
    pub fn prefetch(&self, at: Timestamp, windows: impl Iterator<Item = Duration>) {
        self.fine.prefetch(at.0.div_euclid(MINUTE));
        self.period
            .prefetch((at.0 - self.period_len).div_euclid(self.period.step));
        for w in windows {
            let edge = at.0 - w.0;
            match &self.coarse {
                Some(c) if w.0 > FINE_SPAN => c.prefetch(edge.div_euclid(COARSE_STEP)),
                _ => self.fine.prefetch(edge.div_euclid(MINUTE)),
            }
        }
    }

    /// Increases over the budget period ending at `at`, at period/720
    /// resolution.
    pub fn period_increase(&mut self, at: Timestamp) -> Increase {
        self.sync(at.0);
        self.period_increase_synced(at)
    }

    /// [`Windows::period_increase`] after [`Windows::sync_to`].
    pub fn period_increase_synced(&self, at: Timestamp) -> Increase {
        let edge = at.0 - self.period_len;
        let snap = self.period.at(edge.div_euclid(self.period.step));
        self.to_increase(self.cum.since(snap))
    }

    /// The running sums of everything added so far.
    pub fn running(&self) -> Sums {
        self.cum
    }

    /// Errors and total of a difference of running sums.
    pub fn to_increase(&self, d: Sums) -> Increase {
        let err = if self.counts_good {
            d.total.saturating_sub(d.err)
        } else {
            d.err.min(d.total)
        };
        Increase {
            err,
            total: d.total,
        }
    }
}

/// A cache hint for the line holding `v` (x86-64; elsewhere nothing).
#[inline(always)]
pub(super) fn prefetch<T>(v: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch only hints the cache; `v` is a valid reference
    // and nothing is read or written through the pointer.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((v as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

fn period_step(period: Duration) -> i64 {
    (period.0 / PERIOD_BUCKETS).max(MINUTE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(min: i64) -> Timestamp {
        Timestamp(1_700_000_000_000 / crate::time::DAY * crate::time::DAY + min * MINUTE)
    }

    #[test]
    fn window_covers_half_open_range_before_boundary() {
        let mut w = Windows::new(Duration::hours(1), Duration::days(30), false);
        w.add(t(0), 1, 10);
        w.add(Timestamp(t(4).0 + 59_000), 2, 10);
        let inc = w.increase(t(5), Duration::minutes(5));
        assert_eq!(inc, Increase { err: 3, total: 20 });
        w.add(t(5), 4, 10); // stamped at the boundary: the next window's
        let inc = w.increase(t(6), Duration::minutes(5));
        assert_eq!(inc, Increase { err: 6, total: 20 });
    }

    #[test]
    fn old_increases_leave_the_window() {
        let mut w = Windows::new(Duration::hours(1), Duration::days(30), false);
        for m in 0..120 {
            w.add(t(m), 1, 100);
        }
        let inc = w.increase(t(120), Duration::hours(1));
        assert_eq!(
            inc,
            Increase {
                err: 60,
                total: 6000
            }
        );
        // Long idle gap: everything has left the window.
        let inc = w.increase(t(600), Duration::hours(1));
        assert_eq!(inc, Increase { err: 0, total: 0 });
    }

    #[test]
    fn long_windows_use_ten_minute_edges() {
        let mut w = Windows::new(Duration::days(3), Duration::days(30), false);
        for m in 0..(2 * 24 * 60) {
            w.add(t(m), 0, 1);
        }
        // 1d window at a 10-minute boundary is exact.
        let at = t(2 * 24 * 60);
        assert_eq!(w.increase(at, Duration::days(1)).total, 24 * 60);
        // At +3 minutes the far edge is rounded down by 3 minutes.
        let at3 = t(2 * 24 * 60 + 3);
        assert_eq!(w.increase(at3, Duration::days(1)).total, 24 * 60);
    }

    #[test]
    fn good_counts_become_errors() {
        let mut w = Windows::new(Duration::hours(1), Duration::days(30), true);
        w.add(t(0), 97, 100);
        assert_eq!(w.increase(t(1), Duration::minutes(5)).err, 3);
    }

    #[test]
    fn thirty_day_slo_fits_in_32k() {
        let mut w = Windows::new(Duration::days(3), Duration::days(30), false);
        assert_eq!(w.heap_bytes(), 0, "no ring memory before traffic");
        w.add(t(0), 1, 10);
        assert_eq!(w.heap_bytes(), w.active_heap_bytes());
        assert!(w.heap_bytes() + std::mem::size_of::<Windows>() <= 32 * 1024);
    }
}

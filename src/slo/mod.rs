//! SLO burn rates: multi-window, multi-burn-rate alerting over exact
//! counter increases.
//!
//! [`SloSet`] turns metric samples into per-SLO error and total increases
//! ([`series`]), keeps them in bounded rings ([`window`]) and, at each
//! minute boundary, evaluates every tier: a tier fires when the burn rate
//! over both its long and short window is strictly greater than its factor.
//! Comparisons are exact integer arithmetic on millionths; floats appear
//! only in the reported burn rates.

pub mod series;
pub mod window;

use std::collections::BTreeSet;

use crate::policy::{Policy, Ratio, Slo};
use crate::records::{Fixed, MetricRef, MetricSample};
use crate::time::{Duration, Timestamp, HOUR};

pub use series::SeriesId;
use series::{Feed, Role, SeriesStore};
use window::{Increase, Windows, COARSE_STEP};

/// Adds a series' increase `inc` at `ts` to the SLOs it feeds.
fn feed(
    states: &mut [SloState],
    active: &mut BTreeSet<u32>,
    ts: Timestamp,
    feeds: &[Feed],
    inc: u64,
) {
    for f in feeds {
        let st = &mut states[f.slo as usize];
        st.last_seen = Some(ts);
        if inc == 0 {
            continue;
        }
        match f.role {
            Role::Total => st.windows.add(ts, 0, inc),
            Role::Err => st.windows.add(ts, inc, 0),
        }
        st.last_increase = Some(ts);
        if !st.active {
            st.active = true;
            active.insert(f.slo);
        }
    }
}

/// A tier that started or stopped firing at a minute boundary.
#[derive(Debug, Clone, PartialEq)]
pub struct BurnChange {
    pub slo: usize,
    pub tier: usize,
    pub firing: bool,
    pub burn_long: Option<f64>,
    pub burn_short: Option<f64>,
    pub budget_remaining: Option<f64>,
}

#[derive(Debug)]
struct SloState {
    windows: Windows,
    firing: Box<[bool]>,
    /// Last sample of any of its series (for the stale-data guardrail).
    last_seen: Option<Timestamp>,
    /// Last non-zero increase: older than the longest window means idle.
    last_increase: Option<Timestamp>,
    active: bool,
    horizon: Duration,
    /// Burn over the first tier's long window at the last evaluation.
    fast_burn: Option<f64>,
    budget_remaining: Option<f64>,
    /// Burn over each tier's long and short window (`2 * tier + 0/1`) at
    /// the last evaluation, kept when reporting is on; never decided on.
    burns: Box<[Option<f64>]>,
    evaluated: Option<Timestamp>,
}

/// Burn-rate state of every SLO of a policy.
#[derive(Debug)]
pub struct SloSet {
    states: Vec<SloState>,
    series: SeriesStore,
    /// SLOs with traffic inside their longest window, or a tier firing:
    /// the only ones whose evaluation can change anything.
    active: BTreeSet<u32>,
    /// Keep every tier window's burn rate for [`SloSet::last_burn_rates`].
    report: bool,
}

/// Whether `inc` burns strictly faster than `factor` for `objective`.
pub fn burns_faster(inc: Increase, objective: Ratio, factor: Ratio) -> bool {
    if inc.total == 0 {
        return false;
    }
    // err/total / (1 - num/den) > fnum/fden
    //   <=> err * den * fden > fnum * (den - num) * total
    let lhs = (inc.err as u128) * (objective.den as u128) * (factor.den as u128);
    let budget = (objective.den - objective.num) as u128;
    let rhs = (factor.num as u128)
        .saturating_mul(budget)
        .saturating_mul(inc.total as u128);
    lhs > rhs
}

/// The burn rate of `inc` as a float, for reports; `None` without traffic.
pub fn burn_rate(inc: Increase, objective: Ratio) -> Option<f64> {
    if inc.total == 0 {
        return None;
    }
    let ratio = inc.err as f64 / inc.total as f64;
    let budget = (objective.den - objective.num) as f64 / objective.den as f64;
    Some(ratio / budget)
}

/// How many SLOs ahead [`SloSet::evaluate`] prefetches.
const PREFETCH_AHEAD: usize = 8;

impl SloSet {
    pub fn new(policy: &Policy) -> SloSet {
        let states = policy.slos.iter().map(new_state).collect();
        SloSet {
            states,
            series: SeriesStore::new(&policy.slos),
            active: BTreeSet::new(),
            report: false,
        }
    }

    /// Keeps the burn rate of every tier window at each evaluation, for
    /// [`SloSet::last_burn_rates`] (a few more window reads per SLO and
    /// minute; decisions are the same either way).
    pub fn report_burn_rates(&mut self) {
        if self.report {
            return;
        }
        self.report = true;
        for st in &mut self.states {
            st.burns = vec![None; st.firing.len() * 2].into_boxed_slice();
        }
    }

    /// The burn-rate state under a new policy's SLOs. An SLO whose name
    /// is in the old list with the same window shape (longest tier
    /// window, period, good or bad counter, number of tiers) keeps its
    /// windows and firing tiers; any other starts empty. Counter series
    /// start over: each series' first sample after the change is its new
    /// baseline.
    pub fn reloaded(self, old: &[Slo], new: &Policy) -> SloSet {
        let mut fresh = SloSet::new(new);
        let mut states: Vec<Option<SloState>> = self.states.into_iter().map(Some).collect();
        for (j, s) in new.slos.iter().enumerate() {
            let Some(i) = old.iter().position(|o| o.name == s.name) else {
                continue;
            };
            if !same_shape(&old[i], s) {
                continue;
            }
            if let Some(st) = states.get_mut(i).and_then(Option::take) {
                if st.active {
                    fresh.active.insert(j as u32);
                }
                fresh.states[j] = st;
            }
        }
        fresh
    }

    pub fn series_count(&self) -> usize {
        self.series.series_count()
    }

    /// Heap bytes held by the windows of one SLO once it has traffic.
    pub fn window_bytes(&self, slo: usize) -> usize {
        self.states[slo].windows.active_heap_bytes()
    }

    /// Heap and inline bytes of the whole burn-rate state: every SLO's
    /// windows and flags, the series and the selector index. Capacities,
    /// not lengths, are counted.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let states: usize = self
            .states
            .iter()
            .map(|s| {
                size_of::<SloState>()
                    + s.windows.heap_bytes()
                    + s.firing.len()
                    + s.burns.len() * size_of::<Option<f64>>()
            })
            .sum();
        states
            + (self.states.capacity() - self.states.len()) * size_of::<SloState>()
            + self.active.len() * 2 * size_of::<u32>()
            + self.series.heap_bytes()
    }

    /// Feeds one sample observed at event time `ts`.
    pub fn observe(&mut self, ts: Timestamp, m: &MetricSample) {
        self.observe_ref(ts, m.as_ref(), None);
    }

    /// [`SloSet::observe`] for a sample borrowed from a decoder's buffers;
    /// `raw` as for [`SeriesStore::observe`].
    pub fn observe_ref(&mut self, ts: Timestamp, m: MetricRef<'_>, raw: Option<&[u8]>) {
        let (states, active) = (&mut self.states, &mut self.active);
        self.series
            .observe(m.name, m.labels, m.value, raw, |feeds, inc| {
                feed(states, active, ts, feeds, inc)
            });
    }

    /// The series a full decode read from `raw` before, and its metric
    /// name (see [`SeriesStore::find_raw`]).
    pub fn find_raw(&self, raw: &[u8]) -> Option<(SeriesId, &str)> {
        self.series.find_raw(raw)
    }

    /// [`SloSet::observe`] for a sample of a series found by
    /// [`SloSet::find_raw`]: the same effect as observing the sample decoded.
    pub fn observe_id(&mut self, ts: Timestamp, id: SeriesId, value: Fixed) {
        let (states, active) = (&mut self.states, &mut self.active);
        self.series
            .observe_id(id, value, |feeds, inc| feed(states, active, ts, feeds, inc));
    }

    /// True when some SLO could change state at the next boundary.
    pub fn any_active(&self) -> bool {
        !self.active.is_empty()
    }

    /// Evaluates every tier of every active SLO at minute boundary `at`
    /// and appends the tiers that changed state, in SLO then tier order.
    pub fn evaluate(&mut self, at: Timestamp, slos: &[Slo], out: &mut Vec<BurnChange>) {
        let mut idle = Vec::new();
        // The snapshots of the SLO PREFETCH_AHEAD places on are asked for
        // while this one is evaluated (see `Windows::prefetch`).
        let mut ahead = self.active.iter().skip(PREFETCH_AHEAD);
        for &i in &self.active {
            if let Some(&j) = ahead.next() {
                let (st, slo) = (&self.states[j as usize], &slos[j as usize]);
                st.windows.prefetch(at, slo.tiers.iter().map(|t| t.long));
                if let Some(f) = st.firing.first() {
                    window::prefetch(f);
                }
            }
            let (st, slo) = (&mut self.states[i as usize], &slos[i as usize]);
            evaluate_one(i as usize, st, slo, at, self.report, out);
            let recent = st.last_increase.is_some_and(|t| at.0 - t.0 <= st.horizon.0);
            if !recent && !st.firing.iter().any(|f| *f) {
                st.active = false;
                idle.push(i);
            }
        }
        for i in idle {
            self.active.remove(&i);
        }
    }

    pub fn last_seen(&self, slo: usize) -> Option<Timestamp> {
        self.states[slo].last_seen
    }

    /// Whether any tier of the given severity is firing.
    pub fn firing(&self, slo: usize, slos: &[Slo], severity: crate::records::Severity) -> bool {
        let st = &self.states[slo];
        slos[slo]
            .tiers
            .iter()
            .zip(st.firing.iter())
            .any(|(t, f)| *f && t.severity == severity)
    }

    /// Running sums of the SLO's increases (millionths), to difference
    /// later with [`SloSet::between`].
    pub fn running(&self, slo: usize) -> window::Sums {
        self.states[slo].windows.running()
    }

    /// Errors and total added between two readings of [`SloSet::running`].
    pub fn between(&self, slo: usize, earlier: window::Sums, later: window::Sums) -> Increase {
        let w = &self.states[slo].windows;
        w.to_increase(later.since(earlier))
    }

    /// Share of the period's error budget left at the last evaluation.
    pub fn budget_remaining(&self, slo: usize) -> Option<f64> {
        self.states[slo].budget_remaining
    }

    /// When the SLO was last evaluated (it is evaluated while it has
    /// traffic in its windows or a tier firing).
    pub fn evaluated_at(&self, slo: usize) -> Option<Timestamp> {
        self.states[slo].evaluated
    }

    /// Burn rates over each tier's long and short window at the last
    /// evaluation, at `2 * tier` and `2 * tier + 1`; `None` without
    /// traffic. Empty unless [`SloSet::report_burn_rates`] was called.
    pub fn last_burn_rates(&self, slo: usize) -> &[Option<f64>] {
        &self.states[slo].burns
    }

    /// Burn over the fastest tier's long window at the last evaluation.
    pub fn fast_burn(&self, slo: usize) -> Option<f64> {
        self.states[slo].fast_burn
    }

    /// SLO impact: the share of the remaining error budget that the
    /// current burn consumes per hour. Exhausted budgets count as 0.1 %
    /// left so that they sort first without dividing by zero.
    pub fn impact(&self, slo: usize, period: Duration) -> f64 {
        let st = &self.states[slo];
        let burn = st.fast_burn.unwrap_or(0.0);
        let remaining = st.budget_remaining.unwrap_or(1.0).max(0.001);
        burn * (HOUR as f64 / period.0 as f64) / remaining
    }
}

fn longest(slo: &Slo) -> Duration {
    slo.tiers
        .iter()
        .map(|t| t.long)
        .max()
        .unwrap_or(Duration::hours(1))
}

fn same_shape(a: &Slo, b: &Slo) -> bool {
    longest(a) == longest(b)
        && a.period == b.period
        && a.good.is_some() == b.good.is_some()
        && a.tiers.len() == b.tiers.len()
}

fn new_state(slo: &Slo) -> SloState {
    let longest = slo
        .tiers
        .iter()
        .map(|t| t.long)
        .max()
        .unwrap_or(Duration::hours(1));
    SloState {
        windows: Windows::new(longest, slo.period, slo.good.is_some()),
        firing: vec![false; slo.tiers.len()].into_boxed_slice(),
        last_seen: None,
        last_increase: None,
        active: false,
        horizon: Duration(longest.0 + COARSE_STEP),
        fast_burn: None,
        budget_remaining: None,
        burns: Box::default(),
        evaluated: None,
    }
}

fn evaluate_one(
    i: usize,
    st: &mut SloState,
    slo: &Slo,
    at: Timestamp,
    report: bool,
    out: &mut Vec<BurnChange>,
) {
    st.windows.sync_to(at);
    let w = &st.windows;
    let period = w.period_increase_synced(at);
    st.budget_remaining = burn_rate(period, slo.objective).map(|b| 1.0 - b);
    st.evaluated = Some(at);
    for (t, tier) in slo.tiers.iter().enumerate() {
        let long = w.increase_synced(at, tier.long);
        if t == 0 {
            st.fast_burn = burn_rate(long, slo.objective);
        }
        if report {
            st.burns[2 * t] = burn_rate(long, slo.objective);
            st.burns[2 * t + 1] = burn_rate(w.increase_synced(at, tier.short), slo.objective);
        }
        // The short window is read only when the long one burns too fast.
        let fire = burns_faster(long, slo.objective, tier.factor) && {
            let short = w.increase_synced(at, tier.short);
            burns_faster(short, slo.objective, tier.factor)
        };
        if fire != st.firing[t] {
            st.firing[t] = fire;
            out.push(BurnChange {
                slo: i,
                tier: t,
                firing: fire,
                burn_long: burn_rate(long, slo.objective),
                burn_short: burn_rate(w.increase_synced(at, tier.short), slo.objective),
                budget_remaining: st.budget_remaining,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse;
    use crate::records::{Fixed, Labels, Severity};
    use crate::time::MINUTE;

    const T0: i64 = 1_772_359_200_000; // 2026-03-01T10:00:00Z

    fn policy(objective: &str, period: &str) -> Policy {
        let src = format!(
            "slos:\n  - name: avail\n    service: web\n    objective: {objective}\n    period: {period}\n    sli:\n      total: 'req{{service=\"web\"}}'\n      bad: 'req{{service=\"web\",code=~\"5..\"}}'\n"
        );
        parse(&src, "inline.yaml").expect("valid policy")
    }

    fn sample(code: &str, v: i64) -> MetricSample {
        MetricSample {
            name: "req".into(),
            labels: Labels::from_pairs([("service", "web"), ("code", code)]),
            value: Fixed::from_units(v),
            timestamp: None,
        }
    }

    /// Feeds one sample per series per minute from `per_minute(m) -> (ok, err)`
    /// increments, evaluating every boundary; returns (minute, change) pairs.
    fn run(
        p: &Policy,
        minutes: i64,
        per_minute: impl Fn(i64) -> (i64, i64),
    ) -> Vec<(i64, BurnChange)> {
        let mut set = SloSet::new(p);
        let (mut ok, mut err) = (0, 0);
        let mut changes = Vec::new();
        for m in 0..minutes {
            let at = Timestamp(T0 + m * MINUTE);
            let mut out = Vec::new();
            set.evaluate(at, &p.slos, &mut out);
            changes.extend(out.into_iter().map(|c| (m, c)));
            if m > 0 {
                let (o, e) = per_minute(m);
                ok += o;
                err += e;
            }
            set.observe(at, &sample("200", ok));
            set.observe(at, &sample("500", err));
        }
        changes
    }

    fn ratio(n: i128, d: i128) -> Ratio {
        Ratio { num: n, den: d }
    }

    #[test]
    fn workbook_default_tiers_for_30_days() {
        let p = policy("99.9", "30d");
        let t: Vec<_> = p.slos[0]
            .tiers
            .iter()
            .map(|t| {
                (
                    t.severity,
                    t.long.to_string(),
                    t.short.to_string(),
                    t.factor.to_f64(),
                )
            })
            .collect();
        assert_eq!(
            t,
            vec![
                (Severity::Page, "1h".into(), "5m".into(), 14.4),
                (Severity::Page, "6h".into(), "30m".into(), 6.0),
                (Severity::Ticket, "1d".into(), "2h".into(), 3.0),
                (Severity::Ticket, "3d".into(), "6h".into(), 1.0),
            ]
        );
    }

    #[test]
    fn factors_scale_with_the_period() {
        let p = policy("99.9", "7d");
        // 2 % of a 7-day budget in 1 hour: 0.02 * 168 = 3.36.
        assert!((p.slos[0].tiers[0].factor.to_f64() - 3.36).abs() < 1e-12);
    }

    #[test]
    fn exact_comparison_at_the_factor() {
        let obj = ratio(999, 1000);
        let f = ratio(72, 5); // 14.4
                              // 1.44 % errors is a burn of exactly 14.4: not strictly greater.
        let at = Increase {
            err: 144,
            total: 10_000,
        };
        assert!(!burns_faster(at, obj, f));
        assert!(burns_faster(
            Increase {
                err: 145,
                total: 10_000
            },
            obj,
            f
        ));
        assert!(!burns_faster(Increase { err: 0, total: 0 }, obj, f));
    }

    #[test]
    fn steady_error_rate_at_the_objective_never_fires() {
        let p = policy("99.9", "30d");
        // 0.1 % errors: burn 1.0, which equals the slowest factor (1) and
        // is below the rest. Run past the 3-day window.
        let changes = run(&p, 4 * 24 * 60, |_| (999, 1));
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn burn_at_exactly_the_page_factor_never_pages() {
        let p = policy("99.9", "30d");
        let changes = run(&p, 180, |_| (9_856, 144));
        // The 6h/30m page tier (factor 6) does fire; the 1h/5m one never.
        assert!(changes.iter().any(|(_, c)| c.tier == 1 && c.firing));
        assert!(
            changes.iter().all(|(_, c)| c.tier != 0),
            "1h/5m tier fired at burn 14.4: {changes:?}"
        );
    }

    #[test]
    fn fast_burn_pages_after_the_computed_minutes() {
        let p = policy("99.9", "30d");
        // 1000 requests a minute; from the sample at minute 61 on, 20 of
        // them fail (burn 20). At boundary m the 1h window holds the
        // samples of minutes m-60..m-1: m-61 minutes of errors out of 60.
        //   1h/5m at 14.4: 20(m-61)/60000/0.001 > 14.4  <=>  m >= 105
        //   6h/30m at 6:   20(m-61)/((m-1)1000)/0.001 > 6  <=>  m >= 87
        // The longer windows hold all m-1 minutes of traffic so far:
        //   1d/2h at 3:    20(m-61) > 3(m-1)  <=>  m >= 72
        //   3d/6h at 1:    20(m-61) > (m-1)   <=>  m >= 65
        let changes = run(&p, 120, |m| if m >= 61 { (980, 20) } else { (1000, 0) });
        let fired: Vec<(i64, usize)> = changes
            .iter()
            .filter(|(_, c)| c.firing)
            .map(|(m, c)| (*m, c.tier))
            .collect();
        assert_eq!(fired, vec![(65, 3), (72, 2), (87, 1), (105, 0)]);
        let page = &changes.iter().find(|(_, c)| c.tier == 0).unwrap().1;
        assert!((page.burn_long.unwrap() - 44.0 / 3.0).abs() < 1e-9);
        assert!((page.burn_short.unwrap() - 20.0).abs() < 1e-9);
    }

    #[test]
    fn no_traffic_resolves_a_firing_tier() {
        let p = policy("99.9", "30d");
        // Burn 50 for 20 minutes, then the service goes silent.
        let changes = run(&p, 60, |m| if m <= 20 { (950, 50) } else { (0, 0) });
        let page: Vec<(i64, bool)> = changes
            .iter()
            .filter(|(_, c)| c.tier == 0)
            .map(|(m, c)| (*m, c.firing))
            .collect();
        // Windows hold only the traffic seen so far: at boundary 2 both
        // hold the sample of minute 1 (5 % errors, burn 50) and the tier
        // fires. Samples from minute 21 on carry no traffic, so the 5m
        // window is empty from boundary 26: no burn rate, the tier resolves.
        assert_eq!(page, vec![(2, true), (26, false)]);
        let resolved = &changes
            .iter()
            .find(|(m, c)| *m == 26 && c.tier == 0)
            .unwrap()
            .1;
        assert_eq!(resolved.burn_short, None);
    }

    #[test]
    fn counter_reset_counts_the_new_value() {
        let p = policy("99.9", "30d");
        let mut set = SloSet::new(&p);
        let t = |m: i64| Timestamp(T0 + m * MINUTE);
        set.observe(t(0), &sample("200", 1000));
        set.observe(t(0), &sample("500", 10));
        set.observe(t(1), &sample("200", 2000));
        set.observe(t(1), &sample("500", 20));
        // Both counters restart: the new values are the increases.
        set.observe(t(2), &sample("200", 500));
        set.observe(t(2), &sample("500", 5));
        let inc = set.states[0].windows.increase(t(3), Duration::minutes(5));
        let m = crate::records::value::SCALE as u64;
        assert_eq!(
            inc,
            Increase {
                err: 15 * m,
                total: 1515 * m
            }
        );
    }

    #[test]
    fn thirty_day_slo_state_fits_in_32_kib() {
        let p = policy("99.9", "30d");
        let set = SloSet::new(&p);
        let bytes = set.window_bytes(0) + std::mem::size_of::<SloState>();
        assert!(bytes <= 32 * 1024, "{bytes} bytes");
    }
}

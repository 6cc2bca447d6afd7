//! The `slos:` section: objectives, SLI selectors and burn-rate tiers.
//!
//! Objectives and factors are read exactly from their decimal text so the
//! burn-rate comparison never meets a float rounding surprise. Windows are
//! checked against what the burn-rate store can answer: 1-minute buckets
//! for the last 6h and 10-minute buckets for the last 3d.

use crate::records::Severity;
use crate::time::{Duration, DAY, HOUR, MINUTE};

use super::super::model::{BurnTier, Ratio, Slo};
use super::super::selector::Selector;
use super::node::Node;
use super::read::{self, index, Ctx, Fields};

const SLO_KEYS: &[&str] = &["name", "service", "objective", "period", "sli", "tiers"];
const SLI_KEYS: &[&str] = &["total", "bad", "good"];
const TIER_KEYS: &[&str] = &["severity", "long", "short", "factor", "budget_percent"];

/// The Workbook's tiers: severity, long and short window in minutes, and
/// the share of the period's error budget (percent) each may burn.
const DEFAULT_TIERS: [(Severity, i64, i64, i128); 4] = [
    (Severity::Page, 60, 5, 2),
    (Severity::Page, 360, 30, 5),
    (Severity::Ticket, 1440, 120, 10),
    (Severity::Ticket, 4320, 360, 10),
];

const FINE_SPAN: i64 = 6 * HOUR;
const COARSE_STEP: i64 = 10 * MINUTE;
const MAX_WINDOW: i64 = 3 * DAY;
const MAX_DECIMALS: u32 = 6;

/// Reads every SLO; also returns each list entry's name (when readable) so
/// runbooks can refer to an SLO even if that SLO has problems of its own.
pub(super) fn read_slos(cx: &mut Ctx, node: &Node, path: &str) -> (Vec<Slo>, Vec<Option<String>>) {
    let mut slos = Vec::new();
    let mut names: Vec<Option<String>> = Vec::new();
    let Some(items) = read::list(cx, node, path) else {
        return (slos, names);
    };
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        let (slo, name) = read_slo(cx, item, &p, &names);
        names.push(name);
        slos.extend(slo);
    }
    (slos, names)
}

fn read_slo(
    cx: &mut Ctx,
    node: &Node,
    path: &str,
    earlier: &[Option<String>],
) -> (Option<Slo>, Option<String>) {
    let Some(f) = Fields::read(cx, node, path, SLO_KEYS) else {
        return (None, None);
    };
    let name = f.required(cx, "name").and_then(|n| {
        let name = read::nonempty(cx, n, &f.path("name"))?;
        if earlier.iter().flatten().any(|e| *e == name) {
            cx.report(n, &f.path("name"), format!("duplicate slo name `{name}`"));
        }
        Some(name)
    });
    let service = f
        .required(cx, "service")
        .and_then(|n| read::nonempty(cx, n, &f.path("service")));
    let objective = f
        .required(cx, "objective")
        .and_then(|n| objective(cx, n, &f.path("objective")));
    let period = match f.get("period") {
        Some(n) => period(cx, n, &f.path("period")),
        None => Some(Duration::days(30)),
    };
    let sli = f
        .required(cx, "sli")
        .and_then(|n| read_sli(cx, n, &f.path("sli")));
    let tiers = match f.get("tiers") {
        Some(n) => read_tiers(cx, n, &f.path("tiers"), period),
        None => period.map(default_tiers),
    };
    let slo = (|| {
        let (total, bad, good) = sli?;
        Some(Slo {
            name: name.clone()?,
            service: service?,
            objective: objective?,
            period: period?,
            total,
            bad,
            good,
            tiers: tiers?,
        })
    })();
    (slo, name)
}

/// A percentage strictly between 0 and 100, kept as a fraction of 1.
fn objective(cx: &mut Ctx, node: &Node, path: &str) -> Option<Ratio> {
    let (n, d) = read::decimal(cx, node, path, MAX_DECIMALS)?;
    if n <= 0 || n >= 100 * d {
        cx.report(
            node,
            path,
            "objective is a percentage strictly between 0 and 100, e.g. 99.9",
        );
        return None;
    }
    Some(ratio(n, d * 100))
}

fn period(cx: &mut Ctx, node: &Node, path: &str) -> Option<Duration> {
    let d = read::duration(cx, node, path)?;
    let ms = d.millis();
    if ms % HOUR != 0 || !(HOUR..=365 * DAY).contains(&ms) {
        cx.report(
            node,
            path,
            format!("period {d} must be a whole number of hours between 1h and 365d"),
        );
        return None;
    }
    Some(d)
}

type Sli = (Selector, Option<Selector>, Option<Selector>);

fn read_sli(cx: &mut Ctx, node: &Node, path: &str) -> Option<Sli> {
    let f = Fields::read(cx, node, path, SLI_KEYS)?;
    let total = f
        .required(cx, "total")
        .and_then(|n| selector(cx, n, &f.path("total")));
    let bad = f.get("bad").map(|n| selector(cx, n, &f.path("bad")));
    let good = f.get("good").map(|n| selector(cx, n, &f.path("good")));
    let chosen = match (bad, good) {
        (Some(b), None) => Some((b, None)),
        (None, Some(g)) => Some((None, g)),
        (Some(_), Some(_)) => {
            cx.report(
                node,
                path,
                "`bad` and `good` are mutually exclusive: set exactly one of them",
            );
            None
        }
        (None, None) => {
            cx.report(node, path, "one of `bad` or `good` is required");
            None
        }
    };
    let (bad, good) = chosen?;
    // A selector that failed to parse was reported already.
    if bad.is_none() && good.is_none() {
        return None;
    }
    Some((total?, bad, good))
}

fn selector(cx: &mut Ctx, node: &Node, path: &str) -> Option<Selector> {
    let s = read::string(cx, node, path)?;
    match Selector::parse(&s) {
        Ok(sel) => Some(sel),
        Err(e) => {
            cx.report(node, path, format!("bad selector {s:?}: {e}"));
            None
        }
    }
}

fn read_tiers(
    cx: &mut Ctx,
    node: &Node,
    path: &str,
    period: Option<Duration>,
) -> Option<Vec<BurnTier>> {
    let items = read::list(cx, node, path)?;
    if items.is_empty() {
        cx.report(
            node,
            path,
            "must not be empty (leave `tiers` out for the default tiers)",
        );
        return None;
    }
    let tiers: Vec<Option<BurnTier>> = items
        .iter()
        .enumerate()
        .map(|(i, item)| read_tier(cx, item, &index(path, i), period))
        .collect();
    tiers.into_iter().collect()
}

fn read_tier(cx: &mut Ctx, node: &Node, path: &str, period: Option<Duration>) -> Option<BurnTier> {
    let f = Fields::read(cx, node, path, TIER_KEYS)?;
    let severity = f
        .required(cx, "severity")
        .and_then(|n| read::severity(cx, n, &f.path("severity")));
    let long = f
        .required(cx, "long")
        .and_then(|n| window(cx, n, &f.path("long")));
    let short = f
        .required(cx, "short")
        .and_then(|n| window(cx, n, &f.path("short")));
    if let (Some(l), Some(s), Some(sn)) = (long, short, f.get("short")) {
        if s >= l {
            cx.report(
                sn,
                &f.path("short"),
                format!("short window {s} must be shorter than the long window {l}"),
            );
        }
    }
    if let (Some(l), Some(p), Some(ln)) = (long, period, f.get("long")) {
        if l > p {
            cx.report(
                ln,
                &f.path("long"),
                format!("long window {l} is longer than the SLO period {p}"),
            );
        }
    }
    let factor = tier_factor(cx, &f, long, short, period);
    Some(BurnTier {
        severity: severity?,
        long: long?,
        short: short?,
        factor: factor?,
    })
}

fn tier_factor(
    cx: &mut Ctx,
    f: &Fields,
    long: Option<Duration>,
    short: Option<Duration>,
    period: Option<Duration>,
) -> Option<Ratio> {
    match (f.get("factor"), f.get("budget_percent")) {
        (Some(_), Some(_)) => {
            cx.report(
                f.node,
                &f.path,
                "`factor` and `budget_percent` are mutually exclusive: set one of them",
            );
            None
        }
        (Some(n), None) => {
            let (num, den) = read::decimal(cx, n, &f.path("factor"), MAX_DECIMALS)?;
            if num <= 0 {
                cx.report(n, &f.path("factor"), "factor must be greater than 0");
                return None;
            }
            Some(ratio(num, den))
        }
        (None, Some(n)) => {
            let p = f.path("budget_percent");
            let (num, den) = read::decimal(cx, n, &p, MAX_DECIMALS)?;
            if num <= 0 || num > 100 * den {
                cx.report(
                    n,
                    &p,
                    "budget_percent must be greater than 0 and at most 100",
                );
                return None;
            }
            Some(budget_factor((num, den * 100), period?, long?))
        }
        (None, None) => {
            let (long, short) = (long?, short?);
            let share = DEFAULT_TIERS
                .iter()
                .find(|t| Duration::minutes(t.1) == long && Duration::minutes(t.2) == short)
                .map(|t| (t.3, 100));
            if share.is_none() {
                let msg = format!("factor or budget_percent required ({long}/{short} is not a default window pair)");
                cx.report(f.node, &f.path, msg);
            }
            Some(budget_factor(share?, period?, long))
        }
    }
}

/// Checks a window against the burn-rate store's buckets.
fn window(cx: &mut Ctx, node: &Node, path: &str) -> Option<Duration> {
    let d = read::duration(cx, node, path)?;
    let ms = d.millis();
    let why = if ms <= 0 || ms % MINUTE != 0 {
        Some(format!(
            "window {d} must be a positive whole number of minutes"
        ))
    } else if ms > MAX_WINDOW {
        Some(format!(
            "window {d} is longer than 3d, the longest history kept"
        ))
    } else if ms > FINE_SPAN && ms % COARSE_STEP != 0 {
        Some(format!(
            "window {d} is longer than 6h, so it must be a multiple of 10m"
        ))
    } else {
        None
    };
    if let Some(why) = why {
        cx.report(node, path, why);
        return None;
    }
    Some(d)
}

/// The default tiers scaled to `period`, without those whose long window
/// does not fit in it.
pub(super) fn default_tiers(period: Duration) -> Vec<BurnTier> {
    DEFAULT_TIERS
        .iter()
        .filter(|t| Duration::minutes(t.1) <= period)
        .map(|&(severity, long, short, pct)| BurnTier {
            severity,
            long: Duration::minutes(long),
            short: Duration::minutes(short),
            factor: budget_factor((pct, 100), period, Duration::minutes(long)),
        })
        .collect()
}

/// Burning `share` of the budget within `long` means a burn rate of
/// share × period / long.
fn budget_factor(share: (i128, i128), period: Duration, long: Duration) -> Ratio {
    ratio(
        share.0 * i128::from(period.millis()),
        share.1 * i128::from(long.millis()),
    )
}

fn ratio(num: i128, den: i128) -> Ratio {
    let (num, den) = read::reduce(num, den);
    Ratio { num, den }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn factors(period: Duration) -> Vec<(i128, i128)> {
        default_tiers(period)
            .iter()
            .map(|t| (t.factor.num, t.factor.den))
            .collect()
    }

    #[test]
    fn default_factors_for_30_days_are_the_workbook_ones() {
        assert_eq!(
            factors(Duration::days(30)),
            vec![(72, 5), (6, 1), (3, 1), (1, 1)]
        );
    }

    #[test]
    fn default_factors_scale_with_the_period() {
        // 2 % of 168h in 1h, 5 % in 6h, 10 % in 1d, 10 % in 3d.
        assert_eq!(
            factors(Duration::days(7)),
            vec![(84, 25), (7, 5), (7, 10), (7, 30)]
        );
        let day = default_tiers(Duration::days(1));
        assert_eq!(day.len(), 3);
        assert_eq!(day[2].long, Duration::days(1));
        assert_eq!(default_tiers(Duration::hours(1)).len(), 1);
    }
}

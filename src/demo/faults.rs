//! Fault kinds a service instance understands, and the demo's fault
//! schedule.

use std::fmt;
use std::time::Duration;

use super::DemoError;

/// A fault that `POST /admin/fault` injects into a service instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// Simulated memory grows with each `/work` request; past the limit
    /// the instance exits with code 137, as after an OOM kill.
    Leak,
    /// The instance's capacity drops to a few requests per second; the
    /// excess is answered with 500. Adding instances spreads the load.
    Errors,
    /// The primary fails: `/health` 503, `/work` 500. Ignored by replicas.
    PrimaryDown,
    /// Stale cache entries: `/health` 503, every fifth `/work` 500.
    CachePoison,
    /// A dependency answers slowly: `/work` takes `slow_ms`, `/health` 503.
    SlowDependency,
    /// The database's connection pool is exhausted: `/health` 503.
    DbConnections,
    /// An unusual failure no runbook covers: `/health` 503.
    DiskCorruption,
    /// Shards unevenly spread: `/health` 503 until `POST /admin/rebalance`.
    ShardImbalance,
    /// Removes every active fault.
    Clear,
}

impl Fault {
    /// Every fault name, as accepted by [`Fault::parse`].
    pub const NAMES: &'static [&'static str] = &[
        "leak",
        "errors",
        "primary_down",
        "cache_poison",
        "slow_dependency",
        "db_connections",
        "disk_corruption",
        "shard_imbalance",
        "clear",
    ];

    pub fn parse(s: &str) -> Result<Fault, DemoError> {
        Ok(match s {
            "leak" => Fault::Leak,
            "errors" => Fault::Errors,
            "primary_down" => Fault::PrimaryDown,
            "cache_poison" => Fault::CachePoison,
            "slow_dependency" => Fault::SlowDependency,
            "db_connections" => Fault::DbConnections,
            "disk_corruption" => Fault::DiskCorruption,
            "shard_imbalance" => Fault::ShardImbalance,
            "clear" => Fault::Clear,
            other => return Err(DemoError::UnknownFault(other.to_string())),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Leak => "leak",
            Fault::Errors => "errors",
            Fault::PrimaryDown => "primary_down",
            Fault::CachePoison => "cache_poison",
            Fault::SlowDependency => "slow_dependency",
            Fault::DbConnections => "db_connections",
            Fault::DiskCorruption => "disk_corruption",
            Fault::ShardImbalance => "shard_imbalance",
            Fault::Clear => "clear",
        }
    }

    /// A fleet-level fault belongs to the service rather than to one
    /// process: restarting or adding instances does not remove it, because
    /// the supervisor applies it to every instance it starts until the
    /// service's faults are cleared.
    pub fn is_fleet_level(self) -> bool {
        matches!(
            self,
            Fault::Errors | Fault::SlowDependency | Fault::DiskCorruption
        )
    }

    /// The reason `/health` gives while this fault is active, if it fails
    /// the health check.
    pub fn health_reason(self) -> Option<&'static str> {
        match self {
            Fault::PrimaryDown => Some(reasons::PRIMARY_DOWN),
            Fault::CachePoison => Some(reasons::STALE_CACHE),
            Fault::SlowDependency => Some(reasons::DEPENDENCY_LATENCY),
            Fault::DbConnections => Some(reasons::DB_CONNECTIONS),
            Fault::DiskCorruption => Some(reasons::DISK_CORRUPTION),
            Fault::ShardImbalance => Some(reasons::SHARD_IMBALANCE),
            Fault::Leak | Fault::Errors | Fault::Clear => None,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The reasons `/health` answers with (503), shared with the monitor's
/// alert rules.
pub mod reasons {
    pub const PRIMARY_DOWN: &str = "primary down";
    pub const STALE_CACHE: &str = "stale cache";
    pub const DEPENDENCY_LATENCY: &str = "dependency latency";
    pub const DB_CONNECTIONS: &str = "db connections exhausted";
    pub const DISK_CORRUPTION: &str = "disk corruption";
    pub const SHARD_IMBALANCE: &str = "shard imbalance";
}

/// A change announced on the changes topic (`kind` `migration`, `state`
/// `started` or `finished`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeStep {
    pub kind: String,
    pub state: String,
    pub id: String,
}

/// One step of a fault schedule. At `at` (counted from the start of
/// [`Fleet::run_schedule`](super::Fleet::run_schedule)) the runner first
/// emits the change, if any, then injects `fault` into `service` (a
/// service or instance name) unless `fault` is empty, and emits `note`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledFault {
    pub at: Duration,
    pub service: String,
    pub fault: String,
    pub note: String,
    pub change: Option<ChangeStep>,
}

impl fmt::Display for ScheduledFault {
    /// `t+5.0s  checkout  leak  memory leak …`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t+{:.1}s  {}", self.at.as_secs_f64(), self.service)?;
        if let Some(c) = &self.change {
            write!(f, "  {} {} ({})", c.kind, c.state, c.id)?;
        }
        if !self.fault.is_empty() {
            write!(f, "  {}", self.fault)?;
        }
        write!(f, "  {}", self.note)
    }
}

/// The demo's schedule is written for 120 s; shorter or longer demos scale
/// every offset proportionally, but never compress below this length.
const BASE_SECONDS: f64 = 120.0;
const FLOOR_SECONDS: f64 = 60.0;

/// The id of the schedule's database migration.
pub const MIGRATION_ID: &str = "chg-orders-db-0042";

/// The fault schedule of `selfheal demo` for a demo lasting `duration`,
/// ordered by `at`. Offsets are those of a 120 s demo scaled by
/// `duration / 120 s`; below 60 s they stay at the 60 s spacing, so each
/// fault keeps time to show its remediation.
pub fn demo_schedule(duration: Duration) -> Vec<ScheduledFault> {
    let factor = duration.as_secs_f64().max(FLOOR_SECONDS) / BASE_SECONDS;
    let at = |secs: f64| Duration::from_millis((secs * factor * 1000.0).round() as u64);
    let step = |secs: f64, service: &str, fault: &str, note: &str| ScheduledFault {
        at: at(secs),
        service: service.to_string(),
        fault: fault.to_string(),
        note: note.to_string(),
        change: None,
    };
    let migration = |state: &str| {
        Some(ChangeStep {
            kind: "migration".to_string(),
            state: state.to_string(),
            id: MIGRATION_ID.to_string(),
        })
    };
    let mut schedule = vec![
        step(
            5.0,
            "checkout",
            "leak",
            "memory leak in checkout: an OOM kill follows in about 12s",
        ),
        step(
            15.0,
            "search",
            "errors",
            "search overloaded: one instance cannot serve its traffic",
        ),
        step(
            28.0,
            "orders",
            "primary_down",
            "orders primary fails; the replica is healthy",
        ),
        step(
            38.0,
            "catalog",
            "cache_poison",
            "catalog cache poisoned with stale entries",
        ),
        step(
            48.0,
            "recommendations",
            "slow_dependency",
            "recommendations' dependency slows to 300ms: restart and scale do not help",
        ),
        ScheduledFault {
            change: migration("started"),
            ..step(55.0, "orders-db", "", "orders-db schema migration starts")
        },
        step(
            58.0,
            "orders-db",
            "db_connections",
            "orders-db connection pool exhausted during the migration",
        ),
        step(
            65.0,
            "inventory",
            "disk_corruption",
            "inventory disk corruption: no runbook covers it",
        ),
        step(
            72.0,
            "search",
            "shard_imbalance",
            "search shards imbalanced: fixed by POST /admin/rebalance",
        ),
        ScheduledFault {
            change: migration("finished"),
            ..step(
                85.0,
                "orders-db",
                "clear",
                "orders-db migration finished; connections released",
            )
        },
        step(
            95.0,
            "inventory",
            "clear",
            "inventory disk repaired by a human",
        ),
        step(
            100.0,
            "recommendations",
            "clear",
            "recommendations' dependency recovers",
        ),
        step(
            110.0,
            "search",
            "clear",
            "end of the demo: search faults cleared",
        ),
    ];
    schedule.sort_by_key(|s| s.at);
    schedule
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_itself() {
        for name in Fault::NAMES {
            let fault = Fault::parse(name).expect("listed name parses");
            assert_eq!(fault.as_str(), *name);
        }
        assert!(matches!(
            Fault::parse("meteor"),
            Err(DemoError::UnknownFault(_))
        ));
    }

    #[test]
    fn schedule_for_120s_matches_the_demo_story() {
        let s = demo_schedule(Duration::from_secs(120));
        assert!(s.windows(2).all(|w| w[0].at <= w[1].at), "ordered by time");
        let find = |service: &str, fault: &str| {
            s.iter()
                .find(|f| f.service == service && f.fault == fault)
                .unwrap_or_else(|| panic!("{service} {fault} scheduled"))
                .at
        };
        assert_eq!(find("checkout", "leak"), Duration::from_secs(5));
        assert_eq!(find("search", "errors"), Duration::from_secs(15));
        assert_eq!(find("orders", "primary_down"), Duration::from_secs(28));
        assert_eq!(find("orders-db", "db_connections"), Duration::from_secs(58));
        // The migration is announced before the database fault and finished
        // together with its clearing.
        let started = s
            .iter()
            .find(|f| f.change.as_ref().is_some_and(|c| c.state == "started"))
            .expect("migration start scheduled");
        assert!(started.at < find("orders-db", "db_connections"));
        assert_eq!(started.service, "orders-db");
        let finished = s
            .iter()
            .find(|f| f.change.as_ref().is_some_and(|c| c.state == "finished"))
            .expect("migration end scheduled");
        assert_eq!(finished.fault, "clear");
        assert_eq!(finished.at, Duration::from_secs(85));
        // The slow dependency is cleared only near the end.
        assert_eq!(find("recommendations", "clear"), Duration::from_secs(100));
        for f in &s {
            if !f.fault.is_empty() {
                Fault::parse(&f.fault).expect("scheduled faults are valid");
            }
        }
    }

    #[test]
    fn schedule_scales_with_duration_down_to_a_floor() {
        let long = demo_schedule(Duration::from_secs(240));
        let base = demo_schedule(Duration::from_secs(120));
        let short = demo_schedule(Duration::from_secs(10));
        let floor = demo_schedule(Duration::from_secs(60));
        assert_eq!(long[1].at, base[1].at * 2);
        assert_eq!(floor[1].at * 2, base[1].at);
        assert_eq!(short, floor);
    }

    #[test]
    fn schedule_lines_print_readably() {
        let s = demo_schedule(Duration::from_secs(120));
        assert_eq!(
            s[0].to_string(),
            "t+5.0s  checkout  leak  memory leak in checkout: an OOM kill follows in about 12s"
        );
        let started = s
            .iter()
            .find(|f| f.change.is_some())
            .expect("a change step");
        assert!(started
            .to_string()
            .contains("migration started (chg-orders-db-0042)"));
    }
}

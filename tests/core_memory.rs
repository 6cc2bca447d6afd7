//! What the decision core keeps per incident once the incident is over.
//!
//! Ten incidents a second, each on a pod never seen before (one new pod
//! name per incident, as a rolling fleet makes them), each fixed by a
//! tier-1 restart whose result succeeds and whose alert then resolves. A
//! counting allocator measures the heap the core holds. After the
//! guardrails' longest window (an hour) every per-target history that can
//! be forgotten has been, so from then on the only thing allowed to grow
//! is the one-day memory of closed alert keys: a few dozen bytes an
//! incident, not the labels' length.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use selfheal::engine::Engine;
use selfheal::records::{
    ActionResult, Alert, AlertStatus, IncidentState, Input, Labels, Output, Record, ResultStatus,
};
use selfheal::time::{Timestamp, MINUTE};

/// Bytes allocated and not freed, by every thread of this test binary.
static LIVE: AtomicI64 = AtomicI64::new(0);

struct Counting;

// SAFETY: every call goes to the system allocator unchanged; only the
// byte count is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as i64, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as i64, Ordering::Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as i64 - l.size() as i64, Ordering::Relaxed);
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const POLICY: &str = r#"
runbooks:
  - name: restart-pod
    match: ['alertname="PodDown"']
    tier: 1
    action: {kind: restart, target: '{{ labels.pod }}'}
    validate: {within: 5m}
    guardrails:
      cooldown: 10m
      max_actions_per_target: {count: 3, per: 1h}
"#;

const SERVICES: u64 = 200;
/// One new incident every this many milliseconds.
const EVERY_MS: i64 = 100;

fn alert(n: u64, ts: i64, status: AlertStatus) -> Alert {
    let svc = n % SERVICES;
    Alert {
        status,
        labels: Labels::from_pairs([
            ("alertname", "PodDown".to_string()),
            ("service", format!("svc{svc}")),
            // A realistic pod name: deployment, replica-set hash, suffix.
            ("pod", format!("svc{svc}-deployment-7d9f8c6b5-{n:08x}")),
            ("namespace", "production".to_string()),
            ("severity", "page".to_string()),
        ]),
        annotations: Labels::from_pairs([("summary", "pod is down".to_string())]),
        starts_at: Some(Timestamp(ts)),
        ends_at: (status == AlertStatus::Resolved).then_some(Timestamp(ts)),
        fingerprint: Some(format!("{n:016x}")),
        generator_url: None,
    }
}

fn heap() -> i64 {
    LIVE.load(Ordering::Relaxed)
}

#[test]
fn closed_incidents_leave_a_few_dozen_bytes_each() {
    let policy = Arc::new(selfheal::policy::parse(POLICY, "p.yaml").unwrap());
    let mut core = Engine::new(policy);
    let mut out = Vec::new();
    let t0 = 1_800_000_000_000i64;
    let process = |core: &mut Engine, ts: i64, input: Input, out: &mut Vec<_>| {
        out.clear();
        core.process(
            &Record {
                ts: Timestamp(ts),
                input,
            },
            out,
        )
        .unwrap();
    };

    let (warm, end) = (70 * MINUTE, 130 * MINUTE);
    let (mut closed, mut heap_at_warm, mut closed_at_warm) = (0u64, 0i64, 0u64);
    let mut n = 0u64;
    let mut t = 0i64;
    while t < end {
        if heap_at_warm == 0 && t >= warm {
            heap_at_warm = heap();
            closed_at_warm = closed;
        }
        let ts = t0 + t;
        process(
            &mut core,
            ts,
            Input::Alerts(vec![alert(n, ts, AlertStatus::Firing)]),
            &mut out,
        );
        let commands: Vec<String> = out
            .iter()
            .filter_map(|e| match &e.output {
                Output::Command(c) => Some(c.id.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(commands.len(), 1, "incident {n} got no command: {out:?}");
        process(
            &mut core,
            ts + 10,
            Input::Result(ActionResult {
                command_id: commands[0].clone(),
                status: ResultStatus::Succeeded,
                detail: "restarted".into(),
                at: Some(Timestamp(ts + 10)),
                previous: Default::default(),
            }),
            &mut out,
        );
        process(
            &mut core,
            ts + 20,
            Input::Alerts(vec![alert(n, ts, AlertStatus::Resolved)]),
            &mut out,
        );
        closed += out
            .iter()
            .filter(
                |e| matches!(&e.output, Output::Incident(i) if i.state == IncidentState::Resolved),
            )
            .count() as u64;
        n += 1;
        t += EVERY_MS;
    }
    drop(out);

    assert_eq!(closed, n, "every incident closed");
    let incidents = closed - closed_at_warm;
    let grown = heap() - heap_at_warm;
    let per_incident = grown as f64 / incidents as f64;
    println!(
        "{incidents} incidents closed between minute 70 and 130: heap {:+.2} MiB, {per_incident:.1} bytes each",
        grown as f64 / (1024.0 * 1024.0)
    );
    // A closed key is 24 bytes in a hash map that doubles: under 64 bytes
    // an incident whatever the doubling; its labels alone are over 100.
    assert!(
        per_incident < 64.0,
        "the core keeps {per_incident:.1} bytes per closed incident"
    );
}

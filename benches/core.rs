//! Throughput of the decision core alone, no I/O and no decoding.
//!
//! What it measures: metric samples per second through `Engine::process`
//! with a policy of 10,000 SLOs (one per service, SRE Workbook tiers) and
//! 1,000 runbooks, one sample per series per minute for 10,000 services
//! (two series each: successes and errors), so every iteration also pays
//! for one minute-boundary evaluation of all 10,000 SLOs. Why: the core
//! must never be the bottleneck of live ingestion or of replay; the target
//! is 2 million samples per second on one core.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use selfheal::engine::Engine;
use selfheal::policy::parse;
use selfheal::records::{Fixed, Input, Labels, MetricSample, Record};
use selfheal::time::{Timestamp, MINUTE};

const SERVICES: usize = 10_000;
const RUNBOOKS: usize = 1_000;

fn policy() -> String {
    let mut s = String::with_capacity(SERVICES * 200);
    s += "slos:\n";
    for i in 0..SERVICES {
        s += &format!(
            "  - name: s{i}\n    service: svc{i}\n    objective: 99.9\n    sli:\n      total: 'http_requests_total{{service=\"svc{i}\"}}'\n      bad: 'http_requests_total{{service=\"svc{i}\",code=~\"5..\"}}'\n"
        );
    }
    s += "runbooks:\n";
    for i in 0..RUNBOOKS {
        s += &format!(
            "  - name: rb{i}\n    match: ['alertname=\"Alert{i}\"', 'env!=\"dev\"']\n    tier: 1\n    action: {{kind: restart, target: '{{{{ labels.pod }}}}'}}\n    validate: {{within: 5m, slo: s{i}}}\n"
        );
    }
    s
}

/// One minute of samples: two series per service.
fn minute() -> Vec<Record> {
    let mut v = Vec::with_capacity(SERVICES * 2);
    for i in 0..SERVICES {
        for code in ["200", "500"] {
            v.push(Record {
                ts: Timestamp(0),
                input: Input::Metric(MetricSample {
                    name: "http_requests_total".into(),
                    labels: Labels::from_pairs([
                        ("service", format!("svc{i}")),
                        ("code", code.to_string()),
                        ("instance", format!("10.0.{}.{}:9090", i / 250, i % 250)),
                    ]),
                    value: Fixed(0),
                    timestamp: None,
                }),
            });
        }
    }
    v
}

/// Moves the minute's records to minute `m` with fresh counter values:
/// 1000 requests a minute per service, and one error a minute on every
/// third service (burn below 1: steady state, nothing fires).
fn advance(records: &mut [Record], t0: i64, m: i64) {
    for (k, r) in records.iter_mut().enumerate() {
        r.ts = Timestamp(t0 + m * MINUTE);
        if let Input::Metric(s) = &mut r.input {
            let per_minute = if k % 2 == 0 {
                1000
            } else {
                i64::from(k % 6 == 1)
            };
            s.value = Fixed::from_units(m * per_minute);
        }
    }
}

fn bench(c: &mut Criterion) {
    let policy = Arc::new(parse(&policy(), "bench.yaml").expect("bench policy"));
    let mut g = c.benchmark_group("core");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements((SERVICES * 2) as u64));
    g.bench_function("metric_samples_10k_slos_1k_runbooks", |b| {
        let t0 = Timestamp::parse("2026-03-01T00:00:00Z").expect("t0").0;
        let mut engine = Engine::new(policy.clone());
        let mut records = minute();
        let mut out = Vec::new();
        let mut m = 0i64;
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                advance(&mut records, t0, m);
                m += 1;
                let start = Instant::now();
                for r in &records {
                    let _ = engine.process(black_box(r), &mut out);
                }
                spent += start.elapsed();
                out.clear();
            }
            spent
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

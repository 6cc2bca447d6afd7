//! The core pieces one at a time: counter windows, PromQL selectors and
//! the SLO series index, runbook matchers, and input decoding.
//!
//! `benches/core.rs` and `benches/replay.rs` measure whole paths; these
//! benches take them apart, so that a change in one of them can be told
//! from a change in another. Each runs for a few seconds (20 samples).
//!
//! The policy is the one of `benches/core.rs`: 10,000 SLOs (one per
//! service, SRE Workbook tiers over 30 days) and 1,000 runbooks, each
//! matching `alertname="AlertN"` and `env!="dev"`.

use std::hint::black_box;
use std::sync::OnceLock;
use std::time::{Duration as StdDuration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use selfheal::live::wire::{encode_input, replay_line, Format};
use selfheal::policy::{parse, Policy, Selector};
use selfheal::records::avro::{decode_metric_value, decode_value, scan_metric_value};
use selfheal::records::line::{Decoded, LineDecoder};
use selfheal::records::{
    Alert, AlertStatus, Fixed, Input, InputKind, LabelBuf, Labels, MetricSample,
};
use selfheal::slo::window::Windows;
use selfheal::slo::SloSet;
use selfheal::time::{Duration, Timestamp, DAY, MINUTE};

const SERVICES: usize = 10_000;
const RUNBOOKS: usize = 1_000;
const T0: i64 = 1_772_323_200_000; // 2026-03-01T00:00:00Z

fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let mut s = String::with_capacity(SERVICES * 200 + RUNBOOKS * 200);
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
        parse(&s, "bench.yaml").expect("bench policy")
    })
}

/// A quick group: 20 samples, 3 s of measurement, throughput per element.
fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(20);
    g.warm_up_time(StdDuration::from_secs(1));
    g.measurement_time(StdDuration::from_secs(3));
    g.throughput(Throughput::Elements(1));
    g
}

fn sample(service: usize, code: &str, instance: &str, value: i64) -> MetricSample {
    MetricSample {
        name: "http_requests_total".into(),
        labels: Labels::from_pairs([
            ("service", format!("svc{service}")),
            ("code", code.to_string()),
            ("instance", instance.to_string()),
            ("job", "api".to_string()),
        ]),
        value: Fixed::from_units(value),
        timestamp: Some(Timestamp(T0)),
    }
}

/// `window_update`: one `Windows::add` of an (errors, total) increase to
/// one SLO's counter windows (a 3-day longest window and a 30-day budget
/// period, as the Workbook tiers give), with event time advancing 5 s per
/// add, so every 12th add crosses a minute and writes a snapshot into the
/// 1-minute ring, every 120th also into the 10-minute ring and every 720th
/// into the hourly period ring. Why: every counter sample that feeds an
/// SLO pays one add (two for a series that is both total and bad), so it
/// must stay a few nanoseconds, boundary writes included.
fn window_update(c: &mut Criterion) {
    let mut g = group(c, "window_update");
    g.bench_function("add_5s_steps", |b| {
        let mut w = Windows::new(Duration::days(3), Duration::days(30), false);
        let mut t = T0;
        b.iter(|| {
            t += 5_000;
            w.add(
                black_box(Timestamp(t)),
                black_box(1_000_000),
                black_box(1_000_000_000),
            );
        });
    });
    g.finish();
}

/// `window_evaluate`: reading the fast page tier's pair of increases, over
/// 1h and over 5m, from one SLO's windows holding three days of
/// per-minute increases, at a minute boundary whose snapshots are already
/// written (as for every window read after the first of an evaluation).
/// Why: at each minute boundary every active SLO reads its period and up
/// to eight tier windows (the Workbook's four tiers, long and short), up
/// to 90,000 reads for 10,000 SLOs, so a read must cost a few nanoseconds.
fn window_evaluate(c: &mut Criterion) {
    let mut g = group(c, "window_evaluate");
    g.bench_function("1h_5m", |b| {
        let mut w = Windows::new(Duration::days(3), Duration::days(30), false);
        let minutes = 3 * DAY / MINUTE;
        for m in 0..minutes {
            w.add(
                Timestamp(T0 + m * MINUTE),
                (m % 7) as u64 * 1_000_000,
                1_000_000_000,
            );
        }
        let at = Timestamp(T0 + minutes * MINUTE);
        w.sync_to(at);
        let (long, short) = (Duration::hours(1), Duration::minutes(5));
        b.iter(|| {
            let l = w.increase(black_box(at), black_box(long));
            let s = w.increase(black_box(at), black_box(short));
            (l, s)
        });
    });
    g.finish();
}

/// `selector_match`: `Selector::matches` of
/// `http_requests_total{service="svc42",code=~"5.."}` against a series
/// with four labels that it selects (`code="503"`), one that fails on the
/// anchored regex (`code="200"`) and one that fails on the service
/// (`service="svc43"`). Why: an SLI selector is matched against every new
/// series the index offers it, so this is the unit cost of first sight.
fn selector_match(c: &mut Criterion) {
    let mut g = group(c, "selector_match");
    let sel =
        Selector::parse(r#"http_requests_total{service="svc42",code=~"5.."}"#).expect("selector");
    let hit = sample(42, "503", "10.0.0.42:9090", 0).labels;
    let miss_code = sample(42, "200", "10.0.0.42:9090", 0).labels;
    let miss_service = sample(43, "503", "10.0.0.43:9090", 0).labels;
    assert!(sel.matches("http_requests_total", &hit));
    assert!(!sel.matches("http_requests_total", &miss_code));
    assert!(!sel.matches("http_requests_total", &miss_service));
    for (name, labels) in [
        ("match", &hit),
        ("no_match_code", &miss_code),
        ("no_match_service", &miss_service),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| sel.matches(black_box("http_requests_total"), black_box(labels)));
        });
    }
    g.finish();
}

/// `slo_observe`: `SloSet::observe` of one counter sample with the
/// 10,000-SLO policy, for a series already seen (hash lookup of name and
/// labels, the counter increase, one window add) and for a fresh series
/// (label set copied, selector index searched by metric name and
/// `service`, the two candidate selectors matched, the series stored).
/// Why: every sample but a series' first takes the seen path, which must
/// not depend on the number of SLOs; the fresh path is what a deploy that
/// renames every instance pays once per series.
fn slo_observe(c: &mut Criterion) {
    let p = policy();
    let mut g = group(c, "slo_observe");
    g.bench_function("seen_series", |b| {
        let mut set = SloSet::new(p);
        let mut m = sample(42, "200", "10.0.0.42:9090", 0);
        let mut t = T0;
        set.observe(Timestamp(t), &m);
        let mut v = 0;
        b.iter(|| {
            t += 5_000;
            v += 1000;
            m.value = Fixed::from_units(v);
            set.observe(black_box(Timestamp(t)), black_box(&m));
        });
        assert_eq!(set.series_count(), 1);
    });
    g.bench_function("fresh_series", |b| {
        // Series are stored for good, so the set is rebuilt (untimed) now
        // and then to keep memory bounded.
        const CHUNK: u64 = 10_000;
        const MAX_SERIES: usize = 200_000;
        let mut set = SloSet::new(p);
        let mut next = 0usize;
        b.iter_custom(|iters| {
            let mut spent = StdDuration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(CHUNK);
                if set.series_count() + n as usize > MAX_SERIES {
                    set = SloSet::new(p);
                }
                let batch: Vec<MetricSample> = (0..n)
                    .map(|_| {
                        next += 1;
                        sample(next % SERVICES, "200", &format!("pod-{next}:9090"), 7)
                    })
                    .collect();
                let ts = Timestamp(T0);
                let start = Instant::now();
                for m in &batch {
                    set.observe(ts, black_box(m));
                }
                spent += start.elapsed();
                left -= n;
            }
            spent
        });
    });
    g.finish();
}

/// `matcher_eval`: `Policy::runbook_for`, the engine's choice of runbook
/// for a new incident, over the 1,000 runbooks for an alert with six
/// labels: matched by the first runbook, by the last (999 runbooks
/// rejected on their `alertname` matcher first), and by none (all 1,000
/// rejected). Why: it runs once per incident opened, so it only has to be
/// far below the cost of the incident's decision and audit record; the
/// last and none cases bound it for a policy of this size.
fn matcher_eval(c: &mut Criterion) {
    let p = policy();
    let alert = |name: &str| {
        Labels::from_pairs([
            ("alertname", name),
            ("service", "svc42"),
            ("env", "prod"),
            ("severity", "page"),
            ("namespace", "shop"),
            ("pod", "svc42-7d9f8b6c5-x2k4q"),
        ])
    };
    let mut g = group(c, "matcher_eval");
    for (name, alertname, want) in [
        ("first_of_1k", "Alert0", Some(0)),
        ("last_of_1k", "Alert999", Some(RUNBOOKS - 1)),
        ("none_of_1k", "Unknown", None),
    ] {
        let labels = alert(alertname);
        assert_eq!(p.runbook_for(&labels), want);
        g.bench_function(name, |b| b.iter(|| p.runbook_for(black_box(&labels))));
    }
    g.finish();
}

/// `decode`: one input record value from its Kafka bytes to an owned
/// `Input` through `decode_value` (framing detection, then the Avro codec
/// or the JSON decoder), for a metric sample with four labels and a
/// Prometheus alert with six labels and two annotations, each written by
/// `encode_input` as Avro single-object and as JSON; the same Avro sample
/// through `decode_metric_value`, the live engine's path for a new
/// series, which decodes into a reused label buffer and borrows the rest;
/// through `scan_metric_value` and `MetricScan::check`, its path for a
/// sample of a series it has seen (the series part is stepped over, not
/// decoded; its lookup by those bytes is not included); and one replay line
/// of the same metric sample through `LineDecoder`, the allocation-free
/// JSON Lines scanner that borrows the name and labels. Why: decoding is
/// the largest per-record cost of live ingestion and of replay, and Avro
/// is the default wire format, so it must be no slower than JSON per
/// record.
fn decode(c: &mut Criterion) {
    let metric = Input::Metric(sample(42, "503", "10.0.0.42:9090", 123_456));
    let alert = Input::Alerts(vec![Alert {
        status: AlertStatus::Firing,
        labels: Labels::from_pairs([
            ("alertname", "PodOOMKilled"),
            ("service", "svc42"),
            ("env", "prod"),
            ("severity", "page"),
            ("namespace", "shop"),
            ("pod", "svc42-7d9f8b6c5-x2k4q"),
        ]),
        annotations: Labels::from_pairs([
            ("summary", "container svc42 was OOM killed"),
            ("runbook_url", "https://runbooks.example.com/oom"),
        ]),
        starts_at: Some(Timestamp(T0)),
        ends_at: None,
        fingerprint: Some("4f1c2d3e5a6b7c8d".into()),
        generator_url: Some("http://prometheus:9090/graph?g0.expr=oom".into()),
    }]);
    let mut g = group(c, "decode");
    for (name, kind, input, format) in [
        ("metric_avro", InputKind::Metric, &metric, Format::Avro),
        ("metric_json", InputKind::Metric, &metric, Format::Json),
        ("alert_avro", InputKind::Alert, &alert, Format::Avro),
        ("alert_json", InputKind::Alert, &alert, Format::Json),
    ] {
        let bytes = encode_input(input, format).expect("encodable");
        assert_eq!(&decode_value(kind, &bytes).expect("decodes"), input);
        g.bench_function(name, |b| {
            b.iter(|| decode_value(black_box(kind), black_box(&bytes)))
        });
    }
    let avro = encode_input(&metric, Format::Avro).expect("encodable");
    let mut labels = LabelBuf::new();
    let Some(Ok(m)) = decode_metric_value(&avro, &mut labels) else {
        panic!("not a decodable Avro metric sample");
    };
    assert_eq!(Input::Metric(m.to_sample()), metric);
    g.bench_function("metric_avro_borrowed", |b| {
        b.iter(
            || match decode_metric_value(black_box(&avro), &mut labels) {
                Some(Ok(m)) => {
                    black_box((m.name, m.labels.len(), m.value, m.timestamp));
                }
                other => panic!("not decoded: {:?}", other.map(|r| r.map(|m| m.to_sample()))),
            },
        )
    });
    g.bench_function("metric_avro_scan", |b| {
        b.iter(|| match scan_metric_value(black_box(&avro)) {
            Some(s) => match s.check("http_requests_total") {
                Ok(v) => black_box((s.series.len(), v)),
                Err(e) => panic!("refused: {e}"),
            },
            None => panic!("not scanned"),
        })
    });
    let json = encode_input(&metric, Format::Json).expect("encodable");
    let line = replay_line(Timestamp(T0), InputKind::Metric, &json).expect("replay line");
    let mut dec = LineDecoder::new();
    assert!(matches!(dec.decode(&line), Decoded::Metric(..)));
    g.bench_function("metric_json_lines", |b| {
        b.iter(|| match dec.decode(black_box(&line)) {
            Decoded::Metric(ts, m) => {
                black_box((ts, m.name, m.labels.len(), m.value));
            }
            Decoded::Record(r) => panic!("not the metric fast path: {r:?}"),
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    window_update,
    window_evaluate,
    selector_match,
    slo_observe,
    matcher_eval,
    decode
);
criterion_main!(benches);

//! Avro object container files as replay files: every golden scenario
//! written as Avro replays to the same outputs as its JSON Lines form
//! (directly, and through apache_avro's reader for a deflate-compressed
//! copy); records read back equal the records written; a record whose
//! data does not match its kind, or whose bytes are broken, is reported
//! as bad with its record number while later records still replay.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use apache_avro::types::Value as Avro;
use apache_avro::{Codec, DeflateSettings};
use selfheal::policy::load::load;
use selfheal::policy::Policy;
use selfheal::records::avro::envelope;
use selfheal::records::Record;
use selfheal::replay::{replay, AvroFile, AvroWriter, BadLine, Item, JsonLines, Source};

fn scenario_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .expect("tests/scenarios exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("input.jsonl").exists())
        .collect();
    dirs.sort();
    dirs
}

/// The good records of a JSON Lines stream, in order.
fn records(text: &str) -> Vec<Record> {
    let mut src = JsonLines::new(text.as_bytes(), None);
    let mut out = Vec::new();
    while let Some(item) = src.next_item().expect("in memory") {
        if let Item::Record(r) = item {
            out.push(r);
        }
    }
    out
}

fn to_avro(records: &[Record]) -> Vec<u8> {
    let mut w = AvroWriter::new(Vec::new()).expect("header");
    for r in records {
        w.write(r).expect("in memory");
    }
    w.finish().expect("in memory")
}

fn run<S: Source>(policy: &Arc<Policy>, src: &mut S) -> (String, Vec<BadLine>) {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    replay(policy.clone(), src, 0, &mut out, |b| bad.push(b), |_, _| {}).expect("in memory");
    (String::from_utf8(out).expect("UTF-8 output"), bad)
}

fn avro_source(bytes: Vec<u8>) -> AvroFile<std::io::Cursor<Vec<u8>>> {
    AvroFile::new(std::io::Cursor::new(bytes), None).expect("readable header")
}

#[test]
fn scenarios_replay_the_same_from_avro() {
    for dir in scenario_dirs() {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        let policy = Arc::new(load(&dir.join("policy.yaml")).expect("policy loads"));
        let text = fs::read_to_string(dir.join("input.jsonl")).expect("input");
        let recs = records(&text);
        let (want, _) = run(&policy, &mut JsonLines::new(text.as_bytes(), None));

        let bytes = to_avro(&recs);
        let mut back = Vec::new();
        let mut src = avro_source(bytes.clone());
        while let Some(item) = src.next_item().expect("in memory") {
            match item {
                Item::Record(r) => back.push(r),
                Item::Bad(b) => panic!("{name}: {b}"),
            }
        }
        assert_eq!(back, recs, "{name}: records read back");
        let (got, _) = run(&policy, &mut avro_source(bytes.clone()));
        assert_eq!(got, want, "{name}: outputs from Avro");

        // The JSON Lines writer gives the same records too.
        let lines: String = recs.iter().map(|r| r.to_json_line() + "\n").collect();
        assert_eq!(records(&lines), recs, "{name}: JSON Lines written back");

        // apache_avro reads the file; a deflate copy written by it goes
        // through the resolving reader and replays the same.
        let reader = apache_avro::Reader::new(&bytes[..]).expect("apache_avro reads our file");
        let schema = envelope::schema();
        let mut copy = apache_avro::Writer::with_codec(
            schema,
            Vec::new(),
            Codec::Deflate(DeflateSettings::default()),
        );
        let mut n = 0;
        for v in reader {
            copy.append(v.expect("apache_avro decodes our record"))
                .expect("re-encodes");
            n += 1;
        }
        assert_eq!(n, recs.len(), "{name}");
        let copy = copy.into_inner().expect("in memory");
        let (got, _) = run(&policy, &mut avro_source(copy));
        assert_eq!(got, want, "{name}: outputs from a deflate copy");
    }
}

fn metric_value(ts: i64, service: &str, value: &str) -> Avro {
    let labels = [("service", service), ("code", "200")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Avro::String(v.to_string())))
        .collect();
    Avro::Record(vec![
        ("ts".into(), Avro::TimestampMillis(ts)),
        ("kind".into(), Avro::Enum(0, "metric".into())),
        (
            "data".into(),
            Avro::Union(
                1,
                Box::new(Avro::Record(vec![
                    ("timestamp".into(), Avro::String(String::new())),
                    ("value".into(), Avro::String(value.into())),
                    ("name".into(), Avro::String("req".into())),
                    ("labels".into(), Avro::Map(labels)),
                ])),
            ),
        ),
    ])
}

const T0: i64 = 1_772_359_200_000; // 2026-03-01T10:00:00Z

#[test]
fn refused_records_are_reported_and_later_ones_replay() {
    let schema = envelope::schema();
    let mut w = apache_avro::Writer::new(schema, Vec::new());
    w.append(metric_value(T0, "web", "1")).expect("ok");
    // A change record whose data is a metric sample.
    let Avro::Record(mut fields) = metric_value(T0 + 1000, "web", "2") else {
        unreachable!()
    };
    fields[1].1 = Avro::Enum(2, "change".into());
    w.append(Avro::Record(fields)).expect("ok");
    // A metric whose value is not a number.
    w.append(metric_value(T0 + 2000, "web", "NaN")).expect("ok");
    // A tick without data, then a metric without data.
    let bare = |kind: u32, name: &str, ts: i64| {
        Avro::Record(vec![
            ("ts".into(), Avro::TimestampMillis(ts)),
            ("kind".into(), Avro::Enum(kind, name.into())),
            ("data".into(), Avro::Union(0, Box::new(Avro::Null))),
        ])
    };
    w.append(bare(6, "tick", T0 + 3000)).expect("ok");
    w.append(bare(0, "metric", T0 + 4000)).expect("ok");
    w.append(metric_value(T0 + 5000, "web", "7")).expect("ok");
    let bytes = w.into_inner().expect("in memory");

    let mut src = avro_source(bytes);
    let mut seen = Vec::new();
    while let Some(item) = src.next_item().expect("in memory") {
        seen.push(match item {
            Item::Record(r) => format!("{} {:?}", r.ts, r.input.kind()),
            Item::Bad(b) => b.to_string(),
        });
    }
    assert_eq!(
        seen,
        vec![
            "2026-03-01T10:00:00Z Metric".to_string(),
            "line 2: field `data`: a MetricSample record where a change record belongs".into(),
            "line 3: field `value`: value \"NaN\" is not finite".into(),
            "2026-03-01T10:00:03Z Tick".into(),
            "line 5: missing required field `data`".into(),
            "2026-03-01T10:00:05Z Metric".into(),
        ]
    );
}

/// Reads a zig-zag varint at `at`; returns it and the bytes it took.
fn varint(b: &[u8], at: usize) -> (i64, usize) {
    let (mut acc, mut i) = (0u64, 0);
    loop {
        acc |= u64::from(b[at + i] & 0x7f) << (7 * i);
        i += 1;
        if b[at + i - 1] & 0x80 == 0 {
            return ((acc >> 1) as i64 ^ -((acc & 1) as i64), i);
        }
    }
}

#[test]
fn a_broken_record_loses_the_rest_of_its_block_only() {
    // Enough records for several 64 KiB blocks.
    let lines: String = (0..6000)
        .map(|i| {
            format!(
                r#"{{"ts":"2026-03-01T10:{:02}:{:02}Z","kind":"metric","data":{{"name":"req","labels":{{"service":"svc{}","code":"200","instance":"10.0.0.1:9090"}},"value":"{i}"}}}}"#,
                i / 100 % 60,
                i % 60,
                i % 7
            ) + "\n"
        })
        .collect();
    let recs = records(&lines);
    let mut bytes = to_avro(&recs);
    // Skip the header: magic, metadata map, sync marker.
    let mut at = 4;
    loop {
        let (n, len) = varint(&bytes, at);
        at += len;
        if n == 0 {
            break;
        }
        for _ in 0..2 * n {
            let (l, len) = varint(&bytes, at);
            at += len + l as usize;
        }
    }
    at += 16;
    let (count, n) = varint(&bytes, at);
    at += n;
    let (_, n) = varint(&bytes, at);
    at += n;
    assert!(count > 1 && (count as usize) < recs.len());
    // Record 1: ts, then the kind index; make it out of range.
    let (_, n) = varint(&bytes, at);
    bytes[at + n] = 0x7e;

    let mut src = avro_source(bytes);
    let mut good = Vec::new();
    let mut bad = Vec::new();
    while let Some(item) = src.next_item().expect("later blocks read") {
        match item {
            Item::Record(r) => good.push(r),
            Item::Bad(b) => bad.push(b),
        }
    }
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0].line, 1);
    assert!(bad[0].reason.contains("enum index"), "{}", bad[0].reason);
    let skipped = format!(
        "the {} records after it in its block are skipped",
        count - 1
    );
    assert!(bad[0].reason.contains(&skipped), "{}", bad[0].reason);
    assert_eq!(good, recs[count as usize..]);
    assert_eq!(src.position().last, recs.len());
}

#[test]
fn not_a_container_file_is_refused() {
    assert!(AvroFile::new(&b"{\"ts\":1}\n"[..], None).is_err());
    assert!(AvroFile::new(&b"Obj\x01"[..], None).is_err());
}

/// The replay record schema as it was before ActionResult had `previous`.
fn replay_schema_before_previous() -> apache_avro::Schema {
    let mut j: serde_json::Value =
        serde_json::from_str(envelope::SCHEMA_TEXT).expect("the schema is JSON");
    let branches = j["fields"][2]["type"]
        .as_array_mut()
        .expect("data is a union");
    let result = branches
        .iter_mut()
        .find(|b| b["name"] == "ActionResult")
        .expect("an ActionResult branch");
    let fields = result["fields"].as_array_mut().expect("fields");
    let last = fields.pop().expect("a last field");
    assert_eq!(last["name"], "previous");
    apache_avro::Schema::parse(&j).expect("the old schema parses")
}

#[test]
fn replay_files_written_before_results_had_previous_still_read() {
    let old = replay_schema_before_previous();
    let result = |command_id: &str| {
        Avro::Record(vec![
            ("ts".into(), Avro::TimestampMillis(T0)),
            ("kind".into(), Avro::Enum(3, "result".into())),
            (
                "data".into(),
                Avro::Union(
                    5,
                    Box::new(Avro::Record(vec![
                        ("command_id".into(), Avro::String(command_id.into())),
                        ("status".into(), Avro::Enum(0, "succeeded".into())),
                        ("detail".into(), Avro::String("done".into())),
                        ("at".into(), Avro::Union(0, Box::new(Avro::Null))),
                    ])),
                ),
            ),
        ])
    };
    let mut w = apache_avro::Writer::new(&old, Vec::new());
    w.append(result("cmd-1")).expect("ok");
    w.append(metric_value(T0 + 1000, "web", "2")).expect("ok");
    let bytes = w.into_inner().expect("in memory");
    let mut src = avro_source(bytes);
    let Some(Item::Record(r)) = src.next_item().expect("in memory") else {
        panic!("no first record")
    };
    let selfheal::records::Input::Result(res) = r.input else {
        panic!("not a result: {:?}", r.input)
    };
    assert_eq!(res.command_id, "cmd-1");
    assert!(res.previous.is_empty());
    let Some(Item::Record(m)) = src.next_item().expect("in memory") else {
        panic!("no second record")
    };
    assert_eq!(m.ts.0, T0 + 1000);
}

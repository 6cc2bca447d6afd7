//! Writes the seed corpus of the fuzz targets (`fuzz/corpus/<target>/`)
//! from the golden scenarios and the example policies:
//! `cargo run --example fuzz_seeds`. Each seed is named by a hash of its
//! content, so running it again adds nothing new.

use std::fs;
use std::path::{Path, PathBuf};

use selfheal::live::wire::{encode_input, Format};
use selfheal::records::{InputKind, Record};
use sha2::{Digest, Sha256};

/// The kinds in the order of the `avro_input` target's first byte.
const KINDS: [InputKind; 6] = [
    InputKind::Metric,
    InputKind::Alert,
    InputKind::Change,
    InputKind::Result,
    InputKind::Approval,
    InputKind::Control,
];

const HANDLERS: &str = r#"default: {http: {url: "http://127.0.0.1:9000/actions/{{action}}"}}
handlers:
  restart: {exec: {argv: ["systemctl", "restart", "{{target}}.service"]}}
  scale:   {http: {url: "http://autoscaler.local/scale/{{target}}?n={{params.replicas}}", method: POST}}
  drain:   {exec: {argv: ["kubectl", "drain", "--", "{{target}}", "--note={{params.note}}"]}}
exec_allow: ["systemctl", "kubectl"]
"#;

fn seed(root: &Path, target: &str, bytes: &[u8]) -> std::io::Result<()> {
    let dir = root.join(target);
    fs::create_dir_all(&dir)?;
    let name = hex::encode(&Sha256::digest(bytes)[..8]);
    fs::write(dir.join(name), bytes)
}

fn main() -> std::io::Result<()> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = repo.join("fuzz/corpus");
    let mut scenarios: Vec<PathBuf> = fs::read_dir(repo.join("tests/scenarios"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    scenarios.sort();
    let mut policies = vec![
        repo.join("examples/policy.yaml"),
        repo.join("examples/demo-policy.yaml"),
    ];
    let mut alerts = Vec::new();
    for dir in &scenarios {
        policies.push(dir.join("policy.yaml"));
        let Ok(input) = fs::read_to_string(dir.join("input.jsonl")) else {
            continue;
        };
        seed(&root, "replay_line", input.as_bytes())?;
        for line in input.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let data = v["data"].to_string();
            match v["kind"].as_str() {
                Some("alert") => {
                    seed(&root, "json_alert", data.as_bytes())?;
                    alerts.push(v["data"].clone());
                }
                Some("metric") => seed(&root, "json_metric", data.as_bytes())?,
                _ => {}
            }
            let Ok(rec) = Record::from_json_line(line) else {
                continue;
            };
            let Some(pick) = KINDS.iter().position(|k| *k == rec.input.kind()) else {
                continue;
            };
            for format in [Format::Avro, Format::Json] {
                if let Some(value) = encode_input(&rec.input, format) {
                    let mut bytes = vec![pick as u8];
                    bytes.extend_from_slice(&value);
                    seed(&root, "avro_input", &bytes)?;
                }
            }
        }
    }
    let webhook = serde_json::json!({"version": "4", "status": "firing", "alerts": alerts});
    seed(&root, "json_alert", webhook.to_string().as_bytes())?;
    for p in policies {
        if let Ok(text) = fs::read(&p) {
            seed(&root, "policy", &text)?;
        }
    }
    seed(&root, "handlers", HANDLERS.as_bytes())?;
    for target in [
        "avro_input",
        "json_alert",
        "json_metric",
        "replay_line",
        "policy",
        "handlers",
    ] {
        let n = fs::read_dir(root.join(target))?.count();
        println!("{target}: {n} seeds");
    }
    Ok(())
}

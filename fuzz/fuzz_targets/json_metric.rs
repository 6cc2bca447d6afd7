//! A JSON metric sample, alone and as a replay line (which has a fast
//! path of its own). Both decoders agree, and a decoded sample written
//! as a replay line reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfheal::records::{Input, InputKind, Record};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let alone = Input::from_json(InputKind::Metric, text);
    let line = format!(r#"{{"ts":"2026-03-01T10:00:00Z","kind":"metric","data":{text}}}"#);
    let Ok(rec) = Record::from_json_line(&line) else {
        return;
    };
    if let Ok(input) = &alone {
        assert_eq!(
            &rec.input, input,
            "the replay line and the sample decode alike"
        );
    }
    let again = Record::from_json_line(&rec.to_json_line())
        .unwrap_or_else(|e| panic!("{} does not decode: {e}", rec.to_json_line()));
    assert_eq!(again, rec);
});

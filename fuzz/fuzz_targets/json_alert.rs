//! A JSON alert or Alertmanager webhook body, as `selfheal alert` and the
//! engine read it. Every alert split from a body decodes again on its own.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfheal::live::tools::split_alerts;
use selfheal::records::{Input, InputKind};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Input::from_json(InputKind::Alert, text);
    }
    if let Ok(alerts) = split_alerts(data) {
        for (_, text) in alerts {
            Input::from_json(InputKind::Alert, &text)
                .unwrap_or_else(|e| panic!("split alert {text} does not decode: {e}"));
        }
    }
});

//! Input record values as the engine reads them from Kafka (Avro
//! single-object, Confluent or JSON framing). The first byte picks the
//! input kind. A value that decodes re-encodes to Avro and decodes to the
//! same input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfheal::live::wire::{encode_input, Format};
use selfheal::records::avro::decode_value;
use selfheal::records::InputKind;

const KINDS: [InputKind; 6] = [
    InputKind::Metric,
    InputKind::Alert,
    InputKind::Change,
    InputKind::Result,
    InputKind::Approval,
    InputKind::Control,
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, value)) = data.split_first() else {
        return;
    };
    let kind = KINDS[usize::from(pick) % KINDS.len()];
    let Ok(input) = decode_value(kind, value) else {
        return;
    };
    for format in [Format::Avro, Format::Json] {
        if let Some(bytes) = encode_input(&input, format) {
            let back = decode_value(kind, &bytes)
                .unwrap_or_else(|e| panic!("{format:?} re-encoding does not decode: {e}"));
            assert_eq!(back, input, "{format:?} round trip");
        }
    }
});

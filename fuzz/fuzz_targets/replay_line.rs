//! JSON Lines replay records: one line, and a whole stream through the
//! replay source. A decoded line written back reads as the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfheal::records::Record;
use selfheal::replay::{JsonLines, Source};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for line in text.lines() {
            if let Ok(rec) = Record::from_json_line(line) {
                let out = rec.to_json_line();
                let back = Record::from_json_line(&out)
                    .unwrap_or_else(|e| panic!("{out} does not decode: {e}"));
                assert_eq!(back, rec);
            }
        }
    }
    // The source reads items, and borrowed items, until the end.
    let mut src = JsonLines::new(data, None);
    let mut owned = 0;
    while let Ok(Some(_)) = src.next_item() {
        owned += 1;
        assert!(owned <= data.len() + 1, "more items than bytes");
    }
    let mut src = JsonLines::new(data, None);
    let mut borrowed = 0;
    while let Ok(Some(_)) = src.next_ref() {
        borrowed += 1;
        assert!(borrowed <= data.len() + 1, "more items than bytes");
    }
    assert_eq!(
        owned, borrowed,
        "next_item and next_ref read the same items"
    );
});

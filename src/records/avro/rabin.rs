//! CRC-64-AVRO, the Rabin fingerprint the Avro specification uses for
//! schema fingerprints and the single-object encoding header.
//!
//! Written out here (rather than going through apache_avro's `Digest`
//! implementation) so the fingerprint is a plain `u64` computed at start-up
//! without pulling the `digest` crate into our API; the tests check it
//! against apache_avro's own implementation.

/// The fingerprint of the empty byte string; also the polynomial.
const EMPTY: u64 = 0xc15d_213a_a4d7_a795;

const TABLE: [u64; 256] = table();

const fn table() -> [u64; 256] {
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut fp = i as u64;
        let mut j = 0;
        while j < 8 {
            fp = (fp >> 1) ^ (EMPTY & (fp & 1).wrapping_neg());
            j += 1;
        }
        t[i] = fp;
        i += 1;
    }
    t
}

/// CRC-64-AVRO of `bytes` (the spec's `fingerprint64`).
pub fn fingerprint64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(EMPTY, |fp, &b| {
        (fp >> 8) ^ TABLE[((fp ^ u64::from(b)) & 0xff) as usize]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_vectors() {
        // From the Avro specification's test suite (schema-tests.txt), as
        // signed 64-bit values.
        assert_eq!(fingerprint64(br#""null""#) as i64, 7195948357588979594);
        assert_eq!(fingerprint64(br#""boolean""#) as i64, -6970731678124411036);
        assert_eq!(fingerprint64(b""), EMPTY);
        // apache_avro's documented example, as little-endian digest bytes.
        assert_eq!(
            fingerprint64(b"hello world").to_le_bytes(),
            [0x60, 0x33, 0x5b, 0xa6, 0xd0, 0x41, 0x55, 0x28]
        );
    }

    #[test]
    fn agrees_with_apache_avro_digest() {
        use apache_avro::rabin::Rabin;
        for text in [
            r#""int""#,
            r#"{"name":"foo","type":"fixed","size":15}"#,
            r#"{"type":"record","name":"r","fields":[{"name":"a","type":"string"}]}"#,
        ] {
            let schema = apache_avro::Schema::parse_str(text).expect("valid test schema");
            let theirs = schema.fingerprint::<Rabin>().bytes;
            let ours = fingerprint64(schema.canonical_form().as_bytes()).to_le_bytes();
            assert_eq!(theirs, ours.to_vec(), "{text}");
        }
    }
}

//! Avro binary encoding primitives: zig-zag varints, length-prefixed
//! strings, blocked maps and arrays, union and enum indexes.
//!
//! The record codecs are written by hand against these instead of going
//! through `apache_avro::types::Value`: `apache_avro::from_avro_datum`
//! rebuilds a name table of the schema and allocates a value tree for every
//! datum, which is most of the cost on the hot path. Every read is
//! bounds-checked and every length is checked against the bytes left before
//! anything is allocated, so a hostile datum costs at most its own size.

use std::fmt::{self, Write as _};

use crate::records::input::DecodeError;

pub(super) type Result<T> = std::result::Result<T, DecodeError>;

/// Most items reserved up front for one block: counts come from outside,
/// so they only hint at the size.
const MAX_RESERVE: usize = 1024;

fn malformed(at: usize, what: impl fmt::Display) -> DecodeError {
    DecodeError::Avro(format!("{what} at byte {at}"))
}

/// Names the field an Avro error happened in, so a dead-lettered record
/// says where it broke.
pub(super) trait At<T> {
    fn at(self, field: &str) -> Result<T>;
}

impl<T> At<T> for Result<T> {
    fn at(self, field: &str) -> Result<T> {
        self.map_err(|e| match e {
            DecodeError::Avro(m) => DecodeError::Avro(format!("field `{field}`: {m}")),
            other => other,
        })
    }
}

/// Reads one datum from a byte slice; strings borrow from it.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// A zig-zag varint of at most ten bytes.
    #[inline]
    pub fn long(&mut self) -> Result<i64> {
        // One byte, as every string length and block count of a metric
        // sample is: no loop.
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(i64::from(b >> 1) ^ -i64::from(b & 1));
            }
        }
        self.long_slow()
    }

    fn long_slow(&mut self) -> Result<i64> {
        let start = self.pos;
        let mut acc: u64 = 0;
        let mut shift = 0u32;
        loop {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(malformed(start, "truncated varint"));
            };
            self.pos += 1;
            // The tenth byte may only carry the 64th bit.
            if shift == 63 && b > 1 {
                return Err(malformed(start, "varint longer than 64 bits"));
            }
            acc |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        Ok((acc >> 1) as i64 ^ -((acc & 1) as i64))
    }

    pub fn int(&mut self) -> Result<i32> {
        let start = self.pos;
        let v = self.long()?;
        i32::try_from(v).map_err(|_| malformed(start, format!("int {v} out of range")))
    }

    pub fn boolean(&mut self) -> Result<bool> {
        match self.buf.get(self.pos) {
            Some(&b @ (0 | 1)) => {
                self.pos += 1;
                Ok(b == 1)
            }
            Some(b) => Err(malformed(self.pos, format!("boolean byte {b:#04x}"))),
            None => Err(malformed(self.pos, "truncated boolean")),
        }
    }

    pub fn double(&mut self) -> Result<f64> {
        let end = self.pos + 8;
        let b = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| malformed(self.pos, "truncated double"))?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        self.pos = end;
        Ok(f64::from_le_bytes(a))
    }

    pub fn str(&mut self) -> Result<&'a str> {
        let start = self.pos;
        let b = self.str_bytes()?;
        std::str::from_utf8(b).map_err(|_| malformed(start, "invalid UTF-8 in string"))
    }

    /// A string's bytes, length-checked but not UTF-8-checked.
    fn str_bytes(&mut self) -> Result<&'a [u8]> {
        let start = self.pos;
        let len = self.long()?;
        let len = usize::try_from(len)
            .map_err(|_| malformed(start, format!("negative string length {len}")))?;
        if len > self.remaining() {
            return Err(malformed(
                start,
                format!(
                    "string length {len} exceeds the {} bytes left",
                    self.remaining()
                ),
            ));
        }
        let b = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(b)
    }

    pub fn string(&mut self) -> Result<String> {
        self.str().map(str::to_owned)
    }

    /// The branch of a `["null", T]` union: whether a `T` follows.
    pub fn present(&mut self) -> Result<bool> {
        let start = self.pos;
        match self.long()? {
            0 => Ok(false),
            1 => Ok(true),
            i => Err(malformed(
                start,
                format!("union branch {i} of a 2-branch union"),
            )),
        }
    }

    pub fn opt_str(&mut self) -> Result<Option<&'a str>> {
        if self.present()? {
            self.str().map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn opt_double(&mut self) -> Result<Option<f64>> {
        if self.present()? {
            self.double().map(Some)
        } else {
            Ok(None)
        }
    }

    /// An enum's symbol index, checked against the number of symbols.
    pub fn symbol(&mut self, symbols: usize) -> Result<usize> {
        let start = self.pos;
        let i = self.int()?;
        usize::try_from(i)
            .ok()
            .filter(|&i| i < symbols)
            .ok_or_else(|| malformed(start, format!("enum index {i} of {symbols} symbols")))
    }

    /// Items in the next block of a map or array; 0 ends the sequence.
    fn block(&mut self) -> Result<usize> {
        let start = self.pos;
        let n = self.long()?;
        let n = if n < 0 {
            // A negative count is followed by the block's size in bytes,
            // for readers that skip; we read every item anyway.
            let size = self.long()?;
            if size < 0 {
                return Err(malformed(start, format!("negative block size {size}")));
            }
            n.checked_neg()
                .ok_or_else(|| malformed(start, "block count overflows"))?
        } else {
            n
        };
        // Every item of our schemas takes at least one byte, so a larger
        // count cannot be honest.
        match usize::try_from(n) {
            Ok(n) if n <= self.remaining() => Ok(n),
            _ => Err(malformed(
                start,
                format!(
                    "block of {n} items exceeds the {} bytes left",
                    self.remaining()
                ),
            )),
        }
    }

    /// A `map<string>` as pairs in wire order.
    pub fn map_str(&mut self) -> Result<Vec<(&'a str, &'a str)>> {
        let mut out = Vec::new();
        loop {
            let n = self.block()?;
            if n == 0 {
                return Ok(out);
            }
            out.reserve(n.min(MAX_RESERVE));
            for _ in 0..n {
                let k = self.str()?;
                let v = self.str()?;
                out.push((k, v));
            }
        }
    }

    /// A `map<string>`, handing each pair to `f` in wire order.
    pub fn map_str_each(&mut self, mut f: impl FnMut(&'a str, &'a str)) -> Result<()> {
        loop {
            let n = self.block()?;
            if n == 0 {
                return Ok(());
            }
            for _ in 0..n {
                let k = self.str()?;
                let v = self.str()?;
                f(k, v);
            }
        }
    }

    /// Steps over a string without checking its text: for bytes whose
    /// content was checked before (see [`super::codec::scan_metric`]).
    pub fn skip_str(&mut self) -> Result<()> {
        self.str_bytes().map(|_| ())
    }

    /// Steps over a `map<string>` as [`Reader::skip_str`] does.
    pub fn skip_map_str(&mut self) -> Result<()> {
        loop {
            let n = self.block()?;
            if n == 0 {
                return Ok(());
            }
            for _ in 0..n {
                self.skip_str()?;
                self.skip_str()?;
            }
        }
    }

    /// The bytes from `from` to the position.
    pub fn since(&self, from: usize) -> &'a [u8] {
        &self.buf[from..self.pos]
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Whether every byte has been read.
    pub fn at_end(&self) -> bool {
        self.remaining() == 0
    }

    pub fn array<T>(&mut self, mut item: impl FnMut(&mut Self) -> Result<T>) -> Result<Vec<T>> {
        let mut out = Vec::new();
        loop {
            let n = self.block()?;
            if n == 0 {
                return Ok(out);
            }
            out.reserve(n.min(MAX_RESERVE));
            for _ in 0..n {
                out.push(item(self)?);
            }
        }
    }

    /// Ends the datum: anything left over means the bytes were not
    /// written with this schema.
    pub fn finish(self) -> Result<()> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(malformed(
                self.pos,
                format!("{n} trailing bytes after the datum"),
            )),
        }
    }
}

/// Writes one datum.
#[derive(Default)]
pub(super) struct Writer {
    buf: Vec<u8>,
    /// Reused for formatting timestamps and scopes before their length
    /// is known.
    scratch: String,
    /// The last timestamp written and its text: consecutive records
    /// usually carry the same one.
    last_time: Option<(crate::time::Timestamp, String)>,
}

impl Writer {
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Forgets what was written, keeping the storage.
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    pub fn long(&mut self, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            self.buf.push((z as u8) | 0x80);
            z >>= 7;
        }
        self.buf.push(z as u8);
    }

    pub fn int(&mut self, v: i32) {
        self.long(i64::from(v));
    }

    pub fn boolean(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }

    pub fn double(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn str(&mut self, s: &str) {
        self.long(s.len() as i64);
        self.buf.extend_from_slice(s.as_bytes());
    }

    /// A string through its `Display` form.
    pub fn display(&mut self, v: &impl fmt::Display) {
        let mut s = std::mem::take(&mut self.scratch);
        s.clear();
        // Writing into a String cannot fail.
        let _ = write!(s, "{v}");
        self.str(&s);
        self.scratch = s;
    }

    /// A timestamp as RFC 3339 text.
    pub fn time(&mut self, t: crate::time::Timestamp) {
        let mut last = self.last_time.take().unwrap_or_default();
        if last.0 != t || last.1.is_empty() {
            last.1.clear();
            // Writing into a String cannot fail.
            let _ = write!(last.1, "{t}");
            last.0 = t;
        }
        self.str(&last.1);
        self.last_time = Some(last);
    }

    pub fn symbol(&mut self, index: usize) {
        self.long(index as i64);
    }

    /// A `["null", T]` union.
    pub fn opt<T>(&mut self, v: Option<T>, mut some: impl FnMut(&mut Self, T)) {
        match v {
            None => self.long(0),
            Some(x) => {
                self.long(1);
                some(self, x);
            }
        }
    }

    /// A `map<string>` of `len` pairs, as one block.
    pub fn map_str<'b>(&mut self, len: usize, pairs: impl Iterator<Item = (&'b str, &'b str)>) {
        if len > 0 {
            self.long(len as i64);
            let mut written = 0;
            for (k, v) in pairs {
                self.str(k);
                self.str(v);
                written += 1;
            }
            debug_assert_eq!(written, len, "map length given does not match its pairs");
        }
        self.long(0);
    }

    /// An array, as one block.
    pub fn array<T>(&mut self, items: &[T], mut item: impl FnMut(&mut Self, &T)) {
        if !items.is_empty() {
            self.long(items.len() as i64);
            for x in items {
                item(self, x);
            }
        }
        self.long(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_match_the_spec() {
        // Examples from the Avro specification.
        for (v, bytes) in [
            (0i64, &[0x00u8][..]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
        ] {
            let mut w = Writer::default();
            w.long(v);
            assert_eq!(w.into_bytes(), bytes);
        }
        for v in [i64::MIN, i64::MAX, -1, 0, 300, -300] {
            let mut w = Writer::default();
            w.long(v);
            let b = w.into_bytes();
            let mut r = Reader::new(&b);
            assert_eq!(r.long().unwrap(), v);
            r.finish().unwrap();
        }
    }

    #[test]
    fn refuses_overlong_and_truncated_input() {
        let mut r = Reader::new(&[0xff; 11]);
        assert!(r.long().is_err());
        let mut r = Reader::new(&[0x80]);
        assert!(r.long().is_err());
        // String length 5 with two bytes left.
        let mut r = Reader::new(&[0x0a, b'a', b'b']);
        assert!(r.str().is_err());
        // Negative string length.
        let mut r = Reader::new(&[0x01]);
        assert!(r.str().is_err());
        // A map claiming a billion entries.
        let mut w = Writer::default();
        w.long(1_000_000_000);
        let b = w.into_bytes();
        assert!(Reader::new(&b).map_str().is_err());
        assert!(Reader::new(&[0x02]).boolean().is_err());
        assert!(Reader::new(&[0x04]).present().is_err());
        assert!(Reader::new(&[0x04]).symbol(2).is_err());
    }

    #[test]
    fn negative_block_counts_carry_a_size() {
        // One entry "a" -> "b" in a block written with count -1, size 4.
        let b = [0x01, 0x08, 0x02, b'a', 0x02, b'b', 0x00];
        let mut r = Reader::new(&b);
        assert_eq!(r.map_str().unwrap(), vec![("a", "b")]);
        r.finish().unwrap();
    }
}

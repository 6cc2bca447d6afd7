//! Replay files as Avro object container files of replay records
//! (`schemas/replay_record.avsc`).
//!
//! [`AvroFile`] reads blocks itself and decodes their records with the
//! hand-written codecs when the file was written with our schema and no
//! compression (as [`AvroWriter`] writes them): metric samples are then
//! handed out borrowed, as JSON Lines does. Any other file apache_avro can
//! read (another codec, or a writer schema that resolves to ours) is read
//! through apache_avro's reader, each record resolved to our schema, then
//! decoded the same way.
//!
//! A record whose content is refused (data that does not match its kind,
//! an invalid value) is a bad item with its 1-based record number, and the
//! records after it still replay. A record whose bytes do not fit the
//! schema loses the rest of its block, since records carry no lengths:
//! it is reported as bad, the rest of the block is skipped, and reading
//! goes on at the next block.

use std::io::{self, BufReader, Read, Write};

use apache_avro::Schema;

use super::source::{BadLine, Item, ItemRef, Position, Source};
use crate::records::avro::envelope::{self, Envelope, EnvelopeReader, EnvelopeWriter};
use crate::records::{DecodeError, LabelBuf, MetricRef, Record};
use crate::time::{TimeCache, Timestamp};

/// First bytes of an Avro object container file.
pub const MAGIC: [u8; 4] = *b"Obj\x01";

/// Why an Avro replay file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum AvroFileError {
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("not an Avro object container file (bad magic bytes)")]
    NotContainer,
    #[error("malformed container header: {0}")]
    Header(String),
    #[error("the file's schema cannot be read as a replay record: {0}")]
    Schema(String),
}

impl From<AvroFileError> for io::Error {
    fn from(e: AvroFileError) -> io::Error {
        match e {
            AvroFileError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// Reads a zig-zag varint from a stream; `None` at a clean end of input.
fn read_long(r: &mut impl Read) -> io::Result<Option<i64>> {
    let mut acc: u64 = 0;
    let mut shift = 0u32;
    loop {
        let mut b = [0u8; 1];
        if r.read(&mut b)? == 0 {
            return if shift == 0 {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "truncated varint",
                ))
            };
        }
        if shift == 63 && b[0] > 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "varint longer than 64 bits",
            ));
        }
        acc |= u64::from(b[0] & 0x7f) << shift;
        if b[0] & 0x80 == 0 {
            return Ok(Some((acc >> 1) as i64 ^ -((acc & 1) as i64)));
        }
        shift += 7;
    }
}

fn need_long(r: &mut impl Read, what: &str) -> Result<i64, AvroFileError> {
    read_long(r)?.ok_or_else(|| AvroFileError::Header(format!("input ends before the {what}")))
}

/// Header bytes: what we read of them (for a fallback reader) and the
/// metadata and sync marker.
struct Header {
    raw: Vec<u8>,
    schema: Vec<u8>,
    codec: Option<Vec<u8>>,
    sync: [u8; 16],
}

/// A reader that keeps a copy of the bytes it hands out.
struct Recording<'r, R> {
    inner: &'r mut R,
    seen: Vec<u8>,
}

impl<R: Read> Read for Recording<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

fn read_header<R: Read>(input: &mut R) -> Result<Header, AvroFileError> {
    let mut rec = Recording {
        inner: input,
        seen: Vec::new(),
    };
    let mut magic = [0u8; 4];
    rec.read_exact(&mut magic)
        .map_err(|_| AvroFileError::NotContainer)?;
    if magic != MAGIC {
        return Err(AvroFileError::NotContainer);
    }
    let (mut schema, mut codec) = (None, None);
    loop {
        let n = need_long(&mut rec, "metadata")?;
        if n == 0 {
            break;
        }
        let n = if n < 0 {
            need_long(&mut rec, "metadata block size")?;
            n.checked_neg()
                .ok_or_else(|| AvroFileError::Header("metadata count overflows".into()))?
        } else {
            n
        };
        for _ in 0..n {
            let key = read_bytes(&mut rec)?;
            let value = read_bytes(&mut rec)?;
            match key.as_slice() {
                b"avro.schema" => schema = Some(value),
                b"avro.codec" => codec = Some(value),
                _ => {}
            }
        }
    }
    let mut sync = [0u8; 16];
    rec.read_exact(&mut sync)
        .map_err(|_| AvroFileError::Header("input ends before the sync marker".into()))?;
    let schema = schema.ok_or_else(|| AvroFileError::Header("no avro.schema".into()))?;
    Ok(Header {
        raw: rec.seen,
        schema,
        codec,
        sync,
    })
}

fn read_bytes(r: &mut impl Read) -> Result<Vec<u8>, AvroFileError> {
    let len = need_long(r, "metadata")?;
    let mut v = Vec::new();
    match u64::try_from(len) {
        Ok(len) if r.take(len).read_to_end(&mut v)? as u64 == len => Ok(v),
        _ => Err(AvroFileError::Header(format!(
            "metadata value of {len} bytes does not fit the input"
        ))),
    }
}

/// How the records of a file are decoded, chosen once from its header.
enum Decoding<R> {
    /// Our schema, no compression: blocks decoded in place.
    Direct {
        input: BufReader<R>,
        sync: [u8; 16],
        block: Vec<u8>,
        /// Bytes of `block` already read.
        at: usize,
        /// Records left in `block`.
        left: i64,
    },
    /// Anything else apache_avro reads: each record resolved to our schema
    /// and re-encoded.
    Resolved {
        reader: Box<apache_avro::Reader<'static, Box<dyn Read>>>,
        datum: Vec<u8>,
    },
}

/// An Avro object container file of replay records.
pub struct AvroFile<R> {
    decoding: Decoding<R>,
    labels: LabelBuf,
    times: TimeCache,
    record: usize,
    done: bool,
    pos: Position,
}

impl<R: Read + 'static> AvroFile<R> {
    /// Reads the header. `total` is the input's size in bytes when known
    /// (for progress).
    pub fn new(input: R, total: Option<u64>) -> Result<AvroFile<R>, AvroFileError> {
        let mut input = BufReader::with_capacity(1 << 17, input);
        let header = read_header(&mut input)?;
        let ours = envelope::schema();
        let direct = matches!(header.codec.as_deref(), None | Some(b"null"))
            && std::str::from_utf8(&header.schema)
                .ok()
                .and_then(|text| Schema::parse_str(text).ok())
                .is_some_and(|w| w.canonical_form() == ours.canonical_form());
        let decoding = if direct {
            Decoding::Direct {
                input,
                sync: header.sync,
                block: Vec::new(),
                at: 0,
                left: 0,
            }
        } else {
            let chained: Box<dyn Read> = Box::new(io::Cursor::new(header.raw).chain(input));
            let reader = apache_avro::Reader::with_schema(ours, chained)
                .map_err(|e| AvroFileError::Schema(e.to_string()))?;
            Decoding::Resolved {
                reader: Box::new(reader),
                datum: Vec::new(),
            }
        };
        // Progress of a resolved file counts records, so its size says nothing.
        let total = total.filter(|_| direct);
        Ok(AvroFile {
            decoding,
            labels: LabelBuf::new(),
            times: TimeCache::new(),
            record: 0,
            done: false,
            pos: Position {
                total,
                ..Position::default()
            },
        })
    }
}

/// Loads the next block into `block`; `false` at the end of the file.
fn next_block<R: Read>(
    input: &mut BufReader<R>,
    sync: &[u8; 16],
    block: &mut Vec<u8>,
    done: &mut u64,
) -> io::Result<Option<i64>> {
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let Some(count) = read_long(input)? else {
        return Ok(None);
    };
    let size = read_long(input)?.ok_or_else(|| bad("input ends inside a block header".into()))?;
    if count < 0 || size < 0 {
        return Err(bad(format!("block of {count} records in {size} bytes")));
    }
    block.clear();
    // Grows with the bytes actually read, not with the size claimed.
    if input.by_ref().take(size as u64).read_to_end(block)? as i64 != size {
        return Err(bad(format!("input ends inside a block of {size} bytes")));
    }
    let mut marker = [0u8; 16];
    input.read_exact(&mut marker)?;
    if &marker != sync {
        return Err(bad("block does not end with the file's sync marker".into()));
    }
    *done += size as u64 + 16;
    Ok(Some(count))
}

fn bad(record: usize, e: DecodeError) -> ItemRef<'static> {
    ItemRef::Item(Item::Bad(BadLine {
        line: record,
        reason: e.to_string(),
    }))
}

impl<R: Read> Source for AvroFile<R> {
    fn next_item(&mut self) -> io::Result<Option<Item>> {
        Ok(self.next_ref()?.map(ItemRef::into_item))
    }

    fn next_ref(&mut self) -> io::Result<Option<ItemRef<'_>>> {
        if self.done {
            return Ok(None);
        }
        let mut skipped = 0;
        let decoded = match &mut self.decoding {
            Decoding::Direct {
                input,
                sync,
                block,
                at,
                left,
            } => {
                while *left == 0 {
                    match next_block(input, sync, block, &mut self.pos.done)? {
                        Some(n) => {
                            *left = n;
                            *at = 0;
                        }
                        None => {
                            self.done = true;
                            return Ok(None);
                        }
                    }
                }
                let mut r = EnvelopeReader::new(&block[*at..]);
                let next = r.next(&mut self.labels);
                *left -= 1;
                match next {
                    Err(e) => {
                        // Records carry no lengths: the rest of the block
                        // cannot be found.
                        skipped = std::mem::take(left) as usize;
                        let e = match e {
                            DecodeError::Avro(m) => m,
                            other => other.to_string(),
                        };
                        Err(DecodeError::Avro(format!(
                            "{e}; the {skipped} records after it in its block are skipped"
                        )))
                    }
                    Ok(next) => {
                        *at += r.position();
                        Ok(next)
                    }
                }
            }
            Decoding::Resolved { reader, datum } => match reader.next() {
                None => {
                    self.done = true;
                    return Ok(None);
                }
                Some(Err(e)) => {
                    // The reader cannot find the next record after this.
                    self.done = true;
                    Err(DecodeError::Avro(e.to_string()))
                }
                Some(Ok(value)) => match apache_avro::to_avro_datum(envelope::schema(), value) {
                    Err(e) => Err(DecodeError::Avro(e.to_string())),
                    Ok(bytes) => {
                        self.pos.done += 1;
                        *datum = bytes;
                        EnvelopeReader::new(datum).next(&mut self.labels)
                    }
                },
            },
        };
        self.record += 1;
        self.pos.items += 1;
        self.pos.last = self.record;
        let env = match decoded {
            Ok(Ok(env)) => env,
            Ok(Err(e)) | Err(e) => {
                let item = bad(self.record, e);
                self.record += skipped;
                return Ok(Some(item));
            }
        };
        Ok(Some(match env {
            Envelope::Record(r) => ItemRef::Item(Item::Record(r)),
            Envelope::Metric {
                ts,
                name,
                value,
                timestamp,
            } => {
                // As `opt_time`: empty text and the zero time mean none.
                let timestamp = if timestamp.is_empty() || Timestamp::is_zero_time(timestamp) {
                    None
                } else {
                    match self.times.parse(timestamp) {
                        Ok(t) => Some(t),
                        Err(e) => {
                            let e = DecodeError::Invalid {
                                field: "timestamp",
                                reason: e.to_string(),
                            };
                            return Ok(Some(bad(self.record, e)));
                        }
                    }
                };
                ItemRef::Metric(
                    ts,
                    MetricRef {
                        name,
                        labels: self.labels.finish(),
                        value,
                        timestamp,
                    },
                )
            }
        }))
    }

    fn position(&self) -> Position {
        self.pos
    }
}

/// Writes replay records as an Avro object container file with the replay
/// record schema and no compression, in blocks of about 64 KiB.
pub struct AvroWriter<W: Write> {
    out: W,
    block: EnvelopeWriter,
    count: i64,
    sync: [u8; 16],
}

/// Records are written out once a block holds this many bytes.
const BLOCK_BYTES: usize = 1 << 16;

impl<W: Write> AvroWriter<W> {
    /// Writes the file header.
    pub fn new(mut out: W) -> Result<AvroWriter<W>, AvroFileError> {
        use sha2::Digest;
        // A fixed marker derived from the schema keeps output reproducible.
        let digest = sha2::Sha256::digest(envelope::SCHEMA_TEXT.as_bytes());
        let mut sync = [0u8; 16];
        sync.copy_from_slice(&digest[..16]);
        let mut h = Vec::new();
        h.extend_from_slice(&MAGIC);
        put_long(&mut h, 2);
        for (k, v) in [
            (&b"avro.schema"[..], envelope::SCHEMA_TEXT.as_bytes()),
            (b"avro.codec", b"null"),
        ] {
            put_long(&mut h, k.len() as i64);
            h.extend_from_slice(k);
            put_long(&mut h, v.len() as i64);
            h.extend_from_slice(v);
        }
        put_long(&mut h, 0);
        h.extend_from_slice(&sync);
        out.write_all(&h)?;
        Ok(AvroWriter {
            out,
            block: EnvelopeWriter::new(),
            count: 0,
            sync,
        })
    }

    /// Appends a record.
    pub fn write(&mut self, rec: &Record) -> Result<(), AvroFileError> {
        self.block.record(rec);
        self.wrote()
    }

    /// Appends a metric sample stamped `ts`, without building a record.
    pub fn write_metric(&mut self, ts: Timestamp, m: MetricRef<'_>) -> Result<(), AvroFileError> {
        self.block.metric(ts, m);
        self.wrote()
    }

    fn wrote(&mut self) -> Result<(), AvroFileError> {
        self.count += 1;
        if self.block.bytes().len() >= BLOCK_BYTES {
            self.flush_block()?;
        }
        Ok(())
    }

    fn flush_block(&mut self) -> Result<(), AvroFileError> {
        if self.count == 0 {
            return Ok(());
        }
        let mut h = Vec::with_capacity(20);
        put_long(&mut h, self.count);
        put_long(&mut h, self.block.bytes().len() as i64);
        self.out.write_all(&h)?;
        self.out.write_all(self.block.bytes())?;
        self.out.write_all(&self.sync)?;
        self.block.clear();
        self.count = 0;
        Ok(())
    }

    /// Writes the last block and flushes; returns the output.
    pub fn finish(mut self) -> Result<W, AvroFileError> {
        self.flush_block()?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

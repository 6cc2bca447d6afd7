//! Decoding replay lines at file speed.
//!
//! Most lines of a replay file are metric samples. [`LineDecoder`] reads
//! those with a scanner specialised to the `{"ts","kind":"metric","data"}`
//! envelope: strings are borrowed from the line, labels are copied into a
//! reusable [`LabelBuf`], and the last timestamp text is remembered, since
//! consecutive lines usually carry the same one. Anything the scanner does
//! not handle itself (another kind, escapes in strings, a number value that
//! is not a small integer, a malformed line) goes through
//! [`Record::from_json_line`], so results and refusal reasons are exactly
//! those of the general decoder.

use super::input::{DecodeError, MetricRef, Record};
use super::labels::LabelBuf;
use super::value::{Fixed, MAX_UNITS};
use crate::time::{TimeCache, Timestamp};

/// Deepest nesting of an ignored value the scanner skips itself.
const MAX_DEPTH: usize = 64;

/// One decoded line.
#[derive(Debug)]
pub enum Decoded<'a> {
    /// A metric sample at its event time, borrowing the decoder and line.
    Metric(Timestamp, MetricRef<'a>),
    /// Any other record, or why the line was refused.
    Record(Result<Record, DecodeError>),
}

/// Decodes replay lines, keeping buffers between lines.
#[derive(Debug, Default)]
pub struct LineDecoder {
    labels: LabelBuf,
    times: TimeCache,
}

impl LineDecoder {
    pub fn new() -> LineDecoder {
        LineDecoder::default()
    }

    /// Decodes one line (without its line break).
    pub fn decode<'a>(&'a mut self, line: &'a str) -> Decoded<'a> {
        match self.scan_metric(line) {
            Some((ts, name, value, timestamp)) => Decoded::Metric(
                ts,
                MetricRef {
                    name,
                    labels: self.labels.finish(),
                    value,
                    timestamp,
                },
            ),
            None => Decoded::Record(Record::from_json_line(line)),
        }
    }

    fn time(&mut self, text: &str) -> Option<Timestamp> {
        self.times.parse(text).ok()
    }

    /// The envelope and metric fields of a well-formed metric line, its
    /// labels left in `self.labels`; `None` for anything else.
    fn scan_metric<'a>(
        &mut self,
        line: &'a str,
    ) -> Option<(Timestamp, &'a str, Fixed, Option<Timestamp>)> {
        let mut s = Scan::new(line);
        let mut ts = None;
        let mut metric = false;
        let mut data: Option<(usize, usize)> = None;
        let mut fields = None;
        s.byte(b'{')?;
        if !s.peek_is(b'}') {
            loop {
                match s.string()? {
                    "ts" if ts.is_none() => {
                        s.byte(b':')?;
                        ts = Some(s.string()?);
                    }
                    "kind" if !metric => {
                        s.byte(b':')?;
                        if s.string()? != "metric" {
                            return None;
                        }
                        metric = true;
                    }
                    "data" if data.is_none() && fields.is_none() => {
                        s.byte(b':')?;
                        if metric {
                            fields = Some(self.scan_data(&mut s)?);
                        } else {
                            s.ws();
                            let start = s.i;
                            s.skip_value(0)?;
                            data = Some((start, s.i));
                        }
                    }
                    "ts" | "kind" | "data" => return None,
                    _ => {
                        s.byte(b':')?;
                        s.skip_value(0)?;
                    }
                }
                if !s.comma_or(b'}')? {
                    break;
                }
            }
        } else {
            s.byte(b'}')?;
        }
        s.ws();
        if s.i != s.b.len() || !metric {
            return None;
        }
        let (name, value, timestamp) = match (fields, data) {
            (Some(f), _) => f,
            (None, Some((start, end))) => self.scan_data(&mut Scan::new(line.get(start..end)?))?,
            (None, None) => return None,
        };
        let ts = self.time(ts?)?;
        let timestamp = match timestamp {
            None => None,
            Some(t) if t.is_empty() || Timestamp::is_zero_time(t) => None,
            Some(t) => Some(self.time(t)?),
        };
        Some((ts, name, value, timestamp))
    }

    /// The fields of a metric sample object: name (or the `__name__`
    /// label), value and timestamp text; labels go to `self.labels`.
    fn scan_data<'a>(&mut self, s: &mut Scan<'a>) -> Option<(&'a str, Fixed, Option<&'a str>)> {
        let mut name: Option<&str> = None;
        let mut value = None;
        let mut timestamp: Option<Option<&str>> = None;
        let mut labels_seen = false;
        let mut dunder: Option<&str> = None;
        self.labels.clear();
        s.byte(b'{')?;
        if !s.peek_is(b'}') {
            loop {
                match s.string()? {
                    "name" if name.is_none() => {
                        s.byte(b':')?;
                        name = Some(s.string()?);
                    }
                    "value" if value.is_none() => {
                        s.byte(b':')?;
                        value = Some(s.value()?);
                    }
                    "timestamp" if timestamp.is_none() => {
                        s.byte(b':')?;
                        timestamp = Some(if s.null() { None } else { Some(s.string()?) });
                    }
                    "labels" if !labels_seen => {
                        s.byte(b':')?;
                        labels_seen = true;
                        s.byte(b'{')?;
                        if s.peek_is(b'}') {
                            s.byte(b'}')?;
                        } else {
                            loop {
                                let k = s.string()?;
                                s.byte(b':')?;
                                let v = s.string()?;
                                if k == "__name__" {
                                    dunder = Some(v);
                                } else {
                                    self.labels.push(k, v);
                                }
                                if !s.comma_or(b'}')? {
                                    break;
                                }
                            }
                        }
                    }
                    "name" | "value" | "timestamp" | "labels" => return None,
                    _ => {
                        s.byte(b':')?;
                        s.skip_value(0)?;
                    }
                }
                if !s.comma_or(b'}')? {
                    break;
                }
            }
        } else {
            s.byte(b'}')?;
        }
        let name = match (name, dunder) {
            (Some(n), _) if !n.is_empty() => n,
            (_, Some(n)) if !n.is_empty() => n,
            _ => return None,
        };
        Some((name, value?, timestamp.flatten()))
    }
}

/// The index of the quote closing a string that starts at `i`, or `None`
/// when a backslash or a control character comes first (or no quote).
/// Scans eight bytes at a time: a byte of a word is flagged when it is a
/// quote, a backslash or below 0x20, and the lowest flag is the first such
/// byte (the borrows of the subtraction can only flag bytes above it).
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const QUOTE: u64 = LO * b'"' as u64;
    const BACKSLASH: u64 = LO * b'\\' as u64;
    const SPACE: u64 = LO * 0x20;
    while let Some(chunk) = b.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let q = w ^ QUOTE;
        let s = w ^ BACKSLASH;
        let flags =
            ((q.wrapping_sub(LO) & !q) | (s.wrapping_sub(LO) & !s) | (w.wrapping_sub(SPACE) & !w))
                & HI;
        if flags != 0 {
            i += (flags.trailing_zeros() / 8) as usize;
            return (b[i] == b'"').then_some(i);
        }
        i += 8;
    }
    loop {
        match *b.get(i)? {
            b'"' => return Some(i),
            b'\\' | 0..=0x1f => return None,
            _ => i += 1,
        }
    }
}

/// A cursor over one line's bytes.
struct Scan<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn new(text: &'a str) -> Scan<'a> {
        Scan {
            text,
            b: text.as_bytes(),
            i: 0,
        }
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek_is(&mut self, c: u8) -> bool {
        self.ws();
        self.b.get(self.i) == Some(&c)
    }

    fn byte(&mut self, c: u8) -> Option<()> {
        self.ws();
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    /// After a member: `true` at a comma, `false` at the closing `close`.
    fn comma_or(&mut self, close: u8) -> Option<bool> {
        self.ws();
        match self.b.get(self.i) {
            Some(b',') => {
                self.i += 1;
                Some(true)
            }
            Some(&c) if c == close => {
                self.i += 1;
                Some(false)
            }
            _ => None,
        }
    }

    fn null(&mut self) -> bool {
        self.ws();
        if self.b[self.i..].starts_with(b"null") {
            self.i += 4;
            true
        } else {
            false
        }
    }

    /// A string without escapes or control characters.
    #[inline]
    fn string(&mut self) -> Option<&'a str> {
        self.byte(b'"')?;
        let start = self.i;
        self.i = string_end(self.b, start)?;
        let s = self.text.get(start..self.i)?;
        self.i += 1;
        Some(s)
    }

    /// A sample value: decimal text, or a JSON integer of at most 18 digits
    /// (larger, negative and fractional numbers are left to the general
    /// decoder, which reads them as floats).
    fn value(&mut self) -> Option<Fixed> {
        self.ws();
        if self.b.get(self.i) == Some(&b'"') {
            // Negative values are left to the general decoder, which
            // refuses them for counters.
            return Fixed::parse(self.string()?).ok().filter(|v| v.0 >= 0);
        }
        let start = self.i;
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        let digits = &self.b[start..self.i];
        if digits.is_empty()
            || digits.len() > 18
            || (digits.len() > 1 && digits[0] == b'0')
            || matches!(self.b.get(self.i), Some(b'.' | b'e' | b'E'))
        {
            return None;
        }
        let n = digits
            .iter()
            .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
        (n <= MAX_UNITS).then(|| Fixed::from_units(n))
    }

    /// Skips one JSON value of any type, checking its syntax as strictly
    /// as serde_json does.
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        match *self.b.get(self.i)? {
            b'"' => self.string().map(|_| ()),
            b'{' => {
                self.i += 1;
                if self.peek_is(b'}') {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.string()?;
                    self.byte(b':')?;
                    self.skip_value(depth + 1)?;
                    if !self.comma_or(b'}')? {
                        return Some(());
                    }
                }
            }
            b'[' => {
                self.i += 1;
                if self.peek_is(b']') {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.skip_value(depth + 1)?;
                    if !self.comma_or(b']')? {
                        return Some(());
                    }
                }
            }
            b't' => self.word(b"true"),
            b'f' => self.word(b"false"),
            b'n' => self.word(b"null"),
            _ => self.number(),
        }
    }

    fn word(&mut self, w: &[u8]) -> Option<()> {
        if self.b[self.i..].starts_with(w) {
            self.i += w.len();
            Some(())
        } else {
            None
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.b.get(self.i)? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.i;
        self.digits();
        (self.i > start).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Input;
    use proptest::prelude::*;

    /// The fast path's record, or the general decoder's.
    fn both(line: &str) -> (Option<Record>, Result<Record, DecodeError>) {
        let mut d = LineDecoder::new();
        let fast = match d.decode(line) {
            Decoded::Metric(ts, m) => Some(Record {
                ts,
                input: Input::Metric(m.to_sample()),
            }),
            Decoded::Record(_) => None,
        };
        (fast, Record::from_json_line(line))
    }

    fn fast(line: &str) {
        let (fast, slow) = both(line);
        assert_eq!(fast.as_ref(), Some(&slow.clone().expect(line)), "{line}");
    }

    fn general(line: &str) {
        let (fast, _) = both(line);
        assert!(fast.is_none(), "{line} took the fast path");
    }

    const DATA: &str = r#"{"name":"http_requests_total","labels":{"__name__":"http_requests_total","service":"svc1","code":"200","instance":"10.0.0.1:9090"},"value":"12","timestamp":"2026-03-01T00:00:00Z"}"#;

    #[test]
    fn metric_lines_take_the_fast_path_with_the_same_result() {
        fast(&format!(
            r#"{{"ts":"2026-03-01T00:00:00Z","kind":"metric","data":{DATA}}}"#
        ));
        // Data before kind, unknown fields, whitespace, numbers.
        fast(&format!(
            r#"{{ "data" : {DATA} , "x":[1,-2.5e3,{{"a":null}},true,false], "kind":"metric","ts":"2026-03-01T00:00:01.5+01:00" }}"#
        ));
        fast(
            r#"{"ts":"2026-03-01T00:00:00Z","kind":"metric","data":{"value":7,"labels":{"b":"1","a":"2","b":"3"},"name":"up","timestamp":null,"extra":{}}}"#,
        );
        fast(
            r#"{"ts":"2026-03-01T00:00:00Z","kind":"metric","data":{"value":"0.5","labels":{"__name__":"up"},"name":"","timestamp":"0001-01-01T00:00:00Z"}}"#,
        );
        fast(
            r#"{"ts":"2026-03-01T00:00:00Z","kind":"metric","data":{"value":0,"name":"up","labels":{}}}"#,
        );
    }

    #[test]
    fn everything_else_goes_to_the_general_decoder() {
        for line in [
            r#"{"ts":"2026-03-01T00:00:00Z","kind":"tick","data":{}}"#,
            r#"{"ts":"2026-03-01T00:00:00Z","kind":"metric","data":{"value":"1","name":"up","labels":{"a":"\u0041"}}}"#,
            r#"{"ts":"2026-03-01T00:00:00Z","kind":"metric","data":{"value":1.5,"name":"up","labels":{}}}"#,
            r#"{"ts":"2026-03-01T00:00:00Z","kind":"metric","data":{"value":-1,"name":"up","labels":{}}}"#,
            r#"{"ts":"2026-03-01T00:00:00Z","kind":"metric","data":{"value":01,"name":"up","labels":{}}}"#,
            r#"{"ts":"2026-03-01T00:00:00Z","kind":"metric","data":{"value":"NaN","name":"up","labels":{}}}"#,
            r#"{"ts":"2026-03-01T00:00:00Z","kind":"metric","data":{"value":"1","labels":{}}}"#,
            r#"{"ts":"2026-03-01T00:00:00Z","kind":"metric","data":{"value":"1","name":"up","labels":{"a":1}}}"#,
            r#"{"ts":"2026-03-01T00:00:00Z","kind":"metric","data":{"value":"1","name":"up","name":"x"}}"#,
            r#"{"ts":"2026-03-01T00:00:00Z","kind":"metric","kind":"metric","data":{"value":"1","name":"up"}}"#,
            r#"{"ts":"2026-03-01T00:00:00Z","kind":"metric","data":{"value":"1","name":"up"}} x"#,
            r#"{"ts":"2026-03-01T00:00:00Z","kind":"metric","data":{"value":"1","name":"up","timestamp":"soon"}}"#,
            r#"{"ts":"yesterday","kind":"metric","data":{"value":"1","name":"up"}}"#,
            r#"{"ts":"2026-03-01T00:00:00Z","kind":"metric","x":[1,],"data":{"value":"1","name":"up"}}"#,
            r#"{"ts":"2026-03-01T00:00:00Z","kind":"metric","x":1.,"data":{"value":"1","name":"up"}}"#,
            r#"{"ts":"2026-03-01T00:00:00Z","kind":"metric"}"#,
            r#"{"kind":"metric","data":{"value":"1","name":"up"}}"#,
            r#"{"ts":"2026-03-01T00:00:00Z","kind":"metric","data":null}"#,
            "{}",
            "",
        ] {
            general(line);
        }
    }

    const NAMES: &[&str] = &[
        r#""name":"up""#,
        r#""name":"""#,
        r#""name":null"#,
        r#""name":"a\"b""#,
        r#""name":3"#,
    ];
    const VALUES: &[&str] = &[
        r#""value":"12""#,
        r#""value":"1.5""#,
        r#""value":"  7 ""#,
        r#""value":12"#,
        r#""value":0"#,
        r#""value":9223372036854"#,
        r#""value":-3"#,
        r#""value":-0"#,
        r#""value":1e2"#,
        r#""value":2.50"#,
        r#""value":"NaN""#,
        r#""value":"-Inf""#,
        r#""value":"1e400""#,
        r#""value":null"#,
        r#""value":007"#,
        r#""value":123456789012345678"#,
        r#""value":9223372036855"#,
        r#""value":18446744073709551616"#,
    ];
    const TIMESTAMPS: &[&str] = &[
        r#""timestamp":"2026-03-01T00:00:00Z""#,
        r#""timestamp":"2026-03-01T00:01:00.5+00:00""#,
        r#""timestamp":"""#,
        r#""timestamp":null"#,
        r#""timestamp":"0001-01-01T00:00:00Z""#,
        r#""timestamp":"soon""#,
    ];
    const LABELS: &[&str] = &[
        r#""labels":{}"#,
        r#""labels":{"b":"1","a":"2"}"#,
        r#""labels":{"service":"svc1","code":"200","instance":"10.0.0.1:9090"}"#,
        r#""labels":{"__name__":"m","x":"y","x":"z","__name__":"n"}"#,
        r#""labels":{"__name__":""}"#,
        r#""labels":null"#,
        r#""labels":{"a":1}"#,
        r#""labels":{"a":"\u00e9"}"#,
        r#""labels":{"é":"ü ☃","a":"b"}"#,
        r#""labels" : { "b" : "1" , "a":"2" }"#,
    ];
    const EXTRAS: &[&str] = &[
        r#""x":[1,{"y":[true,false,null]},-0.5e-3,"s"]"#,
        r#""x":"s""#,
        r#""x":{}"#,
        r#""x":[]"#,
        r#""x":01"#,
        r#""x":[1,]"#,
        r#""x":{"a":1,}"#,
        r#""x":1."#,
        r#""x":-"#,
        r#""x":tru"#,
        r#""x":"\n""#,
    ];
    const TS: &[&str] = &[
        r#""ts":"2026-03-01T00:00:00Z""#,
        r#""ts":"2026-03-01T00:01:00Z""#,
        r#""ts":"2026-03-01T01:00:00+01:00""#,
        r#""ts":null"#,
        r#""ts":"0001-01-01T00:00:00Z""#,
        r#""ts":"later""#,
    ];
    const KINDS: &[&str] = &[
        r#""kind":"metric""#,
        r#""kind":"tick""#,
        r#""kind":"Metric""#,
        r#""kind":null"#,
    ];

    /// One of `options`, mostly one of the first `good`.
    fn member(options: &'static [&'static str], good: usize) -> BoxedStrategy<String> {
        prop_oneof![
            6 => prop::sample::select(&options[..good]),
            1 => prop::sample::select(options),
        ]
        .prop_map(str::to_string)
        .boxed()
    }

    fn any_of(groups: &[&'static [&'static str]]) -> BoxedStrategy<String> {
        let all: Vec<&'static str> = groups.iter().flat_map(|g| g.iter().copied()).collect();
        prop::sample::select(all).prop_map(str::to_string).boxed()
    }

    /// An object: one member of each of `usual` (each kept with high
    /// probability), plus a few of `odd`, shuffled, with varied spacing.
    fn object(
        usual: Vec<BoxedStrategy<String>>,
        odd: BoxedStrategy<String>,
    ) -> BoxedStrategy<String> {
        let kept = usual
            .into_iter()
            .map(|m| prop::option::weighted(0.9, m))
            .collect::<Vec<_>>();
        let odd = prop::option::weighted(0.2, odd);
        (kept, [odd.clone(), odd], prop::bool::ANY)
            .prop_flat_map(|(kept, odd, spaced)| {
                let members: Vec<String> = kept.into_iter().chain(odd).flatten().collect();
                Just(members).prop_shuffle().prop_map(move |m| {
                    let sep = if spaced { " , " } else { "," };
                    format!("{{{}}}", m.join(sep))
                })
            })
            .boxed()
    }

    fn data() -> BoxedStrategy<String> {
        let usual = vec![
            member(NAMES, 1),
            member(VALUES, 10),
            member(TIMESTAMPS, 5),
            member(LABELS, 5),
        ];
        let odd = any_of(&[NAMES, VALUES, TIMESTAMPS, LABELS, EXTRAS]);
        prop_oneof![
            20 => object(usual, odd),
            1 => Just("null".to_string()),
            1 => Just("\"x\"".to_string()),
        ]
        .boxed()
    }

    fn line() -> BoxedStrategy<String> {
        let data = data().prop_map(|d| format!(r#""data":{d}"#)).boxed();
        let odd = prop_oneof![any_of(&[TS, KINDS, EXTRAS]), data.clone(),].boxed();
        (
            object(vec![member(TS, 3), member(KINDS, 1), data], odd),
            prop::bool::weighted(0.05),
        )
            .prop_map(|(l, junk)| if junk { format!("{l} x") } else { l })
            .boxed()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Whenever the fast path takes a line, it decodes it as the
        /// general decoder does, with buffers reused across lines.
        #[test]
        fn fast_path_agrees_with_the_general_decoder(lines in prop::collection::vec(line(), 1..8)) {
            let mut d = LineDecoder::new();
            for line in &lines {
                let general = Record::from_json_line(line);
                match d.decode(line) {
                    Decoded::Metric(ts, m) => {
                        let fast = Record { ts, input: Input::Metric(m.to_sample()) };
                        proptest::prop_assert_eq!(Ok(fast), general, "{}", line);
                    }
                    Decoded::Record(r) => proptest::prop_assert_eq!(r, general, "{}", line),
                }
            }
        }
    }

    #[test]
    fn string_end_finds_the_first_stop() {
        for (text, want) in [
            (r#"abc""#, Some(3)),
            (r#"abcdefghijklmnop"x"#, Some(16)),
            (r#"abcdefgh\"x"#, None),
            ("abcdefghij\tk\"", None),
            ("abcdefghijklm", None),
            ("\u{e9}t\u{e9} \u{2603}\"", Some(9)),
            ("\u{7f}\u{80}\u{ff}abcdefgh\"", Some(13)),
            ("\"", Some(0)),
            ("", None),
        ] {
            assert_eq!(string_end(text.as_bytes(), 0), want, "{text:?}");
        }
        // Every position of a stop within and across words.
        for at in 0..20 {
            for stop in [b'"', b'\\', 0x1f, 0x00] {
                let mut b = vec![b'a'; 24];
                b[at] = stop;
                b.push(b'"');
                let want = if stop == b'"' { Some(at) } else { None };
                assert_eq!(string_end(&b, 0), want, "{at} {stop}");
            }
        }
    }

    #[test]
    fn the_timestamp_cache_follows_the_text() {
        let mut d = LineDecoder::new();
        for (text, ms) in [
            ("2026-03-01T00:00:00Z", 0),
            ("2026-03-01T00:00:00Z", 0),
            ("2026-03-01T00:01:00Z", 60_000),
            ("2026-03-01T00:00:00Z", 0),
        ] {
            let line = format!(r#"{{"ts":"{text}","kind":"metric","data":{DATA}}}"#);
            let Decoded::Metric(ts, _) = d.decode(&line) else {
                panic!("{line}")
            };
            assert_eq!(ts.0 - 1_772_323_200_000, ms);
        }
    }
}

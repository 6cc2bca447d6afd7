//! Bounded capture of program output and response bodies, and truncation
//! of text on a character boundary with a visible marker.

/// Keeps the first `limit` bytes of a stream and counts the rest.
#[derive(Debug, Clone)]
pub(crate) struct Capture {
    kept: Vec<u8>,
    total: u64,
    limit: usize,
    /// Reading stopped before the end of the stream.
    more: bool,
}

impl Capture {
    pub fn new(limit: usize) -> Capture {
        Capture {
            kept: Vec::new(),
            total: 0,
            limit,
            more: false,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        let room = self.limit.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&data[..room.min(data.len())]);
        self.total = self.total.saturating_add(data.len() as u64);
    }

    /// Notes that the stream went on past what was read.
    pub fn mark_more(&mut self) {
        self.more = true;
    }

    /// Bytes seen so far, kept or not.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The bytes kept so far (at most `limit`).
    pub fn bytes(&self) -> &[u8] {
        &self.kept
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The captured text, see [`Capture::text_up_to`], at the capture's limit.
    pub fn text(&self) -> String {
        self.text_up_to(self.limit)
    }

    /// At most `limit` bytes of the captured text, trailing whitespace
    /// removed; when anything is left out, cut on a character boundary and
    /// followed by `… [truncated N bytes]` (`more than N` when the stream
    /// was not read to its end). Invalid UTF-8 shows as U+FFFD.
    pub fn text_up_to(&self, limit: usize) -> String {
        let mut end = self.kept.len().min(limit);
        let truncated = self.more || self.total > end as u64;
        if truncated {
            // Drop a character cut in half at the limit.
            if let Err(e) = std::str::from_utf8(&self.kept[..end]) {
                if e.error_len().is_none() {
                    end = e.valid_up_to();
                }
            }
        }
        let text = String::from_utf8_lossy(&self.kept[..end]);
        if !truncated {
            return text.trim_end().to_string();
        }
        let omitted = self.total - end as u64;
        let more = if self.more { "more than " } else { "" };
        format!("{text}… [truncated {more}{omitted} bytes]")
    }
}

/// `s` cut to at most `limit` bytes on a character boundary, with the
/// truncation marker when anything was cut.
pub(crate) fn truncate(s: &str, limit: usize) -> String {
    if s.len() <= limit {
        return s.to_string();
    }
    let mut end = limit;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [truncated {} bytes]", &s[..end], s.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_short_output_whole_without_trailing_newline() {
        let mut c = Capture::new(16);
        c.push(b"hello\n");
        assert_eq!(c.text(), "hello");
    }

    #[test]
    fn long_output_is_cut_on_a_char_boundary_with_the_count_of_dropped_bytes() {
        let mut c = Capture::new(5);
        // "é" is two bytes: the third one would be cut in half at byte 5.
        c.push("ééé".as_bytes());
        c.push(b"xyz");
        assert_eq!(c.text(), "éé… [truncated 5 bytes]");
        assert_eq!(truncate("ééé", 5), "éé… [truncated 2 bytes]");
        assert_eq!(truncate("abc", 3), "abc");
    }
}

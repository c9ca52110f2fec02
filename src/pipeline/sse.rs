//! An incremental Server-Sent Events parser (the WHATWG `text/event-stream` rules), fed the body in whatever
//! pieces the network delivers: lines may end in LF, CRLF or CR (a CRLF split across two reads is one line end),
//! `:` lines are comments (keep-alives), a leading BOM is dropped, multi-byte characters may be split across reads,
//! `data:` lines accumulate until a blank line dispatches the event.
//!
//! Memory is bounded: a line longer than [`MAX_LINE_BYTES`] or an event whose data grows past
//! [`MAX_EVENT_BYTES`] (a server that never sends a line end or a blank line) is an [`SseOverflow`] error.

/// Longest line the parser buffers, in bytes.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Most `data` one event may accumulate, in bytes.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// A line or an event over the parser's limit; the stream cannot be parsed further.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseOverflow {
    /// `"line"` or `"event"`.
    pub what: &'static str,
    pub limit: usize,
}

impl std::fmt::Display for SseOverflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "an SSE {} exceeds the limit of {} bytes", self.what, self.limit)
    }
}

impl std::error::Error for SseOverflow {}

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, `None` for the default `message` type.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

#[derive(Debug)]
pub struct SseParser {
    /// Bytes of an incomplete line.
    line: Vec<u8>,
    /// The previous piece ended in `\r`: a `\n` at the start of the next piece belongs to it.
    after_cr: bool,
    started: bool,
    data: Option<String>,
    event: Option<String>,
    max_line: usize,
    max_event: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::with_limits(MAX_LINE_BYTES, MAX_EVENT_BYTES)
    }
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser with other limits than [`MAX_LINE_BYTES`] and [`MAX_EVENT_BYTES`].
    pub fn with_limits(max_line: usize, max_event: usize) -> Self {
        Self { line: Vec::new(), after_cr: false, started: false, data: None, event: None, max_line, max_event }
    }

    /// Feeds a piece of the body; returns the events it completed, or an error once a line or an event is over
    /// the limits (the parser is then of no further use).
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<Vec<SseEvent>, SseOverflow> {
        let mut out = Vec::new();
        if bytes.is_empty() {
            return Ok(out);
        }
        if self.after_cr {
            self.after_cr = false;
            if let [b'\n', rest @ ..] = bytes {
                bytes = rest;
            }
        }
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\n' | b'\r' => {
                    self.extend_line(&bytes[start..i])?;
                    let line = std::mem::take(&mut self.line);
                    self.line_done(&line, &mut out)?;
                    if bytes[i] == b'\r' {
                        if i + 1 == bytes.len() {
                            self.after_cr = true;
                        } else if bytes[i + 1] == b'\n' {
                            i += 1;
                        }
                    }
                    start = i + 1;
                }
                _ => {}
            }
            i += 1;
        }
        self.extend_line(&bytes[start..])?;
        Ok(out)
    }

    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), SseOverflow> {
        if self.line.len() + bytes.len() > self.max_line {
            self.line = Vec::new();
            return Err(SseOverflow { what: "line", limit: self.max_line });
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    /// End of the body: an event whose blank line never came is dispatched (lenient, as servers that close
    /// right after the last `data:` line exist).
    pub fn finish(&mut self) -> Result<Option<SseEvent>, SseOverflow> {
        let mut out = Vec::new();
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, &mut out)?;
        }
        self.line_done(b"", &mut out)?;
        Ok(out.pop())
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseOverflow> {
        let mut line = line;
        if !self.started {
            self.started = true;
            if let Some(rest) = line.strip_prefix("\u{feff}".as_bytes()) {
                line = rest;
            }
        }
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                out.push(SseEvent { event: self.event.take(), data });
            }
            self.event = None;
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(()); // comment / keep-alive
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "data" => {
                let have = self.data.as_ref().map_or(0, |d| d.len() + 1);
                if have + value.len() > self.max_event {
                    self.data = None;
                    return Err(SseOverflow { what: "event", limit: self.max_event });
                }
                match &mut self.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => self.data = Some(value.to_string()),
                }
            }
            "event" => self.event = Some(value.to_string()),
            _ => {} // id, retry, unknown fields: not needed by a one-shot client
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(pieces: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out: Vec<SseEvent> = pieces.iter().flat_map(|b| p.push(b).unwrap()).collect();
        out.extend(p.finish().unwrap());
        out
    }

    fn data(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn lf_crlf_cr_and_comments() {
        let body = b": keep-alive\r\n\r\ndata: a\r\n\r\ndata: b\n\ndata: c\r\rdata: d1\ndata: d2\n\n";
        assert_eq!(data(&all(&[body])), ["a", "b", "c", "d1\nd2"]);
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let body = "\u{feff}: ping\r\nevent: delta\r\ndata: {\"x\":\"é→\"}\r\n\r\n:\r\ndata:[DONE]\r\n\r\n".as_bytes();
        let whole = all(&[body]);
        assert_eq!(data(&whole), ["{\"x\":\"é→\"}", "[DONE]"]);
        assert_eq!(whole[0].event.as_deref(), Some("delta"));
        assert_eq!(whole[1].event, None);
        for i in 0..body.len() {
            for j in i..body.len() {
                assert_eq!(all(&[&body[..i], &body[i..j], &body[j..]]), whole, "split at {i},{j}");
            }
        }
    }

    #[test]
    fn unterminated_last_event_is_kept() {
        assert_eq!(data(&all(&[b"data: x"])), ["x"]);
        assert!(all(&[b": only a comment"]).is_empty());
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    #[test]
    fn a_line_without_an_end_is_refused_at_the_limit() {
        let mut p = SseParser::with_limits(64, 1024);
        assert_eq!(p.push(b"data: 0123456789").unwrap(), []);
        let mut err = None;
        for _ in 0..10 {
            if let Err(e) = p.push(b"0123456789") {
                err = Some(e);
                break;
            }
        }
        let e = err.expect("an endless line must fail");
        assert_eq!(e, SseOverflow { what: "line", limit: 64 });
        assert!(e.to_string().contains("64 bytes"), "{e}");
        // one piece holding a whole over-long line fails too, even with its line end
        let mut p = SseParser::with_limits(64, 1024);
        let long = format!("data: {}\n\n", "x".repeat(100));
        assert_eq!(p.push(long.as_bytes()).unwrap_err().what, "line");
    }

    #[test]
    fn an_event_without_a_blank_line_is_refused_at_the_limit() {
        let mut p = SseParser::with_limits(64, 100);
        let mut err = None;
        for _ in 0..20 {
            match p.push(b"data: 0123456789\n") {
                Ok(ev) => assert!(ev.is_empty()),
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        assert_eq!(err, Some(SseOverflow { what: "event", limit: 100 }));
        // at the limit exactly is fine
        let mut p = SseParser::with_limits(64, 21);
        let ev = p.push(b"data: 0123456789\ndata: 0123456789\n\n").unwrap();
        assert_eq!(ev[0].data.len(), 21);
    }

    #[test]
    fn default_limits_accept_ordinary_streams() {
        let mut p = SseParser::new();
        let big = format!("data: {}\n\n", "y".repeat(100_000));
        assert_eq!(p.push(big.as_bytes()).unwrap()[0].data.len(), 100_000);
    }
}

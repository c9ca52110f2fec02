//! An incremental Server-Sent Events parser (the WHATWG `text/event-stream` rules), fed the body in whatever
//! pieces the network delivers: lines may end in LF, CRLF or CR (a CRLF split across two reads is one line end),
//! `:` lines are comments (keep-alives), a leading BOM is dropped, multi-byte characters may be split across reads,
//! `data:` lines accumulate until a blank line dispatches the event.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, `None` for the default `message` type.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of an incomplete line.
    line: Vec<u8>,
    /// The previous piece ended in `\r`: a `\n` at the start of the next piece belongs to it.
    after_cr: bool,
    started: bool,
    data: Option<String>,
    event: Option<String>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a piece of the body; returns the events it completed.
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if bytes.is_empty() {
            return out;
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
                    self.line.extend_from_slice(&bytes[start..i]);
                    let line = std::mem::take(&mut self.line);
                    self.line_done(&line, &mut out);
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
        self.line.extend_from_slice(&bytes[start..]);
        out
    }

    /// End of the body: an event whose blank line never came is dispatched (lenient, as servers that close
    /// right after the last `data:` line exist).
    pub fn finish(&mut self) -> Option<SseEvent> {
        let mut out = Vec::new();
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, &mut out);
        }
        self.line_done(b"", &mut out);
        out.pop()
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
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
            return;
        }
        if line[0] == b':' {
            return; // comment / keep-alive
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            "event" => self.event = Some(value.to_string()),
            _ => {} // id, retry, unknown fields: not needed by a one-shot client
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(pieces: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out: Vec<SseEvent> = pieces.iter().flat_map(|b| p.push(b)).collect();
        out.extend(p.finish());
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

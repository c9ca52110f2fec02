//! JSONL corpus reading for the embedded retrieval server: one JSON object per line,
//! `{"id","title","url","text","source"?, …}`; other keys are ignored.
//!
//! The file is untrusted input. Bad lines never stop the load: a line that is not UTF-8, not a JSON object, longer
//! than [`MAX_LINE_BYTES`], or lacks an `id` or any text is skipped and counted in [`CorpusReport`]; fields longer
//! than their limit are cut on a char boundary; a `url` that is not `http(s)://` (e.g. `javascript:`) is dropped;
//! the first document with a given id wins and later duplicates are counted. Markup in fields is kept verbatim as
//! plain text: the server only ever emits it inside JSON, and clients must render it as text.

use std::io::BufRead;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// Longest accepted line; longer lines are skipped without being held in memory whole.
pub const MAX_LINE_BYTES: usize = 1 << 20;
pub const MAX_ID_CHARS: usize = 256;
pub const MAX_TITLE_CHARS: usize = 512;
pub const MAX_URL_CHARS: usize = 2048;
pub const MAX_TEXT_CHARS: usize = 32 * 1024;
pub const MAX_SOURCE_CHARS: usize = 128;

/// One indexable document, after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpusDoc {
    pub id: String,
    pub title: String,
    pub url: String,
    pub text: String,
    pub source: String,
}

/// What happened to each line of a corpus.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CorpusReport {
    /// Non-blank lines seen.
    pub lines: usize,
    pub accepted: usize,
    pub invalid_utf8: usize,
    pub invalid_json: usize,
    pub too_long: usize,
    /// Valid JSON objects without a usable `id`, or with neither `title` nor `text`.
    pub missing_fields: usize,
    pub duplicate_ids: usize,
    /// Accepted documents with at least one field cut to its limit.
    pub truncated: usize,
    /// Accepted documents whose `url` was not http(s) and was dropped.
    pub dropped_urls: usize,
}

impl CorpusReport {
    pub fn skipped(&self) -> usize {
        self.invalid_utf8 + self.invalid_json + self.too_long + self.missing_fields + self.duplicate_ids
    }
}

/// Reads a JSONL corpus file.
pub fn load_corpus(path: &Path) -> Result<(Vec<CorpusDoc>, CorpusReport)> {
    let file = std::fs::File::open(path).map_err(|e| {
        Error::Io(format!("cannot open corpus {}: {e}; pass --corpus PATH to a JSONL file", path.display()))
    })?;
    read_corpus(std::io::BufReader::new(file)).map_err(|e| Error::Io(format!("reading corpus {}: {e}", path.display())))
}

/// Reads JSONL from any reader. Only I/O errors fail; bad lines are skipped and counted.
pub fn read_corpus(mut reader: impl BufRead) -> std::io::Result<(Vec<CorpusDoc>, CorpusReport)> {
    let mut report = CorpusReport::default();
    let mut docs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut line = Vec::new();
    let mut line_no = 0usize;
    loop {
        line.clear();
        let (read, complete) = read_line_limited(&mut reader, &mut line, MAX_LINE_BYTES)?;
        if read == 0 {
            break;
        }
        line_no += 1;
        if !complete {
            report.lines += 1;
            report.too_long += 1;
            log::warn!("corpus line {line_no}: longer than {MAX_LINE_BYTES} bytes, skipped");
            continue;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        report.lines += 1;
        let Ok(text) = std::str::from_utf8(&line) else {
            report.invalid_utf8 += 1;
            log::warn!("corpus line {line_no}: not UTF-8, skipped");
            continue;
        };
        let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(text) else {
            report.invalid_json += 1;
            log::warn!("corpus line {line_no}: not a JSON object, skipped");
            continue;
        };
        let id = match obj.get("id") {
            Some(Value::String(s)) => s.trim().to_string(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        let field = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("").trim();
        let (title, text, url, source) = (field("title"), field("text"), field("url"), field("source"));
        if id.is_empty() || (title.is_empty() && text.is_empty()) {
            report.missing_fields += 1;
            log::warn!("corpus line {line_no}: needs a non-empty `id` and a `title` or `text`, skipped");
            continue;
        }
        let mut cut = false;
        let id = truncate(&id, MAX_ID_CHARS, &mut cut);
        if !seen.insert(id.clone()) {
            report.duplicate_ids += 1;
            log::warn!("corpus line {line_no}: duplicate id {id:?}, skipped (the first one wins)");
            continue;
        }
        let mut url = truncate(url, MAX_URL_CHARS, &mut cut);
        if !url.is_empty() && !is_web_url(&url) {
            report.dropped_urls += 1;
            url.clear();
        }
        let doc = CorpusDoc {
            id,
            title: truncate(title, MAX_TITLE_CHARS, &mut cut),
            url,
            text: truncate(text, MAX_TEXT_CHARS, &mut cut),
            source: truncate(source, MAX_SOURCE_CHARS, &mut cut),
        };
        report.truncated += usize::from(cut);
        report.accepted += 1;
        docs.push(doc);
    }
    Ok((docs, report))
}

/// Reads up to and including the next `\n` into `buf`, keeping at most `max` bytes. Returns (bytes consumed,
/// whether the line fit); a line that did not fit is consumed to its end but not stored.
fn read_line_limited(reader: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> std::io::Result<(usize, bool)> {
    let mut consumed = 0;
    let mut fits = true;
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok((consumed, fits));
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if fits && buf.len() + take <= max + 1 {
            buf.extend_from_slice(&chunk[..take]);
        } else {
            fits = false;
            buf.clear();
        }
        reader.consume(take);
        consumed += take;
        if done {
            return Ok((consumed, fits));
        }
    }
}

fn truncate(s: &str, max_chars: usize, cut: &mut bool) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => {
            *cut = true;
            s[..i].to_string()
        }
        None => s.to_string(),
    }
}

fn is_web_url(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    (lower.starts_with("https://") || lower.starts_with("http://"))
        && !url.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '<' || c == '>')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_lines_are_skipped_counted_or_neutralised() {
        let mut input = Vec::new();
        input.extend_from_slice(
            br#"{"id":"a","title":"<script>alert(1)</script>","url":"https://x.org/a","text":"ok"}"#,
        );
        input.extend_from_slice(b"\n\n");
        input.extend_from_slice(b"{\"id\":\"b\",\"title\":\"\xff\xfe\",\"text\":\"x\"}\n");
        input.extend_from_slice(b"not json at all\n[1,2]\n");
        input.extend_from_slice(br#"{"id":"a","title":"dup","text":"dup"}"#);
        input.push(b'\n');
        input.extend_from_slice(br#"{"title":"no id","text":"x"}"#);
        input.push(b'\n');
        input.extend_from_slice(br#"{"id":7,"title":"js","url":"javascript:alert(1)","text":"t"}"#);
        input.push(b'\n');
        let huge = "y".repeat(MAX_TEXT_CHARS + 10);
        input.extend_from_slice(format!(r#"{{"id":"big","title":"Big","text":"{huge}"}}"#).as_bytes());
        input.push(b'\n');
        let too_long = "z".repeat(MAX_LINE_BYTES + 5);
        input.extend_from_slice(format!(r#"{{"id":"huge","text":"{too_long}"}}"#).as_bytes());
        input.push(b'\n');
        input.extend_from_slice(br#"{"id":"last","title":"Last, no newline","text":"end"}"#);

        let (docs, r) = read_corpus(&input[..]).unwrap();
        let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["a", "7", "big", "last"]);
        assert_eq!(docs[0].title, "<script>alert(1)</script>", "markup is kept verbatim as text");
        assert_eq!(docs[1].url, "", "non-web URLs are dropped");
        assert_eq!(docs[2].text.chars().count(), MAX_TEXT_CHARS);
        assert_eq!(
            r,
            CorpusReport {
                lines: 10,
                accepted: 4,
                invalid_utf8: 1,
                invalid_json: 2,
                too_long: 1,
                missing_fields: 1,
                duplicate_ids: 1,
                truncated: 1,
                dropped_urls: 1
            }
        );
        assert_eq!(r.skipped(), 6);
    }
}

//! Mapping an external engine's stored document (a JSON object) to a `search/v1` hit.
//!
//! Documents are expected to carry the corpus fields (`id`, `title`, `url`, `text`, `source`); a few common
//! alternative names are tried as well (`name`, `link`, `content`, `body`, `description`). The snippet is made by
//! [`make_snippet`](super::make_snippet) from the text, so it is plain text whatever the engine stores.

use serde_json::{Map, Value};

use super::protocol::SearchHit;
use super::snippet::{make_snippet, DEFAULT_SNIPPET_CHARS};

const TITLE: &[&str] = &["title", "name"];
const URL: &[&str] = &["url", "link"];
const TEXT: &[&str] = &["text", "content", "body", "description"];

fn first_str(doc: &Map<String, Value>, keys: &[&str]) -> String {
    keys.iter().find_map(|k| doc.get(*k).and_then(Value::as_str)).unwrap_or("").to_string()
}

/// A JSON id (string or number) as text.
pub(crate) fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Builds the hit at `rank` (1-based). `engine_id` is the engine's own id for the document, used when the
/// document has no `id` field. Returns `None` when neither gives an id.
pub(crate) fn hit_from_document(
    doc: &Map<String, Value>,
    engine_id: Option<&Value>,
    score: f32,
    rank: usize,
    query: &str,
) -> Option<SearchHit> {
    let id = doc.get("id").and_then(id_text).or_else(|| engine_id.and_then(id_text))?;
    let text = first_str(doc, TEXT);
    Some(SearchHit {
        id,
        rank,
        score,
        title: first_str(doc, TITLE),
        url: first_str(doc, URL),
        snippet: make_snippet(&text, query, DEFAULT_SNIPPET_CHARS),
        source: first_str(doc, &["source"]),
    })
}

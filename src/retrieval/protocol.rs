//! The `search/v1` wire protocol (DESIGN.md §4): request, response, hit and error bodies, and its limits.
//!
//! ```text
//! GET  /v1/search?q=TEXT&k=5                      (a "simple" request: no CORS preflight)
//! POST /v1/search {"query","top_k","filters"}
//!   → {"query","engine","took_ms","total","results":[{"id","rank","score","title","url","snippet","source"}]}
//! errors → {"error":{"code","message"}}
//! ```
//! `snippet` is plain text (never HTML); `id` is stable across re-indexing; `rank` is 1-based.

use serde::{Deserialize, Serialize};

/// `top_k` when a request names none.
pub const DEFAULT_TOP_K: usize = 5;
/// Largest `top_k` a server accepts.
pub const MAX_TOP_K: usize = 50;
/// Longest query, in Unicode scalar values (chars).
pub const MAX_QUERY_CHARS: usize = 1024;

/// Body of `POST /v1/search`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchRequest {
    pub query: String,
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<SearchFilters>,
}

fn default_top_k() -> usize {
    DEFAULT_TOP_K
}

impl SearchRequest {
    pub fn new(query: impl Into<String>, top_k: usize) -> Self {
        Self { query: query.into(), top_k, filters: None }
    }
}

/// Optional restrictions of a search. Unknown keys are rejected, so a client never believes a filter applied
/// when the server ignored it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchFilters {
    /// Only documents whose `source` equals this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// A successful search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResponse {
    /// The query as the engine received it.
    pub query: String,
    /// Which engine answered (`webvlm-bm25`, `meilisearch`, `opensearch`, `qdrant`, …).
    pub engine: String,
    /// Time the engine spent, in milliseconds (the engine's own figure where it reports one).
    pub took_ms: f64,
    /// Number of matching documents (may be an estimate or a lower bound for external engines).
    pub total: u64,
    pub results: Vec<SearchHit>,
}

/// One ranked document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    pub id: String,
    /// 1-based position in `results`.
    pub rank: usize,
    /// Engine-specific relevance (BM25 for the embedded server); only comparable within one response.
    pub score: f32,
    pub title: String,
    pub url: String,
    /// Plain text around the best-matching terms.
    pub snippet: String,
    #[serde(default)]
    pub source: String,
}

/// `{"error":{"code","message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Machine-readable: `bad_request`, `query_too_long`, `top_k_out_of_range`, `body_too_large`, `not_found`, …
    pub code: String,
    /// What was wrong and what to do, for a person.
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { error: ErrorDetail { code: code.into(), message: message.into() } }
    }
}

/// Answer of `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResponse {
    pub status: String,
    pub engine: String,
    pub documents: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_defaults_top_k_and_rejects_unknown_filters() {
        let r: SearchRequest = serde_json::from_str(r#"{"query":"red circle"}"#).unwrap();
        assert_eq!(r, SearchRequest::new("red circle", DEFAULT_TOP_K));
        let f: SearchRequest = serde_json::from_str(r#"{"query":"x","top_k":3,"filters":{"source":"wiki"}}"#).unwrap();
        assert_eq!(f.filters.unwrap().source.as_deref(), Some("wiki"));
        assert!(serde_json::from_str::<SearchRequest>(r#"{"query":"x","filters":{"lang":"de"}}"#).is_err());
    }

    #[test]
    fn error_body_shape() {
        let e = serde_json::to_value(ErrorBody::new("not_found", "no such route")).unwrap();
        assert_eq!(e, serde_json::json!({"error":{"code":"not_found","message":"no such route"}}));
    }
}

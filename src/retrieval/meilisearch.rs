//! Meilisearch adapter: `POST {base}/indexes/{index}/search`, `Authorization: Bearer KEY`.
//!
//! Response: `{"hits":[{…document, "_rankingScore"}], "processingTimeMs", "estimatedTotalHits"|"totalHits"}`.
//! The `source` filter becomes `filter: "source = '…'"`, which needs `source` among the index's filterable
//! attributes.

use serde_json::{json, Value};

use super::fields::hit_from_document;
use super::protocol::{SearchFilters, SearchResponse};

pub const ENGINE: &str = "meilisearch";

pub fn url(base_url: &str, index: &str) -> String {
    format!("{}/indexes/{}/search", base_url.trim_end_matches('/'), index)
}

pub fn request_body(query: &str, k: usize, filters: Option<&SearchFilters>) -> Value {
    let mut body = json!({"q": query, "limit": k, "showRankingScore": true});
    if let Some(source) = filters.and_then(|f| f.source.as_deref()) {
        body["filter"] = json!(format!("source = '{}'", source.replace('\\', "\\\\").replace('\'', "\\'")));
    }
    body
}

/// Maps a Meilisearch search response; `Err` says what was malformed.
pub fn parse(body: &Value, query: &str) -> Result<SearchResponse, String> {
    let hits = body.get("hits").and_then(Value::as_array).ok_or("no `hits` array")?;
    let mut results = Vec::with_capacity(hits.len());
    for (i, h) in hits.iter().enumerate() {
        let doc = h.as_object().ok_or_else(|| format!("hit {i} is not an object"))?;
        let score = doc.get("_rankingScore").and_then(Value::as_f64).unwrap_or(0.0) as f32;
        let hit = hit_from_document(doc, None, score, results.len() + 1, query)
            .ok_or_else(|| format!("hit {i} has no `id` (set the index's primary key to `id`)"))?;
        results.push(hit);
    }
    let total = ["estimatedTotalHits", "totalHits"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64))
        .unwrap_or(results.len() as u64);
    Ok(SearchResponse {
        query: body.get("query").and_then(Value::as_str).unwrap_or(query).to_string(),
        engine: ENGINE.into(),
        took_ms: body.get("processingTimeMs").and_then(Value::as_f64).unwrap_or(0.0),
        total,
        results,
    })
}

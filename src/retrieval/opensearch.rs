//! OpenSearch / Elasticsearch adapter: `POST {base}/{index}/_search` with a `multi_match` over `title^2`, `text`,
//! `content`, `body` (fields an index lacks are ignored by the engine). Auth: `Authorization: ApiKey KEY`
//! (Elasticsearch API keys) or HTTP Basic (OpenSearch security plugin).
//!
//! Response: `{"took", "hits":{"total":{"value"}|N, "hits":[{"_id","_score","_source":{…}}]}}`.

use serde_json::{json, Value};

use super::fields::hit_from_document;
use super::protocol::{SearchFilters, SearchResponse};

pub const ENGINE: &str = "opensearch";

pub fn url(base_url: &str, index: &str) -> String {
    format!("{}/{}/_search", base_url.trim_end_matches('/'), index)
}

pub fn request_body(query: &str, k: usize, filters: Option<&SearchFilters>) -> Value {
    let mut filter = Vec::new();
    if let Some(source) = filters.and_then(|f| f.source.as_deref()) {
        filter.push(json!({"term": {"source": source}}));
    }
    json!({
        "size": k,
        "query": {"bool": {
            "must": {"multi_match": {"query": query, "fields": ["title^2", "text", "content", "body"]}},
            "filter": filter
        }}
    })
}

/// Maps an OpenSearch/Elasticsearch `_search` response; `Err` says what was malformed.
pub fn parse(body: &Value, query: &str) -> Result<SearchResponse, String> {
    let outer = body.get("hits").ok_or("no `hits` object")?;
    let hits = outer.get("hits").and_then(Value::as_array).ok_or("no `hits.hits` array")?;
    let mut results = Vec::with_capacity(hits.len());
    for (i, h) in hits.iter().enumerate() {
        let source =
            h.get("_source").and_then(Value::as_object).ok_or_else(|| format!("hit {i} has no `_source` object"))?;
        let score = h.get("_score").and_then(Value::as_f64).unwrap_or(0.0) as f32;
        let hit = hit_from_document(source, h.get("_id"), score, results.len() + 1, query)
            .ok_or_else(|| format!("hit {i} has neither `_source.id` nor `_id`"))?;
        results.push(hit);
    }
    let total = match outer.get("total") {
        Some(Value::Object(t)) => t.get("value").and_then(Value::as_u64),
        Some(v) => v.as_u64(),
        None => None,
    }
    .unwrap_or(results.len() as u64);
    Ok(SearchResponse {
        query: query.to_string(),
        engine: ENGINE.into(),
        took_ms: body.get("took").and_then(Value::as_f64).unwrap_or(0.0),
        total,
        results,
    })
}

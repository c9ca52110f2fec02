//! Qdrant adapter: `POST {base}/collections/{collection}/points/query` (the Query API), header `api-key`.
//!
//! Qdrant ranks by vector similarity, so a text query needs an embedding: the caller supplies a
//! [`QueryEmbedder`](super::QueryEmbedder) that maps the query to a vector with the same model that embedded the
//! collection (there is no honest embedding-free fallback; a payload full-text filter does not rank). Without one,
//! [`RetrievalClient::search`](super::RetrievalClient::search) fails with a config error, and
//! [`RetrievalClient::search_vector`](super::RetrievalClient::search_vector) takes a ready vector.
//!
//! Response: `{"result":{"points":[{"id","score","payload":{…}}]}, "status":"ok", "time": seconds}`. Qdrant
//! reports no total match count; `total` is the number of points returned.

use serde_json::{json, Value};

use super::fields::hit_from_document;
use super::protocol::{SearchFilters, SearchResponse};

pub const ENGINE: &str = "qdrant";

pub fn url(base_url: &str, collection: &str) -> String {
    format!("{}/collections/{}/points/query", base_url.trim_end_matches('/'), collection)
}

pub fn request_body(vector: &[f32], k: usize, vector_name: Option<&str>, filters: Option<&SearchFilters>) -> Value {
    let mut body = json!({"query": vector, "limit": k, "with_payload": true});
    if let Some(name) = vector_name {
        body["using"] = json!(name);
    }
    if let Some(source) = filters.and_then(|f| f.source.as_deref()) {
        body["filter"] = json!({"must": [{"key": "source", "match": {"value": source}}]});
    }
    body
}

/// Maps a Qdrant query response; `query` is the text the vector was made from (for snippets).
pub fn parse(body: &Value, query: &str) -> Result<SearchResponse, String> {
    let result = body.get("result").ok_or("no `result`")?;
    // The Query API nests points in `result.points`; the older search API returns `result` as the array.
    let points = result.get("points").unwrap_or(result).as_array().ok_or("no `result.points` array")?;
    let mut results = Vec::with_capacity(points.len());
    for (i, p) in points.iter().enumerate() {
        let empty = serde_json::Map::new();
        let payload = match p.get("payload") {
            Some(Value::Object(m)) => m,
            None | Some(Value::Null) => &empty,
            Some(_) => return Err(format!("point {i} has a non-object `payload`")),
        };
        let score = p.get("score").and_then(Value::as_f64).ok_or_else(|| format!("point {i} has no `score`"))? as f32;
        let hit = hit_from_document(payload, p.get("id"), score, results.len() + 1, query)
            .ok_or_else(|| format!("point {i} has no id"))?;
        results.push(hit);
    }
    Ok(SearchResponse {
        query: query.to_string(),
        engine: ENGINE.into(),
        took_ms: body.get("time").and_then(Value::as_f64).map_or(0.0, |s| s * 1e3),
        total: results.len() as u64,
        results,
    })
}
